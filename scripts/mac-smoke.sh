#!/usr/bin/env bash
# Smoke test on a real Mac: eslogger piped into `kextwatch replay -` while this script does benign
# kext-adjacent things (kmutil showloaded, kextstat, csrutil status, an nvram read, a file touched and
# removed under /Library/Extensions); then checks that exactly the expected alerts came out.
#
#   sudo scripts/mac-smoke.sh [--bin PATH] [--keep DIR]
#       on any Mac (eslogger needs root and Full Disk Access for the terminal or CI runner). PATH
#       defaults to target/release/kextwatch, then target/debug/kextwatch. With the system extension
#       installed and active, its alert log is compared with what eslogger saw.
#   scripts/mac-smoke.sh --check ALERTS.txt [--marker NAME]
#       on any OS: only the expectations, on alerts already recorded (`replay --format text`).
#       tests/mac_smoke.rs runs this on the capture these actions make.
#
# Exit status: 0 passed, 1 failed, 2 usage.
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/.." && pwd)

# The events the daemon asks eslogger for (tests/mac_smoke.rs keeps this equal to ESLOGGER_EVENTS).
EVENTS=(exec fork deleteextattr setflags setacl utimes truncate link clone create write close rename
    unlink setmode setowner setextattr kextload kextunload signal settime)
ALERT_LOG="/var/log/kextwatch/alerts.jsonl"
SYSEXT_ID="com.kextwatch.app.agent"

die() { echo "mac-smoke: $*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" >&2; exit 2; }

# The alerts in $1 (text lines) against what the actions with marker $2 must raise.
check() {
    local alerts=$1 marker=$2 failed=0
    # Bracket expressions, not backslashes: the same in BSD (macOS) and GNU grep.
    local info='^[^ ]+ INFO +KW-1000 [^|]*[|] pid [0-9]+ '
    local file="/Library/Extensions/$marker.txt"
    local file_re=${file//./[.]}
    expect() {
        if grep -Eq -- "$2" "$alerts"; then
            echo "ok   $1"
        else
            echo "FAIL $1: no alert matches /$2/"
            failed=1
        fi
    }
    expect "kmutil showloaded is discovery (info)" "$info/usr/bin/kmutil [[]kmutil showloaded"
    expect "kextstat is discovery (info)" "$info/usr/sbin/kextstat [[]kextstat"
    expect "csrutil status is discovery (info)" "$info/usr/bin/csrutil [[]csrutil status[]]"
    expect "an nvram read is discovery (info)" "$info/usr/sbin/nvram [[]nvram -p[]]"
    expect "a file created in /Library/Extensions (medium)" \
        "^[^ ]+ MEDIUM +KW-2001 .*$file_re created under /Library/Extensions"
    expect "the file removed (medium)" \
        "^[^ ]+ MEDIUM +KW-2001 .*$file_re deleted under /Library/Extensions"
    # Nothing else above info: discovery by other programs on a busy Mac is normal; any other
    # alert is a false positive on benign admin work.
    local unexpected
    unexpected=$(grep -Ev '^[^ ]+ INFO ' "$alerts" | grep -Fv "$file" || true)
    if [ -n "$unexpected" ]; then
        echo "FAIL alerts nothing here should raise:"
        echo "$unexpected"
        failed=1
    else
        echo "ok   no other alert above info"
    fi
    return "$failed"
}

# The benign actions, from this script's shell.
actions() {
    local marker=$1
    kmutil showloaded >/dev/null 2>&1 || true
    kextstat >/dev/null 2>&1 || true
    csrutil status >/dev/null 2>&1 || true
    nvram -p >/dev/null 2>&1 || true
    touch "/Library/Extensions/$marker.txt"
    rm -f "/Library/Extensions/$marker.txt"
}

# With the system extension active, its alert log must hold the same file alerts.
compare_with_extension() {
    local alerts=$1 marker=$2 since=$3
    if ! systemextensionsctl list 2>/dev/null | grep -q "$SYSEXT_ID.*activated enabled"; then
        echo "skip --source es: the system extension is not installed and active on this Mac"
        return 0
    fi
    local from_es from_eslogger
    from_es=$(tail -c +"$since" "$ALERT_LOG" 2>/dev/null | grep -F "$marker" \
        | grep -Eo '"id":"KW-[0-9]+"' | sort | uniq -c || true)
    from_eslogger=$(grep -F "$marker" "$alerts" | grep -Eo 'KW-[0-9]+' | sed 's/.*/"id":"&"/' \
        | sort | uniq -c || true)
    if [ "$from_es" = "$from_eslogger" ]; then
        echo "ok   --source es (the extension) and --source eslogger agree on the file alerts"
        return 0
    fi
    echo "FAIL the extension's alerts differ from eslogger's for $marker:"
    echo "  es:       $from_es"
    echo "  eslogger: $from_eslogger"
    return 1
}

record() {
    local bin=$1 work=$2
    [ "$(uname -s)" = Darwin ] || die "records on macOS; elsewhere use --check"
    [ "$(id -u)" -eq 0 ] || die "eslogger needs root: sudo $0"
    [ -x "$bin" ] || die "no kextwatch binary at $bin (cargo build --release, or --bin PATH)"
    local marker="kextwatch-smoke-$$"
    local since=1
    [ -f "$ALERT_LOG" ] && since=$(($(stat -f %z "$ALERT_LOG") + 1))
    mkfifo "$work/events"
    "$bin" replay - --min-severity info --format text --quiet --host-name "$(hostname)" \
        < "$work/events" > "$work/alerts.txt" 2> "$work/replay.err" &
    local replay_pid=$!
    /usr/bin/eslogger "${EVENTS[@]}" > "$work/events" 2> "$work/eslogger.err" &
    local eslogger_pid=$!
    # eslogger subscribes within a moment, or exits at once (no Full Disk Access, not root).
    sleep 3
    if ! kill -0 "$eslogger_pid" 2>/dev/null; then
        cat "$work/eslogger.err" >&2
        die "eslogger did not start: grant Full Disk Access to this terminal (or the CI runner)"
    fi
    echo "== actions (marker $marker)"
    actions "$marker"
    sleep 3
    kill -INT "$eslogger_pid"
    wait "$eslogger_pid" || true
    wait "$replay_pid" || die "replay failed: $(cat "$work/replay.err")"
    echo "== $(wc -l < "$work/alerts.txt" | tr -d ' ') alerts in $work/alerts.txt"
    local failed=0
    check "$work/alerts.txt" "$marker" || failed=1
    compare_with_extension "$work/alerts.txt" "$marker" "$since" || failed=1
    return "$failed"
}

bin="" keep="" check_file="" marker="kextwatch-smoke"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        --check) check_file=$2; shift 2 ;;
        --marker) marker=$2; shift 2 ;;
        -h | --help) usage ;;
        *) echo "mac-smoke: unknown argument $1" >&2; usage ;;
    esac
done

if [ -n "$check_file" ]; then
    [ -r "$check_file" ] || die "cannot read $check_file"
    if check "$check_file" "$marker"; then echo "mac-smoke: passed"; exit 0; fi
    echo "mac-smoke: FAILED"
    exit 1
fi

if [ -z "$bin" ]; then
    for b in "$root_dir/target/release/kextwatch" "$root_dir/target/debug/kextwatch"; do
        if [ -x "$b" ]; then bin=$b; break; fi
    done
fi
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
if record "${bin:-$root_dir/target/release/kextwatch}" "$work"; then
    echo "mac-smoke: passed"
    exit 0
fi
echo "mac-smoke: FAILED (files kept with --keep DIR)"
exit 1
