/* sample.h: choosing the next token from logits: greedy (argmax, ties to
 * the lowest id), temperature, and top-p (nucleus) sampling with a seeded
 * xorshift generator, as llama2.c's run.c does. */
#ifndef INFLASH_SAMPLE_H
#define INFLASH_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* xorshift64* generator; state must not be 0. */
typedef struct {
    uint64_t state;
} sample_rng;

void     sample_rng_seed(sample_rng *r, uint64_t seed);
uint32_t sample_rng_u32(sample_rng *r);
float    sample_rng_f32(sample_rng *r);   /* in [0, 1) */

/* Index of the largest of n values; ties go to the lowest index. */
int64_t sample_argmax(const float *x, int64_t n);
/* Index drawn from probabilities p [n] (summing to ~1), coin in [0, 1). */
int64_t sample_mult(const float *p, int64_t n, float coin);
/* Top-p: the smallest set of most probable indices whose mass exceeds
 * top_p, drawn from in proportion. scratch: [n] pairs (see sample_new). */
typedef struct {
    float   p;
    int64_t i;
} sample_pi;
int64_t sample_topp(const float *p, int64_t n, float top_p, sample_pi *scratch, float coin);

typedef struct {
    int64_t    n;             /* vocabulary size */
    float      temperature;   /* 0: greedy */
    float      top_p;         /* <= 0 or >= 1: plain multinomial */
    sample_rng rng;
    sample_pi *scratch;       /* [n]; owned */
} sampler;

int  sample_new(sampler **out, int64_t n, float temperature, float top_p, uint64_t seed, ierr *err);
void sample_free(sampler *s);
/* Next token from logits [n]; logits are overwritten (scaled, softmaxed). */
int64_t sample_next(sampler *s, float *logits);

#endif
