/* chunk.c: the bounded chunk cache of inflashfs (chunk.h). One mutex guards
 * the hash table, the LRU list, every chunk's state and refs, the read-ahead
 * queue and the counters; reads run outside it. A chunk being read is in the
 * hash table in state LOADING, so a second request for it waits on `loaded`
 * instead of reading it again. Cached chunks live in the slots of one arena
 * of budget bytes, mapped (and, with o.prefault, populated) at creation, so
 * the steady state allocates nothing and takes no page faults. */
#include "chunk.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef enum { CH_LOADING = 0, CH_READY, CH_ERROR } ch_state;

struct chunk {
    /* all fields guarded by chunk_cache.mu, except buf contents, which the
     * loading thread writes while the chunk is LOADING and everyone reads
     * once it is READY and pinned */
    uint64_t       idx;
    uint64_t       gen;            /* fill generation: unique, increasing (chunk_gen) */
    unsigned char *buf;            /* chunk_bytes, CHUNK_ALIGN-aligned: an arena slot, or owned (transient) */
    int64_t        slot;           /* arena slot, -1 for a transient chunk (malloc'd, with its buf) */
    size_t         valid;          /* valid bytes once READY */
    ch_state       state;
    unsigned       refs;           /* pins (the loader holds one while LOADING) */
    int            cached;         /* in the hash table, counted in the budget */
    int            ra;             /* read by read-ahead, not yet wanted */
    struct chunk  *hnext;          /* hash chain */
    struct chunk  *lprev, *lnext;  /* LRU list: exactly the cached READY chunks with refs == 0 */
};

typedef struct {
    uint64_t first;
    unsigned count;
} ra_item;

#define RA_QUEUE_CAP 256u

struct chunk_cache {
    /* immutable after chunk_cache_new */
    chunk_opts     o;              /* o.name, o.regions owned (copied) */
    uint64_t      *first;          /* [n_regions + 1] first chunk id of each region, then the total */
    uint64_t       n_chunks;
    uint64_t       max_cached;     /* budget / chunk_bytes = arena slots */
    unsigned char *arena;          /* [max_cached * chunk_bytes], mmap'd */
    size_t         arena_bytes;
    chunk         *ents;           /* [max_cached] the chunk of each slot */
    int            hash_bits;
    pthread_t     *threads;        /* [o.workers] */
    unsigned       n_threads;      /* started */
    int            inited;         /* mutex and conds initialised */

    pthread_mutex_t mu;
    pthread_cond_t  loaded;        /* broadcast when a chunk leaves LOADING */
    pthread_cond_t  work;          /* read-ahead queue non-empty, or stopping */
    /* guarded by mu: */
    chunk        **buckets;        /* [1 << hash_bits] */
    chunk          lru;            /* sentinel: lru.lnext least recent */
    uint64_t       n_cached;
    int64_t       *free_slots;     /* [max_cached] stack of unused slots */
    uint64_t       n_free;
    uint64_t       next_gen;       /* the gen of the next fill */
    ra_item        raq[RA_QUEUE_CAP];
    size_t         ra_head, ra_len;
    int            stopping;
    chunk_stats    st;
};

/* ---- hash table and LRU (caller holds mu) ------------------------------ */

static size_t bucket_of(const chunk_cache *c, uint64_t idx)
{
    return (size_t)((idx * 0x9E3779B97F4A7C15ull) >> (64 - c->hash_bits));
}

static chunk *hash_find(const chunk_cache *c, uint64_t idx)
{
    for (chunk *k = c->buckets[bucket_of(c, idx)]; k; k = k->hnext)
        if (k->idx == idx)
            return k;
    return NULL;
}

static void hash_insert(chunk_cache *c, chunk *k)
{
    size_t b = bucket_of(c, k->idx);
    k->hnext = c->buckets[b];
    c->buckets[b] = k;
    k->cached = 1;
    c->n_cached++;
    c->st.cached_bytes = c->n_cached * c->o.chunk_bytes;
    if (c->st.cached_bytes > c->st.peak_cached_bytes)
        c->st.peak_cached_bytes = c->st.cached_bytes;
}

