"""The `blobcache` command from the installed wheel, with the real streamer:
warm a model into an empty cache (as a Kubernetes init container would), warm
again (nothing downloaded), then load it with the streamer while the origin is
unreachable, and read the statistics the processes left on disk.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import origins
from conftest import clean_env, record_time, run_loader


def blobcache_command():
    cmd = Path(sys.executable).parent / "blobcache"
    assert cmd.is_file(), f"{cmd} missing: the wheel installs the blobcache command next to the venv's python"
    return str(cmd)


def run_cli(env, *args, timeout=600):
    return subprocess.run([blobcache_command(), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_warm_with_the_command_then_the_streamer_loads_with_the_origin_unreachable(origin, model, lib, new_cache):
    if origin.name != "azurite":
        pytest.skip("an unreachable origin is an Azure condition (the directory origin cannot be 'unreachable')")
    cache = new_cache("cli-warm")
    env = clean_env(BLOBCACHE_DIR=str(cache), **origin.env)

    # The init container: the streamer's URI form, account from AZURE_STORAGE_ACCOUNT_NAME.
    t0 = time.monotonic()
    p = run_cli(env, "warm", f"az://{origins.CONTAINER}/", "--json")
    warm_seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    first = json.loads(p.stdout)
    assert first["blobs"] == len(model.files), first
    assert first["fetched"] == model.total_bytes and first["failed"] == [], first
    assert "blobcache: warm:" in p.stderr, p.stderr  # plain progress lines: stderr is not a terminal
    record_time(origin.name, "blobcache warm (the whole model, empty cache)", warm_seconds, model.total_bytes)

    p = run_cli(env, "warm", f"az://{origins.CONTAINER}/", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    again = json.loads(p.stdout)
    assert again["fetched"] == 0 and again["already_cached"] == model.total_bytes, again

    p = run_cli(env, "ls", "--json")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    assert sorted(x["blob"] for x in listed) == sorted(model.files)
    assert all(x["complete"] for x in listed), listed

    # Nothing listens on this port: the origin cannot be reached.
    dead = dict(env, BLOBCACHE_AZURE_ENDPOINT="http://127.0.0.1:%d/{account}" % origins.free_port(),
                BLOBCACHE_LOG="info")
    run = run_loader(dead, [origin.uri(f) for f in model.files], model.dir)
    assert run["error"] is None, run.describe()
    s = run["sessions"][0]
    assert s["mismatches"] == [] and s["missing"] == [] and s["tensors"] == model.tensor_count, run.describe()
    assert s["stats"]["blocks_fetched"] == 0 and s["stats"]["bytes_from_origin"] == 0, s["stats"]
    warnings = [ln for ln in run.stderr.splitlines() if "origin is unreachable" in ln]
    assert len(warnings) == 1, run.stderr[-3000:]
    assert "from the cache" in warnings[0]
    # The library's own report: its counters as JSON, and one summary line at shutdown.
    assert "origin_wait_ms" in s["stats"] and s["stats"]["hits"] > 0, s["stats"]
    summary = [ln for ln in run.stderr.splitlines() if ln.startswith("blobcache: info: shutdown: ")]
    assert len(summary) == 1, run.stderr[-3000:]
    for field in ("hits=", "misses=0", "bytes_from_cache=", "bytes_from_origin=0", "origin_wait="):
        assert field in summary[0], summary[0]
    record_time(origin.name, "streamer load, origin unreachable (after warm)", s["seconds"], model.tensor_bytes)

    # What every process counted, kept on disk: the warm runs and the load.
    p = run_cli(env, "stats", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    c = st["counters"]
    assert c["bytes_from_origin"] == model.total_bytes, st
    assert c["bytes_from_cache"] >= model.tensor_bytes and c["hits"] > 0 and c["misses"] == 0, st
    assert st["complete_blobs"] == len(model.files), st
    p = run_cli(env, "stats")
    assert p.returncode == 0 and "hits" in p.stdout, p.stderr
    print("\n" + p.stdout)

    p = run_cli(env, "verify")
    assert p.returncode == 0 and f"checked {model.total_blocks} blocks" in p.stdout, p.stdout + p.stderr


def test_doctor_from_the_wheel_checks_endpoint_cache_and_that_the_streamer_will_load_the_library(origin, lib, new_cache):
    cache = new_cache("cli-doctor")
    env = clean_env(BLOBCACHE_DIR=str(cache), **origin.env)
    p = run_cli(env, "doctor", f"az://{origins.CONTAINER}/")
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "will load blobcache: yes" in out, out  # from the venv's python -m blobcache
    assert "listing works, " in out and "writable: yes" in out, out
    if origin.name == "azurite":
        assert "endpoint answers" in out and "AZURE_STORAGE_ACCOUNT_KEY" in out, out
        assert origins.AZURITE_KEY not in out + p.stderr

