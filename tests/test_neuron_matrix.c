/* test_neuron_matrix.c: cmocka tests of the neuron matrix (client/neuron_matrix.c): long
 * seeded random insert/reserve/delete sequences checked after every step
 * against a reference set with per-id contents, plus the error cases. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "neuron_matrix.h"
#include "testutil.h"

/* The content of element j of neuron id's bundle (exact in f32). */
static float stamp(int32_t id, int64_t j) { return (float)id * 1024.0f + (float)j + 0.25f; }

static void fill(float *row, int32_t id, int64_t row_len)
{
    for (int64_t j = 0; j < row_len; j++)
        row[j] = stamp(id, j);
}

/* The reference model: which ids are resident. */
typedef struct {
    unsigned char *in;
    int64_t n;
    int64_t count;
} refset;

/* Used rows hold exactly the resident ids with their contents, and the
 * maps are mutual inverses. */
static void check_all(const nmat *m, const refset *ref, const float *base)
{
    int64_t used = nmat_used(m), ld = nmat_stride(m);
    const int32_t *ids = nmat_row_ids(m);
    assert_ptr_equal(nmat_data(m), base);            /* never reallocated */
    assert_int_equal(used, ref->count);
    assert_true(used <= nmat_capacity(m));
    for (int64_t r = 0; r < used; r++) {
        int32_t id = ids[r];
        assert_true(id >= 0 && id < ref->n);
        assert_true(ref->in[id]);
        assert_int_equal(nmat_row_of(m, id), r);
        const float *row = base + r * ld;
        for (int64_t j = 0; j < ld; j++)
            assert_true(row[j] == stamp(id, j));
    }
    for (int32_t id = 0; id < ref->n; id++) {
        int64_t r = nmat_row_of(m, id);
        assert_int_equal(r >= 0, ref->in[id]);
        assert_int_equal(nmat_contains(m, id), ref->in[id]);
        if (r >= 0)
            assert_int_equal(ids[r], id);
    }
}

static void random_ops(int64_t n, int64_t cap, int64_t d, int gated, int64_t ops, uint64_t seed)
{
    nmat *m;
    ierr e = IERR_INIT;
    tu_rng_seed(seed);
    assert_int_equal(nmat_new(n, cap, d, gated, FMT_F32, &m, &e), 0);
    int64_t row_len = nmat_row_len(d, gated);
    assert_int_equal(nmat_stride(m), row_len);
    const float *base = nmat_data(m);
    refset ref = { calloc((size_t)n, 1), n, 0 };
    float *bundle = malloc((size_t)row_len * sizeof *bundle);
    assert_non_null(ref.in);
    assert_non_null(bundle);
    int64_t n_ok_ins = 0, n_ok_del = 0, n_full = 0, n_dup = 0, n_absent = 0;

    for (int64_t op = 0; op < ops; op++) {
        /* Phases of 2000 ops that mostly insert (the matrix fills up) or
         * mostly delete (it drains). */
        int64_t p_insert = (op / 2000) % 2 ? 15 : 85;
        int64_t kind = tu_rng_below(1000) == 0 ? -1 : tu_rng_below(100);
        int32_t id;
        /* Half the time pick a resident id, so deletes and duplicates happen. */
        if (nmat_used(m) > 0 && tu_rng_below(2))
            id = nmat_row_ids(m)[tu_rng_below(nmat_used(m))];
        else
            id = (int32_t)tu_rng_below(n);
        if (kind < 0) {                  /* rarely: clear */
            nmat_clear(m);
            memset(ref.in, 0, (size_t)n);
            ref.count = 0;
        } else if (kind < p_insert) {    /* insert, by copy or in place */
            int rc;
            if (kind % 2) {
                fill(bundle, id, row_len);
                rc = nmat_insert(m, id, bundle, &e);
            } else {
                void *vrow = NULL;
                rc = nmat_reserve(m, id, &vrow, &e);
                float *row = vrow;
                if (rc == 0) {
                    assert_ptr_equal(row, base + (nmat_used(m) - 1) * row_len);
                    fill(row, id, row_len);
                } else {
                    assert_null(row);
                }
            }
            if (ref.in[id]) {
                assert_int_equal(rc, -EEXIST);
                n_dup++;
            } else if (ref.count == nmat_capacity(m)) {
                assert_int_equal(rc, -ENOSPC);
                n_full++;
            } else {
                assert_int_equal(rc, 0);
                ref.in[id] = 1;
                ref.count++;
                n_ok_ins++;
            }
        } else {                         /* delete */
            int rc = nmat_delete(m, id, &e);
            if (ref.in[id]) {
                assert_int_equal(rc, 0);
                ref.in[id] = 0;
                ref.count--;
                n_ok_del++;
            } else {
                assert_int_equal(rc, -ENOENT);
                n_absent++;
            }
        }
        check_all(m, &ref, base);
    }
    /* Every path was exercised many times. */
    assert_true(n_ok_ins > ops / 10 && n_ok_del > ops / 10);
    assert_true(n_dup > 100 && n_absent > 100);
    if (nmat_capacity(m) < n)
        assert_true(n_full > 100);
    free(bundle);
    free(ref.in);
    nmat_free(m);
}

