#!/usr/bin/env python3
"""Prune a GGUF model to 2:4 with the reference implementations, for comparison with ours.

    peer-pruning.py sparsegpt|wanda|dense --gguf FILE --calibration TEXT --out DIR \
        [--sparseflow BIN] [--sparsegpt-repo DIR] [--wanda-repo DIR] [--eval-text TEXT]

Runs IST-DASLab's `sparsegpt` (llama.py's `llama_sequential` over their `SparseGPT` class) or
locuslab's `wanda` (lib/prune.py's `prune_wanda`) on the CPU, imported at run time from their
checkouts (never copied into this repository), on the calibration samples `sparseflow convert`
uses: the text tokenized with BOS first, cut to --calibration-tokens (4096, as convert), split into
windows of max_position_embeddings tokens, one sample per window. `dense` only exports the model.
The pruned model is saved to DIR as an HF checkpoint (safetensors, fp32, with the tokenizer), with
DIR/peer-pruning.json recording the settings, the time to prune, the 2:4 check and, with
--eval-text, HF's own perplexity on the windows `sparseflow eval` scores.

The reference code is run unmodified. Three things are patched around it, in this process only:
  * their data loaders (C4 / wikitext) give our calibration samples instead;
  * torch.cuda.synchronize, which sparsegpt.py calls unconditionally, is a no-op without CUDA;
  * a decoder layer called without rotary position embeddings (both repositories predate
    transformers passing them from the model) computes them from the model's own rotary_emb.
The first layer's output through that call is checked against the model's own forward.

Needs torch, transformers, gguf, accelerate and the two checkouts; without them it says what is
missing and exits 77 (skipped). scripts/peer-pruning runs it for both methods and evaluates.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import types

SKIP = 77


def skip(why):
    print(f"peer-pruning: skipped: {why}", file=sys.stderr)
    sys.exit(SKIP)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("method", choices=["sparsegpt", "wanda", "dense"])
    p.add_argument("--gguf", required=True, help="the dense GGUF checkpoint")
    p.add_argument("--calibration", help="calibration text file (not needed for dense)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--sparseflow", help="a built sparseflow: tokenize with our tokenizer (checked "
                   "against HF's); without it HF's tokenizer gives the ids")
    p.add_argument("--sparsegpt-repo", default="/work/peer/sparsegpt",
                   help="checkout of IST-DASLab/sparsegpt")
    p.add_argument("--wanda-repo", default="/work/peer/wanda", help="checkout of locuslab/wanda")
    p.add_argument("--calibration-tokens", type=int, default=4096,
                   help="at most this many calibration tokens (convert's default)")
    p.add_argument("--window", type=int, default=0,
                   help="tokens per calibration sample (0: max_position_embeddings, as convert)")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT dampening")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT block size")
    p.add_argument("--eval-text", help="also report HF's perplexity on this text")
    p.add_argument("--eval-context", type=int, default=2048,
                   help="eval window, as sparseflow eval's default")
    return p.parse_args()


def tokenize(text, tok, bos, sparseflow, gguf):
    hf = [bos] + tok(text, add_special_tokens=False).input_ids
    if not sparseflow:
        return hf, "hf"
    r = subprocess.run([sparseflow, "tokenize", "-m", gguf, "--text", text, "--json"],
                       capture_output=True, text=True, check=True)
    ours = json.loads(r.stdout)["ids"]
    if ours != hf:
        same = sum(a == b for a, b in zip(ours, hf))
        print(f"peer-pruning: warning: HF's tokenizer gives {len(hf)} ids, ours {len(ours)} "
              f"({same} agree position by position); using ours", file=sys.stderr)
        return ours, "sparseflow (HF differs)"
    return ours, "sparseflow (HF agrees)"


def patch_decoder_layer(model, torch):
    """Let a decoder layer be called as 2023-era code does: without position_embeddings."""
    cls = type(model.model.layers[0])
    forward = cls.forward
    rotary = model.model.rotary_emb

    def forward_with_positions(self, hidden_states, *a, position_ids=None,
                               position_embeddings=None, **kw):
        if position_embeddings is None:
            if position_ids is None:
                position_ids = torch.arange(hidden_states.shape[1]).unsqueeze(0)
            position_embeddings = rotary(hidden_states, position_ids)
        return forward(self, hidden_states, *a, position_ids=position_ids,
                       position_embeddings=position_embeddings, **kw)

    cls.forward = forward_with_positions


def check_layer_call(model, sample, torch):
    """The reference's way of running layer 0 alone must reproduce the model's own forward."""
    with torch.no_grad():
        full = model(sample, output_hidden_states=True).hidden_states
        x = model.model.embed_tokens(sample)
        y = model.model.layers[0](x, attention_mask=None)
        y = y[0] if isinstance(y, tuple) else y
    err = (y - full[1]).abs().max().item() / full[1].abs().max().item()
    if err > 1e-4:
        sys.exit(f"peer-pruning: layer 0 called alone differs from the model's forward by {err:.2e} "
                 "(relative max); the causal mask or positions are not what the model uses")
    return err


def run_sparsegpt(model, samples, a, torch):
    sys.path.insert(0, a.sparsegpt_repo)
    import llama  # IST-DASLab: llama.py, which imports their sparsegpt.py, modelutils.py, quant.py
    llama.args = argparse.Namespace(  # llama.py's argparse defaults, with the 2:4 settings
        nsamples=len(samples), sparsity=0.5, prunen=2, prunem=4, percdamp=a.percdamp,
        blocksize=a.blocksize, wbits=16, minlayer=-1, maxlayer=1000, prune_only="",
        invert=False, true_sequential=False)
    dataloader = [(s, s.clone()) for s in samples]
    t0 = time.time()
    llama.llama_sequential(model, dataloader, torch.device("cpu"))
    return time.time() - t0


def run_wanda(model, tok, samples, a, torch):
    sys.path.insert(0, a.wanda_repo)
    try:
        import datasets  # noqa: F401  (lib/data.py imports it; the samples come from us)
    except ImportError:
        sys.modules["datasets"] = types.SimpleNamespace(load_dataset=None)
    import lib.prune as wanda_prune
    dataloader = [(s, s.clone()) for s in samples]
    wanda_prune.get_loaders = lambda *args, **kw: (dataloader, None)
    if not hasattr(model, "hf_device_map"):
        model.hf_device_map = {}
    args = argparse.Namespace(nsamples=len(samples), seed=0, sparsity_ratio=0.5,
                              use_variant=False, sparsity_type="2:4")
    t0 = time.time()
    wanda_prune.prune_wanda(args, model, tok, torch.device("cpu"), prune_n=2, prune_m=4)
    return time.time() - t0


def check_24(model, torch):
    """Groups of 4 along the input dimension with more than 2 nonzeros, over the decoder linears."""
    bad = groups = zeros = total = 0
    for name, mod in model.model.layers.named_modules():
        if isinstance(mod, torch.nn.Linear):
            w = mod.weight.data
            nz = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
            bad += int((nz > 2).sum())
            groups += nz.numel()
            zeros += int((w == 0).sum())
            total += w.numel()
    return {"groups": groups, "groups_over_2_nonzeros": bad, "zero_fraction": zeros / total}


def hf_perplexity(model, ids, context, torch):
    """Non-overlapping windows from an empty cache, each window's first token context only."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), context):
            w = torch.tensor([ids[s:s + context]])
            if w.shape[1] < 2:
                continue
            logp = torch.log_softmax(model(w).logits[0, :-1].double(), -1)
            nll -= logp.gather(1, w[0, 1:, None]).sum().item()
            n += w.shape[1] - 1
    return math.exp(nll / n), n


