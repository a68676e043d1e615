/* quantize_store.c: a test helper (e2e_qstore.sh) that writes a copy of an
 * uncalibrated f32/f16 store in q8_0 or q4_0 through the ordinary writer
 * (layout/store.h): metadata and tokenizer copied, every dense tensor in
 * the dtype fmt_tensor_dtype gives (matrices quantized row by row, 1-D
 * tensors f32), every bundle's parts (up, [gate,] down) quantized along
 * d_model. It lets the daemon's tests make quantized stores of the shared
 * test models without depending on inflash-pack.
 *   usage: quantize_store SRC_STORE OUT_STORE q8_0|q4_0 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

/* meta keys the writer sets itself (storew_set_hparams, storew_commit) */
static int writer_key(const char *k)
{
    static const char *const keys[] = {"dtype", "bundle_bytes", "dense_bytes", "ffn_bytes"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(k, keys[i]) == 0)
            return 1;
    return 0;
}

static int copy_meta_and_tokenizer(const store *s, storew *w, fmt_dtype q, ierr *err)
{
    int rc = 0;
    for (size_t i = 0; i < store_meta_count(s) && !rc; i++) {
        const char *k, *v;
        store_meta_at(s, i, &k, &v);
        if (!writer_key(k))
            rc = storew_set_meta(w, k, v, err);
    }
    if (rc || (rc = storew_set_hparams(w, store_hparams(s), q, err)))
        return rc;
    for (int64_t i = 0; i < store_token_count(s) && !rc; i++) {
        const char *piece;
        size_t len;
        double score;
        int special;
        if (!(rc = store_token(s, i, &piece, &len, &score, &special)))
            rc = storew_add_token(w, i, piece, len, score, special, err);
    }
    for (int64_t i = 0; i < store_merge_count(s) && !rc; i++) {
        const char *l, *r;
        size_t ll, rl;
        if (!(rc = store_merge(s, i, &l, &ll, &r, &rl)))
            rc = storew_add_merge(w, i, l, ll, r, rl, err);
    }
    for (size_t i = 0; i < store_tokfile_count(s) && !rc; i++) {
        const char *name;
        const void *data;
        size_t len;
        if (!(rc = store_tokfile_at(s, i, &name, &data, &len)))
            rc = storew_add_tokfile(w, name, data, len, err);
    }
    return rc;
}

static int copy_tensors(const store *s, storew *w, fmt_dtype q, ierr *err)
{
    int rc = 0;
    for (size_t i = 0; i < store_tensor_count(s) && !rc; i++) {
        const store_tensor *t = store_tensor_at(s, i);
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++)
            n *= (uint64_t)t->shape[d];
        fmt_dtype dt = fmt_tensor_dtype(q, t->name, t->ndim);
        uint64_t bytes = fmt_bytes(dt, n);
        float *x = malloc((size_t)n * sizeof *x);
        void *out = bytes != UINT64_MAX ? malloc((size_t)bytes) : NULL;
        if (!x || !out)
            rc = ierr_set(err, -EINVAL, "%s: cannot quantize (out of memory or not whole blocks)", t->name);
        else if (!(rc = store_read_tensor_f32(s, t, x, err))) {
            fmt_from_f32(dt, x, out, (size_t)n);   /* rows are whole blocks, so row by row is the same */
            rc = storew_add_tensor(w, t->name, dt, t->ndim, t->shape, out, (size_t)bytes, err);
        }
        free(x);
        free(out);
    }
    return rc;
}

static int copy_bundles(const store *s, storew *w, fmt_dtype q, ierr *err)
{
    const hp_config *hp = store_hparams(s);
    fmt_dtype src = store_dtype(s);
    size_t d = (size_t)hp->d_model, parts = hp->gated ? 3 : 2;
    unsigned char *in = malloc((size_t)store_bundle_bytes(s)), *out = malloc(parts * (size_t)fmt_bytes(q, d));
    float *x = malloc(d * sizeof *x);
    int rc = in && out && x ? 0 : ierr_set(err, -ENOMEM, "%s: out of memory", store_dir(s));
    for (int64_t l = 0; l < hp->n_layers && !rc; l++) {
        const store_layer *L = store_layer_at(s, l);
        rc = storew_begin_layer(w, l, L->n_neurons, err);
        for (int64_t j = 0; j < L->n_neurons && !rc; j++) {
            if ((rc = store_read_bundle(s, l, j, in, err)))
                break;
            for (size_t p = 0; p < parts; p++) {
                fmt_to_f32(src, in + p * (size_t)fmt_bytes(src, d), x, d);
                fmt_from_f32(q, x, out + p * (size_t)fmt_bytes(q, d), d);
            }
            rc = storew_add_bundle(w, out, err);
        }
    }
    free(in);
    free(out);
    free(x);
    return rc;
}

int main(int argc, char **argv)
{
    fmt_dtype q;
    if (argc != 4 || fmt_dtype_parse(argv[3], &q) || !fmt_is_quant(q)) {
        fprintf(stderr, "usage: quantize_store SRC_STORE OUT_STORE q8_0|q4_0\n");
        return 2;
    }
    ierr err = IERR_INIT;
    store *s = NULL;
    storew *w = NULL;
    int rc = store_open(argv[1], &s, &err);
    if (!rc && store_calib_at(s, 0))
        rc = ierr_set(&err, -EINVAL, "%s: calibrated; quantize the store before calibrating it", argv[1]);
    if (!rc)
        rc = hp_check_dtype(store_hparams(s), q, argv[1], &err);
    if (!rc)
        rc = storew_new(argv[2], 1, &w, &err);
    if (!rc)
        rc = copy_meta_and_tokenizer(s, w, q, &err);
    if (!rc)
        rc = copy_tensors(s, w, q, &err);
    if (!rc)
        rc = copy_bundles(s, w, q, &err);
    if (!rc)
        rc = storew_commit(w, &err);
    if (rc)
        fprintf(stderr, "quantize_store: %s\n", err.msg[0] ? err.msg : "failed");
    storew_free(w);
    store_close(s);
    return rc ? 1 : 0;
}
