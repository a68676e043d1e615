#!/usr/bin/env bash
# e2e_atomic.sh: a kill -9 at any moment of inflash-pack or inflash-calibrate
# leaves at OUT either the complete old store or the complete new one, never
# a mix and never nothing. Two ways to pick the moments:
#   - every kill point: the LD_PRELOAD library killshim (tests/killshim.c)
#     numbers each call that changes a file (write, fsync, open O_CREAT,
#     mkdir, link, rename, remove, ...) and SIGKILLs the program just before
#     the chosen one; a first run counts them, then the program is killed
#     once at each (at every 4th of the many data writes). Scenarios (stories260K, so each run is short): pack into
#     a new OUT; pack --force over an existing store (f32 -> f16);
#     calibrate --reorder (ffn.bin rewritten); calibrate without --reorder
#     (ffn.bin hard-linked);
#   - random moments: opt-relu-shakespeare packed --force and stories260K
#     calibrated, killed after a random fraction of a measured run time.
# After each kill inflash-inspect must open OUT and the sha256 of its files
# must be the old or the new store's. Leftover "OUT.tmp.<pid>" directories of
# a killed run must be removed by the next pack or calibrate of OUT, which
# leaves alone those of live or locked writers, odd names and symlinks; a
# second writer of a store being written is refused.
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
BIN=$INFLASH_BIN
SHIM=$INFLASH_BIN/../tests/killshim.so
STORIES=$MODELS/stories260K
TEXT=$DATA/TinyStories-valid-subset.txt
CAL_ARGS=(--text "$TEXT" --tokens 600 --epochs 1 --threads 1)
e2e_tmp atomic
BG=
trap '[ -n "$BG" ] && kill -9 "$BG" 2>/dev/null; e2e_cleanup' EXIT
[ -f "$SHIM" ] || { bad "no $SHIM (build the killshim target)"; e2e_finish e2e_atomic; }

# state DIR: "absent", or the names and sha256 of everything in the store
state() {
    [ -e "$1" ] || { echo absent; return; }
    (cd "$1" && ls -A && sha256sum -- *)
}
# leftovers OUT: list the temporary directories beside OUT; false if none
leftovers() {
    local l
    l=$(compgen -G "$1.tmp.*"; compgen -G "$1.old.*")
    [ -n "$l" ] && echo "$l"
}

# run_shim LOG|- KILL_AT|- COMMAND...: COMMAND with the kill shim (in a
# subshell, whose stderr takes bash's "Killed" notice)
run_shim() {
    local log=$1 at=$2
    shift 2
    (timeout 300 env LD_PRELOAD="$SHIM" ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
        INFLASH_KILL_LOG="${log#-}" INFLASH_KILL_AT="${at#-}" "$@" >/dev/null 2>&1; exit $?) 2>/dev/null
}

# check NAME OUT: inspect opens OUT (unless the old state was "absent" and
# OUT is absent) and its state is old or new; counts in n_old / n_new
check() {
    local name=$1 out=$2 s
    s=$(state "$out")
    if [ "$s" = "$S_OLD" ] && [ "$s" = absent ]; then
        n_old=$((n_old + 1))
    elif ! timeout 60 "$BIN/inflash-inspect" "$out" >"$T/inspect.out" 2>&1; then
        bad "$name: inflash-inspect fails on OUT: $(tail -n 1 "$T/inspect.out")"
    elif [ "$s" = "$S_OLD" ]; then
        n_old=$((n_old + 1))
    elif [ "$s" = "$S_NEW" ]; then
        n_new=$((n_new + 1))
    else
        bad "$name: OUT is neither the old nor the new store: $(echo "$s" | tr '\n' ' ')"
    fi
}

# sweep NAME OLD_DIR|- NEW_DIR -- COMMAND...: COMMAND (which writes $T/out)
# killed at each of its kill points (of a run of writes to a file, only the
# first, the last and every 4th), $T/out reset to OLD_DIR (or removed)
# before each run. NEW_DIR holds what a complete run gives.
sweep() {
    local name=$1 old=$2 new=$3 out=$T/out total k rc left=0 points
    shift 4
    S_OLD=$(if [ "$old" = - ]; then echo absent; else state "$old"; fi)
    S_NEW=$(state "$new")
    rm -rf "$out" "$out".*
    [ "$old" = - ] || cp -a "$old" "$out"
    : >"$T/points"
    if ! run_shim "$T/points" - "$@"; then
        bad "$name: the counting run failed"
        return
    fi
    total=$(wc -l <"$T/points")
    if [ "$(state "$out")" != "$S_NEW" ] || [ "$total" -lt 10 ]; then
        bad "$name: the counting run did not give the new store ($total kill points)"
        return
    fi
    points=$(awk '{ print $2 }' "$T/points" | sort | uniq -c | awk '{ printf("%s%s %s", (NR > 1 ? ", " : ""), $1, $2) }')
    # every point but runs of writes, of which the first, last and every 4th
    picks=$(awk '{ call[NR] = $2 } END {
        for (k = 1; k <= NR; k++) {
            w = call[k] ~ /write/
            if (!w || k % 4 == 0 || call[k - 1] !~ /write/ || call[k + 1] !~ /write/) print k
        } }' "$T/points")
    n_old=0 n_new=0 n_kill=0
    for k in $picks; do
        n_kill=$((n_kill + 1))
        rm -rf "$out" "$out".*
        [ "$old" = - ] || cp -a "$old" "$out"
        run_shim - "$k" "$@"
        rc=$?
        if [ "$rc" -ne 137 ]; then
            bad "$name: not killed at point $k of $total (exit $rc)"
            continue
        fi
        check "$name, killed at point $k ($(sed -n "${k}p" "$T/points" | cut -d' ' -f2-))" "$out"
        leftovers "$out" >/dev/null && left=$((left + 1))
    done
    ok "$name: killed at $n_kill of its $total points ($points): old store $n_old times, new $n_new," \
        "never a mix; a temporary directory left $left times"
}

