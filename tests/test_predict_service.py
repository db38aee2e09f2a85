"""In-process tests of the prediction service's endpoints, limits and model updates, on tiny models."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving_fixtures import LABELS, OTHER_LABELS, make_fetched_dir, make_tiny_model, tiny_classifier_dir  # noqa: F401

import predict_service

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_client(**overrides) -> TestClient:
    settings = {
        "admin_token": TOKEN,
        "max_texts": 8,
        "max_text_chars": 3000,
        "batch_wait_ms": 2,
        "batch_size": 8,
        "torch_threads": 1,
        **overrides,
    }
    return TestClient(predict_service.create_app(predict_service.Settings(**settings)))


def wait_until_ready(client: TestClient, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"service not ready after {timeout} s: {client.get('/ready').json()}")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> dict[str, Path]:
    """Fetched-style dirs for versions 1 and 2, a dir with other labels, and broken dirs."""
    root = tmp_path_factory.mktemp("models")
    dirs = {
        "v1": make_fetched_dir(root / "news" / "1", tiny_classifier_dir, "news", "1"),
        "v2": make_fetched_dir(root / "news" / "2", make_tiny_model(root / "hf-v2", LABELS, seed=2), "news", "2", ["champion"]),
        "plain": make_tiny_model(root / "plain-sentiment", OTHER_LABELS, seed=3),
    }

    no_weights = root / "no-weights"
    no_weights.mkdir()
    for path in tiny_classifier_dir.iterdir():
        if not path.name.startswith("model."):
            (no_weights / path.name).write_bytes(path.read_bytes())
    dirs["no_weights"] = no_weights

    no_labels = make_tiny_model(root / "no-labels", LABELS, seed=4)
    config = json.loads((no_labels / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (no_labels / "config.json").write_text(json.dumps(config))
    dirs["no_labels"] = no_labels

    # A base encoder saved with labels in its config but no classification head.
    from transformers import AutoTokenizer, BertModel

    base = root / "no-head"
    head_model = make_tiny_model(root / "with-head", LABELS, seed=5)
    BertModel.from_pretrained(head_model).save_pretrained(base)
    AutoTokenizer.from_pretrained(head_model).save_pretrained(base)
    config = json.loads((base / "config.json").read_text())
    config["id2label"] = {str(index): label for index, label in enumerate(LABELS)}
    (base / "config.json").write_text(json.dumps(config))
    dirs["no_head"] = base
    return dirs


@pytest.fixture(scope="module")
def client(model_dirs: dict[str, Path]):
    with make_client(model_dir=str(model_dirs["v1"])) as test_client:
        wait_until_ready(test_client)
        yield test_client


@pytest.fixture()
def v1_client(client: TestClient, model_dirs: dict[str, Path]) -> TestClient:
    """The shared client, put back on version 1 if an earlier test swapped models."""
    if client.get("/model").json()["model_version"] != "1":
        assert client.post("/update_model", json={"model_dir": str(model_dirs["v1"])}, headers=AUTH).status_code == 200
    return client


# ---------------------------------------------------------------------------------------------------------
# Health, readiness and model info


def test_health_and_ready_without_model():
    with make_client() as empty:
        assert empty.get("/health").status_code == 200
        ready = empty.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready"
        assert empty.get("/model").status_code == 503
        answer = empty.post("/predict", json={"texts": ["hello"]})
        assert answer.status_code == 503
        assert "no model" in answer.json()["detail"]


def test_ready_with_model(v1_client: TestClient):
    ready = v1_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["model_name"] == "news"
    assert ready.json()["model_version"] == "1"


def test_startup_with_broken_model_dir_reports_reason(model_dirs):
    with make_client(model_dir=str(model_dirs["no_weights"])) as broken:
        deadline = time.monotonic() + 10
        while broken.get("/ready").json().get("reason") in (None, "no model is loaded") and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = broken.get("/ready")
        assert broken.get("/health").status_code == 200
        assert ready.status_code == 503
        assert "no model weights" in ready.json()["reason"]


def test_model_info(v1_client: TestClient, model_dirs):
    info = v1_client.get("/model").json()
    assert info["model_name"] == "news"
    assert info["model_version"] == "1"
    assert info["run_id"] == "run-news-1"
    assert info["labels"] == LABELS
    assert info["max_length"] == 64
    assert info["model_dir"] == str(model_dirs["v1"].resolve())
    assert info["loaded_at"].endswith("+00:00")


# ---------------------------------------------------------------------------------------------------------
# Predictions


def test_predict_batch(v1_client: TestClient):
    answer = v1_client.post("/predict", json={"texts": ["stocks fell", "the match ended 2-1", "a new phone"]})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert len(predictions) == 3
    for prediction in predictions:
        assert prediction["label"] in LABELS
        assert 1 / len(LABELS) <= prediction["score"] <= 1
        assert prediction["model_name"] == "news"
        assert prediction["model_version"] == "1"


def test_predict_get_one_text(v1_client: TestClient):
    answer = v1_client.get("/predict", params={"text": "the match ended 2-1"})
    assert answer.status_code == 200
    [prediction] = answer.json()["predictions"]
    assert prediction["label"] in LABELS
    assert prediction["model_version"] == "1"


def test_predict_same_answer_alone_and_in_batch(v1_client: TestClient):
    alone = v1_client.get("/predict", params={"text": "markets rallied today"}).json()["predictions"][0]
    batch = v1_client.post("/predict", json={"texts": ["x", "markets rallied today and then some more"]})
    in_batch = v1_client.post("/predict", json={"texts": ["markets rallied today", "x"]}).json()["predictions"][0]
    assert batch.status_code == 200
    assert in_batch["label"] == alone["label"]
    assert in_batch["score"] == pytest.approx(alone["score"], abs=1e-5)


def test_predict_long_text_truncated(v1_client: TestClient):
    # About 500 tokens, far over the tiny model's 64 positions, but under the 3000-character limit.
    answer = v1_client.post("/predict", json={"texts": ["word " * 500]})
    assert answer.status_code == 200
    assert answer.json()["predictions"][0]["label"] in LABELS


def test_predict_concurrent_requests_batched(model_dirs):
    with make_client(model_dir=str(model_dirs["v1"]), batch_wait_ms=200, batch_size=64, max_texts=64) as batching:
        wait_until_ready(batching)
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda i: batching.get("/predict", params={"text": f"text {i}"}), range(12)))
        assert [answer.status_code for answer in answers] == [200] * 12
        metrics = batching.get("/metrics").text
    batches = [line for line in metrics.splitlines() if line.startswith("predict_batch_size_count")]
    texts = [line for line in metrics.splitlines() if line.startswith("predict_texts_total")]
    # The self-test at load runs outside the batcher, so the counts cover only these 12 requests.
    assert texts == ["predict_texts_total 12.0"]
    assert float(batches[0].split()[-1]) < 12


# ---------------------------------------------------------------------------------------------------------
# Bad prediction input


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"texts": []}, "at least 1 item"),
        ({"texts": [""]}, "empty"),
        ({"texts": ["ok", "   "]}, "empty"),
        ({"texts": ["ok", 3]}, "valid string"),
        ({"texts": [None]}, "valid string"),
        ({"texts": "not a list"}, "valid list"),
        ({"text": ["wrong field"]}, "Field required"),
    ],
    ids=["empty-list", "empty-string", "blank-string", "number-item", "null-item", "string-not-list", "wrong-field"],
)
def test_predict_rejects_bad_body(v1_client: TestClient, body, expected):
    answer = v1_client.post("/predict", json=body)
    assert answer.status_code == 422
    assert expected in json.dumps(answer.json())


def test_predict_rejects_invalid_json(v1_client: TestClient):
    answer = v1_client.post("/predict", content=b'{"texts": ["unterminated', headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert "JSON decode error" in json.dumps(answer.json())


def test_predict_rejects_oversize_batch(v1_client: TestClient):
    answer = v1_client.post("/predict", json={"texts": ["a"] * 9})
    assert answer.status_code == 413
    assert "the limit is 8" in answer.json()["detail"]
    assert "PREDICT_MAX_TEXTS" in answer.json()["detail"]


def test_predict_rejects_text_over_char_limit(v1_client: TestClient):
    answer = v1_client.post("/predict", json={"texts": ["ok", "a" * 3001]})
    assert answer.status_code == 413
    assert "index 1" in answer.json()["detail"]
    assert "the limit is 3000" in answer.json()["detail"]
    get_answer = v1_client.get("/predict", params={"text": "a" * 3001})
    assert get_answer.status_code == 413


def test_predict_get_rejects_missing_and_empty_text(v1_client: TestClient):
    assert v1_client.get("/predict").status_code == 422
    empty = v1_client.get("/predict", params={"text": "  "})
    assert empty.status_code == 422
    assert "empty" in empty.json()["detail"]


# ---------------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_prometheus_format(v1_client: TestClient):
    v1_client.get("/predict", params={"text": "count me"})
    answer = v1_client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert 'predict_http_requests_total{route="/predict",status="200"}' in text
    assert 'predict_http_request_duration_seconds_bucket{le="0.005",route="/predict"}' in text
    assert "predict_batch_size_bucket" in text
    assert 'predict_model_info{model_name="news",model_version="1"} 1.0' in text
    assert "predict_model_swaps_total" in text
    assert "predict_model_loaded 1.0" in text


# ---------------------------------------------------------------------------------------------------------
# Model updates


def test_update_requires_token(v1_client: TestClient, model_dirs):
    answer = v1_client.post("/update_model", json={"model_dir": str(model_dirs["v2"])})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_update_rejects_wrong_token(v1_client: TestClient, model_dirs):
    answer = v1_client.post("/update_model", json={"model_dir": str(model_dirs["v2"])},
                            headers={"Authorization": "Bearer wrong-token"})
    assert answer.status_code == 403
    assert answer.json()["detail"] == "wrong admin token"
    assert v1_client.get("/model").json()["model_version"] == "1"


def test_update_disabled_without_server_token(model_dirs):
    with make_client(admin_token=None) as no_token:
        answer = no_token.post("/update_model", json={"model_dir": str(model_dirs["v2"])}, headers=AUTH)
        assert answer.status_code == 403
        assert "PREDICT_ADMIN_TOKEN" in answer.json()["detail"]


def test_update_swaps_to_fetched_dir(v1_client: TestClient, model_dirs):
    answer = v1_client.post("/update_model", json={"model_dir": str(model_dirs["v2"])}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["previous"]["model_version"] == "1"
    assert answer.json()["current"]["model_version"] == "2"
    assert answer.json()["current"]["aliases"] == ["champion"]
    prediction = v1_client.get("/predict", params={"text": "after the swap"}).json()["predictions"][0]
    assert prediction["model_version"] == "2"
    assert 'predict_model_info{model_name="news",model_version="2"} 1.0' in v1_client.get("/metrics").text


def test_update_accepts_plain_hf_dir(v1_client: TestClient, model_dirs):
    answer = v1_client.post("/update_model", json={"model_dir": str(model_dirs["plain"])}, headers=AUTH)
    assert answer.status_code == 200
    current = answer.json()["current"]
    assert current["model_name"] == "plain-sentiment"
    assert current["model_version"] is None
    assert current["labels"] == OTHER_LABELS
    prediction = v1_client.post("/predict", json={"texts": ["great film"]}).json()["predictions"][0]
    assert prediction["label"] in OTHER_LABELS


@pytest.mark.parametrize(
    ("dir_key", "status", "expected"),
    [
        ("missing", 404, "not found"),
        ("no_weights", 422, "no model weights"),
        ("no_labels", 422, "no id2label"),
        ("no_head", 422, "classifier.weight"),
        ("not_a_model", 422, "neither a fetched model dir"),
    ],
)
def test_update_failure_keeps_old_model(v1_client: TestClient, model_dirs, tmp_path, dir_key, status, expected):
    paths = {**model_dirs, "missing": tmp_path / "does-not-exist", "not_a_model": tmp_path}
    answer = v1_client.post("/update_model", json={"model_dir": str(paths[dir_key])}, headers=AUTH)
    assert answer.status_code == status
    assert expected in answer.json()["detail"]
    assert v1_client.get("/model").json()["model_version"] == "1"
    prediction = v1_client.get("/predict", params={"text": "still serving"})
    assert prediction.status_code == 200
    assert prediction.json()["predictions"][0]["model_version"] == "1"
    assert 'predict_model_swaps_total{result="failure"}' in v1_client.get("/metrics").text


@pytest.mark.parametrize(
    "body",
    [{}, {"model_dir": "/tmp/x", "model_name": "news", "model_version": "1"}, {"model_name": "news"},
     {"model_name": "bad name;", "model_version": "1"}, {"model_dir": "/tmp/$(reboot)"}],
    ids=["nothing", "both", "name-without-version", "invalid-name", "invalid-dir"],
)
def test_update_rejects_bad_body(v1_client: TestClient, body):
    answer = v1_client.post("/update_model", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert v1_client.get("/model").json()["model_version"] == "1"


def test_update_by_name_needs_mlflow_uri(v1_client: TestClient):
    answer = v1_client.post("/update_model", json={"model_name": "news", "model_version": "2"}, headers=AUTH)
    assert answer.status_code == 409
    assert "PREDICT_MLFLOW_URI" in answer.json()["detail"]


def test_update_by_name_mlflow_down(model_dirs, tmp_path):
    from serving_fixtures import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with make_client(model_dir=str(model_dirs["v1"]), mlflow_uri=uri, models_dir=str(tmp_path), fetch_retries=0) as down:
        wait_until_ready(down)
        answer = down.post("/update_model", json={"model_name": "news", "model_version": "2"}, headers=AUTH)
        assert answer.status_code == 502
        assert uri in answer.json()["detail"]
        assert down.get("/model").json()["model_version"] == "1"


def test_concurrent_updates_serialised(v1_client: TestClient, model_dirs):
    start = threading.Barrier(2)

    def update(key: str):
        start.wait()
        return v1_client.post("/update_model", json={"model_dir": str(model_dirs[key])}, headers=AUTH)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(update, ["v2", "plain"]))
    assert [answer.status_code for answer in answers] == [200, 200]
    first, second = sorted((answer.json() for answer in answers), key=lambda body: body["current"]["loaded_at"])
    # Serialised updates form a chain: the second one replaced the model that the first one installed.
    assert first["previous"]["model_version"] == "1"
    assert second["previous"]["model_dir"] == first["current"]["model_dir"]
    assert v1_client.get("/model").json()["model_dir"] == second["current"]["model_dir"]


def test_plan_chunks_covers_every_text_once():
    lengths = [5, 60, 7, 61, 30, 8, 6, 59, 33, 12, 64, 9]
    chunks = predict_service.plan_chunks(lengths, batch_size=4)
    assert sorted(index for chunk in chunks for index in chunk) == list(range(len(lengths)))
    assert all(1 <= len(chunk) <= 4 for chunk in chunks)
    flat_lengths = [lengths[index] for chunk in chunks for index in chunk]
    assert flat_lengths == sorted(lengths)


def test_plan_chunks_splits_on_padding_waste():
    lengths = [10, 10, 10, 10, 10, 100, 100, 100, 100]
    chunks = predict_service.plan_chunks(lengths, batch_size=32)
    assert chunks == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]


def test_predict_batch_keeps_text_order(v1_client: TestClient):
    texts = ["short", "a much longer text " * 12, "mid length text here", "x", "word " * 40, "two words"]
    batch = v1_client.post("/predict", json={"texts": texts}).json()["predictions"]
    for text, prediction in zip(texts, batch):
        alone = v1_client.get("/predict", params={"text": text}).json()["predictions"][0]
        assert prediction["label"] == alone["label"]
        assert prediction["score"] == pytest.approx(alone["score"], abs=1e-5)


def test_predict_rejects_when_overloaded(model_dirs):
    with make_client(model_dir=str(model_dirs["v1"]), max_pending_texts=4, batch_wait_ms=300, batch_size=64) as small:
        wait_until_ready(small)
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(small.post, "/predict", json={"texts": ["a", "b", "c"]})
            time.sleep(0.1)  # the first request now waits in the 300 ms batch window
            second = small.post("/predict", json={"texts": ["d", "e"]})
        assert first.result().status_code == 200
        assert second.status_code == 503
        assert "more than 4 texts pending" in second.json()["detail"]
