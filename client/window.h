/* window.h: the sliding-window bookkeeping of one FFN layer. The resident
 * set is the union of the active sets of the last k tokens; per token the
 * window says which neurons must be loaded (in the union now, not before)
 * and which fell out (in none of the last k sets any more).
 *
 * A per-neuron count of how many held sets contain it and a ring of the
 * last k sets make a push O(|new set| + |dropped set|).
 *
 * Typical use per token and layer:
 *   window_delta_clear(&d);
 *   window_push(w, active, n, &d, err);             // loads + drops
 *   while (window_resident(w) > capacity && window_k(w) > 1)
 *       window_set_k(w, window_k(w) - 1, &d, err);  // budget tight: more drops
 *   delete d.drop[0..n_drop), then load d.load[0..n_load)
 * Within one token (between clears) the ids in d.load are distinct, those in
 * d.drop are distinct, and no id is in both.
 *
 * Not thread-safe: one owner per window. */
#ifndef INFLASH_WINDOW_H
#define INFLASH_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct window window;

/* The changes reported by window_push / window_set_k / window_reset, which
 * APPEND to it; the caller owns it and empties it with window_delta_clear
 * (once per token). Arrays hold `cap` = n_neurons entries each, enough for
 * any sequence of calls between two clears that pushes at most once. */
typedef struct {
    int32_t *load;    /* owned: ids that became resident, to read */
    int64_t  n_load;
    int32_t *drop;    /* owned: ids no longer in any held set, to evict */
    int64_t  n_drop;
    int64_t  cap;     /* entries allocated in load and in drop */
} window_delta;

int  window_delta_init(window_delta *d, int64_t n_neurons, ierr *err);
void window_delta_clear(window_delta *d);
void window_delta_free(window_delta *d);

/* A window over neurons [0, n_neurons) keeping the last k >= 1 sets. */
int  window_new(int64_t n_neurons, int64_t k, window **out, ierr *err);
void window_free(window *w);

/* Record the current token's active set ids[0..n) (any order, duplicates
 * allowed) as the newest set; if more than k sets are then held, the oldest
 * goes. Appends the new resident ids to d->load and the evicted ones to
 * d->drop. -EINVAL an id out of range, -ENOSPC d too full (clear it),
 * -ENOMEM; the window is unchanged on error. */
int window_push(window *w, const int32_t *ids, int64_t n, window_delta *d, ierr *err);

/* Change k (>= 1). Shrinking drops the oldest sets beyond the new k at once
 * (their evicted ids appended to d->drop); growing keeps more sets from the
 * next pushes on. -EINVAL k < 1, -ENOSPC, -ENOMEM; unchanged on error. */
int window_set_k(window *w, int64_t k, window_delta *d, ierr *err);

/* Forget every held set (new sequence); all resident ids go to d->drop. */
int window_reset(window *w, window_delta *d, ierr *err);

int64_t window_k(const window *w);
int64_t window_held(const window *w);       /* sets held now, <= k */
int64_t window_resident(const window *w);   /* size of the union */
int     window_contains(const window *w, int32_t id);
int64_t window_n_neurons(const window *w);
/* Bytes the window has allocated (it grows its set buffers to the largest
 * set seen, so this settles after the first tokens). */
uint64_t window_bytes(const window *w);

#endif
