/* fuzz_store.c: libFuzzer target for store_open (layout/store.h): the
 * store's index.sqlite, dense.bin and ffn.bin as an attacker could leave
 * them. Four tiny valid stores are written once with storew_* (an OPT f16
 * one with GPT-2 tokenizer files, a calibrated Llama f32 one with a
 * tokenizer.json, and the same two in q4_0 and q8_0 with d_model 32, so
 * the reader's checks of quantized tensors and bundles are fuzzed too);
 * per input, one is copied into a work directory and
 * changed by the operations the input spells (below), then opened, and when
 * store_open accepts it every tensor, bundle, calibration row, token, merge
 * and tokenizer file is read, the mount's config.json is made and parsed
 * again, and a tokenizer is built from the stored files.
 *
 * Input: byte 0 picks the template (bits 0-1: OPT f16, Llama f32, OPT
 * q4_0, Llama q8_0); then operations, each an
 * opcode byte and its operands (fz_in reads 0 past the end):
 *   SET/ADD   table, column, row, value: UPDATE one cell (to a value, or
 *             by adding a small delta);
 *   DELETE    table, row;   DROP  table;   CALIB  create an empty calib;
 *   HDR       file, offset < 40, 1..8 bytes: overwrite .bin header bytes;
 *   POKE      file, 32-bit offset, 1..16 bytes: overwrite any bytes;
 *   RESIZE    file, signed 16-bit delta, scale: truncate or extend;
 *   KIND      file, how: remove it, or put a directory, a symlink to
 *             another store file or /dev/zero in its place. */
#include "fz_tok.h"
#include "fz_util.h"
#include "store.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define D 8         /* d_model (f16/f32 templates) */
#define QD 32       /* d_model of the quantized templates: whole blocks */
#define N_TMPL 4
#define F 16        /* d_ffn */
#define NL 2        /* layers */
#define V 12        /* vocabulary */
#define RANK 2      /* predictor rank (Llama template) */
#define MAX_OPS 48

enum { F_INDEX, F_DENSE, F_FFN, F_COUNT };
static const char *const FILES[F_COUNT] = { IFL_INDEX_NAME, IFL_DENSE_NAME, IFL_FFN_NAME };

typedef struct {
    char  *data[F_COUNT];          /* the pristine files, owned */
    size_t len[F_COUNT];
} tmpl;

static tmpl  g_tmpl[N_TMPL];
static char *g_work;               /* the work directory */
static char *g_path[F_COUNT];      /* its three files */
static int   g_replaced;           /* a file of the work directory was removed or replaced */

/* ---- the templates ------------------------------------------------------------- */

/* A template step that must work. */
static void must(int rc, const ierr *err)
{
    if (rc) {
        fprintf(stderr, "fuzz_store: making a template: %s\n", err->msg);
        abort();
    }
}

static const char OPT_VOCAB[] = "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"a\": 4, \"b\": 5, "
                                "\"\\u0120\": 6, \"ab\": 7, \"\\u0120ab\": 8, \"c\": 9, \"abc\": 10, \"\\n\": 11}";
static const char OPT_MERGES[] = "#version: 0.2\na b\n\xc4\xa0 ab\nab c\n";
static const char LLAMA_TOKJSON[] =
    "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"fuse_unk\": true, \"unk_token\": \"<unk>\", "
    "\"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x0A>\": 3, \"\\u2581\": 4, \"a\": 5, \"b\": 6, "
    "\"ab\": 7, \"\\u2581ab\": 8, \"c\": 9, \"abc\": 10, \"<0x41>\": 11}, "
    "\"merges\": [\"a b\", \"\\u2581 ab\", \"ab c\"]}, "
    "\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, "
    "{\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}], "
    "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\\u2581\"}, "
    "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]}, "
    "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
    "\"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", "
    "\"content\": \" \", \"start\": 1, \"stop\": 0}]}}";

/* A tensor of a store of dtype `store` (its own dtype by fmt_tensor_dtype). */
static void add_tensor_f(storew *w, const char *name, fmt_dtype store, int ndim, const int64_t *shape, float seed)
{
    fmt_dtype dt = fmt_tensor_dtype(store, name, ndim);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    float *v = malloc((size_t)numel * sizeof *v);
    unsigned char *b = malloc((size_t)numel * 4);
    ierr err = IERR_INIT;
    if (!v || !b)
        abort();
    for (int64_t i = 0; i < numel; i++)
        v[i] = seed + (float)i / 16;
    fmt_from_f32(dt, v, b, (size_t)numel);
    must(storew_add_tensor(w, name, dt, ndim, shape, b, (size_t)fmt_bytes(dt, (uint64_t)numel), &err), &err);
    free(v);
    free(b);
}

