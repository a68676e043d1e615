/* fuzz_tok_gpt2.c: libFuzzer target for the GPT-2 tokenizer files
 * (tok_new_gpt2, client/tok.h). The input is vocab.json, a NUL byte,
 * merges.txt, and optionally another NUL byte and a text to encode. */
#include "fz_tok.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *z1 = memchr(p, 0, size), *z2;
    tok *t = NULL;
    ierr err = IERR_INIT;
    if (!z1)
        return 0;
    z2 = memchr(z1 + 1, 0, (size_t)(end - z1 - 1));
    const char *merges = z1 + 1, *merges_end = z2 ? z2 : end;
    if (tok_new_gpt2(p, (size_t)(z1 - p), merges, (size_t)(merges_end - merges), &t, &err) == 0) {
        fz_tok_exercise(t, z2 ? z2 + 1 : "", z2 ? (size_t)(end - z2 - 1) : 0);
        tok_free(t);
    }
    return 0;
}
