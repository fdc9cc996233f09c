"""Text generation with SparseFlow: `python -m sparseflow.examples.demo_generation [--model PATH]`.

Without --model it runs the built-in default model, the tiny OPT of `sparseflow synth --arch tiny`
(random weights, so the text is noise; written once into ~/.cache/sparseflow). With a usable GPU
the model runs offloaded under the strategy below, and the offload statistics are printed; on a
machine without one it runs on the CPU and says so.

The tiny model is smaller than the GPU memory the offloaded engine needs for its fixed part, so
its budget defaults to 1GiB, where the whole model is resident: to see neurons move, give a real
model (calibrated with `sparseflow calibrate`) and a budget below its size, e.g.
`--model opt-6.7b.sf --gpu-memory 50%`. A gated model (Llama, Mistral, Qwen2) under a budget below
its size streams whole layers from host memory instead: activation sparsity for SwiGLU is a later
step.
"""

import argparse
import json
import os
import sys
import time

import sparseflow
from sparseflow import OffloadStrategy, SparseFlowConfig


def _hf_config(path):
    """The model's Hugging Face config: config.json of a checkpoint directory, or for a .sf or
    GGUF file the shape it reports (read with a CPU session) under its family's field names;
    fields the session does not report (rope_theta, norm eps, ...) take their defaults."""
    cfg = os.path.join(path, "config.json")
    if os.path.isdir(path) and os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as f:
            return json.load(f)
    with sparseflow.Model(path, device="cpu") as probe:
        i = probe.info
    ids = {k: (i[k] if i[k] >= 0 else None) for k in ("bos_token_id", "eos_token_id")}
    if i["architecture"] == "gpt2":
        return {"model_type": "gpt2", "n_layer": i["layers"], "n_embd": i["hidden"],
                "n_inner": i["ffn"], "n_head": i["heads"], "vocab_size": i["vocab"],
                "n_positions": i["max_positions"], **ids}
    d = {"model_type": i["architecture"], "num_hidden_layers": i["layers"],
         "hidden_size": i["hidden"], "num_attention_heads": i["heads"], "vocab_size": i["vocab"],
         "max_position_embeddings": i["max_positions"], **ids}
    if i["architecture"] == "opt":
        d["ffn_dim"] = i["ffn"]
    else:  # llama, mistral, qwen2
        d.update(intermediate_size=i["ffn"], num_key_value_heads=i["kv_heads"],
                 head_dim=i["head_dim"])
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m sparseflow.examples.demo_generation",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a .sf file, a GGUF file or an HF checkpoint directory (OPT, "
                    "Llama, Mistral, Qwen2, GPT-2; default: the built-in tiny model)")
    ap.add_argument("--prompt", default="Sparse models are", help="prompt text")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--gpu-memory", help="offloading budget: 6GiB, 50%%, 0.5 (default: 1GiB for the "
                    "built-in model, 50%% otherwise)")
    ap.add_argument("--predictor", choices=["model", "exact"], help="model: the predictors "
                    "calibrated into the .sf file; exact: the oracle (default for the built-in "
                    "model, which has none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    builtin = args.model is None
    path = sparseflow.builtin_model_path() if builtin else args.model
    if builtin:
        print(f"model: the built-in tiny OPT (random weights, not a trained model) at {path}")
    strategy = OffloadStrategy(
        gpu_cache_ratio=0.3,    # 30% of the FFN's GPU budget is an LRU neuron cache
        use_lru_eviction=True,  # the rest pins the hottest neurons
        async_transfer=True,    # fetches overlap attention (the engine's only mode)
        gpu_memory=args.gpu_memory or ("1GiB" if builtin else "50%"),
        predictor=args.predictor or ("exact" if builtin else "model"),
        collect_stats=True)
    config = SparseFlowConfig.from_transformers_config(_hf_config(path), strategy)
    print(f"config: {config}")

    t0 = time.perf_counter()
    with sparseflow.Model(path, config=config, device=args.device) as model:
        open_s = time.perf_counter() - t0
        info = model.info
        where = f"{info['device']}, offloaded" if info["offloaded"] else info["device"]
        print(f"opened in {open_s:.2f} s on {where}: {info['layers']} layers, hidden "
              f"{info['hidden']}, vocab {info['vocab']}, {info['weights']} weights, "
              f"{info['memory']['weight_bytes'] / 2**20:.1f} MiB of weights")
        print("---")
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
        for piece in model.stream(args.prompt, max_new_tokens=args.max_new_tokens, seed=args.seed):
            sys.stdout.write(piece)
            sys.stdout.flush()
        print("\n---")
        r = model.last_result
        print(f"prefill: {len(r['prompt_ids'])} tokens in {r['prefill_ms']:.1f} ms; decode: "
              f"{r['decode_steps']} tokens at {r['decode_tokens_per_s']:.1f} tokens/s; stopped by "
              f"{r['stopped_by']}")
        stats = model.offload_stats()
        if stats is not None:
            print(f"offload stats: {json.dumps(stats)}")
        elif info["offloaded"]:  # a gated model: whole layers streamed, no neuron counters
            print("offload stats: none (whole-layer streaming has no neuron counters)")
        else:
            print("offload stats: none (not offloaded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
