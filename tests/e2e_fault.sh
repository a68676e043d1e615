#!/usr/bin/env bash
# e2e_fault.sh: store read faults through the mount, injected with the
# INFLASH_FAULT hook of the store read path (layout/io.c; the daemon
# inherits the variable from mount.sh). On opt-relu-shakespeare f16 (1 KiB
# bundles, 16 per 16 KiB chunk):
#   fail   a read of a chosen bundle fails: EIO for it, logged with the
#          offset; a neuron in another chunk of the same layer reads right;
#          with count=1 the retry reads the store again and succeeds
#   short  a read returns short: EIO, never the partial bytes as if complete
#          (also with -o verify=0, so the checksum is not what catches it;
#          the hook fills what it cut off with 0xA5, so garbage would show)
#   slow   a read waits 5 s: while it is in flight another neuron file and a
#          tensor read right; then it is served, late, with the right bytes
#   dense  the same for tensors (dense.bin)
# and the client (inflash, dense mode) run against a faulty mount exits 1
# with one error line naming the file, having printed only a prefix of what
# the clean run prints (no garbage); with only slow faults it prints the same
# as the clean run. Needs /dev/fuse and python3; run as root in CI.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_env
e2e_tmp fault
STEP=120

q() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' \
        "$1/index.sqlite" "$2"
}
# mount_f NAME FAULTS [OPTS]: mount $S at $T/mnt/NAME with INFLASH_FAULT=FAULTS.
mount_f() {
    mkdir -p "$T/mnt"
    if INFLASH_FAULT=$2 T_ bash "$MOUNT_SH" "$S" "$T/mnt/$1" ${3:+-o "$3"} >"$T/mount-$1.out" 2>&1; then
        MOUNTS+=("$T/mnt/$1")
        ok "mount $1${3:+ -o $3}"
    else
        bad "mount $1: $(tail -n 1 "$T/mount-$1.out")"
        e2e_finish e2e_fault
    fi
    local n
    n=$(awk -F';' '{ print NF }' <<<"$2")
    grep -q "^INFLASH_FAULT: $n fault injection rule(s) active" "$T/mnt/.inflashfs-$1.log" \
        && ok "$1: the daemon took the $n fault rule(s)" || bad "$1: fault rules not taken: $(cat "$T/mnt/.inflashfs-$1.log")"
}
# ffn M L J: the neuron file of layer L under mount M; noff L J: J's offset in ffn.bin
ffn() { printf '%s/layers/%02d/ffn' "$1" "$2"; }
noff() { q "$S" "SELECT offset FROM neurons WHERE layer = $1 AND id = $2"; }
# neuron_ok WHAT M L J: neuron J of layer L reads and equals the store's bundle
neuron_ok() {
    [ "$(bytes "$(ffn "$2" "$3")" $(($4 * B)) "$B")" = "$(bytes "$S/ffn.bin" "$(noff "$3" "$4")" "$B")" ] \
        && ok "$1" || bad "$1: wrong bytes or an error"
}
tensor_ok() {   # WHAT M NAME
    local off n
    off=$(q "$S" "SELECT offset FROM tensors WHERE name = '$3'")
    n=$(q "$S" "SELECT bytes FROM tensors WHERE name = '$3'")
    [ "$(bytes "$2/tensors/$3" 0 "$n")" = "$(bytes "$S/dense.bin" "$off" "$n")" ] && ok "$1" || bad "$1: wrong bytes or an error"
}

pack opt "$MODELS/opt-relu-shakespeare" f16
S=$T/opt
B=$(q "$S" "SELECT value FROM meta WHERE key = 'bundle_bytes'")
X=model.decoder.layers.0.self_attn.out_proj.weight
Y=model.decoder.embed_tokens.weight
XOFF=$(q "$S" "SELECT offset FROM tensors WHERE name = '$X'")
XBYTES=$(q "$S" "SELECT bytes FROM tensors WHERE name = '$X'")

# ---- mount A: verification on; fail, short, slow, fail once ------------------
A_FAULTS="file=ffn.bin,off=$(noff 1 100),len=$B,mode=fail"
A_FAULTS+=";file=ffn.bin,off=$(noff 2 200),len=$B,mode=short"
A_FAULTS+=";file=ffn.bin,off=$(noff 3 300),len=$B,mode=slow,ms=5000,count=1"
A_FAULTS+=";file=ffn.bin,off=$(noff 4 400),len=$B,mode=fail,count=1"
mount_f A "$A_FAULTS" chunk=16k
MA=$T/mnt/A
LOGA=$T/mnt/.inflashfs-A.log

expect_eio "fail: layer 1 neuron 100" dd if="$(ffn "$MA" 1)" of=/dev/null bs="$B" skip=100 count=1 status=none
# the log line names the chunk's offset (chunks are cut from each layer's
# start) and the slots it holds (16 per chunk)
L1=$(q "$S" "SELECT offset FROM layers WHERE layer = 1")
grep -q "^inflashfs: ffn.bin: read of 16384 bytes at offset $((L1 + 6 * 16384)) (layer 1 slots 96..111) failed: Input/output error" "$LOGA" \
    && ok "fail: logged with the offset, layer and slots" || bad "fail: no log line: $(tail -n 3 "$LOGA")"
neuron_ok "fail: layer 1 neuron 900 (another chunk) reads right" "$MA" 1 900
expect_eio "fail: layer 1 neuron 100 again (every read fails)" dd if="$(ffn "$MA" 1)" of=/dev/null bs="$B" skip=100 count=1 status=none

