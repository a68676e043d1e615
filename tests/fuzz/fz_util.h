/* fz_util.h: helpers shared by the libFuzzer targets in tests/fuzz/: a
 * reader that turns the fuzzer's bytes into choices, scratch directories
 * that are removed at exit, whole-file reads and writes that abort on
 * failure (a harness problem, not a finding), an independent UTF-8 check,
 * and a streaming decode of token ids that checks the decoder's promise of
 * complete UTF-8. A harness aborts (FZ_CHECK) only when the code under test
 * breaks a promise of its header. */
#ifndef INFLASH_FZ_UTIL_H
#define INFLASH_FZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "tok.h"

/* A broken promise of the code under test: print what and abort, so
 * libFuzzer saves the input. */
#define FZ_CHECK(cond, ...) \
    do { if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* The fuzzer's bytes, consumed front to back; past the end every read is 0. */
typedef struct {
    const uint8_t *p;
    size_t         n;
} fz_in;

uint8_t  fz_u8(fz_in *in);
uint64_t fz_uint(fz_in *in, int bytes);           /* little-endian, bytes <= 8 */
/* Up to max bytes (fewer at the end): *out points into the input. */
size_t   fz_take(fz_in *in, size_t max, const uint8_t **out);

/* A fresh directory under $TMPDIR (or /tmp) that is removed with its
 * contents when the process exits normally. Aborts on failure. */
char *fz_tmpdir(const char *tag);
/* Remove a path and everything below it (no error if it is missing). */
void  fz_rm_tree(const char *path);
/* Write a whole file (create or truncate); aborts on failure. */
void  fz_write_file(const char *path, const void *data, size_t len);
/* Read a whole file (malloc'd, NUL-terminated); aborts on failure. */
char *fz_read_file(const char *path, size_t *len);
/* "<shared>/rel": $INFLASH_SHARED, else the shared/ folder configured at
 * build time; malloc'd. */
char *fz_shared_path(const char *rel);

/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates, > U+10FFFF). */
int fz_utf8_valid(const unsigned char *s, size_t n);

/* Decode ids with tok_stream (put i with the capacity caps[i % ncaps], or
 * one that fits any piece when ncaps is 0) into a malloc'd buffer (*len
 * bytes). Checks that the output is valid UTF-8 and, with capacities that
 * fit, that it is the concatenated tok_piece_bytes (less the one leading
 * space a SentencePiece decoder strips) whenever those are valid UTF-8. */
char *fz_stream_decode(const tok *t, const int32_t *ids, size_t n, const uint8_t *caps, size_t ncaps,
                       size_t *len);

#endif
