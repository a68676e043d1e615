/* test_store_update.c: the atomic store update (layout/store_update.h) and the
 * calibration in store.h, on tiny stores this test writes itself: a failure
 * injected at every commit step leaves the store byte for byte as it was
 * and no temporary directory; a successful update makes the calib table,
 * predictor tensors, frequencies and meta readable, keeps every bundle's
 * bytes under its neuron id through a reorder, shares ffn.bin when no slot
 * moves, drops the previous predictors on a second update; the hot-first
 * permutation; damaged calib rows are rejected; the mount's config.json
 * carries the calibration; a q4_0 store (36-byte bundles) reorders intact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "activity.h"
#include "io.h"
#include "store.h"
#include "store_update.h"
#include "testutil.h"

#define D 8
#define L 2
#define F 16
#define V 10

static char g_root[] = "/tmp/test_store_update.XXXXXX";
static char g_dir[400];                  /* the store of the current test */

static hp_config tiny_hp(void)
{
    hp_config hp = {
        .family = HP_OPT, .d_model = D, .n_layers = L, .n_heads = 2, .n_kv_heads = 2, .d_ffn = F,
        .vocab_size = V, .max_pos = 32, .pos_offset = 2, .norm_eps = 1e-5, .act = ACT_FN_RELU,
        .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    return hp;
}

/* a value that differs for every (layer, neuron, element) */
static float bundle_value(int64_t l, int64_t j, int64_t k) { return (float)(l * 1000 + j) + (float)k / 64.0f; }

/* A fresh store at g_dir named after the test: two dense tensors, bundles
 * with distinct contents, tokenizer rows, hf_config. */
#define QD 32        /* d_model of the quantized store: one block per row */

/* A fresh store at g_dir named after the test, in dtype t (f32: d_model D;
 * q8_0/q4_0: QD): two dense tensors (the embedding in t, the bias f32 or
 * t as fmt_tensor_dtype says), bundles with distinct contents, tokenizer
 * rows, hf_config. */
static void make_store_as(const char *name, fmt_dtype t)
{
    ierr err = IERR_INIT;
    storew *w;
    hp_config hp = tiny_hp();
    const int d = fmt_is_quant(t) ? QD : D;
    hp.d_model = d;
    snprintf(g_dir, sizeof g_dir, "%s/%s", g_root, name);
    assert_int_equal(storew_new(g_dir, 0, &w, &err), 0);
    assert_int_equal(storew_set_hparams(w, &hp, t, &err), 0);
    assert_int_equal(storew_set_meta(w, "hf_config", "{\"model_type\": \"opt\"}", &err), 0);
    assert_int_equal(storew_set_meta(w, "tokenizer", "gpt2-bpe", &err), 0);
    for (int64_t i = 0; i < V; i++)
        assert_int_equal(storew_add_token(w, i, "t", 1, 0, 0, &err), 0);
    float emb[V * QD], bias[QD], x[2 * QD];
    unsigned char buf[V * QD * 4];
    for (int i = 0; i < V * d; i++)
        emb[i] = (float)i * 0.5f;
    for (int i = 0; i < d; i++)
        bias[i] = -(float)i;
    int64_t s_emb[2] = { V, d }, s_b[1] = { d };
    fmt_dtype te = fmt_tensor_dtype(t, "embed.weight", 2), tb = fmt_tensor_dtype(t, "norm.bias", 1);
    fmt_from_f32(te, emb, buf, (size_t)(V * d));
    assert_int_equal(storew_add_tensor(w, "embed.weight", te, 2, s_emb, buf, (size_t)fmt_bytes(te, V * d), &err), 0);
    fmt_from_f32(tb, bias, buf, (size_t)d);
    assert_int_equal(storew_add_tensor(w, "norm.bias", tb, 1, s_b, buf, (size_t)fmt_bytes(tb, d), &err), 0);
    for (int64_t l = 0; l < L; l++) {
        assert_int_equal(storew_begin_layer(w, l, F, &err), 0);
        for (int64_t j = 0; j < F; j++) {
            for (int k = 0; k < 2 * d; k++)
                x[k] = bundle_value(l, j, k) * (fmt_is_quant(t) && k % 3 == 0 ? -1.0f : 1.0f);
            fmt_from_f32(t, x, buf, (size_t)(2 * d));
            assert_int_equal(storew_add_bundle(w, buf, &err), 0);
        }
    }
    assert_int_equal(storew_commit(w, &err), 0);
    storew_free(w);
}

static void make_store(const char *name) { make_store_as(name, FMT_F32); }

/* The three files of g_dir, concatenated with their sizes. */
typedef struct {
    char  *data[3];
    size_t len[3];
} snapshot;

static const char *const files[3] = { IFL_INDEX_NAME, IFL_DENSE_NAME, IFL_FFN_NAME };

static void snap(snapshot *s)
{
    ierr err = IERR_INIT;
    for (int i = 0; i < 3; i++) {
        char *p = io_join(g_dir, files[i]);
        assert_int_equal(io_read_file(p, 1 << 26, &s->data[i], &s->len[i], &err), 0);
        free(p);
    }
}

static void snap_free(snapshot *s)
{
    for (int i = 0; i < 3; i++)
        free(s->data[i]);
}

static void assert_same(const snapshot *a, const snapshot *b)
{
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a->len[i], b->len[i]);
        assert_memory_equal(a->data[i], b->data[i], a->len[i]);
    }
}

