/* test_sparse.c: cmocka tests of the sparse FFN engine (client/sparse.h) on
 * tiny random models this test packs itself (OPT-style ReLU and Llama-style
 * gated, f32 and f16, calibrated with random predictors and a reversed
 * neuron order, so reads go through the slot translation):
 *   - the in-place tail conversion (f16 read into an f32 row block);
 *   - the engine's FFN equals the FFN restricted to the neurons that the
 *     window makes resident (the union of the last k selected sets), for
 *     oracle and predict, ReLU and gated; for ReLU oracle that is the dense
 *     FFN exactly; the reads put the right bundles in the right rows;
 *   - the counters: selected, loaded (= selected minus the previous union),
 *     bytes, resident rows, recall figures;
 *   - the DRAM budget: below the minimum refused with it; at the minimum the
 *     matrices hold SPARSE_MIN_ROWS, windows shrink, oversized sets are
 *     computed in chunks, results stay exact;
 *   - a whole model_forward with the engine matches the dense model, for
 *     ReLU and, uncalibrated, for each gated activation with exact zeros
 *     (gated ReLU, FATReLU, dReLU, CATS: oracle needs no calibration);
 *   - predict without a calibration is refused. */
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
#include <unistd.h>

#include "activity.h"
#include "model.h"
#include "predict.h"
#include "source.h"
#include "sparse.h"
#include "store.h"
#include "store_update.h"
#include "testutil.h"

#define D     16
#define NL    2
#define F     96
#define V     32
#define MAXP  16
#define RANK  4
#define RLMAX (3 * D)

static char g_root[] = "/tmp/test_sparse.XXXXXX";

/* The FFN weights of the current store as the engine sees them (rounded
 * to the store dtype), for the reference computations. */
static struct {
    int   gated;
    float w[NL][F][RLMAX];     /* bundles: up, [gate], down */
    float b_up[NL][F];         /* OPT only */
    float b_down[NL][D];
    float A[NL][RANK * D], B[NL][F * RANK], c[NL][F];
    float tau, act_thr;
} G;

static uint64_t g_rng = 1;
static act_fn g_act = ACT_FN_SILU;   /* the gated stores' activation (make_store) */
static float frand(void)   /* [-1, 1) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static float round_to(fmt_dtype t, float v)
{
    if (t == FMT_F32)
        return v;
    uint16_t h;
    fmt_from_f32(t, &v, &h, 1);
    float r;
    fmt_to_f32(t, &h, &r, 1);
    return r;
}

static void add_tensor(storew *w, fmt_dtype dt, const char *name, int ndim, int64_t d0, int64_t d1, float scale,
                       float offset, float *keep)
{
    int64_t shape[2] = {d0, d1}, n = ndim == 1 ? d0 : d0 * d1;
    float *v = malloc((size_t)n * sizeof *v);
    void *raw = malloc((size_t)n * 4);
    assert_non_null(v);
    assert_non_null(raw);
    for (int64_t i = 0; i < n; i++)
        v[i] = round_to(dt, offset + scale * frand());
    if (keep)
        memcpy(keep, v, (size_t)n * sizeof *v);
    fmt_from_f32(dt, v, raw, (size_t)n);
    ierr err = IERR_INIT;
    int rc = storew_add_tensor(w, name, dt, ndim, shape, raw, (size_t)n * (size_t)fmt_block_bytes(dt), &err);
    if (rc)
        fail_msg("%s", err.msg);
    free(v);
    free(raw);
}

/* Pack a tiny model at root/name; calibrated: random predictors, thresholds
 * and a reversed neuron order. */
