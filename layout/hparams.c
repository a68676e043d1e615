/* hparams.c: hyperparameters from a Hugging Face config.json (OPT with ReLU,
 * Llama/Mistral with SwiGLU), with every unsupported feature named and every
 * value bounds-checked. */
#include "hparams.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

const char *hp_family_name(hp_family f) { return f == HP_OPT ? "opt" : "llama"; }

int hp_family_parse(const char *s, hp_family *out)
{
    if (s && strcmp(s, "opt") == 0) { *out = HP_OPT; return 0; }
    if (s && strcmp(s, "llama") == 0) { *out = HP_LLAMA; return 0; }
    return -1;
}

static int range(const char *what, const char *key, int64_t v, int64_t lo, int64_t hi, ierr *err)
{
    if (v < lo || v > hi)
        return ierr_set(err, -EINVAL, "%s: %s = %lld is out of range [%lld, %lld]", what, key,
                        (long long)v, (long long)lo, (long long)hi);
    return 0;
}

int hp_validate(const hp_config *hp, const char *what, ierr *err)
{
    int rc;
    if ((rc = range(what, "d_model", hp->d_model, 1, 1 << 20, err)) ||
        (rc = range(what, "n_layers", hp->n_layers, 1, 4096, err)) ||
        (rc = range(what, "n_heads", hp->n_heads, 1, 1 << 16, err)) ||
        (rc = range(what, "n_kv_heads", hp->n_kv_heads, 1, hp->n_heads, err)) ||
        (rc = range(what, "d_ffn", hp->d_ffn, 1, 1 << 22, err)) ||
        (rc = range(what, "vocab_size", hp->vocab_size, 1, 1 << 22, err)) ||
        (rc = range(what, "max_pos", hp->max_pos, 1, 1 << 24, err)) ||
        (rc = range(what, "pos_offset", hp->pos_offset, 0, 16, err)) ||
        (rc = range(what, "bos_id", hp->bos_id, -1, hp->vocab_size - 1, err)) ||
        (rc = range(what, "eos_id", hp->eos_id, -1, hp->vocab_size - 1, err)) ||
        (rc = range(what, "pad_id", hp->pad_id, -1, hp->vocab_size - 1, err)) ||
        (rc = range(what, "sliding_window", hp->sliding_window, 0, INT64_MAX, err)))
        return rc;
    if (hp->d_model % hp->n_heads)
        return ierr_set(err, -EINVAL, "%s: hidden size %lld is not a multiple of the %lld heads", what,
                        (long long)hp->d_model, (long long)hp->n_heads);
    if (hp->n_heads % hp->n_kv_heads)
        return ierr_set(err, -EINVAL, "%s: %lld heads are not a multiple of the %lld key/value heads", what,
                        (long long)hp->n_heads, (long long)hp->n_kv_heads);
    if (!(hp->norm_eps > 0 && hp->norm_eps < 1))
        return ierr_set(err, -EINVAL, "%s: norm eps %g is out of range (0, 1)", what, hp->norm_eps);
    if (hp->family == HP_OPT) {
        if (hp->act != ACT_FN_RELU || hp->gated || hp->rope_theta != 0)
            return ierr_set(err, -EINVAL, "%s: opt needs relu, no gate and no rope", what);
    } else if (hp->family == HP_LLAMA) {
        if (hp->act != ACT_FN_SILU || !hp->gated)
            return ierr_set(err, -EINVAL, "%s: llama needs a silu gate", what);
        if (!(hp->rope_theta > 0 && hp->rope_theta <= 1e12))
            return ierr_set(err, -EINVAL, "%s: rope theta %g is out of range (0, 1e12]", what, hp->rope_theta);
    } else {
        return ierr_set(err, -EINVAL, "%s: unknown family %d", what, (int)hp->family);
    }
    if (hp->tie_embeddings != 0 && hp->tie_embeddings != 1)
        return ierr_set(err, -EINVAL, "%s: tie_embeddings must be 0 or 1", what);
    return 0;
}

/* ---- typed access to config keys ---------------------------------------- */

typedef struct {
    json_t     *root;
    const char *what;
    ierr       *err;
} cfg;

/* absent and null are the same: "not set" */
static json_t *get(const cfg *c, const char *key)
{
    json_t *v = json_object_get(c->root, key);
    return json_is_null(v) ? NULL : v;
}

