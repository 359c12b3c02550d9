"""Builds the blobcache wheel (configuration in pyproject.toml).

- The cdylib is the workspace's root package (Cargo.toml), built by
  setuptools-rust (`cargo rustc --lib --release`) and installed as
  `blobcache/libblobcache.so`, the name the streamer's users see.
- The `blobcache` command is crates/cli's binary, built with `cargo build --release`.
- `blobcache-autoregister.pth` goes to the root of site-packages, next to
  `_blobcache_autoregister.py`, so pip records it and `pip uninstall` removes it.
- Nothing in the wheel is a CPython extension, so it is tagged py3-none-<platform>:
  py3-none-linux_x86_64 from `pip wheel .` or `pip install .` (for the machine
  that built it). scripts/wheel builds the wheel users install: the same build,
  linked for glibc 2.17 and tagged manylinux_2_17 by auditwheel.
"""

import os
import re
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools_rust import Binding, RustBin, RustExtension
from setuptools_rust.build import build_rust

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "blobcache-autoregister.pth"


def cargo_version():
    """The version every package of the workspace shares ([workspace.package])."""
    with open(os.path.join(HERE, "Cargo.toml"), encoding="utf-8") as f:
        text = f.read()
    table = re.search(r"^\[workspace\.package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    version = table and re.search(r'^version\s*=\s*"([^"]+)"', table.group(1), re.M)
    if not version:
        raise RuntimeError("no version in the [workspace.package] table of Cargo.toml")
    return version.group(1)


class BuildPyWithPth(build_py):
    """Also puts the start-up hook's .pth file at the root of the build."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "python", PTH)
        dst = os.path.join(self.build_lib, PTH)
        os.makedirs(self.build_lib, exist_ok=True)
        shutil.copyfile(src, dst)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


class BuildRustLibName(build_rust):
    """Installs the cdylib as libblobcache.so rather than <module>.cpython-3XX-<platform>.so."""

    def get_dylib_ext_path(self, ext, target_fname):
        path = super().get_dylib_ext_path(ext, target_fname)
        return os.path.join(os.path.dirname(path), "libblobcache.so")


class BdistWheelPy3None(bdist_wheel):
    """No CPython extension inside: one wheel serves every Python 3 on the platform."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    version=cargo_version(),
    rust_extensions=[
        # Both builds share the workspace's target directory and its one
        # compilation of blobcache-core.
        RustExtension(
            "blobcache.libblobcache",
            path="Cargo.toml",
            binding=Binding.NoBinding,
            debug=False,
        ),
        RustBin("blobcache", path="crates/cli/Cargo.toml", args=["--bin", "blobcache"], debug=False),
    ],
    cmdclass={"build_py": BuildPyWithPth, "build_rust": BuildRustLibName, "bdist_wheel": BdistWheelPy3None},
)
