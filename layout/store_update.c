/* store_update.c: the atomic store update (store_update.h). The changes wait in memory;
 * storeu_commit writes the whole new store into "<dir>.tmp.<pid>" step by
 * step (dense.bin, ffn.bin, index.sqlite, fsync, verification with
 * store_open) and swaps the two directories with renameat2(RENAME_EXCHANGE),
 * then removes the old tree, which the exchange left at the temporary name. */
#include "store_update.h"
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define COPY_BYTES   (8u << 20)       /* copy buffer of dense.bin / ffn.bin */
#define PRED_PREFIX  "inflash.pred."

typedef struct { char *key, *value; } kv;

typedef struct {
    char          *name;              /* owned */
    int            ndim;
    int64_t        shape[STORE_MAX_DIMS];
    unsigned char *data;              /* owned, little-endian f32 */
    size_t         bytes;
    uint64_t       xxh64;
    uint64_t       offset;            /* in the new dense.bin (set by the commit) */
} put_tensor;

/* Everything is owned by the updater; one thread, no locking. */
struct storeu {
    char        *dir;                 /* the store, without trailing slashes */
    char        *tmp_dir;             /* "<dir>.tmp.<pid>" */
    store       *st;                  /* the old store, read-only */
    int          made_tmp;            /* tmp_dir was created by this commit */
    int          tmp_lock;            /* flock on tmp_dir while it is ours, or -1 */
    int          store_lock;          /* flock on dir (storeu_lock_store), or -1 */
    int          committed;           /* swapped in (tmp_dir then held the old tree) */
    int          tried;               /* storeu_commit ran */
    storeu_step  fail_at;             /* test hook, STOREU_STEP_NONE: off */
    kv          *meta;     size_t n_meta, cap_meta;
    put_tensor  *puts;     size_t n_puts, cap_puts;
    store_calib *calib;               /* [n_layers] or NULL: calib table unchanged */
    double     **freq;                /* [n_layers] of [n_neurons] or NULL: unchanged */
    int64_t    **slot_of;             /* [n_layers] of [n_neurons] or NULL: unchanged */
    uint64_t    *new_off;             /* [old tensor count] offset in the new dense.bin, UINT64_MAX: dropped */
    uint64_t     dense_bytes;         /* size of the new dense.bin */
};

static const char *const step_names[STOREU_STEP_COUNT] = {
    "none", "dense", "ffn", "index", "sync", "verify", "exchange",
};

const char *storeu_step_name(storeu_step step)
{
    return step > STOREU_STEP_NONE && step < STOREU_STEP_COUNT ? step_names[step] : "none";
}

/* ---- file helpers ---------------------------------------------------------- */

static char *str_cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 1);
    if (p) {
        memcpy(p, a, la);
        memcpy(p + la, b, lb + 1);
    }
    return p;
}

static int64_t u64_as_i64(uint64_t v)
{
    int64_t s;
    memcpy(&s, &v, sizeof s);
    return s;
}

/* ---- the temporary directory ------------------------------------------------- */

/* The pid of a name "<base>.tmp.<pid>" or (*old set) "<base>.old.<pid>",
 * else 0. */
static long leftover_pid(const char *name, const char *base, int *old)
{
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || (strncmp(name + n, ".tmp.", 5) != 0 && strncmp(name + n, ".old.", 5) != 0))
        return 0;
    *old = name[n + 1] == 'o';
    const char *digits = name + n + 5;
    char *end;
    long pid = strtol(digits, &end, 10);
    return *digits >= '1' && *digits <= '9' && !*end && pid > 0 ? pid : 0;
}

/* Remove what killed writers of dir left beside it (best effort): their
 * "<dir>.tmp.<pid>" directories, and the "<dir>.old.<pid>" of io_swap_dir's
 * two-rename fallback once a store is back at dir. A writer holds an flock
 * on its directory from just after the mkdir (and on the store it
 * replaces), and its pid is checked too, which covers that moment. */
