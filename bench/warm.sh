#!/usr/bin/env bash
# bench/warm.sh: the kernels at the memory-bandwidth limit. On a Llama-shaped
# SYNTHETIC model (inflash-mkmodel --shape llama-7b --layers 16 by default),
# one store per dtype packed from one checkpoint, warm page cache, no memory
# cap: `inflash --store --mmap` (dense, every weight used in place from the
# mapping) times a PROMPT-position prompt then GEN greedy tokens per dtype,
# beside
#   - inflash-kbench from the same run: the DRAM read bandwidth, giving the
#     decode limit (weight bytes per token / bandwidth), and OpenBLAS sgemm's
#     throughput on the 7B layer's shapes for a PROMPT-token batch, giving
#     the prefill's share of it;
#   - with --llama-cpp DIR: llama.cpp on the same weights (bench/to_gguf.py
#     -> GGUF F16, llama-quantize --pure -> Q8_0, Q4_0), timed by llama-bench
#     (-p PROMPT -n GEN -t THREADS -lm mmap), and a greedy check: llama.cpp's
#     prompt ids (llama-completion --verbose-prompt) and greedy continuation
#     (llama-simple) of a short prompt on the F16 file against inflash's on
#     the f16 store.
# A separate script from run.sh: another model (Llama, not OPT), other
# conditions (warm, no cap, no mount, no calibration) and another question
# (compute against DRAM, not I/O against flash).
# Writes warm.json and warm.md to --out (bench/warm_report.py).
set -euo pipefail

prog=bench/warm.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
usage: $prog [options]

Decode and prefill speed per dtype, warm and uncapped, against the DRAM
bandwidth limit, OpenBLAS sgemm and (with --llama-cpp) llama.cpp.

  --shape S          inflash-mkmodel shape (default llama-7b)
  --layers N         layers (default 16; fewer for a quick look)
  --dtype LIST       store dtypes, comma-separated (default f16,q8_0,q4_0)
  --prompt N         prompt positions, BOS included (default 128)
  --gen N            generated tokens (default 32)
  --threads N        threads, inflash and llama.cpp (default 2)
  --runs N           timed inflash runs per dtype, the best kept (default 1)
  --llama-cpp DIR    a llama.cpp source tree with a build in DIR/build/bin and
                     DIR/gguf-py: compare on the same weights
  --llama-reps N     llama-bench repetitions (default 3)
  --check-prompt T   the greedy check's prompt (default "Once upon a time")
  --check-tokens N   tokens the greedy check generates (default 8)
  --kbench-mib MIB   inflash-kbench's bandwidth buffer (default its own)
  --work DIR         stores, GGUF files, logs (default /tmp/inflash-warm)
  --out DIR          results folder (default bench/results/warm)
  --quick            smoke test: tiny-llama, 16 + 4 tokens, small kbench
  -h, --help         this text
env: INFLASH_BIN (default <repo>/build/bin), PYNUM (a python3 with numpy;
default /usr/bin/python3)
Exit status: 0 ok, 1 failure, 2 usage error.
EOF
}

BIN=${INFLASH_BIN:-$here/build/bin}
PYNUM=${PYNUM:-/usr/bin/python3}
. "$here/bench/lib.sh"
shape=llama-7b layers=16 dtype_list=f16,q8_0,q4_0 prompt=128 gen=32 threads=2 runs=1 llama="" llama_reps=3
check_prompt="Once upon a time" check_tokens=8 kbench_mib="" work=/tmp/inflash-warm out=$here/bench/results/warm
quick=0 kbench_extra=()

while [ $# -gt 0 ]; do
    case "$1" in
    --shape) need "$@"; shape=$2; shift 2 ;;
    --layers) need "$@"; layers=$2; shift 2 ;;
    --dtype) need "$@"; dtype_list=$2; shift 2 ;;
    --prompt) need "$@"; prompt=$2; shift 2 ;;
    --gen) need "$@"; gen=$2; shift 2 ;;
    --threads) need "$@"; threads=$2; shift 2 ;;
    --runs) need "$@"; runs=$2; shift 2 ;;
    --llama-cpp) need "$@"; llama=$2; shift 2 ;;
    --llama-reps) need "$@"; llama_reps=$2; shift 2 ;;
    --check-prompt) need "$@"; check_prompt=$2; shift 2 ;;
    --check-tokens) need "$@"; check_tokens=$2; shift 2 ;;
    --kbench-mib) need "$@"; kbench_mib=$2; shift 2 ;;
    --work) need "$@"; work=$2; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
    esac
