#!/usr/bin/env bash
# e2e_fs.sh: end-to-end test of inflashfs and mount.sh. Packs both shared
# test models (opt-relu-shakespeare, stories260K) in f16 and f32, mounts each
# store with mount.sh and checks with standard tools: ls -l sizes,
# config.json, tokenizer files, every tensors/ file and sampled neurons of
# every layer (read with dd) against the source safetensors, EOF and ENOENT,
# EROFS on writes, 8 concurrent readers, stats; then error handling: a
# second mount is refused, a store that does not match its index refuses to
# mount, a short store read gives EIO (logged) while the daemon keeps
# serving; after each unmount no daemon is left. Needs /dev/fuse and python3
# (standard library only); run as root in CI.
set -euo pipefail

# bounded total time: the whole script runs under timeout(1)
if [ -z "${E2E_FS_BOUNDED:-}" ]; then
    E2E_FS_BOUNDED=1 exec timeout -k 10 900 bash "$0" "$@"
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INFLASH_SRC=${INFLASH_SRC:-$(dirname "$here")}
INFLASH_SHARED=${INFLASH_SHARED:-$INFLASH_SRC/../shared}
INFLASH_BIN=${INFLASH_BIN:-$INFLASH_SRC/build/bin}
export INFLASH_BIN
MS="$INFLASH_SRC/mount.sh"
STEP_TIMEOUT=120

for f in "$INFLASH_BIN/inflashfs" "$INFLASH_BIN/inflash-pack"; do
    [ -x "$f" ] || { echo "e2e_fs: $f not built" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "e2e_fs: python3 needed" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "e2e_fs: /dev/fuse missing" >&2; exit 1; }

tmp=$(mktemp -d /tmp/inflash-e2e-fs.XXXXXX)
shm=""
mounts=()
cleanup() {
    local rc=$? m
    for m in "${mounts[@]}"; do
        if grep -qF " $m fuse" /proc/mounts; then
            timeout 10 fusermount3 -u "$m" 2>/dev/null || timeout 10 fusermount3 -uz "$m" 2>/dev/null || true
        fi
    done
    rm -rf "$tmp" ${shm:+"$shm"}
    exit $rc
}
trap cleanup EXIT
trap 'echo "e2e_fs: interrupted" >&2; exit 143' TERM INT

fail() { echo "e2e_fs: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
T() { timeout "$STEP_TIMEOUT" "$@"; }

do_mount() {    # STORE MNT [opts]
    mounts+=("$2")
    T "$MS" "$1" "$2" ${3:+-o "$3"} >/dev/null || fail "mount.sh $1 $2 failed"
}
do_unmount() {  # MNT
    T "$MS" -u "$1" >/dev/null || fail "mount.sh -u $1 failed"
    ! grep -qF " $1 fuse" /proc/mounts || fail "$1 still mounted"
    if pgrep -f "inflashfs .*$1( |\$)" >/dev/null; then fail "an inflashfs process is left for $1"; fi
    # sanitizer builds: the daemon's log must be clean
    local log
    log="$(dirname "$1")/.inflashfs-$(basename "$1").log"
    if grep -E "AddressSanitizer|LeakSanitizer|runtime error:" "$log" >&2; then fail "sanitizer report in $log"; fi
}
# The command must fail with the given message.
expect_fail() {  # MESSAGE CMD...
    local msg=$1 out
    shift
    if out=$(T "$@" 2>&1); then fail "'$*' succeeded"; fi
    echo "$out" | grep -q "$msg" || fail "'$*': expected '$msg', got: $out"
}

cat >"$tmp/fscheck.py" <<'PY'
# fscheck.py: compare an inflashfs mount with the source Hugging Face model.
#   fscheck.py static MODEL_DIR MNT DTYPE      sizes, config, tokenizer, tensors, dd neurons
#   fscheck.py random MODEL_DIR MNT DTYPE SEED N   N random neurons with pread
#   fscheck.py neuron MODEL_DIR MNT DTYPE LAYER J  one neuron with pread
import json, os, random, struct, subprocess, sys

ES = {"F16": 2, "F32": 4, "BF16": 2, "f16": 2, "f32": 4}

class Model:
    def __init__(self, d):
        self.cfg = json.load(open(os.path.join(d, "config.json")))
        path = os.path.join(d, "model.safetensors")
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.hdr = json.loads(f.read(n))
            self.hdr.pop("__metadata__", None)
            self.blob = f.read()
        c = self.cfg
        self.llama = c["model_type"] in ("llama", "mistral")
        self.d = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.d_ffn = c["intermediate_size"] if self.llama else c["ffn_dim"]

    def raw(self, name):
        t = self.hdr[name]
        a, b = t["data_offsets"]
        return t["dtype"], t["shape"], self.blob[a:b]

    def ffn_names(self, l):
        if self.llama:
            p = "model.layers.%d.mlp." % l
            return [p + "up_proj.weight", p + "gate_proj.weight"], p + "down_proj.weight"
        p = "model.decoder.layers.%d." % l
        return [p + "fc1.weight"], p + "fc2.weight"

def convert(src_dtype, data, dst):
    if src_dtype.lower() == dst:
        return bytes(data)
    n = len(data) // ES[src_dtype]
    if src_dtype == "F16":
        vals = struct.unpack("<%de" % n, data)
    elif src_dtype == "F32":
        vals = struct.unpack("<%df" % n, data)
    else:  # BF16
        vals = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in struct.unpack("<%dH" % n, data)]
    return struct.pack("<%d%s" % (n, "e" if dst == "f16" else "f"), *vals)

