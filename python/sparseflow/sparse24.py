"""2:4 sparsity on numpy arrays, over the C ABI.

A weight matrix W is [N, K] (N outputs, K inputs) as in y = x W^T; the groups of 4 run along K,
the last axis. Arrays may be float32 or float16, and bfloat16 when ml_dtypes is installed
(numpy has no bfloat16 of its own). Every function returns new arrays; inputs are never changed.
"""

import ctypes

import numpy as np

from . import _lib
from ._errors import SparseFlowError, Status

# sf_dtype values (include/sparseflow/sparseflow.h), by numpy dtype name. The C library decides
# which of them an operation takes and says so; only names with no SparseFlow type fail here.
_SF_DTYPES = {
    "float32": 0, "float16": 1, "bfloat16": 2, "float64": 3, "int8": 4, "uint8": 5,
    "int16": 6, "int32": 7, "int64": 8, "bool": 9,
}
_METHODS = {"magnitude": 0, "wanda": 1}
_ACTIVATIONS = {None: 0, "none": 0, "relu": 1, "gelu": 2, "silu": 3}


def _invalid(message):
    return SparseFlowError(Status.INVALID_ARGUMENT, message)


def _sf_dtype(dtype, what):
    dtype = np.dtype(dtype)
    code = _SF_DTYPES.get(dtype.name)
    if code is None:
        raise _invalid(f"{what} has dtype {dtype}, which SparseFlow has no type for; use float32 or "
                       "float16 (or ml_dtypes.bfloat16)")
    return code


def _matrix(array, what="array"):
    """A C-contiguous 2-D array with a SparseFlow dtype."""
    a = np.asarray(array)
    if a.ndim != 2:
        raise _invalid(f"{what} must be 2-D [N, K] (N outputs, K inputs; the 2:4 groups run along K), "
                       f"got shape {a.shape}; reshape it first, e.g. a.reshape(-1, a.shape[-1])")
    _sf_dtype(a.dtype, what)
    return np.ascontiguousarray(a)


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


def prune(array, method="magnitude", activation_norms=None):
    """Return a copy of the 2-D array pruned to 2:4 along its last axis.

    method="magnitude" keeps the 2 largest |w| of each group of 4 (ties to the lower index);
    method="wanda" keeps the 2 largest |w[i, j]| * activation_norms[j], where activation_norms
    holds, for each of the K input channels, the L2 norm of its activations over calibration
    tokens. NaN counts as larger than any number and +-Inf as larger than any finite value.
    """
    w = _matrix(array, "array")
    if method not in _METHODS:
        raise _invalid(f"method is {method!r}; expected 'magnitude' or 'wanda'")
    norms = None
    if method == "wanda":
        if activation_norms is None:
            raise _invalid("method='wanda' needs activation_norms: one L2 norm per input channel "
                           f"({w.shape[1]} values); use method='magnitude' without calibration data")
        norms = np.ascontiguousarray(activation_norms, dtype=np.float32)
        if norms.shape != (w.shape[1],):
            raise _invalid(f"activation_norms has shape {norms.shape}; expected ({w.shape[1]},), "
                           "one norm per input channel (column) of the array")
    elif activation_norms is not None:
        raise _invalid("activation_norms is only used by method='wanda'")
    out = np.empty_like(w)
    lib = _lib.lib()
    _lib.check(lib.sf_prune_24(_ptr(w), _sf_dtype(w.dtype, "array"), w.shape[0], w.shape[1],
                               _METHODS[method], None if norms is None else _ptr(norms), _ptr(out)))
    return out


def find_violation(array):
    """None when the 2-D array is 2:4 along its last axis, else (row, group) of the first group
    of 4 with more than 2 nonzeros (columns 4*group to 4*group+3). NaN counts as nonzero."""
    w = _matrix(array, "array")
    ok, row, group = ctypes.c_int(0), ctypes.c_int64(-1), ctypes.c_int64(-1)
    lib = _lib.lib()
    _lib.check(lib.sf_check_24(_ptr(w), _sf_dtype(w.dtype, "array"), w.shape[0], w.shape[1],
                               ctypes.byref(ok), ctypes.byref(row), ctypes.byref(group)))
    return None if ok.value else (row.value, group.value)


def is_24(array):
    """True when every group of 4 along the last axis of the 2-D array has at most 2 nonzeros."""
    return find_violation(array) is None


def compress(array):
    """Compress a 2-D array that is already 2:4 (see prune) into a Compressed24."""
    w = _matrix(array, "array")
    handle = ctypes.c_void_p()
    lib = _lib.lib()
    _lib.check(lib.sf_sparse24_compress(_ptr(w), _sf_dtype(w.dtype, "array"), w.shape[0],
                                        w.shape[1], ctypes.byref(handle)))
    return Compressed24(handle, w.dtype)


class _Buffer:
    """Exposes memory owned by a Compressed24 to numpy without copying; holding the owner keeps
    the memory alive for as long as any array made from it."""

    def __init__(self, owner, address, shape, typestr):
        self._owner = owner
        self.__array_interface__ = {"shape": shape, "typestr": typestr, "data": (address, True),
                                    "version": 3}


