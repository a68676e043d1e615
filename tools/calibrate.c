/* calibrate.c: inflash-calibrate, which runs the dense model (client/model.h)
 * over a calibration text, records per layer the FFN inputs and which
 * neurons are active (layout/activity.h), trains a low-rank activation
 * predictor per layer (tools/train.h), records each neuron's activation frequency, can put
 * the neurons of ffn.bin in hot-first order, and writes it all into the
 * store atomically (layout/store_update.h). With --eval it measures the
 * predictors on held-out text. */
#include "activity.h"
#include "cli.h"
#include "hparams.h"
#include "io.h"
#include "model.h"
#include "weight_matrix.h"
#include "source.h"
#include "store.h"
#include "store_update.h"
#include "tok.h"
#include "train.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG          "inflash-calibrate"
#define EXIT_RUNTIME  1
#define EXIT_USAGE    2
#define MAX_TEXT      ((size_t)1 << 30)     /* text files up to 1 GiB */
#define VAL_EVERY     10                    /* every 10th chunk picks/checks the threshold */
#define READ_BLOCK    256                   /* neurons per weight read */

static volatile sig_atomic_t g_stop;        /* SIGINT/SIGTERM/SIGHUP: stop before writing */
static int g_verbosity = 1;                 /* cal_opts.verbosity, for the progress lines */

