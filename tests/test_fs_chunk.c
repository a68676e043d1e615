/* test_fs_chunk.c: the chunk cache of inflashfs (fs/chunk.c) over a fake
 * device in memory whose readv counts calls and can be gated or made to
 * fail: data and valid lengths, hits, one readv for neighbouring chunks, the
 * byte budget under eviction, transient chunks when everything is pinned,
 * sharing of in-flight reads between threads, EIO and short reads (with the
 * log line, and retry afterwards), bounds, and read-ahead. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chunk.h"

/* ---- the fake device ------------------------------------------------------ */

typedef struct {
    unsigned char  *data;
    uint64_t        size;
    atomic_int      reads;         /* readv calls */
    atomic_int      iovs;          /* iovecs seen */
    atomic_int      misaligned;    /* readv calls breaking the O_DIRECT rules */
    /* gate: while closed, readv blocks (to hold a read in flight) */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             gate_closed;
    int             in_read;       /* readers blocked at the gate */
    /* failure injection: reads covering fail_off fail with -EIO, or come
     * back short_by bytes short */
    int64_t         fail_off;
    uint64_t        short_by;
    char            last_log[IERR_LEN];
    atomic_int      logs;
} fakedev;

static unsigned char pattern(uint64_t off)
{
    return (unsigned char)((off * 2654435761u) >> 13);
}

static void fake_init(fakedev *f, uint64_t size)
{
    memset(f, 0, sizeof *f);
    f->data = malloc(size);
    for (uint64_t i = 0; i < size; i++)
        f->data[i] = pattern(i);
    f->size = size;
    f->fail_off = -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

static void fake_fini(fakedev *f)
{
    assert_int_equal(atomic_load(&f->misaligned), 0);
    free(f->data);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
}

static ssize_t fake_readv(void *ctx, uint64_t off, const struct iovec *iov, int iovcnt)
{
    fakedev *f = ctx;
    atomic_fetch_add(&f->reads, 1);
    atomic_fetch_add(&f->iovs, iovcnt);
    pthread_mutex_lock(&f->mu);
    f->in_read++;
    pthread_cond_broadcast(&f->cv);
    while (f->gate_closed)
        pthread_cond_wait(&f->cv, &f->mu);
    f->in_read--;
    int64_t fail_off = f->fail_off;
    uint64_t short_by = f->short_by;
    pthread_mutex_unlock(&f->mu);
    /* no cmocka asserts here: this runs on other threads */
    uint64_t want = 0;
    int bad = off % CHUNK_ALIGN != 0;
    for (int i = 0; i < iovcnt; i++) {
        bad |= (uintptr_t)iov[i].iov_base % CHUNK_ALIGN != 0 || iov[i].iov_len % CHUNK_ALIGN != 0;
        want += iov[i].iov_len;
    }
    if (bad)
        atomic_fetch_add(&f->misaligned, 1);
    if (fail_off >= 0 && (uint64_t)fail_off >= off && (uint64_t)fail_off < off + want)
        return short_by ? (ssize_t)((uint64_t)fail_off - off) : -EIO;
    uint64_t pos = off, done = 0;
    for (int i = 0; i < iovcnt && pos < f->size; i++) {
        uint64_t n = iov[i].iov_len;
        if (n > f->size - pos)
            n = f->size - pos;
        memcpy(iov[i].iov_base, f->data + pos, n);
        pos += n;
        done += n;
    }
    return (ssize_t)done;
}

static void fake_log(void *ctx, const char *line)
{
    fakedev *f = ctx;
    pthread_mutex_lock(&f->mu);
    snprintf(f->last_log, sizeof f->last_log, "%s", line);
    pthread_mutex_unlock(&f->mu);
    atomic_fetch_add(&f->logs, 1);
}

static chunk_cache *make_cache(fakedev *f, uint64_t cb, uint64_t budget, unsigned ra)
{
    chunk_opts o = {
        .chunk_bytes = cb, .budget_bytes = budget, .dev_bytes = f->size,
        .readahead = ra, .workers = ra ? 1 : 0, .name = "ffn.bin",
        .readv = fake_readv, .ctx = f, .log = fake_log, .log_ctx = f,
    };
    chunk_cache *c = NULL;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_cache_new(&o, &c, &err), 0);
    return c;
}

