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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workflows.ds_rest import DolphinSchedulerApi, RestError  # noqa: E402 - the repository root is put on the path above


def ensure_tenant(admin: DolphinSchedulerApi, tenant_code: str, queue_name: str) -> int:
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


def ensure_user(admin: DolphinSchedulerApi, name: str, password: str, tenant_id: int, queue: str) -> None:
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


def ensure_project(owner: DolphinSchedulerApi, project_name: str) -> int:
    """Return the code of the project visible to the logged-in user, creating it when missing."""
    for project in owner.call("GET", "/projects/list"):
        if project["name"] == project_name:
            print(f"project {project_name!r} exists (code {project['code']})")
            return project["code"]
    project = owner.call("POST", "/projects", {"projectName": project_name, "description": "NLP workflows"})
    print(f"created project {project_name!r} (code {project['code']})")
    return project["code"]


def ensure_environment(admin: DolphinSchedulerApi, name: str, config: str, worker_group: str) -> int:
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
        admin = DolphinSchedulerApi(api_url)
        admin.login(admin_user, admin_password)
        tenant_id = ensure_tenant(admin, env["DS_TENANT"], env["DS_QUEUE"])
        owner = admin
        if user != admin_user:
            ensure_user(admin, user, password, tenant_id, env["DS_QUEUE"])
            owner = DolphinSchedulerApi(api_url)
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
