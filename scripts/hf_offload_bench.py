#!/usr/bin/env python3
"""HF transformers + accelerate offloaded generate(): the outside reference of scripts/gpu-offload-check.
A random-weight OPT of real shape, fp16, with accelerate's device_map under a GPU budget (max_memory):
whole decoder layers on the GPU while they fit, the rest in CPU memory, moved to the GPU by
accelerate's hooks at every forward (what `device_map="auto"` with `max_memory` does). Greedy,
batch 1, exactly --new-tokens new tokens.

  python3 scripts/hf_offload_bench.py --arch opt-6.7b --gpu-memory-gib 6.6 --new-tokens 8 --json out.json

Decode tokens/s = (new - 1) / (time of generate(new) - time of generate(1)).
"""
import argparse
import json
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

SHAPES = {  # hidden, layers, heads, ffn (published OPT configs)
    "opt-125m": (768, 12, 12, 3072),
    "opt-1.3b": (2048, 24, 32, 8192),
    "opt-6.7b": (4096, 32, 32, 16384),
    "opt-13b": (5120, 40, 40, 20480),
    "opt-30b": (7168, 48, 56, 28672),
}


def build_random(cfg):
    """The model in CPU memory with random fp16 weights. PyTorch's own initialisation of 6.7B fp16
    parameters on the CPU took 300 s on the H200 machine (2026-12-03); here the modules are built on the
    meta device (no memory, no init), given CPU storage, and filled from the GPU's generator in chunks
    (layer norms: weight 1, bias 0). Falls back to the plain constructor if that path fails."""
    try:
        with torch.device("meta"):
            model = OPTForCausalLM(cfg).to(torch.float16)
        model = model.to_empty(device="cpu")
        gen = torch.Generator(device="cuda").manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layer_norm" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                    continue
                flat = p.view(-1)
                step = 1 << 26
                for i in range(0, flat.numel(), step):
                    n = min(step, flat.numel() - i)
                    flat[i:i + n].copy_(torch.randn(n, device="cuda", dtype=torch.float16, generator=gen).mul_(0.02))
            for name, b in model.named_buffers():
                b.zero_()
        model.tie_weights()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return model.eval()
    except Exception as e:  # noqa: BLE001 - any failure of the fast path: the slow, plain one
        print(f"fast random init failed ({e}); using the constructor's own initialisation")
        torch.set_default_dtype(torch.float16)
        model = OPTForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
        return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="opt-6.7b", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (0: the arch's)")
    ap.add_argument("--gpu-memory-gib", type=float, required=True)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    r = {"engine": "hf-accelerate", "arch": a.arch, "gpu_memory_gib": a.gpu_memory_gib}
    try:
        import accelerate
        from accelerate import dispatch_model, infer_auto_device_map
    except ImportError as e:
        r["error"] = f"accelerate is not installed here ({e})"
        print(json.dumps(r))
        if a.json:
            json.dump(r, open(a.json, "w"), indent=2)
        return
    h, layers, heads, ffn = SHAPES[a.arch]
    if a.layers:
        layers = a.layers
    cfg = OPTConfig(vocab_size=50272, hidden_size=h, num_hidden_layers=layers, ffn_dim=ffn,
                    num_attention_heads=heads, max_position_embeddings=2048, word_embed_proj_dim=h,
                    do_layer_norm_before=True)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_random(cfg)
    params = sum(p.numel() for p in model.parameters())
    dm = infer_auto_device_map(model, max_memory={0: int(a.gpu_memory_gib * 2**30), "cpu": 2**40},
                               no_split_module_classes=["OPTDecoderLayer"], dtype=torch.float16)
    model = dispatch_model(model, device_map=dm)
    init_s = time.perf_counter() - t0
    on_gpu = sum(1 for k, v in dm.items() if v == 0 and ".layers." in k)
    ids = torch.randint(4, cfg.vocab_size, (1, a.prompt_tokens), device="cuda")
    ids[:, 0] = 2

    def gen(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    with torch.inference_mode():
        gen(2)  # warm-up
        t1 = gen(1)
        tn = gen(a.new_tokens)
    r.update({"accelerate": accelerate.__version__, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
              "layers": layers, "parameters": params, "model_bytes": 2 * params, "init_s": init_s,
              "decoder_layers_on_gpu": on_gpu, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
              "decode_tokens_per_s": (a.new_tokens - 1) / (tn - t1) if tn > t1 else 0.0,
              "peak_memory_bytes": torch.cuda.max_memory_allocated()})
    print(json.dumps(r))
    if a.json:
        json.dump(r, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
