/* store.h: reading and writing an inflash store directory (format.h).
 * No FUSE in here: the daemon, the client and the tools all link this. */
#ifndef INFLASH_STORE_H
#define INFLASH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"
#include "hparams.h"
#include "error.h"

#define STORE_MAX_DIMS 4

/* One row of the tensors table. */
typedef struct {
    char     *name;                 /* HF tensor name; owned by the store */
    fmt_dtype dtype;
    int       ndim;
    int64_t   shape[STORE_MAX_DIMS];
    uint64_t  offset;               /* in dense.bin */
    uint64_t  bytes;
    uint64_t  xxh64;
} store_tensor;

/* One layer of ffn.bin with its neuron table, in neuron-id order. */
typedef struct {
    int64_t   n_neurons;
    uint64_t  offset;               /* of slot 0 in ffn.bin, 4096-aligned */
    uint64_t  bytes;                /* n_neurons * bundle_bytes */
    int64_t  *slot_of;              /* [n_neurons] neuron id -> physical slot */
    int64_t  *id_of;                /* [n_neurons] physical slot -> neuron id */
    double   *freq;                 /* [n_neurons] calibration frequency, NAN if NULL */
    uint64_t *xxh64;                /* [n_neurons] bundle checksum */
} store_layer;

/* One row of the calib table (format.h section 4): the layer's predictor
 * s = B·(A·x) + c (tensors inflash.pred.<layer>.{A,B,c}, f32) predicts
 * neuron j active iff s[j] > threshold. Figures that are NULL in the
 * index are NAN here. */
typedef struct {
    int64_t rank;                   /* A is [rank, d_model], B [d_ffn, rank] */
    double  threshold;              /* decision threshold on the score */
    double  act_threshold;          /* "active" for gated models: the value of
                                       the meta calib_criterion (activity.h)
                                       > this; 0 for ReLU */
    double  sparsity;               /* calibration figures, fractions in [0,1] */
    double  recall;
    double  precision;
    double  pred_fraction;          /* predicted-active pairs / all pairs */
} store_calib;

/* Longest predictor tensor name (with the NUL). */
#define STORE_PRED_NAME_MAX 48

typedef struct store store;         /* opaque, immutable after store_open:
                                       safe to share between threads */

/* Open and validate a store directory (format.h section 5): the index is
 * loaded into memory completely, the .bin headers and sizes are checked.
 * Keeps read-only fds on dense.bin and ffn.bin. */
int  store_open(const char *dir, store **out, ierr *err);
void store_close(store *s);

const char      *store_dir(const store *s);
const hp_config *store_hparams(const store *s);
fmt_dtype        store_dtype(const store *s);
int64_t          store_bundle_bytes(const store *s);
uint64_t         store_dense_bytes(const store *s);   /* file sizes */
uint64_t         store_ffn_bytes(const store *s);
/* Any meta value by key (NULL if absent); owned by the store. */
const char      *store_meta(const store *s, const char *key);
/* All meta rows in key order (for inspection); -ENOENT past the end. */
size_t           store_meta_count(const store *s);
int              store_meta_at(const store *s, size_t i, const char **key, const char **value);

size_t              store_tensor_count(const store *s);
const store_tensor *store_tensor_at(const store *s, size_t i);     /* name order */
const store_tensor *store_tensor_find(const store *s, const char *name);
const store_layer  *store_layer_at(const store *s, int64_t layer);

/* The calibration of a layer (validated by store_open: all layers or none,
 * the predictor tensors present with the right shapes, f32), or NULL when
 * the store is not calibrated or the layer is out of range. */
const store_calib  *store_calib_at(const store *s, int64_t layer);
/* "inflash.pred.<layer>.<which>" (which: 'A', 'B' or 'c') into buf. */
void store_pred_name(char buf[STORE_PRED_NAME_MAX], int64_t layer, char which);

/* Tokenizer as stored: files verbatim, vocabulary, merges. */
size_t store_tokfile_count(const store *s);
int    store_tokfile_at(const store *s, size_t i, const char **name, const void **data, size_t *len);
int    store_tokfile_find(const store *s, const char *name, const void **data, size_t *len);
int64_t store_token_count(const store *s);
int    store_token(const store *s, int64_t id, const char **piece, size_t *len, double *score, int *special);
int64_t store_merge_count(const store *s);
int    store_merge(const store *s, int64_t rank, const char **left, size_t *llen, const char **right, size_t *rlen);

/* Reads (pread on the store's own fds; thread-safe). */
int store_read_dense(const store *s, uint64_t off, void *dst, size_t len, ierr *err);
int store_read_ffn(const store *s, uint64_t off, void *dst, size_t len, ierr *err);
int store_read_tensor_f32(const store *s, const store_tensor *t, float *dst, ierr *err);
/* Raw bundle of neuron `id` of `layer` (bundle_bytes bytes). */
int store_read_bundle(const store *s, int64_t layer, int64_t id, void *dst, ierr *err);

