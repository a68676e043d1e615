/* test_tok.c: cmocka tests of the tokenizers (client/tok.h) against the
 * shared models' reference ids and texts (opt-relu-shakespeare: GPT-2 BPE;
 * stories260K: SentencePiece-BPE tokenizer.json with byte fallback), the
 * equivalent tokenizer.json spellings (byte-level, array merges, Metaspace),
 * the streaming decoder's UTF-8 handling, rejection of bad input, the
 * tables the store records (pieces, declared specials, merges), and
 * tok_encode_special (special tokens typed in the text) on both kinds. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tok.h"

#define HELD_OUT_START 1003857
#define HELD_OUT_END   1115394

/* ------------------------------------------------------------- helpers */

static char *shared_path(const char *rel)
{
    const char *dir = getenv("INFLASH_SHARED");
    static char path[4096];
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return path;
}

static char *slurp(const char *rel, size_t *len)
{
    FILE *f = fopen(shared_path(rel), "rb");
    if (!f)
        fail_msg("cannot open %s", shared_path(rel));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static json_t *load_json(const char *rel)
{
    json_error_t je;
    json_t *j = json_load_file(shared_path(rel), 0, &je);
    if (!j)
        fail_msg("%s: %s", rel, je.text);
    return j;
}

static tok *load_opt(void)
{
    size_t vl, ml;
    char *v = slurp("models/opt-relu-shakespeare/vocab.json", &vl);
    char *m = slurp("models/opt-relu-shakespeare/merges.txt", &ml);
    tok *t = NULL;
    ierr e = IERR_INIT;
    if (tok_new_gpt2(v, vl, m, ml, &t, &e) < 0)
        fail_msg("tok_new_gpt2: %s", e.msg);
    free(v);
    free(m);
    return t;
}

static tok *hf_from_string(const char *s)
{
    tok *t = NULL;
    ierr e = IERR_INIT;
    if (tok_new_hf(s, strlen(s), &t, &e) < 0)
        fail_msg("tok_new_hf: %s", e.msg);
    return t;
}

static tok *hf_from_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    assert_non_null(s);
    tok *t = hf_from_string(s);
    free(s);
    return t;
}

static tok *load_sp(void)
{
    size_t n;
    char *s = slurp("models/stories260K/tokenizer.json", &n);
    tok *t = NULL;
    ierr e = IERR_INIT;
    if (tok_new_hf(s, n, &t, &e) < 0)
        fail_msg("tok_new_hf: %s", e.msg);
    free(s);
    return t;
}

static void encode(const tok *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    ierr e = IERR_INIT;
    if (tok_encode(t, text, len, ids, n, &e) < 0)
        fail_msg("tok_encode: %s", e.msg);
}

/* Independent strict UTF-8 check (Unicode Table 3-7). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            k = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n)
            return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

/* Decode ids through a stream; every chunk must be valid UTF-8. strip < 0
 * keeps the stream's default for the first piece. *len gets the length. */
static char *decode(const tok *t, const int32_t *ids, size_t n, int strip, size_t *len)
{
    tok_stream s;
    size_t cap = 64, w = 0;
    char *out = malloc(cap), chunk[256];
    assert_non_null(out);
    tok_stream_init(&s, t);
    if (strip >= 0)
        s.first = strip;
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? tok_stream_put(&s, ids[i], chunk, sizeof chunk)
                         : tok_stream_end(&s, chunk, sizeof chunk);
        assert_true(valid_utf8((unsigned char *)chunk, k));
        while (w + k + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + w, chunk, k);
        w += k;
    }
    out[w] = 0;
    *len = w;
    return out;
}

/* ids from a JSON array, skipping the first `skip`. */
static int32_t *json_ids(json_t *a, size_t skip, size_t *n)
{
    assert_true(json_is_array(a));
    size_t m = json_array_size(a);
    assert_true(m >= skip);
    int32_t *ids = malloc((m - skip + 1) * sizeof *ids);
    assert_non_null(ids);
    for (size_t i = skip; i < m; i++)
        ids[i - skip] = (int32_t)json_integer_value(json_array_get(a, i));
    *n = m - skip;
    return ids;
}

static void assert_ids(const int32_t *got, size_t ngot, const int32_t *want, size_t nwant)
{
    assert_int_equal(ngot, nwant);
    for (size_t i = 0; i < nwant; i++) {
        if (got[i] != want[i])
            fail_msg("id %zu: got %d, want %d", i, got[i], want[i]);
    }
}

/* Encode text and compare with a JSON id array minus its first `skip`. */
static void check_encode(const tok *t, const char *text, json_t *want, size_t skip)
{
    size_t n, nw;
    int32_t *ids, *w = json_ids(want, skip, &nw);
    encode(t, text, strlen(text), &ids, &n);
    assert_ids(ids, n, w, nw);
    free(ids);
    free(w);
}

/* Encode then decode; must give the text back. */
static void check_roundtrip(const tok *t, const char *text, size_t len)
{
    int32_t *ids;
    size_t n, dl;
    encode(t, text, len, &ids, &n);
    char *d = decode(t, ids, n, -1, &dl);
    assert_int_equal(dl, len);
    assert_memory_equal(d, text, len);
    free(d);
    free(ids);
}

/* ------------------------------------------------------------------ OPT */

static void test_opt_reference(void **state)
{
    (void)state;
    tok *t = load_opt();
    json_t *ref = load_json("models/opt-relu-shakespeare/reference.json"), *p;
    size_t i;

    assert_int_equal(tok_scheme_of(t), TOK_GPT2);
    assert_int_equal(tok_vocab_size(t), 1024);
    json_array_foreach(json_object_get(ref, "prompts"), i, p) {
        json_t *pid = json_object_get(p, "prompt_ids");
        assert_int_equal(json_integer_value(json_array_get(pid, 0)), 2);  /* the caller's </s> */
        check_encode(t, json_string_value(json_object_get(p, "prompt")), pid, 1);

        size_t n, dl;
        int32_t *g = json_ids(json_object_get(p, "greedy_ids"), 0, &n);
        char *d = decode(t, g, n, -1, &dl);
        assert_string_equal(d, json_string_value(json_object_get(p, "greedy_text")));
        free(d);
        free(g);
    }
    assert_int_equal(i, 4);
    json_decref(ref);
    tok_free(t);
}

