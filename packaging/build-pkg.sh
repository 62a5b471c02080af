#!/usr/bin/env bash
# Build, sign, notarize and staple the kextwatch installer package (macOS only).
#
#   packaging/build-pkg.sh --mode system-extension --team-id TEAMID \
#       --app-identity "Developer ID Application: Example Corp (TEAMID)" \
#       --installer-identity "Developer ID Installer: Example Corp (TEAMID)" \
#       --notary-profile kextwatch-notary \
#       --app-profile app.provisionprofile --agent-profile agent.provisionprofile [--version X.Y.Z]
#
#   packaging/build-pkg.sh --mode launch-daemon --team-id TEAMID --app-identity ... \
#       --installer-identity ... --notary-profile ...
#
#   packaging/build-pkg.sh --mode launch-daemon --unsigned     # ad-hoc signed, not notarized: CI
#
# Two deployment modes (docs/deployment.md):
#   system-extension  Kextwatch.app with the Endpoint Security system extension, which runs the
#                     daemon (needs Apple's ES entitlement, in the agent's provisioning profile).
#   launch-daemon     a LaunchDaemon running `kextwatch run --source eslogger` (no entitlement).
# Both install the admin CLI and default config under /Library/Application Support/kextwatch, the
# newsyslog rule for the alert log, the man page and zsh completion.
# The notary profile is made once with `xcrun notarytool store-credentials`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/.." && pwd)
# shellcheck source=packaging/scripts/layout.env
. "$here/scripts/layout.env"

die() { echo "build-pkg: $*" >&2; exit 1; }
mode="" team="" app_identity="" installer_identity="" notary_profile="" app_profile="" agent_profile=""
unsigned=0
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root_dir/Cargo.toml" | head -n 1)
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=$2; shift 2 ;;
        --team-id) team=$2; shift 2 ;;
        --app-identity) app_identity=$2; shift 2 ;;
        --installer-identity) installer_identity=$2; shift 2 ;;
        --notary-profile) notary_profile=$2; shift 2 ;;
        --app-profile) app_profile=$2; shift 2 ;;
        --agent-profile) agent_profile=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --unsigned) unsigned=1; shift ;;
        *) die "unknown argument $1 (see the header of this script)" ;;
    esac
done
[ "$(uname -s)" = Darwin ] || die "runs on macOS (codesign, pkgbuild, notarytool)"
case "$mode" in
    system-extension | launch-daemon) ;;
    *) die "--mode must be system-extension or launch-daemon" ;;
esac
if [ "$unsigned" -eq 1 ]; then
    # An extension only runs signed with its entitlement: an unsigned build cannot carry one.
    [ "$mode" = launch-daemon ] || die "--unsigned builds only the launch-daemon mode"
    team=""
else
    [[ "$team" =~ ^[A-Z0-9]{10}$ ]] || die "--team-id must be a 10-character Team ID"
    if [ -z "$app_identity" ] || [ -z "$installer_identity" ] || [ -z "$notary_profile" ]; then
        die "--app-identity, --installer-identity and --notary-profile are required"
    fi
    if [ "$mode" = system-extension ] && { [ -z "$app_profile" ] || [ -z "$agent_profile" ]; }; then
        die "--app-profile and --agent-profile are required: they carry the entitlements"
    fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dist="$root_dir/dist"
mkdir -p "$dist"

echo "== universal binary"
for t in aarch64-apple-darwin x86_64-apple-darwin; do
    rustup target add "$t" >/dev/null 2>&1 || true
    cargo build --release --locked --target "$t" --manifest-path "$root_dir/Cargo.toml"
done
lipo -create -output "$work/kextwatch" \
    "$root_dir/target/aarch64-apple-darwin/release/kextwatch" \
    "$root_dir/target/x86_64-apple-darwin/release/kextwatch"

