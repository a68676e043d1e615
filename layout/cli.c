/* cli.c: command-line number parsing (cli.h). */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
