/* safetensors.c: checked reader of Hugging Face .safetensors files and
 * sharded sets. Nothing in a header is trusted before it is checked against
 * the file size; tensor data is read with pread on demand. */
#include "safetensors.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20)

struct st_set {
    /* all owned; files[i] is shard i */
    char     **paths;
    int       *fds;
    int        nfiles;
    st_tensor *t;          /* sorted by name (st_find bisects) */
    size_t     n, cap;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static st_set *set_new(void)
{
    return calloc(1, sizeof(st_set));
}

void st_close(st_set *set)
{
    if (!set)
        return;
    for (int i = 0; i < set->nfiles; i++) {
        free(set->paths[i]);
        if (set->fds[i] >= 0)
            close(set->fds[i]);
    }
    for (size_t i = 0; i < set->n; i++)
        free(set->t[i].name);
    free(set->paths);
    free(set->fds);
    free(set->t);
    free(set);
}

size_t st_count(const st_set *set) { return set->n; }
const st_tensor *st_at(const st_set *set, size_t i) { return i < set->n ? &set->t[i] : NULL; }

/* bisect the first n tensors (sorted by name) */
static const st_tensor *find_in(const st_set *set, size_t n, const char *name)
{
    st_tensor key = { .name = (char *)name };
    return n ? bsearch(&key, set->t, n, sizeof key, by_name) : NULL;
}

const st_tensor *st_find(const st_set *set, const char *name) { return find_in(set, set->n, name); }

int64_t st_numel(const st_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ---- header parsing ------------------------------------------------------ */

static int parse_dtype(const char *s, fmt_dtype *t)
{
    if (strcmp(s, "F32") == 0) *t = FMT_F32;
    else if (strcmp(s, "F16") == 0) *t = FMT_F16;
    else if (strcmp(s, "BF16") == 0) *t = FMT_BF16;
    else return -1;
    return 0;
}

/* Fill *t from one header entry (name already set); data_bytes is the size
 * of the data section, data_start its file offset. */
static int parse_entry(json_t *e, st_tensor *t, uint64_t data_start, uint64_t data_bytes, const char *what,
                       ierr *err)
{
    const char *name = t->name;
    json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape");
    json_t *offs = json_object_get(e, "data_offsets");
    if (!json_is_object(e))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": entry is not an object", what, name);
    if (!json_is_string(dt))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": missing dtype", what, name);
    if (parse_dtype(json_string_value(dt), &t->dtype))
        return ierr_set(err, -ENOTSUP, "%s: tensor \"%s\": unsupported dtype \"%s\" (supported: F32, F16, BF16)",
                        what, name, json_string_value(dt));
    if (!json_is_array(shape) || json_array_size(shape) > ST_MAX_DIMS)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": shape must be an array of at most %d dims", what, name,
                        ST_MAX_DIMS);
    int64_t numel = 1;            /* every partial product fits, as st_numel needs */
    int overflow = 0;
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ierr_set(err, -EINVAL, "%s: tensor \"%s\": shape dims must be non-negative integers", what,
                            name);
        t->shape[i] = json_integer_value(d);
        overflow |= __builtin_mul_overflow(numel, t->shape[i], &numel);
    }
    uint64_t want = fmt_bytes(t->dtype, (uint64_t)numel);
    overflow |= want == UINT64_MAX;
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(json_array_get(offs, 0)) ||
        !json_is_integer(json_array_get(offs, 1)))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": data_offsets must be [begin, end]", what, name);
    json_int_t b = json_integer_value(json_array_get(offs, 0)), en = json_integer_value(json_array_get(offs, 1));
    if (b < 0 || en < b)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": bad data_offsets [%lld, %lld]", what, name,
                        (long long)b, (long long)en);
    if ((uint64_t)en > data_bytes)
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": data_offsets [%lld, %lld] past the end of the data "
                        "(%llu bytes)", what, name, (long long)b, (long long)en, (unsigned long long)data_bytes);
    if (overflow || want != (uint64_t)(en - b))
        return ierr_set(err, -EINVAL, "%s: tensor \"%s\": shape and dtype need %s bytes but data_offsets give %lld",
                        what, name, overflow ? "too many" : "a different number of", (long long)(en - b));
    t->offset = data_start + (uint64_t)b;
    t->bytes = (uint64_t)(en - b);
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The tensors [first, n) all live in one file: no two may overlap. */
static int check_overlap(const st_set *set, size_t first, const char *what, ierr *err)
{
    size_t k = 0;
    const st_tensor **ix = malloc((set->n - first + 1) * sizeof *ix);
    if (!ix)
        return ierr_set(err, -ENOMEM, "%s: out of memory", what);
    for (size_t i = first; i < set->n; i++)
        if (set->t[i].bytes)
            ix[k++] = &set->t[i];
    qsort(ix, k, sizeof *ix, by_offset);
    int rc = 0;
    for (size_t i = 1; i < k && !rc; i++)
        if (ix[i - 1]->offset + ix[i - 1]->bytes > ix[i]->offset)
            rc = ierr_set(err, -EINVAL, "%s: tensors \"%s\" and \"%s\" overlap", what, ix[i - 1]->name,
                          ix[i]->name);
    free(ix);
    return rc;
}

