/* test_layout_format.c: dtype helpers, f16/bf16 <-> f32 conversions
 * (exhaustive over f16 bit patterns, round-to-nearest-even at every
 * midpoint) and the .bin header codec of layout/format.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void test_dtype_names(void **state)
{
    (void)state;
    fmt_dtype t;
    assert_int_equal(fmt_dtype_parse("f32", &t), 0);
    assert_int_equal(t, FMT_F32);
    assert_int_equal(fmt_dtype_parse("F16", &t), 0);
    assert_int_equal(t, FMT_F16);
    assert_int_equal(fmt_dtype_parse("float16", &t), 0);
    assert_int_equal(t, FMT_F16);
    assert_int_equal(fmt_dtype_parse("BF16", &t), 0);
    assert_int_equal(t, FMT_BF16);
    assert_int_equal(fmt_dtype_parse("i8", &t), -1);
    assert_int_equal(fmt_dtype_parse("", &t), -1);
    assert_string_equal(fmt_dtype_name(FMT_F32), "f32");
    assert_string_equal(fmt_dtype_name(FMT_F16), "f16");
    assert_string_equal(fmt_dtype_name(FMT_BF16), "bf16");
    assert_string_equal(fmt_dtype_name(FMT_Q8_0), "q8_0");
    assert_string_equal(fmt_dtype_name(FMT_Q4_0), "q4_0");
    assert_int_equal(fmt_dtype_parse("Q4_0", &t), 0);
    assert_int_equal(t, FMT_Q4_0);
    assert_int_equal(fmt_block_bytes(FMT_F32), 4);
    assert_int_equal(fmt_block_bytes(FMT_F16), 2);
    assert_int_equal(fmt_block_bytes(FMT_BF16), 2);
    assert_int_equal(fmt_block_bytes(FMT_Q8_0), 34);
    assert_int_equal(fmt_block_bytes(FMT_Q4_0), 18);
    assert_true(fmt_bytes(FMT_F16, 3) == 6);
    assert_true(fmt_bytes(FMT_Q8_0, 4096) == 4352);
    assert_true(fmt_bytes(FMT_Q4_0, 2 * 4096) == 4608);       /* an opt-6.7b q4_0 bundle */
    assert_true(fmt_bytes(FMT_Q4_0, 33) == UINT64_MAX);        /* not whole blocks */
    assert_true(fmt_bytes(FMT_F32, UINT64_MAX / 2) == UINT64_MAX);
    assert_true(fmt_bits_per_value(FMT_Q4_0) == 4.5);
    assert_true(fmt_is_store_dtype(FMT_Q8_0) && !fmt_is_store_dtype(FMT_BF16));
    assert_int_equal(fmt_tensor_dtype(FMT_Q4_0, "model.norm.weight", 1), FMT_F32);
    assert_int_equal(fmt_tensor_dtype(FMT_Q4_0, "lm_head.weight", 2), FMT_Q4_0);
    assert_int_equal(fmt_tensor_dtype(FMT_Q4_0, "inflash.pred.0.A", 2), FMT_F32);
    assert_int_equal(fmt_tensor_dtype(FMT_F16, "model.norm.weight", 1), FMT_F16);
}

