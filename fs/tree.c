/* tree.c: the virtual directory tree of an inflashfs mount (tree.h):
 * nodes in an array indexed by inode number - 1, each directory's children
 * kept sorted by name so lookups are a binary search. */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct tree {
    tree_node **nodes;        /* [n] owned; nodes[ino - 1] */
    size_t      n;
    size_t      cap;
};

static tree_node *node_at(const tree *t, uint64_t ino)
{
    if (ino < 1 || ino > t->n)
        return NULL;
    return t->nodes[ino - 1];
}

static void node_free(tree_node *n)
{
    if (!n)
        return;
    free(n->name);
    free(n->children);
    free(n);
}

/* Append a node (no parent link yet); its ino, or 0 on ENOMEM. */
static uint64_t node_new(tree *t, const char *name, size_t name_len, tree_kind kind, uint64_t parent)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        tree_node **nodes = realloc(t->nodes, cap * sizeof *nodes);
        if (!nodes)
            return 0;
        t->nodes = nodes;
        t->cap = cap;
    }
    tree_node *n = calloc(1, sizeof *n);
    if (!n)
        return 0;
    n->name = strndup(name, name_len);
    if (!n->name) {
        free(n);
        return 0;
    }
    n->kind = kind;
    n->ino = t->n + 1;
    n->parent = parent ? parent : n->ino;
    t->nodes[t->n++] = n;
    return n->ino;
}

/* Binary search of `name` (name_len bytes) among dir's children: the index
 * where it is (*found = 1) or would be inserted. */
static size_t child_search(const tree *t, const tree_node *dir, const char *name, size_t name_len, int *found)
{
    size_t lo = 0, hi = dir->n_children;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *cn = t->nodes[dir->children[mid] - 1]->name;
        int c = strncmp(cn, name, name_len);
        if (c == 0)
            c = cn[name_len] ? 1 : 0;  /* equal prefix: the longer name sorts after */
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int child_insert(tree_node *dir, size_t at, uint64_t ino)
{
    if (dir->n_children == dir->cap_children) {
        size_t cap = dir->cap_children ? dir->cap_children * 2 : 8;
        uint64_t *c = realloc(dir->children, cap * sizeof *c);
        if (!c)
            return -ENOMEM;
        dir->children = c;
        dir->cap_children = cap;
    }
    memmove(dir->children + at + 1, dir->children + at, (dir->n_children - at) * sizeof *dir->children);
    dir->children[at] = ino;
    dir->n_children++;
    return 0;
}

int tree_new(tree **out, ierr *err)
{
    tree *t = calloc(1, sizeof *t);
    if (!t || node_new(t, "", 0, TREE_DIR, 0) != TREE_ROOT_INO) {
        tree_free(t);
        return ierr_set(err, -ENOMEM, "tree: out of memory");
    }
    *out = t;
    return 0;
}

void tree_free(tree *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        node_free(t->nodes[i]);
    free(t->nodes);
    free(t);
}

/* Every component non-empty, not "." or "..", at most TREE_NAME_MAX bytes. */
static int path_ok(const char *path)
{
    for (const char *p = path;;) {
        size_t len = strcspn(p, "/");
        if (len == 0 || len > TREE_NAME_MAX || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!p[len])
            return 1;
        p += len + 1;
    }
}

int tree_add(tree *t, const char *path, tree_kind kind, uint64_t size, int64_t ref,
             const void *data, uint64_t *ino, ierr *err)
{
    uint64_t dir = TREE_ROOT_INO;
    const char *p = path;
    if (kind == TREE_DIR)
        return ierr_set(err, -EINVAL, "tree: %s: directories are created implicitly", path);
    if (!path_ok(path))
        return ierr_set(err, -EINVAL, "tree: bad path '%s'", path);
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        tree_node *d = node_at(t, dir);
        if (d->kind != TREE_DIR)
            return ierr_set(err, -ENOTDIR, "tree: %s: a parent is a file", path);
        int found;
        size_t at = child_search(t, d, p, len, &found);
        if (!slash) {
            if (found)
                return ierr_set(err, -EEXIST, "tree: %s: already exists", path);
            uint64_t n = node_new(t, p, len, kind, dir);
            if (!n)
                return ierr_set(err, -ENOMEM, "tree: out of memory");
            tree_node *f = node_at(t, n);
            f->size = size;
            f->ref = ref;
            f->data = data;
            d = node_at(t, dir);
            if (child_insert(d, at, n) < 0) {
                node_free(t->nodes[--t->n]);
                return ierr_set(err, -ENOMEM, "tree: out of memory");
            }
            if (ino)
                *ino = n;
            return 0;
        }
        if (found) {
            dir = d->children[at];
        } else {
            uint64_t n = node_new(t, p, len, TREE_DIR, dir);
            if (!n)
                return ierr_set(err, -ENOMEM, "tree: out of memory");
            if (child_insert(node_at(t, dir), at, n) < 0) {
                node_free(t->nodes[--t->n]);
                return ierr_set(err, -ENOMEM, "tree: out of memory");
            }
            dir = n;
        }
        p = slash + 1;
    }
}

const tree_node *tree_get(const tree *t, uint64_t ino)
{
    return node_at(t, ino);
}

static int lookup_len(const tree *t, uint64_t parent, const char *name, size_t len, const tree_node **out)
{
    const tree_node *d = node_at(t, parent);
    if (!d)
        return -ENOENT;
    if (d->kind != TREE_DIR)
        return -ENOTDIR;
    int found;
    size_t at = child_search(t, d, name, len, &found);
    if (!found)
        return -ENOENT;
    *out = node_at(t, d->children[at]);
    return 0;
}

int tree_lookup(const tree *t, uint64_t parent, const char *name, const tree_node **out)
{
    return lookup_len(t, parent, name, strlen(name), out);
}

int tree_resolve(const tree *t, const char *path, const tree_node **out)
{
    const tree_node *n = node_at(t, TREE_ROOT_INO);
    const char *p = path;
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, "/");
        int rc = lookup_len(t, n->ino, p, len, &n);
        if (rc < 0)
            return rc;
        p += len;
    }
    *out = n;
    return 0;
}

size_t tree_count(const tree *t)
{
    return t->n;
}
