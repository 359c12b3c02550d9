"""blobcache: a node-local disk cache for Azure Blob Storage reads.

The wheel ships ``libblobcache.so`` (in this directory), which the Run:ai model
streamer loads as its Azure cache provider, and a start-up hook that points the
streamer at it (see ``python -m blobcache``). This module only locates the
library and reads its counters; it does not load the library unless asked.
"""

import os

__all__ = ["library_path", "stats", "__version__"]

ABI_VERSION = 1
"""The cache-provider interface version the library exports and the streamer checks."""


def library_path() -> str:
    """The absolute path of the libblobcache.so installed with this package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libblobcache.so")


def stats(path=None):
    """This process's cache counters as a dict, or None when the library is not loaded.

    Reads them from the copy of the library the streamer already loaded (the
    same file opened again with RTLD_NOLOAD returns the streamer's handle). The
    streamer calls the library's ``shutdown`` when its last session closes, which
    resets the counters: call this inside the ``with SafetensorsStreamer()``
    block, after the tensors have been read.
    """
    import ctypes
    import json

    path = path or library_path()
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_NOLOAD)
    except OSError:
        return None
    fn = lib.blobcache_stats_json
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    fn.restype = ctypes.c_ssize_t
    buf = ctypes.create_string_buffer(4096)
    n = fn(buf, len(buf))
    if n < 0:
        raise RuntimeError(f"blobcache_stats_json failed for {path}")
    return json.loads(buf.value[:n].decode())


def __getattr__(name):
    # Read lazily: importing importlib.metadata costs a few milliseconds.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("blobcache")
        except PackageNotFoundError:
            return "unknown (not installed as a distribution)"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
