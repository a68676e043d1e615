#!/usr/bin/env bash
# e2e_bench.sh: smoke test of the benchmark tools, no timings
# asserted. inflash-mkmodel writes the tiny OPT shape in one file and in
# 1 MiB shards (with the index): both pack into byte-identical stores; the
# tiny Llama shape packs and generates; inflash-actstats measures the tiny
# store; then bench/run.sh --quick --dtype f16,q4_0 runs every configuration
# (naive, mmap, inflash, direct and quality per dtype, device once) on the
# tiny f16 and q4_0 stores packed from one checkpoint, and its results.json,
# results.md and data files are checked for completeness; a single-dtype run
# on the q4_0 store (--store) keeps the results.json shape it always had.
# bench/warm.sh --quick runs the tiny Llama per dtype (with inflash-kbench
# when built). With INFLASH_LLAMA_CPP set to a llama.cpp tree with a build
# (and a python3 with numpy), bench/to_gguf.py converts the shared tiny
# Llama checkpoint and must give exactly the tensors of llama.cpp's own
# tiny-llama-f32.gguf, and warm.sh --quick --llama-cpp runs llama.cpp beside. Needs root (page
# cache drop, cgroup memory cap), /dev/fuse and python3.
set -euo pipefail

if [ -z "${E2E_BENCH_BOUNDED:-}" ]; then
    E2E_BENCH_BOUNDED=1 exec timeout -k 10 1100 bash "$0" "$@"
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFLASH_SRC=${INFLASH_SRC:-$(dirname "$here")}
INFLASH_SHARED=${INFLASH_SHARED:-$INFLASH_SRC/../shared}
INFLASH_BIN=${INFLASH_BIN:-$INFLASH_SRC/build/bin}
export INFLASH_BIN INFLASH_SHARED
B=$INFLASH_BIN

fail() { echo "e2e_bench: FAIL: $*" >&2; exit 1; }
for b in inflash-mkmodel inflash-pack inflash-actstats inflash-devcurve inflash; do
    [ -x "$B/$b" ] || fail "$B/$b not built"
done
[ "$(id -u)" = 0 ] || fail "needs root (drop_caches, cgroup)"
[ -e /dev/fuse ] || fail "/dev/fuse missing"
command -v python3 >/dev/null || fail "python3 needed"

tmp=$(mktemp -d /tmp/inflash-e2e-bench.XXXXXX)
cleanup() {
    local m
    for m in "$tmp/work/mnt"; do
        if grep -qF " $m fuse" /proc/mounts; then timeout 10 fusermount3 -u "$m" 2>/dev/null || true; fi
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== mkmodel: one file and shards give the same store"
timeout 120 "$B/inflash-mkmodel" --shape tiny --out "$tmp/one" 2>/dev/null
timeout 120 "$B/inflash-mkmodel" --shape tiny --out "$tmp/shards" --shard-mb 1 2>/dev/null
[ -f "$tmp/one/model.safetensors" ] || fail "no model.safetensors"
[ -f "$tmp/shards/model.safetensors.index.json" ] || fail "no shard index"
[ -f "$tmp/shards/model-00002-of-00002.safetensors" ] || fail "expected 2 shards"
python3 - "$tmp/one/config.json" <<'PY' || fail "config.json"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["model_type"] == "opt" and c["hidden_size"] == 128 and c["vocab_size"] == 1024, c
assert c["synthetic"]["generator"] == "inflash-mkmodel"
PY
timeout 120 "$B/inflash-pack" "$tmp/one" "$tmp/s1" >/dev/null 2>&1 || fail "pack (one file)"
timeout 120 "$B/inflash-pack" "$tmp/shards" "$tmp/s2" >/dev/null 2>&1 || fail "pack (shards)"
cmp -s "$tmp/s1/ffn.bin" "$tmp/s2/ffn.bin" || fail "ffn.bin differs between one file and shards"
cmp -s "$tmp/s1/dense.bin" "$tmp/s2/dense.bin" || fail "dense.bin differs between one file and shards"
if timeout 30 "$B/inflash-mkmodel" --shape tiny --out "$tmp/one" 2>/dev/null; then fail "overwrote without --force"; fi
rc=0; "$B/inflash-mkmodel" --shape nope --out "$tmp/x" 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "bad --shape: exit $rc, want 2"

echo "== mkmodel: tiny llama packs and generates"
timeout 120 "$B/inflash-mkmodel" --shape tiny-llama --out "$tmp/ll" 2>/dev/null
timeout 120 "$B/inflash-pack" "$tmp/ll" "$tmp/lls" >/dev/null 2>&1 || fail "pack (llama)"
timeout 120 "$B/inflash" --store "$tmp/lls" -p "Once" -n 8 -t 1 --seed 1 --ids > "$tmp/ll.out" 2>/dev/null ||
    fail "generate (llama)"
grep -q '^ids:' "$tmp/ll.out" || fail "no ids from the llama run"

echo "== actstats on the tiny store"
timeout 300 "$B/inflash-actstats" --store "$tmp/s1" --text "$INFLASH_SHARED/data/tinyshakespeare.txt" \
    --offset 1003857 --prompt 32 --gen 16 --json "$tmp/act.json" > "$tmp/act.txt" 2>/dev/null || fail "actstats"
python3 - "$tmp/act.json" <<'PY' || fail "actstats JSON"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["layers"]) == 2 and len(d["ids"]) == 48, d.keys()
m = d["mean"]
assert 0.5 < m["sparsity"] < 1 and len(m["new_fraction_all"]) == 8
assert all(0 <= x <= 1 for x in m["new_fraction_all"])
PY

