"""Train: fine-tune a pretrained model for sequence classification on the preprocessed dataset.

Reads `<workspace>/<run key>/preprocess.json` and the tokenized dataset it points to.
Writes `<workspace>/<run key>/train/` (model, tokenizer, metrics, parameters, history) and `train.json`
with the test metrics. A retried run resumes from its last checkpoint.
By hand: python tasks/train.py --workspace workspace --run-key KEY --epochs 1
Several GPUs: torchrun --nproc_per_node 4 tasks/train.py --workspace W --run-key K
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from common import (
    TaskError,
    arg_type,
    atomic_directory,
    atomic_write_json,
    read_json,
    run_folder,
    run_main,
    setup_logging,
    validate_float,
    validate_int,
    validate_path,
    validate_run_key,
    validate_source,
)
from sources import describe_hub_failure, resolve_model

logger = logging.getLogger("train")

# Chosen with benchmarks/train_throughput.py on BBC news with MiniLM-L6; see docs/benchmarks.md.
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 8
DEFAULT_LEARNING_RATE = 2e-4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default="workspace", type=arg_type(validate_path, "--workspace"),
                        help="folder holding one subfolder per run (default: %(default)s)")
    parser.add_argument("--run-key", required=True, type=arg_type(validate_run_key, "--run-key"),
                        help="the run folder that preprocess wrote; DS passes the workflow instance id")
    parser.add_argument("--pretrained-model", default=None, type=arg_type(validate_source, "--pretrained-model"),
                        help="Hub id, local folder or package:NAME (default: the one preprocess tokenized with)")
    parser.add_argument("--epochs", default=DEFAULT_EPOCHS, type=arg_type(validate_float, "--epochs", 0.01, 100),
                        help="training epochs, fractions allowed (default: %(default)s)")
    parser.add_argument("--batch-size", default=DEFAULT_BATCH_SIZE,
                        type=arg_type(validate_int, "--batch-size", 1, 4096),
                        help="training batch size per device (default: %(default)s)")
    parser.add_argument("--learning-rate", default=DEFAULT_LEARNING_RATE,
                        type=arg_type(validate_float, "--learning-rate", 1e-7, 1.0),
                        help="peak AdamW learning rate, reached after a 10%% linear warm-up (default: %(default)s)")
    parser.add_argument("--seed", default=42, type=arg_type(validate_int, "--seed", 0, 2**31 - 1),
                        help="seed for weight initialisation and data order (default: %(default)s)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto uses a GPU with bf16 (or fp16) when there is one (default: %(default)s)")
    return parser.parse_args(argv)


def compute_metrics(prediction) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    predicted = prediction.predictions.argmax(axis=-1)
    return {
        "accuracy": float(accuracy_score(prediction.label_ids, predicted)),
        "macro_f1": float(f1_score(prediction.label_ids, predicted, average="macro", zero_division=0)),
    }


def precision_flags(device: str) -> dict[str, bool]:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        if device == "cuda":
            raise TaskError("--device cuda was given but torch sees no CUDA GPU; use --device auto or cpu")
        return {"use_cpu": True}
    if torch.cuda.is_bf16_supported():
        return {"bf16": True}
    return {"fp16": True}


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """Return the newest checkpoint that a killed run finished writing, or None."""
    if not checkpoint_dir.is_dir():
        return None
    candidates = sorted(
        (path for path in checkpoint_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]),
        reverse=True,
    )
    for path in candidates:
        if (path / "trainer_state.json").is_file() and any(path.glob("model.safetensors*")):
            return str(path)
        logger.warning("ignoring incomplete checkpoint %s", path)
    return None


def load_model(reference: str, label2id: dict[str, int]):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(reference)
    id2label = {index: name for name, index in label2id.items()}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        # A checkpoint trained for other labels has a head of another shape: start a new head instead.
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(label2id), label2id=label2id, id2label=id2label, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError) as error:
        raise describe_hub_failure("pretrained model", reference, error) from None
    return tokenizer, model


def progress_callback():
    """Build a Trainer callback that logs progress about every 10 % of the steps, with an ETA.

    DS task logs show no progress bars, and one epoch on a CPU can take many minutes.
    """
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()
            self.first_step = state.global_step
            self.every = max(1, state.max_steps // 10)

        def on_step_end(self, args, state, control, **kwargs):
            done = state.global_step - self.first_step
            if state.global_step % self.every and state.global_step != state.max_steps:
                return
            elapsed = time.perf_counter() - self.started
            remaining = elapsed / max(done, 1) * (state.max_steps - state.global_step)
            logger.info("step %d of %d (epoch %.2f), %.0f s elapsed, about %.0f s left", state.global_step,
                        state.max_steps, state.epoch or 0.0, elapsed, remaining)

    return ProgressLog()


def training_identity(args: argparse.Namespace, pretrained_model: str, prepared: dict) -> dict:
    """Describe what a checkpoint was trained with, so a retry resumes only the same training."""
    return {
        "pretrained_model": pretrained_model,
        "dataset_fingerprint": prepared["dataset_fingerprint"],
        "max_seq_length": prepared["max_seq_length"],
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
    }


def prepare_work_dir(work_dir: Path, identity: dict) -> None:
    """Keep the checkpoints of an earlier attempt only when it trained with the same settings."""
    identity_file = work_dir / "training.json"
    if work_dir.exists():
        earlier = json.loads(identity_file.read_text(encoding="utf-8")) if identity_file.is_file() else None
        if earlier != identity:
            logger.warning("discarding checkpoints in %s: they were trained with other settings (%s)", work_dir,
                           earlier)
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(identity_file, identity)


def epoch_history(log_history: list[dict]) -> list[dict]:
    """Merge the Trainer's log entries into one record per epoch: train loss and validation metrics."""
    epochs: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = max(1, round(entry["epoch"] + 0.4999))  # a loss logged mid-epoch belongs to the epoch it ends in
        record = epochs.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            record["train_loss"] = entry["loss"]
        for key in ("eval_loss", "eval_accuracy", "eval_macro_f1"):
            if key in entry:
                record[key.replace("eval_", "validation_")] = entry[key]
    return [epochs[epoch] for epoch in sorted(epochs)]


