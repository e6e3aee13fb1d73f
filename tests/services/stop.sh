#!/usr/bin/env bash
# Stop the test Kafka broker that tests/services/ensure.sh started (found by its pid file).
# PostgreSQL is left alone: it is the machine's stock cluster
# (stop it with: pg_ctlcluster --skip-systemctl-redirect 15 main stop).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PIDFILE="$REPO/.cache/kafka/broker.pid"

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [ -z "$pid" ] || [ ! -r "/proc/$pid/cmdline" ] || ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka'; then
    echo "kafka: no broker started by this checkout's ensure.sh is running (pid file: ${pid:-none})"
    rm -f "$PIDFILE"
    # --require (the broker-restart test): stopping nothing would make that test vacuous.
    [ "${1:-}" = "--require" ] && exit 3
    exit 0
fi

kill -TERM "$pid"
for _ in $(seq 60); do
    [ -d "/proc/$pid" ] || break
    sleep 0.5
done
if [ -d "/proc/$pid" ]; then
    echo "kafka: broker pid $pid did not stop within 30s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
fi
rm -f "$PIDFILE"
echo "kafka: stopped broker pid $pid"
