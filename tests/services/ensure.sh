#!/usr/bin/env bash
# Make the real services the test suite needs available, installing and starting what is missing:
#   - PostgreSQL on 127.0.0.1:5432 with role wispgate/wispgate (superuser) and databases
#     wispgate_test, wispgate_test2 (the stock Debian cluster is created/started when nothing listens)
#   - a single-node KRaft Kafka broker on 127.0.0.1:9092 (jars from Maven Central into .cache/kafka/libs)
#   - the Debian tools the tests call: radclient (freeradius-utils), pdftotext (poppler-utils),
#     docker-compose (validates compose.yaml; no Docker engine needed)
# and write .cache/services.env for `. .cache/services.env && pytest`.
#
# Idempotent: when everything already runs it only checks and rewrites services.env (a second or so).
# Any failure prints what failed and exits non-zero; nothing is skipped silently.
# Stop the broker with tests/services/stop.sh. Knobs: WISPGATE_KAFKA_TIMEOUT (seconds, default 90).
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/services"
CACHE="$REPO/.cache"
KAFKA_DIR="$CACHE/kafka"
LIBS="$KAFKA_DIR/libs"
DATA="$KAFKA_DIR/data"
PROPS="$KAFKA_DIR/server.properties"
PIDFILE="$KAFKA_DIR/broker.pid"
BROKER_LOG="$KAFKA_DIR/broker.log"
ENV_FILE="$CACHE/services.env"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_ROLE=wispgate
PG_PASSWORD=wispgate
PG_DBS=(wispgate_test wispgate_test2)
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_TIMEOUT="${WISPGATE_KAFKA_TIMEOUT:-90}"
PG_TIMEOUT=60

die() {
    echo "ensure.sh: ERROR: $*" >&2
    exit 1
}
note() { echo "ensure.sh: $*" >&2; }
trap 'rc=$?; echo "ensure.sh: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
    as_postgres() { (cd / && runuser -u postgres -- "$@"); }
else
    command -v sudo >/dev/null || die "not root and sudo is not installed: cannot install or start services"
    as_root() { sudo "$@"; }
    as_postgres() { (cd / && sudo -u postgres -- "$@"); }
fi

mkdir -p "$KAFKA_DIR"
# One ensure.sh at a time (parallel `make` targets, two terminals). The script runs again under
# `flock -o`, so the lock is held by flock alone: the services started below must not inherit it.
if [ "${WISPGATE_ENSURE_LOCKED:-}" != 1 ]; then
    rc=0
    WISPGATE_ENSURE_LOCKED=1 flock -o -E 75 -w 300 "$CACHE/ensure.lock" bash "${BASH_SOURCE[0]}" "$@" || rc=$?
    [ "$rc" != 75 ] || die "another tests/services/ensure.sh has held $CACHE/ensure.lock for 300s"
    exit "$rc"
fi

port_open() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
pkg_installed postgresql && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
    && command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null || missing+=(postgresql)
pkg_installed freeradius-utils && command -v radclient >/dev/null || missing+=(freeradius-utils)
pkg_installed poppler-utils && command -v pdftotext >/dev/null || missing+=(poppler-utils)
pkg_installed docker-compose && command -v docker-compose >/dev/null || missing+=(docker-compose)  # compose.yaml check
command -v java >/dev/null || missing+=(default-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ "${#missing[@]}" -gt 0 ]; then
    note "installing ${missing[*]} (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$CACHE/apt.log" 2>&1 \
        || die "apt-get update failed:$(printf '\n')$(tail -n 20 "$CACHE/apt.log")"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$CACHE/apt.log" 2>&1 \
        || die "apt-get install -y ${missing[*]} failed:$(printf '\n')$(tail -n 30 "$CACHE/apt.log")"
    for c in pg_ctlcluster pg_isready psql radclient pdftotext docker-compose java mvn; do
        command -v "$c" >/dev/null || die "$c still not found after apt-get install ${missing[*]} (see $CACHE/apt.log)"
    done
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3; }
# Succeeds when $1 accepts a password login as the wispgate role and the role is a superuser.
pg_app_ok() {
    [ "$(PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -w -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_ROLE" -d "$1" -tAc 'select rolsuper from pg_roles where rolname = current_user' \
        2>/dev/null)" = t ]
}

