#!/usr/bin/env python3
"""bench/warm_report.py: turns one bench/warm.sh run (in RUN/: inflash's
--stats JSON per dtype and run, inflash-kbench's table, llama-bench's JSON per
dtype, the greedy check's outputs) into the warm table: decode ms/token
against the DRAM bandwidth limit, prefill against OpenBLAS sgemm, llama.cpp on
the same weights beside; printed, and written as warm.json and warm.md. Uses
bench/report.py's table and target helpers."""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import sqlite3
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import fmt, load, table_md, table_txt, target, target_line, target_md  # noqa: E402


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def store_meta(store):
    db = sqlite3.connect("file:%s/index.sqlite?mode=ro" % store, uri=True)
    return dict(db.execute("select key, value from meta").fetchall())


def matrix_params(m):
    """weights of the layers' matrices (attention and FFN; the prefill's
    products, as inflash-kbench counts them)"""
    d, L, nh, nkv, f = (int(m[k]) for k in ("d_model", "n_layers", "n_heads", "n_kv_heads", "d_ffn"))
    kv = d * nkv // nh
    return L * (2 * d * d + 2 * d * kv + (3 if m.get("gated") == "1" else 2) * d * f)


def kbench_figures(text):
    """bandwidth GB/s, and per row of its single-token and batch tables
    {name: [numbers]}, from inflash-kbench's printed table"""
    if not text:
        return None
    k = {"bandwidth_gbs": None, "single": {}, "batch": {}}
    m = re.search(r"DRAM read bandwidth[^:]*:\s*([0-9.]+)\s*GB/s", text)
    if m:
        k["bandwidth_gbs"] = float(m.group(1))
    part = None
    for line in text.splitlines():
        w = line.split()
        if not w:
            continue
        if w[0] in ("single", "batch"):
            part = w[0]
            continue
        if part and len(w) > 1:
            try:
                k[part][w[0]] = [float(x) for x in w[1:]]
            except ValueError:
                pass
    return k


def best_run(run, dt):
    """the inflash run of this dtype with the lowest median decode ms/token"""
    best = None
    for p in sorted(glob.glob(os.path.join(run, "%s.run*.json" % dt))):
        st = load(p)
        if not st:
            continue
        ms = [r["ms"] for r in st.get("per_token", []) if r.get("kind") == "gen"]
        med = statistics.median(ms) if ms else st.get("ms_per_token")
        if med is not None and (best is None or med < best["ms_median"]):
            best = {"ms_median": med, "ms_mean": st.get("ms_per_token"), "prefill_ms": st.get("prefill_ms"),
                    "tokens": len(ms), "decode_steps": st.get("decode_steps"), "stats": os.path.basename(p),
                    "dtype": st.get("dtype"), "source": st.get("source")}
    return best


def llama_figures(path):
    """llama-bench's JSON: decode ms/token and prefill seconds (means)"""
    d = load(path)
    if not d:
        return None
    f = {}
    for r in d:
        if r.get("n_prompt", 0) > 0 and r.get("n_gen", 0) == 0 and r.get("avg_ts"):
            f["prefill_s"] = r["n_prompt"] / r["avg_ts"]
            f["prefill_ts"] = r["avg_ts"]
        elif r.get("n_gen", 0) > 0 and r.get("n_prompt", 0) == 0 and r.get("avg_ts"):
            f["decode_ms"] = 1e3 / r["avg_ts"]
            f["decode_ts"] = r["avg_ts"]
        f["model_bytes"] = r.get("model_size")
        f["model_type"] = r.get("model_type")
        f["build_commit"] = r.get("build_commit")
    return f


