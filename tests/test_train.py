"""tasks/train.py with the tiny model on a small dataset."""

from __future__ import annotations

import json

import pytest
from conftest import run_task

import preprocess
import train


@pytest.fixture()
def prepared_run(tmp_path, topic_folder, tiny_model_dir):
    workspace = tmp_path / "ws"
    preprocess.main(["--dataset-name", str(topic_folder), "--pretrained-model", str(tiny_model_dir),
                     "--workspace", str(workspace), "--run-key", "r1", "--max-seq-length", "32"])
    return workspace


def train_args(workspace, *extra):
    return ["--workspace", str(workspace), "--run-key", "r1", "--batch-size", "8", "--learning-rate", "1e-3", *extra]


def test_train_writes_model_metrics_and_history(prepared_run, tiny_model_dir):
    assert train.main(train_args(prepared_run, "--epochs", "2")) == 0
    result = json.loads((prepared_run / "r1" / "train.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert 0.0 <= result["test_macro_f1"] <= 1.0
    assert result["parameters"]["pretrained_model"] == str(tiny_model_dir)

    train_dir = prepared_run / "r1" / "train"
    config = json.loads((train_dir / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "business", "1": "politics", "2": "sports"}
    assert (train_dir / "model" / "tokenizer.json").is_file()
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert len(metrics["confusion_matrix"]) == 3
    assert sum(map(sum, metrics["confusion_matrix"])) == 4  # the test split: 10 % of 36, at least one per label
    assert set(metrics["per_class"]) == {"business", "politics", "sports"}
    history = json.loads((train_dir / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    assert all("validation_macro_f1" in record and "train_loss" in record for record in history)


def test_train_resumes_from_last_checkpoint(prepared_run, caplog):
    import shutil

    assert train.main(train_args(prepared_run, "--epochs", "2")) == 0
    checkpoints = sorted((prepared_run / "r1" / "train-work" / "checkpoints").glob("checkpoint-*"),
                         key=lambda path: int(path.name.split("-")[1]))
    assert len(checkpoints) == 2
    # Simulate a task killed during epoch 2: only the epoch 1 checkpoint and no result remain.
    shutil.rmtree(checkpoints[-1])
    shutil.rmtree(prepared_run / "r1" / "train")
    (prepared_run / "r1" / "train.json").unlink()

    caplog.set_level("INFO")
    assert train.main(train_args(prepared_run, "--epochs", "2")) == 0
    assert f"resuming from {checkpoints[0]}" in caplog.text
    assert "discarding" not in caplog.text
    history = json.loads((prepared_run / "r1" / "train" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]


def test_train_discards_checkpoints_of_other_settings(prepared_run, caplog):
    train.main(train_args(prepared_run, "--epochs", "1"))
    caplog.set_level("INFO")
    train.main(train_args(prepared_run, "--epochs", "1", "--learning-rate", "5e-4"))
    assert "discarding checkpoints" in caplog.text
    assert "resuming" not in caplog.text
    parameters = json.loads((prepared_run / "r1" / "train" / "parameters.json").read_text())
    assert parameters["learning_rate"] == 5e-4


def test_train_saves_tokenizer_with_training_length(prepared_run):
    from transformers import AutoTokenizer

    train.main(train_args(prepared_run, "--epochs", "1"))
    tokenizer = AutoTokenizer.from_pretrained(prepared_run / "r1" / "train" / "model")
    assert tokenizer.model_max_length == 32


def test_train_ignores_incomplete_checkpoint(prepared_run, tmp_path):
    broken = prepared_run / "r1" / "train-work" / "checkpoints" / "checkpoint-99"
    broken.mkdir(parents=True)
    assert train.last_complete_checkpoint(broken.parent) is None


def test_train_without_preprocess_fails_clearly(tmp_path):
    process = run_task("train", "--workspace", str(tmp_path), "--run-key", "missing")
    assert process.returncode == 2
    assert "preprocess.json not found: run preprocess" in process.stderr


def test_train_rejects_bad_numbers(tmp_path):
    process = run_task("train", "--workspace", str(tmp_path), "--run-key", "r", "--learning-rate", "fast")
    assert process.returncode == 2
    assert "--learning-rate" in process.stderr


def test_train_help_lists_every_option():
    process = run_task("train", "--help")
    for option in ("--workspace", "--run-key", "--pretrained-model", "--epochs", "--batch-size", "--learning-rate",
                   "--seed", "--device", "torchrun"):
        assert option in process.stdout