pg_how="reused the server already running"
if ! pg_ready; then
    pg_ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
    [ -n "$pg_ver" ] || die "no PostgreSQL server version under /usr/lib/postgresql"
    if ! pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" { found = 1 } END { exit !found }'; then
        note "creating PostgreSQL cluster $pg_ver/main"
        out="$(as_root pg_createcluster --port "$PG_PORT" "$pg_ver" main 2>&1)" \
            || die "pg_createcluster $pg_ver main failed:$(printf '\n')$out"
    fi
    read -r _ _ cl_port cl_status _ < <(pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main"')
    [ "$cl_port" = "$PG_PORT" ] \
        || die "cluster $pg_ver/main is configured for port $cl_port, not $PG_PORT (see /etc/postgresql/$pg_ver/main/postgresql.conf)"
    if [ "$cl_status" != online ]; then
        note "starting PostgreSQL cluster $pg_ver/main"
        out="$(as_root pg_ctlcluster --skip-systemctl-redirect "$pg_ver" main start 2>&1)" \
            || die "pg_ctlcluster $pg_ver main start failed:$(printf '\n')$out$(printf '\n')--- last lines of /var/log/postgresql/postgresql-$pg_ver-main.log:$(printf '\n')$(tail -n 20 "/var/log/postgresql/postgresql-$pg_ver-main.log" 2>&1)"
    fi
    deadline=$((SECONDS + PG_TIMEOUT))
    until pg_ready; do
        [ "$SECONDS" -lt "$deadline" ] \
            || die "PostgreSQL cluster $pg_ver/main is $(pg_lsclusters -h | awk -v v="$pg_ver" '$1 == v && $2 == "main" { print $4 }') but $PG_HOST:$PG_PORT does not accept connections after ${PG_TIMEOUT}s: $(pg_isready -h "$PG_HOST" -p "$PG_PORT" 2>&1)"
        sleep 1
    done
    pg_how="started cluster $pg_ver/main"
fi

need_setup=0
for db in "${PG_DBS[@]}"; do pg_app_ok "$db" || need_setup=1; done
if [ "$need_setup" = 1 ]; then
    note "creating role $PG_ROLE and databases ${PG_DBS[*]}"
    sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_ROLE LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;"
    for db in "${PG_DBS[@]}"; do
        sql+="
SELECT 'CREATE DATABASE $db OWNER $PG_ROLE' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$db') \\gexec"
    done
    out="$(printf '%s\n' "$sql" | as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres 2>&1)" \
        || die "could not create role $PG_ROLE / databases as the postgres superuser over the local socket (port $PG_PORT):$(printf '\n')$out"
    for db in "${PG_DBS[@]}"; do
        if ! pg_app_ok "$db"; then
            err="$(PGPASSWORD="$PG_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d "$db" -tAc 'select rolsuper from pg_roles where rolname = current_user' 2>&1 || true)"
            hba="$(as_postgres psql -X -p "$PG_PORT" -d postgres -tAc "select line_number, type, database, user_name, address, auth_method from pg_hba_file_rules" 2>&1 || true)"
            die "password login as $PG_ROLE to $db on $PG_HOST:$PG_PORT fails after setup: $err
pg_hba rules (need md5 or scram-sha-256 for host 127.0.0.1/32):
$hba"
        fi
    done
fi
pg_version="$(PGPASSWORD="$PG_PASSWORD" psql -X -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d "${PG_DBS[0]}" -tAc 'show server_version' 2>&1)" \
    || die "PostgreSQL version query failed: $pg_version"

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
POM="$HERE/kafka/pom.xml"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"

# Jars are fetched once per pom.xml content: $LIBS/.complete holds the pom's hash.
ensure_libs() {
    local want
    want="$(sha256sum "$POM" | cut -d' ' -f1)"
    [ -f "$LIBS/.complete" ] && [ "$(cat "$LIBS/.complete")" = "$want" ] && return 0
    note "fetching Kafka $kafka_version jars with Maven into $LIBS"
    rm -rf "$LIBS.tmp"
    mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" >"$KAFKA_DIR/mvn.log" 2>&1 \
        || die "mvn dependency:copy-dependencies failed (full log $KAFKA_DIR/mvn.log):$(printf '\n')$(tail -n 30 "$KAFKA_DIR/mvn.log")"
    compgen -G "$LIBS.tmp/kafka_2.13-$kafka_version.jar" >/dev/null \
        || die "mvn finished but $LIBS.tmp has no kafka_2.13-$kafka_version.jar"
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    echo "$want" >"$LIBS/.complete"
}

# pid of the broker this script started, if it is still alive
broker_pid() {
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' \
        && echo "$pid"
    return 0
}

write_props() {
    cat >"$PROPS" <<EOF
# Generated by tests/services/ensure.sh; edits are overwritten at the next broker start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://$KAFKA_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
num.network.threads=2
num.io.threads=4
EOF
}

