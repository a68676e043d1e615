#!/usr/bin/env python3
"""randread.py: random reads through an inflashfs mount, for the concurrency
and lifetime tests (e2e_concurrency.sh, e2e_lifetime.sh).

usage: randread.py MOUNT READS [--threads K] [--seed S] [--max-len B]
                   [--ref DIR] [--rss-pid PID --rss-at N,N,...]

The reference bytes of each layers/NN/ffn are DIR/layers/NN/ffn, or without
--ref the file read whole first, alone, through the mount. Then READS
preads (0: until a read fails) spread over K threads: a random neuron file,
offset and length (1 byte .. B, biased to small and to whole neurons), each
compared with the reference; every 50th operation instead opens, reads and
closes stats, stats.json (parsed), a neurons.tsv or a tensor. With
--rss-pid, prints the VmRSS of PID when the count of finished reads reaches
each N: "rss READS KB".

Prints "reading" once the files are open, then at the end "reads N bytes B
mismatches M" and exits 0; 1 after a mismatch; 2 after a read error ("read
error: ..." first); 3 on a usage error.
"""
import errno
import json
import os
import random
import sys
import threading


def usage(msg):
    print("randread.py: " + msg, file=sys.stderr)
    sys.exit(3)


def parse(argv):
    opts = {"threads": 4, "seed": 1, "max_len": 256 << 10, "rss_pid": 0, "rss_at": [], "ref": None}
    pos = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--threads", "--seed", "--max-len", "--rss-pid", "--rss-at", "--ref"):
            if i + 1 >= len(argv):
                usage(a + " needs a value")
            v = argv[i + 1]
            i += 2
            try:
                if a == "--ref":
                    opts["ref"] = v
                elif a == "--rss-at":
                    opts["rss_at"] = sorted(int(x) for x in v.split(","))
                else:
                    opts[a[2:].replace("-", "_")] = int(v)
            except ValueError:
                usage("%s %s: not a number" % (a, v))
        elif a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        else:
            pos.append(a)
            i += 1
    if len(pos) != 2:
        usage("need MOUNT and READS")
    return pos[0], int(pos[1]), opts


def vmrss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main():
    mnt, total, o = parse(sys.argv[1:])
    try:
        return run(mnt, total, o)
    except OSError as e:     # the mount went away before the reads began
        print("read error: %s (%s) while starting" % (e.strerror, errno.errorcode.get(e.errno, e.errno)), flush=True)
        return 2


def run(mnt, total, o):
    layers = sorted(d for d in os.listdir(os.path.join(mnt, "layers")))
    files = [os.path.join(mnt, "layers", d, "ffn") for d in layers]
    tsvs = [os.path.join(mnt, "layers", d, "neurons.tsv") for d in layers]
    tensors = [os.path.join(mnt, "tensors", t) for t in sorted(os.listdir(os.path.join(mnt, "tensors")))]
    ref = []
    for d, p in zip(layers, files):
        if o["ref"]:
            p = os.path.join(o["ref"], "layers", d, "ffn")
        with open(p, "rb", buffering=0) as f:
            ref.append(f.read())
    # neuron (bundle) size: the file size over the neuron count of neurons.tsv
    with open(tsvs[0]) as f:
        bundle = len(ref[0]) // max(1, sum(1 for _ in f))
    fds = [os.open(p, os.O_RDONLY) for p in files]
    print("reading", flush=True)

    lock = threading.Lock()
    state = {"started": 0, "done": 0, "bytes": 0, "bad": 0, "err": None}
    rss_at = list(o["rss_at"])

    def side_read(rng):
        """open, read whole, close a generated file or a tensor"""
        kind = rng.randrange(4)
        p = [os.path.join(mnt, "stats"), os.path.join(mnt, "stats.json"), rng.choice(tsvs), rng.choice(tensors)][kind]
        with open(p, "rb", buffering=0) as f:
            data = f.read()
        if kind == 1:
            json.loads(data)
        return len(data)

    def worker(tid):
        rng = random.Random(o["seed"] * 1000 + tid)
        while True:
            with lock:
                if state["err"] is not None or (total > 0 and state["started"] >= total):
                    return
                state["started"] += 1
                n = state["started"]
            try:
                if n % 50 == 0:
                    got = side_read(rng)
                    good = True
                else:
                    li = rng.randrange(len(files))
                    size = len(ref[li])
                    shape = rng.randrange(4)
                    if shape == 0:      # whole neurons
                        k = rng.randrange(size // bundle)
                        off, ln = k * bundle, bundle * rng.randint(1, max(1, min(64, o["max_len"] // bundle)))
                    elif shape == 1:    # tiny
                        off, ln = rng.randrange(size), rng.randint(1, 64)
                    else:               # anything, may run past the end
                        off, ln = rng.randrange(size), rng.randint(1, o["max_len"])
                    data = os.pread(fds[li], ln, off)
                    got = len(data)
                    good = data == ref[li][off:off + ln]
            except OSError as e:
                with lock:
                    if state["err"] is None:
                        state["err"] = "%s (%s)" % (e.strerror, errno.errorcode.get(e.errno, e.errno))
                return
            except ValueError as e:     # stats.json not JSON
                good, got = False, 0
                print("bad stats.json: %s" % e, file=sys.stderr)
            with lock:
                state["done"] += 1
                state["bytes"] += got
                if not good:
                    state["bad"] += 1
                    if state["bad"] <= 5:
                        print("mismatch in read %d" % n, file=sys.stderr)
                while rss_at and o["rss_pid"] and state["done"] >= rss_at[0]:
                    print("rss %d %d" % (rss_at.pop(0), vmrss_kb(o["rss_pid"])), flush=True)

    th = [threading.Thread(target=worker, args=(t,)) for t in range(o["threads"])]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if state["err"] is not None:
        print("read error: %s after %d reads" % (state["err"], state["done"]), flush=True)
    print("reads %d bytes %d mismatches %d" % (state["done"], state["bytes"], state["bad"]), flush=True)
    return 2 if state["err"] is not None else 1 if state["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