def main():
    a = parse_args()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import gguf  # noqa: F401  (transformers reads GGUF through it)
        import accelerate  # noqa: F401  (transformers needs it for GGUF)
    except ImportError as e:
        skip(f"{e.name} is not installed (needs torch, transformers, gguf, accelerate)")
    repo = {"sparsegpt": a.sparsegpt_repo, "wanda": a.wanda_repo}.get(a.method)
    marker = {"sparsegpt": "sparsegpt.py", "wanda": os.path.join("lib", "prune.py")}.get(a.method)
    if repo and not os.path.isfile(os.path.join(repo, marker)):
        skip(f"no {marker} under {repo}; give the reference checkout with --{a.method}-repo")
    if a.method != "dense" and not a.calibration:
        sys.exit("peer-pruning: --calibration TEXT is needed for sparsegpt and wanda")
    if os.path.exists(a.out):
        sys.exit(f"peer-pruning: {a.out} exists; give a new directory")
    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *args, **kw: None

    d, g = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=g)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=g, dtype=torch.float32)
    model.eval()
    model.config.use_cache = False
    bos = model.config.bos_token_id
    report = {"method": a.method, "gguf": a.gguf, "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": torch.get_num_threads()}

    if a.method != "dense":
        text = open(a.calibration, encoding="utf-8").read()
        ids, source = tokenize(text, tok, bos, a.sparseflow, a.gguf)
        ids = ids[:a.calibration_tokens]
        window = a.window or model.config.max_position_embeddings
        samples = [torch.tensor([ids[s:s + window]]) for s in range(0, len(ids), window)]
        if len({s.shape[1] for s in samples}) != 1:
            sys.exit(f"peer-pruning: {len(ids)} tokens in windows of {window} leave a shorter last "
                     "window, which the reference code (one [nsamples, seqlen] buffer) cannot take; "
                     "use --calibration-tokens a multiple of the window")
        model.seqlen = samples[0].shape[1]
        patch_decoder_layer(model, torch)
        report.update(calibration=a.calibration, calibration_tokens=len(ids), token_ids=source,
                      samples=len(samples), sample_tokens=model.seqlen,
                      layer_call_relative_error=check_layer_call(model, samples[0], torch))
        if a.method == "sparsegpt":
            report.update(percdamp=a.percdamp, blocksize=a.blocksize, prunen=2, prunem=4)
            secs = run_sparsegpt(model, samples, a, torch)
        else:
            report.update(prune_n=2, prune_m=4)
            secs = run_wanda(model, tok, samples, a, torch)
        report["prune_seconds"] = secs
        report["check_24"] = check_24(model, torch)
    if a.eval_text:
        text = open(a.eval_text, encoding="utf-8").read()
        eval_ids, _ = tokenize(text, tok, bos, a.sparseflow, a.gguf)
        ppl, n = hf_perplexity(model, eval_ids, a.eval_context, torch)
        report.update(eval_text=a.eval_text, hf_perplexity=ppl, hf_positions=n)

    model.config.use_cache = True
    # The weights are dequantized fp32 tensors by now; the GGUF "quantizer" only blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(a.out, safe_serialization=True)
    # sparseflow reads GGUF ids BOS first; transformers' GGUF tokenizer adds none by default. Save
    # one that adds BOS, so that the export tokenizes as the GGUF does in sparseflow.
    tok.add_bos_token = True
    tok.save_pretrained(a.out)
    with open(os.path.join(a.out, "peer-pruning.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
