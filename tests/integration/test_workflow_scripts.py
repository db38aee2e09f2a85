"""The submitted task scripts of both workflows, run under bash in DAG order the way a DS worker runs them.

Each task's raw script comes from the workflow definition that pyds.py submits. Parameter values are
pasted in as DS 3.2.2 pastes them, and each task's `${setValue(...)}` output lines become parameters of
the tasks after it, like DS's varPool. The MLflow server and the prediction service are real; only the
DolphinScheduler scheduler itself is absent, so the workflows' structure and hand-over are checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import PYTHON
from ds_substitution import ds_date_expressions, ds_shell_file, ds_substitute
from serving_fixtures import run_predict_service

pytestmark = pytest.mark.integration

OUTPUT_LINE = re.compile(r"^\$\{setValue\(([A-Za-z_][A-Za-z0-9_]*)=(.*)\)\}$", re.MULTILINE)
ADMIN_TOKEN = "workflow-scripts-test-token"


def run_workflow(workflow, params: dict[str, str], work_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """Run every task of `workflow` in order, passing output parameters on; return the final parameters."""
    params = dict(params)
    order = [task["name"] for task in workflow.task_definition_json]
    scripts = {task["name"]: task["taskParams"]["rawScript"] for task in workflow.task_definition_json}
    for number, name in enumerate(order, start=1):
        params["system.task.instance.id"] = str(9000 + number)
        folder = work_dir / name
        folder.mkdir(parents=True)
        script = ds_date_expressions(ds_substitute(scripts[name], params))
        path = ds_shell_file(folder, script, PYTHON)
        result = subprocess.run(["bash", str(path)], cwd=folder, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"task {name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        params.update(dict(OUTPUT_LINE.findall(result.stdout)))
    return params


def test_train_and_deploy_scripts_in_dag_order(tmp_path, offline_gateway, mlflow_server, topic_folder,
                                               tiny_model_dir):
    from mlflow.tracking import MlflowClient

    from workflows import deploy, train

    env = {key: value for key, value in os.environ.items() if key != "PYTHON_LAUNCHER"}
    env["PREDICT_ADMIN_TOKEN"] = ADMIN_TOKEN
    workspace = tmp_path / "workspace"

    train_workflow = train.create_workflow(worker_group="default", git_commit="abc1234")
    assert [task["name"] for task in train_workflow.task_definition_json] == ["preprocess", "train", "mlflow_track"]
    train_params = {param["prop"]: param["value"] for param in train_workflow.param_json} | {
        "dataset_name": str(topic_folder),
        "pretrained_model": str(tiny_model_dir),
        "remote_server_uri": mlflow_server,
        "model_name": "workflow-scripts-it",
        "max_seq_length": "32",
        "workspace": str(workspace),
        "system.workflow.instance.id": "4242",
    }
    trained = run_workflow(train_workflow, train_params, tmp_path / "train-tasks", env)
    assert trained["model_version"] == "1"
    assert (workspace / "4242" / "mlflow_track.json").is_file()
    client = MlflowClient(mlflow_server)
    version = client.get_model_version("workflow-scripts-it", "1")
    assert version.tags["ds_workflow_instance_id"] == "4242"
    assert version.tags["ds_task_instance_id"] == "9003"
    assert version.tags["git_commit"] == "abc1234"
    client.set_registered_model_alias("workflow-scripts-it", "production", "1")

    service_env = {"PREDICT_ADMIN_TOKEN": ADMIN_TOKEN, "PREDICT_TORCH_THREADS": "1"}
    with run_predict_service(tmp_path, service_env) as service_url:
        deploy_workflow = deploy.create_workflow(worker_group="default", git_commit="abc1234")
        deploy_params = {param["prop"]: param["value"] for param in deploy_workflow.param_json} | {
            "remote_server_uri": mlflow_server,
            "model_name": "workflow-scripts-it",
            "model_version": "production",
            "service_url": service_url,
            "models_dir": str(tmp_path / "models"),
            "workspace": str(workspace),
            "system.workflow.instance.id": "4343",
        }
        deployed = run_workflow(deploy_workflow, deploy_params, tmp_path / "deploy-tasks", env)
        assert deployed["fetched_model_version"] == "1"
        assert deployed["deployed_model_version"] == "1"
        answer = httpx.get(f"{service_url}/predict", params={"text": "the keeper saved a penalty"}).json()
    assert answer["predictions"][0]["model_name"] == "workflow-scripts-it"
    assert answer["predictions"][0]["model_version"] == "1"
    assert answer["predictions"][0]["label"] in {"business", "politics", "sports"}
