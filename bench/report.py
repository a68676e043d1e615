#!/usr/bin/env python3
"""bench/report.py: turns one bench/run.sh run (per store dtype, in RUN/DTYPE/:
the store's settings.json, the client's --stats JSON of each configuration,
the cgroup and daemon peaks and the quality run; in RUN/: the device curve and
the activation statistics) into the benchmark table: printed, and written as
results.json, results.md and the data files bench/plot.gp draws (latency.dat,
bandwidth.dat). With one dtype, results.json has the shape it had before
stores had dtypes; with several, the first dtype's figures stay at the top
level and every dtype's are under "dtypes". bench/warm_report.py uses the
table and target helpers."""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys

CONFIGS = [
    ("naive", "naive: dense, whole FFN through the mount every token"),
    ("mmap", "mmap: dense from the store files under the cgroup cap (page cache only)"),
    ("inflash", "inflash: predict + window, bundles through the mount"),
    ("direct", "inflash direct: the same from the store, no FUSE"),
]


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_num(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def mib(b):
    return None if b is None else b / 1048576.0


def fmt(v, spec="%.1f", none="-"):
    return none if v is None else spec % v


def config_figures(run, name):
    st = load(os.path.join(run, name + ".json"))
    if not st:
        return None
    gen = [r for r in st.get("per_token", []) if r.get("kind") == "gen"]
    ms = [r["ms"] for r in gen]
    f = {
        "tokens": len(gen),
        "ms_median": statistics.median(ms) if ms else None,
        "ms_p90": pct(ms, 0.9),
        "ms_mean": st.get("ms_per_token"),
        "io_ms": st.get("io_ms_per_token"),
        "compute_ms": st.get("compute_ms_per_token"),
        "bytes_per_token": st.get("ffn_bytes_read_per_token"),
        "ffn_fraction": st.get("ffn_fraction_read_per_token"),
        "ffn_fraction_after_warmup": st.get("ffn_fraction_read_per_token_after_warmup"),
        "prefill_ms": st.get("prefill_ms"),
        "client_peak": st.get("resident_bytes_peak"),
        "model_resident": st.get("model_resident_bytes"),
        "daemon_peak": read_num(os.path.join(run, name + ".daemon_hwm")),
        "cgroup_peak": read_num(os.path.join(run, name + ".cg_peak")),
        "read_requests_per_token": st.get("read_requests_per_token"),
        "neurons_predicted_per_token": st.get("neurons_predicted_per_token"),
        "neurons_loaded_per_token": st.get("neurons_loaded_per_token"),
        "neurons_resident_per_token": st.get("neurons_resident_per_token"),
        "window_shrinks": st.get("window_shrinks"),
        "overflows": st.get("overflows"),
        "capacity_per_layer": st.get("capacity_per_layer"),
        "mode": st.get("mode"),
        "source": st.get("source"),
    }
    f["peak"] = (f["client_peak"] or 0) + (f["daemon_peak"] or 0) if f["client_peak"] is not None else None
    ids = None
    try:
        with open(os.path.join(run, name + ".out")) as fo:
            for line in fo:
                if line.startswith("ids:"):
                    ids = line.split()[1:]
    except OSError:
        pass
    f["ids"] = ids
    ds = load(os.path.join(run, name + ".daemon_stats.json"))
    if ds:
        f["daemon_stats"] = ds
    return f


def device_figures(run):
    d = load(os.path.join(run, "device.json"))
    if not d or not d.get("points"):
        return None
    best = max(d["points"], key=lambda p: p["mb_per_s"])
    return {"points": d["points"], "best": best, "file": d.get("file")}


def bw_at(dev, size, qd):
    """MB/s at the measured point nearest to (size, qd) (log distance)."""
    import math
    pts = dev["points"]
    return min(pts, key=lambda p: (abs(math.log2(p["size"] / max(size, 1))), abs(math.log2(p["qd"] / max(qd, 1)))))


def target(v, lim, op):
    """a target's record: the measured value, its limit, and whether it is met"""
    ok = None if v is None else (v >= lim if op == ">=" else v <= lim)
    return {"value": v, "limit": lim, "op": op, "met": ok}


def target_line(k, v):
    return "target: %-50s %s (limit %s %s)%s" % (
        k, fmt(v["value"], "%.3g"), v["op"], v["limit"],
        "" if v["met"] is None else ("  MET" if v["met"] else "  MISSED"))


def target_md(targets):
    md = ["| target | measured | limit | |", "|---|---|---|---|"]
    for k, v in targets.items():
        md.append("| %s | %s | %s %s | %s |" % (k, fmt(v["value"], "%.3g"), v["op"], v["limit"],
                                                "" if v["met"] is None else ("met" if v["met"] else "**missed**")))
    return md


def table_md(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def table_txt(head, rows):
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w[i]) for i, c in enumerate(r))
    return "\n".join([line(head), line(["-" * x for x in w])] + [line(r) for r in rows])


