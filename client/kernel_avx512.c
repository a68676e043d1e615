/* kernel_avx512.c: the AVX-512 kernel set (kernel.h) for x86-64 CPUs with
 * AVX-512 F, BW, VL and VNNI besides AVX2, FMA and F16C: f16 in 16-value
 * vectors (vcvtph2ps zmm), the quantized dot products with vpdpbusd on
 * 32-byte blocks (one instruction for a block's 32 products), the down
 * columns in 16-value vectors. Same structure as kernel_avx2.c. */
#include "kernel.h"

#ifdef KERN_X86
#include "format.h"

#define TGT "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define T __attribute__((target(TGT)))
#define TI __attribute__((target(TGT), always_inline)) static inline

TI float hsum16(__m512 v)
{
    return kern_hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

TI __m512 f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

/* ---- f16 ---------------------------------------------------------------- */

TI void xwt_f16_rows(const unsigned char *wb, size_t ldb, int R, int q4, int64_t cols, const float *x, float *out,
                     float beta)
{
    const uint16_t *w = (const uint16_t *)wb;
    size_t ld = ldb / 2;
    (void)q4;
    __m512 a0[4], a1[4];
    __m256 t[4];
    for (int k = 0; k < R; k++) {
        a0[k] = a1[k] = _mm512_setzero_ps();
        t[k] = _mm256_setzero_ps();
    }
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
        __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
        for (int k = 0; k < R; k++) {
            if (R == 4)
                kern_prefetch(w + (k + KERN_PF_ROWS) * ld + c);
            a0[k] = _mm512_fmadd_ps(f16x16(w + k * ld + c), x0, a0[k]);
            a1[k] = _mm512_fmadd_ps(f16x16(w + k * ld + c + 16), x1, a1[k]);
        }
    }
    for (; c + 8 <= cols; c += 8) {
        __m256 x0 = _mm256_loadu_ps(x + c);
        for (int k = 0; k < R; k++)
            t[k] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k * ld + c))), x0, t[k]);
    }
    for (int k = 0; k < R; k++) {
        float s = hsum16(_mm512_add_ps(a0[k], a1[k])) + kern_hsum8(t[k]);
        for (int64_t i = c; i < cols; i++)
            s += _cvtsh_ss(w[k * ld + i]) * x[i];
        kern_put(out + k, s, beta);
    }
}

KERN_XWT_DRIVER(T, xwt_f16, xwt_f16_rows, const float *, 0, 0)

T static void aw_f16(const void *w, size_t ldb, int64_t rows, int64_t cols, const float *a, float *y)
{
    kern_walk s;
    for (kern_walk_begin(&s, w, ldb, rows, a); kern_walk_more(&s, w, ldb, rows, a); s.cur ^= 1) {
        const kern_group *G = &s.g[s.cur], *N = &s.g[s.cur ^ 1];
        int n = G->n;
        __m512 av[KERN_AW_ROWS];
        for (int k = 0; k < n; k++)
            av[k] = _mm512_set1_ps(G->c[k]);
        int64_t c = 0;
        for (; c + 64 <= cols; c += 64) {
            __m512 y0 = _mm512_loadu_ps(y + c), y1 = _mm512_loadu_ps(y + c + 16), y2 = _mm512_loadu_ps(y + c + 32),
                   y3 = _mm512_loadu_ps(y + c + 48);
            kern_prefetch_group(N, 2 * (size_t)c);
            kern_prefetch_group(N, 2 * (size_t)c + 64);
            for (int k = 0; k < n; k++) {
                const uint16_t *wr = (const uint16_t *)G->p[k] + c;
                y0 = _mm512_fmadd_ps(f16x16(wr), av[k], y0);
                y1 = _mm512_fmadd_ps(f16x16(wr + 16), av[k], y1);
                y2 = _mm512_fmadd_ps(f16x16(wr + 32), av[k], y2);
                y3 = _mm512_fmadd_ps(f16x16(wr + 48), av[k], y3);
            }
            _mm512_storeu_ps(y + c, y0);
            _mm512_storeu_ps(y + c + 16, y1);
            _mm512_storeu_ps(y + c + 32, y2);
            _mm512_storeu_ps(y + c + 48, y3);
        }
        for (; c + 16 <= cols; c += 16) {
            __m512 y0 = _mm512_loadu_ps(y + c);
            for (int k = 0; k < n; k++)
                y0 = _mm512_fmadd_ps(f16x16((const uint16_t *)G->p[k] + c), av[k], y0);
            _mm512_storeu_ps(y + c, y0);
        }
        for (; c < cols; c++)
            for (int k = 0; k < n; k++)
                y[c] += G->c[k] * _cvtsh_ss(((const uint16_t *)G->p[k])[c]);
    }
}

