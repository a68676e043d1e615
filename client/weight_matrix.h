/* weight_matrix.h: matrix products over weights kept in the store's dtype (f32, f16
 * or bf16), so that a 7B model's resident weights take half the DRAM of an
 * f32 copy. Activations are always f32. f32 weights go straight to
 * OpenBLAS; f16/bf16 weights either go through a fused kernel (x86-64 with
 * AVX2+FMA+F16C, checked at run time, one vector of activations) or are
 * converted a block of rows at a time into caller-provided scratch and
 * handed to OpenBLAS (batches, other CPUs).
 *
 * A weight matrix is `rows` rows of `cols` elements, row r starting
 * ld elements after row r-1 (ld >= cols), e.g. the up rows of a neuron
 * matrix whose rows are whole bundles. */
#ifndef INFLASH_WEIGHT_MATRIX_H
#define INFLASH_WEIGHT_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

/* Rows converted per block on the scratch path. */
#define WM_BLOCK 32

/* Floats of scratch the calls below need for matrices of `cols` columns
 * (0 would do for f32 weights; this is what any dtype needs). */
int64_t wm_scratch_floats(int64_t cols);

/* out[i][r] = beta * out[i][r] + sum_c x[i][c] * W[r][c]
 * for i < n, r < rows; x rows are cols apart, out rows ldo apart.
 * beta is 0 (overwrite) or 1 (accumulate). */
void wm_gemm_xwt(fmt_dtype dt, const void *w, int64_t ld, int64_t rows, int64_t cols,
                 const float *x, int64_t n, float *out, int64_t ldo, float beta, float *scratch);

/* y[i][c] += sum_r a[i][r] * W[r][c]
 * for i < n, c < cols; a rows are lda apart, y rows cols apart.
 * Rows whose coefficient is 0 for every i are skipped when n == 1. */
void wm_gemm_aw(fmt_dtype dt, const void *w, int64_t ld, int64_t rows, int64_t cols,
                const float *a, int64_t lda, int64_t n, float *y, float *scratch);

/* dst[0..cols) = row r of W in f32. */
void wm_row(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t cols, float *dst);

/* Address of element (r, c) of W. */
static inline const void *wm_at(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t c)
{
    return (const unsigned char *)w + fmt_bytes(dt, (uint64_t)r * (uint64_t)ld + (uint64_t)c);
}

#endif
