"""A setting that fails every read, seen where the user looks.

The streamer shows a failed provider read only as ``File access error``
(its own log lines need RUNAI_STREAMER_LOG_TO_STDERR=1), so the library
prints such a misconfiguration on stderr itself: once per process, at the
default log level, naming the variable and the fix, never a secret. And
``python -m blobcache`` and ``blobcache doctor`` check the same settings (the
library's own check) and exit 1 while reads would fail.

No RUNAI_STREAMER_* variable is set here: the streamer hides its log.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import clean_env, run_loader

# A secret the library knows (AZURE_CLIENT_SECRET is one of its secret
# variables), also pasted into a setting where it does not belong.
SECRET = "E2eClientSecretValue-4242"
NOT_SET = "AZURE_STORAGE_ACCOUNT_NAME is not set: "
SUFFIX = ('(every read through blobcache fails until this is fixed; '
          'the Run:ai streamer shows such a failure as "File access error")')


def env_for(origin, cache, **extra):
    return clean_env(**{"BLOBCACHE_DIR": str(cache), **origin.env, **extra})


def uris(origin, model):
    return [origin.uri(f) for f in model.files]


def error_lines(stderr, what):
    """The library's error lines on `stderr` that contain `what`."""
    return [ln for ln in stderr.splitlines() if ln.startswith("blobcache: error: ") and what in ln]


