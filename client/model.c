/* model.c: the forward pass of the inflash client (model.h): weights
 * loaded through the source, batched attention with a KV cache, the dense
 * bundle-layout FFN, and the small kernels they use. */
#include "model.h"
#include "activity.h"
#include "checkpoint.h"
#include "cli.h"
#include "weight_matrix.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "model.c reads little-endian f32 store data in place"
#endif

#define MODEL_DEFAULT_BATCH   128
#define MODEL_FFN_BLOCK_BYTES (16u << 20)   /* store bytes per dense FFN read */

/* ---- kernels ------------------------------------------------------------ */

void model_layernorm(float *out, const float *x, const float *w, const float *b, int64_t d, double eps)
{
    double mean = 0.0, var = 0.0;
    for (int64_t i = 0; i < d; i++)
        mean += x[i];
    mean /= (double)d;
    for (int64_t i = 0; i < d; i++) {
        double t = x[i] - mean;
        var += t * t;
    }
    var /= (double)d;
    double inv = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < d; i++) {
        float v = (float)((x[i] - mean) * inv) * w[i];
        out[i] = b ? v + b[i] : v;
    }
}

void model_rmsnorm(float *out, const float *x, const float *w, int64_t d, double eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < d; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
    for (int64_t i = 0; i < d; i++)
        out[i] = w[i] * (x[i] * inv);
}

void model_rope_table(int64_t pos, int64_t head_dim, double theta, float *cos_t, float *sin_t)
{
    for (int64_t i = 0; i < head_dim / 2; i++) {
        double inv_freq = 1.0 / pow(theta, (double)(2 * i) / (double)head_dim);
        double a = (double)pos * inv_freq;
        cos_t[i] = (float)cos(a);
        sin_t[i] = (float)sin(a);
    }
}

void model_rope(float *vec, int64_t n_heads, int64_t head_dim, const float *cos_t, const float *sin_t)
{
    int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = vec + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            float x0 = v[i], x1 = v[i + half];
            v[i] = x0 * cos_t[i] - x1 * sin_t[i];
            v[i + half] = x1 * cos_t[i] + x0 * sin_t[i];
        }
    }
}

void model_softmax(float *x, int64_t n)
{
    if (n <= 0)
        return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++)
        x[i] *= inv;
}

void model_ffn_bundles(fmt_dtype dt, const void *w, int64_t nb, int64_t d, act_spec as,
                       const float *b_up, const float *b_gate, const float *x, int64_t n,
                       float *pre, float *gpre, int64_t ldp, float *actbuf, float *y, float *scratch)
{
    model_ffn_rows(dt, w, (as.gated ? 3 : 2) * d, nb, d, as, b_up, b_gate, x, n, pre, gpre, ldp, actbuf, y, scratch);
}

void model_ffn_rows(fmt_dtype dt, const void *w, int64_t bl, int64_t nb, int64_t d, act_spec as,
                    const float *b_up, const float *b_gate, const float *x, int64_t n,
                    float *pre, float *gpre, int64_t ldp, float *actbuf, float *y, float *scratch)
{
    const int gated = as.gated;
    const void *up = w, *gate = wm_at(dt, w, bl, 0, d), *down = wm_at(dt, w, bl, 0, (gated ? 2 : 1) * d);
    if (nb <= 0 || n <= 0)
        return;
    if (n == 1 && wm_ffn(dt, w, bl, nb, d, as, b_up, b_gate, x, pre, gpre, actbuf, y, scratch) == 0)
        return;                      /* one token: one pass over the rows (weight_matrix.h) */
    wm_gemm_xwt(dt, up, bl, nb, d, x, n, pre, ldp, 0.0f, scratch);
    if (gated)
        wm_gemm_xwt(dt, gate, bl, nb, d, x, n, gpre, ldp, 0.0f, scratch);
    for (int64_t i = 0; i < n; i++) {
        float *p = pre + i * ldp, *g = gated ? gpre + i * ldp : NULL, *a = actbuf + i * nb;
        for (int64_t j = 0; j < nb; j++) {
            if (b_up)
                p[j] += b_up[j];
            if (gated && b_gate)
                g[j] += b_gate[j];
            a[j] = act_term(as, gated ? g[j] : 0.0f, p[j]);
        }
    }
    wm_gemm_aw(dt, down, bl, nb, d, actbuf, nb, n, y, scratch);
}

