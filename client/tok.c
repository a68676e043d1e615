/* tok.c: the tokenizers of tok.h. GPT-2 byte-level BPE from vocab.json +
 * merges.txt, and tokenizer.json BPE (SentencePiece-style with byte
 * fallback, or byte-level), plus the streaming decoder that only emits
 * complete UTF-8.
 *
 * Encoding runs in four steps:
 *   1. the input is checked to be valid UTF-8;
 *   2. text rules rewrite it (normalizer Prepend/Replace, Metaspace's
 *      replacement and prefix, ByteLevel's add_prefix_space);
 *   3. it is split into words (a regex: matches and the gaps between them
 *      are words; or Metaspace: a word starts at each replacement mark; or
 *      not at all);
 *   4. each word becomes symbols (byte-level: one per byte; otherwise one per
 *      character, with byte fallback <0xNN> or unk), and BPE merges adjacent
 *      symbols by rank.
 * BPE has two orders. GPT-2's bpe() merges every occurrence of the best pair
 * at once, left to right (batch_merges); HF tokenizers merges one pair at a
 * time, by rank and then position. They agree whenever each merge's parts
 * come from earlier merges (true of trained merge lists), and differ on
 * lists ordered otherwise, such as merges derived from SentencePiece scores.
 *
 * Text that spells a special token ("<s>", "</s>") is encoded as plain text.
 * It is never turned into the control token. This is what SentencePiece and
 * llama2.c do. HF tokenizers matches such text instead. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "tok.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <pcre2.h>

#define TOK_PIECE_MAX 65536u         /* longest token string accepted, bytes */
#define TOK_IDS_MAX   (INT32_MAX / 4) /* largest vocabulary accepted */
#define TOK_RULES_MAX 8              /* text rules (normalizer steps etc.) */
#define TOK_GROWTH_MAX 16u           /* text rules lengthen a text at most this many
                                        times (+ 4 KiB): a few KB of tokenizer.json
                                        must not turn a prompt into gigabytes */

/* GPT-2's pre-tokenizer (also HF ByteLevel's with use_regex). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---------------------------------------------------------------- UTF-8 */

enum { U8_OK, U8_SHORT, U8_BAD };

/* Classify the bytes s[0..n), n >= 1, by Unicode's Table 3-7 (no overlongs,
 * surrogates or code points above U+10FFFF). U8_OK: a complete character of
 * *adv bytes. U8_SHORT: a valid but unfinished prefix (all n bytes).
 * U8_BAD: *adv (>= 1) bytes form a maximal invalid subpart. */
static int utf8_scan(const unsigned char *s, size_t n, size_t *adv)
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
static size_t utf8_check(const unsigned char *s, size_t len)
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
static uint32_t utf8_cp(const unsigned char *s, size_t len)
{
    static const unsigned char lead_mask[5] = { 0, 0x7F, 0x1F, 0x0F, 0x07 };
    uint32_t cp = s[0] & lead_mask[len];
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

/* Write cp (< 0x110000) as UTF-8; returns the length (1-4). */
static size_t utf8_put(uint32_t cp, unsigned char *out)
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

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
#define B2U_LIMIT 324   /* every mapped code point is below this */

static uint32_t b2u(unsigned b)
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

/* --------------------------------------------------------- the tokenizer */

typedef struct {
    size_t off, len;    /* bytes arena[off, off+len) */
} span;

typedef struct {
    uint64_t key;       /* left << 32 | right; UINT64_MAX = empty slot */
    int32_t  rank, id;  /* merge rank and the merged token */
} pairent;

enum { RULE_PREPEND, RULE_PREPEND_UNLESS, RULE_REPLACE };

typedef struct {
    int  kind;
    span a, b;          /* PREPEND*: a = text; REPLACE: a -> b */
} rule;

enum {
    TF_VOCAB   = 1,     /* in the model vocabulary (encoding looks it up) */
    TF_SPECIAL = 2,     /* a control token: decodes to nothing */
    TF_MADE    = 4,     /* a byte symbol or the result of a merge */
    TF_ADDED   = 8,     /* defined by tokenizer.json's added_tokens */
};

/* Immutable once tok_new_* returns, so any number of threads may encode and
 * decode with it at once without locks. It owns every array and string
 * below (tok_free releases them). */
struct tok {
    tok_scheme scheme;
    int64_t n;              /* every id in [0, n) is defined */
    char   *arena;          /* owns every string a span points into */
    size_t  alen, acap;
    span   *piece;          /* [n] the token as the vocabulary spells it */
    span   *dec;            /* [n] the raw bytes it decodes to */
    unsigned char *flag;    /* [n] TF_* */
    int32_t *pmap;          /* [pmask+1] piece -> id over TF_VOCAB ids, -1 = empty */
    size_t   pmask;
    pairent *mmap;          /* [mmask+1] (left, right) -> (rank, merged id) */
    size_t   mmask;
    int32_t  byte_sym[256]; /* byte-level: id of each byte's symbol, -1 none */
    int32_t  fallback[256]; /* byte fallback: id of <0xNN>, -1 none */
    bool     bytelevel;     /* words start as bytes, not characters */
    bool     byte_fallback, fuse_unk, ignore_merges;
    bool     batch_merges;  /* GPT-2 merge order (see the top of the file) */
    int32_t  unk;           /* -1: none */
    rule     rules[TOK_RULES_MAX];
    size_t   nrules;
    pcre2_code *re;         /* split by regex (owned), or NULL */
    bool     split_mark;    /* split before each occurrence of mark */
    span     mark;
    bool     strip_first;   /* decoder drops one leading space (Strip) */
};

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 31);
}

static const char *span_ptr(const tok *t, span s)
{
    return t->arena + s.off;
}

/* Copy n bytes into the arena; *s gets their place. */
static int arena_add(tok *t, const void *p, size_t n, span *s, ierr *err)
{
    if (n > SIZE_MAX / 2 - t->alen)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    if (!t->arena || t->alen + n > t->acap) {
        size_t cap = t->acap ? t->acap : 4096;
        while (cap < t->alen + n)
            cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a)
            return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
        t->arena = a;
        t->acap = cap;
    }
    if (n)
        memcpy(t->arena + t->alen, p, n);
    s->off = t->alen;
    s->len = n;
    t->alen += n;
    return 0;
}

static size_t pow2_above(size_t n)
{
    size_t c = 16;
    while (c < 2 * n)
        c *= 2;
    return c;
}

static int32_t piece_id(const tok *t, const void *p, size_t n)
{
    if (!t->pmap)
        return -1;
    for (size_t i = hash_bytes(p, n) & t->pmask;; i = (i + 1) & t->pmask) {
        int32_t id = t->pmap[i];
        if (id < 0)
            return -1;
        if (t->piece[id].len == n && memcmp(span_ptr(t, t->piece[id]), p, n) == 0)
            return id;
    }
}

