"""The downstream tasks: GLUE's nine and XNLI, each with its files, labels and metric.

A `Task` is plain data. `layouts` reads it to find and parse the files, `train` to build
the classifier head, `metrics` and `sweep` to score it. Label ids follow the Hugging Face
hub datasets (`nyu-mll/glue`, `facebook/xnli`), so a model fine-tuned on local files and
one fine-tuned on hub data agree on what each id means.
"""

from __future__ import annotations

from dataclasses import dataclass

from tadistill.registry import Registry

NLI_LABELS = ("entailment", "neutral", "contradiction")

# XNLI's 15 languages, in the column order of the XNLI paper's tables.
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")


@dataclass(frozen=True)
class Task:
    """One downstream task. Local-file fields describe the original distribution's TSVs."""

    name: str
    title: str  # as in papers' tables; for GLUE also the task's folder in the GLUE download
    suite: str  # "glue" or "xnli"
    metric: str  # a key of metrics.METRICS
    labels: tuple[str, ...]  # label names in id order (the hub's order); () means regression
    hub_text_columns: tuple[str, ...]  # the hub dataset's text columns, first segment first
    text_columns: tuple[str | int, ...] = ()  # local TSV columns: header names, positions if headerless
    label_column: str | int = "label"
    file_labels: tuple[str, ...] = ("0", "1")  # how the TSVs spell each label, in id order
    eval_files: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)  # (eval set name, file)
    has_header: bool = True
    select_on: str = "dev"  # the eval set whose score picks the learning rate in a sweep
    report_on: str = "dev"  # the eval set whose score is the task's reported score
    shown: tuple[str, ...] = ("dev",)  # the eval sets a leaderboard table shows

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1


TASKS: Registry[Task] = Registry("task")


def _add(task: Task) -> None:
    TASKS.register(task.name)(task)


# GLUE, as in the GLUE download (`glue_data/<title>/`). CoLA's train/dev files have no
# header: source, label, original star annotation, sentence.
_add(Task(
    name="cola", title="CoLA", suite="glue", metric="mcc",
    labels=("unacceptable", "acceptable"), hub_text_columns=("sentence",),
    text_columns=(3,), label_column=1, has_header=False,
))
_add(Task(
    name="sst2", title="SST-2", suite="glue", metric="accuracy",
    labels=("negative", "positive"), hub_text_columns=("sentence",),
    text_columns=("sentence",),
))
_add(Task(
    name="mrpc", title="MRPC", suite="glue", metric="accuracy_f1",
    labels=("not_equivalent", "equivalent"), hub_text_columns=("sentence1", "sentence2"),
    text_columns=("#1 String", "#2 String"), label_column="Quality",
))
_add(Task(
    name="stsb", title="STS-B", suite="glue", metric="pearson_spearman",
    labels=(), hub_text_columns=("sentence1", "sentence2"),
    text_columns=("sentence1", "sentence2"), label_column="score",
))
_add(Task(
    name="qqp", title="QQP", suite="glue", metric="accuracy_f1",
    labels=("not_duplicate", "duplicate"), hub_text_columns=("question1", "question2"),
    text_columns=("question1", "question2"), label_column="is_duplicate",
))
_add(Task(
    name="mnli", title="MNLI", suite="glue", metric="accuracy",
    labels=NLI_LABELS, hub_text_columns=("premise", "hypothesis"),
    text_columns=("sentence1", "sentence2"), label_column="gold_label", file_labels=NLI_LABELS,
    eval_files=(("dev_matched", "dev_matched.tsv"), ("dev_mismatched", "dev_mismatched.tsv")),
    select_on="dev_matched", report_on="dev_matched", shown=("dev_matched", "dev_mismatched"),
))
_add(Task(
    name="qnli", title="QNLI", suite="glue", metric="accuracy",
    labels=("entailment", "not_entailment"), hub_text_columns=("question", "sentence"),
    text_columns=("question", "sentence"), file_labels=("entailment", "not_entailment"),
))
_add(Task(
    name="rte", title="RTE", suite="glue", metric="accuracy",
    labels=("entailment", "not_entailment"), hub_text_columns=("sentence1", "sentence2"),
    text_columns=("sentence1", "sentence2"), file_labels=("entailment", "not_entailment"),
))
_add(Task(
    name="wnli", title="WNLI", suite="glue", metric="accuracy",
    labels=("not_entailment", "entailment"), hub_text_columns=("sentence1", "sentence2"),
    text_columns=("sentence1", "sentence2"),
))

# XNLI: train on English MultiNLI, evaluate zero-shot on the 15 languages' dev and test
# sets (`dev_<lang>`, `test_<lang>`, and their averages). The learning rate is picked on
# the average dev accuracy; the test average is reported.
_add(Task(
    name="xnli", title="XNLI", suite="xnli", metric="accuracy",
    labels=NLI_LABELS, hub_text_columns=("premise", "hypothesis"), file_labels=NLI_LABELS,
    select_on="dev_avg", report_on="test_avg", shown=tuple(f"test_{lang}" for lang in XNLI_LANGUAGES),
))

SUITES = {
    # WNLI is left out of the default GLUE sweep and of the GLUE average, as in the BERT
    # and MiniLM papers (its dev set is adversarial to train); ask for it with --tasks.
    "glue": ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"),
    "xnli": ("xnli",),
}


def get_task(name: str) -> Task:
    """The task called `name`; "glue/sst2" is accepted for "sst2"."""
    return TASKS.get(name.lower().removeprefix("glue/"))
