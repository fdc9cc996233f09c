#!/usr/bin/env python3
"""Make the PyTorch-checkpoint fixtures under tests/data/torch/ with real torch and transformers.

SparseFlow reads torch.save() zip archives with a restricted pickle reader that never runs pickled
code (src/format/torch_checkpoint.hpp). These fixtures are what its tests read:

  opt/config.json, opt/model.safetensors  a micro OPT (random weights, fp32) saved by HF's
                                          save_pretrained(safe_serialization=True)
  opt/model.pt                            torch.save(model.state_dict()) of the same model: the
                                          bare-file route, compared bit for bit with the above
  opt/expected.json                       HF's fp32 logits at every position of a few token ids
  opt_sharded_bf16/                       the same model in bf16 as HF's sharded pickle layout:
                                          pytorch_model-0000N-of-00002.bin + pytorch_model.bin.index.json
                                          (save_pretrained(safe_serialization=False) where the
                                          installed transformers still writes it, else by hand)
  mixed.pt, mixed_expected.json           every dtype, a 0-dim and an empty tensor, a Parameter, and
                                          strided views (transposed, narrowed with a storage offset,
                                          expanded with stride 0) sharing one storage; the json holds
                                          each tensor's dtype, shape and values in row-major order
  tiny.pt                                 {"w": arange(4.)}: the base of the damaged files below
  evil_system.pt, evil_eval.pt            torch.save() of an object whose __reduce__ calls
                                          os.system / builtins.eval to create PWNED: a reader that
                                          runs pickled code would create that file
  legacy.pt                               the pre-1.6 format (_use_new_zipfile_serialization=False)
  nested.pt                               a training-style checkpoint {"model": {...}, "step": 3}
  deflated.pt                             tiny.pt re-zipped with ZIP_DEFLATED entries
  short_storage.pt                        tiny.pt whose data/0 entry lost half its bytes
  big_endian.pt                           tiny.pt whose byteorder entry says "big"
  missing_storage.pt                      tiny.pt without its data/0 entry
  bad_extent.pt                           a hand-made pickle (real torch global names, torch's zip
                                          layout) whose tensor claims 1000 elements of a 4-element
                                          storage

The layout of the hand-made and re-zipped files mirrors what torch 2.x writes (entries
<archive>/data.pkl, <archive>/byteorder, <archive>/data/<key>, <archive>/version, stored
uncompressed); the torch and transformers versions used are printed and kept in versions.json.

Needs torch and transformers. Run on the GPU machine (no network needed):
    python3 scripts/make_torch_fixtures.py --out tests/data/torch
"""
import argparse
import builtins
import collections
import io
import json
import os
import pickle
import pickletools
import shutil
import zipfile

import torch
import transformers
from transformers import OPTConfig, OPTForCausalLM

PWNED = "/tmp/sparseflow_torch_fixture_pwned"
IDS = [2, 5, 9, 13, 40, 7, 33, 61]


def micro_opt():
    config = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, ffn_dim=32,
                       num_attention_heads=2, max_position_embeddings=16, word_embed_proj_dim=16,
                       do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(4242)
    model = OPTForCausalLM(config).eval()
    # Larger than HF's 0.02 init so that the logits are far from uniform.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def clean_hf_dir(d, keep):
    for f in os.listdir(d):
        if f not in keep:
            os.remove(os.path.join(d, f))


def write_opt(out, model):
    d = os.path.join(out, "opt")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    clean_hf_dir(d, {"config.json", "model.safetensors"})
    torch.save(model.state_dict(), os.path.join(d, "model.pt"))
    with torch.no_grad():
        logits = model(torch.tensor([IDS])).logits[0].float()
    json.dump({"ids": IDS, "logits": [[float(x) for x in row] for row in logits.tolist()]},
              open(os.path.join(d, "expected.json"), "w"))


def write_sharded(out, model):
    d = os.path.join(out, "opt_sharded_bf16")
    os.makedirs(d, exist_ok=True)
    m16 = model.to(torch.bfloat16)
    try:
        m16.save_pretrained(d, safe_serialization=False, max_shard_size="16KB")
        made_by = "save_pretrained"
    except TypeError:
        made_by = "hand"
    if not os.path.exists(os.path.join(d, "pytorch_model.bin.index.json")):
        # HF's layout by hand: the tied lm_head is dropped, tensors split in state-dict order.
        clean_hf_dir(d, {"config.json"})
        if not os.path.exists(os.path.join(d, "config.json")):
            m16.config.save_pretrained(d)
        sd = {k: v for k, v in m16.state_dict().items() if k != "lm_head.weight"}
        names = list(sd)
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        weight_map, total = {}, 0
        for i, part in enumerate(halves):
            fname = f"pytorch_model-{i + 1:05d}-of-00002.bin"
            torch.save({k: sd[k].clone() for k in part}, os.path.join(d, fname))
            for k in part:
                weight_map[k] = fname
                total += sd[k].numel() * sd[k].element_size()
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
                  open(os.path.join(d, "pytorch_model.bin.index.json"), "w"), indent=2)
        made_by = "hand"
    clean_hf_dir(d, {"config.json", "pytorch_model.bin.index.json"} |
                 {f for f in os.listdir(d) if f.endswith(".bin")})
    return made_by


DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
               torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def write_mixed(out):
    torch.manual_seed(7)
    base = (torch.arange(24, dtype=torch.float16) * 0.5).reshape(4, 6)
    d = collections.OrderedDict()
    d["f32"] = torch.randn(3, 5)
    d["f16"] = torch.randn(7).half()
    d["bf16"] = torch.randn(2, 3).bfloat16()
    d["f64"] = torch.randn(2, 2, dtype=torch.float64)
    d["i64"] = torch.tensor([1, -2, 3_000_000_000], dtype=torch.int64)
    d["i32"] = torch.tensor([[-7, 8]], dtype=torch.int32)
    d["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    d["i8"] = torch.tensor([-5, 5], dtype=torch.int8)
    d["u8"] = torch.tensor([0, 255], dtype=torch.uint8)
    d["bool"] = torch.tensor([True, False, True])
    d["scalar"] = torch.tensor(3.5)
    d["empty"] = torch.zeros(0, 4)
    d["transposed"] = base.t()             # [6, 4], strides (1, 6)
    d["narrow"] = base[1:3, 2:5]           # [2, 3], storage offset 8, strides (6, 1)
    d["expanded"] = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)  # stride (0, 1)
    d["param"] = torch.nn.Parameter(torch.full((2, 2), 0.25))
    torch.save(d, os.path.join(out, "mixed.pt"))
    expected = {k: {"dtype": DTYPE_NAMES[v.dtype], "shape": list(v.shape),
                    "contiguous": v.is_contiguous(),
                    "values": v.detach().contiguous().reshape(-1).double().tolist()
                    if v.dtype != torch.bool else [int(x) for x in v.reshape(-1).tolist()]}
                for k, v in d.items()}
    json.dump(expected, open(os.path.join(out, "mixed_expected.json"), "w"))


class Payload:
    """Pickles as a call of `fn(arg)`: what a malicious checkpoint does."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def rezip(src, dst, rename=None, drop=(), replace=None, compression=zipfile.ZIP_STORED):
    """Copies a torch zip entry by entry, changing what is asked (torch's layout otherwise)."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            tail = info.filename.split("/", 1)[1]
            if tail in drop:
                continue
            data = replace.get(tail, zin.read(info.filename))
            zout.writestr(info.filename, data, compress_type=compression)


def archive_of(path):
    with zipfile.ZipFile(path) as z:
        return z.namelist()[0].split("/", 1)[0]


def write_bad_extent(out):
    """A pickle made by hand with torch's own global names and persistent-id form."""
    storage_marker = object()

    class BadTensor:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2,
                    (storage_marker, 0, (1000,), (1,), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is storage_marker:
                return ("storage", torch.FloatStorage, "0", "cpu", 4)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict([("w", BadTensor())]))
    with zipfile.ZipFile(os.path.join(out, "bad_extent.pt"), "w", zipfile.ZIP_STORED) as z:
        z.writestr("bad_extent/data.pkl", buf.getvalue())
        z.writestr("bad_extent/byteorder", "little")
        z.writestr("bad_extent/data/0", torch.arange(4.0).numpy().tobytes())
        z.writestr("bad_extent/version", "3\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--dis", help="folder for pickletools disassemblies (not fixtures)")
    a = ap.parse_args()
    out = a.out
    os.makedirs(out, exist_ok=True)

    model = micro_opt()
    write_opt(out, model)
    made_by = write_sharded(out, micro_opt())
    write_mixed(out)

    tiny = os.path.join(out, "tiny.pt")
    torch.save({"w": torch.arange(4.0)}, tiny)
    torch.save({"w": torch.ones(2), "payload": Payload(os.system, f"touch {PWNED}")},
               os.path.join(out, "evil_system.pt"))
    torch.save({"w": torch.ones(2), "payload": Payload(builtins.eval, f"open({PWNED!r}, 'w')")},
               os.path.join(out, "evil_eval.pt"))
    torch.save({"w": torch.ones(2)}, os.path.join(out, "legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save({"model": {"w": torch.ones(2)}, "step": 3}, os.path.join(out, "nested.pt"))

    rezip(tiny, os.path.join(out, "deflated.pt"), compression=zipfile.ZIP_DEFLATED)
    rezip(tiny, os.path.join(out, "short_storage.pt"),
          replace={"data/0": torch.arange(2.0).numpy().tobytes()})
    rezip(tiny, os.path.join(out, "big_endian.pt"), replace={"byteorder": b"big"})
    rezip(tiny, os.path.join(out, "missing_storage.pt"), drop={"data/0"})
    write_bad_extent(out)

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "sharded_made_by": made_by, "archive_name_of_tiny": archive_of(tiny)}
    json.dump(versions, open(os.path.join(out, "versions.json"), "w"), indent=2)
    print(json.dumps(versions))

    if a.dis:
        os.makedirs(a.dis, exist_ok=True)
        for f in ["mixed.pt", "evil_system.pt", "evil_eval.pt", "opt/model.pt"]:
            with zipfile.ZipFile(os.path.join(out, f)) as z:
                names = z.namelist()
                pkl = next(n for n in names if n.endswith("/data.pkl"))
                text = io.StringIO()
                pickletools.dis(z.read(pkl), out=text)
                infos = "\n".join(f"{i.filename} method={i.compress_type} size={i.file_size} "
                                  f"header_offset={i.header_offset}" for i in z.infolist())
                open(os.path.join(a.dis, f.replace("/", "_") + ".txt"), "w").write(
                    infos + "\n\n" + text.getvalue())


if __name__ == "__main__":
    main()
