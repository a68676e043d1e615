/* model.h: the transformer of the inflash client, in the spirit of
 * llama2.c's run.c: a config (hp_config), a weights view with the shape of
 * every field, a run state (activations, KV cache), and a forward pass for
 * OPT (pre-LayerNorm, learned positions, biases, ReLU FFN) and the Llama
 * family (RMSNorm, rotate-half RoPE, GQA, SwiGLU), f32 with OpenBLAS.
 *
 * Attention, embeddings, norms and biases are read once through the source
 * and stay resident (the matrices in the store's dtype), or are used in
 * place from a memory-mapped store. The FFN is a separate, replaceable function
 * (model_ffn_fn) that maps the layer's normalised FFN input to its output;
 * the default, model_ffn_dense, reads the layer's whole neuron file through
 * source_read_ffn for every forward call (the naive baseline), computes
 * from the mapped neuron file of a mapped source, or uses the copy made by
 * model_load_resident_ffn. Every size is 64-bit. */
#ifndef INFLASH_MODEL_H
#define INFLASH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "hparams.h"
#include "error.h"
#include "source.h"

/* Resident weights. The big matrices (marked wdt) stay in the store's
 * dtype (f16 halves the DRAM of an f32 copy, q8_0 / q4_0 keep their
 * blocks, every row a whole number of them; client/weight_matrix.h computes
 * with them); norms, biases and positions are f32 (a quantized store keeps
 * 1-D tensors f32 and OPT's positions quantized: they are dequantized at
 * load). Per-layer matrices are
 * arrays of n_layers pointers. q_dim = n_heads * head_dim, kv_dim =
 * n_kv_heads * head_dim, bundle_len = (gated ? 3 : 2) * d_model. Every
 * pointer is owned by the model, except that lm_head aliases tok_emb when
 * the head is tied and that the matrices alias the source's mapping when
 * `mapped` (source_open_store_mapped). */
typedef struct {
    fmt_dtype    wdt;          /* dtype of the (wdt) matrices */
    int          mapped;       /* (wdt) matrices point into the source's mapping */
    const void  *tok_emb;      /* (wdt) [vocab_size][d_model] */
    float       *pos_emb;      /* [max_pos + pos_offset][d_model]; OPT only, else NULL */
    float       *attn_norm_w;  /* [n_layers][d_model] */
    float       *attn_norm_b;  /* [n_layers][d_model]; LayerNorm (OPT) only, else NULL */
    const void **wq;           /* [n_layers] -> (wdt) [q_dim][d_model] */
    const void **wk;           /* [n_layers] -> (wdt) [kv_dim][d_model] */
    const void **wv;           /* [n_layers] -> (wdt) [kv_dim][d_model] */
    const void **wo;           /* [n_layers] -> (wdt) [d_model][q_dim] */
    float       *bq;           /* [n_layers][q_dim]; NULL without attention biases */
    float       *bk;           /* [n_layers][kv_dim]; NULL without attention biases */
    float       *bv;           /* [n_layers][kv_dim]; NULL without attention biases */
    float       *bo;           /* [n_layers][d_model]; NULL without attention biases */
    float       *ffn_norm_w;   /* [n_layers][d_model] */
    float       *ffn_norm_b;   /* [n_layers][d_model]; LayerNorm only, else NULL */
    float       *ffn_b_up;     /* [n_layers][d_ffn]; OPT fc1.bias, else NULL */
    float       *ffn_b_gate;   /* [n_layers][d_ffn]; gate bias if the model has one, else NULL */
    float       *ffn_b_down;   /* [n_layers][d_model]; OPT fc2.bias, else NULL */
    float       *final_norm_w; /* [d_model] */
    float       *final_norm_b; /* [d_model]; LayerNorm only, else NULL */
    const void  *lm_head;      /* (wdt) [vocab_size][d_model]; == tok_emb when tied */
    void        *ffn_resident; /* (wdt) [n_layers][d_ffn][bundle_len] bundles in
                                  neuron-id order; NULL unless model_load_resident_ffn */
} model_weights;

