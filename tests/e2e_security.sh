#!/usr/bin/env bash
# e2e_security.sh: the security promises of the daemon and the tools, from the outside.
# The daemon (through mount.sh, as root):
#   - default mount options: ro, nosuid, nodev, default_permissions, no
#     allow_other; "-o rw" does not make it writable;
#   - read-only: every modifying call (open for writing, create, unlink,
#     rename, mkdir, rmdir, chmod, chown, truncate, utimes, setxattr,
#     removexattr, symlink, link, mknod) fails with EROFS/EACCES/EPERM, also
#     after root remounts it rw (then the daemon itself answers), and the
#     store is unchanged to the byte and inode;
#   - nothing outside the store: ".." stays in the kernel's hands (mnt/x/..
#     is mnt, mnt/.. is the host's), no symlinks or devices in the tree, the
#     raw store files are not shown, names the tree lacks are ENOENT; a store
#     whose index names a tensor or tokenizer file "../../x", "/x", "a/../b",
#     ".." or "" refuses to mount; a store whose index.sqlite, dense.bin or
#     ffn.bin is a symlink (or a FIFO) refuses to mount and to inspect, at
#     once, with a line naming the file, while a store directory that is
#     itself a symlink is fine;
#   - private by default: user nobody gets "Permission denied" on the mount
#     (not on the directories above it), and can read it with -o allow_other.
# inflash-pack:
#   - OUT_DIR inside SRC_DIR is refused, also through a symlinked SRC_DIR, a
#     symlinked parent of OUT_DIR or ".." components, and so is SRC_DIR inside
#     an OUT_DIR to be replaced (--force);
#   - a file of SRC_DIR that is a symlink leading outside it (config.json,
#     model.safetensors, the shard index and a shard, tokenizer files) is
#     refused with one line naming it and --follow-symlinks, leaving nothing
#     behind; with --follow-symlinks it packs the same store as the plain
#     directory; symlinks within SRC_DIR and a symlinked SRC_DIR are fine; a
#     Hugging Face cache snapshot (links into ../../blobs) gets a hint;
#   - a FIFO or device in place of a source file is refused, not opened.
# Needs /dev/fuse, python3, setpriv and root (as CI runs it).
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
BIN=$INFLASH_BIN
OPT=$MODELS/opt-relu-shakespeare
STORIES=$MODELS/stories260K
e2e_tmp security
chmod 755 "$T"                                # user nobody may walk to the mounts

# refused NAME NEEDLE OUT -- COMMAND...: exit 1, one "prog: ..." line on
# stderr holding NEEDLE, nothing left at OUT or OUT.tmp.*
refused() {
    local name=$1 needle=$2 out=$3 rc
    shift 4
    timeout 120 "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ne 1 ] || [ "$(wc -l <"$T/stderr")" -ne 1 ] || ! grep -q "^inflash-[a-z]*: " "$T/stderr"; then
        bad "$name: exit $rc, stderr: $(head -c 400 "$T/stderr")"
    elif ! grep -qF -- "$needle" "$T/stderr"; then
        bad "$name: the message lacks '$needle': $(cat "$T/stderr")"
    elif [ -n "$out" ] && { [ -e "$out" ] || compgen -G "$out.tmp.*" >/dev/null; }; then
        bad "$name: something was left at $out"
    else
        ok "$name: $(cat "$T/stderr")"
    fi
}
# snap DIR: names, sizes, modes, inodes, times and sha256 of a store's files
snap() { (cd "$1" && stat -c '%n %s %a %i %Y %Z' -- * && sha256sum -- *); }
# sums DIR: the sha256 of a store's files
sums() { (cd "$1" && sha256sum -- *); }
as_nobody() { timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

# ====================================================================================
# the daemon
# ====================================================================================
timeout 300 "$BIN/inflash-pack" "$STORIES" "$T/st" --dtype f32 >/dev/null 2>&1 || { bad "pack"; e2e_finish e2e_security; }
snap "$T/st" >"$T/snap.before"

# ---- options and help ----------------------------------------------------------------
"$BIN/inflashfs" --help | grep -q "allow_other.*default: only you" && ok "inflashfs --help: allow_other is off by default" ||
    bad "inflashfs --help does not document allow_other"
bash "$MOUNT_SH" --help | grep -q "allow_other.*default: only you" && ok "mount.sh --help: allow_other is off by default" ||
    bad "mount.sh --help does not document allow_other"
mnt st
M=$T/mnt/st
opts=$(awk -v m="$M" '$2 == m { print $4 }' /proc/mounts)
case ",$opts," in
*,allow_other,*) bad "default mount has allow_other: $opts" ;;
*,ro,*nosuid,*nodev,*default_permissions*) ok "default mount options: $opts" ;;
*) bad "default mount options: $opts (want ro,nosuid,nodev,default_permissions)" ;;
esac

