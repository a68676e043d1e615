# tools/pred.cmake: the low-rank activation-predictor math (predictor.h),
# used by inflash-calibrate and its tests.
add_library(inflash_pred STATIC ${CMAKE_CURRENT_LIST_DIR}/predictor.c)
target_include_directories(inflash_pred PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inflash_pred PUBLIC inflash_layout PkgConfig::OPENBLAS m)
