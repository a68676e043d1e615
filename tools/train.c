/* train.c: building low-rank activation predictors (train.h): randomized
 * truncated SVD and data-aware (PCA) starts, Adam on a class-balanced
 * low-temperature logistic loss, exact recall thresholds and sparsity
 * quantiles by radix selection. The big products go through OpenBLAS; the
 * small dense linear algebra (QR of the sketch, eigen-decomposition of its
 * Gram matrix, Cholesky of the input covariance) is done here in double. */
#include "train.h"

#include <cblas.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows scored at once by the evaluation passes. */
#define SCORE_BATCH 512
/* Power iterations of the randomized SVD. */
#define SVD_POWER_ITERS 6

/* ---- random numbers (splitmix64: tiny, seedable, good enough) --------- */

typedef struct {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *g)
{
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1). */
static double rng_unit(rng *g)
{
    return ((double)(rng_next(g) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_gauss(rng *g)
{
    return sqrt(-2.0 * log(rng_unit(g))) * cos(6.283185307179586 * rng_unit(g));
}

/* Uniform in [0, bound). */
static uint64_t rng_below(rng *g, uint64_t bound)
{
    return (uint64_t)(rng_unit(g) * (double)bound) % bound;
}

/* ---- scoring ----------------------------------------------------------- */

/* Score X in batches of SCORE_BATCH rows and hand each batch to fn. */
typedef int (*batch_fn)(void *ctx, const float *S, int64_t row0, int64_t rows);

static int score_batches(const pred *p, const float *X, int64_t m, batch_fn fn, void *ctx,
                         ierr *err)
{
    int64_t bs = m < SCORE_BATCH ? m : SCORE_BATCH;
    float *H = malloc((size_t)(bs * p->r) * sizeof(float));
    float *S = malloc((size_t)(bs * p->n) * sizeof(float));
    int rc = 0;
    if (!H || !S)
        rc = ierr_set(err, -ENOMEM, "predictor: out of memory for a scoring batch");
    for (int64_t i0 = 0; rc == 0 && i0 < m; i0 += bs) {
        int64_t rows = m - i0 < bs ? m - i0 : bs;
        pred_score(p, X + i0 * p->d, rows, H, S);
        rc = fn(ctx, S, i0, rows);
        if (rc < 0)
            ierr_set(err, rc, "predictor: a score is not a number (diverged predictor?)");
    }
    free(H);
    free(S);
    return rc;
}

/* ---- exact order statistics by two-pass radix selection --------------- */

/* Order-preserving map of a float to uint32 (NaN excluded; -0 counts as +0). */
static uint32_t fkey(float v)
{
    uint32_t u;
    if (v == 0.0f)
        v = 0.0f;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float fkey_inv(uint32_t key)
{
    uint32_t u = (key & 0x80000000u) ? (key ^ 0x80000000u) : ~key;
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* Finds the k-th smallest (1-based) of a multiset fed twice through
 * rsel_add: pass 0 histograms the high 16 bits of the keys, pass 1 the low
 * 16 bits of those whose high half is the bin found. */
typedef struct {
    uint64_t *hist;     /* [65536] counts of the current pass; owned */
    int       pass;     /* 0 or 1 */
    uint32_t  hi;       /* high half found by pass 0 */
    uint64_t  k;        /* rank wanted among the current pass's population */
} rsel;

static int rsel_init(rsel *s, uint64_t k)
{
    s->hist = calloc(65536, sizeof(uint64_t));
    s->pass = 0;
    s->hi = 0;
    s->k = k;
    return s->hist ? 0 : -ENOMEM;
}

static inline void rsel_add(rsel *s, float v)
{
    uint32_t key = fkey(v);
    if (s->pass == 0)
        s->hist[key >> 16]++;
    else if ((key >> 16) == s->hi)
        s->hist[key & 0xffffu]++;
}

/* Close a pass: find the bin of the k-th element; after pass 1 *v is it. */
static void rsel_end_pass(rsel *s, float *v)
{
    uint32_t bin = 0;
    uint64_t below = 0;
    while (bin < 65535 && below + s->hist[bin] < s->k)
        below += s->hist[bin++];
    s->k -= below;
    memset(s->hist, 0, 65536 * sizeof(uint64_t));
    if (s->pass == 0) {
        s->hi = bin;
        s->pass = 1;
    } else {
        *v = fkey_inv((s->hi << 16) | bin);
    }
}

/* The count ceil(target·total) with a little slack against rounding of
 * target·total (0.9·100 must give 90, not 91). */
static uint64_t count_for_fraction(double target, int64_t total)
{
    if (target <= 0.0)
        return 0;
    double k = ceil(target * (double)total - 1e-9 * (double)total);
    if (k < 1.0)
        k = 1.0;
    if (k > (double)total)
        k = (double)total;
    return (uint64_t)k;
}

int pred_threshold_for_sparsity(const float *values, int64_t count, double target,
                                float *t, ierr *err)
{
    if (count < 1 || !(target <= 1.0))
        return ierr_set(err, -EINVAL, "sparsity threshold: need values and a target <= 1 (got %lld values, target %g)",
                        (long long)count, target);
    uint64_t k = count_for_fraction(target, count);
    if (k == 0) {
        *t = -FLT_MAX;
        return 0;
    }
    for (int64_t i = 0; i < count; i++)
        if (isnan(values[i]))
            return ierr_set(err, -EINVAL, "sparsity threshold: value %lld is NaN", (long long)i);
    rsel s;
    if (rsel_init(&s, k) < 0)
        return ierr_set(err, -ENOMEM, "sparsity threshold: out of memory");
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < count; i++)
            rsel_add(&s, values[i]);
        rsel_end_pass(&s, t);
    }
    free(s.hist);
    return 0;
}

/* ---- recall threshold -------------------------------------------------- */

static int64_t count_positives(const uint8_t *labels, int64_t m, int64_t n)
{
    size_t stride = pred_label_stride(n);
    int64_t pos = 0;
    for (int64_t i = 0; i < m; i++) {
        const uint8_t *row = labels + (size_t)i * stride;
        for (size_t b = 0; b < stride; b++) {
            unsigned v = row[b];
            if (b + 1 == stride && (n & 7))
                v &= (1u << (n & 7)) - 1;   /* padding bits of the last byte */
            pos += __builtin_popcount(v);
        }
    }
    return pos;
}

typedef struct {
    rsel           sel;
    const uint8_t *labels;
    int64_t        n;
} pick_ctx;

static int pick_batch(void *vctx, const float *S, int64_t row0, int64_t rows)
{
    pick_ctx *c = vctx;
    size_t stride = pred_label_stride(c->n);
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = c->labels + (size_t)(row0 + i) * stride;
        const float *s = S + i * c->n;
        for (int64_t j = 0; j < c->n; j++)
            if (pred_label_get(row, j)) {
                if (isnan(s[j]))
                    return -ERANGE;
                rsel_add(&c->sel, s[j]);
            }
    }
    return 0;
}

static int check_data(const pred *p, const float *X, const uint8_t *labels, int64_t m,
                      const char *what, ierr *err)
{
    if (!p || !X || !labels || m < 1)
        return ierr_set(err, -EINVAL, "predictor %s: need a predictor and at least one sample", what);
    return 0;
}

int pred_pick_threshold(pred *p, const float *X, const uint8_t *labels, int64_t m,
                        double target_recall, ierr *err)
{
    int rc = check_data(p, X, labels, m, "threshold", err);
    if (rc < 0)
        return rc;
    if (!(target_recall <= 1.0))
        return ierr_set(err, -EINVAL, "predictor threshold: target recall %g is above 1", target_recall);
    int64_t P = count_positives(labels, m, p->n);
    uint64_t k = count_for_fraction(target_recall, P);
    if (k == 0) {
        p->tau = FLT_MAX;
        return 0;
    }
    /* the k-th largest positive score is the (P-k+1)-th smallest */
    pick_ctx c = {.labels = labels, .n = p->n};
    if (rsel_init(&c.sel, (uint64_t)P - k + 1) < 0)
        return ierr_set(err, -ENOMEM, "predictor threshold: out of memory");
    float v = 0.0f;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        rc = score_batches(p, X, m, pick_batch, &c, err);
        if (rc == 0)
            rsel_end_pass(&c.sel, &v);
    }
    free(c.sel.hist);
    if (rc < 0)
        return rc;
    p->tau = nextafterf(v, -INFINITY);
    return 0;
}

/* ---- evaluation -------------------------------------------------------- */

typedef struct {
    const uint8_t *labels;
    int64_t        n;
    float          tau;
    int64_t        pos, pred, tp;
} eval_ctx;

static int eval_batch(void *vctx, const float *S, int64_t row0, int64_t rows)
{
    eval_ctx *c = vctx;
    size_t stride = pred_label_stride(c->n);
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = c->labels + (size_t)(row0 + i) * stride;
        const float *s = S + i * c->n;
        for (int64_t j = 0; j < c->n; j++) {
            int y = pred_label_get(row, j), hit = s[j] > c->tau;
            c->pos += y;
            c->pred += hit;
            c->tp += y & hit;
        }
    }
    return 0;
}

