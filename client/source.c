/* source.c: the client's weight source (source.h), either an inflashfs mount
 * read with pread on its virtual files, or a store directory read through
 * layout/store.h. Both hand out the same bytes in neuron-id order. */
#include "source.h"
#include "tok.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "store.h"

struct source {
    /* Everything is set by the constructor and immutable afterwards, so all
     * calls may run concurrently (pread and store reads are thread-safe). */
    hp_config hp;
    fmt_dtype dtype;
    int64_t   bundle_bytes;
    char     *root;           /* mount point or store dir; owned */
    /* mount: */
    int      *ffn_fd;         /* [n_layers] fds of layers/NN/ffn; owned; NULL for a store */
    int      *slots_fd;       /* [n_layers] fds of layers/NN/ffn.slots; owned; NULL: none */
    int64_t  *slot_ids;       /* [n_layers][d_ffn] neuron id of each slot (neurons.tsv); owned */
    store_calib *calib;       /* [n_layers] from config.json; owned; NULL if uncalibrated */
    char     *criterion;      /* "inflash_calib_criterion"; owned; NULL if absent */
    /* store: */
    store    *st;             /* owned; NULL for a mount */
    /* mapped store (source_open_store_mapped), else NULL / 0: */
    const unsigned char *dense_map;   /* dense.bin, PROT_READ; owned (munmap) */
    size_t               dense_len;
    const unsigned char *ffn_map;     /* ffn.bin, PROT_READ; owned (munmap) */
    size_t               ffn_len;
};

/* pread exactly len bytes at off from fd; what names the file in errors. */
static int pread_full(int fd, void *dst, size_t len, uint64_t off, const char *what, ierr *err)
{
    unsigned char *p = dst;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, p + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            return ierr_set(err, -e, "%s: read error at offset %llu: %s", what,
                            (unsigned long long)(off + done), strerror(e));
        }
        if (r == 0)
            return ierr_set(err, -EIO, "%s: short read at offset %llu (%zu of %zu bytes)", what,
                            (unsigned long long)(off + done), done, len);
        done += (size_t)r;
    }
    return 0;
}

