/* test_train.c: cmocka tests of the predictor's training (tools/train.h):
 * truncated SVD (planted rank, optimality against an independent
 * reference SVD), a planted low-rank classification problem, recall
 * thresholds on hand-made scores, sparsity quantiles and the cost figures. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "train.h"

/* ---- helpers ----------------------------------------------------------- */

static uint64_t trng_state;

static double trng_unit(void)
{
    trng_state ^= trng_state << 13;
    trng_state ^= trng_state >> 7;
    trng_state ^= trng_state << 17;
    return ((double)(trng_state >> 11) + 0.5) / 9007199254740992.0;
}

static double trng_gauss(void)
{
    return sqrt(-2.0 * log(trng_unit())) * cos(6.283185307179586 * trng_unit());
}

static void fill_gauss(float *x, int64_t len, double scale)
{
    for (int64_t i = 0; i < len; i++)
        x[i] = (float)(scale * trng_gauss());
}

/* C [a×c] = A [a×b] · B [b×c], in double, naive. */
static void matmul(const float *A, const float *B, double *C, int64_t a, int64_t b, int64_t c)
{
    for (int64_t i = 0; i < a; i++)
        for (int64_t k = 0; k < c; k++) {
            double s = 0.0;
            for (int64_t j = 0; j < b; j++)
                s += (double)A[i * b + j] * B[j * c + k];
            C[i * c + k] = s;
        }
}

/* ||W - B·A||_F² and ||W||_F² for a predictor's factors. */
static void approx_error(const pred *p, const float *W, double *err2, double *norm2)
{
    double *BA = malloc((size_t)(p->n * p->d) * sizeof(double));
    assert_non_null(BA);
    matmul(p->B, p->A, BA, p->n, p->r, p->d);
    *err2 = *norm2 = 0.0;
    for (int64_t i = 0; i < p->n * p->d; i++) {
        double e = W[i] - BA[i];
        *err2 += e * e;
        *norm2 += (double)W[i] * W[i];
    }
    free(BA);
}

/* Reference singular values of the rows×cols matrix W, descending: one-sided
 * Jacobi (Hestenes) on the columns, in double; independent of the library's
 * randomized method and Gram-matrix eigen-solver. */
static void reference_singular_values(const float *W, int64_t rows, int64_t cols, double *sv)
{
    double *U = malloc((size_t)(rows * cols) * sizeof(double));   /* column-major */
    assert_non_null(U);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            U[j * rows + i] = W[i * cols + j];
    for (int sweep = 0; sweep < 60; sweep++) {
        double worst = 0.0;
        for (int64_t p = 0; p < cols; p++)
            for (int64_t q = p + 1; q < cols; q++) {
                double *up = U + p * rows, *uq = U + q * rows, a = 0, b = 0, g = 0;
                for (int64_t i = 0; i < rows; i++) {
                    a += up[i] * up[i];
                    b += uq[i] * uq[i];
                    g += up[i] * uq[i];
                }
                if (g == 0.0)
                    continue;
                double rel = fabs(g) / sqrt(a * b);
                if (rel > worst)
                    worst = rel;
                double zeta = (b - a) / (2.0 * g);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                for (int64_t i = 0; i < rows; i++) {
                    double x = up[i], y = uq[i];
                    up[i] = c * x - s * y;
                    uq[i] = s * x + c * y;
                }
            }
        if (worst < 1e-15)
            break;
    }
    for (int64_t j = 0; j < cols; j++) {
        double s = 0.0;
        for (int64_t i = 0; i < rows; i++)
            s += U[j * rows + i] * U[j * rows + i];
        sv[j] = sqrt(s);
    }
    for (int64_t i = 0; i < cols; i++)   /* sort descending */
        for (int64_t j = i + 1; j < cols; j++)
            if (sv[j] > sv[i]) {
                double t = sv[i];
                sv[i] = sv[j];
                sv[j] = t;
            }
    free(U);
}

/* Check that the SVD start of W at rank r is within `slack` of the optimal
 * truncation error, that its factors are orthogonal and balanced, and that
 * its singular values are within sv_tol·σ_1 of the reference ones. */
