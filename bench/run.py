"""Runs every benchmark of issue 5 and writes the table (docs/BENCHMARKS.md).

Started by bench/run (which builds what is measured and enters a network
namespace with only loopback); see that script for the options.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import streamer  # noqa: E402

NOTES_MARK = "<!-- Everything below this line is kept when bench/run rewrites the file. -->"
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

SIZES = {
    # name: (full, smoke)
    "hits_mib": (1024, 64),
    "hits_reps": (15, 2),
    "small_calls": (1_000_000, 100_000),
    "cold_mib": (1024, 64),
    "rss_mib": (2048, 128),
    "cold_reps": (5, 1),
    "first_reps": (11, 2),
    "far_reps": (5, 1),
    "dlopen_reps": (51, 5),
    "model_mib": (1024, 64),
    "warm_reps": (9, 1),
    "streamer_reps": (5, 1),
}


def sh(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout.strip()


def bench(binary, *args):
    t = time.monotonic()
    out = subprocess.run([binary, *map(str, args)], stdout=subprocess.PIPE, text=True, check=True).stdout
    log(f"bench {args[0]}: {time.monotonic() - t:.0f} s")
    return json.loads(out.strip().splitlines()[-1])


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": f"{mem_kib / (1 << 20):.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "thp": open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
        if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled") else "n/a",
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def versions(profile):
    from importlib.metadata import version

    commit = sh("git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD")
    dirty = sh("git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no")
    azurite = Path(streamer.origins.azurite_bin(str(REPO)))
    return {
        "rustc": sh("rustc", "-V"),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "profile": profile,
        "azurite": sh(str(azurite), "--version"),
        "streamer": f"runai-model-streamer {version('runai-model-streamer')}, "
                    f"runai-model-streamer-azure {version('runai-model-streamer-azure')}",
        "python": platform.python_version(),
    }


def fmt(s, unit="", digits=2):
    """median (min–max) of a summary."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}–{f.format(s['max'])})"


def verdict(ok):
    return "met" if ok else "**missed**"


# The verdict of every target in a smoke run: its sizes and repetitions are
# too small for the targets to mean anything (a 64 MiB blob read once is not
# a 1 GiB one read five times), so they are not judged; `sanity` checks what
# a smoke run can check instead.
NOT_JUDGED = "not judged (smoke sizes)"


def rows(r, smoke=False):
    """The table: (#, measurement, result, baseline, ratio, target, verdict).
    With `smoke`, every target's verdict is NOT_JUDGED."""
    out = _rows(r)
    if smoke:
        out = [row[:6] + (NOT_JUDGED if row[6] else "",) for row in out]
    return out


# Figures that measure a rate, a time or a size: zero means nothing was
# measured. (Memory growth may be zero or negative.)
POSITIVE = re.compile(r"(_gbs|_us|_ms|_s|seconds|calls_per_s_\d+t|_bytes|per_blob_size)$")


