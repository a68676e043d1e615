/* test_weight_matrix.c: cmocka tests of the client's kernels (layernorm,
 * rmsnorm, rotate-half RoPE, softmax, the bundle-strided FFN against a naive
 * loop), the weight-matrix products (every kernel set, f16/q8_0/q4_0,
 * against double-precision loops, the two-thread split, the fused
 * single-token FFN) and of sampling
 * (greedy tie-break, top-p, seeded RNG), plus the "not an inflash mount"
 * check of the weight source. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model.h"
#include "quant.h"
#include "weight_matrix.h"
#include "sample.h"
#include "source.h"

/* deterministic pseudo-random floats in [-1, 1) */
static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void fill(float *x, int64_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++)
        x[i] = frand(&s);
}

static void test_layernorm(void **state)
{
    (void)state;
    enum { D = 37 };
    float x[D], w[D], b[D], out[D], out_nb[D];
    fill(x, D, 1);
    fill(w, D, 2);
    fill(b, D, 3);
    for (int i = 0; i < D; i++)
        x[i] = x[i] * 3.0f + 0.5f;
    model_layernorm(out, x, w, b, D, 1e-5);
    model_layernorm(out_nb, x, w, NULL, D, 1e-5);
    double mean = 0, var = 0;
    for (int i = 0; i < D; i++)
        mean += x[i];
    mean /= D;
    for (int i = 0; i < D; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= D;
    for (int i = 0; i < D; i++) {
        double want = (x[i] - mean) / sqrt(var + 1e-5) * w[i];
        assert_true(fabs(out_nb[i] - want) < 1e-5);
        assert_true(fabs(out[i] - (want + b[i])) < 1e-5);
    }
    /* in place */
    float y[D];
    memcpy(y, x, sizeof y);
    model_layernorm(y, y, w, b, D, 1e-5);
    assert_memory_equal(y, out, sizeof y);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    enum { D = 64 };
    float x[D], w[D], out[D];
    fill(x, D, 4);
    fill(w, D, 5);
    model_rmsnorm(out, x, w, D, 1e-5);
    double ss = 0;
    for (int i = 0; i < D; i++)
        ss += (double)x[i] * x[i];
    double inv = 1.0 / sqrt(ss / D + 1e-5);
    for (int i = 0; i < D; i++)
        assert_true(fabs(out[i] - x[i] * inv * w[i]) < 1e-5);
}

static void test_rope(void **state)
{
    (void)state;
    enum { HD = 8, NH = 3 };
    float v[NH * HD], orig[NH * HD], c[HD / 2], s[HD / 2];
    fill(orig, NH * HD, 6);
    /* position 0: identity */
    model_rope_table(0, HD, 10000.0, c, s);
    memcpy(v, orig, sizeof v);
    model_rope(v, NH, HD, c, s);
    assert_memory_equal(v, orig, sizeof v);
    /* position 7: element i pairs with i + HD/2 (rotate-half), angle 7 * theta^(-2i/HD) */
    int64_t pos = 7;
    model_rope_table(pos, HD, 10000.0, c, s);
    memcpy(v, orig, sizeof v);
    model_rope(v, NH, HD, c, s);
    for (int h = 0; h < NH; h++)
        for (int i = 0; i < HD / 2; i++) {
            double a = (double)pos * pow(10000.0, -2.0 * i / HD);
            double x0 = orig[h * HD + i], x1 = orig[h * HD + i + HD / 2];
            assert_true(fabs(v[h * HD + i] - (x0 * cos(a) - x1 * sin(a))) < 1e-5);
            assert_true(fabs(v[h * HD + i + HD / 2] - (x1 * cos(a) + x0 * sin(a))) < 1e-5);
        }
    /* relative-position property: <R(p)q, R(p)k> depends on nothing but q, k when the positions agree */
    float q[HD], k[HD];
    fill(q, HD, 7);
    fill(k, HD, 8);
    double d0 = 0;
    for (int i = 0; i < HD; i++)
        d0 += (double)q[i] * k[i];
    model_rope_table(123, HD, 10000.0, c, s);
    model_rope(q, 1, HD, c, s);
    model_rope(k, 1, HD, c, s);
    double d1 = 0;
    for (int i = 0; i < HD; i++)
        d1 += (double)q[i] * k[i];
    assert_true(fabs(d0 - d1) < 1e-4);
}

static void test_softmax(void **state)
{
    (void)state;
    float x[5] = {1.0f, 2.0f, 3.0f, 1000.0f, 1000.0f};
    model_softmax(x, 5);
    assert_true(fabs(x[3] - 0.5f) < 1e-6 && fabs(x[4] - 0.5f) < 1e-6);
    assert_true(x[0] >= 0.0f && x[0] < 1e-30f);
    float y[4] = {0.0f, logf(2.0f), logf(3.0f), logf(4.0f)};
    model_softmax(y, 4);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(y[i] - (float)(i + 1) / 10.0f) < 1e-6);
    float one = -3.0f;
    model_softmax(&one, 1);
    assert_true(one == 1.0f);
}

