#!/usr/bin/env bash
# e2e_quant.sh: quantized stores (q8_0, q4_0) end to end, packed from
# opt-relu-shakespeare, stories260K and models/relu-llama-shakespeare:
#  1. f16, q8_0 and q4_0 stores of each; through a mount, the client's dense
#     held-out perplexity (OPT and the gated model: the last 10% of
#     tinyshakespeare; stories260K: TinyStories-valid-subset, per line) and
#     the same tokens scored by scripts/ref/store_ref.py, a numpy forward pass
#     over the store's own dequantized bytes (its own block decoder):
#     (a) client within 0.5% of numpy on every store (what the kernels add
#         to the format's cost), (b) q8_0 within +0.5% of f16 on every
#         model, q4_0 within +3% of f16 on the demo OPT model; the table of
#         figures and resident bytes (--stats) is printed;
#  2. (c) oracle mode on q8_0 (and q4_0) gives the greedy ids of dense;
#     calibrated on the first 90% of tinyshakespeare, predict mode on q8_0
#     within 1% of dense q8_0 (--compare-dense); (d) --mmap of the store and
#     an oracle run under a tight --dram-budget give the dense ids;
#  3. pack's quantizer against ggml's: the tiny Llama of shared/models/gguf
#     packed q8_0 / q4_0, its layer-0 up row 0 dequantized = gguf-py's values
#     (*.bundlecheck.json);
#  4. (e) pack refuses q8_0 and q4_0 for a model whose d_model (48) is not
#     a multiple of 32, in one line naming it, and leaves no output
#     directory (f16 of the same model packs).
# The tinyshakespeare perplexity runs score a 20000-byte slice of the
# held-out text (about 8900 tokens: the checks are ratios, and nine stores
# are scored three times each); predict mode scores 20000 bytes, 8000 with
# INFLASH_E2E_QUICK set, which also skips predict on the gated model. The
# whole held-out figures are in the closing notes (Release builds).
# Env: INFLASH_SHARED, INFLASH_BIN, INFLASH_SRC (set by ctest).
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
e2e_pynum
INFLASH=$INFLASH_BIN/inflash
PACK=$INFLASH_BIN/inflash-pack
CAL=$INFLASH_BIN/inflash-calibrate
REF=$INFLASH_SRC/scripts/ref
e2e_tmp quant
STEP=1500
section() { echo "# $* (at ${SECONDS}s)"; }

shakespeare_split
EVAL=$T/slice.txt       # the perplexity runs
PEVAL=$T/slice.txt      # predict mode
head -c 20000 "$T/heldout.txt" >"$EVAL"
if [ -n "${INFLASH_E2E_QUICK:-}" ]; then
    PEVAL=$T/pslice.txt
    head -c 8000 "$T/heldout.txt" >"$PEVAL"
fi
declare -A SRC=([opt]=$MODELS/opt-relu-shakespeare [stories]=$MODELS/stories260K
                [gated]=$INFLASH_SRC/models/relu-llama-shakespeare)
declare -A TEXT=([opt]="$EVAL" [stories]="$DATA/TinyStories-valid-subset.txt" [gated]="$EVAL")
declare -A PERLINE=([opt]="" [stories]="--per-line" [gated]="")
MODELS_RUN=(opt stories gated)
DTYPES=(f16 q8_0 q4_0)

# ---- 1. perplexity: client through a mount vs numpy on the dequantized store -----------
section "1. held-out perplexity, client (mount) and numpy (store_ref.py)"
for m in "${MODELS_RUN[@]}"; do
    for dt in "${DTYPES[@]}"; do
        s=$m-$dt
        pack "$s" "${SRC[$m]}" "$dt"
        mnt "$s"
        # shellcheck disable=SC2086
        if T_ "$INFLASH" "$T/mnt/$s" --perplexity "${TEXT[$m]}" ${PERLINE[$m]} --dump-ids "$T/ids-$s.txt" \
            --stats "$T/stats-$s.json" >"$T/ppl-$s.out" 2>"$T/ppl-$s.err"; then
            ok "client $s: $(tail -n 1 "$T/ppl-$s.out")"
        else
            bad "client $s: $(tail -n 1 "$T/ppl-$s.err")"
        fi
        # one position per forward: the single-vector kernels (8-bit activations) instead of the batch path
        # shellcheck disable=SC2086
        if T_ "$INFLASH" "$T/mnt/$s" --perplexity "${TEXT[$m]}" ${PERLINE[$m]} --batch 1 \
            >"$T/ppl1-$s.out" 2>"$T/ppl1-$s.err"; then
            ok "client $s --batch 1: $(tail -n 1 "$T/ppl1-$s.out")"
        else
            bad "client $s --batch 1: $(tail -n 1 "$T/ppl1-$s.err")"
        fi
        if T_ "$PYNUM" "$REF/store_ref.py" "$T/$s" --ids "$T/ids-$s.txt" >"$T/ref-$s.out" 2>"$T/ref-$s.err"; then
            ok "numpy  $s: $(tail -n 1 "$T/ref-$s.out")"
        else
            bad "numpy  $s: $(tail -n 1 "$T/ref-$s.err")"
        fi
    done
