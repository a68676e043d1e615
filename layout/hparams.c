/* hparams.c: hyperparameters from a Hugging Face config.json (OPT with ReLU,
 * the Llama family with SwiGLU, gated ReLU, FATReLU, dReLU or CATS), with
 * every unsupported feature named and every value bounds-checked. */
#include "hparams.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
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

/* The activation parameters: finite and >= 0 in the layers of a function
 * that takes one, 0 everywhere else. n_layers is already in range. */
static int validate_act_params(const hp_config *hp, const char *what, ierr *err)
{
    int has = act_fn_has_param(hp->act);
    for (int64_t l = 0; l < HP_MAX_LAYERS; l++) {
        float p = hp->act_param[l];
        if (has && l < hp->n_layers ? !(isfinite(p) && p >= 0.0f) : p != 0.0f)
            return ierr_set(err, -EINVAL, "%s: layer %lld: activation parameter %g is not %s", what, (long long)l,
                            (double)p, has && l < hp->n_layers ? "finite and >= 0" : "0 (none expected)");
    }
    return 0;
}

int hp_check_dtype(const hp_config *hp, fmt_dtype t, const char *what, ierr *err)
{
    if (!fmt_is_store_dtype(t))
        return ierr_set(err, -EINVAL, "%s: store dtype must be f32, f16, q8_0 or q4_0, not %s", what,
                        fmt_dtype_name(t));
    if (fmt_bytes(t, (uint64_t)hp->d_model) == UINT64_MAX)
        return ierr_set(err, -EINVAL, "%s: %s needs rows that are whole blocks of %u values, but the hidden "
                        "size (rows of every matrix and each bundle part) is %lld; use f16 or f32",
                        what, fmt_dtype_name(t), FMT_QK, (long long)hp->d_model);
    return 0;
}

int hp_validate(const hp_config *hp, const char *what, ierr *err)
{
    int rc;
    if ((rc = range(what, "d_model", hp->d_model, 1, 1 << 20, err)) ||
        (rc = range(what, "n_layers", hp->n_layers, 1, HP_MAX_LAYERS, err)) ||
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
        if (!act_fn_name(hp->act) || !hp->gated)
            return ierr_set(err, -EINVAL, "%s: llama needs a gate and a known activation", what);
        if (!(hp->rope_theta > 0 && hp->rope_theta <= 1e12))
            return ierr_set(err, -EINVAL, "%s: rope theta %g is out of range (0, 1e12]", what, hp->rope_theta);
    } else {
        return ierr_set(err, -EINVAL, "%s: unknown family %d", what, (int)hp->family);
    }
    if (hp->tie_embeddings != 0 && hp->tie_embeddings != 1)
        return ierr_set(err, -EINVAL, "%s: tie_embeddings must be 0 or 1", what);
    return validate_act_params(hp, what, err);
}

/* Does v round to a finite float? (below FLT_MAX + half an ulp) */
static int fits_float(double v)
{
    return fabs(v) < 0x1.ffffffp127;
}

int hp_act_params_text(const hp_config *hp, char **out, ierr *err)
{
    *out = NULL;
    if (!act_fn_has_param(hp->act))
        return 0;
    if (hp->n_layers < 1 || hp->n_layers > HP_MAX_LAYERS)
        return ierr_set(err, -EINVAL, "act_params: n_layers %lld out of range", (long long)hp->n_layers);
    size_t cap = (size_t)hp->n_layers * 18 + 1, len = 0;   /* "%.9g" is at most 15 characters */
    char *t = malloc(cap);
    if (!t)
        return ierr_set(err, -ENOMEM, "act_params: out of memory");
    for (int64_t l = 0; l < hp->n_layers; l++)
        len += (size_t)snprintf(t + len, cap - len, l ? " %.9g" : "%.9g", (double)hp->act_param[l]);
    *out = t;
    return 0;
}

int hp_act_params_parse(const char *text, hp_config *hp, const char *what, ierr *err)
{
    const char *p = text;
    for (int64_t l = 0; l < hp->n_layers && l < HP_MAX_LAYERS; l++) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !fits_float(v))
            return ierr_set(err, -EINVAL, "%s: act_params: entry %lld is not a number", what, (long long)l);
        hp->act_param[l] = (float)v;
        p = end;
        if (l + 1 < hp->n_layers && *p++ != ' ')
            return ierr_set(err, -EINVAL, "%s: act_params: %lld numbers, expected %lld", what, (long long)l + 1,
                            (long long)hp->n_layers);
    }
    if (*p)
        return ierr_set(err, -EINVAL, "%s: act_params: more than %lld numbers", what, (long long)hp->n_layers);
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

