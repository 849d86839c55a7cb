"""`tadistill report` on a hand-written study: every number in every table is the number
in the inputs, missing values are missing (never 0), the best value is marked, the plots
are images of the stated size, the Pareto frontier is right, and model cards round-trip
through the hub's parser."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ElementTree

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from report_fixtures import CELLS, TEACHER, TEACHER_GLUE, TEACHER_XNLI, make_study, write_json
from tadistill import cli
from tadistill.report import plots
from tadistill.report.tables import MISSING, count_saved_parameters


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    study = make_study(root)
    out = root / "report"
    assert cli.main(["report", str(study), "--out", str(out)]) == 0
    return study, out


def table(out, name) -> dict:
    return json.loads((out / "tables" / f"{name}.json").read_text())


def rows_by_label(data: dict) -> dict:
    return {(row["method"], row["student"]): row for row in data["rows"]}


def test_scores_and_averages_are_the_inputs_numbers(report):
    _, out = report
    scores = table(out, "scores")
    rows = rows_by_label(scores)
    assert [row["method"] for row in scores["rows"]] == ["teacher", "hs", "minilmv2", "minilmv2"]
    assert scores["reference_rows"] == [0]
    for name, cell in CELLS.items():
        row = rows[cell["method"], cell["student"]]
        for task in ("sst2", "mrpc"):
            expected = 100 * cell["glue"][task] if task in cell["glue"] else None
            assert row[task] == pytest.approx(expected) if expected is not None else row[task] is None, (name, task)
        glue = cell["glue"]
        expected_glue = 100 * (glue["sst2"] + glue["mrpc"]) / 2 if len(glue) == 2 else None  # not an average of fewer tasks
        assert (row["glue_avg"] is None) if expected_glue is None else row["glue_avg"] == pytest.approx(expected_glue)
        expected_xnli = 100 * sum(cell["xnli"]) / 15 if cell["xnli"] else None
        assert (row["xnli_avg"] is None) if expected_xnli is None else row["xnli_avg"] == pytest.approx(expected_xnli)
    teacher = rows["teacher", TEACHER]
    assert teacher["glue_avg"] == pytest.approx(100 * sum(TEACHER_GLUE.values()) / 2)
    # best per column: among the students, never the teacher
    assert scores["best"]["sst2"] == [2] and scores["best"]["mrpc"] == [1] and scores["best"]["xnli_avg"] == [2]

    kept = rows_by_label(table(out, "kept"))
    for cell in CELLS.values():
        for task, score in cell["glue"].items():
            assert kept[cell["method"], cell["student"]][task] == pytest.approx(100 * score / TEACHER_GLUE[task])
    assert kept["minilmv2", "3x384"]["mrpc"] is None and kept["minilmv2", "3x384"]["glue_avg"] is None

    xnli = rows_by_label(table(out, "xnli"))
    assert xnli["hs", "6x384"]["xnli/de"] == pytest.approx(100 * CELLS["hs-6x384"]["xnli"][3])  # en fr es de ...
    assert xnli["teacher", TEACHER]["xnli/en"] == pytest.approx(100 * TEACHER_XNLI[0])


def test_efficiency_and_agreement_are_the_inputs_numbers(report):
    _, out = report
    rows = rows_by_label(table(out, "efficiency"))
    for cell in CELLS.values():
        row = rows[cell["method"], cell["student"]]
        if cell["params"]:
            assert row["params_embeddings"] == pytest.approx(cell["params"]["embeddings"] / 1e6)
            assert row["params_blocks"] == pytest.approx(cell["params"]["blocks"] / 1e6)
            assert row["ms b32 s128 fp32"] == pytest.approx(cell["ms"])
            assert row["speedup b32 s128 fp32"] == pytest.approx(60.0 / cell["ms"])
        else:  # no bench and no weights on disk: missing, not zero
            assert row["params_total"] is None and row["ms b32 s128 fp32"] is None
        assert row["tokens"] == cell["tokens"] and row["steps"] == cell["steps"]
        assert row["distill_s"] == cell["distill_s"]
        step_tokens = cell["tokens"] // 5  # the fixture's log: 5 records, record i at 1000 * i tokens/s
        assert row["train_s"] == pytest.approx(sum(step_tokens / (1000.0 * i) for i in range(1, 6)))
    assert rows["teacher", TEACHER]["ms b32 s128 fp32"] == 60.0
    agreement = rows_by_label(table(out, "agreement"))
    assert agreement["minilmv2", "6x384"]["spearman"] == 0.75 and agreement["minilmv2", "3x384"]["spearman"] is None


def test_missing_is_shown_as_missing_in_every_format_and_best_is_marked(report):
    _, out = report
    markdown = (out / "tables" / "scores.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("| minilmv2 | 3x384"))
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells == ["minilmv2", "3x384", "88.0", MISSING, MISSING, MISSING]
    assert "| **92.0** |" in next(line for line in markdown.splitlines() if line.startswith("| minilmv2 | 6x384"))
    with open(out / "tables" / "scores.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["Method", "Student", "SST-2 (%)"]
    assert rows[4][2:] == [str(100 * 0.88), "", "", ""] and float(rows[1][2]) == 100 * TEACHER_GLUE["sst2"]
    latex = (out / "tables" / "scores.tex").read_text()
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"\textbf{92.0}" in latex
    assert "minilmv2 & 3x384 & 88.0 & -- & -- & --" in latex and r"(\%)" in latex
    report_md = (out / "report.md").read_text()
    assert "Not finished: minilmv2/3x384 (failed: eval/mrpc failed: boom)" in report_md
    for plot in ("score_vs_latency", "training_curves", "scores_by_task"):
        assert f"(plots/{plot}.png)" in report_md


def test_each_plot_decodes_as_an_image_of_the_stated_size(report):
    _, out = report
    width, height = plots.FIGSIZE
    for name in ("score_vs_latency", "training_curves", "scores_by_task"):
        with Image.open(out / "plots" / f"{name}.png") as image:
            image.load()
            assert image.size == (round(width * plots.DPI), round(height * plots.DPI))
        svg = ElementTree.parse(out / "plots" / f"{name}.svg").getroot()
        assert (svg.get("width"), svg.get("height")) == (f"{width * 72:g}pt", f"{height * 72:g}pt")


def test_pareto_frontier_of_hand_made_points():
    points = [(1.0, 50.0), (2.0, 60.0), (2.5, 55.0), (3.0, 60.0), (4.0, 80.0), (0.5, 40.0), (4.0, 70.0), (1.0, 50.0)]
    # (2.5, 55) is beaten by (2, 60); (3, 60) by (2, 60); (4, 70) by (4, 80); the two (1, 50) tie and stay
    assert plots.pareto_frontier(points) == [5, 0, 7, 1, 4]
    assert plots.pareto_frontier([(1.0, 1.0)]) == [0]


def test_method_colours_are_fixed_across_plots():
    first = plots.method_colours(["minilmv2", "hs", "od"])
    assert first == plots.method_colours(["od", "hs", "minilmv2", "hs"])
    assert len(set(first.values())) == 3


def test_model_cards_round_trip_through_the_hub_parser(report, tmp_path):
    study, _ = report
    card = ModelCard.load(study / "cells" / "minilmv2-6x384" / "run" / "student" / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == TEACHER and data["library_name"] == "transformers"
    assert {"tadistill", "knowledge-distillation", "minilmv2"} <= set(data["tags"])
    assert data["datasets"] == ["wikimedia/wikipedia"]  # the hub source, not the local file
    assert "200 optimizer steps, 5,120,000 tokens seen" in card.text
    assert "| SST-2 (%) | 92.0 |" in card.text and "b32 s128 fp32 cpu" in card.text
    # a local teacher's license and language are inherited
    teacher = tmp_path / "local-teacher"
    teacher.mkdir()
    (teacher / "README.md").write_text("---\nlicense: mit\nlanguage: [en, de]\n---\n# teacher\n")
    student = tmp_path / "run" / "student"
    write_json(student / "tadistill.json", {"teacher": str(teacher), "objectives": [{"name": "hs", "weight": 1.0}], "steps": 3})
    write_json(student / "config.json", {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 32})
    from tadistill.report.card import write_model_card

    data = ModelCard.load(write_model_card(student)).data.to_dict()
    assert data["license"] == "mit" and data["language"] == ["en", "de"] and data["base_model"] == str(teacher)


def test_plain_run_directories_and_a_baseline(tmp_path):
    study = make_study(tmp_path)
    run = tmp_path / "runs" / "minilmv2-6x384"
    run.parent.mkdir()
    (study / "cells" / "minilmv2-6x384" / "run").rename(run)
    evaluation = study / "cells" / "minilmv2-6x384" / "eval" / "sst2" / "results.json"
    write_json(run / "student-eval" / "glue" / "results.json", json.loads(evaluation.read_text()))
    twin = tmp_path / "elsewhere" / "minilmv2-6x384"  # the same label: told apart by its path
    shutil.copytree(run, twin)
    out = tmp_path / "plain"
    assert cli.main(["report", str(run), str(run / "student"), str(twin), "--out", str(out),
                     "--baseline", str(study / "teacher" / "eval"), "--no-cards"]) == 0
    rows = table(out, "scores")["rows"]
    assert [(r["method"], r["student"]) for r in rows][0] == ("teacher", "eval")
    labels = [r["method"] for r in rows[1:]]
    assert len(labels) == 2 and all(label.startswith("minilmv2") for label in labels) and labels[0] != labels[1]
    assert rows[1]["sst2"] == pytest.approx(92.0) and rows[1]["mrpc"] is None
    assert not (run / "student" / "README.md").exists()  # --no-cards


def test_parameters_are_counted_from_the_weights_when_there_is_no_bench(tmp_path):
    import torch
    from safetensors.torch import save_file

    student = tmp_path / "student"
    write_json(student / "config.json", {"model_type": "bert", "num_hidden_layers": 1, "hidden_size": 4})
    save_file({"bert.embeddings.word_embeddings.weight": torch.zeros(10, 4), "bert.encoder.layer.0.output.dense.weight": torch.zeros(4, 4),
               "bert.pooler.dense.bias": torch.zeros(4), "cls.predictions.bias": torch.zeros(10)}, str(student / "model.safetensors"))
    assert count_saved_parameters(student) == {"embeddings": 40, "blocks": 16, "other": 4, "total": 60}


def test_bad_inputs_are_named(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here: neither a study directory" in capsys.readouterr().err
    study = make_study(tmp_path)
    assert cli.main(["report", str(study), "--baseline", str(tmp_path / "no-teacher")]) == 2
    assert "--baseline" in capsys.readouterr().err
