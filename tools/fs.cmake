# tools/fs.cmake: inflash-bench-read, the read benchmark of inflashfs
# (direct O_DIRECT reads of ffn.bin vs reads through the mount).
add_executable(inflash-bench-read ${CMAKE_CURRENT_LIST_DIR}/bench_read.c)
target_link_libraries(inflash-bench-read PRIVATE inflash_ifs Threads::Threads)
