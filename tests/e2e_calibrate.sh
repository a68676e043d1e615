#!/usr/bin/env bash
# e2e_calibrate.sh: inflash-calibrate end to end. Packs opt-relu-shakespeare
# (f32) and stories260K; calibrates OPT on the training part of
# tinyshakespeare with --reorder and checks on the held-out part that every
# layer reaches recall >= 0.99 with a predicted-active set <= 3x the true
# one; that dense generation gives the same ids as before and every bundle
# (read by id, and with dd through a mount when inflashfs is built) has the
# same bytes; that inflash-inspect shows the calibration. Also: usage
# errors, a failure injected into the update and a kill -9 mid-run leave
# the store as it was; -q prints nothing and --mem-budget takes a suffix;
# stories260K at target sparsity 0.5 and 0.7 prints its table (progress:
# one line per layer; the OPT run's -v adds every epoch).
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
e2e_env
CAL=$INFLASH_BIN/inflash-calibrate
CHECK=$INFLASH_BIN/../tests/calib_bundles

e2e_tmp calib
# a calibration run in the background (the kill -9 test) dies with the script
BG=
trap '[ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; e2e_cleanup' EXIT

# ---- setup --------------------------------------------------------------------
pack opt "$MODELS/opt-relu-shakespeare" f32
pack stories "$MODELS/stories260K" f32
head -c 1003857 "$DATA/tinyshakespeare.txt" >"$T/train.txt"
tail -c +1003858 "$DATA/tinyshakespeare.txt" >"$T/heldout.txt"

files_sum() { (cd "$1" && md5sum index.sqlite dense.bin ffn.bin); }
leftovers() { compgen -G "$1.tmp.*" >/dev/null || compgen -G "$1.old.*" >/dev/null; }
gen_ids() {
    timeout 300 "$INFLASH_BIN/inflash" --store "$1" -p "ROMEO:" -n 32 -t 0 --ids --threads 1 2>/dev/null | grep '^ids:'
}

# neurons 0, 7 and the last of layers 00 and 05 through a mount (if the
# daemon is built), one file per neuron in DIR
HAVE_FS=0
[ -x "$INFLASH_BIN/inflashfs" ] && [ -e /dev/fuse ] && HAVE_FS=1
dd_neurons() {   # dd_neurons STORE DIR
    local mnt=$T/mnt/$(basename "$2") bb
    mkdir -p "$T/mnt" "$2"
    if ! timeout 60 bash "$MOUNT_SH" "$1" "$mnt" >"$T/mount.log" 2>&1; then
        bad "mount $1: $(tail -n 1 "$T/mount.log")"
        return
    fi
    MOUNTS+=("$mnt")
    bb=$("$INFLASH_BIN/inflash-inspect" "$1" | grep -o 'bundle [0-9]* bytes' | cut -d' ' -f2)
    for l in 00 05; do
        for j in 0 7 1023; do
            timeout 60 dd if="$mnt/layers/$l/ffn" of="$2/$l-$j" bs="$bb" skip="$j" count=1 status=none ||
                bad "dd neuron $j of layer $l"
        done
    done
    timeout 60 bash "$MOUNT_SH" -u "$mnt" >/dev/null 2>&1 || bad "unmount $mnt"
    unset 'MOUNTS[-1]'
}

gen_ids "$T/opt" >"$T/ids.before"
"$CHECK" "$T/opt" >"$T/bundles.before" || bad "calib_bundles before"
files_sum "$T/opt" >"$T/files.before"
[ -s "$T/ids.before" ] && ok "dense ids before: $(cut -c1-60 "$T/ids.before")..." || bad "no ids from inflash"
if [ $HAVE_FS = 1 ]; then dd_neurons "$T/opt" "$T/dd.before"; fi

