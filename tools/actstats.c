/* actstats.c: inflash-actstats, which measures the FFN activation statistics
 * of a model with the client's own dense forward pass (client/model.h, its
 * model_ffn_hook): per layer the sparsity, the active neurons per token and
 * the neurons never active, and for a sliding window of k = 1..KMAX tokens
 * the fraction of the FFN that each token needs and the previous k tokens
 * did not (what a window cache of the true active sets would newly load),
 * beside the same figure for independent tokens with the same per-neuron
 * frequencies (so the part due to token-to-token correlation shows). It also
 * prints the quantiles of the per-neuron frequency distribution, which is
 * how inflash-mkmodel's synthetic frequencies were derived from the demo.
 * "Active" is the calibration's criterion (layout/activity.h): exact (term
 * != 0) for the activations with exact zeros, calibrated for SwiGLU. */
#include "activity.h"
#include "cli.h"
#include "hparams.h"
#include "io.h"
#include "model.h"
#include "sample.h"
#include "source.h"
#include "tok.h"

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROG         "inflash-actstats"
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
#define MAX_TEXT     ((size_t)1 << 30)
#define KMAX_LIMIT   32
#define N_QUANT      64               /* quantiles printed by --quantiles */

typedef struct {
    const char *mount;
    const char *store_dir;
    const char *text;       /* --text */
    const char *ids_file;   /* --ids */
    const char *json;       /* --json */
    uint64_t    offset;     /* --offset (bytes into the text) */
    int64_t     prompt;     /* --prompt (positions, BOS included) */
    int64_t     gen;        /* --gen */
    int         generate;   /* --generate: sample the --gen tokens */
    double      temperature;
    double      top_p;
    uint64_t    seed;
    int64_t     kmax;       /* --kmax */
    int64_t     freq_tokens;/* --freq N: frequency run over N text tokens (0: off) */
    int64_t     chunk;      /* --chunk: positions per window of the frequency run */
    int         quantiles;  /* --quantiles */
    double      act_thr;    /* --act-threshold (gated, uncalibrated) */
    act_crit    crit;       /* --criterion (gated, uncalibrated; default gate) */
} as_opts;

/* "silu, gate or product" (activity.h) */
static const char *gated_flags(void)
{
    static char names[64];
    act_thresholded_flags(names, sizeof names);
    return names;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " MOUNTPOINT | --store DIR  (--text FILE | --ids FILE) [options]\n"
            "\n"
            "Measure a model's FFN activation statistics with the client's dense forward\n"
            "pass: per layer the sparsity (fraction of neurons inactive), active neurons\n"
            "per token, neurons never active, and for windows k = 1..KMAX the fraction of\n"
            "the FFN active for a token and not active in the k tokens before it (what a\n"
            "window cache of the true active sets loads per token), with the same figure\n"
            "for independent tokens with the same per-neuron frequencies.\n"
            "\n"
            "A run is PROMPT positions (BOS + text) followed by GEN positions, which are\n"
            "the next text tokens (teacher-forced, default), sampled from the model\n"
            "(--generate), or given by --ids; the window figures are averaged over the GEN\n"
            "positions and, separately, over all positions from KMAX on.\n"
            "\n"
            "  --text FILE        text to tokenize (UTF-8)\n"
            "  --offset BYTES     start that many bytes into the text (default 0)\n"
            "  --ids FILE         token ids instead (whitespace separated; a leading\n"
            "                     'ids:' as printed by `inflash --ids` is skipped)\n"
            "  --prompt N         prompt positions including BOS (default 128)\n"
            "  --gen N            positions after the prompt (default 64)\n"
            "  --generate         sample the GEN tokens from the model (one dense pass each)\n"
            "  -t T               temperature for --generate (default 0.8; 0 = greedy)\n"
            "  --top-p P          nucleus threshold for --generate (default 0.9)\n"
            "  --seed S           sampling seed (default 1)\n"
            "  --kmax K           largest window (default 8, at most 32)\n"
            "  --freq N           instead: score N text tokens (0 = all) in windows of\n"
            "                     --chunk positions (BOS + text), per-layer statistics only\n"
            "  --chunk N          positions per window of --freq (default: min(512, max_pos))\n"
            "  --quantiles        print the per-neuron frequency distribution (frequency\n"
            "                     divided by its layer's mean, pooled over layers) as %d\n"
            "                     quantiles\n"
            "  --act-threshold A  SwiGLU models without calibration: active iff the\n"
            "                     --criterion value exceeds A (calibrated stores use their\n"
            "                     criterion and thresholds; the activations with exact\n"
            "                     zeros need neither: active iff the term is non-zero)\n"
            "  --criterion C      with --act-threshold: %s (as in\n"
            "                     inflash-calibrate; default gate: |silu(gate)|)\n"
            "  --json FILE        write the figures as JSON\n"
            "  -h, --help         this text\n"
            "\n"
            "The dense pass reads every layer's whole FFN per forward call: the text run\n"
            "is one batch (one pass); --generate costs one pass per generated token.\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n",
            N_QUANT, gated_flags());
}

