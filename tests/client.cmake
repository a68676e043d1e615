# tests/client.cmake: tests of the inference client (issue 4): kernels and
# sampling (cmocka), and the end-to-end reference matches through a mount
# and a store.
inflash_cmocka(test_client_kernels test_client_kernels.c)
target_link_libraries(test_client_kernels PRIVATE inflash_client m)
inflash_script(e2e_client e2e_client.sh)