/* Index the model vocabulary (its pieces are unique: JSON object keys). */
static int build_pmap(tok *t, ierr *err)
{
    size_t cap = pow2_above((size_t)t->n);
    t->pmap = malloc(cap * sizeof *t->pmap);
    if (!t->pmap)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    memset(t->pmap, 0xFF, cap * sizeof *t->pmap);
    t->pmask = cap - 1;
    for (int64_t id = 0; id < t->n; id++) {
        span s = t->piece[id];
        if (!(t->flag[id] & TF_VOCAB))
            continue;
        size_t i = hash_bytes(span_ptr(t, s), s.len) & t->pmask;
        while (t->pmap[i] >= 0)
            i = (i + 1) & t->pmask;
        t->pmap[i] = (int32_t)id;
    }
    return 0;
}

static bool pair_get(const tok *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    if (!t->mmap)
        return false;
    for (size_t i = hash_pair(key) & t->mmask;; i = (i + 1) & t->mmask) {
        if (t->mmap[i].key == UINT64_MAX)
            return false;
        if (t->mmap[i].key == key) {
            *rank = t->mmap[i].rank;
            *id = t->mmap[i].id;
            return true;
        }
    }
}

static int mmap_alloc(tok *t, size_t nmerges, ierr *err)
{
    size_t cap = pow2_above(nmerges);
    t->mmap = malloc(cap * sizeof *t->mmap);
    if (!t->mmap)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < cap; i++)
        t->mmap[i].key = UINT64_MAX;
    t->mmask = cap - 1;
    return 0;
}

/* A short printable rendering of a token for error messages. */
static const char *quote(const char *s, size_t n, char *buf, size_t cap)
{
    size_t w = 0, i;
    for (i = 0; i < n && w + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\')
            buf[w++] = (char)c;
        else
            w += (size_t)snprintf(buf + w, cap - w, "\\x%02x", c);
    }
    if (i < n)
        memcpy(buf + w, "...", 4);
    else
        buf[w] = 0;
    return buf;
}

/* Merge `a b` at `rank`: both parts and their concatenation must be in the
 * model vocabulary (HF rejects the file otherwise). A repeated pair takes
 * the later rank, as both GPT-2's dict and HF's map do. */
static int add_merge(tok *t, const char *a, size_t alen, const char *b, size_t blen,
                     size_t rank, const char *where, ierr *err)
{
    char q[64], cat[2 * 64];
    int32_t ia = piece_id(t, a, alen), ib = piece_id(t, b, blen), ir;

    if (alen == 0 || blen == 0)
        return ierr_set(err, -EINVAL, "%s: a merge needs two non-empty tokens", where);
    if (ia < 0)
        return ierr_set(err, -EINVAL, "%s: \"%s\" is not in the vocabulary", where,
                        quote(a, alen, q, sizeof q));
    if (ib < 0)
        return ierr_set(err, -EINVAL, "%s: \"%s\" is not in the vocabulary", where,
                        quote(b, blen, q, sizeof q));
    if (rank > INT32_MAX)
        return ierr_set(err, -EINVAL, "%s: too many merges", where);
    if (alen + blen > TOK_PIECE_MAX)
        return ierr_set(err, -EINVAL, "%s: the merged token is too long", where);
    char *m = malloc(alen + blen);
    if (!m)
        return ierr_set(err, -ENOMEM, "%s: out of memory", where);
    memcpy(m, a, alen);
    memcpy(m + alen, b, blen);
    ir = piece_id(t, m, alen + blen);
    if (ir < 0) {
        quote(m, alen + blen, cat, sizeof cat);
        free(m);
        return ierr_set(err, -EINVAL, "%s: the merged token \"%s\" is not in the vocabulary",
                        where, cat);
    }
    free(m);

    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t i = hash_pair(key) & t->mmask;
    while (t->mmap[i].key != UINT64_MAX && t->mmap[i].key != key)
        i = (i + 1) & t->mmask;
    t->mmap[i].key = key;
    t->mmap[i].rank = (int32_t)rank;
    t->mmap[i].id = ir;
    t->flag[ir] |= TF_MADE;
    return 0;
}

/* A merge written "a b" (exactly one space). */
static int add_merge_str(tok *t, const char *s, size_t n, size_t rank, const char *where,
                         ierr *err)
{
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
        return ierr_set(err, -EINVAL, "%s: expected two tokens separated by one space", where);
    return add_merge(t, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, rank, where, err);
}

static tok *tok_alloc(void)
{
    tok *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->unk = -1;
    for (int b = 0; b < 256; b++)
        t->byte_sym[b] = t->fallback[b] = -1;
    return t;
}

void tok_free(tok *t)
{
    if (!t)
        return;
    free(t->arena);
    free(t->piece);
    free(t->dec);
    free(t->flag);
    free(t->pmap);
    free(t->mmap);
    pcre2_code_free(t->re);
    free(t);
}

/* Size the per-id tables for n ids. */
static int alloc_ids(tok *t, int64_t n, ierr *err)
{
    t->n = n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->dec = calloc((size_t)n, sizeof *t->dec);
    t->flag = calloc((size_t)n, 1);
    if (!t->piece || !t->dec || !t->flag)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    return 0;
}

/* The model vocabulary: an object piece -> id, ids unique and in [0, t->n). */
static int load_vocab(tok *t, json_t *obj, const char *what, ierr *err)
{
    const char *key;
    json_t *val;
    char q[64];

    json_object_foreach(obj, key, val) {
        size_t klen = strlen(key);
        if (!json_is_integer(val))
            return ierr_set(err, -EINVAL, "%s: the id of \"%s\" is not an integer", what,
                            quote(key, klen, q, sizeof q));
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= t->n)
            return ierr_set(err, -EINVAL, "%s: id %lld of \"%s\" is outside [0, %lld)", what,
                            (long long)id, quote(key, klen, q, sizeof q), (long long)t->n);
        if (t->flag[id] & TF_VOCAB)
            return ierr_set(err, -EINVAL, "%s: id %lld is used twice", what, (long long)id);
        if (klen > TOK_PIECE_MAX)
            return ierr_set(err, -EINVAL, "%s: token %lld is longer than %u bytes", what,
                            (long long)id, TOK_PIECE_MAX);
        int rc = arena_add(t, key, klen, &t->piece[id], err);
        if (rc < 0)
            return rc;
        t->flag[id] |= TF_VOCAB;
    }
    return 0;
}

