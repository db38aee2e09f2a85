"""Shared helpers for the task scripts: parameter validation, run folders, atomic writes.

Every task script imports this module from its own folder, so `python tasks/<name>.py` works by hand
and the same files work when DolphinScheduler delivers them to a worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Characters that never appear in a plausible id, path or URI, but do appear in code-injection payloads
# and shell metacharacter tricks. A value containing any of them is rejected before it is used.
_FORBIDDEN_CHARS = set("\"'`$;|&<>\\\r\n\t\0{}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_COLUMN = re.compile(r"^[\w .-]{1,64}$")
_URI_SCHEMES = {"http", "https", "file", "sqlite", "postgresql", "mysql", "databricks"}


class TaskError(Exception):
    """A failure the user can fix: bad input, missing file, unreachable server.

    The message is logged without a traceback and the script exits with status 2.
    """


def parameter_error(parameter: str, value: object, allowed: str) -> TaskError:
    return TaskError(f"invalid value for {parameter}: {value!r}; expected {allowed}")


def _check_characters(parameter: str, value: str, allowed: str) -> None:
    if not value or not value.strip():
        raise parameter_error(parameter, value, allowed + " (got an empty value)")
    bad = sorted({c for c in value if c in _FORBIDDEN_CHARS or not c.isprintable()})
    if bad:
        raise parameter_error(parameter, value, f"{allowed}, without the characters {''.join(bad)!r}")
    if ".." in Path(value).parts:
        raise parameter_error(parameter, value, f"{allowed}, without '..' path components")


def validate_name(parameter: str, value: str) -> str:
    """Validate an MLflow model name or experiment name: letters, digits, '.', '_', '-'."""
    if not _NAME.match(value or ""):
        raise parameter_error(parameter, value, "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


def validate_run_key(parameter: str, value: str) -> str:
    if not _RUN_KEY.match(value or ""):
        raise parameter_error(parameter, value, "1-64 letters, digits, '.', '_' or '-' (a workflow instance id works)")
    return value


def validate_column(parameter: str, value: str) -> str:
    if not _COLUMN.match(value or ""):
        raise parameter_error(parameter, value, "a column name of 1-64 letters, digits, spaces, '.', '_' or '-'")
    return value


def validate_path(parameter: str, value: str) -> str:
    """Validate a local file or folder path. Existence is checked by the step that reads it."""
    _check_characters(parameter, value, "a file or folder path")
    return value


def validate_source(parameter: str, value: str) -> str:
    """Validate a dataset or model reference: a local path or a Hugging Face Hub id (`owner/name`)."""
    _check_characters(parameter, value, "a local path, a Hugging Face Hub id such as 'bert-base-cased', or package:NAME")
    if os.path.exists(value) or value.startswith(("/", "./", "~")):
        return value
    if re.fullmatch(r"package:[A-Za-z0-9][A-Za-z0-9._/-]{0,127}", value):
        return value
    if not _HUB_ID.match(value):
        raise parameter_error(
            parameter, value, "an existing local path or a Hub id such as 'yelp_review_full' or 'owner/name'"
        )
    return value


def validate_uri(parameter: str, value: str) -> str:
    """Validate an MLflow tracking URI or a service base URL."""
    _check_characters(parameter, value, "a URI such as http://127.0.0.1:5000")
    if " " in value:
        raise parameter_error(parameter, value, "a URI without spaces")
    parsed = urlparse(value)
    if parsed.scheme not in _URI_SCHEMES:
        raise parameter_error(parameter, value, f"a URI with one of the schemes {sorted(_URI_SCHEMES)}")
    if parsed.scheme in {"http", "https"} and not parsed.hostname:
        raise parameter_error(parameter, value, "an http(s) URI with a host, such as http://127.0.0.1:5000")
    try:
        parsed.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise parameter_error(parameter, value, "a URI with a port between 1 and 65535") from None
    return value


def validate_model_version(parameter: str, value: str) -> str:
    """Validate a registered model version: a positive number, an alias, or 'latest'."""
    if re.fullmatch(r"[1-9][0-9]{0,8}", value or "") or _ALIAS.match(value or ""):
        return value
    raise parameter_error(parameter, value, "a version number such as 3, an alias such as 'production', or 'latest'")


def validate_int(parameter: str, value: str | int, minimum: int, maximum: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise parameter_error(parameter, value, f"an integer between {minimum} and {maximum}") from None
    if not minimum <= number <= maximum:
        raise parameter_error(parameter, value, f"an integer between {minimum} and {maximum}")
    return number


def validate_float(parameter: str, value: str | float, minimum: float, maximum: float) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        raise parameter_error(parameter, value, f"a number between {minimum} and {maximum}") from None
    if number != number or not minimum <= number <= maximum:  # number != number catches NaN
        raise parameter_error(parameter, value, f"a number between {minimum} and {maximum}")
    return number


def arg_type(validator: Callable[..., Any], option: str, *bounds: Any) -> Callable[[str], Any]:
    """Wrap a validator as an argparse `type=` so `--help` and errors name the option."""

    def convert(value: str) -> Any:
        try:
            return validator(option, value, *bounds)
        except TaskError as error:
            # argparse already names the option, so drop the "invalid value for OPTION:" prefix.
            raise argparse.ArgumentTypeError(str(error).replace(f"invalid value for {option}: ", "invalid value ")) from None

    convert.__name__ = option.lstrip("-").replace("-", "_")
    return convert


def setup_logging(name: str) -> logging.Logger:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format=LOG_FORMAT, stream=sys.stderr)
    if not sys.stderr.isatty():
        # Progress bars redraw with carriage returns, which turn into one long line in a DS task log.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    # Library chatter (HTTP requests, file locks) would drown the progress lines DS shows in the task log.
    for noisy in ("urllib3", "filelock", "httpx", "fsspec", "datasets", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(name)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a task's main() and turn failures into a logged message and a nonzero exit status."""
    logger = logging.getLogger("task")
    try:
        status = main(argv)
    except TaskError as error:
        logger.error("%s", error)
        sys.exit(2)
    except KeyboardInterrupt:
        logger.error("interrupted")
        sys.exit(130)
    sys.exit(status or 0)


def make_run_key() -> str:
    """Make a run key for a hand run; DS runs pass the workflow instance id instead."""
    return time.strftime("manual-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run_folder(workspace: str | Path, run_key: str) -> Path:
    """Return the run's folder; the writers create it, so a run that fails early leaves nothing behind."""
    return Path(workspace).expanduser().resolve() / run_key


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: Path, produced_by: str) -> Any:
    """Read a JSON file another task wrote; a missing file means that task has not run for this run key."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"{path} not found: run {produced_by} for this workspace and run key first") from None
    except json.JSONDecodeError as error:
        raise TaskError(f"{path} is not valid JSON ({error}); rerun {produced_by}") from None


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    A failure or a kill before the end leaves `final` as it was, so later tasks never see half a result.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def set_output(key: str, value: object) -> None:
    """Print a DolphinScheduler output parameter line; DS passes it to downstream tasks."""
    text = str(value)
    if "\n" in text or ")" in text:
        raise TaskError(f"output parameter {key} has a value DS cannot carry: {text!r}")
    # Built from pieces so that the script text itself contains no placeholder for DS to replace.
    print("$" + "{setValue(" + f"{key}={text})" + "}", flush=True)
