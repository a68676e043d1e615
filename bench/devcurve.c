/* devcurve.c: inflash-devcurve, the device limit of the benchmark: the read
 * bandwidth of the disk under a file (the store's ffn.bin) against read size
 * and concurrency, measured with random, aligned O_DIRECT preads from QD
 * threads (each thread keeps one read in flight, so QD threads = queue
 * depth QD), like fio's psync engine. Prints a table and writes JSON. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define PROG         "inflash-devcurve"
#define EXIT_RUNTIME 1
#define EXIT_USAGE   2
#define MAX_LIST     32
#define ALIGN        4096u

typedef struct {
    const char *file;
    const char *json;
    uint64_t    sizes[MAX_LIST];
    size_t      n_sizes;
    unsigned    qd[MAX_LIST];
    size_t      n_qd;
    uint64_t    cap_bytes;   /* per point */
    double      seconds;     /* per point */
    uint64_t    seed;
} dc_opts;

typedef struct {
    int       fd;
    uint64_t  file_bytes;
    uint64_t  size;
    uint64_t  cap_bytes;
    double    deadline;      /* CLOCK_MONOTONIC seconds; set before go, then read-only */
    uint64_t  seed;
    pthread_mutex_t   mu;
    pthread_cond_t    go_cv;
    int       go;            /* guarded by mu: the workers may start */
    uint64_t  bytes;         /* guarded by mu */
    uint64_t  reads;         /* guarded by mu */
    double    lat_sum;       /* guarded by mu, seconds */
    int       error;         /* guarded by mu: an errno */
} dc_point;

typedef struct {
    dc_point *p;
    unsigned  t;
} dc_worker;


static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void *worker(void *arg)
{
    dc_worker *w = arg;
    dc_point *p = w->p;
    void *buf = NULL;
    int err = posix_memalign(&buf, ALIGN, (size_t)p->size);
    uint64_t rng = p->seed * 0x9E3779B97F4A7C15ull + w->t + 1, bytes = 0, reads = 0;
    uint64_t slots = (p->file_bytes - p->size) / ALIGN + 1;
    double lat = 0;
    pthread_mutex_lock(&p->mu);   /* a common start: wait for go */
    while (!p->go)
        pthread_cond_wait(&p->go_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    while (!err) {
        double t0 = cli_now_s();
        if (t0 >= p->deadline)
            break;
        pthread_mutex_lock(&p->mu);
        int enough = p->bytes + bytes >= p->cap_bytes;
        pthread_mutex_unlock(&p->mu);
        if (enough)
            break;
        uint64_t off = (xorshift(&rng) % slots) * ALIGN;
        uint64_t done = 0;
        while (done < p->size) {
            ssize_t r = pread(p->fd, (char *)buf + done, (size_t)(p->size - done), (off_t)(off + done));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                err = r < 0 ? errno : EIO;
                break;
            }
            done += (uint64_t)r;
        }
        lat += cli_now_s() - t0;
        bytes += done;
        reads++;
        if ((reads & 15) == 0) {   /* publish progress for the byte cap */
            pthread_mutex_lock(&p->mu);
            p->bytes += bytes;
            pthread_mutex_unlock(&p->mu);
            bytes = 0;
        }
    }
    pthread_mutex_lock(&p->mu);
    p->bytes += bytes;
    p->reads += reads;
    p->lat_sum += lat;
    if (err && !p->error)
        p->error = err;
    pthread_mutex_unlock(&p->mu);
    free(buf);
    return NULL;
}