def python_m_blobcache(env, *args):
    return subprocess.run([sys.executable, "-m", "blobcache", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def doctor(env):
    cmd = Path(sys.executable).parent / "blobcache"
    return subprocess.run([str(cmd), "doctor", "--timeout", "2"], env=env, capture_output=True, text=True,
                          timeout=120)


# -- the real streamer ----------------------------------------------------------


def test_an_invalid_setting_is_printed_once_on_the_stderr_of_a_real_streamer_load(origin, model, lib, new_cache):
    cache = new_cache("bad-setting")
    env = env_for(origin, cache, BLOBCACHE_MAX_SIZE="lots", AZURE_CLIENT_SECRET=SECRET,
                  BLOBCACHE_FETCH_TIMEOUT=SECRET)
    assert not any(k.startswith("RUNAI_STREAMER_") for k in env)
    run = run_loader(env, uris(origin, model), model.dir)
    print("\nstderr of the streamer's process:\n" + run.stderr)
    assert run["error"] is not None and "File access error" in run["error"], run.describe()
    assert [os.path.realpath(p) for p in run["mapped"]] == [os.path.realpath(lib)], run.describe()
    # The streamer's own lines stay hidden; ours are there, each once.
    assert "AzCacheProvider" not in run.stderr, run.stderr
    lots = error_lines(run.stderr, "BLOBCACHE_MAX_SIZE=lots is not valid; use a size such as 200G")
    assert len(lots) == 1, run.stderr
    assert lots[0].endswith(SUFFIX), lots[0]
    assert len(error_lines(run.stderr, "BLOBCACHE_FETCH_TIMEOUT=<redacted> is not valid; use a duration")) == 1, \
        run.stderr
    assert len(error_lines(run.stderr, "")) == 2, run.stderr
    assert SECRET not in run.stderr + json.dumps(run.result)
    assert not os.listdir(cache), "a read started the cache"


def test_without_an_account_name_the_streamer_fails_before_it_loads_blobcache(origin, model, new_cache):
    """The streamer (0.17.0, and upstream's newest source) creates its Azure client
    only with AZURE_STORAGE_ACCOUNT_NAME set: without it the client fails (its
    message, "Azure account name is required", only with
    RUNAI_STREAMER_LOG_TO_STDERR=1) before any provider is loaded, so blob_read
    is never called, with an empty account or NULL. The user finds it with
    python -m blobcache (below, and test_python_m_blobcache_...)."""
    cache = new_cache("no-account")
    env = env_for(origin, cache)
    del env["AZURE_STORAGE_ACCOUNT_NAME"]
    run = run_loader(env, uris(origin, model), model.dir)
    print("\nstderr of the streamer's process:\n" + run.stderr)
    assert run["error"] is not None, run.describe()
    assert run["mapped"] == [], "the streamer loaded the provider without an account name:\n" + run.describe()
    p = python_m_blobcache(env)
    if origin.name == "azurite":
        assert p.returncode == 1, p.stdout + p.stderr
        assert NOT_SET in p.stdout, p.stdout


def test_an_empty_account_name_is_printed_once_by_the_installed_library(lib, new_cache):
    """What the streamer would pass (its AZURE_STORAGE_ACCOUNT_NAME, or "") if it
    ever read without the variable, and what another caller may pass: many
    reads on many threads, across shutdowns, one line."""
    cache = new_cache("empty-account")
    code = textwrap.dedent(f"""
        import ctypes, os, threading
        lib = ctypes.CDLL({lib!r}, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        lib.blob_read.restype = ctypes.c_ssize_t
        lib.blob_read.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                                                          ctypes.c_char_p, ctypes.c_size_t]
        errors = []
        def reads():
            buf, err = ctypes.create_string_buffer(8), ctypes.create_string_buffer(512)
            for _ in range(20):
                dst = ctypes.cast(buf, ctypes.c_void_p)
                assert lib.blob_read(b"", b"models", b"m.safetensors", dst, 0, 8, err, 512) == -1
                errors.append(err.value.decode())
        for _ in range(3):
            threads = [threading.Thread(target=reads) for _ in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            lib.shutdown()
        assert len(errors) == 240 and all({NOT_SET!r} in e for e in errors), errors[:2]
        print(errors[0])
    """)
    env = clean_env(BLOBCACHE_DIR=str(cache), AZURE_CLIENT_SECRET=SECRET)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("blobcache: " + NOT_SET), p.stdout
    lines = error_lines(p.stderr, NOT_SET)
    assert len(lines) == 1 and lines[0].endswith(SUFFIX), p.stderr
    assert len(error_lines(p.stderr, "")) == 1, p.stderr
    assert SECRET not in p.stdout + p.stderr


# -- python -m blobcache and blobcache doctor ----------------------------------


@pytest.fixture
def directory_env(tmp_path):
    """A valid environment that needs no network: the directory origin."""
    (tmp_path / "origin").mkdir()
    return clean_env(BLOBCACHE_ORIGIN=f"file://{tmp_path / 'origin'}", BLOBCACHE_DIR=str(tmp_path / "cache"),
                     AZURE_STORAGE_ACCOUNT_NAME="acct", AZURE_CLIENT_SECRET=SECRET)


def test_python_m_blobcache_exits_0_when_the_settings_are_valid(directory_env):
    p = python_m_blobcache(directory_env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "will load blobcache: yes" in p.stdout and "\nsettings: valid\n" in p.stdout, p.stdout
    rep = json.loads(python_m_blobcache(directory_env, "--json").stdout)
    assert rep["configuration"]["problems"] == [], rep["configuration"]


def test_python_m_blobcache_exits_1_naming_an_invalid_setting_and_its_fix(directory_env):
    env = dict(directory_env, BLOBCACHE_MAX_SIZE="lots", BLOBCACHE_LOG=SECRET)
    p = python_m_blobcache(env)
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout
    assert "will load blobcache: yes" in out, out  # the streamer would load it, and every read would fail
    assert "settings: 2 problems; every read through blobcache fails until they are fixed:" in out, out
    assert "  - BLOBCACHE_MAX_SIZE=lots is not valid; use a size such as 200G" in out, out
    assert "  - BLOBCACHE_LOG=<redacted> is not valid; use error, warn, info or debug" in out, out
    assert SECRET not in out + p.stderr
    p = python_m_blobcache(env, "--json")
    assert p.returncode == 1
    problems = json.loads(p.stdout)["configuration"]["problems"]
    assert [x.split("=")[0] for x in problems] == ["BLOBCACHE_MAX_SIZE", "BLOBCACHE_LOG"], problems


def test_python_m_blobcache_exits_1_when_the_azure_origin_has_no_account_name(directory_env):
    env = {k: v for k, v in directory_env.items() if k not in ("BLOBCACHE_ORIGIN", "AZURE_STORAGE_ACCOUNT_NAME")}
    p = python_m_blobcache(env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "settings: 1 problem; every read through blobcache fails until it is fixed:" in p.stdout, p.stdout
    assert "  - " + NOT_SET + "the Run:ai streamer passes its value" in p.stdout, p.stdout
    assert "set it to the name of the storage account" in p.stdout, p.stdout
    # The same fact once, not also as a note.
    assert p.stdout.count("AZURE_STORAGE_ACCOUNT_NAME is not set") == 1, p.stdout
    # The directory origin reads no account from Azure: the library has no
    # problem, the streamer's need is a note.
    p = python_m_blobcache(dict(env, BLOBCACHE_ORIGIN=directory_env["BLOBCACHE_ORIGIN"]))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "note: AZURE_STORAGE_ACCOUNT_NAME is not set" in p.stdout, p.stdout


@pytest.mark.parametrize("case", ["valid", "invalid setting", "no account name"])
def test_blobcache_doctor_and_python_m_blobcache_agree(case, directory_env):
    env = dict(directory_env)
    if case == "invalid setting":
        env["BLOBCACHE_READAHEAD"] = "lots"
    elif case == "no account name":
        del env["AZURE_STORAGE_ACCOUNT_NAME"]
        del env["BLOBCACHE_ORIGIN"]
    want = 0 if case == "valid" else 1
    p = python_m_blobcache(env)
    d = doctor(env)
    assert (p.returncode, d.returncode) == (want, want), f"python -m blobcache:\n{p.stdout}\ndoctor:\n{d.stdout}{d.stderr}"
    if case == "invalid setting":
        assert "BLOBCACHE_READAHEAD=lots is not valid; use " in p.stdout and "BLOBCACHE_READAHEAD=lots" in d.stdout
    if case == "no account name":
        assert NOT_SET in p.stdout and "PROBLEM: " + NOT_SET in d.stdout, d.stdout
    assert SECRET not in p.stdout + d.stdout + d.stderr