static void make_store(const char *name, int gated, fmt_dtype dt, int calibrated, char *dir, size_t dirlen)
{
    ierr err = IERR_INIT;
    storew *w;
    snprintf(dir, dirlen, "%s/%s", g_root, name);
    g_rng = 12345;
    memset(&G, 0, sizeof G);
    G.gated = gated;
    hp_config hp = {
        .family = gated ? HP_LLAMA : HP_OPT, .d_model = D, .n_layers = NL, .n_heads = 2, .n_kv_heads = 2,
        .d_ffn = F, .vocab_size = V, .max_pos = MAXP, .pos_offset = gated ? 0 : 2, .norm_eps = 1e-5,
        .rope_theta = gated ? 10000.0 : 0.0, .act = gated ? g_act : ACT_FN_RELU, .gated = gated,
        .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    for (int64_t l = 0; l < NL; l++)   /* thresholds that cut some neurons, per layer */
        hp.act_param[l] = !gated ? 0.0f : g_act == ACT_FN_FATRELU ? 0.05f * (float)(l + 1)
                                        : g_act == ACT_FN_CATS    ? 0.3f * (float)(l + 1) : 0.0f;
    assert_int_equal(storew_new(dir, 0, &w, &err), 0);
    assert_int_equal(storew_set_hparams(w, &hp, dt, &err), 0);
    assert_int_equal(storew_set_meta(w, "hf_config", gated ? "{\"model_type\": \"llama\"}" : "{\"model_type\": \"opt\"}",
                                     &err), 0);
    assert_int_equal(storew_set_meta(w, "tokenizer", "gpt2-bpe", &err), 0);
    for (int64_t i = 0; i < V; i++)
        assert_int_equal(storew_add_token(w, i, "t", 1, 0, 0, &err), 0);
    char nm[128];
    if (!gated) {
        add_tensor(w, dt, "model.decoder.embed_tokens.weight", 2, V, D, 1.0f, 0, NULL);
        add_tensor(w, dt, "model.decoder.embed_positions.weight", 2, MAXP + 2, D, 0.5f, 0, NULL);
        add_tensor(w, dt, "model.decoder.final_layer_norm.weight", 1, D, 0, 0.1f, 1.0f, NULL);
        add_tensor(w, dt, "model.decoder.final_layer_norm.bias", 1, D, 0, 0.1f, 0, NULL);
        static const char *const per[][2] = {
            {"self_attn_layer_norm.weight", "w"}, {"self_attn_layer_norm.bias", "b"},
            {"self_attn.q_proj.weight", "m"},     {"self_attn.k_proj.weight", "m"},
            {"self_attn.v_proj.weight", "m"},     {"self_attn.out_proj.weight", "m"},
            {"self_attn.q_proj.bias", "b"},       {"self_attn.k_proj.bias", "b"},
            {"self_attn.v_proj.bias", "b"},       {"self_attn.out_proj.bias", "b"},
            {"final_layer_norm.weight", "w"},     {"final_layer_norm.bias", "b"},
            {"fc1.bias", "f"},                    {"fc2.bias", "d"},
        };
        for (int l = 0; l < NL; l++)
            for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
                snprintf(nm, sizeof nm, "model.decoder.layers.%d.%s", l, per[i][0]);
                char k = per[i][1][0];
                if (k == 'm')
                    add_tensor(w, dt, nm, 2, D, D, 0.3f, 0, NULL);
                else if (k == 'w')
                    add_tensor(w, dt, nm, 1, D, 0, 0.1f, 1.0f, NULL);
                else if (k == 'b')
                    add_tensor(w, dt, nm, 1, D, 0, 0.1f, 0, NULL);
                else if (k == 'f')
                    add_tensor(w, dt, nm, 1, F, 0, 0.2f, -0.1f, G.b_up[l]);
                else
                    add_tensor(w, dt, nm, 1, D, 0, 0.1f, 0, G.b_down[l]);
            }
    } else {
        add_tensor(w, dt, "model.embed_tokens.weight", 2, V, D, 1.0f, 0, NULL);
        add_tensor(w, dt, "model.norm.weight", 1, D, 0, 0.1f, 1.0f, NULL);
        static const char *const per[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                          "self_attn.v_proj.weight", "self_attn.o_proj.weight"};
        for (int l = 0; l < NL; l++) {
            snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
            add_tensor(w, dt, nm, 1, D, 0, 0.1f, 1.0f, NULL);
            snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
            add_tensor(w, dt, nm, 1, D, 0, 0.1f, 1.0f, NULL);
            for (size_t i = 0; i < 4; i++) {
                snprintf(nm, sizeof nm, "model.layers.%d.%s", l, per[i]);
                add_tensor(w, dt, nm, 2, D, D, 0.3f, 0, NULL);
            }
        }
    }
    int64_t rl = (gated ? 3 : 2) * D;
    for (int64_t l = 0; l < NL; l++) {
        assert_int_equal(storew_begin_layer(w, l, F, &err), 0);
        for (int64_t j = 0; j < F; j++) {
            uint16_t raw[RLMAX * 2];
            for (int64_t k = 0; k < rl; k++)
                G.w[l][j][k] = round_to(dt, 0.4f * frand());
            fmt_from_f32(dt, G.w[l][j], raw, (size_t)rl);
            assert_int_equal(storew_add_bundle(w, raw, &err), 0);
        }
    }
    assert_int_equal(storew_commit(w, &err), 0);
    storew_free(w);
    if (!calibrated)
        return;
    storeu *u;
    assert_int_equal(storeu_open(dir, &u, &err), 0);
    store_calib rows[NL];
    G.tau = 0.2f;
    G.act_thr = 0.02f;
    for (int64_t l = 0; l < NL; l++) {
        for (int i = 0; i < RANK * D; i++)
            G.A[l][i] = frand();
        for (int i = 0; i < F * RANK; i++)
            G.B[l][i] = frand();
        for (int i = 0; i < F; i++)
            G.c[l][i] = 0.5f * frand();
        char name[STORE_PRED_NAME_MAX];
        int64_t sa[2] = {RANK, D}, sb[2] = {F, RANK}, sc[1] = {F};
        store_pred_name(name, l, 'A');
        assert_int_equal(storeu_put_tensor_f32(u, name, 2, sa, G.A[l], &err), 0);
        store_pred_name(name, l, 'B');
        assert_int_equal(storeu_put_tensor_f32(u, name, 2, sb, G.B[l], &err), 0);
        store_pred_name(name, l, 'c');
        assert_int_equal(storeu_put_tensor_f32(u, name, 1, sc, G.c[l], &err), 0);
        rows[l] = (store_calib){.rank = RANK, .threshold = G.tau, .act_threshold = gated ? G.act_thr : 0.0,
                                .sparsity = NAN, .recall = NAN, .precision = NAN, .pred_fraction = NAN};
        int64_t slot_of[F];
        for (int64_t j = 0; j < F; j++)
            slot_of[j] = F - 1 - j;
        assert_int_equal(storeu_set_slots(u, l, slot_of, &err), 0);
    }
    assert_int_equal(storeu_set_calib(u, rows, &err), 0);
    assert_int_equal(storeu_set_meta(u, "calib_criterion", act_name(gated ? ACT_PRODUCT : ACT_RELU), &err), 0);
    int rc = storeu_commit(u, &err);
    if (rc)
        fail_msg("%s", err.msg);
    storeu_free(u);
}