int st_parse_header(st_set *set, const char *json, size_t len, uint64_t file_bytes, int shard, const char *what,
                    ierr *err)
{
    if (len > file_bytes || file_bytes - len < 8)
        return ierr_set(err, -EINVAL, "%s: header length %zu is past the end of the file (%llu bytes)", what, len,
                        (unsigned long long)file_bytes);
    uint64_t data_start = 8 + len, data_bytes = file_bytes - data_start;
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ierr_set(err, -EINVAL, "%s: invalid JSON header at line %d: %s", what, jerr.line, jerr.text);
    int rc = 0;
    size_t first = set->n;
    const char *key;
    json_t *e;
    if (!json_is_object(root))
        rc = ierr_set(err, -EINVAL, "%s: header is not a JSON object", what);
    json_object_foreach(root, key, e) {
        if (rc)
            break;
        if (strcmp(key, "__metadata__") == 0)
            continue;
        if (!*key) {
            rc = ierr_set(err, -EINVAL, "%s: tensor with an empty name", what);
            break;
        }
        if (find_in(set, first, key)) {      /* already in an earlier shard */
            rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" appears twice", what, key);
            break;
        }
        if (set->n == set->cap) {
            size_t cap = set->cap ? 2 * set->cap : 64;
            st_tensor *t = realloc(set->t, cap * sizeof *t);
            if (!t) {
                rc = ierr_set(err, -ENOMEM, "%s: out of memory", what);
                break;
            }
            set->t = t;
            set->cap = cap;
        }
        st_tensor *t = &set->t[set->n];
        memset(t, 0, sizeof *t);
        t->shard = shard;
        if (!(t->name = strdup(key))) {
            rc = ierr_set(err, -ENOMEM, "%s: out of memory", what);
            break;
        }
        set->n++;
        rc = parse_entry(e, t, data_start, data_bytes, what, err);
    }
    json_decref(root);
    if (!rc)
        rc = check_overlap(set, first, what, err);
    if (rc) {                         /* drop this file's tensors again */
        for (size_t i = first; i < set->n; i++)
            free(set->t[i].name);
        set->n = first;
    }
    if (set->n)
        qsort(set->t, set->n, sizeof *set->t, by_name);
    return rc;
}

/* ---- files --------------------------------------------------------------- */

/* Open path as shard set->nfiles and parse its header. */
static int add_file(st_set *set, const char *path, ierr *err)
{
    char **paths = realloc(set->paths, (size_t)(set->nfiles + 1) * sizeof *paths);
    if (paths)
        set->paths = paths;
    int *fds = realloc(set->fds, (size_t)(set->nfiles + 1) * sizeof *fds);
    if (fds)
        set->fds = fds;
    if (!paths || !fds || !(set->paths[set->nfiles] = strdup(path)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    int shard = set->nfiles++;
    int fd = set->fds[shard] = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ierr_set(err, -EINVAL, "%s: not a regular file", path);
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8)
        return ierr_set(err, -EINVAL, "%s: truncated: %llu bytes, shorter than the 8-byte header length", path,
                        (unsigned long long)size);
    int rc = io_pread_full(fd, lenbuf, 8, 0, path, err);
    if (rc)
        return rc;
    uint64_t hlen = fmt_le64(lenbuf);
    if (hlen > size - 8)
        return ierr_set(err, -EINVAL, "%s: header length %llu is past the end of the file (%llu bytes)", path,
                        (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return ierr_set(err, -EINVAL, "%s: header length %llu is over the 100 MB limit", path,
                        (unsigned long long)hlen);
    char *json = malloc(hlen ? hlen : 1);
    if (!json)
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    rc = io_pread_full(fd, json, hlen, 8, path, err);
    if (!rc)
        rc = st_parse_header(set, json, hlen, size, shard, path, err);
    free(json);
    return rc;
}

int st_open_file(const char *path, st_set **out, ierr *err)
{
    st_set *set = set_new();
    if (!set)
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    int rc = add_file(set, path, err);
    if (rc) {
        st_close(set);
        return rc;
    }
    *out = set;
    return 0;
}

/* The caller's check of a path before it is opened (none: 0). */
static int check_path(st_path_check check, const void *ctx, const char *path, ierr *err)
{
    return check ? check(ctx, path, err) : 0;
}

/* Sharded set: open every shard the index names, then check that each tensor
 * sits in the shard its weight_map entry names and that nothing is missing. */
static int open_index(st_set *set, const char *dir, const char *index_path, st_path_check check, const void *ctx,
                      ierr *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ierr_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", index_path, jerr.line, jerr.text);
    json_t *map = json_object_get(root, "weight_map"), *file;
    const char *name;
    int rc = 0;
    if (!json_is_object(map))
        rc = ierr_set(err, -EINVAL, "%s: no \"weight_map\" object", index_path);
    /* open each distinct shard once, in order of first mention */
    json_object_foreach(map, name, file) {
        if (rc)
            break;
        const char *f = json_string_value(file);
        if (!f || !*f || strchr(f, '/') || strcmp(f, ".") == 0 || strcmp(f, "..") == 0) {
            rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\": bad shard file name", index_path, name);
            break;
        }
        int seen = 0;
        for (int i = 0; i < set->nfiles && !seen; i++)
            seen = strcmp(strrchr(set->paths[i], '/') + 1, f) == 0;
        if (seen)
            continue;
        char *path = io_join(dir, f);
        if (!path)
            rc = ierr_set(err, -ENOMEM, "%s: out of memory", index_path);
        else if (!(rc = check_path(check, ctx, path, err)))
            rc = add_file(set, path, err);
        free(path);
    }
    json_object_foreach(map, name, file) {
        if (rc)
            break;
        const st_tensor *t = st_find(set, name);
        if (!t)
            rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" is missing from shard %s", index_path, name,
                          json_string_value(file));
        else if (strcmp(strrchr(set->paths[t->shard], '/') + 1, json_string_value(file)) != 0)
            rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" is in %s, not in %s", index_path, name,
                          set->paths[t->shard], json_string_value(file));
    }
    if (!rc && json_object_size(map) != set->n)
        for (size_t i = 0; i < set->n && !rc; i++)
            if (!json_object_get(map, set->t[i].name))
                rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" is not in the weight_map of %s",
                              set->paths[set->t[i].shard], set->t[i].name, index_path);
    json_decref(root);
    return rc;
}

