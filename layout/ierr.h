/* ierr.h: the one error convention of inflash. A function that can fail
 * takes an `ierr *` last, returns 0 on success or a negative errno on
 * failure, and on failure leaves a one-line message (naming the file and the
 * problem, no trailing newline) in err->msg. err may be NULL. */
#ifndef INFLASH_IERR_H
#define INFLASH_IERR_H

#include <stddef.h>

#define IERR_LEN 512

typedef struct {
    char msg[IERR_LEN];
} ierr;

/* Format the message into err (if non-NULL) and return rc (a negative
 * errno, passed through) so callers can write `return ierr_set(e, -EIO, ...)`. */
int ierr_set(ierr *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message: "prefix: old message". Returns rc. */
int ierr_wrap(ierr *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
