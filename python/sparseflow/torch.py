"""PyTorch layer: 2:4 sparse replacements for nn.Linear that run SparseFlow's kernels in place.

    import torch, sparseflow
    report = sparseflow.sparsify(model, exclude="lm_head", method="wanda", calibration=batch)
    print(report)                      # per layer: shape, relative weight and output error

A SparseLinear keeps one copy of its weight, the compressed 2:4 one (values + metadata, about
0.56 of the dense bytes for fp16/bf16): on a GPU in the kernels' layout in device memory, on the
CPU in SparseFlow's host layout. Its forward pass hands the tensors' data pointers to the C
library (sf_cuda_linear_forward on PyTorch's current CUDA stream, or sf_sparse24_gemm_cpu), so
nothing goes through the host. It is for inference: it has no gradient.

Weights in fp32 on a GPU: the GPU kernels multiply fp16 or bf16, so the weight is stored in
`compute_dtype` (default bfloat16, which keeps fp32's range) and each input is converted to it
on the GPU before the product; accumulation and the output stay fp32. The report's weight error
includes that rounding. CPU layers keep fp32 weights as they are.

This module imports torch; `import sparseflow` does not import it.
"""

import ctypes
import dataclasses
import fnmatch

import torch
import torch.nn.functional as F
from torch import nn

from . import _lib
from ._errors import SparseFlowError, Status

__all__ = ["LayerReport", "SparseLinear", "SparsifyReport", "release_workspaces", "sparsify"]

# sf_dtype values (include/sparseflow/sparseflow.h). The C library decides which it takes.
_SF_DTYPES = {
    torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3, torch.int8: 4,
    torch.uint8: 5, torch.int16: 6, torch.int32: 7, torch.int64: 8, torch.bool: 9,
}
_METHODS = {"magnitude": 0, "wanda": 1}
# 2:4 groups run along K (in_features), 4 at a time: the one requirement the kernels have. K that
# is a multiple of 8 keeps every row of x 16-byte aligned, which the fastest decode variant wants;
# other K run a slower variant of the same kernel.
K_MULTIPLE = 4
_GPU_DTYPES = (torch.float16, torch.bfloat16)
_LAYER_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _invalid(message, status=Status.INVALID_ARGUMENT):
    return SparseFlowError(status, message)


def _sf_dtype(dtype, what):
    code = _SF_DTYPES.get(dtype)
    if code is None:
        raise _invalid(f"{what} has dtype {dtype}, which SparseFlow has no type for; use "
                       "torch.float16, torch.bfloat16 or torch.float32")
    return code


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def _stream(device):
    # PyTorch's current stream of that GPU (0, the legacy default stream, unless the caller chose
    # another with torch.cuda.stream): the kernels are ordered with the caller's other work.
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def _need_cuda_library():
    if not _lib.has_cuda_api():
        raise _invalid(f"the loaded library ({_lib.library_path()}) has no GPU layer "
                       "(sf_cuda_linear_*); rebuild it from this source tree", Status.NO_DEVICE)


# ---- the weight, owned through a C handle ----------------------------------------------------

class _CpuWeight:
    """An sf_sparse24 handle: the compressed weight in host memory, multiplied by
    sf_sparse24_gemm_cpu (fp32 accumulation, any of fp32/fp16/bf16 for x, y and bias)."""

    def __init__(self, handle, dtype, shape):
        self._lib = _lib.lib()
        self.handle = handle
        self.dtype = dtype          # what the handle stores
        self.shape = shape          # (N, K)
        n = ctypes.c_size_t()
        _lib.check(self._lib.sf_sparse24_compressed_bytes(handle, ctypes.byref(n)))
        self.nbytes = n.value

    def free(self):
        handle, lib = getattr(self, "handle", None), getattr(self, "_lib", None)
        if handle is not None and handle.value and lib is not None:
            lib.sf_sparse24_free(handle)
        self.handle = None

    __del__ = free

    def matmul(self, x, y, bias):
        """y[m, N] = x[m, K] W^T + bias; x, y contiguous 2-D CPU tensors."""
        _lib.check(self._lib.sf_sparse24_gemm_cpu(
            self.handle, _ptr(x), _sf_dtype(x.dtype, "x"), x.shape[0], _ptr(y),
            _sf_dtype(y.dtype, "y"), None if bias is None else _ptr(bias),
            0 if bias is None else _sf_dtype(bias.dtype, "bias"), 0, None, 0))

    def decompress(self):
        out = torch.empty(self.shape, dtype=self.dtype)
        _lib.check(self._lib.sf_sparse24_decompress(self.handle, _ptr(out)))
        return out


