/* store.c: opening a store directory (format.h). The whole index is loaded
 * into memory and every count, offset and size is checked against the real
 * files (format.h section 5) before anything is trusted; afterwards the store
 * is immutable and reads are plain preads. */
#include "store.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

typedef struct { char *key, *value; } meta_kv;
typedef struct { char *piece; size_t len; double score; int special; int present; } tok_row;
typedef struct { char *left, *right; size_t llen, rlen; } merge_row;
typedef struct { char *name; void *data; size_t len; } tokfile_row;

/* Everything is owned by the store and immutable after store_open. */
struct store {
    char         *dir;
    char         *index_path, *dense_path, *ffn_path;
    int           dense_fd, ffn_fd;
    uint64_t      dense_bytes, ffn_bytes;    /* real file sizes, == meta */
    hp_config     hp;
    fmt_dtype     dtype;
    int64_t       bundle_bytes;
    meta_kv      *meta;       size_t n_meta;       /* sorted by key */
    store_tensor *tensors;    size_t n_tensors;    /* sorted by name */
    store_layer  *layers;                          /* [hp.n_layers] */
    tok_row      *tokens;     int64_t n_tokens;    /* indexed by id */
    merge_row    *merges;     int64_t n_merges;    /* indexed by rank */
    tokfile_row  *tokfiles;   size_t n_tokfiles;   /* sorted by name */
    store_calib  *calib;                           /* [hp.n_layers], or NULL: not calibrated */
};

/* ---- small parsers ------------------------------------------------------- */

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_f64(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* "1024 256" -> dims; 0 or -1 */
static int parse_shape(const char *s, int *ndim, int64_t *shape)
{
    *ndim = 0;
    if (!*s)
        return 0;
    for (;;) {
        char *end;
        if (*ndim == STORE_MAX_DIMS || *s < '0' || *s > '9')
            return -1;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || v >= (long long)1 << 40)
            return -1;
        shape[(*ndim)++] = v;
        if (!*end)
            return 0;
        if (*end != ' ')
            return -1;
        s = end + 1;
    }
}

/* ---- sqlite access ------------------------------------------------------- */

typedef struct {
    store        *s;
    sqlite3      *db;
    sqlite3_stmt *st;
    const char   *table;
    ierr         *err;
} q;

static int q_fail(q *x, const char *problem)
{
    return ierr_set(x->err, -EINVAL, "%s: table %s: %s", x->s->index_path, x->table, problem);
}

static int q_prepare(q *x, const char *table, const char *sql)
{
    x->table = table;
    if (sqlite3_prepare_v2(x->db, sql, -1, &x->st, NULL) != SQLITE_OK)
        return ierr_set(x->err, -EINVAL, "%s: table %s: %s", x->s->index_path, table, sqlite3_errmsg(x->db));
    return 0;
}

/* 1 row, 0 done, <0 error */
static int q_step(q *x)
{
    int r = sqlite3_step(x->st);
    if (r == SQLITE_ROW)
        return 1;
    if (r == SQLITE_DONE)
        return 0;
    return ierr_set(x->err, -EIO, "%s: table %s: %s", x->s->index_path, x->table, sqlite3_errmsg(x->db));
}

static void q_end(q *x)
{
    sqlite3_finalize(x->st);
    x->st = NULL;
}

static int col_i64(q *x, int c, int64_t *v)
{
    if (sqlite3_column_type(x->st, c) != SQLITE_INTEGER)
        return -1;
    *v = sqlite3_column_int64(x->st, c);
    return 0;
}

static int col_u64(q *x, int c, uint64_t *v)
{
    int64_t s;
    if (col_i64(x, c, &s) || s < 0)
        return -1;
    *v = (uint64_t)s;
    return 0;
}

/* the stored checksum: any 64-bit pattern */
static int col_bits(q *x, int c, uint64_t *v)
{
    int64_t s;
    if (col_i64(x, c, &s))
        return -1;
    memcpy(v, &s, sizeof *v);
    return 0;
}

