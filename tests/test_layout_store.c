/* test_layout_store.c: the store writer and reader on tiny stores this test
 * writes itself (d_model 8, 2 layers, 16 neurons, gated and not, f32 and
 * f16): bundle placement, offsets and alignment; reordered slots; every kind
 * of index or file damage failing with an error naming the file; an existing
 * out_dir refused without force; an aborted writer leaving nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "io.h"
#include "store.h"
#include "testutil.h"

#define D 8
#define L 2
#define F 16
#define V 10

static char g_dir[] = "/tmp/test_layout_store.XXXXXX";

static char *path_of(const char *name)
{
    static char buf[4][300];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void sh(const char *fmt, const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    assert_int_equal(system(cmd), 0);
}

static hp_config tiny_hp(int gated)
{
    hp_config hp = {
        .family = gated ? HP_LLAMA : HP_OPT, .d_model = D, .n_layers = L, .n_heads = 2,
        .n_kv_heads = gated ? 1 : 2, .d_ffn = F, .vocab_size = V, .max_pos = 32, .pos_offset = gated ? 0 : 2,
        .norm_eps = 1e-5, .rope_theta = gated ? 10000 : 0, .act = gated ? ACT_FN_SILU : ACT_FN_RELU, .gated = gated,
        .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    return hp;
}

/* field by field: the struct has padding */
static void assert_hp_equal(const hp_config *a, const hp_config *b)
{
    assert_int_equal(a->family, b->family);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->d_ffn, b->d_ffn);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->max_pos, b->max_pos);
    assert_int_equal(a->pos_offset, b->pos_offset);
    assert_true(a->norm_eps == b->norm_eps);
    assert_true(a->rope_theta == b->rope_theta);
    assert_int_equal(a->act, b->act);
    assert_int_equal(a->gated, b->gated);
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_int_equal(a->bos_id, b->bos_id);
    assert_int_equal(a->eos_id, b->eos_id);
    assert_int_equal(a->pad_id, b->pad_id);
}

static const char *tiny_config(int gated)
{
    return gated ? "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 16, "
                   "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
                   "\"vocab_size\": 10, \"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-05, "
                   "\"hidden_act\": \"silu\", \"tie_word_embeddings\": true, \"bos_token_id\": 1, "
                   "\"eos_token_id\": 2}"
                 : "{\"model_type\": \"opt\", \"hidden_size\": 8, \"ffn_dim\": 16, \"num_hidden_layers\": 2, "
                   "\"num_attention_heads\": 2, \"vocab_size\": 10, \"max_position_embeddings\": 32, "
                   "\"activation_function\": \"relu\", \"bos_token_id\": 1, \"eos_token_id\": 2}";
}

/* The bytes of bundle (layer, j) as the test writes them. */
static void tiny_bundle(int gated, fmt_dtype dt, int layer, int j, unsigned char *out)
{
    float v[3 * D];
    int n = (gated ? 3 : 2) * D;
    for (int k = 0; k < n; k++)
        v[k] = (float)(layer * 100 + j) + (float)k / 64;
    fmt_from_f32(dt, v, out, (size_t)n);
}

static const char tokfile_data[] = "{\"model\": {\"type\": \"BPE\"}}\0binary";

