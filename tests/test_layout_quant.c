/* test_layout_quant.c: the q8_0 / q4_0 block codecs of layout/quant.c
 * (through fmt_from_f32 / fmt_to_f32, as the store writers use them)
 * against two oracles:
 *   - a transcription, written here, of ggml's quantize_row_q8_0_ref and
 *     quantize_row_q4_0_ref (ggml/src/ggml-quants.c), on random rows with
 *     the hard cases mixed in: whole zero blocks, several values sharing
 *     the largest magnitude with both signs (q4_0 takes the first), f32
 *     denormals beside normal values, exact rounding ties (x * id = k + 0.5
 *     for q8_0's roundf; the nibble boundaries of q4_0), scales that
 *     overflow f16 (huge values) or underflow it (tiny ones);
 *   - llama.cpp's own writer: the GGUF files in shared/models/gguf hold the
 *     same tensors in F32 and in Q8_0 / Q4_0 blocks from gguf-py; our
 *     blocks of the F32 rows must equal those byte for byte. The GGUF walk
 *     here (v3: header, key/value pairs skipped, tensor infos, aligned
 *     data) is the minimum for that and test-only.
 * Dequantization is checked against the spec (format.h section 1) and the
 * scales and first values in tiny-llama-*.bundlecheck.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "testutil.h"

#define QK     32
#define NBLK   64          /* blocks per random row */

/* ---- the oracle: ggml's reference quantizers, transcribed ------------------ */

/* GGML_FP32_TO_FP16: round to nearest even. The compiler's own conversion
 * where it has _Float16, so the oracle shares no code with format.c. */
static uint16_t ref_f16(float f)
{
#if defined(__FLT16_MAX__)
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
#else
    return fmt_f32_to_f16(f);
#endif
}

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
}

/* quantize_row_q8_0_ref: amax = max |x|; d = amax / 127; id = d ? 1/d : 0;
 * y.d = fp16(d); y.qs[j] = roundf(x[j] * id). */
static void ref_q8_0(const float *x, unsigned char *y, size_t n)
{
    for (size_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        unsigned char *yb = y + i * 34;
        float amax = 0.0f;
        for (int j = 0; j < QK; j++)
            amax = amax > fabsf(xb[j]) ? amax : fabsf(xb[j]);
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        put16(yb, ref_f16(d));
        for (int j = 0; j < QK; j++) {
            const float x0 = xb[j] * id;
            yb[2 + j] = (unsigned char)(int8_t)roundf(x0);
        }
    }
}

/* quantize_row_q4_0_ref: max = the first x of largest |x|; d = max / -8;
 * id = d ? 1/d : 0; y.d = fp16(d); nibble = MIN(15, (int8_t)(x * id + 8.5f));
 * value j in the low nibble of byte j, value j + 16 in its high nibble. */
