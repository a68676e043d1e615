/* mkmodel.c: inflash-mkmodel, which writes a Hugging Face checkpoint
 * (config.json, sharded safetensors + model.safetensors.index.json, the
 * tokenizer files) with the shape of a real model (OPT 1.3B/2.7B/6.7B,
 * Llama 7B) and SYNTHETIC weights whose FFN activation statistics follow
 * the ones measured on the project's real demo model, so that the ordinary
 * inflash-pack / inflash-calibrate / inflash path can be benchmarked at the
 * scale the method was made for. Streams: one row of one tensor at a time.
 *
 * How the FFN statistics are produced (the model is OPT, pre-LayerNorm):
 *   - the FFN input x = LayerNorm(h) has |x|^2 = d and is roughly isotropic
 *     over tokens, so for an up row w_j ~ N(0, 1/d) the pre-activation
 *     w_j.x is ~N(0, |w_j|^2) over tokens;
 *   - neuron j gets an activation probability p_j = density_l * r_j^tail /
 *     E[r^tail]: r_j is drawn from the distribution of (frequency / layer
 *     mean) MEASURED on opt-relu-shakespeare over its held-out text
 *     (inflash-actstats --freq 0 --quantiles; 64 quantiles below), density_l
 *     follows that model's per-layer density profile, stretched over the
 *     layers and scaled to 1 - --sparsity;
 *   - its bias is b_j = -|w_j| * Phi^-1(1 - p_j), so P(w_j.x + b_j > 0) = p_j;
 *   - the down projection is scaled so each FFN adds ~--ffn-out^2 variance
 *     per element to the residual, and its bias centres the output
 *     (b2 = -W2 E[relu]), keeping every layer's input zero-mean;
 *   - token to token correlation: the position embeddings are an AR(1)
 *     process over positions (variance --slow, correlation length
 *     --slow-len tokens), a context component that changes slowly as the
 *     residual stream of a real model does; attention (random q/k/v, output
 *     scale --attn-out) mixes the past tokens in;
 *   - generation: the (tied) output embedding carries the log unigram
 *     frequencies of --text along one direction that the final LayerNorm
 *     bias points at, so sampled text has the token frequencies of real
 *     text (not uniform random tokens, nor one token repeated).
 * The figures these weights give are measured with inflash-actstats (the
 * client's forward pass); they are synthetic and must be labelled so.
 * Llama (SwiGLU, RMSNorm, no biases): the residual carries one constant
 * dimension (a "massive activation", as real Llama models have) that the
 * gate rows read as their bias, aimed so that P(gate.x > 1) = p_j; the
 * unigram logits ride on the same dimension. --act writes the config of a
 * sparse Llama-family checkpoint instead of SwiGLU (the weights are the
 * same): relu (ReLU-Llama), fatrelu (ProSparse, threshold 1: the neurons
 * with gate.x >= 1), drelu (Bamboo), cats (CATS, per-layer thresholds near
 * silu(1)), each with exact zeros. */
#include "checkpoint.h"
#include "cli.h"
#include "format.h"
#include "hparams.h"
#include "io.h"
#include "tok.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG          "inflash-mkmodel"
#define EXIT_RUNTIME  1
#define EXIT_USAGE    2
#define SHARD_BYTES   ((uint64_t)2 << 30)     /* ~2 GiB per safetensors shard (default) */
#define MAX_TEXT      ((size_t)256 << 20)
#define P_MIN         1e-6                    /* activation probability floor */
#define P_MAX         0.5                     /* ... and ceiling */
#define GATE_REF      1.0                     /* llama: "active" reference, gate.x > 1 */

#ifndef INFLASH_SOURCE_DIR
#define INFLASH_SOURCE_DIR "."
#endif

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Per-neuron activation frequency divided by its layer's mean, 64 quantiles
 * (at i/63), pooled over the 6 layers of opt-relu-shakespeare on its 49,421
 * held-out tokens: inflash-actstats --store <demo store> --text
 * tinyshakespeare.txt --offset 1003857 --freq 0 --quantiles. The bottom
 * ~9% are neurons never active on that text. */
static const double demo_freq_q[64] = {
    0, 0, 0, 0, 0, 0, 0.002117, 0.05288,
    0.1037, 0.145, 0.1758, 0.2073, 0.2335, 0.269, 0.2958, 0.3249,
    0.3494, 0.3743, 0.398, 0.4222, 0.4479, 0.478, 0.4986, 0.5253,
    0.5492, 0.5776, 0.6023, 0.6276, 0.6556, 0.6808, 0.7046, 0.7366,
    0.7603, 0.786, 0.8155, 0.8454, 0.8822, 0.9104, 0.9409, 0.9698,
    1.004, 1.04, 1.077, 1.113, 1.155, 1.211, 1.267, 1.327,
    1.381, 1.444, 1.508, 1.592, 1.668, 1.747, 1.844, 1.942,
    2.054, 2.212, 2.434, 2.672, 2.972, 3.422, 4.106, 18.24,
};

/* The same model's per-layer FFN density (1 - sparsity), layers 0..5, same text. */
static const double demo_density[6] = {0.0610, 0.0263, 0.0191, 0.0210, 0.0238, 0.0294};

/* ---- shapes ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    hp_family   family;
    int64_t     d, layers, heads, kv_heads, ffn, max_pos;
    const char *tokdir;      /* default tokenizer folder, relative to the source root */
    const char *text;        /* default unigram text, relative to the source root */
    uint64_t    text_bytes;  /* use the first this many bytes (0 = all) */
} mk_shape;

/* The real hyperparameters (OPT: Zhang et al. 2022, table 1; Llama: Touvron
 * et al. 2023); the vocabulary is the demo tokenizer's (1024 / 512). */
