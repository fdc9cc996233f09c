"""SparseFlow: 2:4 structured sparsity and sparse LLM inference, over libsparseflow's C ABI.

    import numpy as np, sparseflow
    w = np.random.randn(256, 512).astype(np.float16)   # [N outputs, K inputs]
    w24 = sparseflow.prune(w)                           # 2 of every 4 along K kept
    c = sparseflow.compress(w24)                        # values + tensor-core metadata
    y = c.matmul(np.ones((8, 512), np.float16))         # [8, 256] on the CPU

The native library is found on first use (SPARSEFLOW_LIBRARY_DIR, the copy bundled by
`pip install ./python`, or the system); importing never fails for lack of it. PyTorch is
optional and never imported here: the torch layer lives in sparseflow.torch.
"""

from ._errors import LibraryNotFoundError, SparseFlowError, Status
from ._lib import library_path
from .sparse24 import Compressed24, compress, find_violation, is_24, prune

__all__ = [
    "Compressed24", "LibraryNotFoundError", "SparseFlowError", "Status", "compress",
    "find_violation", "is_24", "library_path", "native_version", "prune",
]


def native_version():
    """The loaded library's version string (sf_version_string)."""
    from . import _lib
    return _lib.lib().sf_version_string().decode()


def __getattr__(name):
    # __version__ is the native library's, read when first asked for (loading the library).
    if name == "__version__":
        return native_version()
    raise AttributeError(f"module 'sparseflow' has no attribute {name!r}")