/* A JSON value as compact text for a message, cut to fit buf. */
static const char *show(const json_t *v, char *buf, size_t size)
{
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(buf, size, "%s", t ? t : "?");
    free(t);
    return buf;
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
        char buf[48];
        return ierr_set(c->err, -EINVAL, "%s: \"sliding_window\" must be an integer >= 1 or null, not %s", c->what,
                        show(v, buf, sizeof buf));
    }
    *out = json_integer_value(v);
    return 0;
}
/* A boolean key that must be false (absent: false) for the math we run. */
static int refuse_true(const cfg *c, const char *key)
{
    return require_bool(c, key, 0, 0);
}

/* CATS (ScalingIntelligence/CATS, model_type sparse_llama / sparse_mistral):
 * SparseLlamaForCausalLM.__init__ (experiments/models/sparse_silu/
 * ugly_utils.py lines 781-792) and SparseMistralforCausalLM.__init__
 * (experiments/models/sparse_mistral/sparse_silu.py lines 1153-1170) give
 * layer idx the threshold config.thresholds[idx] when use_sparse_model is
 * set and thresholds is not None; the MLP's forward (ugly_utils.py lines
 * 925-948, sparse_silu.py lines 993-1023) then zeroes act_fn(gate_proj(x))
 * where its abs() <= the threshold, before the product with up_proj(x).
 * Without thresholds (or with use_sparse_model false) the MLP is plain
 * SwiGLU. Options that change the math otherwise are refused. */
static int parse_cats(const cfg *c, hp_config *hp)
{
    int on = 1, rc;
    if ((rc = get_bool(c, "use_sparse_model", 1, &on)) || (rc = refuse_true(c, "use_sparse_predictor")) ||
        (rc = refuse_true(c, "use_relu")) || (rc = refuse_true(c, "use_resilu")) ||
        (rc = refuse_true(c, "cut_pre_mlp")) || (rc = refuse_true(c, "cut_pre_attn")))
        return rc;
    json_t *t = get(c, "thresholds");
    if (!on || !t)
        return 0;
    if (!json_is_array(t) || (int64_t)json_array_size(t) != hp->n_layers)
        return ierr_set(c->err, -ENOTSUP,
                        "%s: unsupported \"thresholds\": %s%zu (need a list of %lld numbers, one per layer)", c->what,
                        json_is_array(t) ? "a list of " : "not a list, ", json_is_array(t) ? json_array_size(t) : 0,
                        (long long)hp->n_layers);
    for (int64_t l = 0; l < hp->n_layers; l++) {
        json_t *v = json_array_get(t, (size_t)l);
        double x = json_is_number(v) ? json_number_value(v) : NAN;
        if (!(fits_float(x) && x >= 0))
            return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"thresholds\"[%lld]: %s (need a finite number >= 0)",
                            c->what, (long long)l, json_is_number(v) ? "negative or too large" : "not a number");
        hp->act_param[l] = (float)x;
    }
    hp->act = ACT_FN_CATS;
    return 0;
}

/* The FFN activation of a Llama-family config of model_type type, from
 * hidden_act act (activity.h has the table):
 *   llama, mistral  LlamaMLP / MistralMLP: down(ACT2FN[hidden_act](gate) * up);
 *                   silu, or relu (ReLU-Llama, SparseLLM/ReluLLaMA-7B).
 *   sparsellama     ProSparse (SparseLLM/prosparse-llama-2-7b): hidden_act
 *                   "fatrelu" applies FATReLU with threshold
 *                   hidden_act_param to the gate, keeping x where x >=
 *                   threshold: the FATReLU module of the authors' (THUNLP)
 *                   training code, forward: mask = torch.ge(x, threshold).
 *                   (The checkpoint's own modeling_sparsellama.py was not
 *                   at hand to confirm the comparison; vLLM's FatreluAndMul
 *                   uses F.threshold, i.e. x > threshold — the two differ
 *                   only for a gate exactly equal to the threshold.) relu
 *                   and silu as LlamaMLP.
 *   bamboo          BambooMLP (SJTU-IPADS Bamboo / PowerInfer TurboSparse,
 *                   modeling_bamboo.py lines 647-659): down(act_fn(gate) *
 *                   act_fn(up)), act_fn = ACT2FN[hidden_act]; dReLU needs relu.
 *   sparse_llama, sparse_mistral   CATS (parse_cats). */
