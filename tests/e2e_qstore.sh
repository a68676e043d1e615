#!/usr/bin/env bash
# e2e_qstore.sh: quantized stores through a real mount. Packs both shared
# models in q8_0 and q4_0 (inflash-pack --dtype:
# opt-relu-shakespeare q4_0 has 288-byte bundles, q8_0 544; stories260K
# gated q4_0 216, q8_0 408: none divides the 16 KiB chunk, so bundles
# straddle chunks). Each is mounted with verification on, with O_DIRECT
# (default) and with -o buffered, at chunk sizes 4k and 16k, and checked
# with standard tools: ls -l sizes and config.json's inflash_dtype and
# inflash_bundle_bytes; every layer's ffn.slots equal to its ffn.bin bytes;
# neurons read with dd at their offsets, singly, in runs of adjacent ones
# and at odd byte ranges across bundle and chunk boundaries, against the
# store's ffn.bin; `inflash-inspect --neuron` on the store and on the
# mount equal to an independent Python decode of the same bytes; the
# daemon log free of sanitizer reports. Needs /dev/fuse and python3; run
# as root in CI.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_env
e2e_tmp qstore
STEP=120

# q STORE SQL: one value from the store's index.
q() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' \
        "$1/index.sqlite" "$2"
}

# mount_o NAME STORE OPTS: mount STORE at $T/mnt/NAME with -o OPTS.
mount_o() {
    mkdir -p "$T/mnt"
    if T_ bash "$MOUNT_SH" "$2" "$T/mnt/$1" -o "$3" >"$T/mount-$1.out" 2>&1; then
        MOUNTS+=("$T/mnt/$1")
    else
        bad "mount $1 -o $3: $(tail -n 1 "$T/mount-$1.out")"
        exit 1
    fi
}

# decode.py STORE_OR_MNT LAYER ID: the neuron's values as inspect prints
# them, decoded here from the bundle bytes (format.h section 1), reading
# the mount's neuron file or the store's ffn.bin at the index's offset.
cat >"$T/decode.py" <<'PY'
import json, os, sqlite3, struct, sys
src, layer, nid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if os.path.exists(os.path.join(src, "index.sqlite")):
    db = sqlite3.connect(os.path.join(src, "index.sqlite"))
    meta = dict(db.execute("SELECT key, value FROM meta"))
    dtype, B, d, gated = meta["dtype"], int(meta["bundle_bytes"]), int(meta["d_model"]), meta["gated"] == "1"
    off = db.execute("SELECT offset FROM neurons WHERE layer = ? AND id = ?", (layer, nid)).fetchone()[0]
    path = os.path.join(src, "ffn.bin")
else:
    cfg = json.load(open(os.path.join(src, "config.json")))
    dtype, B, d = cfg["inflash_dtype"], cfg["inflash_bundle_bytes"], cfg["hidden_size"]
    gated = cfg["inflash_family"] == "llama"
    off, path = nid * B, os.path.join(src, "layers", "%02d" % layer, "ffn")
with open(path, "rb") as f:
    f.seek(off)
    b = f.read(B)