# ---- usage and runtime errors ----------------------------------------------------
expect() {   # expect NAME EXIT NEEDLE -- COMMAND...
    local name=$1 want=$2 needle=$3
    shift 4
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ $rc -ne "$want" ]; then
        bad "$name: exit $rc, expected $want: $(tail -n 2 "$T/err")"
    elif ! grep -q "^inflash-calibrate: .*$needle" "$T/err"; then
        bad "$name: stderr lacks '$needle': $(tail -n 2 "$T/err")"
    else
        ok "$name: $(tail -n 1 "$T/err")"
    fi
}
expect "no arguments" 2 "STORE_DIR" -- "$CAL"
expect "no --text" 2 "--text" -- "$CAL" "$T/opt"
expect "unknown option" 2 "--bogus" -- "$CAL" "$T/opt" --text "$T/train.txt" --bogus
expect "bad --recall" 2 "--recall" -- "$CAL" "$T/opt" --text "$T/train.txt" --recall 1.5
expect "missing text" 1 "nope.txt" -- "$CAL" "$T/opt" --text "$T/nope.txt"
expect "missing store" 1 "not an inflash store" -- "$CAL" "$T/nostore" --text "$T/train.txt"
mkdir "$T/empty"
expect "not a store" 1 "index.sqlite" -- "$CAL" "$T/empty" --text "$T/train.txt"
expect "memory budget" 1 "--tokens <=" -- "$CAL" "$T/opt" --text "$T/train.txt" --mem-budget 1
if "$CAL" --help | grep -q "criterion product"; then ok "--help names the criterion"; else bad "--help"; fi

# a failure injected into the update, and a kill -9 mid-run: the store is as it was
for step in dense index verify exchange; do
    expect "update failing at $step" 1 "step \"$step\"" -- env INFLASH_STOREU_FAIL_AT=$step \
        "$CAL" "$T/opt" --text "$T/train.txt" --tokens 600 --epochs 1 --reorder --threads 1
done
if files_sum "$T/opt" | cmp -s - "$T/files.before" && ! leftovers "$T/opt"; then
    ok "failed updates left the store byte for byte as it was"
else
    bad "a failed update changed the store or left a temporary directory"
fi

"$CAL" "$T/opt" --text "$T/train.txt" --tokens 20000 --threads 1 >/dev/null 2>"$T/kill.err" &
BG=$!
for _ in $(seq 1 600); do
    grep -q "calibration forward" "$T/kill.err" && break
    sleep 0.1
done
kill -9 "$BG" 2>/dev/null
wait "$BG" 2>/dev/null
BG=
if grep -q "calibration forward" "$T/kill.err" && files_sum "$T/opt" | cmp -s - "$T/files.before" &&
    "$INFLASH_BIN/inflash-inspect" "$T/opt" >"$T/inspect.out" 2>&1 && grep -q "^calibration: none" "$T/inspect.out"; then
    ok "kill -9 during calibration: the old store, uncalibrated, still inspects"
else
    bad "kill -9 during calibration: $(tail -n 2 "$T/kill.err"; tail -n 1 "$T/inspect.out")"
fi
rm -rf "$T"/opt.tmp.*

# ---- OPT: calibrate on the training text, measure on the held-out text -----------------
if timeout 900 "$CAL" "$T/opt" --text "$T/train.txt" --eval "$T/heldout.txt" --tokens 20000 --eval-tokens 20000 \
    --epochs 4 --reorder --threads 1 -v >"$T/opt.out" 2>"$T/opt.err"; then
    ok "calibrate opt-relu-shakespeare (--reorder, held-out eval)"
else
    bad "calibrate opt: $(tail -n 3 "$T/opt.err")"
fi
sed -n '/^criterion/,$p' "$T/opt.out"
# table rows: layer rank sparsity recall precision predicted true pred/true threshold act_threshold
rows=$(awk '$1 ~ /^[0-9]+$/ && NF == 10' "$T/opt.out" | wc -l)
badrows=$(awk '$1 ~ /^[0-9]+$/ && NF == 10 && ($4 < 0.99 || $8 > 3.0)' "$T/opt.out")
if grep -q "^per-layer table on the eval text" "$T/opt.out" && [ "$rows" -eq 6 ] && [ -z "$badrows" ]; then
    ok "held-out text: every layer has recall >= 0.99 and predicted <= 3x true"
else
    bad "held-out targets missed ($rows rows): $badrows"
fi
grep -q "^predictor cost per token: .*% of the dense FFN" "$T/opt.out" && ok "predictor cost printed" ||
    bad "no predictor cost line"
grep -q "layer 3 rank [0-9]*: epoch 4/4 loss" "$T/opt.err" && grep -q "calibration forward: 20000/20000 tokens" "$T/opt.err" &&
    ok "progress on stderr (-v: every epoch)" || bad "progress lines missing"
! leftovers "$T/opt" && ok "no temporary directory left" || bad "temporary directory left behind"