/* The naive FFN: explicit loops over the bundle layout. */
/* One activation in double (independent of activity.h's float code). */
static double naive_act(act_fn f, double p, double v)
{
    double s = v / (1.0 + exp(-v));
    switch (f) {
    case ACT_FN_RELU:
    case ACT_FN_DRELU: return v > 0 ? v : 0;
    case ACT_FN_FATRELU: return v >= p ? v : 0;
    case ACT_FN_CATS: return fabs(s) > p ? s : 0;
    default: return s;
    }
}

static void naive_ffn(const float *w, int64_t nb, int64_t d, act_spec as, const float *bu,
                      const float *bg, const float *x, int64_t n, double *pre, double *y)
{
    const int gated = as.gated;
    int64_t bl = (gated ? 3 : 2) * d;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < nb; j++) {
            const float *row = w + j * bl;
            double u = bu ? bu[j] : 0, g = bg ? bg[j] : 0;
            for (int64_t k = 0; k < d; k++) {
                u += (double)row[k] * x[i * d + k];
                if (gated)
                    g += (double)row[d + k] * x[i * d + k];
            }
            pre[i * nb + j] = u;
            double a;
            if (!gated)
                a = naive_act(as.fn, as.param, u);
            else if (as.fn == ACT_FN_DRELU)
                a = naive_act(as.fn, as.param, g) * naive_act(as.fn, as.param, u);
            else
                a = naive_act(as.fn, as.param, g) * u;
            const float *down = row + (gated ? 2 : 1) * d;
            for (int64_t k = 0; k < d; k++)
                y[i * d + k] += a * down[k];
        }
}

/* model_ffn_bundles over weights of dtype dt (f16: the reference uses the
 * same f16-rounded values) against naive_ffn. */