static void hash_remove(chunk_cache *c, chunk *k)
{
    chunk **pp = &c->buckets[bucket_of(c, k->idx)];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    k->hnext = NULL;
    k->cached = 0;
    c->n_cached--;
    c->st.cached_bytes = c->n_cached * c->o.chunk_bytes;
}

static void lru_remove(chunk *k)
{
    if (!k->lnext)
        return;
    k->lprev->lnext = k->lnext;
    k->lnext->lprev = k->lprev;
    k->lprev = k->lnext = NULL;
}

static void lru_append(chunk_cache *c, chunk *k)
{
    k->lprev = c->lru.lprev;
    k->lnext = &c->lru;
    c->lru.lprev->lnext = k;
    c->lru.lprev = k;
}

/* An unpinned chunk that is not cached goes away: a transient one is freed,
 * a slot goes back on the free stack. */
static void chunk_destroy(chunk_cache *c, chunk *k)
{
    if (k->slot < 0) {
        free(k->buf);
        free(k);
    } else {
        c->free_slots[c->n_free++] = k->slot;
    }
}

/* ---- chunk ids -> device offsets ----------------------------------------- */

static size_t region_of(const chunk_cache *c, uint64_t id)
{
    size_t lo = 0, hi = c->o.n_regions;       /* first[lo] <= id < first[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->first[mid] <= id)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

uint64_t chunk_offset(const chunk_cache *c, uint64_t id, size_t *valid)
{
    size_t r = region_of(c, id);
    const chunk_region *g = &c->o.regions[r];
    uint64_t off = g->off + (id - c->first[r]) * c->o.chunk_bytes;
    if (valid) {
        uint64_t left = g->off + g->len - off;
        *valid = (size_t)(left < c->o.chunk_bytes ? left : c->o.chunk_bytes);
    }
    return off;
}

uint64_t chunk_region_first(const chunk_cache *c, size_t r)
{
    return c->first[r < c->o.n_regions ? r : c->o.n_regions];
}

/* Drop one pin; an unpinned cached READY chunk joins the LRU tail, an
 * unpinned uncached one (transient or failed) is freed. */
static void unpin_locked(chunk_cache *c, chunk *k)
{
    if (--k->refs > 0)
        return;
    if (!k->cached)
        chunk_destroy(c, k);
    else if (k->state == CH_READY)
        lru_append(c, k);
}

/* A new LOADING chunk for idx with one pin: in a free arena slot, else in
 * the slot of the least recently used unpinned chunk (evicted); if every
 * slot is pinned, a private buffer for a foreground request
 * (may_transient), NULL for read-ahead. NULL with *nomem set on allocation
 * failure. */
static chunk *claim_locked(chunk_cache *c, uint64_t idx, int may_transient, int *nomem)
{
    chunk *k;
    if (c->n_free > 0) {
        k = &c->ents[c->free_slots[--c->n_free]];
    } else if (c->lru.lnext != &c->lru) {
        k = c->lru.lnext;
        lru_remove(k);
        hash_remove(c, k);
        c->st.evictions++;
    } else if (may_transient) {
        k = calloc(1, sizeof *k);
        if (!k || posix_memalign((void **)&k->buf, CHUNK_ALIGN, c->o.chunk_bytes) != 0) {
            free(k);
            *nomem = 1;
            return NULL;
        }
        k->slot = -1;
        c->st.transient++;
    } else {
        return NULL;
    }
    unsigned char *buf = k->buf;
    int64_t slot = k->slot;
    memset(k, 0, sizeof *k);
    k->buf = buf;
    k->slot = slot;
    k->idx = idx;
    k->gen = ++c->next_gen;
    k->state = CH_LOADING;
    k->refs = 1;
    if (slot >= 0)
        hash_insert(c, k);
    return k;
}

/* The loader is done with k (state READY or ERROR): a failed chunk leaves the
 * cache at once so that the next request retries it. */
static void finish_locked(chunk_cache *c, chunk *k, int ok)
{
    k->state = ok ? CH_READY : CH_ERROR;
    if (!ok && k->cached)
        hash_remove(c, k);
}

/* ---- reading ------------------------------------------------------------ */

static void log_line(chunk_cache *c, const char *line)
{
    if (c->o.log)
        c->o.log(c->o.log_ctx, line);
    else
        fprintf(stderr, "%s\n", line);
}

/* Read the chunks mine[0..n) (LOADING, pinned by the caller, sorted by idx)
 * without holding mu: consecutive indices in one readv. ok[i] says whether
 * chunk i got all its bytes; returns the first error (0 if none) with err
 * filled. Counters are added under mu by the caller via *reads etc. */
static int load_chunks(chunk_cache *c, chunk **mine, size_t n, int *ok, uint64_t *reads,
                       uint64_t *bytes, uint64_t *errors, ierr *err)
{
    int rc = 0;
    const uint64_t cb = c->o.chunk_bytes;
    size_t i = 0;
    while (i < n) {
        /* a run: chunks that are neighbours on the device */
        uint64_t off = chunk_offset(c, mine[i]->idx, &mine[i]->valid), end = off + mine[i]->valid;
        size_t j = i + 1;
        while (j < n && j - i < IOV_MAX && chunk_offset(c, mine[j]->idx, &mine[j]->valid) == end &&
               mine[j - 1]->valid == cb) {
            end += mine[j]->valid;
            j++;
        }
        struct iovec iov[IOV_MAX];
        for (size_t m = i; m < j; m++)
            iov[m - i] = (struct iovec){ .iov_base = mine[m]->buf, .iov_len = cb };
        ssize_t r = c->o.readv(c->o.ctx, off, iov, (int)(j - i));
        (*reads)++;
        if (r > 0)
            *bytes += (uint64_t)r;
        if (r < 0 || (uint64_t)r < end - off) {
            char line[IERR_LEN], where[128] = "";
            if (c->o.where)
                c->o.where(c->o.ctx, off, end - off, where, sizeof where);
            if (r < 0)
                snprintf(line, sizeof line, "%s: read of %llu bytes at offset %llu%s failed: %s", c->o.name,
                         (unsigned long long)(end - off), (unsigned long long)off, where, strerror((int)-r));
            else
                snprintf(line, sizeof line, "%s: short read at offset %llu%s: %lld of %llu bytes", c->o.name,
                         (unsigned long long)off, where, (long long)r, (unsigned long long)(end - off));
            log_line(c, line);
            (*errors)++;
            if (rc == 0)
                rc = ierr_set(err, -EIO, "%s", line);
        }
        for (size_t m = i; m < j; m++)   /* chunk m starts (m - i) chunks into the run */
            ok[m] = r >= 0 && (uint64_t)r >= (m - i) * cb + mine[m]->valid;
        i = j;
    }
    return rc;
}

/* Read mine[0..n) and publish the results: READY or ERROR, waiters woken. */
static int load_and_finish(chunk_cache *c, chunk **mine, size_t n, int *ok, ierr *err)
{
    uint64_t reads = 0, bytes = 0, errors = 0;
    int rc = load_chunks(c, mine, n, ok, &reads, &bytes, &errors, err);
    pthread_mutex_lock(&c->mu);
    c->st.reads += reads;
    c->st.read_bytes += bytes;
    c->st.read_errors += errors;
    for (size_t i = 0; i < n; i++)
        finish_locked(c, mine[i], ok[i]);
    pthread_cond_broadcast(&c->loaded);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- read-ahead --------------------------------------------------------- */

static void ra_enqueue_locked(chunk_cache *c, uint64_t first)
{
    /* read ahead within the region only (layers are unrelated) */
    if (first >= c->n_chunks || region_of(c, first) != region_of(c, first - 1))
        return;
    if (c->ra_len == RA_QUEUE_CAP) {
        c->st.ra_dropped++;
        return;
    }
    c->raq[(c->ra_head + c->ra_len) % RA_QUEUE_CAP] = (ra_item){ .first = first, .count = c->o.readahead };
    c->ra_len++;
    pthread_cond_signal(&c->work);
}

static void *ra_worker(void *arg)
{
    chunk_cache *c = arg;
    chunk **mine = malloc(c->o.readahead * sizeof *mine);
    int *ok = malloc(c->o.readahead * sizeof *ok);
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stopping && c->ra_len == 0)
            pthread_cond_wait(&c->work, &c->mu);
        if (c->stopping)
            break;
        ra_item it = c->raq[c->ra_head];
        c->ra_head = (c->ra_head + 1) % RA_QUEUE_CAP;
        c->ra_len--;
        if (!mine || !ok)
            continue;
        size_t n = 0;
        int nomem = 0;
        uint64_t end = c->first[region_of(c, it.first) + 1];
        for (uint64_t i = it.first; i < it.first + it.count && i < end; i++) {
            if (hash_find(c, i))
                continue;
            chunk *k = claim_locked(c, i, 0, &nomem);
            if (!k)
                break;
            k->ra = 1;
            mine[n++] = k;
        }
        if (n == 0)
            continue;
        c->st.ra_chunks += n;
        pthread_mutex_unlock(&c->mu);
        load_and_finish(c, mine, n, ok, NULL);
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < n; i++)
            unpin_locked(c, mine[i]);
    }
    pthread_mutex_unlock(&c->mu);
    free(mine);
    free(ok);
    return NULL;
}

