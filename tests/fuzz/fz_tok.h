/* fz_tok.h: the part of the tokenizer targets that does not depend on
 * how the tokenizer was built: encode texts with it and decode the ids. */
#ifndef INFLASH_FZ_TOK_H
#define INFLASH_FZ_TOK_H

#include <stddef.h>

#include "tok.h"

/* Encode a fixed mixed-script text and text[0..len) (any bytes), check the
 * ids and the errors tok.h promises, stream-decode the ids, and ask every
 * id's piece (the first 4096 ids). */
void fz_tok_exercise(const tok *t, const char *text, size_t len);

#endif
