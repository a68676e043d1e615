#!/usr/bin/env bash
# e2e_pack.sh: inflash-pack and inflash-inspect from the outside. Bad inputs
# (missing dir, unsupported model_type, truncated safetensors, missing
# tokenizer, a tokenizer the client cannot use, existing OUT_DIR without
# --force, OUT_DIR inside SRC_DIR) give a one-line error, a non-zero exit and
# leave no OUT_DIR behind; usage errors exit 2; -q and -v change only what
# goes to stderr; a good pack inspects cleanly.
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
BIN=$INFLASH_BIN
OPT=$MODELS/opt-relu-shakespeare
e2e_tmp pack

# expect_error NAME EXIT NEEDLE OUT -- COMMAND...: exit status EXIT, stderr one
# line "prog: ..." holding NEEDLE, and nothing at OUT or OUT.tmp.*
expect_error() {
    local name=$1 want=$2 needle=$3 out=$4
    shift 5
    "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? lines
    lines=$(wc -l <"$T/stderr")
    if [ "$rc" -ne "$want" ]; then
        bad "$name: exit $rc, expected $want ($(head -c 300 "$T/stderr"))"
    elif [ "$lines" -ne 1 ] || ! grep -q "^inflash-[a-z]*: " "$T/stderr"; then
        bad "$name: stderr is not one 'prog: message' line: $(cat "$T/stderr")"
    elif ! grep -qF -- "$needle" "$T/stderr"; then
        bad "$name: message lacks '$needle': $(cat "$T/stderr")"
    elif [ -n "$out" ] && compgen -G "$out.tmp.*" >/dev/null; then
        bad "$name: a temporary directory was left behind"
    elif [ -n "$out" ] && [ -e "$out" ]; then
        bad "$name: $out exists"
    else
        ok "$name: $(cat "$T/stderr")"
    fi
}

# a writable copy of the OPT model to damage
copy_model() {
    cp -r "$OPT" "$T/$1"
    chmod -R u+w "$T/$1"
}

expect_error "missing source dir" 1 "No such file" "$T/o1" -- "$BIN/inflash-pack" "$T/nope" "$T/o1"

copy_model gpt2
sed -i 's/"model_type": "opt"/"model_type": "gpt2"/' "$T/gpt2/config.json"
expect_error "unsupported model_type" 1 '"gpt2"' "$T/o2" -- "$BIN/inflash-pack" "$T/gpt2" "$T/o2"

copy_model gelu
sed -i 's/"activation_function": "relu"/"activation_function": "gelu"/' "$T/gelu/config.json"
expect_error "unsupported activation" 1 '"gelu"' "$T/o3" -- "$BIN/inflash-pack" "$T/gelu" "$T/o3"

copy_model trunc
truncate -s 100000 "$T/trunc/model.safetensors"
expect_error "truncated safetensors" 1 "model.safetensors" "$T/o4" -- "$BIN/inflash-pack" "$T/trunc" "$T/o4"

copy_model short
truncate -s 5 "$T/short/model.safetensors"
expect_error "safetensors shorter than its header" 1 "truncated" "$T/o5" -- "$BIN/inflash-pack" "$T/short" "$T/o5"

copy_model notok
rm "$T/notok/merges.txt"
expect_error "missing tokenizer file" 1 "merges.txt" "$T/o6" -- "$BIN/inflash-pack" "$T/notok" "$T/o6"

# the client's tokenizer reads the files: what it refuses, pack refuses with its message
copy_model badmerge
printf '#version: 0.2\nx y\n' >"$T/badmerge/merges.txt"
expect_error "merge the client refuses" 1 "merges.txt line 2" "$T/o10" -- "$BIN/inflash-pack" "$T/badmerge" "$T/o10"
cp -r "$MODELS/stories260K" "$T/whitespace"
chmod -R u+w "$T/whitespace"
python3 -c 'import json, sys
t = json.load(open(sys.argv[1]))
t["pre_tokenizer"] = {"type": "Whitespace"}
json.dump(t, open(sys.argv[1], "w"))' "$T/whitespace/tokenizer.json"
expect_error "tokenizer.json the client refuses" 1 'tokenizer.json: pre_tokenizer type "Whitespace"' "$T/o11" -- \
    "$BIN/inflash-pack" "$T/whitespace" "$T/o11"

copy_model layers
sed -i 's/"num_hidden_layers": 6/"num_hidden_layers": 7/' "$T/layers/config.json"
expect_error "tensor set does not match the config" 1 "layers.6" "$T/o7" -- "$BIN/inflash-pack" "$T/layers" "$T/o7"

expect_error "OUT_DIR inside SRC_DIR" 1 "inside" "" -- "$BIN/inflash-pack" "$T/gelu" "$T/gelu/store"
[ -e "$T/gelu/store" ] && bad "OUT_DIR inside SRC_DIR: created"