start_broker() {
    ensure_libs
    write_props
    if [ ! -f "$DATA/meta.properties" ]; then
        local cid out
        cid="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>&1)" \
            || die "kafka-storage random-uuid failed: $cid"
        note "formatting Kafka storage $DATA (cluster id $cid)"
        out="$(java -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -cp "$LIBS/*" \
            kafka.tools.StorageTool format -t "$cid" -c "$PROPS" 2>&1)" \
            || die "kafka-storage format failed:$(printf '\n')$out"
    fi
    [ -f "$BROKER_LOG" ] && mv -f "$BROKER_LOG" "$BROKER_LOG.1"
    note "starting Kafka $kafka_version broker (log $BROKER_LOG)"
    # setsid: own session, so the broker outlives this script and the make/CI step that ran it.
    # The inner shell writes its pid before exec'ing java, so the pid file names the JVM itself.
    # trap - ERR: the broker's end (a test restarting it) is not a failure of this script.
    (trap - ERR; cd "$KAFKA_DIR" && setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
        java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$HERE/kafka/log4j2.properties" -Dkafka.logs.dir="$KAFKA_DIR" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" >"$BROKER_LOG" 2>&1 </dev/null &)
    local i
    for i in $(seq 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
}

broker_failed() {
    die "$1
--- last lines of $BROKER_LOG:
$(tail -n 40 "$BROKER_LOG" 2>/dev/null || echo '(no log)')"
}

kafka_how="reused the broker already listening"
started_pid=""
if ! port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    started_pid="$(broker_pid)"
    if [ -n "$started_pid" ]; then
        kafka_how="waited for broker pid $started_pid (was starting)"
    else
        rm -f "$PIDFILE"
        start_broker
        started_pid="$(broker_pid)"
        [ -n "$started_pid" ] || broker_failed "the Kafka broker exited right after start"
        kafka_how="started broker pid $started_pid"
    fi
fi

deadline=$((SECONDS + KAFKA_TIMEOUT))
until port_open "$KAFKA_HOST" "$KAFKA_PORT"; do
    if [ -n "$started_pid" ] && [ ! -d "/proc/$started_pid" ]; then
        broker_failed "the Kafka broker (pid $started_pid) exited during startup"
    fi
    [ "$SECONDS" -lt "$deadline" ] \
        || broker_failed "the Kafka broker does not accept connections on $KAFKA_HOST:$KAFKA_PORT after ${KAFKA_TIMEOUT}s (stop it with tests/services/stop.sh)"
    sleep 1
done

# The port opens before the broker has caught up with the metadata log: ask for cluster metadata.
remaining=$((deadline - SECONDS))
[ "$remaining" -ge 10 ] || remaining=10
probe_rc=3
for py in "$REPO/.venv/bin/python" python3; do
    command -v "$py" >/dev/null || continue
    probe_rc=0
    probe_out="$("$py" "$HERE/kafka_ready.py" "$KAFKA_HOST:$KAFKA_PORT" "$remaining" 2>&1)" || probe_rc=$?
    [ "$probe_rc" = 3 ] || break
done
if [ "$probe_rc" = 3 ]; then
    # No Python with kafka-python here (before `make venv`): use Kafka's own Java admin client.
    ensure_libs
    probe_rc=0
    probe_out="$(java -Xmx128m -cp "$LIBS/*" "$HERE/kafka/KafkaReady.java" "$KAFKA_HOST:$KAFKA_PORT" "$remaining" 2>&1)" \
        || probe_rc=$?
fi
[ "$probe_rc" = 0 ] || broker_failed "Kafka metadata check failed: $probe_out"

# ---------------------------------------------------------------------------------------------
# Environment for the tests
# ---------------------------------------------------------------------------------------------
cat >"$ENV_FILE.tmp" <<EOF
# Written by tests/services/ensure.sh
export WISPGATE_TEST_PG_DSN=postgresql://$PG_ROLE:$PG_PASSWORD@$PG_HOST:$PG_PORT/${PG_DBS[0]}
export WISPGATE_TEST_PG_DSN2=postgresql://$PG_ROLE:$PG_PASSWORD@$PG_HOST:$PG_PORT/${PG_DBS[1]}
export WISPGATE_TEST_KAFKA=$KAFKA_HOST:$KAFKA_PORT
EOF
mv -f "$ENV_FILE.tmp" "$ENV_FILE"

echo "postgres: ready at $PG_HOST:$PG_PORT, PostgreSQL $pg_version ($pg_how); role $PG_ROLE, databases ${PG_DBS[*]}"
echo "kafka:    ready at $KAFKA_HOST:$KAFKA_PORT ($kafka_how; jars Kafka $kafka_version; log ${BROKER_LOG#"$REPO/"})"
echo "tools:    $(command -v radclient), $(command -v pdftotext)"
echo "env:      ${ENV_FILE#"$REPO/"} (. it before pytest)"
