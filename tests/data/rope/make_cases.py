#!/usr/bin/env python3
"""Writes cases.json: rotary inverse-frequency tables and rotated vectors as Hugging Face
transformers computes them (modeling_rope_utils.py: _compute_default_rope_parameters,
_compute_linear_scaling_rope_parameters, _compute_llama3_parameters, _compute_yarn_parameters;
LlamaRotaryEmbedding.forward and apply_rotary_pos_emb in modeling_llama.py), re-derived with numpy
alone so that the test data does not need torch.

Each step keeps HF's dtype: tensors are float32, a Python scalar meeting a float32 tensor is float32,
scalar-only arithmetic is Python float64, and `scalar / tensor` is torch's
`tensor.reciprocal() * scalar`. Run: python3 tests/data/rope/make_cases.py (numpy only; the output
is committed; tests/kernels_cpu/test_rope.cpp reads it).
"""
import json
import math
import os

import numpy as np

f32 = np.float32


def rdiv(scalar, t):  # torch: scalar / tensor == tensor.reciprocal() * scalar
    return (f32(1.0) / t) * f32(scalar)


def base_pow(theta, dim):  # theta ** (arange(0, dim, 2).float() / dim)
    e = np.arange(0, dim, 2, dtype=np.int64).astype(f32) / f32(dim)
    return np.power(f32(theta), e)


def default_inv_freq(theta, dim):
    return rdiv(1.0, base_pow(theta, dim))


def linear_inv_freq(theta, dim, factor):
    return default_inv_freq(theta, dim) / f32(factor)


def llama3_inv_freq(theta, dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    inv_freq = default_inv_freq(theta, dim)
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = rdiv(2 * math.pi, inv_freq)
    inv_freq_llama = np.where(wavelen > f32(low_freq_wavelen), inv_freq / f32(factor), inv_freq)
    smooth_factor = (rdiv(old_context_len, wavelen) - f32(low_freq_factor)) / f32(high_freq_factor - low_freq_factor)
    smoothed = (f32(1) - smooth_factor) * inv_freq_llama / f32(factor) + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < f32(high_freq_wavelen)) & ~(wavelen > f32(low_freq_wavelen))
    return np.where(is_medium, smoothed, inv_freq_llama).astype(f32)


def yarn_get_mscale(scale=1, mscale=1):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(theta, dim, factor, original_max, beta_fast, beta_slow, truncate):
    def find_correction_dim(num_rotations):
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = find_correction_dim(beta_fast), find_correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = base_pow(theta, dim)
    extrapolation = rdiv(1.0, pos_freqs)
    interpolation = rdiv(1.0, pos_freqs * f32(factor))
    ramp = np.clip((np.arange(dim // 2, dtype=f32) - f32(low)) / f32(high - low), f32(0), f32(1))
    extra_factor = f32(1) - ramp
    return (interpolation * (f32(1) - extra_factor) + extrapolation * extra_factor).astype(f32)


def rotate(x, heads, head_dim, pos, inv_freq, attention_factor):
    """LlamaRotaryEmbedding.forward + apply_rotary_pos_emb in fp32, partial rotary as GPT-NeoX / Phi."""
    rd = 2 * len(inv_freq)
    freqs = f32(pos) * inv_freq
    emb = np.concatenate([freqs, freqs])
    cos = np.cos(emb) * f32(attention_factor)
    sin = np.sin(emb) * f32(attention_factor)
    x = x.reshape(heads, head_dim)
    rot, rest = x[:, :rd], x[:, rd:]
    half = rd // 2
    rotated_half = np.concatenate([-rot[:, half:], rot[:, :half]], axis=1)
    out = rot * cos + rotated_half * sin
    return np.concatenate([out, rest], axis=1).reshape(-1).astype(f32)


def main():
    rng = np.random.default_rng(20261210)
    cases = []

    def add(name, theta, rotary_dims, scaling="none", factor=1.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_positions=0, beta_fast=32.0, beta_slow=1.0, attention_factor_in=0.0, truncate=True,
            head_dim=None):
        if scaling == "none":
            inv = default_inv_freq(theta, rotary_dims)
            af = 1.0
        elif scaling == "linear":
            inv = linear_inv_freq(theta, rotary_dims, factor)
            af = 1.0
        elif scaling == "llama3":
            inv = llama3_inv_freq(theta, rotary_dims, factor, low_freq_factor, high_freq_factor, original_max_positions)
            af = 1.0
        else:
            inv = yarn_inv_freq(theta, rotary_dims, factor, original_max_positions, beta_fast, beta_slow, truncate)
            af = attention_factor_in if attention_factor_in else yarn_get_mscale(factor)
        head_dim = head_dim or rotary_dims
        apply = []
        for pos in (1, 4000):
            heads = 1
            x = rng.standard_normal(heads * head_dim).astype(f32)
            out = rotate(x, heads, head_dim, pos, inv, af)
            apply.append({"heads": heads, "head_dim": head_dim, "pos": pos, "x": [float(v) for v in x],
                          "out": [float(v) for v in out]})
        cases.append({"name": name, "theta": theta, "rotary_dims": rotary_dims, "scaling": scaling, "factor": factor,
                      "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                      "original_max_positions": original_max_positions, "beta_fast": beta_fast,
                      "beta_slow": beta_slow, "attention_factor_in": attention_factor_in, "truncate": truncate,
                      "inv_freq": [float(v) for v in inv], "attention_factor": float(f32(af)), "apply": apply})

    add("llama2 (theta 1e4, 128)", 10000.0, 128)
    add("smollm2 (theta 1e5, 64)", 100000.0, 64)
    add("qwen2 (theta 1e6, 64)", 1000000.0, 64)
    add("head_dim 96", 10000.0, 96)
    add("head_dim 80", 10000.0, 80)
    add("partial 32 of 80", 10000.0, 32, head_dim=80)
    add("linear x4", 10000.0, 128, "linear", factor=4.0)
    add("linear x2.5", 10000.0, 64, "linear", factor=2.5)
    add("llama3.1 8B", 500000.0, 128, "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_positions=8192)
    add("llama3.2 1B", 500000.0, 64, "llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_positions=8192)
    add("yarn qwen2.5 x4", 1000000.0, 128, "yarn", factor=4.0, original_max_positions=32768)
    add("yarn x40 head 96", 10000.0, 96, "yarn", factor=40.0, original_max_positions=4096)
    add("yarn x32 untruncated, attention 1", 150000.0, 64, "yarn", factor=32.0, original_max_positions=4096,
        attention_factor_in=1.0, truncate=False)
    add("yarn partial 48 of 96, beta 16/2", 10000.0, 48, "yarn", factor=8.0, original_max_positions=2048,
        beta_fast=16.0, beta_slow=2.0, head_dim=96)

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.json")
    with open(path, "w") as f:  # one case per line
        f.write('{"generator": "tests/data/rope/make_cases.py", "cases": [\n')
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
