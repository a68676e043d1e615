/* store_write.c: the store writer. Everything goes into "<out_dir>.tmp.<pid>":
 * dense.bin and ffn.bin through big write buffers (their header blocks are
 * written last), the index through one sqlite transaction. storew_commit
 * syncs and renames the directory into place; storew_free without a commit
 * removes it, so no half-written store is ever visible (what a killed
 * writer leaves is removed by the next one: storeu_make_tmp). */
#include "store.h"
#include "io.h"
#include "store_update.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define WBUF_BYTES (4u << 20)

/* A buffered, append-only output file. pos is the logical end (flushed
 * bytes + buffered bytes); the first IFL_HEADER_BYTES are left for the header. */
typedef struct {
    char          *path;       /* owned, for messages */
    int            fd;
    unsigned char *buf;        /* owned, WBUF_BYTES */
    size_t         len;        /* bytes buffered, not yet written */
    uint64_t       pos;
} wfile;

enum { ST_META, ST_TOKEN, ST_MERGE, ST_TOKFILE, ST_TENSOR, ST_LAYER, ST_NEURON, ST_COUNT };

static const char *const sql_insert[ST_COUNT] = {
    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
    "INSERT INTO tokens(id, piece, score, special) VALUES (?, ?, ?, ?)",
    "INSERT INTO merges(rank, left, right) VALUES (?, ?, ?)",
    "INSERT INTO tokenizer_files(name, data) VALUES (?, ?)",
    "INSERT INTO tensors(name, dtype, shape, file, offset, bytes, xxh64) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO layers(layer, offset, bytes, n_neurons) VALUES (?, ?, ?, ?)",
    "INSERT INTO neurons(layer, id, slot, offset, bytes, freq, xxh64) VALUES (?, ?, ?, ?, ?, NULL, ?)",
};

static const char schema_sql[] =
    "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE tokens(id INTEGER PRIMARY KEY, piece BLOB NOT NULL, score REAL, special INTEGER NOT NULL);"
    "CREATE TABLE merges(rank INTEGER PRIMARY KEY, left BLOB NOT NULL, right BLOB NOT NULL);"
    "CREATE TABLE tokenizer_files(name TEXT PRIMARY KEY, data BLOB NOT NULL);"
    "CREATE TABLE tensors(name TEXT PRIMARY KEY, dtype TEXT NOT NULL, shape TEXT NOT NULL, file TEXT NOT NULL,"
    " offset INTEGER NOT NULL, bytes INTEGER NOT NULL, xxh64 INTEGER NOT NULL);"
    "CREATE TABLE layers(layer INTEGER PRIMARY KEY, offset INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " n_neurons INTEGER NOT NULL);"
    "CREATE TABLE neurons(layer INTEGER NOT NULL, id INTEGER NOT NULL, slot INTEGER NOT NULL,"
    " offset INTEGER NOT NULL, bytes INTEGER NOT NULL, freq REAL, xxh64 INTEGER NOT NULL,"
    " PRIMARY KEY(layer, id));"
    "BEGIN;";

struct storew {
    char         *out_dir;           /* owned; final name */
    char         *tmp_dir;           /* owned; "<out_dir>.tmp.<pid>" */
    char         *db_path;           /* owned; tmp_dir/index.sqlite */
    int           tmp_lock;          /* flock on tmp_dir (storeu_make_tmp), or -1 */
    int           store_lock;        /* flock on the store replaced (storeu_lock_store), or -1 */
    int           force;
    int           committed;
    sqlite3      *db;
    sqlite3_stmt *st[ST_COUNT];
    wfile         dense, ffn;
    int           have_hp;
    hp_config     hp;
    fmt_dtype     dtype;
    int64_t       bundle_bytes;
    uint64_t      n_tensors;
    int64_t       n_layers;          /* layers begun so far */
    int64_t       layer_neurons;     /* of the current layer */
    int64_t       layer_done;        /* bundles written to the current layer */
    uint64_t      layer_offset;
};

static char *str_printf(const char *fmt, const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + strlen(fmt) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, fmt, a, b);
    return p;
}

/* ---- buffered files ------------------------------------------------------ */

static int wfile_open(wfile *f, const char *dir, const char *name, ierr *err)
{
    f->fd = -1;
    f->pos = IFL_HEADER_BYTES;
    if (!(f->path = str_printf("%s/%s", dir, name)) || !(f->buf = malloc(WBUF_BYTES)))
        return ierr_set(err, -ENOMEM, "%s/%s: out of memory", dir, name);
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0)
        return ierr_set(err, -errno, "%s: %s", f->path, strerror(errno));
    return 0;
}

