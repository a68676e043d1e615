/* ifs.c: the inflashfs daemon's state and read path without FUSE (ifs.h):
 * the store, the virtual tree, the neuron-file translation through the chunk
 * cache over ffn.bin (O_DIRECT on an fd of our own), tensors from dense.bin,
 * the generated files (config.json, neurons.tsv, stats), and verification
 * of what is read against the index's xxh64.
 *
 * Verification of bundles is lazy and once per fill: each chunk fill has a
 * generation (chunk_gen, unique and increasing), and vgen[slot] remembers
 * the largest generation of the bundle's chunks when it was last found
 * good. A request checks each bundle it touches whose chunks' largest
 * generation differs, i.e. whose chunks were (re)filled since: cache hits
 * cost a compare, never a hash, and a bundle that is never requested is
 * never hashed. (Equality is exact: every chunk of a request is pinned in
 * one critical section, so a fill that was not checked has a generation
 * larger than any remembered one.) */
#include "ifs.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <pthread.h>
#include <unistd.h>
#include <xxhash.h>

#include "io.h"
#include "stats.h"
#include "slot_map.h"

/* The buffers of one neuron-file read and the state of its steps (see
 * read_ffn). Each thread that reads keeps one (the ifs's pthread key) and
 * reuses it for its next read: grown when a request needs more, never
 * shrunk, freed when the thread ends or at ifs_close. A reply borrows its
 * thread's scratch (its pins and pieces live here) until ifs_reply_free;
 * a read while the thread's scratch is lent out gets a one-off scratch
 * that the reply frees. */
enum {
    SCRATCH_IDLE,                /* a thread's, free for its next read */
    SCRATCH_BUSY,                /* a thread's, lent to a reply */
    SCRATCH_ORPHAN,              /* lent when its thread ended: the reply frees it */
    SCRATCH_ONEOFF,              /* a reply's own: freed with the reply */
};

struct ifs_scratch {
    xlate_ext     *ext;          /* [ext_cap] the request as ffn.bin extents, in file order */
    size_t         ext_cap, n_ext;
    unsigned char *block;        /* [cap] of each array below, in one allocation */
    struct iovec  *iov;          /* the reply's pieces (at most one per chunk crossing of the extents) */
    uint64_t      *idx;          /* chunk ids to pin, sorted, unique: n_idx */
    chunk        **pins;         /* pins[i] holds chunk idx[i] */
    size_t         cap, n_idx;
    XXH64_state_t *h;            /* hash of a bundle across chunks; made on first use */
    atomic_int     state;        /* SCRATCH_* */
    ifs           *m;            /* the owner (for the thread-end destructor) */
    ifs_scratch   *prev, *next;  /* threads' scratches: in ifs.scratch, guarded by scratch_mu */
};

/* Verification state of one dense tensor. */
typedef struct {
    pthread_mutex_t mu;          /* one whole-tensor check at a time */
    atomic_int      good;        /* 1 once it matched its xxh64 */
} ifs_tensor;

struct ifs {
    /* immutable after ifs_open */
    store        *st;
    ifs_opts      o;
    tree         *tree;
    char         *config;        /* config.json text, owned */
    size_t        config_len;
    xlate_layer  *xl;            /* [n_layers]; slot tables owned by st */
    xlate_layer  *xs;            /* [n_layers] the ffn.slots views (identity) */
    int64_t       n_layers;
    int           ffn_fd;        /* ffn.bin, O_DIRECT unless direct == 0 */
    int           direct;
    chunk_cache  *cache;
    fsstat       *fst;           /* read requests, by kind */
    fsstat       *fst_store;     /* ffn.bin reads (chunk loads): their latency */
    uint64_t      t_mount_ns;
    int           verify;        /* o.verify */
    atomic_uint_fast64_t *vgen;  /* [all neurons] layer by layer, by slot: the
                                    largest chunk_gen of the bundle's chunks
                                    when it last matched its xxh64 (0: never);
                                    relaxed atomics, see the top of the file */
    size_t       *vfirst;        /* [n_layers] index of each layer's slot 0 in vgen */
    ifs_tensor   *tens;          /* [tensor count], mutexes initialised */
    size_t        n_tens;
    pthread_key_t   scratch_key; /* each reading thread's ifs_scratch */
    int             scratch_key_ok;
    pthread_mutex_t scratch_mu;  /* guards the list below */
    ifs_scratch     scratch;     /* sentinel of the list of the threads' scratches */
    /* updated atomically */
    atomic_uint_fast64_t dense_reads, dense_bytes;
    atomic_uint_fast64_t ver_bundles, ver_bytes, ver_ns, ver_errors, ver_retries, ver_tensors;
};

struct ifs_file {
    const tree_node *node;
    char            *snap;       /* stats / neurons.tsv: rendered at open, owned */
    size_t           snap_len;
    atomic_int       refs;       /* the open + each reply still pointing into snap:
                                    the kernel may release a file while a reply
                                    to a read-ahead of it is being sent */
};

/* ---- options ------------------------------------------------------------ */

void ifs_opts_default(ifs_opts *o)
{
    *o = (ifs_opts){
        .chunk_bytes = IFS_DEFAULT_CHUNK,
        .cache_bytes = IFS_DEFAULT_CACHE,
        .readahead = IFS_DEFAULT_READAHEAD,
        .ra_workers = IFS_DEFAULT_RA_WORKERS,
        .verify = 1,
    };
}

