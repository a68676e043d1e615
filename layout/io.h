/* io.h: small file helpers shared inside layout/ and by the tools: full
 * pread/pwrite with EINTR and short-transfer handling, path joining, and
 * reading a whole (bounded) file. Errors follow ierr.h and name the path. */
#ifndef INFLASH_IO_H
#define INFLASH_IO_H

#include <stddef.h>
#include <stdint.h>

#include "ierr.h"

/* Read exactly len bytes at off; end of file first is -EIO "unexpected end". */
int io_pread_full(int fd, void *dst, size_t len, uint64_t off, const char *path, ierr *err);
/* Write exactly len bytes at off. */
int io_pwrite_full(int fd, const void *src, size_t len, uint64_t off, const char *path, ierr *err);
/* "dir/name", malloc'd; NULL when out of memory. */
char *io_join(const char *dir, const char *name);
/* The whole file, malloc'd and NUL-terminated (the NUL not counted in *len);
 * files over max_bytes are an error. */
int io_read_file(const char *path, size_t max_bytes, char **data, size_t *len, ierr *err);

#endif