def dtype_figures(rd, dev, readers):
    """One dtype's configurations (with speed-ups and device multiples), its
    targets, FFN bytes and quality, from its run folder rd."""
    cfg = {}
    for name, _ in CONFIGS:
        f = config_figures(rd, name)
        if f:
            cfg[name] = f
    ffn_total = None
    for f in cfg.values():
        if f["bytes_per_token"] and f["ffn_fraction"]:
            ffn_total = f["bytes_per_token"] / f["ffn_fraction"]

    base_naive = cfg.get("naive", {}).get("ms_median")
    base_mmap = cfg.get("mmap", {}).get("ms_median")
    for name, f in cfg.items():
        m = f["ms_median"]
        f["speedup_vs_naive"] = base_naive / m if base_naive and m else None
        f["speedup_vs_mmap"] = base_mmap / m if base_mmap and m else None
        f["device_ms"] = f["device_multiple"] = None
        if dev and f["bytes_per_token"]:
            best = dev["best"]["mb_per_s"] * 1e6
            f["device_ms"] = f["bytes_per_token"] / best * 1e3
            if f["io_ms"] is not None and f["device_ms"] > 0:
                f["device_multiple"] = f["io_ms"] / f["device_ms"]
            rr = f.get("read_requests_per_token")
            if rr:
                size = f["bytes_per_token"] / rr
                p = bw_at(dev, size, readers)
                f["mean_read_bytes"] = size
                f["device_ms_at_read_size"] = f["bytes_per_token"] / (p["mb_per_s"] * 1e6) * 1e3
                f["device_point_at_read_size"] = p

    targets = {}
    if "inflash" in cfg:
        i = cfg["inflash"]
        targets["inflash >= 8x faster than naive"] = target(i["speedup_vs_naive"], 8.0, ">=")
        targets["inflash >= 5x faster than mmap"] = target(i["speedup_vs_mmap"], 5.0, ">=")
        if "direct" in cfg and cfg["direct"]["ms_median"]:
            targets["mount within 10% of direct (ratio)"] = target(
                i["ms_median"] / cfg["direct"]["ms_median"] if i["ms_median"] else None, 1.10, "<=")
        frac = i["ffn_fraction"]
        targets["FFN bytes read per token <= 2.5% of the FFN"] = target(
            frac * 100 if frac is not None else None, 2.5, "<=")
        targets["I/O time <= 1.5x the device limit"] = target(i["device_multiple"], 1.5, "<=")
    qual = load(os.path.join(rd, "quality.json"))
    qual = qual and {k: qual.get(k) for k in ("perplexity", "dense_perplexity", "top1_agreement", "tokens",
                                              "ffn_fraction_read_per_token",
                                              "ffn_fraction_read_per_token_after_warmup", "window")}
    return {"settings": load(os.path.join(rd, "settings.json")) or {}, "configs": cfg, "targets": targets,
            "ffn_bytes": ffn_total, "quality": qual}


def across_dtypes(per):
    """The targets comparing dtypes: inflash's speed-up and FFN bytes of q4_0
    against f16 (when both ran)."""
    t = {}
    i16 = per.get("f16", {}).get("configs", {}).get("inflash")
    i4 = per.get("q4_0", {}).get("configs", {}).get("inflash")
    if i16 and i4:
        m16, m4 = i16["ms_median"], i4["ms_median"]
        b16, b4 = i16["bytes_per_token"], i4["bytes_per_token"]
        t["inflash q4_0 >= 2.5x faster per token than f16"] = target(m16 / m4 if m16 and m4 else None, 2.5, ">=")
        t["FFN bytes read per token q4_0 / f16 <= 0.3"] = target(b4 / b16 if b16 and b4 is not None else None,
                                                                0.3, "<=")
    return t


