/* chunk.h: the bounded chunk cache between inflashfs and ffn.bin. The
 * device (ffn.bin) is cut into aligned chunks of chunk_bytes; a request pins
 * the chunks it needs: loaded ones are shared, missing ones are read
 * (neighbouring missing chunks of one request in one readv), and a chunk
 * another thread is already reading is waited for, never read twice. Cached
 * chunks live in one arena of budget bytes, mapped at creation, and never
 * exceed it: unpinned chunks are evicted least recently used first; when
 * every slot is pinned, a request reads into a private ("transient") buffer
 * instead. After a request, the next
 * `readahead` chunks after each run it touched are queued for a small pool
 * of worker threads. I/O goes through a caller-supplied readv function so
 * the cache is testable without files. Thread-safe.
 *
 * The device is a list of regions (for ffn.bin: one per layer), each cut
 * into chunks from its own start, so that chunks line up with the bundles of
 * a layer whatever the layer's offset. Chunks are numbered globally:
 * region r holds ids chunk_region_first(c, r) and up. */
#ifndef INFLASH_FS_CHUNK_H
#define INFLASH_FS_CHUNK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "error.h"

#define CHUNK_ALIGN    4096u           /* buffer, offset and length alignment */
#define CHUNK_MIN      4096u
#define CHUNK_MAX      (4u << 20)

/* Read into iov[0..iovcnt) from device offset off: bytes read (short only at
 * the end of the device or on error) or -errno. Called from many threads. */
typedef ssize_t (*chunk_readv_fn)(void *ctx, uint64_t off, const struct iovec *iov, int iovcnt);
/* One log line (no newline) about a failed read. */
typedef void (*chunk_log_fn)(void *ctx, const char *line);
/* What device bytes [off, off + len) hold, for log lines: text such as
 * " (layer 3 slots 16..31)" into buf[cap]. */
typedef void (*chunk_where_fn)(void *ctx, uint64_t off, uint64_t len, char *buf, size_t cap);

/* A region of the device: [off, off + len), off CHUNK_ALIGN-aligned. Chunk
 * k of a region covers [off + k*C, min(off + (k+1)*C, off + len)). */
typedef struct {
    uint64_t off;
    uint64_t len;
} chunk_region;

typedef struct {
    uint64_t       chunk_bytes;   /* power of two, CHUNK_MIN..CHUNK_MAX */
    uint64_t       budget_bytes;  /* cached chunks never exceed this (>= chunk_bytes) */
    uint64_t       dev_bytes;     /* device size, used when n_regions == 0 (one region [0, dev_bytes)) */
    const chunk_region *regions;  /* sorted, non-overlapping; copied */
    size_t         n_regions;
    unsigned       readahead;     /* chunks queued after each run a request touched */
    unsigned       workers;       /* read-ahead threads (0: no read-ahead) */
    const char    *name;          /* device name in messages ("ffn.bin"); copied */
    chunk_readv_fn readv;
    void          *ctx;
    chunk_log_fn   log;           /* NULL: stderr */
    void          *log_ctx;
    chunk_where_fn where;         /* NULL: log lines name the offset only; called with ctx */
    int            prefault;      /* populate the whole budget now (no page faults later) */
} chunk_opts;

typedef struct {
    uint64_t hits;                /* wanted and already loaded */
    uint64_t misses;              /* wanted, absent: read by the request */
    uint64_t shared;              /* wanted while another thread read it: waited, not re-read */
    uint64_t reads;               /* readv calls (foreground and read-ahead) */
    uint64_t read_bytes;
    uint64_t read_errors;         /* failed or short readv calls */
    uint64_t evictions;
    uint64_t discarded;           /* dropped by chunk_discard (bad contents) */
    uint64_t transient;           /* read outside the cache: every cached chunk was pinned */
    uint64_t ra_chunks;           /* chunks read by read-ahead */
    uint64_t ra_used;             /* of those, later wanted by a request */
    uint64_t ra_dropped;          /* read-ahead requests dropped: queue full */
    uint64_t cached_bytes;        /* now */
    uint64_t peak_cached_bytes;   /* highest since creation (<= budget) */
    uint64_t budget_bytes;
    uint64_t chunk_bytes;
} chunk_stats;

typedef struct chunk chunk;              /* one chunk, opaque */
typedef struct chunk_cache chunk_cache;  /* opaque */

int  chunk_cache_new(const chunk_opts *o, chunk_cache **out, ierr *err);
/* Stops the read-ahead workers and frees everything; no pins may remain. */
void chunk_cache_free(chunk_cache *c);

uint64_t chunk_size(const chunk_cache *c);
/* Number of chunks of all regions. */
uint64_t chunk_count(const chunk_cache *c);
/* The id of the first chunk of region r (r <= n_regions: the total at the end). */
uint64_t chunk_region_first(const chunk_cache *c, size_t r);
/* Device offset of chunk `id`, and how many bytes it has (< chunk_size at a region's end). */
uint64_t chunk_offset(const chunk_cache *c, uint64_t id, size_t *valid);

/* Pin the chunks idx[0..n), sorted ascending and unique, each < chunk_count:
 * pins[i] receives chunk idx[i], loaded. On failure nothing stays pinned and
 * the result is -EIO (a read failed: err names the device and the offset),
 * -EINVAL (bad index) or -ENOMEM. */
int chunk_pin(chunk_cache *c, const uint64_t *idx, size_t n, chunk **pins, ierr *err);
/* Pin the chunks covering device bytes [off, off + len), len > 0, all
 * within one region; cap >= the number of chunks. */
int chunk_pin_range(chunk_cache *c, uint64_t off, uint64_t len, chunk **pins, size_t cap,
                    size_t *n, ierr *err);
void chunk_unpin(chunk_cache *c, chunk **pins, size_t n);
/* The pinned chunks' contents are bad (a checksum did not match): they
 * leave the cache now, so the next request for them reads them again; the
 * pins stay valid until unpinned (then the memory is reused). */
void chunk_discard(chunk_cache *c, chunk *const *pins, size_t n);

/* A pinned chunk: its bytes (chunk_size, 4096-aligned) and how many of them
 * are valid (less than chunk_size only for the last chunk of a region). */
const unsigned char *chunk_data(const chunk *k);
size_t chunk_valid(const chunk *k);
/* The chunk's fill generation: a number given to each fill (read of a chunk
 * from the device), unique and increasing across the cache, constant while
 * pinned. A refill (after eviction or discard) always has a larger one, so
 * a caller can remember "checked at generation g" to check each fill once. */
uint64_t chunk_gen(const chunk *k);

void chunk_get_stats(chunk_cache *c, chunk_stats *out);

#endif
