/* hparams.h: model hyperparameters, and reading them from a Hugging Face
 * config.json (the same function serves inflash-pack, which reads the
 * source checkpoint, and the client, which reads the mount's config.json). */
#ifndef INFLASH_HPARAMS_H
#define INFLASH_HPARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "activity.h"
#include "error.h"
#include "format.h"

typedef enum { HP_OPT = 0, HP_LLAMA = 1 } hp_family;   /* llama also covers mistral */

#define HP_MAX_LAYERS 4096   /* the n_layers bound hp_validate enforces */

typedef struct {
    hp_family family;
    int64_t d_model;        /* hidden size */
    int64_t n_layers;
    int64_t n_heads;        /* query heads */
    int64_t n_kv_heads;     /* key/value heads (== n_heads without GQA) */
    int64_t d_ffn;          /* FFN neurons per layer */
    int64_t vocab_size;
    int64_t max_pos;        /* max_position_embeddings */
    int64_t pos_offset;     /* OPT learned positions: 2; else 0 */
    double  norm_eps;       /* LayerNorm / RMSNorm epsilon */
    double  rope_theta;     /* Llama only; 0 for OPT */
    act_fn  act;            /* relu (OPT, ReLU-Llama) | silu (SwiGLU) | fatrelu | drelu | cats */
    int     gated;          /* 1 for the Llama family (gate_proj present) */
    int     tie_embeddings; /* lm_head shares embed_tokens */
    int64_t bos_id, eos_id, pad_id;   /* -1 if none */
    int64_t sliding_window; /* Mistral: position i attends to i-W < j <= i; 0 = none */
    float   act_param[HP_MAX_LAYERS];   /* [n_layers] the activation's parameter per layer
                                           (fatrelu, cats: finite, >= 0); 0 for the others
                                           and beyond n_layers */
} hp_config;

/* Parse a Hugging Face config.json (text, len bytes, need not be
 * NUL-terminated). Accepts model_type "opt" (activation_function "relu",
 * do_layer_norm_before true, word_embed_proj_dim == hidden_size), and the
 * Llama family with standard tensor names: "llama"/"mistral" (hidden_act
 * "silu" or "relu"), "sparsellama" (ProSparse: hidden_act "fatrelu" with
 * hidden_act_param, or relu/silu), "bamboo" (dReLU: hidden_act "relu"),
 * "sparse_llama"/"sparse_mistral" (CATS: silu with per-layer "thresholds");
 * Mistral's "sliding_window" N >= 1 (null/absent or "use_sliding_window":
 * false for none). Anything else that changes the math is an error that names the key and
 * value. `what` names the file in messages. Checks every value
 * for sanity (positive, d_model % n_heads == 0, n_heads % n_kv_heads == 0,
 * sizes below 2^31 per dim). */
int hp_from_json(const char *text, size_t len, const char *what, hp_config *hp, ierr *err);

/* Check a filled-in config for sanity (the same bounds hp_from_json applies);
 * used by readers that build an hp_config from elsewhere (the store index). */
int hp_validate(const hp_config *hp, const char *what, ierr *err);
/* 0 if a store of dtype t can hold this model: t is a store dtype and, for
 * a quantized t, every row (d_model long here; the attention width equals
 * d_model) is a whole number of blocks. Else -EINVAL naming the width. */
int hp_check_dtype(const hp_config *hp, fmt_dtype t, const char *what, ierr *err);

/* The activation parameters as stored (meta act_params, format.h section 4):
 * n_layers numbers separated by single spaces, each printed so that it reads
 * back to the same float. *out is malloc'ed (caller frees); NULL (and 0) when
 * the activation takes none. */
int hp_act_params_text(const hp_config *hp, char **out, ierr *err);
/* Read them back into hp->act_param (hp->n_layers already set and in range):
 * exactly n_layers numbers. `what` names the file in messages. */
int hp_act_params_parse(const char *text, hp_config *hp, const char *what, ierr *err);

/* The activation of layer l (activity.h). */
static inline act_spec hp_act_spec(const hp_config *hp, int64_t l)
{
    act_spec s = { hp->act, hp->gated, l >= 0 && l < HP_MAX_LAYERS ? hp->act_param[l] : 0.0f };
    return s;
}

/* The model's exact criterion (activity.h act_exact_crit): 0 and *out when
 * its activation has exact zeros (the function decides, whatever the
 * layer's parameter), -1 for plain SwiGLU. */
static inline int hp_exact_crit(const hp_config *hp, act_crit *out)
{
    return act_exact_crit(hp_act_spec(hp, 0), out);
}

/* "opt" | "llama" (the activation names are in activity.h) */
const char *hp_family_name(hp_family f);
int hp_family_parse(const char *s, hp_family *out);

/* Derived sizes, in 64 bits. */
static inline int64_t hp_head_dim(const hp_config *hp) { return hp->d_model / hp->n_heads; }
/* bytes of one bundle in the given store dtype (format.h section 3): up
 * row, [gate row,] down column, each d_model values; -1 if d_model is not
 * a whole number of the dtype's blocks */
static inline int64_t hp_bundle_bytes(const hp_config *hp, fmt_dtype t)
{
    uint64_t part = fmt_bytes(t, (uint64_t)hp->d_model);
    return part == UINT64_MAX ? -1 : (hp->gated ? 3 : 2) * (int64_t)part;
}

#endif