/* Activations for a batch of up to max_batch consecutive positions, and the
 * KV cache. Owned by the model; one forward at a time.
 * The KV cache is a ring of kv_len slots per layer: position p lives in
 * slot p mod kv_len. Without a sliding window kv_len = seq_len and the ring
 * never wraps; with a window W (hp_config.sliding_window) kv_len =
 * min(seq_len, W): position p attends to positions max(0, p-W+1)..p, which
 * are exactly the last W written, so the memory stays flat however long the
 * sequence. */
typedef struct {
    int64_t max_batch;   /* rows of the batch buffers */
    int64_t seq_len;     /* the context: positions 0..seq_len-1 may be forwarded */
    int64_t kv_len;      /* slots of the KV ring per layer: seq_len, or min(seq_len, window) */
    int64_t ffn_block;   /* neurons per dense FFN read (bounds ffn_w) */
    float *x;            /* [max_batch][d_model] residual stream */
    float *xb;           /* [max_batch][d_model] normalised input of attention/FFN;
                            after model_forward: the final-normalised hidden states */
    float *xb2;          /* [max_batch][d_model] attention / FFN output */
    float *q;            /* [max_batch][q_dim] */
    float *k;            /* [max_batch][kv_dim] */
    float *v;            /* [max_batch][kv_dim] */
    float *att_out;      /* [max_batch][q_dim] attention result before o_proj */
    float *att;          /* [kv_len] scores of one head */
    float *pre;          /* [max_batch][d_ffn] up pre-activation (incl. bias) */
    float *gpre;         /* [max_batch][d_ffn] gate pre-activation; gated only, else NULL */
    float *act;          /* [max_batch][ffn_block] activation of one block */
    void  *ffn_raw;      /* [ffn_block * bundle_bytes] store bytes of one block (wdt) */
    float *bgather;      /* [2][ffn_block] up/gate biases of a block in slot order (mapped) */
    float *wscratch;     /* [wm_scratch_floats(max(d_model, q_dim))] for client/weight_matrix.h */
    float *key_cache;    /* [n_layers][kv_len][kv_dim], position p in slot p mod kv_len */
    float *value_cache;  /* [n_layers][kv_len][kv_dim], the same slots */
    float *rope_cos;     /* [seq_len][head_dim / 2]; Llama only, else NULL */
    float *rope_sin;     /* [seq_len][head_dim / 2]; Llama only, else NULL */
} model_state;

/* Counters of the FFN reads (updated by model_ffn_dense; reset freely).
 * A mapped source has no reads: there model_forward counts the process's
 * storage reads (/proc/self/io read_bytes, attention included) and its
 * block-I/O delay (delay accounting; 0 unless kernel.task_delayacct=1). */
typedef struct {
    uint64_t ffn_bytes_read;   /* bytes through source_read_ffn */
    uint64_t ffn_reads;        /* source_read_ffn calls */
    uint64_t io_ns;            /* wall time inside source_read_ffn */
} model_stats;

typedef struct model model;

/* The FFN of one layer for n consecutive positions starting at pos:
 * x [n][d_model] is the normalised FFN input, y [n][d_model] receives the
 * output (bias included, residual not added). */
typedef int (*model_ffn_fn)(model *m, void *ctx, int64_t layer, int64_t pos,
                            const float *x, int64_t n, float *y, ierr *err);

/* Called by model_ffn_dense after each layer's FFN, for calibration:
 * x [n][d_model] the FFN input, up [n][d_ffn] the up pre-activations (bias
 * included), gate [n][d_ffn] the gate pre-activations (NULL if not gated).
 * The buffers are only valid during the call. */
typedef void (*model_ffn_hook)(void *ctx, int64_t layer, int64_t pos, int64_t n,
                               const float *x, const float *up, const float *gate);

/* Not thread-safe: one owner runs one forward at a time (the FFN may use
 * threads of its own; the source is thread-safe). */
struct model {
    hp_config      cfg;        /* copy of the source's hyperparameters */
    int64_t        head_dim, q_dim, kv_dim, bundle_len;
    source        *src;        /* borrowed: outlives the model */
    model_weights  w;
    model_state    s;
    model_stats    stats;
    model_ffn_fn   ffn;        /* default model_ffn_dense */
    void          *ffn_ctx;
    model_ffn_hook ffn_hook;   /* NULL: none */
    void          *ffn_hook_ctx;
    uint64_t       resident_bytes;   /* weights + state allocated by the model */
};