static void check_ffn(fmt_dtype dt, int gated, act_fn act, int64_t n, int with_bias)
{
    /* the parameters sit mid-range of the test data: some neurons cut, some kept */
    const act_spec as = { act, gated, act == ACT_FN_FATRELU ? 0.5f : act == ACT_FN_CATS ? 0.2f : 0.0f };
    const int64_t d = 37, nb = 19, ldp = 40, off = 7;   /* block written at column off of [n][ldp];
                                                           d = 32 + 5 covers the kernels' tails */
    int64_t bl = (gated ? 3 : 2) * d;
    float *w = malloc(sizeof(float) * (size_t)(nb * bl));
    float *x = malloc(sizeof(float) * (size_t)(n * d));
    float *bu = malloc(sizeof(float) * nb), *bg = malloc(sizeof(float) * nb);
    float *pre = calloc((size_t)(n * ldp), sizeof(float)), *gpre = calloc((size_t)(n * ldp), sizeof(float));
    float *actb = malloc(sizeof(float) * (size_t)(n * nb)), *y = malloc(sizeof(float) * (size_t)(n * d));
    double *npre = calloc((size_t)(n * nb), sizeof(double)), *ny = calloc((size_t)(n * d), sizeof(double));
    fill(w, nb * bl, 11 + (uint64_t)gated);
    void *wd = malloc((size_t)(nb * bl) * (size_t)fmt_block_bytes(dt));
    float *scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(d));
    fmt_from_f32(dt, w, wd, (size_t)(nb * bl));
    fmt_to_f32(dt, wd, w, (size_t)(nb * bl));   /* the reference sees the stored values */
    fill(x, n * d, 12 + (uint64_t)n);
    fill(bu, nb, 13);
    fill(bg, nb, 14);
    fill(y, n * d, 15);   /* y accumulates: start from non-zero */
    for (int64_t k = 0; k < n * d; k++)
        ny[k] = y[k];
    const float *ub = with_bias ? bu : NULL, *gb = with_bias && gated ? bg : NULL;
    model_ffn_bundles(dt, wd, nb, d, as, ub, gb, x, n, pre + off, gated ? gpre + off : NULL, ldp, actb, y, scratch);
    naive_ffn(w, nb, d, as, ub, gb, x, n, npre, ny);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < nb; j++)
            assert_true(fabs(pre[i * ldp + off + j] - npre[i * nb + j]) < 1e-4);
    int zeros = 0;
    for (int64_t i = 0; i < n * nb; i++)
        zeros += actb[i] == 0.0f;
    if (act_fn_exact(act))
        assert_true(zeros > 0);   /* the test data does exercise the exact zeros */
    for (int64_t k = 0; k < n * d; k++)
        assert_true(fabs(y[k] - ny[k]) < 1e-4);
    /* columns outside the block are untouched */
    for (int64_t i = 0; i < n; i++)
        assert_true(pre[i * ldp] == 0.0f && pre[i * ldp + off + nb] == 0.0f);
    free(w); free(x); free(bu); free(bg); free(pre); free(gpre); free(actb); free(y); free(npre); free(ny);
    free(wd); free(scratch);
}

static void test_ffn_bundles(void **state)
{
    (void)state;
    fmt_dtype dts[] = {FMT_F32, FMT_F16, FMT_BF16};
    for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++)
        for (int64_t n = 1; n <= 3; n += 2)
            for (int bias = 0; bias <= 1; bias++) {
                check_ffn(dts[t], 0, ACT_FN_RELU, n, bias);
                check_ffn(dts[t], 1, ACT_FN_SILU, n, bias);
                check_ffn(dts[t], 0, ACT_FN_SILU, n, bias);
                for (act_fn f = ACT_FN_RELU; f < ACT_FN_COUNT; f++)
                    if (f != ACT_FN_SILU)
                        check_ffn(dts[t], 1, f, n, bias);
            }
}

/* ---- the weight-matrix products against double-precision loops ---------- */

static const char *const sets[] = {"portable", "avx2", "avx512"};
#define N_SETS (sizeof sets / sizeof sets[0])

/* back to the best set this CPU has (the default) */
static void use_best(void)
{
    for (size_t s = N_SETS; s-- > 0;)
        if (wm_use_kernels(sets[s]) == 0)
            return;
}

/* A rows x ld matrix of dtype dt from seeded values (wd, owned) and its
 * stored values in f32 (wf, owned): the references see what the kernels see. */
static void make_w(fmt_dtype dt, int64_t rows, int64_t ld, uint64_t seed, void **wd, float **wf)
{
    size_t n = (size_t)(rows * ld);
    *wf = malloc(sizeof(float) * n);
    *wd = malloc((size_t)fmt_bytes(dt, n));
    fill(*wf, (int64_t)n, seed);
    fmt_from_f32(dt, *wf, *wd, n);
    fmt_to_f32(dt, *wd, *wf, n);
}

/* x as the quantized kernels see it: q8_0 blocks, dequantized */
static void x_as_q8(const float *x, int64_t cols, float *xq)
{
    void *b = malloc((size_t)fmt_bytes(FMT_Q8_0, (uint64_t)cols));
    quant_q8_0(x, b, (size_t)cols);
    dequant_q8_0(b, xq, (size_t)cols);
    free(b);
}

/* xwt of every available kernel set, n = 1 and n = 3, beta 0 and 1, against
 * double loops: tight against x as quantized (only float order differs:
 * 1e-5 of the sum of |terms|), loose against the exact x (the q8_0 rounding
 * of x: at most 0.6 * d_x per value, d_x = block amax / 127). */