/* ---- references --------------------------------------------------------- */

static double silu_d(double v) { return v / (1.0 + exp(-v)); }

/* pre-activation (up) and gate of neuron j for x, in double */
static void neuron(int64_t l, int64_t j, const float *x, double *u, double *g)
{
    double su = 0, sg = 0;
    for (int k = 0; k < D; k++) {
        su += (double)G.w[l][j][k] * x[k];
        if (G.gated)
            sg += (double)G.w[l][j][D + k] * x[k];
    }
    *u = su + (G.gated ? 0.0 : G.b_up[l][j]);
    *g = sg;
}

/* Is neuron j truly active (ReLU: up > 0; gated: |silu(g) u| > act_thr)? */
static int truly_active(int64_t l, int64_t j, const float *x)
{
    double u, g;
    neuron(l, j, x, &u, &g);
    return G.gated ? fabs(silu_d(g) * u) > G.act_thr : u > 0;
}

/* y = b_down + sum over the neurons in set (in[j] != 0) of act_j down_j */
static void ffn_ref(int64_t l, const float *x, const uint8_t *in, double *y)
{
    for (int k = 0; k < D; k++)
        y[k] = G.gated ? 0.0 : G.b_down[l][k];
    for (int64_t j = 0; j < F; j++) {
        if (!in[j])
            continue;
        double u, g, a;
        neuron(l, j, x, &u, &g);
        a = G.gated ? silu_d(g) * u : (u > 0 ? u : 0);
        const float *down = G.w[l][j] + (G.gated ? 2 : 1) * D;
        for (int k = 0; k < D; k++)
            y[k] += a * down[k];
    }
}

static void assert_close(const float *y, const double *ref, int n, double tol)
{
    for (int k = 0; k < n; k++)
        if (fabs(y[k] - ref[k]) > tol * (1.0 + fabs(ref[k])))
            fail_msg("element %d: %.7f, expected %.7f", k, (double)y[k], ref[k]);
}

/* ---- the engine against the references ------------------------------------ */

