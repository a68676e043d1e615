/* test_model.c: cmocka tests of the client's attention KV cache
 * (client/model.h) on a tiny random Mistral-style model (RMSNorm, RoPE, GQA,
 * SwiGLU, sliding window W) this test packs itself:
 *   - the ring: with a window the cache holds min(context, W) positions
 *     (kv_len, model_kv_bytes), and model_forward over a prompt of more than
 *     5 W tokens, in batches of 1, 3, W, 2W + 1 and all at once, with a
 *     context just long enough and with the whole max_pos, gives the logits
 *     of an oracle computed here: the whole sequence layer by layer, every
 *     key kept, positions outside the window masked (no ring, no cache);
 *   - a context shorter than the window, and the same weights without a
 *     window (a plain Llama: the cache is the context), match the oracle;
 *   - the window matters on this model (the oracle with and without it
 *     differ after W positions), so the first test can fail;
 *   - the store keeps the window (meta sliding_window). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "source.h"
#include "store.h"
#include "testutil.h"

#define D    16
#define NL   2
#define NH   4
#define NKV  2
#define HD   (D / NH)
#define KVD  (NKV * HD)
#define F    24
#define V    40
#define MAXP 64
#define W    4
#define NTOK (5 * W + 3)   /* the prompt: more than five windows */

static char g_root[] = "/tmp/test_model.XXXXXX";

/* The weights as f32, by checkpoint weight and layer (model-wide: layer 0). */
static float *g_w[CKPT_N_WEIGHTS][NL];

static const float *wt(ckpt_weight k, int64_t layer)
{
    return g_w[k][layer < 0 ? 0 : layer];
}

static float frand(void)   /* [-1, 1) */
{
    return (float)(tu_rng() >> 40) / 8388608.0f - 1.0f;
}

/* Random weights for the tensors of hp (norm weights near 1), kept in g_w;
 * the dense ones go into the store, the FFN matrices become bundles. */
static void write_weights(storew *sw, const hp_config *hp)
{
    ckpt_tensor *ts;
    size_t nt;
    ierr err = IERR_INIT;
    assert_int_equal(ckpt_list(hp, CKPT_STORE_ORDER, &ts, &nt), 0);
    for (size_t i = 0; i < nt; i++) {
        const ckpt_tensor *t = &ts[i];
        if (t->optional)   /* the tied head */
            continue;
        int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        int norm = t->weight == CKPT_ATTN_NORM_W || t->weight == CKPT_FFN_NORM_W || t->weight == CKPT_FINAL_NORM_W;
        float *v = malloc((size_t)n * sizeof *v);
        assert_non_null(v);
        for (int64_t k = 0; k < n; k++)
            v[k] = norm ? 1.0f + 0.1f * frand() : (t->weight == CKPT_TOK_EMB ? 1.0f : 0.5f) * frand();
        g_w[t->weight][t->layer < 0 ? 0 : t->layer] = v;
        if (t->role == CKPT_DENSE && storew_add_tensor(sw, t->name, FMT_F32, t->ndim, t->shape, v,
                                                       (size_t)n * sizeof *v, &err) != 0)
            fail_msg("%s", err.msg);
    }
    free(ts);
    for (int64_t l = 0; l < NL; l++) {
        assert_int_equal(storew_begin_layer(sw, l, F, &err), 0);
        for (int64_t j = 0; j < F; j++) {   /* up row, gate row, down column */
            float b[3 * D];
            for (int64_t k = 0; k < D; k++) {
                b[k] = wt(CKPT_UP_W, l)[j * D + k];
                b[D + k] = wt(CKPT_GATE_W, l)[j * D + k];
                b[2 * D + k] = wt(CKPT_DOWN_W, l)[k * F + j];
            }
            assert_int_equal(storew_add_bundle(sw, b, &err), 0);
        }
    }
}

static hp_config tiny_hp(int64_t window)
{
    return (hp_config){
        .family = HP_LLAMA, .d_model = D, .n_layers = NL, .n_heads = NH, .n_kv_heads = NKV, .d_ffn = F,
        .vocab_size = V, .max_pos = MAXP, .norm_eps = 1e-5, .rope_theta = 10000.0, .act = ACT_FN_SILU,
        .gated = 1, .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1, .sliding_window = window,
    };
}

