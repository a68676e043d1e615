/* test_fs_ifs.c: the daemon's read path without FUSE (fs/ifs.c) on a tiny
 * store this test writes (OPT, d_model 8, 2 layers of 2048 neurons, f32),
 * with layer 1's slots reversed as a calibration reorder would: the tree
 * and its sizes, neuron-file reads of arbitrary ranges against
 * store_read_bundle (both the piece list and the copy path for very
 * scattered reads), the per-thread read buffers, tensors, neurons.tsv,
 * stats, EOF, EIO after the store shrinks (the daemon keeps serving),
 * O_DIRECT and buffered, options; then q4_0 and q8_0 stores of d_model
 * 4096, whose bundles (4608 and 13056 bytes) are not a multiple of 1 KiB,
 * read through several chunk sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ifs.h"
#include "store.h"
#include "testutil.h"

#define D 8
#define L 2
#define F 2048
#define V 10
#define B ((int64_t)2 * D * 4)

static char g_dir[] = "/tmp/test_fs_ifs.XXXXXX";
static char g_store[300];

static const char hf_config[] =
    "{\"model_type\": \"opt\", \"hidden_size\": 8, \"ffn_dim\": 2048, \"num_hidden_layers\": 2, "
    "\"num_attention_heads\": 2, \"vocab_size\": 10, \"max_position_embeddings\": 32, "
    "\"activation_function\": \"relu\", \"bos_token_id\": 1, \"eos_token_id\": 2}";
static const char vocab[] = "{\"a\": 0}";

static void bundle_of(int layer, int j, unsigned char *out)
{
    float v[2 * D];
    for (int k = 0; k < 2 * D; k++)
        v[k] = (float)(layer * 10000 + j) + (float)k / 64;
    fmt_from_f32(FMT_F32, v, out, 2 * D);
}

/* A store writer at dir with hp in dtype t, its metadata and tokenizer
 * written (force: replace an existing dir). */
