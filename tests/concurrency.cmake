# tests/concurrency.cmake: the daemon under concurrent readers, killed
# readers, unmounts with reads in flight and a long random-read run (issue
# 8), with the suite's daemon (ASan+UBSan in scripts/test.sh) and, when
# INFLASH_TSAN_BIN names the bin/ folder of a ThreadSanitizer build
# (-DINFLASH_TSAN=ON; scripts/test.sh builds one), again with that daemon:
# the *_tsan tests, which fail on any race report.
set(INFLASH_TSAN_BIN "" CACHE PATH "bin/ folder of a -DINFLASH_TSAN=ON build: its inflashfs runs the *_tsan tests")
inflash_script(e2e_concurrency e2e_concurrency.sh)
inflash_script(e2e_lifetime e2e_lifetime.sh)
if(INFLASH_TSAN_BIN)
  foreach(t e2e_concurrency e2e_lifetime)
    inflash_script(${t}_tsan ${t}.sh)
    set_property(TEST ${t}_tsan APPEND PROPERTY ENVIRONMENT "INFLASH_DAEMON=${INFLASH_TSAN_BIN}/inflashfs")
  endforeach()
  # the chunk cache's own threaded tests under TSan too (scripts/test.sh
  # builds test_fs_chunk there), ASLR off where allowed (see lib_daemon.sh)
  set(tsan_chunk ${INFLASH_TSAN_BIN}/../tests/test_fs_chunk)
  if(EXISTS ${tsan_chunk})
    add_test(NAME test_fs_chunk_tsan COMMAND sh -c
             "if setarch \"$(uname -m)\" -R true 2>/dev/null; then exec setarch \"$(uname -m)\" -R \"$0\"; fi; exec \"$0\""
             ${tsan_chunk})
    set_tests_properties(test_fs_chunk_tsan PROPERTIES ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1" TIMEOUT 600)
  endif()
endif()