done
if [ "$quick" = 1 ]; then
    shape=tiny-llama layers="" prompt=16 gen=4 llama_reps=1 check_tokens=4 kbench_mib=${kbench_mib:-64}
    kbench_extra=(--layers 1 --reps 1)
fi
for n in "$prompt" "$gen" "$threads" "$runs" "$llama_reps" "$check_tokens" ${layers:+"$layers"} \
         ${kbench_mib:+"$kbench_mib"}; do
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || usage_error "not a positive count: '$n'"
done
[ "$prompt" -ge 2 ] || usage_error "--prompt: at least 2 positions (BOS and a token)"
dtypes=$(bench_check_dtypes "$dtype_list" 2>&1) || usage_error "--dtype: $dtypes"

for b in inflash inflash-pack inflash-mkmodel inflash-inspect; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing (build it: cmake --build build; or set INFLASH_BIN)"
done
command -v python3 >/dev/null || die "python3 missing (apt-get install python3)"
kbench=$BIN/inflash-kbench
[ -x "$kbench" ] || { echo "$prog: $kbench missing: no bandwidth limit and no sgemm figure" >&2; kbench=""; }
if [ -n "$llama" ]; then
    llama=$(cd "$llama" 2>/dev/null && pwd) || die "$llama: no such folder"
    for b in llama-bench llama-quantize llama-completion llama-simple; do
        [ -x "$llama/build/bin/$b" ] || die "$llama/build/bin/$b missing (build llama.cpp in $llama/build)"
    done
    [ -d "$llama/gguf-py/gguf" ] || die "$llama/gguf-py: llama.cpp's gguf-py missing"
    "$PYNUM" -c "import numpy" 2>/dev/null || die "$PYNUM: no numpy (apt-get install python3-numpy, or set PYNUM)"
    # the tools find their shared libraries beside them
    export LD_LIBRARY_PATH=$llama/build/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    # mmap on: -lm mmap in recent trees, -mmp 1 before --load-mode
    llama_mmap=(-mmp 1)
    lb_help=$("$llama/build/bin/llama-bench" --help 2>&1 || true)
    [[ "$lb_help" == *--load-mode* ]] && llama_mmap=(-lm mmap)
fi

mkdir -p "$work" "$out"
work=$(cd "$work" && pwd)
run=$work/warm-run
rm -rf "$run"
mkdir -p "$run"
tag=$shape${layers:+-L$layers}

# ---- the stores (and the GGUF files, from the same checkpoint) ---------------------
gguf16=$work/gguf-$tag-f16.gguf
need_gguf=0
[ -n "$llama" ] && [ ! -s "$gguf16" ] && need_gguf=1
bench_make_stores "$work" "$shape" "$layers" "$need_gguf" $dtypes
if [ "$need_gguf" = 1 ]; then
    ckpt=$(bench_ckpt_path "$work" "$shape" "$layers")
    [ -f "$ckpt/config.json" ] || bench_checkpoint "$work" "$shape" "$layers" f16
    log "converting $ckpt to GGUF F16 with llama.cpp's gguf-py ($gguf16)"
    PYTHONPATH=$llama/gguf-py "$PYNUM" "$here/bench/to_gguf.py" "$ckpt" "$gguf16" --outtype f16 -v ||
        die "bench/to_gguf.py failed"
    rm -rf "$ckpt"
fi
gguf_of() {   # DTYPE: its GGUF file ("" when llama.cpp has no such type here)
    case "$1" in
    f16) echo "$gguf16" ;;
    q8_0|q4_0) echo "$work/gguf-$tag-$1.gguf" ;;
    *) echo "" ;;
    esac
}