static void sweep_stale(const char *dir)
{
    const char *slash = strrchr(dir, '/');
    char *parent = !slash ? strdup(".") : slash == dir ? strdup("/") : strndup(dir, (size_t)(slash - dir));
    const char *base = slash ? slash + 1 : dir;
    DIR *d = parent ? opendir(parent) : NULL;
    struct dirent *e;
    struct stat st;
    int have_dir = lstat(dir, &st) == 0, old = 0;
    while (d && (e = readdir(d))) {
        long pid = leftover_pid(e->d_name, base, &old);
        if (!pid || (old && !have_dir) || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        char *path = io_join(parent, e->d_name);
        if (path && flock(fd, LOCK_EX | LOCK_NB) == 0)
            io_rm_tree(path);
        free(path);
        close(fd);
    }
    if (d)
        closedir(d);
    free(parent);
}

/* Open directory path and take an exclusive flock on it without waiting:
 * the descriptor, or -errno (-EWOULDBLOCK: someone holds it). */
static int lock_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int storeu_make_tmp(const char *dir, const char *tmp_dir, int *lock_fd, ierr *err)
{
    *lock_fd = -1;
    sweep_stale(dir);
    if (mkdir(tmp_dir, 0755) < 0)
        return ierr_set(err, -errno, "%s: %s", tmp_dir, strerror(errno));
    int fd = lock_dir(tmp_dir);
    if (fd < 0) {
        rmdir(tmp_dir);
        return ierr_set(err, fd, "%s: cannot lock: %s", tmp_dir, strerror(-fd));
    }
    *lock_fd = fd;
    return 0;
}

int storeu_lock_store(const char *dir, int *lock_fd, ierr *err)
{
    *lock_fd = -1;
    for (int tries = 0; tries < 8; tries++) {
        int fd = lock_dir(dir);
        if (fd == -EWOULDBLOCK)
            return ierr_set(err, -EBUSY, "%s: another inflash-pack or inflash-calibrate is writing this store", dir);
        if (fd < 0)
            return ierr_set(err, fd, "%s: %s", dir, strerror(-fd));
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            *lock_fd = fd;
            return 0;
        }
        close(fd);                    /* replaced by a commit meanwhile: lock the new one */
    }
    return ierr_set(err, -EBUSY, "%s: keeps being replaced by another writer", dir);
}

/* ---- life cycle -------------------------------------------------------------- */

int storeu_open(const char *dir, storeu **out, ierr *err)
{
    *out = NULL;
    storeu *u = calloc(1, sizeof *u);
    if (!u)
        return ierr_set(err, -ENOMEM, "%s: out of memory", dir);
    u->tmp_lock = u->store_lock = -1;
    int rc = 0;
    char pid[32];
    snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
    /* the real directory, so that a symlink to a store keeps pointing at
       the updated store and the temporary one is made beside the real one */
    if (!(u->dir = realpath(dir, NULL))) {
        int e = errno;
        rc = ierr_set(err, -e, "%s: %s%s", dir, strerror(e), e == ENOENT ? " (not an inflash store?)" : "");
        goto fail;
    }
    if (!(u->tmp_dir = str_cat(u->dir, pid))) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if ((rc = storeu_lock_store(u->dir, &u->store_lock, err)) || (rc = store_open(u->dir, &u->st, err)))
        goto fail;
    int64_t L = store_hparams(u->st)->n_layers;
    u->freq = calloc((size_t)L, sizeof *u->freq);
    u->slot_of = calloc((size_t)L, sizeof *u->slot_of);
    if (!u->freq || !u->slot_of) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", dir);
        goto fail;
    }
    const char *hook = getenv("INFLASH_STOREU_FAIL_AT");
    for (int s = STOREU_STEP_DENSE; hook && s < STOREU_STEP_COUNT; s++)
        if (strcmp(hook, step_names[s]) == 0)
            u->fail_at = (storeu_step)s;
    *out = u;
    return 0;
fail:
    storeu_free(u);
    return rc;
}

const store *storeu_store(const storeu *u) { return u->st; }

void storeu_fail_at(storeu *u, storeu_step step) { u->fail_at = step; }

void storeu_free(storeu *u)
{
    if (!u)
        return;
    if (u->made_tmp && !u->committed)
        io_rm_tree(u->tmp_dir);
    if (u->tmp_lock >= 0)
        close(u->tmp_lock);
    if (u->store_lock >= 0)
        close(u->store_lock);
    int64_t L = u->st ? store_hparams(u->st)->n_layers : 0;
    for (int64_t l = 0; l < L; l++) {
        if (u->freq)
            free(u->freq[l]);
        if (u->slot_of)
            free(u->slot_of[l]);
    }
    for (size_t i = 0; i < u->n_meta; i++) {
        free(u->meta[i].key);
        free(u->meta[i].value);
    }
    for (size_t i = 0; i < u->n_puts; i++) {
        free(u->puts[i].name);
        free(u->puts[i].data);
    }
    store_close(u->st);
    free(u->freq);
    free(u->slot_of);
    free(u->meta);
    free(u->puts);
    free(u->calib);
    free(u->new_off);
    free(u->dir);
    free(u->tmp_dir);
    free(u);
}

