#!/usr/bin/env python3
"""SparseLinear against dense F.linear (cuBLAS) and torch's to_sparse_semi_structured, fp16, on a
GPU, in one process.

    SPARSEFLOW_LIBRARY_DIR=build PYTHONPATH=python python3 scripts/bench_torch_sparse_linear.py \
        --json bench/results/torch-sparse-linear.json

For each weight shape N x K (W is [N, K], y = x W^T) and batch M, every backend first has its
output checked against F.linear in fp32 on the same pruned weight, then is timed:

- `<backend>_ms`: GPU time per call. A block of --reps calls is enqueued while the GPU spins
  (torch.cuda._sleep), so host overhead is hidden, and timed with CUDA events; median over --iters
  blocks. This is the kernel comparison, like `sparseflow benchmark --device cuda`.
- `<backend>_eager_ms`: the same block without the spin: what an eager PyTorch loop gets, host
  overhead (Python, ctypes, the dispatcher) included where it exceeds the GPU time.

Weights are rotated over copies totalling >= 3x the L2 cache (and inputs over as many copies), so
every call reads its weight from HBM, as in decode. The JSON (--json) holds "gpu", "date",
"command" and per shape "n", "k" and "rows" with "m", "dense_ms", "sparseflow_ms": the GEMM
benchmark format that `sparseflow audit --from-benchmark` and data/measured/ read
(docs/DEPLOYMENT.md), plus the torch and eager columns.
"""

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "python") not in sys.path and not os.environ.get("SPARSEFLOW_TEST_INSTALLED"):
    sys.path.insert(0, str(REPO / "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import sparseflow  # noqa: E402
from sparseflow.torch import SparseLinear  # noqa: E402

# LLaMA-7B's decoder GEMMs (q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008: the shapes
# `sparseflow audit --model llama-7b` needs) and one larger square.
DEFAULT_SHAPES = "4096x4096,11008x4096,4096x11008,8192x8192"
DEFAULT_BATCHES = "1,8,16,64,256,2048"
BACKENDS = ("dense", "torch_semi_structured", "sparseflow")


def parse_shapes(text):
    out = []
    for s in text.split(","):
        n, k = s.lower().split("x")
        out.append((int(n), int(k)))
    return out


def sleep_cycles_per_ms():
    """GPU clock cycles per ms of torch.cuda._sleep, measured."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1000)
    start.record()
    torch.cuda._sleep(2_000_000)
    end.record()
    end.synchronize()
    return 2_000_000 / start.elapsed_time(end)


class Timer:
    def __init__(self, iters, reps, warmup):
        self.iters, self.reps, self.warmup = iters, reps, warmup
        self.cycles_per_ms = sleep_cycles_per_ms() if hasattr(torch.cuda, "_sleep") else None

    def time(self, call):
        """(gpu_ms, eager_ms, host_us) per call; call(i) runs the i-th rotated call."""
        for i in range(self.warmup):
            call(i)
        torch.cuda.synchronize()
        # Host time to enqueue one call, which sizes the spin that hides it.
        t0 = time.perf_counter()
        for i in range(self.reps):
            call(i)
        host_us = (time.perf_counter() - t0) / self.reps * 1e6
        torch.cuda.synchronize()
        out = []
        for spin in (True, False):
            if spin and self.cycles_per_ms is None:
                out.append(float("nan"))
                continue
            times = []
            for it in range(self.iters):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                if spin:  # the GPU waits while the host enqueues the whole block
                    torch.cuda._sleep(int(self.cycles_per_ms * (2 * host_us * self.reps / 1e3 + 0.05)))
                start.record()
                for r in range(self.reps):
                    call(it * self.reps + r)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / self.reps)
            out.append(statistics.median(times))
        return out[0], out[1], host_us


def rel_err(y, ref):
    y, ref = y.float(), ref.float()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def bench_shape(n, k, batches, timer, l2_bytes, use_torch_sparse, dtype=torch.float16):
    torch.manual_seed(n * 31 + k)
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=dtype)
    base = SparseLinear.from_dense(lin)
    w24 = base.dense_weight()  # [N, K], the pruned weight every backend multiplies by
    del lin
    dense_bytes = n * k * 2
    sparse_bytes = base.report.sparse_bytes
    copies = {
        "dense": max(2, math.ceil(3 * l2_bytes / dense_bytes)),
        "sparseflow": max(2, math.ceil(3 * l2_bytes / sparse_bytes)),
    }
    dense_w = [w24] + [w24.clone() for _ in range(copies["dense"] - 1)]
    sf_layers = [base] + [SparseLinear.from_dense(_as_linear(w24)) for _ in range(copies["sparseflow"] - 1)]

    info = {"n": n, "k": k, "dtype": "fp16", "dense_weight_bytes": dense_bytes,
            "sparse_weight_bytes": sparse_bytes, "weight_rel_error": base.report.weight_rel_error,
            "copies": dict(copies)}
    ss_w = None
    if use_torch_sparse:
        try:
            from torch.sparse import to_sparse_semi_structured
            first = to_sparse_semi_structured(w24)
            ss_bytes = sum(t.numel() * t.element_size() for t in _tensors_of(first)) or dense_bytes // 2
            copies["torch_semi_structured"] = max(2, math.ceil(3 * l2_bytes / ss_bytes))
            ss_w = [first] + [to_sparse_semi_structured(w24.clone())
                              for _ in range(copies["torch_semi_structured"] - 1)]
            info["torch_semi_structured_class"] = type(first).__name__
            info["copies"] = dict(copies)
        except Exception as e:  # unsupported GPU, dtype, shape or torch build
            info["torch_semi_structured_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    else:
        info["torch_semi_structured_error"] = "not run (--no-torch-sparse)"

    rows = []
    for m in batches:
        nx = max(copies.values())
        xs = [torch.randn(m, k, device="cuda", dtype=dtype) for _ in range(nx)]
        ref = F.linear(xs[0].float(), w24.float())
        row = {"m": m}
        fns = {
            "dense": lambda i: F.linear(xs[i % nx], dense_w[i % len(dense_w)]),
            "sparseflow": lambda i: sf_layers[i % len(sf_layers)](xs[i % nx]),
        }
        if ss_w is not None:
            fns["torch_semi_structured"] = lambda i: F.linear(xs[i % nx], ss_w[i % len(ss_w)])
        with torch.no_grad():
            for name in BACKENDS:
                if name not in fns:
                    continue
                try:
                    err = rel_err(fns[name](0), ref)
                except Exception as e:
                    row[f"{name}_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
                    continue
                row[f"{name}_rel_err"] = err
                if not err < 1e-2:  # fp16 output rounding is ~3e-4; a wrong result is O(1)
                    row[f"{name}_error"] = f"wrong result: relative error {err:.3g} against F.linear"
                    continue
                gpu_ms, eager_ms, host_us = timer.time(fns[name])
                row[f"{name}_ms"] = gpu_ms
                row[f"{name}_eager_ms"] = eager_ms
                row[f"{name}_host_us"] = host_us
        for name in ("sparseflow", "torch_semi_structured"):
            if f"{name}_ms" in row and "dense_ms" in row:
                row[f"{name}_speedup"] = row["dense_ms"] / row[f"{name}_ms"]
        rows.append(row)
    info["rows"] = rows
    for layer in sf_layers:
        layer.free()
    sparseflow.torch.release_workspaces()
    return info


def _as_linear(w):
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


def _tensors_of(t):
    names = getattr(t, "__tensor_flatten__", None)
    if names is None:
        return []
    return [getattr(t, a) for a in names()[0] if isinstance(getattr(t, a, None), torch.Tensor)]


def fmt_ms(row, name):
    v = row.get(f"{name}_ms")
    return "n/a" if v is None or v != v else f"{v:.4f}"


def fmt_x(row, name):
    v = row.get(f"{name}_speedup")
    return "n/a" if v is None else f"{v:.2f}x"


def markdown(result):
    out = [f"GPU: {result['gpu']}, torch {result['torch']}, SparseFlow {result['sparseflow']}, "
           f"{result['date']}. fp16, y = x W^T, W [N, K] pruned 2:4; times are ms per call "
           "(GPU time: median over blocks, host overhead hidden; 'eager' includes it)."]
    for s in result["results"]:
        out.append("")
        out.append(f"### N x K = {s['n']} x {s['k']} (dense {s['dense_weight_bytes'] / 2**20:.1f} MiB, "
                   f"SparseFlow 2:4 {s['sparse_weight_bytes'] / 2**20:.1f} MiB)")
        if "torch_semi_structured_error" in s:
            out.append(f"to_sparse_semi_structured unavailable: {s['torch_semi_structured_error']}")
        out.append("")
        out.append("| M | dense F.linear | torch semi-structured | SparseLinear | SparseLinear vs dense "
                   "| semi-structured vs dense | dense eager | SparseLinear eager |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in s["rows"]:
            eager = lambda n: "n/a" if f"{n}_eager_ms" not in r else f"{r[f'{n}_eager_ms']:.4f}"
            out.append(f"| {r['m']} | {fmt_ms(r, 'dense')} | {fmt_ms(r, 'torch_semi_structured')} | "
                       f"{fmt_ms(r, 'sparseflow')} | {fmt_x(r, 'sparseflow')} | "
                       f"{fmt_x(r, 'torch_semi_structured')} | {eager('dense')} | {eager('sparseflow')} |")
        for r in s["rows"]:
            for n in BACKENDS:
                if f"{n}_error" in r:
                    out.append(f"- M={r['m']}, {n}: {r[f'{n}_error']}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the results here (GEMM benchmark JSON)")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"NxK list (default {DEFAULT_SHAPES})")
    ap.add_argument("--batches", default=DEFAULT_BATCHES, help=f"M list (default {DEFAULT_BATCHES})")
    ap.add_argument("--iters", type=int, default=30, help="timed blocks per measurement (median)")
    ap.add_argument("--reps", type=int, default=10, help="calls per timed block")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-torch-sparse", action="store_true", help="skip to_sparse_semi_structured")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        sys.exit("bench_torch_sparse_linear: PyTorch sees no CUDA GPU; run it on the GPU machine")
    why = sparseflow.cuda_unavailable_reason()
    if why:
        sys.exit(f"bench_torch_sparse_linear: SparseFlow has no GPU path here: {why}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        sys.exit(f"bench_torch_sparse_linear: --json {args.json}: the directory does not exist")
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 0) or 50 * 2**20
    timer = Timer(args.iters, args.reps, args.warmup)
    result = {
        "gpu": props.name,
        "date": datetime.date.today().isoformat(),
        "command": "python3 scripts/bench_torch_sparse_linear.py " + " ".join(sys.argv[1:]),
        "tool": "scripts/bench_torch_sparse_linear.py",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sparseflow": sparseflow.native_version(),
        "l2_bytes": l2,
        "timing": (f"median over {args.iters} blocks of {args.reps} calls, CUDA events; weights "
                   "rotated over copies totalling >= 3x L2, inputs rotated; <backend>_ms with host "
                   "overhead hidden (GPU spin before each block), <backend>_eager_ms without"),
        "results": [],
    }
    batches = [int(b) for b in args.batches.split(",")]
    for n, k in parse_shapes(args.shapes):
        print(f"measuring {n} x {k} ...", file=sys.stderr, flush=True)
        result["results"].append(bench_shape(n, k, batches, timer, l2, not args.no_torch_sparse))
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
