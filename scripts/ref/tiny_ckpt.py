#!/usr/bin/env python3
"""tiny_ckpt.py: writes a tiny random Llama-family HF checkpoint of one sparse family,
with references computed by llama_ref.py.

  tiny_ckpt.py KIND OUT_DIR [--seed S]
  KIND: relu (llama/relu), fatrelu (sparsellama/fatrelu + hidden_act_param),
        drelu (bamboo/relu), cats (sparse_llama/silu + per-layer "thresholds"),
        silu (llama/silu), mistral-window (mistral/silu, sliding_window 8)

Shape: hidden 64, 4 heads (head_dim 16), 2 KV heads, 2 layers, intermediate 256,
vocab 1024, max_position_embeddings 256, rms_norm_eps 1e-5, rope_theta 10000, untied
lm_head; random float32 weights.  Tokenizer files: the demo model's (bos/eos 2, pad 1).

Sparsity by construction: residual dimension 0 is a constant "bias channel" (every
embedding has +2 there; o_proj and down_proj never write it; its norm weights are 1),
so column 0 of gate_proj / up_proj adds a per-token offset of one sign to every
pre-activation.  That column is calibrated layer by layer on the prompts so that
about 88% of FFN coefficients are exactly zero (relu: gate <= 0; fatrelu: gate below
hidden_act_param; drelu: gate or up <= 0; cats: |silu(gate)| at/below the layer's
threshold (0.15, 0.12), with a wide gate so that negative and positive silu values
both survive the threshold).
The script checks 80-95% sparsity per layer for the sparse kinds, greedy output that is
not one token repeated, a top-1 margin > 1e-3, and for fatrelu and cats that no FFN
pre-activation of the reference runs comes within 1e-5 of the activation's threshold
(where the coefficient jumps: float32 rounding there decides the logits; the
thresholds are moved into the widest nearby gap of the values, place_thresholds); if a draw fails it redraws from the
next sub-seed (recorded as "attempt").  Output is deterministic for a given seed.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import tensorfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "models", "opt-relu-shakespeare")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")

D, HEADS, KV, LAYERS, INTER, VOCAB, MAXPOS = 64, 4, 2, 2, 256, 1024, 256
BIAS_CHANNEL = 2.0
N_GEN = 32
TARGET_ACTIVE = 0.12          # aim: 88% of FFN coefficients zero
FATRELU_T = 0.5               # hidden_act_param (gate pre-activations have std ~1)
CATS_T = (0.15, 0.12)         # per-layer CATS thresholds on |silu(gate)|
WINDOW = 8
THRESHOLD_MARGIN = 1e-5       # fatrelu/cats: every pre-activation this far from the jump

KINDS = {
    "relu": {"model_type": "llama", "hidden_act": "relu"},
    "fatrelu": {"model_type": "sparsellama", "hidden_act": "fatrelu", "hidden_act_param": FATRELU_T},
    "drelu": {"model_type": "bamboo", "hidden_act": "relu"},
    "cats": {"model_type": "sparse_llama", "hidden_act": "silu", "use_sparse_model": True},
    "silu": {"model_type": "llama", "hidden_act": "silu"},
    "mistral-window": {"model_type": "mistral", "hidden_act": "silu", "sliding_window": WINDOW},
}
SPARSE = ("relu", "fatrelu", "drelu", "cats")


def prompts(kind):
    """Three fixed prompts (same for every seed), each starting with </s> (id 2)."""
    lengths = (8, 20, 60) if kind == "mistral-window" else (5, 20, 60)
    rng = np.random.default_rng(20240613)
    return [[2] + rng.integers(4, VOCAB, n - 1).tolist() for n in lengths]


def config(kind):
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": D, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": D // HEADS,
        "hidden_act": "silu", "max_position_embeddings": MAXPOS, "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float32",
    }
    cfg.update(KINDS[kind])
    cfg["architectures"] = {"mistral": ["MistralForCausalLM"], "bamboo": ["BambooForCausalLM"],
                            "sparse_llama": ["SparseLlamaForCausalLM"]}.get(
                                cfg["model_type"], ["LlamaForCausalLM"])
    if kind == "cats":
        cfg["thresholds"] = list(CATS_T)
    return cfg


def random_weights(rng):
    f = np.float32
    w = {}
    emb = rng.normal(0, 1, (VOCAB, D))
    emb[:, 0] = BIAS_CHANNEL
    w["model.embed_tokens.weight"] = emb.astype(f)

    def norm_w():
        v = 1 + 0.1 * rng.normal(0, 1, D)
        v[0] = 1.0
        return v.astype(f)

    for li in range(LAYERS):
        p = "model.layers.%d." % li
        hd = D // HEADS
        w[p + "input_layernorm.weight"] = norm_w()
        w[p + "post_attention_layernorm.weight"] = norm_w()
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.25, (HEADS * hd, D)).astype(f)
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.25, (KV * hd, D)).astype(f)
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.125, (KV * hd, D)).astype(f)
        o = rng.normal(0, 0.125, (D, HEADS * hd))
        o[0, :] = 0                       # never write the bias channel
        w[p + "self_attn.o_proj.weight"] = o.astype(f)
        for n in ("gate_proj", "up_proj"):
            m = rng.normal(0, 0.125, (INTER, D))
            m[:, 0] = 0                   # calibrated later
            w[p + "mlp.%s.weight" % n] = m.astype(f)
        dn = rng.normal(0, 0.1, (D, INTER))
        dn[0, :] = 0
        w[p + "mlp.down_proj.weight"] = dn.astype(f)
    w["model.norm.weight"] = norm_w()
    w["lm_head.weight"] = rng.normal(0, 0.6, (VOCAB, D)).astype(f)
    return w


class _Tap(llama_ref.Model):
    """Model that records the normalized FFN input of one layer."""
    tap_layer = -1

    def _mlp(self, li, x, stats):
        if li == self.tap_layer:
            self.tapped.append(x.copy())
        return super()._mlp(li, x, stats)


def _ffn_inputs(cfg, w, li, plist):
    m = _Tap(config=cfg, weights=w)
    m.tap_layer, m.tapped = li, []
    for p in plist:
        m.forward(p, m.new_cache(len(p)))
    return np.concatenate(m.tapped)


def _solve(rand, xn0, pred, want):
    """Bisection on the bias-channel weight c so that mean(pred(rand + c*xn0)) == want;
    pred's rate must fall as c falls (c <= 0 searched)."""
    lo, hi = -50.0, 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(pred(rand + np.float32(mid) * xn0[:, None])) > want:
            hi = mid
        else:
            lo = mid
    return np.float32((lo + hi) / 2)


