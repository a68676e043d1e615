#!/usr/bin/env python3
"""store_ref.py: the model an inflash store holds, run in numpy from the store's bytes.

Reads a store directory (index.sqlite with sqlite3, dense.bin, ffn.bin) with its own
decoder of the four store dtypes, written from layout/format.h's specification (section
1; no C code is called): f32, f16, and ggml's blocks
  q8_0  34 bytes per 32 values: f16 scale d, 32 int8 q;   value i = q[i] * d
  q4_0  18 bytes per 32 values: f16 scale d, 16 bytes;     byte i holds value i in its
        low nibble and value i+16 in its high nibble;      value = (nibble - 8) * d
It rebuilds the model's f32 weights from the dequantized store (each neuron's bundle,
section 3: up row, [gate row,] down column, back into the up/gate/down matrices) and runs
the forward pass of the store's family: llama_ref.Model (Llama family) or
opt_ref.OptModel (OPT), from the store's verbatim hf_config. So the figures it gives are
the format's own cost; the client's are the format's plus its kernels'.

Perplexity is computed the way the client's --perplexity does it (client/main.c,
score_stream): each document's ids cut into consecutive windows of context - 1 tokens,
each fed as BOS + window[:-1], every token scored once; the documents' tokens pooled.
The ids come from the client itself (its hidden --dump-ids: one line per document), so
no tokenizer is reimplemented here.

CLI:   store_ref.py STORE_DIR --ids FILE [--ctx N]    prints 'cross-entropy: X nats/token'
                                                      and 'perplexity: X (tokens: N)'
       store_ref.py STORE_DIR --greedy "2 45 67" [-n 16]   prints the greedy ids
Exit status 0 ok, 1 runtime error, 2 usage error. Needs numpy (Debian: /usr/bin/python3).
"""
import argparse
import json
import os
import sqlite3
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
import opt_ref  # noqa: E402

F32 = np.float32
MAGIC = b"INFLASH\0"
VERSION = 2
QK = 32
BLOCK_BYTES = {"f32": 4, "f16": 2, "q8_0": 34, "q4_0": 18}   # bytes per block
BLOCK_VALUES = {"f32": 1, "f16": 1, "q8_0": QK, "q4_0": QK}  # values per block


class StoreError(ValueError):
    pass


def nbytes(dtype, n):
    """Bytes of n values of dtype (n whole blocks)."""
    if n % BLOCK_VALUES[dtype]:
        raise StoreError("%d %s values are not whole blocks" % (n, dtype))
    return n // BLOCK_VALUES[dtype] * BLOCK_BYTES[dtype]


def decode(dtype, buf, n):
    """n values of dtype from the bytes buf (little-endian), as float32."""
    raw = np.frombuffer(buf, np.uint8, nbytes(dtype, n))
    if dtype == "f32":
        return raw.view("<f4").astype(F32)
    if dtype == "f16":
        return raw.view("<f2").astype(F32)
    blocks = raw.reshape(-1, BLOCK_BYTES[dtype])
    d = blocks[:, :2].copy().view("<f2").astype(F32)            # [blocks, 1] scales
    if dtype == "q8_0":
        q = blocks[:, 2:].copy().view(np.int8).astype(F32)      # [blocks, 32]
    else:
        b = blocks[:, 2:]
        q = np.concatenate([b & 0x0F, b >> 4], axis=1).astype(F32) - F32(8)
    return (q * d).astype(F32).reshape(-1)


