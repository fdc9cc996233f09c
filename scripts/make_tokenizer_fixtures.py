#!/usr/bin/env python3
"""Make the tokenizer fixtures under tests/data/tokenizer/.

1. Trains a small byte-level BPE (the `tokenizers` ByteLevelBPETokenizer, GPT-2's pre-tokenizer)
   on tests/data/tokenizer/corpus.txt -> vocab.json + merges.txt. The special tokens are passed in
   OPT's order so that "<s>", "<pad>", "</s>", "<unk>" get ids 0, 1, 2, 3, as in OPT's vocabulary.
2. Builds Hugging Face's GPT2Tokenizer (the slow, Python one) and GPT2TokenizerFast (Rust) from
   those files with OPT's tokenizer_config (bos = eos = unk = "</s>", pad = "<pad>",
   add_bos_token = true), and records their ids for a list of tricky strings -> cases.json.
   The slow and fast tokenizers must agree on every case, and "with BOS" must be [2] + ids.

Run with transformers 4.x (5.x has no separate slow tokenizer; then only the fast one is checked):
    python3 -m venv /tmp/tf4 && /tmp/tf4/bin/pip install "transformers<5"
    /tmp/tf4/bin/python scripts/make_tokenizer_fixtures.py
"""
import json
import os
import random
import sys
import tempfile

import tokenizers
import transformers
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Tokenizer, GPT2TokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "tokenizer")
VOCAB_SIZE = 1500
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids 0, 1, 2, 3


