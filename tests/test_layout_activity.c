/* test_layout_activity.c: cmocka tests of the activation functions and the
 * activity criteria (layout/activity.h): the stored names exactly as
 * format.h section 4 specifies them, both parsers, the message list, each
 * function's term with its exact comparison, and the test itself against a
 * double-precision reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "activity.h"

static void test_names(void **state)
{
    (void)state;
    /* the stored strings are part of the store format: never change them */
    assert_string_equal(act_name(ACT_RELU), "relu:up>0");
    assert_string_equal(act_name(ACT_SILU), "gated:silu(gate)>act_threshold");
    assert_string_equal(act_name(ACT_GATE), "gated:|silu(gate)|>act_threshold");
    assert_string_equal(act_name(ACT_PRODUCT), "gated:|silu(gate)*up|>act_threshold");
    assert_string_equal(act_name(ACT_EXACT), "exact:term!=0");
    assert_null(act_name(ACT_COUNT));
    assert_false(act_thresholded(ACT_RELU));
    assert_false(act_thresholded(ACT_EXACT));
    assert_true(act_thresholded(ACT_PRODUCT));
    assert_null(act_flag((act_crit)-1));
    assert_false(act_gated(ACT_RELU));
    assert_false(act_gated(ACT_COUNT));
    for (int i = 0; i < ACT_COUNT; i++) {
        act_crit c = ACT_COUNT;
        assert_int_equal(act_parse(act_name((act_crit)i), &c), 0);
        assert_int_equal(c, i);
        c = ACT_COUNT;
        assert_int_equal(act_parse_flag(act_flag((act_crit)i), &c), 0);
        assert_int_equal(c, i);
        assert_int_equal(act_gated((act_crit)i), i != ACT_RELU);
    }
    act_crit c = ACT_GATE;
    assert_int_equal(act_parse(NULL, &c), -1);
    assert_int_equal(act_parse("relu", &c), -1);
    assert_int_equal(act_parse("gated:|silu(gate)|>act_threshold ", &c), -1);
    assert_int_equal(act_parse_flag("Product", &c), -1);
    assert_int_equal(act_parse_flag(NULL, &c), -1);
    assert_int_equal(c, ACT_GATE);
    assert_int_equal(act_parse_flag("product", &c), 0);
    assert_int_equal(c, ACT_PRODUCT);
}

static void test_fn_names(void **state)
{
    (void)state;
    const char *want[ACT_FN_COUNT] = { "relu", "silu", "fatrelu", "drelu", "cats" };
    for (int i = 0; i < ACT_FN_COUNT; i++) {
        act_fn f = ACT_FN_COUNT;
        assert_string_equal(act_fn_name((act_fn)i), want[i]);
        assert_int_equal(act_fn_parse(want[i], &f), 0);
        assert_int_equal(f, i);
        assert_int_equal(act_fn_exact((act_fn)i), i != ACT_FN_SILU);
        assert_int_equal(act_fn_has_param((act_fn)i), i == ACT_FN_FATRELU || i == ACT_FN_CATS);
    }
    act_fn f = ACT_FN_SILU;
    assert_null(act_fn_name(ACT_FN_COUNT));
    assert_int_equal(act_fn_parse("gelu", &f), -1);
    assert_int_equal(act_fn_parse(NULL, &f), -1);
    assert_int_equal(f, ACT_FN_SILU);
    act_crit c = ACT_COUNT;
    assert_int_equal(act_exact_crit((act_spec){ ACT_FN_RELU, 0, 0 }, &c), 0);
    assert_int_equal(c, ACT_RELU);
    for (int i = 0; i < ACT_FN_COUNT; i++) {
        c = ACT_COUNT;
        int rc = act_exact_crit((act_spec){ (act_fn)i, 1, 0 }, &c);
        assert_int_equal(rc, i == ACT_FN_SILU ? -1 : 0);
        assert_int_equal(c, i == ACT_FN_SILU ? ACT_COUNT : ACT_EXACT);
    }
}

/* Each function's term, its comparison at the parameter exactly, and the
 * exact criterion (active iff the term is non-zero). */
