/* kernel_avx2.c: the AVX2 kernel set (kernel.h) for x86-64 CPUs with AVX2,
 * FMA and F16C. Each function carries its own target attribute so the rest
 * of the build stays portable; weight_matrix.c calls these only after
 * checking the CPU. Single-vector products are bound by DRAM bandwidth, so
 * the kernels read each weight byte once, share activation loads between
 * several rows, and keep y in registers across several rows (aw). */
#include "kernel.h"

#ifdef KERN_X86
#include "format.h"

#define T __attribute__((target("avx2,fma,f16c")))
#define TI __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

TI __m256 f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* ---- f16 ---------------------------------------------------------------- */

/* R rows (R = 4 or 1) at once: each x vector is loaded once for all of them. */
TI void xwt_f16_rows(const unsigned char *wb, size_t ldb, int R, int q4, int64_t cols, const float *x, float *out,
                     float beta)
{
    const uint16_t *w = (const uint16_t *)wb;
    size_t ld = ldb / 2;
    (void)q4;
    __m256 a0[4], a1[4];
    for (int k = 0; k < R; k++)
        a0[k] = a1[k] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
        for (int k = 0; k < R; k++) {
            if (R == 4 && c % 32 == 0)             /* one prefetch per 64-byte line */
                kern_prefetch(w + (k + KERN_PF_ROWS) * ld + c);
            a0[k] = _mm256_fmadd_ps(f16x8(w + k * ld + c), x0, a0[k]);
            a1[k] = _mm256_fmadd_ps(f16x8(w + k * ld + c + 8), x1, a1[k]);
        }
    }
    for (; c + 8 <= cols; c += 8) {
        __m256 x0 = _mm256_loadu_ps(x + c);
        for (int k = 0; k < R; k++)
            a0[k] = _mm256_fmadd_ps(f16x8(w + k * ld + c), x0, a0[k]);
    }
    for (int k = 0; k < R; k++) {
        float s = kern_hsum8(_mm256_add_ps(a0[k], a1[k]));
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
        __m256 av[KERN_AW_ROWS];
        for (int k = 0; k < n; k++)
            av[k] = _mm256_set1_ps(G->c[k]);
        int64_t c = 0;
        for (; c + 32 <= cols; c += 32) {          /* four independent chains over the rows */
            __m256 y0 = _mm256_loadu_ps(y + c), y1 = _mm256_loadu_ps(y + c + 8), y2 = _mm256_loadu_ps(y + c + 16),
                   y3 = _mm256_loadu_ps(y + c + 24);
            kern_prefetch_group(N, 2 * (size_t)c);
            for (int k = 0; k < n; k++) {
                const uint16_t *wr = (const uint16_t *)G->p[k] + c;
                y0 = _mm256_fmadd_ps(f16x8(wr), av[k], y0);
                y1 = _mm256_fmadd_ps(f16x8(wr + 8), av[k], y1);
                y2 = _mm256_fmadd_ps(f16x8(wr + 16), av[k], y2);
                y3 = _mm256_fmadd_ps(f16x8(wr + 24), av[k], y3);
            }
            _mm256_storeu_ps(y + c, y0);
            _mm256_storeu_ps(y + c + 8, y1);
            _mm256_storeu_ps(y + c + 16, y2);
            _mm256_storeu_ps(y + c + 24, y3);
        }
        for (; c + 8 <= cols; c += 8) {
            __m256 y0 = _mm256_loadu_ps(y + c);
            for (int k = 0; k < n; k++)
                y0 = _mm256_fmadd_ps(f16x8((const uint16_t *)G->p[k] + c), av[k], y0);
            _mm256_storeu_ps(y + c, y0);
        }
        for (; c < cols; c++)
            for (int k = 0; k < n; k++)
                y[c] += G->c[k] * _cvtsh_ss(((const uint16_t *)G->p[k])[c]);
    }
}

/* ---- q8_0 / q4_0 ---------------------------------------------------------- */

/* sum_i u[i] * s[i] over 32 bytes as 8 int32 lanes (u unsigned, pairs fit int16) */
TI __m256i dot_us(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* the 32 nibbles of a q4_0 block as bytes in value order (low nibbles, then high) */
TI __m256i nibbles(const unsigned char *blk)
{
    __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m), _mm_and_si128(raw, m));
}

/* R rows at once (R = 4 or 1); q4: 0 for q8_0, 1 for q4_0 */
TI void xwt_q_rows(const unsigned char *w, size_t ldb, int R, int q4, int64_t nblk, const kern_xq *x, float *out,
                   float beta)
{
    const size_t bb = q4 ? FMT_Q4_0_BYTES : FMT_Q8_0_BYTES;
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
                s = _mm256_add_epi32(dot_us(nibbles(blk), xv), corr);
            } else {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
                s = dot_us(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            }
            acc[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(kern_scale(blk) * x->d[b]), acc[k]);
        }
    }
    for (int k = 0; k < R; k++)
        kern_put(out + k, kern_hsum8(acc[k]), beta);
}

