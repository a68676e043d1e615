/* main.c: inflashfs, the FUSE daemon that exposes an inflash store as files
 * (config.json, tokenizer files, tensors/<name>, layers/NN/ffn,
 * layers/NN/neurons.tsv, stats). This file is only the libfuse low-level
 * glue: option parsing, the ops table, replies. The logic lives in ifs.c
 * (read path), tree.c, slot_map.c, chunk.c and stats.c. Everything is
 * read-only: every modifying operation answers EROFS. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ifs.h"
#include "stats.h"

#define PROG "inflashfs"
#define ATTR_TIMEOUT 3600.0      /* the tree never changes while mounted */
#define DEFAULT_THREADS 16u
#define MMAP_FROM (256 << 10)    /* malloc maps blocks this large (glibc) */

/* One open file; the FUSE file handle points to it. Open files are listed
 * so that the ones still open when the session ends are closed too: a mount
 * stopped while busy (mount.sh -u of a busy mount, SIGTERM) gets no
 * RELEASE for them. */
typedef struct open_file {
    ifs_file         *f;             /* owned: one open of it */
    struct open_file *prev, *next;   /* in fsd.open, guarded by fsd.mu */
} open_file;

/* The daemon's state, shared read-only by every FUSE thread after setup
 * (ifs is itself thread-safe), except the list of open files. */
typedef struct {
    ifs            *m;
    uid_t           uid;
    gid_t           gid;
    struct timespec t_mount;
    pthread_mutex_t mu;
    open_file       open;            /* list sentinel; guarded by mu */
} fsd;

static fsd *req_fsd(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

/* Wrap f (one open of it, now owned) as a listed open file; NULL (f
 * closed) on ENOMEM. */
static open_file *open_add(fsd *d, ifs_file *f)
{
    open_file *of = malloc(sizeof *of);
    if (!of) {
        ifs_file_close(f);
        return NULL;
    }
    of->f = f;
    pthread_mutex_lock(&d->mu);
    of->prev = &d->open;
    of->next = d->open.next;
    d->open.next->prev = of;
    d->open.next = of;
    pthread_mutex_unlock(&d->mu);
    return of;
}

/* Unlist and close an open file (replies still in flight keep their own
 * reference to the ifs_file). */
static void open_close(fsd *d, open_file *of)
{
    pthread_mutex_lock(&d->mu);
    of->prev->next = of->next;
    of->next->prev = of->prev;
    pthread_mutex_unlock(&d->mu);
    ifs_file_close(of->f);
    free(of);
}

/* ---- attributes ---------------------------------------------------------- */

static int node_stat(fsd *d, const tree_node *n, struct stat *st)
{
    uint64_t size = 0;
    int rc = ifs_size(d->m, n, &size);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    st->st_ino = n->ino;
    st->st_uid = d->uid;
    st->st_gid = d->gid;
    st->st_atim = st->st_mtim = st->st_ctim = d->t_mount;
    st->st_blksize = 4096;
    if (n->kind == TREE_DIR) {
        const tree *t = ifs_tree(d->m);
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        for (size_t i = 0; i < n->n_children; i++)
            if (tree_get(t, n->children[i])->kind == TREE_DIR)
                st->st_nlink++;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)size;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
    }
    return 0;
}

/* Live files must not be cached: their attributes time out at once. */
static double node_timeout(const tree_node *n)
{
    return n->kind == TREE_STATS ? 0.0 : ATTR_TIMEOUT;
}