/* Write a complete tiny store at dir. */
static void write_tiny(const char *dir, int gated, fmt_dtype dt, int force)
{
    storew *w;
    ierr err = IERR_INIT;
    hp_config hp = tiny_hp(gated);
    int rc = storew_new(dir, force, &w, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(storew_set_hparams(w, &hp, dt, &err), 0);
    assert_int_equal(storew_set_meta(w, "hf_config", tiny_config(gated), &err), 0);
    assert_int_equal(storew_set_meta(w, "tokenizer", "sp-bpe", &err), 0);
    assert_int_equal(storew_set_meta(w, "source_dtype", "F32", &err), 0);
    for (int i = 0; i < V; i++) {
        char piece[2] = { (char)('a' + i), 0 };
        assert_int_equal(storew_add_token(w, i, piece, 1, -(double)i, i == 1 || i == 2, &err), 0);
    }
    assert_int_equal(storew_add_merge(w, 0, "a", 1, "b", 1, &err), 0);
    assert_int_equal(storew_add_merge(w, 1, "ab", 2, "c", 1, &err), 0);
    assert_int_equal(storew_add_tokfile(w, "tokenizer.json", tokfile_data, sizeof tokfile_data, &err), 0);
    size_t es = (size_t)fmt_block_bytes(dt);
    float emb[V * D], norm[D], one = 3.5f;
    for (int i = 0; i < V * D; i++)
        emb[i] = (float)i / 8;
    for (int i = 0; i < D; i++)
        norm[i] = 1 + (float)i;
    unsigned char buf[V * D * 4];
    int64_t s_emb[2] = { V, D }, s_norm[1] = { D };
    fmt_from_f32(dt, emb, buf, V * D);
    assert_int_equal(storew_add_tensor(w, "emb", dt, 2, s_emb, buf, V * D * es, &err), 0);
    fmt_from_f32(dt, norm, buf, D);
    assert_int_equal(storew_add_tensor(w, "norm", dt, 1, s_norm, buf, D * es, &err), 0);
    fmt_dtype sdt = fmt_tensor_dtype(dt, "scalar", 0);        /* format.h section 1 */
    fmt_from_f32(sdt, &one, buf, 1);
    assert_int_equal(storew_add_tensor(w, "scalar", sdt, 0, NULL, buf, fmt_bytes(sdt, 1), &err), 0);
    unsigned char b[3 * D * 4];
    for (int l = 0; l < L; l++) {
        assert_int_equal(storew_begin_layer(w, l, F, &err), 0);
        for (int j = 0; j < F; j++) {
            tiny_bundle(gated, dt, l, j, b);
            assert_int_equal(storew_add_bundle(w, b, &err), 0);
        }
    }
    assert_true(storew_bytes_written(w) > 2 * IFL_HEADER_BYTES);
    rc = storew_commit(w, &err);
    if (rc)
        fail_msg("%s", err.msg);
    storew_free(w);
}

static void check_tiny(const char *dir, int gated, fmt_dtype dt)
{
    store *s;
    ierr err = IERR_INIT;
    int rc = store_open(dir, &s, &err);
    if (rc)
        fail_msg("%s", err.msg);
    const hp_config *hp = store_hparams(s);
    hp_config want = tiny_hp(gated);
    assert_hp_equal(hp, &want);
    assert_int_equal(store_dtype(s), dt);
    int64_t B = (gated ? 3 : 2) * D * (int64_t)(size_t)fmt_block_bytes(dt);
    assert_int_equal(store_bundle_bytes(s), B);
    assert_string_equal(store_dir(s), dir);
    assert_string_equal(store_meta(s, "tokenizer"), "sp-bpe");
    assert_null(store_meta(s, "nope"));
    struct stat st;
    assert_int_equal(stat(path_of("x"), &st), -1);
    char p[400];
    snprintf(p, sizeof p, "%s/dense.bin", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal((uint64_t)st.st_size, store_dense_bytes(s));
    snprintf(p, sizeof p, "%s/ffn.bin", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal((uint64_t)st.st_size, store_ffn_bytes(s));
    assert_int_equal(store_ffn_bytes(s) % IFL_LAYER_ALIGN, 0);

    /* tensors: name order, aligned, contents */
    assert_int_equal(store_tensor_count(s), 3);
    assert_string_equal(store_tensor_at(s, 0)->name, "emb");
    assert_string_equal(store_tensor_at(s, 2)->name, "scalar");
    assert_null(store_tensor_at(s, 3));
    const store_tensor *emb = store_tensor_find(s, "emb"), *sc = store_tensor_find(s, "scalar");
    assert_non_null(emb);
    assert_null(store_tensor_find(s, "embx"));
    assert_int_equal(emb->ndim, 2);
    assert_int_equal(emb->shape[0], V);
    assert_int_equal(emb->shape[1], D);
    assert_int_equal(emb->dtype, dt);
    assert_int_equal(emb->offset, IFL_HEADER_BYTES);
    for (size_t i = 0; i < store_tensor_count(s); i++)
        assert_int_equal(store_tensor_at(s, i)->offset % IFL_TENSOR_ALIGN, 0);
    float f[V * D];
    assert_int_equal(store_read_tensor_f32(s, emb, f, &err), 0);
    for (int i = 0; i < V * D; i++)
        assert_true(f[i] == (float)i / 8);
    assert_int_equal(sc->ndim, 0);
    assert_int_equal(store_read_tensor_f32(s, sc, f, &err), 0);
    assert_true(f[0] == 3.5f);
    unsigned char raw[V * D * 4];
    assert_int_equal(store_read_dense(s, emb->offset, raw, (size_t)emb->bytes, &err), 0);
    assert_int_equal(emb->xxh64, XXH64(raw, (size_t)emb->bytes, 0));

    /* bundles: layer l starts 4096-aligned, neuron j at offset + j * B */
    uint64_t prev_end = IFL_HEADER_BYTES;
    for (int l = 0; l < L; l++) {
        const store_layer *ly = store_layer_at(s, l);
        assert_non_null(ly);
        assert_int_equal(ly->n_neurons, F);
        assert_int_equal(ly->offset % IFL_LAYER_ALIGN, 0);
        assert_int_equal(ly->offset, fmt_align_up(prev_end, IFL_LAYER_ALIGN));
        assert_int_equal(ly->bytes, (uint64_t)(F * B));
        prev_end = ly->offset + ly->bytes;
        for (int j = 0; j < F; j++) {
            unsigned char want_b[3 * D * 4], got[3 * D * 4], direct[3 * D * 4];
            tiny_bundle(gated, dt, l, j, want_b);
            assert_int_equal(ly->slot_of[j], j);
            assert_int_equal(ly->id_of[j], j);
            assert_true(isnan(ly->freq[j]));
            assert_int_equal(store_read_bundle(s, l, j, got, &err), 0);
            assert_memory_equal(got, want_b, (size_t)B);
            assert_int_equal(store_read_ffn(s, ly->offset + (uint64_t)(j * B), direct, (size_t)B, &err), 0);
            assert_memory_equal(direct, want_b, (size_t)B);
            assert_int_equal(ly->xxh64[j], XXH64(want_b, (size_t)B, 0));
        }
    }
    assert_null(store_layer_at(s, L));
    assert_null(store_layer_at(s, -1));
    unsigned char tmp[3 * D * 4];
    assert_int_not_equal(store_read_bundle(s, 0, F, tmp, &err), 0);
    assert_int_not_equal(store_read_bundle(s, L, 0, tmp, &err), 0);
    assert_int_not_equal(store_read_ffn(s, store_ffn_bytes(s) - 4, tmp, 8, &err), 0);
    assert_non_null(strstr(err.msg, "ffn.bin"));
    assert_int_not_equal(store_read_dense(s, UINT64_MAX - 2, tmp, 8, &err), 0);

    /* tokenizer */
    assert_int_equal(store_token_count(s), V);
    const char *piece;
    size_t len;
    double score;
    int special;
    assert_int_equal(store_token(s, 3, &piece, &len, &score, &special), 0);
    assert_string_equal(piece, "d");
    assert_int_equal(len, 1);
    assert_true(score == -3);
    assert_int_equal(special, 0);
    assert_int_equal(store_token(s, 2, NULL, NULL, NULL, &special), 0);
    assert_int_equal(special, 1);
    assert_int_not_equal(store_token(s, V, &piece, &len, &score, &special), 0);
    assert_int_equal(store_merge_count(s), 2);
    const char *l, *r;
    size_t ll, rl;
    assert_int_equal(store_merge(s, 1, &l, &ll, &r, &rl), 0);
    assert_string_equal(l, "ab");
    assert_string_equal(r, "c");
    assert_int_equal(ll, 2);
    assert_int_not_equal(store_merge(s, 2, &l, &ll, &r, &rl), 0);
    const void *data;
    assert_int_equal(store_tokfile_count(s), 1);
    assert_int_equal(store_tokfile_find(s, "tokenizer.json", &data, &len), 0);
    assert_int_equal(len, sizeof tokfile_data);
    assert_memory_equal(data, tokfile_data, len);
    assert_int_not_equal(store_tokfile_find(s, "vocab.json", &data, &len), 0);
    store_close(s);
}

static void test_write_read(void **state)
{
    (void)state;
    for (int gated = 0; gated < 2; gated++)
        for (int d = 0; d < 2; d++) {
            fmt_dtype dt = d ? FMT_F16 : FMT_F32;
            char name[64];
            snprintf(name, sizeof name, "rw-%d-%d", gated, d);
            write_tiny(path_of(name), gated, dt, 0);
            check_tiny(path_of(name), gated, dt);
        }
}

static void test_config_json(void **state)
{
    (void)state;
    write_tiny(path_of("cfg"), 1, FMT_F16, 0);
    store *s;
    ierr err = IERR_INIT;
    assert_int_equal(store_open(path_of("cfg"), &s, &err), 0);
    char *text = store_config_json(s, &err);
    assert_non_null(text);
    assert_true(text[strlen(text) - 1] == '\n');
    assert_non_null(strstr(text, "\"inflash_dtype\": \"f16\""));
    assert_non_null(strstr(text, "\"inflash_layout_version\": 2"));
    assert_non_null(strstr(text, "\"inflash_family\": \"llama\""));
    assert_non_null(strstr(text, "\"inflash_tokenizer\": \"sp-bpe\""));
    if (!strstr(text, "\"rms_norm_eps\": 1e-05") && !strstr(text, "\"rms_norm_eps\": 1e-5"))
        fail_msg("config.json reals are not written readably:\n%s", text);
    hp_config hp;
    fmt_dtype dt;
    int64_t bb;
    int rc = store_parse_mount_config(text, strlen(text), "mnt/config.json", &hp, &dt, &bb, &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_hp_equal(&hp, store_hparams(s));
    assert_int_equal(dt, FMT_F16);
    assert_int_equal(bb, store_bundle_bytes(s));
    /* other layout version, missing keys */
    char *v2 = strstr(text, "\"inflash_layout_version\": 2");
    v2[strlen("\"inflash_layout_version\": ")] = '7';
    assert_int_not_equal(store_parse_mount_config(text, strlen(text), "mnt/config.json", &hp, &dt, &bb, &err), 0);
    assert_non_null(strstr(err.msg, "inflash_layout_version"));
    const char *plain = tiny_config(1);
    assert_int_not_equal(store_parse_mount_config(plain, strlen(plain), "mnt/config.json", &hp, &dt, &bb, &err), 0);
    assert_non_null(strstr(err.msg, "mnt/config.json"));
    free(text);
    store_close(s);
}

/* ---- damage -------------------------------------------------------------- */

static void sql(const char *dir, const char *stmt)
{
    char p[400];
    sqlite3 *db;
    snprintf(p, sizeof p, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, stmt, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", stmt, msg);
    sqlite3_close(db);
}

static void patch(const char *dir, const char *file, long off, const void *bytes, size_t n)
{
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, off, SEEK_SET);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

static void cut_to(const char *dir, const char *file, long size)
{
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    assert_int_equal(truncate(p, size), 0);
}

static void cut(const char *dir, const char *file, long delta)
{
    char p[400];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, file);
    assert_int_equal(stat(p, &st), 0);
    cut_to(dir, file, st.st_size + delta);
}

/* A fresh copy of the base store. */
static const char *copy_base(int k)
{
    static char dst[300];
    snprintf(dst, sizeof dst, "%s/bad%d", g_dir, k);
    sh("cp -r '%s' '%s'", path_of("base"), dst);
    return dst;
}

static void expect_broken(const char *dir, const char *file, const char *needle)
{
    store *s = NULL;
    ierr err = IERR_INIT;
    int rc = store_open(dir, &s, &err);
    if (rc == 0 || !strstr(err.msg, file) || (needle && !strstr(err.msg, needle)))
        fail_msg("%s: expected an error naming %s (%s), got %d: %s", dir, file, needle ? needle : "", rc, err.msg);
    assert_null(s);
    assert_null(strchr(err.msg, '\n'));
}

static void test_damage(void **state)
{
    (void)state;
    write_tiny(path_of("base"), 0, FMT_F16, 0);
    int k = 0;
    const char *d;

    d = copy_base(k++); cut(d, "ffn.bin", -4096);
    expect_broken(d, "ffn.bin", "header says");
    d = copy_base(k++); cut(d, "ffn.bin", 1);
    expect_broken(d, "ffn.bin", NULL);
    d = copy_base(k++); cut_to(d, "dense.bin", 100);
    expect_broken(d, "dense.bin", "truncated");
    d = copy_base(k++); patch(d, "dense.bin", 0, "X", 1);
    expect_broken(d, "dense.bin", "bad magic");
    d = copy_base(k++); patch(d, "ffn.bin", 8, "\x01", 1);
    expect_broken(d, "ffn.bin", "version");
    d = copy_base(k++); patch(d, "ffn.bin", 12, "\x01", 1);
    expect_broken(d, "ffn.bin", "kind");
    d = copy_base(k++); patch(d, "dense.bin", 24, "\x09", 1);
    expect_broken(d, "dense.bin", "tensors");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = value + 64 WHERE key = 'dense_bytes'");
    expect_broken(d, "dense.bin", "index says");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = 'NOPE' WHERE key = 'magic'");
    expect_broken(d, "index.sqlite", "magic");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = '1' WHERE key = 'format_version'");
    expect_broken(d, "index.sqlite", "version");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = '16' WHERE key = 'd_model'");
    expect_broken(d, "index.sqlite", "bundle_bytes");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = 'x8' WHERE key = 'n_layers'");
    expect_broken(d, "index.sqlite", "n_layers");
    d = copy_base(k++); sql(d, "DELETE FROM meta WHERE key = 'vocab_size'");
    expect_broken(d, "index.sqlite", "vocab_size");
    d = copy_base(k++); sql(d, "UPDATE meta SET value = 'f64' WHERE key = 'dtype'");
    expect_broken(d, "index.sqlite", "dtype");
    d = copy_base(k++); sql(d, "UPDATE neurons SET slot = 0 WHERE layer = 0 AND id = 1");
    expect_broken(d, "index.sqlite", NULL);
    d = copy_base(k++); sql(d, "UPDATE neurons SET offset = offset + 2 WHERE layer = 1 AND id = 3");
    expect_broken(d, "index.sqlite", "offset");
    d = copy_base(k++); sql(d, "UPDATE neurons SET slot = 16 WHERE layer = 1 AND id = 3");
    expect_broken(d, "index.sqlite", "out of range");
    d = copy_base(k++); sql(d, "DELETE FROM neurons WHERE layer = 1 AND id = 15");
    expect_broken(d, "index.sqlite", "neurons");
    d = copy_base(k++); sql(d, "UPDATE neurons SET freq = -1 WHERE layer = 0 AND id = 0");
    expect_broken(d, "index.sqlite", "frequency");
    d = copy_base(k++); sql(d, "UPDATE layers SET offset = offset + 64 WHERE layer = 1");
    expect_broken(d, "ffn.bin", "misaligned");
    d = copy_base(k++); sql(d, "UPDATE layers SET offset = 4096 WHERE layer = 1");
    expect_broken(d, "ffn.bin", "overlapping");
    d = copy_base(k++); sql(d, "UPDATE layers SET n_neurons = 17 WHERE layer = 1");
    expect_broken(d, "index.sqlite", "neurons");
    d = copy_base(k++); sql(d, "DELETE FROM layers WHERE layer = 1");
    expect_broken(d, "index.sqlite", "layers");
    d = copy_base(k++); sql(d, "UPDATE tensors SET offset = 99999936 WHERE name = 'norm'");
    expect_broken(d, "dense.bin", "outside");
    d = copy_base(k++); sql(d, "UPDATE tensors SET offset = offset + 2 WHERE name = 'norm'");
    expect_broken(d, "dense.bin", "misaligned");
    d = copy_base(k++); sql(d, "UPDATE tensors SET offset = 4096 WHERE name = 'norm'");
    expect_broken(d, "dense.bin", "overlap");
    d = copy_base(k++); sql(d, "UPDATE tensors SET bytes = 18 WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "do not match");
    d = copy_base(k++); sql(d, "UPDATE tensors SET shape = '8 x' WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "bad shape");
    d = copy_base(k++); sql(d, "UPDATE tensors SET shape = '1 1 1 1 8' WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "bad shape");
    d = copy_base(k++); sql(d, "UPDATE tensors SET dtype = 'bf16' WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "dtype");
    d = copy_base(k++); sql(d, "UPDATE tensors SET file = 'ffn.bin' WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "file");
    d = copy_base(k++); sql(d, "UPDATE tensors SET offset = 'abc' WHERE name = 'norm'");
    expect_broken(d, "index.sqlite", "wrong type");
    d = copy_base(k++); sql(d, "UPDATE tokens SET id = 9999 WHERE id = 9");
    expect_broken(d, "index.sqlite", "token id");
    d = copy_base(k++); sql(d, "UPDATE tokens SET special = 5 WHERE id = 9");
    expect_broken(d, "index.sqlite", "tokens");
    d = copy_base(k++); sql(d, "UPDATE merges SET rank = 5 WHERE rank = 1");
    expect_broken(d, "index.sqlite", "merges");
    d = copy_base(k++); sql(d, "DROP TABLE merges");
    expect_broken(d, "index.sqlite", "merges");
    d = copy_base(k++); sh("echo 'not a database at all, just some text that goes on' > '%s/index.sqlite'%s", d, "");
    expect_broken(d, "index.sqlite", NULL);
    d = copy_base(k++); sh("rm '%s/index.sqlite'%s", d, "");
    expect_broken(d, "index.sqlite", NULL);
    d = copy_base(k++); sh("rm '%s/ffn.bin'%s", d, "");
    expect_broken(d, "ffn.bin", NULL);
    expect_broken(path_of("no-such-store"), "no-such-store", NULL);
}

/* Slots permuted after the fact (as calibration --reorder does). */
static void test_reordered_slots(void **state)
{
    (void)state;
    write_tiny(path_of("reorder"), 1, FMT_F32, 0);
    const char *d = path_of("reorder");
    int64_t B = 3 * D * 4;
    char stmt[512];
    snprintf(stmt, sizeof stmt,
             "UPDATE neurons SET slot = 1 - slot, offset = offset + (CASE id WHEN 0 THEN %lld ELSE -%lld END)"
             " WHERE layer = 1 AND id IN (0, 1);"
             "UPDATE neurons SET freq = id / 16.0 WHERE layer = 1;",
             (long long)B, (long long)B);
    sql(d, stmt);
    store *s;
    ierr err = IERR_INIT;
    int rc = store_open(d, &s, &err);
    if (rc)
        fail_msg("%s", err.msg);
    const store_layer *ly = store_layer_at(s, 1);
    assert_int_equal(ly->slot_of[0], 1);
    assert_int_equal(ly->id_of[0], 1);
    assert_true(ly->freq[8] == 0.5);
    unsigned char got[3 * D * 4], want_b[3 * D * 4];
    assert_int_equal(store_read_bundle(s, 1, 0, got, &err), 0);
    tiny_bundle(1, FMT_F32, 1, 1, want_b);        /* slot 0's data moved to neuron 0 -> reads slot 1 */
    assert_memory_equal(got, want_b, (size_t)B);
    store_close(s);
}

/* ---- writer lifetime ----------------------------------------------------- */

static int count_prefixed(const char *prefix)
{
    DIR *dir = opendir(g_dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(dir)))
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(dir);
    return n;
}

static void test_force_and_abort(void **state)
{
    (void)state;
    storew *w = NULL;
    ierr err = IERR_INIT;
    write_tiny(path_of("exists"), 0, FMT_F32, 0);
    assert_int_equal(storew_new(path_of("exists"), 0, &w, &err), -EEXIST);
    assert_null(w);
    assert_non_null(strstr(err.msg, "already exists"));
    assert_non_null(strstr(err.msg, "exists"));
    /* force replaces it (at commit), leaving no side directories */
    write_tiny(path_of("exists"), 1, FMT_F16, 1);
    check_tiny(path_of("exists"), 1, FMT_F16);
    assert_int_equal(count_prefixed("exists."), 0);
    /* trailing slash is the same directory */
    char slash[300];
    snprintf(slash, sizeof slash, "%s/", path_of("exists"));
    assert_int_equal(storew_new(slash, 0, &w, &err), -EEXIST);
    /* force never replaces something that is not a store */
    sh("mkdir -p '%s' && touch '%s/precious'", path_of("notstore"), path_of("notstore"));
    assert_int_not_equal(storew_new(path_of("notstore"), 1, &w, &err), 0);
    assert_non_null(strstr(err.msg, "not an inflash store"));
    assert_int_equal(access(path_of("notstore/precious"), F_OK), 0);

    /* abort: nothing is left, and a store being replaced stays intact */
    hp_config hp = tiny_hp(0);
    assert_int_equal(storew_new(path_of("aborted"), 0, &w, &err), 0);
    assert_int_equal(count_prefixed("aborted.tmp."), 1);
    assert_int_equal(storew_set_hparams(w, &hp, FMT_F32, &err), 0);
    assert_int_equal(storew_begin_layer(w, 0, F, &err), 0);
    storew_free(w);
    assert_int_equal(access(path_of("aborted"), F_OK), -1);
    assert_int_equal(count_prefixed("aborted"), 0);
    assert_int_equal(storew_new(path_of("exists"), 1, &w, &err), 0);
    storew_free(w);
    check_tiny(path_of("exists"), 1, FMT_F16);
    assert_int_equal(count_prefixed("exists."), 0);
}

static void test_writer_misuse(void **state)
{
    (void)state;
    storew *w;
    ierr err = IERR_INIT;
    hp_config hp = tiny_hp(1), bad = hp;
    unsigned char b[3 * D * 4] = { 0 };
    int64_t shape[1] = { 3 };
    assert_int_equal(storew_new(path_of("misuse"), 0, &w, &err), 0);
    assert_int_not_equal(storew_begin_layer(w, 0, F, &err), 0);          /* no hparams yet */
    assert_int_not_equal(storew_commit(w, &err), 0);
    bad.n_kv_heads = 3;
    assert_int_not_equal(storew_set_hparams(w, &bad, FMT_F32, &err), 0);
    assert_int_not_equal(storew_set_hparams(w, &hp, FMT_BF16, &err), 0);
    assert_int_equal(storew_set_hparams(w, &hp, FMT_F32, &err), 0);
    assert_int_not_equal(storew_add_tensor(w, "t", FMT_F32, 1, shape, b, 8, &err), 0);   /* 3 x 4 != 8 */
    assert_non_null(strstr(err.msg, "dense.bin"));
    assert_int_not_equal(storew_add_tensor(w, "t", FMT_BF16, 1, shape, b, 6, &err), 0);
    assert_int_equal(storew_add_tensor(w, "t", FMT_F32, 1, shape, b, 12, &err), 0);
    assert_int_not_equal(storew_add_tensor(w, "t", FMT_F32, 1, shape, b, 12, &err), 0);  /* same name */
    assert_int_not_equal(storew_add_bundle(w, b, &err), 0);              /* outside a layer */
    assert_int_not_equal(storew_begin_layer(w, 1, F, &err), 0);          /* out of order */
    assert_int_not_equal(storew_begin_layer(w, 0, F + 1, &err), 0);      /* not d_ffn */
    assert_int_equal(storew_begin_layer(w, 0, F, &err), 0);
    assert_int_equal(storew_add_bundle(w, b, &err), 0);
    assert_int_not_equal(storew_begin_layer(w, 1, F, &err), 0);          /* layer 0 incomplete */
    for (int j = 1; j < F; j++)
        assert_int_equal(storew_add_bundle(w, b, &err), 0);
    assert_int_not_equal(storew_add_bundle(w, b, &err), 0);              /* one too many */
    assert_int_not_equal(storew_commit(w, &err), 0);                     /* layer 1 missing */
    assert_non_null(strstr(err.msg, "incomplete"));
    assert_int_equal(storew_add_token(w, 0, "a", 1, 0, 0, &err), 0);
    assert_int_not_equal(storew_add_token(w, 0, "b", 1, 0, 0, &err), 0);  /* duplicate id */
    assert_non_null(strstr(err.msg, "index.sqlite"));
    storew_free(w);
    assert_int_equal(count_prefixed("misuse"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read),
        cmocka_unit_test(test_config_json),
        cmocka_unit_test(test_damage),
        cmocka_unit_test(test_reordered_slots),
        cmocka_unit_test(test_force_and_abort),
        cmocka_unit_test(test_writer_misuse),
    };
    tu_dir_use(g_dir);
    return cmocka_run_group_tests(tests, tu_dir_setup, tu_dir_teardown);
}
