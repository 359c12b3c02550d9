#!/usr/bin/env bash
# End-to-end tests with the released Run:ai streamer: builds the wheel users
# install (scripts/wheel: manylinux, checked by auditwheel), installs it into
# the test venv, and runs tests/e2e with pytest inside a private network
# namespace that has only a loopback interface (Azurite runs there; nothing
# leaves the machine).
#
#   scripts/test-e2e.sh                      the whole suite (a few minutes)
#   scripts/test-e2e.sh -k cold              extra arguments go to pytest
#   BLOBCACHE_E2E_ORIGIN=directory scripts/test-e2e.sh
#   BLOBCACHE_E2E_ORIGIN=directory,azurite scripts/test-e2e.sh   both origins
#   BLOBCACHE_E2E_PROFILE=ci scripts/test-e2e.sh   build the wheel's Rust code
#                                            with that cargo profile (default
#                                            release, as scripts/wheel does)
#
# Origin (BLOBCACHE_E2E_ORIGIN): auto (default) uses Azurite (installed here by
# scripts/install-azurite.sh), or the directory origin when Azurite is missing
# outside CI.
# Needs root (for unshare), and the venv of scripts/install-python-deps.sh,
# which this calls (quick when it is up to date). Uses CARGO_TARGET_DIR if set.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cache=${BLOBCACHE_CI_CACHE:-$HOME/.cache/blobcache-ci}
venv=$cache/venv
py=$venv/bin/python
step() { printf '\n=== %s\n' "$*"; }
t0=$(date +%s)

[[ $(id -u) == 0 ]] || { echo "test-e2e: needs root (network namespaces via unshare)" >&2; exit 1; }
scripts/install-python-deps.sh
if [[ -x scripts/install-azurite.sh && ${BLOBCACHE_E2E_ORIGIN:-auto} != directory ]]; then
    scripts/install-azurite.sh >/dev/null || echo "test-e2e: Azurite could not be installed" >&2
fi

work=$(mktemp -d /tmp/blobcache-e2e.XXXXXX)
trap 'rm -rf "$work"' EXIT

profile=${BLOBCACHE_E2E_PROFILE:-release}
step "wheel (scripts/wheel, cargo profile $profile)"
t=$(date +%s)
# scripts/test passes its own profile (ci): the wheel then packs the build
# the other tests ran (only the two final links are redone), instead of a
# second optimised build of every crate (about ten minutes on two cores).
# The packaging and the checks are the same either way.
scripts/wheel --profile "$profile" --out-dir "$work/dist"
wheel=$(echo "$work"/dist/blobcache-*.whl)
"$py" -m pip install --no-deps --no-index --force-reinstall --quiet --disable-pip-version-check "$wheel"
echo "installed $(basename "$wheel") in the test venv; $(( $(date +%s) - t ))s in all"

step "end-to-end tests (pytest, private network namespace)"
export BLOBCACHE_E2E_WHEEL=$wheel BLOBCACHE_E2E_WORK=$work/run BLOBCACHE_E2E_RESULTS=$work/results.json
export PYTHONDONTWRITEBYTECODE=1
unshare --net -- bash -c 'ip link set lo up && exec "$@"' _ \
    "$py" -m pytest tests/e2e -p no:cacheprovider -q "$@"
echo "test-e2e finished in $(( $(date +%s) - t0 ))s"