/* ---- activity ---------------------------------------------------------------- */

/* What the hook fills: one bit per (layer, position, neuron), and the
 * per-neuron active counts over everything scored. */
typedef struct {
    int64_t   L, F, T;        /* layers, neurons, positions held */
    int64_t   words;          /* uint64 words per (layer, position) */
    uint64_t *bits;           /* [L][T][words]; owned */
    uint64_t *count;          /* [L][F] active counts; owned */
    int64_t  *scored;         /* [L] positions counted in count */
    int64_t   base;           /* position of bits row 0 */
    act_crit  crit;           /* what "active" means (activity.h) */
    double   *thr;            /* [L] the layer's threshold (0 for exact zeros) */
    const hp_config *hp;      /* the model's (the per-layer activation); not owned */
} as_acc;

static void hook(void *ctx, int64_t layer, int64_t pos, int64_t n, const float *x, const float *up,
                 const float *gate)
{
    (void)x;
    as_acc *a = ctx;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = pos + i - a->base;
        uint64_t *row = (a->bits && t >= 0 && t < a->T) ? a->bits + (layer * a->T + t) * a->words : NULL;
        const float *u = up + i * a->F, *g = gate ? gate + i * a->F : NULL;
        uint64_t *cnt = a->count + layer * a->F;
        const act_spec as = hp_act_spec(a->hp, layer);
        for (int64_t j = 0; j < a->F; j++)
            if (act_is_active(a->crit, as, g ? g[j] : 0.0f, u[j], a->thr[layer])) {
                cnt[j]++;
                if (row)
                    row[j >> 6] |= (uint64_t)1 << (j & 63);
            }
        a->scored[layer]++;
    }
}

static int acc_init(as_acc *a, const model *m, int64_t T, const as_opts *o, ierr *err)
{
    const hp_config *c = &m->cfg;
    memset(a, 0, sizeof *a);
    a->L = c->n_layers;
    a->F = c->d_ffn;
    a->T = T;
    a->words = (a->F + 63) / 64;
    a->count = calloc((size_t)(a->L * a->F), sizeof *a->count);
    a->scored = calloc((size_t)a->L, sizeof *a->scored);
    a->thr = calloc((size_t)a->L, sizeof *a->thr);
    if (T > 0)
        a->bits = calloc((size_t)(a->L * T * a->words), sizeof *a->bits);
    if (!a->count || !a->scored || !a->thr || (T > 0 && !a->bits))
        return ierr_set(err, -ENOMEM, "out of memory for the activity bitmaps");
    a->hp = c;
    a->crit = ACT_RELU;
    if (hp_exact_crit(c, &a->crit) == 0)
        return 0;   /* exact zeros: term != 0, thresholds 0 */
    const char *cr = source_calib_criterion(m->src);
    if (cr) {
        if (act_parse(cr, &a->crit) || !act_thresholded(a->crit))
            return ierr_set(err, -EINVAL, "unknown calibration criterion '%s' for a gated model", cr);
        for (int64_t l = 0; l < a->L; l++) {
            store_calib cal;
            int rc = source_calib(m->src, l, &cal, err);
            if (rc)
                return rc;
            a->thr[l] = cal.act_threshold;
        }
        return 0;
    }
    if (!(o->act_thr > 0))
        return ierr_set(err, -EINVAL, "a gated model needs a calibrated store or --act-threshold");
    a->crit = o->crit;
    for (int64_t l = 0; l < a->L; l++)
        a->thr[l] = o->act_thr;
    return 0;
}

static void acc_free(as_acc *a)
{
    free(a->bits);
    free(a->count);
    free(a->scored);
    free(a->thr);
}

/* ---- figures ------------------------------------------------------------------- */