pkgroot="$work/root"
mkdir -p "$pkgroot$(dirname "$KW_BIN")" "$pkgroot$(dirname "$KW_MAN_PAGE")" \
    "$pkgroot$(dirname "$KW_ZSH_COMPLETION")" "$pkgroot$(dirname "$KW_NEWSYSLOG_CONF")"

echo "== payload ($mode)"
cp "$work/kextwatch" "$pkgroot$KW_BIN"
cp "$root_dir/config/kextwatch.toml" "$pkgroot$KW_CONFIG_DEFAULT"
cp "$here/newsyslog/com.kextwatch.conf" "$pkgroot$KW_NEWSYSLOG_CONF"
# Generated from the same clap definitions the binary parses with, so they cannot drift.
"$work/kextwatch" man > "$pkgroot$KW_MAN_PAGE"
"$work/kextwatch" completions zsh > "$pkgroot$KW_ZSH_COMPLETION"
app="$pkgroot$KW_APP"
sysext="$app/Contents/Library/SystemExtensions/$KW_SYSEXT_BUNDLE_ID.systemextension"
if [ "$mode" = system-extension ]; then
    mkdir -p "$app/Contents/MacOS" "$sysext/Contents/MacOS"
    sed "s/__TEAM_ID__/$team/g" "$here/sysext/Info.plist" > "$sysext/Contents/Info.plist"
    # The same binary: inside the .systemextension bundle it runs as the ES daemon.
    cp "$work/kextwatch" "$sysext/Contents/MacOS/$KW_SYSEXT_BUNDLE_ID"
    cp "$here/app/Info.plist" "$app/Contents/Info.plist"
    cp "$work/kextwatch" "$app/Contents/MacOS/kextwatch"
    cp "$agent_profile" "$sysext/Contents/embedded.provisionprofile"
    cp "$app_profile" "$app/Contents/embedded.provisionprofile"
else
    mkdir -p "$pkgroot$(dirname "$KW_LAUNCHD_PLIST")"
    cp "$here/launchd/$KW_LAUNCHD_LABEL.plist" "$pkgroot$KW_LAUNCHD_PLIST"
fi

# The installer scripts learn the mode from their copy of layout.env.
cp -R "$here/scripts" "$work/scripts"
echo "KW_MODE=\"$mode\"" >> "$work/scripts/layout.env"

echo "== signing (hardened runtime, secure timestamp)"
if [ "$unsigned" -eq 1 ]; then
    codesign --force --sign - --identifier "$KW_BIN_SIGNING_ID" "$pkgroot$KW_BIN"
else
    sign() { codesign --force --options runtime --timestamp --sign "$app_identity" "$@"; }
    if [ "$mode" = system-extension ]; then
        sign --identifier "$KW_SYSEXT_BUNDLE_ID" --entitlements "$here/sysext/agent.entitlements" "$sysext"
        sign --identifier "$KW_APP_BUNDLE_ID" --entitlements "$here/app/app.entitlements" "$app"
        codesign --verify --strict --deep "$app"
    fi
    sign --identifier "$KW_BIN_SIGNING_ID" "$pkgroot$KW_BIN"
fi

echo "== package"
pkgbuild --root "$pkgroot" --scripts "$work/scripts" --identifier "$KW_PKG_ID" \
    --version "$version" --install-location / "$work/component.pkg"
suffix=""
[ "$mode" = launch-daemon ] && suffix="-launchdaemon"
pkg="$dist/kextwatch-$version$suffix.pkg"
if [ "$unsigned" -eq 1 ]; then
    productbuild --package "$work/component.pkg" "$pkg"
    echo "built $pkg (unsigned: for testing only)"
    exit 0
fi
productbuild --package "$work/component.pkg" --sign "$installer_identity" "$pkg"

echo "== notarize and staple"
xcrun notarytool submit "$pkg" --keychain-profile "$notary_profile" --wait
xcrun stapler staple "$pkg"
echo "built $pkg"
