"""Render the DolphinScheduler Shell task script that runs one tasks/<task>.py with parameter values.

DS 3.2.2 pastes every `${name}` of a task script as plain text before it runs the script with bash
(BaseLinuxShellInterceptorBuilder, ParameterUtils.convertParameterPlaceholders), so a parameter value is
untrusted text inside source code. The script keeps values out of every shell and every Python
literal:

    # comment header
    if [ -z "$PYTHON_LAUNCHER" ]; then ... exit 1; fi       check the DS environment
    exec "$PYTHON_LAUNCHER" -c '<bootstrap>' "$0"            bash stops reading the file here
    $<nonce> tasks.zip                                       data section, read only by the bootstrap
    <tasks/*.py, zipped, base64>
    $<nonce> git-commit
    <commit or empty line>
    $<nonce> 1 --dataset-name
    ${dataset_name}                                          DS pastes the value here
    ...
    $<nonce> end

`exec` replaces bash with Python, so bash never parses the lines after it, whatever DS pasted there.
The bootstrap reads the script file ($0), finds the marker lines by a random per-submission nonce,
unpacks the task scripts into the DS task's working directory and execs
`python tasks/<task>.py --option=value ...`, each value one argv element taken verbatim. The task's
own validators then reject implausible values with a message that names the option.

A marker line starts with '$' because DS also rewrites `$[...]` date expressions over the whole script
after pasting the values, and that pattern never matches across a '$'. A date expression inside one
value is still rewritten by DS: that changes the value, not the script.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO_ROOT / "tasks"

# Folder, relative to the DS task's working directory, that receives the unpacked task scripts.
UNPACK_DIR = "nlp_workflow_tasks"
GIT_COMMIT_ENV = "NLP_WORKFLOW_GIT_COMMIT"
DEFAULT_ENVIRONMENT = "nlp-workflow-python"

_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_OPTION = re.compile(r"^--[a-z0-9][a-z0-9-]*$")
# Names that end up in the fixed shell text exclude quotes, '$' and braces, so they stay inert.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")

# Placeholders, replaced with str.replace, because the code contains braces of its own.
_BOOTSTRAP_TEMPLATE = """
import base64, io, os, sys, zipfile
NONCE = @NONCE@
TASK = @TASK@
OPTIONS = @OPTIONS@
def fail(message):
    sys.stderr.write("ERROR: task script of " + TASK + ": " + message + chr(10))
    sys.exit(2)
with open(sys.argv[1], "rb") as handle:
    text = handle.read().decode("utf-8", "surrogateescape")
if not text.endswith(chr(10)):
    text += chr(10)
names = ["tasks.zip", "git-commit"] + [str(i + 1) + " " + option for i, option in enumerate(OPTIONS)] + ["end"]
bounds = []
position = 0
for name in names:
    marker = chr(10) + chr(36) + NONCE + " " + name + chr(10)
    if text.count(marker) != 1:
        fail("the marker line for " + name + " occurs " + str(text.count(marker)) + " times instead of once; "
             + "a parameter value that contains a marker line is rejected")
    start = text.find(marker, position)
    if start < 0:
        fail("the marker line for " + name + " is out of order")
    position = start + len(marker)
    bounds.append((start, position))
sections = [text[bounds[i][1]:bounds[i + 1][0]] for i in range(len(bounds) - 1)]
archive, commit, values = sections[0], sections[1].strip(), sections[2:]
folder = os.path.abspath(@UNPACK_DIR@)
with zipfile.ZipFile(io.BytesIO(base64.b64decode("".join(archive.split())))) as bundle:
    bundle.extractall(folder)
argv = [sys.executable, "-u", os.path.join(folder, TASK + ".py")]
for option, value in zip(OPTIONS, values):
    if chr(0) in value:
        fail("the value for " + option + " contains a NUL character")
    argv.append(option + "=" + value)
if commit:
    os.environ[@COMMIT_ENV@] = commit