expect_error "no arguments" 2 "usage" "" -- "$BIN/inflash-pack"
expect_error "bad --dtype" 2 "--dtype" "$T/o8" -- "$BIN/inflash-pack" "$OPT" "$T/o8" --dtype bf16
expect_error "unknown option" 2 "--frobnicate" "$T/o9" -- "$BIN/inflash-pack" "$OPT" "$T/o9" --frobnicate
expect_error "--dtype without a value" 2 "--dtype" "$T/o9" -- "$BIN/inflash-pack" "$OPT" "$T/o9" --dtype
expect_error "three arguments" 2 "too many" "$T/o9" -- "$BIN/inflash-pack" "$OPT" "$T/o9" "$T/o9b"
if "$BIN/inflash-pack" --help | grep -q "^usage: inflash-pack"; then ok "--help"; else bad "--help"; fi

# a good pack, then an existing OUT_DIR without and with --force
if "$BIN/inflash-pack" "$OPT" "$T/good" --dtype f16 >"$T/pack.out" 2>"$T/pack.err" &&
    grep -q "parameters   5132800" "$T/pack.out" && grep -q "layer 6/6" "$T/pack.err"; then
    ok "pack: $(head -1 "$T/pack.out")"
else
    bad "pack: $(cat "$T/pack.out" "$T/pack.err")"
fi
sum_before=$(cat "$T/good/index.sqlite" | md5sum)
"$BIN/inflash-pack" "$OPT" "$T/good" >"$T/stdout" 2>"$T/stderr"
rc=$?
if [ $rc -eq 1 ] && grep -q "already exists" "$T/stderr" && [ "$(wc -l <"$T/stderr")" -eq 1 ] &&
    [ "$(md5sum <"$T/good/index.sqlite")" = "$sum_before" ] && ! compgen -G "$T/good.tmp.*" >/dev/null; then
    ok "existing OUT_DIR refused: $(cat "$T/stderr")"
else
    bad "existing OUT_DIR: exit $rc: $(cat "$T/stderr")"
fi
if "$BIN/inflash-pack" "$OPT" "$T/good" --dtype f32 --force >/dev/null 2>&1 &&
    "$BIN/inflash-inspect" "$T/good" | grep -q "^  dtype  *f32"; then
    ok "--force replaces the store"
else
    bad "--force"
fi
# -q: nothing on stderr; -v: what was read, and the progress line; options anywhere
if "$BIN/inflash-pack" -q --force "$OPT" --dtype=f16 "$T/quiet" >"$T/stdout" 2>"$T/stderr" && [ ! -s "$T/stderr" ] &&
    grep -q "parameters   5132800" "$T/stdout"; then
    ok "-q: no progress"
else
    bad "-q: $(cat "$T/stderr")"
fi
if "$BIN/inflash-pack" -v "$MODELS/stories260K" "$T/verbose" >/dev/null 2>"$T/stderr" &&
    grep -q "tokenizer sp-bpe: 512 tokens (3 special), .* files kept: tokenizer.json tokenizer_config.json" \
        "$T/stderr" && grep -q "layer 5/5" "$T/stderr"; then
    ok "-v: $(grep tokenizer "$T/stderr")"
else
    bad "-v: $(cat "$T/stderr")"
fi

# inspect
"$BIN/inflash-pack" "$MODELS/stories260K" "$T/stories" >/dev/null 2>&1 || bad "pack stories260K"
for store in good stories; do
    if "$BIN/inflash-inspect" "$T/$store" >"$T/inspect.out" 2>"$T/stderr" &&
        grep -q "^hyperparameters" "$T/inspect.out" && grep -q "embed_tokens.weight" "$T/inspect.out" &&
        grep -q "^FFN in ffn.bin" "$T/inspect.out" && [ ! -s "$T/stderr" ]; then
        ok "inspect $store ($(wc -l <"$T/inspect.out") lines)"
    else
        bad "inspect $store: $(cat "$T/stderr")"
    fi
done
grep -q "sp-bpe" "$T/inspect.out" && ok "inspect shows the tokenizer" || bad "inspect tokenizer"
expect_error "inspect of a missing store" 1 "index.sqlite" "" -- "$BIN/inflash-inspect" "$T/nope"
truncate -s -4096 "$T/stories/ffn.bin"
expect_error "inspect of a damaged store" 1 "ffn.bin" "" -- "$BIN/inflash-inspect" "$T/stories"
expect_error "inspect without arguments" 2 "usage" "" -- "$BIN/inflash-inspect"
expect_error "inspect with an unknown option" 2 "--frobnicate" "" -- "$BIN/inflash-inspect" --frobnicate "$T/good"
"$BIN/inflash-inspect" --help | grep -q "^usage: inflash-inspect" && ok "inspect --help" || bad "inspect --help"
if "$BIN/inflash-inspect" "$T/good" --verify -q >"$T/stdout" 2>"$T/stderr" && [ ! -s "$T/stderr" ] &&
    grep -q "^verify: clean" "$T/stdout"; then
    ok "inspect STORE --verify -q: $(tail -n 1 "$T/stdout")"
else
    bad "inspect --verify -q: $(cat "$T/stdout" "$T/stderr")"
fi

e2e_finish e2e_pack