KERN_XWT_DRIVER(T, xwt_q8, xwt_q_rows, const kern_xq *, 0, FMT_Q8_0_BYTES)
KERN_XWT_DRIVER(T, xwt_q4, xwt_q_rows, const kern_xq *, 1, FMT_Q4_0_BYTES)

TI __m256 i8x8(const unsigned char *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

TI __m256 u8x8(__m128i v)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

/* y block by block, up to KERN_AW_ROWS rows per pass (q4: 0 q8_0, 1 q4_0) */
TI void aw_q(const void *w, size_t ldb, int q4, int64_t rows, int64_t nblk, const float *a, float *y)
{
    const size_t bb = q4 ? FMT_Q4_0_BYTES : FMT_Q8_0_BYTES;
    kern_walk s;
    for (kern_walk_begin(&s, w, ldb, rows, a); kern_walk_more(&s, w, ldb, rows, a); s.cur ^= 1) {
        const kern_group *N = &s.g[s.cur ^ 1];
        const unsigned char *const *p = s.g[s.cur].p;
        const float *co = s.g[s.cur].c;
        int n = s.g[s.cur].n;
        for (int64_t b = 0; b < nblk; b++) {
            float *yb = y + b * FMT_QK;
            if ((size_t)b * bb % 64 < bb)          /* a new 64-byte line begins in this block */
                kern_prefetch_group(N, (size_t)b * bb + bb);
            __m256 y0 = _mm256_loadu_ps(yb), y1 = _mm256_loadu_ps(yb + 8), y2 = _mm256_loadu_ps(yb + 16),
                   y3 = _mm256_loadu_ps(yb + 24);
            float off = 0.0f;                      /* q4: -8 * sum of the scales, added once */
            for (int k = 0; k < n; k++) {
                const unsigned char *blk = p[k] + (size_t)b * bb;
                float s = co[k] * kern_scale(blk);
                __m256 sv = _mm256_set1_ps(s);
                if (q4) {
                    __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2)), m = _mm_set1_epi8(0x0f);
                    __m128i lo = _mm_and_si128(raw, m), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m);
                    y0 = _mm256_fmadd_ps(u8x8(lo), sv, y0);
                    y1 = _mm256_fmadd_ps(u8x8(_mm_srli_si128(lo, 8)), sv, y1);
                    y2 = _mm256_fmadd_ps(u8x8(hi), sv, y2);
                    y3 = _mm256_fmadd_ps(u8x8(_mm_srli_si128(hi, 8)), sv, y3);
                    off -= 8.0f * s;
                } else {
                    y0 = _mm256_fmadd_ps(i8x8(blk + 2), sv, y0);
                    y1 = _mm256_fmadd_ps(i8x8(blk + 10), sv, y1);
                    y2 = _mm256_fmadd_ps(i8x8(blk + 18), sv, y2);
                    y3 = _mm256_fmadd_ps(i8x8(blk + 26), sv, y3);
                }
            }
            __m256 ov = _mm256_set1_ps(off);
            _mm256_storeu_ps(yb, _mm256_add_ps(y0, ov));
            _mm256_storeu_ps(yb + 8, _mm256_add_ps(y1, ov));
            _mm256_storeu_ps(yb + 16, _mm256_add_ps(y2, ov));
            _mm256_storeu_ps(yb + 24, _mm256_add_ps(y3, ov));
        }
    }
}

KERN_AW_DRIVER(T, aw_q8, aw_q, 0)
KERN_AW_DRIVER(T, aw_q4, aw_q, 1)

T static void dequant_q8(const void *src, float *dst, int64_t nblk)
{
    const unsigned char *blk = src;
    for (int64_t b = 0; b < nblk; b++, blk += FMT_Q8_0_BYTES, dst += FMT_QK) {
        __m256 d = _mm256_set1_ps(kern_scale(blk));
        for (int i = 0; i < 4; i++)
            _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(i8x8(blk + 2 + 8 * i), d));
    }
}

T static void dequant_q4(const void *src, float *dst, int64_t nblk)
{
    const unsigned char *blk = src;
    const __m128i m = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    for (int64_t b = 0; b < nblk; b++, blk += FMT_Q4_0_BYTES, dst += FMT_QK) {
        __m256 d = _mm256_set1_ps(kern_scale(blk));
        __m128i raw = _mm_loadu_si128((const __m128i *)(blk + 2));
        __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m), eight), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m), eight);
        __m128i v[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int i = 0; i < 4; i++)
            _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v[i])), d));
    }
}

const kern_set kern_avx2 = {"avx2", xwt_f16, aw_f16, xwt_q8, xwt_q4, aw_q8, aw_q4, dequant_q8, dequant_q4};
#endif
