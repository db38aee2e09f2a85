#!/usr/bin/env bash
# Run the whole product once on the BBC news corpus with the MiniLM model.
# MLflow and the prediction service start, and the train workflow trains and registers a version. That
# version gets the alias `production`, the deploy workflow serves it, and sample predictions are printed.
#
#   scripts/demo.sh          run the demo (again: reuses what is installed and trains a new version)
#   scripts/demo.sh stop     stop the servers this demo started, nothing else
#
# Settings (environment variables):
#   DEMO_DIR            state of the demo: servers' data, logs, pid files, workspace (default <repo>/.demo)
#   DEMO_MLFLOW_PORT    MLflow tracking server port on 127.0.0.1 (default 5000)
#   DEMO_SERVICE_PORT   prediction service port on 127.0.0.1 (default 8000)
#   DEMO_MODEL_NAME     registered model name (default bbc-news-topic)
#   DEMO_MAX_SAMPLES    training rows, 0 for the whole corpus (default 0)
#   DEMO_RUNNER         dolphinscheduler, local, or auto: DolphinScheduler when it can be installed, else the
#                       same task scripts run by hand in workflow order (default auto)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_dir"
demo_dir="${DEMO_DIR:-$repo_dir/.demo}"
ports_file="$demo_dir/ports.env"
# `stop` uses the ports the demo was started with, even when the environment now sets others.
if [[ "${1:-}" == "stop" && -f "$ports_file" ]]; then
    DEMO_MLFLOW_PORT="$(sed -n 's/^DEMO_MLFLOW_PORT=//p' "$ports_file")"
    DEMO_SERVICE_PORT="$(sed -n 's/^DEMO_SERVICE_PORT=//p' "$ports_file")"
fi
mlflow_port="${DEMO_MLFLOW_PORT:-5000}"
service_port="${DEMO_SERVICE_PORT:-8000}"
model_name="${DEMO_MODEL_NAME:-bbc-news-topic}"
max_samples="${DEMO_MAX_SAMPLES:-0}"
runner="${DEMO_RUNNER:-auto}"
python="$repo_dir/.venv/bin/python"
mlflow_uri="http://127.0.0.1:$mlflow_port"
service_url="http://127.0.0.1:$service_port"
service_pid_file="$demo_dir/service.pid"
# The demo's MLflow keeps its data in .demo/mlflow, apart from the one scripts/mlflow_server.sh starts by hand.
export MLFLOW_HOME="$demo_dir/mlflow" MLFLOW_PORT="$mlflow_port" PYTHON="$python" PORT_VARIABLE=DEMO_MLFLOW_PORT

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

stop_demo() {
    scripts/mlflow_server.sh stop || true
    if [[ -f "$service_pid_file" ]] && kill -0 "$(cat "$service_pid_file")" 2>/dev/null; then
        kill -TERM -- "-$(cat "$service_pid_file")" 2>/dev/null || kill -TERM "$(cat "$service_pid_file")"
        echo "prediction service on port $service_port stopped"
    fi
    rm -f "$service_pid_file"
    if [[ -f "$demo_dir/dolphinscheduler.started" ]]; then
        scripts/dolphinscheduler.sh stop || true
        rm -f "$demo_dir/dolphinscheduler.started"
    fi
    rm -f "$ports_file"
}

start_service() {
    if [[ -f "$service_pid_file" ]] && kill -0 "$(cat "$service_pid_file")" 2>/dev/null; then
        echo "prediction service already running at $service_url"
        return
    fi
    if curl -s -o /dev/null "$service_url/health"; then
        fail "port $service_port on 127.0.0.1 is taken by another process; set DEMO_SERVICE_PORT to a free port"
    fi
    if [[ ! -s "$demo_dir/admin.token" ]]; then
        (umask 077 && "$python" -c "import secrets; print(secrets.token_hex(24))" >"$demo_dir/admin.token")
    fi
    PREDICT_ADMIN_TOKEN="$(cat "$demo_dir/admin.token")" PREDICT_MLFLOW_URI="$mlflow_uri" \
        PREDICT_MODELS_DIR="$demo_dir/models" \
        setsid "$python" -m uvicorn predict_service:app --host 127.0.0.1 --port "$service_port" \
        >"$demo_dir/service.log" 2>&1 </dev/null &
    echo $! >"$service_pid_file"
    for _ in $(seq 1 60); do
        if curl -sf "$service_url/health" >/dev/null; then
            echo "prediction service at $service_url (log $demo_dir/service.log)"
            return
        fi
        sleep 1
    done
    fail "the prediction service did not start within 60 s; see $demo_dir/service.log"
}

