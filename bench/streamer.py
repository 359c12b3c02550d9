"""Items 4 and 6: the released Run:ai streamer (0.17.0) loading a model.

Each load is one fresh loader process (tests/e2e/loader.py: it streams the
files with SafetensorsStreamer, times the session, then checks every tensor
byte for byte against the source). Its --warmup streams a small local file
first, so the streamer's one-off start-up costs are outside the timed session.
Baseline and subject alternate (A B A B ...).

4: warm. The library, its cache filled beforehand from a directory origin,
   against the same streamer reading the same files from a local directory.
   Both read from the page cache (the model files and the cache's block files
   were read just before, and the machine has far more memory than both).
6: cold. The library (a fresh cache directory per load) filling from Azurite,
   against the streamer's own Azure client (no provider) reading the same
   blobs from Azurite over HTTPS (see TlsAzurite). The library reads the same
   HTTPS Azurite with the same settings (like for like), and, for scale, a
   plain-HTTP Azurite holding the same blobs.
   Far: the same like-for-like comparison with both going through a far link
   (`bench farlink`, crates/testing/src/farlink.rs) in front of the HTTPS
   Azurite: the streamer and the library are pointed at the link's port.

Runs inside a network namespace with only loopback (bench/run sees to it).
"""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "e2e"), str(REPO / "python")]

import conftest  # noqa: E402  (the e2e tests' loader helpers)
import origins  # noqa: E402

MIB = 1 << 20
FILES = 4


def write_model(directory, mib):
    """FILES safetensors files of mib/FILES MiB of random uint8 tensors (a few
    large ones and one of odd size per file); returns their names."""
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.Generator(np.random.PCG64(20261123))
    per = mib * MIB // FILES
    names = []
    for i in range(FILES):
        sizes = [per // 4] * 3 + [per - 3 * (per // 4) - 12345, 12345]
        header, off = {}, 0
        for j, n in enumerate(sizes):
            header[f"layers.{i}.w{j}"] = {"dtype": "U8", "shape": [n], "data_offsets": [off, off + n]}
            off += n
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        name = f"model-{i + 1:05d}-of-{FILES:05d}.safetensors"
        with open(directory / name, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for n in sizes:
                f.write(rng.bytes(n))
        names.append(name)
    return names


def load(env, paths, source, warmup, wrap=()):
    """One loader process; returns its session's seconds (failing loudly on
    any error or wrong byte)."""
    cmd = list(wrap) + conftest.loader_command(paths, source, warmup=warmup)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    run = conftest.LoaderRun(p.stdout, p.stderr, p.returncode)
    s = run["sessions"][0] if run["sessions"] else None
    if run["error"] or not s or s["mismatches"] or s["missing"]:
        raise RuntimeError("load failed:\n" + run.describe())
    return s["seconds"], s["stats"], run["mapped"]


def loader_env(**extra):
    # BLOBCACHE_AUTOREGISTER=0: a wheel installed in the venv must not point
    # the streamer at its own library behind our back.
    # BENCH_EXTRA_ENV=K=V,K=V adds settings, as in bench/cold.rs (an aid
    # for work on the cold path; bench/run sets none).
    more = dict(kv.split("=", 1) for kv in os.environ.get("BENCH_EXTRA_ENV", "").split(",") if "=" in kv)
    env = conftest.clean_env(**{"BLOBCACHE_AUTOREGISTER": "0", "BLOBCACHE_LOG": "warn", **extra, **more})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), str(REPO / "tests" / "e2e")])
    return env


def tls_material(d):
    """A CA, and a certificate it signs for *.blob.localhost, blob.localhost
    and 127.0.0.1 (what the streamer's client connects to)."""
    d.mkdir(parents=True, exist_ok=True)
    ssl = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=blobcache bench CA",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=blob.localhost",
        "-keyout", str(d / "leaf.key"), "-out", str(d / "leaf.csr"))
    (d / "ext").write_text("subjectAltName=DNS:*.blob.localhost,DNS:blob.localhost,IP:127.0.0.1\n"
                           "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                           "extendedKeyUsage=serverAuth\n")
    ssl("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext"), "-out", str(d / "leaf.pem"))
    return d / "ca.pem", d / "leaf.pem", d / "leaf.key"


