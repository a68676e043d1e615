/* kbench.c: inflash-kbench, the kernels' limit: in one run, (a) the DRAM
 * read bandwidth (2 threads summing a buffer larger than the caches with
 * the widest loads, best of several passes and stream counts), (b) single-token products of a 7B-shaped layer stack
 * (attention 4096x4096 x4, FFN 11008 bundles of d 4096 with gate: one
 * token in one fused pass over the bundles, a batch as up and gate rows,
 * then down columns) for f16, q8_0 and q4_0 through
 * client/weight_matrix.h, as GB/s of weight bytes and as a ratio to the
 * bandwidth limit (weight bytes / bandwidth), and (c) the same layer's
 * products for a 128-token batch against cblas_sgemm on f32 weights of the
 * same shapes. Prints a table. */
#include <cblas.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "format.h"
#include "weight_matrix.h"

#define PROG         "inflash-kbench"
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
#define D            4096     /* d_model */
#define F            11008    /* d_ffn */
#define NATT         4        /* q, k, v, o */
#define BUNDLE       (3 * D)  /* up, gate, down: one bundle in values */

typedef struct {
    int64_t  layers;     /* --layers: weight copies per dtype (each > the L3 cache) */
    int64_t  reps;       /* --reps: timed repetitions, best of */
    int64_t  mib;        /* --mib: bandwidth buffer */
    int64_t  batch;      /* --batch: prefill tokens */
    int      verbose;    /* -v: per-product lines */
    const char *kernels; /* --kernels: a kernel set instead of the best */
} kb_opts;


/* splitmix64: the next of a seeded sequence */
static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- (a) DRAM read bandwidth ----------------------------------------------- */

/* A STREAM-like read: each of 2 threads reads its half of the buffer as
 * `streams` interleaved sequential streams (one per sub-part) with the
 * widest loads this CPU has (AVX-512, AVX2 or 64-bit words; target
 * attributes, chosen at run time) into independent accumulators. The
 * figure is the best over the read widths and stream counts, so that the
 * ratios below compare against what the memory really delivers. */
typedef struct {
    const uint64_t *p;   /* this thread's part */
    size_t          n;   /* its words (a multiple of 64 * streams) */
    int             streams; /* sequential streams within the part (1, 2 or 4) */
    int             width;   /* 512, 256 or 64: the load width in bits */
    uint64_t        sum; /* out: keeps the reads alive */
} bw_part;

#define BW_MAX_STREAMS 4

