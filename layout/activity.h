/* activity.h: what "active" means for an FFN neuron, the contract between
 * calibration (the labels the predictors learn, inflash-calibrate;
 * inflash-actstats's figures) and the client's run-time selection (the true
 * active set of the sparse engine). It holds the FFN's activation functions,
 * the one list of activity criteria, their names (as stored in meta
 * activation and calib_criterion, format.h section 4, and as given on
 * command lines), silu, and the test itself.
 *
 * The FFN of one layer is y = sum_j term_j · down_j, the neuron's term being
 * act_term() of its two pre-activations — up = up·x + b_up and, for gated
 * FFNs, gate = gate·x + b_gate — under the layer's act_spec:
 *
 *   act_fn          term                         checkpoints
 *   ACT_FN_RELU     relu(up)            ungated  OPT
 *                   relu(gate)·up       gated    ReLU-Llama (hidden_act relu)
 *   ACT_FN_SILU     silu(gate)·up                Llama, Mistral (SwiGLU)
 *   ACT_FN_FATRELU  fatrelu_p(gate)·up           ProSparse (hidden_act fatrelu,
 *                   fatrelu_p(v) = v if v >= p, else 0   hidden_act_param p)
 *   ACT_FN_DRELU    relu(gate)·relu(up)          Bamboo / TurboSparse (dReLU)
 *   ACT_FN_CATS     cats_p(gate)·up              CATS (per-layer thresholds p)
 *                   cats_p(v) = silu(v) if |silu(v)| > p, else 0
 *
 * Every function but silu has exact zeros: a neuron whose term is 0 adds
 * nothing, so "active" is exact (term != 0) and needs no calibration. For
 * plain SwiGLU a criterion decides from the pre-activations and the layer's
 * activity threshold t (meta act_threshold per layer; 0 for the exact ones):
 *
 *   criterion    value act_value() compares with t   FFN         stored name
 *   ACT_RELU     up                 (t = 0: exact)   relu(up)    "relu:up>0"
 *   ACT_SILU     silu(gate)                          SwiGLU      "gated:silu(gate)>act_threshold"
 *   ACT_GATE     |silu(gate)|       (CATS/TEAL)      SwiGLU      "gated:|silu(gate)|>act_threshold"
 *   ACT_PRODUCT  |silu(gate)·up|    (the neuron's    SwiGLU      "gated:|silu(gate)*up|>act_threshold"
 *                                   contribution)
 *   ACT_EXACT    |term|             (t = 0: exact)   gated with  "exact:term!=0"
 *                                                    exact zeros
 *
 * and the neuron is active iff value > t.
 *
 * Everything here is pure and thread-safe; the name tables are constant. The
 * float operations are part of the contract: the dense forward pass, the
 * sparse engine and calibration must compute the same bits, so callers use
 * these functions, not copies. */
#ifndef INFLASH_ACTIVITY_H
#define INFLASH_ACTIVITY_H

#include <math.h>
#include <stddef.h>

/* The FFN's activation function (table above). The values are stored
 * (meta "activation" by name). */
typedef enum {
    ACT_FN_RELU = 0,      /* "relu" */
    ACT_FN_SILU = 1,      /* "silu" */
    ACT_FN_FATRELU = 2,   /* "fatrelu": the gate kept where >= the parameter */
    ACT_FN_DRELU = 3,     /* "drelu": relu on both the gate and up */
    ACT_FN_CATS = 4,      /* "cats": silu(gate) kept where |.| > the parameter */
    ACT_FN_COUNT
} act_fn;

/* "relu" | "silu" | "fatrelu" | "drelu" | "cats"; NULL for a value that is
 * not a function. */
const char *act_fn_name(act_fn f);
/* A name back to its function: 0 and *out, or -1 (unknown, or NULL). */
int act_fn_parse(const char *name, act_fn *out);
/* Does the function take a per-layer parameter (fatrelu, cats)? */
int act_fn_has_param(act_fn f);
/* Does the function have exact zeros (every one but silu)? */
int act_fn_exact(act_fn f);