done
python3 - "$T" "${MODELS_RUN[@]}" <<'PY' || fails=$((fails + 1))
import json, os, re, sys
T, models = sys.argv[1], sys.argv[2:]
dtypes = ("f16", "q8_0", "q4_0")
names = {"opt": "opt-relu-shakespeare", "stories": "stories260K", "gated": "relu-llama-shakespeare"}
def ppl(path):
    try:
        m = re.fullmatch(r"perplexity: ([0-9.]+) \(tokens: ([0-9]+)\)", open(path).read().strip().splitlines()[-1])
        return (float(m.group(1)), int(m.group(2))) if m else None
    except (OSError, IndexError):
        return None
def resident(s):
    try:
        return json.load(open(os.path.join(T, "stats-%s.json" % s)))["model_resident_bytes"]
    except (OSError, KeyError, ValueError):
        return None
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok = ok and cond
fig = {}
for m in models:
    for dt in dtypes:
        s = "%s-%s" % (m, dt)
        c, n = ppl(os.path.join(T, "ppl-%s.out" % s)), ppl(os.path.join(T, "ref-%s.out" % s))
        fig[m, dt] = (c, n)
        if c and n:
            check(c[1] == n[1], "%s: client and numpy scored the same %d tokens" % (s, c[1]))
            check(abs(c[0] / n[0] - 1) <= 0.005, "%s: client %.4f vs numpy %.4f (%+.3f%%, within 0.5%%)" %
                  (s, c[0], n[0], 100 * (c[0] / n[0] - 1)))
            c1 = ppl(os.path.join(T, "ppl1-%s.out" % s))
            check(c1 is not None and c1[1] == n[1] and abs(c1[0] / n[0] - 1) <= 0.005,
                  "%s: client --batch 1 (single-vector kernels) %s vs numpy %.4f (%s, within 0.5%%)" %
                  (s, "%.4f" % c1[0] if c1 else "?", n[0], "%+.3f%%" % (100 * (c1[0] / n[0] - 1)) if c1 else "?"))
        else:
            check(False, "%s: perplexity from the client (%s) and numpy (%s)" % (s, c, n))
for m in models:
    base = fig[m, "f16"][0]
    for dt, lim in (("q8_0", 0.005), ("q4_0", 0.03 if m == "opt" else None)):
        q = fig[m, dt][0]
        if base and q and lim is not None:
            r = q[0] / base[0] - 1
            check(r <= lim, "%s %s vs f16 (client): %.4f vs %.4f (%+.3f%%, at most +%.1f%%)" %
                  (m, dt, q[0], base[0], 100 * r, 100 * lim))
print("     held-out perplexity (client through the mount / the same, one position per forward / numpy on the "
      "dequantized store; vs f16: client)")
print("     %-24s %8s  %-30s %-30s %-30s %s" % ("model", "tokens", "f16", "q8_0", "q4_0", "resident bytes f16 / q8_0 / q4_0"))
for m in models:
    cells, tokens = [], "?"
    for dt in dtypes:
        c, n = fig[m, dt]
        if c and n:
            tokens = c[1]
            rel = "" if dt == "f16" or not fig[m, "f16"][0] else " %+.2f%%" % (100 * (c[0] / fig[m, "f16"][0][0] - 1))
            c1 = ppl(os.path.join(T, "ppl1-%s-%s.out" % (m, dt)))
            cells.append("%.3f / %s / %.3f%s" % (c[0], "%.3f" % c1[0] if c1 else "-", n[0], rel))
        else:
            cells.append("-")
    res = " / ".join(str(resident("%s-%s" % (m, dt))) for dt in dtypes)
    print("     %-24s %8s  %-30s %-30s %-30s %s" % ((names[m], tokens) + tuple(cells) + (res,)))