static void test_terms(void **state)
{
    (void)state;
    const float v[] = { -3.0f, -0.5f, -0.0f, 0.0f, 0.0099999998f, 0.01f, 0.25f, 2.0f };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
            float g = v[i], u = v[k], p = 0.01f, s = act_silu(g);
            float relu_g = g > 0 ? g : 0, relu_u = u > 0 ? u : 0;
            assert_true(act_term((act_spec){ ACT_FN_RELU, 0, 0 }, g, u) == relu_u);
            assert_true(act_term((act_spec){ ACT_FN_RELU, 1, 0 }, g, u) == relu_g * u);
            assert_true(act_term((act_spec){ ACT_FN_SILU, 1, 0 }, g, u) == s * u);
            assert_true(act_term((act_spec){ ACT_FN_DRELU, 1, 0 }, g, u) == relu_g * relu_u);
            /* FATReLU keeps the gate at or above the threshold (torch.ge) */
            assert_true(act_term((act_spec){ ACT_FN_FATRELU, 1, p }, g, u) == (g >= p ? g : 0.0f) * u);
            /* CATS zeroes silu(gate) at or below the threshold in magnitude */
            act_spec cats = { ACT_FN_CATS, 1, fabsf(s) };
            assert_true(act_term(cats, g, u) == 0.0f);
            cats.param = nextafterf(fabsf(s), 0.0f);
            assert_true(act_term(cats, g, u) == (fabsf(s) > cats.param ? s * u : 0.0f));
            act_spec all[] = { { ACT_FN_RELU, 0, 0 }, { ACT_FN_RELU, 1, 0 }, { ACT_FN_DRELU, 1, 0 },
                               { ACT_FN_FATRELU, 1, p }, { ACT_FN_CATS, 1, 0.1f } };
            for (size_t a = 0; a < sizeof all / sizeof *all; a++) {
                act_crit c;
                assert_int_equal(act_exact_crit(all[a], &c), 0);
                assert_int_equal(act_is_active(c, all[a], g, u, 0.0), act_term(all[a], g, u) != 0.0f);
            }
        }
    assert_true(act_term((act_spec){ ACT_FN_FATRELU, 1, 0.01f }, 0.01f, 2.0f) == 0.02f);
    assert_true(act_term((act_spec){ ACT_FN_FATRELU, 1, 0.01f }, nextafterf(0.01f, 0.0f), 2.0f) == 0.0f);
    assert_true(act_term((act_spec){ ACT_FN_DRELU, 1, 0 }, 1.0f, -1.0f) == 0.0f);
    assert_false(act_is_active(ACT_EXACT, (act_spec){ ACT_FN_DRELU, 1, 0 }, 1.0f, -1.0f, 0.0));
    assert_true(act_is_active(ACT_EXACT, (act_spec){ ACT_FN_DRELU, 1, 0 }, 1.0f, 1e-30f, 0.0));
}

static void test_gated_flags(void **state)
{
    (void)state;
    char buf[64];
    act_thresholded_flags(buf, sizeof buf);
    assert_string_equal(buf, "silu, gate or product");
    act_thresholded_flags(buf, 8);    /* too small: cut at a whole name, terminated */
    assert_string_equal(buf, "silu");
    act_thresholded_flags(buf, 1);
    assert_string_equal(buf, "");
}

static void test_values(void **state)
{
    (void)state;
    const act_spec sw = { ACT_FN_SILU, 1, 0 };
    const float v[] = { -30.0f, -4.5f, -1.0f, -0.125f, -0.0f, 0.0f, 1e-7f, 0.5f, 2.0f, 17.0f };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        float g = v[i], u = v[(i + 3) % 10];
        double ref = (double)g / (1.0 + exp(-(double)g));
        assert_true(fabs((double)act_silu(g) - ref) <= 1e-6 * (1.0 + fabs(ref)));
        assert_true(act_value(ACT_RELU, sw, g, u) == u);
        assert_true(act_value(ACT_SILU, sw, g, u) == act_silu(g));
        assert_true(act_value(ACT_GATE, sw, g, u) == fabsf(act_silu(g)));
        assert_true(act_value(ACT_PRODUCT, sw, g, u) == fabsf(act_silu(g) * u));
        assert_true(act_value(ACT_EXACT, sw, g, u) == fabsf(act_silu(g) * u));
        /* strictly above the threshold */
        assert_int_equal(act_is_active(ACT_RELU, sw, g, u, 0.0), u > 0.0f);
        float t = fabsf(act_silu(g));
        assert_false(act_is_active(ACT_GATE, sw, g, u, t));
        assert_true(act_is_active(ACT_GATE, sw, g, u, nextafterf(t, -INFINITY)));
    }
    /* the exact zeros of ReLU: -0 and 0 are inactive */
    assert_false(act_is_active(ACT_RELU, sw, 5.0f, -0.0f, 0.0));
    assert_false(act_is_active(ACT_RELU, sw, 5.0f, 0.0f, 0.0));
    assert_true(act_is_active(ACT_RELU, sw, -5.0f, 1e-30f, 0.0));
    assert_false(act_is_active(ACT_PRODUCT, sw, NAN, 1.0f, 0.0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_fn_names),
        cmocka_unit_test(test_terms),
        cmocka_unit_test(test_gated_flags),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
