#!/usr/bin/env python3
"""Writes the GGUF fixtures of tests/format/test_gguf.cpp and the GGUF seeds of the fuzzer, with
gguf-py (PyPI `gguf`, which llama.cpp's converters use) and numpy:

    python3 tests/data/gguf/make_fixtures.py [--smollm2 PATH/SmolLM2-135M-Instruct.Q4_1.gguf]

tests/data/gguf/
  types.gguf         one tensor of each type SparseFlow reads, random raw blocks (every bit pattern
                     of the packed integers, random finite fp16 scales), so every code path runs
  types.dequant.bin  gguf.quants.dequantize of each tensor, fp32 little-endian, in tensor order
  metadata.gguf      a key of every value type and an array of each, edge values, alignment 64
  big_endian.gguf    a small file written big-endian (which SparseFlow refuses, by name)
  fixtures.json      what the test expects: each tensor's type, dims and place in the .bin; each
                     metadata key's type and value
  smollm2_probe.json (with --smollm2) a few dequantized values of the real SmolLM2 file
fuzz/corpus/fuzz_gguf/: small valid and damaged GGUF files.

The outputs are deterministic (fixed seeds). Rerun after changing this script and commit them.
"""

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFEndian, GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SEEDS = REPO / "fuzz" / "corpus" / "fuzz_gguf"

# Byte offsets of the fp16 scales inside each block: everything else is random packed integers.
SCALES = {
    T.Q8_0: [0],
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
# ne[0] (row length) and rows of each tensor: a few blocks per row, an odd row count.
SHAPES = {
    T.F32: (37, 3), T.F16: (37, 3), T.BF16: (37, 3),
    T.Q8_0: (160, 3), T.Q4_0: (160, 3), T.Q4_1: (160, 3),
    T.Q4_K: (512, 3), T.Q5_K: (512, 3), T.Q6_K: (512, 3),
}


def finite_fp16(rng, n):
    """Random finite fp16 bit patterns (normal, subnormal, zero, either sign), plus 0 and +-1."""
    bits = rng.integers(0, 1 << 16, size=n, dtype=np.uint32).astype(np.uint16)
    bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits)  # Inf/NaN -> subnormal
    bits[: min(n, 3)] = [0x0000, 0x3C00, 0xBC00][: min(n, 3)]
    return bits


