/* tokenizer_json.c: a tokenizer from a Hugging Face tokenizer.json
 * (tok_new_hf): model BPE (vocab, merges, byte_fallback, unk, fuse_unk,
 * ignore_merges), added_tokens, and the normalizer, pre_tokenizer and
 * decoder steps inflash supports (Prepend, Replace; ByteLevel, Metaspace,
 * Split; the decoders that follow from the scheme). Anything else is
 * refused with an error naming the field. */
#include "tok_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TJ "tokenizer.json"

static int add_rule(tok *t, int kind, const char *a, size_t alen, const char *b, size_t blen,
                    ierr *err)
{
    if (t->nrules == TOK_RULES_MAX)
        return ierr_set(err, -EINVAL, "tokenizer.json: more than %d normalizer/pre-tokenizer steps",
                        TOK_RULES_MAX);
    rule *r = &t->rules[t->nrules];
    int rc = vocab_arena_add(t, a, alen, &r->a, err);
    if (rc == 0)
        rc = vocab_arena_add(t, b, blen, &r->b, err);
    if (rc < 0)
        return rc;
    r->kind = kind;
    t->nrules++;
    return 0;
}

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
            return tok_set_split(t, TOK_GPT2_PATTERN, sizeof TOK_GPT2_PATTERN - 1, 0, TJ, err);
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
        bool first = false;
        if (json_is_string(ps)) {   /* "first": not after a special token (tok_encode_special) */
            const char *s = json_string_value(ps);
            if (strcmp(s, "never") != 0 && strcmp(s, "always") != 0 && strcmp(s, "first") != 0)
                return ierr_set(err, -EINVAL, TJ ": %s.prepend_scheme \"%s\" is not supported",
                                where, s);
            prefix = strcmp(s, "never") != 0;
            first = strcmp(s, "first") == 0;
        }
        const char *rs = json_string_value(r);
        size_t rl = json_string_length(r);
        if ((rc = add_rule(t, RULE_REPLACE, " ", 1, rs, rl, err)) < 0)
            return rc;
        if (prefix && (rc = add_rule(t, RULE_PREPEND_UNLESS, rs, rl, "", 0, err)) < 0)
            return rc;
        if (prefix)
            t->rules[t->nrules - 1].first_only = first;
        if (split) {
            t->split_mark = true;
            return vocab_arena_add(t, rs, rl, &t->mark, err);
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
        return tok_set_split(t, json_string_value(pat), json_string_length(pat),
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
    if ((rc = vocab_merges_alloc(t, json_array_size(merges), err)) < 0)
        return rc;
    json_array_foreach(merges, i, e) {
        char where[64];
        snprintf(where, sizeof where, TJ ": model.merges[%zu]", i);
        if (json_is_string(e)) {
            rc = vocab_add_merge_str(t, json_string_value(e), json_string_length(e), i, where, err);
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            json_t *a = json_array_get(e, 0), *b = json_array_get(e, 1);
            rc = vocab_add_merge(t, json_string_value(a), json_string_length(a), json_string_value(b),
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
 * special) or a new id. Every entry counts as declared (TF_DECLARED); only
 * those with "special": true are control tokens. */
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
            if ((rc = vocab_arena_add(t, json_string_value(c), json_string_length(c), &t->piece[v],
                                err)) < 0)
                return rc;
            t->flag[v] |= TF_ADDED;
        }
        t->flag[v] |= TF_DECLARED;
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
    t = vocab_new();
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
        (rc = vocab_alloc_ids(t, n, err)) < 0 ||
        (rc = vocab_load(t, vocab, TJ ": model.vocab", err)) < 0 ||
        (rc = parse_added(t, added, err)) < 0)
        goto fail;
    for (int64_t id = 0; id < n; id++) {
        if (!(t->flag[id] & (TF_VOCAB | TF_ADDED))) {
            rc = ierr_set(err, -EINVAL, TJ ": id %lld is neither in model.vocab nor in added_tokens",
                          (long long)id);
            goto fail;
        }
    }
    if ((rc = vocab_index(t, err)) < 0)
        goto fail;

    v = json_object_get(model, "unk_token");
    if (json_is_string(v)) {
        t->unk = vocab_find(t, json_string_value(v), json_string_length(v));
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
        t->fallback[b] = vocab_find(t, name, 6);
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
        vocab_byte_symbols(t);
    } else {
        t->scheme = TOK_SP_BPE;
    }
    if ((rc = vocab_build_decode(t, err)) < 0)
        goto fail;
    json_decref(root);
    *out = t;
    return 0;
fail:
    json_decref(root);
    tok_free(t);
    return rc;
}
