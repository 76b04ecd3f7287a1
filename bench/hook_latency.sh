#!/usr/bin/env bash
# Each hook's time as Claude Code itself measures it (issue 11 §3), for the `http` and
# `command` transports side by side: the real CLI (pinned) against a scripted fake Messages
# API, a warm daemon and sidecar, one `cco -p` session per transport whose main thread
# delegates to a sub-agent N times (N PreToolUse, SubagentStart, SubagentStop calls).
# Beside them the floor: plain `claude` with the same http hooks pointed at a server that
# answers `{}` at once (bench/axum_ceiling.rs) — what Claude itself adds to any http hook.
# Times come from Claude's --debug-file: a command hook's "finished with status 0 (N ms)",
# an http hook's "HTTP hook POST" → "HTTP hook response" timestamps (ms resolution).
# Usage: bench/hook_latency.sh [delegations]  (default 25; needs python3, jq, curl;
#   CCO_TEST_CLAUDE names the CLI, default the pinned one under ~/.cache/cco-ci;
#   CCO_BENCH_BIN a cco binary to use instead of building the release one, CCO_BENCH_CEILING
#   the axum_ceiling example beside it)
# Targets: PreToolUse median <= 3 ms, SubagentStart <= 10 ms (warm context); PostToolUse (the
# inbox push, nothing new) no slower than PreToolUse.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-25}
claude=${CCO_TEST_CLAUDE:-$HOME/.cache/cco-ci/claude-2.1.332/node_modules/.bin/claude}
[ -x "$claude" ] || { echo "no Claude Code at $claude; set CCO_TEST_CLAUDE" >&2; exit 1; }
# CCO_BENCH_BIN: a cco binary to measure instead of a fresh release build.
cco=${CCO_BENCH_BIN:-}
ceiling=${CCO_BENCH_CEILING:-}
if [ -z "$cco" ]; then
  cargo build --release --quiet --bin cco --example axum_ceiling
  cco=$PWD/target/release/cco ceiling=$PWD/target/release/examples/axum_ceiling
fi

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# The fake Messages API: the main thread calls the Agent tool until it has N tool results,
# then ends; a sub-agent answers at once. Streaming (SSE) as the CLI asks.
cat > "$tmp/fake.py" <<'PY'
import json, sys, http.server, socketserver
N = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, body, ctype="application/json"):
        b = body.encode()
        self.send_response(code); self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_HEAD(self): self.reply(200, "")
    def do_GET(self): self.reply(200, "{}")
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
            return self.reply(200, json.dumps({"input_tokens": 10}))
        system = json.dumps(body.get("system", ""))
        results = sum(1 for m in body.get("messages", []) if isinstance(m.get("content"), list)
                      for c in m["content"] if c.get("type") == "tool_result")
        if "cc_is_subagent=true" in system or results >= N:
            block = {"type": "text", "text": "DONE"}
        else:
            block = {"type": "tool_use", "id": f"toolu_b{results}", "name": "Agent", "input": {
                "subagent_type": "rust-specialist", "description": f"step {results}",
                "prompt": "say DONE", "run_in_background": False}}
        stop = "tool_use" if block["type"] == "tool_use" else "end_turn"
        msg = {"id": "msg_b", "type": "message", "role": "assistant", "model": body.get("model", "m"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 10, "output_tokens": 1}}
        key = "input" if block["type"] == "tool_use" else "text"
        start = dict(block); start[key] = {} if key == "input" else ""
        delta = ({"type": "input_json_delta", "partial_json": json.dumps(block["input"])} if key == "input"
                 else {"type": "text_delta", "text": block["text"]})
        events = [{"type": "message_start", "message": msg},
                  {"type": "content_block_start", "index": 0, "content_block": start},
                  {"type": "content_block_delta", "index": 0, "delta": delta},
                  {"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                   "usage": {"output_tokens": 10}},
                  {"type": "message_stop"}]
        self.reply(200, "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events),
                   "text/event-stream")
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
python3 "$tmp/fake.py" "$n" > "$tmp/fake.port" & pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/fake.port" ] && break; sleep 0.05; done
fake_url=http://127.0.0.1:$(cat "$tmp/fake.port")

# One installation per transport (its own ports and runtime dir), both warm.
run_transport() {
  local transport=$1 base=$2 dir=$tmp/$1
  mkdir -p "$dir/home" "$dir/config" "$dir/project/src" && install -d -m 700 "$dir/run"
  export HOME=$dir/home XDG_CONFIG_HOME=$dir/config XDG_RUNTIME_DIR=$dir/run CCO_LOG=warn
  export CCO_DAEMON_PORT=$base CCO_SIDECAR_PORT=$((base + 1)) CCO_HOOKS_TRANSPORT=$transport
  "$cco" daemon run 2>"$dir/daemon.log" & pids+=($!)
  "$cco" sidecar run 2>"$dir/sidecar.log" & pids+=($!)
  for port in "$CCO_DAEMON_PORT" "$CCO_SIDECAR_PORT"; do
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
  done
  printf '[package]\nname = "demo"\n' > "$dir/project/Cargo.toml"
  echo 'pub fn f() {}' > "$dir/project/src/lib.rs"
  git -C "$dir/project" init -q -b main
  (cd "$dir/project" && CCO_CLAUDE=$claude ANTHROPIC_BASE_URL=$fake_url ANTHROPIC_API_KEY=bench \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
    timeout 300 "$cco" --quiet --issue "bench-$transport" --debug-file "$dir/debug.log" -p go >/dev/null)
}
# The floor: plain claude, the same http hook entries (headers, allowedEnvVars, matcher) as
# cco's settings, pointed at a server that answers `{}` without reading the input.
run_floor() {
  local dir=$tmp/floor port=24120 ev sub
  mkdir -p "$dir/home" "$dir/project/src"
  "$ceiling" "$port" 2>"$dir/ceiling.log" & pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
  local hooks='{}'
  for ev in PreToolUse:pre-tool-use SubagentStart:subagent-start SubagentStop:subagent-stop Stop:stop; do
    sub=${ev#*:} ev=${ev%%:*}
    hooks=$(jq --arg ev "$ev" --arg url "http://127.0.0.1:$port/hooks/$sub" '.[$ev] = [{matcher: "*", hooks: [{
      type: "http", url: $url, timeout: 7, allowedEnvVars: ["ORCHESTRATOR_TOKEN", "ORCHESTRATOR_ISSUE_ID"],
      headers: {"Authorization": "Bearer ${ORCHESTRATOR_TOKEN}", "X-Cco-Issue": "${ORCHESTRATOR_ISSUE_ID}"}}]}]' <<<"$hooks")
  done
  jq -n --argjson h "$hooks" '{hooks: $h}' > "$dir/settings.json"
  printf '[package]\nname = "demo"\n' > "$dir/project/Cargo.toml"
  echo 'pub fn f() {}' > "$dir/project/src/lib.rs"
  git -C "$dir/project" init -q -b main
  (cd "$dir/project" && HOME=$dir/home ORCHESTRATOR_TOKEN=floor ORCHESTRATOR_ISSUE_ID=bench-floor \
    ANTHROPIC_BASE_URL=$fake_url ANTHROPIC_API_KEY=bench \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 \
    timeout 300 "$claude" --settings "$dir/settings.json" \
      --agents '{"rust-specialist": {"description": "Rust work", "prompt": "Say DONE."}}' \
      --debug-file "$dir/debug.log" -p go >/dev/null)
}
run_transport http 24100
run_transport command 24110
columns=(http command)
if [ -n "$ceiling" ]; then run_floor && columns+=(floor); else echo "no CCO_BENCH_CEILING: the floor is not measured" >&2; fi
# CCO_BENCH_LOGS: a directory to keep Claude's debug logs in.
if [ -n "${CCO_BENCH_LOGS:-}" ]; then
  mkdir -p "$CCO_BENCH_LOGS"
  for t in "${columns[@]}"; do cp "$tmp/$t/debug.log" "$CCO_BENCH_LOGS/$t.debug.log"; done