def train():
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train([os.path.join(DATA, "corpus.txt")], vocab_size=VOCAB_SIZE, min_frequency=1,
              special_tokens=SPECIAL, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save_model(tmp)
        vocab = json.load(open(os.path.join(tmp, "vocab.json"), encoding="utf-8"))
        merges = open(os.path.join(tmp, "merges.txt"), encoding="utf-8").read()
    for i, tok in enumerate(SPECIAL):
        assert vocab[tok] == i, f"{tok} has id {vocab[tok]}, want {i}"
    # One token per line keeps the diff of a retrain readable.
    with open(os.path.join(DATA, "vocab.json"), "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(f"{json.dumps(k, ensure_ascii=False)}: {v}"
                                   for k, v in sorted(vocab.items(), key=lambda kv: kv[1]))
                + "\n}\n")
    with open(os.path.join(DATA, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(merges)
    return len(vocab)


def opt_tokenizers():
    kw = dict(vocab_file=os.path.join(DATA, "vocab.json"), merges_file=os.path.join(DATA, "merges.txt"),
              bos_token="</s>", eos_token="</s>", unk_token="</s>", pad_token="<pad>",
              add_bos_token=True, add_prefix_space=False, errors="replace")
    fast = GPT2TokenizerFast(**kw)
    slow = GPT2Tokenizer(**kw)
    if isinstance(slow, GPT2TokenizerFast) or type(slow) is type(fast):
        print("warning: this transformers has no separate slow GPT2Tokenizer; checking the fast one only",
              file=sys.stderr)
        return [("fast", fast)]
    return [("slow", slow), ("fast", fast)]


def hand_cases():
    long_word = "".join(random.Random(7).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3000))
    corpus = open(os.path.join(DATA, "corpus.txt"), encoding="utf-8").read()
    return [
        ("empty", ""),
        ("one space", " "),
        ("ascii", "Hello world"),
        ("sentence", "The quick brown fox jumps over the lazy dog."),
        ("leading space", " leading space"),
        ("trailing spaces", "trailing spaces   "),
        ("space runs", "a  b   c    d"),
        ("only spaces", "     "),
        ("tabs", "\ta\t\tb\t"),
        ("newlines", "line one\nline two\n\nline four\n"),
        ("crlf", "windows\r\nline\r\n"),
        ("mixed whitespace", " \t\n \u00a0x\u3000y \u2003 z\u0085w\u2028v"),
        ("space before newline", "end \nnext  \n\n  indented"),
        ("file/group separators", "a\x1cb\x1d c\x1e\x1f d"),
        ("contractions", "it's they're we've I'm you'll he'd don't"),
        ("contractions upper", "IT'S THEY'RE WE'VE I'M YOU'LL HE'D DON'T 'S 'RE"),
        ("contraction quirks", "'sup 'llama 'd'd''s ' s 'x rock'n'roll"),
        ("apostrophe variants", "it\u2019s it`s it''s"),
        ("numbers", "0 1 12 123 1234 12345 3.14159 1,000,000 -42 +7 1e10"),
        ("unicode digits", "\u0663\u0664\u0665 \u0968\u0969 \u2460\u2461 \u00bd \u2167 \uff11\uff12"),
        ("punctuation", "Hello, world! (Really?) [yes] {no} <maybe> ... --- ;;; @#$%^&*"),
        ("code", "def f(x):\n    return x**2  # square\n\nif (a && b) { c->d[i] += 1; }\n"),
        ("url", "https://example.org/a/b?c=d&e=f#g"),
        ("french", "C'est l'été à Noël, déjà!"),
        ("german", "Größe Straße Übermäßig"),
        ("russian", "Съешь же ещё этих мягких французских булок"),
        ("greek", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία"),
        ("cjk", "敏捷的棕色狐狸跳过了懒狗。我们今天在北京吃饭"),
        ("japanese", "いろはにほへと カタカナ 東京"),
        ("korean", "안녕하세요, 세계!"),
        ("arabic", "مرحبا بالعالم ٣٤٥"),
        ("hindi", "नमस्ते दुनिया"),
        ("thai", "สวัสดีชาวโลก"),
        ("emoji", "😀😂🤖 🚀 ❤️ 👍"),
        ("emoji skin tones", "👍🏽 👋🏿 🧑🏻‍🦰"),
        ("emoji zwj", "👩‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 🏴‍☠️"),
        ("flags", "🇫🇷🇯🇵🇺🇸"),
        ("combining marks", "e\u0301 n\u0303 A\u030a q\u0307 a\u035cb Z\u0324\u0354\u0367\u0311\u0313"),
        ("combining after space", "x \u0301y \u0301\u0301"),
        ("zero width", "a\u200bb\u200cc\u200dd\ufeffe"),
        ("variation selectors", "\u2764\ufe0f \u2764\ufe0e"),
        ("private use and noncharacters", "\ue000\uf8ff\U000f0000\ufffe\uffff"),
        ("replacement char", "\ufffd\ufffd"),
        ("control chars", "\x00\x01\x07\x7f\x80\x9f"),
        ("special tokens in text", "Hello</s>world <pad> <s> <unk></s></s>"),
        ("special token spacing", " </s> a</s>b \n</s>\n"),
        ("unicode 16 letters", "\u1c89\u1c8a \ua7cb\ua7cc \U000105c0\U000105c1"),
        ("long word", long_word),
        ("long number", "9" * 500),
        ("long space run", " " * 300 + "x" + "\t" * 50),
        ("long punctuation", "!?" * 200),
        ("corpus", corpus),
    ]


def random_cases(n=250, seed=1234):
    """Strings drawn from a pool of characters of every class the pre-tokenizer distinguishes."""
    pool = (list("abcXYZ019 '''' sdtrmlveSDTRMLVE.,!?-_\t\n\r") +
            [" ", " ", " ", "'s", "'re", "'ll", "'RE"] +
            ["\u00a0", "\u3000", "\u2003", "\u0085", "\u2028", "\x1c", "\x0b", "\x0c"] +
            ["é", "ß", "Ж", "λ", "中", "文", "あ", "한", "ع", "न", "ि", "\u0301", "\u20dd"] +
            ["\u0663", "\u00b2", "\u2167", "\u2460", "\uff11"] +
            ["😀", "👍", "🏽", "\u200d", "\ufe0f", "🇫", "🇷", "€", "™", "°", "\ufffd", "\x00"] +
            ["\u1c89", "\U000105c0", "\U00010d40", "\U0002ebf0", "\U000323af"])
    rng = random.Random(seed)
    return [(f"random {i}", "".join(rng.choice(pool) for _ in range(rng.randint(1, 30))))
            for i in range(n)]


INVALID_UTF8 = [
    b"\xff", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(", b"\xf0\x9f\x98",
    b"\xf0\x9f\x98 x", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"a\xfe\xfeb", b"caf\xe9 cr\xe8me", b"\x80\x80\x80 \xbf",
    b"ok \xf0\x9f\x98\x80 \xf0\x9f\x98", b"\xe1\x80\xe1\x80\x80",
]


def main():
    n_vocab = train()
    toks = opt_tokenizers()
    ref_name, ref = toks[-1]
    cases, invalid = [], []
    for name, text in hand_cases() + random_cases():
        ids = None
        for tname, tok in toks:
            got = tok(text, add_special_tokens=False)["input_ids"]
            with_bos = tok(text)["input_ids"]
            assert with_bos == [2] + got, f"{tname} {name!r}: BOS handling differs from OPT's"
            if ids is None:
                ids = got
            elif got != ids:
                sys.exit(f"slow and fast tokenizers disagree on {name!r}: {ids} vs {got}")
        decoded = ref.decode(ids)
        cases.append({"name": name, "text": text, "ids": ids, "decoded": decoded})
    for raw in INVALID_UTF8:
        text = raw.decode("utf-8", errors="replace")
        ids = ref(text, add_special_tokens=False)["input_ids"]
        for tname, tok in toks:
            assert tok(text, add_special_tokens=False)["input_ids"] == ids, tname
        invalid.append({"hex": raw.hex(), "ids": ids})
    out = {
        "generator": "scripts/make_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "checked": [t for t, _ in toks],
        "bos_id": 2,
        "special_tokens": ["</s>", "<pad>"],
        "cases": cases,
        "invalid_utf8": invalid,
    }
    with open(os.path.join(DATA, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"vocab {n_vocab} tokens, {len(cases)} cases, {len(invalid)} invalid-UTF-8 cases, "
          f"checked by {[t for t, _ in toks]} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