def test_report(trainer, test_dataset, id2label: dict[int, str]) -> dict:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    output = trainer.predict(test_dataset)
    predicted = output.predictions.argmax(axis=-1)
    labels = list(range(len(id2label)))
    names = [id2label[index] for index in labels]
    report = classification_report(output.label_ids, predicted, labels=labels, target_names=names,
                                   output_dict=True, zero_division=0)
    return {
        "test_accuracy": float(accuracy_score(output.label_ids, predicted)),
        "test_macro_f1": float(f1_score(output.label_ids, predicted, average="macro", zero_division=0)),
        "test_loss": float(output.metrics.get("test_loss", float("nan"))),
        "per_class": {name: {key: float(report[name][key]) for key in ("precision", "recall", "f1-score", "support")}
                      for name in names},
        "confusion_matrix": confusion_matrix(output.label_ids, predicted, labels=labels).tolist(),
        "labels": names,
        "classification_report": classification_report(output.label_ids, predicted, labels=labels,
                                                        target_names=names, digits=4, zero_division=0),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = run_folder(args.workspace, args.run_key)
    prepared = read_json(run_dir / "preprocess.json", "preprocess")
    pretrained_model = args.pretrained_model or prepared["pretrained_model"]
    label2id = prepared["label2id"]
    id2label = {index: name for name, index in label2id.items()}

    from datasets import load_from_disk
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    dataset = load_from_disk(prepared["dataset_dir"])
    logger.info("training on %d rows, validating on %d, testing on %d; %d labels", len(dataset["train"]),
                len(dataset["validation"]), len(dataset["test"]), len(label2id))
    tokenizer, model = load_model(pretrained_model, label2id)
    logger.info("model %s: %.1fM parameters", pretrained_model, model.num_parameters() / 1e6)

    # Checkpoints live at a fixed path inside the run folder so that a retried task finds them.
    work_dir = run_dir / "train-work"
    prepare_work_dir(work_dir, training_identity(args, pretrained_model, prepared))
    training_args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(32, args.batch_size),
        learning_rate=args.learning_rate,
        warmup_steps=0.1,
        weight_decay=0.01,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        train_sampling_strategy="group_by_length",
        logging_strategy="epoch",
        report_to=[],
        seed=args.seed,
        disable_tqdm=not sys.stderr.isatty(),
        **precision_flags(args.device),
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[progress_callback()],
    )

    if training_args.disable_tqdm:
        # Without progress bars the Trainer prints each log dict to stdout, repeating the epoch lines logged below.
        trainer.remove_callback(PrinterCallback)

    resume_from = last_complete_checkpoint(work_dir / "checkpoints")
    if resume_from:
        logger.info("resuming from %s", resume_from)
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - started
    history = epoch_history(trainer.state.log_history)
    for record in history:
        logger.info("epoch %d: %s", record["epoch"],
                    ", ".join(f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"))
    if not trainer.is_world_process_zero():
        return 0

    # The best checkpoint by validation macro-F1 is loaded back; evaluate it once on the test split.
    report = test_report(trainer, dataset["test"], id2label)
    logger.info("test accuracy %.4f, macro-F1 %.4f on %d rows", report["test_accuracy"], report["test_macro_f1"],
                len(dataset["test"]))
    logger.info("classification report on test:\n%s", report["classification_report"])

    parameters = {
        "pretrained_model": pretrained_model,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "max_seq_length": prepared["max_seq_length"],
        "train_rows": len(dataset["train"]),
        "device": "cpu" if training_args.use_cpu else "cuda",
    }
    metrics = {key: value for key, value in report.items() if key != "classification_report"}
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["train_samples_per_second"] = round(train_output.metrics.get("train_samples_per_second", 0.0), 3)
    output_dir = run_dir / "train"
    # Serve at the length the model was trained with: longer inputs cost more and were never seen in training.
    tokenizer.model_max_length = prepared["max_seq_length"]
    with atomic_directory(output_dir) as tmp:
        trainer.save_model(str(tmp / "model"))
        tokenizer.save_pretrained(str(tmp / "model"))
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "parameters.json", parameters)
        atomic_write_json(tmp / "history.json", history)
        (tmp / "classification_report.txt").write_text(report["classification_report"], encoding="utf-8")

    result = {
        "run_key": args.run_key,
        "model_dir": str(output_dir / "model"),
        "test_accuracy": report["test_accuracy"],
        "test_macro_f1": report["test_macro_f1"],
        "parameters": parameters,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": metrics["train_seconds"],
    }
    atomic_write_json(run_dir / "train.json", result)
    logger.info("train done in %.0f s: model saved to %s", train_seconds, output_dir / "model")
    return 0


if __name__ == "__main__":
    setup_logging("train")
    run_main(main, sys.argv[1:])
