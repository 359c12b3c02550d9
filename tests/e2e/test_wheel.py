"""The wheel: what it contains, its manylinux tag, installing it where there is
no Rust, what installing and uninstalling it does, the start-up hook, and
`python -m blobcache`."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import blobcache
from conftest import NOTES, REPO, clean_env, record_time

LIB_VAR = "RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"
HOOK = "_blobcache_autoregister"
# scripts/wheel's policy: glibc 2.17 or later (manylinux2014 is its old name).
PLATFORM = "manylinux_2_17_x86_64"


def cargo_version():
    """The version every package of the workspace shares ([workspace.package])."""
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S).group(1)


@pytest.fixture(scope="session")
def wheel():
    w = os.environ.get("BLOBCACHE_E2E_WHEEL")
    if not w:
        pytest.skip("BLOBCACHE_E2E_WHEEL is not set (scripts/test-e2e.sh sets it)")
    return Path(w)


def tree(root):
    """Every file and directory under root, as relative paths."""
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def python_in_clean_env(code, **env):
    return subprocess.run([sys.executable, "-c", code], env=clean_env(**env), capture_output=True, text=True,
                          timeout=60)


# -- the wheel file -----------------------------------------------------------


def test_wheel_holds_only_our_files(wheel):
    version = cargo_version()
    # (auditwheel writes directory entries too)
    names = {n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")}
    dist = f"blobcache-{version}"
    assert names == {
        "_blobcache_autoregister.py",
        "blobcache-autoregister.pth",
        "blobcache/__init__.py",
        "blobcache/__main__.py",
        "blobcache/_settings.py",
        "blobcache/libblobcache.so",
        f"{dist}.data/scripts/blobcache",
        f"{dist}.dist-info/METADATA",
        f"{dist}.dist-info/WHEEL",
        f"{dist}.dist-info/top_level.txt",
        f"{dist}.dist-info/RECORD",
    }, sorted(names)
    assert wheel.name == f"{dist}-py3-none-manylinux2014_x86_64.{PLATFORM}.whl"
    pth = zipfile.ZipFile(wheel).read("blobcache-autoregister.pth").decode()
    assert pth == f"import {HOOK}\n"


def test_wheel_is_tagged_manylinux_and_auditwheel_accepts_it(wheel):
    meta = zipfile.ZipFile(wheel).read(f"blobcache-{cargo_version()}.dist-info/WHEEL").decode()
    tags = sorted(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Tag:"))
    assert tags == ["py3-none-manylinux2014_x86_64", f"py3-none-{PLATFORM}"], meta
    auditwheel = Path(sys.executable).parent / "auditwheel"
    p = subprocess.run([str(auditwheel), "show", str(wheel)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    text = " ".join(p.stdout.split())
    assert f'is consistent with the following platform tag: "{PLATFORM}"' in text, p.stdout
    # Only glibc's and libgcc's versioned symbols, none newer than 2.17.
    libs = re.findall(r"(\S+\.so\.\d+) with versions", text)
    assert libs and set(libs) <= {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
                                  "libgcc_s.so.1", "ld-linux-x86-64.so.2"}, p.stdout
    glibc = [tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+(?:\.\d+)?)", text)]
    assert glibc and max(glibc) <= (2, 17), p.stdout


# -- installing it where there is no Rust ----------------------------------------


def test_a_clean_venv_without_rust_installs_the_wheel_and_runs_it(wheel, tmp_path):
    """What a user does in an image: python -m venv, pip install the wheel (no
    index, no Rust anywhere), then import it, `python -m blobcache` and the
    command."""
    t0 = time.monotonic()
    # PATH without any directory that holds cargo, rustc or rustup, and a HOME
    # without ~/.cargo or ~/.rustup.
    path = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not any(os.path.exists(os.path.join(d, t)) for t in ("cargo", "rustc", "rustup"))]
    venv = tmp_path / "venv"
    path = os.pathsep.join([str(venv / "bin"), *path])
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "cache").mkdir(mode=0o700)
    env = {k: v for k, v in clean_env().items()
           if not k.startswith(("CARGO", "RUSTUP", "RUSTC", "RUSTFLAGS", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=path, HOME=str(home), PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               BLOBCACHE_DIR=str(tmp_path / "cache"))
    for tool in ("cargo", "rustc", "rustup"):
        assert shutil.which(tool, path=path) is None, f"{tool} is reachable on {path}"
    p = subprocess.run(["sh", "-c", "command -v cargo || command -v rustc || command -v rustup"], env=env,
                       capture_output=True, text=True)
    assert p.returncode != 0, f"Rust is reachable: {p.stdout}"

    # A venv of the base Python, without system site packages. pip comes from
    # the test venv (`pip --python` runs it with the new venv's interpreter):
    # ensurepip would spend 8 s of CPU copying pip in, which tests nothing of ours.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env, check=True, timeout=120)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    py = str(venv / "bin" / "python")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-index", "-q", str(wheel)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    lib = os.path.join(site, "blobcache", "libblobcache.so")

    # import blobcache finds the library in that venv.
    p = subprocess.run([py, "-c", "import blobcache, os; p = blobcache.library_path(); print(p, os.path.isfile(p))"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == [lib, "True"], p.stdout + p.stderr

    # python -m blobcache --json: the library loads (the streamer is not
    # installed there, so the verdict on the streamer is no).
    p = subprocess.run([py, "-m", "blobcache", "--json"], env=env, capture_output=True, text=True, timeout=60)
    rep = json.loads(p.stdout)
    assert rep["version"] == cargo_version(), rep
    assert rep["library"]["path"] == lib and rep["library"]["loads"] is True, rep["library"]
    assert rep["library"]["abi_version"] == 1, rep["library"]

    # The command runs, from the venv's bin.
    blobcache_cmd = shutil.which("blobcache", path=path)
    assert blobcache_cmd == str(venv / "bin" / "blobcache"), blobcache_cmd
    p = subprocess.run(["blobcache", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and cargo_version() in p.stdout, p.stdout + p.stderr
    p = subprocess.run(["blobcache", "stats", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    json.loads(p.stdout)

    seconds = time.monotonic() - t0
    NOTES.append(f"clean venv without Rust: venv, pip install --no-index of the wheel and the checks in {seconds:.1f} s")
    record_time("-", "clean venv: create, pip install the wheel, check it", seconds, 0)
    # Seconds, not minutes: nothing is compiled.
    assert seconds < 90, seconds


def test_installing_and_uninstalling_leaves_the_environment_as_it_was(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "--disable-pip-version-check"]
    site = os.path.relpath(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                                          capture_output=True, text=True, check=True).stdout.strip(), venv)
    # Something else lives there, as in any real environment (pip removes a
    # directory it leaves empty).
    (venv / site / "other_package.py").write_text("")
    before = tree(venv)
    subprocess.run(pip + ["install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    installed = tree(venv) - before
    for f in ("blobcache/libblobcache.so", "blobcache-autoregister.pth", f"{HOOK}.py"):
        assert os.path.join(site, f) in installed, sorted(installed)
    assert "bin/blobcache" in installed
    # The hook works in that environment too, and the command runs.
    p = subprocess.run([str(py), "-c", f"import os; print(os.environ.get('{LIB_VAR}'))"], env=clean_env(),
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip() == str(venv / site / "blobcache" / "libblobcache.so")
    p = subprocess.run([str(venv / "bin" / "blobcache"), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "Usage: blobcache" in p.stdout and "warm" in p.stdout, p.stdout + p.stderr
    # Byte-compiled files written after installation are pip's to remove too.
    subprocess.run([str(py), "-c", "import blobcache.__main__"], env=clean_env(), check=True)
    subprocess.run(pip + ["uninstall", "-y", "-q", "blobcache"], check=True)
    after = tree(venv)
    assert after == before, f"left behind: {sorted(after - before)}; removed: {sorted(before - after)}"


# -- the start-up hook ----------------------------------------------------------


def test_hook_points_the_streamer_at_our_library_when_the_variable_is_unset():
    p = python_in_clean_env(f"import os; print(os.environ['{LIB_VAR}'])")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == blobcache.library_path()


def test_hook_replaces_an_empty_value():
    p = python_in_clean_env(f"import os; print(os.environ['{LIB_VAR}'])", **{LIB_VAR: ""})
    assert p.stdout.strip() == blobcache.library_path()


def test_hook_keeps_a_value_the_user_set():
    p = python_in_clean_env(f"import os; print(os.environ['{LIB_VAR}'])", **{LIB_VAR: "/opt/other/libcache.so"})
    assert p.stdout.strip() == "/opt/other/libcache.so"


@pytest.mark.parametrize("off", ["0", "false", "no", "off", " 0 "])
def test_blobcache_autoregister_0_turns_the_hook_off(off):
    p = python_in_clean_env(f"import os; print(os.environ.get('{LIB_VAR}'))", BLOBCACHE_AUTOREGISTER=off)
    assert p.stdout.strip() == "None"


def test_hook_leaves_the_enabled_switch_alone():
    code = f"import os; print(os.environ.get('RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED'), os.environ['{LIB_VAR}'])"
    p = python_in_clean_env(code, RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED="0")
    assert p.stdout.split() == ["0", blobcache.library_path()]


def test_hook_never_raises_and_only_sets_a_library_that_exists(tmp_path):
    hook = Path(sys.modules[HOOK].__file__)
    # A copy of the hook with no blobcache/libblobcache.so beside it.
    lonely = tmp_path / f"{HOOK}.py"
    lonely.write_text(hook.read_text())
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import {HOOK} as h, os; print(h.registered, os.environ.get('{LIB_VAR}'))"
    # Without site (-S) the installed hook does not run; the copy finds no
    # library beside it and must not set the variable.
    p = subprocess.run([sys.executable, "-S", "-c", code], env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ["None", "None"], p.stdout + p.stderr
    # An environment that fails on every access: the hook swallows it.
    code = (
        "import os\n"
        "class Broken(dict):\n"
        "    def get(self, *a): raise RuntimeError('broken environment')\n"
        "    def __setitem__(self, *a): raise RuntimeError('broken environment')\n"
        "os.environ = Broken()\n"
        f"exec(compile(open({str(hook)!r}).read(), {str(hook)!r}, 'exec'), {{'__file__': {str(hook)!r}}})\n"
        "print('survived')\n"
    )
    p = subprocess.run([sys.executable, "-S", "-c", code], env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "survived", p.stderr
    # No __file__ at all.
    p = subprocess.run([sys.executable, "-S", "-c", f"exec(open({str(hook)!r}).read(), {{}}); print('survived')"],
                       env=clean_env(), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip() == "survived", p.stderr


def test_hook_imports_nothing_and_costs_well_under_a_millisecond():
    """`python -X importtime -c pass`: the hook's own line, and no import nested under it."""
    selfs = []
    for _ in range(15):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=clean_env(), capture_output=True,
                           text=True, check=True)
        lines = p.stderr.splitlines()
        idx = [i for i, ln in enumerate(lines) if ln.rstrip().endswith(f"| {HOOK}") or ln.rstrip().endswith(f" {HOOK}")]
        assert idx, "the hook did not run at start-up:\n" + p.stderr[-2000:]
        i = idx[0]
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s+)\S", lines[i])
        self_us, cumulative_us, indent = int(m.group(1)), int(m.group(2)), len(m.group(3))
        prev = re.match(r"import time:\s+\d+ \|\s+\d+ \|(\s+)\S", lines[i - 1]) if i else None
        assert not (prev and len(prev.group(1)) > indent), f"the hook imported something: {lines[i - 1]}"
        assert self_us == cumulative_us
        selfs.append(self_us)
    selfs.sort()
    median = selfs[len(selfs) // 2]
    NOTES.append(f"start-up hook, python -X importtime -c pass: median {median} us, min {selfs[0]} us over 15 runs")
    record_time("-", "start-up hook import (-X importtime, median of 15)", median / 1e6, 0)
    # Generous: a loaded CI machine. Typically 0.2-0.6 ms including the import machinery.
    assert median < 3000, selfs


# -- python -m blobcache --------------------------------------------------------


def doctor(*args, **env):
    p = subprocess.run([sys.executable, "-m", "blobcache", *args], env=clean_env(**env), capture_output=True,
                       text=True, timeout=60)
    return p


def test_python_m_blobcache_reports_path_version_configuration_and_a_yes():
    p = doctor(AZURE_STORAGE_ACCOUNT_NAME="acct", AZURE_STORAGE_ACCOUNT_KEY="c2VjcmV0LWtleS12YWx1ZQ==",
               BLOBCACHE_BLOCK_SIZE="8M", BLOBCACHE_TYPO="1")
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert blobcache.library_path() in out
    assert f"blobcache {cargo_version()}" in out
    assert "cache_abi_version() = 1" in out
    assert re.search(r"BLOBCACHE_BLOCK_SIZE\s+8M\n", out)
    assert re.search(r"BLOBCACHE_MAX_SIZE\s+50%\s+\(default\)", out)
    assert re.search(r"BLOBCACHE_TYPO\s+unknown setting", out)
    assert re.search(r"AZURE_STORAGE_ACCOUNT_KEY\s+present", out)
    assert re.search(r"AZURE_STORAGE_SAS_TOKEN\s+absent", out)
    assert "c2VjcmV0" not in out, "a credential was printed"
    assert "credential: shared key (AZURE_STORAGE_ACCOUNT_KEY)" in out
    assert "runai-model-streamer       0.17.0" in out
    assert "will load blobcache: yes" in out


def test_python_m_blobcache_json_never_holds_a_credential():
    secret = "sv=2024&sig=SECRETSIGNATURE"
    p = doctor("--json", AZURE_STORAGE_SAS_TOKEN=secret, AZURE_CLIENT_SECRET="hunter2secret")
    rep = json.loads(p.stdout)
    assert "SECRETSIGNATURE" not in p.stdout and "hunter2secret" not in p.stdout
    assert rep["configuration"]["azure"]["AZURE_STORAGE_SAS_TOKEN"] == "present"
    assert rep["library"]["abi_version"] == 1
    assert rep["streamer"]["will_load"] is True
    assert rep["streamer"]["set_by_startup_hook"] is True


def test_python_m_blobcache_json_is_the_typed_report_blobcache_doctor_reads():
    p = doctor("--json", AZURE_STORAGE_ACCOUNT_NAME="acct")
    assert p.returncode == 0, p.stdout + p.stderr
    rep = json.loads(p.stdout)
    assert rep["version"] == cargo_version()
    lib = rep["library"]
    assert lib["path"] == blobcache.library_path() and lib["loads"] is True and lib["abi_version"] == 1, lib
    st = rep["streamer"]
    assert st["runai-model-streamer"] == "0.17.0" and isinstance(st["runai-model-streamer-azure"], str), st
    assert st["RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED"] is None, st
    assert st["RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_LIB"] == blobcache.library_path(), st
    assert st["set_by_startup_hook"] is True and st["will_load"] is True, st
    assert st["reasons"] == [] and all(isinstance(n, str) for n in st["notes"]), st
    # Will not load: the same exit status as the text form, the reasons as a list.
    p = doctor("--json", RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED="0")
    assert p.returncode == 1, p.stdout + p.stderr
    st = json.loads(p.stdout)["streamer"]
    assert st["will_load"] is False and st["RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED"] == "0", st
    assert any("ENABLED=0 turns the streamer's cache provider off" in r for r in st["reasons"]), st


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"RUNAI_STREAMER_EXPERIMENTAL_AZURE_CACHE_ENABLED": "0"}, "ENABLED=0 turns the streamer's cache provider off"),
        ({LIB_VAR: "/opt/other/libcache.so"}, "names another library"),
        ({"BLOBCACHE_AUTOREGISTER": "0"}, "BLOBCACHE_AUTOREGISTER=0 turned blobcache's start-up hook off"),
    ],
)
def test_python_m_blobcache_says_no_and_why(env, reason):
    p = doctor(AZURE_STORAGE_ACCOUNT_NAME="acct", **env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "will load blobcache: no" in p.stdout
    assert reason in p.stdout, p.stdout


def test_python_m_blobcache_takes_its_settings_and_secret_variables_from_the_generated_tables():
    """_settings.py is generated from the Rust tables (a crates/core test checks it)."""
    from blobcache import _settings
    from blobcache.__main__ import AZURE_SECRET, AZURE_SHOWN, KEY_VARS, SAS_VARS, SETTINGS

    assert SETTINGS is _settings.SETTINGS
    # Every secret is shown only as present or absent, never by value.
    assert set(_settings.SECRET_VARS) <= set(AZURE_SECRET)
    assert not set(AZURE_SHOWN) & set(_settings.SECRET_VARS)
    assert set(KEY_VARS + SAS_VARS) <= set(_settings.SECRET_VARS)
    rep = json.loads(doctor("--json").stdout)
    assert list(rep["configuration"]["settings"]) == [name for name, _ in _settings.SETTINGS]
    for name, default in _settings.SETTINGS:
        if default is not None:
            assert rep["configuration"]["settings"][name] == {"value": default, "source": "default"}, name
