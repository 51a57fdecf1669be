#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, starting from the committed corpus.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 30 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); builds with `-s none`, so a stable toolchain
# is enough. New inputs go to a scratch copy of the corpus, not the committed one. A crash
# leaves its input in fuzz/artifacts/<target>/ and fails the run: turn it into a regression
# test. Prints one line per target with the number of executions.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(discovery_wire peer_wire control_protocol descriptor config state_file)
fi

for t in "${targets[@]}"; do
    if ! out=$(cargo fuzz build -s none "$t" 2>&1); then
        echo "$out"
        exit 1
    fi
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    cp corpus/"$t"/* "$scratch/$t/"
    log="$scratch/$t.log"
    if cargo fuzz run -s none "$t" "$scratch/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo "?")
        echo "fuzz $t: ${runs} executions in ${seconds} s, no crash"
    else
        echo "fuzz $t: FAILED"
        grep -E 'panicked|SUMMARY|Test unit written' "$log" | head -5
        status=1
    fi
done
exit $status