assert len(b) == B
def blocks(p, size, vals):
    out = []
    for k in range(d // 32):
        blk = p[k * size:(k + 1) * size]
        sc = struct.unpack("<e", blk[:2])[0]
        out += vals(blk[2:], sc)
    return out
q8 = lambda qs, sc: [v * sc for v in struct.unpack("<32b", qs)]
q4 = lambda qs, sc: [((x & 15) - 8) * sc for x in qs] + [((x >> 4) - 8) * sc for x in qs]
size = {"q8_0": 34, "q4_0": 18}[dtype] * d // 32
parts = ["up", "gate", "down"] if gated else ["up", "down"]
print("# layer %d neuron %d: %s, bundle %d bytes" % (layer, nid, dtype, B))
for i, name in enumerate(parts):
    p = b[i * size:(i + 1) * size]
    vals = blocks(p, 34, q8) if dtype == "q8_0" else blocks(p, 18, q4)
    for k, v in enumerate(vals):
        v = struct.unpack("<f", struct.pack("<f", v))[0]   # the f32 product
        print("%s\t%d\t%.9g" % (name, k, v))
PY

# check_mount NAME STORE OPTS: the checks above on one mount of STORE.
check_mount() {
    local name=$1 store=$2 opts=$3 mnt=$T/mnt/$1 fails0=$fails
    mount_o "$name" "$store" "$opts"
    local dtype B L N
    dtype=$(q "$store" "SELECT value FROM meta WHERE key='dtype'")
    B=$(q "$store" "SELECT value FROM meta WHERE key='bundle_bytes'")
    L=$(q "$store" "SELECT value FROM meta WHERE key='n_layers'")
    N=$(q "$store" "SELECT value FROM meta WHERE key='d_ffn'")
    python3 - "$mnt/config.json" "$dtype" "$B" <<'PY' || bad "$name: config.json inflash_dtype/inflash_bundle_bytes"
import json, sys
c = json.load(open(sys.argv[1]))
sys.exit(not (c["inflash_dtype"] == sys.argv[2] and c["inflash_bundle_bytes"] == int(sys.argv[3])))
PY
    local l off size
    for ((l = 0; l < L; l++)); do
        local ll
        ll=$(printf %02d "$l")
        off=$(q "$store" "SELECT offset FROM layers WHERE layer=$l")
        size=$(stat -c %s "$mnt/layers/$ll/ffn")
        [ "$size" -eq $((N * B)) ] || bad "$name: layers/$ll/ffn is $size bytes, want $((N * B))"
        [ "$(bytes "$mnt/layers/$ll/ffn.slots" 0 $((N * B)))" = "$(bytes "$store/ffn.bin" "$off" $((N * B)))" ] ||
            bad "$name: layers/$ll/ffn.slots differs from ffn.bin"
        # single neurons, runs of adjacent ones, odd ranges across bundle and chunk edges
        local j n a len
        for j in 0 1 $((N / 3)) $((N - 1)); do
            [ "$(bytes "$mnt/layers/$ll/ffn" $((j * B)) "$B")" = "$(bytes "$store/ffn.bin" $((off + j * B)) "$B")" ] ||
                bad "$name: layer $l neuron $j"
        done
        for n in 3 57; do
            j=$((N / 2 - n))
            [ "$(bytes "$mnt/layers/$ll/ffn" $((j * B)) $((n * B)))" = "$(bytes "$store/ffn.bin" $((off + j * B)) $((n * B)))" ] ||
                bad "$name: layer $l neurons $j..$((j + n - 1))"
        done
        for a in 1 4095 4097 16383 $((16384 - B / 2)) $((3 * B - 7)); do
            len=$((B + 13 + a % 5000))
            [ "$(bytes "$mnt/layers/$ll/ffn" "$a" "$len")" = "$(bytes "$store/ffn.bin" $((off + a)) "$len")" ] ||
                bad "$name: layer $l bytes $a+$len"
        done
    done
    # inspect --neuron on the store and on the mount against the Python decode
    local id=$((N / 2 + 1)) lay=$((L - 1))
    T_ "$INFLASH_BIN/inflash-inspect" --neuron "$lay:$id" "$store" >"$T/$name.inspect-store" ||
        bad "$name: inspect --neuron on the store"
    T_ "$INFLASH_BIN/inflash-inspect" --neuron "$lay:$id" "$mnt" >"$T/$name.inspect-mnt" ||
        bad "$name: inspect --neuron on the mount"
    python3 "$T/decode.py" "$mnt" "$lay" "$id" >"$T/$name.decode-mnt" || bad "$name: decode.py on the mount"
    python3 "$T/decode.py" "$store" "$lay" "$id" >"$T/$name.decode-store" || bad "$name: decode.py on the store"
    cmp -s "$T/$name.inspect-store" "$T/$name.decode-store" || bad "$name: inspect --neuron (store) differs from decode.py"
    cmp -s "$T/$name.inspect-mnt" "$T/$name.decode-mnt" || bad "$name: inspect --neuron (mount) differs from decode.py"
    cmp -s "$T/$name.inspect-mnt" "$T/$name.inspect-store" || bad "$name: inspect --neuron: mount and store differ"
    [ "$(stat_of "$mnt" verify_errors)" = 0 ] || bad "$name: verify_errors $(stat_of "$mnt" verify_errors)"
    [ "$(stat_of "$mnt" verify_bundles)" -gt 0 ] || bad "$name: no bundle was verified"
    umount_checked "$name"
    [ "$fails" -eq "$fails0" ] && ok "$name ($dtype, B $B, -o $opts)"
}

declare -A SRC=([opt]=$MODELS/opt-relu-shakespeare [st]=$MODELS/stories260K)
for m in opt st; do
    for t in q8_0 q4_0; do
        pack "$m-$t" "${SRC[$m]}" "$t"
        T_ "$INFLASH_BIN/inflash-inspect" --verify -q "$T/$m-$t" >/dev/null || bad "inspect --verify $m-$t"
        T_ "$INFLASH_BIN/inflash-inspect" "$T/$m-$t" | grep -q "dtype $t: " || bad "inspect $m-$t: no dtype line"
        check_mount "$m-$t-direct" "$T/$m-$t" "chunk=16k,verify=1"
        check_mount "$m-$t-buf4k" "$T/$m-$t" "chunk=4k,buffered,verify=1"
    done
done
e2e_finish e2e_qstore