static const mk_shape shapes[] = {
    {"opt-1.3b", HP_OPT, 2048, 24, 32, 32, 8192, 2048, "models/opt-relu-shakespeare",
     "../shared/data/tinyshakespeare.txt", 1003857},
    {"opt-2.7b", HP_OPT, 2560, 32, 32, 32, 10240, 2048, "models/opt-relu-shakespeare",
     "../shared/data/tinyshakespeare.txt", 1003857},
    {"opt-6.7b", HP_OPT, 4096, 32, 32, 32, 16384, 2048, "models/opt-relu-shakespeare",
     "../shared/data/tinyshakespeare.txt", 1003857},
    {"llama-7b", HP_LLAMA, 4096, 32, 32, 32, 11008, 2048, "../shared/models/stories260K",
     "../shared/data/TinyStories-valid-subset.txt", 0},
    {"tiny", HP_OPT, 128, 2, 4, 4, 512, 512, "models/opt-relu-shakespeare",
     "../shared/data/tinyshakespeare.txt", 1003857},
    {"tiny-llama", HP_LLAMA, 128, 2, 4, 2, 384, 512, "../shared/models/stories260K",
     "../shared/data/TinyStories-valid-subset.txt", 0},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

typedef struct {
    const mk_shape *shape;
    const char *out;
    const char *tokdir;      /* --tokenizer */
    const char *text;        /* --text; "" = none (uniform unigram) */
    fmt_dtype   dtype;       /* --dtype: the store dtype the checkpoint is made for */
    double      sparsity;    /* target mean over layers */
    uint64_t    seed;
    int64_t     layers;      /* --layers override, 0 = the shape's */
    int         force;
    act_fn      act;         /* --act: the Llama shapes' FFN activation (default silu) */
    uint64_t    shard_bytes; /* --shard-mb (hidden, for tests) */
    int64_t     window;      /* --sliding-window (llama shapes: a Mistral config), 0 = none */
    /* generator knobs */
    double      tail;        /* p_j ~ r_j^tail */
    double      slow;        /* variance of the slow (AR(1) position) component */
    double      slow_len;    /* its correlation length in tokens */
    double      attn_out;    /* per-element std each attention adds to the residual */
    double      ffn_out;     /* per-element std each FFN adds to the residual */
    double      qk;          /* std of the attention scores */
    double      spec_tau;    /* residual spectrum: variance ~ exp(-rank / tau) ... */
    double      spec_floor;  /* ... plus this fraction spread evenly over all dimensions */
} mk_opts;

/* The checkpoint's dtype: f16 or f32 as asked; for a q8_0/q4_0 store F32
 * (safetensors has no block dtypes, so inflash-pack quantizes the
 * generator's own f32 values, not f16-rounded ones). */
static fmt_dtype ckpt_dtype(const mk_opts *o) { return o->dtype == FMT_F16 ? FMT_F16 : FMT_F32; }

/* ---- random numbers ---------------------------------------------------------- */

/* xoshiro256** with a splitmix64 seeding; one stream per (tensor, layer), so a
 * tensor's values do not depend on the order of generation or on --layers. */
typedef struct {
    uint64_t s[4];
    int      have;
    double   spare;
} mk_rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(mk_rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed ^ (a * 0xD1B54A32D192ED03ull) ^ (b * 0x8CB92BA72F3D8DD7ull);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    r->have = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_u64(mk_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static inline double rng_unif(mk_rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

/* Standard normal (Marsaglia's polar method). */
static double rng_normal(mk_rng *r)
{
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * rng_unif(r) - 1.0;
        v = 2.0 * rng_unif(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    r->spare = v * f;
    r->have = 1;
    return u * f;
}

static void rng_fill(mk_rng *r, float *x, int64_t n, double std)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(std * rng_normal(r));
}

/* ---- normal distribution ----------------------------------------------------- */

static double norm_pdf(double x) { return exp(-0.5 * x * x) / sqrt(2.0 * M_PI); }
static double norm_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* Phi^-1(p) for p in (0,1): Acklam's rational approximation, one Newton step. */
static double norm_inv(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double q, x;
    if (p < 0.02425) {
        q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        q = p - 0.5;
        double rr = q * q;
        x = (((((a[0] * rr + a[1]) * rr + a[2]) * rr + a[3]) * rr + a[4]) * rr + a[5]) * q /
            (((((b[0] * rr + b[1]) * rr + b[2]) * rr + b[3]) * rr + b[4]) * rr + 1);
    }
    double e = norm_cdf(x) - p;
    return x - e * sqrt(2 * M_PI) * exp(x * x / 2);
}

/* For z ~ N(mu, s^2): E[relu(z)] and E[relu(z)^2]. */
static void relu_moments(double mu, double s, double *m1, double *m2)
{
    double a = mu / s, P = norm_cdf(a), f = norm_pdf(a);
    *m1 = mu * P + s * f;
    *m2 = (mu * mu + s * s) * P + mu * s * f;
}

/* For g ~ N(mu, s^2): E[silu(g)^2], by a 64-point midpoint rule over +-6 s. */
static double silu2_moment(double mu, double s)
{
    double sum = 0, h = 12.0 / 64;
    for (int i = 0; i < 64; i++) {
        double z = -6.0 + (i + 0.5) * h, g = mu + s * z, y = g / (1.0 + exp(-g));
        sum += y * y * norm_pdf(z) * h;
    }
    return sum;
}

/* ---- the frequency model ----------------------------------------------------- */

/* A draw of r (frequency / mean) from the demo's measured distribution:
 * piecewise-linear inverse CDF through the quantiles. */
static double draw_r(mk_rng *r)
{
    double u = rng_unif(r) * 63.0;
    int i = (int)u;
    if (i >= 63)
        return demo_freq_q[63];
    return demo_freq_q[i] + (u - i) * (demo_freq_q[i + 1] - demo_freq_q[i]);
}

/* E[r^tail] of that distribution (exact for the piecewise-linear CDF, by
 * a fine midpoint rule). */
static double mean_r_pow(double tail)
{
    double s = 0;
    int n = 63 * 256;
    for (int k = 0; k < n; k++) {
        double u = (k + 0.5) / 256.0;
        int i = (int)u;
        double r = demo_freq_q[i] + (u - i) * (demo_freq_q[i + 1] - demo_freq_q[i]);
        s += r > 0 ? pow(r, tail) : 0.0;
    }
    return s / n;
}

/* Layer l of L's density: the demo profile stretched over L layers, scaled
 * so that the mean over the layers is 1 - sparsity. */
static double layer_density(int64_t l, int64_t L, double sparsity)
{
    double v;
    double x = L > 1 ? (double)l * 5.0 / (double)(L - 1) : 2.5;
    int i = (int)x;
    v = i >= 5 ? demo_density[5] : demo_density[i] + (x - i) * (demo_density[i + 1] - demo_density[i]);
    /* the mean of the stretched profile over L layers */
    double sm = 0;
    for (int64_t k = 0; k < L; k++) {
        double y = L > 1 ? (double)k * 5.0 / (double)(L - 1) : 2.5;
        int j = (int)y;
        sm += (j >= 5 ? demo_density[5] : demo_density[j] + (y - j) * (demo_density[j + 1] - demo_density[j])) /
              (double)L;
    }
    return v / sm * (1.0 - sparsity);
}

/* ---- the tensor plan ----------------------------------------------------------- */

/* One tensor to write: a tensor of the table (layout/checkpoint.h), and
 * where it goes. */
typedef struct {
    ckpt_tensor t;           /* name, weight, layer (-1 model-wide), shape */
    int64_t  rows, cols;     /* t.shape; cols == 0: a vector of `rows` */
    int      shard;
    uint64_t offset;         /* in the shard's data section */
    uint64_t bytes;
} t_entry;

typedef struct {
    t_entry *t;              /* owned, [n], in forward order */
    size_t   n;
    const char *st_dtype;    /* "F16" | "F32" */
    int      n_shards;
    uint64_t total;
} t_plan;

/* Every tensor of the table for hp (but a tied lm_head) in forward order,
 * in shards of about shard_bytes. -ENOMEM or 0. */
static int plan_build(t_plan *p, const hp_config *hp, fmt_dtype dt, uint64_t shard_bytes)
{
    ckpt_tensor *ts;
    size_t n;
    p->st_dtype = dt == FMT_F16 ? "F16" : "F32";
    if (ckpt_list(hp, CKPT_FORWARD_ORDER, &ts, &n) != 0)
        return -ENOMEM;
    p->t = calloc(n ? n : 1, sizeof *p->t);
    for (size_t i = 0; p->t && i < n; i++) {
        if (ts[i].optional)
            continue;
        t_entry *e = &p->t[p->n++];
        e->t = ts[i];
        e->rows = ts[i].shape[0];
        e->cols = ts[i].shape[1];
        e->bytes = fmt_bytes(dt, (uint64_t)e->rows * (uint64_t)(e->cols ? e->cols : 1));
    }
    free(ts);
    if (!p->t)
        return -ENOMEM;
    /* shards of about SHARD_BYTES, tensors in plan order */
    uint64_t cur = 0;
    int shard = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (cur > 0 && cur + p->t[i].bytes > shard_bytes) {
            shard++;
            cur = 0;
        }
        p->t[i].shard = shard;
        p->t[i].offset = cur;
        cur += p->t[i].bytes;
        p->total += p->t[i].bytes;
    }
    p->n_shards = shard + 1;
    return 0;
}

static void shard_name(char *buf, size_t cap, int i, int n)
{
    if (n == 1)
        snprintf(buf, cap, "model.safetensors");
    else
        snprintf(buf, cap, "model-%05d-of-%05d.safetensors", i + 1, n);
}

/* ---- the generator ----------------------------------------------------------- */

typedef struct {
    const mk_opts  *o;
    const hp_config *hp;
    uint64_t seed;
    /* unigram logit offsets, frequency-weighted mean 0 (owned) */
    double  *ulogit;         /* [V] */
    /* the carrier direction of the unigram logits (OPT), unit, owned */
    float   *u;              /* [d] */
    double   u_scale;        /* final LayerNorm bias = u_scale * u */
    /* llama: the constant residual dimension 0 and its normalised value per layer */
    double   c0;
    /* the residual stream's per-dimension std (mean square 1; 0 for Llama's
     * constant dimension); owned */
    float   *sd;             /* [d] */
    /* per layer, filled at the up (OPT) / gate (llama) rows, used by the bias
     * and the down rows (owned) */
    double  *p;              /* [F] activation probability */
    double  *bias;           /* [F] up bias (OPT) */
    double  *m1;             /* [F] E[act] */
    double   m2sum;          /* sum_j E[act^2] */
    int64_t  layer_of_p;     /* layer those belong to */
    double   dens_used;      /* mean p of the layer */
} mk_gen;

/* Expected residual variance per element before layer l (Llama's constant
 * dimension excluded), for the RMSNorm scale of the constant dimension. */
static double resid_var(const mk_gen *g, int64_t l)
{
    return 1.0 + (double)l * (g->o->attn_out * g->o->attn_out + g->o->ffn_out * g->o->ffn_out);
}

/* Llama: the value of the constant dimension after RMSNorm at layer l
 * (l == n_layers: the final norm). */
static double llama_x0(const mk_gen *g, int64_t l)
{
    double d = (double)g->hp->d_model, v = resid_var(g, l);
    return g->c0 / sqrt((g->c0 * g->c0 + (d - 1) * v) / d);
}

/* Per-layer activation probabilities (drawn at the first FFN row of the layer). */
static void layer_probs(mk_gen *g, int64_t l)
{
    if (g->layer_of_p == l)
        return;
    const hp_config *hp = g->hp;
    mk_rng r;
    rng_seed(&r, g->seed, 0x50524F42ull, (uint64_t)l);   /* "PROB" */
    double dens = layer_density(l, hp->n_layers, g->o->sparsity), er = mean_r_pow(g->o->tail), s = 0;
    for (int64_t j = 0; j < hp->d_ffn; j++) {
        double rj = draw_r(&r);
        double p = rj > 0 ? dens * pow(rj, g->o->tail) / er : 0.0;
        if (p < P_MIN)
            p = P_MIN;
        if (p > P_MAX)
            p = P_MAX;
        g->p[j] = p;
        s += p;
    }
    g->dens_used = s / (double)hp->d_ffn;
    g->m2sum = 0;
    g->layer_of_p = l;
}

/* Row i of the token embedding: N(0, 1) per element, orthogonal to u
 * (OPT) / constant dimension 0 (Llama), plus the unigram offset on it. */
static void emb_row(mk_gen *g, mk_rng *r, int64_t i, float *row, int64_t n)
{
    rng_fill(r, row, n, 1.0);
    for (int64_t k = 0; k < n; k++)
        row[k] *= g->sd[k];
    if (g->hp->family == HP_OPT) {
        double dot = 0;
        for (int64_t k = 0; k < n; k++)
            dot += (double)row[k] * g->u[k];
        for (int64_t k = 0; k < n; k++)
            row[k] = (float)(row[k] - dot * g->u[k] + g->ulogit[i] / g->u_scale * g->u[k]);
    } else {
        row[0] = (float)(g->c0 + g->ulogit[i] / llama_x0(g, g->hp->n_layers));
    }
}

/* Up row i of `layer`; OPT: also neuron i's up bias and moments. */
static void up_row(mk_gen *g, mk_rng *r, int64_t layer, int64_t i, float *row, int64_t n)
{
    layer_probs(g, layer);
    rng_fill(r, row, n, 1.0 / sqrt((double)g->hp->d_model));
    if (g->hp->family == HP_LLAMA) {
        row[0] = 0.0f;   /* the up value is symmetric: E[act] = 0 */
        return;
    }
    /* over tokens, w.x has variance sum_k w_k^2 E[x_k^2] = sum_k w_k^2 sd_k^2 */
    double nn = 0;
    for (int64_t k = 0; k < n; k++)
        nn += (double)row[k] * row[k] * g->sd[k] * g->sd[k];
    double s = sqrt(nn), b = -s * norm_inv(1.0 - g->p[i]), m1, m2;
    relu_moments(b, s, &m1, &m2);
    g->bias[i] = b;
    g->m1[i] = m1;
    g->m2sum += m2;
}

/* Gate row i of `layer` (Llama): gate.x = (rows 1..d-1).x + row[0] * x0:
 * the constant dimension sets each neuron's offset so that
 * P(gate.x > GATE_REF) = p_j. */
static void gate_row(mk_gen *g, mk_rng *r, int64_t layer, int64_t i, float *row, int64_t n)
{
    double dd = (double)g->hp->d_model;
    layer_probs(g, layer);
    rng_fill(r, row, n, 1.0 / sqrt(dd));
    double nn = 0, v = resid_var(g, layer), x0 = llama_x0(g, layer);
    for (int64_t k = 1; k < n; k++)
        nn += (double)row[k] * row[k] * g->sd[k] * g->sd[k];
    /* RMSNorm: the other elements have mean square v * (d / (c0^2 + (d-1) v)) */
    double s = sqrt(nn * v * dd / (g->c0 * g->c0 + (dd - 1) * v));
    double mu = GATE_REF - s * norm_inv(1.0 - g->p[i]);
    row[0] = (float)(mu / x0);
    g->m1[i] = 0;
    g->m2sum += silu2_moment(mu, s);   /* times E[up^2] = 1 */
}

/* Down row i: FFN output per element ~ N(0, ffn_out^2) = sum_j E[act_j^2] w^2;
 * OPT: also element i of the down bias. */
static void down_row(mk_gen *g, mk_rng *r, int64_t i, float *row, int64_t n)
{
    const hp_config *hp = g->hp;
    double sd = g->o->ffn_out * g->sd[i] / sqrt(g->m2sum > 0 ? g->m2sum : 1.0);
    rng_fill(r, row, n, sd);
    if (hp->family == HP_LLAMA && i == 0)
        memset(row, 0, (size_t)n * sizeof *row);
    if (hp->family == HP_OPT) {
        double c = 0;
        for (int64_t k = 0; k < n; k++)
            c += (double)row[k] * g->m1[k];
        g->bias[hp->d_ffn + i] = -c;   /* b2, centring the output */
    }
}

/* Row `i` of tensor e (cols values, or one value of a vector at index i). */
static void gen_row(mk_gen *g, const t_entry *e, mk_rng *r, int64_t i, float *row)
{
    const hp_config *hp = g->hp;
    const mk_opts *o = g->o;
    int64_t d = hp->d_model, n = e->cols;
    double dd = (double)d;
    switch (e->t.weight) {
    case CKPT_TOK_EMB:
        emb_row(g, r, i, row, n);
        break;
    case CKPT_POS_EMB:
        break;   /* gen_tensor runs the AR(1) process */
    case CKPT_ATTN_NORM_W:
    case CKPT_FFN_NORM_W:
        for (int64_t k = 0; k < (n ? n : 1); k++)
            row[k] = 1.0f;
        break;
    case CKPT_ATTN_NORM_B:
    case CKPT_FFN_NORM_B:
    case CKPT_BQ:
    case CKPT_BK:
    case CKPT_BV:
    case CKPT_BO:
    case CKPT_GATE_B:
    case CKPT_UP_B:
    case CKPT_DOWN_B:
        row[0] = 0.0f;
        break;
    case CKPT_WQ:
    case CKPT_WK:
        /* scores q.k / sqrt(hd) have std ~ o->qk: q, k elements std sqrt(qk) */
        rng_fill(r, row, n, sqrt(o->qk) / sqrt(dd));
        if (hp->family == HP_LLAMA)
            row[0] = 0.0f;
        break;
    case CKPT_WV:
        rng_fill(r, row, n, 1.0 / sqrt(dd));
        if (hp->family == HP_LLAMA)
            row[0] = 0.0f;
        break;
    case CKPT_WO:
        /* attention output ~ an average of v (unit elements): scale to
         * attn_out, along the residual spectrum */
        rng_fill(r, row, n, o->attn_out * g->sd[i] / sqrt(dd));
        if (hp->family == HP_LLAMA && i == 0)
            memset(row, 0, (size_t)n * sizeof *row);
        break;
    case CKPT_UP_W:
        up_row(g, r, e->t.layer, i, row, n);
        break;
    case CKPT_GATE_W:
        gate_row(g, r, e->t.layer, i, row, n);
        break;
    case CKPT_DOWN_W:
        down_row(g, r, i, row, n);
        break;
    case CKPT_FINAL_NORM_W:
        /* tiny: the context term of the logits stays well below the unigram
         * term (else the tied embedding makes the model repeat its input) */
        row[0] = (float)(0.5 / dd);
        if (hp->family == HP_LLAMA && i == 0)
            row[0] = 1.0f;
        break;
    case CKPT_FINAL_NORM_B:
        row[0] = (float)(g->u_scale * g->u[i]);
        break;
    case CKPT_LM_HEAD:       /* tied: not written */
    case CKPT_N_WEIGHTS:
        break;
    }
}

/* The residual stream's per-dimension std: variance exp(-rank/tau) plus an
 * even floor, ranks assigned to the dimensions in a random order, mean
 * square 1. Real hidden states are far from isotropic (a few hundred
 * directions carry most of the variance); that is what lets a low-rank
 * predictor see the FFN's pre-activations (the top 128 directions carry
 * ~96% of the variance with the defaults). Llama: dimension 0 is the
 * constant one, left out (std 0). */
static void residual_spectrum(mk_gen *g, const mk_opts *o, const hp_config *hp)
{
    int64_t d = hp->d_model, first = hp->family == HP_LLAMA ? 1 : 0, n = d - first;
    mk_rng r;
    rng_seed(&r, g->seed, 0x53504543ull, 0);   /* "SPEC" */
    double tot = 0;
    for (int64_t k = 0; k < n; k++)
        tot += exp(-(double)k / o->spec_tau);
    for (int64_t k = 0; k < d; k++)
        g->sd[k] = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        double v = (1.0 - o->spec_floor) * exp(-(double)k / o->spec_tau) / tot + o->spec_floor / (double)n;
        g->sd[first + k] = (float)sqrt(v * (double)n);
    }
    for (int64_t k = n - 1; k > 0; k--) {   /* shuffle the dimensions */
        int64_t j = (int64_t)(rng_u64(&r) % (uint64_t)(k + 1));
        float t = g->sd[first + k];
        g->sd[first + k] = g->sd[first + j];
        g->sd[first + j] = t;
    }
}

/* ---- writing ----------------------------------------------------------------- */

typedef struct {
    FILE    *f;
    char    *path;
    int      shard;          /* open shard, -1 none */
    uint64_t written;        /* all data bytes so far */
    uint64_t total;
    double   t0;
    int      tty;
    void    *buf;            /* one row in the store dtype */
} mk_out;


static void progress(mk_out *w, const char *what, int final)
{
    double dt = cli_now_s() - w->t0;
    double gb = (double)w->written / 1e9, tot = (double)w->total / 1e9;
    fprintf(stderr, "%s" PROG ": %-48s %6.2f / %.2f GB  %4.0f MB/s%s", w->tty ? "\r" : "", what, gb, tot,
            dt > 0 ? (double)w->written / 1e6 / dt : 0.0, w->tty && !final ? "" : "\n");
    fflush(stderr);
}

static int shard_header(const t_plan *p, int shard, char **out, size_t *len)
{
    json_t *root = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    for (size_t i = 0; i < p->n; i++) {
        const t_entry *e = &p->t[i];
        if (e->shard != shard)
            continue;
        json_t *t = json_object(), *sh = json_array(), *off = json_array();
        json_array_append_new(sh, json_integer(e->rows));
        if (e->cols)
            json_array_append_new(sh, json_integer(e->cols));
        json_array_append_new(off, json_integer((json_int_t)e->offset));
        json_array_append_new(off, json_integer((json_int_t)(e->offset + e->bytes)));
        json_object_set_new(t, "dtype", json_string(p->st_dtype));
        json_object_set_new(t, "shape", sh);
        json_object_set_new(t, "data_offsets", off);
        json_object_set_new(root, e->t.name, t);
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(root);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s), pad = (8 - n % 8) % 8;
    char *h = malloc(8 + n + pad);
    if (!h) {
        free(s);
        return -ENOMEM;
    }
    fmt_put_le64((unsigned char *)h, (uint64_t)(n + pad));
    memcpy(h + 8, s, n);
    memset(h + 8 + n, ' ', pad);
    free(s);
    *out = h;
    *len = 8 + n + pad;
    return 0;
}

static int out_open_shard(mk_out *w, const t_plan *p, const char *dir, int shard, ierr *err)
{
    if (w->f && fclose(w->f) != 0) {
        w->f = NULL;
        return ierr_set(err, -EIO, "%s: write error", w->path);
    }
    w->f = NULL;
    free(w->path);
    char name[64];
    shard_name(name, sizeof name, shard, p->n_shards);
    w->path = io_join(dir, name);
    if (!w->path)
        return ierr_set(err, -ENOMEM, "out of memory");
    w->f = fopen(w->path, "wb");
    if (!w->f)
        return ierr_set(err, -errno, "%s: %s", w->path, strerror(errno));
    setvbuf(w->f, NULL, _IOFBF, 8u << 20);
    char *h;
    size_t hl;
    if (shard_header(p, shard, &h, &hl) != 0)
        return ierr_set(err, -ENOMEM, "out of memory");
    size_t put = fwrite(h, 1, hl, w->f);
    free(h);
    if (put != hl)
        return ierr_set(err, -EIO, "%s: write error", w->path);
    w->shard = shard;
    return 0;
}

static int out_put(mk_out *w, const float *x, size_t n, fmt_dtype dt, ierr *err)
{
    fmt_from_f32(dt, x, w->buf, n);
    size_t bytes = (size_t)fmt_bytes(dt, n);
    if (fwrite(w->buf, 1, bytes, w->f) != bytes)
        return ierr_set(err, -EIO, "%s: write error: %s", w->path, strerror(errno));
    w->written += bytes;
    return 0;
}

/* Generate and write tensor e. */
static int gen_tensor(mk_gen *g, mk_out *w, const t_plan *p, const char *dir, size_t idx, float *row, ierr *err)
{
    const t_entry *e = &p->t[idx];
    int rc;
    if (w->shard != e->shard && (rc = out_open_shard(w, p, dir, e->shard, err)) != 0)
        return rc;
    mk_rng r;
    /* the stream depends on the tensor's name only */
    uint64_t h = 1469598103934665603ull;
    for (const char *c = e->t.name; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    rng_seed(&r, g->seed, h, 0);
    const hp_config *hp = g->hp;
    if (e->t.weight == CKPT_UP_B || e->t.weight == CKPT_DOWN_B) {
        /* computed along the rows of fc1 / fc2 */
        const double *src = e->t.weight == CKPT_UP_B ? g->bias : g->bias + hp->d_ffn;
        for (int64_t i = 0; i < e->rows; i++)
            row[i] = (float)src[i];
        return out_put(w, row, (size_t)e->rows, ckpt_dtype(g->o), err);
    }
    if (e->cols == 0) {
        for (int64_t i = 0; i < e->rows; i++)
            gen_row(g, e, &r, i, row + i);
        return out_put(w, row, (size_t)e->rows, ckpt_dtype(g->o), err);
    }
    if (e->t.weight == CKPT_POS_EMB) {
        /* AR(1) over the positions: p_{t+1} = a p_t + sqrt(1 - a^2) eps */
        double a = exp(-1.0 / g->o->slow_len), sd = sqrt(g->o->slow);
        float *prev = row + e->cols;
        rng_fill(&r, prev, e->cols, sd);
        for (int64_t k = 0; k < e->cols; k++)
            prev[k] *= g->sd[k];
        for (int64_t i = 0; i < e->rows; i++) {
            for (int64_t k = 0; k < e->cols; k++)
                row[k] = (float)(a * prev[k] + sqrt(1 - a * a) * sd * g->sd[k] * rng_normal(&r));
            memcpy(prev, row, (size_t)e->cols * sizeof *row);
            if ((rc = out_put(w, row, (size_t)e->cols, ckpt_dtype(g->o), err)) != 0)
                return rc;
        }
        return 0;
    }
    for (int64_t i = 0; i < e->rows; i++) {
        if (g_stop)
            return ierr_set(err, -EINTR, "interrupted");
        gen_row(g, e, &r, i, row);
        if ((rc = out_put(w, row, (size_t)e->cols, ckpt_dtype(g->o), err)) != 0)
            return rc;
        if ((i & 1023) == 1023 && w->tty)
            progress(w, e->t.name, 0);
    }
    return 0;
}

/* ---- side files -------------------------------------------------------------- */

static int write_text(const char *dir, const char *name, const char *text, ierr *err)
{
    char *path = io_join(dir, name);
    if (!path)
        return ierr_set(err, -ENOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f)
        rc = ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    else {
        fputs(text, f);
        if (fclose(f) != 0)
            rc = ierr_set(err, -EIO, "%s: write error", path);
    }
    free(path);
    return rc;
}

static int write_json_file(const char *dir, const char *name, json_t *j, ierr *err)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!s)
        return ierr_set(err, -ENOMEM, "out of memory");
    size_t n = strlen(s);
    char *t = malloc(n + 2);
    if (!t) {
        free(s);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    memcpy(t, s, n);
    t[n] = '\n';
    t[n + 1] = 0;
    free(s);
    int rc = write_text(dir, name, t, err);
    free(t);
    return rc;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name, int optional, ierr *err)
{
    char *src = io_join(from_dir, name);
    if (!src)
        return ierr_set(err, -ENOMEM, "out of memory");
    char *data = NULL;
    size_t len = 0;
    int rc = io_read_file(src, MAX_TEXT, &data, &len, err);
    free(src);
    if (rc == -ENOENT && optional)
        return 0;
    if (rc)
        return rc;
    char *dst = io_join(to_dir, name);
    FILE *f = dst ? fopen(dst, "wb") : NULL;
    if (!f)
        rc = ierr_set(err, dst ? -errno : -ENOMEM, "%s: %s", dst ? dst : name, strerror(errno));
    else if (fwrite(data, 1, len, f) != len || fclose(f) != 0)
        rc = ierr_set(err, -EIO, "%s: write error", dst);
    free(dst);
    free(data);
    return rc;
}

/* The model type whose modeling code runs activation f (hparams.c). */
static const char *llama_model_type(act_fn f)
{
    switch (f) {
    case ACT_FN_FATRELU: return "sparsellama";
    case ACT_FN_DRELU: return "bamboo";
    case ACT_FN_CATS: return "sparse_llama";
    default: return "llama";
    }
}

/* hidden_act and the activation's own keys. */
static void llama_act_keys(json_t *c, const hp_config *hp)
{
    json_object_set_new(c, "hidden_act", json_string(hp->act == ACT_FN_SILU || hp->act == ACT_FN_CATS ? "silu"
                                                     : hp->act == ACT_FN_FATRELU                     ? "fatrelu"
                                                                                                     : "relu"));
    if (hp->act == ACT_FN_FATRELU)
        json_object_set_new(c, "hidden_act_param", json_real(hp->act_param[0]));
    if (hp->act == ACT_FN_CATS) {
        json_t *t = json_array();
        for (int64_t l = 0; l < hp->n_layers; l++)
            json_array_append_new(t, json_real(hp->act_param[l]));
        json_object_set_new(c, "use_sparse_model", json_true());
        json_object_set_new(c, "thresholds", t);
    }
}

static json_t *config_json(const mk_opts *o, const hp_config *hp)
{
    json_t *c = json_object();
    if (hp->family == HP_OPT) {
        json_object_set_new(c, "_name_or_path", json_sprintf("synthetic-%s", o->shape->name));
        json_object_set_new(c, "architectures", json_pack("[s]", "OPTForCausalLM"));
        json_object_set_new(c, "model_type", json_string("opt"));
        json_object_set_new(c, "activation_function", json_string("relu"));
        json_object_set_new(c, "hidden_size", json_integer(hp->d_model));
        json_object_set_new(c, "word_embed_proj_dim", json_integer(hp->d_model));
        json_object_set_new(c, "ffn_dim", json_integer(hp->d_ffn));
        json_object_set_new(c, "num_hidden_layers", json_integer(hp->n_layers));
        json_object_set_new(c, "num_attention_heads", json_integer(hp->n_heads));
        json_object_set_new(c, "max_position_embeddings", json_integer(hp->max_pos));
        json_object_set_new(c, "vocab_size", json_integer(hp->vocab_size));
        json_object_set_new(c, "do_layer_norm_before", json_true());
        json_object_set_new(c, "enable_bias", json_true());
        json_object_set_new(c, "layer_norm_elementwise_affine", json_true());
        json_object_set_new(c, "dropout", json_real(0.0));
        json_object_set_new(c, "attention_dropout", json_real(0.0));
        json_object_set_new(c, "activation_dropout", json_real(0.0));
        json_object_set_new(c, "bos_token_id", json_integer(2));
        json_object_set_new(c, "eos_token_id", json_integer(2));
        json_object_set_new(c, "pad_token_id", json_integer(1));
    } else {
        json_object_set_new(c, "_name_or_path", json_sprintf("synthetic-%s", o->shape->name));
        /* a window makes it a Mistral (the activations' own types have none) */
        const char *type = llama_model_type(hp->act);
        int mistral = hp->sliding_window && strcmp(type, "llama") == 0;
        json_object_set_new(c, "architectures", json_pack("[s]", mistral ? "MistralForCausalLM" : "LlamaForCausalLM"));
        json_object_set_new(c, "model_type", json_string(mistral ? "mistral" : type));
        if (hp->sliding_window)
            json_object_set_new(c, "sliding_window", json_integer(hp->sliding_window));
        json_object_set_new(c, "hidden_size", json_integer(hp->d_model));
        json_object_set_new(c, "intermediate_size", json_integer(hp->d_ffn));
        json_object_set_new(c, "num_hidden_layers", json_integer(hp->n_layers));
        json_object_set_new(c, "num_attention_heads", json_integer(hp->n_heads));
        json_object_set_new(c, "num_key_value_heads", json_integer(hp->n_kv_heads));
        json_object_set_new(c, "max_position_embeddings", json_integer(hp->max_pos));
        json_object_set_new(c, "vocab_size", json_integer(hp->vocab_size));
        json_object_set_new(c, "rms_norm_eps", json_real(hp->norm_eps));
        json_object_set_new(c, "rope_theta", json_real(hp->rope_theta));
        llama_act_keys(c, hp);
        json_object_set_new(c, "attention_bias", json_false());
        json_object_set_new(c, "mlp_bias", json_false());
        json_object_set_new(c, "bos_token_id", json_integer(1));
        json_object_set_new(c, "eos_token_id", json_integer(2));
    }
    json_object_set_new(c, "tie_word_embeddings", json_true());
    json_object_set_new(c, "use_cache", json_true());
    json_object_set_new(c, "torch_dtype", json_string(ckpt_dtype(o) == FMT_F16 ? "float16" : "float32"));
    json_t *s = json_object();
    json_object_set_new(s, "generator", json_string(PROG));
    json_object_set_new(s, "note", json_string("SYNTHETIC random weights with the shape of the named model; FFN "
                                               "activation statistics follow opt-relu-shakespeare's measured ones "
                                               "(see tools/mkmodel.c); the text it writes means nothing"));
    json_object_set_new(s, "shape", json_string(o->shape->name));
    json_object_set_new(s, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(s, "target_sparsity", json_real(o->sparsity));
    json_object_set_new(s, "tail", json_real(o->tail));
    json_object_set_new(s, "slow", json_real(o->slow));
    json_object_set_new(s, "slow_len", json_real(o->slow_len));
    json_object_set_new(s, "attn_out", json_real(o->attn_out));
    json_object_set_new(s, "ffn_out", json_real(o->ffn_out));
    json_object_set_new(s, "qk", json_real(o->qk));
    json_object_set_new(s, "spectrum_tau", json_real(o->spec_tau));
    json_object_set_new(s, "spectrum_floor", json_real(o->spec_floor));
    json_object_set_new(c, "synthetic", s);
    return c;
}

/* ---- tokenizer and unigram frequencies ----------------------------------------- */

/* A tokenizer file of the folder ctx (a tok_file_fn). */
static int dir_file(void *ctx, const char *name, char **data, size_t *len, ierr *err)
{
    char *p = io_join(ctx, name);
    if (!p)
        return ierr_set(err, -ENOMEM, "out of memory");
    int rc = io_read_file(p, MAX_TEXT, data, len, err);
    free(p);
    return rc;
}


/* Log unigram frequencies of the text's tokens (add-one), minus their
 * frequency-weighted mean; all zero without a text. */
static int unigram(const char *path, uint64_t max_bytes, const tok *tk, double *ul, int64_t V, ierr *err)
{
    for (int64_t v = 0; v < V; v++)
        ul[v] = 0;
    if (!path || !*path)
        return 0;
    char *text = NULL;
    size_t len = 0;
    int rc = io_read_file(path, MAX_TEXT, &text, &len, err);
    if (rc)
        return rc;
    if (max_bytes && len > max_bytes)
        len = (size_t)max_bytes;
    int32_t *ids = NULL;
    size_t n = 0;
    rc = tok_encode(tk, text, len, &ids, &n, err);
    free(text);
    if (rc)
        return rc;
    double *cnt = calloc((size_t)V, sizeof *cnt);
    if (!cnt) {
        free(ids);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V)
            cnt[ids[i]] += 1;
    free(ids);
    double tot = 0, mean = 0;
    for (int64_t v = 0; v < V; v++)
        tot += cnt[v] + 1;
    for (int64_t v = 0; v < V; v++) {
        double p = (cnt[v] + 1) / tot;
        ul[v] = log(p);
        mean += p * ul[v];
    }
    for (int64_t v = 0; v < V; v++)
        ul[v] -= mean;
    free(cnt);
    return 0;
}

/* ---- main -------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --shape NAME --out DIR [options]\n"
            "\n"
            "Write a Hugging Face checkpoint (config.json, sharded safetensors with\n"
            "model.safetensors.index.json, tokenizer files) with the shape of a real model\n"
            "and SYNTHETIC weights whose FFN activation statistics follow the ones measured\n"
            "on the demo model opt-relu-shakespeare (method: the comment at the top of\n"
            "tools/mkmodel.c; measure the result with inflash-actstats). Streamed: memory\n"
            "stays at a few rows. Then: inflash-pack DIR STORE --dtype f16 (or f32, q8_0, q4_0).\n"
            "\n"
            "  --shape NAME       opt-1.3b | opt-2.7b | opt-6.7b (OPT hidden/layers/heads/ffn\n"
            "                     2048/24/32/8192, 2560/32/32/10240, 4096/32/32/16384),\n"
            "                     llama-7b (4096/32/32/11008), tiny, tiny-llama (tests)\n"
            "  --out DIR          the checkpoint folder to create\n"
            "  --dtype T          f16 (default) or f32; q8_0 or q4_0: an F32 checkpoint for\n"
            "                     inflash-pack --dtype q8_0|q4_0 (the shape's widths must be\n"
            "                     multiples of 32, checked here)\n"
            "  --sparsity S       mean FFN sparsity to aim at (default 0.97)\n"
            "  --seed S           random seed (default 1)\n"
            "  --layers N         fewer (or more) layers than the shape has\n"
            "  --sliding-window N llama shapes: write a Mistral config whose attention sees\n"
            "                     the last N positions\n"
            "  --tokenizer DIR    tokenizer files to copy (default: the demo's, OPT vocabulary\n"
            "                     1024; stories260K's for llama, vocabulary 512)\n"
            "  --text FILE        text whose unigram frequencies the sampled tokens follow\n"
            "                     (default: the demo's training text); --text '' for none\n"
            "  --force            replace an existing DIR\n"
            "  --act A            Llama shapes' FFN activation: silu (default), relu\n"
            "                     (ReLU-Llama), fatrelu (ProSparse), drelu (Bamboo) or\n"
            "                     cats (CATS thresholds); the config of that checkpoint\n"
            "generator knobs (defaults tuned with inflash-actstats, see bench/README.md):\n"
            "  --tail G           neuron frequencies ~ (demo frequency)^G (default %.2f)\n"
            "  --slow V           variance of the slow context component (default %.2f)\n"
            "  --slow-len L       its correlation length in tokens (default %.0f)\n"
            "  --attn-out S       residual std added per attention (default %.2f)\n"
            "  --ffn-out S        residual std added per FFN (default %.2f)\n"
            "  --qk S             std of the attention scores (default %.2f)\n"
            "  --spectrum-tau T   residual variance ~ exp(-rank/T) over dimensions (default %.0f)\n"
            "  --spectrum-floor F ... plus a fraction F spread evenly (default %.2f)\n"
            "  -h, --help         this text\n"
            "\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n",
            0.3, 0.05, 16.0, 0.3, 0.5, 1.0, 32.0, 0.02);
}

static int parse_args(int argc, char **argv, mk_opts *o)
{
    enum { O_SHAPE = 256, O_OUT, O_DTYPE, O_SPARS, O_SEED, O_LAYERS, O_TOKDIR, O_TEXT, O_FORCE, O_TAIL, O_SLOW,
           O_SLOWLEN, O_ATTN, O_FFN, O_QK, O_SHARD, O_TAU, O_FLOOR, O_SWIN, O_ACT };
    static const struct option lo[] = {
        {"shape", required_argument, 0, O_SHAPE},     {"out", required_argument, 0, O_OUT},
        {"dtype", required_argument, 0, O_DTYPE},     {"sparsity", required_argument, 0, O_SPARS},
        {"seed", required_argument, 0, O_SEED},       {"layers", required_argument, 0, O_LAYERS},
        {"tokenizer", required_argument, 0, O_TOKDIR}, {"text", required_argument, 0, O_TEXT},
        {"force", no_argument, 0, O_FORCE},           {"tail", required_argument, 0, O_TAIL},
        {"slow", required_argument, 0, O_SLOW},       {"slow-len", required_argument, 0, O_SLOWLEN},
        {"attn-out", required_argument, 0, O_ATTN},   {"ffn-out", required_argument, 0, O_FFN},
        {"qk", required_argument, 0, O_QK},           {"shard-mb", required_argument, 0, O_SHARD},
        {"spectrum-tau", required_argument, 0, O_TAU}, {"spectrum-floor", required_argument, 0, O_FLOOR},
        {"sliding-window", required_argument, 0, O_SWIN}, {"act", required_argument, 0, O_ACT},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->dtype = FMT_F16;
    o->sparsity = 0.97;
    o->seed = 1;
    o->tail = 0.3;
    o->slow = 0.05;
    o->slow_len = 16;
    o->attn_out = 0.3;
    o->ffn_out = 0.5;
    o->qk = 1.0;
    o->shard_bytes = SHARD_BYTES;
    o->spec_tau = 32;
    o->spec_floor = 0.02;
    o->act = ACT_FN_SILU;
    int c;
    double v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        const char *bad = NULL;
        switch (c) {
        case 'h': usage(stdout); return 1;
        case O_SHAPE:
            for (size_t i = 0; i < N_SHAPES; i++)
                if (strcmp(optarg, shapes[i].name) == 0)
                    o->shape = &shapes[i];
            if (!o->shape)
                bad = "--shape";
            break;
        case O_OUT: o->out = optarg; break;
        case O_DTYPE:
            if (fmt_dtype_parse(optarg, &o->dtype) != 0 || o->dtype == FMT_BF16)
                bad = "--dtype";
            break;
        case O_SPARS: if (cli_parse_f64(optarg, 0.0, 0.9999, &o->sparsity)) bad = "--sparsity"; break;
        case O_SEED:
            if (cli_parse_f64(optarg, 0, 9.0e15, &v) || v != floor(v)) bad = "--seed";
            else o->seed = (uint64_t)v;
            break;
        case O_LAYERS:
            if (cli_parse_f64(optarg, 1, 1024, &v) || v != floor(v)) bad = "--layers";
            else o->layers = (int64_t)v;
            break;
        case O_SWIN:
            if (cli_parse_f64(optarg, 1, 1 << 24, &v) || v != floor(v)) bad = "--sliding-window";
            else o->window = (int64_t)v;
            break;
        case O_TOKDIR: o->tokdir = optarg; break;
        case O_TEXT: o->text = optarg; break;
        case O_FORCE: o->force = 1; break;
        case O_ACT: if (act_fn_parse(optarg, &o->act)) bad = "--act"; break;
        case O_TAIL: if (cli_parse_f64(optarg, 0.0, 4.0, &o->tail)) bad = "--tail"; break;
        case O_SLOW: if (cli_parse_f64(optarg, 0.0, 100.0, &o->slow)) bad = "--slow"; break;
        case O_SLOWLEN: if (cli_parse_f64(optarg, 0.01, 1e6, &o->slow_len)) bad = "--slow-len"; break;
        case O_ATTN: if (cli_parse_f64(optarg, 0.0, 100.0, &o->attn_out)) bad = "--attn-out"; break;
        case O_FFN: if (cli_parse_f64(optarg, 0.0, 100.0, &o->ffn_out)) bad = "--ffn-out"; break;
        case O_QK: if (cli_parse_f64(optarg, 0.0, 100.0, &o->qk)) bad = "--qk"; break;
        case O_TAU: if (cli_parse_f64(optarg, 0.5, 1e9, &o->spec_tau)) bad = "--spectrum-tau"; break;
        case O_FLOOR: if (cli_parse_f64(optarg, 0.0, 1.0, &o->spec_floor)) bad = "--spectrum-floor"; break;
        case O_SHARD:   /* a size; a bare number in MiB */
            if (cli_parse_size(optarg, (uint64_t)1 << 20, &o->shard_bytes) || o->shard_bytes < 1 ||
                o->shard_bytes > (uint64_t)1 << 40)
                bad = "--shard-mb";
            break;
        default:
            return cli_bad_option(PROG, c, argv);
        }
        if (bad) {
            fprintf(stderr, PROG ": %s: bad value '%s'\n", bad, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, PROG ": unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->shape || !o->out) {
        fprintf(stderr, PROG ": --shape and --out are required (see --help)\n");
        return -1;
    }
    if (o->window && o->shape->family != HP_LLAMA) {
        fprintf(stderr, PROG ": --sliding-window goes with a llama shape\n");
        return -1;
    }
    if (o->shape->family == HP_OPT && o->act != ACT_FN_SILU) {
        fprintf(stderr, PROG ": --act: the OPT shapes are ReLU only\n");
        return -1;
    }
    return 0;
}

/* A default path under the source root, or under $INFLASH_SHARED for the
 * parts of ../shared. Returns malloc'd. */
static char *default_path(const char *rel)
{
    const char *sh = getenv("INFLASH_SHARED");
    if (sh && strncmp(rel, "../shared/", 10) == 0)
        return io_join(sh, rel + 10);
    return io_join(INFLASH_SOURCE_DIR, rel);
}

/* The shape's hyperparameters (--layers applied), with the tokenizer's
 * vocabulary; the rest as the real models have them. */
static void shape_config(const mk_opts *o, const tok *tk, hp_config *hp)
{
    const mk_shape *sh = o->shape;
    memset(hp, 0, sizeof *hp);
    hp->family = sh->family;
    hp->d_model = sh->d;
    hp->n_layers = o->layers ? o->layers : sh->layers;
    hp->n_heads = sh->heads;
    hp->n_kv_heads = sh->kv_heads;
    hp->d_ffn = sh->ffn;
    hp->vocab_size = tok_vocab_size(tk);
    hp->max_pos = sh->max_pos;
    hp->pos_offset = sh->family == HP_OPT ? 2 : 0;
    hp->norm_eps = sh->family == HP_OPT ? 1e-5 : 1e-6;   /* as the real models */
    hp->rope_theta = sh->family == HP_OPT ? 0 : 10000.0;
    hp->act = sh->family == HP_OPT ? ACT_FN_RELU : o->act;
    hp->gated = sh->family == HP_LLAMA;
    /* the generator aims at P(gate.x > 1) = p_j: thresholds there keep the
     * --sparsity it targets (CATS: silu(1), a little apart per layer) */
    for (int64_t l = 0; l < hp->n_layers && l < HP_MAX_LAYERS; l++)
        hp->act_param[l] = hp->act == ACT_FN_FATRELU ? 1.0f
                           : hp->act == ACT_FN_CATS  ? (float)(0.7310586 * (1.0 + 0.01 * (double)(l % 3)))
                                                     : 0.0f;
    hp->tie_embeddings = 1;
    hp->sliding_window = o->window;
}

static void gen_free(mk_gen *g)
{
    free(g->ulogit);
    free(g->u);
    free(g->p);
    free(g->bias);
    free(g->m1);
    free(g->sd);
}

/* The generator for hp: its arrays, and what is model-wide: the unigram
 * logits of `text` (its first text_bytes bytes, 0 = all; "" = none), their
 * carrier direction, the residual spectrum. gen_free frees it, also after
 * an error. */
static int gen_init(mk_gen *g, const mk_opts *o, const hp_config *hp, const tok *tk, const char *text,
                    uint64_t text_bytes, ierr *err)
{
    int64_t d = hp->d_model, F = hp->d_ffn;
    memset(g, 0, sizeof *g);
    g->o = o;
    g->hp = hp;
    g->seed = o->seed;
    g->layer_of_p = -1;
    g->ulogit = calloc((size_t)hp->vocab_size, sizeof *g->ulogit);
    g->u = calloc((size_t)d, sizeof *g->u);
    g->p = calloc((size_t)F, sizeof *g->p);
    g->bias = calloc((size_t)(F + d), sizeof *g->bias);
    g->m1 = calloc((size_t)F, sizeof *g->m1);
    g->sd = calloc((size_t)d, sizeof *g->sd);
    if (!g->ulogit || !g->u || !g->p || !g->bias || !g->m1 || !g->sd)
        return ierr_set(err, -ENOMEM, "out of memory");
    int rc = unigram(text, text_bytes, tk, g->ulogit, hp->vocab_size, err);
    if (rc)
        return rc;
    /* the unigram carrier: a random unit direction; the final LayerNorm bias
     * u_scale * u turns e_v's component ulogit_v / u_scale into the logit */
    mk_rng r;
    rng_seed(&r, o->seed, 0x44495245ull, 0);   /* "DIRE" */
    double nn = 0;
    for (int64_t k = 0; k < d; k++) {
        g->u[k] = (float)rng_normal(&r);
        nn += (double)g->u[k] * g->u[k];
    }
    for (int64_t k = 0; k < d; k++)
        g->u[k] = (float)(g->u[k] / sqrt(nn));
    g->u_scale = sqrt((double)d) / 4.0;
    residual_spectrum(g, o, hp);
    g->c0 = sqrt((double)d);
    return 0;
}

/* *tmp = DIR.tmp.<pid> (malloc'd), created; DIR must not exist without
 * --force. */
static int make_tmp(const mk_opts *o, char **tmp, ierr *err)
{
    struct stat st;
    *tmp = NULL;
    if (stat(o->out, &st) == 0 && !o->force)
        return ierr_set(err, -EEXIST, "%s: exists (use --force to replace it)", o->out);
    size_t tl = strlen(o->out) + 32;
    if (!(*tmp = malloc(tl)))
        return ierr_set(err, -ENOMEM, "out of memory");
    snprintf(*tmp, tl, "%s.tmp.%ld", o->out, (long)getpid());
    if (mkdir(*tmp, 0755) != 0) {
        int rc = ierr_set(err, -errno, "%s: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
        return rc;
    }
    return 0;
}

/* config.json, and the tokenizer files of tokdir that exist, into dir. */
static int write_side_files(const mk_opts *o, const hp_config *hp, const char *tokdir, const char *dir, ierr *err)
{
    static const char *tokfiles[] = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                                     "special_tokens_map.json", "generation_config.json"};
    json_t *cfg = config_json(o, hp);
    int rc = write_json_file(dir, "config.json", cfg, err);
    json_decref(cfg);
    for (size_t i = 0; rc == 0 && i < sizeof tokfiles / sizeof *tokfiles; i++)
        rc = copy_file(tokdir, dir, tokfiles[i], 1, err);
    return rc;
}

/* Generate every tensor of the plan into its shard in dir, with a
 * progress line per layer. */
static int write_tensors(mk_gen *g, const t_plan *plan, const char *dir, ierr *err)
{
    const mk_opts *o = g->o;
    const hp_config *hp = g->hp;
    int64_t d = hp->d_model, F = hp->d_ffn, maxc = d > F ? d : F;
    mk_out w;
    memset(&w, 0, sizeof w);
    w.shard = -1;
    w.total = plan->total;
    w.buf = malloc((size_t)maxc * 4);
    float *row = calloc((size_t)(2 * maxc + hp->max_pos + 2), sizeof *row);
    int rc = w.buf && row ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    w.t0 = cli_now_s();
    w.tty = isatty(2);
    if (!rc)
        fprintf(stderr, PROG ": %s%s, %" PRId64 " layers, %s, %.2f GB in %d shard%s -> %s\n", o->shape->name,
                o->layers ? " (layers overridden)" : "", hp->n_layers, fmt_dtype_name(ckpt_dtype(o)),
                (double)plan->total / 1e9, plan->n_shards, plan->n_shards == 1 ? "" : "s", o->out);
    int64_t last_layer = -2;
    for (size_t i = 0; rc == 0 && i < plan->n; i++) {
        if (plan->t[i].t.layer != last_layer && last_layer >= 0) {
            char what[64];
            snprintf(what, sizeof what, "layer %" PRId64 "/%" PRId64 " (density %.4f)", last_layer + 1,
                     hp->n_layers, g->dens_used);
            progress(&w, what, !w.tty);
        }
        last_layer = plan->t[i].t.layer;
        rc = gen_tensor(g, &w, plan, dir, i, row, err);
    }
    if (w.f && fclose(w.f) != 0 && !rc)
        rc = ierr_set(err, -EIO, "%s: write error", w.path);
    if (!rc)
        progress(&w, "done", 1);
    free(w.path);
    free(w.buf);
    free(row);
    return rc;
}

/* model.safetensors.index.json, the weight map of a sharded checkpoint. */
static int write_index(const t_plan *plan, const char *dir, ierr *err)
{
    json_t *idx = json_object(), *meta = json_object(), *map = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)plan->total));
    for (size_t i = 0; i < plan->n; i++) {
        char name[64];
        shard_name(name, sizeof name, plan->t[i].shard, plan->n_shards);
        json_object_set_new(map, plan->t[i].t.name, json_string(name));
    }
    json_object_set_new(idx, "metadata", meta);
    json_object_set_new(idx, "weight_map", map);
    int rc = write_json_file(dir, "model.safetensors.index.json", idx, err);
    json_decref(idx);
    return rc;
}

