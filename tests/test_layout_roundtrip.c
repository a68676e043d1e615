/* test_layout_roundtrip.c: pack both real models (opt-relu-shakespeare, f16
 * source; stories260K, f32 source) into f32 and f16 stores with
 * $INFLASH_BIN/inflash-pack, then check every dense tensor and every bundle
 * against the source values (bit-exact: same dtype copies bytes, otherwise
 * the f32 conversion of the source, rounded to nearest-even for f16), and the
 * tokenizer in the index against the source tokenizer files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "io.h"
#include "safetensors.h"
#include "store.h"
#include "testutil.h"

static char g_dir[] = "/tmp/test_layout_roundtrip.XXXXXX";

static const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

static char *model_dir(const char *model)
{
    static char buf[2][512];
    static int k;
    k ^= 1;
    snprintf(buf[k], sizeof buf[k], "%s/models/%s", env_or("INFLASH_SHARED", "../shared"), model);
    return buf[k];
}

static char *read_whole(const char *dir, const char *name, size_t *len)
{
    char *p = io_join(dir, name), *data = NULL;
    ierr err = IERR_INIT;
    if (io_read_file(p, 64u << 20, &data, len, &err))
        data = NULL;
    free(p);
    return data;
}

/* The store bytes the source element must become (independent of pack.c). */
static void expected_elem(fmt_dtype from, const unsigned char *src, fmt_dtype to, unsigned char *dst)
{
    if (from == to) {
        memcpy(dst, src, (size_t)fmt_block_bytes(to));
        return;
    }
    float f;
    fmt_to_f32(from, src, &f, 1);
    if (to == FMT_F32) {
        fmt_from_f32(FMT_F32, &f, dst, 1);
    } else {
        uint16_t h = fmt_f32_to_f16(f);
        dst[0] = (unsigned char)h;
        dst[1] = (unsigned char)(h >> 8);
    }
}

static unsigned char *read_src(const st_set *set, const st_tensor *t)
{
    unsigned char *buf = malloc((size_t)t->bytes + 1);
    ierr err = IERR_INIT;
    assert_non_null(buf);
    if (st_read_raw(set, t, 0, buf, (size_t)t->bytes, &err))
        fail_msg("%s", err.msg);
    return buf;
}

/* FFN matrix? 0 up, 1 gate, 2 down, with its layer; -1 for dense tensors. */
static int ffn_role(const char *name, int64_t *layer)
{
    static const char *const suffix[][3] = { { ".fc1.weight", NULL, ".fc2.weight" },
                                             { ".mlp.up_proj.weight", ".mlp.gate_proj.weight",
                                               ".mlp.down_proj.weight" } };
    const char *p = strstr(name, "layers.");
    if (!p)
        return -1;
    char *end;
    *layer = strtoll(p + 7, &end, 10);
    for (int f = 0; f < 2; f++)
        for (int r = 0; r < 3; r++)
            if (suffix[f][r] && strcmp(end, suffix[f][r]) == 0)
                return r;
    return -1;
}

