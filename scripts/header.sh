#!/usr/bin/env bash
# Regenerates include/blobcache.h with the pinned cbindgen.
#   scripts/header.sh           write the header
#   scripts/header.sh --verify  fail if the committed header is out of date
set -euo pipefail
cd "$(dirname "$0")/.."
CBINDGEN_VERSION=0.29.2
if ! command -v cbindgen >/dev/null || [[ "$(cbindgen --version)" != "cbindgen $CBINDGEN_VERSION" ]]; then
    cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet  # installs: cbindgen
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
cbindgen --config cbindgen.toml --crate blobcache --quiet --output "$tmp" .
if [[ "${1:-}" == "--verify" ]]; then
    if ! diff -u include/blobcache.h "$tmp"; then
        echo "include/blobcache.h is out of date: run scripts/header.sh" >&2
        exit 1
    fi
    echo "header: include/blobcache.h is current"
else
    cp "$tmp" include/blobcache.h
fi