static void ref_q4_0(const float *x, unsigned char *y, size_t n)
{
    for (size_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        unsigned char *yb = y + i * 18;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++) {
            const float v = xb[j];
            if (amax < fabsf(v)) {
                amax = fabsf(v);
                max = v;
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        put16(yb, ref_f16(d));
        for (int j = 0; j < QK / 2; j++) {
            const float x0 = xb[j] * id, x1 = xb[QK / 2 + j] * id;
            const int8_t a = (int8_t)(x0 + 8.5f), b = (int8_t)(x1 + 8.5f);
            const uint8_t xi0 = (uint8_t)(a < 15 ? a : 15), xi1 = (uint8_t)(b < 15 ? b : 15);
            yb[2 + j] = (unsigned char)(xi0 | xi1 << 4);
        }
    }
}

/* ---- rows with the hard cases -------------------------------------------------- */

static float unif(void) { return (float)((double)(tu_rng() >> 11) * 0x1.0p-53); }

static float f32_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Block b of a row, by kind (b % 10). Every block keeps 1/d finite, the
 * condition under which ggml's formula is defined. */
static void fill_block(float *x, int kind)
{
    float scale = ldexpf(1.0f, (int)tu_rng_below(24) - 12);
    for (int j = 0; j < QK; j++)
        x[j] = (2.0f * unif() - 1.0f) * scale;
    switch (kind) {
    case 0:                                 /* a whole zero block, some -0 */
        for (int j = 0; j < QK; j++)
            x[j] = j % 3 ? 0.0f : -0.0f;
        break;
    case 1: {                               /* the largest magnitude several times, both signs */
        float m = 1.5f * scale;
        int first = (int)tu_rng_below(QK);
        x[first] = tu_rng() & 1 ? m : -m;
        for (int k = 0; k < 4; k++)
            x[tu_rng_below(QK)] = tu_rng() & 1 ? m : -m;
        x[(first + 1 + tu_rng_below(QK - 1)) % QK] = -x[first];     /* both signs present */
        break;
    }
    case 2:                                 /* f32 denormals beside normal values */
        for (int j = 0; j < QK; j += 2)
            x[j] = f32_bits((uint32_t)tu_rng_below(0x7fffff) + 1) * (tu_rng() & 1 ? 1.0f : -1.0f);
        break;
    case 3: {                               /* q8_0 ties: amax = 127, so d = 1 and x * id = k + 0.5 */
        x[0] = 127.0f;
        for (int j = 1; j < QK; j++)
            x[j] = (float)((int)tu_rng_below(254) - 127) + 0.5f * (j & 1 ? 1.0f : -1.0f);
        for (int j = 1; j < QK; j++)
            x[j] = fmaxf(-127.0f, fminf(127.0f, x[j]));
        break;
    }
    case 4: {                               /* q4_0 boundaries: max = -8, d = 1, x + 8.5 integral */
        x[0] = -8.0f;
        for (int j = 1; j < QK; j++)
            x[j] = (float)((int)tu_rng_below(16) - 8) + (j & 1 ? 0.5f : -0.5f);
        for (int j = 1; j < QK; j++)
            x[j] = fmaxf(-7.5f, fminf(7.5f, x[j]));
        break;
    }
    case 5:                                 /* huge: the scale overflows f16 (max 65504) */
        for (int j = 0; j < QK; j++)
            x[j] = (2.0f * unif() - 1.0f) * 3.0e38f;
        x[5] = -FLT_MAX;
        break;
    case 6:                                 /* tiny: the scale underflows f16 (to 0 or a denormal) */
        for (int j = 0; j < QK; j++)
            x[j] = (2.0f * unif() - 1.0f) * (tu_rng() & 1 ? 1e-30f : 3e-7f);
        break;
    case 7:                                 /* one lone non-zero value */
        for (int j = 0; j < QK; j++)
            x[j] = 0.0f;
        x[tu_rng_below(QK)] = -scale;
        break;
    default:                                /* plain random */
        break;
    }
}

static void fill_row(float *x, size_t nblk)
{
    for (size_t b = 0; b < nblk; b++)
        fill_block(x + b * QK, (int)(b % 10));
}

/* ---- tests -------------------------------------------------------------------- */

static void check_against_ref(fmt_dtype t, void (*ref)(const float *, unsigned char *, size_t))
{
    size_t n = NBLK * QK, bytes = (size_t)fmt_bytes(t, n);
    float *x = malloc(n * sizeof *x);
    unsigned char *ours = malloc(bytes), *theirs = malloc(bytes);
    assert_non_null(x);
    assert_non_null(ours);
    assert_non_null(theirs);
    for (uint64_t seed = 1; seed <= 200; seed++) {
        tu_rng_seed(seed);
        fill_row(x, NBLK);
        fmt_from_f32(t, x, ours, n);
        ref(x, theirs, n);
        for (size_t b = 0; b < NBLK; b++) {
            size_t bb = (size_t)fmt_block_bytes(t);
            if (memcmp(ours + b * bb, theirs + b * bb, bb) != 0)
                fail_msg("%s: seed %llu block %zu (kind %zu) differs from the reference", fmt_dtype_name(t),
                         (unsigned long long)seed, b, b % 10);
        }
    }
    free(x);
    free(ours);
    free(theirs);
}

static void test_q8_0_ref(void **state)
{
    (void)state;
    check_against_ref(FMT_Q8_0, ref_q8_0);
}

static void test_q4_0_ref(void **state)
{
    (void)state;
    check_against_ref(FMT_Q4_0, ref_q4_0);
}

/* Hand-checked blocks: ties round away from zero (q8_0), the first of the
 * largest magnitude sets q4_0's sign, a zero block is all zero bytes. */
static void test_known_blocks(void **state)
{
    (void)state;
    float x[QK] = {0};
    unsigned char b[34];
    x[0] = 127.0f;
    x[1] = 2.5f;
    x[2] = -2.5f;
    x[3] = 0.5f;
    x[4] = -0.5f;
    fmt_from_f32(FMT_Q8_0, x, b, QK);
    assert_int_equal(b[0] | b[1] << 8, 0x3c00);           /* d = 1.0 */
    assert_int_equal((int8_t)b[2], 127);
    assert_int_equal((int8_t)b[3], 3);
    assert_int_equal((int8_t)b[4], -3);
    assert_int_equal((int8_t)b[5], 1);
    assert_int_equal((int8_t)b[6], -1);

    memset(x, 0, sizeof x);
    x[3] = 8.0f;                                          /* first of |8|: d = -1 */
    x[20] = -8.0f;
    x[17] = 0.5f;                                         /* -0.5 + 8.5 = 8 */
    fmt_from_f32(FMT_Q4_0, x, b, QK);
    assert_int_equal(b[0] | b[1] << 8, 0xbc00);           /* d = -1.0 */
    assert_int_equal(b[2 + 3] & 0x0f, 0);                 /* 8 * -1 + 8.5 = 0.5 -> 0 */
    assert_int_equal(b[2 + 4] >> 4, 15);                  /* -8 * -1 + 8.5 = 16.5 -> min(15, 16) */
    assert_int_equal(b[2 + 1] >> 4, 8);
    assert_int_equal(b[2 + 0] & 0x0f, 8);                 /* zeros are nibble 8 */

    memset(x, 0, sizeof x);
    fmt_from_f32(FMT_Q8_0, x, b, QK);
    for (int i = 0; i < 34; i++)
        assert_int_equal(b[i], 0);
}

/* Dequantization is the spec's formula on every byte value. */
static void test_dequant_spec(void **state)
{
    (void)state;
    unsigned char b8[34], b4[18];
    float y[QK];
    const uint16_t scales[] = {0x3c00, 0xb800, 0x0001, 0x7bff, 0x0000, 0x8400};
    for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
        float d = fmt_f16_to_f32(scales[s]);
        for (int base = 0; base < 256; base += QK) {
            put16(b8, scales[s]);
            for (int j = 0; j < QK; j++)
                b8[2 + j] = (unsigned char)(base + j);
            fmt_to_f32(FMT_Q8_0, b8, y, QK);
            for (int j = 0; j < QK; j++)
                assert_true(y[j] == (float)(int8_t)(base + j) * d);
        }
        for (int base = 0; base < 256; base += QK / 2) {
            put16(b4, scales[s]);
            for (int j = 0; j < QK / 2; j++)
                b4[2 + j] = (unsigned char)(base + j);
            fmt_to_f32(FMT_Q4_0, b4, y, QK);
            for (int j = 0; j < QK / 2; j++) {
                assert_true(y[j] == (float)(((base + j) & 15) - 8) * d);
                assert_true(y[j + QK / 2] == (float)(((base + j) >> 4) - 8) * d);
            }
        }
    }
}

