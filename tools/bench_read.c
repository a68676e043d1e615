/* bench_read.c: inflash-bench-read, the read benchmark of inflashfs. Reads N
 * random neuron bundles (a) directly from the store's ffn.bin with O_DIRECT
 * pread (bundle-sized reads rounded out to 4 KiB alignment) and (b) through
 * the mount's layers/NN/ffn, at each requested number of concurrent
 * readers, for each chunk size (remounting the daemon with -o chunk= via
 * mount.sh and dropping the page cache before every configuration), and
 * prints MB/s and microseconds per bundle side by side. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ifs.h"
#include "stats.h"
#include "store.h"

#define PROG "inflash-bench-read"
#define MAX_LIST 32

typedef struct {
    const char *store_dir;
    const char *mnt;
    int64_t     n;                    /* --bundles: bundles read per run and side */
    unsigned    threads[MAX_LIST];
    size_t      n_threads;
    uint64_t    chunks[MAX_LIST];     /* empty: use the mount as it is */
    size_t      n_chunks;
    const char *mount_sh;
    const char *extra_opts;           /* appended to -o chunk=... */
    uint64_t    seed;
    unsigned    rounds;               /* direct and mount alternate this many times */
} bench_cfg;

/* One run: what the threads read and how long each read took. */
typedef struct {
    int          direct;              /* 1: ffn.bin O_DIRECT, 0: the mount */
    const store *st;
    int          ffn_fd;              /* direct */
    int         *layer_fd;            /* mount: [n_layers] */
    int64_t      bundle;
    const int64_t *layer_of, *id_of;  /* [n] the bundles to read */
    int64_t      n;
    unsigned     n_threads;
    pthread_barrier_t start;
    /* results */
    uint64_t     lat_ns_sum;          /* guarded by mu */
    int          errors;
    pthread_mutex_t mu;
} run;

typedef struct {
    run     *r;
    unsigned t;
} worker;

static void *read_worker(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    size_t cap = (size_t)fmt_align_up((uint64_t)r->bundle + 4096, 4096);
    void *buf = NULL;
    uint64_t sum = 0;
    int errors = 0;
    if (posix_memalign(&buf, 4096, cap) != 0)
        errors++;
    pthread_barrier_wait(&r->start);
    for (int64_t i = w->t; buf && i < r->n; i += r->n_threads) {
        int64_t l = r->layer_of[i], j = r->id_of[i];
        uint64_t t0 = cli_now_ns();
        ssize_t got;
        if (r->direct) {
            const store_layer *L = store_layer_at(r->st, l);
            uint64_t phys = L->offset + (uint64_t)L->slot_of[j] * (uint64_t)r->bundle;
            uint64_t a = phys / 4096 * 4096, e = fmt_align_up(phys + (uint64_t)r->bundle, 4096);
            got = pread(r->ffn_fd, buf, e - a, (off_t)a);
            got = got == (ssize_t)(e - a) ? r->bundle : -1;
        } else {
            got = pread(r->layer_fd[l], buf, (size_t)r->bundle, (off_t)(j * r->bundle));
        }
        sum += cli_now_ns() - t0;
        if (got != r->bundle)
            errors++;
    }
    pthread_mutex_lock(&r->mu);
    r->lat_ns_sum += sum;
    r->errors += errors;
    pthread_mutex_unlock(&r->mu);
    free(buf);
    return NULL;
}

