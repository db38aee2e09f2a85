"""Deploy step 1: download a registered model version from MLflow into a local models folder.

Reads the version (a number, an alias or `latest`) from the MLflow model registry and writes
`<models dir>/<model name>/<version number>/` with the logged model, its Hugging Face folder under
`artifacts/hf_model/` and a `registry.json` describing where it came from.
By hand: python tasks/fetch_model.py --remote-server-uri http://127.0.0.1:5000 --model-name news --model-version 1 --models-dir models
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from common import (
    TaskError,
    arg_type,
    atomic_directory,
    atomic_write_json,
    run_folder,
    run_main,
    set_output,
    setup_logging,
    validate_int,
    validate_model_version,
    validate_name,
    validate_path,
    validate_run_key,
    validate_uri,
)

logger = logging.getLogger("fetch_model")

HF_MODEL_SUBDIR = Path("artifacts") / "hf_model"
REGISTRY_FILE = "registry.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# A tokenizer needs its config plus one vocabulary file; which one depends on the tokenizer family.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")

T = TypeVar("T")

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
TRANSIENT_ERROR_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


class ModelNotFoundError(TaskError):
    """The registry has no such model name, version or alias."""


class RegistryUnreachableError(TaskError):
    """The MLflow server did not respond, even after the retries."""


@dataclass
class ResolvedVersion:
    """A registered model version as the registry describes it."""

    model_name: str
    model_version: str
    run_id: str | None
    source: str
    aliases: list[str]


# ---------------------------------------------------------------------------------------------------------
# Checking a local model folder. The prediction service uses these too, for fetched and plain HF folders.


def find_hf_model_dir(model_dir: Path) -> Path:
    """Return the Hugging Face folder inside a fetched model dir, or the dir itself when it is a plain HF folder."""
    if (model_dir / HF_MODEL_SUBDIR).is_dir():
        return model_dir / HF_MODEL_SUBDIR
    if (model_dir / "config.json").is_file():
        return model_dir
    raise TaskError(
        f"{model_dir} is neither a fetched model dir (with {HF_MODEL_SUBDIR}/) nor a Hugging Face model dir "
        "(with config.json); pass the folder fetch_model wrote or a folder saved by save_pretrained"
    )


def verify_hf_model_dir(hf_dir: Path) -> dict[int, str]:
    """Check that a Hugging Face folder has labels, weights and a tokenizer; return its id2label."""
    config_path = hf_dir / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"{config_path} not found: the model folder has no config.json") from None
    except json.JSONDecodeError as error:
        raise TaskError(f"{config_path} is not valid JSON: {error}") from None

    raw_labels = config.get("id2label")
    if not isinstance(raw_labels, dict) or not raw_labels:
        raise TaskError(
            f"{config_path} has no id2label: the model carries no label names; "
            "train it with id2label and label2id set so predictions can be named"
        )
    try:
        id2label = {int(index): str(label) for index, label in raw_labels.items()}
    except ValueError:
        raise TaskError(f"{config_path} has an id2label with keys that are not integers: {raw_labels!r}") from None
    if sorted(id2label) != list(range(len(id2label))):
        raise TaskError(f"{config_path} has an id2label whose keys are not 0..{len(id2label) - 1}: {sorted(id2label)}")

    if not any((hf_dir / name).is_file() for name in WEIGHT_FILES):
        raise TaskError(f"{hf_dir} has no model weights: expected one of {', '.join(WEIGHT_FILES)}")
    if not (hf_dir / "tokenizer_config.json").is_file():
        raise TaskError(f"{hf_dir} has no tokenizer: tokenizer_config.json is missing")
    if not any((hf_dir / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        raise TaskError(f"{hf_dir} has no tokenizer vocabulary: expected one of {', '.join(TOKENIZER_VOCAB_FILES)}")
    return id2label


def read_registry_json(model_dir: Path) -> dict[str, Any] | None:
    """Return the registry.json that fetch_model wrote in a model dir, or None for a plain folder."""
    path = model_dir / REGISTRY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaskError(f"{path} is not valid JSON ({error}); delete {model_dir} and fetch the model again") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path} does not contain a JSON object; delete {model_dir} and fetch the model again")
    return data


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Map each file below `folder` (relative POSIX path) to its size and SHA-256."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == REGISTRY_FILE:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        manifest[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return manifest


# ---------------------------------------------------------------------------------------------------------
# Talking to the registry.


@contextlib.contextmanager
def mlflow_target(tracking_uri: str) -> Iterator[None]:
    """Point MLflow at one server with fail-fast HTTP calls, and restore the previous settings afterwards.

    The MLflow client otherwise retries a refused connection 7 times with exponential backoff, which keeps
    a DS task hanging for minutes, so fetch_model does its own bounded retries instead. HTTP settings the
    user has put in the environment are kept. download_artifacts resolves models:/m-<id> through the
    process-wide tracking URI, whatever URI it is given (MLflow 3.17), so that URI is set here too.
    """
    import mlflow

    saved_env = {name: os.environ.get(name) for name in (*HTTP_DEFAULTS, "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    previous_tracking = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_registry = mlflow.get_registry_uri() if previous_tracking else None
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def call_with_retries(action: Callable[[], T], description: str, uri: str, retries: int, retry_wait: float) -> T:
    """Run `action`, retrying a failed connection to MLflow up to `retries` times.

    Only transient errors are retried: the MLflow client reports a refused or timed-out connection as an
    MlflowException with the code INTERNAL_ERROR, while a server error such as "not found" has its own code.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(retries + 1):
        try:
            return action()
        except MlflowException as error:
            if error.error_code not in TRANSIENT_ERROR_CODES:
                raise TaskError(f"failed to {description} at {uri}: {error}") from None
            last_error: Exception = error
        except OSError as error:
            last_error = error
        if attempt == retries:
            raise RegistryUnreachableError(
                f"failed to {description}: the MLflow server at {uri} did not respond after {retries + 1} attempts "
                f"({last_error}); check --remote-server-uri and that the server is running"
            )
        logger.warning("failed to %s at %s (attempt %d of %d): %s; retrying in %.1f s",
                       description, uri, attempt + 1, retries + 1, last_error, retry_wait)
        time.sleep(retry_wait)
    raise AssertionError("unreachable")