echo "== bench/run.sh --quick --dtype f16,q4_0"
timeout 900 bash "$INFLASH_SRC/bench/run.sh" --quick --dtype f16,q4_0 --work "$tmp/work" --out "$tmp/results" \
    > "$tmp/bench.txt" 2> "$tmp/bench.err" || { tail -20 "$tmp/bench.err" >&2; fail "bench/run.sh --quick"; }
grep -q 'not run' "$tmp/bench.txt" && fail "a configuration did not run"
python3 - "$tmp/results" <<'PY' || fail "results"
import json, os, sys
r = sys.argv[1]
d = json.load(open(os.path.join(r, "results.json")))
for c in ("naive", "mmap", "inflash", "direct"):
    f = d["configs"][c]
    assert f["tokens"] > 0 and f["ms_median"] is not None and f["ms_median"] > 0, (c, f)
    assert f["bytes_per_token"] is not None, c
assert d["configs"]["inflash"]["mode"] == "predict" and d["configs"]["naive"]["mode"] == "dense"
assert d["configs"]["naive"]["source"] == "mount" and d["configs"]["mmap"]["source"] == "mmap"
assert d["device"]["points"] and d["targets"], d.keys()
assert d["quality"]["perplexity"] and d["quality"]["dense_perplexity"]
assert d["model"]["synthetic"] is True and d["model"]["dtype"] == "f16"
# per dtype: each its own store, budget and configurations
f16, q4 = d["dtypes"]["f16"], d["dtypes"]["q4_0"]
assert f16["settings"]["store"] != q4["settings"]["store"]
assert q4["settings"]["model_bytes"] < f16["settings"]["model_bytes"], (q4["settings"], f16["settings"])
for c in ("naive", "mmap", "inflash", "direct"):
    assert q4["configs"][c]["ms_median"] > 0, c
# naive reads the whole FFN: bytes per weight show in its bytes per token
nb = q4["configs"]["naive"]["bytes_per_token"] / f16["configs"]["naive"]["bytes_per_token"]
assert 0.25 < nb < 0.35, nb
assert q4["quality"]["perplexity"] and q4["quality"]["dense_perplexity"]
t = d["dtype_targets"]
assert set(t) == {"inflash q4_0 >= 2.5x faster per token than f16", "FFN bytes read per token q4_0 / f16 <= 0.3"}, t
assert all(v["value"] is not None for v in t.values()), t
md = open(os.path.join(r, "results.md")).read()
assert "synthetic" in md.lower() and "| f16 | naive |" in md and "| q4_0 | direct |" in md
for f in ("latency.dat", "bandwidth.dat"):
    assert os.path.getsize(os.path.join(r, f)) > 0, f
PY
if command -v gnuplot >/dev/null; then
    [ -s "$tmp/results/latency.png" ] && [ -s "$tmp/results/bandwidth.png" ] || fail "no plots"
fi
grep -qF " $tmp/work/mnt fuse" /proc/mounts && fail "mount left behind"

