"""`tadistill analyze`: linear CKA against a plain reference (the centred-Gram formula),
1 for a representation with itself and unchanged by rotations and isotropic scaling; the
streaming statistics equal one pass over all tokens; a model compared with itself has
zero relation and attention KL and CKA 1 on the diagonal; the report shows the analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from report_fixtures import make_study
from tadistill import cli
from tadistill.report import plots
from tadistill.report.analysis import CKAStatistics, linear_cka
from tiny import make_sentences


def reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA as HSIC of the linear kernels: tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)), H = I - 11^T / n."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_the_reference_and_its_invariances():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=generator, dtype=torch.float64) + 3.0  # an offset: centring matters
    y = x @ torch.randn(8, 5, generator=generator, dtype=torch.float64) + 0.3 * torch.randn(60, 5, generator=generator, dtype=torch.float64)
    assert linear_cka(x, y) == pytest.approx(reference_cka(x.numpy(), y.numpy()), rel=1e-9)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))  # orthogonal
    assert linear_cka(x @ rotation * 7.5, y) == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert linear_cka(x, y * 0.01) == pytest.approx(linear_cka(x, y), rel=1e-9)
    assert linear_cka(x, torch.randn(60, 5, generator=generator, dtype=torch.float64)) < 0.5


def test_streamed_statistics_equal_one_pass_over_all_tokens():
    generator = torch.Generator().manual_seed(1)
    xs = [torch.randn(50, 6, generator=generator) for _ in range(3)]
    ys = [torch.randn(50, 4, generator=generator) + xs[0][:, :4] for _ in range(2)]
    stats = CKAStatistics()
    for chunk in (slice(0, 7), slice(7, 31), slice(31, 50)):
        stats.add([x[chunk] for x in xs], [y[chunk] for y in ys])
    matrix = stats.matrix()
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert matrix[i][j] == pytest.approx(reference_cka(x.double().numpy(), y.double().numpy()), rel=1e-7)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "heldout.txt"
    path.write_text("\n".join(make_sentences(24, seed=5)) + "\n")
    return path


def test_a_model_against_itself_agrees_exactly(bert_teacher, texts, tmp_path):
    out = tmp_path / "self"
    assert cli.main(["analyze", str(bert_teacher), "--teacher", str(bert_teacher), "--data", str(texts),
                     "--out", str(out), "--batch-size", "8"]) == 0
    result = json.loads((out / "analysis.json").read_text())
    layers = result["teacher_layers"]
    assert result["texts"] == 24 and len(result["cka"]) == layers + 1 == len(result["cka"][0])
    for i in range(layers + 1):
        assert result["cka"][i][i] == pytest.approx(1.0, abs=1e-6)
    for relation in ("qq", "kk", "vv", "mean"):
        for s in range(layers):
            assert result["relation_kl"][relation][s][s] == pytest.approx(0.0, abs=1e-6)
            assert all(value >= -1e-6 for value in result["relation_kl"][relation][s])
        assert any(result["relation_kl"][relation][0][t] > 1e-4 for t in range(1, layers))  # other layers differ
    per_head = result["attention_kl_per_head"]  # [student block][teacher block][head]
    assert len(per_head) == layers and len(per_head[0]) == layers and len(per_head[0][0]) == result["attention_heads"] == 4
    for s in range(layers):
        assert all(value == pytest.approx(0.0, abs=1e-6) for value in per_head[s][s])
        assert result["attention_kl"][s][s] == pytest.approx(0.0, abs=1e-6)
    assert result["attention_kl"][0][1] > 1e-4
    assert result["closest_teacher_layer"]["cka"] == list(range(1, layers + 1))
    assert result["closest_teacher_layer"]["relation_kl"] == list(range(1, layers + 1))
    agreement = result["embedding_agreement"]
    assert agreement["mean_cos"] == pytest.approx(1.0, abs=1e-5) and agreement["nn_at_1"] == 1.0
    for name in ("cka", "relation_kl", "attention_kl_per_head"):
        with Image.open(out / f"{name}.png") as image:
            assert image.size == (round(plots.FIGSIZE[0] * plots.DPI), round(plots.FIGSIZE[1] * plots.DPI))
        assert (out / f"{name}.svg").is_file()


def test_heads_that_do_not_divide_a_width_are_refused(bert_teacher, texts, tmp_path, capsys):
    assert cli.main(["analyze", str(bert_teacher), "--teacher", str(bert_teacher), "--data", str(texts),
                     "--relation-heads", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--relation-heads=5: must divide both widths" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_shows_the_analysis(tmp_path):
    study = make_study(tmp_path)
    analysis = study / "cells" / "hs-6x384" / "run" / "analysis"
    analysis.mkdir()
    cka = [[0.9, 0.5, 0.2], [0.3, 0.8, 0.4], [0.1, 0.6, 0.7]]  # student layers 0..2 x teacher layers 0..2
    (analysis / "analysis.json").write_text(json.dumps({
        "student_layers": 2, "teacher_layers": 2, "tokens": 100, "cka": cka,
        "relation_kl": {"mean": [[0.2, 0.5], [0.4, 0.1]]}, "closest_teacher_layer": {"cka": [1, 2], "relation_kl": [1, 2]},
        "embedding_agreement": {"spearman": 0.8, "nn_at_1": 0.5, "mean_cos": None}}))
    (analysis / "cka.png").write_bytes(b"")
    out = tmp_path / "report"
    assert cli.main(["report", str(study), "--out", str(out), "--no-cards"]) == 0
    text = (out / "report.md").read_text()
    assert "## Analysis: which student layers align with which teacher layers" in text
    section = text[text.index("## Analysis"):]
    line = next(line for line in section.splitlines() if line.startswith("| hs | 6x384"))
    assert "1 (0.80)" in line and "2 (0.70)" in line  # closest teacher layer by CKA, with its CKA
    assert "../study/cells/hs-6x384/run/analysis/cka.png" in text