/* out[n][outd] = x[n][in] . w[outd][in]^T (+ b[outd]), w in the model's dtype */
static void matmul(model *m, float *out, const float *x, const void *w, const float *b, int64_t n, int64_t in,
                   int64_t outd)
{
    wm_gemm_xwt(m->w.wdt, w, in, outd, in, x, n, out, outd, 0.0f, m->s.wscratch);
    if (b)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < outd; j++)
                out[i * outd + j] += b[j];
}


/* ---- loading -------------------------------------------------------------- */

/* Allocate count floats (zeroed), counted in m->resident_bytes. */
static int alloc_f32(model *m, float **p, int64_t count, const char *what, ierr *err)
{
    *p = NULL;
    if (count <= 0)
        return 0;
    *p = calloc((size_t)count, sizeof(float));
    if (!*p)
        return ierr_set(err, -ENOMEM, "out of memory for %s (%lld floats)", what, (long long)count);
    m->resident_bytes += (uint64_t)count * sizeof(float);
    return 0;
}

/* The name (for layer `layer`), element count and number of dimensions
 * of weight wt in this model's family (layout/checkpoint.h); NULL if the
 * family has none. */
static const ckpt_entry *tensor_of(const model *m, ckpt_weight wt, int64_t layer, char name[CKPT_NAME_MAX],
                                   int64_t *numel, int *ndim)
{
    const ckpt_entry *e = ckpt_find(m->cfg.family, wt);
    if (e) {
        int64_t shape[2];
        ckpt_name(e, layer, name, CKPT_NAME_MAX);
        *numel = ckpt_numel(e, &m->cfg);
        *ndim = ckpt_shape(e, &m->cfg, shape);
    }
    return e;
}

/* A model-wide tensor into a freshly allocated f32 array (dequantized if
 * the store keeps it quantized, e.g. OPT's positions); left NULL if the
 * family has none. */
static int load_one(model *m, float **dst, ckpt_weight wt, ierr *err)
{
    char name[CKPT_NAME_MAX];
    int64_t numel;
    int ndim;
    *dst = NULL;
    if (!tensor_of(m, wt, -1, name, &numel, &ndim))
        return 0;
    int rc = alloc_f32(m, dst, numel, name, err);
    if (rc == 0)
        rc = source_tensor_f32(m->src, name, ndim, *dst, numel, err);
    return rc;
}

/* A (wdt) matrix: in place from a mapped source, else read into a new
 * array of the model's dtype (fmt_bytes of numel values: whole blocks of a
 * quantized dtype). */
static int load_mat(model *m, const void **dst, const char *name, int64_t numel, ierr *err)
{
    *dst = NULL;
    if (m->w.mapped) {
        *dst = source_tensor_map(m->src, name, numel);
        return *dst ? 0 : ierr_set(err, -EINVAL, "model: tensor %s is not in the mapped store as %lld %s elements",
                                   name, (long long)numel, fmt_dtype_name(m->w.wdt));
    }
    uint64_t bytes = fmt_bytes(m->w.wdt, (uint64_t)numel);
    if (bytes == UINT64_MAX || bytes > SIZE_MAX)
        return ierr_set(err, -EINVAL, "model: tensor %s: %lld values are not whole %s blocks", name,
                        (long long)numel, fmt_dtype_name(m->w.wdt));
    void *p = wm_alloc((size_t)bytes);
    if (!p)
        return ierr_set(err, -ENOMEM, "out of memory for %s (%llu bytes)", name, (unsigned long long)bytes);
    *dst = p;
    m->resident_bytes += bytes;
    return source_tensor(m->src, name, 2, m->w.wdt, p, numel, err);
}

/* The (wdt) matrix wt of layer `layer`; left NULL if the family has none. */
static int load_wmat(model *m, const void **dst, ckpt_weight wt, int64_t layer, ierr *err)
{
    char name[CKPT_NAME_MAX];
    int64_t numel;
    int ndim;
    *dst = NULL;
    return tensor_of(m, wt, layer, name, &numel, &ndim) ? load_mat(m, dst, name, numel, err) : 0;
}

