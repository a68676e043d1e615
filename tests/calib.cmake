# tests/calib.cmake: tests of calibration (issue 5): the atomic store update
# and the calib table (cmocka), and inflash-calibrate end to end on both test
# models (e2e_calibrate.sh, with the small bundle checker calib_bundles).
inflash_cmocka(test_calib_storeu ${CMAKE_CURRENT_LIST_DIR}/test_calib_storeu.c)
target_link_libraries(test_calib_storeu PRIVATE inflash_layout inflash_testutil PkgConfig::SQLITE3)
add_executable(calib_bundles ${CMAKE_CURRENT_LIST_DIR}/calib_bundles.c)
target_link_libraries(calib_bundles PRIVATE inflash_layout PkgConfig::XXHASH)
set_target_properties(calib_bundles PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
inflash_script(e2e_calibrate e2e_calibrate.sh)
