#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (N = $1, default 20), with its protocol's
# dictionary (dicts/PREFIX.dict for the longest PREFIX_* of the target's name that has
# one, or the alias below; else dicts/pop3.dict, whose line-protocol words suit the
# framers) and the
# corpus in corpus/<target>/ (the committed seed-* files plus whatever earlier local
# runs found). Exits non-zero if any target crashes or fails to build; the crashing
# input is in artifacts/<target>/ (copy it to regressions/<target>/ so `cargo test`
# replays it once the bug is fixed).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer instrumentation needs
# nightly -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, so no
# nightly toolchain is required. Called from .ci/run.
#
# FUZZ_TARGETS="a b" limits the run to those targets (default: all, from `cargo fuzz list`).
set -uo pipefail

# Targets with a known, reported, not yet fixed bug, each with the panic message that bug
# produces (see regressions/README.md). A crash with that message is reported but does
# not fail the run; any other crash in the same target does. Remove the entry with the fix.
declare -A known_open=()

# Targets whose dictionary is not named after a prefix of their own name.
declare -A dict_alias=([smtp_reply]=smtp_client)

# The dictionary of a target: dicts/<alias>.dict, else the longest prefix of the target
# name ending at an underscore that has a dictionary (smtp_client_session tries
# smtp_client_session, smtp_client, smtp), else dicts/pop3.dict.
dict_for() {
  local name=${dict_alias[$1]:-$1}
  while :; do
    [ -f "dicts/$name.dict" ] && { echo "dicts/$name.dict"; return; }
    [ "$name" = "${name%_*}" ] && break
    name=${name%_*}
  done
  echo dicts/pop3.dict
}

seconds=${1:-20}
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! command -v cargo-fuzz >/dev/null; then
  echo "run-all.sh: cargo-fuzz is missing; cargo install cargo-fuzz --locked" >&2
  exit 2
fi

targets=${FUZZ_TARGETS:-$(cargo fuzz list)} || exit 2
echo "=== building fuzz targets: $(echo $targets)"
cargo fuzz build || exit 2

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
summary=()
for target in $targets; do
  echo "=== fuzzing $target for ${seconds}s"
  mkdir -p "corpus/$target"
  log="$logs/$target.log"
  dict=$(dict_for "$target")
  # -max_len: session scripts need room for several commands and replies.
  cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -dict="$dict" -max_len=8192 \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  corpus=$(ls "corpus/$target" | wc -l)
  known=${known_open[$target]:-}
  if [ "$status" -ne 0 ] && [ -n "$known" ] && grep -qF "$known" "$log"; then
    summary+=("$target: KNOWN OPEN BUG reproduced after ${execs:-?} runs (${rate:-?} exec/s): $known")
    echo "--- $target hit its known open bug (regressions/README.md); not counted as a failure"
  elif [ "$status" -ne 0 ]; then
    failed+=("$target")
    summary+=("$target: FAILED (exit $status)")
    echo "--- $target failed; end of its log:"
    grep -v -E '^#[0-9]+.*(NEW|REDUCE|pulse)' "$log" | tail -60
    ls -1 "artifacts/$target" 2>/dev/null | sed "s|^|    artifact: fuzz/artifacts/$target/|"
  else
    summary+=("$target: ok, ${execs:-?} runs, ${rate:-?} exec/s, corpus $corpus files")
  fi
done

echo "=== fuzzing summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  exit 1
fi