static int wfile_flush(wfile *f, ierr *err)
{
    int rc = io_pwrite_full(f->fd, f->buf, f->len, f->pos - f->len, f->path, err);
    f->len = 0;
    return rc;
}

static int wfile_write(wfile *f, const void *data, size_t len, ierr *err)
{
    int rc = 0;
    if (len > WBUF_BYTES - f->len && (rc = wfile_flush(f, err)))
        return rc;
    if (len >= WBUF_BYTES) {
        rc = io_pwrite_full(f->fd, data, len, f->pos, f->path, err);
    } else {
        memcpy(f->buf + f->len, data, len);
        f->len += len;
    }
    f->pos += len;
    return rc;
}

/* zero padding up to the next multiple of align */
static int wfile_pad(wfile *f, uint64_t align, ierr *err)
{
    static const unsigned char zero[IFL_LAYER_ALIGN];
    uint64_t pad = fmt_align_up(f->pos, align) - f->pos;
    int rc = 0;
    while (pad && !rc) {
        size_t k = pad < sizeof zero ? (size_t)pad : sizeof zero;
        rc = wfile_write(f, zero, k, err);
        pad -= k;
    }
    return rc;
}

/* Flush, write the header block, fsync. */
static int wfile_finish(wfile *f, uint32_t kind, uint64_t count, ierr *err)
{
    unsigned char hdr[IFL_HEADER_BYTES];
    fmt_header h = { IFL_VERSION, kind, f->pos, count };
    int rc = wfile_flush(f, err);
    fmt_header_encode(&h, hdr);
    if (!rc)
        rc = io_pwrite_full(f->fd, hdr, sizeof hdr, 0, f->path, err);
    if (!rc && fsync(f->fd) < 0)
        rc = ierr_set(err, -errno, "%s: fsync: %s", f->path, strerror(errno));
    return rc;
}

static void wfile_close(wfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    free(f->buf);
    free(f->path);
    f->buf = NULL;
    f->path = NULL;
}

/* ---- sqlite helpers ------------------------------------------------------ */

static int db_fail(storew *w, const char *what, ierr *err)
{
    return ierr_set(err, -EIO, "%s: %s: %s", w->db_path, what, sqlite3_errmsg(w->db));
}

/* Run a prepared insert whose parameters are bound; reset it for reuse. */
static int db_step(storew *w, int which, const char *what, ierr *err)
{
    sqlite3_stmt *s = w->st[which];
    int r = sqlite3_step(s);
    int rc = r == SQLITE_DONE ? 0 : db_fail(w, what, err);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static int64_t u64_as_i64(uint64_t v)
{
    int64_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

/* ---- lifetime ------------------------------------------------------------ */

int storew_new(const char *out_dir, int force, storew **out, ierr *err)
{
    storew *w = calloc(1, sizeof *w);
    if (!w)
        return ierr_set(err, -ENOMEM, "%s: out of memory", out_dir);
    w->dense.fd = w->ffn.fd = w->tmp_lock = w->store_lock = -1;
    w->force = force;
    w->out_dir = strdup(out_dir);
    int rc = 0;
    if (!w->out_dir) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", out_dir);
        goto fail;
    }
    size_t n = strlen(w->out_dir);
    while (n > 1 && w->out_dir[n - 1] == '/')
        w->out_dir[--n] = '\0';

    struct stat st;
    if (lstat(w->out_dir, &st) == 0) {
        if (!force) {
            rc = ierr_set(err, -EEXIST, "%s: already exists (use --force to replace it)", w->out_dir);
            goto fail;
        }
        /* only ever replace a store, never some other directory */
        char *idx = str_printf("%s/%s", w->out_dir, IFL_INDEX_NAME);
        int is_store = S_ISDIR(st.st_mode) && idx && access(idx, F_OK) == 0;
        free(idx);
        if (!is_store) {
            rc = ierr_set(err, -EEXIST, "%s: exists and is not an inflash store; not replacing it", w->out_dir);
            goto fail;
        }
        if ((rc = storeu_lock_store(w->out_dir, &w->store_lock, err)))
            goto fail;
    }
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    if (!(w->tmp_dir = str_printf("%s.tmp.%s", w->out_dir, pid)) ||
        !(w->db_path = str_printf("%s/%s", w->tmp_dir, IFL_INDEX_NAME))) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", out_dir);
        goto fail;
    }
    if ((rc = storeu_make_tmp(w->out_dir, w->tmp_dir, &w->tmp_lock, err))) {
        free(w->tmp_dir);            /* not ours: storew_free must not remove it */
        w->tmp_dir = NULL;
        goto fail;
    }
    if ((rc = wfile_open(&w->dense, w->tmp_dir, IFL_DENSE_NAME, err)) ||
        (rc = wfile_open(&w->ffn, w->tmp_dir, IFL_FFN_NAME, err)))
        goto fail;
    if (sqlite3_open_v2(w->db_path, &w->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        rc = ierr_set(err, -EIO, "%s: cannot create: %s", w->db_path, w->db ? sqlite3_errmsg(w->db) : "no memory");
        goto fail;
    }
    if (sqlite3_exec(w->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(w, "creating the tables", err);
        goto fail;
    }
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v2(w->db, sql_insert[i], -1, &w->st[i], NULL) != SQLITE_OK) {
            rc = db_fail(w, "preparing", err);
            goto fail;
        }
    *out = w;
    return 0;
fail:
    storew_free(w);
    return rc;
}

void storew_free(storew *w)
{
    if (!w)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(w->st[i]);
    sqlite3_close(w->db);
    wfile_close(&w->dense);
    wfile_close(&w->ffn);
    if (!w->committed && w->tmp_dir)
        io_rm_tree(w->tmp_dir);
    if (w->tmp_lock >= 0)
        close(w->tmp_lock);
    if (w->store_lock >= 0)
        close(w->store_lock);
    free(w->out_dir);
    free(w->tmp_dir);
    free(w->db_path);
    free(w);
}

/* ---- content ------------------------------------------------------------- */

int storew_set_meta(storew *w, const char *key, const char *value, ierr *err)
{
    sqlite3_bind_text(w->st[ST_META], 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(w->st[ST_META], 2, value, -1, SQLITE_TRANSIENT);
    return db_step(w, ST_META, key, err);
}

static int meta_i64(storew *w, const char *key, int64_t v, ierr *err)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return storew_set_meta(w, key, buf, err);
}

/* the shortest decimal that reads back as exactly v ("10000", "1e-05") */
static int meta_f64(storew *w, const char *key, double v, ierr *err)
{
    char buf[40];
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, sizeof buf, "%.0f", v);
    else
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    return storew_set_meta(w, key, buf, err);
}

