#!/usr/bin/env bash
# e2e_pack.sh: inflash-pack and inflash-inspect from the outside. Bad inputs
# (missing dir, unsupported model_type, truncated safetensors, missing
# tokenizer, existing OUT_DIR without --force, OUT_DIR inside SRC_DIR) give a
# one-line error, a non-zero exit and leave no OUT_DIR behind; usage errors
# exit 2; a good pack inspects cleanly.
set -u
BIN=${INFLASH_BIN:?INFLASH_BIN not set}
MODELS=${INFLASH_SHARED:?INFLASH_SHARED not set}/models
OPT=$MODELS/opt-relu-shakespeare
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# expect_error NAME EXIT NEEDLE OUT -- COMMAND...: exit status EXIT, stderr one
# line "prog: ..." holding NEEDLE, and nothing at OUT or OUT.tmp.*
expect_error() {
    local name=$1 want=$2 needle=$3 out=$4
    shift 5
    "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    local rc=$? lines
    lines=$(wc -l <"$tmp/stderr")
    if [ "$rc" -ne "$want" ]; then
        fail "$name: exit $rc, expected $want ($(head -c 300 "$tmp/stderr"))"
    elif [ "$lines" -ne 1 ] || ! grep -q "^inflash-[a-z]*: " "$tmp/stderr"; then
        fail "$name: stderr is not one 'prog: message' line: $(cat "$tmp/stderr")"
    elif ! grep -qF -- "$needle" "$tmp/stderr"; then
        fail "$name: message lacks '$needle': $(cat "$tmp/stderr")"
    elif [ -n "$out" ] && compgen -G "$out.tmp.*" >/dev/null; then
        fail "$name: a temporary directory was left behind"
    elif [ -n "$out" ] && [ -e "$out" ]; then
        fail "$name: $out exists"
    else
        pass "$name: $(cat "$tmp/stderr")"
    fi
}

# a writable copy of the OPT model to damage
copy_model() {
    cp -r "$OPT" "$tmp/$1"
    chmod -R u+w "$tmp/$1"
}

expect_error "missing source dir" 1 "No such file" "$tmp/o1" -- "$BIN/inflash-pack" "$tmp/nope" "$tmp/o1"

copy_model gpt2
sed -i 's/"model_type": "opt"/"model_type": "gpt2"/' "$tmp/gpt2/config.json"
expect_error "unsupported model_type" 1 '"gpt2"' "$tmp/o2" -- "$BIN/inflash-pack" "$tmp/gpt2" "$tmp/o2"

copy_model gelu
sed -i 's/"activation_function": "relu"/"activation_function": "gelu"/' "$tmp/gelu/config.json"
expect_error "unsupported activation" 1 '"gelu"' "$tmp/o3" -- "$BIN/inflash-pack" "$tmp/gelu" "$tmp/o3"

copy_model trunc
truncate -s 100000 "$tmp/trunc/model.safetensors"
expect_error "truncated safetensors" 1 "model.safetensors" "$tmp/o4" -- "$BIN/inflash-pack" "$tmp/trunc" "$tmp/o4"

copy_model short
truncate -s 5 "$tmp/short/model.safetensors"
expect_error "safetensors shorter than its header" 1 "truncated" "$tmp/o5" -- "$BIN/inflash-pack" "$tmp/short" "$tmp/o5"

copy_model notok
rm "$tmp/notok/merges.txt"
expect_error "missing tokenizer file" 1 "merges.txt" "$tmp/o6" -- "$BIN/inflash-pack" "$tmp/notok" "$tmp/o6"

copy_model layers
sed -i 's/"num_hidden_layers": 6/"num_hidden_layers": 7/' "$tmp/layers/config.json"
expect_error "tensor set does not match the config" 1 "layers.6" "$tmp/o7" -- "$BIN/inflash-pack" "$tmp/layers" "$tmp/o7"

expect_error "OUT_DIR inside SRC_DIR" 1 "inside" "" -- "$BIN/inflash-pack" "$tmp/gelu" "$tmp/gelu/store"
[ -e "$tmp/gelu/store" ] && fail "OUT_DIR inside SRC_DIR: created"

expect_error "no arguments" 2 "usage" "" -- "$BIN/inflash-pack"
expect_error "bad --dtype" 2 "--dtype" "$tmp/o8" -- "$BIN/inflash-pack" "$OPT" "$tmp/o8" --dtype bf16
expect_error "unknown option" 2 "--frobnicate" "$tmp/o9" -- "$BIN/inflash-pack" "$OPT" "$tmp/o9" --frobnicate
if "$BIN/inflash-pack" --help | grep -q "^usage: inflash-pack"; then pass "--help"; else fail "--help"; fi

# a good pack, then an existing OUT_DIR without and with --force
if "$BIN/inflash-pack" "$OPT" "$tmp/good" --dtype f16 >"$tmp/pack.out" 2>"$tmp/pack.err" &&
    grep -q "parameters   5132800" "$tmp/pack.out" && grep -q "layer 6/6" "$tmp/pack.err"; then
    pass "pack: $(head -1 "$tmp/pack.out")"
else
    fail "pack: $(cat "$tmp/pack.out" "$tmp/pack.err")"
fi
sum_before=$(cat "$tmp/good/index.sqlite" | md5sum)
"$BIN/inflash-pack" "$OPT" "$tmp/good" >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
if [ $rc -eq 1 ] && grep -q "already exists" "$tmp/stderr" && [ "$(wc -l <"$tmp/stderr")" -eq 1 ] &&
    [ "$(md5sum <"$tmp/good/index.sqlite")" = "$sum_before" ] && ! compgen -G "$tmp/good.tmp.*" >/dev/null; then
    pass "existing OUT_DIR refused: $(cat "$tmp/stderr")"
else
    fail "existing OUT_DIR: exit $rc: $(cat "$tmp/stderr")"
fi
if "$BIN/inflash-pack" "$OPT" "$tmp/good" --dtype f32 --force >/dev/null 2>&1 &&
    "$BIN/inflash-inspect" "$tmp/good" | grep -q "^  dtype  *f32"; then
    pass "--force replaces the store"
else
    fail "--force"
fi

# inspect
"$BIN/inflash-pack" "$MODELS/stories260K" "$tmp/stories" >/dev/null 2>&1 || fail "pack stories260K"
for store in good stories; do
    if "$BIN/inflash-inspect" "$tmp/$store" >"$tmp/inspect.out" 2>"$tmp/stderr" &&
        grep -q "^hyperparameters" "$tmp/inspect.out" && grep -q "embed_tokens.weight" "$tmp/inspect.out" &&
        grep -q "^FFN in ffn.bin" "$tmp/inspect.out" && [ ! -s "$tmp/stderr" ]; then
        pass "inspect $store ($(wc -l <"$tmp/inspect.out") lines)"
    else
        fail "inspect $store: $(cat "$tmp/stderr")"
    fi
done
grep -q "sp-bpe" "$tmp/inspect.out" && pass "inspect shows the tokenizer" || fail "inspect tokenizer"
expect_error "inspect of a missing store" 1 "index.sqlite" "" -- "$BIN/inflash-inspect" "$tmp/nope"
truncate -s -4096 "$tmp/stories/ffn.bin"
expect_error "inspect of a damaged store" 1 "ffn.bin" "" -- "$BIN/inflash-inspect" "$tmp/stories"
expect_error "inspect without arguments" 2 "usage" "" -- "$BIN/inflash-inspect"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]
