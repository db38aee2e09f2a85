"""Start a DolphinScheduler workflow with parameters and follow its run, through the REST API.

pydolphinscheduler's own start call sends no parameters, so pyds.py starts runs the way the DS UI does.
Endpoints and form fields follow the DolphinScheduler 3.2.2 controllers: LoginController,
ProjectController, ProcessDefinitionController (query-by-name), ExecutorController
(start-process-instance), ProcessInstanceController (trigger, {id}/tasks) and LoggerController (detail).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

# WorkflowExecutionStatus values after which a workflow instance no longer changes (DS 3.2.2).
FINISHED_WORKFLOW_STATES = {"SUCCESS", "FAILURE", "STOP", "PAUSE", "BLOCK"}
# TaskExecutionStatus values of a task that failed or was ended from outside.
FAILED_TASK_STATES = {"FAILURE", "NEED_FAULT_TOLERANCE", "KILL", "STOP", "PAUSE"}


class RestError(RuntimeError):
    """A REST call failed, or DS returned a non-zero result code."""


class UnreachableError(RestError):
    """The REST API could not be reached at all."""


@dataclass(frozen=True)
class StartRequest:
    """The form fields of one start-process-instance call."""

    definition_code: int
    start_params: dict[str, str]
    worker_group: str
    tenant_code: str
    environment_code: int | None = None

    def fields(self) -> dict[str, str]:
        fields = {
            "processDefinitionCode": str(self.definition_code),
            # Required by the controller; empty means "now" for a plain start.
            "scheduleTime": "",
            "failureStrategy": "END",
            "warningType": "NONE",
            "execType": "START_PROCESS",
            "startParams": json.dumps(self.start_params, ensure_ascii=False),
            "workerGroup": self.worker_group,
            "tenantCode": self.tenant_code,
        }
        # Each task carries its own environment; -1 (the DS default) leaves it to them.
        if self.environment_code is not None:
            fields["environmentCode"] = str(self.environment_code)
        return fields


class DolphinSchedulerApi:
    """Form-encoded client for the DS REST API, logged in with a session id."""

    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session_id: str | None = None

    def call(self, method: str, path: str, fields: dict[str, Any] | None = None) -> Any:
        """Send one request and return the `data` member of the DS result."""
        url = self.base_url + path
        encoded = urllib.parse.urlencode(fields or {})
        body = None
        if method == "GET":
            url = f"{url}?{encoded}" if encoded else url
        else:
            body = encoded.encode()
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        request.add_header("Accept", "application/json")
        if self.session_id:
            request.add_header("sessionId", self.session_id)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise RestError(f"{method} {url} failed with HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise UnreachableError(f"cannot reach the DolphinScheduler REST API at {url}: {reason}") from None
        except json.JSONDecodeError as error:
            raise RestError(f"{method} {url} returned a body that is not JSON: {error}") from None
        if not isinstance(payload, dict) or payload.get("code") != 0:
            code = payload.get("code") if isinstance(payload, dict) else None
            message = payload.get("msg") if isinstance(payload, dict) else payload
            raise RestError(f"{method} {path} returned code {code}: {message}")
        return payload.get("data")

    def login(self, user: str, password: str) -> None:
        data = self.call("POST", "/login", {"userName": user, "userPassword": password})
        self.session_id = data["sessionId"]

    def project_code(self, project: str) -> int:
        names = []
        for item in self.call("GET", "/projects/list") or []:
            if item["name"] == project:
                return int(item["code"])
            names.append(item["name"])
        raise RestError(f"project {project!r} not found; projects visible to this user: {names or 'none'}. "
                        "Run ./init_pyds.sh, then python pyds.py to submit the workflows.")

    def workflow_definition(self, project_code: int, name: str) -> dict:
        """Return the `processDefinition` of the named workflow (DagData in DS 3.2.2)."""
        try:
            dag = self.call("GET", f"/projects/{project_code}/process-definition/query-by-name", {"name": name})
        except UnreachableError:
            raise
        except RestError as error:
            raise RestError(f"workflow {name!r} not found in the project ({error}); submit it first: "
                            "python pyds.py") from None
        return dag["processDefinition"]

    def start(self, project_code: int, request: StartRequest) -> int:
        """Start a workflow instance and return its trigger code."""
        data = self.call("POST", f"/projects/{project_code}/executors/start-process-instance", request.fields())
        return int(data)

    def instances_by_trigger(self, project_code: int, trigger_code: int) -> list[dict]:
        return self.call("GET", f"/projects/{project_code}/process-instances/trigger",
                         {"triggerCode": trigger_code}) or []

    def task_states(self, project_code: int, instance_id: int) -> tuple[str, list[dict]]:
        """Return the workflow instance state and its task instances."""
        data = self.call("GET", f"/projects/{project_code}/process-instances/{instance_id}/tasks")
        return data["processInstanceState"], data["taskList"] or []

    def log_tail(self, task_instance_id: int, lines: int, page_size: int = 1000, max_pages: int = 200) -> list[str]:
        """Return the last `lines` lines of a task instance log, reading it page by page."""
        tail: list[str] = []
        skip = 0
        for _ in range(max_pages):
            data = self.call("GET", "/log/detail",
                             {"taskInstanceId": task_instance_id, "skipLineNum": skip, "limit": page_size})
            page = (data or {}).get("message") or ""
            page_lines = page.splitlines()
            tail = (tail + page_lines)[-lines:]
            if len(page_lines) < page_size:
                break
            skip += len(page_lines)
        return tail
