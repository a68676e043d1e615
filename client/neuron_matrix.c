/* neuron_matrix.c: the preallocated per-layer neuron matrix (see neuron_matrix.h). */
#include "neuron_matrix.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NMAT_ALIGN 64

struct nmat {
    /* Sizes, fixed at nmat_new. */
    int64_t n_neurons;
    int64_t capacity;     /* rows allocated, <= n_neurons */
    int64_t d_model;
    int64_t row_len;      /* values per row, also the stride in values */
    fmt_dtype dt;         /* store dtype of the values */
    size_t  row_bytes;    /* bytes per row: fmt_bytes(dt, row_len) */
    int     gated;
    /* State; owned by the matrix's single user (no locking). */
    int64_t used;         /* rows [0, used) hold resident neurons */
    unsigned char *data;  /* capacity rows of row_bytes, owned, 64-byte aligned */
    int32_t *id_to_row;   /* n_neurons entries, owned; -1 = not resident */
    int32_t *row_to_id;   /* capacity entries, owned; -1 beyond used */
};

int64_t nmat_row_len(int64_t d_model, int gated)
{
    return (gated ? 3 : 2) * d_model;
}

/* a * b + c with overflow check; 0 or -1 */
static int mul_add_u64(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
    if (b && a > (UINT64_MAX - c) / b)
        return -1;
    *out = a * b + c;
    return 0;
}

uint64_t nmat_row_bytes(int64_t row_len, fmt_dtype dt)
{
    return row_len < 0 || !fmt_is_store_dtype(dt) ? UINT64_MAX : fmt_bytes(dt, (uint64_t)row_len);
}

uint64_t nmat_bytes(int64_t capacity, int64_t row_len, fmt_dtype dt, int64_t n_neurons)
{
    uint64_t rb = nmat_row_bytes(row_len, dt);
    if (capacity < 0 || n_neurons < 0 || rb == UINT64_MAX)
        return UINT64_MAX;
    if (capacity > n_neurons)
        capacity = n_neurons;
    uint64_t data, maps;
    if (mul_add_u64((uint64_t)capacity, rb, 0, &data) ||
        mul_add_u64((uint64_t)capacity + (uint64_t)n_neurons, sizeof(int32_t), 0, &maps) ||
        data > UINT64_MAX - maps - sizeof(struct nmat))
        return UINT64_MAX;
    return data + maps + sizeof(struct nmat);
}

int nmat_new(int64_t n_neurons, int64_t capacity, int64_t d_model, int gated, fmt_dtype dt,
             nmat **out, ierr *err)
{
    *out = NULL;
    if (n_neurons < 1 || n_neurons > INT32_MAX || capacity < 1 || d_model < 1 ||
        d_model > INT64_MAX / 3 || !fmt_is_store_dtype(dt) || fmt_bytes(dt, (uint64_t)d_model) == UINT64_MAX)
        return ierr_set(err, -EINVAL, "nmat: bad sizes (n_neurons %lld, capacity %lld, d_model %lld, dtype %s)",
                        (long long)n_neurons, (long long)capacity, (long long)d_model,
                        fmt_is_store_dtype(dt) ? fmt_dtype_name(dt) : "not a store dtype");
    if (capacity > n_neurons)
        capacity = n_neurons;
    int64_t row_len = nmat_row_len(d_model, gated);
    uint64_t total = nmat_bytes(capacity, row_len, dt, n_neurons);
    if (total == UINT64_MAX || total > SIZE_MAX)
        return ierr_set(err, -EINVAL, "nmat: %lld rows of %lld elements overflow the address space",
                        (long long)capacity, (long long)row_len);
    size_t row_bytes = (size_t)nmat_row_bytes(row_len, dt), data_bytes = (size_t)capacity * row_bytes;

    nmat *m = calloc(1, sizeof *m);
    if (!m)
        return ierr_set(err, -ENOMEM, "nmat: out of memory");
    void *data = NULL;
    if (posix_memalign(&data, NMAT_ALIGN, data_bytes) != 0)
        data = NULL;
    m->data = data;
    m->id_to_row = malloc((size_t)n_neurons * sizeof(int32_t));
    m->row_to_id = malloc((size_t)capacity * sizeof(int32_t));
    if (!m->data || !m->id_to_row || !m->row_to_id) {
        nmat_free(m);
        return ierr_set(err, -ENOMEM, "nmat: out of memory for %lld rows of %lld elements (%llu bytes)",
                        (long long)capacity, (long long)row_len, (unsigned long long)total);
    }
    /* Touch every page now: the matrix is resident from the start and
     * generation never page-faults on it. */
    memset(m->data, 0, data_bytes);
    memset(m->id_to_row, 0xff, (size_t)n_neurons * sizeof(int32_t));  /* -1 */
    memset(m->row_to_id, 0xff, (size_t)capacity * sizeof(int32_t));
    m->n_neurons = n_neurons;
    m->capacity = capacity;
    m->d_model = d_model;
    m->row_len = row_len;
    m->dt = dt;
    m->row_bytes = row_bytes;
    m->gated = gated ? 1 : 0;
    m->used = 0;
    *out = m;
    return 0;
}