/* Check the pinned chunk against the device (one region: chunk idx at idx * cb). */
static void check_chunk(const fakedev *f, const chunk *k, uint64_t idx, uint64_t cb)
{
    uint64_t off = idx * cb;
    uint64_t want = f->size - off < cb ? f->size - off : cb;
    assert_int_equal(chunk_valid(k), want);
    assert_memory_equal(chunk_data(k), f->data + off, want);
}

/* Same, through the cache's own id -> offset mapping. */
static void check_chunk_at(const fakedev *f, chunk_cache *c, const chunk *k, uint64_t id)
{
    size_t valid;
    uint64_t off = chunk_offset(c, id, &valid);
    assert_int_equal(chunk_valid(k), valid);
    assert_memory_equal(chunk_data(k), f->data + off, valid);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = ms * 1000000L };
    nanosleep(&ts, NULL);
}

/* Poll a condition for up to ~10 s (the tests never rely on timing
 * otherwise: this only waits for threads to reach a known state). */
#define WAIT_FOR(cond) do { int w_ = 0; while (!(cond) && w_++ < 10000) sleep_ms(1); assert_true(cond); } while (0)

/* ---- tests ------------------------------------------------------------- */

static void test_data_hits_and_coalescing(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 10 * 4096 + 1000);           /* last chunk partial */
    chunk_cache *c = make_cache(&f, 4096, 64 * 4096, 0);
    assert_int_equal(chunk_count(c), 11);
    chunk *pins[16];
    size_t n;
    ierr err = IERR_INIT;
    /* 4 missing neighbours: one readv of 4 iovecs */
    assert_int_equal(chunk_pin_range(c, 4096 + 5, 3 * 4096, pins, 16, &n, &err), 0);
    assert_int_equal(n, 4);
    assert_int_equal(atomic_load(&f.reads), 1);
    assert_int_equal(atomic_load(&f.iovs), 4);
    for (size_t i = 0; i < n; i++)
        check_chunk(&f, pins[i], 1 + i, 4096);
    chunk_unpin(c, pins, n);
    /* again: all hits, no read */
    assert_int_equal(chunk_pin_range(c, 2 * 4096, 2 * 4096, pins, 16, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(atomic_load(&f.reads), 1);
    chunk_unpin(c, pins, n);
    /* the partial last chunk, and a scattered list: 0 (miss), 2 (hit), 10 (miss) */
    uint64_t idx[3] = { 0, 2, 10 };
    assert_int_equal(chunk_pin(c, idx, 3, pins, &err), 0);
    assert_int_equal(atomic_load(&f.reads), 3);          /* 0 and 10 are not neighbours */
    check_chunk(&f, pins[0], 0, 4096);
    check_chunk(&f, pins[1], 2, 4096);
    check_chunk(&f, pins[2], 10, 4096);
    assert_int_equal(chunk_valid(pins[2]), 1000);
    chunk_unpin(c, pins, 3);
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_int_equal(st.misses, 6);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.reads, 3);
    assert_int_equal(st.read_bytes, 6 * 4096 - 4096 + 1000);
    assert_int_equal(st.cached_bytes, 6 * 4096);
    assert_int_equal(st.evictions, 0);
    chunk_cache_free(c);
    fake_fini(&f);
}

