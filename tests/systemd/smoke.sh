#!/usr/bin/env bash
# Proves the harness in lib.sh: boots a container, creates a lingering user and,
# as that user, runs a socket-activated Type=notify unit pair shaped like cco's
# (see DESIGN.md "Service units"). Prints PASS/FAIL lines; exits 1 on any FAIL.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$here/lib.sh"

[[ $EUID -eq 0 ]] || { echo "smoke.sh must run as root" >&2; exit 2; }

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
# expect DESC WANT GOT
expect() { if [[ "$3" == "$2" ]]; then pass "$1 ($3)"; else fail "$1: want '$2', got '$3'"; fi; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_start=$(now)
smoke_bin=$(mktemp -d)
chmod 755 "$smoke_bin" # mktemp is 0700: the container user could not traverse it
cleanup() {
  container_stop
  rm -rf "$smoke_bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Unless the caller provides CCO_BIN_DIR, bind a dir holding a host binary to
# prove host-built executables run inside (same glibc).
if [[ -z "${CCO_BIN_DIR:-}" ]]; then
  cp /usr/bin/sha256sum "$smoke_bin/cco-smoke-hostbin"
  export CCO_BIN_DIR=$smoke_bin
fi

t=$(now)
rootfs_ensure
echo "TIME rootfs_ensure $(since "$t")s"

t=$(now)
container_boot cco-smoke
echo "TIME container_boot $(since "$t")s (init pid $CCO_CT_INIT_PID)"
pass "container booted: $(container_exec systemctl is-system-running || true)"

t=$(now)
user_create ccotest
echo "TIME user_create $(since "$t")s"
uid=$(container_exec id -u ccotest)
expect "linger enabled" yes "$(container_exec loginctl show-user ccotest -p Linger --value)"
expect "user manager state" running "$(user_exec ccotest systemctl --user is-system-running || true)"

# Harness plumbing: identity, exit status, stdin, bind mount.
# shellcheck disable=SC2016 # expanded inside the container, on purpose
expect "user_exec identity" "ccotest $uid /run/user/$uid" \
  "$(user_exec ccotest sh -c 'echo "$(id -un) $(id -u) $XDG_RUNTIME_DIR"')"
rc=0
user_exec ccotest sh -c 'exit 7' || rc=$?
expect "user_exec exit status passes through" 7 "$rc"
expect "user_exec stdin passes through" hello "$(echo hello | user_exec ccotest cat)"
if [[ -x "$CCO_BIN_DIR/cco-smoke-hostbin" ]]; then
  expect "host binary runs from $CCO_CT_BIN" \
    "$(echo x | sha256sum)" "$(echo x | user_exec ccotest cco-smoke-hostbin)"
fi
if user_exec ccotest sh -c ": > $CCO_CT_BIN/.probe" 2>/dev/null ||
  container_exec sh -c ": > $CCO_CT_BIN/.probe" 2>/dev/null; then
  fail "$CCO_CT_BIN is writable"
else
  pass "$CCO_CT_BIN is read-only"
fi

# A unit pair shaped like cco's: enabled socket with a named fd, Type=notify
# service with no [Install].
user_exec ccotest mkdir -p .config/systemd/user
user_exec ccotest sh -c 'cat > .config/systemd/user/smoke.socket' <<'EOF'
[Unit]
Description=smoke socket

[Socket]
ListenStream=127.0.0.1:4555
FileDescriptorName=web

[Install]
WantedBy=sockets.target
EOF
user_exec ccotest sh -c 'cat > .config/systemd/user/smoke.service' <<'EOF'
[Unit]
Description=smoke service
Requires=smoke.socket
After=smoke.socket

[Service]
Type=notify
ExecStart=/usr/bin/python3 %h/smoke-server.py
Restart=on-failure
NoNewPrivileges=yes
EOF
user_exec ccotest sh -c 'cat > smoke-server.py' <<'EOF'
# Serves the inherited listening socket (fd 3) and signals readiness via sd_notify.
import os, socket, sys
assert os.environ.get("LISTEN_PID") == str(os.getpid()), "LISTEN_PID mismatch"
srv = socket.socket(fileno=3)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
    n.sendto(b"READY=1", addr)
print("smoke-server ready", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.recv(4096)
        body = "activated fds=%s names=%s\n" % (os.environ["LISTEN_FDS"], os.environ["LISTEN_FDNAMES"])
        conn.sendall(("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body)).encode())
    print("served one request", flush=True)
EOF

# systemd-analyze verify as the user. It exits 0 on mere warnings (unknown keys),
# so a clean unit must also produce no output.
if out=$(user_exec ccotest systemd-analyze --user verify \
  .config/systemd/user/smoke.socket .config/systemd/user/smoke.service 2>&1) && [[ -z "$out" ]]; then
  pass "systemd-analyze --user verify: clean"
else
  fail "systemd-analyze --user verify: $out"
fi
printf '[Service]\nExecStart=/nonexistent/cco\n' |
  user_exec ccotest sh -c 'cat > .config/systemd/user/broken.service'
if user_exec ccotest systemd-analyze --user verify .config/systemd/user/broken.service >/dev/null 2>&1; then
  fail "systemd-analyze --user verify accepted a unit with a missing ExecStart binary"
else
  pass "systemd-analyze --user verify rejects a missing ExecStart binary"
fi
user_exec ccotest rm .config/systemd/user/broken.service

user_exec ccotest systemctl --user daemon-reload
user_exec ccotest systemctl --user enable --now smoke.socket 2>&1 | sed 's/^/  /'
expect "socket enabled" enabled "$(user_exec ccotest systemctl --user is-enabled smoke.socket || true)"
expect "socket listening" listening \
  "$(user_exec ccotest systemctl --user show -p SubState --value smoke.socket)"
expect "service inactive before first request" inactive \
  "$(user_exec ccotest systemctl --user is-active smoke.service || true)"

t=$(now)
reply=$(user_exec ccotest curl -fsS --max-time 10 http://127.0.0.1:4555/ 2>&1) || true
echo "TIME first request (activation) $(since "$t")s"
expect "reply via socket activation" "activated fds=1 names=web" "$reply"
expect "service active after request" active \
  "$(user_exec ccotest systemctl --user is-active smoke.service || true)"
expect "second request served by running service" "activated fds=1 names=web" \
  "$(user_exec ccotest curl -fsS --max-time 10 http://127.0.0.1:4555/ 2>&1 || true)"

# `cco logs` will wrap journalctl --user; check the user can read its service's output.
logs=$(user_exec ccotest journalctl --user -u smoke.service --no-pager -o cat 2>&1 || true)
if grep -q 'smoke-server ready' <<<"$logs"; then
  pass "journalctl --user shows service output"
else
  fail "journalctl --user missing service output: $(tail -n 3 <<<"$logs")"
fi

user_exec ccotest systemctl --user disable --now smoke.socket smoke.service 2>&1 | sed 's/^/  /'
expect "socket inactive after disable --now" inactive \
  "$(user_exec ccotest systemctl --user is-active smoke.socket || true)"

t=$(now)
container_stop
echo "TIME container_stop $(since "$t")s"
if [[ -e "$(_cco_rootfs_dir)/home/ccotest" ]]; then
  fail "container writes leaked into the cached rootfs"
else
  pass "cached rootfs untouched"
fi
echo "TIME total $(since "$t_start")s"

if ((failures)); then
  echo "smoke: $failures check(s) FAILED"
  exit 1
fi
echo "smoke: all checks passed"
