/* io.c: full pread/pwrite, path joining and whole-file reads (io.h), and
 * the INFLASH_FAULT fault injection hook of the store read path. */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <ftw.h>

/* ---- fault injection: the INFLASH_FAULT test hook --------------------------
 *
 * INFLASH_FAULT="RULE[;RULE...]" makes chosen reads of store files misbehave,
 * to test what the daemon and the client do when flash fails. Every read of
 * io_pread_full and io_preadv passes the hook (the daemon's ffn.bin and
 * dense.bin reads, every store read of layout/). Unset, the normal case, it
 * costs a pthread_once check and one load per read. A RULE is
 * comma-separated key=value pairs:
 *   file=NAME    base name of the file: ffn.bin, dense.bin, ... (required)
 *   off=N        first byte of the faulty range (default 0)
 *   len=N        its length in bytes (default: to the end of the file)
 *   mode=fail    the read fails with EIO
 *   mode=short   the read returns only the bytes before the range (0, as at
 *                the end of the file, if it starts inside it); the rest of
 *                what it read is overwritten with 0xA5 bytes, so a caller
 *                that ignored the count would hand out visible garbage
 *   mode=slow    the read waits ms milliseconds, then runs normally
 *   ms=N         the delay of mode=slow (default 200)
 *   count=K      the rule fires on its first K matching reads only
 *                (default: on every one)
 * Numbers are decimal or 0x hex; spaces around pairs are ignored; at most
 * IO_FAULT_MAX rules. A read matches a rule when its byte range overlaps the
 * rule's; the first matching rule that is not spent applies. When the
 * variable is read (the first store read of the process) one line on stderr
 * says how many rules are active, or which rule is bad (then none is).
 * Example: the first read of a 1 KiB bundle fails, and every read of
 * dense.bin's first MiB is a second late:
 *   INFLASH_FAULT="file=ffn.bin,off=1052672,len=1024,mode=fail,count=1;
 *                  file=dense.bin,len=1048576,mode=slow,ms=1000"
 */
#define IO_FAULT_MAX  16
#define IO_FAULT_NAME 64

typedef enum { FAULT_NONE = 0, FAULT_FAIL, FAULT_SHORT, FAULT_SLOW } fault_mode;

typedef struct {
    char       file[IO_FAULT_NAME];
    uint64_t   off, len;          /* len: UINT64_MAX - off for "to the end" */
    fault_mode mode;
    unsigned   ms;
    long long  count;             /* -1: unlimited */
} fault_spec;

/* The rules: written only by fault_install (at the first read, or by
 * io_fault_set in a test with no reads running); fault_n is published last.
 * left[i] counts down as rule i fires (-1: unlimited). */
static fault_spec     fault_rules[IO_FAULT_MAX];
static atomic_llong   fault_left[IO_FAULT_MAX];
static atomic_int     fault_n;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;

static int fault_number(const char *key, const char *v, uint64_t *out, ierr *err)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (!*v || *v == '-' || *end || errno)
        return ierr_set(err, -EINVAL, "INFLASH_FAULT: %s=%s: not a number", key, v);
    *out = (uint64_t)x;
    return 0;
}

