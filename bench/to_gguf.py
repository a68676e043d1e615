#!/usr/bin/env python3
"""bench/to_gguf.py: a Llama checkpoint in the Hugging Face layout (the
folder inflash-mkmodel writes: config.json, model.safetensors or shards with
model.safetensors.index.json, tokenizer.json) -> one GGUF file (architecture
llama) written with llama.cpp's own gguf-py, so that bench/warm.sh can time
llama.cpp on the very weights inflash runs.

Run with a Python that has numpy and gguf-py on its path:
    PYTHONPATH=LLAMA_CPP/gguf-py /usr/bin/python3 bench/to_gguf.py CKPT OUT.gguf [--outtype f16|f32]

What it writes, following llama.cpp's converter (convert_hf_to_gguf.py, whose
Llama class is conversion/llama.py's LlamaModel in llama.cpp's tree):
- the llama.* hyperparameters from config.json;
- every 2-D tensor in --outtype (f16 by default), norms in F32, named as
  llama.cpp names them (token_embd, blk.N.attn_q, ..., output_norm; output
  only when the head is not tied);
- q_proj and k_proj rows permuted as LlamaModel.permute does (within each
  head, the rotate-half pairs (i, i + d/2) become interleaved pairs
  (2i, 2i+1), ggml's RoPE order; k with the KV heads' count);
- the tokenizer as tokenizer.ggml.* with model "llama" (SentencePiece-style
  merging by score): tokenizer.json's vocabulary in id order, each token's
  score minus the rank of the first BPE merge that makes it (so merging by
  highest score is merging by lowest rank), <0xNN> tokens as bytes, the
  special tokens as control tokens, BOS/EOS from config.json.
Exit status: 0 ok, 1 runtime error, 2 usage error."""
import argparse
import json
import os
import re
import struct
import sys

PROG = "bench/to_gguf.py"

try:
    import numpy as np
    import gguf
except ImportError as e:
    sys.stderr.write("%s: %s (run with /usr/bin/python3 and PYTHONPATH=LLAMA_CPP/gguf-py)\n" % (PROG, e))
    sys.exit(1)


class Fail(Exception):
    pass


# Hugging Face tensor name (after model.layers.N.) -> llama.cpp's, per layer
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
ST_DTYPES = {"F32": np.float32, "F16": np.float16}


def gguf_name(name):
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in LAYER_NAMES:
        return "blk.%s.%s" % (m.group(1), LAYER_NAMES[m.group(2)])
    raise Fail("%s: a tensor llama.cpp's llama architecture has no place for" % name)


def safetensors_tensors(ckpt):
    """{name: (file, dtype, shape, offset)} over the checkpoint's files"""
    idx = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        path = os.path.join(ckpt, fn)
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            head = json.loads(f.read(n))
        for name, t in head.items():
            if name == "__metadata__":
                continue
            if t["dtype"] == "BF16":
                dt = "BF16"
            elif t["dtype"] in ST_DTYPES:
                dt = t["dtype"]
            else:
                raise Fail("%s: %s: dtype %s not supported" % (path, name, t["dtype"]))
            out[name] = (path, dt, tuple(t["shape"]), 8 + n + t["data_offsets"][0])
    return out


def load_tensor(info):
    path, dt, shape, off = info
    count = int(np.prod(shape)) if shape else 1
    if dt == "BF16":
        raw = np.fromfile(path, dtype=np.uint16, count=count, offset=off)
        return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.fromfile(path, dtype=ST_DTYPES[dt], count=count, offset=off).reshape(shape)