static void test_budget_eviction(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 256 * 8192);
    const uint64_t cb = 8192, budget = 5 * 8192 + 100;   /* room for 5 chunks */
    chunk_cache *c = make_cache(&f, cb, budget, 0);
    ierr err = IERR_INIT;
    uint64_t x = 12345;
    for (int it = 0; it < 2000; it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t idx[2] = { (x >> 33) % 255, 0 };
        idx[1] = idx[0] + 1;
        chunk *pins[2];
        assert_int_equal(chunk_pin(c, idx, 2, pins, &err), 0);
        check_chunk(&f, pins[0], idx[0], cb);
        check_chunk(&f, pins[1], idx[1], cb);
        chunk_unpin(c, pins, 2);
        chunk_stats st;
        chunk_get_stats(c, &st);
        assert_true(st.cached_bytes <= budget);
    }
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_int_equal(st.budget_bytes, 5 * cb);
    assert_true(st.peak_cached_bytes <= 5 * cb);
    assert_int_equal(st.peak_cached_bytes, 5 * cb);
    assert_true(st.evictions > 1000);
    assert_int_equal(st.transient, 0);
    /* LRU: the 5 most recently used chunks stay; pinning them reads nothing */
    uint64_t recent[3] = { 200, 201, 202 };
    chunk *pins[3];
    assert_int_equal(chunk_pin(c, recent, 3, pins, &err), 0);
    chunk_unpin(c, pins, 3);
    int reads = atomic_load(&f.reads);
    uint64_t again[2] = { 201, 202 };
    assert_int_equal(chunk_pin(c, again, 2, pins, &err), 0);
    chunk_unpin(c, pins, 2);
    assert_int_equal(atomic_load(&f.reads), reads);
    chunk_cache_free(c);
    fake_fini(&f);
}

/* With every cached chunk pinned, further chunks are read into private
 * buffers: the budget holds and nothing leaks (ASan) after unpinning. */
static void test_transient_when_all_pinned(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 64 * 4096);
    chunk_cache *c = make_cache(&f, 4096, 4 * 4096, 0);
    chunk *held[4], *more[3];
    size_t n;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_pin_range(c, 0, 4 * 4096, held, 4, &n, &err), 0);
    assert_int_equal(chunk_pin_range(c, 10 * 4096, 3 * 4096, more, 3, &n, &err), 0);
    for (size_t i = 0; i < 3; i++)
        check_chunk(&f, more[i], 10 + i, 4096);
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_int_equal(st.transient, 3);
    assert_int_equal(st.cached_bytes, 4 * 4096);
    chunk_unpin(c, more, 3);
    chunk_unpin(c, held, 4);
    /* transient chunks were not cached: reading 10 again is a miss */
    int reads = atomic_load(&f.reads);
    assert_int_equal(chunk_pin_range(c, 10 * 4096, 1, more, 3, &n, &err), 0);
    assert_int_equal(atomic_load(&f.reads), reads + 1);
    chunk_unpin(c, more, n);
    chunk_cache_free(c);
    fake_fini(&f);
}

typedef struct {
    chunk_cache *c;
    fakedev     *f;
    uint64_t     idx[4];
    size_t       n;
    int          rc;
    int          ok;
} pinner;

static void *pin_thread(void *arg)
{
    pinner *p = arg;
    chunk *pins[4];
    ierr err = IERR_INIT;
    p->rc = chunk_pin(p->c, p->idx, p->n, pins, &err);
    if (p->rc == 0) {
        p->ok = 1;
        for (size_t i = 0; i < p->n; i++) {
            uint64_t off = p->idx[i] * chunk_size(p->c);
            if (chunk_valid(pins[i]) != chunk_size(p->c) ||
                memcmp(chunk_data(pins[i]), p->f->data + off, chunk_valid(pins[i])) != 0)
                p->ok = 0;
        }
        chunk_unpin(p->c, pins, p->n);
    }
    return NULL;
}

/* Threads wanting a chunk while it is being read wait for that read. */
static void test_inflight_shared(void **state)
{
    (void)state;
    enum { T = 8 };
    fakedev f;
    fake_init(&f, 32 * 16384);
    chunk_cache *c = make_cache(&f, 16384, 16 * 16384, 0);
    f.gate_closed = 1;
    pthread_t th[T];
    pinner p[T];
    for (int i = 0; i < T; i++) {
        p[i] = (pinner){ .c = c, .f = &f, .idx = { 5, 6 }, .n = 2 };
        assert_int_equal(pthread_create(&th[i], NULL, pin_thread, &p[i]), 0);
    }
    /* one reader is at the gate, the T-1 others wait for its chunks */
    chunk_stats st;
    WAIT_FOR((chunk_get_stats(c, &st), st.shared == 2 * (T - 1)));
    assert_int_equal(atomic_load(&f.reads), 1);
    pthread_mutex_lock(&f.mu);
    f.gate_closed = 0;
    pthread_cond_broadcast(&f.cv);
    pthread_mutex_unlock(&f.mu);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].rc, 0);
        assert_true(p[i].ok);
    }
    assert_int_equal(atomic_load(&f.reads), 1);
    chunk_get_stats(c, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.shared, 2 * (T - 1));
    chunk_cache_free(c);
    fake_fini(&f);
}

