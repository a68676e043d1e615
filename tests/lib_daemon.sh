# tests/lib_daemon.sh: runs inflashfs as a child of the test script, for the
# concurrency and lifetime tests (e2e_concurrency.sh, e2e_lifetime.sh), so
# that they can see its exit status and its sanitizer reports. Sourced after
# tests/lib.sh. The daemon is $INFLASH_DAEMON if set (the ThreadSanitizer
# build: ctest's *_tsan tests), else $INFLASH_BIN/inflashfs (the
# ASan+UBSan build of the test suite).

# daemon_setup: DAEMON_CMD (the command; for ThreadSanitizer under
# `setarch -R` where allowed) and SAN (asan, tsan or none);
# TSAN_OPTIONS/ASAN_OPTIONS make any report fatal.
# The script stops if the daemon cannot run at all.
daemon_setup() {
    local bin=${INFLASH_DAEMON:-$INFLASH_BIN/inflashfs}
    [ -x "$bin" ] || { bad "no daemon at $bin"; exit 1; }
    SAN=none
    if nm -D "$bin" 2>/dev/null | grep -q __tsan_init || ldd "$bin" 2>/dev/null | grep -q libtsan; then
        SAN=tsan
        export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
    elif ldd "$bin" 2>/dev/null | grep -q libasan; then
        SAN=asan
        export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
    fi
    DAEMON_CMD=("$bin")
    # ThreadSanitizer of gcc 12 maps fixed ranges that a wide
    # vm.mmap_rnd_bits (32 on some newer kernels) can overlap, at random:
    # "FATAL: ThreadSanitizer: unexpected memory mapping". Without address
    # randomisation it always fits; personality() may be refused (Docker's
    # default seccomp profile), then the daemon runs as it is.
    if [ "$SAN" = tsan ] && setarch "$(uname -m)" -R true 2>/dev/null; then
        DAEMON_CMD=(setarch "$(uname -m)" -R "$bin")
    fi
    if ! "${DAEMON_CMD[@]}" --help >"$T/daemon-probe.log" 2>&1; then
        bad "the daemon ($SAN) does not start: $(head -n 3 "$T/daemon-probe.log")"
        [ "$SAN" = tsan ] && echo "(ThreadSanitizer needs setarch -R (container: --privileged or --security-opt seccomp=unconfined) or sysctl vm.mmap_rnd_bits=28)"
        exit 1
    fi
    echo "# daemon: ${DAEMON_CMD[*]} ($SAN)"
}

declare -A DPID

# daemon_start NAME OPTIONS: mount the store $T/NAME at $T/mnt/NAME with
# -o OPTIONS, the daemon's output in $T/daemon-NAME.log; the script stops if
# it does not answer within 60 s.
daemon_start() {
    local name=$1 opts=$2 m=$T/mnt/$1 i
    mkdir -p "$m"
    "${DAEMON_CMD[@]}" "$T/$name" "$m" -f -o "$opts" </dev/null >"$T/daemon-$name.log" 2>&1 &
    DPID[$name]=$!
    MOUNTS+=("$m")
    for ((i = 0; i < 600; i++)); do
        if mountpoint -q "$m" && timeout 5 head -c 1 "$m/config.json" >/dev/null 2>&1; then
            ok "daemon $name ($SAN, -o $opts) mounted, pid ${DPID[$name]}"
            return 0
        fi
        kill -0 "${DPID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    bad "daemon $name did not mount: $(tail -n 3 "$T/daemon-$name.log")"
    exit 1
}

# daemon_alive NAME: 0 if the daemon runs and its mount answers.
daemon_alive() {
    kill -0 "${DPID[$1]}" 2>/dev/null && timeout 10 cat "$T/mnt/$1/stats" >/dev/null 2>&1
}

# daemon_reports NAME: the sanitizer report lines of the daemon's log.
daemon_reports() {
    grep -E 'ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|ThreadSanitizer: reported|runtime error:|SUMMARY: [A-Za-z]+Sanitizer' \
        "$T/daemon-$1.log"
}

# daemon_stop NAME [ENV...]: unmount with mount.sh -u (ENV: its environment,
# e.g. INFLASH_MOUNT_TIMEOUT=3), check that it succeeds, then daemon_end.
daemon_stop() {
    local name=$1 rc
    shift
    env "$@" timeout 120 bash "$MOUNT_SH" -u "$T/mnt/$name" >"$T/umount-$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        ok "$name: mount.sh -u done: $(tr '\n' ' ' <"$T/umount-$name.log")"
    else
        bad "$name: mount.sh -u: exit $rc: $(tr '\n' ' ' <"$T/umount-$name.log")"
    fi
    daemon_end "$name"
}

# daemon_end NAME: the daemon was told to go (unmount, signal): check that
# it exits within 60 s with status 0 and no sanitizer report, leaving no
# mount behind.
daemon_end() {
    local name=$1 m=$T/mnt/$1 pid=${DPID[$1]} i st x
    for ((i = 0; i < 600; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        bad "$name: the daemon did not exit within 60 s; killing it"
        timeout 10 fusermount3 -u -z "$m" 2>/dev/null
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid"
    st=$?
    if [ $st -eq 0 ]; then ok "$name: daemon exit status 0"; else bad "$name: daemon exit status $st"; fi
    if daemon_reports "$name" >/dev/null; then
        bad "$name: sanitizer reports in the daemon's log:"
        sed -n '1,80p' "$T/daemon-$name.log"
    else
        ok "$name: no sanitizer report ($SAN)"
    fi
    if mountpoint -q "$m"; then bad "$name: $m is still a mount point"; else ok "$name: no mount left"; fi
    local keep=()
    for x in "${MOUNTS[@]}"; do [ "$x" = "$m" ] || keep+=("$x"); done
    MOUNTS=("${keep[@]}")
}

# daemon_must_live NAME WHEN: if the daemon has died, say so with its
# sanitizer report (ThreadSanitizer stops it at the first race) and end the
# script: everything after would only fail for the same reason.
daemon_must_live() {
    kill -0 "${DPID[$1]}" 2>/dev/null && return 0
    wait "${DPID[$1]}"
    bad "$2: the daemon $1 died (status $?); its log from the first report:"
    awk '/Sanitizer|runtime error:/ { on = 1 } on && n++ < 60' "$T/daemon-$1.log"
    e2e_finish "$(basename "$0" .sh)"
}

# daemon_stat NAME KEY: one value of the mount's stats file.
daemon_stat() {
    timeout 10 awk -v k="$2" '$1 == k { print $2 }' "$T/mnt/$1/stats"
}
