"""`pip install .` and `pip install -e .`: builds SparseFlow's native library (libsparseflow.so) and
the `sparseflow` command with CMake, and installs the Python package from python/sparseflow.

CMake builds in a build directory (default build-python/ here, git-ignored) and installs into its
python-prefix/ folder in the layout of `cmake --install` (lib/, bin/, share/sparseflow/). Then:
  - a wheel (`pip install .`) bundles those files in the package as sparseflow/_native/;
  - an editable install (`pip install -e .`) leaves them there and records the folder in the
    package's metadata (sparseflow-native.json in its .dist-info), which python/sparseflow/_native.py
    reads, so `import sparseflow` and the console scripts find them with no environment variable.

pip shows a build backend's output only with -v, and the CUDA build takes minutes, so progress
lines go to the controlling terminal (/dev/tty) when there is one; the full log is always written to
BUILD/pip-build.log.

Environment:
  SPARSEFLOW_PIP_BUILD_DIR    the CMake build directory. An existing, configured one (the build/ of
                              scripts/test) is reused as it is, its options kept: only the library
                              and the command are brought up to date there.
  SPARSEFLOW_CMAKE_ARGS       extra arguments for the configure step, e.g. -DSPARSEFLOW_CUDA=OFF
  SPARSEFLOW_PROGRESS         0: no progress lines on the terminal
  CMAKE_BUILD_PARALLEL_LEVEL  build jobs (default: the number of CPUs)
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from setuptools import Command, Distribution, setup
from setuptools.command.build import build
from setuptools.command.egg_info import egg_info

ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = ROOT / "python" / "sparseflow"
# Read by python/sparseflow/_native.py: keep the name and the keys in step.
NATIVE_RECORD = "sparseflow-native.json"
TARGETS = ["sparseflow_shared", "sparseflow_cli"]


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"project\(\s*SparseFlow\s+VERSION\s+([0-9.]+)", text)
    if not match:
        raise RuntimeError(f"cannot find project(SparseFlow VERSION ...) in {ROOT / 'CMakeLists.txt'}")
    return match.group(1)


def build_dir():
    return Path(os.environ.get("SPARSEFLOW_PIP_BUILD_DIR") or ROOT / "build-python").resolve()


def native_prefix():
    return build_dir() / "python-prefix"


class Progress:
    """Short lines on the controlling terminal while CMake runs, at most one per 5% or 20 s; off
    without a terminal (CI, pipes) or with SPARSEFLOW_PROGRESS=0. The first line starts on a new
    line, after pip's "Building ... for sparseflow ..."; the others start with a carriage return, so
    that they overwrite the spinner character pip writes at the start of the line."""

    def __init__(self):
        self.tty = None
        if os.environ.get("SPARSEFLOW_PROGRESS", "1") != "0":
            try:
                self.tty = open("/dev/tty", "w")
            except OSError:
                pass  # no controlling terminal
        self.start = time.monotonic()
        self.last_time = 0.0
        self.last_percent = -100
        self.first = True

    def say(self, text):
        if self.tty:
            try:
                self.tty.write(("\n" if self.first else "\r") + f"sparseflow: {text}\n")
                self.first = False
                self.tty.flush()
            except OSError:
                self.tty = None

    def elapsed(self):
        s = int(time.monotonic() - self.start)
        return f"{s // 60}:{s % 60:02d}"

    def build_line(self, line):
        # Makefiles print "[ 45%] Building CXX object ...", Ninja "[12/80] Building CXX object ...".
        m = re.match(r"\[\s*(\d+)%\]\s*(.*)", line)
        if m:
            percent = int(m.group(1))
        else:
            m = re.match(r"\[(\d+)/(\d+)\]\s*(.*)", line)
            if not m:
                return
            percent = 100 * int(m.group(1)) // max(1, int(m.group(2)))
        now = time.monotonic()
        if percent - self.last_percent >= 5 or now - self.last_time >= 20:
            what = m.group(m.lastindex)
            what = re.sub(r"^Building \S+ object ", "", what)[:70]
            self.say(f"[{percent:3d}%] {self.elapsed()}  {what}")
            self.last_percent, self.last_time = percent, now


def run_logged(args, log, progress, on_line=None):
    """Run args with their output appended to log and echoed to stdout (pip -v shows it)."""
    log.write(f"$ {shlex.join(str(a) for a in args)}\n")
    log.flush()
    tail = deque(maxlen=40)
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    for line in proc.stdout:
        log.write(line)
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line)
        if on_line:
            on_line(line)
    if proc.wait() != 0:
        progress.say(f"FAILED: {args[1]} {args[2]} ... (exit {proc.returncode}); log: {log.name}")
        raise RuntimeError(
            f"`{shlex.join(str(a) for a in args)}` failed (exit {proc.returncode}). Its last lines:\n"
            + "".join(tail) + f"The full log is {log.name}.")


def build_native():
    """Configure, build the library and the command, and `cmake --install` them into
    native_prefix(); returns that folder."""
    cmake = shutil.which("cmake")
    if not cmake:
        raise RuntimeError("building SparseFlow needs cmake (3.25+) on PATH: run scripts/install-deps "
                           "first")
    build, prefix = build_dir(), native_prefix()
    build.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    extra = shlex.split(os.environ.get("SPARSEFLOW_CMAKE_ARGS", ""))
    configure = [cmake, "-S", ROOT, "-B", build]
    fresh = not (build / "CMakeCache.txt").exists()
    if fresh:
        # Only on a new tree: one the user configured (tests on, Debug, ...) keeps its options.
        configure += ["-DCMAKE_BUILD_TYPE=Release", "-DSPARSEFLOW_BUILD_TESTS=OFF"]
    # A fixed lib/ so that _native.py knows where to look; the link path in the installed RPATH so
    # that the installed files still find cuBLAS / cuSPARSELt outside the system's library path.
    configure += ["-DCMAKE_INSTALL_LIBDIR=lib", "-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON"] + extra
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    with open(build / "pip-build.log", "w") as log:
        progress.say(f"building the native library and the `sparseflow` command with CMake in "
                     f"{build} ({jobs} jobs{', reusing its configuration' if not fresh else ''}); "
                     f"the full log is {log.name}")
        cuda = []

        def configure_line(line):
            if "SparseFlow CUDA backend:" in line:
                state = line.split("SparseFlow CUDA backend:", 1)[1].strip()
                cuda.append(state if state.startswith("ON") else "OFF")

        run_logged(configure, log, progress, configure_line)
        if cuda:
            note = ("; nvcc compiles every architecture, which takes several minutes on a few "
                    "cores (-DSPARSEFLOW_CUDA=OFF in SPARSEFLOW_CMAKE_ARGS skips it)"
                    if cuda[0].startswith("ON") else "")
            progress.say(f"configured ({progress.elapsed()}); CUDA backend: {cuda[0]}{note}")
        run_logged([cmake, "--build", build, "--target", *TARGETS, "-j", jobs], log, progress,
                   progress.build_line)
        # A clean prefix each time: a file left by an older build must not be found instead.
        shutil.rmtree(prefix, ignore_errors=True)
        run_logged([cmake, "--install", build, "--prefix", prefix], log, progress)
        progress.say(f"built and installed into {prefix} in {progress.elapsed()}")
    return prefix


def find_library(folder):
    """The real file behind libsparseflow.so.N in folder, or None."""
    for path in sorted(Path(folder).glob("libsparseflow.so.*")):
        if not path.is_symlink():
            return path
    return None


class BuildNative(Command):
    """The native build, as a step of `build` of its own rather than inside build_py: an editable
    install runs a customised build_py "safely", turning any exception into a warning, so a failed
    CMake build would still report the install as successful."""

    description = "build libsparseflow.so and the sparseflow command with CMake"
    user_options = []

    def initialize_options(self):
        self.build_lib = None
        self.editable_mode = False  # set by setuptools' editable_wheel

    def finalize_options(self):
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def run(self):
        prefix = build_native()
        if self.editable_mode:
            return  # the package runs from python/ and finds prefix through the metadata record
        lib, exe = find_library(prefix / "lib"), prefix / "bin" / "sparseflow"
        if lib is None or not exe.is_file():
            raise RuntimeError(f"`cmake --install` left no lib/libsparseflow.so.* or bin/sparseflow "
                               f"in {prefix}")
        target = Path(self.build_lib, "sparseflow", "_native")
        shutil.rmtree(target, ignore_errors=True)
        (target / "lib").mkdir(parents=True)
        (target / "bin").mkdir()
        # Named after its SONAME; the package loads it by path.
        shutil.copyfile(lib, target / "lib" / "libsparseflow.so.0")
        shutil.copy2(exe, target / "bin" / "sparseflow")  # keeps the executable bit
        # The command reads the shipped measurements from ../share/sparseflow beside itself.
        shutil.copytree(prefix / "share" / "sparseflow", target / "share" / "sparseflow")
        print(f"sparseflow: bundled {lib} and {exe}")

    # editable_wheel asks every build step what it made; the wheel's files are found by build_py.
    def get_outputs(self):
        return []

    def get_output_mapping(self):
        return {}


class BuildWithNative(build):
    sub_commands = [("build_native", None)] + build.sub_commands


class EggInfoWithNativeRecord(egg_info):
    """Adds sparseflow-native.json to the metadata; setuptools copies every file of the .egg-info
    into the wheel's .dist-info, which an editable install leaves in site-packages."""

    def run(self):
        super().run()
        record = {"package_dir": str(PACKAGE_DIR), "prefix": str(native_prefix())}
        self.write_file("native build record", os.path.join(self.egg_info, NATIVE_RECORD),
                        json.dumps(record, indent=1) + "\n")


class BinaryDistribution(Distribution):
    """The wheel holds native code: tag it for this platform, not as pure Python."""

    def has_ext_modules(self):
        return True


# setuptools' own folders would otherwise be build/ (the CMake tree of scripts/demo) and
# python/sparseflow.egg-info: keep them in the build directory, out of the source tree.
setuptools_dir = build_dir() / "setuptools"
setuptools_dir.mkdir(parents=True, exist_ok=True)
setup(version=project_version(),
      cmdclass={"build": BuildWithNative, "build_native": BuildNative,
                "egg_info": EggInfoWithNativeRecord},
      distclass=BinaryDistribution,
      options={"build": {"build_base": str(setuptools_dir)},
               "egg_info": {"egg_base": str(setuptools_dir)}})
