/* fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (layout/safetensors.h). Every input is
 *   1. a header (the JSON after the 8-byte length), parsed by
 *      st_parse_header twice into one set, as two shards;
 *   2. a whole .safetensors file (written to a memfd), opened with
 *      st_open_file, every tensor read;
 *   3. when it mentions "weight_map", a model.safetensors.index.json, opened
 *      with st_open_dir beside fixed shards: a.safetensors, b.safetensors and
 *      empty.safetensors (valid), short.safetensors (3 bytes) and
 *      dir.safetensors (a directory). */
#include "fz_util.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int   g_memfd = -1;        /* the whole-file input */
static char  g_memfd_path[64];
static char *g_dir;               /* the index and the fixed shards */
static char *g_index_path;
static char *g_empty_path;        /* a valid file with no tensors */

/* Write a small valid .safetensors file: header JSON padded, then data. */
static void write_shard(const char *dir, const char *name, const char *header, size_t data_bytes)
{
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8, n = 8 + hl + pad + data_bytes;
    unsigned char *buf = calloc(1, n);
    char path[4096];
    if (!buf)
        abort();
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((hl + pad) >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', pad);
    for (size_t i = 0; i < data_bytes; i++)
        buf[8 + hl + pad + i] = (unsigned char)(i * 37 + 11);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fz_write_file(path, buf, n);
    free(buf);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_memfd = memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (g_memfd < 0)
        abort();
    snprintf(g_memfd_path, sizeof g_memfd_path, "/proc/self/fd/%d", g_memfd);
    g_dir = fz_tmpdir("fuzz-st");
    write_shard(g_dir, "a.safetensors",
                "{\"x\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                "\"y\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                "\"__metadata__\":{\"format\":\"pt\"}}", 32);
    write_shard(g_dir, "b.safetensors",
                "{\"z\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[8,16]},"
                "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[16,16]}}", 16);
    write_shard(g_dir, "empty.safetensors", "{}", 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/short.safetensors", g_dir);
    fz_write_file(path, "\x10\0\0", 3);
    snprintf(path, sizeof path, "%s/dir.safetensors", g_dir);
    if (mkdir(path, 0755) != 0)
        abort();
    if (asprintf(&g_empty_path, "%s/empty.safetensors", g_dir) < 0)
        abort();
    if (asprintf(&g_index_path, "%s/model.safetensors.index.json", g_dir) < 0)
        abort();
    return 0;
}

/* Everything the reader promises about an open set, and every byte read. */
static void check_set(st_set *set)
{
    size_t n = st_count(set);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(set, i);
        FZ_CHECK(t && t->name && *t->name, "st_at(%zu) gave no tensor", i);
        FZ_CHECK(st_find(set, t->name) == t, "st_find(\"%s\") is not st_at(%zu)", t->name, i);
        FZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS, "tensor %s: %d dims", t->name, t->ndim);
        int64_t numel = st_numel(t);
        FZ_CHECK(numel >= 0 && (uint64_t)numel * (size_t)fmt_block_bytes(t->dtype) == t->bytes,
                 "tensor %s: %lld elements in %llu bytes", t->name, (long long)numel, (unsigned long long)t->bytes);
        if (i + 1 < n)
            FZ_CHECK(strcmp(t->name, st_at(set, i + 1)->name) < 0, "tensors not sorted by name");
    }
    FZ_CHECK(st_at(set, n) == NULL, "st_at past the end");
}

static void read_all(st_set *set)
{
    for (size_t i = 0; i < st_count(set); i++) {
        const st_tensor *t = st_at(set, i);
        size_t numel = (size_t)st_numel(t);
        float *f = malloc((numel ? numel : 1) * sizeof *f);
        unsigned char raw[16];
        ierr err = IERR_INIT;
        if (!f)
            abort();
        int rc = st_read_f32(set, t, 0, f, numel, &err);
        FZ_CHECK(rc == 0, "tensor %s: st_read_f32 of a checked tensor failed: %s", t->name, err.msg);
        size_t k = t->bytes < sizeof raw ? (size_t)t->bytes : sizeof raw;
        rc = st_read_raw(set, t, t->bytes - k, raw, k, &err);
        FZ_CHECK(rc == 0, "tensor %s: st_read_raw of its last bytes failed: %s", t->name, err.msg);
        FZ_CHECK(st_read_raw(set, t, t->bytes, raw, 1, &err) < 0, "tensor %s: read past its end", t->name);
        FZ_CHECK(st_read_f32(set, t, numel, f, 1, &err) < 0, "tensor %s: element past its end", t->name);
        free(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    ierr err = IERR_INIT;

    /* 1. the input as a header, for a file with 64 KiB of data after it:
     * into a set holding one empty file (st_set has no public constructor),
     * then again as a second shard, whose tensors all appear twice */
    st_set *set = NULL;
    int rc = st_open_file(g_empty_path, &set, &err);
    FZ_CHECK(rc == 0, "the empty file does not open: %s", err.msg);
    uint64_t file_bytes = 8 + (uint64_t)size + 65536;
    if (st_parse_header(set, json, size, file_bytes, 0, "header", &err) == 0) {
        size_t n = st_count(set);
        check_set(set);
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_at(set, i);
            FZ_CHECK(t->offset >= 8 + size && t->offset <= file_bytes && t->bytes <= file_bytes - t->offset,
                     "tensor %s at [%llu, +%llu) is outside the file", t->name, (unsigned long long)t->offset,
                     (unsigned long long)t->bytes);
        }
        rc = st_parse_header(set, json, size, file_bytes, 1, "header again", &err);
        FZ_CHECK(n == 0 ? rc == 0 : rc < 0, "a second shard with the same %zu tensors gave %d", n, rc);
        FZ_CHECK(st_count(set) == n, "a failed shard left %zu tensors, not %zu", st_count(set), n);
        check_set(set);
    }
    st_close(set);

    /* 2. a whole file (most inputs fail on their first 8 bytes: cheap) */
    if (ftruncate(g_memfd, 0) || pwrite(g_memfd, data, size, 0) != (ssize_t)size)
        abort();
    if (st_open_file(g_memfd_path, &set, &err) == 0) {
        check_set(set);
        read_all(set);
        st_close(set);
    }

    /* 3. a sharded set's index */
    if (size >= 10 && memmem(data, size, "weight_map", 10)) {
        fz_write_file(g_index_path, data, size);
        if (st_open_dir(g_dir, &set, &err) == 0) {
            check_set(set);
            read_all(set);
            st_close(set);
        }
    }
    return 0;
}