/* The complete checkpoint tmp becomes DIR (replacing it with --force). */
static int install(const mk_opts *o, const char *tmp, ierr *err)
{
    struct stat st;
    if (o->force && stat(o->out, &st) == 0)
        io_rm_tree(o->out);
    if (rename(tmp, o->out) != 0)
        return ierr_set(err, -errno, "rename %s -> %s: %s", tmp, o->out, strerror(errno));
    return 0;
}

static int run(const mk_opts *o, ierr *err)
{
    const mk_shape *sh = o->shape;
    char *tokdir = o->tokdir ? strdup(o->tokdir) : default_path(sh->tokdir);
    char *text = o->text ? strdup(o->text) : default_path(sh->text);
    uint64_t text_bytes = o->text ? 0 : sh->text_bytes;
    tok *tk = NULL;
    t_plan plan = {0};
    hp_config hp;
    mk_gen g;
    memset(&g, 0, sizeof g);
    char *tmp = NULL;
    int rc = tokdir && text ? 0 : ierr_set(err, -ENOMEM, "out of memory");
    if (!rc)
        rc = tok_new_files(dir_file, (void *)tokdir, &tk, err);
    if (!rc) {
        shape_config(o, tk, &hp);
        rc = hp_check_dtype(&hp, o->dtype, o->shape->name, err);
    }
    if (!rc) {
        if (plan_build(&plan, &hp, ckpt_dtype(o), o->shard_bytes) != 0)
            rc = ierr_set(err, -ENOMEM, "out of memory planning the tensors");
    }
    if (!rc)
        rc = gen_init(&g, o, &hp, tk, text, text_bytes, err);
    if (!rc)
        rc = make_tmp(o, &tmp, err);      /* write into DIR.tmp.<pid>, rename at the end */
    if (!rc)
        rc = write_side_files(o, &hp, tokdir, tmp, err);
    if (!rc)
        rc = write_tensors(&g, &plan, tmp, err);
    if (!rc && plan.n_shards > 1)
        rc = write_index(&plan, tmp, err);
    if (!rc)
        rc = install(o, tmp, err);
    if (tmp && rc)
        io_rm_tree(tmp);
    free(tmp);
    gen_free(&g);
    free(plan.t);
    tok_free(tk);
    free(tokdir);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    mk_opts o;
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa > 0 ? 0 : EXIT_USAGE;   /* 1: --help printed */
    cli_on_stop_signals(on_signal);
    ierr err = IERR_INIT;
    int rc = run(&o, &err);
    if (rc) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return EXIT_RUNTIME;
    }
    return 0;
}
