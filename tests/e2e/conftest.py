"""Fixtures of the end-to-end tests: the installed wheel, the test model, the
origin it is served from, and running loader processes.

Settings (environment):
  BLOBCACHE_E2E_ORIGIN   auto (default): Azurite, or the directory origin when Azurite
                         is not installed (outside CI only);
                         or directory, azurite, or both: "directory,azurite"
  BLOBCACHE_E2E_WORK     work directory (default: a pytest temporary directory)
  BLOBCACHE_E2E_WHEEL    the wheel under test (test_wheel.py inspects and installs it)
  BLOBCACHE_E2E_RESULTS  file to write the measured times to, as JSON
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import blobcache
import model as test_model
import origins

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BLOCK_SIZE = 16 << 20  # the library's default block size; the tests do not change it

TIMINGS = []  # (origin, what, seconds, bytes)
NOTES = []


def clean_env(**extra):
    """The test process's environment without any RUNAI_STREAMER_*, BLOBCACHE_* or AZURE_*
    variable (the start-up hook in the child sets the streamer's variable itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNAI_STREAMER_", "BLOBCACHE_", "AZURE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def loader_command(paths, source, sessions=1, barrier=None, parties=1, netns=False, warmup=None):
    cmd = [sys.executable, str(HERE / "loader.py"), "--source", str(source), "--sessions", str(sessions)]
    if warmup:
        cmd += ["--warmup", str(warmup)]
    if barrier:
        cmd += ["--barrier", str(barrier), "--parties", str(parties)]
    cmd += [str(p) for p in paths]
    # An empty network namespace: nothing but what is on this machine's disk.
    return (["unshare", "--net", "--"] if netns else []) + cmd


class LoaderRun:
    def __init__(self, proc_result_stdout, stderr, returncode):
        self.stderr = stderr
        self.returncode = returncode
        lines = [ln for ln in proc_result_stdout.splitlines() if ln.startswith("{")]
        if returncode != 0 or not lines:
            raise AssertionError(f"loader exited with {returncode}\nstdout: {proc_result_stdout[-2000:]}\nstderr: {stderr[-4000:]}")
        self.result = json.loads(lines[-1])

    def __getitem__(self, key):
        return self.result[key]

    def describe(self):
        r = dict(self.result)
        return json.dumps(r, indent=1)[:6000] + "\nstderr (tail):\n" + self.stderr[-4000:]


def run_loader(env, paths, source, timeout=600, **kw):
    p = subprocess.run(loader_command(paths, source, **kw), env=env, capture_output=True, text=True, timeout=timeout)
    return LoaderRun(p.stdout, p.stderr, p.returncode)


def start_loader(env, paths, source, **kw):
    return subprocess.Popen(loader_command(paths, source, **kw), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_loader(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return LoaderRun(out, err, proc.returncode)


class Model:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.sizes = test_model.generate(directory)
        self.files = list(self.sizes)
        self.total_bytes = sum(self.sizes.values())
        self.total_blocks = sum(math.ceil(s / BLOCK_SIZE) for s in self.sizes.values())
        self.tensors = {f: test_model.tensor_ranges(self.dir / f) for f in self.files}
        self.tensor_count = sum(len(t) for t in self.tensors.values())
        self.tensor_bytes = sum(n for t in self.tensors.values() for _, n in t.values())

    def local_paths(self, files=None):
        return [self.dir / f for f in (files or self.files)]


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    w = os.environ.get("BLOBCACHE_E2E_WORK")
    if w:
        os.makedirs(w, exist_ok=True)
        return Path(w)
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def lib():
    path = blobcache.library_path()
    assert os.path.isfile(path), f"{path} missing: is the wheel installed in this venv?"
    assert "site-packages" in path, f"blobcache is imported from {path}, not from an installed wheel"
    return path


@pytest.fixture(scope="session")
def model(work):
    return Model(work / "model")


def _origins_wanted():
    v = os.environ.get("BLOBCACHE_E2E_ORIGIN", "auto").strip() or "auto"
    return [x.strip() for x in v.split(",") if x.strip()]


def _probe(lib, origin, model, work):
    env = clean_env(BLOBCACHE_DIR=str(work / "caches" / f"probe-{origin.name}"), **origin.env)
    p = subprocess.run([sys.executable, "-c", origins.PROBE, lib, origins.ACCOUNT, origins.CONTAINER, model.files[0]],
                       env=env, capture_output=True, text=True, timeout=120)
    return (p.stdout.strip() or p.stderr.strip()) if p.returncode == 0 else p.stderr.strip()


@pytest.fixture(scope="session", params=_origins_wanted())
def origin(request, lib, model, work):
    kind = request.param
    if kind == "directory":
        o = origins.DirectoryOrigin(str(work), str(model.dir), model.files)
    elif kind in ("azurite", "auto"):
        binary = origins.azurite_bin(str(REPO))
        if kind == "auto" and not os.access(binary, os.X_OK) and not os.environ.get("CI"):
            NOTES.append(f"origin auto: Azurite is not installed ({binary}); used the directory origin")
            o = origins.DirectoryOrigin(str(work), str(model.dir), model.files)
        else:
            o = origins.AzuriteOrigin(str(work / "azurite-data"), str(model.dir), model.files, str(REPO))
            msg = _probe(lib, o, model, work)
            if msg != "ok":
                o.close()
                pytest.fail(f"reading through the library from Azurite failed: {msg}")
    else:
        pytest.fail(f"BLOBCACHE_E2E_ORIGIN={kind}: use auto, directory or azurite")
    yield o
    o.close()


_cache_counter = [0]


@pytest.fixture
def new_cache(work):
    """Returns a function that makes a fresh, empty cache directory."""

    def make(label):
        _cache_counter[0] += 1
        d = work / "caches" / f"{_cache_counter[0]:02d}-{label}"
        d.mkdir(parents=True)
        return d

    return make


def record_time(origin_name, what, seconds, nbytes):
    TIMINGS.append((origin_name, what, seconds, nbytes))


def pytest_terminal_summary(terminalreporter):
    if not TIMINGS and not NOTES:
        return
    tr = terminalreporter
    tr.section("blobcache end-to-end: measured times")
    for note in NOTES:
        tr.write_line(f"note: {note}")
    for origin_name, what, seconds, nbytes in TIMINGS:
        rate = f"{nbytes / seconds / (1 << 20):8.0f} MiB/s" if seconds and nbytes else ""
        size = f"{nbytes / (1 << 20):.0f} MiB" if nbytes else ""
        tr.write_line(f"{origin_name:>10}  {what:<52} {seconds * 1000:9.1f} ms  {size:>8} {rate}")
    out = os.environ.get("BLOBCACHE_E2E_RESULTS")
    if out:
        with open(out, "w") as f:
            json.dump({"notes": NOTES, "timings": [
                {"origin": o, "what": w, "seconds": s, "bytes": b} for o, w, s, b in TIMINGS]}, f, indent=1)