static int compile_re(tok *t, const char *pat, size_t len, uint32_t extra, const char *where,
                      ierr *err)
{
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | extra, &ec, &eo, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return ierr_set(err, -EINVAL, "%s: regex error at offset %zu: %s", where, (size_t)eo,
                        (const char *)msg);
    }
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);   /* optional: speed only */
    return 0;
}

static int add_rule(tok *t, int kind, const char *a, size_t alen, const char *b, size_t blen,
                    ierr *err)
{
    if (t->nrules == TOK_RULES_MAX)
        return ierr_set(err, -EINVAL, "tokenizer.json: more than %d normalizer/pre-tokenizer steps",
                        TOK_RULES_MAX);
    rule *r = &t->rules[t->nrules];
    int rc = arena_add(t, a, alen, &r->a, err);
    if (rc == 0)
        rc = arena_add(t, b, blen, &r->b, err);
    if (rc < 0)
        return rc;
    r->kind = kind;
    t->nrules++;
    return 0;
}

/* byte-level symbols: the id of each byte's bytes_to_unicode character. */
static void find_byte_symbols(tok *t)
{
    for (unsigned b = 0; b < 256; b++) {
        unsigned char u[4];
        size_t n = utf8_put(b2u(b), u);
        t->byte_sym[b] = piece_id(t, u, n);
        if (t->byte_sym[b] >= 0)
            t->flag[t->byte_sym[b]] |= TF_MADE;
    }
}

/* The bytes each token decodes to (t->dec), by scheme. */
static int build_decode(tok *t, ierr *err)
{
    int16_t u2b[B2U_LIMIT];
    unsigned char *buf = malloc(TOK_PIECE_MAX + 4);
    int rc = 0;

    if (!buf)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < B2U_LIMIT; i++)
        u2b[i] = -1;
    for (unsigned b = 0; b < 256; b++)
        u2b[b2u(b)] = (int16_t)b;

    for (int64_t id = 0; id < t->n && rc == 0; id++) {
        const unsigned char *p = (const unsigned char *)span_ptr(t, t->piece[id]);
        size_t n = t->piece[id].len, w = 0, adv;
        if (t->flag[id] & TF_SPECIAL) {
            t->dec[id].len = 0;
            continue;
        }
        if (t->scheme != TOK_SP_BPE) {
            /* inverse bytes_to_unicode; other characters pass through */
            for (size_t i = 0; i < n; i += adv) {
                uint32_t cp = UINT32_MAX;
                if (utf8_scan(p + i, n - i, &adv) == U8_OK)
                    cp = utf8_cp(p + i, adv);
                else
                    adv = 1;
                if (cp < B2U_LIMIT && u2b[cp] >= 0) {
                    buf[w++] = (unsigned char)u2b[cp];
                } else {
                    memcpy(buf + w, p + i, adv);
                    w += adv;
                }
            }
        } else if (n == 6 && memcmp(p, "<0x", 3) == 0 && p[5] == '>' && isxdigit(p[3]) &&
                   isxdigit(p[4])) {
            char hex[3] = { (char)p[3], (char)p[4], 0 };
            buf[w++] = (unsigned char)strtoul(hex, NULL, 16);
        } else {
            for (size_t i = 0; i < n; i++) {
                if (i + 3 <= n && memcmp(p + i, "\xe2\x96\x81", 3) == 0) {
                    buf[w++] = ' ';
                    i += 2;
                } else {
                    buf[w++] = p[i];
                }
            }
        }
        rc = arena_add(t, buf, w, &t->dec[id], err);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------ GPT-2 (OPT) files */

int tok_new_gpt2(const char *vocab_json, size_t vocab_len, const char *merges_txt,
                 size_t merges_len, tok **out, ierr *err)
{
    json_error_t je;
    json_t *root = NULL;
    tok *t = NULL;
    int rc;

    if (!out || !vocab_json || !merges_txt)
        return ierr_set(err, -EINVAL, "tok_new_gpt2: missing argument");
    *out = NULL;
    t = tok_alloc();
    if (!t)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    t->scheme = TOK_GPT2;
    t->bytelevel = true;
    t->batch_merges = true;

    root = json_loadb(vocab_json, vocab_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = ierr_set(err, -EINVAL, "vocab.json: line %d column %d: %s", je.line, je.column,
                      je.text);
        goto fail;
    }
    if (!json_is_object(root) || json_object_size(root) == 0) {
        rc = ierr_set(err, -EINVAL, "vocab.json: not a non-empty JSON object");
        goto fail;
    }
    if (json_object_size(root) > TOK_IDS_MAX) {
        rc = ierr_set(err, -EINVAL, "vocab.json: more than %d tokens", TOK_IDS_MAX);
        goto fail;
    }
    /* ids are unique and in [0, size), so every id is defined */
    if ((rc = alloc_ids(t, (int64_t)json_object_size(root), err)) < 0 ||
        (rc = load_vocab(t, root, "vocab.json", err)) < 0 ||
        (rc = build_pmap(t, err)) < 0)
        goto fail;
    find_byte_symbols(t);
    t->unk = piece_id(t, "<unk>", 5);

    /* merges.txt: an optional "#version" first line, then "a b" per line */
    size_t nlines = 1;
    for (size_t i = 0; i < merges_len; i++)
        nlines += merges_txt[i] == '\n';
    if ((rc = mmap_alloc(t, nlines, err)) < 0)
        goto fail;
    size_t rank = 0, lineno = 0;
    for (size_t pos = 0; pos < merges_len;) {
        const char *line = merges_txt + pos, *nl = memchr(line, '\n', merges_len - pos);
        size_t ll = nl ? (size_t)(nl - line) : merges_len - pos;
        char where[64];
        pos += ll + (nl != NULL);
        lineno++;
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll == 0 || (lineno == 1 && ll >= 8 && memcmp(line, "#version", 8) == 0))
            continue;
        snprintf(where, sizeof where, "merges.txt line %zu", lineno);
        if ((rc = add_merge_str(t, line, ll, rank++, where, err)) < 0)
            goto fail;
    }

    /* control tokens: neither a byte nor a merge result, spelled <...> */
    for (int64_t id = 0; id < t->n; id++) {
        span s = t->piece[id];
        const char *p = span_ptr(t, s);
        if (!(t->flag[id] & TF_MADE) && s.len >= 3 && p[0] == '<' && p[s.len - 1] == '>')
            t->flag[id] |= TF_SPECIAL;
    }
    if ((rc = compile_re(t, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0, "tokenizer", err)) < 0 ||
        (rc = build_decode(t, err)) < 0)
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    json_decref(root);
    tok_free(t);
    return rc;
}

/* --------------------------------------------------------- tokenizer.json */

#define TJ "tokenizer.json"

