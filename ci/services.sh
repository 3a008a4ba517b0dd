#!/usr/bin/env bash
# Services the test suite talks to: installed, started before the tests, stopped after them.
#
#   ci/services.sh run -- CMD...     install and start every service, run CMD with their
#                                    addresses in its environment, stop them whatever CMD does,
#                                    exit with CMD's status (what `make test` uses)
#   ci/services.sh install [NAME..]  install what the services need (Debian packages; as root,
#                                    or through sudo)
#   ci/services.sh start|stop [NAME..]
#                                    start / stop services in $HELIOSDB_SERVICES_DIR (required)
#
# A service NAME is three functions, NAME_install, NAME_start and NAME_stop, and an entry in
# SERVICES (prometheus, kafka: ci/kafka.sh, s3: a moto server).  NAME_start runs in
# $HELIOSDB_SERVICES_DIR/NAME, binds 127.0.0.1 on a free port, waits until the service answers,
# and appends KEY=VALUE lines for the tests to $HELIOSDB_SERVICES_DIR/env.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SERVICES=(prometheus kafka s3)
# shellcheck source=ci/kafka.sh
. "$ROOT/ci/kafka.sh"      # kafka_install, kafka_start, kafka_stop: one KRaft broker (Apache Kafka 4.x)

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS: until URL answers 2xx.
wait_http() {
    python3 - "$1" "$2" <<'EOF'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        with urllib.request.urlopen(url, timeout=2):
            sys.exit(0)
    except Exception:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.2)
EOF
}

apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "installing $* needs root or sudo (apt-get install $*)"
        sudo="sudo"
    fi
    log "installing $* (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# stop_pid DIR: stop the process whose id is in DIR/pid (TERM, then KILL after 10 s).
stop_pid() {
    local pidfile="$1/pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# --- prometheus: a real server; tests add scrape targets as files in its targets folder -------
prometheus_install() {
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        apt_install prometheus
    fi
}

prometheus_start() {
    local dir="$1" port
    command -v prometheus >/dev/null || die "prometheus is not installed: run ci/services.sh install"
    mkdir -p "$dir/targets" "$dir/data"
    port="$(free_port)"
    cat > "$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/ops/prometheus/alerts.yml
scrape_configs:
  - job_name: heliosdb
    honor_labels: true
    file_sd_configs:
      - files: ["$dir/targets/*.json"]
        refresh_interval: 1s
EOF
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn >"$dir/log" 2>&1 &
    echo $! > "$dir/pid"
    if ! wait_http "http://127.0.0.1:$port/-/ready" 30; then
        cat "$dir/log" >&2
        die "prometheus did not become ready on 127.0.0.1:$port"
    fi
    log "prometheus ready at http://127.0.0.1:$port"
    {
        echo "HELIOSDB_PROMETHEUS_URL=http://127.0.0.1:$port"
        echo "HELIOSDB_PROMETHEUS_TARGETS=$dir/targets"
    } >> "$HELIOSDB_SERVICES_DIR/env"
}

prometheus_stop() { stop_pid "$1"; }

# --- s3: a moto server standing in for S3 (checkpoints and Parquet on s3://) ---------------------
# moto[server], s3fs and boto3 are test extras (setup.py); s3_install pip-installs them into the
# Python that runs the tests ($HELIOSDB_PYTHON, else .venv/bin/python, else python3) if missing.
# Tests get HELIOSDB_S3_ENDPOINT; any key and secret work (moto checks none).
s3_python() {
    if [ -n "${HELIOSDB_PYTHON:-}" ]; then echo "$HELIOSDB_PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"
    else command -v python3; fi
}

s3_install() {
    local py
    py="$(s3_python)"
    if ! "$py" -c 'import moto.server, s3fs, boto3' 2>/dev/null; then
        log "installing moto[server], s3fs and boto3 (pip, for $py)"
        "$py" -m pip install --quiet 'moto[server]>=5.0' 's3fs>=2023.6' 'boto3>=1.28'
    fi
}

s3_start() {
    local dir="$1" port py
    py="$(s3_python)"
    "$py" -c 'import moto.server' 2>/dev/null || die "moto[server] is not installed for $py: run ci/services.sh install s3"
    port="$(free_port)"
    "$py" -m moto.server -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
    echo $! > "$dir/pid"
    if ! wait_http "http://127.0.0.1:$port/moto-api/" 30; then
        cat "$dir/log" >&2
        die "the S3 server (moto) did not answer on 127.0.0.1:$port"
    fi
    log "s3 (moto) ready at http://127.0.0.1:$port"
    echo "HELIOSDB_S3_ENDPOINT=http://127.0.0.1:$port" >> "$HELIOSDB_SERVICES_DIR/env"
}

s3_stop() { stop_pid "$1"; }

# --- driver -------------------------------------------------------------------------------------
each() {   # each ACTION [NAME..]
    local action="$1"; shift
    local names=("$@")
    [ ${#names[@]} -gt 0 ] || names=("${SERVICES[@]}")
    for name in "${names[@]}"; do
        declare -F "${name}_${action}" >/dev/null || die "unknown service '$name' (have: ${SERVICES[*]})"
        if [ "$action" = install ]; then
            "${name}_install"
        else
            [ -n "${HELIOSDB_SERVICES_DIR:-}" ] || die "set HELIOSDB_SERVICES_DIR (or use: ci/services.sh run -- CMD)"
            mkdir -p "$HELIOSDB_SERVICES_DIR/$name"
            "${name}_${action}" "$HELIOSDB_SERVICES_DIR/$name"
        fi
    done
}

run() {
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || die "usage: ci/services.sh run -- CMD..."
    each install
    HELIOSDB_SERVICES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/heliosdb-services.XXXXXX")"
    export HELIOSDB_SERVICES_DIR
    # Stop in reverse order and clean up, whatever happens from here on.
    trap 'for ((i=${#SERVICES[@]}-1; i>=0; i--)); do "${SERVICES[i]}_stop" "$HELIOSDB_SERVICES_DIR/${SERVICES[i]}" || true; done; rm -rf "$HELIOSDB_SERVICES_DIR"' EXIT
    each start
    set -a
    # shellcheck disable=SC1091
    . "$HELIOSDB_SERVICES_DIR/env"
    set +a
    local status=0
    "$@" || status=$?
    exit "$status"
}

case "${1:-}" in
    run) shift; run "$@" ;;
    install|start|stop) action="$1"; shift; each "$action" "$@" ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
