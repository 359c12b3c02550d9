"""Compares two builds of the library on the benchmark items a refactoring
must not move (1: warm 8 MiB hits vs memcpy, 3: small hits, 5: a cold load vs
plain ranged GETs, 7: bytes sent for 4 processes loading together).

Started by bench/compare (which builds both libraries and enters a network
namespace with only loopback). Each round measures A then B, so that load on
the machine falls on both; every figure is itself a ratio against a baseline
measured in the same `bench` call, and the table gives the median over rounds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def bench(binary, *args):
    out = subprocess.run([binary, *map(str, args)], stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def figures(binary, lib, pread, mib, reps):
    h = bench(binary, "hits", "--lib", lib, "--pread", pread, "--mib", mib, "--reps", reps,
              "--small-calls", 200_000)
    c = bench(binary, "cold", "--lib", lib, "--mib", mib, "--rss-mib", mib, "--reps", reps)
    f = {}
    for t in ("1", "2"):
        f[f"1: warm 8 MiB hits, {t} thread(s), × memcpy"] = h["large"][t]["library_vs_memcpy"]["median"]
    for n, label in (("8", "8 B"), ("4096", "4 KiB")):
        f[f"3: small hits {label}, µs/call"] = h["small"][n]["library_us"]["median"]
        f[f"3: small hits {label}, 8 threads, × 1 thread"] = h["small"][n]["scaling_8t"]["median"]
    f["5: cold load, × best plain ranged GETs"] = c["item5"]["library_vs_best_plain"]["median"]
    f["5: cold load, host process CPU s per GiB"] = c["item5"]["library_cpu_s_per_gib"]["median"]
    f["7: 4 processes together, × blob size sent"] = c["item7"]["bytes_sent_per_blob_size"]["median"]
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--pread", required=True)
    ap.add_argument("--lib-a", required=True)
    ap.add_argument("--lib-b", required=True)
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    runs = {"a": [], "b": []}
    for i in range(a.rounds):
        for side, lib in (("a", a.lib_a), ("b", a.lib_b)):
            t = time.monotonic()
            runs[side].append(figures(a.bin, lib, a.pread, a.mib, a.reps))
            print(f"round {i + 1}/{a.rounds} {side}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    print(f"| item | {a.label_a} | {a.label_b} | {a.label_b} / {a.label_a} |")
    print("|---|---|---|---|")
    for key in runs["a"][0]:
        va = statistics.median(r[key] for r in runs["a"])
        vb = statistics.median(r[key] for r in runs["b"])
        print(f"| {key} | {va:.3f} | {vb:.3f} | {vb / va:.3f} |")


if __name__ == "__main__":
    main()