typedef struct {
    double sparsity;           /* 1 - active pairs / (positions * F) */
    double active_mean, active_p99;
    int64_t active_max;
    int64_t never;             /* neurons with a zero count */
    /* window figures, fractions of F, [k-1]; NAN when not measured */
    double new_gen[KMAX_LIMIT];     /* over the GEN positions */
    double new_all[KMAX_LIMIT];     /* over positions >= kmax */
    double indep[KMAX_LIMIT];       /* sum_j p_j (1 - p_j)^k / F */
    double union_all[KMAX_LIMIT];   /* |active in the last k tokens| / F, positions >= kmax */
} as_layer;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t popcount_row(const uint64_t *r, int64_t words)
{
    int64_t n = 0;
    for (int64_t w = 0; w < words; w++)
        n += __builtin_popcountll(r[w]);
    return n;
}

/* Per-layer figures of the run held in a (positions [0, T)); gen0: first GEN position. */
static int layer_figures(const as_acc *a, int64_t l, int64_t gen0, int64_t kmax, as_layer *o, ierr *err)
{
    int64_t F = a->F, W = a->words, T = a->T;
    const uint64_t *cnt = a->count + l * F;
    uint64_t pairs = 0;
    o->never = 0;
    for (int64_t j = 0; j < F; j++) {
        pairs += cnt[j];
        o->never += cnt[j] == 0;
    }
    int64_t S = a->scored[l] > 0 ? a->scored[l] : 1;
    o->sparsity = 1.0 - (double)pairs / ((double)S * (double)F);
    for (int64_t k = 1; k <= kmax; k++) {
        double s = 0;
        for (int64_t j = 0; j < F; j++) {
            double p = (double)cnt[j] / (double)S;
            s += p * pow(1.0 - p, (double)k);
        }
        o->indep[k - 1] = s / (double)F;
        o->new_gen[k - 1] = o->new_all[k - 1] = o->union_all[k - 1] = NAN;
    }
    o->active_mean = (double)pairs / (double)S;
    o->active_p99 = NAN;
    o->active_max = 0;
    if (!a->bits || T == 0)
        return 0;
    int64_t *act = malloc((size_t)T * sizeof *act);
    uint64_t *uni = malloc((size_t)W * sizeof *uni);
    if (!act || !uni) {
        free(act);
        free(uni);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    for (int64_t t = 0; t < T; t++)
        act[t] = popcount_row(a->bits + (l * T + t) * W, W);
    qsort(act, (size_t)T, sizeof *act, cmp_i64);
    o->active_p99 = (double)act[(int64_t)floor(0.99 * (double)(T - 1))];
    o->active_max = act[T - 1];
    for (int64_t k = 1; k <= kmax; k++) {
        double ng = 0, na = 0, ua = 0;
        int64_t cg = 0, ca = 0;
        for (int64_t t = k; t < T; t++) {
            const uint64_t *cur = a->bits + (l * T + t) * W;
            memset(uni, 0, (size_t)W * sizeof *uni);
            for (int64_t s = t - k; s < t; s++) {
                const uint64_t *r = a->bits + (l * T + s) * W;
                for (int64_t w = 0; w < W; w++)
                    uni[w] |= r[w];
            }
            /* fresh: active at t, not in the k before; un: the window after t
             * (t and the k-1 before it), the set a window cache holds */
            int64_t fresh = 0, un = 0;
            for (int64_t w = 0; w < W; w++) {
                fresh += __builtin_popcountll(cur[w] & ~uni[w]);
                uint64_t u = cur[w];
                for (int64_t s = t - k + 1; s < t; s++)
                    u |= a->bits[(l * T + s) * W + w];
                un += __builtin_popcountll(u);
            }
            if (t >= gen0) {
                ng += (double)fresh;
                cg++;
            }
            if (t >= kmax) {
                na += (double)fresh;
                ua += (double)un;
                ca++;
            }
        }
        if (cg)
            o->new_gen[k - 1] = ng / (double)cg / (double)F;
        if (ca) {
            o->new_all[k - 1] = na / (double)ca / (double)F;
            o->union_all[k - 1] = ua / (double)ca / (double)F;
        }
    }
    free(act);
    free(uni);
    return 0;
}

/* ---- input ------------------------------------------------------------------- */

/* Text tokens from --text at --offset (at most max_tokens; 0 = all). */
static int text_tokens(source *src, const as_opts *o, int64_t max_tokens, int32_t **ids, int64_t *n, ierr *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = io_read_file(o->text, MAX_TEXT, &text, &len, err);
    if (rc)
        return rc;
    if (o->offset >= len) {
        free(text);
        return ierr_set(err, -EINVAL, "%s: --offset %" PRIu64 " is past the end (%zu bytes)", o->text, o->offset, len);
    }
    /* a bounded slice is enough for a short run (~2.3 bytes/token in the demo) */
    size_t take = len - (size_t)o->offset;
    if (max_tokens > 0 && (uint64_t)take > (uint64_t)max_tokens * 64u)
        take = (size_t)max_tokens * 64u;
    while (take > 0 && ((unsigned char)text[o->offset + take] & 0xC0) == 0x80)
        take--;   /* do not cut a UTF-8 sequence */
    tok *tk = NULL;
    size_t cnt = 0;
    rc = source_tok(src, &tk, err);
    if (rc == 0)
        rc = tok_encode(tk, text + o->offset, take, ids, &cnt, err);
    tok_free(tk);
    free(text);
    if (rc)
        return rc;
    *n = (int64_t)cnt;
    if (max_tokens > 0 && *n > max_tokens)
        *n = max_tokens;
    return 0;
}

static int read_ids(const char *path, int32_t **ids, int64_t *n, ierr *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = io_read_file(path, MAX_TEXT, &text, &len, err);
    if (rc)
        return rc;
    int64_t cap = 256, cnt = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    char *p = text, *end = text + len;
    if (!v) {
        free(text);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
            p++;
        if (p >= end)
            break;
        if (end - p >= 4 && memcmp(p, "ids:", 4) == 0) {
            p += 4;
            continue;
        }
        char *q;
        errno = 0;
        long x = strtol(p, &q, 10);
        if (q == p || errno || x < 0 || x > INT32_MAX || (q < end && !strchr(" \n\t\r", *q))) {
            free(v);
            free(text);
            return ierr_set(err, -EINVAL, "%s: not a token id at byte %td", path, p - text);
        }
        if (cnt == cap) {
            int32_t *nv = realloc(v, (size_t)(cap *= 2) * sizeof *nv);
            if (!nv) {
                free(v);
                free(text);
                return ierr_set(err, -ENOMEM, "out of memory");
            }
            v = nv;
        }
        v[cnt++] = (int32_t)x;
        p = q;
    }
    free(text);
    *ids = v;
    *n = cnt;
    return 0;
}

/* ---- runs -------------------------------------------------------------------- */

/* The PROMPT + GEN run: fills a (bits of every position). ids [P+G] on return. */
static int run_window(source *src, const as_opts *o, as_acc *a, model **mout, int32_t **ids_out, int64_t *P_out,
                      int64_t *n_out, ierr *err)
{
    const hp_config *c = source_hparams(src);
    int32_t *ids = NULL, *txt = NULL;
    int64_t n = 0, P = o->prompt, G = o->gen;
    int rc = 0;
    if (o->ids_file) {
        rc = read_ids(o->ids_file, &ids, &n, err);
        if (rc)
            return rc;
        if (n < 2) {
            free(ids);
            return ierr_set(err, -EINVAL, "%s: fewer than 2 ids", o->ids_file);
        }
        if (P > n)
            P = n;
        G = n - P;
    } else {
        int64_t want = P - (c->bos_id >= 0 ? 1 : 0) + (o->generate ? 0 : G);
        int64_t nt = 0;
        rc = text_tokens(src, o, want, &txt, &nt, err);
        if (rc)
            return rc;
        if (nt < want) {
            free(txt);
            return ierr_set(err, -EINVAL, "%s: only %" PRId64 " tokens after --offset, need %" PRId64, o->text, nt,
                            want);
        }
        ids = malloc((size_t)(P + G) * sizeof *ids);
        if (!ids) {
            free(txt);
            return ierr_set(err, -ENOMEM, "out of memory");
        }
        int64_t b = 0;
        if (c->bos_id >= 0)
            ids[b++] = (int32_t)c->bos_id;
        memcpy(ids + b, txt, (size_t)want * sizeof *ids);
        free(txt);
        n = o->generate ? P : P + G;
    }
    int64_t total = P + G;
    if (total > c->max_pos) {
        free(ids);
        return ierr_set(err, -E2BIG, "%" PRId64 " positions, more than the model's %" PRId64, total, c->max_pos);
    }
    model *m = NULL;
    rc = model_new(src, total, o->generate ? P : total, &m, err);
    if (rc == 0)
        rc = acc_init(a, m, total, o, err);
    if (rc) {
        free(ids);
        model_free(m);
        return rc;
    }
    m->ffn_hook = hook;
    m->ffn_hook_ctx = a;
    rc = model_forward(m, ids, n, 0, err);
    if (rc == 0 && o->generate) {
        sampler *smp = NULL;
        float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
        rc = logits ? sample_new(&smp, c->vocab_size, (float)o->temperature, (float)o->top_p, o->seed, err)
                    : ierr_set(err, -ENOMEM, "out of memory");
        int64_t row = P - 1;
        for (int64_t t = P; rc == 0 && t < total; t++) {
            model_logits(m, row, 1, logits);
            ids[t] = (int32_t)sample_next(smp, logits);
            rc = model_forward(m, ids + t, 1, t, err);
            row = 0;
            if (isatty(2))
                fprintf(stderr, "\r" PROG ": generated %" PRId64 "/%" PRId64, t - P + 1, G);
        }
        if (G > 0 && isatty(2))
            fprintf(stderr, "\n");
        sample_free(smp);
        free(logits);
    }
    if (rc) {
        free(ids);
        model_free(m);
        return rc;
    }
    *mout = m;
    *ids_out = ids;
    *P_out = P;
    *n_out = total;
    return 0;
}

/* --freq: score the text in windows of `chunk` positions, counting only. */
static int run_freq(source *src, const as_opts *o, as_acc *a, model **mout, int64_t *tokens, ierr *err)
{
    const hp_config *c = source_hparams(src);
    int64_t chunk = o->chunk > 0 ? o->chunk : (c->max_pos < 512 ? c->max_pos : 512);
    if (chunk > c->max_pos)
        chunk = c->max_pos;
    int32_t *txt = NULL;
    int64_t nt = 0;
    int rc = text_tokens(src, o, o->freq_tokens, &txt, &nt, err);
    if (rc)
        return rc;
    model *m = NULL;
    rc = model_new(src, chunk, chunk, &m, err);
    if (rc == 0)
        rc = acc_init(a, m, 0, o, err);
    int32_t *buf = malloc((size_t)chunk * sizeof *buf);
    if (rc == 0 && !buf)
        rc = ierr_set(err, -ENOMEM, "out of memory");
    if (rc == 0) {
        m->ffn_hook = hook;
        m->ffn_hook_ctx = a;
    }
    int64_t b = c->bos_id >= 0 ? 1 : 0, per = chunk - b;
    for (int64_t i = 0; rc == 0 && i < nt; i += per) {
        int64_t len = nt - i < per ? nt - i : per;
        if (b)
            buf[0] = (int32_t)c->bos_id;
        memcpy(buf + b, txt + i, (size_t)len * sizeof *buf);
        rc = model_forward(m, buf, len + b, 0, err);
        if (isatty(2))
            fprintf(stderr, "\r" PROG ": %" PRId64 "/%" PRId64 " tokens", i + len, nt);
    }
    if (isatty(2))
        fprintf(stderr, "\n");
    free(buf);
    free(txt);
    if (rc) {
        model_free(m);
        return rc;
    }
    *mout = m;
    *tokens = nt;
    return 0;
}

/* ---- output ------------------------------------------------------------------ */

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantiles of p_j / mean_j(p_j) over all layers' neurons: q[i] at i/(N_QUANT-1). */
static int freq_quantiles(const as_acc *a, double *q, ierr *err)
{
    int64_t F = a->F, n = a->L * F;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return ierr_set(err, -ENOMEM, "out of memory");
    for (int64_t l = 0; l < a->L; l++) {
        double mean = 0;
        for (int64_t j = 0; j < F; j++)
            mean += (double)a->count[l * F + j];
        mean /= (double)F;
        for (int64_t j = 0; j < F; j++)
            v[l * F + j] = mean > 0 ? (double)a->count[l * F + j] / mean : 0.0;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    for (int i = 0; i < N_QUANT; i++)
        q[i] = v[(int64_t)llround((double)i / (N_QUANT - 1) * (double)(n - 1))];
    free(v);
    return 0;
}

static void json_arr(FILE *f, const char *key, const double *v, int64_t n, const char *tail)
{
    fprintf(f, "\"%s\": [", key);
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i]))
            fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
        else
            fprintf(f, "%snull", i ? ", " : "");
    fprintf(f, "]%s", tail);
}