/* Read a whole file under the mount into a malloc'd buffer (NUL-terminated). */
static int read_whole(const char *path, char **data, size_t *len, ierr *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return ierr_set(err, -e, "%s: %s", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ierr_set(err, -EINVAL, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return ierr_set(err, -ENOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    int rc = pread_full(fd, buf, n, 0, path, err);
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

static char *path_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p)
        return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

static source *source_alloc(const char *root)
{
    source *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->root = strdup(root);
    if (!s->root) {
        free(s);
        return NULL;
    }
    return s;
}

/* The calibration in the mount's config.json, if any. */
static int mount_calib(source *s, const char *cfg, size_t len, const char *what, ierr *err)
{
    store_calib *c = calloc((size_t)s->hp.n_layers, sizeof *c);
    if (!c)
        return ierr_set(err, -ENOMEM, "%s: out of memory", what);
    int present = 0;
    int rc = store_parse_mount_calib(cfg, len, what, &s->hp, c, &present, err);
    if (rc || !present) {
        free(c);
        return rc;
    }
    s->calib = c;
    json_t *root = json_loadb(cfg, len, 0, NULL);
    json_t *crit = root ? json_object_get(root, "inflash_calib_criterion") : NULL;
    if (crit && json_is_string(crit) && !(s->criterion = strdup(json_string_value(crit))))
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", what);
    json_decref(root);
    return rc;
}

/* The slot-order view of a mount: layers/NN/ffn.slots and the slot -> id
 * map from layers/NN/neurons.tsv ("id<TAB>slot<TAB>freq" lines). A mount
 * without ffn.slots (an older daemon) simply has no such view. */
static int mount_slots(source *s, ierr *err)
{
    int64_t L = s->hp.n_layers, F = s->hp.d_ffn;
    char rel[64], *p = NULL, *tsv = NULL;
    size_t len;
    int rc = 0;
    snprintf(rel, sizeof rel, "layers/00/ffn.slots");
    p = path_join(s->root, rel);
    if (!p)
        return ierr_set(err, -ENOMEM, "%s: out of memory", s->root);
    int missing = access(p, F_OK) != 0;
    free(p);
    if (missing)
        return 0;
    s->slots_fd = malloc((size_t)L * sizeof *s->slots_fd);
    s->slot_ids = malloc((size_t)(L * F) * sizeof *s->slot_ids);
    if (!s->slots_fd || !s->slot_ids)
        return ierr_set(err, -ENOMEM, "%s: out of memory", s->root);
    for (int64_t l = 0; l < L; l++)
        s->slots_fd[l] = -1;
    for (int64_t l = 0; rc == 0 && l < L; l++) {
        snprintf(rel, sizeof rel, "layers/%02lld/ffn.slots", (long long)l);
        p = path_join(s->root, rel);
        if (!p)
            return ierr_set(err, -ENOMEM, "%s: out of memory", s->root);
        s->slots_fd[l] = open(p, O_RDONLY | O_CLOEXEC);
        if (s->slots_fd[l] < 0)
            rc = ierr_set(err, -errno, "%s: %s", p, strerror(errno));
        free(p);
        snprintf(rel, sizeof rel, "layers/%02lld/neurons.tsv", (long long)l);
        p = path_join(s->root, rel);
        if (rc == 0 && !p)
            rc = ierr_set(err, -ENOMEM, "%s: out of memory", s->root);
        if (rc == 0)
            rc = read_whole(p, &tsv, &len, err);
        int64_t *ids = s->slot_ids + l * F, seen = 0;
        for (int64_t k = 0; rc == 0 && k < F; k++)
            ids[k] = -1;
        for (char *line = tsv; rc == 0 && line && *line; seen++) {
            long long id, slot;
            if (sscanf(line, "%lld\t%lld", &id, &slot) != 2 || id < 0 || id >= F || slot < 0 || slot >= F ||
                ids[slot] >= 0)
                rc = ierr_set(err, -EINVAL, "%s: line %lld: not an \"id slot freq\" line of a permutation", p,
                              (long long)seen + 1);
            else
                ids[slot] = id;
            line = strchr(line, '\n');
            if (line)
                line++;
        }
        if (rc == 0 && seen != F)
            rc = ierr_set(err, -EINVAL, "%s: %lld neurons, expected %lld", p, (long long)seen, (long long)F);
        free(tsv);
        tsv = NULL;
        free(p);
    }
    return rc;
}

/* [off, off+len) inside the layer's neuron file? 0 or -EINVAL with err set. */
static int check_range(const source *s, int64_t layer, uint64_t off, size_t len, ierr *err)
{
    uint64_t total = (uint64_t)s->hp.d_ffn * (uint64_t)s->bundle_bytes;
    if (off > total || len > total - off)
        return ierr_set(err, -EINVAL, "%s: layer %lld: read [%llu, +%zu) beyond the %llu-byte neuron file", s->root,
                        (long long)layer, (unsigned long long)off, len, (unsigned long long)total);
    return 0;
}

int source_ffn_slots(const source *s, int64_t layer, const int64_t **id_of)
{
    if (layer < 0 || layer >= s->hp.n_layers)
        return -EINVAL;
    if (s->st) {
        *id_of = store_layer_at(s->st, layer)->id_of;
        return 0;
    }
    if (!s->slot_ids)
        return -ENOTSUP;
    *id_of = s->slot_ids + layer * s->hp.d_ffn;
    return 0;
}

int source_read_ffn_slots(source *s, int64_t layer, uint64_t off, void *dst, size_t len, ierr *err)
{
    const int64_t *ids;
    if (source_ffn_slots(s, layer, &ids) != 0)
        return ierr_set(err, -ENOTSUP, "%s: layer %lld: no slot-order neuron file", s->root, (long long)layer);
    int rc = check_range(s, layer, off, len, err);
    if (rc)
        return rc;
    if (s->st)
        return store_read_ffn(s->st, store_layer_at(s->st, layer)->offset + off, dst, len, err);
    char what[64 + 4096];
    snprintf(what, sizeof what, "%s/layers/%02lld/ffn.slots", s->root, (long long)layer);
    return pread_full(s->slots_fd[layer], dst, len, off, what, err);
}

int source_open_mount(const char *mountpoint, source **out, ierr *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(mountpoint, &sb) != 0) {
        int e = errno;
        return ierr_set(err, -e, "%s: %s", mountpoint, strerror(e));
    }
    if (!S_ISDIR(sb.st_mode))
        return ierr_set(err, -ENOTDIR, "%s: not an inflash mount (not a directory)", mountpoint);
    source *s = source_alloc(mountpoint);
    if (!s)
        return ierr_set(err, -ENOMEM, "%s: out of memory", mountpoint);
    char *cfg_path = path_join(mountpoint, "config.json");
    char *cfg = NULL;
    size_t cfg_len = 0;
    int rc;
    if (!cfg_path) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", mountpoint);
        goto fail;
    }
    if (access(cfg_path, F_OK) != 0) {
        rc = ierr_set(err, -ENOENT, "%s: not an inflash mount (no config.json)", mountpoint);
        goto fail;
    }
    rc = read_whole(cfg_path, &cfg, &cfg_len, err);
    if (rc)
        goto fail;
    rc = store_parse_mount_config(cfg, cfg_len, cfg_path, &s->hp, &s->dtype, &s->bundle_bytes, err);
    if (rc) {
        ierr_wrap(err, rc, "%s: not an inflash mount", mountpoint);
        goto fail;
    }
    if (s->bundle_bytes != hp_bundle_bytes(&s->hp, s->dtype)) {
        rc = ierr_set(err, -EINVAL, "%s: inflash_bundle_bytes %lld does not match the model (%lld)", cfg_path,
                      (long long)s->bundle_bytes, (long long)hp_bundle_bytes(&s->hp, s->dtype));
        goto fail;
    }
    rc = mount_calib(s, cfg, cfg_len, cfg_path, err);
    if (rc)
        goto fail;
    s->ffn_fd = malloc((size_t)s->hp.n_layers * sizeof *s->ffn_fd);
    if (!s->ffn_fd) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", mountpoint);
        goto fail;
    }
    for (int64_t l = 0; l < s->hp.n_layers; l++)
        s->ffn_fd[l] = -1;
    for (int64_t l = 0; l < s->hp.n_layers; l++) {
        char rel[64];
        snprintf(rel, sizeof rel, "layers/%02lld/ffn", (long long)l);
        char *p = path_join(mountpoint, rel);
        if (!p) {
            rc = ierr_set(err, -ENOMEM, "%s: out of memory", mountpoint);
            goto fail;
        }
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            rc = ierr_set(err, -e, "%s: %s", p, strerror(e));
            free(p);
            goto fail;
        }
        s->ffn_fd[l] = fd;
        uint64_t want = (uint64_t)s->hp.d_ffn * (uint64_t)s->bundle_bytes;
        if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != want) {
            rc = ierr_set(err, -EINVAL, "%s: size %lld, expected %llu (%lld neurons of %lld bytes)", p,
                          (long long)sb.st_size, (unsigned long long)want, (long long)s->hp.d_ffn,
                          (long long)s->bundle_bytes);
            free(p);
            goto fail;
        }
        free(p);
    }
    rc = mount_slots(s, err);
    if (rc)
        goto fail;
    free(cfg_path);
    free(cfg);
    *out = s;
    return 0;