/* ---- public ------------------------------------------------------------- */

int chunk_cache_new(const chunk_opts *o, chunk_cache **out, ierr *err)
{
    const char *name = o->name ? o->name : "device";
    uint64_t cb = o->chunk_bytes;
    if (cb < CHUNK_MIN || cb > CHUNK_MAX || (cb & (cb - 1)))
        return ierr_set(err, -EINVAL, "%s: chunk size %llu is not a power of two in [%u, %u]", name,
                        (unsigned long long)cb, CHUNK_MIN, CHUNK_MAX);
    if (o->budget_bytes < cb)
        return ierr_set(err, -EINVAL, "%s: cache size %llu is smaller than one chunk (%llu)", name,
                        (unsigned long long)o->budget_bytes, (unsigned long long)cb);
    if (!o->readv)
        return ierr_set(err, -EINVAL, "%s: no read function", name);
    chunk_region whole = { .off = 0, .len = o->dev_bytes };
    const chunk_region *regs = o->n_regions ? o->regions : &whole;
    size_t n_regs = o->n_regions ? o->n_regions : 1;
    for (size_t r = 0; r < n_regs; r++)
        if (regs[r].off % CHUNK_ALIGN || (r > 0 && regs[r].off < regs[r - 1].off + regs[r - 1].len))
            return ierr_set(err, -EINVAL, "%s: region %zu at %llu: unaligned or overlapping", name, r,
                            (unsigned long long)regs[r].off);
    chunk_cache *c = calloc(1, sizeof *c);
    if (!c)
        return ierr_set(err, -ENOMEM, "%s: out of memory", name);
    c->o = *o;
    c->o.name = strdup(name);
    c->o.n_regions = n_regs;
    c->o.regions = malloc(n_regs * sizeof *regs);
    c->first = malloc((n_regs + 1) * sizeof *c->first);
    if (!c->o.name || !c->o.regions || !c->first) {
        chunk_cache_free(c);
        return ierr_set(err, -ENOMEM, "%s: out of memory", name);
    }
    memcpy((chunk_region *)c->o.regions, regs, n_regs * sizeof *regs);
    c->first[0] = 0;
    for (size_t r = 0; r < n_regs; r++)
        c->first[r + 1] = c->first[r] + (regs[r].len + cb - 1) / cb;
    c->n_chunks = c->first[n_regs];
    c->max_cached = o->budget_bytes / cb;
    c->hash_bits = 6;
    while (c->hash_bits < 30 && (1ull << c->hash_bits) < 2 * c->max_cached)
        c->hash_bits++;
    c->buckets = calloc((size_t)1 << c->hash_bits, sizeof *c->buckets);
    c->ents = calloc(c->max_cached, sizeof *c->ents);
    c->free_slots = malloc(c->max_cached * sizeof *c->free_slots);
    c->arena_bytes = (size_t)(c->max_cached * cb);
    c->arena = mmap(NULL, c->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c->arena == MAP_FAILED)
        c->arena = NULL;
    if (!c->buckets || !c->ents || !c->free_slots || !c->arena) {
        chunk_cache_free(c);
        return ierr_set(err, -ENOMEM, "%s: cannot allocate a cache of %llu bytes", name,
                        (unsigned long long)o->budget_bytes);
    }
    madvise(c->arena, c->arena_bytes, MADV_HUGEPAGE);      /* fewer TLB misses; advisory */
    if (o->prefault && madvise(c->arena, c->arena_bytes, MADV_POPULATE_WRITE) != 0)
        for (size_t b = 0; b < c->arena_bytes; b += 4096)  /* kernels before 5.14 */
            c->arena[b] = 0;
    for (uint64_t i = 0; i < c->max_cached; i++) {
        c->ents[i].buf = c->arena + i * cb;
        c->ents[i].slot = (int64_t)i;
        c->free_slots[i] = (int64_t)(c->max_cached - 1 - i);   /* slot 0 first */
    }
    c->n_free = c->max_cached;
    c->lru.lnext = c->lru.lprev = &c->lru;
    c->st.budget_bytes = c->max_cached * cb;
    c->st.chunk_bytes = cb;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->loaded, NULL);
    pthread_cond_init(&c->work, NULL);
    c->inited = 1;
    if (o->readahead > 0 && o->workers > 0) {
        c->threads = calloc(o->workers, sizeof *c->threads);
        if (!c->threads) {
            chunk_cache_free(c);
            return ierr_set(err, -ENOMEM, "%s: out of memory", name);
        }
        for (unsigned i = 0; i < o->workers; i++) {
            int e = pthread_create(&c->threads[i], NULL, ra_worker, c);
            if (e) {
                chunk_cache_free(c);
                return ierr_set(err, -e, "%s: cannot start read-ahead thread: %s", name, strerror(e));
            }
            c->n_threads++;
        }
    }
    *out = c;
    return 0;
}