int pred_eval(const pred *p, const float *X, const uint8_t *labels, int64_t m,
              pred_stats *st, ierr *err)
{
    int rc = check_data(p, X, labels, m, "evaluation", err);
    if (rc < 0)
        return rc;
    eval_ctx c = {.labels = labels, .n = p->n, .tau = p->tau};
    rc = score_batches(p, X, m, eval_batch, &c, err);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    st->pairs = m * p->n;
    st->positives = c.pos;
    st->predicted = c.pred;
    st->true_pos = c.tp;
    st->recall = c.pos ? (double)c.tp / (double)c.pos : 1.0;
    st->precision = c.pred ? (double)c.tp / (double)c.pred : 1.0;
    st->predicted_frac = (double)c.pred / (double)st->pairs;
    st->true_frac = (double)c.pos / (double)st->pairs;
    return 0;
}

/* ---- small dense linear algebra (double) ------------------------------ */

/* Orthonormalize the l columns of the row-major rows×l matrix M in place:
 * modified Gram-Schmidt applied twice ("twice is enough"), in double.
 * A column that vanishes (rank deficiency) is replaced by a random vector
 * made orthogonal to the others, so the result is always orthonormal. */
static int orthonormalize(float *M, int64_t rows, int64_t l, rng *g)
{
    double *Q = malloc((size_t)(rows * l) * sizeof(double));   /* column-major */
    if (!Q)
        return -ENOMEM;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < l; j++)
            Q[j * rows + i] = M[i * l + j];
    for (int64_t j = 0; j < l; j++) {
        double *q = Q + j * rows;
        for (int tries = 0;; tries++) {
            double before = cblas_dnrm2((blasint)rows, q, 1);
            for (int rep = 0; rep < 2; rep++)
                for (int64_t k = 0; k < j; k++) {
                    double *qk = Q + k * rows;
                    double dot = cblas_ddot((blasint)rows, qk, 1, q, 1);
                    cblas_daxpy((blasint)rows, -dot, qk, 1, q, 1);
                }
            double after = cblas_dnrm2((blasint)rows, q, 1);
            if (after > 1e-10 * before && after > 0.0) {
                cblas_dscal((blasint)rows, 1.0 / after, q, 1);
                break;
            }
            if (tries == 8) {   /* cannot happen unless j >= rows */
                free(Q);
                return -EDOM;
            }
            for (int64_t i = 0; i < rows; i++)
                q[i] = rng_gauss(g);
        }
    }
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < l; j++)
            M[i * l + j] = (float)Q[j * rows + i];
    free(Q);
    return 0;
}

