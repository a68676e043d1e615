# tests/client.cmake: tests of the inference client (issue 4): kernels and
# sampling (cmocka), and the end-to-end reference matches through a mount
# and a store; and of the sparse FFN engine (issue 6): the reader pool and
# the engine on tiny packed models (cmocka), and sparse inference end to end
# on the test models (e2e_sparse.sh).
inflash_cmocka(test_client_kernels test_client_kernels.c)
target_link_libraries(test_client_kernels PRIVATE inflash_client m)
inflash_script(e2e_client e2e_client.sh)

inflash_cmocka(test_sparse_ioq ${CMAKE_CURRENT_LIST_DIR}/test_sparse_ioq.c)
target_link_libraries(test_sparse_ioq PRIVATE inflash_engine)
inflash_cmocka(test_sparse ${CMAKE_CURRENT_LIST_DIR}/test_sparse.c)
target_link_libraries(test_sparse PRIVATE inflash_engine inflash_layout inflash_testutil m)
inflash_script(e2e_sparse e2e_sparse.sh)
