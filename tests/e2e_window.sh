#!/usr/bin/env bash
# e2e_window.sh: end-to-end test of Mistral's sliding window and of special
# tokens in the prompt. inflash-mkmodel writes a tiny Mistral checkpoint
# (window 8) and the same weights without a window; both are packed and
# mounted. Through the mount: greedy ids over a prompt + generation of more
# than 5 windows are identical with batched and one-token-at-a-time prefill;
# --stats reports kv_cache_bytes = n_layers x window x kv_dim x 2 x 4 and
# kv_positions = window, the same for a short and a long generation (the
# cache stays flat); the window changes the logits; -c bounds the context;
# --special maps <s> typed in the prompt to its id.
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash
WIN=8

e2e_tmp window

# ---- the checkpoints ----------------------------------------------------------
if T_ "$INFLASH_BIN/inflash-mkmodel" --shape tiny-llama --sliding-window $WIN --dtype f32 --text '' \
      --out "$T/ckpt-win" >"$T/mk.log" 2>&1; then
    ok "mkmodel --sliding-window $WIN"
else
    bad "mkmodel: $(tail -n 1 "$T/mk.log")"
    exit 1
fi
cp -r "$T/ckpt-win" "$T/ckpt-full"
python3 - "$T/ckpt-full/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
del c["sliding_window"]
c["model_type"] = "llama"
json.dump(c, open(sys.argv[1], "w"), indent=2)
EOF
pack win "$T/ckpt-win" f32
pack full "$T/ckpt-full" f32
mnt win
mnt full
if T_ "$INFLASH_BIN/inflash-inspect" "$T/win" | grep -Eq "^ +sliding_window +$WIN$"; then
    ok "inspect shows sliding_window $WIN"
else
    bad "inspect does not show sliding_window $WIN"
fi

# ---- batched and one-at-a-time prefill ------------------------------------------
PROMPT=$(head -n 1 "$DATA/TinyStories-valid-subset.txt" | cut -c1-160)
ids() {   # ids OUT ARGS...: the 'ids:' line of a greedy run
    T_ "$INFLASH" "${@:2}" -p "$PROMPT" -t 0 --ids 2>"$T/run.err" | tail -n 1 >"$1"
}
ids "$T/ids-b" "$T/mnt/win" -n 40 --stats "$T/stats-40.json"
ids "$T/ids-1" "$T/mnt/win" -n 40 --batch 1
ids "$T/ids-3" "$T/mnt/win" -n 40 --batch 3
n=$(($(wc -w <"$T/ids-b") - 1))
if [ "$n" -ge $((5 * WIN)) ] && cmp -s "$T/ids-b" "$T/ids-1" && cmp -s "$T/ids-b" "$T/ids-3"; then
    ok "greedy ids over $n positions (window $WIN): identical with --batch 128, 1 and 3"
else
    bad "greedy ids ($n positions) differ between batch sizes: $(cat "$T/ids-b") / $(cat "$T/ids-1") / $(cat "$T/ids-3")"
fi

# ---- the KV cache in --stats, flat after the window fills --------------------------
ids "$T/ids-long" "$T/mnt/win" -n 300 --stats "$T/stats-300.json"
if python3 - "$T/stats-40.json" "$T/stats-300.json" "$T/ckpt-win/config.json" $WIN <<'EOF'
import json, sys
a, b, c, w = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), int(sys.argv[4])
kv_dim = c["hidden_size"] // c["num_attention_heads"] * c["num_key_value_heads"]
want = c["num_hidden_layers"] * w * kv_dim * 2 * 4
for d in (a, b):
    assert d["kv_cache_bytes"] == want, (d["kv_cache_bytes"], want)
    assert d["kv_positions"] == w, d["kv_positions"]
assert b["positions"] > 5 * a["positions"] / 2
EOF
then ok "--stats: kv_cache_bytes = layers x $WIN x kv_dim x 2 x 4, kv_positions $WIN, after 40 and 300 tokens"
else bad "--stats: kv_cache_bytes / kv_positions wrong: $(grep -E '"kv_' "$T/stats-40.json" "$T/stats-300.json" | tr -s ' \n' ' ')"
fi
if T_ "$INFLASH" "$T/mnt/win" -p "$PROMPT" -n 2 -t 0 -v 2>&1 >/dev/null | grep -q "sliding window $WIN; KV cache .* for $WIN positions"; then
    ok "-v names the window and the KV cache"
else
    bad "-v: $(T_ "$INFLASH" "$T/mnt/win" -p "$PROMPT" -n 2 -t 0 -v 2>&1 >/dev/null)"
fi

# ---- the window is applied: logits differ from the same weights without it ----------
T_ "$INFLASH" "$T/mnt/win" -p "$PROMPT" -n 1 -t 0 --dump-logits "$T/lw.f32" >/dev/null 2>&1
T_ "$INFLASH" "$T/mnt/full" -p "$PROMPT" -n 1 -t 0 --dump-logits "$T/lf.f32" >/dev/null 2>&1
T_ "$INFLASH" "$T/mnt/full" -p "$PROMPT" -n 1 -t 0 -c $WIN >/dev/null 2>&1; rc_short=$?
if [ -s "$T/lw.f32" ] && [ -s "$T/lf.f32" ] && ! cmp -s "$T/lw.f32" "$T/lf.f32"; then
    ok "the window changes the last prompt position's logits"
else
    bad "the logits with and without the window are the same (or missing)"
fi

# ---- -c bounds the context ----------------------------------------------------------
T_ "$INFLASH" "$T/mnt/full" -p "Once upon a time" -t 0 --ids -n 500 -c 48 2>/dev/null | tail -n 1 >"$T/ids-c"
if [ "$(($(wc -w <"$T/ids-c") - 1))" -eq 48 ] && [ "$rc_short" -eq 1 ]; then
    ok "-c 48: generation stops at 48 positions; a prompt longer than -c is refused"
else
    bad "-c: $(($(wc -w <"$T/ids-c") - 1)) positions, a too-long prompt exited $rc_short"
fi
T_ "$INFLASH" "$T/mnt/full" -p hi -n 1 -c 100000 >/dev/null 2>"$T/c.err"
rc=$?
if [ $rc -eq 2 ] && grep -q "beyond the model's context" "$T/c.err"; then
    ok "-c beyond max_position_embeddings: exit 2, '$(cat "$T/c.err")'"
else
    bad "-c 100000: exit $rc, '$(cat "$T/c.err")'"
fi

# ---- --special: <s> typed in the prompt --------------------------------------------
plain=$(T_ "$INFLASH" "$T/mnt/win" -p "<s>Once" -n 0 --ids | tail -n 1)
special=$(T_ "$INFLASH" "$T/mnt/win" -p "<s>Once" -n 0 --ids --special | tail -n 1)
once=$(T_ "$INFLASH" "$T/mnt/win" -p "Once" -n 0 --ids | tail -n 1)
if [ "$special" = "ids: 1 1 ${once#ids: 1 }" ] && [ "$plain" != "$special" ]; then
    ok "--special: '<s>Once' -> '$special'; without: '$plain'"
else
    bad "--special: '<s>Once' -> '$special' (want 'ids: 1 1 ${once#ids: 1 }'); without: '$plain'"
fi
T_ "$INFLASH" "$T/mnt/win" --perplexity "$T/c.err" --special >/dev/null 2>"$T/sp.err"
rc=$?
if [ $rc -eq 2 ]; then ok "--special with --perplexity: usage error"; else bad "--special --perplexity: exit $rc"; fi

umount_checked win
umount_checked full
e2e_finish e2e_window
