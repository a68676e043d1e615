/* neuron_matrix.h: the neuron matrix of one FFN layer — the resident neurons' bundles
 * (up row, [gate row], down column, kept in the store's dtype: f32, f16,
 * or q8_0 / q4_0 blocks, a row being exactly the bundle's bytes) in a
 * matrix that is allocated once and never reallocated or shifted.
 *
 * Rows [0, used) are the resident neurons, contiguous, in no particular
 * order; row_to_id[] says which neuron each row holds and id_to_row[] the
 * reverse (-1: not resident). Insert appends at row `used`; delete moves the
 * last used row into the hole (one row memcpy) and fixes both maps. The
 * sparse FFN runs straight over the used rows (model_ffn_rows, client/weight_matrix.h);
 * for f32 rows that is, with OpenBLAS:
 *
 *   const float *A = nmat_data(m);  int64_t ld = nmat_stride(m), u = nmat_used(m);
 *   h = W_up x:    cblas_sgemv(CblasRowMajor, CblasNoTrans, u, d, 1, A + nmat_up_off(m),
 *                              ld, x, 1, 0, h, 1);      (plus bias b1[nmat_row_ids(m)[r]])
 *   y = W_down^T a: cblas_sgemv(CblasRowMajor, CblasTrans, u, d, 1, A + nmat_down_off(m),
 *                              ld, a, 1, 0, y, 1);
 *
 * Not thread-safe: one owner per matrix. Rows obtained from nmat_reserve may
 * be filled concurrently by reader threads (distinct rows), provided no
 * nmat_insert/reserve/delete/clear runs until they are all filled. */
#ifndef INFLASH_NEURON_MATRIX_H
#define INFLASH_NEURON_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "format.h"

typedef struct nmat nmat;

/* Row length in elements of a bundle: (gated ? 3 : 2) * d_model. */
int64_t nmat_row_len(int64_t d_model, int gated);

/* Bytes of one row of row_len values of dtype dt (fmt_bytes: the bundle's
 * bytes); UINT64_MAX if row_len is negative or not whole blocks. */
uint64_t nmat_row_bytes(int64_t row_len, fmt_dtype dt);

/* Bytes nmat_new allocates for these sizes (matrix + both maps + the
 * struct), for the DRAM budget; capacity is clamped to n_neurons as in
 * nmat_new. UINT64_MAX if a size is negative, a row is not whole blocks
 * of dt, or the total overflows. */
uint64_t nmat_bytes(int64_t capacity, int64_t row_len, fmt_dtype dt, int64_t n_neurons);

/* A matrix for a layer of n_neurons neurons of width d_model, holding at
 * most `capacity` rows (clamped to n_neurons) of values of store dtype dt.
 * All memory is allocated and touched (zeroed) here, so it is resident
 * from the start. -EINVAL for bad sizes (n_neurons in [1, INT32_MAX],
 * capacity >= 1, d_model >= 1, a multiple of 32 for q8_0 / q4_0) or a dtype
 * that is not a store dtype, -ENOMEM. */
int  nmat_new(int64_t n_neurons, int64_t capacity, int64_t d_model, int gated, fmt_dtype dt,
              nmat **out, ierr *err);
void nmat_free(nmat *m);

/* Append neuron `id` with bundle[0..row_len) at row `used`.
 * -EINVAL id out of range, -EEXIST already resident, -ENOSPC matrix full;
 * the matrix is unchanged on error. */
int nmat_insert(nmat *m, int32_t id, const void *bundle, ierr *err);
/* As nmat_insert, but the caller fills the row in place: *row points at the
 * new row (row_len elements, contents unspecified until written), so a
 * read can land (and be converted) straight in the matrix. The pointer stays valid until
 * the next insert/reserve/delete/clear. If the fill fails, nmat_delete(id). */
int nmat_reserve(nmat *m, int32_t id, void **row, ierr *err);
/* Evict neuron `id`: the last used row moves into its row.
 * -EINVAL id out of range, -ENOENT not resident. */
int nmat_delete(nmat *m, int32_t id, ierr *err);
/* Evict everything (O(used)). */
void nmat_clear(nmat *m);

/* Row of neuron id, or -1 if it is not resident (or out of range). */
int64_t nmat_row_of(const nmat *m, int32_t id);
int     nmat_contains(const nmat *m, int32_t id);
/* row_to_id: the neuron held by each row; entries [0, used) are valid. */
const int32_t *nmat_row_ids(const nmat *m);

/* Row 0 of the matrix (64-byte aligned; the address never changes), the
 * dtype of its values and the bytes of a row, the distance in values
 * between rows (for wm_at, client/weight_matrix.h), and the offsets in
 * values of the parts within a row: up at 0, gate at d_model (-1 if not
 * gated), down at (gated?2:1)*d (whole blocks of a quantized dtype). */
const void *nmat_data(const nmat *m);
fmt_dtype nmat_dtype(const nmat *m);
size_t  nmat_row_size(const nmat *m);
int64_t nmat_stride(const nmat *m);
int64_t nmat_up_off(const nmat *m);
int64_t nmat_gate_off(const nmat *m);
int64_t nmat_down_off(const nmat *m);

int64_t nmat_used(const nmat *m);
int64_t nmat_capacity(const nmat *m);
int64_t nmat_n_neurons(const nmat *m);
int64_t nmat_d_model(const nmat *m);
int     nmat_gated(const nmat *m);

#endif
