/* sparse.c: the sparse FFN engine (see sparse.h): per layer a window over
 * the selected sets and a neuron matrix of the resident bundles; per token
 * the selection (predictor or true set), the window's evictions, one
 * coalesced batch of parallel reads of the missing bundles straight into
 * the matrix, and the FFN over the resident rows. */
#include "sparse.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "activity.h"
#include "cli.h"
#include "coalesce.h"
#include "read_pool.h"
#include "neuron_matrix.h"
#include "predict.h"
#include "store.h"
#include "window.h"

#define SPARSE_DEFAULT_WINDOW  4
#define SPARSE_DEFAULT_READERS 4
#define SPARSE_DEFAULT_WARMUP  16
#define SPARSE_CONVERT_CHUNK   1024   /* elements per step of sparse_convert_tail */
#define SPARSE_TRUTH_BLOCK     64     /* neurons per read while copying the up rows */
#define SPARSE_IOQ_BYTES(n)    (512u + 64u * (uint64_t)(n))   /* pool struct + handles, bound */
#define SPARSE_WINDOW_BYTES    256u   /* window struct, bound */

typedef struct {
    /* All owned by the engine, used by its single owner thread. */
    nmat    *nm;          /* resident bundles */
    window  *win;         /* last k selected sets */
    pred    *pr;          /* predict mode: the layer's predictor; else NULL */
    float   *up;          /* [n][d] f32 up rows when the truth is computed, else NULL */
    float   *gate;        /* [n][d] gate rows (gated models, with up), else NULL */
    double   act_thr;     /* SwiGLU: criterion value must exceed this; exact zeros: 0 */
    int64_t  grows;
    int64_t  tokens, tokens_after;
    sparse_count all, after;
} sparse_layer;

struct sparse {
    /* Set up by sparse_new, then used by the owner thread only; the reader
     * threads read plan, req_row, job_layer, src, dtype and row_len during
     * a batch, while the owner waits in ioq_run (the pool's mutex orders
     * the accesses). */
    model        *m;          /* borrowed: the model served */
    source       *src;        /* borrowed: m->src */
    sparse_opts   o;
    sparse_budget bud;
    int64_t       L, n, d, row_len, max_rows;
    int           gated;
    act_crit      crit;       /* what "active" means for the true set (the calibration's) */
    int           truth;      /* true set computed (oracle, check_recall) */
    fmt_dtype     dtype;
    uint64_t      B;          /* bundle bytes in the store dtype */
    sparse_layer *layers;     /* [L], owned */
    window_delta  delta;      /* owned; cleared per token and layer */
    coal_params   cp;
    coal_plan     plan;       /* owned; the current layer's reads */
    unsigned char **req_row;  /* [n], owned: first matrix row of each request */
    int64_t       job_layer;  /* layer of the batch being read */
    ioq          *q;          /* owned reader pool */
    void         *scratch;    /* owned block holding the arrays below */
    int32_t      *sel;        /* [n] selected ids */
    int32_t      *tset;       /* [n] true ids */
    int32_t      *miss;       /* [n] selected, not resident */
    uint8_t      *mark;       /* [n] 1 = truly active (cleared after use) */
    float        *pre, *gpre, *actbuf;   /* [n] FFN scratch (gpre gated only) */
    float        *bup, *bgate;           /* [n] biases gathered by row */
    float        *ph, *ps;               /* predictor scratch [rank max], [n] */
    sparse_count *cur;        /* [max_rows] counters of the rows of the last forward */
    int64_t       tokens;     /* tokens whose last layer is done */
};


void sparse_opts_init(sparse_opts *o, sparse_mode mode)
{
    memset(o, 0, sizeof *o);
    o->mode = mode;
    o->window = SPARSE_DEFAULT_WINDOW;
    o->readers = SPARSE_DEFAULT_READERS;
    o->warmup = SPARSE_DEFAULT_WARMUP;
}