/* Verification against the index's xxh64 (format.h section 4). Problems are
 * one line naming the file and the tensor (or layer, neuron, slot and
 * offset), e.g. "ffn.bin: layer 3 neuron 1234 (slot 17, offset 1052672):
 * checksum mismatch"; a checksum mismatch is -EBADMSG, a failed read -EIO.
 * The two formatters set err to such a line about `problem` and return rc. */
int store_tensor_problem(const store_tensor *t, int rc, const char *problem, ierr *err);
int store_bundle_problem(const store *s, int64_t layer, int64_t slot, int rc, const char *problem, ierr *err);
/* Read a whole dense tensor (in 4 MiB steps) and compare its xxh64: 0 or
 * -EBADMSG / -EIO / -ENOMEM. */
int store_verify_tensor(const store *s, const store_tensor *t, ierr *err);
/* Called with the line of each damaged bundle. */
typedef void (*store_bad_fn)(void *ctx, const char *line);
/* Check the bundles at physical slots [slot0, slot0 + n) of a layer (read in
 * 4 MiB steps; after a failed read, bundle by bundle): bad() gets one line
 * per bundle that does not match or cannot be read. Returns how many did
 * not (>= 0), or -EINVAL / -ENOMEM. */
int64_t store_verify_bundles(const store *s, int64_t layer, int64_t slot0, int64_t n, store_bad_fn bad, void *ctx,
                             ierr *err);

/* The mount's config.json: the source HF config's keys, plus
 * "inflash_dtype", "inflash_bundle_bytes", "inflash_layout_version",
 * "inflash_family", "inflash_tokenizer", and for a calibrated store
 * "inflash_calibration": [{"layer": L, "rank": r, "threshold": t,
 * "act_threshold": a}, ...] (one per layer, in layer order) and
 * "inflash_calib_criterion" (meta calib_criterion). Returns a malloc'd
 * NUL-terminated string (caller frees) or NULL with err set. */
char *store_config_json(const store *s, ierr *err);
/* Parse such a config.json (from a mount): hyperparameters plus the store
 * dtype and bundle bytes; checks the layout version. */
int store_parse_mount_config(const char *text, size_t len, const char *what,
                             hp_config *hp, fmt_dtype *dtype, int64_t *bundle_bytes, ierr *err);
/* The calibration in such a config.json: *present = 0 when it has no
 * "inflash_calibration" (calib untouched); else 1 and calib[hp->n_layers]
 * filled with rank, threshold and act_threshold (the figures NAN). Every
 * layer exactly once, rank in 1..min(d_model, d_ffn), finite thresholds. */
int store_parse_mount_calib(const char *text, size_t len, const char *what, const hp_config *hp,
                            store_calib *calib, int *present, ierr *err);

/* ---- writing ---------------------------------------------------------- */

typedef struct storew storew;       /* one writer, one thread */

/* Start a store at out_dir: refuses an existing out_dir unless force, and
 * writes into "<out_dir>.tmp.<pid>" until storew_commit. */
int  storew_new(const char *out_dir, int force, storew **out, ierr *err);
/* Hyperparameter meta keys (format.h section 4) and the store dtype. */
int  storew_set_hparams(storew *w, const hp_config *hp, fmt_dtype dtype, ierr *err);
int  storew_set_meta(storew *w, const char *key, const char *value, ierr *err);
int  storew_add_token(storew *w, int64_t id, const char *piece, size_t len, double score, int special, ierr *err);
int  storew_add_merge(storew *w, int64_t rank, const char *left, size_t llen, const char *right, size_t rlen, ierr *err);
int  storew_add_tokfile(storew *w, const char *name, const void *data, size_t len, ierr *err);
/* Append a dense tensor (data already in `dtype`, bytes == fmt_bytes(dtype, numel)). */
int  storew_add_tensor(storew *w, const char *name, fmt_dtype dtype, int ndim, const int64_t *shape,
                       const void *data, size_t bytes, ierr *err);
/* Layers are written in order 0, 1, ...; bundles of a layer in id order. */
int  storew_begin_layer(storew *w, int64_t layer, int64_t n_neurons, ierr *err);
int  storew_add_bundle(storew *w, const void *bundle, ierr *err);
/* Bytes written so far to dense.bin + ffn.bin (for progress lines). */
uint64_t storew_bytes_written(const storew *w);
/* Finish: headers, sizes in meta, fsync, rename into place. */
int  storew_commit(storew *w, ierr *err);
/* Free; if not committed, removes the temporary directory. */
void storew_free(storew *w);

#endif
