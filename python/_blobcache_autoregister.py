"""Startup hook of the blobcache wheel (run by blobcache-autoregister.pth).

Points the Run:ai model streamer at the libblobcache.so installed next to
this file by setting RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB, but only
when that variable is unset or empty: a value the user set wins.
BLOBCACHE_AUTOREGISTER=0 (or false, no, off) turns the hook off. The streamer's own
RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED=0 still disables the cache.

It runs at every interpreter start-up, so it imports nothing but os (already
imported by site) and never raises.
"""

registered = None  # the path this hook set, for `python -m blobcache`

try:
    import os

    _OFF = ("0", "false", "no", "off")
    _env = os.environ
    if _env.get("BLOBCACHE_AUTOREGISTER", "").strip().lower() not in _OFF and not _env.get(
        "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"
    ):
        _lib = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blobcache", "libblobcache.so")
        if os.path.isfile(_lib):
            _env["RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"] = _lib
            registered = _lib
except Exception:  # never break interpreter start-up
    pass