int st_open_dir(const char *dir, st_set **out, ierr *err)
{
    return st_open_dir_checked(dir, NULL, NULL, out, err);
}

int st_open_dir_checked(const char *dir, st_path_check check, const void *ctx, st_set **out, ierr *err)
{
    char *index = io_join(dir, "model.safetensors.index.json"), *single = io_join(dir, "model.safetensors");
    st_set *set = set_new();
    int rc;
    if (!index || !single || !set)
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", dir);
    else if (access(index, F_OK) == 0)
        rc = (rc = check_path(check, ctx, index, err)) ? rc : open_index(set, dir, index, check, ctx, err);
    else if (access(single, F_OK) == 0)
        rc = (rc = check_path(check, ctx, single, err)) ? rc : add_file(set, single, err);
    else
        rc = ierr_set(err, -ENOENT, "%s: no model.safetensors or model.safetensors.index.json", dir);
    free(index);
    free(single);
    if (rc) {
        st_close(set);
        return rc;
    }
    *out = set;
    return 0;
}

/* ---- reads --------------------------------------------------------------- */

int st_read_raw(const st_set *set, const st_tensor *t, uint64_t off, void *dst, size_t len, ierr *err)
{
    if (off > t->bytes || len > t->bytes - off)
        return ierr_set(err, -EINVAL, "%s: read of [%llu, +%zu) outside tensor \"%s\" (%llu bytes)",
                        set->paths[t->shard], (unsigned long long)off, len, t->name, (unsigned long long)t->bytes);
    return io_pread_full(set->fds[t->shard], dst, len, t->offset + off, set->paths[t->shard], err);
}

int st_read_f32(const st_set *set, const st_tensor *t, uint64_t first, float *dst, size_t n, ierr *err)
{
    size_t es = (size_t)fmt_block_bytes(t->dtype), chunk = (1u << 20) / es;
    uint64_t numel = (uint64_t)st_numel(t);
    if (first > numel || n > numel - first)
        return ierr_set(err, -EINVAL, "%s: elements [%llu, +%zu) outside tensor \"%s\" (%llu elements)",
                        set->paths[t->shard], (unsigned long long)first, n, t->name, (unsigned long long)numel);
    unsigned char *buf = malloc(chunk * es);
    if (!buf)
        return ierr_set(err, -ENOMEM, "%s: out of memory", set->paths[t->shard]);
    int rc = 0;
    for (size_t done = 0; done < n && !rc; done += chunk) {
        size_t k = n - done < chunk ? n - done : chunk;
        rc = st_read_raw(set, t, (first + done) * es, buf, k * es, err);
        if (!rc)
            fmt_to_f32(t->dtype, buf, dst + done, k);
    }
    free(buf);
    return rc;
}