/* A failed read: -EIO to the reader and to everyone waiting for it, one log
 * line naming the device and offset, nothing left cached; a retry re-reads. */
static void test_eio_propagation(void **state)
{
    (void)state;
    enum { T = 4 };
    fakedev f;
    fake_init(&f, 16 * 4096);
    chunk_cache *c = make_cache(&f, 4096, 8 * 4096, 0);
    f.fail_off = 3 * 4096 + 17;
    f.gate_closed = 1;
    pthread_t th[T];
    pinner p[T];
    for (int i = 0; i < T; i++) {
        p[i] = (pinner){ .c = c, .f = &f, .idx = { 3 }, .n = 1 };
        assert_int_equal(pthread_create(&th[i], NULL, pin_thread, &p[i]), 0);
    }
    chunk_stats st;
    WAIT_FOR((chunk_get_stats(c, &st), st.shared == T - 1));
    pthread_mutex_lock(&f.mu);
    f.gate_closed = 0;
    pthread_cond_broadcast(&f.cv);
    pthread_mutex_unlock(&f.mu);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].rc, -EIO);
    }
    assert_int_equal(atomic_load(&f.reads), 1);
    assert_int_equal(atomic_load(&f.logs), 1);
    assert_non_null(strstr(f.last_log, "ffn.bin"));
    assert_non_null(strstr(f.last_log, "12288"));
    chunk_get_stats(c, &st);
    assert_int_equal(st.read_errors, 1);
    assert_int_equal(st.cached_bytes, 0);

    /* the error names the device and offset for the caller too */
    chunk *pins[4];
    size_t n;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_pin_range(c, 2 * 4096, 2 * 4096, pins, 4, &n, &err), -EIO);
    assert_non_null(strstr(err.msg, "ffn.bin"));
    assert_non_null(strstr(err.msg, "8192"));
    chunk_get_stats(c, &st);
    assert_int_equal(st.cached_bytes, 0);       /* chunk 2 of the failed run not kept either */

    /* short read: also EIO, logged as short */
    f.short_by = 1;
    assert_int_equal(chunk_pin_range(c, 3 * 4096, 10, pins, 4, &n, &err), -EIO);
    assert_non_null(strstr(err.msg, "short read"));

    /* the device recovers: the next pin reads again and succeeds */
    f.fail_off = -1;
    int reads = atomic_load(&f.reads);
    assert_int_equal(chunk_pin_range(c, 3 * 4096, 10, pins, 4, &n, &err), 0);
    assert_int_equal(atomic_load(&f.reads), reads + 1);
    check_chunk(&f, pins[0], 3, 4096);
    chunk_unpin(c, pins, n);
    chunk_cache_free(c);
    fake_fini(&f);
}

/* Regions (layers) with their own chunk grids: ids, offsets, partial last
 * chunks, runs that stop where the device is not contiguous, pin_range
 * within one region only, read-ahead that stays in its region. */
