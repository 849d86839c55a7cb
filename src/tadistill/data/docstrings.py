"""An English corpus that exists offline wherever Python runs: the docstrings of the installed
standard library and packages.

Source files are parsed with `ast`, never imported (importing is slow and runs module code).
Every docstring of a module, class or function is one document, cleaned to its prose
paragraphs and written on one line of its own, so no reader can split or merge documents.

Train and held-out parts are split by source file: a seeded hash of the file's path decides
the side of all its docstrings, so a held-out document never shares a file (and the
near-duplicate docstrings of overloads and subclasses) with the training text. Files are
read in a seeded hash order too, so a size cap keeps a mix of packages rather than the
alphabetically first ones. Same seed and same Python install: same files, byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sysconfig
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Tests are thousands of near-identical one-liners ("Test that ..."); caches hold no source.
_SKIP_DIRS = {"__pycache__", "test", "tests"}
# Larger .py files are generated tables (unicode data, protobufs): no prose, slow to parse.
_MAX_SOURCE_BYTES = 1_000_000
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODY_NODES = (ast.stmt, ast.excepthandler, ast.match_case)


@dataclass(frozen=True)
class DocstringCorpus:
    """Where `build_docstring_corpus` wrote the train and held-out text, and how much of it."""

    train_path: Path
    heldout_path: Path
    train_docs: int
    train_bytes: int
    heldout_docs: int
    heldout_bytes: int
    files_read: int


def default_roots() -> list[Path]:
    """The standard library and site-packages directories of the running Python."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths[k]).resolve() for k in ("stdlib", "purelib", "platlib") if Path(paths[k]).is_dir()})


def python_files(roots: list[Path]) -> list[tuple[str, Path]]:
    """(key, path) of every .py file under `roots`, sorted; the key is the path relative to its root.

    The most specific root is walked first, so a file under nested roots (site-packages
    inside the stdlib directory of a system Python) is keyed once, by its package path.
    """
    found: dict[Path, str] = {}
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
            for name in filenames:
                if name.endswith(".py"):
                    path = Path(dirpath, name)
                    found.setdefault(path, path.relative_to(root).as_posix())
    return sorted((key, path) for path, key in found.items())


def docstrings(source: bytes) -> list[str]:
    """The docstrings of a module's source, dedented, in source order; [] if it does not parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old code
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):  # Python 2 files, null bytes, deep nesting
        return []
    docs = (ast.get_docstring(node, clean=True) for node in _statements(tree) if isinstance(node, _DOC_NODES))
    return [doc for doc in docs if doc]


def _statements(tree: ast.Module) -> Iterator[ast.AST]:
    """The statements of a module in `ast.walk`'s breadth-first order, without entering expressions.

    Classes and functions are statements, and statements only sit in the bodies of other
    statements (and of `except` and `case` clauses), so this finds every node `ast.walk`
    would, in the same order, while visiting about a tenth of the nodes.
    """
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        yield node
        queue.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, _BODY_NODES))


def clean(docstring: str, min_chars: int = 80) -> str | None:
    """The prose of a docstring on one line, or None when too little prose is left.

    Paragraphs with doctest prompts or few letters (code, tables, signatures) are dropped,
    and so are reST underlines; whitespace, newlines included, collapses to single spaces.
    """
    kept = []
    for paragraph in docstring.split("\n\n"):
        lines = [line for line in paragraph.splitlines() if not _is_underline(line)]
        if any(line.lstrip().startswith(">>>") for line in lines):
            continue
        text = " ".join(" ".join(lines).split())
        letters = sum(c.isalpha() or c == " " for c in text)
        if text and letters >= 0.8 * len(text):
            kept.append(text)
    document = " ".join(kept)
    return document if len(document) >= min_chars else None


def _is_underline(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and set(stripped) <= set("-=~^*#+")


def build_docstring_corpus(
    out_dir: str | Path,
    seed: int = 0,
    roots: list[Path] | None = None,
    max_train_bytes: int = 4_000_000,
    max_heldout_docs: int = 1000,
    heldout_fraction: float = 0.1,
    min_chars: int = 80,
) -> DocstringCorpus:
    """Write `train.txt` and `heldout.txt` (one document per line) under `out_dir`.

    Reading stops once the train text would pass `max_train_bytes` and the held-out part
    holds `max_heldout_docs` documents. Exact duplicates are kept once, where first seen.
    """
    files = sorted(python_files(roots or default_roots()), key=lambda item: _unit_hash("order", seed, item[0]))
    seen: set[str] = set()
    train: list[str] = []
    heldout: list[str] = []
    train_bytes = files_read = 0
    train_full = False
    for key, path in files:
        is_heldout = _unit_hash("split", seed, _package_path(key)) < heldout_fraction
        heldout_full = len(heldout) >= max_heldout_docs
        if train_full and heldout_full:
            break
        if heldout_full if is_heldout else train_full:
            continue
        files_read += 1
        for doc in _documents(path, min_chars):
            if doc in seen:
                continue
            seen.add(doc)
            if is_heldout:
                heldout.append(doc)
                if len(heldout) >= max_heldout_docs:
                    break
            elif train_bytes + _line_bytes(doc) <= max_train_bytes:
                train.append(doc)
                train_bytes += _line_bytes(doc)
            else:
                train_full = True
                break
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path, heldout_path = out / "train.txt", out / "heldout.txt"
    train_path.write_text("".join(f"{doc}\n" for doc in train), encoding="utf-8")
    heldout_path.write_text("".join(f"{doc}\n" for doc in heldout), encoding="utf-8")
    return DocstringCorpus(
        train_path=train_path,
        heldout_path=heldout_path,
        train_docs=len(train),
        train_bytes=train_bytes,
        heldout_docs=len(heldout),
        heldout_bytes=sum(_line_bytes(doc) for doc in heldout),
        files_read=files_read,
    )


def _unit_hash(*parts) -> float:
    """A number in [0, 1) that depends only on `parts` (unlike `hash`, stable across runs)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _package_path(key: str) -> str:
    """A vendored copy (pip/_vendor/rich/x.py) is split like the package it copies (rich/x.py)."""
    return key.rsplit("_vendor/", 1)[-1]


def _documents(path: Path, min_chars: int) -> list[str]:
    """The cleaned docstrings of one source file; [] for unreadable and oversized files."""
    try:
        if path.stat().st_size > _MAX_SOURCE_BYTES:
            return []
        source = path.read_bytes()
    except OSError:
        return []
    return [doc for doc in (clean(d, min_chars) for d in docstrings(source)) if doc]


def _line_bytes(doc: str) -> int:
    return len(doc.encode("utf-8")) + 1
