/* tok.c: the public face of the tokenizer (tok.h): a model's tokenizer
 * from its files, the accessors, encoding and the streaming decoder that
 * only emits complete UTF-8. The tables are built by vocab.c, the files
 * parsed by gpt2_files.c and tokenizer_json.c, words merged by bpe.c.
 *
 * Encoding runs in four steps:
 *   1. the input is checked to be valid UTF-8;
 *   2. text rules rewrite it (normalizer Prepend/Replace, Metaspace's
 *      replacement and prefix, ByteLevel's add_prefix_space);
 *   3. it is split into words (a regex: matches and the gaps between them
 *      are words; or Metaspace: a word starts at each replacement mark; or
 *      not at all);
 *   4. each word becomes symbols and BPE merges them (bpe.c).
 *
 * tok_encode encodes text that spells a special token ("<s>", "</s>") as
 * plain text, never as the control token: what SentencePiece and llama2.c
 * do. tok_encode_special first cuts the text at the special tokens it
 * spells (HF tokenizers' added-vocabulary split, llama.cpp's parse_special)
 * and runs the four steps on each stretch between them. */
#include "tok_impl.h"
#include "utf8.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_GROWTH_MAX 16u           /* text rules lengthen a text at most this many
                                        times (+ 4 KiB): a few KB of tokenizer.json
                                        must not turn a prompt into gigabytes */

/* ------------------------------------------------------ a model's files */

/* GPT-2's special tokens as tokenizer_config.json and special_tokens_map.json
 * name them (either may be missing or not JSON: then it names none). */
static int mark_declared(tok *t, tok_file_fn get, void *ctx, ierr *err)
{
    static const char *const maps[] = { "tokenizer_config.json", "special_tokens_map.json" };
    for (size_t k = 0; k < sizeof maps / sizeof maps[0]; k++) {
        char *data = NULL;
        size_t len = 0;
        ierr e = IERR_INIT;
        int rc = get(ctx, maps[k], &data, &len, &e);
        if (rc == 0)
            gpt2_mark_declared(t, data, len);
        free(data);
        if (rc < 0 && rc != -ENOENT)
            return ierr_set(err, rc, "%s", e.msg);
    }
    return 0;
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
    if (rc == 0 && (rc = mark_declared(*out, get, ctx, err)) < 0) {
        tok_free(*out);
        *out = NULL;
    }
    free(a);
    free(b);
    return rc;
}

/* ------------------------------------------------------------- the tables */

tok_scheme tok_scheme_of(const tok *t)
{
    return t ? t->scheme : TOK_GPT2;
}

const char *tok_scheme_name(tok_scheme s)
{
    switch (s) {
    case TOK_GPT2:      return "gpt2-bpe";
    case TOK_SP_BPE:    return "sp-bpe";
    case TOK_BYTELEVEL: return "bytelevel-bpe";
    }
    return "?";
}

int64_t tok_vocab_size(const tok *t)
{
    return t ? t->n : 0;
}

int tok_piece(const tok *t, int32_t id, const char **piece, size_t *len)
{
    if (!t || id < 0 || id >= t->n)
        return -1;
    *piece = vocab_ptr(t, t->piece[id]);
    *len = t->piece[id].len;
    return 0;
}

bool tok_declared_special(const tok *t, int32_t id)
{
    return t && id >= 0 && id < t->n && (t->flag[id] & TF_DECLARED);
}

int64_t tok_merge_count(const tok *t)
{
    return t ? (int64_t)t->nmerges : 0;
}

int tok_merge(const tok *t, int64_t rank, int32_t *left, int32_t *right, int32_t *merged)
{
    if (!t || rank < 0 || (uint64_t)rank >= t->nmerges)
        return -1;
    *left = t->mlist[rank].left;
    *right = t->mlist[rank].right;
    *merged = t->mlist[rank].merged;
    return 0;
}

/* ------------------------------------------------------ pre-tokenization */

int tok_set_split(tok *t, const char *pat, size_t len, uint32_t extra, const char *where, ierr *err)
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

/* ---------------------------------------------------------------- encode */

/* The state of one tok_encode call. */
typedef struct {
    bpe_scratch b;          /* per-word scratch; b.t the tokenizer */
    int32_t *ids;           /* [cap] the output: room for one id per byte of
                               each stretch after its text rules */
    size_t   nids, cap;
    pcre2_match_data *md;   /* with a split regex */
    ierr    *err;
} enc;

static int enc_word(enc *e, const unsigned char *w, size_t len)
{
    return bpe_word(&e->b, w, len, e->ids, &e->nids, e->err);
}

