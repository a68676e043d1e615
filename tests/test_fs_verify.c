/* test_fs_verify.c: corruption detection and fault injection below the
 * mount. The INFLASH_FAULT hook of layout/io.c on a file of its own (rule
 * syntax and errors, fail / short / slow, count, ranges, several rules); the
 * chunk cache's fill generations and chunk_discard; and the daemon's read
 * path (fs/ifs.c) with verification on a real store (stories260K packed in
 * f16 by inflash-pack: 384-byte bundles, so with 4 KiB chunks some bundles
 * span two chunks): each bundle hashed once per fill and not on cache
 * hits, a flipped byte gives EIO naming layer and neuron (also for a read of
 * a few bytes of the bundle) while the neighbours read right, the repaired
 * byte reads right at once (no bad copy kept), verify=0 serves the bytes
 * unchecked, damaged tensors (whole and partial reads, checked once), short
 * reads through the hook never served, and concurrent readers under
 * eviction. Needs INFLASH_BIN and INFLASH_SHARED (set by ctest). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chunk.h"
#include "ifs.h"
#include "io.h"
#include "store.h"
#include "testutil.h"

static char g_dir[] = "/tmp/test_fs_verify.XXXXXX";
static char g_store[300];

/* ---- the INFLASH_FAULT hook ------------------------------------------------ */

#define FSIZE 65536u

static unsigned char pat(uint64_t off)
{
    return (unsigned char)(off * 7 + 3);
}

/* A file FSIZE bytes of pat() named `name` in g_dir; its fd. */
static int pattern_file(const char *name)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    unsigned char buf[FSIZE];
    for (uint64_t i = 0; i < FSIZE; i++)
        buf[i] = pat(i);
    assert_int_equal(io_pwrite_full(fd, buf, FSIZE, 0, path, NULL), 0);
    return fd;
}

static void check_pat(const unsigned char *p, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(off + i))
            fail_msg("byte %zu of a read at %llu: %u, want %u", i, (unsigned long long)off, p[i], pat(off + i));
}

/* io_pread_full of [off, off + n) of fd "dir/f.bin": its rc (data checked when 0). */
static int rd(int fd, const char *name, uint64_t off, size_t n, ierr *err)
{
    unsigned char buf[4096];
    char path[64];
    snprintf(path, sizeof path, "some/dir/%s", name);
    assert_true(n <= sizeof buf);
    int rc = io_pread_full(fd, buf, n, off, path, err);
    if (rc == 0)
        check_pat(buf, off, n);
    return rc;
}

static void set_faults(const char *spec)
{
    ierr err = IERR_INIT;
    if (io_fault_set(spec, &err) < 0)
        fail_msg("io_fault_set(%s): %s", spec ? spec : "NULL", err.msg);
}

static void test_hook_fail(void **state)
{
    (void)state;
    int fd = pattern_file("f.bin");
    ierr err = IERR_INIT;
    set_faults("file=f.bin,off=1000,len=10,mode=fail");
    assert_int_equal(rd(fd, "f.bin", 0, 1000, &err), 0);          /* ends where the range starts */
    assert_int_equal(rd(fd, "f.bin", 1010, 100, &err), 0);        /* starts where it ends */
    assert_int_equal(rd(fd, "f.bin", 950, 100, &err), -EIO);
    assert_non_null(strstr(err.msg, "some/dir/f.bin: read failed at byte 950: Input/output error"));
    assert_int_equal(rd(fd, "f.bin", 1009, 1, &err), -EIO);
    assert_int_equal(rd(fd, "g.bin", 950, 100, &err), 0);         /* another base name */
    assert_int_equal(rd(fd, "xf.bin", 950, 100, &err), 0);
    /* count: the first two matching reads fail, then the rule is spent */
    set_faults("file=f.bin,off=0,len=1,mode=fail,count=2");
    assert_int_equal(rd(fd, "f.bin", 100, 10, &err), 0);          /* not matching: not counted */
    assert_int_equal(rd(fd, "f.bin", 0, 10, &err), -EIO);
    assert_int_equal(rd(fd, "f.bin", 0, 10, &err), -EIO);
    assert_int_equal(rd(fd, "f.bin", 0, 10, &err), 0);
    /* len defaults to the end of the file; offsets near 2^64 do not wrap */
    set_faults("file=f.bin,off=60000,mode=fail;file=f.bin,off=0xffffffffffffff00,len=0x1000,mode=fail");
    assert_int_equal(rd(fd, "f.bin", 65000, 100, &err), -EIO);
    assert_int_equal(rd(fd, "f.bin", 0, 4096, &err), 0);
    /* "" clears */
    set_faults("");
    assert_int_equal(rd(fd, "f.bin", 65000, 100, &err), 0);
    close(fd);
}

