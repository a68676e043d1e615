#!/usr/bin/env bash
# e2e_corrupt.sh: corruption on flash is detected. Packs both shared models
# (opt-relu-shakespeare f16: 1 KiB bundles, 16 per chunk; stories260K f32:
# 768-byte bundles, some across two chunks), checks that
# `inflash-inspect --verify` passes the clean stores (exit 0), then flips one
# byte in a bundle of ffn.bin and one in a tensor of dense.bin and checks:
# --verify lists exactly those two (layer, neuron / tensor, file, offset) and
# exits 1; through the mount (verification on by default) the damaged neuron
# and tensor answer EIO, partial reads of them too, with one daemon log line
# naming layer and neuron (tensor), while their neighbours and the other
# layers read the right bytes; a retry reads the store again (the bad chunk
# is not cached), so once the byte is repaired the same read succeeds; with
# -o verify=0 the damaged bytes are served (the option works). Needs
# /dev/fuse and python3; run as root in CI.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
e2e_env
e2e_tmp corrupt
STEP=120

# q STORE SQL: one value from the store's index (python3's sqlite3: the
# sqlite3 program is not a dependency).
q() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' \
        "$1/index.sqlite" "$2"
}
# flip FILE OFFSET: invert the bits of one byte in place.
flip() {
    python3 -c 'import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2])); b = f.read(1)[0]; f.seek(int(sys.argv[2])); f.write(bytes([b ^ 0xFF]))' "$1" "$2"
}
# mount_o NAME STORE [OPTS]: mount STORE at $T/mnt/NAME; the log is LOG_NAME.
mount_o() {
    mkdir -p "$T/mnt"
    if T_ bash "$MOUNT_SH" "$2" "$T/mnt/$1" ${3:+-o "$3"} >"$T/mount-$1.out" 2>&1; then
        MOUNTS+=("$T/mnt/$1")
        ok "mount $1${3:+ -o $3}"
    else
        bad "mount $1: $(tail -n 1 "$T/mount-$1.out")"
        e2e_finish e2e_corrupt
    fi
}

