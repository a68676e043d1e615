#!/usr/bin/env bash
# e2e_lifetime.sh: the ends of an inflashfs mount's life and a long run.
# Checks:
#  1. mount.sh -u while dd loops, randread.py and clients (generation and
#     perplexity) read through the mount: the unmount succeeds (a busy mount
#     is detached, then the daemon stopped), the daemon exits with status 0
#     and no sanitizer report, no mount is left, and every reader ends --
#     with an error, or for a client with its complete right output -- none
#     hangs and no client prints garbage;
#  2. the same with SIGTERM and SIGHUP sent to the daemon instead;
#  3. memory stays bounded by the cache over 10 000 random reads (neuron
#     files, offsets, lengths; 4 threads) of a synthetic one-layer
#     opt-1.3b store (64 MiB of neurons) mounted with -o cache=8m: the
#     daemon's VmRSS at 10 000 reads <= at 2 000 + 16 MiB, and its peak
#     (VmHWM) <= cache + 48 MiB (a cache ignoring its budget would reach
#     64 MiB); the cache's peak <= its budget. Under ASan this daemon runs
#     with a 1 MiB quarantine (quarantine_size_mb=1,
#     thread_local_quarantine_size_kb=64; the default 256 MiB holds freed
#     blocks back and RSS grows by up to that much for no leak; measured
#     growth from 2000 to 10000 reads with it: 4-6 MiB, as the allocator's
#     size classes and their shadow fill, flat after that); unreachable
#     leaks, however small, are LeakSanitizer's at the daemon's exit. Under
#     TSan (shadow memory, history) the figures are printed, not checked.
# The daemon is the suite's ASan+UBSan build, or INFLASH_DAEMON (ctest's
# e2e_lifetime_tsan: the ThreadSanitizer build).
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_daemon.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash
RANDREAD=$INFLASH_SRC/tests/randread.py

e2e_tmp lifetime
daemon_setup

pack opt "$MODELS/opt-relu-shakespeare" f16
tail -c +1003858 "$DATA/tinyshakespeare.txt" | head -c 30000 >"$T/heldout.txt"

# The readers of one mount NAME, in the background (pids in jobs_: a bare
# `wait` would wait for the daemons too); each writes DIR/KIND.rc (its exit
# status, 124 if it hung until its timeout) and its output.
readers_start() {
    local name=$1 d=$2 m=$T/mnt/$1 l
    jobs_=()
    mkdir -p "$d"
    for l in 00 02 04; do
        { timeout 120 bash -c 'while dd if="$1" of=/dev/null bs=64k status=none; do :; done' _ "$m/layers/$l/ffn" \
              2>"$d/dd$l.err"; echo $? >"$d/dd$l.rc"; } &
        jobs_+=($!)
    done
    { timeout 120 python3 "$RANDREAD" "$m" 0 --threads 2 >"$d/rr.out" 2>&1; echo $? >"$d/rr.rc"; } &
    jobs_+=($!)
    { timeout 120 "$INFLASH" "$m" -p "ROMEO:" -n 511 -t 0 --threads 1 >"$d/gen.out" 2>"$d/gen.err"
      echo $? >"$d/gen.rc"; } &
    jobs_+=($!)
    { timeout 120 "$INFLASH" "$m" --perplexity "$T/heldout.txt" --threads 1 >"$d/ppl.out" 2>"$d/ppl.err"
      echo $? >"$d/ppl.rc"; } &
    jobs_+=($!)
}

# readers_check LABEL DIR: after the end of the mount, every reader ended
# without hanging; dd and randread.py with an error; each client either
# completely and right (the same output as solo/) or with exit 1 and one
# error line.
readers_check() {
    local label=$1 d=$2 k rc fine=0 errs=""
    wait "${jobs_[@]}"
    for k in dd00 dd02 dd04 rr; do
        rc=$(cat "$d/$k.rc" 2>/dev/null || echo none)
        if [ "$rc" = 124 ] || [ "$rc" = none ]; then
            bad "$label: reader $k hung (status $rc)"
        elif [ "$k" = rr ] && [ "$rc" != 2 ]; then
            bad "$label: randread.py: status $rc, not a read error: $(tr '\n' ' ' <"$d/rr.out")"
        else
            fine=$((fine + 1))
            [ "$k" = rr ] && errs="$errs; randread.py: $(grep -m 1 'read error' "$d/rr.out")"
            [ "$k" = dd00 ] && errs="$errs; dd: $(tail -n 1 "$d/dd00.err")"
        fi
    done
    for k in gen ppl; do
        rc=$(cat "$d/$k.rc" 2>/dev/null || echo none)
        if [ "$rc" = 0 ] && cmp -s "$d/$k.out" "$T/solo/$k.out"; then
            fine=$((fine + 1))
            errs="$errs; client $k: finished, output right"
        elif [ "$rc" = 1 ] && [ "$(wc -l <"$d/$k.err")" -eq 1 ] && is_prefix "$d/$k.out" "$T/solo/$k.out"; then
            fine=$((fine + 1))
            errs="$errs; client $k: $(cat "$d/$k.err")"
        else
            bad "$label: client $k: status $rc, $(wc -l <"$d/$k.err") error lines: '$(head -c 300 "$d/$k.err")', output a prefix of alone's: $(is_prefix "$d/$k.out" "$T/solo/$k.out" && echo yes || echo no)"
        fi
    done
    [ $fine -eq 6 ] && ok "$label: all 6 readers ended, none hung${errs}"
}

