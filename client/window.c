/* window.c: sliding-window resident-set bookkeeping (see window.h). */
#include "window.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One token's active set, deduplicated. */
typedef struct {
    int32_t *ids;     /* owned; grown to the largest set stored in this slot */
    int64_t  n;
    int64_t  cap;
} wset;

struct window {
    /* All fields owned by the window's single user (no locking). */
    int64_t   n_neurons;
    int64_t   k;          /* sets to keep, >= 1 */
    wset     *slots;      /* ring of n_slots >= k + 1 slots, owned; the held sets are
                             slots[(head + i) % n_slots], i in [0, held), oldest first;
                             the slot after them receives the next push */
    int64_t   n_slots;
    int64_t   head;
    int64_t   held;       /* sets held, <= k */
    int32_t  *count;      /* n_neurons, owned: how many held sets contain each id */
    int64_t   resident;   /* ids with count > 0 */
    uint32_t *stamp;      /* n_neurons, owned: stamp[id] == epoch if seen in this push */
    uint32_t  epoch;
};

int window_delta_init(window_delta *d, int64_t n_neurons, ierr *err)
{
    memset(d, 0, sizeof *d);
    if (n_neurons < 1 || n_neurons > INT32_MAX)
        return ierr_set(err, -EINVAL, "window: bad neuron count %lld", (long long)n_neurons);
    d->load = malloc((size_t)n_neurons * sizeof(int32_t));
    d->drop = malloc((size_t)n_neurons * sizeof(int32_t));
    if (!d->load || !d->drop) {
        window_delta_free(d);
        return ierr_set(err, -ENOMEM, "window: out of memory for a delta of %lld ids",
                        (long long)n_neurons);
    }
    d->cap = n_neurons;
    return 0;
}

void window_delta_clear(window_delta *d)
{
    d->n_load = 0;
    d->n_drop = 0;
}

void window_delta_free(window_delta *d)
{
    free(d->load);
    free(d->drop);
    memset(d, 0, sizeof *d);
}

/* Make room for k + 1 slots, keeping the held sets in order (head becomes 0). */
static int ring_grow(window *w, int64_t k, ierr *err)
{
    if (k + 1 <= w->n_slots)
        return 0;
    if (k > INT32_MAX)
        return ierr_set(err, -EINVAL, "window: k %lld too large", (long long)k);
    wset *s = calloc((size_t)(k + 1), sizeof *s);
    if (!s)
        return ierr_set(err, -ENOMEM, "window: out of memory for %lld sets", (long long)k);
    for (int64_t i = 0; i < w->n_slots; i++)
        s[i] = w->slots[(w->head + i) % w->n_slots];
    free(w->slots);
    w->slots = s;
    w->n_slots = k + 1;
    w->head = 0;
    return 0;
}

