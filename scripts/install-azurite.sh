#!/usr/bin/env bash
# Installs the Azure Storage emulator (Azurite, from npm) that the Azure tests
# run against, pinned, into a project-local directory (.tools/azurite, ignored
# by git). Quick and silent when the pinned version is already there.
#
#   scripts/install-azurite.sh        install or confirm
#   AZURITE_DIR=/elsewhere scripts/install-azurite.sh
#
# The tests find it at .tools/azurite/node_modules/.bin/azurite-blob, or at
# $AZURITE_BIN when that is set. Needs node >= 18 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.35.0
dir=${AZURITE_DIR:-.tools/azurite}
bin="$dir/node_modules/.bin/azurite-blob"
stamp="$dir/.installed-$version"

if [[ -x $bin && -f $stamp ]]; then
    echo "azurite $version: $bin"
    exit 0
fi
command -v npm >/dev/null || { echo "install-azurite: npm not found; install Node.js 18 or later" >&2; exit 1; }
mkdir -p "$dir"
# A private package.json so npm installs here and nowhere else.
[[ -f $dir/package.json ]] || echo '{"name":"blobcache-test-tools","private":true}' >"$dir/package.json"
# installs: azurite
npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error "azurite@$version" 2>&1 \
    | grep -v 'Unknown user config' || true
[[ -x $bin ]] || { echo "install-azurite: $bin missing after npm install" >&2; exit 1; }
rm -f "$dir"/.installed-*
touch "$stamp"
echo "azurite $version: $bin"