# case MODEL DTYPE LAYER NEURON BYTE_IN_BUNDLE TENSOR
run_case() {
    local model=$1 dt=$2 L=$3 J=$4 at=$5 tensor=$6
    local name=$model-$dt clean=$T/$model-$dt bad_store=$T/$model-$dt-bad
    pack "$name" "$INFLASH_SHARED/models/$model" "$dt"
    local out
    if out=$(T_ "$INFLASH_BIN/inflash-inspect" --verify "$clean" 2>&1) && grep -q "^verify: clean" <<<"$out"; then
        ok "$name: inspect --verify of the clean store: exit 0, clean"
    else
        bad "$name: inspect --verify of the clean store: $out"
    fi

    local B noff loff toff tbytes got
    B=$(q "$clean" "SELECT value FROM meta WHERE key = 'bundle_bytes'")
    noff=$(q "$clean" "SELECT offset FROM neurons WHERE layer = $L AND id = $J")
    loff=$(q "$clean" "SELECT offset FROM layers WHERE layer = $L")
    toff=$(q "$clean" "SELECT offset FROM tensors WHERE name = '$tensor'")
    tbytes=$(q "$clean" "SELECT bytes FROM tensors WHERE name = '$tensor'")
    cp -r "$clean" "$bad_store"
    flip "$bad_store/ffn.bin" $((noff + at))
    flip "$bad_store/dense.bin" $((toff + tbytes / 2 + 3))

    local rc=0
    out=$(T_ "$INFLASH_BIN/inflash-inspect" --verify "$bad_store" 2>&1) || rc=$?
    [ "$rc" = 1 ] && ok "$name: inspect --verify of the damaged store: exit 1" \
        || bad "$name: inspect --verify of the damaged store: exit $rc"
    local want_n="damaged: ffn.bin: layer $L neuron $J (slot [0-9]*, offset $noff): checksum mismatch"
    local want_t="damaged: dense.bin: tensor $tensor (offset $toff, $tbytes bytes): checksum mismatch"
    if grep -qx "$want_n" <<<"$out" && grep -qxF "$want_t" <<<"$out" && [ "$(grep -c '^damaged:' <<<"$out")" = 2 ] &&
        grep -q "^verify: DAMAGED: 1 of [0-9]* tensors and 1 of [0-9]* neurons" <<<"$out"; then
        ok "$name: --verify lists the damaged neuron and tensor (and nothing else)"
    else
        bad "$name: --verify output: $out"
    fi

    mount_o "$name" "$bad_store"
    local M=$T/mnt/$name LOG=$T/mnt/.inflashfs-$name.log F
    F=$(printf '%s/layers/%02d/ffn' "$M" "$L")
    expect_eio "$name: damaged neuron $L/$J" dd if="$F" of=/dev/null bs="$B" skip="$J" count=1 status=none
    # a read of only the first 16 bytes of the bundle: still the whole bundle is checked
    expect_eio "$name: first bytes of the damaged neuron" \
        dd if="$F" of=/dev/null iflag=skip_bytes,count_bytes skip=$((J * B)) count=16 bs=16 status=none
    local j ngood=0
    for j in $((J - 1)) $((J + 1)) $((J + 7)) 0; do
        [ "$(bytes "$F" $((j * B)) "$B")" = "$(bytes "$clean/ffn.bin" $((loff + j * B)) "$B")" ] && ngood=$((ngood + 1))
    done
    [ "$ngood" = 4 ] && ok "$name: the neighbours of the damaged neuron read right" \
        || bad "$name: only $ngood of 4 neighbouring neurons read right"
    local other=$(( (L + 1) % $(q "$clean" "SELECT COUNT(*) FROM layers") )) obytes ooff
    obytes=$(q "$clean" "SELECT bytes FROM layers WHERE layer = $other")
    ooff=$(q "$clean" "SELECT offset FROM layers WHERE layer = $other")
    [ "$(bytes "$(printf '%s/layers/%02d/ffn' "$M" "$other")" 0 "$obytes")" = "$(bytes "$clean/ffn.bin" "$ooff" "$obytes")" ] \
        && ok "$name: layer $other reads whole and right" || bad "$name: layer $other differs"
    local line="inflashfs: ffn.bin: layer $L neuron $J (slot [0-9]*, offset $noff): checksum mismatch"
    [ "$(grep -c "^$line\$" "$LOG")" -ge 2 ] && ok "$name: daemon log names layer $L neuron $J" \
        || bad "$name: no log line '$line' in $(cat "$LOG")"
    [ "$(grep -c "checksum mismatch" "$LOG")" = "$(stat_of "$M" verify_errors)" ] \
        && ok "$name: one log line per failed read" || bad "$name: log lines vs verify_errors: $(grep -c "checksum mismatch" "$LOG") vs $(stat_of "$M" verify_errors)"

    expect_eio "$name: damaged tensor (whole)" cat "$M/tensors/$tensor"
    expect_eio "$name: damaged tensor (4 KiB at 4 KiB)" dd if="$M/tensors/$tensor" of=/dev/null bs=4096 skip=1 count=1 status=none
    grep -qF "inflashfs: dense.bin: tensor $tensor (offset $toff, $tbytes bytes): checksum mismatch" "$LOG" \
        && ok "$name: daemon log names the tensor" || bad "$name: no log line for tensor $tensor"
    local t2 t2off t2bytes
    t2=$(q "$clean" "SELECT name FROM tensors WHERE name != '$tensor' ORDER BY bytes DESC LIMIT 1")
    t2off=$(q "$clean" "SELECT offset FROM tensors WHERE name = '$t2'")
    t2bytes=$(q "$clean" "SELECT bytes FROM tensors WHERE name = '$t2'")
    [ "$(bytes "$M/tensors/$t2" 4096 "$((t2bytes - 4096))")" = "$(bytes "$clean/dense.bin" $((t2off + 4096)) $((t2bytes - 4096)))" ] \
        && ok "$name: another tensor reads right (partial read, checked whole first)" || bad "$name: tensor $t2 differs"

    # repair the bytes under the running daemon: the bad chunk was not kept,
    # so the same reads now succeed (and the tensor is checked again)
    flip "$bad_store/ffn.bin" $((noff + at))
    flip "$bad_store/dense.bin" $((toff + tbytes / 2 + 3))
    got=$(bytes "$F" $((J * B)) "$B" 2>&1)
    [ "$got" = "$(bytes "$clean/ffn.bin" "$noff" "$B")" ] \
        && ok "$name: after the repair the neuron reads right (the bad chunk was not cached)" \
        || bad "$name: after the repair the neuron still fails or differs: $got; $(tail -n 2 "$LOG")"
    [ "$(bytes "$M/tensors/$tensor" 0 "$tbytes")" = "$(bytes "$clean/dense.bin" "$toff" "$tbytes")" ] \
        && ok "$name: after the repair the tensor reads right" || bad "$name: after the repair the tensor still fails"
    # each failed read read the bundle's chunks twice (a second try from the store)
    [ "$(stat_of "$M" cache_discarded)" -ge 2 ] && [ "$(stat_of "$M" verify)" = 1 ] &&
        [ "$(stat_of "$M" verify_retries)" -ge 2 ] \
        && ok "$name: stats: verify 1, cache_discarded $(stat_of "$M" cache_discarded), verify_retries $(stat_of "$M" verify_retries)" \
        || bad "$name: stats: $(grep -E '^(verify|cache_discarded)' "$M/stats" | tr '\n' ' ')"
    umount_checked "$name"

    # -o verify=0: the damaged bytes are served as they are
    flip "$bad_store/ffn.bin" $((noff + at))
    mount_o "$name-noverify" "$bad_store" verify=0
    M=$T/mnt/$name-noverify
    F=$(printf '%s/layers/%02d/ffn' "$M" "$L")
    got=$(bytes "$F" $((J * B)) "$B")
    if [ "$got" = "$(bytes "$bad_store/ffn.bin" "$noff" "$B")" ] && [ "$got" != "$(bytes "$clean/ffn.bin" "$noff" "$B")" ] &&
        [ "$(stat_of "$M" verify)" = 0 ]; then
        ok "$name: -o verify=0 serves the damaged bundle unchecked"
    else
        bad "$name: -o verify=0: the damaged bundle was not served as stored"
    fi
    umount_checked "$name-noverify"
}

# OPT f16: bundle 1024 bytes; byte 100 of layer 3 neuron 500
run_case opt-relu-shakespeare f16 3 500 100 model.decoder.layers.2.self_attn.out_proj.weight
# Llama f32: bundle 768 bytes, neuron 21 spans bytes 16128..16895 of layer 2,
# across the 16 KiB chunk boundary; the flipped byte is in the second chunk
run_case stories260K f32 2 21 700 model.layers.1.self_attn.q_proj.weight

# a bad -o verify value is a usage error (exit 2) naming the option
rc=0
mkdir -p "$T/none"
MOUNTS+=("$T/none")     # unmounted at exit should the option be taken
out=$(T_ "$INFLASH_BIN/inflashfs" "$T/opt-relu-shakespeare-f16" "$T/none" -o verify=2 2>&1) || rc=$?
[ "$rc" = 2 ] && grep -q "verify=2: must be 0 or 1" <<<"$out" && ok "-o verify=2: usage error" \
    || bad "-o verify=2: exit $rc: $out"

e2e_finish e2e_corrupt