/* Eigen-decomposition of the symmetric l×l matrix G (row-major, destroyed)
 * by cyclic Jacobi rotations: eigenvalues into w (descending), eigenvectors
 * into the columns of V (row-major l×l). */
static void jacobi_eigen(double *G, int64_t l, double *w, double *V)
{
    for (int64_t i = 0; i < l; i++)
        for (int64_t j = 0; j < l; j++)
            V[i * l + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int64_t i = 0; i < l; i++) {
            diag += G[i * l + i] * G[i * l + i];
            for (int64_t j = i + 1; j < l; j++)
                off += G[i * l + j] * G[i * l + j];
        }
        if (off <= 1e-30 * diag || off == 0.0)
            break;
        for (int64_t p = 0; p < l; p++)
            for (int64_t q = p + 1; q < l; q++) {
                double apq = G[p * l + q];
                if (apq == 0.0)
                    continue;
                double app = G[p * l + p], aqq = G[q * l + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                /* G <- Jᵀ G J with J the rotation in the (p, q) plane */
                for (int64_t k = 0; k < l; k++) {
                    double gkp = G[k * l + p], gkq = G[k * l + q];
                    G[k * l + p] = c * gkp - s * gkq;
                    G[k * l + q] = s * gkp + c * gkq;
                }
                for (int64_t k = 0; k < l; k++) {
                    double gpk = G[p * l + k], gqk = G[q * l + k];
                    G[p * l + k] = c * gpk - s * gqk;
                    G[q * l + k] = s * gpk + c * gqk;
                }
                for (int64_t k = 0; k < l; k++) {
                    double vkp = V[k * l + p], vkq = V[k * l + q];
                    V[k * l + p] = c * vkp - s * vkq;
                    V[k * l + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int64_t i = 0; i < l; i++)
        w[i] = G[i * l + i];
    /* selection sort, descending, swapping eigenvector columns along */
    for (int64_t i = 0; i < l; i++) {
        int64_t best = i;
        for (int64_t j = i + 1; j < l; j++)
            if (w[j] > w[best])
                best = j;
        if (best == i)
            continue;
        double tw = w[i];
        w[i] = w[best];
        w[best] = tw;
        for (int64_t k = 0; k < l; k++) {
            double tv = V[k * l + i];
            V[k * l + i] = V[k * l + best];
            V[k * l + best] = tv;
        }
    }
}

/* ---- truncated SVD start ---------------------------------------------- */

/* The top-r left singular vectors of M [n×d] into U [n×r] (row-major,
 * orthonormal columns, by decreasing singular value): randomized subspace
 * iteration with a sketch of l = r + max(10, r/2) columns (at most
 * min(n, d)) and SVD_POWER_ITERS power iterations, then the eigenvectors
 * of the sketch's small Gram matrix (Bm·Bmᵀ with Bm = Qᵀ·M). */
static int top_left_singular(const float *M, int64_t n, int64_t d, int64_t r, uint64_t seed,
                             float *U, ierr *err)
{
    const int64_t mn = n < d ? n : d;
    const int64_t over = r / 2 > 10 ? r / 2 : 10;
    const int64_t l = r + over < mn ? r + over : mn;
    rng g = {seed ^ 0x5eed5eed5eedull};
    int rc = 0;

    float  *Om = malloc((size_t)(d * l) * sizeof(float));   /* [d×l] */
    float  *Y  = malloc((size_t)(n * l) * sizeof(float));   /* [n×l] range of M */
    float  *Bm = malloc((size_t)(l * d) * sizeof(float));   /* [l×d] Qᵀ·M */
    double *Bd = malloc((size_t)(l * d) * sizeof(double));
    double *Qd = malloc((size_t)(n * l) * sizeof(double));
    double *G  = malloc((size_t)(l * l) * sizeof(double));  /* Bm·Bmᵀ */
    double *V  = malloc((size_t)(l * l) * sizeof(double));
    double *w  = malloc((size_t)l * sizeof(double));
    double *Ud = malloc((size_t)(n * r) * sizeof(double));  /* Q·V_r */
    if (!Om || !Y || !Bm || !Bd || !Qd || !G || !V || !w || !Ud) {
        rc = ierr_set(err, -ENOMEM, "predictor SVD: out of memory (n %lld, d %lld, sketch %lld)",
                      (long long)n, (long long)d, (long long)l);
        goto out;
    }
    for (int64_t i = 0; i < d * l; i++)
        Om[i] = (float)rng_gauss(&g);

    /* Y = M·Ω, then subspace iteration Y <- M·orth(Mᵀ·orth(Y)) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)l, (blasint)d,
                1.0f, M, (blasint)d, Om, (blasint)l, 0.0f, Y, (blasint)l);
    rc = orthonormalize(Y, n, l, &g);
    for (int it = 0; rc == 0 && it < SVD_POWER_ITERS; it++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)d, (blasint)l, (blasint)n,
                    1.0f, M, (blasint)d, Y, (blasint)l, 0.0f, Om, (blasint)l);
        rc = orthonormalize(Om, d, l, &g);
        if (rc == 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)l, (blasint)d,
                        1.0f, M, (blasint)d, Om, (blasint)l, 0.0f, Y, (blasint)l);
            rc = orthonormalize(Y, n, l, &g);
        }
    }
    if (rc < 0) {
        rc = ierr_set(err, rc, "predictor SVD: orthonormalization failed (n %lld, d %lld, sketch %lld)",
                      (long long)n, (long long)d, (long long)l);
        goto out;
    }
    /* M ≈ Q·Bm; Bm·Bmᵀ = V·Λ·Vᵀ gives M's left singular vectors Q·V */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)l, (blasint)d, (blasint)n,
                1.0f, Y, (blasint)l, M, (blasint)d, 0.0f, Bm, (blasint)d);
    for (int64_t i = 0; i < l * d; i++)
        Bd[i] = Bm[i];
    for (int64_t i = 0; i < n * l; i++)
        Qd[i] = Y[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)l, (blasint)l, (blasint)d,
                1.0, Bd, (blasint)d, Bd, (blasint)d, 0.0, G, (blasint)l);
    jacobi_eigen(G, l, w, V);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)r, (blasint)l,
                1.0, Qd, (blasint)l, V, (blasint)l, 0.0, Ud, (blasint)r);
    for (int64_t i = 0; i < n * r; i++)
        U[i] = (float)Ud[i];