static void test_regions(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 60000);
    const chunk_region regs[3] = {
        { .off = 4096, .len = 20000 },        /* chunks 0, 1, 2 (2 partial: 3616 bytes) */
        { .off = 28672, .len = 16384 },       /* chunks 3, 4 */
        { .off = 45056, .len = 8192 },        /* chunk 5, right after chunk 4 on the device */
    };
    chunk_opts o = {
        .chunk_bytes = 8192, .budget_bytes = 16 * 8192, .regions = regs, .n_regions = 3,
        .readahead = 2, .workers = 1, .name = "ffn.bin", .readv = fake_readv, .ctx = &f, .log = fake_log,
        .log_ctx = &f,
    };
    chunk_cache *c;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_cache_new(&o, &c, &err), 0);
    assert_int_equal(chunk_count(c), 6);
    assert_int_equal(chunk_region_first(c, 0), 0);
    assert_int_equal(chunk_region_first(c, 1), 3);
    assert_int_equal(chunk_region_first(c, 2), 5);
    assert_int_equal(chunk_region_first(c, 3), 6);
    size_t valid;
    assert_int_equal(chunk_offset(c, 1, &valid), 12288);
    assert_int_equal(valid, 8192);
    assert_int_equal(chunk_offset(c, 2, &valid), 20480);
    assert_int_equal(valid, 3616);
    assert_int_equal(chunk_offset(c, 3, &valid), 28672);
    assert_int_equal(chunk_offset(c, 5, &valid), 45056);
    assert_int_equal(valid, 8192);

    /* in one region only */
    chunk *pins[8];
    size_t n;
    assert_int_equal(chunk_pin_range(c, 20000, 10000, pins, 8, &n, &err), -EINVAL);
    assert_int_equal(chunk_pin_range(c, 0, 100, pins, 8, &n, &err), -EINVAL);     /* header, no region */
    assert_int_equal(chunk_pin_range(c, 30000, 10000, pins, 8, &n, &err), 0);
    assert_int_equal(n, 2);
    check_chunk_at(&f, c, pins[0], 3);
    check_chunk_at(&f, c, pins[1], 4);
    chunk_unpin(c, pins, n);
    /* read-ahead after chunk 4 would be chunk 5: another region, not read */
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_int_equal(st.ra_chunks, 0);

    /* all six: runs {0,1,2} and {5}; 3 and 4 are hits; 2 and 3 are not
     * neighbours (gap), 4 and 5 are but 4 is cached */
    uint64_t all[6] = { 0, 1, 2, 3, 4, 5 };
    int reads = atomic_load(&f.reads);
    assert_int_equal(chunk_pin(c, all, 6, pins, &err), 0);
    assert_int_equal(atomic_load(&f.reads), reads + 2);
    for (uint64_t i = 0; i < 6; i++)
        check_chunk_at(&f, c, pins[i], i);
    assert_int_equal(chunk_valid(pins[2]), 3616);
    chunk_unpin(c, pins, 6);
    chunk_cache_free(c);
    fake_fini(&f);

    /* regions must be aligned and in order */
    const chunk_region bad[2] = { { .off = 4096, .len = 10000 }, { .off = 8192, .len = 10 } };
    o.regions = bad;
    o.n_regions = 2;
    assert_int_equal(chunk_cache_new(&o, &c, &err), -EINVAL);
    const chunk_region unaligned[1] = { { .off = 100, .len = 10 } };
    o.regions = unaligned;
    o.n_regions = 1;
    assert_int_equal(chunk_cache_new(&o, &c, &err), -EINVAL);
}

static void test_bounds(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 4 * 4096);
    chunk_cache *c = make_cache(&f, 4096, 4 * 4096, 0);
    chunk *pins[8];
    size_t n;
    ierr err = IERR_INIT;
    uint64_t bad[1] = { 4 };
    assert_int_equal(chunk_pin(c, bad, 1, pins, &err), -EINVAL);
    uint64_t unsorted[2] = { 2, 1 };
    assert_int_equal(chunk_pin(c, unsorted, 2, pins, &err), -EINVAL);
    uint64_t dup[2] = { 1, 1 };
    assert_int_equal(chunk_pin(c, dup, 2, pins, &err), -EINVAL);
    assert_int_equal(chunk_pin_range(c, 4 * 4096, 1, pins, 8, &n, &err), -EINVAL);
    assert_int_equal(chunk_pin_range(c, 3 * 4096, 4097, pins, 8, &n, &err), -EINVAL);
    assert_int_equal(chunk_pin_range(c, 0, 0, pins, 8, &n, &err), -EINVAL);
    assert_int_equal(chunk_pin_range(c, 0, 4 * 4096, pins, 2, &n, &err), -EINVAL);   /* cap */
    assert_int_equal(chunk_pin(c, bad, 0, pins, &err), 0);
    assert_int_equal(atomic_load(&f.reads), 0);
    /* bad options */
    chunk_opts o = { .chunk_bytes = 3000, .budget_bytes = 1 << 20, .dev_bytes = 1, .readv = fake_readv };
    chunk_cache *c2;
    assert_int_equal(chunk_cache_new(&o, &c2, &err), -EINVAL);
    o.chunk_bytes = 8u << 20;
    assert_int_equal(chunk_cache_new(&o, &c2, &err), -EINVAL);
    o.chunk_bytes = 65536;
    o.budget_bytes = 4096;
    assert_int_equal(chunk_cache_new(&o, &c2, &err), -EINVAL);
    chunk_cache_free(c);
    fake_fini(&f);
}

