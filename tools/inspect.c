/* inspect.c: inflash-inspect, which prints what a store holds, for people:
 * hyperparameters, tokenizer, the dense tensor table, a per-layer FFN
 * summary and the calibration (per-layer predictor rank, thresholds,
 * sparsity, recall, precision, predicted fraction); with --verify it checks
 * every dense tensor and every bundle against the index's xxh64 instead and
 * lists what is damaged; with --neuron it prints one neuron's bundle
 * dequantized to f32, from a store or from a mount's layers/NN/ffn file.
 * Reads only through layout/store.h (and the mount's files). */
#include "cli.h"
#include "store.h"

#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "inflash-inspect"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " STORE_DIR\n"
            "       " PROG " --verify [-q] STORE_DIR\n"
            "       " PROG " --neuron LAYER:ID STORE_DIR|MOUNT\n"
            "\n"
            "Print a store's hyperparameters, tokenizer, dense tensor table and per-layer\n"
            "FFN summary (with calibration data when present). The store is validated\n"
            "first; a damaged store gives an error naming the file.\n"
            "\n"
            "--verify: read every dense tensor (dense.bin) and every neuron bundle\n"
            "(ffn.bin) and compare it with the xxh64 the index recorded at packing.\n"
            "Prints one line per damaged tensor or neuron on stdout, e.g.\n"
            "  damaged: ffn.bin: layer 3 neuron 1234 (slot 17, offset 1052672): checksum mismatch\n"
            "  damaged: dense.bin: tensor lm_head.weight (offset 4096, 1048576 bytes): checksum mismatch\n"
            "then a summary line; progress goes to stderr every few seconds. The store's\n"
            "cached pages are dropped first (where the kernel allows) so that the bytes\n"
            "on the device are checked, not a cached copy. -q, --quiet: no progress lines.\n"
            "\n"
            "--neuron LAYER:ID: print neuron ID of layer LAYER (ids as in the checkpoint,\n"
            "whatever the slots) as f32 values: its up row, gate row (gated models) and\n"
            "down column, dequantized for q8_0/q4_0 stores. Works on a store directory\n"
            "and on an inflashfs mount (read from MOUNT/layers/NN/ffn). Output: a line\n"
            "\"# layer L neuron J: DTYPE, bundle B bytes\", then one line per value,\n"
            "\"PART<TAB>INDEX<TAB>VALUE\" (PART up, gate or down; VALUE as %%.9g).\n"
            "\n"
            "Exit status: 0 ok (--verify: nothing damaged), 1 error or damage found,\n"
            "2 usage error.\n");
}