static void check_svd_optimal(const float *W, int64_t n, int64_t d, int64_t r, double slack,
                              double sv_tol)
{
    int64_t mn = n < d ? n : d;
    double *sv = malloc((size_t)mn * sizeof(double));
    assert_non_null(sv);
    if (n >= d) {
        reference_singular_values(W, n, d, sv);
    } else {                        /* work on Wᵀ so that rows >= cols */
        float *Wt = malloc((size_t)(n * d) * sizeof(float));
        assert_non_null(Wt);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d; j++)
                Wt[j * n + i] = W[i * d + j];
        reference_singular_values(Wt, d, n, sv);
        free(Wt);
    }
    double opt = 0.0;
    for (int64_t i = r; i < mn; i++)
        opt += sv[i] * sv[i];

    pred *p = NULL;
    assert_int_equal(pred_new(d, n, r, &p, NULL), 0);
    assert_int_equal(pred_init_svd(p, W, NULL, 7, NULL), 0);
    double err2, norm2;
    approx_error(p, W, &err2, &norm2);
    assert_true(err2 >= opt * (1.0 - 1e-4) - 1e-6 * norm2);   /* cannot beat the optimum */
    assert_true(err2 <= opt * slack + 1e-6 * norm2);

    /* B = U·√Σ and A = √Σ·Vᵀ: BᵀB and A·Aᵀ are both diag(σ_1..σ_r) */
    for (int64_t i = 0; i < r; i++)
        for (int64_t k = 0; k < r; k++) {
            double bb = 0.0, aa = 0.0;
            for (int64_t j = 0; j < n; j++)
                bb += (double)p->B[j * r + i] * p->B[j * r + k];
            for (int64_t j = 0; j < d; j++)
                aa += (double)p->A[i * d + j] * p->A[k * d + j];
            if (i == k) {
                assert_true(fabs(bb - sv[i]) <= sv_tol * sv[0]);
                assert_true(fabs(aa - bb) <= 1e-5 * sv[0]);
            } else {
                assert_true(fabs(bb) <= 1e-5 * sv[0]);
                assert_true(fabs(aa) <= 1e-5 * sv[0]);
            }
        }
    pred_free(p);
    free(sv);
}

/* ---- SVD --------------------------------------------------------------- */

static void test_svd_planted_rank(void **state)
{
    (void)state;
    const int64_t shapes[][3] = {{96, 64, 8}, {1024, 256, 64}, {40, 172, 12}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t n = shapes[s][0], d = shapes[s][1], r = shapes[s][2];
        trng_state = 0x1234567u + s;
        float *U = malloc((size_t)(n * r) * sizeof(float));
        float *V = malloc((size_t)(r * d) * sizeof(float));
        float *W = malloc((size_t)(n * d) * sizeof(float));
        double *Wd = malloc((size_t)(n * d) * sizeof(double));
        float *b = malloc((size_t)n * sizeof(float));
        assert_true(U && V && W && Wd && b);
        fill_gauss(U, n * r, 1.0);
        fill_gauss(V, r * d, 1.0);
        fill_gauss(b, n, 1.0);
        matmul(U, V, Wd, n, r, d);
        for (int64_t i = 0; i < n * d; i++)
            W[i] = (float)Wd[i];

        pred *p = NULL;
        assert_int_equal(pred_new(d, n, r, &p, NULL), 0);
        assert_int_equal(pred_init_svd(p, W, b, 42, NULL), 0);
        double err2, norm2;
        approx_error(p, W, &err2, &norm2);
        assert_true(sqrt(err2 / norm2) < 1e-4);
        assert_memory_equal(p->c, b, (size_t)n * sizeof(float));

        /* deterministic: the same seed gives the same factors */
        pred *q = NULL;
        assert_int_equal(pred_new(d, n, r, &q, NULL), 0);
        assert_int_equal(pred_init_svd(q, W, b, 42, NULL), 0);
        assert_memory_equal(p->A, q->A, (size_t)(r * d) * sizeof(float));
        assert_memory_equal(p->B, q->B, (size_t)(n * r) * sizeof(float));
        pred_free(q);
        pred_free(p);
        free(U);
        free(V);
        free(W);
        free(Wd);
        free(b);
    }
}