void nmat_free(nmat *m)
{
    if (!m)
        return;
    free(m->data);
    free(m->id_to_row);
    free(m->row_to_id);
    free(m);
}

static int check_id(const nmat *m, int32_t id, ierr *err)
{
    if (id < 0 || id >= m->n_neurons)
        return ierr_set(err, -EINVAL, "nmat: neuron %ld out of range [0, %lld)",
                        (long)id, (long long)m->n_neurons);
    return 0;
}

int nmat_reserve(nmat *m, int32_t id, void **row, ierr *err)
{
    *row = NULL;
    int rc = check_id(m, id, err);
    if (rc)
        return rc;
    if (m->id_to_row[id] >= 0)
        return ierr_set(err, -EEXIST, "nmat: neuron %ld already resident (row %ld)",
                        (long)id, (long)m->id_to_row[id]);
    if (m->used == m->capacity)
        return ierr_set(err, -ENOSPC, "nmat: full (%lld rows) inserting neuron %ld",
                        (long long)m->capacity, (long)id);
    int64_t r = m->used++;
    m->id_to_row[id] = (int32_t)r;
    m->row_to_id[r] = id;
    *row = m->data + (size_t)r * m->row_bytes;
    return 0;
}

int nmat_insert(nmat *m, int32_t id, const void *bundle, ierr *err)
{
    void *row;
    int rc = nmat_reserve(m, id, &row, err);
    if (rc)
        return rc;
    memcpy(row, bundle, m->row_bytes);
    return 0;
}

int nmat_delete(nmat *m, int32_t id, ierr *err)
{
    int rc = check_id(m, id, err);
    if (rc)
        return rc;
    int64_t r = m->id_to_row[id];
    if (r < 0)
        return ierr_set(err, -ENOENT, "nmat: neuron %ld is not resident", (long)id);
    int64_t last = m->used - 1;
    if (r != last) {
        int32_t moved = m->row_to_id[last];
        size_t rb = m->row_bytes;
        memcpy(m->data + (size_t)r * rb, m->data + (size_t)last * rb, rb);
        m->row_to_id[r] = moved;
        m->id_to_row[moved] = (int32_t)r;
    }
    m->id_to_row[id] = -1;
    m->row_to_id[last] = -1;
    m->used = last;
    return 0;
}

void nmat_clear(nmat *m)
{
    for (int64_t r = 0; r < m->used; r++) {
        m->id_to_row[m->row_to_id[r]] = -1;
        m->row_to_id[r] = -1;
    }
    m->used = 0;
}

int64_t nmat_row_of(const nmat *m, int32_t id)
{
    if (id < 0 || id >= m->n_neurons)
        return -1;
    return m->id_to_row[id];
}

int nmat_contains(const nmat *m, int32_t id)
{
    return nmat_row_of(m, id) >= 0;
}

const int32_t *nmat_row_ids(const nmat *m) { return m->row_to_id; }
const void *nmat_data(const nmat *m) { return m->data; }
fmt_dtype nmat_dtype(const nmat *m) { return m->dt; }
size_t nmat_row_size(const nmat *m) { return m->row_bytes; }
int64_t nmat_stride(const nmat *m) { return m->row_len; }
int64_t nmat_up_off(const nmat *m) { (void)m; return 0; }
int64_t nmat_gate_off(const nmat *m) { return m->gated ? m->d_model : -1; }
int64_t nmat_down_off(const nmat *m) { return (m->gated ? 2 : 1) * m->d_model; }
int64_t nmat_used(const nmat *m) { return m->used; }
int64_t nmat_capacity(const nmat *m) { return m->capacity; }
int64_t nmat_n_neurons(const nmat *m) { return m->n_neurons; }
int64_t nmat_d_model(const nmat *m) { return m->d_model; }
int nmat_gated(const nmat *m) { return m->gated; }