static void test_hook_short_slow(void **state)
{
    (void)state;
    int fd = pattern_file("f.bin");
    ierr err = IERR_INIT;
    set_faults("file=f.bin,off=1000,len=10,mode=short ; file=f.bin,off=5000,len=1,mode=slow,ms=5");
    /* io_preadv: the bytes before the range, the rest of what was read is 0xA5 */
    unsigned char a[600], b[600];
    struct iovec iov[2] = { { a, sizeof a }, { b, sizeof b } };
    assert_int_equal(io_preadv(fd, iov, 2, 500, "f.bin"), 500);
    check_pat(a, 500, 500);
    for (size_t i = 500; i < sizeof a; i++)
        assert_int_equal(a[i], 0xA5);
    for (size_t i = 0; i < sizeof b; i++)
        assert_int_equal(b[i], 0xA5);
    /* starting inside the range: 0 bytes, as at the end of the file */
    assert_int_equal(io_preadv(fd, iov, 1, 1005, "f.bin"), 0);
    /* io_pread_full never takes a short read for a whole one */
    assert_int_equal(rd(fd, "f.bin", 950, 100, &err), -EIO);
    assert_non_null(strstr(err.msg, "unexpected end of file at byte 1000"));
    assert_int_equal(rd(fd, "f.bin", 2000, 100, &err), 0);
    /* slow: late, but right */
    assert_int_equal(rd(fd, "f.bin", 4900, 200, &err), 0);
    set_faults(NULL);
    close(fd);
}

static void test_hook_syntax(void **state)
{
    (void)state;
    static const char *const badspec[][2] = {
        { "file=f.bin", "needs file= and mode=" },
        { "mode=fail", "needs file= and mode=" },
        { "file=a/f.bin,mode=fail", "file=a/f.bin" },
        { "file=f.bin,mode=boom", "mode=boom" },
        { "file=f.bin,mode=fail,off=12x", "off=12x: not a number" },
        { "file=f.bin,mode=fail,off=-1", "off=-1: not a number" },
        { "file=f.bin,mode=fail,len=0", "len=0" },
        { "file=f.bin,mode=fail,count=0", "count=0" },
        { "file=f.bin,mode=slow,ms=9999999", "ms=9999999" },
        { "file=f.bin,mode=fail,colour=red", "unknown key 'colour'" },
        { "file=f.bin,mode=fail,off", "'off': expected key=value" },
        { "file=f.bin,mode=fail;file=g.bin", "needs file= and mode=" },
    };
    int fd = pattern_file("f.bin");
    ierr err = IERR_INIT;
    set_faults("file=f.bin,off=0,len=1,mode=fail");
    for (size_t i = 0; i < sizeof badspec / sizeof badspec[0]; i++) {
        assert_int_equal(io_fault_set(badspec[i][0], &err), -EINVAL);
        if (!strstr(err.msg, badspec[i][1]) || strncmp(err.msg, "INFLASH_FAULT: ", 15) != 0)
            fail_msg("%s: message '%s', want '%s'", badspec[i][0], err.msg, badspec[i][1]);
        assert_int_equal(rd(fd, "f.bin", 0, 1, &err), -EIO);   /* the old rules stay */
    }
    /* the most rules, spaces and empty rules allowed */
    char many[2048] = "";
    for (int i = 0; i < 16; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), " file=f.bin,off=%d,len=1,mode=fail ;;", i * 100);
    set_faults(many);
    assert_int_equal(rd(fd, "f.bin", 1500, 1, &err), -EIO);
    assert_int_equal(rd(fd, "f.bin", 1501, 1, &err), 0);
    strcat(many, "file=f.bin,mode=fail");
    assert_int_equal(io_fault_set(many, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "more than 16 rules"));
    set_faults(NULL);
    close(fd);
}