/* meta keys shown in the hyperparameter block; the rest is listed after it */
static const char *const known_keys[] = {
    "family", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ffn", "vocab_size", "max_pos", "pos_offset",
    "norm_eps", "rope_theta", "sliding_window", "activation", "act_params", "gated", "tie_embeddings", "bos_id",
    "eos_id", "pad_id", "dtype", "source_dtype", "bundle_bytes", "dense_bytes", "ffn_bytes", "tokenizer", "magic",
    "format_version",
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
    printf("  dtype %s: %g bits (%g bytes) per weight\n", fmt_dtype_name(store_dtype(s)),
           fmt_bits_per_value(store_dtype(s)), fmt_bits_per_value(store_dtype(s)) / 8.0);
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

/* ---- --verify ------------------------------------------------------------ */

typedef struct {
    uint64_t total, done;         /* bytes to check, checked */
    double   t0, t_last;          /* seconds */
    int64_t  bad_neurons;
    int      quiet;               /* -q: no progress lines */
} verify_run;


static void progress(verify_run *v, uint64_t bytes, const char *where)
{
    v->done += bytes;
    double t = cli_now_s();
    if (v->quiet || t - v->t_last < 3.0)
        return;
    v->t_last = t;
    fprintf(stderr, PROG ": verify: %.1f of %.1f MB (%.0f%%), %s\n", (double)v->done / 1e6, (double)v->total / 1e6,
            100.0 * (double)v->done / (double)(v->total ? v->total : 1), where);
}

static void print_bad(void *ctx, const char *line)
{
    verify_run *v = ctx;
    v->bad_neurons++;
    printf("damaged: %s\n", line);
    fflush(stdout);
}

/* Drop the store file's clean cached pages, so reads come from the device. */
static void drop_cache(const store *s, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", store_dir(s), name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Check everything: 0 clean, 1 damaged, or -1 on an error that stopped it. */
static int verify_store(const store *s, int quiet)
{
    const hp_config *hp = store_hparams(s);
    const uint64_t B = (uint64_t)store_bundle_bytes(s);
    verify_run v = { .t0 = cli_now_s(), .quiet = quiet };
    uint64_t dense = 0, n_neurons = 0;
    for (size_t i = 0; i < store_tensor_count(s); i++)
        dense += store_tensor_at(s, i)->bytes;
    for (int64_t l = 0; l < hp->n_layers; l++)
        n_neurons += (uint64_t)store_layer_at(s, l)->n_neurons;
    v.total = dense + n_neurons * B;
    v.t_last = v.t0;
    printf("verifying %s: %zu tensors (%" PRIu64 " bytes of dense.bin), %" PRId64 " layers, %" PRIu64
           " neurons (%" PRIu64 " bytes of ffn.bin)\n", store_dir(s), store_tensor_count(s), dense, hp->n_layers,
           n_neurons, n_neurons * B);
    fflush(stdout);
    drop_cache(s, IFL_DENSE_NAME);
    drop_cache(s, IFL_FFN_NAME);
    int64_t bad_tensors = 0;
    ierr err = IERR_INIT;
    for (size_t i = 0; i < store_tensor_count(s); i++) {
        const store_tensor *t = store_tensor_at(s, i);
        int rc = store_verify_tensor(s, t, &err);
        if (rc == -ENOMEM) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            return -1;
        }
        if (rc < 0) {
            bad_tensors++;
            printf("damaged: %s\n", err.msg);
            fflush(stdout);
        }
        progress(&v, t->bytes, "dense.bin");
    }
    /* in steps of ~64 MiB for the progress lines */
    const int64_t step = B >= (64u << 20) ? 1 : (int64_t)((64u << 20) / B);
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const store_layer *L = store_layer_at(s, l);
        for (int64_t at = 0; at < L->n_neurons; at += step) {
            int64_t n = L->n_neurons - at < step ? L->n_neurons - at : step;
            if (store_verify_bundles(s, l, at, n, print_bad, &v, &err) < 0) {
                fprintf(stderr, PROG ": %s\n", err.msg);
                return -1;
            }
            char where[64];
            snprintf(where, sizeof where, "ffn.bin layer %" PRId64 " of %" PRId64, l + 1, hp->n_layers);
            progress(&v, (uint64_t)n * B, where);
        }
    }
    double dt = cli_now_s() - v.t0;
    if (bad_tensors || v.bad_neurons)
        printf("verify: DAMAGED: %" PRId64 " of %zu tensors and %" PRId64 " of %" PRIu64
               " neurons do not match the index (%.1f MB checked in %.1f s)\n", bad_tensors, store_tensor_count(s),
               v.bad_neurons, n_neurons, (double)v.total / 1e6, dt);
    else
        printf("verify: clean: all %zu tensors and %" PRIu64 " neurons match the index (%.1f MB checked in %.1f s)\n",
               store_tensor_count(s), n_neurons, (double)v.total / 1e6, dt);
    return bad_tensors || v.bad_neurons;
}

/* ---- --neuron -------------------------------------------------------------- */

/* "LAYER:ID" -> 0, or -1. */
static int parse_neuron(const char *arg, int64_t *layer, int64_t *id)
{
    char *end;
    errno = 0;
    long long l = strtoll(arg, &end, 10);
    if (errno || end == arg || *end != ':' || l < 0)
        return -1;
    const char *p = end + 1;
    long long j = strtoll(p, &end, 10);
    if (errno || end == p || *end || j < 0)
        return -1;
    *layer = l;
    *id = j;
    return 0;
}

/* Neuron `layer:id` exists in a model of shape hp: 0 or -ERANGE. */
static int neuron_check(const hp_config *hp, const char *what, int64_t layer, int64_t id, ierr *err)
{
    if (layer < hp->n_layers && id < hp->d_ffn)
        return 0;
    return ierr_set(err, -ERANGE, "%s: no neuron %" PRId64 ":%" PRId64 " (%" PRId64 " layers of %" PRId64 ")", what,
                    layer, id, hp->n_layers, hp->d_ffn);
}

/* Print a bundle of type t (parts of d values each) as f32 lines. */
static int print_bundle(const hp_config *hp, fmt_dtype t, const unsigned char *bundle, int64_t layer, int64_t id,
                        int64_t B)
{
    static const char *const parts_gated[] = {"up", "gate", "down"}, *const parts_plain[] = {"up", "down"};
    const char *const *parts = hp->gated ? parts_gated : parts_plain;
    int n_parts = hp->gated ? 3 : 2;
    size_t d = (size_t)hp->d_model, part_bytes = (size_t)fmt_bytes(t, d);
    float *x = malloc(d * sizeof *x);
    if (!x) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    printf("# layer %" PRId64 " neuron %" PRId64 ": %s, bundle %" PRId64 " bytes\n", layer, id, fmt_dtype_name(t), B);
    for (int p = 0; p < n_parts; p++) {
        fmt_to_f32(t, bundle + (size_t)p * part_bytes, x, d);
        for (size_t i = 0; i < d; i++)
            printf("%s\t%zu\t%.9g\n", parts[p], i, (double)x[i]);
    }
    free(x);
    return 0;
}

