/* fuzz_tok_hf.c: libFuzzer target for tokenizer.json (tok_new_hf,
 * client/tok.h). The input is tokenizer.json, optionally followed by a NUL
 * byte and a text to encode. */
#include "fz_tok.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *z = memchr(p, 0, size);
    size_t jlen = z ? (size_t)(z - p) : size;
    tok *t = NULL;
    ierr err = IERR_INIT;
    if (tok_new_hf(p, jlen, &t, &err) == 0) {
        fz_tok_exercise(t, z ? z + 1 : "", z ? size - jlen - 1 : 0);
        tok_free(t);
    }
    return 0;
}