# ---- the stores --------------------------------------------------------------------
timeout 300 "$BIN/inflash-pack" "$STORIES" "$T/st32" --dtype f32 >/dev/null 2>&1 || bad "pack stories260K f32"
timeout 300 "$BIN/inflash-pack" "$STORIES" "$T/st16" --dtype f16 >/dev/null 2>&1 || bad "pack stories260K f16"
cp -a "$T/st32" "$T/cal-reorder"
cp -a "$T/st32" "$T/cal-plain"
timeout 300 "$BIN/inflash-calibrate" "$T/cal-reorder" "${CAL_ARGS[@]}" --reorder >/dev/null 2>&1 ||
    bad "calibrate --reorder"
timeout 300 "$BIN/inflash-calibrate" "$T/cal-plain" "${CAL_ARGS[@]}" >/dev/null 2>&1 || bad "calibrate"
[ "$fails" -eq 0 ] || e2e_finish e2e_atomic

# ---- every kill point --------------------------------------------------------------
sweep "pack into a new OUT" - "$T/st32" -- "$BIN/inflash-pack" "$STORIES" "$T/out" --dtype f32
sweep "pack --force over a store" "$T/st32" "$T/st16" -- "$BIN/inflash-pack" "$STORIES" "$T/out" --dtype f16 --force
sweep "calibrate --reorder" "$T/st32" "$T/cal-reorder" -- "$BIN/inflash-calibrate" "$T/out" "${CAL_ARGS[@]}" --reorder
sweep "calibrate (ffn.bin linked)" "$T/st32" "$T/cal-plain" -- "$BIN/inflash-calibrate" "$T/out" "${CAL_ARGS[@]}"

# ---- the next run removes what a killed one left -----------------------------------
# (kill at the first pwrite: after the temporary directory is made)
rm -rf "$T/out" "$T/out".*
cp -a "$T/st32" "$T/out"
run_shim - pwrite:1 "$BIN/inflash-pack" "$STORIES" "$T/out" --dtype f16 --force
first=$(leftovers "$T/out")
run_shim - pwrite:1 "$BIN/inflash-calibrate" "$T/out" "${CAL_ARGS[@]}"
second=$(leftovers "$T/out")
if [ -z "$first" ] || [ -z "$second" ] || [ "$first" = "$second" ] || [ "$(echo "$second" | wc -l)" -ne 1 ]; then
    bad "killed pack then calibrate: expected one temporary directory each, the second removing the first:" \
        "$(echo $first) / $(echo $second)"
elif ! timeout 300 "$BIN/inflash-pack" "$STORIES" "$T/out" --dtype f16 --force >/dev/null 2>"$T/err"; then
    bad "pack after a killed calibrate: $(tail -n 1 "$T/err")"
elif leftovers "$T/out" >/dev/null; then
    bad "pack after a killed calibrate left $(leftovers "$T/out" | tr '\n' ' ')"
else
    ok "a killed pack's $(basename "$first") was removed by the next (killed) calibrate, whose" \
        "$(basename "$second") was removed by the next pack"
