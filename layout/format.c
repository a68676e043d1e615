/* format.c: dtype names and sizes, the .bin header codec, and the f16 / bf16
 * <-> f32 conversions (round-to-nearest-even, exact for subnormals, inf and
 * NaN payloads) that the store format (format.h) relies on; the block
 * dtypes go to quant.c. */
#include "format.h"

#include <string.h>
#include <strings.h>

#include "quant.h"

/* One table of the dtypes: name, values and bytes per block. */
static const struct {
    const char *name;
    uint64_t    block_bytes;
    int         store;          /* may be a store's dtype */
} dtypes[FMT_NDTYPES] = {
    [FMT_F32]  = { "f32", 4, 1 },
    [FMT_F16]  = { "f16", 2, 1 },
    [FMT_BF16] = { "bf16", 2, 0 },
    [FMT_Q8_0] = { "q8_0", FMT_Q8_0_BYTES, 1 },
    [FMT_Q4_0] = { "q4_0", FMT_Q4_0_BYTES, 1 },
};

static int known(fmt_dtype t) { return (unsigned)t < FMT_NDTYPES; }

int fmt_dtype_parse(const char *name, fmt_dtype *out)
{
    static const struct { const char *name; fmt_dtype t; } names[] = {
        { "f32", FMT_F32 },  { "float32", FMT_F32 },  { "fp32", FMT_F32 },  { "float", FMT_F32 },
        { "f16", FMT_F16 },  { "float16", FMT_F16 },  { "fp16", FMT_F16 },  { "half", FMT_F16 },
        { "bf16", FMT_BF16 }, { "bfloat16", FMT_BF16 },
        { "q8_0", FMT_Q8_0 }, { "q4_0", FMT_Q4_0 },
    };
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].t;
            return 0;
        }
    return -1;
}

const char *fmt_dtype_name(fmt_dtype t)
{
    return known(t) ? dtypes[t].name : "?";
}

int fmt_is_store_dtype(fmt_dtype t)
{
    return known(t) && dtypes[t].store;
}

uint64_t fmt_block_bytes(fmt_dtype t)
{
    return known(t) ? dtypes[t].block_bytes : 0;
}

uint64_t fmt_bytes(fmt_dtype t, uint64_t n)
{
    uint64_t q = fmt_block_values(t), out;
    if (!known(t) || n % q != 0 || __builtin_mul_overflow(n / q, dtypes[t].block_bytes, &out))
        return UINT64_MAX;
    return out;
}

double fmt_bits_per_value(fmt_dtype t)
{
    return known(t) ? 8.0 * (double)dtypes[t].block_bytes / (double)fmt_block_values(t) : 0.0;
}

fmt_dtype fmt_tensor_dtype(fmt_dtype store, const char *name, int ndim)
{
    if (strncmp(name, "inflash.pred.", 13) == 0)
        return FMT_F32;
    if (fmt_is_quant(store) && ndim < 2)
        return FMT_F32;
    return store;
}

void fmt_header_encode(const fmt_header *h, unsigned char *buf)
{
    memset(buf, 0, IFL_HEADER_BYTES);
    memcpy(buf, IFL_MAGIC, sizeof IFL_MAGIC);
    fmt_put_le32(buf + 8, h->version);
    fmt_put_le32(buf + 12, h->kind);
    fmt_put_le64(buf + 16, h->file_bytes);
    fmt_put_le64(buf + 24, h->count);
}

int fmt_header_decode(const unsigned char *buf, size_t len, fmt_header *h)
{
    if (len < 32 || memcmp(buf, IFL_MAGIC, sizeof IFL_MAGIC) != 0)
        return -1;
    h->version = fmt_le32(buf + 8);
    h->kind = fmt_le32(buf + 12);
    h->file_bytes = fmt_le64(buf + 16);
    h->count = fmt_le64(buf + 24);
    return 0;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float fmt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;

    if (exp == 0x1f)                      /* inf / NaN: keep the payload */
        return bits_f32(sign | 0x7f800000u | man << 13);
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: normalise into an f32 normal */
        exp = 127 - 15 + 1;
        while (!(man & 0x400u)) {
            man <<= 1;
            exp--;
        }
        man &= 0x3ffu;
        return bits_f32(sign | exp << 23 | man << 13);
    }
    return bits_f32(sign | (exp + 127 - 15) << 23 | man << 13);
}

