#!/usr/bin/env bash
# test.sh: the whole test suite. Installs dependencies, builds with
# AddressSanitizer + UndefinedBehaviorSanitizer and -Werror into build-test/,
# runs every cmocka program and end-to-end script through ctest, then every
# fuzz target for INFLASH_FUZZ_TIME seconds (default 60; 0 skips them) in a
# clang build in build-fuzz/ (tests/fuzz/run.sh), and ends with one line
# "N passed, N failed". A ThreadSanitizer build of the daemon and of
# test_fs_chunk alone, in build-test-tsan/, runs the concurrency tests a
# second time (the tests labelled tsan in tests/CMakeLists.txt); if it does
# not build, that counts as one failed test.
#
#   scripts/test.sh               everything (CI runs this)
#   scripts/test.sh --quick       the developers' loop: the same sanitizer
#                                 build, only the tests labelled quick (unit
#                                 tests and the core end-to-end path, whose
#                                 longest runs INFLASH_E2E_QUICK skips), two
#                                 at a time, no TSan build, no fuzzing
#   scripts/test.sh [--quick] -R NAME   extra arguments go to ctest
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=0
if [ "${1:-}" = "--quick" ]; then
    quick=1
    shift
    set -- -L quick -j"$(nproc)" "$@"
    export INFLASH_E2E_QUICK=1   # e2e scripts skip their longest runs (e2e_sparse's held-out perplexity)
fi
case "${1:-}" in -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
bash scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
bdir=${INFLASH_TEST_BUILD:-build-test}
export INFLASH_SHARED=${INFLASH_SHARED:-$(cd "$top/../shared" 2>/dev/null && pwd || echo "$top/../shared")}
fail() { echo "$1"; echo "0 passed, 1 failed"; exit 1; }
tdir=$bdir-tsan tsan_bin="" tsan_failed=0
if [ "$quick" = 1 ]; then
    :   # no ThreadSanitizer build: the quick loop runs no tsan test
elif cmake -S . -B "$tdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLASH_TSAN=ON -DINFLASH_WERROR=ON \
         -DINFLASH_SHARED_DIR="$INFLASH_SHARED" >"$tdir.log" 2>&1 &&
   cmake --build "$tdir" -j"$(nproc)" --target inflashfs test_fs_chunk >>"$tdir.log" 2>&1; then
    tsan_bin=$(cd "$tdir" && pwd)/bin
else
    grep -E 'error|Error' "$tdir.log" | head -n 10
    echo "the ThreadSanitizer build of inflashfs failed (log: $tdir.log): no *_tsan tests"
    tsan_failed=1
fi
cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLASH_SANITIZE=ON -DINFLASH_WERROR=ON \
      -DINFLASH_SHARED_DIR="$INFLASH_SHARED" -DINFLASH_TSAN_BIN="$tsan_bin" >"$bdir.log" 2>&1 \
    || { tail -n 20 "$bdir.log"; fail "configure failed (log: $bdir.log)"; }
cmake --build "$bdir" -j"$(nproc)" >>"$bdir.log" 2>&1 \
    || { grep -E 'error|Error' "$bdir.log" | head -n 30; fail "build failed (log: $bdir.log)"; }
# Any sanitizer report fails the test that triggered it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
log=$(mktemp)
(cd "$bdir" && ctest --output-on-failure --timeout 1500 "$@") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
rm -f "$log"
if [ -z "$summary" ]; then
    echo "0 passed, 1 failed"
    exit 1
fi
failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
total=$(echo "$summary" | sed -E 's/.* failed out of ([0-9]+).*/\1/')
total=$((total + tsan_failed))
failed=$((failed + tsan_failed))
[ "$tsan_failed" -eq 0 ] || rc=1
# The fuzz targets: each one counts as one test.
if [ "$quick" = 0 ] && [ "${INFLASH_FUZZ_TIME:-60}" != 0 ]; then
    flog=$(mktemp)
    bash tests/fuzz/run.sh -b "${INFLASH_FUZZ_BUILD:-build-fuzz}" -t "${INFLASH_FUZZ_TIME:-60}" -j "$(nproc)" 2>&1 |
        tee "$flog"
    frc=${PIPESTATUS[0]}
    fsum=$(tail -n 1 "$flog")
    rm -f "$flog"
    if [[ "$fsum" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        total=$((total + BASH_REMATCH[1] + BASH_REMATCH[2]))
        failed=$((failed + BASH_REMATCH[2]))
    else
        total=$((total + 1))
        failed=$((failed + 1))
    fi
    [ "$frc" -eq 0 ] || rc=1
fi
echo "$((total - failed)) passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
