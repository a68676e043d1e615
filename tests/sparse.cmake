# tests/sparse.cmake: cmocka tests of the sparse-FFN bookkeeping (neuron
# matrix, sliding window, read coalescing).
inflash_cmocka(test_nmat     ${CMAKE_CURRENT_LIST_DIR}/test_nmat.c)
inflash_cmocka(test_window   ${CMAKE_CURRENT_LIST_DIR}/test_window.c)
inflash_cmocka(test_coalesce ${CMAKE_CURRENT_LIST_DIR}/test_coalesce.c)
foreach(t test_nmat test_window test_coalesce)
  target_link_libraries(${t} PRIVATE inflash_sparse inflash_testutil)
endforeach()