def permute(w, n_head, n_head_kv=None):
    """llama.cpp's LlamaModel.permute (conversion/llama.py): rows of each head
    from the rotate-half order to RoPE's interleaved order"""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocab(ckpt, cfg):
    """(tokens, scores, types) from tokenizer.json, in id order"""
    path = os.path.join(ckpt, "tokenizer.json")
    try:
        with open(path) as f:
            tj = json.load(f)
    except OSError as e:
        raise Fail("%s: %s" % (path, e.strerror))
    m = tj.get("model", {})
    if m.get("type") != "BPE" or not m.get("byte_fallback"):
        raise Fail("%s: not a SentencePiece-style BPE tokenizer (model BPE with byte_fallback)" % path)
    ids = m["vocab"]
    n = max(ids.values()) + 1
    if n != len(ids) or n != cfg["vocab_size"]:
        raise Fail("%s: %d tokens, ids up to %d, config vocab_size %d" % (path, len(ids), n - 1, cfg["vocab_size"]))
    tokens = [None] * n
    for t, i in ids.items():
        tokens[i] = t
    merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x) for x in m.get("merges", [])]
    scores = [-float(len(merges) + 1)] * n   # tokens no merge makes: below every merge
    for rank in range(len(merges) - 1, -1, -1):
        made = "".join(merges[rank])
        if made in ids:
            scores[ids[made]] = -float(rank)
    special = {a["id"] for a in tj.get("added_tokens", []) if a.get("special")}
    types = []
    for i, t in enumerate(tokens):
        if i in special:
            types.append(gguf.TokenType.UNKNOWN if t == "<unk>" else gguf.TokenType.CONTROL)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    prepend = any(nm.get("type") == "Prepend" for nm in (tj.get("normalizer") or {}).get("normalizers", []))
    return tokens, scores, types, prepend


def convert(ckpt, out, outtype):
    try:
        with open(os.path.join(ckpt, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        raise Fail("%s/config.json: %s" % (ckpt, e))
    if cfg.get("model_type") not in ("llama", "mistral") or cfg.get("hidden_act") != "silu":
        raise Fail("%s: model_type %s, hidden_act %s: only SwiGLU Llama checkpoints (llama.cpp's llama "
                   "architecture)" % (ckpt, cfg.get("model_type"), cfg.get("hidden_act")))
    if cfg.get("sliding_window"):
        raise Fail("%s: a sliding window; llama.cpp's llama architecture attends to everything" % ckpt)
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    tensors = safetensors_tensors(ckpt)
    tied = "lm_head.weight" not in tensors
    wdt = np.float16 if outtype == "f16" else np.float32

    w = gguf.GGUFWriter(out, "llama")
    w.add_name(os.path.basename(os.path.normpath(ckpt)))
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(d)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(d // nh)
    w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32)
    tokens, scores, types, prepend = vocab(ckpt, cfg)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(cfg.get("bos_token_id", 1))
    w.add_eos_token_id(cfg.get("eos_token_id", 2))
    if "<unk>" in tokens:
        w.add_unk_token_id(tokens.index("<unk>"))
    w.add_add_bos_token(True)
    w.add_add_space_prefix(prepend)

    # the tensor table first, then the data one tensor at a time (memory: one tensor)
    plan = []
    for name in sorted(tensors, key=lambda x: (x.startswith("model.layers."), tensor_order(x))):
        path, dt, shape, _ = tensors[name]
        t = np.float32 if len(shape) == 1 else wdt
        nbytes = int(np.prod(shape)) * np.dtype(t).itemsize
        gname = gguf_name(name)
        w.add_tensor_info(gname, shape, np.dtype(t), nbytes)
        plan.append((name, t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, t in plan:
        x = load_tensor(tensors[name]).astype(np.float32)
        if name.endswith("self_attn.q_proj.weight"):
            x = permute(x, nh, nh)
        elif name.endswith("self_attn.k_proj.weight"):
            x = permute(x, nh, nkv)
        w.write_tensor_data(np.ascontiguousarray(x.astype(t)))
    w.close()
    return len(plan), tied


def tensor_order(name):
    """layers in numeric order (model.layers.10 after model.layers.9)"""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    return (int(m.group(1)), m.group(2)) if m else (-1, name)


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="the Hugging Face checkpoint folder")
    ap.add_argument("out", help="the GGUF file to write")
    ap.add_argument("--outtype", choices=("f16", "f32"), default="f16", help="dtype of the matrices (default f16)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    tmp = a.out + ".tmp.%d" % os.getpid()
    try:
        n, tied = convert(a.ckpt, tmp, a.outtype)
        os.replace(tmp, a.out)
    except (Fail, OSError, KeyError, ValueError) as e:
        msg = str(e) if isinstance(e, Fail) else "%s: %s" % (a.ckpt, e)
        sys.stderr.write("%s: %s\n" % (PROG, msg))
        if os.path.exists(tmp):
            os.unlink(tmp)
        return 1
    if a.verbose:
        sys.stderr.write("%s: %s -> %s: %d tensors, %s%s\n" % (PROG, a.ckpt, a.out, n, a.outtype,
                                                            ", head tied to the embeddings" if tied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
