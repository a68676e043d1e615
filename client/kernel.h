/* kernel.h: the single-vector kernels (and the batch path's dequantizers)
 * behind client/weight_matrix.h, one set per instruction set
 * (kernel_portable.c, kernel_avx2.c, kernel_avx512.c),
 * picked at run time by weight_matrix.c from the CPU's features. Private to
 * the client: callers use weight_matrix.h.
 *
 * Every kernel is a plain function of its arguments (no state), so two
 * threads may run the same kernel on disjoint outputs at once.
 *
 * Quantized kernels see the activation vector as q8_0 blocks (kern_xq):
 * block b holds q[32b .. 32b+32) with scale d[b]. Integer block sums are
 * exact, so two kernel sets differ only in the order their float sums are
 * taken (weight_matrix.h states the tolerance). */
#ifndef INFLASH_KERNEL_H
#define INFLASH_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* An activation vector quantized to q8_0 blocks (quant_q8_0's blocks, split
 * into arrays). Lives in the caller's scratch for one product. */
typedef struct {
    const int8_t  *q;       /* [nblk * 32] the int8 values */
    const float   *d;       /* [nblk] block scales (the f16 scale as f32) */
    const int32_t *s8;      /* [nblk] -8 * sum of the block's q: a q4_0 nibble's offset, folded in */
    /* The same per pair of blocks (2p, 2p+1), p < nblk / 2, laid out for the
     * q4_0 kernels that take two blocks per 64-byte register: */
    const int8_t  *qp;      /* [nblk/2][64] q of 2p[0..16), 2p+1[0..16), 2p[16..32), 2p+1[16..32) */
    const float   *dp;      /* [nblk/2][8] d[2p] x4, d[2p+1] x4 */
    const int32_t *sp;      /* [nblk/2][16] s8[2p] in lane 0, s8[2p+1] in lane 4, 0 elsewhere */
} kern_xq;

/* W is `rows` rows; a row starts ldb bytes after the previous one.
 * f16 kernels: cols values per row; quantized kernels: nblk blocks per row. */
typedef struct {
    const char *name;       /* "portable", "avx2", "avx512" */
    /* out[r] = beta*out[r] + W[r] . x (beta 0 or 1); NULL: the BLAS path */
    void (*xwt_f16)(const void *w, size_t ldb, int64_t rows, int64_t cols, const float *x, float *out, float beta);
    /* y[c] += sum_r a[r] * W[r][c], rows with a[r] == 0 skipped; NULL: the BLAS path */
    void (*aw_f16)(const void *w, size_t ldb, int64_t rows, int64_t cols, const float *a, float *y);
    /* out[r] = beta*out[r] + sum_b dw[r][b] * x.d[b] * sum_i q[r][b][i] * x.q[b][i] */
    void (*xwt_q8)(const void *w, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta);
    void (*xwt_q4)(const void *w, size_t ldb, int64_t rows, int64_t nblk, const kern_xq *x, float *out, float beta);
    /* y[32b + i] += sum_r (a[r] * dw[r][b]) * q[r][b][i], rows with a[r] == 0 skipped */
    void (*aw_q8)(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y);
    void (*aw_q4)(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y);
    /* dst[0 .. 32 nblk) = the blocks at src in f32, exactly (q * d): rows for the batch path */
    void (*dequant_q8)(const void *src, float *dst, int64_t nblk);
    void (*dequant_q4)(const void *src, float *dst, int64_t nblk);
} kern_set;

extern const kern_set kern_portable;
#if defined(__x86_64__) && defined(__GNUC__)
#define KERN_X86 1
extern const kern_set kern_avx2;     /* needs AVX2, FMA, F16C */
extern const kern_set kern_avx512;   /* needs those and AVX-512 F, BW, VL, VNNI */
#endif

/* Rows gathered per pass over y by the aw kernels (several rows share one
 * load and store of each y vector). */
#define KERN_AW_ROWS 8

/* Software prefetch. Single-vector products over strided rows (bundles: a
 * row of d values, then two more rows of the bundle to skip) are short
 * streams that the hardware prefetcher picks up late; one thread reading
 * q4_0 up rows from DRAM went from 9 to 14 GB/s by prefetching ahead:
 *   - the 4-row xwt kernels prefetch the same bytes KERN_PF_ROWS rows on
 *     (the group after next) as they read;
 *   - the aw kernels gather the next group of rows (kern_group) before
 *     summing the current one and prefetch its blocks as they go. */
#define KERN_PF_ROWS 8

static inline void kern_prefetch(const void *p)
{
    __builtin_prefetch(p, 0, 3);
}

/* A group of rows for the aw kernels: the next up to KERN_AW_ROWS rows
 * with a non-zero coefficient. */
