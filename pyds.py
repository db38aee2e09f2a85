#!/usr/bin/env python
"""Submit the NLP workflows to DolphinScheduler (DS), start them with parameters, and follow a run.

  python pyds.py                                 submit both workflows (train and deploy)
  python pyds.py --workflow train                submit one of them
  python pyds.py --workflow train --param workspace=/shared/nlp
                                                 submit with another default for a global parameter
  python pyds.py --start train --param epochs=1 --param max_samples=300 --wait
                                                 start a run of a submitted workflow and follow it

Submitting goes through the pydolphinscheduler Python gateway. Its address, port and auth token come from
the pydolphinscheduler config file ($PYDS_HOME/config.yaml, written by ./init_pyds.sh) or from the
variables PYDS_JAVA_GATEWAY_ADDRESS, PYDS_JAVA_GATEWAY_PORT and PYDS_JAVA_GATEWAY_AUTH_TOKEN; the user,
project and worker group come from the same file (or PYDS_USER_NAME, PYDS_WORKFLOW_PROJECT, ...).

Starting goes through the REST API at DS_API_URL (default http://127.0.0.1:<port>/dolphinscheduler, the
port from $DS_HOME/run/ports.env of the running server, else 12345), logged in as DS_USER / DS_PASSWORD
(default: the user and password in the pydolphinscheduler config).

Exit status: 0 success; 1 the run failed, stopped, or --wait-timeout passed; 2 invalid arguments;
3 DS is unreachable or rejected a request.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

from workflows.params import WORKFLOW_NAMES, WORKFLOW_PARAMS, ParamError, check_names, parse_assignment

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_DS_HOME = Path.home() / ".local/share/nlp-dolphinscheduler/3.2.2"
DEFAULT_ENVIRONMENT = "nlp-workflow-python"
START_HINT = "Start DolphinScheduler with scripts/dolphinscheduler.sh start, then run ./init_pyds.sh."

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class Unavailable(RuntimeError):
    """DS could not be reached or rejected a request. The message states what to do next."""


def parameters_epilog() -> str:
    lines = ["global parameters (--param NAME=VALUE):"]
    for workflow, params in WORKFLOW_PARAMS.items():
        lines.append(f"  {workflow} ({WORKFLOW_NAMES[workflow]}):")
        for param in params:
            text = f"{param.help} [default: {param.default}]"
            wrapped = textwrap.wrap(text, width=78, initial_indent=f"    {param.name:<18} ", subsequent_indent=" " * 23)
            lines.extend(wrapped)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyds.py", description=__doc__, epilog=parameters_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workflow", choices=sorted(WORKFLOW_PARAMS),
                        help="submit only this workflow (default: both)")
    parser.add_argument("--start", choices=sorted(WORKFLOW_PARAMS), metavar="{train,deploy}",
                        help="start a run of this submitted workflow instead of submitting")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="global parameter value: the run's value with --start, else the default stored in "
                             "the submitted workflow; repeat for several")

    parser.add_argument("--wait", action="store_true",
                        help="with --start: follow the task states until the run ends; the exit status tells "
                             "success (0) or failure (1)")
    parser.add_argument("--wait-timeout", type=positive_float, default=43200.0, metavar="SECONDS",
                        help="with --wait: give up after this many seconds, exit status 1 (default: %(default)s)")
    parser.add_argument("--poll-interval", type=positive_float, default=5.0, metavar="SECONDS",
                        help="with --wait: seconds between state queries (default: %(default)s)")
    parser.add_argument("--log-lines", type=int, default=40, metavar="N",
                        help="with --wait: log lines printed for each failed task (default: %(default)s)")

    parser.add_argument("--worker-group", default=None,
                        help="worker group of the tasks (default: default.workflow.worker_group of the "
                             "pydolphinscheduler config); with --start, the run's worker group")
    parser.add_argument("--train-worker-group", default=None,
                        help="worker group of the train task only, such as a GPU group (default: --worker-group)")
    parser.add_argument("--environment", default=os.environ.get("DS_ENVIRONMENT", DEFAULT_ENVIRONMENT),
                        help="DS environment of the tasks; its config must export PYTHON_LAUNCHER (default: "
                             "DS_ENVIRONMENT or %(default)s, which ./init_pyds.sh creates)")
    parser.add_argument("--train-environment", default=None,
                        help="DS environment of the train task only (default: --environment)")

    parser.add_argument("--tenant", default=None,
                        help="with --start: tenant that runs the tasks (default: default.user.tenant of the "
                             "pydolphinscheduler config)")
    parser.add_argument("--connect-timeout", type=positive_float, default=5.0, metavar="SECONDS",
                        help="seconds to wait for the gateway or REST API to accept a connection (default: %(default)s)")
    return parser


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the options; `params` becomes a dict of NAME -> VALUE."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.start and args.workflow:
        parser.error("--start submits nothing; use --workflow to submit and --start to run, in two calls")
    if (args.wait or args.tenant) and not args.start:
        parser.error("--wait and --tenant need --start")
    if args.log_lines < 0:
        parser.error("--log-lines must be 0 or more")
    try:
        args.params = dict(parse_assignment(text) for text in args.param)
        if args.start:
            check_names(args.start, args.params)
        else:
            targets = [args.workflow] if args.workflow else sorted(WORKFLOW_PARAMS)
            known = {param.name for workflow in targets for param in WORKFLOW_PARAMS[workflow]}
            unknown = sorted(set(args.params) - known)
            if unknown:
                raise ParamError(f"unknown parameter(s) {', '.join(unknown)} for {' and '.join(targets)}; see --help")
    except ParamError as error:
        parser.error(str(error))
    return args


# ---------------------------------------------------------------------------------------------------------
# Submit through the Python gateway


def check_gateway(address: str, port: int, timeout: float) -> None:
    """Fail within `timeout` seconds when nothing accepts connections at the gateway address.

    py4j connects without a timeout, so an unreachable address would otherwise hang for minutes.
    """
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise Unavailable(
            f"cannot reach the DolphinScheduler Python gateway at {address}:{port} ({reason}). {START_HINT} "
            "The address and port come from java_gateway.address and java_gateway.port of the pydolphinscheduler "
            "config, or from PYDS_JAVA_GATEWAY_ADDRESS and PYDS_JAVA_GATEWAY_PORT."
        ) from None


def submit(args: argparse.Namespace) -> int:
    try:
        from pydolphinscheduler import configuration
    except ImportError:
        raise SystemExit(
            f"error: pydolphinscheduler is not installed for {sys.executable}. Run pyds.py with the project's "
            "environment: .venv/bin/python pyds.py (after make venv), or source .venv/bin/activate first."
        ) from None

    check_gateway(configuration.JAVA_GATEWAY_ADDRESS, configuration.JAVA_GATEWAY_PORT, args.connect_timeout)
    # Imported after the check: importing pydolphinscheduler's gateway module connects to it.
    from py4j.protocol import Py4JError
    from pydolphinscheduler.exceptions import PyDSBaseException

    from workflows import deploy, train
    from workflows.task_script import detect_git_commit

    worker_group = args.worker_group or configuration.WORKFLOW_WORKER_GROUP
    commit = detect_git_commit()
    targets = [args.workflow] if args.workflow else ["train", "deploy"]
    for name in targets:
        overrides = {key: value for key, value in args.params.items()
                     if key in {param.name for param in WORKFLOW_PARAMS[name]}}
        try:
            if name == "train":
                workflow = train.create_workflow(
                    worker_group=worker_group, environment_name=args.environment,
                    train_worker_group=args.train_worker_group, train_environment_name=args.train_environment,
                    param_overrides=overrides, git_commit=commit)
            else:
                workflow = deploy.create_workflow(
                    worker_group=worker_group, environment_name=args.environment,
                    param_overrides=overrides, git_commit=commit)
            code = workflow.submit()
        except (Py4JError, PyDSBaseException) as error:
            raise Unavailable(
                f"the Python gateway at {configuration.JAVA_GATEWAY_ADDRESS}:{configuration.JAVA_GATEWAY_PORT} "
                f"failed to submit workflow {WORKFLOW_NAMES[name]}: {error}. Check java_gateway.auth_token and the "
                f"user in the pydolphinscheduler config (./init_pyds.sh writes them), and that environment "
                f"{args.environment!r} exists."
            ) from None
        print(f"submitted workflow {workflow.name} (code {code}) to project {workflow.project.name}"
              f" with git commit {commit or 'unknown'}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Start and follow through the REST API


def rest_url() -> str:
    if os.environ.get("DS_API_URL"):
        return os.environ["DS_API_URL"]
    port = "12345"
    ports_file = Path(os.environ.get("DS_HOME", DEFAULT_DS_HOME)) / "run" / "ports.env"
    if ports_file.is_file():
        for line in ports_file.read_text().splitlines():
            if line.startswith("DS_API_PORT="):
                port = line.partition("=")[2].strip() or port
    return f"http://127.0.0.1:{port}/dolphinscheduler"


def start(args: argparse.Namespace) -> int:
    from pydolphinscheduler import configuration

    from workflows.ds_rest import DolphinSchedulerApi, RestError, StartRequest, UnreachableError

    api = DolphinSchedulerApi(rest_url(), timeout=max(args.connect_timeout, 15.0))
    name = WORKFLOW_NAMES[args.start]
    project = configuration.WORKFLOW_PROJECT
    try:
        api.login(os.environ.get("DS_USER") or configuration.USER_NAME,
                  os.environ.get("DS_PASSWORD") or configuration.USER_PASSWORD)
        project_code = api.project_code(project)
        definition = api.workflow_definition(project_code, name)
        warn_on_stale_definition(args.start, definition)
        request = StartRequest(
            definition_code=int(definition["code"]),
            start_params=args.params,
            worker_group=args.worker_group or configuration.WORKFLOW_WORKER_GROUP,
            tenant_code=args.tenant or configuration.USER_TENANT,
        )
        trigger_code = api.start(project_code, request)
        print(f"started workflow {name} in project {project} (trigger code {trigger_code})"
              + (f" with {args.params}" if args.params else ""))
        instance = wait_for_instance(api, project_code, trigger_code, timeout=120.0 if args.wait else 10.0)
        if instance is None:
            if args.wait:
                print(f"no workflow instance appeared for trigger code {trigger_code} within 120 s; is a DS "
                      "master running?", file=sys.stderr)
                return EXIT_FAILED
            print("the workflow instance is not created yet; see the DS UI for its progress")
            return 0
        print(f"workflow instance {instance['id']}: {instance.get('state')}")
        if not args.wait:
            return 0
        return follow(api, project_code, int(instance["id"]), args)
    except UnreachableError as error:
        raise Unavailable(f"{error}. {START_HINT} Set DS_API_URL when the REST API is elsewhere.") from None
    except RestError as error:
        raise Unavailable(str(error)) from None


def warn_on_stale_definition(workflow: str, definition: dict) -> None:
    """Warn when the submitted workflow's global parameters differ from the ones in workflows/params.py."""
    submitted = {item.get("prop") for item in definition.get("globalParamList") or []}
    expected = {param.name for param in WORKFLOW_PARAMS[workflow]}
    if submitted and submitted != expected:
        print(f"WARNING: the submitted {WORKFLOW_NAMES[workflow]} has the global parameters {sorted(submitted)}, "
              f"this checkout defines {sorted(expected)}; submit again with python pyds.py --workflow {workflow}",
              file=sys.stderr)