static void mean_layers(const as_layer *ly, int64_t L, int64_t kmax, as_layer *m)
{
    memset(m, 0, sizeof *m);
    for (int64_t l = 0; l < L; l++) {
        m->sparsity += ly[l].sparsity / (double)L;
        m->active_mean += ly[l].active_mean / (double)L;
        m->active_p99 += ly[l].active_p99 / (double)L;
        m->never += ly[l].never;
        if (ly[l].active_max > m->active_max)
            m->active_max = ly[l].active_max;
        for (int64_t k = 0; k < kmax; k++) {
            m->new_gen[k] += ly[l].new_gen[k] / (double)L;
            m->new_all[k] += ly[l].new_all[k] / (double)L;
            m->indep[k] += ly[l].indep[k] / (double)L;
            m->union_all[k] += ly[l].union_all[k] / (double)L;
        }
    }
}

/* A percentage cell of width 6, "-" when not measured. */
static void pct_cell(double frac, const char *suffix)
{
    if (isfinite(frac))
        printf(" %5.2f%%%s", 100.0 * frac, suffix);
    else
        printf("      -%s", suffix);
}

static void print_table(const as_layer *ly, const as_layer *mean, int64_t L, int64_t F, int64_t kmax, int window,
                        int have_gen)
{
    printf("| layer | sparsity | active/token | p99 | max | never active |");
    if (window)
        for (int64_t k = 1; k <= kmax; k++)
            printf(" new k=%" PRId64 " |", k);
    printf("\n|---|---|---|---|---|---|");
    if (window)
        for (int64_t k = 1; k <= kmax; k++)
            printf("---|");
    printf("\n");
    for (int64_t l = 0; l <= L; l++) {
        const as_layer *x = l < L ? &ly[l] : mean;
        if (l < L)
            printf("| %" PRId64 " |", l);
        else
            printf("| **mean** |");
        printf(" %.4f | %.1f |", x->sparsity, x->active_mean);
        if (window)
            printf(" %.0f | %" PRId64 " |", x->active_p99, x->active_max);
        else
            printf(" - | - |");
        printf(" %" PRId64 "%s |", l < L ? x->never : (int64_t)llround((double)x->never / (double)L),
               l < L ? "" : " (per layer)");
        if (window)
            for (int64_t k = 0; k < kmax; k++)
                pct_cell(have_gen ? x->new_gen[k] : x->new_all[k], " |");
        printf("\n");
    }
    (void)F;
    if (window) {
        printf("\nwindow k:                       ");
        for (int64_t k = 1; k <= kmax; k++)
            printf(" %6" PRId64, k);
        printf("\nnew %% of FFN, %-18s", have_gen ? "GEN positions:" : "all positions:");
        for (int64_t k = 0; k < kmax; k++)
            pct_cell(have_gen ? mean->new_gen[k] : mean->new_all[k], "");
        printf("\nnew %% of FFN, all positions:     ");
        for (int64_t k = 0; k < kmax; k++)
            pct_cell(mean->new_all[k], "");
        printf("\nnew %% if tokens independent:     ");
        for (int64_t k = 0; k < kmax; k++)
            pct_cell(mean->indep[k], "");
        printf("\nnew / active set, all positions: ");
        for (int64_t k = 0; k < kmax; k++)
            pct_cell(mean->new_all[k] / (1.0 - mean->sparsity), "");
        printf("\nwindow union %% of FFN:           ");
        for (int64_t k = 0; k < kmax; k++)
            pct_cell(mean->union_all[k], "");
        printf("\n");
    }
}