typedef struct {
    const unsigned char *p[KERN_AW_ROWS];   /* the rows' addresses */
    float c[KERN_AW_ROWS];                  /* their coefficients */
    int n;                                  /* rows (0: none left) */
} kern_group;

/* The next group from row *r on into g (g->n = 0: no rows left); advances
 * *r past it. */
static inline void kern_gather(const void *w, size_t ldb, int64_t rows, const float *a, int64_t *r, kern_group *g)
{
    g->n = 0;
    for (; *r < rows && g->n < KERN_AW_ROWS; ++*r)
        if (a[*r] != 0.0f) {
            g->p[g->n] = (const unsigned char *)w + (size_t)*r * ldb;
            g->c[g->n++] = a[*r];
        }
}

/* The aw kernels' walk over the groups: the current one (g[cur]) and the
 * one after it (g[cur ^ 1], gathered ahead to be prefetched). Loop:
 *   for (kern_walk_begin(&s, ...); kern_walk_more(&s, ...); s.cur ^= 1) */
typedef struct {
    kern_group g[2];    /* the current group and the next */
    int        cur;     /* index of the current group in g */
    int64_t    r;       /* the next row to gather from */
} kern_walk;

static inline void kern_walk_begin(kern_walk *s, const void *w, size_t ldb, int64_t rows, const float *a)
{
    s->cur = 0;
    s->r = 0;
    kern_gather(w, ldb, rows, a, &s->r, &s->g[0]);
}

/* 1 if the current group has rows (and the next one is gathered), 0 at the end. */
static inline int kern_walk_more(kern_walk *s, const void *w, size_t ldb, int64_t rows, const float *a)
{
    if (s->g[s->cur].n == 0)
        return 0;
    kern_gather(w, ldb, rows, a, &s->r, &s->g[s->cur ^ 1]);
    return 1;
}

/* Prefetch byte off of each row of g. */
static inline void kern_prefetch_group(const kern_group *g, size_t off)
{
    for (int k = 0; k < g->n; k++)
        kern_prefetch(g->p[k] + off);
}

/* The drivers both SIMD sets share, over the set's own always-inline row
 * functions: ROWS(w, ldb, R, q4, len, x, out, beta) takes R = 4 or 1 rows
 * (q4: 0 q8_0, 1 q4_0, ignored for f16), AWQ(w, ldb, q4, rows, nblk, a, y)
 * the down columns. ATTR is the set's target attribute. BB: the bytes of a
 * quantized block (0 for f16): quantized rows that lie back to back (ldb =
 * len * BB: attention, the head) go one at a time, one sequential stream
 * (measured: twice the DRAM throughput of four interleaved rows); strided
 * rows (bundles) and f16 go four at a time. */
#define KERN_XWT_DRIVER(ATTR, NAME, ROWS, XT, Q4, BB)                                                             \
    ATTR static void NAME(const void *wv, size_t ldb, int64_t rows, int64_t len, XT x, float *out, float beta) \
    {                                                                                                          \
        const unsigned char *w = wv;                                                                           \
        int64_t r = 0;                                                                                         \
        int group = (BB) == 0 || ldb != (size_t)len * (BB);                                                   \
        for (; group && r + 4 <= rows; r += 4)                                                                 \
            ROWS(w + (size_t)r * ldb, ldb, 4, Q4, len, x, out + r, beta);                                      \
        for (; r < rows; r++)                                                                                  \
            ROWS(w + (size_t)r * ldb, ldb, 1, Q4, len, x, out + r, beta);                                      \
    }
#define KERN_AW_DRIVER(ATTR, NAME, AWQ, Q4)                                                                       \
    ATTR static void NAME(const void *w, size_t ldb, int64_t rows, int64_t nblk, const float *a, float *y)     \
    {                                                                                                          \
        AWQ(w, ldb, Q4, rows, nblk, a, y);                                                                     \
    }

/* The f16 scale bits of a quantized block (little-endian, unaligned). */
static inline uint16_t kern_scale_bits(const unsigned char *block)
{
    return (uint16_t)(block[0] | block[1] << 8);
}

/* out = s (beta 0) or out + s (beta 1) */
static inline void kern_put(float *o, float s, float beta)
{
    *o = beta != 0.0f ? *o + s : s;
}

#ifdef KERN_X86
#include <immintrin.h>

/* Helpers of both SIMD sets (inlined into their kernels, whose targets
 * include these). */
__attribute__((target("avx,f16c"), always_inline)) static inline float kern_scale(const unsigned char *block)
{
    return _cvtsh_ss(kern_scale_bits(block));
}

__attribute__((target("avx,f16c"), always_inline)) static inline float kern_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#endif