static void check_xwt(fmt_dtype dt, int64_t rows, int64_t cols, int64_t ld)
{
    void *wd;
    float *wf;
    make_w(dt, rows, ld, 31 + (uint64_t)rows, &wd, &wf);
    enum { NB = 3 };
    float *x = malloc(sizeof(float) * (size_t)(NB * cols)), *xq = malloc(sizeof(float) * (size_t)cols);
    float *out = malloc(sizeof(float) * (size_t)(NB * rows)), *port = malloc(sizeof(float) * (size_t)rows);
    float *scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(cols));
    fill(x, NB * cols, 32);
    if (fmt_is_quant(dt))
        x_as_q8(x, cols, xq);
    else
        memcpy(xq, x, sizeof(float) * (size_t)cols);
    for (size_t s = 0; s < N_SETS; s++) {
        if (wm_use_kernels(sets[s]) != 0)
            continue;                          /* this CPU lacks it */
        for (int beta = 0; beta <= 1; beta++) {
            for (int64_t r = 0; r < rows; r++)
                out[r] = 0.25f;
            wm_gemm_xwt(dt, wd, ld, rows, cols, x, 1, out, rows, (float)beta, scratch);
            for (int64_t r = 0; r < rows; r++) {
                double e = 0, eq = 0, mag = 0, dx = 0;
                for (int64_t c = 0; c < cols; c++) {
                    double wv = wf[r * ld + c];
                    e += wv * x[c];
                    eq += wv * xq[c];
                    mag += fabs(wv * xq[c]);
                    dx += fabs(wv) * 0.6 / 127.0;   /* |x| < 1 in the test data */
                }
                double got = out[r] - 0.25 * beta;
                if (fmt_is_quant(dt)) {
                    assert_true(fabs(got - eq) <= 1e-5 * mag + 1e-6);
                    assert_true(fabs(got - e) <= dx + 1e-5 * mag + 1e-6);
                } else {
                    assert_true(fabs(got - e) <= 1e-5 * mag + 1e-6);
                }
                if (s == 0 && beta == 0)
                    port[r] = out[r];
                else if (beta == 0)            /* a SIMD set against the portable set */
                    assert_true(fabs(out[r] - port[r]) <= 2e-5 * mag + 1e-6);
            }
        }
        /* a batch: converted rows and sgemm, x exact */
        wm_gemm_xwt(dt, wd, ld, rows, cols, x, NB, out, rows, 0.0f, scratch);
        for (int64_t i = 0; i < NB; i++)
            for (int64_t r = 0; r < rows; r++) {
                double e = 0, mag = 0;
                for (int64_t c = 0; c < cols; c++) {
                    e += (double)wf[r * ld + c] * x[i * cols + c];
                    mag += fabs((double)wf[r * ld + c] * x[i * cols + c]);
                }
                assert_true(fabs(out[i * rows + r] - e) <= 1e-5 * mag + 1e-6);
            }
    }
    use_best();
    free(wd); free(wf); free(x); free(xq); free(out); free(port); free(scratch);
}

/* aw of every set, n = 1 and n = 3, a third of the coefficients zero: the
 * rows behind them hold NaN, so a kernel that reads them fails the test. */