class Expect:
    def __init__(self, m, dtype):
        self.m, self.dtype = m, dtype
        self.cache = {}

    def tensor(self, name):
        if name not in self.cache:
            dt, shape, data = self.m.raw(name)
            self.cache[name] = (ES[dt], shape, data, dt)
        return self.cache[name]

    def bundle(self, l, j):
        rows, down = self.m.ffn_names(l)
        out = b""
        for name in rows:                       # up row j (, gate row j)
            es, shape, data, dt = self.tensor(name)
            d = shape[1]
            out += convert(dt, data[j * d * es:(j + 1) * d * es], self.dtype)
        es, shape, data, dt = self.tensor(down)  # down column j of [d, d_ffn]
        d, f = shape
        col = b"".join(data[(i * f + j) * es:(i * f + j + 1) * es] for i in range(d))
        return out + convert(dt, col, self.dtype)

    def bundle_bytes(self):
        return (3 if self.m.llama else 2) * self.m.d * ES[self.dtype]

def fail(msg):
    print("fscheck: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)

def ls_sizes(d):
    out = subprocess.run(["ls", "-l", d], check=True, capture_output=True, text=True, timeout=60).stdout
    sizes = {}
    for line in out.splitlines()[1:]:
        f = line.split(None, 8)
        sizes[f[8]] = int(f[4])
    return sizes

def static(model_dir, mnt, dtype):
    m = Model(model_dir)
    e = Expect(m, dtype)
    B = e.bundle_bytes()
    # config.json: parses, the source's keys with their values, plus ours
    cfg = json.load(open(os.path.join(mnt, "config.json")))
    for k, v in m.cfg.items():
        if cfg.get(k) != v:
            fail("config.json: %s = %r, source has %r" % (k, cfg.get(k), v))
    if cfg.get("inflash_dtype") != dtype or cfg.get("inflash_bundle_bytes") != B:
        fail("config.json: inflash_dtype/bundle_bytes %r %r" % (cfg.get("inflash_dtype"), cfg.get("inflash_bundle_bytes")))
    # tokenizer files verbatim
    tok = ["tokenizer.json"] if os.path.exists(os.path.join(model_dir, "tokenizer.json")) else ["vocab.json", "merges.txt"]
    for t in tok:
        if open(os.path.join(mnt, t), "rb").read() != open(os.path.join(model_dir, t), "rb").read():
            fail("%s differs from the source" % t)
    # neuron files: ls -l sizes, sampled neurons with dd, EOF
    layers = ls_sizes(os.path.join(mnt, "layers"))
    if sorted(layers) != ["%02d" % l for l in range(m.n_layers)]:
        fail("layers/: %s" % sorted(layers))
    rng = random.Random(7)
    for l in range(m.n_layers):
        ld = os.path.join(mnt, "layers", "%02d" % l)
        sz = ls_sizes(ld)
        if sz.get("ffn") != m.d_ffn * B:
            fail("layers/%02d/ffn: ls -l size %r, want %d" % (l, sz.get("ffn"), m.d_ffn * B))
        tsv = open(os.path.join(ld, "neurons.tsv")).read().splitlines()
        if len(tsv) != m.d_ffn or sz.get("neurons.tsv") != sum(len(x) + 1 for x in tsv):
            fail("layers/%02d/neurons.tsv: %d lines, size %r" % (l, len(tsv), sz.get("neurons.tsv")))
        sample = {0, 1, m.d_ffn - 1} | {rng.randrange(m.d_ffn) for _ in range(5)}
        for j in sorted(sample):
            got = subprocess.run(["dd", "if=" + os.path.join(ld, "ffn"), "bs=%d" % B, "skip=%d" % j, "count=1",
                                  "status=none"], check=True, capture_output=True, timeout=60).stdout
            if got != e.bundle(l, j):
                fail("layers/%02d/ffn neuron %d differs from the source" % (l, j))
        got = subprocess.run(["dd", "if=" + os.path.join(ld, "ffn"), "bs=%d" % B, "skip=%d" % m.d_ffn, "count=1",
                              "status=none"], check=True, capture_output=True, timeout=60).stdout
        if got != b"":
            fail("layers/%02d/ffn: read past the end gave %d bytes" % (l, len(got)))
        # one large read across many bundles (up to 1 MiB per request)
        with open(os.path.join(ld, "ffn"), "rb") as f:
            whole = f.read()
        if len(whole) != m.d_ffn * B:
            fail("layers/%02d/ffn: read %d bytes" % (l, len(whole)))
        for j in sorted(sample):
            if whole[j * B:(j + 1) * B] != e.bundle(l, j):
                fail("layers/%02d/ffn neuron %d differs in a whole-file read" % (l, j))
        # ffn.slots: the same bundles in physical slot order, neurons.tsv the map
        if sz.get("ffn.slots") != m.d_ffn * B:
            fail("layers/%02d/ffn.slots: ls -l size %r, want %d" % (l, sz.get("ffn.slots"), m.d_ffn * B))
        with open(os.path.join(ld, "ffn.slots"), "rb") as f:
            slots = f.read()
        for line in tsv:
            j, k = (int(v) for v in line.split("\t")[:2])
            if slots[k * B:(k + 1) * B] != whole[j * B:(j + 1) * B]:
                fail("layers/%02d/ffn.slots: slot %d is not neuron %d" % (l, k, j))
                break
    # tensors: every file equals its source tensor; every dense source tensor is there
    tdir = os.path.join(mnt, "tensors")
    sizes = ls_sizes(tdir)
    ffn = set()
    for l in range(m.n_layers):
        rows, down = m.ffn_names(l)
        ffn.update(rows + [down])
    want = set(m.hdr) - ffn
    if not want <= set(sizes):
        fail("tensors/ lacks %s" % sorted(want - set(sizes))[:5])
    for name, size in sizes.items():
        if name not in m.hdr:
            continue   # tensors the store adds (none yet) are not in the source
        dt, shape, data = m.raw(name)
        exp = convert(dt, data, dtype)
        if size != len(exp):
            fail("tensors/%s: ls -l size %d, want %d" % (name, size, len(exp)))
        if open(os.path.join(tdir, name), "rb").read() != exp:
            fail("tensors/%s differs from the source" % name)
    print("fscheck: %s %s: %d layers, %d tensors, bundle %d bytes ok" % (os.path.basename(model_dir), dtype,
                                                                       m.n_layers, len(sizes), B))

def read_neuron(mnt, l, j, B):
    fd = os.open(os.path.join(mnt, "layers", "%02d" % l, "ffn"), os.O_RDONLY)
    try:
        return os.pread(fd, B, j * B)
    finally:
        os.close(fd)

def rand(model_dir, mnt, dtype, seed, n):
    m = Model(model_dir)
    e = Expect(m, dtype)
    B = e.bundle_bytes()
    rng = random.Random(seed)
    fds = [os.open(os.path.join(mnt, "layers", "%02d" % l, "ffn"), os.O_RDONLY) for l in range(m.n_layers)]
    for _ in range(n):
        l, j = rng.randrange(m.n_layers), rng.randrange(m.d_ffn)
        k = rng.choice((1, 1, 1, 2, 5))           # sometimes several neurons in one read
        k = min(k, m.d_ffn - j)
        got = os.pread(fds[l], k * B, j * B)
        if got != b"".join(e.bundle(l, j + i) for i in range(k)):
            fail("seed %d: layers/%02d/ffn neurons %d..%d wrong" % (seed, l, j, j + k - 1))

def neuron(model_dir, mnt, dtype, l, j):
    m = Model(model_dir)
    e = Expect(m, dtype)
    if read_neuron(mnt, l, j, e.bundle_bytes()) != e.bundle(l, j):
        fail("layers/%02d/ffn neuron %d wrong" % (l, j))

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "static":
        static(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "random":
        rand(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    elif cmd == "neuron":
        neuron(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        fail("unknown command " + cmd)
PY
check() { T python3 "$tmp/fscheck.py" "$@"; }

for model in opt-relu-shakespeare stories260K; do
    src="$INFLASH_SHARED/models/$model"
    for dt in f16 f32; do
        store="$tmp/$model-$dt"
        mnt="$tmp/mnt-$model-$dt"
        # f16 with the defaults; f32 with a tiny cache (eviction, transient
        # chunks for 1 MiB requests) and read-ahead
        opts=""
        [ "$dt" = f32 ] && opts="chunk=4k,cache=64k,readahead=2"
        step "$model $dt: pack, mount ${opts:+-o $opts}"
        T "$INFLASH_BIN/inflash-pack" "$src" "$store" --dtype "$dt" >/dev/null || fail "inflash-pack $model $dt"
        do_mount "$store" "$mnt" "$opts"

        step "$model $dt: sizes, config.json, tokenizer, tensors, neurons (dd)"
        check static "$src" "$mnt" "$dt" || fail "static checks of $model $dt"
        expect_fail "No such file or directory" cat "$mnt/nope"
        expect_fail "No such file or directory" cat "$mnt/layers/99/ffn"

        step "$model $dt: read-only"
        expect_fail "Read-only file system" bash -c "echo x > '$mnt/config.json'"
        expect_fail "Read-only file system" bash -c "echo x >> '$mnt/layers/00/ffn'"
        expect_fail "Read-only file system" touch "$mnt/newfile"
        expect_fail "Read-only file system" touch "$mnt/config.json"
        expect_fail "Read-only file system" mkdir "$mnt/newdir"
        expect_fail "Read-only file system" rm -f "$mnt/config.json"
        expect_fail "Read-only file system" truncate -s 0 "$mnt/layers/00/ffn"
        expect_fail "Read-only file system" mv "$mnt/config.json" "$mnt/c2.json"
        expect_fail "Read-only file system" chmod 600 "$mnt/config.json"

        step "$model $dt: 8 concurrent readers"
        pids=()
        for i in 1 2 3 4 5 6 7 8; do
            check random "$src" "$mnt" "$dt" "$i" 150 & pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || fail "a concurrent reader of $model $dt got wrong bytes"; done

        step "$model $dt: stats"
        T cat "$mnt/stats" >"$tmp/stats.txt"
        awk '$1 == "ffn_requests" && $2 > 0 { ok = 1 } END { exit !ok }' "$tmp/stats.txt" || fail "stats: $(cat "$tmp/stats.txt")"
        grep -q '^latency_p99_us ' "$tmp/stats.txt" || fail "stats: no latency_p99_us"
        T python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["requests"] > 0' "$mnt/stats.json" \
            || fail "stats.json does not parse"

        step "$model $dt: unmount"
        do_unmount "$mnt"
    done
done

store="$tmp/opt-relu-shakespeare-f16"
src="$INFLASH_SHARED/models/opt-relu-shakespeare"
mnt="$tmp/mnt-err"

step "mounting twice is refused, with one daemon"
do_mount "$store" "$mnt" "chunk=4k,cache=1m,readahead=2"
expect_fail "already a mount point" "$MS" "$store" "$mnt"
[ "$(pgrep -fc "inflashfs .*$mnt( |\$)")" = 1 ] || fail "not exactly one daemon for $mnt"
check neuron "$src" "$mnt" f16 2 17 || fail "neuron read with chunk=4k"
do_unmount "$mnt"

step "buffered reads (-o buffered) and a store on tmpfs give the same bytes"
do_mount "$store" "$mnt" "buffered,chunk=64k"
check neuron "$src" "$mnt" f16 3 999 || fail "neuron read with -o buffered"
grep -q '^o_direct 0' <(T cat "$mnt/stats") || fail "stats: o_direct should be 0 with -o buffered"
do_unmount "$mnt"
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm)" = tmpfs ]; then
    shm=$(mktemp -d /dev/shm/inflash-e2e-fs.XXXXXX)
    cp -r "$store" "$shm/store"
    do_mount "$shm/store" "$mnt"
    check neuron "$src" "$mnt" f16 4 5 || fail "neuron read from a tmpfs store"
    # tmpfs refuses O_DIRECT before Linux 6.6: then one log line and buffered reads
    if grep -q "O_DIRECT not supported" "$tmp/.inflashfs-mnt-err.log"; then
        grep -q '^o_direct 0' <(T cat "$mnt/stats") || fail "stats: o_direct should be 0 after the fallback"
    else
        grep -q '^o_direct 1' <(T cat "$mnt/stats") || fail "stats: o_direct 0 without a fallback log line"
    fi
    do_unmount "$mnt"
    rm -rf "$shm"
    shm=""
else
    echo "(no tmpfs at /dev/shm: O_DIRECT fallback not tested)"
fi

step "a store that does not match its index refuses to mount"
cp -r "$store" "$tmp/bad"
truncate -s -4096 "$tmp/bad/ffn.bin"
expect_fail "ffn.bin" "$MS" "$tmp/bad" "$mnt"
! grep -qF " $mnt fuse" /proc/mounts || fail "the bad store got mounted"
if pgrep -f "inflashfs .*$mnt( |\$)" >/dev/null; then fail "a daemon is left after a refused mount"; fi
expect_fail "usage\|need STORE_DIR" "$MS" "$store"

step "a short store read is EIO and logged; the daemon keeps serving"
cp -r "$store" "$tmp/short"
do_mount "$tmp/short" "$mnt" "chunk=4k"
layer0=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["ffn_dim"] * c["inflash_bundle_bytes"])' "$mnt/config.json")
truncate -s $((4096 + layer0 + 8192)) "$tmp/short/ffn.bin"     # layers 2.. are gone
expect_fail "Input/output error" dd if="$mnt/layers/05/ffn" of=/dev/null bs=1024 skip=3 count=1 status=none
grep -q "ffn.bin.*offset" "$tmp/.inflashfs-mnt-err.log" || fail "no log line naming ffn.bin and the offset"
check neuron "$src" "$mnt" f16 0 100 || fail "the daemon stopped serving after EIO"
check neuron "$src" "$mnt" f16 0 1023 || fail "the daemon stopped serving after EIO"
grep -q '^store_read_errors [1-9]' <(T cat "$mnt/stats") || fail "stats: store_read_errors not counted"
do_unmount "$mnt"

echo "e2e_fs: all checks passed"
