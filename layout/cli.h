/* cli.h: command-line number parsing shared by every program (client,
 * tools, benchmarks): whole strings only, range-checked. */
#ifndef INFLASH_CLI_H
#define INFLASH_CLI_H

#include <stdint.h>

/* A decimal integer in [lo, hi]: 0 and *out, or -1. */
int cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* A finite number in [lo, hi]: 0 and *out, or -1 (also for NaN). */
int cli_parse_f64(const char *s, double lo, double hi, double *out);

#endif
