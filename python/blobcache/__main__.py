"""``python -m blobcache``: where the library is, how it is configured, and
whether the installed Run:ai streamer will load it.

Exit status: 0 when the streamer in this environment will load our library
and its reads can work, 1 when it will not or when every read would fail
(an invalid setting, or no account name for the Azure origin; the output
names each variable and its fix), 2 on a usage error. The settings are
checked by the library itself (``blobcache_check_config``), the same check
``blobcache doctor`` makes.
Credentials are never printed, only whether they are present.

``--json`` prints the same facts as one JSON object (``report()``): strings,
booleans, lists and null, never text to scrape. ``blobcache doctor`` reads it
(crates/cli/src/cmd/doctor.rs, ``PythonReport``), so keep its members.
"""

import ctypes
import importlib.util
import json
import os
import sys

import blobcache

LIB_VAR = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"
ENABLED_VAR = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED"
AUTOREGISTER_VAR = "BLOBCACHE_AUTOREGISTER"

# The library's settings with their defaults, and its one list of secret
# variables: generated from the Rust tables (see _settings.py).
from blobcache._settings import IDENTITY_VARS, KEY_VARS, SAS_VARS, SECRET_VARS, SETTINGS

# Azure variables the library and the streamer read. Values of the first group
# are shown; the second group holds credentials or identities and is shown
# only as present or absent.
AZURE_SHOWN = [
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ENDPOINT_SUFFIX",
    "AZURE_SKIP_SIGNATURE",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USE_AZURE_CLI",
    "IDENTITY_ENDPOINT",
]
AZURE_SECRET = SECRET_VARS + [
    n for n in IDENTITY_VARS + ["AZURE_OBJECT_ID", "AZURE_MSI_RESOURCE_ID"] if n not in AZURE_SHOWN
]


def credential_kind():
    """Which credential the library will use, in the order it picks one (crates/core/src/origin/azure/auth.rs)."""
    e = _env
    if (e("BLOBCACHE_AZURE_AUTH") or "").strip().lower() == "anonymous" or (
        (e("AZURE_SKIP_SIGNATURE") or "").strip().lower() in ("true", "1")
    ):
        return "anonymous (unsigned requests)"
    for v in KEY_VARS:
        if e(v):
            return f"shared key ({v})"
    for v in SAS_VARS:
        if e(v):
            return f"SAS token ({v})"
    if e("AZURE_STORAGE_CONNECTION_STRING"):
        return "connection string (AZURE_STORAGE_CONNECTION_STRING)"
    if e("AZURE_STORAGE_TOKEN"):
        return "bearer token (AZURE_STORAGE_TOKEN)"
    if e("AZURE_CLIENT_ID") and e("AZURE_TENANT_ID") and e("AZURE_FEDERATED_TOKEN_FILE"):
        return "workload identity (AZURE_FEDERATED_TOKEN_FILE)"
    if e("AZURE_CLIENT_ID") and e("AZURE_TENANT_ID") and e("AZURE_CLIENT_SECRET"):
        return "service principal (AZURE_CLIENT_SECRET)"
    if (e("AZURE_USE_AZURE_CLI") or "").strip().lower() == "true":
        return "Azure CLI"
    return "managed identity (instance metadata service)"


USAGE = """\
usage: python -m blobcache [--json]

Prints the path and version of the installed libblobcache.so, the effective
configuration (BLOBCACHE_* and the Azure variables; credentials only as
present/absent), and whether the Run:ai streamer installed here will load the
library, and whether the library's settings let its reads work. Exit status 0
when it will load it and they do, 1 when it will not or a setting fails every
read (each named with its fix), 2 on a usage error.

  --json    the same as one JSON object
"""


def _env(name):
    """A variable's value, None when unset or empty (as the library reads them)."""
    v = os.environ.get(name)
    return v if v is not None and v.strip() != "" else None


