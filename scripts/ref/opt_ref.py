#!/usr/bin/env python3
"""opt_ref.py: independent pure-numpy float32 forward pass of OPT (OPTForCausalLM).

Written from HF transformers models/opt/modeling_opt.py (the pieces cited below), not
from the C client; the sibling of llama_ref.py with the same interface (new_cache(),
forward(ids, cache) -> logits), so llama_ref.greedy() and llama_ref.perplexity() run it.
Covers the configurations OPT checkpoints use with a ReLU FFN:
  - OPTLearnedPositionalEmbedding: positions 0.. (no padding: cumsum(mask) - 1) looked
    up at position + 2 (its `offset`);
  - OPTDecoderLayer with do_layer_norm_before (pre-LN; every OPT but opt-350m):
    x += out_proj(attn(self_attn_layer_norm(x))); x += fc2(relu(fc1(final_layer_norm(x))));
  - OPTAttention: q = q_proj(x) * head_dim^-0.5 (scaled after its bias), causal
    softmax(q k^T) in float32, biases on every projection (enable_bias);
  - OPTDecoder: final_layer_norm after the last layer, then lm_head (tied to
    embed_tokens unless the checkpoint has lm_head.weight); nn.LayerNorm eps 1e-5.
Configs that would change this math (word_embed_proj_dim != hidden_size: project_in /
project_out; do_layer_norm_before false; another activation; no biases; no affine
LayerNorm; _remove_final_layer_norm) are refused, not ignored.

API:   m = OptModel(config_dict, {name: f32 array}); logits = m.forward(ids, m.new_cache())
Needs numpy (Debian: /usr/bin/python3 with python3-numpy).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402

F32 = np.float32
POS_OFFSET = 2        # OPTLearnedPositionalEmbedding.offset
LN_EPS = 1e-5         # nn.LayerNorm default, as OPTDecoderLayer builds its norms

# config keys whose other values would change the math: refused
_REQUIRED = {
    "do_layer_norm_before": True, "activation_function": "relu", "enable_bias": True,
    "layer_norm_elementwise_affine": True, "_remove_final_layer_norm": False,
}


def layer_norm(x, w, b):
    """nn.LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b, float32."""
    mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True, dtype=F32)
    return ((x - mean) / np.sqrt(var + F32(LN_EPS)) * w + b).astype(F32)


class OptModel:
    """An OPT checkpoint given as its parsed config.json and {HF name: f32 array}."""

    def __init__(self, config, weights, where="config.json"):
        if config.get("model_type") != "opt":
            raise llama_ref.ConfigError("%s: model_type %r is not opt" % (where, config.get("model_type")))
        for key, want in _REQUIRED.items():
            if config.get(key, want) != want:
                raise llama_ref.ConfigError("%s: %s=%r is not supported by the reference" % (where, key, config[key]))
        self.d = int(config["hidden_size"])
        if int(config.get("word_embed_proj_dim", self.d)) != self.d:
            raise llama_ref.ConfigError("%s: word_embed_proj_dim != hidden_size (project_in/out)" % where)
        self.n_layers = int(config["num_hidden_layers"])
        self.n_heads = int(config["num_attention_heads"])
        self.head_dim = self.d // self.n_heads
        self.max_pos = int(config.get("max_position_embeddings", 2048))
        self.w = weights
        p = "model.decoder."
        self.emb = weights[p + "embed_tokens.weight"]
        self.pos = weights[p + "embed_positions.weight"]
        self.lm_head = weights.get("lm_head.weight", self.emb)
        # llama_ref.Cache keeps per-layer K/V of [max_pos, heads, head_dim]
        self.cfg = type("OptCacheShape", (), {"n_layers": self.n_layers, "n_kv": self.n_heads,
                                              "head_dim": self.head_dim})

    def new_cache(self, max_pos=None):
        return llama_ref.Cache(self.cfg, max_pos or self.max_pos)

    def _attention(self, li, x, cache):
        """OPTAttention.forward (eager): q scaled by head_dim^-0.5 after q_proj's bias,
        causal mask, softmax in float32, out_proj."""
        p = "model.decoder.layers.%d.self_attn." % li
        T, H, hd = x.shape[0], self.n_heads, self.head_dim
        q = ((x @ self.w[p + "q_proj.weight"].T + self.w[p + "q_proj.bias"]) * F32(hd ** -0.5)).reshape(T, H, hd)
        k = (x @ self.w[p + "k_proj.weight"].T + self.w[p + "k_proj.bias"]).reshape(T, H, hd)
        v = (x @ self.w[p + "v_proj.weight"].T + self.w[p + "v_proj.bias"]).reshape(T, H, hd)
        n0 = cache.n
        cache.k[li][n0:n0 + T] = k
        cache.v[li][n0:n0 + T] = v
        K, V = cache.k[li][:n0 + T], cache.v[li][:n0 + T]
        allowed = np.arange(n0 + T)[None, :] <= np.arange(n0, n0 + T)[:, None]
        out = np.empty((T, H, hd), F32)
        for h in range(H):
            s = np.where(allowed, q[:, h, :] @ K[:, h, :].T, F32(-np.inf))
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            out[:, h, :] = (s / s.sum(axis=-1, keepdims=True)).astype(F32) @ V[:, h, :]
        return out.reshape(T, H * hd) @ self.w[p + "out_proj.weight"].T + self.w[p + "out_proj.bias"]

    def _mlp(self, li, x):
        """OPTDecoderLayer: fc2(relu(fc1(x)))."""
        p = "model.decoder.layers.%d." % li
        h = np.maximum(x @ self.w[p + "fc1.weight"].T + self.w[p + "fc1.bias"], F32(0))
        return h @ self.w[p + "fc2.weight"].T + self.w[p + "fc2.bias"]

    def forward(self, ids, cache, stats=None):
        """Run ids at positions cache.n..; return logits [len(ids), vocab] (stats unused)."""
        T = len(ids)
        if cache.n + T > len(cache.k[0]):
            raise ValueError("sequence of %d positions exceeds the cache" % (cache.n + T))
        pos = np.arange(cache.n, cache.n + T) + POS_OFFSET
        x = (self.emb[np.asarray(ids, dtype=np.int64)] + self.pos[pos]).astype(F32)
        for li in range(self.n_layers):
            p = "model.decoder.layers.%d." % li
            x = x + self._attention(li, layer_norm(x, self.w[p + "self_attn_layer_norm.weight"],
                                                   self.w[p + "self_attn_layer_norm.bias"]), cache)
            x = x + self._mlp(li, layer_norm(x, self.w[p + "final_layer_norm.weight"],
                                             self.w[p + "final_layer_norm.bias"]))
        cache.n += T
        x = layer_norm(x, self.w["model.decoder.final_layer_norm.weight"], self.w["model.decoder.final_layer_norm.bias"])
        return (x @ self.lm_head.T).astype(F32)