/* ---- ops ----------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* Requests up to 1 MiB: libfuse 3.14 derives the kernel's max_pages
     * (FUSE_MAX_PAGES) from max_write, capped by its 1 MiB + header buffer. */
    conn->max_write = 1u << 20;
    conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_ATOMIC_O_TRUNC);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fsd *d = req_fsd(req);
    const tree_node *n;
    int rc = tree_lookup(ifs_tree(d->m), parent, name, &n);
    struct fuse_entry_param e = { 0 };
    if (rc == 0)
        rc = node_stat(d, n, &e.attr);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    e.ino = n->ino;
    e.generation = 1;
    e.attr_timeout = node_timeout(n);
    e.entry_timeout = ATTR_TIMEOUT;
    fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    fsd *d = req_fsd(req);
    const tree_node *n = tree_get(ifs_tree(d->m), ino);
    struct stat st;
    int rc = n ? node_stat(d, n, &st) : -ENOENT;
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, node_timeout(n));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fsd *d = req_fsd(req);
    const tree_node *n = tree_get(ifs_tree(d->m), ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    ifs_file *f;
    ierr err = IERR_INIT;
    int rc = ifs_file_open(d->m, n, &f, &err);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    open_file *of = open_add(d, f);
    if (!of) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)of;
    /* Neuron files, tensors and stats bypass the kernel page cache: neuron
     * and tensor bytes are read once into the client's own memory, so a
     * page-cache copy would only double the DRAM they take; stats is live.
     * Static small files may stay cached. */
    if (n->kind == TREE_FFN || n->kind == TREE_FFN_SLOTS || n->kind == TREE_TENSOR || n->kind == TREE_STATS)
        fi->direct_io = 1;
    else
        fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) == -ENOENT)   /* the opener was interrupted */
        open_close(d, of);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    uint64_t t0 = cli_now_ns();
    fsd *d = req_fsd(req);
    ifs_file *f = ((open_file *)(uintptr_t)fi->fh)->f;
    /* the file may be released as soon as the reply is out: take what we need now */
    const tree_node *node = ifs_file_node(f);
    ifs_reply r;
    ierr err = IERR_INIT;
    int rc = off < 0 ? -EINVAL : ifs_read(d->m, f, (uint64_t)off, size, &r, &err);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else if (r.n == 0)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_iov(req, r.iov, (int)r.n);
    ifs_account(d->m, node, rc < 0 ? 0 : r.bytes, t0, rc < 0);
    if (rc == 0)
        ifs_reply_free(d->m, &r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    open_close(req_fsd(req), (open_file *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    const tree_node *n = tree_get(ifs_tree(req_fsd(req)->m), ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind != TREE_DIR) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)fi;
    const tree *t = ifs_tree(req_fsd(req)->m);
    const tree_node *n = tree_get(t, ino);
    if (!n || n->kind != TREE_DIR) {
        fuse_reply_err(req, n ? ENOTDIR : ENOENT);
        return;
    }
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* offsets: 0 ".", 1 "..", 2 + i child i; each entry carries the next one */
    size_t pos = 0;
    for (uint64_t i = off < 0 ? 0 : (uint64_t)off; i < 2 + n->n_children; i++) {
        const tree_node *c = i == 0 ? n : i == 1 ? tree_get(t, n->parent) : tree_get(t, n->children[i - 2]);
        const char *name = i == 0 ? "." : i == 1 ? ".." : c->name;
        struct stat st = { .st_ino = c->ino, .st_mode = c->kind == TREE_DIR ? S_IFDIR : S_IFREG };
        size_t need = fuse_add_direntry(req, buf + pos, size - pos, name, &st, (off_t)(i + 1));
        if (need > size - pos)
            break;
        pos += need;
    }
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    const store *s = ifs_store(req_fsd(req)->m);
    uint64_t bytes = store_dense_bytes(s) + store_ffn_bytes(s);
    struct statvfs sv = {
        .f_bsize = 4096, .f_frsize = 4096, .f_blocks = (fsblkcnt_t)((bytes + 4095) / 4096),
        .f_files = (fsfilcnt_t)tree_count(ifs_tree(req_fsd(req)->m)), .f_namemax = TREE_NAME_MAX,
        .f_flag = ST_RDONLY,
    };
    fuse_reply_statfs(req, &sv);
}

/* Every modifying operation: read-only file system. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    (void)ino; (void)attr; (void)to_set; (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)parent; (void)name; (void)mode; (void)rdev;
    fuse_reply_err(req, EROFS);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    (void)parent; (void)name; (void)mode;
    fuse_reply_err(req, EROFS);
}
static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent; (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    (void)link; (void)parent; (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    (void)parent; (void)name; (void)newparent; (void)newname; (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    (void)ino; (void)newparent; (void)newname;
    fuse_reply_err(req, EROFS);
}
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino; (void)buf; (void)size; (void)off; (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    (void)parent; (void)name; (void)mode; (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
    (void)ino; (void)name; (void)value; (void)size; (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino; (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
    (void)ino; (void)mode; (void)offset; (void)length; (void)fi;
    fuse_reply_err(req, EROFS);
}

static const struct fuse_lowlevel_ops inflashfs_ops = {
    .init        = op_init,
    .lookup      = op_lookup,
    .getattr     = op_getattr,
    .open        = op_open,
    .read        = op_read,
    .release     = op_release,
    .opendir     = op_opendir,
    .readdir     = op_readdir,
    .releasedir  = op_releasedir,
    .statfs      = op_statfs,
    .setattr     = op_setattr,
    .mknod       = op_mknod,
    .mkdir       = op_mkdir,
    .unlink      = op_unlink,
    .rmdir       = op_unlink,
    .symlink     = op_symlink,
    .rename      = op_rename,
    .link        = op_link,
    .write       = op_write,
    .create      = op_create,
    .setxattr    = op_setxattr,
    .removexattr = op_removexattr,
    .fallocate   = op_fallocate,
};

/* ---- command line -------------------------------------------------------- */

typedef struct {
    char    *store_dir;      /* first non-option argument */
    int      n_nonopt;
    char    *chunk;          /* -o chunk=SIZE */
    char    *cache;          /* -o cache=SIZE */
    unsigned readahead;      /* -o readahead=N */
    unsigned threads;        /* -o threads=N */
    unsigned ra_workers;     /* -o ra_workers=N */
    int      buffered;       /* -o buffered */
    int      verify;         /* -o verify=0|1 */
    int      help;
} cmdline;

enum { KEY_HELP, KEY_VERSION };

static const struct fuse_opt cmdline_spec[] = {
    { "chunk=%s", offsetof(cmdline, chunk), 0 },
    { "cache=%s", offsetof(cmdline, cache), 0 },
    { "readahead=%u", offsetof(cmdline, readahead), 0 },
    { "threads=%u", offsetof(cmdline, threads), 0 },
    { "ra_workers=%u", offsetof(cmdline, ra_workers), 0 },
    { "buffered", offsetof(cmdline, buffered), 1 },
    { "verify=%d", offsetof(cmdline, verify), 0 },
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_END
};

/* The first non-option argument is the store; the rest go on to libfuse
 * (the mount point); help sets a flag and is kept for fuse_parse_cmdline. */
static int cmdline_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    (void)outargs;
    cmdline *c = data;
    if (key == KEY_HELP) {
        c->help = 1;
        return 0;
    }
    if (key == FUSE_OPT_KEY_NONOPT && c->n_nonopt++ == 0) {
        c->store_dir = strdup(arg);
        return 0;
    }
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: " PROG " STORE_DIR MOUNTPOINT [-f] [-d] [-s] [-o OPTION[,OPTION...]]\n"
"Mount an inflash store read-only: config.json, tokenizer files,\n"
"tensors/<name>, layers/NN/ffn (neuron j at bytes [j*B, (j+1)*B)),\n"
"layers/NN/neurons.tsv, stats, stats.json. Usually started by mount.sh.\n"
"\n"
"options:\n"
"  -o chunk=SIZE       store read unit, power of two 4k..4m (default %uk)\n"
"  -o cache=SIZE       chunk cache budget, at least 4 chunks (default %um)\n"
"  -o readahead=N      chunks read ahead after each request (default %u)\n"
"  -o ra_workers=N     read-ahead threads (default %u)\n"
"  -o threads=N        FUSE worker threads (default %u)\n"
"  -o buffered         never use O_DIRECT on ffn.bin\n"
"  -o verify=0|1       check what is read against the store's xxh64 checksums\n"
"                      (default 1): each bundle once per fill of the cache,\n"
"                      each tensor at its first read; a mismatch is EIO and a\n"
"                      log line naming the layer and neuron (or the tensor)\n"
"  -o allow_other      let other users read the mount (default: only you)\n"
"  -f                  stay in the foreground\n"
"  -d                  debug output (implies -f)\n"
"  -s                  single-threaded\n"
"  -h, --help          this help\n"
"SIZE: bytes, or a number with a k, m, g or t suffix (powers of 1024;\n"
"fractions allowed: 1.5m). Exit status: 0 unmounted cleanly,\n"
"1 runtime error (bad store, mount failed), 2 usage error.\n",
            IFS_DEFAULT_CHUNK >> 10, IFS_DEFAULT_CACHE >> 20, IFS_DEFAULT_READAHEAD,
            IFS_DEFAULT_RA_WORKERS, DEFAULT_THREADS);
}

