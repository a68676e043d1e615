#!/usr/bin/env bash
# bench/run.sh: the inflash benchmark. On one store per dtype (--dtype),
# side by side, with the page cache dropped before each configuration:
#   naive    dense mode through the mount: the whole FFN read every token
#   mmap     dense mode over the memory-mapped store (--store --mmap: every
#            weight used in place from the mapping) under a cgroup memory
#            cap: the page cache is the only cache, as llama.cpp runs a
#            model larger than RAM
#   inflash  predict mode, sliding window, bundles through the mount
#   direct   the same reading the store without FUSE
#   device   the disk's bandwidth against read size and queue depth, and from
#            it the I/O time inflash's bytes would need at the best point
#   quality  perplexity, dense and predict, on the demo model's held-out text
#            (the demo model packed in each dtype)
# naive, mmap, inflash and direct run once per dtype, each under a cap of
# --budget-frac of that store's own bytes; device runs once (on the first
# dtype's store). Then prints one table and writes JSON, Markdown and PNG
# plots to --out. Makes the model first if needed: inflash-mkmodel (SYNTHETIC
# weights with a real shape) -> inflash-pack (each dtype, from the one
# checkpoint) -> delete the checkpoint -> calibrate each store.
# Needs root (drop_caches, cgroup), /dev/fuse, python3, gnuplot (plots).
set -euo pipefail

prog=bench/run.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<EOF
usage: $prog [options]

Run the inflash benchmark: naive, mmap, inflash, inflash direct, the device
limit and the quality check, on one store per dtype, and write the table and
plots.

model:
  --shape S          inflash-mkmodel shape (default opt-6.7b)
  --layers N         fewer layers (quick runs; the table says so)
  --dtype LIST       store dtypes, comma-separated: f16 (default), f32, q8_0,
                     q4_0; e.g. f16,q8_0,q4_0 (one store each, same weights)
  --store DIR        use this store (its own dtype) instead of making one
  --work DIR         work folder: store, mount point, logs (default /tmp/inflash-bench)
  --calib-tokens N   calibration tokens (default: 3 windows of max_pos - 1, so
                     that inflash-calibrate trains on two and picks the
                     thresholds on the third)
  --calib-rank R     predictor rank to start from (default 128)
  --no-reorder       calibrate without the hot-first neuron order
run:
  --prompt N         prompt positions, BOS included (default 128)
  --gen N            generated tokens (default 64)
  --dense-gen N      generated tokens in naive and mmap (default: --gen)
  --window K         inflash window (default 4)
  --threshold-shift D  inflash: move the predictors' thresholds (inflash --help)
  --budget-frac F    DRAM budget as a fraction of the model's bytes (each
                     store's own dense.bin + ffn.bin) (default 0.5)
  --budget-mib MIB   the DRAM budget in MiB instead of --budget-frac (every dtype)
  --daemon-cache MIB the daemon's share of the budget (default 5% of it)
  --mount-opts O     more inflashfs options (default chunk=16k: one bundle)
  --readers N        client reader threads (default 16)
  --configs LIST     any of naive,mmap,inflash,direct,device,quality (default all)
  --out DIR          results folder (default bench/results)
  --quick            smoke test: tiny shape, 16 + 8 tokens, short device curve
  -h, --help         this text
env: INFLASH_BIN (default <repo>/build/bin), INFLASH_SHARED (default <repo>/../shared)
Exit status: 0 ok, 1 failure, 2 usage error.
EOF
}

BIN=${INFLASH_BIN:-$here/build/bin}
. "$here/bench/lib.sh"
SHARED=${INFLASH_SHARED:-$here/../shared}
shape=opt-6.7b layers="" dtype_list="" store="" work=/tmp/inflash-bench calib_tokens="" calib_rank=128 reorder=1
prompt=128 gen=64 dense_gen="" window=4 tau_shift=0 budget_frac=0.5 budget_mib="" daemon_mib="" mount_opts="chunk=16k" readers=16
configs=naive,mmap,inflash,direct,device,quality out=$here/bench/results quick=0
dev_sizes=4k,16k,64k,256k,1m,4m dev_qd=1,4,16,32 dev_seconds=2

