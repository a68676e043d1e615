/* weight_matrix.h: matrix products over weights kept in the store's dtype
 * (f32, f16, bf16, q8_0 or q4_0), so that a 7B model's resident weights take
 * half (f16) or less (q8_0, q4_0) of the DRAM of an f32 copy. Activations
 * are always f32. f32 weights go straight to OpenBLAS. Other dtypes:
 *   - one vector of activations (n == 1): the kernels of client/kernel.h,
 *     picked at run time from the CPU's features (AVX-512 VNNI, AVX2, or
 *     portable C), large products split over two cores by rows (xwt) or
 *     columns (aw). Quantized weights stay quantized: x is quantized to
 *     q8_0 blocks once per call (layout/quant.h's quant_q8_0) and each row
 *     is a sum over blocks of d_w * d_x * (integer dot product). f16 weights
 *     on a CPU without F16C, and bf16, take the batch path.
 *   - batches (n > 1): rows converted to f32 WM_BLOCK at a time into the
 *     caller's scratch (the kernel set's dequantizers for q8_0/q4_0) and
 *     handed to OpenBLAS's sgemm; large batches split over two cores too
 *     (rows for xwt, columns for aw), each thread with its own half of the
 *     scratch.
 *
 * Accuracy: integer block sums are exact, so the SIMD kernels and the
 * portable ones differ only in the order (and fusing) of the float sums:
 * |simd - portable| <= 2e-5 * sum_b |d_w d_x isum_b| per output (the tests
 * check this). The quantized single-vector products carry the q8_0
 * rounding of x (as llama.cpp's do): relative to the exact product of the
 * stored weights and x, an error of at most about 0.6 * d_x (d_x = the
 * block's largest |x| / 127) per value, times |w|. Dequantization is exact.
 *
 * OpenBLAS threads: every product on non-f32 weights sets OpenBLAS to one
 * thread (it checks each time; cheap). These products bring their own
 * second core, and OpenBLAS's worker threads spin (sched_yield) for a
 * while after each threaded call, so the caller's small OpenBLAS calls
 * between products (attention over the KV cache) kept them spinning
 * against our helper. f32 weights leave OpenBLAS as it is.
 *
 * A weight matrix is `rows` rows of `cols` values, row r starting
 * ld values after row r-1 (ld >= cols), e.g. the up rows of a neuron
 * matrix whose rows are whole bundles. For q8_0/q4_0, cols and ld are
 * multiples of 32.
 *
 * Thread safety: the calls may run from several threads at once on
 * disjoint outputs and scratch; only one of them uses the helper thread at
 * a time (the others run on their own thread). */
#ifndef INFLASH_WEIGHT_MATRIX_H
#define INFLASH_WEIGHT_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "activity.h"
#include "format.h"

/* Rows converted per block (per thread) on the batch path. */
#define WM_BLOCK 128
/* rows * cols * n (values) from which a product is split over two threads */
#define WM_SPLIT_MIN ((int64_t)1 << 20)

/* Floats of scratch the calls below need for matrices of `cols` columns
 * (batches: WM_BLOCK converted rows per thread, 2 * WM_BLOCK * cols;
 * one quantized vector: x as q8_0 blocks, less). */
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

/* Bundles per group of the fused FFN below (up/gate/down of one group are
 * read before the next group's). */
#define WM_FFN_GROUP 16

/* One token's FFN over nb neuron rows in one pass (fused): row j at
 * ldw values after row j-1 holds the up row (d values), for gated FFNs the
 * gate row, then the down column (d values each), e.g. whole bundles. For
 * each group of WM_FFN_GROUP rows, in order:
 *   pre[j]  = up_j . x + b_up[j]          gpre[j] = gate_j . x + b_gate[j]
 *   act[j]  = act_term(as, gpre[j], pre[j])
 *   y[c]   += sum_j act[j] * down_j[c]    (rows with act[j] == 0 skipped)
 * so the FFN's weights are read once, sequentially, instead of in three
 * strided passes (up rows, gate rows, down columns). b_up, b_gate may be
 * NULL; gpre is unused (may be NULL) when ungated. Large FFNs run on two
 * threads (one after the other while another caller has the helper),
 * each over half of the rows with its own y, the second half's added to
 * y at the end: the result depends on nb and the data only
 * (deterministic), and differs from the separate products only in the
 * order of the float sums into y. scratch: wm_scratch_floats(d) floats.
 * 0, or -ENOTSUP (nothing done) for weights without a single-vector kernel
 * (f32, bf16, f16 without F16C): take the separate products then. */
int wm_ffn(fmt_dtype dt, const void *w, int64_t ldw, int64_t nb, int64_t d, act_spec as, const float *b_up,
           const float *b_gate, const float *x, float *pre, float *gpre, float *act, float *y, float *scratch);

/* dst[0..cols) = row r of W in f32. */
void wm_row(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t cols, float *dst);

/* Address of element (r, c) of W. */
static inline const void *wm_at(fmt_dtype dt, const void *w, int64_t ld, int64_t r, int64_t c)
{
    return (const unsigned char *)w + fmt_bytes(dt, (uint64_t)r * (uint64_t)ld + (uint64_t)c);
}

/* Memory for resident weights (free it with free()): `bytes` aligned to
 * 2 MiB and advised as transparent huge pages (madvise MADV_HUGEPAGE; the
 * advice is a hint, ignored where unsupported). Reading weights through 4 KiB
 * pages is bound by TLB misses (costly page walks, doubly so under a
 * hypervisor): measured on a 2-core KVM guest, 29 GB/s with 4 KiB pages,
 * 55 GB/s with huge pages. Below 2 MiB, plain malloc. NULL when out of
 * memory. */
void *wm_alloc(size_t bytes);

/* The kernel set in use: "avx512", "avx2" or "portable" (the best the CPU
 * has unless wm_use_kernels chose another). */
const char *wm_kernels(void);

/* For tests and benchmarks: use the kernel set `name` from now on, for
 * every thread. 0, -ENOTSUP if this CPU lacks its instructions, -ENOENT
 * if there is no such set. */
int wm_use_kernels(const char *name);

#endif