void sparse_convert_tail(fmt_dtype t, float *dst, size_t n)
{
    uint64_t bytes = fmt_bytes(t, n);
    if (t == FMT_F32 || bytes >= n * sizeof(float))   /* also: n not whole blocks (UINT64_MAX) */
        return;
    /* Chunk [i, i+c) (whole blocks: the chunk is a multiple of 32 values)
     * is copied out, then written to bytes [4i, 4(i+c)); with e < 4 bytes
     * per value on average, the bytes not yet read start at
     * 4n - e n + e(i+c) >= 4(i+c) since i+c <= n. */
    const unsigned char *raw = (const unsigned char *)dst + (n * sizeof(float) - bytes);
    unsigned char local[SPARSE_CONVERT_CHUNK * sizeof(float)];
    for (size_t i = 0; i < n; i += SPARSE_CONVERT_CHUNK) {
        size_t c = n - i < SPARSE_CONVERT_CHUNK ? n - i : SPARSE_CONVERT_CHUNK;
        memcpy(local, raw + fmt_bytes(t, i), (size_t)fmt_bytes(t, c));
        fmt_to_f32(t, local, dst + i, c);
    }
}

/* ---- setup: requirements and the memory plan -------------------------------- */

/* What the mode needs from the model, checked once: the criterion and, per
 * layer, rank, threshold and act_threshold. */
typedef struct {
    act_crit     crit;
    int          truth;
    int64_t     *rank;     /* [L] predictor ranks (predict), else 0; owned */
    double      *tau;      /* [L] predictor thresholds; owned */
    double      *act_thr;  /* [L]; owned */
    int64_t      rmax;
} sparse_info;

static void info_free(sparse_info *nf)
{
    free(nf->rank);
    free(nf->tau);
    free(nf->act_thr);
    memset(nf, 0, sizeof *nf);
}

/* The calibrated store's criterion against the model's: an exact one must
 * match (a store calibrated as anything else is refused; none is fine for
 * oracle); a thresholded one is read into *crit. */
static int calib_criterion(const model *m, int exact, act_crit *crit, ierr *err)
{
    const char *cr = source_calib_criterion(m->src);
    act_crit got;
    if (exact) {
        if (cr && strcmp(cr, act_name(*crit)) != 0)
            return ierr_set(err, -EINVAL,
                            "sparse: the store was calibrated with criterion '%s', activation %s needs '%s'", cr,
                            act_fn_name(m->cfg.act), act_name(*crit));
        return 0;
    }
    if (act_parse(cr, &got) || !act_thresholded(got))
        return ierr_set(err, -EINVAL, "sparse: unknown calibration criterion '%s' for a gated model",
                        cr ? cr : "(none)");
    *crit = got;
    return 0;
}

static int info_get(const model *m, const sparse_opts *o, sparse_info *nf, ierr *err)
{
    memset(nf, 0, sizeof *nf);
    const hp_config *c = &m->cfg;
    const char *mname = o->mode == SPARSE_PREDICT ? "predict" : "oracle";
    if (o->mode != SPARSE_PREDICT && o->mode != SPARSE_ORACLE)
        return ierr_set(err, -EINVAL, "sparse: unknown mode %d", (int)o->mode);
    if (o->window < 1)
        return ierr_set(err, -EINVAL, "sparse: window %lld (must be >= 1)", (long long)o->window);
    if (!c->gated && c->act != ACT_FN_RELU)
        return ierr_set(err, -EINVAL, "--mode %s: needs a ReLU or a gated FFN, this model has %s without a gate",
                        mname, act_fn_name(c->act));
    int64_t bl = (c->gated ? 3 : 2) * c->d_model;
    if ((uint64_t)source_bundle_bytes(m->src) != nmat_row_bytes(bl, source_dtype(m->src)))
        return ierr_set(err, -EINVAL, "sparse: bundle of %lld bytes is not %lld %s values",
                        (long long)source_bundle_bytes(m->src), (long long)bl, fmt_dtype_name(source_dtype(m->src)));
    nf->truth = o->mode == SPARSE_ORACLE || o->check_recall;
    /* an activation with exact zeros has an exact criterion (no thresholds
     * to calibrate); plain SwiGLU has the calibration's */
    int exact = hp_exact_crit(c, &nf->crit) == 0;
    int need_calib = o->mode == SPARSE_PREDICT || !exact;
    nf->rank = calloc((size_t)c->n_layers, sizeof *nf->rank);
    nf->tau = calloc((size_t)c->n_layers, sizeof *nf->tau);
    nf->act_thr = calloc((size_t)c->n_layers, sizeof *nf->act_thr);
    if (!nf->rank || !nf->tau || !nf->act_thr) {
        info_free(nf);
        return ierr_set(err, -ENOMEM, "sparse: out of memory");
    }
    if (!need_calib)
        return 0;
    int rc = 0;
    for (int64_t l = 0; rc == 0 && l < c->n_layers; l++) {
        store_calib cal;
        rc = source_calib(m->src, l, &cal, err);
        if (rc) {
            if (rc == -ENOENT)
                ierr_set(err, -ENOENT, "--mode %s needs a calibrated store%s (run inflash-calibrate on it)", mname,
                         o->mode == SPARSE_ORACLE ? " for a gated model (its activity thresholds)" : "");
            break;
        }
        if (o->mode == SPARSE_PREDICT) {
            if (cal.rank < 1 || cal.rank > c->d_model || cal.rank > c->d_ffn) {
                rc = ierr_set(err, -EINVAL, "sparse: layer %lld: predictor rank %lld out of range", (long long)l,
                              (long long)cal.rank);
                break;
            }
            nf->rank[l] = cal.rank;
            nf->tau[l] = cal.threshold + o->tau_shift;
            if (cal.rank > nf->rmax)
                nf->rmax = cal.rank;
        }
        nf->act_thr[l] = exact ? 0.0 : cal.act_threshold;
    }
    if (rc == 0)
        rc = calib_criterion(m, exact, &nf->crit, err);
    if (rc)
        info_free(nf);
    return rc;
}

