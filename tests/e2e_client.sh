#!/usr/bin/env bash
# e2e_client.sh: end-to-end test of the inference client. Packs
# opt-relu-shakespeare and stories260K into f32 and f16 stores, mounts each
# with mount.sh, and checks -- through the mount and with --store -- that
# greedy ids, last-prompt-position logits, llama2.c's run.c text and the
# perplexities match the references in the model folders; then the bad
# inputs (not a mount, invalid UTF-8, unknown option, too-long prompt,
# missing tensor, a daemon that dies mid-generation).
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash

e2e_tmp client

# ---- pack and mount ---------------------------------------------------------
pack opt-f32 "$MODELS/opt-relu-shakespeare" f32
pack opt-f16 "$MODELS/opt-relu-shakespeare" f16
pack stories-f32 "$MODELS/stories260K" f32
pack stories-f16 "$MODELS/stories260K" f16
for s in opt-f32 opt-f16 stories-f32 stories-f16; do mnt "$s"; done

# ---- reference matches ------------------------------------------------------
# check_reference.py MODEL_DIR COMPARE_LOGITS(0|1) INFLASH ARGS...: every
# reference prompt greedy (ids exact, logits within 1e-3), and for
# stories260K the run.c text of 256 tokens from BOS, byte for byte.
export E2E_TMP=$T
for s in opt-f32 opt-f16 stories-f32 stories-f16; do
    case $s in
        opt-*) mdir=$MODELS/opt-relu-shakespeare; logits=1 ;;
        # stories260K is an f32 model: its f16 store rounds the weights, so
        # its logits are not the reference's (README: the ids stay the same)
        stories-f32) mdir=$MODELS/stories260K; logits=1 ;;
        stories-f16) mdir=$MODELS/stories260K; logits=0 ;;
    esac
    # mmap: the store memory-mapped, every product computed in place
    for how in mount store mmap; do
        case $how in
            mount) src=("$T/mnt/$s") ;;
            store) src=(--store "$T/$s") ;;
            mmap) src=(--store "$T/$s" --mmap) ;;
        esac
        echo "# $s via $how"
        python3 "$CHECK_REF" "$mdir" $logits "$INFLASH" "${src[@]}" || fails=$((fails + 1))
    done
done

# --dense-resident (the whole FFN cached in f32 at start) gives the same
echo "# opt-f16 via store, --dense-resident"
python3 "$CHECK_REF" "$MODELS/opt-relu-shakespeare" 1 "$INFLASH" --store "$T/opt-f16" --dense-resident || fails=$((fails + 1))
echo "# stories-f32 via mount, --dense-resident"
python3 "$CHECK_REF" "$MODELS/stories260K" 1 "$INFLASH" "$T/mnt/stories-f32" --dense-resident || fails=$((fails + 1))

# ---- sampling ---------------------------------------------------------------
# a seed reproduces a sampled generation; the same through the mount and the store
for how in a b; do
    timeout 300 "$INFLASH" "$T/mnt/opt-f16" -p "ROMEO:" -n 48 -t 0.9 --top-p 0.9 --seed 1234 --ids >"$T/samp-$how.out" 2>&1
done
timeout 300 "$INFLASH" --store "$T/opt-f16" -p "ROMEO:" -n 48 -t 0.9 --top-p 0.9 --seed 1234 --ids >"$T/samp-c.out" 2>&1
if cmp -s "$T/samp-a.out" "$T/samp-b.out" && cmp -s "$T/samp-a.out" "$T/samp-c.out" &&
   nw=$(tail -n 1 "$T/samp-a.out" | wc -w) && [ "$nw" -gt 4 ] && [ "$nw" -le $((1 + 3 + 48)) ]; then
    ok "sampling -t 0.9 --top-p 0.9 --seed 1234: reproducible ($((nw - 4)) tokens)"
else
    bad "sampling with a seed is not reproducible: $(tail -n 1 "$T/samp-a.out") / $(tail -n 1 "$T/samp-b.out")"
fi

# ---- perplexity -------------------------------------------------------------
# opt-relu-shakespeare: the held-out bytes [1003857, 1115394) of
# tinyshakespeare.txt as one stream; stories260K: every line of
# TinyStories-valid-subset.txt its own document (both READMEs' rules).
tail -c +1003858 "$DATA/tinyshakespeare.txt" >"$T/heldout.txt"
ppl_check() {   # ppl_check LABEL EXPECTED INFLASH-ARGS...
    local label=$1 want=$2
    shift 2
    local out
    out=$(timeout 900 "$INFLASH" "$@" 2>"$T/ppl.err" | tail -n 1)
    if python3 - "$out" "$want" <<'EOF'
import re, sys
m = re.fullmatch(r"perplexity: ([0-9.]+) \(tokens: ([0-9]+)\)", sys.argv[1])
sys.exit(0 if m and abs(float(m.group(1)) / float(sys.argv[2]) - 1) <= 0.005 else 1)
EOF
    then ok "$label: '$out', reference $want"
    else bad "$label: '$out' $(cat "$T/ppl.err"), reference $want (within 0.5%)"
    fi
}
opt_ppl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["validation"]["perplexity"])' "$MODELS/opt-relu-shakespeare/reference.json")
st_ppl=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ffn_sparsity"]["dense_perplexity"])' "$MODELS/stories260K/reference.json")
ppl_check "opt perplexity via mount (f16)" "$opt_ppl" "$T/mnt/opt-f16" --perplexity "$T/heldout.txt"
ppl_check "opt perplexity via store (f32)" "$opt_ppl" --store "$T/opt-f32" --perplexity "$T/heldout.txt"
ppl_check "stories260K perplexity via mount (f32)" "$st_ppl" "$T/mnt/stories-f32" --perplexity "$DATA/TinyStories-valid-subset.txt" --per-line
ppl_check "stories260K perplexity via store (f32)" "$st_ppl" --store "$T/stories-f32" --perplexity "$DATA/TinyStories-valid-subset.txt" --per-line

