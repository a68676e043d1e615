/* pack.c: inflash-pack, which converts a Hugging Face checkpoint directory
 * (config.json, safetensors, tokenizer files) into an inflash store: dense
 * tensors to dense.bin, FFN neurons as row-column bundles to ffn.bin, the
 * tokenizer and hyperparameters to index.sqlite. Streams layer by layer:
 * at most one layer's FFN matrices are in memory at a time. */
#include "cli.h"
#include "checkpoint.h"
#include "format.h"
#include "hparams.h"
#include "io.h"
#include "safetensors.h"
#include "store.h"
#include "tok.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROG "inflash-pack"
#define MAX_JSON_FILE  (256u << 20)
#define BUNDLE_BLOCK   64              /* neurons converted together */

static volatile sig_atomic_t g_stop;   /* set by SIGINT/SIGTERM/SIGHUP */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " SRC_DIR OUT_DIR [--dtype f32|f16|q8_0|q4_0] [--force] [--follow-symlinks] [-q|-v]\n"
            "\n"
            "Convert a Hugging Face model directory into an inflash store.\n"
            "  SRC_DIR      config.json, model.safetensors (or model.safetensors.index.json\n"
            "               and its shards), and tokenizer.json or vocab.json + merges.txt\n"
            "               (read by the client's tokenizer: one it cannot use is refused);\n"
            "               families: opt (relu), llama / mistral (silu); dtypes F32, F16, BF16\n"
            "  OUT_DIR      the store directory to create (index.sqlite, dense.bin, ffn.bin);\n"
            "               written to OUT_DIR.tmp.<pid> and renamed into place when complete\n"
            "  --dtype T    store dtype, f32, f16, q8_0 or q4_0; default: the source dtype\n"
            "               when every tensor is F16 or every tensor is F32, else f32 (BF16\n"
            "               sources: f32). q8_0 (8.5 bits per weight) and q4_0 (4.5) are\n"
            "               ggml's blocks of 32 values with its reference rounding: every\n"
            "               matrix and each part of a bundle (up row, gate row, down column)\n"
            "               is quantized along its rows, norms and biases stay f32; the hidden\n"
            "               size must be a multiple of 32 (else refused)\n"
            "  --force      replace an existing store at OUT_DIR\n"
            "  --follow-symlinks\n"
            "               read files of SRC_DIR that are symlinks to places outside it\n"
            "               (refused by default; a Hugging Face cache snapshot needs this:\n"
            "               snapshots/<rev>/<file> links to ../../blobs/<hash>)\n"
            "  -q, --quiet  no progress line on stderr\n"
            "  -v, --verbose\n"
            "               also say on stderr what SRC_DIR holds: the model, the tensor count,\n"
            "               the tokenizer (scheme, tokens, merges, the files the store keeps)\n"
            "               and the store dtype chosen\n"
            "  -h, --help   this text\n"
            "\n"
            "OUT_DIR must not be inside SRC_DIR, nor SRC_DIR inside OUT_DIR (symlinks and\n"
            "'..' resolved). Two writers of one store are refused; what a killed pack\n"
            "leaves (OUT_DIR.tmp.<pid>) is removed by the next pack or calibrate of it.\n"
            "\n"
            "Exit status: 0 ok, 1 error, 2 usage error.\n");
}

/* ---- the tensor set a config needs --------------------------------------- */

/* A tensor of the table (layout/checkpoint.h) this config needs, and the
 * source tensor matched to it. */
typedef struct {
    ckpt_tensor      t;           /* canonical HF name (stored under it), shape, role, layer */
    const st_tensor *src;         /* matched source tensor, or NULL */
} want;

typedef struct {
    want  *w;                     /* owned, [n], in store order */
    size_t n;
} want_list;

/* Dense tensors first (in the order they land in dense.bin), then per
 * layer the FFN matrices. */
static int build_wants(const hp_config *hp, want_list *l)
{
    ckpt_tensor *t;
    size_t n;
    if (ckpt_list(hp, CKPT_STORE_ORDER, &t, &n) != 0)
        return -ENOMEM;
    l->w = calloc(n ? n : 1, sizeof *l->w);
    for (size_t i = 0; l->w && i < n; i++)
        l->w[i].t = t[i];
    free(t);
    if (!l->w)
        return -ENOMEM;
    l->n = n;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && at < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
}

