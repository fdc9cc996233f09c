"""sparseflow.torch: SparseLinear and sparsify against torch.nn.functional.linear on the pruned
weight. Skipped (with the reason shown by pytest -rs) when PyTorch is not installed; the CUDA
tests also when no GPU is visible to PyTorch or the library has no GPU path.

Tolerance (STYLE.md 9): x and the 2:4 weight are exact in the kernels' input type, products are
exact in fp32 and summed in fp32, then rounded once to the output type. So against an fp64
reference, |y - ref| <= 2 eps_out |ref| + 4 K 2^-24 (|x| @ |W24|^T) + tiny, with room for
split-K reduction order. A wrong index or a dropped tile gives errors of order |ref|.
"""

import copy
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import sparseflow as sf  # noqa: E402
from sparseflow import torch as sft  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EPS_OUT = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24}
# M from 1 to 300: every M of the small-M kernels (decode buckets <= 8, 16, 32, 64), the switch to
# the dense fallback at 65, and awkward sizes above.
M_SWEEP = list(range(1, 34)) + [40, 47, 48, 63, 64, 65, 96, 100, 127, 128, 129, 200, 255, 256,
                                257, 300]


def cuda_reason():
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch"
    return sf.cuda_unavailable_reason()


needs_cuda = pytest.mark.skipif(bool(cuda_reason()), reason=f"GPU tests: {cuda_reason()}")


def make_linear(n, k, dtype, device, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / k**0.5)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=g))
    return lin.to(device=device, dtype=dtype)


def assert_matches(y, x, w24, bias):
    """y (any dtype) against F.linear in fp64 on the same x (in the kernels' input type) and W24."""
    assert torch.isfinite(y).all(), "non-finite output: an element was not written?"
    xd, wd = x.double(), w24.double()
    ref = F.linear(xd, wd, None if bias is None else bias.double())
    scale = F.linear(xd.abs(), wd.abs())
    k = x.shape[-1]
    tol = 2 * EPS_OUT[y.dtype] * ref.abs() + 4 * k * 2.0**-24 * scale + 1e-6
    err = (y.double() - ref).abs()
    bad = err > tol
    assert not bad.any(), (f"{int(bad.sum())} of {bad.numel()} elements off; worst error "
                           f"{float(err.max()):.3g} where tolerance {float(tol.flatten()[err.argmax()]):.3g}")


# ---- the package without a GPU -------------------------------------------------------------

def test_lazy_names_come_from_sparseflow_torch():
    assert sf.SparseLinear is sft.SparseLinear
    assert sf.sparsify is sft.sparsify


def test_cuda_unavailable_reason_is_a_sentence_or_empty():
    why = sf.cuda_unavailable_reason()
    assert isinstance(why, str)
    if why:
        assert why.startswith("sf_cuda_check: ")


def test_api_md_torch_example_runs():
    text = (REPO / "docs" / "API.md").read_text()
    code = text[text.index("\n## PyTorch"):].split("```python\n")[1].split("```")[0]
    exec(compile(code, "docs/API.md (PyTorch example)", "exec"), {})


def test_constructor_is_private():
    with pytest.raises(TypeError, match="from_dense"):
        sft.SparseLinear(None, None, None, None, None, None)


# ---- CPU path (sf_sparse24_gemm_cpu) -------------------------------------------------------

