/* test_fs_tree.c: the virtual tree of inflashfs (fs/tree.c): paths <-> inode
 * numbers and nodes, implicit directories, sizes, sorted children, and the
 * errors (ENOENT, ENOTDIR, EEXIST, EINVAL). No FUSE, no store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tree.h"

/* The shape of a mount: config.json, a tokenizer, tensors, two layers. */
static tree *mount_like(void)
{
    tree *t;
    ierr err = IERR_INIT;
    static const char cfg[] = "{\"model_type\": \"opt\"}";
    assert_int_equal(tree_new(&t, &err), 0);
    assert_int_equal(tree_add(t, "config.json", TREE_MEM, sizeof cfg - 1, 0, cfg, NULL, &err), 0);
    assert_int_equal(tree_add(t, "vocab.json", TREE_MEM, 10, 0, "0123456789", NULL, &err), 0);
    assert_int_equal(tree_add(t, "tensors/model.decoder.embed_tokens.weight", TREE_TENSOR, 524288, 0, NULL, NULL, &err), 0);
    assert_int_equal(tree_add(t, "tensors/model.decoder.final_layer_norm.bias", TREE_TENSOR, 512, 1, NULL, NULL, &err), 0);
    for (int l = 0; l < 12; l++) {
        char p[64];
        snprintf(p, sizeof p, "layers/%02d/ffn", l);
        assert_int_equal(tree_add(t, p, TREE_FFN, 1024ull * 1024, l, NULL, NULL, &err), 0);
        snprintf(p, sizeof p, "layers/%02d/neurons.tsv", l);
        assert_int_equal(tree_add(t, p, TREE_NEURONS, 9000 + (uint64_t)l, l, NULL, NULL, &err), 0);
    }
    assert_int_equal(tree_add(t, "stats", TREE_STATS, 0, 0, NULL, NULL, &err), 0);
    assert_int_equal(tree_add(t, "stats.json", TREE_STATS, 0, 1, NULL, NULL, &err), 0);
    return t;
}

static void test_root(void **state)
{
    (void)state;
    tree *t = mount_like();
    const tree_node *r = tree_get(t, TREE_ROOT_INO);
    assert_non_null(r);
    assert_int_equal(r->kind, TREE_DIR);
    assert_int_equal(r->parent, TREE_ROOT_INO);
    assert_string_equal(r->name, "");
    const tree_node *n;
    assert_int_equal(tree_resolve(t, "", &n), 0);
    assert_ptr_equal(n, r);
    assert_int_equal(tree_resolve(t, "/", &n), 0);
    assert_ptr_equal(n, r);
    /* root: config.json layers stats stats.json tensors vocab.json, sorted */
    static const char *want[] = { "config.json", "layers", "stats", "stats.json", "tensors", "vocab.json" };
    assert_int_equal(r->n_children, 6);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(tree_get(t, r->children[i])->name, want[i]);
    tree_free(t);
}

static void test_paths_and_sizes(void **state)
{
    (void)state;
    tree *t = mount_like();
    const tree_node *n;
    assert_int_equal(tree_resolve(t, "layers/03/ffn", &n), 0);
    assert_int_equal(n->kind, TREE_FFN);
    assert_int_equal(n->ref, 3);
    assert_int_equal(n->size, 1024 * 1024);
    assert_int_equal(tree_resolve(t, "/layers/11/neurons.tsv", &n), 0);
    assert_int_equal(n->kind, TREE_NEURONS);
    assert_int_equal(n->size, 9011);
    assert_int_equal(tree_resolve(t, "tensors/model.decoder.final_layer_norm.bias", &n), 0);
    assert_int_equal(n->kind, TREE_TENSOR);
    assert_int_equal(n->size, 512);
    assert_int_equal(n->ref, 1);
    assert_int_equal(tree_resolve(t, "config.json", &n), 0);
    assert_int_equal(n->kind, TREE_MEM);
    assert_memory_equal(n->data, "{\"model_type\"", 13);

    /* lookup step by step agrees with resolve, parents point back */
    const tree_node *layers, *l07, *ffn;
    assert_int_equal(tree_lookup(t, TREE_ROOT_INO, "layers", &layers), 0);
    assert_int_equal(layers->kind, TREE_DIR);
    assert_int_equal(layers->n_children, 12);
    assert_int_equal(tree_lookup(t, layers->ino, "07", &l07), 0);
    assert_int_equal(l07->parent, layers->ino);
    assert_int_equal(tree_lookup(t, l07->ino, "ffn", &ffn), 0);
    assert_int_equal(ffn->parent, l07->ino);
    assert_ptr_equal(tree_get(t, ffn->ino), ffn);
    assert_int_equal(tree_resolve(t, "layers/07/ffn", &n), 0);
    assert_ptr_equal(n, ffn);
    /* layers/NN sorted: 00 .. 11 */
    for (size_t i = 0; i < layers->n_children; i++) {
        char nn[24];
        snprintf(nn, sizeof nn, "%02zu", i);
        assert_string_equal(tree_get(t, layers->children[i])->name, nn);
    }
    /* inode numbers are dense: 1..count */
    for (uint64_t ino = 1; ino <= tree_count(t); ino++)
        assert_int_equal(tree_get(t, ino)->ino, ino);
    assert_null(tree_get(t, 0));
    assert_null(tree_get(t, tree_count(t) + 1));
    tree_free(t);
}

