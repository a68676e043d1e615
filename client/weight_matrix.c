/* weight_matrix.c: weight matrix products for the client (weight_matrix.h):
 * OpenBLAS for f32; for one vector of activations the kernels of
 * client/kernel.h (the set picked from the CPU's features), the rows or
 * columns split with one helper thread on a multi-core machine; for
 * batches, rows converted to f32 a block at a time and OpenBLAS. */
#include "weight_matrix.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernel.h"
#include "quant.h"

#ifdef KERN_X86
#include <cpuid.h>
#endif

/* ---- the kernel set ---------------------------------------------------------- */

static const kern_set *kset;        /* set once by kernels_pick or wm_use_kernels */
static pthread_once_t kset_once = PTHREAD_ONCE_INIT;

#ifdef KERN_X86
static int cpu_has(const char *isa)
{
    unsigned a, b, c, d;
    __builtin_cpu_init();
    int base = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __get_cpuid(1, &a, &b, &c, &d) &&
               (c & bit_F16C);
    if (strcmp(isa, "avx2") == 0)
        return base;
    return base && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

/* The sets this build has, best first. */
static const kern_set *const all_sets[] = {
#ifdef KERN_X86
    &kern_avx512, &kern_avx2,
#endif
    &kern_portable,
};

static int set_usable(const kern_set *k)
{
#ifdef KERN_X86
    if (k != &kern_portable)
        return cpu_has(k->name);
#endif
    return k == &kern_portable;
}

static void kernels_pick(void)
{
    for (size_t i = 0; i < sizeof all_sets / sizeof all_sets[0]; i++)
        if (set_usable(all_sets[i])) {
            kset = all_sets[i];
            return;
        }
}

static const kern_set *kernels(void)
{
    pthread_once(&kset_once, kernels_pick);
    return kset;
}

int wm_use_kernels(const char *name)
{
    pthread_once(&kset_once, kernels_pick);
    for (size_t i = 0; i < sizeof all_sets / sizeof all_sets[0]; i++)
        if (strcmp(all_sets[i]->name, name) == 0) {
            if (!set_usable(all_sets[i]))
                return -ENOTSUP;
            kset = all_sets[i];
            return 0;
        }
    return -ENOENT;
}

const char *wm_kernels(void)
{
    return kernels()->name;
}

/* ---- memory ------------------------------------------------------------------- */

#define WM_HUGE ((size_t)2 << 20)   /* the x86-64 huge page */

void *wm_alloc(size_t bytes)
{
    if (bytes < WM_HUGE)             /* small matrices: no page of their own */
        return malloc(bytes ? bytes : 1);
    size_t n = (bytes + WM_HUGE - 1) / WM_HUGE * WM_HUGE;
    if (n < bytes)
        return NULL;
    void *p = aligned_alloc(WM_HUGE, n);
#ifdef MADV_HUGEPAGE
    if (p)
        (void)madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

/* ---- scratch ------------------------------------------------------------------- */

int64_t wm_scratch_floats(int64_t cols)
{
    return 2 * (int64_t)WM_BLOCK * (cols > FMT_QK ? cols : FMT_QK);   /* a block of rows per thread */
}

void wm_row(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t cols, float *dst)
{
    fmt_to_f32(dt, wm_at(dt, w, ld, r, 0), dst, (size_t)cols);
}

/* x[0..cols) as q8_0 blocks (quant_q8_0's blocks, unpacked, and their pairs
 * as kern_xq lays them out) in scratch, which holds cols/4 + 2 * cols/32
 * floats for the blocks and 5/8 cols for the pairs (less than cols, fewer
 * than wm_scratch_floats). */
static kern_xq quantize_x(const float *x, int64_t cols, float *scratch)
{
    int64_t nblk = cols / FMT_QK, np = nblk / 2;
    float *d = scratch;
    int32_t *s8 = (int32_t *)(scratch + nblk);
    int8_t *q = (int8_t *)(scratch + 2 * nblk);
    int8_t *qp = (int8_t *)(scratch + 2 * nblk + cols / 4);
    float *dp = scratch + 2 * nblk + cols / 2;
    int32_t *sp = (int32_t *)(dp + 8 * np);
    unsigned char blk[FMT_Q8_0_BYTES];
    for (int64_t b = 0; b < nblk; b++) {
        quant_q8_0(x + b * FMT_QK, blk, FMT_QK);
        d[b] = quant_scale(blk);
        memcpy(q + b * FMT_QK, blk + 2, FMT_QK);
        int32_t s = 0;
        for (unsigned i = 0; i < FMT_QK; i++)
            s += q[b * FMT_QK + i];
        s8[b] = -8 * s;
    }
    for (int64_t p = 0; p < np; p++)
        for (int h = 0; h < 2; h++) {        /* h: block 2p + h */
            const int64_t b = 2 * p + h;
            memcpy(qp + 64 * p + 16 * h, q + b * FMT_QK, 16);
            memcpy(qp + 64 * p + 32 + 16 * h, q + b * FMT_QK + 16, 16);
            for (int i = 0; i < 4; i++) {
                dp[8 * p + 4 * h + i] = d[b];
                sp[16 * p + 4 * h + i] = i == 0 ? s8[b] : 0;
                sp[16 * p + 8 + 4 * h + i] = 0;
            }
        }
    return (kern_xq){q, d, s8, qp, dp, sp};
}

/* ---- one job: part of a product, over rows (xwt) or columns (aw) ------------------ */

typedef struct {
    const kern_set *k;               /* the kernel set */
    fmt_dtype    dt;
    int          aw;                 /* 0: out = x W^T, 1: y += a W */
    const void  *w;
    size_t       ldb;                /* row stride in bytes */
    int64_t      rows, cols;         /* cols in values (whole 32-value groups when quantized) */
    int64_t      n;                  /* vectors: 1 runs a kernel, more convert rows and call sgemm */
    const float *x;                  /* xwt: x [n][cols]; aw: a [n][lda] */
    int64_t      lda;                /* aw: a's row stride */
    const kern_xq *xq;               /* xwt, n == 1, quantized: x as q8_0 blocks */
    float       *out;                /* xwt: out [n][ldo]; aw: y [n][ldo] */
    int64_t      ldo;
    float        beta;               /* xwt: 0 or 1 */
    float       *scratch;            /* converted rows: WM_BLOCK rows of cols floats for this part */
    int          kernel;             /* 1: a single-vector kernel of k; 0: converted rows */
    const struct wm_ffn_part *ffn;   /* not NULL: this job is part of a fused FFN (the rest unused) */
} wm_job;

/* Part of a fused FFN (wm_ffn): rows [0, nb) of w, outputs from row 0. */
typedef struct wm_ffn_part {
    const kern_set *k;
    fmt_dtype    dt;
    const unsigned char *w;          /* the first row */
    size_t       ldb;                /* row stride in bytes */
    size_t       gate, down;         /* byte offsets of the gate row and down column in a row */
    int64_t      nb, d;              /* rows; values per up/gate/down */
    act_spec     as;
    const float *b_up, *b_gate;      /* [nb] or NULL */
    const float *x;                  /* [d] */
    const kern_xq *xq;               /* quantized dtypes: x as q8_0 blocks */
    float       *pre, *gpre, *act;   /* [nb] outputs (gpre NULL when ungated) */
    float       *y;                  /* [d] accumulated */
} wm_ffn_part;

static void ffn_run(const wm_ffn_part *f);

/* f32 rows from scratch ([nb][cols], or [nb][ncols] for aw) through OpenBLAS */
static void batch_run(const wm_job *j)
{
    for (int64_t r0 = 0; r0 < j->rows; r0 += WM_BLOCK) {
        int64_t nb = j->rows - r0 < WM_BLOCK ? j->rows - r0 : WM_BLOCK;
        for (int64_t r = 0; r < nb; r++) {
            const unsigned char *src = (const unsigned char *)j->w + (size_t)(r0 + r) * j->ldb;
            float *dst = j->scratch + r * j->cols;
            if (j->dt == FMT_Q8_0)
                j->k->dequant_q8(src, dst, j->cols / FMT_QK);
            else if (j->dt == FMT_Q4_0)
                j->k->dequant_q4(src, dst, j->cols / FMT_QK);
            else
                fmt_to_f32(j->dt, src, dst, (size_t)j->cols);
        }
        if (!j->aw && j->n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)nb, (int)j->cols, 1.0f, j->scratch, (int)j->cols, j->x,
                        1, j->beta, j->out + r0, 1);
        else if (!j->aw)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->n, (int)nb, (int)j->cols, 1.0f, j->x,
                        (int)j->cols, j->scratch, (int)j->cols, j->beta, j->out + r0, (int)j->ldo);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)j->n, (int)j->cols, (int)nb, 1.0f,
                        j->x + r0, (int)j->lda, j->scratch, (int)j->cols, 1.0f, j->out, (int)j->ldo);
    }
}

