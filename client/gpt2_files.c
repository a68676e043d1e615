/* gpt2_files.c: a GPT-2 (OPT) tokenizer from its files: vocab.json (piece
 * -> id) and merges.txt (an optional "#version" line, then "a b" per line,
 * rank order), tok_new_gpt2; and the special tokens that
 * tokenizer_config.json and special_tokens_map.json name (TF_DECLARED).
 * vocab.json does not say which tokens are control tokens; they are taken
 * to be those neither a byte nor a merge result and spelled <...>. */
#include "tok_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    t = vocab_new();
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
    if ((rc = vocab_alloc_ids(t, (int64_t)json_object_size(root), err)) < 0 ||
        (rc = vocab_load(t, root, "vocab.json", err)) < 0 ||
        (rc = vocab_index(t, err)) < 0)
        goto fail;
    vocab_byte_symbols(t);
    t->unk = vocab_find(t, "<unk>", 5);

    /* merges.txt: an optional "#version" first line, then "a b" per line */
    size_t nlines = 1;
    for (size_t i = 0; i < merges_len; i++)
        nlines += merges_txt[i] == '\n';
    if ((rc = vocab_merges_alloc(t, nlines, err)) < 0)
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
        if ((rc = vocab_add_merge_str(t, line, ll, rank++, where, err)) < 0)
            goto fail;
    }

    /* control tokens: neither a byte nor a merge result, spelled <...> */
    for (int64_t id = 0; id < t->n; id++) {
        span s = t->piece[id];
        const char *p = vocab_ptr(t, s);
        if (!(t->flag[id] & TF_MADE) && s.len >= 3 && p[0] == '<' && p[s.len - 1] == '>')
            t->flag[id] |= TF_SPECIAL;
    }
    if ((rc = tok_set_split(t, TOK_GPT2_PATTERN, sizeof TOK_GPT2_PATTERN - 1, 0, "tokenizer", err)) < 0 ||
        (rc = vocab_build_decode(t, err)) < 0)
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    json_decref(root);
    tok_free(t);
    return rc;
}

void gpt2_mark_declared(tok *t, const char *json, size_t len)
{
    static const char *const keys[] = { "bos_token", "eos_token", "unk_token", "pad_token",
                                        "sep_token", "cls_token", "mask_token" };
    json_t *root = json_loadb(json, len, 0, NULL), *names = json_array(), *v, *dec;
    const char *key;
    size_t i;

    if (!root || !names)
        goto done;
    for (i = 0; i < sizeof keys / sizeof keys[0]; i++)
        json_array_append(names, json_object_get(root, keys[i]));
    json_array_foreach(json_object_get(root, "additional_special_tokens"), i, v)
        json_array_append(names, v);
    json_object_foreach(json_object_get(root, "added_tokens_decoder"), key, dec) {
        if (json_is_true(json_object_get(dec, "special")))
            json_array_append(names, json_object_get(dec, "content"));
    }
    /* a name is a string or an AddedToken object {"content": ...} */
    json_array_foreach(names, i, v) {
        json_t *s = json_is_string(v) ? v : json_object_get(v, "content");
        if (!json_is_string(s))
            continue;
        for (int64_t id = 0; id < t->n; id++) {
            if (t->piece[id].len == json_string_length(s) &&
                memcmp(vocab_ptr(t, t->piece[id]), json_string_value(s), t->piece[id].len) == 0)
                t->flag[id] |= TF_DECLARED;
        }
    }
done:
    json_decref(names);
    json_decref(root);
}