out:
    free(Om);
    free(Y);
    free(Bm);
    free(Bd);
    free(Qd);
    free(G);
    free(V);
    free(w);
    free(Ud);
    return rc;
}

/* Set p from an orthonormal basis U [n×r] of the score space: B = U,
 * A = Uᵀ·W (so B·A = U·Uᵀ·W, W projected on the basis), and
 * c = b + (W − B·A)·mu (mu [d] the inputs' mean, or NULL for 0), so the
 * scores are exact at the mean input. Then balance the factors: A_i /= √a_i,
 * B_·i *= √a_i with a_i = |A_i| (= σ_i for the plain SVD). */
static int set_from_basis(pred *p, const float *U, const float *W, const float *b,
                          const double *mu, ierr *err)
{
    const int64_t n = p->n, d = p->d, r = p->r;
    memcpy(p->B, U, (size_t)(n * r) * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)r, (blasint)d, (blasint)n,
                1.0f, U, (blasint)r, W, (blasint)d, 0.0f, p->A, (blasint)d);
    for (int64_t j = 0; j < n; j++)
        p->c[j] = b ? b[j] : 0.0f;
    if (mu) {
        /* residual (W − B·A)·mu, in double: W·mu − B·(A·mu) */
        double *Amu = calloc((size_t)r, sizeof(double));
        if (!Amu)
            return ierr_set(err, -ENOMEM, "predictor: out of memory");
        for (int64_t i = 0; i < r; i++)
            for (int64_t k = 0; k < d; k++)
                Amu[i] += (double)p->A[i * d + k] * mu[k];
        for (int64_t j = 0; j < n; j++) {
            double res = 0.0;
            for (int64_t k = 0; k < d; k++)
                res += (double)W[j * d + k] * mu[k];
            for (int64_t i = 0; i < r; i++)
                res -= (double)p->B[j * r + i] * Amu[i];
            p->c[j] += (float)res;
        }
        free(Amu);
    }
    for (int64_t i = 0; i < r; i++) {
        float a = cblas_snrm2((blasint)d, p->A + i * d, 1);
        if (a > 0.0f) {
            float f = sqrtf(a);
            cblas_sscal((blasint)d, 1.0f / f, p->A + i * d, 1);
            cblas_sscal((blasint)n, f, p->B + i, (blasint)r);
        }
    }
    return 0;
}