sys.exit(0 if ok else 1)
PY

# ---- 2. oracle, predict, mmap, DRAM budget ----------------------------------------------
section "2. oracle / predict / --mmap / --dram-budget on the quantized stores"
ids_of() { sed -n 's/^ids: //p' "$1"; }
gen() {   # gen OUT ARGS...: greedy 32 tokens from "ROMEO:", ids into OUT
    local out=$1
    shift
    T_ "$INFLASH" "$@" -p "ROMEO:" -n 32 -t 0 --ids >"$out" 2>"$out.err"
}
for s in opt-q8_0 opt-q4_0 gated-q8_0; do
    gen "$T/d-$s" "$T/mnt/$s" || bad "dense $s: $(tail -n 1 "$T/d-$s.err")"
    want=$(ids_of "$T/d-$s")
    gen "$T/o-$s" "$T/mnt/$s" --mode oracle
    [ -n "$want" ] && [ "$(ids_of "$T/o-$s")" = "$want" ] && ok "oracle $s: the dense ids" ||
        bad "oracle $s: '$(ids_of "$T/o-$s")' $(tail -n 1 "$T/o-$s.err"), dense '$want'"
    gen "$T/mm-$s" --store "$T/$s" --mmap
    [ -n "$want" ] && [ "$(ids_of "$T/mm-$s")" = "$want" ] && ok "--mmap $s: the dense ids" ||
        bad "--mmap $s: '$(ids_of "$T/mm-$s")' $(tail -n 1 "$T/mm-$s.err"), dense '$want'"
    # the smallest budget the client takes (its refusal names it), plus 0.2 MiB: small matrices
    min=$(gen "$T/min-$s" "$T/mnt/$s" --mode oracle --dram-budget 1; sed -n 's/.*minimum of \([0-9.]*\) MiB.*/\1/p' "$T/min-$s.err")
    budget=$(python3 -c "import sys; print('%.1f' % (float(sys.argv[1] or 0) + 0.2))" "$min")
    gen "$T/b-$s" "$T/mnt/$s" --mode oracle --dram-budget "$budget" --stats "$T/b-$s.json"
    cap=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['capacity_per_layer'])" "$T/b-$s.json" 2>/dev/null)
    [ -n "$want" ] && [ "$(ids_of "$T/b-$s")" = "$want" ] && ok "oracle $s --dram-budget $budget (minimum $min MiB, $cap rows per layer): the dense ids" ||
        bad "oracle $s --dram-budget $budget: '$(ids_of "$T/b-$s")' $(tail -n 1 "$T/b-$s.err"), dense '$want'"
done
predict_models=(opt)
[ -z "${INFLASH_E2E_QUICK:-}" ] && predict_models+=(gated)
for m in "${predict_models[@]}"; do
    s=$m-q8_0-cal
    cp -r "$T/$m-q8_0" "$T/$s"
    if T_ "$CAL" "$T/$s" --text "$T/train.txt" --tokens 30000 --reorder >"$T/cal-$s.out" 2>"$T/cal-$s.err"; then
        ok "calibrate $s: $(tail -n 1 "$T/cal-$s.out")"
    else
        bad "calibrate $s: $(tail -n 1 "$T/cal-$s.err")"
        continue
    fi
    mnt "$s"
    if T_ "$INFLASH" "$T/mnt/$s" --perplexity "$PEVAL" --mode predict --window 4 --compare-dense \
        >"$T/pred-$s.out" 2>"$T/pred-$s.err"; then
        python3 - "$T/pred-$s.out" "$s" "$(basename "$PEVAL")" <<'PY' && ok "$(tail -n 1 "$T/pred-$s.out.msg")" || bad "$(tail -n 1 "$T/pred-$s.out.msg")"
import re, sys
text, s, what = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
p = float(re.search(r"^perplexity: ([0-9.]+)", text, re.M).group(1))
d = float(re.search(r"^dense-perplexity: ([0-9.]+)", text, re.M).group(1))
r = p / d - 1
open(sys.argv[1] + ".msg", "w").write("predict %s window 4 on %s: %.4f vs dense q8_0 %.4f (%+.3f%%, within 1%%)\n" % (s, what, p, d, 100 * r))
sys.exit(abs(r) > 0.01)
PY
    else
        bad "predict $s: $(tail -n 1 "$T/pred-$s.err")"
    fi
