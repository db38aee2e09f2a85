"""Create the tenant, user, project and environment that the NLP workflows need in DolphinScheduler.

Every step first looks the object up and only creates or updates it when it is missing or differs,
so running this twice changes nothing the second time. Endpoints and form fields follow the
DolphinScheduler 3.2.2 REST controllers (LoginController, TenantController, QueueController,
UsersController, ProjectController, EnvironmentController).

Settings come from the environment; init_pyds.sh documents them and sets the defaults.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class RestError(RuntimeError):
    """A DolphinScheduler REST call failed or returned a non-zero code."""


class DolphinSchedulerRest:
    """Minimal form-encoded client for the DolphinScheduler REST API with a login session."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session_id: str | None = None

    def call(self, method: str, path: str, fields: dict[str, Any] | None = None) -> Any:
        """Send one request and return the `data` member of the DolphinScheduler result."""
        url = f"{self.base_url}{path}"
        body = None
        encoded = urllib.parse.urlencode(fields or {})
        if method == "GET":
            if encoded:
                url = f"{url}?{encoded}"
        else:
            body = encoded.encode()
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        if self.session_id:
            request.add_header("sessionId", self.session_id)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise RestError(f"{method} {url} failed with HTTP {error.code}: {detail}") from error
        except urllib.error.URLError as error:
            raise RestError(
                f"cannot reach {url}: {error.reason}. Is DolphinScheduler running "
                "(scripts/dolphinscheduler.sh status) and is DS_API_URL right?"
            ) from error
        if payload.get("code") != 0:
            raise RestError(f"{method} {path} returned code {payload.get('code')}: {payload.get('msg')}")
        return payload.get("data")

    def login(self, user: str, password: str) -> None:
        data = self.call("POST", "/login", {"userName": user, "userPassword": password})
        self.session_id = data["sessionId"]


def ensure_tenant(admin: DolphinSchedulerRest, tenant_code: str, queue_name: str) -> int:
    """Return the id of the tenant, creating it on the named queue when missing."""
    for tenant in admin.call("GET", "/tenants/list"):
        if tenant["tenantCode"] == tenant_code:
            print(f"tenant {tenant_code!r} exists (id {tenant['id']})")
            return tenant["id"]

    queues = {queue["queueName"]: queue["id"] for queue in admin.call("GET", "/queues/list")}
    if queue_name not in queues:
        raise RestError(f"queue {queue_name!r} not found; existing queues: {sorted(queues)}")
    tenant = admin.call(
        "POST",
        "/tenants",
        {"tenantCode": tenant_code, "queueId": queues[queue_name], "description": "NLP workflows"},
    )
    print(f"created tenant {tenant_code!r} (id {tenant['id']})")
    return tenant["id"]


def ensure_user(admin: DolphinSchedulerRest, name: str, password: str, tenant_id: int, queue: str) -> None:
    """Create the workflow user when missing. An existing user is left unchanged."""
    page = admin.call("GET", "/users/list-paging", {"pageNo": 1, "pageSize": 100, "searchVal": name})
    if any(user["userName"] == name for user in page["totalList"]):
        print(f"user {name!r} exists")
        return
    admin.call(
        "POST",
        "/users/create",
        {
            "userName": name,
            "userPassword": password,
            "tenantId": tenant_id,
            "queue": queue,
            "email": f"{name}@localhost.localdomain",
            "state": 1,
        },
    )
    print(f"created user {name!r}")


def ensure_project(owner: DolphinSchedulerRest, project_name: str) -> int:
    """Return the code of the project visible to the logged-in user, creating it when missing."""
    for project in owner.call("GET", "/projects/list"):
        if project["name"] == project_name:
            print(f"project {project_name!r} exists (code {project['code']})")
            return project["code"]
    project = owner.call("POST", "/projects", {"projectName": project_name, "description": "NLP workflows"})
    print(f"created project {project_name!r} (code {project['code']})")
    return project["code"]


def ensure_environment(admin: DolphinSchedulerRest, name: str, config: str, worker_group: str) -> int:
    """Return the code of the environment, creating or updating it so that config and worker group match."""
    expected_groups = [worker_group]
    fields = {
        "name": name,
        "config": config,
        "description": "Python interpreter for the NLP workflow tasks",
        "workerGroups": json.dumps(expected_groups),
    }
    for environment in admin.call("GET", "/environment/query-environment-list"):
        if environment["name"] != name:
            continue
        code = environment["code"]
        if environment["config"] == config and sorted(environment.get("workerGroups") or []) == expected_groups:
            print(f"environment {name!r} exists and is up to date (code {code})")
            return code
        admin.call("POST", "/environment/update", {"code": code, **fields})
        print(f"updated environment {name!r} (code {code})")
        return code
    code = admin.call("POST", "/environment/create", fields)
    print(f"created environment {name!r} (code {code})")
    return code


def main() -> int:
    env = os.environ
    api_url = env["DS_API_URL"]
    admin_user, admin_password = env["DS_ADMIN_USER"], env["DS_ADMIN_PASSWORD"]
    user, password = env["DS_USER"], env["DS_PASSWORD"]

    try:
        admin = DolphinSchedulerRest(api_url)
        admin.login(admin_user, admin_password)
        tenant_id = ensure_tenant(admin, env["DS_TENANT"], env["DS_QUEUE"])
        owner = admin
        if user != admin_user:
            ensure_user(admin, user, password, tenant_id, env["DS_QUEUE"])
            owner = DolphinSchedulerRest(api_url)
            owner.login(user, password)
        ensure_project(owner, env["DS_PROJECT"])
        ensure_environment(
            admin,
            env["DS_ENVIRONMENT"],
            f"export PYTHON_LAUNCHER={shlex.quote(env['PYTHON_LAUNCHER'])}",
            env["DS_WORKER_GROUP"],
        )
    except (RestError, KeyError) as error:
        print(f"init_pyds: DolphinScheduler setup failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
