/* test_window.c: cmocka tests of the sliding-window bookkeeping
 * (client/window.c): seeded random active sets checked after every push
 * against a brute-force union of the last k sets, k shrinking and growing,
 * and the error cases. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "window.h"
#include "testutil.h"

#define N      150
#define MAXK   9
#define HIST   64      /* reference history kept (>= MAXK) */

/* The reference: the last HIST pushed sets as membership arrays, newest last. */
typedef struct {
    unsigned char set[HIST][N];
    int64_t pushes;     /* total pushed */
    int64_t held;       /* sets that count: the newest `held` ones */
} ref_t;

static void ref_union(const ref_t *r, unsigned char *u)
{
    memset(u, 0, N);
    for (int64_t i = 0; i < r->held; i++) {
        const unsigned char *s = r->set[(r->pushes - 1 - i) % HIST];
        for (int j = 0; j < N; j++)
            u[j] |= s[j];
    }
}

/* list[0..n) holds exactly the ids in `want` (each once). */
static void assert_same_set(const int32_t *list, int64_t n, const unsigned char *want)
{
    unsigned char seen[N] = {0};
    int64_t expect = 0;
    for (int j = 0; j < N; j++)
        expect += want[j];
    assert_int_equal(n, expect);
    for (int64_t i = 0; i < n; i++) {
        assert_true(list[i] >= 0 && list[i] < N);
        assert_true(want[list[i]]);
        assert_false(seen[list[i]]);
        seen[list[i]] = 1;
    }
}

/* After the calls since the last clear: load = now \ before,
 * drop = before \ now, and the window agrees with the reference. */
static void check_delta(const window *w, const window_delta *d, const ref_t *r,
                        const unsigned char *before)
{
    unsigned char now[N], add[N], gone[N];
    int64_t res = 0;
    ref_union(r, now);
    for (int j = 0; j < N; j++) {
        add[j] = now[j] && !before[j];
        gone[j] = before[j] && !now[j];
        res += now[j];
        assert_int_equal(window_contains(w, j), now[j]);
    }
    assert_same_set(d->load, d->n_load, add);
    assert_same_set(d->drop, d->n_drop, gone);
    assert_int_equal(window_resident(w), res);
    assert_int_equal(window_held(w), r->held);
}

/* A random active set with locality: mostly from a slowly drifting hot
 * region, some cold ids, some duplicates. */
static int64_t random_set(int32_t *ids, int64_t step)
{
    int64_t n = tu_rng_below(41), m = 0;
    int64_t hot = (step / 7) % N;
    for (int64_t i = 0; i < n; i++) {
        if (tu_rng_below(4))
            ids[m++] = (int32_t)((hot + tu_rng_below(30)) % N);
        else
            ids[m++] = (int32_t)tu_rng_below(N);
        if (tu_rng_below(10) == 0) {         /* a duplicate */
            int32_t dup = ids[tu_rng_below(m)];
            ids[m++] = dup;
        }
    }
    return m;
}