int pred_init_svd(pred *p, const float *W, const float *b, uint64_t seed, ierr *err)
{
    if (!p || !W)
        return ierr_set(err, -EINVAL, "predictor SVD: need a predictor and a weight matrix");
    float *U = malloc((size_t)(p->n * p->r) * sizeof(float));
    if (!U)
        return ierr_set(err, -ENOMEM, "predictor SVD: out of memory");
    int rc = top_left_singular(W, p->n, p->d, p->r, seed, U, err);
    if (rc == 0)
        rc = set_from_basis(p, U, W, b, NULL, err);
    free(U);
    return rc;
}

/* Lower Cholesky factor of the SPD d×d matrix S in place (upper part
 * zeroed); -EDOM if S is not positive definite. */
static int cholesky(double *S, int64_t d)
{
    for (int64_t j = 0; j < d; j++) {
        double s = S[j * d + j];
        for (int64_t k = 0; k < j; k++)
            s -= S[j * d + k] * S[j * d + k];
        if (!(s > 0.0))
            return -EDOM;
        s = sqrt(s);
        S[j * d + j] = s;
        for (int64_t i = j + 1; i < d; i++) {
            double t = S[i * d + j];
            for (int64_t k = 0; k < j; k++)
                t -= S[i * d + k] * S[j * d + k];
            S[i * d + j] = t / s;
        }
        for (int64_t k = j + 1; k < d; k++)
            S[j * d + k] = 0.0;
    }
    return 0;
}