/* no "<name>.tmp.*" / ".old.*" left beside the store */
static void assert_no_leftovers(void)
{
    DIR *d = opendir(g_root);
    struct dirent *e;
    const char *base = strrchr(g_dir, '/') + 1;
    size_t n = strlen(base);
    assert_non_null(d);
    while ((e = readdir(d)))
        if (strncmp(e->d_name, base, n) == 0 && e->d_name[n] == '.')
            fail_msg("left behind: %s", e->d_name);
    closedir(d);
}

/* The update the tests commit: predictors of rank r per layer (A is [r, d],
 * d the store's d_model), calib rows, frequencies (neuron j of layer l:
 * ((j * 7 + l) % 5) / 10, so with ties),
 * a test meta key, and with `reorder` the hot-first slots. */
static void stage_update_d(storeu *u, int64_t r, int64_t d, int reorder, store_calib *rows, double freq[L][F])
{
    ierr err = IERR_INIT;
    for (int64_t l = 0; l < L; l++) {
        char name[STORE_PRED_NAME_MAX];
        float A[F * QD], B[F * QD], c[F];
        for (int i = 0; i < F * QD; i++) {
            A[i] = (float)(l + 1) * 0.25f + (float)i;
            B[i] = -(float)i;
        }
        for (int i = 0; i < F; i++)
            c[i] = (float)i / 8.0f;
        int64_t sa[2] = { r, d }, sb[2] = { F, r }, sc[1] = { F };
        store_pred_name(name, l, 'A');
        assert_int_equal(storeu_put_tensor_f32(u, name, 2, sa, A, &err), 0);
        store_pred_name(name, l, 'B');
        assert_int_equal(storeu_put_tensor_f32(u, name, 2, sb, B, &err), 0);
        store_pred_name(name, l, 'c');
        assert_int_equal(storeu_put_tensor_f32(u, name, 1, sc, c, &err), 0);
        rows[l] = (store_calib){ .rank = r, .threshold = -0.5 - (double)l, .act_threshold = 0, .sparsity = 0.9,
                                 .recall = 0.99, .precision = 0.4 + 0.1 * (double)l, .pred_fraction = NAN };
        for (int64_t j = 0; j < F; j++)
            freq[l][j] = (double)((j * 7 + l) % 5) / 10.0;
        assert_int_equal(storeu_set_freq(u, l, freq[l], &err), 0);
        if (reorder) {
            int64_t slots[F];
            storeu_order_by_freq(freq[l], F, slots);
            assert_int_equal(storeu_set_slots(u, l, slots, &err), 0);
        }
    }
    assert_int_equal(storeu_set_calib(u, rows, &err), 0);
    assert_int_equal(storeu_set_meta(u, "calib_test", "yes", &err), 0);
}