# ---- read-only ---------------------------------------------------------------------
# modify MNT LABEL: try every modifying call on MNT; one line "call errno" each
modify() {
    python3 - "$1" <<'EOF'
import errno, os, sys
m = sys.argv[1]
def t(name, f):
    try:
        f()
        print(name, "SUCCEEDED")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))
cfg, ffn = m + "/config.json", m + "/layers/00/ffn"
t("open-write", lambda: os.open(cfg, os.O_WRONLY))
t("open-rdwr-ffn", lambda: os.open(ffn, os.O_RDWR))
t("open-trunc", lambda: os.open(ffn, os.O_WRONLY | os.O_TRUNC))
t("create", lambda: os.open(m + "/new", os.O_WRONLY | os.O_CREAT, 0o644))
t("create-in-layers", lambda: os.open(m + "/layers/00/new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
t("unlink", lambda: os.unlink(cfg))
t("rename", lambda: os.rename(cfg, m + "/c2.json"))
t("rename-dir", lambda: os.rename(m + "/layers/00", m + "/layers/99"))
t("mkdir", lambda: os.mkdir(m + "/d"))
t("rmdir", lambda: os.rmdir(m + "/tensors"))
t("chmod", lambda: os.chmod(cfg, 0o666))
t("chown", lambda: os.chown(cfg, 65534, 65534))
t("truncate", lambda: os.truncate(ffn, 0))
t("utime", lambda: os.utime(cfg, (0, 0)))
t("setxattr", lambda: os.setxattr(cfg, "user.x", b"1"))
t("removexattr", lambda: os.removexattr(cfg, "user.x"))
t("symlink", lambda: os.symlink("config.json", m + "/sl"))
t("link", lambda: os.link(cfg, m + "/hl"))
t("mkfifo", lambda: os.mkfifo(m + "/fifo"))
t("mknod", lambda: os.mknod(m + "/null", 0o600 | 0o020000, os.makedev(1, 3)))
EOF
}
# check_modify LABEL: every call of modify failed with EROFS, EACCES or EPERM
check_modify() {
    local n bad_lines
    modify "$M" >"$T/modify.out" 2>&1
    n=$(wc -l <"$T/modify.out")
    bad_lines=$(grep -vE ' (EROFS|EACCES|EPERM)$' "$T/modify.out" | tr '\n' ' ')
    if [ "$n" -eq 20 ] && [ -z "$bad_lines" ]; then
        ok "$1: all $n modifying calls refused ($(awk '{ print $2 }' "$T/modify.out" | sort | uniq -c | xargs))"
    else
        bad "$1: $n results, not refused: $bad_lines"
    fi
}
before=$(sha256sum <"$M/config.json")
check_modify "read-only mount"
if mount -i -o remount,rw "$M" 2>/dev/null; then
    awk -v m="$M" '$2 == m { print $4 }' /proc/mounts | grep -q '^rw,' && ok "root remounted it rw (the daemon must refuse now)" ||
        bad "remount rw did not take"
    check_modify "remounted rw: the daemon itself"
else
    echo "skip: mount -o remount,rw refused (the daemon's own EROFS is then not reached)"
fi
if snap "$T/st" | cmp -s - "$T/snap.before" && [ "$(sha256sum <"$M/config.json")" = "$before" ]; then
    ok "the store is unchanged (bytes, sizes, modes, inodes, times) and the mount still serves"
else
    bad "the store or the mount changed"
fi

# ---- nothing outside the store ---------------------------------------------------------
if [ "$(realpath "$M/layers/..")" = "$M" ] && cmp -s "$M/layers/00/../../config.json" "$M/config.json" &&
    [ "$(stat -c %d "$M/..")" != "$(stat -c %d "$M")" ] && [ "$(stat -c %i "$M/..")" = "$(stat -c %i "$T/mnt")" ]; then
    ok ".. resolved by the kernel: mnt/layers/.. is mnt, mnt/.. is the host directory above the mount"
else
    bad ".. resolution: $(realpath "$M/layers/..")"
fi
odd=$(find "$M" ! -type f ! -type d | head -n 3)
[ -z "$odd" ] && ok "the tree holds only regular files and directories" || bad "the tree holds: $odd"
miss=0
for p in index.sqlite dense.bin ffn.bin ... '..%2f..' 'layers/00/..%2f..%2fdense.bin' 'tensors/..\..' \
    "layers/00/../../index.sqlite" "tensors/$(printf 'a\tb')"; do
    [ -e "$M/$p" ] && { bad "$p exists in the mount"; miss=1; }
done
[ $miss = 0 ] && ok "no raw store file and no odd name is found in the mount"
unmount_last() { timeout 60 bash "$MOUNT_SH" -u "${MOUNTS[-1]}" >/dev/null 2>&1 || bad "unmount ${MOUNTS[-1]}"; unset 'MOUNTS[-1]'; }
unmount_last

# mount_refused NAME STORE NEEDLE: mount.sh fails and says NEEDLE; nothing mounted
mount_refused() {
    local name=$1 store=$2 needle=$3 m=$T/mnt/refused
    mkdir -p "$m"
    if timeout 60 bash "$MOUNT_SH" "$store" "$m" >"$T/mount.out" 2>&1; then
        MOUNTS+=("$m")
        bad "$name: mounted"
        unmount_last
    elif ! grep -qF -- "$needle" "$T/mount.out"; then
        bad "$name: refused, but the message lacks '$needle': $(tail -n 3 "$T/mount.out")"
    else
        ok "$name: refused: $(grep -F -- "$needle" "$T/mount.out" | head -n 1)"
    fi
}
for name in '../../escape' '/abs' 'a/../../b' '..' ''; do
    rm -rf "$T/evil"
    cp -a "$T/st" "$T/evil"
    sqlite3 "$T/evil/index.sqlite" "UPDATE tensors SET name = '$name' WHERE name = 'model.norm.weight'"
    mount_refused "tensor named '$name'" "$T/evil" "bad path"
done
for name in '../escape.json' '/abs.json'; do
    rm -rf "$T/evil"
    cp -a "$T/st" "$T/evil"
    sqlite3 "$T/evil/index.sqlite" "UPDATE tokenizer_files SET name = '$name' WHERE name = 'tokenizer.json'"
    mount_refused "tokenizer file named '$name'" "$T/evil" "bad path"
done
[ -e "$T/escape" ] || [ -e "$T/mnt/escape" ] || [ -e "$T/escape.json" ] || [ -e "$T/mnt/escape.json" ] ||
    [ -e /abs ] || [ -e /abs.json ] && bad "a file appeared outside the store"

# symlinked store files: refused, naming the file; a symlinked store directory is fine
mkdir -p "$T/outside"
for f in index.sqlite dense.bin ffn.bin; do
    rm -rf "$T/sl"
    cp -a "$T/st" "$T/sl"
    mv "$T/sl/$f" "$T/outside/$f"
    ln -s "$T/outside/$f" "$T/sl/$f"
    mount_refused "store whose $f is a symlink" "$T/sl" "$f"
    if timeout 60 "$BIN/inflash-inspect" "$T/sl" >/dev/null 2>"$T/err"; then
        bad "inflash-inspect opens a store whose $f is a symlink"
    else
        grep -q "$f.*symlink" "$T/err" && ok "inflash-inspect refuses it: $(cat "$T/err")" ||
            bad "inflash-inspect's message: $(cat "$T/err")"
    fi
    rm -f "$T/outside/$f"
done
for f in index.sqlite dense.bin; do
    rm -rf "$T/sl"
    cp -a "$T/st" "$T/sl"
    rm "$T/sl/$f"
    mkfifo "$T/sl/$f"
    mount_refused "store whose $f is a FIFO" "$T/sl" "$f: not a regular file"
    timeout 20 "$BIN/inflash-inspect" "$T/sl" >/dev/null 2>"$T/err"
    [ $? = 1 ] && grep -q "$f: not a regular file" "$T/err" && ok "inflash-inspect refuses it at once" ||
        bad "inflash-inspect on a FIFO $f: $(cat "$T/err")"
done
ln -s "$T/st" "$T/st-link"
mkdir -p "$T/mnt/link"
if timeout 60 bash "$MOUNT_SH" "$T/st-link" "$T/mnt/link" >"$T/mount.out" 2>&1; then
    MOUNTS+=("$T/mnt/link")
    cmp -s "$T/mnt/link/tokenizer.json" "$STORIES/tokenizer.json" && ok "a symlinked store directory mounts" ||
        bad "symlinked store directory: wrong contents"
    unmount_last
else
    bad "a symlinked store directory does not mount: $(tail -n 2 "$T/mount.out")"
fi

# ---- private unless allow_other ------------------------------------------------------
mkdir -p "$T/mnt/plain"
mnt st
if ! as_nobody ls "$T/mnt/plain" >/dev/null 2>&1; then
    bad "user nobody cannot even list $T/mnt/plain (the test setup)"
elif as_nobody ls "$M" >/dev/null 2>"$T/err" || ! grep -q "Permission denied" "$T/err"; then
    bad "user nobody can list the default mount: $(cat "$T/err")"
elif as_nobody cat "$M/config.json" >/dev/null 2>"$T/err" || ! grep -q "Permission denied" "$T/err"; then
    bad "user nobody can read the default mount's config.json"
else
    ok "default mount: user nobody gets $(head -n 1 "$T/err" | sed 's/^cat: //')"
fi
unmount_last
mkdir -p "$T/mnt/shared"
if timeout 60 bash "$MOUNT_SH" "$T/st" "$T/mnt/shared" -o allow_other >"$T/mount.out" 2>&1; then
    MOUNTS+=("$T/mnt/shared")
    if as_nobody cat "$T/mnt/shared/config.json" | cmp -s - "$T/mnt/shared/config.json" &&
        as_nobody ls "$T/mnt/shared/layers" >/dev/null && ! as_nobody touch "$T/mnt/shared/config.json" 2>/dev/null; then
        ok "-o allow_other: user nobody reads the mount, and cannot write it"
    else
        bad "-o allow_other: user nobody cannot read it (or can write)"
    fi
    unmount_last
else
    bad "mount -o allow_other: $(tail -n 2 "$T/mount.out")"
fi

# ====================================================================================
# inflash-pack
# ====================================================================================
PACK=$BIN/inflash-pack
cp -r "$STORIES" "$T/src"
chmod -R u+w "$T/src"
mkdir -p "$T/src/sub"
ln -s "$T/src" "$T/src-link"
ln -s "$T/src/sub" "$T/into-src"
refused "OUT_DIR inside SRC_DIR" "inside SRC_DIR" "$T/src/out" -- "$PACK" "$T/src" "$T/src/out"
refused "OUT_DIR = SRC_DIR" "inside SRC_DIR" "" -- "$PACK" "$T/src" "$T/src" --force
refused "OUT_DIR inside SRC_DIR via .." "inside SRC_DIR" "$T/src/out" -- "$PACK" "$T/src" "$T/src/sub/../out"
refused "OUT_DIR = SRC_DIR/sub/.." "inside SRC_DIR" "" -- "$PACK" "$T/src" "$T/src/sub/.." --force
refused "OUT_DIR inside a symlinked SRC_DIR" "inside SRC_DIR" "$T/src/out" -- "$PACK" "$T/src-link" "$T/src-link/out"
refused "OUT_DIR under a symlink into SRC_DIR" "inside SRC_DIR" "$T/src/sub/out" -- "$PACK" "$T/src" "$T/into-src/out"
refused "OUT_DIR a symlink into SRC_DIR" "inside SRC_DIR" "" -- "$PACK" "$T/src" "$T/into-src" --force
timeout 300 "$PACK" "$STORIES" "$T/outer" >/dev/null 2>&1 || bad "pack outer"
cp -r "$T/src" "$T/outer/model"
refused "SRC_DIR inside the OUT_DIR --force replaces" "inside OUT_DIR" "" -- "$PACK" "$T/outer/model" "$T/outer" --force
[ -f "$T/outer/model/config.json" ] && [ -f "$T/outer/index.sqlite" ] || bad "SRC_DIR inside OUT_DIR: something was deleted"
[ -z "$(ls -A "$T/src/sub")" ] && [ ! -e "$T/src/out" ] || bad "something was written into SRC_DIR"

# symlinks leading outside SRC_DIR
timeout 300 "$PACK" "$OPT" "$T/ref-opt" >/dev/null 2>&1 || bad "pack opt"
timeout 300 "$PACK" "$STORIES" "$T/ref-st" >/dev/null 2>&1 || bad "pack stories"
# link_out MODEL NAME FILE...: $T/NAME, a copy of MODEL whose FILEs are symlinks to copies in $T/ext-NAME
link_out() {
    local model=$1 name=$2 f
    shift 2
    rm -rf "$T/$name" "$T/ext-$name"
    cp -r "$model" "$T/$name"
    chmod -R u+w "$T/$name"
    mkdir "$T/ext-$name"
    for f in "$@"; do
        mv "$T/$name/$f" "$T/ext-$name/$f"
        ln -s "$T/ext-$name/$f" "$T/$name/$f"
    done
}
# outside_case MODEL REF NAME FILE...: refused naming the first FILE, then
# packed with --follow-symlinks into the same store as REF
outside_case() {
    local model=$1 ref=$2 name=$3
    shift 3
    link_out "$model" "$name" "$@"
    refused "symlinked $* outside SRC_DIR" "$name/$1: a symlink to" "$T/o-$name" -- "$PACK" "$T/$name" "$T/o-$name"
    grep -q -- "--follow-symlinks" "$T/stderr" || bad "$name: the message does not name --follow-symlinks"
    if timeout 300 "$PACK" "$T/$name" "$T/o-$name" --follow-symlinks >/dev/null 2>"$T/err" &&
        [ "$(sums "$T/o-$name")" = "$(sums "$ref")" ]; then
        ok "... with --follow-symlinks: packed, the same store as the plain directory"
    else
        bad "$name --follow-symlinks: $(tail -n 1 "$T/err")"
    fi
}
outside_case "$STORIES" "$T/ref-st" st-config config.json
outside_case "$STORIES" "$T/ref-st" st-weights model.safetensors
outside_case "$STORIES" "$T/ref-st" st-tokenizer tokenizer.json
outside_case "$STORIES" "$T/ref-st" st-tokcfg tokenizer_config.json
outside_case "$OPT" "$T/ref-opt" opt-vocab vocab.json
outside_case "$OPT" "$T/ref-opt" opt-merges merges.txt
outside_case "$OPT" "$T/ref-opt" opt-special special_tokens_map.json
outside_case "$OPT" "$T/ref-opt" opt-gen generation_config.json

# a sharded checkpoint: the index and a shard
rm -rf "$T/sharded"
cp -r "$STORIES" "$T/sharded"
chmod -R u+w "$T/sharded"
mv "$T/sharded/model.safetensors" "$T/sharded/model-00001-of-00001.safetensors"
python3 - "$T/sharded" <<'EOF'
import json, struct, sys
d = sys.argv[1]
shard = "model-00001-of-00001.safetensors"
with open(f"{d}/{shard}", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
with open(f"{d}/model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {}, "weight_map": {k: shard for k in names}}, f)
EOF
timeout 300 "$PACK" "$T/sharded" "$T/o-sharded" >/dev/null 2>&1 && ok "sharded copy packs" || bad "sharded copy does not pack"
outside_case "$T/sharded" "$T/ref-st" sh-shard model-00001-of-00001.safetensors
outside_case "$T/sharded" "$T/ref-st" sh-index model.safetensors.index.json

# symlinks within SRC_DIR, a symlinked SRC_DIR: fine without the flag
rm -rf "$T/inside"
mkdir -p "$T/inside/real"
cp "$STORIES"/* "$T/inside/real/"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do ln -s "real/$f" "$T/inside/$f"; done
if timeout 300 "$PACK" "$T/inside" "$T/o-inside" >/dev/null 2>"$T/err" &&
    timeout 300 "$PACK" "$T/src-link" "$T/o-srclink" >/dev/null 2>>"$T/err"; then
    ok "symlinks within SRC_DIR and a symlinked SRC_DIR pack without --follow-symlinks"
else
    bad "symlinks within SRC_DIR: $(tail -n 1 "$T/err")"
fi

# a Hugging Face cache snapshot: every file a link into ../../blobs
R=$T/hub/models--org--opt
mkdir -p "$R/blobs" "$R/snapshots/0123abc"
for f in "$OPT"/*; do
    h=$(sha256sum "$f" | cut -c1-40)
    cp "$f" "$R/blobs/$h"
    ln -s "../../blobs/$h" "$R/snapshots/0123abc/$(basename "$f")"
done
refused "Hugging Face cache snapshot" "Hugging Face cache" "$T/o-hf" -- "$PACK" "$R/snapshots/0123abc" "$T/o-hf"
if timeout 300 "$PACK" "$R/snapshots/0123abc" "$T/o-hf" --follow-symlinks >/dev/null 2>"$T/err"; then
    ok "... packs with --follow-symlinks"
else
    bad "HF snapshot with --follow-symlinks: $(tail -n 1 "$T/err")"
fi
# a FIFO or a device in place of a file: refused at once, never opened
rm -rf "$T/fifo"
cp -r "$STORIES" "$T/fifo"
chmod -R u+w "$T/fifo"
for f in config.json model.safetensors tokenizer.json; do
    mv "$T/fifo/$f" "$T/fifo/$f.real"
    mkfifo "$T/fifo/$f"
    refused "$f a FIFO" "$f: not a regular file" "$T/o-fifo" -- "$PACK" "$T/fifo" "$T/o-fifo"
    rm "$T/fifo/$f"
    mv "$T/fifo/$f.real" "$T/fifo/$f"
done
mv "$T/fifo/config.json" "$T/fifo/config.json.real"
ln -s /dev/zero "$T/fifo/config.json"
refused "config.json a link to /dev/zero, --follow-symlinks" "config.json: not a regular file" "$T/o-fifo" -- \
    "$PACK" "$T/fifo" "$T/o-fifo" --follow-symlinks
"$PACK" --help | grep -q -- "--follow-symlinks" && ok "inflash-pack --help documents --follow-symlinks" ||
    bad "--help lacks --follow-symlinks"

e2e_finish e2e_security