/* ---- q8_0 / q4_0 ---------------------------------------------------------- */

TI void xwt_q_rows(const unsigned char *w, size_t ldb, int R, int q4, int64_t nblk, const kern_xq *x, float *out,
                   float beta)
{
    const size_t bb = q4 ? FMT_Q4_0_BYTES : FMT_Q8_0_BYTES;
    const __m128i m = _mm_set1_epi8(0x0f);
    __m256 acc[4];
    for (int k = 0; k < R; k++)
        acc[k] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + b * FMT_QK));
        __m256i corr = _mm256_setzero_si256();
        if (q4)                                    /* -8 * sum x in lane 0: the nibbles' offset */
            corr = _mm256_zextsi128_si256(_mm_cvtsi32_si128(x->s8[b]));
        for (int k = 0; k < R; k++) {
            const unsigned char *blk = w + k * ldb + (size_t)b * bb;
            if (R == 4)
                kern_prefetch(blk + KERN_PF_ROWS * ldb);
            __m256i s;
            if (q4) {
                __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2));
                __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
                s = _mm256_dpbusd_epi32(corr, nib, xv);
            } else {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
                s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
            }
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(kern_scale(blk) * x->d[b]), acc[k]);
        }
    }
    for (int k = 0; k < R; k++)
        kern_put(out + k, kern_hsum8(acc[k]), beta);
}

/* q4_0, two blocks (b, b+1) per step: their 32 nibble bytes unpacked into
 * one 64-byte register in the order [lo b, lo b+1, hi b, hi b+1], x's two
 * blocks ready in that order (kern_xq's qp, with sp and dp: measured, rows
 * one at a time, one thread, in cache: 13 -> 18 GB/s against permuting x
 * here), so one vpdpbusd covers both blocks; the two dword halves fold into
 * 8 lanes (4 per block) for one FMA with the scales [dw0 dx0 x4, dw1 dx1 x4]
 * (both f16 scales converted by one vcvtph2ps). An odd last block takes
 * xwt_q_rows' steps. */
TI void xwt_q4_rows(const unsigned char *w, size_t ldb, int R, int q4, int64_t nblk, const kern_xq *x, float *out,
                    float beta)
{
    const size_t bb = FMT_Q4_0_BYTES;
    const __m512i m = _mm512_set1_epi8(0x0f);
    const __m256i spread = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
    __m256 acc[4];
    (void)q4;
    for (int k = 0; k < R; k++)
        acc[k] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nblk; b += 2) {
        __m512i xv = _mm512_loadu_si512((const void *)(x->qp + 32 * b));   /* [lo b, lo b+1, hi b, hi b+1] */
        __m512i corr = _mm512_loadu_si512((const void *)(x->sp + 8 * b));  /* lanes 0 and 4 */
        __m256 xd = _mm256_loadu_ps(x->dp + 4 * b);
        for (int k = 0; k < R; k++) {
            const unsigned char *blk = w + k * ldb + (size_t)b * bb;
            if (R == 4)
                kern_prefetch(blk + KERN_PF_ROWS * ldb);
            __m256i raw = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2))),
                                                  _mm_loadu_si128((const __m128i *)(blk + bb + 2)), 1);
            __m512i nib = _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1);
            nib = _mm512_and_si512(nib, m);
            __m512i s = _mm512_dpbusd_epi32(corr, nib, xv);
            __m256i t = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
            uint32_t sb = kern_scale_bits(blk) | (uint32_t)kern_scale_bits(blk + bb) << 16;
            __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128((int)sb));          /* both f16 scales */
            __m256 sc = _mm256_mul_ps(_mm256_permutexvar_ps(spread, _mm256_castps128_ps256(f)), xd);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), sc, acc[k]);
        }
    }
    if (b < nblk) {
        const __m128i m4 = _mm_set1_epi8(0x0f);
        __m256i xv = _mm256_loadu_si256((const __m256i *)(x->q + b * FMT_QK));
        __m256i corr = _mm256_zextsi128_si256(_mm_cvtsi32_si128(x->s8[b]));
        for (int k = 0; k < R; k++) {
            const unsigned char *blk = w + k * ldb + (size_t)b * bb;
            __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2));
            __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
            __m256i s = _mm256_dpbusd_epi32(corr, nib, xv);
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(kern_scale(blk) * x->d[b]), acc[k]);
        }
    }
    for (int k = 0; k < R; k++)
        kern_put(out + k, kern_hsum8(acc[k]), beta);
}