int pred_init_pca(pred *p, const float *W, const float *b, const float *X, int64_t m,
                  uint64_t seed, ierr *err)
{
    if (!p || !W || !X || m < 1)
        return ierr_set(err, -EINVAL, "predictor PCA start: need a predictor, a weight matrix and samples");
    const int64_t n = p->n, d = p->d;
    int rc = 0;
    double *mu = calloc((size_t)d, sizeof(double));
    double *C = calloc((size_t)(d * d), sizeof(double));          /* covariance, then its factor L */
    double *C0 = malloc((size_t)(d * d) * sizeof(double));
    float *Cb = malloc((size_t)(d * d) * sizeof(float));          /* one batch's XᵀX, then L */
    float *M = malloc((size_t)(n * d) * sizeof(float));           /* W·L */
    float *U = malloc((size_t)(n * p->r) * sizeof(float));
    if (!mu || !C || !C0 || !Cb || !M || !U) {
        rc = ierr_set(err, -ENOMEM, "predictor PCA start: out of memory (d %lld)", (long long)d);
        goto out;
    }
    /* second moments in f32 batches, summed in double */
    for (int64_t i0 = 0; i0 < m; i0 += SCORE_BATCH) {
        int64_t rows = m - i0 < SCORE_BATCH ? m - i0 : SCORE_BATCH;
        const float *Xb = X + i0 * d;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)d, (blasint)d, (blasint)rows,
                    1.0f, Xb, (blasint)d, Xb, (blasint)d, 0.0f, Cb, (blasint)d);
        for (int64_t k = 0; k < d * d; k++)
            C[k] += Cb[k];
        for (int64_t i = 0; i < rows; i++)
            for (int64_t k = 0; k < d; k++)
                mu[k] += Xb[i * d + k];
    }
    double trace = 0.0;
    for (int64_t k = 0; k < d; k++)
        mu[k] /= (double)m;
    for (int64_t i = 0; i < d; i++)
        for (int64_t k = 0; k < d; k++)
            C[i * d + k] = C[i * d + k] / (double)m - mu[i] * mu[k];
    for (int64_t k = 0; k < d; k++)
        trace += C[k * d + k];
    if (!(trace > 0.0) || !isfinite(trace)) {
        rc = ierr_set(err, -EINVAL, "predictor PCA start: the samples do not vary (or are not finite)");
        goto out;
    }
    /* a ridge keeps the factor defined when the samples span fewer than d
       directions; it is raised until the factorization succeeds */
    memcpy(C0, C, (size_t)(d * d) * sizeof(double));
    for (double ridge = 1e-6;; ridge *= 10.0) {
        for (int64_t k = 0; k < d; k++)
            C[k * d + k] += ridge * trace / (double)d;
        if (cholesky(C, d) == 0)
            break;
        if (ridge >= 1.0) {
            rc = ierr_set(err, -EDOM, "predictor PCA start: covariance not positive definite");
            goto out;
        }
        memcpy(C, C0, (size_t)(d * d) * sizeof(double));
    }
    /* the pre-activation covariance is W·C·Wᵀ = (W·L)(W·L)ᵀ: its top
       principal directions are the left singular vectors of W·L */
    for (int64_t k = 0; k < d * d; k++)
        Cb[k] = (float)C[k];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)d, (blasint)d,
                1.0f, W, (blasint)d, Cb, (blasint)d, 0.0f, M, (blasint)d);
    rc = top_left_singular(M, n, d, p->r, seed, U, err);
    if (rc == 0)
        rc = set_from_basis(p, U, W, b, mu, err);
out:
    free(mu);
    free(C);
    free(C0);
    free(Cb);
    free(M);
    free(U);
    return rc;
}

/* ---- training ---------------------------------------------------------- */

void pred_train_defaults(pred_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 8;
    o->batch = 256;
    o->lr = 2e-3;
    o->temperature = 0.02;
    o->seed = 1;
}

/* Adam state of one parameter tensor. */
typedef struct {
    float  *x;        /* the parameters (not owned) */
    float  *g;        /* gradient [len]; owned */
    float  *m, *v;    /* moments [len]; owned */
    float  *keep;     /* copy of x at the start, restored on divergence; owned */
    int64_t len;
    double  scale;    /* step unit: RMS of x at the start (1 if zero) */
} adam_param;

static int adam_init(adam_param *a, float *x, int64_t len)
{
    a->x = x;
    a->len = len;
    a->g = calloc((size_t)len, sizeof(float));
    a->m = calloc((size_t)len, sizeof(float));
    a->v = calloc((size_t)len, sizeof(float));
    a->keep = malloc((size_t)len * sizeof(float));
    if (!a->g || !a->m || !a->v || !a->keep)
        return -ENOMEM;
    memcpy(a->keep, x, (size_t)len * sizeof(float));
    double ss = 0.0;
    for (int64_t i = 0; i < len; i++)
        ss += (double)x[i] * x[i];
    a->scale = ss > 0.0 ? sqrt(ss / (double)len) : 1.0;
    return 0;
}

static void adam_release(adam_param *a)
{
    free(a->g);
    free(a->m);
    free(a->v);
    free(a->keep);
}