/* One (size, qd) point: MB/s and mean latency in microseconds. */
static int run_point(int fd, uint64_t file_bytes, uint64_t size, unsigned qd, const dc_opts *o, double *mbps,
                     double *lat_us)
{
    dc_point p;
    memset(&p, 0, sizeof p);
    p.fd = fd;
    p.file_bytes = file_bytes;
    p.size = size;
    p.cap_bytes = o->cap_bytes;
    p.seed = o->seed + size * 31 + qd;
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.go_cv, NULL);
    pthread_t th[256];
    dc_worker w[256];
    unsigned started = 0;
    for (unsigned t = 0; t < qd; t++) {
        w[t].p = &p;
        w[t].t = t;
        if (pthread_create(&th[t], NULL, worker, &w[t]) != 0)
            break;
        started++;
    }
    /* short of resource exhaustion every thread starts; if not, the started
     * ones are let go with a deadline already past and the point fails */
    double t0 = cli_now_s();
    pthread_mutex_lock(&p.mu);
    p.deadline = started < qd ? 0 : t0 + o->seconds;
    p.go = 1;
    pthread_cond_broadcast(&p.go_cv);
    pthread_mutex_unlock(&p.mu);
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    double dt = cli_now_s() - t0;
    pthread_cond_destroy(&p.go_cv);
    pthread_mutex_destroy(&p.mu);
    if (started < qd)
        return -EAGAIN;
    if (p.error)
        return -p.error;
    *mbps = dt > 0 ? (double)p.bytes / 1e6 / dt : 0;
    *lat_us = p.reads ? p.lat_sum / (double)p.reads * 1e6 : 0;
    return 0;
}

/* A read size: cli_parse_size's syntax, a multiple of 4 KiB up to 64 MiB. */
static int parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    if (cli_parse_size(s, 1, &v) < 0 || v == 0 || v % ALIGN || v > (64u << 20))
        return -1;
    *out = v;
    return 0;
}