KERN_XWT_DRIVER(T, xwt_q8, xwt_q_rows, const kern_xq *, 0, FMT_Q8_0_BYTES)
KERN_XWT_DRIVER(T, xwt_q4, xwt_q4_rows, const kern_xq *, 1, FMT_Q4_0_BYTES)

/* Blocks [b, b+B) of y (B = 2 or 1) over the rows of group G, prefetching
 * those of group N: 2B independent chains of FMAs (one chain per row would
 * wait on the FMA latency). (Measured and dropped: the scales through a
 * stack array for broadcasts from memory; q4_0 nibbles by and/shift and
 * vcvtdq2ps with -8 * the scales added once, or as floats 2^23 + nibble
 * (or into the mantissa) less 2^23 + 8: all slower than this.) */
TI void aw_q_blocks(const kern_group *G, const kern_group *N, int q4, int64_t b, int B, float *y)
{
    const size_t bb = q4 ? FMT_Q4_0_BYTES : FMT_Q8_0_BYTES;
    const __m512 nib = _mm512_set_ps(7, 6, 5, 4, 3, 2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8);   /* nibble - 8 */
    __m512 yv[4];
    for (size_t o = (size_t)b * bb; o < (size_t)(b + B) * bb; o += 64)
        kern_prefetch_group(N, o);
    for (int j = 0; j < 2 * B; j++)
        yv[j] = _mm512_loadu_ps(y + b * FMT_QK + 16 * j);
    for (int k = 0; k < G->n; k++)
        for (int j = 0; j < B; j++) {
            const unsigned char *blk = G->p[k] + (size_t)(b + j) * bb;
            __m512 sv = _mm512_set1_ps(G->c[k] * kern_scale(blk));
            __m512 v0, v1;
            if (q4) {                              /* byte i: value i (low nibble), value i + 16 (high) */
                __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
                v0 = _mm512_permutexvar_ps(z, nib);    /* the index's low 4 bits: the low nibble */
                v1 = _mm512_permutexvar_ps(_mm512_srli_epi32(z, 4), nib);
            } else {
                v0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
                v1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
            }
            yv[2 * j] = _mm512_fmadd_ps(v0, sv, yv[2 * j]);
            yv[2 * j + 1] = _mm512_fmadd_ps(v1, sv, yv[2 * j + 1]);
        }
    for (int j = 0; j < 2 * B; j++)
        _mm512_storeu_ps(y + b * FMT_QK + 16 * j, yv[j]);
}

/* y two blocks at a time, up to KERN_AW_ROWS rows per pass (q4: 0 q8_0, 1 q4_0) */
TI void aw_q(const void *w, size_t ldb, int q4, int64_t rows, int64_t nblk, const float *a, float *y)
{
    kern_walk s;
    for (kern_walk_begin(&s, w, ldb, rows, a); kern_walk_more(&s, w, ldb, rows, a); s.cur ^= 1) {
        int64_t b = 0;
        for (; b + 2 <= nblk; b += 2)
            aw_q_blocks(&s.g[s.cur], &s.g[s.cur ^ 1], q4, b, 2, y);
        if (b < nblk)
            aw_q_blocks(&s.g[s.cur], &s.g[s.cur ^ 1], q4, b, 1, y);
    }
}

KERN_AW_DRIVER(T, aw_q8, aw_q, 0)
KERN_AW_DRIVER(T, aw_q4, aw_q, 1)

T static void dequant_q8(const void *src, float *dst, int64_t nblk)
{
    const unsigned char *blk = src;
    for (int64_t b = 0; b < nblk; b++, blk += FMT_Q8_0_BYTES, dst += FMT_QK) {
        __m512 d = _mm512_set1_ps(kern_scale(blk));
        for (int i = 0; i < 2; i++) {
            __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2 + 16 * i)));
            _mm512_storeu_ps(dst + 16 * i, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
        }
    }
}

T static void dequant_q4(const void *src, float *dst, int64_t nblk)
{
    const unsigned char *blk = src;
    const __m512 nib = _mm512_set_ps(7, 6, 5, 4, 3, 2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8);   /* nibble - 8 */
    for (int64_t b = 0; b < nblk; b++, blk += FMT_Q4_0_BYTES, dst += FMT_QK) {
        __m512 d = _mm512_set1_ps(kern_scale(blk));
        __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
        _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_permutexvar_ps(z, nib), d));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(z, 4), nib), d));
    }
}

const kern_set kern_avx512 = {"avx512", xwt_f16, aw_f16, xwt_q8, xwt_q4, aw_q8, aw_q4, dequant_q8, dequant_q4};
#endif
