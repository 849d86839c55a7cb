"""`tadistill quickstart` end to end, offline, with the real all-MiniLM-L6-v2 teacher: a few
steps on a small corpus, then the saved student must load with transformers and
sentence-transformers and every figure of the table must be finite and in range."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from tadistill.cli import main
from tadistill.recipes.quickstart import CONFIG, format_table, quickstart_config, teacher_dir
from tadistill.validation import checked_run_config

import sentence_transformers  # noqa: E402  (both come with the .[dev] extra: a missing one must fail)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("quickstart") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        code = main(["quickstart", "--output", str(output), "--steps", "3", "--max-train-bytes", "60000",
                     "--heldout-docs", "40", "--bench-iters", "1"])
    assert code == 0
    return output


def test_short_quickstart_reports_finite_figures_in_range(short_run):
    result = json.loads((short_run / "quickstart.json").read_text())
    assert result["steps"] == 3 and result["heldout_docs"] == 40
    rows = result["rows"]
    assert list(rows) == ["teacher", "student, undistilled", "student, distilled"]
    teacher, before, after = rows.values()
    for row in rows.values():
        assert all(math.isfinite(value) for value in row.values())
        assert -1 <= row["mean_cos"] <= 1 and -1 <= row["spearman"] <= 1 and 0 <= row["nn_at_1"] <= 1
        assert row["ms_b1"] > 0 and row["ms_b32"] > 0
    # 3 of the teacher's 6 blocks, the same embeddings
    assert before["embeddings_M"] == teacher["embeddings_M"] == after["embeddings_M"]
    assert before["transformer_M"] == after["transformer_M"] == pytest.approx(teacher["transformer_M"] / 2)
    assert teacher["speedup_b32"] == 1.0
    # the undistilled student copies teacher blocks 1, 4, 6: related to the teacher, not equal to it
    assert 0.3 < before["mean_cos"] < 0.99
    assert [json.loads(line)["step"] for line in (short_run / "metrics.jsonl").read_text().splitlines()][-1] == 3


def test_saved_student_loads_with_transformers_and_sentence_transformers(short_run):
    student_dir = short_run / "student"
    texts = (short_run / "corpus" / "heldout.txt").read_text().splitlines()[:8]
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    model = AutoModel.from_pretrained(student_dir).eval()
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 384
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, n, d)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (B, n, 1)
    expected = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # plain mean pooling

    encoder = sentence_transformers.SentenceTransformer(str(student_dir), device="cpu")
    encoder.max_seq_length = 128
    got = encoder.encode(texts, convert_to_tensor=True).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_rerunning_into_the_same_directory_is_refused(short_run, capsys):
    assert main(["quickstart", "--output", str(short_run), "--steps", "1"]) == 2
    assert "already holds a quickstart run" in capsys.readouterr().err


def test_shipped_config_runs_with_tadistill_distill_once_the_paths_are_set(tmp_path):
    corpus = tmp_path / "train.txt"
    corpus.write_text("A line of text.\n")
    config = checked_run_config(CONFIG, [f"teacher.path={teacher_dir()}", f"data.sources.0.path={corpus}"])
    assert config.teacher.path == str(teacher_dir())
    assert CONFIG.read_text().startswith("# tadistill quickstart")


def test_steps_rescale_the_warmup(tmp_path):
    (tmp_path / "train.txt").write_text("A line of text.\n")
    config = quickstart_config(teacher_dir(), tmp_path / "train.txt", steps=200)
    assert (config.train.max_steps, config.train.warmup_steps) == (200, 10)
    assert config.data.sources[0].documents == "line"


def test_table_lists_every_model_and_metric():
    row = {"embeddings_M": 11.7, "transformer_M": 5.3, "ms_b1": 5.0, "ms_b32": 80.0, "speedup_b1": 2.0,
           "speedup_b32": 1.9, "mean_cos": 0.91, "spearman": 0.87, "nn_at_1": 0.62}
    table = format_table({"teacher": row, "student, distilled": row}, heldout_docs=1000)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["model", "emb", "M"]
    assert lines[2].startswith("teacher ") and lines[3].startswith("student, distilled ")
    assert "0.910" in lines[3] and "0.870" in lines[3] and "0.620" in lines[3] and "1.90x" in lines[3]
    assert "1,000 held-out" in table