/* meta act_params, for an activation that takes them (hparams.h). */
static int meta_act_params(storew *w, const hp_config *hp, ierr *err)
{
    char *t;
    int rc = hp_act_params_text(hp, &t, err);
    if (rc == 0 && t)
        rc = storew_set_meta(w, "act_params", t, err);
    free(t);
    return rc;
}

int storew_set_hparams(storew *w, const hp_config *hp, fmt_dtype dtype, ierr *err)
{
    int rc = hp_validate(hp, w->db_path, err);
    if (rc)
        return rc;
    if ((rc = hp_check_dtype(hp, dtype, w->db_path, err)))
        return rc;
    if (w->n_layers)
        return ierr_set(err, -EINVAL, "%s: hyperparameters set after the first layer", w->db_path);
    w->hp = *hp;
    w->dtype = dtype;
    w->bundle_bytes = hp_bundle_bytes(hp, dtype);
    w->have_hp = 1;
    if ((rc = storew_set_meta(w, "magic", IFL_MAGIC, err)) ||
        (rc = meta_i64(w, "format_version", IFL_VERSION, err)) ||
        (rc = storew_set_meta(w, "family", hp_family_name(hp->family), err)) ||
        (rc = meta_i64(w, "d_model", hp->d_model, err)) ||
        (rc = meta_i64(w, "n_layers", hp->n_layers, err)) ||
        (rc = meta_i64(w, "n_heads", hp->n_heads, err)) ||
        (rc = meta_i64(w, "n_kv_heads", hp->n_kv_heads, err)) ||
        (rc = meta_i64(w, "d_ffn", hp->d_ffn, err)) ||
        (rc = meta_i64(w, "vocab_size", hp->vocab_size, err)) ||
        (rc = meta_i64(w, "max_pos", hp->max_pos, err)) ||
        (rc = meta_i64(w, "pos_offset", hp->pos_offset, err)) ||
        (rc = meta_f64(w, "norm_eps", hp->norm_eps, err)) ||
        (rc = meta_f64(w, "rope_theta", hp->rope_theta, err)) ||
        (rc = storew_set_meta(w, "activation", act_fn_name(hp->act), err)) ||
        (rc = meta_i64(w, "gated", hp->gated, err)) ||
        (rc = meta_i64(w, "tie_embeddings", hp->tie_embeddings, err)) ||
        (rc = meta_i64(w, "bos_id", hp->bos_id, err)) ||
        (rc = meta_i64(w, "eos_id", hp->eos_id, err)) ||
        (rc = meta_i64(w, "pad_id", hp->pad_id, err)) ||
        (rc = storew_set_meta(w, "dtype", fmt_dtype_name(dtype), err)) ||
        (rc = meta_i64(w, "bundle_bytes", w->bundle_bytes, err)))
        return rc;
    /* only a model with a window has the key (absent = 0) */
    if (hp->sliding_window > 0 && (rc = meta_i64(w, "sliding_window", hp->sliding_window, err)))
        return rc;
    return meta_act_params(w, hp, err);
}