while [ $# -gt 0 ]; do
    case "$1" in
    --shape) need "$@"; shape=$2; shift 2 ;;
    --layers) need "$@"; layers=$2; shift 2 ;;
    --dtype) need "$@"; dtype_list=$2; shift 2 ;;
    --store) need "$@"; store=$2; shift 2 ;;
    --work) need "$@"; work=$2; shift 2 ;;
    --calib-tokens) need "$@"; calib_tokens=$2; shift 2 ;;
    --calib-rank) need "$@"; calib_rank=$2; shift 2 ;;
    --no-reorder) reorder=0; shift ;;
    --prompt) need "$@"; prompt=$2; shift 2 ;;
    --gen) need "$@"; gen=$2; shift 2 ;;
    --dense-gen) need "$@"; dense_gen=$2; shift 2 ;;
    --window) need "$@"; window=$2; shift 2 ;;
    --threshold-shift) need "$@"; tau_shift=$2; shift 2 ;;
    --budget-frac) need "$@"; budget_frac=$2; shift 2 ;;
    --budget-mib) need "$@"; budget_mib=$2; shift 2 ;;
    --daemon-cache) need "$@"; daemon_mib=$2; shift 2 ;;
    --mount-opts) need "$@"; mount_opts=$2; shift 2 ;;
    --readers) need "$@"; readers=$2; shift 2 ;;
    --configs) need "$@"; configs=$2; shift 2 ;;
    --out) need "$@"; out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
    esac
done
if [ "$quick" = 1 ]; then
    shape=tiny prompt=16 gen=8 calib_tokens=1533 calib_rank=64 budget_mib=${budget_mib:-256} daemon_mib=16
    dev_sizes=4k,64k dev_qd=1,4 dev_seconds=0.2
fi
dense_gen=${dense_gen:-$gen}
for n in "$prompt" "$gen" "$dense_gen" "$window" "$calib_rank" "$readers" ${layers:+"$layers"} ${calib_tokens:+"$calib_tokens"} \
         ${budget_mib:+"$budget_mib"} ${daemon_mib:+"$daemon_mib"}; do
    [[ "$n" =~ ^[0-9]+$ ]] || usage_error "not a count: '$n'"
done
[[ "$tau_shift" =~ ^-?[0-9]*\.?[0-9]+$ ]] || usage_error "--threshold-shift: not a number: '$tau_shift'"
[[ "$budget_frac" =~ ^0?\.[0-9]+$|^1(\.0*)?$ ]] || usage_error "--budget-frac: a fraction in (0, 1]: '$budget_frac'"
dtypes=$(bench_check_dtypes "${dtype_list:-f16}" 2>&1) || usage_error "--dtype: $dtypes"
has() { [[ ",$configs," == *",$1,"* ]]; }
for c in ${configs//,/ }; do
    case "$c" in naive|mmap|inflash|direct|device|quality) ;; *) usage_error "unknown configuration '$c'" ;; esac
done

[ "$(id -u)" = 0 ] || die "needs root (drop_caches, the cgroup memory cap, mounts)"
for b in inflash inflash-pack inflash-calibrate inflash-mkmodel inflash-inspect inflash-actstats inflash-devcurve inflashfs; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing (build it: cmake --build build; or set INFLASH_BIN)"
done
command -v python3 >/dev/null || die "python3 missing (apt-get install python3)"
if [ -n "$store" ]; then
    [ -f "$store/index.sqlite" ] || die "$store: not a store"
    sd=$(bench_meta "$store" dtype)
    [ -z "$dtype_list" ] || [ "$dtypes" = "$sd" ] || usage_error "--store: $store is a $sd store; --dtype $dtype_list"
    dtypes=$sd
fi
text=$SHARED/data/tinyshakespeare.txt
[ -f "$text" ] || die "$text missing (set INFLASH_SHARED to the shared/ folder)"
export INFLASH_BIN=$BIN