typedef struct {
    sparse_mode mode;
    int64_t     k;
    int         check_recall;
    uint64_t    budget;       /* 0 none */
    int         readers;
} run_cfg;

static int64_t g_shrinks, g_overflows;   /* of the budget runs of run_tokens */

/* Run T tokens through both layers' FFN with the engine and check each
 * output against the FFN over the expected resident set (the union of the
 * last k selected sets), and the counters; with a budget (windows may
 * shrink) only exactness of ReLU oracle is checked, and the shrinks and
 * overflows are added to g_shrinks / g_overflows. Returns their sum. */
static int64_t run_tokens(const char *dir, const run_cfg *rc_, int T)
{
    ierr err = IERR_INIT;
    source *src;
    model *m;
    sparse *sp;
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    assert_int_equal(model_new(src, MAXP, 1, &m, &err), 0);
    sparse_opts o;
    sparse_opts_init(&o, rc_->mode);
    o.window = rc_->k;
    o.check_recall = rc_->check_recall;
    o.budget = rc_->budget;
    o.readers = rc_->readers;
    int rc = sparse_new(m, &o, &sp, &err);
    if (rc)
        fail_msg("sparse_new: %s", err.msg);
    assert_ptr_equal(m->ffn_ctx, sp);
    pred *pr[NL] = {0};
    if (rc_->mode == SPARSE_PREDICT)
        for (int l = 0; l < NL; l++) {
            assert_int_equal(pred_new(D, F, RANK, &pr[l], &err), 0);
            memcpy(pr[l]->A, G.A[l], sizeof G.A[l]);
            memcpy(pr[l]->B, G.B[l], sizeof G.B[l]);
            memcpy(pr[l]->c, G.c[l], sizeof G.c[l]);
            pr[l]->tau = G.tau;
        }
    /* sets[l][t][j]: neuron j selected for token t of layer l */
    static uint8_t sets[NL][64][F];
    memset(sets, 0, sizeof sets);
    assert_true(T <= 64);
    int64_t events = 0, B = source_bundle_bytes(src);
    for (int t = 0; t < T; t++)
        for (int64_t l = 0; l < NL; l++) {
            float x[D], y[D], h[RANK], s[F];
            int32_t idx[F];
            for (int k = 0; k < D; k++)
                x[k] = frand();
            int64_t nsel = 0, ntrue = 0, hits = 0;
            uint8_t truth[F];
            for (int64_t j = 0; j < F; j++)
                ntrue += truth[j] = (uint8_t)truly_active(l, j, x);
            if (rc_->mode == SPARSE_PREDICT) {
                nsel = pred_select(pr[l], x, h, s, idx);
                for (int64_t i = 0; i < nsel; i++) {
                    sets[l][t][idx[i]] = 1;
                    hits += truth[idx[i]];
                }
            } else {
                memcpy(sets[l][t], truth, F);
                nsel = hits = ntrue;
            }
            uint8_t uni[F] = {0}, prev[F] = {0};
            int64_t n_uni = 0, n_new = 0;
            for (int64_t j = 0; j < F; j++) {
                for (int u = t; u >= 0 && u > t - rc_->k; u--)
                    uni[j] |= sets[l][u][j];
                for (int u = t - 1; u >= 0 && u > t - 1 - rc_->k; u--)
                    prev[j] |= sets[l][u][j];
                n_uni += uni[j];
                n_new += sets[l][t][j] && !prev[j];
            }
            rc = m->ffn(m, m->ffn_ctx, l, t, x, 1, y, &err);
            if (rc)
                fail_msg("ffn: %s", err.msg);
            double ref[D];
            sparse_count c;
            sparse_last(sp, 0, &c);
            if (rc_->budget) {   /* ReLU oracle: exact whatever is resident */
                uint8_t all[F];
                memset(all, 1, sizeof all);
                ffn_ref(l, x, all, ref);
                assert_close(y, ref, D, 1e-4);
                if (l == NL - 1) {   /* the token's sums over both layers */
                    events += c.shrinks + c.overflows;
                    g_shrinks += c.shrinks;
                    g_overflows += c.overflows;
                }
                assert_true(c.resident <= NL * F);   /* summed over the layers so far */
                continue;
            }
            ffn_ref(l, x, uni, ref);
            assert_close(y, ref, D, 1e-4);
            /* the counters of this token (layer 0 resets them, layer 1 adds) */
            static sparse_count acc;
            if (l == 0)
                memset(&acc, 0, sizeof acc);
            acc.selected += nsel;
            acc.loaded += n_new;
            acc.resident += n_uni;
            acc.active += ntrue;
            acc.hits += hits;
            assert_int_equal(c.selected, acc.selected);
            assert_int_equal(c.loaded, acc.loaded);
            assert_int_equal(c.bytes, (uint64_t)acc.loaded * (uint64_t)B);
            assert_int_equal(c.resident, acc.resident);
            assert_int_equal(c.shrinks + c.overflows, 0);
            if (sparse_knows_truth(sp)) {
                assert_int_equal(c.active, acc.active);
                assert_int_equal(c.hits, acc.hits);
                assert_true(c.resident_hits >= c.hits && c.resident_hits <= c.active);
            }
        }
    for (int l = 0; l < NL; l++)
        pred_free(pr[l]);
    sparse_layer_stats ls;
    assert_int_equal(sparse_layer_stats_get(sp, 0, &ls, &err), 0);
    assert_int_equal(ls.tokens, T);
    assert_int_equal(sparse_layer_stats_get(sp, NL, &ls, &err), -EINVAL);
    sparse_free(sp);
    assert_ptr_equal(m->ffn, model_ffn_dense);
    model_free(m);
    source_close(src);
    return events;
}

