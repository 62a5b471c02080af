#!/usr/bin/env bash
# Mutation testing for one module group, with only the test binaries that exercise it (so a mutant
# costs one build and tens of seconds of tests, not the whole suite):
#
#   scripts/mutants.sh detect|config|signing|output|kextpolicy [extra cargo-mutants args]
#   scripts/mutants.sh detect -f src/detect/fold.rs      # one file of the group
#
# Results land in mutants.out/ (outcomes.json, missed.txt, caught.txt). Needs cargo-mutants
# (`cargo install cargo-mutants`); the output group also needs rsyslog (scripts/test.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
group=${1:?usage: scripts/mutants.sh detect|config|signing|output|kextpolicy [cargo-mutants args]}
shift
case "$group" in
    detect) tests=(--lib --test detection --test verdict --test lineage --test tamper --test kextpolicy --test decoding --test cli) ;;
    config) tests=(--lib --test config --test cli --test detection) ;;
    signing) tests=(--lib --test signing --test fuzz_signing --test cli) ;;
    output) tests=(--lib --test syslog --test cli) ;;
    kextpolicy) tests=(--lib --test kextpolicy --test cli) ;;
    *) echo "mutants.sh: unknown group $group" >&2; exit 2 ;;
esac
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
files=(-f "src/$group/**")
for a in "$@"; do
    [[ "$a" == -f || "$a" == --file ]] && files=()
done
# The test selection goes to every cargo invocation (-C), so the build step of each mutant
# compiles only these binaries, not the whole suite.
cargo_args=()
for t in "${tests[@]}"; do cargo_args+=(-C "$t"); done
exec cargo mutants --no-shuffle "${files[@]}" "${cargo_args[@]}" "$@"
