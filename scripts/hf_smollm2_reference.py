#!/usr/bin/env python3
"""HF transformers' reading of SmolLM2-135M-Instruct's GGUF file, as the reference SparseFlow's
conversion of the same file is checked against (tests/model/test_smollm2.cpp).

transformers dequantizes the GGUF with the `gguf` package, puts q/k rows back in HF's order and
builds the tokenizer from the metadata. This records, in fp32 on the CPU (eager attention):
the token ids of data/text/evaluation.txt and its perplexity (one window, HF's loss), the greedy
continuation of a plain prompt and of a chat prompt, the chat prompt's ids from
apply_chat_template, and the last-position logits of the plain prompt.

Needs torch, transformers and gguf (no network). Run on a machine that has them:
  python3 scripts/hf_smollm2_reference.py --gguf PATH --out tests/data/smollm2/hf_reference.json
"""
import argparse
import json
import math
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
NEW_TOKENS = 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--text", default=os.path.join(os.path.dirname(__file__), "..", "data", "text", "evaluation.txt"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    text = open(a.text, encoding="utf-8").read()
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        out = model(torch.tensor([ids]), labels=torch.tensor([ids]))
        ppl = math.exp(out.loss.item())
        p_ids = tok(PROMPT)["input_ids"]
        logits = model(torch.tensor([p_ids])).logits[0, -1].tolist()
        greedy = model.generate(torch.tensor([p_ids]), max_new_tokens=NEW_TOKENS, do_sample=False)[0][len(p_ids):]
        chat_ids = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True)
        if isinstance(chat_ids, dict):
            chat_ids = chat_ids["input_ids"]
        chat_text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
        chat_greedy = model.generate(torch.tensor([chat_ids]), max_new_tokens=NEW_TOKENS, do_sample=False)[0][len(chat_ids):]
    top = sorted(range(len(logits)), key=lambda i: -logits[i])[:2]
    res = {
        "gguf": f,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "text": os.path.relpath(a.text, os.path.join(os.path.dirname(__file__), "..")),
        "text_ids": ids,
        "perplexity": ppl,
        "prompt": PROMPT,
        "prompt_ids": p_ids,
        "prompt_last_logits": [round(x, 5) for x in logits],
        "prompt_top2_gap": logits[top[0]] - logits[top[1]],
        "greedy": greedy.tolist(),
        "greedy_text": tok.decode(greedy),
        "chat_messages": CHAT,
        "chat_text": chat_text,
        "chat_ids": list(chat_ids),
        "chat_greedy": chat_greedy.tolist(),
        "chat_greedy_text": tok.decode(chat_greedy),
    }
    with open(a.out, "w") as fo:
        json.dump(res, fo)
    print(f"perplexity {ppl:.4f} over {len(ids)} tokens; greedy: {res['greedy_text']!r}; chat: {res['chat_greedy_text']!r}")


if __name__ == "__main__":
    sys.exit(main())
