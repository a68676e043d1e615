/* test_fs_stats.c: the counters and latency histogram of inflashfs
 * (fs/stats.c): bucket boundaries, percentiles, per-kind views, concurrent
 * updates, and the text/JSON rendering of the stats files. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stats.h"

static void test_buckets(void **state)
{
    (void)state;
    /* exact below 8, then monotonic, each midpoint inside its bucket */
    for (uint64_t v = 0; v < 8; v++) {
        assert_int_equal(fsstat_bucket(v), v);
        assert_int_equal(fsstat_bucket_mid((unsigned)v), v);
    }
    unsigned prev = 0;
    for (uint64_t v = 1; v < (1ull << 40); v = v * 3 / 2 + 1) {
        unsigned b = fsstat_bucket(v);
        assert_true(b >= prev);
        assert_true(b < FSSTAT_BUCKETS);
        assert_int_equal(fsstat_bucket(fsstat_bucket_mid(b)), b);
        /* relative resolution 1/8 */
        uint64_t mid = fsstat_bucket_mid(b);
        assert_true(mid <= v + v / 8 + 1 && v <= mid + mid / 8 + 1);
        prev = b;
    }
    assert_true(fsstat_bucket(UINT64_MAX) < FSSTAT_BUCKETS);
}

static void test_percentiles(void **state)
{
    (void)state;
    fsstat *s = fsstat_new();
    assert_non_null(s);
    /* 98 reads at ~100 us, 2 at ~10 ms */
    for (int i = 0; i < 98; i++)
        fsstat_read(s, FSSTAT_FFN, 4096, 100000, 0);
    fsstat_read(s, FSSTAT_FFN, 1 << 20, 10000000, 0);
    fsstat_read(s, FSSTAT_TENSOR, 100, 10000000, 1);
    fsstat_kind_view v;
    fsstat_view(s, FSSTAT_NKINDS, &v);
    assert_int_equal(v.requests, 100);
    assert_int_equal(v.bytes, 98 * 4096 + (1 << 20) + 100);
    assert_int_equal(v.errors, 1);
    assert_int_equal(v.max_request, 1 << 20);
    assert_true(v.p50_us > 90 && v.p50_us < 110);
    assert_true(v.p99_us > 9000 && v.p99_us < 11000);
    assert_true(v.max_us > 9999 && v.max_us < 10001);
    assert_true(v.mean_us > (98 * 100 + 2 * 10000) / 100.0 - 0.01 && v.mean_us < (98 * 100 + 2 * 10000) / 100.0 + 0.01);
    fsstat_view(s, FSSTAT_FFN, &v);
    assert_int_equal(v.requests, 99);
    assert_int_equal(v.errors, 0);
    fsstat_view(s, FSSTAT_OTHER, &v);
    assert_int_equal(v.requests, 0);
    assert_true(v.p50_us == 0 && v.p99_us == 0);
    fsstat_free(s);
}

static void *hammer(void *arg)
{
    fsstat *s = arg;
    for (int i = 0; i < 100000; i++)
        fsstat_read(s, FSSTAT_FFN, 10, (uint64_t)i, 0);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    fsstat *s = fsstat_new();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, s);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    fsstat_kind_view v;
    fsstat_view(s, FSSTAT_FFN, &v);
    assert_int_equal(v.requests, 400000);
    assert_int_equal(v.bytes, 4000000);
    fsstat_free(s);
}

static void test_format(void **state)
{
    (void)state;
    const fsstat_kv kv[] = {
        { .key = "requests", .u = 42 },
        { .key = "latency_p50_us", .is_real = 1, .d = 12.25 },
        { .key = "bytes_served", .u = 18446744073709551615ull },
    };
    char *out;
    size_t len;
    assert_int_equal(fsstat_format(kv, 3, 0, &out, &len), 0);
    assert_string_equal(out, "requests 42\nlatency_p50_us 12.250\nbytes_served 18446744073709551615\n");
    assert_int_equal(len, strlen(out));
    free(out);
    assert_int_equal(fsstat_format(kv, 3, 1, &out, &len), 0);
    assert_string_equal(out, "{\n  \"requests\": 42,\n  \"latency_p50_us\": 12.250,\n"
                             "  \"bytes_served\": 18446744073709551615\n}\n");
    free(out);
    assert_int_equal(fsstat_format(kv, 0, 1, &out, &len), 0);
    assert_string_equal(out, "{\n}\n");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_percentiles),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