/* The scratch block: its arrays in order, for n neurons and predictor rank
 * rmax; sizes in floats/ints of 4 bytes except mark. Carves into sp if not
 * NULL; returns the bytes. */
static uint64_t scratch_layout(int64_t n, int64_t rmax, int gated, struct sparse *sp)
{
    uint64_t off = 0;
    unsigned char *base = sp ? sp->scratch : NULL;
#define CARVE(field, type, count)                                    \
    do {                                                             \
        if (sp)                                                      \
            sp->field = (type *)(void *)(base + off);                \
        off += ((uint64_t)(count) * sizeof(type) + 63u) & ~63ull;    \
    } while (0)
    CARVE(sel, int32_t, n);
    CARVE(tset, int32_t, n);
    CARVE(miss, int32_t, n);
    CARVE(pre, float, n);
    if (gated)
        CARVE(gpre, float, n);
    CARVE(actbuf, float, n);
    CARVE(bup, float, n);
    CARVE(bgate, float, n);
    CARVE(ph, float, rmax > 0 ? rmax : 1);
    CARVE(ps, float, n);
    CARVE(mark, uint8_t, n);
#undef CARVE
    return off;
}

static uint64_t window_bound(int64_t n, int64_t k)
{
    /* count + stamp per neuron, k + 1 slots grown to at most n ids each */
    return SPARSE_WINDOW_BYTES + (uint64_t)n * 8u + (uint64_t)(k + 1) * ((uint64_t)n * 4u + 32u);
}

static void plan_fill(const model *m, const sparse_opts *o, const sparse_info *nf, sparse_budget *b)
{
    const hp_config *c = &m->cfg;
    int64_t n = c->d_ffn, d = c->d_model, L = c->n_layers;
    int64_t row_len = nmat_row_len(d, c->gated);
    memset(b, 0, sizeof *b);
    b->model_bytes = m->resident_bytes + o->extra_bytes;
    uint64_t f = sizeof(struct sparse) + (uint64_t)L * sizeof(sparse_layer);
    for (int64_t l = 0; l < L; l++) {
        if (nf->rank[l] > 0)
            f += sizeof(pred) + ((uint64_t)nf->rank[l] * (uint64_t)(d + n) + (uint64_t)n) * sizeof(float);
        if (nf->truth)
            f += (uint64_t)n * (uint64_t)d * sizeof(float) * (c->gated ? 2u : 1u);
        f += window_bound(n, o->window);
    }
    f += 2u * (uint64_t)n * sizeof(int32_t);                                            /* delta */
    f += (uint64_t)n * (sizeof(coal_req) + sizeof(coal_item) + sizeof(int32_t));        /* plan */
    f += (uint64_t)n * sizeof(unsigned char *);                                         /* req_row */
    f += scratch_layout(n, nf->rmax, c->gated, NULL);
    f += (uint64_t)m->s.max_batch * sizeof(sparse_count);
    f += SPARSE_IOQ_BYTES(o->readers);
    b->fixed_bytes = f;
    fmt_dtype dt = m->w.wdt;   /* rows are kept in the model's dtype (info_get checked the bundle) */
    b->row_bytes = nmat_row_bytes(row_len, dt) + sizeof(int32_t);
    uint64_t nmat0 = nmat_bytes(0, row_len, dt, n);
    int64_t min_rows = n < SPARSE_MIN_ROWS ? n : SPARSE_MIN_ROWS;
    b->min_bytes = b->model_bytes + f + (uint64_t)L * nmat_bytes(min_rows, row_len, dt, n);
    if (o->budget == 0) {
        b->capacity = n;
    } else if (o->budget < b->min_bytes) {
        b->capacity = 0;
    } else {
        uint64_t per_layer = (o->budget - b->model_bytes - f) / (uint64_t)L;
        uint64_t rows = per_layer > nmat0 ? (per_layer - nmat0) / b->row_bytes : 0;
        b->capacity = rows >= (uint64_t)n ? n : (int64_t)rows;
    }
    b->nmat_bytes = b->capacity > 0 ? (uint64_t)L * nmat_bytes(b->capacity, row_len, dt, n) : 0;
    b->total_bytes = b->model_bytes + f + b->nmat_bytes;
}