/* TEXT or BLOB copied into a NUL-terminated malloc'd buffer */
static int col_bytes(q *x, int c, char **out, size_t *len)
{
    int t = sqlite3_column_type(x->st, c);
    if (t != SQLITE_TEXT && t != SQLITE_BLOB)
        return -1;
    const void *p = t == SQLITE_TEXT ? (const void *)sqlite3_column_text(x->st, c) : sqlite3_column_blob(x->st, c);
    size_t n = (size_t)sqlite3_column_bytes(x->st, c);
    char *buf = malloc(n + 1);
    if (!buf)
        return -1;
    if (n)
        memcpy(buf, p, n);
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

/* Grow a row array by one (doubling); NULL if out of memory. */
static void *grow(void **arr, size_t n, size_t *cap, size_t size)
{
    if (n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void *p = realloc(*arr, c * size);
        if (!p)
            return NULL;
        *arr = p;
        *cap = c;
    }
    return (char *)*arr + n * size;
}

/* ---- loading ------------------------------------------------------------- */

static int load_meta(q *x)
{
    store *s = x->s;
    size_t cap = 0;
    int rc = q_prepare(x, "meta", "SELECT key, value FROM meta ORDER BY key");
    while (!rc && (rc = q_step(x)) == 1) {
        meta_kv *kv = grow((void **)&s->meta, s->n_meta, &cap, sizeof *kv);
        if (!kv)
            return q_fail(x, "out of memory");
        if (col_bytes(x, 0, &kv->key, NULL))
            return q_fail(x, "key is not text");
        if (col_bytes(x, 1, &kv->value, NULL)) {
            free(kv->key);
            return q_fail(x, "value is not text");
        }
        s->n_meta++;
        rc = 0;
    }
    q_end(x);
    return rc;
}

static int meta_need(q *x, const char *key, const char **v)
{
    if (!(*v = store_meta(x->s, key)))
        return ierr_set(x->err, -EINVAL, "%s: meta \"%s\" is missing", x->s->index_path, key);
    return 0;
}

static int meta_int(q *x, const char *key, int64_t *out)
{
    const char *v;
    int rc = meta_need(x, key, &v);
    if (!rc && parse_i64(v, out))
        rc = ierr_set(x->err, -EINVAL, "%s: meta \"%s\" = \"%s\" is not an integer", x->s->index_path, key, v);
    return rc;
}

static int meta_real(q *x, const char *key, double *out)
{
    const char *v;
    int rc = meta_need(x, key, &v);
    if (!rc && parse_f64(v, out))
        rc = ierr_set(x->err, -EINVAL, "%s: meta \"%s\" = \"%s\" is not a number", x->s->index_path, key, v);
    return rc;
}

static int meta_flag(q *x, const char *key, int *out)
{
    int64_t v;
    int rc = meta_int(x, key, &v);
    if (!rc && v != 0 && v != 1)
        rc = ierr_set(x->err, -EINVAL, "%s: meta \"%s\" must be 0 or 1", x->s->index_path, key);
    if (!rc)
        *out = (int)v;
    return rc;
}

/* meta act_params: required by an activation that takes them, and read if
 * present (hp_validate checks the values against the activation). */
static int meta_act_params(q *x)
{
    hp_config *hp = &x->s->hp;
    const char *v = store_meta(x->s, "act_params");
    if (!v && !act_fn_has_param(hp->act))
        return 0;
    if (!v)
        return ierr_set(x->err, -EINVAL, "%s: meta \"act_params\" is missing (activation %s)", x->s->index_path,
                        act_fn_name(hp->act));
    if (hp->n_layers < 1 || hp->n_layers > HP_MAX_LAYERS)
        return hp_validate(hp, x->s->index_path, x->err);
    return hp_act_params_parse(v, hp, x->s->index_path, x->err);
}

static int meta_hparams(q *x)
{
    store *s = x->s;
    hp_config *hp = &s->hp;
    const char *magic, *family, *act, *dtype;
    int64_t version, bundle, dense_bytes, ffn_bytes;
    int rc;
    if ((rc = meta_need(x, "magic", &magic)) || (rc = meta_int(x, "format_version", &version)))
        return rc;
    if (strcmp(magic, IFL_MAGIC) != 0)
        return ierr_set(x->err, -EINVAL, "%s: bad magic \"%s\": not an inflash store", s->index_path, magic);
    if (version != IFL_VERSION)
        return ierr_set(x->err, -EINVAL, "%s: format version %" PRId64 ", this build reads %u (pack the model again)",
                        s->index_path,
                        version, IFL_VERSION);
    if ((rc = meta_need(x, "family", &family)) || (rc = meta_need(x, "activation", &act)) ||
        (rc = meta_need(x, "dtype", &dtype)) ||
        (rc = meta_int(x, "d_model", &hp->d_model)) || (rc = meta_int(x, "n_layers", &hp->n_layers)) ||
        (rc = meta_int(x, "n_heads", &hp->n_heads)) || (rc = meta_int(x, "n_kv_heads", &hp->n_kv_heads)) ||
        (rc = meta_int(x, "d_ffn", &hp->d_ffn)) || (rc = meta_int(x, "vocab_size", &hp->vocab_size)) ||
        (rc = meta_int(x, "max_pos", &hp->max_pos)) || (rc = meta_int(x, "pos_offset", &hp->pos_offset)) ||
        (rc = meta_real(x, "norm_eps", &hp->norm_eps)) || (rc = meta_real(x, "rope_theta", &hp->rope_theta)) ||
        (rc = meta_flag(x, "gated", &hp->gated)) || (rc = meta_flag(x, "tie_embeddings", &hp->tie_embeddings)) ||
        (rc = meta_int(x, "bos_id", &hp->bos_id)) || (rc = meta_int(x, "eos_id", &hp->eos_id)) ||
        (rc = meta_int(x, "pad_id", &hp->pad_id)) || (rc = meta_int(x, "bundle_bytes", &bundle)) ||
        (rc = meta_int(x, "dense_bytes", &dense_bytes)) || (rc = meta_int(x, "ffn_bytes", &ffn_bytes)))
        return rc;
    hp->sliding_window = 0;   /* absent: no window */
    if (store_meta(s, "sliding_window") && (rc = meta_int(x, "sliding_window", &hp->sliding_window)))
        return rc;
    if (hp_family_parse(family, &hp->family))
        return ierr_set(x->err, -EINVAL, "%s: unknown family \"%s\"", s->index_path, family);
    if (act_fn_parse(act, &hp->act))
        return ierr_set(x->err, -EINVAL, "%s: unknown activation \"%s\"", s->index_path, act);
    if ((rc = meta_act_params(x)))
        return rc;
    if (fmt_dtype_parse(dtype, &s->dtype) || !fmt_is_store_dtype(s->dtype))
        return ierr_set(x->err, -EINVAL, "%s: store dtype \"%s\" is not f32, f16, q8_0 or q4_0", s->index_path,
                        dtype);
    if ((rc = hp_validate(hp, s->index_path, x->err)) || (rc = hp_check_dtype(hp, s->dtype, s->index_path, x->err)))
        return rc;
    s->bundle_bytes = hp_bundle_bytes(hp, s->dtype);
    if (bundle != s->bundle_bytes)
        return ierr_set(x->err, -EINVAL, "%s: meta bundle_bytes %" PRId64 " != %" PRId64 " from the hyperparameters",
                        s->index_path, bundle, s->bundle_bytes);
    if ((uint64_t)dense_bytes != s->dense_bytes)
        return ierr_set(x->err, -EINVAL, "%s: %" PRIu64 " bytes, the index says %" PRId64, s->dense_path,
                        s->dense_bytes, dense_bytes);
    if ((uint64_t)ffn_bytes != s->ffn_bytes)
        return ierr_set(x->err, -EINVAL, "%s: %" PRIu64 " bytes, the index says %" PRId64, s->ffn_path,
                        s->ffn_bytes, ffn_bytes);
    return 0;
}

static int by_tensor_offset(const void *a, const void *b)
{
    const store_tensor *x = *(const store_tensor *const *)a, *y = *(const store_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int check_tensor(q *x, const store_tensor *t, const char *file, const char *shape)
{
    store *s = x->s;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++)
        overflow |= __builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel);
    if (strcmp(file, IFL_DENSE_NAME) != 0)
        return ierr_set(x->err, -EINVAL, "%s: tensor \"%s\" is in file \"%s\", not %s", s->index_path, t->name,
                        file, IFL_DENSE_NAME);
    if (overflow || fmt_bytes(t->dtype, numel) != t->bytes)
        return ierr_set(x->err, -EINVAL, "%s: tensor \"%s\": %" PRIu64 " bytes do not match shape \"%s\" %s",
                        s->index_path, t->name, t->bytes, shape, fmt_dtype_name(t->dtype));
    if (t->offset < IFL_HEADER_BYTES || t->offset % IFL_TENSOR_ALIGN || t->offset > s->dense_bytes ||
        t->bytes > s->dense_bytes - t->offset)
        return ierr_set(x->err, -EINVAL, "%s: tensor \"%s\" at [%" PRIu64 ", +%" PRIu64 ") is misaligned or outside "
                        "the file (%" PRIu64 " bytes)", s->dense_path, t->name, t->offset, t->bytes, s->dense_bytes);
    return 0;
}

static int load_tensors(q *x)
{
    store *s = x->s;
    size_t cap = 0;
    int rc = q_prepare(x, "tensors",
                       "SELECT name, dtype, shape, file, offset, bytes, xxh64 FROM tensors ORDER BY name");
    while (!rc && (rc = q_step(x)) == 1) {
        store_tensor *t = grow((void **)&s->tensors, s->n_tensors, &cap, sizeof *t);
        char *dtype = NULL, *shape = NULL, *file = NULL;
        if (!t)
            return q_fail(x, "out of memory");
        memset(t, 0, sizeof *t);
        if (col_bytes(x, 0, &t->name, NULL))
            return q_fail(x, "bad name");
        s->n_tensors++;
        if (col_bytes(x, 1, &dtype, NULL) || col_bytes(x, 2, &shape, NULL) || col_bytes(x, 3, &file, NULL) ||
            col_u64(x, 4, &t->offset) || col_u64(x, 5, &t->bytes) || col_bits(x, 6, &t->xxh64))
            rc = ierr_set(x->err, -EINVAL, "%s: tensor \"%s\": a column has the wrong type", s->index_path, t->name);
        else if (fmt_dtype_parse(dtype, &t->dtype) || !fmt_is_store_dtype(t->dtype))
            rc = ierr_set(x->err, -EINVAL, "%s: tensor \"%s\": bad dtype \"%s\"", s->index_path, t->name, dtype);
        else if (parse_shape(shape, &t->ndim, t->shape))
            rc = ierr_set(x->err, -EINVAL, "%s: tensor \"%s\": bad shape \"%s\"", s->index_path, t->name, shape);
        else if (t->dtype != fmt_tensor_dtype(s->dtype, t->name, t->ndim))
            rc = ierr_set(x->err, -EINVAL, "%s: tensor \"%s\" is %s, but a %s store keeps it in %s", s->index_path,
                          t->name, dtype, fmt_dtype_name(s->dtype),
                          fmt_dtype_name(fmt_tensor_dtype(s->dtype, t->name, t->ndim)));
        else if (s->n_tensors > 1 && strcmp(s->tensors[s->n_tensors - 2].name, t->name) >= 0)
            rc = ierr_set(x->err, -EINVAL, "%s: tensor names out of order", s->index_path);
        else
            rc = check_tensor(x, t, file, shape);
        free(dtype);
        free(shape);
        free(file);
    }
    q_end(x);
    if (rc)
        return rc;
    /* no two tensors may overlap */
    const store_tensor **ix = malloc((s->n_tensors + 1) * sizeof *ix);
    size_t k = 0;
    if (!ix)
        return q_fail(x, "out of memory");
    for (size_t i = 0; i < s->n_tensors; i++)
        if (s->tensors[i].bytes)
            ix[k++] = &s->tensors[i];
    qsort(ix, k, sizeof *ix, by_tensor_offset);
    for (size_t i = 1; i < k && !rc; i++)
        if (ix[i - 1]->offset + ix[i - 1]->bytes > ix[i]->offset)
            rc = ierr_set(x->err, -EINVAL, "%s: tensors \"%s\" and \"%s\" overlap", s->dense_path, ix[i - 1]->name,
                          ix[i]->name);
    free(ix);
    return rc;
}

static int load_layers(q *x)
{
    store *s = x->s;
    const hp_config *hp = &s->hp;
    int64_t n = 0;
    uint64_t end = IFL_HEADER_BYTES;      /* layers must come in file order, not overlapping */
    if (!(s->layers = calloc((size_t)hp->n_layers, sizeof *s->layers)))
        return q_fail(x, "out of memory");
    int rc = q_prepare(x, "layers", "SELECT layer, offset, bytes, n_neurons FROM layers ORDER BY layer");
    while (!rc && (rc = q_step(x)) == 1) {
        int64_t layer;
        store_layer L;
        rc = 0;
        if (col_i64(x, 0, &layer) || col_u64(x, 1, &L.offset) || col_u64(x, 2, &L.bytes) ||
            col_i64(x, 3, &L.n_neurons))
            rc = q_fail(x, "a column has the wrong type");
        else if (layer != n || n >= hp->n_layers)
            rc = ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 " unexpected (n_layers %" PRId64 ")", s->index_path,
                          layer, hp->n_layers);
        else if (L.n_neurons != hp->d_ffn || L.bytes != (uint64_t)(L.n_neurons * s->bundle_bytes))
            rc = ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 ": %" PRId64 " neurons in %" PRIu64 " bytes, expected "
                          "%" PRId64 " x %" PRId64, s->index_path, layer, L.n_neurons, L.bytes, hp->d_ffn,
                          s->bundle_bytes);
        else if (L.offset % IFL_LAYER_ALIGN || L.offset < end || L.offset > s->ffn_bytes ||
                 L.bytes > s->ffn_bytes - L.offset)
            rc = ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 " at [%" PRIu64 ", +%" PRIu64 ") is misaligned, "
                          "overlapping or outside the file (%" PRIu64 " bytes)", s->ffn_path, layer, L.offset,
                          L.bytes, s->ffn_bytes);
        else {
            s->layers[n++] = (store_layer){ .n_neurons = L.n_neurons, .offset = L.offset, .bytes = L.bytes };
            end = L.offset + L.bytes;
        }
    }
    q_end(x);
    if (!rc && n != hp->n_layers)
        rc = ierr_set(x->err, -EINVAL, "%s: %" PRId64 " layers, n_layers is %" PRId64, s->index_path, n,
                      hp->n_layers);
    /* sizes are now bounded by the real ffn.bin: allocate the neuron tables */
    for (int64_t l = 0; l < hp->n_layers && !rc; l++) {
        store_layer *L = &s->layers[l];
        size_t m = (size_t)L->n_neurons;
        L->slot_of = malloc(m * sizeof *L->slot_of);
        L->id_of = malloc(m * sizeof *L->id_of);
        L->freq = malloc(m * sizeof *L->freq);
        L->xxh64 = malloc(m * sizeof *L->xxh64);
        if (!L->slot_of || !L->id_of || !L->freq || !L->xxh64)
            return q_fail(x, "out of memory");
        for (size_t i = 0; i < m; i++)
            L->slot_of[i] = L->id_of[i] = -1;
    }
    return rc;
}