class _CudaWeight:
    """An sf_cuda_linear handle: the compressed weight in device memory, in the kernels' layout."""

    def __init__(self, handle, dtype, device):
        self._lib = _lib.lib()
        self.handle = handle
        self.dtype = dtype
        self.device = device
        rows, cols, nbytes = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_size_t()
        _lib.check(self._lib.sf_cuda_linear_info(handle, ctypes.byref(rows), ctypes.byref(cols),
                                                 None, None, ctypes.byref(nbytes)))
        self.shape = (rows.value, cols.value)
        self.nbytes = nbytes.value

    def free(self):
        handle, lib = getattr(self, "handle", None), getattr(self, "_lib", None)
        if handle is not None and handle.value and lib is not None:
            lib.sf_cuda_linear_free(handle)
        self.handle = None

    __del__ = free

    def matmul(self, x, y, bias):
        """y[m, N] = x[m, K] W^T + bias on the current stream; contiguous device tensors, x in the
        weight's dtype."""
        _lib.check(self._lib.sf_cuda_linear_forward(
            self.handle, _ptr(x), _sf_dtype(x.dtype, "x"), x.shape[0], _ptr(y),
            _sf_dtype(y.dtype, "y"), None if bias is None else _ptr(bias),
            0 if bias is None else _sf_dtype(bias.dtype, "bias"), 0, None, 0,
            _stream(self.device)))

    def decompress(self):
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        _lib.check(self._lib.sf_cuda_linear_decompress(self.handle, _ptr(out),
                                                       _stream(self.device)))
        return out


def release_workspaces():
    """Free the scratch buffers the GPU kernels keep per stream (the dense fallback for M > 64
    keeps a decompressed copy of the largest weight it met); the next forward makes them again."""
    if _lib.has_cuda_api():
        _lib.lib().sf_cuda_release_workspaces()


# ---- reports ---------------------------------------------------------------------------------

@dataclasses.dataclass
class LayerReport:
    """What replacing one Linear did. Errors are Frobenius-norm ratios: weight_rel_error =
    |W - W24| / |W| (W24 as stored, so fp32 weights stored in bf16 include that rounding);
    output_rel_error = |y24 - y| / |y| over the calibration batch, y the dense layer's output
    (None without calibration). `skipped` is None for a replaced layer, else the reason."""

    name: str
    shape: tuple                 # (out_features, in_features) = (N, K)
    dtype: str                   # the layer's dtype (what its inputs and outputs are)
    device: str
    method: str = None
    weight_dtype: str = None     # what the stored 2:4 weight holds
    weight_rel_error: float = None
    output_rel_error: float = None
    dense_bytes: int = None      # the dense weight's bytes
    sparse_bytes: int = None     # the 2:4 weight's bytes (values + metadata) where it lives
    skipped: str = None

    @property
    def replaced(self):
        return self.skipped is None


def _fmt(v):
    return "-" if v is None else f"{v:.4f}"


