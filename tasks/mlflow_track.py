"""MLflow tracking: record a finished training run and register its model as a new version.

Reads `<workspace>/<run key>/preprocess.json`, `train.json` and the `train/` folder.
Logs one run in the experiment named after the model (parameters, per-epoch metrics, test metrics,
confusion matrix, classification report, the model as an MLflow pyfunc) and registers a new version.
Writes `<workspace>/<run key>/mlflow_track.json` with `run_id` and `model_version`.
By hand: python tasks/mlflow_track.py --workspace workspace --run-key KEY --remote-server-uri http://127.0.0.1:5000 --model-name bbc-news
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# MLflow's own HTTP retries back off for minutes against a server that is down. This task instead retries
# a bounded number of times and then fails with a clear message. Set before mlflow is imported.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")

from common import (  # noqa: E402 - must follow the environment defaults above
    TaskError,
    arg_type,
    atomic_write_json,
    read_json,
    run_folder,
    run_main,
    set_output,
    setup_logging,
    validate_int,
    validate_name,
    validate_path,
    validate_run_key,
    validate_uri,
)

logger = logging.getLogger("mlflow_track")

MODEL_FILE = Path(__file__).with_name("text_classifier_model.py")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", default="workspace", type=arg_type(validate_path, "--workspace"),
                        help="folder holding one subfolder per run (default: %(default)s)")
    parser.add_argument("--run-key", required=True, type=arg_type(validate_run_key, "--run-key"),
                        help="the run folder that preprocess and train wrote")
    parser.add_argument("--remote-server-uri", default="http://127.0.0.1:5000",
                        type=arg_type(validate_uri, "--remote-server-uri"),
                        help="MLflow tracking URI (default: %(default)s)")
    parser.add_argument("--model-name", required=True, type=arg_type(validate_name, "--model-name"),
                        help="registered model name; also the experiment name")
    parser.add_argument("--workflow-instance-id", default=None, type=arg_type(validate_run_key, "--workflow-instance-id"),
                        help="DS workflow instance id, stored as a tag (DS passes it)")
    parser.add_argument("--task-instance-id", default=None, type=arg_type(validate_run_key, "--task-instance-id"),
                        help="DS task instance id, stored as a tag (DS passes it)")
    parser.add_argument("--connect-attempts", default=5, type=arg_type(validate_int, "--connect-attempts", 1, 100),
                        help="attempts to reach the tracking server before failing (default: %(default)s)")
    return parser.parse_args(argv)


def connect(uri: str, attempts: int):
    """Return an MlflowClient for `uri` after checking that the server responds, retrying with backoff."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            client.search_experiments(max_results=1)
            return client
        except (MlflowException, OSError) as error:
            if attempt == attempts:
                raise TaskError(f"MLflow tracking server {uri} is not reachable after {attempts} attempts ({error}); "
                                "start it (scripts/mlflow_server.sh start) or fix --remote-server-uri") from None
            logger.warning("MLflow tracking server %s not reachable (attempt %d of %d): %s; retrying in %.0f s", uri,
                           attempt, attempts, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30)
    raise AssertionError("unreachable")


def git_commit() -> str | None:
    """Return the commit of the task code: set by pyds.py for DS runs, read from git for hand runs."""
    commit = os.environ.get("NLP_WORKFLOW_GIT_COMMIT")
    if commit:
        return commit
    try:
        output = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return output.stdout.strip() or None


def metric_key(text: str) -> str:
    """Make a label name usable in an MLflow metric name."""
    return re.sub(r"[^A-Za-z0-9_./ -]", "_", text)


def train_result_fingerprint(train_dir: Path) -> str:
    """Identify one training result, so a retrained run key is tracked again but a retried task is not."""
    return hashlib.sha256((train_dir / "metrics.json").read_bytes()).hexdigest()[:16]


