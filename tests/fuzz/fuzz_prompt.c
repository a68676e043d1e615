/* fuzz_prompt.c: libFuzzer target for prompts: any bytes through the real
 * tokenizers (opt-relu-shakespeare's vocab.json + merges.txt and
 * stories260K's tokenizer.json, from $INFLASH_SHARED or the configured
 * shared/ folder, loaded once). The first byte chooses the tokenizer (bit 0)
 * and the mode (bit 1): encode the rest as a prompt, which must round-trip
 * through the streaming decoder, or take the rest as raw 16-bit token ids
 * (some out of range) streamed with output capacities from the input. */
#include "fz_tok.h"
#include "fz_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static tok *g_tok[2];             /* 0: GPT-2 (OPT), 1: tokenizer.json (Llama) */

static tok *load(const char *a, const char *b)
{
    char *pa = fz_shared_path(a), *pb = b ? fz_shared_path(b) : NULL, *da, *db = NULL;
    size_t la, lb = 0;
    tok *t = NULL;
    ierr err = IERR_INIT;
    const char *paths[2] = { pa, pb };
    for (int i = 0; i < 2 && paths[i]; i++)
        if (access(paths[i], R_OK) != 0) {
            fprintf(stderr, "fuzz_prompt: %s: %s (set INFLASH_SHARED to the shared/ folder)\n", paths[i],
                    strerror(errno));
            abort();
        }
    da = fz_read_file(pa, &la);
    if (pb)
        db = fz_read_file(pb, &lb);
    int rc = pb ? tok_new_gpt2(da, la, db, lb, &t, &err) : tok_new_hf(da, la, &t, &err);
    FZ_CHECK(rc == 0, "%s: %s", pa, err.msg);
    free(da);
    free(db);
    free(pa);
    free(pb);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_tok[0] = load("models/opt-relu-shakespeare/vocab.json", "models/opt-relu-shakespeare/merges.txt");
    g_tok[1] = load("models/stories260K/tokenizer.json", NULL);
    return 0;
}

/* A prompt: any valid UTF-8 encodes, and decodes back to itself (the
 * SentencePiece normalizer writes spaces as U+2581, which decodes to a
 * space, so texts holding U+2581 come back with spaces there). */
static void prompt(const tok *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0, out_len;
    ierr err = IERR_INIT;
    int rc = tok_encode(t, text, len, &ids, &n, &err);
    if (!fz_utf8_valid((const unsigned char *)text, len)) {
        FZ_CHECK(rc == -EILSEQ, "invalid UTF-8 gave %d, not -EILSEQ", rc);
        return;
    }
    FZ_CHECK(rc == 0, "a valid prompt of %zu bytes does not encode: %s", len, err.msg);
    FZ_CHECK(n <= len + 1, "%zu ids for %zu bytes", n, len);
    for (size_t i = 0; i < n; i++)
        FZ_CHECK(ids[i] >= 0 && ids[i] < tok_vocab_size(t), "id %d", (int)ids[i]);
    char *out = fz_stream_decode(t, ids, n, NULL, 0, &out_len);
    if (tok_scheme_of(t) != TOK_SP_BPE || !memmem(text, len, "\xe2\x96\x81", 3))
        FZ_CHECK(out_len == len && memcmp(out, text, len) == 0, "%zu bytes decode to %zu other bytes", len,
                 out_len);
    free(out);
    free(ids);
}

/* Raw ids: ids[i] = 16-bit value mod (vocab + 2) - 1, so -1 and the first
 * id past the vocabulary appear too; capacities from the input (0..63). */
static void raw_ids(const tok *t, const uint8_t *p, size_t len)
{
    fz_in in = { p, len };
    size_t ncaps = fz_u8(&in) % 8, n = in.n / 2, out_len;
    uint8_t caps[8];
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    int64_t v = tok_vocab_size(t);
    if (!ids)
        abort();
    for (size_t i = 0; i < ncaps; i++)
        caps[i] = fz_u8(&in) % 64;
    n = in.n / 2;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)((int64_t)fz_uint(&in, 2) % (v + 2)) - 1;
    free(fz_stream_decode(t, ids, n, caps, ncaps, &out_len));
    free(fz_stream_decode(t, ids, n, NULL, 0, &out_len));
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const tok *t = g_tok[data[0] & 1];
    if (data[0] & 2)
        raw_ids(t, data + 1, size - 1);
    else
        prompt(t, (const char *)data + 1, size - 1);
    return 0;
}