/* One rule "file=...,mode=...[,...]" (text is modified). */
static int fault_parse_rule(char *text, fault_spec *r, ierr *err)
{
    *r = (fault_spec){ .len = UINT64_MAX, .ms = 200, .count = -1 };
    int have_len = 0;
    char *save = NULL;
    for (char *kv = strtok_r(text, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        kv += strspn(kv, " \t\n");           /* spaces around a pair are allowed */
        for (size_t n = strlen(kv); n > 0 && strchr(" \t\n", kv[n - 1]); n--)
            kv[n - 1] = '\0';
        char *eq = strchr(kv, '=');
        if (!eq)
            return ierr_set(err, -EINVAL, "INFLASH_FAULT: '%s': expected key=value", kv);
        *eq = '\0';
        const char *v = eq + 1;
        uint64_t x = 0;
        int rc = 0;
        if (strcmp(kv, "file") == 0) {
            if (!*v || strlen(v) >= IO_FAULT_NAME || strchr(v, '/'))
                return ierr_set(err, -EINVAL, "INFLASH_FAULT: file=%s: expected a base name like ffn.bin", v);
            strcpy(r->file, v);
        } else if (strcmp(kv, "mode") == 0) {
            r->mode = strcmp(v, "fail") == 0 ? FAULT_FAIL : strcmp(v, "short") == 0 ? FAULT_SHORT
                    : strcmp(v, "slow") == 0 ? FAULT_SLOW : FAULT_NONE;
            if (r->mode == FAULT_NONE)
                return ierr_set(err, -EINVAL, "INFLASH_FAULT: mode=%s: expected fail, short or slow", v);
        } else if (strcmp(kv, "off") == 0) {
            rc = fault_number(kv, v, &r->off, err);
        } else if (strcmp(kv, "len") == 0) {
            rc = fault_number(kv, v, &r->len, err);
            have_len = 1;
            if (rc == 0 && r->len == 0)
                return ierr_set(err, -EINVAL, "INFLASH_FAULT: len=0: the range is empty");
        } else if (strcmp(kv, "ms") == 0) {
            rc = fault_number(kv, v, &x, err);
            if (rc == 0 && x > 600000)
                return ierr_set(err, -EINVAL, "INFLASH_FAULT: ms=%s: at most 600000", v);
            r->ms = (unsigned)x;
        } else if (strcmp(kv, "count") == 0) {
            rc = fault_number(kv, v, &x, err);
            if (rc == 0 && (x == 0 || x > (uint64_t)1 << 62))
                return ierr_set(err, -EINVAL, "INFLASH_FAULT: count=%s: expected 1 or more", v);
            r->count = (long long)x;
        } else {
            return ierr_set(err, -EINVAL, "INFLASH_FAULT: unknown key '%s' (file, off, len, mode, ms, count)", kv);
        }
        if (rc < 0)
            return rc;
    }
    if (!r->file[0] || r->mode == FAULT_NONE)
        return ierr_set(err, -EINVAL, "INFLASH_FAULT: a rule needs file= and mode=");
    if (!have_len || r->len > UINT64_MAX - r->off)
        r->len = UINT64_MAX - r->off;
    return 0;
}

/* Parse spec and, if every rule is good, make it the rule set. */
static int fault_install(const char *spec, ierr *err)
{
    fault_spec rules[IO_FAULT_MAX];
    int n = 0;
    char *text = strdup(spec ? spec : "");
    if (!text)
        return ierr_set(err, -ENOMEM, "INFLASH_FAULT: out of memory");
    char *save = NULL;
    int rc = 0;
    for (char *rule = strtok_r(text, ";", &save); rule && rc == 0; rule = strtok_r(NULL, ";", &save)) {
        if (strspn(rule, " \t\n") == strlen(rule))
            continue;
        if (n == IO_FAULT_MAX)
            rc = ierr_set(err, -EINVAL, "INFLASH_FAULT: more than %d rules", IO_FAULT_MAX);
        else
            rc = fault_parse_rule(rule, &rules[n++], err);
    }
    free(text);
    if (rc < 0)
        return rc;
    atomic_store(&fault_n, 0);
    for (int i = 0; i < n; i++) {
        fault_rules[i] = rules[i];
        atomic_store(&fault_left[i], rules[i].count);
    }
    atomic_store(&fault_n, n);
    return 0;
}

static void fault_init(void)
{
    const char *spec = getenv("INFLASH_FAULT");
    if (!spec || !*spec)
        return;
    ierr err = IERR_INIT;
    if (fault_install(spec, &err) < 0)
        fprintf(stderr, "%s; fault injection is off\n", err.msg);
    else
        fprintf(stderr, "INFLASH_FAULT: %d fault injection rule(s) active\n", atomic_load(&fault_n));
}

int io_fault_set(const char *spec, ierr *err)
{
    pthread_once(&fault_once, fault_init);
    return fault_install(spec, err);
}

/* The hook, before a read of len bytes at off of path: FAULT_NONE (read
 * normally; a slow rule has already waited), FAULT_FAIL, or FAULT_SHORT with
 * *keep the bytes the read may return. */
static fault_mode fault_hook(const char *path, uint64_t off, uint64_t len, uint64_t *keep)
{
    pthread_once(&fault_once, fault_init);
    int n = atomic_load_explicit(&fault_n, memory_order_acquire);
    if (n == 0 || len == 0)
        return FAULT_NONE;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (int i = 0; i < n; i++) {
        const fault_spec *r = &fault_rules[i];
        if (strcmp(base, r->file) != 0 || off >= r->off + r->len || off + len <= r->off)
            continue;
        long long left = atomic_load(&fault_left[i]);
        while (left > 0 && !atomic_compare_exchange_weak(&fault_left[i], &left, left - 1))
            ;
        if (left == 0)
            continue;                       /* spent */
        if (r->mode == FAULT_SLOW) {
            struct timespec ts = { .tv_sec = r->ms / 1000, .tv_nsec = (long)(r->ms % 1000) * 1000000L };
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            return FAULT_NONE;
        }
        *keep = r->off > off ? r->off - off : 0;
        return r->mode;
    }
    return FAULT_NONE;
}

/* A short read injected after a read of got bytes: the bytes from keep on
 * become 0xA5 and the read returns keep (if it got that many). */
static ssize_t fault_cut(const struct iovec *iov, int iovcnt, ssize_t got, uint64_t keep)
{
    if (got <= 0 || (uint64_t)got <= keep)
        return got;
    uint64_t pos = 0;
    for (int i = 0; i < iovcnt && pos < (uint64_t)got; i++) {
        uint64_t a = pos, b = pos + iov[i].iov_len;
        if (b > (uint64_t)got)
            b = (uint64_t)got;
        if (b > keep) {
            uint64_t from = a > keep ? a : keep;
            memset((unsigned char *)iov[i].iov_base + (from - a), 0xA5, (size_t)(b - from));
        }
        pos += iov[i].iov_len;
    }
    return (ssize_t)keep;
}

ssize_t io_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t off, const char *path)
{
    uint64_t len = 0, keep = 0;
    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    fault_mode f = fault_hook(path, off, len, &keep);
    if (f == FAULT_FAIL)
        return -EIO;
    ssize_t r;
    do
        r = preadv(fd, iov, iovcnt, (off_t)off);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    return f == FAULT_SHORT ? fault_cut(iov, iovcnt, r, keep) : r;
}