def greedy_check(run, prompt):
    """llama.cpp's and inflash's prompt ids and greedy continuations (text)"""
    lo, io = read(os.path.join(run, "check.llama.out")), read(os.path.join(run, "check.inflash.out"))
    lids = (read(os.path.join(run, "check.llama.prompt_ids")) or "").split()
    if lo is None or io is None:
        return None
    ids = []
    text = []
    for line in io.splitlines():
        if line.startswith("ids:"):
            ids = line.split()[1:]
        else:
            text.append(line)
    itext = "\n".join(text)
    icont = itext[len(prompt):] if itext.startswith(prompt) else None
    # llama-simple prints the prompt's pieces (BOS as <s>, " Once", ...) then the generated ones
    at = lo.find(prompt)
    lcont = lo[at + len(prompt):].rstrip("\n") if at >= 0 and prompt else None
    c = {"prompt": prompt, "llama_prompt_ids": lids, "inflash_prompt_ids": ids[:len(lids)] if lids else None,
         "inflash_generated_ids": ids[len(lids):] if lids else None, "llama_text": lcont, "inflash_text": icont}
    c["prompt_ids_agree"] = bool(lids) and ids[:len(lids)] == lids
    c["greedy_agree"] = icont is not None and lcont is not None and icont.strip() == lcont.strip()
    gen = c["inflash_generated_ids"] or []
    c["distinct_generated_ids"] = len(set(gen))
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtypes", required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--prompt", type=int, required=True)
    ap.add_argument("--gen", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--check-prompt", default="")
    ap.add_argument("--llama-cpp")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()

    dtypes = a.dtypes.split(",")
    kb = kbench_figures(read(os.path.join(a.run, "kbench.txt")))
    bw = kb and kb["bandwidth_gbs"]
    sgemm = kb and kb["batch"].get("sgemm")
    sgemm_gflops = sgemm[2] if sgemm and len(sgemm) >= 3 else None
    per = {}
    targets = {}
    for dt in dtypes:
        store = (read(os.path.join(a.run, dt + ".store")) or "").strip()
        if not store:
            continue
        meta = store_meta(store)
        wbytes = os.path.getsize(os.path.join(store, "dense.bin")) + os.path.getsize(os.path.join(store, "ffn.bin"))
        f = {"store": store, "weight_bytes_per_token": wbytes, "inflash": best_run(a.run, dt),
             "llama_cpp": llama_figures(os.path.join(a.run, dt + ".llama.json"))}
        i = f["inflash"]
        f["limit_ms"] = wbytes / (bw * 1e9) * 1e3 if bw else None
        f["ratio_to_limit"] = i["ms_median"] / f["limit_ms"] if i and f["limit_ms"] else None
        f["stream_gbs"] = wbytes / (i["ms_median"] * 1e6) if i and i["ms_median"] else None
        flops = 2.0 * a.prompt * matrix_params(meta)
        f["prefill_flops"] = flops
        f["prefill_gflops"] = flops / (i["prefill_ms"] * 1e6) if i and i["prefill_ms"] else None
        f["prefill_share_of_sgemm"] = (f["prefill_gflops"] / sgemm_gflops
                                       if f["prefill_gflops"] and sgemm_gflops else None)
        ks, kbt = kb and kb["single"].get(dt), kb and kb["batch"].get(dt)
        f["kbench_single_ratio"] = ks[4] if ks and len(ks) >= 5 else None
        f["kbench_batch_share"] = kbt[3] if kbt and len(kbt) >= 4 else None
        ll = f["llama_cpp"]
        if ll and ll.get("decode_ms") and i:
            f["decode_vs_llama"] = i["ms_median"] / ll["decode_ms"]
            f["llama_stream_gbs"] = (ll.get("model_bytes") or 0) / (ll["decode_ms"] * 1e6) or None
        per[dt] = f
        targets["%s: decode within 1.3x of the bandwidth limit" % dt] = target(f["ratio_to_limit"], 1.3, "<=")
        targets["%s: %d-token prefill >= 60%% of sgemm's throughput" % (dt, a.prompt)] = target(
            f["prefill_share_of_sgemm"], 0.6, ">=")
    check = greedy_check(a.run, a.check_prompt) if a.llama_cpp else None

    label = a.shape + (" (%d layers)" % a.layers if a.layers else "")
    res = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "model": {"shape": a.shape, "layers_override": a.layers, "synthetic": True},
        "settings": {"prompt_positions": a.prompt, "generated_tokens": a.gen, "threads": a.threads,
                     "page_cache": "warm", "memory_cap": None, "inflash": "--store --mmap, greedy",
                     "llama_cpp": a.llama_cpp, "quick": a.quick},
        "kbench": kb, "dtypes": per, "targets": targets, "greedy_check": check,
    }

    head = ["dtype", "weights MB/token", "decode ms/token", "limit ms", "x limit", "GB/s", "prefill s",
            "prefill GFLOP/s", "x sgemm", "llama.cpp ms/token", "llama.cpp GB/s", "llama.cpp prefill s",
            "decode ours / llama.cpp"]
    rows = []
    for dt in dtypes:
        f = per.get(dt)
        i = f and f["inflash"]
        if not i:
            rows.append([dt, "not run"] + [""] * (len(head) - 2))
            continue
        ll = f["llama_cpp"] or {}
        rows.append([dt, "%.1f" % (f["weight_bytes_per_token"] / 1e6), fmt(i["ms_median"]), fmt(f["limit_ms"]),
                     fmt(f["ratio_to_limit"], "%.2fx"), fmt(f["stream_gbs"]),
                     fmt(i["prefill_ms"] / 1e3 if i["prefill_ms"] is not None else None, "%.2f"),
                     fmt(f["prefill_gflops"]), fmt(f["prefill_share_of_sgemm"], "%.2f"),
                     fmt(ll.get("decode_ms")), fmt(f.get("llama_stream_gbs")), fmt(ll.get("prefill_s"), "%.2f"),
                     fmt(f.get("decode_vs_llama"), "%.2fx")])
    title = "inflash warm: SYNTHETIC %s, --store --mmap, warm page cache, no cap, %d threads, %d-position prompt " \
            "+ %d tokens" % (label, a.threads, a.prompt, a.gen)
    print(title)
    print(table_txt(head, rows))
    print()
    bw_line = ("DRAM read bandwidth (inflash-kbench, this run): %s GB/s; OpenBLAS sgemm on the 7B layer's shapes, "
               "%d tokens: %s GFLOP/s" % (fmt(bw), a.prompt, fmt(sgemm_gflops)) if kb
               else "inflash-kbench did not run: no bandwidth limit, no sgemm figure")
    print(bw_line)
    for k, v in targets.items():
        print(target_line(k, v))
    check_line = None
    if check:
        check_line = ("greedy check (llama.cpp F16 GGUF vs inflash f16 store, '%s'): prompt ids %s, greedy "
                      "continuation %s (%d distinct generated ids)" % (
                          check["prompt"], "agree" if check["prompt_ids_agree"] else "DIFFER",
                          "AGREES" if check["greedy_agree"] else "DIFFERS", check["distinct_generated_ids"]))
        print(check_line)
    elif a.llama_cpp:
        print("greedy check: not run (needs the f16 dtype)")

    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "warm.json"), "w") as fo:
        json.dump(res, fo, indent=2, default=str)
        fo.write("\n")
    md = ["# %s" % title, "",
          "**Synthetic weights** (inflash-mkmodel, shape %s), one store per dtype packed from one checkpoint. "
          "Machine: %d CPUs, kernel %s; %s." % (label, os.cpu_count(), platform.release(), res["date"]), "",
          "inflash: `inflash --store STORE --mmap --prompt-ids ... -n %d -t 0 --threads %d` after reading the "
          "store once (warm page cache), no memory cap; decode ms/token is the median over the generated tokens "
          "(each a single-vector step), prefill the %d prompt positions' time from --stats. Weights per token = "
          "the store's dense.bin + ffn.bin (every weight is read once per decoding step); limit = those bytes / "
          "the DRAM read bandwidth inflash-kbench measured in this run; x sgemm = the prefill's GFLOP/s (the "
          "layers' matrix products, %.3g GFLOP) over OpenBLAS sgemm's on the same shapes." % (
              a.gen, a.threads, a.prompt, next(iter(per.values()))["prefill_flops"] / 1e9 if per else 0), ""]
    if a.llama_cpp:
        md += ["llama.cpp (%s): the same weights converted by bench/to_gguf.py (llama.cpp's gguf-py) to GGUF F16, "
               "quantized with `llama-quantize --pure` to Q8_0 and Q4_0 (every matrix in that type, as in our "
               "stores), timed with `llama-bench -p %d -n %d -t %d -lm mmap` (means over its repetitions)." % (
                   a.llama_cpp, a.prompt, a.gen, a.threads), ""]
    md += [table_md(head, rows), "", bw_line + ".", ""]
    md += target_md(targets)
    if kb:
        md += ["", "inflash-kbench per dtype (kernels alone, 7B layer shapes): single-token time / bandwidth limit "
               "and batch share of sgemm:", "", "| dtype | single x limit | batch x sgemm |", "|---|---|---|"]
        for dt in dtypes:
            f = per.get(dt) or {}
            md.append("| %s | %s | %s |" % (dt, fmt(f.get("kbench_single_ratio"), "%.2f"),
                                           fmt(f.get("kbench_batch_share"), "%.2f")))
    if check:
        md += ["", "## Greedy check (the conversion)", "", check_line + ".", "",
               "- llama.cpp prompt ids: %s; inflash's: %s" % (" ".join(check["llama_prompt_ids"]),
                                                            " ".join(check["inflash_prompt_ids"] or [])),
               "- llama.cpp continuation: `%s`" % (check["llama_text"] or "").replace("\n", "\\n"),
               "- inflash continuation: `%s` (ids %s)" % ((check["inflash_text"] or "").replace("\n", "\\n"),
                                                         " ".join(check["inflash_generated_ids"] or []))]
    with open(os.path.join(a.out, "warm.md"), "w") as fo:
        fo.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