static void run_job(const wm_job *j)
{
    const kern_set *k = j->k;
    int64_t nb = j->cols / FMT_QK;
    if (j->ffn) {
        ffn_run(j->ffn);
        return;
    }
    if (j->n > 1 || !j->kernel) {
        batch_run(j);
        return;
    }
    switch (j->dt) {
    case FMT_F16:
        if (j->aw)
            k->aw_f16(j->w, j->ldb, j->rows, j->cols, j->x, j->out);
        else
            k->xwt_f16(j->w, j->ldb, j->rows, j->cols, j->x, j->out, j->beta);
        break;
    case FMT_Q8_0:
        if (j->aw)
            k->aw_q8(j->w, j->ldb, j->rows, nb, j->x, j->out);
        else
            k->xwt_q8(j->w, j->ldb, j->rows, nb, j->xq, j->out, j->beta);
        break;
    case FMT_Q4_0:
        if (j->aw)
            k->aw_q4(j->w, j->ldb, j->rows, nb, j->x, j->out);
        else
            k->xwt_q4(j->w, j->ldb, j->rows, nb, j->xq, j->out, j->beta);
        break;
    default:
        break;
    }
}

/* ---- a second core ------------------------------------------------------------------- */

/* One helper thread runs the second half of a large product while the
 * caller runs the first. Created on first use, lives until exit; it sleeps
 * on a condition variable between jobs (no spinning). `busy` makes
 * concurrent callers fall back to one thread. Each output element is
 * computed by one thread with the same code either way, so a split
 * product equals the unsplit one bit for bit. */