/* The (wdt) matrix wt of every layer: an array of n_layers pointers. */
static int load_mats(model *m, const void ***dst, ckpt_weight wt, ierr *err)
{
    *dst = calloc((size_t)m->cfg.n_layers, sizeof **dst);
    if (!*dst)
        return ierr_set(err, -ENOMEM, "out of memory");
    int rc = 0;
    for (int64_t l = 0; rc == 0 && l < m->cfg.n_layers; l++)
        rc = load_wmat(m, &(*dst)[l], wt, l, err);
    return rc;
}

/* The f32 tensor wt of every layer into one array of [n_layers][numel];
 * left NULL if the family has none. A tensor a checkpoint need not have
 * (CKPT_IF_PRESENT) that layer 0 lacks is left NULL; then no layer may
 * have one. */
static int load_layers(model *m, float **dst, ckpt_weight wt, ierr *err)
{
    char name[CKPT_NAME_MAX];
    int64_t numel;
    int ndim;
    const ckpt_entry *e = tensor_of(m, wt, 0, name, &numel, &ndim);
    *dst = NULL;
    if (!e || (e->presence != CKPT_ALWAYS && !source_has_tensor(m->src, name)))
        return 0;
    int rc = alloc_f32(m, dst, m->cfg.n_layers * numel, name, err);
    for (int64_t l = 0; rc == 0 && l < m->cfg.n_layers; l++)
        rc = source_tensor_f32(m->src, ckpt_name(e, l, name, sizeof name), ndim, *dst + l * numel, numel, err);
    return rc;
}

static int load_weights(model *m, ierr *err)
{
    const hp_config *c = &m->cfg;
    model_weights *w = &m->w;
    int rc = load_wmat(m, &w->tok_emb, CKPT_TOK_EMB, -1, err);
    if (rc == 0) rc = load_one(m, &w->pos_emb, CKPT_POS_EMB, err);
    if (rc == 0) rc = load_one(m, &w->final_norm_w, CKPT_FINAL_NORM_W, err);
    if (rc == 0) rc = load_one(m, &w->final_norm_b, CKPT_FINAL_NORM_B, err);
    if (rc == 0) rc = load_layers(m, &w->attn_norm_w, CKPT_ATTN_NORM_W, err);
    if (rc == 0) rc = load_layers(m, &w->attn_norm_b, CKPT_ATTN_NORM_B, err);
    if (rc == 0) rc = load_mats(m, &w->wq, CKPT_WQ, err);
    if (rc == 0) rc = load_mats(m, &w->wk, CKPT_WK, err);
    if (rc == 0) rc = load_mats(m, &w->wv, CKPT_WV, err);
    if (rc == 0) rc = load_mats(m, &w->wo, CKPT_WO, err);
    if (rc == 0) rc = load_layers(m, &w->bq, CKPT_BQ, err);
    if (rc == 0) rc = load_layers(m, &w->bk, CKPT_BK, err);
    if (rc == 0) rc = load_layers(m, &w->bv, CKPT_BV, err);
    if (rc == 0) rc = load_layers(m, &w->bo, CKPT_BO, err);
    if (rc == 0) rc = load_layers(m, &w->ffn_norm_w, CKPT_FFN_NORM_W, err);
    if (rc == 0) rc = load_layers(m, &w->ffn_norm_b, CKPT_FFN_NORM_B, err);
    if (rc == 0) rc = load_layers(m, &w->ffn_b_up, CKPT_UP_B, err);
    if (rc == 0 && c->gated) rc = load_layers(m, &w->ffn_b_gate, CKPT_GATE_B, err);
    if (rc == 0) rc = load_layers(m, &w->ffn_b_down, CKPT_DOWN_B, err);
    if (rc)
        return rc;
    /* q, k, v biases come together or not at all */
    if (!w->bq != !w->bk || !w->bq != !w->bv)
        return ierr_set(err, -EINVAL, "model: some but not all of the q/k/v projection biases are present");
    char name[CKPT_NAME_MAX];
    int64_t numel;
    int ndim;
    if (c->tie_embeddings && (!tensor_of(m, CKPT_LM_HEAD, -1, name, &numel, &ndim) || !source_has_tensor(m->src, name))) {
        w->lm_head = w->tok_emb;
        return 0;
    }
    return load_wmat(m, &w->lm_head, CKPT_LM_HEAD, -1, err);
}