class SparsifyReport(list):
    """A list of LayerReport, one per nn.Linear found in the model (replaced or skipped, in
    module order); str() is a markdown table."""

    @property
    def replaced(self):
        return [r for r in self if r.replaced]

    @property
    def skipped(self):
        return [r for r in self if not r.replaced]

    def __str__(self):
        lines = ["| layer | shape (N x K) | dtype | weight rel. error | output rel. error | note |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in self:
            note = (f"skipped: {r.skipped}" if r.skipped else
                    f"2:4 {r.method}, {r.weight_dtype}, {r.sparse_bytes / 2**20:.2f} MiB "
                    f"(dense {r.dense_bytes / 2**20:.2f} MiB)")
            lines.append(f"| {r.name or '(root)'} | {r.shape[0]} x {r.shape[1]} | {r.dtype} | "
                         f"{_fmt(r.weight_rel_error)} | {_fmt(r.output_rel_error)} | {note} |")
        done = self.replaced
        dense = sum(r.dense_bytes for r in done)
        sparse = sum(r.sparse_bytes for r in done)
        lines.append("")
        lines.append(f"{len(done)} of {len(self)} Linear layers replaced by 2:4; their weights "
                     f"{dense / 2**20:.1f} MiB -> {sparse / 2**20:.1f} MiB.")
        return "\n".join(lines)


def _rel(num2, den2):
    return float((num2 / den2).sqrt()) if den2 > 0 else (0.0 if num2 == 0 else float("inf"))


# ---- SparseLinear ----------------------------------------------------------------------------

def _unsupported_reason(linear):
    """Why a Linear cannot become a SparseLinear, or None."""
    w = linear.weight
    k, n = linear.in_features, linear.out_features
    if k == 0 or n == 0:
        return f"empty weight ({n} x {k})"
    if k % K_MULTIPLE:
        return (f"in_features = {k} is not a multiple of {K_MULTIPLE}: 2:4 keeps 2 of every 4 "
                "consecutive inputs")
    if w.dtype not in _LAYER_DTYPES:
        return f"dtype {w.dtype}; SparseLinear takes float16, bfloat16 or float32 layers"
    if w.device.type not in ("cpu", "cuda"):
        return f"weight on {w.device}; SparseLinear runs on cuda and cpu"
    if w.device.type == "cuda":
        why = _cuda_reason()
        if why:
            return f"no GPU path: {why}"
    return None


def _cuda_reason():
    import sparseflow
    return sparseflow.cuda_unavailable_reason()


def _activation_norms(x, k):
    """Per-input-channel L2 norms over every token of x [..., K] (Wanda's ||X_j||), fp32."""
    return torch.linalg.vector_norm(x.detach().reshape(-1, k).float(), dim=0)


_PRIVATE = object()


class SparseLinear(nn.Module):
    """y = x W24^T + b with W24 a 2:4 sparse weight, SparseFlow's kernels doing the product.

    Make one with SparseLinear.from_dense(linear) or sparseflow.sparsify(model). Inputs must have
    the layer's dtype and device, shape [..., in_features]; any strides (they are made
    contiguous). The output has the input's dtype. Inference only: no gradient flows through it.
    The weight lives in SparseFlow's memory, not in a Parameter: move or convert the model
    (.to, .half) before sparsifying, not after. `.report` says what pruning did.
    """

    def __init__(self, token, weight, bias, dtype, device, report):
        if token is not _PRIVATE:
            raise TypeError("make a SparseLinear with SparseLinear.from_dense(linear) or "
                            "sparseflow.sparsify(model)")
        super().__init__()
        self._weight = weight
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype                        # of inputs and outputs
        self.weight_dtype = weight.dtype          # of the stored 2:4 weight
        self.device = device
        self.register_buffer("bias", bias)        # [out_features] or None
        self.report = report

    # -- construction --

    @classmethod
    def from_dense(cls, linear, method="magnitude", calibration=None, *, activation_norms=None,
                   compute_dtype=None, name=""):
        """Prune `linear`'s weight to 2:4 and build the sparse layer on the weight's device.

        method: "magnitude" keeps the 2 largest |w| of each group of 4 inputs; "wanda" the 2
        largest |w_ij| * ||X_j||, with ||X_j|| the L2 norm of input channel j over `calibration`
        (a batch of this layer's inputs, [..., in_features]) or given as `activation_norms`
        ([in_features]). With calibration, .report also gives the output error on that batch.
        compute_dtype: the stored weight's dtype (torch.float16 or torch.bfloat16 on a GPU);
        default: the layer's, except fp32 on a GPU, which is stored in bfloat16.
        `linear` is not changed and not referenced afterwards.
        """
        if not isinstance(linear, nn.Linear):
            raise _invalid(f"from_dense takes an nn.Linear, got {type(linear).__name__}")
        if method not in _METHODS:
            raise _invalid(f"method is {method!r}; expected 'magnitude' or 'wanda'")
        w = linear.weight.detach()
        n, k = w.shape
        device, dtype = w.device, w.dtype
        if n and k and k % K_MULTIPLE:
            raise _invalid(f"{name or 'Linear'}({k} -> {n}): {_unsupported_reason(linear)}; leave "
                           "this layer dense", Status.UNSUPPORTED_SHAPE)
        if device.type not in ("cpu", "cuda"):
            raise _invalid(f"the weight is on {device}; SparseLinear runs on cuda and cpu")

        x = None
        if calibration is not None:
            x = calibration.detach().to(device)
            if x.ndim == 0 or x.shape[-1] != k:
                raise _invalid(f"calibration has shape {tuple(x.shape)}; expected [..., {k}], a "
                               "batch of this layer's inputs")
        norms = None
        if method == "wanda":
            if activation_norms is not None:
                norms = activation_norms.detach().float()
                if norms.shape != (k,):
                    raise _invalid(f"activation_norms has shape {tuple(norms.shape)}; expected "
                                   f"({k},), one L2 norm per input channel")
            elif x is not None:
                norms = _activation_norms(x, k)
            else:
                raise _invalid("method='wanda' needs calibration= (a batch of this layer's inputs, "
                               f"[..., {k}]) or activation_norms= ({k} per-channel norms); use "
                               "method='magnitude' without calibration data")
            norms = norms.to("cpu").contiguous()  # the pruning runs on the host
        elif activation_norms is not None:
            raise _invalid("activation_norms is only used by method='wanda'")

        if compute_dtype is None:
            compute_dtype = torch.bfloat16 if (device.type == "cuda" and dtype == torch.float32) \
                else dtype
        elif dtype in _LAYER_DTYPES and compute_dtype not in _LAYER_DTYPES:
            raise _invalid(f"compute_dtype is {compute_dtype}; expected torch.float16, "
                           "torch.bfloat16 or torch.float32")
        # Layers of other dtypes go to the library as they are, which says what it takes.
        wc = w.to(compute_dtype) if dtype in _LAYER_DTYPES else w
        wc = wc.contiguous()
        lib = _lib.lib()
        code = _sf_dtype(wc.dtype, "the weight")
        norms_ptr = None if norms is None else _ptr(norms)
        handle = ctypes.c_void_p()
        if device.type == "cuda":
            _need_cuda_library()
            index = device.index if device.index is not None else torch.cuda.current_device()
            device = torch.device("cuda", index)
            _lib.check(lib.sf_cuda_linear_create_dense(
                _ptr(wc), code, n, k, 1, _METHODS[method], norms_ptr, index, _stream(device),
                ctypes.byref(handle)))
            weight = _CudaWeight(handle, wc.dtype, device)
        else:
            pruned = torch.empty_like(wc)
            _lib.check(lib.sf_prune_24(_ptr(wc), code, n, k, _METHODS[method], norms_ptr,
                                       _ptr(pruned)))
            _lib.check(lib.sf_sparse24_compress(_ptr(pruned), code, n, k, ctypes.byref(handle)))
            del pruned
            weight = _CpuWeight(handle, wc.dtype, (n, k))
        del wc

        bias = None
        if linear.bias is not None:
            bias = linear.bias.detach().to(device).contiguous()
        report = LayerReport(name=name, shape=(n, k), dtype=str(dtype).replace("torch.", ""),
                             device=str(device), method=method,
                             weight_dtype=str(weight.dtype).replace("torch.", ""),
                             dense_bytes=n * k * w.element_size(), sparse_bytes=weight.nbytes)
        layer = cls(_PRIVATE, weight, bias, dtype, device, report)
        with torch.no_grad():
            w24 = layer.dense_weight().float()
            wf = w.float()
            report.weight_rel_error = _rel((wf - w24).pow(2).sum(), wf.pow(2).sum())
            del w24
            if x is not None:
                b = None if bias is None else bias.float()
                ref = F.linear(x.float(), wf, b)
                out = layer(x.to(dtype)).float()
                report.output_rel_error = _rel((out - ref).pow(2).sum(), ref.pow(2).sum())
        return layer

    # -- use --

    def dense_weight(self):
        """The 2:4 weight as the kernels multiply by it: a new dense [out, in] tensor of
        weight_dtype on the layer's device (for checking; it is not kept)."""
        return self._live().decompress()

    def free(self):
        """Release the weight now (device memory included) instead of at garbage collection."""
        if self._weight is not None:
            self._weight.free()
            self._weight = None

    def _live(self):
        if self._weight is None:
            raise _invalid(f"{self._describe()}: its weight was released by .free(); make a new "
                           "layer with SparseLinear.from_dense")
        return self._weight

    def _describe(self):
        return f"SparseLinear({self.in_features} -> {self.out_features}, {self.dtype}, {self.device})"

    def forward(self, input):
        weight = self._live()
        if torch.is_grad_enabled() and input.requires_grad:
            raise _invalid(f"{self._describe()} is for inference and has no gradient, but its input "
                           "requires grad; run the model under torch.no_grad() or "
                           "torch.inference_mode()")
        if input.device != self.device:
            raise _invalid(f"{self._describe()}: the input is on {input.device}; move it to "
                           f"{self.device} (the 2:4 weight lives there)")
        if input.dtype != self.dtype:
            raise _invalid(f"{self._describe()}: the input has dtype {input.dtype}, expected "
                           f"{self.dtype}; convert it with .to({self.dtype})")
        k, n = self.in_features, self.out_features
        if input.ndim == 0 or input.shape[-1] != k:
            raise _invalid(f"{self._describe()}: the input has shape {tuple(input.shape)}; expected "
                           f"[..., {k}]")
        lead = input.shape[:-1]
        x = input.reshape(-1, k)
        y = torch.empty((x.shape[0], n), dtype=input.dtype, device=input.device)
        if x.shape[0]:
            self._matmul_into(weight, x, y)
        return y.reshape(*lead, n)

    def _matmul_into(self, weight, x, y):
        """y[m, N] = x[m, K] W24^T + bias for 2-D x (any strides) and contiguous y."""
        if isinstance(weight, _CudaWeight) and x.dtype != weight.dtype:
            x = x.to(weight.dtype)  # fp32 layers multiply in compute_dtype, on the GPU
        weight.matmul(x.contiguous(), y, self.bias)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .half() / .cuda() would move the bias but not the weight: refuse instead.
        before = None if self.bias is None else (self.bias.device, self.bias.dtype)
        result = super()._apply(fn, *args, **kwargs)
        if self.bias is not None and (self.bias.device, self.bias.dtype) != before:
            raise _invalid(f"{self._describe()} cannot be moved or converted: its 2:4 weight lives in "
                           "SparseFlow's memory. Move or convert the dense model first, then "
                           "sparsify it")
        return result

    def extra_repr(self):
        state = "released" if self._weight is None else \
            f"2:4 {self.weight_dtype}, {self._weight.nbytes} bytes"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.dtype}, device={self.device}, "
                f"weight={state}")