#define MIB(x) ((double)(x) / 1048576.0)

int sparse_plan(const model *m, const sparse_opts *o, sparse_budget *b, ierr *err)
{
    memset(b, 0, sizeof *b);
    if (o->readers < 0 || o->readers > 64)
        return ierr_set(err, -EINVAL, "sparse: %d reader threads (0..64)", o->readers);
    sparse_info nf;
    int rc = info_get(m, o, &nf, err);
    if (rc)
        return rc;
    plan_fill(m, o, &nf, b);
    info_free(&nf);
    if (o->budget && o->budget < b->min_bytes)
        return ierr_set(err, -ENOSPC,
                        "--dram-budget %.1f MiB is below the minimum of %.1f MiB for this model and mode "
                        "(model %.1f MiB, engine %.1f MiB, %d-row neuron matrices %.1f MiB)",
                        MIB(o->budget), MIB(b->min_bytes), MIB(b->model_bytes), MIB(b->fixed_bytes),
                        (int)(m->cfg.d_ffn < SPARSE_MIN_ROWS ? m->cfg.d_ffn : SPARSE_MIN_ROWS),
                        MIB(b->min_bytes - b->model_bytes - b->fixed_bytes));
    return 0;
}

/* ---- setup: allocation and loading ------------------------------------------- */

/* The f32 up (and gate) rows of a layer, for the true set: the whole
 * neuron file read once, in blocks. */
static int load_truth(sparse *sp, int64_t l, ierr *err)
{
    sparse_layer *Ly = &sp->layers[l];
    int64_t n = sp->n, d = sp->d, rl = sp->row_len;
    size_t per = (size_t)n * (size_t)d;
    Ly->up = malloc(per * sizeof(float));
    if (sp->gated)
        Ly->gate = malloc(per * sizeof(float));
    float *blk = malloc((size_t)SPARSE_TRUTH_BLOCK * (size_t)rl * sizeof(float));
    int rc = 0;
    if (!Ly->up || (sp->gated && !Ly->gate) || !blk)
        rc = ierr_set(err, -ENOMEM, "sparse: out of memory for the up rows of layer %lld", (long long)l);
    for (int64_t j = 0; rc == 0 && j < n; j += SPARSE_TRUTH_BLOCK) {
        int64_t nb = n - j < SPARSE_TRUTH_BLOCK ? n - j : SPARSE_TRUTH_BLOCK;
        size_t nf = (size_t)nb * (size_t)rl, len = (size_t)nb * (size_t)sp->B;
        rc = source_read_ffn(sp->src, l, (uint64_t)j * sp->B, (unsigned char *)blk + nf * sizeof(float) - len, len,
                             err);
        if (rc)
            break;
        sparse_convert_tail(sp->dtype, blk, nf);
        for (int64_t i = 0; i < nb; i++) {
            memcpy(Ly->up + (j + i) * d, blk + i * rl, (size_t)d * sizeof(float));
            if (sp->gated)
                memcpy(Ly->gate + (j + i) * d, blk + i * rl + d, (size_t)d * sizeof(float));
        }
    }
    free(blk);
    return rc;
}