static void test_opt_heldout(void **state)
{
    (void)state;
    tok *t = load_opt();
    size_t len, n, dl;
    char *all = slurp("data/tinyshakespeare.txt", &len);
    int32_t *ids;

    assert_int_equal(len, HELD_OUT_END);
    encode(t, all + HELD_OUT_START, HELD_OUT_END - HELD_OUT_START, &ids, &n);
    assert_int_equal(n, 49421);
    char *d = decode(t, ids, n, -1, &dl);
    assert_int_equal(dl, HELD_OUT_END - HELD_OUT_START);
    assert_memory_equal(d, all + HELD_OUT_START, dl);

    /* tok_piece_bytes gives the same bytes */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char buf[64];
        int k = tok_piece_bytes(t, ids[i], buf, sizeof buf);
        assert_true(k >= 1);
        assert_memory_equal(buf, all + HELD_OUT_START + w, (size_t)k);
        w += (size_t)k;
    }
    assert_int_equal(w, dl);
    free(d);
    free(ids);
    free(all);
    tok_free(t);
}

static void test_opt_pieces(void **state)
{
    (void)state;
    tok *t = load_opt();
    unsigned char buf[16];

    for (int32_t id = 0; id < 4; id++)   /* <s> <pad> </s> <unk> */
        assert_int_equal(tok_piece_bytes(t, id, buf, sizeof buf), 0);
    for (int b = 0; b < 256; b++) {      /* id 4 + byte */
        assert_int_equal(tok_piece_bytes(t, 4 + b, buf, sizeof buf), 1);
        assert_int_equal(buf[0], b);
    }
    assert_int_equal(tok_piece_bytes(t, -1, buf, sizeof buf), -1);
    assert_int_equal(tok_piece_bytes(t, 1024, buf, sizeof buf), -1);

    int32_t *ids;
    size_t n;
    encode(t, "", 0, &ids, &n);
    assert_int_equal(n, 0);
    free(ids);

    /* "</s>" in the text is plain text, not the control token */
    encode(t, "</s>", 4, &ids, &n);
    for (size_t i = 0; i < n; i++)
        assert_true(ids[i] >= 4);
    free(ids);

    /* UTF-8 round trips through the byte symbols */
    static const char *probes[] = { "\xc3\xa9", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac",
                                    "\xf0\x9f\x98\x80 ok", "  two  spaces \t\n\n x",
                                    "I'll don't 123 4567", "\x01\x7f\xc2\x80" };
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
        check_roundtrip(t, probes[i], strlen(probes[i]));
    check_roundtrip(t, "a\0b", 3);
    tok_free(t);
}

/* ------------------------------------------------------------ stories260K */

static void test_sp_reference(void **state)
{
    (void)state;
    tok *t = load_sp();
    json_t *ref = load_json("models/stories260K/reference.json"), *p;
    size_t i;

    assert_int_equal(tok_scheme_of(t), TOK_SP_BPE);
    assert_int_equal(tok_vocab_size(t), 512);
    json_array_foreach(json_object_get(ref, "prompts"), i, p) {
        json_t *pid = json_object_get(p, "prompt_ids");
        assert_int_equal(json_integer_value(json_array_get(pid, 0)), 1);   /* BOS */
        check_encode(t, json_string_value(json_object_get(p, "prompt")), pid, 1);

        /* greedy_text: the greedy ids alone; full_text: BOS + prompt + greedy */
        size_t ng, np, dl;
        int32_t *g = json_ids(json_object_get(p, "greedy_ids"), 0, &ng);
        char *d = decode(t, g, ng, -1, &dl);
        assert_string_equal(d, json_string_value(json_object_get(p, "greedy_text")));
        free(d);
        int32_t *all = json_ids(pid, 0, &np);
        all = realloc(all, (np + ng) * sizeof *all);
        assert_non_null(all);
        memcpy(all + np, g, ng * sizeof *g);
        d = decode(t, all, np + ng, -1, &dl);
        assert_string_equal(d, json_string_value(json_object_get(p, "full_text")));
        free(d);
        free(all);
        free(g);
    }
    assert_int_equal(i, 3);

    /* the README's examples (the caller prepends BOS) */
    static const int32_t once[] = { 403, 407, 261, 378 }, lily[] = { 317, 269, 368, 302 };
    int32_t *ids;
    size_t n;
    encode(t, "Once upon a time", 16, &ids, &n);
    assert_ids(ids, n, once, 4);
    free(ids);
    encode(t, "Lily and Ben", 12, &ids, &n);
    assert_ids(ids, n, lily, 4);
    free(ids);
    encode(t, "", 0, &ids, &n);
    assert_int_equal(n, 0);
    free(ids);

    /* tokenizer_check probes; "<s> literal" stays plain text (llama2.c's ids) */
    const char *key;
    json_object_foreach(json_object_get(json_object_get(ref, "tokenizer_check"), "prompts"), key, p) {
        int literal = strcmp(key, "<s> literal") == 0;
        check_encode(t, key, json_object_get(p, literal ? "llama2c" : "tokenizer_json"), 1);
    }
    json_decref(ref);
    tok_free(t);
}

static void test_sp_run_c(void **state)
{
    (void)state;
    tok *t = load_sp();
    json_t *ref = load_json("models/stories260K/reference.json");
    size_t n, dl, len;
    int32_t *ids = json_ids(json_object_get(json_object_get(ref, "run_c_greedy_256"), "ids"), 0, &n);
    char *want = slurp("models/stories260K/reference_greedy_run_c.txt", &len);

    assert_int_equal(n, 256);
    assert_true(len > 0 && want[len - 1] == '\n');
    char *d = decode(t, ids, n, -1, &dl);
    assert_int_equal(dl, len - 1);
    assert_memory_equal(d, want, len - 1);
    free(d);
    free(want);
    free(ids);
    json_decref(ref);
    tok_free(t);
}

