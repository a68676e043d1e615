#!/usr/bin/env bash
# bench/read_curve.sh: the bandwidth-vs-chunk curve of inflashfs on this
# machine. Makes (once) a synthetic OPT checkpoint big enough to matter
# (d_model 4096, d_ffn 16384, f16: 16 KiB bundles; LAYERS layers, default 8
# = 2 GiB of ffn.bin), packs it, and runs inflash-bench-read over it, which
# remounts the store with each chunk size and compares direct O_DIRECT reads
# of ffn.bin with reads through the mount at 1 and 16 readers.
#   bench/read_curve.sh WORKDIR [inflash-bench-read options...]
# Needs root (to drop the page cache), /dev/fuse, python3, ~6 GB in WORKDIR.
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    echo "env: INFLASH_BIN (default <repo>/build/bin), LAYERS, D_MODEL, D_FFN"
}
case "${1:-}" in
-h|--help) usage; exit 0 ;;
"") usage >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export INFLASH_BIN=${INFLASH_BIN:-$here/build/bin}
work=$(realpath -m "$1")
shift
LAYERS=${LAYERS:-8}
D_MODEL=${D_MODEL:-4096}
D_FFN=${D_FFN:-16384}
src="$work/synth-opt-${D_MODEL}x${D_FFN}x${LAYERS}"
store="$work/store-${D_MODEL}x${D_FFN}x${LAYERS}-f16"
mnt="$work/mnt"
mkdir -p "$work"

if [ ! -f "$store/ffn.bin" ] && [ ! -f "$src/model.safetensors" ]; then
    echo "writing a synthetic OPT checkpoint to $src"
    mkdir -p "$src"
    cp "$here/../shared/models/opt-relu-shakespeare/vocab.json" "$here/../shared/models/opt-relu-shakespeare/merges.txt" "$src/" 2>/dev/null ||
        cp "${INFLASH_SHARED:?set INFLASH_SHARED}/models/opt-relu-shakespeare/"{vocab.json,merges.txt} "$src/"
    python3 - "$src" "$D_MODEL" "$D_FFN" "$LAYERS" <<'PY'
# A random-weight OPT checkpoint in Hugging Face layout (f16 safetensors).
import json, os, random, struct, sys
out, d, f, L = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
V, P = 1024, 512
cfg = {"architectures": ["OPTForCausalLM"], "model_type": "opt", "activation_function": "relu",
       "hidden_size": d, "word_embed_proj_dim": d, "ffn_dim": f, "num_hidden_layers": L,
       "num_attention_heads": d // 128, "max_position_embeddings": P, "vocab_size": V,
       "do_layer_norm_before": True, "enable_bias": True, "layer_norm_elementwise_affine": True,
       "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "tie_word_embeddings": True,
       "torch_dtype": "float16"}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
t = [("model.decoder.embed_tokens.weight", [V, d]), ("model.decoder.embed_positions.weight", [P + 2, d]),
     ("model.decoder.final_layer_norm.weight", [d]), ("model.decoder.final_layer_norm.bias", [d])]
for l in range(L):
    p = "model.decoder.layers.%d." % l
    for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
        t += [(p + "self_attn.%s.weight" % n, [d, d]), (p + "self_attn.%s.bias" % n, [d])]
    t += [(p + "self_attn_layer_norm.weight", [d]), (p + "self_attn_layer_norm.bias", [d]),
          (p + "fc1.weight", [f, d]), (p + "fc1.bias", [f]), (p + "fc2.weight", [d, f]), (p + "fc2.bias", [d]),
          (p + "final_layer_norm.weight", [d]), (p + "final_layer_norm.bias", [d])]
hdr, off = {}, 0
for name, shape in t:
    n = 2
    for s in shape:
        n *= s
    hdr[name] = {"dtype": "F16", "shape": shape, "data_offsets": [off, off + n]}
    off += n
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
rng = random.Random(1)
pool = struct.pack("<%de" % (1 << 19), *[rng.uniform(-0.05, 0.05) for _ in range(1 << 19)])  # 1 MiB
with open(os.path.join(out, "model.safetensors"), "wb") as fo:
    fo.write(struct.pack("<Q", len(h)) + h)
    for i, (name, shape) in enumerate(t):
        a, b = hdr[name]["data_offsets"]
        left, k = b - a, (i * 4099) % len(pool) // 2 * 2
        while left > 0:
            chunk = (pool[k:] + pool[:k])[:left]
            fo.write(chunk)
            left -= len(chunk)
            k = (k + 2 * 7919) % len(pool)
PY
fi

if [ ! -f "$store/ffn.bin" ]; then
    echo "packing $src -> $store"
    "$INFLASH_BIN/inflash-pack" "$src" "$store" --dtype f16 --force
fi

cleanup() {
    if grep -qF " $mnt fuse" /proc/mounts; then "$here/mount.sh" -u "$mnt" >/dev/null || true; fi
}
trap cleanup EXIT
mkdir -p "$mnt"
"$INFLASH_BIN/inflash-bench-read" "$store" "$mnt" --mount-sh "$here/mount.sh" "$@"
