"""Where the test model lives: the origin blobcache fills its cache from.

- DirectoryOrigin: BLOBCACHE_ORIGIN=file:///root, files at <root>/<account>/<container>/<blob>.
- AzuriteOrigin: the Azure Storage emulator on loopback, BLOBCACHE_ORIGIN=azure with
  BLOBCACHE_AZURE_ENDPOINT pointing at it and the emulator's well-known account key.

Both expose the same interface: `env` (the variables a loader needs),
`uri(name)` (the az:// URI the streamer is given) and `close()`.
"""

import os
import socket
import subprocess
import time

ACCOUNT = "devstoreaccount1"
CONTAINER = "models"
# Azurite's development account key: public, published in Azurite's documentation.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class DirectoryOrigin:
    name = "directory"

    def __init__(self, work, model_dir, files):
        self.root = os.path.join(work, "origin-dir")
        dest = os.path.join(self.root, ACCOUNT, CONTAINER)
        os.makedirs(dest, exist_ok=True)
        for f in files:
            target = os.path.join(dest, f)
            if not os.path.exists(target):
                os.link(os.path.join(model_dir, f), target)  # same filesystem: no copy
        self.env = {
            "BLOBCACHE_ORIGIN": "file://" + self.root,
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
        }

    def uri(self, name):
        return f"az://{CONTAINER}/{name}"

    def close(self):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_bin(repo):
    return os.environ.get("AZURITE_BIN") or os.path.join(repo, ".tools", "azurite", "node_modules", ".bin", "azurite-blob")


class AzuriteOrigin:
    name = "azurite"

    def __init__(self, work, model_dir, files, repo):
        binary = azurite_bin(repo)
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"Azurite not found at {binary}: run scripts/install-azurite.sh")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{ACCOUNT}"
        os.makedirs(work, exist_ok=True)
        self.log = open(os.path.join(work, "azurite.log"), "wb")
        # In memory (Azurite refuses --location with it); run in `work` so
        # nothing it writes lands in the repository.
        self.proc = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--inMemoryPersistence",
             "--silent", "--disableTelemetry", "--skipApiVersionCheck"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=work,
        )
        try:
            self._wait_ready()
            self._upload(model_dir, files)
        except BaseException:
            self.close()
            raise
        self.env = {
            "BLOBCACHE_ORIGIN": "azure",
            "BLOBCACHE_AZURE_ENDPOINT": "http://127.0.0.1:%d/{account}" % self.port,
            "AZURE_STORAGE_ACCOUNT_NAME": ACCOUNT,
            "AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY,
        }

    def _wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.proc.returncode}; see {self.log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("Azurite did not start within 30 s")

    def env_through(self, proxy):
        """The loader environment with requests going through a proxy in front of Azurite."""
        return dict(self.env, BLOBCACHE_AZURE_ENDPOINT="http://127.0.0.1:%d/{account}" % proxy.port)

    def connection_string(self):
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint};")

    def _upload(self, model_dir, files):
        from azure.storage.blob import BlobServiceClient

        svc = BlobServiceClient.from_connection_string(self.connection_string())
        container = svc.get_container_client(CONTAINER)
        container.create_container()
        for f in files:
            with open(os.path.join(model_dir, f), "rb") as data:
                container.upload_blob(f, data, overwrite=True, max_concurrency=4)

    def uri(self, name):
        return f"az://{CONTAINER}/{name}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# Reads the first 8 bytes of a blob through the library, as the streamer's
# first call does; prints "ok" or the library's error message.
# argv: library account container blob
PROBE = r"""
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1], mode=os.RTLD_NOW | os.RTLD_LOCAL)
lib.blob_read.restype = ctypes.c_ssize_t
lib.blob_read.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
buf = ctypes.create_string_buffer(8)
err = ctypes.create_string_buffer(512)
n = lib.blob_read(*(a.encode() for a in sys.argv[2:5]), buf, 0, 8, err, 512)
print("ok" if n == 8 else err.value.decode(errors="replace"))
"""
