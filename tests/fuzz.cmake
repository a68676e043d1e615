# tests/fuzz.cmake: the `fuzz` test, registered only in a fuzz build
# (-DINFLASH_FUZZ=ON, clang): tests/fuzz/run.sh runs every libFuzzer target
# of this build (tests/fuzz/fuzz_*.c) for INFLASH_FUZZ_TIME seconds each and
# fails on any crash.
if(INFLASH_FUZZ)
  set(INFLASH_FUZZ_TIME 60 CACHE STRING "seconds each fuzz target runs in the fuzz test")
  file(GLOB _fz_srcs ${CMAKE_CURRENT_LIST_DIR}/fuzz/fuzz_*.c)
  list(LENGTH _fz_srcs _fz_n)
  math(EXPR _fz_timeout "${_fz_n} * (${INFLASH_FUZZ_TIME} + 30) + 300")
  inflash_script(fuzz fuzz/run.sh)
  set_property(TEST fuzz APPEND PROPERTY ENVIRONMENT
               "INFLASH_FUZZ_BIN=${CMAKE_BINARY_DIR}/fuzz;INFLASH_FUZZ_TIME=${INFLASH_FUZZ_TIME}")
  set_tests_properties(fuzz PROPERTIES TIMEOUT ${_fz_timeout})
endif()