fail:
    free(cfg_path);
    free(cfg);
    source_close(s);
    return rc;
}

int source_open_store(const char *dir, source **out, ierr *err)
{
    *out = NULL;
    source *s = source_alloc(dir);
    if (!s)
        return ierr_set(err, -ENOMEM, "%s: out of memory", dir);
    int rc = store_open(dir, &s->st, err);
    if (rc) {
        source_close(s);
        return rc;
    }
    s->hp = *store_hparams(s->st);
    s->dtype = store_dtype(s->st);
    s->bundle_bytes = store_bundle_bytes(s->st);
    *out = s;
    return 0;
}

/* Map dir/name read-only into *map, *len (the whole file). */
static int map_file(const char *dir, const char *name, const unsigned char **map, size_t *len, ierr *err)
{
    char *p = path_join(dir, name);
    if (!p)
        return ierr_set(err, -ENOMEM, "%s: out of memory", dir);
    int rc = 0, fd = open(p, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = ierr_set(err, -errno, "%s: %s", p, strerror(errno));
    } else if (sb.st_size <= 0) {
        rc = ierr_set(err, -EINVAL, "%s: empty file", p);
    } else {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            rc = ierr_set(err, -errno, "%s: mmap: %s", p, strerror(errno));
        } else {
            *map = m;
            *len = (size_t)sb.st_size;
        }
    }
    if (fd >= 0)
        close(fd);
    free(p);
    return rc;
}