static int load_neurons(q *x)
{
    store *s = x->s;
    int64_t count = 0, B = s->bundle_bytes;
    int rc = q_prepare(x, "neurons", "SELECT layer, id, slot, offset, bytes, freq, xxh64 FROM neurons");
    while (!rc && (rc = q_step(x)) == 1) {
        int64_t layer, id, slot, bytes;
        uint64_t off, sum;
        double freq = NAN;
        int ft = sqlite3_column_type(x->st, 5);
        rc = 0;
        if (col_i64(x, 0, &layer) || col_i64(x, 1, &id) || col_i64(x, 2, &slot) || col_u64(x, 3, &off) ||
            col_i64(x, 4, &bytes) || col_bits(x, 6, &sum) ||
            (ft != SQLITE_NULL && ft != SQLITE_FLOAT && ft != SQLITE_INTEGER))
            return q_fail(x, "a column has the wrong type");
        if (ft != SQLITE_NULL)
            freq = sqlite3_column_double(x->st, 5);
        if (layer < 0 || layer >= s->hp.n_layers)
            return ierr_set(x->err, -EINVAL, "%s: neuron of layer %" PRId64 " out of range", s->index_path, layer);
        store_layer *L = &s->layers[layer];
        if (id < 0 || id >= L->n_neurons || slot < 0 || slot >= L->n_neurons)
            return ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 ": neuron %" PRId64 " / slot %" PRId64
                            " out of range", s->index_path, layer, id, slot);
        if (L->slot_of[id] >= 0 || L->id_of[slot] >= 0)
            return ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 ": neuron %" PRId64 " or slot %" PRId64
                            " appears twice", s->index_path, layer, id, slot);
        if (bytes != B || off != L->offset + (uint64_t)(slot * B))
            return ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 " neuron %" PRId64 ": offset %" PRIu64 " / %" PRId64
                            " bytes inconsistent with slot %" PRId64, s->index_path, layer, id, off, bytes, slot);
        if (!isnan(freq) && !(freq >= 0 && isfinite(freq)))
            return ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 " neuron %" PRId64 ": bad frequency %g",
                            s->index_path, layer, id, freq);
        L->slot_of[id] = slot;
        L->id_of[slot] = id;
        L->freq[id] = freq;
        L->xxh64[id] = sum;
        count++;
    }
    q_end(x);
    /* each (layer, id) and (layer, slot) at most once, so the right count
     * means every slot table is a permutation */
    if (!rc && count != s->hp.n_layers * s->hp.d_ffn)
        rc = ierr_set(x->err, -EINVAL, "%s: %" PRId64 " neurons, expected %" PRId64 " layers x %" PRId64,
                      s->index_path, count, s->hp.n_layers, s->hp.d_ffn);
    return rc;
}