/* Run it: wall seconds, or a negative value on failure. */
static double run_threads(run *r)
{
    pthread_t th[256];
    worker w[256];
    pthread_barrier_init(&r->start, NULL, r->n_threads + 1);
    pthread_mutex_init(&r->mu, NULL);
    r->lat_ns_sum = 0;
    r->errors = 0;
    unsigned started = 0;
    for (unsigned t = 0; t < r->n_threads; t++) {
        w[t] = (worker){ .r = r, .t = t };
        if (pthread_create(&th[t], NULL, read_worker, &w[t]) != 0)
            break;
        started++;
    }
    if (started < r->n_threads) {
        /* the started threads stay parked at the barrier; the program ends */
        fprintf(stderr, PROG ": cannot start %u threads\n", r->n_threads);
        return -1;
    }
    pthread_barrier_wait(&r->start);
    uint64_t t0 = cli_now_ns();
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    double wall = (double)(cli_now_ns() - t0) / 1e9;
    pthread_barrier_destroy(&r->start);
    pthread_mutex_destroy(&r->mu);
    return r->errors ? -1 : wall;
}

static void drop_caches(void)
{
    static int warned;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f && fputs("3\n", f) >= 0 && fclose(f) == 0)
        return;
    if (f)
        fclose(f);
    if (!warned++)
        fprintf(stderr, PROG ": note: cannot drop the page cache (%s); not root? results may be warm\n",
                strerror(errno));
}

/* Run mount.sh with arguments; 0 if it succeeded. */
static int mount_sh(const bench_cfg *c, const char *a1, const char *a2, const char *a3, const char *a4)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDOUT_FILENO);
        execl("/bin/bash", "bash", c->mount_sh, a1, a2, a3, a4, (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int is_mounted(const char *mnt)
{
    char real[PATH_MAX], line[2 * PATH_MAX];
    if (!realpath(mnt, real))
        return 0;
    FILE *f = fopen("/proc/mounts", "r");
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        char dev[PATH_MAX], mp[PATH_MAX];
        if (sscanf(line, "%4095s %4095s", dev, mp) == 2 && strcmp(mp, real) == 0)
            found = 1;
    }
    if (f)
        fclose(f);
    return found;
}

static int remount(const bench_cfg *c, uint64_t chunk)
{
    char opts[512];
    if (is_mounted(c->mnt) && mount_sh(c, "-u", c->mnt, NULL, NULL) != 0) {
        fprintf(stderr, PROG ": %s -u %s failed\n", c->mount_sh, c->mnt);
        return -1;
    }
    drop_caches();
    snprintf(opts, sizeof opts, "chunk=%" PRIu64 "%s%s", chunk, c->extra_opts ? "," : "",
             c->extra_opts ? c->extra_opts : "");
    if (mount_sh(c, c->store_dir, c->mnt, "-o", opts) != 0) {
        fprintf(stderr, PROG ": %s %s %s -o %s failed\n", c->mount_sh, c->store_dir, c->mnt, opts);
        return -1;
    }
    return 0;
}

/* A stats value of the mount (-1 if unreadable). */
static double mount_stat(const char *mnt, const char *key)
{
    char path[PATH_MAX], k[128];
    double v, out = -1;
    snprintf(path, sizeof path, "%s/stats", mnt);
    FILE *f = fopen(path, "r");
    while (f && fscanf(f, "%127s %lf", k, &v) == 2)
        if (strcmp(k, key) == 0)
            out = v;
    if (f)
        fclose(f);
    return out;
}

/* CPU seconds of this process (the readers). */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds of the daemon, from its stats. */
static double daemon_cpu(const char *mnt)
{
    return mount_stat(mnt, "cpu_user_s") + mount_stat(mnt, "cpu_sys_s");
}

/* n random bundles for each side: all distinct (no side profits from a
 * cache, the two sides share none) while the store has 2n bundles. */
static int pick(const store *st, uint64_t seed, int64_t n, int64_t **layer_of, int64_t **id_of)
{
    const hp_config *hp = store_hparams(st);
    int64_t total = 0;
    for (int64_t l = 0; l < hp->n_layers; l++)
        total += store_layer_at(st, l)->n_neurons;
    unsigned char *seen = calloc((size_t)total / 8 + 1, 1);
    if (!seen)
        return -1;
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t taken = 0;
    for (int64_t i = 0; i < 2 * n; i++) {
        int64_t g;
        do {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g = (int64_t)((x >> 11) % (uint64_t)total);
        } while (taken < total && (seen[g / 8] >> (g % 8) & 1));
        if (++taken == total + 1) {       /* every bundle used: start over */
            memset(seen, 0, (size_t)total / 8 + 1);
            taken = 1;
        }
        seen[g / 8] |= (unsigned char)(1u << (g % 8));
        int64_t l = 0;
        while (g >= store_layer_at(st, l)->n_neurons)
            g -= store_layer_at(st, l++)->n_neurons;
        layer_of[i / n][i % n] = l;
        id_of[i / n][i % n] = g;
    }
    free(seen);
    return 0;
}

static int parse_list(const char *s, int sizes, uint64_t *out, size_t *n)
{
    char *dup = strdup(s), *save = NULL;
    *n = 0;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (*n == MAX_LIST || (sizes ? cli_parse_size(tok, 1, &v) : (v = strtoull(tok, NULL, 10), v == 0 ? -1 : 0)) < 0) {
            free(dup);
            return -1;
        }
        out[(*n)++] = v;
    }
    free(dup);
    return *n ? 0 : -1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: " PROG " STORE_DIR MOUNTPOINT [--bundles N] [--threads 1,16] [--chunks 4k,8k,...,1m]\n"
"                          [--opts MOUNT_OPTS] [--no-remount] [--mount-sh PATH] [--rounds R] [--seed S]\n"
"Read N random neuron bundles directly from STORE_DIR/ffn.bin (O_DIRECT, 4 KiB\n"
"aligned) and through MOUNTPOINT/layers/NN/ffn at each reader count, for each\n"
"chunk size; print MB/s (bundle bytes) and mean microseconds per bundle.\n"
"  --bundles N    bundles read per run and side (default 4000; --n is the old name)\n"
"  --threads L    concurrent readers, comma-separated (default 1,16)\n"
"  --chunks L     chunk sizes (SIZE: bytes, or with a k, m or g suffix); the\n"
"                 daemon is remounted with -o chunk=C via mount.sh for each\n"
"                 (default 4k,8k,16k,32k,64k,128k,256k,512k,1m)\n"
"  --opts O       more mount options for each remount (e.g. cache=256m)\n"
"  --no-remount   benchmark MOUNTPOINT as it is mounted now\n"
"  --rounds R     alternate direct and mount reads in R rounds (default 4)\n"
"  --seed S       seed of the random bundle choice (default 1)\n"
"  --mount-sh P   mount.sh to use (default: the one beside the build)\n"
"  -h, --help     this help\n"
"The page cache is dropped before every configuration (needs root).\n"
"Exit status: 0 ok, 1 error, 2 usage error.\n");
}

