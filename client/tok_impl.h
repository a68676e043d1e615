/* tok_impl.h: the inside of the tokenizer of tok.h, shared by the files that
 * build and use it; users include tok.h only.
 *   vocab.c           the tables: string arena, vocabulary and its piece
 *                     index, merge table and merge list, decode bytes
 *   bpe.c             the merge algorithm over one word
 *   gpt2_files.c      vocab.json + merges.txt (tok_new_gpt2) and the
 *                     special-token maps beside them
 *   tokenizer_json.c  tokenizer.json (tok_new_hf)
 *   tok.c             the public API: loading a model's files, the tables'
 *                     accessors, pre-tokenization and encoding, decoding
 * A loader fills a struct tok from vocab_new() on, ending with
 * vocab_build_decode(); from then on the struct is read-only. */
#ifndef INFLASH_TOK_IMPL_H
#define INFLASH_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8

#include "tok.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <pcre2.h>

#define TOK_PIECE_MAX 65536u         /* longest token string accepted, bytes */
#define TOK_IDS_MAX   (INT32_MAX / 4) /* largest vocabulary accepted */
#define TOK_RULES_MAX 8              /* text rules (normalizer steps etc.) */

/* GPT-2's pre-tokenizer (also HF ByteLevel's with use_regex). */
#define TOK_GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

typedef struct {
    size_t off, len;    /* bytes arena[off, off+len) */
} span;

typedef struct {
    uint64_t key;       /* left << 32 | right; UINT64_MAX = empty slot */
    int32_t  rank, id;  /* merge rank and the merged token */
} pairent;

typedef struct {
    int32_t left, right, merged;   /* ids of the parts and of their concatenation */
} merge_ent;

enum { RULE_PREPEND, RULE_PREPEND_UNLESS, RULE_REPLACE };

typedef struct {
    int  kind;          /* RULE_*: PREPEND_UNLESS skips a text that starts with a */
    span a, b;          /* PREPEND*: a = text; REPLACE: a -> b */
    bool first_only;    /* PREPEND*: only the stretch that starts the text, not one
                           after a special token (Metaspace prepend_scheme "first") */
} rule;

enum {
    TF_VOCAB    = 1,    /* in the model vocabulary (encoding looks it up) */
    TF_SPECIAL  = 2,    /* a control token: decodes to nothing */
    TF_MADE     = 4,    /* a byte symbol or the result of a merge */
    TF_ADDED    = 8,    /* defined by tokenizer.json's added_tokens */
    TF_DECLARED = 16,   /* named special by the files: tokenizer.json's
                           added_tokens, or a GPT-2 model's special-token maps
                           (tok_declared_special; encoding and decoding
                           do not look at it) */
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
    merge_ent *mlist;       /* [nmerges] every merge of the file by rank, a
                               repeated pair at each of its ranks */
    size_t   nmerges, mcap;
    int32_t  byte_sym[256]; /* byte-level: id of each byte's symbol, -1 none */
    int32_t  fallback[256]; /* byte fallback: id of <0xNN>, -1 none */
    bool     bytelevel;     /* words start as bytes, not characters */
    bool     byte_fallback, fuse_unk, ignore_merges;
    bool     batch_merges;  /* GPT-2 merge order (bpe.c) */
    int32_t  unk;           /* -1: none */
    rule     rules[TOK_RULES_MAX];
    size_t   nrules;
    pcre2_code *re;         /* split by regex (owned), or NULL */
    bool     split_mark;    /* split before each occurrence of mark */
    span     mark;
    bool     strip_first;   /* decoder drops one leading space (Strip) */
};

static inline const char *vocab_ptr(const tok *t, span s)
{
    return t->arena + s.off;
}

/* ---- vocab.c ---- */
tok    *vocab_new(void);   /* empty, no ids; NULL when out of memory */
/* Copy n bytes into the arena; *s gets their place. */
int     vocab_arena_add(tok *t, const void *p, size_t n, span *s, ierr *err);
/* Size the per-id tables for n ids. */
int     vocab_alloc_ids(tok *t, int64_t n, ierr *err);
/* The model vocabulary: an object piece -> id, ids unique and in [0, t->n). */
int     vocab_load(tok *t, json_t *obj, const char *what, ierr *err);
/* Index the TF_VOCAB pieces (after vocab_load and any added tokens). */
int     vocab_index(tok *t, ierr *err);
/* The TF_VOCAB id spelled p[0..n), or -1. */
int32_t vocab_find(const tok *t, const void *p, size_t n);
/* Room for nmerges merges (ranks 0 .. nmerges-1). */
int     vocab_merges_alloc(tok *t, size_t nmerges, ierr *err);
/* Merge `a b` at `rank` (the next rank: merges come in rank order). */
int     vocab_add_merge(tok *t, const char *a, size_t alen, const char *b, size_t blen, size_t rank,
                        const char *where, ierr *err);
/* A merge written "a b" (exactly one space). */
int     vocab_add_merge_str(tok *t, const char *s, size_t n, size_t rank, const char *where, ierr *err);
/* The merge of ids (a, b): its rank and result; false if there is none. */
bool    vocab_pair(const tok *t, int32_t a, int32_t b, int32_t *rank, int32_t *id);
/* A short printable rendering of a token for error messages, in buf. */
const char *vocab_quote(const char *s, size_t n, char *buf, size_t cap);
/* Byte-level: the id of each byte's GPT-2 character (t->byte_sym), which
 * counts as made (TF_MADE). */
void    vocab_byte_symbols(tok *t);
/* The last step of every loader, once scheme and flags are final: the bytes
 * each token decodes to (t->dec). */
int     vocab_build_decode(tok *t, ierr *err);

/* ---- bpe.c ---- */
/* Scratch of one tok_encode call, grown to the longest word so far. */
typedef struct bpe_sym bpe_sym;   /* a symbol of the word (bpe.c) */
typedef struct bpe_ent bpe_ent;   /* a queued merge (bpe.c) */
typedef struct {
    const tok *t;           /* the tokenizer encoding (set by the caller) */
    size_t   cap;           /* bytes of the longest word the arrays fit */
    bpe_sym *sym;           /* [cap] */
    bpe_ent *heap, *batch;  /* [3 cap + 1]: each merge pushes at most 2 pairs;
                               batch only with batch_merges */
    size_t   nheap;
    unsigned char *mapped;  /* [2 cap + 1] only with ignore_merges */
} bpe_scratch;

/* One word w[0..len) (valid UTF-8) with b->t: its symbols (bytes, or
 * characters with byte fallback or unk), merged by rank; the ids are
 * appended to ids[*nids..] (room for len more). */
int  bpe_word(bpe_scratch *b, const unsigned char *w, size_t len, int32_t *ids, size_t *nids, ierr *err);
/* Free the arrays (b->t stays). */
void bpe_scratch_free(bpe_scratch *b);

/* ---- gpt2_files.c ---- */
/* Mark as TF_DECLARED the tokens a tokenizer_config.json or
 * special_tokens_map.json names (bos_token ... mask_token,
 * additional_special_tokens, added_tokens_decoder entries with special
 * true). Text that is not such JSON marks nothing. */
void gpt2_mark_declared(tok *t, const char *json, size_t len);

/* ---- tok.c ---- */
/* Pre-tokenize by the regex pat[0..len) (pcre2 options extra besides
 * UTF and UCP); where names the source in an error. */
int tok_set_split(tok *t, const char *pat, size_t len, uint32_t extra, const char *where, ierr *err);

#endif
