/* tests/testutil.h: helpers shared by the cmocka test programs (tu_ prefix):
 * a temporary directory per cmocka group and a seeded splitmix64 generator. */
#ifndef INFLASH_TESTUTIL_H
#define INFLASH_TESTUTIL_H

#include <stdint.h>

/* rm -rf dir: 0, or -1 if that failed. */
int tu_rmtree(const char *dir);

/* A temporary directory for a whole cmocka group: tu_dir_use(tmpl) names its
 * mkdtemp(3) template ("/tmp/name.XXXXXX", which tu_dir_setup rewrites in
 * place, so the tests see the directory's name there); tu_dir_setup and
 * tu_dir_teardown are the group setup and teardown that make and remove it
 * (0, or -1 on failure). */
void tu_dir_use(char *tmpl);
int tu_dir_setup(void **state);
int tu_dir_teardown(void **state);

/* A splitmix64 sequence, one per program (the state starts at 0):
 * tu_rng_seed restarts it at seed, tu_rng gives its next value and
 * tu_rng_below(n) a value in [0, n) (n > 0). */
void tu_rng_seed(uint64_t seed);
uint64_t tu_rng(void);
int64_t tu_rng_below(int64_t n);

#endif
