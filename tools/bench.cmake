# tools/bench.cmake: the benchmark's programs (issue 7): inflash-mkmodel
# (synthetic Hugging Face checkpoints with real model shapes) and
# inflash-actstats (FFN activation statistics through the client's forward
# pass). The benchmark driver itself is bench/run.sh.
add_executable(inflash-actstats ${CMAKE_CURRENT_LIST_DIR}/actstats.c)
target_link_libraries(inflash-actstats PRIVATE inflash_client inflash_tok inflash_layout PkgConfig::OPENBLAS m)
if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/mkmodel.c)
  add_executable(inflash-mkmodel ${CMAKE_CURRENT_LIST_DIR}/mkmodel.c)
  target_link_libraries(inflash-mkmodel PRIVATE inflash_tok inflash_layout PkgConfig::JANSSON PkgConfig::OPENBLAS
                        Threads::Threads m)
endif()
if(TARGET inflash-mkmodel)
  target_compile_definitions(inflash-mkmodel PRIVATE INFLASH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
# the device limit (bench/devcurve.c): disk bandwidth vs read size and queue depth
add_executable(inflash-devcurve ${CMAKE_SOURCE_DIR}/bench/devcurve.c)
target_link_libraries(inflash-devcurve PRIVATE Threads::Threads)
