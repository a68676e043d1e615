# tools/layout.cmake: the foundation's programs, inflash-pack and inflash-inspect.
add_executable(inflash-pack ${CMAKE_CURRENT_LIST_DIR}/pack.c)
target_link_libraries(inflash-pack PRIVATE inflash_layout)
add_executable(inflash-inspect ${CMAKE_CURRENT_LIST_DIR}/inspect.c)
target_link_libraries(inflash-inspect PRIVATE inflash_layout)