static void check_aw(fmt_dtype dt, int64_t rows, int64_t cols, int64_t ld)
{
    void *wd;
    float *wf;
    make_w(dt, rows, ld, 41 + (uint64_t)rows, &wd, &wf);
    enum { NB = 3 };
    float *a = malloc(sizeof(float) * (size_t)(NB * rows)), *y = malloc(sizeof(float) * (size_t)(NB * cols));
    float *y0 = malloc(sizeof(float) * (size_t)(NB * cols));
    float *port = malloc(sizeof(float) * (size_t)cols), *nanrow = malloc(sizeof(float) * (size_t)ld);
    float *scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(cols));
    fill(a, NB * rows, 42);
    fill(y0, cols, 43);
    for (int64_t r = 0; r < rows; r += 3)
        a[r] = 0.0f;
    for (int64_t c = 0; c < ld; c++)
        nanrow[c] = NAN;
    void *wn = malloc((size_t)fmt_bytes(dt, (uint64_t)(rows * ld)));   /* zero rows poisoned */
    memcpy(wn, wd, (size_t)fmt_bytes(dt, (uint64_t)(rows * ld)));
    for (int64_t r = 0; r < rows; r += 3) {
        unsigned char *row = (unsigned char *)wn + fmt_bytes(dt, (uint64_t)(r * ld));
        fmt_from_f32(dt, nanrow, row, (size_t)ld);
        for (int64_t b = 0; fmt_is_quant(dt) && b < ld / FMT_QK; b++) {   /* a NaN scale per block */
            row[b * fmt_block_bytes(dt)] = 0x00;
            row[b * fmt_block_bytes(dt) + 1] = 0x7e;
        }
    }
    for (size_t s = 0; s < N_SETS; s++) {
        if (wm_use_kernels(sets[s]) != 0)
            continue;
        fill(y, cols, 43);
        wm_gemm_aw(dt, wn, ld, rows, cols, a, rows, 1, y, scratch);
        for (int64_t c = 0; c < cols; c++) {
            double e = y0[c], mag = fabs(e);
            for (int64_t r = 0; r < rows; r++)
                if (a[r] != 0.0f) {
                    e += (double)a[r] * wf[r * ld + c];
                    mag += fabs((double)a[r] * wf[r * ld + c]);
                }
            assert_true(fabs(y[c] - e) <= 1e-5 * mag + 1e-6);
            if (s == 0)
                port[c] = y[c];
            else
                assert_true(fabs(y[c] - port[c]) <= 2e-5 * mag + 1e-6);
        }
        /* a batch over the unpoisoned weights */
        fill(y, NB * cols, 44);
        wm_gemm_aw(dt, wd, ld, rows, cols, a, rows, NB, y, scratch);
        fill(y0, NB * cols, 44);
        for (int64_t i = 0; i < NB; i++)
            for (int64_t c = 0; c < cols; c++) {
                double e = y0[i * cols + c], mag = fabs(e);
                for (int64_t r = 0; r < rows; r++) {
                    e += (double)a[i * rows + r] * wf[r * ld + c];
                    mag += fabs((double)a[i * rows + r] * wf[r * ld + c]);
                }
                assert_true(fabs(y[i * cols + c] - e) <= 1e-5 * mag + 1e-6);
            }
        fill(y0, cols, 43);                    /* the next set's n == 1 reference */
    }
    use_best();
    free(wd); free(wf); free(wn); free(a); free(y); free(y0); free(port); free(nanrow); free(scratch);
}

/* The two-thread split: a product large enough to be split equals, bit for
 * bit, the same product taken in pieces too small to be split (each output
 * is computed by one thread with the same kernel), over repeated calls. */
static void check_split(fmt_dtype dt)
{
    const int64_t rows = 301, cols = 4096, ld = 4128, piece = 128;
    assert_true(rows * cols >= WM_SPLIT_MIN && rows * piece < WM_SPLIT_MIN);
    void *wd;
    float *wf;
    make_w(dt, rows, ld, 51, &wd, &wf);
    float *x = malloc(sizeof(float) * (size_t)cols), *a = malloc(sizeof(float) * (size_t)rows);
    float *o1 = malloc(sizeof(float) * (size_t)rows), *o2 = malloc(sizeof(float) * (size_t)rows);
    float *y1 = malloc(sizeof(float) * (size_t)cols), *y2 = malloc(sizeof(float) * (size_t)cols);
    float *scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(cols));
    fill(x, cols, 52);
    fill(a, rows, 53);
    for (int64_t r = 0; r < rows; r += 4)
        a[r] = 0.0f;
    for (int rep = 0; rep < 3; rep++) {        /* the helper thread is reused */
        wm_gemm_xwt(dt, wd, ld, rows, cols, x, 1, o1, rows, 0.0f, scratch);
        for (int64_t r = 0; r < rows; r++)
            wm_gemm_xwt(dt, wm_at(dt, wd, ld, r, 0), ld, 1, cols, x, 1, o2 + r, 1, 0.0f, scratch);
        assert_memory_equal(o1, o2, sizeof(float) * (size_t)rows);
        fill(y1, cols, 54);
        fill(y2, cols, 54);
        wm_gemm_aw(dt, wd, ld, rows, cols, a, rows, 1, y1, scratch);
        for (int64_t c = 0; c < cols; c += piece)
            wm_gemm_aw(dt, wm_at(dt, wd, ld, 0, c), ld, rows, piece, a, rows, 1, y2 + c, scratch);
        assert_memory_equal(y1, y2, sizeof(float) * (size_t)cols);
    }
    free(wd); free(wf); free(x); free(a); free(o1); free(o2); free(y1); free(y2); free(scratch);
}

