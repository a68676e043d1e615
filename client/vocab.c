/* vocab.c: the tokenizer's tables (tok_impl.h): the string arena, the
 * vocabulary with its piece -> id index, the merge table (id pair -> rank
 * and result, for encoding) and the merge list (by rank, as the file has
 * it), the byte symbols and the bytes each token decodes to; tok_free. */
#include "tok_impl.h"
#include "utf8.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int vocab_arena_add(tok *t, const void *p, size_t n, span *s, ierr *err)
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

int32_t vocab_find(const tok *t, const void *p, size_t n)
{
    if (!t->pmap)
        return -1;
    for (size_t i = hash_bytes(p, n) & t->pmask;; i = (i + 1) & t->pmask) {
        int32_t id = t->pmap[i];
        if (id < 0)
            return -1;
        if (t->piece[id].len == n && memcmp(vocab_ptr(t, t->piece[id]), p, n) == 0)
            return id;
    }
}

/* The model vocabulary's pieces are unique (JSON object keys). */
int vocab_index(tok *t, ierr *err)
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
        size_t i = hash_bytes(vocab_ptr(t, s), s.len) & t->pmask;
        while (t->pmap[i] >= 0)
            i = (i + 1) & t->pmask;
        t->pmap[i] = (int32_t)id;
    }
    return 0;
}

bool vocab_pair(const tok *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
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

int vocab_merges_alloc(tok *t, size_t nmerges, ierr *err)
{
    size_t cap = pow2_above(nmerges);
    t->mmap = malloc(cap * sizeof *t->mmap);
    t->mlist = malloc((nmerges ? nmerges : 1) * sizeof *t->mlist);
    if (!t->mmap || !t->mlist)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    t->mcap = nmerges;
    for (size_t i = 0; i < cap; i++)
        t->mmap[i].key = UINT64_MAX;
    t->mmask = cap - 1;
    return 0;
}

const char *vocab_quote(const char *s, size_t n, char *buf, size_t cap)
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

/* Both parts and their concatenation must be in the model vocabulary (HF
 * rejects the file otherwise). A repeated pair takes the later rank in the
 * table, as both GPT-2's dict and HF's map do; the list keeps both. */
int vocab_add_merge(tok *t, const char *a, size_t alen, const char *b, size_t blen,
                    size_t rank, const char *where, ierr *err)
{
    char q[64], cat[2 * 64];
    int32_t ia = vocab_find(t, a, alen), ib = vocab_find(t, b, blen), ir;

    if (alen == 0 || blen == 0)
        return ierr_set(err, -EINVAL, "%s: a merge needs two non-empty tokens", where);
    if (ia < 0)
        return ierr_set(err, -EINVAL, "%s: \"%s\" is not in the vocabulary", where,
                        vocab_quote(a, alen, q, sizeof q));
    if (ib < 0)
        return ierr_set(err, -EINVAL, "%s: \"%s\" is not in the vocabulary", where,
                        vocab_quote(b, blen, q, sizeof q));
    if (rank > INT32_MAX || rank != t->nmerges || rank >= t->mcap)
        return ierr_set(err, -EINVAL, "%s: too many merges", where);
    if (alen + blen > TOK_PIECE_MAX)
        return ierr_set(err, -EINVAL, "%s: the merged token is too long", where);
    char *m = malloc(alen + blen);
    if (!m)
        return ierr_set(err, -ENOMEM, "%s: out of memory", where);
    memcpy(m, a, alen);
    memcpy(m + alen, b, blen);
    ir = vocab_find(t, m, alen + blen);
    if (ir < 0) {
        vocab_quote(m, alen + blen, cat, sizeof cat);
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
    t->mlist[t->nmerges++] = (merge_ent){ ia, ib, ir };
    t->flag[ir] |= TF_MADE;
    return 0;
}

int vocab_add_merge_str(tok *t, const char *s, size_t n, size_t rank, const char *where,
                        ierr *err)
{
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
        return ierr_set(err, -EINVAL, "%s: expected two tokens separated by one space", where);
    return vocab_add_merge(t, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp - s) - 1, rank, where, err);
}

tok *vocab_new(void)
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
    free(t->mlist);
    pcre2_code_free(t->re);
    free(t);
}

int vocab_alloc_ids(tok *t, int64_t n, ierr *err)
{
    t->n = n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->dec = calloc((size_t)n, sizeof *t->dec);
    t->flag = calloc((size_t)n, 1);
    if (!t->piece || !t->dec || !t->flag)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    return 0;
}

int vocab_load(tok *t, json_t *obj, const char *what, ierr *err)
{
    const char *key;
    json_t *val;
    char q[64];

    json_object_foreach(obj, key, val) {
        size_t klen = strlen(key);
        if (!json_is_integer(val))
            return ierr_set(err, -EINVAL, "%s: the id of \"%s\" is not an integer", what,
                            vocab_quote(key, klen, q, sizeof q));
        json_int_t id = json_integer_value(val);
        if (id < 0 || id >= t->n)
            return ierr_set(err, -EINVAL, "%s: id %lld of \"%s\" is outside [0, %lld)", what,
                            (long long)id, vocab_quote(key, klen, q, sizeof q), (long long)t->n);
        if (t->flag[id] & TF_VOCAB)
            return ierr_set(err, -EINVAL, "%s: id %lld is used twice", what, (long long)id);
        if (klen > TOK_PIECE_MAX)
            return ierr_set(err, -EINVAL, "%s: token %lld is longer than %u bytes", what,
                            (long long)id, TOK_PIECE_MAX);
        int rc = vocab_arena_add(t, key, klen, &t->piece[id], err);
        if (rc < 0)
            return rc;
        t->flag[id] |= TF_VOCAB;
    }
    return 0;
}

void vocab_byte_symbols(tok *t)
{
    for (unsigned b = 0; b < 256; b++) {
        unsigned char u[4];
        size_t n = utf8_put(utf8_gpt2_char(b), u);
        t->byte_sym[b] = vocab_find(t, u, n);
        if (t->byte_sym[b] >= 0)
            t->flag[t->byte_sym[b]] |= TF_MADE;
    }
}

/* By scheme: byte-level inverts bytes_to_unicode (other characters pass
 * through); SentencePiece turns <0xNN> into that byte and "▁" into " ". */
int vocab_build_decode(tok *t, ierr *err)
{
    int16_t u2b[UTF8_GPT2_LIMIT];
    unsigned char *buf = malloc(TOK_PIECE_MAX + 4);
    int rc = 0;

    if (!buf)
        return ierr_set(err, -ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < UTF8_GPT2_LIMIT; i++)
        u2b[i] = -1;
    for (unsigned b = 0; b < 256; b++)
        u2b[utf8_gpt2_char(b)] = (int16_t)b;

    for (int64_t id = 0; id < t->n && rc == 0; id++) {
        const unsigned char *p = (const unsigned char *)vocab_ptr(t, t->piece[id]);
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
                if (cp < UTF8_GPT2_LIMIT && u2b[cp] >= 0) {
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
        rc = vocab_arena_add(t, buf, w, &t->dec[id], err);
    }
    free(buf);
    return rc;
}
