"""The `blobcache` command from the installed wheel, with the real streamer:
warm a model into an empty cache (as a Kubernetes init container would), warm
again (nothing downloaded), then load it with the streamer while the origin is
unreachable, and read the statistics the processes left on disk. Also: `blobcache doctor` and
`python -m blobcache` agree, and the table of `bench/run --smoke` (which scripts/test runs after
these) judges no target at its sizes.
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



def test_doctor_and_python_m_blobcache_agree_on_whether_the_streamer_will_load_the_library(lib, new_cache):
    """`blobcache doctor` asks the venv's `python -m blobcache --json` and takes its verdict: when that
    says the library will not load (exit status 1), doctor exits 1 with every reason as a problem."""
    cache = new_cache("cli-doctor-agrees")
    base = clean_env(BLOBCACHE_DIR=str(cache), BLOBCACHE_ORIGIN=f"file://{cache}")
    cases = {
        "as installed": {},
        "cache provider off": {"RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED": "0"},
        "start-up hook off": {"BLOBCACHE_AUTOREGISTER": "0"},
        "another library named": {"RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB": "/nonexistent/libother.so"},
        "an invalid setting": {"BLOBCACHE_MAX_SIZE": "lots"},
    }
    verdicts = {}
    for name, extra in cases.items():
        env = dict(base, **extra)
        py = subprocess.run([sys.executable, "-m", "blobcache", "--json"], env=env, capture_output=True,
                            text=True, timeout=120)
        assert py.returncode in (0, 1), py.stderr
        rep = json.loads(py.stdout)
        reasons = rep["streamer"]["reasons"] + rep.get("reasons", [])
        doc = run_cli(env, "doctor", timeout=120)
        out = doc.stdout
        assert "panicked" not in doc.stderr, doc.stderr
        if py.returncode == 1:
            assert doc.returncode == 1 and "will load blobcache: no" in out, (name, out)
            assert "no problems found" not in out, (name, out)
            for reason in reasons:
                assert f"PROBLEM: {reason}" in out, (name, reason, out)
        else:
            assert "will load blobcache: yes" in out, (name, out)
        verdicts[name] = (py.returncode, doc.returncode)
    # The wheel is installed beside the real streamer here: it loads as installed, not when turned off.
    assert verdicts["as installed"] == (0, 0), verdicts
    for name in ("cache provider off", "start-up hook off", "another library named"):
        assert verdicts[name] == (1, 1), verdicts
    # doctor checks the settings itself, whatever python -m blobcache says of them.
    assert verdicts["an invalid setting"][1] == 1, verdicts


def _bench_run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).resolve().parents[2] / "bench" / "run.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


class _Figures(dict):
    """Results in which every figure the table asks for exists: a summary of 1.0 (sizes for the few
    figures the table reads as whole numbers or lists)."""

    def __missing__(self, key):
        v = 1.0 if key in ("median", "min", "max", "n") else _Figures()
        self[key] = v
        return v


def test_bench_smoke_table_judges_no_target_and_fails_on_figures_that_make_no_sense():
    """`bench/run --smoke` (what scripts/test runs) measures at sizes too small for the targets: its table
    says "not judged" instead of "missed", and the run fails only when a figure is missing or absurd."""
    m = _bench_run_module()
    r = {"hits": _Figures(), "cold": _Figures(mib=64), "streamer": _Figures(model_bytes=64 << 20),
         "footprint": _Figures(needed=["libc.so.6"], stripped_bytes=5 << 20, unstripped_bytes=6 << 20)}
    r["cold"]["item5"]["best_plain_concurrency"] = 8
    r["cold"]["item5_far"].update(best_plain_concurrency=8, rtt_ms=20)
    r["cold"]["item5_far_thin"].update(best_plain_concurrency=8, rtt_ms=20, max_window_kib=512)
    r["cold"]["first_read"]["read_mib"] = 8
    r["cold"]["item8"]["mib"] = 128
    r["streamer"]["item6_far"]["rtt_ms"] = 20
    m.rows(r)  # fills in every figure the table reads
    r = json.loads(json.dumps(r))  # as bench/main.rs reports them: plain JSON, nothing filled in later
    smoke = m.rows(r, smoke=True)
    verdicts = {row[6] for row in smoke}
    assert verdicts == {m.NOT_JUDGED, ""}, verdicts
    assert "missed" not in m.table(smoke) and "met" not in {row[6] for row in smoke}
    assert any(row[6] not in ("", m.NOT_JUDGED) for row in m.rows(r)), "the full run judges its targets"
    assert m.sanity(r) == []

    import copy

    for spoil, says in [
        (lambda r: r["hits"]["large"]["1"]["library_gbs"].update(median=float("nan")), "library_gbs"),
        (lambda r: r["cold"]["item5"]["plain_gbs"]["8"].update(min=0.0), "plain_gbs.8"),
        (lambda r: r["streamer"]["item4"]["library_s"].update(min=2.0), "library_s"),
        (lambda r: r["footprint"].update(dlopen_ms=None), "dlopen_ms"),
        (lambda r: r["cold"].pop("item7"), "the table cannot be made"),
    ]:
        bad = copy.deepcopy(r)
        spoil(bad)
        problems = m.sanity(bad)
        assert any(says in p for p in problems), (says, problems)
    # Memory may shrink during a load: a negative growth is a figure, not a fault.
    ok = copy.deepcopy(r)
    ok["cold"]["item8"]["anon_after_shutdown_growth_mib"].update(min=-3.0, median=-1.0)
    assert m.sanity(ok) == []
