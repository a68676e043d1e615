/* utf8.h: UTF-8 decoding and validation by Unicode's rules (Table 3-7: no
 * overlongs, surrogates or code points above U+10FFFF), and GPT-2's map of
 * bytes to characters. Pure functions of their arguments. */
#ifndef INFLASH_UTF8_H
#define INFLASH_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum { U8_OK, U8_SHORT, U8_BAD };   /* what utf8_scan found */

/* Classify the bytes s[0..n), n >= 1. U8_OK: a complete character of *adv
 * bytes. U8_SHORT: a valid but unfinished prefix (all n bytes). U8_BAD:
 * *adv (>= 1) bytes form a maximal invalid subpart. */
int utf8_scan(const unsigned char *s, size_t n, size_t *adv);
/* Byte offset of the first invalid or unfinished sequence, or len. */
size_t utf8_check(const unsigned char *s, size_t len);
/* The code point of a valid sequence of len (1-4) bytes. */
uint32_t utf8_cp(const unsigned char *s, size_t len);
/* Write cp (< 0x110000) as UTF-8 into out[0..4); returns the length (1-4). */
size_t utf8_put(uint32_t cp, unsigned char *out);

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. Every result is below
 * UTF8_GPT2_LIMIT. */
#define UTF8_GPT2_LIMIT 324
uint32_t utf8_gpt2_char(unsigned b);

#endif