static void test_sp_tinystories(void **state)
{
    (void)state;
    tok *t = load_sp();
    size_t len, n;
    char *text = slurp("data/TinyStories-valid-subset.txt", &len);
    int32_t *ids;

    /* README: the whole file is 15,555 ids with BOS, the first 2000
     * characters (ASCII) 982 */
    encode(t, text, len, &ids, &n);
    assert_int_equal(n, 15554);
    free(ids);
    encode(t, text, 2000, &ids, &n);
    assert_int_equal(n, 981);
    free(ids);
    check_roundtrip(t, text, len);
    free(text);
    tok_free(t);
}

static void test_sp_utf8(void **state)
{
    (void)state;
    tok *t = load_sp();
    static const char *probes[] = { "\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "\xf0\x9f\x98\x80",
                                    "caf\xc3\xa9 \xe2\x98\x83 \xe6\x97\xa5\xe6\x9c\xac",
                                    " lead", "\t\r\n", "a\0b" };
    for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
        check_roundtrip(t, probes[i], i == 6 ? 3 : strlen(probes[i]));

    /* the emoji is "▁" + 4 byte-fallback pieces; streamed one at a time, the
     * bytes appear only when the character is complete */
    int32_t *ids;
    size_t n;
    encode(t, "\xf0\x9f\x98\x80", 4, &ids, &n);
    assert_int_equal(n, 5);
    static const int32_t want[] = { 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80 };
    assert_ids(ids + 1, 4, want, 4);
    tok_stream s;
    char out[64];
    tok_stream_init(&s, t);
    assert_int_equal(tok_stream_put(&s, ids[0], out, sizeof out), 0);   /* " " stripped */
    for (int i = 1; i < 4; i++)
        assert_int_equal(tok_stream_put(&s, ids[i], out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, ids[4], out, sizeof out), 4);
    assert_memory_equal(out, "\xf0\x9f\x98\x80", 4);
    assert_int_equal(tok_stream_end(&s, out, sizeof out), 0);
    free(ids);

    /* each CJK character arrives in byte pieces, output only when complete */
    encode(t, "\xe6\x97\xa5\xe6\x9c\xac", 6, &ids, &n);
    tok_stream_init(&s, t);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = tok_stream_put(&s, ids[i], out, sizeof out);
        assert_true(k == 0 || k == 3);
        assert_true(valid_utf8((unsigned char *)out, k));
        total += k;
    }
    assert_int_equal(total, 6);
    free(ids);
    tok_free(t);
}

