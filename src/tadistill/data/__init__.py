"""The corpus pipeline: read sources, tokenise with the teacher's tokenizer, pack, mix, batch.

    corpus = build_corpus([SourceConfig(path="wiki/*.txt")], tokenizer, max_seq_length=128, seed=0)
    loader = corpus.dataloader(batch_size=32, mlm_probability=0.15)   # None: no masking

Modules: `sources` (formats, decode policy, checks), `packing` (block layout),
`mixture` (weights, alpha, the sampler), `loader` (dataset view, collator/masking),
`corpus` (the entry point, its checks and stats), `docstrings` (an offline English corpus:
the docstrings of the installed Python packages).
"""

from tadistill.data.corpus import Corpus, SourceStats, build_corpus, corpus_problems
from tadistill.data.loader import BlockCollator, PackedBlocks
from tadistill.data.mixture import MixtureSampler, mixture_problems, mixture_probabilities
from tadistill.data.packing import BlockLayout, block_layout, pack_documents, pack_token_lists
from tadistill.data.sources import Documents, expand_files, read_documents, resolve_format, source_problems

__all__ = [
    "BlockCollator",
    "BlockLayout",
    "Corpus",
    "Documents",
    "MixtureSampler",
    "PackedBlocks",
    "SourceStats",
    "block_layout",
    "build_corpus",
    "corpus_problems",
    "mixture_problems",
    "source_problems",
    "expand_files",
    "mixture_probabilities",
    "pack_documents",
    "pack_token_lists",
    "read_documents",
    "resolve_format",
]
