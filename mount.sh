#!/usr/bin/env bash
# mount.sh: start, stop and list inflashfs mounts of inflash stores.
#   ./mount.sh STORE_DIR MOUNTPOINT [-o OPTIONS]   mount (daemon in the background)
#   ./mount.sh -u MOUNTPOINT                      unmount and wait for the daemon
#   ./mount.sh --status                           list inflashfs mounts
set -u

prog=mount.sh
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wait_s=${INFLASH_MOUNT_TIMEOUT:-10}

usage() {
    cat <<EOF
usage: ./$prog STORE_DIR MOUNTPOINT [-o OPTION[,OPTION...]]
       ./$prog -u MOUNTPOINT
       ./$prog --status
       ./$prog --help

Mount an inflash store (made by inflash-pack) read-only with inflashfs:
MOUNTPOINT gets config.json, the tokenizer files, tensors/<name>,
layers/NN/ffn, layers/NN/neurons.tsv, stats and stats.json.

The mount point is created if needed; a mount point that is already mounted
is refused. The daemon runs in the background and logs to
<parent of MOUNTPOINT>/.inflashfs-<name>.log (or \$XDG_RUNTIME_DIR, /tmp);
$prog waits up to ${wait_s}s (INFLASH_MOUNT_TIMEOUT) for the mount to answer.

options (-o, comma-separated, may be repeated):
  chunk=SIZE      store read unit, power of two 4k..4m
  cache=SIZE      chunk cache budget (e.g. 256m)
  readahead=N     chunks read ahead after each request
  threads=N       FUSE worker threads
  allow_other     let other users read the mount (default: only you)
  see 'inflashfs --help' for the rest
SIZE: bytes, or a number with a k, m, g or t suffix (powers of 1024;
fractions allowed: 1.5m).

-u MOUNTPOINT     unmount (fusermount3 -u) and wait until the daemon exits;
                  a busy mount is detached at once (fusermount3 -u -z), its
                  open files get ${wait_s}s to close, then the daemon is
                  stopped and their reads fail
--status          list inflashfs mounts: mount point, store, daemon pid

The inflashfs binary is \$INFLASH_BIN/inflashfs if INFLASH_BIN is set, else
$here/build/bin/inflashfs, else inflashfs from PATH.
Exit status: 0 ok, 1 failure, 2 usage error.
EOF
}

die() { echo "$prog: $*" >&2; exit 1; }
usage_error() { echo "$prog: $*" >&2; echo "try: ./$prog --help" >&2; exit 2; }

find_bin() {
    if [ -n "${INFLASH_BIN:-}" ]; then
        if [ -d "$INFLASH_BIN" ] && [ -x "$INFLASH_BIN/inflashfs" ]; then echo "$INFLASH_BIN/inflashfs"; return 0; fi
        if [ -f "$INFLASH_BIN" ] && [ -x "$INFLASH_BIN" ]; then echo "$INFLASH_BIN"; return 0; fi
        die "INFLASH_BIN=$INFLASH_BIN: no inflashfs there"
    fi
    if [ -x "$here/build/bin/inflashfs" ]; then echo "$here/build/bin/inflashfs"; return 0; fi
    command -v inflashfs && return 0
    die "inflashfs not found: build it (cmake --build build --target inflashfs) or set INFLASH_BIN"
}

# Absolute path without needing the path to answer (a dead mount does not).
abspath() {
    realpath -m -- "$1" 2>/dev/null || realpath -s -m -- "$1"
}

