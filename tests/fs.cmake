# tests/fs.cmake: tests of inflashfs (issue 3). The cmocka programs need no
# FUSE (test_fs_ifs writes its own tiny store); e2e_fs.sh packs both test
# models, mounts them and checks them with standard tools (needs /dev/fuse
# and python3; run as root in CI).
inflash_cmocka(test_fs_tree  ${CMAKE_CURRENT_LIST_DIR}/test_fs_tree.c)
target_link_libraries(test_fs_tree PRIVATE inflash_fscore)
inflash_cmocka(test_fs_xlate ${CMAKE_CURRENT_LIST_DIR}/test_fs_xlate.c)
target_link_libraries(test_fs_xlate PRIVATE inflash_fscore)
inflash_cmocka(test_fs_chunk ${CMAKE_CURRENT_LIST_DIR}/test_fs_chunk.c)
target_link_libraries(test_fs_chunk PRIVATE inflash_fscore)
inflash_cmocka(test_fs_stats ${CMAKE_CURRENT_LIST_DIR}/test_fs_stats.c)
target_link_libraries(test_fs_stats PRIVATE inflash_fscore)
inflash_cmocka(test_fs_ifs   ${CMAKE_CURRENT_LIST_DIR}/test_fs_ifs.c)
target_link_libraries(test_fs_ifs PRIVATE inflash_ifs inflash_testutil PkgConfig::SQLITE3)
inflash_script(e2e_fs e2e_fs.sh)