/* One Adam step at step size lr·scale; t is the 1-based step count. */
static void adam_step(adam_param *a, double lr, int64_t t)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    const double c1 = 1.0 - pow(b1, (double)t), c2 = 1.0 - pow(b2, (double)t);
    const float step = (float)(lr * a->scale * sqrt(c2) / c1);
    const float eps_hat = (float)(eps * sqrt(c2));
    for (int64_t i = 0; i < a->len; i++) {
        float g = a->g[i];
        a->m[i] = b1 * a->m[i] + (1.0f - b1) * g;
        a->v[i] = b2 * a->v[i] + (1.0f - b2) * g * g;
        a->x[i] -= step * a->m[i] / (sqrtf(a->v[i]) + eps_hat);
    }
}

/* Turn the scores S [rows×n] into dLoss/dS in place and return the batch's
 * summed weighted loss. The loss of a pair is T·softplus(t/T) with t = −s
 * for an active pair and t = s otherwise: a logistic loss at temperature T,
 * in score units (it tends to the hinge max(0, t) as T → 0). */
static double logistic_grad(float *S, const uint8_t *Lb, size_t stride, int64_t rows, int64_t n,
                            float T, float wpos, float wneg, float norm)
{
    const float invT = 1.0f / T;
    double total = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const uint8_t *row = Lb + (size_t)i * stride;
        float *s = S + i * n;
        float row_loss = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            int y = pred_label_get(row, j);
            float u = (y ? -s[j] : s[j]) * invT;
            float au = fabsf(u);
            /* beyond |u| = 17, e < 5e-8 no longer changes 1 + e in f32:
               saturate, which skips the transcendentals of most pairs */
            float e = au < 17.0f ? expf(-au) : 0.0f;
            float sig = u >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);   /* σ(u) */
            float w = y ? wpos : wneg;
            row_loss += w * T * ((u > 0.0f ? u : 0.0f) + (e > 0.0f ? log1pf(e) : 0.0f));
            s[j] = (y ? -sig : sig) * w * norm;
        }
        total += row_loss;
    }
    return total;
}

/* Fisher-Yates shuffle of perm [m]. */
static void shuffle(int64_t *perm, int64_t m, rng *g)
{
    for (int64_t i = m - 1; i > 0; i--) {
        int64_t k = (int64_t)rng_below(g, (uint64_t)i + 1), tmp = perm[i];
        perm[i] = perm[k];
        perm[k] = tmp;
    }
}

/* The gradients of a batch of `rows` from G = dL/dS [rows×n] (in S), the
 * batch's H [rows×r] and inputs Xb [rows×d]: gB = Gᵀ·H, gc = column sums
 * of G, dH = G·B (scratch [rows×r]), gA = dHᵀ·Xb, into prm[1], prm[2],
 * prm[0] (A, B, c). */
static void backward(const pred *p, const float *S, const float *H, const float *Xb, int64_t rows, float *dH,
                     adam_param prm[3])
{
    const int64_t d = p->d, n = p->n, r = p->r;
    const blasint R = (blasint)rows;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)n, (blasint)r, R,
                1.0f, S, (blasint)n, H, (blasint)r, 0.0f, prm[1].g, (blasint)r);
    memset(prm[2].g, 0, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < rows; i++)
        cblas_saxpy((blasint)n, 1.0f, S + i * n, 1, prm[2].g, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, (blasint)r, (blasint)n,
                1.0f, S, (blasint)n, p->B, (blasint)r, 0.0f, dH, (blasint)r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)r, (blasint)d, R,
                1.0f, dH, (blasint)r, Xb, (blasint)d, 0.0f, prm[0].g, (blasint)d);
}

