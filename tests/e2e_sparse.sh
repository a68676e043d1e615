#!/usr/bin/env bash
# e2e_sparse.sh: sparse inference from flash end to end. Packs
# opt-relu-shakespeare (f16 and f32) and stories260K, calibrates OPT (f16)
# on the training part of tinyshakespeare and stories260K at target
# sparsity 0.5 and 0.7, mounts the stores, and checks:
#  1. oracle mode gives the dense greedy ids (and the reference's) for every
#     reference prompt, f16 and f32, through the mount; also uncalibrated
#     (ReLU oracle needs no calibration) and under a tight --dram-budget;
#  2. predict mode, window 4, on the held-out text (teacher-forced, the whole
#     text, f16): top-1 agreement with dense >= 99%, perplexity within 2% of
#     dense; the mount and the store give identical figures on a slice
#     (and for f32 in oracle mode);
#  3. FFN bytes read per token in that run, after the first 16 tokens,
#     <= 5% of the FFN (per-layer figures printed);
#  4. how many of 256 greedy tokens per reference prompt match dense before
#     the first divergence (printed);
#  5. stories260K at 0.5 and 0.7: perplexity and bytes per token against
#     dense (table printed, loose sanity check);
#  6. --dram-budget below the minimum is refused with the minimum; a tight
#     budget shrinks the windows and still runs; usage errors; the --stats
#     JSON has its fields.
# With INFLASH_E2E_QUICK set (scripts/test.sh --quick) the two long runs, 2+3
# and 5, are skipped; the full suite runs everything.
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash
CAL=$INFLASH_BIN/inflash-calibrate
OPT_REF=$MODELS/opt-relu-shakespeare/reference.json

e2e_tmp sparse
section() { echo "# $* (at ${SECONDS}s)"; }

# ---- setup ----------------------------------------------------------------------
section "setup"
calibrate() {   # calibrate NAME ARGS...
    local name=$1
    shift
    if timeout 900 "$CAL" "$T/$name" "$@" >"$T/cal-$name.out" 2>"$T/cal-$name.err"; then
        ok "calibrate $name ($*)"
    else
        bad "calibrate $name: $(tail -n 1 "$T/cal-$name.err")"
        exit 1
    fi
}
head -c 1003857 "$DATA/tinyshakespeare.txt" >"$T/train.txt"
tail -c +1003858 "$DATA/tinyshakespeare.txt" >"$T/heldout.txt"
head -c 8000 "$T/heldout.txt" >"$T/slice.txt"
pack opt-f16 "$MODELS/opt-relu-shakespeare" f16
pack opt-f32 "$MODELS/opt-relu-shakespeare" f32
pack stories "$MODELS/stories260K" f32
cp -r "$T/opt-f16" "$T/opt-raw"   # stays uncalibrated
cp -r "$T/stories" "$T/st-0.5"
cp -r "$T/stories" "$T/st-0.7"
calibrate opt-f16 --text "$T/train.txt" --tokens 30000 --reorder
# stories260K has no text of its own besides the evaluation file (see its README)
calibrate st-0.5 --text "$DATA/TinyStories-valid-subset.txt" --target-sparsity 0.5
calibrate st-0.7 --text "$DATA/TinyStories-valid-subset.txt" --target-sparsity 0.7
for s in opt-f16 opt-f32 opt-raw st-0.5 st-0.7; do mnt "$s"; done
M=$T/mnt

# ids printed by --ids (the last line of the output), or empty
ids_of() { tail -n 1 "$1" | sed -n 's/^ids: //p'; }
# a JSON field of a stats file
jget() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print(v)' "$1" "$2"; }

# ---- 1. oracle = dense, exactly ---------------------------------------------------
section "1. oracle = dense"
python3 - "$OPT_REF" "$T" <<'EOF'
import json, sys
ref = json.load(open(sys.argv[1]))
for i, p in enumerate(ref["prompts"]):
    open("%s/prompt%d.txt" % (sys.argv[2], i), "w").write(p["prompt"])
    open("%s/ref%d.ids" % (sys.argv[2], i), "w").write(" ".join(map(str, p["prompt_ids"] + p["greedy_ids"])))
