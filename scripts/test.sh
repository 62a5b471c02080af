#!/usr/bin/env bash
# The test suite: installs the real syslog receiver the delivery tests start (Debian's rsyslog with
# its GnuTLS driver) if it is missing, then runs `cargo test --locked` with any extra arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

have_gtls() {
    for f in /usr/lib/*/rsyslog/lmnsd_gtls.so /usr/lib/rsyslog/lmnsd_gtls.so; do
        [ -e "$f" ] && return 0
    done
    return 1
}
if ! command -v rsyslogd >/dev/null || ! have_gtls; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: the syslog tests need rsyslog and rsyslog-gnutls: sudo apt-get install rsyslog rsyslog-gnutls" >&2
        exit 1
    fi
    echo "== installing rsyslog and rsyslog-gnutls"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq rsyslog rsyslog-gnutls >/dev/null
fi

# Installed above, so the delivery tests must run: without this, they skip when rsyslogd is missing
# (a Mac developer's plain `cargo test`).
export KEXTWATCH_REQUIRE_RSYSLOG=1
cargo test --locked "$@"
