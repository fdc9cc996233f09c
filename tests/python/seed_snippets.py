#!/usr/bin/env python3
"""The first seed README's Python snippet, run exactly as written, then checked.

    pip install -e .                          # at the repository root, on a machine with a GPU
    python3 tests/python/seed_snippets.py     # from any directory

Prints one PASS / FAIL line per check and exits 0 when all pass, 1 when one fails, 77 (the
conventional "skipped" status) with a SKIP line saying why when PyTorch, a CUDA GPU or the
library's GPU layer is missing. Not collected by pytest (the name does not start with test_):
it needs a GPU, and it tests the installed package, not the tree's python/ with a build's library.

The checks, with y = sparse(x) and W24 = sparse.dense_weight() (the 2:4 weight the kernels use):
  - W24 keeps at most 2 of every 4 consecutive inputs, and the ones it keeps are the largest |w|
    of their group, unchanged (method="magnitude");
  - y matches x W24^T + b computed in float64 from the same fp16 inputs, within a bound derived
    from the arithmetic: half an fp16 ulp for rounding the output (2^-11 |y|), plus fp32
    accumulation over the K/2 kept products (n u / (1 - n u) * sum_k |x_k w_k|, u = 2^-24,
    Higham's bound for a sum of n terms), doubled for slack in the order of operations; plus
    2^-24, fp16's smallest subnormal, for outputs near zero;
  - the dense layer on the pruned weights (cuBLAS, F.linear in fp16) agrees with y within the sum
    of both bounds, so the 2:4 layer is a drop-in for it;
  - the same for batches of 2, 16 and 256 rows (other kernel paths than the snippet's one row).
The speed of both layers is printed for information; it is not a check.
"""

import sys
import textwrap

SKIP = 77

# The seed README's "Usage" block, verbatim (its comments included).
SEED_SNIPPET = textwrap.dedent('''\
    import torch
    from torch import nn
    import sparseflow as sf

    # Convert dense layer to sparse
    dense = nn.Linear(4096, 4096).cuda().half()
    sparse = sf.SparseLinear.from_dense(dense, method="magnitude")

    # 2\u00d7 faster inference
    x = torch.randn(1, 4096, device='cuda', dtype=torch.float16)
    y = sparse(x)  # Same accuracy, 2\u00d7 speed
    ''')

failures = []