# the prompt: BOS + PROMPT-1 ids drawn (seeded) from the vocabulary, as
# llama-bench draws its prompt tokens; the speed does not depend on them
first=${dtypes%% *}
s0=$(bench_store_path "$work" "$shape" "$layers" "$first")
vocab=$(bench_meta "$s0" vocab_size)
bos=$(bench_meta "$s0" bos_id)
ids=$(python3 -c "
import random, sys
r = random.Random(1)
n, v, bos = map(int, sys.argv[1:4])
print(' '.join([str(bos)] + [str(r.randrange(3, v)) for _ in range(n - 1)]))" "$prompt" "$vocab" "$bos")

# ---- inflash-kbench: the bandwidth and sgemm, in this run ---------------------------
if [ -n "$kbench" ]; then
    log "inflash-kbench: DRAM read bandwidth, kernels, sgemm on a $prompt-token batch"
    "$kbench" --batch "$prompt" ${kbench_mib:+--mib "$kbench_mib"} "${kbench_extra[@]}" > "$run/kbench.txt" \
        2> "$run/kbench.err" || { tail -3 "$run/kbench.err" >&2; die "inflash-kbench failed"; }
fi

# ---- inflash per dtype --------------------------------------------------------------
warm_cache() { cat "$1/dense.bin" "$1/ffn.bin" > /dev/null; }
failed=()
for dt in $dtypes; do
    s=$(bench_store_path "$work" "$shape" "$layers" "$dt")
    echo "$s" > "$run/$dt.store"
    log "$dt: inflash --store --mmap, $prompt + $gen tokens, $threads threads, warm ($runs run(s))"
    warm_cache "$s"
    for r in $(seq 1 "$runs"); do
        if ! "$BIN/inflash" --store "$s" --mmap --prompt-ids "$ids" -n "$gen" -t 0 --threads "$threads" --ids \
                --stats "$run/$dt.run$r.json" > "$run/$dt.run$r.out" 2> "$run/$dt.run$r.err"; then
            tail -3 "$run/$dt.run$r.err" >&2
            failed+=("$dt inflash")
            break
        fi
    done
    if [ -n "$llama" ] && [ -n "$(gguf_of "$dt")" ]; then
        g=$(gguf_of "$dt")
        if [ ! -s "$g" ]; then
            log "$dt: llama-quantize --pure $gguf16 -> $g"
            q=$(echo "$dt" | tr a-z A-Z)
            "$llama/build/bin/llama-quantize" --pure "$gguf16" "$g" "$q" > "$run/$dt.quantize.txt" 2>&1 ||
                { tail -3 "$run/$dt.quantize.txt" >&2; die "llama-quantize $q failed"; }
        fi
        log "$dt: llama-bench -p $prompt -n $gen -t $threads ${llama_mmap[*]} ($llama_reps repetitions)"
        "$llama/build/bin/llama-bench" -m "$g" -p "$prompt" -n "$gen" -t "$threads" "${llama_mmap[@]}" -r "$llama_reps" \
            -o json > "$run/$dt.llama.json" 2> "$run/$dt.llama.err" ||
            { tail -3 "$run/$dt.llama.err" >&2; failed+=("$dt llama-bench"); }
    fi
done

# ---- the greedy check on the f16 weights ----------------------------------------------
if [ -n "$llama" ] && [[ " $dtypes " == *" f16 "* ]]; then
    log "greedy check: '$check_prompt' + $check_tokens tokens, llama-simple on the F16 GGUF, inflash on the f16 store"
    # the prompt ids llama.cpp's tokenizer gives, from llama-completion --verbose-prompt ("... I      1 -> '<s>'")
    "$llama/build/bin/llama-completion" -m "$gguf16" -p "$check_prompt" -n 1 --temp 0 -t "$threads" \
        -no-cnv --verbose-prompt --no-warmup -c 256 > /dev/null 2> "$run/check.llama-tok.err" < /dev/null ||
        { tail -3 "$run/check.llama-tok.err" >&2; failed+=("greedy check (llama-completion)"); }
    sed -n "s/^.* \([0-9][0-9]*\) -> '.*'$/\1/p" "$run/check.llama-tok.err" | tr '\n' ' ' > "$run/check.llama.prompt_ids"
    # the greedy continuation (llama-simple: greedy sampler, printed with printf: the prompt's pieces, then
    # the generated ones)
    "$llama/build/bin/llama-simple" -m "$gguf16" -n "$check_tokens" "$check_prompt" > "$run/check.llama.out" \
        2> "$run/check.llama.err" < /dev/null ||
        { tail -3 "$run/check.llama.err" >&2; failed+=("greedy check (llama-simple)"); }
    "$BIN/inflash" --store "$(bench_store_path "$work" "$shape" "$layers" f16)" --mmap -p "$check_prompt" \
        -n "$check_tokens" -t 0 --threads "$threads" --ids > "$run/check.inflash.out" 2> "$run/check.inflash.err" ||
        failed+=("greedy check (inflash)")
fi

log "report"
python3 "$here/bench/warm_report.py" --run "$run" --out "$out" --dtypes "${dtypes// /,}" --shape "$shape" \
    ${layers:+--layers "$layers"} --prompt "$prompt" --gen "$gen" --threads "$threads" \
    --check-prompt "$check_prompt" ${llama:+--llama-cpp "$llama"} $([ "$quick" = 1 ] && echo --quick)
if [ ${#failed[@]} -gt 0 ]; then
    echo "$prog: failed: ${failed[*]} (see $run)" >&2
    exit 1
fi