static struct {
    pthread_mutex_t busy;            /* held by the one caller using the helper */
    pthread_mutex_t mu;              /* guards gen, done, job */
    pthread_cond_t  go, fin;
    uint64_t        gen, done;       /* jobs posted / finished */
    wm_job          job;
    int             ok;              /* helper running */
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
       0, 0, {0}, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void *helper_main(void *arg)
{
    (void)arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&P.mu);
        while (P.gen == seen)
            pthread_cond_wait(&P.go, &P.mu);
        seen = P.gen;
        wm_job j = P.job;
        pthread_mutex_unlock(&P.mu);
        run_job(&j);
        pthread_mutex_lock(&P.mu);
        P.done = seen;
        pthread_cond_signal(&P.fin);
        pthread_mutex_unlock(&P.mu);
    }
    return NULL;
}

static void pool_start(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    pthread_t t;
    if (cpus > 1 && pthread_create(&t, NULL, helper_main, NULL) == 0) {
        pthread_detach(t);
        P.ok = 1;
    }
}

/* Run a here and b on the helper, which the caller holds (P.busy); returns
 * when both are done and releases the helper. */
static void pool_both(const wm_job *a, const wm_job *b)
{
    pthread_mutex_lock(&P.mu);
    P.job = *b;
    uint64_t g = ++P.gen;
    pthread_cond_signal(&P.go);
    pthread_mutex_unlock(&P.mu);
    run_job(a);
    pthread_mutex_lock(&P.mu);
    while (P.done != g)
        pthread_cond_wait(&P.fin, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.busy);
}

/* 1 if the helper is running and now held by the caller (P.busy) */
static int pool_take(void)
{
    pthread_once(&pool_once, pool_start);
    return P.ok && pthread_mutex_trylock(&P.busy) == 0;
}

/* Run job j split in two by rows (xwt) or by whole 32-value column groups
 * (aw): the helper takes the second part (and the second half of the
 * scratch). 0 if it did not split. */
static int split_run(const wm_job *j)
{
    if (j->rows * j->cols * j->n < WM_SPLIT_MIN || (j->aw && j->cols < 2 * FMT_QK))
        return 0;
    if (!pool_take())
        return 0;
    wm_job a = *j, b = *j;
    if (!j->aw) {                    /* rows: out[.][r] are independent */
        a.rows = j->rows / 2;
        b.rows = j->rows - a.rows;
        b.w = (const unsigned char *)j->w + (size_t)a.rows * j->ldb;
        b.out = j->out + a.rows;
    } else {                         /* columns: y[.][c] are independent */
        a.cols = (j->cols / 2) & ~(int64_t)(FMT_QK - 1);
        b.cols = j->cols - a.cols;
        b.w = (const unsigned char *)j->w + fmt_bytes(j->dt, (uint64_t)a.cols);
        b.out = j->out + a.cols;
    }
    if (j->scratch)
        b.scratch = j->scratch + (int64_t)WM_BLOCK * j->cols;
    pool_both(&a, &b);
    return 1;
}

static void run_split(const wm_job *j)
{
    if (!split_run(j))
        run_job(j);
}