/* Byte-fallback ids (3 + byte) fed so the UTF-8 is broken. */
static void test_stream_invalid(void **state)
{
    (void)state;
    tok *t = load_sp();
    tok_stream s;
    char out[64];
    size_t k;

    tok_stream_init(&s, t);
    assert_int_equal(tok_stream_put(&s, 3 + 0x20, out, sizeof out), 0);   /* first space stripped */
    assert_int_equal(tok_stream_put(&s, 3 + 0x20, out, sizeof out), 1);   /* later ones kept */
    assert_int_equal(tok_stream_put(&s, 3 + 0xE6, out, sizeof out), 0);   /* held */
    k = tok_stream_put(&s, 3 + 0x41, out, sizeof out);                     /* not a continuation */
    assert_int_equal(k, 4);
    assert_memory_equal(out, "\xef\xbf\xbd" "A", 4);
    k = tok_stream_put(&s, 3 + 0x80, out, sizeof out);                     /* lone continuation */
    assert_int_equal(k, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    k = tok_stream_put(&s, 3 + 0xED, out, sizeof out);                     /* surrogate lead */
    assert_int_equal(k, 0);
    k = tok_stream_put(&s, 3 + 0xA0, out, sizeof out);
    assert_int_equal(k, 6);                                                /* two maximal subparts */
    assert_memory_equal(out, "\xef\xbf\xbd\xef\xbf\xbd", 6);
    assert_int_equal(tok_stream_put(&s, 3 + 0xF0, out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, 3 + 0x9F, out, sizeof out), 0);
    k = tok_stream_end(&s, out, sizeof out);                               /* unfinished at the end */
    assert_int_equal(k, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(tok_stream_end(&s, out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, 512, out, sizeof out), 0);        /* out of range */
    assert_int_equal(tok_stream_put(&s, -1, out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, 1, out, sizeof out), 0);          /* <s> */
    tok_free(t);

    /* GPT-2: id 4 + byte; a character split over byte tokens */
    t = load_opt();
    tok_stream_init(&s, t);
    assert_int_equal(tok_stream_put(&s, 4 + ' ', out, sizeof out), 1);    /* no strip */
    assert_int_equal(tok_stream_put(&s, 4 + 0xE6, out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, 4 + 0x97, out, sizeof out), 0);
    assert_int_equal(tok_stream_put(&s, 4 + 0xA5, out, sizeof out), 3);
    assert_memory_equal(out, "\xe6\x97\xa5", 3);
    assert_int_equal(tok_stream_put(&s, 2, out, sizeof out), 0);          /* </s> */
    tok_free(t);
}

static void check_bad_utf8(const tok *t)
{
    static const struct { const char *s; size_t len, off; } bad[] = {
        { "\xff", 1, 0 },            { "abc\xc3", 4, 3 },          { "ab\xed\xa0\x80", 5, 2 },
        { "\xc0\xaf", 2, 0 },        { "ok \xf4\x90\x80\x80", 7, 3 }, { "x\x80y", 3, 1 },
        { "\xe6\x97", 2, 0 },        { "\xf0\x9f\x98", 3, 0 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ierr e = IERR_INIT;
        static int32_t dummy;
        int32_t *ids = &dummy;
        size_t n = 99;
        char want[64];
        assert_true(tok_encode(t, bad[i].s, bad[i].len, &ids, &n, &e) < 0);
        assert_null(ids);
        snprintf(want, sizeof want, "offset %zu", bad[i].off);
        if (!strstr(e.msg, want))
            fail_msg("case %zu: \"%s\" does not name %s", i, e.msg, want);
    }
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    tok *t = load_opt();
    check_bad_utf8(t);
    tok_free(t);
    t = load_sp();
    check_bad_utf8(t);
    tok_free(t);
}

/* ---------------------------------------------------------- malformed files */

static void expect_gpt2_error(const char *vocab, const char *merges, const char *part)
{
    tok *t = (tok *)1;
    ierr e = IERR_INIT;
    assert_true(tok_new_gpt2(vocab, strlen(vocab), merges, strlen(merges), &t, &e) < 0);
    assert_null(t);
    if (!strstr(e.msg, part))
        fail_msg("error \"%s\" lacks \"%s\"", e.msg, part);
}

static void test_malformed_gpt2(void **state)
{
    (void)state;
    const char *v = "{\"a\": 0, \"b\": 1, \"ab\": 2}";
    expect_gpt2_error("", "", "vocab.json");
    expect_gpt2_error("{\"a\": 0,", "", "vocab.json");
    expect_gpt2_error("[1, 2]", "", "vocab.json");
    expect_gpt2_error("{}", "", "vocab.json");
    expect_gpt2_error("{\"a\": \"0\"}", "", "not an integer");
    expect_gpt2_error("{\"a\": 0, \"b\": 0}", "", "used twice");
    expect_gpt2_error("{\"a\": 0, \"b\": 2}", "", "outside");
    expect_gpt2_error("{\"a\": -1}", "", "outside");
    expect_gpt2_error("{\"a\": 0, \"a\": 1}", "", "vocab.json");
    expect_gpt2_error(v, "#version: 0.2\na b c\n", "merges.txt line 2");
    expect_gpt2_error(v, "#version: 0.2\nab\n", "merges.txt line 2");
    expect_gpt2_error(v, "a b\na x\n", "merges.txt line 2");
    expect_gpt2_error(v, "b a\n", "merged token");
    expect_gpt2_error(v, " a\n", "merges.txt line 1");
    expect_gpt2_error(v, "#version\na  b\n", "merges.txt line 2");

    /* and a minimal valid one */
    tok *t = NULL;
    ierr e = IERR_INIT;
    assert_int_equal(tok_new_gpt2(v, strlen(v), "#version: 0.2\r\na b\r\n", 20, &t, &e), 0);
    int32_t *ids;
    size_t n;
    encode(t, "abab", 4, &ids, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], 2);
    assert_int_equal(ids[1], 2);
    free(ids);
    /* a byte without a symbol and no <unk>: an error, not a crash */
    assert_true(tok_encode(t, "abc", 3, &ids, &n, &e) < 0);
    tok_free(t);
    assert_true(tok_new_gpt2(NULL, 0, "", 0, &t, &e) < 0);
}

static void expect_hf_error(const char *json, const char *part)
{
    tok *t = (tok *)1;
    ierr e = IERR_INIT;
    assert_true(tok_new_hf(json, strlen(json), &t, &e) < 0);
    assert_null(t);
    if (!strstr(e.msg, part))
        fail_msg("error \"%s\" lacks \"%s\"", e.msg, part);
}

#define HF_VOCAB "\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"<unk>\": 3}"
#define HF_MODEL(extra) "{\"model\": {\"type\": \"BPE\", " HF_VOCAB ", \"merges\": [\"a b\"]" extra "}"

static void test_malformed_hf(void **state)
{
    (void)state;
    expect_hf_error("", "tokenizer.json");
    expect_hf_error("{\"model\": ", "tokenizer.json");
    expect_hf_error("[]", "model");
    expect_hf_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "model.type \"Unigram\"");
    expect_hf_error("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "model.type");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "model.vocab");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", " HF_VOCAB "}}", "model.merges");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", " HF_VOCAB ", \"merges\": [\"a c\"]}}",
                    "model.merges[0]");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", " HF_VOCAB ", \"merges\": [\"a b\", 7]}}",
                    "model.merges[1]");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", " HF_VOCAB ", \"merges\": [[\"a\"]]}}",
                    "model.merges[0]");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", " HF_VOCAB ", \"merges\": [\"b a\"]}}",
                    "merged token");
    expect_hf_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 5}, \"merges\": []}}",
                    "id 0");
    expect_hf_error(HF_MODEL(", \"dropout\": 0.1}"), "model.dropout");
    expect_hf_error(HF_MODEL(", \"continuing_subword_prefix\": \"##\"}"), "continuing_subword_prefix");
    expect_hf_error(HF_MODEL(", \"byte_fallback\": 3}"), "byte_fallback");
    expect_hf_error(HF_MODEL(", \"unk_token\": \"<nope>\"}"), "unk_token");
    expect_hf_error(HF_MODEL("}, \"normalizer\": {\"type\": \"NFKC\"}"), "normalizer type \"NFKC\"");
    expect_hf_error(HF_MODEL("}, \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": "
                             "[{\"type\": \"Lowercase\"}]}"), "\"Lowercase\"");
    expect_hf_error(HF_MODEL("}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": "
                             "{\"Regex\": \" \"}, \"content\": \"x\"}"), "Regex");
    expect_hf_error(HF_MODEL("}, \"normalizer\": {\"prepend\": \"x\"}"), "normalizer");
    expect_hf_error(HF_MODEL("}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}"),
                    "pre_tokenizer type \"Whitespace\"");
    expect_hf_error(HF_MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                             "{\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}"), "regex");
    expect_hf_error(HF_MODEL("}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": "
                             "{\"Regex\": \"a\"}, \"behavior\": \"Removed\"}"), "behavior");
    expect_hf_error(HF_MODEL("}, \"decoder\": {\"type\": \"WordPiece\"}"),
                    "decoder type \"WordPiece\"");
    expect_hf_error(HF_MODEL("}, \"decoder\": {\"type\": \"Sequence\", \"decoders\": "
                             "[{\"type\": \"CTC\"}]}"), "\"CTC\"");
    expect_hf_error(HF_MODEL("}, \"added_tokens\": [{\"id\": -1, \"content\": \"x\"}]"),
                    "added_tokens[0]");
    expect_hf_error(HF_MODEL("}, \"added_tokens\": [{\"id\": 9, \"content\": \"x\"}]"),
                    "id 4");
    expect_hf_error(HF_MODEL("}, \"added_tokens\": [{\"id\": 4, \"content\": 1}]"),
                    "added_tokens[0]");

    /* minimal valid: no normalizer, characters, unk for the rest */
    tok *t = hf_from_string(HF_MODEL(", \"unk_token\": \"<unk>\", \"fuse_unk\": true}, "
                                     "\"added_tokens\": [{\"id\": 4, \"content\": \"<x>\", "
                                     "\"special\": true}]"));
    int32_t *ids;
    size_t n;
    static const int32_t want[] = { 2, 3, 0 };
    encode(t, "abzzz\xc3\xa9" "a", 8, &ids, &n);   /* zzzé fuse into one unk */
    assert_ids(ids, n, want, 3);
    free(ids);
    assert_int_equal(tok_vocab_size(t), 5);
    unsigned char buf[8];
    assert_int_equal(tok_piece_bytes(t, 4, buf, sizeof buf), 0);
    tok_free(t);

    /* no unk and no byte fallback: an error naming the character */
    t = hf_from_string(HF_MODEL("}"));
    ierr e = IERR_INIT;
    assert_true(tok_encode(t, "z", 1, &ids, &n, &e) < 0);
    assert_non_null(strstr(e.msg, "U+007A"));
    tok_free(t);
}