class Compressed24:
    """A 2:4 matrix in SparseFlow's compressed layout (values + metadata, docs/SPARSE24.md).

    Made by compress(); immutable. .shape and .dtype are those of the dense matrix.
    """

    def __init__(self, handle, dtype):
        if not isinstance(handle, ctypes.c_void_p) or not handle.value:
            raise TypeError("Compressed24 objects are made by sparseflow.compress()")
        self._lib = _lib.lib()
        self._handle = handle
        self._dtype = np.dtype(dtype)
        rows, cols = ctypes.c_int64(), ctypes.c_int64()
        _lib.check(self._lib.sf_sparse24_shape(handle, ctypes.byref(rows), ctypes.byref(cols)))
        self._shape = (rows.value, cols.value)
        _lib.check(self._lib.sf_sparse24_padded_shape(handle, ctypes.byref(rows), ctypes.byref(cols)))
        self._padded_shape = (rows.value, cols.value)

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.sf_sparse24_free(handle)
            self._handle = None

    def __repr__(self):
        return (f"Compressed24(shape={self._shape}, dtype={self._dtype}, nbytes={self.nbytes}, "
                f"dense_nbytes={self.dense_nbytes})")

    @property
    def shape(self):
        """(N, K) of the dense matrix."""
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def padded_shape(self):
        """(N rounded up to 16, K rounded up to 32): the stored shape; the padding is zeros."""
        return self._padded_shape

    @property
    def nbytes(self):
        """Bytes of values + metadata: what a kernel reads to use the matrix once."""
        n = ctypes.c_size_t()
        _lib.check(self._lib.sf_sparse24_compressed_bytes(self._handle, ctypes.byref(n)))
        return n.value

    @property
    def dense_nbytes(self):
        return self._shape[0] * self._shape[1] * self._dtype.itemsize

    @property
    def values(self):
        """The kept values, [N_padded, K_padded / 2]: a read-only view, no copy."""
        data, size = ctypes.c_void_p(), ctypes.c_size_t()
        _lib.check(self._lib.sf_sparse24_values(self._handle, ctypes.byref(data), ctypes.byref(size)))
        shape = (self._padded_shape[0], self._padded_shape[1] // 2)
        assert size.value == shape[0] * shape[1] * self._dtype.itemsize
        view = np.asarray(_Buffer(self, data.value, shape, self._dtype.str))
        return view.view(self._dtype)  # keeps ml_dtypes' bfloat16 rather than its raw typestr

    @property
    def metadata(self):
        """The uint32 metadata words in mma.sp fragment order: a read-only view, no copy."""
        data, size = ctypes.c_void_p(), ctypes.c_size_t()
        _lib.check(self._lib.sf_sparse24_meta(self._handle, ctypes.byref(data), ctypes.byref(size)))
        return np.asarray(_Buffer(self, data.value, (size.value // 4,), "<u4"))

    def decompress(self):
        """The dense [N, K] matrix, bit for bit what was compressed."""
        out = np.empty(self._shape, dtype=self._dtype)
        _lib.check(self._lib.sf_sparse24_decompress(self._handle, _ptr(out)))
        return out

    def matmul(self, x, bias=None, activation=None, residual=None, out_dtype=None):
        """y = activation(x W^T + bias) + residual on the CPU, with fp32 accumulation.

        x is [..., K]; y is [..., N] of out_dtype (default x.dtype). bias is [N]; residual has
        y's shape. activation is None, "relu", "gelu" (exact erf form) or "silu". x, bias and
        residual may each be float32, float16 or bfloat16.
        """
        n, k = self._shape
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != k:
            raise _invalid(f"x has shape {x.shape}; expected [..., {k}] (the last axis is K, the "
                           f"matrix's {k} columns)")
        lead = x.shape[:-1]
        m = int(np.prod(lead, dtype=np.int64))
        x2 = np.ascontiguousarray(x.reshape(m, k))
        out_dtype = np.dtype(x.dtype if out_dtype is None else out_dtype)
        y = np.empty((m, n), dtype=out_dtype)
        if activation not in _ACTIVATIONS:
            raise _invalid(f"activation is {activation!r}; expected None, 'relu', 'gelu' or 'silu'")
        b = r = None
        if bias is not None:
            b = np.ascontiguousarray(bias)
            if b.shape != (n,):
                raise _invalid(f"bias has shape {b.shape}; expected ({n},), one per output")
        if residual is not None:
            r = np.asarray(residual)
            if r.shape != lead + (n,):
                raise _invalid(f"residual has shape {r.shape}; expected {lead + (n,)}, the shape of y")
            r = np.ascontiguousarray(r.reshape(m, n))
        _lib.check(self._lib.sf_sparse24_gemm_cpu(
            self._handle, _ptr(x2), _sf_dtype(x2.dtype, "x"), m, _ptr(y), _sf_dtype(y.dtype, "y"),
            None if b is None else _ptr(b), 0 if b is None else _sf_dtype(b.dtype, "bias"),
            _ACTIVATIONS[activation],
            None if r is None else _ptr(r), 0 if r is None else _sf_dtype(r.dtype, "residual")))
        return y.reshape(lead + (n,))
