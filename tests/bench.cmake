# tests/bench.cmake: smoke test of the benchmark tools (issue 7):
# inflash-mkmodel (one file vs shards), inflash-actstats and bench/run.sh
# --quick on a tiny synthetic model. No timings asserted. Needs root,
# /dev/fuse and python3.
inflash_script(e2e_bench e2e_bench.sh)
