/* coalesce.h: read planning for one layer's missing neurons. Given the ids
 * to load (any order, duplicates allowed) and the bundle size B, it plans
 * read requests over the layer's neuron file (neuron j at offset j*B):
 * adjacent ids share one request, ids up to max_gap bundles apart may too
 * (the gap bundles are read along and ignored), and no request exceeds
 * max_bytes (longer runs are split at bundle boundaries).
 *
 * The requests are laid out back to back in one staging buffer of
 * plan.bytes_total bytes: request i reads file bytes [offset, offset+length)
 * into staging + buf_off, so the requests can be issued concurrently into
 * one buffer; item j then finds its bundle at staging + items[j].buf_off.
 *
 * A plan is caller-owned and reusable: its arrays grow to the largest input
 * seen and are kept (coal_plan_reserve preallocates them). Not thread-safe;
 * a built plan may be read from many threads. */
#ifndef INFLASH_COALESCE_H
#define INFLASH_COALESCE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define COAL_MAX_BYTES_DEFAULT (1024u * 1024u)

typedef struct {
    int64_t  n_neurons;     /* ids must be in [0, n_neurons) */
    uint64_t bundle_bytes;  /* B > 0 */
    int64_t  max_gap;       /* merge across up to this many unwanted bundles; default 0 */
    uint64_t max_bytes;     /* request size limit, >= B; default COAL_MAX_BYTES_DEFAULT */
} coal_params;

typedef struct {
    uint64_t offset;     /* in the neuron file: first_id * B */
    uint64_t length;     /* count * B <= max_bytes */
    uint64_t buf_off;    /* where the bytes go in the staging buffer */
    int32_t  first_id;   /* neuron at offset (always a wanted one) */
    int32_t  count;      /* bundles covered, gap bundles included; the last is wanted */
} coal_req;

typedef struct {
    int32_t  id;         /* a wanted neuron; items are in ascending id order, unique */
    int32_t  req;        /* index of the request reading it */
    uint64_t buf_off;    /* its bundle in the staging buffer; within the request's
                            bytes at buf_off - reqs[req].buf_off = (id - first_id) * B */
} coal_item;

typedef struct {
    coal_req  *reqs;         /* owned; n_reqs valid, in ascending offset order */
    int64_t    n_reqs;
    coal_item *items;        /* owned; n_items valid */
    int64_t    n_items;
    uint64_t   bytes_total;  /* sum of request lengths = staging buffer size */
    uint64_t   bytes_wanted; /* n_items * B (bytes_total - bytes_wanted = gap bytes) */
    int64_t    cap;          /* private: entries allocated in reqs, items, scratch */
    int32_t   *scratch;      /* private, owned: sorted copy of the input */
} coal_plan;

/* Defaults for a layer: max_gap 0, max_bytes 1 MiB. */
void coal_params_init(coal_params *p, int64_t n_neurons, uint64_t bundle_bytes);

/* An empty plan is `coal_plan p = {0};` or coal_plan_reserve(&p, max_ids):
 * preallocate for up to max_ids input ids so coal_build never allocates. */
int  coal_plan_reserve(coal_plan *plan, int64_t max_ids, ierr *err);
void coal_plan_free(coal_plan *plan);

/* Plan the reads of ids[0..n). n == 0 gives an empty plan. -EINVAL for bad
 * params (B == 0, max_bytes < B, max_gap < 0) or an id out of range,
 * -ENOMEM; on error the plan is left empty. */
int coal_build(coal_plan *plan, const coal_params *p, const int32_t *ids, int64_t n, ierr *err);

#endif
