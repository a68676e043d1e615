/* killshim.c: an LD_PRELOAD library for tests/e2e_atomic.sh that turns
 * every call changing a file into a numbered kill point. It counts the calls
 * (write/pwrite to a descriptor above 2, fsync, fdatasync, ftruncate,
 * open/creat with O_CREAT, mkdir, rmdir, unlink, remove, link, rename,
 * renameat2) and, with INFLASH_KILL_AT=N, sends itself SIGKILL just before
 * the Nth one is made: exactly what a kill -9 at that moment leaves
 * (INFLASH_KILL_AT=CALL:N, e.g. pwrite:1, counts only that call). With
 * INFLASH_KILL_LOG=FILE every point is appended there as "N call path" (the
 * last line holds the total), so a first run measures how many points a
 * program has. Test code only: it is never linked into a program. */
#undef _FILE_OFFSET_BITS          /* define open and open64 as they are */
#define _GNU_SOURCE 1

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* the next definition of a libc function (after this library) */
#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

static long g_kill_at = -1;      /* from INFLASH_KILL_AT; -1: never */
static char g_kill_call[16];     /* its CALL, "" for any */
static int  g_log = -1;          /* INFLASH_KILL_LOG, O_APPEND; -1: none */
static long g_count;             /* points passed, atomically incremented */
static long g_call_count;        /* points of call g_kill_call passed */

__attribute__((constructor)) static void ks_init(void)
{
    const char *at = getenv("INFLASH_KILL_AT"), *log = getenv("INFLASH_KILL_LOG");
    const char *colon = at ? strchr(at, ':') : NULL;
    if (colon && (size_t)(colon - at) < sizeof g_kill_call) {
        memcpy(g_kill_call, at, (size_t)(colon - at));
        g_kill_at = strtol(colon + 1, NULL, 10);
    } else if (at && *at) {
        g_kill_at = strtol(at, NULL, 10);
    }
    if (log && *log) {
        g_log = REAL("open", int (*)(const char *, int, ...))(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
}

/* The descriptor's path, for the log ("?" if unknown). */
static void fd_path(int fd, char *buf, size_t cap)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, cap - 1);
    if (n < 0)
        n = snprintf(buf, cap, "?");
    buf[n] = '\0';
}

/* One kill point: die here when it is the chosen one, else log it. */
static void ks_point(const char *call, const char *path)
{
    long n = __atomic_add_fetch(&g_count, 1, __ATOMIC_SEQ_CST);
    if (!g_kill_call[0] && n == g_kill_at)
        raise(SIGKILL);
    if (g_kill_call[0] && strcmp(call, g_kill_call) == 0 &&
        __atomic_add_fetch(&g_call_count, 1, __ATOMIC_SEQ_CST) == g_kill_at)
        raise(SIGKILL);
    if (g_log >= 0) {
        char line[4200];
        int len = snprintf(line, sizeof line, "%ld %s %s\n", n, call, path ? path : "-");
        ssize_t (*real_write)(int, const void *, size_t) = REAL("write", ssize_t (*)(int, const void *, size_t));
        if (len > 0)   /* best effort */
            (void)real_write(g_log, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
    }
}

static void ks_fd_point(const char *call, int fd)
{
    char path[4096];
    fd_path(fd, path, sizeof path);
    ks_point(call, path);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (fd > 2 && fd != g_log)
        ks_fd_point("write", fd);
    return REAL("write", ssize_t (*)(int, const void *, size_t))(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ks_fd_point("pwrite", fd);
    return REAL("pwrite", ssize_t (*)(int, const void *, size_t, off_t))(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    ks_fd_point("pwrite", fd);
    return REAL("pwrite64", ssize_t (*)(int, const void *, size_t, off64_t))(fd, buf, n, off);
}

int fsync(int fd)
{
    ks_fd_point("fsync", fd);
    return REAL("fsync", int (*)(int))(fd);
}

int fdatasync(int fd)
{
    ks_fd_point("fdatasync", fd);
    return REAL("fdatasync", int (*)(int))(fd);
}

int ftruncate(int fd, off_t len)
{
    ks_fd_point("ftruncate", fd);
    return REAL("ftruncate", int (*)(int, off_t))(fd, len);
}

int ftruncate64(int fd, off64_t len)
{
    ks_fd_point("ftruncate", fd);
    return REAL("ftruncate64", int (*)(int, off64_t))(fd, len);
}

/* open, open64, openat, openat64: a point only when they may create */
#define OPEN_SHIM(name, ...)                                                           \
    {                                                                                  \
        mode_t mode = 0;                                                               \
        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {                                           \
            va_list ap;                                                                \
            va_start(ap, flags);                                                       \
            mode = (mode_t)va_arg(ap, int);                                            \
            va_end(ap);                                                                \
            ks_point(name, path);                                                      \
        }                                                                              \
        return __VA_ARGS__;                                                            \
    }

int open(const char *path, int flags, ...)
    OPEN_SHIM("open", REAL("open", int (*)(const char *, int, ...))(path, flags, mode))
int open64(const char *path, int flags, ...)
    OPEN_SHIM("open", REAL("open64", int (*)(const char *, int, ...))(path, flags, mode))
int openat(int dirfd, const char *path, int flags, ...)
    OPEN_SHIM("open", REAL("openat", int (*)(int, const char *, int, ...))(dirfd, path, flags, mode))
int openat64(int dirfd, const char *path, int flags, ...)
    OPEN_SHIM("open", REAL("openat64", int (*)(int, const char *, int, ...))(dirfd, path, flags, mode))

int creat(const char *path, mode_t mode)
{
    ks_point("open", path);
    return REAL("creat", int (*)(const char *, mode_t))(path, mode);
}

int mkdir(const char *path, mode_t mode)
{
    ks_point("mkdir", path);
    return REAL("mkdir", int (*)(const char *, mode_t))(path, mode);
}

int rmdir(const char *path)
{
    ks_point("rmdir", path);
    return REAL("rmdir", int (*)(const char *))(path);
}

int unlink(const char *path)
{
    ks_point("unlink", path);
    return REAL("unlink", int (*)(const char *))(path);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    ks_point("unlink", path);
    return REAL("unlinkat", int (*)(int, const char *, int))(dirfd, path, flags);
}

int remove(const char *path)
{
    ks_point("remove", path);
    return REAL("remove", int (*)(const char *))(path);
}

int link(const char *from, const char *to)
{
    ks_point("link", to);
    return REAL("link", int (*)(const char *, const char *))(from, to);
}

int rename(const char *from, const char *to)
{
    ks_point("rename", to);
    return REAL("rename", int (*)(const char *, const char *))(from, to);
}

int renameat2(int fromfd, const char *from, int tofd, const char *to, unsigned int flags)
{
    ks_point("renameat2", to);
    return REAL("renameat2", int (*)(int, const char *, int, const char *, unsigned int))(fromfd, from, tofd, to,
                                                                                          flags);
}