static int load_tokens(q *x)
{
    store *s = x->s;
    tok_row *rows = NULL;
    int64_t *ids = NULL;
    size_t n = 0, cap = 0, idcap = 0;
    int rc = q_prepare(x, "tokens", "SELECT id, piece, score, special FROM tokens ORDER BY id");
    while (!rc && (rc = q_step(x)) == 1) {
        tok_row *r = grow((void **)&rows, n, &cap, sizeof *r);
        int64_t *id = grow((void **)&ids, n, &idcap, sizeof *id);
        int64_t special;
        int st = sqlite3_column_type(x->st, 2);
        rc = 0;
        if (!r || !id) {
            rc = q_fail(x, "out of memory");
            break;
        }
        memset(r, 0, sizeof *r);
        if (col_i64(x, 0, id) || col_i64(x, 3, &special) || (special != 0 && special != 1) ||
            (st != SQLITE_NULL && st != SQLITE_FLOAT && st != SQLITE_INTEGER) || col_bytes(x, 1, &r->piece, &r->len)) {
            rc = q_fail(x, "a row has a column of the wrong type");
            break;
        }
        n++;
        r->score = st == SQLITE_NULL ? 0 : sqlite3_column_double(x->st, 2);
        r->special = (int)special;
        r->present = 1;
    }
    q_end(x);
    /* ids are unique and ascending; bound them to keep the table small */
    int64_t bound = s->hp.vocab_size > (int64_t)n ? s->hp.vocab_size : (int64_t)n;
    if (!rc && n && (ids[0] < 0 || ids[n - 1] >= bound))
        rc = ierr_set(x->err, -EINVAL, "%s: token id %" PRId64 " out of range [0, %" PRId64 ")", s->index_path,
                      ids[0] < 0 ? ids[0] : ids[n - 1], bound);
    if (!rc && n) {
        s->n_tokens = ids[n - 1] + 1;
        if (!(s->tokens = calloc((size_t)s->n_tokens, sizeof *s->tokens)))
            rc = q_fail(x, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        if (!rc)
            s->tokens[ids[i]] = rows[i];
        else
            free(rows[i].piece);
    }
    free(rows);
    free(ids);
    return rc;
}

static int load_merges(q *x)
{
    store *s = x->s;
    size_t cap = 0;
    int rc = q_prepare(x, "merges", "SELECT rank, left, right FROM merges ORDER BY rank");
    while (!rc && (rc = q_step(x)) == 1) {
        merge_row *m = grow((void **)&s->merges, (size_t)s->n_merges, &cap, sizeof *m);
        int64_t rank;
        rc = 0;
        if (!m)
            return q_fail(x, "out of memory");
        memset(m, 0, sizeof *m);
        if (col_i64(x, 0, &rank) || rank != s->n_merges)
            return q_fail(x, "ranks are not 0, 1, 2, ...");
        if (col_bytes(x, 1, &m->left, &m->llen))
            return q_fail(x, "left is not text");
        s->n_merges++;
        if (col_bytes(x, 2, &m->right, &m->rlen))
            return q_fail(x, "right is not text");
    }
    q_end(x);
    return rc;
}

static int load_tokfiles(q *x)
{
    store *s = x->s;
    size_t cap = 0;
    int rc = q_prepare(x, "tokenizer_files", "SELECT name, data FROM tokenizer_files ORDER BY name");
    while (!rc && (rc = q_step(x)) == 1) {
        tokfile_row *f = grow((void **)&s->tokfiles, s->n_tokfiles, &cap, sizeof *f);
        rc = 0;
        if (!f)
            return q_fail(x, "out of memory");
        memset(f, 0, sizeof *f);
        if (col_bytes(x, 0, &f->name, NULL))
            return q_fail(x, "name is not text");
        s->n_tokfiles++;
        if (col_bytes(x, 1, (char **)&f->data, &f->len))
            return q_fail(x, "data is not a blob");
    }
    q_end(x);
    return rc;
}

/* a REAL (or INTEGER) column; NULL gives NAN when nullable, else an error */
static int col_real(q *x, int c, int nullable, double *v)
{
    int t = sqlite3_column_type(x->st, c);
    if (t == SQLITE_NULL && nullable) {
        *v = NAN;
        return 0;
    }
    if (t != SQLITE_FLOAT && t != SQLITE_INTEGER)
        return -1;
    *v = sqlite3_column_double(x->st, c);
    return 0;
}

/* The predictor tensor of a layer must exist, be f32 and have this shape. */
static int check_pred_tensor(q *x, int64_t layer, char which, int64_t d0, int64_t d1)
{
    char name[STORE_PRED_NAME_MAX];
    store_pred_name(name, layer, which);
    const store_tensor *t = store_tensor_find(x->s, name);
    int ndim = d1 ? 2 : 1;
    if (!t)
        return ierr_set(x->err, -EINVAL, "%s: layer %" PRId64 " is calibrated but tensor \"%s\" is missing",
                        x->s->index_path, layer, name);
    if (t->dtype != FMT_F32 || t->ndim != ndim || t->shape[0] != d0 || (d1 && t->shape[1] != d1))
        return ierr_set(x->err, -EINVAL, "%s: tensor \"%s\" must be f32 [%" PRId64 "%s%.0" PRId64 "]",
                        x->s->index_path, name, d0, d1 ? ", " : "", d1);
    return 0;
}

/* The optional calib table (format.h section 4): all layers or none, each
 * once, sane numbers, and the predictor tensors present. */
static int load_calib(q *x)
{
    store *s = x->s;
    const hp_config *hp = &s->hp;
    sqlite3_stmt *st;
    int exists = 0;
    if (sqlite3_prepare_v2(x->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calib'", -1, &st,
                           NULL) != SQLITE_OK)
        return ierr_set(x->err, -EIO, "%s: %s", s->index_path, sqlite3_errmsg(x->db));
    exists = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (!exists)
        return 0;
    store_calib *rows = calloc((size_t)hp->n_layers, sizeof *rows);
    int64_t n = 0, rmax = hp->d_model < hp->d_ffn ? hp->d_model : hp->d_ffn;
    if (!rows)
        return q_fail(x, "out of memory");
    int rc = q_prepare(x, "calib", "SELECT layer, rank, threshold, act_threshold, sparsity, recall, precision, "
                                   "pred_fraction FROM calib ORDER BY layer");
    while (!rc && (rc = q_step(x)) == 1) {
        int64_t layer;
        store_calib c;
        double *fig[4] = { &c.sparsity, &c.recall, &c.precision, &c.pred_fraction };
        rc = 0;
        if (col_i64(x, 0, &layer) || col_i64(x, 1, &c.rank) || col_real(x, 2, 0, &c.threshold) ||
            col_real(x, 3, 0, &c.act_threshold) || col_real(x, 4, 1, &c.sparsity) || col_real(x, 5, 1, &c.recall) ||
            col_real(x, 6, 1, &c.precision) || col_real(x, 7, 1, &c.pred_fraction)) {
            rc = q_fail(x, "a column has the wrong type");
            break;
        }
        if (layer != n || n >= hp->n_layers) {
            rc = ierr_set(x->err, -EINVAL, "%s: table calib: layer %" PRId64 " unexpected (n_layers %" PRId64 ")",
                          s->index_path, layer, hp->n_layers);
            break;
        }
        if (c.rank < 1 || c.rank > rmax || !isfinite(c.threshold) || !isfinite(c.act_threshold)) {
            rc = ierr_set(x->err, -EINVAL, "%s: table calib: layer %" PRId64 ": rank %" PRId64 " (1..%" PRId64
                          ") or thresholds %g / %g out of range", s->index_path, layer, c.rank, rmax, c.threshold,
                          c.act_threshold);
            break;
        }
        for (int i = 0; i < 4 && !rc; i++)
            if (!isnan(*fig[i]) && !(*fig[i] >= 0.0 && *fig[i] <= 1.0))
                rc = ierr_set(x->err, -EINVAL, "%s: table calib: layer %" PRId64 ": figure %g is not in [0, 1]",
                              s->index_path, layer, *fig[i]);
        if (!rc && (rc = check_pred_tensor(x, layer, 'A', c.rank, hp->d_model)) == 0 &&
            (rc = check_pred_tensor(x, layer, 'B', hp->d_ffn, c.rank)) == 0)
            rc = check_pred_tensor(x, layer, 'c', hp->d_ffn, 0);
        if (rc)
            break;
        rows[n++] = c;
    }
    q_end(x);
    if (!rc && n && n != hp->n_layers)
        rc = ierr_set(x->err, -EINVAL, "%s: table calib has %" PRId64 " of %" PRId64 " layers (all or none)",
                      s->index_path, n, hp->n_layers);
    if (rc || !n)
        free(rows);
    else
        s->calib = rows;
    return rc;
}

/* The files of a store are regular files in its directory: a symlink (to
 * anywhere) is refused, never followed; O_NONBLOCK keeps a FIFO from blocking
 * the open (it is then refused as not a regular file). */
static int symlink_refused(const char *path, ierr *err)
{
    return ierr_set(err, -ELOOP, "%s: is a symlink; a store's files must be regular files inside it (not followed)",
                    path);
}

/* Open a .bin file, check its header against the real size and the index. */
static int open_bin(const char *path, uint32_t kind, int *fd, uint64_t *size, ierr *err)
{
    struct stat st;
    unsigned char buf[IFL_HEADER_BYTES];
    fmt_header h;
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (*fd < 0 && errno == ELOOP)
        return symlink_refused(path, err);
    if (*fd < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    if (fstat(*fd, &st) < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ierr_set(err, -EINVAL, "%s: not a regular file", path);
    *size = (uint64_t)st.st_size;
    if (*size < IFL_HEADER_BYTES)
        return ierr_set(err, -EINVAL, "%s: truncated: %" PRIu64 " bytes, shorter than the header", path, *size);
    int rc = io_pread_full(*fd, buf, sizeof buf, 0, path, err);
    if (rc)
        return rc;
    if (fmt_header_decode(buf, sizeof buf, &h))
        return ierr_set(err, -EINVAL, "%s: bad magic: not an inflash file", path);
    if (h.version != IFL_VERSION)
        return ierr_set(err, -EINVAL, "%s: format version %u, this build reads %u", path, h.version, IFL_VERSION);
    if (h.kind != kind)
        return ierr_set(err, -EINVAL, "%s: file kind %u, expected %u", path, h.kind, kind);
    if (h.file_bytes != *size)
        return ierr_set(err, -EINVAL, "%s: %" PRIu64 " bytes, its header says %" PRIu64 " (truncated?)", path,
                        *size, h.file_bytes);
    return 0;
}

static int check_counts(store *s, ierr *err)
{
    unsigned char buf[32];
    fmt_header h;
    int rc = io_pread_full(s->dense_fd, buf, sizeof buf, 0, s->dense_path, err);
    if (rc)
        return rc;
    fmt_header_decode(buf, sizeof buf, &h);
    if (h.count != s->n_tensors)
        return ierr_set(err, -EINVAL, "%s: header counts %" PRIu64 " tensors, the index has %zu", s->dense_path,
                        h.count, s->n_tensors);
    if ((rc = io_pread_full(s->ffn_fd, buf, sizeof buf, 0, s->ffn_path, err)))
        return rc;
    fmt_header_decode(buf, sizeof buf, &h);
    if (h.count != (uint64_t)s->hp.n_layers)
        return ierr_set(err, -EINVAL, "%s: header counts %" PRIu64 " layers, the index has %" PRId64, s->ffn_path,
                        h.count, s->hp.n_layers);
    return 0;
}

int store_open(const char *dir, store **out, ierr *err)
{
    store *s = calloc(1, sizeof *s);
    if (!s)
        return ierr_set(err, -ENOMEM, "%s: out of memory", dir);
    s->dense_fd = s->ffn_fd = -1;
    int rc;
    q x = { .s = s, .err = err };
    if (!(s->dir = strdup(dir)) || !(s->index_path = io_join(dir, IFL_INDEX_NAME)) ||
        !(s->dense_path = io_join(dir, IFL_DENSE_NAME)) || !(s->ffn_path = io_join(dir, IFL_FFN_NAME))) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", dir);
        goto done;
    }
    struct stat st;
    if (lstat(s->index_path, &st) < 0 || access(s->index_path, R_OK) < 0) {
        rc = ierr_set(err, -errno, "%s: %s%s", s->index_path, strerror(errno),
                      errno == ENOENT ? " (not an inflash store?)" : "");
        goto done;
    }
    if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode)) {
        rc = S_ISLNK(st.st_mode) ? symlink_refused(s->index_path, err)
                                 : ierr_set(err, -EINVAL, "%s: not a regular file", s->index_path);
        goto done;
    }
    if ((rc = open_bin(s->dense_path, IFL_KIND_DENSE, &s->dense_fd, &s->dense_bytes, err)) ||
        (rc = open_bin(s->ffn_path, IFL_KIND_FFN, &s->ffn_fd, &s->ffn_bytes, err)))
        goto done;
    if (sqlite3_open_v2(s->index_path, &x.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOFOLLOW, NULL) != SQLITE_OK) {
        rc = ierr_set(err, -EIO, "%s: %s", s->index_path, x.db ? sqlite3_errmsg(x.db) : "out of memory");
        goto done;
    }
    if ((rc = load_meta(&x)) || (rc = meta_hparams(&x)) || (rc = load_tensors(&x)) || (rc = load_layers(&x)) ||
        (rc = load_neurons(&x)) || (rc = load_tokens(&x)) || (rc = load_merges(&x)) || (rc = load_tokfiles(&x)) ||
        (rc = load_calib(&x)) || (rc = check_counts(s, err)))
        goto done;
done:
    q_end(&x);
    sqlite3_close(x.db);
    if (rc) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->dense_fd >= 0)
        close(s->dense_fd);
    if (s->ffn_fd >= 0)
        close(s->ffn_fd);
    for (size_t i = 0; i < s->n_meta; i++) {
        free(s->meta[i].key);
        free(s->meta[i].value);
    }
    for (size_t i = 0; i < s->n_tensors; i++)
        free(s->tensors[i].name);
    for (int64_t l = 0; s->layers && l < s->hp.n_layers; l++) {
        free(s->layers[l].slot_of);
        free(s->layers[l].id_of);
        free(s->layers[l].freq);
        free(s->layers[l].xxh64);
    }
    for (int64_t i = 0; i < s->n_tokens; i++)
        free(s->tokens[i].piece);
    for (int64_t i = 0; i < s->n_merges; i++) {
        free(s->merges[i].left);
        free(s->merges[i].right);
    }
    for (size_t i = 0; i < s->n_tokfiles; i++) {
        free(s->tokfiles[i].name);
        free(s->tokfiles[i].data);
    }
    free(s->meta);
    free(s->tensors);
    free(s->layers);
    free(s->tokens);
    free(s->merges);
    free(s->tokfiles);
    free(s->calib);
    free(s->dir);
    free(s->index_path);
    free(s->dense_path);
    free(s->ffn_path);
    free(s);
}