static int parse_size_opt(const char *name, const char *val, uint64_t *out)
{
    if (val && cli_parse_size(val, 1, out) < 0) {
        fprintf(stderr, PROG ": -o %s=%s: not a size (e.g. 64k, 4m)\n", name, val);
        return -1;
    }
    return 0;
}

/* The daemon's -o options into io (defaults for the rest): 0, or -1 after
 * a usage message. */
static int daemon_opts(const cmdline *c, ifs_opts *io)
{
    ifs_opts_default(io);
    io->readahead = c->readahead;
    io->ra_workers = c->ra_workers;
    io->buffered = c->buffered;
    io->verify = c->verify;
    if (c->verify != 0 && c->verify != 1) {
        fprintf(stderr, PROG ": -o verify=%d: must be 0 or 1\n", c->verify);
        return -1;
    }
    if (parse_size_opt("chunk", c->chunk, &io->chunk_bytes) < 0 ||
        parse_size_opt("cache", c->cache, &io->cache_bytes) < 0)
        return -1;
    ierr err = IERR_INIT;
    if (ifs_opts_check(io, &err) < 0) {
        fprintf(stderr, PROG ": -o %s\n", err.msg);
        return -1;
    }
    if (c->threads < 1 || c->threads > 256) {
        fprintf(stderr, PROG ": -o threads=%u: must be 1..256\n", c->threads);
        return -1;
    }
    return 0;
}