# readers_going NAME DIR N0: wait (up to 30 s) until randread.py reads and
# the daemon has served 200 neuron reads more than N0
readers_going() {
    local i n
    for ((i = 0; i < 300; i++)); do
        n=$(daemon_stat "$1" ffn_requests)
        grep -q '^reading' "$2/rr.out" 2>/dev/null && [ "${n:-0}" -gt $(($3 + 200)) ] && return 0
        sleep 0.1
    done
}

# ---- 1. mount.sh -u with reads in flight -----------------------------------------
daemon_start opt "cache=1m"
M=$T/mnt/opt
mkdir -p "$T/solo"
timeout 300 "$INFLASH" "$M" -p "ROMEO:" -n 511 -t 0 --threads 1 >"$T/solo/gen.out" 2>"$T/solo/gen.err" &&
timeout 300 "$INFLASH" "$M" --perplexity "$T/heldout.txt" --threads 1 >"$T/solo/ppl.out" 2>"$T/solo/ppl.err" ||
    { bad "clients alone: $(cat "$T/solo/gen.err" "$T/solo/ppl.err")"; exit 1; }
ok "clients alone: 511 tokens; $(tail -n 1 "$T/solo/ppl.out")"
n0=$(daemon_stat opt ffn_requests)
readers_start opt "$T/u"
readers_going opt "$T/u" "$n0"
daemon_stop opt INFLASH_MOUNT_TIMEOUT=2
readers_check "mount.sh -u in flight" "$T/u"

# ---- 2. SIGTERM, SIGINT with reads in flight -----------------------------------------
# (not SIGINT: a daemon started in the background by a script, as mount.sh
# does, inherits SIGINT ignored, and libfuse leaves ignored signals alone)
for sig in TERM HUP; do
    cp -r "$T/opt" "$T/opt-$sig"
    daemon_start "opt-$sig" "cache=1m"
    n0=$(daemon_stat "opt-$sig" ffn_requests)
    readers_start "opt-$sig" "$T/s$sig"
    readers_going "opt-$sig" "$T/s$sig" "$n0"
    kill "-$sig" "${DPID[opt-$sig]}"
    ok "opt-$sig: sent SIG$sig to the daemon"
    daemon_end "opt-$sig"
    readers_check "SIG$sig in flight" "$T/s$sig"
done

# ---- 3. memory over 10 000 random reads ---------------------------------------------
if timeout 600 "$INFLASH_BIN/inflash-mkmodel" --shape opt-1.3b --layers 1 --out "$T/big-hf" >"$T/mkmodel.log" 2>&1; then
    ok "inflash-mkmodel opt-1.3b, 1 layer"
else
    bad "inflash-mkmodel: $(tail -n 1 "$T/mkmodel.log")"
    e2e_finish e2e_lifetime
fi
pack big "$T/big-hf" f16
rm -rf "$T/big-hf"
cache_mb=8
ASAN_OPTIONS="${ASAN_OPTIONS:-}:quarantine_size_mb=1:thread_local_quarantine_size_kb=64" daemon_start big "cache=${cache_mb}m,readahead=4"
pid=${DPID[big]}
if timeout 600 python3 "$RANDREAD" "$T/mnt/big" 10000 --threads 4 --max-len 131072 --rss-pid "$pid" \
        --rss-at 1,1000,2000,5000,10000 >"$T/rss.out" 2>&1; then
    ok "10000 random reads: $(tail -n 1 "$T/rss.out")"
else
    bad "10000 random reads: $(tr '\n' ' ' <"$T/rss.out")"
fi
declare -A rss
while read -r w at kb; do [ "$w" = rss ] && rss[$at]=$kb; done <"$T/rss.out"
peak=$(daemon_stat big cache_peak_bytes) budget=$(daemon_stat big cache_budget_bytes)
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
echo "# daemon VmRSS (MiB) after 1, 1000, 2000, 5000, 10000 reads ($SAN):" \
     "$(for a in 1 1000 2000 5000 10000; do awk -v k="${rss[$a]:-0}" 'BEGIN { printf "%.1f ", k / 1024 }'; done)" \
     "; VmHWM $((hwm / 1024)) MiB;" \
     "cache peak $peak of $budget bytes, $(daemon_stat big cache_evictions) evictions"
if [ "${#rss[@]}" -ne 5 ]; then
    bad "RSS samples missing: ${!rss[*]}"
elif [ "$SAN" = tsan ]; then
    echo "skip RSS bounds under ThreadSanitizer (its shadow memory and history grow on their own)"
else
    max=${hwm:-0}     # the peak, also between the samples
    for a in "${!rss[@]}"; do [ "${rss[$a]}" -gt "$max" ] && max=${rss[$a]}; done
    if [ "${rss[10000]}" -le $((rss[2000] + 16 * 1024)) ]; then
        ok "RSS stops growing: $((rss[10000] / 1024)) MiB at 10000 reads <= $((rss[2000] / 1024)) MiB at 2000 + 16"
    else
        bad "RSS grows: $((rss[10000] / 1024)) MiB at 10000 reads > $((rss[2000] / 1024)) MiB at 2000 + 16"
    fi
    if [ $max -le $(((cache_mb + 48) * 1024)) ]; then
        ok "RSS bounded: peak (VmHWM) $((max / 1024)) MiB <= cache $cache_mb MiB + 48"
    else
        bad "RSS $((max / 1024)) MiB > cache $cache_mb MiB + 48"
    fi
fi
if [ -n "$peak" ] && [ "$peak" -le "$budget" ]; then ok "cache peak $peak <= budget $budget"; else bad "cache peak $peak > budget $budget"; fi
daemon_stop big

e2e_finish e2e_lifetime "($SAN daemon)"
