#!/usr/bin/env python3
"""llama_ref.py: independent pure-numpy float32 forward pass of the Llama family.

The reference the C client is tested against, written from the public modeling code
(file and lines cited at each piece), not from the client. Covers:
  - Llama (HF transformers models/llama/modeling_llama.py): RMSNorm computed in float32,
    rotate-half RoPE with rope_theta, GQA (num_key_value_heads, repeat_kv), optional
    tied embeddings, no biases;
  - Mistral (models/mistral/modeling_mistral.py + masking_utils.py): the same block,
    plus the sliding-window causal mask;
  - the FFN activations of the sparse checkpoints in use (see ffn_activation()).
The forward keeps a KV cache, so a prompt is one batched call and each generated token
one more call; whole-sequence and cached results agree to float32 rounding.

API:   m = Model(model_dir); logits = m.forward(ids, cache) ...; greedy(m, ids, n);
       perplexity(m, ids, chunk, bos)
CLI:   llama_ref.py MODEL_DIR --ids "2 45 67" -n 32 [--logits OUT.f32]
       llama_ref.py MODEL_DIR --perplexity-ids FILE [--chunk 511] [--bos 2]
Needs numpy (Debian: /usr/bin/python3 with python3-numpy).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorfile  # noqa: E402

F32 = np.float32

# model_type -> whether config.json's sliding_window applies (Mistral-derived families)
FAMILIES = {
    "llama": False,
    "sparsellama": False,      # SparseLLM ProSparse (modeling_sparsellama.py)
    "sparse_llama": False,     # CATS on Llama
    "mistral": True,
    "sparse_mistral": True,    # CATS on Mistral (SparseMistralConfig extends MistralConfig)
    "bamboo": True,            # TurboSparse / Bamboo: Mistral-derived modeling_bamboo.py
}

# config keys whose non-default value would change the math below: refused, not ignored
_REFUSED = {
    "rope_scaling": None, "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1,
    "use_relu": False, "use_resilu": False, "cut_pre_mlp": False, "cut_pre_attn": False,
    "use_sparse_predictor": False,
}


class ConfigError(ValueError):
    pass


class Config:
    """The subset of config.json the forward pass uses, validated."""

    def __init__(self, cfg, where="config.json"):
        mt = cfg.get("model_type")
        if mt not in FAMILIES:
            raise ConfigError("%s: unsupported model_type %r" % (where, mt))
        for key, default in _REFUSED.items():
            if cfg.get(key) is not None and cfg[key] != default:
                raise ConfigError("%s: %s=%r is not supported by the reference" % (where, key, cfg[key]))
        self.model_type = mt
        self.d = int(cfg["hidden_size"])
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads") or self.n_heads)
        self.head_dim = int(cfg.get("head_dim") or self.d // self.n_heads)
        self.inter = int(cfg["intermediate_size"])
        self.vocab = int(cfg["vocab_size"])
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.theta = float(cfg.get("rope_theta", 10000.0))
        self.tie = bool(cfg.get("tie_word_embeddings", False))
        self.act = cfg.get("hidden_act", "silu")
        self.act_param = float(cfg.get("hidden_act_param", 0.0) or 0.0)
        self.window = cfg.get("sliding_window") if FAMILIES[mt] else None
        self.thresholds = None
        if self.n_heads % self.n_kv:
            raise ConfigError("%s: %d heads not a multiple of %d KV heads" % (where, self.n_heads, self.n_kv))
        # FFN kind, from the family's modeling file
        if mt == "bamboo":
            if self.act != "relu":
                raise ConfigError("%s: bamboo with hidden_act %r (only relu = dReLU)" % (where, self.act))
            self.ffn = "drelu"
        elif mt in ("sparse_llama", "sparse_mistral") and cfg.get("thresholds") is not None \
                and cfg.get("use_sparse_model", True):
            if self.act != "silu":
                raise ConfigError("%s: CATS thresholds with hidden_act %r" % (where, self.act))
            th = [float(t) for t in cfg["thresholds"]]
            if len(th) != self.n_layers:
                raise ConfigError("%s: %d thresholds for %d layers" % (where, len(th), self.n_layers))
            self.thresholds = th
            self.ffn = "cats"
        elif self.act in ("silu", "relu", "fatrelu"):
            self.ffn = self.act
        else:
            raise ConfigError("%s: unsupported hidden_act %r" % (where, self.act))
        if self.window is not None:
            self.window = int(self.window)


def ffn_activation(kind, gate, up, param):
    """Return h = act(gate) * up (the coefficients of down_proj's columns), float32.

    kind / source followed:
      silu    HF modeling_llama.py LlamaMLP.forward: down(act_fn(gate(x)) * up(x)),
              ACT2FN["silu"] = x * sigmoid(x) (activations.py SiLUActivation).
      relu    the same LlamaMLP with hidden_act "relu" (SparseLLM/ReluLLaMA-7B config).
      fatrelu ProSparse modeling_sparsellama.py LlamaMLP.__init__, "fatrelu" branch:
              mask = torch.ge(x, hidden_act_param); new_x[mask] = x[mask]  -> keeps gate
              where gate >= t, 0 elsewhere (applied to gate only, then * up).  NB vLLM's
              FatreluAndMul (MiniCPM-S) uses F.threshold, i.e. gate > t; the two differ
              only where gate == t exactly.
      drelu   Bamboo/TurboSparse modeling_bamboo.py BambooMLP.forward (quoted in
              SJTU-IPADS docs, bamboo.md "Model Architecture"):
              down(act_fn(gate(x)) * act_fn(up(x))) with act_fn = ReLU.
      cats    ScalingIntelligence/CATS experiments/models/sparse_mistral/sparse_silu.py
              MistralSparseSiluMLP.forward lines 993-1021: post_act = silu(gate);
              dead = post_act.abs() <= dead_threshold; post_act[dead] = 0; then
              down(post_act * up(x)); dead_threshold = config.thresholds[layer]
              (SparseMistralforCausalLM.__init__ lines 1156-1165).  (The later
              cats_package/cats.py Cats wrapper uses abs(x) < threshold instead.)
    param: fatrelu -> hidden_act_param; cats -> the layer's threshold.
    """
    if kind == "silu":
        return (gate / (F32(1) + np.exp(-gate))).astype(F32) * up
    if kind == "relu":
        return np.maximum(gate, F32(0)) * up
    if kind == "fatrelu":
        return np.where(gate >= F32(param), gate, F32(0)).astype(F32) * up
    if kind == "drelu":
        return np.maximum(gate, F32(0)) * np.maximum(up, F32(0))
    if kind == "cats":
        s = (gate / (F32(1) + np.exp(-gate))).astype(F32)
        s[np.abs(s) <= F32(param)] = F32(0)
        return s * up
    raise ValueError("unknown FFN kind %r" % kind)


def rms_norm(x, w, eps):
    """HF LlamaRMSNorm.forward (modeling_llama.py): x * rsqrt(mean(x^2) + eps) * w, in f32."""
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    return (w * (x * (F32(1) / np.sqrt(var + F32(eps))))).astype(F32)


def rope_tables(head_dim, theta, positions):
    """HF LlamaRotaryEmbedding: inv_freq = 1/theta^(arange(0,hd,2)/hd); emb = cat(f, f)."""
    inv = (F32(1) / (F32(theta) ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(F32)
                                      / F32(head_dim)))).astype(F32)
    freqs = np.outer(np.asarray(positions, dtype=F32), inv).astype(F32)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(F32), np.sin(emb).astype(F32)


def apply_rope(x, cos, sin):
    """HF apply_rotary_pos_emb: x*cos + rotate_half(x)*sin; rotate_half = cat(-x2, x1).
    x: [T, heads, hd]; cos/sin: [T, hd]."""
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return (x * cos[:, None, :] + rot * sin[:, None, :]).astype(F32)


class Cache:
    """Per-layer keys/values [max_pos, n_kv, head_dim] after RoPE; n = positions filled."""

    def __init__(self, cfg, max_pos):
        self.k = [np.zeros((max_pos, cfg.n_kv, cfg.head_dim), F32) for _ in range(cfg.n_layers)]
        self.v = [np.zeros((max_pos, cfg.n_kv, cfg.head_dim), F32) for _ in range(cfg.n_layers)]
        self.n = 0


class Model:
    """A Llama-family checkpoint folder (config.json + model*.safetensors), weights as f32."""

    def __init__(self, model_dir=None, config=None, weights=None):
        """Load model_dir, or build from a parsed config.json dict and {name: f32 array}."""
        if model_dir is not None:
            where = os.path.join(model_dir, "config.json")
            with open(where) as f:
                config = json.load(f)
            files = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
            if not files:
                raise FileNotFoundError("%s: no .safetensors file" % model_dir)
            weights = {}
            for n in files:
                weights.update(tensorfile.read(os.path.join(model_dir, n)))
        else:
            where, model_dir = "config", "model"
        self.raw_config = config
        self.cfg = Config(config, where)
        self.w = weights
        if "lm_head.weight" in self.w:
            self.lm_head = self.w["lm_head.weight"]
        elif self.cfg.tie:
            self.lm_head = self.w["model.embed_tokens.weight"]
        else:
            raise ValueError("%s: no lm_head.weight and tie_word_embeddings is false" % model_dir)
        self.max_pos = int(config.get("max_position_embeddings", 2048))

    def new_cache(self, max_pos=None):
        return Cache(self.cfg, max_pos or self.max_pos)

    def _attention(self, li, x, cache, pos):
        """HF LlamaAttention.forward + eager_attention_forward (modeling_llama.py): q/k/v
        projections, RoPE on q and k, repeat_kv (query head h uses KV head h // n_rep),
        softmax(q k^T * head_dim^-0.5 + mask) in float32, then o_proj.  Mask: causal,
        plus for Mistral-family configs with sliding_window N, transformers
        masking_utils.py sliding_window_overlay (kv_idx > q_idx - sliding_window) AND
        causal_mask_function (kv_idx <= q_idx): position i sees j with i-N < j <= i."""
        c, p = self.cfg, "model.layers.%d.self_attn." % li
        T = x.shape[0]
        q = (x @ self.w[p + "q_proj.weight"].T).reshape(T, c.n_heads, c.head_dim)
        k = (x @ self.w[p + "k_proj.weight"].T).reshape(T, c.n_kv, c.head_dim)
        v = (x @ self.w[p + "v_proj.weight"].T).reshape(T, c.n_kv, c.head_dim)
        cos, sin = rope_tables(c.head_dim, c.theta, pos)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        n0 = cache.n
        cache.k[li][n0:n0 + T] = k
        cache.v[li][n0:n0 + T] = v
        K, V = cache.k[li][:n0 + T], cache.v[li][:n0 + T]
        qi = np.arange(n0, n0 + T)[:, None]
        kj = np.arange(n0 + T)[None, :]
        allowed = kj <= qi
        if c.window is not None:
            allowed &= kj > qi - c.window
        rep = c.n_heads // c.n_kv
        scale = F32(c.head_dim ** -0.5)
        out = np.empty((T, c.n_heads, c.head_dim), F32)
        for h in range(c.n_heads):
            s = (q[:, h, :] @ K[:, h // rep, :].T) * scale
            s = np.where(allowed, s, F32(-np.inf))
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s = (s / s.sum(axis=-1, keepdims=True)).astype(F32)
            out[:, h, :] = s @ V[:, h // rep, :]
        return out.reshape(T, c.n_heads * c.head_dim) @ self.w[p + "o_proj.weight"].T

    def _mlp(self, li, x, stats):
        c, p = self.cfg, "model.layers.%d.mlp." % li
        gate = x @ self.w[p + "gate_proj.weight"].T
        up = x @ self.w[p + "up_proj.weight"].T
        param = c.thresholds[li] if c.ffn == "cats" else c.act_param
        h = ffn_activation(c.ffn, gate, up, param)
        if stats is not None:
            stats.add(li, h == 0)
        return h @ self.w[p + "down_proj.weight"].T

    def forward(self, ids, cache, stats=None):
        """Run ids (list of ints) at positions cache.n.. ; return logits [len(ids), vocab].
        HF LlamaDecoderLayer.forward: x += attn(input_layernorm(x)); x += mlp(
        post_attention_layernorm(x)); final model.norm, then lm_head."""
        c = self.cfg
        T = len(ids)
        if cache.n + T > len(cache.k[0]):
            raise ValueError("sequence of %d positions exceeds the cache" % (cache.n + T))
        pos = np.arange(cache.n, cache.n + T)
        x = self.w["model.embed_tokens.weight"][np.asarray(ids, dtype=np.int64)].astype(F32)
        for li in range(c.n_layers):
            p = "model.layers.%d." % li
            x = x + self._attention(li, rms_norm(x, self.w[p + "input_layernorm.weight"], c.eps), cache, pos)
            x = x + self._mlp(li, rms_norm(x, self.w[p + "post_attention_layernorm.weight"], c.eps), stats)
        cache.n += T
        x = rms_norm(x, self.w["model.norm.weight"], c.eps)
        return (x @ self.lm_head.T).astype(F32)


class SparsityStats:
    """Counts, per layer, FFN coefficients h = act(gate)*up that are exactly zero."""

    def __init__(self, n_layers):
        self.zero = [0] * n_layers
        self.total = [0] * n_layers
        self.active_per_token = [[] for _ in range(n_layers)]

    def add(self, li, zero_mask):
        self.zero[li] += int(zero_mask.sum())
        self.total[li] += zero_mask.size
        self.active_per_token[li].extend((~zero_mask).sum(axis=-1).tolist())

    def per_layer(self):
        return [z / t if t else 0.0 for z, t in zip(self.zero, self.total)]


def greedy(model, prompt_ids, n, stats=None):
    """Greedy decoding (argmax, lowest id on ties, no stop at EOS).
    Returns (generated ids, logits [n, vocab]); row i chose generated id i."""
    cache = model.new_cache(len(prompt_ids) + n)
    logits = model.forward(prompt_ids, cache, stats)[-1]
    out, rows = [], []
    for i in range(n):
        rows.append(logits)
        nxt = int(np.argmax(logits))
        out.append(nxt)
        if i + 1 < n:
            logits = model.forward([nxt], cache, stats)[-1]
    return out, np.stack(rows).astype(F32)


def perplexity(model, ids, chunk=511, bos=2, stats=None):
    """Cross-entropy over consecutive chunks of `chunk` tokens, each fed as [bos] +
    chunk[:-1] so that every token is scored once.  Returns (tokens, mean CE nats)."""
    total, count = 0.0, 0
    for s in range(0, len(ids), chunk):
        part = list(ids[s:s + chunk])
        logits = model.forward([bos] + part[:-1], model.new_cache(len(part)), stats).astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
        total += float((lse - logits[np.arange(len(part)), part]).sum())
        count += len(part)
    return count, total / count


def _parse_ids(s):
    return [int(t) for t in s.replace(",", " ").split()]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="llama_ref.py", description="numpy reference forward pass "
                                 "of Llama-family checkpoints (greedy ids or chunked perplexity)")
    ap.add_argument("model_dir")
    ap.add_argument("--ids", help="prompt token ids, e.g. \"2 45 67\" (include BOS yourself)")
    ap.add_argument("-n", type=int, default=32, help="tokens to generate (default 32)")
    ap.add_argument("--logits", metavar="OUT.f32", help="write [n, vocab] float32 LE: row i = the "
                    "logits that chose generated id i (row 0 = last prompt position)")
    ap.add_argument("--perplexity-ids", metavar="FILE", help="whitespace-separated token ids (no BOS)")
    ap.add_argument("--chunk", type=int, default=511)
    ap.add_argument("--bos", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true", help="print FFN sparsity per layer")
    a = ap.parse_args(argv)
    if (a.ids is None) == (a.perplexity_ids is None):
        ap.error("give exactly one of --ids and --perplexity-ids")
    try:
        model = Model(a.model_dir)
        stats = SparsityStats(model.cfg.n_layers)
        if a.ids is not None:
            ids, logits = greedy(model, _parse_ids(a.ids), a.n, stats)
            print(" ".join(map(str, ids)))
            if a.logits:
                logits.astype("<f4").tofile(a.logits)
        else:
            with open(a.perplexity_ids) as f:
                ids = _parse_ids(f.read())
            n, ce = perplexity(model, ids, a.chunk, a.bos, stats)
            print("tokens %d cross_entropy_nats %.6f perplexity %.4f" % (n, ce, float(np.exp(ce))))
        if a.verbose:
            print("ffn_sparsity " + " ".join("%.4f" % s for s in stats.per_layer()), file=sys.stderr)
    except (OSError, ValueError, KeyError) as e:
        print("llama_ref.py: %s: %s" % (a.model_dir, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