/* ---- the GGUF oracle ------------------------------------------------------------ */

#define GGUF_F32  0
#define GGUF_Q4_0 2
#define GGUF_Q8_0 8

typedef struct {
    char     name[96];
    uint32_t ndim;
    uint64_t dims[4];       /* innermost first, as GGUF lists them */
    uint32_t type;
    uint64_t offset;        /* from the data section */
} gg_tensor;

typedef struct {
    unsigned char *buf;     /* the whole file */
    size_t         len;
    size_t         pos;     /* walk cursor */
    int            bad;     /* set when the walk ran past the end */
    gg_tensor     *t;
    uint64_t       nt;
    size_t         data;    /* offset of the data section */
} gg_file;

static uint64_t gg_u(gg_file *g, size_t n)
{
    if (g->pos + n > g->len) {
        g->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)g->buf[g->pos + i] << (8 * i);
    g->pos += n;
    return v;
}

/* Skip one value of GGUF type `type` (strings and arrays included). */
static void gg_skip(gg_file *g, uint32_t type)
{
    static const size_t size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) {
        g->pos += gg_u(g, 8);
    } else if (type == 9) {
        uint32_t et = (uint32_t)gg_u(g, 4);
        uint64_t n = gg_u(g, 8);
        for (uint64_t i = 0; i < n && !g->bad; i++)
            gg_skip(g, et);
    } else if (type < sizeof size / sizeof size[0]) {
        g->pos += size[type];
    } else {
        g->bad = 1;
    }
    if (g->pos > g->len)
        g->bad = 1;
}