int ifs_opts_check(const ifs_opts *o, ierr *err)
{
    uint64_t c = o->chunk_bytes;
    if (c < CHUNK_MIN || c > CHUNK_MAX || (c & (c - 1)))
        return ierr_set(err, -EINVAL, "chunk=%" PRIu64 ": must be a power of two from 4k to 4m", c);
    if (o->cache_bytes < 4 * c)
        return ierr_set(err, -EINVAL, "cache=%" PRIu64 ": must hold at least 4 chunks (%" PRIu64 " bytes)",
                        o->cache_bytes, 4 * c);
    if (o->readahead > 1024)
        return ierr_set(err, -EINVAL, "readahead=%u: at most 1024 chunks", o->readahead);
    if (o->readahead > 0 && (uint64_t)o->readahead * c > o->cache_bytes / 2)
        return ierr_set(err, -EINVAL, "readahead=%u: more than half the cache (%" PRIu64 " bytes)",
                        o->readahead, o->cache_bytes);
    if (o->ra_workers > 64)
        return ierr_set(err, -EINVAL, "read-ahead workers %u: at most 64", o->ra_workers);
    return 0;
}

/* ---- ffn.bin reader ------------------------------------------------------ */

static ssize_t ffn_readv(void *ctx, uint64_t off, const struct iovec *iov, int iovcnt)
{
    ifs *m = ctx;
    uint64_t t0 = cli_now_ns();
    ssize_t r = io_preadv(m->ffn_fd, iov, iovcnt, off, IFL_FFN_NAME);
    fsstat_read(m->fst_store, FSSTAT_OTHER, r > 0 ? (uint64_t)r : 0, cli_now_ns() - t0, r < 0);
    if (r < 0)
        return r;
    if (!m->direct)   /* keep the DRAM budget honest without O_DIRECT too */
        posix_fadvise(m->ffn_fd, (off_t)off, r, POSIX_FADV_DONTNEED);
    return r;
}

/* For the chunk cache's log lines: the layer and slots of ffn.bin bytes
 * [off, off + len) (one layer: the cache reads within a layer). */
static void ffn_where(void *ctx, uint64_t off, uint64_t len, char *buf, size_t cap)
{
    const ifs *m = ctx;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const xlate_layer *xl = &m->xl[l];
        if (off < xl->base || off - xl->base >= xlate_file_bytes(xl))
            continue;
        int64_t s0 = (int64_t)((off - xl->base) / xl->bundle);
        int64_t s1 = (int64_t)((off + len - 1 - xl->base) / xl->bundle);
        s1 = s1 < xl->n ? s1 : xl->n - 1;
        if (s0 == s1)
            snprintf(buf, cap, " (layer %" PRId64 " neuron %" PRId64 ", slot %" PRId64 ")", l,
                     store_layer_at(m->st, l)->id_of[s0], s0);
        else
            snprintf(buf, cap, " (layer %" PRId64 " slots %" PRId64 "..%" PRId64 ")", l, s0, s1);
        return;
    }
}

static void log_stderr(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "inflashfs: %s\n", line);
}

/* Open ffn.bin for O_DIRECT reads, checked with one aligned read of the
 * header block; where the filesystem refuses (EINVAL, e.g. tmpfs), fall back
 * to buffered reads with one log line. */
static int open_ffn(ifs *m, ierr *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", store_dir(m->st), IFL_FFN_NAME);
    if (!m->o.buffered) {
        int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            void *probe = NULL;
            ssize_t r = -1;
            if (posix_memalign(&probe, CHUNK_ALIGN, CHUNK_ALIGN) == 0)
                r = pread(fd, probe, CHUNK_ALIGN, 0);
            int e = errno;
            free(probe);
            if (r == (ssize_t)CHUNK_ALIGN) {
                m->ffn_fd = fd;
                m->direct = 1;
                return 0;
            }
            close(fd);
            if (r >= 0 || e != EINVAL)
                return ierr_set(err, -EIO, "%s: cannot read the header block: %s", path,
                                r >= 0 ? "short read" : strerror(e));
        } else if (errno != EINVAL) {
            return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
        }
        fprintf(stderr, "inflashfs: %s: O_DIRECT not supported by this filesystem; "
                        "using buffered reads with POSIX_FADV_DONTNEED\n", path);
    }
    m->ffn_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (m->ffn_fd < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    m->direct = 0;
    return 0;
}

/* ---- generated files ------------------------------------------------------ */

/* layers/NN/neurons.tsv: "id<TAB>slot<TAB>freq" per neuron, freq "-" if not
 * calibrated. */
static int render_neurons(const ifs *m, int64_t layer, char **out, size_t *len)
{
    const store_layer *L = store_layer_at(m->st, layer);
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return -ENOMEM;
    for (int64_t j = 0; j < L->n_neurons; j++) {
        if (isnan(L->freq[j]))
            fprintf(f, "%" PRId64 "\t%" PRId64 "\t-\n", j, L->slot_of[j]);
        else
            fprintf(f, "%" PRId64 "\t%" PRId64 "\t%.6g\n", j, L->slot_of[j], L->freq[j]);
    }
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *len = size;
    return 0;
}