def config_row(name, f):
    peak = f["peak"]
    peak_s = "%.0f MiB" % mib(peak) if peak is not None else "-"
    if name == "mmap" and f["cgroup_peak"]:
        peak_s += " (cgroup %.0f)" % mib(f["cgroup_peak"])
    elif f.get("daemon_peak"):
        peak_s += " (daemon %.0f)" % mib(f["daemon_peak"])
    return [name, fmt(f["ms_median"]), fmt(f["ms_p90"]), fmt(f["io_ms"]), fmt(f["compute_ms"]),
            "%.1f MB" % (f["bytes_per_token"] / 1e6) if f["bytes_per_token"] is not None else "-",
            fmt(f["ffn_fraction"] * 100 if f["ffn_fraction"] is not None else None, "%.2f"),
            peak_s, fmt(f["speedup_vs_naive"], "%.2fx"), fmt(f["speedup_vs_mmap"], "%.2fx"),
            fmt(f["device_multiple"], "%.2fx") if name in ("inflash", "direct") else ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtypes", required=True, help="comma-separated: the folders of --run, in table order")
    ap.add_argument("--shape", required=True)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--window", type=int, required=True)
    ap.add_argument("--threshold-shift", type=float, default=0.0)
    ap.add_argument("--prompt", type=int, required=True)
    ap.add_argument("--gen", type=int, required=True)
    ap.add_argument("--dense-gen", type=int, required=True)
    ap.add_argument("--cgroup", default="")
    ap.add_argument("--readers", type=int, default=16)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    dtypes = a.dtypes.split(",")
    multi = len(dtypes) > 1
    dev = device_figures(a.run)
    act = load(os.path.join(a.run, "actstats.json"))
    per = {dt: dtype_figures(os.path.join(a.run, dt), dev, a.readers) for dt in dtypes}
    first = per[dtypes[0]]
    st0 = first["settings"]
    cfg, targets, qual = first["configs"], first["targets"], first["quality"]
    # with several dtypes every dtype's own targets, named by dtype, then the comparisons
    all_targets = dict(targets) if not multi else {
        "%s: %s" % (dt, k): v for dt in dtypes for k, v in per[dt]["targets"].items()}
    cross = across_dtypes(per)
    all_targets.update(cross)

    label = a.shape + (" (%d layers)" % a.layers if a.layers else "")
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "model": {
            "shape": a.shape, "layers_override": a.layers, "store": st0.get("store"), "synthetic": True,
            "dtype": dtypes[0], "store_bytes": st0.get("model_bytes"), "ffn_bytes": first["ffn_bytes"],
        },
        "settings": {
            "prompt_positions": a.prompt, "generated_tokens": a.gen, "dense_generated_tokens": a.dense_gen,
            "window": a.window, "threshold_shift": a.threshold_shift, "budget_bytes": st0.get("budget"),
            "client_budget_mib": st0.get("client_mib"),
            "daemon_cache_mib": st0.get("daemon_mib"), "mount_options": st0.get("mount_opts"), "cgroup": a.cgroup,
            "sampling": "-t 1 --top-p 1 --seed 1", "readers": a.readers, "quick": a.quick,
        },
        "configs": cfg, "device": dev, "targets": targets,
        "activation_stats": act and {k: act[k] for k in ("mean", "layers", "run", "prompt_positions",
                                                          "gen_positions") if k in act},
        "quality": qual,
    }
    if multi:
        res["dtypes"] = per
        res["dtype_targets"] = cross

    # ---- the table ----
    head = (["dtype"] if multi else []) + [
        "configuration", "ms/token median", "p90", "I/O ms/token", "compute ms/token", "bytes read/token",
        "% of FFN", "peak resident", "speed-up vs naive", "vs mmap", "I/O / device limit"]
    rows = []
    for dt in dtypes:
        for name, desc in CONFIGS:
            f = per[dt]["configs"].get(name)
            r = config_row(name, f) if f else [name, "not run"] + [""] * 9
            rows.append(([dt] if multi else []) + r)
    if dev:
        b = dev["best"]
        rows.append(([""] if multi else []) + ["device limit", "", "", "", "", "", "", "", "", "",
                                               "best %.0f MB/s (%d KiB, qd %d)" % (b["mb_per_s"], b["size"] >> 10,
                                                                                  b["qd"])])

    stores = ", ".join("%s %.2f GB" % (dt, (per[dt]["settings"].get("model_bytes") or 0) / 1e9) for dt in dtypes)
    title = "inflash benchmark: SYNTHETIC %s (%s store%s), %d-position prompt + %d generated tokens" % (
        label, stores, "s" if multi else "", a.prompt, a.gen)
    print(title)
    print(table_txt(head, rows))
    print()
    for k, v in all_targets.items():
        print(target_line(k, v))
    for dt in dtypes:
        q = per[dt]["quality"]
        if q:
            print("quality (demo model%s, held-out text): perplexity predict %s, dense %s, top-1 agreement %s" % (
                " " + dt if multi else "", fmt(q.get("perplexity"), "%.3f"), fmt(q.get("dense_perplexity"), "%.3f"),
                fmt((q.get("top1_agreement") or 0) * 100, "%.2f%%")))

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as fo:
        json.dump(res, fo, indent=2, default=str)
        fo.write("\n")
    budgets = "; ".join(
        "%s: %.0f MiB = %.2f x the store's %.0f MiB (the client keeps its weights in the store's dtype too), "
        "inflash: client --dram-budget %d MiB + daemon cache %d MiB (%s)" % (
            dt, mib(s.get("budget") or 0), (s.get("budget") or 0) / max(s.get("model_bytes") or 1, 1),
            mib(s.get("model_bytes") or 0), s.get("client_mib") or 0, s.get("daemon_mib") or 0,
            s.get("mount_opts")) for dt, s in ((dt, per[dt]["settings"]) for dt in dtypes))
    md = ["# %s" % title, "",
          "All figures are from a model with **synthetic weights** (inflash-mkmodel, shape %s); its FFN "
          "activation statistics are measured below, not assumed. Machine: %d CPUs, kernel %s; %s." % (
              label, os.cpu_count(), platform.release(), res["date"]),
          "",
          "DRAM budget per store: %s. Every client ran under a %s cgroup memory cap of the whole budget (page "
          "cache included); the page cache was dropped before each configuration. naive and mmap generated %d "
          "tokens, inflash %d; sampling %s; predictor thresholds as calibrated%s." % (
              budgets, a.cgroup or "-", a.dense_gen, a.gen, res["settings"]["sampling"],
              " + %g (--threshold-shift)" % a.threshold_shift if a.threshold_shift else ""),
          "", table_md(head, rows), ""]
    md += target_md(all_targets)
    if act:
        m = act["mean"]
        md += ["", "## Activation statistics of this store (SYNTHETIC weights; inflash-actstats, %s, %d + %d "
               "positions of the demo's held-out text)" % (act.get("run"), act.get("prompt_positions", 0),
                                                          act.get("gen_positions", 0)), "",
               "| layer | sparsity | active/token | " + " | ".join("new k=%d" % (k + 1)
                                                                   for k in range(len(m["new_fraction_all"]))) + " |",
               "|---|---|---|" + "---|" * len(m["new_fraction_all"])]
        for L in act["layers"]:
            md.append("| %d | %.4f | %.1f | %s |" % (L["layer"], L["sparsity"], L["active_per_token"], " | ".join(
                fmt(x * 100 if x is not None else None, "%.2f%%") for x in L["new_fraction_all"])))
        md.append("| **mean** | %.4f | %.1f | %s |" % (m["sparsity"], m["active_per_token"], " | ".join(
            fmt(x * 100 if x is not None else None, "%.2f%%") for x in m["new_fraction_all"])))
        md += ["", "new k = fraction of the FFN active for a token and not active in the k tokens before it "
               "(what a window of the true active sets loads), averaged over positions >= 8."]
    if dev:
        sizes = sorted({p["size"] for p in dev["points"]})
        qds = sorted({p["qd"] for p in dev["points"]})
        md += ["", "## Device: MB/s of random O_DIRECT reads of ffn.bin", "",
               "| read size | " + " | ".join("qd %d" % q for q in qds) + " |", "|---|" + "---|" * len(qds)]
        for s in sizes:
            md.append("| %d KiB | %s |" % (s >> 10, " | ".join(
                fmt(next((p["mb_per_s"] for p in dev["points"] if p["size"] == s and p["qd"] == q), None), "%.0f")
                for q in qds)))
    for dt, name in ((dt, name) for dt in dtypes for name in ("inflash", "direct")):
        f = per[dt]["configs"].get(name)
        if f and f.get("mean_read_bytes"):
            p = f["device_point_at_read_size"]
            md += ["", "%s%s: %.1f read requests/token of %.0f KiB on average; at the device point nearest to that "
                   "(%d KiB, qd %d: %.0f MB/s) its bytes would take %.1f ms/token, at the best point %.1f ms; it "
                   "spent %.1f ms in I/O. Predicted %.0f, loaded %.0f, resident %.0f neurons/token; window "
                   "shrinks %s, overflows %s, matrix capacity %s rows/layer." % (
                       dt + " " if multi else "", name, f["read_requests_per_token"], f["mean_read_bytes"] / 1024, p["size"] >> 10, p["qd"],
                       p["mb_per_s"], f["device_ms_at_read_size"], f["device_ms"], f["io_ms"],
                       f["neurons_predicted_per_token"] or 0, f["neurons_loaded_per_token"] or 0,
                       f["neurons_resident_per_token"] or 0, f["window_shrinks"], f["overflows"],
                       f["capacity_per_layer"])]
    if qual and not multi:
        md += ["", "## Quality (the real demo model opt-relu-shakespeare, held-out text, %s tokens)" % qual.get(
            "tokens"), "",
               "| mode | perplexity |", "|---|---|",
               "| dense | %s |" % fmt(qual.get("dense_perplexity"), "%.3f"),
               "| predict, window %s | %s |" % (qual.get("window"), fmt(qual.get("perplexity"), "%.3f")),
               "", "top-1 agreement with dense: %s" % fmt((qual.get("top1_agreement") or 0) * 100, "%.2f%%")]
    elif any(per[dt]["quality"] for dt in dtypes):
        md += ["", "## Quality (the real demo model opt-relu-shakespeare packed in each dtype, held-out text)", "",
               "| dtype | tokens | dense perplexity | predict perplexity (window %d) | top-1 agreement |" % a.window,
               "|---|---|---|---|---|"]
        for dt in dtypes:
            q = per[dt]["quality"] or {}
            md.append("| %s | %s | %s | %s | %s |" % (
                dt, q.get("tokens", "-"), fmt(q.get("dense_perplexity"), "%.3f"), fmt(q.get("perplexity"), "%.3f"),
                fmt(q["top1_agreement"] * 100 if q.get("top1_agreement") is not None else None, "%.2f%%")))
    md += ["", "Plots: latency.png (per-token latency breakdown), bandwidth.png (device bandwidth against read "
           "size). Raw data: results.json."]
    with open(os.path.join(a.out, "results.md"), "w") as fo:
        fo.write("\n".join(md) + "\n")
    with open(os.path.join(a.out, "latency.dat"), "w") as fo:
        fo.write("# configuration io_ms compute_ms (per generated token, means)\n")
        for dt in dtypes:
            for name, _ in CONFIGS:
                f = per[dt]["configs"].get(name)
                if f and f["io_ms"] is not None:
                    fo.write('"%s" %.3f %.3f\n' % (dt + " " + name if multi else name, f["io_ms"],
                                                   max(f["compute_ms"] or 0, 0)))
    with open(os.path.join(a.out, "bandwidth.dat"), "w") as fo:
        if dev:
            qds = sorted({p["qd"] for p in dev["points"]})
            fo.write("size_kib " + " ".join("qd=%d" % q for q in qds) + "\n")
            for s in sorted({p["size"] for p in dev["points"]}):
                fo.write("%g %s\n" % (s / 1024, " ".join(
                    "%.3f" % next((p["mb_per_s"] for p in dev["points"] if p["size"] == s and p["qd"] == q), 0)
                    for q in qds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