static void stage_update(storeu *u, int64_t r, int reorder, store_calib *rows, double freq[L][F])
{
    stage_update_d(u, r, D, reorder, rows, freq);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_order_by_freq(void **state)
{
    (void)state;
    double f[12] = { 0.5, 0.1, 0.5, NAN, 0.9, 0.0, 0.1, 0.5, 1.0, 0.0, 0.9, 0.2 };
    int64_t slot[12], id_at[12];
    storeu_order_by_freq(f, 12, slot);
    for (int i = 0; i < 12; i++)
        id_at[i] = -1;
    for (int j = 0; j < 12; j++) {
        assert_in_range(slot[j], 0, 11);
        assert_int_equal(id_at[slot[j]], -1);          /* a permutation */
        id_at[slot[j]] = j;
    }
    for (int s = 1; s < 12; s++) {
        double a = f[id_at[s - 1]], b = f[id_at[s]];
        a = isnan(a) ? -INFINITY : a;
        b = isnan(b) ? -INFINITY : b;
        assert_true(a > b || (a == b && id_at[s - 1] < id_at[s]));   /* descending, ties by id */
    }
    assert_int_equal(id_at[0], 8);
    assert_int_equal(id_at[11], 3);                    /* NAN last */
}

static void test_setters_refuse(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    storeu *u;
    make_store("refuse");
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    assert_int_equal(storeu_set_meta(u, "dense_bytes", "1", &err), -EINVAL);
    int64_t slots[F];
    for (int j = 0; j < F; j++)
        slots[j] = j;
    slots[3] = 4;                                      /* 4 twice, 3 never */
    assert_int_equal(storeu_set_slots(u, 0, slots, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "permutation"));
    assert_int_equal(storeu_set_slots(u, L, slots, &err), -EINVAL);
    double freq[F] = { 0 };
    freq[5] = -1;
    assert_int_equal(storeu_set_freq(u, 0, freq, &err), -EINVAL);
    int64_t bad[1] = { -1 };
    float x = 0;
    assert_int_equal(storeu_put_tensor_f32(u, "x", 1, bad, &x, &err), -EINVAL);
    storeu_free(u);
    assert_int_equal(storeu_open("/tmp/no/such/store", &u, &err) < 0, 1);
}

/* A failure at the start of each step leaves the store exactly as it was. */
static void test_fail_each_step(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    snapshot before, after;
    make_store("fail");
    snap(&before);
    for (int step = STOREU_STEP_DENSE; step < STOREU_STEP_COUNT; step++) {
        storeu *u;
        store_calib rows[L];
        double freq[L][F];
        assert_int_equal(storeu_open(g_dir, &u, &err), 0);
        stage_update(u, 4, 1, rows, freq);
        storeu_fail_at(u, (storeu_step)step);
        assert_int_equal(storeu_commit(u, &err), -EIO);
        assert_non_null(strstr(err.msg, storeu_step_name((storeu_step)step)));
        assert_int_equal(storeu_commit(u, &err), -EINVAL);    /* at most once */
        storeu_free(u);
        snap(&after);
        assert_same(&before, &after);
        snap_free(&after);
        assert_no_leftovers();
        store *s;
        assert_int_equal(store_open(g_dir, &s, &err), 0);
        assert_null(store_calib_at(s, 0));
        assert_true(isnan(store_layer_at(s, 0)->freq[0]));
        store_close(s);
    }
    /* the same through the environment (what the e2e script uses) */
    setenv("INFLASH_STOREU_FAIL_AT", "exchange", 1);
    storeu *u;
    store_calib rows[L];
    double freq[L][F];
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 4, 0, rows, freq);
    assert_int_equal(storeu_commit(u, &err), -EIO);
    storeu_free(u);
    unsetenv("INFLASH_STOREU_FAIL_AT");
    snap(&after);
    assert_same(&before, &after);
    snap_free(&after);
    assert_no_leftovers();
    snap_free(&before);
}

/* A verification failure (a calib rank that does not match the tensors, or
 * missing predictors) is caught before the exchange. */