/* ------------------------------------------- equivalent tokenizer.json forms */

/* The OPT tokenizer written as a byte-level tokenizer.json. */
static json_t *opt_as_hf(int array_merges, int split)
{
    json_error_t je;
    size_t ml;
    char *m = slurp("models/opt-relu-shakespeare/merges.txt", &ml);
    json_t *vocab = json_load_file(shared_path("models/opt-relu-shakespeare/vocab.json"), 0, &je);
    json_t *merges = json_array(), *added = json_array();
    assert_non_null(vocab);
    for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0)
            continue;
        if (array_merges) {
            char *sp = strchr(line, ' ');
            *sp = 0;
            json_array_append_new(merges, json_pack("[ss]", line, sp + 1));
        } else {
            json_array_append_new(merges, json_string(line));
        }
    }
    free(m);
    static const char *special[] = { "<s>", "<pad>", "</s>", "<unk>" };
    for (int i = 0; i < 4; i++)
        json_array_append_new(added, json_pack("{sisssb}", "id", i, "content", special[i],
                                               "special", 1));
    json_t *pre = split
        ? json_pack("{ss s[{ss s{ss} ss sb} {ss sb sb}]}", "type", "Sequence", "pretokenizers",
                    "type", "Split", "pattern", "Regex",
                    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
                    "behavior", "Isolated", "invert", 0,
                    "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0)
        : json_pack("{ss sb sb}", "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 1);
    json_t *j = json_pack("{s{ss so so ss sb} so so s{ss}}", "model", "type", "BPE", "vocab", vocab,
                          "merges", merges, "unk_token", "<unk>", "byte_fallback", 0,
                          "added_tokens", added, "pre_tokenizer", pre, "decoder", "type", "ByteLevel");
    assert_non_null(j);
    return j;
}

static void test_hf_bytelevel(void **state)
{
    (void)state;
    tok *g = load_opt();
    size_t len, n1, n2, dl;
    char *all = slurp("data/tinyshakespeare.txt", &len);
    int32_t *ids1, *ids2;

    encode(g, all, len, &ids1, &n1);   /* the whole file, training part included */
    for (int variant = 0; variant < 3; variant++) {
        json_t *j = opt_as_hf(variant == 1, variant == 2);
        tok *t = hf_from_json(j);
        json_decref(j);
        assert_int_equal(tok_scheme_of(t), TOK_BYTELEVEL);
        assert_int_equal(tok_vocab_size(t), 1024);
        encode(t, all, len, &ids2, &n2);
        assert_ids(ids2, n2, ids1, n1);
        char *d = decode(t, ids2, n2, -1, &dl);
        assert_int_equal(dl, len);
        assert_memory_equal(d, all, len);
        free(d);
        free(ids2);
        unsigned char buf[8];
        assert_int_equal(tok_piece_bytes(t, 2, buf, sizeof buf), 0);
        tok_free(t);
    }
    free(ids1);
    free(all);
    tok_free(g);
}

static void test_hf_sp_variants(void **state)
{
    (void)state;
    tok *base = load_sp();
    size_t len, n1, n2, dl;
    char *text = slurp("data/TinyStories-valid-subset.txt", &len);
    int32_t *ids1, *ids2;

    encode(base, text, len, &ids1, &n1);
    for (int variant = 0; variant < 4; variant++) {
        json_t *j = load_json("models/stories260K/tokenizer.json");
        json_t *model = json_object_get(j, "model");
        if (variant == 0) {   /* merges as [a, b] arrays */
            json_t *arr = json_array(), *m;
            size_t i;
            json_array_foreach(json_object_get(model, "merges"), i, m) {
                char *s = strdup(json_string_value(m)), *sp = strchr(s, ' ');
                *sp = 0;
                json_array_append_new(arr, json_pack("[ss]", s, sp + 1));
                free(s);
            }
            json_object_set_new(model, "merges", arr);
        } else {              /* the older Metaspace pre-tokenizer and decoder */
            json_object_set_new(j, "normalizer", json_null());
            json_t *ms = variant == 3
                ? json_pack("{ss ss sb}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                            "add_prefix_space", 1)
                : json_pack("{ss ss ss sb}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                            "prepend_scheme", "always", "split", variant == 2);
            json_object_set(j, "pre_tokenizer", ms);
            json_object_set_new(j, "decoder", ms);
        }
        tok *t = hf_from_json(j);
        json_decref(j);
        encode(t, text, len, &ids2, &n2);
        assert_ids(ids2, n2, ids1, n1);
        char *d = decode(t, ids2, n2, -1, &dl);
        assert_int_equal(dl, len);
        assert_memory_equal(d, text, len);
        free(d);
        free(ids2);
        encode(t, "", 0, &ids2, &n2);
        assert_int_equal(n2, 0);
        free(ids2);
        tok_free(t);
    }
    free(ids1);
    free(text);
    tok_free(base);
}

/* ------------------------------------------------------------ random input */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static size_t put_cp(uint32_t cp, char *o)
{
    unsigned char *u = (unsigned char *)o;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (unsigned char)(0xF0 | cp >> 18);
    u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Random valid UTF-8 (no U+2581, which SentencePiece decodes to a space). */
static size_t random_text(char *o, size_t maxchars)
{
    size_t w = 0, n = rnd((uint32_t)maxchars + 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t cp;
        switch (rnd(8)) {
        case 0: cp = " \t\n\r'"[rnd(5)]; break;
        case 1: cp = rnd(0x80); break;
        case 2: cp = 0x80 + rnd(0x780); break;
        case 3: cp = 0x800 + rnd(0xD000 - 0x800); break;
        case 4: cp = 0x10000 + rnd(0x100000); break;
        case 5: cp = 0xE000 + rnd(0x2000); break;
        default: cp = 'a' + rnd(26); break;
        }
        if (cp == 0x2581)
            cp = '_';
        w += put_cp(cp, o + w);
    }
    return w;
}

static void test_random(void **state)
{
    (void)state;
    tok *toks[2] = { load_opt(), load_sp() };
    char text[4 * 200 + 8];

    for (int round = 0; round < 600; round++) {
        size_t len = random_text(text, 200);
        for (int k = 0; k < 2; k++)
            check_roundtrip(toks[k], text, len);
    }
    /* random bytes: an error or a round trip, never a crash */
    for (int round = 0; round < 2000; round++) {
        size_t len = rnd(64);
        for (size_t i = 0; i < len; i++)
            text[i] = (char)(rnd(4) ? rnd(128) : rnd(256));
        for (int k = 0; k < 2; k++) {
            int32_t *ids;
            size_t n;
            ierr e = IERR_INIT;
            if (tok_encode(toks[k], text, len, &ids, &n, &e) == 0) {
                free(ids);
                check_roundtrip(toks[k], text, len);
            } else {
                assert_non_null(strstr(e.msg, "invalid UTF-8"));
            }
        }
    }
    /* random ids (some out of range): the stream only emits valid UTF-8 */
    for (int round = 0; round < 300; round++) {
        int32_t ids[40];
        size_t n = rnd(40), dl;
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < n; i++)
                ids[i] = (int32_t)rnd((uint32_t)tok_vocab_size(toks[k]) + 8) - 4;
            free(decode(toks[k], ids, n, -1, &dl));
        }
    }
    /* a tiny output buffer never overflows and never cuts a character */
    tok_stream s;
    char small[2];
    tok_stream_init(&s, toks[0]);
    assert_int_equal(tok_stream_put(&s, 4 + 0xE6, small, sizeof small), 0);
    assert_int_equal(tok_stream_put(&s, 4 + 0x97, small, sizeof small), 0);
    assert_int_equal(tok_stream_put(&s, 4 + 0xA5, small, sizeof small), 0);
    /* a character that does not fit drops the rest of the call: no holes */
    tok *t = hf_from_string("{\"model\": {\"type\": \"BPE\", \"vocab\": "
                            "{\"\xe6\x97\xa5x\": 0, \"ab\": 1}, \"merges\": []}}");
    tok_stream_init(&s, t);
    assert_int_equal(tok_stream_put(&s, 0, small, sizeof small), 0);
    assert_int_equal(tok_stream_put(&s, 1, small, sizeof small), 2);
    assert_memory_equal(small, "ab", 2);
    tok_free(t);
    tok_free(toks[0]);
    tok_free(toks[1]);
}

/* ------------------------------------------------------------ the tables */

/* piece of id as a NUL-terminated string (one of two static buffers, so
 * two calls can be the arguments of one printf) */
static const char *piece_str(const tok *t, int32_t id)
{
    static char bufs[2][256];
    static int which;
    char *buf = bufs[which ^= 1];
    const char *p;
    size_t n;
    assert_int_equal(tok_piece(t, id, &p, &n), 0);
    assert_true(n < sizeof bufs[0]);
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

/* A model's files from an in-memory list {name, text, ...}, NULL-ended; a
 * text of NULL fails with -EIO. */
static int mem_file(void *ctx, const char *name, char **data, size_t *len, ierr *err)
{
    const char *const *f = ctx;
    for (; f[0]; f += 2) {
        if (strcmp(f[0], name) != 0)
            continue;
        if (!f[1])
            return ierr_set(err, -EIO, "%s: read error", name);
        *len = strlen(f[1]);
        *data = strdup(f[1]);
        return 0;
    }
    return ierr_set(err, -ENOENT, "%s: no such file", name);
}

/* the shared model folder's files (a tok_file_fn) */
static int shared_file(void *ctx, const char *name, char **data, size_t *len, ierr *err)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s/%s", (const char *)ctx, name);
    FILE *f = fopen(shared_path(rel), "rb");
    if (!f)
        return ierr_set(err, -ENOENT, "%s: no such file", name);
    fclose(f);
    *data = slurp(rel, len);
    return 0;
}

/* opt-relu-shakespeare's tokenizer with its special-token maps. */
static tok *load_opt_files(void)
{
    tok *t = NULL;
    ierr e = IERR_INIT;
    if (tok_new_files(shared_file, "opt-relu-shakespeare", &t, &e) < 0)
        fail_msg("opt: %s", e.msg);
    return t;
}

/* The pieces, the declared specials and the merge list, as the store's
 * tables record them, for both shared models. */
static void test_tables(void **state)
{
    (void)state;
    tok *t = load_opt_files();
    assert_string_equal(tok_scheme_name(tok_scheme_of(t)), "gpt2-bpe");
    /* "<s>" is a control token but not named by the special-token maps */
    assert_string_equal(piece_str(t, 0), "<s>");
    assert_false(tok_declared_special(t, 0));
    for (int32_t id = 1; id <= 3; id++)
        assert_true(tok_declared_special(t, id));
    assert_false(tok_declared_special(t, 4));
    assert_false(tok_declared_special(t, -1));
    assert_false(tok_declared_special(t, (int32_t)tok_vocab_size(t)));
    size_t ml;
    char *m = slurp("models/opt-relu-shakespeare/merges.txt", &ml);
    int64_t rank = 0;
    for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0)
            continue;
        int32_t l, r, mm;
        char want[256];
        assert_int_equal(tok_merge(t, rank++, &l, &r, &mm), 0);
        snprintf(want, sizeof want, "%s %s", piece_str(t, l), piece_str(t, r));
        assert_string_equal(want, line);
        *strchr(want, ' ') = 0;
        strcat(want, piece_str(t, r));
        assert_string_equal(piece_str(t, mm), want);
    }
    free(m);
    assert_int_equal(tok_merge_count(t), rank);
    int32_t l, r, mm;
    assert_int_equal(tok_merge(t, rank, &l, &r, &mm), -1);
    assert_int_equal(tok_merge(t, -1, &l, &r, &mm), -1);
    tok_free(t);

    t = load_sp();
    assert_string_equal(tok_scheme_name(tok_scheme_of(t)), "sp-bpe");
    for (int32_t id = 0; id < 3; id++)
        assert_true(tok_declared_special(t, id));
    assert_false(tok_declared_special(t, 3));
    json_t *root = load_json("models/stories260K/tokenizer.json"), *mj;
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    size_t i;
    assert_int_equal(tok_merge_count(t), (int64_t)json_array_size(merges));
    json_array_foreach(merges, i, mj) {
        char got[256];
        assert_int_equal(tok_merge(t, (int64_t)i, &l, &r, &mm), 0);
        snprintf(got, sizeof got, "%s %s", piece_str(t, l), piece_str(t, r));
        assert_string_equal(got, json_string_value(mj));
    }
    json_decref(root);
    tok_free(t);
    assert_string_equal(tok_scheme_name(TOK_BYTELEVEL), "bytelevel-bpe");
    assert_int_equal(tok_piece(NULL, 0, &(const char *){ 0 }, &(size_t){ 0 }), -1);
}

