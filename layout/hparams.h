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
    act_fn  act;            /* relu (OPT) | silu (Llama SwiGLU) */
    int     gated;          /* 1 for SwiGLU (gate_proj present) */
    int     tie_embeddings; /* lm_head shares embed_tokens */
    int64_t bos_id, eos_id, pad_id;   /* -1 if none */
    int64_t sliding_window; /* Mistral: position i attends to i-W < j <= i; 0 = none */
} hp_config;

/* Parse a Hugging Face config.json (text, len bytes, need not be
 * NUL-terminated). Accepts model_type "opt" (activation_function "relu",
 * do_layer_norm_before true, word_embed_proj_dim == hidden_size) and
 * "llama"/"mistral" (hidden_act "silu"; "sliding_window" N >= 1, or
 * null/absent or "use_sliding_window": false for none). Anything else is an error that names
 * the field and value. `what` names the file in messages. Checks every value
 * for sanity (positive, d_model % n_heads == 0, n_heads % n_kv_heads == 0,
 * sizes below 2^31 per dim). */
int hp_from_json(const char *text, size_t len, const char *what, hp_config *hp, ierr *err);

/* Check a filled-in config for sanity (the same bounds hp_from_json applies);
 * used by readers that build an hp_config from elsewhere (the store index). */
int hp_validate(const hp_config *hp, const char *what, ierr *err);

/* "opt" | "llama" (the activation names are in activity.h) */
const char *hp_family_name(hp_family f);
int hp_family_parse(const char *s, hp_family *out);

/* Derived sizes, in 64 bits. */
static inline int64_t hp_head_dim(const hp_config *hp) { return hp->d_model / hp->n_heads; }
/* bytes of one bundle in the given store dtype */
static inline int64_t hp_bundle_bytes(const hp_config *hp, fmt_dtype t)
{
    return (hp->gated ? 3 : 2) * hp->d_model * (int64_t)fmt_dtype_size(t);
}

#endif
