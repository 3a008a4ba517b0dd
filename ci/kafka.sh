#!/usr/bin/env bash
# Apache Kafka for the tests: one combined broker + controller (KRaft) on 127.0.0.1, Java 17+.
#
#   ci/kafka.sh install         resolve Kafka (org.apache.kafka:kafka_2.13, ci/kafka/pom.xml) and its
#                               dependencies from Maven Central with mvn; Maven's local repository
#                               (~/.m2) caches the jars between runs.  Installs a JRE and Maven with
#                               apt-get when they are missing.
#   ci/kafka.sh start DIR       format a KRaft storage directory under DIR (once), start the broker
#                               on a free port (the same port again on a restart), wait until it
#                               answers; KEY=VALUE lines for the tests go to DIR/env (and to
#                               $HELIOSDB_SERVICES_DIR/env under ci/services.sh)
#   ci/kafka.sh stop DIR        stop it (TERM, then KILL after 20 s); the data stays
#   ci/kafka.sh restart DIR     stop, then start on the same port with the same data
#
# ci/services.sh sources this file for kafka_install / kafka_start / kafka_stop.  A broker that
# cannot start does not stop the other tests: kafka_start records HELIOSDB_KAFKA_ERROR, and the
# Kafka tests fail with the broker's log tail (they never skip in CI).
#
# Transactions work on the single node: the internal topics (__transaction_state,
# __consumer_offsets, share-group state) have replication factor and min ISR 1.
#
# No time-based retention (log.retention.ms=-1): the tests and benchmarks produce events with
# historical timestamps (2023), and the broker's retention check (30 s after start, then every
# 5 min) deleted such a topic's segments between produce and read: a bounded read then found
# low == high and saw nothing of those partitions.

KAFKA_VERSION="${HELIOSDB_KAFKA_VERSION:-4.1.1}"
_KAFKA_CI="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_KAFKA_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/heliosdb"
_KAFKA_CLASSPATH="$_KAFKA_CACHE/kafka-$KAFKA_VERSION.classpath"

_kafka_log() { echo "kafka: $*" >&2; }

_kafka_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_kafka_java_ok() {   # a java of version 17 or later on PATH
    command -v java >/dev/null || return 1
    local v
    v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
    [ -n "$v" ] && [ "$v" -ge 17 ]
}

_kafka_apt() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || { _kafka_log "installing $* needs root or sudo"; return 1; }
        sudo="sudo"
    fi
    _kafka_log "installing $* (apt-get)"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends "$@" >/dev/null
}

_kafka_classpath_ok() {
    [ -s "$_KAFKA_CLASSPATH" ] || return 1
    local jar
    while IFS= read -r jar; do [ -f "$jar" ] || return 1; done < <(tr ':' '\n' < "$_KAFKA_CLASSPATH")
}

kafka_install() {
    _kafka_java_ok || _kafka_apt default-jre-headless || true
    command -v mvn >/dev/null || _kafka_apt maven || true
    if _kafka_classpath_ok; then
        return 0
    fi
    mkdir -p "$_KAFKA_CACHE"
    _kafka_log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central (mvn)"
    if ! mvn -q -B -f "$_KAFKA_CI/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
            dependency:build-classpath -Dmdep.outputFile="$_KAFKA_CLASSPATH.tmp" \
            > "$_KAFKA_CACHE/kafka-mvn.log" 2>&1; then
        tail -n 30 "$_KAFKA_CACHE/kafka-mvn.log" >&2
        _kafka_log "could not resolve Kafka with mvn (log: $_KAFKA_CACHE/kafka-mvn.log)"
        rm -f "$_KAFKA_CLASSPATH.tmp"
        return 0     # kafka_start reports it; the other services and tests still run
    fi
    mv "$_KAFKA_CLASSPATH.tmp" "$_KAFKA_CLASSPATH"
}