/* A repeated merge stays in the list at both ranks; tokenizer.json's
 * added_tokens are declared whether or not "special"; the GPT-2 maps name
 * specials as strings or AddedToken objects, unreadable JSON names none, and
 * a map that cannot be read is an error. */
static void test_tables_declared(void **state)
{
    (void)state;
    const char *v = "{\"a\": 0, \"b\": 1, \"ab\": 2, \"<x>\": 3, \"<y>\": 4}";
    const char *files[] = { "vocab.json", v, "merges.txt", "a b\na b\n",
                            "tokenizer_config.json", "{\"bos_token\": {\"content\": \"<x>\"}}",
                            "special_tokens_map.json", "{\"additional_special_tokens\": [\"ab\"]}", NULL };
    tok *t = NULL;
    ierr e = IERR_INIT;
    if (tok_new_files(mem_file, (void *)files, &t, &e) < 0)
        fail_msg("%s", e.msg);
    assert_int_equal(tok_merge_count(t), 2);
    assert_true(tok_declared_special(t, 2));
    assert_true(tok_declared_special(t, 3));
    assert_false(tok_declared_special(t, 4));   /* a control token, not named */
    assert_false(tok_declared_special(t, 0));
    tok_free(t);

    files[5] = "not json";
    files[7] = "[1, 2]";
    t = NULL;
    if (tok_new_files(mem_file, (void *)files, &t, &e) < 0)
        fail_msg("%s", e.msg);
    for (int32_t id = 0; id < tok_vocab_size(t); id++)
        assert_false(tok_declared_special(t, id));
    tok_free(t);

    files[7] = NULL;   /* special_tokens_map.json: a read error */
    t = (tok *)1;
    assert_int_equal(tok_new_files(mem_file, (void *)files, &t, &e), -EIO);
    assert_null(t);
    assert_non_null(strstr(e.msg, "special_tokens_map.json"));

    t = hf_from_string("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                       " \"added_tokens\": [{\"id\": 1, \"content\": \"b\", \"special\": false},"
                       " {\"id\": 2, \"content\": \"<c>\", \"special\": true}]}");
    assert_false(tok_declared_special(t, 0));
    assert_true(tok_declared_special(t, 1));
    assert_true(tok_declared_special(t, 2));
    assert_string_equal(piece_str(t, 2), "<c>");
    assert_int_equal(tok_merge_count(t), 0);
    tok_free(t);
}

