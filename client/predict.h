/* predict.h: the low-rank activation predictor of one FFN layer at run
 * time ("LLM in a flash", section 3.1): load it from a calibrated store,
 * score the neurons for an FFN input, select the predicted active set.
 * Building one (initialisation, training, thresholds, evaluation) is
 * tools/train.h.
 *
 * The predictor scores every neuron from the FFN input x (after the FFN
 * norm):  s = B·(A·x) + c,  and neuron j is predicted active iff s_j > tau.
 *
 * Shapes (all f32, row-major):
 *   x [d]  FFN input               A [r×d]   first factor
 *   s [n]  one score per neuron    B [n×r]   second factor
 *   X [m×d] m samples of x         c [n]     per-neuron offset
 *
 * The store keeps A, B and c as the f32 tensors inflash.pred.<layer>.{A,B,c}
 * and tau as the layer's calib threshold (format.h section 4).
 *
 * Nothing here keeps global state. A pred is not locked: scoring from
 * several threads at once is safe, changing it is not. Errors follow
 * error.h (0 or a negative errno, one line in err). */
#ifndef INFLASH_PREDICT_H
#define INFLASH_PREDICT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "source.h"

typedef struct {
    int64_t d;      /* FFN input width (d_model) */
    int64_t n;      /* neurons (d_ffn) */
    int64_t r;      /* rank, 1 <= r <= min(n, d) */
    float  *A;      /* [r×d]; owned by the pred, freed by pred_free */
    float  *B;      /* [n×r]; owned */
    float  *c;      /* [n];   owned */
    float   tau;    /* decision threshold: active iff s_j > tau (initially 0) */
} pred;

/* A zeroed predictor (A = B = c = 0, tau = 0) for d inputs, n neurons,
 * rank r. -EINVAL unless 1 <= r <= min(n, d); -ENOMEM. */
int  pred_new(int64_t d, int64_t n, int64_t r, pred **out, ierr *err);
void pred_free(pred *p);

/* The predictor of `layer` from a calibrated source: rank r (the layer's
 * calib rank), its tensors, and tau = (float)tau (the caller's threshold:
 * the calibrated one, perhaps shifted). */
int  pred_load(source *src, int64_t layer, int64_t r, double tau, pred **out, ierr *err);

/* Scores of m samples: S [m×n] = X [m×d]·Aᵀ·Bᵀ + c. H [m×r] is caller
 * scratch (no allocation here, so the client can call it per token). */
void pred_score(const pred *p, const float *X, int64_t m, float *H, float *S);

/* One token: scores s [n] (scratch h [r]) and the predicted active set:
 * writes the ids j with s_j > tau into idx (room for n), ascending, and
 * returns how many. */
int64_t pred_select(const pred *p, const float *x, float *h, float *s, int32_t *idx);

#endif