int ifs_render_stats(ifs *m, int json, char **out, size_t *len)
{
    fsstat_kind_view all, ffn, ten, dev;
    chunk_stats cs;
    fsstat_view(m->fst, FSSTAT_NKINDS, &all);
    fsstat_view(m->fst_store, FSSTAT_NKINDS, &dev);
    fsstat_view(m->fst, FSSTAT_FFN, &ffn);
    fsstat_view(m->fst, FSSTAT_TENSOR, &ten);
    chunk_get_stats(m->cache, &cs);
    uint64_t dreads = atomic_load(&m->dense_reads), dbytes = atomic_load(&m->dense_bytes);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
#define U(k, v) { .key = k, .u = (uint64_t)(v) }
#define R(k, v) { .key = k, .is_real = 1, .d = (v) }
    const fsstat_kv kv[] = {
        R("uptime_s", (double)(cli_now_ns() - m->t_mount_ns) / 1e9),
        U("requests", all.requests),
        U("bytes_served", all.bytes),
        U("errors", all.errors),
        U("max_request_bytes", all.max_request),
        U("ffn_requests", ffn.requests),
        U("ffn_bytes", ffn.bytes),
        U("tensor_requests", ten.requests),
        U("tensor_bytes", ten.bytes),
        U("store_reads", cs.reads + dreads),
        U("store_read_bytes", cs.read_bytes + dbytes),
        U("store_read_errors", cs.read_errors),
        U("ffn_store_reads", cs.reads),
        U("ffn_store_read_bytes", cs.read_bytes),
        U("cache_hits", cs.hits),
        U("cache_misses", cs.misses),
        U("cache_shared", cs.shared),
        U("cache_evictions", cs.evictions),
        U("cache_discarded", cs.discarded),
        U("cache_transient", cs.transient),
        U("cache_bytes", cs.cached_bytes),
        U("cache_peak_bytes", cs.peak_cached_bytes),
        U("cache_budget_bytes", cs.budget_bytes),
        U("chunk_bytes", cs.chunk_bytes),
        U("readahead_chunks", cs.ra_chunks),
        U("readahead_used", cs.ra_used),
        U("readahead_dropped", cs.ra_dropped),
        U("o_direct", m->direct),
        U("verify", m->verify),
        U("verify_bundles", atomic_load(&m->ver_bundles)),
        U("verify_bytes", atomic_load(&m->ver_bytes)),
        U("verify_tensors", atomic_load(&m->ver_tensors)),
        U("verify_errors", atomic_load(&m->ver_errors)),
        U("verify_retries", atomic_load(&m->ver_retries)),
        R("verify_s", (double)atomic_load(&m->ver_ns) / 1e9),
        R("latency_mean_us", all.mean_us),
        R("latency_p50_us", all.p50_us),
        R("latency_p99_us", all.p99_us),
        R("latency_max_us", all.max_us),
        R("ffn_latency_mean_us", ffn.mean_us),
        R("ffn_latency_p50_us", ffn.p50_us),
        R("ffn_latency_p99_us", ffn.p99_us),
        R("store_read_mean_us", dev.mean_us),
        R("store_read_p50_us", dev.p50_us),
        R("store_read_p99_us", dev.p99_us),
        R("cpu_user_s", (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6),
        R("cpu_sys_s", (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6),
    };
#undef U
#undef R
    return fsstat_format(kv, sizeof kv / sizeof kv[0], json, out, len);
}

/* ---- per-thread read buffers ---------------------------------------------- */

static void scratch_free(ifs_scratch *s)
{
    free(s->ext);
    free(s->block);
    XXH64_freeState(s->h);
    free(s);
}

/* The pthread key's destructor: a thread that read ends. */
static void scratch_thread_end(void *p)
{
    ifs_scratch *s = p;
    pthread_mutex_lock(&s->m->scratch_mu);
    s->prev->next = s->next;
    s->next->prev = s->prev;
    pthread_mutex_unlock(&s->m->scratch_mu);
    int busy = SCRATCH_BUSY;
    if (!atomic_compare_exchange_strong(&s->state, &busy, SCRATCH_ORPHAN))
        scratch_free(s);          /* idle; else the reply holding it frees it */
}

/* Borrow this thread's scratch (made on its first read), or a one-off one
 * while the thread's is lent out; NULL when out of memory. */
static ifs_scratch *scratch_get(ifs *m)
{
    ifs_scratch *s = pthread_getspecific(m->scratch_key);
    int idle = SCRATCH_IDLE;
    if (s && atomic_compare_exchange_strong(&s->state, &idle, SCRATCH_BUSY))
        return s;
    int first = !s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->m = m;
    atomic_init(&s->state, SCRATCH_ONEOFF);
    if (first && pthread_setspecific(m->scratch_key, s) == 0) {
        atomic_store(&s->state, SCRATCH_BUSY);
        pthread_mutex_lock(&m->scratch_mu);
        s->prev = &m->scratch;
        s->next = m->scratch.next;
        m->scratch.next->prev = s;
        m->scratch.next = s;
        pthread_mutex_unlock(&m->scratch_mu);
    }
    return s;
}

/* Give a borrowed scratch back (on any thread). */
static void scratch_put(ifs_scratch *s)
{
    int busy = SCRATCH_BUSY;
    if (s && !atomic_compare_exchange_strong(&s->state, &busy, SCRATCH_IDLE))
        scratch_free(s);          /* one-off, or its thread has ended */
}

/* Room for n extents. The old contents are not kept (the buffers only live
 * for one request), so growing copies nothing. */
static int scratch_reserve_ext(ifs_scratch *s, size_t n, ierr *err)
{
    if (n <= s->ext_cap)
        return 0;
    size_t cap = n > 2 * s->ext_cap ? n : 2 * s->ext_cap;
    xlate_ext *e = malloc(cap * sizeof *e);
    if (!e)
        return ierr_set(err, -ENOMEM, "out of memory");
    free(s->ext);
    s->ext = e;
    s->ext_cap = cap;
    return 0;
}

/* Room for n chunk ids, pins and pieces (old contents not kept). */
static int scratch_reserve_chunks(ifs_scratch *s, size_t n, ierr *err)
{
    if (n <= s->cap)
        return 0;
    size_t cap = n > 2 * s->cap ? n : 2 * s->cap;
    unsigned char *b = malloc(cap * (sizeof *s->iov + sizeof *s->idx + sizeof *s->pins));
    if (!b)
        return ierr_set(err, -ENOMEM, "out of memory");
    free(s->block);
    s->block = b;
    s->iov = (struct iovec *)b;                                  /* all 8-byte aligned */
    s->idx = (uint64_t *)(b + cap * sizeof *s->iov);
    s->pins = (chunk **)(b + cap * (sizeof *s->iov + sizeof *s->idx));
    s->cap = cap;
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

/* The verification state: vgen for every bundle, a lock and flag per tensor. */
static int verify_state_new(ifs *m, ierr *err)
{
    if (!m->verify)
        return 0;
    size_t total = 0;
    m->vfirst = malloc((size_t)m->n_layers * sizeof *m->vfirst);
    if (!m->vfirst)
        return ierr_set(err, -ENOMEM, "out of memory");
    for (int64_t l = 0; l < m->n_layers; l++) {
        m->vfirst[l] = total;
        total += (size_t)m->xl[l].n;
    }
    m->vgen = calloc(total ? total : 1, sizeof *m->vgen);
    size_t nt = store_tensor_count(m->st);
    m->tens = calloc(nt ? nt : 1, sizeof *m->tens);
    if (!m->vgen || !m->tens)
        return ierr_set(err, -ENOMEM, "out of memory for the verification state");
    for (size_t i = 0; i < total; i++)
        atomic_init(&m->vgen[i], 0);
    for (; m->n_tens < nt; m->n_tens++) {
        pthread_mutex_init(&m->tens[m->n_tens].mu, NULL);
        atomic_init(&m->tens[m->n_tens].good, 0);
    }
    return 0;
}

static int build_tree(ifs *m, ierr *err)
{
    int rc = tree_new(&m->tree, err);
    if (rc < 0)
        return rc;
    rc = tree_add(m->tree, "config.json", TREE_MEM, m->config_len, 0, m->config, NULL, err);
    for (size_t i = 0; rc == 0 && i < store_tokfile_count(m->st); i++) {
        const char *name;
        const void *data;
        size_t len;
        rc = store_tokfile_at(m->st, i, &name, &data, &len);
        if (rc < 0)
            return ierr_set(err, rc, "%s/%s: tokenizer file %zu unreadable", store_dir(m->st), IFL_INDEX_NAME, i);
        rc = tree_add(m->tree, name, TREE_MEM, len, 0, data, NULL, err);
    }
    char path[64 + TREE_NAME_MAX];
    for (size_t i = 0; rc == 0 && i < store_tensor_count(m->st); i++) {
        const store_tensor *t = store_tensor_at(m->st, i);
        if (strlen(t->name) > TREE_NAME_MAX)
            return ierr_set(err, -EINVAL, "%s/%s: tensor name too long: %.40s...", store_dir(m->st),
                            IFL_INDEX_NAME, t->name);
        snprintf(path, sizeof path, "tensors/%s", t->name);
        rc = tree_add(m->tree, path, TREE_TENSOR, t->bytes, (int64_t)i, NULL, NULL, err);
    }
    for (int64_t l = 0; rc == 0 && l < m->n_layers; l++) {
        snprintf(path, sizeof path, "layers/%02" PRId64 "/ffn", l);
        rc = tree_add(m->tree, path, TREE_FFN, xlate_file_bytes(&m->xl[l]), l, NULL, NULL, err);
        if (rc < 0)
            break;
        snprintf(path, sizeof path, "layers/%02" PRId64 "/ffn.slots", l);
        rc = tree_add(m->tree, path, TREE_FFN_SLOTS, xlate_file_bytes(&m->xs[l]), l, NULL, NULL, err);
        if (rc < 0)
            break;
        char *tsv;
        size_t len;
        rc = render_neurons(m, l, &tsv, &len);
        if (rc < 0)
            return ierr_set(err, rc, "neurons.tsv: out of memory");
        free(tsv);
        snprintf(path, sizeof path, "layers/%02" PRId64 "/neurons.tsv", l);
        rc = tree_add(m->tree, path, TREE_NEURONS, len, l, NULL, NULL, err);
    }
    if (rc == 0)
        rc = tree_add(m->tree, "stats", TREE_STATS, 0, 0, NULL, NULL, err);
    if (rc == 0)
        rc = tree_add(m->tree, "stats.json", TREE_STATS, 0, 1, NULL, NULL, err);
    if (rc < 0)
        return ierr_wrap(err, rc, "%s", store_dir(m->st));
    return 0;
}

int ifs_open(const char *store_dir_path, const ifs_opts *o, ifs **out, ierr *err)
{
    int rc = ifs_opts_check(o, err);
    if (rc < 0)
        return rc;
    ifs *m = calloc(1, sizeof *m);
    if (!m)
        return ierr_set(err, -ENOMEM, "out of memory");
    m->o = *o;
    m->verify = o->verify;
    m->ffn_fd = -1;
    pthread_mutex_init(&m->scratch_mu, NULL);
    m->scratch.prev = m->scratch.next = &m->scratch;
    if (pthread_key_create(&m->scratch_key, scratch_thread_end) != 0) {
        rc = ierr_set(err, -EAGAIN, "no thread-specific key left");
        goto fail;
    }
    m->scratch_key_ok = 1;
    m->t_mount_ns = cli_now_ns();
    rc = store_open(store_dir_path, &m->st, err);
    if (rc < 0)
        goto fail;
    m->n_layers = store_hparams(m->st)->n_layers;
    m->xl = calloc((size_t)m->n_layers, sizeof *m->xl);
    m->xs = calloc((size_t)m->n_layers, sizeof *m->xs);
    m->fst = fsstat_new();
    m->fst_store = fsstat_new();
    if (!m->xl || !m->xs || !m->fst || !m->fst_store) {
        rc = ierr_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int64_t l = 0; l < m->n_layers; l++) {
        const store_layer *L = store_layer_at(m->st, l);
        if (!L) {
            rc = ierr_set(err, -EINVAL, "%s/%s: layer %" PRId64 " missing", store_dir_path, IFL_INDEX_NAME, l);
            goto fail;
        }
        m->xl[l] = (xlate_layer){ .base = L->offset, .bundle = (uint64_t)store_bundle_bytes(m->st),
                                  .n = L->n_neurons, .slot_of = L->slot_of };
        m->xs[l] = m->xl[l];
        m->xs[l].slot_of = NULL;
    }
    rc = verify_state_new(m, err);
    if (rc < 0)
        goto fail;
    m->config = store_config_json(m->st, err);
    if (!m->config) {
        rc = -EINVAL;
        goto fail;
    }
    m->config_len = strlen(m->config);
    rc = open_ffn(m, err);
    if (rc < 0)
        goto fail;
    chunk_region *regions = calloc((size_t)m->n_layers, sizeof *regions);
    if (!regions) {
        rc = ierr_set(err, -ENOMEM, "out of memory");
        goto fail;
    }
    for (int64_t l = 0; l < m->n_layers; l++)     /* one chunk grid per layer */
        regions[l] = (chunk_region){ .off = m->xl[l].base, .len = xlate_file_bytes(&m->xl[l]) };
    chunk_opts co = {
        .chunk_bytes = o->chunk_bytes, .budget_bytes = o->cache_bytes,
        .dev_bytes = store_ffn_bytes(m->st), .regions = regions, .n_regions = (size_t)m->n_layers,
        .readahead = o->readahead,
        .workers = o->readahead ? o->ra_workers : 0, .name = IFL_FFN_NAME,
        .readv = ffn_readv, .ctx = m, .log = log_stderr, .where = ffn_where, .prefault = 1,
    };
    rc = chunk_cache_new(&co, &m->cache, err);
    free(regions);
    if (rc < 0)
        goto fail;
    rc = build_tree(m, err);
    if (rc < 0)
        goto fail;
    *out = m;
    return 0;
fail:
    ifs_close(m);
    return rc;
}

void ifs_close(ifs *m)
{
    if (!m)
        return;
    /* no reads are running: the threads' scratches are all idle, and a
     * thread ending after this calls no destructor */
    if (m->scratch_key_ok)
        pthread_key_delete(m->scratch_key);
    while (m->scratch.next != &m->scratch) {
        ifs_scratch *s = m->scratch.next;
        m->scratch.next = s->next;
        scratch_free(s);
    }
    pthread_mutex_destroy(&m->scratch_mu);
    chunk_cache_free(m->cache);
    if (m->ffn_fd >= 0)
        close(m->ffn_fd);
    tree_free(m->tree);
    free(m->config);
    free(m->xl);
    free(m->xs);
    free(m->vgen);
    free(m->vfirst);
    for (size_t i = 0; i < m->n_tens; i++)
        pthread_mutex_destroy(&m->tens[i].mu);
    free(m->tens);
    fsstat_free(m->fst);
    fsstat_free(m->fst_store);
    store_close(m->st);
    free(m);
}

const tree *ifs_tree(const ifs *m) { return m->tree; }
const store *ifs_store(const ifs *m) { return m->st; }
int ifs_direct(const ifs *m) { return m->direct; }

int ifs_size(ifs *m, const tree_node *n, uint64_t *size)
{
    if (n->kind != TREE_STATS) {
        *size = n->size;
        return 0;
    }
    char *buf;
    size_t len;
    int rc = ifs_render_stats(m, (int)n->ref, &buf, &len);
    if (rc < 0)
        return rc;
    free(buf);
    *size = len;
    return 0;
}

int ifs_file_open(ifs *m, const tree_node *n, ifs_file **out, ierr *err)
{
    if (n->kind == TREE_DIR)
        return ierr_set(err, -EISDIR, "%s: is a directory", n->name);
    ifs_file *f = calloc(1, sizeof *f);
    if (!f)
        return ierr_set(err, -ENOMEM, "out of memory");
    f->node = n;
    atomic_init(&f->refs, 1);
    int rc = 0;
    if (n->kind == TREE_STATS)
        rc = ifs_render_stats(m, (int)n->ref, &f->snap, &f->snap_len);
    else if (n->kind == TREE_NEURONS)
        rc = render_neurons(m, n->ref, &f->snap, &f->snap_len);
    if (rc < 0) {
        free(f);
        return ierr_set(err, rc, "%s: cannot render: %s", n->name, strerror(-rc));
    }
    *out = f;
    return 0;
}

void ifs_file_close(ifs_file *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) > 1)
        return;
    free(f->snap);
    free(f);
}

const tree_node *ifs_file_node(const ifs_file *f)
{
    return f->node;
}

/* ---- reads -------------------------------------------------------------- */

/* Clamp [off, off+len) to a file of `size` bytes; 0 if nothing is left. */
static uint64_t clamp_len(uint64_t size, uint64_t off, uint64_t len)
{
    if (off >= size)
        return 0;
    return len < size - off ? len : size - off;
}

static void reply_one(ifs_reply *r, const void *p, uint64_t len)
{
    r->one = (struct iovec){ .iov_base = (void *)p, .iov_len = (size_t)len };
    r->iov = &r->one;
    r->n = 1;
    r->bytes = len;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Position of chunk index v in the sorted idx[0..n). */
static size_t find_idx(const uint64_t *idx, size_t n, uint64_t v)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (idx[mid] <= v)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The chunks (numbers within the layer) extent e touches: [*c0, *c1]; with
 * verification, those of the whole bundles it touches. */
static void ext_chunks(const ifs *m, const xlate_layer *xl, const xlate_ext *e, uint64_t cb, uint64_t *c0,
                       uint64_t *c1)
{
    uint64_t lo = e->off - xl->base, end = e->off + e->len - xl->base;
    if (m->verify) {
        lo = lo / xl->bundle * xl->bundle;
        end = (end + xl->bundle - 1) / xl->bundle * xl->bundle;
    }
    *c0 = lo / cb;
    *c1 = (end - 1) / cb;
}

/* Check each bundle the extents s->ext touch whose chunks were filled since
 * it last matched (see the top of the file). At a mismatch the bundle's
 * chunks leave the cache and the result is -EAGAIN (read them again), or
 * when `final`, -EIO and one log line. s->pins[i] holds chunk s->idx[i]. */
static int verify_ffn(ifs *m, int64_t layer, ifs_scratch *sc, int final, ierr *err)
{
    const xlate_layer *xl = &m->xl[layer];
    const store_layer *L = store_layer_at(m->st, layer);
    const uint64_t cb = chunk_size(m->cache), B = xl->bundle;
    const uint64_t first_id = chunk_region_first(m->cache, (size_t)layer);
    const xlate_ext *ext = sc->ext;
    const uint64_t *idx = sc->idx;
    chunk **pins = sc->pins;
    const size_t n_idx = sc->n_idx;
    atomic_uint_fast64_t *vg = m->vgen + m->vfirst[layer];
    uint64_t t0 = 0, checked = 0;
    int rc = 0;
    for (size_t e = 0; e < sc->n_ext && rc == 0; e++) {
        int64_t s0 = (int64_t)((ext[e].off - xl->base) / B), s1 = (int64_t)((ext[e].off + ext[e].len - 1 - xl->base) / B);
        for (int64_t s = s0; s <= s1 && rc == 0; s++) {
            const uint64_t lo = (uint64_t)s * B, c0 = lo / cb, c1 = (lo + B - 1) / cb;
            uint64_t gen = 0;
            for (uint64_t c = c0; c <= c1; c++) {
                uint64_t g = chunk_gen(pins[find_idx(idx, n_idx, first_id + c)]);
                gen = g > gen ? g : gen;
            }
            if (atomic_load_explicit(&vg[s], memory_order_relaxed) == gen)
                continue;                 /* checked since these fills */
            if (!t0)
                t0 = cli_now_ns();
            uint64_t sum = 0;
            int short_chunk = 0;
            if (c0 == c1) {               /* the usual case: one piece */
                const chunk *k = pins[find_idx(idx, n_idx, first_id + c0)];
                short_chunk = lo - c0 * cb + B > chunk_valid(k);
                if (!short_chunk)
                    sum = XXH64(chunk_data(k) + (lo - c0 * cb), (size_t)B, 0);
            } else {
                if (!sc->h && !(sc->h = XXH64_createState())) {
                    rc = ierr_set(err, -ENOMEM, "out of memory");
                    break;
                }
                XXH64_reset(sc->h, 0);
                for (uint64_t c = c0; c <= c1 && !short_chunk; c++) {
                    const chunk *k = pins[find_idx(idx, n_idx, first_id + c)];
                    uint64_t from = c == c0 ? lo - c * cb : 0;
                    uint64_t to = c == c1 ? lo + B - c * cb : cb;
                    short_chunk = to > chunk_valid(k);
                    if (!short_chunk)
                        XXH64_update(sc->h, chunk_data(k) + from, (size_t)(to - from));
                }
                sum = XXH64_digest(sc->h);
            }
            checked++;
            const char *problem = short_chunk ? "bundle beyond the data read" : "checksum mismatch";
            if (!short_chunk && sum == L->xxh64[L->id_of[s]]) {
                atomic_store_explicit(&vg[s], gen, memory_order_relaxed);
                continue;
            }
            for (uint64_t c = c0; c <= c1; c++)
                chunk_discard(m->cache, &pins[find_idx(idx, n_idx, first_id + c)], 1);
            if (!final) {
                rc = -EAGAIN;
                break;
            }
            atomic_fetch_add(&m->ver_errors, 1);
            ierr line = IERR_INIT;
            store_bundle_problem(m->st, layer, s, -EIO, problem, &line);
            fprintf(stderr, "inflashfs: %s\n", line.msg);
            rc = ierr_set(err, -EIO, "%s", line.msg);
        }
    }
    if (t0) {
        atomic_fetch_add(&m->ver_ns, cli_now_ns() - t0);
        atomic_fetch_add(&m->ver_bundles, checked);
        atomic_fetch_add(&m->ver_bytes, checked * B);
    }
    return rc;
}

/* A neuron-file read, step 1: bytes [off, off + len) of the file (xl: the
 * id-order or the slot-order view of the layer) as extents of ffn.bin, in
 * sc->ext; *bytes the length within the file (0: nothing to read). */
static int ffn_extents(int64_t layer, const xlate_layer *xl, uint64_t off, uint64_t len, ifs_scratch *sc,
                       uint64_t *bytes, ierr *err)
{
    size_t cap = xlate_max_extents(xl, clamp_len(xlate_file_bytes(xl), off, len));
    int rc = scratch_reserve_ext(sc, cap, err);
    if (rc < 0)
        return rc;
    if (xlate_range(xl, off, len, sc->ext, cap, &sc->n_ext, bytes) < 0)
        return ierr_set(err, -EIO, "layers/%02" PRId64 "/ffn: bad slot table", layer);
    return 0;
}

/* Step 2, the plan: every chunk the extents touch (with verification, those
 * of the whole bundles they touch), sorted and unique in sc->idx. */
static int ffn_plan(const ifs *m, int64_t layer, const xlate_layer *xl, ifs_scratch *sc, ierr *err)
{
    const uint64_t cb = chunk_size(m->cache);
    /* chunk ids of this layer: its own grid from the layer's start */
    const uint64_t first_id = chunk_region_first(m->cache, (size_t)layer);
    size_t n = 0;
    uint64_t c0, c1;
    for (size_t e = 0; e < sc->n_ext; e++) {
        ext_chunks(m, xl, &sc->ext[e], cb, &c0, &c1);
        n += (size_t)(c1 - c0 + 1);
    }
    int rc = scratch_reserve_chunks(sc, n, err);   /* n >= the pieces: chunk crossings */
    if (rc < 0)
        return rc;
    int sorted = 1;
    sc->n_idx = 0;
    for (size_t e = 0; e < sc->n_ext; e++) {
        ext_chunks(m, xl, &sc->ext[e], cb, &c0, &c1);
        for (uint64_t c = c0; c <= c1; c++) {
            if (sc->n_idx > 0 && first_id + c <= sc->idx[sc->n_idx - 1])
                sorted = 0;
            sc->idx[sc->n_idx++] = first_id + c;
        }
    }
    if (!sorted) {
        qsort(sc->idx, sc->n_idx, sizeof *sc->idx, cmp_u64);
        size_t u = 0;
        for (size_t i = 0; i < sc->n_idx; i++)
            if (u == 0 || sc->idx[i] != sc->idx[u - 1])
                sc->idx[u++] = sc->idx[i];
        sc->n_idx = u;
    }
    return 0;
}

/* Step 3, fill and verify: pin the planned chunks into r (reading the
 * missing ones) and check the bundles they hold; a bundle that does not
 * match is read once more before the read fails. */
static int ffn_fill(ifs *m, int64_t layer, uint64_t off, ifs_scratch *sc, ifs_reply *r, ierr *err)
{
    r->pins = sc->pins;
    for (int attempt = 0;; attempt++) {
        int rc = chunk_pin(m->cache, sc->idx, sc->n_idx, r->pins, err);
        if (rc < 0)
            return ierr_wrap(err, rc, "layers/%02" PRId64 "/ffn offset %" PRIu64, layer, off);
        r->n_pins = sc->n_idx;
        if (!m->verify || (rc = verify_ffn(m, layer, sc, attempt > 0, err)) == 0)
            return 0;
        if (rc != -EAGAIN)
            return rc;
        /* a bundle did not match: its chunks were discarded; read them again
         * once (the damage may have been in a cached copy or in transit) */
        chunk_unpin(m->cache, r->pins, r->n_pins);
        r->n_pins = 0;
        atomic_fetch_add(&m->ver_retries, 1);
    }
}

/* Step 4, the reply vectors: the pieces of the extents, in file order,
 * pointing into the pinned chunks (neighbours in memory merged). */
static int ffn_assemble(ifs *m, int64_t layer, const xlate_layer *xl, ifs_scratch *sc, ifs_reply *r, ierr *err)
{
    const uint64_t cb = chunk_size(m->cache), base = xl->base;
    const uint64_t first_id = chunk_region_first(m->cache, (size_t)layer);
    struct iovec *iov = sc->iov;
    size_t pi = 0;
    for (size_t e = 0; e < sc->n_ext; e++) {
        uint64_t pos = sc->ext[e].off, end = sc->ext[e].off + sc->ext[e].len;
        while (pos < end) {
            uint64_t c = (pos - base) / cb;
            const chunk *k = r->pins[find_idx(sc->idx, sc->n_idx, first_id + c)];
            uint64_t in = pos - base - c * cb;
            uint64_t take = cb - in;
            if (take > end - pos)
                take = end - pos;
            if (in + take > chunk_valid(k)) {
                int rc = ierr_set(err, -EIO, "%s: offset %" PRIu64 " beyond the data read", IFL_FFN_NAME, pos);
                fprintf(stderr, "inflashfs: %s\n", err ? err->msg : "short chunk");
                return rc;
            }
            unsigned char *p = (unsigned char *)chunk_data(k) + in;
            if (pi > 0 && (unsigned char *)iov[pi - 1].iov_base + iov[pi - 1].iov_len == p)
                iov[pi - 1].iov_len += (size_t)take;
            else
                iov[pi++] = (struct iovec){ .iov_base = p, .iov_len = (size_t)take };
            pos += take;
        }
    }
    r->iov = iov;
    r->n = pi;
    return 0;
}

/* A reply too scattered for one writev (more than IFS_MAX_IOV pieces)
 * becomes one copy, and its chunks and buffers go back now. */
static int reply_flatten(ifs *m, ifs_reply *r, ierr *err)
{
    unsigned char *dst = r->buf = malloc(r->bytes);
    if (!dst)
        return ierr_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < r->n; i++) {
        memcpy(dst, r->iov[i].iov_base, r->iov[i].iov_len);
        dst += r->iov[i].iov_len;
    }
    chunk_unpin(m->cache, r->pins, r->n_pins);
    r->n_pins = 0;
    r->pins = NULL;
    scratch_put(r->scratch);
    r->scratch = NULL;
    reply_one(r, r->buf, r->bytes);
    return 0;
}

/* A neuron-file read (xl: the id-order or the slot-order view of the
 * layer): extents of ffn.bin -> planned chunks -> pinned and checked ->
 * pieces, all in the thread's scratch, which the reply keeps. */
static int read_ffn(ifs *m, int64_t layer, const xlate_layer *xl, uint64_t off, uint64_t len, ifs_reply *r,
                    ierr *err)
{
    ifs_scratch *sc = r->scratch = scratch_get(m);
    if (!sc)
        return ierr_set(err, -ENOMEM, "out of memory");
    uint64_t bytes = 0;
    int rc = ffn_extents(layer, xl, off, len, sc, &bytes, err);
    if (rc == 0 && bytes == 0) {
        scratch_put(sc);           /* at or past EOF: no pieces */
        r->scratch = NULL;
        return 0;
    }
    if (rc == 0)
        rc = ffn_plan(m, layer, xl, sc, err);
    if (rc == 0)
        rc = ffn_fill(m, layer, off, sc, r, err);
    if (rc == 0)
        rc = ffn_assemble(m, layer, xl, sc, r, err);
    r->bytes = bytes;
    if (rc == 0 && r->n > IFS_MAX_IOV)
        rc = reply_flatten(m, r, err);
    if (rc < 0)
        ifs_reply_free(m, r);
    return rc;
}

/* Verify tensor i before its first bytes are served: a read of the whole
 * tensor checks its own buffer `got`; a partial one has the whole tensor read
 * and checked once (one at a time per tensor; later reads are served from
 * the page cache it leaves warm). A mismatch is -EIO and one log line, and
 * the next read checks again. */
static int verify_tensor(ifs *m, size_t i, const void *got, uint64_t off, uint64_t len, ierr *err)
{
    const store_tensor *t = store_tensor_at(m->st, i);
    ifs_tensor *ts = &m->tens[i];
    uint64_t t0 = cli_now_ns();
    ierr line = IERR_INIT;
    int rc;
    if (off == 0 && len == t->bytes) {
        rc = XXH64(got, (size_t)len, 0) == t->xxh64 ? 0
           : store_tensor_problem(t, -EBADMSG, "checksum mismatch", &line);
    } else {
        pthread_mutex_lock(&ts->mu);
        rc = atomic_load(&ts->good) ? 1 : store_verify_tensor(m->st, t, &line);
        pthread_mutex_unlock(&ts->mu);
        if (rc == 1)
            return 0;                     /* another read checked it meanwhile */
    }
    atomic_fetch_add(&m->ver_ns, cli_now_ns() - t0);
    atomic_fetch_add(&m->ver_bytes, t->bytes);
    if (rc == 0) {
        atomic_fetch_add(&m->ver_tensors, 1);
        atomic_store(&ts->good, 1);
        return 0;
    }
    if (rc == -EBADMSG)
        atomic_fetch_add(&m->ver_errors, 1);
    fprintf(stderr, "inflashfs: %s\n", line.msg);
    return ierr_set(err, rc == -ENOMEM ? rc : -EIO, "%s", line.msg);
}

static int read_tensor(ifs *m, int64_t i, uint64_t off, uint64_t len, ifs_reply *r, ierr *err)
{
    const store_tensor *t = store_tensor_at(m->st, (size_t)i);
    len = clamp_len(t->bytes, off, len);
    if (len == 0)
        return 0;
    r->buf = malloc(len);
    if (!r->buf)
        return ierr_set(err, -ENOMEM, "out of memory");
    int rc = store_read_dense(m->st, t->offset + off, r->buf, len, err);
    atomic_fetch_add(&m->dense_reads, 1);
    if (rc < 0) {
        ierr line = IERR_INIT;
        store_tensor_problem(t, -EIO, err ? err->msg : "read failed", &line);
        fprintf(stderr, "inflashfs: %s\n", line.msg);
        free(r->buf);
        r->buf = NULL;
        return ierr_set(err, -EIO, "%s", line.msg);
    }
    atomic_fetch_add(&m->dense_bytes, len);
    if (m->verify && !atomic_load(&m->tens[i].good) && (rc = verify_tensor(m, (size_t)i, r->buf, off, len, err)) < 0) {
        free(r->buf);
        r->buf = NULL;
        return rc;
    }
    reply_one(r, r->buf, len);
    return 0;
}

static int read_node(ifs *m, ifs_file *f, uint64_t off, uint64_t len, ifs_reply *r, ierr *err)
{
    const tree_node *n = f->node;
    switch (n->kind) {
    case TREE_FFN:
        return read_ffn(m, n->ref, &m->xl[n->ref], off, len, r, err);
    case TREE_FFN_SLOTS:
        return read_ffn(m, n->ref, &m->xs[n->ref], off, len, r, err);
    case TREE_TENSOR:
        return read_tensor(m, n->ref, off, len, r, err);
    case TREE_MEM:
        len = clamp_len(n->size, off, len);
        if (len)
            reply_one(r, (const char *)n->data + off, len);
        return 0;
    case TREE_STATS:
    case TREE_NEURONS:
        len = clamp_len(f->snap_len, off, len);
        if (len)
            reply_one(r, f->snap + off, len);
        return 0;
    case TREE_DIR:
        break;
    }
    return ierr_set(err, -EISDIR, "%s: is a directory", n->name);
}

int ifs_read(ifs *m, ifs_file *f, uint64_t off, uint64_t len, ifs_reply *r, ierr *err)
{
    memset(r, 0, sizeof *r);
    int rc = read_node(m, f, off, len, r, err);
    if (rc == 0) {     /* the reply keeps the file (and its snapshot) alive */
        atomic_fetch_add(&f->refs, 1);
        r->file = f;
    }
    return rc;
}

void ifs_reply_free(ifs *m, ifs_reply *r)
{
    if (r->n_pins)
        chunk_unpin(m->cache, r->pins, r->n_pins);
    scratch_put(r->scratch);
    free(r->buf);
    ifs_file_close(r->file);
    memset(r, 0, sizeof *r);
}

void ifs_account(ifs *m, const tree_node *n, uint64_t bytes, uint64_t t0_ns, int failed)
{
    fsstat_kind k = n->kind == TREE_FFN || n->kind == TREE_FFN_SLOTS ? FSSTAT_FFN
                    : n->kind == TREE_TENSOR                        ? FSSTAT_TENSOR
                                                                    : FSSTAT_OTHER;
    fsstat_read(m->fst, k, bytes, cli_now_ns() - t0_ns, failed);
}