# ---- statistics -------------------------------------------------------------
if timeout 300 "$INFLASH" "$T/mnt/opt-f16" -p "ROMEO:" -n 8 -t 0 --stats "$T/stats.json" >/dev/null 2>"$T/stats.err" &&
   python3 - "$T/stats.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
need = ["mode", "tokens", "ms_per_token", "io_ms_per_token", "compute_ms_per_token", "ffn_bytes_total",
        "ffn_bytes_read_per_token", "resident_bytes_peak"]
assert all(k in d for k in need), need
assert d["mode"] == "dense" and d["tokens"] == 8
# dense reads every layer's whole neuron file per token
assert d["ffn_bytes_read_per_token"] == d["ffn_bytes_total"] == 6 * 1024 * 2 * 256 * 2
assert d["resident_bytes_peak"] > 0
EOF
then ok "--stats JSON (dense: whole FFN read per token)"
else bad "--stats JSON: $(cat "$T/stats.err")"
fi

# ---- bad input --------------------------------------------------------------
expect_err() {  # expect_err LABEL WANT_RC(any|N) PATTERN INFLASH-ARGS...
    local label=$1 want_rc=$2 pat=$3
    shift 3
    timeout 120 "$INFLASH" "$@" >"$T/bad.out" 2>"$T/bad.err"
    local rc=$? lines
    lines=$(wc -l <"$T/bad.err")
    if [ $rc -ne 0 ] && { [ "$want_rc" = any ] || [ $rc -eq "$want_rc" ]; } && [ "$lines" -eq 1 ] &&
       grep -q -- "$pat" "$T/bad.err"; then
        ok "$label: exit $rc, '$(cat "$T/bad.err")'"
    else
        bad "$label: exit $rc, $lines stderr lines: '$(cat "$T/bad.err")' (want /$pat/)"
    fi
}
mkdir -p "$T/notamount"
expect_err "not a mount" 1 "not an inflash mount" "$T/notamount" -p hi
expect_err "HF model folder is not a mount" 1 "not an inflash mount" "$MODELS/opt-relu-shakespeare" -p hi
expect_err "invalid UTF-8 prompt" 1 "UTF-8" "$T/mnt/opt-f16" -p "$(printf 'ROMEO\xff:')"
expect_err "unknown option" 2 "unknown option" "$T/mnt/opt-f16" --no-such-option
expect_err "bad -n" 2 "\-n" "$T/mnt/opt-f16" -n lots
head -c 4000 "$T/heldout.txt" >"$T/long.txt"
expect_err "too-long prompt (mount)" 1 "longer than the context" "$T/mnt/opt-f16" -f "$T/long.txt"
expect_err "too-long prompt (store)" 1 "longer than the context" --store "$T/stories-f32" -f "$T/long.txt"
expect_err "--mode predict" 2 "needs a calibrated store" "$T/mnt/opt-f16" --mode predict
# a store without model.norm.weight (index row and dense.bin count adjusted
# so that the store itself is consistent)
cp -r "$T/stories-f32" "$T/stories-miss"
python3 - "$T/stories-miss" <<'EOF'
import sqlite3, struct, sys
d = sys.argv[1]
c = sqlite3.connect(d + "/index.sqlite")
c.execute("DELETE FROM tensors WHERE name = 'model.norm.weight'")
c.commit()
c.close()
with open(d + "/dense.bin", "r+b") as f:
    f.seek(24)
    n = struct.unpack("<Q", f.read(8))[0]
    f.seek(24)
    f.write(struct.pack("<Q", n - 1))
EOF
expect_err "missing tensor (store)" 1 "missing tensor model.norm.weight" --store "$T/stories-miss" -p hi
mnt stories-miss
expect_err "missing tensor (mount)" 1 "missing tensor model.norm.weight" "$T/mnt/stories-miss" -p hi

# The daemon dies in the middle of a generation: the client stops with the
# read error, one line, and prints nothing after it.
cp -r "$T/opt-f16" "$T/opt-kill"
mnt opt-kill
pid=$(bash "$MOUNT_SH" --status | awk -F'\t' -v m="$T/mnt/opt-kill" '$1 == m { sub(/^pid /, "", $3); print $3 }')
if [ -z "$pid" ]; then
    bad "read error mid-generation: no daemon pid for $T/mnt/opt-kill in mount.sh --status"
else
    timeout 300 "$INFLASH" "$T/mnt/opt-kill" -p "ROMEO:" -n 511 -t 0 --threads 1 >"$T/kill.out" 2>"$T/kill.err" &
    cpid=$!
    # wait until generated text (beyond the echoed prompt) has appeared
    for _ in $(seq 400); do [ "$(wc -c <"$T/kill.out")" -gt 20 ] && break; sleep 0.05; done
    kill -9 "$pid"
    wait $cpid
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "skip read error mid-generation: the generation finished before the daemon was killed"
    elif [ $rc -eq 1 ] && [ "$(wc -l <"$T/kill.err")" -eq 1 ] && grep -q "layers/.*/ffn" "$T/kill.err"; then
        ok "read error mid-generation: exit 1, '$(cat "$T/kill.err")' after $(wc -c <"$T/kill.out") bytes of text"
    else
        bad "read error mid-generation: exit $rc, '$(cat "$T/kill.err")'"
    fi
fi

e2e_finish e2e_client