/* mount.sh of the source tree this binary was built from: <src>/build-X/bin/.. */
static const char *default_mount_sh(void)
{
    static char path[PATH_MAX + 16];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *s = strrchr(exe, '/');
        for (int up = 0; s && up < 2; up++) {
            *s = '\0';
            s = strrchr(exe, '/');
        }
        if (s) {
            *s = '\0';
            snprintf(path, sizeof path, "%s/mount.sh", exe);
            if (access(path, R_OK) == 0)
                return path;
        }
    }
    return "./mount.sh";
}

/* The value of one option into c: 0, or -1 if it is not valid. */
static int set_option(bench_cfg *c, int opt, const char *v)
{
    uint64_t list[MAX_LIST];
    int64_t x;
    size_t n;
    switch (opt) {
    case 'b':
        return cli_parse_i64(v, 1, INT32_MAX, &c->n);
    case 't':
        if (parse_list(v, 0, list, &n) < 0)
            return -1;
        for (size_t k = 0; k < n; k++) {
            if (list[k] > 256)
                return -1;
            c->threads[k] = (unsigned)list[k];
        }
        c->n_threads = n;
        return 0;
    case 'c':
        return parse_list(v, 1, c->chunks, &c->n_chunks);
    case 'o':
        c->extra_opts = v;
        return 0;
    case 'm':
        c->mount_sh = v;
        return 0;
    case 'r':
        if (cli_parse_i64(v, 1, 1000, &x) < 0)
            return -1;
        c->rounds = (unsigned)x;
        return 0;
    case 's':
        if (cli_parse_i64(v, 0, INT64_MAX, &x) < 0)
            return -1;
        c->seed = (uint64_t)x;
        return 0;
    }
    return -1;
}

