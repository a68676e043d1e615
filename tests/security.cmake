# tests/security.cmake: security and atomicity (issue 8). e2e_security.sh
# checks that a mount is read-only, private to its user unless allow_other,
# exposes nothing outside the store and refuses symlinked store files, and
# that inflash-pack keeps inside its source directory; e2e_atomic.sh kills
# inflash-pack and inflash-calibrate at every file-changing call (through
# the LD_PRELOAD library killshim) and at random moments, and checks that the
# store is always the complete old or the complete new one.
add_library(killshim MODULE ${CMAKE_CURRENT_LIST_DIR}/killshim.c)
target_link_libraries(killshim PRIVATE ${CMAKE_DL_LIBS})
set_target_properties(killshim PROPERTIES PREFIX "" LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
inflash_script(e2e_security e2e_security.sh)
inflash_script(e2e_atomic e2e_atomic.sh)
