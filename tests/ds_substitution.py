"""How the DolphinScheduler 3.2.2 worker turns a Shell task's raw script into the file it runs.

It pastes `${name}` values as plain text, recursively, and leaves unknown names alone; a circular
reference fails (PropertyPlaceholderHelper). Then it rewrites `$[...]` date expressions. Last, it writes a
header, a cd to the script's folder and the environment config before the script. Tests use these
functions to run rendered task scripts under bash the way a worker would.
"""

from __future__ import annotations

import re
from pathlib import Path


def ds_substitute(text: str, params: dict[str, str], visiting: tuple[str, ...] = ()) -> str:
    """Replace `${name}` placeholders the way DS 3.2.2 does: as plain text, recursively into values,
    leaving unknown names alone and failing on a circular reference."""
    out = []
    index = 0
    while True:
        start = text.find("${", index)
        if start < 0:
            out.append(text[index:])
            return "".join(out)
        end = _placeholder_end(text, start)
        if end < 0:
            out.append(text[index:])
            return "".join(out)
        name = ds_substitute(text[start + 2:end], params, visiting)
        if name in visiting:
            raise ValueError(f"circular placeholder reference {name!r}")
        out.append(text[index:start])
        if name in params:
            out.append(ds_substitute(params[name], params, visiting + (name,)))
        else:
            out.append(text[start:end + 1])
        index = end + 1


def _placeholder_end(text: str, start: int) -> int:
    depth = 0
    index = start + 2
    while index < len(text):
        if text[index] == "}":
            if depth == 0:
                return index
            depth -= 1
        elif text[index] == "{":
            depth += 1
        index += 1
    return -1


def ds_date_expressions(text: str) -> str:
    """Rewrite `$[...]` as DS does after the placeholders (the date itself does not matter here)."""
    return re.sub(r"\$\[([^$\]]+)]", "20240101", text)


def ds_shell_file(folder: Path, script: str, launcher: str | None) -> Path:
    """Write the file the DS worker runs: header, cd to its folder, environment config, task script."""
    lines = ["#!/bin/bash", "BASEDIR=$(cd `dirname $0`; pwd)", "cd $BASEDIR"]
    if launcher is not None:
        lines.append(f"export PYTHON_LAUNCHER={launcher}")
    lines.append(script)
    path = folder / "task_1_1.sh"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogateescape")
    return path