static int alloc_state(model *m, int64_t seq_len, int64_t max_batch, ierr *err)
{
    const hp_config *c = &m->cfg;
    model_state *s = &m->s;
    int64_t d = c->d_model, B = max_batch;
    s->seq_len = seq_len;
    s->kv_len = c->sliding_window > 0 && c->sliding_window < seq_len ? c->sliding_window : seq_len;
    s->max_batch = max_batch;
    int64_t bb = source_bundle_bytes(m->src);
    s->ffn_block = (int64_t)MODEL_FFN_BLOCK_BYTES / bb;
    if (s->ffn_block < 1)
        s->ffn_block = 1;
    if (s->ffn_block > c->d_ffn)
        s->ffn_block = c->d_ffn;
    int rc = 0;
    if (rc == 0) rc = alloc_f32(m, &s->x, B * d, "x", err);
    if (rc == 0) rc = alloc_f32(m, &s->xb, B * d, "xb", err);
    if (rc == 0) rc = alloc_f32(m, &s->xb2, B * d, "xb2", err);
    if (rc == 0) rc = alloc_f32(m, &s->q, B * m->q_dim, "q", err);
    if (rc == 0) rc = alloc_f32(m, &s->k, B * m->kv_dim, "k", err);
    if (rc == 0) rc = alloc_f32(m, &s->v, B * m->kv_dim, "v", err);
    if (rc == 0) rc = alloc_f32(m, &s->att_out, B * m->q_dim, "att_out", err);
    if (rc == 0) rc = alloc_f32(m, &s->att, s->kv_len, "att", err);
    if (rc == 0) rc = alloc_f32(m, &s->pre, B * c->d_ffn, "pre", err);
    if (rc == 0 && c->gated) rc = alloc_f32(m, &s->gpre, B * c->d_ffn, "gpre", err);
    if (rc == 0) rc = alloc_f32(m, &s->act, B * s->ffn_block, "act", err);
    if (rc == 0) rc = alloc_f32(m, &s->bgather, 2 * s->ffn_block, "ffn block biases", err);
    int64_t wcols = d > m->q_dim ? d : m->q_dim;
    if (rc == 0) rc = alloc_f32(m, &s->wscratch, wm_scratch_floats(wcols), "matrix scratch", err);
    if (rc == 0) rc = alloc_f32(m, &s->key_cache, c->n_layers * s->kv_len * m->kv_dim, "key cache", err);
    if (rc == 0) rc = alloc_f32(m, &s->value_cache, c->n_layers * s->kv_len * m->kv_dim, "value cache", err);
    if (rc == 0 && !m->w.mapped) {
        size_t n = (size_t)s->ffn_block * (size_t)bb;
        s->ffn_raw = malloc(n);
        if (!s->ffn_raw)
            return ierr_set(err, -ENOMEM, "out of memory for the FFN read buffer (%zu bytes)", n);
        m->resident_bytes += n;
    }
    if (rc == 0 && c->family == HP_LLAMA) {
        int64_t half = m->head_dim / 2;
        rc = alloc_f32(m, &s->rope_cos, seq_len * half, "rope table", err);
        if (rc == 0)
            rc = alloc_f32(m, &s->rope_sin, seq_len * half, "rope table", err);
        for (int64_t p = 0; rc == 0 && p < seq_len; p++)
            model_rope_table(p, m->head_dim, c->rope_theta, s->rope_cos + p * half, s->rope_sin + p * half);
    }
    return rc;
}

