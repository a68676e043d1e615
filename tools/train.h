/* train.h: building the low-rank activation predictor of one FFN layer
 * (the pred of client/predict.h, which scores and selects at run time):
 * truncated SVD or data-aware (PCA) start, training on a class-balanced
 * logistic loss, recall-driven threshold, evaluation, sparsity quantiles
 * and the cost per token. The predictor's functions keep its prefix pred_.
 *
 * Labels ("is neuron j active on sample i", activity.h) are a bitset, one
 * row of pred_label_stride(n) bytes per sample: bit j of row i is byte j/8,
 * bit j%8 (least significant first). pred_label_get/pred_label_set read
 * and write them.
 *
 * Nothing here keeps global state. Changing a pred (init, train,
 * threshold) is not thread-safe. Errors follow error.h (0 or a negative
 * errno, one line in err).
 *
 * Recipe (measured on opt-relu-shakespeare's real activations): start with
 * pred_init_pca or pred_init_svd, pred_train with the defaults (low
 * temperature), then pred_pick_threshold on samples NOT used for training
 * and with a margin (target 0.999 gave >= 0.99 on new text; 0.99 on the
 * training samples gave only ~0.97 there). */
#ifndef INFLASH_TRAIN_H
#define INFLASH_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "predict.h"

/* ---- labels ------------------------------------------------------------ */

/* Bytes per sample row of a label bitset for n neurons. */
static inline size_t pred_label_stride(int64_t n) { return (size_t)((n + 7) / 8); }

static inline int pred_label_get(const uint8_t *row, int64_t j)
{
    return (row[j >> 3] >> (j & 7)) & 1;
}

static inline void pred_label_set(uint8_t *row, int64_t j, int on)
{
    if (on)
        row[j >> 3] |= (uint8_t)(1u << (j & 7));
    else
        row[j >> 3] &= (uint8_t)~(1u << (j & 7));
}

/* ---- building ---------------------------------------------------------- */

/* Start from the rank-r truncated SVD of W [n×d] (e.g. the up-projection,
 * or the gate projection of a gated FFN): B·A ≈ W, optimal in Frobenius
 * norm up to the randomized method's (tiny) error; c = b, or 0 if b is
 * NULL. So s starts as an approximation of the pre-activation W·x + b.
 * The factors are balanced: B = U·√Σ, A = √Σ·Vᵀ. Randomized subspace
 * iteration (seeded, so deterministic) with power iterations. */
int pred_init_svd(pred *p, const float *W, const float *b, uint64_t seed, ierr *err);

/* The data-aware start: B·A + c is the best rank-r affine approximation,
 * in mean squared error over the samples X [m×d], of the pre-activation
 * W·x + b (before training it predicts far fewer neurons than
 * pred_init_svd at the same recall on real activations). B spans the top
 * r principal components of the pre-activations on the samples (computed
 * as the left singular vectors of W·L, L the Cholesky factor of the
 * samples' covariance), A = Bᵀ·W, and c = b + (W − B·A)·mean(x). (The
 * factors are then balanced as above.) Needs m >= 1 samples that vary. */
int pred_init_pca(pred *p, const float *W, const float *b, const float *X, int64_t m,
                  uint64_t seed, ierr *err);

typedef struct {
    int     epochs;      /* passes over the samples (default 8) */
    int64_t batch;       /* samples per step (default 256) */
    double  lr;          /* Adam step size at the start (default 2e-3); it
                            decays along a cosine to lr/20 by the end */
    double  temperature; /* of the logistic loss, relative to the RMS of the
                            scores at the start (default 0.02). Low values
                            matter: at 1 the loss rewards the bulk of easy
                            pairs and costs precision at high recall */
    double  pos_weight;  /* loss weight of an active (sample, neuron) pair;
                            <= 0: balanced = total / (2·positives) */
    double  neg_weight;  /* of an inactive pair; <= 0: total / (2·negatives) */
    uint64_t seed;       /* sample shuffling (default 1) */
    /* Called after every epoch with its mean weighted loss per pair, in
       score units (may be NULL); a non-zero return stops training early
       (not an error). */
    int   (*progress)(void *ctx, int epoch, int epochs, double loss);
    void   *ctx;
} pred_train_opts;