# /proc/mounts escapes space, tab, newline and backslash as octal.
mounts_escape() {
    local s=$1
    s=${s//\\/\\134}; s=${s// /\\040}; s=${s//$'\t'/\\011}; s=${s//$'\n'/\\012}
    printf '%s' "$s"
}
mounts_unescape() { printf '%b' "$1"; }

# The /proc/mounts line of a mount point ("" if not mounted).
mount_line() {
    local esc
    esc=$(mounts_escape "$1")
    awk -v m="$esc" '$2 == m { line = $0 } END { if (line != "") print line }' /proc/mounts
}

# The pid of the inflashfs daemon serving a mount point ("" if none).
find_pid() {
    local mnt=$1 p args a
    for p in /proc/[0-9]*; do
        [ -r "$p/cmdline" ] || continue
        mapfile -d '' args 2>/dev/null <"$p/cmdline" || continue
        [ "${#args[@]}" -ge 3 ] || continue
        [ "$(basename -- "${args[0]}")" = inflashfs ] || continue
        for a in "${args[@]:1}"; do
            if [ "$a" = "$mnt" ]; then echo "${p#/proc/}"; return 0; fi
        done
    done
    return 0
}

do_status() {
    local found=0 dev mnt type rest store pid state
    while read -r dev mnt type rest; do
        [ "$type" = fuse.inflashfs ] || continue
        found=1
        mnt=$(mounts_unescape "$mnt"); store=$(mounts_unescape "$dev")
        pid=$(find_pid "$mnt")
        if timeout 2 test -r "$mnt/config.json" 2>/dev/null; then state=ok; else state="not answering"; fi
        printf '%s\tstore %s\tpid %s\t%s\n' "$mnt" "$store" "${pid:--}" "$state"
    done < /proc/mounts
    [ "$found" = 1 ] || echo "no inflashfs mounts"
}

do_unmount() {
    local mnt pid i
    local line
    mnt=$(abspath "$1")
    line=$(mount_line "$mnt")
    [ -n "$line" ] || die "$mnt is not mounted"
    [ "$(echo "$line" | awk '{print $3}')" = fuse.inflashfs ] || die "$mnt is not an inflashfs mount"
    pid=$(find_pid "$mnt")
    local um=(umount) lazy=(umount -l) busy=0
    if command -v fusermount3 >/dev/null; then um=(fusermount3 -u); lazy=(fusermount3 -u -z); fi
    if ! timeout 10 "${um[@]}" "$mnt" 2>/dev/null; then
        # busy (files open under it): detach it now so that nothing new
        # opens, give the open files wait_s to close, then stop the daemon:
        # their reads then fail (ENOTCONN) instead of hanging
        timeout 10 "${lazy[@]}" "$mnt" || die "cannot unmount $mnt"
        busy=1
    fi
    if [ -n "$pid" ]; then
        for ((i = 0; i < wait_s * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            [ "$busy" = 1 ] || die "daemon $pid did not exit within ${wait_s}s after the unmount; sent SIGTERM"
            for ((i = 0; i < wait_s * 10; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && die "daemon $pid did not exit within ${wait_s}s of SIGTERM"
            echo "$prog: files under $mnt were still open after ${wait_s}s: stopped the daemon (their reads now fail)" >&2
        fi
    fi
    echo "unmounted $mnt"
}

do_mount() {
    local store=$1 mnt=$2 opts=$3 bin line logdir log pid i name
    [ -d "$store" ] || die "$store: not a directory"
    store=$(abspath "$store")
    mnt=$(abspath "$mnt")
    line=$(mount_line "$mnt")
    if [ -n "$line" ]; then
        die "$mnt is already a mount point ($(echo "$line" | awk '{print $3}') of $(mounts_unescape "$(echo "$line" | awk '{print $1}')")); unmount it first: ./$prog -u $mnt"
    fi
    mkdir -p -- "$mnt" || die "$mnt: cannot create the mount point"
    [ -d "$mnt" ] || die "$mnt: not a directory"
    bin=$(find_bin) || exit 1
    # one mount.sh at a time per mount point (the lock is not inherited by the daemon)
    exec 9<"$mnt" || die "$mnt: cannot open"
    flock -n 9 || die "$mnt: another $prog is mounting it right now"
    [ -z "$(mount_line "$mnt")" ] || die "$mnt is already a mount point"

    name=$(basename -- "$mnt")
    logdir=$(dirname -- "$mnt")
    [ -w "$logdir" ] || logdir=${XDG_RUNTIME_DIR:-/tmp}
    log="$logdir/.inflashfs-$name.log"
    : >>"$log" 2>/dev/null || { log="${XDG_RUNTIME_DIR:-/tmp}/inflashfs-$name.$$.log"; : >>"$log" || die "cannot write a log file"; }
    echo "--- $(date '+%F %T') $bin $store $mnt${opts:+ -o $opts}" >>"$log"

    if [ -n "$opts" ]; then
        setsid "$bin" "$store" "$mnt" -f -o "$opts" </dev/null >>"$log" 2>&1 9<&- &
    else
        setsid "$bin" "$store" "$mnt" -f </dev/null >>"$log" 2>&1 9<&- &
    fi
    pid=$!
    for ((i = 0; i < wait_s * 10; i++)); do
        if [ -n "$(mount_line "$mnt")" ] && timeout 2 head -c 1 -- "$mnt/config.json" >/dev/null 2>&1; then
            pid=$(find_pid "$mnt"); pid=${pid:-$!}
            echo "mounted $store on $mnt (inflashfs pid $pid, log $log)"
            echo "unmount with: $here/$prog -u $mnt"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null && [ -z "$(mount_line "$mnt")" ]; then
            # the daemon exited without mounting: its last words say why
            awk '/^--- /{ buf = ""; next } { buf = buf $0 "\n" } END { printf "%s", buf }' "$log" | tail -n 5 >&2
            die "inflashfs failed to mount $store (log: $log)"
        fi
        sleep 0.1
    done
    echo "$prog: $mnt did not answer within ${wait_s}s; stopping the daemon (log: $log)" >&2
    [ -z "$(mount_line "$mnt")" ] || timeout 10 fusermount3 -u "$mnt" 2>/dev/null
    kill -TERM "$pid" 2>/dev/null
    exit 1
}

main() {
    [ $# -gt 0 ] || usage_error "missing arguments"
    case "$1" in
    -h|--help) usage; exit 0 ;;
    --status) [ $# -eq 1 ] || usage_error "--status takes no arguments"; do_status; exit 0 ;;
    -u) [ $# -eq 2 ] || usage_error "-u takes exactly one MOUNTPOINT"; do_unmount "$2"; exit 0 ;;
    -*) usage_error "unknown option $1" ;;
    esac
    local pos=() opts=""
    while [ $# -gt 0 ]; do
        case "$1" in
        -o) [ $# -ge 2 ] || usage_error "-o needs a value"; opts="${opts:+$opts,}$2"; shift 2 ;;
        -o*) opts="${opts:+$opts,}${1#-o}"; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage_error "unknown option $1" ;;
        *) pos+=("$1"); shift ;;
        esac
    done
    [ "${#pos[@]}" -eq 2 ] || usage_error "need STORE_DIR and MOUNTPOINT"
    do_mount "${pos[0]}" "${pos[1]}" "$opts"
}

main "$@"