int model_new(source *src, int64_t seq_len, int64_t max_batch, model **out, ierr *err)
{
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m)
        return ierr_set(err, -ENOMEM, "out of memory");
    m->src = src;
    m->cfg = *source_hparams(src);
    const hp_config *c = &m->cfg;
    m->head_dim = hp_head_dim(c);
    m->q_dim = c->n_heads * m->head_dim;
    m->kv_dim = c->n_kv_heads * m->head_dim;
    m->bundle_len = (c->gated ? 3 : 2) * c->d_model;
    m->ffn = model_ffn_dense;
    m->w.wdt = source_dtype(src);
    const int64_t *ids;
    m->w.mapped = source_ffn_map(src, 0, &ids) != NULL;
    if (seq_len <= 0 || seq_len > c->max_pos)
        seq_len = c->max_pos;
    if (max_batch <= 0)
        max_batch = MODEL_DEFAULT_BATCH;
    if (max_batch > seq_len)
        max_batch = seq_len;
    int rc = load_weights(m, err);
    if (rc == 0)
        rc = alloc_state(m, seq_len, max_batch, err);
    if (rc) {
        model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void model_free(model *m)
{
    if (!m)
        return;
    model_weights *w = &m->w;
    const void **mats[] = {w->wq, w->wk, w->wv, w->wo};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
        for (int64_t l = 0; mats[i] && !w->mapped && l < m->cfg.n_layers; l++)
            free((void *)mats[i][l]);
        free((void *)mats[i]);
    }
    if (!w->mapped) {
        if (w->lm_head != w->tok_emb)
            free((void *)w->lm_head);
        free((void *)w->tok_emb);
    }
    float *wp[] = {w->pos_emb, w->attn_norm_w, w->attn_norm_b, w->bq, w->bk, w->bv, w->bo, w->ffn_norm_w,
                   w->ffn_norm_b, w->ffn_b_up, w->ffn_b_gate, w->ffn_b_down, w->final_norm_w, w->final_norm_b};
    for (size_t i = 0; i < sizeof wp / sizeof wp[0]; i++)
        free(wp[i]);
    free(w->ffn_resident);
    model_state *s = &m->s;
    float *sp[] = {s->x, s->xb, s->xb2, s->q, s->k, s->v, s->att_out, s->att, s->pre, s->gpre, s->act,
                   s->bgather, s->wscratch, s->key_cache, s->value_cache, s->rope_cos, s->rope_sin};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        free(sp[i]);
    free(s->ffn_raw);
    free(m);
}

/* Read neurons [j0, j0+nb) of a layer (slots [j0, j0+nb) of its slot-order
 * file if `slots`), as stored, into dst [nb][bundle_bytes]. */
static int read_bundles(model *m, int64_t layer, int slots, int64_t j0, int64_t nb, void *dst, ierr *err)
{
    int64_t bb = source_bundle_bytes(m->src);
    size_t len = (size_t)nb * (size_t)bb;
    uint64_t t0 = cli_now_ns(), off = (uint64_t)j0 * (uint64_t)bb;
    int rc = slots ? source_read_ffn_slots(m->src, layer, off, dst, len, err)
                   : source_read_ffn(m->src, layer, off, dst, len, err);
    m->stats.io_ns += cli_now_ns() - t0;
    if (rc)
        return rc;
    m->stats.ffn_bytes_read += len;
    m->stats.ffn_reads++;
    return 0;
}

int model_load_resident_ffn(model *m, ierr *err)
{
    const hp_config *c = &m->cfg;
    if (m->w.ffn_resident)
        return 0;
    uint64_t bb = (uint64_t)source_bundle_bytes(m->src), per_layer = (uint64_t)c->d_ffn * bb;
    size_t total = (size_t)((uint64_t)c->n_layers * per_layer);
    unsigned char *p = wm_alloc(total);
    if (!p)
        return ierr_set(err, -ENOMEM, "out of memory for the resident FFN (%zu bytes)", total);
    m->w.ffn_resident = p;
    m->resident_bytes += total;
    int rc = 0;
    for (int64_t l = 0; rc == 0 && l < c->n_layers; l++)
        for (int64_t j = 0; rc == 0 && j < c->d_ffn; j += m->s.ffn_block) {
            int64_t nb = c->d_ffn - j < m->s.ffn_block ? c->d_ffn - j : m->s.ffn_block;
            rc = read_bundles(m, l, 0, j, nb, p + (uint64_t)l * per_layer + (uint64_t)j * bb, err);
        }
    return rc;
}