/* The command line into c: 0, 1 for --help, or -1 after a usage message. */
static int parse_args(int argc, char **argv, bench_cfg *c)
{
    static const struct option longs[] = {
        { "bundles", required_argument, 0, 'b' }, { "n", required_argument, 0, 'b' },
        { "threads", required_argument, 0, 't' }, { "chunks", required_argument, 0, 'c' },
        { "opts", required_argument, 0, 'o' },    { "mount-sh", required_argument, 0, 'm' },
        { "rounds", required_argument, 0, 'r' },  { "seed", required_argument, 0, 's' },
        { "no-remount", no_argument, 0, 'N' },    { "help", no_argument, 0, 'h' },
        { 0, 0, 0, 0 },
    };
    static const uint64_t def_chunks[] = { 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10,
                                           256 << 10, 512 << 10, 1 << 20 };
    *c = (bench_cfg){ .n = 4000, .threads = { 1, 16 }, .n_threads = 2, .seed = 1, .rounds = 4 };
    memcpy(c->chunks, def_chunks, sizeof def_chunks);
    c->n_chunks = sizeof def_chunks / sizeof def_chunks[0];
    int no_remount = 0, opt, li = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longs, &li)) != -1) {
        if (opt == 'h')
            return 1;
        if (opt == 'N') {
            no_remount = 1;
        } else if (opt == ':' || opt == '?') {
            return cli_bad_option(PROG, opt, argv);
        } else if (set_option(c, opt, optarg) < 0) {
            fprintf(stderr, PROG ": --%s %s: bad value (try --help)\n", longs[li].name, optarg);
            return -1;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, PROG ": need STORE_DIR and MOUNTPOINT (try --help)\n");
        return -1;
    }
    c->store_dir = argv[optind];
    c->mnt = argv[optind + 1];
    if (!c->mount_sh)
        c->mount_sh = default_mount_sh();
    if (no_remount)
        c->n_chunks = 0;          /* benchmark the mount as it is */
    return 0;
}

/* The mount.sh we call runs the inflashfs of this build (unless
 * INFLASH_BIN says otherwise). */
static void export_bin_dir(void)
{
    char bindir[PATH_MAX];
    ssize_t bl = readlink("/proc/self/exe", bindir, sizeof bindir - 1);
    if (bl > 0 && !getenv("INFLASH_BIN")) {
        bindir[bl] = '\0';
        *strrchr(bindir, '/') = '\0';
        setenv("INFLASH_BIN", bindir, 1);
    }
}

/* What every configuration shares: the store, ffn.bin for the direct side,
 * the bundles to read and the mount's layer files. */
typedef struct {
    store         *st;
    const hp_config *hp;
    int64_t        bundle;            /* bytes */
    int            ffn_fd;            /* ffn.bin, O_DIRECT */
    int64_t       *layer_of[2], *id_of[2];   /* [direct, mount][n] */
    int           *layer_fd;          /* [n_layers] the mount's layers/NN/ffn while a configuration runs */
} bench;