static int parse_llama_act(const cfg *c, const char *type, const char *act, hp_config *hp)
{
    int sparsellama = strcmp(type, "sparsellama") == 0, bamboo = strcmp(type, "bamboo") == 0;
    int cats = strcmp(type, "sparse_llama") == 0 || strcmp(type, "sparse_mistral") == 0;
    if (bamboo) {
        if (strcmp(act, "relu") != 0)
            return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"hidden_act\": \"%s\" (bamboo's dReLU needs relu)",
                            c->what, act);
        hp->act = ACT_FN_DRELU;
        return 0;
    }
    if (sparsellama && strcmp(act, "fatrelu") == 0) {
        double p;
        int rc = get_real(c, "hidden_act_param", 1, 0, &p);
        if (rc)
            return rc;
        if (!(fits_float(p) && p >= 0))
            return ierr_set(c->err, -ENOTSUP,
                            "%s: unsupported \"hidden_act_param\": %g (fatrelu needs a finite threshold >= 0)",
                            c->what, p);
        hp->act = ACT_FN_FATRELU;
        for (int64_t l = 0; l < hp->n_layers && l < HP_MAX_LAYERS; l++)
            hp->act_param[l] = (float)p;
        return 0;
    }
    if (strcmp(act, "silu") == 0)
        hp->act = ACT_FN_SILU;
    else if (strcmp(act, "relu") == 0 && !cats)
        hp->act = ACT_FN_RELU;
    else
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"hidden_act\": \"%s\" (inflash needs %s)", c->what, act,
                        cats ? "silu" : sparsellama ? "fatrelu, relu or silu" : "silu or relu");
    return cats ? parse_cats(c, hp) : 0;
}

static int parse_llama(const cfg *c, const char *type, hp_config *hp)
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
    if (get(c, "rope_scaling")) {
        char buf[64];
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"rope_scaling\": %s (only plain RoPE is supported)",
                        c->what, show(get(c, "rope_scaling"), buf, sizeof buf));
    }
    hp->pos_offset = 0;
    hp->gated = 1;
    if ((rc = range(c->what, "n_layers", hp->n_layers, 1, HP_MAX_LAYERS, c->err)) ||
        (rc = parse_llama_act(c, type, act, hp)) || (rc = hp_validate(hp, c->what, c->err)) ||
        (rc = get_int(c, "head_dim", 0, hp->d_model / hp->n_heads, &head_dim)))
        return rc;
    if (head_dim < 1 || head_dim > hp->d_model || head_dim * hp->n_heads != hp->d_model)
        return ierr_set(c->err, -ENOTSUP, "%s: unsupported \"head_dim\": %lld * %lld heads != hidden_size %lld",
                        c->what, (long long)head_dim, (long long)hp->n_heads, (long long)hp->d_model);
    return 0;
}

/* The Llama-family model types: the standard Llama tensor names (the
 * checkpoint table, checkpoint.h), the FFN activation told apart by
 * parse_llama_act. */
static const char *const llama_types[] = { "llama", "mistral", "sparsellama", "bamboo", "sparse_llama",
                                           "sparse_mistral" };
#define N_LLAMA_TYPES (sizeof llama_types / sizeof *llama_types)

static int is_llama_type(const char *type)
{
    for (size_t i = 0; i < N_LLAMA_TYPES; i++)
        if (strcmp(type, llama_types[i]) == 0)
            return 1;
    return 0;
}

/* The unsupported model_type message, with the supported ones listed. */
static int bad_type(const char *what, const char *type, ierr *err)
{
    char list[160] = "opt";
    for (size_t i = 0, n = 3; i < N_LLAMA_TYPES && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, ", %s", llama_types[i]);
    return ierr_set(err, -ENOTSUP, "%s: unsupported \"model_type\": \"%s\" (supported: %s)", what, type, list);
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
        else if (is_llama_type(type))
            rc = parse_llama(&c, type, hp);
        else
            rc = bad_type(what, type, err);
    }
    if (!rc)
        rc = hp_validate(hp, what, err);
    json_decref(root);
    return rc;
}
