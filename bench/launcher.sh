#!/usr/bin/env bash
# Launcher overhead and daemon memory (issue 3 targets: median overhead <= 3 ms per launch,
# daemon idle RSS <= 15 MB). Compares `cco --version` (health check, seal verification,
# token, exec) against running the same stub claude directly, with hyperfine.
# Usage: bench/launcher.sh [runs]   (needs hyperfine and jq; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-500}
command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --quiet
cco=$PWD/target/release/cco

tmp=$(mktemp -d)
trap 'kill "$daemon" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/config XDG_RUNTIME_DIR=$tmp/run
export CCO_DAEMON_PORT=${CCO_DAEMON_PORT:-23000} CCO_SIDECAR_PORT=${CCO_SIDECAR_PORT:-23001} CCO_LOG=warn
mkdir -p "$HOME" "$XDG_CONFIG_HOME" && install -d -m 700 "$XDG_RUNTIME_DIR"
printf '#!/bin/sh\necho "1.0.0 (stub)"\n' > "$tmp/claude" && chmod +x "$tmp/claude"
export CCO_CLAUDE=$tmp/claude

"$cco" daemon run & daemon=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$CCO_DAEMON_PORT/health" >/dev/null && break; sleep 0.05; done

hyperfine -N --warmup 50 --runs "$runs" --export-json "$tmp/h.json" \
  "$tmp/claude --version" "$cco --quiet --version" >/dev/null
read -r direct launcher < <(jq -r '[.results[].median * 1000] | map(tostring) | join(" ")' "$tmp/h.json")
read -r dmean lmean < <(jq -r '[.results[].mean * 1000] | map(tostring) | join(" ")' "$tmp/h.json")
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$daemon/status")

printf 'stub claude directly   median %.2f ms (mean %.2f)\n' "$direct" "$dmean"
printf 'cco --version          median %.2f ms (mean %.2f)\n' "$launcher" "$lmean"
printf 'launcher overhead      median %.2f ms   (target <= 3 ms)\n' "$(echo "$launcher - $direct" | bc -l)"
printf 'daemon RSS after %d launches: %.1f MB (peak %.1f MB)   (target <= 15 MB)\n' \
  "$((runs + 50))" "$(echo "$rss_kb/1024" | bc -l)" "$(echo "$hwm_kb/1024" | bc -l)"