EOF
for dt in f16 f32; do
    for i in 0 1 2 3; do
        timeout 300 "$INFLASH" "$M/opt-$dt" -f "$T/prompt$i.txt" -n 64 -t 0 --ids >"$T/d.out" 2>"$T/d.err"
        timeout 300 "$INFLASH" "$M/opt-$dt" -f "$T/prompt$i.txt" -n 64 -t 0 --ids --mode oracle >"$T/o.out" 2>"$T/o.err"
        d=$(ids_of "$T/d.out") o=$(ids_of "$T/o.out") r=$(cat "$T/ref$i.ids")
        if [ -n "$o" ] && [ "$o" = "$d" ] && [ "$o" = "$r" ]; then
            ok "oracle $dt prompt $i: greedy ids identical to dense and to the reference ($(echo "$o" | wc -w) ids)"
        else
            bad "oracle $dt prompt $i: oracle '$o' / dense '$d' $(cat "$T/o.err")"
        fi
    done
done
# ReLU oracle needs no calibration; and a tight budget (windows shrink) keeps it exact
timeout 300 "$INFLASH" "$M/opt-raw" -f "$T/prompt3.txt" -n 64 -t 0 --ids --mode oracle >"$T/o.out" 2>"$T/o.err"
[ "$(ids_of "$T/o.out")" = "$(cat "$T/ref3.ids")" ] && ok "oracle on an uncalibrated store: reference ids" ||
    bad "oracle on an uncalibrated store: $(cat "$T/o.err")"

# ---- 6a. the budget -------------------------------------------------------------------
section "6a. budget"
# The minimum depends on the mode and the context (KV cache): ask with 1 MiB,
# then run just above the minimum: the windows must shrink, and ReLU oracle
# must still give the exact greedy ids.
for mode in oracle predict; do
    args=("$M/opt-f16" -f "$T/prompt3.txt" -n 64 -t 0 --ids --mode $mode)
    timeout 120 "$INFLASH" "${args[@]}" --dram-budget 1 >"$T/b.out" 2>"$T/b.err"
    rc=$?
    min=$(sed -n 's/.*below the minimum of \([0-9.]*\) MiB.*/\1/p' "$T/b.err")
    if [ $rc -eq 2 ] && [ "$(wc -l <"$T/b.err")" -eq 1 ] && [ -n "$min" ] && [ ! -s "$T/b.out" ]; then
        ok "--dram-budget 1 ($mode) refused: exit 2, '$(cat "$T/b.err")'"
    else
        bad "--dram-budget 1 ($mode): exit $rc, '$(cat "$T/b.err")'"
        continue
    fi
    tight=$(python3 -c "print(round($min + 0.4, 1))")
    timeout 300 "$INFLASH" "${args[@]}" --dram-budget "$tight" --stats "$T/tight-$mode.json" >"$T/t.out" 2>"$T/t.err"
    rc=$?
    if [ $rc -eq 0 ] && python3 - "$T/tight-$mode.json" "$tight" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
budget = float(sys.argv[2]) * 1048576
assert d["window_shrinks"] > 0, "no window shrink"
assert d["budget_accounted_bytes"] <= budget, "accounted %d > budget %d" % (d["budget_accounted_bytes"], budget)
assert d["capacity_per_layer"] < 1024
assert d["resident_bytes_peak"] > 0
print("     capacity %d rows/layer, %d window shrinks, %d overflows, accounted %.1f MiB, peak RSS %.1f MiB" % (
    d["capacity_per_layer"], d["window_shrinks"], d["overflows"], d["budget_accounted_bytes"] / 2**20,
    d["resident_bytes_peak"] / 2**20))
EOF
    then
        if [ $mode = predict ] || [ "$(ids_of "$T/t.out")" = "$(cat "$T/ref3.ids")" ]; then
            ok "--dram-budget $tight MiB ($mode): runs with shrunken windows$([ $mode = oracle ] && echo ', greedy ids still exact')"
        else
            bad "--dram-budget $tight MiB oracle: ids differ from the reference"
        fi
    else
        bad "--dram-budget $tight MiB ($mode): exit $rc $(cat "$T/t.err")"
    fi
done