/* ---- accessors ----------------------------------------------------------- */

const char *store_dir(const store *s) { return s->dir; }
const hp_config *store_hparams(const store *s) { return &s->hp; }
fmt_dtype store_dtype(const store *s) { return s->dtype; }
int64_t store_bundle_bytes(const store *s) { return s->bundle_bytes; }
uint64_t store_dense_bytes(const store *s) { return s->dense_bytes; }
uint64_t store_ffn_bytes(const store *s) { return s->ffn_bytes; }

static int by_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The arrays are sorted by a leading char * (key/name): bisect them. */
static const void *bisect(const void *arr, size_t n, size_t size, const char *key)
{
    return n ? bsearch(&key, arr, n, size, by_key) : NULL;
}

const char *store_meta(const store *s, const char *key)
{
    const meta_kv *kv = bisect(s->meta, s->n_meta, sizeof *kv, key);
    return kv ? kv->value : NULL;
}

size_t store_meta_count(const store *s) { return s->n_meta; }

int store_meta_at(const store *s, size_t i, const char **key, const char **value)
{
    if (i >= s->n_meta)
        return -ENOENT;
    *key = s->meta[i].key;
    *value = s->meta[i].value;
    return 0;
}

size_t store_tensor_count(const store *s) { return s->n_tensors; }
const store_tensor *store_tensor_at(const store *s, size_t i) { return i < s->n_tensors ? &s->tensors[i] : NULL; }
const store_tensor *store_tensor_find(const store *s, const char *name)
{
    return bisect(s->tensors, s->n_tensors, sizeof *s->tensors, name);
}
const store_layer *store_layer_at(const store *s, int64_t layer)
{
    return layer >= 0 && layer < s->hp.n_layers ? &s->layers[layer] : NULL;
}

