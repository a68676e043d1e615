#!/usr/bin/env bash
# demo.sh: the main job on the embedded demo model. Installs dependencies,
# builds, packs models/opt-relu-shakespeare into a store, calibrates its
# activation predictors on the model's training text, mounts it with
# inflashfs, generates text through the mount (dense, then sparse from the
# predictor with a sliding window), and unmounts.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=build/bin
store=build/demo-store
mnt=build/demo-mnt
echo "== pack models/opt-relu-shakespeare -> $store"
"$bin/inflash-pack" models/opt-relu-shakespeare "$store" --dtype f16 --force
echo "== calibrate predictors on the training text (hot neurons first)"
"$bin/inflash-calibrate" "$store" --text models/opt-relu-shakespeare/train.txt --tokens 20000 --reorder
echo "== mount $store on $mnt"
export INFLASH_BIN="$top/$bin"
./mount.sh "$store" "$mnt"
trap './mount.sh -u "$mnt" >/dev/null 2>&1 || true' EXIT
ls -l "$mnt" "$mnt/layers/00"
echo "== generate through the mount: dense (the whole FFN read per token)"
"$bin/inflash" "$mnt" -p "ROMEO:" -n 64 -t 0 --stats build/demo-dense.json
echo
echo "== generate through the mount: predict mode, window 4, 16 MiB DRAM budget"
"$bin/inflash" "$mnt" -p "ROMEO:" -n 64 -t 0 --mode predict --window 4 --dram-budget 16 \
    --stats build/demo-predict.json
echo
python3 - build/demo-dense.json build/demo-predict.json <<'PY'
import json, sys
for path in sys.argv[1:]:
    s = json.load(open(path))
    s = s.get("summary", s)
    print("%-8s %6.2f ms/token, FFN bytes read per token %9.0f (%.2f%% of the FFN)" % (
        s["mode"], s["ms_per_token"], s["ffn_bytes_read_per_token"],
        100.0 * s["ffn_bytes_read_per_token"] / s["ffn_bytes_total"]))
PY
echo "== the daemon's statistics (all of them: $mnt/stats, $mnt/stats.json)"
python3 - "$mnt/stats.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
hits, misses = s["cache_hits"], s["cache_misses"]
print("read requests %d, %.1f MB served, %.1f MB read from the store" % (
    s["requests"], s["bytes_served"] / 1e6, s["store_read_bytes"] / 1e6))
print("chunk cache   %d hits, %d misses (%.1f%% hits)" % (
    hits, misses, 100.0 * hits / (hits + misses) if hits + misses else 0.0))
print("latency       p50 %.0f us, p99 %.0f us per request" % (s["latency_p50_us"], s["latency_p99_us"]))
PY
echo "== unmount"
./mount.sh -u "$mnt"
trap - EXIT