# _kafka_fail DIR MESSAGE: record why the broker is not there, for the tests to report.
_kafka_fail() {
    local dir="$1"; shift
    _kafka_log "error: $*"
    [ -f "$dir/log" ] && tail -n 40 "$dir/log" >&2
    printf 'HELIOSDB_KAFKA_DIR=%s\nHELIOSDB_KAFKA_ERROR=%q\n' "$dir" "$*" > "$dir/env"
    [ -n "${HELIOSDB_SERVICES_DIR:-}" ] && cat "$dir/env" >> "$HELIOSDB_SERVICES_DIR/env"
    return 0
}

# _kafka_wait DIR PID FROM_LINE SECONDS: until the broker logs that it started and takes
# connections; fails early if it exits.
_kafka_wait() {
    local dir="$1" pid="$2" from="$3" seconds="$4" port
    port="$(cat "$dir/port")"
    local deadline=$((SECONDS + seconds))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        if tail -n +"$from" "$dir/log" 2>/dev/null | grep -q "Kafka Server started" &&
                (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

kafka_start() {
    local dir="$1" port cport cluster
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    rm -f "$dir/env"
    _kafka_java_ok || { _kafka_fail "$dir" "no Java 17+ on PATH (java -version)"; return 0; }
    _kafka_classpath_ok || { _kafka_fail "$dir" "Kafka $KAFKA_VERSION is not resolved: ci/kafka.sh install failed (see $_KAFKA_CACHE/kafka-mvn.log)"; return 0; }
    # Same ports on a restart: clients reconnect to the address they know.
    [ -f "$dir/port" ] || _kafka_free_port > "$dir/port"
    [ -f "$dir/controller-port" ] || _kafka_free_port > "$dir/controller-port"
    port="$(cat "$dir/port")"
    cport="$(cat "$dir/controller-port")"
    cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
log.retention.ms=-1
log.segment.bytes=268435456
EOF
    local java=(java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
                -Dlog4j2.configurationFile="$_KAFKA_CI/kafka/log4j2.properties"
                -cp "$(cat "$_KAFKA_CLASSPATH")")
    if [ ! -f "$dir/data/meta.properties" ]; then
        cluster="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
        if ! "${java[@]}" kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
                >> "$dir/log" 2>&1; then
            _kafka_fail "$dir" "formatting the KRaft storage directory $dir/data failed"
            return 0
        fi
    fi
    local from
    from=$(( $(wc -l < "$dir/log" 2>/dev/null || echo 0) + 1 ))
    nohup "${java[@]}" kafka.Kafka "$dir/server.properties" >> "$dir/log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    if ! _kafka_wait "$dir" "$(cat "$dir/pid")" "$from" 120; then
        kafka_stop "$dir"
        _kafka_fail "$dir" "the broker did not start on 127.0.0.1:$port (log: $dir/log)"
        return 0
    fi
    _kafka_log "broker ready at 127.0.0.1:$port (Kafka $KAFKA_VERSION, log $dir/log)"
    printf 'HELIOSDB_KAFKA_BOOTSTRAP=127.0.0.1:%s\nHELIOSDB_KAFKA_DIR=%s\n' "$port" "$dir" > "$dir/env"
    [ -n "${HELIOSDB_SERVICES_DIR:-}" ] && cat "$dir/env" >> "$HELIOSDB_SERVICES_DIR/env"
    return 0
}

kafka_stop() {
    local dir="$1" pid
    [ -f "$dir/pid" ] || return 0
    pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$dir/pid"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        install) kafka_install ;;
        start) [ -n "${2:-}" ] || { sed -n '2,20p' "$0" >&2; exit 2; }
               kafka_start "$2"; [ ! -f "$2/env" ] || ! grep -q HELIOSDB_KAFKA_ERROR "$2/env" ;;
        stop) [ -n "${2:-}" ] || exit 2; kafka_stop "$2" ;;
        restart) [ -n "${2:-}" ] || exit 2; kafka_stop "$2"; kafka_start "$2"
                 ! grep -q HELIOSDB_KAFKA_ERROR "$2/env" ;;
        *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
fi