/* The fused FFN (wm_ffn) of every kernel set that has it against double
 * loops over the stored values (x as the quantized kernels see it), rows
 * ldw > bundle apart. Rows whose term is clearly 0 get NaN down columns:
 * they must be skipped. Two calls give the same bits (deterministic).
 * nb * d large enough: both halves of the two-thread split. */
static void check_fused(fmt_dtype dt, int gated, act_fn fn, int64_t nb, int64_t d)
{
    const act_spec as = {fn, gated, 0.0f};
    const int64_t ldw = (gated ? 3 : 2) * d + 32, down = (gated ? 2 : 1) * d;
    void *wd;
    float *wf;
    make_w(dt, nb, ldw, 61 + (uint64_t)nb, &wd, &wf);
    float *x = malloc(sizeof(float) * (size_t)d), *xq = malloc(sizeof(float) * (size_t)d);
    float *bu = malloc(sizeof(float) * (size_t)nb), *bg = malloc(sizeof(float) * (size_t)nb);
    float *pre = malloc(sizeof(float) * (size_t)nb), *gpre = malloc(sizeof(float) * (size_t)nb);
    float *act = malloc(sizeof(float) * (size_t)nb), *y = malloc(sizeof(float) * (size_t)d);
    float *y1 = malloc(sizeof(float) * (size_t)d), *scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(d));
    double *u = malloc(sizeof(double) * (size_t)nb), *um = malloc(sizeof(double) * (size_t)nb);
    double *yr = malloc(sizeof(double) * (size_t)d), *mag = malloc(sizeof(double) * (size_t)d);
    fill(x, d, 62);
    fill(bu, nb, 63);
    fill(bg, nb, 64);
    if (fmt_is_quant(dt))
        x_as_q8(x, d, xq);
    else
        memcpy(xq, x, sizeof(float) * (size_t)d);
    fill(y1, d, 65);
    for (int64_t c = 0; c < d; c++) {
        yr[c] = y1[c];
        mag[c] = fabs(y1[c]);
    }
    int poisoned = 0;
    for (int64_t j = 0; j < nb; j++) {
        const float *row = wf + j * ldw;
        double g = bg[j];
        u[j] = bu[j];
        um[j] = 0;
        for (int64_t k = 0; k < d; k++) {
            u[j] += (double)row[k] * xq[k];
            um[j] += fabs((double)row[k] * xq[k]);
            if (gated)
                g += (double)row[d + k] * xq[k];
        }
        double a = !gated ? naive_act(fn, 0, u[j]) : naive_act(fn, 0, g) * u[j];
        double cut = gated ? g : u[j];           /* ReLU: the term is 0 when this is <= 0 */
        if (fn == ACT_FN_RELU && cut < -0.05) {  /* clearly cut: poison the down column */
            unsigned char *col = (unsigned char *)wd + fmt_bytes(dt, (uint64_t)(j * ldw + down));
            memset(col, 0xff, (size_t)fmt_bytes(dt, (uint64_t)d));   /* f16 0xffff: NaN (values, block scales) */
            poisoned++;
            continue;
        }
        for (int64_t c = 0; c < d; c++) {
            yr[c] += a * row[down + c];
            mag[c] += fabs(a * row[down + c]);
        }
    }
    if (fn == ACT_FN_RELU)
        assert_true(poisoned > 0 && poisoned < nb);
    for (size_t st = 0; st < N_SETS; st++) {
        if (wm_use_kernels(sets[st]) != 0)
            continue;
        memcpy(y, y1, sizeof(float) * (size_t)d);
        if (wm_ffn(dt, wd, ldw, nb, d, as, bu, gated ? bg : NULL, x, pre, gpre, act, y, scratch) != 0) {
            assert_true(dt == FMT_F16 && strcmp(sets[st], "portable") == 0);   /* f16 takes the batch path there */
            continue;
        }
        for (int64_t j = 0; j < nb; j++)
            assert_true(fabs(pre[j] - u[j]) <= 1e-5 * um[j] + 1e-5);
        for (int64_t c = 0; c < d; c++)
            assert_true(fabs(y[c] - yr[c]) <= 1e-4 * mag[c] + 1e-4);
        float *y2 = malloc(sizeof(float) * (size_t)d);
        memcpy(y2, y1, sizeof(float) * (size_t)d);
        assert_int_equal(wm_ffn(dt, wd, ldw, nb, d, as, bu, gated ? bg : NULL, x, pre, gpre, act, y2, scratch), 0);
        assert_memory_equal(y, y2, sizeof(float) * (size_t)d);
        free(y2);
    }
    use_best();
    assert_int_equal(wm_ffn(FMT_F32, wd, ldw, nb, d, as, NULL, NULL, x, pre, gpre, act, y, scratch), -ENOTSUP);
    free(wd); free(wf); free(x); free(xq); free(bu); free(bg); free(pre); free(gpre); free(act); free(y); free(y1);
    free(scratch); free(u); free(um); free(yr); free(mag);
}

