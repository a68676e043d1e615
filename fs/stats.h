/* stats.h: the live counters of an inflashfs mount (requests, bytes, errors
 * per file kind) and read-latency histograms with percentiles, updated with
 * atomics from every FUSE thread; plus the formatter that renders a list of
 * named values as the `stats` (one "name value" line each) or `stats.json`
 * file. */
#ifndef INFLASH_FS_STATS_H
#define INFLASH_FS_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "cli.h"   /* cli_now_ns: the clock of every timing here */

typedef enum {
    FSSTAT_FFN = 0,   /* layers/NN/ffn */
    FSSTAT_TENSOR,    /* tensors/... */
    FSSTAT_OTHER,     /* everything else */
    FSSTAT_NKINDS
} fsstat_kind;

typedef struct fsstat fsstat;     /* opaque; all updates are lock-free */

fsstat *fsstat_new(void);         /* NULL on ENOMEM */
void    fsstat_free(fsstat *s);

/* Account one read request: bytes returned, wall time in ns, failed or not. */
void fsstat_read(fsstat *s, fsstat_kind k, uint64_t bytes, uint64_t ns, int failed);

typedef struct {
    uint64_t requests;
    uint64_t bytes;
    uint64_t errors;
    uint64_t max_request;         /* largest reply in bytes */
    double   mean_us, p50_us, p99_us, max_us;
} fsstat_kind_view;

/* A consistent-enough snapshot of one kind (or all kinds if k == FSSTAT_NKINDS). */
void fsstat_view(const fsstat *s, fsstat_kind k, fsstat_kind_view *out);


/* Histogram helpers, exposed for tests: bucket of a value, and the midpoint
 * of a bucket's range. Buckets are exact below 8 and 1/8 of a power of two
 * wide above. */
unsigned fsstat_bucket(uint64_t v);
uint64_t fsstat_bucket_mid(unsigned b);
#define FSSTAT_BUCKETS 512u

/* One named value of the stats files. */
typedef struct {
    const char *key;
    int         is_real;          /* value in d (printed %.3f) or u */
    uint64_t    u;
    double      d;
} fsstat_kv;

/* Render kv[0..n) as text ("key value\n" lines) or as a JSON object; a
 * malloc'd NUL-terminated buffer in *out, its length in *len. 0 or -ENOMEM. */
int fsstat_format(const fsstat_kv *kv, size_t n, int json, char **out, size_t *len);

#endif
