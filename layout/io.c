/* io.c: full pread/pwrite, path joining and whole-file reads (io.h). */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <ftw.h>
#include <stdio.h>

int io_pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path, ierr *err)
{
    unsigned char *p = dst;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ierr_set(err, -errno, "%s: read failed: %s", path, strerror(errno));
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