static void run_random(int64_t k0, int64_t steps, uint64_t seed, int vary_k)
{
    window *w;
    window_delta d;
    ierr e = IERR_INIT;
    static ref_t r;
    unsigned char before[N];
    int32_t ids[100];
    int64_t k = k0, n_shrink = 0, n_grow = 0, n_dropped = 0;
    tu_rng_seed(seed);
    memset(&r, 0, sizeof r);
    assert_int_equal(window_new(N, k, &w, &e), 0);
    assert_int_equal(window_delta_init(&d, N, &e), 0);
    for (int64_t step = 0; step < steps; step++) {
        ref_union(&r, before);
        window_delta_clear(&d);
        if (tu_rng_below(500) == 0) {        /* rarely: a new sequence */
            assert_int_equal(window_reset(w, &d, &e), 0);
            r.held = 0;
            assert_int_equal(window_held(w), 0);
            check_delta(w, &d, &r, before);
            continue;
        }
        int64_t n = random_set(ids, step);
        assert_int_equal(window_push(w, ids, n, &d, &e), 0);
        unsigned char *s = r.set[r.pushes % HIST];
        memset(s, 0, N);
        for (int64_t i = 0; i < n; i++)
            s[ids[i]] = 1;
        r.pushes++;
        r.held = r.held + 1 > k ? k : r.held + 1;
        if (vary_k && tu_rng_below(10) == 0) { /* change k after the push, same delta */
            int64_t nk = 1 + tu_rng_below(MAXK);
            n_shrink += nk < k;
            n_grow += nk > k;
            assert_int_equal(window_set_k(w, nk, &d, &e), 0);
            k = nk;
            if (r.held > k)
                r.held = k;
        }
        assert_int_equal(window_k(w), k);
        check_delta(w, &d, &r, before);
        n_dropped += d.n_drop;
    }
    assert_true(n_dropped > steps);
    if (vary_k)
        assert_true(n_shrink > 50 && n_grow > 50);
    window_delta_free(&d);
    window_free(w);
}

static void test_random_k1(void **state) { (void)state; run_random(1, 5000, 1, 0); }
static void test_random_k4(void **state) { (void)state; run_random(4, 20000, 2, 0); }
static void test_random_k_varies(void **state) { (void)state; run_random(3, 20000, 3, 1); }

/* A small scenario spelled out. */
static void expect_ids(const int32_t *list, int64_t n, const int32_t *want, int64_t nw)
{
    unsigned char w[N] = {0};
    for (int64_t i = 0; i < nw; i++)
        w[want[i]] = 1;
    assert_same_set(list, n, w);
}

static void test_scenario(void **state)
{
    (void)state;
    window *w;
    window_delta d;
    ierr e = IERR_INIT;
    assert_int_equal(window_new(10, 2, &w, &e), 0);
    assert_int_equal(window_delta_init(&d, 10, &e), 0);

    window_delta_clear(&d);
    assert_int_equal(window_push(w, (int32_t[]){1, 2, 1}, 3, &d, &e), 0);
    expect_ids(d.load, d.n_load, (int32_t[]){1, 2}, 2);
    assert_int_equal(d.n_drop, 0);

    window_delta_clear(&d);
    assert_int_equal(window_push(w, (int32_t[]){2, 3}, 2, &d, &e), 0);
    expect_ids(d.load, d.n_load, (int32_t[]){3}, 1);
    assert_int_equal(d.n_drop, 0);
    assert_int_equal(window_resident(w), 3);

    window_delta_clear(&d);                 /* {1,2} leaves; 2 stays in {2,3} */
    assert_int_equal(window_push(w, (int32_t[]){3, 4}, 2, &d, &e), 0);
    expect_ids(d.load, d.n_load, (int32_t[]){4}, 1);
    expect_ids(d.drop, d.n_drop, (int32_t[]){1}, 1);

    window_delta_clear(&d);                 /* an empty set: {2,3} leaves */
    assert_int_equal(window_push(w, NULL, 0, &d, &e), 0);
    assert_int_equal(d.n_load, 0);
    expect_ids(d.drop, d.n_drop, (int32_t[]){2}, 1);
    assert_int_equal(window_held(w), 2);

    window_delta_clear(&d);                 /* grow: nothing leaves for 4 pushes */
    assert_int_equal(window_set_k(w, 5, &d, &e), 0);
    assert_int_equal(d.n_drop, 0);
    for (int32_t i = 5; i < 8; i++)
        assert_int_equal(window_push(w, &i, 1, &d, &e), 0);
    expect_ids(d.load, d.n_load, (int32_t[]){5, 6, 7}, 3);
    assert_int_equal(d.n_drop, 0);
    assert_int_equal(window_held(w), 5);    /* {3,4} {} {5} {6} {7} */
    assert_int_equal(window_resident(w), 5);

    window_delta_clear(&d);                 /* shrink to 2: {3,4} {} {5} leave */
    assert_int_equal(window_set_k(w, 2, &d, &e), 0);
    assert_int_equal(d.n_load, 0);
    expect_ids(d.drop, d.n_drop, (int32_t[]){3, 4, 5}, 3);
    assert_int_equal(window_held(w), 2);
    assert_int_equal(window_k(w), 2);

    window_delta_clear(&d);
    assert_int_equal(window_set_k(w, 1, &d, &e), 0);
    expect_ids(d.drop, d.n_drop, (int32_t[]){6}, 1);
    assert_true(window_contains(w, 7));
    assert_false(window_contains(w, 6));
    assert_false(window_contains(w, -1));
    assert_false(window_contains(w, 10));

    window_delta_clear(&d);
    assert_int_equal(window_reset(w, &d, &e), 0);
    expect_ids(d.drop, d.n_drop, (int32_t[]){7}, 1);
    assert_int_equal(window_resident(w), 0);
    assert_int_equal(window_held(w), 0);
    assert_true(window_bytes(w) > 10 * 8);

    window_delta_free(&d);
    window_free(w);
}

