/* error.h: the one error convention of inflash. A function that can fail
 * takes an `ierr *` last, returns 0 on success or a negative errno on
 * failure, and on failure leaves a one-line message (naming the file and the
 * problem, no trailing newline) in err->msg. err may be NULL.
 *
 * The idiom is `return ierr_set(err, -EIO, "%s: short read", path);`.
 * ierr_set and ierr_wrap are macros that evaluate to their rc argument, so
 * the compiler sees the value a failing path returns (a function call
 * returning an opaque int hid it, and gcc then warned that outputs of the
 * success path might be used uninitialised on the failure path).
 *
 * Every local `ierr` starts as IERR_INIT (an empty message), so printing
 * err.msg is safe even when a callee failed without setting it. */
#ifndef INFLASH_ERROR_H
#define INFLASH_ERROR_H

#include <stddef.h>

#define IERR_LEN 512

typedef struct {
    char msg[IERR_LEN];
} ierr;

#define IERR_INIT { { 0 } }

/* Write the formatted message into err (nothing if err is NULL). */
void ierr_format(ierr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix err's message: "prefix: old message" (nothing if err is NULL). */
void ierr_prefix(ierr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ierr_set(err, rc, fmt, ...): set the message, evaluate to rc (a negative
 * errno, passed through). ierr_wrap(err, rc, fmt, ...): prefix the message,
 * evaluate to rc. rc is evaluated once, after the message is written. */
static inline int ierr_rc(int rc) { return rc; }   /* a call, so a bare statement is no unused value */
#define ierr_set(err, rc, ...)  (ierr_format((err), __VA_ARGS__), ierr_rc(rc))
#define ierr_wrap(err, rc, ...) (ierr_prefix((err), __VA_ARGS__), ierr_rc(rc))

#endif
