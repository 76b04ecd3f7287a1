#!/bin/sh
# Benchmarks the sidecar on loopback (release build): warm context p99, durable result
# writes/s, publish → woken waiter p99 (bench/sidecar_load.rs, 119 agents), GET /health
# req/s (wrk), and RSS idle / after the load. Usage: bench/sidecar.sh [agents]
set -eu
cd "$(dirname "$0")/.."
AGENTS=${1:-119}
cargo build --release --quiet --bin cco --example sidecar_load
CCO=target/release/cco
LOAD=target/release/examples/sidecar_load

TMP=$(mktemp -d)
SIDECAR_PID=
cleanup() { [ -n "$SIDECAR_PID" ] && kill "$SIDECAR_PID" 2>/dev/null; [ -n "${KEEP_LOG:-}" ] && cp "$TMP/sidecar.log" "$KEEP_LOG"; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/config" XDG_RUNTIME_DIR="$TMP/run"
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CCO_SIDECAR_PORT=$PORT CCO_DAEMON_PORT=$((PORT + 1)) CCO_LOG=${CCO_LOG:-warn}

"$CCO" sidecar run >"$TMP/sidecar.log" 2>&1 &
SIDECAR_PID=$!
i=0
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && { cat "$TMP/sidecar.log"; exit 1; }
  sleep 0.05
done
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SIDECAR_PID/status"; }
echo "rss_idle_mb $(rss)"

# The project the agents read: this repository (a real tree with .gitignore and git state).
TOKEN=$("$CCO" token --project "$PWD" --ttl 1h)
"$LOAD" --port "$PORT" --token "$TOKEN" --agents "$AGENTS"
echo "rss_after_load_mb $(rss)"

wrk -t2 -c64 -d10s "http://127.0.0.1:$PORT/health" | awk '/Requests\/sec/ {print "health_req_per_sec", $2} /Latency/ {print "health_latency_avg", $2}'
echo "rss_after_wrk_mb $(rss)"