/* The defaults above. */
void pred_train_defaults(pred_train_opts *o);

/* Refine A, B, c by Adam minibatch steps on the class-balanced logistic
 * loss of the scores against the labels (labels [m × pred_label_stride(n)]).
 * Start from pred_init_pca or pred_init_svd: the step sizes are relative to
 * the start's scale (lr is a fraction of each tensor's RMS; c moves in units
 * of the scores' RMS), and zero factors would never move.
 * X is read in batches; memory besides X and labels is O(batch·n +
 * r·(n+d)) plus m indices for the shuffle. Deterministic for a seed.
 * Leaves tau alone. -EINVAL on bad arguments, -ENOMEM, -ERANGE if the loss
 * stops being finite (the pred is then left as it was). If loss is non-NULL
 * it receives the last epoch's mean loss. */
int pred_train(pred *p, const float *X, const uint8_t *labels, int64_t m,
               const pred_train_opts *o, double *loss, ierr *err);

/* Set p->tau to the largest threshold whose recall over all (sample, active
 * neuron) pairs is >= target_recall: with P positive pairs and
 * k = ceil(target·P), tau is just below (next float down from) the k-th
 * largest positive score. No positives, or target <= 0: tau = FLT_MAX
 * (nothing predicted; recall counts as 1). target must be <= 1.
 * Exact (radix selection, two scoring passes), memory O(1) in m. */
int pred_pick_threshold(pred *p, const float *X, const uint8_t *labels, int64_t m,
                        double target_recall, ierr *err);

typedef struct {
    int64_t pairs;           /* m·n (sample, neuron) pairs */
    int64_t positives;       /* truly active pairs */
    int64_t predicted;       /* pairs with s > tau */
    int64_t true_pos;        /* both */
    double  recall;          /* true_pos / positives (1 if none) */
    double  precision;       /* true_pos / predicted (1 if none) */
    double  predicted_frac;  /* predicted / pairs */
    double  true_frac;       /* positives / pairs: 1 - sparsity */
} pred_stats;

/* Evaluate p (at p->tau) on m samples. */
int pred_eval(const pred *p, const float *X, const uint8_t *labels, int64_t m,
              pred_stats *st, ierr *err);

/* ---- sparsity thresholds for gated FFNs -------------------------------- */

/* The per-layer activity threshold of a gated model: the smallest t such
 * that the fraction of values[0..count) with value <= t is >= target
 * (values: typically |silu(gate·x)| over calibration samples; a neuron is
 * then active iff its value > t). That is the k-th smallest value,
 * k = ceil(target·count). target <= 0 gives -FLT_MAX (everything active).
 * NaNs are not allowed (-EINVAL). Exact, no copy of values. */
int pred_threshold_for_sparsity(const float *values, int64_t count, double target,
                                float *t, ierr *err);

/* ---- cost -------------------------------------------------------------- */

typedef struct {
    double pred_flops;   /* per token: 2·r·d + 2·n·r */
    double pred_bytes;   /* weights read per token: (r·d + n·r + n)·4 */
    double ffn_flops;    /* dense FFN per token: mats·2·d·n */
    double ffn_bytes;    /* dense FFN weights: mats·d·n·ffn_dtype_bytes */
} pred_costs;

/* Cost of one predictor call against the dense FFN it serves: mats = 2 for
 * an up/down (ReLU) FFN, 3 for gated (SwiGLU); ffn_dtype_bytes = 2 for f16,
 * 4 for f32. Biases are ignored on the FFN side. */
pred_costs pred_cost(int64_t d, int64_t n, int64_t r, int mats, int ffn_dtype_bytes);

#endif
