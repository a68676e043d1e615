# tests/lib.sh: the scaffolding shared by the end-to-end test scripts, sourced
# with `source "$(dirname "$0")/lib.sh"`: the environment checks, a temporary
# directory $T removed on exit after every mount listed in MOUNTS is
# unmounted, the ok/bad failure counter, pack/mnt helpers and the summary.

# e2e_env: require INFLASH_SHARED, INFLASH_BIN and INFLASH_SRC (set by ctest);
# export INFLASH_BIN and set MODELS, DATA and MOUNT_SH from them.
e2e_env() {
    : "${INFLASH_SHARED:?INFLASH_SHARED must name the shared/ folder}"
    : "${INFLASH_BIN:?INFLASH_BIN must name the build bin/ folder}"
    : "${INFLASH_SRC:?INFLASH_SRC must name the source root}"
    export INFLASH_BIN
    MODELS=$INFLASH_SHARED/models
    DATA=$INFLASH_SHARED/data
    MOUNT_SH=$INFLASH_SRC/mount.sh
    CHECK_REF=$INFLASH_SRC/tests/check_reference.py
}

# e2e_tmp NAME: T becomes a new /tmp/inflash-e2e-NAME.XXXXXX directory and
# e2e_cleanup runs on exit. Mount points appended to MOUNTS are unmounted by it.
e2e_tmp() {
    T=$(mktemp -d "/tmp/inflash-e2e-$1.XXXXXX") || exit 1
    MOUNTS=()
    trap e2e_cleanup EXIT
}

# e2e_cleanup: unmount everything in MOUNTS (mount.sh, else a lazy
# fusermount3 -u -z), then remove $T.
e2e_cleanup() {
    local m
    for m in "${MOUNTS[@]}"; do
        timeout 60 bash "$MOUNT_SH" -u "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m" >/dev/null 2>&1
    done
    rm -rf "$T"
}

# ok MESSAGE / bad MESSAGE: one result line; bad counts a failure.
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# pack NAME SRC DTYPE: inflash-pack SRC into $T/NAME; the script stops if it fails.
pack() {
    if timeout 600 "$INFLASH_BIN/inflash-pack" "$2" "$T/$1" --dtype "$3" >"$T/pack-$1.log" 2>&1; then
        ok "pack $1"
    else
        bad "pack $1: $(tail -n 1 "$T/pack-$1.log")"
        exit 1
    fi
}

# mnt NAME: mount the store $T/NAME at $T/mnt/NAME with mount.sh; the script
# stops if it fails.
mnt() {
    mkdir -p "$T/mnt"
    if timeout 60 bash "$MOUNT_SH" "$T/$1" "$T/mnt/$1" >"$T/mount-$1.log" 2>&1; then
        MOUNTS+=("$T/mnt/$1")
        ok "mount $1"
    else
        bad "mount $1: $(tail -n 1 "$T/mount-$1.log")"
        exit 1
    fi
}

# shakespeare_split: $T/train.txt = the first 90% of tinyshakespeare (bytes
# [0, 1003857): what the demo models were trained on, the calibration text)
# and $T/heldout.txt = the rest (the held-out text of their READMEs).
shakespeare_split() {
    head -c 1003857 "$DATA/tinyshakespeare.txt" >"$T/train.txt"
    tail -c +1003858 "$DATA/tinyshakespeare.txt" >"$T/heldout.txt"
}

# T_ CMD...: CMD under `timeout $STEP` (STEP: seconds per step, default 120).
T_() { timeout "${STEP:-120}" "$@"; }

# umount_checked NAME: unmount $T/mnt/NAME with mount.sh (a failure counts)
# and count a sanitizer report in its daemon log as a failure.
umount_checked() {
    T_ bash "$MOUNT_SH" -u "$T/mnt/$1" >/dev/null 2>&1 || bad "unmount $1"
    if grep -E "AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:" "$T/mnt/.inflashfs-$1.log"; then
        bad "sanitizer report in the daemon log of $1"
    fi
}

# bytes FILE OFF LEN: md5 of a byte range of a file (a store file or a mount file).
bytes() { T_ dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=64k status=none | md5sum | cut -c1-32; }

# expect_eio WHAT CMD...: the command fails with an I/O error.
expect_eio() {
    local what=$1 out
    shift
    if out=$(T_ "$@" 2>&1 >/dev/null); then
        bad "$what: read succeeded"
    elif grep -q "Input/output error" <<<"$out"; then
        ok "$what: EIO"
    else
        bad "$what: expected EIO, got: $out"
    fi
}

# is_prefix OUT REF: the client output OUT is a prefix of REF (no garbage),
# allowing the one newline the client adds to end a partly printed line
# when it stops on an error.
is_prefix() {
    python3 - "$1" "$2" <<'PY'
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
sys.exit(not (b.startswith(a) or (a.endswith(b"\n") and b.startswith(a[:-1]))))
PY
}

# stat_of MNT KEY: the value of KEY in MNT/stats.
stat_of() { awk -v k="$2" '$1 == k { print $2 }' "$1/stats"; }

# e2e_finish NAME [NOTE]: the summary line; exit 1 after any failure, else 0.
e2e_finish() {
    if [ "$fails" -ne 0 ]; then
        echo "$1: $fails failure(s)"
        exit 1
    fi
    echo "$1: all passed${2:+ $2}"
    exit 0
}

# e2e_pynum: PYNUM becomes a Python 3 that has numpy (python3 on PATH, else
# Debian's /usr/bin/python3, where CI installs python3-numpy); the script
# stops if there is none. The independent references (scripts/ref/) need it.
e2e_pynum() {
    local p
    for p in python3 /usr/bin/python3; do
        if "$p" -c "import numpy" >/dev/null 2>&1; then
            PYNUM=$p
            return 0
        fi
    done
    bad "no python3 with numpy (apt-get install python3-numpy)"
    exit 1
}