static void test_convert_tail(void **state)
{
    (void)state;
    size_t sizes[] = {1, 2, 1023, 1024, 1025, 5000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *want = malloc(n * sizeof *want), *buf = malloc(n * sizeof *buf);
        uint16_t *h = malloc(n * sizeof *h);
        for (size_t i = 0; i < n; i++)
            want[i] = round_to(FMT_F16, (float)i * 0.37f - 100.0f);
        fmt_from_f32(FMT_F16, want, h, n);
        memset(buf, 0xab, n * sizeof *buf);
        memcpy((unsigned char *)buf + n * 2, h, n * 2);   /* the raw bytes at the tail */
        sparse_convert_tail(FMT_F16, buf, n);
        assert_memory_equal(buf, want, n * sizeof *buf);
        memcpy(buf, want, n * sizeof *buf);
        sparse_convert_tail(FMT_F32, buf, n);               /* f32: untouched */
        assert_memory_equal(buf, want, n * sizeof *buf);
        free(want);
        free(buf);
        free(h);
    }
    /* quantized: n whole blocks of q8_0 / q4_0 at the tail, dequantized in place */
    fmt_dtype qt[] = {FMT_Q8_0, FMT_Q4_0};
    for (size_t q = 0; q < 2; q++) {
        size_t n = 3 * 1024 + 64, bytes = (size_t)fmt_bytes(qt[q], n);
        float *x = malloc(n * sizeof *x), *want = malloc(n * sizeof *want), *buf = malloc(n * sizeof *buf);
        unsigned char *raw = malloc(bytes);
        for (size_t i = 0; i < n; i++)
            x[i] = sinf((float)i * 0.1f) * (float)(1 + i % 7);
        fmt_from_f32(qt[q], x, raw, n);
        fmt_to_f32(qt[q], raw, want, n);
        memset(buf, 0xab, n * sizeof *buf);
        memcpy((unsigned char *)buf + n * sizeof *buf - bytes, raw, bytes);
        sparse_convert_tail(qt[q], buf, n);
        assert_memory_equal(buf, want, n * sizeof *buf);
        free(x);
        free(want);
        free(buf);
        free(raw);
    }
}

static void test_relu_oracle(void **state)
{
    (void)state;
    char dir[512];
    make_store("relu_f32", 0, FMT_F32, 0, dir, sizeof dir);   /* oracle of ReLU needs no calibration */
    run_tokens(dir, &(run_cfg){SPARSE_ORACLE, 3, 0, 0, 4}, 20);
    make_store("relu_f16", 0, FMT_F16, 1, dir, sizeof dir);
    run_tokens(dir, &(run_cfg){SPARSE_ORACLE, 1, 0, 0, 0}, 12);
}

static void test_relu_predict(void **state)
{
    (void)state;
    char dir[512];
    make_store("relu_pred_f16", 0, FMT_F16, 1, dir, sizeof dir);
    run_tokens(dir, &(run_cfg){SPARSE_PREDICT, 4, 1, 0, 4}, 24);
    run_tokens(dir, &(run_cfg){SPARSE_PREDICT, 2, 0, 0, 1}, 10);
    make_store("relu_pred_f32", 0, FMT_F32, 1, dir, sizeof dir);
    run_tokens(dir, &(run_cfg){SPARSE_PREDICT, 3, 1, 0, 2}, 16);
}

