#!/usr/bin/env bash
# Bounded fuzzing for CI (issue 15): builds the five fuzz targets with nightly and libFuzzer and
# runs each for a fixed time on the committed corpus; a crash fails the run and names the
# reproducer. Without a nightly toolchain it says loudly that only the corpus ran.
# Usage: fuzz/run.sh [seconds per target, default 30] [target…]
#   FUZZ_TARGET_DIR: where the instrumented build goes (default: the CI cache, reused by reruns)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-30}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(ids jwt post_body hook_stdin config)
# Per input: a slower one is reported as a hang (libFuzzer's default is 20 minutes).
INPUT_TIMEOUT_SECS=10
# What one run of the instrumented process may hold before libFuzzer calls it a leak/OOM.
RSS_LIMIT_MB=2048

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cat >&2 <<'MSG'
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! FUZZING DID NOT RUN: no nightly toolchain. Only the committed corpus ran, as ordinary
!!! tests (tests/it/fuzz_corpus.rs). To fuzz: rustup toolchain install nightly
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
MSG
  exit 0
fi

# Plain `cargo +nightly build` with the flags cargo-fuzz sets, instead of installing
# cargo-fuzz: nothing to download or compile besides the targets, and the same build.
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cco-ci/fuzz-target}
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Zsanitizer=address -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
# The fuzz workspace's lock starts from the main one, so both build the same dependency versions.
cp ../Cargo.lock Cargo.lock
echo "fuzz: building ${TARGETS[*]} (nightly, libFuzzer, ASan) into $CARGO_TARGET_DIR"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
bins=()
for t in "${TARGETS[@]}"; do bins+=(--bin "$t"); done
# Bounded too: a cold cache (a fresh machine) builds every dependency with ASan, which can take
# longer than CI should wait. Past the budget the build stops (what it compiled is kept for the
# next run) and the run says loudly that only the corpus ran; a build error still fails.
BUILD_MINUTES=${FUZZ_BUILD_MINUTES:-25}
rc=0
timeout "${BUILD_MINUTES}m" cargo +nightly build --release --target "$triple" "${bins[@]}" || rc=$?
if [ "$rc" = 124 ]; then
  cat >&2 <<MSG
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! FUZZING DID NOT RUN: the instrumented build did not finish within ${BUILD_MINUTES} min (a cold
!!! cache). Only the committed corpus ran, as ordinary tests (tests/it/fuzz_corpus.rs). The
!!! partial build is kept in $CARGO_TARGET_DIR: the next run continues it, or run
!!! FUZZ_BUILD_MINUTES=120 bash fuzz/run.sh once.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
MSG
  exit 0
elif [ "$rc" != 0 ]; then
  echo "fuzz: the build failed (exit $rc), see above" >&2
  exit "$rc"
fi

out=$CARGO_TARGET_DIR/$triple/release
artifacts=$CARGO_TARGET_DIR/artifacts
failed=()
for t in "${TARGETS[@]}"; do
  # New inputs go to a scratch dir (listed first); the committed corpus is only read.
  scratch=$CARGO_TARGET_DIR/corpus/$t
  mkdir -p "$scratch" "$artifacts/$t"
  log=$CARGO_TARGET_DIR/$t.log
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  if "$out/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout="$INPUT_TIMEOUT_SECS" \
    -rss_limit_mb="$RSS_LIMIT_MB" -print_final_stats=1 -artifact_prefix="$artifacts/$t/" \
    "$scratch" "corpus/$t" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -2 | sed "s/^/fuzz: $t: /"
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; the last lines of $log:" >&2
    tail -30 "$log" >&2
    for repro in $(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log"); do
      echo "fuzz: $t: reproducer $repro — rerun with: $out/$t $repro" >&2
      echo "fuzz:   or keep it as a regression input: cp $repro fuzz/corpus/$t/ && cargo test --test it fuzz_corpus" >&2
    done
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${TARGETS[*]}: no crash in ${SECONDS_PER_TARGET}s each"