/* Match every wanted tensor to the source (also under the name without the
 * "model." prefix, as facebook/opt-* ship them); name what is missing,
 * misshapen or left over. */
static int match_tensors(const st_set *set, want_list *l, const char *src, const char *family, ierr *err)
{
    size_t n = st_count(set), used_count = 0;
    char *used = calloc(n ? n : 1, 1);
    int rc = 0;
    if (!used)
        return ierr_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < l->n && !rc; i++) {
        want *w = &l->w[i];
        const st_tensor *t = st_find(set, w->t.name);
        if (!t && strncmp(w->t.name, "model.", 6) == 0)
            t = st_find(set, w->t.name + 6);
        if (!t) {
            if (!w->t.optional)
                rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" is missing (the config needs it)", src, w->t.name);
            continue;
        }
        char have[96], need[96];
        shape_str(have, sizeof have, t->ndim, t->shape);
        shape_str(need, sizeof need, w->t.ndim, w->t.shape);
        if (strcmp(have, need) != 0)
            rc = ierr_set(err, -EINVAL, "%s: tensor \"%s\" has shape %s, the config needs %s", src, t->name, have,
                          need);
        w->src = t;
        size_t k = (size_t)(t - st_at(set, 0));
        used_count += !used[k];
        used[k] = 1;
    }
    for (size_t k = 0; k < n && !rc && used_count < n; k++) {
        const st_tensor *t = st_at(set, k);
        if (!used[k] && !ends_with(t->name, "rotary_emb.inv_freq"))
            rc = ierr_set(err, -EINVAL, "%s: unexpected tensor \"%s\" (not part of this %s config)", src, t->name,
                          family);
    }
    free(used);
    return rc;
}

/* ---- row conversion -------------------------------------------------------- */

/* One row of n values from a source dtype (F32/F16/BF16: one value per
 * element) at src to the store dtype `to` at dst (fmt_bytes(to, n) bytes;
 * a quantized row is n/32 whole blocks). The row goes through f32 whole,
 * then is quantized (or rounded) as one row; the same dtype copies the
 * bytes (bit-exact). tmp holds n floats. */
static void conv_row(fmt_dtype from, const unsigned char *src, fmt_dtype to, unsigned char *dst, size_t n,
                     float *tmp)
{
    if (from == to) {
        memcpy(dst, src, n * (size_t)fmt_block_bytes(from));
        return;
    }
    fmt_to_f32(from, src, tmp, n);
    fmt_from_f32(to, tmp, dst, n);
}

/* ---- the source directory ------------------------------------------------ */

/* SRC_DIR and the rule for its symlinks: every file inflash-pack reads from
 * it passes src_check first (src_join, or the hook of st_open_dir_checked). */
typedef struct {
    const char *dir;              /* SRC_DIR as given */
    char        real[PATH_MAX];   /* its real path, symlinks resolved */
    int         follow;           /* --follow-symlinks: read links leading outside too */
} srcdir;

/* path is dir itself or lies under it (both real paths) */
static int path_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (strcmp(dir, "/") == 0)
        return 1;
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* A file of SRC_DIR may be read unless it is a symlink leading outside
 * SRC_DIR (without --follow-symlinks) or not a regular file (a FIFO would
 * block the open forever). A missing file or a dangling link passes:
 * reading it reports that. Matches st_path_check. */
