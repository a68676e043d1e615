/* cli.h: command-line number parsing shared by every program (client,
 * daemon, tools, benchmarks): whole strings only, range-checked; and the
 * one clock their timings and progress lines read. */
#ifndef INFLASH_CLI_H
#define INFLASH_CLI_H

#include <stdint.h>

/* The monotonic clock (CLOCK_MONOTONIC), in nanoseconds and in seconds. */
uint64_t cli_now_ns(void);
double   cli_now_s(void);

/* A decimal integer in [lo, hi]: 0 and *out, or -1. */
int cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* A finite number in [lo, hi]: 0 and *out, or -1 (also for NaN). */
int cli_parse_f64(const char *s, double lo, double hi, double *out);

/* A size, the one syntax of every memory or size flag (--dram-budget,
 * --mem-budget, -o cache=, -o chunk=): a non-negative decimal number
 * (fractions allowed: "1.5g") with an optional suffix k, m, g or t (powers
 * of 1024, either case, optionally followed by "b"/"B"). A bare number is
 * in units of `unit` bytes (1 for byte options, 1048576 for the flags that
 * always took MiB), so old command lines keep their meaning. The result is
 * rounded down to whole bytes. 0 and *out, or -1 for anything else
 * (empty, a sign, trailing text, NaN, more than 2^63 bytes). */
int cli_parse_size(const char *s, uint64_t unit, uint64_t *out);

/* The one message for an option getopt_long refused (parse with opterr = 0
 * and an optstring that starts with ':'): ch ':' is a missing value, '?' an
 * unknown option. Prints "prog: option '--x' needs a value (see --help)" or
 * "prog: unknown option '--x' (see --help)" on stderr; returns -1. */
int cli_bad_option(const char *prog, int ch, char *const argv[]);

/* Run handler on SIGINT, SIGTERM and SIGHUP (the programs that write a store
 * set a flag there and stop cleanly before the rename). */
void cli_on_stop_signals(void (*handler)(int));

#endif