int model_ffn_dense(model *m, void *ctx, int64_t layer, int64_t pos, const float *x, int64_t n, float *y,
                    ierr *err)
{
    (void)ctx;
    const hp_config *c = &m->cfg;
    model_state *s = &m->s;
    int64_t d = c->d_model, F = c->d_ffn, bl = m->bundle_len;
    const float *bu = m->w.ffn_b_up ? m->w.ffn_b_up + layer * F : NULL;
    const float *bg = m->w.ffn_b_gate ? m->w.ffn_b_gate + layer * F : NULL;
    /* The order of the bundles: a mapped source is computed in place in
     * physical slot order; reads go in slot order too where the source has
     * it (one sequential read of a reordered store, not a scattered one),
     * except for the calibration hook, which wants pre in neuron-id order. */
    const int64_t *id_of = NULL;
    const void *map = m->w.mapped ? source_ffn_map(m->src, layer, &id_of) : NULL;
    if (m->w.mapped && (!map || m->ffn_hook))
        return ierr_set(err, -EINVAL, "model: layer %lld: %s", (long long)layer,
                        map ? "the calibration hook needs neuron-id order, not a mapped store"
                            : "no mapped neuron file");
    int slots = !map && !m->w.ffn_resident && !m->ffn_hook && source_ffn_slots(m->src, layer, &id_of) == 0;
    memset(y, 0, (size_t)(n * d) * sizeof(float));
    for (int64_t j = 0; j < F; j += s->ffn_block) {
        int64_t nb = F - j < s->ffn_block ? F - j : s->ffn_block;
        const void *wb;
        const float *bub = bu ? bu + j : NULL, *bgb = bg ? bg + j : NULL;
        if (map || slots) {
            if (map) {
                wb = wm_at(m->w.wdt, map, bl, j, 0);
            } else {
                int rc = read_bundles(m, layer, 1, j, nb, s->ffn_raw, err);
                if (rc)
                    return rc;
                wb = s->ffn_raw;
            }
            for (int64_t i = 0; i < nb; i++) {
                if (bu)
                    s->bgather[i] = bu[id_of[j + i]];
                if (bg)
                    s->bgather[s->ffn_block + i] = bg[id_of[j + i]];
            }
            bub = bu ? s->bgather : NULL;
            bgb = bg ? s->bgather + s->ffn_block : NULL;
        } else if (m->w.ffn_resident) {
            wb = wm_at(m->w.wdt, m->w.ffn_resident, bl, layer * F + j, 0);
        } else {
            int rc = read_bundles(m, layer, 0, j, nb, s->ffn_raw, err);
            if (rc)
                return rc;
            wb = s->ffn_raw;
        }
        model_ffn_bundles(m->w.wdt, wb, nb, d, hp_act_spec(c, layer), bub, bgb, x, n, s->pre + j,
                          s->gpre ? s->gpre + j : NULL, F, s->act, y, s->wscratch);
    }
    if (m->w.ffn_b_down) {
        const float *b = m->w.ffn_b_down + layer * d;
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < d; k++)
                y[i * d + k] += b[k];
    }
    if (m->ffn_hook)
        m->ffn_hook(m->ffn_hook_ctx, layer, pos, n, x, s->pre, s->gpre);
    return 0;
}

/* ---- forward -------------------------------------------------------------- */

/* A mapped source reads by page faults: the process's block-I/O delay
 * (/proc/self/stat field 42, delay accounting: sysctl kernel.task_delayacct=1,
 * else 0) in ns and the bytes it had read from storage (/proc/self/io). */
static void proc_io(uint64_t *blkio_ns, uint64_t *read_bytes)
{
    char buf[2048];
    *blkio_ns = *read_bytes = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *p = strrchr(buf, ')');   /* the command name may hold spaces */
        unsigned long long ticks = 0;
        for (int field = 2; p && field < 42; field++)
            p = strchr(p + 1, ' ');
        if (p && sscanf(p + 1, "%llu", &ticks) == 1)
            *blkio_ns = ticks * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
    }
    f = fopen("/proc/self/io", "r");
    if (f) {
        unsigned long long v;
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "read_bytes: %llu", &v) == 1)
                *read_bytes = v;
        fclose(f);
    }
}