static void test_gated(void **state)
{
    (void)state;
    char dir[512];
    make_store("gated_f32", 1, FMT_F32, 1, dir, sizeof dir);
    run_tokens(dir, &(run_cfg){SPARSE_ORACLE, 1, 0, 0, 4}, 12);
    run_tokens(dir, &(run_cfg){SPARSE_PREDICT, 2, 1, 0, 4}, 16);
    make_store("gated_f16", 1, FMT_F16, 1, dir, sizeof dir);
    run_tokens(dir, &(run_cfg){SPARSE_PREDICT, 4, 0, 0, 3}, 16);
}

static void test_budget(void **state)
{
    (void)state;
    char dir[512];
    make_store("budget", 0, FMT_F16, 1, dir, sizeof dir);
    ierr err = IERR_INIT;
    source *src;
    model *m;
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    assert_int_equal(model_new(src, MAXP, 1, &m, &err), 0);
    sparse_opts o;
    sparse_opts_init(&o, SPARSE_ORACLE);
    sparse_budget b, b2;
    assert_int_equal(sparse_plan(m, &o, &b, &err), 0);   /* no budget: whole layers */
    assert_int_equal(b.capacity, F);
    assert_true(b.model_bytes == m->resident_bytes && b.fixed_bytes > 0 && b.min_bytes < b.total_bytes);
    assert_int_equal(b.total_bytes, b.model_bytes + b.fixed_bytes + b.nmat_bytes);
    o.budget = b.min_bytes - 1;
    assert_int_equal(sparse_plan(m, &o, &b2, &err), -ENOSPC);
    assert_non_null(strstr(err.msg, "below the minimum"));
    char want[64];
    snprintf(want, sizeof want, "%.1f MiB", (double)b.min_bytes / 1048576.0);
    assert_non_null(strstr(err.msg, want));
    sparse *sp;
    assert_int_equal(sparse_new(m, &o, &sp, &err), -ENOSPC);
    o.budget = b.min_bytes;
    assert_int_equal(sparse_plan(m, &o, &b2, &err), 0);
    assert_int_equal(b2.capacity, SPARSE_MIN_ROWS);
    assert_true(b2.total_bytes <= o.budget);
    o.budget = b.min_bytes + 20 * b.row_bytes * NL;
    assert_int_equal(sparse_plan(m, &o, &b2, &err), 0);
    assert_int_equal(b2.capacity, SPARSE_MIN_ROWS + 20);
    assert_true(b2.total_bytes <= o.budget);
    /* extra memory of the caller counts too */
    o.extra_bytes = 1000000;
    assert_int_equal(sparse_plan(m, &o, &b2, &err), -ENOSPC);
    model_free(m);
    source_close(src);

    /* tight: 32 rows for sets of ~half of 96 neurons: shrinks and chunked
     * sets, yet ReLU oracle stays exact */
    g_shrinks = g_overflows = 0;
    run_tokens(dir, &(run_cfg){SPARSE_ORACLE, 4, 0, b.min_bytes, 4}, 20);
    assert_true(g_shrinks > 0 && g_overflows > 0);
    /* 72 rows: the window shrinks, sets fit */
    g_shrinks = g_overflows = 0;
    run_tokens(dir, &(run_cfg){SPARSE_ORACLE, 4, 0, b.min_bytes + 40 * b.row_bytes * NL, 2}, 20);
    assert_true(g_shrinks > 0);
    assert_int_equal(g_overflows, 0);
}

/* A whole model_forward of store dir with the oracle engine against the
 * dense model; returns the fewest neurons selected in a layer (so callers
 * can see the sparsity was exercised). */
