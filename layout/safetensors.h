/* safetensors.h: a checked reader of Hugging Face .safetensors files (single
 * file or a sharded set with model.safetensors.index.json). The header is
 * parsed with jansson; every dtype, shape and offset is checked against the
 * file size before any tensor is trusted. Tensor data is read with pread, so
 * nothing larger than one tensor is ever held in memory. */
#ifndef INFLASH_SAFETENSORS_H
#define INFLASH_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "error.h"

#define ST_MAX_DIMS 8

typedef struct {
    char    *name;                /* owned */
    fmt_dtype dtype;              /* F32, F16 or BF16 */
    int      ndim;
    int64_t  shape[ST_MAX_DIMS];
    int      shard;               /* index into the set's files */
    uint64_t offset;              /* absolute offset of the data in that file */
    uint64_t bytes;
} st_tensor;

typedef struct st_set st_set;     /* opaque: the open files and tensor table */

/* Open one .safetensors file. */
int  st_open_file(const char *path, st_set **out, ierr *err);
/* Open a model directory: model.safetensors, or the shards listed in
 * model.safetensors.index.json (each shard checked and each tensor in the
 * shard its weight_map names). */
int  st_open_dir(const char *dir, st_set **out, ierr *err);
/* A check of a file's path before st_open_dir_checked opens it: 0 lets it
 * be opened, a negative errno (err set) stops the open. */
typedef int (*st_path_check)(const void *ctx, const char *path, ierr *err);
/* st_open_dir with check(ctx, path, err) applied first to every file it
 * opens: model.safetensors, or the index and each of its shards (inflash-pack
 * keeps its reads inside the source directory with it). */
int  st_open_dir_checked(const char *dir, st_path_check check, const void *ctx, st_set **out, ierr *err);
/* Parse a header buffer (the JSON after the 8-byte length) for a file of
 * file_bytes bytes; used by st_open_file and by the fuzzer. */
int  st_parse_header(st_set *set, const char *json, size_t len, uint64_t file_bytes, int shard, const char *what, ierr *err);
void st_close(st_set *set);

size_t           st_count(const st_set *set);
const st_tensor *st_at(const st_set *set, size_t i);
const st_tensor *st_find(const st_set *set, const char *name);
int64_t          st_numel(const st_tensor *t);

/* Read bytes [off, off+len) of the tensor's raw data. */
int st_read_raw(const st_set *set, const st_tensor *t, uint64_t off, void *dst, size_t len, ierr *err);
/* Read elements [first, first+n) converted to f32. */
int st_read_f32(const st_set *set, const st_tensor *t, uint64_t first, float *dst, size_t n, ierr *err);

#endif