# ---- 2 + 3. predict on the held-out text --------------------------------------------
section "2+3. predict on the held-out text"
if [ -n "${INFLASH_E2E_QUICK:-}" ]; then
    echo "     skipped in the quick run (INFLASH_E2E_QUICK)"
else
# The whole text through the store (the mount serves the same bytes; the slice
# below checks that the figures are identical), with the dense model alongside.
ppl_line() { grep '^perplexity:' "$1"; }
timeout 1500 "$INFLASH" --store "$T/opt-f16" --perplexity "$T/heldout.txt" --mode predict --window 4 --compare-dense \
    --stats "$T/ppl.json" >"$T/ppl.out" 2>"$T/ppl.err"
rc=$?
cat "$T/ppl.out"
if [ $rc -eq 0 ] && python3 - "$T/ppl.json" "$OPT_REF" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))["validation"]
ok = True
def check(cond, what):
    global ok
    print(("ok   " if cond else "FAIL ") + what)
    ok = ok and cond
check(d["tokens"] == ref["tokens"], "held-out tokens: %d" % d["tokens"])
check(abs(d["dense_perplexity"] / ref["perplexity"] - 1) <= 0.005,
      "dense perplexity alongside %.4f (reference %.4f)" % (d["dense_perplexity"], ref["perplexity"]))
check(d["top1_agreement"] >= 0.99, "predict/window 4: top-1 agreement with dense %.4f >= 0.99" % d["top1_agreement"])
r = d["perplexity"] / d["dense_perplexity"]
check(abs(r - 1) <= 0.02, "predict/window 4: perplexity %.4f vs dense %.4f (%+.3f%%, within 2%%)" %
      (d["perplexity"], d["dense_perplexity"], 100 * (r - 1)))
f = d["ffn_fraction_read_per_token_after_warmup"]
check(f <= 0.05, "FFN bytes read per token after the first %d tokens: %.0f of %d = %.2f%% <= 5%%" %
      (d["warmup_tokens"], d["ffn_bytes_read_per_token_after_warmup"], d["ffn_bytes_total"], 100 * f))
print("     per layer (fraction of the layer read per token, after warm-up; resident rows; predicted):")
for l in d["layers"]:
    print("       layer %d: %.2f%%  resident %.0f  predicted %.1f  loaded %.1f" % (
        l["layer"], 100 * l["fraction_read_per_token_after_warmup"], l["neurons_resident_per_token"],
        l["neurons_predicted_per_token"], l["neurons_loaded_per_token"]))
print("     %.2f read requests, %.1f neurons loaded per token; %.3f ms/token, io %.3f ms/token (store)" % (
    d["read_requests_per_token"], d["neurons_loaded_per_token"], d["ms_per_token"], d["io_ms_per_token"]))
sys.exit(0 if ok else 1)
EOF
then :; else
    bad "predict on the held-out text: exit $rc $(cat "$T/ppl.err")"
fi
# the mount and the store: identical figures on a slice (predict f16; oracle
# f32, whose ReLU oracle needs no calibration)
for run in "f16 predict" "f32 oracle"; do
    set -- $run
    timeout 600 "$INFLASH" "$M/opt-$1" --perplexity "$T/slice.txt" --mode $2 --stats "$T/sm.json" >"$T/sm.out" 2>"$T/sm.err"
    timeout 600 "$INFLASH" --store "$T/opt-$1" --perplexity "$T/slice.txt" --mode $2 --stats "$T/ss.json" >"$T/ss.out" 2>"$T/ss.err"
    a=$(ppl_line "$T/sm.out") b=$(ppl_line "$T/ss.out")
    ba=$(jget "$T/sm.json" ffn_bytes_read_per_token 2>/dev/null) bb=$(jget "$T/ss.json" ffn_bytes_read_per_token 2>/dev/null)
    if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$ba" = "$bb" ]; then
        ok "$2 $1, held-out slice: mount = store ('$a', $ba bytes/token; io ms/token: mount $(jget "$T/sm.json" io_ms_per_token), store $(jget "$T/ss.json" io_ms_per_token))"
    else
        bad "$2 $1 slice: mount '$a' ($ba) / store '$b' ($bb) $(cat "$T/sm.err" "$T/ss.err")"
    fi
done

fi  # quick