/* ------------------------------------------------------- special tokens */

static void encode_special(const tok *t, const char *text, int32_t **ids, size_t *n)
{
    ierr e = IERR_INIT;
    if (tok_encode_special(t, text, strlen(text), ids, n, &e) < 0)
        fail_msg("tok_encode_special: %s", e.msg);
}

/* tok_encode_special(text) must give the concatenation of parts: a part
 * "#N" is the id N, any other part is tok_encode of it. */
static void expect_special(const tok *t, const char *text, const char *const *parts)
{
    int32_t want[256], *ids, *got;
    size_t nw = 0, n, ng;
    for (; *parts; parts++) {
        if ((*parts)[0] == '#') {
            want[nw++] = (int32_t)atoi(*parts + 1);
            continue;
        }
        encode(t, *parts, strlen(*parts), &ids, &n);
        assert_true(nw + n <= 256);
        memcpy(want + nw, ids, n * sizeof *ids);
        nw += n;
        free(ids);
    }
    encode_special(t, text, &got, &ng);
    assert_ids(got, ng, want, nw);
    free(got);
}

/* tok_encode leaves the text of a special token as text. */
static void expect_plain(const tok *t, const char *text, int32_t id)
{
    int32_t *ids;
    size_t n;
    encode(t, text, strlen(text), &ids, &n);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(ids[i], id);
    free(ids);
}