/* ---- OpenBLAS's threads ------------------------------------------------------------------ */

/* Products on non-f32 weights bring their own second core (the helper), so
 * they set OpenBLAS to one thread (and keep it there: each such product
 * checks, cheaply): its worker threads spin
 * (sched_yield) for a while after each threaded call, and the caller's
 * small OpenBLAS calls between our products (attention over the KV cache,
 * hundreds per token) would keep them spinning against the helper. f32
 * weights leave OpenBLAS as it is (they are all OpenBLAS). */
static void blas_single(void)
{
    if (openblas_get_num_threads() > 1)
        openblas_set_num_threads(1);
}

/* ---- the products -------------------------------------------------------------------------- */

/* The f32 products with OpenBLAS (ld: row stride of w). */
static void blas_xwt(const float *w, int64_t ld, int64_t rows, int64_t cols, const float *x, int64_t n, float *out,
                     int64_t ldo, float beta)
{
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)cols, 1.0f, w, (int)ld, x, 1, beta, out, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)rows, (int)cols, 1.0f, x, (int)cols, w,
                    (int)ld, beta, out, (int)ldo);
}

static void blas_aw(const float *w, int64_t ld, int64_t rows, int64_t cols, const float *a, int64_t lda, int64_t n,
                    float *y)
{
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)rows, (int)cols, 1.0f, w, (int)ld, a, 1, 1.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)cols, (int)rows, 1.0f, a, (int)lda, w,
                    (int)ld, 1.0f, y, (int)cols);
}

/* The job for a product on non-f32 weights: a kernel when n == 1 and the
 * set has one for dt (x quantized into scratch for a quantized xwt), else
 * converted rows. */
static wm_job job_for(fmt_dtype dt, int aw, const void *w, int64_t ld, int64_t rows, int64_t cols, const float *x,
                      int64_t n, int64_t lda, float *out, int64_t ldo, float beta, float *scratch, kern_xq *xq)
{
    const kern_set *k = kernels();
    blas_single();
    wm_job j = {k, dt, aw, w, (size_t)fmt_bytes(dt, (uint64_t)ld), rows, cols, n, x, lda, NULL, out, ldo, beta,
                scratch, 0, NULL};
    if (n == 1 && (dt == FMT_F16 ? k->xwt_f16 != NULL : fmt_is_quant(dt))) {
        j.kernel = 1;
        j.scratch = NULL;
        if (fmt_is_quant(dt) && !aw) {
            *xq = quantize_x(x, cols, scratch);
            j.xq = xq;
        }
    }
    return j;
}

void wm_gemm_xwt(fmt_dtype dt, const void *w, int64_t ld, int64_t rows, int64_t cols,
                 const float *x, int64_t n, float *out, int64_t ldo, float beta, float *scratch)
{
    if (rows <= 0 || n <= 0)
        return;
    if (dt == FMT_F32) {
        blas_xwt(w, ld, rows, cols, x, n, out, ldo, beta);
        return;
    }
    kern_xq xq;
    wm_job j = job_for(dt, 0, w, ld, rows, cols, x, n, cols, out, ldo, beta, scratch, &xq);
    run_split(&j);
}

void wm_gemm_aw(fmt_dtype dt, const void *w, int64_t ld, int64_t rows, int64_t cols,
                const float *a, int64_t lda, int64_t n, float *y, float *scratch)
{
    if (rows <= 0 || n <= 0)
        return;
    if (dt == FMT_F32) {
        blas_aw(w, ld, rows, cols, a, lda, n, y);
        return;
    }
    kern_xq xq;
    wm_job j = job_for(dt, 1, w, ld, rows, cols, a, n, lda, y, cols, 1.0f, scratch, &xq);
    if (j.kernel || n > 1) {
        run_split(&j);
        return;
    }
    /* one vector without a kernel: the rows with a non-zero coefficient, WM_BLOCK at a time */
    float ac[WM_BLOCK];
    int64_t nb = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (a[r] != 0.0f) {
            wm_row(dt, w, ld, r, cols, scratch + nb * cols);
            ac[nb++] = a[r];
        }
        if (nb == WM_BLOCK || (r == rows - 1 && nb > 0)) {
            blas_aw(scratch, cols, nb, cols, ac, 1, 1, y);
            nb = 0;
        }
    }
}

/* ---- the fused FFN ------------------------------------------------------------------------- */

/* Rows [r, r + n) of f's matrix at row stride ldb: out = W x (the up or gate
 * rows at byte offset off), through f's kernels. */