CPU_M = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 100, 257, 300]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_cpu_matches_linear_on_the_pruned_weight(dtype, bias):
    lin = make_linear(48, 96, dtype, "cpu", bias=bias)
    sl = sf.SparseLinear.from_dense(lin)
    w24 = sl.dense_weight()
    assert w24.dtype == dtype and w24.shape == (48, 96)
    assert sf.is_24(w24.float().numpy())
    g = torch.Generator().manual_seed(1)
    for m in CPU_M:
        x = torch.randn(m, 96, generator=g).to(dtype)
        with torch.no_grad():
            y = sl(x)
        assert y.dtype == dtype and y.shape == (m, 48)
        assert_matches(y, x, w24, sl.bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cpu_magnitude_pruning_is_the_librarys(dtype):
    lin = make_linear(32, 64, dtype, "cpu")
    sl = sf.SparseLinear.from_dense(lin)
    expect = sf.prune(lin.weight.detach().numpy())
    assert np.array_equal(sl.dense_weight().numpy(), expect)
    assert lin.weight.detach().count_nonzero() == 32 * 64, "from_dense must not change the Linear"


def test_cpu_wanda_uses_calibration_norms_and_reports_errors():
    lin = make_linear(64, 128, torch.float32, "cpu")
    g = torch.Generator().manual_seed(2)
    scales = torch.rand(128, generator=g) * 4
    calib = torch.randn(4, 16, 128, generator=g) * scales
    sl = sf.SparseLinear.from_dense(lin, method="wanda", calibration=calib)
    norms = torch.linalg.vector_norm(calib.reshape(-1, 128), dim=0)
    expect = sf.prune(lin.weight.detach().numpy(), "wanda", norms.numpy())
    assert np.array_equal(sl.dense_weight().numpy(), expect)

    w, w24 = lin.weight.detach().double(), torch.from_numpy(expect).double()
    r = sl.report
    assert r.method == "wanda" and r.shape == (64, 128) and r.dtype == "float32"
    assert r.weight_rel_error == pytest.approx(float((w - w24).norm() / w.norm()), rel=1e-5)
    ref = F.linear(calib.double(), w, lin.bias.detach().double())
    out = F.linear(calib.double(), w24, lin.bias.detach().double())
    assert r.output_rel_error == pytest.approx(float((out - ref).norm() / ref.norm()), rel=1e-4)
    assert 0 < r.output_rel_error < 1
    assert r.sparse_bytes < r.dense_bytes


def test_cpu_without_calibration_reports_no_output_error():
    sl = sf.SparseLinear.from_dense(make_linear(16, 32, torch.float16, "cpu"))
    assert sl.report.output_rel_error is None
    assert 0.2 < sl.report.weight_rel_error < 0.8  # half the weights of a Gaussian matrix go


def test_cpu_leading_dims_noncontiguous_and_empty_inputs():
    lin = make_linear(24, 40, torch.float32, "cpu")
    sl = sf.SparseLinear.from_dense(lin)
    w24 = sl.dense_weight()
    x = torch.randn(40, 3, 5).permute(1, 2, 0)  # [3, 5, 40], not contiguous
    assert not x.is_contiguous()
    with torch.no_grad():
        y = sl(x)
    assert y.shape == (3, 5, 24)
    assert_matches(y.reshape(-1, 24), x.reshape(-1, 40), w24, sl.bias)
    assert sl(torch.empty(0, 7, 40)).shape == (0, 7, 24)


def test_cpu_fp32_layer_with_fp16_storage():
    lin = make_linear(32, 64, torch.float32, "cpu")
    sl = sf.SparseLinear.from_dense(lin, compute_dtype=torch.float16)
    assert sl.weight_dtype == torch.float16 and sl.dtype == torch.float32
    x = torch.randn(5, 64)
    with torch.no_grad():
        y = sl(x)
    assert y.dtype == torch.float32
    assert_matches(y, x, sl.dense_weight(), sl.bias)


# ---- sparsify ------------------------------------------------------------------------------

def small_model(dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 30), nn.ReLU(),
                         nn.Linear(30, 8)).to(device=device, dtype=dtype)


def test_sparsify_swaps_layers_and_reports_skips():
    model = small_model()
    dense = copy.deepcopy(model)
    report = sf.sparsify(model)
    assert [r.name for r in report] == ["0", "2", "4"]
    assert isinstance(model[0], sf.SparseLinear) and isinstance(model[2], sf.SparseLinear)
    assert type(model[4]) is nn.Linear
    assert report[2].skipped.startswith("in_features = 30 is not a multiple of 4")
    assert [r.name for r in report.replaced] == ["0", "2"]
    assert model[0].report is report[0]
    # The sparsified model = the dense model with each replaced weight pruned.
    with torch.no_grad():
        for i in (0, 2):
            dense[i].weight.copy_(model[i].dense_weight())
        x = torch.randn(9, 64)
        assert torch.allclose(model(x), dense(x), rtol=1e-5, atol=1e-5)
    text = str(report)
    assert "| 4 | 8 x 30 |" in text and "2 of 3 Linear layers replaced" in text


