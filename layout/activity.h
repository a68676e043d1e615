/* activity.h: what "active" means for an FFN neuron, the contract between
 * calibration (the labels the predictors learn, inflash-calibrate;
 * inflash-actstats's figures) and the client's run-time selection (the true
 * active set of the sparse engine). It holds the one list of activity criteria,
 * their names (as stored in meta calib_criterion, format.h section 4, and as
 * given on command lines), silu, and the test itself.
 *
 * A criterion decides from a neuron's two pre-activations — up = up·x + b_up and,
 * for gated FFNs, gate = gate·x + b_gate — and its layer's activity
 * threshold t (meta act_threshold per layer; 0 for ReLU):
 *
 *   criterion    value act_value() compares with t   FFN         stored name
 *   ACT_RELU     up                 (t = 0: exact)   relu(up)    "relu:up>0"
 *   ACT_SILU     silu(gate)                          SwiGLU      "gated:silu(gate)>act_threshold"
 *   ACT_GATE     |silu(gate)|       (CATS/TEAL)      SwiGLU      "gated:|silu(gate)|>act_threshold"
 *   ACT_PRODUCT  |silu(gate)·up|    (the neuron's    SwiGLU      "gated:|silu(gate)*up|>act_threshold"
 *                                   contribution)
 *
 * and the neuron is active iff value > t.
 *
 * The FFN's activation function itself (act_fn: meta "activation", the
 * config's hidden_act / activation_function) is here too, with its names and
 * act_fn_apply, the one place the forward pass applies it.
 *
 * Everything here is pure and thread-safe; the name table is constant. The
 * float operations are part of the contract: calibration and run time must
 * compute the same bits, so callers use these functions, not copies. */
#ifndef INFLASH_ACTIVITY_H
#define INFLASH_ACTIVITY_H

#include <math.h>
#include <stddef.h>

/* The FFN's activation function: relu(up) for OPT, silu(gate)·up for the
 * Llama family's SwiGLU. The values are stored (meta "activation" by name). */
typedef enum {
    ACT_FN_RELU = 0,   /* "relu" */
    ACT_FN_SILU = 1,   /* "silu" */
    ACT_FN_COUNT
} act_fn;

/* "relu" | "silu"; NULL for a value that is not a function. */
const char *act_fn_name(act_fn f);
/* A name back to its function: 0 and *out, or -1 (unknown, or NULL). */
int act_fn_parse(const char *name, act_fn *out);

typedef enum {
    ACT_RELU = 0,    /* up > 0: the exact zeros of a ReLU FFN */
    ACT_SILU,        /* silu(gate) > t: the positive branch only */
    ACT_GATE,        /* |silu(gate)| > t */
    ACT_PRODUCT,     /* |silu(gate)·up| > t (calibrate's default for gated models) */
    ACT_COUNT        /* number of criteria (not one) */
} act_crit;

/* The name stored in meta calib_criterion (and the mount's config.json
 * "inflash_calib_criterion"), e.g. "gated:|silu(gate)*up|>act_threshold";
 * NULL for a value that is not a criterion. */
const char *act_name(act_crit r);
/* The short name used by command-line flags: "relu", "silu", "gate",
 * "product"; NULL for a value that is not a criterion. */
const char *act_flag(act_crit r);
/* Does the criterion need a gate (a gated FFN)? */
int act_gated(act_crit r);

/* A stored name back to its criterion: 0 and *out, or -1 (unknown, or NULL). */
int act_parse(const char *name, act_crit *out);
/* A short name (act_flag) back to its criterion: 0 and *out, or -1. */
int act_parse_flag(const char *flag, act_crit *out);
/* The short names of the gated criteria, for messages: "silu, gate or product"
 * into buf (always NUL-terminated). */
void act_gated_flags(char *buf, size_t size);

/* silu(v) = v·sigmoid(v), exactly as every part computes it. */
static inline float act_silu(float v) { return v / (1.0f + expf(-v)); }

/* The activation function applied to one pre-activation (the gate's for a
 * gated FFN, the up projection's otherwise). */
static inline float act_fn_apply(act_fn f, float v)
{
    if (f == ACT_FN_RELU)
        return v > 0.0f ? v : 0.0f;
    return act_silu(v);
}

/* The value criterion r compares with the layer threshold (table above); gate is
 * ignored by ACT_RELU. */
static inline float act_value(act_crit r, float gate, float up)
{
    switch (r) {
    case ACT_SILU: return act_silu(gate);
    case ACT_GATE: return fabsf(act_silu(gate));
    case ACT_PRODUCT: return fabsf(act_silu(gate) * up);
    default: return up;
    }
}

/* Is the neuron active under criterion r with layer threshold thr (0 for
 * ACT_RELU)? The comparison is value > thr, in double: thresholds that
 * calibration computed are floats, so this equals the float comparison. */
static inline int act_is_active(act_crit r, float gate, float up, double thr)
{
    return act_value(r, gate, up) > thr;
}

#endif
