#!/usr/bin/env bash
# cco against a real systemd user manager (see README.md): install, socket activation,
# launcher env, crash recovery, restart under load, idle exit, idempotence, uninstall,
# the Debian package, and the cold-activation benchmark. Run as root:
#   bash tests/systemd/cco.sh [BIN_DIR|BINARY]   # default: target/release/cco if newer, else target/debug
# Env: CCO_SKIP_DEB=1 (skip the package check), CCO_BENCH_OUT (file for the bench output).
# Prints PASS/FAIL/SKIP lines; exits 1 on any FAIL.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$here/lib.sh"

[[ $EUID -eq 0 ]] || { echo "cco.sh must run as root" >&2; exit 2; }

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
skip() { printf 'SKIP %s\n' "$*"; }
expect() { if [[ "$3" == "$2" ]]; then pass "$1 ($3)"; else fail "$1: want '$2', got '$3'"; fi; }
# check DESC CMD...: PASS when CMD succeeds.
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }

exe=${1:-}
[[ -d "$exe" ]] && exe=$exe/cco
[[ -z "$exe" ]] || exe=$(realpath "$exe")
if [[ -z "$exe" ]]; then
  exe=$repo/target/debug/cco
  [[ -x $repo/target/release/cco && $repo/target/release/cco -nt $exe ]] && exe=$repo/target/release/cco
fi
[[ -x "$exe" ]] || { echo "no cco binary at $exe — run \`cargo build\` first" >&2; exit 2; }
echo "testing $exe"

