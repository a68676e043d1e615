# tools/calib.cmake: inflash-calibrate (issue 5): activation statistics,
# low-rank predictors and hot-first neuron order, written through the
# store-update API (layout/storeu.h); reuses the client's dense forward pass.
add_executable(inflash-calibrate ${CMAKE_CURRENT_LIST_DIR}/calibrate.c)
target_link_libraries(inflash-calibrate PRIVATE inflash_pred inflash_client inflash_tok inflash_layout
                      PkgConfig::OPENBLAS m)