/* Serve requests until unmounted or signalled: libfuse's loop, single- or
 * multi-threaded (*lc: the loop configuration, for main to free). */
static int serve(struct fuse_session *se, const struct fuse_cmdline_opts *fo, unsigned threads,
                 struct fuse_loop_config **lc)
{
    if (fo->singlethread)
        return fuse_session_loop(se);
    *lc = fuse_loop_cfg_create();
    if (!*lc)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(*lc, (unsigned)fo->clone_fd);
    fuse_loop_cfg_set_max_threads(*lc, threads);
    fuse_loop_cfg_set_idle_threads(*lc, threads);
    return fuse_session_loop_mt(se, *lc);
}

/* -o ro,default_permissions,subtype=inflashfs,fsname=<store> */
static int add_mount_opts(struct fuse_args *args, const char *store_abs)
{
    char *opts = NULL, *fsname = NULL;
    int rc = -1;
    if (asprintf(&fsname, "fsname=%s", store_abs) < 0)
        return -1;
    if (fuse_opt_add_opt(&opts, "ro") == 0 && fuse_opt_add_opt(&opts, "default_permissions") == 0 &&
        fuse_opt_add_opt(&opts, "subtype=" PROG) == 0 && fuse_opt_add_opt_escaped(&opts, fsname) == 0 &&
        fuse_opt_add_arg(args, "-o") == 0 && fuse_opt_add_arg(args, opts) == 0)
        rc = 0;
    free(opts);
    free(fsname);
    return rc;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts fo = { 0 };
    cmdline c = { .readahead = IFS_DEFAULT_READAHEAD, .threads = DEFAULT_THREADS,
                  .ra_workers = IFS_DEFAULT_RA_WORKERS, .verify = 1 };
    struct fuse_session *se = NULL;
    struct fuse_loop_config *lc = NULL;
    ifs *m = NULL;
    char *store_abs = NULL;
    int ret = 2;

    /* Memory stays the cache plus a fixed overhead: per-request buffers of
     * MMAP_FROM bytes and more (tensor reads, scattered copies: up to 1 MiB)
     * are mapped and given back when freed, instead of lingering in each
     * worker thread's glibc arena once the dynamic threshold has risen. */
    mallopt(M_MMAP_THRESHOLD, MMAP_FROM);
    if (fuse_opt_parse(&args, &c, cmdline_spec, cmdline_proc) == -1)
        goto out;
    if (c.help) {
        usage(stdout);
        ret = 0;
        goto out;
    }
    if (fuse_parse_cmdline(&args, &fo) != 0)
        goto out;
    if (fo.show_version) {
        printf(PROG " (libfuse %s)\n", fuse_pkgversion());
        ret = 0;
        goto out;
    }
    if (!c.store_dir || !fo.mountpoint || c.n_nonopt != 2) {
        fprintf(stderr, PROG ": need STORE_DIR and MOUNTPOINT (try --help)\n");
        goto out;
    }
    ifs_opts io;
    if (daemon_opts(&c, &io) < 0)
        goto out;
    ierr err = IERR_INIT;

    store_abs = realpath(c.store_dir, NULL);
    if (!store_abs) {
        fprintf(stderr, PROG ": %s: %s\n", c.store_dir, strerror(errno));
        ret = 1;
        goto out;
    }
    /* the session first: it rejects unknown options (a usage error) before
     * the store is opened */
    fsd d = { .uid = getuid(), .gid = getgid(), .mu = PTHREAD_MUTEX_INITIALIZER };
    d.open.prev = d.open.next = &d.open;
    if (add_mount_opts(&args, store_abs) < 0) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    se = fuse_session_new(&args, &inflashfs_ops, sizeof inflashfs_ops, &d);
    if (!se)
        goto out;

    ret = 1;
    if (ifs_open(store_abs, &io, &m, &err) < 0) {
        if (strncmp(err.msg, store_abs, strlen(store_abs)) == 0 || strncmp(err.msg, c.store_dir, strlen(c.store_dir)) == 0)
            fprintf(stderr, PROG ": %s\n", err.msg);
        else
            fprintf(stderr, PROG ": %s: %s\n", c.store_dir, err.msg);
        goto out;
    }
    d.m = m;
    clock_gettime(CLOCK_REALTIME, &d.t_mount);
    if (fuse_set_signal_handlers(se) != 0)
        goto out;
    if (fuse_session_mount(se, fo.mountpoint) != 0) {
        fprintf(stderr, PROG ": cannot mount on %s\n", fo.mountpoint);
        fuse_remove_signal_handlers(se);
        goto out;
    }
    fprintf(stderr, PROG ": %s mounted on %s (chunk %" PRIu64 ", cache %" PRIu64 ", readahead %u, threads %u, %s%s)\n",
            store_abs, fo.mountpoint, io.chunk_bytes, io.cache_bytes, io.readahead, c.threads,
            ifs_direct(m) ? "O_DIRECT" : "buffered", io.verify ? "" : ", verify off");
    fuse_daemonize(fo.foreground);
    int rc = serve(se, &fo, c.threads, &lc);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    /* the workers are gone; close the files the kernel never released */
    while (d.open.next != &d.open)
        open_close(&d, d.open.next);
    ret = rc < 0 ? 1 : 0;      /* > 0: ended by a signal, after a clean unmount */
out:
    if (se)
        fuse_session_destroy(se);
    fuse_loop_cfg_destroy(lc);
    ifs_close(m);
    free(store_abs);
    free(fo.mountpoint);
    free(c.store_dir);
    free(c.chunk);
    free(c.cache);
    fuse_opt_free_args(&args);
    return ret;
}
