#!/usr/bin/env bash
# e2e_concurrency.sh: many readers through one inflashfs mount.
# Packs opt-relu-shakespeare (f16), calibrates it briefly with --reorder
# (scattered slots; predict mode), mounts it with a 1 MiB cache (every
# request evicts; concurrent ones read into transient buffers) and checks:
#  1. 8 clients generating at once (dense, predict and oracle; greedy and
#     seeded sampling) print byte for byte what each printed alone, twice,
#     while dd, randread.py and stats readers read the same mount and get
#     the bytes they got alone;
#  2. clients and readers killed with SIGKILL at random moments mid-read
#     leave the daemon alive and right: the same bytes and the same client
#     output afterwards, no failed request;
#  3. the unmount then ends cleanly: daemon exit status 0, no sanitizer
#     report in its log, no mount left.
# The daemon is the suite's ASan+UBSan build, or INFLASH_DAEMON (ctest's
# e2e_concurrency_tsan: the ThreadSanitizer build, any race fails it).
# Env: INFLASH_SHARED (shared/), INFLASH_BIN (build/bin), INFLASH_SRC (source root).
set -u

source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_daemon.sh"
e2e_env
INFLASH=$INFLASH_BIN/inflash
RANDREAD=$INFLASH_SRC/tests/randread.py

e2e_tmp concurrency
daemon_setup

# ---- setup ----------------------------------------------------------------------
pack opt "$MODELS/opt-relu-shakespeare" f16
head -c 300000 "$DATA/tinyshakespeare.txt" >"$T/train.txt"
if timeout 600 "$INFLASH_BIN/inflash-calibrate" "$T/opt" --text "$T/train.txt" --tokens 2000 --epochs 2 --reorder \
        >"$T/cal.log" 2>&1; then
    ok "calibrate opt (2000 tokens, reordered)"
else
    bad "calibrate opt: $(tail -n 1 "$T/cal.log")"
    exit 1
fi
daemon_start opt "cache=1m,readahead=2"
M=$T/mnt/opt
n_layers=$(ls "$M/layers" | wc -l)

python3 - "$MODELS/opt-relu-shakespeare/reference.json" "$T" <<'EOF'
import json, sys
for i, p in enumerate(json.load(open(sys.argv[1]))["prompts"][:4]):
    open("%s/prompt%d.txt" % (sys.argv[2], i), "w").write(p["prompt"])
EOF
# the 8 clients: prompt file, mode, sampling
CLIENTS=(
    "0 dense -t 0"
    "1 dense -t 0"
    "2 dense -t 0.8 --top-p 0.9 --seed 7"
    "3 dense -t 0"
    "0 predict -t 0"
    "1 predict -t 0.8 --top-p 0.9 --seed 11"
    "2 oracle -t 0"
    "3 predict -t 0"
)
# client I OUT: run client I, stdout and stderr in OUT.out/OUT.err, exit status in OUT.rc
client() {
    local p mode rest
    read -r p mode rest <<<"${CLIENTS[$1]}"
    # shellcheck disable=SC2086
    timeout 300 "$INFLASH" "$M" -f "$T/prompt$p.txt" -n 64 --mode "$mode" $rest --ids --threads 1 \
        >"$2.out" 2>"$2.err"
    echo $? >"$2.rc"
}

# ---- alone ------------------------------------------------------------------------
mkdir -p "$T/ref/layers" "$T/solo"
for l in $(ls "$M/layers"); do
    mkdir -p "$T/ref/layers/$l"
    cat "$M/layers/$l/ffn" >"$T/ref/layers/$l/ffn"
    cat "$M/layers/$l/neurons.tsv" >"$T/ref/layers/$l/neurons.tsv"
done
if [ "$(cat "$T"/ref/layers/*/ffn | wc -c)" -eq $((n_layers * 1024 * 2 * 256 * 2)) ]; then
    ok "read $n_layers neuron files alone"
else
    bad "neuron files read alone: $(cat "$T"/ref/layers/*/ffn | wc -c) bytes"
fi
solo_ok=1
for i in "${!CLIENTS[@]}"; do
    client "$i" "$T/solo/$i"
    if [ "$(cat "$T/solo/$i.rc")" != 0 ] || ! tail -n 1 "$T/solo/$i.out" | grep -q '^ids: '; then
        bad "client $i alone (${CLIENTS[$i]}): exit $(cat "$T/solo/$i.rc"): $(head -c 300 "$T/solo/$i.err")"
        solo_ok=0
    fi
done
[ $solo_ok = 1 ] && ok "8 clients alone: each generated 64 tokens"
daemon_must_live opt "alone"

