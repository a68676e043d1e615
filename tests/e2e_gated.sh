#!/usr/bin/env bash
# e2e_gated.sh: the trained gated-ReLU model models/relu-llama-shakespeare
# (a ReLU-Llama: down(relu(gate.x) * up.x), trained with an activation
# penalty) against its numpy reference, and its sparse figures beside the
# demo OPT model's:
#  1. dense greedy ids and logits = reference.json (through the mount, f16);
#     held-out perplexity within 0.5% of the reference's;
#  2. oracle mode on the uncalibrated store: the reference ids (exact zeros);
#  3. calibrated on the first 90% of tinyshakespeare, predict mode with
#     window 4 over the whole held-out text, dense alongside: perplexity
#     within 1% of dense, top-1 agreement >= 99%; per layer: FFN bytes read
#     per token, predictor recall, predicted/true active neurons; the same
#     figures for opt-relu-shakespeare calibrated and run the same way,
#     printed side by side when INFLASH_E2E_FIGURES is set (figures, not
#     checks: e2e_sparse checks OPT; the suite leaves them out for time).
# With INFLASH_E2E_QUICK set, step 3 runs on an 8000-byte slice of the
# held-out text.
# Env: INFLASH_SHARED, INFLASH_BIN, INFLASH_SRC (set by ctest).
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash
CAL=$INFLASH_BIN/inflash-calibrate
GM=$INFLASH_SRC/models/relu-llama-shakespeare
OM=$INFLASH_SRC/models/opt-relu-shakespeare
e2e_tmp gated
STEP=1500
section() { echo "# $* (at ${SECONDS}s)"; }

head -c 1003857 "$DATA/tinyshakespeare.txt" >"$T/train.txt"
tail -c +1003858 "$DATA/tinyshakespeare.txt" >"$T/heldout.txt"
EVAL=$T/heldout.txt
if [ -n "${INFLASH_E2E_QUICK:-}" ]; then
    head -c 8000 "$T/heldout.txt" >"$T/slice.txt"
    EVAL=$T/slice.txt
fi

# ---- 1. dense = reference ---------------------------------------------------------
section "1. dense = the numpy reference"
pack gated "$GM" f16
cp -r "$T/gated" "$T/gated-raw"     # stays uncalibrated
mnt gated-raw
export E2E_TMP=$T
T_ python3 "$CHECK_REF" "$GM" 1 "$INFLASH" "$T/mnt/gated-raw" || fails=$((fails + 1))
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["validation"]["perplexity"])' "$GM/reference.json")
out=$(T_ "$INFLASH" "$T/mnt/gated-raw" --perplexity "$T/heldout.txt" 2>"$T/ppl.err" | tail -n 1)
if python3 -c '
import re, sys
m = re.fullmatch(r"perplexity: ([0-9.]+) \(tokens: ([0-9]+)\)", sys.argv[1])
sys.exit(not (m and abs(float(m.group(1)) / float(sys.argv[2]) - 1) <= 0.005))' "$out" "$want"
then ok "held-out perplexity '$out', reference $want"
else bad "held-out perplexity '$out' $(cat "$T/ppl.err"), reference $want (within 0.5%)"
fi

# ---- 2. oracle = dense, no calibration ------------------------------------------------
section "2. oracle (uncalibrated)"
T_ python3 "$CHECK_REF" "$GM" 0 "$INFLASH" "$T/mnt/gated-raw" --mode oracle || fails=$((fails + 1))

# ---- 3. predict, window 4 -----------------------------------------------------------
section "3. predict, window 4 on $(basename "$EVAL") ($(wc -c <"$EVAL") bytes)"
models=(gated)
[ -n "${INFLASH_E2E_FIGURES:-}" ] && { pack opt "$OM" f16; models+=(opt); }
for m in "${models[@]}"; do
    if T_ "$CAL" "$T/$m" --text "$T/train.txt" --tokens 30000 --reorder >"$T/cal-$m.out" 2>"$T/cal-$m.err"; then
        ok "calibrate $m: $(tail -n 1 "$T/cal-$m.out")"
    else
        bad "calibrate $m: $(tail -n 1 "$T/cal-$m.err")"
        continue
    fi
    T_ "$INFLASH" --store "$T/$m" --perplexity "$EVAL" --mode predict --window 4 --compare-dense --check-recall \
        --stats "$T/pred-$m.json" >"$T/pred-$m.out" 2>"$T/pred-$m.err" ||
        bad "predict $m: $(cat "$T/pred-$m.err")"
done
python3 - "$T" "${models[@]}" <<'PY' || fails=$((fails + 1))
import json, os, sys
T, models = sys.argv[1], sys.argv[2:]
names = {"gated": "relu-llama-shakespeare", "opt": "opt-relu-shakespeare"}
d = {}
for m in models:
    p = os.path.join(T, "pred-%s.json" % m)
    if os.path.exists(p):
        d[m] = json.load(open(p))
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok = ok and cond
g = d.get("gated")
check(g is not None, "predict stats of the gated model")
if g:
    r = g["perplexity"] / g["dense_perplexity"]
    check(abs(r - 1) <= 0.01, "gated predict/window 4: perplexity %.4f vs dense %.4f (%+.3f%%, within 1%%)" %
          (g["perplexity"], g["dense_perplexity"], 100 * (r - 1)))
    check(g["top1_agreement"] >= 0.99, "gated predict/window 4: top-1 agreement with dense %.4f >= 0.99" % g["top1_agreement"])
cols = [m for m in ("gated", "opt") if m in d]
print("     %-44s" % "" + "".join("%-26s" % names[m] for m in cols))
rows = [("tokens scored", lambda s: "%d" % s["tokens"]),
        ("perplexity dense / predict", lambda s: "%.3f / %.3f" % (s["dense_perplexity"], s["perplexity"])),
        ("top-1 agreement with dense", lambda s: "%.4f" % s["top1_agreement"]),
        ("FFN bytes read per token (after warm-up)", lambda s: "%.0f (%.2f%%)" % (s["ffn_bytes_read_per_token_after_warmup"], 100 * s["ffn_fraction_read_per_token_after_warmup"])),
        ("truly active neurons per token (all layers)", lambda s: "%.1f of %d" % (s["neurons_active_per_token"], s["neurons_total"])),
        ("predicted per token / predicted per true", lambda s: "%.1f / %.2f" % (s["neurons_predicted_per_token"], s["neurons_predicted_per_token"] / max(s["neurons_active_per_token"], 1e-9))),
        ("predictor recall", lambda s: "%.4f" % s["predictor_recall"]),
        ("read requests per token", lambda s: "%.2f" % s["read_requests_per_token"])]
for label, f in rows:
    print("     %-44s" % label + "".join("%-26s" % f(d[m]) for m in cols))
print("     per layer: % of the layer read per token after warm-up | recall | predicted/true")
L = max(len(d[m]["layers"]) for m in cols)
for l in range(L):
    cells = []
    for m in cols:
        ly = d[m]["layers"][l] if l < len(d[m]["layers"]) else None
        cells.append("%5.2f%%  %.4f  %5.2f" % (100 * ly["fraction_read_per_token_after_warmup"], ly["predictor_recall"],
                     ly["neurons_predicted_per_token"] / max(ly["neurons_active_per_token"], 1e-9)) if ly else "")
    print("     layer %-38d" % l + "".join("%-26s" % c for c in cells))
sys.exit(0 if ok else 1)
PY

e2e_finish e2e_gated