bindir=$(mktemp -d)
chmod 755 "$bindir" # mktemp is 0700: the container user could not traverse it
cp "$exe" "$bindir/cco"
cp "$repo/bench/activation.sh" "$bindir/activation.sh"
cleanup() {
  [[ -n "${wrk_pid:-}" ]] && kill "$wrk_pid" 2>/dev/null || true
  container_stop
  rm -rf "$bindir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export CCO_BIN_DIR=$bindir

rootfs_ensure
container_boot cco-it
U=alice
user_create $U
uid=$(container_exec id -u $U)
as() { user_exec $U "$@"; }
CCO=$CCO_CT_BIN/cco
units=(cco-daemon.socket cco-daemon.service cco-sidecar.socket cco-sidecar.service)
unitdir=/home/$U/.config/systemd/user
state() { as systemctl --user is-active "$1" 2>/dev/null || true; }
health() { as curl -fsS --max-time 10 "http://127.0.0.1:$1/health" 2>&1; }
# wait_state UNIT STATE SECONDS
wait_state() {
  local deadline=$((SECONDS + $3))
  while [[ "$(state "$1")" != "$2" ]] && ((SECONDS < deadline)); do sleep 0.1; done
  [[ "$(state "$1")" == "$2" ]]
}

if as "$CCO" sidecar --help >/dev/null 2>&1; then
  sidecar=1
else
  sidecar=0
  echo "note: this build has no sidecar yet; sidecar checks are SKIPped, restart-under-load uses the daemon"
fi

# A stub Claude Code that records its environment and arguments.
as sh -c 'cat > stub-claude && chmod 755 stub-claude' <<'EOF2'
#!/bin/sh
env | grep '^ORCHESTRATOR_' | sort > "$HOME/claude-env"
printf '%s\n' "$@" > "$HOME/claude-args"
echo "stub claude ran"
EOF2

declare -A port=([daemon]=3000 [sidecar]=3001)

# --- install -------------------------------------------------------------------------
rc=0
out=$(as "$CCO" install 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/  | /'
if ((sidecar)); then expect "cco install exit status" 0 "$rc"; else pass "cco install ran (exit $rc; sidecar absent)"; fi
for s in daemon sidecar; do
  expect "cco-$s.socket enabled" enabled "$(as systemctl --user is-enabled cco-$s.socket || true)"
  if [[ $s == daemon ]] || ((sidecar)); then
    expect "cco-$s.socket listening" "active 127.0.0.1:${port[$s]}" \
      "$(state cco-$s.socket) $(as systemctl --user show -p Listen --value cco-$s.socket | cut -d' ' -f1)"
  fi
done
vout=$(as systemd-analyze --user verify "${units[@]/#/$unitdir/}" 2>&1) && [[ -z "$vout" ]] &&
  pass "systemd-analyze --user verify: clean" || fail "systemd-analyze --user verify: $vout"
expect "ExecStart points at the binary" "$CCO" \
  "$(as sed -n 's/^ExecStart=\([^ ]*\) daemon run$/\1/p' $unitdir/cco-daemon.service)"
# Hardening: systemd's own exposure score, with both services still healthy (checked below).
max_exposure=6.5
for s in daemon sidecar; do
  score=$(as systemd-analyze --user security cco-$s.service 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [[ -n "$score" ]] && awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
    pass "systemd-analyze security cco-$s.service: $score <= $max_exposure"
  else
    fail "systemd-analyze security cco-$s.service: ${score:-no score} > $max_exposure"
  fi
done

# Socket activation from cold: stop the services the install probe woke, keep the sockets.
as systemctl --user stop cco-daemon.service cco-sidecar.service
for s in daemon sidecar; do
  [[ $s == daemon ]] || ((sidecar)) || continue
  expect "cco-$s.service inactive, socket kept" "inactive listening" \
    "$(state cco-$s.service) $(as systemctl --user show -p SubState --value cco-$s.socket)"
done
reply=$(health 3000) && pass "first request to :3000 answered: $(jq -c '{status,service}' <<<"$reply")" ||
  fail "first request to :3000: $reply"
expect "cco-daemon.service activated by the connection" active "$(state cco-daemon.service)"
if ((sidecar)); then
  reply=$(health 3001) && pass "first request to :3001 answered: $(jq -c '{status,service}' <<<"$reply")" ||
    fail "first request to :3001: $reply"
  expect "cco-sidecar.service activated by the connection" active "$(state cco-sidecar.service)"
  check "cco health green" as "$CCO" health
else
  skip "sidecar activation and cco health (no sidecar in this build)"
fi

# journald: the service logs natively (tracing-journald), not as plain stderr lines.
transport=$(as journalctl --user -u cco-daemon.service -o json --no-pager 2>/dev/null |
  jq -r 'select(.MESSAGE | test("daemon ready")) | ._TRANSPORT' | tail -1)
expect "daemon logs reach journald natively" journal "$transport"
if as "$CCO" logs daemon -n 20 2>&1 | grep -q 'daemon ready'; then pass "cco logs daemon shows the journal"; else fail "cco logs daemon: $(as "$CCO" logs daemon -n 5 2>&1 | tail -3)"; fi

# The launcher: health, sealed files, full ORCHESTRATOR_* env, exec of the stub.
rc=0
lout=$(as env CCO_CLAUDE=/home/$U/stub-claude "$CCO" -p hello 2>&1) || rc=$?
expect "launcher exec'd the stub claude" "0 yes" "$rc $(grep -q 'stub claude ran' <<<"$lout" && echo yes)"
want=(ORCHESTRATOR_ENABLED ORCHESTRATOR_API_URL ORCHESTRATOR_SIDECAR_URL ORCHESTRATOR_SETTINGS
  ORCHESTRATOR_AGENTS ORCHESTRATOR_RULES ORCHESTRATOR_HOOKS ORCHESTRATOR_HOOKS_CONFIG
  ORCHESTRATOR_HOOKS_ENABLED ORCHESTRATOR_AUTO_ALLOW_READ ORCHESTRATOR_REQUIRE_CUD_CONFIRMATION
  ORCHESTRATOR_TOKEN)
got=$(as cat claude-env 2>/dev/null | cut -d= -f1 | tr '\n' ' ')
missing=()
for v in "${want[@]}"; do [[ " $got " == *" $v "* ]] || missing+=("$v"); done
if ((${#missing[@]} == 0)); then pass "stub claude saw all ${#want[@]} ORCHESTRATOR_* variables"; else fail "stub claude missing: ${missing[*]}"; fi
expect "ORCHESTRATOR_API_URL" "ORCHESTRATOR_API_URL=http://127.0.0.1:3000" "$(as grep '^ORCHESTRATOR_API_URL=' claude-env || true)"

# --- status ---------------------------------------------------------------------------
sout=$(as "$CCO" daemon status 2>&1) || true
if grep -q '(this binary)' <<<"$sout" && grep -q 'cco-daemon.socket *active' <<<"$sout"; then
  pass "cco daemon status shows socket, service and ExecStart"
else
  fail "cco daemon status: $sout"
fi

# --- crash: kill -9 the daemon, the socket stays ------------------------------------
pid=$(as systemctl --user show -p MainPID --value cco-daemon.service)
as kill -9 "$pid"
reply=$(health 3000) && pass "request after kill -9 of pid $pid answered" || fail "after kill -9: $reply"
expect "daemon socket survived the crash" active "$(state cco-daemon.socket)"

# --- restart under load ---------------------------------------------------------------
if ((sidecar)); then lsvc=sidecar lport=3001; else lsvc=daemon lport=3000; fi
health $lport >/dev/null || true
as wrk -t2 -c16 -d10s "http://127.0.0.1:$lport/health" >"$bindir/wrk.out" 2>&1 &
wrk_pid=$!
sleep 3
old=$(as systemctl --user show -p MainPID --value cco-$lsvc.service)
as systemctl --user restart cco-$lsvc.service
new=$(as systemctl --user show -p MainPID --value cco-$lsvc.service)
wait "$wrk_pid" || true
wrk_pid=
sed 's/^/  | /' "$bindir/wrk.out"
[[ "$old" != "$new" && "$new" != 0 ]] && pass "cco-$lsvc.service restarted under load (pid $old -> $new)" ||
  fail "cco-$lsvc.service did not restart (pid $old -> $new)"
errs=$(grep -E 'Socket errors|Non-2xx' "$bindir/wrk.out" || true)
reqs=$(awk '/requests in/ { print $1 }' "$bindir/wrk.out")
if [[ -z "$errs" && -n "$reqs" && "$reqs" -gt 0 ]]; then
  pass "restart of cco-$lsvc during 10 s of wrk: $reqs requests, zero errors"
else
  fail "restart under load: ${errs:-no wrk result}"
fi

# --- idle exit ------------------------------------------------------------------------
# Restarts so far count against the 5-starts-per-10-s limit; start the idle test afresh.
as systemctl --user reset-failed cco-daemon.service 2>/dev/null || true
cfg=/home/$U/.config/cco/daemon.toml
as sed -i '1i idle_exit_after = "2s"' "$cfg"
as systemctl --user restart cco-daemon.service
health 3000 >/dev/null || true
check "daemon exits after 2 s idle" wait_state cco-daemon.service inactive 15
expect "daemon socket still listening after idle exit" listening \
  "$(as systemctl --user show -p SubState --value cco-daemon.socket)"
expect "idle exit is not a failure" success "$(as systemctl --user show -p Result --value cco-daemon.service)"
reply=$(health 3000) && pass "next connection after idle exit answered" || fail "after idle exit: $reply"
as sed -i '/^idle_exit_after = "2s"$/d' "$cfg"
as systemctl --user restart cco-daemon.service

# --- benchmark: cold activation -------------------------------------------------------
bench=$(as bash "$CCO_CT_BIN/activation.sh" daemon 20 2>&1) || true
printf '%s\n' "$bench" | tail -1
printf '%s\n' "$bench" >"${CCO_BENCH_OUT:-/dev/null}"
median=$(sed -n 's/.*median \([0-9.]*\) ms.*/\1/p' <<<"$bench")
# A number for BENCHMARKS.md, not a timed pass/fail: the test only demands that it was measured.
if [[ -n "$median" ]]; then
  pass "cold activation measured: median ${median} ms"
else
  fail "cold activation was not measured"
  printf '%s\n' "$bench" | tail -5
  as journalctl --user -u cco-daemon.socket -u cco-daemon.service -n 25 --no-pager -o short-monotonic | sed 's/^/  | /'
fi

# --- idempotence ----------------------------------------------------------------------
out=$(as "$CCO" install 2>&1) || true
if ((sidecar)); then
  grep -q '^unchanged' <<<"$out" && pass "second cco install: unchanged" || fail "second install: $out"
else
  # Without a sidecar its socket failed, so install rightly re-enables it; the files must not change.
  n=$(grep -c ' unchanged ' <<<"$out" || true)
  expect "second cco install leaves all 4 unit files unchanged (sidecar absent)" 4 "$n"
fi

# --- an interrupted port change heals; concurrent installs serialize --------------------
# The daemon's port moves to 3002 in the config, and the new socket unit is on disk as an
# install interrupted before `daemon-reload` leaves it: the manager still listens on 3000.
as sed -i 's/^# \[daemon\]$/[daemon]/; s/^# port = 3000$/port = 3002/' "$cfg"
as sed -i 's/127\.0\.0\.1:3000/127.0.0.1:3002/g' "$unitdir/cco-daemon.socket"
rcs=()
for i in 1 2 3 4 5 6; do as "$CCO" install >"$bindir/install-$i.out" 2>&1 & done
for i in 1 2 3 4 5 6; do rc=0; wait -n || rc=$?; rcs+=("$rc"); done
expect "6 concurrent installs after an interrupted port change all exit 0" "0 0 0 0 0 0" "${rcs[*]}"
expect "daemon socket moved to the new port" "127.0.0.1:3002" \
  "$(as systemctl --user show -p Listen --value cco-daemon.socket | cut -d' ' -f1)"
reply=$(health 3002) && pass "daemon answers on :3002" || fail "daemon on :3002: $reply"
as sed -i 's/^\[daemon\]$/# [daemon]/; s/^port = 3002$/# port = 3000/' "$cfg"
out=$(as "$CCO" install 2>&1) || fail "install back to :3000: $out"
reply=$(health 3000) && pass "daemon back on :3000" || fail "daemon back on :3000: $reply"

# A binary path systemd cannot carry is refused before anything changes.
as sh -c 'mkdir -p "$HOME/odd\$dir" && cp "$0" "$HOME/odd\$dir/cco"' "$CCO"
rc=0
out=$(as sh -c '"$HOME/odd\$dir/cco" install' 2>&1) || rc=$?
if ((rc != 0)) && grep -q 'systemd cannot run' <<<"$out" && health 3000 >/dev/null; then
  pass "install from a \$ path refused, services untouched"
else
  fail "install from a \$ path (exit $rc): $out"
fi
expect "units still point at the real binary" "$CCO" \
  "$(as sed -n 's/^ExecStart=\([^ ]*\) daemon run$/\1/p' $unitdir/cco-daemon.service)"

# --- uninstall ------------------------------------------------------------------------
as "$CCO" uninstall | sed 's/^/  | /'
left=$(as sh -c "ls $unitdir/cco-* 2>/dev/null" || true)
expect "no unit files left" "" "$left"
listening=$(container_exec ss -Htln '( sport = :3000 or sport = :3001 )' | wc -l)
expect "nothing listens on :3000/:3001" 0 "$listening"

# --- Debian package -------------------------------------------------------------------
if [[ -n "${CCO_SKIP_DEB:-}" ]]; then
  skip "Debian package (CCO_SKIP_DEB)"
else
  # cargo-deb when it can be had (2-3 min to build once); build.sh falls back to dpkg-deb.
  if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked >"$bindir/cargo-deb.log" 2>&1 || echo "note: cargo-deb not installable; using dpkg-deb"
  fi
  debout=$(CCO_DEB_BIN=$exe bash "$repo/packaging/deb/build.sh" "$bindir" 2>&1) || true
  deb=$(ls "$bindir"/cco_*.deb 2>/dev/null | head -1 || true)
  if [[ -z "$deb" ]]; then
    fail "building the .deb: $(tail -5 <<<"$debout")"
  else
    pass "built $(basename "$deb") ($(tail -1 <<<"$debout"))"
    container_exec dpkg -i "$CCO_CT_BIN/$(basename "$deb")" >/dev/null 2>&1 &&
      pass "dpkg -i in the container" || fail "dpkg -i: $(container_exec dpkg -i "$CCO_CT_BIN/$(basename "$deb")" 2>&1 | tail -3)"
    expect "package does not enable the sockets" disabled "$(as systemctl --user is-enabled cco-daemon.socket 2>/dev/null || true)"
    vout=$(as systemd-analyze --user verify /usr/lib/systemd/user/cco-{daemon,sidecar}.{socket,service} 2>&1) &&
      [[ -z "$vout" ]] && pass "packaged units: systemd-analyze verify clean" || fail "packaged units verify: $vout"
    out=$(as /usr/bin/cco install 2>&1) || true
    printf '%s\n' "$out" | sed 's/^/  | /'
    grep -q 'cco-daemon.socket *packaged' <<<"$out" && pass "cco install uses the packaged units" ||
      fail "cco install did not use the packaged units"
    expect "no shadowing copies in $unitdir" "" "$(as sh -c "ls $unitdir/cco-* 2>/dev/null" || true)"
    expect "socket from /usr/lib/systemd/user" "/usr/lib/systemd/user/cco-daemon.socket active" \
      "$(as systemctl --user show -p FragmentPath --value cco-daemon.socket) $(state cco-daemon.socket)"
    reply=$(health 3000) && pass "packaged daemon answers" || fail "packaged daemon: $reply"
    as /usr/bin/cco uninstall >/dev/null
    expect "uninstall disables packaged sockets" inactive "$(state cco-daemon.socket)"
  fi
fi

container_stop
if ((failures)); then
  echo "cco.sh: $failures check(s) FAILED"
  exit 1
fi
echo "cco.sh: all checks passed"