def test_sparsify_include_exclude_patterns():
    model = nn.Sequential()
    model.add_module("attn", nn.Sequential(nn.Linear(32, 32)))
    model.add_module("mlp", nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 32)))
    model.add_module("lm_head", nn.Linear(32, 16))
    report = sf.sparsify(model, include=["mlp.*", "lm_head", "attn.*"], exclude="lm_*")
    by_name = {r.name: r for r in report}
    assert by_name["lm_head"].skipped == "excluded by lm_*"
    assert all(by_name[n].replaced for n in ("attn.0", "mlp.0", "mlp.1"))
    report = sf.sparsify(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), include="1")
    assert report[0].skipped.startswith("not matched by include") and report[1].replaced


def test_sparsify_leaves_multihead_attention_alone():
    model = nn.Sequential(nn.MultiheadAttention(16, 2))
    report = sf.sparsify(model)
    assert len(report) == 1 and "subclass of nn.Linear" in report[0].skipped


def test_sparsify_wanda_with_calibration():
    model = small_model()
    calib = torch.randn(32, 64)
    report = sf.sparsify(model, method="wanda", calibration=calib)
    for r in report.replaced:
        assert r.method == "wanda" and 0 < r.output_rel_error < 1 and 0 < r.weight_rel_error < 1
    with torch.no_grad():
        assert model(calib).shape == (32, 8)


def test_sparsify_shared_module_is_swapped_everywhere():
    shared = nn.Linear(16, 16)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = sf.sparsify(model)
    assert len(report) == 1
    assert model[0] is model[2] and isinstance(model[0], sf.SparseLinear)


# ---- errors --------------------------------------------------------------------------------

def test_error_wrong_input_dtype_and_device():
    sl = sf.SparseLinear.from_dense(make_linear(8, 16, torch.float32, "cpu"))
    with pytest.raises(sf.SparseFlowError, match=r"dtype torch.float16, expected torch.float32"):
        sl(torch.ones(2, 16, dtype=torch.float16))
    with pytest.raises(sf.SparseFlowError, match=r"expected \[\.\.\., 16\]"):
        sl(torch.ones(2, 12))


def test_error_from_c_arrives_with_its_message():
    lin = make_linear(8, 16, torch.float64, "cpu")
    with pytest.raises(sf.SparseFlowError) as e:
        sf.SparseLinear.from_dense(lin)
    assert e.value.status == sf.Status.INVALID_ARGUMENT
    assert e.value.message.startswith("sf_prune_24: w has dtype F64")


def test_error_in_features_not_divisible():
    with pytest.raises(sf.SparseFlowError, match="not a multiple of 4") as e:
        sf.SparseLinear.from_dense(nn.Linear(6, 4))
    assert e.value.status == sf.Status.UNSUPPORTED_SHAPE


def test_error_freed_handle():
    sl = sf.SparseLinear.from_dense(make_linear(8, 16, torch.float32, "cpu"))
    sl.free()
    sl.free()  # twice is fine
    with pytest.raises(sf.SparseFlowError, match=r"released by \.free\(\)"):
        sl(torch.ones(1, 16))
    with pytest.raises(sf.SparseFlowError, match="released"):
        sl.dense_weight()
    assert "released" in repr(sl)


