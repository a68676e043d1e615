/* sparse.h: the sparse FFN engine of the client ("LLM in a flash"): it
 * replaces the model's FFN (model_ffn_fn) and reads only the neurons a
 * token needs from the layers' neuron files.
 *
 * Per layer: a neuron matrix (neuron_matrix.h) whose capacity comes from the DRAM
 * budget, and a sliding window (window.h) of the last k selected sets.
 * Per token and layer:
 *   select   predict: the low-rank predictor on the FFN input (pred_select,
 *            predict.h); oracle: the true active set from a resident f32 copy
 *            of the up (and gate) rows, by the calibration's criterion
 *            (activity.h) — a diagnostic, exact for activations with
 *            exact zeros (ReLU, FATReLU, dReLU, CATS: term != 0)
 *   window   push the set; shrink k while the union exceeds the capacity;
 *            evict the ids that fell out (nmat_delete)
 *   load     the selected ids not resident: one coalesced plan
 *            (coalesce.h), its requests read concurrently by the reader pool
 *            (read_pool.h) straight into reserved matrix rows, kept in the
 *            store's dtype (a quantized row is the bundle's blocks as stored)
 *   compute  the FFN over every resident row (model_ffn_rows,
 *            client/weight_matrix.h): dot products of the up (gate) rows with
 *            x, bias gathered by id, activation, down columns scaled by the
 *            activations and accumulated, plus the down bias.
 * A selected set larger than the whole matrix (k already 1) is computed in
 * chunks of the capacity (exact, more reads; counted as an overflow).
 *
 * Not thread-safe: it serves one model, one forward at a time (the reader
 * threads are its own). */
#ifndef INFLASH_SPARSE_H
#define INFLASH_SPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"

typedef enum { SPARSE_ORACLE = 1, SPARSE_PREDICT = 2 } sparse_mode;

#define SPARSE_MIN_ROWS 32   /* smallest matrix (rows per layer) a budget must allow */

typedef struct {
    sparse_mode mode;
    int64_t  window;        /* k >= 1 (default 4) */
    uint64_t budget;        /* bytes the client may hold; 0 = no limit (every matrix
                               can hold its whole layer) */
    uint64_t extra_bytes;   /* other memory of the caller, counted against the budget */
    int      check_recall;  /* predict: also compute the true active set (keeps an f32
                               copy of the up/gate rows) for the recall figures */
    int      readers;       /* reader threads (default 4; 0: reads on the calling thread) */
    int64_t  warmup;        /* tokens left out of the after-warmup figures (default 16) */
    double   tau_shift;     /* predict: added to every layer's calibrated threshold
                               (> 0: fewer neurons predicted, lower recall; default 0) */
} sparse_opts;

void sparse_opts_init(sparse_opts *o, sparse_mode mode);

/* What the engine will hold for a model (exact sizes of its allocations,
 * up to the windows' set buffers, counted at their largest). */
typedef struct {
    uint64_t model_bytes;   /* m->resident_bytes + extra_bytes */
    uint64_t fixed_bytes;   /* predictors, up/gate copies, windows, read plan,
                               scratch, reader pool */
    uint64_t row_bytes;     /* one matrix row: the bundle in the store dtype and its map entry */
    int64_t  capacity;      /* rows per layer's matrix */
    uint64_t nmat_bytes;    /* all matrices */
    uint64_t total_bytes;   /* model + fixed + matrices */
    uint64_t min_bytes;     /* the smallest budget that works
                               (capacity min(SPARSE_MIN_ROWS, d_ffn)) */
} sparse_budget;

/* Plan the memory of a sparse engine for m: with no budget every matrix
 * holds the whole layer; with one, what remains after the model and the
 * fixed parts is split evenly over the layers. -ENOSPC if o->budget is
 * below min_bytes (the message names both, in MiB); b is filled anyway.
 * -ENOENT if the mode needs a calibration the model lacks (predict; oracle
 * of a gated model), -EINVAL for an FFN it cannot run. */
int sparse_plan(const model *m, const sparse_opts *o, sparse_budget *b, ierr *err);

typedef struct sparse sparse;

/* Plan (as above), allocate everything, load the predictors (and the
 * up/gate copies), and install the engine as m's FFN (m->ffn, m->ffn_ctx).
 * m must outlive the engine. */
int  sparse_new(model *m, const sparse_opts *o, sparse **out, ierr *err);
/* Puts model_ffn_dense back and frees everything. */
void sparse_free(sparse *sp);

/* Counters of one token (summed over layers), or of one layer (summed over
 * tokens). "Selected" is the set the window was given: the predictor's in
 * predict mode, the true one in oracle mode. */
typedef struct {
    int64_t  selected;       /* ids selected */
    int64_t  active;         /* truly active ids (when the truth is known) */
    int64_t  hits;           /* selected and active (the predictor's recall) */
    int64_t  resident_hits;  /* resident and active (the window's recall) */
    int64_t  loaded;         /* bundles read */
    int64_t  dropped;        /* bundles evicted by the window */
    int64_t  resident;       /* rows the FFN ran over */
    uint64_t bytes;          /* bytes read from the neuron files */
    int64_t  reads;          /* read requests */
    uint64_t io_ns;          /* waiting for the reads */
    uint64_t select_ns;      /* predictor, or the true set */
    uint64_t ffn_ns;         /* the whole sparse FFN, reads included */
    int64_t  shrinks;        /* window shrinks (budget) */
    int64_t  overflows;      /* selected set larger than the matrix: chunked */
} sparse_count;

/* The counters of row `row` (0-based) of the last model_forward. */
void sparse_last(const sparse *sp, int64_t row, sparse_count *t);
/* Is the true active set computed (oracle, or check_recall)? */
int  sparse_knows_truth(const sparse *sp);
/* The budget plan in force. */
const sparse_budget *sparse_get_budget(const sparse *sp);
/* Bytes of one layer's whole neuron file (d_ffn * bundle bytes). */
uint64_t sparse_layer_bytes(const sparse *sp);

typedef struct {
    int64_t      capacity;        /* matrix rows */
    int64_t      k;               /* window now */
    int64_t      k_max;           /* --window */
    int64_t      grows;           /* k restored by one after a shrink */
    int64_t      tokens;          /* tokens through this layer */
    int64_t      tokens_after;    /* of them, after the warm-up */
    sparse_count all;             /* sums over all tokens */
    sparse_count after;           /* sums over the tokens after the warm-up */
} sparse_layer_stats;

int sparse_layer_stats_get(const sparse *sp, int64_t layer, sparse_layer_stats *st, ierr *err);

/* ---- exposed for the tests ------------------------------------------------ */

/* Convert n values of dtype t that sit at the END of the f32 array dst
 * (at byte offset 4n - fmt_bytes(t, n)) into dst[0..n) in place, front to
 * back (a read lands there so it needs no staging buffer). t == F32, or n
 * not whole blocks of a quantized t: nothing. */
void sparse_convert_tail(fmt_dtype t, float *dst, size_t n);

#endif