static int parse_list(const char *s, int sizes, dc_opts *o)
{
    char buf[512];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (sizes) {
            if (o->n_sizes == MAX_LIST || parse_size(tok, &o->sizes[o->n_sizes]))
                return -1;
            o->n_sizes++;
        } else {
            char *e;
            long v = strtol(tok, &e, 10);
            if (*e || v < 1 || v > 256 || o->n_qd == MAX_LIST)
                return -1;
            o->qd[o->n_qd++] = (unsigned)v;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " FILE [--sizes 4k,16k,...] [--qd 1,4,16] [--mb N] [--seconds S] [--json OUT]\n"
            "\n"
            "Read bandwidth of the disk under FILE (use a file of several GB, e.g. a store's\n"
            "ffn.bin) against read size and queue depth: random 4 KiB-aligned O_DIRECT\n"
            "preads of each size from QD threads at once (one read in flight each).\n"
            "  --sizes L     read sizes, multiples of 4k (default 4k,16k,64k,256k,1m,4m)\n"
            "  --qd L        concurrent readers (default 1,4,16,32)\n"
            "  --mb N        stop a point after N MB (default 512)\n"
            "  --seconds S   ... or after S seconds (default 2)\n"
            "  --seed S      offsets' seed (default 1)\n"
            "  --json OUT    write the points as JSON\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

/* The command line into o: 0, 1 after --help, or -1 after a usage message. */
static int parse_args(int argc, char **argv, dc_opts *o)
{
    enum { O_SIZES = 256, O_QD, O_MB, O_SEC, O_JSON, O_SEED };
    static const struct option lo[] = {{"sizes", required_argument, 0, O_SIZES}, {"qd", required_argument, 0, O_QD},
                                       {"mb", required_argument, 0, O_MB},       {"seconds", required_argument, 0, O_SEC},
                                       {"json", required_argument, 0, O_JSON},   {"seed", required_argument, 0, O_SEED},
                                       {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->cap_bytes = 512ull << 20;
    o->seconds = 2.0;
    o->seed = 1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        char *e;
        int bad = 0;
        switch (c) {
        case 'h': usage(stdout); return 1;
        case O_SIZES: bad = parse_list(optarg, 1, o); break;
        case O_QD: bad = parse_list(optarg, 0, o); break;
        case O_MB: {
            unsigned long long v = strtoull(optarg, &e, 10);
            bad = *e || v == 0;
            o->cap_bytes = (uint64_t)v << 20;
            break;
        }
        case O_SEC: o->seconds = strtod(optarg, &e); bad = *e || !(o->seconds > 0); break;
        case O_JSON: o->json = optarg; break;
        case O_SEED: o->seed = strtoull(optarg, &e, 10); bad = *e; break;
        default:
            return cli_bad_option(PROG, c, argv);
        }
        if (bad) {
            fprintf(stderr, PROG ": bad value '%s' for %s\n", optarg, argv[optind - 2 >= 0 ? optind - 2 : 0]);
            return -1;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, PROG ": give one FILE (see --help)\n");
        return -1;
    }
    o->file = argv[optind];
    if (!o->n_sizes) {
        static const uint64_t def[] = {4096, 16384, 65536, 262144, 1048576, 4194304};
        memcpy(o->sizes, def, sizeof def);
        o->n_sizes = 6;
    }
    if (!o->n_qd) {
        static const unsigned def[] = {1, 4, 16, 32};
        memcpy(o->qd, def, sizeof def);
        o->n_qd = 4;
    }
    return 0;
}

/* Every (size, qd) point of o over fd (fb bytes): the table on stdout, the
 * points into jf (may be NULL). 0 or a negative errno (reported here). */
static int run_points(int fd, uint64_t fb, const dc_opts *o, FILE *jf)
{
    printf("MB/s of random O_DIRECT reads of %s (%.2f GB)\n%-8s", o->file, (double)fb / 1e9, "size");
    for (size_t q = 0; q < o->n_qd; q++)
        printf("  qd=%-5u", o->qd[q]);
    printf("\n");
    int rc = 0, first = 1;
    for (size_t s = 0; rc == 0 && s < o->n_sizes; s++) {
        if (o->sizes[s] > fb)
            continue;
        printf("%-8" PRIu64, o->sizes[s] >> 10);
        for (size_t q = 0; rc == 0 && q < o->n_qd; q++) {
            double mbps = 0, lat = 0;
            rc = run_point(fd, fb, o->sizes[s], o->qd[q], o, &mbps, &lat);
            if (rc) {
                if (rc == -EAGAIN)
                    fprintf(stderr, PROG ": could not start %u reader threads\n", o->qd[q]);
                else
                    fprintf(stderr, PROG ": %s: read failed: %s\n", o->file, strerror(-rc));
                break;
            }
            printf("  %8.1f", mbps);
            fflush(stdout);
            if (jf)
                fprintf(jf, "%s    {\"size\": %" PRIu64 ", \"qd\": %u, \"mb_per_s\": %.3f, \"lat_us\": %.1f}",
                        first ? "" : ",\n", o->sizes[s], o->qd[q], mbps, lat);
            first = 0;
        }
        printf("   (KiB)\n");
    }
    return rc;
}

int main(int argc, char **argv)
{
    dc_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    int fd = open(o.file, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, PROG ": %s: %s\n", o.file, strerror(errno));
        return EXIT_RUNTIME;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < (64u << 10)) {
        fprintf(stderr, PROG ": %s: need a file of at least 64 KiB (several GB for real figures)\n", o.file);
        close(fd);
        return EXIT_RUNTIME;
    }
    uint64_t fb = (uint64_t)st.st_size;
    FILE *jf = NULL;
    if (o.json && !(jf = fopen(o.json, "w"))) {
        fprintf(stderr, PROG ": %s: %s\n", o.json, strerror(errno));
        close(fd);
        return EXIT_RUNTIME;
    }
    if (jf)
        fprintf(jf, "{\n  \"file\": \"%s\",\n  \"file_bytes\": %" PRIu64 ",\n  \"points\": [\n", o.file, fb);
    rc = run_points(fd, fb, &o, jf);
    close(fd);
    if (jf) {
        fprintf(jf, "\n  ]\n}\n");
        if (fclose(jf) != 0 && rc == 0) {
            fprintf(stderr, PROG ": %s: write error\n", o.json);
            rc = -EIO;
        }
    }
    return rc ? EXIT_RUNTIME : 0;
}
