#!/usr/bin/env python3
"""train_relu_llama.py: trains the relu-llama-shakespeare test model (PyTorch, CPU).

A ReLU-gated Llama (ReLU-Llama's FFN: down(relu(gate x) * up x)), RMSNorm, rotate-half
RoPE, GQA, tied embeddings, on the demo model's training split of tiny Shakespeare
(bytes [0, 1003857)) with the demo tokenizer, every row starting with </s> (id 2).
Sparsity: ProSparse-style progressive L1 penalty on relu(gate): loss = CE + sum_l
lambda_l * mean(relu(gate_l)); each lambda_l follows a per-layer sparsity target that
rises (sin^2) from the layer's measured sparsity at --l1-start of training to --target
at --l1-end and is then held; lambda_l moves in log space each step by
--l1-eta * (target - batch sparsity) (floor 1e-4).
Exports f16 safetensors (HF names, lm_head tied), config.json, the tokenizer files,
and the training figures (JSON) to --log.  Run with Debian's python3-torch:
  nice -n 10 /usr/bin/python3 scripts/ref/train_relu_llama.py --out models/relu-llama-shakespeare
The references (reference.json) are computed afterwards in numpy by make_reference.py.
"""
import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import tensorfile  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(ROOT, "models", "opt-relu-shakespeare")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json")
TRAIN_END = 1003857   # demo README: training bytes [0, 1003857); the rest is held out
BOS = 2


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps))


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        d, hd = a.hidden, a.hidden // a.heads
        self.a = a
        self.input_layernorm = RMSNorm(d, a.eps)
        self.post_attention_layernorm = RMSNorm(d, a.eps)
        self.q_proj = nn.Linear(d, a.heads * hd, bias=False)
        self.k_proj = nn.Linear(d, a.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, a.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(a.heads * hd, d, bias=False)
        self.gate_proj = nn.Linear(d, a.ffn, bias=False)
        self.up_proj = nn.Linear(d, a.ffn, bias=False)
        self.down_proj = nn.Linear(a.ffn, d, bias=False)
        self.drop = nn.Dropout(a.dropout)

    def forward(self, x, cos, sin, mask):
        a = self.a
        B, T, _ = x.shape
        hd = a.hidden // a.heads
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, a.heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(B, T, a.kv_heads, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rep = a.heads // a.kv_heads
        q = q.reshape(B, a.kv_heads, rep, T, hd)     # query head h uses KV head h // rep
        s = (q @ k.unsqueeze(2).transpose(-1, -2)).float() * (hd ** -0.5) + mask
        att = (torch.softmax(s, dim=-1).to(v.dtype) @ v.unsqueeze(2)).reshape(B, a.heads, T, hd)
        x = x + self.drop(self.o_proj(att.transpose(1, 2).reshape(B, T, a.heads * hd)))
        h = self.post_attention_layernorm(x)
        act = F.relu(self.gate_proj(h))
        x = x + self.drop(self.down_proj(act * self.up_proj(h)))
        return x, act


class ReluLlama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.a = a
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList([Block(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.hidden, a.eps)
        hd = a.hidden // a.heads
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
        freqs = torch.outer(torch.arange(a.maxpos).float(), inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * a.layers) if n.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids):
        T = ids.shape[1]
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.embed_tokens(ids)
        acts = []
        for blk in self.layers:
            x, act = blk(x, self.cos[:T], self.sin[:T], mask)
            acts.append(act)
        x = self.norm(x)
        return x @ self.embed_tokens.weight.t().to(x.dtype), acts


def lr_at(a, step, progress):
    """Linear warm-up over --warmup steps, then cosine (on training progress 0..1) to
    --min-lr-frac of the peak."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def evaluate(model, ids, chunk=511):
    """Demo README method: chunks of 511 fed as [2] + chunk[:-1]; CE and relu(gate)=0 rate."""
    model.eval()
    tot, n = 0.0, 0
    zero = np.zeros(model.a.layers)
    cnt = 0
    with torch.no_grad():
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            x = torch.tensor([[BOS] + part[:-1]])
            logits, acts = model(x)
            tot += F.cross_entropy(logits[0].float(), torch.tensor(part), reduction="sum").item()
            n += len(part)
            for li, act in enumerate(acts):
                zero[li] += (act == 0).sum().item()
            cnt += len(part) * model.a.ffn
    model.train()
    return tot / n, (zero / cnt).tolist()


def export(model, a, out):
    os.makedirs(out, exist_ok=True)
    t = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight}
    for i, blk in enumerate(model.layers):
        p = "model.layers.%d." % i
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + "self_attn.%s.weight" % n] = getattr(blk, n).weight
        for n in ("gate_proj", "up_proj", "down_proj"):
            t[p + "mlp.%s.weight" % n] = getattr(blk, n).weight
        t[p + "input_layernorm.weight"] = blk.input_layernorm.weight
        t[p + "post_attention_layernorm.weight"] = blk.post_attention_layernorm.weight
    tensorfile.write(os.path.join(out, "model.safetensors"),
                     {k: v.detach().float().numpy().astype(np.float16) for k, v in t.items()})
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.hidden, "intermediate_size": a.ffn, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
        "head_dim": a.hidden // a.heads, "hidden_act": "relu",
        "max_position_embeddings": a.maxpos, "vocab_size": a.vocab,
        "rms_norm_eps": a.eps, "rope_theta": a.rope_theta, "rope_scaling": None,
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
        "pretraining_tp": 1, "initializer_range": 0.02, "tie_word_embeddings": True,
        "use_cache": True, "bos_token_id": BOS, "eos_token_id": BOS, "pad_token_id": 1,
        "torch_dtype": "float16",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    for n in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(DEMO, n), os.path.join(out, n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--log", help="write training figures (JSON) here")
    ap.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--maxpos", type=int, default=512)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000, help="steps (ignored with --minutes)")
    ap.add_argument("--minutes", type=float, default=0, help="train for this wall time instead of "
                    "--steps: the schedules run on elapsed/budget (the machine is shared)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--l1-init", type=float, default=0.05)
    ap.add_argument("--l1-eta", type=float, default=1.0)
    ap.add_argument("--l1-start", type=float, default=0.1)
    ap.add_argument("--l1-end", type=float, default=0.6)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--bf16", type=int, default=1)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    tok = bpe.Tokenizer(DEMO)
    raw = open(a.data, "rb").read()
    train = tok.encode(raw[:TRAIN_END].decode("utf-8"))
    held = tok.encode(raw[TRAIN_END:].decode("utf-8"))
    nl = {i for s, i in tok.vocab.items() if s.endswith("\u010a")}   # token ends with "\n"
    starts = np.array([p for p in range(len(train) - a.seq + 1) if p == 0 or train[p - 1] in nl])
    train_t = torch.tensor(train)
    print("train tokens %d, held-out tokens %d, row starts %d" % (len(train), len(held), len(starts)),
          flush=True)

    model = ReluLlama(a)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    lam = np.zeros(a.layers)
    s_ema = np.zeros(a.layers)
    s0 = None
    evals = []
    t0 = time.time()
    step = 0
    while True:
        progress = (time.time() - t0) / (a.minutes * 60) if a.minutes else step / a.steps
        if progress >= 1:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(a, step, progress)
        pos = starts[rng.integers(0, len(starts), a.batch)]
        rows = torch.stack([train_t[p:p + a.seq] for p in pos])
        x = torch.cat([torch.full((a.batch, 1), BOS), rows[:, :-1]], dim=1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            logits, acts = model(x)
        ce = F.cross_entropy(logits.float().reshape(-1, a.vocab), rows.reshape(-1))
        sp = np.array([(act == 0).float().mean().item() for act in acts])
        s_ema = sp if step == 0 else 0.9 * s_ema + 0.1 * sp
        if s0 is None and progress >= a.l1_start:
            s0 = s_ema.copy()
            lam[:] = a.l1_init
        if s0 is not None:
            frac = min(1.0, (progress - a.l1_start) / (a.l1_end - a.l1_start))
            target = s0 + (np.maximum(a.target, s0) - s0) * math.sin(math.pi / 2 * frac) ** 2
            lam = np.maximum(1e-4, lam * np.exp(a.l1_eta * (target - sp)))
        penalty = sum(float(l) * act.float().mean() for l, act in zip(lam, acts))
        loss = ce + penalty
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            print("step %4d  %6.0fs  p %.3f  ce %.4f  pen %.4f  sparsity %s  lambda %s" % (
                step, time.time() - t0, progress, ce.item(), float(penalty),
                " ".join("%.3f" % s for s in sp), " ".join("%.4f" % l for l in lam)), flush=True)
        step += 1
        if a.eval_every and step % a.eval_every == 0:
            vce, vsp = evaluate(model, held)
            evals.append({"step": step, "ce": vce, "ppl": math.exp(vce), "sparsity": vsp})
            print("eval step %d: ce %.4f ppl %.2f sparsity %s" % (
                step, vce, math.exp(vce), " ".join("%.4f" % s for s in vsp)), flush=True)
    seconds = time.time() - t0
    vce, vsp = evaluate(model, held)
    evals.append({"step": step, "ce": vce, "ppl": math.exp(vce), "sparsity": vsp})
    print("final: ce %.4f ppl %.2f sparsity %s mean %.4f (%.0f s)" % (
        vce, math.exp(vce), " ".join("%.4f" % s for s in vsp), float(np.mean(vsp)), seconds), flush=True)
    export(model, a, a.out)
    if a.log:
        with open(a.log, "w") as f:
            json.dump({"steps": step, "seconds": seconds, "tokens_seen": step * a.batch * a.seq,
                       "args": vars(a), "final_lambda": lam.tolist(), "natural_sparsity_at_l1_start":
                       None if s0 is None else s0.tolist(), "evals_fp32_weights": evals}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
