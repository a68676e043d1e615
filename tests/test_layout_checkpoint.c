/* test_layout_checkpoint.c: the table of checkpoint tensors (checkpoint.h)
 * against hand-written lists: for a 2-layer OPT and a 2-layer Llama config,
 * every name, shape, layer, role and optional flag, in store order (what
 * inflash-pack writes to dense.bin and ffn.bin) and in forward order (what
 * inflash-mkmodel writes), and the lookups the client makes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

/* One expected tensor: name, shape (d1 == 0: a vector), role, optional. */
typedef struct {
    const char *name;
    int64_t     d0, d1;
    ckpt_role   role;
    int         optional;
} expect;

/* OPT: d_model 8, 2 heads, d_ffn 16, vocab 10, max_pos 12 (+2), tied. */
static const hp_config OPT = {
    .family = HP_OPT, .d_model = 8, .n_layers = 2, .n_heads = 2, .n_kv_heads = 2, .d_ffn = 16,
    .vocab_size = 10, .max_pos = 12, .pos_offset = 2, .act = ACT_FN_RELU, .tie_embeddings = 1,
};

/* Llama: d_model 8, 4 heads of 2, 2 kv heads (kv width 4), d_ffn 12,
 * vocab 10, untied. */
static const hp_config LLAMA = {
    .family = HP_LLAMA, .d_model = 8, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ffn = 12,
    .vocab_size = 10, .max_pos = 16, .act = ACT_FN_SILU, .gated = 1, .tie_embeddings = 0,
};

#define P "model.decoder."
#define DN CKPT_DENSE

static const expect opt_store[] = {
    {P "embed_tokens.weight", 10, 8, DN, 0},
    {P "embed_positions.weight", 14, 8, DN, 0},
    {P "layers.0.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.q_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.k_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.k_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.v_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.v_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.out_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.out_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.0.self_attn_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.0.fc1.bias", 16, 0, DN, 0},
    {P "layers.0.fc2.bias", 8, 0, DN, 0},
    {P "layers.0.final_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.0.final_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.q_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.k_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.k_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.v_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.v_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.out_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.out_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.1.self_attn_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.1.fc1.bias", 16, 0, DN, 0},
    {P "layers.1.fc2.bias", 8, 0, DN, 0},
    {P "layers.1.final_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.1.final_layer_norm.bias", 8, 0, DN, 0},
    {P "final_layer_norm.weight", 8, 0, DN, 0},
    {P "final_layer_norm.bias", 8, 0, DN, 0},
    {"lm_head.weight", 10, 8, DN, 1},
    {P "layers.0.fc1.weight", 16, 8, CKPT_UP, 0},
    {P "layers.0.fc2.weight", 8, 16, CKPT_DOWN, 0},
    {P "layers.1.fc1.weight", 16, 8, CKPT_UP, 0},
    {P "layers.1.fc2.weight", 8, 16, CKPT_DOWN, 0},
};

static const expect opt_forward[] = {
    {P "embed_tokens.weight", 10, 8, DN, 0},
    {P "embed_positions.weight", 14, 8, DN, 0},
    {P "layers.0.self_attn_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.0.self_attn_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.q_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.k_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.k_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.v_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.v_proj.bias", 8, 0, DN, 0},
    {P "layers.0.self_attn.out_proj.weight", 8, 8, DN, 0},
    {P "layers.0.self_attn.out_proj.bias", 8, 0, DN, 0},
    {P "layers.0.final_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.0.final_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.0.fc1.weight", 16, 8, CKPT_UP, 0},
    {P "layers.0.fc1.bias", 16, 0, DN, 0},
    {P "layers.0.fc2.weight", 8, 16, CKPT_DOWN, 0},
    {P "layers.0.fc2.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.1.self_attn_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.q_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.k_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.k_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.v_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.v_proj.bias", 8, 0, DN, 0},
    {P "layers.1.self_attn.out_proj.weight", 8, 8, DN, 0},
    {P "layers.1.self_attn.out_proj.bias", 8, 0, DN, 0},
    {P "layers.1.final_layer_norm.weight", 8, 0, DN, 0},
    {P "layers.1.final_layer_norm.bias", 8, 0, DN, 0},
    {P "layers.1.fc1.weight", 16, 8, CKPT_UP, 0},
    {P "layers.1.fc1.bias", 16, 0, DN, 0},
    {P "layers.1.fc2.weight", 8, 16, CKPT_DOWN, 0},
    {P "layers.1.fc2.bias", 8, 0, DN, 0},
    {P "final_layer_norm.weight", 8, 0, DN, 0},
    {P "final_layer_norm.bias", 8, 0, DN, 0},
    {"lm_head.weight", 10, 8, DN, 1},
};

