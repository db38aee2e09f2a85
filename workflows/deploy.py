"""Deploy workflow: put a registered model version into the prediction service and check its predictions.

    fetch_model ──> check_service ──> update_model ──> test_service

- fetch_model: resolve `model_name` / `model_version` (number, alias or latest) in MLflow and download it
  into <models_dir>/<model name>/<version>/; outputs `model_dir` and `fetched_model_version` (the number)
- check_service: wait until `service_url` responds to /health
- update_model: make the service load `model_dir`; the admin token comes from PREDICT_ADMIN_TOKEN,
  which the DS environment exports, never from a parameter
- test_service: classify sample texts and fail unless the answers name a known label and the version
  that fetch_model resolved

Global parameters and their defaults are in workflows/params.py.
"""

from __future__ import annotations

from pathlib import Path

from pydolphinscheduler import configuration
from pydolphinscheduler.core.workflow import Workflow
from pydolphinscheduler.tasks.shell import Shell

from workflows.params import DEPLOY_WORKFLOW, WORKFLOW_INSTANCE_ID, global_params, placeholder
from workflows.task_script import DEFAULT_ENVIRONMENT, TASKS_DIR, detect_git_commit, render_task_script

# Every task talks to MLflow or the prediction service: (timeout in minutes, retries after a failure).
FETCH_MODEL = (30, 2)
CHECK_SERVICE = (5, 3)
UPDATE_MODEL = (15, 2)
TEST_SERVICE = (5, 2)
# Minutes between retries.
RETRY_INTERVAL = 1


def create_workflow(
    *,
    worker_group: str = configuration.WORKFLOW_WORKER_GROUP,
    environment_name: str = DEFAULT_ENVIRONMENT,
    param_overrides: dict[str, str] | None = None,
    tasks_dir: Path = TASKS_DIR,
    git_commit: str | None = None,
) -> Workflow:
    """Define the deploy workflow. Submitting it is the caller's step.

    Creating the tasks requests task codes from the DS Python gateway, so it needs a reachable gateway.
    """
    params = global_params("deploy", param_overrides)
    commit = detect_git_commit() if git_commit is None else git_commit
    param = placeholder

    def script(task: str, options: list[tuple[str, str]]) -> str:
        return render_task_script(task, options, workflow=DEPLOY_WORKFLOW, environment_name=environment_name,
                                  tasks_dir=tasks_dir, git_commit=commit)

    def network_task(name: str, options: list[tuple[str, str]], limits: tuple[int, int], **extra) -> Shell:
        timeout, retries = limits
        return Shell(
            name=name,
            command=script(name, options),
            worker_group=worker_group,
            environment_name=environment_name,
            timeout=timeout,
            timeout_notify_strategy="FAILED",
            fail_retry_times=retries,
            fail_retry_interval=RETRY_INTERVAL,
            **extra,
        )

    with Workflow(
        name=DEPLOY_WORKFLOW,
        description="Deploy a registered model version to the prediction service and test it (pyds.py)",
        param=params,
        worker_group=worker_group,
    ) as workflow:
        fetch_model = network_task("fetch_model", [
            ("--remote-server-uri", param("remote_server_uri")),
            ("--model-name", param("model_name")),
            ("--model-version", param("model_version")),
            ("--models-dir", param("models_dir")),
            ("--workspace", param("workspace")),
            ("--run-key", param(WORKFLOW_INSTANCE_ID)),
        ], FETCH_MODEL, output_params={"model_dir": "", "fetched_model_version": ""})

        check_service = network_task("check_service", [
            ("--service-url", param("service_url")),
        ], CHECK_SERVICE)

        update_model = network_task("update_model", [
            ("--service-url", param("service_url")),
            ("--model-dir", param("model_dir")),
            ("--workspace", param("workspace")),
            ("--run-key", param(WORKFLOW_INSTANCE_ID)),
        ], UPDATE_MODEL)

        # fetch_model's number, not the model_version parameter: a start parameter outranks an upstream
        # output of the same name in DS 3.2.2 (CuringParamsServiceImpl), and the parameter may be an alias.
        test_service = network_task("test_service", [
            ("--service-url", param("service_url")),
            ("--model-name", param("model_name")),
            ("--model-version", param("fetched_model_version")),
        ], TEST_SERVICE)

        fetch_model >> check_service >> update_model >> test_service
    return workflow