/* Load path and walk it: 0, or -1 (missing or malformed). */
static int gg_open(gg_file *g, const char *path)
{
    memset(g, 0, sizeof *g);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    g->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    g->buf = malloc(g->len);
    if (!g->buf || fread(g->buf, 1, g->len, f) != g->len) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (g->len < 24 || memcmp(g->buf, "GGUF", 4) != 0)
        return -1;
    g->pos = 4;
    if (gg_u(g, 4) != 3)
        return -1;
    g->nt = gg_u(g, 8);
    uint64_t nkv = gg_u(g, 8), align = 32;
    for (uint64_t i = 0; i < nkv && !g->bad; i++) {
        uint64_t klen = gg_u(g, 8);
        int is_align = klen == 17 && g->pos + 17 <= g->len && memcmp(g->buf + g->pos, "general.alignment", 17) == 0;
        g->pos += klen;
        uint32_t type = (uint32_t)gg_u(g, 4);
        if (is_align && type == 4)
            align = gg_u(g, 4);
        else
            gg_skip(g, type);
    }
    g->t = calloc(g->nt ? g->nt : 1, sizeof *g->t);
    if (!g->t || g->nt > 4096)
        return -1;
    for (uint64_t i = 0; i < g->nt && !g->bad; i++) {
        gg_tensor *t = &g->t[i];
        uint64_t nl = gg_u(g, 8);
        if (nl >= sizeof t->name || g->pos + nl > g->len)
            return -1;
        memcpy(t->name, g->buf + g->pos, nl);
        g->pos += nl;
        t->ndim = (uint32_t)gg_u(g, 4);
        if (t->ndim > 4)
            return -1;
        for (uint32_t k = 0; k < t->ndim; k++)
            t->dims[k] = gg_u(g, 8);
        t->type = (uint32_t)gg_u(g, 4);
        t->offset = gg_u(g, 8);
    }
    g->data = (size_t)fmt_align_up(g->pos, align);
    return g->bad || g->data > g->len ? -1 : 0;
}

static void gg_close(gg_file *g)
{
    free(g->buf);
    free(g->t);
}

static const gg_tensor *gg_find(const gg_file *g, const char *name)
{
    for (uint64_t i = 0; i < g->nt; i++)
        if (strcmp(g->t[i].name, name) == 0)
            return &g->t[i];
    return NULL;
}

/* Every tensor that `qname` holds in blocks of t: our quantization of the
 * F32 file's rows equals them byte for byte. Returns how many tensors. */
static int compare_gguf(const char *dir, const char *model, const char *qname, fmt_dtype t, uint32_t gtype)
{
    char pf[512], pq[512];
    snprintf(pf, sizeof pf, "%s/%s-f32.gguf", dir, model);
    snprintf(pq, sizeof pq, "%s/%s-%s.gguf", dir, model, qname);
    gg_file f, q;
    assert_int_equal(gg_open(&f, pf), 0);
    assert_int_equal(gg_open(&q, pq), 0);
    int compared = 0;
    for (uint64_t i = 0; i < q.nt; i++) {
        const gg_tensor *tq = &q.t[i], *tf = gg_find(&f, tq->name);
        if (tq->type != gtype)
            continue;
        assert_non_null(tf);
        assert_int_equal(tf->type, GGUF_F32);
        uint64_t n = 1;
        for (uint32_t k = 0; k < tq->ndim; k++)
            n *= tq->dims[k];
        assert_int_equal(tq->dims[0] % QK, 0);
        uint64_t qb = fmt_bytes(t, n);
        assert_true(f.data + tf->offset + n * 4 <= f.len);
        assert_true(q.data + tq->offset + qb <= q.len);
        float *x = malloc((size_t)n * sizeof *x);
        unsigned char *ours = malloc((size_t)qb);
        assert_non_null(x);
        assert_non_null(ours);
        memcpy(x, f.buf + f.data + tf->offset, (size_t)n * 4);      /* little-endian host */
        /* row by row, as a store writes them (rows along dims[0]) */
        uint64_t row = tq->dims[0];
        for (uint64_t r = 0; r < n / row; r++)
            fmt_from_f32(t, x + r * row, ours + fmt_bytes(t, r * row), (size_t)row);
        if (memcmp(ours, q.buf + q.data + tq->offset, (size_t)qb) != 0)
            fail_msg("%s: %s differs from gguf-py's blocks", pq, tq->name);
        free(x);
        free(ours);
        compared++;
    }
    gg_close(&f);
    gg_close(&q);
    return compared;
}

static const char *gguf_dir(char *buf, size_t cap)
{
    const char *shared = getenv("INFLASH_SHARED");
    snprintf(buf, cap, "%s/models/gguf", shared ? shared : "../shared");
    return buf;
}