static void check_dense(const st_set *set, const store *s, fmt_dtype dt)
{
    size_t n_dense = 0;
    ierr err = IERR_INIT;
    for (size_t i = 0; i < st_count(set); i++) {
        const st_tensor *t = st_at(set, i);
        int64_t layer;
        if (ffn_role(t->name, &layer) >= 0)
            continue;
        n_dense++;
        const store_tensor *x = store_tensor_find(s, t->name);
        if (!x)
            fail_msg("tensor %s not in the store", t->name);
        assert_int_equal(x->dtype, dt);
        assert_int_equal(x->ndim, t->ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(x->shape[d], t->shape[d]);
        size_t n = (size_t)st_numel(t), es = (size_t)fmt_block_bytes(dt), fs = (size_t)fmt_block_bytes(t->dtype);
        assert_int_equal(x->bytes, n * es);
        unsigned char *src = read_src(set, t), *got = malloc(n * es + 1), want[4];
        assert_int_equal(store_read_dense(s, x->offset, got, n * es, &err), 0);
        for (size_t k = 0; k < n; k++) {
            expected_elem(t->dtype, src + k * fs, dt, want);
            if (memcmp(want, got + k * es, es) != 0)
                fail_msg("%s element %zu differs", t->name, k);
        }
        assert_int_equal(x->xxh64, XXH64(got, n * es, 0));
        free(src);
        free(got);
    }
    assert_int_equal(store_tensor_count(s), n_dense);
}

static void check_bundles(const st_set *set, const store *s, fmt_dtype dt)
{
    const hp_config *hp = store_hparams(s);
    size_t d = (size_t)hp->d_model, f = (size_t)hp->d_ffn, es = (size_t)fmt_block_bytes(dt);
    int64_t B = store_bundle_bytes(s);
    ierr err = IERR_INIT;
    unsigned char *got = malloc((size_t)B), want[4];
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const st_tensor *m[3] = { NULL, NULL, NULL };
        unsigned char *src[3] = { NULL, NULL, NULL };
        for (size_t i = 0; i < st_count(set); i++) {
            int64_t layer;
            int r = ffn_role(st_at(set, i)->name, &layer);
            if (r >= 0 && layer == l)
                m[r] = st_at(set, i);
        }
        assert_non_null(m[0]);
        assert_non_null(m[2]);
        assert_int_equal(m[1] != NULL, hp->gated);
        for (int r = 0; r < 3; r++)
            if (m[r])
                src[r] = read_src(set, m[r]);
        const store_layer *ly = store_layer_at(s, l);
        assert_int_equal(ly->n_neurons, (int64_t)f);
        for (size_t j = 0; j < f; j++) {
            assert_int_equal(store_read_bundle(s, l, (int64_t)j, got, &err), 0);
            size_t at = 0;
            for (int r = 0; r < 3; r++) {
                if (!m[r])
                    continue;
                size_t fs = (size_t)fmt_block_bytes(m[r]->dtype);
                for (size_t k = 0; k < d; k++, at += es) {
                    size_t idx = r < 2 ? j * d + k : k * f + j;   /* rows of up/gate, column of down */
                    expected_elem(m[r]->dtype, src[r] + idx * fs, dt, want);
                    if (memcmp(want, got + at, es) != 0)
                        fail_msg("layer %lld neuron %zu part %d element %zu differs", (long long)l, j, r, k);
                }
            }
            assert_int_equal(at, (size_t)B);
            assert_int_equal(ly->xxh64[j], XXH64(got, (size_t)B, 0));
        }
        for (int r = 0; r < 3; r++)
            free(src[r]);
    }
    free(got);
}

static void check_piece(const store *s, int64_t id, const char *piece, int special)
{
    const char *p;
    size_t len;
    int sp;
    if (store_token(s, id, &p, &len, NULL, &sp))
        fail_msg("token %lld missing from the store", (long long)id);
    if (len != strlen(piece) || memcmp(p, piece, len) != 0)
        fail_msg("token %lld is \"%.*s\", the source says \"%s\"", (long long)id, (int)len, p, piece);
    if (special >= 0)
        assert_int_equal(sp, special);
}

static void check_merge(const store *s, int64_t rank, const char *left, size_t ll, const char *right, size_t rl)
{
    const char *l, *r;
    size_t sl, sr;
    assert_int_equal(store_merge(s, rank, &l, &sl, &r, &sr), 0);
    if (sl != ll || sr != rl || memcmp(l, left, ll) != 0 || memcmp(r, right, rl) != 0)
        fail_msg("merge %lld is \"%s\" \"%s\", the source says \"%.*s\" \"%.*s\"", (long long)rank, l, r, (int)ll,
                 left, (int)rl, right);
}

/* vocab object piece -> id: every piece at its id, nothing else */
static void check_vocab(const store *s, json_t *vocab, json_t *added)
{
    const char *piece;
    json_t *id;
    int64_t top = -1;
    json_object_foreach(vocab, piece, id) {
        check_piece(s, json_integer_value(id), piece, -1);
        top = json_integer_value(id) > top ? json_integer_value(id) : top;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        check_piece(s, json_integer_value(json_object_get(a, "id")), json_string_value(json_object_get(a, "content")),
                    1);
        top = json_integer_value(json_object_get(a, "id")) > top ? json_integer_value(json_object_get(a, "id")) : top;
    }
    assert_int_equal(store_token_count(s), top + 1);
}