/* ---- chunk generations and discard ------------------------------------------ */

static int g_dev_reads;

static ssize_t mem_readv(void *ctx, uint64_t off, const struct iovec *iov, int iovcnt)
{
    (void)ctx;
    ssize_t n = 0;
    __atomic_add_fetch(&g_dev_reads, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < iovcnt; i++) {
        for (size_t k = 0; k < iov[i].iov_len; k++)
            ((unsigned char *)iov[i].iov_base)[k] = pat(off + (uint64_t)n + k);
        n += (ssize_t)iov[i].iov_len;
    }
    return n;
}

static void test_chunk_gen_discard(void **state)
{
    (void)state;
    chunk_opts o = { .chunk_bytes = 4096, .budget_bytes = 2 * 4096, .dev_bytes = 8 * 4096, .name = "mem",
                     .readv = mem_readv };
    chunk_cache *c;
    ierr err = IERR_INIT;
    assert_int_equal(chunk_cache_new(&o, &c, &err), 0);
    chunk *p[2];
    uint64_t idx[2] = { 0, 1 };
    assert_int_equal(chunk_pin(c, idx, 2, p, &err), 0);
    uint64_t g0 = chunk_gen(p[0]), g1 = chunk_gen(p[1]);
    assert_true(g0 > 0 && g1 > 0 && g0 != g1);
    chunk_unpin(c, p, 2);
    int reads = g_dev_reads;
    assert_int_equal(chunk_pin(c, idx, 1, p, &err), 0);            /* a hit: the same fill */
    assert_int_equal(g_dev_reads, reads);
    assert_int_equal(chunk_gen(p[0]), g0);
    chunk_discard(c, p, 1);                                         /* bad: out of the cache */
    check_pat(chunk_data(p[0]), 0, 4096);                           /* still valid while pinned */
    chunk_unpin(c, p, 1);
    assert_int_equal(chunk_pin(c, idx, 1, p, &err), 0);            /* read again, a larger gen */
    assert_int_equal(g_dev_reads, reads + 1);
    assert_true(chunk_gen(p[0]) > g1);
    uint64_t g2 = chunk_gen(p[0]);
    chunk_unpin(c, p, 1);
    uint64_t far[2] = { 5, 6 };                                     /* evicts 0 and 1 */
    assert_int_equal(chunk_pin(c, far, 2, p, &err), 0);
    chunk_unpin(c, p, 2);
    assert_int_equal(chunk_pin(c, idx, 1, p, &err), 0);
    assert_true(chunk_gen(p[0]) > g2);
    chunk_unpin(c, p, 1);
    chunk_stats st;
    chunk_get_stats(c, &st);
    assert_int_equal(st.discarded, 1);
    chunk_cache_free(c);
}

/* ---- the daemon's read path on a packed store -------------------------------- */

#define VLAYER 2
#define VJ     10         /* slot 10: bytes 3840..4223 of the layer, across 4096 */

static int64_t g_B, g_n;   /* bundle bytes, neurons per layer */

static int setup(void **state)
{
    (void)state;
    const char *bin = getenv("INFLASH_BIN"), *shared = getenv("INFLASH_SHARED");
    if (!bin || !shared || !mkdtemp(g_dir))
        return -1;
    snprintf(g_store, sizeof g_store, "%s/store", g_dir);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/inflash-pack' '%s/models/stories260K' '%s' --dtype f16 >/dev/null 2>&1", bin,
             shared, g_store);
    if (system(cmd) != 0)
        return -1;
    store *s;
    if (store_open(g_store, &s, NULL) < 0)
        return -1;
    g_B = store_bundle_bytes(s);
    g_n = store_layer_at(s, VLAYER)->n_neurons;
    store_close(s);
    return g_B == 384 && g_n > VJ + 1 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    set_faults(NULL);
    return tu_rmtree(g_dir);
}

