#!/usr/bin/env bash
# Build, sign, notarize and staple the kextwatch installer package (macOS only).
#
#   packaging/build-pkg.sh --team-id TEAMID \
#       --app-identity "Developer ID Application: Example Corp (TEAMID)" \
#       --installer-identity "Developer ID Installer: Example Corp (TEAMID)" \
#       --notary-profile kextwatch-notary \
#       [--app-profile app.provisionprofile --agent-profile agent.provisionprofile] [--version X.Y.Z]
#
# Produces dist/kextwatch-VERSION.pkg containing:
#   /Applications/Kextwatch.app                     host app with the Endpoint Security system extension
#   /Library/Application Support/kextwatch/         the daemon-mode binary and the default config
#   /Library/LaunchDaemons/com.kextwatch.daemon.plist
#   /usr/local/share/man/man1/kextwatch.1, /usr/local/share/zsh/site-functions/_kextwatch
# The notary profile is made once with `xcrun notarytool store-credentials`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/.." && pwd)
# shellcheck source=packaging/scripts/layout.env
. "$here/scripts/layout.env"

die() { echo "build-pkg: $*" >&2; exit 1; }
team="" app_identity="" installer_identity="" notary_profile="" app_profile="" agent_profile=""
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root_dir/Cargo.toml" | head -n 1)
while [ $# -gt 0 ]; do
    case "$1" in
        --team-id) team=$2; shift 2 ;;
        --app-identity) app_identity=$2; shift 2 ;;
        --installer-identity) installer_identity=$2; shift 2 ;;
        --notary-profile) notary_profile=$2; shift 2 ;;
        --app-profile) app_profile=$2; shift 2 ;;
        --agent-profile) agent_profile=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        *) die "unknown argument $1 (see the header of this script)" ;;
    esac
done
[ "$(uname -s)" = Darwin ] || die "runs on macOS (codesign, pkgbuild, notarytool)"
[[ "$team" =~ ^[A-Z0-9]{10}$ ]] || die "--team-id must be a 10-character Team ID"
if [ -z "$app_identity" ] || [ -z "$installer_identity" ] || [ -z "$notary_profile" ]; then
    die "--app-identity, --installer-identity and --notary-profile are required"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dist="$root_dir/dist"
mkdir -p "$dist"

echo "== universal binary"
for t in aarch64-apple-darwin x86_64-apple-darwin; do
    cargo build --release --locked --target "$t" --manifest-path "$root_dir/Cargo.toml"
done
lipo -create -output "$work/kextwatch" \
    "$root_dir/target/aarch64-apple-darwin/release/kextwatch" \
    "$root_dir/target/x86_64-apple-darwin/release/kextwatch"

pkgroot="$work/root"
app="$pkgroot$KW_APP"
sysext="$app/Contents/Library/SystemExtensions/$KW_SYSEXT_BUNDLE_ID.systemextension"
mkdir -p "$app/Contents/MacOS" "$sysext/Contents/MacOS" \
    "$pkgroot$(dirname "$KW_BIN")" "$pkgroot$(dirname "$KW_LAUNCHD_PLIST")" \
    "$pkgroot$(dirname "$KW_MAN_PAGE")" "$pkgroot$(dirname "$KW_ZSH_COMPLETION")"

echo "== bundles"
sed "s/__TEAM_ID__/$team/g" "$here/sysext/Info.plist" > "$sysext/Contents/Info.plist"
cp "$work/kextwatch" "$sysext/Contents/MacOS/$KW_SYSEXT_BUNDLE_ID"
cp "$here/app/Info.plist" "$app/Contents/Info.plist"
cp "$work/kextwatch" "$app/Contents/MacOS/kextwatch"
[ -z "$agent_profile" ] || cp "$agent_profile" "$sysext/Contents/embedded.provisionprofile"
[ -z "$app_profile" ] || cp "$app_profile" "$app/Contents/embedded.provisionprofile"
cp "$work/kextwatch" "$pkgroot$KW_BIN"
cp "$root_dir/config/kextwatch.toml" "$pkgroot$KW_CONFIG_DEFAULT"
cp "$here/launchd/$KW_LAUNCHD_LABEL.plist" "$pkgroot$KW_LAUNCHD_PLIST"
# Generated from the same clap definitions the binary parses with, so they cannot drift.
"$work/kextwatch" man > "$pkgroot$KW_MAN_PAGE"
"$work/kextwatch" completions zsh > "$pkgroot$KW_ZSH_COMPLETION"

echo "== signing (hardened runtime, secure timestamp)"
sign() { codesign --force --options runtime --timestamp --sign "$app_identity" "$@"; }
sign --identifier "$KW_SYSEXT_BUNDLE_ID" --entitlements "$here/sysext/agent.entitlements" "$sysext"
sign --identifier "$KW_APP_BUNDLE_ID" --entitlements "$here/app/app.entitlements" "$app"
sign --identifier com.kextwatch.kextwatch "$pkgroot$KW_BIN"
codesign --verify --strict --deep "$app"

echo "== package"
pkgbuild --root "$pkgroot" --scripts "$here/scripts" --identifier com.kextwatch.pkg \
    --version "$version" --install-location / "$work/component.pkg"
pkg="$dist/kextwatch-$version.pkg"
productbuild --package "$work/component.pkg" --sign "$installer_identity" "$pkg"

echo "== notarize and staple"
xcrun notarytool submit "$pkg" --keychain-profile "$notary_profile" --wait
xcrun stapler staple "$pkg"
echo "built $pkg"