"$INFLASH_BIN/inflash-inspect" "$T/opt" >"$T/inspect.out" 2>&1
crows=$(sed -n '/^calibration (criterion relu:up>0, 20000 tokens/,$p' "$T/inspect.out" | awk '$1 ~ /^[0-9]+$/ && NF == 9' | wc -l)
if [ "$crows" -eq 6 ] && [ "$(grep -c ' yes  *reordered ' "$T/inspect.out")" -eq 6 ] &&
    grep -q "calib_recall_target *0.99" "$T/inspect.out"; then
    ok "inspect shows the calibration of 6 layers, frequencies and the hot-first order"
else
    bad "inspect after calibration: $(tail -n 12 "$T/inspect.out")"
fi

gen_ids "$T/opt" >"$T/ids.after"
cmp -s "$T/ids.before" "$T/ids.after" && ok "dense generation after --reorder: identical ids" ||
    bad "ids changed: $(cat "$T/ids.before" "$T/ids.after")"
"$CHECK" "$T/opt" >"$T/bundles.after" || bad "calib_bundles after"
cmp -s "$T/bundles.before" "$T/bundles.after" && ok "every bundle has the same bytes under its neuron id" ||
    bad "bundle bytes changed by id"
[ "$(files_sum "$T/opt" | sed -n 3p)" != "$(sed -n 3p "$T/files.before")" ] && ok "ffn.bin was rewritten" ||
    bad "ffn.bin was not reordered"
if [ $HAVE_FS = 1 ]; then
    dd_neurons "$T/opt" "$T/dd.after"
    if diff -r "$T/dd.before" "$T/dd.after" >/dev/null && [ "$(ls "$T/dd.after" | wc -l)" -eq 6 ]; then
        ok "dd of neurons 0, 7, 1023 of layers 00 and 05 through the mount: same bytes as before"
    else
        bad "dd through the mount differs after --reorder"
    fi
else
    echo "skip dd through a mount (no inflashfs in $INFLASH_BIN or no /dev/fuse)"
fi

# ---- -q (errors only) and a --mem-budget with a suffix, on a copy
cp -r "$T/stories" "$T/stories-q"
if "$CAL" "$T/stories-q" --text "$DATA/TinyStories-valid-subset.txt" --tokens 600 --epochs 1 --threads 1 \
    --mem-budget 512m -q >"$T/q.out" 2>"$T/q.err" && [ ! -s "$T/q.out" ] && [ ! -s "$T/q.err" ] &&
    "$INFLASH_BIN/inflash-inspect" "$T/stories-q" | grep -q "calib_target_sparsity"; then
    ok "-q: calibrated with no output; --mem-budget 512m accepted"
else
    bad "-q: $(head -c 300 "$T/q.out" "$T/q.err")"
fi
rm -rf "$T/stories-q"

# ---- stories260K (gated) at two target sparsities ------------------------------------
for sp in 0.5 0.7; do
    cp -r "$T/stories" "$T/stories-$sp"
    if timeout 600 "$CAL" "$T/stories-$sp" --text "$DATA/TinyStories-valid-subset.txt" --target-sparsity "$sp" \
        --epochs 4 --threads 1 >"$T/st.out" 2>"$T/st.err"; then
        sed -n '/^criterion/,$p' "$T/st.out"
        far=$(awk -v t="$sp" '$1 ~ /^[0-9]+$/ && NF == 10 && ($3 - t > 0.05 || t - $3 > 0.05)' "$T/st.out")
        n=$(awk '$1 ~ /^[0-9]+$/ && NF == 10' "$T/st.out" | wc -l)
        if [ "$n" -eq 5 ] && [ -z "$far" ] && "$INFLASH_BIN/inflash-inspect" "$T/stories-$sp" |
            grep -q "calib_target_sparsity *$sp"; then
            ok "stories260K at target sparsity $sp: table of 5 layers near the target"
        else
            bad "stories260K at $sp: $n rows, off target: $far"
        fi
        # without -v: one progress line per layer, no epochs
        if [ "$(grep -c '^inflash-calibrate: layer [0-9]*: sparsity .* rank [0-9]*: recall' "$T/st.err")" -eq 5 ] &&
            ! grep -q "epoch" "$T/st.err"; then
            ok "default progress: one line per layer"
        else
            bad "default progress: $(grep -c . "$T/st.err") lines: $(tail -n 2 "$T/st.err")"
        fi
    else
        bad "calibrate stories260K at $sp: $(tail -n 3 "$T/st.err")"
    fi
done

e2e_finish e2e_calibrate