int window_new(int64_t n_neurons, int64_t k, window **out, ierr *err)
{
    *out = NULL;
    if (n_neurons < 1 || n_neurons > INT32_MAX || k < 1)
        return ierr_set(err, -EINVAL, "window: bad sizes (n_neurons %lld, k %lld)",
                        (long long)n_neurons, (long long)k);
    window *w = calloc(1, sizeof *w);
    if (!w)
        return ierr_set(err, -ENOMEM, "window: out of memory");
    w->n_neurons = n_neurons;
    w->k = k;
    w->count = calloc((size_t)n_neurons, sizeof *w->count);
    w->stamp = calloc((size_t)n_neurons, sizeof *w->stamp);
    int rc = (w->count && w->stamp) ? ring_grow(w, k, err)
                                    : ierr_set(err, -ENOMEM, "window: out of memory");
    if (rc) {
        window_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void window_free(window *w)
{
    if (!w)
        return;
    for (int64_t i = 0; i < w->n_slots; i++)
        free(w->slots[i].ids);
    free(w->slots);
    free(w->count);
    free(w->stamp);
    free(w);
}

/* Remove the oldest held set; ids whose count falls to 0 go to d->drop
 * (the caller has checked there is room: at most `resident` of them). */
static void evict_oldest(window *w, window_delta *d)
{
    wset *s = &w->slots[w->head];
    for (int64_t i = 0; i < s->n; i++) {
        int32_t id = s->ids[i];
        if (--w->count[id] == 0) {
            d->drop[d->n_drop++] = id;
            w->resident--;
        }
    }
    s->n = 0;
    w->head = (w->head + 1) % w->n_slots;
    w->held--;
}

static int delta_check(const window *w, const window_delta *d, int64_t loads, ierr *err)
{
    /* Every drop is a currently resident id, every load a non-resident one. */
    if (d->n_drop + w->resident > d->cap || d->n_load + loads > d->cap)
        return ierr_set(err, -ENOSPC, "window: delta full (%lld loads, %lld drops, room for %lld): "
                        "clear it once per token", (long long)d->n_load, (long long)d->n_drop,
                        (long long)d->cap);
    return 0;
}

int window_push(window *w, const int32_t *ids, int64_t n, window_delta *d, ierr *err)
{
    if (n < 0)
        return ierr_set(err, -EINVAL, "window: negative set size %lld", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->n_neurons)
            return ierr_set(err, -EINVAL, "window: neuron %ld out of range [0, %lld)",
                            (long)ids[i], (long long)w->n_neurons);
    int64_t max_new = n < w->n_neurons ? n : w->n_neurons;
    int64_t max_load = w->n_neurons - w->resident;
    int rc = delta_check(w, d, max_new < max_load ? max_new : max_load, err);
    if (rc)
        return rc;
    wset *s = &w->slots[(w->head + w->held) % w->n_slots];
    if (s->cap < max_new) {
        int32_t *p = realloc(s->ids, (size_t)max_new * sizeof(int32_t));
        if (!p)
            return ierr_set(err, -ENOMEM, "window: out of memory for a set of %lld", (long long)max_new);
        s->ids = p;
        s->cap = max_new;
    }
    if (++w->epoch == 0) {   /* wrapped: old stamps could collide */
        memset(w->stamp, 0, (size_t)w->n_neurons * sizeof *w->stamp);
        w->epoch = 1;
    }
    /* Count the new set in before evicting, so an id in both the new and the
     * oldest set never shows up as dropped. */
    s->n = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (w->stamp[id] == w->epoch)
            continue;
        w->stamp[id] = w->epoch;
        s->ids[s->n++] = id;
        if (w->count[id]++ == 0) {
            d->load[d->n_load++] = id;
            w->resident++;
        }
    }
    w->held++;
    if (w->held > w->k)
        evict_oldest(w, d);
    return 0;
}

int window_set_k(window *w, int64_t k, window_delta *d, ierr *err)
{
    if (k < 1)
        return ierr_set(err, -EINVAL, "window: k must be >= 1, not %lld", (long long)k);
    int rc = delta_check(w, d, 0, err);
    if (!rc)
        rc = ring_grow(w, k, err);
    if (rc)
        return rc;
    while (w->held > k)
        evict_oldest(w, d);
    w->k = k;
    return 0;
}

int window_reset(window *w, window_delta *d, ierr *err)
{
    int rc = delta_check(w, d, 0, err);
    if (rc)
        return rc;
    while (w->held > 0)
        evict_oldest(w, d);
    return 0;
}

int64_t window_k(const window *w) { return w->k; }
int64_t window_held(const window *w) { return w->held; }
int64_t window_resident(const window *w) { return w->resident; }
int64_t window_n_neurons(const window *w) { return w->n_neurons; }

int window_contains(const window *w, int32_t id)
{
    return id >= 0 && id < w->n_neurons && w->count[id] > 0;
}

uint64_t window_bytes(const window *w)
{
    uint64_t b = sizeof *w + (uint64_t)w->n_slots * sizeof(wset) +
                 (uint64_t)w->n_neurons * (sizeof *w->count + sizeof *w->stamp);
    for (int64_t i = 0; i < w->n_slots; i++)
        b += (uint64_t)w->slots[i].cap * sizeof(int32_t);
    return b;
}
