"""SparseFlow: 2:4 structured sparsity and sparse LLM inference, over libsparseflow's C ABI.

    import numpy as np, sparseflow
    w = np.random.randn(256, 512).astype(np.float16)   # [N outputs, K inputs]
    w24 = sparseflow.prune(w)                           # 2 of every 4 along K kept
    c = sparseflow.compress(w24)                        # values + tensor-core metadata
    y = c.matmul(np.ones((8, 512), np.float16))         # [8, 256] on the CPU

    with sparseflow.Model() as m:                       # the built-in tiny OPT (random weights)
        print(m.generate("Hello", max_new_tokens=16))   # or Model(path): a .sf or GGUF file,
                                                        # an HF OPT/Llama/Mistral/Qwen2/GPT-2 dir

The native library is found on first use (SPARSEFLOW_LIBRARY_DIR, the files installed with the
package by `pip install .` / `pip install -e .`, or the system); importing never fails for lack of
it. PyTorch is optional and never imported here: the torch layer lives in sparseflow.torch, and
sparseflow.SparseLinear / sparseflow.sparsify import it when first used.
"""

from ._errors import LibraryNotFoundError, SparseFlowError, Status
from ._lib import library_path
from .config import OffloadStrategy, SparseFlowConfig
from .model import Model, SparseFlowModel, builtin_model_path
from .sparse24 import Compressed24, compress, find_violation, is_24, prune

__all__ = [
    "Compressed24", "LibraryNotFoundError", "Model", "OffloadStrategy", "SparseFlowConfig",
    "SparseFlowError", "SparseFlowModel", "Status", "builtin_model_path", "compress",
    "cuda_unavailable_reason", "find_violation", "is_24", "library_path", "native_version",
    "prune",
]

# Names served by sparseflow.torch, imported (with PyTorch) only when one is first used; kept out
# of __all__ so that `from sparseflow import *` works without PyTorch.
_TORCH_NAMES = {"SparseLinear", "sparsify", "LayerReport", "SparsifyReport"}


def native_version():
    """The loaded library's version string (sf_version_string)."""
    from . import _lib
    return _lib.lib().sf_version_string().decode()


def cuda_unavailable_reason():
    """"" when the library can run its 2:4 GPU kernels here, else a sentence saying why not (no
    CUDA backend in this build, no visible GPU, a GPU older than sm_80); sf_cuda_check."""
    from . import _lib
    lib = _lib.lib()
    if not _lib.has_cuda_api():
        return (f"the loaded library ({lib._sf_path}) predates the GPU layer (no sf_cuda_check); "
                "rebuild it from this source tree")
    if lib.sf_cuda_check() == 0:
        return ""
    return lib.sf_last_error().decode("utf-8", "replace")


def __getattr__(name):
    # __version__ is the native library's, read when first asked for (loading the library).
    if name == "__version__":
        return native_version()
    if name in _TORCH_NAMES:
        from . import torch as _torch  # raises ImportError naming PyTorch when it is missing
        return getattr(_torch, name)
    raise AttributeError(f"module 'sparseflow' has no attribute {name!r}")
