#!/usr/bin/env python3
"""Write an f16 GGUF file of a model's shape with random weights, for llama.cpp's llama-bench.

The shape comes from an HF config.json, or from the "config" of `sparseflow inspect --json`, so
llama.cpp runs the same shape as a `sparseflow synth --arch NAME` model:

    sparseflow inspect --json --no-verify llama-2-7b.sf > shape.json
    PYTHONPATH=llama.cpp/gguf-py scripts/make_gguf_shape.py --config shape.json --output l2-7b.gguf

Weights are normal with standard deviation 0.02 (a 4 Mi-element block repeated: llama.cpp's speed
does not depend on the values), norms 1. The tokenizer is a SentencePiece-style vocabulary of the
model's size (the 256 byte tokens, then placeholders), enough for llama-bench, which feeds token
ids. Streams one tensor at a time; writes to OUTPUT.tmp and renames when complete.
"""

import argparse
import json
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("error: the gguf package is missing; put llama.cpp's gguf-py on PYTHONPATH "
             "(PYTHONPATH=path/to/llama.cpp/gguf-py)")

ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}


def tensors(c):
    """(name, shape (out, in) or (n,), is_norm) of every tensor, in llama.cpp's names."""
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    hd = c.get("head_dim") or h // heads
    bias = c["model_type"] == "qwen2"
    out = [("token_embd.weight", (v, h), False)]
    for i in range(c["num_hidden_layers"]):
        b = f"blk.{i}."
        out.append((b + "attn_norm.weight", (h,), True))
        for n, rows in (("attn_q", heads * hd), ("attn_k", kv * hd), ("attn_v", kv * hd)):
            out.append((b + n + ".weight", (rows, h), False))
            if bias:
                out.append((b + n + ".bias", (rows,), True))
        out.append((b + "attn_output.weight", (h, heads * hd), False))
        out.append((b + "ffn_norm.weight", (h,), True))
        out.append((b + "ffn_gate.weight", (f, h), False))
        out.append((b + "ffn_up.weight", (f, h), False))
        out.append((b + "ffn_down.weight", (h, f), False))
    out.append(("output_norm.weight", (h,), True))
    if not c.get("tie_word_embeddings", False):
        out.append(("output.weight", (v, h), False))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="config.json, or `sparseflow inspect --json` output")
    ap.add_argument("--output", required=True)
    ap.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    a = ap.parse_args()
    with open(a.config) as fh:
        c = json.load(fh)
    c = c.get("config", c)
    if c.get("model_type") not in ARCH:
        sys.exit(f"error: model_type {c.get('model_type')!r}: expected one of {sorted(ARCH)}")
    if os.path.exists(a.output) and not a.force:
        sys.exit(f"error: {a.output} exists; pass --force to replace it")
    arch = ARCH[c["model_type"]]
    h, heads = c["hidden_size"], c["num_attention_heads"]
    hd = c.get("head_dim") or h // heads
    tmp = a.output + ".tmp"
    try:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_name(f"random {c['model_type']} of hidden {h}, {c['num_hidden_layers']} layers")
        w.add_context_length(int(c["max_position_embeddings"]))
        w.add_embedding_length(h)
        w.add_block_count(c["num_hidden_layers"])
        w.add_feed_forward_length(c["intermediate_size"])
        w.add_head_count(heads)
        w.add_head_count_kv(c.get("num_key_value_heads") or heads)
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_rope_dimension_count(hd)
        w.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
        w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
        w.add_vocab_size(c["vocab_size"])
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        v = c["vocab_size"]
        toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
        toks += [f"\u2581t{i}" for i in range(v - len(toks))]
        types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
        types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (v - 259)
        w.add_tokenizer_model("llama")
        w.add_token_list(toks)
        w.add_token_scores([0.0] * 259 + [-float(i) for i in range(v - 259)])
        w.add_token_types(types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        plan = tensors(c)
        for name, shape, is_norm in plan:
            n = int(np.prod(shape))
            dt = np.float32 if is_norm else np.float16
            w.add_tensor_info(name, shape, np.dtype(dt), n * np.dtype(dt).itemsize)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        block = (np.random.default_rng(0).standard_normal(1 << 22, dtype=np.float32) * 0.02).astype(np.float16)
        for name, shape, is_norm in plan:
            n = int(np.prod(shape))
            if is_norm:
                t = np.ones(shape, np.float32) if name.endswith(".weight") else np.zeros(shape, np.float32)
            else:
                t = np.resize(block, n).reshape(shape)
            w.write_tensor_data(t)
        w.close()
        os.replace(tmp, a.output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f"wrote {a.output}: {len(plan)} tensors, {os.path.getsize(a.output) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