# ---- 4. greedy: tokens matching dense before the first divergence ------------------------
section "4. greedy divergence"
# (predict through the mount; dense through the mount for prompt 0, for the
# ms/token figures, else from a resident f32 copy of the FFN, which computes
# the same, to save time; prints ms/token and io ms/token of both modes)
for i in 0 1 2 3; do
    if [ $i -eq 0 ]; then dsrc=("$M/opt-f16"); else dsrc=(--store "$T/opt-f16" --dense-resident); fi
    timeout 600 "$INFLASH" "${dsrc[@]}" -f "$T/prompt$i.txt" -n 256 -t 0 --ids --stats "$T/gd.json" >"$T/gd.out" 2>/dev/null
    timeout 600 "$INFLASH" "$M/opt-f16" -f "$T/prompt$i.txt" -n 256 -t 0 --ids --mode predict --stats "$T/gp.json" \
        >"$T/gp.out" 2>"$T/gp.err"
    python3 - "$(ids_of "$T/gd.out")" "$(ids_of "$T/gp.out")" "$(wc -w <"$T/ref$i.ids")" "$i" "$T/gd.json" "$T/gp.json" <<'EOF' ||
import json, sys
d, p, ref_len, i = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
sd, sp = json.load(open(sys.argv[5])), json.load(open(sys.argv[6]))
np_ = ref_len - 64   # prompt ids (with BOS)
assert len(d) == len(p) == np_ + 256 and d[:np_] == p[:np_], "lengths %d %d" % (len(d), len(p))
same = next((k for k in range(256) if d[np_ + k] != p[np_ + k]), 256)
print("ok   predict/window 4 greedy, prompt %s: %d of 256 tokens match dense before the first divergence "
      "(ms/token, io ms/token: %s%.2f, %.2f; predict through the mount %.2f, %.2f)" % (
      i, same, "dense through the mount " if sd["source"] == "mount" else "dense resident ",
      sd["ms_per_token"], sd["io_ms_per_token"], sp["ms_per_token"], sp["io_ms_per_token"]))
EOF
    bad "greedy prompt $i: $(cat "$T/gp.err")"
done

# ---- 5. stories260K (gated) -----------------------------------------------------------
section "5. stories260K"
if [ -n "${INFLASH_E2E_QUICK:-}" ]; then
    echo "     skipped in the quick run (INFLASH_E2E_QUICK)"
else
STX=$DATA/TinyStories-valid-subset.txt
timeout 600 "$INFLASH" "$M/st-0.5" --perplexity "$STX" --per-line --stats "$T/st-dense.json" >"$T/st.out" 2>"$T/st.err" ||
    bad "stories dense: $(cat "$T/st.err")"
echo "     stories260K, TinyStories-valid-subset per line (calibrated on the same text):"
printf '     %-9s %-8s %-7s %-10s %-10s %-8s %-14s %-9s %s\n' sparsity mode window perplexity dense top-1 bytes/token fraction resident/token
# dense reads every neuron for every generated token (its batched perplexity
# run reads the FFN once per batch, which says nothing per token)
printf '     %-9s %-8s %-7s %-10s %-10s %-8s %-14s %-9s %s\n' - dense - "$(jget "$T/st-dense.json" perplexity)" - - \
    "$(jget "$T/st-dense.json" ffn_bytes_total)" 1 860
for sp in 0.5 0.7; do
    for run in "predict 4" "predict 1" "oracle 4"; do
        set -- $run
        timeout 600 "$INFLASH" "$M/st-$sp" --perplexity "$STX" --per-line --mode "$1" --window "$2" --compare-dense \
            --stats "$T/st.json" >"$T/st.out" 2>"$T/st.err"
        rc=$?
        if [ $rc -eq 0 ] && python3 - "$T/st.json" "$sp" "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("     %-9s %-8s %-7s %-10.4f %-10.4f %-8.4f %-14.1f %-9.4f %.1f" % (
    sys.argv[2], sys.argv[3], sys.argv[4], d["perplexity"], d["dense_perplexity"], d["top1_agreement"],
    d["ffn_bytes_read_per_token"], d["ffn_fraction_read_per_token"], d["neurons_resident_per_token"]))
