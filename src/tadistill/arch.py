"""Per-family adapters: where the layers, the Q/K/V projections and the LM head live.

Adding a model family is one `ArchAdapter` entry in `ADAPTERS`; no model code is forked
or patched. Paths are attribute paths (dots) relative to the base model (`model.base_model`)
for layers and embeddings, relative to one layer for Q/K/V, and relative to the
masked-LM model for the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from tadistill.attention import reports_scores
from tadistill.errors import ModelError


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    # its attention kernel hands over the scores it computes (tadistill's matmul, `train.attention`),
    # so a `scores` tap costs no product (tadistill.taps)
    kernel_scores: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def __str__(self) -> str:
        return f"{self.layers}L x {self.hidden}H x {self.heads}A x {self.intermediate}FFN"


class AttentionProjections(NamedTuple):
    """The query, key and value projections of one block."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear


@dataclass(frozen=True)
class ArchAdapter:
    family: str
    layers: str = "encoder.layer"
    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attention_output: str = "attention.output.dense"
    embeddings: str = "embeddings"
    # a projection after the embeddings, when the model has one (ELECTRA with embedding_size
    # != hidden_size): its output is layer 0, as `output_hidden_states` counts it
    embeddings_projection: str | None = None
    lm_head: str | None = "lm_head"
    # RoBERTa-style position ids start after the padding index, so pad_token_id + 1
    # position embeddings are never used for tokens
    positions_after_padding: bool = False
    # config keys that a student takes at its own width when the teacher has them at its
    # width (ELECTRA's embedding_size; a teacher with narrower embeddings keeps them)
    follows_hidden: tuple[str, ...] = ()
    # config attribute names, in the order: layers, hidden, heads, intermediate
    config_keys: tuple[str, str, str, str] = (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
    )

    def shape(self, config) -> ModelShape:
        layers, hidden, heads, intermediate = (getattr(config, k) for k in self.config_keys)
        return ModelShape(layers, hidden, heads, intermediate, config.vocab_size, reports_scores(config))

    def shape_overrides(self, teacher_config, layers: int, hidden: int, heads: int, intermediate: int) -> dict:
        """Config kwargs that give the teacher's config the student's shape."""
        overrides = dict(zip(self.config_keys, (layers, hidden, heads, intermediate)))
        teacher_hidden = getattr(teacher_config, self.config_keys[1])
        for key in self.follows_hidden:
            if getattr(teacher_config, key, None) == teacher_hidden:
                overrides[key] = hidden
        return overrides

    def max_positions(self, config) -> int:
        """The longest input (in tokens) the position embeddings cover."""
        offset = config.pad_token_id + 1 if self.positions_after_padding else 0
        return config.max_position_embeddings - offset

    def checkpoint_has_lm_head(self, config) -> bool:
        """Whether a checkpoint with this config was saved from a masked-LM class (its
        `architectures`), so that its LM head holds trained weights rather than none."""
        architectures = config.architectures or []
        return self.lm_head is not None and any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return _get(model.base_model, self.layers)

    def layer(self, model: nn.Module, index: int) -> nn.Module:
        """Transformer block `index`, 1-based (0 is the embedding output, not a block)."""
        blocks = self.layer_list(model)
        if not 1 <= index <= len(blocks):
            raise ModelError(f"layer {index} does not exist: the model has blocks 1..{len(blocks)}")
        return blocks[index - 1]

    def qkv(self, model: nn.Module, index: int) -> AttentionProjections:
        block = self.layer(model, index)
        return AttentionProjections(_get(block, self.query), _get(block, self.key), _get(block, self.value))

    def attention_module(self, model: nn.Module, index: int) -> nn.Module:
        """The self-attention of block `index`: the module that holds its query projection, and
        the one the models hand their attention kernel (transformers' `AttentionInterface`)."""
        return _get(self.layer(model, index), self.query.rpartition(".")[0])

    def embedding_module(self, model: nn.Module) -> nn.Module:
        return _get(model.base_model, self.embeddings)

    def embedding_output_module(self, model: nn.Module) -> nn.Module:
        """The module whose output is layer 0 (the input of block 1)."""
        if self.embeddings_projection and hasattr(model.base_model, self.embeddings_projection):
            return _get(model.base_model, self.embeddings_projection)
        return self.embedding_module(model)

    def lm_head_module(self, model: nn.Module) -> nn.Module | None:
        """The masked-LM head (hidden -> vocab logits), or None if the model has none."""
        if self.lm_head is None:
            return None
        try:
            return _get(model, self.lm_head)
        except AttributeError:
            return None


def _get(root: nn.Module, path: str):
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


ADAPTERS: dict[str, ArchAdapter] = {
    "bert": ArchAdapter("bert", lm_head="cls"),
    "roberta": ArchAdapter("roberta", positions_after_padding=True),
    "xlm-roberta": ArchAdapter("xlm-roberta", positions_after_padding=True),
    "camembert": ArchAdapter("camembert", positions_after_padding=True),
    # ELECTRA's generator head is two modules; the discriminator has none: no MLM logits.
    "electra": ArchAdapter(
        "electra", lm_head=None, follows_hidden=("embedding_size",), embeddings_projection="embeddings_project"
    ),
    "distilbert": ArchAdapter(
        "distilbert",
        layers="transformer.layer",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attention_output="attention.out_lin",
        lm_head=None,
        config_keys=("n_layers", "dim", "n_heads", "hidden_dim"),
    ),
}


def adapter_for(config_or_model) -> ArchAdapter:
    """The adapter of a model or config, by its `model_type`."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ModelError(
            f"model_type {model_type!r} is not supported; supported families: {', '.join(sorted(ADAPTERS))} "
            "(add an ArchAdapter entry in tadistill/arch.py for another encoder family)"
        )
    return ADAPTERS[model_type]