static uint64_t bw_read64(const uint64_t *const *s, int ns, size_t n)
{
    uint64_t a[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int j = 0; j < ns; j++)
            for (int k = 0; k < 8; k++)
                a[k] += s[j][i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define BW_X86 1

/* n words of each stream, 64 bytes (one line) per load and stream and step */
__attribute__((target("avx512f"))) static uint64_t bw_read512(const uint64_t *const *s, int ns, size_t n)
{
    __m512i a[BW_MAX_STREAMS][2];
    for (int j = 0; j < ns; j++)
        a[j][0] = a[j][1] = _mm512_setzero_si512();
    for (size_t i = 0; i < n; i += 16)
        for (int j = 0; j < ns; j++) {
            a[j][0] = _mm512_add_epi64(a[j][0], _mm512_load_si512((const void *)(s[j] + i)));
            a[j][1] = _mm512_add_epi64(a[j][1], _mm512_load_si512((const void *)(s[j] + i + 8)));
        }
    uint64_t t = 0;
    for (int j = 0; j < ns; j++)
        t += (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(a[j][0], a[j][1]));
    return t;
}

__attribute__((target("avx2"))) static uint64_t bw_read256(const uint64_t *const *s, int ns, size_t n)
{
    __m256i a[BW_MAX_STREAMS][2];
    for (int j = 0; j < ns; j++)
        a[j][0] = a[j][1] = _mm256_setzero_si256();
    for (size_t i = 0; i < n; i += 8)
        for (int j = 0; j < ns; j++) {
            a[j][0] = _mm256_add_epi64(a[j][0], _mm256_load_si256((const __m256i *)(s[j] + i)));
            a[j][1] = _mm256_add_epi64(a[j][1], _mm256_load_si256((const __m256i *)(s[j] + i + 4)));
        }
    uint64_t t = 0;
    for (int j = 0; j < ns; j++) {
        uint64_t v[4];
        _mm256_storeu_si256((__m256i *)v, _mm256_add_epi64(a[j][0], a[j][1]));
        t += v[0] + v[1] + v[2] + v[3];
    }
    return t;
}
#endif

static void *bw_sum(void *arg)
{
    bw_part *t = arg;
    size_t n = t->n / (size_t)t->streams;
    const uint64_t *s[BW_MAX_STREAMS];
    for (int j = 0; j < t->streams; j++)
        s[j] = t->p + (size_t)j * n;
#ifdef BW_X86
    if (t->width == 512)
        t->sum = bw_read512(s, t->streams, n);
    else if (t->width == 256)
        t->sum = bw_read256(s, t->streams, n);
    else
#endif
        t->sum = bw_read64(s, t->streams, n);
    return NULL;
}

/* The widest load this CPU has, in bits. */
static int bw_width(void)
{
#ifdef BW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 512;
    if (__builtin_cpu_supports("avx2"))
        return 256;
#endif
    return 64;
}

/* GB/s of 2 threads reading `bytes` of buf (64-byte aligned) with the
 * widest loads, best over 1, 2 and 4 streams per thread and reps passes
 * each; 0 on failure. */
static double bandwidth(const uint64_t *buf, size_t bytes, int64_t reps)
{
    double best = 0;
    size_t half = bytes / 16 / (64 * BW_MAX_STREAMS) * (64 * BW_MAX_STREAMS);   /* words per thread */
    int width = bw_width();
    for (int ns = 1; ns <= BW_MAX_STREAMS; ns *= 2)
        for (int64_t r = 0; r < reps; r++) {
            bw_part t[2] = {{buf, half, ns, width, 0}, {buf + half, half, ns, width, 0}};
            pthread_t th;
            double t0 = cli_now_s();
            if (pthread_create(&th, NULL, bw_sum, &t[1]) != 0)
                return 0;
            bw_sum(&t[0]);
            pthread_join(th, NULL);
            double gbs = (double)(16 * half) / (cli_now_s() - t0) / 1e9;
            if (gbs > best && t[0].sum + t[1].sum != 1)
                best = gbs;
        }
    return best;
}

/* ---- weights --------------------------------------------------------------------- */

/* n values of dtype dt with random contents of a sane range (speed does not
 * depend on them): f16 in +-[0.5, 1), quantized blocks with scale 1/128. */
static void fill_w(fmt_dtype dt, unsigned char *p, uint64_t n, uint64_t seed)
{
    uint64_t bytes = fmt_bytes(dt, n), s = seed;
    for (uint64_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = rnd(&s);
        memcpy(p + i, &v, 8);
    }
    if (dt == FMT_F16)
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            h = (uint16_t)((h & 0x83ffu) | 0x3800u);
            memcpy(p + 2 * i, &h, 2);
        }
    else if (fmt_is_quant(dt))
        for (uint64_t b = 0; b < n / FMT_QK; b++) {
            p[b * fmt_block_bytes(dt)] = 0x00;
            p[b * fmt_block_bytes(dt) + 1] = 0x20;   /* f16 2^-7 */
        }
}

/* One layer's weights in dtype dt: NATT attention matrices, F bundles. */
typedef struct {
    unsigned char *att[NATT];
    unsigned char *ffn;
} kb_layer;

static int layer_new(fmt_dtype dt, kb_layer *l, uint64_t seed)
{
    memset(l, 0, sizeof *l);
    for (int i = 0; i < NATT; i++) {
        l->att[i] = wm_alloc((size_t)fmt_bytes(dt, (uint64_t)D * D));   /* as the client's resident weights */
        if (!l->att[i])
            return -1;
        fill_w(dt, l->att[i], (uint64_t)D * D, seed + (uint64_t)i);
    }
    l->ffn = wm_alloc((size_t)fmt_bytes(dt, (uint64_t)F * BUNDLE));
    if (!l->ffn)
        return -1;
    fill_w(dt, l->ffn, (uint64_t)F * BUNDLE, seed + 7);
    return 0;
}

static void layer_free(kb_layer *l)
{
    for (int i = 0; i < NATT; i++)
        free(l->att[i]);
    free(l->ffn);
}

static uint64_t layer_bytes(fmt_dtype dt)
{
    return NATT * fmt_bytes(dt, (uint64_t)D * D) + fmt_bytes(dt, (uint64_t)F * BUNDLE);
}

/* The activations and outputs of n tokens. */
typedef struct {
    float *x, *q, *pre, *gpre, *act, *y, *scratch;
} kb_act;

/* One layer's products for n tokens as the client takes them; seconds per
 * part into t[2] (attention, FFN) when t is not NULL. One token: the fused
 * FFN (wm_ffn, SwiGLU; every activation term is non-zero, none skipped);
 * batches: up rows, gate rows, then the down columns. */
static void layer_run(fmt_dtype dt, const kb_layer *l, int64_t n, kb_act *a, double *t)
{
    const act_spec swiglu = {ACT_FN_SILU, 1, 0.0f};
    double t0 = cli_now_s();
    for (int i = 0; i < NATT; i++)
        wm_gemm_xwt(dt, l->att[i], D, D, D, a->x, n, a->q, D, 0.0f, a->scratch);
    double t1 = cli_now_s();
    if (n != 1 ||
        wm_ffn(dt, l->ffn, BUNDLE, F, D, swiglu, NULL, NULL, a->x, a->pre, a->gpre, a->act, a->y, a->scratch) != 0) {
        wm_gemm_xwt(dt, l->ffn, BUNDLE, F, D, a->x, n, a->pre, F, 0.0f, a->scratch);
        wm_gemm_xwt(dt, wm_at(dt, l->ffn, BUNDLE, 0, D), BUNDLE, F, D, a->x, n, a->gpre, F, 0.0f, a->scratch);
        wm_gemm_aw(dt, wm_at(dt, l->ffn, BUNDLE, 0, 2 * D), BUNDLE, F, D, a->act, F, n, a->y, a->scratch);
    }
    if (t) {
        t[0] += t1 - t0;
        t[1] += cli_now_s() - t1;
    }
}

static int act_new(kb_act *a, int64_t n)
{
    uint64_t s = 99;
    a->x = malloc(sizeof(float) * (size_t)(n * D));
    a->q = malloc(sizeof(float) * (size_t)(n * D));
    a->pre = malloc(sizeof(float) * (size_t)(n * F));
    a->gpre = malloc(sizeof(float) * (size_t)(n * F));
    a->act = malloc(sizeof(float) * (size_t)(n * F));
    a->y = calloc((size_t)(n * D), sizeof(float));
    a->scratch = malloc(sizeof(float) * (size_t)wm_scratch_floats(D));
    if (!a->x || !a->q || !a->pre || !a->gpre || !a->act || !a->y || !a->scratch)
        return -1;
    for (int64_t i = 0; i < n * D; i++)
        a->x[i] = (float)(rnd(&s) >> 40) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < n * F; i++)
        a->act[i] = (float)(rnd(&s) >> 40) / 16777216.0f + 0.01f;   /* dense: no zero skipped */
    return 0;
}