def calibrate(kind, cfg, w, plist):
    """Set column 0 of gate/up per layer, in layer order (each layer sees the final
    earlier layers)."""
    if kind not in SPARSE:
        return
    for li in range(LAYERS):
        x = _ffn_inputs(cfg, w, li, plist)
        xn0 = x[:, 0]
        gname, uname = ("model.layers.%d.mlp.%s_proj.weight" % (li, n) for n in ("gate", "up"))
        g_rand = x @ w[gname].T
        if kind == "relu":
            w[gname][:, 0] = _solve(g_rand, xn0, lambda g: g > 0, TARGET_ACTIVE)
        elif kind == "fatrelu":
            w[gname][:, 0] = _solve(g_rand, xn0, lambda g: g >= FATRELU_T, TARGET_ACTIVE)
        elif kind == "drelu":
            u_rand = x @ w[uname].T
            each = float(np.sqrt(TARGET_ACTIVE))
            w[gname][:, 0] = _solve(g_rand, xn0, lambda g: g > 0, each)
            w[uname][:, 0] = _solve(u_rand, xn0, lambda u: u > 0, each)
        elif kind == "cats":
            # wide gate (std ~3) pushed negative, so that both small negative silu values
            # (|silu| <= 0.278) and positive ones straddle the layer's threshold
            w[gname][:, 1:] *= 3
            g_rand = x @ w[gname].T
            t = CATS_T[li]
            w[gname][:, 0] = _solve(g_rand, xn0, lambda g: np.abs(g / (1 + np.exp(-g))) > t,
                                    TARGET_ACTIVE)


class _Margin(llama_ref.Model):
    """Model that records, per layer, the value an activation with a jump
    compares with its threshold (fatrelu: the gate, against hidden_act_param;
    cats: |silu(gate)|, against the layer's threshold), where a neuron's
    coefficient jumps from 0 to t*up. Two correct float32 implementations,
    summing in different orders, can fall on different sides of the
    threshold; a reference whose logits are to be matched within 1e-4 must
    keep every value well away from it (place_thresholds)."""

    def _mlp(self, li, x, stats):
        c = self.cfg
        if c.ffn in ("fatrelu", "cats"):
            gate = x @ self.w["model.layers.%d.mlp.gate_proj.weight" % li].T
            v = gate if c.ffn == "fatrelu" else np.abs(gate / (1 + np.exp(-gate)))
            self.seen.setdefault(li, []).append(v.ravel().astype(np.float32))
        return super()._mlp(li, x, stats)

    def margin(self):
        """The smallest distance of a recorded value from its threshold."""
        c, m = self.cfg, float("inf")
        for li, vs in self.seen.items():
            t = np.float32(c.act_param if c.ffn == "fatrelu" else c.thresholds[li])
            m = min(m, float(np.abs(np.concatenate(vs) - t).min()))
        return m


def _gap_midpoint(values, t, span=0.01):
    """A threshold near t in the middle of the widest gap between the sorted
    values within +-span (as a quantile) of t; rounded to float32."""
    v = np.sort(values)
    q = np.searchsorted(v, np.float32(t))
    lo, hi = max(0, q - int(span * len(v))), min(len(v) - 1, q + int(span * len(v)))
    i = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float(np.float32((float(v[i]) + float(v[i + 1])) / 2))