def describe_versions(client: Any, model_name: str) -> str:
    """List the versions and aliases that exist for a registered model, for error messages."""
    versions = sorted((int(version.version) for version in client.search_model_versions(f"name='{model_name}'")))
    aliases = client.get_registered_model(model_name).aliases or {}
    alias_text = ", ".join(f"{alias} -> {version}" for alias, version in sorted(aliases.items())) or "none"
    version_text = ", ".join(str(version) for version in versions) or "none"
    return f"versions that exist: {version_text}; aliases: {alias_text}"


def resolve_version(client: Any, model_name: str, model_version: str) -> ResolvedVersion:
    """Find the registered version that a number, an alias or `latest` points to.

    Raises TaskError listing what exists when the name, version or alias is unknown.
    """
    from mlflow.exceptions import RestException

    # model_name passed validate_name, so it contains no quote that could break this filter.
    try:
        registered = client.get_registered_model(model_name)
    except RestException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            names = sorted(model.name for model in client.search_registered_models(max_results=100))
            raise ModelNotFoundError(
                f"registered model {model_name!r} not found; registered models: {', '.join(names) or 'none'}"
            ) from None
        raise

    try:
        if re.fullmatch(r"[0-9]+", model_version):
            version = client.get_model_version(model_name, model_version)
        elif model_version == "latest":
            versions = client.search_model_versions(f"name='{model_name}'")
            if not versions:
                raise ModelNotFoundError(f"registered model {model_name!r} has no versions yet; run the train workflow first")
            version = max(versions, key=lambda item: int(item.version))
        else:
            version = client.get_model_version_by_alias(model_name, model_version)
    except RestException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            kind = "version" if model_version.isdigit() else "alias"
            raise ModelNotFoundError(
                f"{kind} {model_version!r} of model {model_name!r} not found; {describe_versions(client, model_name)}"
            ) from None
        raise

    if version.status != "READY":
        raise TaskError(f"version {version.version} of model {model_name!r} is {version.status}, not READY")
    aliases = sorted(alias for alias, number in (registered.aliases or {}).items() if str(number) == str(version.version))
    return ResolvedVersion(
        model_name=model_name,
        model_version=str(version.version),
        run_id=version.run_id,
        source=version.source,
        aliases=aliases,
    )