static int bench_open(const bench_cfg *c, bench *b)
{
    ierr err = IERR_INIT;
    char path[PATH_MAX];
    *b = (bench){ .ffn_fd = -1 };
    if (store_open(c->store_dir, &b->st, &err) < 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return -1;
    }
    b->hp = store_hparams(b->st);
    b->bundle = store_bundle_bytes(b->st);
    snprintf(path, sizeof path, "%s/%s", store_dir(b->st), IFL_FFN_NAME);
    b->ffn_fd = open(path, O_RDONLY | O_DIRECT);
    if (b->ffn_fd < 0) {
        fprintf(stderr, PROG ": %s: O_DIRECT open: %s\n", path, strerror(errno));
        return -1;
    }
    for (int mode = 0; mode < 2; mode++) {
        b->layer_of[mode] = malloc((size_t)c->n * sizeof **b->layer_of);
        b->id_of[mode] = malloc((size_t)c->n * sizeof **b->id_of);
    }
    b->layer_fd = calloc((size_t)b->hp->n_layers, sizeof *b->layer_fd);
    if (!b->layer_of[0] || !b->id_of[0] || !b->layer_of[1] || !b->id_of[1] || !b->layer_fd) {
        fprintf(stderr, PROG ": out of memory\n");
        return -1;
    }
    return 0;
}

static void bench_close(bench *b)
{
    if (b->ffn_fd >= 0)
        close(b->ffn_fd);
    for (int mode = 0; mode < 2; mode++) {
        free(b->layer_of[mode]);
        free(b->id_of[mode]);
    }
    free(b->layer_fd);
    store_close(b->st);
}

static void print_header(const bench_cfg *c, const bench *b)
{
    printf("store %s: ffn.bin %.2f GiB, %" PRId64 " layers x %" PRId64 " neurons, bundle %" PRId64
           " bytes; %" PRId64 " random bundles per run\n",
           c->store_dir, (double)store_ffn_bytes(b->st) / (1 << 30), b->hp->n_layers, b->hp->d_ffn, b->bundle,
           c->n);
    printf("%-6s %3s | %8s %9s %7s | %8s %9s %7s | %6s | %7s %7s | %6s %8s\n", "chunk", "thr", "direct", "direct",
           "direct", "mount", "mount", "mount", "mount/", "daemon", "store", "cache", "store");
    printf("%-6s %3s | %8s %9s %7s | %8s %9s %7s | %6s | %7s %7s | %6s %8s\n", "", "", "MB/s", "us/bundle", "cpu us",
           "MB/s", "us/bundle", "cpu us", "direct", "us/req", "us/read", "hit %", "MB read");
    fflush(stdout);
}

static int open_layers(const bench_cfg *c, bench *b)
{
    char path[PATH_MAX];
    for (int64_t l = 0; l < b->hp->n_layers; l++) {
        snprintf(path, sizeof path, "%s/layers/%02" PRId64 "/ffn", c->mnt, l);
        b->layer_fd[l] = open(path, O_RDONLY);
        if (b->layer_fd[l] < 0) {
            fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
            while (l-- > 0)
                close(b->layer_fd[l]);
            return -1;
        }
    }
    return 0;
}

/* Both sides of one configuration in alternating rounds: res[side] =
 * {MB/s, us per bundle, CPU us per bundle}. */
static int run_rounds(const bench_cfg *c, bench *b, unsigned n_threads, double res[2][3])
{
    run r = { .st = b->st, .ffn_fd = b->ffn_fd, .layer_fd = b->layer_fd, .bundle = b->bundle,
              .n_threads = n_threads };
    double wall[2] = { 0, 0 }, lat[2] = { 0, 0 }, cpu[2] = { 0, 0 };
    for (unsigned k = 0; k < c->rounds; k++) {
        int64_t lo = c->n * k / c->rounds, hi = c->n * (k + 1) / c->rounds;
        for (int mode = 0; mode < 2; mode++) {
            r.direct = mode == 0;
            r.layer_of = b->layer_of[mode] + lo;
            r.id_of = b->id_of[mode] + lo;
            r.n = hi - lo;
            double cpu0 = self_cpu() + (mode ? daemon_cpu(c->mnt) : 0);
            double w = run_threads(&r);
            if (w < 0) {
                fprintf(stderr, PROG ": %s reads failed (%d errors)\n", mode ? "mount" : "direct", r.errors);
                return -1;
            }
            wall[mode] += w;
            lat[mode] += (double)r.lat_ns_sum;
            cpu[mode] += self_cpu() + (mode ? daemon_cpu(c->mnt) : 0) - cpu0;
        }
    }
    for (int mode = 0; mode < 2; mode++) {
        res[mode][0] = (double)c->n * (double)b->bundle / wall[mode] / 1e6;
        res[mode][1] = lat[mode] / (double)c->n / 1e3;
        res[mode][2] = cpu[mode] / (double)c->n * 1e6;
    }
    return 0;
}

