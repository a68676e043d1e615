/* store_update.h: updating an existing store atomically (format.h section 6), as
 * inflash-calibrate does: new or replaced f32 tensors in dense.bin (the
 * predictors), the calib table, neuron frequencies, a new neuron order in
 * ffn.bin and meta keys. Changes are collected in memory; storeu_commit
 * builds the complete new store in "<dir>.tmp.<pid>" (dense.bin rewritten,
 * ffn.bin hard-linked when no slot moves, else rewritten in the new slot
 * order, index.sqlite copied and modified), checks it with store_open and
 * swaps it in with one renameat2(RENAME_EXCHANGE). Until that exchange the
 * store at dir is untouched: a failed or killed update leaves it as it was
 * (a killed one may leave the "<dir>.tmp.<pid>" directory behind, which the
 * next update or inflash-pack of that store removes: storeu_make_tmp). */
#ifndef INFLASH_STORE_UPDATE_H
#define INFLASH_STORE_UPDATE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

typedef struct storeu storeu;       /* one updater, one thread */

/* The steps of storeu_commit, in order (for messages and the test hook). */
typedef enum {
    STOREU_STEP_NONE = 0,
    STOREU_STEP_DENSE,              /* write the new dense.bin */
    STOREU_STEP_FFN,                /* hard-link or rewrite ffn.bin */
    STOREU_STEP_INDEX,              /* copy index.sqlite, apply the changes */
    STOREU_STEP_SYNC,               /* fsync the new files and directory */
    STOREU_STEP_VERIFY,             /* store_open the new store */
    STOREU_STEP_EXCHANGE,           /* swap it with the old one */
    STOREU_STEP_COUNT
} storeu_step;

/* "dense", "ffn", "index", "sync", "verify", "exchange" */
const char *storeu_step_name(storeu_step step);

/* Open the store at dir (validated by store_open) for an update, holding
 * its writer lock (storeu_lock_store) until storeu_free. Nothing is
 * written before storeu_commit. The environment variable
 * INFLASH_STOREU_FAIL_AT=<step name> arms the test hook (storeu_fail_at). */
int  storeu_open(const char *dir, storeu **out, ierr *err);
/* The store as it was when opened (for reading weights); stays valid until
 * storeu_free, also after a commit (then it shows the old contents). */
const store *storeu_store(const storeu *u);

/* Set (insert or replace) a meta key. dense_bytes, ffn_bytes, magic and
 * format_version are the updater's own and refused. */
int  storeu_set_meta(storeu *u, const char *key, const char *value, ierr *err);
/* Add an f32 tensor to dense.bin (64-byte aligned), replacing an existing
 * tensor of that name. data is copied. */
int  storeu_put_tensor_f32(storeu *u, const char *name, int ndim, const int64_t *shape, const float *data,
                           ierr *err);
/* Replace the calib table by rows[n_layers] (figures may be NAN: NULL).
 * Every existing "inflash.pred.*" tensor not put again is dropped; the
 * layers' predictor tensors must be put (store_pred_name) with shapes
 * matching the ranks, else the commit fails its verification. */
int  storeu_set_calib(storeu *u, const store_calib *rows, ierr *err);
/* Calibration frequencies of a layer's neurons, freq[id] >= 0 (copied). */
int  storeu_set_freq(storeu *u, int64_t layer, const double *freq, ierr *err);
/* New physical slots of a layer: slot_of[id], a permutation of
 * 0..n_neurons-1 (copied). ffn.bin is then rewritten: every bundle keeps its
 * bytes, only its place changes. */
int  storeu_set_slots(storeu *u, int64_t layer, const int64_t *slot_of, ierr *err);

/* Test hook: make storeu_commit fail (-EIO, before any of its work) at the
 * start of `step`; STOREU_STEP_NONE disarms. */
void storeu_fail_at(storeu *u, storeu_step step);

/* Build, verify and swap in the new store (see the top of this file).
 * After an error the store at dir is unchanged. At most once. */
int  storeu_commit(storeu *u, ierr *err);
/* Free; removes the temporary directory unless the commit swapped it in. */
void storeu_free(storeu *u);

/* The temporary directory tmp_dir ("<dir>.tmp.<pid>") of a new or updated
 * store at dir, for storeu_commit and the store writer: first removes what
 * killed writers of dir left beside it (directories "<dir>.tmp.<pid>", and
 * "<dir>.old.<pid>" when dir exists, whose process is gone and which no one
 * holds locked; never through a symlink), then creates tmp_dir (0755) and
 * holds an flock on it in *lock_fd, which marks it as in use until the
 * caller closes *lock_fd (after removing the directory or committing it). */
int  storeu_make_tmp(const char *dir, const char *tmp_dir, int *lock_fd, ierr *err);
/* An exclusive flock on the store directory dir for its writer, in
 * *lock_fd (storeu_open takes it, and the store writer when it replaces a
 * store): a second writer of the same store is refused with -EBUSY ("another
 * inflash-pack or inflash-calibrate is writing this store") rather than
 * building its new store from one that is being replaced under it. */
int  storeu_lock_store(const char *dir, int *lock_fd, ierr *err);

/* Hot-first order: slot_of[id] for the neurons sorted by descending freq,
 * ties by ascending id (NAN counts as lowest). */
void storeu_order_by_freq(const double *freq, int64_t n, int64_t *slot_of);

#endif