static void test_svd_optimal_truncation(void **state)
{
    (void)state;
    /* tiny full-rank matrices: the sketch covers everything, so exact */
    trng_state = 99;
    float W1[20 * 12], W2[9 * 15];
    fill_gauss(W1, 20 * 12, 1.0);
    fill_gauss(W2, 9 * 15, 1.0);
    check_svd_optimal(W1, 20, 12, 4, 1.0 + 1e-4, 1e-5);
    check_svd_optimal(W2, 9, 15, 3, 1.0 + 1e-4, 1e-5);

    /* a larger matrix with a decaying spectrum, sketched: W = U·diag(0.8^i)·V */
    const int64_t n = 200, d = 120, r = 10;
    float *U = malloc((size_t)(n * d) * sizeof(float));
    float *V = malloc((size_t)(d * d) * sizeof(float));
    float *W = malloc((size_t)(n * d) * sizeof(float));
    double *Wd = malloc((size_t)(n * d) * sizeof(double));
    assert_true(U && V && W && Wd);
    fill_gauss(U, n * d, 1.0);
    fill_gauss(V, d * d, 1.0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < d; k++)
            U[i * d + k] *= (float)pow(0.8, (double)k);
    matmul(U, V, Wd, n, d, d);
    for (int64_t i = 0; i < n * d; i++)
        W[i] = (float)Wd[i];
    check_svd_optimal(W, n, d, r, 1.01, 1e-2);
    /* a flat spectrum (pure noise) is the hard case for sketching */
    fill_gauss(W, n * d, 1.0);
    check_svd_optimal(W, n, d, r, 1.05, 5e-2);
    free(U);
    free(V);
    free(W);
    free(Wd);
}

/* RMS of (B·A·x + c) − (W·x + b) over the samples, relative to the RMS of
 * W·x + b. */
static double score_error(const pred *p, const float *W, const float *b, const float *X, int64_t m)
{
    double *Z = malloc((size_t)(m * p->n) * sizeof(double));
    float *Wt = malloc((size_t)(p->n * p->d) * sizeof(float));
    float *H = malloc((size_t)(m * p->r) * sizeof(float));
    float *S = malloc((size_t)(m * p->n) * sizeof(float));
    assert_true(Z && Wt && H && S);
    for (int64_t j = 0; j < p->n; j++)
        for (int64_t k = 0; k < p->d; k++)
            Wt[k * p->n + j] = W[j * p->d + k];
    matmul(X, Wt, Z, m, p->d, p->n);
    pred_score(p, X, m, H, S);
    double e2 = 0.0, z2 = 0.0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < p->n; j++) {
            double z = Z[i * p->n + j] + b[j];
            e2 += (S[i * p->n + j] - z) * (S[i * p->n + j] - z);
            z2 += z * z;
        }
    free(Z);
    free(Wt);
    free(H);
    free(S);
    return sqrt(e2 / z2);
}