static void test_f16_known_values(void **state)
{
    (void)state;
    assert_true(fmt_f16_to_f32(0x3c00) == 1.0f);
    assert_true(fmt_f16_to_f32(0xc000) == -2.0f);
    assert_true(fmt_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(fmt_f16_to_f32(0x0001) == ldexpf(1, -24));      /* smallest subnormal */
    assert_true(fmt_f16_to_f32(0x03ff) == ldexpf(1023, -24));   /* largest subnormal */
    assert_true(fmt_f16_to_f32(0x0400) == ldexpf(1, -14));      /* smallest normal */
    assert_true(isinf(fmt_f16_to_f32(0x7c00)) && fmt_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(fmt_f16_to_f32(0xfc00)) && fmt_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(fmt_f16_to_f32(0x7e00)));
    assert_int_equal(bits(fmt_f16_to_f32(0x8000)), 0x80000000u);  /* -0 */

    assert_int_equal(fmt_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(fmt_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(fmt_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(fmt_f32_to_f16(65519.0f), 0x7bff);      /* below the midpoint */
    assert_int_equal(fmt_f32_to_f16(65520.0f), 0x7c00);      /* midpoint, ties to even = inf */
    assert_int_equal(fmt_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(fmt_f32_to_f16(-INFINITY), 0xfc00);
    assert_true((fmt_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (fmt_f32_to_f16(NAN) & 0x3ff));
    assert_int_equal(fmt_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);      /* tie -> even (down) */
    assert_int_equal(fmt_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);  /* tie -> even (up) */
    assert_int_equal(fmt_f32_to_f16(ldexpf(1, -25)), 0x0000);             /* half the smallest: even 0 */
    assert_int_equal(fmt_f32_to_f16(ldexpf(3, -25)), 0x0002);             /* 1.5 subnormals -> 2 */
    assert_int_equal(fmt_f32_to_f16(ldexpf(1, -26)), 0x0000);
    assert_int_equal(fmt_f32_to_f16(ldexpf(2047, -25)), 0x0400);          /* rounds up into the normals */
    assert_int_equal(fmt_f32_to_f16(ldexpf(1, -130)), 0x0000);            /* f32 subnormal */
    /* a NaN whose payload sits only in the low f32 bits stays a NaN */
    uint32_t u = 0x7f800001u;
    float f;
    memcpy(&f, &u, sizeof f);
    assert_true((fmt_f32_to_f16(f) & 0x7c00) == 0x7c00 && (fmt_f32_to_f16(f) & 0x3ff));
}

/* Every f16 pattern survives f16 -> f32 -> f16 (NaNs stay NaNs of the same sign). */
static void test_f16_round_trip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fmt_f16_to_f32((uint16_t)h);
        uint16_t back = fmt_f32_to_f16(f);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else {
            assert_int_equal(back, h);
        }
    }
}

/* At every midpoint between neighbouring finite f16 values: ties to even,
 * and one f32 ulp either side goes to the nearer neighbour. */
static void test_f16_rounding_midpoints(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        for (int sign = 0; sign < 2; sign++) {
            uint16_t a = (uint16_t)(h | (sign ? 0x8000u : 0)), b = (uint16_t)(a + 1);
            float fa = fmt_f16_to_f32(a), fb = fmt_f16_to_f32(b);
            float mid = (fa + fb) / 2;                   /* exact in f32 */
            assert_true(mid != fa && mid != fb);
            uint16_t even = (a & 1) ? b : a;
            assert_int_equal(fmt_f32_to_f16(mid), even);
            assert_int_equal(fmt_f32_to_f16(nextafterf(mid, fa)), a);
            assert_int_equal(fmt_f32_to_f16(nextafterf(mid, fb)), b);
        }
    }
}

static void test_bf16_and_arrays(void **state)
{
    (void)state;
    assert_true(fmt_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(fmt_bf16_to_f32(0xc2f7) == -123.5f);
    float src[5] = { 1.0f, -2.5f, 0.0f, 65504.0f, ldexpf(1, -24) };
    unsigned char le16[10], le32[20];
    float back[5];
    fmt_from_f32(FMT_F16, src, le16, 5);
    assert_int_equal(le16[0], 0x00);                 /* 1.0 = 0x3c00, little-endian */
    assert_int_equal(le16[1], 0x3c);
    fmt_to_f32(FMT_F16, le16, back, 5);
    assert_memory_equal(back, src, sizeof src);
    fmt_from_f32(FMT_F32, src, le32, 5);
    assert_int_equal(le32[3], 0x3f);                 /* 1.0 = 0x3f800000 */
    assert_int_equal(le32[2], 0x80);
    fmt_to_f32(FMT_F32, le32, back, 5);
    assert_memory_equal(back, src, sizeof src);
    unsigned char lebf[2] = { 0x80, 0x3f };
    fmt_to_f32(FMT_BF16, lebf, back, 1);
    assert_true(back[0] == 1.0f);
}

/* The bulk conversion (hardware path where the CPU has one) agrees with the
 * scalar one on every f16 bit pattern, at every offset into the array. */
static void test_f16_bulk_matches_scalar(void **state)
{
    (void)state;
    enum { N = 65536 + 7 };
    unsigned char *raw = malloc(2 * (size_t)N);
    float *out = malloc(sizeof(float) * (size_t)N);
    assert_non_null(raw);
    assert_non_null(out);
    for (size_t i = 0; i < N; i++) {
        uint16_t h = (uint16_t)(i & 0xffff);
        raw[2 * i] = (unsigned char)h;
        raw[2 * i + 1] = (unsigned char)(h >> 8);
    }
    for (size_t start = 0; start < 8; start++) {
        fmt_to_f32(FMT_F16, raw + 2 * start, out, N - start);
        for (size_t i = 0; i < N - start; i++) {
            float want = fmt_f16_to_f32((uint16_t)((i + start) & 0xffff));
            if (isnan(want))
                assert_true(isnan(out[i]));
            else
                assert_int_equal(bits(out[i]), bits(want));
        }
    }
    free(raw);
    free(out);
}

static void test_header_codec(void **state)
{
    (void)state;
    unsigned char buf[IFL_HEADER_BYTES];
    fmt_header h = { IFL_VERSION, IFL_KIND_FFN, 0x123456789abcull, 42 }, d;
    memset(buf, 0xee, sizeof buf);
    fmt_header_encode(&h, buf);
    assert_memory_equal(buf, "INFLASH\0", 8);
    assert_int_equal(fmt_le32(buf + 8), IFL_VERSION);
    assert_int_equal(fmt_le32(buf + 12), IFL_KIND_FFN);
    assert_int_equal(fmt_le64(buf + 16), 0x123456789abcull);
    assert_int_equal(fmt_le64(buf + 24), 42);
    for (size_t i = 32; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0);
    assert_int_equal(fmt_header_decode(buf, sizeof buf, &d), 0);
    assert_int_equal(d.version, h.version);
    assert_int_equal(d.kind, h.kind);
    assert_int_equal(d.file_bytes, h.file_bytes);
    assert_int_equal(d.count, h.count);
    assert_int_equal(fmt_header_decode(buf, 31, &d), -1);     /* too short */
    buf[0] = 'X';
    assert_int_equal(fmt_header_decode(buf, sizeof buf, &d), -1);
    assert_int_equal(fmt_align_up(4097, 4096), 8192);
    assert_int_equal(fmt_align_up(4096, 4096), 4096);
    assert_int_equal(fmt_align_up(0, 64), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_f16_round_trip_all),
        cmocka_unit_test(test_f16_rounding_midpoints),
        cmocka_unit_test(test_bf16_and_arrays),
        cmocka_unit_test(test_f16_bulk_matches_scalar),
        cmocka_unit_test(test_header_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
