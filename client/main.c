/* main.c: `inflash`, the inference client. Opens an inflashfs mount (or a
 * store directory with --store), loads the tokenizer and the resident
 * weights, then either generates text from a prompt (streamed to stdout as
 * it is produced) or measures perplexity over a text file, with the dense
 * FFN or the sparse engine (sparse.h: --mode oracle|predict, --window,
 * --dram-budget), and writes per-token statistics (--stats). */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "model.h"
#include "sample.h"
#include "source.h"
#include "sparse.h"
#include "tok.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
#define RC_USAGE     1   /* positive return of generate/perplexity: a usage error (exit 2) */

typedef enum { CLI_DENSE = 0, CLI_ORACLE = 1, CLI_PREDICT = 2 } cli_mode;

typedef struct {
    const char *mount;        /* positional MOUNTPOINT, or NULL */
    const char *store_dir;    /* --store */
    int         mmap;         /* --mmap: the store memory-mapped, computed in place */
    const char *prompt;       /* -p */
    const char *prompt_file;  /* -f */
    const char *ppl_file;     /* --perplexity */
    const char *stats_file;   /* --stats */
    const char *dump_logits;  /* --dump-logits (hidden, for tests) */
    const char *prompt_ids;   /* --prompt-ids (hidden: ids instead of text) */
    const char *dump_ids;     /* --dump-ids (hidden, for tests): the scored documents' ids */
    int64_t     n_gen;        /* -n */
    double      temperature;  /* -t */
    double      top_p;        /* --top-p */
    uint64_t    seed;         /* --seed */
    int         threads;      /* --threads, 0 = OpenBLAS default */
    int         print_ids;    /* --ids */
    int         dense_resident;
    int         ppl_per_line; /* --per-line */
    cli_mode    mode;
    int64_t     window;       /* --window (sparse modes) */
    uint64_t    budget_bytes; /* --dram-budget, 0 = none */
    int         check_recall; /* --check-recall */
    int         compare_dense;/* --compare-dense */
    int         readers;      /* --readers, -1 = default */
    double      tau_shift;    /* --threshold-shift */
    int         sparse_opt;   /* an option of the sparse modes was given */
    int         special;      /* --special: special tokens in the prompt text are their ids */
    int64_t     ctx;          /* -c: context positions, 0 = the model's max_pos */
    int64_t     batch;        /* --batch: positions per forward in dense prefill, 0 = default */
    int         verbose;      /* -v */
} cli_opts;