static void test_errors(void **state)
{
    (void)state;
    tree *t = mount_like();
    const tree_node *n;
    ierr err = IERR_INIT;
    assert_int_equal(tree_resolve(t, "nope", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "layers/12/ffn", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "layers/3/ffn", &n), -ENOENT);      /* zero-padded only */
    assert_int_equal(tree_resolve(t, "layers/03/ff", &n), -ENOENT);       /* prefix is not a match */
    assert_int_equal(tree_resolve(t, "layers/03/ffnx", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "config.json/x", &n), -ENOTDIR);
    assert_int_equal(tree_lookup(t, TREE_ROOT_INO, "", &n), -ENOENT);
    assert_int_equal(tree_lookup(t, 9999, "x", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "config.json", &n), 0);
    assert_int_equal(tree_lookup(t, n->ino, "x", &n), -ENOTDIR);

    assert_int_equal(tree_add(t, "config.json", TREE_MEM, 1, 0, "x", NULL, &err), -EEXIST);
    assert_non_null(strstr(err.msg, "config.json"));
    assert_int_equal(tree_add(t, "layers", TREE_MEM, 1, 0, "x", NULL, &err), -EEXIST);
    assert_int_equal(tree_add(t, "config.json/inner", TREE_MEM, 1, 0, "x", NULL, &err), -ENOTDIR);
    assert_int_equal(tree_add(t, "a//b", TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    assert_int_equal(tree_add(t, "", TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    assert_int_equal(tree_add(t, "tensors/../x", TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    assert_int_equal(tree_add(t, "./x", TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    assert_int_equal(tree_add(t, "trailing/", TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    assert_int_equal(tree_add(t, "d", TREE_DIR, 0, 0, NULL, NULL, &err), -EINVAL);
    /* a refused path leaves no directories behind */
    assert_int_equal(tree_resolve(t, "trailing", &n), -ENOENT);
    assert_int_equal(tree_resolve(t, "a", &n), -ENOENT);
    char longname[TREE_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(tree_add(t, longname, TREE_MEM, 1, 0, "x", NULL, &err), -EINVAL);
    longname[TREE_NAME_MAX] = '\0';
    uint64_t ino = 0;
    assert_int_equal(tree_add(t, longname, TREE_MEM, 1, 0, "x", &ino, &err), 0);
    assert_int_equal(ino, tree_count(t));
    tree_free(t);
}

/* Many names inserted in scrambled order come out sorted and all findable. */
static void test_many_sorted(void **state)
{
    (void)state;
    tree *t;
    ierr err = IERR_INIT;
    assert_int_equal(tree_new(&t, &err), 0);
    enum { N = 2000 };
    for (unsigned i = 0; i < N; i++) {
        unsigned k = (i * 7919u) % N;      /* a permutation of 0..N-1 */
        char p[64];
        snprintf(p, sizeof p, "tensors/w.%u", k);
        assert_int_equal(tree_add(t, p, TREE_TENSOR, k, k, NULL, NULL, &err), 0);
    }
    const tree_node *d;
    assert_int_equal(tree_resolve(t, "tensors", &d), 0);
    assert_int_equal(d->n_children, N);
    for (size_t i = 1; i < d->n_children; i++)
        assert_true(strcmp(tree_get(t, d->children[i - 1])->name, tree_get(t, d->children[i])->name) < 0);
    for (unsigned k = 0; k < N; k++) {
        char name[32];
        const tree_node *n;
        snprintf(name, sizeof name, "w.%u", k);
        assert_int_equal(tree_lookup(t, d->ino, name, &n), 0);
        assert_int_equal(n->size, k);
    }
    tree_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root),
        cmocka_unit_test(test_paths_and_sizes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_many_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
