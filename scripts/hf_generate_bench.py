#!/usr/bin/env python3
"""HF transformers' generate() on a random-weight OPT of real shape, fp16, all on one GPU: the
baseline scripts/gpu-model-check prints beside SparseFlow. Greedy, batch 1 by default, exactly
--new-tokens new tokens (min_new_tokens = max_new_tokens, so EOS never stops it early).

  python3 scripts/hf_generate_bench.py --arch opt-6.7b --prompt-tokens 128 --new-tokens 256 --json out.json

Decode tokens/s = (new_tokens - 1) / (time of the full generate - time of a 1-token generate),
i.e. the prefill and first token are taken out, as SparseFlow's benchmark reports them.
The HBM limit is counted like SparseFlow's: 2 bytes per parameter read once per step plus the KV
cache at the mean length, over a device-to-device copy bandwidth measured here (read + written).
"""
import argparse
import json
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

SHAPES = {  # hidden, layers, heads, ffn (published OPT configs)
    "opt-125m": (768, 12, 12, 3072),
    "opt-1.3b": (2048, 24, 32, 8192),
    "opt-2.7b": (2560, 32, 32, 10240),
    "opt-6.7b": (4096, 32, 32, 16384),
    "opt-13b": (5120, 40, 40, 20480),
}


def copy_bandwidth(nbytes=1 << 30):
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(10):
        b.copy_(a)
    e1.record()
    torch.cuda.synchronize()
    return 2 * nbytes * 10 / (e0.elapsed_time(e1) * 1e-3)


def timed_generate(model, ids, n):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="opt-6.7b", choices=sorted(SHAPES))
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()
    h, layers, heads, ffn = SHAPES[a.arch]
    cfg = OPTConfig(vocab_size=50272, hidden_size=h, num_hidden_layers=layers, ffn_dim=ffn,
                    num_attention_heads=heads, max_position_embeddings=2048, word_embed_proj_dim=h,
                    do_layer_norm_before=True)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = OPTForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.half().eval()
    init_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(4, cfg.vocab_size, (a.batch, a.prompt_tokens), device="cuda")
    ids[:, 0] = 2
    bw = copy_bandwidth()
    with torch.inference_mode():
        timed_generate(model, ids, 4)  # warm-up
        t1, _ = timed_generate(model, ids, 1)
        tn, out = timed_generate(model, ids, a.new_tokens)
    steps = a.new_tokens - 1
    decode_s = tn - t1
    kv = 2 * layers * a.batch * (a.prompt_tokens + a.new_tokens // 2) * h * 2
    limit_ms = (2 * params + kv) / bw * 1e3
    ms_step = decode_s / steps * 1e3
    r = {
        "engine": "hf-transformers", "arch": a.arch, "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "batch": a.batch, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
        "parameters": params, "init_s": init_s, "copy_bandwidth_GBps": bw / 1e9,
        "prefill_ms": t1 * 1e3, "prefill_tokens_per_s": a.batch * a.prompt_tokens / t1,
        "ms_per_step": ms_step, "decode_tokens_per_s": a.batch * steps / decode_s,
        "hbm_limit_ms_per_step": limit_ms, "hbm_fraction": limit_ms / ms_step,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "first_ids": out[0, a.prompt_tokens:a.prompt_tokens + 8].tolist(),
    }
    print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