done

# ---- 3. pack's blocks against gguf-py's ------------------------------------------------
section "3. pack's q8_0 / q4_0 against ggml's reference quantizer (gguf-py)"
for dt in q8_0 q4_0; do
    pack "tiny-$dt" "$MODELS/gguf/hf" "$dt"
    "$PYNUM" - "$REF" "$T/tiny-$dt" "$MODELS/gguf/tiny-llama-$dt.bundlecheck.json" <<'PY' &&
import json, sys
sys.path.insert(0, sys.argv[1])
import store_ref
st = store_ref.Store(sys.argv[2])
up = st.ffn()[0][0]
want = json.load(open(sys.argv[3]))["ffn_up"]["values"]
got = [float(v) for v in up[0, :len(want)]]
print("     layer 0 up row 0: %s" % " ".join("%.6g" % v for v in got))
sys.exit(got != want)
PY
        ok "tiny-llama $dt: layer 0 up row 0 = gguf-py's dequantized values" ||
        bad "tiny-llama $dt: layer 0 up row 0 differs from $MODELS/gguf/tiny-llama-$dt.bundlecheck.json"
done

# ---- 4. widths that are not whole blocks -------------------------------------------------
section "4. q8_0 refused for widths that are not multiples of 32"
# A one-layer Llama of hidden size 48 (12 per head: the attention width is 48 too).
"$PYNUM" - "$REF" "$MODELS/gguf/hf" "$T/w48" <<'PY' || bad "writing the hidden-48 checkpoint"
import json, os, shutil, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import tensorfile
src, out = sys.argv[2], sys.argv[3]
os.makedirs(out)
cfg = json.load(open(os.path.join(src, "config.json")))
d, hd, F = 48, 12, 64
cfg.update(hidden_size=d, head_dim=hd, num_hidden_layers=1, intermediate_size=F)
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, f), out)
q, kv, V = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, cfg["vocab_size"]
shapes = {"model.embed_tokens.weight": (V, d), "lm_head.weight": (V, d), "model.norm.weight": (d,),
          "model.layers.0.input_layernorm.weight": (d,), "model.layers.0.post_attention_layernorm.weight": (d,),
          "model.layers.0.self_attn.q_proj.weight": (q, d), "model.layers.0.self_attn.k_proj.weight": (kv, d),
          "model.layers.0.self_attn.v_proj.weight": (kv, d), "model.layers.0.self_attn.o_proj.weight": (d, q),
          "model.layers.0.mlp.gate_proj.weight": (F, d), "model.layers.0.mlp.up_proj.weight": (F, d),
          "model.layers.0.mlp.down_proj.weight": (d, F)}
rng = np.random.default_rng(1)
tensorfile.write(os.path.join(out, "model.safetensors"),
                 {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()})
PY
for dt in q8_0 q4_0; do
    T_ "$PACK" "$T/w48" "$T/w48-$dt" --dtype "$dt" >"$T/w48-$dt.out" 2>"$T/w48-$dt.err"
    rc=$?
    if [ "$rc" -eq 1 ] && [ "$(wc -l <"$T/w48-$dt.err")" -eq 1 ] && [ ! -s "$T/w48-$dt.out" ] &&
        grep -q "^inflash-pack: $T/w48: $dt needs .*hidden size.* is 48; use f16 or f32$" "$T/w48-$dt.err" &&
        [ ! -e "$T/w48-$dt" ] && ! ls -d "$T/w48-$dt.tmp."* >/dev/null 2>&1; then
        ok "d_model 48, $dt refused, nothing written: $(cat "$T/w48-$dt.err")"
    else
        bad "d_model 48, $dt: exit $rc, '$(cat "$T/w48-$dt.err")', left: $(ls -d "$T/w48-$dt" "$T/w48-$dt.tmp."* 2>/dev/null)"
    fi
done
T_ "$PACK" "$T/w48" "$T/w48-f16" --dtype f16 >/dev/null 2>"$T/w48-f16.err" && ok "d_model 48, f16 packs" ||
    bad "d_model 48, f16: $(tail -n 1 "$T/w48-f16.err")"

e2e_finish e2e_quant "(${SECONDS}s)"