# ---------------------------------------------------------------------------------------------------------
# Downloading and placing the files.


def normalize_hf_location(download_dir: Path) -> None:
    """Move the logged `hf_model` artifact to artifacts/hf_model/ and point the MLmodel file at it.

    MLflow stores a pyfunc artifact under the base name of the folder it was logged from, so the same
    artifact key lands at artifacts/<whatever the folder was called>/. One fixed place keeps the service
    and later steps simple; the MLmodel edit keeps `mlflow.pyfunc.load_model` working on the local copy.
    """
    import yaml

    mlmodel_path = download_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise TaskError(f"the downloaded model has no MLmodel file; is {download_dir.name} an MLflow model?")
    mlmodel = yaml.safe_load(mlmodel_path.read_text(encoding="utf-8"))
    artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts") or {}
    entry = artifacts.get("hf_model")
    if not isinstance(entry, dict) or not entry.get("path"):
        raise TaskError(
            "the registered model has no 'hf_model' artifact; log it with tasks/text_classifier_model.py and "
            "artifacts={'hf_model': <Hugging Face model folder>}"
        )
    logged_path = Path(entry["path"])
    if logged_path == HF_MODEL_SUBDIR:
        return
    if not (download_dir / logged_path).is_dir():
        raise TaskError(f"the MLmodel file names the hf_model artifact {logged_path}, but that folder was not downloaded")
    (download_dir / HF_MODEL_SUBDIR).parent.mkdir(parents=True, exist_ok=True)
    os.replace(download_dir / logged_path, download_dir / HF_MODEL_SUBDIR)
    entry["path"] = HF_MODEL_SUBDIR.as_posix()
    mlmodel_path.write_text(yaml.safe_dump(mlmodel, sort_keys=False), encoding="utf-8")


def existing_copy_matches(target: Path, resolved: ResolvedVersion) -> bool:
    """Return True when `target` already contains a verified copy of the same registered version."""
    try:
        registry = read_registry_json(target)
    except TaskError as error:
        logger.warning("ignoring the existing copy at %s: %s", target, error)
        return False
    if registry is None:
        return False
    same_version = (
        registry.get("model_name") == resolved.model_name
        and str(registry.get("model_version")) == resolved.model_version
        and registry.get("source") == resolved.source
        and registry.get("run_id") == resolved.run_id
    )
    if not same_version:
        logger.info("the existing copy at %s is of another registered version; downloading again", target)
        return False
    try:
        verify_hf_model_dir(target / HF_MODEL_SUBDIR)
    except TaskError as error:
        logger.warning("the existing copy at %s is incomplete (%s); downloading again", target, error)
        return False
    if registry.get("files") != file_manifest(target):
        logger.warning("files in the existing copy at %s changed since it was fetched; downloading again", target)
        return False
    return True


def download_version(resolved: ResolvedVersion, target: Path, tracking_uri: str, retries: int, retry_wait: float) -> None:
    """Download the logged model into a temporary folder beside `target`, verify it, then rename it into place."""
    import mlflow.artifacts

    # In MLflow 3 a version's source is the logged model (models:/m-<id>), stored apart from the run's
    # artifacts; downloading that URI gets MLmodel, the code file and the hf_model artifact.
    artifact_uri = resolved.source
    with atomic_directory(target) as tmp:

        def download() -> str:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            return mlflow.artifacts.download_artifacts(
                artifact_uri=artifact_uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri
            )

        started = time.monotonic()
        call_with_retries(download, f"download {artifact_uri}", tracking_uri, retries, retry_wait)
        normalize_hf_location(tmp)
        id2label = verify_hf_model_dir(tmp / HF_MODEL_SUBDIR)
        manifest = file_manifest(tmp)
        size = sum(item["size"] for item in manifest.values())
        logger.info("downloaded %s: %d files, %.1f MB in %.1f s, labels %s",
                    artifact_uri, len(manifest), size / 1e6, time.monotonic() - started, list(id2label.values()))
        registry = {
            "model_name": resolved.model_name,
            "model_version": resolved.model_version,
            "run_id": resolved.run_id,
            "aliases": resolved.aliases,
            "source": resolved.source,
            "tracking_uri": tracking_uri,
            "labels": [id2label[index] for index in sorted(id2label)],
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": manifest,
        }
        atomic_write_json(tmp / REGISTRY_FILE, registry)


