"""Finding and loading libsparseflow.so, and the ctypes signatures of its C ABI.

The library is looked up on first use, not at import, so that `import sparseflow` always works
and a missing library is reported by the first call with what to do about it. Order:

1. ``SPARSEFLOW_LIBRARY_DIR``: a directory (typically a CMake build directory) searched
   recursively for ``libsparseflow.so*``. When it is set, nothing else is tried.
2. The files installed with the package (_native.py): the copy bundled in the package by
   ``pip install .``, or the build that ``pip install -e .`` recorded in its metadata.
3. The system's library path (``ctypes.util.find_library("sparseflow")``).
"""

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

from . import _native
from ._errors import LibraryNotFoundError, SparseFlowError, Status

# The ABI this package was written against: the library's major version must match, and its
# minor version must be at least this one (minor releases only add functions).
ABI_MAJOR = 0
ABI_MINOR = 1

_SKIP_DIRS = {".git", "CMakeFiles", "_deps", "__pycache__", "Testing"}

_lock = threading.Lock()
_lib = None


def _library_files(directory):
    """libsparseflow.so* under directory, shallowest first; real files before symlinks."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in files:
            if name == "libsparseflow.so" or name.startswith("libsparseflow.so."):
                path = Path(root) / name
                found.append((len(path.relative_to(directory).parts), path.is_symlink(), str(path)))
    return [p for _, _, p in sorted(found)]


def _candidates():
    env = os.environ.get("SPARSEFLOW_LIBRARY_DIR")
    if env:
        directory = Path(env).expanduser()
        if not directory.is_dir():
            raise LibraryNotFoundError(
                f"SPARSEFLOW_LIBRARY_DIR={env!r} is not a directory. Point it at the CMake build "
                "directory that holds libsparseflow.so (build it with `cmake --build BUILD "
                "--target sparseflow_shared`), or unset it to use the bundled library.")
        files = _library_files(directory)
        if not files:
            raise LibraryNotFoundError(
                f"SPARSEFLOW_LIBRARY_DIR={env!r} holds no libsparseflow.so*. Build it there with "
                f"`cmake --build {env} --target sparseflow_shared`, or unset the variable to use "
                "the bundled library.")
        return files, [f"SPARSEFLOW_LIBRARY_DIR={env}"]
    tried, files = [], []
    for folder, what in _native.library_dirs():
        files += _library_files(folder)
        tried.append(what)
    if not tried:
        tried.append("the package (no native files were installed with it)")
    system = ctypes.util.find_library("sparseflow")
    tried.append("the system library path")
    if system:
        files.append(system)
    return files, tried


# The session API's structs and callback (sparseflow.h, "sessions"): fields in the header's order.
class SessionOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("device", ctypes.c_char_p),
                ("threads", ctypes.c_int), ("gpu_memory", ctypes.c_char_p),
                ("gpu_cache_ratio", ctypes.c_double), ("offload_policy", ctypes.c_char_p),
                ("collect_stats", ctypes.c_int), ("context_tokens", ctypes.c_int64),
                ("predictor", ctypes.c_char_p)]


class GenerateParams(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("max_new_tokens", ctypes.c_int64),
                ("greedy", ctypes.c_int), ("temperature", ctypes.c_float),
                ("top_k", ctypes.c_int64), ("top_p", ctypes.c_float), ("seed", ctypes.c_uint64)]


TOKEN_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p)


def _declare(lib):
    """Argument and result types of every function the package calls."""
    i64, vp, ci = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
    i64p, szp = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_size_t)
    sigs = {
        "sf_status_string": ([ci], ctypes.c_char_p),
        "sf_last_error": ([], ctypes.c_char_p),
        "sf_version": ([], ci),
        "sf_version_string": ([], ctypes.c_char_p),
        "sf_prune_24": ([vp, ci, i64, i64, ci, vp, vp], ci),
        "sf_check_24": ([vp, ci, i64, i64, ctypes.POINTER(ci), i64p, i64p], ci),
        "sf_sparse24_compress": ([vp, ci, i64, i64, ctypes.POINTER(vp)], ci),
        "sf_sparse24_free": ([vp], None),
        "sf_sparse24_shape": ([vp, i64p, i64p], ci),
        "sf_sparse24_padded_shape": ([vp, i64p, i64p], ci),
        "sf_sparse24_dtype": ([vp, ctypes.POINTER(ci)], ci),
        "sf_sparse24_compressed_bytes": ([vp, szp], ci),
        "sf_sparse24_values": ([vp, ctypes.POINTER(vp), szp], ci),
        "sf_sparse24_meta": ([vp, ctypes.POINTER(vp), szp], ci),
        "sf_sparse24_decompress": ([vp, vp], ci),
        "sf_sparse24_gemm_cpu": ([vp, vp, ci, i64, vp, ci, vp, ci, ci, vp, ci], ci),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    # The GPU linear layer (sf_cuda_*) came later in 0.1: a library without it still serves
    # everything else, and sparseflow.torch says what is missing when a GPU layer is asked for.
    vpp = ctypes.POINTER(vp)
    cuda_sigs = {
        "sf_cuda_check": ([], ci),
        "sf_cuda_linear_create": ([vp, ci, vp, vpp], ci),
        "sf_cuda_linear_create_dense": ([vp, ci, i64, i64, ci, ci, vp, ci, vp, vpp], ci),
        "sf_cuda_linear_free": ([vp], None),
        "sf_cuda_linear_info": ([vp, i64p, i64p, ctypes.POINTER(ci), ctypes.POINTER(ci), szp], ci),
        "sf_cuda_linear_forward": ([vp, vp, ci, i64, vp, ci, vp, ci, ci, vp, ci, vp], ci),
        "sf_cuda_linear_decompress": ([vp, vp, vp], ci),
        "sf_cuda_release_workspaces": ([], None),
    }
    lib._sf_has_cuda_api = True
    for name, (args, res) in cuda_sigs.items():
        fn = getattr(lib, name, None)
        if fn is None:
            lib._sf_has_cuda_api = False
            continue
        fn.argtypes = args
        fn.restype = res
    # Sessions (sf_session_*) came later in 0.1 too: sparseflow.Model says what is missing.
    i32p, cpp, so, gp = (ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_char_p),
                         ctypes.POINTER(SessionOptions), ctypes.POINTER(GenerateParams))
    cp, sz = ctypes.c_char_p, ctypes.c_size_t
    session_sigs = {
        "sf_backend_check": ([cp], ci),
        "sf_session_options_init": ([so], ci),
        "sf_session_open": ([cp, so, vpp], ci),
        "sf_session_free": ([vp], None),
        "sf_session_info_json": ([vp, cpp], ci),
        "sf_generate_params_init": ([gp], ci),
        "sf_session_generate": ([vp, cp, gp, TOKEN_CALLBACK, vp, cpp], ci),
        "sf_session_generate_ids": ([vp, i32p, sz, gp, TOKEN_CALLBACK, vp, cpp], ci),
        "sf_session_perplexity": ([vp, cp, i64, ctypes.POINTER(ctypes.c_double)], ci),
        "sf_session_perplexity_ids": ([vp, i32p, sz, i64, ctypes.POINTER(ctypes.c_double)], ci),
        "sf_session_tokenize": ([vp, cp, ci, i32p, sz, szp], ci),
        "sf_session_detokenize": ([vp, i32p, sz, cpp], ci),
        "sf_session_offload_stats_json": ([vp, cpp], ci),
        "sf_synth_builtin": ([cp, ci], ci),
    }
    lib._sf_has_session_api = True
    for name, (args, res) in session_sigs.items():
        fn = getattr(lib, name, None)
        if fn is None:
            lib._sf_has_session_api = False
            continue
        fn.argtypes = args
        fn.restype = res


def _load():
    files, tried = _candidates()
    errors = []
    for path in files:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        try:
            _declare(lib)
        except AttributeError as e:
            errors.append(f"{path}: not a SparseFlow library of this version ({e})")
            continue
        version = lib.sf_version()
        major, minor = version // 10000, version // 100 % 100
        if major != ABI_MAJOR or minor < ABI_MINOR:
            errors.append(f"{path}: version {lib.sf_version_string().decode()}, but this package "
                          f"needs {ABI_MAJOR}.x with x >= {ABI_MINOR}")
            continue
        lib._sf_path = path  # where it came from, for diagnostics
        return lib
    details = "".join(f"\n  {e}" for e in errors)
    raise LibraryNotFoundError(
        "SparseFlow's native library (libsparseflow.so) was not found or could not be loaded. "
        f"Looked in: {', '.join(tried)}.{details}\n"
        "---> HINT: install the package with `pip install -e .` at the repository root (it builds "
        "the library), or build it with `cmake -S . -B build && cmake --build build --target "
        "sparseflow_shared` and set SPARSEFLOW_LIBRARY_DIR=build.")


def lib():
    """The loaded library; raises LibraryNotFoundError (a SparseFlowError) when there is none."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load()
    return _lib


def library_path():
    """The file the library was loaded from."""
    return lib()._sf_path


def has_cuda_api():
    """Whether the loaded library has the sf_cuda_* functions (it may still lack a GPU)."""
    return lib()._sf_has_cuda_api


def has_session_api():
    """Whether the loaded library has the sf_session_* functions."""
    return lib()._sf_has_session_api


def check(status):
    """Raise SparseFlowError(status, sf_last_error()) unless status is SF_OK."""
    if status != 0:
        message = lib().sf_last_error().decode("utf-8", "replace")
        raise SparseFlowError(status, message)