/* ---- collecting the changes ---------------------------------------------------- */

/* Grow an array by one element (doubling); NULL if out of memory. */
static void *grow(void **arr, size_t n, size_t *cap, size_t size)
{
    if (n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        void *p = realloc(*arr, c * size);
        if (!p)
            return NULL;
        *arr = p;
        *cap = c;
    }
    return (char *)*arr + n * size;
}

int storeu_set_meta(storeu *u, const char *key, const char *value, ierr *err)
{
    static const char *const own[] = { "dense_bytes", "ffn_bytes", "magic", "format_version" };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (strcmp(key, own[i]) == 0)
            return ierr_set(err, -EINVAL, "%s: meta \"%s\" is kept by the store itself", u->dir, key);
    char *v = strdup(value);
    if (!v)
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    for (size_t i = 0; i < u->n_meta; i++)
        if (strcmp(u->meta[i].key, key) == 0) {
            free(u->meta[i].value);
            u->meta[i].value = v;
            return 0;
        }
    kv *e = grow((void **)&u->meta, u->n_meta, &u->cap_meta, sizeof *e);
    if (!e || !(e->key = strdup(key))) {
        free(v);
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    }
    e->value = v;
    u->n_meta++;
    return 0;
}

int storeu_put_tensor_f32(storeu *u, const char *name, int ndim, const int64_t *shape, const float *data,
                          ierr *err)
{
    if (!*name || ndim < 0 || ndim > STORE_MAX_DIMS)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": bad name or %d dims", u->dir, name, ndim);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || shape[i] >= (int64_t)1 << 40 ||
            __builtin_mul_overflow(numel, (uint64_t)shape[i], &numel) || numel > SIZE_MAX / 8)
            return ierr_set(err, -EINVAL, "%s: tensor \"%s\": bad dim %" PRId64, u->dir, name, shape[i]);
    }
    put_tensor t = { .ndim = ndim, .bytes = (size_t)numel * 4 };
    memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
    t.name = strdup(name);
    t.data = malloc(t.bytes ? t.bytes : 1);
    if (!t.name || !t.data) {
        free(t.name);
        free(t.data);
        return ierr_set(err, -ENOMEM, "%s: tensor \"%s\": out of memory", u->dir, name);
    }
    fmt_from_f32(FMT_F32, data, t.data, (size_t)numel);
    t.xxh64 = XXH64(t.data, t.bytes, 0);
    for (size_t i = 0; i < u->n_puts; i++)
        if (strcmp(u->puts[i].name, name) == 0) {
            free(u->puts[i].name);
            free(u->puts[i].data);
            u->puts[i] = t;
            return 0;
        }
    put_tensor *e = grow((void **)&u->puts, u->n_puts, &u->cap_puts, sizeof *e);
    if (!e) {
        free(t.name);
        free(t.data);
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    }
    *e = t;
    u->n_puts++;
    return 0;
}

