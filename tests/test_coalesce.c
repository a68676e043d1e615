/* test_coalesce.c: cmocka tests of read planning (client/coalesce.c):
 * adjacency, max_bytes splitting, gaps, duplicates, empty input, bad input,
 * and seeded random plans executed against a simulated neuron file. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coalesce.h"
#include "testutil.h"

static void expect_req(const coal_plan *p, int64_t i, int32_t first, int32_t count, uint64_t B)
{
    assert_true(i < p->n_reqs);
    assert_int_equal(p->reqs[i].first_id, first);
    assert_int_equal(p->reqs[i].count, count);
    assert_int_equal(p->reqs[i].offset, (uint64_t)first * B);
    assert_int_equal(p->reqs[i].length, (uint64_t)count * B);
}

static void expect_items(const coal_plan *p, const int32_t *ids, int64_t n)
{
    assert_int_equal(p->n_items, n);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(p->items[i].id, ids[i]);
}

static void test_empty(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    coal_params_init(&cp, 100, 64);
    assert_int_equal(cp.max_gap, 0);
    assert_int_equal(cp.max_bytes, 1024 * 1024);
    assert_int_equal(coal_build(&p, &cp, NULL, 0, &e), 0);
    assert_int_equal(p.n_reqs, 0);
    assert_int_equal(p.n_items, 0);
    assert_int_equal(p.bytes_total, 0);
    assert_int_equal(p.bytes_wanted, 0);
    coal_plan_free(&p);
    coal_plan_free(&p);     /* freeing twice is harmless */
}

static void test_adjacent(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    coal_params_init(&cp, 100, 100);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){5, 3, 10, 4, 99, 0}, 6, &e), 0);
    assert_int_equal(p.n_reqs, 4);
    expect_req(&p, 0, 0, 1, 100);
    expect_req(&p, 1, 3, 3, 100);
    expect_req(&p, 2, 10, 1, 100);
    expect_req(&p, 3, 99, 1, 100);
    expect_items(&p, (int32_t[]){0, 3, 4, 5, 10, 99}, 6);
    /* staging layout: requests back to back, items inside their request */
    assert_int_equal(p.reqs[0].buf_off, 0);
    assert_int_equal(p.reqs[1].buf_off, 100);
    assert_int_equal(p.reqs[2].buf_off, 400);
    assert_int_equal(p.reqs[3].buf_off, 500);
    const int32_t req_of[] = {0, 1, 1, 1, 2, 3};
    const uint64_t off_of[] = {0, 100, 200, 300, 400, 500};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(p.items[i].req, req_of[i]);
        assert_int_equal(p.items[i].buf_off, off_of[i]);
    }
    assert_int_equal(p.bytes_total, 600);
    assert_int_equal(p.bytes_wanted, 600);
    coal_plan_free(&p);
}

static void test_duplicates(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    coal_params_init(&cp, 10, 8);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){7, 7, 3, 7, 3, 8, 8}, 7, &e), 0);
    assert_int_equal(p.n_reqs, 2);
    expect_req(&p, 0, 3, 1, 8);
    expect_req(&p, 1, 7, 2, 8);
    expect_items(&p, (int32_t[]){3, 7, 8}, 3);
    assert_int_equal(p.bytes_total, 24);
    /* all the same id */
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){4, 4, 4, 4}, 4, &e), 0);
    assert_int_equal(p.n_reqs, 1);
    expect_req(&p, 0, 4, 1, 8);
    expect_items(&p, (int32_t[]){4}, 1);
    coal_plan_free(&p);
}

static void test_max_bytes(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    int32_t ids[10];
    for (int32_t i = 0; i < 10; i++)
        ids[i] = 9 - i;
    coal_params_init(&cp, 10, 100);
    cp.max_bytes = 350;                     /* 3 bundles per request */
    assert_int_equal(coal_build(&p, &cp, ids, 10, &e), 0);
    assert_int_equal(p.n_reqs, 4);
    expect_req(&p, 0, 0, 3, 100);
    expect_req(&p, 1, 3, 3, 100);
    expect_req(&p, 2, 6, 3, 100);
    expect_req(&p, 3, 9, 1, 100);
    assert_int_equal(p.bytes_total, 1000);

    cp.max_bytes = 100;                     /* exactly one bundle */
    assert_int_equal(coal_build(&p, &cp, ids, 10, &e), 0);
    assert_int_equal(p.n_reqs, 10);
    for (int32_t i = 0; i < 10; i++)
        expect_req(&p, i, i, 1, 100);

    cp.max_bytes = 1000;                    /* everything fits */
    assert_int_equal(coal_build(&p, &cp, ids, 10, &e), 0);
    assert_int_equal(p.n_reqs, 1);
    expect_req(&p, 0, 0, 10, 100);

    /* the 1 MiB default on a realistic bundle (OPT 6.7B f16: 16 KiB): 64 per request */
    int32_t many[200];
    for (int32_t i = 0; i < 200; i++)
        many[i] = 1000 + i;
    coal_params_init(&cp, 16384, 16384);
    assert_int_equal(coal_build(&p, &cp, many, 200, &e), 0);
    assert_int_equal(p.n_reqs, 4);
    expect_req(&p, 0, 1000, 64, 16384);
    expect_req(&p, 3, 1192, 8, 16384);
    for (int64_t i = 0; i < p.n_reqs; i++)
        assert_true(p.reqs[i].length <= COAL_MAX_BYTES_DEFAULT);
    coal_plan_free(&p);
}