static int sparse_ffn(model *m, void *ctx, int64_t layer, int64_t pos, const float *x, int64_t n, float *y,
                      ierr *err);

int sparse_new(model *m, const sparse_opts *o, sparse **out, ierr *err)
{
    *out = NULL;
    sparse_budget b;
    int rc = sparse_plan(m, o, &b, err);
    if (rc)
        return rc;
    sparse_info nf;
    rc = info_get(m, o, &nf, err);
    if (rc)
        return rc;
    sparse *sp = calloc(1, sizeof *sp);
    if (!sp) {
        info_free(&nf);
        return ierr_set(err, -ENOMEM, "sparse: out of memory");
    }
    const hp_config *c = &m->cfg;
    sp->m = m;
    sp->src = m->src;
    sp->o = *o;
    sp->bud = b;
    sp->L = c->n_layers;
    sp->n = c->d_ffn;
    sp->d = c->d_model;
    sp->gated = c->gated;
    sp->row_len = nmat_row_len(sp->d, sp->gated);
    sp->max_rows = m->s.max_batch;
    sp->crit = nf.crit;
    sp->truth = nf.truth;
    sp->dtype = source_dtype(m->src);
    sp->B = (uint64_t)source_bundle_bytes(m->src);
    /* max_gap stays 0: every bundle a request covers is wanted and lands in
     * the next reserved row (load_ids checks it) */
    coal_params_init(&sp->cp, sp->n, sp->B);
    sp->layers = calloc((size_t)sp->L, sizeof *sp->layers);
    sp->req_row = malloc((size_t)sp->n * sizeof *sp->req_row);
    sp->cur = calloc((size_t)sp->max_rows, sizeof *sp->cur);
    uint64_t sb = scratch_layout(sp->n, nf.rmax, sp->gated, NULL);
    if (posix_memalign(&sp->scratch, 64, (size_t)sb) != 0)
        sp->scratch = NULL;
    if (!sp->layers || !sp->req_row || !sp->cur || !sp->scratch) {
        rc = ierr_set(err, -ENOMEM, "sparse: out of memory");
        goto fail;
    }
    memset(sp->scratch, 0, (size_t)sb);
    scratch_layout(sp->n, nf.rmax, sp->gated, sp);
    rc = window_delta_init(&sp->delta, sp->n, err);
    if (rc == 0)
        rc = coal_plan_reserve(&sp->plan, sp->n, err);
    for (int64_t l = 0; rc == 0 && l < sp->L; l++) {
        sparse_layer *Ly = &sp->layers[l];
        Ly->act_thr = nf.act_thr[l];
        rc = nmat_new(sp->n, b.capacity, sp->d, sp->gated, sp->dtype, &Ly->nm, err);
        if (rc == 0)
            rc = window_new(sp->n, o->window, &Ly->win, err);
        if (rc == 0 && o->mode == SPARSE_PREDICT)
            rc = pred_load(sp->src, l, nf.rank[l], nf.tau[l], &Ly->pr, err);
        if (rc == 0 && sp->truth)
            rc = load_truth(sp, l, err);
    }
    if (rc == 0)
        rc = ioq_new(o->readers, &sp->q, err);
    if (rc)
        goto fail;
    info_free(&nf);
    m->ffn = sparse_ffn;
    m->ffn_ctx = sp;
    *out = sp;
    return 0;
fail:
    info_free(&nf);
    sparse_free(sp);
    return rc;
}

void sparse_free(sparse *sp)
{
    if (!sp)
        return;
    if (sp->m->ffn_ctx == sp) {
        sp->m->ffn = model_ffn_dense;
        sp->m->ffn_ctx = NULL;
    }
    ioq_free(sp->q);
    if (sp->layers)
        for (int64_t l = 0; l < sp->L; l++) {
            sparse_layer *Ly = &sp->layers[l];
            nmat_free(Ly->nm);
            window_free(Ly->win);
            pred_free(Ly->pr);
            free(Ly->up);
            free(Ly->gate);
        }
    free(sp->layers);
    window_delta_free(&sp->delta);
    coal_plan_free(&sp->plan);
    free(sp->req_row);
    free(sp->cur);
    free(sp->scratch);
    free(sp);
}

/* ---- per token ---------------------------------------------------------------- */

