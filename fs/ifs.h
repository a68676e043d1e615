/* ifs.h: the inflashfs daemon's state and read path, without FUSE: opens and
 * checks the store, builds the virtual tree, renders the generated files and
 * serves reads as lists of memory pieces (iovecs) for the FUSE glue in
 * main.c to send. Every function returns 0 or a negative errno. Thread-safe
 * after ifs_open. Each reading thread keeps its read buffers (grown to the
 * largest request it served) until it ends or ifs_close. */
#ifndef INFLASH_FS_IFS_H
#define INFLASH_FS_IFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "chunk.h"
#include "error.h"
#include "store.h"
#include "tree.h"

/* Default chunk size, from the bandwidth-vs-chunk curve measured with
 * bench/read_curve.sh (inflash-bench-read; synthetic OPT, d_model 4096,
 * f16: 16 KiB bundles, 2 GiB ffn.bin; 2-vCPU VM, virtio-blk; 16000 random
 * bundles; MB/s through the mount and its share of direct O_DIRECT reads):
 *   chunk      4k    8k   16k   32k   64k  128k  256k  512k    1m
 *   1 reader  249   271   270   254   223   179   129    89    41
 *              88%   90%   90%   84%   77%   63%   46%   31%   16%
 *   16 readers 908   753   839   754   609   390   219    95    57
 *              99%   84%   95%   87%   69%   47%   26%   21%    7%
 * Flat (within the machine's noise) up to the bundle size, then falling as
 * each miss reads more than it serves (store bytes read double per step
 * past 16k). 16k is the knee: the largest chunk without read amplification
 * for OPT-6.7B-class f16 bundles, with a quarter of 4k's cache entries per
 * bundle. Smaller bundles share chunks, which the cache then serves. */
#define IFS_DEFAULT_CHUNK      (16u << 10)
#define IFS_DEFAULT_CACHE      (256u << 20)
/* Read-ahead off: neuron reads are scattered (the predicted active set), so
 * the next chunks are rarely wanted and reading them only takes bandwidth;
 * -o readahead=N helps sequential scans and hot-first reordered layers. */
#define IFS_DEFAULT_READAHEAD  0u
#define IFS_DEFAULT_RA_WORKERS 2u
/* Replies with more pieces than this are copied into one buffer
 * (writev on /dev/fuse takes at most IOV_MAX = 1024 including the header). */
#define IFS_MAX_IOV            1000u

typedef struct {
    uint64_t chunk_bytes;        /* power of two, 4 KiB .. 4 MiB */
    uint64_t cache_bytes;        /* chunk cache budget (>= 4 chunks) */
    unsigned readahead;          /* chunks */
    unsigned ra_workers;         /* read-ahead threads */
    int      buffered;           /* 1: never O_DIRECT (tests) */
    int      verify;             /* 1 (default): check what is read against the
                                    index's xxh64: each bundle once per fill of
                                    its chunks, each tensor at its first read */
} ifs_opts;

void ifs_opts_default(ifs_opts *o);
/* Check option values: 0 or -EINVAL with a message naming the option. */
int ifs_opts_check(const ifs_opts *o, ierr *err);

typedef struct ifs ifs;
typedef struct ifs_file ifs_file;     /* one open file */
typedef struct ifs_scratch ifs_scratch; /* a thread's read buffers (private) */

/* The pieces of one read reply. iov[0..n) total `bytes`; the memory stays
 * valid until ifs_reply_free. A neuron-file reply borrows the reading
 * thread's buffers (iov, pins) until then, so the thread's next read reuses
 * them: free a reply before reading again on the same thread (a read while
 * the thread's buffers are lent out gets buffers of its own, slower). */
typedef struct {
    struct iovec *iov;
    size_t        n;
    uint64_t      bytes;
    /* private */
    struct iovec  one;           /* iov storage for single-piece replies */
    chunk       **pins;          /* chunks the pieces point into (in scratch) */
    size_t        n_pins;
    void         *buf;           /* owned copy (tensors, large scatter) */
    ifs_file     *file;          /* a reference: the file outlives the reply */
    ifs_scratch  *scratch;       /* borrowed buffers iov and pins live in, or NULL */
} ifs_reply;

/* Open the store (store_open checks it against its index) and everything
 * else the mount needs. Messages name the store file at fault. */
int  ifs_open(const char *store_dir, const ifs_opts *o, ifs **out, ierr *err);
void ifs_close(ifs *m);

const tree  *ifs_tree(const ifs *m);
const store *ifs_store(const ifs *m);
int          ifs_direct(const ifs *m);        /* 1 if ffn.bin is read with O_DIRECT */

/* Size for getattr: exact, except for the stats files (a fresh rendering). */
int ifs_size(ifs *m, const tree_node *n, uint64_t *size);

/* Open a file node (stats, neurons.tsv: rendered per open). Reference
 * counted: ifs_file_close drops the open, ifs_reply_free a reply's. */
int  ifs_file_open(ifs *m, const tree_node *n, ifs_file **out, ierr *err);
void ifs_file_close(ifs_file *f);
const tree_node *ifs_file_node(const ifs_file *f);

/* Read [off, off + len) of an open file into r (0 pieces at or past EOF).
 * A failed store read is -EIO with err naming the store file and offset.
 * With verification (ifs_opts.verify), data that does not match the index's
 * xxh64 is never served: the read is -EIO and one line on stderr names the
 * file, the layer and neuron (or the tensor) and the offset, e.g.
 *   inflashfs: ffn.bin: layer 3 neuron 1234 (slot 17, offset N): checksum mismatch
 * A bundle that does not match is read from the store once more before that
 * answer (the bad copy leaves the cache), so a damaged cached copy or a
 * transfer error heals, and a retry of a failed read reads the store again.
 * A neuron-file read covers whole bundles: the chunks of a bundle the
 * request only partly wants are pinned (read) too. */
int  ifs_read(ifs *m, ifs_file *f, uint64_t off, uint64_t len, ifs_reply *r, ierr *err);
/* Release a reply (on any thread; before ifs_close). */
void ifs_reply_free(ifs *m, ifs_reply *r);

/* Account a finished read request (latency from t0_ns, cli_now_ns()). */
void ifs_account(ifs *m, const tree_node *n, uint64_t bytes, uint64_t t0_ns, int failed);

/* Render the stats (json = 0: stats, 1: stats.json): malloc'd buffer. */
int ifs_render_stats(ifs *m, int json, char **out, size_t *len);

#endif