class TlsAzurite:
    """Azurite over HTTPS with the bench CA's certificate, holding the model."""

    def __init__(self, work, model_dir, files, tls):
        ca, cert, key = tls
        self.ca = ca
        self.port = origins.free_port()
        self.log = open(work / "azurite-tls.log", "wb")
        self.proc = subprocess.Popen(
            [origins.azurite_bin(str(REPO)), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--cert", str(cert), "--key", str(key), "--inMemoryPersistence", "--silent",
             "--disableTelemetry", "--skipApiVersionCheck"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=work)
        deadline = time.monotonic() + 30
        while True:
            try:
                __import__("socket").create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"Azurite (TLS) did not start; see {self.log.name}")
                time.sleep(0.05)
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient(f"https://127.0.0.1:{self.port}/{origins.ACCOUNT}",
                                credential={"account_name": origins.ACCOUNT, "account_key": origins.AZURITE_KEY},
                                connection_verify=str(ca))
        container = svc.get_container_client(origins.CONTAINER)
        container.create_container()
        for f in files:
            with open(model_dir / f, "rb") as data:
                container.upload_blob(f, data, overwrite=True, max_concurrency=4)

    def streamer_env(self):
        """The streamer's own Azure settings, as a user would set them, with
        the provider turned off."""
        return {
            "AZURE_STORAGE_ACCOUNT_NAME": origins.ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": origins.AZURITE_KEY,
            "AZURE_STORAGE_ENDPOINT_SUFFIX": f"blob.localhost:{self.port}",
            "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED": "0",
        }

    def wrap(self):
        """The released streamer's curl trusts only its compiled-in bundle
        path: give the process a private mount namespace where the bench CA is
        that file (the system's file is untouched)."""
        return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                f'mount --bind "{self.ca}" /etc/ssl/certs/ca-certificates.crt && exec "$@"', "_"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class FarLink:
    """`bench farlink`: a far link in front of a loopback port, in a process
    of its own that runs until its stdin closes."""

    def __init__(self, bench_bin, upstream, rtt_ms):
        self.proc = subprocess.Popen([bench_bin, "farlink", "--upstream", str(upstream), "--rtt-ms", str(rtt_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def close(self):
        """Stops the link; returns its counters."""
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(10)
        return json.loads(out.strip().splitlines()[-1])


def summary(v):
    s = sorted(v)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"median": med, "min": s[0], "max": s[-1], "n": n}


def plain_best(bench_bin, url, size, ca=None):
    """The best plain parallel-ranged-GET download rate (GB/s) of one blob."""
    cmd = [bench_bin, "plain", "--url", url, "--size", str(size)] + (["--ca", str(ca)] if ca else [])
    return json.loads(subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout)["best_gbs"]


def run(lib, bench_bin, work, mib, warm_reps, reps, far_rtt_ms=20, log=print):
    work = Path(work)
    model_dir = work / "model"
    files = write_model(model_dir, mib)
    total = sum((model_dir / f).stat().st_size for f in files)
    warmup_dir = work / "warmup"
    warmup = warmup_dir / write_model(warmup_dir, 4)[0]
    local = [model_dir / f for f in files]
    uris = [f"az://{origins.CONTAINER}/{f}" for f in files]
    out = {"model_bytes": total, "files": len(files), "warm_reps": warm_reps, "reps": reps}

    # Item 4: warm, library vs local directory.
    d = origins.DirectoryOrigin(str(work), str(model_dir), files)
    lib_env = loader_env(BLOBCACHE_DIR=str(work / "cache-warm"), RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB=lib,
                         **d.env)
    local_env = loader_env()
    _, stats, _ = load(lib_env, uris, model_dir, warmup)  # fills the cache
    assert stats and stats["misses"] > 0, f"the fill went through the library: {stats}"
    load(local_env, local, model_dir, warmup)  # the model files into the page cache
    ours, theirs = [], []
    for i in range(warm_reps):
        t_local = load(local_env, local, model_dir, warmup)[0]
        t_lib, stats, _ = load(lib_env, uris, model_dir, warmup)
        assert stats["misses"] == 0 and stats["hits"] > 0, f"a warm load is all hits: {stats}"
        theirs.append(t_local)
        ours.append(t_lib)
        log(f"item 4 rep {i + 1}: local {t_local:.3f} s, library warm {t_lib:.3f} s")
    out["item4"] = {"local_s": summary(theirs), "library_s": summary(ours),
                    "library_vs_local": summary([a / b for a, b in zip(ours, theirs)])}

    def cold_through_library(cache, **settings):
        """One load through the library into the fresh cache directory
        `cache` (removed after), with these origin settings; its seconds."""
        env = loader_env(BLOBCACHE_DIR=str(cache), RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB=lib, **settings)
        t, stats, _ = load(env, uris, model_dir, warmup)
        assert stats["bytes_from_origin"] >= total, f"a cold load fetches every byte: {stats}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        return t

    # Item 6: cold, library (HTTP Azurite) vs the streamer's own client (HTTPS Azurite).
    tls = tls_material(work / "tls")
    plain = origins.AzuriteOrigin(str(work / "azurite-http"), str(model_dir), files, str(REPO))
    secure = TlsAzurite(work, model_dir, files, tls)
    try:
        direct_env = loader_env(**secure.streamer_env())
        # The library reads the same HTTPS Azurite with the streamer's own
        # Azure settings, trusting the bench CA through SSL_CERT_FILE.
        tls_env = {k: v for k, v in secure.streamer_env().items() if not k.startswith("RUNAI_")}
        ours, ours_tls, theirs, https, http = [], [], [], [], []
        first, first_size = files[0], (model_dir / files[0]).stat().st_size
        for i in range(reps):
            t_direct, _, mapped = load(direct_env, uris, model_dir, warmup, wrap=secure.wrap())
            assert not mapped, f"the direct load mapped no provider: {mapped}"
            cache = work / f"cache-cold-{i}"
            t_lib = cold_through_library(cache, **plain.env)
            t_tls = cold_through_library(cache, SSL_CERT_FILE=str(secure.ca), **tls_env)
            ours_tls.append(total / t_tls / 1e9)
            # What TLS costs this Azurite: the same plain download both ways.
            http.append(plain_best(bench_bin, f"{plain.endpoint}/{origins.CONTAINER}/{first}", first_size))
            https.append(plain_best(bench_bin, f"https://127.0.0.1:{secure.port}/{origins.ACCOUNT}/"
                                    f"{origins.CONTAINER}/{first}", first_size, ca=secure.ca))
            theirs.append(total / t_direct / 1e9)
            ours.append(total / t_lib / 1e9)
            log(f"item 6 rep {i + 1}: streamer direct (HTTPS) {t_direct:.3f} s, library cold (HTTP) {t_lib:.3f} s, "
                f"(HTTPS) {t_tls:.3f} s; "
                f"plain GETs HTTP {http[-1]:.2f} GB/s, HTTPS {https[-1]:.2f} GB/s")
        out["item6"] = {"direct_gbs": summary(theirs), "library_gbs": summary(ours),
                        "library_vs_direct": summary([a / b for a, b in zip(ours, theirs)]),
                        "library_tls_gbs": summary(ours_tls),
                        "library_tls_vs_direct": summary([a / b for a, b in zip(ours_tls, theirs)]),
                        "plain_http_gbs": summary(http), "plain_https_gbs": summary(https),
                        "plain_https_vs_http": summary([a / b for a, b in zip(https, http)])}

        # Item 6, far: the same like-for-like comparison, both through a far
        # link in front of the HTTPS Azurite.
        far = FarLink(bench_bin, secure.port, far_rtt_ms)
        try:
            far_env = {**secure.streamer_env(), "AZURE_STORAGE_ENDPOINT_SUFFIX": f"blob.localhost:{far.port}"}
            far_direct_env = loader_env(**far_env)
            lib_far = {k: v for k, v in far_env.items() if not k.startswith("RUNAI_")}
            far_ours, far_theirs = [], []
            for i in range(reps):
                t_direct, _, mapped = load(far_direct_env, uris, model_dir, warmup, wrap=secure.wrap())
                assert not mapped, f"the direct load mapped no provider: {mapped}"
                t_lib = cold_through_library(work / f"cache-far-{i}", SSL_CERT_FILE=str(secure.ca), **lib_far)
                far_theirs.append(total / t_direct / 1e9)
                far_ours.append(total / t_lib / 1e9)
                log(f"item 6 far rep {i + 1}: streamer direct {t_direct:.3f} s, library cold {t_lib:.3f} s "
                    f"(HTTPS, far link of {far_rtt_ms} ms)")
        finally:
            counters = far.close()
        # Both loads of every repetition went through the link.
        assert counters["bytes_to_client"] >= 2 * reps * total, f"the far link carried too little: {counters}"
        out["item6_far"] = {"rtt_ms": far_rtt_ms, "connections": counters["connections"],
                            "direct_gbs": summary(far_theirs), "library_gbs": summary(far_ours),
                            "library_vs_direct": summary([a / b for a, b in zip(far_ours, far_theirs)])}
    finally:
        secure.close()
        plain.close()
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--bin", required=True, help="the bench program")
    ap.add_argument("--work", required=True)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--warm-reps", type=int, default=9)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--far-rtt-ms", type=int, default=20)
    a = ap.parse_args()
    print(json.dumps(run(a.lib, a.bin, a.work, a.mib, a.warm_reps, a.reps, a.far_rtt_ms,
                         log=lambda m: print(m, file=sys.stderr))))