static void act_free(kb_act *a)
{
    free(a->x); free(a->q); free(a->pre); free(a->gpre); free(a->act); free(a->y); free(a->scratch);
}

/* ---- (b) single tokens, (c) batches --------------------------------------------- */

static const fmt_dtype dts[] = {FMT_F16, FMT_Q8_0, FMT_Q4_0};
#define N_DTS (sizeof dts / sizeof dts[0])

/* Seconds per token over o->layers layers of dt, best of o->reps; parts: the
 * best token's split. -1 if the weights do not fit. */
static double single_token(fmt_dtype dt, const kb_opts *o, kb_act *a, double parts[2])
{
    kb_layer *ls = calloc((size_t)o->layers, sizeof *ls);
    double best = -1;
    int ok = ls != NULL;
    for (int64_t i = 0; ok && i < o->layers; i++)
        ok = layer_new(dt, &ls[i], 1000 * (uint64_t)i + 1) == 0;
    for (int64_t r = 0; ok && r <= o->reps; r++) {   /* rep 0 warms up */
        double t[2] = {0, 0}, t0 = cli_now_s();
        for (int64_t i = 0; i < o->layers; i++)
            layer_run(dt, &ls[i], 1, a, t);
        double dt_s = cli_now_s() - t0;
        if (r > 0 && (best < 0 || dt_s < best)) {
            best = dt_s;
            memcpy(parts, t, sizeof t);
        }
    }
    for (int64_t i = 0; ls && i < o->layers; i++)
        layer_free(&ls[i]);
    free(ls);
    return best;
}

