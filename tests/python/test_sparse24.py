"""sparseflow.prune / is_24 / find_violation / compress / Compressed24 against numpy references."""

import math

import numpy as np
import pytest

import sparseflow as sf

DTYPES = [np.float32, np.float16]
SHAPES = [(1, 4), (7, 12), (33, 64), (64, 100), (17, 260)]


def bits(a):
    """The array's bit patterns, so that comparisons are exact (and NaN equals NaN)."""
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def random_matrix(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def reference_mask(w, norms=None):
    """Keep the 2 best of each group of 4: NaN beats +-Inf beats any finite score; among equal
    scores the lower index wins. Score = |w|, or |w| * norm in fp32 for Wanda."""
    n, k = w.shape
    score = np.abs(w.astype(np.float32))
    if norms is not None:
        score = score * norms.astype(np.float32)[None, :]
    cls = np.where(np.isnan(score), 2, np.where(np.isinf(score), 1, 0))
    finite = np.where(cls == 0, score, 0).astype(np.float64)
    g = lambda a: a.reshape(n, k // 4, 4)  # noqa: E731
    idx = np.broadcast_to(np.arange(4), (n, k // 4, 4))
    order = np.lexsort((idx, -g(finite), -g(cls)), axis=-1)  # last key is the primary one
    mask = np.zeros((n, k // 4, 4), dtype=bool)
    np.put_along_axis(mask, order[..., :2], True, axis=-1)
    return mask.reshape(n, k)


def pruned_reference(w, norms=None):
    return np.where(reference_mask(w, norms), w, np.zeros((), w.dtype))


# ---- prune -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_magnitude_matches_reference(dtype, shape):
    rng = np.random.default_rng([*shape, np.dtype(dtype).itemsize])
    w = random_matrix(rng, shape, dtype)
    before = w.copy()
    out = sf.prune(w)
    assert out.dtype == w.dtype and out.shape == w.shape
    assert np.array_equal(bits(out), bits(pruned_reference(w)))
    assert np.array_equal(bits(w), bits(before)), "prune must not change its input"


def test_magnitude_ties_zero_groups_nan_inf():
    w = np.array([[2, -2, 2, 2, 0, 0, 0, 0, 1, 0, 0, 0],
                  [np.nan, 1, np.inf, 5, 3, -np.inf, np.inf, 1e30, 0, 0, -7, 0]], np.float32)
    expect = np.array([[2, -2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
                       [np.nan, 0, np.inf, 0, 0, -np.inf, np.inf, 0, 0, 0, -7, 0]], np.float32)
    assert np.array_equal(bits(sf.prune(w)), bits(expect))


@pytest.mark.parametrize("dtype", DTYPES)
def test_wanda_matches_reference_and_uses_norms(dtype):
    rng = np.random.default_rng(7)
    w = random_matrix(rng, (48, 96), dtype)
    norms = rng.uniform(0.01, 10.0, 96).astype(np.float32)
    out = sf.prune(w, method="wanda", activation_norms=norms)
    assert np.array_equal(bits(out), bits(pruned_reference(w, norms)))
    assert not np.array_equal(out, sf.prune(w)), "norms this uneven must change some choices"
    # Equal norms choose exactly what magnitude does.
    same = sf.prune(w, method="wanda", activation_norms=np.full(96, 3.0))
    assert np.array_equal(bits(same), bits(sf.prune(w)))


def test_wanda_argument_errors():
    w = np.ones((4, 8), np.float32)
    with pytest.raises(sf.SparseFlowError, match="needs activation_norms") as e:
        sf.prune(w, method="wanda")
    assert e.value.status == sf.Status.INVALID_ARGUMENT
    with pytest.raises(sf.SparseFlowError, match=r"expected \(8,\)"):
        sf.prune(w, method="wanda", activation_norms=np.ones(7))
    with pytest.raises(sf.SparseFlowError, match="only used by method='wanda'"):
        sf.prune(w, activation_norms=np.ones(8))
    with pytest.raises(sf.SparseFlowError, match="'magnitude' or 'wanda'"):
        sf.prune(w, method="random")


def test_non_contiguous_input():
    rng = np.random.default_rng(3)
    base = random_matrix(rng, (64, 40), np.float32)
    for view in (base.T, base[::2, :], base[:, 4:36]):
        assert not view.flags.c_contiguous
        assert np.array_equal(sf.prune(view), sf.prune(np.ascontiguousarray(view)))


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_is_24_and_first_violation(dtype):
    rng = np.random.default_rng(11)
    w = random_matrix(rng, (20, 32), dtype)
    assert not sf.is_24(w)
    assert sf.find_violation(w) == (0, 0)
    p = sf.prune(w)
    assert sf.is_24(p) and sf.find_violation(p) is None
    # Two violations: the first in row-major order is reported.
    q = p.copy()
    q[13, 20:24] = [1, 2, 3, 0]
    q[15, 0:4] = [1, 2, 3, 4]
    assert sf.find_violation(q) == (13, 5)
    q[13, 20:24] = [1, np.nan, 0, 0]  # NaN counts as nonzero: still 2 here
    assert sf.find_violation(q) == (15, 0)
    q[15, 0:4] = [np.nan, 0, np.nan, np.nan]
    assert sf.find_violation(q) == (15, 0)
    assert sf.is_24(np.zeros((3, 8), dtype))


# ---- compression -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_compress_round_trip_is_bit_exact(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    p = sf.prune(random_matrix(rng, shape, dtype))
    c = sf.compress(p)
    assert c.shape == shape and c.dtype == np.dtype(dtype)
    n_pad, k_pad = -(-shape[0] // 16) * 16, -(-shape[1] // 32) * 32
    assert c.padded_shape == (n_pad, k_pad)
    assert c.values.shape == (n_pad, k_pad // 2) and c.values.dtype == np.dtype(dtype)
    assert c.metadata.shape == (n_pad // 16 * k_pad // 32 * 16,) and c.metadata.dtype == np.uint32
    assert c.nbytes == c.values.nbytes + c.metadata.nbytes
    assert c.dense_nbytes == p.nbytes
    assert np.array_equal(bits(c.decompress()), bits(p))


def test_compressed_values_layout():
    """Each group's two kept values, in column order, padding zero (docs/SPARSE24.md)."""
    rng = np.random.default_rng(5)
    p = sf.prune(random_matrix(rng, (21, 44), np.float32))
    v = sf.compress(p).values
    groups = p.reshape(21, 11, 4)
    kept = np.array([[g[g != 0] for g in row] for row in groups])  # every group has 2 nonzeros
    assert kept.shape == (21, 11, 2)
    assert np.array_equal(v[:21, :22], kept.reshape(21, 22))
    assert not v[21:, :].any() and not v[:, 22:].any()
    assert not v.flags.writeable


def test_views_outlive_the_object():
    rng = np.random.default_rng(9)
    p = sf.prune(random_matrix(rng, (16, 32), np.float16))
    c = sf.compress(p)
    values, meta = c.values, c.metadata
    expect_v, expect_m = values.copy(), meta.copy()
    del c
    assert np.array_equal(values, expect_v) and np.array_equal(meta, expect_m)


def test_compress_rejects_a_dense_matrix():
    w = np.arange(1, 33, dtype=np.float32).reshape(4, 8)
    w[:, :4] = [[1, 0, 0, 1]] * 4
    with pytest.raises(sf.SparseFlowError) as e:
        sf.compress(w)
    assert e.value.status == sf.Status.INVALID_ARGUMENT
    assert "row 0 group 1" in e.value.message and e.value.message.startswith("sf_sparse24_compress")


# ---- the CPU GEMM -------------------------------------------------------------------------------


def gelu(v):
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


ACTS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "gelu": gelu,
        "silu": lambda v: v / (1.0 + np.exp(-v))}


@pytest.mark.parametrize("m", [1, 2, 7, 33, 300])
@pytest.mark.parametrize("act", [None, "relu", "gelu", "silu"])
@pytest.mark.parametrize("x_dtype,out_dtype", [(np.float32, np.float32), (np.float16, np.float16),
                                               (np.float16, np.float32)])
def test_matmul_matches_fp64_reference(m, act, x_dtype, out_dtype):
    rng = np.random.default_rng(m * 31 + len(str(act)))
    n, k = 45, 136
    w = sf.prune(random_matrix(rng, (n, k), np.float16))
    x = random_matrix(rng, (m, k), x_dtype)
    bias = random_matrix(rng, (n,), np.float32)
    residual = random_matrix(rng, (m, n), np.float16)
    y = sf.compress(w).matmul(x, bias=bias, activation=act, residual=residual, out_dtype=out_dtype)
    assert y.shape == (m, n) and y.dtype == np.dtype(out_dtype)

    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    ref = ACTS[act](x64 @ w64.T + bias) + residual.astype(np.float64)
    # fp32 accumulation of K products errs by at most K * 2^-24 * sum |x w| (the activations are
    # 1.2-Lipschitz at most); fp32 activations add a few ulp; an fp16 output rounds to 2^-11.
    scale = np.abs(x64) @ np.abs(w64).T + np.abs(bias)
    tol = 1.2 * k * 2.0**-24 * scale + 4 * 2.0**-24 * np.abs(ref) + 1e-7
    if out_dtype == np.float16:
        tol = tol + 2.0**-11 * np.abs(ref)
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= tol), f"max excess {np.max(err - tol)} at {np.unravel_index(np.argmax(err - tol), err.shape)}"


def test_matmul_shapes():
    rng = np.random.default_rng(1)
    w = sf.prune(random_matrix(rng, (24, 64), np.float32))
    c = sf.compress(w)
    x = random_matrix(rng, (2, 3, 64), np.float32)
    y = c.matmul(x)
    assert y.shape == (2, 3, 24)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    assert c.matmul(x[0, 0]).shape == (24,)
    assert c.matmul(np.zeros((0, 64), np.float32)).shape == (0, 24)
    np.testing.assert_allclose(c.matmul(x[0].T.T), x[0] @ w.T, rtol=1e-5, atol=1e-5)


def test_matmul_errors():
    rng = np.random.default_rng(2)
    c = sf.compress(sf.prune(random_matrix(rng, (24, 64), np.float32)))
    x = np.ones((3, 64), np.float32)
    with pytest.raises(sf.SparseFlowError, match=r"expected \[\.\.\., 64\]"):
        c.matmul(np.ones((3, 60), np.float32))
    with pytest.raises(sf.SparseFlowError, match=r"bias has shape \(23,\)"):
        c.matmul(x, bias=np.ones(23, np.float32))
    with pytest.raises(sf.SparseFlowError, match=r"residual has shape"):
        c.matmul(x, residual=np.ones((3, 23), np.float32))
    with pytest.raises(sf.SparseFlowError, match="'relu', 'gelu' or 'silu'"):
        c.matmul(x, activation="tanh")
    with pytest.raises(sf.SparseFlowError, match="x has dtype F64") as e:  # from the C library
        c.matmul(x.astype(np.float64))
    assert e.value.status == sf.Status.INVALID_ARGUMENT
    with pytest.raises(sf.SparseFlowError, match="bias has dtype I32"):
        c.matmul(x, bias=np.ones(24, np.int32))


# ---- error messages from the C library ---------------------------------------------------------


def test_k_not_a_multiple_of_4():
    with pytest.raises(sf.SparseFlowError, match="multiple of 4") as e:
        sf.prune(np.ones((3, 10), np.float32))
    assert e.value.status == sf.Status.UNSUPPORTED_SHAPE
    assert e.value.message.startswith("sf_prune_24")
    for fn in (sf.is_24, sf.compress):
        with pytest.raises(sf.SparseFlowError, match="multiple of 4"):
            fn(np.ones((3, 10), np.float32))


def test_empty_matrix():
    with pytest.raises(sf.SparseFlowError) as e:
        sf.prune(np.ones((0, 8), np.float32))
    assert e.value.status == sf.Status.UNSUPPORTED_SHAPE


@pytest.mark.parametrize("dtype,name", [(np.float64, "F64"), (np.int32, "I32"), (np.uint8, "U8")])
def test_wrong_dtype(dtype, name):
    with pytest.raises(sf.SparseFlowError, match=f"has dtype {name}; expected F32, F16 or BF16") as e:
        sf.prune(np.ones((4, 8), dtype))
    assert e.value.status == sf.Status.INVALID_ARGUMENT
    assert f"[INVALID_ARGUMENT]" in str(e.value)


def test_dtype_without_a_sparseflow_type():
    with pytest.raises(sf.SparseFlowError, match="complex64"):
        sf.prune(np.ones((4, 8), np.complex64))


@pytest.mark.parametrize("shape", [(8,), (2, 4, 8), ()])
def test_not_2d(shape):
    for fn in (sf.prune, sf.is_24, sf.find_violation, sf.compress):
        with pytest.raises(sf.SparseFlowError, match="must be 2-D") as e:
            fn(np.ones(shape, np.float32))
        assert e.value.status == sf.Status.INVALID_ARGUMENT


# ---- bfloat16 through ml_dtypes (optional: numpy has no bfloat16) ------------------------------


def test_bfloat16_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 arrays need ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(4)
    w = random_matrix(rng, (40, 72), np.float32).astype(bf16)
    p = sf.prune(w)
    assert p.dtype == bf16
    assert np.array_equal(bits(p), bits(pruned_reference(w)))
    c = sf.compress(p)
    assert c.values.dtype == bf16
    assert np.array_equal(bits(c.decompress()), bits(p))
    x = random_matrix(rng, (5, 72), np.float32)
    y = c.matmul(x)
    ref = x.astype(np.float64) @ p.astype(np.float64).T
    assert np.max(np.abs(y - ref)) < 1e-4
