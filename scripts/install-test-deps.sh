#!/usr/bin/env bash
# Installs what the tests need, or confirms it is there (a few seconds when up
# to date): cargo-nextest, cargo-fuzz, clippy/rustfmt, valgrind, binutils,
# g++, prometheus, squid, openssh-server, sshfs, fuse3, python3-fusepy and
# iproute2 (Debian), the Rust dependencies, Azurite (npm)
# and the Python venv with the pinned streamer wheels and the wheel's build
# tools (PyPI). scripts/test calls it first, so the test command works on a
# fresh machine; slow downloads are cached (see the scripts it calls). It does
# not install the nightly toolchain (the fuzz targets need it): it says so
# when it is missing.
#
# Each install is marked `# installs: NAME...`; the README lists them all
# (Requirements), and tests/e2e/test_readme.py checks the two agree.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "=== tools"
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked --quiet  # installs: cargo-nextest
# The fuzz targets (fuzz/, scripts/fuzz) build with cargo-fuzz on nightly.
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet  # installs: cargo-fuzz
rustup toolchain list | grep -q '^nightly' || { echo "install-test-deps: the nightly toolchain is missing (scripts/fuzz needs it)" >&2; exit 1; }
apt=()
command -v valgrind >/dev/null || apt+=(valgrind)  # installs: valgrind
command -v nm >/dev/null || apt+=(binutils)  # installs: binutils
# scripts/test-c.sh also compiles the header as C++ (examples-c/header_check.c).
command -v c++ >/dev/null || apt+=(g++)  # installs: g++
# The metrics tests (crates/cli/tests/metrics.rs) run a real Prometheus
# scraping `blobcache metrics`, and check `stats --prometheus` with promtool.
# Their own server, config and port: the package's service is not used.
[[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]] || apt+=(prometheus)  # installs: prometheus
# The proxy tests start their own Squid (crates/testing/src/squid.rs).
[[ -x /usr/sbin/squid ]] || apt+=(squid)  # installs: squid
# The cluster tier's tests share a directory through sshfs mounts of a
# private sshd on loopback (crates/testing/src/sshfs.rs), and hang a FUSE
# filesystem written with fusepy (crates/testing/src/hungfs.rs); fusermount3
# unmounts them.
[[ -x /usr/sbin/sshd ]] || apt+=(openssh-server)  # installs: openssh-server
[[ -x /usr/bin/sshfs ]] || apt+=(sshfs)  # installs: sshfs
[[ -x /usr/bin/fusermount3 ]] || apt+=(fuse3)  # installs: fuse3
[[ -f /usr/lib/python3/dist-packages/fusepy.py ]] || apt+=(python3-fusepy)  # installs: python3-fusepy
command -v ip >/dev/null || apt+=(iproute2)  # installs: iproute2
if (( ${#apt[@]} )); then
    [[ $(id -u) == 0 ]] || { echo "install-test-deps: needs root to install ${apt[*]}" >&2; exit 1; }
    apt-get update -qq && apt-get install -y -qq "${apt[@]}"
fi
# installs: clippy rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
cargo fetch --locked --quiet

echo "=== Azurite (npm)"
scripts/install-azurite.sh

echo "=== Python venv with the pinned streamer wheels (PyPI; cached)"
scripts/install-python-deps.sh