def place_thresholds(kind, cfg, model):
    """fatrelu/cats: move the threshold(s) into the widest nearby gap of the
    values the reference runs compared with them. Nothing compared falls
    between the old and the new threshold, so the runs stay what they were,
    and every value is now half a gap away."""
    if kind == "fatrelu":
        allv = np.concatenate([np.concatenate(v) for v in model.seen.values()])
        cfg["hidden_act_param"] = _gap_midpoint(allv, cfg["hidden_act_param"])
    elif kind == "cats":
        cfg["thresholds"] = [_gap_midpoint(np.concatenate(model.seen[li]), t) for li, t in enumerate(cfg["thresholds"])]


def run_references(model, plist):
    stats = llama_ref.SparsityStats(LAYERS)
    out = []
    model.seen = {}
    for p in plist:
        ids, logits = llama_ref.greedy(model, p, N_GEN, stats)
        top2 = np.sort(logits, axis=-1)[:, -2:]
        r = {"prompt_ids": p, "greedy_ids": ids,
             "min_top1_margin": float((top2[:, 1] - top2[:, 0]).min()),
             "last_prompt_logits": [float(v) for v in logits[0]]}
        out.append(r)
    if model.seen:
        for r in out:
            r["min_threshold_margin"] = model.margin()
    return out, stats


def problems(kind, runs, sparsity):
    bad = []
    for r in runs:
        if len(set(r["greedy_ids"])) < 4:
            bad.append("degenerate greedy output %s" % r["greedy_ids"][:8])
        if r["min_top1_margin"] <= 1e-3:
            bad.append("top-1 margin %.2e" % r["min_top1_margin"])
        if r.get("min_threshold_margin", 1.0) <= THRESHOLD_MARGIN:
            bad.append("a pre-activation %.2e from the activation threshold" % r["min_threshold_margin"])
    if kind in SPARSE:
        for li, s in enumerate(sparsity):
            if not 0.80 <= s <= 0.95:
                bad.append("layer %d sparsity %.3f outside 80-95%%" % (li, s))
    return bad


def build(kind, seed, attempts=20):
    plist = prompts(kind)
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, attempt])
        w = random_weights(rng)
        cfg = config(kind)
        calibrate(kind, cfg, w, plist)
        model = _Margin(config=cfg, weights=w)
        runs, stats = run_references(model, plist)
        if kind in ("fatrelu", "cats"):
            place_thresholds(kind, cfg, model)
            model = _Margin(config=cfg, weights=w)
            runs, stats = run_references(model, plist)
        sparsity = stats.per_layer()
        bad = problems(kind, runs, sparsity)
        print("%s seed %d attempt %d: ffn sparsity %s%s" % (
            kind, seed, attempt, " ".join("%.3f" % s for s in sparsity),
            ("; rejected: " + "; ".join(bad)) if bad else ""))
        if not bad:
            return cfg, w, runs, sparsity, attempt
    raise RuntimeError("%s: no acceptable draw in %d attempts from seed %d" % (kind, attempts, seed))


def window_check(cfg, w, runs):
    """Whether disabling the sliding window changes any greedy id (it should)."""
    plain = dict(cfg)
    plain["sliding_window"] = None
    m = llama_ref.Model(config=plain, weights=w)
    return any(llama_ref.greedy(m, r["prompt_ids"], N_GEN)[0] != r["greedy_ids"] for r in runs)


def write(out, kind, seed, cfg, w, runs, sparsity, attempt):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    for n in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(DEMO, n), os.path.join(out, n))
    tensorfile.write(os.path.join(out, "model.safetensors"), w)
    ref = {
        "kind": kind, "seed": seed, "attempt": attempt,
        "generated_by": "scripts/ref/tiny_ckpt.py (numpy float32 reference, scripts/ref/llama_ref.py)",
        "conventions": "greedy = argmax (lowest id on ties), %d tokens, no stop at EOS; prompts "
                       "start with 2; last_prompt_logits = the logits that chose greedy_ids[0]; "
                       "min_top1_margin = smallest top-1 minus top-2 logit over the generated "
                       "steps; ffn_sparsity = per layer, fraction of FFN coefficients "
                       "act(gate)*up that are exactly 0 over every position fed in the greedy "
                       "runs (prompt positions and generated tokens)" % N_GEN,
        "prompts": runs,
        "ffn_sparsity": sparsity,
    }
    if kind == "mistral-window":
        ref["window_changes_greedy_ids"] = window_check(cfg, w, runs)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(prog="tiny_ckpt.py", description="write a tiny random sparse "
                                 "Llama-family checkpoint with numpy references")
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    try:
        cfg, w, runs, sparsity, attempt = build(a.kind, a.seed)
        write(a.out_dir, a.kind, a.seed, cfg, w, runs, sparsity, attempt)
    except (OSError, RuntimeError, ValueError) as e:
        print("tiny_ckpt.py: %s: %s" % (a.out_dir, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
