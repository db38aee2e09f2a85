#!/usr/bin/env bash
# Start, stop or check a local MLflow tracking server: sqlite backend, artifacts in a local folder,
# listening on 127.0.0.1 only.
#
#   scripts/mlflow_server.sh start|stop|status
#
# Settings (environment variables):
#   MLFLOW_PORT    port to listen on (default 5000)
#   MLFLOW_HOME    folder for mlflow.db, artifacts/, the pid file and the log (default <repo>/.mlflow)
#   MLFLOW_BACKEND_STORE_URI   backend store (default sqlite:///$MLFLOW_HOME/mlflow.db); a team points it at
#                  PostgreSQL, e.g. postgresql://user:password@db-host/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION   artifact store (default $MLFLOW_HOME/artifacts); s3://bucket/path for a team
#   MLFLOW_WORKERS server worker processes (default 1; MLflow's own default of 4 takes about 3 GB)
#   PYTHON         interpreter with mlflow installed (default <repo>/.venv/bin/python, else python3)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${MLFLOW_PORT:-5000}"
home="${MLFLOW_HOME:-$repo_dir/.mlflow}"
backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$home/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$home/artifacts}"
workers="${MLFLOW_WORKERS:-1}"
python="${PYTHON:-$repo_dir/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
pid_file="$home/mlflow-$port.pid"
log_file="$home/mlflow-$port.log"
url="http://127.0.0.1:$port"

is_running() {
    [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start() {
    if is_running; then
        echo "MLflow is already running at $url (pid $(cat "$pid_file"))"
        return 0
    fi
    if "$python" - "$port" <<'EOF'
import socket, sys
with socket.socket() as sock:
    sys.exit(0 if sock.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
    then
        echo "error: port $port on 127.0.0.1 is taken by another process (not the MLflow of $home); set ${PORT_VARIABLE:-MLFLOW_PORT} to a free port" >&2
        exit 1
    fi
    mkdir -p "$home" "$artifacts"
    # setsid puts the server in its own process group, so stop ends its gunicorn/uvicorn workers too.
    setsid "$python" -m mlflow server --host 127.0.0.1 --port "$port" --workers "$workers" \
        --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
        >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
    for _ in $(seq 1 120); do
        if "$python" -c "import urllib.request, sys; urllib.request.urlopen('$url/health', timeout=2)" 2>/dev/null; then
            echo "MLflow tracking server at $url (pid $(cat "$pid_file")), backend $backend, log $log_file"
            return 0
        fi
        if ! is_running; then
            echo "error: MLflow exited during start-up; see $log_file" >&2
            tail -n 20 "$log_file" >&2 || true
            rm -f "$pid_file"
            exit 1
        fi
        sleep 1
    done
    echo "error: MLflow did not respond at $url/health within 120 s; see $log_file" >&2
    exit 1
}

stop() {
    if ! is_running; then
        echo "MLflow of $home is not running on port $port"
        rm -f "$pid_file"
        return 0
    fi
    local pid
    pid="$(cat "$pid_file")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pid_file"
    echo "MLflow on port $port stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status)
        if is_running; then echo "MLflow running at $url (pid $(cat "$pid_file"))"; else echo "MLflow not running on port $port"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