uint16_t fmt_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t exp = (u >> 23) & 0xffu;
    uint32_t man = u & 0x7fffffu;

    if (exp == 0xff) {                    /* inf / NaN */
        uint16_t m = (uint16_t)(man >> 13);
        if (man && !m)
            m = 0x200;                    /* NaN whose payload is all low bits */
        return sign | 0x7c00u | m;
    }
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 0x1f)                        /* overflow -> inf */
        return sign | 0x7c00u;
    if (e <= 0) {                         /* f16 subnormal or zero */
        if (e < -10)
            return sign;                  /* below half the smallest subnormal */
        man |= 0x800000u;                 /* implicit bit */
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return sign | (uint16_t)q;        /* q may carry into the exponent: correct */
    }
    uint32_t q = (uint32_t)e << 10 | man >> 13;
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1)))
        q++;                              /* carry may reach inf: correct */
    return sign | (uint16_t)q;
}

float fmt_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

/* f16 -> f32 of n values at p (little-endian), the hot path of every f16
 * store read: hardware conversion where the CPU has it (x86-64 F16C, checked
 * at run time; AArch64 always), else the exact scalar conversion. All paths
 * give identical results (f16 -> f32 is exact). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
__attribute__((target("avx,f16c")))
static size_t f16_to_f32_f16c(const unsigned char *p, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(p + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    return i;
}
static size_t f16_to_f32_hw(const unsigned char *p, float *dst, size_t n)
{
    static int have_cache = -1;     /* -1 unknown; every thread computes the
                                       same value, stored atomically */
    int have = __atomic_load_n(&have_cache, __ATOMIC_RELAXED);
    if (have < 0) {                 /* clang 14 knows no "f16c" feature name: ask CPUID */
        unsigned a, b, c, d;
        have = __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        __atomic_store_n(&have_cache, have, __ATOMIC_RELAXED);
    }
    return have ? f16_to_f32_f16c(p, dst, n) : 0;
}
#elif defined(__aarch64__) && defined(__GNUC__)
static size_t f16_to_f32_hw(const unsigned char *p, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        __fp16 h;
        memcpy(&h, p + 2 * i, 2);
        dst[i] = (float)h;
    }
    return n;
}
#else
static size_t f16_to_f32_hw(const unsigned char *p, float *dst, size_t n)
{
    (void)p; (void)dst; (void)n;
    return 0;
}
#endif

void fmt_to_f32(fmt_dtype t, const void *src, float *dst, size_t n)
{
    const unsigned char *p = src;
    switch (t) {
    case FMT_F32:
        for (size_t i = 0; i < n; i++)
            dst[i] = bits_f32(fmt_le32(p + 4 * i));
        break;
    case FMT_F16: {
        size_t i = f16_to_f32_hw(p, dst, n);
        for (; i < n; i++)
            dst[i] = fmt_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    }
    case FMT_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = fmt_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case FMT_Q8_0:
        dequant_q8_0(src, dst, n);
        break;
    case FMT_Q4_0:
        dequant_q4_0(src, dst, n);
        break;
    }
}

void fmt_from_f32(fmt_dtype t, const float *src, void *dst, size_t n)
{
    unsigned char *p = dst;
    switch (t) {
    case FMT_F32:
        for (size_t i = 0; i < n; i++)
            fmt_put_le32(p + 4 * i, f32_bits(src[i]));
        break;
    case FMT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = fmt_f32_to_f16(src[i]);
            p[2 * i] = (unsigned char)h;
            p[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    case FMT_BF16:                        /* round-to-nearest-even, NaN kept quiet */
        for (size_t i = 0; i < n; i++) {
            uint32_t u = f32_bits(src[i]);
            uint16_t h;
            if ((u & 0x7fffffffu) > 0x7f800000u)
                h = (uint16_t)(u >> 16 | 0x40u);
            else
                h = (uint16_t)((u + 0x7fffu + (u >> 16 & 1)) >> 16);
            p[2 * i] = (unsigned char)h;
            p[2 * i + 1] = (unsigned char)(h >> 8);
        }
        break;
    case FMT_Q8_0:
        quant_q8_0(src, dst, n);
        break;
    case FMT_Q4_0:
        quant_q4_0(src, dst, n);
        break;
    }
}
