# tests/pred.cmake: cmocka tests of the predictor math (tools/predictor.c).
inflash_cmocka(test_pred test_pred.c)
target_link_libraries(test_pred PRIVATE inflash_pred m)
