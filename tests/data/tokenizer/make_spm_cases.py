#!/usr/bin/env python3
"""Make the SentencePiece fixture spm_bpe.model and its reference ids, spm_cases.json.

1. Trains a tiny SentencePiece BPE model on data/text/ with Llama 2's trainer settings (identity
   normalizer, no whitespace folding, dummy prefix, byte fallback, split digits, whitespace-only
   pieces), plus one user-defined symbol "<tool>" and one control symbol "<ctrl>". Its vocabulary
   is small and its character coverage below 1, so rare characters (most CJK, emoji) take the
   byte-fallback path.
2. For each tokenizer_config.json below, a directory holding only spm_bpe.model (as
   tokenizer.model) and that config is opened with transformers, as an HF checkpoint with no
   tokenizer.json is:
     LlamaTokenizerFast  what AutoTokenizer gives (the model converted by transformers'
                         LlamaConverter): the reference SparseFlow matches id for id
     LlamaTokenizer      the slow tokenizer (sentencepiece underneath, legacy as configured)
   and the sentencepiece library itself encodes each text.
3. Records, in the form tests/tokenizer/reference_cases.hpp reads, per config: ids without and
   with special tokens and decode(ids) of LlamaTokenizerFast, for every text, texts writing the
   special and added tokens, U+FFFD repairs of invalid UTF-8 and decodes of id sequences no encode
   makes. Where the slow tokenizer or sentencepiece give other ids, they are recorded beside
   ("slow_ids", "spm_ids") with sentencepiece's decode ("spm_decoded"): the test asserts that the
   cases where they differ are exactly those recorded.

    python3 -m venv /tmp/spm-venv
    /tmp/spm-venv/bin/pip install sentencepiece==0.2.1 transformers==4.57.6 tokenizers==0.22.2 protobuf
    /tmp/spm-venv/bin/python tests/data/tokenizer/make_spm_cases.py
"""
import json
import os
import random
import shutil
import tempfile
import warnings

import sentencepiece as spm
import tokenizers
import transformers
from transformers import LlamaTokenizer, LlamaTokenizerFast

DATA = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(DATA, "..", "..", ".."))
TRAIN_TEXTS = [os.path.join(ROOT, "data", "text", n)
               for n in ("calibration-long.txt", "evaluation.txt", "calibration.txt")]
MODEL = os.path.join(DATA, "spm_bpe.model")

# Llama 2's tokenizer_config.json lists its three specials like this.
SPECIALS_DECODER = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
                    for i, t in enumerate(["<unk>", "<s>", "</s>"])}