int source_open_store_mapped(const char *dir, source **out, ierr *err)
{
    int rc = source_open_store(dir, out, err);
    if (rc == 0)
        rc = map_file(dir, "dense.bin", &(*out)->dense_map, &(*out)->dense_len, err);
    if (rc == 0)
        rc = map_file(dir, "ffn.bin", &(*out)->ffn_map, &(*out)->ffn_len, err);
    if (rc) {
        source_close(*out);
        *out = NULL;
    }
    return rc;
}

const void *source_tensor_map(source *s, const char *name, int64_t numel)
{
    if (!s->dense_map)
        return NULL;
    const store_tensor *t = store_tensor_find(s->st, name);
    /* store_open checked every tensor's extent against dense.bin */
    if (!t || t->dtype != s->dtype || numel < 0 || t->bytes != fmt_bytes(t->dtype, (uint64_t)numel) ||
        t->offset + t->bytes > s->dense_len)
        return NULL;
    return s->dense_map + t->offset;
}

const void *source_ffn_map(source *s, int64_t layer, const int64_t **id_of)
{
    const store_layer *L = s->ffn_map ? store_layer_at(s->st, layer) : NULL;
    if (!L || L->offset + L->bytes > s->ffn_len)
        return NULL;
    *id_of = L->id_of;
    return s->ffn_map + L->offset;
}

void source_close(source *s)
{
    if (!s)
        return;
    if (s->dense_map)
        munmap((void *)s->dense_map, s->dense_len);
    if (s->ffn_map)
        munmap((void *)s->ffn_map, s->ffn_len);
    int *fds[] = {s->ffn_fd, s->slots_fd};
    for (size_t i = 0; i < 2; i++) {
        for (int64_t l = 0; fds[i] && l < s->hp.n_layers; l++)
            if (fds[i][l] >= 0)
                close(fds[i][l]);
        free(fds[i]);
    }
    free(s->slot_ids);
    store_close(s->st);
    free(s->calib);
    free(s->criterion);
    free(s->root);
    free(s);
}

const hp_config *source_hparams(const source *s) { return &s->hp; }
fmt_dtype source_dtype(const source *s) { return s->dtype; }
int64_t source_bundle_bytes(const source *s) { return s->bundle_bytes; }

