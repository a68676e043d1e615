/* weight_matrix.c: f32/f16/bf16 weight matrix products for the client (weight_matrix.h):
 * OpenBLAS for f32, a fused AVX2+FMA+F16C kernel for one f16 vector (its
 * rows split with one helper thread on a multi-core machine), and block
 * conversion + OpenBLAS for everything else. */
#include "weight_matrix.h"

#include <cblas.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define WM_X86 1
#endif

int64_t wm_scratch_floats(int64_t cols)
{
    return (int64_t)WM_BLOCK * cols;
}

void wm_row(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t cols, float *dst)
{
    fmt_to_f32(dt, wm_at(dt, w, ld, r, 0), dst, (size_t)cols);
}

/* Rows [r0, r0+nb) of W as f32 into scratch [nb][cols]. */
static void convert_block(fmt_dtype dt, const void *w, int64_t ld, int64_t r0, int64_t nb, int64_t cols,
                          float *scratch)
{
    for (int64_t r = 0; r < nb; r++)
        wm_row(dt, w, ld, r0 + r, cols, scratch + r * cols);
}

/* ---- the fused f16 kernel (x86-64) ---------------------------------------- */

#ifdef WM_X86
static int have_fused;
static pthread_once_t fused_once = PTHREAD_ONCE_INIT;

static void fused_probe(void)
{
    unsigned a, b, c, d;
    __builtin_cpu_init();
    have_fused = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                 __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static int fused_ok(fmt_dtype dt)
{
    if (dt != FMT_F16)
        return 0;
    pthread_once(&fused_once, fused_probe);
    return have_fused;
}

__attribute__((target("avx2,fma,f16c")))
static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* out[r] = beta*out[r] + W[r] . x */
__attribute__((target("avx2,fma,f16c")))
static void fused_xwt(const uint16_t *w, int64_t ld, int64_t rows, int64_t cols, const float *x, float *out,
                      float beta)
{
    int64_t c32 = cols & ~(int64_t)31, c8 = cols & ~(int64_t)7;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *wr = w + r * ld;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        int64_t c = 0;
        for (; c < c32; c += 32) {
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c))),
                                 _mm256_loadu_ps(x + c), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c + 8))),
                                 _mm256_loadu_ps(x + c + 8), a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c + 16))),
                                 _mm256_loadu_ps(x + c + 16), a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c + 24))),
                                 _mm256_loadu_ps(x + c + 24), a3);
        }
        for (; c < c8; c += 8)
            a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c))),
                                 _mm256_loadu_ps(x + c), a0);
        float s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; c < cols; c++)
            s += fmt_f16_to_f32(wr[c]) * x[c];
        out[r] = beta != 0.0f ? out[r] + s : s;
    }
}

/* y[c] += sum_r a[r] * W[r][c], skipping a[r] == 0 */
__attribute__((target("avx2,fma,f16c")))
static void fused_aw(const uint16_t *w, int64_t ld, int64_t rows, int64_t cols, const float *a, float *y)
{
    int64_t c8 = cols & ~(int64_t)7;
    for (int64_t r = 0; r < rows; r++) {
        float ar = a[r];
        if (ar == 0.0f)
            continue;
        const uint16_t *wr = w + r * ld;
        __m256 av = _mm256_set1_ps(ar);
        int64_t c = 0;
        for (; c < c8; c += 8)
            _mm256_storeu_ps(y + c, _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + c))),
                                                    av, _mm256_loadu_ps(y + c)));
        for (; c < cols; c++)
            y[c] += ar * fmt_f16_to_f32(wr[c]);
    }
}

/* ---- a second core for the fused kernels ----------------------------------- */

/* One helper thread runs the second half of a large fused product while
 * the caller runs the first. Created on first use, lives until exit.
 * `busy` makes concurrent callers fall back to one thread. */
#define WM_SPLIT_MIN ((int64_t)1 << 20)   /* elements below which one thread does it all */

typedef struct {
    int          aw;                 /* 0: fused_xwt, 1: fused_aw */
    const uint16_t *w;
    int64_t      ld, rows, cols;
    const float *x;                  /* xwt: x; aw: a */
    float       *out;                /* xwt: out; aw: y (private copy for the helper) */
    float        beta;
} wm_job;

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

static void run_job(const wm_job *j)
{
    if (j->aw)
        fused_aw(j->w, j->ld, j->rows, j->cols, j->x, j->out);
    else
        fused_xwt(j->w, j->ld, j->rows, j->cols, j->x, j->out, j->beta);
}

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

/* Run job j split in two by rows (xwt) or columns (aw): the helper takes
 * the second part. Returns 0 if it did not split (caller runs it alone). */
static int split_run(const wm_job *j)
{
    if (j->rows * j->cols < WM_SPLIT_MIN)
        return 0;
    pthread_once(&pool_once, pool_start);
    if (!P.ok || pthread_mutex_trylock(&P.busy) != 0)
        return 0;
    wm_job a = *j, b = *j;
    if (!j->aw) {                    /* rows: out[r] are independent */
        a.rows = j->rows / 2;
        b.rows = j->rows - a.rows;
        b.w = j->w + a.rows * j->ld;
        b.out = j->out + a.rows;
    } else {                         /* columns: y[c] are independent */
        a.cols = (j->cols / 2) & ~(int64_t)7;
        b.cols = j->cols - a.cols;
        b.w = j->w + a.cols;
        b.out = j->out + a.cols;
    }
    pthread_mutex_lock(&P.mu);
    P.job = b;
    uint64_t g = ++P.gen;
    pthread_cond_signal(&P.go);
    pthread_mutex_unlock(&P.mu);
    run_job(&a);
    pthread_mutex_lock(&P.mu);
    while (P.done != g)
        pthread_cond_wait(&P.fin, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.busy);
    return 1;
}
#else
static int fused_ok(fmt_dtype dt)
{
    (void)dt;
    return 0;
}
#endif

/* ---- the products ---------------------------------------------------------- */

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

/* One f16 vector on x86-64 with F16C: the fused kernel (split over two
 * cores when large). 0 if it does not apply. */
static int fused(fmt_dtype dt, int64_t n, int aw, const void *w, int64_t ld, int64_t rows, int64_t cols,
                 const float *x, float *out, float beta)
{
#ifdef WM_X86
    if (n == 1 && fused_ok(dt)) {
        wm_job j = {aw, w, ld, rows, cols, x, out, beta};
        if (!split_run(&j))
            run_job(&j);
        return 1;
    }
#else
    (void)dt, (void)n, (void)aw, (void)w, (void)ld, (void)rows, (void)cols, (void)x, (void)out, (void)beta;
#endif
    return 0;
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
    if (fused(dt, n, 0, w, ld, rows, cols, x, out, beta))
        return;
    for (int64_t r0 = 0; r0 < rows; r0 += WM_BLOCK) {
        int64_t nb = rows - r0 < WM_BLOCK ? rows - r0 : WM_BLOCK;
        convert_block(dt, w, ld, r0, nb, cols, scratch);
        blas_xwt(scratch, cols, nb, cols, x, n, out + r0, ldo, beta);
    }
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
    if (fused(dt, n, 1, w, ld, rows, cols, a, y, 1.0f))
        return;
    for (int64_t r0 = 0; r0 < rows; r0 += WM_BLOCK) {
        int64_t nb = rows - r0 < WM_BLOCK ? rows - r0 : WM_BLOCK;
        convert_block(dt, w, ld, r0, nb, cols, scratch);
        blas_aw(scratch, cols, nb, cols, a + r0, lda, n, y);
    }
}
