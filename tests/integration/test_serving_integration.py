"""End-to-end deploy tests with real processes: an MLflow server, uvicorn running the service, the task scripts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from serving_fixtures import LABELS, MODEL_NAME, registered_model, run_predict_service, run_task  # noqa: F401

from service_client import ServiceClient

pytestmark = pytest.mark.integration

TOKEN = "integration-admin-token"
CLIENTS = 16
LOAD_SECONDS = 4.0
SWAP_AFTER_SECONDS = 1.5


@pytest.fixture(scope="module")
def service(registered_model, tmp_path_factory) -> dict:
    """A real `uvicorn predict_service:app` with no model at start-up, as on a first deploy."""
    folder = tmp_path_factory.mktemp("service")
    env = {
        "PREDICT_ADMIN_TOKEN": TOKEN,
        "PREDICT_MLFLOW_URI": registered_model["uri"],
        "PREDICT_MODELS_DIR": str(folder / "service-models"),
        "PREDICT_TORCH_THREADS": "1",
        "PREDICT_BATCH_WAIT_MS": "3",
    }
    with run_predict_service(folder, env) as url:
        yield {"url": url, "models_dir": folder / "models", "mlflow_uri": registered_model["uri"]}


def fetch(service: dict, version: str) -> str:
    result = run_task(
        "fetch_model.py", "--remote-server-uri", service["mlflow_uri"], "--model-name", MODEL_NAME,
        "--model-version", version, "--models-dir", str(service["models_dir"]),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("model_dir=")[1].split(")}")[0]


def test_deploy_steps_end_to_end(service):
    check = run_task("check_service.py", "--service-url", service["url"], "--timeout", "10")
    assert check.returncode == 0, check.stderr
    assert "no model loaded yet" in check.stderr
    assert "${setValue(service_ready=false)}" in check.stdout

    not_ready = run_task("test_service.py", "--service-url", service["url"], "--model-name", MODEL_NAME, "--model-version", "1")
    assert not_ready.returncode == 2
    assert "503" in not_ready.stderr

    model_dir = fetch(service, "1")
    update = run_task("update_model.py", "--service-url", service["url"], "--model-dir", model_dir,
                      env={"PREDICT_ADMIN_TOKEN": TOKEN})
    assert update.returncode == 0, update.stderr
    assert "${setValue(deployed_model_version=1)}" in update.stdout

    smoke = run_task("test_service.py", "--service-url", service["url"], "--model-name", MODEL_NAME, "--model-version", "1",
                     "--model-dir", model_dir)
    assert smoke.returncode == 0, smoke.stderr
    assert "smoke test passed" in smoke.stderr

    wrong_version = run_task("test_service.py", "--service-url", service["url"], "--model-name", MODEL_NAME,
                             "--model-version", "2")
    assert wrong_version.returncode == 2
    assert f"serves version 1 of '{MODEL_NAME}', expected version 2" in wrong_version.stderr

    ready = run_task("check_service.py", "--service-url", service["url"])
    assert "${setValue(service_ready=true)}" in ready.stdout


def test_fetch_by_alias_and_update_through_client(service):
    model_dir = fetch(service, "champion")
    assert model_dir.endswith(f"/{MODEL_NAME}/2")
    with ServiceClient(service["url"], admin_token=TOKEN) as client:
        result = client.update_model(model_dir=model_dir)
        assert result["current"]["model_version"] == "2"
        assert result["current"]["aliases"] == ["champion"]
        prediction = client.predict_one("the striker scored twice")
    assert prediction["label"] in LABELS
    assert prediction["model_version"] == "2"

    alias_smoke = run_task("test_service.py", "--service-url", service["url"], "--model-name", MODEL_NAME,
                           "--model-version", "champion")
    assert alias_smoke.returncode == 0, alias_smoke.stderr


def test_update_by_name_and_version_on_service(service):
    with ServiceClient(service["url"], admin_token=TOKEN) as client:
        result = client.update_model(model_name=MODEL_NAME, model_version="1")
        assert result["current"]["model_version"] == "1"
        assert Path(result["current"]["model_dir"]).parts[-2:] == (MODEL_NAME, "1")
        assert client.predict(["markets fell"])[0]["model_version"] == "1"


def test_update_model_step_wrong_token(service, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token\n")
    result = run_task("update_model.py", "--service-url", service["url"], "--model-dir", str(tmp_path),
                      "--admin-token-file", str(token_file))
    assert result.returncode == 2
    assert "returned 403: wrong admin token" in result.stderr


def test_update_model_step_without_token(service, tmp_path):
    result = run_task("update_model.py", "--service-url", service["url"], "--model-dir", str(tmp_path),
                      env={"PREDICT_ADMIN_TOKEN": ""})
    assert result.returncode == 2
    assert "no admin token" in result.stderr


def test_update_model_step_missing_dir_keeps_model(service, tmp_path):
    before = httpx.get(f"{service['url']}/model").json()["model_version"]
    result = run_task("update_model.py", "--service-url", service["url"], "--model-dir", str(tmp_path / "gone"),
                      env={"PREDICT_ADMIN_TOKEN": TOKEN})
    assert result.returncode == 2
    assert "returned 404" in result.stderr
    assert httpx.get(f"{service['url']}/model").json()["model_version"] == before


def test_check_service_unreachable():
    result = run_task("check_service.py", "--service-url", "http://127.0.0.1:9", "--timeout", "1")
    assert result.returncode == 2
    assert "did not respond to /health within 1 s" in result.stderr


@pytest.mark.parametrize("script", ["check_service.py", "update_model.py", "test_service.py", "service_client.py"])
def test_step_help(script):
    result = run_task(script, "--help")
    assert result.returncode == 0
    assert "--service-url" in result.stdout


async def send_requests(url: str, client_id: int, stop_at: float, records: list[dict]) -> None:
    """Send single-text requests one after another until stop_at, recording times and the version in each response."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        number = 0
        while time.monotonic() < stop_at:
            sent = time.monotonic()
            response = await http.get("/predict", params={"text": f"client {client_id} request {number}"})
            received = time.monotonic()
            body = response.json() if response.status_code == 200 else {}
            version = body["predictions"][0]["model_version"] if body else None
            records.append({"client": client_id, "sent": sent, "received": received,
                            "status": response.status_code, "version": version})
            number += 1


