/* kernel_avx512.c: the AVX-512 kernel set (kernel.h) for x86-64 CPUs with
 * AVX-512 F, BW, VL and VNNI besides AVX2, FMA and F16C: f16 in 16-value
 * vectors (vcvtph2ps zmm), the quantized dot products with vpdpbusd on
 * 32-byte blocks (one instruction for a block's 32 products), the down
 * columns in 16-value vectors. Same structure as kernel_avx2.c. */
#include "kernel.h"

#ifdef KERN_X86
#include <immintrin.h>

#include "format.h"

#define TGT "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define T __attribute__((target(TGT)))
#define TI __attribute__((target(TGT), always_inline)) static inline

TI float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TI float hsum16(__m512 v)
{
    return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

TI __m512 f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

TI float scale(const unsigned char *blk)
{
    return _cvtsh_ss(kern_scale_bits(blk));
}

TI void put(float *o, float s, float beta)
{
    *o = beta != 0.0f ? *o + s : s;
}

/* ---- f16 ---------------------------------------------------------------- */

TI void xwt_f16_rows(const uint16_t *w, size_t ld, int R, int64_t cols, const float *x, float *out, float beta)
{
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
        float s = hsum16(_mm512_add_ps(a0[k], a1[k])) + hsum8(t[k]);
        for (int64_t i = c; i < cols; i++)
            s += _cvtsh_ss(w[k * ld + i]) * x[i];
        put(out + k, s, beta);
    }
}

T static void xwt_f16(const void *wv, size_t ldb, int64_t rows, int64_t cols, const float *x, float *out, float beta)
{
    const uint16_t *w = wv;
    size_t ld = ldb / 2;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        xwt_f16_rows(w + r * ld, ld, 4, cols, x, out + r, beta);
    for (; r < rows; r++)
        xwt_f16_rows(w + r * ld, ld, 1, cols, x, out + r, beta);
}

T static void aw_f16(const void *w, size_t ldb, int64_t rows, int64_t cols, const float *a, float *y)
{
    const unsigned char *p[KERN_AW_ROWS];
    float co[KERN_AW_ROWS];
    int64_t r = 0;
    int n;
    while ((n = kern_gather_rows(w, ldb, rows, a, &r, p, co)) > 0) {
        __m512 av[KERN_AW_ROWS];
        for (int k = 0; k < n; k++)
            av[k] = _mm512_set1_ps(co[k]);
        int64_t c = 0;
        for (; c + 64 <= cols; c += 64) {
            __m512 y0 = _mm512_loadu_ps(y + c), y1 = _mm512_loadu_ps(y + c + 16), y2 = _mm512_loadu_ps(y + c + 32),
                   y3 = _mm512_loadu_ps(y + c + 48);
            for (int k = 0; k < n; k++) {
                const uint16_t *wr = (const uint16_t *)p[k] + c;
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
                y0 = _mm512_fmadd_ps(f16x16((const uint16_t *)p[k] + c), av[k], y0);
            _mm512_storeu_ps(y + c, y0);
        }
        for (; c < cols; c++)
            for (int k = 0; k < n; k++)
                y[c] += co[k] * _cvtsh_ss(((const uint16_t *)p[k])[c]);
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
            __m256i s;
            if (q4) {
                __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2));
                __m256i nib = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
                s = _mm256_dpbusd_epi32(corr, nib, xv);
            } else {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
                s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
            }
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(scale(blk) * x->d[b]), acc[k]);
        }
    }
    for (int k = 0; k < R; k++)
        put(out + k, hsum8(acc[k]), beta);
}

T static void xwt_q8(const void *wv, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta)
{
    const unsigned char *w = wv;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        xwt_q_rows(w + (size_t)r * ldb, ldb, 4, 0, nblk, x, out + r, beta);
    for (; r < rows; r++)
        xwt_q_rows(w + (size_t)r * ldb, ldb, 1, 0, nblk, x, out + r, beta);
}

T static void xwt_q4(const void *wv, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta)
{
    const unsigned char *w = wv;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
        xwt_q_rows(w + (size_t)r * ldb, ldb, 4, 1, nblk, x, out + r, beta);
    for (; r < rows; r++)
        xwt_q_rows(w + (size_t)r * ldb, ldb, 1, 1, nblk, x, out + r, beta);
}

TI void aw_q(const void *w, size_t ldb, int q4, int64_t rows, int64_t nblk, const float *a, float *y)
{
    const size_t bb = q4 ? FMT_Q4_0_BYTES : FMT_Q8_0_BYTES;
    const unsigned char *p[KERN_AW_ROWS];
    float co[KERN_AW_ROWS];
    int64_t r = 0;
    int n;
    while ((n = kern_gather_rows(w, ldb, rows, a, &r, p, co)) > 0)
        for (int64_t b = 0; b < nblk; b++) {
            float *yb = y + b * FMT_QK;
            __m512 y0 = _mm512_loadu_ps(yb), y1 = _mm512_loadu_ps(yb + 16);
            float off = 0.0f;                      /* q4: -8 * sum of the scales, added once */
            for (int k = 0; k < n; k++) {
                const unsigned char *blk = p[k] + (size_t)b * bb;
                float s = co[k] * scale(blk);
                __m512 sv = _mm512_set1_ps(s);
                if (q4) {
                    __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0f);
                    __m128i lo = _mm_and_si128(raw, m), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
                    y0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), sv, y0);
                    y1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), sv, y1);
                    off -= 8.0f * s;
                } else {
                    __m128i q0 = _mm_loadu_si128((const __m128i *)(blk + 2));
                    __m128i q1 = _mm_loadu_si128((const __m128i *)(blk + 18));
                    y0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), sv, y0);
                    y1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), sv, y1);
                }
            }
            __m512 ov = _mm512_set1_ps(off);
            _mm512_storeu_ps(yb, _mm512_add_ps(y0, ov));
            _mm512_storeu_ps(yb + 16, _mm512_add_ps(y1, ov));
        }
}

T static void aw_q8(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y)
{
    aw_q(w, ldb, 0, rows, nblk, a, y);
}

T static void aw_q4(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y)
{
    aw_q(w, ldb, 1, rows, nblk, a, y);
}

const kern_set kern_avx512 = {"avx512", xwt_f16, aw_f16, xwt_q8, xwt_q4, aw_q8, aw_q4};
#endif