static void test_pca_start(void **state)
{
    (void)state;
    const int64_t n = 96, d = 48, r = 6, m = 3000;
    trng_state = 31337;
    float *W = malloc((size_t)(n * d) * sizeof(float));
    float *b = malloc((size_t)n * sizeof(float));
    float *V = malloc((size_t)(r * d) * sizeof(float));
    float *T = malloc((size_t)(m * r) * sizeof(float));
    float *X = malloc((size_t)(m * d) * sizeof(float));
    double *Xd = malloc((size_t)(m * d) * sizeof(double));
    float mu[48];
    assert_true(W && b && V && T && X && Xd);
    fill_gauss(W, n * d, 1.0);
    fill_gauss(b, n, 1.0);

    /* inputs on an r-dimensional affine subspace (x = mu + t·V): the
       pre-activations are exactly rank r plus a constant, so the data-aware
       start reproduces them, while the plain SVD of a full-rank W cannot */
    fill_gauss(V, r * d, 1.0);
    fill_gauss(T, m * r, 1.0);
    fill_gauss(mu, d, 2.0);
    matmul(T, V, Xd, m, r, d);
    for (int64_t i = 0; i < m; i++)
        for (int64_t k = 0; k < d; k++)
            X[i * d + k] = (float)Xd[i * d + k] + mu[k];
    pred *p = NULL, *q = NULL;
    assert_int_equal(pred_new(d, n, r, &p, NULL), 0);
    assert_int_equal(pred_new(d, n, r, &q, NULL), 0);
    ierr e = IERR_INIT;
    int rc = pred_init_pca(p, W, b, X, m, 9, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(pred_init_svd(q, W, b, 9, NULL), 0);
    double ep = score_error(p, W, b, X, m), es = score_error(q, W, b, X, m);
    print_message("inputs of rank %lld: relative score error, data-aware start %.2e, plain SVD %.3f\n",
                  (long long)r, ep, es);
    assert_true(ep < 1e-2);
    assert_true(es > 0.3);

    /* isotropic zero-mean inputs: both starts approximate W about equally */
    fill_gauss(X, m * d, 1.0);
    assert_int_equal(pred_init_pca(p, W, b, X, m, 9, NULL), 0);
    ep = score_error(p, W, b, X, m);
    es = score_error(q, W, b, X, m);
    assert_true(ep <= es * 1.02);
    assert_true(ep >= es * 0.9);

    /* samples that do not vary */
    for (int64_t i = 0; i < m * d; i++)
        X[i] = 1.0f;
    assert_int_equal(pred_init_pca(p, W, b, X, m, 9, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "vary"));
    pred_free(p);
    pred_free(q);
    free(W);
    free(b);
    free(V);
    free(T);
    free(X);
    free(Xd);
}

/* ---- planted low-rank classification ----------------------------------- */

typedef struct {
    int    calls;
    double first, last;
} progress_log;

static int log_progress(void *ctx, int epoch, int epochs, double loss)
{
    progress_log *l = ctx;
    assert_int_equal(epoch, l->calls + 1);
    assert_true(epoch <= epochs);
    assert_true(isfinite(loss) && loss > 0.0);
    if (l->calls == 0)
        l->first = loss;
    l->last = loss;
    l->calls++;
    return 0;
}

/* Samples and labels of the planted problem: active iff W·x + c > 0. */
static void planted_data(const float *W, const float *c, int64_t d, int64_t n, int64_t m,
                         float *X, uint8_t *L)
{
    size_t stride = pred_label_stride(n);
    double *Z = malloc((size_t)(m * n) * sizeof(double));
    float *Wt = malloc((size_t)(n * d) * sizeof(float));
    assert_true(Z && Wt);
    fill_gauss(X, m * d, 1.0);
    for (int64_t j = 0; j < n; j++)
        for (int64_t k = 0; k < d; k++)
            Wt[k * n + j] = W[j * d + k];
    matmul(X, Wt, Z, m, d, n);
    memset(L, 0, (size_t)m * stride);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            pred_label_set(L + (size_t)i * stride, j, Z[i * n + j] + c[j] > 0.0);
    free(Z);
    free(Wt);
}

static void test_train_planted_low_rank(void **state)
{
    (void)state;
    const int64_t d = 32, n = 128, r = 8, m = 4000, mt = 2000;
    const size_t stride = pred_label_stride(n);
    trng_state = 2024;
    float *U = malloc((size_t)(n * r) * sizeof(float));
    float *V = malloc((size_t)(r * d) * sizeof(float));
    float *W = malloc((size_t)(n * d) * sizeof(float));
    float *Wn = malloc((size_t)(n * d) * sizeof(float));
    double *Wd = malloc((size_t)(n * d) * sizeof(double));
    float *c = malloc((size_t)n * sizeof(float));
    float *X = malloc((size_t)(m * d) * sizeof(float));
    float *Xt = malloc((size_t)(mt * d) * sizeof(float));
    uint8_t *L = malloc((size_t)m * stride);
    uint8_t *Lt = malloc((size_t)mt * stride);
    assert_true(U && V && W && Wn && Wd && c && X && Xt && L && Lt);
    fill_gauss(U, n * r, 1.0);
    fill_gauss(V, r * d, 1.0 / sqrt((double)d));
    matmul(U, V, Wd, n, r, d);
    for (int64_t i = 0; i < n * d; i++)
        W[i] = (float)Wd[i];
    /* biases that leave most neurons inactive (~15% active), like a ReLU FFN */
    for (int64_t j = 0; j < n; j++)
        c[j] = (float)(-2.0 + 0.5 * trng_gauss()) * 1.0f;
    planted_data(W, c, d, n, m, X, L);
    planted_data(W, c, d, n, mt, Xt, Lt);

    /* start from a noisy, full-rank version of W and no bias */
    for (int64_t i = 0; i < n * d; i++)
        Wn[i] = W[i] + (float)(0.25 * trng_gauss());

    pred *p = NULL;
    assert_int_equal(pred_new(d, n, r, &p, NULL), 0);
    assert_int_equal(pred_init_svd(p, Wn, NULL, 1, NULL), 0);
    pred_stats before, st, held;
    assert_int_equal(pred_pick_threshold(p, X, L, m, 0.99, NULL), 0);
    assert_int_equal(pred_eval(p, X, L, m, &before, NULL), 0);

    pred_train_opts o;
    pred_train_defaults(&o);
    o.epochs = 40;
    o.batch = 128;
    o.lr = 1e-2;
    progress_log log = {0};
    o.progress = log_progress;
    o.ctx = &log;
    double loss = 0.0;
    ierr e = IERR_INIT;
    int rc = pred_train(p, X, L, m, &o, &loss, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(log.calls, o.epochs);
    assert_true(log.last < 0.5 * log.first);
    assert_true(loss == log.last);

    assert_int_equal(pred_pick_threshold(p, X, L, m, 0.995, NULL), 0);
    assert_int_equal(pred_eval(p, X, L, m, &st, NULL), 0);
    assert_int_equal(pred_eval(p, Xt, Lt, mt, &held, NULL), 0);
    print_message("planted: active %.3f; before training precision %.3f at recall %.3f; "
                  "after: train recall %.4f precision %.3f, held-out recall %.4f precision %.3f "
                  "predicted %.3f\n",
                  st.true_frac, before.precision, before.recall, st.recall, st.precision,
                  held.recall, held.precision, held.predicted_frac);
    assert_true(st.true_frac > 0.05 && st.true_frac < 0.3);
    assert_true(st.recall >= 0.995);
    assert_true(held.recall >= 0.99);
    assert_true(held.precision >= 0.9);
    assert_true(held.precision > before.precision);
    assert_true(held.predicted_frac <= held.true_frac / held.precision * 1.0001);

    /* pred_select agrees with the batch scores */
    float h[8], s[128];
    int32_t idx[128];
    int64_t k = pred_select(p, Xt, h, s, idx);
    int64_t want = 0;
    for (int64_t j = 0; j < n; j++)
        if (s[j] > p->tau)
            assert_int_equal(idx[want++], j);
    assert_int_equal(k, want);

    /* same seed, same result */
    pred *q = NULL;
    assert_int_equal(pred_new(d, n, r, &q, NULL), 0);
    assert_int_equal(pred_init_svd(q, Wn, NULL, 1, NULL), 0);
    o.progress = NULL;
    assert_int_equal(pred_train(q, X, L, m, &o, NULL, NULL), 0);
    assert_memory_equal(p->A, q->A, (size_t)(r * d) * sizeof(float));
    assert_memory_equal(p->B, q->B, (size_t)(n * r) * sizeof(float));
    assert_memory_equal(p->c, q->c, (size_t)n * sizeof(float));

    /* bad options */
    o.epochs = 0;
    assert_int_equal(pred_train(q, X, L, m, &o, NULL, &e), -EINVAL);
    pred_free(q);
    pred_free(p);
    free(U);
    free(V);
    free(W);
    free(Wn);
    free(Wd);
    free(c);
    free(X);
    free(Xt);
    free(L);
    free(Lt);
}

static int stop_after_two(void *ctx, int epoch, int epochs, double loss)
{
    (void)epochs;
    (void)loss;
    *(int *)ctx = epoch;
    return epoch == 2;
}

static void test_train_stops_on_request(void **state)
{
    (void)state;
    const int64_t d = 8, n = 16, r = 4, m = 64;
    trng_state = 5;
    float W[16 * 8], X[64 * 8];
    uint8_t L[64 * 2];
    float c[16] = {0};
    fill_gauss(W, n * d, 1.0);
    planted_data(W, c, d, n, m, X, L);
    pred *p = NULL;
    assert_int_equal(pred_new(d, n, r, &p, NULL), 0);
    assert_int_equal(pred_init_svd(p, W, NULL, 3, NULL), 0);
    pred_train_opts o;
    pred_train_defaults(&o);
    int last = 0;
    o.progress = stop_after_two;
    o.ctx = &last;
    assert_int_equal(pred_train(p, X, L, m, &o, NULL, NULL), 0);
    assert_int_equal(last, 2);
    pred_free(p);
}

/* ---- recall thresholds -------------------------------------------------- */

/* An identity predictor on n = d = r = 10, so the scores are X itself. */
static pred *identity_pred(void)
{
    pred *p = NULL;
    assert_int_equal(pred_new(10, 10, 10, &p, NULL), 0);
    for (int j = 0; j < 10; j++) {
        p->A[j * 10 + j] = 1.0f;
        p->B[j * 10 + j] = 1.0f;
    }
    return p;
}

/* Recall and predicted count at threshold tau. */
static pred_stats eval_at(pred *p, float tau, const float *X, const uint8_t *L, int64_t m)
{
    pred_stats st;
    float keep = p->tau;
    p->tau = tau;
    assert_int_equal(pred_eval(p, X, L, m, &st, NULL), 0);
    p->tau = keep;
    return st;
}

/* tau reaches the target, and the next float up does not. */
static void check_boundary(pred *p, const float *X, const uint8_t *L, int64_t m, double target)
{
    assert_int_equal(pred_pick_threshold(p, X, L, m, target, NULL), 0);
    pred_stats at = eval_at(p, p->tau, X, L, m);
    assert_true(at.recall >= target - 1e-12);
    if (p->tau != FLT_MAX) {
        pred_stats up = eval_at(p, nextafterf(p->tau, INFINITY), X, L, m);
        assert_true(up.recall < target - 1e-12);
    }
}

static void test_pick_threshold_hand_made(void **state)
{
    (void)state;
    /* 100 scores 1..100 over 10 samples × 10 neurons; odd scores are active */
    float X[100];
    uint8_t L[10 * 2] = {0};
    for (int i = 0; i < 100; i++) {
        X[i] = (float)(i + 1);
        pred_label_set(L + (i / 10) * 2, i % 10, (i + 1) % 2);
    }
    pred *p = identity_pred();
    /* 50 positives 1,3,..,99; recall 0.9 needs the top 45, the lowest being 11 */
    assert_int_equal(pred_pick_threshold(p, X, L, 10, 0.9, NULL), 0);
    assert_true(p->tau == nextafterf(11.0f, -INFINITY));
    pred_stats st;
    assert_int_equal(pred_eval(p, X, L, 10, &st, NULL), 0);
    assert_int_equal(st.pairs, 100);
    assert_int_equal(st.positives, 50);
    assert_int_equal(st.true_pos, 45);
    assert_int_equal(st.predicted, 90);                  /* scores 11..100 */
    assert_float_equal(st.recall, 0.9, 1e-12);
    assert_float_equal(st.precision, 0.5, 1e-12);
    assert_float_equal(st.predicted_frac, 0.9, 1e-12);
    assert_float_equal(st.true_frac, 0.5, 1e-12);
    assert_int_equal(eval_at(p, 11.0f, X, L, 10).true_pos, 44);   /* one step up loses one */

    assert_int_equal(pred_pick_threshold(p, X, L, 10, 1.0, NULL), 0);
    assert_true(p->tau == nextafterf(1.0f, -INFINITY));
    assert_int_equal(pred_pick_threshold(p, X, L, 10, 0.5, NULL), 0);
    assert_true(p->tau == nextafterf(51.0f, -INFINITY));   /* top 25: 99..51 */
    assert_int_equal(pred_pick_threshold(p, X, L, 10, 0.0, NULL), 0);
    assert_true(p->tau == FLT_MAX);
    ierr e = IERR_INIT;
    assert_int_equal(pred_pick_threshold(p, X, L, 10, 1.5, &e), -EINVAL);
    assert_true(e.msg[0] != '\0');
    for (double t = 0.01; t < 1.0; t += 0.0625)
        check_boundary(p, X, L, 10, t);

    /* negative scores, zeros and ties */
    for (int i = 0; i < 100; i++)
        X[i] = (float)((i % 7) - 3) * 0.25f;
    for (double t = 0.03; t < 1.0; t += 0.07)
        check_boundary(p, X, L, 10, t);

    /* no positives: nothing is predicted, recall counts as 1 */
    uint8_t none[20] = {0};
    assert_int_equal(pred_pick_threshold(p, X, none, 10, 0.99, NULL), 0);
    assert_true(p->tau == FLT_MAX);
    assert_int_equal(pred_eval(p, X, none, 10, &st, NULL), 0);
    assert_int_equal(st.predicted, 0);
    assert_float_equal(st.recall, 1.0, 0.0);
    assert_float_equal(st.precision, 1.0, 0.0);

    /* all positives: the same rule over all 100 scores */
    uint8_t all[20];
    memset(all, 0xff, sizeof all);
    for (int i = 0; i < 100; i++)
        X[i] = (float)(i + 1);
    assert_int_equal(pred_pick_threshold(p, X, all, 10, 0.9, NULL), 0);
    assert_true(p->tau == nextafterf(11.0f, -INFINITY));
    assert_int_equal(pred_eval(p, X, all, 10, &st, NULL), 0);
    assert_int_equal(st.positives, 100);                 /* padding bits ignored */
    assert_float_equal(st.recall, 0.9, 1e-12);
    assert_float_equal(st.precision, 1.0, 0.0);
    pred_free(p);
}

/* ---- sparsity quantiles ------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_threshold_for_sparsity(void **state)
{
    (void)state;
    float v[100], t;
    for (int i = 0; i < 100; i++)
        v[i] = (float)((i * 37) % 100 + 1);             /* 1..100, shuffled */
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.9, &t, NULL), 0);
    assert_float_equal(t, 90.0f, 0.0f);
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.905, &t, NULL), 0);
    assert_float_equal(t, 91.0f, 0.0f);
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 1.0, &t, NULL), 0);
    assert_float_equal(t, 100.0f, 0.0f);
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.001, &t, NULL), 0);
    assert_float_equal(t, 1.0f, 0.0f);
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.0, &t, NULL), 0);
    assert_true(t == -FLT_MAX);

    /* ties: 70 exact zeros (one of them -0) and 1..30 */
    for (int i = 0; i < 100; i++)
        v[i] = i < 70 ? 0.0f : (float)(i - 69);
    v[3] = -0.0f;
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.5, &t, NULL), 0);
    assert_true(t == 0.0f);
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.75, &t, NULL), 0);
    assert_float_equal(t, 5.0f, 0.0f);

    ierr e = IERR_INIT;
    v[5] = NAN;
    assert_int_equal(pred_threshold_for_sparsity(v, 100, 0.5, &t, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "NaN"));
    assert_int_equal(pred_threshold_for_sparsity(v, 0, 0.5, &t, NULL), -EINVAL);

    /* against sorting, on values spread over many binades and signs */
    const int64_t N = 100000;
    float *big = malloc((size_t)N * sizeof(float)), *sorted = malloc((size_t)N * sizeof(float));
    assert_true(big && sorted);
    trng_state = 77;
    for (int64_t i = 0; i < N; i++)
        big[i] = (float)(trng_gauss() * exp(4.0 * trng_gauss()));
    memcpy(sorted, big, (size_t)N * sizeof(float));
    qsort(sorted, (size_t)N, sizeof(float), cmp_float);
    const double targets[] = {1e-5, 0.1, 0.5, 0.7, 0.9, 0.97, 0.99999, 1.0};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        assert_int_equal(pred_threshold_for_sparsity(big, N, targets[i], &t, NULL), 0);
        int64_t k = (int64_t)ceil(targets[i] * (double)N - 1e-9 * (double)N);
        assert_true(t == sorted[k - 1]);
    }
    free(big);
    free(sorted);
}