static void cli_usage(FILE *f)
{
    fprintf(f,
            "usage: inflash MOUNTPOINT [options]\n"
            "       inflash --store STORE_DIR [options]\n"
            "Runs a language model whose weights are served by an inflashfs mount\n"
            "(or read directly from an inflash store directory with --store).\n"
            "\n"
            "  -p TEXT            prompt (the model's BOS is prepended)\n"
            "  -f FILE            read the prompt from FILE\n"
            "      --special      recognise the tokenizer's special and added tokens (<s>,\n"
            "                     </s>, ...) typed in the prompt as their ids, longest match\n"
            "                     first, the text between them encoded as usual. Default:\n"
            "                     off, such text is encoded as plain characters\n"
            "  -c, --ctx-size N   context in positions (default and most: the model's\n"
            "                     max_position_embeddings); prompt + generation must fit\n"
            "      --batch N      dense: prompt positions per forward (default 128)\n"
            "  -n N               tokens to generate (default 128); stops early at EOS\n"
            "  -t T               temperature (default 1.0; 0 = greedy)\n"
            "      --top-p P      nucleus sampling threshold (default 0.9; 1 = off)\n"
            "      --seed S       random seed (default: from the clock)\n"
            "      --ids          after the text, print 'ids: ...' (prompt ids with BOS,\n"
            "                     then the generated ids)\n"
            "      --mode M       dense (default): every FFN neuron, read per token;\n"
            "                     predict: the calibrated predictor's neurons only, read\n"
            "                     through a sliding window (the real thing);\n"
            "                     oracle: the truly active neurons (from a resident copy of\n"
            "                     the up rows; exact for ReLU; a diagnostic)\n"
            "      --window K     oracle/predict: keep the neurons of the last K tokens\n"
            "                     resident, read only the new ones (default 4)\n"
            "      --dram-budget SIZE  oracle/predict: memory for everything the client holds\n"
            "                     (weights, KV cache, predictors, neuron matrices, buffers);\n"
            "                     the neuron matrices get what remains, and a window whose\n"
            "                     neurons do not fit shrinks. Refused with the minimum if\n"
            "                     too small. SIZE: 512m, 2g, or a bare number of MiB (16,\n"
            "                     1.5). Default: no limit (matrices hold whole layers)\n"
            "      --check-recall predict: also compute the true active set, for the\n"
            "                     predictor's recall in --stats\n"
            "      --compare-dense  with --perplexity in oracle/predict: run the dense model\n"
            "                     alongside; prints dense-perplexity and top1-agreement\n"
            "      --readers N    oracle/predict: reader threads (default 4)\n"
            "      --threshold-shift D  predict: add D to every layer's calibrated predictor\n"
            "                     threshold (D > 0: fewer neurons read, lower recall)\n"
            "      --perplexity FILE  score FILE instead of generating; the last line is\n"
            "                     'perplexity: X (tokens: N)'. Windows of context - 1\n"
            "                     tokens, each fed as BOS + window, every token scored once\n"
            "      --per-line     with --perplexity: each line is its own document\n"
            "      --stats FILE   write timing and I/O statistics as JSON: a summary (with\n"
            "                     kv_cache_bytes and kv_positions), per-layer figures and one\n"
            "                     record per token\n"
            "      --threads N    OpenBLAS threads\n"
            "      --dense-resident  keep the whole FFN in memory (reference only)\n"
            "      --store DIR    read a store directory instead of a mount\n"
            "      --mmap         with --store and --mode dense: memory-map the store and compute\n"
            "                     from the mapping, the page cache being the only cache (the way\n"
            "                     llama.cpp runs a model larger than RAM; for comparison)\n"
            "  -v, --verbose      print the model and KV cache sizes on stderr\n"
            "  -h, --help         this help\n"
            "\n"
            "A model with a sliding window (Mistral's \"sliding_window\": W) attends to the\n"
            "last W positions; its KV cache holds min(context, W) positions.\n"
            "\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

/* ---- small helpers ---------------------------------------------------------- */


static int read_file(const char *path, char **data, size_t *len, ierr *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return ierr_set(err, -EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* Write decoded bytes to stdout at once (text is streamed). */
static int line_open;   /* emit left a line without its newline (main ends it before an error) */

static void emit(const char *buf, size_t n)
{
    if (n) {
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
        line_open = buf[n - 1] != '\n';
    }
}

static void stream_id(tok_stream *ts, int32_t id)
{
    char buf[4096];   /* longer than any token's bytes */
    emit(buf, tok_stream_put(ts, id, buf, sizeof buf));
}

/* Forward ids[0..n) at positions pos.. in batches; the hidden states of the
 * last batch stay in the model (its last row is the last position). */
static int forward_all(model *m, const int32_t *ids, int64_t n, int64_t pos, ierr *err)
{
    for (int64_t i = 0; i < n; i += m->s.max_batch) {
        int64_t b = n - i < m->s.max_batch ? n - i : m->s.max_batch;
        int rc = model_forward(m, ids + i, b, pos + i, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int dump_logits(const char *path, const float *logits, int64_t n, ierr *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    size_t w = fwrite(logits, sizeof(float), (size_t)n, f);
    if (fclose(f) != 0 || w != (size_t)n)
        return ierr_set(err, -EIO, "%s: write error", path);
    return 0;
}

/* ---- statistics ------------------------------------------------------------ */

#define CLI_WARMUP 16   /* tokens left out of the after-warm-up figures */

typedef enum { REC_PROMPT, REC_GEN, REC_PPL } rec_kind;

/* One forwarded position (sparse modes, and dense decode steps). */
typedef struct {
    int64_t      pos;
    rec_kind     kind;
    double       ms;       /* forward + logits (+ sampling or scoring) */
    uint64_t     io_ns;    /* waiting for FFN reads */
    uint64_t     bytes;    /* FFN bytes read */
    int          top1;     /* --compare-dense: 1 agrees with dense, 0 not, -1 not compared */
    sparse_count c;        /* sparse modes: the engine's counters */
} cli_rec;

typedef struct {
    cli_rec *recs;            /* owned; n_recs valid */
    int64_t  n_recs, cap_recs;
    int64_t  prompt_tokens;
    int64_t  tokens;          /* generated, or scored (perplexity) */
    int64_t  decode_steps;    /* single-token forwards after the prompt */
    double   prefill_ms;
    /* the tokens the per-token figures are over: decode steps, or scored tokens */
    int64_t  counted;
    double   sum_ms;
    uint64_t sum_io_ns, sum_bytes;
    /* perplexity */
    int      have_ppl;
    double   ppl, dense_ppl;  /* dense_ppl < 0: not compared */
    int64_t  agree;           /* --compare-dense: top-1 agreements of `tokens` */
} cli_stats;

static int rec_push(cli_stats *st, const cli_rec *r, ierr *err)
{
    if (st->n_recs == st->cap_recs) {
        int64_t cap = st->cap_recs ? 2 * st->cap_recs : 1024;
        cli_rec *p = realloc(st->recs, (size_t)cap * sizeof *p);
        if (!p)
            return ierr_set(err, -ENOMEM, "out of memory for the per-token statistics");
        st->recs = p;
        st->cap_recs = cap;
    }
    st->recs[st->n_recs++] = *r;
    if (r->kind != REC_PROMPT) {
        st->counted++;
        st->sum_ms += r->ms;
        st->sum_io_ns += r->io_ns;
        st->sum_bytes += r->bytes;
    }
    return 0;
}

/* A record of position pos just forwarded (ms measured by the caller). */
static int record(cli_stats *st, const model *m, const sparse *sp, int64_t pos, rec_kind kind, double ms,
                  uint64_t io0, uint64_t bytes0, int top1, ierr *err)
{
    cli_rec r = {.pos = pos, .kind = kind, .ms = ms, .top1 = top1};
    if (sp) {
        sparse_last(sp, 0, &r.c);
        r.io_ns = r.c.io_ns;
        r.bytes = r.c.bytes;
    } else {
        r.io_ns = m->stats.io_ns - io0;
        r.bytes = m->stats.ffn_bytes_read - bytes0;
    }
    return rec_push(st, &r, err);
}

static const char *mode_name(cli_mode m)
{
    return m == CLI_DENSE ? "dense" : m == CLI_ORACLE ? "oracle" : "predict";
}

/* The --stats file is built with jansson from tables of named figures.
 * Each real keeps the decimals it has always been written with (rounded,
 * then dumped with 15 significant digits, so 0.25 reads "0.25"). */
typedef struct {
    const char *key;
    char        kind;      /* 's' string, 'b' boolean, 'i' integer, 'r' real, 'n' null */
    int         dec;       /* 'r': decimals kept */
    long long   i;         /* 'b', 'i' */
    double      d;         /* 'r' */
    const char *s;         /* 's' */
} stat_kv;

#define KV_S(k, v)    { .key = (k), .kind = 's', .s = (v) }
#define KV_B(k, v)    { .key = (k), .kind = 'b', .i = (v) }
#define KV_I(k, v)    { .key = (k), .kind = 'i', .i = (long long)(v) }
#define KV_R(k, v, n) { .key = (k), .kind = 'r', .d = (v), .dec = (n) }
/* num/den to 6 decimals, or null when the figure is unknown */
#define KV_RATIO(k, num, den, known) \
    { .key = (k), .kind = (known) && (den) > 0 ? 'r' : 'n', .d = (den) > 0 ? (num) / (den) : 0.0, .dec = 6 }

static json_t *kv_value(const stat_kv *kv)
{
    switch (kv->kind) {
    case 's': return json_string(kv->s);
    case 'b': return json_boolean(kv->i);
    case 'i': return json_integer(kv->i);
    case 'r':
        if (isfinite(kv->d)) {
            double p = pow(10.0, kv->dec);
            return json_real(round(kv->d * p) / p);
        }
        break;
    }
    return json_null();
}

/* Add the figures kv[0..n) to object o in order; 0 or -1 (out of memory). */
static int kv_put(json_t *o, const stat_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!o || json_object_set_new(o, kv[i].key, kv_value(&kv[i])) != 0)
            return -1;
    return 0;
}
#define KV_PUT(o, table) kv_put((o), (table), sizeof(table) / sizeof(table)[0])

/* Per layer: window, neurons per token, fractions, recalls. */
static json_t *layers_json(const sparse *sp, const hp_config *c)
{
    double n = (double)c->d_ffn;
    int truth = sparse_knows_truth(sp);
    json_t *arr = json_array();
    for (int64_t l = 0; arr && l < c->n_layers; l++) {
        sparse_layer_stats ls;
        if (sparse_layer_stats_get(sp, l, &ls, NULL) != 0)
            continue;
        double t = ls.tokens > 0 ? (double)ls.tokens : 1.0, ta = ls.tokens_after > 0 ? (double)ls.tokens_after : 1.0;
        const stat_kv kv[] = {
            KV_I("layer", l),
            KV_I("capacity", ls.capacity),
            KV_I("window_k", ls.k),
            KV_I("window_k_max", ls.k_max),
            KV_I("window_shrinks", ls.all.shrinks),
            KV_I("window_grows", ls.grows),
            KV_I("overflows", ls.all.overflows),
            KV_R("neurons_predicted_per_token", (double)ls.all.selected / t, 3),
            KV_R("neurons_loaded_per_token", (double)ls.all.loaded / t, 3),
            KV_R("neurons_resident_per_token", (double)ls.all.resident / t, 3),
            KV_R("fraction_read_per_token", (double)ls.all.loaded / t / n, 6),
            KV_R("fraction_read_per_token_after_warmup",
                 ls.tokens_after > 0 ? (double)ls.after.loaded / ta / n : 0.0, 6),
        };
        const stat_kv kt[] = {
            KV_R("neurons_active_per_token", (double)ls.all.active / t, 3),
            KV_R("predictor_recall", ls.all.active ? (double)ls.all.hits / (double)ls.all.active : 1.0, 6),
            KV_R("resident_recall", ls.all.active ? (double)ls.all.resident_hits / (double)ls.all.active : 1.0, 6),
        };
        json_t *o = json_object();
        if (json_array_append_new(arr, o) != 0 || KV_PUT(o, kv) < 0 || (truth && KV_PUT(o, kt) < 0)) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* One record per forwarded position. */
static json_t *records_json(const cli_stats *st, const sparse *sp)
{
    static const char *kinds[] = {"prompt", "gen", "ppl"};
    int truth = sp && sparse_knows_truth(sp);
    json_t *arr = json_array();
    for (int64_t i = 0; arr && i < st->n_recs; i++) {
        const cli_rec *r = &st->recs[i];
        const stat_kv kv[] = {
            KV_I("i", i),
            KV_I("pos", r->pos),
            KV_S("kind", kinds[r->kind]),
            KV_R("ms", r->ms, 4),
            KV_R("io_ms", (double)r->io_ns / 1e6, 4),
            KV_I("bytes", r->bytes),
        };
        const stat_kv ks[] = {
            KV_I("predicted", r->c.selected), KV_I("loaded", r->c.loaded), KV_I("dropped", r->c.dropped),
            KV_I("resident", r->c.resident), KV_I("reads", r->c.reads), KV_I("shrinks", r->c.shrinks),
            KV_I("overflows", r->c.overflows),
        };
        const stat_kv kt[] = { KV_I("active", r->c.active), KV_I("hits", r->c.hits) };
        const stat_kv k1[] = { KV_I("top1", r->top1) };
        json_t *o = json_object();
        if (json_array_append_new(arr, o) != 0 || KV_PUT(o, kv) < 0 || (sp && KV_PUT(o, ks) < 0) ||
            (truth && KV_PUT(o, kt) < 0) || (r->top1 >= 0 && KV_PUT(o, k1) < 0)) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;   /* Linux: kilobytes, = VmHWM */
}

/* Sums of the sparse engine's counters over the counted records (and over
 * the records after the warm-up, which include prompt positions). */
typedef struct {
    sparse_count s;            /* over the decode / scored records */
    double       after_bytes, after_n;
    int64_t      shrinks, overflows, grows;
} sparse_sums;

static void sum_sparse(const cli_stats *st, const sparse *sp, const hp_config *c, sparse_sums *t)
{
    *t = (sparse_sums){0};
    for (int64_t i = 0; i < st->n_recs; i++) {
        const cli_rec *r = &st->recs[i];
        t->shrinks += r->c.shrinks;
        t->overflows += r->c.overflows;
        if (i >= CLI_WARMUP) {
            t->after_bytes += (double)r->bytes;
            t->after_n++;
        }
        if (r->kind == REC_PROMPT)
            continue;
        t->s.selected += r->c.selected;
        t->s.active += r->c.active;
        t->s.hits += r->c.hits;
        t->s.resident_hits += r->c.resident_hits;
        t->s.loaded += r->c.loaded;
        t->s.dropped += r->c.dropped;
        t->s.resident += r->c.resident;
        t->s.reads += r->c.reads;
    }
    for (int64_t l = 0; l < c->n_layers; l++) {
        sparse_layer_stats ls;
        if (sparse_layer_stats_get(sp, l, &ls, NULL) == 0)
            t->grows += ls.grows;
    }
}

/* The sparse engine's figures: sums per token, the window, the budget, and
 * the per-layer array. k: the counted tokens (>= 1). */
static int put_sparse(json_t *root, const cli_opts *o, const model *m, const sparse *sp, const cli_stats *st,
                      double k, uint64_t ffn_total)
{
    const hp_config *c = &m->cfg;
    sparse_sums t;
    sum_sparse(st, sp, c, &t);
    const sparse_budget *b = sparse_get_budget(sp);
    sparse_opts defaults;
    sparse_opts_init(&defaults, SPARSE_PREDICT);
    int truth = sparse_knows_truth(sp);
    double after = t.after_n > 0 ? t.after_bytes / t.after_n : 0.0;
    const stat_kv kv[] = {
        KV_I("window", o->window),
        KV_I("readers", o->readers >= 0 ? o->readers : defaults.readers),
        KV_I("warmup_tokens", CLI_WARMUP),
        KV_R("ffn_bytes_read_per_token_after_warmup", after, 1),
        KV_R("ffn_fraction_read_per_token_after_warmup", after / (double)ffn_total, 6),
        KV_R("read_requests_per_token", (double)t.s.reads / k, 3),
        KV_I("neurons_total", c->n_layers * c->d_ffn),
        KV_RATIO("neurons_active_per_token", (double)t.s.active, k, truth),
        KV_R("neurons_predicted_per_token", (double)t.s.selected / k, 3),
        KV_R("neurons_loaded_per_token", (double)t.s.loaded / k, 3),
        KV_R("neurons_dropped_per_token", (double)t.s.dropped / k, 3),
        KV_R("neurons_resident_per_token", (double)t.s.resident / k, 3),
        KV_RATIO("predictor_recall", (double)t.s.hits, (double)t.s.active, truth),
        KV_RATIO("resident_recall", (double)t.s.resident_hits, (double)t.s.active, truth),
        KV_I("window_shrinks", t.shrinks),
        KV_I("window_grows", t.grows),
        KV_I("overflows", t.overflows),
        KV_I("dram_budget_bytes", o->budget_bytes),
        KV_I("budget_min_bytes", b->min_bytes),
        KV_I("budget_accounted_bytes", b->total_bytes),
        KV_I("engine_fixed_bytes", b->fixed_bytes),
        KV_I("neuron_matrix_bytes", b->nmat_bytes),
        KV_I("capacity_per_layer", b->capacity),
    };
    if (KV_PUT(root, kv) < 0)
        return -1;
    return json_object_set_new(root, "layers", layers_json(sp, c));
}

/* The --stats file: a summary, the sparse engine's figures and per-layer
 * array (sparse modes), one record per token. */
static int write_stats(const char *path, const cli_opts *o, const model *m, const sparse *sp, const cli_stats *st,
                       ierr *err)
{
    const hp_config *c = &m->cfg;
    double k = st->counted > 0 ? (double)st->counted : 1.0;
    double ms = st->counted > 0 ? st->sum_ms / k : 0.0;
    double io = st->counted > 0 ? (double)st->sum_io_ns / 1e6 / k : 0.0;
    double bytes = st->counted > 0 ? (double)st->sum_bytes / k : 0.0;
    uint64_t ffn_total = (uint64_t)c->n_layers * (uint64_t)c->d_ffn * (uint64_t)source_bundle_bytes(m->src);
    const stat_kv kv[] = {
        KV_S("mode", mode_name(o->mode)),
        KV_S("source", o->mmap ? "mmap" : o->store_dir ? "store" : "mount"),
        KV_S("dtype", fmt_dtype_name(source_dtype(m->src))),
        KV_B("dense_resident", o->dense_resident),
        KV_I("prompt_tokens", st->prompt_tokens),
        KV_I("tokens", st->tokens),
        KV_I("decode_steps", st->decode_steps),
        KV_I("positions", st->n_recs),
        KV_R("prefill_ms", st->prefill_ms, 3),
        KV_R("ms_per_token", ms, 4),
        KV_R("io_ms_per_token", io, 4),
        KV_R("compute_ms_per_token", ms - io, 4),
        KV_I("ffn_bytes_total", ffn_total),
        KV_R("ffn_bytes_read_per_token", bytes, 1),
        KV_R("ffn_fraction_read_per_token", bytes / (double)ffn_total, 6),
        KV_I("model_resident_bytes", m->resident_bytes),
        KV_I("kv_cache_bytes", model_kv_bytes(m)),
        KV_I("kv_positions", m->s.kv_len),
        KV_I("resident_bytes_peak", peak_rss_bytes()),
    };
    const stat_kv kp[] = { KV_R("perplexity", st->ppl, 6) };
    const stat_kv kd[] = {
        KV_R("dense_perplexity", st->dense_ppl, 6),
        KV_R("top1_agreement", st->tokens ? (double)st->agree / (double)st->tokens : 0.0, 6),
    };
    json_t *root = json_object();
    int rc = KV_PUT(root, kv);
    if (rc == 0 && st->have_ppl)
        rc = KV_PUT(root, kp);
    if (rc == 0 && st->have_ppl && st->dense_ppl >= 0)
        rc = KV_PUT(root, kd);
    if (rc == 0 && sp)
        rc = put_sparse(root, o, m, sp, st, k, ffn_total);
    if (rc == 0)
        rc = json_object_set_new(root, "per_token", records_json(st, sp));
    if (rc < 0) {
        json_decref(root);
        return ierr_set(err, -ENOMEM, "%s: out of memory for the statistics", path);
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        rc = -errno;
        json_decref(root);
        return ierr_set(err, rc, "%s: %s", path, strerror(-rc));
    }
    int bad = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0 || fputc('\n', f) == EOF;
    json_decref(root);
    if (fclose(f) != 0 || bad)
        return ierr_set(err, -EIO, "%s: write error", path);
    return 0;
}

/* ---- sparse engine ---------------------------------------------------------- */

/* Start the sparse engine on m for --mode oracle|predict; extra: other
 * memory held (a --compare-dense twin). A budget below the minimum is a
 * usage error (RC_USAGE, message in err). */
static int sparse_start(const cli_opts *o, model *m, uint64_t extra, sparse **out, ierr *err)
{
    sparse_opts so;
    sparse_opts_init(&so, o->mode == CLI_ORACLE ? SPARSE_ORACLE : SPARSE_PREDICT);
    so.window = o->window;
    so.tau_shift = o->tau_shift;
    so.budget = o->budget_bytes;
    so.extra_bytes = extra;
    so.check_recall = o->check_recall;
    so.warmup = CLI_WARMUP;
    if (o->readers >= 0)
        so.readers = o->readers;
    int rc = sparse_new(m, &so, out, err);
    return rc == -ENOSPC ? RC_USAGE : rc;
}

/* ---- generation ------------------------------------------------------------- */

/* Prompt ids, BOS first: from text through the tokenizer, or the hidden
 * --prompt-ids list (which is taken as is). *ids malloc'd. */
static int prompt_ids(const cli_opts *o, const tok *tk, const hp_config *c, int32_t **ids, int64_t *n, ierr *err)
{
    *ids = NULL;
    *n = 0;
    if (o->prompt_ids) {
        size_t cap = strlen(o->prompt_ids) / 2 + 2, k = 0;
        int32_t *v = malloc(cap * sizeof *v);
        if (!v)
            return ierr_set(err, -ENOMEM, "out of memory");
        const char *p = o->prompt_ids;
        while (*p) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p || x < 0 || x >= c->vocab_size || k == cap) {
                free(v);
                return ierr_set(err, -EINVAL, "--prompt-ids: bad id list");
            }
            v[k++] = (int32_t)x;
            p = end;
            while (*p == ' ' || *p == ',')
                p++;
        }
        *ids = v;
        *n = (int64_t)k;
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (o->prompt_file) {
        rc = read_file(o->prompt_file, &text, &len, err);
        if (rc)
            return rc;
    }
    const char *t = text ? text : o->prompt ? o->prompt : "";
    if (!text)
        len = strlen(t);
    int32_t *enc = NULL;
    size_t nenc = 0;
    rc = o->special ? tok_encode_special(tk, t, len, &enc, &nenc, err) : tok_encode(tk, t, len, &enc, &nenc, err);
    free(text);
    if (rc)
        return ierr_wrap(err, rc, "prompt");
    int32_t *v = malloc((nenc + 1) * sizeof *v);
    if (!v) {
        free(enc);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    size_t k = 0;
    if (c->bos_id >= 0)
        v[k++] = (int32_t)c->bos_id;
    for (size_t i = 0; i < nenc; i++)
        v[k++] = enc[i];
    free(enc);
    *ids = v;
    *n = (int64_t)k;
    return 0;
}

/* The context in positions: -c, or the model's max_pos. A -c beyond it is
 * a usage error (RC_USAGE, message in err). */
static int context_of(const cli_opts *o, const hp_config *c, int64_t *ctx, ierr *err)
{
    *ctx = o->ctx ? o->ctx : c->max_pos;
    if (o->ctx > c->max_pos) {
        ierr_set(err, -EINVAL, "-c %lld: beyond the model's context of %lld positions", (long long)o->ctx,
                 (long long)c->max_pos);
        return RC_USAGE;
    }
    return 0;
}

/* -v: the model's shape and its KV cache, on stderr. */
static void say_model(const cli_opts *o, const model *m)
{
    const hp_config *c = &m->cfg;
    char win[64] = "";
    if (!o->verbose)
        return;
    if (c->sliding_window > 0)
        snprintf(win, sizeof win, ", sliding window %lld", (long long)c->sliding_window);
    fprintf(stderr,
            "inflash: %s, %lld layers, d_model %lld, %lld/%lld heads, context %lld positions%s; "
            "KV cache %llu bytes for %lld positions; resident %llu bytes; weights %s (%.1f bits each)\n",
            hp_family_name(c->family), (long long)c->n_layers, (long long)c->d_model, (long long)c->n_heads,
            (long long)c->n_kv_heads, (long long)m->s.seq_len, win, (unsigned long long)model_kv_bytes(m),
            (long long)m->s.kv_len, (unsigned long long)m->resident_bytes, fmt_dtype_name(m->w.wdt),
            fmt_bits_per_value(m->w.wdt));
}

/* Generate: prompt ids, then the model (and sparse engine, sampler), the
 * prompt forwarded (position by position in the sparse modes, recorded for
 * --stats), then one sampled token per decode step, streamed as text. One
 * sequence of phases sharing their state and one cleanup, hence its length. */
static int generate(const cli_opts *o, source *src, const tok *tk, ierr *err)
{
    const hp_config *c = source_hparams(src);
    int32_t *ids = NULL;
    int64_t np = 0, ctx;
    int rc = context_of(o, c, &ctx, err);
    if (rc == 0)
        rc = prompt_ids(o, tk, c, &ids, &np, err);
    if (rc)
        return rc;
    int64_t need = np + (o->n_gen > 0 ? 1 : 0);   /* the sequence must fit the context */
    if (np == 0 || need > ctx) {
        free(ids);
        if (np == 0)
            return ierr_set(err, -EINVAL, "prompt: empty, and the model has no BOS token");
        return ierr_set(err, -E2BIG, "prompt: %lld tokens, longer than the context (%lld positions, minus 1 to generate)",
                        (long long)np, (long long)ctx);
    }
    int64_t n_gen = o->n_gen;
    if (np + n_gen > ctx)
        n_gen = ctx - np;   /* stop when the context is full */
    int64_t seq_len = np + (n_gen > 0 ? n_gen - 1 : 0);
    int32_t *all = realloc(ids, (size_t)(np + n_gen) * sizeof *all);
    if (!all) {
        free(ids);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    ids = all;
    int sparse_mode = o->mode != CLI_DENSE;
    model *m = NULL;
    sparse *sp = NULL;
    sampler *smp = NULL;
    float *logits = NULL;
    cli_stats st = {0};
    st.prompt_tokens = np;
    /* sparse modes go one position at a time: the window is per token */
    rc = model_new(src, seq_len, sparse_mode ? 1 : o->batch, &m, err);
    if (rc == 0)
        say_model(o, m);
    if (rc == 0 && o->dense_resident)
        rc = model_load_resident_ffn(m, err);
    if (rc == 0 && sparse_mode)
        rc = sparse_start(o, m, 0, &sp, err);
    if (rc == 0)
        rc = sample_new(&smp, c->vocab_size, (float)o->temperature, (float)o->top_p, o->seed, err);
    if (rc == 0 && !(logits = malloc((size_t)c->vocab_size * sizeof *logits)))
        rc = ierr_set(err, -ENOMEM, "out of memory");
    if (rc)
        goto out;

    tok_stream ts;
    if (tk) {
        tok_stream_init(&ts, tk);
        for (int64_t i = 0; i < np; i++)
            if (!(i == 0 && ids[0] == c->bos_id))
                stream_id(&ts, ids[i]);
    }
    double t0 = (cli_now_s() * 1e3);
    if (!sp) {
        rc = forward_all(m, ids, np, 0, err);
    } else {
        for (int64_t i = 0; rc == 0 && i < np; i++) {
            double tp = (cli_now_s() * 1e3);
            rc = model_forward(m, ids + i, 1, i, err);
            if (rc == 0 && o->stats_file)
                rc = record(&st, m, sp, i, REC_PROMPT, (cli_now_s() * 1e3) - tp, 0, 0, -1, err);
        }
    }
    if (rc)
        goto out;
    model_logits(m, (np - 1) % m->s.max_batch, 1, logits);
    st.prefill_ms = (cli_now_s() * 1e3) - t0;
    if (o->dump_logits && (rc = dump_logits(o->dump_logits, logits, c->vocab_size, err)) != 0)
        goto out;
    int64_t pos = np;
    for (int64_t g = 0; g < n_gen; g++) {
        int32_t next = (int32_t)sample_next(smp, logits);
        ids[np + st.tokens++] = next;
        if (next == c->eos_id)
            break;
        if (tk)
            stream_id(&ts, next);
        if (g + 1 == n_gen)
            break;
        double ts0 = (cli_now_s() * 1e3);
        uint64_t io0 = m->stats.io_ns, b0 = m->stats.ffn_bytes_read;
        rc = model_forward(m, &next, 1, pos++, err);
        if (rc)
            goto out;
        model_logits(m, 0, 1, logits);
        rc = record(&st, m, sp, pos - 1, REC_GEN, (cli_now_s() * 1e3) - ts0, io0, b0, -1, err);
        if (rc)
            goto out;
        st.decode_steps++;
    }
    if (tk) {
        char buf[64];
        emit(buf, tok_stream_end(&ts, buf, sizeof buf));
    }
    emit("\n", 1);
    if (o->print_ids) {
        printf("ids:");
        for (int64_t i = 0; i < np + st.tokens; i++)
            printf(" %d", (int)ids[i]);
        printf("\n");
        fflush(stdout);
    }
    if (o->stats_file)
        rc = write_stats(o->stats_file, o, m, sp, &st, err);
out:
    free(st.recs);
    free(logits);
    sample_free(smp);
    sparse_free(sp);
    model_free(m);
    free(ids);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------- */

/* -log softmax(logits)[target], in double. */
static double nll_of(const float *logits, int64_t n, int32_t target)
{
    float mx = logits[0];
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)logits[i] - mx);
    return log(s) + mx - logits[target];
}

/* A perplexity run: the scored model (dense, or with its sparse engine),
 * the optional dense twin of --compare-dense, buffers and the tallies. */
typedef struct {
    const cli_opts *o;
    model    *m;
    sparse   *sp;        /* m's engine, or NULL */
    model    *dm;        /* --compare-dense: dense twin with a resident FFN, or NULL */
    float    *logits;    /* [m->s.max_batch][vocab] */
    float    *dlogits;   /* [max_pos][vocab] when dm */
    FILE     *ids_out;   /* --dump-ids: one line of ids per scored document, or NULL */
    int32_t  *buf;       /* [max_pos] */
    double    nll, dnll;
    cli_stats st;        /* tokens = scored, agree = top-1 agreements with dm */
} ppl_run;

/* Score the token stream ids[0..n) in consecutive windows of (max_pos - 1)
 * tokens, each fed as BOS + window[:-1], every token scored once (the rule of
 * the opt-relu-shakespeare README). */
static int score_stream(ppl_run *R, const int32_t *ids, int64_t n, ierr *err)
{
    model *m = R->m;
    const hp_config *c = &m->cfg;
    int64_t V = c->vocab_size, win = m->s.seq_len - 1;
    for (int64_t w0 = 0; w0 < n; w0 += win) {
        int64_t wl = n - w0 < win ? n - w0 : win;
        R->buf[0] = (int32_t)c->bos_id;
        memcpy(R->buf + 1, ids + w0, (size_t)(wl - 1) * sizeof *R->buf);
        /* positions 0..wl-1 predict ids[w0 .. w0+wl) */
        for (int64_t i = 0; R->dm && i < wl; i += R->dm->s.max_batch) {
            int64_t b = wl - i < R->dm->s.max_batch ? wl - i : R->dm->s.max_batch;
            int rc = model_forward(R->dm, R->buf + i, b, i, err);
            if (rc)
                return rc;
            model_logits(R->dm, 0, b, R->dlogits + i * V);
            for (int64_t r = 0; r < b; r++)
                R->dnll += nll_of(R->dlogits + (i + r) * V, V, ids[w0 + i + r]);
        }
        for (int64_t i = 0; i < wl; i += m->s.max_batch) {
            int64_t b = wl - i < m->s.max_batch ? wl - i : m->s.max_batch;
            double t0 = (cli_now_s() * 1e3);
            uint64_t io0 = m->stats.io_ns, b0 = m->stats.ffn_bytes_read;
            int rc = model_forward(m, R->buf + i, b, i, err);
            if (rc)
                return rc;
            model_logits(m, 0, b, R->logits);
            int top1 = -1;
            for (int64_t r = 0; r < b; r++) {
                const float *lg = R->logits + r * V;
                R->nll += nll_of(lg, V, ids[w0 + i + r]);
                if (R->dm) {
                    top1 = sample_argmax(lg, V) == sample_argmax(R->dlogits + (i + r) * V, V);
                    R->st.agree += top1;
                }
            }
            double ms = (cli_now_s() * 1e3) - t0;
            if (b == 1) {   /* one position at a time (sparse modes): a record each */
                rc = record(&R->st, m, R->sp, i, REC_PPL, ms, io0, b0, top1, err);
                if (rc)
                    return rc;
            } else {
                R->st.counted += b;
                R->st.sum_ms += ms;
                R->st.sum_io_ns += m->stats.io_ns - io0;
                R->st.sum_bytes += m->stats.ffn_bytes_read - b0;
            }
        }
        R->st.tokens += wl;
    }
    return 0;
}

/* Tokenize one document and score it (score_stream); with --dump-ids,
 * first write its ids (BOS not included) as one line, so that a reference
 * (scripts/ref/store_ref.py) can score the same tokens. */
static int score_text(ppl_run *R, const tok *tk, const char *text, size_t len, ierr *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tok_encode(tk, text, len, &ids, &n, err);
    for (size_t i = 0; rc == 0 && R->ids_out && n > 0 && i < n; i++)
        fprintf(R->ids_out, i + 1 < n ? "%d " : "%d\n", (int)ids[i]);
    if (rc == 0 && n > 0)
        rc = score_stream(R, ids, (int64_t)n, err);
    free(ids);
    return rc;
}

/* Perplexity of a text file: the whole file as one token stream, or with
 * --per-line each line (without its LF / CRLF) as its own document, the
 * rule of the stories260K README. */
static int perplexity(const cli_opts *o, source *src, const tok *tk, ierr *err)
{
    const hp_config *c = source_hparams(src);
    if (c->bos_id < 0)
        return ierr_set(err, -EINVAL, "--perplexity: the model has no BOS token to start a window with");
    char *text = NULL;
    size_t len = 0;
    int64_t ctx;
    int rc = context_of(o, c, &ctx, err);
    if (rc == 0)
        rc = read_file(o->ppl_file, &text, &len, err);
    if (rc)
        return rc;
    ppl_run R = {.o = o};
    R.st.dense_ppl = -1.0;
    int sparse_mode = o->mode != CLI_DENSE;
    /* dense: a window per forward; sparse: one position at a time */
    rc = model_new(src, ctx, sparse_mode ? 1 : o->batch ? o->batch : ctx, &R.m, err);
    if (rc == 0)
        say_model(o, R.m);
    if (rc == 0 && o->dense_resident)
        rc = model_load_resident_ffn(R.m, err);
    if (rc == 0 && o->compare_dense) {
        rc = model_new(src, ctx, ctx, &R.dm, err);
        if (rc == 0)
            rc = model_load_resident_ffn(R.dm, err);
        if (rc == 0 && !(R.dlogits = malloc((size_t)(c->max_pos * c->vocab_size) * sizeof *R.dlogits)))
            rc = ierr_set(err, -ENOMEM, "out of memory");
    }
    if (rc == 0 && sparse_mode)
        rc = sparse_start(o, R.m, R.dm ? R.dm->resident_bytes + (uint64_t)(c->max_pos * c->vocab_size) * 4u : 0,
                          &R.sp, err);
    if (rc == 0 && (!(R.logits = malloc((size_t)(R.m->s.max_batch * c->vocab_size) * sizeof *R.logits)) ||
                    !(R.buf = malloc((size_t)c->max_pos * sizeof *R.buf))))
        rc = ierr_set(err, -ENOMEM, "out of memory");
    if (rc == 0 && o->dump_ids && !(R.ids_out = fopen(o->dump_ids, "w")))
        rc = ierr_set(err, -errno, "%s: %s", o->dump_ids, strerror(errno));
    if (rc == 0 && !o->ppl_per_line)
        rc = score_text(&R, tk, text, len, err);
    for (size_t a = 0; rc == 0 && o->ppl_per_line && a < len;) {
        const char *nl = memchr(text + a, '\n', len - a);
        size_t e = nl ? (size_t)(nl - text) : len, next = nl ? e + 1 : len;
        if (e > a && text[e - 1] == '\r')
            e--;
        rc = score_text(&R, tk, text + a, e - a, err);
        a = next;
    }
    if (R.ids_out && fclose(R.ids_out) != 0 && rc == 0)
        rc = ierr_set(err, -EIO, "%s: write error", o->dump_ids);
    int64_t count = R.st.tokens;
    if (rc < 0) {
        ierr_wrap(err, rc, "%s", o->ppl_file);
    } else if (rc == 0 && count == 0) {
        rc = ierr_set(err, -EINVAL, "%s: no tokens to score", o->ppl_file);
    } else if (rc == 0) {
        R.st.have_ppl = 1;
        R.st.ppl = exp(R.nll / (double)count);
        printf("cross-entropy: %.6f nats/token\n", R.nll / (double)count);
        if (R.dm) {
            R.st.dense_ppl = exp(R.dnll / (double)count);
            printf("dense-perplexity: %.4f\n", R.st.dense_ppl);
            printf("top1-agreement: %.6f (%lld of %lld)\n", (double)R.st.agree / (double)count,
                   (long long)R.st.agree, (long long)count);
        }
        printf("perplexity: %.4f (tokens: %lld)\n", R.st.ppl, (long long)count);
        fflush(stdout);
        if (o->stats_file)
            rc = write_stats(o->stats_file, o, R.m, R.sp, &R.st, err);
    }
    free(R.st.recs);
    free(R.buf);
    free(R.logits);
    free(R.dlogits);
    sparse_free(R.sp);
    model_free(R.dm);
    model_free(R.m);
    free(text);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

/* A value of an option that did not parse: one line, and -1. */
static int bad_value(const char *name, const char *expect, const char *v)
{
    fprintf(stderr, "inflash: %s: expected %s, got '%s'\n", name, expect, v);
    return -1;
}

static int int_opt(const char *v, int64_t lo, int64_t hi, int64_t *out, const char *name, const char *expect)
{
    return cli_parse_i64(v, lo, hi, out) ? bad_value(name, expect, v) : 0;
}

static int real_opt(const char *v, double lo, double hi, double *out, const char *name, const char *expect)
{
    return cli_parse_f64(v, lo, hi, out) ? bad_value(name, expect, v) : 0;
}

enum { O_TOPP = 256, O_SEED, O_IDS, O_MODE, O_STATS, O_THREADS, O_PPL, O_RESIDENT, O_STORE, O_DUMP, O_PIDS, O_PERLINE,
       O_WINDOW, O_BUDGET, O_RECALL, O_CMPDENSE, O_READERS, O_MMAP, O_TAU, O_SPECIAL, O_BATCH,
       O_DUMPIDS };

static const struct option cli_longs[] = {
    {"prompt", required_argument, 0, 'p'},  {"file", required_argument, 0, 'f'},
    {"tokens", required_argument, 0, 'n'},  {"temperature", required_argument, 0, 't'},
    {"top-p", required_argument, 0, O_TOPP}, {"seed", required_argument, 0, O_SEED},
    {"ids", no_argument, 0, O_IDS},         {"mode", required_argument, 0, O_MODE},
    {"stats", required_argument, 0, O_STATS}, {"threads", required_argument, 0, O_THREADS},
    {"perplexity", required_argument, 0, O_PPL}, {"dense-resident", no_argument, 0, O_RESIDENT},
    {"store", required_argument, 0, O_STORE}, {"dump-logits", required_argument, 0, O_DUMP},
    {"prompt-ids", required_argument, 0, O_PIDS}, {"dump-ids", required_argument, 0, O_DUMPIDS},
    {"per-line", no_argument, 0, O_PERLINE}, {"help", no_argument, 0, 'h'},
    {"window", required_argument, 0, O_WINDOW}, {"dram-budget", required_argument, 0, O_BUDGET},
    {"check-recall", no_argument, 0, O_RECALL}, {"compare-dense", no_argument, 0, O_CMPDENSE},
    {"readers", required_argument, 0, O_READERS}, {"mmap", no_argument, 0, O_MMAP},
    {"threshold-shift", required_argument, 0, O_TAU},
    {"special", no_argument, 0, O_SPECIAL}, {"ctx-size", required_argument, 0, 'c'},
    {"batch", required_argument, 0, O_BATCH}, {"verbose", no_argument, 0, 'v'},
    {0, 0, 0, 0},
};

static void opts_default(cli_opts *o)
{
    o->n_gen = 128;
    o->temperature = 1.0;
    o->top_p = 0.9;
    o->seed = (uint64_t)time(NULL);
    o->window = 4;
    o->readers = -1;
}

/* The options of the sparse modes (refused with --mode dense). */
static int is_sparse_opt(int ch)
{
    return ch == O_WINDOW || ch == O_BUDGET || ch == O_RECALL || ch == O_CMPDENSE || ch == O_READERS || ch == O_TAU;
}

/* One option ch (value v, or NULL) into o: 0, or -1 after a message. */
static int set_option(cli_opts *o, int ch, const char *v)
{
    int64_t x;
    o->sparse_opt |= is_sparse_opt(ch);
    switch (ch) {
    case 'p': o->prompt = v; break;
    case 'f': o->prompt_file = v; break;
    case 'n': return int_opt(v, 0, INT32_MAX, &o->n_gen, "-n", "a token count >= 0");
    case 't': return real_opt(v, 0.0, 100.0, &o->temperature, "-t", "a temperature in [0, 100]");
    case O_TOPP:
        if (cli_parse_f64(v, 0.0, 1.0, &o->top_p) || o->top_p <= 0.0)
            return bad_value("--top-p", "a value in (0, 1]", v);
        break;
    case O_SEED:
        if (int_opt(v, 0, INT64_MAX, &x, "--seed", "a non-negative integer") < 0)
            return -1;
        o->seed = (uint64_t)x;
        break;
    case O_IDS: o->print_ids = 1; break;
    case O_MODE:
        if (strcmp(v, "dense") == 0)
            o->mode = CLI_DENSE;
        else if (strcmp(v, "oracle") == 0)
            o->mode = CLI_ORACLE;
        else if (strcmp(v, "predict") == 0)
            o->mode = CLI_PREDICT;
        else
            return bad_value("--mode", "dense, oracle or predict", v);
        break;
    case O_STATS: o->stats_file = v; break;
    case O_THREADS:
        if (int_opt(v, 1, 1024, &x, "--threads", "1..1024") < 0)
            return -1;
        o->threads = (int)x;
        break;
    case O_PPL: o->ppl_file = v; break;
    case O_RESIDENT: o->dense_resident = 1; break;
    case O_STORE: o->store_dir = v; break;
    case O_DUMP: o->dump_logits = v; break;
    case O_PIDS: o->prompt_ids = v; break;
    case O_DUMPIDS: o->dump_ids = v; break;
    case O_PERLINE: o->ppl_per_line = 1; break;
    case O_WINDOW: return int_opt(v, 1, 1024, &o->window, "--window", "1..1024 tokens");
    case O_BUDGET:
        if (cli_parse_size(v, 1048576, &o->budget_bytes) < 0 || o->budget_bytes == 0)
            return bad_value("--dram-budget", "a size > 0 (512m, 2g; a bare number is MiB)", v);
        break;
    case O_RECALL: o->check_recall = 1; break;
    case O_CMPDENSE: o->compare_dense = 1; break;
    case O_READERS:
        if (int_opt(v, 0, 64, &x, "--readers", "0..64") < 0)
            return -1;
        o->readers = (int)x;
        break;
    case O_MMAP: o->mmap = 1; break;
    case O_TAU: return real_opt(v, -100.0, 100.0, &o->tau_shift, "--threshold-shift", "a number in [-100, 100]");
    case O_SPECIAL: o->special = 1; break;
    case 'c': return int_opt(v, 2, 1 << 24, &o->ctx, "-c", "a context of 2.. positions");
    case O_BATCH: return int_opt(v, 1, 1 << 16, &o->batch, "--batch", "1..65536 positions");
    case 'v': o->verbose = 1; break;
    }
    return 0;
}

/* The options that go together: the first rule broken is the message. */
static int check_combinations(const cli_opts *o)
{
    const struct {
        int         broken;
        const char *msg;
    } rules[] = {
        {!!o->prompt + !!o->prompt_file + !!o->prompt_ids > 1, "give the prompt once (-p or -f)"},
        {o->ppl_per_line && !o->ppl_file, "--per-line goes with --perplexity"},
        {o->ppl_file && (o->prompt || o->prompt_file || o->prompt_ids), "--perplexity takes no prompt"},
        {o->sparse_opt && o->mode == CLI_DENSE,
         "--window, --dram-budget, --check-recall, --compare-dense, --readers and --threshold-shift go with "
         "--mode oracle or predict"},
        {o->compare_dense && !o->ppl_file, "--compare-dense goes with --perplexity"},
        {o->dump_ids && !o->ppl_file, "--dump-ids goes with --perplexity"},
        {o->mmap && (!o->store_dir || o->mode != CLI_DENSE || o->dense_resident),
         "--mmap goes with --store and --mode dense (not --dense-resident)"},
        {o->dense_resident && o->mode != CLI_DENSE, "--dense-resident goes with --mode dense"},
        {o->special && (o->ppl_file || o->prompt_ids), "--special goes with a prompt (-p or -f)"},
        {o->batch && o->mode != CLI_DENSE, "--batch goes with --mode dense (the sparse modes go one position at a time)"},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (rules[i].broken) {
            fprintf(stderr, "inflash: %s\n", rules[i].msg);
            return -1;
        }
    return 0;
}

/* The command line into o: 0, 1 for --help, or -1 after a message. */
static int parse_args(int argc, char **argv, cli_opts *o)
{
    opts_default(o);
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":p:f:n:t:c:vh", cli_longs, NULL)) != -1) {
        if (ch == 'h')
            return 1;
        if (ch == ':' || ch == '?')
            return cli_bad_option("inflash", ch, argv);
        if (set_option(o, ch, optarg) < 0)
            return -1;
    }
    int npos = argc - optind;
    if (o->store_dir ? npos != 0 : npos != 1) {
        fprintf(stderr, o->store_dir ? "inflash: --store takes no MOUNTPOINT as well (see --help)\n"
                                     : "inflash: expected one MOUNTPOINT (see --help)\n");
        return -1;
    }
    if (!o->store_dir)
        o->mount = argv[optind];
    return check_combinations(o);
}

/* predict needs the predictors; oracle of a SwiGLU model the activity
 * thresholds. (Oracle of an activation with exact zeros needs nothing:
 * active = term != 0, activity.h.) */
static int needs_calibration(const cli_opts *o, const source *src)
{
    const hp_config *hp = source_hparams(src);
    act_crit exact;
    return o->mode == CLI_PREDICT || (o->mode == CLI_ORACLE && hp_exact_crit(hp, &exact) != 0);
}

int main(int argc, char **argv)
{
    cli_opts o = {0};
    int pr = parse_args(argc, argv, &o);
    if (pr > 0) {
        cli_usage(stdout);
        return 0;
    }
    if (pr < 0)
        return EXIT_USAGE;
    if (o.threads > 0)
        openblas_set_num_threads(o.threads);

    ierr err = IERR_INIT;
    source *src = NULL;
    tok *tk = NULL;
    int rc = o.mmap ? source_open_store_mapped(o.store_dir, &src, &err)
             : o.store_dir ? source_open_store(o.store_dir, &src, &err)
                           : source_open_mount(o.mount, &src, &err);
    if (rc == 0 && needs_calibration(&o, src)) {
        store_calib cal;
        if (source_calib(src, 0, &cal, NULL) == -ENOENT) {
            ierr_set(&err, -ENOENT, "--mode %s needs a calibrated store%s (run inflash-calibrate on it)",
                     mode_name(o.mode), o.mode == CLI_ORACLE ? " for a SwiGLU model" : "");
            rc = RC_USAGE;
        }
    }
    if (rc == 0 && !o.prompt_ids)
        rc = source_tok(src, &tk, &err);
    if (rc == 0)
        rc = o.ppl_file ? perplexity(&o, src, tk, &err) : generate(&o, src, tk, &err);
    if (rc) {
        if (line_open)
            emit("\n", 1);   /* the error starts a line of its own on a terminal */
        fflush(stdout);
        fprintf(stderr, "inflash: %s%s\n", err.msg,
                rc == -EIO ? " (the store may be damaged: the inflashfs log names the neuron; "
                             "check it with inflash-inspect --verify STORE)" : "");
    }
    tok_free(tk);
    source_close(src);
    return rc == RC_USAGE ? EXIT_USAGE : rc ? EXIT_RUNTIME : 0;
}