const store_calib *store_calib_at(const store *s, int64_t layer)
{
    return s->calib && layer >= 0 && layer < s->hp.n_layers ? &s->calib[layer] : NULL;
}

void store_pred_name(char buf[STORE_PRED_NAME_MAX], int64_t layer, char which)
{
    snprintf(buf, STORE_PRED_NAME_MAX, "inflash.pred.%" PRId64 ".%c", layer, which);
}

size_t store_tokfile_count(const store *s) { return s->n_tokfiles; }

int store_tokfile_at(const store *s, size_t i, const char **name, const void **data, size_t *len)
{
    if (i >= s->n_tokfiles)
        return -ENOENT;
    *name = s->tokfiles[i].name;
    *data = s->tokfiles[i].data;
    *len = s->tokfiles[i].len;
    return 0;
}

int store_tokfile_find(const store *s, const char *name, const void **data, size_t *len)
{
    const tokfile_row *f = bisect(s->tokfiles, s->n_tokfiles, sizeof *f, name);
    if (!f)
        return -ENOENT;
    *data = f->data;
    *len = f->len;
    return 0;
}

int64_t store_token_count(const store *s) { return s->n_tokens; }

int store_token(const store *s, int64_t id, const char **piece, size_t *len, double *score, int *special)
{
    if (id < 0 || id >= s->n_tokens || !s->tokens[id].present)
        return -ENOENT;
    const tok_row *t = &s->tokens[id];
    if (piece) *piece = t->piece;
    if (len) *len = t->len;
    if (score) *score = t->score;
    if (special) *special = t->special;
    return 0;
}

