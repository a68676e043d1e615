/* tree.h: the virtual directory tree of an inflashfs mount: inode numbers
 * <-> nodes, names, kinds and sizes. Knows nothing about FUSE or the store:
 * the daemon (fs/ifs.c) fills it once at mount time, after which it is
 * immutable and may be read by any number of threads without locking. */
#ifndef INFLASH_FS_TREE_H
#define INFLASH_FS_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define TREE_ROOT_INO  1u          /* == FUSE_ROOT_ID */
#define TREE_NAME_MAX  255u

typedef enum {
    TREE_DIR = 0,    /* directory */
    TREE_MEM,        /* bytes held in memory: data, size (config.json, tokenizer files) */
    TREE_NEURONS,    /* layers/NN/neurons.tsv: ref = layer, rendered at open */
    TREE_TENSOR,     /* tensors/<name>: ref = tensor index (store order) */
    TREE_FFN,        /* layers/NN/ffn: ref = layer */
    TREE_FFN_SLOTS,  /* layers/NN/ffn.slots: ref = layer; the same bundles in
                        physical slot order (neurons.tsv maps slots to ids) */
    TREE_STATS,      /* stats (ref 0) and stats.json (ref 1): live, rendered at open */
} tree_kind;

typedef struct {
    uint64_t    ino;          /* index + 1; the root is TREE_ROOT_INO */
    uint64_t    parent;       /* ino of the containing directory (root: itself) */
    char       *name;         /* owned by the tree; "" for the root */
    tree_kind   kind;
    uint64_t    size;         /* bytes (directories: 0) */
    int64_t     ref;          /* kind-specific, see tree_kind */
    const void *data;         /* TREE_MEM: the bytes; not owned (outlive the tree) */
    uint64_t   *children;     /* directories: child inos sorted by name; owned */
    size_t      n_children;
    size_t      cap_children;
} tree_node;

typedef struct tree tree;     /* opaque */

int  tree_new(tree **out, ierr *err);
void tree_free(tree *t);

/* Add a file at `path` ("a/b/c", relative to the root), creating missing
 * parent directories. -EINVAL for an empty, ".", ".." or over-long
 * component, -EEXIST if the path exists, -ENOTDIR if a parent is a file,
 * -ENOMEM. *ino (may be NULL) receives the new inode number. */
int tree_add(tree *t, const char *path, tree_kind kind, uint64_t size, int64_t ref,
             const void *data, uint64_t *ino, ierr *err);

/* The node of an inode number, or NULL if there is none. */
const tree_node *tree_get(const tree *t, uint64_t ino);
/* A child of directory `parent` by name: 0, -ENOENT, or -ENOTDIR. */
int tree_lookup(const tree *t, uint64_t parent, const char *name, const tree_node **out);
/* A node by path from the root ("" or "/" is the root): 0, -ENOENT, -ENOTDIR. */
int tree_resolve(const tree *t, const char *path, const tree_node **out);
/* Number of nodes (the highest inode number). */
size_t tree_count(const tree *t);

#endif