#undef P
#define P "model.layers."

static const expect llama_store[] = {
    {"model.embed_tokens.weight", 10, 8, DN, 0},
    {P "0.input_layernorm.weight", 8, 0, DN, 0},
    {P "0.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "0.self_attn.k_proj.weight", 4, 8, DN, 0},
    {P "0.self_attn.v_proj.weight", 4, 8, DN, 0},
    {P "0.self_attn.o_proj.weight", 8, 8, DN, 0},
    {P "0.post_attention_layernorm.weight", 8, 0, DN, 0},
    {P "1.input_layernorm.weight", 8, 0, DN, 0},
    {P "1.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "1.self_attn.k_proj.weight", 4, 8, DN, 0},
    {P "1.self_attn.v_proj.weight", 4, 8, DN, 0},
    {P "1.self_attn.o_proj.weight", 8, 8, DN, 0},
    {P "1.post_attention_layernorm.weight", 8, 0, DN, 0},
    {"model.norm.weight", 8, 0, DN, 0},
    {"lm_head.weight", 10, 8, DN, 0},
    {P "0.mlp.up_proj.weight", 12, 8, CKPT_UP, 0},
    {P "0.mlp.gate_proj.weight", 12, 8, CKPT_GATE, 0},
    {P "0.mlp.down_proj.weight", 8, 12, CKPT_DOWN, 0},
    {P "1.mlp.up_proj.weight", 12, 8, CKPT_UP, 0},
    {P "1.mlp.gate_proj.weight", 12, 8, CKPT_GATE, 0},
    {P "1.mlp.down_proj.weight", 8, 12, CKPT_DOWN, 0},
};

static const expect llama_forward[] = {
    {"model.embed_tokens.weight", 10, 8, DN, 0},
    {P "0.input_layernorm.weight", 8, 0, DN, 0},
    {P "0.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "0.self_attn.k_proj.weight", 4, 8, DN, 0},
    {P "0.self_attn.v_proj.weight", 4, 8, DN, 0},
    {P "0.self_attn.o_proj.weight", 8, 8, DN, 0},
    {P "0.post_attention_layernorm.weight", 8, 0, DN, 0},
    {P "0.mlp.gate_proj.weight", 12, 8, CKPT_GATE, 0},
    {P "0.mlp.up_proj.weight", 12, 8, CKPT_UP, 0},
    {P "0.mlp.down_proj.weight", 8, 12, CKPT_DOWN, 0},
    {P "1.input_layernorm.weight", 8, 0, DN, 0},
    {P "1.self_attn.q_proj.weight", 8, 8, DN, 0},
    {P "1.self_attn.k_proj.weight", 4, 8, DN, 0},
    {P "1.self_attn.v_proj.weight", 4, 8, DN, 0},
    {P "1.self_attn.o_proj.weight", 8, 8, DN, 0},
    {P "1.post_attention_layernorm.weight", 8, 0, DN, 0},
    {P "1.mlp.gate_proj.weight", 12, 8, CKPT_GATE, 0},
    {P "1.mlp.up_proj.weight", 12, 8, CKPT_UP, 0},
    {P "1.mlp.down_proj.weight", 8, 12, CKPT_DOWN, 0},
    {"model.norm.weight", 8, 0, DN, 0},
    {"lm_head.weight", 10, 8, DN, 0},
};

#undef P
#undef DN

/* ckpt_list(hp, order) is exactly want[n]; the layer is read off the name. */
static void check_list(const hp_config *hp, ckpt_order order, const expect *want, size_t n)
{
    ckpt_tensor *t;
    size_t got;
    assert_int_equal(ckpt_list(hp, order, &t, &got), 0);
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        const char *at = strstr(want[i].name, "layers.");
        int64_t layer = at ? strtoll(at + 7, NULL, 10) : -1;
        assert_string_equal(t[i].name, want[i].name);
        assert_int_equal(t[i].ndim, want[i].d1 ? 2 : 1);
        assert_int_equal(t[i].shape[0], want[i].d0);
        assert_int_equal(t[i].shape[1], want[i].d1);
        assert_int_equal(t[i].role, want[i].role);
        assert_int_equal(t[i].optional, want[i].optional);
        assert_int_equal(t[i].layer, layer);
        assert_int_equal(t[i].weight, t[i].entry->weight);
        assert_int_equal(t[i].role, ckpt_role_of(t[i].weight));
    }
    free(t);
}

#define N(a) (sizeof a / sizeof a[0])

static void test_opt(void **state)
{
    (void)state;
    check_list(&OPT, CKPT_STORE_ORDER, opt_store, N(opt_store));
    check_list(&OPT, CKPT_FORWARD_ORDER, opt_forward, N(opt_forward));
}

static void test_llama(void **state)
{
    (void)state;
    check_list(&LLAMA, CKPT_STORE_ORDER, llama_store, N(llama_store));
    check_list(&LLAMA, CKPT_FORWARD_ORDER, llama_forward, N(llama_forward));
}

/* What the client looks up: one entry per weight and family, the names
 * and sizes of single tensors, the ones a checkpoint may lack. */
static void test_lookup(void **state)
{
    (void)state;
    char buf[CKPT_NAME_MAX];
    for (int f = HP_OPT; f <= HP_LLAMA; f++) {
        const hp_config *hp = f == HP_OPT ? &OPT : &LLAMA;
        ckpt_tensor *t;
        size_t n;
        assert_int_equal(ckpt_list(hp, CKPT_STORE_ORDER, &t, &n), 0);
        for (size_t i = 0; i < n; i++)
            assert_ptr_equal(ckpt_find(hp->family, t[i].weight), t[i].entry);
        free(t);
    }
    const ckpt_entry *e = ckpt_find(HP_LLAMA, CKPT_WK);
    assert_non_null(e);
    assert_string_equal(ckpt_name(e, 31, buf, sizeof buf), "model.layers.31.self_attn.k_proj.weight");
    assert_int_equal(ckpt_numel(e, &LLAMA), 4 * 8);
    e = ckpt_find(HP_OPT, CKPT_POS_EMB);
    assert_non_null(e);
    assert_string_equal(ckpt_name(e, 5, buf, sizeof buf), "model.decoder.embed_positions.weight");
    assert_int_equal(ckpt_numel(e, &OPT), 14 * 8);
    /* the family has no such tensor */
    assert_null(ckpt_find(HP_LLAMA, CKPT_POS_EMB));
    assert_null(ckpt_find(HP_LLAMA, CKPT_ATTN_NORM_B));
    assert_null(ckpt_find(HP_LLAMA, CKPT_FINAL_NORM_B));
    assert_null(ckpt_find(HP_OPT, CKPT_GATE_W));
    assert_null(ckpt_find(HP_OPT, CKPT_GATE_B));
    /* Llama biases: the client takes them if a store has them; not listed */
    static const ckpt_weight bias[] = {CKPT_BQ, CKPT_BK, CKPT_BV, CKPT_BO, CKPT_UP_B, CKPT_GATE_B, CKPT_DOWN_B};
    for (size_t i = 0; i < N(bias); i++) {
        e = ckpt_find(HP_LLAMA, bias[i]);
        assert_non_null(e);
        assert_int_equal(e->presence, CKPT_IF_PRESENT);
        assert_int_equal(ckpt_find(HP_OPT, bias[i]) ? ckpt_find(HP_OPT, bias[i])->presence : CKPT_ALWAYS,
                         CKPT_ALWAYS);
    }
    assert_string_equal(ckpt_name(ckpt_find(HP_LLAMA, CKPT_GATE_B), 1, buf, sizeof buf),
                        "model.layers.1.mlp.gate_proj.bias");
    assert_int_equal(ckpt_find(HP_OPT, CKPT_LM_HEAD)->presence, CKPT_UNLESS_TIED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt),
        cmocka_unit_test(test_llama),
        cmocka_unit_test(test_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
