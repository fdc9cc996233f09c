#!/usr/bin/env python3
"""Rewrite a quantized GGUF file with its 2-D weights dequantized to f16, for llama.cpp peers.

SparseFlow dequantizes a GGUF at convert time into fp16 (src/format/gguf_quant.cpp, bit-identical
to gguf-py's dequantize); this writes the same fp16 values into a GGUF that llama.cpp reads, so both
engines run on the same f16 weights:

    PYTHONPATH=llama.cpp/gguf-py scripts/gguf_to_f16.py SmolLM2-135M-Instruct.Q4_1.gguf smollm2-f16.gguf

Metadata (tokenizer, chat template, sizes) is copied as it is, except general.file_type. F32
tensors (the norms) stay F32. Writes OUTPUT.tmp and renames it when complete.
"""

import argparse
import os
import sys

import numpy as np

try:
    import gguf
    from gguf.quants import dequantize
except ImportError:
    sys.exit("error: the gguf package is missing; put llama.cpp's gguf-py on PYTHONPATH")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    a = ap.parse_args()
    if os.path.abspath(a.input) == os.path.abspath(a.output):
        sys.exit("error: the output would replace the input; name another file")
    if os.path.exists(a.output) and not a.force:
        sys.exit(f"error: {a.output} exists; pass --force to replace it")
    r = gguf.GGUFReader(a.input)
    arch = r.fields["general.architecture"].contents()
    tmp = a.output + ".tmp"
    try:
        w = gguf.GGUFWriter(tmp, arch)
        for name, f in r.fields.items():
            if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
                continue
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(name, f.contents(), vtype, sub_type=sub)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne innermost first
            if t.tensor_type == gguf.GGMLQuantizationType.F32:
                arr = np.asarray(t.data, dtype=np.float32).reshape(shape)
            else:
                arr = dequantize(t.data, t.tensor_type).astype(np.float16).reshape(shape)
            w.add_tensor(t.name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, a.output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f"wrote {a.output}: {len(r.tensors)} tensors, {os.path.getsize(a.output) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
