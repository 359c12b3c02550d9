"""End-to-end tests with the released Run:ai streamer (runai-model-streamer
and runai-model-streamer-azure 0.17.0 from PyPI) and our installed wheel.

Every load runs in its own process (tests/e2e/loader.py) with no
RUNAI_STREAMER_* variable set unless a test says otherwise: the wheel's
start-up hook is what points the streamer at libblobcache.so.
"""

import os
import shutil

import pytest

import origins
from conftest import clean_env, finish_loader, record_time, run_loader, start_loader
from proxy import CountingProxy

LIB_VAR = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"
STREAMER_LOG = {"RUNAI_STREAMER_LOG_TO_STDERR": "1", "RUNAI_STREAMER_LOG_LEVEL": "INFO"}


def env_for(origin, cache, **extra):
    return clean_env(**{"BLOBCACHE_DIR": str(cache), **origin.env, **extra})


def uris(origin, model, files=None):
    return [origin.uri(f) for f in (files or model.files)]


def assert_all_tensors_correct(run, model, files=None):
    files = files or model.files
    want = sum(len(model.tensors[f]) for f in files)
    assert run["error"] is None, run.describe()
    for i, s in enumerate(run["sessions"]):
        assert s["mismatches"] == [], f"session {i + 1}: {s['mismatches']}"
        assert s["missing"] == [], f"session {i + 1}: tensors never delivered: {s['missing']}"
        assert s["tensors"] == want, f"session {i + 1}: {s['tensors']} tensors, expected {want}"


def assert_loaded_ours(run, lib):
    real = os.path.realpath(lib)
    assert [os.path.realpath(p) for p in run["mapped"]] == [real], (
        f"expected exactly {real} mapped; mapped: {run['mapped']}\n" + run.describe())


# -- (a) and (b): cold, then warm without a network ---------------------------


@pytest.fixture(scope="session")
def cold(origin, model, work):
    cache = work / "caches" / f"cold-warm-{origin.name}"
    cache.mkdir(parents=True)
    run = run_loader(env_for(origin, cache), uris(origin, model), model.dir)
    return cache, run


def test_cold_load_through_blobcache_matches_the_source_byte_for_byte(cold, origin, model, lib):
    cache, run = cold
    assert run["env_lib"] == lib, "the start-up hook did not point the streamer at our library"
    assert_all_tensors_correct(run, model)
    assert_loaded_ours(run, lib)
    stats = run["sessions"][0]["stats"]
    assert stats is not None, "blobcache_stats_json unavailable: the streamer did not load our library"
    assert stats["blocks_fetched"] == model.total_blocks, stats
    assert stats["bytes_from_origin"] == model.total_bytes, stats
    assert stats["read_errors"] == 0 and stats["passthrough_reads"] == 0, stats
    record_time(origin.name, "cold load (az:// through blobcache, empty cache)", run["sessions"][0]["seconds"],
                model.tensor_bytes)


def test_warm_load_in_an_empty_network_namespace_matches_byte_for_byte(cold, origin, model, lib):
    cache, first = cold
    assert first["error"] is None, "the cold load failed; see the test above"
    run = run_loader(env_for(origin, cache), uris(origin, model), model.dir, netns=True)
    assert_all_tensors_correct(run, model)
    assert_loaded_ours(run, lib)
    stats = run["sessions"][0]["stats"]
    assert stats["blocks_fetched"] == 0 and stats["bytes_from_origin"] == 0, stats
    assert stats["misses"] == 0 and stats["hits"] > 0, stats
    record_time(origin.name, "warm load (az:// through blobcache, no network)", run["sessions"][0]["seconds"],
                model.tensor_bytes)


# -- (c): sessions one after another in one process ---------------------------


def test_three_sessions_in_one_process_each_read_correctly_after_shutdown(origin, model, lib, new_cache):
    cache = new_cache("three-sessions")
    run = run_loader(env_for(origin, cache, **STREAMER_LOG), uris(origin, model), model.dir, sessions=3)
    assert len(run["sessions"]) == 3, run.describe()
    assert_all_tensors_correct(run, model)
    assert_loaded_ours(run, lib)
    # The streamer calls shutdown() when each session closes; the library comes
    # back up at the next read and finds its blocks on disk.
    assert run.stderr.count("AzCacheProvider: calling shutdown()") == 3, run.stderr[-4000:]
    fetched = [s["stats"]["blocks_fetched"] for s in run["sessions"]]
    assert fetched == [model.total_blocks, 0, 0], fetched
    for i, s in enumerate(run["sessions"][1:], 2):
        record_time(origin.name, f"warm load, session {i} of 3 in one process", s["seconds"], model.tensor_bytes)


