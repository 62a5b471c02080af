#!/usr/bin/env bash
# Type-check the crate for macOS (aarch64 and x86_64) on Linux.
#
# No Mac is needed: Debian's rustc ships its standard-library source, so `-Zbuild-std` can build std
# for the Apple targets (check only; nothing is linked). C code in build scripts cannot be compiled
# for Apple here, so CC/AR point at /bin/true. Debian's toolchain is used explicitly; --locked keeps
# it from rewriting Cargo.lock, and a separate target dir keeps the normal build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/rustc ] || ! /usr/bin/rustc --version 2>/dev/null | grep -q '1\.9[6-9]\|1\.[1-9][0-9][0-9]' \
    || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    echo "check-macos: installing Debian's rustc-web, cargo-web and rust-web-src" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
fi

export RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc
for t in aarch64_apple_darwin x86_64_apple_darwin; do
    export "CC_$t=/bin/true" "CXX_$t=/bin/true" "AR_$t=/bin/true"
done
/usr/bin/cargo check --locked -q -Zbuild-std=std,panic_abort \
    --target aarch64-apple-darwin --target x86_64-apple-darwin \
    --target-dir target-macos --all-targets
echo "check-macos: aarch64-apple-darwin and x86_64-apple-darwin type-check"