sys.stderr.write("running tasks/" + TASK + ".py with " + str(len(OPTIONS)) + " options from the workflow" + chr(10))
sys.stderr.flush()
os.execv(sys.executable, argv)
"""


def bundle_tasks(tasks_dir: Path = TASKS_DIR) -> bytes:
    """Zip every tasks/*.py with fixed timestamps, so the same code gives the same archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(tasks_dir.glob("*.py")):
            info = zipfile.ZipInfo(path.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            bundle.writestr(info, path.read_bytes())
    return buffer.getvalue()


def detect_git_commit(repo: Path = REPO_ROOT) -> str:
    """Return HEAD's commit, with '-dirty' when tasks/ differs from it, or '' when unknown."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "tasks"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    if not re.fullmatch(r"[0-9a-f]{7,64}", head):
        return ""
    return head + "-dirty" if changes else head


def _header(task: str, workflow: str, environment_name: str) -> list[str]:
    missing = (
        f"ERROR: PYTHON_LAUNCHER is not set. Give task {task} the DolphinScheduler environment "
        f"{environment_name}, which ./init_pyds.sh creates with export PYTHON_LAUNCHER=<python with the task "
        "dependencies>, or pass pyds.py --environment NAME for another environment that exports it."
    )
    not_found = (
        f"is not an executable python. Fix the config of the DolphinScheduler environment {environment_name} "
        "(rerun ./init_pyds.sh with PYTHON_LAUNCHER set)."
    )
    return [
        f"# Task {task} of workflow {workflow}: runs tasks/{task}.py with the workflow parameters.",
        f"# Generated by pyds.py (workflows/task_script.py); edit tasks/{task}.py and submit again instead.",
        "# Bash runs the lines up to exec. The lines after it are data that the Python bootstrap reads:",
        "# the zipped task scripts, the git commit, and one value per command line option.",
        'if [ -z "$PYTHON_LAUNCHER" ]; then',
        f"    echo '{missing}' >&2",
        "    exit 1",
        "fi",
        'if ! command -v "$PYTHON_LAUNCHER" >/dev/null 2>&1; then',
        f"    echo \"ERROR: PYTHON_LAUNCHER=$PYTHON_LAUNCHER\" '{not_found}' >&2",
        "    exit 1",
        "fi",
    ]


def _bootstrap(task: str, options: Sequence[str], nonce: str) -> str:
    code = (
        _BOOTSTRAP_TEMPLATE.replace("@NONCE@", json.dumps(nonce))
        .replace("@TASK@", json.dumps(task))
        .replace("@OPTIONS@", json.dumps(list(options)))
        .replace("@UNPACK_DIR@", json.dumps(UNPACK_DIR))
        .replace("@COMMIT_ENV@", json.dumps(GIT_COMMIT_ENV))
    )
    # Bash keeps single-quoted text as is, and DS rewrites only text that starts with '$'.
    if "'" in code or "$" in code:
        raise AssertionError("the bootstrap must contain no single quote and no dollar sign")
    return code.strip()


def render_task_script(
    task: str,
    options: Sequence[tuple[str, str]],
    *,
    workflow: str,
    environment_name: str = DEFAULT_ENVIRONMENT,
    tasks_dir: Path = TASKS_DIR,
    git_commit: str = "",
    nonce: str | None = None,
) -> str:
    """Render the Shell task script that runs tasks/<task>.py with the given options.

    `options` pairs each command line option with its value text: a placeholder such as
    `${epochs}` that DS replaces at run time, or a literal. Raises ValueError for a task, option or
    name that could not be placed in the script safely, and FileNotFoundError for a missing task file.
    """
    if not _TASK_NAME.match(task):
        raise ValueError(f"invalid task name {task!r}; expected lowercase letters, digits and '_'")
    for name, label in ((workflow, "workflow"), (environment_name, "environment")):
        if not _SAFE_NAME.match(name):
            raise ValueError(f"invalid {label} name {name!r}; expected letters, digits, spaces, '.', '_' or '-'")
    if not (tasks_dir / f"{task}.py").is_file():
        raise FileNotFoundError(f"{tasks_dir / f'{task}.py'} not found; the workflow task {task} runs it")
    if not re.fullmatch(r"[0-9a-zA-Z-]{0,80}", git_commit):
        raise ValueError(f"invalid git commit {git_commit!r}")
    for option, value in options:
        if not _OPTION.match(option):
            raise ValueError(f"invalid option {option!r}; expected --lowercase-words")
        if "\r" in value:
            # DS turns CR LF into LF in the script before it pastes the values.
            raise ValueError(f"the value text for {option} contains a carriage return")

    nonce = nonce or secrets.token_hex(16)
    if not re.fullmatch(r"[0-9a-f]{16,64}", nonce):
        raise ValueError("the nonce must be 16 to 64 lowercase hex digits")
    option_names = [option for option, _ in options]

    lines = _header(task, workflow, environment_name)
    lines.append(f"exec \"$PYTHON_LAUNCHER\" -c '{_bootstrap(task, option_names, nonce)}' \"$0\"")

    def marker(name: str) -> str:
        return "$" + nonce + " " + name

    encoded = base64.b64encode(bundle_tasks(tasks_dir)).decode("ascii")
    lines.append(marker("tasks.zip"))
    lines.extend(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    lines.append(marker("git-commit"))
    lines.append(git_commit)
    # Only the value lines may hold DS placeholders: DS would rewrite one in the fixed text.
    fixed = "\n".join(lines)
    if "$" + "{" in fixed or "$[" in fixed:
        raise AssertionError("the fixed text of the task script contains a DS placeholder")

    for index, (option, value) in enumerate(options, start=1):
        lines.append(marker(f"{index} {option}"))
        lines.append(value)
    lines.append(marker("end"))
    return "\n".join(lines) + "\n"