static void test_wm_fused(void **state)
{
    (void)state;
    const fmt_dtype dts[] = {FMT_F16, FMT_Q8_0, FMT_Q4_0};
    for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++) {
        check_fused(dts[t], 1, ACT_FN_SILU, 37, 96);        /* one thread, groups and a partial one */
        check_fused(dts[t], 0, ACT_FN_RELU, 37, 96);
        check_fused(dts[t], 1, ACT_FN_RELU, 101, 4096);    /* split over two threads (odd halves) */
        assert_true(101 * 4096 * 3 >= WM_SPLIT_MIN);
    }
}

/* odd row counts, ld > cols, below and above the split threshold, n = 1 and 3 */
static void check_dtype(fmt_dtype dt)
{
    check_xwt(dt, 37, 96, 160);
    check_xwt(dt, 37, 96, 96);                 /* rows back to back */
    check_aw(dt, 37, 96, 160);
    check_xwt(dt, 301, 4096, 4128);
    check_aw(dt, 301, 4096, 4128);
    check_split(dt);
}

static void test_wm_f16(void **state)
{
    (void)state;
    check_dtype(FMT_F16);
    check_xwt(FMT_F16, 37, 100, 104);          /* f16 rows need not be whole 32-value blocks */
    check_aw(FMT_F16, 37, 100, 104);
    check_xwt(FMT_F16, 3, 7, 9);
    check_aw(FMT_F16, 3, 7, 9);
}

static void test_wm_q8_0(void **state)
{
    (void)state;
    check_dtype(FMT_Q8_0);
}

static void test_wm_q4_0(void **state)
{
    (void)state;
    check_dtype(FMT_Q4_0);
}

/* The kernel sets: the default is the best the CPU has; unknown names are refused. */
static void test_wm_sets(void **state)
{
    (void)state;
    use_best();
    const char *best = wm_kernels();
    assert_int_equal(wm_use_kernels("portable"), 0);
    assert_string_equal(wm_kernels(), "portable");
    assert_int_equal(wm_use_kernels("sse9"), -ENOENT);
    use_best();
    assert_string_equal(wm_kernels(), best);
}
static void test_argmax_ties(void **state)
{
    (void)state;
    float x[6] = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f, 1.0f};
    assert_int_equal(sample_argmax(x, 6), 1);
    float y[3] = {-INFINITY, -INFINITY, -INFINITY};
    assert_int_equal(sample_argmax(y, 3), 0);
    sampler *s;
    assert_int_equal(sample_new(&s, 6, 0.0f, 0.9f, 1, NULL), 0);
    assert_int_equal(sample_next(s, x), 1);   /* temperature 0 = greedy */
    sample_free(s);
}