/* One configuration (chunk size ci, reader count ti): (re)mount, read both
 * sides, print its row. */
static int run_config(const bench_cfg *c, bench *b, size_t ci, size_t ti)
{
    if (c->n_chunks ? remount(c, c->chunks[ci]) < 0 : (drop_caches(), 0))
        return -1;
    if (open_layers(c, b) < 0)
        return -1;
    double hits0 = mount_stat(c->mnt, "cache_hits"), miss0 = mount_stat(c->mnt, "cache_misses");
    double rb0 = mount_stat(c->mnt, "ffn_store_read_bytes");
    double res[2][3];
    /* different bundles for the two sides, so neither profits from the
     * other's reads in a cache below us; the two sides alternate in rounds
     * so that a drifting machine load hits both alike */
    int rc = pick(b->st, c->seed + ci * 1000 + ti * 10, c->n, b->layer_of, b->id_of);
    if (rc < 0)
        fprintf(stderr, PROG ": out of memory\n");
    else
        rc = run_rounds(c, b, c->threads[ti], res);
    double hits = mount_stat(c->mnt, "cache_hits") - hits0, miss = mount_stat(c->mnt, "cache_misses") - miss0;
    double rb = mount_stat(c->mnt, "ffn_store_read_bytes") - rb0;
    for (int64_t l = 0; l < b->hp->n_layers; l++)
        close(b->layer_fd[l]);
    if (rc < 0)
        return -1;
    char label[32];
    if (c->n_chunks)
        snprintf(label, sizeof label, "%" PRIu64 "k", c->chunks[ci] >> 10);
    else
        snprintf(label, sizeof label, "%.0fk", mount_stat(c->mnt, "chunk_bytes") / 1024);
    /* inside the daemon: mean time per read request and per store read
     * (since the mount: exact for a remounted configuration) */
    printf("%-6s %3u | %8.1f %9.1f %7.1f | %8.1f %9.1f %7.1f | %5.0f%% | %7.1f %7.1f | %5.1f%% %8.1f\n", label,
           c->threads[ti], res[0][0], res[0][1], res[0][2], res[1][0], res[1][1], res[1][2],
           100 * res[1][0] / res[0][0], mount_stat(c->mnt, "ffn_latency_mean_us"),
           mount_stat(c->mnt, "store_read_mean_us"), hits + miss > 0 ? 100 * hits / (hits + miss) : 0.0, rb / 1e6);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    bench_cfg c;
    int pr = parse_args(argc, argv, &c);
    if (pr != 0) {
        if (pr > 0)
            usage(stdout);
        return pr > 0 ? 0 : 2;
    }
    export_bin_dir();
    bench b;
    if (bench_open(&c, &b) < 0) {
        bench_close(&b);
        return 1;
    }
    print_header(&c, &b);
    size_t n_cfg = c.n_chunks ? c.n_chunks : 1;
    int rc = 0;
    for (size_t ci = 0; ci < n_cfg && rc == 0; ci++)
        for (size_t ti = 0; ti < c.n_threads && rc == 0; ti++)
            rc = run_config(&c, &b, ci, ti) < 0 ? 1 : 0;
    if (c.n_chunks && is_mounted(c.mnt) && mount_sh(&c, "-u", c.mnt, NULL, NULL) != 0)   /* ours: remounted above */
        fprintf(stderr, PROG ": cannot unmount %s\n", c.mnt);
    bench_close(&b);
    return rc;
}