static void test_verify_rejects(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    snapshot before, after;
    storeu *u;
    store_calib rows[L];
    double freq[L][F];
    make_store("verify");
    snap(&before);
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 4, 1, rows, freq);
    rows[1].rank = 3;
    assert_int_equal(storeu_set_calib(u, rows, &err), 0);
    assert_int_equal(storeu_commit(u, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "does not verify"));
    assert_non_null(strstr(err.msg, "inflash.pred.1.A"));
    storeu_free(u);
    /* calib rows without any predictor tensors */
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    assert_int_equal(storeu_set_calib(u, rows, &err), 0);
    assert_int_equal(storeu_commit(u, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "missing"));
    storeu_free(u);
    snap(&after);
    assert_same(&before, &after);
    snap_free(&after);
    snap_free(&before);
    assert_no_leftovers();
}

/* Read a whole old store: every bundle by id and the dense tensors' data. */
typedef struct {
    unsigned char bundle[L][F][2 * D * 4];
    float emb[V * D], bias[D];
} content;

static void read_content(store *s, content *c)
{
    ierr err = IERR_INIT;
    for (int64_t l = 0; l < L; l++)
        for (int64_t j = 0; j < F; j++)
            assert_int_equal(store_read_bundle(s, l, j, c->bundle[l][j], &err), 0);
    assert_int_equal(store_read_tensor_f32(s, store_tensor_find(s, "embed.weight"), c->emb, &err), 0);
    assert_int_equal(store_read_tensor_f32(s, store_tensor_find(s, "norm.bias"), c->bias, &err), 0);
}

static void assert_calibrated(store *s, int64_t r, const store_calib *rows, double freq[L][F], int reordered)
{
    ierr err = IERR_INIT;
    for (int64_t l = 0; l < L; l++) {
        const store_calib *c = store_calib_at(s, l);
        assert_non_null(c);
        assert_int_equal(c->rank, r);
        assert_true(c->threshold == rows[l].threshold && c->act_threshold == rows[l].act_threshold);
        assert_true(c->recall == rows[l].recall && c->precision == rows[l].precision);
        assert_true(isnan(c->pred_fraction));                 /* NAN went in as NULL */
        const store_layer *Ly = store_layer_at(s, l);
        int64_t slots[F];
        storeu_order_by_freq(freq[l], F, slots);
        for (int64_t j = 0; j < F; j++) {
            assert_true(Ly->freq[j] == freq[l][j]);
            assert_int_equal(Ly->slot_of[j], reordered ? slots[j] : j);
        }
        char name[STORE_PRED_NAME_MAX];
        store_pred_name(name, l, 'B');
        const store_tensor *t = store_tensor_find(s, name);
        assert_non_null(t);
        assert_int_equal(t->offset % IFL_TENSOR_ALIGN, 0);
        float B[F * D];
        assert_int_equal(store_read_tensor_f32(s, t, B, &err), 0);
        for (int i = 0; i < F * r; i++)
            assert_true(B[i] == -(float)i);
    }
    assert_null(store_calib_at(s, L));
    assert_string_equal(store_meta(s, "calib_test"), "yes");
}

static ino_t ffn_inode(void)
{
    struct stat st;
    char *p = io_join(g_dir, IFL_FFN_NAME);
    assert_int_equal(stat(p, &st), 0);
    free(p);
    return st.st_ino;
}

