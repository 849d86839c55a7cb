"""Fixture files in each task's original layout, for the fine-tuning tests.

Every writer lays out synthetic examples exactly as the real distribution does: the GLUE
download's per-task TSVs (CoLA headerless, MRPC's BOM-less GLUE copy and Microsoft's
original with its BOM, STS-B's ten columns, MNLI's parse columns and two dev files, ...),
XNLI-1.0's all-languages TSVs and MultiNLI's train.txt. Labels are set by a keyword in
the first text (one keyword per class, or the score's bucket for STS-B), so the examples
are learnable and every expected value is known.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tadistill.evaluation.tasks import XNLI_LANGUAGES, get_task
from tiny import WORDS

KEYWORDS = ("fast", "small", "deep")  # class i's first text contains KEYWORDS[i]
FILLER = [w for w in WORDS if w not in KEYWORDS]


@dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str
    label: str  # as the task's files spell it
    label_id: int | float  # what the loader must return


def make_examples(task_name: str, n: int, seed: int = 0) -> list[Example]:
    """n learnable examples for the task; some texts carry GLUE's unbalanced quotes."""
    task = get_task(task_name)
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 10))]
        if task.is_regression:
            label_id = round(rng.uniform(0, 5), 3)
            keyword, label = KEYWORDS[min(int(label_id // 2), 2)], f"{label_id:.3f}"
        else:
            label_id = i % len(task.labels)
            keyword, label = KEYWORDS[label_id], task.file_labels[label_id]
        words.insert(rng.randrange(len(words) + 1), keyword)
        text_a = " ".join(words) + (' "quoted' if i % 5 == 0 else ".")  # `"` is text, not CSV quoting
        text_b = " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8))) + "."
        examples.append(Example(text_a, text_b, label, float(label) if task.is_regression else label_id))
    return examples


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text(("\ufeff" if bom else "") + "".join("\t".join(row) + "\n" for row in lines), encoding="utf-8")
    return path


# -------------------------------------------------------------- one writer per GLUE layout

MNLI_TRAIN_HEADER = [
    "index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
    "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label",
]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def _parse(text: str) -> str:
    return "( " + " ".join(text.split()) + " )"


def _cola(e: Example, i: int, dev: bool) -> list[str]:
    return ["gj04", e.label, "" if e.label == "1" else "*", e.text_a]


def _mnli(e: Example, i: int, dev: bool) -> list[str]:
    labels = [e.label] * (5 if dev else 1)
    return [str(i), f"{i}1", f"{i}1e", "fiction", _parse(e.text_a), _parse(e.text_b),
            f"(ROOT {_parse(e.text_a)})", f"(ROOT {_parse(e.text_b)})", e.text_a, e.text_b, *labels, e.label]


GLUE_LAYOUTS = {  # task -> (header of train.tsv, header of dev files, row writer)
    "cola": (None, None, _cola),
    "sst2": (["sentence", "label"], None, lambda e, i, dev: [e.text_a, e.label]),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], None,
             lambda e, i, dev: [e.label, str(1000 + i), str(2000 + i), e.text_a, e.text_b]),
    "stsb": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
             None, lambda e, i, dev: [str(i), "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none",
                                      e.text_a, e.text_b, e.label]),
    "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], None,
            lambda e, i, dev: [str(i), str(2 * i + 1), str(2 * i + 2), e.text_a, e.text_b, e.label]),
    "mnli": (MNLI_TRAIN_HEADER, MNLI_DEV_HEADER, _mnli),
    "qnli": (["index", "question", "sentence", "label"], None, lambda e, i, dev: [str(i), e.text_a, e.text_b, e.label]),
    "rte": (["index", "sentence1", "sentence2", "label"], None, lambda e, i, dev: [str(i), e.text_a, e.text_b, e.label]),
    "wnli": (["index", "sentence1", "sentence2", "label"], None, lambda e, i, dev: [str(i), e.text_a, e.text_b, e.label]),
}


def write_glue_task(root: Path, task_name: str, train: list[Example], dev: list[Example]) -> Path:
    """glue_data/<Task>/train.tsv and its dev file(s) under root; returns root."""
    task = get_task(task_name)
    train_header, dev_header, row = GLUE_LAYOUTS[task_name]
    folder = root / task.title
    write_tsv(folder / "train.tsv", train_header, [row(e, i, False) for i, e in enumerate(train)])
    for _, file in task.eval_files:  # MNLI: the same examples as matched and mismatched dev
        write_tsv(folder / file, dev_header or train_header, [row(e, i, True) for i, e in enumerate(dev)])
    return root


def write_original_mrpc(folder: Path, train: list[Example], dev: list[Example]) -> Path:
    """Microsoft's msr_paraphrase_train.txt (with its BOM) + GLUE's dev_ids.tsv."""
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    rows = [[e.label, str(1000 + i), str(2000 + i), e.text_a, e.text_b] for i, e in enumerate(dev + train)]
    write_tsv(folder / "msr_paraphrase_train.txt", header, rows, bom=True)
    write_tsv(folder / "dev_ids.tsv", None, [[str(1000 + i), str(2000 + i)] for i in range(len(dev))])
    return folder


# -------------------------------------------------------------- XNLI-1.0 and MultiNLI

XNLI_HEADER = [
    "language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
    "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
    "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match",
]
MULTINLI_HEADER = [
    "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
    "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2", "label3", "label4", "label5",
]


def write_xnli(root: Path, train: list[Example], per_language: list[Example], unlabeled_train: int = 0) -> Path:
    """XNLI-1.0/xnli.{dev,test}.tsv (per_language examples in each of the 15 languages) and
    multinli_1.0/multinli_1.0_train.txt, with `unlabeled_train` extra "-" rows first."""
    def xnli_row(e: Example, language: str, i: int) -> list[str]:
        return [language, e.label, _parse(e.text_a), _parse(e.text_b), _parse(e.text_a), _parse(e.text_b),
                e.text_a, e.text_b, str(i), f"{i}e", "fiction", *[e.label] * 5, e.text_a, e.text_b, "True"]

    for split in ("dev", "test"):
        rows = [xnli_row(e, lang, i) for lang in XNLI_LANGUAGES for i, e in enumerate(per_language)]
        write_tsv(root / "XNLI-1.0" / f"xnli.{split}.tsv", XNLI_HEADER, rows)
    unlabeled = [Example("no agreement here.", "none.", "-", -1)] * unlabeled_train
    rows = [[e.label, _parse(e.text_a), _parse(e.text_b), _parse(e.text_a), _parse(e.text_b), e.text_a, e.text_b,
             str(i), f"{i}n", "fiction", e.label, "", "", "", ""] for i, e in enumerate(unlabeled + train)]
    write_tsv(root / "multinli_1.0" / "multinli_1.0_train.txt", MULTINLI_HEADER, rows)
    return root


def write_task(root: Path, task_name: str, n_train: int, n_dev: int, seed: int = 0) -> Path:
    """The task's files in its original layout under root (root is then the --data-dir)."""
    train = make_examples(task_name, n_train, seed)
    dev = make_examples(task_name, n_dev, seed + 1)
    if task_name == "xnli":
        return write_xnli(root, train, dev)
    return write_glue_task(root, task_name, train, dev)
