#!/usr/bin/env bash
# The accounting soak at full size: 100,000 alerts through a syslog receiver restarted every few
# seconds and a daemon killed and restarted twice; prints produced / delivered / duplicates /
# spooled / counted-lost. The test suite runs the same test with 12,000 alerts.
#
#   scripts/soak.sh [ALERTS]
set -euo pipefail
cd "$(dirname "$0")/.."
export KEXTWATCH_SOAK_ALERTS="${1:-100000}"
cargo test --release --test daemon soak_every_alert -- --nocapture 2>&1 | grep -E '^soak:|test result|panicked'