/* Split the text into words and encode each. */
static int enc_text(enc *e, const unsigned char *w, size_t len)
{
    const tok *t = e->b.t;
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
        const char *mk = vocab_ptr(t, t->mark);
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

/* Apply the text rules to in[0..n), a stretch that starts the text if
 * at_start: *out is malloc'd. */
static int apply_rules(const tok *t, const char *in, size_t n, bool at_start, char **out, size_t *on, ierr *err)
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
        const char *a = vocab_ptr(t, ru->a), *b = vocab_ptr(t, ru->b);
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
            if (len == 0 || (ru->first_only && !at_start) ||
                (ru->kind == RULE_PREPEND_UNLESS && len >= al && memcmp(cur, a, al) == 0))
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

/* One stretch of the text: its text rules, then words and BPE; the ids are
 * appended to e->ids (grown to fit). */
static int enc_stretch(enc *e, const char *text, size_t len, bool at_start)
{
    char *w = NULL;
    size_t wlen = 0;
    int rc = apply_rules(e->b.t, text, len, at_start, &w, &wlen, e->err);
    if (rc < 0)
        return rc;
    if (wlen > SIZE_MAX / sizeof *e->ids - 1 - e->nids) {   /* at most one id per byte */
        free(w);
        return ierr_set(e->err, -ENOMEM, "text: too long");
    }
    if (e->nids + wlen + 1 > e->cap) {
        size_t cap = e->nids + wlen + 1;
        int32_t *p = realloc(e->ids, cap * sizeof *p);
        if (!p) {
            free(w);
            return ierr_set(e->err, -ENOMEM, "text: out of memory");
        }
        e->ids = p;
        e->cap = cap;
    }
    rc = enc_text(e, (const unsigned char *)w, wlen);
    free(w);
    return rc;
}

/* A special token as the text spells it. */
typedef struct {
    const char *p;
    size_t      len;
    int32_t     id;
} special_piece;

/* Longest first; among equals the lower id. */
static int special_cmp(const void *a, const void *b)
{
    const special_piece *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The declared special and added tokens with a non-empty, valid UTF-8
 * piece (so a match never cuts a character), longest first; *out
 * malloc'd (NULL when there are none). */
static int special_pieces(const tok *t, special_piece **out, size_t *n, ierr *err)
{
    size_t k = 0;
    *out = NULL;
    *n = 0;
    for (int64_t id = 0; id < t->n; id++)
        k += (t->flag[id] & (TF_DECLARED | TF_ADDED)) != 0;
    if (k == 0)
        return 0;
    special_piece *v = malloc(k * sizeof *v);
    if (!v)
        return ierr_set(err, -ENOMEM, "text: out of memory");
    k = 0;
    for (int64_t id = 0; id < t->n; id++) {
        span sp = t->piece[id];
        const unsigned char *p = (const unsigned char *)vocab_ptr(t, sp);
        if ((t->flag[id] & (TF_DECLARED | TF_ADDED)) && sp.len && utf8_check(p, sp.len) == sp.len)
            v[k++] = (special_piece){ (const char *)p, sp.len, (int32_t)id };
    }
    qsort(v, k, sizeof *v, special_cmp);
    *out = v;
    *n = k;
    return 0;
}

/* The longest special piece that starts text[0..len), or NULL. */
static const special_piece *special_at(const special_piece *sp, size_t nsp, const char *text, size_t len)
{
    for (size_t k = 0; k < nsp; k++)
        if (sp[k].len <= len && sp[k].p[0] == text[0] && memcmp(sp[k].p, text, sp[k].len) == 0)
            return &sp[k];
    return NULL;
}

/* tok_encode and tok_encode_special: the whole text as one stretch, or cut
 * at the special pieces it spells. */
static int encode(const tok *t, const char *text, size_t len, bool special, int32_t **ids, size_t *n, ierr *err)
{
    enc e = { .b = { .t = t }, .err = err };
    special_piece *sp = NULL;
    size_t nsp = 0, bad;
    int rc;

    if (!t || !ids || !n || (!text && len))
        return ierr_set(err, -EINVAL, "tok_encode: missing argument");
    *ids = NULL;
    *n = 0;
    bad = utf8_check((const unsigned char *)text, len);
    if (bad < len)
        return ierr_set(err, -EILSEQ, "text: invalid UTF-8 at byte offset %zu", bad);
    e.md = t->re ? pcre2_match_data_create_from_pattern(t->re, NULL) : NULL;
    if (t->re && !e.md)
        rc = ierr_set(err, -ENOMEM, "text: out of memory");
    else
        rc = special ? special_pieces(t, &sp, &nsp, err) : 0;
    size_t start = 0, i = 0;   /* the stretch not yet encoded starts at start */
    while (rc == 0 && nsp && i < len) {
        const special_piece *m = special_at(sp, nsp, text + i, len - i);
        if (!m) {
            i++;
            continue;
        }
        if (i > start)
            rc = enc_stretch(&e, text + start, i - start, start == 0);
        if (rc == 0 && e.nids == e.cap) {
            int32_t *p = realloc(e.ids, (e.cap + 1) * sizeof *p);
            if (!p)
                rc = ierr_set(err, -ENOMEM, "text: out of memory");
            e.ids = p ? p : e.ids;
            e.cap += p != NULL;
        }
        if (rc == 0)
            e.ids[e.nids++] = m->id;
        start = i = i + m->len;
    }
    if (rc == 0 && (start < len || start == 0))
        rc = enc_stretch(&e, text + start, len - start, start == 0);
    free(sp);
    bpe_scratch_free(&e.b);
    pcre2_match_data_free(e.md);
    if (rc < 0) {
        free(e.ids);
        return rc;
    }
    *ids = e.ids;
    *n = e.nids;
    return 0;
}

int tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, ierr *err)
{
    return encode(t, text, len, false, ids, n, err);
}

int tok_encode_special(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, ierr *err)
{
    return encode(t, text, len, true, ids, n, err);
}

/* ---------------------------------------------------------------- decode */

int tok_piece_bytes(const tok *t, int32_t id, unsigned char *buf, size_t cap)
{
    if (!t || id < 0 || id >= t->n)
        return -1;
    size_t n = t->dec[id].len < cap ? t->dec[id].len : cap;
    if (n)
        memcpy(buf, vocab_ptr(t, t->dec[id]), n);
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
    const unsigned char *p = (const unsigned char *)vocab_ptr(s->t, s->t->dec[id]);
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
