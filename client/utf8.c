/* utf8.c: UTF-8 decoding and validation, and GPT-2's byte-to-character
 * map (utf8.h). */
#include "utf8.h"

#include <stdbool.h>

/* Table 3-7: the lead byte fixes the length and the range of the second
 * byte; the others are 80..BF. */
int utf8_scan(const unsigned char *s, size_t n, size_t *adv)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;

    if (c < 0x80) {
        *adv = 1;
        return U8_OK;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *adv = 1;
        return U8_BAD;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *adv = n;
            return U8_SHORT;
        }
        if (s[i] < lo || s[i] > hi) {
            *adv = i;
            return U8_BAD;
        }
        lo = 0x80;
        hi = 0xBF;
    }
    *adv = need;
    return U8_OK;
}

/* Byte offset of the first invalid or unfinished sequence, or len. */
size_t utf8_check(const unsigned char *s, size_t len)
{
    size_t i = 0, adv;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (utf8_scan(s + i, len - i, &adv) != U8_OK)
            return i;
        i += adv;
    }
    return len;
}

/* The code point of a valid sequence of len bytes. */
uint32_t utf8_cp(const unsigned char *s, size_t len)
{
    static const unsigned char lead_mask[5] = { 0, 0x7F, 0x1F, 0x0F, 0x07 };
    uint32_t cp = s[0] & lead_mask[len];
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

/* Write cp (< 0x110000) as UTF-8; returns the length (1-4). */
size_t utf8_put(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

uint32_t utf8_gpt2_char(unsigned b)
{
    unsigned n = 0;
    for (unsigned x = 0; x < 256; x++) {
        bool printable = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
        if (x == b)
            return printable ? x : 256 + n;
        if (!printable)
            n++;
    }
    return 0;
}
