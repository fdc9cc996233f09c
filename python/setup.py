"""Builds libsparseflow.so with CMake from the repository that holds this directory and bundles
it into the package, unless SPARSEFLOW_LIBRARY_DIR names a directory with one already built.

Environment:
  SPARSEFLOW_LIBRARY_DIR   bundle the libsparseflow.so* found (recursively) in this directory
  SPARSEFLOW_CMAKE_ARGS    extra arguments for the CMake configure step, e.g. -DSPARSEFLOW_CUDA=OFF
  SPARSEFLOW_BUILD_DIR     where CMake builds (default: python/build/cmake)
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs (default: the number of CPUs)
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"project\(\s*SparseFlow\s+VERSION\s+([0-9.]+)", text)
    if not match:
        raise RuntimeError(f"cannot find project(SparseFlow VERSION ...) in {ROOT / 'CMakeLists.txt'}")
    return match.group(1)


def find_built_library(directory):
    """The real file behind libsparseflow.so under directory (symlinks resolved), or None."""
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in {".git", "CMakeFiles", "_deps"})
        for name in sorted(files):
            if name == "libsparseflow.so" or name.startswith("libsparseflow.so."):
                return Path(root, name).resolve()
    return None


def build_library():
    if not (ROOT / "CMakeLists.txt").exists():
        raise RuntimeError(
            f"{ROOT} is not a SparseFlow source tree, so libsparseflow.so cannot be built; set "
            "SPARSEFLOW_LIBRARY_DIR to a directory holding a built one")
    cmake = shutil.which("cmake")
    if not cmake:
        raise RuntimeError("building libsparseflow.so needs cmake on PATH: run scripts/install-deps "
                           "first, or set SPARSEFLOW_LIBRARY_DIR to a build directory")
    build = Path(os.environ.get("SPARSEFLOW_BUILD_DIR", HERE / "build" / "cmake"))
    args = [cmake, "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            "-DSPARSEFLOW_BUILD_TESTS=OFF"] + shlex.split(os.environ.get("SPARSEFLOW_CMAKE_ARGS", ""))
    subprocess.run(args, check=True)
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    subprocess.run([cmake, "--build", str(build), "--target", "sparseflow_shared", "-j", jobs],
                   check=True)
    lib = find_built_library(build)
    if lib is None:
        raise RuntimeError(f"CMake finished but no libsparseflow.so* is under {build}")
    return lib


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        prebuilt = os.environ.get("SPARSEFLOW_LIBRARY_DIR")
        if prebuilt:
            lib = find_built_library(prebuilt)
            if lib is None:
                raise RuntimeError(f"SPARSEFLOW_LIBRARY_DIR={prebuilt} holds no libsparseflow.so*")
        else:
            lib = build_library()
        target = Path(self.build_lib, "sparseflow")
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("libsparseflow.so*"):
            old.unlink()
        # Named after its SONAME; the package loads it by path.
        shutil.copyfile(lib, target / "libsparseflow.so.0")
        print(f"sparseflow: bundled {lib}")


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform, not as pure Python."""

    def has_ext_modules(self):
        return True


setup(version=project_version(), cmdclass={"build_py": BuildPyWithLibrary},
      distclass=BinaryDistribution)