mkdir -p "$work" "$out"
work=$(cd "$work" && pwd)
run=$work/run
rm -rf "$run"
mkdir -p "$run"
mnt=$work/mnt-bench
# the demo model's split (models/opt-relu-shakespeare/README.md): train / held out
head -c 1003857 "$text" > "$work/train.txt"
tail -c +1003858 "$text" > "$work/heldout.txt"

# ---- cleanup ------------------------------------------------------------------
cg=""
cleanup() {
    if grep -qF " $mnt fuse" /proc/mounts 2>/dev/null; then "$here/mount.sh" -u "$mnt" >/dev/null 2>&1 || true; fi
    if [ -n "$cg" ] && [ -d "$cg" ]; then rmdir "$cg" 2>/dev/null || true; fi
    if [ -n "${delayacct:-}" ]; then sysctl -qw kernel.task_delayacct="$delayacct" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# ---- the cgroup memory cap (v2, else v1's memory controller) -------------------
cg_kind=""
cg_create() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
        grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
        cg=/sys/fs/cgroup/inflash-bench-$$
        mkdir -p "$cg"
        [ -f "$cg/memory.swap.max" ] && echo 0 > "$cg/memory.swap.max"
        cg_kind=v2
    elif [ -d /sys/fs/cgroup/memory ]; then
        # v1: a child of the cgroup this script runs in
        local cur
        cur=$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
        cg=/sys/fs/cgroup/memory${cur%/}/inflash-bench-$$
        mkdir -p "$cg"
        cg_kind=v1
    else
        die "no cgroup memory controller (v2 /sys/fs/cgroup or v1 /sys/fs/cgroup/memory)"
    fi
}
cg_limit() {   # BYTES: the cap
    if [ "$cg_kind" = v1 ]; then echo "$1" > "$cg/memory.limit_in_bytes"; else echo "$1" > "$cg/memory.max"; fi
}
cg_reset_peak() {
    if [ "$cg_kind" = v1 ]; then echo 0 > "$cg/memory.max_usage_in_bytes"; fi
}
cg_peak() {
    if [ "$cg_kind" = v1 ]; then cat "$cg/memory.max_usage_in_bytes"
    elif [ -f "$cg/memory.peak" ]; then cat "$cg/memory.peak"
    else echo 0; fi
}
# run a command inside the cgroup
cg_exec() { sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"; }

# ---- the models -----------------------------------------------------------------
[ -n "$store" ] || bench_make_stores "$work" "$shape" "$layers" 0 $dtypes
calibrated() { python3 - "$1" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s/index.sqlite?mode=ro" % sys.argv[1], uri=True)
try:
    n = db.execute("select count(*) from calib").fetchone()[0]
except sqlite3.Error:
    n = 0
sys.exit(0 if n > 0 else 1)
PY
}
# the store of dtype D
store_opt=$store
store_of() { if [ -n "$store_opt" ]; then (cd "$store_opt" && pwd); else bench_store_path "$work" "$shape" "$layers" "$1"; fi; }
for dt in $dtypes; do
    s=$(store_of "$dt")
    [ -f "$s/index.sqlite" ] || die "$s: not a store"
    if (has inflash || has direct) && ! calibrated "$s"; then
        ct=$calib_tokens
        [ -n "$ct" ] || ct=$((3 * ($(bench_meta "$s" max_pos) - 1)))
        log "calibrating $s on $ct tokens of the demo's training text (rank $calib_rank)"
        "$BIN/inflash-calibrate" "$s" --text "$work/train.txt" --tokens "$ct" --rank "$calib_rank" \
            $([ "$reorder" = 1 ] && echo --reorder) > "$work/calibrate-$dt.txt" 2> "$work/calibrate-$dt.err" ||
            { tail -3 "$work/calibrate-$dt.err" >&2; die "calibrating the $dt store failed"; }
    fi
done
first=${dtypes%% *}
store=$(store_of "$first")

# the budget of a store: --budget-frac of its bytes (or --budget-mib), split
# into the client's and the daemon's shares; sets model_bytes, budget,
# budget_mib, daemon_mib, client_mib
budget_mib_opt=$budget_mib daemon_mib_opt=$daemon_mib
budget_of() {
    model_bytes=$(bench_store_bytes "$1")
    if [ -n "$budget_mib_opt" ]; then
        budget=$((budget_mib_opt << 20))
    else
        budget=$(python3 -c "print(int($model_bytes * $budget_frac))")
    fi
    budget_mib=$((budget >> 20))
    daemon_mib=${daemon_mib_opt:-$((budget_mib / 20 > 4 ? budget_mib / 20 : 4))}
    [ "$budget_mib" -gt "$daemon_mib" ] || die "budget $budget_mib MiB does not exceed the daemon cache ($daemon_mib MiB)"
    client_mib=$((budget_mib - daemon_mib))
}

# the prompt: the first PROMPT positions of the held-out text (BOS + text);
# this one teacher-forced pass also measures the activation statistics
log "prompt ids and activation statistics (actstats, $prompt + $gen teacher-forced positions)"
"$BIN/inflash-actstats" --store "$store" --text "$work/heldout.txt" --prompt "$prompt" --gen "$gen" \
    --json "$run/actstats.json" > "$run/actstats.txt" 2>/dev/null
ids=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(' '.join(map(str, d['ids'][:int(sys.argv[2])])))" \
      "$run/actstats.json" "$prompt")
sample=(-t 1 --top-p 1 --seed 1)

cg_create
# delay accounting: the mmap client's page-fault I/O wait (its I/O ms/token)
delayacct=$(sysctl -n kernel.task_delayacct 2>/dev/null || echo "")
[ -n "$delayacct" ] && sysctl -qw kernel.task_delayacct=1
daemon_pid() { "$here/mount.sh" --status | awk -F'\t' -v m="$mnt" '$1 == m { sub("pid ", "", $3); print $3 }'; }
mount_it() {   # STORE
    mkdir -p "$mnt"
    "$here/mount.sh" "$1" "$mnt" -o "cache=${daemon_mib}m${mount_opts:+,$mount_opts}" >/dev/null
}
umount_it() {   # NAME: record the daemon's peak RSS and stats first
    local pid
    pid=$(daemon_pid)
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
        awk '/^VmHWM/ { print $2 * 1024 }' "/proc/$pid/status" > "$rd/$1.daemon_hwm"
    fi
    cp "$mnt/stats.json" "$rd/$1.daemon_stats.json" 2>/dev/null || true
    "$here/mount.sh" -u "$mnt" >/dev/null
}
client_dense() {   # NAME ARGS...: run the client in the cgroup, time it, keep its output in $rd
    local name=$1
    shift
    cg_reset_peak
    local t0 t1
    t0=$(date +%s.%N)
    if ! cg_exec "$BIN/inflash" "$@" --prompt-ids "$ids" "${sample[@]}" --ids \
            --stats "$rd/$name.json" > "$rd/$name.out" 2> "$rd/$name.err"; then
        echo "$prog: $dt $name failed:" >&2
        tail -3 "$rd/$name.err" >&2
        return 1
    fi
    t1=$(date +%s.%N)
    cg_peak > "$rd/$name.cg_peak"
    echo "$t0 $t1" > "$rd/$name.wall"
}
client() {   # NAME ARGS...: the same for the sparse modes, with the reader threads
    local name=$1
    shift
    client_dense "$name" "$@" --readers "$readers"
}
# the demo model (opt-relu-shakespeare) packed in dtype D and calibrated;
# prints its folder
demo_store() {
    local demo=$work/demo-store
    [ "$1" = f16 ] || demo=$demo-$1
    if [ ! -f "$demo/index.sqlite" ] || ! calibrated "$demo"; then
        log "quality: packing ($1) and calibrating the demo model (opt-relu-shakespeare)"
        rm -rf "$demo"
        "$BIN/inflash-pack" "$here/models/opt-relu-shakespeare" "$demo" --dtype "$1" --force > /dev/null
        "$BIN/inflash-calibrate" "$demo" --text "$work/train.txt" --reorder \
            $([ "$quick" = 1 ] && echo --tokens "$calib_tokens") > "$work/demo-calibrate-$1.txt" \
            2> "$work/demo-calibrate-$1.err" ||
            { tail -3 "$work/demo-calibrate-$1.err" >&2; die "calibrating the $1 demo model failed"; }
    fi
    echo "$demo"
}

failed=()
for dt in $dtypes; do
    s=$(store_of "$dt")
    rd=$run/$dt
    mkdir -p "$rd"
    budget_of "$s"
    cg_limit "$budget"
    log "$dt store $s: $((model_bytes >> 20)) MiB; budget $budget_mib MiB = client $client_mib + daemon cache $daemon_mib"
    printf '{"dtype": "%s", "store": "%s", "model_bytes": %d, "budget": %d, "client_mib": %d, "daemon_mib": %d, "mount_opts": "%s"}\n' \
        "$dt" "$s" "$model_bytes" "$budget" "$client_mib" "$daemon_mib" "cache=${daemon_mib}m${mount_opts:+,$mount_opts}" \
        > "$rd/settings.json"
    if has naive; then
        log "$dt naive: dense through the mount, $dense_gen tokens"
        drop_caches
        mount_it "$s"
        client_dense naive "$mnt" -n "$dense_gen" || failed+=("$dt naive")
        umount_it naive
    fi
    if has mmap; then
        log "$dt mmap: dense over the mapped store under a ${budget_mib} MiB cgroup cap (page cache only), $dense_gen tokens"
        drop_caches
        client_dense mmap --store "$s" --mmap -n "$dense_gen" || failed+=("$dt mmap")
    fi
    if has inflash; then
        log "$dt inflash: predict, window $window, through the mount, client budget $client_mib MiB"
        drop_caches
        mount_it "$s"
        client inflash "$mnt" -n "$gen" --mode predict --window "$window" --threshold-shift "$tau_shift" \
            --dram-budget "$client_mib" || failed+=("$dt inflash")
        umount_it inflash
    fi
    if has direct; then
        log "$dt inflash direct: the same from the store (no FUSE)"
        drop_caches
        client direct --store "$s" -n "$gen" --mode predict --window "$window" --threshold-shift "$tau_shift" \
            --dram-budget "$client_mib" || failed+=("$dt direct")
    fi
    if has quality; then
        demo=$(demo_store "$dt") || exit 1
        qtext=$work/heldout.txt
        [ "$quick" = 1 ] && head -c 4000 "$work/heldout.txt" > "$work/heldout-quick.txt" && qtext=$work/heldout-quick.txt
        log "$dt quality: perplexity of the demo model on its held-out text, predict (window $window) beside dense"
        if ! "$BIN/inflash" --store "$demo" --perplexity "$qtext" --mode predict --window "$window" --compare-dense \
                --stats "$rd/quality.json" > "$rd/quality.out" 2> "$rd/quality.err"; then
            echo "$prog: $dt quality failed:" >&2
            tail -3 "$rd/quality.err" >&2
            failed+=("$dt quality")
        fi
    fi
done
if has device; then
    log "device: read bandwidth of $store/ffn.bin against read size and queue depth"
    drop_caches
    "$BIN/inflash-devcurve" "$store/ffn.bin" --sizes "$dev_sizes" --qd "$dev_qd" --seconds "$dev_seconds" \
        --json "$run/device.json" > "$run/device.txt"
fi

log "report"
python3 "$here/bench/report.py" --run "$run" --out "$out" --dtypes "${dtypes// /,}" --shape "$shape" \
    ${layers:+--layers "$layers"} --window "$window" --threshold-shift "$tau_shift" --prompt "$prompt" \
    --gen "$gen" --dense-gen "$dense_gen" --cgroup "$cg_kind" --readers "$readers" $([ "$quick" = 1 ] && echo --quick)
if command -v gnuplot >/dev/null; then
    (cd "$out" && gnuplot "$here/bench/plot.gp") || echo "$prog: gnuplot failed; no plots" >&2
else
    echo "$prog: gnuplot not installed (apt-get install gnuplot-nox): no plots" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "$prog: failed configurations: ${failed[*]} (see $run/*/*.err)" >&2
    exit 1
fi
