/* test_layout_activity.c: cmocka tests of the activity criteria
 * (layout/activity.h): the stored names exactly as format.h section 4
 * specifies them, both parsers, the message list, and the test itself
 * against a double-precision reference. */
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
    assert_null(act_name(ACT_COUNT));
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

static void test_gated_flags(void **state)
{
    (void)state;
    char buf[64];
    act_gated_flags(buf, sizeof buf);
    assert_string_equal(buf, "silu, gate or product");
    act_gated_flags(buf, 8);    /* too small: cut at a whole name, terminated */
    assert_string_equal(buf, "silu");
    act_gated_flags(buf, 1);
    assert_string_equal(buf, "");
}

static void test_values(void **state)
{
    (void)state;
    const float v[] = { -30.0f, -4.5f, -1.0f, -0.125f, -0.0f, 0.0f, 1e-7f, 0.5f, 2.0f, 17.0f };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        float g = v[i], u = v[(i + 3) % 10];
        double ref = (double)g / (1.0 + exp(-(double)g));
        assert_true(fabs((double)act_silu(g) - ref) <= 1e-6 * (1.0 + fabs(ref)));
        assert_true(act_value(ACT_RELU, g, u) == u);
        assert_true(act_value(ACT_SILU, g, u) == act_silu(g));
        assert_true(act_value(ACT_GATE, g, u) == fabsf(act_silu(g)));
        assert_true(act_value(ACT_PRODUCT, g, u) == fabsf(act_silu(g) * u));
        /* strictly above the threshold */
        assert_int_equal(act_is_active(ACT_RELU, g, u, 0.0), u > 0.0f);
        float t = fabsf(act_silu(g));
        assert_false(act_is_active(ACT_GATE, g, u, t));
        assert_true(act_is_active(ACT_GATE, g, u, nextafterf(t, -INFINITY)));
    }
    /* the exact zeros of ReLU: -0 and 0 are inactive */
    assert_false(act_is_active(ACT_RELU, 5.0f, -0.0f, 0.0));
    assert_false(act_is_active(ACT_RELU, 5.0f, 0.0f, 0.0));
    assert_true(act_is_active(ACT_RELU, -5.0f, 1e-30f, 0.0));
    assert_false(act_is_active(ACT_PRODUCT, NAN, 1.0f, 0.0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_gated_flags),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