static ifs *open_v(uint64_t chunk, uint64_t cache, int verify)
{
    ifs_opts o;
    ifs_opts_default(&o);
    o.chunk_bytes = chunk;
    o.cache_bytes = cache;
    o.verify = verify;
    ifs *m = NULL;
    ierr err = IERR_INIT;
    if (ifs_open(g_store, &o, &m, &err))
        fail_msg("ifs_open: %s", err.msg);
    return m;
}

/* One read of [off, off + len) of an open file into out; rc, *got the bytes. */
static int vread(ifs *m, ifs_file *f, uint64_t off, uint64_t len, unsigned char *out, uint64_t *got, ierr *err)
{
    ifs_reply r;
    int rc = ifs_read(m, f, off, len, &r, err);
    *got = 0;
    for (size_t i = 0; rc == 0 && i < r.n; i++) {
        memcpy(out + *got, r.iov[i].iov_base, r.iov[i].iov_len);
        *got += r.iov[i].iov_len;
    }
    if (rc == 0)
        ifs_reply_free(m, &r);
    return rc;
}

static ifs_file *vopen(ifs *m, const char *path)
{
    const tree_node *n;
    ifs_file *f;
    assert_int_equal(tree_resolve(ifs_tree(m), path, &n), 0);
    assert_int_equal(ifs_file_open(m, n, &f, NULL), 0);
    return f;
}

static uint64_t stat_u64(ifs *m, const char *key)
{
    char *text;
    size_t len;
    assert_int_equal(ifs_render_stats(m, 0, &text, &len), 0);
    size_t kl = strlen(key);
    uint64_t v = UINT64_MAX;
    for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
            v = strtoull(line + kl + 1, NULL, 10);
    free(text);
    if (v == UINT64_MAX)
        fail_msg("no stats key %s", key);
    return v;
}

/* The layer's neuron file as the store reads it (neuron order). */
static unsigned char *layer_bytes(ifs *m, int64_t layer)
{
    unsigned char *want = malloc((size_t)(g_n * g_B));
    assert_non_null(want);
    for (int64_t j = 0; j < g_n; j++)
        assert_int_equal(store_read_bundle(ifs_store(m), layer, j, want + j * g_B, NULL), 0);
    return want;
}

/* Invert one byte of a store file. */
static void flip(const char *name, uint64_t off)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", g_store, name);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0xFF;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static uint64_t bundle_off(ifs *m, int64_t layer, int64_t j)
{
    const store_layer *L = store_layer_at(ifs_store(m), layer);
    return L->offset + (uint64_t)L->slot_of[j] * (uint64_t)g_B;
}

static void test_verify_once_per_fill(void **state)
{
    (void)state;
    const uint64_t size = (uint64_t)(g_n * g_B);
    unsigned char *buf = malloc(size);
    uint64_t got;
    ierr err = IERR_INIT;
    /* a cache that holds the layer: ragged reads hash each bundle once */
    ifs *m = open_v(4096, 256 << 10, 1);
    ifs_file *f = vopen(m, "layers/02/ffn");
    unsigned char *want = layer_bytes(m, VLAYER);
    for (uint64_t off = 0; off < size; off += 1000) {
        assert_int_equal(vread(m, f, off, 1000, buf, &got, &err), 0);
        assert_memory_equal(buf, want + off, (size_t)got);
    }
    assert_int_equal(stat_u64(m, "verify_bundles"), g_n);
    assert_int_equal(vread(m, f, 0, size, buf, &got, &err), 0);     /* all hits: no hashing */
    assert_memory_equal(buf, want, (size_t)size);
    assert_int_equal(stat_u64(m, "verify_bundles"), g_n);
    assert_int_equal(stat_u64(m, "verify_errors"), 0);
    assert_int_equal(stat_u64(m, "verify"), 1);
    ifs_file_close(f);
    ifs_close(m);
    /* a 4-chunk cache: refilled chunks are checked again */
    m = open_v(4096, 16 << 10, 1);
    f = vopen(m, "layers/02/ffn");
    for (int pass = 0; pass < 2; pass++)
        for (uint64_t off = 0; off < size; off += 4096) {
            assert_int_equal(vread(m, f, off, 4096, buf, &got, &err), 0);
            assert_memory_equal(buf, want + off, (size_t)got);
        }
    assert_true(stat_u64(m, "verify_bundles") >= 2 * (uint64_t)g_n);
    ifs_file_close(f);
    ifs_close(m);
    free(want);
    free(buf);
}