expect_eio "short: layer 2 neuron 200" dd if="$(ffn "$MA" 2)" of=/dev/null bs="$B" skip=200 count=1 status=none
grep -q "^inflashfs: ffn.bin: short read at offset" "$LOGA" && ok "short: logged" || bad "short: no log line"
neuron_ok "short: layer 2 neuron 0 (another chunk) reads right" "$MA" 2 0

expect_eio "fail once: layer 4 neuron 400, first read" dd if="$(ffn "$MA" 4)" of=/dev/null bs="$B" skip=400 count=1 status=none
neuron_ok "fail once: the retry reads the store again and is right" "$MA" 4 400

# slow: wait until the slow read has claimed its chunk (cache_misses goes
# up), then read other files while it sleeps in the store read
misses0=$(stat_of "$MA" cache_misses)
T_ dd if="$(ffn "$MA" 3)" of="$T/slow.bin" bs="$B" skip=300 count=1 status=none &
slow_pid=$!
for _ in $(seq 100); do
    [ "$(stat_of "$MA" cache_misses)" -gt "$misses0" ] && break
    sleep 0.1
done
neuron_ok "slow: layer 5 neuron 10 reads right meanwhile" "$MA" 5 10
tensor_ok "slow: tensor $Y reads right meanwhile" "$MA" "$Y"
if kill -0 "$slow_pid" 2>/dev/null; then
    ok "slow: the slow read was still in flight during those reads"
else
    bad "slow: the slow read was done before the other reads (no overlap tested)"
fi
if wait "$slow_pid" && [ "$(md5sum <"$T/slow.bin" | cut -c1-32)" = "$(bytes "$S/ffn.bin" "$(noff 3 300)" "$B")" ]; then
    ok "slow: served late with the right bytes"
else
    bad "slow: the slow read failed or gave wrong bytes"
fi
[ "$(stat_of "$MA" store_read_errors)" -ge 4 ] && ok "stats: store_read_errors $(stat_of "$MA" store_read_errors)" \
    || bad "stats: store_read_errors $(stat_of "$MA" store_read_errors), want >= 4"

# the client: the clean run (the store directly), then through mount A,
# which fails every read of layer 1 neuron 100
CLIENT=("$INFLASH_BIN/inflash" -p "ROMEO:" -n 6 -t 0)
T_ "${CLIENT[@]:0:1}" --store "$S" "${CLIENT[@]:1}" >"$T/clean.out" 2>"$T/clean.err" \
    && ok "client: clean run (--store)" || bad "client: clean run failed: $(cat "$T/clean.err")"
# client_fails WHAT MOUNT FILE: exit 1, one stderr line "inflash: ...FILE...",
# stdout a prefix of the clean run's
client_fails() {
    local rc=0
    T_ "${CLIENT[@]:0:1}" "$2" "${CLIENT[@]:1}" >"$T/c.out" 2>"$T/c.err" || rc=$?
    [ "$rc" = 1 ] && ok "$1: client exit 1" || bad "$1: client exit $rc"
    if [ "$(wc -l <"$T/c.err")" = 1 ] && grep -q "^inflash: .*$3.*Input/output error" "$T/c.err"; then
        ok "$1: one error line naming $3: $(cat "$T/c.err")"
    else
        bad "$1: client stderr: $(cat "$T/c.err")"
    fi
    is_prefix "$T/c.out" "$T/clean.out" && ok "$1: client stdout is a prefix of the clean run's (no garbage)" \
        || bad "$1: client printed text the clean run does not: $(head -c 200 "$T/c.out")"
}
client_fails "fail" "$MA" "layers/01/ffn"
umount_checked A

# ---- mount B: verification off; short reads of a bundle and of a tensor ----
mount_f B "file=ffn.bin,off=$(noff 2 200),len=$B,mode=short;file=dense.bin,off=$((XOFF + XBYTES / 2)),len=1,mode=short" verify=0
MB=$T/mnt/B
expect_eio "short, verify=0: layer 2 neuron 200" dd if="$(ffn "$MB" 2)" of=/dev/null bs="$B" skip=200 count=1 status=none
expect_eio "short, verify=0: layer 2 whole file" cat "$(ffn "$MB" 2)"
expect_eio "short, verify=0: tensor $X" cat "$MB/tensors/$X"
neuron_ok "short, verify=0: layer 2 neuron 999 reads right" "$MB" 2 999
tensor_ok "short, verify=0: tensor $Y reads right" "$MB" "$Y"
client_fails "short dense.bin" "$MB" "tensors/$X"
umount_checked B

# ---- mount C: dense.bin fails for one tensor ---------------------------------
mount_f C "file=dense.bin,off=$XOFF,len=$XBYTES,mode=fail"
MC=$T/mnt/C
expect_eio "dense fail: tensor $X" cat "$MC/tensors/$X"
grep -q "^inflashfs: dense.bin: tensor $X (offset $XOFF, $XBYTES bytes): .*Input/output error" "$T/mnt/.inflashfs-C.log" \
    && ok "dense fail: logged naming the tensor" || bad "dense fail: log: $(tail -n 2 "$T/mnt/.inflashfs-C.log")"
tensor_ok "dense fail: tensor $Y reads right" "$MC" "$Y"
umount_checked C

# ---- mount D: only slow reads: the client prints what the clean run prints --
mount_f D "file=ffn.bin,mode=slow,ms=20,count=40;file=dense.bin,mode=slow,ms=20,count=40"
if T_ "${CLIENT[@]:0:1}" "$T/mnt/D" "${CLIENT[@]:1}" >"$T/d.out" 2>"$T/d.err" && cmp -s "$T/d.out" "$T/clean.out"; then
    ok "slow: the client's output equals the clean run's"
else
    bad "slow: client: $(cat "$T/d.err")"
fi
umount_checked D

e2e_finish e2e_fault
