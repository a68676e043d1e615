/* error.c: formatting of error messages for the ierr convention (error.h). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void ierr_format(ierr *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
}

/* Append s to dst[*used..] without passing the terminating NUL of a
 * buffer of IERR_LEN bytes. */
static void append(char *dst, size_t *used, const char *s)
{
    size_t len = strlen(s), room = IERR_LEN - 1 - *used;
    if (len > room)
        len = room;
    memcpy(dst + *used, s, len);
    *used += len;
    dst[*used] = '\0';
}

void ierr_prefix(ierr *err, const char *fmt, ...)
{
    if (err) {
        char prefix[IERR_LEN], old[IERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        old[IERR_LEN - 1] = '\0';
        size_t used = 0;
        append(err->msg, &used, prefix);
        append(err->msg, &used, ": ");
        append(err->msg, &used, old);
    }
}
