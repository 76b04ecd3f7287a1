#!/bin/sh
# Tool-call latency through the daemon's /mcp (release build): p50/p99 of publish, agents
# and a wait that finds its event at once, and REST publish for reference
# (bench/mcp_latency.rs). Usage: bench/mcp.sh [calls]
set -eu
cd "$(dirname "$0")/.."
CALLS=${1:-1000}
cargo build --release --quiet --bin cco --example mcp_latency
CCO=target/release/cco

TMP=$(mktemp -d)
PIDS=
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/config" XDG_RUNTIME_DIR="$TMP/run"
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export CCO_SIDECAR_PORT=$PORT CCO_DAEMON_PORT=$((PORT + 1)) CCO_LOG=${CCO_LOG:-warn}

"$CCO" sidecar run >"$TMP/sidecar.log" 2>&1 &
PIDS="$!"
"$CCO" daemon run >"$TMP/daemon.log" 2>&1 &
PIDS="$PIDS $!"
for port in $CCO_SIDECAR_PORT $CCO_DAEMON_PORT; do
  i=0
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && { cat "$TMP"/*.log; exit 1; }
    sleep 0.05
  done
done
TOKEN=$("$CCO" token --ttl 1h)
target/release/examples/mcp_latency --port "$CCO_DAEMON_PORT" --token "$TOKEN" --calls "$CALLS"
