/* test_predict.c: cmocka tests of the predictor at run time
 * (client/predict.h): the rank bounds of pred_new, and pred_score /
 * pred_select on a hand-made predictor whose scores are known exactly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "predict.h"

static void test_new_rejects_bad_rank(void **state)
{
    (void)state;
    pred *p = (pred *)1;
    ierr e = IERR_INIT;
    assert_int_equal(pred_new(64, 172, 65, &p, &e), -EINVAL);
    assert_null(p);
    assert_non_null(strstr(e.msg, "rank 65"));
    assert_int_equal(pred_new(64, 172, 0, &p, NULL), -EINVAL);
    assert_int_equal(pred_new(64, 172, 64, &p, NULL), 0);
    assert_float_equal(p->tau, 0.0f, 0.0f);
    pred_free(p);
    pred_free(NULL);
}

/* d = 3, n = 4, r = 2: A picks x0 and x1, B maps them to the neurons as
 * s = (x0, x1, x0 + x1, -x0) + c; every product is exact in f32. */
static void test_score_and_select(void **state)
{
    (void)state;
    pred *p = NULL;
    assert_int_equal(pred_new(3, 4, 2, &p, NULL), 0);
    p->A[0 * 3 + 0] = 1.0f;
    p->A[1 * 3 + 1] = 1.0f;
    const float B[4 * 2] = { 1, 0, 0, 1, 1, 1, -1, 0 };
    const float c[4] = { 0.0f, 0.5f, -1.0f, 2.0f };
    memcpy(p->B, B, sizeof B);
    memcpy(p->c, c, sizeof c);

    const float X[2 * 3] = { 1.0f, 2.0f, 7.0f, -3.0f, 0.25f, 1.0f };
    float H[2 * 2], S[2 * 4];
    pred_score(p, X, 2, H, S);
    const float want[2 * 4] = { 1.0f, 2.5f, 2.0f, 1.0f, -3.0f, 0.75f, -3.75f, 5.0f };
    for (int i = 0; i < 8; i++)
        assert_float_equal(S[i], want[i], 0.0f);

    /* active iff s > tau, strictly; ids ascending */
    float h[2], s[4];
    int32_t idx[4];
    p->tau = 1.0f;
    assert_int_equal(pred_select(p, X, h, s, idx), 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);
    p->tau = -10.0f;
    assert_int_equal(pred_select(p, X + 3, h, s, idx), 4);
    for (int j = 0; j < 4; j++)
        assert_int_equal(idx[j], j);
    p->tau = 5.0f;
    assert_int_equal(pred_select(p, X + 3, h, s, idx), 0);
    pred_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_rank),
        cmocka_unit_test(test_score_and_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