# loose sanity: finite, not far from dense, never more bytes than dense
assert d["perplexity"] < 2 * d["dense_perplexity"] and d["top1_agreement"] > 0.5
assert d["ffn_bytes_read_per_token"] <= d["ffn_bytes_total"]
EOF
        then :; else
            bad "stories $sp $run: exit $rc $(cat "$T/st.err")"
        fi
    done
done

fi  # quick

# ---- 6b. stats fields, recall, usage errors ---------------------------------------------
section "6b. stats and usage"
if timeout 300 "$INFLASH" "$M/opt-f16" -f "$T/prompt1.txt" -n 48 -t 0 --mode predict --check-recall \
       --stats "$T/rec.json" >/dev/null 2>"$T/rec.err" && python3 - "$T/rec.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
need = ["mode", "tokens", "ms_per_token", "io_ms_per_token", "compute_ms_per_token", "ffn_bytes_total",
        "ffn_bytes_read_per_token", "ffn_fraction_read_per_token", "neurons_active_per_token",
        "neurons_predicted_per_token", "neurons_loaded_per_token", "predictor_recall", "resident_bytes_peak",
        "window_shrinks", "layers", "per_token"]
missing = [k for k in need if k not in d]
assert not missing, missing
assert d["mode"] == "predict" and d["tokens"] == 48 and len(d["per_token"]) == d["positions"]
assert 0.9 <= d["predictor_recall"] <= 1 and d["resident_recall"] >= d["predictor_recall"]
assert d["neurons_predicted_per_token"] >= d["neurons_active_per_token"] * d["predictor_recall"] - 1e-6
print("ok   --stats predict --check-recall: recall %.4f (resident %.4f), %.1f active / %.1f predicted / %.1f loaded neurons per token" % (
    d["predictor_recall"], d["resident_recall"], d["neurons_active_per_token"], d["neurons_predicted_per_token"],
    d["neurons_loaded_per_token"]))
EOF
then :; else
    bad "--stats predict --check-recall: $(cat "$T/rec.err")"
fi
# --threshold-shift moves the operating point: a higher threshold predicts and
# reads fewer neurons at a lower recall
if timeout 300 "$INFLASH" "$M/opt-f16" -f "$T/prompt1.txt" -n 48 -t 0 --mode predict --check-recall \
       --threshold-shift 0.3 --stats "$T/rec-shift.json" >/dev/null 2>"$T/rec-shift.err" &&
   python3 - "$T/rec.json" "$T/rec-shift.json" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert b["neurons_predicted_per_token"] < a["neurons_predicted_per_token"], (a["neurons_predicted_per_token"], b["neurons_predicted_per_token"])
assert b["predictor_recall"] < a["predictor_recall"]
print("ok   --threshold-shift 0.3: recall %.4f -> %.4f, predicted %.1f -> %.1f neurons per token" % (
    a["predictor_recall"], b["predictor_recall"], a["neurons_predicted_per_token"], b["neurons_predicted_per_token"]))
EOF
then :; else
    bad "--threshold-shift: $(cat "$T/rec-shift.err")"
fi
expect_usage() {  # expect_usage LABEL PATTERN INFLASH-ARGS...
    local label=$1 pat=$2
    shift 2
    timeout 120 "$INFLASH" "$@" >"$T/u.out" 2>"$T/u.err"
    local rc=$?
    if [ $rc -eq 2 ] && [ "$(wc -l <"$T/u.err")" -eq 1 ] && grep -q -- "$pat" "$T/u.err"; then
        ok "$label: exit 2, '$(cat "$T/u.err")'"
    else
        bad "$label: exit $rc, '$(cat "$T/u.err")' (want /$pat/)"
    fi
}
expect_usage "predict on an uncalibrated store" "needs a calibrated store" "$M/opt-raw" -p hi --mode predict
expect_usage "--window 0" "\-\-window" "$M/opt-f16" -p hi --mode predict --window 0
expect_usage "--window with dense" "go with --mode" "$M/opt-f16" -p hi --window 2
expect_usage "--compare-dense without --perplexity" "compare-dense" "$M/opt-f16" -p hi --mode predict --compare-dense

e2e_finish e2e_sparse "(${SECONDS}s)"
