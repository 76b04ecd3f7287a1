#!/usr/bin/env bash
# One `cco hook` invocation, process start to exit (issue 6 target: median <= 5 ms), against a
# warm daemon and sidecar: PreToolUse (decided locally), SessionStart (one POST) and
# SubagentStart (register + context for the agent type).
# Usage: bench/hook.sh [runs]   (needs hyperfine, jq, curl; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-300}
command -v hyperfine >/dev/null || { echo "install hyperfine (apt-get install hyperfine)" >&2; exit 1; }
cargo build --release --quiet
cco=$PWD/target/release/cco

tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/config XDG_RUNTIME_DIR=$tmp/run
export CCO_DAEMON_PORT=${CCO_DAEMON_PORT:-24000} CCO_SIDECAR_PORT=${CCO_SIDECAR_PORT:-24001} CCO_LOG=warn
mkdir -p "$HOME" "$XDG_CONFIG_HOME" && install -d -m 700 "$XDG_RUNTIME_DIR"
"$cco" daemon run & pids+=($!)
"$cco" sidecar run & pids+=($!)
for port in "$CCO_DAEMON_PORT" "$CCO_SIDECAR_PORT"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
done

rt=$XDG_RUNTIME_DIR/cco
export ORCHESTRATOR_SIDECAR_URL=http://127.0.0.1:$CCO_SIDECAR_PORT ORCHESTRATOR_ISSUE_ID=bench-issue
export ORCHESTRATOR_SETTINGS=$rt/orchestrator-settings.json
ORCHESTRATOR_HOOKS_CONFIG=$(cat "$rt/hooks-sealed.json"); export ORCHESTRATOR_HOOKS_CONFIG
ORCHESTRATOR_TOKEN=$(cd "$PWD" && "$cco" token --ttl 1h); export ORCHESTRATOR_TOKEN
echo '{"session_id":"b","hook_event_name":"PreToolUse","tool_name":"Read","tool_input":{"file_path":"README.md"}}' > "$tmp/pre.json"
echo '{"session_id":"b","hook_event_name":"SessionStart","source":"startup","cwd":"."}' > "$tmp/start.json"
echo '{"session_id":"b","hook_event_name":"SubagentStart","agent_id":"bench-1","agent_type":"rust-specialist"}' > "$tmp/sub.json"

# hyperfine runs each command through a shell and subtracts the shell's own start-up time.
hyperfine --warmup 30 --runs "$runs" --export-json "$tmp/h.json" \
  -n pre-tool-use "$cco hook pre-tool-use < $tmp/pre.json" \
  -n session-start "$cco hook session-start < $tmp/start.json" \
  -n subagent-start "$cco hook subagent-start < $tmp/sub.json" >/dev/null
for f in h; do
  jq -r '.results[] | "\(.command | .[0:16])  median \(.median*1000*100|round/100) ms  mean \(.mean*1000*100|round/100) ms  max \(.max*1000*100|round/100) ms"' "$tmp/$f.json"
done
echo "(target: median <= 5 ms)"