static void sql(sqlite3 *db, const char *s)
{
    char *msg = NULL;
    if (sqlite3_exec(db, s, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "fuzz_store: %s: %s\n", s, msg);
        abort();
    }
}

/* Template k: bit 0 Llama (else OPT), bit 1 quantized (OPT q4_0, Llama q8_0). */
static void make_template(const char *dir, int k, tmpl *out)
{
    const int llama = k & 1, quant = k & 2;
    const int64_t d = quant ? QD : D;
    hp_config hp = {
        .family = llama ? HP_LLAMA : HP_OPT, .d_model = d, .n_layers = NL, .n_heads = 2,
        .n_kv_heads = llama ? 1 : 2, .d_ffn = F, .vocab_size = V, .max_pos = 32, .pos_offset = llama ? 0 : 2,
        .norm_eps = 1e-5, .rope_theta = llama ? 10000 : 0, .act = llama ? ACT_FN_SILU : ACT_FN_RELU, .gated = llama,
        .tie_embeddings = 1, .bos_id = llama ? 1 : 0, .eos_id = 2, .pad_id = llama ? -1 : 1,
    };
    const char *cfg_fmt = llama
        ? "{\"model_type\": \"llama\", \"hidden_size\": %d, \"intermediate_size\": 16, \"num_hidden_layers\": 2, "
          "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 12, "
          "\"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-05, \"hidden_act\": \"silu\", "
          "\"tie_word_embeddings\": true, \"bos_token_id\": 1, \"eos_token_id\": 2}"
        : "{\"model_type\": \"opt\", \"hidden_size\": %d, \"ffn_dim\": 16, \"num_hidden_layers\": 2, "
          "\"num_attention_heads\": 2, \"vocab_size\": 12, \"max_position_embeddings\": 32, "
          "\"activation_function\": \"relu\", \"bos_token_id\": 0, \"eos_token_id\": 2, \"pad_token_id\": 1}";
    fmt_dtype dt = quant ? (llama ? FMT_Q8_0 : FMT_Q4_0) : llama ? FMT_F32 : FMT_F16;
    storew *w;
    ierr err = IERR_INIT;
    char path[4096], cfg[1024];
    snprintf(cfg, sizeof cfg, cfg_fmt, (int)d);

    must(storew_new(dir, 1, &w, &err), &err);
    must(storew_set_hparams(w, &hp, dt, &err), &err);
    must(storew_set_meta(w, "hf_config", cfg, &err), &err);
    must(storew_set_meta(w, "tokenizer", llama ? "sp-bpe" : "gpt2-bpe", &err), &err);
    must(storew_set_meta(w, "source_dtype", llama ? "F32" : "F16", &err), &err);
    for (int i = 0; i < V; i++) {
        char piece[8];
        snprintf(piece, sizeof piece, "t%d", i);
        must(storew_add_token(w, i, piece, strlen(piece), -(double)i, i < 3, &err), &err);
    }
    must(storew_add_merge(w, 0, "a", 1, "b", 1, &err), &err);
    must(storew_add_merge(w, 1, "ab", 2, "c", 1, &err), &err);
    if (llama) {
        must(storew_add_tokfile(w, "tokenizer.json", LLAMA_TOKJSON, sizeof LLAMA_TOKJSON - 1, &err), &err);
    } else {
        must(storew_add_tokfile(w, "vocab.json", OPT_VOCAB, sizeof OPT_VOCAB - 1, &err), &err);
        must(storew_add_tokfile(w, "merges.txt", OPT_MERGES, sizeof OPT_MERGES - 1, &err), &err);
    }
    int64_t s_emb[2] = { V, d }, s_norm[1] = { d }, s_a[2] = { RANK, d }, s_b[2] = { F, RANK }, s_c[1] = { F };
    add_tensor_f(w, "model.embed_tokens.weight", dt, 2, s_emb, 0.5f);
    add_tensor_f(w, "model.norm.weight", dt, 1, s_norm, 1.0f);
    add_tensor_f(w, "scalar", dt, 0, NULL, 3.5f);
    if (llama)
        for (int l = 0; l < NL; l++) {
            char name[STORE_PRED_NAME_MAX];
            store_pred_name(name, l, 'A');
            add_tensor_f(w, name, dt, 2, s_a, 0.25f);
            store_pred_name(name, l, 'B');
            add_tensor_f(w, name, dt, 2, s_b, -0.25f);
            store_pred_name(name, l, 'c');
            add_tensor_f(w, name, dt, 1, s_c, 0.125f);
        }
    unsigned char bundle[3 * QD * 4];
    const size_t bundle_bytes = (size_t)hp_bundle_bytes(&hp, dt);   /* any bytes are valid blocks */
    for (int l = 0; l < NL; l++) {
        must(storew_begin_layer(w, l, F, &err), &err);
        for (int j = 0; j < F; j++) {
            for (size_t i = 0; i < bundle_bytes; i++)
                bundle[i] = (unsigned char)(l * 31 + j * 7 + (int)i);
            must(storew_add_bundle(w, bundle, &err), &err);
        }
    }
    must(storew_commit(w, &err), &err);
    storew_free(w);

    snprintf(path, sizeof path, "%s/%s", dir, IFL_INDEX_NAME);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        abort();
    sql(db, "PRAGMA journal_mode=OFF");
    sql(db, "UPDATE neurons SET freq = (id % 5) * 0.25 WHERE layer = 1");
    if (llama) {               /* calibrated: format.h section 4 */
        sql(db, "CREATE TABLE calib(layer INTEGER PRIMARY KEY, rank INTEGER NOT NULL, threshold REAL NOT NULL,"
                " act_threshold REAL NOT NULL, sparsity REAL, recall REAL, precision REAL, pred_fraction REAL)");
        sql(db, "INSERT INTO calib VALUES (0, 2, 0.5, 0.01, 0.8, 0.99, 0.5, 0.3), (1, 2, -0.5, 0.02, NULL, NULL,"
                " NULL, NULL)");
        sql(db, "INSERT INTO meta VALUES ('calib_criterion', 'gated:|silu(gate)|>act_threshold')");
        /* slots permuted in layer 1, as --reorder leaves them */
        sql(db, "UPDATE neurons SET slot = 15 - id, offset = offset - id * bytes + (15 - id) * bytes"
                " WHERE layer = 1");
    }
    sqlite3_close(db);
    for (int f = 0; f < F_COUNT; f++) {
        snprintf(path, sizeof path, "%s/%s", dir, FILES[f]);
        out->data[f] = fz_read_file(path, &out->len[f]);
    }
    /* the template must be valid, or the fuzzer would learn nothing */
    store *s;
    if (store_open(dir, &s, &err)) {
        fprintf(stderr, "fuzz_store: the %s template does not open: %s\n", llama ? "llama" : "opt", err.msg);
        abort();
    }
    FZ_CHECK(!llama || store_calib_at(s, 0), "the llama template is not calibrated");
    store_close(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char *base = fz_tmpdir("fuzz-store"), path[4096];
    for (int k = 0; k < N_TMPL; k++) {
        snprintf(path, sizeof path, "%s/tmpl%d", base, k);
        make_template(path, k, &g_tmpl[k]);
    }
    if (asprintf(&g_work, "%s/work", base) < 0 || mkdir(g_work, 0755) != 0)
        abort();
    for (int f = 0; f < F_COUNT; f++)
        if (asprintf(&g_path[f], "%s/%s", g_work, FILES[f]) < 0)
            abort();
    return 0;
}

/* ---- the mutations ----------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *cols[8];
} TABLES[] = {
    { "meta", { "key", "value" } },
    { "tensors", { "name", "dtype", "shape", "file", "offset", "bytes", "xxh64" } },
    { "layers", { "layer", "offset", "bytes", "n_neurons" } },
    { "neurons", { "layer", "id", "slot", "offset", "bytes", "freq", "xxh64" } },
    { "tokens", { "id", "piece", "score", "special" } },
    { "merges", { "rank", "left", "right" } },
    { "tokenizer_files", { "name", "data" } },
    { "calib", { "layer", "rank", "threshold", "act_threshold", "sparsity", "recall", "precision",
                 "pred_fraction" } },
};
#define N_TABLES (sizeof TABLES / sizeof *TABLES)

static const int64_t INTS[] = {
    0, 1, -1, 2, 3, 4, 8, 15, 16, 17, 32, 63, 64, 65, 96, 128, 4095, 4096, 4097, 8192, 12288, 65536,
    INT32_MAX, (int64_t)INT32_MAX + 1, UINT32_MAX, (int64_t)1 << 40, ((int64_t)1 << 40) - 1, (int64_t)1 << 62,
    INT64_MAX, INT64_MIN, -4096, (int64_t)1 << 31, 1 << 20, 1 << 22, (1 << 22) + 1, 10000,
};
static const char *const TEXTS[] = {
    "", "0", "-1", "1", "2", "1e309", "nan", "inf", "-inf", "1e-05", "0.5", "f32", "f16", "bf16", "F32", "opt",
    "llama", "relu", "silu", "INFLASH", "INFLASH\x01", "dense.bin", "ffn.bin", "index.sqlite", "8", "16", "8 8",
    "12 8", "16 2", "2 8", "0", "0 0 0 0", "0 0 0 0 0", "1099511627775 1099511627775 1099511627775",
    "1099511627776", " 8", "8 ", "8  8", "+8", "0x10", "18446744073709551616", "9223372036854775807",
    "-9223372036854775808", "1.5", "{}", "[]", "{\"model_type\": \"opt\"}", "model.norm.weight", "scalar",
    "inflash.pred.0.A", "inflash.pred.1.c", "tokenizer.json", "vocab.json", "merges.txt", "\xff\xfe",
};
static const double REALS[] = { 0.0, -0.0, 1e-5, 0.5, 1.0, 2.0, -1.0, 1e300, 1e-300 };

/* Bind one value (the kinds below) to parameter 1 of st. */
static void bind_value(sqlite3_stmt *st, fz_in *in)
{
    const uint8_t *p;
    size_t n;
    char buf[32];
    uint8_t kind = fz_u8(in) % 10;
    switch (kind) {
    case 0: sqlite3_bind_null(st, 1); break;
    case 1: sqlite3_bind_int64(st, 1, INTS[fz_u8(in) % (sizeof INTS / sizeof *INTS)]); break;
    case 2: sqlite3_bind_int64(st, 1, (int64_t)fz_uint(in, 8)); break;
    case 3: n = fz_take(in, fz_u8(in) % 32, &p); sqlite3_bind_text(st, 1, (const char *)p, (int)n, SQLITE_TRANSIENT);
            break;
    case 4: n = fz_take(in, fz_u8(in) % 32, &p); sqlite3_bind_blob(st, 1, n ? p : (const uint8_t *)"", (int)n,
                                                                     SQLITE_TRANSIENT);
            break;
    case 5: { uint64_t u = fz_uint(in, 8); double d; memcpy(&d, &u, sizeof d); sqlite3_bind_double(st, 1, d); }
            break;
    case 6: sqlite3_bind_text(st, 1, TEXTS[fz_u8(in) % (sizeof TEXTS / sizeof *TEXTS)], -1, SQLITE_STATIC); break;
    case 7: snprintf(buf, sizeof buf, "%lld", (long long)INTS[fz_u8(in) % (sizeof INTS / sizeof *INTS)]);
            sqlite3_bind_text(st, 1, buf, -1, SQLITE_TRANSIENT);
            break;
    case 8: sqlite3_bind_double(st, 1, REALS[fz_u8(in) % (sizeof REALS / sizeof *REALS)]); break;
    default: sqlite3_bind_double(st, 1, fz_u8(in) & 1 ? NAN : (fz_u8(in) & 1 ? INFINITY : -INFINITY)); break;
    }
}

/* Run one statement; its failure (a constraint, a dropped table) is just
 * another input. */
static void run_sql(sqlite3 *db, const char *text, fz_in *in, int bind)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, text, -1, &st, NULL) != SQLITE_OK)
        return;
    if (bind)
        bind_value(st, in);
    sqlite3_step(st);
    sqlite3_finalize(st);
}