def default_dir():
    xdg = _env("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "blobcache")
    home = _env("HOME")
    if home and os.path.isabs(home) and home != "/":
        return os.path.join(home, ".cache", "blobcache")
    return None


def _redactor():
    """Replaces the value of every secret variable set here (8 characters or more, as the
    library's redact.rs does) wherever it appears: a key pasted into a setting is still a key."""
    secrets = sorted({v.strip() for v in map(_env, SECRET_VARS) if v and len(v.strip()) >= 8}, key=len, reverse=True)

    def redact(text):
        if text is None:
            return None
        for secret in secrets:
            text = text.replace(secret, "<redacted>")
        return text

    return redact


def configuration():
    redact = _redactor()
    settings = {}
    for name, default in SETTINGS:
        value = redact(_env(name))
        if name == "BLOBCACHE_DIR" and value is None:
            default = default_dir() or "(none: set BLOBCACHE_DIR)"
        settings[name] = {
            "value": value if value is not None else default,
            "source": "environment" if value is not None else "default",
        }
    known = {n for n, _ in SETTINGS}
    unknown = sorted(n for n in os.environ if n.startswith("BLOBCACHE_") and n not in known)
    azure = {n: redact(_env(n)) for n in AZURE_SHOWN}
    azure.update({n: "present" if _env(n) else "absent" for n in AZURE_SECRET})
    return {"settings": settings, "unknown_settings": unknown, "azure": azure, "credential": credential_kind()}


def _dist_version(name):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def probe_library(path):
    """Loads the library as the streamer does (RTLD_NOW | RTLD_LOCAL) and checks its exports."""
    out = {"path": path, "exists": os.path.isfile(path), "loads": False, "abi_version": None, "missing_symbols": []}
    if not out["exists"]:
        out["error"] = "file not found"
        return out
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as e:
        out["error"] = f"dlopen failed: {e}"
        return out
    out["loads"] = True
    for sym in ("cache_abi_version", "runai_cache_abi_version", "blob_read", "shutdown", "blobcache_stats_json",
                "blobcache_check_config"):
        try:
            getattr(lib, sym)
        except AttributeError:
            out["missing_symbols"].append(sym)
    if "cache_abi_version" not in out["missing_symbols"]:
        fn = lib.cache_abi_version
        fn.argtypes = []
        fn.restype = ctypes.c_uint32
        out["abi_version"] = int(fn())
    return out


def check_settings(path):
    """The library's own check of this environment's settings (``blobcache_check_config``):
    a list of problems, each naming the variable and the fix (empty: reads can start), or
    None when the library cannot be asked (it does not load, or is older than the check)."""
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        fn = lib.blobcache_check_config
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    fn.restype = ctypes.c_ssize_t
    buf = ctypes.create_string_buffer(1 << 16)
    n = fn(buf, len(buf))
    if n < 0:
        return None
    problems = buf.value.decode("utf-8", "replace").splitlines()
    return problems[:n]


def _streamer_azure_lib():
    """Where the streamer's Azure backend (libstreamerazure.so) is, without importing torch."""
    try:
        spec = importlib.util.find_spec("runai_model_streamer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, "libstreamer", "lib", "libstreamerazure.so")
        if os.path.isfile(p):
            return p
    return None


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def streamer_check(lib_probe):
    """Decides whether the streamer in this environment will load our library."""
    ours = lib_probe["path"]
    hook = sys.modules.get("_blobcache_autoregister")
    r = {
        "runai-model-streamer": _dist_version("runai-model-streamer"),
        "runai-model-streamer-azure": _dist_version("runai-model-streamer-azure"),
        "libstreamerazure": _streamer_azure_lib(),
        ENABLED_VAR: os.environ.get(ENABLED_VAR),
        LIB_VAR: os.environ.get(LIB_VAR),
        "set_by_startup_hook": bool(hook is not None and getattr(hook, "registered", None)),
        "startup_hook_ran": hook is not None,
        "reasons": [],
        "notes": [],
    }
    reasons, notes = r["reasons"], r["notes"]
    if r["runai-model-streamer"] is None:
        reasons.append("runai-model-streamer is not installed")
    if r["runai-model-streamer-azure"] is None:
        reasons.append("runai-model-streamer-azure is not installed (it carries the streamer's Azure backend, which loads cache providers)")
    elif r["libstreamerazure"] is None:
        reasons.append("the streamer's Azure backend (libstreamer/lib/libstreamerazure.so) was not found")
    enabled = (r[ENABLED_VAR] or "").strip()
    if enabled == "0":
        reasons.append(f"{ENABLED_VAR}=0 turns the streamer's cache provider off")
    elif enabled not in ("", "1", "auto"):
        notes.append(f"{ENABLED_VAR}={enabled} is not one of 0, 1, auto")
    elif enabled == "1":
        notes.append(f"{ENABLED_VAR}=1: the streamer fails to create its Azure client if no provider loads")
    lib = r[LIB_VAR]
    if not lib:
        why = (
            f"{AUTOREGISTER_VAR}=0 turned blobcache's start-up hook off"
            if (_env(AUTOREGISTER_VAR) or "").strip().lower() in ("0", "false", "no", "off")
            else "blobcache's start-up hook did not run (python -S or -I, an editable install, or a missing blobcache-autoregister.pth)"
            if hook is None
            else "blobcache's start-up hook did not set it"
        )
        reasons.append(f"{LIB_VAR} is not set ({why}); the streamer would only look for py_tachyon_client/libStorageDirect.so")
    elif not _same_file(lib, ours):
        reasons.append(f"{LIB_VAR}={lib} names another library (a value you set wins over blobcache's hook)")
    if not lib_probe["loads"]:
        reasons.append(f"our library does not load: {lib_probe.get('error')}")
    elif lib_probe["abi_version"] != blobcache.ABI_VERSION:
        reasons.append(f"cache_abi_version() returned {lib_probe['abi_version']}, the streamer requires {blobcache.ABI_VERSION}")
    if lib_probe["missing_symbols"]:
        reasons.append("missing exports: " + ", ".join(lib_probe["missing_symbols"]))
    if not _env("AZURE_STORAGE_ACCOUNT_NAME"):
        notes.append("AZURE_STORAGE_ACCOUNT_NAME is not set: the streamer needs it for az:// paths")
    r["will_load"] = not reasons
    return r


def report():
    probe = probe_library(blobcache.library_path())
    cfg = configuration()
    # None when the library could not be asked (the streamer's reasons say why).
    cfg["problems"] = check_settings(probe["path"]) if probe["loads"] else None
    streamer = streamer_check(probe)
    if any(p.startswith("AZURE_STORAGE_ACCOUNT_NAME ") for p in cfg["problems"] or []):
        streamer["notes"] = [n for n in streamer["notes"] if not n.startswith("AZURE_STORAGE_ACCOUNT_NAME ")]
    return {
        "version": blobcache.__version__,
        "library": probe,
        "configuration": cfg,
        "streamer": streamer,
    }


def reads_will_work(rep):
    """The verdict: the streamer will load the library and no setting fails its reads."""
    return rep["streamer"]["will_load"] and rep["configuration"]["problems"] == []


def format_text(rep):
    lines = []
    lib = rep["library"]
    lines.append(f"blobcache {rep['version']}")
    lines.append(f"library: {lib['path']}")
    if lib["loads"]:
        lines.append(f"  loads with RTLD_NOW|RTLD_LOCAL: yes; cache_abi_version() = {lib['abi_version']}")
    else:
        lines.append(f"  loads: no ({lib.get('error')})")
    cfg = rep["configuration"]
    lines.append("")
    lines.append("configuration:")
    width = max(len(n) for n in cfg["settings"]) + 1
    for name, s in cfg["settings"].items():
        shown = s["value"] if s["value"] != "" else "(not set)"
        lines.append(f"  {name:<{width}} {shown}" + ("  (default)" if s["source"] == "default" else ""))
    for name in cfg["unknown_settings"]:
        lines.append(f"  {name:<{width}} unknown setting: the library ignores it (misspelt?)")
    lines.append("azure:")
    width = max(len(n) for n in cfg["azure"]) + 1
    for name, v in cfg["azure"].items():
        lines.append(f"  {name:<{width}} {v if v is not None else '(not set)'}")
    if (cfg["settings"]["BLOBCACHE_ORIGIN"]["value"] or "").strip().lower() == "azure":
        lines.append(f"  credential: {cfg['credential']}")
    st = rep["streamer"]
    lines.append("")
    lines.append("Run:ai streamer:")
    lines.append(f"  runai-model-streamer       {st['runai-model-streamer'] or 'not installed'}")
    lines.append(f"  runai-model-streamer-azure {st['runai-model-streamer-azure'] or 'not installed'}")
    lines.append(f"  {ENABLED_VAR} = {st[ENABLED_VAR] if st[ENABLED_VAR] is not None else '(not set: auto)'}")
    hook = " (set by blobcache's start-up hook)" if st["set_by_startup_hook"] else ""
    lines.append(f"  {LIB_VAR} = {st[LIB_VAR] if st[LIB_VAR] else '(not set)'}{hook}")
    for n in st["notes"]:
        lines.append(f"  note: {n}")
    if st["will_load"]:
        lines.append("  will load blobcache: yes, at its first az:// read")
    else:
        lines.append("  will load blobcache: no")
        for reason in st["reasons"]:
            lines.append(f"    - {reason}")
    problems = cfg["problems"]
    lines.append("")
    if problems is None:
        lines.append("settings: not checked (the library could not be asked; see above)")
    elif problems:
        n = len(problems)
        lines.append(f"settings: {n} problem{'s' if n > 1 else ''}; every read through blobcache fails until "
                     f"{'they are' if n > 1 else 'it is'} fixed:")
        for p in problems:
            lines.append(f"  - {p}")
    else:
        lines.append("settings: valid")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    as_json = False
    for a in args:
        if a == "--json":
            as_json = True
        elif a in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        else:
            sys.stderr.write(f"python -m blobcache: unknown argument {a}\n\n{USAGE}")
            return 2
    rep = report()
    if as_json:
        sys.stdout.write(json.dumps(rep, indent=2) + "\n")
    else:
        sys.stdout.write(format_text(rep))
    return 0 if reads_will_work(rep) else 1


if __name__ == "__main__":
    sys.exit(main())
