#!/usr/bin/env bash
# Configure pydolphinscheduler and create the DolphinScheduler objects the NLP workflows use.
#
# Idempotent: a second run finds everything in place, changes nothing and exits 0.
# Needs a running DolphinScheduler (scripts/dolphinscheduler.sh start).
#
# Settings (environment variable, default):
#   DS_HOME          DolphinScheduler install folder    $HOME/.local/share/nlp-dolphinscheduler/3.2.2
#   DS_API_URL       REST base URL                      http://127.0.0.1:<DS_API_PORT>/dolphinscheduler
#                    (DS_API_PORT from $DS_HOME/run/ports.env of the running server, else 12345)
#   DS_ADMIN_USER    REST login used to create objects  admin
#   DS_ADMIN_PASSWORD                                   dolphinscheduler123 (the standalone default)
#   DS_USER          user that owns the project and submits workflows   same as DS_ADMIN_USER
#   DS_PASSWORD      its password (created when DS_USER does not exist) same as DS_ADMIN_PASSWORD
#   DS_TENANT        tenant                             default
#                    With sudo disabled, the worker runs tasks of tenant `default` as the user that
#                    started the server; any other tenant must be an existing OS user.
#   DS_QUEUE         queue of the tenant and user       default
#   DS_PROJECT       project                            nlp-workflow
#   DS_WORKER_GROUP  worker group                       default
#   DS_ENVIRONMENT   environment name                   nlp-workflow-python
#   PYTHON_LAUNCHER  python with the task dependencies  <repo>/.venv/bin/python
#   DS_GATEWAY_HOST  Python gateway address             127.0.0.1
#   DS_GATEWAY_PORT  Python gateway port                from ports.env, else 25333
#   DS_GATEWAY_TOKEN Python gateway auth token          contents of $DS_HOME/gateway.token
#   PYDS_HOME        pydolphinscheduler config folder   $HOME/pydolphinscheduler (pydolphinscheduler's default)
#   DS_PYTHON        python that runs pydolphinscheduler and the REST setup   <repo>/.venv/bin/python
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export DS_HOME="${DS_HOME:-$HOME/.local/share/nlp-dolphinscheduler/3.2.2}"
PORTS_FILE="$DS_HOME/run/ports.env"
if [[ -f "$PORTS_FILE" ]]; then
    # Ports of the running server; explicit DS_API_PORT / DS_GATEWAY_PORT still win.
    saved_api_port="$(sed -n 's/^DS_API_PORT=//p' "$PORTS_FILE")"
    saved_gateway_port="$(sed -n 's/^DS_GATEWAY_PORT=//p' "$PORTS_FILE")"
fi
DS_API_PORT="${DS_API_PORT:-${saved_api_port:-12345}}"
DS_GATEWAY_PORT="${DS_GATEWAY_PORT:-${saved_gateway_port:-25333}}"

export DS_API_URL="${DS_API_URL:-http://127.0.0.1:$DS_API_PORT/dolphinscheduler}"
export DS_ADMIN_USER="${DS_ADMIN_USER:-admin}"
export DS_ADMIN_PASSWORD="${DS_ADMIN_PASSWORD:-dolphinscheduler123}"
export DS_USER="${DS_USER:-$DS_ADMIN_USER}"
export DS_PASSWORD="${DS_PASSWORD:-$DS_ADMIN_PASSWORD}"
export DS_TENANT="${DS_TENANT:-default}"
export DS_QUEUE="${DS_QUEUE:-default}"
export DS_PROJECT="${DS_PROJECT:-nlp-workflow}"
export DS_WORKER_GROUP="${DS_WORKER_GROUP:-default}"
export DS_ENVIRONMENT="${DS_ENVIRONMENT:-nlp-workflow-python}"
export PYTHON_LAUNCHER="${PYTHON_LAUNCHER:-$REPO_ROOT/.venv/bin/python}"
DS_GATEWAY_HOST="${DS_GATEWAY_HOST:-127.0.0.1}"
DS_PYTHON="${DS_PYTHON:-$REPO_ROOT/.venv/bin/python}"
export PYDS_HOME="${PYDS_HOME:-$HOME/pydolphinscheduler}"

die() { printf 'init_pyds: ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$DS_PYTHON" ]] || die "python not found at $DS_PYTHON. Create the project venv or set DS_PYTHON."
[[ -x "$PYTHON_LAUNCHER" ]] || die "PYTHON_LAUNCHER is not an executable file: $PYTHON_LAUNCHER"
PYDS_CLI="$(dirname "$DS_PYTHON")/pydolphinscheduler"
[[ -x "$PYDS_CLI" ]] || die "pydolphinscheduler CLI not found at $PYDS_CLI. Run: $DS_PYTHON -m pip install apache-dolphinscheduler==4.1.0"

if [[ -z "${DS_GATEWAY_TOKEN:-}" ]]; then
    [[ -r "$DS_HOME/gateway.token" ]] \
        || die "no gateway token: $DS_HOME/gateway.token is missing. Run scripts/dolphinscheduler.sh install, or set DS_GATEWAY_TOKEN."
    DS_GATEWAY_TOKEN="$(cat "$DS_HOME/gateway.token")"
fi

# 1. Objects in DolphinScheduler, through REST. The Python gateway cannot create environments.
"$DS_PYTHON" "$REPO_ROOT/scripts/ds_install/ds_rest_setup.py"

# 2. pydolphinscheduler configuration file ($PYDS_HOME/config.yaml).
config_file="$PYDS_HOME/config.yaml"
if [[ ! -f "$config_file" ]]; then
    "$PYDS_CLI" config --init
    echo "created $config_file"
fi
# The file contains the gateway token and the user's password.
chmod 600 "$config_file"

declare -A expected=(
    [java_gateway.address]="$DS_GATEWAY_HOST"
    [java_gateway.port]="$DS_GATEWAY_PORT"
    [java_gateway.auth_token]="$DS_GATEWAY_TOKEN"
    [default.user.name]="$DS_USER"
    [default.user.password]="$DS_PASSWORD"
    [default.user.tenant]="$DS_TENANT"
    [default.workflow.project]="$DS_PROJECT"
    [default.workflow.user]="$DS_USER"
    [default.workflow.queue]="$DS_QUEUE"
    [default.workflow.worker_group]="$DS_WORKER_GROUP"
)
set_args=()
for key in "${!expected[@]}"; do
    current="$("$PYDS_CLI" config --get "$key" | sed -n "s/^$key = //p")"
    if [[ "$current" != "${expected[$key]}" ]]; then
        set_args+=(--set "$key" "${expected[$key]}")
        echo "config $key changed"
    fi
done
if ((${#set_args[@]} > 0)); then
    "$PYDS_CLI" config "${set_args[@]}"
else
    echo "pydolphinscheduler config $config_file is up to date"
fi