static sqlite3 *db_open(sqlite3 **db)
{
    if (!*db) {
        if (sqlite3_open_v2(g_path[F_INDEX], db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
            sqlite3_close(*db);
            *db = NULL;
            return NULL;
        }
        sqlite3_exec(*db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF", NULL, NULL, NULL);
    }
    return *db;
}

static void db_close(sqlite3 **db)
{
    sqlite3_close(*db);
    *db = NULL;
}

static void poke(const char *path, uint64_t off, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "r+b");
    if (!f)
        return;                      /* removed or replaced by an earlier operation */
    if (fseek(f, (long)off, SEEK_SET) == 0)
        fwrite(p, 1, n, f);
    fclose(f);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
}

enum { OP_SET, OP_ADD, OP_DELETE, OP_DROP, OP_CALIB, OP_HDR, OP_POKE, OP_RESIZE, OP_KIND, OP_COUNT };

static void mutate(fz_in *in)
{
    sqlite3 *db = NULL;
    char q[256];
    for (int k = 0; k < MAX_OPS && in->n; k++) {
        uint8_t op = fz_u8(in) % OP_COUNT;
        if (op <= OP_CALIB) {
            size_t t = fz_u8(in) % N_TABLES;
            const char *tn = TABLES[t].name;
            if (!db_open(&db))
                continue;
            if (op == OP_SET || op == OP_ADD) {
                size_t nc = 0;
                while (nc < 8 && TABLES[t].cols[nc])
                    nc++;
                const char *c = TABLES[t].cols[fz_u8(in) % nc];
                unsigned row = fz_u8(in);
                snprintf(q, sizeof q, "UPDATE %s SET %s = %s%s? WHERE rowid = (SELECT rowid FROM %s ORDER BY rowid "
                         "LIMIT 1 OFFSET %u)", tn, c, op == OP_ADD ? c : "", op == OP_ADD ? " + " : "", tn, row);
                run_sql(db, q, in, 1);
            } else if (op == OP_DELETE) {
                snprintf(q, sizeof q, "DELETE FROM %s WHERE rowid = (SELECT rowid FROM %s ORDER BY rowid LIMIT 1 "
                         "OFFSET %u)", tn, tn, (unsigned)fz_u8(in));
                run_sql(db, q, in, 0);
            } else if (op == OP_DROP) {
                snprintf(q, sizeof q, "DROP TABLE %s", tn);
                run_sql(db, q, in, 0);
            } else {
                run_sql(db, "CREATE TABLE calib(layer INTEGER PRIMARY KEY, rank INTEGER NOT NULL, threshold REAL "
                            "NOT NULL, act_threshold REAL NOT NULL, sparsity REAL, recall REAL, precision REAL, "
                            "pred_fraction REAL)", in, 0);
                run_sql(db, "INSERT INTO calib(layer, rank, threshold, act_threshold) VALUES (0, 2, 0, 0), "
                            "(1, 2, 0, 0)", in, 0);
            }
            continue;
        }
        int f = fz_u8(in) % F_COUNT;
        const char *path = g_path[f];
        const uint8_t *p;
        size_t n;
        if (f == F_INDEX)
            db_close(&db);
        if (op == OP_HDR) {
            uint64_t off = fz_u8(in) % 40;
            n = fz_take(in, 1 + fz_u8(in) % 8, &p);
            poke(path, off, p, n);
        } else if (op == OP_POKE) {
            uint64_t size = file_size(path), off = fz_uint(in, 4);
            off = size ? off % size : 0;
            n = fz_take(in, 1 + fz_u8(in) % 16, &p);
            poke(path, off, p, n);
        } else if (op == OP_RESIZE) {
            int64_t delta = (int16_t)fz_uint(in, 2), scale = (int64_t[]){ 1, 64, 4096 }[fz_u8(in) % 3];
            int64_t size = (int64_t)file_size(path) + delta * scale;
            if (size < 0)
                size = 0;
            if (truncate(path, size) != 0)
                continue;
        } else {
            uint8_t how = fz_u8(in) % 4;
            g_replaced = 1;
            unlink(path);
            if (how == 1)
                mkdir(path, 0755);
            else if (how == 2)
                (void)!symlink(FILES[(f + 1) % F_COUNT], path);
            else if (how == 3)
                (void)!symlink("/dev/zero", path);
        }
    }
    db_close(&db);
}

/* ---- reading an accepted store ------------------------------------------------------- */

static void read_store(const store *s)
{
    const hp_config *hp = store_hparams(s);
    int64_t B = store_bundle_bytes(s);
    ierr err = IERR_INIT;
    FZ_CHECK(hp_validate(hp, "store", &err) == 0, "accepted hparams fail hp_validate: %s", err.msg);
    FZ_CHECK(B == hp_bundle_bytes(hp, store_dtype(s)), "bundle bytes %lld", (long long)B);
    for (size_t i = 0; i < store_meta_count(s); i++) {
        const char *k, *v;
        FZ_CHECK(store_meta_at(s, i, &k, &v) == 0 && store_meta(s, k) == v, "meta %zu", i);
    }
    for (size_t i = 0; i < store_tensor_count(s); i++) {
        const store_tensor *t = store_tensor_at(s, i);
        size_t n = 1;                        /* values, not blocks */
        for (int k = 0; k < t->ndim; k++)
            n *= (size_t)t->shape[k];
        float *f = malloc((n ? n : 1) * sizeof *f);
        if (!f)
            abort();
        FZ_CHECK(store_tensor_find(s, t->name) == t, "store_tensor_find(\"%s\")", t->name);
        int rc = store_read_tensor_f32(s, t, f, &err);
        FZ_CHECK(rc == 0, "an accepted tensor does not read: %s", err.msg);
        free(f);
    }
    unsigned char *bundle = malloc((size_t)B);
    if (!bundle)
        abort();
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const store_layer *L = store_layer_at(s, l);
        FZ_CHECK(L && L->n_neurons == hp->d_ffn, "layer %lld", (long long)l);
        for (int64_t id = 0; id < L->n_neurons; id++) {
            FZ_CHECK(L->slot_of[id] >= 0 && L->slot_of[id] < L->n_neurons && L->id_of[L->slot_of[id]] == id,
                     "layer %lld: slot table is not a permutation", (long long)l);
            int rc = store_read_bundle(s, l, id, bundle, &err);
            FZ_CHECK(rc == 0, "an accepted bundle does not read: %s", err.msg);
        }
        FZ_CHECK(store_read_bundle(s, l, L->n_neurons, bundle, &err) < 0, "neuron past the end reads");
        const store_calib *c = store_calib_at(s, l);
        if (c)
            FZ_CHECK(c->rank >= 1 && c->rank <= hp->d_model && c->rank <= hp->d_ffn, "calib rank %lld",
                     (long long)c->rank);
    }
    FZ_CHECK(store_layer_at(s, hp->n_layers) == NULL && store_calib_at(s, hp->n_layers) == NULL, "layer past the end");
    free(bundle);
    for (int64_t id = -1; id <= store_token_count(s); id++) {
        const char *piece;
        size_t len;
        double score;
        int special;
        if (store_token(s, id, &piece, &len, &score, &special) == 0)
            FZ_CHECK(id >= 0 && id < store_token_count(s) && (special == 0 || special == 1), "token %lld",
                     (long long)id);
    }
    for (int64_t r = 0; r < store_merge_count(s); r++) {
        const char *a, *b;
        size_t al, bl;
        FZ_CHECK(store_merge(s, r, &a, &al, &b, &bl) == 0, "merge %lld", (long long)r);
    }

    /* the mount's config.json, made and read back */
    char *cfg = store_config_json(s, &err);
    if (cfg) {
        hp_config hp2;
        fmt_dtype dt;
        int64_t bb;
        if (store_parse_mount_config(cfg, strlen(cfg), "config.json", &hp2, &dt, &bb, &err) == 0) {
            store_calib *calib = calloc((size_t)hp2.n_layers, sizeof *calib);
            int present;
            if (!calib)
                abort();
            store_parse_mount_calib(cfg, strlen(cfg), "config.json", &hp2, calib, &present, &err);
            free(calib);
        }
        free(cfg);
    }

    /* a tokenizer from the stored files */
    const void *a, *b;
    size_t al, bl;
    tok *t = NULL;
    if (store_tokfile_find(s, "tokenizer.json", &a, &al) == 0)
        tok_new_hf(a, al, &t, &err);
    else if (store_tokfile_find(s, "vocab.json", &a, &al) == 0 && store_tokfile_find(s, "merges.txt", &b, &bl) == 0)
        tok_new_gpt2(a, al, b, bl, &t, &err);
    if (t) {
        fz_tok_exercise(t, "ab abc", 6);
        tok_free(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = { data, size };
    const tmpl *tp = &g_tmpl[fz_u8(&in) % N_TMPL];
    store *s;
    ierr err = IERR_INIT;

    if (g_replaced) {             /* else rewriting the files in place is enough */
        fz_rm_tree(g_work);
        if (mkdir(g_work, 0755) != 0)
            abort();
        g_replaced = 0;
    }
    for (int f = 0; f < F_COUNT; f++)
        fz_write_file(g_path[f], tp->data[f], tp->len[f]);
    mutate(&in);
    if (store_open(g_work, &s, &err) == 0) {
        read_store(s);
        store_close(s);
    }
    return 0;
}