static void test_random_gated(void **state)
{
    (void)state;
    random_ops(300, 120, 4, 1, 100000, 42);
}

static void test_random_plain(void **state)
{
    (void)state;
    random_ops(97, 40, 5, 0, 50000, 7);
}

static void test_random_tiny(void **state)
{
    (void)state;
    random_ops(3, 2, 1, 0, 20000, 99);      /* capacity 2: constant full/empty churn */
    random_ops(5, 5, 2, 1, 20000, 100);     /* capacity = n_neurons */
}

static void test_errors(void **state)
{
    (void)state;
    nmat *m;
    ierr e = IERR_INIT;
    float b[8] = {0};
    void *row;
    assert_int_equal(nmat_new(10, 2, 4, 0, FMT_F32, &m, &e), 0);
    const float *base = nmat_data(m);

    assert_int_equal(nmat_insert(m, 3, b, &e), 0);
    e.msg[0] = 0;
    assert_int_equal(nmat_insert(m, 3, b, &e), -EEXIST);
    assert_non_null(strstr(e.msg, "3"));
    assert_int_equal(nmat_reserve(m, 3, &row, &e), -EEXIST);
    assert_null(row);
    assert_int_equal(nmat_insert(m, 9, b, &e), 0);
    e.msg[0] = 0;
    assert_int_equal(nmat_insert(m, 0, b, &e), -ENOSPC);
    assert_true(e.msg[0] != 0);
    assert_int_equal(nmat_reserve(m, 0, &row, &e), -ENOSPC);
    assert_int_equal(nmat_insert(m, 10, b, &e), -EINVAL);
    assert_int_equal(nmat_insert(m, -1, b, &e), -EINVAL);
    assert_int_equal(nmat_delete(m, 10, &e), -EINVAL);
    assert_int_equal(nmat_delete(m, -5, &e), -EINVAL);
    e.msg[0] = 0;
    assert_int_equal(nmat_delete(m, 4, &e), -ENOENT);
    assert_true(e.msg[0] != 0);
    assert_int_equal(nmat_used(m), 2);
    assert_int_equal(nmat_row_of(m, 3), 0);
    assert_int_equal(nmat_row_of(m, 9), 1);
    assert_int_equal(nmat_row_of(m, 10), -1);
    assert_int_equal(nmat_row_of(m, -1), -1);

    /* delete the first row: the last moves into it */
    assert_int_equal(nmat_delete(m, 3, &e), 0);
    assert_int_equal(nmat_row_of(m, 9), 0);
    assert_int_equal(nmat_row_ids(m)[0], 9);
    assert_int_equal(nmat_delete(m, 3, &e), -ENOENT);
    /* errors with err == NULL are fine */
    assert_int_equal(nmat_delete(m, 3, NULL), -ENOENT);
    assert_int_equal(nmat_delete(m, 9, NULL), 0);
    assert_int_equal(nmat_used(m), 0);
    assert_ptr_equal(nmat_data(m), base);
    nmat_free(m);
    nmat_free(NULL);
}