/* f32 sgemm on the layer's shapes (contiguous weights): seconds, best of reps */
static double sgemm_layer(const kb_opts *o, kb_act *a, int64_t n)
{
    float *wa = malloc(sizeof(float) * (size_t)D * D), *wf = malloc(sizeof(float) * (size_t)F * D);
    double best = -1;
    if (wa && wf) {
        memset(wa, 0, sizeof(float) * (size_t)D * D);
        memset(wf, 0, sizeof(float) * (size_t)F * D);
        for (int64_t r = 0; r <= o->reps; r++) {
            double t0 = cli_now_s();
            for (int i = 0; i < NATT; i++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, D, D, 1.0f, a->x, D, wa, D, 0.0f, a->q,
                            D);
            for (int i = 0; i < 2; i++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, F, D, 1.0f, a->x, D, wf, D, 0.0f,
                            a->pre, F);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, D, F, 1.0f, a->act, F, wf, D, 1.0f, a->y,
                        D);
            double s = cli_now_s() - t0;
            if (r > 0 && (best < 0 || s < best))
                best = s;
        }
    }
    free(wa);
    free(wf);
    return best;
}

static double batch_layer(fmt_dtype dt, const kb_opts *o, kb_act *a, int64_t n)
{
    kb_layer l;
    double best = -1;
    if (layer_new(dt, &l, 5) == 0)
        for (int64_t r = 0; r <= o->reps; r++) {
            double t0 = cli_now_s();
            layer_run(dt, &l, n, a, NULL);
            double s = cli_now_s() - t0;
            if (r > 0 && (best < 0 || s < best))
                best = s;
        }
    layer_free(&l);
    return best;
}