echo "== bench/run.sh --quick --store (one dtype, the store's): the old results shape"
timeout 300 bash "$INFLASH_SRC/bench/run.sh" --quick --store "$tmp/work/store-tiny-q4_0" --configs mmap,direct \
    --work "$tmp/work" --out "$tmp/results1" > "$tmp/bench1.txt" 2> "$tmp/bench1.err" ||
    { tail -20 "$tmp/bench1.err" >&2; fail "bench/run.sh --quick --store"; }
python3 - "$tmp/results1" <<'PY' || fail "results (one dtype)"
import json, os, sys
d = json.load(open(os.path.join(sys.argv[1], "results.json")))
assert "dtypes" not in d and d["model"]["dtype"] == "q4_0", d.keys()
assert set(d["configs"]) == {"mmap", "direct"} and d["configs"]["direct"]["ms_median"] > 0
assert d["settings"]["budget_bytes"] == 256 << 20 and "targets" in d
md = open(os.path.join(sys.argv[1], "results.md")).read()
assert "| direct |" in md and "| q4_0 |" not in md
PY
rc=0; bash "$INFLASH_SRC/bench/run.sh" --dtype f16,q5 >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "bad --dtype: exit $rc, want 2"

llama=${INFLASH_LLAMA_CPP:-}
pynum=""
for p in python3 /usr/bin/python3; do "$p" -c "import numpy" >/dev/null 2>&1 && { pynum=$p; break; }; done
if [ -n "$llama" ] && [ -n "$pynum" ]; then
    echo "== bench/to_gguf.py: the shared tiny Llama gives llama.cpp's own GGUF tensors"
    PYTHONPATH=$llama/gguf-py timeout 120 "$pynum" "$INFLASH_SRC/bench/to_gguf.py" \
        "$INFLASH_SHARED/models/gguf/hf" "$tmp/tl.gguf" --outtype f32 || fail "to_gguf.py"
    PYTHONPATH=$llama/gguf-py "$pynum" - "$tmp/tl.gguf" "$INFLASH_SHARED/models/gguf/tiny-llama-f32.gguf" <<'PY' ||
import sys
import gguf
import numpy as np
a, b = ({t.name: t for t in gguf.GGUFReader(p).tensors} for p in sys.argv[1:3])
assert set(a) == set(b), set(a) ^ set(b)
for n in b:
    assert np.array_equal(np.asarray(a[n].data), np.asarray(b[n].data)), n
PY
        fail "to_gguf.py: tensors differ from tiny-llama-f32.gguf"
else
    echo "== (INFLASH_LLAMA_CPP unset or no numpy: to_gguf.py and llama.cpp not checked)"
    llama=""
fi

echo "== bench/warm.sh --quick${llama:+ --llama-cpp}"
timeout 300 env ${pynum:+PYNUM=$pynum} bash "$INFLASH_SRC/bench/warm.sh" --quick ${llama:+--llama-cpp "$llama"} \
    --work "$tmp/warm" --out "$tmp/warm-results" > "$tmp/warm.txt" 2> "$tmp/warm.err" ||
    { tail -20 "$tmp/warm.err" >&2; fail "bench/warm.sh --quick"; }
python3 - "$tmp/warm-results" "$llama" <<'PY' || fail "warm results"
import json, os, sys
d = json.load(open(os.path.join(sys.argv[1], "warm.json")))
assert set(d["dtypes"]) == {"f16", "q8_0", "q4_0"}, d["dtypes"].keys()
w = {dt: f["weight_bytes_per_token"] for dt, f in d["dtypes"].items()}
assert w["q4_0"] < w["q8_0"] < w["f16"], w
for dt, f in d["dtypes"].items():
    i = f["inflash"]
    assert i["source"] == "mmap" and i["dtype"] == dt and i["ms_median"] > 0 and i["prefill_ms"] > 0, (dt, i)
    if d["kbench"]:
        assert f["limit_ms"] > 0 and f["ratio_to_limit"] > 0 and f["prefill_share_of_sgemm"] > 0, (dt, f)
    if sys.argv[2]:
        assert f["llama_cpp"]["decode_ms"] > 0 and f["llama_cpp"]["prefill_s"] > 0, (dt, f["llama_cpp"])
if sys.argv[2]:
    c = d["greedy_check"]
    assert c["prompt_ids_agree"] and c["greedy_agree"], c
md = open(os.path.join(sys.argv[1], "warm.md")).read()
assert "| q4_0 |" in md and "synthetic" in md.lower()
PY
echo "e2e_bench: OK"