/* A boolean field: absent or null gives def. */
static int jbool(json_t *o, const char *key, bool def, bool *out, const char *where, ierr *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return ierr_set(err, -EINVAL, TJ ": %s.%s is not a boolean", where, key);
    *out = json_is_true(v);
    return 0;
}

/* A field that must be absent, null or "" (or 0 for numbers). */
static int jempty(json_t *o, const char *key, const char *where, ierr *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
        (json_is_number(v) && json_number_value(v) == 0))
        return 0;
    return ierr_set(err, -EINVAL, TJ ": %s.%s is not supported", where, key);
}

/* The "type" of a component, or an error naming where. */
static int jtype(json_t *o, const char *where, const char **type, ierr *err)
{
    json_t *v = json_is_object(o) ? json_object_get(o, "type") : NULL;
    if (!json_is_string(v))
        return ierr_set(err, -EINVAL, TJ ": %s has no \"type\"", where);
    *type = json_string_value(v);
    return 0;
}

/* {"String": s} -> s (and 0 in *regex), {"Regex": r} -> r (1 in *regex). */
static int jpattern(json_t *o, const char *where, json_t **pat, int *regex, ierr *err)
{
    json_t *p = json_object_get(o, "pattern");
    json_t *s = json_is_object(p) ? json_object_get(p, "String") : NULL;
    json_t *r = json_is_object(p) ? json_object_get(p, "Regex") : NULL;
    if (json_is_string(s)) {
        *pat = s;
        *regex = 0;
    } else if (json_is_string(r)) {
        *pat = r;
        *regex = 1;
    } else {
        return ierr_set(err, -EINVAL, TJ ": %s.pattern is not {\"String\": ..} or {\"Regex\": ..}",
                        where);
    }
    if (json_string_length(*pat) == 0)
        return ierr_set(err, -EINVAL, TJ ": %s.pattern is empty", where);
    return 0;
}

static int parse_normalizer(tok *t, json_t *n, const char *where, int depth, ierr *err)
{
    const char *type;
    int rc;

    if (!n || json_is_null(n))
        return 0;
    if ((rc = jtype(n, where, &type, err)) < 0)
        return rc;
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(n, "normalizers"), *e;
        size_t i;
        if (!json_is_array(list))
            return ierr_set(err, -EINVAL, TJ ": %s.normalizers is not an array", where);
        json_array_foreach(list, i, e) {
            if ((rc = parse_normalizer(t, e, "normalizer.normalizers[]", 1, err)) < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        json_t *s = json_object_get(n, "prepend");
        if (!json_is_string(s))
            return ierr_set(err, -EINVAL, TJ ": %s.prepend is not a string", where);
        return add_rule(t, RULE_PREPEND, json_string_value(s), json_string_length(s), "", 0, err);
    }
    if (strcmp(type, "Replace") == 0) {
        json_t *pat, *c = json_object_get(n, "content");
        int regex;
        if ((rc = jpattern(n, where, &pat, &regex, err)) < 0)
            return rc;
        if (regex)
            return ierr_set(err, -EINVAL, TJ ": %s: Replace with a Regex pattern is not supported",
                            where);
        if (!json_is_string(c))
            return ierr_set(err, -EINVAL, TJ ": %s.content is not a string", where);
        return add_rule(t, RULE_REPLACE, json_string_value(pat), json_string_length(pat),
                        json_string_value(c), json_string_length(c), err);
    }
    return ierr_set(err, -EINVAL, TJ ": %s type \"%s\" is not supported", where, type);
}

static int parse_pretok(tok *t, json_t *p, const char *where, int depth, ierr *err)
{
    const char *type;
    int rc;

    if (!p || json_is_null(p))
        return 0;
    if ((rc = jtype(p, where, &type, err)) < 0)
        return rc;
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(p, "pretokenizers"), *e;
        size_t i;
        if (!json_is_array(list))
            return ierr_set(err, -EINVAL, TJ ": %s.pretokenizers is not an array", where);
        json_array_foreach(list, i, e) {
            if ((rc = parse_pretok(t, e, "pre_tokenizer.pretokenizers[]", 1, err)) < 0)
                return rc;
        }
        return 0;
    }
    if (t->bytelevel || t->split_mark)
        return ierr_set(err, -EINVAL, TJ ": %s: \"%s\" after ByteLevel or Metaspace is not supported",
                        where, type);
    if (strcmp(type, "ByteLevel") == 0) {
        bool prefix = false, use_regex = false;
        if ((rc = jbool(p, "add_prefix_space", true, &prefix, where, err)) < 0 ||
            (rc = jbool(p, "use_regex", true, &use_regex, where, err)) < 0)
            return rc;
        if (t->re && (use_regex || prefix))
            return ierr_set(err, -EINVAL, TJ ": %s: ByteLevel with use_regex or add_prefix_space "
                            "after Split is not supported", where);
        t->bytelevel = true;
        if (prefix && (rc = add_rule(t, RULE_PREPEND_UNLESS, " ", 1, "", 0, err)) < 0)
            return rc;
        if (use_regex)
            return compile_re(t, GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0, TJ, err);
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        json_t *r = json_object_get(p, "replacement"), *ps = json_object_get(p, "prepend_scheme");
        bool prefix = false, split = false;
        if (!json_is_string(r) || json_string_length(r) == 0)
            return ierr_set(err, -EINVAL, TJ ": %s.replacement is not a non-empty string", where);
        if (t->re)
            return ierr_set(err, -EINVAL, TJ ": %s: Metaspace after Split is not supported", where);
        if ((rc = jbool(p, "add_prefix_space", true, &prefix, where, err)) < 0 ||
            (rc = jbool(p, "split", true, &split, where, err)) < 0)
            return rc;
        if (json_is_string(ps)) {   /* "first" = "always" here: no added-token sections */
            const char *s = json_string_value(ps);
            if (strcmp(s, "never") != 0 && strcmp(s, "always") != 0 && strcmp(s, "first") != 0)
                return ierr_set(err, -EINVAL, TJ ": %s.prepend_scheme \"%s\" is not supported",
                                where, s);
            prefix = strcmp(s, "never") != 0;
        }
        const char *rs = json_string_value(r);
        size_t rl = json_string_length(r);
        if ((rc = add_rule(t, RULE_REPLACE, " ", 1, rs, rl, err)) < 0)
            return rc;
        if (prefix && (rc = add_rule(t, RULE_PREPEND_UNLESS, rs, rl, "", 0, err)) < 0)
            return rc;
        if (split) {
            t->split_mark = true;
            return arena_add(t, rs, rl, &t->mark, err);
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        json_t *pat, *beh = json_object_get(p, "behavior"), *inv = json_object_get(p, "invert");
        int regex;
        if ((rc = jpattern(p, where, &pat, &regex, err)) < 0)
            return rc;
        if (!json_is_string(beh) || strcmp(json_string_value(beh), "Isolated") != 0)
            return ierr_set(err, -EINVAL, TJ ": %s.behavior is not \"Isolated\" (others are not "
                            "supported)", where);
        if (json_is_true(inv))
            return ierr_set(err, -EINVAL, TJ ": %s.invert true is not supported", where);
        if (t->re)
            return ierr_set(err, -EINVAL, TJ ": %s: a second Split is not supported", where);
        return compile_re(t, json_string_value(pat), json_string_length(pat),
                          regex ? 0 : PCRE2_LITERAL, TJ ": pre_tokenizer Split", err);
    }
    return ierr_set(err, -EINVAL, TJ ": %s type \"%s\" is not supported", where, type);
}

/* The decoder: its steps follow from the scheme (byte-level: the inverse
 * byte map; otherwise "▁" -> " ", <0xNN> -> byte, fuse), so only the types
 * are checked, and whether it drops one leading space (Strip with start >= 1,
 * or Metaspace with a prefix) is noted. */
static int parse_decoder(tok *t, json_t *d, const char *where, int depth, ierr *err)
{
    static const char *known[] = { "ByteLevel", "Replace", "ByteFallback", "Fuse" };
    const char *type;
    int rc;

    if (!d || json_is_null(d))
        return 0;
    if ((rc = jtype(d, where, &type, err)) < 0)
        return rc;
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        json_t *list = json_object_get(d, "decoders"), *e;
        size_t i;
        if (!json_is_array(list))
            return ierr_set(err, -EINVAL, TJ ": %s.decoders is not an array", where);
        json_array_foreach(list, i, e) {
            if ((rc = parse_decoder(t, e, "decoder.decoders[]", 1, err)) < 0)
                return rc;
        }
        return 0;
    }
    if (strcmp(type, "Strip") == 0) {
        json_t *c = json_object_get(d, "content"), *st = json_object_get(d, "start");
        if (json_is_string(c) && strcmp(json_string_value(c), " ") == 0 && json_is_integer(st) &&
            json_integer_value(st) >= 1)
            t->strip_first = true;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        json_t *ps = json_object_get(d, "prepend_scheme"), *ap = json_object_get(d, "add_prefix_space");
        if (json_is_string(ps) ? strcmp(json_string_value(ps), "never") != 0 : !json_is_false(ap))
            t->strip_first = true;
        return 0;
    }
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        if (strcmp(type, known[k]) == 0)
            return 0;
    }
    return ierr_set(err, -EINVAL, TJ ": %s type \"%s\" is not supported", where, type);
}

