/* checkpoint.c: the table of the tensors of a Hugging Face checkpoint of
 * each family (checkpoint.h), and the walks over it. */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define G 0   /* model-wide */
#define L 1   /* per layer */
#define NONE CKPT_DIM_NONE
#define D    CKPT_DIM_D
#define F    CKPT_DIM_F
#define V    CKPT_DIM_V
#define Q    CKPT_DIM_Q
#define KV   CKPT_DIM_KV
#define POS  CKPT_DIM_POS

/* Each family's tensors in store order (checkpoint.h): the dense tensors
 * in the order dense.bin holds them, then the FFN matrices of each layer. */
static const ckpt_entry table[] = {
    /* OPT: OPTForCausalLM (facebook/opt-* ship the names without "model.") */
    {HP_OPT, G, CKPT_TOK_EMB, "model.decoder.embed_tokens.weight", {V, D}, CKPT_ALWAYS},
    {HP_OPT, G, CKPT_POS_EMB, "model.decoder.embed_positions.weight", {POS, D}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_WQ, "model.decoder.layers.%lld.self_attn.q_proj.weight", {Q, D}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_BQ, "model.decoder.layers.%lld.self_attn.q_proj.bias", {Q, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_WK, "model.decoder.layers.%lld.self_attn.k_proj.weight", {KV, D}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_BK, "model.decoder.layers.%lld.self_attn.k_proj.bias", {KV, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_WV, "model.decoder.layers.%lld.self_attn.v_proj.weight", {KV, D}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_BV, "model.decoder.layers.%lld.self_attn.v_proj.bias", {KV, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_WO, "model.decoder.layers.%lld.self_attn.out_proj.weight", {D, Q}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_BO, "model.decoder.layers.%lld.self_attn.out_proj.bias", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_ATTN_NORM_W, "model.decoder.layers.%lld.self_attn_layer_norm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_ATTN_NORM_B, "model.decoder.layers.%lld.self_attn_layer_norm.bias", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_UP_B, "model.decoder.layers.%lld.fc1.bias", {F, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_DOWN_B, "model.decoder.layers.%lld.fc2.bias", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_FFN_NORM_W, "model.decoder.layers.%lld.final_layer_norm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_FFN_NORM_B, "model.decoder.layers.%lld.final_layer_norm.bias", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, G, CKPT_FINAL_NORM_W, "model.decoder.final_layer_norm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, G, CKPT_FINAL_NORM_B, "model.decoder.final_layer_norm.bias", {D, NONE}, CKPT_ALWAYS},
    {HP_OPT, G, CKPT_LM_HEAD, "lm_head.weight", {V, D}, CKPT_UNLESS_TIED},
    {HP_OPT, L, CKPT_UP_W, "model.decoder.layers.%lld.fc1.weight", {F, D}, CKPT_ALWAYS},
    {HP_OPT, L, CKPT_DOWN_W, "model.decoder.layers.%lld.fc2.weight", {D, F}, CKPT_ALWAYS},

    /* Llama family: LlamaForCausalLM, MistralForCausalLM */
    {HP_LLAMA, G, CKPT_TOK_EMB, "model.embed_tokens.weight", {V, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_ATTN_NORM_W, "model.layers.%lld.input_layernorm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_WQ, "model.layers.%lld.self_attn.q_proj.weight", {Q, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_WK, "model.layers.%lld.self_attn.k_proj.weight", {KV, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_WV, "model.layers.%lld.self_attn.v_proj.weight", {KV, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_WO, "model.layers.%lld.self_attn.o_proj.weight", {D, Q}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_FFN_NORM_W, "model.layers.%lld.post_attention_layernorm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_BQ, "model.layers.%lld.self_attn.q_proj.bias", {Q, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_BK, "model.layers.%lld.self_attn.k_proj.bias", {KV, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_BV, "model.layers.%lld.self_attn.v_proj.bias", {KV, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_BO, "model.layers.%lld.self_attn.o_proj.bias", {D, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_UP_B, "model.layers.%lld.mlp.up_proj.bias", {F, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_GATE_B, "model.layers.%lld.mlp.gate_proj.bias", {F, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, L, CKPT_DOWN_B, "model.layers.%lld.mlp.down_proj.bias", {D, NONE}, CKPT_IF_PRESENT},
    {HP_LLAMA, G, CKPT_FINAL_NORM_W, "model.norm.weight", {D, NONE}, CKPT_ALWAYS},
    {HP_LLAMA, G, CKPT_LM_HEAD, "lm_head.weight", {V, D}, CKPT_UNLESS_TIED},
    {HP_LLAMA, L, CKPT_UP_W, "model.layers.%lld.mlp.up_proj.weight", {F, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_GATE_W, "model.layers.%lld.mlp.gate_proj.weight", {F, D}, CKPT_ALWAYS},
    {HP_LLAMA, L, CKPT_DOWN_W, "model.layers.%lld.mlp.down_proj.weight", {D, F}, CKPT_ALWAYS},
};
#define N_TABLE (sizeof table / sizeof table[0])

#undef G
#undef L
#undef NONE
#undef D
#undef F
#undef V
#undef Q
#undef KV
#undef POS

const ckpt_entry *ckpt_find(hp_family f, ckpt_weight w)
{
    for (size_t i = 0; i < N_TABLE; i++)
        if (table[i].family == f && table[i].weight == w)
            return &table[i];
    return NULL;
}

char *ckpt_name(const ckpt_entry *e, int64_t layer, char *buf, size_t cap)
{
    if (e->per_layer)
        snprintf(buf, cap, e->name, (long long)layer);
    else
        snprintf(buf, cap, "%s", e->name);
    return buf;
}

static int64_t dim_size(ckpt_dim d, const hp_config *hp)
{
    switch (d) {
    case CKPT_DIM_NONE: return 0;
    case CKPT_DIM_D:    return hp->d_model;
    case CKPT_DIM_F:    return hp->d_ffn;
    case CKPT_DIM_V:    return hp->vocab_size;
    case CKPT_DIM_Q:    return hp->n_heads * hp_head_dim(hp);
    case CKPT_DIM_KV:   return hp->n_kv_heads * hp_head_dim(hp);
    case CKPT_DIM_POS:  return hp->max_pos + hp->pos_offset;
    }
    return 0;
}

int ckpt_shape(const ckpt_entry *e, const hp_config *hp, int64_t shape[2])
{
    shape[0] = dim_size(e->shape[0], hp);
    shape[1] = dim_size(e->shape[1], hp);
    return e->shape[1] == CKPT_DIM_NONE ? 1 : 2;
}

int64_t ckpt_numel(const ckpt_entry *e, const hp_config *hp)
{
    int64_t s[2];
    return ckpt_shape(e, hp, s) == 2 ? s[0] * s[1] : s[0];
}

ckpt_role ckpt_role_of(ckpt_weight w)
{
    switch (w) {
    case CKPT_UP_W:   return CKPT_UP;
    case CKPT_GATE_W: return CKPT_GATE;
    case CKPT_DOWN_W: return CKPT_DOWN;
    default:          return CKPT_DENSE;
    }
}

/* The list being built: out == NULL only counts. */
typedef struct {
    const hp_config *hp;
    ckpt_tensor     *out;
    size_t           n;
} walk;

static void emit(walk *w, const ckpt_entry *e, int64_t layer)
{
    if (e->presence == CKPT_IF_PRESENT)
        return;
    if (w->out) {
        ckpt_tensor *t = &w->out[w->n];
        memset(t, 0, sizeof *t);
        t->entry = e;
        t->weight = e->weight;
        t->role = ckpt_role_of(e->weight);
        t->layer = e->per_layer ? layer : -1;
        ckpt_name(e, layer, t->name, sizeof t->name);
        t->ndim = ckpt_shape(e, w->hp, t->shape);
        t->optional = e->presence == CKPT_UNLESS_TIED && w->hp->tie_embeddings;
    }
    w->n++;
}

/* The table's order: each run of per-layer entries once per layer. */
static void walk_store(walk *w)
{
    const hp_config *hp = w->hp;
    for (size_t i = 0; i < N_TABLE;) {
        const ckpt_entry *e = &table[i];
        if (e->family != hp->family) {
            i++;
        } else if (!e->per_layer) {
            emit(w, e, -1);
            i++;
        } else {
            size_t end = i;
            while (end < N_TABLE && table[end].family == hp->family && table[end].per_layer)
                end++;
            for (int64_t l = 0; l < hp->n_layers; l++)
                for (size_t k = i; k < end; k++)
                    emit(w, &table[k], l);
            i = end;
        }
    }
}

/* Embeddings (the model-wide weights before CKPT_ATTN_NORM_W), the layers,
 * the rest; by weight within each. */
static void walk_forward(walk *w)
{
    const hp_config *hp = w->hp;
    for (int stage = 0; stage < 3; stage++)
        for (int64_t l = stage == 1 ? 0 : -1; l < (stage == 1 ? hp->n_layers : 0); l++)
            for (int k = 0; k < CKPT_N_WEIGHTS; k++) {
                const ckpt_entry *e = ckpt_find(hp->family, (ckpt_weight)k);
                int at = !e ? -1 : e->per_layer ? 1 : k < CKPT_ATTN_NORM_W ? 0 : 2;
                if (at == stage)
                    emit(w, e, l);
            }
}

int ckpt_list(const hp_config *hp, ckpt_order order, ckpt_tensor **out, size_t *n)
{
    walk w = {hp, NULL, 0};
    void (*run)(walk *) = order == CKPT_STORE_ORDER ? walk_store : walk_forward;
    run(&w);
    *n = 0;
    *out = calloc(w.n ? w.n : 1, sizeof **out);
    if (!*out)
        return -ENOMEM;
    w.out = *out;
    w.n = 0;
    run(&w);
    *n = w.n;
    return 0;
}
