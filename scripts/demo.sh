#!/usr/bin/env bash
# demo.sh: the main job on the embedded demo model. Installs dependencies,
# builds, packs models/opt-relu-shakespeare into a store, mounts it with
# inflashfs, generates text through the mount, and unmounts.
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
echo "== mount $store on $mnt"
export INFLASH_BIN="$top/$bin"
./mount.sh "$store" "$mnt"
trap './mount.sh -u "$mnt" >/dev/null 2>&1 || true' EXIT
ls -l "$mnt" "$mnt/layers/00"
echo "== generate through the mount"
"$bin/inflash" "$mnt" -p "ROMEO:" -n 96 -t 0.8 --top-p 0.95 --seed 42
echo
echo "== unmount"
./mount.sh -u "$mnt"
trap - EXIT