int64_t store_merge_count(const store *s) { return s->n_merges; }

int store_merge(const store *s, int64_t rank, const char **left, size_t *llen, const char **right, size_t *rlen)
{
    if (rank < 0 || rank >= s->n_merges)
        return -ENOENT;
    const merge_row *m = &s->merges[rank];
    if (left) *left = m->left;
    if (llen) *llen = m->llen;
    if (right) *right = m->right;
    if (rlen) *rlen = m->rlen;
    return 0;
}

/* ---- reads --------------------------------------------------------------- */

static int read_in(int fd, const char *path, uint64_t size, uint64_t off, void *dst, size_t len, ierr *err)
{
    if (off > size || len > size - off)
        return ierr_set(err, -EINVAL, "%s: read of [%" PRIu64 ", +%zu) outside the file (%" PRIu64 " bytes)", path,
                        off, len, size);
    return io_pread_full(fd, dst, len, off, path, err);
}

int store_read_dense(const store *s, uint64_t off, void *dst, size_t len, ierr *err)
{
    return read_in(s->dense_fd, s->dense_path, s->dense_bytes, off, dst, len, err);
}

int store_read_ffn(const store *s, uint64_t off, void *dst, size_t len, ierr *err)
{
    return read_in(s->ffn_fd, s->ffn_path, s->ffn_bytes, off, dst, len, err);
}

int store_read_tensor_f32(const store *s, const store_tensor *t, float *dst, ierr *err)
{
    size_t n = 1;                     /* the shape was checked against bytes at open */
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    if (t->dtype == FMT_F32) {        /* read in place, then fix the byte order */
        int rc = store_read_dense(s, t->offset, dst, (size_t)t->bytes, err);
        if (!rc)
            fmt_to_f32(FMT_F32, dst, dst, n);
        return rc;
    }
    void *buf = malloc(t->bytes ? (size_t)t->bytes : 1);
    if (!buf)
        return ierr_set(err, -ENOMEM, "%s: tensor \"%s\": out of memory", s->dense_path, t->name);
    int rc = store_read_dense(s, t->offset, buf, (size_t)t->bytes, err);
    if (!rc)
        fmt_to_f32(t->dtype, buf, dst, n);
    free(buf);
    return rc;
}

int store_read_bundle(const store *s, int64_t layer, int64_t id, void *dst, ierr *err)
{
    const store_layer *L = store_layer_at(s, layer);
    if (!L || id < 0 || id >= L->n_neurons)
        return ierr_set(err, -EINVAL, "%s: no neuron %" PRId64 " in layer %" PRId64, s->ffn_path, id, layer);
    return store_read_ffn(s, L->offset + (uint64_t)(L->slot_of[id] * s->bundle_bytes), dst,
                          (size_t)s->bundle_bytes, err);
}

/* ---- verification against the index's xxh64 ------------------------------- */

#define VERIFY_BLOCK (4u << 20)          /* bytes read per step */

int store_tensor_problem(const store_tensor *t, int rc, const char *problem, ierr *err)
{
    return ierr_set(err, rc, "%s: tensor %s (offset %" PRIu64 ", %" PRIu64 " bytes): %s", IFL_DENSE_NAME, t->name,
                    t->offset, t->bytes, problem);
}

int store_bundle_problem(const store *s, int64_t layer, int64_t slot, int rc, const char *problem, ierr *err)
{
    const store_layer *L = store_layer_at(s, layer);
    if (!L || slot < 0 || slot >= L->n_neurons)
        return ierr_set(err, rc, "%s: layer %" PRId64 " slot %" PRId64 ": %s", IFL_FFN_NAME, layer, slot, problem);
    return ierr_set(err, rc, "%s: layer %" PRId64 " neuron %" PRId64 " (slot %" PRId64 ", offset %" PRIu64 "): %s",
                    IFL_FFN_NAME, layer, L->id_of[slot], slot, L->offset + (uint64_t)slot * (uint64_t)s->bundle_bytes,
                    problem);
}

int store_verify_tensor(const store *s, const store_tensor *t, ierr *err)
{
    size_t cap = t->bytes < VERIFY_BLOCK ? (size_t)t->bytes : VERIFY_BLOCK;
    unsigned char *buf = malloc(cap ? cap : 1);
    XXH64_state_t *h = XXH64_createState();
    int rc = 0;
    if (!buf || !h || XXH64_reset(h, 0) != XXH_OK)
        rc = ierr_set(err, -ENOMEM, "%s: tensor %s: out of memory", IFL_DENSE_NAME, t->name);
    for (uint64_t done = 0; rc == 0 && done < t->bytes;) {
        size_t n = t->bytes - done < cap ? (size_t)(t->bytes - done) : cap;
        ierr rerr = IERR_INIT;
        rc = store_read_dense(s, t->offset + done, buf, n, &rerr);
        if (rc < 0)
            rc = store_tensor_problem(t, -EIO, rerr.msg, err);
        else
            XXH64_update(h, buf, n);
        done += n;
    }
    if (rc == 0 && XXH64_digest(h) != t->xxh64)
        rc = store_tensor_problem(t, -EBADMSG, "checksum mismatch", err);
    XXH64_freeState(h);
    free(buf);
    return rc;
}

int64_t store_verify_bundles(const store *s, int64_t layer, int64_t slot0, int64_t n, store_bad_fn bad, void *ctx,
                             ierr *err)
{
    const store_layer *L = store_layer_at(s, layer);
    if (!L || slot0 < 0 || n < 0 || slot0 > L->n_neurons || n > L->n_neurons - slot0)
        return ierr_set(err, -EINVAL, "%s: layer %" PRId64 ": no slots [%" PRId64 ", +%" PRId64 ")", IFL_FFN_NAME,
                        layer, slot0, n);
    const uint64_t B = (uint64_t)s->bundle_bytes;
    const int64_t per = B >= VERIFY_BLOCK ? 1 : (int64_t)(VERIFY_BLOCK / B);
    unsigned char *buf = malloc((size_t)((uint64_t)per * B));
    if (!buf)
        return ierr_set(err, -ENOMEM, "%s: out of memory", IFL_FFN_NAME);
    int64_t n_bad = 0;
    for (int64_t at = slot0; at < slot0 + n;) {
        int64_t k = slot0 + n - at < per ? slot0 + n - at : per;
        ierr line = IERR_INIT;
        int block_ok = store_read_ffn(s, L->offset + (uint64_t)at * B, buf, (size_t)((uint64_t)k * B), &line) == 0;
        for (int64_t i = 0; i < k; i++) {
            int64_t slot = at + i;
            unsigned char *b = buf + (uint64_t)i * B;
            ierr rerr = IERR_INIT;
            /* after a failed block read, each bundle alone: find the bad ones */
            if (!block_ok && store_read_ffn(s, L->offset + (uint64_t)slot * B, b, (size_t)B, &rerr) < 0)
                store_bundle_problem(s, layer, slot, -EIO, rerr.msg, &line);
            else if (XXH64(b, (size_t)B, 0) != L->xxh64[L->id_of[slot]])
                store_bundle_problem(s, layer, slot, -EBADMSG, "checksum mismatch", &line);
            else
                continue;
            n_bad++;
            if (bad)
                bad(ctx, line.msg);
        }
        at += k;
    }
    free(buf);
    return n_bad;
}