# -- (d): four processes at once -----------------------------------------------


def test_four_processes_at_once_all_correct_and_each_block_fetched_once(origin, model, lib, new_cache, work):
    cache = new_cache("four-processes")
    barrier = work / "barrier-four"
    shutil.rmtree(barrier, ignore_errors=True)
    proxy = CountingProxy(origin.port) if origin.name == "azurite" else None
    try:
        env = env_for(origin, cache, **(origin.env_through(proxy) if proxy else {}))
        procs = [start_loader(env, uris(origin, model), model.dir, barrier=barrier, parties=4) for _ in range(4)]
        runs = [finish_loader(p) for p in procs]
    finally:
        if proxy:
            proxy.close()
    for run in runs:
        assert_all_tensors_correct(run, model)
        assert_loaded_ours(run, lib)
    # The library's own count, summed over the processes.
    stats = [r["sessions"][0]["stats"] for r in runs]
    fetched = [s["blocks_fetched"] for s in stats]
    assert sum(fetched) == model.total_blocks, f"blocks fetched per process: {fetched}, model has {model.total_blocks}"
    assert sum(s["bytes_from_origin"] for s in stats) == model.total_bytes, stats
    if proxy:
        # What Azurite was asked for: every byte of every blob exactly once.
        assert_each_byte_fetched_once(proxy.seen(), model)
    record_time(origin.name, "4 processes at once, slowest (empty cache)",
                max(r["sessions"][0]["seconds"] for r in runs), model.tensor_bytes)


def assert_each_byte_fetched_once(requests, model):
    prefix = f"/{origins.ACCOUNT}/{origins.CONTAINER}/"
    ranges = {f: [] for f in model.files}
    for r in requests:
        if r.method != "GET" or not r.path.startswith(prefix) or "comp=" in r.query:
            continue
        blob = r.path[len(prefix):]
        assert blob in ranges, f"unexpected blob {blob!r}"
        rng = r.byte_range() or (0, None)
        ranges[blob].append((rng[0], rng[1] if rng[1] is not None else model.sizes[blob]))
    for blob, rs in ranges.items():
        rs.sort()
        pos = 0
        for start, end in rs:
            assert start == pos, f"{blob}: bytes {min(start, pos)}..{max(start, pos)} fetched {'twice' if start < pos else 'never'}; ranges {rs}"
            pos = min(end, model.sizes[blob])
        assert pos == model.sizes[blob], f"{blob}: fetched up to {pos} of {model.sizes[blob]} bytes"


# -- the cluster tier: two nodes sharing one --------------------------------------


def test_two_nodes_sharing_a_cluster_tier_the_second_fetches_nothing_from_the_origin(origin, model, lib, new_cache,
                                                                                     work):
    cluster = work / "caches" / f"cluster-{origin.name}"
    shutil.rmtree(cluster, ignore_errors=True)
    first = run_loader(env_for(origin, new_cache("cluster-node-1"), BLOBCACHE_CLUSTER_DIR=str(cluster)),
                       uris(origin, model), model.dir)
    assert_all_tensors_correct(first, model)
    s1 = first["sessions"][0]["stats"]
    assert s1["bytes_from_origin"] == model.total_bytes, s1
    # The counters are read before the session's shutdown(), which lets the
    # last publications land: count what the tier holds instead.
    published = [p for p in cluster.rglob("b.*") if p.name[2:].isdigit()]
    assert len(published) == model.total_blocks, sorted(str(p) for p in published)
    # The second node: a cache of its own, the same tier; its requests go
    # through a counting proxy when the origin allows one.
    proxy = CountingProxy(origin.port) if origin.name == "azurite" else None
    try:
        env = env_for(origin, new_cache("cluster-node-2"), BLOBCACHE_CLUSTER_DIR=str(cluster),
                      **(origin.env_through(proxy) if proxy else {}))
        second = run_loader(env, uris(origin, model), model.dir)
    finally:
        if proxy:
            proxy.close()
    assert_all_tensors_correct(second, model)
    assert_loaded_ours(second, lib)
    s2 = second["sessions"][0]["stats"]
    assert s2["bytes_from_origin"] == 0 and s2["blocks_fetched"] == 0, s2
    assert s2["bytes_from_cluster"] == model.total_bytes, s2
    assert s2["blocks_from_cluster"] == model.total_blocks, s2
    assert s2["cluster_damaged"] == 0 and s2["read_errors"] == 0, s2
    if proxy:
        gets = [r for r in proxy.seen() if r.method == "GET" and "comp=" not in r.query]
        assert gets == [], f"the second node fetched from the origin: {[(r.path, r.byte_range()) for r in gets]}"
    record_time(origin.name, "second node's load from the cluster tier (its own cache empty)",
                second["sessions"][0]["seconds"], model.tensor_bytes)