static void check_tokenizer(const char *src, const store *s)
{
    size_t len;
    char *tj = read_whole(src, "tokenizer.json", &len);
    if (tj) {
        json_t *root = json_loadb(tj, len, 0, NULL), *merges = json_object_get(json_object_get(root, "model"), "merges");
        assert_string_equal(store_meta(s, "tokenizer"), "sp-bpe");
        check_vocab(s, json_object_get(json_object_get(root, "model"), "vocab"), json_object_get(root, "added_tokens"));
        size_t i;
        json_t *m;
        assert_int_equal(store_merge_count(s), (int64_t)json_array_size(merges));
        json_array_foreach(merges, i, m) {
            const char *t = json_string_value(m), *sp = strchr(t, ' ');
            check_merge(s, (int64_t)i, t, (size_t)(sp - t), sp + 1, strlen(sp + 1));
        }
        json_decref(root);
        free(tj);
    } else {
        char *vj = read_whole(src, "vocab.json", &len), *mt;
        assert_non_null(vj);
        assert_string_equal(store_meta(s, "tokenizer"), "gpt2-bpe");
        json_t *vocab = json_loadb(vj, len, 0, NULL);
        check_vocab(s, vocab, NULL);
        json_decref(vocab);
        free(vj);
        assert_non_null(mt = read_whole(src, "merges.txt", &len));
        int64_t rank = 0;
        for (char *line = strtok(mt, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, "#version", 8) == 0)
                continue;
            char *sp = strchr(line, ' ');
            check_merge(s, rank++, line, (size_t)(sp - line), sp + 1, strlen(sp + 1));
        }
        assert_int_equal(store_merge_count(s), rank);
        free(mt);
    }
    /* the tokenizer files, verbatim */
    static const char *const names[] = { "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                                         "special_tokens_map.json", "generation_config.json" };
    size_t present = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *data = read_whole(src, names[i], &len);
        const void *stored;
        size_t slen;
        if (!data)
            continue;
        present++;
        if (store_tokfile_find(s, names[i], &stored, &slen))
            fail_msg("%s not stored", names[i]);
        assert_int_equal(slen, len);
        assert_memory_equal(stored, data, len);
        free(data);
    }
    assert_int_equal(store_tokfile_count(s), present);
}