static void test_damaged_bundle(void **state)
{
    (void)state;
    unsigned char buf[4 * 384], good[4 * 384];
    uint64_t got;
    ierr err = IERR_INIT;
    ifs *m = open_v(4096, 64 << 10, 1);
    ifs_file *f = vopen(m, "layers/02/ffn");
    assert_int_equal(vread(m, f, (VJ - 1) * g_B, 3 * g_B, good, &got, &err), 0);   /* neurons 9..11, cached */
    const uint64_t off = bundle_off(m, VLAYER, VJ);
    flip("ffn.bin", off + 300);                      /* in the second chunk of the bundle */
    /* the cached copy is good and was checked: it is served */
    assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), 0);
    assert_memory_equal(buf, good + g_B, (size_t)g_B);
    ifs_file_close(f);
    ifs_close(m);

    m = open_v(4096, 64 << 10, 1);
    f = vopen(m, "layers/02/ffn");
    assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), -EIO);
    char want[160];
    snprintf(want, sizeof want, "ffn.bin: layer 2 neuron %d (slot %d, offset %llu): checksum mismatch", VJ, VJ,
             (unsigned long long)off);
    assert_string_equal(err.msg, want);
    /* 16 bytes of the bundle, all in its first (undamaged) chunk: still EIO */
    assert_int_equal(vread(m, f, VJ * g_B, 16, buf, &got, &err), -EIO);
    /* the neighbours, in the same chunks, read right */
    assert_int_equal(vread(m, f, (VJ - 1) * g_B, g_B, buf, &got, &err), 0);
    assert_memory_equal(buf, good, (size_t)g_B);
    assert_int_equal(vread(m, f, (VJ + 1) * g_B, g_B, buf, &got, &err), 0);
    assert_memory_equal(buf, good + 2 * g_B, (size_t)g_B);
    /* a read across the damaged bundle fails as a whole */
    assert_int_equal(vread(m, f, (VJ - 1) * g_B, 3 * g_B, buf, &got, &err), -EIO);
    assert_int_equal(stat_u64(m, "verify_errors"), 3);
    assert_int_equal(stat_u64(m, "verify_retries"), 3);      /* each read the store once more */
    assert_true(stat_u64(m, "cache_discarded") >= 6);
    /* repaired: the very next read is right (no bad copy was kept) */
    flip("ffn.bin", off + 300);
    assert_int_equal(vread(m, f, (VJ - 1) * g_B, 3 * g_B, buf, &got, &err), 0);
    assert_memory_equal(buf, good, (size_t)(3 * g_B));
    ifs_file_close(f);
    ifs_close(m);

    /* verify=0: the damaged bytes are served as stored */
    flip("ffn.bin", off + 300);
    m = open_v(4096, 64 << 10, 0);
    f = vopen(m, "layers/02/ffn");
    assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), 0);
    assert_int_equal(buf[300], good[g_B + 300] ^ 0xFF);
    assert_int_equal(stat_u64(m, "verify"), 0);
    assert_int_equal(stat_u64(m, "verify_bundles"), 0);
    ifs_file_close(f);
    ifs_close(m);
    flip("ffn.bin", off + 300);
}

