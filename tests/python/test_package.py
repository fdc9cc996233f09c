"""The package around the functions: library lookup, version, errors, no torch at import."""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import sparseflow as sf

REPO = Path(__file__).resolve().parents[2]


def run_python(code, **env_changes):
    """Run code in a fresh interpreter that imports the same sparseflow as these tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(sf.__file__).parents[1]),
                                                    env.get("PYTHONPATH", "")] if p)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_version_comes_from_the_library():
    cmake = (REPO / "CMakeLists.txt").read_text()
    project_version = re.search(r"project\(\s*SparseFlow\s+VERSION\s+([0-9.]+)", cmake).group(1)
    assert sf.__version__ == sf.native_version() == project_version


def test_library_comes_from_SPARSEFLOW_LIBRARY_DIR():
    directory = os.environ.get("SPARSEFLOW_LIBRARY_DIR")
    if not directory:
        pytest.skip("SPARSEFLOW_LIBRARY_DIR is not set (testing an installed package)")
    path = Path(sf.library_path()).resolve()
    assert Path(directory).resolve() in path.parents
    assert path.name.startswith("libsparseflow.so")


def test_import_never_imports_torch():
    r = run_python("import sys, sparseflow; sparseflow.is_24(__import__('numpy').zeros((1, 4), 'float32'))\n"
                   "print('torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_missing_library_fails_on_first_call_with_a_hint(tmp_path):
    code = ("import numpy, sparseflow\n"
            "try:\n"
            "    sparseflow.prune(numpy.ones((4, 8), numpy.float32))\n"
            "except sparseflow.LibraryNotFoundError as e:\n"
            "    assert isinstance(e, sparseflow.SparseFlowError) and isinstance(e, OSError)\n"
            "    assert e.status == sparseflow.Status.NOT_FOUND\n"
            "    print(e.message)\n")
    r = run_python(code, SPARSEFLOW_LIBRARY_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert str(tmp_path) in r.stdout and "holds no libsparseflow.so" in r.stdout
    assert "cmake --build" in r.stdout

    r = run_python(code, SPARSEFLOW_LIBRARY_DIR=str(tmp_path / "nowhere"))
    assert r.returncode == 0, r.stderr
    assert "is not a directory" in r.stdout


def test_a_file_that_is_not_the_library_is_reported(tmp_path):
    (tmp_path / "libsparseflow.so").write_bytes(b"not an ELF file")
    r = run_python("import sparseflow\n"
                   "try:\n"
                   "    sparseflow.native_version()\n"
                   "except sparseflow.LibraryNotFoundError as e:\n"
                   "    print(e.message)\n",
                   SPARSEFLOW_LIBRARY_DIR=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "libsparseflow.so" in r.stdout and "HINT" in r.stdout


def test_error_str_and_status():
    e = sf.SparseFlowError(2, "K is 6")
    assert e.status is sf.Status.UNSUPPORTED_SHAPE and e.message == "K is 6"
    assert str(e) == "K is 6 [UNSUPPORTED_SHAPE]"
    assert sf.SparseFlowError(77, "x").status == 77


def test_errors_are_per_thread():
    """The C library keeps the last error per thread: concurrent failures keep their messages."""
    barrier = threading.Barrier(8)
    results = {}

    def work(i):
        bad = np.ones((2, 4 * i + 2), np.float32) if i % 2 else np.ones((2, 8), np.float64)
        barrier.wait()
        for _ in range(50):
            try:
                sf.prune(bad)
            except sf.SparseFlowError as e:
                results.setdefault(i, set()).add(e.message)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert len(results[i]) == 1, results[i]
        (message,) = results[i]
        if i % 2:
            assert f"[2, {4 * i + 2}]" in message
        else:
            assert "F64" in message
