"""One process under test: loads safetensors files with the real Run:ai
streamer, exactly as an application would, and checks every tensor byte for
byte against the source files.

    python loader.py --source DIR [--sessions N] [--barrier DIR --parties N] [--warmup FILE] PATH...

PATH is an az://container/blob URI (read through the streamer's Azure backend,
and so through blobcache when it is loaded) or a local file path. For each
PATH, the file of the same name in --source is the expected content.

Prints one JSON object on stdout: per session the tensor count, bytes, load
time, mismatches and blobcache's counters (read inside the session, before the
streamer's shutdown resets them); and which libblobcache.so the process mapped.
Exits 0 even when the load fails: the caller decides (the JSON carries the error).
"""

import argparse
import json
import mmap
import os
import sys
import time
import traceback


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--barrier", help="directory used to start --parties processes at the same moment")
    p.add_argument("--parties", type=int, default=1)
    p.add_argument("--warmup", help="a local file to stream once before the measured sessions (the streamer's "
                   "first session in a process pays one-off costs that are not the storage's)")
    p.add_argument("paths", nargs="+")
    return p.parse_args()


def wait_at_barrier(directory, parties):
    os.makedirs(directory, exist_ok=True)
    open(os.path.join(directory, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other processes never reached the barrier")
        time.sleep(0.002)


def mapped_blobcache_libraries():
    """Paths of every libblobcache*.so mapped into this process."""
    found = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and os.path.basename(parts[5].strip()).startswith("libblobcache"):
                found.add(parts[5].strip())
    return sorted(found)


def main():
    args = parse_args()
    env_lib = os.environ.get("RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB")
    out = {"pid": os.getpid(), "env_lib": env_lib, "sessions": [], "error": None}
    try:
        import numpy as np
        import torch
        from runai_model_streamer import SafetensorsStreamer

        import blobcache
        from model import tensor_ranges

        # Where each tensor's bytes are in the source files.
        expected = {}
        sources = []
        for path in args.paths:
            src = os.path.join(args.source, os.path.basename(path))
            f = open(src, "rb")
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            sources.append((f, mm))
            for name, (off, length) in tensor_ranges(src).items():
                expected[name] = (np.frombuffer(mm, dtype=np.uint8, count=length, offset=off), src)

        if args.warmup:
            with SafetensorsStreamer() as streamer:
                streamer.stream_file(args.warmup)
                for _ in streamer.get_tensors():
                    pass

        if args.barrier:
            wait_at_barrier(args.barrier, args.parties)

        for _ in range(args.sessions):
            s = {"tensors": 0, "bytes": 0, "seconds": None, "mismatches": [], "missing": [], "stats": None}
            received = []
            t0 = time.perf_counter()
            with SafetensorsStreamer() as streamer:
                streamer.stream_files(args.paths)
                for name, tensor in streamer.get_tensors():
                    received.append((name, tensor))  # owned: stays valid after the iteration moves on
                s["seconds"] = time.perf_counter() - t0
                # Inside the session: the streamer's shutdown() at its end resets the counters.
                lib = env_lib or blobcache.library_path()
                s["stats"] = blobcache.stats(lib)
            seen = set()
            for name, tensor in received:
                seen.add(name)
                s["tensors"] += 1
                got = tensor.reshape(-1).view(torch.uint8).numpy()
                s["bytes"] += got.nbytes
                want, src = expected.get(name, (None, None))
                if want is None:
                    s["mismatches"].append(f"{name}: not in the source files")
                elif got.nbytes != want.nbytes or not np.array_equal(got, want):
                    s["mismatches"].append(f"{name} ({os.path.basename(src)}): bytes differ")
            s["missing"] = sorted(set(expected) - seen)
            del received
            out["sessions"].append(s)
    except BaseException as e:  # reported to the caller, who decides
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    out["mapped"] = mapped_blobcache_libraries()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