def sanity(r):
    """What a smoke run can check: every figure the table shows is present
    (`rows` reads each one), every number is finite, every summary has
    min <= median <= max (and n >= 1), rates, times and sizes are above zero,
    and nothing else is negative but memory growth. Returns the problems."""
    problems = []

    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def walk(path, v):
        name = path.rsplit(".", 1)[-1]
        # A rate keyed by a setting (plain_gbs.4) is a rate too.
        positive = any(POSITIVE.search(seg) for seg in path.split("."))
        growth = "growth" in path
        if isinstance(v, dict):
            if {"median", "min", "max"} <= v.keys():
                lo, mid, hi, n = v["min"], v["median"], v["max"], v.get("n", 1)
                if not all(number(x) and math.isfinite(x) for x in (lo, mid, hi, n)):
                    problems.append(f"{path}: not a number: {v}")
                    return
                if n < 1 or not lo <= mid <= hi:
                    problems.append(f"{path}: not a summary of measurements: {v}")
                if positive and lo <= 0:
                    problems.append(f"{path}: {lo} (nothing measured?)")
                if not growth and lo < 0:
                    problems.append(f"{path}: negative: {v}")
                return
            for k, x in v.items():
                walk(f"{path}.{k}", x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{path}[{i}]", x)
        elif number(v):
            if not math.isfinite(v) or (v < 0 and not growth):
                problems.append(f"{path} = {v}")
            elif positive and v <= 0:
                problems.append(f"{path} = {v} (nothing measured?)")
        elif v is None:
            problems.append(f"{path} is missing (null)")

    for part in ("hits", "cold", "streamer", "footprint"):
        if part not in r:
            problems.append(f"{part}: no results")
        else:
            walk(part, r[part])
    try:
        rows(r, smoke=True)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        problems.append(f"the table cannot be made: {type(e).__name__} {e}")
    return problems


def _rows(r):
    out = []
    h = r["hits"]
    for t in ("1", "2"):
        x = h["large"][t]
        strict = min(x["library_vs_memcpy"]["median"], x["library_vs_memcpy_huge"]["median"])
        out.append(("1", f"warm hits, 8 MiB reads, {t} thread{'s' if t == '2' else ''}",
                    fmt(x["library_gbs"], " GB/s"),
                    f"memcpy from RAM {fmt(x['memcpy_gbs'], ' GB/s')}; with huge pages "
                    f"{fmt(x['memcpy_huge_gbs'], ' GB/s')}",
                    f"{fmt(x['library_vs_memcpy'], '×')}; vs huge pages {fmt(x['library_vs_memcpy_huge'], '×')}",
                    "≥ 0.90×", verdict(strict >= 0.90)))
    for t in ("1", "2"):
        x = h["large"][t]
        out.append(("2", f"warm hits, 8 MiB reads, {t} thread{'s' if t == '2' else ''}",
                    fmt(x["library_gbs"], " GB/s"),
                    f"C pread provider {fmt(x['pread_gbs'], ' GB/s')}; for scale, memcpy straight out of the "
                    f"same block files mapped, no library: {fmt(x['mmap_gbs'], ' GB/s')}, "
                    f"{fmt(x['mmap_vs_pread'], '×')} pread",
                    fmt(x['library_vs_pread'], '×'), "≥ 1.10×",
                    verdict(x["library_vs_pread"]["median"] >= 1.10)))
    for n in ("8", "4096"):
        x = h["small"][n]
        label = "8 B" if n == "8" else "4 KiB"
        out.append(("3", f"small hits, {label}, 1 thread", fmt(x["library_us"], " µs/call", 3),
                    f"C pread provider {fmt(x['pread_us'], ' µs/call', 3)}", "", "≤ 2 µs",
                    verdict(x["library_us"]["median"] <= 2.0)))
        out.append(("3", f"small hits, {label}, 8 threads on 8 blobs",
                    f"{x['calls_per_s_8t']['median'] / 1e6:.2f} M calls/s",
                    f"1 thread {x['calls_per_s_1t']['median'] / 1e6:.2f} M calls/s "
                    f"(2 threads {x['calls_per_s_2t']['median'] / 1e6:.2f})",
                    f"{fmt(x['scaling_8t'], '×')}; 2 threads {fmt(x['scaling_2t'], '×')}; C pread provider: "
                    f"8 threads {fmt(x['pread_scaling_8t'], '×')}, 2 threads {fmt(x['pread_scaling_2t'], '×')}",
                    "≥ 1.6×",
                    verdict(x["scaling_8t"]["median"] >= 1.6)))
    s = r["streamer"]
    gib = s["model_bytes"] / (1 << 30)
    x = s["item4"]
    out.append(("4", f"streamer 0.17.0, {gib:.2f} GiB model, warm, through the library",
                fmt(x["library_s"], " s", 3), f"same streamer, local directory {fmt(x['local_s'], ' s', 3)}",
                fmt(x['library_vs_local'], '× time'), "≤ 1.0×", verdict(x["library_vs_local"]["median"] <= 1.0)))
    c = r["cold"]
    x = c["item5"]
    best = str(int(x["best_plain_concurrency"]))
    out.append(("5", f"cold load of a {int(c['mib'])} MiB blob through the library (host process, 8 threads)",
                fmt(x["library_gbs"], " GB/s"),
                f"best plain parallel 8 MiB ranged GETs ({best} at once) {fmt(x['plain_gbs'][best], ' GB/s')}",
                fmt(x['library_vs_best_plain'], '×'), "≥ 0.90×",
                verdict(x["library_vs_best_plain"]["median"] >= 0.90)))
    out.append(("5", "the same cold loads: CPU seconds per GiB of the reader, the origin excluded",
                f"library's host process {fmt(x['library_cpu_s_per_gib'], ' s')} "
                f"(for the record, Azurite serving it {fmt(x['library_azurite_cpu_s_per_gib'], ' s')})",
                f"best plain GETs: reader {fmt(x['plain_cpu_s_per_gib'], ' s')} "
                f"(Azurite {fmt(x['plain_azurite_cpu_s_per_gib'], ' s')})",
                fmt(x["library_cpu_vs_best_plain"], "× CPU"), "≤ 1.3×",
                verdict(x["library_cpu_vs_best_plain"]["median"] <= 1.3)))
    out.append(("5", "the Azure fetch path alone (`AzureOrigin::read`, 8 threads of 8 MiB, no cache)",
                fmt(x["origin_alone_gbs"], " GB/s"),
                f"best plain GETs, as above; its CPU per GiB: reader {fmt(x['origin_alone_cpu_s_per_gib'], ' s')}, "
                f"Azurite {fmt(x['origin_alone_azurite_cpu_s_per_gib'], ' s')}",
                fmt(x["origin_alone_vs_best_plain"], "×"), "for the record", ""))
    x = c["first_read"]
    mib = int(x["read_mib"])
    out.append(("5", f"first bytes: the first {mib} MiB `blob_read` of a cold blob (fresh host process, "
                "the library started)", fmt(x["library_ms"], " ms", 1),
                f"one {mib} MiB ranged GET (fresh process with a connection open) {fmt(x['get_ms'], ' ms', 1)}",
                fmt(x["library_vs_get"], "× time"), "≤ 1.2×", verdict(x["library_vs_get"]["median"] <= 1.2)))
    x = c["item5_far"]
    best = str(int(x["best_plain_concurrency"]))
    out.append(("5", f"cold load of a {int(c['mib'])} MiB blob through the library, far origin "
                f"(a link of {x['rtt_ms']:.0f} ms RTT)", fmt(x["library_gbs"], " GB/s"),
                f"best plain parallel 8 MiB ranged GETs ({best} at once) through the same link "
                f"{fmt(x['plain_gbs'][best], ' GB/s')}",
                fmt(x["library_vs_best_plain"], "×"), "≥ 0.90×",
                verdict(x["library_vs_best_plain"]["median"] >= 0.90)))
    x = c["item5_far_thin"]
    best = str(int(x["best_plain_concurrency"]))
    out.append(("5", f"cold load of a {int(c['mib'])} MiB blob through the library, far and thin origin "
                f"(a link of {x['rtt_ms']:.0f} ms RTT, each connection's window at most "
                f"{x['max_window_kib']:.0f} KiB)", fmt(x["library_gbs"], " GB/s"),
                f"best plain parallel 8 MiB ranged GETs ({best} at once) through the same link "
                f"{fmt(x['plain_gbs'][best], ' GB/s')}",
                fmt(x["library_vs_best_plain"], "×"), "≥ 0.90×",
                verdict(x["library_vs_best_plain"]["median"] >= 0.90)))
    x = s["item6"]
    direct = f"streamer's own Azure client, no provider, HTTPS Azurite {fmt(x['direct_gbs'], ' GB/s')}"
    out.append(("6", f"streamer, {gib:.2f} GiB model, cold, through the library from the same HTTPS Azurite",
                fmt(x["library_tls_gbs"], " GB/s"), direct,
                fmt(x['library_tls_vs_direct'], '×'), "≥ 1.10×",
                verdict(x["library_tls_vs_direct"]["median"] >= 1.10)))
    out.append(("6", f"streamer, {gib:.2f} GiB model, cold, through the library from a plain-HTTP Azurite",
                fmt(x["library_gbs"], " GB/s"),
                direct + f"; what TLS costs the emulator: plain GETs {fmt(x['plain_https_gbs'], ' GB/s')} over HTTPS, "
                f"{fmt(x['plain_http_gbs'], ' GB/s')} over HTTP",
                fmt(x['library_vs_direct'], '×'), "≥ 1.0× (not like for like)",
                verdict(x["library_vs_direct"]["median"] >= 1.0)))
    x = s["item6_far"]
    out.append(("6", f"streamer, {gib:.2f} GiB model, cold, through the library from the HTTPS Azurite, far "
                f"(a link of {x['rtt_ms']:.0f} ms RTT)", fmt(x["library_gbs"], " GB/s"),
                f"streamer's own Azure client, no provider, through the same link {fmt(x['direct_gbs'], ' GB/s')}",
                fmt(x["library_vs_direct"], "×"), "≥ 1.10×", verdict(x["library_vs_direct"]["median"] >= 1.10)))
    x = c["item7"]
    out.append(("7", f"4 processes cold-loading the same {int(c['mib'])} MiB blob together",
                f"{fmt(x['bytes_sent_per_blob_size'], '', 3)} × blob size sent",
                f"blob size; wall time {fmt(x['wall_seconds'], ' s')}", "", "≤ 1.05",
                verdict(x["bytes_sent_per_blob_size"]["median"] <= 1.05)))
    x = c["cluster_tier"]
    out.append(("15", f"4 nodes (own cache directories, one cluster tier) cold-loading the same "
                f"{int(c['mib'])} MiB blob together",
                f"{fmt(x['four_nodes_bytes_sent_per_blob_size'], '', 3)} × blob size sent",
                f"blob size (4.0 without the tier); wall time {fmt(x['four_nodes_wall_seconds'], ' s')}",
                "", "≤ 1.05", verdict(x["four_nodes_bytes_sent_per_blob_size"]["median"] <= 1.05)))
    out.append(("15", "second node's cold load from the cluster tier (on this machine's disk)",
                fmt(x["second_node_seconds"], " s"),
                f"first node's load from the origin, filling the tier {fmt(x['first_node_seconds'], ' s')}",
                fmt(x["second_node_speedup"], "× faster"), "for the record", ""))
    x = c["item8"]
    out.append(("8", f"host process memory during a {int(x['mib'])} MiB cold load",
                f"RSS +{fmt(x['rss_growth_mib'], ' MiB', 0)}: anonymous +{fmt(x['anon_growth_mib'], ' MiB', 0)}, "
                f"file-backed (mapped cache blocks) +{fmt(x['file_growth_mib'], ' MiB', 0)}",
                "RSS before the load", "", "growth ≤ 128 MiB",
                f"RSS {verdict(x['rss_growth_mib']['median'] <= 128)}; "
                f"anonymous {verdict(x['anon_growth_mib']['median'] <= 128)}"))
    out.append(("8", "the same process at the end of the load, and after the library's `shutdown()`",
                f"end: anonymous +{fmt(x['anon_end_growth_mib'], ' MiB', 0)}, file-backed "
                f"+{fmt(x['file_end_growth_mib'], ' MiB', 0)}; after shutdown(): anonymous "
                f"+{fmt(x['anon_after_shutdown_growth_mib'], ' MiB', 0)}, file-backed "
                f"+{fmt(x['file_after_shutdown_growth_mib'], ' MiB', 0)}",
                "RSS before the load", "", "for the record", ""))
    f = r["footprint"]
    needed = f["needed"]
    out.append(("9", "stripped library size", f"{f['stripped_bytes'] / (1 << 20):.2f} MiB",
                f"unstripped {f['unstripped_bytes'] / (1 << 20):.2f} MiB", "", "≤ 10 MiB",
                verdict(f["stripped_bytes"] <= 10 << 20)))
    out.append(("9", "dlopen (fresh process, RTLD_NOW)", fmt(f["dlopen_ms"], " ms", 3),
                f"C pread provider {fmt(f['pread_provider_dlopen_ms'], ' ms', 3)}", "", "≤ 5 ms",
                verdict(f["dlopen_ms"]["median"] <= 5.0)))
    out.append(("9", "shared-library dependencies (NEEDED)", ", ".join(needed), "", "",
                "libc/libm/libgcc_s/ld only", verdict(set(needed) <= ALLOWED_NEEDED)))
    return out


def table(rs):
    lines = ["| # | measurement | result: median (min–max) | baseline, same run | ratio | target | |",
             "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rs]
    return "\n".join(lines)


def document(r, rs, command, previous_notes):
    m, v = r["machine"], r["versions"]
    s = r["settings"]
    return f"""# Benchmarks

Written by `{command}` on {r['date']} (took {r['minutes']:.1f} min); rerun it to refresh
this table (the notes after the table are kept). Every figure is the median over repetitions, with
min–max, and each ratio is the median of per-repetition ratios against a baseline measured in the
same run, baseline and subject interleaved (A B A B ...). `bench/run --smoke` is the short form CI runs.

- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, {m['kernel']} (transparent huge pages: {m['thp']}).
  A shared machine: load average (1, 5, 15 min) {r['load_before']} before the run, {r['load_after']} after it.
- Versions: {v['rustc']}; blobcache commit {v['commit']}, profile {v['profile']}; Azurite {v['azurite']};
  {v['streamer']}; Python {v['python']}.
- Sizes: warm hits over a {s['hits_mib']} MiB blob ({s['hits_reps']} repetitions, {s['small_calls']} small
  calls each); cold loads of a {s['cold_mib']} MiB blob ({s['cold_reps']} repetitions, {s['far_reps']} far;
  items 7 and 8 at most 3), first bytes of it {s['first_reps']} times; a {s['rss_mib']} MiB blob for item 8; the
  streamer's model is {s['model_mib']} MiB in 4 safetensors files ({s['warm_reps']} loads each way warm,
  {s['streamer_reps']} cold, {s['streamer_reps']} cold and far); dlopen {s['dlopen_reps']} times.
- Network: everything talks to Azurite on loopback inside a network namespace that has nothing else; the
  far rows go through a far link of {s['far_rtt_ms']} ms round-trip time (see "A far origin" below the list).

{table(rs)}

## How each figure is measured

1. The library, dlopen'd (`RTLD_NOW | RTLD_LOCAL`, as the streamer does), serves 8 MiB `blob_read`s of a
   blob already in its cache (block files in the page cache, 16 MiB blocks); each thread reads its half
   front to back into its own buffer. Baseline: `memcpy` of the same bytes from a heap buffer, and from
   anonymous memory advised `MADV_HUGEPAGE` (the page cache can hold block files in large folios, which
   a default heap buffer does not get); the verdict takes the lower of the two ratios.
2. The same reads through `bench/pread_provider.c`: a real provider `.so` with the streamer's interface
   that answers each call with one `pread` of the same block files; both providers are driven by the same
   caller. For scale, the bench also copies straight out of the same block files mapped in the bench
   process (no library): the ceiling of any provider that copies out of mapped cache files.
3. `blob_read` of 8 B and 4 KiB at offsets spread over 8 cached 4 MiB blobs; µs per call is the mean per
   call of one thread's run. Scaling: calls/s of 8 threads (each on its own blob) over 1 thread's.
4. `tests/e2e/loader.py` (the real streamer, `SafetensorsStreamer.stream_files`, every tensor checked byte
   for byte after the timed session) in a fresh process per load, after streaming a small local file to
   pay the streamer's start-up. Subject: `az://` URIs through the library, whose cache was filled from a
   directory origin beforehand. Baseline: the same files by local path. Both read from the page cache
   (the files were read just before; RAM is far larger than both).
5. `bench load`: a fresh host process that dlopens the library and reads the blob with 8 threads taking
   8 MiB chunks front to back, into a fresh cache directory, from Azurite over HTTP (default settings:
   16 MiB blocks, 16 fetches at once, readahead 4). Baseline: parallel 8 MiB ranged GETs (reqwest, signed
   with the account key) of the same blob from the same Azurite into memory, at several concurrency
   levels ({', '.join(r['cold']['item5']['plain_gbs'])}), the best of them per repetition. CPU per GiB: the host
   process's user + system time (`getrusage(RUSAGE_CHILDREN)` around its wait) or the bench process's for the
   best plain download, and Azurite's from `/proc/<pid>/stat`, over the same interval. The fetch path alone:
   in the bench process, `AzureOrigin::read` of 8 MiB ranges from 8 threads into a sink that only counts (no
   cache, hashing or disk), from the same Azurite, in the same repetitions. The CPU ratio is the host
   process's CPU per GiB over the best plain download's, per repetition (Azurite's CPU, the origin's, is
   shown for the record and not counted).
   First bytes: `bench first`, a fresh host process that dlopens the library (settings as above, a fresh
   cache directory each time, so the blob is cold to it), reads 4 KiB of a different small blob so that the
   library has started (its threads, its HTTP client and one connection), then times one 8 MiB `blob_read`
   at offset 0 of the blob the first row loads. Baseline: `bench first-get`, a fresh process whose reqwest
   client makes one small ranged GET (so it has a connection too), then times one GET of `bytes=0-8388607`
   of another blob of the same size, its body read into memory. The two alternate, {s['first_reps']} times each.
   Far: the first row's comparison (the library's load against the best of the same plain downloads), both
   through one far link in front of the same Azurite, interleaved the same way; no CPU figures.
6. The streamer (as in 4) cold: through the library (fresh cache directory per load), against its own
   Azure client with no provider (`RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED=0`), both from an
   Azurite serving the blobs over HTTPS: the released streamer always builds
   `https://<account>.<AZURE_STORAGE_ENDPOINT_SUFFIX>`, so that Azurite runs with a certificate from a CA
   the bench makes, and the streamer runs in a private mount namespace where that CA is bind-mounted over
   `/etc/ssl/certs/ca-certificates.crt`. The library reads the same HTTPS emulator with the same Azure
   settings (`AZURE_STORAGE_ENDPOINT_SUFFIX=blob.localhost:<port>`, the account key) and `SSL_CERT_FILE`
   naming the bench CA; and, for scale, a plain-HTTP emulator holding the same blobs.
   To show what TLS costs there, each repetition also times plain parallel 8 MiB ranged GETs (`bench
   plain`, the best of 4, 8 and 16 at once) of the first model file from both emulators.
   Far: the like-for-like comparison again (streamer's own client, then the library; fresh cache each
   time), both through a far link (`bench farlink`) in front of the HTTPS emulator:
   `AZURE_STORAGE_ENDPOINT_SUFFIX=blob.localhost:<the link's port>` for both. TLS passes through the link.
7. Four `bench load` processes sharing one fresh cache directory start together (a file barrier) and each
   read the whole blob; the counting proxy of crates/testing/src/proxy.rs in front of Azurite adds up the bytes
   of every answer.
8. One `bench load` of a larger blob; /proc/self/status sampled every 2 ms: VmRSS before the first read
   (library loaded, read buffers allocated and touched) and at its peak, and its parts RssAnon (heap,
   stacks, buffers) and RssFile (file pages mapped into the process: the cache's block files, which the
   library keeps mapped to serve hits from). Page-cache pages count in RssFile only while mapped; they are
   the kernel's to reclaim and are shared with every other process mapping the same blocks. RssAnon and
   RssFile are read again when the last read returns and after the library's `shutdown()` (which drops the
   blocks it keeps mapped and joins its threads).
9. `strip --strip-all` of the release library; `readelf -d` of it; `dlopen` timed inside fresh processes
   (the file in the page cache), interleaved with the C provider's.

**A far origin.** The kernel here has no netem qdisc (`tc qdisc add dev lo root netem` answers "Specified
qdisc kind is unknown"), so a shaping proxy in user space stands in for a distant Azure region: the far
link of crates/testing/src/farlink.rs, a TCP proxy on loopback that passes bytes (TLS included) untouched.
Its model, per connection, with a round-trip time (RTT) of {s['far_rtt_ms']} ms and d = RTT/2: nothing
crosses before the connection is one RTT old (the handshake); a byte read from one side is written to the
other d later (d after the handshake, if that ends later); the answer direction (Azurite to the reader)
has a congestion window that starts at 10 × 1460 bytes and grows by every byte acknowledged, an ack coming
back one RTT after its byte was sent (slow start: it doubles per RTT), up to 4 MiB. So a fresh
connection's first answer comes after about 2 RTT, a reused one's after 1; one connection moves at most
4 MiB per RTT (about {4 * 1.048576e3 / s['far_rtt_ms']:.0f} MB/s), and a fresh one needs several RTTs to get
there. No loss, no congestion-avoidance phase, no reset of the window when idle; the request direction is
delayed only. The thin far link is the same with each connection's window capped at 512 KiB (at most about
{0.512 * 1.048576e3 / s['far_rtt_ms']:.0f} MB/s per connection): there the link bounds both sides rather than
this machine's two cores, so its row shows whether a reader keeps enough requests in flight.

## Raw results

```json
{json.dumps({k: r[k] for k in ('hits', 'cold', 'streamer', 'footprint')}, indent=1)}
```

{NOTES_MARK}
{previous_notes}"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the bench program (bench/main.rs)")
    ap.add_argument("--lib", required=True, help="libblobcache.so")
    ap.add_argument("--pread", required=True, help="the C pread provider")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--far-rtt-ms", type=int, default=20, help="the far link's round-trip time")
    a = ap.parse_args()
    pick = 1 if a.smoke else 0
    s = {k: v[pick] for k, v in SIZES.items()}
    s["far_rtt_ms"] = a.far_rtt_ms
    t0 = time.monotonic()
    r = {"machine": machine(), "versions": versions(a.profile), "settings": s,
         "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"}
    r["load_before"] = loadavg()
    log(f"machine: {r['machine']}, load average {r['load_before']}")
    r["footprint"] = bench(a.bin, "footprint", "--lib", a.lib, "--pread", a.pread, "--reps", s["dlopen_reps"])
    r["hits"] = bench(a.bin, "hits", "--lib", a.lib, "--pread", a.pread, "--mib", s["hits_mib"],
                      "--reps", s["hits_reps"], "--small-calls", s["small_calls"])
    r["cold"] = bench(a.bin, "cold", "--lib", a.lib, "--mib", s["cold_mib"], "--rss-mib", s["rss_mib"],
                      "--reps", s["cold_reps"], "--first-reps", s["first_reps"], "--far-reps", s["far_reps"],
                      "--far-rtt-ms", s["far_rtt_ms"])
    with tempfile.TemporaryDirectory(prefix="blobcache-bench-") as work:
        t = time.monotonic()
        r["streamer"] = streamer.run(a.lib, a.bin, work, s["model_mib"], s["warm_reps"], s["streamer_reps"],
                                     s["far_rtt_ms"], log=log)
        log(f"streamer: {time.monotonic() - t:.0f} s")
    r["minutes"] = (time.monotonic() - t0) / 60
    r["load_after"] = loadavg()
    problems = sanity(r)
    rs = rows(r, smoke=a.smoke)
    for row in rs:
        assert all(c is not None for c in row), row
    out = Path(a.out)
    previous = ""
    if out.exists() and NOTES_MARK in out.read_text():
        previous = out.read_text().split(NOTES_MARK, 1)[1].lstrip("\n")
    out.write_text(document(r, rs, a.command, previous))
    print(table(rs))
    print(f"\nwritten to {out}; {len(rs)} figures in {r['minutes']:.1f} min")
    if a.smoke:
        print("smoke run: the targets are not judged at these sizes (bench/run judges them); "
              "checked instead that every figure is present and sane")
    if problems:
        print("\nbench/run: figures that are missing or make no sense:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
