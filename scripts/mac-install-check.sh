#!/usr/bin/env bash
# Install a kextwatch package on this Mac and check it runs; run doctor; uninstall and check that
# nothing is left. For CI runners and test Macs (run as root).
#
#   sudo scripts/mac-install-check.sh install dist/kextwatch-VERSION-launchdaemon.pkg
#   sudo scripts/mac-install-check.sh doctor
#   sudo scripts/mac-install-check.sh uninstall
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=packaging/scripts/layout.env
. "$root_dir/packaging/scripts/layout.env"

die() { echo "mac-install-check: $*" >&2; exit 1; }
[ "$(uname -s)" = Darwin ] || die "runs on macOS"
[ "$(id -u)" -eq 0 ] || die "run as root"

case "${1:-}" in
    install)
        pkg=${2:-}
        [ -f "$pkg" ] || die "no package at '$pkg'"
        /usr/sbin/installer -pkg "$pkg" -target /
        for f in "$KW_BIN" "$KW_CONFIG" "$KW_NEWSYSLOG_CONF" "$KW_LAUNCHD_PLIST"; do
            [ -e "$f" ] || die "the package did not install $f"
        done
        # The daemon is up when its lock is held and it wrote its status.
        for _ in $(seq 1 60); do
            if "$KW_BIN" status --config "$KW_CONFIG"; then
                launchctl print "system/$KW_LAUNCHD_LABEL" | grep -E '^\s*(state|pid) ='
                exit 0
            fi
            sleep 1
        done
        launchctl print "system/$KW_LAUNCHD_LABEL" || true
        log show --last 2m --predicate 'subsystem == "com.kextwatch"' || true
        die "the daemon did not come up within 60 s"
        ;;
    doctor)
        "$KW_BIN" doctor --config "$KW_CONFIG"
        ;;
    uninstall)
        "$root_dir/packaging/uninstall.sh" --purge
        left=()
        for f in "$KW_BIN" "$KW_CONFIG" "$KW_NEWSYSLOG_CONF" "$KW_LAUNCHD_PLIST" "$KW_STATE_DIR" \
            "$KW_LOG_DIR" "$KW_APP" "$KW_MAN_PAGE"; do
            [ ! -e "$f" ] || left+=("$f")
        done
        [ "${#left[@]}" -eq 0 ] || die "left behind: ${left[*]}"
        if launchctl print "system/$KW_LAUNCHD_LABEL" >/dev/null 2>&1; then
            die "the daemon is still loaded"
        fi
        echo "mac-install-check: uninstalled, nothing left"
        ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