/* A progress line "inflash-calibrate: ..." on stderr at verbosity >= level. */
__attribute__((format(printf, 2, 3))) static void progress(int level, const char *fmt, ...)
{
    if (g_verbosity < level)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int interrupted(ierr *err)
{
    return ierr_set(err, -EINTR, "interrupted; the store is unchanged");
}

typedef struct {
    const char *store_dir;
    const char *text;          /* --text */
    const char *eval;          /* --eval, or NULL */
    int64_t     tokens;        /* --tokens */
    int64_t     eval_tokens;   /* --eval-tokens, 0 = all */
    int64_t     rank;          /* --rank */
    double      recall;        /* --recall */
    double      recall_margin; /* --recall-margin: the threshold aims at recall + margin·(1 - recall) */
    double      target_sparsity;   /* --target-sparsity (gated) */
    double      max_ratio;     /* --max-ratio: predicted/true above which the rank doubles */
    int         reorder;       /* --reorder */
    int         epochs;        /* --epochs */
    int         threads;       /* --threads, 0 = OpenBLAS default */
    uint64_t    seed;          /* --seed */
    double      mem_budget;    /* --mem-budget in bytes */
    act_crit    crit;          /* --criterion (gated models) */
    int         svd_start;     /* --init svd (else pca) */
    int         verbosity;     /* 0 -q: errors only; 1 default: a line per layer; 2 -v: every epoch */
} cal_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " STORE_DIR --text FILE [options]\n"
            "\n"
            "Run the dense model over a calibration text, train a low-rank predictor of\n"
            "the active FFN neurons per layer, record each neuron's activation frequency\n"
            "and write them into the store (atomically: a failed run leaves it as it was).\n"
            "\n"
            "  --text FILE          calibration text (UTF-8)\n"
            "  --tokens N           calibration tokens (default 50000), taken in chunks of\n"
            "                       max_pos-1 tokens spread evenly over the text; each chunk\n"
            "                       is fed as BOS + chunk, positions restarting per chunk\n"
            "  --rank R             default predictor rank (default 64); a layer whose\n"
            "                       predicted-active set exceeds --max-ratio times the true\n"
            "                       one is retried with double the rank, up to min(d, n)\n"
            "  --recall R           recall of truly active neurons each layer's threshold\n"
            "                       must reach on new text (default 0.99)\n"
            "  --recall-margin M    safety margin: the threshold is picked for recall\n"
            "                       R + M*(1-R) on the held-back chunks (default 0.5: 0.995\n"
            "                       for 0.99), since text unlike the calibration text\n"
            "                       reaches a little less\n"
            "  --max-ratio K        predicted/true active ratio to aim for (default 3)\n"
            "  --target-sparsity S  SwiGLU models: the fraction of (token, neuron) pairs\n"
            "                       counted inactive (default 0.9); ignored for the\n"
            "                       activations with exact zeros\n"
            "  --reorder            rewrite ffn.bin with each layer's neurons in descending\n"
            "                       frequency (hot first); neuron ids and bytes are unchanged\n"
            "  --eval FILE          after training, measure on FILE (held-out text) and\n"
            "                       print the per-layer table for it\n"
            "  --eval-tokens N      tokens of the eval text to use (default: all)\n"
            "  --init pca|svd       the predictor's start before training: pca (default),\n"
            "                       the best rank-R fit of the pre-activations (up, or gate\n"
            "                       for gated models, with their bias) on the calibration\n"
            "                       samples; svd, the truncated SVD of that weight matrix\n"
            "  --epochs E           training passes over the samples (default 8)\n"
            "  --threads N          OpenBLAS threads (default: OpenBLAS's choice)\n"
            "  --seed S             seed of the SVD sketch and the sample order (default 1)\n"
            "  --mem-budget SIZE    memory for the samples (default: 60%% of RAM): a number\n"
            "                       of MiB, or with a suffix k, m, g or t (powers of 1024:\n"
            "                       512m, 2g, 1.5g); a sample set that would not fit is\n"
            "                       refused with the largest --tokens that does\n"
            "  -v, --verbose        progress in detail: every training epoch, every rank\n"
            "                       tried\n"
            "  -q, --quiet          print errors only (no progress, no table)\n"
            "  -h, --help           this text\n"
            "\n"
            "What \"active\" means (stored as meta calib_criterion):\n"
            "  ReLU (OPT) models: the up pre-activation up.x + b > 0 (exact zeros\n"
            "  otherwise). Gated activations with exact zeros (gated ReLU, FATReLU,\n"
            "  dReLU, CATS): the neuron's term in the FFN sum is non-zero\n"
            "  (\"exact:term!=0\"; --criterion and --target-sparsity do not apply).\n"
            "  SwiGLU models: the neuron's value under --criterion exceeds the layer's\n"
            "  act_threshold, the quantile of that value over the calibration pairs that\n"
            "  reaches --target-sparsity:\n"
            "  --criterion product  |silu(gate.x) * (up.x)| (default): the neuron's actual\n"
            "                       contribution to the FFN output (its down column is\n"
            "                       scaled by it), so dropping the smallest ones disturbs\n"
            "                       the output least (stories260K, 50%% sparsity: mean KL to\n"
            "                       dense 0.06 nats, against 0.61 for gate and 2.7 for silu)\n"
            "  --criterion gate     |silu(gate.x)| (the CATS/TEAL rule)\n"
            "  --criterion silu     silu(gate.x), the positive branch only: a threshold on\n"
            "                       gate.x, which a low-rank predictor learns almost exactly\n"
            "\n"
            "Every 10th calibration chunk is held back from training: the threshold is\n"
            "picked and the figures measured on it. The per-layer table (stdout) shows\n"
            "sparsity, rank, recall, precision, predicted-active fraction, true-active\n"
            "fraction and their ratio, on the --eval text if given, else on the held-back\n"
            "calibration chunks; then the predictors' cost per token as a fraction of the\n"
            "dense FFN's FLOPs and bytes. Progress goes to stderr: the forward pass, then\n"
            "one line per layer (-v: every epoch and every rank tried).\n"
            "\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}


/* ---- the token stream ------------------------------------------------------- */

/* A text as chunks of at most `clen` token ids, `want` tokens (0 = all)
 * taken as whole chunks spread evenly over the text. */
typedef struct {
    int32_t *ids;        /* owned: the whole text's ids */
    int64_t  n_ids;
    int64_t *start;      /* owned: [n_chunks] first id of each chosen chunk */
    int64_t *len;        /* owned: [n_chunks] */
    int64_t  n_chunks;
    int64_t  tokens;     /* sum of len */
} chunks;

static void chunks_free(chunks *c)
{
    free(c->ids);
    free(c->start);
    free(c->len);
    memset(c, 0, sizeof *c);
}

static int chunks_load(const char *path, const tok *tk, int64_t clen, int64_t want, chunks *c, ierr *err)
{
    char *text = NULL;
    size_t len = 0, n = 0;
    memset(c, 0, sizeof *c);
    int rc = io_read_file(path, MAX_TEXT, &text, &len, err);
    if (rc)
        return rc;
    rc = tok_encode(tk, text, len, &c->ids, &n, err);
    free(text);
    if (rc)
        return ierr_wrap(err, rc, "%s", path);
    c->n_ids = (int64_t)n;
    if (!n)
        return ierr_set(err, -EINVAL, "%s: no tokens", path);
    int64_t all = (c->n_ids + clen - 1) / clen;          /* chunks of the whole text */
    int64_t k = want > 0 ? (want + clen - 1) / clen : all;
    if (k > all)
        k = all;
    if (!(c->start = malloc((size_t)k * sizeof *c->start)) || !(c->len = malloc((size_t)k * sizeof *c->len)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    int64_t left = want > 0 && want < c->n_ids ? want : c->n_ids;
    for (int64_t i = 0; i < k; i++) {
        int64_t s = (int64_t)((double)i * (double)all / (double)k) * clen;
        int64_t l = c->n_ids - s < clen ? c->n_ids - s : clen;
        if (l > left)
            l = left;
        c->start[i] = s;
        c->len[i] = l;
        c->tokens += l;
        left -= l;
    }
    c->n_chunks = k;
    return 0;
}

/* ---- samples of every layer ---------------------------------------------------- */

/* FFN inputs and activity labels of every layer, one row per text token
 * (the BOS of each chunk is not a sample). Rows [0, m_fit) train the
 * predictors, rows [m_fit, m) (the held-back chunks) pick and check the
 * threshold; for an eval set m_fit = m. */
typedef struct {
    int64_t   L, d, n;
    int64_t   m, m_fit;
    size_t    stride;         /* label bytes per row */
    float   **X;              /* [L] -> [m][d]; owned */
    uint8_t **lab;            /* [L] -> [m][stride]; owned */
    float   **val;            /* SwiGLU, before labelling: [L] -> [m][n] criterion values; owned; else NULL */
    const double *act_thr;    /* SwiGLU eval: label at once with these [L]; NULL otherwise */
    act_crit  crit;           /* the criterion (activity.h): exact, or --criterion for SwiGLU */
    int       exact;          /* crit is exact (threshold 0): labels at once */
    const hp_config *hp;      /* the model's (the per-layer activation); not owned */
    int64_t  *row0;           /* [n_chunks] row of each chunk's first token; owned */
} samples;

static void samples_free_layer(samples *S, int64_t l)
{
    free(S->X[l]);
    free(S->lab[l]);
    S->X[l] = NULL;
    S->lab[l] = NULL;
    if (S->val) {
        free(S->val[l]);
        S->val[l] = NULL;
    }
}

static void samples_free(samples *S)
{
    for (int64_t l = 0; S->X && l < S->L; l++)
        samples_free_layer(S, l);
    free(S->X);
    free(S->lab);
    free(S->val);
    free(S->row0);
    memset(S, 0, sizeof *S);
}

/* Is chunk i of k one of the held-back ones? (none if k == 1) */
static int held_back(int64_t i, int64_t k)
{
    if (k < 2)
        return 0;
    return k < VAL_EVERY ? i == k - 1 : i % VAL_EVERY == VAL_EVERY - 1;
}

/* Bytes the samples of m rows take (gated calibration keeps values too). */
static double samples_bytes(const hp_config *hp, int64_t m, int values)
{
    double row = (double)hp->d_model * 4.0 + (double)pred_label_stride(hp->d_ffn) +
                 (values ? (double)hp->d_ffn * 4.0 : 0.0);
    return (double)hp->n_layers * (double)m * row;
}

static int samples_new(const hp_config *hp, const chunks *c, int split, int values, samples *S, ierr *err)
{
    memset(S, 0, sizeof *S);
    S->L = hp->n_layers;
    S->d = hp->d_model;
    S->n = hp->d_ffn;
    S->m = c->tokens;
    S->stride = pred_label_stride(S->n);
    S->X = calloc((size_t)S->L, sizeof *S->X);
    S->lab = calloc((size_t)S->L, sizeof *S->lab);
    S->row0 = malloc((size_t)c->n_chunks * sizeof *S->row0);
    if (values)
        S->val = calloc((size_t)S->L, sizeof *S->val);
    if (!S->X || !S->lab || !S->row0 || (values && !S->val))
        return ierr_set(err, -ENOMEM, "out of memory for the samples");
    int64_t fit = 0;
    for (int64_t i = 0; i < c->n_chunks; i++)
        if (!(split && held_back(i, c->n_chunks)))
            fit += c->len[i];
    S->m_fit = fit;
    for (int64_t i = 0, f = 0, b = fit; i < c->n_chunks; i++) {
        if (split && held_back(i, c->n_chunks)) {
            S->row0[i] = b;
            b += c->len[i];
        } else {
            S->row0[i] = f;
            f += c->len[i];
        }
    }
    for (int64_t l = 0; l < S->L; l++) {
        S->X[l] = malloc((size_t)(S->m * S->d) * sizeof(float));
        S->lab[l] = calloc((size_t)S->m, S->stride);
        if (values)
            S->val[l] = malloc((size_t)(S->m * S->n) * sizeof(float));
        if (!S->X[l] || !S->lab[l] || (values && !S->val[l]))
            return ierr_set(err, -ENOMEM, "out of memory for the samples (%.0f MiB)",
                            samples_bytes(hp, S->m, values) / 1048576.0);
    }
    return 0;
}

/* The model_ffn_hook: rows of the current chunk into the sample set. */
typedef struct {
    samples *S;
    int64_t  row0;            /* sample row of position 1 (position 0 is the BOS) */
} hook_ctx;

static void collect_hook(void *vctx, int64_t layer, int64_t pos, int64_t n, const float *x, const float *up,
                         const float *gate)
{
    hook_ctx *h = vctx;
    samples *S = h->S;
    int64_t d = S->d, F = S->n;
    for (int64_t i = 0; i < n; i++) {
        if (pos + i == 0)
            continue;
        int64_t row = h->row0 + pos + i - 1;
        const float *u = up + i * F, *g = gate ? gate + i * F : NULL;
        uint8_t *lab = S->lab[layer] + (size_t)row * S->stride;
        memcpy(S->X[layer] + row * d, x + i * d, (size_t)d * sizeof(float));
        const act_spec as = hp_act_spec(S->hp, layer);
        if (S->exact) {               /* exact zeros: the threshold is 0 */
            for (int64_t j = 0; j < F; j++)
                if (act_is_active(S->crit, as, g ? g[j] : 0.0f, u[j], 0.0))
                    pred_label_set(lab, j, 1);
        } else if (S->val) {          /* SwiGLU calibration: the threshold comes later */
            float *v = S->val[layer] + row * F;
            for (int64_t j = 0; j < F; j++)
                v[j] = act_value(S->crit, as, g[j], u[j]);
        } else {                      /* SwiGLU eval: the calibrated threshold, as a float */
            double t = (float)S->act_thr[layer];
            for (int64_t j = 0; j < F; j++)
                if (act_is_active(S->crit, as, g[j], u[j], t))
                    pred_label_set(lab, j, 1);
        }
    }
}

/* Run the dense model over every chunk, filling S through the hook. */
static int collect(model *mdl, const chunks *c, samples *S, const char *what, ierr *err)
{
    const hp_config *hp = &mdl->cfg;
    int32_t *buf = malloc((size_t)(hp->max_pos) * sizeof *buf);
    hook_ctx h = { .S = S };
    int rc = buf ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    int64_t done = 0, next_report = 0;
    mdl->ffn_hook = collect_hook;
    mdl->ffn_hook_ctx = &h;
    for (int64_t i = 0; i < c->n_chunks && !rc; i++) {
        if (g_stop) {
            rc = interrupted(err);
            break;
        }
        buf[0] = (int32_t)hp->bos_id;
        memcpy(buf + 1, c->ids + c->start[i], (size_t)c->len[i] * sizeof *buf);
        h.row0 = S->row0[i];
        int64_t n = c->len[i] + 1;
        for (int64_t p = 0; p < n && !rc; p += mdl->s.max_batch) {
            int64_t b = n - p < mdl->s.max_batch ? n - p : mdl->s.max_batch;
            rc = model_forward(mdl, buf + p, b, p, err);
        }
        done += c->len[i];
        if (!rc && (done >= next_report || i + 1 == c->n_chunks)) {
            progress(1, "%s: %" PRId64 "/%" PRId64 " tokens", what, done, c->tokens);
            next_report = done + (c->tokens + 9) / 10;
        }
    }
    mdl->ffn_hook = NULL;
    mdl->ffn_hook_ctx = NULL;
    free(buf);
    return rc;
}

/* ---- weights ------------------------------------------------------------------ */

/* Row `which` (0 = up, 1 = gate) of every neuron's bundle of a layer, in
 * neuron-id order: W [n][d] f32. */
static int layer_rows(model *mdl, int64_t layer, int which, float *W, ierr *err)
{
    const hp_config *hp = &mdl->cfg;
    int64_t d = hp->d_model, F = hp->d_ffn, bl = mdl->bundle_len, bb = source_bundle_bytes(mdl->src);
    if (mdl->w.ffn_resident) {
        const void *base = wm_at(mdl->w.wdt, mdl->w.ffn_resident, bl, 0, which * d);
        for (int64_t j = 0; j < F; j++)
            wm_row(mdl->w.wdt, base, bl, layer * F + j, d, W + j * d);
        return 0;
    }
    void *raw = malloc((size_t)(READ_BLOCK * bb));
    float *f = malloc((size_t)(READ_BLOCK * bl) * sizeof *f);
    int rc = raw && f ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    for (int64_t j0 = 0; j0 < F && !rc; j0 += READ_BLOCK) {
        int64_t nb = F - j0 < READ_BLOCK ? F - j0 : READ_BLOCK;
        rc = source_read_ffn(mdl->src, layer, (uint64_t)(j0 * bb), raw, (size_t)(nb * bb), err);
        if (rc)
            break;
        fmt_to_f32(source_dtype(mdl->src), raw, f, (size_t)(nb * bl));
        for (int64_t j = 0; j < nb; j++)
            memcpy(W + (j0 + j) * d, f + j * bl + which * d, (size_t)d * sizeof(float));
    }
    free(raw);
    free(f);
    return rc;
}

/* The recall the thresholds are picked for (--recall-margin). */
static double picked_recall(const cal_opts *o)
{
    return o->recall + o->recall_margin * (1.0 - o->recall);
}

/* ---- one layer ---------------------------------------------------------------- */

typedef struct {
    int64_t    layer;
    int64_t    rank;
} train_ctx;

static int train_progress(void *vctx, int epoch, int epochs, double loss)
{
    const train_ctx *t = vctx;
    progress(2, "layer %" PRId64 " rank %" PRId64 ": epoch %d/%d loss %.5f", t->layer, t->rank, epoch, epochs, loss);
    return g_stop != 0;
}

/* predicted / truly active pairs (infinite when nothing is active but
 * something predicted) */
static double ratio_of(const pred_stats *st)
{
    if (st->positives)
        return (double)st->predicted / (double)st->positives;
    return st->predicted ? INFINITY : 1.0;
}

/* Train layer l's predictor: PCA or SVD start from W (up or gate rows) and
 * bias b, logistic refinement on the fitting rows, threshold for the recall
 * target on the held-back rows (the fitting rows if there are none),
 * doubling the rank while predicted/true > max_ratio. *out gets the best
 * predictor tried, *st its figures on the held-back rows. */
static int train_layer(const cal_opts *o, const samples *S, int64_t l, const float *W, const float *b, pred **out,
                       pred_stats *st, ierr *err)
{
    int64_t d = S->d, n = S->n, rmax = d < n ? d : n;
    int64_t r = o->rank < rmax ? o->rank : rmax;
    const float *Xf = S->X[l], *Xv = S->X[l] + S->m_fit * d;
    const uint8_t *Lf = S->lab[l], *Lv = S->lab[l] + (size_t)S->m_fit * S->stride;
    int64_t mf = S->m_fit, mv = S->m - S->m_fit;
    if (mv == 0) {                     /* a single chunk: nothing held back */
        Xv = Xf;
        Lv = Lf;
        mv = mf;
    }
    *out = NULL;
    for (;;) {
        pred *p = NULL;
        pred_stats cur;
        train_ctx tc = { l, r };
        pred_train_opts to;
        double loss = 0.0;
        pred_train_defaults(&to);
        to.epochs = o->epochs;
        to.seed = o->seed + (uint64_t)l;
        to.progress = train_progress;
        to.ctx = &tc;
        int rc = pred_new(d, n, r, &p, err);
        if (!rc)
            rc = o->svd_start ? pred_init_svd(p, W, b, o->seed + (uint64_t)l, err)
                              : pred_init_pca(p, W, b, Xf, mf, o->seed + (uint64_t)l, err);
        if (!rc)
            rc = pred_train(p, Xf, Lf, mf, &to, &loss, err);
        if (!rc && g_stop)
            rc = interrupted(err);
        if (!rc)
            rc = pred_pick_threshold(p, Xv, Lv, mv, picked_recall(o), err);
        if (!rc)
            rc = pred_eval(p, Xv, Lv, mv, &cur, err);
        if (rc) {
            pred_free(p);
            pred_free(*out);
            *out = NULL;
            return ierr_wrap(err, rc, "layer %" PRId64, l);
        }
        double ratio = ratio_of(&cur);
        progress(2, "layer %" PRId64 " rank %" PRId64 ": recall %.4f precision %.4f predicted/true %.2f%s", l, r,
                 cur.recall, cur.precision, ratio,
                 ratio > o->max_ratio && r < rmax ? " (over the target: doubling the rank)" : "");
        if (!*out || ratio < ratio_of(st)) {
            pred_free(*out);
            *out = p;
            *st = cur;
        } else {
            pred_free(p);
        }
        if (ratio <= o->max_ratio || r >= rmax)
            return 0;
        r = 2 * r < rmax ? 2 * r : rmax;
    }
}

/* ---- the report --------------------------------------------------------------- */

static void table_head(void)
{
    printf("%5s %5s %9s %8s %9s %9s %8s %9s %12s %13s\n", "layer", "rank", "sparsity", "recall", "precision",
           "predicted", "true", "pred/true", "threshold", "act_threshold");
}

static void table_row(int64_t l, int64_t rank, const pred_stats *st, double thr, double act)
{
    printf("%5" PRId64 " %5" PRId64 " %9.4f %8.4f %9.4f %9.4f %8.4f %9.2f %12.5g %13.5g\n", l, rank,
           1.0 - st->true_frac, st->recall, st->precision, st->predicted_frac, st->true_frac, ratio_of(st), thr, act);
}

/* The predictors' cost per token against the dense FFNs, all layers. */
static void print_cost(const hp_config *hp, fmt_dtype dt, pred *const *preds)
{
    double pf = 0, pb = 0, ff = 0, fb = 0;
    for (int64_t l = 0; l < hp->n_layers; l++) {
        pred_costs c = pred_cost(hp->d_model, hp->d_ffn, preds[l]->r, hp->gated ? 3 : 2, 0);
        c.ffn_bytes = (double)hp->d_ffn * (double)hp_bundle_bytes(hp, dt);   /* whole blocks when quantized */
        pf += c.pred_flops;
        pb += c.pred_bytes;
        ff += c.ffn_flops;
        fb += c.ffn_bytes;
    }
    printf("predictor cost per token: %.0f FLOPs = %.1f%% of the dense FFN's %.0f; %.0f bytes (f32) = %.1f%% of "
           "the FFN's %.0f bytes (%s)\n", pf, 100.0 * pf / ff, ff, pb, 100.0 * pb / fb, fb, fmt_dtype_name(dt));
}

/* ---- the update ------------------------------------------------------------------ */

static int put_predictor(storeu *u, int64_t l, const pred *p, ierr *err)
{
    char name[STORE_PRED_NAME_MAX];
    int64_t sa[2] = { p->r, p->d }, sb[2] = { p->n, p->r }, sc[1] = { p->n };
    int rc;
    store_pred_name(name, l, 'A');
    if ((rc = storeu_put_tensor_f32(u, name, 2, sa, p->A, err)))
        return rc;
    store_pred_name(name, l, 'B');
    if ((rc = storeu_put_tensor_f32(u, name, 2, sb, p->B, err)))
        return rc;
    store_pred_name(name, l, 'c');
    return storeu_put_tensor_f32(u, name, 1, sc, p->c, err);
}

static int set_meta_num(storeu *u, const char *key, double v, ierr *err)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    return storeu_set_meta(u, key, buf, err);
}

/* ---- main flow ------------------------------------------------------------------- */

/* One calibration run; everything is owned here and freed by run_free. */
typedef struct {
    const cal_opts *o;
    storeu     *u;            /* the pending update of the store */
    source     *src;          /* the same store, for the model */
    const hp_config *hp;      /* of src */
    int64_t     L;            /* layers allocated below (0 until then) */
    model      *mdl;
    tok        *tk;
    chunks      cal, ev;      /* calibration text, eval text (if --eval) */
    samples     S;            /* the samples being worked on */
    pred      **preds;        /* [L] */
    pred_stats *cal_st;       /* [L] figures on the held-back chunks */
    double     *act_thr;      /* [L] SwiGLU: the layer's criterion threshold; else 0 */
    act_crit    crit;         /* what "active" means: the exact criterion, or --criterion */
    int         exact;        /* the activation has exact zeros: no thresholds to pick */
    double     *sparsity;     /* [L] over all calibration rows */
    double    **freq;         /* [L][d_ffn] */
    double      t_fwd, t_train, t_eval, t_write;   /* seconds per phase */
} run;

static void run_free(run *R)
{
    for (int64_t l = 0; l < R->L; l++) {
        pred_free(R->preds[l]);
        free(R->freq[l]);
    }
    free(R->preds);
    free(R->cal_st);
    free(R->act_thr);
    free(R->sparsity);
    free(R->freq);
    samples_free(&R->S);
    chunks_free(&R->cal);
    chunks_free(&R->ev);
    tok_free(R->tk);
    model_free(R->mdl);
    source_close(R->src);
    storeu_free(R->u);
}

/* What "active" means for this model (activity.h): exact for an activation
 * with exact zeros, else --criterion. */
static void pick_criterion(run *R)
{
    R->exact = hp_exact_crit(R->hp, &R->crit) == 0;
    if (!R->exact)
        R->crit = R->o->crit;
}

/* The samples' view of it. */
static void samples_criterion(const run *R, samples *S)
{
    S->crit = R->crit;
    S->exact = R->exact;
    S->hp = R->hp;
}

static int check_memory(const cal_opts *o, const hp_config *hp, int64_t m, int values, const char *what, ierr *err)
{
    double need = samples_bytes(hp, m, values);
    if (need <= o->mem_budget)
        return 0;
    int64_t fit = (int64_t)(o->mem_budget / (need / (double)m));
    return ierr_set(err, -ENOMEM, "%s: the samples of %" PRId64 " tokens need %.0f MiB, over the memory budget of "
                    "%.0f MiB (--mem-budget); use %s <= %" PRId64, what, m, need / 1048576.0,
                    o->mem_budget / 1048576.0, strcmp(what, "--eval") ? "--tokens" : "--eval-tokens", fit);
}

/* Open the store (update + source), the model and tokenizer; load both
 * texts (so a bad --eval fails before the long part); check memory. */
static int run_open(run *R, ierr *err)
{
    const cal_opts *o = R->o;
    int rc = storeu_open(o->store_dir, &R->u, err);
    if (!rc)
        rc = source_open_store(o->store_dir, &R->src, err);
    if (rc)
        return rc;
    const hp_config *hp = R->hp = source_hparams(R->src);
    pick_criterion(R);
    if (hp->bos_id < 0 || hp->bos_id >= hp->vocab_size)
        return ierr_set(err, -EINVAL, "%s: the model has no BOS token to start a chunk with", o->store_dir);
    size_t L = (size_t)hp->n_layers;
    R->preds = calloc(L, sizeof *R->preds);
    R->cal_st = calloc(L, sizeof *R->cal_st);
    R->act_thr = calloc(L, sizeof *R->act_thr);
    R->sparsity = calloc(L, sizeof *R->sparsity);
    R->freq = calloc(L, sizeof *R->freq);
    if (!R->preds || !R->cal_st || !R->act_thr || !R->sparsity || !R->freq)
        return ierr_set(err, -ENOMEM, "out of memory");
    R->L = hp->n_layers;
    for (int64_t l = 0; l < R->L; l++)
        if (!(R->freq[l] = malloc((size_t)hp->d_ffn * sizeof **R->freq)))
            return ierr_set(err, -ENOMEM, "out of memory");
    if ((rc = source_tok(R->src, &R->tk, err)) ||
        (rc = chunks_load(o->text, R->tk, hp->max_pos - 1, o->tokens, &R->cal, err)) ||
        (o->eval && (rc = chunks_load(o->eval, R->tk, hp->max_pos - 1, o->eval_tokens, &R->ev, err))) ||
        (rc = check_memory(o, hp, R->cal.tokens, !R->exact, "--text", err)) ||
        (o->eval && (rc = check_memory(o, hp, R->ev.tokens, 0, "--eval", err))) ||
        (rc = model_new(R->src, hp->max_pos, hp->max_pos, &R->mdl, err)))
        return rc;
    /* small FFNs stay resident in f32: no re-reading per chunk */
    if ((double)hp->n_layers * (double)hp->d_ffn * (double)R->mdl->bundle_len * 4.0 < o->mem_budget / 4 &&
        (rc = model_load_resident_ffn(R->mdl, err)))
        return rc;
    progress(1, "%s: %" PRId64 " layers, d_model %" PRId64 ", d_ffn %" PRId64 ", %s%s; calibration text "
             "%s: %" PRId64 " of %" PRId64 " tokens in %" PRId64 " chunks", o->store_dir, hp->n_layers,
             hp->d_model, hp->d_ffn, hp->gated ? "gated " : "", act_fn_name(hp->act), o->text, R->cal.tokens,
             R->cal.n_ids, R->cal.n_chunks);
    return 0;
}

/* SwiGLU: the layer's act_threshold from its values, then the labels. */
static int label_gated(samples *S, int64_t l, double target, double *thr, ierr *err)
{
    float t;
    int rc = pred_threshold_for_sparsity(S->val[l], S->m * S->n, target, &t, err);
    if (rc)
        return ierr_wrap(err, rc, "layer %" PRId64, l);
    for (int64_t i = 0; i < S->m; i++) {
        const float *v = S->val[l] + i * S->n;
        uint8_t *lab = S->lab[l] + (size_t)i * S->stride;
        for (int64_t j = 0; j < S->n; j++)
            if (v[j] > t)
                pred_label_set(lab, j, 1);
    }
    free(S->val[l]);
    S->val[l] = NULL;
    *thr = t;
    return 0;
}

/* Frequencies of layer l's neurons over all rows, and the sparsity. */
static void frequencies(const samples *S, int64_t l, double *freq, double *sparsity)
{
    int64_t active = 0;
    memset(freq, 0, (size_t)S->n * sizeof *freq);
    for (int64_t i = 0; i < S->m; i++) {
        const uint8_t *lab = S->lab[l] + (size_t)i * S->stride;
        for (int64_t j = 0; j < S->n; j++)
            if (pred_label_get(lab, j))
                freq[j] += 1.0;
    }
    for (int64_t j = 0; j < S->n; j++) {
        active += (int64_t)freq[j];
        freq[j] /= (double)S->m;
    }
    *sparsity = 1.0 - (double)active / ((double)S->m * (double)S->n);
}

/* The dense forward over the calibration text, then per layer: labels,
 * frequencies, the predictor. */
static int run_fit(run *R, ierr *err)
{
    const cal_opts *o = R->o;
    const hp_config *hp = R->hp;
    const int64_t F = hp->d_ffn, gated = hp->gated, thresholded = !R->exact;
    double t = cli_now_s();
    int rc = samples_new(hp, &R->cal, 1, (int)thresholded, &R->S, err);
    samples_criterion(R, &R->S);
    if (!rc)
        rc = collect(R->mdl, &R->cal, &R->S, "calibration forward", err);
    R->t_fwd = cli_now_s() - t;
    t = cli_now_s();
    float *W = rc ? NULL : malloc((size_t)(F * hp->d_model) * sizeof *W);
    if (!rc && !W)
        rc = ierr_set(err, -ENOMEM, "out of memory");
    for (int64_t l = 0; l < R->L && !rc; l++) {
        if (thresholded && (rc = label_gated(&R->S, l, o->target_sparsity, &R->act_thr[l], err)))
            break;
        frequencies(&R->S, l, R->freq[l], &R->sparsity[l]);
        progress(2, "layer %" PRId64 ": sparsity %.4f%s; training (%" PRId64 " + %" PRId64 " held-back samples)", l,
                 R->sparsity[l], thresholded ? "" : " (exact zeros)", R->S.m_fit, R->S.m - R->S.m_fit);
        /* the SVD start: gate rows (gated) or up rows, with their bias */
        const float *bias = gated ? (R->mdl->w.ffn_b_gate ? R->mdl->w.ffn_b_gate + l * F : NULL)
                                  : (R->mdl->w.ffn_b_up ? R->mdl->w.ffn_b_up + l * F : NULL);
        rc = layer_rows(R->mdl, l, gated ? 1 : 0, W, err);
        if (!rc)
            rc = train_layer(o, &R->S, l, W, bias, &R->preds[l], &R->cal_st[l], err);
        if (!rc)
            progress(1, "layer %" PRId64 ": sparsity %.4f%s, rank %" PRId64 ": recall %.4f precision %.4f "
                     "predicted/true %.2f", l, R->sparsity[l], thresholded ? "" : " (exact zeros)",
                     R->preds[l]->r, R->cal_st[l].recall, R->cal_st[l].precision, ratio_of(&R->cal_st[l]));
        if (!rc && o->eval)           /* these rows are done with */
            samples_free_layer(&R->S, l);
    }
    free(W);
    R->t_train = cli_now_s() - t;
    return rc;
}

/* The per-layer table (stdout): on the eval text, collected now with the
 * calibrated act_thresholds, or on the held-back calibration chunks. */
static int run_report(run *R, ierr *err)
{
    const cal_opts *o = R->o;
    const hp_config *hp = R->hp;
    int rc = 0;
    if (o->eval) {
        double t = cli_now_s();
        samples_free(&R->S);
        rc = samples_new(hp, &R->ev, 0, 0, &R->S, err);
        R->S.act_thr = R->act_thr;
        samples_criterion(R, &R->S);
        if (!rc)
            rc = collect(R->mdl, &R->ev, &R->S, "eval forward", err);
        R->t_eval = cli_now_s() - t;
        if (rc)
            return rc;
    }
    printf("criterion: %s; recall target %g (thresholds picked for %g); predicted/true target %g",
           act_name(R->crit), o->recall, picked_recall(o), o->max_ratio);
    if (!R->exact)
        printf("; target sparsity %g", o->target_sparsity);
    printf("\n");
    if (o->eval)
        printf("per-layer table on the eval text %s (%" PRId64 " tokens, held out):\n", o->eval, R->ev.tokens);
    else if (R->S.m > R->S.m_fit)
        printf("per-layer table on the held-back calibration chunks (%" PRId64 " tokens, not trained on):\n",
               R->S.m - R->S.m_fit);
    else
        printf("per-layer table on the calibration text (%" PRId64 " tokens in one chunk: nothing held back, "
               "the figures are on the training samples):\n", R->S.m);
    table_head();
    for (int64_t l = 0; l < R->L && !rc; l++) {
        pred_stats st = R->cal_st[l];
        if (o->eval)
            rc = pred_eval(R->preds[l], R->S.X[l], R->S.lab[l], R->S.m, &st, err);
        if (!rc)
            table_row(l, R->preds[l]->r, &st, R->preds[l]->tau, R->act_thr[l]);
    }
    if (!rc)
        print_cost(hp, source_dtype(R->src), R->preds);
    fflush(stdout);
    return rc;
}

/* Predictors, calib rows, frequencies, the hot-first slots (--reorder) and
 * meta into the store, in one atomic update. */
static int run_write(run *R, ierr *err)
{
    const cal_opts *o = R->o;
    const int64_t F = R->hp->d_ffn;
    double t = cli_now_s();
    store_calib *rows = calloc((size_t)R->L, sizeof *rows);
    int64_t *slots = malloc((size_t)F * sizeof *slots);
    int rc = rows && slots ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    if (!rc && g_stop)
        rc = interrupted(err);
    for (int64_t l = 0; l < R->L && !rc; l++) {
        const pred_stats *st = &R->cal_st[l];
        rows[l] = (store_calib){ .rank = R->preds[l]->r, .threshold = R->preds[l]->tau,
                                 .act_threshold = R->act_thr[l], .sparsity = R->sparsity[l], .recall = st->recall,
                                 .precision = st->precision, .pred_fraction = st->predicted_frac };
        rc = put_predictor(R->u, l, R->preds[l], err);
        if (!rc)
            rc = storeu_set_freq(R->u, l, R->freq[l], err);
        if (!rc && o->reorder) {
            storeu_order_by_freq(R->freq[l], F, slots);
            rc = storeu_set_slots(R->u, l, slots, err);
        }
    }
    if (!rc && !(rc = storeu_set_calib(R->u, rows, err)) &&
        !(rc = set_meta_num(R->u, "calib_text_tokens", (double)R->cal.tokens, err)) &&
        !(rc = set_meta_num(R->u, "calib_recall_target", o->recall, err)) &&
        !(rc = storeu_set_meta(R->u, "calib_criterion", act_name(R->crit), err)) &&
        !(!R->exact && (rc = set_meta_num(R->u, "calib_target_sparsity", o->target_sparsity, err)))) {
        progress(1, "writing %s%s", o->store_dir, o->reorder ? " (reordering ffn.bin)" : "");
        rc = storeu_commit(R->u, err);
    }
    free(rows);
    free(slots);
    R->t_write = cli_now_s() - t;
    return rc;
}

static int calibrate(const cal_opts *o, ierr *err)
{
    run R;
    memset(&R, 0, sizeof R);
    R.o = o;
    double t0 = cli_now_s();
    int rc = run_open(&R, err);
    if (!rc)
        rc = run_fit(&R, err);
    if (!rc && o->verbosity > 0)      /* -q: no table, so no eval either */
        rc = run_report(&R, err);
    if (!rc)
        rc = run_write(&R, err);
    if (!rc && o->verbosity > 0)
        printf("calibrated %s: %" PRId64 " tokens, %s; time %.1f s (forward %.1f, training %.1f, eval %.1f, "
               "write %.1f)\n", o->store_dir, R.cal.tokens, o->reorder ? "neurons reordered hot-first"
               : "neuron order unchanged", cli_now_s() - t0, R.t_fwd, R.t_train, R.t_eval, R.t_write);
    run_free(&R);
    return rc;
}

/* ---- command line ------------------------------------------------------------------ */

enum { O_TEXT = 256, O_TOKENS, O_RANK, O_RECALL, O_REORDER, O_SPARSITY, O_EVAL, O_EVAL_TOKENS, O_EPOCHS, O_THREADS,
       O_SEED, O_RATIO, O_MEM, O_MARGIN, O_CRIT, O_INIT };

static void opts_default(cal_opts *o)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    *o = (cal_opts){ .tokens = 50000, .rank = 64, .recall = 0.99, .recall_margin = 0.5, .target_sparsity = 0.9,
                     .max_ratio = 3.0, .crit = ACT_PRODUCT, .epochs = 8, .seed = 1, .verbosity = 1,
                     .mem_budget = pages > 0 && page > 0 ? 0.6 * (double)pages * (double)page : 4e9 };
}

/* The criterion flag: a thresholded criterion (activity.h); NULL or the complaint. */
static const char *parse_criterion(const char *arg, act_crit *out)
{
    static char bad[96];
    act_crit c;
    if (act_parse_flag(arg, &c) == 0 && act_thresholded(c)) {
        *out = c;
        return NULL;
    }
    char names[64];
    act_thresholded_flags(names, sizeof names);
    snprintf(bad, sizeof bad, "--criterion: expected %s", names);
    return bad;
}

/* One option with its argument into o: NULL, or what is wrong with it. */
static const char *parse_opt(int ch, const char *arg, cal_opts *o)
{
    int64_t v;
    uint64_t bytes;
    switch (ch) {
    case O_TEXT: o->text = arg; return NULL;
    case O_EVAL: o->eval = arg; return NULL;
    case O_REORDER: o->reorder = 1; return NULL;
    case 'v': o->verbosity = 2; return NULL;
    case 'q': o->verbosity = 0; return NULL;
    case O_TOKENS:
        return cli_parse_i64(arg, 1, (int64_t)1 << 40, &o->tokens) ? "--tokens: expected a count >= 1" : NULL;
    case O_EVAL_TOKENS:
        return cli_parse_i64(arg, 0, (int64_t)1 << 40, &o->eval_tokens) ? "--eval-tokens: expected a count" : NULL;
    case O_RANK:
        return cli_parse_i64(arg, 1, 1 << 20, &o->rank) ? "--rank: expected 1..1048576" : NULL;
    case O_RECALL:
        return cli_parse_f64(arg, 0.0, 1.0, &o->recall) || o->recall <= 0.0 ? "--recall: expected (0, 1]" : NULL;
    case O_SPARSITY:
        return cli_parse_f64(arg, 0.0, 1.0, &o->target_sparsity) || o->target_sparsity >= 1.0
                   ? "--target-sparsity: expected [0, 1)" : NULL;
    case O_CRIT:
        return parse_criterion(arg, &o->crit);
    case O_INIT:
        if (strcmp(arg, "pca") == 0 || strcmp(arg, "svd") == 0) {
            o->svd_start = strcmp(arg, "svd") == 0;
            return NULL;
        }
        return "--init: expected pca or svd";
    case O_MARGIN:
        return cli_parse_f64(arg, 0.0, 1.0, &o->recall_margin) ? "--recall-margin: expected [0, 1]" : NULL;
    case O_RATIO:
        return cli_parse_f64(arg, 1.0, 1e9, &o->max_ratio) ? "--max-ratio: expected >= 1" : NULL;
    case O_EPOCHS:
        if (cli_parse_i64(arg, 1, 10000, &v))
            return "--epochs: expected 1..10000";
        o->epochs = (int)v;
        return NULL;
    case O_THREADS:
        if (cli_parse_i64(arg, 1, 1024, &v))
            return "--threads: expected 1..1024";
        o->threads = (int)v;
        return NULL;
    case O_SEED:
        if (cli_parse_i64(arg, 0, INT64_MAX, &v))
            return "--seed: expected a number >= 0";
        o->seed = (uint64_t)v;
        return NULL;
    case O_MEM:
        if (cli_parse_size(arg, 1048576, &bytes) || bytes == 0)
            return "--mem-budget: expected a size > 0 (MiB, or 512m, 2g)";
        o->mem_budget = (double)bytes;
        return NULL;
    }
    return "unexpected option";
}

/* 0 ok, -1 usage error (message printed), 1 --help printed */
static int parse_args(int argc, char **argv, cal_opts *o)
{
    static const struct option longs[] = {
        {"text", required_argument, 0, O_TEXT}, {"tokens", required_argument, 0, O_TOKENS},
        {"rank", required_argument, 0, O_RANK}, {"recall", required_argument, 0, O_RECALL},
        {"reorder", no_argument, 0, O_REORDER}, {"target-sparsity", required_argument, 0, O_SPARSITY},
        {"eval", required_argument, 0, O_EVAL}, {"eval-tokens", required_argument, 0, O_EVAL_TOKENS},
        {"epochs", required_argument, 0, O_EPOCHS}, {"threads", required_argument, 0, O_THREADS},
        {"seed", required_argument, 0, O_SEED}, {"max-ratio", required_argument, 0, O_RATIO},
        {"mem-budget", required_argument, 0, O_MEM}, {"recall-margin", required_argument, 0, O_MARGIN},
        {"criterion", required_argument, 0, O_CRIT}, {"init", required_argument, 0, O_INIT},
        {"verbose", no_argument, 0, 'v'}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    opts_default(o);
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, ":hvq", longs, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 1;
        }
        if (ch == ':' || ch == '?')
            return cli_bad_option(PROG, ch, argv);
        const char *bad = parse_opt(ch, optarg, o);
        if (bad) {
            fprintf(stderr, PROG ": %s, got '%s'\n", bad, optarg ? optarg : "");
            return -1;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, PROG ": expected one STORE_DIR (usage: " PROG " STORE_DIR --text FILE [options]; see "
                "--help)\n");
        return -1;
    }
    o->store_dir = argv[optind];
    if (!o->text) {
        fprintf(stderr, PROG ": --text FILE is required (see --help)\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cal_opts o;
    int a = parse_args(argc, argv, &o);
    if (a)
        return a > 0 ? 0 : EXIT_USAGE;
    g_verbosity = o.verbosity;
    if (o.threads > 0)
        openblas_set_num_threads(o.threads);
    cli_on_stop_signals(on_signal);
    ierr err = IERR_INIT;
    if (calibrate(&o, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    return 0;
}