def fetch(
    tracking_uri: str,
    model_name: str,
    model_version: str,
    models_dir: str | Path,
    retries: int = 3,
    retry_wait: float = 2.0,
) -> tuple[Path, ResolvedVersion]:
    """Resolve a registered version and make sure a verified copy is at <models dir>/<name>/<version number>/.

    Returns the local folder and the resolved version. The prediction service calls this for updates by
    model name and version, so both paths share one implementation.
    """
    validate_uri("remote_server_uri", tracking_uri)
    validate_name("model_name", model_name)
    validate_model_version("model_version", model_version)
    with mlflow_target(tracking_uri):
        return fetch_version(tracking_uri, model_name, model_version, Path(models_dir), retries, retry_wait)


def fetch_version(
    tracking_uri: str, model_name: str, model_version: str, models_dir: Path, retries: int, retry_wait: float
) -> tuple[Path, ResolvedVersion]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    resolved = call_with_retries(
        lambda: resolve_version(client, model_name, model_version),
        f"look up version {model_version!r} of model {model_name!r}",
        tracking_uri,
        retries,
        retry_wait,
    )
    logger.info("model %s version %s resolves to version %s (run %s, source %s, aliases %s)",
                model_name, model_version, resolved.model_version, resolved.run_id, resolved.source, resolved.aliases or "none")

    target = models_dir.expanduser().resolve() / model_name / resolved.model_version
    if existing_copy_matches(target, resolved):
        logger.info("a verified copy of %s version %s is already at %s; skipping the download",
                    model_name, resolved.model_version, target)
        registry = read_registry_json(target) or {}
        if registry.get("aliases") != resolved.aliases:
            registry["aliases"] = resolved.aliases
            atomic_write_json(target / REGISTRY_FILE, registry)
        return target, resolved

    download_version(resolved, target, tracking_uri, retries, retry_wait)
    logger.info("model %s version %s is ready at %s", model_name, resolved.model_version, target)
    return target, resolved


# ---------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remote-server-uri", required=True, type=arg_type(validate_uri, "--remote-server-uri"),
                        help="MLflow tracking server URI, such as http://127.0.0.1:5000")
    parser.add_argument("--model-name", required=True, type=arg_type(validate_name, "--model-name"),
                        help="registered model name in MLflow")
    parser.add_argument("--model-version", required=True, type=arg_type(validate_model_version, "--model-version"),
                        help="version number (3), alias (production, champion) or 'latest' (the highest version number)")
    parser.add_argument("--models-dir", required=True, type=arg_type(validate_path, "--models-dir"),
                        help="folder that receives <model name>/<version number>/; the prediction service must be able to read it")
    parser.add_argument("--workspace", type=arg_type(validate_path, "--workspace"),
                        help="workflow workspace; when given, fetch_model.json is written to <workspace>/<run key>/")
    parser.add_argument("--run-key", type=arg_type(validate_run_key, "--run-key"),
                        help="run folder name under the workspace (DS passes the workflow instance id); required with --workspace")
    parser.add_argument("--retries", type=arg_type(validate_int, "--retries", 0, 20), default=3,
                        help="how many times to retry when the MLflow server cannot be reached (default: 3)")
    parser.add_argument("--retry-wait", type=arg_type(validate_int, "--retry-wait", 0, 300), default=2,
                        help="seconds to wait between retries (default: 2)")
    args = parser.parse_args(argv)
    if args.workspace and not args.run_key:
        parser.error("--run-key is required with --workspace")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging("fetch_model")
    args = parse_args(argv)

    model_dir, resolved = fetch(
        args.remote_server_uri, args.model_name, args.model_version, args.models_dir, args.retries, args.retry_wait
    )

    if args.workspace:
        result = {
            "model_dir": str(model_dir),
            "model_name": resolved.model_name,
            "model_version": resolved.model_version,
            "requested_version": args.model_version,
            "run_id": resolved.run_id,
            "aliases": resolved.aliases,
            "source": resolved.source,
        }
        atomic_write_json(run_folder(args.workspace, args.run_key) / "fetch_model.json", result)

    set_output("model_dir", model_dir)
    # Not named model_version: in DS a start parameter of that name would outrank this output downstream.
    set_output("fetched_model_version", resolved.model_version)
    return 0


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
