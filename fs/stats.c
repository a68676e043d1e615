/* stats.c: lock-free request counters and latency histograms of inflashfs,
 * and the text/JSON formatter of the stats files (stats.h). */
#include "stats.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    atomic_uint_fast64_t requests, bytes, errors, max_request, max_ns, sum_ns;
    atomic_uint_fast64_t hist[FSSTAT_BUCKETS];   /* latency in ns */
} kind_stats;

struct fsstat {
    kind_stats k[FSSTAT_NKINDS];
};

fsstat *fsstat_new(void)
{
    fsstat *s = calloc(1, sizeof *s);   /* all-zero is a valid initial state for the atomics */
    return s;
}

void fsstat_free(fsstat *s)
{
    free(s);
}


unsigned fsstat_bucket(uint64_t v)
{
    if (v < 8)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);       /* >= 3 */
    unsigned sub = (unsigned)(v >> (e - 3)) & 7u;
    return (e - 2) * 8 + sub;
}

uint64_t fsstat_bucket_mid(unsigned b)
{
    if (b < 8)
        return b;
    unsigned e = b / 8 + 2, sub = b % 8;
    uint64_t lo = (uint64_t)(8 + sub) << (e - 3);
    uint64_t width = (uint64_t)1 << (e - 3);
    return lo + width / 2;
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v)
{
    uint_fast64_t cur = atomic_load_explicit(a, memory_order_relaxed);
    while (cur < v && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed, memory_order_relaxed))
        ;
}

void fsstat_read(fsstat *s, fsstat_kind k, uint64_t bytes, uint64_t ns, int failed)
{
    kind_stats *ks = &s->k[k];
    atomic_fetch_add_explicit(&ks->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ks->bytes, bytes, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&ks->errors, 1, memory_order_relaxed);
    atomic_max(&ks->max_request, bytes);
    atomic_max(&ks->max_ns, ns);
    atomic_fetch_add_explicit(&ks->sum_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&ks->hist[fsstat_bucket(ns)], 1, memory_order_relaxed);
}

/* q-quantile (0..1) of a histogram, in ns (bucket midpoint); 0 if empty. */
static double quantile(const uint64_t *hist, uint64_t total, double q)
{
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total);
    if (rank >= total)
        rank = total - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < FSSTAT_BUCKETS; b++) {
        seen += hist[b];
        if (seen > rank)
            return (double)fsstat_bucket_mid(b);
    }
    return 0;
}

void fsstat_view(const fsstat *s, fsstat_kind k, fsstat_kind_view *out)
{
    uint64_t hist[FSSTAT_BUCKETS] = { 0 };
    uint64_t total = 0, max_ns = 0, sum_ns = 0;
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < FSSTAT_NKINDS; i++) {
        if (k != FSSTAT_NKINDS && i != (unsigned)k)
            continue;
        /* atomic loads need a non-const object; the counters are only read here */
        kind_stats *ks = (kind_stats *)&s->k[i];
        out->requests += atomic_load_explicit(&ks->requests, memory_order_relaxed);
        out->bytes += atomic_load_explicit(&ks->bytes, memory_order_relaxed);
        out->errors += atomic_load_explicit(&ks->errors, memory_order_relaxed);
        uint64_t mr = atomic_load_explicit(&ks->max_request, memory_order_relaxed);
        if (mr > out->max_request)
            out->max_request = mr;
        sum_ns += atomic_load_explicit(&ks->sum_ns, memory_order_relaxed);
        uint64_t mn = atomic_load_explicit(&ks->max_ns, memory_order_relaxed);
        if (mn > max_ns)
            max_ns = mn;
        for (unsigned b = 0; b < FSSTAT_BUCKETS; b++) {
            uint64_t v = atomic_load_explicit(&ks->hist[b], memory_order_relaxed);
            hist[b] += v;
            total += v;
        }
    }
    out->p50_us = quantile(hist, total, 0.50) / 1e3;
    out->p99_us = quantile(hist, total, 0.99) / 1e3;
    out->max_us = (double)max_ns / 1e3;
    out->mean_us = out->requests ? (double)sum_ns / (double)out->requests / 1e3 : 0;
}

int fsstat_format(const fsstat_kv *kv, size_t n, int json, char **out, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return -ENOMEM;
    if (json)
        fputs("{\n", f);
    for (size_t i = 0; i < n; i++) {
        if (json)
            fprintf(f, "  \"%s\": ", kv[i].key);
        else
            fprintf(f, "%s ", kv[i].key);
        if (kv[i].is_real)
            fprintf(f, "%.3f", kv[i].d);
        else
            fprintf(f, "%llu", (unsigned long long)kv[i].u);
        fputs(json ? (i + 1 < n ? ",\n" : "\n") : "\n", f);
    }
    if (json)
        fputs("}\n", f);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = size;
    return 0;
}