def wait_for_instance(api, project_code: int, trigger_code: int, timeout: float) -> dict | None:
    """Return the workflow instance the start created, once the DS master has made it, or None."""
    deadline = time.monotonic() + timeout
    while True:
        instances = api.instances_by_trigger(project_code, trigger_code)
        if instances:
            return instances[0]
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)


# NOTE: the state and log JSON shapes read below follow the DS 3.2.2 controllers; this loop has not run
# against a live server yet.
def follow(api, project_code: int, instance_id: int, args: argparse.Namespace) -> int:
    """Print task state changes until the workflow instance ends; return the exit status."""
    from workflows.ds_rest import FAILED_TASK_STATES, FINISHED_WORKFLOW_STATES

    deadline = time.monotonic() + args.wait_timeout
    seen: dict[int, str] = {}
    while True:
        state, tasks = api.task_states(project_code, instance_id)
        for task in sorted(tasks, key=lambda item: item["id"]):
            if seen.get(task["id"]) != task["state"]:
                seen[task["id"]] = task["state"]
                retry = f" (retry {task['retryTimes']})" if task.get("retryTimes") else ""
                print(f"{time.strftime('%H:%M:%S')} {task['name']}: {task['state']}{retry}", flush=True)
        if state in FINISHED_WORKFLOW_STATES:
            break
        if time.monotonic() >= deadline:
            print(f"workflow instance {instance_id} is still {state} after {args.wait_timeout:.0f} s; "
                  "stopped waiting, the run goes on", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(args.poll_interval)

    print(f"workflow instance {instance_id}: {state}")
    if state == "SUCCESS":
        return 0
    for task in tasks:
        if task["state"] in FAILED_TASK_STATES and args.log_lines:
            print(f"---- last {args.log_lines} log lines of task {task['name']} (task instance {task['id']}) ----",
                  file=sys.stderr)
            for line in api.log_tail(int(task["id"]), args.log_lines):
                print(line, file=sys.stderr)
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return start(args) if args.start else submit(args)
    except Unavailable as error:
        print(f"pyds.py: ERROR: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
