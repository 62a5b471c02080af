#!/usr/bin/env bash
# Flake hunt: runs every test binary ROUNDS times (default 20) while busy loops keep every core
# loaded, and reports failures per test. A test that fails here can fail CI by chance: fix it.
#
#   scripts/stress-tests.sh [ROUNDS] [FILTER]     # FILTER: only binaries whose name contains it
#
# Needs what scripts/test.sh needs (rsyslog for the delivery tests). Logs of failed runs are kept
# in target/stress/.
set -euo pipefail
cd "$(dirname "$0")/.."

# All in a function, read whole before it runs: editing this file during a long run cannot break it.
main() {
    local rounds=${1:-20}
    filter=${2:-}
    logs=target/stress
    rm -rf "$logs"
    mkdir -p "$logs"

    # Build once; the test executables are listed in cargo's JSON messages.
    mapfile -t bins < <(cargo test --locked --no-run --message-format=json 2>/dev/null |
        grep '"profile":{[^}]*"test":true' |
        grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/' | sort -u)
    [ "${#bins[@]}" -gt 0 ] || { echo "stress-tests: no test binaries built" >&2; exit 1; }
    # Run copies, so a rebuild while this runs does not change what is being tested.
    mkdir -p "$logs/bin"
    for i in "${!bins[@]}"; do
        cp "${bins[$i]}" "$logs/bin/"
        bins[i]="$logs/bin/$(basename "${bins[$i]}")"
    done

    load_pids=()
    # shellcheck disable=SC2317  # called by the EXIT trap
    stop_load() {
        for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    }
    trap stop_load EXIT
    cores=$(nproc)
    for _ in $(seq "$cores"); do
        (while :; do :; done) &
        load_pids+=("$!")
    done
    echo "stress-tests: ${#bins[@]} binaries x $rounds rounds, $cores busy loops beside them"

    declare -A failures=()
    runs=0
    failed_runs=0
    start=$(date +%s)
    for round in $(seq "$rounds"); do
        for bin in "${bins[@]}"; do
            name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
            [[ -z "$filter" || "$name" == *"$filter"* ]] || continue
            runs=$((runs + 1))
            log="$logs/$name.round$round.log"
            if "$bin" >"$log" 2>&1; then
                rm -f "$log"
            else
                failed_runs=$((failed_runs + 1))
                mapfile -t names < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log")
                [ "${#names[@]}" -gt 0 ] || names=("(binary exited without a test failure; see $log)")
                for t in "${names[@]}"; do
                    key="$name::$t"
                    failures[$key]=$((${failures[$key]:-0} + 1))
                done
            fi
        done
        echo "round $round/$rounds: $failed_runs failed runs so far ($(($(date +%s) - start)) s)"
    done

    echo
    if [ "$failed_runs" -eq 0 ]; then
        echo "stress-tests: $runs runs in $rounds rounds, every one passed ($(($(date +%s) - start)) s)"
        exit 0
    fi
    echo "stress-tests: $failed_runs of $runs runs failed; failures per test:"
    for key in "${!failures[@]}"; do
        printf '  %3d  %s\n' "${failures[$key]}" "$key"
    done | sort -rn
    echo "logs: $logs/"
    exit 1
}

main "$@"