# -- (e) and the switches: when our library must not be loaded -----------------


def test_cache_enabled_0_keeps_blobcache_out_of_the_process(origin, model, lib, new_cache):
    cache = new_cache("disabled")
    env = env_for(origin, cache, RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED="0", **STREAMER_LOG)
    # No network: the streamer reads Azure itself, which must fail here rather
    # than reach out.
    run = run_loader(env, uris(origin, model, model.files[-1:]), model.dir, netns=True)
    assert run["env_lib"] == lib, "the hook sets the variable; the streamer's own switch decides"
    assert run["mapped"] == [], run.describe()
    assert "AzCacheProvider: disabled via RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED=0" in run.stderr, run.stderr[-3000:]
    assert "loading cache library" not in run.stderr
    assert run["error"] is not None, "without blobcache and without a network the load should have failed"
    assert not os.listdir(cache), "the cache directory was touched"


def test_autoregister_0_leaves_the_streamer_unconfigured(origin, model, new_cache):
    cache = new_cache("autoregister-off")
    env = env_for(origin, cache, BLOBCACHE_AUTOREGISTER="0", **STREAMER_LOG)
    run = run_loader(env, uris(origin, model, model.files[-1:]), model.dir, netns=True)
    assert run["env_lib"] is None
    assert run["mapped"] == [], run.describe()
    assert "loading cache library" not in run.stderr


def test_a_library_path_the_user_set_wins_over_the_hook(origin, model, lib, new_cache, work):
    cache = new_cache("user-lib")
    other = work / "user-lib" / "libblobcache-user-copy.so"
    other.parent.mkdir(exist_ok=True)
    shutil.copyfile(lib, other)
    env = env_for(origin, cache, **{LIB_VAR: str(other)})
    files = model.files[-1:]
    run = run_loader(env, uris(origin, model, files), model.dir)
    assert run["env_lib"] == str(other)
    assert_all_tensors_correct(run, model, files)
    assert run["mapped"] == [str(other)], run.describe()


# -- the baseline: the same streamer reading the same files from local disk ----


def test_local_directory_load_baseline(origin, model, lib):
    env = clean_env()
    run = run_loader(env, model.local_paths(), model.dir)
    assert_all_tensors_correct(run, model)
    assert run["mapped"] == [], "a local load must not involve the Azure cache provider"
    record_time(origin.name, "local directory load (same streamer, no az://)", run["sessions"][0]["seconds"],
                model.tensor_bytes)


# -- the measurement: cold, warm and local, in one run ---------------------------


def test_load_times_cold_warm_and_local(origin, model, lib, new_cache):
    """Each process first streams one local file (the streamer's first session in
    a process pays one-off costs), then the measured loads of the whole model:
    cold (empty cache), warm (3 sessions, median) and local files (3, median)."""
    warmup = model.local_paths(model.files[-1:])[0]
    cache = new_cache("timing")
    env = env_for(origin, cache)
    cold = run_loader(env, uris(origin, model), model.dir, warmup=warmup)
    assert_all_tensors_correct(cold, model)
    warm = run_loader(env, uris(origin, model), model.dir, warmup=warmup, sessions=3)
    assert_all_tensors_correct(warm, model)
    assert [s["stats"]["blocks_fetched"] for s in warm["sessions"]] == [0, 0, 0]
    local = run_loader(clean_env(), model.local_paths(), model.dir, warmup=warmup, sessions=3)
    assert_all_tensors_correct(local, model)

    def median(run):
        return sorted(s["seconds"] for s in run["sessions"])[len(run["sessions"]) // 2]

    n = model.tensor_bytes
    record_time(origin.name, "MEASURED cold load (az://, empty cache)", cold["sessions"][0]["seconds"], n)
    record_time(origin.name, "MEASURED warm load (az://, cached; median of 3)", median(warm), n)
    record_time(origin.name, "MEASURED local files (no az://; median of 3)", median(local), n)
