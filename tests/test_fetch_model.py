"""Tests of tasks/fetch_model.py against a real MLflow server with two registered versions."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from serving_fixtures import LABELS, MODEL_NAME, free_port, registered_model, run_task, tiny_classifier_dir  # noqa: F401

import fetch_model
from common import TaskError

pytestmark = pytest.mark.integration


def output_parameters(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^\$\{setValue\((\w+)=(.*)\)\}$", stdout, flags=re.MULTILINE))


def test_fetch_model_by_version_cli(registered_model, tmp_path):
    models_dir, workspace = tmp_path / "models", tmp_path / "workspace"
    result = run_task(
        "fetch_model.py", "--remote-server-uri", registered_model["uri"], "--model-name", MODEL_NAME,
        "--model-version", "1", "--models-dir", str(models_dir), "--workspace", str(workspace), "--run-key", "run-7",
    )
    assert result.returncode == 0, result.stderr
    target = models_dir / MODEL_NAME / "1"
    assert output_parameters(result.stdout) == {"model_dir": str(target.resolve()), "fetched_model_version": "1"}

    hf_dir = target / "artifacts" / "hf_model"
    assert (hf_dir / "config.json").is_file()
    assert (hf_dir / "model.safetensors").is_file()
    assert (hf_dir / "tokenizer_config.json").is_file()
    assert "hf_model:\n        path: artifacts/hf_model" in (target / "MLmodel").read_text()

    registry = json.loads((target / "registry.json").read_text())
    assert registry["model_name"] == MODEL_NAME
    assert registry["model_version"] == "1"
    assert registry["aliases"] == []
    assert registry["source"].startswith("models:/m-")
    assert re.fullmatch(r"[0-9a-f]{32}", registry["run_id"])
    assert registry["labels"] == LABELS
    assert registry["fetched_at"]

    handoff = json.loads((workspace / "run-7" / "fetch_model.json").read_text())
    assert handoff["model_dir"] == str(target.resolve())
    assert handoff["model_version"] == "1"
    assert handoff["run_id"] == registry["run_id"]
    assert not [path.name for path in (models_dir / MODEL_NAME).iterdir() if path.name.startswith(".")]


def test_fetch_model_by_alias(registered_model, tmp_path):
    model_dir, resolved = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "champion", tmp_path, retries=0)
    assert model_dir == tmp_path.resolve() / MODEL_NAME / "2"
    assert resolved.model_version == "2"
    assert resolved.aliases == ["champion"]
    assert json.loads((model_dir / "registry.json").read_text())["aliases"] == ["champion"]


def test_fetch_model_latest(registered_model, tmp_path):
    model_dir, resolved = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "latest", tmp_path, retries=0)
    assert resolved.model_version == "2"
    assert model_dir.name == "2"


def test_fetch_model_local_copy_loads_with_pyfunc(registered_model, tmp_path):
    import mlflow.pyfunc
    import pandas as pd

    model_dir, _ = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "1", tmp_path, retries=0)
    predictions = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"text": ["a", "b"]}))
    assert set(predictions["label"]) <= set(LABELS)


def test_fetch_model_skips_identical_copy(registered_model, tmp_path, caplog):
    model_dir, _ = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "1", tmp_path, retries=0)
    weights = model_dir / "artifacts" / "hf_model" / "model.safetensors"
    first_mtime = weights.stat().st_mtime_ns
    time.sleep(0.01)
    with caplog.at_level("INFO", logger="fetch_model"):
        again, _ = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "1", tmp_path, retries=0)
    assert again == model_dir
    assert weights.stat().st_mtime_ns == first_mtime
    assert "skipping the download" in caplog.text


def test_fetch_model_replaces_changed_copy(registered_model, tmp_path, caplog):
    model_dir, _ = fetch_model.fetch(registered_model["uri"], MODEL_NAME, "1", tmp_path, retries=0)
    weights = model_dir / "artifacts" / "hf_model" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(b"truncated")
    with caplog.at_level("INFO", logger="fetch_model"):
        fetch_model.fetch(registered_model["uri"], MODEL_NAME, "1", tmp_path, retries=0)
    assert "changed since it was fetched" in caplog.text
    assert weights.read_bytes() == original


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("9", f"version '9' of model '{MODEL_NAME}' not found; versions that exist: 1, 2; aliases: champion -> 2"),
        ("staging", f"alias 'staging' of model '{MODEL_NAME}' not found; versions that exist: 1, 2; aliases: champion -> 2"),
    ],
)
def test_fetch_model_unknown_version_or_alias(registered_model, tmp_path, version, expected):
    result = run_task(
        "fetch_model.py", "--remote-server-uri", registered_model["uri"], "--model-name", MODEL_NAME,
        "--model-version", version, "--models-dir", str(tmp_path),
    )
    assert result.returncode == 2
    assert expected in result.stderr
    assert not list(tmp_path.iterdir())


def test_fetch_model_unknown_name(registered_model, tmp_path):
    with pytest.raises(fetch_model.ModelNotFoundError, match=r"registered model 'no-such-model' not found") as raised:
        fetch_model.fetch(registered_model["uri"], "no-such-model", "1", tmp_path, retries=0)
    assert MODEL_NAME in str(raised.value).split("registered models: ")[1]


def test_fetch_model_server_down(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_task(
        "fetch_model.py", "--remote-server-uri", uri, "--model-name", MODEL_NAME, "--model-version", "1",
        "--models-dir", str(tmp_path), "--retries", "1", "--retry-wait", "0",
    )
    assert result.returncode == 2
    assert f"the MLflow server at {uri} did not respond after 2 attempts" in result.stderr
    assert "retrying" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("option", "value"),
    [("--model-version", "1; rm -rf /"), ("--model-name", "news$(id)"), ("--remote-server-uri", "ftp://host")],
)
def test_fetch_model_rejects_invalid_parameters(tmp_path, option, value):
    args = {"--remote-server-uri": "http://127.0.0.1:5000", "--model-name": MODEL_NAME, "--model-version": "1"}
    args[option] = value
    flat = [item for pair in args.items() for item in pair]
    result = run_task("fetch_model.py", *flat, "--models-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"argument {option}: invalid value" in result.stderr


def test_fetch_model_help():
    result = run_task("fetch_model.py", "--help")
    assert result.returncode == 0
    for option in ("--remote-server-uri", "--model-name", "--model-version", "--models-dir", "--workspace",
                   "--run-key", "--retries", "--retry-wait"):
        assert option in result.stdout


def test_verify_hf_model_dir_missing_tokenizer(tiny_classifier_dir, tmp_path):
    copy = shutil.copytree(tiny_classifier_dir, tmp_path / "copy")
    (copy / "tokenizer_config.json").unlink()
    with pytest.raises(TaskError, match="no tokenizer"):
        fetch_model.verify_hf_model_dir(copy)


def test_verify_hf_model_dir_returns_labels(tiny_classifier_dir):
    assert fetch_model.verify_hf_model_dir(tiny_classifier_dir) == dict(enumerate(LABELS))


def test_find_hf_model_dir_rejects_other_folder(tmp_path):
    with pytest.raises(TaskError, match="neither a fetched model dir"):
        fetch_model.find_hf_model_dir(tmp_path)