def test_error_gradient_and_arguments():
    lin = make_linear(8, 16, torch.float32, "cpu")
    sl = sf.SparseLinear.from_dense(lin)
    with pytest.raises(sf.SparseFlowError, match="no_grad"):
        sl(torch.ones(1, 16, requires_grad=True))
    with pytest.raises(sf.SparseFlowError, match="needs calibration"):
        sf.SparseLinear.from_dense(lin, method="wanda")
    with pytest.raises(sf.SparseFlowError, match="'magnitude' or 'wanda'"):
        sf.SparseLinear.from_dense(lin, method="random")
    with pytest.raises(sf.SparseFlowError, match="an nn.Linear"):
        sf.SparseLinear.from_dense(nn.ReLU())
    with pytest.raises(sf.SparseFlowError, match="needs calibration"):
        sf.sparsify(small_model(), method="wanda")


def test_error_moving_a_sparse_layer():
    sl = sf.SparseLinear.from_dense(make_linear(8, 16, torch.float32, "cpu"))
    with pytest.raises(sf.SparseFlowError, match="cannot be moved or converted"):
        sl.half()


# ---- CUDA path (sf_cuda_linear_*) ----------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(256, 512), (200, 196)])  # N not a multiple of 16, K % 8 != 0
def test_cuda_matches_linear_on_the_pruned_weight(dtype, bias, shape):
    n, k = shape
    lin = make_linear(n, k, dtype, "cuda", bias=bias)
    sl = sf.SparseLinear.from_dense(lin)
    w24 = sl.dense_weight()
    assert w24.device.type == "cuda" and w24.dtype == dtype
    assert sf.is_24(w24.float().cpu().numpy())
    # The GPU prunes the same way as the CPU.
    cpu = sf.SparseLinear.from_dense(make_linear(n, k, dtype, "cpu", bias=bias))
    assert torch.equal(cpu.dense_weight(), w24.cpu())
    g = torch.Generator(device="cuda").manual_seed(3)
    with torch.no_grad():
        for m in M_SWEEP:
            x = torch.randn(m, k, device="cuda", dtype=dtype, generator=g)
            # Poison the output so that an unwritten element shows.
            y = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
            sl._matmul_into(sl._weight, x, y)
            assert_matches(y, x, w24, sl.bias)
            assert_matches(sl(x), x, w24, sl.bias)


@needs_cuda
@pytest.mark.parametrize("m", [1, 16, 64, 256])
def test_cuda_llama_shape(m):
    lin = make_linear(4096, 4096, torch.float16, "cuda", bias=False)
    sl = sf.SparseLinear.from_dense(lin)
    x = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        assert_matches(sl(x), x, sl.dense_weight(), None)
    assert sl.report.sparse_bytes <= 0.57 * sl.report.dense_bytes


@needs_cuda
def test_cuda_fp32_layer_multiplies_in_bf16():
    lin = make_linear(64, 128, torch.float32, "cuda")
    sl = sf.SparseLinear.from_dense(lin)
    assert sl.weight_dtype == torch.bfloat16 and sl.dtype == torch.float32
    x = torch.randn(3, 7, 128, device="cuda")
    with torch.no_grad():
        y = sl(x)
    assert y.dtype == torch.float32 and y.shape == (3, 7, 64)
    assert_matches(y.reshape(-1, 64), x.reshape(-1, 128).to(torch.bfloat16), sl.dense_weight(),
                   sl.bias)
    sl16 = sf.SparseLinear.from_dense(lin, compute_dtype=torch.float16)
    assert sl16.weight_dtype == torch.float16
    assert sl16.report.weight_rel_error <= sl.report.weight_rel_error + 1e-3


@needs_cuda
def test_cuda_noncontiguous_input_side_stream_and_threads():
    lin = make_linear(96, 128, torch.float16, "cuda")
    sl = sf.SparseLinear.from_dense(lin)
    w24 = sl.dense_weight()
    x = torch.randn(128, 6, device="cuda", dtype=torch.float16).t()  # [6, 128], strided
    with torch.no_grad():
        assert_matches(sl(x), x, w24, sl.bias)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            y = sl(x)
        torch.cuda.current_stream().wait_stream(s)
        assert_matches(y, x, w24, sl.bias)

    results, errors = {}, []

    def worker(i):
        try:
            with torch.no_grad(), torch.cuda.stream(torch.cuda.Stream()):
                xi = torch.randn(1 + 20 * i, 128, device="cuda", dtype=torch.float16)
                yi = sl(xi)
                torch.cuda.current_stream().synchronize()
                results[i] = (xi, yi)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for xi, yi in results.values():
        assert_matches(yi, xi, w24, sl.bias)
    sft.release_workspaces()
    with torch.no_grad():
        assert_matches(sl(x), x, w24, sl.bias)


