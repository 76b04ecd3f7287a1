#!/bin/sh
# Soak (outside CI): daemon and sidecar under 10 minutes of mixed load with 1,000 open long
# polls (bench/soak.rs); samples both services' RSS and open fds every 10 s and reports errors.
# Usage: bench/soak.sh [seconds=600] [polls=1000]   (PROFILE=debug to skip the release build)
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-600}
POLLS=${2:-1000}
EVERY=10
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet --bin cco --example soak
else
  cargo build --quiet --bin cco --example soak
fi
CCO=target/$PROFILE/cco
SOAK=target/$PROFILE/examples/soak

TMP=$(mktemp -d)
PIDS=
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
export HOME="$TMP/home" XDG_CONFIG_HOME="$TMP/config" XDG_RUNTIME_DIR="$TMP/run"
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export CCO_SIDECAR_PORT=$(free_port) CCO_DAEMON_PORT=$(free_port) CCO_LOG=${CCO_LOG:-warn}
# 1,000 polls through the daemon need 2,000 fds there (client side + forwarded side).
ulimit -n 8192 2>/dev/null || true

"$CCO" sidecar run >"$TMP/sidecar.log" 2>&1 &
SIDECAR=$!
"$CCO" daemon run >"$TMP/daemon.log" 2>&1 &
DAEMON=$!
PIDS="$SIDECAR $DAEMON"
for port in "$CCO_SIDECAR_PORT" "$CCO_DAEMON_PORT"; do
  i=0
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    i=$((i + 1)); [ $i -gt 200 ] && { cat "$TMP"/*.log; exit 1; }
    sleep 0.05
  done
done
TOKEN=$("$CCO" token --any-project --ttl 2h)

rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
sample() {
  printf '%-6s %10s %8s %12s %8s\n' "$1" "$(rss $DAEMON)" "$(fds $DAEMON)" "$(rss $SIDECAR)" "$(fds $SIDECAR)"
}
echo "machine: $(nproc) cpus, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg), profile $PROFILE"
printf '%-6s %10s %8s %12s %8s\n' t daemon_mb d_fds sidecar_mb s_fds
sample idle

"$SOAK" --daemon-port "$CCO_DAEMON_PORT" --sidecar-port "$CCO_SIDECAR_PORT" --token "$TOKEN" \
  --secs "$SECS" --polls "$POLLS" --every "$EVERY" >"$TMP/soak.out" 2>"$TMP/soak.err" &
LOAD=$!
PIDS="$PIDS $LOAD"
t=0
while kill -0 "$LOAD" 2>/dev/null; do
  sleep "$EVERY"; t=$((t + EVERY))
  kill -0 "$LOAD" 2>/dev/null && sample "${t}s"
done
wait "$LOAD" || true
sample after
echo
cat "$TMP/soak.out"
if [ -s "$TMP/soak.err" ]; then echo "first errors:"; head -10 "$TMP/soak.err"; fi
for s in daemon sidecar; do
  if grep -qiE 'error|panic' "$TMP/$s.log"; then echo "$s log:"; grep -iE 'error|panic' "$TMP/$s.log" | head -5; fi
done
