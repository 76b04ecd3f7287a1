#!/usr/bin/env bash
# Cold socket activation: connect to a socket whose service is not running, time until the
# /health reply. Runs inside the systemd test container (tests/systemd/cco.sh calls it) as
# a user with cco installed:  bench/activation.sh [daemon|sidecar] [RUNS]
# Prints one line per run, then median and p90 in milliseconds.
set -euo pipefail

service=${1:-daemon}
runs=${2:-20}
case $service in
  daemon) port=${CCO_DAEMON_PORT:-3000} ;;
  sidecar) port=${CCO_SIDECAR_PORT:-3001} ;;
  *) echo "usage: $0 [daemon|sidecar] [RUNS]" >&2; exit 2 ;;
esac
unit=cco-$service.service

[[ "$(systemctl --user is-active "cco-$service.socket")" == active ]] ||
  { echo "cco-$service.socket is not listening — run \`cco install\` first" >&2; exit 1; }

times=()
for ((i = 1; i <= runs; i++)); do
  # Every activation counts against the unit's start rate limit (5 per 10 s by default);
  # reset it so the benchmark measures activation, not the limiter.
  systemctl --user reset-failed "$unit" "cco-$service.socket" 2>/dev/null || true
  systemctl --user stop "$unit"
  # The socket must stay: stopping the service alone leaves it listening.
  [[ "$(systemctl --user is-active "$unit" || true)" == inactive ]] || { echo "$unit did not stop" >&2; exit 1; }
  t=$(curl -fsS -o /dev/null --max-time 10 -w '%{time_total}' "http://127.0.0.1:$port/health")
  ms=$(awk -v t="$t" 'BEGIN { printf "%.1f", t * 1000 }')
  times+=("$ms")
  echo "run $i: ${ms} ms"
  # The socket refuses activation after 20 triggers in 2 s (TriggerLimitBurst=), a guard
  # against busy loops; space runs out so the benchmark never hits it.
  sleep 0.15
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
pick() { awk -v q="$1" '{ v[NR] = $1 } END { i = int(q * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }' <<<"$sorted"; }
median=$(awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }' <<<"$sorted")
echo "cold activation $service ($runs runs): median ${median} ms, p90 $(pick 0.9) ms, min $(head -1 <<<"$sorted") ms, max $(tail -1 <<<"$sorted") ms"
