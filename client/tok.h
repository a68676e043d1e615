/* tok.h: the tokenizers the client needs, built from the tokenizer files as
 * the mount (or the store) serves them:
 *   - GPT-2-style byte-level BPE from vocab.json + merges.txt (OPT): bytes
 *     mapped through GPT-2's bytes_to_unicode, pre-tokenized with GPT-2's
 *     regex (PCRE2, Unicode), merges applied by rank;
 *   - tokenizer.json (HF tokenizers): model BPE either SentencePiece-style
 *     (normalizer Prepend/Replace "▁", byte_fallback <0xNN> pieces; Llama)
 *     or byte-level (pre_tokenizer ByteLevel).
 * Decoding is streamed: tok_stream turns ids into bytes and only ever emits
 * complete UTF-8 sequences (an incomplete one is held until it completes). */
#ifndef INFLASH_TOK_H
#define INFLASH_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum { TOK_GPT2 = 0, TOK_SP_BPE = 1, TOK_BYTELEVEL = 2 } tok_scheme;

typedef struct tok tok;   /* immutable after construction */

int  tok_new_gpt2(const char *vocab_json, size_t vocab_len,
                  const char *merges_txt, size_t merges_len, tok **out, ierr *err);
int  tok_new_hf(const char *tokenizer_json, size_t len, tok **out, ierr *err);
/* Gets one tokenizer file by name: *data malloc'd (caller frees), -ENOENT
 * if the model has no such file. */
typedef int (*tok_file_fn)(void *ctx, const char *name, char **data, size_t *len, ierr *err);
/* A model's tokenizer from its files: tokenizer.json if there is one, else
 * GPT-2 vocab.json + merges.txt (-ENOENT if neither), with the special
 * tokens tokenizer_config.json and special_tokens_map.json name, if present
 * (tok_declared_special). */
int  tok_new_files(tok_file_fn get, void *ctx, tok **out, ierr *err);
void tok_free(tok *t);

tok_scheme tok_scheme_of(const tok *t);
/* The scheme as the store names it (format.h meta "tokenizer"): "gpt2-bpe",
 * "sp-bpe" or "bytelevel-bpe". */
const char *tok_scheme_name(tok_scheme s);
int64_t    tok_vocab_size(const tok *t);   /* ids are [0, size), all defined */

/* The vocabulary and merges as the files spell them (inflash-pack records
 * them in the store's tokens and merges tables, format.h section 4).
 * tok_piece: the token's string (GPT-2 byte-to-unicode form, or
 * SentencePiece "▁" form; not NUL-terminated, valid while t lives), or -1
 * for an id out of range. */
int  tok_piece(const tok *t, int32_t id, const char **piece, size_t *len);
/* Named special by the files: an entry of tokenizer.json's added_tokens, or
 * a token GPT-2's tokenizer_config.json / special_tokens_map.json name
 * (tok_new_files only). Not the same as decoding to nothing: that is
 * added_tokens' "special": true, and for GPT-2 files every token that is
 * neither a byte nor a merge result and is spelled <...>. */
bool tok_declared_special(const tok *t, int32_t id);
/* Every merge of the file in rank order, rank 0 first (a pair listed twice
 * is here twice; encoding uses its later rank). tok_merge gives the ids of
 * the two parts and of the merged token, or -1 for a rank out of range. */
int64_t tok_merge_count(const tok *t);
int  tok_merge(const tok *t, int64_t rank, int32_t *left, int32_t *right, int32_t *merged);

/* Encode text (len bytes; must be valid UTF-8, else an error naming the
 * byte offset). No BOS is added here: the caller prepends the model's BOS.
 * *ids is malloc'd (caller frees). Text that spells a special token ("<s>")
 * is encoded as plain characters. */
int tok_encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, ierr *err);
/* The same, except that the declared special and added tokens
 * (tok_declared_special: tokenizer.json's added_tokens, GPT-2's special-token
 * maps) spelled in the text become their ids: at each place the longest such
 * piece that starts there, the leftmost first; the stretches between them
 * are encoded as tok_encode does (text rules per stretch, as HF tokenizers
 * normalizes each part around an added token). llama.cpp's parse_special. */
int tok_encode_special(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n, ierr *err);

/* The raw bytes of one token (byte-level: un-mapped; SentencePiece: "▁" ->
 * " ", <0xNN> -> that byte). Returns the count written (<= cap) or -1 for an
 * id out of range. Special tokens (<s>, </s>, ...) decode to "". */
int tok_piece_bytes(const tok *t, int32_t id, unsigned char *buf, size_t cap);

/* Streaming decoder over one generation. */
typedef struct {
    const tok    *t;
    int           first;        /* SentencePiece: strip one leading space of
                                   the first emitted piece (HF Strip decoder) */
    unsigned char pend[8];      /* bytes of an incomplete UTF-8 sequence */
    size_t        npend;
} tok_stream;

void tok_stream_init(tok_stream *s, const tok *t);
/* Append the bytes of `id` to out (cap bytes), returning how many complete
 * bytes were written; incomplete UTF-8 stays pending. */
size_t tok_stream_put(tok_stream *s, int32_t id, char *out, size_t cap);
/* Flush what is pending at the end (invalid leftovers become U+FFFD). */
size_t tok_stream_end(tok_stream *s, char *out, size_t cap);

#endif
