#!/usr/bin/env bash
# Builds the C programs in examples-c/ and runs them against the built
# libraries: plainly, under AddressSanitizer + UBSan, and under valgrind.
# streamer_like loads libblobcache.so as the streamer does; linked links
# libblobcache_link.so, uses sockets of its own, and reads through the
# directory origin and through the Azure origin from an Azurite on loopback
# (started by the workspace's blobcache-azurite helper); header_check
# compiles the header next to the system's socket headers. Needs cc, c++,
# make, valgrind, Azurite (scripts/install-azurite.sh), and a built
# workspace:
#
#   cargo build --release --workspace && scripts/test-c.sh
#
#   BLOBCACHE_LIB=path/libblobcache.so   the library to test (default
#                                        target/release/libblobcache.so);
#                                        libblobcache_link.so and
#                                        blobcache-azurite are taken from
#                                        the same directory
#   BLOBCACHE_C_TEST_LONG=1              long forms (many more reads, cycles
#                                        and forks)
#   BLOBCACHE_C_TEST_SEED=N              repeat the random choices of a run
#   BLOBCACHE_C_TEST_VALGRIND=0          skip the valgrind run
#
# Each run gets a fresh cache directory; everything lives in one temporary
# directory that is removed at the end. Prints PASS/FAIL per run and exits 1
# if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

lib=${BLOBCACHE_LIB:-target/release/libblobcache.so}
long=${BLOBCACHE_C_TEST_LONG:-0}
seed=${BLOBCACHE_C_TEST_SEED:-$(( (RANDOM << 30 | RANDOM << 15 | RANDOM) + 1 ))}
use_valgrind=${BLOBCACHE_C_TEST_VALGRIND:-1}
# The library sees only the settings each run gives it (and does not warn
# about ours, which share its prefix).
while read -r var; do unset "$var"; done < <(compgen -e | grep '^BLOBCACHE_' || true)