def raw_tensor(rng, qtype):
    ne0, rows = SHAPES[qtype]
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    n_blocks = ne0 // block * rows
    data = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint32).astype(np.uint8)
    if qtype == T.F16:  # values: any finite half, plus the infinities (NaN payloads may change)
        h = finite_fp16(rng, n_blocks)
        h[3:5] = [0x7C00, 0xFC00]
        data = h.view(np.uint8).reshape(n_blocks, 2)
    elif qtype == T.F32:  # any bit pattern, a signalling NaN, -Inf, a subnormal: copied as is
        data[:3] = np.array([0x7FA00001, 0xFF800000, 0x00000001], dtype="<u4").view(np.uint8).reshape(3, 4)
    elif qtype == T.BF16:  # likewise: widening a bf16 is a shift, exact for every pattern
        data[:3] = np.array([0x7F81, 0xFF80, 0x0001], dtype="<u2").view(np.uint8).reshape(3, 2)
    for off in SCALES.get(qtype, []):
        data[:, off:off + 2] = finite_fp16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return data.reshape(rows, ne0 // block * block_bytes)


def write_types(out: Path, bin_out: Path):
    rng = np.random.default_rng(20240607)
    w = GGUFWriter(str(out), "test")
    w.add_string("test.what", "one tensor of each GGUF type SparseFlow reads")
    entries, refs, at = [], [], 0
    for qtype in SHAPES:
        raw = raw_tensor(rng, qtype)
        name = f"t.{qtype.name}"
        w.add_tensor(name, raw, raw_dtype=qtype)
        ref = dequantize(raw, qtype).astype(np.float32, copy=False).reshape(-1)
        ne0, rows = SHAPES[qtype]
        assert ref.size == ne0 * rows
        entries.append({"name": name, "type": qtype.name, "type_id": int(qtype), "dims": [ne0, rows],
                        "ref_offset": at, "numel": int(ref.size)})
        refs.append(ref)
        at += ref.size
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    np.concatenate(refs).astype("<f4").tofile(bin_out)
    return entries


def write_metadata(out: Path):
    """A key of every value type (edge values), an array of each, and general.alignment 64."""
    V = GGUFValueType
    scalars = [
        ("v.u8", V.UINT8, 255), ("v.i8", V.INT8, -128), ("v.u16", V.UINT16, 65535),
        ("v.i16", V.INT16, -32768), ("v.u32", V.UINT32, 4294967295), ("v.i32", V.INT32, -2147483648),
        ("v.f32", V.FLOAT32, -0.15625), ("v.bool.true", V.BOOL, True), ("v.bool.false", V.BOOL, False),
        ("v.string", V.STRING, "llama \u00e9\u4e2d \U0001F600"), ("v.string.empty", V.STRING, ""),
        ("v.u64", V.UINT64, 9223372036854775807), ("v.u64.max", V.UINT64, 18446744073709551615),
        ("v.i64", V.INT64, -9223372036854775808), ("v.f64", V.FLOAT64, 1e-300),
    ]
    arrays = [
        ("a.u8", V.UINT8, [0, 1, 255]), ("a.i8", V.INT8, [-128, 0, 127]),
        ("a.u16", V.UINT16, [0, 65535]), ("a.i16", V.INT16, [-32768, 32767]),
        ("a.u32", V.UINT32, [4294967295, 7]), ("a.i32", V.INT32, [-2147483648, 2147483647, 0]),
        ("a.f32", V.FLOAT32, [1.5, -2.25, 3.0e38]), ("a.bool", V.BOOL, [True, False, True]),
        ("a.string", V.STRING, ["<s>", "", "\u0120the", "\u00e9\u00e8"]),
        ("a.u64", V.UINT64, [0, 9223372036854775807]),
        ("a.i64", V.INT64, [-9223372036854775808, 9223372036854775807]),
        ("a.f64", V.FLOAT64, [1e300, -1e-300, 0.1]),
    ]
    w = GGUFWriter(str(out), "test")
    w.add_custom_alignment(64)
    expected = {"general.architecture": {"type": "string", "value": "test"},
                "general.alignment": {"type": "uint32", "value": 64}}
    for key, vt, val in scalars:
        w.add_key_value(key, val, vt)
        expected[key] = {"type": vt.name.lower(), "value": val}  # UINT8 -> the reader's uint8
    for key, vt, val in arrays:
        w.add_key_value(key, val, V.ARRAY, sub_type=vt)
        expected[key] = {"type": "array", "elem": vt.name.lower(), "value": val}
    w.add_tensor("t.a", np.arange(5, dtype=np.float32))
    w.add_tensor("t.b", np.arange(3, dtype=np.float32) - 1)  # starts at the next 64-byte boundary
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


def write_big_endian(out: Path):
    w = GGUFWriter(str(out), "test", endianess=GGUFEndian.BIG)
    w.add_uint32("test.n", 3)
    w.add_tensor("t", np.arange(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llama_like(out: Path):
    """What a real Llama GGUF's metadata looks like, at toy size: tokenizer arrays and merges."""
    rng = np.random.default_rng(7)
    w = GGUFWriter(str(out), "llama")
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["<s>", "</s>", "a", "b", "ab", "\u0120a"])
    w.add_token_types([3, 3, 1, 1, 1, 1])
    w.add_token_merges(["a b", "\u0120 a"])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_tensor("token_embd.weight", rng.standard_normal((6, 32)).astype(np.float16))
    q = rng.integers(0, 256, size=(32, 34), dtype=np.uint32).astype(np.uint8)
    q[:, 0:2] = np.full((32, 1), 0x2C00, dtype=np.uint16).view(np.uint8)
    w.add_tensor("blk.0.attn_q.weight", q, raw_dtype=T.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_seeds(types: Path, metadata: Path, big_endian: Path):
    SEEDS.mkdir(parents=True, exist_ok=True)
    for old in SEEDS.glob("*.gguf"):
        old.unlink()
    for src in (types, metadata, big_endian):
        (SEEDS / src.name).write_bytes(src.read_bytes())
    write_llama_like(SEEDS / "llama_like.gguf")
    data = bytearray(types.read_bytes())
    (SEEDS / "truncated.gguf").write_bytes(bytes(data[: len(data) * 2 // 3]))
    lying = bytearray(metadata.read_bytes())
    lying[8:16] = struct.pack("<Q", 1 << 40)  # tensor count far past what the file holds
    (SEEDS / "huge_tensor_count.gguf").write_bytes(bytes(lying))
    (SEEDS / "header_only.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))


def probe_smollm2(path: Path, out: Path):
    """Bits of a few dequantized values of three tensors (one per type) and each one's RMS."""
    r = GGUFReader(str(path))
    probes = {}
    for name in ("token_embd.weight", "blk.0.ffn_down.weight", "output_norm.weight"):
        t = next(t for t in r.tensors if t.name == name)
        x = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        idx = sorted({0, 1, 31, 32, 33, x.size // 2 + 5, x.size - 1})
        probes[name] = {"type": t.tensor_type.name, "numel": int(x.size),
                        "index": idx, "bits": [int(x.view(np.uint32)[i]) for i in idx],
                        "rms": float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))}
    out.write_text(json.dumps(probes, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smollm2", type=Path, help="also write smollm2_probe.json from this file")
    args = ap.parse_args()
    types, metadata, big_endian = HERE / "types.gguf", HERE / "metadata.gguf", HERE / "big_endian.gguf"
    entries = write_types(types, HERE / "types.dequant.bin")
    expected = write_metadata(metadata)
    write_big_endian(big_endian)
    (HERE / "fixtures.json").write_text(json.dumps({"types": entries, "metadata": expected}, indent=1,
                                                   ensure_ascii=False) + "\n")
    write_seeds(types, metadata, big_endian)
    if args.smollm2:
        probe_smollm2(args.smollm2, HERE / "smollm2_probe.json")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"wrote {HERE} ({total} bytes) and {SEEDS}", file=sys.stderr)


if __name__ == "__main__":
    main()