static void test_gguf_blocks(void **state)
{
    (void)state;
    char dir[512];
    gguf_dir(dir, sizeof dir);
    /* tiny-llama: every matrix quantized (7 per layer, 2 layers, embeddings, head) */
    assert_true(compare_gguf(dir, "tiny-llama", "q8_0", FMT_Q8_0, GGUF_Q8_0) >= 16);
    assert_true(compare_gguf(dir, "tiny-llama", "q4_0", FMT_Q4_0, GGUF_Q4_0) >= 16);
    assert_true(compare_gguf(dir, "stories260K", "q8_0", FMT_Q8_0, GGUF_Q8_0) >= 5);
    assert_true(compare_gguf(dir, "stories260K", "q4_0", FMT_Q4_0, GGUF_Q4_0) >= 5);
}

/* The n numbers of the JSON array after `key` inside the object `obj`. */
static void json_numbers(const char *text, const char *obj, const char *key, double *v, int n)
{
    const char *p = strstr(text, obj);
    assert_non_null(p);
    p = strstr(p, key);
    assert_non_null(p);
    p = strchr(p, '[');
    assert_non_null(p);
    for (int i = 0; i < n; i++) {
        char *end;
        v[i] = strtod(p + 1, &end);
        assert_true(end != p + 1);
        p = end;
    }
}

/* tiny-llama-*.bundlecheck.json, layer 0: gguf-py's dequantized values and
 * fp16 block scales of up row 0 (its first 8 values, block 0) and of the
 * down projection's column 0 (value 0 and block 0 of GGUF rows 0..7), from
 * our quantization of the F32 file's rows. */
static void test_bundlecheck(void **state)
{
    (void)state;
    char dir[512], path[600];
    gguf_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tiny-llama-f32.gguf", dir);
    gg_file f;
    assert_int_equal(gg_open(&f, path), 0);
    const gg_tensor *up = gg_find(&f, "blk.0.ffn_up.weight"), *down = gg_find(&f, "blk.0.ffn_down.weight");
    assert_non_null(up);
    assert_non_null(down);
    assert_int_equal(up->dims[0], 64);
    assert_int_equal(down->dims[0], 256);
    const float *upx = (const float *)(const void *)(f.buf + f.data + up->offset);
    const float *downx = (const float *)(const void *)(f.buf + f.data + down->offset);
    const struct {
        fmt_dtype t;
        const char *json;
    } files[] = {{FMT_Q8_0, "tiny-llama-q8_0.bundlecheck.json"}, {FMT_Q4_0, "tiny-llama-q4_0.bundlecheck.json"}};
    for (size_t k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k].json);
        FILE *jf = fopen(path, "r");
        assert_non_null(jf);
        char text[8192];
        size_t len = fread(text, 1, sizeof text - 1, jf);
        fclose(jf);
        text[len] = 0;
        double v[8], sc[8];
        float x[256], y[256];
        unsigned char b[8 * 34];
        json_numbers(text, "\"ffn_up\"", "\"values\"", v, 8);
        json_numbers(text, "\"ffn_up\"", "\"block0_scale_fp16_per_row\"", sc, 1);
        memcpy(x, upx, 64 * sizeof *x);
        fmt_from_f32(files[k].t, x, b, 64);
        fmt_to_f32(files[k].t, b, y, 64);
        for (int i = 0; i < 8; i++)
            if ((float)v[i] != y[i])
                fail_msg("%s: up row 0 value %d: ours %.9g, file %.9g", files[k].json, i, (double)y[i], v[i]);
        assert_true((float)sc[0] == fmt_f16_to_f32((uint16_t)(b[0] | b[1] << 8)));
        json_numbers(text, "\"ffn_down\"", "\"values\"", v, 8);
        json_numbers(text, "\"ffn_down\"", "\"block0_scale_fp16_per_row\"", sc, 8);
        for (int r = 0; r < 8; r++) {
            memcpy(x, downx + r * 256, 256 * sizeof *x);
            fmt_from_f32(files[k].t, x, b, 256);
            fmt_to_f32(files[k].t, b, y, 256);
            if ((float)v[r] != y[0] || (float)sc[r] != fmt_f16_to_f32((uint16_t)(b[0] | b[1] << 8)))
                fail_msg("%s: down row %d: ours %.9g, file %.9g", files[k].json, r, (double)y[0], v[r]);
        }
    }
    gg_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_ref),   cmocka_unit_test(test_q4_0_ref),     cmocka_unit_test(test_known_blocks),
        cmocka_unit_test(test_dequant_spec), cmocka_unit_test(test_gguf_blocks), cmocka_unit_test(test_bundlecheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