int io_pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path, ierr *err)
{
    unsigned char *p = dst;
    while (len) {
        struct iovec iov = { .iov_base = p, .iov_len = len };
        ssize_t r = io_preadv(fd, &iov, 1, off, path);
        if (r < 0)
            return ierr_set(err, (int)r, "%s: read failed at byte %llu: %s", path, (unsigned long long)off,
                            strerror((int)-r));
        if (r == 0)
            return ierr_set(err, -EIO, "%s: unexpected end of file at byte %llu", path, (unsigned long long)off);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int io_pwrite_full(int fd, const void *src, size_t len, uint64_t off, const char *path, ierr *err)
{
    const unsigned char *p = src;
    while (len) {
        ssize_t r = pwrite(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ierr_set(err, -errno, "%s: write failed: %s", path, strerror(errno));
        if (r == 0)
            return ierr_set(err, -EIO, "%s: write failed: no progress", path);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

char *io_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int io_read_file(const char *path, size_t max_bytes, char **data, size_t *len, ierr *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) < 0)
        rc = ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = ierr_set(err, -EINVAL, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size > max_bytes)
        rc = ierr_set(err, -EFBIG, "%s: %lld bytes is over the %zu-byte limit", path, (long long)st.st_size,
                      max_bytes);
    else if (!(buf = malloc((size_t)st.st_size + 1)))
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", path);
    else
        rc = io_pread_full(fd, buf, (size_t)st.st_size, 0, path, err);
    close(fd);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[st.st_size] = '\0';
    *data = buf;
    *len = (size_t)st.st_size;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

int io_rm_tree(const char *path)
{
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int io_fsync_path(const char *path, int flags, ierr *err)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    int rc = fsync(fd) < 0 ? ierr_set(err, -errno, "%s: fsync: %s", path, strerror(errno)) : 0;
    close(fd);
    return rc;
}

int io_fsync_parent(const char *path, ierr *err)
{
    const char *slash = strrchr(path, '/');
    char *parent = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    int rc = parent ? io_fsync_path(parent, O_RDONLY | O_DIRECTORY, err) : ierr_set(err, -ENOMEM, "out of memory");
    free(parent);
    return rc;
}

static int rename_exchange(const char *a, const char *b)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28))
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
#else
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 1 /* RENAME_EXCHANGE */);
#endif
}

int io_swap_dir(const char *tmp, const char *dir, ierr *err)
{
    struct stat st;
    if (lstat(dir, &st) < 0) {
        if (errno != ENOENT)
            return ierr_set(err, -errno, "%s: %s", dir, strerror(errno));
        if (rename(tmp, dir) < 0)
            return ierr_set(err, -errno, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
        (void)io_fsync_parent(dir, err);
        return 0;
    }
    if (rename_exchange(tmp, dir) == 0) {
        /* The commit point: the new tree is at dir, the old one at tmp.
           What follows cannot undo it, so its errors are not the caller's:
           a failed fsync of the parent only risks the old tree reappearing
           after a crash, which is a consistent state too. */
        (void)io_fsync_parent(dir, err);
        io_rm_tree(tmp);
        return 0;
    }
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        return ierr_set(err, -errno, "%s: cannot swap in %s: %s", dir, tmp, strerror(errno));
    /* No RENAME_EXCHANGE here (kernel or file system): two renames. Not
       atomic: between them there is briefly nothing at dir, but at every
       moment a complete tree exists under one of the names, and a failed
       second rename puts the old one back. */
    size_t len = strlen(dir) + 32;
    char *old = malloc(len);
    if (!old)
        return ierr_set(err, -ENOMEM, "out of memory");
    snprintf(old, len, "%s.old.%ld", dir, (long)getpid());
    int rc = 0;
    if (rename(dir, old) < 0) {
        rc = ierr_set(err, -errno, "%s: cannot move the old tree away: %s", dir, strerror(errno));
    } else if (rename(tmp, dir) < 0) {
        rc = ierr_set(err, -errno, "%s: cannot rename %s into place: %s", dir, tmp, strerror(errno));
        rename(old, dir);
    } else {
        (void)io_fsync_parent(dir, err);
        io_rm_tree(old);
    }
    free(old);
    return rc;
}