# ---- sparsify --------------------------------------------------------------------------------

def _patterns(p, what):
    if p is None:
        return []
    if isinstance(p, str):
        return [p]
    try:
        out = list(p)
    except TypeError:
        raise _invalid(f"{what} is {p!r}; expected a pattern string or a list of them") from None
    if not all(isinstance(s, str) for s in out):
        raise _invalid(f"{what} is {p!r}; expected a pattern string or a list of them")
    return out


def _call(model, calibration):
    if isinstance(calibration, dict):
        return model(**calibration)
    if isinstance(calibration, (tuple, list)):
        return model(*calibration)
    return model(calibration)


def _input_of(args, kwargs):
    return args[0] if args else kwargs["input"]


def sparsify(model, include=None, exclude=None, method="magnitude", calibration=None,
             compute_dtype=None):
    """Replace the nn.Linear layers of `model` by SparseLinear, in place; return a SparsifyReport.

    include / exclude: fnmatch patterns (a string or a list) matched against full module names
    as model.named_modules() gives them ("lm_head", "*.mlp.*", "layers.1?.*"); a layer is
    replaced when it matches some include pattern (default: every layer) and no exclude pattern.
    Layers that cannot be 2:4 (in_features not a multiple of 4, another dtype, subclasses of
    nn.Linear whose owner may read .weight directly, e.g. nn.MultiheadAttention's out_proj) stay
    dense, with the reason in the report.
    calibration: inputs for model (a tensor, a tuple of positional arguments or a dict of keyword
    arguments), run under torch.no_grad(): needed by method="wanda" (per-layer activation norms)
    and, with any method, it gives each layer's output error on its calibration inputs. That
    measurement holds the dense and the 2:4 weights at once for a moment; without calibration the
    layers are converted one at a time.
    """
    if not isinstance(model, nn.Module):
        raise _invalid(f"sparsify takes an nn.Module, got {type(model).__name__}")
    if method not in _METHODS:
        raise _invalid(f"method is {method!r}; expected 'magnitude' or 'wanda'")
    if method == "wanda" and calibration is None:
        raise _invalid("method='wanda' needs calibration= (inputs for the model: a tensor, a tuple "
                       "or a dict of arguments) to measure activation norms; use "
                       "method='magnitude' without calibration data")
    include_p, exclude_p = _patterns(include, "include"), _patterns(exclude, "exclude")

    report = SparsifyReport()
    chosen = {}  # name -> (module, LayerReport)
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        w = mod.weight
        r = LayerReport(name=name, shape=(mod.out_features, mod.in_features),
                        dtype=str(w.dtype).replace("torch.", ""), device=str(w.device))
        report.append(r)
        if not name:
            r.skipped = "the model itself is the Linear: use SparseLinear.from_dense"
        elif include_p and not any(fnmatch.fnmatchcase(name, p) for p in include_p):
            r.skipped = f"not matched by include={include_p}"
        elif any(fnmatch.fnmatchcase(name, p) for p in exclude_p):
            r.skipped = "excluded by " + next(p for p in exclude_p if fnmatch.fnmatchcase(name, p))
        elif type(mod) is not nn.Linear:
            r.skipped = (f"{type(mod).__name__} is a subclass of nn.Linear; its owner may read "
                         ".weight directly")
        else:
            r.skipped = _unsupported_reason(mod)
        if r.skipped is None:
            chosen[name] = (mod, r)

    # Pass 1: activation norms of every chosen layer's inputs (Wanda).
    norms = {}
    if calibration is not None and method == "wanda":
        sums, hooks = {}, []

        def pre_hook(name):
            def hook(module, args, kwargs):
                x = _input_of(args, kwargs).detach()
                s = x.reshape(-1, module.in_features).float().pow(2).sum(dim=0)
                sums[name] = s if name not in sums else sums[name] + s
            return hook

        try:
            for name, (mod, _) in chosen.items():
                hooks.append(mod.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
            with torch.no_grad():
                _call(model, calibration)
        finally:
            for h in hooks:
                h.remove()
        for name in list(chosen):
            if name in sums:
                norms[name] = sums[name].sqrt()
            else:
                chosen.pop(name)[1].skipped = ("did not run on the calibration inputs, so Wanda has "
                                               "no activation norms for it")

    def build(name, mod, r):
        try:
            layer = SparseLinear.from_dense(mod, method, activation_norms=norms.get(name),
                                            compute_dtype=compute_dtype, name=name)
        except SparseFlowError as e:
            if e.status not in (Status.UNSUPPORTED_SHAPE, Status.NO_DEVICE):
                raise
            r.skipped = e.message  # this layer stays dense, the others go on
            return None
        for f in ("method", "weight_dtype", "weight_rel_error", "dense_bytes", "sparse_bytes"):
            setattr(r, f, getattr(layer.report, f))
        layer.report = r
        return layer

    built = {}
    if calibration is None:
        for name, (mod, r) in chosen.items():
            layer = build(name, mod, r)
            if layer is not None:
                _swap(model, mod, layer)
        return report

    # Pass 2: each layer's output error on its (dense-model) calibration inputs.
    for name, (mod, r) in chosen.items():
        layer = build(name, mod, r)
        if layer is not None:
            built[name] = layer
    err2, ref2, hooks = {}, {}, []

    def post_hook(name):
        def hook(module, args, kwargs, output):
            y24 = built[name](_input_of(args, kwargs).detach()).float()
            y = output.detach().float()
            err2[name] = err2.get(name, 0) + (y24 - y).pow(2).sum()
            ref2[name] = ref2.get(name, 0) + y.pow(2).sum()
        return hook

    try:
        for name in built:
            hooks.append(chosen[name][0].register_forward_hook(post_hook(name), with_kwargs=True))
        with torch.no_grad():
            _call(model, calibration)
    finally:
        for h in hooks:
            h.remove()
    for name, layer in built.items():
        mod, r = chosen[name]
        if name in err2:
            r.output_rel_error = _rel(err2[name], ref2[name])
        _swap(model, mod, layer)
    return report


def _swap(model, old, new):
    """Put `new` wherever `old` sits in model (a module shared under several names included)."""
    for name, mod in list(model.named_modules(remove_duplicate=False)):
        if mod is old and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, new)