static storew *begin_store(const char *dir, const hp_config *hp, fmt_dtype t, int force)
{
    storew *w;
    ierr err = IERR_INIT;
    if (storew_new(dir, force, &w, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(storew_set_hparams(w, hp, t, &err), 0);
    assert_int_equal(storew_set_meta(w, "hf_config", hf_config, &err), 0);
    assert_int_equal(storew_set_meta(w, "tokenizer", "gpt2-bpe", &err), 0);
    assert_int_equal(storew_set_meta(w, "source_dtype", "F32", &err), 0);
    for (int i = 0; i < V; i++) {
        char piece[2] = { (char)('a' + i), 0 };
        assert_int_equal(storew_add_token(w, i, piece, 1, 0, 0, &err), 0);
    }
    assert_int_equal(storew_add_tokfile(w, "vocab.json", vocab, sizeof vocab - 1, &err), 0);
    assert_int_equal(storew_add_tokfile(w, "merges.txt", "#version: 0.2\n", 14, &err), 0);
    return w;
}

static void write_store(const char *dir)
{
    ierr err = IERR_INIT;
    hp_config hp = {
        .family = HP_OPT, .d_model = D, .n_layers = L, .n_heads = 2, .n_kv_heads = 2, .d_ffn = F,
        .vocab_size = V, .max_pos = 32, .pos_offset = 2, .norm_eps = 1e-5, .act = ACT_FN_RELU,
        .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    storew *w = begin_store(dir, &hp, FMT_F32, 0);
    float emb[V * D];
    for (int i = 0; i < V * D; i++)
        emb[i] = (float)i / 8;
    int64_t s_emb[2] = { V, D };
    assert_int_equal(storew_add_tensor(w, "model.decoder.embed_tokens.weight", FMT_F32, 2, s_emb, emb,
                                       sizeof emb, &err), 0);
    unsigned char b[B];
    for (int l = 0; l < L; l++) {
        assert_int_equal(storew_begin_layer(w, l, F, &err), 0);
        for (int j = 0; j < F; j++) {
            bundle_of(l, j, b);
            assert_int_equal(storew_add_bundle(w, b, &err), 0);
        }
    }
    if (storew_commit(w, &err))
        fail_msg("%s", err.msg);
    storew_free(w);
}

static void sql(const char *dir, const char *stmt)
{
    char path[400];
    sqlite3 *db;
    snprintf(path, sizeof path, "%s/index.sqlite", dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, stmt, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sql: %s", msg);
    sqlite3_close(db);
}

/* Reverse layer 1's slots of the store at dir (nf neurons of bb bytes): the
 * bundles stay where they are, so each neuron takes the checksum of the
 * bundle now at its slot. */
static void reverse_layer1(const char *dir, int64_t nf, int64_t bb)
{
    char stmt[1024];
    snprintf(stmt, sizeof stmt,
             "UPDATE neurons SET slot = %lld - slot, offset = (SELECT offset FROM layers WHERE layer = 1)"
             " + (%lld - slot) * %lld WHERE layer = 1;"
             "CREATE TEMP TABLE sums AS SELECT id, xxh64 FROM neurons WHERE layer = 1;"
             "UPDATE neurons SET xxh64 = (SELECT sums.xxh64 FROM sums WHERE sums.id = %lld - neurons.id)"
             " WHERE layer = 1;", (long long)nf - 1, (long long)nf - 1, (long long)bb, (long long)nf - 1);
    sql(dir, stmt);
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_store, sizeof g_store, "%s/store", g_dir);
    write_store(g_store);
    reverse_layer1(g_store, F, B);
    sql(g_store, "UPDATE neurons SET freq = id / 2048.0 WHERE layer = 1;");   /* frequencies for layer 1 */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return tu_rmtree(g_dir);
}

static ifs *open_ifs(const char *dir, uint64_t chunk, uint64_t cache, int buffered)
{
    ifs_opts o;
    ifs_opts_default(&o);
    o.chunk_bytes = chunk;
    o.cache_bytes = cache;
    o.buffered = buffered;
    ifs *m = NULL;
    ierr err = IERR_INIT;
    if (ifs_open(dir, &o, &m, &err))
        fail_msg("ifs_open: %s", err.msg);
    return m;
}

/* Read [off, off+len) of a path through ifs into a flat buffer; returns rc. */
static int read_path(ifs *m, const char *path, uint64_t off, uint64_t len, unsigned char *out, uint64_t *got,
                     ierr *err)
{
    const tree_node *n;
    assert_int_equal(tree_resolve(ifs_tree(m), path, &n), 0);
    ifs_file *f;
    assert_int_equal(ifs_file_open(m, n, &f, err), 0);
    ifs_reply r;
    int rc = ifs_read(m, f, off, len, &r, err);
    *got = 0;
    if (rc == 0) {
        for (size_t i = 0; i < r.n; i++) {
            memcpy(out + *got, r.iov[i].iov_base, r.iov[i].iov_len);
            *got += r.iov[i].iov_len;
        }
        assert_int_equal(*got, r.bytes);
        assert_true(r.n <= IFS_MAX_IOV);
        ifs_reply_free(m, &r);
    }
    ifs_file_close(f);   /* after the reply: the file outlives it either way */
    return rc;
}

/* The neuron file of a layer (nf neurons of bb bytes) as the store reads
 * it, neuron by neuron. */
static unsigned char *expected_layer_of(ifs *m, int layer, int64_t nf, int64_t bb)
{
    unsigned char *want = malloc((size_t)(nf * bb));
    ierr err = IERR_INIT;
    for (int64_t j = 0; j < nf; j++)
        assert_int_equal(store_read_bundle(ifs_store(m), layer, j, want + j * bb, &err), 0);
    return want;
}

static unsigned char *expected_layer(ifs *m, int layer)
{
    return expected_layer_of(m, layer, F, B);
}

/* Every layer's neuron file read whole and at 300 random ranges (up to
 * max_len bytes) against the store's bundles. */
static void check_ranges_of(ifs *m, int64_t nf, int64_t bb, uint64_t max_len)
{
    const uint64_t size = (uint64_t)(nf * bb);
    unsigned char *buf = malloc((size_t)size + 64);
    uint64_t x = 99, got;
    ierr err = IERR_INIT;
    for (int l = 0; l < L; l++) {
        unsigned char *want = expected_layer_of(m, l, nf, bb);
        char path[32];
        snprintf(path, sizeof path, "layers/%02d/ffn", l);
        /* the whole file: layer 1 is nf scattered pieces (copy path) */
        assert_int_equal(read_path(m, path, 0, size, buf, &got, &err), 0);
        assert_int_equal(got, size);
        assert_memory_equal(buf, want, (size_t)size);
        for (int it = 0; it < 300; it++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t off = (x >> 20) % (size + 100), len = 1 + (x >> 40) % max_len;
            int rc = read_path(m, path, off, len, buf, &got, &err);
            assert_int_equal(rc, 0);
            uint64_t w = off >= size ? 0 : (len < size - off ? len : size - off);
            assert_int_equal(got, w);
            if (w)
                assert_memory_equal(buf, want + off, (size_t)w);
        }
        free(want);
    }
    free(buf);
}

static void check_ranges(ifs *m)
{
    check_ranges_of(m, F, B, 20000);
}

static void test_tree_and_sizes(void **state)
{
    (void)state;
    ifs *m = open_ifs(g_store, 4096, 64 * 1024, 0);
    const tree *t = ifs_tree(m);
    const tree_node *n;
    static const char *files[] = { "config.json", "vocab.json", "merges.txt", "stats", "stats.json",
                                   "tensors/model.decoder.embed_tokens.weight", "layers/00/ffn",
                                   "layers/01/ffn", "layers/00/neurons.tsv", "layers/01/neurons.tsv" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (tree_resolve(t, files[i], &n))
            fail_msg("%s missing", files[i]);
    assert_int_equal(tree_resolve(t, "layers/02", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "tensors/model.decoder.layers.0.fc1.weight", &n), -ENOENT);
    uint64_t size;
    assert_int_equal(tree_resolve(t, "layers/01/ffn", &n), 0);
    assert_int_equal(ifs_size(m, n, &size), 0);
    assert_int_equal(size, F * B);
    assert_int_equal(tree_resolve(t, "tensors/model.decoder.embed_tokens.weight", &n), 0);
    assert_int_equal(n->size, V * D * 4);
    assert_int_equal(tree_resolve(t, "vocab.json", &n), 0);
    assert_int_equal(n->size, sizeof vocab - 1);

    /* config.json: the source keys plus the store's */
    unsigned char buf[8192];
    uint64_t got;
    ierr err = IERR_INIT;
    assert_int_equal(read_path(m, "config.json", 0, sizeof buf - 1, buf, &got, &err), 0);
    buf[got] = 0;
    assert_non_null(strstr((char *)buf, "\"ffn_dim\": 2048"));
    assert_non_null(strstr((char *)buf, "\"inflash_bundle_bytes\": 64"));
    assert_int_equal(tree_resolve(t, "config.json", &n), 0);
    assert_int_equal(n->size, got);

    /* neurons.tsv: id, slot, freq; its size is exact */
    assert_int_equal(read_path(m, "layers/01/neurons.tsv", 0, sizeof buf - 1, buf, &got, &err), 0);
    buf[got] = 0;
    assert_memory_equal(buf, "0\t2047\t0\n1\t2046\t0.000488281\n", 27);
    assert_int_equal(read_path(m, "layers/00/neurons.tsv", 0, 8, buf, &got, &err), 0);
    assert_memory_equal(buf, "0\t0\t-\n1\t", 8);
    assert_int_equal(tree_resolve(t, "layers/00/neurons.tsv", &n), 0);
    assert_int_equal(read_path(m, "layers/00/neurons.tsv", n->size - 10, 100, buf, &got, &err), 0);
    assert_int_equal(got, 10);
    assert_memory_equal(buf, "47\t2047\t-\n", 10);
    ifs_close(m);
}

static void test_ffn_reads(void **state)
{
    (void)state;
    /* O_DIRECT, small chunks and a cache that must evict */
    ifs *m = open_ifs(g_store, 4096, 16 * 4096, 0);
    assert_int_equal(ifs_direct(m), 1);
    check_ranges(m);
    ifs_close(m);
    /* buffered, big chunks */
    m = open_ifs(g_store, 64 * 1024, 1 << 20, 1);
    assert_int_equal(ifs_direct(m), 0);
    check_ranges(m);
    ifs_close(m);
}

/* Flatten a reply's pieces into out (total r->bytes). */
static void reply_copy(const ifs_reply *r, unsigned char *out)
{
    for (size_t i = 0; i < r->n; i++) {
        memcpy(out, r->iov[i].iov_base, r->iov[i].iov_len);
        out += r->iov[i].iov_len;
    }
}

typedef struct {
    ifs       *m;
    ifs_file  *f;
    ifs_reply  r;
} lend_arg;

static void *read_and_end(void *p)
{
    lend_arg *a = p;
    ierr err = IERR_INIT;
    assert_int_equal(ifs_read(a->m, a->f, 10 * B, 3 * B, &a->r, &err), 0);
    return NULL;   /* the thread ends while its reply still holds its buffers */
}

/* The per-thread read buffers: a second read on a thread whose buffers a
 * reply still holds gets its own; growing to a bigger request; a reply
 * freed on another thread after its reading thread has ended. */
static void test_buffer_lending(void **state)
{
    (void)state;
    ifs *m = open_ifs(g_store, 4096, 64 * 4096, 0);
    unsigned char *want = expected_layer(m, 1);
    unsigned char *buf = malloc((size_t)(F * B));
    const tree_node *n;
    ifs_file *f;
    ierr err = IERR_INIT;
    assert_int_equal(tree_resolve(ifs_tree(m), "layers/01/ffn", &n), 0);
    assert_int_equal(ifs_file_open(m, n, &f, &err), 0);
    ifs_reply r1, r2, r3;
    assert_int_equal(ifs_read(m, f, 5 * B + 3, 7 * B, &r1, &err), 0);
    assert_int_equal(ifs_read(m, f, 100 * B, 900 * B, &r2, &err), 0);   /* r1 holds the buffers */
    reply_copy(&r1, buf);
    assert_memory_equal(buf, want + 5 * B + 3, (size_t)(7 * B));
    reply_copy(&r2, buf);
    assert_memory_equal(buf, want + 100 * B, (size_t)(900 * B));
    ifs_reply_free(m, &r1);
    ifs_reply_free(m, &r2);
    /* the thread's buffers again, grown past both */
    assert_int_equal(ifs_read(m, f, 0, 1000 * B, &r3, &err), 0);
    reply_copy(&r3, buf);
    assert_memory_equal(buf, want, (size_t)(1000 * B));
    ifs_reply_free(m, &r3);
    lend_arg a = { .m = m, .f = f };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_and_end, &a), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    reply_copy(&a.r, buf);
    assert_memory_equal(buf, want + 10 * B, (size_t)(3 * B));
    ifs_reply_free(m, &a.r);
    ifs_file_close(f);
    free(buf);
    free(want);
    ifs_close(m);
}

static void test_tensor_and_eof(void **state)
{
    (void)state;
    ifs *m = open_ifs(g_store, 8192, 1 << 20, 0);
    float emb[V * D];
    uint64_t got;
    ierr err = IERR_INIT;
    assert_int_equal(read_path(m, "tensors/model.decoder.embed_tokens.weight", 0, 1 << 20,
                               (unsigned char *)emb, &got, &err), 0);
    assert_int_equal(got, sizeof emb);
    for (int i = 0; i < V * D; i++)
        assert_true(emb[i] == (float)i / 8);
    assert_int_equal(read_path(m, "tensors/model.decoder.embed_tokens.weight", 8, 4, (unsigned char *)emb,
                               &got, &err), 0);
    assert_true(emb[0] == 2.0f / 8);
    unsigned char buf[64];
    assert_int_equal(read_path(m, "layers/00/ffn", (uint64_t)(F * B), 64, buf, &got, &err), 0);
    assert_int_equal(got, 0);
    assert_int_equal(read_path(m, "layers/00/ffn", 1ull << 40, 64, buf, &got, &err), 0);
    assert_int_equal(got, 0);
    assert_int_equal(read_path(m, "vocab.json", 100, 64, buf, &got, &err), 0);
    assert_int_equal(got, 0);

    assert_int_equal(read_path(m, "layers/00/ffn", 0, 64, buf, &got, &err), 0);
    assert_int_equal(got, 64);
    /* stats: a snapshot per open, text and JSON */
    char *text;
    size_t len;
    assert_int_equal(ifs_render_stats(m, 0, &text, &len), 0);
    assert_non_null(strstr(text, "\nstore_reads "));
    assert_non_null(strstr(text, "\ncache_misses "));
    assert_non_null(strstr(text, "\nlatency_p99_us "));
    assert_non_null(strstr(text, "\nstore_read_mean_us "));
    assert_null(strstr(text, "\nffn_store_reads 0\n"));
    assert_non_null(strstr(text, "\no_direct 1\n"));
    free(text);
    assert_int_equal(ifs_render_stats(m, 1, &text, &len), 0);
    assert_int_equal(text[0], '{');
    assert_non_null(strstr(text, "\"chunk_bytes\": 8192"));
    free(text);
    const tree_node *n;
    assert_int_equal(tree_resolve(ifs_tree(m), "stats", &n), 0);
    uint64_t size;
    assert_int_equal(ifs_size(m, n, &size), 0);
    assert_true(size > 100);
    ifs_close(m);
}

/* ffn.bin shrinks under the daemon: reads of what is gone fail with EIO and
 * an error naming ffn.bin; what is left is still served. */
static void test_eio(void **state)
{
    (void)state;
    char copy[400], cmd[900];
    snprintf(copy, sizeof copy, "%s/short", g_dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", g_store, copy);
    assert_int_equal(system(cmd), 0);
    ifs *m = open_ifs(copy, 4096, 1 << 20, 0);
    char ffn[500];
    snprintf(ffn, sizeof ffn, "%s/ffn.bin", copy);
    assert_int_equal(truncate(ffn, 4096 + F * B), 0);     /* layer 1 gone */
    unsigned char buf[4096];
    uint64_t got;
    ierr err = IERR_INIT;
    assert_int_equal(read_path(m, "layers/01/ffn", 0, 64, buf, &got, &err), -EIO);
    assert_non_null(strstr(err.msg, "ffn.bin"));
    assert_int_equal(read_path(m, "layers/00/ffn", 5 * B, B, buf, &got, &err), 0);
    unsigned char want[B];
    bundle_of(0, 5, want);
    assert_memory_equal(buf, want, B);
    char *text;
    size_t len;
    assert_int_equal(ifs_render_stats(m, 0, &text, &len), 0);
    assert_null(strstr(text, "\nstore_read_errors 0\n"));
    free(text);
    ifs_close(m);
}

static void test_options(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(cli_parse_size("65536", 1, &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(cli_parse_size("64k", 1, &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(cli_parse_size("4M", 1, &v), 0);
    assert_int_equal(v, 4 << 20);
    assert_int_equal(cli_parse_size("1g", 1, &v), 0);
    assert_int_equal(v, 1ull << 30);
    assert_int_equal(cli_parse_size("256mb", 1, &v), 0);
    assert_int_equal(v, 256ull << 20);
    /* the MiB flags: a bare number keeps its old unit, suffixes override */
    assert_int_equal(cli_parse_size("512", 1u << 20, &v), 0);
    assert_int_equal(v, 512ull << 20);
    assert_int_equal(cli_parse_size("0.5", 1u << 20, &v), 0);
    assert_int_equal(v, 512ull << 10);
    assert_int_equal(cli_parse_size("2g", 1u << 20, &v), 0);
    assert_int_equal(v, 2ull << 30);
    assert_int_equal(cli_parse_size("1.5k", 1u << 20, &v), 0);
    assert_int_equal(v, 1536);
    assert_int_equal(cli_parse_size("nan", 1u << 20, &v), -1);
    assert_int_equal(cli_parse_size("4 m", 1, &v), -1);
    assert_int_equal(cli_parse_size("0x10", 1, &v), -1);
    assert_int_equal(cli_parse_size("1e3", 1, &v), -1);
    assert_int_equal(cli_parse_size("256mb", 1u << 20, &v), 0);
    assert_int_equal(v, 256ull << 20);
    assert_int_equal(cli_parse_size("", 1, &v), -1);
    assert_int_equal(cli_parse_size("k", 1, &v), -1);
    assert_int_equal(cli_parse_size("12q", 1, &v), -1);
    assert_int_equal(cli_parse_size("-4k", 1, &v), -1);
    assert_int_equal(cli_parse_size("99999999999999999999", 1, &v), -1);
    assert_int_equal(cli_parse_size("17179869184g", 1, &v), -1);
    ifs_opts o;
    ierr err = IERR_INIT;
    ifs_opts_default(&o);
    assert_int_equal(ifs_opts_check(&o, &err), 0);
    o.chunk_bytes = 3000;
    assert_int_equal(ifs_opts_check(&o, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "chunk="));
    o.chunk_bytes = 8u << 20;
    assert_int_equal(ifs_opts_check(&o, &err), -EINVAL);
    o.chunk_bytes = 1u << 20;
    o.cache_bytes = 2u << 20;
    assert_int_equal(ifs_opts_check(&o, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "cache="));
    ifs_opts_default(&o);
    o.readahead = 100000;
    assert_int_equal(ifs_opts_check(&o, &err), -EINVAL);
    /* a directory that is no store */
    ifs *m;
    ifs_opts_default(&o);
    assert_true(ifs_open(g_dir, &o, &m, &err) < 0);
    assert_non_null(strstr(err.msg, g_dir));
}

/* ---- quantized stores: bundles that are not a multiple of 1 KiB ---------- */

#define QD  4096     /* d_model of the real 7B models */
#define QF  96       /* neurons per layer */

/* A store of L layers of QF neurons, d_model QD, in q4_0 (OPT, B = 2 * 2304
 * = 4608) or q8_0 gated (Llama, B = 3 * 4352 = 13056), layer 1's slots
 * reversed; returns B. Values: a ramp per neuron, so every block differs. */
static int64_t write_qstore(const char *dir, fmt_dtype t, int gated)
{
    ierr err = IERR_INIT;
    hp_config hp = {
        .family = gated ? HP_LLAMA : HP_OPT, .d_model = QD, .n_layers = L, .n_heads = 32, .n_kv_heads = 32,
        .d_ffn = QF, .vocab_size = V, .max_pos = 32, .pos_offset = gated ? 0 : 2, .norm_eps = 1e-5,
        .rope_theta = gated ? 10000.0 : 0.0, .act = gated ? ACT_FN_SILU : ACT_FN_RELU, .gated = gated,
        .tie_embeddings = 1, .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    int64_t bb = hp_bundle_bytes(&hp, t), parts = gated ? 3 : 2;
    storew *w = begin_store(dir, &hp, t, 1);
    float *x = malloc((size_t)(V * QD) * sizeof *x);
    unsigned char *q = malloc((size_t)fmt_bytes(t, V * QD)), *b = malloc((size_t)bb);
    assert_non_null(x);
    assert_non_null(q);
    assert_non_null(b);
    for (int i = 0; i < V * QD; i++)
        x[i] = (float)(i % 97) / 97.0f - 0.5f;
    fmt_from_f32(t, x, q, V * QD);
    int64_t s_emb[2] = { V, QD };
    assert_int_equal(storew_add_tensor(w, gated ? "model.embed_tokens.weight" : "model.decoder.embed_tokens.weight",
                                       t, 2, s_emb, q, (size_t)fmt_bytes(t, V * QD), &err), 0);
    for (int l = 0; l < L; l++) {
        assert_int_equal(storew_begin_layer(w, l, QF, &err), 0);
        for (int j = 0; j < QF; j++) {
            for (int64_t k = 0; k < parts * QD; k++)
                x[k] = (float)((l * 131 + j * 7 + k) % 61) - 30.0f;
            fmt_from_f32(t, x, b, (size_t)(parts * QD));
            assert_int_equal(storew_add_bundle(w, b, &err), 0);
        }
    }
    if (storew_commit(w, &err))
        fail_msg("%s", err.msg);
    storew_free(w);
    free(x);
    free(q);
    free(b);
    reverse_layer1(dir, QF, bb);
    return bb;
}

/* Chunk boundaries inside bundles, bundles over two or three chunks, runs of
 * adjacent slots, O_DIRECT and buffered, verification on: every range
 * reads back the store's bytes. */
static void test_quant_bundles(void **state)
{
    (void)state;
    char dir[400];
    snprintf(dir, sizeof dir, "%s/qstore", g_dir);
    const struct {
        fmt_dtype t;
        int gated;
        int64_t bytes;
    } kinds[] = { { FMT_Q4_0, 0, 4608 }, { FMT_Q8_0, 1, 13056 } };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int64_t bb = write_qstore(dir, kinds[k].t, kinds[k].gated);
        assert_int_equal(bb, kinds[k].bytes);
        assert_true(bb % 1024 != 0);
        const struct {
            uint64_t chunk, cache;
            int buffered;
        } runs[] = { { 4096, 16 * 4096, 0 }, { 16384, 8 * 16384, 0 }, { 65536, 1 << 20, 1 }, { 16384, 1 << 20, 1 } };
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
            ifs *m = open_ifs(dir, runs[r].chunk, runs[r].cache, runs[r].buffered);
            assert_int_equal(ifs_direct(m), !runs[r].buffered);
            check_ranges_of(m, QF, bb, 3 * (uint64_t)bb);
            ifs_close(m);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_and_sizes),
        cmocka_unit_test(test_ffn_reads),
        cmocka_unit_test(test_buffer_lending),
        cmocka_unit_test(test_tensor_and_eof),
        cmocka_unit_test(test_eio),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_quant_bundles),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
