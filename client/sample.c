/* sample.c: token sampling (sample.h). */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

void sample_rng_seed(sample_rng *r, uint64_t seed)
{
    /* splitmix64 of the seed, so small seeds give well-mixed states */
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    r->state = z ? z : 0x2545f4914f6cdd1dull;
}

uint32_t sample_rng_u32(sample_rng *r)
{
    r->state ^= r->state >> 12;
    r->state ^= r->state << 25;
    r->state ^= r->state >> 27;
    return (uint32_t)((r->state * 0x2545f4914f6cdd1dull) >> 32);
}

float sample_rng_f32(sample_rng *r)
{
    return (float)(sample_rng_u32(r) >> 8) / 16777216.0f;
}

int64_t sample_argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int64_t sample_mult(const float *p, int64_t n, float coin)
{
    float cdf = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf)
            return i;
    }
    return n - 1;   /* rounding */
}

static int cmp_pi(const void *a, const void *b)
{
    const sample_pi *x = a, *y = b;
    if (x->p > y->p)
        return -1;
    if (x->p < y->p)
        return 1;
    return x->i < y->i ? -1 : x->i > y->i;   /* stable: lower id first */
}

int64_t sample_topp(const float *p, int64_t n, float top_p, sample_pi *scratch, float coin)
{
    /* values below (1 - top_p) / (n - 1) cannot be in the nucleus */
    float cutoff = n > 1 ? (1.0f - top_p) / (float)(n - 1) : 0.0f;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (p[i] >= cutoff) {
            scratch[m].p = p[i];
            scratch[m].i = i;
            m++;
        }
    if (m == 0)
        return sample_argmax(p, n);
    qsort(scratch, (size_t)m, sizeof *scratch, cmp_pi);
    float cum = 0.0f;
    int64_t last = m - 1;
    for (int64_t i = 0; i < m; i++) {
        cum += scratch[i].p;
        if (cum > top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cum, cdf = 0.0f;
    for (int64_t i = 0; i <= last; i++) {
        cdf += scratch[i].p;
        if (r < cdf)
            return scratch[i].i;
    }
    return scratch[last].i;
}

int sample_new(sampler **out, int64_t n, float temperature, float top_p, uint64_t seed, ierr *err)
{
    *out = NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->scratch = calloc((size_t)n, sizeof *s->scratch))) {
        free(s);
        return ierr_set(err, -ENOMEM, "out of memory for the sampler");
    }
    s->n = n;
    s->temperature = temperature;
    s->top_p = top_p;
    sample_rng_seed(&s->rng, seed);
    *out = s;
    return 0;
}

void sample_free(sampler *s)
{
    if (!s)
        return;
    free(s->scratch);
    free(s);
}

int64_t sample_next(sampler *s, float *logits)
{
    if (s->temperature <= 0.0f)
        return sample_argmax(logits, s->n);
    /* softmax(logits / T), in place */
    float mx = logits[sample_argmax(logits, s->n)];
    double sum = 0.0;
    for (int64_t i = 0; i < s->n; i++) {
        logits[i] = expf((logits[i] - mx) / s->temperature);
        sum += logits[i];
    }
    for (int64_t i = 0; i < s->n; i++)
        logits[i] = (float)(logits[i] / sum);
    float coin = sample_rng_f32(&s->rng);
    if (s->top_p <= 0.0f || s->top_p >= 1.0f)
        return sample_mult(logits, s->n, coin);
    return sample_topp(logits, s->n, s->top_p, s->scratch, coin);
}
