/* read_pool.h: the sparse FFN's reader pool — a few threads that run one batch of
 * read jobs at a time, so that all the read requests of a layer reach the
 * daemon at once (queue depth) instead of one after another.
 *
 * A batch is n jobs run by a callback fn(ctx, job, err) (typically one
 * pread of a coalesced request plus its conversion into the neuron
 * matrix). ioq_start hands the batch to the threads and returns at once;
 * ioq_wait lends the calling thread to the jobs not yet claimed, waits for
 * the rest and returns the first error. ioq_run is both.
 *
 * One batch at a time, started and waited for by one owner thread; the
 * callback runs on several threads at once and must be thread-safe for
 * distinct jobs. */
#ifndef INFLASH_READ_POOL_H
#define INFLASH_READ_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct ioq ioq;

/* One job: 0 or a negative errno with err filled. */
typedef int (*ioq_fn)(void *ctx, int64_t job, ierr *err);

/* A pool of n_threads reader threads (0..64; 0: ioq_wait runs every job on
 * the calling thread). */
int  ioq_new(int n_threads, ioq **out, ierr *err);
/* Stops and joins the threads (a running batch is waited for first). */
void ioq_free(ioq *q);

/* Start jobs [0, n) (n >= 0). -EBUSY if a batch is running. */
int ioq_start(ioq *q, int64_t n, ioq_fn fn, void *ctx, ierr *err);
/* Finish the batch (helping with it); 0, or the first job error (the other
 * jobs still run to completion). 0 at once if no batch was started. */
int ioq_wait(ioq *q, ierr *err);
/* ioq_start + ioq_wait. */
int ioq_run(ioq *q, int64_t n, ioq_fn fn, void *ctx, ierr *err);

int ioq_threads(const ioq *q);
/* Bytes the pool holds (struct and thread handles; the thread stacks are
 * the system's). */
uint64_t ioq_bytes(const ioq *q);

#endif