int pred_train(pred *p, const float *X, const uint8_t *labels, int64_t m,
               const pred_train_opts *o, double *loss, ierr *err)
{
    int rc = check_data(p, X, labels, m, "training", err);
    if (rc < 0)
        return rc;
    if (!o || o->epochs < 1 || o->batch < 1 || !(o->lr > 0.0) || !(o->temperature > 0.0))
        return ierr_set(err, -EINVAL, "predictor training: need epochs >= 1, batch >= 1, lr > 0 and temperature > 0");
    const int64_t d = p->d, n = p->n, r = p->r;
    const int64_t bs = o->batch < m ? o->batch : m;
    const size_t stride = pred_label_stride(n);
    const int64_t P = count_positives(labels, m, n);
    const double pairs = (double)m * (double)n;
    const float wpos = (float)(o->pos_weight > 0.0 ? o->pos_weight : P > 0 ? pairs / (2.0 * (double)P) : 1.0);
    const float wneg = (float)(o->neg_weight > 0.0 ? o->neg_weight
                               : P < m * n ? pairs / (2.0 * (pairs - (double)P)) : 1.0);
    const int64_t steps_per_epoch = (m + bs - 1) / bs;
    const int64_t steps = steps_per_epoch * o->epochs;
    rng g = {o->seed};

    adam_param prm[3];
    memset(prm, 0, sizeof prm);
    int64_t *perm = malloc((size_t)m * sizeof(int64_t));
    float *Xb = malloc((size_t)(bs * d) * sizeof(float));
    uint8_t *Lb = malloc((size_t)bs * stride);
    float *H = malloc((size_t)(bs * r) * sizeof(float));
    float *dH = malloc((size_t)(bs * r) * sizeof(float));
    float *S = malloc((size_t)(bs * n) * sizeof(float));
    if (!perm || !Xb || !Lb || !H || !dH || !S ||
        adam_init(&prm[0], p->A, r * d) < 0 || adam_init(&prm[1], p->B, n * r) < 0 ||
        adam_init(&prm[2], p->c, n) < 0) {
        rc = ierr_set(err, -ENOMEM, "predictor training: out of memory (batch %lld, n %lld)",
                      (long long)bs, (long long)n);
        goto out;
    }
    /* the scores' spread on the first batch: the unit of c's steps and of
       the temperature */
    float T;
    {
        pred_score(p, X, bs, H, S);
        double ss = 0.0;
        for (int64_t i = 0; i < bs * n; i++)
            ss += (double)S[i] * S[i];
        double spread = ss > 0.0 ? sqrt(ss / (double)(bs * n)) : 1.0;
        prm[2].scale = spread;
        T = (float)(o->temperature * spread);
    }
    for (int64_t i = 0; i < m; i++)
        perm[i] = i;

    int64_t t = 0;
    double epoch_loss = 0.0;
    for (int ep = 1; ep <= o->epochs; ep++) {
        shuffle(perm, m, &g);
        double sum = 0.0;
        for (int64_t i0 = 0; i0 < m; i0 += bs) {
            const int64_t rows = m - i0 < bs ? m - i0 : bs;
            for (int64_t i = 0; i < rows; i++) {
                memcpy(Xb + i * d, X + perm[i0 + i] * d, (size_t)d * sizeof(float));
                memcpy(Lb + (size_t)i * stride, labels + (size_t)perm[i0 + i] * stride, stride);
            }
            /* forward: H = Xb·Aᵀ, S = H·Bᵀ + c */
            pred_score(p, Xb, rows, H, S);
            /* S becomes G = dL/dS */
            sum += logistic_grad(S, Lb, stride, rows, n, T, wpos, wneg, 1.0f / (float)((double)rows * n));
            backward(p, S, H, Xb, rows, dH, prm);
            /* cosine decay from lr to lr/20 */
            t++;
            double frac = steps > 1 ? (double)(t - 1) / (double)(steps - 1) : 1.0;
            double lr = o->lr * (0.05 + 0.95 * 0.5 * (1.0 + cos(3.141592653589793 * frac)));
            for (int k = 0; k < 3; k++)
                adam_step(&prm[k], lr, t);
        }
        epoch_loss = sum / pairs;
        if (!isfinite(epoch_loss)) {
            for (int k = 0; k < 3; k++)
                memcpy(prm[k].x, prm[k].keep, (size_t)prm[k].len * sizeof(float));
            rc = ierr_set(err, -ERANGE, "predictor training: loss is not finite at epoch %d (lr %g too large?)",
                          ep, o->lr);
            goto out;
        }
        if (o->progress && o->progress(o->ctx, ep, o->epochs, epoch_loss))
            break;
    }
    if (loss)
        *loss = epoch_loss;
out:
    for (int k = 0; k < 3; k++)
        adam_release(&prm[k]);
    free(perm);
    free(Xb);
    free(Lb);
    free(H);
    free(dH);
    free(S);
    return rc;
}

/* ---- cost -------------------------------------------------------------- */

pred_costs pred_cost(int64_t d, int64_t n, int64_t r, int mats, int ffn_dtype_bytes)
{
    pred_costs c;
    c.pred_flops = 2.0 * (double)r * (double)d + 2.0 * (double)n * (double)r;
    c.pred_bytes = ((double)r * (double)d + (double)n * (double)r + (double)n) * 4.0;
    c.ffn_flops = (double)mats * 2.0 * (double)d * (double)n;
    c.ffn_bytes = (double)mats * (double)d * (double)n * (double)ffn_dtype_bytes;
    return c;
}
