/* source.h: where the client's weights come from. Either an inflashfs mount
 * (files config.json, tokenizer files, tensors/<name>, layers/NN/ffn) or,
 * for comparison, a store directory read directly through layout/. Both
 * give the same bytes; the rest of the client does not know which it has. */
#ifndef INFLASH_SOURCE_H
#define INFLASH_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "hparams.h"
#include "error.h"
#include "store.h"

typedef struct source source;

/* A mount point of inflashfs (checked: config.json with inflash_ keys). */
int  source_open_mount(const char *mountpoint, source **out, ierr *err);
/* A store directory (layout/store.h). */
int  source_open_store(const char *dir, source **out, ierr *err);
/* A store directory whose dense.bin and ffn.bin are also memory-mapped
 * (read-only, shared), the way llama.cpp runs a model larger than RAM: the
 * model computes straight from the mapping (source_tensor_map,
 * source_ffn_map) and the page cache is the only cache. */
int  source_open_store_mapped(const char *dir, source **out, ierr *err);
void source_close(source *s);

const hp_config *source_hparams(const source *s);
fmt_dtype        source_dtype(const source *s);
int64_t          source_bundle_bytes(const source *s);

/* A tokenizer file by name ("vocab.json", "merges.txt", "tokenizer.json");
 * -ENOENT if the model has none. *data is malloc'd (caller frees). */
int source_tokfile(source *s, const char *name, char **data, size_t *len, ierr *err);

/* The dtype the dense tensor `name` of ndim dimensions has in this source:
 * fmt_tensor_dtype of the store dtype (format.h section 1: predictors f32;
 * in a quantized store 1-D tensors f32 and matrices quantized). A mount
 * serves raw bytes, so this rule is how its files are read. */
fmt_dtype source_tensor_dtype(const source *s, const char *name, int ndim);
/* A dense tensor of ndim dimensions, converted to f32 (dequantized); its
 * element count must equal numel (else an error naming the tensor and both
 * sizes). */
int source_tensor_f32(source *s, const char *name, int ndim, float *dst, int64_t numel, ierr *err);
/* The same in dtype dt: FMT_F32 (converted) or the tensor's own dtype
 * (source_tensor_dtype: raw bytes, no conversion; fmt_bytes(dt, numel)
 * bytes at dst). */
int source_tensor(source *s, const char *name, int ndim, fmt_dtype dt, void *dst, int64_t numel, ierr *err);
/* A mapped source's matrix in place (numel values of the source's dtype,
 * fmt_bytes of them), or NULL: not mapped, missing, another size or
 * dtype. */
const void *source_tensor_map(source *s, const char *name, int64_t numel);
/* The neuron file of `layer` in physical slot order (a mount's
 * layers/NN/ffn.slots, a store's ffn.bin): *id_of [d_ffn] receives the
 * neuron id of each slot. -ENOTSUP if the source has no such view (a mount
 * of an older daemon). Reading in slot order turns a whole-layer read of a
 * reordered store into one sequential read. */
int source_ffn_slots(const source *s, int64_t layer, const int64_t **id_of);
/* Raw bytes [off, off+len) of that slot-order file. Thread-safe. */
int source_read_ffn_slots(source *s, int64_t layer, uint64_t off, void *dst, size_t len, ierr *err);
/* A mapped source's neuron file of `layer` in place, in physical slot
 * order (slot k at k * bundle_bytes), with *id_of [d_ffn] the neuron id of
 * each slot; NULL if the source is not mapped. */
const void *source_ffn_map(source *s, int64_t layer, const int64_t **id_of);
/* Does the tensor exist? (for optional tensors: biases, lm_head) */
int source_has_tensor(source *s, const char *name);

/* The calibration of `layer` (store_calib, layout/store.h): from the
 * store's calib table, or from the mount's config.json
 * "inflash_calibration" (there only rank, threshold and act_threshold; the
 * figures are NAN). -ENOENT if the model is not calibrated. */
int source_calib(const source *s, int64_t layer, store_calib *out, ierr *err);
/* What "active" meant for that calibration (STORE_CRIT_*, the meta
 * calib_criterion / config key "inflash_calib_criterion"), or NULL. */
const char *source_calib_criterion(const source *s);

/* Raw bytes [off, off+len) of the neuron file of `layer` (neuron-id order:
 * neuron j at j*bundle_bytes). Thread-safe: concurrent calls allowed. */
int source_read_ffn(source *s, int64_t layer, uint64_t off, void *dst, size_t len, ierr *err);

/* The model's tokenizer (tok.h) built from the source's tokenizer files:
 * tokenizer.json if present, else vocab.json + merges.txt. */
typedef struct tok tok;
int source_tok(source *s, tok **out, ierr *err);

#endif
