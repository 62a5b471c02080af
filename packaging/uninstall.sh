#!/bin/bash
# Remove kextwatch, either mode (run as root). Keeps the config, state and alert log unless --purge.
# If the system extension is marked non-removable by MDM, remove the MDM profile first.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/scripts/layout.env
. "$here/scripts/layout.env"
purge=0
[ "${1:-}" = "--purge" ] && purge=1
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run as root" >&2; exit 1; }

/bin/launchctl bootout "system/$KW_LAUNCHD_LABEL" 2>/dev/null || true
/bin/rm -f "$KW_LAUNCHD_PLIST" "$KW_BIN" "$KW_CONFIG_DEFAULT" "$KW_MAN_PAGE" "$KW_ZSH_COMPLETION" \
    "$KW_NEWSYSLOG_CONF"
if [ -x "$KW_APP/Contents/MacOS/kextwatch" ]; then
    "$KW_APP/Contents/MacOS/kextwatch" sysext deactivate --wait 60 || true
fi
/bin/rm -rf "$KW_APP"
if [ "$purge" -eq 1 ]; then
    /bin/rm -rf "$(dirname "$KW_CONFIG")" "$KW_STATE_DIR" "$KW_LOG_DIR"
fi
/usr/sbin/pkgutil --forget "$KW_PKG_ID" >/dev/null 2>&1 || true
echo "kextwatch removed$( [ "$purge" -eq 1 ] && echo ", with its config and state" )"
