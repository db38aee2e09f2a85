"""Train workflow: fine-tune a text classifier on a labelled dataset and register it in MLflow.

    preprocess ──> train ──> mlflow_track

- preprocess: load, clean, split and tokenize `dataset_name` into <workspace>/<run key>/preprocess/
- train: fine-tune `pretrained_model`, evaluate on the test split, write <workspace>/<run key>/train/
- mlflow_track: log params, metrics and the model to `remote_server_uri` and register a new version
  of `model_name`; outputs `run_id` and `model_version`

The run key is the DS workflow instance id, so two runs never share a run folder. Each task runs
tasks/<task>.py through the script that workflows/task_script.py renders. Global parameters and their
defaults are in workflows/params.py.
"""

from __future__ import annotations

from pathlib import Path

from pydolphinscheduler import configuration
from pydolphinscheduler.core.workflow import Workflow
from pydolphinscheduler.tasks.shell import Shell

from workflows.params import TASK_INSTANCE_ID, TRAIN_WORKFLOW, WORKFLOW_INSTANCE_ID, global_params, placeholder
from workflows.task_script import DEFAULT_ENVIRONMENT, TASKS_DIR, detect_git_commit, render_task_script

# Task timeouts in minutes. DS kills a task that runs longer and fails it (timeout strategy FAILED).
PREPROCESS_TIMEOUT = 60
# NOTE: sized for the BBC demo on one GPU or a few CPU cores; a full Hub dataset on a CPU needs more.
TRAIN_TIMEOUT = 360
MLFLOW_TRACK_TIMEOUT = 30
# mlflow_track talks to the tracking server, so a failed attempt is retried after a pause in minutes.
MLFLOW_TRACK_RETRIES = 2
RETRY_INTERVAL = 1


def create_workflow(
    *,
    worker_group: str = configuration.WORKFLOW_WORKER_GROUP,
    environment_name: str = DEFAULT_ENVIRONMENT,
    train_worker_group: str | None = None,
    train_environment_name: str | None = None,
    param_overrides: dict[str, str] | None = None,
    tasks_dir: Path = TASKS_DIR,
    git_commit: str | None = None,
) -> Workflow:
    """Define the train workflow; submitting it is the caller's step.

    `train_worker_group` and `train_environment_name` place the train task apart from the others, on
    a GPU worker group for example. `param_overrides` replaces defaults of the global parameters.
    Creating the tasks requests task codes from the DS Python gateway, so it needs a reachable gateway.
    """
    params = global_params("train", param_overrides)
    commit = detect_git_commit() if git_commit is None else git_commit
    train_worker_group = train_worker_group or worker_group
    train_environment_name = train_environment_name or environment_name
    param = placeholder

    def script(task: str, options: list[tuple[str, str]], environment: str) -> str:
        return render_task_script(task, options, workflow=TRAIN_WORKFLOW, environment_name=environment,
                                  tasks_dir=tasks_dir, git_commit=commit)

    with Workflow(
        name=TRAIN_WORKFLOW,
        description="Fine-tune a text classifier and register it in MLflow (pyds.py)",
        param=params,
        worker_group=worker_group,
    ) as workflow:
        preprocess = Shell(
            name="preprocess",
            command=script("preprocess", [
                ("--dataset-name", param("dataset_name")),
                ("--pretrained-model", param("pretrained_model")),
                ("--workspace", param("workspace")),
                ("--run-key", param(WORKFLOW_INSTANCE_ID)),
                ("--text-column", param("text_column")),
                ("--label-column", param("label_column")),
                ("--max-seq-length", param("max_seq_length")),
                ("--max-samples", param("max_samples")),
                ("--seed", param("seed")),
            ], environment_name),
            worker_group=worker_group,
            environment_name=environment_name,
            timeout=PREPROCESS_TIMEOUT,
            timeout_notify_strategy="FAILED",
        )

        train = Shell(
            name="train",
            command=script("train", [
                ("--workspace", param("workspace")),
                ("--run-key", param(WORKFLOW_INSTANCE_ID)),
                ("--pretrained-model", param("pretrained_model")),
                ("--epochs", param("epochs")),
                ("--batch-size", param("batch_size")),
                ("--learning-rate", param("learning_rate")),
                ("--seed", param("seed")),
            ], train_environment_name),
            worker_group=train_worker_group,
            environment_name=train_environment_name,
            timeout=TRAIN_TIMEOUT,
            timeout_notify_strategy="FAILED",
        )

        mlflow_track = Shell(
            name="mlflow_track",
            command=script("mlflow_track", [
                ("--workspace", param("workspace")),
                ("--run-key", param(WORKFLOW_INSTANCE_ID)),
                ("--remote-server-uri", param("remote_server_uri")),
                ("--model-name", param("model_name")),
                ("--workflow-instance-id", param(WORKFLOW_INSTANCE_ID)),
                ("--task-instance-id", param(TASK_INSTANCE_ID)),
            ], environment_name),
            worker_group=worker_group,
            environment_name=environment_name,
            timeout=MLFLOW_TRACK_TIMEOUT,
            timeout_notify_strategy="FAILED",
            fail_retry_times=MLFLOW_TRACK_RETRIES,
            fail_retry_interval=RETRY_INTERVAL,
            output_params={"run_id": "", "model_version": ""},
        )

        preprocess >> train >> mlflow_track
    return workflow
