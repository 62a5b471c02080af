#!/usr/bin/env bash
# The replay benchmark with its baselines: installs jq if it is missing (wc is coreutils), then runs
# `cargo bench --bench replay_throughput`, which prints replay's time beside `wc -l` and a jq filter
# on the same file, and their ratios. KEXTWATCH_BENCH_EVENTS sets the stream size (default 1,000,000).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v jq >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq jq >/dev/null
fi
cargo bench --bench replay_throughput