/* ---- cost ---------------------------------------------------------------- */

static void test_cost(void **state)
{
    (void)state;
    pred_costs c = pred_cost(256, 1024, 64, 2, 2);
    assert_float_equal(c.pred_flops, 2.0 * 64 * 256 + 2.0 * 1024 * 64, 0.0);
    assert_float_equal(c.pred_bytes, (64.0 * 256 + 1024.0 * 64 + 1024) * 4, 0.0);
    assert_float_equal(c.ffn_flops, 2.0 * 2 * 256 * 1024, 0.0);
    assert_float_equal(c.ffn_bytes, 2.0 * 256 * 1024 * 2, 0.0);
    c = pred_cost(64, 172, 16, 3, 4);
    assert_float_equal(c.ffn_flops, 3.0 * 2 * 64 * 172, 0.0);
    assert_float_equal(c.ffn_bytes, 3.0 * 64 * 172 * 4, 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_svd_planted_rank),
        cmocka_unit_test(test_svd_optimal_truncation),
        cmocka_unit_test(test_pca_start),
        cmocka_unit_test(test_train_planted_low_rank),
        cmocka_unit_test(test_train_stops_on_request),
        cmocka_unit_test(test_pick_threshold_hand_made),
        cmocka_unit_test(test_threshold_for_sparsity),
        cmocka_unit_test(test_cost),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