void chunk_cache_free(chunk_cache *c)
{
    if (!c)
        return;
    if (c->inited) {
        /* stop the workers; cached chunks live in the arena, nothing else is
         * allocated once no pins remain */
        pthread_mutex_lock(&c->mu);
        c->stopping = 1;
        pthread_cond_broadcast(&c->work);
        pthread_mutex_unlock(&c->mu);
        for (unsigned i = 0; i < c->n_threads; i++)
            pthread_join(c->threads[i], NULL);
        pthread_cond_destroy(&c->work);
        pthread_cond_destroy(&c->loaded);
        pthread_mutex_destroy(&c->mu);
    }
    if (c->arena)
        munmap(c->arena, c->arena_bytes);
    free(c->ents);
    free(c->free_slots);
    free(c->threads);
    free(c->buckets);
    free(c->first);
    free((chunk_region *)c->o.regions);
    free((char *)c->o.name);
    free(c);
}

uint64_t chunk_size(const chunk_cache *c)
{
    return c->o.chunk_bytes;
}

uint64_t chunk_count(const chunk_cache *c)
{
    return c->n_chunks;
}

int chunk_pin(chunk_cache *c, const uint64_t *idx, size_t n, chunk **pins, ierr *err)
{
    for (size_t i = 0; i < n; i++)
        if (idx[i] >= c->n_chunks || (i > 0 && idx[i] <= idx[i - 1]))
            return ierr_set(err, -EINVAL, "%s: bad chunk list (index %llu of %llu)", c->o.name,
                            (unsigned long long)idx[i], (unsigned long long)c->n_chunks);
    if (n == 0)
        return 0;
    chunk **mine = malloc(n * sizeof *mine);
    int *ok = malloc(n * sizeof *ok);
    if (!mine || !ok) {
        free(mine);
        free(ok);
        return ierr_set(err, -ENOMEM, "%s: out of memory", c->o.name);
    }
    size_t n_mine = 0, n_pinned = 0;
    int nomem = 0, rc = 0;

    pthread_mutex_lock(&c->mu);
    for (; n_pinned < n; n_pinned++) {
        chunk *k = hash_find(c, idx[n_pinned]);
        if (k) {
            k->refs++;
            lru_remove(k);
            if (k->state == CH_READY) {
                c->st.hits++;
            } else {
                c->st.shared++;
            }
            if (k->ra) {
                c->st.ra_used++;
                k->ra = 0;
            }
        } else {
            k = claim_locked(c, idx[n_pinned], 1, &nomem);
            if (!k)
                break;
            c->st.misses++;
            mine[n_mine++] = k;
        }
        pins[n_pinned] = k;
    }
    pthread_mutex_unlock(&c->mu);

    if (n_mine > 0) {
        if (nomem) {
            /* publish our claims as failed so that waiters do not hang */
            pthread_mutex_lock(&c->mu);
            for (size_t i = 0; i < n_mine; i++)
                finish_locked(c, mine[i], 0);
            pthread_cond_broadcast(&c->loaded);
            pthread_mutex_unlock(&c->mu);
        } else {
            rc = load_and_finish(c, mine, n_mine, ok, err);
        }
    }

    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n_pinned && !nomem; i++) {
        while (pins[i]->state == CH_LOADING)
            pthread_cond_wait(&c->loaded, &c->mu);
        if (pins[i]->state == CH_ERROR && rc == 0)
            rc = ierr_set(err, -EIO, "%s: read failed at offset %llu", c->o.name,
                          (unsigned long long)chunk_offset(c, pins[i]->idx, NULL));
    }
    if (nomem)
        rc = ierr_set(err, -ENOMEM, "%s: out of memory for chunk buffers", c->o.name);
    if (rc < 0) {
        for (size_t i = 0; i < n_pinned; i++)
            unpin_locked(c, pins[i]);
    } else if (c->n_threads > 0) {
        for (size_t i = 0; i < n; i++)
            if (i + 1 == n || idx[i + 1] != idx[i] + 1)
                ra_enqueue_locked(c, idx[i] + 1);
    }
    pthread_mutex_unlock(&c->mu);
    free(mine);
    free(ok);
    return rc;
}