int storeu_set_calib(storeu *u, const store_calib *rows, ierr *err)
{
    size_t L = (size_t)store_hparams(u->st)->n_layers;
    if (!u->calib && !(u->calib = malloc(L * sizeof *u->calib)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    memcpy(u->calib, rows, L * sizeof *rows);
    return 0;
}

/* a copy of n values of size `size` for layer l of *tab (freq or slots) */
static int set_layer_array(storeu *u, void **tab, int64_t layer, const void *src, size_t size, ierr *err)
{
    const store_layer *L = store_layer_at(u->st, layer);
    size_t n = (size_t)L->n_neurons;
    if (!tab[layer] && !(tab[layer] = malloc(n * size)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    memcpy(tab[layer], src, n * size);
    return 0;
}

int storeu_set_freq(storeu *u, int64_t layer, const double *freq, ierr *err)
{
    const store_layer *L = store_layer_at(u->st, layer);
    if (!L)
        return ierr_set(err, -EINVAL, "%s: no layer %" PRId64, u->dir, layer);
    for (int64_t j = 0; j < L->n_neurons; j++)
        if (!(freq[j] >= 0.0 && isfinite(freq[j])))
            return ierr_set(err, -EINVAL, "%s: layer %" PRId64 " neuron %" PRId64 ": bad frequency %g", u->dir,
                            layer, j, freq[j]);
    return set_layer_array(u, (void **)u->freq, layer, freq, sizeof *freq, err);
}

int storeu_set_slots(storeu *u, int64_t layer, const int64_t *slot_of, ierr *err)
{
    const store_layer *L = store_layer_at(u->st, layer);
    if (!L)
        return ierr_set(err, -EINVAL, "%s: no layer %" PRId64, u->dir, layer);
    int64_t n = L->n_neurons;
    unsigned char *seen = calloc((size_t)n, 1);
    if (!seen)
        return ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
    int rc = 0;
    for (int64_t j = 0; j < n && !rc; j++) {
        if (slot_of[j] < 0 || slot_of[j] >= n || seen[slot_of[j]])
            rc = ierr_set(err, -EINVAL, "%s: layer %" PRId64 ": the new slots are not a permutation (neuron %" PRId64
                          " -> slot %" PRId64 ")", u->dir, layer, j, slot_of[j]);
        else
            seen[slot_of[j]] = 1;
    }
    free(seen);
    return rc ? rc : set_layer_array(u, (void **)u->slot_of, layer, slot_of, sizeof *slot_of, err);
}

/* ---- the reorder permutation ------------------------------------------------- */

typedef struct { double f; int64_t id; } freq_id;

static int by_freq_desc(const void *a, const void *b)
{
    const freq_id *x = a, *y = b;
    double fx = isnan(x->f) ? -INFINITY : x->f, fy = isnan(y->f) ? -INFINITY : y->f;
    if (fx != fy)
        return fx > fy ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void storeu_order_by_freq(const double *freq, int64_t n, int64_t *slot_of)
{
    freq_id *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) {                          /* no memory: keep the id order */
        for (int64_t j = 0; j < n; j++)
            slot_of[j] = j;
        return;
    }
    for (int64_t j = 0; j < n; j++)
        v[j] = (freq_id){ freq[j], j };
    qsort(v, (size_t)n, sizeof *v, by_freq_desc);
    for (int64_t k = 0; k < n; k++)
        slot_of[v[k].id] = k;
    free(v);
}

/* ---- step 1: dense.bin ------------------------------------------------------------ */

static const put_tensor *find_put(const storeu *u, const char *name)
{
    for (size_t i = 0; i < u->n_puts; i++)
        if (strcmp(u->puts[i].name, name) == 0)
            return &u->puts[i];
    return NULL;
}

/* An old tensor is dropped when it is put again, or when the calib table is
 * replaced and it is an old predictor tensor. */
static int dropped(const storeu *u, const char *name)
{
    return find_put(u, name) || (u->calib && strncmp(name, PRED_PREFIX, strlen(PRED_PREFIX)) == 0);
}

typedef struct { uint64_t offset; size_t at; } tensor_pos;   /* at: name-order index */

static int by_offset(const void *a, const void *b)
{
    const tensor_pos *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Copy an old tensor to offset `to` of the new file, checking its xxh64. */
static int copy_tensor(storeu *u, int fd, const char *path, const store_tensor *t, uint64_t to,
                       unsigned char *buf, ierr *err)
{
    XXH64_state_t *h = XXH64_createState();
    int rc = h ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    if (h)
        XXH64_reset(h, 0);
    for (uint64_t done = 0; !rc && done < t->bytes;) {
        size_t k = t->bytes - done < COPY_BYTES ? (size_t)(t->bytes - done) : COPY_BYTES;
        if (!(rc = store_read_dense(u->st, t->offset + done, buf, k, err)) &&
            !(rc = io_pwrite_full(fd, buf, k, to + done, path, err)))
            XXH64_update(h, buf, k);
        done += k;
    }
    if (!rc && XXH64_digest(h) != t->xxh64)
        rc = ierr_set(err, -EIO, "%s/%s: tensor \"%s\": checksum mismatch (damaged store?)", u->dir,
                      IFL_DENSE_NAME, t->name);
    XXH64_freeState(h);
    return rc;
}

/* Write the header block and fix the size of a new .bin file. */
static int finish_bin(int fd, const char *path, uint32_t kind, uint64_t size, uint64_t count, ierr *err)
{
    unsigned char hdr[IFL_HEADER_BYTES];
    fmt_header h = { IFL_VERSION, kind, size, count };
    fmt_header_encode(&h, hdr);
    int rc = io_pwrite_full(fd, hdr, sizeof hdr, 0, path, err);
    if (!rc && ftruncate(fd, (off_t)size) < 0)
        rc = ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    return rc;
}

static int create_file(const char *path, int *fd, ierr *err)
{
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    return *fd < 0 ? ierr_set(err, -errno, "%s: %s", path, strerror(errno)) : 0;
}

/* The kept old tensors in their old order (holes closed up, 64-byte
 * aligned), then the new ones; padding is left as holes (zeros). */
static int step_dense(storeu *u, ierr *err)
{
    size_t n = store_tensor_count(u->st);
    char *path = io_join(u->tmp_dir, IFL_DENSE_NAME);
    tensor_pos *ix = malloc((n + 1) * sizeof *ix);
    unsigned char *buf = malloc(COPY_BYTES);
    int fd = -1, rc = 0;
    u->new_off = malloc((n + 1) * sizeof *u->new_off);
    if (!path || !ix || !buf || !u->new_off) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
        goto out;
    }
    if ((rc = create_file(path, &fd, err)))
        goto out;
    for (size_t i = 0; i < n; i++)
        ix[i] = (tensor_pos){ store_tensor_at(u->st, i)->offset, i };
    qsort(ix, n, sizeof *ix, by_offset);
    uint64_t pos = IFL_HEADER_BYTES, count = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const store_tensor *t = store_tensor_at(u->st, ix[i].at);
        if (dropped(u, t->name)) {
            u->new_off[ix[i].at] = UINT64_MAX;
            continue;
        }
        pos = fmt_align_up(pos, IFL_TENSOR_ALIGN);
        u->new_off[ix[i].at] = pos;
        rc = copy_tensor(u, fd, path, t, pos, buf, err);
        pos += t->bytes;
        count++;
    }
    for (size_t i = 0; i < u->n_puts && !rc; i++) {
        put_tensor *t = &u->puts[i];
        pos = fmt_align_up(pos, IFL_TENSOR_ALIGN);
        t->offset = pos;
        rc = io_pwrite_full(fd, t->data, t->bytes, pos, path, err);
        pos += t->bytes;
        count++;
    }
    if (!rc)
        rc = finish_bin(fd, path, IFL_KIND_DENSE, pos, count, err);
    u->dense_bytes = pos;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    free(ix);
    free(buf);
    return rc;
}

/* ---- step 2: ffn.bin ---------------------------------------------------------- */

static const int64_t *new_slots(const storeu *u, int64_t layer)
{
    return u->slot_of[layer] ? u->slot_of[layer] : store_layer_at(u->st, layer)->slot_of;
}

static int slots_change(const storeu *u)
{
    for (int64_t l = 0; l < store_hparams(u->st)->n_layers; l++) {
        const store_layer *L = store_layer_at(u->st, l);
        if (u->slot_of[l] && memcmp(u->slot_of[l], L->slot_of, (size_t)L->n_neurons * sizeof(int64_t)) != 0)
            return 1;
    }
    return 0;
}

/* One layer into the new file in its new slot order: the bundles are
 * gathered into a big buffer (runs of consecutive old slots read at once),
 * checked against their xxh64 and written with one pwrite per buffer. */
static int rewrite_layer(storeu *u, int fd, const char *path, int64_t layer, unsigned char *buf, int64_t cap,
                         int64_t *id_at, ierr *err)
{
    const store_layer *L = store_layer_at(u->st, layer);
    const int64_t *slot_of = new_slots(u, layer), n = L->n_neurons, B = store_bundle_bytes(u->st);
    int rc = 0;
    for (int64_t j = 0; j < n; j++)
        id_at[slot_of[j]] = j;
    for (int64_t s0 = 0; s0 < n && !rc; s0 += cap) {
        int64_t cnt = n - s0 < cap ? n - s0 : cap;
        for (int64_t s = 0; s < cnt && !rc;) {
            int64_t old = L->slot_of[id_at[s0 + s]], run = 1;
            while (s + run < cnt && L->slot_of[id_at[s0 + s + run]] == old + run)
                run++;
            rc = store_read_ffn(u->st, L->offset + (uint64_t)(old * B), buf + s * B, (size_t)(run * B), err);
            s += run;
        }
        for (int64_t s = 0; s < cnt && !rc; s++)
            if (XXH64(buf + s * B, (size_t)B, 0) != L->xxh64[id_at[s0 + s]])
                rc = ierr_set(err, -EIO, "%s/%s: layer %" PRId64 " neuron %" PRId64 ": checksum mismatch (damaged "
                              "store?)", u->dir, IFL_FFN_NAME, layer, id_at[s0 + s]);
        if (!rc)
            rc = io_pwrite_full(fd, buf, (size_t)(cnt * B), L->offset + (uint64_t)(s0 * B), path, err);
    }
    return rc;
}

static int step_ffn(storeu *u, ierr *err)
{
    char *path = io_join(u->tmp_dir, IFL_FFN_NAME), *old = io_join(u->dir, IFL_FFN_NAME);
    const hp_config *hp = store_hparams(u->st);
    int64_t B = store_bundle_bytes(u->st), cap = (int64_t)COPY_BYTES / B > 0 ? (int64_t)COPY_BYTES / B : 1;
    unsigned char *buf = NULL;
    int64_t *id_at = NULL;
    int fd = -1, rc = 0;
    if (!path || !old) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
        goto out;
    }
    /* unchanged slots: the same bytes, so share the file (a failed link,
       e.g. on a file system without hard links, falls back to a copy) */
    if (!slots_change(u) && link(old, path) == 0)
        goto out;
    if (!(buf = malloc((size_t)(cap * B))) || !(id_at = malloc((size_t)hp->d_ffn * sizeof *id_at))) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", u->dir);
        goto out;
    }
    if ((rc = create_file(path, &fd, err)))
        goto out;
    for (int64_t l = 0; l < hp->n_layers && !rc; l++)
        rc = rewrite_layer(u, fd, path, l, buf, cap, id_at, err);
    if (!rc)
        rc = finish_bin(fd, path, IFL_KIND_FFN, store_ffn_bytes(u->st), (uint64_t)hp->n_layers, err);
out:
    if (fd >= 0)
        close(fd);
    free(path);
    free(old);
    free(buf);
    free(id_at);
    return rc;
}

/* ---- step 3: index.sqlite --------------------------------------------------------- */

typedef struct {
    storeu  *u;
    sqlite3 *db;
    char    *path;
    ierr    *err;
} idx;

static int idx_fail(idx *x, const char *what)
{
    return ierr_set(x->err, -EIO, "%s: %s: %s", x->path, what, sqlite3_errmsg(x->db));
}

static int idx_exec(idx *x, const char *sql)
{
    return sqlite3_exec(x->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : idx_fail(x, sql);
}

/* Run a prepared statement whose parameters are bound; reset it for reuse. */
static int idx_step(idx *x, sqlite3_stmt *st, const char *what)
{
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return r == SQLITE_DONE ? 0 : idx_fail(x, what);
}

static void bind_real_or_null(sqlite3_stmt *st, int i, double v)
{
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

/* The old index into the new directory with sqlite's backup API. */
static int copy_index(idx *x)
{
    char *src_path = io_join(x->u->dir, IFL_INDEX_NAME);
    sqlite3 *src = NULL;
    int rc = 0;
    if (!src_path)
        return ierr_set(x->err, -ENOMEM, "out of memory");
    if (sqlite3_open_v2(src_path, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        rc = ierr_set(x->err, -EIO, "%s: %s", src_path, src ? sqlite3_errmsg(src) : "out of memory");
    } else {
        sqlite3_backup *b = sqlite3_backup_init(x->db, "main", src, "main");
        if (!b || sqlite3_backup_step(b, -1) != SQLITE_DONE)
            rc = ierr_set(x->err, -EIO, "%s: copying %s: %s", x->path, src_path, sqlite3_errmsg(x->db));
        if (b && sqlite3_backup_finish(b) != SQLITE_OK && !rc)
            rc = idx_fail(x, "copying the index");
    }
    sqlite3_close(src);
    free(src_path);
    return rc;
}

static int index_tensors(idx *x)
{
    storeu *u = x->u;
    sqlite3_stmt *del = NULL, *upd = NULL, *ins = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(x->db, "DELETE FROM tensors WHERE name = ?", -1, &del, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(x->db, "UPDATE tensors SET offset = ? WHERE name = ?", -1, &upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(x->db, "INSERT INTO tensors(name, dtype, shape, file, offset, bytes, xxh64) "
                                  "VALUES (?, 'f32', ?, ?, ?, ?, ?)", -1, &ins, NULL) != SQLITE_OK)
        rc = idx_fail(x, "preparing the tensor updates");
    for (size_t i = 0; i < store_tensor_count(u->st) && !rc; i++) {
        const store_tensor *t = store_tensor_at(u->st, i);
        if (u->new_off[i] == UINT64_MAX) {
            sqlite3_bind_text(del, 1, t->name, -1, SQLITE_STATIC);
            rc = idx_step(x, del, "dropping a tensor");
        } else if (u->new_off[i] != t->offset) {
            sqlite3_bind_int64(upd, 1, (int64_t)u->new_off[i]);
            sqlite3_bind_text(upd, 2, t->name, -1, SQLITE_STATIC);
            rc = idx_step(x, upd, "moving a tensor");
        }
    }
    for (size_t i = 0; i < u->n_puts && !rc; i++) {
        const put_tensor *t = &u->puts[i];
        char shape[STORE_MAX_DIMS * 21 + 1] = "";
        for (int k = 0, at = 0; k < t->ndim; k++)
            at += snprintf(shape + at, sizeof shape - (size_t)at, k ? " %" PRId64 : "%" PRId64, t->shape[k]);
        sqlite3_bind_text(ins, 1, t->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, shape, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, IFL_DENSE_NAME, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 4, (int64_t)t->offset);
        sqlite3_bind_int64(ins, 5, (int64_t)t->bytes);
        sqlite3_bind_int64(ins, 6, u64_as_i64(t->xxh64));
        rc = idx_step(x, ins, "adding a tensor");
    }
    sqlite3_finalize(del);
    sqlite3_finalize(upd);
    sqlite3_finalize(ins);
    return rc;
}

static int index_neurons(idx *x)
{
    storeu *u = x->u;
    const hp_config *hp = store_hparams(u->st);
    int64_t B = store_bundle_bytes(u->st);
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(x->db, "UPDATE neurons SET slot = ?, offset = ?, freq = ? WHERE layer = ? AND id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        rc = idx_fail(x, "preparing the neuron updates");
    for (int64_t l = 0; l < hp->n_layers && !rc; l++) {
        const store_layer *L = store_layer_at(u->st, l);
        if (!u->freq[l] && !u->slot_of[l])
            continue;
        const int64_t *slot_of = new_slots(u, l);
        const double *freq = u->freq[l] ? u->freq[l] : L->freq;
        for (int64_t j = 0; j < L->n_neurons && !rc; j++) {
            sqlite3_bind_int64(st, 1, slot_of[j]);
            sqlite3_bind_int64(st, 2, (int64_t)(L->offset + (uint64_t)(slot_of[j] * B)));
            bind_real_or_null(st, 3, freq[j]);
            sqlite3_bind_int64(st, 4, l);
            sqlite3_bind_int64(st, 5, j);
            rc = idx_step(x, st, "updating a neuron");
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int index_calib(idx *x)
{
    storeu *u = x->u;
    sqlite3_stmt *st = NULL;
    int rc = 0;
    if (!u->calib)
        return 0;
    if ((rc = idx_exec(x, "CREATE TABLE IF NOT EXISTS calib(layer INTEGER PRIMARY KEY, rank INTEGER NOT NULL,"
                          " threshold REAL NOT NULL, act_threshold REAL NOT NULL, sparsity REAL, recall REAL,"
                          " precision REAL, pred_fraction REAL); DELETE FROM calib;")))
        return rc;
    if (sqlite3_prepare_v2(x->db, "INSERT INTO calib(layer, rank, threshold, act_threshold, sparsity, recall, "
                                  "precision, pred_fraction) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", -1, &st, NULL) !=
        SQLITE_OK)
        rc = idx_fail(x, "preparing the calib rows");
    for (int64_t l = 0; l < store_hparams(u->st)->n_layers && !rc; l++) {
        const store_calib *c = &u->calib[l];
        sqlite3_bind_int64(st, 1, l);
        sqlite3_bind_int64(st, 2, c->rank);
        sqlite3_bind_double(st, 3, c->threshold);
        sqlite3_bind_double(st, 4, c->act_threshold);
        bind_real_or_null(st, 5, c->sparsity);
        bind_real_or_null(st, 6, c->recall);
        bind_real_or_null(st, 7, c->precision);
        bind_real_or_null(st, 8, c->pred_fraction);
        rc = idx_step(x, st, "adding a calib row");
    }
    sqlite3_finalize(st);
    return rc;
}

static int index_meta(idx *x)
{
    storeu *u = x->u;
    sqlite3_stmt *st = NULL;
    char dense[32];
    int rc = 0;
    snprintf(dense, sizeof dense, "%" PRIu64, u->dense_bytes);
    if (sqlite3_prepare_v2(x->db, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", -1, &st, NULL) !=
        SQLITE_OK)
        return idx_fail(x, "preparing the meta updates");
    for (size_t i = 0; i <= u->n_meta && !rc; i++) {
        sqlite3_bind_text(st, 1, i < u->n_meta ? u->meta[i].key : "dense_bytes", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, i < u->n_meta ? u->meta[i].value : dense, -1, SQLITE_STATIC);
        rc = idx_step(x, st, "setting meta");
    }
    sqlite3_finalize(st);
    return rc;
}

static int step_index(storeu *u, ierr *err)
{
    idx x = { .u = u, .err = err, .path = io_join(u->tmp_dir, IFL_INDEX_NAME) };
    int rc = 0;
    if (!x.path)
        return ierr_set(err, -ENOMEM, "out of memory");
    if (sqlite3_open_v2(x.path, &x.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        rc = ierr_set(err, -EIO, "%s: cannot create: %s", x.path, x.db ? sqlite3_errmsg(x.db) : "out of memory");
    if (!rc && !(rc = copy_index(&x)) && !(rc = idx_exec(&x, "PRAGMA journal_mode=MEMORY; BEGIN")) &&
        !(rc = index_tensors(&x)) && !(rc = index_neurons(&x)) && !(rc = index_calib(&x)) &&
        !(rc = index_meta(&x)))
        rc = idx_exec(&x, "COMMIT");
    if (x.db && sqlite3_close(x.db) != SQLITE_OK && !rc)
        rc = ierr_set(err, -EIO, "%s: close: %s", x.path, sqlite3_errmsg(x.db));
    free(x.path);
    return rc;
}

/* ---- steps 4-6: sync, verify, exchange ----------------------------------------------- */

static int step_sync(storeu *u, ierr *err)
{
    static const char *const names[] = { IFL_DENSE_NAME, IFL_FFN_NAME, IFL_INDEX_NAME };
    int rc = 0;
    for (size_t i = 0; i < 3 && !rc; i++) {
        char *p = io_join(u->tmp_dir, names[i]);
        rc = p ? io_fsync_path(p, O_RDONLY, err) : ierr_set(err, -ENOMEM, "out of memory");
        free(p);
    }
    return rc ? rc : io_fsync_path(u->tmp_dir, O_RDONLY | O_DIRECTORY, err);
}

static int step_verify(storeu *u, ierr *err)
{
    store *s;
    int rc = store_open(u->tmp_dir, &s, err);
    if (rc)
        return ierr_wrap(err, rc, "%s: the updated store does not verify", u->dir);
    store_close(s);
    return 0;
}

static int step_exchange(storeu *u, ierr *err)
{
    int rc = io_swap_dir(u->tmp_dir, u->dir, err);
    if (rc == 0)
        u->committed = 1;
    return rc;
}

int storeu_commit(storeu *u, ierr *err)
{
    typedef int (*step_fn)(storeu *, ierr *);
    static const step_fn steps[STOREU_STEP_COUNT] = {
        NULL, step_dense, step_ffn, step_index, step_sync, step_verify, step_exchange,
    };
    if (u->tried)
        return ierr_set(err, -EINVAL, "%s: update already committed or failed", u->dir);
    u->tried = 1;
    int rc = storeu_make_tmp(u->dir, u->tmp_dir, &u->tmp_lock, err);
    if (rc)
        return rc;
    u->made_tmp = 1;
    for (int s = STOREU_STEP_DENSE; s < STOREU_STEP_COUNT && !rc; s++) {
        if (u->fail_at == (storeu_step)s)
            rc = ierr_set(err, -EIO, "%s: update failed at step \"%s\" (test hook INFLASH_STOREU_FAIL_AT)", u->dir,
                          step_names[s]);
        else
            rc = steps[s](u, err);
    }
    return rc;
}