/* --neuron on a mount: config.json gives the shape and dtype, the bundle is
 * bytes [id*B, (id+1)*B) of layers/NN/ffn. */
static int neuron_mount(const char *dir, int64_t layer, int64_t id)
{
    ierr err = IERR_INIT;
    char *cfg_path = io_join(dir, "config.json"), *text = NULL, ffn_path[4096];
    unsigned char *bundle = NULL;
    size_t len;
    hp_config hp;
    fmt_dtype t;
    int64_t B;
    int rc = 1, fd = -1;
    if (!cfg_path || io_read_file(cfg_path, 64u << 20, &text, &len, &err) ||
        store_parse_mount_config(text, len, cfg_path, &hp, &t, &B, &err))
        goto fail;
    if (neuron_check(&hp, dir, layer, id, &err))
        goto fail;
    snprintf(ffn_path, sizeof ffn_path, "%s/layers/%02" PRId64 "/ffn", dir, layer);
    if ((fd = open(ffn_path, O_RDONLY | O_CLOEXEC)) < 0) {
        ierr_set(&err, -errno, "%s: %s", ffn_path, strerror(errno));
        goto fail;
    }
    if (!(bundle = malloc((size_t)B))) {
        ierr_set(&err, -ENOMEM, "%s: out of memory", ffn_path);
        goto fail;
    }
    if (io_pread_full(fd, bundle, (size_t)B, (uint64_t)id * (uint64_t)B, ffn_path, &err))
        goto fail;
    rc = print_bundle(&hp, t, bundle, layer, id, B);
    goto done;
fail:
    fprintf(stderr, PROG ": %s\n", cfg_path && err.msg[0] ? err.msg : "out of memory");
done:
    if (fd >= 0)
        close(fd);
    free(bundle);
    free(text);
    free(cfg_path);
    return rc;
}

/* --neuron on a store directory. */
static int neuron_store(const store *s, int64_t layer, int64_t id)
{
    const hp_config *hp = store_hparams(s);
    ierr err = IERR_INIT;
    if (neuron_check(hp, store_dir(s), layer, id, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    int64_t B = store_bundle_bytes(s);
    unsigned char *bundle = malloc((size_t)B);
    if (!bundle) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    int rc = 1;
    if (store_read_bundle(s, layer, id, bundle, &err))
        fprintf(stderr, PROG ": %s\n", err.msg);
    else
        rc = print_bundle(hp, store_dtype(s), bundle, layer, id, B);
    free(bundle);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "verify", no_argument, NULL, 'V' }, { "quiet", no_argument, NULL, 'q' },
        { "neuron", required_argument, NULL, 'N' }, { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int verify = 0, quiet = 0, neuron = 0, c;
    int64_t n_layer = 0, n_id = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qh", opts, NULL)) != -1) {
        switch (c) {
        case 'V':
            verify = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'N':
            if (parse_neuron(optarg, &n_layer, &n_id)) {
                fprintf(stderr, PROG ": --neuron %s: expected LAYER:ID (non-negative integers)\n", optarg);
                return 2;
            }
            neuron = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            cli_bad_option(PROG, c, argv);
            return 2;
        }
    }
    if (argc - optind != 1 || (verify && neuron)) {
        fprintf(stderr, PROG ": expected one STORE_DIR (usage: " PROG " [--verify | --neuron LAYER:ID] STORE_DIR; see "
                "--help)\n");
        return 2;
    }
    const char *dir = argv[optind];
    ierr err = IERR_INIT;
    store *s;
    if (neuron) {
        /* a mount has config.json and no index */
        char *idx = io_join(dir, IFL_INDEX_NAME), *cfg = io_join(dir, "config.json");
        int mount = idx && cfg && access(idx, F_OK) != 0 && access(cfg, F_OK) == 0;
        free(idx);
        free(cfg);
        if (mount)
            return neuron_mount(dir, n_layer, n_id);
    }
    if (store_open(dir, &s, &err)) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        return 1;
    }
    if (verify || neuron) {
        int rc = verify ? verify_store(s, quiet) : neuron_store(s, n_layer, n_id);
        store_close(s);
        return rc ? 1 : 0;
    }
    print_hparams(s);
    print_tokenizer(s);
    print_tensors(s);
    print_ffn(s);
    print_calib(s);
    store_close(s);
    return 0;
}