static int64_t forward_matches(const char *dir)
{
    ierr err = IERR_INIT;
    source *src;
    model *dm, *sm;
    sparse *sp;
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    assert_int_equal(model_new(src, MAXP, 0, &dm, &err), 0);
    assert_int_equal(model_new(src, MAXP, 4, &sm, &err), 0);
    sparse_opts o;
    sparse_opts_init(&o, SPARSE_ORACLE);
    assert_int_equal(sparse_new(sm, &o, &sp, &err), 0);
    int32_t toks[12] = {1, 5, 9, 3, 30, 7, 7, 2, 11, 4, 19, 0};
    float ld[12 * V], ls[V];
    int64_t fewest = NL * F;
    assert_int_equal(model_forward(dm, toks, 12, 0, &err), 0);
    model_logits(dm, 0, 12, ld);
    /* sparse: one position per forward, then a batch of 4 (rows are
     * consecutive tokens through the same window) */
    for (int i = 0; i < 12; i++) {
        int batch = i >= 8 ? 4 : 1;
        assert_int_equal(model_forward(sm, toks + i, batch, i, &err), 0);
        for (int r = 0; r < batch; r++) {
            model_logits(sm, r, 1, ls);
            for (int v = 0; v < V; v++)
                assert_true(fabsf(ls[v] - ld[(i + r) * V + v]) <= 1e-4f * (1.0f + fabsf(ld[(i + r) * V + v])));
            sparse_count c;
            sparse_last(sp, r, &c);
            assert_true(c.selected > 0 && c.active == c.selected && c.hits == c.active);
            if (c.selected < fewest)
                fewest = c.selected;
        }
        if (batch == 4)
            break;
    }
    sparse_free(sp);
    model_free(sm);
    model_free(dm);
    source_close(src);
    return fewest;
}

static void test_forward(void **state)
{
    (void)state;
    char dir[512];
    make_store("forward", 0, FMT_F16, 1, dir, sizeof dir);
    forward_matches(dir);
    /* the gated activations with exact zeros: oracle = dense, uncalibrated */
    const act_fn fns[] = { ACT_FN_RELU, ACT_FN_FATRELU, ACT_FN_DRELU, ACT_FN_CATS };
    for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
        char name[32];
        snprintf(name, sizeof name, "forward_%s", act_fn_name(fns[i]));
        g_act = fns[i];
        make_store(name, 1, i % 2 ? FMT_F16 : FMT_F32, 0, dir, sizeof dir);
        g_act = ACT_FN_SILU;
        int64_t fewest = forward_matches(dir);
        if (!(fewest > 0 && fewest < NL * F))   /* some neurons were cut (selected: all layers) */
            fail_msg("%s: %lld of %d neurons selected", name, (long long)fewest, NL * F);
    }
}

static void test_uncalibrated(void **state)
{
    (void)state;
    char dir[512];
    ierr err = IERR_INIT;
    source *src;
    model *m;
    sparse *sp;
    sparse_opts o;
    make_store("uncal_relu", 0, FMT_F32, 0, dir, sizeof dir);
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    store_calib cal;
    assert_int_equal(source_calib(src, 0, &cal, &err), -ENOENT);
    assert_null(source_calib_criterion(src));
    assert_int_equal(model_new(src, MAXP, 1, &m, &err), 0);
    sparse_opts_init(&o, SPARSE_PREDICT);
    assert_int_equal(sparse_new(m, &o, &sp, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "needs a calibrated store"));
    model_free(m);
    source_close(src);
    make_store("uncal_gated", 1, FMT_F32, 0, dir, sizeof dir);
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    assert_int_equal(model_new(src, MAXP, 1, &m, &err), 0);
    sparse_opts_init(&o, SPARSE_ORACLE);
    assert_int_equal(sparse_new(m, &o, &sp, &err), -ENOENT);
    model_free(m);
    source_close(src);
    /* a calibrated one reports its calibration */
    make_store("cal_gated", 1, FMT_F32, 1, dir, sizeof dir);
    assert_int_equal(source_open_store(dir, &src, &err), 0);
    assert_int_equal(source_calib(src, 1, &cal, &err), 0);
    assert_int_equal(cal.rank, RANK);
    assert_true(fabs(cal.act_threshold - G.act_thr) < 1e-6);
    assert_string_equal(source_calib_criterion(src), act_name(ACT_PRODUCT));
    assert_int_equal(source_calib(src, NL, &cal, &err), -EINVAL);
    source_close(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_tail), cmocka_unit_test(test_relu_oracle), cmocka_unit_test(test_relu_predict),
        cmocka_unit_test(test_gated),        cmocka_unit_test(test_budget),      cmocka_unit_test(test_forward),
        cmocka_unit_test(test_uncalibrated),
    };
    tu_dir_use(g_root);
    return cmocka_run_group_tests(tests, tu_dir_setup, tu_dir_teardown);
}
