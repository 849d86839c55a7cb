"""The real `tadistill distill` CLI on tiny teachers: every objective family learns, the
student exports, bad runs fail before compute, and config changes on resume are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForMaskedLM

from tadistill.arch import adapter_for
from tadistill.cli import main
from tiny import make_sentences, make_tiny_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tiny"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(make_sentences(600, seed=3, min_words=8, max_words=40)) + "\n")
    return path


@pytest.fixture(scope="module")
def teacher4(tiny_teacher_factory) -> Path:
    return tiny_teacher_factory("bert", layers=4)


def distill(config: str, teacher: Path, corpus: Path, output: Path, *extra: str) -> int:
    args = ["distill", str(CONFIGS / f"{config}.yaml"), "--output", str(output),
            "--set", f"teacher.path={teacher}", "--set", f"data.sources.0.path={corpus}", *extra]
    return main(args)


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("config", ["od", "hs", "minilmv2", "minilm", "tinybert", "direct-minilm", "mix"])
def test_each_objective_family_learns(config, teacher4, corpus, tmp_path):
    assert distill(config, teacher4, corpus, tmp_path / "run") == 0
    curve = losses(tmp_path / "run")
    assert len(curve) == 6  # 30 steps, a record every 5
    assert all(map(lambda x: x == x and x < float("inf"), curve))
    assert curve[-1] < 0.8 * curve[0], curve
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()


def test_distilbert_recipe_learns_with_frequency_smoothed_masking(teacher4, corpus, tmp_path):
    """od as configs/paper/en/distilbert-6x768.yaml sets it (5 KL + 2 MLM + 1 cos, all positions,
    mlm_smoothing 0.7), on a tiny teacher."""
    run = tmp_path / "run"
    sets = ["data.mlm_smoothing=0.7", "objectives.0.weight=5.0", "objectives.0.alpha_mlm=0.4",
            "objectives.0.alpha_cos=0.2", "objectives.0.positions=all"]
    assert distill("od", teacher4, corpus, run, *[arg for s in sets for arg in ("--set", s)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:  # DistilBERT's 5 : 2 : 1 (window means of a linear combination)
        expected = 5.0 * (record["od/kl"] + 0.4 * record["od/mlm"] + 0.2 * record["od/cos"])
        assert record["loss"] == pytest.approx(expected, rel=1e-4)
    # the tiny teacher is untrained, so its soft targets are near uniform: the hard MLM loss leads
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["od/mlm"] < records[0]["od/mlm"]


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert"])
def test_every_family_distils_and_exports(family, tiny_teacher_factory, corpus, tmp_path):
    """The families the README names: a narrower student (48 wide, 4 heads) learns from relations
    and hidden states with embeddings, and saves as a plain model of the teacher's family."""
    teacher = tiny_teacher_factory(family, layers=4)
    run = tmp_path / "run"
    sets = ["train.max_steps=10", "objectives.1.embeddings=true"]
    assert distill("mix", teacher, corpus, run, *[arg for s in sets for arg in ("--set", s)]) == 0
    metadata = json.loads((run / "student" / "tadistill.json").read_text())
    assert metadata["steps"] == 10 and metadata["tokens_seen"] > 0
    curve = losses(run)
    assert all(map(lambda x: x == x and x < float("inf"), curve)) and curve[-1] < curve[0]
    encoder = AutoModel.from_pretrained(run / "student")
    assert encoder.config.model_type == family
    shape = adapter_for(encoder).shape(encoder.config)
    assert (shape.layers, shape.hidden, shape.heads) == (2, 48, 4)
    if adapter_for(encoder).lm_head is not None:  # saved with the teacher's masked-LM class
        assert AutoModelForMaskedLM.from_pretrained(run / "student").config.model_type == family