static int src_check(const void *ctx, const char *path, ierr *err)
{
    const srcdir *sd = ctx;
    struct stat st;
    char real[PATH_MAX], link[PATH_MAX];
    if (lstat(path, &st) < 0)
        return 0;
    if (!sd->follow && S_ISLNK(st.st_mode) && realpath(path, real) &&
        !(path_within(real, sd->real) && strcmp(real, sd->real) != 0)) {
        ssize_t n = readlink(path, link, sizeof link - 1);
        link[n > 0 ? n : 0] = '\0';
        return ierr_set(err, -EPERM, "%s: a symlink to %s, outside SRC_DIR; pass --follow-symlinks to read it%s",
                        path, real, strncmp(link, "../../blobs/", 12) == 0
                                        ? " (a Hugging Face cache snapshot links every file into ../../blobs)" : "");
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return ierr_set(err, -EINVAL, "%s: not a regular file", path);
    return 0;
}

/* *path = SRC_DIR/name (malloc'd), checked by src_check. */
static int src_join(const srcdir *sd, const char *name, char **path, ierr *err)
{
    if (!(*path = io_join(sd->dir, name)))
        return ierr_set(err, -ENOMEM, "out of memory");
    return src_check(sd, *path, err);
}

/* ---- tokenizer ----------------------------------------------------------- */

/* The tokenizer is the client's (client/tok.h), built from the files of
 * SRC_DIR, so a tokenizer the client cannot use is refused here. Each file
 * is read once: what the tokenizer was built from is what the store keeps. */

/* every tokenizer file the store keeps, in the order it keeps them */
static const char *const tokfile_names[] = { "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                                             "special_tokens_map.json", "generation_config.json" };
#define N_TOKFILES (sizeof tokfile_names / sizeof tokfile_names[0])
#define TOKFILES_KEPT_ANYWAY 3   /* tokfile_names[3..]: kept if present even when the tokenizer does not read them */

typedef struct {
    const srcdir *sd;
    tok          *tk;                    /* owned; NULL until tokz_load succeeds */
    char         *data[N_TOKFILES];      /* owned, by tokfile_names index; NULL = absent or not read */
    size_t        len[N_TOKFILES];
    int           read_failed;           /* the last error is a file's, not the tokenizer's */
} tokz;

static void tokz_free(tokz *t)
{
    tok_free(t->tk);
    for (size_t k = 0; k < N_TOKFILES; k++)
        free(t->data[k]);
}

/* One file of SRC_DIR, read once (a tok_file_fn: *data is a malloc'd copy;
 * -ENOENT if SRC_DIR has no such file). */
static int tokz_file(void *ctx, const char *name, char **data, size_t *len, ierr *err)
{
    tokz *t = ctx;
    size_t k = 0;
    while (k < N_TOKFILES && strcmp(tokfile_names[k], name) != 0)
        k++;
    char *path = NULL;
    int rc = 0;
    t->read_failed = 1;
    if (k == N_TOKFILES)
        return ierr_set(err, -EINVAL, "%s: not a tokenizer file", name);
    if (!t->data[k] && !(rc = src_join(t->sd, name, &path, err))) {
        if (access(path, F_OK) != 0)
            rc = ierr_set(err, -ENOENT, "%s: no such file", path);
        else
            rc = io_read_file(path, MAX_JSON_FILE, &t->data[k], &t->len[k], err);
    }
    free(path);
    if (!rc && !(*data = malloc(t->len[k] ? t->len[k] : 1)))
        rc = ierr_set(err, -ENOMEM, "%s: out of memory", name);
    if (rc)
        return rc;
    memcpy(*data, t->data[k], t->len[k]);
    *len = t->len[k];
    t->read_failed = 0;
    return 0;
}

/* The tokenizer and the files the store keeps, read before anything is
 * written. A tokenizer's error is prefixed with SRC_DIR. */
static int tokz_load(tokz *t, const srcdir *sd, ierr *err)
{
    t->sd = sd;
    int rc = tok_new_files(tokz_file, t, &t->tk, err);
    if (rc && !t->read_failed)
        rc = ierr_wrap(err, rc, "%s", sd->dir);
    for (size_t k = TOKFILES_KEPT_ANYWAY; k < N_TOKFILES && !rc; k++) {
        char *data = NULL;
        size_t len;
        if ((rc = tokz_file(t, tokfile_names[k], &data, &len, err)) == -ENOENT)
            rc = 0;
        free(data);
    }
    return rc;
}

/* The tokens and merges tables (format.h section 4) from the tokenizer;
 * a token's score is -(rank of the first merge making it), else 0. */
static int tokz_write(const tokz *t, storew *w, ierr *err)
{
    int64_t n = tok_vocab_size(t->tk), nm = tok_merge_count(t->tk);
    int32_t l, r, m;
    const char *a, *b;
    size_t al, bl;
    double *score = calloc((size_t)n + 1, sizeof *score);
    int rc = score ? storew_set_meta(w, "tokenizer", tok_scheme_name(tok_scheme_of(t->tk)), err)
                   : ierr_set(err, -ENOMEM, "out of memory");
    for (int64_t k = nm - 1; k >= 0 && !rc; k--)       /* lowest rank wins: written last */
        if (tok_merge(t->tk, k, &l, &r, &m) == 0)
            score[m] = -(double)k;
    for (int32_t id = 0; id < n && !rc; id++)
        if (tok_piece(t->tk, id, &a, &al) == 0)
            rc = storew_add_token(w, id, a, al, score[id], tok_declared_special(t->tk, id), err);
    for (int64_t k = 0; k < nm && !rc; k++)
        if (tok_merge(t->tk, k, &l, &r, &m) == 0 && tok_piece(t->tk, l, &a, &al) == 0 &&
            tok_piece(t->tk, r, &b, &bl) == 0)
            rc = storew_add_merge(w, k, a, al, b, bl, err);
    for (size_t k = 0; k < N_TOKFILES && !rc; k++)
        if (t->data[k])
            rc = storew_add_tokfile(w, tokfile_names[k], t->data[k], t->len[k], err);
    free(score);
    return rc;
}

/* ---- packing ------------------------------------------------------------- */

typedef struct {
    srcdir      src;          /* SRC_DIR */
    const char *out;          /* OUT_DIR */
    st_set     *set;
    hp_config   hp;
    fmt_dtype   src_dtype;    /* the embedding's dtype in the source */
    fmt_dtype   dtype;        /* store */
    int         dtype_given;  /* --dtype, else the default from the source */
    storew     *w;
    want_list   wants;
    double      t0;
    int         progress;     /* a progress line is on stderr */
    int         tty;          /* stderr is a terminal */
    int         quiet;        /* -q: no progress line */
    int         verbose;      /* -v: what was read from SRC_DIR, on stderr */
    int         force;        /* --force: replace an existing store */
    uint64_t    params_dense, params_ffn;
} packer;


/* The progress line: rewritten in place on a terminal, else only the last. */
static void progress(packer *p, int64_t layer)
{
    if (p->quiet || (!p->tty && layer < p->hp.n_layers))
        return;
    double mb = (double)storew_bytes_written(p->w) / 1e6, dt = cli_now_s() - p->t0;
    fprintf(stderr, "%s" PROG ": layer %" PRId64 "/%" PRId64 ", %.1f MB written, %.1f MB/s ", p->tty ? "\r" : "",
            layer, p->hp.n_layers, mb, dt > 0 ? mb / dt : 0.0);
    p->progress = 1;
}

static int interrupted(ierr *err)
{
    return g_stop ? ierr_set(err, -EINTR, "interrupted") : 0;
}

/* read a whole source tensor (raw bytes) */
static int read_tensor(packer *p, const st_tensor *t, unsigned char **buf, ierr *err)
{
    if (!(*buf = malloc(t->bytes ? (size_t)t->bytes : 1)))
        return ierr_set(err, -ENOMEM, "tensor \"%s\": out of memory (%" PRIu64 " bytes)", t->name, t->bytes);
    return st_read_raw(p->set, t, 0, *buf, (size_t)t->bytes, err);
}

/* A dense tensor in its store dtype (fmt_tensor_dtype: matrices in the
 * store dtype, 1-D tensors f32 in a quantized store), converted row by row. */
static int pack_dense(packer *p, const want *w, ierr *err)
{
    const st_tensor *t = w->src;
    fmt_dtype dt = fmt_tensor_dtype(p->dtype, w->t.name, t->ndim);
    unsigned char *raw = NULL, *out = NULL;
    float *tmp = NULL;
    size_t n = (size_t)st_numel(t), cols = t->ndim >= 1 ? (size_t)t->shape[t->ndim - 1] : 1;
    size_t bytes = (size_t)fmt_bytes(dt, n), rb = (size_t)fmt_bytes(dt, cols);
    size_t sb = cols * (size_t)fmt_block_bytes(t->dtype);   /* a source row */
    int rc = read_tensor(p, t, &raw, err);
    if (!rc && t->dtype != dt) {
        out = malloc(bytes ? bytes : 1);
        tmp = malloc((cols ? cols : 1) * sizeof *tmp);
        if (!out || !tmp)
            rc = ierr_set(err, -ENOMEM, "tensor \"%s\": out of memory", t->name);
        for (size_t r = 0; !rc && cols && r < n / cols; r++)
            conv_row(t->dtype, raw + r * sb, dt, out + r * rb, cols, tmp);
    }
    if (!rc)
        rc = storew_add_tensor(p->w, w->t.name, dt, t->ndim, t->shape, out ? out : raw, bytes, err);
    p->params_dense += n;
    free(raw);
    free(out);
    free(tmp);
    return rc;
}

/* Bundles j0..j0+nb of a layer into bundles [nb][B]: up row j [, gate row
 * j] converted as rows; the down columns gathered first (row i of down
 * holds value i of every column: read along rows into col [nb][d] f32,
 * which `row` [nb] helps with), then each converted as one row of d. */
static void fill_bundles(const packer *p, const st_tensor *const src[3], unsigned char *const m[3], size_t parts,
                         int64_t j0, size_t nb, unsigned char *bundles, float *col, float *row)
{
    size_t d = (size_t)p->hp.d_model, f = (size_t)p->hp.d_ffn, B = (size_t)hp_bundle_bytes(&p->hp, p->dtype);
    size_t pb = (size_t)fmt_bytes(p->dtype, d);   /* bytes of one part */
    for (size_t k = 0; k + 1 < parts; k++) {
        size_t es = (size_t)fmt_block_bytes(src[k]->dtype);
        for (size_t jj = 0; jj < nb; jj++)
            conv_row(src[k]->dtype, m[k] + ((size_t)j0 + jj) * d * es, p->dtype, bundles + jj * B + k * pb, d, col);
    }
    const st_tensor *down = src[parts - 1];
    size_t es = (size_t)fmt_block_bytes(down->dtype);
    for (size_t i = 0; i < d; i++) {
        fmt_to_f32(down->dtype, m[parts - 1] + (i * f + (size_t)j0) * es, row, nb);
        for (size_t jj = 0; jj < nb; jj++)
            col[jj * d + i] = row[jj];
    }
    for (size_t jj = 0; jj < nb; jj++)
        fmt_from_f32(p->dtype, col + jj * d, bundles + jj * B + (parts - 1) * pb, d);
}

/* One layer: bundle j = up row j [, gate row j], down column j. */
static int pack_layer(packer *p, int64_t layer, const st_tensor *up, const st_tensor *gate, const st_tensor *down,
                      ierr *err)
{
    int64_t d = p->hp.d_model, f = p->hp.d_ffn, B = hp_bundle_bytes(&p->hp, p->dtype);
    size_t parts = gate ? 3 : 2;
    unsigned char *m[3] = { NULL, NULL, NULL }, *bundles = malloc((size_t)B * BUNDLE_BLOCK);
    float *col = malloc((size_t)d * BUNDLE_BLOCK * sizeof *col), *row = malloc(BUNDLE_BLOCK * sizeof *row);
    int rc = bundles && col && row ? 0 : ierr_set(err, -ENOMEM, "layer %" PRId64 ": out of memory", layer);
    const st_tensor *src[3] = { up, gate ? gate : down, down };
    for (size_t k = 0; k < parts && !rc; k++)
        rc = read_tensor(p, src[k], &m[k], err);
    if (!rc)
        rc = storew_begin_layer(p->w, layer, f, err);
    double last = cli_now_s();
    for (int64_t j0 = 0; j0 < f && !rc; j0 += BUNDLE_BLOCK) {
        size_t nb = (size_t)(f - j0 < BUNDLE_BLOCK ? f - j0 : BUNDLE_BLOCK);
        fill_bundles(p, src, m, parts, j0, nb, bundles, col, row);
        for (size_t jj = 0; jj < nb && !rc; jj++)
            rc = storew_add_bundle(p->w, bundles + jj * (size_t)B, err);
        if (!rc)
            rc = interrupted(err);
        if (cli_now_s() - last > 0.5) {
            progress(p, layer);
            last = cli_now_s();
        }
    }
    p->params_ffn += (uint64_t)(parts * (size_t)d * (size_t)f);
    for (size_t k = 0; k < 3; k++)
        free(m[k]);
    free(bundles);
    free(col);
    free(row);
    return rc;
}

/* Everything about the source, checked before anything is written:
 * config, tensor set, dtypes, tokenizer. */
static int read_source(packer *p, char **cfg, size_t *cfg_len, tokz *tz, ierr *err)
{
    char *cfg_path = NULL;
    int rc = src_join(&p->src, "config.json", &cfg_path, err);
    if (!rc)
        rc = io_read_file(cfg_path, 16u << 20, cfg, cfg_len, err);
    if (!rc)
        rc = hp_from_json(*cfg, *cfg_len, cfg_path, &p->hp, err);
    free(cfg_path);
    if (!rc)
        rc = st_open_dir_checked(p->src.dir, src_check, &p->src, &p->set, err);
    if (!rc && build_wants(&p->hp, &p->wants))
        rc = ierr_set(err, -ENOMEM, "out of memory");
    if (!rc)
        rc = match_tensors(p->set, &p->wants, p->src.dir, hp_family_name(p->hp.family), err);
    if (rc)
        return rc;
    /* source dtype: the embedding's; default store dtype f16 only for all-F16 sources */
    int all_f16 = 1;
    p->src_dtype = p->wants.w[0].src->dtype;
    for (size_t i = 0; i < p->wants.n; i++)
        if (p->wants.w[i].src)
            all_f16 &= p->wants.w[i].src->dtype == FMT_F16;
    if (!p->dtype_given)
        p->dtype = all_f16 ? FMT_F16 : FMT_F32;
    /* a quantized dtype needs rows of whole blocks: every matrix row and
     * bundle part runs along d_model (the attention width equals it) */
    rc = hp_check_dtype(&p->hp, p->dtype, p->src.dir, err);
    return rc ? rc : tokz_load(tz, &p->src, err);
}

static int write_store(packer *p, const char *cfg, size_t cfg_len, const tokz *tz, int force, ierr *err)
{
    static const char *const st_dtype_names[] = { "F32", "F16", "BF16" };   /* by fmt_dtype */
    char *cfg_text = strndup(cfg, cfg_len);
    int rc = cfg_text ? storew_new(p->out, force, &p->w, err) : ierr_set(err, -ENOMEM, "out of memory");
    if (!rc)
        rc = storew_set_hparams(p->w, &p->hp, p->dtype, err);
    if (!rc)
        rc = storew_set_meta(p->w, "hf_config", cfg_text, err);
    if (!rc)
        rc = storew_set_meta(p->w, "source_dtype", st_dtype_names[p->src_dtype], err);
    if (!rc)
        rc = tokz_write(tz, p->w, err);
    free(cfg_text);
    p->t0 = cli_now_s();
    for (size_t i = 0; i < p->wants.n && !rc; i++) {
        if (p->wants.w[i].t.role != CKPT_DENSE || !p->wants.w[i].src)
            continue;                             /* FFN matrix, or optional and absent */
        rc = pack_dense(p, &p->wants.w[i], err);
        if (!rc)
            rc = interrupted(err);
    }
    for (int64_t l = 0; l < p->hp.n_layers && !rc; l++) {
        const st_tensor *mat[4] = { 0 };          /* by role */
        for (size_t i = 0; i < p->wants.n; i++)
            if (p->wants.w[i].t.layer == l && p->wants.w[i].t.role != CKPT_DENSE)
                mat[p->wants.w[i].t.role] = p->wants.w[i].src;
        rc = pack_layer(p, l, mat[CKPT_UP], mat[CKPT_GATE], mat[CKPT_DOWN], err);
        if (!rc)
            progress(p, l + 1);
    }
    return rc ? rc : storew_commit(p->w, err);
}

/* -v: what the source holds, before anything is written */
static void describe_source(const packer *p, const tokz *tz)
{
    int64_t n = tok_vocab_size(tz->tk), special = 0;
    for (int32_t id = 0; id < n; id++)
        special += tok_declared_special(tz->tk, id);
    fprintf(stderr, PROG ": %s: %s, %" PRId64 " layers, d_model %" PRId64 ", d_ffn %" PRId64 ", vocab %" PRId64
            "; %zu tensors\n", p->src.dir, hp_family_name(p->hp.family), p->hp.n_layers, p->hp.d_model, p->hp.d_ffn,
            p->hp.vocab_size, st_count(p->set));
    fprintf(stderr, PROG ": tokenizer %s: %" PRId64 " tokens (%" PRId64 " special), %" PRId64 " merges; files kept:",
            tok_scheme_name(tok_scheme_of(tz->tk)), n, special, tok_merge_count(tz->tk));
    for (size_t k = 0; k < N_TOKFILES; k++)
        if (tz->data[k])
            fprintf(stderr, " %s", tokfile_names[k]);
    fprintf(stderr, "\n" PROG ": dtype %s (source %s%s)\n", fmt_dtype_name(p->dtype), fmt_dtype_name(p->src_dtype),
            p->dtype_given ? ", --dtype" : "");
}

static int pack(packer *p, ierr *err)
{
    char *cfg = NULL;
    size_t cfg_len = 0;
    tokz tz = { 0 };
    int rc = read_source(p, &cfg, &cfg_len, &tz, err);
    if (!rc && p->verbose)
        describe_source(p, &tz);
    if (!rc)
        rc = write_store(p, cfg, cfg_len, &tz, p->force, err);
    tokz_free(&tz);
    free(cfg);
    return rc;
}

/* Reopen the new store (a last check that it reads back) and say what it holds. */
static int summary(const packer *p, double secs, ierr *err)
{
    store *s;
    int rc = store_open(p->out, &s, err);
    if (rc)
        return rc;
    const hp_config *hp = store_hparams(s);
    printf("packed %s -> %s in %.2f s\n"
           "  model        %s, %" PRId64 " layers, d_model %" PRId64 ", d_ffn %" PRId64 ", vocab %" PRId64 "\n"
           "  parameters   %" PRIu64 " (dense %" PRIu64 ", FFN %" PRIu64 ")\n"
           "  dtype        %s, %.1f bits per weight%s (source %s)\n"
           "  dense bytes  %" PRIu64 " (%zu tensors)\n"
           "  FFN bytes    %" PRIu64 " (%" PRId64 " layers x %" PRId64 " bundles)\n"
           "  bundle bytes %" PRId64 " (%s, %" PRId64 " values each)\n",
           p->src.dir, p->out, secs, hp_family_name(hp->family), hp->n_layers, hp->d_model, hp->d_ffn,
           hp->vocab_size, p->params_dense + p->params_ffn, p->params_dense, p->params_ffn,
           fmt_dtype_name(store_dtype(s)), fmt_bits_per_value(store_dtype(s)),
           fmt_is_quant(store_dtype(s)) ? " in every matrix, norms and biases f32" : "",
           store_meta(s, "source_dtype"), store_dense_bytes(s),
           store_tensor_count(s), store_ffn_bytes(s), hp->n_layers, hp->d_ffn, store_bundle_bytes(s),
           hp->gated ? "up + gate + down" : "up + down", hp->d_model);
    store_close(s);
    return 0;
}

/* The real path of OUT_DIR: realpath(out), or for an OUT_DIR not made yet
 * (or a dangling link, which the writer refuses to replace) the real path
 * of its parent + its name. */
static int real_out(const char *out, char *real, size_t cap, ierr *err)
{
    char r[PATH_MAX];
    if (realpath(out, r)) {
        snprintf(real, cap, "%s", r);
        return 0;
    }
    if (errno != ENOENT)
        return ierr_set(err, -errno, "%s: %s", out, strerror(errno));
    char *a = strdup(out), *b = strdup(out);
    int rc = 0;
    if (!a || !b)
        rc = ierr_set(err, -ENOMEM, "out of memory");
    else if (!realpath(dirname(a), r))
        rc = ierr_set(err, -errno, "%s: %s", out, strerror(errno));
    else
        snprintf(real, cap, "%s/%s", strcmp(r, "/") ? r : "", basename(b));
    free(a);
    free(b);
    return rc;
}

/* Refuse OUT_DIR inside (or equal to) SRC_DIR, and SRC_DIR inside OUT_DIR
 * (replacing the store there would delete the source), symlinks and ".."
 * resolved. */
static int check_out_dir(const srcdir *src, const char *out, ierr *err)
{
    char rout[PATH_MAX + NAME_MAX + 2];
    int rc = real_out(out, rout, sizeof rout, err);
    if (rc)
        return rc;
    if (path_within(rout, src->real))
        return ierr_set(err, -EINVAL, "%s: OUT_DIR must not be inside SRC_DIR %s (it is %s)", out, src->dir, rout);
    if (path_within(src->real, rout))
        return ierr_set(err, -EINVAL, "%s: SRC_DIR %s is inside OUT_DIR: replacing OUT_DIR would delete it", out,
                        src->dir);
    return 0;
}

/* The command line into p: 0, 2 for a usage error (said on stderr), or -1
 * for --help (printed). */
static int parse_args(int argc, char **argv, packer *p)
{
    enum { O_DTYPE = 256, O_FORCE, O_FOLLOW };
    static const struct option opts[] = {
        { "dtype", required_argument, NULL, O_DTYPE },  { "force", no_argument, NULL, O_FORCE },
        { "follow-symlinks", no_argument, NULL, O_FOLLOW }, { "quiet", no_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },          { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":qvh", opts, NULL)) != -1) {
        switch (c) {
        case O_DTYPE:
            p->dtype_given = 1;
            if (fmt_dtype_parse(optarg, &p->dtype) || !fmt_is_store_dtype(p->dtype)) {
                fprintf(stderr, PROG ": --dtype needs f32, f16, q8_0 or q4_0\n");
                return 2;
            }
            break;
        case O_FORCE:
            p->force = 1;
            break;
        case O_FOLLOW:
            p->src.follow = 1;
            break;
        case 'q':
            p->quiet = 1;
            break;
        case 'v':
            p->verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            cli_bad_option(PROG, c, argv);
            return 2;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, PROG ": %s (usage: " PROG " SRC_DIR OUT_DIR [--dtype f32|f16|q8_0|q4_0] [--force] "
                "[--follow-symlinks] [-q|-v]; see --help)\n", argc - optind < 2 ? "expected SRC_DIR and OUT_DIR"
                : "too many arguments");
        return 2;
    }
    p->src.dir = argv[optind];
    p->out = argv[optind + 1];
    return 0;
}

int main(int argc, char **argv)
{
    packer p = { .dtype = FMT_F32 };
    int prc = parse_args(argc, argv, &p);
    if (prc)
        return prc < 0 ? 0 : prc;
    p.tty = isatty(STDERR_FILENO);

    cli_on_stop_signals(on_signal);

    ierr err = IERR_INIT;
    struct stat st;
    double t0 = cli_now_s();
    int rc;
    if (stat(p.src.dir, &st) < 0 || !realpath(p.src.dir, p.src.real))
        rc = ierr_set(&err, -errno, "%s: %s", p.src.dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = ierr_set(&err, -ENOTDIR, "%s: not a directory", p.src.dir);
    else if (!(rc = check_out_dir(&p.src, p.out, &err)))
        rc = pack(&p, &err);
    if (p.progress)
        fputc('\n', stderr);
    if (!rc)
        rc = summary(&p, cli_now_s() - t0, &err);
    if (rc)
        fprintf(stderr, PROG ": %s\n", err.msg);
    storew_free(p.w);
    st_close(p.set);
    free(p.wants.w);
    return rc ? 1 : 0;
}