def report(ok, what, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(what)


def skip(reason):
    print(f"SKIP: seed snippet: {reason}", flush=True)
    sys.exit(SKIP)


def check_magnitude_24(w, w24):
    """W24 is W pruned to 2:4 by magnitude along K (ties between equal |w| may go either way)."""
    import torch
    n, k = w.shape
    a = w.float().abs().reshape(n, k // 4, 4)
    kept = (w24 != 0).reshape(n, k // 4, 4)
    most = int(kept.sum(-1).max())
    report(most <= 2, "2:4 pattern", f"at most {most} nonzeros in any group of 4 along K")
    same = bool(torch.equal(torch.where(w24 != 0, w, torch.zeros_like(w)), w24))
    report(same, "kept weights are unchanged", "" if same else "some kept value differs from W")
    inf = torch.full_like(a, float("inf"))
    smallest_kept = torch.where(kept, a, inf).amin(-1)
    largest_dropped = torch.where(kept, torch.zeros_like(a), a).amax(-1)
    bad = int((smallest_kept < largest_dropped).sum())
    report(bad == 0, "magnitude pruning keeps the 2 largest |w| of each group",
           f"{bad} of {n * k // 4} groups keep a smaller |w| than one they drop")


def bound(x, w24, ref):
    """Per-element error bound for an fp16 output of x W24^T + b with fp32 accumulation."""
    import torch
    u16, u32 = 2.0 ** -11, 2.0 ** -24
    terms = w24.shape[1] // 2  # products that are not structurally zero
    gamma = terms * u32 / (1 - terms * u32)
    magnitude = x.double().abs() @ w24.double().abs().T  # sum_k |x_k w_k|
    return u16 * ref.abs() + 2 * gamma * magnitude + u32 * torch.ones_like(ref)


def check_output(name, x, y, w24, bias, dense_on_pruned):
    import torch
    ref = x.double() @ w24.double().T + bias.double()
    tol = bound(x, w24, ref)
    err = (y.double() - ref).abs()
    ratio = float((err / tol).max())
    rel = float(err.norm() / ref.norm())
    report(bool(torch.isfinite(y).all()) and ratio <= 1.0, f"{name}: y = x W24^T + b",
           f"max |error| / bound = {ratio:.3f}, relative Frobenius error {rel:.2e}, "
           f"max |error| {float(err.max()):.2e}")
    cublas_err = (dense_on_pruned.double() - y.double()).abs()
    cublas_tol = 2 * tol
    ratio = float((cublas_err / cublas_tol).max())
    report(ratio <= 1.0, f"{name}: agrees with the dense layer on the pruned weights (cuBLAS)",
           f"max |difference| / bound = {ratio:.3f}")


def time_ms(fn, x, iters=200):
    import torch
    for _ in range(10):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    try:
        import torch
    except ImportError as e:
        skip(f"PyTorch is not installed ({e})")
    if not torch.cuda.is_available():
        skip("no CUDA GPU is visible to PyTorch (torch.cuda.is_available() is False)")
    try:
        import sparseflow
        why = sparseflow.cuda_unavailable_reason()
    except Exception as e:  # the install is broken: that is a failure, not a skip
        report(False, "import sparseflow and load its library", f"{type(e).__name__}: {e}")
        return 1
    print(f"sparseflow {sparseflow.native_version()} from {sparseflow.library_path()}; "
          f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    if why:
        skip(f"the library cannot run its GPU kernels here: {why}")

    torch.manual_seed(0)
    scope = {}
    try:
        exec(compile(SEED_SNIPPET, "<seed README snippet>", "exec"), scope)
    except Exception as e:
        report(False, "the seed snippet runs as written", f"{type(e).__name__}: {e}")
        return 1
    dense, sparse, x, y = scope["dense"], scope["sparse"], scope["x"], scope["y"]
    ok = (tuple(y.shape) == (1, 4096) and y.dtype == torch.float16 and y.device.type == "cuda")
    report(ok, "the seed snippet runs as written",
           f"y is {tuple(y.shape)} {y.dtype} on {y.device}")
    if not ok:
        return 1

    F = torch.nn.functional
    with torch.no_grad():
        w, b = dense.weight.detach(), dense.bias.detach()
        w24 = sparse.dense_weight()
        report(w24.dtype == torch.float16 and tuple(w24.shape) == (4096, 4096),
               "the stored weight is fp16 4096 x 4096", f"{w24.dtype} {tuple(w24.shape)}")
        check_magnitude_24(w, w24)
        check_output("M = 1 (the snippet)", x, y, w24, b, F.linear(x, w24, b))
        for m in (2, 16, 256):
            xm = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
            check_output(f"M = {m}", xm, sparse(xm), w24, b, F.linear(xm, w24, b))
        unpruned = float((F.linear(x, w, b).double() - y.double()).norm() /
                         F.linear(x, w, b).double().norm())
        print(f"info: relative difference from the unpruned dense layer (what pruning costs on "
              f"random weights): {unpruned:.3f}", flush=True)
        t_dense, t_sparse = time_ms(dense, x), time_ms(sparse, x)
        print(f"info: M = 1 time, dense nn.Linear {t_dense * 1e3:.1f} us, SparseLinear "
              f"{t_sparse * 1e3:.1f} us ({t_dense / t_sparse:.2f}x); the CUDA-event mean of 200 "
              "calls, not a benchmark (sparseflow-benchmark is)", flush=True)

    if failures:
        print(f"FAIL: seed snippet: {len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    print("PASS: seed snippet: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