class Store:
    """A store directory: meta, dense tensors and neuron bundles, decoded to float32."""

    def __init__(self, path):
        self.path = path
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(path, "index.sqlite"), uri=True)
        try:
            self.meta = dict(db.execute("SELECT key, value FROM meta"))
            self.tensors = db.execute("SELECT name, dtype, shape, file, offset, bytes FROM tensors").fetchall()
            self.layers = db.execute("SELECT layer, n_neurons FROM layers ORDER BY layer").fetchall()
            self.neurons = db.execute("SELECT layer, id, offset, bytes FROM neurons ORDER BY layer, id").fetchall()
        finally:
            db.close()
        if self.meta.get("magic") != "INFLASH" or self.meta.get("format_version") != str(VERSION):
            raise StoreError("%s: not an inflash store of format version %d" % (path, VERSION))
        self.dtype = self.meta["dtype"]
        if self.dtype not in BLOCK_BYTES:
            raise StoreError("%s: unknown store dtype %r" % (path, self.dtype))
        self.files = {}
        for name in ("dense.bin", "ffn.bin"):
            with open(os.path.join(path, name), "rb") as f:
                data = f.read()
            if data[:8] != MAGIC or int.from_bytes(data[8:12], "little") != VERSION:
                raise StoreError("%s/%s: bad header" % (path, name))
            self.files[name] = data
        self.config = json.loads(self.meta["hf_config"])

    def dense(self):
        """{name: float32 array of its shape} for every dense tensor."""
        out = {}
        for name, dtype, shape, file, offset, size in self.tensors:
            dims = [int(s) for s in shape.split()]
            n = int(np.prod(dims)) if dims else 1
            if nbytes(dtype, n) != size:
                raise StoreError("%s: tensor %s: %d bytes for %d %s values" % (self.path, name, size, n, dtype))
            out[name] = decode(dtype, self.files[file][offset:offset + size], n).reshape(dims)
        return out

    def ffn(self):
        """Per layer, the bundles back as matrices: [(up [F, d], gate [F, d] or None,
        down [d, F])], from each neuron's bundle in neuron-id order."""
        d, gated = int(self.meta["d_model"]), self.meta["gated"] == "1"
        parts = 3 if gated else 2
        pb = nbytes(self.dtype, d)
        ffn = self.files["ffn.bin"]
        by_layer = {}
        for layer, nid, offset, size in self.neurons:
            if size != parts * pb:
                raise StoreError("%s: layer %d neuron %d: bundle of %d bytes, not %d" % (self.path, layer, nid,
                                                                                         size, parts * pb))
            by_layer.setdefault(layer, []).append(ffn[offset:offset + size])
        out = []
        for layer, n in self.layers:
            raw = np.frombuffer(b"".join(by_layer[layer]), np.uint8).reshape(n, parts * pb)
            part = [decode(self.dtype, raw[:, k * pb:(k + 1) * pb].tobytes(), n * d).reshape(n, d)
                    for k in range(parts)]
            out.append((part[0], part[1] if gated else None, part[-1].T.copy()))
        return out

    def model(self):
        """The store's model in numpy: llama_ref.Model or opt_ref.OptModel."""
        w = self.dense()
        family = self.meta["family"]
        for li, (up, gate, down) in enumerate(self.ffn()):
            if family == "opt":
                p = "model.decoder.layers.%d." % li
                w[p + "fc1.weight"], w[p + "fc2.weight"] = up, down
            else:
                p = "model.layers.%d.mlp." % li
                w[p + "up_proj.weight"], w[p + "gate_proj.weight"], w[p + "down_proj.weight"] = up, gate, down
        if family == "opt":
            return opt_ref.OptModel(self.config, w, self.path)
        if family == "llama":
            return llama_ref.Model(config=self.config, weights=w)
        raise StoreError("%s: unknown family %r" % (self.path, family))


def perplexity(model, docs, ctx, bos):
    """The client's --perplexity over documents (lists of ids): (tokens, mean CE nats)."""
    total, count = 0.0, 0
    for ids in docs:
        if ids:
            n, ce = llama_ref.perplexity(model, ids, ctx - 1, bos)
            total += n * ce
            count += n
    if not count:
        raise StoreError("no tokens to score")
    return count, total / count


def main(argv=None):
    ap = argparse.ArgumentParser(prog="store_ref.py", description="numpy forward pass of the model an "
                                 "inflash store holds, from its dequantized bytes")
    ap.add_argument("store_dir")
    ap.add_argument("--ids", metavar="FILE", help="token ids, one document per line (the client's --dump-ids)")
    ap.add_argument("--ctx", type=int, default=0, help="context in positions (default: the model's)")
    ap.add_argument("--greedy", metavar="IDS", help="prompt ids (BOS included) to decode greedily from")
    ap.add_argument("-n", type=int, default=16, help="tokens to generate with --greedy (default 16)")
    a = ap.parse_args(argv)
    if (a.ids is None) == (a.greedy is None):
        ap.error("give exactly one of --ids and --greedy")
    try:
        st = Store(a.store_dir)
        max_pos = int(st.meta["max_pos"])
        ctx = a.ctx or max_pos
        if not 2 <= ctx <= max_pos:
            ap.error("--ctx %d: 2..%d" % (ctx, max_pos))
        model = st.model()
        if a.greedy is not None:
            ids, _ = llama_ref.greedy(model, [int(t) for t in a.greedy.split()], a.n)
            print(" ".join(map(str, ids)))
            return 0
        with open(a.ids) as f:
            docs = [[int(t) for t in line.split()] for line in f]
        n, ce = perplexity(model, docs, ctx, int(st.meta["bos_id"]))
        print("cross-entropy: %.6f nats/token" % ce)
        print("perplexity: %.4f (tokens: %d)" % (float(np.exp(ce)), n))
    except (OSError, ValueError, KeyError, sqlite3.Error) as e:
        print("store_ref.py: %s: %s" % (a.store_dir, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