/* Load the resident weights and allocate the state. seq_len: the context
 * in positions (0 = max_pos; at most max_pos); the KV cache holds
 * min(seq_len, sliding_window) of them for a model with a window;
 * max_batch: positions per forward call (0 = a default). */
int  model_new(source *src, int64_t seq_len, int64_t max_batch, model **out, ierr *err);
void model_free(model *m);

/* Bytes of the KV cache (keys and values of every layer, f32). */
static inline uint64_t model_kv_bytes(const model *m)
{
    return 2u * (uint64_t)m->cfg.n_layers * (uint64_t)m->s.kv_len * (uint64_t)m->kv_dim * sizeof(float);
}

/* Read every layer's FFN once and keep it in memory (--dense-resident). */
int  model_load_resident_ffn(model *m, ierr *err);

/* Forward n (1..max_batch) tokens at positions pos..pos+n-1 (the KV cache
 * must hold positions 0..pos-1, or the last window of them). Afterwards s.xb holds the n final hidden
 * states; model_logits turns one into logits. */
int  model_forward(model *m, const int32_t *tokens, int64_t n, int64_t pos, ierr *err);
/* logits [n][vocab_size] of rows row0..row0+n-1 of the last model_forward. */
void model_logits(model *m, int64_t row0, int64_t n, float *logits);

/* The default FFN (a model_ffn_fn; ctx unused). */
int  model_ffn_dense(model *m, void *ctx, int64_t layer, int64_t pos,
                     const float *x, int64_t n, float *y, ierr *err);

/* ---- kernels (exposed for the tests and the sparse FFN) ---------------- */

/* out = (x - mean) / sqrt(var + eps) * w + b over d values (b may be NULL). */
void model_layernorm(float *out, const float *x, const float *w, const float *b, int64_t d, double eps);
/* out = x / sqrt(mean(x^2) + eps) * w */
void model_rmsnorm(float *out, const float *x, const float *w, int64_t d, double eps);
/* Rotate-half RoPE in place on n_heads vectors of head_dim values at vec,
 * with cos/sin [head_dim/2] of the position (see model_rope_table). */
void model_rope(float *vec, int64_t n_heads, int64_t head_dim, const float *cos_t, const float *sin_t);
/* cos/sin [head_dim/2] for position pos: angle_i = pos * theta^(-2i/head_dim). */
void model_rope_table(int64_t pos, int64_t head_dim, double theta, float *cos_t, float *sin_t);
/* In-place softmax over n values. */
void model_softmax(float *x, int64_t n);
/* The FFN over nb bundles w [nb][bundle_len] (bundle_len = (as.gated?3:2)*d:
 * up row, gate row if gated, down column), for n inputs x [n][d]:
 *   pre[i][j]  = up_j . x_i + b_up[j]        (pre row stride ldp)
 *   gpre[i][j] = gate_j . x_i + b_gate[j]    (gated only; stride ldp)
 *   act[i][j]  = act_term(as, gpre, pre)     (activity.h; act [n][nb])
 *   y[i]      += sum_j act[i][j] * down_j    (y [n][d], accumulated)
 * Biases may be NULL. w is of dtype dt (client/weight_matrix.h); scratch has
 * wm_scratch_floats(d) floats (unused for f32). */
void model_ffn_bundles(fmt_dtype dt, const void *w, int64_t nb, int64_t d, act_spec as,
                       const float *b_up, const float *b_gate, const float *x, int64_t n,
                       float *pre, float *gpre, int64_t ldp, float *actbuf, float *y, float *scratch);
/* The same over bundles ldw >= bundle_len elements apart (e.g. the rows of
 * a neuron matrix, client/neuron_matrix.h); model_ffn_bundles is ldw = bundle_len. */
void model_ffn_rows(fmt_dtype dt, const void *w, int64_t ldw, int64_t nb, int64_t d, act_spec as,
                    const float *b_up, const float *b_gate, const float *x, int64_t n,
                    float *pre, float *gpre, int64_t ldp, float *actbuf, float *y, float *scratch);

#endif