[[ $lib == /* ]] || lib=$repo/$lib
libdir=$(dirname "$lib")
azurite_helper=$libdir/blobcache-azurite
for f in "$lib" "$libdir/libblobcache_link.so" "$azurite_helper"; do
    if [[ ! -f $f ]]; then
        echo "FAIL: $f does not exist: run 'cargo build --release --workspace' first (or set BLOBCACHE_LIB)" >&2
        exit 1
    fi
done
for tool in cc c++ make timeout; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done
if [[ $use_valgrind == 1 ]] && ! command -v valgrind >/dev/null; then
    echo "FAIL: valgrind is not installed (install it, or set BLOBCACHE_C_TEST_VALGRIND=0)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/blobcache-c.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

# Counts (reads per thread, shutdown cycles, forks): short forms by
# default, long with BLOBCACHE_C_TEST_LONG=1. No forks under ASan: GCC's ASan
# runtime deadlocks a child forked while another thread is in malloc (see
# DEFAULT_FORKS in streamer_like.c); the plain and valgrind runs cover fork.
if [[ $long == 1 ]]; then
    reads=5000 cycles=300 forks=40 debug_forks=200 thread_forks=20000
    evict_reads=600 evict_cycles=100 evict_forks=8
    asan_reads=1500 asan_cycles=150
    vg_reads=300 vg_cycles=30 vg_forks=6
else
    reads=500 cycles=50 forks=12 debug_forks=12 thread_forks=500
    evict_reads=60 evict_cycles=10 evict_forks=2
    asan_reads=300 asan_cycles=50
    vg_reads=100 vg_cycles=10 vg_forks=3
fi

# The origin: a directory of blobs, read by the library through
# BLOBCACHE_ORIGIN=file://... and by the programs directly, as the truth.
account=acct
container=models
dir=$tmp/origin/$account/$container
mkdir -p "$dir/sub dir"
MiB=$((1 << 20))
head -c 1 /dev/urandom >"$dir/one-byte.bin"
head -c $MiB /dev/urandom >"$dir/one-mib.bin"
head -c $((5 * MiB + 3)) /dev/urandom >"$dir/five-mib-plus-3.bin"
head -c $((40 * MiB)) /dev/urandom >"$dir/forty-mib.safetensors"
head -c $((2 * MiB + 17)) /dev/urandom >"$dir/sub dir/ünï cödé %+.bin"
: >"$dir/empty.bin"
blobs=(one-byte.bin one-mib.bin five-mib-plus-3.bin forty-mib.safetensors
       "sub dir/ünï cödé %+.bin" empty.bin)

export BLOBCACHE_ORIGIN=file://$tmp/origin
export BLOBCACHE_BLOCK_SIZE=1M          # blobs span many blocks
export BLOBCACHE_MAX_SIZE=1G
export BLOBCACHE_LOG=warn
export BLOBCACHE_FETCH_TIMEOUT=10s      # a stuck block lock fails in 20 s, not 60
export ASAN_OPTIONS=detect_leaks=0      # the library keeps process-wide state
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

echo "test-c: library $lib"
echo "test-c: seed $seed (BLOBCACHE_C_TEST_SEED=$seed repeats it), $([[ $long == 1 ]] && echo long || echo short) forms"

if ! make -s -C examples-c LIBDIR="$libdir" all asan >"$tmp/make.log" 2>&1; then
    cat "$tmp/make.log" >&2
    echo "FAIL: building examples-c"
    exit 1
fi
echo "PASS: build examples-c (all, asan; the header with <sys/socket.h>, <unistd.h> and <stdio.h> as C11, C99 and C++11 with -pedantic)"

failed=()
runs=0
# run NAME LIMIT_SECONDS COMMAND...: runs COMMAND with a fresh, not yet
# existing cache directory, killing it after LIMIT_SECONDS.
run() {
    local name=$1 limit=$2 t0=$SECONDS rc=0
    shift 2
    runs=$((runs + 1))
    printf '\n--- %s\n' "$name"
    BLOBCACHE_DIR=$tmp/cache-$runs timeout -k 10 "$limit" "$@" || rc=$?
    if [[ $rc == 0 ]]; then
        echo "PASS: $name ($((SECONDS - t0)) s)"
    else
        local why="exit status $rc"
        [[ $rc == 124 || $rc == 137 ]] && why="killed after ${limit} s (hang?)"
        [[ $rc == 99 ]] && why="valgrind reported errors"
        echo "FAIL: $name ($why)"
        failed+=("$name")
    fi
}

# sl_args OPTION...: prints streamer_like's argument list, NUL-separated:
# the options given, the seed, a fresh scratch directory (phase d's extra
# cache directories), then the library, the origin and the blobs.
sl_args() {
    local scratch=$tmp/scratch-$((runs + 1))
    mkdir -p "$scratch"
    printf '%s\0' -s "$seed" -S "$scratch" "$@" "$lib" "$tmp/origin" "$account" "$container" "${blobs[@]}"
}
mapfile -d '' args < <(sl_args -n "$reads" -c "$cycles" -f "$forks" -T 240)
run "streamer_like" 600 examples-c/build/streamer_like "${args[@]}"

mapfile -d '' args < <(sl_args -n "$evict_reads" -c "$evict_cycles" -f "$evict_forks" -T 240)
BLOBCACHE_MAX_SIZE=8M run "streamer_like, 8 MiB cache cap (eviction under load)" 600 \
    examples-c/build/streamer_like "${args[@]}"

# Forks while other threads log at every level: a child must never hang in
# its first log line or crash on state a parent thread left half-changed.
# The debug lines go to a file (they are many); the run fails on a hang
# (the program's watchdog) or a crash of any child.
mapfile -d '' args < <(sl_args -t 4 -n 20 -c 0 -f "$debug_forks" -T 600)
BLOBCACHE_LOG=debug run "streamer_like, $debug_forks forks with BLOBCACHE_LOG=debug" 900 \
    bash -c 'exec "$@" 2>"$0"' "$tmp/debug-forks.log" examples-c/build/streamer_like "${args[@]}"
grep -q '^blobcache: debug: ' "$tmp/debug-forks.log" || { echo "FAIL: the debug-logging fork run logged nothing"; failed+=("debug log"); }

# Forks while the library starts threads by the thousand (every read goes
# straight to the directory origin, one thread per call: the cache
# directory cannot be created): each child must start the library and read.
run "fork_threads, $thread_forks forks while the library starts threads" 1800 \
    env BLOBCACHE_DIR=/proc/blobcache-no-cache BLOBCACHE_LOG=error \
    examples-c/build/fork_threads "$lib" "$tmp/origin" "$account" "$container" forty-mib.safetensors "$thread_forks"

for check in header_check header_check_c99 header_check_cxx; do
    run "$check" 30 "examples-c/build/$check"
done

run "linked, directory origin" 120 examples-c/build/linked "$dir/five-mib-plus-3.bin" "$account" "$container" five-mib-plus-3.bin

# The Azure origin: Azurite on loopback, serving copies of two blobs, until
# this script closes the helper's standard input (or exits). The helper
# prints the settings that point the library at it (the emulator's public
# development key among them: read here, never printed).
az_files=()
for b in five-mib-plus-3.bin "sub dir/ünï cödé %+.bin"; do
    az_files+=("$dir/$b=$b")
done
coproc AZURITE { exec "$azurite_helper" "$container" "${az_files[@]}" 2>"$tmp/azurite.log"; }
azure_env=() az_ready=0
while IFS= read -r -t 120 line <&"${AZURITE[0]}"; do
    [[ $line == ready ]] && { az_ready=1; break; }
    azure_env+=("$line")
done
if [[ $az_ready != 1 ]]; then
    cat "$tmp/azurite.log" >&2
    echo "FAIL: Azurite did not start (scripts/install-azurite.sh installs it)"
    failed+=("Azurite")
else
    az_account=$(printf '%s\n' "${azure_env[@]}" | sed -n 's/^AZURE_STORAGE_ACCOUNT_NAME=//p')
    run "linked, Azure origin (Azurite)" 120 env "${azure_env[@]}" \
        examples-c/build/linked "$dir/five-mib-plus-3.bin" "$az_account" "$container" five-mib-plus-3.bin
    run "linked, Azure origin (Azurite), a name to percent-encode" 120 env "${azure_env[@]}" \
        examples-c/build/linked "$dir/sub dir/ünï cödé %+.bin" "$az_account" "$container" "sub dir/ünï cödé %+.bin"
fi

mapfile -d '' args < <(sl_args -n "$asan_reads" -c "$asan_cycles" -f 0 -T 240)
run "streamer_like (ASan+UBSan)" 900 examples-c/build/asan/streamer_like "${args[@]}"

run "linked, directory origin (ASan+UBSan)" 120 examples-c/build/asan/linked "$dir/forty-mib.safetensors" "$account" "$container" forty-mib.safetensors
if [[ $az_ready == 1 ]]; then
    run "linked, Azure origin (Azurite) (ASan+UBSan)" 300 env "${azure_env[@]}" \
        examples-c/build/asan/linked "$dir/five-mib-plus-3.bin" "$az_account" "$container" five-mib-plus-3.bin
fi

if [[ $use_valgrind == 1 ]]; then
    mapfile -d '' args < <(sl_args -t 4 -n "$vg_reads" -c "$vg_cycles" -f "$vg_forks" -T 600)
    run "streamer_like (valgrind)" 1200 valgrind -q --error-exitcode=99 --errors-for-leak-kinds=none \
        --fair-sched=yes examples-c/build/streamer_like "${args[@]}"
    if [[ $az_ready == 1 ]]; then
        run "linked, Azure origin (Azurite) (valgrind)" 600 env "${azure_env[@]}" valgrind -q --error-exitcode=99 \
            --errors-for-leak-kinds=none --fair-sched=yes \
            examples-c/build/linked "$dir/five-mib-plus-3.bin" "$az_account" "$container" five-mib-plus-3.bin
    fi
else
    echo "SKIP: streamer_like and linked (valgrind): BLOBCACHE_C_TEST_VALGRIND=0"
fi

# Azurite stops when its helper's standard input closes.
if [[ -n ${AZURITE_PID:-} ]]; then
    az_in=${AZURITE[1]}
    exec {az_in}>&-
    wait "$AZURITE_PID" || true
fi

echo
if ((${#failed[@]} > 0)); then
    echo "FAIL: ${#failed[@]} of $runs C test runs failed: ${failed[*]} ($((SECONDS - start)) s; seed $seed)"
    exit 1
fi
echo "PASS: all $runs C test runs ($((SECONDS - start)) s)"
