/* test_layout_hparams.c: hp_from_json on the two real configs (OPT and
 * Llama), on the sparse Llama-family configs built from the Llama one
 * (ReLU-Llama, ProSparse, Bamboo, CATS), and on variants of them that must
 * fail with an error naming the file, the field and the value; the
 * act_params text both ways. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hparams.h"
#include "io.h"

static char *config_path(const char *model)
{
    static char buf[512];
    const char *shared = getenv("INFLASH_SHARED");
    snprintf(buf, sizeof buf, "%s/models/%s/config.json", shared ? shared : "../shared", model);
    return buf;
}

static json_t *load_config(const char *model)
{
    json_error_t jerr;
    json_t *root = json_load_file(config_path(model), 0, &jerr);
    if (!root)
        fail_msg("%s: %s", config_path(model), jerr.text);
    return root;
}

/* Parse a JSON value as if it were the file "cfg-under-test.json". */
static int parse(json_t *root, hp_config *hp, ierr *err)
{
    char *text = json_dumps(root, 0);
    int rc = hp_from_json(text, strlen(text), "cfg-under-test.json", hp, err);
    free(text);
    return rc;
}

/* The variant must fail with a one-line message holding both needles. */
static void expect_fail(json_t *root, const char *needle1, const char *needle2)
{
    hp_config hp;
    ierr err = IERR_INIT;
    int rc = parse(root, &hp, &err);
    if (rc == 0 || !strstr(err.msg, needle1) || (needle2 && !strstr(err.msg, needle2)))
        fail_msg("expected an error with \"%s\" / \"%s\", got %d: %s", needle1, needle2 ? needle2 : "", rc, err.msg);
    assert_non_null(strstr(err.msg, "cfg-under-test.json"));
    assert_null(strchr(err.msg, '\n'));
}

static void test_opt_real(void **state)
{
    (void)state;
    char *text;
    size_t len;
    ierr err = IERR_INIT;
    hp_config hp;
    assert_int_equal(io_read_file(config_path("opt-relu-shakespeare"), 1 << 20, &text, &len, &err), 0);
    int rc = hp_from_json(text, len, "config.json", &hp, &err);
    if (rc)
        fail_msg("%s", err.msg);
    free(text);
    assert_int_equal(hp.family, HP_OPT);
    assert_int_equal(hp.d_model, 256);
    assert_int_equal(hp.n_layers, 6);
    assert_int_equal(hp.n_heads, 4);
    assert_int_equal(hp.n_kv_heads, 4);
    assert_int_equal(hp.d_ffn, 1024);
    assert_int_equal(hp.vocab_size, 1024);
    assert_int_equal(hp.max_pos, 512);
    assert_int_equal(hp.pos_offset, 2);
    assert_true(hp.norm_eps == 1e-5);
    assert_true(hp.rope_theta == 0);
    assert_int_equal(hp.act, ACT_FN_RELU);
    assert_int_equal(hp.gated, 0);
    assert_int_equal(hp.tie_embeddings, 1);
    assert_int_equal(hp.bos_id, 2);
    assert_int_equal(hp.eos_id, 2);
    assert_int_equal(hp.pad_id, 1);
    assert_int_equal(hp_head_dim(&hp), 64);
    assert_int_equal(hp_bundle_bytes(&hp, FMT_F16), 2 * 256 * 2);
    assert_int_equal(hp_validate(&hp, "x", &err), 0);
}

