"""`tadistill validate`: a broken config gets every problem in one message, exit code 2."""

from __future__ import annotations

from pathlib import Path

from tadistill.cli import main

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny" / "minilmv2.yaml"


def test_valid_config_passes(tiny_teacher_factory, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    code = main(["validate", str(TINY), "--set", f"teacher.path={tiny_teacher_factory('bert', layers=4)}",
                 "--set", f"data.sources.0.path={corpus}"])
    assert code == 0
    assert "OK" in capsys.readouterr().out


def test_every_problem_is_listed_at_once(tiny_teacher_factory, tmp_path, capsys):
    teacher = tiny_teacher_factory("bert", layers=4)  # 4 layers x 64 wide, 4 heads
    code = main([
        "validate", str(TINY),
        "--set", f"teacher.path={teacher}",
        "--set", f"data.sources.0.path={tmp_path / 'missing.txt'}",
        "--set", "student.hidden=50",             # not divisible by 4 heads
        "--set", "student.init=teacher-layer",    # typo
        "--set", "objectives.0.relation_head=4",  # typo in an option
        "--set", "train.mixed_precision=bf61",
        "--set", "train.max_steps=0",
        "--set", "data.max_seq_length=4096",      # beyond the teacher's positions
    ])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n  - ") >= 7, err
    for key, hint in [
        ("data.sources.0.path", "missing.txt"),
        ("student.heads", "must divide"),
        ("student.init", "Did you mean 'teacher-layers'"),
        ("objectives.0.relation_head", "relation_heads"),
        ("train.mixed_precision", "bf16"),
        ("train.max_steps", ">= 1"),
        ("data.max_seq_length", "positions"),
    ]:
        line = next((line for line in err.splitlines() if line.strip().startswith(f"- {key}=")), None)
        assert line is not None and hint in line, (key, err)


def test_a_structural_problem_hides_no_other(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        "tacher: {path: x}\n"  # an unknown top-level key
        f"teacher: {tmp_path / 'no-teacher'}\n"  # a teacher that does not exist
        "student: {layers: 3, hidden: 100, heads: 12}\n"  # 12 heads do not divide 100
        f"data: {{sources: [{{path: {tmp_path / 'corpus.txt'}}}]}}\n"
        "objectives: [{name: hs}]\ntrain: {max_steps: 10}\n"
    )
    (tmp_path / "corpus.txt").write_text("some text\n")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    problems = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert len(problems) == 3, err
    assert problems[0].startswith("- tacher=") and "Did you mean 'teacher'" in problems[0]
    assert problems[1].startswith("- teacher.path=") and "does not exist" in problems[1]
    assert problems[2].startswith("- student.heads=12") and "must divide student.hidden=100" in problems[2]


def test_unreachable_teacher_is_one_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    code = main(["validate", str(TINY), "--set", f"teacher.path={tmp_path / 'no' / 'teacher'}",
                 "--set", f"data.sources.0.path={corpus}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "teacher.path" in err and "does not exist" in err and "Traceback" not in err


def test_help_lists_the_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    from tadistill.cli import COMMANDS

    for command in COMMANDS:
        assert command in out
