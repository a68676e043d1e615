/* quant.h: the q8_0 and q4_0 block codecs of the store format (format.h,
 * section 1): ggml's reference quantizers and the dequantizers, scalar and
 * portable. Pack quantizes with these; the client's kernels
 * (client/weight_matrix.c) are checked against them.
 *
 * All functions take n values, n a multiple of FMT_QK (callers check);
 * blocks are FMT_Q8_0_BYTES / FMT_Q4_0_BYTES bytes, little-endian scale
 * first, with no alignment requirement. */
#ifndef INFLASH_QUANT_H
#define INFLASH_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* x[0..n) -> n/32 q8_0 blocks at dst (ggml quantize_row_q8_0_ref). */
void quant_q8_0(const float *x, void *dst, size_t n);
/* x[0..n) -> n/32 q4_0 blocks at dst (ggml quantize_row_q4_0_ref). */
void quant_q4_0(const float *x, void *dst, size_t n);
/* n/32 blocks at src -> y[0..n). Exact: q * d in f32. */
void dequant_q8_0(const void *src, float *y, size_t n);
void dequant_q4_0(const void *src, float *y, size_t n);

/* The f16 scale of the block at `block`, as f32. */
float quant_scale(const void *block);

#endif