@needs_cuda
def test_cuda_wanda_matches_cpu_pruning():
    lin = make_linear(64, 256, torch.float16, "cuda")
    calib = torch.randn(50, 256, device="cuda", dtype=torch.float16) * torch.rand(256, device="cuda",
                                                                                  dtype=torch.float16)
    norms = torch.linalg.vector_norm(calib.float(), dim=0)
    sl = sf.SparseLinear.from_dense(lin, method="wanda", activation_norms=norms)
    expect = sf.prune(lin.weight.detach().cpu().numpy(), "wanda", norms.cpu().numpy())
    assert np.array_equal(sl.dense_weight().cpu().numpy(), expect)
    sl2 = sf.SparseLinear.from_dense(lin, method="wanda", calibration=calib)
    assert 0 < sl2.report.output_rel_error < 1


@needs_cuda
def test_cuda_sparsify_small_model():
    model = small_model(torch.float16, "cuda")
    dense = copy.deepcopy(model)
    calib = torch.randn(40, 64, device="cuda", dtype=torch.float16)
    report = sf.sparsify(model, method="wanda", calibration=calib)
    assert [r.replaced for r in report] == [True, True, False]
    with torch.no_grad():
        for i in (0, 2):
            dense[i].weight.copy_(model[i].dense_weight())
        x = torch.randn(5, 64, device="cuda", dtype=torch.float16)
        assert torch.allclose(model(x).float(), dense(x).float(), rtol=2e-2, atol=2e-2)


@needs_cuda
def test_cuda_errors():
    sl = sf.SparseLinear.from_dense(make_linear(32, 64, torch.bfloat16, "cuda"))
    with pytest.raises(sf.SparseFlowError, match="the input is on cpu"):
        sl(torch.ones(1, 64, dtype=torch.bfloat16))
    with pytest.raises(sf.SparseFlowError, match="expected torch.bfloat16"):
        sl(torch.ones(1, 64, dtype=torch.float16, device="cuda"))
    # The C library's own checks, called directly: its message arrives as is.
    x = torch.ones(1, 64, dtype=torch.float16, device="cuda")
    y = torch.empty(1, 32, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(sf.SparseFlowError) as e:
        sl._weight.matmul(x, y, None)
    assert e.value.message.startswith("sf_cuda_linear_forward: x has dtype F16, but the weight is BF16")
    with pytest.raises(sf.SparseFlowError, match="sf_cuda_linear_forward: x .* is host memory"):
        sl._weight.matmul(torch.ones(1, 64, dtype=torch.bfloat16).pin_memory(), y, None)
    with pytest.raises(sf.SparseFlowError, match="sf_cuda_linear_create_dense: w has dtype F64"):
        sf.SparseLinear.from_dense(make_linear(8, 16, torch.float64, "cuda"))
    sl.free()
    with pytest.raises(sf.SparseFlowError, match="released"):
        sl(torch.ones(1, 64, dtype=torch.bfloat16, device="cuda"))


@needs_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2 if torch.cuda.is_available() else True,
                    reason="needs 2 GPUs")
def test_cuda_second_device_while_first_is_current():
    lin = make_linear(64, 128, torch.float16, "cuda:1")
    with torch.cuda.device(0):
        sl = sf.SparseLinear.from_dense(lin)
        x = torch.randn(4, 128, device="cuda:1", dtype=torch.float16)
        with torch.no_grad():
            assert_matches(sl(x), x, sl.dense_weight(), sl.bias)