static void norm_rows(const model *m, float *out, const float *x, const float *w, const float *b, int64_t n)
{
    int64_t d = m->cfg.d_model;
    for (int64_t i = 0; i < n; i++) {
        if (m->cfg.family == HP_OPT)
            model_layernorm(out + i * d, x + i * d, w, b, d, m->cfg.norm_eps);
        else
            model_rmsnorm(out + i * d, x + i * d, w, d, m->cfg.norm_eps);
    }
}

/* One query head q over the cached positions lo..p of one kv head (kc, vc:
 * its first element in slot 0 of the layer's ring, rows kv_dim apart): the
 * scores, their softmax and the weighted sum of the values into o. The
 * positions sit in ring slots lo mod kv_len onwards, in at most two runs of
 * consecutive slots (the ring wraps at most once since p - lo < kv_len);
 * they are taken in position order. */
static void attend(model_state *s, const float *q, const float *kc, const float *vc, int64_t kvd, int64_t hd,
                   int64_t lo, int64_t p, float scale, float *o)
{
    int64_t T = p - lo + 1, a = lo % s->kv_len;
    int64_t n1 = a + T <= s->kv_len ? T : s->kv_len - a, n2 = T - n1;   /* slots a.., then 0.. */
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n1, (int)hd, scale, kc + a * kvd, (int)kvd, q, 1, 0.0f, s->att, 1);
    if (n2)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n2, (int)hd, scale, kc, (int)kvd, q, 1, 0.0f, s->att + n1, 1);
    model_softmax(s->att, T);
    cblas_sgemv(CblasRowMajor, CblasTrans, (int)n1, (int)hd, 1.0f, vc + a * kvd, (int)kvd, s->att, 1, 0.0f, o, 1);
    if (n2)
        cblas_sgemv(CblasRowMajor, CblasTrans, (int)n2, (int)hd, 1.0f, vc, (int)kvd, s->att + n1, 1, 1.0f, o, 1);
}

/* Causal self-attention of layer l for the batch in s.xb (already normed);
 * the result (after o_proj) lands in s.xb2. Row i (position p = pos + i)
 * writes its key and value into slot p mod kv_len and then attends, before
 * row i + 1 writes: with a sliding window W, p attends to positions
 * p-W+1..p (Hugging Face's Mistral mask: a key j is masked when j > p or
 * j <= p - W; transformers, src/transformers/models/mistral/modeling_mistral.py,
 * MistralModel._prepare_4d_causal_attention_mask_with_cache_position,
 * sliding_attend_mask), and the slot it overwrites held p - W, which no row
 * from p on needs, so a batch longer than the window is safe. */
