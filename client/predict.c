/* predict.c: the activation predictor at run time (predict.h): its
 * factors, loading them from the store, scoring through OpenBLAS and the
 * selection of the predicted active set. */
#include "predict.h"

#include <cblas.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int pred_new(int64_t d, int64_t n, int64_t r, pred **out, ierr *err)
{
    *out = NULL;
    if (d < 1 || n < 1 || r < 1 || r > d || r > n)
        return ierr_set(err, -EINVAL, "predictor: rank %lld must be in 1..min(n=%lld, d=%lld)",
                        (long long)r, (long long)n, (long long)d);
    pred *p = calloc(1, sizeof *p);
    if (!p)
        return ierr_set(err, -ENOMEM, "predictor: out of memory");
    p->d = d;
    p->n = n;
    p->r = r;
    p->A = calloc((size_t)(r * d), sizeof(float));
    p->B = calloc((size_t)(n * r), sizeof(float));
    p->c = calloc((size_t)n, sizeof(float));
    if (!p->A || !p->B || !p->c) {
        pred_free(p);
        return ierr_set(err, -ENOMEM, "predictor: out of memory for rank %lld factors", (long long)r);
    }
    *out = p;
    return 0;
}

void pred_free(pred *p)
{
    if (!p)
        return;
    free(p->A);
    free(p->B);
    free(p->c);
    free(p);
}

int pred_load(source *src, int64_t layer, int64_t r, double tau, pred **out, ierr *err)
{
    const hp_config *hp = source_hparams(src);
    pred *p = NULL;
    char name[STORE_PRED_NAME_MAX];
    int rc = pred_new(hp->d_model, hp->d_ffn, r, &p, err);
    if (rc == 0) {
        store_pred_name(name, layer, 'A');
        rc = source_tensor_f32(src, name, 2, p->A, r * p->d, err);
    }
    if (rc == 0) {
        store_pred_name(name, layer, 'B');
        rc = source_tensor_f32(src, name, 2, p->B, p->n * r, err);
    }
    if (rc == 0) {
        store_pred_name(name, layer, 'c');
        rc = source_tensor_f32(src, name, 1, p->c, p->n, err);
    }
    if (rc) {
        pred_free(p);
        return rc;
    }
    p->tau = (float)tau;
    *out = p;
    return 0;
}

void pred_score(const pred *p, const float *X, int64_t m, float *H, float *S)
{
    const blasint d = (blasint)p->d, n = (blasint)p->n, r = (blasint)p->r, mm = (blasint)m;
    /* H [m×r] = X [m×d] · Aᵀ */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mm, r, d, 1.0f, X, d, p->A, d, 0.0f, H, r);
    for (int64_t i = 0; i < m; i++)
        memcpy(S + i * p->n, p->c, (size_t)p->n * sizeof(float));
    /* S [m×n] += H · Bᵀ */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mm, n, r, 1.0f, H, r, p->B, r, 1.0f, S, n);
}

int64_t pred_select(const pred *p, const float *x, float *h, float *s, int32_t *idx)
{
    pred_score(p, x, 1, h, s);
    int64_t k = 0;
    for (int64_t j = 0; j < p->n; j++)
        if (s[j] > p->tau)
            idx[k++] = (int32_t)j;
    return k;
}
