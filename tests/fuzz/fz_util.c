/* fz_util.c: helpers shared by the libFuzzer targets (fz_util.h). */
#include "fz_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef INFLASH_FUZZ_SHARED
#define INFLASH_FUZZ_SHARED "../shared"
#endif

#define FZ_PIECE_CAP (65536 + 64)   /* above the tokenizer's longest piece */

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

uint8_t fz_u8(fz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

uint64_t fz_uint(fz_in *in, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes && i < 8; i++)
        v |= (uint64_t)fz_u8(in) << (8 * i);
    return v;
}

size_t fz_take(fz_in *in, size_t max, const uint8_t **out)
{
    size_t k = max < in->n ? max : in->n;
    *out = in->p;
    in->p += k;
    in->n -= k;
    return k;
}

/* ---- scratch directories --------------------------------------------------- */

static char *g_dirs[8];       /* made by fz_tmpdir; removed at exit */
static int   g_ndirs;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void fz_rm_tree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void rm_dirs(void)
{
    for (int i = 0; i < g_ndirs; i++) {
        fz_rm_tree(g_dirs[i]);
        free(g_dirs[i]);
    }
    g_ndirs = 0;
}

char *fz_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char path[4096];
    if (!base || !*base)
        base = "/tmp";
    snprintf(path, sizeof path, "%s/inflash-%s.XXXXXX", base, tag);
    if (!mkdtemp(path) || g_ndirs == (int)(sizeof g_dirs / sizeof *g_dirs)) {
        fprintf(stderr, "fuzz: cannot make a scratch directory %s: %s\n", path, strerror(errno));
        abort();
    }
    if (g_ndirs == 0)
        atexit(rm_dirs);
    g_dirs[g_ndirs] = strdup(path);
    if (!g_dirs[g_ndirs])
        abort();
    return g_dirs[g_ndirs++];
}

/* ---- files ------------------------------------------------------------------ */

void fz_write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *p = data;
    if (fd < 0) {
        fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
        abort();
    }
    while (len) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            fprintf(stderr, "fuzz: writing %s: %s\n", path, strerror(errno));
            abort();
        }
        p += k;
        len -= (size_t)k;
    }
    close(fd);
}

char *fz_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "fuzz: cannot read %s: %s\n", path, strerror(errno));
        abort();
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

char *fz_shared_path(const char *rel)
{
    const char *base = getenv("INFLASH_SHARED");
    char *out;
    if (!base || !*base)
        base = INFLASH_FUZZ_SHARED;
    if (asprintf(&out, "%s/%s", base, rel) < 0)
        abort();
    return out;
}

/* ---- UTF-8 and decoding ------------------------------------------------------ */

int fz_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else return 0;
        if (n - i - 1 < need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            unsigned b = s[i + k];
            if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF))
                return 0;
        }
        i += need + 1;
    }
    return 1;
}

/* a growing byte buffer */
typedef struct {
    char  *p;
    size_t n, cap;
} gbuf;

static void gbuf_add(gbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n)
            c *= 2;
        if (!(b->p = realloc(b->p, c)))
            abort();
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

char *fz_stream_decode(const tok *t, const int32_t *ids, size_t n, const uint8_t *caps, size_t ncaps,
                       size_t *len)
{
    tok_stream s;
    gbuf out = { 0 }, cat = { 0 };
    char *chunk = malloc(FZ_PIECE_CAP);
    unsigned char *piece = malloc(FZ_PIECE_CAP);
    int strip;
    if (!chunk || !piece)
        abort();
    tok_stream_init(&s, t);
    strip = s.first;
    for (size_t i = 0; i < n; i++) {
        size_t c = ncaps ? caps[i % ncaps] : FZ_PIECE_CAP;
        size_t k = tok_stream_put(&s, ids[i], chunk, c);
        FZ_CHECK(k <= c, "tok_stream_put wrote %zu bytes into %zu", k, c);
        gbuf_add(&out, chunk, k);
        if (!ncaps) {
            int pn = tok_piece_bytes(t, ids[i], piece, FZ_PIECE_CAP);
            FZ_CHECK(pn >= -1 && pn <= FZ_PIECE_CAP, "tok_piece_bytes gave %d", pn);
            if (pn > 0) {
                const unsigned char *p = piece;
                if (strip && p[0] == ' ') {
                    p++;
                    pn--;
                }
                strip = 0;
                gbuf_add(&cat, p, (size_t)pn);
            }
        }
    }
    size_t k = tok_stream_end(&s, chunk, FZ_PIECE_CAP);
    gbuf_add(&out, chunk, k);
    gbuf_add(&out, "", 1);                 /* NUL, not counted */
    out.n--;
    FZ_CHECK(fz_utf8_valid((unsigned char *)out.p, out.n), "stream decode of %zu ids gave invalid UTF-8", n);
    if (!ncaps && fz_utf8_valid((unsigned char *)cat.p, cat.n))
        FZ_CHECK(out.n == cat.n && (!out.n || memcmp(out.p, cat.p, out.n) == 0),
                 "stream decode (%zu bytes) differs from the pieces (%zu bytes)", out.n, cat.n);
    free(cat.p);
    free(piece);
    free(chunk);
    *len = out.n;
    return out.p;
}