/* The store root/name with the given window (the same weights each time). */
static void make_store(const char *name, int64_t window, char *dir, size_t cap)
{
    ierr err = IERR_INIT;
    storew *sw;
    hp_config hp = tiny_hp(window);
    char cfg[128];
    snprintf(dir, cap, "%s/%s", g_root, name);
    snprintf(cfg, sizeof cfg, "{\"model_type\": \"mistral\", \"sliding_window\": %lld}", (long long)window);
    tu_rng_seed(7);
    for (int k = 0; k < CKPT_N_WEIGHTS; k++)
        for (int l = 0; l < NL; l++) {
            free(g_w[k][l]);
            g_w[k][l] = NULL;
        }
    assert_int_equal(storew_new(dir, 0, &sw, &err), 0);
    assert_int_equal(storew_set_hparams(sw, &hp, FMT_F32, &err), 0);
    assert_int_equal(storew_set_meta(sw, "hf_config", cfg, &err), 0);
    assert_int_equal(storew_set_meta(sw, "tokenizer", "sp-bpe", &err), 0);
    for (int64_t i = 0; i < V; i++)
        assert_int_equal(storew_add_token(sw, i, "t", 1, 0, 0, &err), 0);
    write_weights(sw, &hp);
    if (storew_commit(sw, &err) != 0)
        fail_msg("%s", err.msg);
    storew_free(sw);
}

/* ---- the oracle: whole sequence, every key, an explicit window mask ---- */

/* y[r] = sum_k m[r][k] x[k] for a [rows][cols] matrix. */
static void matvec(float *y, const float *m, const float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t k = 0; k < cols; k++)
            s += (double)m[r * cols + k] * x[k];
        y[r] = (float)s;
    }
}

/* logits [n][V] of tokens[0..n) at positions 0..n-1; window 0 = none. */
static void oracle(const int32_t *tokens, int64_t n, int64_t window, float *logits)
{
    float *x = calloc((size_t)n * D, sizeof *x), *xb = calloc(D, sizeof *xb);
    float *q = calloc((size_t)n * D, sizeof *q), *k = calloc((size_t)n * KVD, sizeof *k);
    float *v = calloc((size_t)n * KVD, sizeof *v), *att = calloc((size_t)n, sizeof *att);
    float o[D], y[D], up[F], gate[F], cs[HD / 2], sn[HD / 2];
    assert_true(x && xb && q && k && v && att);
    for (int64_t p = 0; p < n; p++)
        memcpy(x + p * D, wt(CKPT_TOK_EMB, -1) + tokens[p] * D, D * sizeof *x);
    for (int64_t l = 0; l < NL; l++) {
        for (int64_t p = 0; p < n; p++) {
            model_rmsnorm(xb, x + p * D, wt(CKPT_ATTN_NORM_W, l), D, 1e-5);
            matvec(q + p * D, wt(CKPT_WQ, l), xb, D, D);
            matvec(k + p * KVD, wt(CKPT_WK, l), xb, KVD, D);
            matvec(v + p * KVD, wt(CKPT_WV, l), xb, KVD, D);
            model_rope_table(p, HD, 10000.0, cs, sn);
            model_rope(q + p * D, NH, HD, cs, sn);
            model_rope(k + p * KVD, NKV, HD, cs, sn);
        }
        float *xn = malloc((size_t)n * D * sizeof *xn);
        assert_non_null(xn);
        for (int64_t p = 0; p < n; p++) {
            for (int64_t h = 0; h < NH; h++) {
                const float *kh = k + (h / (NH / NKV)) * HD, *vh = v + (h / (NH / NKV)) * HD;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j <= p; j++) {
                    double s = -INFINITY;
                    if (!window || p - j < window) {
                        s = 0;
                        for (int64_t e = 0; e < HD; e++)
                            s += (double)q[p * D + h * HD + e] * kh[j * KVD + e];
                        s /= sqrt((double)HD);
                    }
                    att[j] = (float)s;
                    mx = s > mx ? s : mx;
                }
                for (int64_t j = 0; j <= p; j++)
                    sum += exp(att[j] - mx);
                for (int64_t e = 0; e < HD; e++) {
                    double a = 0;
                    for (int64_t j = 0; j <= p; j++)
                        a += exp(att[j] - mx) / sum * vh[j * KVD + e];
                    o[h * HD + e] = (float)a;
                }
            }
            matvec(y, wt(CKPT_WO, l), o, D, D);
            for (int64_t e = 0; e < D; e++)
                xn[p * D + e] = x[p * D + e] + y[e];
        }
        memcpy(x, xn, (size_t)n * D * sizeof *x);
        free(xn);
        for (int64_t p = 0; p < n; p++) {
            model_rmsnorm(xb, x + p * D, wt(CKPT_FFN_NORM_W, l), D, 1e-5);
            matvec(up, wt(CKPT_UP_W, l), xb, F, D);
            matvec(gate, wt(CKPT_GATE_W, l), xb, F, D);
            for (int64_t j = 0; j < F; j++)
                up[j] *= gate[j] / (1.0f + expf(-gate[j]));
            matvec(y, wt(CKPT_DOWN_W, l), up, D, F);
            for (int64_t e = 0; e < D; e++)
                x[p * D + e] += y[e];
        }
    }
    for (int64_t p = 0; p < n; p++) {
        model_rmsnorm(xb, x + p * D, wt(CKPT_FINAL_NORM_W, -1), D, 1e-5);
        matvec(logits + p * V, wt(CKPT_TOK_EMB, -1), xb, V, D);
    }
    free(x), free(xb), free(q), free(k), free(v), free(att);
}