static int parse_merges(tok *t, json_t *merges, ierr *err)
{
    json_t *e;
    size_t i;
    int rc;

    if (!json_is_array(merges))
        return ierr_set(err, -EINVAL, TJ ": model.merges is not an array");
    if ((rc = mmap_alloc(t, json_array_size(merges), err)) < 0)
        return rc;
    json_array_foreach(merges, i, e) {
        char where[64];
        snprintf(where, sizeof where, TJ ": model.merges[%zu]", i);
        if (json_is_string(e)) {
            rc = add_merge_str(t, json_string_value(e), json_string_length(e), i, where, err);
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            rc = add_merge(t, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), i, where, err);
        } else {
            rc = ierr_set(err, -EINVAL, "%s: not \"a b\" or [\"a\", \"b\"]", where);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The id space [0, n): n is one above the largest id of model.vocab and
 * added_tokens; each id must be defined by one of them. */
static int id_space(json_t *vocab, json_t *added, int64_t *n, ierr *err)
{
    const char *key;
    json_t *v, *e;
    size_t i;

    *n = 0;
    json_object_foreach(vocab, key, v) {
        if (json_is_integer(v) && json_integer_value(v) >= *n && json_integer_value(v) < TOK_IDS_MAX)
            *n = json_integer_value(v) + 1;   /* others fail in load_vocab */
    }
    if (added && !json_is_null(added) && !json_is_array(added))
        return ierr_set(err, -EINVAL, TJ ": added_tokens is not an array");
    json_array_foreach(added, i, e) {
        json_t *id = json_object_get(e, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_IDS_MAX)
            return ierr_set(err, -EINVAL, TJ ": added_tokens[%zu].id is not a valid id", i);
        if (json_integer_value(id) >= *n)
            *n = json_integer_value(id) + 1;
    }
    /* Each id needs an entry of its own, so a space larger than the entries
     * has a hole. Name the first one now: the tables must not be sized by an
     * id a small file can set as high as TOK_IDS_MAX. */
    size_t entries = json_object_size(vocab) + json_array_size(added);
    if ((uint64_t)*n > entries) {
        unsigned char *seen = calloc(entries + 1, 1);
        size_t hole = 0;
        if (!seen)
            return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
        json_object_foreach(vocab, key, v) {
            if (json_is_integer(v) && json_integer_value(v) >= 0 && (uint64_t)json_integer_value(v) <= entries)
                seen[json_integer_value(v)] = 1;
        }
        json_array_foreach(added, i, e) {
            if ((uint64_t)json_integer_value(json_object_get(e, "id")) <= entries)
                seen[json_integer_value(json_object_get(e, "id"))] = 1;
        }
        while (seen[hole])
            hole++;
        free(seen);
        return ierr_set(err, -EINVAL, TJ ": id %zu is neither in model.vocab nor in added_tokens", hole);
    }
    return 0;
}

/* added_tokens: an id of the model vocabulary (then the entry only marks it
 * special) or a new id. */
static int parse_added(tok *t, json_t *added, ierr *err)
{
    json_t *e;
    size_t i;
    int rc;

    json_array_foreach(added, i, e) {
        json_t *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        json_t *sp = json_object_get(e, "special");
        json_int_t v = json_integer_value(id);
        if (!json_is_string(c) || json_string_length(c) > TOK_PIECE_MAX)
            return ierr_set(err, -EINVAL,
                            TJ ": added_tokens[%zu].content is not a string of at most %u bytes",
                            i, TOK_PIECE_MAX);
        if (!(t->flag[v] & TF_VOCAB)) {
            if (t->flag[v] & TF_ADDED)
                return ierr_set(err, -EINVAL, TJ ": added_tokens[%zu]: id %lld is used twice", i,
                                (long long)v);
            if ((rc = arena_add(t, json_string_value(c), json_string_length(c), &t->piece[v],
                                err)) < 0)
                return rc;
            t->flag[v] |= TF_ADDED;
        }
        if (json_is_true(sp))
            t->flag[v] |= TF_SPECIAL;
    }
    return 0;
}

int tok_new_hf(const char *tokenizer_json, size_t len, tok **out, ierr *err)
{
    json_error_t je;
    json_t *root = NULL, *model, *vocab, *added, *v;
    int64_t n;
    tok *t = NULL;
    int rc;

    if (!out || !tokenizer_json)
        return ierr_set(err, -EINVAL, "tok_new_hf: missing argument");
    *out = NULL;
    t = tok_alloc();
    if (!t)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    root = json_loadb(tokenizer_json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        rc = ierr_set(err, -EINVAL, TJ ": line %d column %d: %s", je.line, je.column, je.text);
        goto fail;
    }
    model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        rc = ierr_set(err, -EINVAL, TJ ": no \"model\" object");
        goto fail;
    }
    v = json_object_get(model, "type");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "BPE") == 0)) {
        rc = ierr_set(err, -EINVAL, TJ ": model.type \"%s\" is not supported (only \"BPE\")",
                      json_is_string(v) ? json_string_value(v) : "?");
        goto fail;
    }
    if ((rc = jempty(model, "dropout", "model", err)) < 0 ||
        (rc = jempty(model, "continuing_subword_prefix", "model", err)) < 0 ||
        (rc = jempty(model, "end_of_word_suffix", "model", err)) < 0 ||
        (rc = jbool(model, "byte_fallback", false, &t->byte_fallback, "model", err)) < 0 ||
        (rc = jbool(model, "fuse_unk", false, &t->fuse_unk, "model", err)) < 0 ||
        (rc = jbool(model, "ignore_merges", false, &t->ignore_merges, "model", err)) < 0)
        goto fail;
    vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab) || json_object_size(vocab) == 0 ||
        json_object_size(vocab) > TOK_IDS_MAX) {
        rc = ierr_set(err, -EINVAL, TJ ": model.vocab is not a non-empty JSON object");
        goto fail;
    }
    added = json_object_get(root, "added_tokens");
    if ((rc = id_space(vocab, added, &n, err)) < 0 ||
        (rc = alloc_ids(t, n, err)) < 0 ||
        (rc = load_vocab(t, vocab, TJ ": model.vocab", err)) < 0 ||
        (rc = parse_added(t, added, err)) < 0)
        goto fail;
    for (int64_t id = 0; id < n; id++) {
        if (!(t->flag[id] & (TF_VOCAB | TF_ADDED))) {
            rc = ierr_set(err, -EINVAL, TJ ": id %lld is neither in model.vocab nor in added_tokens",
                          (long long)id);
            goto fail;
        }
    }
    if ((rc = build_pmap(t, err)) < 0)
        goto fail;

    v = json_object_get(model, "unk_token");
    if (json_is_string(v)) {
        t->unk = piece_id(t, json_string_value(v), json_string_length(v));
        if (t->unk < 0) {
            rc = ierr_set(err, -EINVAL, TJ ": model.unk_token is not in model.vocab");
            goto fail;
        }
    } else if (v && !json_is_null(v)) {
        rc = ierr_set(err, -EINVAL, TJ ": model.unk_token is not a string");
        goto fail;
    }
    for (unsigned b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->fallback[b] = piece_id(t, name, 6);
    }
    if ((rc = parse_merges(t, json_object_get(model, "merges"), err)) < 0 ||
        (rc = parse_normalizer(t, json_object_get(root, "normalizer"), "normalizer", 0, err)) < 0 ||
        (rc = parse_pretok(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0, err)) < 0)
        goto fail;
    if ((rc = parse_decoder(t, json_object_get(root, "decoder"), "decoder", 0, err)) < 0)
        goto fail;
    if (t->bytelevel) {
        t->scheme = TOK_BYTELEVEL;
        t->byte_fallback = false;
        t->strip_first = false;
        find_byte_symbols(t);
    } else {
        t->scheme = TOK_SP_BPE;
    }
    if ((rc = build_decode(t, err)) < 0)
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    json_decref(root);
    tok_free(t);
    return rc;
}

