#!/usr/bin/env bash
# Instructions per `GET /health` (callgrind), for the sidecar, the daemon and the minimal axum
# ceiling: a count that a loaded machine does not blur, unlike wall time. Each server runs
# under callgrind; after WARMUP requests the counters are zeroed, then N requests go over one
# keep-alive connection (curl's URL globbing) and the counters are dumped.
# Usage: bench/health_cost.sh [requests=2000]   (needs valgrind, curl; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
# Requests before counting: first-use costs (lazy statics, buffers) are not per request.
WARMUP=200
command -v valgrind >/dev/null || { echo "install valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet --bin cco --example axum_ceiling
CCO=$PWD/target/release/cco
CEIL=$PWD/target/release/examples/axum_ceiling

TMP=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
export HOME=$TMP/home XDG_CONFIG_HOME=$TMP/config XDG_RUNTIME_DIR=$TMP/run CCO_LOG=warn
mkdir -p "$HOME" "$XDG_CONFIG_HOME" && install -d -m 700 "$XDG_RUNTIME_DIR"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CCO_SIDECAR_PORT=$(free_port) CCO_DAEMON_PORT=$(free_port)
CEIL_PORT=$(free_port)

# Instructions one server spends on N requests to /health.
measure() {
  local name=$1 port=$2; shift 2
  local out=$TMP/$name.cg
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$TMP/$name.vg" & local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  curl -fs -o /dev/null "http://127.0.0.1:$port/health?w=[1-$WARMUP]"
  callgrind_control -z "$pid" >/dev/null 2>&1
  curl -fs -o /dev/null "http://127.0.0.1:$port/health?n=[1-$N]"
  callgrind_control -d "$pid" >/dev/null 2>&1
  # The dump after zeroing is the newest file: its summary line is the count.
  local dump
  dump=$(ls -t "$out"* | head -1)
  # CCO_BENCH_KEEP: a directory to keep the dumps in (for callgrind_annotate).
  if [ -n "${CCO_BENCH_KEEP:-}" ]; then mkdir -p "$CCO_BENCH_KEEP" && cp "$dump" "$CCO_BENCH_KEEP/$name.callgrind"; fi
  awk -v n="$N" -v w="$name" '/^summary:/ {printf "%-8s %8.0f instructions per GET /health\n", w, $2 / n}' "$dump"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
measure sidecar "$CCO_SIDECAR_PORT" "$CCO" sidecar run
measure daemon "$CCO_DAEMON_PORT" "$CCO" daemon run
measure ceiling "$CEIL_PORT" "$CEIL" "$CEIL_PORT"
