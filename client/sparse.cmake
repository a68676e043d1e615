# client/sparse.cmake: inflash_sparse, the resident-neuron bookkeeping of the
# sparse FFN (neuron matrix, sliding window, read coalescing). Included from
# client/CMakeLists.txt.
add_library(inflash_sparse STATIC
  ${CMAKE_CURRENT_LIST_DIR}/nmat.c
  ${CMAKE_CURRENT_LIST_DIR}/window.c
  ${CMAKE_CURRENT_LIST_DIR}/coalesce.c
)
target_include_directories(inflash_sparse PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inflash_sparse PUBLIC inflash_layout m)