static int write_json(const char *path, const as_opts *o, const model *m, const as_layer *ly, const as_layer *mean,
                      int window, int64_t P, int64_t T, int64_t tokens, const double *quant, const int32_t *ids,
                      ierr *err)
{
    const hp_config *c = &m->cfg;
    FILE *f = fopen(path, "w");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    fprintf(f, "{\n  \"tool\": \"" PROG "\",\n  \"family\": \"%s\",\n  \"d_model\": %" PRId64 ",\n  \"d_ffn\": %" PRId64
               ",\n  \"n_layers\": %" PRId64 ",\n",
            hp_family_name(c->family), c->d_model, c->d_ffn, c->n_layers);
    if (window)
        fprintf(f, "  \"run\": \"%s\",\n  \"prompt_positions\": %" PRId64 ",\n  \"gen_positions\": %" PRId64 ",\n",
                o->ids_file ? "ids" : o->generate ? "generate" : "teacher-forced", P, T - P);
    else
        fprintf(f, "  \"run\": \"freq\",\n  \"tokens\": %" PRId64 ",\n", tokens);
    fprintf(f, "  \"kmax\": %" PRId64 ",\n  \"mean\": {\"sparsity\": %.6f, \"active_per_token\": %.3f, ", o->kmax,
            mean->sparsity, mean->active_mean);
    json_arr(f, "new_fraction_gen", mean->new_gen, o->kmax, ", ");
    json_arr(f, "new_fraction_all", mean->new_all, o->kmax, ", ");
    json_arr(f, "new_fraction_independent", mean->indep, o->kmax, ", ");
    json_arr(f, "window_union_fraction", mean->union_all, o->kmax, "},\n");
    fprintf(f, "  \"layers\": [\n");
    for (int64_t l = 0; l < c->n_layers; l++) {
        const as_layer *x = &ly[l];
        fprintf(f, "    {\"layer\": %" PRId64 ", \"sparsity\": %.6f, \"active_per_token\": %.3f, ", l, x->sparsity,
                x->active_mean);
        if (isfinite(x->active_p99))
            fprintf(f, "\"active_p99\": %.0f, \"active_max\": %" PRId64 ", ", x->active_p99, x->active_max);
        fprintf(f, "\"never_active\": %" PRId64 ", ", x->never);
        json_arr(f, "new_fraction_gen", x->new_gen, o->kmax, ", ");
        json_arr(f, "new_fraction_all", x->new_all, o->kmax, ", ");
        json_arr(f, "new_fraction_independent", x->indep, o->kmax, "}");
        fprintf(f, "%s\n", l + 1 < c->n_layers ? "," : "");
    }
    fprintf(f, "  ]");
    if (quant) {
        fprintf(f, ",\n  ");
        json_arr(f, "freq_over_mean_quantiles", quant, N_QUANT, "");
    }
    if (ids) {
        fprintf(f, ",\n  \"ids\": [");
        for (int64_t i = 0; i < T; i++)
            fprintf(f, "%s%d", i ? ", " : "", (int)ids[i]);
        fprintf(f, "]");
    }
    fprintf(f, "\n}\n");
    if (fclose(f) != 0)
        return ierr_set(err, -EIO, "%s: write error", path);
    return 0;
}

