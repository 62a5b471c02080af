#!/usr/bin/env bash
# Regenerate tests/fixtures/kexts: kext bundles whose executables are real Mach-O files with real code
# signatures, made with Debian's clang and lld and with rcodesign (apple-codesign).
#
#   apt-get install clang lld llvm        # ld64.lld, llvm-lipo
#   cargo install apple-codesign          # rcodesign, ~7 minutes to build
#   scripts/make-kext-fixtures.sh
#
# CI uses the committed output and does not run this. At the end the script cross-checks kextwatch's
# reading of every signature against `rcodesign print-signature-info`.
set -euo pipefail
cd "$(dirname "$0")/.."

out=tests/fixtures/kexts
team=K3XW9TESTQ
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null || { echo "make-kext-fixtures: $1 not found ($2)" >&2; exit 1; }; }
need clang "apt-get install clang"
ld64=$(command -v ld64.lld || command -v ld64.lld-14 || true)
[ -n "$ld64" ] || { echo "make-kext-fixtures: ld64.lld not found (apt-get install lld)" >&2; exit 1; }
need rcodesign "cargo install apple-codesign"
lipo=$(command -v llvm-lipo-22 || command -v llvm-lipo || true)
[ -n "$lipo" ] || { echo "make-kext-fixtures: llvm-lipo not found (apt-get install llvm)" >&2; exit 1; }

cat > "$work/kext.c" <<'EOF'
/* A minimal kext body: start and stop routines. */
int kextwatch_fixture_start(void *kmod_info, void *data) { (void)kmod_info; (void)data; return 0; }
int kextwatch_fixture_stop(void *kmod_info, void *data) { (void)kmod_info; (void)data; return 0; }
EOF

link() { # arch target output
    clang --target="$2" -O1 -c -o "$work/$1.o" "$work/kext.c"
    "$ld64" -arch "$1" -platform_version macos 11.0 11.0 -bundle -undefined dynamic_lookup -o "$3" "$work/$1.o"
}
link x86_64 x86_64-apple-macos11 "$work/unsigned-x86_64"   # lld does not sign x86_64
link arm64 arm64-apple-macos11 "$work/adhoc-arm64"         # lld signs arm64 ad hoc (linker-signed)

# A throwaway self-signed certificate carrying a made-up Team ID.
rcodesign generate-self-signed-certificate --person-name "kextwatch fixture" --team-id "$team" \
    --pem-unified-file "$work/dev.pem" >/dev/null
sign() { # input output identifier
    cp "$1" "$2"
    rcodesign sign --pem-file "$work/dev.pem" --team-name "$team" --timestamp-url none \
        --binary-identifier "$3" --code-signature-flags runtime "$2" >"$work/sign.log" 2>&1 || { cat "$work/sign.log" >&2; exit 1; }
}
sign "$work/unsigned-x86_64" "$work/developer-x86_64" com.example.kextwatch.developer
sign "$work/adhoc-arm64" "$work/developer-arm64" com.example.kextwatch.developer
"$lipo" -create "$work/developer-x86_64" "$work/developer-arm64" -output "$work/universal-developer"
"$lipo" -create "$work/developer-x86_64" "$work/adhoc-arm64" -output "$work/universal-mixed"
llvm-lipo-22 -create -fat64 "$work/developer-x86_64" "$work/developer-arm64" -output "$work/universal64-developer"

rm -rf "$out"
mkdir -p "$out"
bundle() { # name bundle-id executable-source [plist-format]
    local b="$out/$1.kext"
    mkdir -p "$b/Contents/MacOS"
    cp "$3" "$b/Contents/MacOS/$1"
    python3 - "$b/Contents/Info.plist" "$1" "$2" "${4:-xml}" <<'EOF'
import plistlib, sys
path, name, bundle_id, fmt = sys.argv[1:]
info = {
    "CFBundleIdentifier": bundle_id, "CFBundleExecutable": name, "CFBundleName": name,
    "CFBundleVersion": "1.4.2", "CFBundleShortVersionString": "1.4", "CFBundlePackageType": "KEXT",
    "OSBundleRequired": "Safe Boot", "OSBundleLibraries": {"com.apple.kpi.libkern": "20.0"},
    "IOKitPersonalities": {},
}
with open(path, "wb") as f:
    plistlib.dump(info, f, fmt=plistlib.FMT_BINARY if fmt == "binary" else plistlib.FMT_XML)
EOF
}
bundle Unsigned com.example.kextwatch.unsigned "$work/unsigned-x86_64"
bundle Adhoc com.example.kextwatch.adhoc "$work/adhoc-arm64" binary
bundle Developer com.example.kextwatch.developer "$work/developer-x86_64"
bundle Universal com.example.kextwatch.universal "$work/universal-developer"
bundle Universal64 com.example.kextwatch.universal64 "$work/universal64-developer" binary
bundle Mixed com.example.kextwatch.mixed "$work/universal-mixed"
# A codeless kext: an Info.plist and no executable.
mkdir -p "$out/Codeless.kext/Contents"
python3 - "$out/Codeless.kext/Contents/Info.plist" <<'EOF'
import plistlib, sys
plistlib.dump({"CFBundleIdentifier": "com.example.kextwatch.codeless", "CFBundleVersion": "1.0",
               "CFBundlePackageType": "KEXT", "IOKitPersonalities": {"match": {"IOClass": "AppleHIDKeyboard"}}},
              open(sys.argv[1], "wb"))
EOF
echo "fixtures written to $out"

# Cross-check: what rcodesign prints against what kextwatch reads. rcodesign prints the identifier,
# team and, for CMS-signed code, the signed message digest, which is the CodeDirectory hash (its first
# 40 hex digits are the cdhash). It does not read 64-bit universal headers.
cat > "$work/compare.py" <<'PY'
import json, re, sys
name, theirs, ours = sys.argv[1], open(sys.argv[2]).read(), json.load(open(sys.argv[3]))
their = (sorted(set(re.findall(r"^\s+identifier: (\S+)", theirs, re.M))),
         sorted(set(re.findall(r"^\s+team_name: (\S+)", theirs, re.M))),
         sorted(d[:40] for d in re.findall(r"message_digest: ([0-9a-f]+)", theirs)))
slices = ours["slices"]
mine = (sorted({s["identifier"] for s in slices if s["identifier"]}),
        sorted({s["team_id"] for s in slices if s["team_id"]}),
        sorted(s["cdhash"] for s in slices if s["has_cms"]))
print(f"{'ok' if their == mine else 'MISMATCH'} {name}: {ours['signature']} ids/teams/cdhashes={mine}")
if their != mine:
    print(f"   rcodesign: {their}")
    sys.exit(1)
PY
cargo build -q --bin kextwatch
status=0
for k in Unsigned Adhoc Developer Universal Mixed; do
    rcodesign print-signature-info "$out/$k.kext/Contents/MacOS/$k" > "$work/theirs.txt" 2>/dev/null || true
    ./target/debug/kextwatch inventory "$out/$k.kext" --format json > "$work/ours.json" 2>/dev/null
    python3 "$work/compare.py" "$k" "$work/theirs.txt" "$work/ours.json" || status=1
done
# Keep rcodesign's full reading beside the fixtures: tests/signing.rs compares against it.
bash scripts/record-signing-oracle.sh
exit $status
