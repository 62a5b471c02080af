#!/usr/bin/env bash
# Records an independent tool's reading of every fixture kext executable, for tests/signing.rs to
# compare kextwatch's reading against: `rcodesign print-signature-info` (apple-codesign), saved as
# tests/fixtures/kexts/oracle/NAME.rcodesign.yaml. make-kext-fixtures.sh runs this after building;
# run it by hand only when the fixtures change (the test checks each recording names the exact
# bytes it read, by SHA-256). rcodesign cannot read 64-bit universal headers: Universal64 is the
# same two signed slices as Universal, and the test holds it to Universal's recording.
#
#   cargo install apple-codesign    # rcodesign
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rcodesign >/dev/null || { echo "record-signing-oracle: rcodesign not found (cargo install apple-codesign)" >&2; exit 1; }
out=tests/fixtures/kexts/oracle
mkdir -p "$out"
for k in Unsigned Adhoc Developer Universal Mixed; do
    {
        echo "# rcodesign $(rcodesign --version | awk '{print $2}') print-signature-info, recorded $(date -u +%Y-%m-%d)"
        rcodesign print-signature-info "tests/fixtures/kexts/$k.kext/Contents/MacOS/$k"
    } > "$out/$k.rcodesign.yaml"
done
echo "recorded rcodesign's reading of the fixtures in $out"