tok_scheme tok_scheme_of(const tok *t)
{
    return t ? t->scheme : TOK_GPT2;
}

int64_t tok_vocab_size(const tok *t)
{
    return t ? t->n : 0;
}

/* ---------------------------------------------------------------- encode */

typedef struct {
    int32_t id;
    int64_t prev, next;     /* neighbours in the word, -1 = none */
    size_t  len;            /* bytes covered; 0 = merged away */
} sym;

typedef struct {
    int32_t rank, id;       /* the merge and its result */
    int64_t pos;            /* left symbol */
} hent;

/* Scratch of one tok_encode call, grown to the longest word so far. */
typedef struct {
    const tok *t;
    size_t   cap;           /* bytes of the longest word the arrays fit */
    sym     *sym;           /* [cap] */
    hent    *heap, *batch;  /* [3 cap + 1]: each merge pushes at most 2 pairs;
                               batch only with batch_merges */
    size_t   nheap;
    unsigned char *mapped;  /* [2 cap + 1] only with ignore_merges */
    int32_t *ids;           /* [idcap] the output: at most one id per byte */
    size_t   nids;
    pcre2_match_data *md;
    ierr    *err;
} enc;

static bool hent_less(hent a, hent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(enc *e, hent x)
{
    size_t i = e->nheap++;
    while (i > 0 && hent_less(x, e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = x;
}

static hent heap_pop(enc *e)
{
    hent top = e->heap[0], x = e->heap[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hent_less(e->heap[c + 1], e->heap[c]))
            c++;
        if (!hent_less(e->heap[c], x))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = x;
    return top;
}

static void push_pair(enc *e, int64_t pos)
{
    sym *s = e->sym;
    int32_t rank, id;
    if (pos >= 0 && s[pos].next >= 0 && pair_get(e->t, s[pos].id, s[s[pos].next].id, &rank, &id))
        heap_push(e, (hent){ rank, id, pos });
}

/* Apply a queued merge unless it went stale (its left symbol was merged
 * away or its pair changed), as HF's Word::merge_all does. */
static void merge_at(enc *e, hent m)
{
    sym *s = e->sym;
    int32_t rank, id;
    int64_t p = m.pos, q = s[p].next;
    if (s[p].len == 0 || q < 0 || !pair_get(e->t, s[p].id, s[q].id, &rank, &id) || id != m.id)
        return;
    s[p].id = id;
    s[p].len += s[q].len;
    s[q].len = 0;
    s[p].next = s[q].next;
    if (s[p].next >= 0)
        s[s[p].next].prev = p;
    push_pair(e, s[p].prev);
    push_pair(e, p);
}

/* BPE over the symbols sym[0..m). */
static void bpe(enc *e, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        e->sym[i].prev = (int64_t)i - 1;
        e->sym[i].next = i + 1 < m ? (int64_t)i + 1 : -1;
    }
    e->nheap = 0;
    for (size_t i = 0; i + 1 < m; i++)
        push_pair(e, (int64_t)i);
    while (e->nheap > 0) {
        hent top = heap_pop(e);
        if (!e->t->batch_merges) {
            merge_at(e, top);
            continue;
        }
        size_t nb = 0;   /* every queued pair of this rank, left to right */
        e->batch[nb++] = top;
        while (e->nheap > 0 && e->heap[0].rank == top.rank)
            e->batch[nb++] = heap_pop(e);
        for (size_t k = 0; k < nb; k++)
            merge_at(e, e->batch[k]);
    }
}

/* Grow the scratch arrays to fit a word of len bytes. */
static int enc_reserve(enc *e, size_t len)
{
    void *p;
    if (len <= e->cap)
        return 0;
    if (len > SIZE_MAX / (4 * sizeof(hent)) - 1)
        return ierr_set(e->err, -ENOMEM, "text: too long");
    if (!(p = realloc(e->sym, len * sizeof *e->sym)))
        goto nomem;
    e->sym = p;
    if (!(p = realloc(e->heap, (3 * len + 1) * sizeof *e->heap)))
        goto nomem;
    e->heap = p;
    if (e->t->batch_merges) {
        if (!(p = realloc(e->batch, (3 * len + 1) * sizeof *e->batch)))
            goto nomem;
        e->batch = p;
    }
    if (e->t->ignore_merges) {
        if (!(p = realloc(e->mapped, 2 * len + 1)))
            goto nomem;
        e->mapped = p;
    }
    e->cap = len;
    return 0;
nomem:
    return ierr_set(e->err, -ENOMEM, "text: out of memory");
}

/* One word: symbols, merges, ids appended to e->ids. */
static int enc_word(enc *e, const unsigned char *w, size_t len)
{
    const tok *t = e->t;
    size_t m = 0, adv;
    bool unk_open = false;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = enc_reserve(e, len)) < 0)
        return rc;
    sym *s = e->sym;
    if (t->ignore_merges) {   /* a word in the vocabulary is taken whole */
        const unsigned char *key = w;
        size_t klen = len;
        if (t->bytelevel) {
            klen = 0;
            for (size_t i = 0; i < len; i++)
                klen += utf8_put(b2u(w[i]), e->mapped + klen);
            key = e->mapped;
        }
        int32_t id = piece_id(t, key, klen);
        if (id >= 0) {
            e->ids[e->nids++] = id;
            return 0;
        }
    }
    for (size_t i = 0; i < len; i += adv) {
        int32_t id;
        bool fb = false;
        if (t->bytelevel) {
            adv = 1;
            id = t->byte_sym[w[i]];
        } else {
            if (utf8_scan(w + i, len - i, &adv) != U8_OK)   /* checked already */
                adv = 1;
            id = piece_id(t, w + i, adv);
            if (id < 0 && t->byte_fallback) {
                fb = true;
                for (size_t k = 0; k < adv; k++)
                    fb = fb && t->fallback[w[i + k]] >= 0;
            }
        }
        if (id >= 0) {
            s[m++] = (sym){ id, 0, 0, adv };
            unk_open = false;
        } else if (fb) {
            for (size_t k = 0; k < adv; k++)
                s[m++] = (sym){ t->fallback[w[i + k]], 0, 0, 1 };
            unk_open = false;
        } else if (t->unk >= 0) {
            if (unk_open && t->fuse_unk) {
                s[m - 1].len += adv;
            } else {
                s[m++] = (sym){ t->unk, 0, 0, adv };
                unk_open = true;
            }
        } else {
            return ierr_set(e->err, -EINVAL, "text: U+%04X has no token and there is no unk token",
                            (unsigned)(adv > 1 || w[i] < 0x80 ? utf8_cp(w + i, adv) : w[i]));
        }
    }
    bpe(e, m);
    for (int64_t i = 0; i >= 0; i = s[i].next)
        e->ids[e->nids++] = s[i].id;
    return 0;
}