static void test_update_and_reorder(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    store *s;
    storeu *u;
    store_calib rows[L];
    double freq[L][F];
    static content old, now;
    make_store("update");
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    read_content(s, &old);
    size_t n_tensors = store_tensor_count(s);
    store_close(s);

    /* 1: no reorder: ffn.bin is shared (same inode), everything readable */
    ino_t ino = ffn_inode();
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 4, 0, rows, freq);
    assert_int_equal(storeu_commit(u, &err), 0);
    storeu_free(u);
    assert_no_leftovers();
    assert_true(ffn_inode() == ino);
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    assert_calibrated(s, 4, rows, freq, 0);
    assert_int_equal(store_tensor_count(s), n_tensors + 3 * L);
    read_content(s, &now);
    assert_memory_equal(&old, &now, sizeof old);
    store_close(s);

    /* 2: reorder hot-first, predictors of another rank: the old ones go,
       every bundle keeps its bytes under its id */
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 2, 1, rows, freq);
    assert_int_equal(storeu_commit(u, &err), 0);
    storeu_free(u);
    assert_no_leftovers();
    assert_true(ffn_inode() != ino);
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    assert_calibrated(s, 2, rows, freq, 1);
    assert_int_equal(store_tensor_count(s), n_tensors + 3 * L);
    char name[STORE_PRED_NAME_MAX];
    store_pred_name(name, 1, 'A');
    assert_int_equal(store_tensor_find(s, name)->shape[0], 2);
    read_content(s, &now);
    assert_memory_equal(&old, &now, sizeof old);
    /* the slot order really moved the bytes: slot 0 holds the hottest */
    const store_layer *Ly = store_layer_at(s, 0);
    unsigned char first[2 * D * 4];
    assert_int_equal(store_read_ffn(s, Ly->offset, first, sizeof first, &err), 0);
    assert_memory_equal(first, old.bundle[0][Ly->id_of[0]], sizeof first);
    assert_true(Ly->id_of[0] != 0);
    uint64_t dense_two = store_dense_bytes(s);
    store_close(s);

    /* 3: reorder again from a permuted store (slots already hot-first for
       these frequencies: ffn.bin shared again), calib kept, no growth */
    ino = ffn_inode();
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 2, 1, rows, freq);
    assert_int_equal(storeu_commit(u, &err), 0);
    storeu_free(u);
    assert_true(ffn_inode() == ino);
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    assert_int_equal(store_dense_bytes(s), dense_two);
    read_content(s, &now);
    assert_memory_equal(&old, &now, sizeof old);
    store_close(s);
}

/* The mount's config.json carries the calibration; parse it back. */
static void test_config_json(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    store *s;
    storeu *u;
    store_calib rows[L], back[L];
    double freq[L][F];
    hp_config hp = tiny_hp();
    int present = -1;
    make_store("json");
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    char *json = store_config_json(s, &err);
    assert_non_null(json);
    assert_null(strstr(json, "inflash_calibration"));
    assert_int_equal(store_parse_mount_calib(json, strlen(json), "config.json", &hp, back, &present, &err), 0);
    assert_int_equal(present, 0);
    free(json);
    store_close(s);
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update(u, 4, 0, rows, freq);
    assert_int_equal(storeu_set_meta(u, "calib_criterion", act_name(ACT_RELU), &err), 0);
    assert_int_equal(storeu_commit(u, &err), 0);
    storeu_free(u);
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    json = store_config_json(s, &err);
    assert_non_null(json);
    assert_non_null(strstr(json, "\"inflash_calib_criterion\": \"relu:up>0\""));
    assert_int_equal(store_parse_mount_calib(json, strlen(json), "config.json", &hp, back, &present, &err), 0);
    assert_int_equal(present, 1);
    for (int l = 0; l < L; l++) {
        assert_int_equal(back[l].rank, 4);
        assert_true(back[l].threshold == rows[l].threshold);
        assert_true(back[l].act_threshold == rows[l].act_threshold);
        assert_true(isnan(back[l].recall));
    }
    /* a config.json whose calibration lacks a layer is refused */
    char *cut = strstr(json, "\"layer\": 1");
    assert_non_null(cut);
    memcpy(cut, "\"layer\": 7", 10);
    assert_int_equal(store_parse_mount_calib(json, strlen(json), "config.json", &hp, back, &present, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "inflash_calibration"));
    free(json);
    store_close(s);
}

/* Damaged calib rows fail store_open with a message naming the index. */
static void test_calib_damage(void **state)
{
    (void)state;
    static const char *const damage[][2] = {
        { "DELETE FROM calib WHERE layer = 1", "all or none" },
        { "UPDATE calib SET rank = 0 WHERE layer = 0", "rank" },
        { "UPDATE calib SET rank = 3 WHERE layer = 0", "inflash.pred.0.A" },
        { "UPDATE calib SET threshold = 'x' WHERE layer = 0", "wrong type" },
        { "UPDATE calib SET recall = 1.5 WHERE layer = 1", "[0, 1]" },
        { "UPDATE calib SET layer = 5 WHERE layer = 1", "layer 5" },
        { "UPDATE tensors SET dtype = 'f16', bytes = bytes / 2 WHERE name = 'inflash.pred.1.c'", "f32" },
    };
    ierr err = IERR_INIT;
    storeu *u;
    store_calib rows[L];
    double freq[L][F];
    for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "damage%zu", i);
        make_store(name);
        assert_int_equal(storeu_open(g_dir, &u, &err), 0);
        stage_update(u, 4, 0, rows, freq);
        assert_int_equal(storeu_commit(u, &err), 0);
        storeu_free(u);
        char *p = io_join(g_dir, IFL_INDEX_NAME);
        sqlite3 *db;
        assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, damage[i][0], NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        store *s = NULL;
        int rc = store_open(g_dir, &s, &err);
        if (rc == 0)
            fail_msg("damage \"%s\" was accepted", damage[i][0]);
        assert_non_null(strstr(err.msg, p));
        if (!strstr(err.msg, damage[i][1]))
            fail_msg("damage \"%s\": message \"%s\" lacks \"%s\"", damage[i][0], err.msg, damage[i][1]);
        free(p);
    }
}