static void test_mult_topp(void **state)
{
    (void)state;
    float p[5] = {0.1f, 0.4f, 0.05f, 0.3f, 0.15f};
    assert_int_equal(sample_mult(p, 5, 0.0f), 0);
    assert_int_equal(sample_mult(p, 5, 0.099f), 0);
    assert_int_equal(sample_mult(p, 5, 0.11f), 1);
    assert_int_equal(sample_mult(p, 5, 0.999f), 4);
    sample_pi scratch[5];
    /* nucleus of 0.6: sorted 0.4 (1), 0.3 (3): mass 0.7 > 0.6 -> only ids 1 and 3 */
    int seen[5] = {0};
    for (int i = 0; i < 100; i++)
        seen[sample_topp(p, 5, 0.6f, scratch, (float)i / 100.0f)]++;
    assert_int_equal(seen[0] + seen[2] + seen[4], 0);
    assert_true(seen[1] > 0 && seen[3] > 0);
    /* proportional inside the nucleus: 0.4 / 0.7 of the coins go to id 1 */
    assert_int_equal(seen[1], 58);
    /* a tiny top_p keeps the most probable only */
    for (int i = 0; i < 10; i++)
        assert_int_equal(sample_topp(p, 5, 0.01f, scratch, (float)i / 10.0f), 1);
    /* ties inside the nucleus: lower id first */
    float q[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    assert_int_equal(sample_topp(q, 4, 0.1f, scratch, 0.5f), 0);
}

static void test_rng_seeded(void **state)
{
    (void)state;
    sample_rng a, b, c;
    sample_rng_seed(&a, 42);
    sample_rng_seed(&b, 42);
    sample_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 100; i++) {
        float fa = sample_rng_f32(&a), fb = sample_rng_f32(&b), fc = sample_rng_f32(&c);
        assert_true(fa == fb);
        assert_true(fa >= 0.0f && fa < 1.0f);
        differ += fa != fc;
    }
    assert_true(differ > 90);
    /* sampling with a temperature is reproducible for a seed */
    float l1[8], l2[8];
    sampler *s1, *s2;
    assert_int_equal(sample_new(&s1, 8, 0.8f, 0.9f, 7, NULL), 0);
    assert_int_equal(sample_new(&s2, 8, 0.8f, 0.9f, 7, NULL), 0);
    for (int i = 0; i < 50; i++) {
        fill(l1, 8, (uint64_t)i);
        memcpy(l2, l1, sizeof l1);
        int64_t t1 = sample_next(s1, l1), t2 = sample_next(s2, l2);
        assert_int_equal(t1, t2);
        assert_true(t1 >= 0 && t1 < 8);
    }
    sample_free(s1);
    sample_free(s2);
}

static void test_not_a_mount(void **state)
{
    (void)state;
    char dir[] = "/tmp/inflash-test-client-XXXXXX";
    assert_non_null(mkdtemp(dir));
    source *s = NULL;
    ierr err = IERR_INIT;
    int rc = source_open_mount(dir, &s, &err);
    assert_true(rc < 0);
    assert_null(s);
    assert_non_null(strstr(err.msg, "not an inflash mount (no config.json)"));
    assert_non_null(strstr(err.msg, dir));
    rmdir(dir);
    rc = source_open_mount("/nonexistent/inflash", &s, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err.msg, "/nonexistent/inflash"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),   cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_ffn_bundles), cmocka_unit_test(test_wm_f16),
        cmocka_unit_test(test_wm_q8_0),     cmocka_unit_test(test_wm_q4_0),
        cmocka_unit_test(test_wm_sets),     cmocka_unit_test(test_wm_fused),
        cmocka_unit_test(test_argmax_ties),
        cmocka_unit_test(test_mult_topp),   cmocka_unit_test(test_rng_seeded),
        cmocka_unit_test(test_not_a_mount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