int storew_add_token(storew *w, int64_t id, const char *piece, size_t len, double score, int special, ierr *err)
{
    sqlite3_stmt *s = w->st[ST_TOKEN];
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_blob64(s, 2, len ? piece : "", len, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 3, score);
    sqlite3_bind_int(s, 4, special != 0);
    return db_step(w, ST_TOKEN, "adding a token", err);
}

int storew_add_merge(storew *w, int64_t rank, const char *left, size_t llen, const char *right, size_t rlen,
                     ierr *err)
{
    sqlite3_stmt *s = w->st[ST_MERGE];
    sqlite3_bind_int64(s, 1, rank);
    sqlite3_bind_blob64(s, 2, llen ? left : "", llen, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(s, 3, rlen ? right : "", rlen, SQLITE_TRANSIENT);
    return db_step(w, ST_MERGE, "adding a merge", err);
}

int storew_add_tokfile(storew *w, const char *name, const void *data, size_t len, ierr *err)
{
    sqlite3_stmt *s = w->st[ST_TOKFILE];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(s, 2, len ? data : "", len, SQLITE_STATIC);
    return db_step(w, ST_TOKFILE, name, err);
}

int storew_add_tensor(storew *w, const char *name, fmt_dtype dtype, int ndim, const int64_t *shape,
                      const void *data, size_t bytes, ierr *err)
{
    if (ndim < 0 || ndim > STORE_MAX_DIMS)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": %d dims (at most %d)", w->dense.path, name, ndim,
                        STORE_MAX_DIMS);
    if (!fmt_is_store_dtype(dtype))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": dtype must be f32, f16, q8_0 or q4_0", w->dense.path,
                        name);
    if (w->have_hp && dtype != fmt_tensor_dtype(w->dtype, name, ndim))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\" is %s, but a %s store keeps it in %s", w->dense.path, name,
                        fmt_dtype_name(dtype), fmt_dtype_name(w->dtype),
                        fmt_dtype_name(fmt_tensor_dtype(w->dtype, name, ndim)));
    uint64_t numel = 1;
    char shape_txt[STORE_MAX_DIMS * 21 + 1] = "";
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] >= (int64_t)1 << 40)
            return ierr_set(err, -EINVAL, "%s: tensor \"%s\": bad dim %" PRId64, w->dense.path, name, shape[i]);
        numel *= (uint64_t)shape[i];
        size_t at = strlen(shape_txt);
        snprintf(shape_txt + at, sizeof shape_txt - at, i ? " %" PRId64 : "%" PRId64, shape[i]);
    }
    if (fmt_bytes(dtype, numel) != bytes)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": %zu bytes do not match its shape", w->dense.path, name,
                        bytes);
    int rc = wfile_pad(&w->dense, IFL_TENSOR_ALIGN, err);
    uint64_t offset = w->dense.pos;
    if (rc || (rc = wfile_write(&w->dense, data, bytes, err)))
        return rc;
    sqlite3_stmt *s = w->st[ST_TENSOR];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, fmt_dtype_name(dtype), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, shape_txt, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, IFL_DENSE_NAME, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (int64_t)offset);
    sqlite3_bind_int64(s, 6, (int64_t)bytes);
    sqlite3_bind_int64(s, 7, u64_as_i64(XXH64(data, bytes, 0)));
    if ((rc = db_step(w, ST_TENSOR, name, err)))
        return rc;
    w->n_tensors++;
    return 0;
}