/* The truly active neurons of layer l for input x into sp->tset (marked in
 * sp->mark); returns how many. */
static int64_t true_set(sparse *sp, int64_t l, const float *x)
{
    const sparse_layer *Ly = &sp->layers[l];
    const model_weights *w = &sp->m->w;
    int64_t n = sp->n, d = sp->d, k = 0;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)d, 1.0f, Ly->up, (int)d, x, 1, 0.0f, sp->pre, 1);
    if (w->ffn_b_up)
        cblas_saxpy((int)n, 1.0f, w->ffn_b_up + l * n, 1, sp->pre, 1);
    if (sp->gated) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)d, 1.0f, Ly->gate, (int)d, x, 1, 0.0f, sp->gpre, 1);
        if (w->ffn_b_gate)
            cblas_saxpy((int)n, 1.0f, w->ffn_b_gate + l * n, 1, sp->gpre, 1);
    }
    /* the calibration's rule (activity.h); exact zeros: exactly the neurons
     * whose term is non-zero (act_thr is 0). The threshold is used as a float. */
    const double t = (float)Ly->act_thr;
    const float *g = sp->gated ? sp->gpre : NULL;
    const act_spec as = hp_act_spec(&sp->m->cfg, l);
    for (int64_t j = 0; j < n; j++)
        if (act_is_active(sp->crit, as, g ? g[j] : 0.0f, sp->pre[j], t)) {
            sp->tset[k++] = (int32_t)j;
            sp->mark[j] = 1;
        }
    return k;
}

/* Reader job: request r of the plan, read straight into its rows (the
 * matrix keeps the store's dtype). */
static int read_job(void *ctx, int64_t r, ierr *err)
{
    sparse *sp = ctx;
    const coal_req *q = &sp->plan.reqs[r];
    return source_read_ffn(sp->src, sp->job_layer, q->offset, sp->req_row[r], (size_t)q->length, err);
}

/* Read ids[0..cnt) (none resident) of layer l into new rows of its matrix. */
static int load_ids(sparse *sp, int64_t l, const int32_t *ids, int64_t cnt, sparse_count *t, ierr *err)
{
    nmat *nm = sp->layers[l].nm;
    if (cnt == 0)
        return 0;
    int rc = coal_build(&sp->plan, &sp->cp, ids, cnt, err);
    if (rc)
        return rc;
    const coal_item *it = sp->plan.items;
    const coal_req *rq = sp->plan.reqs;
    int64_t reserved = 0, first = 0;
    unsigned char *prev = NULL;
    size_t row_bytes = nmat_row_size(nm);
    /* Reserve the rows in item (= id = file) order: a request's bundles then
     * land in consecutive rows, which the read fills in one piece. */
    for (int64_t j = 0; rc == 0 && j < sp->plan.n_items; j++) {
        void *vrow;
        rc = nmat_reserve(nm, it[j].id, &vrow, err);
        unsigned char *row = vrow;
        if (rc)
            break;
        reserved++;
        if (j == 0 || it[j].req != it[j - 1].req) {
            sp->req_row[it[j].req] = row;
            first = j;
        } else if (row != prev + row_bytes) {
            rc = ierr_set(err, -EIO, "sparse: layer %lld: rows of a read request are not consecutive", (long long)l);
        }
        prev = row;
        if (rc == 0 && (j + 1 == sp->plan.n_items || it[j + 1].req != it[j].req) &&
            (rq[it[j].req].count != j - first + 1 || rq[it[j].req].first_id != it[first].id))
            rc = ierr_set(err, -EIO, "sparse: layer %lld: a read request covers bundles that are not wanted",
                          (long long)l);
    }
    if (rc == 0) {
        sp->job_layer = l;
        uint64_t t0 = cli_now_ns();
        rc = ioq_run(sp->q, sp->plan.n_reqs, read_job, sp, err);
        t->io_ns += cli_now_ns() - t0;
    }
    if (rc) {
        for (int64_t j = 0; j < reserved; j++)
            nmat_delete(nm, it[j].id, NULL);
        return rc;
    }
    t->loaded += sp->plan.n_items;
    t->bytes += sp->plan.bytes_total;
    t->reads += sp->plan.n_reqs;
    return 0;
}