# Run the train workflow's tasks, then the deploy workflow's tasks, by hand with the workflows' defaults.
run_local() {
    local run_key workspace models_dir output
    run_key="demo-$(date +%Y%m%d-%H%M%S)"
    workspace="$demo_dir/workspace"
    models_dir="$demo_dir/models"
    step "train workflow, run key $run_key: preprocess"
    "$python" tasks/preprocess.py --workspace "$workspace" --run-key "$run_key" --max-samples "$max_samples"
    step "train workflow: train (a few minutes on two CPU cores; progress per epoch below)"
    "$python" tasks/train.py --workspace "$workspace" --run-key "$run_key"
    step "train workflow: mlflow_track"
    output="$("$python" tasks/mlflow_track.py --workspace "$workspace" --run-key "$run_key" \
        --remote-server-uri "$mlflow_uri" --model-name "$model_name")"
    echo "$output"
    version="$(sed -n 's/^\${setValue(model_version=\([0-9]*\))}$/\1/p' <<<"$output")"
    [[ -n "$version" ]] || fail "mlflow_track printed no model_version"
    step "alias production -> $model_name version $version"
    "$python" scripts/set_alias.py --remote-server-uri "$mlflow_uri" --model-name "$model_name" \
        --model-version "$version" --alias production
    step "deploy workflow: fetch_model (version by alias production)"
    output="$("$python" tasks/fetch_model.py --remote-server-uri "$mlflow_uri" --model-name "$model_name" \
        --model-version production --models-dir "$models_dir" --workspace "$workspace" --run-key "$run_key")"
    echo "$output"
    model_dir="$(sed -n 's/^\${setValue(model_dir=\(.*\))}$/\1/p' <<<"$output")"
    step "deploy workflow: check_service, update_model, test_service"
    "$python" tasks/check_service.py --service-url "$service_url"
    PREDICT_ADMIN_TOKEN="$(cat "$demo_dir/admin.token")" \
        "$python" tasks/update_model.py --service-url "$service_url" --model-dir "$model_dir"
    "$python" tasks/test_service.py --service-url "$service_url" --model-name "$model_name" --model-version "$version"
    metrics_file="$workspace/$run_key/train.json"
}

run_dolphinscheduler() {
    step "DolphinScheduler standalone"
    scripts/dolphinscheduler.sh start
    touch "$demo_dir/dolphinscheduler.started"
    ./init_pyds.sh
    "$python" pyds.py
    step "train workflow on DolphinScheduler (a few minutes on two CPU cores)"
    "$python" pyds.py --start train --wait --param "remote_server_uri=$mlflow_uri" --param "model_name=$model_name" \
        --param "max_samples=$max_samples"
    version="$("$python" scripts/set_alias.py --remote-server-uri "$mlflow_uri" --model-name "$model_name" \
        --model-version latest --alias production)"
    step "deploy workflow on DolphinScheduler, model_version=production"
    "$python" pyds.py --start deploy --wait --param "remote_server_uri=$mlflow_uri" \
        --param "model_name=$model_name" --param model_version=production --param "service_url=$service_url"
    metrics_file="$(ls -td "$repo_dir"/workspace/*/train.json | head -n 1)"
}

print_summary() {
    step "predictions on texts that are not in the corpus"
    "$python" - "$service_url" <<'EOF'
import json, sys, urllib.request

texts = [
    "Rovers came from behind to win 2-1, with their striker scoring twice in the last ten minutes of the match.",
    "The central bank left interest rates unchanged as quarterly profits at the retailer fell sharply.",
    "The prime minister faced questions in parliament over the election campaign and the new tax bill.",
    "The new smartphone has a faster chip, and the software update brings better battery life.",
    "The film won best picture at the awards ceremony, and its lead actress thanked the director.",
]
request = urllib.request.Request(sys.argv[1] + "/predict", data=json.dumps({"texts": texts}).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as response:
    answer = json.load(response)
for text, item in zip(texts, answer["predictions"]):
    print(f"{item['label']:<14} {item['score']:.2f}  {text[:80]}")
print(f"(served by {answer['predictions'][0]['model_name']} version {answer['predictions'][0]['model_version']})")
EOF
    step "test metrics of the new version"
    "$python" -c "import json, sys; m = json.load(open(sys.argv[1])); print(f\"test accuracy {m['test_accuracy']:.4f}, macro-F1 {m['test_macro_f1']:.4f}\")" "$metrics_file"
    cat <<EOF

Where to look next:
  MLflow UI            $mlflow_uri  (experiment and registered model $model_name)
  prediction service   $service_url/docs  (GET /model, GET /metrics)
  stop everything      make stop  (or scripts/demo.sh stop)
EOF
    if [[ "$runner" == "dolphinscheduler" ]]; then
        echo "  DolphinScheduler     http://127.0.0.1:12345/dolphinscheduler  (REST API)"
    fi
}

if [[ "${1:-}" == "stop" ]]; then
    stop_demo
    exit 0
fi
[[ -x "$python" ]] || make -C "$repo_dir" venv
mkdir -p "$demo_dir"
command -v curl >/dev/null || fail "curl is needed: apt-get install curl"
printf 'DEMO_MLFLOW_PORT=%s\nDEMO_SERVICE_PORT=%s\n' "$mlflow_port" "$service_port" >"$ports_file"

step "MLflow tracking server"
scripts/mlflow_server.sh start
step "prediction service"
start_service

if [[ "$runner" != "local" ]]; then
    step "DolphinScheduler 3.2.2 install from Maven Central (jars cached in ~/.m2 once resolved)"
    if scripts/dolphinscheduler.sh install; then
        runner=dolphinscheduler
    elif [[ "$runner" == "dolphinscheduler" ]]; then
        fail "DolphinScheduler could not be installed; see the message above. MLflow and the service still run: make stop"
    else
        cat >&2 <<'EOF'

warning: DolphinScheduler could not be installed (see the message above), so this demo runs the same task
scripts by hand, in workflow order, with the workflows' default parameters. Everything else (MLflow, the
model registry, the prediction service and its hot swap) is real. Set DEMO_RUNNER=dolphinscheduler to fail
instead.
EOF
        runner=local
    fi
fi

if [[ "$runner" == "dolphinscheduler" ]]; then
    run_dolphinscheduler
else
    run_local
fi
print_summary