int source_tokfile(source *s, const char *name, char **data, size_t *len, ierr *err)
{
    *data = NULL;
    *len = 0;
    if (s->st) {
        const void *d;
        size_t n;
        if (store_tokfile_find(s->st, name, &d, &n) != 0)
            return ierr_set(err, -ENOENT, "%s: no tokenizer file %s", s->root, name);
        char *buf = malloc(n + 1);
        if (!buf)
            return ierr_set(err, -ENOMEM, "%s: out of memory", name);
        memcpy(buf, d, n);
        buf[n] = '\0';
        *data = buf;
        *len = n;
        return 0;
    }
    char *p = path_join(s->root, name);
    if (!p)
        return ierr_set(err, -ENOMEM, "%s: out of memory", name);
    int rc;
    if (access(p, F_OK) != 0)
        rc = ierr_set(err, -ENOENT, "%s: no tokenizer file %s", s->root, name);
    else
        rc = read_whole(p, data, len, err);
    free(p);
    return rc;
}

int source_calib(const source *s, int64_t layer, store_calib *out, ierr *err)
{
    if (layer < 0 || layer >= s->hp.n_layers)
        return ierr_set(err, -EINVAL, "%s: no layer %lld", s->root, (long long)layer);
    const store_calib *c = s->st ? store_calib_at(s->st, layer) : s->calib ? &s->calib[layer] : NULL;
    if (!c)
        return ierr_set(err, -ENOENT, "%s: the model is not calibrated (run inflash-calibrate on the store)",
                        s->root);
    *out = *c;
    return 0;
}

const char *source_calib_criterion(const source *s)
{
    if (s->st)
        return store_calib_at(s->st, 0) ? store_meta(s->st, "calib_criterion") : NULL;
    return s->calib ? s->criterion : NULL;
}

/* "tensors/<name>" under the mount; NULL on a name that could escape it. */
static char *tensor_path(const source *s, const char *name)
{
    if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return NULL;
    size_t n = strlen(s->root) + strlen(name) + sizeof "/tensors/";
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/tensors/%s", s->root, name);
    return p;
}

int source_has_tensor(source *s, const char *name)
{
    if (s->st)
        return store_tensor_find(s->st, name) != NULL;
    char *p = tensor_path(s, name);
    if (!p)
        return 0;
    int ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

fmt_dtype source_tensor_dtype(const source *s, const char *name, int ndim)
{
    return fmt_tensor_dtype(s->dtype, name, ndim);
}

int source_tensor_f32(source *s, const char *name, int ndim, float *dst, int64_t numel, ierr *err)
{
    return source_tensor(s, name, ndim, FMT_F32, dst, numel, err);
}

int source_tensor(source *s, const char *name, int ndim, fmt_dtype want, void *dst, int64_t numel, ierr *err)
{
    fmt_dtype dt = source_tensor_dtype(s, name, ndim);
    if (want != FMT_F32 && want != dt)
        return ierr_set(err, -EINVAL, "%s: tensor %s is %s, not %s", s->root, name, fmt_dtype_name(dt),
                        fmt_dtype_name(want));
    if (s->st) {
        const store_tensor *t = store_tensor_find(s->st, name);
        if (!t)
            return ierr_set(err, -ENOENT, "%s: missing tensor %s", s->root, name);
        int64_t n = 1;
        for (int i = 0; i < t->ndim; i++)
            n *= t->shape[i];
        if (n != numel)
            return ierr_set(err, -EINVAL, "%s: tensor %s has %lld elements, the model needs %lld", s->root, name,
                            (long long)n, (long long)numel);
        if (want == FMT_F32)   /* whatever its dtype (store_open checked it) */
            return store_read_tensor_f32(s->st, t, dst, err);
        if (t->dtype != want)
            return ierr_set(err, -EINVAL, "%s: tensor %s is %s, not %s", s->root, name, fmt_dtype_name(t->dtype),
                            fmt_dtype_name(want));
        return store_read_dense(s->st, t->offset, dst, (size_t)t->bytes, err);
    }
    char *p = tensor_path(s, name);
    if (!p)
        return ierr_set(err, -EINVAL, "%s: bad tensor name %s", s->root, name);
    int rc = 0;
    void *raw = NULL;
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        rc = e == ENOENT ? ierr_set(err, -e, "%s: missing tensor %s", s->root, name)
                         : ierr_set(err, -e, "%s: %s", p, strerror(e));
        goto out;
    }
    struct stat sb;
    uint64_t want_bytes = numel < 0 ? UINT64_MAX : fmt_bytes(dt, (uint64_t)numel);
    if (want_bytes == UINT64_MAX) {   /* a quantized row that is not whole blocks */
        rc = ierr_set(err, -EINVAL, "%s: %lld %s values are not whole blocks", p, (long long)numel,
                      fmt_dtype_name(dt));
        goto out;
    }
    if (fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != want_bytes) {
        rc = ierr_set(err, -EINVAL, "%s: %lld bytes, the model needs %lld %s elements (%llu bytes)", p,
                      (long long)sb.st_size, (long long)numel, fmt_dtype_name(dt), (unsigned long long)want_bytes);
        goto out;
    }
    if (want == dt && dt != FMT_F32) {   /* raw: straight into dst */
        rc = pread_full(fd, dst, (size_t)want_bytes, 0, p, err);
        goto out;
    }
    raw = malloc((size_t)want_bytes);
    if (!raw) {
        rc = ierr_set(err, -ENOMEM, "%s: out of memory (%llu bytes)", p, (unsigned long long)want_bytes);
        goto out;
    }
    rc = pread_full(fd, raw, (size_t)want_bytes, 0, p, err);
    if (rc == 0)
        fmt_to_f32(dt, raw, dst, (size_t)numel);
out:
    if (fd >= 0)
        close(fd);
    free(raw);
    free(p);
    return rc;
}