/* y += the FFN over every resident row of layer l (no down bias). */
static void compute_rows(sparse *sp, int64_t l, const float *x, float *y, sparse_count *t)
{
    const nmat *nm = sp->layers[l].nm;
    const model_weights *w = &sp->m->w;
    int64_t u = nmat_used(nm), n = sp->n;
    const int32_t *ids = nmat_row_ids(nm);
    const float *bu = w->ffn_b_up ? w->ffn_b_up + l * n : NULL;
    const float *bg = w->ffn_b_gate ? w->ffn_b_gate + l * n : NULL;
    for (int64_t r = 0; r < u; r++) {
        if (bu)
            sp->bup[r] = bu[ids[r]];
        if (bg)
            sp->bgate[r] = bg[ids[r]];
    }
    model_ffn_rows(sp->dtype, nmat_data(nm), nmat_stride(nm), u, sp->d, hp_act_spec(&sp->m->cfg, l),
                   bu ? sp->bup : NULL, bg ? sp->bgate : NULL, x, 1, sp->pre, sp->gated ? sp->gpre : NULL, u,
                   sp->actbuf, y, sp->m->s.wscratch);
    t->resident += u;
}

/* Apply the window's evictions in sp->delta to the matrix. */
static int apply_drops(sparse *sp, int64_t l, sparse_count *t, ierr *err)
{
    nmat *nm = sp->layers[l].nm;
    for (int64_t i = 0; i < sp->delta.n_drop; i++) {
        int32_t id = sp->delta.drop[i];
        if (!nmat_contains(nm, id))   /* never loaded (an overflowed set) */
            continue;
        int rc = nmat_delete(nm, id, err);
        if (rc)
            return rc;
        t->dropped++;
    }
    return 0;
}

/* One token through layer l's FFN: x [d] in, y [d] out. */
static int layer_token(sparse *sp, int64_t l, const float *x, float *y, sparse_count *t, ierr *err)
{
    sparse_layer *Ly = &sp->layers[l];
    nmat *nm = Ly->nm;
    window *win = Ly->win;
    int64_t cap = nmat_capacity(nm), d = sp->d;
    uint64_t t0 = cli_now_ns();

    /* select */
    int64_t ntrue = sp->truth ? true_set(sp, l, x) : 0;
    const int32_t *sel;
    int64_t nsel;
    if (sp->o.mode == SPARSE_PREDICT) {
        nsel = pred_select(Ly->pr, x, sp->ph, sp->ps, sp->sel);
        sel = sp->sel;
    } else {
        nsel = ntrue;
        sel = sp->tset;
    }
    t->selected += nsel;
    int64_t hits = 0;
    if (sp->truth) {
        for (int64_t i = 0; i < nsel; i++)
            hits += sp->mark[sel[i]];
        t->active += ntrue;
        t->hits += hits;
    }
    uint64_t t1 = cli_now_ns();
    t->select_ns += t1 - t0;

    /* window: push, shrink to the capacity, maybe grow back, evict */
    window_delta_clear(&sp->delta);
    int rc = window_push(win, sel, nsel, &sp->delta, err);
    int shrunk = 0;
    while (rc == 0 && window_resident(win) > cap && window_k(win) > 1) {
        rc = window_set_k(win, window_k(win) - 1, &sp->delta, err);
        t->shrinks++;
        shrunk = 1;
    }
    if (rc == 0 && !shrunk && window_k(win) < sp->o.window && 2 * window_resident(win) <= cap) {
        rc = window_set_k(win, window_k(win) + 1, &sp->delta, err);
        Ly->grows++;
    }
    if (rc == 0)
        rc = apply_drops(sp, l, t, err);
    if (rc)
        return rc;

    /* load what is selected and not resident (the window's new ids, and
     * any left out by an earlier overflow) */
    int64_t nmiss = 0;
    for (int64_t i = 0; i < nsel; i++)
        if (!nmat_contains(nm, sel[i]))
            sp->miss[nmiss++] = sel[i];

    /* The FFN runs over every resident row, the window's whole union, not
     * just this token's selection: with exact zeros an extra neuron
     * contributes its exact value (0 if inactive), so it can only help
     * accuracy; for SwiGLU every resident neuron is computed exactly too —
     * the only approximation is which neurons are resident. */
    memset(y, 0, (size_t)d * sizeof(float));
    if (nmat_used(nm) + nmiss <= cap) {
        rc = load_ids(sp, l, sp->miss, nmiss, t, err);
        if (rc)
            return rc;
        if (sp->truth)
            for (int64_t i = 0; i < ntrue; i++)
                t->resident_hits += nmat_contains(nm, sp->tset[i]);
        compute_rows(sp, l, x, y, t);
    } else {
        /* The selection alone exceeds the matrix (k is 1, so everything
         * resident is selected): the resident rows first, then the rest in
         * chunks of the capacity; the matrix keeps the last chunk. */
        t->overflows++;
        t->resident_hits += hits;   /* exactly the selection gets computed */
        compute_rows(sp, l, x, y, t);
        for (int64_t i = 0; i < nmiss; i += cap) {
            int64_t c = nmiss - i < cap ? nmiss - i : cap;
            nmat_clear(nm);
            rc = load_ids(sp, l, sp->miss + i, c, t, err);
            if (rc)
                return rc;
            compute_rows(sp, l, x, y, t);
        }
    }
    if (sp->m->w.ffn_b_down)
        cblas_saxpy((int)d, 1.0f, sp->m->w.ffn_b_down + l * d, 1, y, 1);
    if (sp->truth)
        for (int64_t i = 0; i < ntrue; i++)
            sp->mark[sp->tset[i]] = 0;
    t->ffn_ns += cli_now_ns() - t0;
    return 0;
}