static void attention(model *m, int64_t l, int64_t n, int64_t pos)
{
    const hp_config *c = &m->cfg;
    const model_weights *w = &m->w;
    model_state *s = &m->s;
    int64_t d = c->d_model, hd = m->head_dim, qd = m->q_dim, kvd = m->kv_dim;
    int64_t group = c->n_heads / c->n_kv_heads, win = c->sliding_window;
    float scale = 1.0f / sqrtf((float)hd);
    matmul(m, s->q, s->xb, w->wq[l], w->bq ? w->bq + l * qd : NULL, n, d, qd);
    matmul(m, s->k, s->xb, w->wk[l], w->bk ? w->bk + l * kvd : NULL, n, d, kvd);
    matmul(m, s->v, s->xb, w->wv[l], w->bv ? w->bv + l * kvd : NULL, n, d, kvd);
    float *kc = s->key_cache + l * s->kv_len * kvd, *vc = s->value_cache + l * s->kv_len * kvd;
    float qk_scale = c->family == HP_OPT ? 1.0f : scale;
    for (int64_t i = 0; i < n; i++) {
        int64_t p = pos + i, slot = p % s->kv_len, lo = win > 0 && p >= win ? p - win + 1 : 0;
        float *q = s->q + i * qd, *k = s->k + i * kvd;
        if (c->family == HP_OPT) {
            for (int64_t j = 0; j < qd; j++)   /* OPT: q scaled after its bias */
                q[j] *= scale;
        } else {
            int64_t half = hd / 2;
            model_rope(q, c->n_heads, hd, s->rope_cos + p * half, s->rope_sin + p * half);
            model_rope(k, c->n_kv_heads, hd, s->rope_cos + p * half, s->rope_sin + p * half);
        }
        memcpy(kc + slot * kvd, k, (size_t)kvd * sizeof(float));
        memcpy(vc + slot * kvd, s->v + i * kvd, (size_t)kvd * sizeof(float));
        for (int64_t h = 0; h < c->n_heads; h++) {
            int64_t kvh = h / group;
            attend(s, q + h * hd, kc + kvh * hd, vc + kvh * hd, kvd, hd, lo, p, qk_scale, s->att_out + i * qd + h * hd);
        }
    }
    matmul(m, s->xb2, s->att_out, w->wo[l], w->bo ? w->bo + l * d : NULL, n, qd, d);
}

static int forward(model *m, const int32_t *tokens, int64_t n, int64_t pos, ierr *err);

int model_forward(model *m, const int32_t *tokens, int64_t n, int64_t pos, ierr *err)
{
    if (!m->w.mapped)
        return forward(m, tokens, n, pos, err);
    uint64_t io0, rb0, io1, rb1;
    proc_io(&io0, &rb0);
    int rc = forward(m, tokens, n, pos, err);
    proc_io(&io1, &rb1);
    m->stats.io_ns += io1 - io0;
    m->stats.ffn_bytes_read += rb1 - rb0;
    return rc;
}

static int forward(model *m, const int32_t *tokens, int64_t n, int64_t pos, ierr *err)
{
    const hp_config *c = &m->cfg;
    const model_weights *w = &m->w;
    model_state *s = &m->s;
    int64_t d = c->d_model;
    if (n < 1 || n > s->max_batch)
        return ierr_set(err, -EINVAL, "model: batch of %lld positions (1..%lld)", (long long)n,
                        (long long)s->max_batch);
    if (pos < 0 || pos + n > s->seq_len)
        return ierr_set(err, -ERANGE, "model: positions %lld..%lld beyond the context of %lld", (long long)pos,
                        (long long)(pos + n - 1), (long long)s->seq_len);
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return ierr_set(err, -EINVAL, "model: token id %d out of range (vocabulary %lld)", (int)tokens[i],
                            (long long)c->vocab_size);
        wm_row(w->wdt, w->tok_emb, d, tokens[i], d, s->x + i * d);
        if (w->pos_emb) {
            const float *pe = w->pos_emb + (pos + i + c->pos_offset) * d;
            for (int64_t k = 0; k < d; k++)
                s->x[i * d + k] += pe[k];
        }
    }
    for (int64_t l = 0; l < c->n_layers; l++) {
        norm_rows(m, s->xb, s->x, w->attn_norm_w + l * d, w->attn_norm_b ? w->attn_norm_b + l * d : NULL, n);
        attention(m, l, n, pos);
        for (int64_t k = 0; k < n * d; k++)
            s->x[k] += s->xb2[k];
        norm_rows(m, s->xb, s->x, w->ffn_norm_w + l * d, w->ffn_norm_b ? w->ffn_norm_b + l * d : NULL, n);
        int rc = m->ffn(m, m->ffn_ctx, l, pos, s->xb, n, s->xb2, err);
        if (rc)
            return rc;
        for (int64_t k = 0; k < n * d; k++)
            s->x[k] += s->xb2[k];
    }
    norm_rows(m, s->xb, s->x, w->final_norm_w, w->final_norm_b, n);
    return 0;
}

void model_logits(model *m, int64_t row0, int64_t n, float *logits)
{
    int64_t d = m->cfg.d_model;
    matmul(m, logits, m->s.xb + row0 * d, m->w.lm_head, NULL, n, d, m->cfg.vocab_size);
}
