/* test_layout_safetensors.c: the checked safetensors reader on small files
 * this test writes itself: a valid file and a sharded set read back, and
 * every kind of damage (truncation, header length past the end, bad JSON,
 * overlapping or out-of-range offsets, wrong shapes, unknown dtypes) giving
 * its own clear error; plus random header mutations that must never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "io.h"
#include "safetensors.h"
#include "testutil.h"

static char g_dir[] = "/tmp/test_layout_st.XXXXXX";

/* Write a safetensors file: 8-byte length, the JSON header padded with
 * spaces to a multiple of 8, then data. hlen_override != 0 replaces the
 * length field. */
static void write_st(const char *path, const char *json, const void *data, size_t data_len, uint64_t hlen_override)
{
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    unsigned char lenbuf[8];
    fmt_put_le64(lenbuf, hlen_override ? hlen_override : padded);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(lenbuf, 1, 8, f);
    fwrite(json, 1, jl, f);
    for (size_t i = jl; i < padded; i++)
        fputc(' ', f);
    if (data_len)
        fwrite(data, 1, data_len, f);
    fclose(f);
}

static char *path_of(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", g_dir, name);
    return buf;
}

/* Open the file and expect an error whose message contains every needle. */
static void expect_error(const char *path, const char *needle1, const char *needle2)
{
    st_set *set = NULL;
    ierr err = IERR_INIT;
    int rc = st_open_file(path, &set, &err);
    if (rc == 0 || !strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("expected an error with \"%s\"/\"%s\", got rc %d: %s", needle1, needle2 ? needle2 : "", rc,
                 err.msg);
    assert_null(set);
    assert_non_null(strstr(err.msg, path));          /* names the file */
    assert_null(strchr(err.msg, '\n'));             /* one line */
}

static const float g_a[6] = { 1, -2, 3.5f, 0, 1e-3f, -7 };

static void test_valid_file(void **state)
{
    (void)state;
    unsigned char data[24 + 8 + 4];
    memcpy(data, g_a, 24);                            /* host is little-endian */
    uint16_t h[4] = { 0x3c00, 0xc000, 0x0001, 0x7bff };
    memcpy(data + 24, h, 8);
    uint16_t bf[2] = { 0x3f80, 0xc2f7 };
    memcpy(data + 32, bf, 4);
    write_st(path_of("ok.safetensors"),
             "{\"__metadata__\":{\"format\":\"pt\"},"
             "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]},"
             "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[36,36]},"
             "\"scalar\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[0,2]}}",
             data, sizeof data, 0);
    /* "scalar" overlaps "a": remove it by writing the file again without it */
    expect_error(path_of("ok.safetensors"), "overlap", NULL);
    write_st(path_of("ok.safetensors"),
             "{\"__metadata__\":{\"format\":\"pt\"},"
             "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
             "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]},"
             "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[36,36]}}",
             data, sizeof data, 0);
    st_set *set;
    ierr err = IERR_INIT;
    int rc = st_open_file(path_of("ok.safetensors"), &set, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(st_count(set), 4);
    assert_string_equal(st_at(set, 0)->name, "a");   /* name order */
    assert_string_equal(st_at(set, 3)->name, "empty");
    assert_null(st_find(set, "__metadata__"));
    assert_null(st_find(set, "zzz"));
    const st_tensor *a = st_find(set, "a"), *b = st_find(set, "b"), *c = st_find(set, "c");
    assert_non_null(a);
    assert_int_equal(a->dtype, FMT_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(st_numel(a), 6);
    assert_int_equal(a->bytes, 24);
    assert_int_equal(a->offset % 8, 0);
    float f[6];
    assert_int_equal(st_read_f32(set, a, 0, f, 6, &err), 0);
    assert_memory_equal(f, g_a, sizeof g_a);
    assert_int_equal(st_read_f32(set, a, 4, f, 2, &err), 0);
    assert_true(f[0] == 1e-3f && f[1] == -7);
    assert_int_equal(st_read_f32(set, b, 0, f, 4, &err), 0);
    assert_true(f[0] == 1 && f[1] == -2 && f[3] == 65504);
    assert_int_equal(st_read_f32(set, c, 0, f, 2, &err), 0);
    assert_true(f[0] == 1 && f[1] == -123.5f);
    unsigned char raw[8];
    assert_int_equal(st_read_raw(set, b, 0, raw, 8, &err), 0);
    assert_memory_equal(raw, h, 8);
    /* reads outside the tensor are errors, not crashes */
    assert_int_not_equal(st_read_raw(set, b, 4, raw, 8, &err), 0);
    assert_non_null(strstr(err.msg, "outside"));
    assert_int_not_equal(st_read_f32(set, a, 5, f, 2, &err), 0);
    st_close(set);
}

static void test_truncated(void **state)
{
    (void)state;
    FILE *f = fopen(path_of("short.safetensors"), "wb");
    fwrite("\x10\x00\x00", 1, 3, f);
    fclose(f);
    expect_error(path_of("short.safetensors"), "truncated", NULL);
    /* a valid header whose data was cut off */
    write_st(path_of("cut.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
             g_a, 12, 0);
    expect_error(path_of("cut.safetensors"), "past the end of the data", "\"a\"");
    expect_error(path_of("missing.safetensors"), "No such file", NULL);
}

static void test_header_length_past_end(void **state)
{
    (void)state;
    write_st(path_of("hlen.safetensors"), "{}", NULL, 0, 1000);
    expect_error(path_of("hlen.safetensors"), "header length 1000 is past the end", NULL);
    write_st(path_of("hlen2.safetensors"), "{}", NULL, 0, UINT64_MAX);
    expect_error(path_of("hlen2.safetensors"), "past the end", NULL);
}

static void test_invalid_json(void **state)
{
    (void)state;
    write_st(path_of("json.safetensors"), "{\"a\":{\"dtype\":\"F32\",", NULL, 0, 0);
    expect_error(path_of("json.safetensors"), "invalid JSON", NULL);
    write_st(path_of("arr.safetensors"), "[1,2]", NULL, 0, 0);
    expect_error(path_of("arr.safetensors"), "not a JSON object", NULL);
    write_st(path_of("ent.safetensors"), "{\"a\":5}", NULL, 0, 0);
    expect_error(path_of("ent.safetensors"), "not an object", "\"a\"");
    write_st(path_of("dup.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", g_a, 8, 0);
    expect_error(path_of("dup.safetensors"), "duplicate", NULL);
}

static void test_overlap(void **state)
{
    (void)state;
    write_st(path_of("ovl.safetensors"),
             "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
             "\"y\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}", g_a, 24, 0);
    expect_error(path_of("ovl.safetensors"), "overlap", "\"x\"");
}

static void test_out_of_range(void **state)
{
    (void)state;
    write_st(path_of("oor.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]}}", g_a,
             24, 0);
    expect_error(path_of("oor.safetensors"), "past the end of the data", "\"x\"");
    write_st(path_of("rev.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", g_a,
             24, 0);
    expect_error(path_of("rev.safetensors"), "bad data_offsets", "\"x\"");
    write_st(path_of("neg.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", g_a,
             24, 0);
    expect_error(path_of("neg.safetensors"), "bad data_offsets", "\"x\"");
    write_st(path_of("noofs.safetensors"), "{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", g_a, 24, 0);
    expect_error(path_of("noofs.safetensors"), "data_offsets", "\"x\"");
}

static void test_wrong_shape(void **state)
{
    (void)state;
    write_st(path_of("shape.safetensors"), "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,24]}}",
             g_a, 24, 0);
    expect_error(path_of("shape.safetensors"), "shape and dtype need", "\"w\"");
    write_st(path_of("negdim.safetensors"), "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,6],\"data_offsets\":[0,24]}}",
             g_a, 24, 0);
    expect_error(path_of("negdim.safetensors"), "non-negative", "\"w\"");
    write_st(path_of("huge.safetensors"),
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,24]}}", g_a, 24, 0);
    expect_error(path_of("huge.safetensors"), "too many", "\"w\"");
    write_st(path_of("dims.safetensors"),
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", g_a, 24, 0);
    expect_error(path_of("dims.safetensors"), "at most", "\"w\"");
}

static void test_unknown_dtype(void **state)
{
    (void)state;
    write_st(path_of("i8.safetensors"), "{\"q\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", g_a, 24,
             0);
    expect_error(path_of("i8.safetensors"), "unsupported dtype \"I8\"", "\"q\"");
}

/* A sharded directory: index + two shards; then a weight_map that lies. */
static void test_sharded_dir(void **state)
{
    (void)state;
    char dir[300], p[400];
    snprintf(dir, sizeof dir, "%s/sharded", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", g_a, 8, 0);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", g_a + 2, 12, 0);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"metadata\":{},\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
          "\"b\":\"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    st_set *set;
    ierr err = IERR_INIT;
    int rc = st_open_dir(dir, &set, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(st_count(set), 2);
    const st_tensor *b = st_find(set, "b");
    assert_int_equal(b->shard, 1);
    float v[3];
    assert_int_equal(st_read_f32(set, b, 0, v, 3, &err), 0);
    assert_memory_equal(v, g_a + 2, 12);
    st_close(set);

    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
          "\"b\":\"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    assert_int_not_equal(st_open_dir(dir, &set, &err), 0);
    assert_non_null(strstr(err.msg, "\"a\""));
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"a\":\"../../etc/passwd\"}}", f);
    fclose(f);
    assert_int_not_equal(st_open_dir(dir, &set, &err), 0);
    assert_non_null(strstr(err.msg, "bad shard file name"));

    assert_int_not_equal(st_open_dir(g_dir, &set, &err), 0);   /* neither file */
    assert_non_null(strstr(err.msg, "no model.safetensors"));
}

/* Random damage to a valid header: an error or a consistent set, never a crash. */
static void test_mutations(void **state)
{
    (void)state;
    const char *good = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]}}";
    size_t n = strlen(good);
    char *buf = malloc(n);
    static const char alphabet[] = "{}[]\":,0123456789-eE.FBI6 \\u\x01\xff";
    srand(12345);
    /* st_parse_header works on a set: take an empty one from a valid empty file */
    write_st(path_of("empty.safetensors"), "{}", NULL, 0, 0);
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, good, n);
        int k = 1 + rand() % 4;
        for (int i = 0; i < k; i++)
            buf[rand() % n] = alphabet[rand() % (sizeof alphabet - 1)];
        size_t len = n - (size_t)(rand() % 3 == 0 ? rand() % n : 0);
        st_set *set = NULL;
        ierr err = IERR_INIT;
        assert_int_equal(st_open_file(path_of("empty.safetensors"), &set, &err), 0);
        uint64_t file_bytes = 8 + len + (uint64_t)(rand() % 48);
        if (st_parse_header(set, buf, len, file_bytes, 0, "mutant", &err) == 0) {
            for (size_t i = 0; i < st_count(set); i++) {
                const st_tensor *t = st_at(set, i);
                assert_true(t->offset >= 8 + len);
                assert_true(t->offset + t->bytes <= file_bytes);
                assert_int_equal((uint64_t)st_numel(t) * (size_t)fmt_block_bytes(t->dtype), t->bytes);
            }
        } else {
            assert_non_null(strstr(err.msg, "mutant"));
        }
        st_close(set);
    }
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_length_past_end),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unknown_dtype),
        cmocka_unit_test(test_sharded_dir),
        cmocka_unit_test(test_mutations),
    };
    tu_dir_use(g_dir);
    return cmocka_run_group_tests(tests, tu_dir_setup, tu_dir_teardown);
}