static void count_add(sparse_count *a, const sparse_count *b)
{
    a->selected += b->selected;
    a->active += b->active;
    a->hits += b->hits;
    a->resident_hits += b->resident_hits;
    a->loaded += b->loaded;
    a->dropped += b->dropped;
    a->resident += b->resident;
    a->bytes += b->bytes;
    a->reads += b->reads;
    a->io_ns += b->io_ns;
    a->select_ns += b->select_ns;
    a->ffn_ns += b->ffn_ns;
    a->shrinks += b->shrinks;
    a->overflows += b->overflows;
}

static int sparse_ffn(model *m, void *ctx, int64_t layer, int64_t pos, const float *x, int64_t n, float *y,
                      ierr *err)
{
    sparse *sp = ctx;
    (void)m;
    (void)pos;
    if (n < 1 || n > sp->max_rows)
        return ierr_set(err, -EINVAL, "sparse: %lld rows (1..%lld)", (long long)n, (long long)sp->max_rows);
    if (layer == 0)
        memset(sp->cur, 0, (size_t)n * sizeof *sp->cur);
    sparse_layer *Ly = &sp->layers[layer];
    /* rows are consecutive tokens: the window sees them in order */
    for (int64_t i = 0; i < n; i++) {
        sparse_count t = {0};
        int rc = layer_token(sp, layer, x + i * sp->d, y + i * sp->d, &t, err);
        if (rc)
            return rc;
        count_add(&sp->cur[i], &t);
        count_add(&Ly->all, &t);
        Ly->tokens++;
        if (sp->tokens + i >= sp->o.warmup) {
            count_add(&Ly->after, &t);
            Ly->tokens_after++;
        }
    }
    if (layer == sp->L - 1)
        sp->tokens += n;
    return 0;
}

/* ---- figures ------------------------------------------------------------------ */

void sparse_last(const sparse *sp, int64_t row, sparse_count *t)
{
    if (row >= 0 && row < sp->max_rows)
        *t = sp->cur[row];
    else
        memset(t, 0, sizeof *t);
}

int sparse_knows_truth(const sparse *sp) { return sp->truth; }
const sparse_budget *sparse_get_budget(const sparse *sp) { return &sp->bud; }
uint64_t sparse_layer_bytes(const sparse *sp) { return (uint64_t)sp->n * sp->B; }

int sparse_layer_stats_get(const sparse *sp, int64_t layer, sparse_layer_stats *st, ierr *err)
{
    if (layer < 0 || layer >= sp->L)
        return ierr_set(err, -EINVAL, "sparse: no layer %lld", (long long)layer);
    const sparse_layer *Ly = &sp->layers[layer];
    st->capacity = nmat_capacity(Ly->nm);
    st->k = window_k(Ly->win);
    st->k_max = sp->o.window;
    st->grows = Ly->grows;
    st->tokens = Ly->tokens;
    st->tokens_after = Ly->tokens_after;
    st->all = Ly->all;
    st->after = Ly->after;
    return 0;
}