CONFIGS = {
    # Llama 2 as first published: legacy behaviour, BOS added, no EOS.
    "llama2_legacy": {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                      "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                      "unk_token": "<unk>", "legacy": True, "clean_up_tokenization_spaces": False,
                      "added_tokens_decoder": SPECIALS_DECODER},
    # Llama-2-hf's and Mistral's later configs: legacy false (no "\u2581" after special tokens).
    "llama2": {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
               "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False,
                             "normalized": False, "rstrip": False, "single_word": False},
               "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "legacy": False,
               "clean_up_tokenization_spaces": False, "added_tokens_decoder": SPECIALS_DECODER},
    # No prefix space, EOS and no BOS, and an added token the model's vocabulary lacks.
    "no_prefix_eos": {"tokenizer_class": "LlamaTokenizer", "add_bos_token": False,
                      "add_eos_token": True, "add_prefix_space": False, "legacy": True,
                      "clean_up_tokenization_spaces": False,
                      "added_tokens_decoder": {**SPECIALS_DECODER, "700": {
                          "content": "<|im_end|>", "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "special": True}}},
    # No tokenizer_config.json at all: LlamaTokenizerFast's defaults.
    "no_config": None,
}


def train():
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "train.txt")
        with open(text, "w", encoding="utf-8") as out:
            for path in TRAIN_TEXTS:
                out.write(open(path, encoding="utf-8").read())
            # A few characters beyond the corpus, so that some non-ASCII ones are pieces.
            out.write("\ncaf\u00e9 na\u00efve \u00e9t\u00e9 \u00fcber \u00e9cole\n" * 3)
        spm.SentencePieceTrainer.train(
            input=text, model_prefix=os.path.join(tmp, "m"), model_type="bpe", vocab_size=700,
            character_coverage=0.9995, byte_fallback=True, split_digits=True,
            allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
            normalization_rule_name="identity", add_dummy_prefix=True, max_sentencepiece_length=16,
            user_defined_symbols=["<tool>"], control_symbols=["<ctrl>"], hard_vocab_limit=False,
            num_threads=1, minloglevel=2)
        # The trainer records its temporary paths; dropped, so that the file is the same each run.
        from sentencepiece import sentencepiece_model_pb2 as pb
        proto = pb.ModelProto.FromString(open(os.path.join(tmp, "m.model"), "rb").read())
        proto.trainer_spec.ClearField("input")
        proto.trainer_spec.ClearField("model_prefix")
        with open(MODEL, "wb") as f:
            f.write(proto.SerializeToString())


def texts():
    rng = random.Random(7)
    hand = [
        ("empty", ""),
        ("one space", " "),
        ("only spaces", "     "),
        ("ascii", "Hello world"),
        ("sentence", "The quick brown fox jumps over the lazy dog."),
        ("leading space", " leading space"),
        ("two leading spaces", "  two leading spaces"),
        ("trailing spaces", "trailing spaces   "),
        ("space runs", "a  b   c    d     e"),
        ("tabs", "\ta\t\tb\t"),
        ("newlines", "line one\nline two\n\nline four\n"),
        ("newline runs", "a\n\n\nb \n \n c\r\n\r\n d  \n\n  e"),
        ("crlf", "windows\r\nline\r\n"),
        ("mixed whitespace", " \t\n \u00a0x\u3000y \u2003 z\u0085w\u2028v"),
        ("digits", "0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 1e10 x2y22z333"),
        ("digit runs", "2+2=4 1234567890 007 " + "9" * 40),
        ("unicode digits", "\u0663\u0664\u0665 \u0968\u0969 \u2460\u2461 \u00bd \uff11\uff12"),
        ("punctuation", "Hello, world! (Really?) [yes] {no} <maybe> ... --- ;;; @#$%^&*"),
        ("code", "def f(x):\n    return x**2  # square\n\nif (a && b) { c->d[i] += 1; }\n"),
        ("indent", "class A:\n\tdef g(self):\n\t\t  pass\n    \n        x = [1, 2]\n"),
        ("url", "https://example.org/a/b?c=d&e=f#g"),
        ("french", "C'est l'\u00e9t\u00e9 \u00e0 No\u00ebl, d\u00e9j\u00e0! caf\u00e9 na\u00efve"),
        ("german", "Gr\u00f6\u00dfe Stra\u00dfe \u00dcberm\u00e4\u00dfig \u00fcber"),
        ("russian", "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451"),
        ("cjk", "\u654f\u6377\u7684\u68d5\u8272\u72d0\u72f8\u3002\u6211\u4eec"),
        ("korean", "\uc548\ub155\ud558\uc138\uc694, \uc138\uacc4!"),
        ("emoji", "\U0001f600\U0001f602\U0001f916 \U0001f680 \u2764\ufe0f \U0001f44d"),
        ("emoji zwj", "\U0001f469\u200d\U0001f4bb \U0001f468\u200d\U0001f469\u200d\U0001f467"),
        ("combining marks", "e\u0301 n\u0303 A\u030a \u00e9 vs e\u0301"),
        ("zero width", "a\u200bb\u200cc\u200dd\ufeffe"),
        ("private use", "\ue000\uf8ff\U000f0000"),
        ("replacement char", "\ufffd\ufffd"),
        ("control chars", "\x01\x07\x7f\x80\x9f"),
        ("nul", "a\x00b"),
        ("metaspace in text", "\u2581hello \u2581\u2581x\u2581"),
        ("byte tokens in text", "<0x41> <0xE4><0xB8><0xAD>"),
        ("special tokens text", "<s>Hello</s> <unk> world<s>"),
        ("special at start", "<s> a"),
        ("special then word", "</s>b"),
        ("user defined", "use <tool> now<tool>x <tool>"),
        ("control text", "<ctrl> and<ctrl>x"),
        ("long word", "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(300))),
        ("long space run", " " * 100 + "x" + "\t" * 20),
        ("corpus", open(TRAIN_TEXTS[2], encoding="utf-8").read()),
    ]
    pool = (list("abcXYZ019 '.,!?-_\t\n\r<>|") + [" ", " ", " ", "  ", "\r\n", "\u2581"] +
            ["\u00a0", "\u3000", "\u00e9", "\u00df", "\u0416", "\u4e2d", "\u3042", "\u0301",
             "\u0663", "\U0001f600", "\u200d", "\u20ac", "\ufffd", "\x00"] +
            ["<s>", "</s>", "<unk>", "<tool>", "<ctrl>", "the", " garden", "soil", "1234"])
    rand = [(f"random {i}", "".join(rng.choice(pool) for _ in range(rng.randint(1, 20))))
            for i in range(80)]
    return hand + rand


def special_texts(tokens):
    out = []
    for i, s in enumerate(tokens):
        out.append((f"added {i} alone", s))
        out.append((f"added {i} in text", f"Hello{s}world {s} x  {s}  y\n{s}\n{s}{s}"))
        out.append((f"added {i} words", f"a {s} b{s} {s}c a{s}b"))
    return out


INVALID_UTF8 = [b"\xff", b"abc\x80def", b"\xc3", b"\xe2\x82(", b"\xf0\x9f\x98 x", b"\xed\xa0\x80",
                b"caf\xe9 cr\xe8me", b"ok \xf0\x9f\x98\x80 \xf0\x9f\x98"]


def special_frame(encode):
    probe, inner = encode("x", True), encode("x", False)
    for split in range(len(probe) + 1):
        if probe[split:split + len(inner)] == inner:
            return probe[:split], probe[split + len(inner):]
    raise RuntimeError("no frame")


def records(fast, slow, sp, cases, with_text):
    enc = lambda text, special: fast(text, add_special_tokens=special)["input_ids"]
    prefix, suffix = special_frame(enc)
    out = []
    for name, text in cases:
        ids = enc(text, False)
        rec = {"name": name, "text": text} if with_text else {}
        rec["ids"] = ids
        with_special = enc(text, True)
        if with_special != prefix + ids + suffix:
            rec["ids_special"] = with_special
        decoded = fast.decode(ids, skip_special_tokens=False)
        if decoded != text:
            rec["decoded"] = decoded
        slow_ids = slow(text, add_special_tokens=False)["input_ids"]
        if slow_ids != ids:
            rec["slow_ids"] = slow_ids
        spm_ids = sp.encode(text)
        if spm_ids != ids:
            rec["spm_ids"] = spm_ids
        if all(i < sp.get_piece_size() for i in ids) and sp.decode(ids) != decoded:
            rec["spm_decoded"] = sp.decode(ids)
        out.append(rec)
    return out


def decode_records(fast, vocab_size, specials, byte_ids, seed):
    rng = random.Random(seed)
    seqs = [[], *[[i] for i in specials], [byte_ids[0xE4]], [byte_ids[0xE4], byte_ids[0xB8]],
            [byte_ids[0xE4], byte_ids[0xB8], byte_ids[0xAD], byte_ids[0x41]]]
    for _ in range(40):
        n = rng.randint(1, 12)
        seq = [rng.randrange(vocab_size) for _ in range(n)]
        if rng.random() < 0.5:
            seq.insert(rng.randint(0, n), rng.choice(specials))
        if rng.random() < 0.5:
            seq.insert(rng.randint(0, n), byte_ids[rng.choice([0x20, 0x41, 0xE4, 0xB8, 0xFF])])
        seqs.append(seq)
    return [{"ids": s, "decoded": fast.decode(s, skip_special_tokens=False)} for s in seqs]


def reference(name, config, sp, shared):
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(MODEL, os.path.join(d, "tokenizer.model"))
        if config is not None:
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(config, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = LlamaTokenizerFast.from_pretrained(d)
            slow = LlamaTokenizer.from_pretrained(d)
    backend = json.loads(fast.backend_tokenizer.to_str())
    added = [t["content"] for t in backend["added_tokens"]]
    specials = sorted(t["id"] for t in backend["added_tokens"])
    vocab = fast.get_vocab()
    byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256)]
    enc = lambda text, special: fast(text, add_special_tokens=special)["input_ids"]
    prefix, suffix = special_frame(enc)
    invalid = [{"hex": raw.hex(), "ids": enc(raw.decode("utf-8", errors="replace"), False)}
               for raw in INVALID_UTF8]
    rec = {
        "tokenizer_config": config,
        "bos_id": fast.bos_token_id, "eos_id": fast.eos_token_id,
        "vocab_size": len(fast),
        "special_prefix": prefix, "special_suffix": suffix,
        "cases": records(fast, slow, sp, shared, with_text=False),
        "added_cases": records(fast, slow, sp, special_texts(added), with_text=True),
        "invalid_utf8": invalid,
        "decode_only": decode_records(fast, len(fast), specials, byte_ids, seed=len(name)),
    }
    for key in ("cases", "added_cases"):
        differ = [c.get("name", shared[i][0]) for i, c in enumerate(rec[key]) if "spm_ids" in c]
        slow_differ = [c.get("name", shared[i][0]) for i, c in enumerate(rec[key])
                       if "slow_ids" in c]
        print(f"{name} {key}: sentencepiece differs on {differ}; slow on {slow_differ}")
    return rec


def main():
    train()
    sp = spm.SentencePieceProcessor(model_file=MODEL)
    print(f"wrote spm_bpe.model ({os.path.getsize(MODEL)} bytes, {sp.get_piece_size()} pieces)")
    shared_texts = texts()
    out = {"generator": "tests/data/tokenizer/make_spm_cases.py",
           "sentencepiece": spm.__version__, "transformers": transformers.__version__,
           "tokenizers": tokenizers.__version__, "model": os.path.basename(MODEL),
           "texts": [{"name": n, "text": t} for n, t in shared_texts], "configs": {}}
    for name, config in CONFIGS.items():
        out["configs"][name] = reference(name, config, sp, shared_texts)
    path = os.path.join(DATA, "spm_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote spm_cases.json ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    main()
