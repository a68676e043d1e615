# bench/lib.sh: what the benchmark drivers (run.sh, warm.sh) share: the list
# of store dtypes, reading a store's metadata, and making one store per dtype
# from one synthetic checkpoint, and the command-line helpers. Sourced, not
# run; the caller sets prog (its name in messages) and BIN (the programs).

die() { echo "$prog: $*" >&2; exit 1; }
usage_error() { echo "$prog: $*" >&2; echo "try: $prog --help" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# need OPTION ARGS...: OPTION has a value
need() { [ $# -ge 2 ] || usage_error "$1 needs a value"; }

# the dtypes a benchmark store may have (inflash-pack --dtype)
BENCH_DTYPES="f32 f16 q8_0 q4_0"

# bench_check_dtypes LIST: LIST is comma-separated, known, without repeats;
# prints it space-separated. Exit status 1 (with a message) otherwise.
bench_check_dtypes() {
    local seen=" " d
    [ -n "$1" ] || { echo "empty dtype list" >&2; return 1; }
    for d in ${1//,/ }; do
        [[ " $BENCH_DTYPES " == *" $d "* ]] || { echo "unknown dtype '$d' (one of: $BENCH_DTYPES)" >&2; return 1; }
        [[ "$seen" == *" $d "* ]] && { echo "dtype '$d' twice" >&2; return 1; }
        seen="$seen$d "
    done
    echo $seen
}

# bench_meta STORE KEY: the value of KEY in the store's meta table ("" if none)
bench_meta() {
    python3 - "$1" "$2" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s/index.sqlite?mode=ro" % sys.argv[1], uri=True)
row = db.execute("select value from meta where key = ?", (sys.argv[2],)).fetchone()
print(row[0] if row else "")
PY
}

# bench_store_bytes STORE: the model's bytes, dense.bin + ffn.bin (every
# weight a dense decoding step reads once)
bench_store_bytes() { echo $(( $(stat -c %s "$1/dense.bin") + $(stat -c %s "$1/ffn.bin") )); }

# bench_store_path WORK SHAPE LAYERS DTYPE: where the store of that dtype
# lives (f16 keeps the name it had before stores had other dtypes)
bench_store_path() {
    local p=$1/store-$2${3:+-L$3}
    [ "$4" = f16 ] && echo "$p" || echo "$p-$4"
}

# bench_ckpt_path WORK SHAPE LAYERS: where the checkpoint is made
bench_ckpt_path() { echo "$1/ckpt-$2${3:+-L$3}"; }

# bench_checkpoint WORK SHAPE LAYERS CKDTYPE: make the inflash-mkmodel
# checkpoint (replacing any left by an interrupted run)
bench_checkpoint() {
    local ckpt
    ckpt=$(bench_ckpt_path "$1" "$2" "$3")
    log "making the synthetic $2 checkpoint in $ckpt (mkmodel --dtype $4)"
    "$BIN/inflash-mkmodel" --shape "$2" ${3:+--layers "$3"} --dtype "$4" --out "$ckpt" --force ||
        die "inflash-mkmodel failed"
}

# bench_make_stores WORK SHAPE LAYERS KEEP DTYPE...: pack every missing (or
# unreadable: inflash-inspect refuses it) store of the given dtypes from one
# inflash-mkmodel checkpoint, deleted once all are packed unless KEEP is 1. A
# quantized pack needs mkmodel's F32 checkpoint (mkmodel --dtype q8_0 and
# q4_0 write the same one); f16 and f32 pack from it as well, so all the
# stores hold the same generated weights.
bench_make_stores() {
    local work=$1 shape=$2 layers=$3 keep=$4 d s missing=() ck=f16 ckpt
    shift 4
    for d in "$@"; do
        s=$(bench_store_path "$work" "$shape" "$layers" "$d")
        [ -f "$s/index.sqlite" ] || { missing+=("$d"); continue; }
        "$BIN/inflash-inspect" "$s" > /dev/null 2>&1 && continue
        log "$s: not a store this build reads (an older format?): packing it again"
        missing+=("$d")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    for d in "${missing[@]}"; do
        case "$d" in q8_0|q4_0) ck=q8_0 ;; f32) [ "$ck" = q8_0 ] || ck=f32 ;; esac
    done
    ckpt=$(bench_ckpt_path "$work" "$shape" "$layers")
    bench_checkpoint "$work" "$shape" "$layers" "$ck"
    for d in "${missing[@]}"; do
        s=$(bench_store_path "$work" "$shape" "$layers" "$d")
        log "packing it into $s ($d)"
        "$BIN/inflash-pack" "$ckpt" "$s" --dtype "$d" --force || die "inflash-pack --dtype $d failed"
    done
    [ "$keep" = 1 ] || rm -rf "$ckpt"
}
