#!/usr/bin/env bash
# The bytes cco adds to Claude's requests (issue 11 target: <= 8,000 per main-thread request
# with the default config). Drives the pinned Claude Code against the fake Messages API of the
# integration tests, which logs every request body, and prints per main-thread and per
# sub-agent request: a plain `claude -p hello`, and `cco -p hello` with the default roster
# (auto), `--roster all` and `--roster none`. The same run fails if the default exceeds the
# budget (tests/it/diet.rs). Then `cco agents cost` for this checkout, its own estimate.
# Usage: bench/context_bytes.sh   (needs the pinned Claude Code: tests/run.sh installs it,
# or set CCO_TEST_CLAUDE to its path)
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^CLAUDE_CODE_VERSION=//p' tests/run.sh)
default_claude="${XDG_CACHE_HOME:-$HOME/.cache}/cco-ci/claude-$version/node_modules/.bin/claude"
export CCO_TEST_CLAUDE=${CCO_TEST_CLAUDE:-$default_claude}
[ -x "$CCO_TEST_CLAUDE" ] || {
  echo "no Claude Code $version at $CCO_TEST_CLAUDE — run tests/run.sh once (it installs it) or set CCO_TEST_CLAUDE" >&2
  exit 1
}
# The test refuses to skip when it cannot run.
export CCO_REQUIRE_REAL_CLAUDE=1
echo "Claude Code $("$CCO_TEST_CLAUDE" --version 2>/dev/null | head -1)"
cargo test --quiet --test it diet::cco_adds_at_most -- --nocapture --test-threads=1 2>&1 |
  sed -n '/^request bytes/,/^cco --roster none/p'
echo
echo "cco agents cost (estimate for this checkout, a Rust crate):"
cargo run --quiet -- agents cost | sed 's/^/  /'
