#!/usr/bin/env bash
# e2e_acts.sh: the sparse Llama-family activations end to end. For each of
# relu (ReLU-Llama), fatrelu (ProSparse), drelu (Bamboo) and cats (CATS), an
# inflash-mkmodel checkpoint is packed, inspected (activation and its
# parameters), mounted, and generated from: oracle mode needs no
# calibration and gives the dense greedy ids; after inflash-calibrate the
# criterion is exact and predict mode runs. A bamboo config with a
# hidden_act other than relu is refused naming the key and value.
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
BIN=$INFLASH_BIN
TEXT=$DATA/TinyStories-valid-subset.txt
e2e_tmp acts

# ids OUT MNT ARGS...: greedy ids of a fixed prompt through the mount into OUT
ids() {
    local out=$1 mnt=$2
    shift 2
    T_ "$BIN/inflash" "$mnt" -p "Once upon a time" -n 24 -t 0 --ids "$@" >"$T/gen.out" 2>"$T/gen.err" &&
        grep "^ids:" "$T/gen.out" >"$out"
}

for a in relu fatrelu drelu cats; do
    if ! T_ "$BIN/inflash-mkmodel" --shape tiny-llama --layers 2 --act "$a" --dtype f32 --out "$T/ck-$a" \
        >"$T/mk-$a.log" 2>&1; then
        bad "mkmodel --act $a: $(tail -n 1 "$T/mk-$a.log")"
        continue
    fi
    pack "$a" "$T/ck-$a" f32
    T_ "$BIN/inflash-inspect" "$T/$a" >"$T/inspect-$a.out" 2>&1
    grep -qE "^  activation +$a$" "$T/inspect-$a.out" && ok "inspect $a: activation" || bad "inspect $a: activation"
    case $a in
        fatrelu | cats) grep -qE "^  act_params +[0-9.]+ [0-9.]+$" "$T/inspect-$a.out" &&
            ok "inspect $a: $(grep act_params "$T/inspect-$a.out")" || bad "inspect $a: no act_params" ;;
        *) grep -q act_params "$T/inspect-$a.out" && bad "inspect $a: act_params" || ok "inspect $a: no act_params" ;;
    esac
    if T_ "$BIN/inflash-calibrate" "$T/$a" --text "$TEXT" --tokens 3000 -q >"$T/cal-$a.out" 2>&1 &&
        T_ "$BIN/inflash-inspect" "$T/$a" | grep -qE "calib_criterion +exact:term!=0"; then
        ok "calibrate $a: exact criterion"
    else
        bad "calibrate $a: $(tail -n 2 "$T/cal-$a.out")"
    fi
    mnt "$a"
    if ids "$T/dense-$a" "$T/mnt/$a" && ids "$T/oracle-$a" "$T/mnt/$a" --mode oracle &&
        cmp -s "$T/dense-$a" "$T/oracle-$a"; then
        ok "$a: oracle = dense ($(cut -c1-60 "$T/dense-$a"))"
    else
        bad "$a: oracle vs dense: $(cat "$T/dense-$a" "$T/oracle-$a" "$T/gen.err" 2>/dev/null | head -c 400)"
    fi
    if ids "$T/predict-$a" "$T/mnt/$a" --mode predict --window 2; then
        ok "$a: predict ($(cut -c1-60 "$T/predict-$a"))"
    else
        bad "$a: predict: $(head -c 300 "$T/gen.err")"
    fi
    umount_checked "$a"
done

# oracle needs no calibration: a fresh pack of the cats checkpoint
pack cats-fresh "$T/ck-cats" f16
if T_ "$BIN/inflash" --store "$T/cats-fresh" -p "Once upon a time" -n 8 -t 0 --ids --mode oracle \
    >"$T/gen.out" 2>"$T/gen.err"; then
    ok "oracle without calibration"
else
    bad "oracle without calibration: $(cat "$T/gen.err")"
fi

cp -r "$T/ck-drelu" "$T/ck-bad"
sed -i 's/"hidden_act": *"relu"/"hidden_act": "silu"/' "$T/ck-bad/config.json"
if "$BIN/inflash-pack" "$T/ck-bad" "$T/bad" >/dev/null 2>"$T/bad.err"; then
    bad "bamboo with hidden_act silu was packed"
elif grep -q '"hidden_act": "silu"' "$T/bad.err" && [ "$(wc -l <"$T/bad.err")" -eq 1 ]; then
    ok "refused: $(cat "$T/bad.err")"
else
    bad "bamboo refusal message: $(cat "$T/bad.err")"
fi

e2e_finish e2e_acts
