/* io.h: small file helpers shared inside layout/ and by the tools: full
 * pread/pwrite with EINTR and short-transfer handling, path joining, and
 * reading a whole (bounded) file. Errors follow error.h and name the path.
 * The store read path (io_pread_full, io_preadv) carries the fault
 * injection test hook INFLASH_FAULT (io.c). */
#ifndef INFLASH_IO_H
#define INFLASH_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "error.h"

/* Read exactly len bytes at off; end of file first is -EIO "unexpected end". */
int io_pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path, ierr *err);
/* One preadv at off (EINTR retried): the bytes read, which may be fewer
 * than asked, or -errno. path names the file for the fault hook only. */
ssize_t io_preadv(int fd, const struct iovec *iov, int iovcnt, uint64_t off, const char *path);
/* Replace the INFLASH_FAULT rules (io.c) with spec (NULL or "": none), as if
 * the variable held it; -EINVAL with err naming the bad rule (the old rules
 * stay). For tests: not safe while other threads read. */
int io_fault_set(const char *spec, ierr *err);
/* Write exactly len bytes at off. */
int io_pwrite_full(int fd, const void *src, size_t len, uint64_t off, const char *path, ierr *err);
/* "dir/name", malloc'd; NULL when out of memory. */
char *io_join(const char *dir, const char *name);
/* The whole file, malloc'd and NUL-terminated (the NUL not counted in *len);
 * files over max_bytes are an error. */
int io_read_file(const char *path, size_t max_bytes, char **data, size_t *len, ierr *err);

/* Remove a directory tree, not following symlinks; 0 or -1 (errno set). */
int io_rm_tree(const char *path);
/* open(path, flags) + fsync. */
int io_fsync_path(const char *path, int flags, ierr *err);
/* fsync the directory that holds path (after a rename in it). */
int io_fsync_parent(const char *path, ierr *err);
/* Put the finished tree tmp at dir. If dir exists, the two are swapped
 * atomically (renameat2 RENAME_EXCHANGE; two renames where the file system
 * lacks it) and the old tree is removed. 0 means the new tree is in place
 * (the commit point); on error nothing was changed. */
int io_swap_dir(const char *tmp, const char *dir, ierr *err);

#endif