fi

# Per hook event: "<event> <ms>" lines from one debug log.
times() {
  local log=$1
  # Command hooks report their own duration.
  sed -nE 's/.*Hooks: ([A-Za-z]+)(:[^ ]*)? \[.* hook [a-z-]+\] finished with status [0-9]+ \(([0-9]+)ms\).*/\1 \3/p' "$log"
  # Http hooks: from the POST line to the response line (ms timestamps).
  awk '
    function ms(ts) { split(substr(ts, 12, 12), t, /[:.]/); return ((t[1]*60 + t[2])*60 + t[3])*1000 + t[4] }
    /Hooks: HTTP hook POST to / { n = split($0, u, "/hooks/"); ev = u[n]; sub(/[^a-z-].*/, "", ev); start[ev] = ms($1); last = ev }
    /Hooks: HTTP hook response status/ { if (last != "") print last, ms($1) - start[last]; last = "" }
  ' "$log" | sed -e 's/^pre-tool-use/PreToolUse/' -e 's/^post-tool-use/PostToolUse/' \
    -e 's/^user-prompt-submit/UserPromptSubmit/' -e 's/^subagent-start/SubagentStart/' \
    -e 's/^subagent-stop/SubagentStop/' -e 's/^stop /Stop /' -e 's/^session-end/SessionEnd/'
}
median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2 }'; }

printf '%-14s' hook; printf ' %18s' "${columns[@]/%/ median (n)}"; echo
for ev in PreToolUse PostToolUse UserPromptSubmit SubagentStart SubagentStop Stop SessionStart; do
  row="$(printf '%-14s' "$ev")"
  for t in "${columns[@]}"; do
    vals=$(times "$tmp/$t/debug.log" | awk -v e="$ev" '$1 == e { print $2 }')
    cnt=$(printf '%s' "$vals" | grep -c . || true)
    row+="$(printf ' %12s ms (%2s)' "$(printf '%s\n' "$vals" | grep . | median)" "$cnt")"
  done
  echo "$row"
done
echo "(targets: PreToolUse median <= 3 ms, SubagentStart <= 10 ms. floor: plain claude, http hooks to a server"
echo " answering {} at once. SessionStart is a command hook in cco's http and command runs;"
echo " SessionEnd, also a command hook in both, runs at exit and Claude logs no duration for it.)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (the numbers mean little on a loaded machine)"