/* Pack src (with --dtype dtype_name unless NULL) and compare everything. */
static void roundtrip(const char *src, const char *name, const char *dtype_name, fmt_dtype dt)
{
    char out[400], cmd[2048];
    snprintf(out, sizeof out, "%s/%s", g_dir, name);
    snprintf(cmd, sizeof cmd, "'%s/inflash-pack' '%s' '%s' %s%s > '%s.log' 2>&1", env_or("INFLASH_BIN", "build/bin"),
             src, out, dtype_name ? "--dtype " : "", dtype_name ? dtype_name : "", out);
    if (system(cmd) != 0)
        fail_msg("failed: %s (see %s.log)", cmd, out);
    store *s;
    st_set *set;
    ierr err = IERR_INIT;
    if (store_open(out, &s, &err))
        fail_msg("%s", err.msg);
    if (st_open_dir(src, &set, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(store_dtype(s), dt);

    /* hyperparameters and the verbatim config */
    size_t len;
    char *cfg = read_whole(src, "config.json", &len);
    hp_config hp;
    assert_int_equal(hp_from_json(cfg, len, "config.json", &hp, &err), 0);
    const hp_config *sh = store_hparams(s);
    assert_int_equal(sh->family, hp.family);
    assert_int_equal(sh->d_model, hp.d_model);
    assert_int_equal(sh->n_layers, hp.n_layers);
    assert_int_equal(sh->d_ffn, hp.d_ffn);
    assert_int_equal(sh->n_kv_heads, hp.n_kv_heads);
    assert_int_equal(sh->bos_id, hp.bos_id);
    assert_true(sh->norm_eps == hp.norm_eps);
    assert_true(sh->rope_theta == hp.rope_theta);
    assert_string_equal(store_meta(s, "hf_config"), cfg);
    static const char *const st_names[] = { "F32", "F16", "BF16" };   /* by fmt_dtype */
    assert_string_equal(store_meta(s, "source_dtype"), st_names[st_at(set, 0)->dtype]);
    free(cfg);

    check_dense(set, s, dt);
    check_bundles(set, s, dt);
    check_tokenizer(src, s);
    st_close(set);
    store_close(s);
}

static void test_opt_f32(void **state)
{
    (void)state;
    roundtrip(model_dir("opt-relu-shakespeare"), "opt-f32", "f32", FMT_F32);
}

static void test_opt_f16(void **state)
{
    (void)state;
    roundtrip(model_dir("opt-relu-shakespeare"), "opt-f16", "f16", FMT_F16);
}

static void test_stories_f32(void **state)
{
    (void)state;
    roundtrip(model_dir("stories260K"), "stories-f32", "f32", FMT_F32);
}

static void test_stories_f16(void **state)
{
    (void)state;
    roundtrip(model_dir("stories260K"), "stories-f16", "f16", FMT_F16);
}

/* Write one shard of BF16 tensors [first, last) of set. */
static void write_bf16_shard(const st_set *set, size_t first, size_t last, const char *path, json_t *weight_map,
                             const char *file_name)
{
    json_t *hdr = json_object();
    uint64_t off = 0;
    for (size_t i = first; i < last; i++) {
        const st_tensor *t = st_at(set, i);
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        uint64_t n = 2 * (uint64_t)st_numel(t);
        json_object_set_new(hdr, t->name, json_pack("{s:s,s:o,s:[I,I]}", "dtype", "BF16", "shape", shape,
                                                    "data_offsets", (json_int_t)off, (json_int_t)(off + n)));
        json_object_set_new(weight_map, t->name, json_string(file_name));
        off += n;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    size_t hl = strlen(text), padded = (hl + 7) / 8 * 8;
    unsigned char len8[8];
    fmt_put_le64(len8, padded);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(len8, 1, 8, f);
    fwrite(text, 1, hl, f);
    for (size_t i = hl; i < padded; i++)
        fputc(' ', f);
    ierr err = IERR_INIT;
    for (size_t i = first; i < last; i++) {
        const st_tensor *t = st_at(set, i);
        size_t n = (size_t)st_numel(t);
        float *v = malloc(n * 4 + 4);
        unsigned char *b = malloc(n * 2 + 2);
        assert_int_equal(st_read_f32(set, t, 0, v, n, &err), 0);
        fmt_from_f32(FMT_BF16, v, b, n);
        fwrite(b, 1, n * 2, f);
        free(v);
        free(b);
    }
    fclose(f);
    free(text);
    json_decref(hdr);
}

/* stories260K rewritten as a BF16 checkpoint in two shards with an index. */
static void test_bf16_sharded(void **state)
{
    (void)state;
    char dir[400], cmd[2048];
    snprintf(dir, sizeof dir, "%s/stories-bf16-src", g_dir);
    snprintf(cmd, sizeof cmd, "mkdir '%s' && cd '%s' && cp config.json tokenizer.json tokenizer_config.json '%s'", dir,
             model_dir("stories260K"), dir);
    assert_int_equal(system(cmd), 0);
    st_set *set;
    ierr err = IERR_INIT;
    assert_int_equal(st_open_dir(model_dir("stories260K"), &set, &err), 0);
    json_t *map = json_object();
    size_t half = st_count(set) / 2;
    char p[500];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_bf16_shard(set, 0, half, p, map, "model-00001-of-00002.safetensors");
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_bf16_shard(set, half, st_count(set), p, map, "model-00002-of-00002.safetensors");
    st_close(set);
    json_t *index = json_pack("{s:{},s:o}", "metadata", "weight_map", map);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    assert_int_equal(json_dump_file(index, p, JSON_INDENT(2)), 0);
    json_decref(index);

    roundtrip(dir, "stories-bf16-default", NULL, FMT_F32);        /* BF16 sources default to f32 */
    roundtrip(dir, "stories-bf16-f16", "f16", FMT_F16);
}

/* Without --dtype the store keeps an f16 source in f16 and f32 in f32. */
static void test_default_dtype(void **state)
{
    (void)state;
    static const struct { const char *model; const char *dt; } cases[] = {
        { "opt-relu-shakespeare", "f16" }, { "stories260K", "f32" } };
    for (size_t i = 0; i < 2; i++) {
        char out[400], cmd[2048];
        snprintf(out, sizeof out, "%s/default-%zu", g_dir, i);
        snprintf(cmd, sizeof cmd, "'%s/inflash-pack' '%s' '%s' > /dev/null 2>&1", env_or("INFLASH_BIN", "build/bin"),
                 model_dir(cases[i].model), out);
        assert_int_equal(system(cmd), 0);
        store *s;
        ierr err = IERR_INIT;
        assert_int_equal(store_open(out, &s, &err), 0);
        assert_string_equal(fmt_dtype_name(store_dtype(s)), cases[i].dt);
        store_close(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_f32),
        cmocka_unit_test(test_opt_f16),
        cmocka_unit_test(test_stories_f32),
        cmocka_unit_test(test_stories_f16),
        cmocka_unit_test(test_default_dtype),
        cmocka_unit_test(test_bf16_sharded),
    };
    tu_dir_use(g_dir);
    return cmocka_run_group_tests(tests, tu_dir_setup, tu_dir_teardown);
}