def find_earlier_version(client, experiment_name: str, run_key: str, train_result: str) -> tuple[str, str] | None:
    """Return (run_id, version) of a finished earlier attempt for this training result, so a retry adds no
    duplicate version."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.run_key = '{run_key}' and tags.train_result = '{train_result}' "
                              "and attributes.status = 'FINISHED'",
                              max_results=5)
    for run in runs:
        version = run.data.tags.get("registered_model_version")
        if version:
            return run.info.run_id, version
    return None


def confusion_matrix_figure(matrix: list[list[int]], labels: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.9 * len(labels) + 2)
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=labels)
    display.plot(cmap="Blues", xticks_rotation=45, colorbar=False)
    display.figure_.set_size_inches(size, size)
    display.ax_.set_title("Confusion matrix on the test split")
    display.figure_.tight_layout()
    return display.figure_


def model_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
    )


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "torch", "transformers", "pandas")]


def log_run(args, prepared: dict, trained: dict, train_dir: Path, tags: dict[str, str]) -> tuple[str, str]:
    import mlflow
    import pandas as pd

    metrics = read_json(train_dir / "metrics.json", "train")
    history = read_json(train_dir / "history.json", "train")
    parameters = read_json(train_dir / "parameters.json", "train")
    report_text = (train_dir / "classification_report.txt").read_text(encoding="utf-8")

    mlflow.set_experiment(args.model_name)
    with mlflow.start_run(run_name=f"{args.model_name}-{args.run_key}", tags=tags) as run:
        mlflow.log_params({
            **parameters,
            "dataset_name": prepared["dataset_name"],
            "max_seq_length": prepared["max_seq_length"],
            "num_labels": len(prepared["label2id"]),
            **{f"rows_{split}": count for split, count in prepared["rows"].items()},
        })
        for record in history:
            values = {key: value for key, value in record.items() if key != "epoch"}
            mlflow.log_metrics(values, step=record["epoch"])
        mlflow.log_metrics({key: metrics[key] for key in ("test_accuracy", "test_macro_f1", "train_seconds")})
        for label, scores in metrics["per_class"].items():
            mlflow.log_metrics({f"test_{score}_{metric_key(label)}": scores[score]
                                for score in ("precision", "recall", "f1-score")})
        figure = confusion_matrix_figure(metrics["confusion_matrix"], metrics["labels"])
        mlflow.log_figure(figure, "confusion_matrix.png")
        mlflow.log_text(report_text, "classification_report.txt")
        mlflow.log_dict({"per_class": metrics["per_class"], "labels": metrics["labels"],
                         "confusion_matrix": metrics["confusion_matrix"]}, "classification_report.json")
        mlflow.log_dict(prepared["label_counts"], "label_counts.json")

        logger.info("logging the model from %s and registering it as %s", train_dir / "model", args.model_name)
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_FILE),
            artifacts={"hf_model": str(train_dir / "model")},
            signature=model_signature(),
            input_example=pd.DataFrame({"text": ["Shares rose after the company reported record profits."]}),
            pip_requirements=pip_requirements(),
            registered_model_name=args.model_name,
        )
        version = str(model_info.registered_model_version)
        mlflow.set_tag("registered_model_version", version)
    return run.info.run_id, version


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = run_folder(args.workspace, args.run_key)
    prepared = read_json(run_dir / "preprocess.json", "preprocess")
    trained = read_json(run_dir / "train.json", "train")
    train_dir = Path(trained["model_dir"]).parent
    client = connect(args.remote_server_uri, args.connect_attempts)

    tags = {
        "run_key": args.run_key,
        "dataset_name": prepared["dataset_name"],
        "dataset_fingerprint": prepared["dataset_fingerprint"],
        "pretrained_model": trained["parameters"]["pretrained_model"],
        "train_result": train_result_fingerprint(train_dir),
    }
    if commit := git_commit():
        tags["git_commit"] = commit
    if args.workflow_instance_id:
        tags["ds_workflow_instance_id"] = args.workflow_instance_id
    if args.task_instance_id:
        tags["ds_task_instance_id"] = args.task_instance_id

    earlier = find_earlier_version(client, args.model_name, args.run_key, tags["train_result"])
    if earlier:
        run_id, version = earlier
        logger.info("run key %s was already tracked as run %s, version %s; not registering it again", args.run_key,
                    run_id, version)
    else:
        run_id, version = log_run(args, prepared, trained, train_dir, tags)
        for key, value in tags.items():
            client.set_model_version_tag(args.model_name, version, key, value)
        client.set_model_version_tag(args.model_name, version, "run_id", run_id)
        client.update_model_version(
            args.model_name, version,
            description=f"test macro-F1 {trained['test_macro_f1']:.4f}, accuracy {trained['test_accuracy']:.4f}; "
                        f"dataset {prepared['dataset_name']}, pretrained model {tags['pretrained_model']}",
        )
        logger.info("logged run %s and registered %s version %s (test macro-F1 %.4f)", run_id, args.model_name,
                    version, trained["test_macro_f1"])

    result = {
        "run_id": run_id,
        "model_name": args.model_name,
        "model_version": version,
        "model_uri": f"models:/{args.model_name}/{version}",
        "tracking_uri": args.remote_server_uri,
    }
    atomic_write_json(run_dir / "mlflow_track.json", result)
    set_output("run_id", run_id)
    set_output("model_version", version)
    return 0


if __name__ == "__main__":
    setup_logging("mlflow_track")
    run_main(main, sys.argv[1:])