/* One layer's FFN activation: what act_term needs. */
typedef struct {
    act_fn fn;       /* the activation function */
    int    gated;    /* 1: a gate row per neuron (term = f(gate)·up); 0: f(up) */
    float  param;    /* the layer's parameter (fatrelu, cats thresholds); else 0 */
} act_spec;

typedef enum {
    ACT_RELU = 0,    /* up > 0: the exact zeros of a ReLU FFN */
    ACT_SILU,        /* silu(gate) > t: the positive branch only */
    ACT_GATE,        /* |silu(gate)| > t */
    ACT_PRODUCT,     /* |silu(gate)·up| > t (calibrate's default for SwiGLU) */
    ACT_EXACT,       /* term != 0: gated functions with exact zeros */
    ACT_COUNT        /* number of criteria (not one) */
} act_crit;

/* The name stored in meta calib_criterion (and the mount's config.json
 * "inflash_calib_criterion"), e.g. "gated:|silu(gate)*up|>act_threshold";
 * NULL for a value that is not a criterion. */
const char *act_name(act_crit r);
/* The short name used by command-line flags: "relu", "silu", "gate",
 * "product", "exact"; NULL for a value that is not a criterion. */
const char *act_flag(act_crit r);
/* Does the criterion need a gate (a gated FFN)? */
int act_gated(act_crit r);
/* Is it one of the calibrated-threshold criteria of plain SwiGLU (silu, gate,
 * product), the ones --criterion chooses from? */
int act_thresholded(act_crit r);
/* The exact criterion of an activation with exact zeros: 0 and *out
 * (ACT_RELU ungated, ACT_EXACT gated), or -1 (silu: no exact criterion). */
int act_exact_crit(act_spec s, act_crit *out);

/* A stored name back to its criterion: 0 and *out, or -1 (unknown, or NULL). */
int act_parse(const char *name, act_crit *out);
/* A short name (act_flag) back to its criterion: 0 and *out, or -1. */
int act_parse_flag(const char *flag, act_crit *out);
/* The short names of the thresholded criteria, for messages: "silu, gate or
 * product" into buf (always NUL-terminated). */
void act_thresholded_flags(char *buf, size_t size);

/* silu(v) = v·sigmoid(v), exactly as every part computes it. */
static inline float act_silu(float v) { return v / (1.0f + expf(-v)); }

/* The activation function applied to one pre-activation (the gate's for a
 * gated FFN, the up projection's otherwise) with the layer's parameter p. */
static inline float act_fn_apply(act_fn f, float p, float v)
{
    switch (f) {
    case ACT_FN_RELU:
    case ACT_FN_DRELU: return v > 0.0f ? v : 0.0f;
    case ACT_FN_FATRELU: return v >= p ? v : 0.0f;
    case ACT_FN_CATS: {
        float s = act_silu(v);
        return fabsf(s) > p ? s : 0.0f;
    }
    default: return act_silu(v);
    }
}

/* The neuron's coefficient in the FFN sum (the table at the top): what the
 * dense forward pass, the sparse engine and calibration all compute. */
static inline float act_term(act_spec s, float gate, float up)
{
    if (!s.gated)
        return act_fn_apply(s.fn, s.param, up);
    if (s.fn == ACT_FN_DRELU)
        return act_fn_apply(s.fn, s.param, gate) * act_fn_apply(s.fn, s.param, up);
    return act_fn_apply(s.fn, s.param, gate) * up;
}

/* The value criterion r compares with the layer threshold (table above);
 * s is used by ACT_EXACT only, gate is ignored by ACT_RELU. */
static inline float act_value(act_crit r, act_spec s, float gate, float up)
{
    switch (r) {
    case ACT_SILU: return act_silu(gate);
    case ACT_GATE: return fabsf(act_silu(gate));
    case ACT_PRODUCT: return fabsf(act_silu(gate) * up);
    case ACT_EXACT: return fabsf(act_term(s, gate, up));
    default: return up;
    }
}

/* Is the neuron active under criterion r with layer threshold thr (0 for
 * ACT_RELU and ACT_EXACT)? The comparison is value > thr, in double:
 * thresholds that calibration computed are floats, so this equals the float
 * comparison. */
static inline int act_is_active(act_crit r, act_spec s, float gate, float up, double thr)
{
    return act_value(r, s, gate, up) > thr;
}

#endif
