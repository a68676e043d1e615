/* cli.c: command-line number parsing and the clock (cli.h). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t cli_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double cli_now_s(void)
{
    return (double)cli_now_ns() * 1e-9;
}

int cli_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_f64(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

int cli_parse_size(const char *s, uint64_t unit, uint64_t *out)
{
    if (!s || !(isdigit((unsigned char)*s) || *s == '.') || unit == 0)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || end != s + strspn(s, "0123456789.") || !isfinite(v) || v < 0)
        return -1;   /* decimal digits only: no exponent, hex or "inf" */
    double scale = (double)unit;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': scale = 1024.0; end++; break;
    case 'm': scale = 1048576.0; end++; break;
    case 'g': scale = 1073741824.0; end++; break;
    case 't': scale = 1099511627776.0; end++; break;
    default: return -1;
    }
    if (end > s && isalpha((unsigned char)end[-1]) && (*end == 'b' || *end == 'B'))
        end++;   /* "256mb": the optional B after a suffix */
    double bytes = floor(v * scale);
    if (*end || bytes > 9223372036854775807.0)
        return -1;
    *out = (uint64_t)bytes;
    return 0;
}

int cli_bad_option(const char *prog, int ch, char *const argv[])
{
    char shortopt[3] = { '-', (char)optopt, '\0' };
    const char *name = optopt > 0 && optopt < 256 ? shortopt : argv[optind - 1];
    if (ch == ':')
        fprintf(stderr, "%s: option '%s' needs a value (see --help)\n", prog, name);
    else
        fprintf(stderr, "%s: unknown option '%s' (see --help)\n", prog, name);
    return -1;
}

void cli_on_stop_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}