/* ---- the command line ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " [options]\n"
            "The kernels' limit on this machine, in one run: the DRAM read bandwidth,\n"
            "single-token products of a 7B-shaped layer stack (attention 4096x4096 x4,\n"
            "FFN 11008 bundles of 4096 with gate) for f16, q8_0 and q4_0 against the\n"
            "bandwidth limit, and a batch's products against OpenBLAS sgemm on f32.\n"
            "  --layers N    layers per dtype, buffers beyond the caches (default 2)\n"
            "  --reps N      timed repetitions, best of (default 5)\n"
            "  --mib N       bandwidth buffer in MiB (default 1024)\n"
            "  --batch N     batch tokens (default 128; 0 skips the batch table)\n"
            "  --kernels K   kernel set: avx512, avx2 or portable (default: the best)\n"
            "  -v            per-part times\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

static int parse_args(int argc, char **argv, kb_opts *o)
{
    enum { O_LAYERS = 256, O_REPS, O_MIB, O_BATCH, O_KERNELS };
    static const struct option lo[] = {{"layers", required_argument, 0, O_LAYERS},
                                       {"reps", required_argument, 0, O_REPS},
                                       {"mib", required_argument, 0, O_MIB},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"kernels", required_argument, 0, O_KERNELS},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    *o = (kb_opts){2, 5, 1024, 128, 0, NULL};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hv", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return 1;
        case 'v': o->verbose = 1; break;
        case O_LAYERS: bad = cli_parse_i64(optarg, 1, 64, &o->layers); break;
        case O_REPS: bad = cli_parse_i64(optarg, 1, 1000, &o->reps); break;
        case O_MIB: bad = cli_parse_i64(optarg, 64, 1 << 20, &o->mib); break;
        case O_BATCH: bad = cli_parse_i64(optarg, 0, 4096, &o->batch); break;
        case O_KERNELS: o->kernels = optarg; break;
        default:
            return cli_bad_option(PROG, c, argv);
        }
        if (bad) {
            fprintf(stderr, PROG ": bad value '%s' for %s\n", optarg, argv[optind - 2 >= 0 ? optind - 2 : 0]);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    kb_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    if (o.kernels && wm_use_kernels(o.kernels) != 0) {
        fprintf(stderr, PROG ": %s: no such kernel set on this CPU\n", o.kernels);
        return EXIT_USAGE;
    }
    int blas_threads = openblas_get_num_threads();
    size_t bw_bytes = (size_t)o.mib << 20;
    uint64_t *buf = wm_alloc(bw_bytes);   /* huge pages: the most the memory delivers */
    kb_act a1, ab;
    if (!buf || act_new(&a1, 1) != 0 || (o.batch > 0 && act_new(&ab, o.batch) != 0)) {
        fprintf(stderr, PROG ": out of memory\n");
        return EXIT_RUNTIME;
    }
    memset(buf, 1, bw_bytes);
    double bw = bandwidth(buf, bw_bytes, o.reps);
    free(buf);
    if (bw <= 0) {
        fprintf(stderr, PROG ": could not start a reader thread\n");
        return EXIT_RUNTIME;
    }
    printf("kernels %s, OpenBLAS %d threads, %" PRId64 " layers of 7B shapes, best of %" PRId64 "\n", wm_kernels(),
           blas_threads, o.layers, o.reps);
    printf("DRAM read bandwidth (2 threads, %d-bit loads, %" PRId64 " MiB): %.1f GB/s\n\n", bw_width(), o.mib, bw);
    printf("%-6s %12s %10s %10s %8s %8s\n", "single", "MB/layer", "ms/layer", "limit ms", "GB/s", "ratio");
    for (size_t d = 0; d < N_DTS; d++) {
        double parts[2] = {0, 0}, s = single_token(dts[d], &o, &a1, parts);
        if (s < 0) {
            fprintf(stderr, PROG ": out of memory for the %s weights\n", fmt_dtype_name(dts[d]));
            return EXIT_RUNTIME;
        }
        double bytes = (double)layer_bytes(dts[d]) * (double)o.layers, limit = bytes / (bw * 1e9);
        printf("%-6s %12.1f %10.2f %10.2f %8.1f %8.2f\n", fmt_dtype_name(dts[d]), bytes / (double)o.layers / 1e6,
               s * 1e3 / (double)o.layers, limit * 1e3 / (double)o.layers, bytes / s / 1e9, s / limit);
        if (o.verbose)
            printf("       GB/s attention %.1f, FFN %.1f\n",
                   (double)NATT * (double)fmt_bytes(dts[d], (uint64_t)D * D) * (double)o.layers / parts[0] / 1e9,
                   (double)fmt_bytes(dts[d], (uint64_t)F * BUNDLE) * (double)o.layers / parts[1] / 1e9);
    }
    if (o.batch > 0) {
        double flops = 2.0 * (double)o.batch * ((double)NATT * D * D + 3.0 * F * D);
        openblas_set_num_threads(blas_threads);
        double base = sgemm_layer(&o, &ab, o.batch);
        printf("\n%-6s %12s %10s %10s %8s\n", "batch", "tokens", "ms/layer", "GFLOP/s", "share");
        printf("%-6s %12" PRId64 " %10.1f %10.1f %8.2f\n", "sgemm", o.batch, base * 1e3, flops / base / 1e9, 1.0);
        for (size_t d = 0; d < N_DTS; d++) {
            double s = batch_layer(dts[d], &o, &ab, o.batch);
            printf("%-6s %12" PRId64 " %10.1f %10.1f %8.2f\n", fmt_dtype_name(dts[d]), o.batch, s * 1e3,
                   flops / s / 1e9, base / s);
        }
        act_free(&ab);
    }
    act_free(&a1);
    return 0;
}