/* ---- the mount's config.json --------------------------------------------- */

char *store_config_json(const store *s, ierr *err)
{
    const char *text = store_meta(s, "hf_config"), *tokenizer = store_meta(s, "tokenizer");
    json_error_t jerr;
    json_t *root = text ? json_loads(text, 0, &jerr) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        ierr_set(err, -EINVAL, "%s: meta hf_config is %s", s->index_path, text ? "not a JSON object" : "missing");
        return NULL;
    }
    json_object_set_new(root, "inflash_dtype", json_string(fmt_dtype_name(s->dtype)));
    json_object_set_new(root, "inflash_bundle_bytes", json_integer(s->bundle_bytes));
    json_object_set_new(root, "inflash_layout_version", json_integer(IFL_VERSION));
    json_object_set_new(root, "inflash_family", json_string(hp_family_name(s->hp.family)));
    json_object_set_new(root, "inflash_tokenizer", json_string(tokenizer ? tokenizer : ""));
    if (s->calib) {
        json_t *arr = json_array();
        for (int64_t l = 0; l < s->hp.n_layers; l++)
            json_array_append_new(arr, json_pack("{sI sI sf sf}", "layer", (json_int_t)l, "rank",
                                                 (json_int_t)s->calib[l].rank, "threshold", s->calib[l].threshold,
                                                 "act_threshold", s->calib[l].act_threshold));
        json_object_set_new(root, "inflash_calibration", arr);
        const char *crit = store_meta(s, "calib_criterion");
        if (crit)
            json_object_set_new(root, "inflash_calib_criterion", json_string(crit));
    }
    char *dump = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(root);
    size_t n = dump ? strlen(dump) : 0;
    char *out = dump ? realloc(dump, n + 2) : NULL;
    if (!out) {
        free(dump);
        ierr_set(err, -ENOMEM, "%s: out of memory", s->index_path);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    return out;
}

int store_parse_mount_config(const char *text, size_t len, const char *what, hp_config *hp, fmt_dtype *dtype,
                             int64_t *bundle_bytes, ierr *err)
{
    int rc = hp_from_json(text, len, what, hp, err);
    if (rc)
        return rc;
    json_t *root = json_loadb(text, len, 0, NULL);
    json_t *dt = json_object_get(root, "inflash_dtype"), *bb = json_object_get(root, "inflash_bundle_bytes");
    json_t *ver = json_object_get(root, "inflash_layout_version");
    if (!json_is_integer(ver) || json_integer_value(ver) != IFL_VERSION)
        rc = ierr_set(err, -EINVAL, "%s: \"inflash_layout_version\" is %s, this build reads %u", what,
                      json_is_integer(ver) ? "another version" : "missing", IFL_VERSION);
    else if (!json_is_string(dt) || fmt_dtype_parse(json_string_value(dt), dtype) || !fmt_is_store_dtype(*dtype))
        rc = ierr_set(err, -EINVAL, "%s: \"inflash_dtype\" must be \"f32\", \"f16\", \"q8_0\" or \"q4_0\"", what);
    else if ((rc = hp_check_dtype(hp, *dtype, what, err)))
        ;
    else if (!json_is_integer(bb) || json_integer_value(bb) != hp_bundle_bytes(hp, *dtype))
        rc = ierr_set(err, -EINVAL, "%s: \"inflash_bundle_bytes\" does not match the hyperparameters", what);
    else
        *bundle_bytes = json_integer_value(bb);
    json_decref(root);
    return rc;
}

int store_parse_mount_calib(const char *text, size_t len, const char *what, const hp_config *hp, store_calib *calib,
                            int *present, ierr *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    int rc = 0;
    *present = 0;
    if (!json_is_object(root)) {
        json_decref(root);
        return ierr_set(err, -EINVAL, "%s: not a JSON object", what);
    }
    json_t *arr = json_object_get(root, "inflash_calibration");
    int64_t rmax = hp->d_model < hp->d_ffn ? hp->d_model : hp->d_ffn;
    if (!arr)
        goto out;
    if (!json_is_array(arr) || (int64_t)json_array_size(arr) != hp->n_layers) {
        rc = ierr_set(err, -EINVAL, "%s: \"inflash_calibration\" must be an array of %" PRId64 " layers", what,
                      hp->n_layers);
        goto out;
    }
    for (int64_t l = 0; l < hp->n_layers; l++) {
        json_t *e = json_array_get(arr, (size_t)l);
        json_t *jl = json_object_get(e, "layer"), *jr = json_object_get(e, "rank");
        json_t *jt = json_object_get(e, "threshold"), *ja = json_object_get(e, "act_threshold");
        if (!json_is_integer(jl) || json_integer_value(jl) != l || !json_is_integer(jr) ||
            json_integer_value(jr) < 1 || json_integer_value(jr) > rmax || !json_is_number(jt) ||
            !json_is_number(ja) || !isfinite(json_number_value(jt)) || !isfinite(json_number_value(ja))) {
            rc = ierr_set(err, -EINVAL, "%s: \"inflash_calibration\" entry %" PRId64 " is not {\"layer\": %" PRId64
                          ", \"rank\": 1..%" PRId64 ", \"threshold\": t, \"act_threshold\": a}", what, l, l, rmax);
            goto out;
        }
    }
    for (int64_t l = 0; l < hp->n_layers; l++) {
        json_t *e = json_array_get(arr, (size_t)l);
        calib[l] = (store_calib){
            .rank = json_integer_value(json_object_get(e, "rank")),
            .threshold = json_number_value(json_object_get(e, "threshold")),
            .act_threshold = json_number_value(json_object_get(e, "act_threshold")),
            .sparsity = NAN, .recall = NAN, .precision = NAN, .pred_fraction = NAN,
        };
    }
    *present = 1;
out:
    json_decref(root);
    return rc;
}