fi
# ---- what the sweep of leftovers leaves alone -----------------------------------------
# a pid with no process: for a leftover whose writer is dead
dead=$((4194304 - RANDOM))
while kill -0 "$dead" 2>/dev/null; do dead=$((dead - 1)); done
rm -rf "$T/out" "$T/out".*
cp -a "$T/st32" "$T/out"
mkdir "$T/out.tmp.$dead" "$T/out.tmp.$$" "$T/out.tmp.12x" "$T/keep"
touch "$T/keep/file"
ln -s "$T/keep" "$T/out.tmp.$((dead - 1))"
# a dead pid, but its directory locked (a writer in another pid namespace)
flock -o "$T/out.tmp.$dead" sleep 300 &        # -o: only flock itself holds the lock
BG=$!
for _ in $(seq 1 50); do flock -n "$T/out.tmp.$dead" true || break; sleep 0.1; done
timeout 300 "$BIN/inflash-calibrate" "$T/out" "${CAL_ARGS[@]}" >/dev/null 2>"$T/err" || bad "calibrate: $(tail -n 1 "$T/err")"
if [ -d "$T/out.tmp.$dead" ] && [ -d "$T/out.tmp.$$" ] && [ -d "$T/out.tmp.12x" ] && [ -f "$T/keep/file" ] &&
    [ -L "$T/out.tmp.$((dead - 1))" ]; then
    ok "the sweep leaves a locked leftover, one of a live pid, an odd name and a symlink (and its target) alone"
else
    bad "the sweep removed what it must not: $(ls -d "$T"/out.tmp.* "$T/keep/file" 2>&1 | tr '\n' ' ')"
fi
kill $(pgrep -P "$BG") "$BG" 2>/dev/null
wait "$BG" 2>/dev/null
BG=
mkdir "$T/out.old.$dead"                        # what io_swap_dir's two-rename fallback leaves
timeout 300 "$BIN/inflash-pack" "$STORIES" "$T/out" --dtype f16 --force >/dev/null 2>"$T/err" || bad "pack: $(tail -n 1 "$T/err")"
[ ! -e "$T/out.tmp.$dead" ] && [ ! -e "$T/out.old.$dead" ] &&
    ok "... and removes the leftovers of a dead pid once unlocked (.tmp, and .old beside a store)" ||
    bad "the unlocked leftovers of a dead pid were not removed: $(ls -d "$T"/out.* | tr '\n' ' ')"
rm -rf "$T/out".*

# ---- two writers of one store ----------------------------------------------------------
# (flock(1) holds the store's lock as a running writer would)
S_OLD=$(state "$T/out")
for cmd in "inflash-pack $STORIES $T/out --force" "inflash-calibrate $T/out ${CAL_ARGS[*]}"; do
    # shellcheck disable=SC2086
    if flock "$T/out" timeout 300 $BIN/$cmd >/dev/null 2>"$T/err"; then
        bad "${cmd%% *} ran while the store was locked by another writer"
    elif grep -q "another inflash-pack or inflash-calibrate is writing this store" "$T/err" &&
        [ "$(state "$T/out")" = "$S_OLD" ] && ! leftovers "$T/out" >/dev/null; then
        ok "${cmd%% *} while another writer holds the store: $(cat "$T/err")"
    else
        bad "${cmd%% *} beside another writer: $(tail -n 1 "$T/err")"
    fi
done

# ---- random moments ----------------------------------------------------------------
# random_kills NAME N OLD NEW -- COMMAND...: COMMAND killed N times after a
# random fraction (0..1.2) of its measured run time
random_kills() {
    local name=$1 runs=$2 old=$3 new=$4 out=$T/out t0 us i d
    shift 5
    S_OLD=$(state "$old")
    S_NEW=$(state "$new")
    rm -rf "$out" "$out".*
    cp -a "$old" "$out"
    t0=$(date +%s%N)
    timeout 300 "$@" >/dev/null 2>&1 || { bad "$name: a complete run failed"; return; }
    us=$((($(date +%s%N) - t0) / 1000))
    n_old=0 n_new=0
    for ((i = 0; i < runs; i++)); do
        rm -rf "$out" "$out".*
        cp -a "$old" "$out"
        d=$((RANDOM * 12 * us / 327670))
        "$@" >/dev/null 2>&1 &   # no timeout(1) here: the kill must reach the program
        BG=$!
        sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))"
        kill -9 "$BG" 2>/dev/null
        wait "$BG" 2>/dev/null
        BG=
        check "$name, killed after $d us" "$out"
    done
    ok "$name: killed $runs times at random moments of a ${us} us run: old store $n_old times, new $n_new"
}
timeout 300 "$BIN/inflash-pack" "$MODELS/opt-relu-shakespeare" "$T/opt32" --dtype f32 >/dev/null 2>&1 || bad "pack opt"
timeout 300 "$BIN/inflash-pack" "$MODELS/opt-relu-shakespeare" "$T/opt16" --dtype f16 >/dev/null 2>&1 || bad "pack opt"
random_kills "pack --force (opt-relu-shakespeare)" 20 "$T/opt32" "$T/opt16" -- \
    "$BIN/inflash-pack" "$MODELS/opt-relu-shakespeare" "$T/out" --dtype f16 --force
random_kills "calibrate --reorder (stories260K)" 20 "$T/st32" "$T/cal-reorder" -- \
    "$BIN/inflash-calibrate" "$T/out" "${CAL_ARGS[@]}" --reorder

e2e_finish e2e_atomic
