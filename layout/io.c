/* io.c: full pread/pwrite, path joining and whole-file reads (io.h). */
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