static int get_int(const cfg *c, const char *key, int required, int64_t def, int64_t *out)
{
    json_t *v = get(c, key);
    if (!v) {
        if (required)
            return ierr_set(c->err, -EINVAL, "%s: missing \"%s\"", c->what, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return ierr_set(c->err, -EINVAL, "%s: \"%s\" must be an integer", c->what, key);
    *out = json_integer_value(v);
    return 0;
}

static int get_real(const cfg *c, const char *key, int required, double def, double *out)
{
    json_t *v = get(c, key);
    if (!v) {
        if (required)
            return ierr_set(c->err, -EINVAL, "%s: missing \"%s\"", c->what, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return ierr_set(c->err, -EINVAL, "%s: \"%s\" must be a number", c->what, key);
    *out = json_number_value(v);
    return 0;
}

static int get_bool(const cfg *c, const char *key, int def, int *out)
{
    json_t *v = get(c, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return ierr_set(c->err, -EINVAL, "%s: \"%s\" must be true or false", c->what, key);
    *out = json_is_true(v);
    return 0;
}

/* A string key; def if absent. */
static int get_str(const cfg *c, const char *key, const char *def, const char **out)
{
    json_t *v = get(c, key);
    if (!v) {
        if (!def)
            return ierr_set(c->err, -EINVAL, "%s: missing \"%s\"", c->what, key);
        *out = def;
        return 0;
    }
    if (!json_is_string(v))
        return ierr_set(c->err, -EINVAL, "%s: \"%s\" must be a string", c->what, key);
    *out = json_string_value(v);
    return 0;
}

/* bos/eos/pad ids: an integer, absent/null (-1), or a list (its first id). */
static int get_token_id(const cfg *c, const char *key, int64_t *out)
{
    json_t *v = get(c, key);
    if (json_is_array(v))
        v = json_array_size(v) ? json_array_get(v, 0) : NULL;
    if (!v) {
        *out = -1;
        return 0;
    }
    if (!json_is_integer(v))
        return ierr_set(c->err, -EINVAL, "%s: \"%s\" must be a token id", c->what, key);
    *out = json_integer_value(v);
    return 0;
}

/* A boolean key that must have the supported value (def when absent). */
static int require_bool(const cfg *c, const char *key, int def, int want)
{
    int v = def, rc = get_bool(c, key, def, &v);
    if (rc)
        return rc;
    if (v != want)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"%s\": %s (inflash needs %s)", c->what, key,
                        v ? "true" : "false", want ? "true" : "false");
    return 0;
}

static int parse_opt(const cfg *c, hp_config *hp)
{
    const char *act;
    int64_t proj;
    int rc;
    hp->family = HP_OPT;
    if ((rc = get_int(c, "hidden_size", 1, 0, &hp->d_model)) ||
        (rc = get_int(c, "num_hidden_layers", 1, 0, &hp->n_layers)) ||
        (rc = get_int(c, "num_attention_heads", 1, 0, &hp->n_heads)) ||
        (rc = get_int(c, "ffn_dim", 1, 0, &hp->d_ffn)) ||
        (rc = get_int(c, "vocab_size", 1, 0, &hp->vocab_size)) ||
        (rc = get_int(c, "max_position_embeddings", 1, 0, &hp->max_pos)) ||
        (rc = get_int(c, "word_embed_proj_dim", 0, hp->d_model, &proj)) ||
        (rc = get_str(c, "activation_function", "relu", &act)) ||
        (rc = require_bool(c, "do_layer_norm_before", 1, 1)) ||
        (rc = require_bool(c, "enable_bias", 1, 1)) ||
        (rc = require_bool(c, "layer_norm_elementwise_affine", 1, 1)) ||
        (rc = require_bool(c, "_remove_final_layer_norm", 0, 0)) ||
        (rc = get_bool(c, "tie_word_embeddings", 1, &hp->tie_embeddings)))
        return rc;
    if (strcmp(act, "relu") != 0)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"activation_function\": \"%s\" (inflash needs relu)",
                        c->what, act);
    hp->n_kv_heads = hp->n_heads;
    hp->pos_offset = 2;
    hp->norm_eps = 1e-5;
    hp->rope_theta = 0;
    hp->act = ACT_FN_RELU;
    hp->gated = 0;
    if ((rc = hp_validate(hp, c->what, c->err)))
        return rc;
    if (proj != hp->d_model)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"word_embed_proj_dim\": %lld != hidden_size %lld",
                        c->what, (long long)proj, (long long)hp->d_model);
    return 0;
}

/* Mistral's "sliding_window": an integer >= 1, or null/absent for none;
 * "use_sliding_window": false (Qwen2-style configs) also means none. */
static int get_sliding_window(const cfg *c, int64_t *out)
{
    json_t *v = get(c, "sliding_window");
    int use = 1, rc = get_bool(c, "use_sliding_window", 1, &use);
    *out = 0;
    if (rc || !v || !use)
        return rc;
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        rc = ierr_set(c->err, -EINVAL, "%s: \"sliding_window\" must be an integer >= 1 or null, not %.40s",
                      c->what, s ? s : "?");
        free(s);
        return rc;
    }
    *out = json_integer_value(v);
    return 0;
}

static int parse_llama(const cfg *c, hp_config *hp)
{
    const char *act;
    int64_t head_dim;
    int rc;
    hp->family = HP_LLAMA;
    if ((rc = get_int(c, "hidden_size", 1, 0, &hp->d_model)) ||
        (rc = get_int(c, "intermediate_size", 1, 0, &hp->d_ffn)) ||
        (rc = get_int(c, "num_hidden_layers", 1, 0, &hp->n_layers)) ||
        (rc = get_int(c, "num_attention_heads", 1, 0, &hp->n_heads)) ||
        (rc = get_int(c, "num_key_value_heads", 0, hp->n_heads, &hp->n_kv_heads)) ||
        (rc = get_int(c, "vocab_size", 1, 0, &hp->vocab_size)) ||
        (rc = get_int(c, "max_position_embeddings", 1, 0, &hp->max_pos)) ||
        (rc = get_real(c, "rms_norm_eps", 1, 0, &hp->norm_eps)) ||
        (rc = get_real(c, "rope_theta", 0, 10000.0, &hp->rope_theta)) ||
        (rc = get_str(c, "hidden_act", NULL, &act)) ||
        (rc = require_bool(c, "attention_bias", 0, 0)) ||
        (rc = require_bool(c, "mlp_bias", 0, 0)) ||
        (rc = get_bool(c, "tie_word_embeddings", 0, &hp->tie_embeddings)) ||
        (rc = get_sliding_window(c, &hp->sliding_window)))
        return rc;
    if (strcmp(act, "silu") != 0)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"hidden_act\": \"%s\" (inflash needs silu)", c->what, act);
    if (get(c, "rope_scaling"))
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"rope_scaling\" (only plain RoPE is supported)", c->what);
    hp->pos_offset = 0;
    hp->act = ACT_FN_SILU;
    hp->gated = 1;
    if ((rc = hp_validate(hp, c->what, c->err)) ||
        (rc = get_int(c, "head_dim", 0, hp->d_model / hp->n_heads, &head_dim)))
        return rc;
    if (head_dim < 1 || head_dim > hp->d_model || head_dim * hp->n_heads != hp->d_model)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"head_dim\": %lld * %lld heads != hidden_size %lld",
                        c->what, (long long)head_dim, (long long)hp->n_heads, (long long)hp->d_model);
    return 0;
}

int hp_from_json(const char *text, size_t len, const char *what, hp_config *hp, ierr *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ierr_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", what, jerr.line, jerr.text);
    cfg c = { root, what, err };
    const char *type = NULL;
    int rc;
    memset(hp, 0, sizeof *hp);
    if (!json_is_object(root))
        rc = ierr_set(err, -EINVAL, "%s: not a JSON object", what);
    else if ((rc = get_token_id(&c, "bos_token_id", &hp->bos_id)) == 0 &&
             (rc = get_token_id(&c, "eos_token_id", &hp->eos_id)) == 0 &&
             (rc = get_token_id(&c, "pad_token_id", &hp->pad_id)) == 0 &&
             (rc = get_str(&c, "model_type", NULL, &type)) == 0) {
        if (strcmp(type, "opt") == 0)
            rc = parse_opt(&c, hp);
        else if (strcmp(type, "llama") == 0 || strcmp(type, "mistral") == 0)
            rc = parse_llama(&c, hp);
        else
            rc = ierr_set(err, -ENOTSUP, "%s: unsupported \"model_type\": \"%s\" (supported: opt, llama, mistral)",
                          what, type);
    }
    if (!rc)
        rc = hp_validate(hp, what, err);
    json_decref(root);
    return rc;
}
