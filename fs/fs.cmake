# fs/fs.cmake: inflashfs, the FUSE daemon (issue 3). Included by
# fs/CMakeLists.txt. inflash_fscore is the FUSE-free, store-free logic (tree,
# offset translation, chunk cache, counters) the cmocka tests link alone;
# inflash_ifs adds the store-backed read path; only main.c touches libfuse.
add_library(inflash_fscore STATIC
  ${CMAKE_CURRENT_LIST_DIR}/tree.c
  ${CMAKE_CURRENT_LIST_DIR}/xlate.c
  ${CMAKE_CURRENT_LIST_DIR}/chunk.c
  ${CMAKE_CURRENT_LIST_DIR}/stats.c
)
target_include_directories(inflash_fscore PUBLIC ${CMAKE_CURRENT_LIST_DIR} ${CMAKE_SOURCE_DIR}/layout)
target_link_libraries(inflash_fscore PUBLIC inflash_layout Threads::Threads)

add_library(inflash_ifs STATIC ${CMAKE_CURRENT_LIST_DIR}/ifs.c)
target_link_libraries(inflash_ifs PUBLIC inflash_fscore inflash_layout m)

add_executable(inflashfs ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(inflashfs PRIVATE inflash_ifs PkgConfig::FUSE3)