static void test_damaged_tensor(void **state)
{
    (void)state;
    const char *name = "model.embed_tokens.weight";
    ifs *m = open_v(4096, 64 << 10, 1);
    const store_tensor *t = store_tensor_find(ifs_store(m), name);
    assert_non_null(t);
    unsigned char *buf = malloc(t->bytes), *good = malloc(t->bytes);
    uint64_t got;
    ierr err = IERR_INIT;
    assert_int_equal(store_read_dense(ifs_store(m), t->offset, good, t->bytes, NULL), 0);
    const uint64_t at = t->offset + t->bytes - 5;
    ifs_close(m);
    flip("dense.bin", at);
    m = open_v(4096, 64 << 10, 1);
    t = store_tensor_find(ifs_store(m), name);
    char path[128], want[256];
    snprintf(path, sizeof path, "tensors/%s", name);
    snprintf(want, sizeof want, "dense.bin: tensor %s (offset %llu, %llu bytes): checksum mismatch", name,
             (unsigned long long)t->offset, (unsigned long long)t->bytes);
    ifs_file *f = vopen(m, path);
    assert_int_equal(vread(m, f, 0, t->bytes, buf, &got, &err), -EIO);       /* whole: its own buffer */
    assert_string_equal(err.msg, want);
    assert_int_equal(vread(m, f, 100, 50, buf, &got, &err), -EIO);           /* partial: the whole read first */
    assert_string_equal(err.msg, want);
    assert_int_equal(stat_u64(m, "verify_errors"), 2);
    flip("dense.bin", at);
    assert_int_equal(vread(m, f, 100, 50, buf, &got, &err), 0);
    assert_memory_equal(buf, good + 100, 50);
    assert_int_equal(vread(m, f, 1000, 4096, buf, &got, &err), 0);
    assert_memory_equal(buf, good + 1000, 4096);
    assert_int_equal(stat_u64(m, "verify_tensors"), 1);                      /* checked once */
    ifs_file_close(f);
    ifs_close(m);
    free(buf);
    free(good);
}

static void test_fault_through_ifs(void **state)
{
    (void)state;
    unsigned char buf[2 * 384];
    uint64_t got;
    ierr err = IERR_INIT;
    for (int verify = 0; verify <= 1; verify++) {
        ifs *m = open_v(4096, 64 << 10, verify);
        char spec[200];
        snprintf(spec, sizeof spec, "file=ffn.bin,off=%llu,len=1,mode=short",
                 (unsigned long long)bundle_off(m, VLAYER, VJ) + 300);
        set_faults(spec);
        ifs_file *f = vopen(m, "layers/02/ffn");
        assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), -EIO);
        assert_non_null(strstr(err.msg, "short read"));
        assert_int_equal(vread(m, f, 0, 2 * g_B, buf, &got, &err), 0);       /* another chunk */
        /* fails once: the retry reads the store again */
        snprintf(spec, sizeof spec, "file=ffn.bin,off=%llu,len=%lld,mode=fail,count=1",
                 (unsigned long long)bundle_off(m, VLAYER, VJ), (long long)g_B);
        set_faults(spec);
        assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), -EIO);
        assert_int_equal(vread(m, f, VJ * g_B, g_B, buf, &got, &err), 0);
        set_faults(NULL);
        assert_true(stat_u64(m, "store_read_errors") >= 2);
        ifs_file_close(f);
        ifs_close(m);
    }
}

/* Readers of random ranges of one layer at once, under eviction. */
typedef struct {
    ifs *m;
    const unsigned char *want;
    unsigned seed;
    int bad;
} reader;

static void *reader_main(void *arg)
{
    reader *r = arg;
    const uint64_t size = (uint64_t)(g_n * g_B);
    unsigned char *buf = malloc(8192);
    ifs_file *f = vopen(r->m, "layers/02/ffn");
    uint64_t x = r->seed;
    for (int it = 0; it < 400 && buf; it++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t off = (x >> 20) % size, len = 1 + (x >> 44) % 8192, got;
        if (vread(r->m, f, off, len, buf, &got, NULL) != 0 || memcmp(buf, r->want + off, (size_t)got) != 0)
            r->bad++;
    }
    ifs_file_close(f);
    free(buf);
    return NULL;
}

static void test_concurrent_verify(void **state)
{
    (void)state;
    ifs *m = open_v(4096, 16 << 10, 1);
    unsigned char *want = layer_bytes(m, VLAYER);
    reader r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (reader){ .m = m, .want = want, .seed = 11u + (unsigned)i };
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
    assert_int_equal(stat_u64(m, "verify_errors"), 0);
    free(want);
    ifs_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_fail),
        cmocka_unit_test(test_hook_short_slow),
        cmocka_unit_test(test_hook_syntax),
        cmocka_unit_test(test_chunk_gen_discard),
        cmocka_unit_test(test_verify_once_per_fill),
        cmocka_unit_test(test_damaged_bundle),
        cmocka_unit_test(test_damaged_tensor),
        cmocka_unit_test(test_fault_through_ifs),
        cmocka_unit_test(test_concurrent_verify),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
