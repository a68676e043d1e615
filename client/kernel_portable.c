/* kernel_portable.c: the portable kernel set (kernel.h) in plain C: the
 * quantized single-vector products, the reference the SIMD sets are tested
 * against. f16 has no kernel here (weight_matrix.c converts rows and calls
 * OpenBLAS). */
#include "kernel.h"

#include "format.h"
#include "quant.h"

static float row_dot_q8(const unsigned char *wr, int64_t nblk, const kern_xq *x)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *blk = wr + b * FMT_Q8_0_BYTES;
        const int8_t *xq = x->q + b * FMT_QK;
        int32_t s = 0;
        for (unsigned i = 0; i < FMT_QK; i++)
            s += (int8_t)blk[2 + i] * xq[i];
        acc += (float)s * (fmt_f16_to_f32(kern_scale_bits(blk)) * x->d[b]);
    }
    return acc;
}

static float row_dot_q4(const unsigned char *wr, int64_t nblk, const kern_xq *x)
{
    float acc = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *blk = wr + b * FMT_Q4_0_BYTES;
        const int8_t *xq = x->q + b * FMT_QK;
        int32_t s = x->s8[b];               /* sum (nibble - 8) * x = sum nibble * x - 8 sum x */
        for (unsigned i = 0; i < FMT_QK / 2; i++)
            s += (blk[2 + i] & 0x0f) * xq[i] + (blk[2 + i] >> 4) * xq[i + FMT_QK / 2];
        acc += (float)s * (fmt_f16_to_f32(kern_scale_bits(blk)) * x->d[b]);
    }
    return acc;
}

static void xwt_q(const void *w, size_t ldb, int q4, int64_t rows, int64_t nblk, const kern_xq *x, float *out,
                  float beta)
{
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *wr = (const unsigned char *)w + (size_t)r * ldb;
        kern_put(out + r, q4 ? row_dot_q4(wr, nblk, x) : row_dot_q8(wr, nblk, x), beta);
    }
}

static void xwt_q8(const void *w, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta)
{
    xwt_q(w, ldb, 0, rows, nblk, x, out, beta);
}

static void xwt_q4(const void *w, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta)
{
    xwt_q(w, ldb, 1, rows, nblk, x, out, beta);
}

static void aw_q8(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        if (a[r] == 0.0f)
            continue;
        const unsigned char *wr = (const unsigned char *)w + (size_t)r * ldb;
        for (int64_t b = 0; b < nblk; b++) {
            const unsigned char *blk = wr + b * FMT_Q8_0_BYTES;
            float s = a[r] * fmt_f16_to_f32(kern_scale_bits(blk));
            for (unsigned i = 0; i < FMT_QK; i++)
                y[b * FMT_QK + i] += s * (float)(int8_t)blk[2 + i];
        }
    }
}

static void aw_q4(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        if (a[r] == 0.0f)
            continue;
        const unsigned char *wr = (const unsigned char *)w + (size_t)r * ldb;
        for (int64_t b = 0; b < nblk; b++) {
            const unsigned char *blk = wr + b * FMT_Q4_0_BYTES;
            float s = a[r] * fmt_f16_to_f32(kern_scale_bits(blk));
            float *yb = y + b * FMT_QK;
            for (unsigned i = 0; i < FMT_QK / 2; i++) {
                yb[i] += s * (float)((blk[2 + i] & 0x0f) - 8);
                yb[i + FMT_QK / 2] += s * (float)((blk[2 + i] >> 4) - 8);
            }
        }
    }
}

static void dq8(const void *src, float *dst, int64_t nblk)
{
    dequant_q8_0(src, dst, (size_t)nblk * FMT_QK);
}

static void dq4(const void *src, float *dst, int64_t nblk)
{
    dequant_q4_0(src, dst, (size_t)nblk * FMT_QK);
}

const kern_set kern_portable = {"portable", NULL, NULL, xwt_q8, xwt_q4, aw_q8, aw_q4, dq8, dq4};