static void test_gaps(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    const int32_t ids[] = {10, 0, 2, 6, 5};
    coal_params_init(&cp, 20, 10);

    assert_int_equal(coal_build(&p, &cp, ids, 5, &e), 0);   /* max_gap 0 */
    assert_int_equal(p.n_reqs, 4);
    expect_req(&p, 0, 0, 1, 10);
    expect_req(&p, 1, 2, 1, 10);
    expect_req(&p, 2, 5, 2, 10);
    expect_req(&p, 3, 10, 1, 10);

    cp.max_gap = 1;                         /* 0 _ 2 merge */
    assert_int_equal(coal_build(&p, &cp, ids, 5, &e), 0);
    assert_int_equal(p.n_reqs, 3);
    expect_req(&p, 0, 0, 3, 10);
    expect_req(&p, 1, 5, 2, 10);
    expect_req(&p, 2, 10, 1, 10);
    assert_int_equal(p.bytes_total, 60);
    assert_int_equal(p.bytes_wanted, 50);
    /* the item after a gap sits at its file distance within the request */
    assert_int_equal(p.items[1].id, 2);
    assert_int_equal(p.items[1].req, 0);
    assert_int_equal(p.items[1].buf_off, 20);
    assert_int_equal(p.items[2].buf_off, 30);   /* id 5, request 1 at staging 30 */

    cp.max_gap = 2;                         /* 2 _ _ 5 merges too; 6 ... 10 gap 3 does not */
    assert_int_equal(coal_build(&p, &cp, ids, 5, &e), 0);
    assert_int_equal(p.n_reqs, 2);
    expect_req(&p, 0, 0, 7, 10);
    expect_req(&p, 1, 10, 1, 10);

    cp.max_gap = 3;                         /* one request 0..10 */
    assert_int_equal(coal_build(&p, &cp, ids, 5, &e), 0);
    assert_int_equal(p.n_reqs, 1);
    expect_req(&p, 0, 0, 11, 10);
    assert_int_equal(p.items[4].buf_off, 100);
    assert_int_equal(p.bytes_total, 110);

    cp.max_bytes = 60;                      /* gap merging still respects max_bytes: */
    assert_int_equal(coal_build(&p, &cp, ids, 5, &e), 0);
    assert_int_equal(p.n_reqs, 2);          /* 6 bundles per request at most */
    expect_req(&p, 0, 0, 6, 10);            /* 0 _ 2 _ _ 5 */
    expect_req(&p, 1, 6, 5, 10);            /* 6 _ _ _ 10 */
    coal_plan_free(&p);
}

static void test_bad_input(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    coal_params_init(&cp, 10, 100);
    e.msg[0] = 0;
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1, 10}, 2, &e), -EINVAL);
    assert_true(e.msg[0] != 0);
    assert_int_equal(p.n_reqs, 0);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){-1}, 1, &e), -EINVAL);
    assert_int_equal(coal_build(&p, &cp, NULL, -1, &e), -EINVAL);
    cp.max_bytes = 99;
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1}, 1, NULL), -EINVAL);
    coal_params_init(&cp, 10, 0);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1}, 1, &e), -EINVAL);
    coal_params_init(&cp, 10, 100);
    cp.max_gap = -1;
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1}, 1, &e), -EINVAL);
    coal_params_init(&cp, 0, 100);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1}, 1, &e), -EINVAL);
    coal_params_init(&cp, 1000, UINT64_MAX / 100);   /* offsets would overflow */
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){1}, 1, &e), -EINVAL);
    /* after an error the plan is empty and still usable */
    coal_params_init(&cp, 10, 100);
    assert_int_equal(coal_build(&p, &cp, (int32_t[]){2, 1}, 2, &e), 0);
    assert_int_equal(p.n_reqs, 1);
    coal_plan_free(&p);
}

