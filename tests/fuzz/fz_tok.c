/* fz_tok.c: the tokenizer checks shared by fuzz_tok_gpt2 and fuzz_tok_hf
 * (fz_tok.h). */
#include "fz_tok.h"
#include "fz_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char FIXED[] = " Hello, world! It's 2024.\n\tRomeo:  o  \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
                            "\xf0\x9f\x98\x80 \xe2\x96\x81x <s></s>\r\n";

static void encode_one(const tok *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0, out_len;
    ierr err = IERR_INIT;
    int valid = fz_utf8_valid((const unsigned char *)text, len);
    int rc = tok_encode(t, text, len, &ids, &n, &err);
    if (!valid) {
        FZ_CHECK(rc == -EILSEQ, "invalid UTF-8 gave %d, not -EILSEQ", rc);
        return;
    }
    if (rc < 0) {
        FZ_CHECK(rc != -EILSEQ, "valid UTF-8 rejected: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++)
        FZ_CHECK(ids[i] >= 0 && ids[i] < tok_vocab_size(t), "id %d outside the vocabulary of %lld", (int)ids[i],
                 (long long)tok_vocab_size(t));
    free(fz_stream_decode(t, ids, n, NULL, 0, &out_len));
    free(ids);
}

void fz_tok_exercise(const tok *t, const char *text, size_t len)
{
    unsigned char buf[64];
    int64_t v = tok_vocab_size(t);
    tok_scheme sc = tok_scheme_of(t);

    FZ_CHECK(v > 0, "vocabulary size %lld", (long long)v);
    FZ_CHECK(sc == TOK_GPT2 || sc == TOK_SP_BPE || sc == TOK_BYTELEVEL, "scheme %d", (int)sc);
    encode_one(t, FIXED, sizeof FIXED - 1);
    if (len)
        encode_one(t, text, len);
    for (int64_t id = -1; id <= v && id < 4096; id++) {
        int k = tok_piece_bytes(t, (int32_t)id, buf, sizeof buf);
        FZ_CHECK(id >= 0 && id < v ? k >= 0 && k <= (int)sizeof buf : k == -1, "tok_piece_bytes(%lld) = %d",
                 (long long)id, k);
    }
}