def test_run_directory_contents(teacher4, corpus, tmp_path):
    run = tmp_path / "run"
    assert distill("minilmv2", teacher4, corpus, run, "--set", "train.max_steps=20") == 0
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000010", "step-00000020"]
    assert list(run.glob("**/events.out.tfevents*")), "TensorBoard logs"
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"step", "tokens", "lr", "loss", "minilmv2/qq", "minilmv2/kk", "minilmv2/vv", "tokens_per_s"} <= set(record)
    from huggingface_hub import ModelCard

    card = ModelCard.load(run / "student" / "README.md")  # the model card, as the hub parses it
    assert card.data.base_model == str(teacher4) and "minilmv2" in card.data.tags
    assert "20 optimizer steps" in card.text


def test_changed_config_is_refused_on_resume(teacher4, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=10") == 0
    code = distill("hs", teacher4, corpus, run, "--set", "train.max_steps=10", "--set", "train.learning_rate=0.5",
                   "--resume", "auto")
    assert code == 2
    assert "train.learning_rate" in capsys.readouterr().err


def test_bad_run_fails_before_compute_with_every_problem(teacher4, corpus, tmp_path, capsys):
    code = distill("minilmv2", teacher4, corpus, tmp_path / "run", "--set", "objectives.0.relation_heads=5",
                   "--set", "student.heads=5", "--set", "train.max_steps=0")
    assert code == 2
    err = capsys.readouterr().err
    for key in ("student.heads", "train.max_steps"):
        assert key in err
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(teacher4, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=10") == 0
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=10") == 2
    assert "--resume auto" in capsys.readouterr().err


def test_od_without_teacher_lm_head_fails_before_compute(tmp_path, corpus, capsys):
    headless = make_tiny_teacher("bert", tmp_path / "encoder", layers=4, with_lm_head=False)
    assert distill("od", headless, corpus, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "objectives.0" in err and "head" in err
    assert not (tmp_path / "run").exists()


def test_tokenizer_of_another_model_is_refused(teacher4, tiny_teacher_factory, corpus, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(teacher4, mixed)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a 300-token RoBERTa tokenizer on a 200-token model
        shutil.copy(tiny_teacher_factory("roberta") / name, mixed / name)
    assert distill("hs", mixed, corpus, tmp_path / "run") == 2
    assert "does not belong to this model" in capsys.readouterr().err


def test_unwritable_output_is_refused(teacher4, corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert distill("hs", teacher4, corpus, blocker / "run") == 2
    assert "not writable" in capsys.readouterr().err


def test_non_finite_loss_stops_naming_objective_and_step(teacher4, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code = distill("hs", teacher4, corpus, run, "--set", "train.learning_rate=1e12", "--set", "train.max_grad_norm=1e30",
                   "--set", "train.warmup_steps=0", "--set", "train.save_every=1")
    assert code == 2
    err = capsys.readouterr().err
    assert "non-finite loss from objective(s) hs at step" in err
    step = int(err.split(" at step ")[1].split(";")[0])
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept[-1] == f"step-{step - 1:08d}"  # the last good step, nothing after it


def test_token_budget_ends_the_run(teacher4, corpus, tmp_path):
    run = tmp_path / "run"
    # batch 8 x 32 positions: at most 256 tokens a step, so 2,000 tokens take at least 8 steps
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=null", "--set", "train.max_tokens=2000",
                   "--set", "train.warmup_steps=0") == 0
    metadata = json.loads((run / "student" / "tadistill.json").read_text())
    assert metadata["tokens_seen"] >= 2000
    assert metadata["tokens_seen"] - 256 < 2000  # it stopped at the first step past the budget


def test_tracker_none_writes_no_tensorboard_logs_and_unknown_trackers_are_named(teacher4, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=4", "--set", "train.log_with=none") == 0
    assert not list(run.glob("**/events.out.tfevents*")) and (run / "metrics.jsonl").is_file()
    # the tracker may change on resume: it changes no weight
    assert distill("hs", teacher4, corpus, run, "--set", "train.max_steps=4", "--resume", "auto") == 0
    capsys.readouterr()
    assert distill("hs", teacher4, corpus, tmp_path / "bad", "--set", "train.max_steps=4", "--set", "train.log_with=tensorbord") == 2
    assert "train.log_with='tensorbord': use one of tensorboard, wandb, mlflow, none. Did you mean 'tensorboard'?" in capsys.readouterr().err