int storew_begin_layer(storew *w, int64_t layer, int64_t n_neurons, ierr *err)
{
    if (!w->have_hp)
        return ierr_set(err, -EINVAL, "%s: layer %" PRId64 " begun before the hyperparameters", w->ffn.path, layer);
    if (layer != w->n_layers || layer >= w->hp.n_layers)
        return ierr_set(err, -EINVAL, "%s: layer %" PRId64 " out of order (expected %" PRId64 " of %" PRId64 ")",
                        w->ffn.path, layer, w->n_layers, w->hp.n_layers);
    if (w->layer_done != w->layer_neurons)
        return ierr_set(err, -EINVAL, "%s: layer %" PRId64 " has %" PRId64 " of %" PRId64 " bundles", w->ffn.path,
                        layer - 1, w->layer_done, w->layer_neurons);
    if (n_neurons != w->hp.d_ffn)
        return ierr_set(err, -EINVAL, "%s: layer %" PRId64 ": %" PRId64 " neurons, d_ffn is %" PRId64, w->ffn.path,
                        layer, n_neurons, w->hp.d_ffn);
    int rc = wfile_pad(&w->ffn, IFL_LAYER_ALIGN, err);
    if (rc)
        return rc;
    w->layer_offset = w->ffn.pos;
    w->layer_neurons = n_neurons;
    w->layer_done = 0;
    w->n_layers++;
    sqlite3_stmt *s = w->st[ST_LAYER];
    sqlite3_bind_int64(s, 1, layer);
    sqlite3_bind_int64(s, 2, (int64_t)w->layer_offset);
    sqlite3_bind_int64(s, 3, n_neurons * w->bundle_bytes);
    sqlite3_bind_int64(s, 4, n_neurons);
    return db_step(w, ST_LAYER, "adding a layer", err);
}

int storew_add_bundle(storew *w, const void *bundle, ierr *err)
{
    if (!w->n_layers || w->layer_done >= w->layer_neurons)
        return ierr_set(err, -EINVAL, "%s: bundle outside a layer", w->ffn.path);
    uint64_t offset = w->ffn.pos;
    size_t B = (size_t)w->bundle_bytes;
    int rc = wfile_write(&w->ffn, bundle, B, err);
    if (rc)
        return rc;
    sqlite3_stmt *s = w->st[ST_NEURON];
    sqlite3_bind_int64(s, 1, w->n_layers - 1);
    sqlite3_bind_int64(s, 2, w->layer_done);
    sqlite3_bind_int64(s, 3, w->layer_done);
    sqlite3_bind_int64(s, 4, (int64_t)offset);
    sqlite3_bind_int64(s, 5, (int64_t)B);
    sqlite3_bind_int64(s, 6, u64_as_i64(XXH64(bundle, B, 0)));
    w->layer_done++;
    return db_step(w, ST_NEURON, "adding a neuron", err);
}

uint64_t storew_bytes_written(const storew *w)
{
    return w->dense.pos + w->ffn.pos;
}

/* Move the finished temp dir to out_dir; an existing store there (force)
 * is swapped out atomically and removed (io_swap_dir). */
static int swap_in(storew *w, ierr *err)
{
    struct stat st;
    if (!w->force && lstat(w->out_dir, &st) == 0)
        return ierr_set(err, -EEXIST, "%s: already exists (use --force to replace it)", w->out_dir);
    int rc = io_swap_dir(w->tmp_dir, w->out_dir, err);
    if (rc == 0)
        w->committed = 1;
    return rc;
}

int storew_commit(storew *w, ierr *err)
{
    int rc;
    if (w->committed)
        return ierr_set(err, -EINVAL, "%s: already committed", w->out_dir);
    if (!w->have_hp)
        return ierr_set(err, -EINVAL, "%s: no hyperparameters set", w->db_path);
    if (w->n_layers != w->hp.n_layers || w->layer_done != w->layer_neurons)
        return ierr_set(err, -EINVAL, "%s: incomplete: %" PRId64 " of %" PRId64 " layers written", w->ffn.path,
                        w->n_layers, w->hp.n_layers);
    if ((rc = wfile_pad(&w->ffn, IFL_LAYER_ALIGN, err)) ||
        (rc = wfile_finish(&w->dense, IFL_KIND_DENSE, w->n_tensors, err)) ||
        (rc = wfile_finish(&w->ffn, IFL_KIND_FFN, (uint64_t)w->n_layers, err)) ||
        (rc = meta_i64(w, "dense_bytes", (int64_t)w->dense.pos, err)) ||
        (rc = meta_i64(w, "ffn_bytes", (int64_t)w->ffn.pos, err)))
        return rc;
    if (sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return db_fail(w, "commit", err);
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(w->st[i]);
        w->st[i] = NULL;
    }
    if (sqlite3_close(w->db) != SQLITE_OK)
        return db_fail(w, "close", err);
    w->db = NULL;
    if ((rc = io_fsync_path(w->db_path, O_RDONLY, err)) ||
        (rc = io_fsync_path(w->tmp_dir, O_RDONLY | O_DIRECTORY, err)))
        return rc;
    return swap_in(w, err);
}