/* ---- the client's model ---- */

/* logits [n][V] from model_forward in batches of `batch` with context seq_len. */
static void run_model(const char *dir, int64_t seq_len, int64_t batch, const int32_t *tokens, int64_t n,
                      int64_t want_kv, float *logits)
{
    ierr err = IERR_INIT;
    source *src = NULL;
    model *m = NULL;
    if (source_open_store(dir, &src, &err) != 0 || model_new(src, seq_len, batch, &m, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(m->s.kv_len, want_kv);
    assert_int_equal(model_kv_bytes(m), 2u * NL * (uint64_t)want_kv * KVD * sizeof(float));
    for (int64_t i = 0; i < n; i += m->s.max_batch) {
        int64_t b = n - i < m->s.max_batch ? n - i : m->s.max_batch;
        if (model_forward(m, tokens + i, b, i, &err) != 0)
            fail_msg("%s", err.msg);
        model_logits(m, 0, b, logits + i * V);
    }
    /* one position past the context is refused */
    if (m->s.seq_len == n)
        assert_int_equal(model_forward(m, tokens, 1, n, &err), -ERANGE);
    model_free(m);
    source_close(src);
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double md = 0;
    for (int64_t i = 0; i < n; i++)
        md = fmax(md, fabs((double)a[i] - b[i]));
    return md;
}

static void prompt(int32_t *tokens, int64_t n)
{
    tu_rng_seed(99);
    for (int64_t i = 0; i < n; i++)
        tokens[i] = (int32_t)tu_rng_below(V);
}

static void test_ring_matches_mask(void **state)
{
    (void)state;
    char dir[256];
    int32_t tokens[NTOK];
    static float want[NTOK * V], got[NTOK * V];
    make_store("win", W, dir, sizeof dir);
    prompt(tokens, NTOK);
    /* the window matters on this model: identical to no window while it
     * covers everything, different after */
    oracle(tokens, NTOK, 0, got);
    oracle(tokens, NTOK, W, want);
    assert_true(max_diff(want, got, W * V) <= 1e-6);
    assert_true(max_diff(want + W * V, got + W * V, (NTOK - W) * V) > 1e-2);
    const int64_t batches[] = {1, 3, W, 2 * W + 1, NTOK}, contexts[] = {NTOK, 0};
    for (size_t c = 0; c < 2; c++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            run_model(dir, contexts[c], batches[b], tokens, NTOK, W, got);
            double md = max_diff(got, want, NTOK * V);
            if (md > 1e-4)
                fail_msg("context %lld, batch %lld: logits differ from the masked oracle by %g",
                         (long long)contexts[c], (long long)batches[b], md);
        }
}

static void test_short_context_and_no_window(void **state)
{
    (void)state;
    char dir[256];
    int32_t tokens[NTOK];
    static float want[NTOK * V], got[NTOK * V];
    prompt(tokens, NTOK);
    /* a context shorter than the window: the cache is the context */
    make_store("short", W, dir, sizeof dir);
    oracle(tokens, W - 1, W, want);
    run_model(dir, W - 1, 2, tokens, W - 1, W - 1, got);
    assert_true(max_diff(got, want, (W - 1) * V) <= 1e-4);
    /* no window: every position attends to all before it */
    make_store("nowin", 0, dir, sizeof dir);
    oracle(tokens, NTOK, 0, want);
    run_model(dir, NTOK, 5, tokens, NTOK, NTOK, got);
    assert_true(max_diff(got, want, NTOK * V) <= 1e-4);
    run_model(dir, 0, 0, tokens, NTOK, MAXP, got);
    assert_true(max_diff(got, want, NTOK * V) <= 1e-4);
}

static void test_store_keeps_window(void **state)
{
    (void)state;
    char dir[256];
    ierr err = IERR_INIT;
    store *s;
    make_store("meta", W, dir, sizeof dir);
    if (store_open(dir, &s, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(store_hparams(s)->sliding_window, W);
    assert_string_equal(store_meta(s, "sliding_window"), "4");
    store_close(s);
    make_store("meta0", 0, dir, sizeof dir);
    assert_int_equal(store_open(dir, &s, &err), 0);
    assert_int_equal(store_hparams(s)->sliding_window, 0);
    assert_null(store_meta(s, "sliding_window"));   /* absent without a window */
    store_close(s);
}

static int teardown(void **state)
{
    for (int k = 0; k < CKPT_N_WEIGHTS; k++)
        for (int l = 0; l < NL; l++)
            free(g_w[k][l]);
    return tu_dir_teardown(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_matches_mask),
        cmocka_unit_test(test_short_context_and_no_window),
        cmocka_unit_test(test_store_keeps_window),
    };
    tu_dir_use(g_root);
    return cmocka_run_group_tests(tests, tu_dir_setup, teardown);
}
