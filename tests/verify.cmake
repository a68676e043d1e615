# tests/verify.cmake: corruption detection and fault injection (issue 8).
# test_fs_verify covers the INFLASH_FAULT hook (layout/io.c), the chunk
# cache's fill generations and the daemon's verification without FUSE, on a
# store it packs with inflash-pack; e2e_corrupt.sh flips bytes in packed
# stores (inflash-inspect --verify, EIO and log lines through the mount,
# -o verify=0); e2e_fault.sh injects failing, short and slow store reads
# under a mount and runs the client against it. The scripts need /dev/fuse
# and python3 (run as root in CI).
inflash_cmocka(test_fs_verify ${CMAKE_CURRENT_LIST_DIR}/test_fs_verify.c)
target_link_libraries(test_fs_verify PRIVATE inflash_ifs inflash_testutil Threads::Threads)
add_dependencies(test_fs_verify inflash-pack)
inflash_script(e2e_corrupt e2e_corrupt.sh)
inflash_script(e2e_fault e2e_fault.sh)
