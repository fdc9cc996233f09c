"""The commands `pip install` puts on PATH: sparseflow, sparseflow-audit, sparseflow-benchmark and
sparseflow-convert (pyproject.toml's [project.scripts]).

Each replaces this Python process with the native `sparseflow` binary installed with the package
(_native.py), started under the command's own name: the binary runs the subcommand that the name
ends in (src/cli/argv0.cpp), as the symlinks of `cmake --install` do. Because it is an exec, not a
child process, signals, the exit status and the terminal are the binary's own.
"""

import os
import sys

from . import _native


def _exec(name):
    exe, tried = _native.executable()
    if exe is None:
        looked = ", ".join(tried) if tried else "the package, which was installed without native files"
        sys.stderr.write(
            f"{name}: SparseFlow's native command (the `sparseflow` binary) is not installed with "
            f"this Python package. Looked in: {looked}.\n"
            "---> HINT: run `pip install -e .` (or `pip install .`) at the repository root, which "
            "builds it; or run a CMake build's own copy, BUILD/src/cli/sparseflow.\n")
        return 127  # what a shell answers for a command it cannot find
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(exe, [name] + sys.argv[1:])


def sparseflow():
    return _exec("sparseflow")


def audit():
    return _exec("sparseflow-audit")


def benchmark():
    return _exec("sparseflow-benchmark")


def convert():
    return _exec("sparseflow-convert")
