# client/client.cmake: the inference client `inflash` (issue 4): weight
# source (mount, store or mapped store), model, weight-matrix kernels,
# sampling, command line. Its pieces other than main.c form inflash_client,
# which the tests and later tools link.
add_library(inflash_client STATIC
  ${CMAKE_CURRENT_LIST_DIR}/source.c
  ${CMAKE_CURRENT_LIST_DIR}/model.c
  ${CMAKE_CURRENT_LIST_DIR}/wmat.c
  ${CMAKE_CURRENT_LIST_DIR}/sample.c
)
target_include_directories(inflash_client PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inflash_client PUBLIC inflash_layout inflash_tok PkgConfig::OPENBLAS PkgConfig::JANSSON Threads::Threads m)

# The sparse FFN engine (issue 6): reader pool and the engine over the
# neuron matrices, windows and read plans of inflash_sparse and the
# predictors of inflash_pred (tools/pred.cmake).
add_library(inflash_engine STATIC
  ${CMAKE_CURRENT_LIST_DIR}/ioq.c
  ${CMAKE_CURRENT_LIST_DIR}/sparse.c
)
target_include_directories(inflash_engine PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(inflash_engine PUBLIC inflash_client inflash_sparse inflash_pred PkgConfig::OPENBLAS
                      Threads::Threads m)

add_executable(inflash ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(inflash PRIVATE inflash_engine inflash_client inflash_tok PkgConfig::OPENBLAS Threads::Threads m)
