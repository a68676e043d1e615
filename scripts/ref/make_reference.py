#!/usr/bin/env python3
"""make_reference.py: reference.json + reference_logits.f32 for a model folder that uses
the demo tokenizer (relu-llama-shakespeare), computed in numpy by llama_ref.py.

Same schema and conventions as models/opt-relu-shakespeare/reference.json: its four
prompts (each fed as [2] + encode(prompt)), 64 greedy ids with top-5 ids/logits per
step and min_top1_margin, greedy_text; validation on the held-out text (bytes
[1003857, end) of tinyshakespeare.txt, chunks of 511 tokens fed as [2] + chunk[:-1],
every token scored once); per-layer activation sparsity over those positions.
  make_reference.py MODEL_DIR [--train-log train_log.json] [--data tinyshakespeare.txt]
"""
import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import llama_ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_REF = os.path.join(ROOT, "models", "opt-relu-shakespeare", "reference.json")
HELDOUT_START = 1003857
BOS, N_GEN, CHUNK = 2, 64, 511


def prompt_entry(model, tok, text):
    ids = [BOS] + tok.encode(text)
    gen, logits = llama_ref.greedy(model, ids, N_GEN)
    order = np.argsort(-logits, axis=-1, kind="stable")[:, :5]
    top5_logits = np.take_along_axis(logits, order, axis=-1)
    return {
        "prompt": text, "prompt_ids": ids, "prompt_tokens": len(ids),
        "top5_ids": order.tolist(), "top5_logits": top5_logits.astype(float).tolist(),
        "min_top1_margin": float((top5_logits[:, 0] - top5_logits[:, 1]).min()),
        "greedy_ids": gen, "greedy_text": tok.decode(gen),
    }, logits[0]


def sparsity_entry(stats, positions):
    per = stats.per_layer()
    act = [np.asarray(a) for a in stats.active_per_token]
    n_neurons = stats.total[0] // positions
    return {
        "definition": "fraction of FFN coefficients relu(gate_proj x) * (up_proj x) exactly 0 "
                      "(float32 compute; up_proj x is never exactly 0 here, so this is the "
                      "fraction of relu(gate_proj x) = 0), over every position (including the "
                      "</s> one) of the validation chunks above",
        "positions": positions,
        "per_layer": per,
        "overall": float(np.mean(per)),
        "active_neurons_per_token_mean": [float(a.mean()) for a in act],
        "active_neurons_per_token_p50": [float(np.percentile(a, 50)) for a in act],
        "active_neurons_per_token_p99": [float(np.percentile(a, 99)) for a in act],
        "active_neurons_per_token_max": [int(a.max()) for a in act],
        "neurons_never_active_on_validation": [int((c == 0).sum()) for c in stats.active_count],
        "neurons_per_layer": n_neurons,
    }


class NeuronStats(llama_ref.SparsityStats):
    """SparsityStats plus how often each neuron is active."""

    def __init__(self, n_layers, n_neurons):
        super().__init__(n_layers)
        self.active_count = [np.zeros(n_neurons, np.int64) for _ in range(n_layers)]

    def add(self, li, zero_mask):
        super().add(li, zero_mask)
        self.active_count[li] += (~zero_mask).sum(axis=0)


def main():
    ap = argparse.ArgumentParser(prog="make_reference.py", description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--train-log", help="JSON written by train_relu_llama.py --log")
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    a = ap.parse_args()
    model = llama_ref.Model(a.model_dir)
    tok = bpe.Tokenizer(a.model_dir)
    demo = json.load(open(DEMO_REF))
    prompts, rows = [], []
    for p in demo["prompts"]:
        entry, row = prompt_entry(model, tok, p["prompt"])
        if entry["prompt_ids"] != p["prompt_ids"]:
            print("make_reference.py: tokenizer disagrees with the demo reference on %r" % p["prompt"],
                  file=sys.stderr)
            return 1
        prompts.append(entry)
        rows.append(row)
    logits_path = os.path.join(a.model_dir, "reference_logits.f32")
    np.stack(rows).astype("<f4").tofile(logits_path)

    raw = open(a.data, "rb").read()
    held = raw[HELDOUT_START:]
    ids = tok.encode(held.decode("utf-8"))
    c = model.cfg
    stats = NeuronStats(c.n_layers, c.inter)
    n, ce = llama_ref.perplexity(model, ids, CHUNK, BOS, stats)
    n_params = sum(int(v.size) for v in model.w.values())
    ref = {
        "model": os.path.basename(os.path.normpath(a.model_dir)),
        "note": "computed in float32 with numpy (scripts/ref/llama_ref.py, not PyTorch, not the "
                "client) from the float16 weights in model.safetensors; every prompt starts with "
                "</s> (id 2) as the tokenizer prepends it; greedy = argmax (lowest id on ties), "
                "no stopping at EOS; top5 at step i are the logits that chose greedy_ids[i]; "
                "KV-cache decoding",
        "dtype_compute": "float32",
        "n_params": n_params,
        "rms_norm_eps": c.eps,
        "rope_theta": c.theta,
        "prompts": prompts,
        "reference_logits": {
            "file": "reference_logits.f32", "dtype": "float32", "byteorder": "little",
            "shape": [len(rows), c.vocab],
            "rows": "one row per prompt, in the order of 'prompts': full-vocabulary logits at the "
                    "last prompt position (the ones that chose greedy_ids[0])",
            "sha256": hashlib.sha256(open(logits_path, "rb").read()).hexdigest(),
        },
        "validation": {
            "text_file": "tinyshakespeare.txt (%d bytes)" % len(raw),
            "text_file_sha256": hashlib.sha256(raw).hexdigest(),
            "byte_offsets": [HELDOUT_START, len(raw)],
            "heldout_sha256": hashlib.sha256(held).hexdigest(),
            "note": "held-out: the last 10% of the file, starting at the first paragraph boundary "
                    "at or after byte int(0.9*len); not seen in training (tokenizer or model)",
            "method": "token stream of the held-out text (no BOS) cut into consecutive chunks of "
                      "511 tokens; each chunk is fed as [2] + chunk[:-1] (positions 0..510) and "
                      "every chunk token is scored once: mean cross-entropy in nats over all tokens",
            "tokens": n,
            "cross_entropy_nats": ce,
            "perplexity": math.exp(ce),
            "bits_per_byte": ce * n / math.log(2) / len(held),
        },
        "activation_sparsity": sparsity_entry(stats, n),
    }
    if a.train_log:
        ref["training"] = json.load(open(a.train_log))
    with open(os.path.join(a.model_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    v, s = ref["validation"], ref["activation_sparsity"]
    print("held-out: %d tokens, CE %.4f nats, perplexity %.2f; sparsity %s (mean %.4f)" % (
        n, ce, v["perplexity"], " ".join("%.4f" % x for x in s["per_layer"]), s["overall"]))
    print("min_top1_margin per prompt: %s" % " ".join("%.4f" % p["min_top1_margin"] for p in prompts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