static void test_llama_real(void **state)
{
    (void)state;
    json_t *root = load_config("stories260K");
    hp_config hp;
    ierr err = IERR_INIT;
    if (parse(root, &hp, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(hp.family, HP_LLAMA);
    assert_int_equal(hp.d_model, 64);
    assert_int_equal(hp.n_layers, 5);
    assert_int_equal(hp.n_heads, 8);
    assert_int_equal(hp.n_kv_heads, 4);
    assert_int_equal(hp.d_ffn, 172);
    assert_int_equal(hp.vocab_size, 512);
    assert_int_equal(hp.max_pos, 512);
    assert_int_equal(hp.pos_offset, 0);
    assert_true(hp.norm_eps == 1e-5);
    assert_true(hp.rope_theta == 10000.0);
    assert_int_equal(hp.act, ACT_FN_SILU);
    assert_int_equal(hp.gated, 1);
    assert_int_equal(hp.tie_embeddings, 1);
    assert_int_equal(hp.bos_id, 1);
    assert_int_equal(hp.eos_id, 2);
    assert_int_equal(hp.pad_id, -1);
    assert_int_equal(hp_bundle_bytes(&hp, FMT_F32), 3 * 64 * 4);

    /* defaults: no kv heads -> heads; no rope_theta -> 10000; no tie -> false;
     * mistral is the same family; eos may be a list */
    json_object_del(root, "num_key_value_heads");
    json_object_del(root, "rope_theta");
    json_object_del(root, "tie_word_embeddings");
    json_object_del(root, "head_dim");
    json_object_set_new(root, "model_type", json_string("mistral"));
    json_object_set_new(root, "eos_token_id", json_pack("[i,i]", 2, 0));
    if (parse(root, &hp, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(hp.family, HP_LLAMA);
    assert_int_equal(hp.n_kv_heads, 8);
    assert_true(hp.rope_theta == 10000.0);
    assert_int_equal(hp.tie_embeddings, 0);
    assert_int_equal(hp.eos_id, 2);
    assert_int_equal(hp.sliding_window, 0);
    json_decref(root);
}

static void with(const char *model, const char *key, json_t *value, const char *needle1, const char *needle2)
{
    json_t *root = load_config(model);
    if (value)
        json_object_set_new(root, key, value);
    else
        json_object_del(root, key);
    expect_fail(root, needle1, needle2);
    json_decref(root);
}

static void test_unsupported(void **state)
{
    (void)state;
    const char *opt = "opt-relu-shakespeare", *llama = "stories260K";
    with(opt, "model_type", json_string("gpt2"), "model_type", "gpt2");
    with(llama, "model_type", json_string("falcon"), "model_type", "falcon");
    with(opt, "model_type", NULL, "missing", "model_type");
    with(opt, "activation_function", json_string("gelu"), "activation_function", "gelu");
    with(llama, "hidden_act", json_string("gelu"), "hidden_act", "gelu");
    with(llama, "rope_scaling", json_pack("{s:s,s:f}", "type", "linear", "factor", 2.0), "rope_scaling", NULL);
    with(opt, "word_embed_proj_dim", json_integer(128), "word_embed_proj_dim", "128");
    with(opt, "do_layer_norm_before", json_false(), "do_layer_norm_before", NULL);
    with(opt, "enable_bias", json_false(), "enable_bias", NULL);
    with(llama, "attention_bias", json_true(), "attention_bias", NULL);
    with(llama, "head_dim", json_integer(16), "head_dim", NULL);
}

/* Mistral's sliding_window: an integer, or null / absent /
 * use_sliding_window false for none; anything else names key and value. */
static void test_sliding_window(void **state)
{
    (void)state;
    json_t *root = load_config("stories260K");
    hp_config hp;
    ierr err = IERR_INIT;
    json_object_set_new(root, "model_type", json_string("mistral"));
    json_object_set_new(root, "sliding_window", json_integer(4096));
    assert_int_equal(parse(root, &hp, &err), 0);
    assert_int_equal(hp.sliding_window, 4096);
    json_object_set_new(root, "use_sliding_window", json_false());
    assert_int_equal(parse(root, &hp, &err), 0);
    assert_int_equal(hp.sliding_window, 0);
    json_object_del(root, "use_sliding_window");
    json_object_set_new(root, "sliding_window", json_null());
    assert_int_equal(parse(root, &hp, &err), 0);
    assert_int_equal(hp.sliding_window, 0);
    json_decref(root);
    with("stories260K", "sliding_window", json_integer(0), "sliding_window", "0");
    with("stories260K", "sliding_window", json_integer(-3), "sliding_window", "-3");
    with("stories260K", "sliding_window", json_string("4k"), "sliding_window", "\"4k\"");
    with("stories260K", "sliding_window", json_real(4.5), "sliding_window", "4.5");
}

static void test_bad_values(void **state)
{
    (void)state;
    const char *opt = "opt-relu-shakespeare", *llama = "stories260K";
    with(opt, "hidden_size", NULL, "missing", "hidden_size");
    with(opt, "hidden_size", json_string("256"), "hidden_size", "integer");
    with(llama, "hidden_size", json_integer(-5), "d_model", "out of range");
    with(llama, "hidden_size", json_integer(250), "not a multiple", NULL);
    with(opt, "num_hidden_layers", json_integer(0), "n_layers", "out of range");
    with(opt, "vocab_size", json_integer((json_int_t)1 << 40), "vocab_size", "out of range");
    with(opt, "bos_token_id", json_integer(5000), "bos_id", "out of range");
    with(llama, "num_key_value_heads", json_integer(3), "not a multiple", NULL);
    with(llama, "num_key_value_heads", json_integer(16), "n_kv_heads", "out of range");
    with(llama, "rms_norm_eps", json_integer(0), "norm eps", NULL);
    with(llama, "rms_norm_eps", json_string("small"), "rms_norm_eps", "number");
    with(llama, "rope_theta", json_real(-1), "rope theta", NULL);
    with(llama, "tie_word_embeddings", json_integer(1), "tie_word_embeddings", "true or false");

    hp_config hp;
    ierr err = IERR_INIT;
    assert_int_not_equal(hp_from_json("{\"model_type\":", 14, "broken.json", &hp, &err), 0);
    assert_non_null(strstr(err.msg, "broken.json"));
    assert_non_null(strstr(err.msg, "invalid JSON"));
    assert_int_not_equal(hp_from_json("[1]", 3, "arr.json", &hp, &err), 0);
    assert_non_null(strstr(err.msg, "not a JSON object"));
    assert_int_not_equal(hp_from_json("", 0, "empty.json", &hp, &err), 0);
}

/* stories260K's config turned into model_type type with hidden_act act
 * (NULL: unchanged). */
static json_t *sparse_config(const char *type, const char *act)
{
    json_t *root = load_config("stories260K");
    json_object_set_new(root, "model_type", json_string(type));
    if (act)
        json_object_set_new(root, "hidden_act", json_string(act));
    return root;
}

static void expect_act(json_t *root, act_fn act, const float *params)
{
    hp_config hp;
    ierr err = IERR_INIT;
    if (parse(root, &hp, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(hp.family, HP_LLAMA);
    assert_int_equal(hp.gated, 1);
    assert_int_equal(hp.act, act);
    for (int64_t l = 0; l < HP_MAX_LAYERS; l++)
        assert_true(hp.act_param[l] == (params && l < hp.n_layers ? params[l] : 0.0f));
    json_decref(root);
}

static void test_sparse_families(void **state)
{
    (void)state;
    /* stories260K has 5 layers */
    const float fat[5] = { 0.01f, 0.01f, 0.01f, 0.01f, 0.01f }, cats[5] = { 0.5f, 0.25f, 0.0f, 1.5f, 0.125f };
    expect_act(sparse_config("llama", "relu"), ACT_FN_RELU, NULL);
    expect_act(sparse_config("mistral", "relu"), ACT_FN_RELU, NULL);
    json_t *r = sparse_config("sparsellama", "fatrelu");
    json_object_set_new(r, "hidden_act_param", json_real(0.01));
    expect_act(r, ACT_FN_FATRELU, fat);
    expect_act(sparse_config("sparsellama", "relu"), ACT_FN_RELU, NULL);
    expect_act(sparse_config("sparsellama", "silu"), ACT_FN_SILU, NULL);
    expect_act(sparse_config("bamboo", "relu"), ACT_FN_DRELU, NULL);
    r = sparse_config("sparse_llama", "silu");
    json_object_set_new(r, "thresholds", json_pack("[f,f,i,f,f]", 0.5, 0.25, 0, 1.5, 0.125));
    json_object_set_new(r, "use_sparse_model", json_true());
    json_object_set_new(r, "use_sparse_predictor", json_false());
    expect_act(r, ACT_FN_CATS, cats);
    r = sparse_config("sparse_mistral", NULL);
    json_object_set_new(r, "thresholds", json_pack("[f,f,i,f,f]", 0.5, 0.25, 0, 1.5, 0.125));
    expect_act(r, ACT_FN_CATS, cats);
    /* CATS without thresholds, or switched off, is plain SwiGLU (as its code) */
    expect_act(sparse_config("sparse_llama", NULL), ACT_FN_SILU, NULL);
    r = sparse_config("sparse_mistral", NULL);
    json_object_set_new(r, "thresholds", json_pack("[f,f,f,f,f]", 1.0, 1.0, 1.0, 1.0, 1.0));
    json_object_set_new(r, "use_sparse_model", json_false());
    expect_act(r, ACT_FN_SILU, NULL);
}

static void refuse(json_t *root, const char *needle1, const char *needle2)
{
    expect_fail(root, needle1, needle2);
    json_decref(root);
}

/* The sparse-family refusals: each names the key and the value. */
static void test_sparse_refused(void **state)
{
    (void)state;
    refuse(sparse_config("bamboo", "silu"), "hidden_act", "silu");
    refuse(sparse_config("bamboo", "fatrelu"), "hidden_act", "fatrelu");
    refuse(sparse_config("llama", "fatrelu"), "hidden_act", "fatrelu");
    refuse(sparse_config("sparse_llama", "relu"), "hidden_act", "relu");
    refuse(sparse_config("sparsellama", "gelu"), "hidden_act", "gelu");
    refuse(sparse_config("sparsellama", "fatrelu"), "missing", "hidden_act_param");
    json_t *r = sparse_config("sparsellama", "fatrelu");
    json_object_set_new(r, "hidden_act_param", json_real(-0.5));
    refuse(r, "hidden_act_param", "-0.5");
    r = sparse_config("sparsellama", "fatrelu");
    json_object_set_new(r, "hidden_act_param", json_string("0.01"));
    refuse(r, "hidden_act_param", "number");
    r = sparse_config("sparse_llama", NULL);
    json_object_set_new(r, "thresholds", json_pack("[f,f]", 0.5, 0.5));
    refuse(r, "thresholds", "list of 2");
    r = sparse_config("sparse_llama", NULL);
    json_object_set_new(r, "thresholds", json_pack("[f,f,s,f,f]", 0.5, 0.5, "x", 0.5, 0.5));
    refuse(r, "thresholds\"[2]", "not a number");
    r = sparse_config("sparse_llama", NULL);
    json_object_set_new(r, "thresholds", json_pack("[f,f,f,f,f]", 0.5, 0.5, 0.5, -1.0, 0.5));
    refuse(r, "thresholds\"[3]", "negative");
    r = sparse_config("sparse_llama", NULL);
    json_object_set_new(r, "thresholds", json_real(0.5));
    refuse(r, "thresholds", "not a list");
    const char *cats_keys[] = { "use_sparse_predictor", "use_relu", "use_resilu", "cut_pre_mlp", "cut_pre_attn" };
    for (size_t i = 0; i < sizeof cats_keys / sizeof *cats_keys; i++) {
        r = sparse_config("sparse_mistral", NULL);
        json_object_set_new(r, cats_keys[i], json_true());
        refuse(r, cats_keys[i], "true");
    }
    r = sparse_config("bamboo", "relu");
    json_object_set_new(r, "rope_scaling", json_pack("{s:s,s:f}", "type", "linear", "factor", 2.0));
    refuse(r, "rope_scaling", NULL);
    r = sparse_config("sparsellama", "relu");
    json_object_set_new(r, "mlp_bias", json_true());
    refuse(r, "mlp_bias", "true");
    refuse(sparse_config("sparse_gpt", NULL), "model_type", "sparse_gpt");
}

/* act_params as stored: every float back bit for bit; malformed text refused. */
static void test_act_params_text(void **state)
{
    (void)state;
    hp_config hp, back;
    ierr err = IERR_INIT;
    memset(&hp, 0, sizeof hp);
    hp.n_layers = 4;
    hp.act = ACT_FN_CATS;
    const float v[4] = { 0.1f, 0.0f, 3.4028235e38f, 1.17549435e-38f };
    for (int l = 0; l < 4; l++)
        hp.act_param[l] = v[l];
    char *t;
    assert_int_equal(hp_act_params_text(&hp, &t, &err), 0);
    assert_non_null(t);
    back = hp;
    memset(back.act_param, 0, sizeof back.act_param);
    assert_int_equal(hp_act_params_parse(t, &back, "s.sqlite", &err), 0);
    assert_memory_equal(back.act_param, hp.act_param, sizeof hp.act_param);
    free(t);
    assert_int_not_equal(hp_act_params_parse("0.1 0.2 0.3", &back, "s.sqlite", &err), 0);
    assert_non_null(strstr(err.msg, "s.sqlite"));
    assert_int_not_equal(hp_act_params_parse("0.1 0.2 0.3 0.4 0.5", &back, "s.sqlite", &err), 0);
    assert_int_not_equal(hp_act_params_parse("0.1 0.2 x 0.4", &back, "s.sqlite", &err), 0);
    assert_int_not_equal(hp_act_params_parse("0.1 0.2 nan 0.4", &back, "s.sqlite", &err), 0);
    hp.act = ACT_FN_DRELU;   /* none: no text */
    assert_int_equal(hp_act_params_text(&hp, &t, &err), 0);
    assert_null(t);
}

static void test_names(void **state)
{
    (void)state;
    hp_family f;
    act_fn a;
    assert_string_equal(hp_family_name(HP_OPT), "opt");
    assert_string_equal(hp_family_name(HP_LLAMA), "llama");
    assert_string_equal(act_fn_name(ACT_FN_RELU), "relu");
    assert_string_equal(act_fn_name(ACT_FN_SILU), "silu");
    assert_int_equal(hp_family_parse("llama", &f), 0);
    assert_int_equal(f, HP_LLAMA);
    assert_int_equal(hp_family_parse("gpt2", &f), -1);
    assert_int_equal(act_fn_parse("silu", &a), 0);
    assert_int_equal(a, ACT_FN_SILU);
    assert_int_equal(act_fn_parse("gelu", &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_real),
        cmocka_unit_test(test_llama_real),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_sparse_families),
        cmocka_unit_test(test_sparse_refused),
        cmocka_unit_test(test_act_params_text),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
