/* test_fs_slot_map.c: neuron-file offset translation (fs/slot_map.c) against a
 * byte-by-byte reference, with identity and permuted slot tables: arbitrary
 * ranges including partial bundles, clamping at the end, coalescing of
 * bundles whose slots are adjacent, and the error cases. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "slot_map.h"

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reference: physical offset of byte `pos` of the neuron file. */
static uint64_t ref_phys(const xlate_layer *l, uint64_t pos)
{
    uint64_t j = pos / l->bundle;
    return l->base + (uint64_t)l->slot_of[j] * l->bundle + pos % l->bundle;
}

/* Translate and compare with the reference; extents must be maximal. */
static void check_range(const xlate_layer *l, uint64_t off, uint64_t len)
{
    size_t cap = xlate_max_extents(l, len), n = 0;
    xlate_ext *ext = malloc(cap * sizeof *ext);
    uint64_t bytes = 0;
    assert_int_equal(xlate_range(l, off, len, ext, cap, &n, &bytes), 0);
    uint64_t size = xlate_file_bytes(l);
    uint64_t want = off >= size ? 0 : (len < size - off ? len : size - off);
    assert_int_equal(bytes, want);
    uint64_t pos = off, total = 0;
    for (size_t e = 0; e < n; e++) {
        assert_true(ext[e].len > 0);
        /* first and last byte of each extent map where the reference says;
         * every byte in between too (cheap enough at these sizes) */
        for (uint64_t b = 0; b < ext[e].len; b++)
            assert_int_equal(ext[e].off + b, ref_phys(l, pos + b));
        if (e > 0)   /* maximal: never physically adjacent to the previous one */
            assert_true(ext[e - 1].off + ext[e - 1].len != ext[e].off);
        pos += ext[e].len;
        total += ext[e].len;
    }
    assert_int_equal(total, want);
    free(ext);
}

static void make_perm(int64_t *slot_of, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        slot_of[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t k = (int64_t)(rnd() % (uint64_t)(i + 1));
        int64_t t = slot_of[i];
        slot_of[i] = slot_of[k];
        slot_of[k] = t;
    }
}

static void test_identity_one_extent(void **state)
{
    (void)state;
    enum { N = 64 };
    int64_t slot_of[N];
    for (int i = 0; i < N; i++)
        slot_of[i] = i;
    xlate_layer l = { .base = 8192, .bundle = 1024, .n = N, .slot_of = slot_of };
    xlate_ext ext[N + 2];
    size_t n;
    uint64_t bytes;
    /* the whole file is one extent of ffn.bin */
    assert_int_equal(xlate_range(&l, 0, N * 1024, ext, N + 2, &n, &bytes), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ext[0].off, 8192);
    assert_int_equal(ext[0].len, N * 1024);
    /* a partial range across bundles, too */
    assert_int_equal(xlate_range(&l, 1500, 3000, ext, N + 2, &n, &bytes), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ext[0].off, 8192 + 1500);
    assert_int_equal(ext[0].len, 3000);
    assert_int_equal(bytes, 3000);
}

static void test_permuted_exact(void **state)
{
    (void)state;
    /* slots: neuron 0 -> 2, 1 -> 3, 2 -> 0, 3 -> 1: two pairs of adjacent slots */
    int64_t slot_of[4] = { 2, 3, 0, 1 };
    xlate_layer l = { .base = 4096, .bundle = 100, .n = 4, .slot_of = slot_of };
    xlate_ext ext[8];
    size_t n;
    uint64_t bytes;
    assert_int_equal(xlate_range(&l, 0, 400, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ext[0].off, 4096 + 200);
    assert_int_equal(ext[0].len, 200);
    assert_int_equal(ext[1].off, 4096);
    assert_int_equal(ext[1].len, 200);
    /* a partial bundle: bytes 150..249 = neuron 1 [50,100) + neuron 2 [0,50) */
    assert_int_equal(xlate_range(&l, 150, 100, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ext[0].off, 4096 + 300 + 50);
    assert_int_equal(ext[0].len, 50);
    assert_int_equal(ext[1].off, 4096);
    assert_int_equal(ext[1].len, 50);
    /* inside one bundle */
    assert_int_equal(xlate_range(&l, 310, 20, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ext[0].off, 4096 + 100 + 10);
    assert_int_equal(ext[0].len, 20);
}

static void test_permuted_random(void **state)
{
    (void)state;
    static const uint64_t bundles[] = { 384, 1024, 2048, 4096, 16384, 7 };
    for (size_t bi = 0; bi < sizeof bundles / sizeof bundles[0]; bi++) {
        int64_t n = 1 + (int64_t)(rnd() % 300);
        int64_t *slot_of = malloc((size_t)n * sizeof *slot_of);
        make_perm(slot_of, n);
        /* make some runs adjacent, as after a partial hot-first reorder */
        for (int64_t i = 0; i + 1 < n; i += 5)
            if (slot_of[i] + 1 < n)
                for (int64_t k = 0; k < n; k++)
                    if (slot_of[k] == slot_of[i] + 1) {
                        slot_of[k] = slot_of[i + 1];
                        slot_of[i + 1] = slot_of[i] + 1;
                        break;
                    }
        xlate_layer l = { .base = 4096 * (1 + rnd() % 10), .bundle = bundles[bi], .n = n, .slot_of = slot_of };
        uint64_t size = xlate_file_bytes(&l);
        for (int it = 0; it < 200; it++) {
            uint64_t off = rnd() % (size + 10);
            uint64_t len = 1 + rnd() % (3 * l.bundle + 50);
            check_range(&l, off, len);
        }
        check_range(&l, 0, size);
        check_range(&l, 0, size + 12345);
        check_range(&l, size - 1, 1);
        free(slot_of);
    }
}

static void test_eof_and_errors(void **state)
{
    (void)state;
    int64_t slot_of[3] = { 0, 1, 2 };
    xlate_layer l = { .base = 0, .bundle = 10, .n = 3, .slot_of = slot_of };
    xlate_ext ext[8];
    size_t n = 99;
    uint64_t bytes = 99;
    /* at and past EOF: nothing */
    assert_int_equal(xlate_range(&l, 30, 10, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(xlate_range(&l, 1000, 10, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 0);
    /* zero length */
    assert_int_equal(xlate_range(&l, 5, 0, ext, 8, &n, &bytes), 0);
    assert_int_equal(n, 0);
    /* clamped at the end */
    assert_int_equal(xlate_range(&l, 25, 100, ext, 8, &n, &bytes), 0);
    assert_int_equal(bytes, 5);
    assert_int_equal(n, 1);
    /* capacity too small */
    assert_int_equal(xlate_range(&l, 0, 30, ext, 1, &n, &bytes), -EINVAL);
    /* a slot out of range */
    slot_of[1] = 3;
    assert_int_equal(xlate_range(&l, 0, 30, ext, 8, &n, &bytes), -EINVAL);
    slot_of[1] = -1;
    assert_int_equal(xlate_range(&l, 10, 1, ext, 8, &n, &bytes), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_one_extent),
        cmocka_unit_test(test_permuted_exact),
        cmocka_unit_test(test_permuted_random),
        cmocka_unit_test(test_eof_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