# ---- 1. all at once -------------------------------------------------------------------
# (the script waits for its jobs by pid: a bare `wait` would wait for the daemon)
# readers besides the clients: dd of every neuron file with odd block sizes,
# randread.py, and stats/neurons.tsv readers
readers() {   # readers DIR: background jobs; their verdicts in DIR/*.bad
    local d=$1 bs=(4096 12345 65536 1048576 3000 262144) k=0 l
    for l in $(ls "$M/layers"); do
        { timeout 300 dd if="$M/layers/$l/ffn" bs="${bs[$((k % 6))]}" status=none | cmp -s - "$T/ref/layers/$l/ffn" ||
              echo "dd layers/$l/ffn bs=${bs[$((k % 6))]}: differs from the bytes read alone" >"$d/dd$l.bad"; } &
        jobs_+=($!)
        k=$((k + 1))
    done
    { timeout 300 python3 "$RANDREAD" "$M" 3000 --threads 4 --seed "$k" --ref "$T/ref" >"$d/rr.out" 2>&1 ||
          echo "randread.py: $(tr '\n' ' ' <"$d/rr.out")" >"$d/rr.bad"; } &
    jobs_+=($!)
    { for _ in $(seq 20); do
          timeout 60 python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$M/stats.json" ||
              { echo "stats.json unreadable or not JSON" >"$d/st.bad"; break; }
          timeout 60 cat "$M/layers/00/neurons.tsv" | cmp -s - "$T/ref/layers/00/neurons.tsv" ||
              { echo "neurons.tsv differs" >"$d/st.bad"; break; }
      done; } &
    jobs_+=($!)
}
for round in 1 2; do
    d=$T/round$round
    mkdir -p "$d"
    jobs_=()
    for i in "${!CLIENTS[@]}"; do client "$i" "$d/$i" & jobs_+=($!); done
    readers "$d"
    wait "${jobs_[@]}"
    daemon_must_live opt "round $round"
    same=0
    for i in "${!CLIENTS[@]}"; do
        if [ "$(cat "$d/$i.rc")" = 0 ] && cmp -s "$d/$i.out" "$T/solo/$i.out"; then
            same=$((same + 1))
        else
            bad "round $round: client $i (${CLIENTS[$i]}): exit $(cat "$d/$i.rc"), output differs from alone: $(head -c 300 "$d/$i.err")"
        fi
    done
    [ $same -eq 8 ] && ok "round $round: 8 clients at once, each output identical to alone"
    if ls "$d"/*.bad >/dev/null 2>&1; then
        for f in "$d"/*.bad; do bad "round $round: $(cat "$f")"; done
    else
        ok "round $round: concurrent dd, randread.py ($(tail -n 1 "$d/rr.out")) and stats readers got the right bytes"
    fi
done
echo "# cache: transient $(daemon_stat opt cache_transient), shared $(daemon_stat opt cache_shared), evictions $(daemon_stat opt cache_evictions), peak $(daemon_stat opt cache_peak_bytes) of $(daemon_stat opt cache_budget_bytes) bytes"

# ---- 2. SIGKILL mid-read -----------------------------------------------------------------
RANDOM=8
kills=0
for it in 1 2 3 4 5 6 7 8; do
    # no timeout wrappers: each pid is the reader itself, killed below
    pids=()
    "$INFLASH" "$M" -f "$T/prompt$((it % 4)).txt" -n 300 --threads 1 >/dev/null 2>&1 &
    pids+=($!)
    "$INFLASH" "$M" -p "ROMEO:" -n 300 --mode predict --threads 1 >/dev/null 2>&1 &
    pids+=($!)
    python3 "$RANDREAD" "$M" 0 --threads 3 --max-len 1048576 --seed "$it" >/dev/null 2>&1 &
    pids+=($!)
    python3 "$RANDREAD" "$M" 0 --threads 2 --max-len 4096 --seed "$((it + 100))" >/dev/null 2>&1 &
    pids+=($!)
    sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
    kill -KILL "${pids[@]}" 2>/dev/null
    wait "${pids[@]}"
    kills=$((kills + ${#pids[@]}))
    daemon_must_live opt "SIGKILL round $it"
    if ! daemon_alive opt; then
        bad "SIGKILL round $it: the daemon does not answer: $(tail -n 5 "$T/daemon-opt.log")"
        e2e_finish e2e_concurrency
    fi
done
ok "$kills readers (clients, randread.py) killed with SIGKILL at random moments: the daemon is alive"
bytes_ok=1
for l in $(ls "$M/layers"); do
    cmp -s "$M/layers/$l/ffn" "$T/ref/layers/$l/ffn" || { bad "after the kills: layers/$l/ffn differs"; bytes_ok=0; }
done
[ $bytes_ok = 1 ] && ok "after the kills: every neuron file has its bytes"
if timeout 300 python3 "$RANDREAD" "$M" 2000 --threads 4 --ref "$T/ref" >"$T/rr-after.out" 2>&1; then
    ok "after the kills: randread.py $(tail -n 1 "$T/rr-after.out")"
else
    bad "after the kills: randread.py: $(tr '\n' ' ' <"$T/rr-after.out")"
fi
for i in 0 5; do
    client "$i" "$T/after$i"
    if [ "$(cat "$T/after$i.rc")" = 0 ] && cmp -s "$T/after$i.out" "$T/solo/$i.out"; then
        ok "after the kills: client $i (${CLIENTS[$i]}) output identical to alone"
    else
        bad "after the kills: client $i: exit $(cat "$T/after$i.rc"), differs: $(head -c 300 "$T/after$i.err")"
    fi
done
errs=$(daemon_stat opt errors)
if [ "$errs" = 0 ]; then ok "no failed request ($(daemon_stat opt requests) requests)"; else bad "$errs failed requests"; fi

# ---- 3. clean end ---------------------------------------------------------------------------
daemon_stop opt
e2e_finish e2e_concurrency "($SAN daemon)"