static void test_errors(void **state)
{
    (void)state;
    window *w;
    window_delta d;
    ierr e = IERR_INIT;
    e.msg[0] = 0;
    assert_int_equal(window_new(0, 2, &w, &e), -EINVAL);
    assert_null(w);
    assert_true(e.msg[0] != 0);
    assert_int_equal(window_new(10, 0, &w, &e), -EINVAL);
    assert_int_equal(window_delta_init(&d, 0, &e), -EINVAL);

    assert_int_equal(window_new(4, 1, &w, &e), 0);
    assert_int_equal(window_n_neurons(w), 4);
    assert_int_equal(window_delta_init(&d, 4, &e), 0);
    assert_int_equal(window_push(w, (int32_t[]){0, 1}, 2, &d, &e), 0);

    /* a bad id: rejected, nothing changes */
    e.msg[0] = 0;
    assert_int_equal(window_push(w, (int32_t[]){2, 4}, 2, &d, &e), -EINVAL);
    assert_true(e.msg[0] != 0);
    assert_int_equal(window_push(w, (int32_t[]){-1}, 1, &d, NULL), -EINVAL);
    assert_int_equal(window_push(w, NULL, -1, &d, &e), -EINVAL);
    assert_int_equal(window_resident(w), 2);
    assert_int_equal(window_held(w), 1);
    assert_int_equal(d.n_load, 2);
    assert_int_equal(window_set_k(w, 0, &d, &e), -EINVAL);
    assert_int_equal(window_k(w), 1);

    /* a delta never cleared overflows: refused before any change */
    window_delta_clear(&d);
    assert_int_equal(window_push(w, (int32_t[]){0, 1, 2, 3}, 4, &d, &e), 0);   /* loads 2, 3 */
    assert_int_equal(window_push(w, NULL, 0, &d, &e), 0);                       /* drops 4 */
    assert_int_equal(d.n_load, 2);
    assert_int_equal(d.n_drop, 4);
    e.msg[0] = 0;
    assert_int_equal(window_push(w, (int32_t[]){0, 1, 2}, 3, &d, &e), -ENOSPC);
    assert_true(e.msg[0] != 0);
    assert_int_equal(window_resident(w), 0);
    assert_int_equal(window_held(w), 1);
    window_delta_clear(&d);
    assert_int_equal(window_push(w, (int32_t[]){0, 1, 2}, 3, &d, &e), 0);
    assert_int_equal(d.n_load, 3);

    window_delta_free(&d);
    window_free(w);
    window_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_k1),
        cmocka_unit_test(test_random_k4),
        cmocka_unit_test(test_random_k_varies),
        cmocka_unit_test(test_scenario),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