static void test_reserve(void **state)
{
    (void)state;
    coal_params cp;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    assert_int_equal(coal_plan_reserve(&p, 64, &e), 0);
    coal_req *r = p.reqs;
    coal_item *it = p.items;
    coal_params_init(&cp, 1000, 4);
    int32_t ids[64];
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 64; i++)
            ids[i] = (int32_t)((i * 37 + round * 11) % 1000);
        assert_int_equal(coal_build(&p, &cp, ids, 64, &e), 0);
        assert_ptr_equal(p.reqs, r);        /* no allocation up to the reserve */
        assert_ptr_equal(p.items, it);
    }
    assert_int_equal(coal_plan_reserve(&p, -1, &e), -EINVAL);
    coal_plan_free(&p);
}

/* The simulated neuron file: byte i of bundle j. */
static unsigned char file_byte(int64_t j, uint64_t i) { return (unsigned char)(j * 131 + i * 7 + 1); }

/* Random inputs and parameters: execute the plan against the simulated file
 * and check every wanted bundle arrives, plus the plan's invariants. */
static void test_random(void **state)
{
    (void)state;
    coal_plan p = {0};
    ierr e = IERR_INIT;
    int32_t ids[600];
    unsigned char want[500];
    unsigned char *staging = NULL;
    tu_rng_seed(12345);
    for (int round = 0; round < 3000; round++) {
        coal_params cp;
        int64_t n_neurons = 1 + tu_rng_below(500);
        uint64_t B = 1 + (uint64_t)tu_rng_below(40);
        coal_params_init(&cp, n_neurons, B);
        cp.max_gap = tu_rng_below(4) ? tu_rng_below(6) : 0;
        cp.max_bytes = B * (uint64_t)(1 + tu_rng_below(20)) + (uint64_t)tu_rng_below((int64_t)B);
        int64_t n = tu_rng_below(600);
        memset(want, 0, sizeof want);
        int64_t span = 1 + tu_rng_below(n_neurons), base = tu_rng_below(n_neurons - span + 1);
        for (int64_t i = 0; i < n; i++) {
            ids[i] = (int32_t)(base + tu_rng_below(span));
            want[ids[i]] = 1;
        }
        assert_int_equal(coal_build(&p, &cp, ids, n, &e), 0);

        /* items: exactly the distinct wanted ids, ascending */
        int64_t n_want = 0;
        for (int64_t j = 0; j < n_neurons; j++)
            n_want += want[j];
        assert_int_equal(p.n_items, n_want);
        for (int64_t i = 0; i < p.n_items; i++) {
            assert_true(want[p.items[i].id]);
            if (i)
                assert_true(p.items[i].id > p.items[i - 1].id);
        }
        assert_int_equal(p.bytes_wanted, (uint64_t)n_want * B);

        /* requests: in order, back to back in staging, bounded, starting and
         * ending on wanted ids, inner gaps <= max_gap, and none could merge
         * with the next */
        uint64_t total = 0;
        for (int64_t i = 0; i < p.n_reqs; i++) {
            const coal_req *r = &p.reqs[i];
            assert_int_equal(r->buf_off, total);
            assert_int_equal(r->offset, (uint64_t)r->first_id * B);
            assert_int_equal(r->length, (uint64_t)r->count * B);
            assert_true(r->count >= 1 && r->length <= cp.max_bytes);
            assert_true(want[r->first_id] && want[r->first_id + r->count - 1]);
            int64_t gap = 0;
            for (int32_t j = r->first_id; j < r->first_id + r->count; j++) {
                gap = want[j] ? 0 : gap + 1;
                assert_true(gap <= cp.max_gap);
            }
            if (i + 1 < p.n_reqs) {
                const coal_req *q = &p.reqs[i + 1];
                int64_t between = q->first_id - (r->first_id + r->count);
                assert_true(between >= 0);
                assert_true(between > cp.max_gap ||
                            (uint64_t)(q->first_id + 1 - r->first_id) * B > cp.max_bytes);
            }
            total += r->length;
        }
        assert_int_equal(p.bytes_total, total);

        /* execute: every wanted bundle lands where its item says */
        staging = realloc(staging, total ? total : 1);
        assert_non_null(staging);
        for (int64_t i = 0; i < p.n_reqs; i++)
            for (uint64_t b = 0; b < p.reqs[i].length; b++) {
                uint64_t fo = p.reqs[i].offset + b;
                staging[p.reqs[i].buf_off + b] = file_byte((int64_t)(fo / B), fo % B);
            }
        for (int64_t i = 0; i < p.n_items; i++) {
            const coal_item *it = &p.items[i];
            const coal_req *r = &p.reqs[it->req];
            assert_true(it->id >= r->first_id && it->id < r->first_id + r->count);
            assert_int_equal(it->buf_off - r->buf_off, (uint64_t)(it->id - r->first_id) * B);
            for (uint64_t b = 0; b < B; b++)
                assert_int_equal(staging[it->buf_off + b], file_byte(it->id, b));
        }
    }
    free(staging);
    coal_plan_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_adjacent),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_max_bytes),
        cmocka_unit_test(test_gaps),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