/* SentencePiece-style tokenizer.json (stories260K): <unk> <s> </s> are
 * added tokens 0..2; each stretch between them gets the normalizer's "▁"
 * (HF tokenizers normalizes the parts around an added token separately). */
static void test_special_sp(void **state)
{
    (void)state;
    tok *t = load_sp();
    expect_special(t, "<s>Hello</s>", (const char *const[]){ "#1", "Hello", "#2", NULL });
    expect_special(t, "Hello</s>World", (const char *const[]){ "Hello", "#2", "World", NULL });
    expect_special(t, "</s></s> a<unk>", (const char *const[]){ "#2", "#2", " a", "#0", NULL });
    expect_special(t, "<s>", (const char *const[]){ "#1", NULL });
    expect_special(t, "<s/> <s", (const char *const[]){ "<s/> <s", NULL });   /* near misses */
    expect_special(t, "", (const char *const[]){ NULL });
    expect_plain(t, "<s>Hello</s>", 1);
    expect_plain(t, "<s>Hello</s>", 2);

    /* text without specials: the same as tok_encode */
    size_t len, n1, n2;
    char *text = slurp("data/TinyStories-valid-subset.txt", &len);
    int32_t *a, *b;
    ierr e = IERR_INIT;
    encode(t, text, len, &a, &n1);
    assert_int_equal(tok_encode_special(t, text, len, &b, &n2, &e), 0);
    assert_ids(b, n2, a, n1);
    free(a);
    free(b);
    free(text);
    tok_free(t);

    /* Metaspace prepend_scheme "first": only the stretch at the start gets
     * the "▁"; "always": every stretch */
    tok *tn[2];
    const char *schemes[2] = { "first", "never" };
    for (int k = 0; k < 2; k++) {
        json_t *j = load_json("models/stories260K/tokenizer.json");
        json_t *ms = json_pack("{ss ss ss sb}", "type", "Metaspace", "replacement", "\xe2\x96\x81",
                               "prepend_scheme", schemes[k], "split", 0);
        json_object_set_new(j, "normalizer", json_null());
        json_object_set(j, "pre_tokenizer", ms);
        json_object_set_new(j, "decoder", ms);
        tn[k] = hf_from_json(j);
        json_decref(j);
    }
    int32_t *w1, *w2, *got, want[64];
    size_t nw1, nw2, ng;
    encode(tn[0], "Hi", 2, &w1, &nw1);          /* "▁Hi" */
    encode(tn[1], "there", 5, &w2, &nw2);       /* "there", no "▁" */
    memcpy(want, w1, nw1 * sizeof *w1);
    want[nw1] = 2;
    memcpy(want + nw1 + 1, w2, nw2 * sizeof *w2);
    encode_special(tn[0], "Hi</s>there", &got, &ng);
    assert_ids(got, ng, want, nw1 + 1 + nw2);
    free(got);
    encode_special(tn[0], "<s>there", &got, &ng);   /* the text starts with a special */
    want[0] = 1;
    memcpy(want + 1, w2, nw2 * sizeof *w2);
    assert_ids(got, ng, want, 1 + nw2);
    free(got);
    free(w1);
    free(w2);
    tok_free(tn[0]);
    tok_free(tn[1]);
}

/* GPT-2 files (opt-relu-shakespeare): the special-token maps name <pad>
 * </s> <unk> (ids 1..3); "<s>" (id 0) is not named, so it stays text. */
static void test_special_gpt2(void **state)
{
    (void)state;
    tok *t = load_opt_files();
    expect_special(t, "</s>ROMEO: hi<unk>", (const char *const[]){ "#2", "ROMEO: hi", "#3", NULL });
    expect_special(t, "<s>ROMEO</s>", (const char *const[]){ "<s>ROMEO", "#2", NULL });
    expect_special(t, "a<pad><pad>b", (const char *const[]){ "a", "#1", "#1", "b", NULL });
    expect_plain(t, "</s>ROMEO:", 2);
    tok_free(t);

    /* the longest added token wins; the leftmost match first */
    t = hf_from_string("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"<\": 0, \"x\": 1, \">\": 2, \"y\": 3, "
                       "\"z\": 4}, \"merges\": []}, \"added_tokens\": ["
                       "{\"id\": 5, \"content\": \"<x>\", \"special\": true},"
                       "{\"id\": 6, \"content\": \"<x>y\", \"special\": false},"
                       "{\"id\": 7, \"content\": \"y<x\", \"special\": true}]}");
    expect_special(t, "<x>yz<x>", (const char *const[]){ "#6", "z", "#5", NULL });
    expect_special(t, "zy<x>y", (const char *const[]){ "z", "#7", ">y", NULL });
    tok_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opt_reference),
        cmocka_unit_test(test_opt_heldout),
        cmocka_unit_test(test_opt_pieces),
        cmocka_unit_test(test_sp_reference),
        cmocka_unit_test(test_sp_run_c),
        cmocka_unit_test(test_sp_tinystories),
        cmocka_unit_test(test_sp_utf8),
        cmocka_unit_test(test_stream_invalid),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_malformed_gpt2),
        cmocka_unit_test(test_malformed_hf),
        cmocka_unit_test(test_hf_bytelevel),
        cmocka_unit_test(test_hf_sp_variants),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_tables_declared),
        cmocka_unit_test(test_special_sp),
        cmocka_unit_test(test_special_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