/* ---- main -------------------------------------------------------------------- */

static int parse_args(int argc, char **argv, as_opts *o)
{
    enum { O_STORE = 256, O_TEXT, O_IDS, O_JSON, O_OFFSET, O_PROMPT, O_GEN, O_GENERATE, O_TOPP, O_SEED, O_KMAX,
           O_FREQ, O_CHUNK, O_QUANT, O_ACT, O_CRIT };
    static const struct option lo[] = {
        {"store", required_argument, 0, O_STORE},   {"text", required_argument, 0, O_TEXT},
        {"ids", required_argument, 0, O_IDS},       {"json", required_argument, 0, O_JSON},
        {"offset", required_argument, 0, O_OFFSET}, {"prompt", required_argument, 0, O_PROMPT},
        {"gen", required_argument, 0, O_GEN},       {"generate", no_argument, 0, O_GENERATE},
        {"top-p", required_argument, 0, O_TOPP},    {"seed", required_argument, 0, O_SEED},
        {"kmax", required_argument, 0, O_KMAX},     {"freq", required_argument, 0, O_FREQ},
        {"chunk", required_argument, 0, O_CHUNK},   {"quantiles", no_argument, 0, O_QUANT},
        {"act-threshold", required_argument, 0, O_ACT}, {"criterion", required_argument, 0, O_CRIT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->prompt = 128;
    o->gen = 64;
    o->temperature = 0.8;
    o->top_p = 0.9;
    o->seed = 1;
    o->kmax = 8;
    o->freq_tokens = -1;
    o->crit = ACT_GATE;
    int c;
    int64_t v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":ht:", lo, NULL)) != -1) {
        const char *bad = NULL;
        switch (c) {
        case 'h': usage(stdout); return 1;
        case O_STORE: o->store_dir = optarg; break;
        case O_TEXT: o->text = optarg; break;
        case O_IDS: o->ids_file = optarg; break;
        case O_JSON: o->json = optarg; break;
        case O_OFFSET:
            if (cli_parse_i64(optarg, 0, INT64_MAX, &v)) bad = "--offset";
            else o->offset = (uint64_t)v;
            break;
        case O_PROMPT: if (cli_parse_i64(optarg, 1, 1 << 20, &o->prompt)) bad = "--prompt"; break;
        case O_GEN: if (cli_parse_i64(optarg, 0, 1 << 20, &o->gen)) bad = "--gen"; break;
        case O_GENERATE: o->generate = 1; break;
        case 't': if (cli_parse_f64(optarg, -DBL_MAX, DBL_MAX, &o->temperature) || o->temperature < 0) bad = "-t"; break;
        case O_TOPP: if (cli_parse_f64(optarg, -DBL_MAX, DBL_MAX, &o->top_p)) bad = "--top-p"; break;
        case O_SEED:
            if (cli_parse_i64(optarg, 1, INT64_MAX, &v)) bad = "--seed";
            else o->seed = (uint64_t)v;
            break;
        case O_KMAX: if (cli_parse_i64(optarg, 1, KMAX_LIMIT, &o->kmax)) bad = "--kmax"; break;
        case O_FREQ: if (cli_parse_i64(optarg, 0, INT64_MAX, &o->freq_tokens)) bad = "--freq"; break;
        case O_CHUNK: if (cli_parse_i64(optarg, 2, 1 << 20, &o->chunk)) bad = "--chunk"; break;
        case O_QUANT: o->quantiles = 1; break;
        case O_ACT: if (cli_parse_f64(optarg, -DBL_MAX, DBL_MAX, &o->act_thr) || o->act_thr <= 0) bad = "--act-threshold"; break;
        case O_CRIT: if (act_parse_flag(optarg, &o->crit) || !act_thresholded(o->crit)) bad = "--criterion"; break;
        default:
            return cli_bad_option(PROG, c, argv);
        }
        if (bad) {
            fprintf(stderr, PROG ": %s: bad value '%s'\n", bad, optarg);
            return -1;
        }
    }
    if (optind < argc)
        o->mount = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    const char *why = NULL;
    if (!o->mount == !o->store_dir)
        why = "give either MOUNTPOINT or --store DIR";
    else if (!o->text == !o->ids_file)
        why = "give either --text FILE or --ids FILE";
    else if (o->freq_tokens >= 0 && !o->text)
        why = "--freq needs --text";
    else if (o->generate && o->ids_file)
        why = "--generate and --ids exclude each other";
    if (why) {
        fprintf(stderr, PROG ": %s (see --help)\n", why);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    as_opts o;
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa > 0 ? 0 : EXIT_USAGE;   /* 1: --help printed */
    ierr err = IERR_INIT;
    source *src = NULL;
    int rc = o.store_dir ? source_open_store(o.store_dir, &src, &err) : source_open_mount(o.mount, &src, &err);
    if (rc) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    as_acc a;
    memset(&a, 0, sizeof a);
    model *m = NULL;
    int32_t *ids = NULL;
    int64_t P = 0, T = 0, tokens = 0;
    int window = o.freq_tokens < 0;
    rc = window ? run_window(src, &o, &a, &m, &ids, &P, &T, &err) : run_freq(src, &o, &a, &m, &tokens, &err);
    as_layer *ly = NULL, mean;
    double quant[N_QUANT];
    if (rc == 0 && !(ly = calloc((size_t)a.L, sizeof *ly)))
        rc = ierr_set(&err, -ENOMEM, "out of memory");
    for (int64_t l = 0; rc == 0 && l < a.L; l++)
        rc = layer_figures(&a, l, P, o.kmax, &ly[l], &err);
    if (rc == 0 && o.quantiles)
        rc = freq_quantiles(&a, quant, &err);
    if (rc == 0) {
        const hp_config *c = &m->cfg;
        mean_layers(ly, a.L, o.kmax, &mean);
        printf("%s model, d_model %" PRId64 ", d_ffn %" PRId64 ", %" PRId64 " layers; ", hp_family_name(c->family),
               c->d_model, c->d_ffn, c->n_layers);
        if (window)
            printf("%" PRId64 " prompt + %" PRId64 " %s positions\n\n", P, T - P,
                   o.ids_file ? "given" : o.generate ? "generated" : "teacher-forced");
        else
            printf("%" PRId64 " text tokens\n\n", tokens);
        print_table(ly, &mean, a.L, a.F, o.kmax, window, window && T > P);
        if (o.quantiles) {
            printf("\nper-neuron frequency / layer mean, %d quantiles (0 .. 1):\n", N_QUANT);
            for (int i = 0; i < N_QUANT; i++)
                printf("%.4g,%s", quant[i], i % 8 == 7 ? "\n" : " ");
        }
        if (o.json)
            rc = write_json(o.json, &o, m, ly, &mean, window, P, T, tokens, o.quantiles ? quant : NULL, ids, &err);
    }
    free(ly);
    free(ids);
    acc_free(&a);
    model_free(m);
    source_close(src);
    if (rc) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    return 0;
}
