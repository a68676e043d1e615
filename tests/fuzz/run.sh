#!/usr/bin/env bash
# run.sh: runs every libFuzzer target of tests/fuzz for a bounded time each
# (default 60 s), starting from the seed corpora in tests/fuzz/corpus/ (and
# the dictionary tests/fuzz/<target>.dict where there is one), and
# prints per target the executions, the time and whether it crashed. New
# corpus entries and crash inputs go to a scratch directory, never into the
# repository; the directory is removed unless something crashed (or -k).
# Without --bin it first configures and builds the fuzz build itself (clang,
# -DINFLASH_FUZZ=ON). Last line: "N passed, N failed" (N targets); exit 0
# when nothing crashed, 1 otherwise, 2 on a usage error.
set -uo pipefail

usage() {
    cat <<EOF
usage: tests/fuzz/run.sh [options] [TARGET...]
  -t, --time S      seconds per target (default \$INFLASH_FUZZ_TIME or 60)
      --bin DIR     the built fuzz_* programs (default \$INFLASH_FUZZ_BIN; if unset,
                    configure and build them into the build directory first)
  -b, --build DIR   build directory for that (default: <source>/build-fuzz)
  -j, --jobs N      targets run at once (default 1)
  -k, --keep DIR    put the new corpus entries and logs in DIR and keep them
  -r, --resume DIR  also start from the corpora a previous --keep DIR run left
      --rss MB      -rss_limit_mb (default 2048)
      --timeout S   -timeout: longest run of one input (default 25)
  -h, --help        this text
TARGETs are names like fuzz_store (default: every fuzz_* program).
Extra libFuzzer flags can be passed in \$INFLASH_FUZZ_ARGS.
EOF
}

main() {
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${INFLASH_FUZZ_TIME:-60}
bin=${INFLASH_FUZZ_BIN:-}
build="$top/build-fuzz"
jobs=1
keep=""
resume=""
rss=2048
unit_timeout=25
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        -t|--time) secs=${2:-}; shift 2 || true ;;
        --bin) bin=${2:-}; shift 2 || true ;;
        -b|--build) build=${2:-}; shift 2 || true ;;
        -j|--jobs) jobs=${2:-}; shift 2 || true ;;
        -k|--keep) keep=${2:-}; shift 2 || true ;;
        -r|--resume) resume=${2:-}; shift 2 || true ;;
        --rss) rss=${2:-}; shift 2 || true ;;
        --timeout) unit_timeout=${2:-}; shift 2 || true ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
for v in "$secs" "$jobs" "$rss" "$unit_timeout"; do
    if ! [[ "$v" =~ ^[1-9][0-9]*$ ]]; then
        echo "run.sh: \"$v\" is not a positive number (see --help)" >&2
        exit 2
    fi
done

export INFLASH_SHARED=${INFLASH_SHARED:-$(cd "$top/../shared" 2>/dev/null && pwd || echo "$top/../shared")}

# 1. the programs
if [ -z "$bin" ]; then
    if ! command -v clang >/dev/null; then
        echo "run.sh: clang not found: apt-get install clang libclang-rt-14-dev"
        echo "0 passed, 1 failed"
        exit 1
    fi
    mkdir -p "$build"
    log="$build/fuzz-build.log"
    echo "run.sh: building the fuzz targets in $build (log: $log)"
    if ! cmake -S "$top" -B "$build" -DCMAKE_C_COMPILER=clang -DINFLASH_FUZZ=ON \
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLASH_SHARED_DIR="$INFLASH_SHARED" >"$log" 2>&1 ||
       ! cmake --build "$build" -j"$(nproc)" --target fuzz_targets >>"$log" 2>&1; then
        grep -E 'error|Error' "$log" | head -n 20
        echo "run.sh: building the fuzz targets failed (log: $log)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    bin="$build/fuzz"
fi
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$bin"/fuzz_*; do
        [ -x "$f" ] && [ -f "$f" ] && targets+=("$(basename "$f")")
    done
fi
if [ ${#targets[@]} -eq 0 ]; then
    echo "run.sh: no fuzz_* programs in $bin"
    echo "0 passed, 1 failed"
    exit 1
fi

# 2. the runs
if [ -n "$keep" ]; then
    mkdir -p "$keep" && work=$(cd "$keep" && pwd)
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/inflash-fuzz.XXXXXX")
fi
ulimit -c 0
# the targets' scratch files (fuzz_store rewrites a store per input): in
# memory when /dev/shm is there, and removed after each target
scratch_base="$work"
[ -d /dev/shm ] && [ -w /dev/shm ] && scratch_base=/dev/shm

# Run one target; writes $work/$t/result: "ok|crash <summary line>".
run_one() {
    local t=$1 dir="$work/$1" start end rc execs new art status scratch
    local -a dirs=() dict=()
    mkdir -p "$dir/corpus"
    scratch=$(mktemp -d "$scratch_base/inflash-$t.XXXXXX")
    # new entries go to the first directory, the seeds are only read
    dirs=("$dir/corpus")
    [ -d "$here/corpus/$t" ] && dirs+=("$here/corpus/$t")
    [ -n "$resume" ] && [ -d "$resume/$t/corpus" ] && dirs+=("$resume/$t/corpus")
    [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
    start=$(date +%s)
    # in a subshell whose stderr is the log: bash's "Aborted" notice goes there
    (
        TMPDIR="$scratch" \
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            timeout -k 10 $((secs + unit_timeout + 120)) "$bin/$t" \
            -max_total_time="$secs" -rss_limit_mb="$rss" -timeout="$unit_timeout" -print_final_stats=1 \
            -artifact_prefix="$dir/" "${dict[@]}" ${INFLASH_FUZZ_ARGS:-} "${dirs[@]}" >"$dir/log" 2>&1
        echo $? >"$dir/rc"
    ) 2>>"$dir/log"
    rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
    end=$(date +%s)
    rm -rf "$scratch"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    new=$(sed -n 's/^stat::new_units_added: *//p' "$dir/log" | tail -n 1)
    art=$(find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
          -o -name 'oom-*' \) | head -n 1)
    if [ "$rc" -eq 0 ] && [ -z "$art" ]; then
        status="ok no crash"
    else
        status="crash CRASH (exit $rc): ${art:-no input saved}, log $dir/log"
    fi
    printf '%s %-18s %10s execs in %4d s, %6s new corpus entries, %s\n' "${status%% *}" "$t" "${execs:-?}" \
        $((end - start)) "${new:-?}" "${status#* }" >"$dir/result"
}

echo "run.sh: ${#targets[@]} targets, ${secs} s each, $jobs at a time; work dir $work"
for t in "${targets[@]}"; do
    if [ ! -x "$bin/$t" ]; then
        mkdir -p "$work/$t"
        printf 'crash %-18s not built (%s)\n' "$t" "$bin/$t" >"$work/$t/result"
        continue
    fi
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n
    done
    run_one "$t" &
done
wait

passed=0
failed=0
for t in "${targets[@]}"; do
    line=$(cat "$work/$t/result" 2>/dev/null || echo "crash $t no result")
    echo "${line#* }"
    case "$line" in
        ok*) passed=$((passed + 1)) ;;
        *) failed=$((failed + 1)) ;;
    esac
done
if [ "$failed" -eq 0 ] && [ -z "$keep" ]; then
    rm -rf "$work"
else
    echo "run.sh: inputs and logs kept in $work"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
}

# bash reads a script as it runs: the whole body is one function, parsed
# before anything starts, so editing this file during a run is harmless
main "$@"
exit