/* Split the text into words and encode each. */
static int enc_text(enc *e, const unsigned char *w, size_t len)
{
    const tok *t = e->t;
    int rc = 0;

    if (t->re) {   /* words: the matches and the gaps between them */
        size_t pos = 0, gap = 0;
        while (pos < len && rc == 0) {
            int m = pcre2_match(t->re, w, len, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
            if (m == PCRE2_ERROR_NOMATCH)
                break;
            if (m < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(m, msg, sizeof msg);
                return ierr_set(e->err, -EINVAL, "text: pre-tokenizer regex failed at byte %zu: %s",
                                pos, (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = ov[0], me = ov[1], adv;
            if (ms < gap || me > len || me < ms)
                return ierr_set(e->err, -EINVAL, "text: pre-tokenizer regex gave a bad match");
            if (me == ms) {   /* empty match: step over one character */
                if (ms >= len)
                    break;
                if (utf8_scan(w + ms, len - ms, &adv) != U8_OK)
                    adv = 1;
                pos = ms + adv;
                continue;
            }
            if (ms > gap)
                rc = enc_word(e, w + gap, ms - gap);
            if (rc == 0)
                rc = enc_word(e, w + ms, me - ms);
            gap = pos = me;
        }
        if (rc == 0 && gap < len)
            rc = enc_word(e, w + gap, len - gap);
    } else if (t->split_mark) {   /* a word starts at each mark */
        const char *mk = span_ptr(t, t->mark);
        size_t ml = t->mark.len, start = 0;
        for (size_t i = 1; i + ml <= len && rc == 0; i++) {
            if (memcmp(w + i, mk, ml) == 0) {
                rc = enc_word(e, w + start, i - start);
                start = i;
                i += ml - 1;
            }
        }
        if (rc == 0)
            rc = enc_word(e, w + start, len - start);
    } else {
        rc = enc_word(e, w, len);
    }
    return rc;
}

/* Apply the text rules to in[0..n): *out is malloc'd. */
static int apply_rules(const tok *t, const char *in, size_t n, char **out, size_t *on, ierr *err)
{
    char *cur = malloc(n ? n : 1);
    size_t len = n;
    size_t most = n > (SIZE_MAX - 4096) / TOK_GROWTH_MAX ? SIZE_MAX : n * TOK_GROWTH_MAX + 4096;

    if (!cur)
        return ierr_set(err, -ENOMEM, "text: out of memory");
    if (n)
        memcpy(cur, in, n);
    for (size_t r = 0; r < t->nrules; r++) {
        const rule *ru = &t->rules[r];
        const char *a = span_ptr(t, ru->a), *b = span_ptr(t, ru->b);
        size_t al = ru->a.len, bl = ru->b.len, cnt = 0, nl;
        char *nx;

        if (ru->kind == RULE_REPLACE) {
            for (const char *p = cur; (p = memmem(p, len - (size_t)(p - cur), a, al)); p += al)
                cnt++;
            if (cnt == 0)
                continue;
            if (__builtin_mul_overflow(cnt, bl, &nl) || __builtin_add_overflow(nl, len - cnt * al, &nl))
                goto nomem;
        } else {
            if (len == 0 || (ru->kind == RULE_PREPEND_UNLESS && len >= al && memcmp(cur, a, al) == 0))
                continue;
            if (__builtin_add_overflow(len, al, &nl))
                goto nomem;
        }
        if (nl > most) {
            free(cur);
            return ierr_set(err, -E2BIG, "text: the tokenizer's normalizer makes %zu bytes of %zu, over %u times "
                            "as many", nl, n, TOK_GROWTH_MAX);
        }
        nx = malloc(nl ? nl : 1);
        if (!nx)
            goto nomem;
        if (ru->kind == RULE_REPLACE) {
            size_t w = 0;
            const char *p = cur, *q;
            while ((q = memmem(p, len - (size_t)(p - cur), a, al))) {
                memcpy(nx + w, p, (size_t)(q - p));
                w += (size_t)(q - p);
                memcpy(nx + w, b, bl);
                w += bl;
                p = q + al;
            }
            memcpy(nx + w, p, len - (size_t)(p - cur));
        } else {
            memcpy(nx, a, al);
            memcpy(nx + al, cur, len);
        }
        free(cur);
        cur = nx;
        len = nl;
    }
    *out = cur;
    *on = len;
    return 0;
nomem:
    free(cur);
    return ierr_set(err, -ENOMEM, "text: out of memory");
}

int tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, ierr *err)
{
    enc e = { .t = t, .err = err };
    char *w = NULL;
    size_t wlen = 0, bad;
    int rc;

    if (!t || !ids || !n || (!text && len))
        return ierr_set(err, -EINVAL, "tok_encode: missing argument");
    *ids = NULL;
    *n = 0;
    bad = utf8_check((const unsigned char *)text, len);
    if (bad < len)
        return ierr_set(err, -EILSEQ, "text: invalid UTF-8 at byte offset %zu", bad);
    if ((rc = apply_rules(t, text, len, &w, &wlen, err)) < 0)
        return rc;
    if (wlen > SIZE_MAX / sizeof *e.ids - 1) {
        free(w);
        return ierr_set(err, -ENOMEM, "text: too long");
    }
    e.ids = malloc((wlen + 1) * sizeof *e.ids);   /* at most one id per byte */
    e.md = t->re ? pcre2_match_data_create_from_pattern(t->re, NULL) : NULL;
    if (!e.ids || (t->re && !e.md))
        rc = ierr_set(err, -ENOMEM, "text: out of memory");
    else
        rc = enc_text(&e, (const unsigned char *)w, wlen);
    free(w);
    free(e.sym);
    free(e.heap);
    free(e.batch);
    free(e.mapped);
    pcre2_match_data_free(e.md);
    if (rc < 0) {
        free(e.ids);
        return rc;
    }
    *ids = e.ids;
    *n = e.nids;
    return 0;
}

/* ---------------------------------------------------------------- decode */

int tok_piece_bytes(const tok *t, int32_t id, unsigned char *buf, size_t cap)
{
    if (!t || id < 0 || id >= t->n)
        return -1;
    size_t n = t->dec[id].len < cap ? t->dec[id].len : cap;
    if (n)
        memcpy(buf, span_ptr(t, t->dec[id]), n);
    return (int)n;
}

void tok_stream_init(tok_stream *s, const tok *t)
{
    memset(s, 0, sizeof *s);
    s->t = t;
    s->first = t && t->scheme == TOK_SP_BPE && t->strip_first;
}

/* Where a stream call writes: out[0..cap), w used. Once a character does
 * not fit, it and everything after it in this call are dropped, so the
 * output is always a prefix of whole characters. */
typedef struct {
    char  *out;
    size_t cap, w;
    bool   full;
} sink;

static void emit(sink *k, const void *p, size_t n)
{
    if (k->full || n > k->cap - k->w) {
        k->full = true;
        return;
    }
    memcpy(k->out + k->w, p, n);
    k->w += n;
}

/* Emit what is complete in s->pend; invalid bytes become U+FFFD, one per
 * maximal invalid subpart; at the end (final) an unfinished one too. */
static void emit_pending(tok_stream *s, sink *k, bool final)
{
    static const char fffd[] = "\xef\xbf\xbd";
    while (s->npend > 0) {
        size_t adv;
        int r = utf8_scan(s->pend, s->npend, &adv);
        if (r == U8_SHORT && !final)
            return;
        if (r == U8_OK)
            emit(k, s->pend, adv);
        else
            emit(k, fffd, 3);
        memmove(s->pend, s->pend + adv, s->npend - adv);
        s->npend -= adv;
    }
}

size_t tok_stream_put(tok_stream *s, int32_t id, char *out, size_t cap)
{
    sink k = { out, cap, 0, false };
    if (!s || !s->t || id < 0 || id >= s->t->n)
        return 0;
    const unsigned char *p = (const unsigned char *)span_ptr(s->t, s->t->dec[id]);
    size_t n = s->t->dec[id].len;
    if (s->npend >= sizeof s->pend)   /* never: at most 3 bytes wait */
        s->npend = 0;
    if (n && s->first) {
        if (p[0] == ' ') {
            p++;
            n--;
        }
        s->first = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (s->npend == 0 && p[i] < 0x80) {
            emit(&k, p + i, 1);
            continue;
        }
        s->pend[s->npend++] = p[i];
        emit_pending(s, &k, false);
    }
    return k.w;
}

size_t tok_stream_end(tok_stream *s, char *out, size_t cap)
{
    sink k = { out, cap, 0, false };
    if (!s)
        return 0;
    if (s->npend > sizeof s->pend)
        s->npend = 0;
    emit_pending(s, &k, true);
    return k.w;
}

int tok_new_files(tok_file_fn get, void *ctx, tok **out, ierr *err)
{
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    int rc = get(ctx, "tokenizer.json", &a, &al, err);
    if (rc == 0) {
        rc = tok_new_hf(a, al, out, err);
        free(a);
        return rc;
    }
    if (rc != -ENOENT)
        return rc;
    rc = get(ctx, "vocab.json", &a, &al, err);
    if (rc == 0)
        rc = get(ctx, "merges.txt", &b, &bl, err);
    if (rc == 0)
        rc = tok_new_gpt2(a, al, b, bl, out, err);
    else if (rc == -ENOENT)
        ierr_wrap(err, rc, "no tokenizer (tokenizer.json or vocab.json + merges.txt)");
    free(a);
    free(b);
    return rc;
}