static void test_shape(void **state)
{
    (void)state;
    nmat *m;
    ierr e = IERR_INIT;
    assert_int_equal(nmat_row_len(8, 0), 16);
    assert_int_equal(nmat_row_len(8, 1), 24);

    assert_int_equal(nmat_new(100, 10, 8, 1, FMT_F32, &m, &e), 0);
    assert_int_equal(nmat_stride(m), 24);
    assert_int_equal(nmat_up_off(m), 0);
    assert_int_equal(nmat_gate_off(m), 8);
    assert_int_equal(nmat_down_off(m), 16);
    assert_int_equal(nmat_capacity(m), 10);
    assert_int_equal(nmat_n_neurons(m), 100);
    assert_int_equal(nmat_d_model(m), 8);
    assert_int_equal(nmat_gated(m), 1);
    assert_int_equal((uintptr_t)nmat_data(m) % 64, 0);
    nmat_free(m);

    assert_int_equal(nmat_new(100, 10, 8, 0, FMT_F32, &m, &e), 0);
    assert_int_equal(nmat_stride(m), 16);
    assert_int_equal(nmat_gate_off(m), -1);
    assert_int_equal(nmat_down_off(m), 8);
    assert_int_equal(nmat_gated(m), 0);
    nmat_free(m);

    /* capacity is clamped to the neuron count, in nmat_bytes too */
    assert_int_equal(nmat_new(5, 50, 2, 0, FMT_F32, &m, &e), 0);
    assert_int_equal(nmat_capacity(m), 5);
    nmat_free(m);
    assert_true(nmat_bytes(50, 4, FMT_F32, 5) == nmat_bytes(5, 4, FMT_F32, 5));

    /* nmat_bytes: the matrix dominates and grows with each argument */
    uint64_t b = nmat_bytes(1000, 24, FMT_F32, 4000);
    assert_true(b >= 1000u * 24u * 4u + 5000u * 4u);
    assert_true(b < 1000u * 24u * 4u + 5000u * 4u + 4096u);
    assert_true(nmat_bytes(1001, 24, FMT_F32, 4000) > b);
    assert_true(nmat_bytes(1000, 25, FMT_F32, 4000) > b);
    assert_true(nmat_bytes(1000, 24, FMT_F32, 4001) > b);
    assert_true(nmat_bytes(-1, 24, FMT_F32, 4000) == UINT64_MAX);
    assert_true(nmat_bytes(INT64_MAX, INT64_MAX, FMT_F32, INT64_MAX) == UINT64_MAX);

    /* bad sizes */
    e.msg[0] = 0;
    assert_int_equal(nmat_new(0, 1, 1, 0, FMT_F32, &m, &e), -EINVAL);
    assert_null(m);
    assert_true(e.msg[0] != 0);
    assert_int_equal(nmat_new(10, 0, 1, 0, FMT_F32, &m, &e), -EINVAL);
    assert_int_equal(nmat_new(10, 1, 0, 0, FMT_F32, &m, &e), -EINVAL);
    assert_int_equal(nmat_new((int64_t)INT32_MAX + 1, 1, 1, 0, FMT_F32, &m, &e), -EINVAL);
    assert_int_equal(nmat_new(10, 5, INT64_MAX / 2, 0, FMT_F32, &m, &e), -EINVAL);

    /* quantized rows: a row is the bundle's blocks; d_model whole blocks only */
    assert_true(nmat_row_bytes(2 * 64, FMT_Q8_0) == 4u * 34u);
    assert_true(nmat_row_bytes(3 * 64, FMT_Q4_0) == 6u * 18u);
    assert_true(nmat_row_bytes(48, FMT_Q8_0) == UINT64_MAX);
    assert_true(nmat_bytes(10, 48, FMT_Q4_0, 20) == UINT64_MAX);
    assert_int_equal(nmat_new(20, 10, 64, 1, FMT_Q4_0, &m, &e), 0);
    assert_int_equal(nmat_dtype(m), FMT_Q4_0);
    assert_int_equal(nmat_row_size(m), 6 * 18);
    assert_int_equal(nmat_stride(m), 3 * 64);
    unsigned char bundle[6 * 18];
    void *row;
    for (size_t i = 0; i < sizeof bundle; i++)
        bundle[i] = (unsigned char)i;
    assert_int_equal(nmat_insert(m, 7, bundle, &e), 0);
    assert_int_equal(nmat_reserve(m, 3, &row, &e), 0);
    assert_ptr_equal(row, (const unsigned char *)nmat_data(m) + sizeof bundle);
    assert_int_equal(nmat_delete(m, 7, &e), 0);                 /* row 1 moves into row 0 */
    assert_int_equal(nmat_row_of(m, 3), 0);
    nmat_free(m);
    assert_int_equal(nmat_new(20, 10, 48, 0, FMT_Q8_0, &m, &e), -EINVAL);
    assert_int_equal(nmat_new(20, 10, 64, 0, FMT_BF16, &m, &e), -EINVAL);
}

/* The FFN use: a matrix-vector product over the used rows through the base
 * pointer and stride gives, per row, the dot product of that neuron's up
 * row (and down column) with x. */
static void test_rows_as_matrix(void **state)
{
    (void)state;
    nmat *m;
    ierr e = IERR_INIT;
    const int64_t d = 6;
    assert_int_equal(nmat_new(50, 20, d, 1, FMT_F32, &m, &e), 0);
    float bundle[18];
    for (int32_t id = 0; id < 50; id += 3) {
        fill(bundle, id, 18);
        if (nmat_insert(m, id, bundle, &e) == -ENOSPC)
            break;
    }
    assert_int_equal(nmat_delete(m, 9, &e), 0);
    assert_int_equal(nmat_delete(m, 0, &e), 0);
    float x[6] = {1, -2, 0.5f, 3, 0, 1};
    const float *A = nmat_data(m);
    for (int64_t r = 0; r < nmat_used(m); r++) {
        int32_t id = nmat_row_ids(m)[r];
        float up = 0, ref_up = 0, down = 0, ref_down = 0;
        for (int64_t j = 0; j < d; j++) {
            up += A[r * nmat_stride(m) + nmat_up_off(m) + j] * x[j];
            ref_up += stamp(id, j) * x[j];
            down += A[r * nmat_stride(m) + nmat_down_off(m) + j] * x[j];
            ref_down += stamp(id, 2 * d + j) * x[j];
        }
        assert_true(up == ref_up);
        assert_true(down == ref_down);
        assert_true(A[r * nmat_stride(m) + nmat_gate_off(m)] == stamp(id, d));
    }
    nmat_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_gated),
        cmocka_unit_test(test_random_plain),
        cmocka_unit_test(test_random_tiny),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_rows_as_matrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