/* A q4_0 store (d_model 32: bundles of 2 * 18 = 36 bytes, q4_0 embeddings,
 * f32 bias) through a calibration with reorder: every bundle keeps its
 * bytes and checksum under its id, the dense tensors keep theirs and their
 * dtypes, the predictors are f32. */
static void test_quant_store(void **state)
{
    (void)state;
    ierr err = IERR_INIT;
    enum { BB = 2 * FMT_Q4_0_BYTES, EB = V * FMT_Q4_0_BYTES };   /* bundle, embedding bytes */
    make_store_as("q4_0", FMT_Q4_0);

    store *s;
    unsigned char old[L][F][BB], now[BB], emb_old[EB], emb_now[EB];
    assert_int_equal(store_open(g_dir, &s, &err), 0);
    assert_int_equal(store_bundle_bytes(s), BB);
    for (int64_t l = 0; l < L; l++)
        for (int64_t j = 0; j < F; j++)
            assert_int_equal(store_read_bundle(s, l, j, old[l][j], &err), 0);
    const store_tensor *t = store_tensor_find(s, "embed.weight");
    assert_int_equal(store_read_dense(s, t->offset, emb_old, sizeof emb_old, &err), 0);
    store_close(s);

    storeu *u;
    store_calib rows[L];
    double freq[L][F];
    assert_int_equal(storeu_open(g_dir, &u, &err), 0);
    stage_update_d(u, 2, QD, 1, rows, freq);
    if (storeu_commit(u, &err))
        fail_msg("%s", err.msg);
    storeu_free(u);
    assert_no_leftovers();

    assert_int_equal(store_open(g_dir, &s, &err), 0);
    assert_int_equal(store_dtype(s), FMT_Q4_0);
    int moved = 0;
    for (int64_t l = 0; l < L; l++) {
        for (int64_t j = 0; j < F; j++) {
            assert_int_equal(store_read_bundle(s, l, j, now, &err), 0);
            assert_memory_equal(now, old[l][j], sizeof now);
            moved += store_layer_at(s, l)->slot_of[j] != j;
        }
        assert_int_equal(store_verify_bundles(s, l, 0, F, NULL, NULL, &err), 0);
        char name[STORE_PRED_NAME_MAX];
        store_pred_name(name, l, 'A');
        assert_int_equal(store_tensor_find(s, name)->dtype, FMT_F32);
    }
    assert_true(moved > 0);
    t = store_tensor_find(s, "embed.weight");
    assert_int_equal(t->dtype, FMT_Q4_0);
    assert_int_equal(store_verify_tensor(s, t, &err), 0);
    assert_int_equal(store_read_dense(s, t->offset, emb_now, sizeof emb_now, &err), 0);
    assert_memory_equal(emb_now, emb_old, sizeof emb_now);
    assert_int_equal(store_tensor_find(s, "norm.bias")->dtype, FMT_F32);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_by_freq),
        cmocka_unit_test(test_setters_refuse),
        cmocka_unit_test(test_fail_each_step),
        cmocka_unit_test(test_verify_rejects),
        cmocka_unit_test(test_update_and_reorder),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_calib_damage),
        cmocka_unit_test(test_quant_store),
    };
    tu_dir_use(g_root);
    return cmocka_run_group_tests(tests, tu_dir_setup, tu_dir_teardown);
}
