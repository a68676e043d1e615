/* coalesce.c: merging a layer's neuron reads into few large requests (see
 * coalesce.h). */
#include "coalesce.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void coal_params_init(coal_params *p, int64_t n_neurons, uint64_t bundle_bytes)
{
    p->n_neurons = n_neurons;
    p->bundle_bytes = bundle_bytes;
    p->max_gap = 0;
    p->max_bytes = COAL_MAX_BYTES_DEFAULT;
}

static void plan_empty(coal_plan *plan)
{
    plan->n_reqs = 0;
    plan->n_items = 0;
    plan->bytes_total = 0;
    plan->bytes_wanted = 0;
}

int coal_plan_reserve(coal_plan *plan, int64_t max_ids, ierr *err)
{
    if (max_ids < 0 || (uint64_t)max_ids > SIZE_MAX / sizeof(coal_item))
        return ierr_set(err, -EINVAL, "coalesce: bad id count %lld", (long long)max_ids);
    if (max_ids <= plan->cap)
        return 0;
    /* Each array is replaced only once all three are allocated, so a failure
     * leaves the old (smaller) plan intact. */
    coal_req *r = malloc((size_t)max_ids * sizeof *r);
    coal_item *it = malloc((size_t)max_ids * sizeof *it);
    int32_t *sc = malloc((size_t)max_ids * sizeof *sc);
    if (!r || !it || !sc) {
        free(r);
        free(it);
        free(sc);
        return ierr_set(err, -ENOMEM, "coalesce: out of memory for %lld ids", (long long)max_ids);
    }
    free(plan->reqs);
    free(plan->items);
    free(plan->scratch);
    plan->reqs = r;
    plan->items = it;
    plan->scratch = sc;
    plan->cap = max_ids;
    plan_empty(plan);
    return 0;
}

void coal_plan_free(coal_plan *plan)
{
    free(plan->reqs);
    free(plan->items);
    free(plan->scratch);
    memset(plan, 0, sizeof *plan);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int check_params(const coal_params *p, ierr *err)
{
    if (p->n_neurons < 1 || p->n_neurons > INT32_MAX || p->bundle_bytes == 0 ||
        p->bundle_bytes > UINT64_MAX / (uint64_t)p->n_neurons)
        return ierr_set(err, -EINVAL, "coalesce: bad layer shape (%lld neurons of %llu bytes)",
                        (long long)p->n_neurons, (unsigned long long)p->bundle_bytes);
    if (p->max_bytes < p->bundle_bytes)
        return ierr_set(err, -EINVAL, "coalesce: max_bytes %llu is smaller than one bundle (%llu bytes)",
                        (unsigned long long)p->max_bytes, (unsigned long long)p->bundle_bytes);
    if (p->max_gap < 0)
        return ierr_set(err, -EINVAL, "coalesce: negative max_gap %lld", (long long)p->max_gap);
    return 0;
}

/* Close request `r` after its last wanted id `last`. */
static void req_close(coal_plan *plan, coal_req *r, int32_t last, uint64_t B)
{
    r->count = last - r->first_id + 1;
    r->length = (uint64_t)r->count * B;
    plan->bytes_total += r->length;
}

int coal_build(coal_plan *plan, const coal_params *p, const int32_t *ids, int64_t n, ierr *err)
{
    plan_empty(plan);
    int rc = check_params(p, err);
    if (rc)
        return rc;
    if (n < 0)
        return ierr_set(err, -EINVAL, "coalesce: negative id count %lld", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= p->n_neurons)
            return ierr_set(err, -EINVAL, "coalesce: neuron %ld out of range [0, %lld)",
                            (long)ids[i], (long long)p->n_neurons);
    if (n == 0)
        return 0;
    rc = coal_plan_reserve(plan, n, err);
    if (rc)
        return rc;

    int32_t *u = plan->scratch;
    memcpy(u, ids, (size_t)n * sizeof *u);
    qsort(u, (size_t)n, sizeof *u, cmp_i32);

    const uint64_t B = p->bundle_bytes;
    const uint64_t per_req = p->max_bytes / B;   /* >= 1 bundles per request */
    coal_req *r = NULL;
    int32_t last = -1;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = u[i];
        if (r && id == last)
            continue;   /* duplicate */
        if (!r || (int64_t)id - last - 1 > p->max_gap ||
            (uint64_t)(id - r->first_id) + 1 > per_req) {
            if (r)
                req_close(plan, r, last, B);
            r = &plan->reqs[plan->n_reqs++];
            r->first_id = id;
            r->offset = (uint64_t)id * B;
            r->buf_off = plan->bytes_total;
        }
        coal_item *it = &plan->items[plan->n_items++];
        it->id = id;
        it->req = (int32_t)(plan->n_reqs - 1);
        it->buf_off = r->buf_off + (uint64_t)(id - r->first_id) * B;
        last = id;
    }
    req_close(plan, r, last, B);
    plan->bytes_wanted = (uint64_t)plan->n_items * B;
    return 0;
}