static void ffn_dots(const wm_ffn_part *f, size_t off, int64_t r, int64_t n, float *out)
{
    const unsigned char *w = f->w + (size_t)r * f->ldb + off;
    if (f->dt == FMT_F16)
        f->k->xwt_f16(w, f->ldb, n, f->d, f->x, out, 0.0f);
    else if (f->dt == FMT_Q8_0)
        f->k->xwt_q8(w, f->ldb, n, f->d / FMT_QK, f->xq, out, 0.0f);
    else
        f->k->xwt_q4(w, f->ldb, n, f->d / FMT_QK, f->xq, out, 0.0f);
}

/* One thread's part of wm_ffn: group by group, the up and gate dots, the
 * activation terms, the down columns (group size: see WM_FFN_GROUP). */
static void ffn_run(const wm_ffn_part *f)
{
    for (int64_t r = 0; r < f->nb; r += WM_FFN_GROUP) {
        int64_t n = f->nb - r < WM_FFN_GROUP ? f->nb - r : WM_FFN_GROUP;
        ffn_dots(f, 0, r, n, f->pre + r);
        if (f->as.gated)
            ffn_dots(f, f->gate, r, n, f->gpre + r);
        for (int64_t j = r; j < r + n; j++) {
            if (f->b_up)
                f->pre[j] += f->b_up[j];
            if (f->as.gated && f->b_gate)
                f->gpre[j] += f->b_gate[j];
            f->act[j] = act_term(f->as, f->as.gated ? f->gpre[j] : 0.0f, f->pre[j]);
        }
        const unsigned char *down = f->w + (size_t)r * f->ldb + f->down;
        if (f->dt == FMT_F16)
            f->k->aw_f16(down, f->ldb, n, f->d, f->act + r, f->y);
        else if (f->dt == FMT_Q8_0)
            f->k->aw_q8(down, f->ldb, n, f->d / FMT_QK, f->act + r, f->y);
        else
            f->k->aw_q4(down, f->ldb, n, f->d / FMT_QK, f->act + r, f->y);
    }
}

/* The second half of f from row `half` on, into its own y (zeroed). */
static wm_ffn_part ffn_tail(const wm_ffn_part *f, int64_t half, float *y)
{
    wm_ffn_part b = *f;
    b.w = f->w + (size_t)half * f->ldb;
    b.nb = f->nb - half;
    b.b_up = f->b_up ? f->b_up + half : NULL;
    b.b_gate = f->b_gate ? f->b_gate + half : NULL;
    b.pre = f->pre + half;
    b.gpre = f->gpre ? f->gpre + half : NULL;
    b.act = f->act + half;
    b.y = y;
    memset(y, 0, sizeof(float) * (size_t)f->d);
    return b;
}

int wm_ffn(fmt_dtype dt, const void *w, int64_t ldw, int64_t nb, int64_t d, act_spec as, const float *b_up,
           const float *b_gate, const float *x, float *pre, float *gpre, float *act, float *y, float *scratch)
{
    const kern_set *k = kernels();
    if (dt == FMT_F16 ? k->xwt_f16 == NULL || k->aw_f16 == NULL : !fmt_is_quant(dt))
        return -ENOTSUP;
    if (nb <= 0)
        return 0;
    blas_single();
    size_t rb = (size_t)fmt_bytes(dt, (uint64_t)d);
    wm_ffn_part f = {k, dt, w, (size_t)fmt_bytes(dt, (uint64_t)ldw), rb, (as.gated ? 2 : 1) * rb, nb, d, as,
                     b_up, b_gate, x, NULL, pre, as.gated ? gpre : NULL, act, y};
    kern_xq xq;
    if (fmt_is_quant(dt)) {                  /* x's blocks take less than d floats of scratch */
        xq = quantize_x(x, d, scratch);
        f.xq = &xq;
    }
    if (nb * d * (as.gated ? 3 : 2) < WM_SPLIT_MIN) {
        ffn_run(&f);
        return 0;
    }
    /* two halves, the second into its own y (after x's blocks in scratch),
     * on two threads or, with the helper busy, one after the other: the
     * same sums either way */
    int64_t half = nb / 2;
    float *y2 = scratch + d;
    wm_ffn_part tail = ffn_tail(&f, half, y2);
    f.nb = half;
    wm_job a = {.ffn = &f}, b = {.ffn = &tail};
    if (pool_take()) {
        pool_both(&a, &b);
    } else {
        ffn_run(&f);
        ffn_run(&tail);
    }
    for (int64_t c = 0; c < d; c++)
        y[c] += y2[c];
    return 0;
}
