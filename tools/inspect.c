/* inspect.c: inflash-inspect, which prints what a store holds, for people:
 * hyperparameters, tokenizer, the dense tensor table, a per-layer FFN
 * summary and the calibration (per-layer predictor rank, thresholds,
 * sparsity, recall, precision, predicted fraction). Reads only through
 * layout/store.h. */
#include "store.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PROG "inflash-inspect"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " STORE_DIR\n"
            "\n"
            "Print a store's hyperparameters, tokenizer, dense tensor table and per-layer\n"
            "FFN summary (with calibration data when present). The store is validated\n"
            "first; a damaged store gives an error naming the file.\n"
            "\n"
            "Exit status: 0 ok, 1 error, 2 usage error.\n");
}

/* meta keys shown in the hyperparameter block; the rest is listed after it */
static const char *const known_keys[] = {
    "family", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ffn", "vocab_size", "max_pos", "pos_offset",
    "norm_eps", "rope_theta", "activation", "gated", "tie_embeddings", "bos_id", "eos_id", "pad_id", "dtype",
    "source_dtype", "bundle_bytes", "dense_bytes", "ffn_bytes", "tokenizer", "magic", "format_version",
    "hf_config",
};

static int is_known(const char *key)
{
    for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++)
        if (strcmp(key, known_keys[i]) == 0)
            return 1;
    return 0;
}

static void print_hparams(const store *s)
{
    printf("store %s (format %s)\n\nhyperparameters\n", store_dir(s), store_meta(s, "format_version"));
    for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++) {
        const char *v = store_meta(s, known_keys[i]);
        if (v && strcmp(known_keys[i], "hf_config") != 0 && strcmp(known_keys[i], "magic") != 0 &&
            strcmp(known_keys[i], "format_version") != 0)
            printf("  %-16s %s\n", known_keys[i], v);
    }
    int other = 0;
    for (size_t i = 0; i < store_meta_count(s); i++) {
        const char *k, *v;
        store_meta_at(s, i, &k, &v);
        if (is_known(k))
            continue;
        if (!other++)
            printf("\nother metadata (calibration, ...)\n");
        printf("  %-24s %.100s%s\n", k, v, strlen(v) > 100 ? "..." : "");
    }
}

static void print_tokenizer(const store *s)
{
    int64_t special = 0;
    for (int64_t i = 0; i < store_token_count(s); i++) {
        int sp = 0;
        if (store_token(s, i, NULL, NULL, NULL, &sp) == 0)
            special += sp;
    }
    printf("\ntokenizer %s: %" PRId64 " tokens (%" PRId64 " special), %" PRId64 " merges\n",
           store_meta(s, "tokenizer") ? store_meta(s, "tokenizer") : "?", store_token_count(s), special,
           store_merge_count(s));
    for (size_t i = 0; i < store_tokfile_count(s); i++) {
        const char *name;
        const void *data;
        size_t len;
        store_tokfile_at(s, i, &name, &data, &len);
        printf("  %-26s %zu bytes\n", name, len);
    }
}

static void print_tensors(const store *s)
{
    printf("\ntensors in dense.bin (%zu, file %" PRIu64 " bytes)\n", store_tensor_count(s), store_dense_bytes(s));
    printf("  %-52s %-5s %-14s %12s %12s\n", "name", "dtype", "shape", "offset", "bytes");
    for (size_t i = 0; i < store_tensor_count(s); i++) {
        const store_tensor *t = store_tensor_at(s, i);
        char shape[80] = "";
        size_t at = 0;
        for (int d = 0; d < t->ndim && at < sizeof shape; d++)
            at += (size_t)snprintf(shape + at, sizeof shape - at, d ? " x %" PRId64 : "%" PRId64, t->shape[d]);
        printf("  %-52s %-5s %-14s %12" PRIu64 " %12" PRIu64 "\n", t->name, fmt_dtype_name(t->dtype),
               t->ndim ? shape : "scalar", t->offset, t->bytes);
    }
}

static void print_ffn(const store *s)
{
    const hp_config *hp = store_hparams(s);
    printf("\nFFN in ffn.bin (file %" PRIu64 " bytes, bundle %" PRId64 " bytes = %s x %" PRId64 " x %s)\n",
           store_ffn_bytes(s), store_bundle_bytes(s), hp->gated ? "(up, gate, down)" : "(up, down)", hp->d_model,
           fmt_dtype_name(store_dtype(s)));
    printf("  %5s %8s %12s %12s %-10s %-10s %10s %10s\n", "layer", "neurons", "offset", "bytes", "calibrated",
           "order", "mean freq", "max freq");
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const store_layer *L = store_layer_at(s, l);
        int64_t n_freq = 0, moved = 0;
        double sum = 0, max = 0;
        for (int64_t j = 0; j < L->n_neurons; j++) {
            moved += L->slot_of[j] != j;
            if (!isnan(L->freq[j])) {
                n_freq++;
                sum += L->freq[j];
                max = L->freq[j] > max ? L->freq[j] : max;
            }
        }
        char mean_s[32] = "-", max_s[32] = "-";
        if (n_freq) {
            snprintf(mean_s, sizeof mean_s, "%.4f", sum / (double)n_freq);
            snprintf(max_s, sizeof max_s, "%.4f", max);
        }
        printf("  %5" PRId64 " %8" PRId64 " %12" PRIu64 " %12" PRIu64 " %-10s %-10s %10s %10s\n", l, L->n_neurons,
               L->offset, L->bytes, n_freq == L->n_neurons ? "yes" : n_freq ? "partly" : "no",
               moved ? "reordered" : "by id", mean_s, max_s);
    }
}

/* The calib table: per-layer predictor rank, thresholds and the figures
 * measured at calibration (pred/true = recall / precision). */
static void print_calib(const store *s)
{
    const hp_config *hp = store_hparams(s);
    if (!store_calib_at(s, 0)) {
        printf("\ncalibration: none (see inflash-calibrate)\n");
        return;
    }
    const char *crit = store_meta(s, "calib_criterion"), *tokens = store_meta(s, "calib_text_tokens");
    printf("\ncalibration (criterion %s, %s tokens; figures on the held-back calibration text)\n",
           crit ? crit : "?", tokens ? tokens : "?");
    printf("  %5s %5s %12s %13s %9s %8s %9s %9s %9s\n", "layer", "rank", "threshold", "act_threshold", "sparsity",
           "recall", "precision", "predicted", "pred/true");
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const store_calib *c = store_calib_at(s, l);
        printf("  %5" PRId64 " %5" PRId64 " %12.5g %13.5g %9.4f %8.4f %9.4f %9.4f %9.2f\n", l, c->rank, c->threshold,
               c->act_threshold, c->sparsity, c->recall, c->precision, c->pred_fraction, c->recall / c->precision);
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1])) {
        fprintf(stderr, PROG ": expected one STORE_DIR (usage: " PROG " STORE_DIR; see --help)\n");
        return 2;
    }
    ierr err;
    store *s;
    if (store_open(argv[1], &s, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    print_hparams(s);
    print_tokenizer(s);
    print_tensors(s);
    print_ffn(s);
    print_calib(s);
    store_close(s);
    return 0;
}
