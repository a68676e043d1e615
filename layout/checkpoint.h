/* checkpoint.h: the tensors of a Hugging Face checkpoint of each family,
 * in one table: their names, their shapes (in terms of hp_config), which
 * weight of the model each one is, and whether a checkpoint must have it.
 * inflash-pack packs these tensors (and refuses any other), inflash-mkmodel
 * writes them, the client looks its weights up by them.
 *
 * The table lists each family's tensors in the order they land in the
 * store's dense.bin, the FFN matrices (which go to ffn.bin as bundles)
 * last: a run of consecutive per-layer entries stands for that run repeated
 * for every layer. The store's bytes depend on this order: it must not
 * change. The table is static, constant data; every function is
 * thread-safe. */
#ifndef INFLASH_CHECKPOINT_H
#define INFLASH_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "hparams.h"

/* Which weight of the model a tensor is, whatever its family calls it.
 * Listed in the order a forward pass uses them (a layer's tensors in this
 * order is CKPT_FORWARD_ORDER). */
typedef enum {
    CKPT_TOK_EMB,        /* token embedding [vocab][d_model] */
    CKPT_POS_EMB,        /* learned positions [max_pos + pos_offset][d_model] (OPT) */
    CKPT_ATTN_NORM_W,    /* the norm before attention */
    CKPT_ATTN_NORM_B,
    CKPT_WQ,             /* attention projections and their biases */
    CKPT_BQ,
    CKPT_WK,
    CKPT_BK,
    CKPT_WV,
    CKPT_BV,
    CKPT_WO,
    CKPT_BO,
    CKPT_FFN_NORM_W,     /* the norm before the FFN */
    CKPT_FFN_NORM_B,
    CKPT_GATE_W,         /* FFN gate [d_ffn][d_model] (gated families) */
    CKPT_GATE_B,
    CKPT_UP_W,           /* FFN up [d_ffn][d_model] */
    CKPT_UP_B,
    CKPT_DOWN_W,         /* FFN down [d_model][d_ffn] */
    CKPT_DOWN_B,
    CKPT_FINAL_NORM_W,   /* the norm after the last layer */
    CKPT_FINAL_NORM_B,
    CKPT_LM_HEAD,        /* output embedding [vocab][d_model] */
    CKPT_N_WEIGHTS
} ckpt_weight;

/* Where inflash-pack puts a tensor: dense.bin, or one part of the
 * layer's bundles in ffn.bin. Also the index of that part. */
typedef enum { CKPT_DENSE, CKPT_UP, CKPT_GATE, CKPT_DOWN } ckpt_role;

/* One dimension of a shape, in terms of hp_config. */
typedef enum {
    CKPT_DIM_NONE,       /* no such dimension: the tensor is 1-D */
    CKPT_DIM_D,          /* d_model */
    CKPT_DIM_F,          /* d_ffn */
    CKPT_DIM_V,          /* vocab_size */
    CKPT_DIM_Q,          /* n_heads * head_dim */
    CKPT_DIM_KV,         /* n_kv_heads * head_dim */
    CKPT_DIM_POS         /* max_pos + pos_offset */
} ckpt_dim;

/* Whether a checkpoint of the family has the tensor. */
typedef enum {
    CKPT_ALWAYS,         /* required */
    CKPT_UNLESS_TIED,    /* may be absent when tie_embeddings (lm_head) */
    CKPT_IF_PRESENT      /* no config inflash-pack accepts has it: pack and
                            mkmodel leave it out, the client takes it from a
                            store that has it anyway */
} ckpt_presence;

/* One row of the table. */
typedef struct {
    hp_family     family;
    int           per_layer;  /* 1: one tensor per layer, name has a %lld */
    ckpt_weight   weight;
    const char   *name;       /* Hugging Face name (the store uses it too);
                                 per-layer: a pattern with one %lld, the layer */
    ckpt_dim      shape[2];   /* rows, columns (CKPT_DIM_NONE: a vector) */
    ckpt_presence presence;
} ckpt_entry;

/* The two orders ckpt_list knows. */
typedef enum {
    CKPT_STORE_ORDER,    /* the table's: dense tensors in dense.bin order, then
                            per layer the FFN matrices (inflash-pack) */
    CKPT_FORWARD_ORDER   /* embeddings, then layer by layer each layer's
                            tensors in ckpt_weight order, then the final norm
                            and head (what inflash-mkmodel writes) */
} ckpt_order;

#define CKPT_NAME_MAX 128   /* bytes of a formatted name, NUL included */

/* One tensor of one checkpoint: an entry for one layer, its shape worked
 * out for a config. */
typedef struct {
    const ckpt_entry *entry;       /* the table row */
    ckpt_weight       weight;      /* entry->weight */
    ckpt_role         role;        /* ckpt_role_of(weight) */
    int64_t           layer;       /* -1 for a model-wide tensor */
    char              name[CKPT_NAME_MAX];
    int               ndim;        /* 1 or 2 */
    int64_t           shape[2];    /* shape[1] == 0 when ndim == 1 */
    int               optional;    /* this config may lack it (a tied lm_head) */
} ckpt_tensor;

/* The tensors a checkpoint with config hp has (every entry of its family
 * but the CKPT_IF_PRESENT ones), in the given order: *out is a malloc'd
 * array of *n. Returns 0, or -ENOMEM (then *out is NULL). */
int ckpt_list(const hp_config *hp, ckpt_order order, ckpt_tensor **out, size_t *n);

/* The table row of weight w in family f, or NULL if the family has no such
 * tensor. */
const ckpt_entry *ckpt_find(hp_family f, ckpt_weight w);

/* buf = e's name for layer `layer` (ignored for a model-wide entry);
 * returns buf. cap >= CKPT_NAME_MAX always suffices. */
char *ckpt_name(const ckpt_entry *e, int64_t layer, char *buf, size_t cap);

/* e's shape under hp into shape[2] (shape[1] = 0 for a vector); returns
 * the number of dimensions, 1 or 2. */
int ckpt_shape(const ckpt_entry *e, const hp_config *hp, int64_t shape[2]);

/* The number of elements of e under hp. */
int64_t ckpt_numel(const ckpt_entry *e, const hp_config *hp);

/* Where inflash-pack puts weight w. */
ckpt_role ckpt_role_of(ckpt_weight w);

#endif