/* Store: bytes in neuron-id order are mapped through the layer's slot
 * permutation; runs of neurons in consecutive slots become one read. */
static int store_read_ffn_ids(source *s, int64_t layer, uint64_t off, unsigned char *dst, size_t len, ierr *err)
{
    const store_layer *L = store_layer_at(s->st, layer);
    uint64_t B = (uint64_t)s->bundle_bytes;
    while (len > 0) {
        int64_t j = (int64_t)(off / B);
        uint64_t within = off % B;
        int64_t slot = L->slot_of[j];
        /* extend the run while the next neuron sits in the next slot */
        uint64_t run = B - within;
        int64_t k = j + 1;
        while (run < len && k < L->n_neurons && L->slot_of[k] == slot + (k - j)) {
            run += B;
            k++;
        }
        if (run > len)
            run = len;
        int rc = store_read_ffn(s->st, L->offset + (uint64_t)slot * B + within, dst, (size_t)run, err);
        if (rc)
            return rc;
        dst += run;
        off += run;
        len -= (size_t)run;
    }
    return 0;
}

int source_read_ffn(source *s, int64_t layer, uint64_t off, void *dst, size_t len, ierr *err)
{
    if (layer < 0 || layer >= s->hp.n_layers)
        return ierr_set(err, -EINVAL, "%s: no layer %lld", s->root, (long long)layer);
    int rc = check_range(s, layer, off, len, err);
    if (rc)
        return rc;
    if (s->st)
        return store_read_ffn_ids(s, layer, off, dst, len, err);
    char what[128 + 4096];
    uint64_t B = (uint64_t)s->bundle_bytes;
    snprintf(what, sizeof what, "%s/layers/%02lld/ffn (neurons %llu..%llu)", s->root, (long long)layer,
             (unsigned long long)(off / B), (unsigned long long)((off + (len ? len : 1) - 1) / B));
    return pread_full(s->ffn_fd[layer], dst, len, off, what, err);
}

static int source_tok_file(void *ctx, const char *name, char **data, size_t *len, ierr *err)
{
    return source_tokfile(ctx, name, data, len, err);
}

/* The model's tokenizer as the source serves it (tok_new_files). */
int source_tok(source *src, tok **out, ierr *err)
{
    return tok_new_files(source_tok_file, src, out, err);
}