async def swap_under_load(url: str, model_dir: str) -> tuple[list[dict], dict]:
    records: list[dict] = []
    stop_at = time.monotonic() + LOAD_SECONDS
    clients = [asyncio.create_task(send_requests(url, client, stop_at, records)) for client in range(CLIENTS)]
    await asyncio.sleep(SWAP_AFTER_SECONDS)
    async with httpx.AsyncClient(base_url=url, timeout=60) as admin:
        swap = {"sent": time.monotonic()}
        response = await admin.post("/update_model", json={"model_dir": model_dir},
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        swap.update(received=time.monotonic(), status=response.status_code, body=response.json())
    await asyncio.gather(*clients)
    return records, swap


def test_swap_under_load(service):
    old_dir, new_dir = fetch(service, "1"), fetch(service, "2")
    with ServiceClient(service["url"], admin_token=TOKEN) as client:
        client.update_model(model_dir=old_dir)

    records, swap = asyncio.run(swap_under_load(service["url"], new_dir))

    assert swap["status"] == 200, swap["body"]
    assert swap["body"]["current"]["model_version"] == "2"
    failed = [record for record in records if record["status"] != 200]
    assert failed == []
    assert {record["version"] for record in records} == {"1", "2"}
    before_swap = [record for record in records if record["received"] < swap["sent"]]
    after_swap = [record for record in records if record["sent"] > swap["received"]]
    assert before_swap
    assert after_swap
    assert {record["version"] for record in before_swap} == {"1"}
    assert {record["version"] for record in after_swap} == {"2"}
    for client_id in range(CLIENTS):
        versions = [record["version"] for record in sorted(records, key=lambda r: r["sent"]) if record["client"] == client_id]
        # Each client waits for one response before sending the next, so it must never go back to version 1.
        assert versions == sorted(versions), f"client {client_id} saw versions {versions}"
    print(json.dumps({"requests": len(records), "swap_seconds": round(swap["received"] - swap["sent"], 2)}))
