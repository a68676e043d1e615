/* read_pool.c: the reader pool of the sparse FFN (see read_pool.h): threads sleeping on
 * a condition variable, jobs claimed one by one under a mutex (a job is a
 * whole read request, so the lock is cheap next to it). */
#include "read_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define IOQ_MAX_THREADS 64
#define IOQ_STACK_BYTES ((size_t)256 << 10)   /* readers need little stack */

struct ioq {
    int        n_threads;   /* fixed at ioq_new */
    pthread_t *threads;     /* owned; n_threads handles */
    /* Everything below is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t  work;   /* a batch started, or stop */
    pthread_cond_t  done;   /* the last job of a batch finished */
    int        stop;        /* ioq_free: threads leave */
    int        active;      /* a batch is started and not yet waited for */
    ioq_fn     fn;          /* the batch: callback, its context, job count */
    void      *ctx;
    int64_t    n;
    int64_t    next;        /* next job to claim */
    int64_t    finished;    /* jobs completed */
    int        rc;          /* first error of the batch, 0 if none */
    ierr       err;         /* its message */
};

/* Run one claimed job and record its outcome (called without the lock). */
static void run_job(ioq *q, int64_t job)
{
    ierr e = IERR_INIT;
    int rc = q->fn(q->ctx, job, &e);
    pthread_mutex_lock(&q->mu);
    if (rc && !q->rc) {
        q->rc = rc;
        q->err = e;
    }
    if (++q->finished == q->n)
        pthread_cond_broadcast(&q->done);
    pthread_mutex_unlock(&q->mu);
}

static void *worker(void *arg)
{
    ioq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && !(q->active && q->next < q->n))
            pthread_cond_wait(&q->work, &q->mu);
        if (q->stop)
            break;
        int64_t job = q->next++;
        pthread_mutex_unlock(&q->mu);
        run_job(q, job);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int ioq_new(int n_threads, ioq **out, ierr *err)
{
    *out = NULL;
    if (n_threads < 0 || n_threads > IOQ_MAX_THREADS)
        return ierr_set(err, -EINVAL, "ioq: %d reader threads (0..%d)", n_threads, IOQ_MAX_THREADS);
    ioq *q = calloc(1, sizeof *q);
    if (!q)
        return ierr_set(err, -ENOMEM, "ioq: out of memory");
    if (n_threads > 0 && !(q->threads = calloc((size_t)n_threads, sizeof *q->threads))) {
        free(q);
        return ierr_set(err, -ENOMEM, "ioq: out of memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->work, NULL);
    pthread_cond_init(&q->done, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, IOQ_STACK_BYTES);
    int rc = 0;
    for (int i = 0; i < n_threads; i++) {
        int e = pthread_create(&q->threads[i], &attr, worker, q);
        if (e) {
            rc = ierr_set(err, -e, "ioq: cannot start reader thread %d: %s", i, strerror(e));
            break;
        }
        q->n_threads = i + 1;
    }
    pthread_attr_destroy(&attr);
    if (rc) {
        ioq_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

void ioq_free(ioq *q)
{
    if (!q)
        return;
    ioq_wait(q, NULL);
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_threads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_cond_destroy(&q->work);
    pthread_cond_destroy(&q->done);
    pthread_mutex_destroy(&q->mu);
    free(q->threads);
    free(q);
}

/* Start a batch; the threads are woken unless the caller, which will help
 * (ioq_run), can take the only job itself. */
static int start_batch(ioq *q, int64_t n, ioq_fn fn, void *ctx, int caller_helps, ierr *err)
{
    if (n < 0 || !fn)
        return ierr_set(err, -EINVAL, "ioq: bad batch (%lld jobs)", (long long)n);
    pthread_mutex_lock(&q->mu);
    if (q->active) {
        pthread_mutex_unlock(&q->mu);
        return ierr_set(err, -EBUSY, "ioq: a batch is already running");
    }
    q->fn = fn;
    q->ctx = ctx;
    q->n = n;
    q->next = 0;
    q->finished = 0;
    q->rc = 0;
    q->err.msg[0] = '\0';
    q->active = 1;
    if (n > (caller_helps ? 1 : 0))
        pthread_cond_broadcast(&q->work);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int ioq_start(ioq *q, int64_t n, ioq_fn fn, void *ctx, ierr *err)
{
    return start_batch(q, n, fn, ctx, 0, err);
}

int ioq_wait(ioq *q, ierr *err)
{
    pthread_mutex_lock(&q->mu);
    if (!q->active) {
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    while (q->next < q->n) {   /* help with the jobs nobody has claimed */
        int64_t job = q->next++;
        pthread_mutex_unlock(&q->mu);
        run_job(q, job);
        pthread_mutex_lock(&q->mu);
    }
    while (q->finished < q->n)
        pthread_cond_wait(&q->done, &q->mu);
    q->active = 0;
    int rc = q->rc;
    if (rc && err)
        *err = q->err;
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int ioq_run(ioq *q, int64_t n, ioq_fn fn, void *ctx, ierr *err)
{
    int rc = start_batch(q, n, fn, ctx, 1, err);
    return rc ? rc : ioq_wait(q, err);
}

int ioq_threads(const ioq *q) { return q->n_threads; }

uint64_t ioq_bytes(const ioq *q)
{
    return sizeof *q + (uint64_t)q->n_threads * sizeof(pthread_t);
}