int chunk_pin_range(chunk_cache *c, uint64_t off, uint64_t len, chunk **pins, size_t cap,
                    size_t *n, ierr *err)
{
    *n = 0;
    size_t r = 0;
    while (r < c->o.n_regions && off >= c->o.regions[r].off + c->o.regions[r].len)
        r++;
    const chunk_region *g = r < c->o.n_regions ? &c->o.regions[r] : NULL;
    if (len == 0 || !g || off < g->off || len > g->off + g->len - off)
        return ierr_set(err, -EINVAL, "%s: range %llu+%llu not inside one region", c->o.name,
                        (unsigned long long)off, (unsigned long long)len);
    uint64_t first = c->first[r] + (off - g->off) / c->o.chunk_bytes;
    uint64_t last = c->first[r] + (off + len - 1 - g->off) / c->o.chunk_bytes;
    size_t cnt = (size_t)(last - first + 1);
    if (cnt > cap)
        return ierr_set(err, -EINVAL, "%s: %zu chunks do not fit in %zu pins", c->o.name, cnt, cap);
    uint64_t *idx = malloc(cnt * sizeof *idx);
    if (!idx)
        return ierr_set(err, -ENOMEM, "%s: out of memory", c->o.name);
    for (size_t i = 0; i < cnt; i++)
        idx[i] = first + i;
    int rc = chunk_pin(c, idx, cnt, pins, err);
    free(idx);
    if (rc == 0)
        *n = cnt;
    return rc;
}

void chunk_discard(chunk_cache *c, chunk *const *pins, size_t n)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        if (pins[i]->cached && pins[i]->state == CH_READY) {
            hash_remove(c, pins[i]);
            c->st.discarded++;
        }
    pthread_mutex_unlock(&c->mu);
}

void chunk_unpin(chunk_cache *c, chunk **pins, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++)
        unpin_locked(c, pins[i]);
    pthread_mutex_unlock(&c->mu);
}

const unsigned char *chunk_data(const chunk *k)
{
    return k->buf;
}

size_t chunk_valid(const chunk *k)
{
    return k->valid;
}

uint64_t chunk_gen(const chunk *k)
{
    return k->gen;
}

void chunk_get_stats(chunk_cache *c, chunk_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}