static void test_readahead(void **state)
{
    (void)state;
    fakedev f;
    fake_init(&f, 64 * 4096);
    chunk_cache *c = make_cache(&f, 4096, 32 * 4096, 3);
    chunk *pins[4];
    size_t n;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_pin_range(c, 0, 4096, pins, 4, &n, &err), 0);
    chunk_unpin(c, pins, n);
    chunk_stats st;
    /* the worker reads chunks 1..3 in one readv */
    WAIT_FOR((chunk_get_stats(c, &st), st.ra_chunks == 3 && st.cached_bytes == 4 * 4096 && atomic_load(&f.reads) == 2));
    assert_int_equal(atomic_load(&f.iovs), 1 + 3);
    /* chunks 1..2 are then no new foreground read: READY, or still being
     * read by the worker and waited for */
    uint64_t idx[2] = { 1, 2 };
    assert_int_equal(chunk_pin(c, idx, 2, pins, &err), 0);
    check_chunk(&f, pins[0], 1, 4096);
    check_chunk(&f, pins[1], 2, 4096);
    chunk_unpin(c, pins, 2);
    chunk_get_stats(c, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits + st.shared, 2);
    assert_int_equal(st.ra_used, 2);
    chunk_cache_free(c);   /* stops the worker, possibly mid-queue */
    fake_fini(&f);
}

/* Many threads over a small cache: data always right, budget always kept. */
typedef struct {
    chunk_cache *c;
    fakedev     *f;
    unsigned     seed;
    int          bad;
} hammer;

static void *hammer_thread(void *arg)
{
    hammer *h = arg;
    uint64_t x = h->seed;
    const uint64_t cb = chunk_size(h->c), nc = chunk_count(h->c);
    for (int it = 0; it < 3000; it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t first = (x >> 33) % nc, cnt = 1 + (x >> 20) % 3;
        if (first + cnt > nc)
            cnt = nc - first;
        chunk *pins[4];
        size_t n;
        ierr err = IERR_INIT;
        if (chunk_pin_range(h->c, first * cb, cnt * cb, pins, 4, &n, &err) != 0) {
            h->bad++;
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (memcmp(chunk_data(pins[i]), h->f->data + (first + i) * cb, chunk_valid(pins[i])) != 0)
                h->bad++;
        chunk_unpin(h->c, pins, n);
    }
    return NULL;
}

static void test_concurrent_small_cache(void **state)
{
    (void)state;
    enum { T = 6 };
    fakedev f;
    fake_init(&f, 40 * 4096);
    chunk_cache *c = make_cache(&f, 4096, 6 * 4096, 2);
    pthread_t th[T];
    hammer h[T];
    for (int i = 0; i < T; i++) {
        h[i] = (hammer){ .c = c, .f = &f, .seed = 1000u + (unsigned)i };
        assert_int_equal(pthread_create(&th[i], NULL, hammer_thread, &h[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(h[i].bad, 0);
    }
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_true(st.peak_cached_bytes <= 6 * 4096);
    assert_int_equal(st.read_errors, 0);
    chunk_cache_free(c);
    fake_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_hits_and_coalescing),
        cmocka_unit_test(test_budget_eviction),
        cmocka_unit_test(test_transient_when_all_pinned),
        cmocka_unit_test(test_inflight_shared),
        cmocka_unit_test(test_eio_propagation),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_readahead),
        cmocka_unit_test(test_concurrent_small_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
