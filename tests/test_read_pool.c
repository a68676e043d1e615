/* test_read_pool.c: cmocka tests of the sparse FFN's reader pool
 * (client/read_pool.h): every job of a batch runs exactly once, with 0, 1 and 4
 * threads and over many batches; the first error comes back while the other
 * jobs still run; ioq_start returns before the jobs are done and refuses a
 * second batch; real preads land at the right places. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "read_pool.h"

#define NJOBS 1000

typedef struct {
    atomic_int runs[NJOBS];
    int64_t    fail_job;      /* this job fails (-1: none) */
    atomic_int gate;          /* jobs spin until it is 1 (for the async test) */
} count_ctx;

static int count_job(void *vctx, int64_t job, ierr *err)
{
    count_ctx *c = vctx;
    while (!atomic_load(&c->gate))
        ;
    atomic_fetch_add(&c->runs[job], 1);
    if (job == c->fail_job)
        return ierr_set(err, -EIO, "job %lld failed", (long long)job);
    return 0;
}

static void every_job_once(int threads)
{
    ioq *q;
    ierr err = IERR_INIT;
    assert_int_equal(ioq_new(threads, &q, &err), 0);
    assert_int_equal(ioq_threads(q), threads);
    assert_true(ioq_bytes(q) > 0);
    static count_ctx c;
    for (int batch = 0; batch < 50; batch++) {
        int64_t n = batch == 0 ? 0 : (batch * 37) % NJOBS + 1;
        memset(&c, 0, sizeof c);
        c.fail_job = -1;
        atomic_store(&c.gate, 1);
        assert_int_equal(ioq_run(q, n, count_job, &c, &err), 0);
        for (int64_t j = 0; j < NJOBS; j++)
            assert_int_equal(atomic_load(&c.runs[j]), j < n ? 1 : 0);
    }
    ioq_free(q);
}

static void test_once_0(void **state) { (void)state; every_job_once(0); }
static void test_once_1(void **state) { (void)state; every_job_once(1); }
static void test_once_4(void **state) { (void)state; every_job_once(4); }

static void test_error(void **state)
{
    (void)state;
    ioq *q;
    ierr err = IERR_INIT;
    assert_int_equal(ioq_new(4, &q, &err), 0);
    static count_ctx c;
    memset(&c, 0, sizeof c);
    c.fail_job = 17;
    atomic_store(&c.gate, 1);
    assert_int_equal(ioq_run(q, 100, count_job, &c, &err), -EIO);
    assert_string_equal(err.msg, "job 17 failed");
    for (int64_t j = 0; j < 100; j++)   /* the others still ran */
        assert_int_equal(atomic_load(&c.runs[j]), 1);
    /* the pool is usable after an error */
    memset(&c, 0, sizeof c);
    c.fail_job = -1;
    atomic_store(&c.gate, 1);
    assert_int_equal(ioq_run(q, 10, count_job, &c, &err), 0);
    ioq_free(q);
}

static void test_async(void **state)
{
    (void)state;
    ioq *q;
    ierr err = IERR_INIT;
    assert_int_equal(ioq_new(2, &q, &err), 0);
    static count_ctx c;
    memset(&c, 0, sizeof c);
    c.fail_job = -1;
    /* the jobs block on the gate: start must return anyway */
    assert_int_equal(ioq_start(q, 8, count_job, &c, &err), 0);
    assert_int_equal(ioq_start(q, 8, count_job, &c, &err), -EBUSY);
    atomic_store(&c.gate, 1);
    assert_int_equal(ioq_wait(q, &err), 0);
    for (int64_t j = 0; j < 8; j++)
        assert_int_equal(atomic_load(&c.runs[j]), 1);
    assert_int_equal(ioq_wait(q, &err), 0);   /* nothing running: at once */
    ioq_free(q);
    ioq *bad;
    assert_int_equal(ioq_new(65, &bad, &err), -EINVAL);
    assert_null(bad);
    ioq_free(NULL);
}

/* preads of a file into a buffer, job j reading block j */
typedef struct {
    int            fd;
    unsigned char *dst;
    size_t         block;
} pread_ctx;

static int pread_job(void *vctx, int64_t j, ierr *err)
{
    pread_ctx *c = vctx;
    ssize_t r = pread(c->fd, c->dst + (size_t)j * c->block, c->block, (off_t)((size_t)j * c->block));
    if (r != (ssize_t)c->block)
        return ierr_set(err, -EIO, "short read of block %lld", (long long)j);
    return 0;
}

static void test_preads(void **state)
{
    (void)state;
    char path[] = "/tmp/test_read_pool.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    size_t block = 4096, nb = 257;
    unsigned char *src = malloc(block * nb), *dst = calloc(block, nb + 1);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < block * nb; i++)
        src[i] = (unsigned char)(i * 131 + i / 4096);
    assert_int_equal(write(fd, src, block * nb), (ssize_t)(block * nb));
    ioq *q;
    ierr err = IERR_INIT;
    assert_int_equal(ioq_new(4, &q, &err), 0);
    pread_ctx c = {fd, dst, block};
    assert_int_equal(ioq_run(q, (int64_t)nb, pread_job, &c, &err), 0);
    assert_memory_equal(src, dst, block * nb);
    /* one block too many: the error names it */
    assert_int_equal(ioq_run(q, (int64_t)nb + 1, pread_job, &c, &err), -EIO);
    assert_non_null(strstr(err.msg, "block 257"));
    ioq_free(q);
    close(fd);
    free(src);
    free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_0), cmocka_unit_test(test_once_1), cmocka_unit_test(test_once_4),
        cmocka_unit_test(test_error),  cmocka_unit_test(test_async),  cmocka_unit_test(test_preads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
