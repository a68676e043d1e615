/* pack.c: inflash-pack, which converts a Hugging Face checkpoint directory
 * (config.json, safetensors, tokenizer files) into an inflash store: dense
 * tensors to dense.bin, FFN neurons as row-column bundles to ffn.bin, the
 * tokenizer and hyperparameters to index.sqlite. Streams layer by layer:
 * at most one layer's FFN matrices are in memory at a time. */
#include "checkpoint.h"
#include "format.h"
#include "hparams.h"
#include "io.h"
#include "safetensors.h"
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
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
            "usage: " PROG " SRC_DIR OUT_DIR [--dtype f32|f16] [--force] [--follow-symlinks]\n"
            "\n"
            "Convert a Hugging Face model directory into an inflash store.\n"
            "  SRC_DIR      config.json, model.safetensors (or model.safetensors.index.json\n"
            "               and its shards), and tokenizer.json or vocab.json + merges.txt;\n"
            "               families: opt (relu), llama / mistral (silu); dtypes F32, F16, BF16\n"
            "  OUT_DIR      the store directory to create (index.sqlite, dense.bin, ffn.bin);\n"
            "               written to OUT_DIR.tmp.<pid> and renamed into place when complete\n"
            "  --dtype T    store dtype, f32 or f16; default: the source dtype when every\n"
            "               tensor is F16 or every tensor is F32, else f32 (BF16 sources: f32)\n"
            "  --force      replace an existing store at OUT_DIR\n"
            "  --follow-symlinks\n"
            "               read files of SRC_DIR that are symlinks to places outside it\n"
            "               (refused by default; a Hugging Face cache snapshot needs this:\n"
            "               snapshots/<rev>/<file> links to ../../blobs/<hash>)\n"
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

/* ---- element conversion --------------------------------------------------- */

/* n elements from src (stride ss elements of type from) to dst (stride ds
 * elements of type to). Same dtype copies the bytes (bit-exact). */
static void conv(fmt_dtype from, const unsigned char *src, size_t ss, fmt_dtype to, unsigned char *dst, size_t ds,
                 size_t n)
{
    size_t fs = fmt_dtype_size(from), ts = fmt_dtype_size(to);
    if (from == to) {
        for (size_t i = 0; i < n; i++)
            memcpy(dst + i * ds * ts, src + i * ss * fs, fs);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v;
        fmt_to_f32(from, src + i * ss * fs, &v, 1);
        fmt_from_f32(to, &v, dst + i * ds * ts, 1);
    }
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

typedef struct {
    char  *piece;     /* owned, NUL-terminated; NULL = no token with this id */
    size_t len;
    double score;
    int    special;
} tk_tok;

typedef struct {
    const char *scheme;             /* "gpt2-bpe" | "sp-bpe" | "bytelevel-bpe" */
    tk_tok     *tok;                /* owned, [n_tok], indexed by id */
    int64_t     n_tok;
    char      **left, **right;      /* owned, [n_merge] */
    int64_t     n_merge, cap_merge;
    const char *files[6];           /* names of the files to keep verbatim */
    int         n_files;
} tokz;

static void tokz_free(tokz *t)
{
    for (int64_t i = 0; i < t->n_tok; i++)
        free(t->tok[i].piece);
    for (int64_t i = 0; i < t->n_merge; i++) {
        free(t->left[i]);
        free(t->right[i]);
    }
    free(t->tok);
    free(t->left);
    free(t->right);
}

static int tokz_merge(tokz *t, const char *l, size_t ll, const char *r, size_t rl)
{
    if (t->n_merge == t->cap_merge) {
        int64_t cap = t->cap_merge ? 2 * t->cap_merge : 1024;
        char **a = realloc(t->left, (size_t)cap * sizeof *a), **b = a ? realloc(t->right, (size_t)cap * sizeof *b) : NULL;
        if (a)
            t->left = a;
        if (!b)
            return -ENOMEM;
        t->right = b;
        t->cap_merge = cap;
    }
    char *x = strndup(l, ll), *y = strndup(r, rl);
    if (!x || !y) {
        free(x);
        free(y);
        return -ENOMEM;
    }
    t->left[t->n_merge] = x;
    t->right[t->n_merge] = y;
    t->n_merge++;
    return 0;
}

/* vocab object piece -> id into t->tok (ids below max(vocab_size, count)). */
static int tokz_vocab(tokz *t, json_t *vocab, int64_t vocab_size, const char *what, ierr *err)
{
    if (!json_is_object(vocab))
        return ierr_set(err, -EINVAL, "%s: vocabulary is not a JSON object", what);
    int64_t count = (int64_t)json_object_size(vocab) + 4096;   /* room for added tokens */
    int64_t bound = vocab_size > count ? vocab_size : count;
    if (!(t->tok = calloc((size_t)bound, sizeof *t->tok)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", what);
    t->n_tok = bound;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= bound)
            return ierr_set(err, -EINVAL, "%s: token \"%s\" has a bad id", what, key);
        if (t->tok[id].piece)
            return ierr_set(err, -EINVAL, "%s: tokens \"%s\" and \"%s\" share id %lld", what, t->tok[id].piece, key,
                            (long long)id);
        if (!(t->tok[id].piece = strdup(key)))
            return ierr_set(err, -ENOMEM, "%s: out of memory", what);
        t->tok[id].len = strlen(key);
    }
    return 0;
}

/* Mark a token special by id (adding its piece if the vocab lacks it). */
static int tokz_special(tokz *t, json_int_t id, const char *content, const char *what, ierr *err)
{
    if (id < 0 || id >= t->n_tok)
        return ierr_set(err, -EINVAL, "%s: added token \"%s\" has a bad id", what, content);
    tk_tok *k = &t->tok[id];
    if (k->piece && strcmp(k->piece, content) != 0)
        return ierr_set(err, -EINVAL, "%s: added token \"%s\" conflicts with \"%s\" at id %lld", what, content,
                        k->piece, (long long)id);
    if (!k->piece && !(k->piece = strdup(content)))
        return ierr_set(err, -ENOMEM, "%s: out of memory", what);
    k->len = strlen(k->piece);
    k->special = 1;
    return 0;
}

typedef struct { const char *p; size_t len; int64_t id; } piece_ix;

static int by_piece(const void *a, const void *b)
{
    const piece_ix *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* score = -rank of the first merge producing the piece, 0 for base pieces;
 * trims the id table to the highest id present, which must stay below
 * max(vocab_size, tokens present) as the store reader requires. */
static int tokz_finish(tokz *t, int64_t vocab_size, const char *what, ierr *err)
{
    int64_t n = 0, top = -1;
    piece_ix *ix = malloc((size_t)(t->n_tok ? t->n_tok : 1) * sizeof *ix);
    if (!ix)
        return ierr_set(err, -ENOMEM, "%s: out of memory", what);
    for (int64_t i = 0; i < t->n_tok; i++)
        if (t->tok[i].piece) {
            ix[n++] = (piece_ix){ t->tok[i].piece, t->tok[i].len, i };
            top = i;
        }
    qsort(ix, (size_t)n, sizeof *ix, by_piece);
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    for (int64_t r = t->n_merge - 1; r >= 0 && !rc; r--) {     /* lowest rank wins: written last */
        size_t ll = strlen(t->left[r]), rl = strlen(t->right[r]);
        if (ll + rl + 1 > cap) {
            char *b = realloc(buf, cap = 2 * (ll + rl + 1));
            if (!b) {
                rc = ierr_set(err, -ENOMEM, "%s: out of memory", what);
                break;
            }
            buf = b;
        }
        memcpy(buf, t->left[r], ll);
        memcpy(buf + ll, t->right[r], rl);
        piece_ix key = { buf, ll + rl, 0 };
        piece_ix *hit = n ? bsearch(&key, ix, (size_t)n, sizeof *ix, by_piece) : NULL;
        if (hit)
            t->tok[hit->id].score = -(double)r;
    }
    free(buf);
    free(ix);
    t->n_tok = top + 1;
    if (!rc && top >= (vocab_size > n ? vocab_size : n))
        rc = ierr_set(err, -EINVAL, "%s: token id %" PRId64 " is beyond the vocabulary (%" PRId64 " tokens, "
                      "vocab_size %" PRId64 ")", what, top, n, vocab_size);
    return rc;
}

static int tokz_from_tokenizer_json(tokz *t, const char *path, int64_t vocab_size, ierr *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root)
        return ierr_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    json_t *model = json_object_get(root, "model"), *merges = json_object_get(model, "merges");
    const char *type = json_string_value(json_object_get(model, "type"));
    int rc = 0;
    if (!json_is_object(model))
        rc = ierr_set(err, -EINVAL, "%s: no \"model\" object", path);
    else if (!type || strcmp(type, "BPE") != 0)
        rc = ierr_set(err, -ENOTSUP, "%s: unsupported tokenizer model type \"%s\" (inflash needs BPE)", path,
                      type ? type : "?");
    else if (!json_is_array(merges))
        rc = ierr_set(err, -EINVAL, "%s: model.merges is not an array", path);
    if (!rc)
        rc = tokz_vocab(t, json_object_get(model, "vocab"), vocab_size, path, err);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        if (rc)
            break;
        const char *s = json_string_value(m), *sp = s ? strchr(s, ' ') : NULL;
        if (s && sp && !strchr(sp + 1, ' '))
            rc = tokz_merge(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1));
        else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                 json_is_string(json_array_get(m, 1)))
            rc = tokz_merge(t, json_string_value(json_array_get(m, 0)), json_string_length(json_array_get(m, 0)),
                            json_string_value(json_array_get(m, 1)), json_string_length(json_array_get(m, 1)));
        else
            rc = ierr_set(err, -EINVAL, "%s: merge %zu is not \"a b\" or [a, b]", path, i);
        if (rc == -ENOMEM)
            rc = ierr_set(err, rc, "%s: out of memory", path);
    }
    json_t *added = json_object_get(root, "added_tokens"), *a;
    json_array_foreach(added, i, a) {
        if (rc)
            break;
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || !json_is_string(content))
            rc = ierr_set(err, -EINVAL, "%s: added token %zu lacks id or content", path, i);
        else
            rc = tokz_special(t, json_integer_value(id), json_string_value(content), path, err);
    }
    /* SentencePiece style: byte fallback, or "▁" put in by the normalizer or a Metaspace pre-tokenizer */
    int sp = json_is_true(json_object_get(model, "byte_fallback"));
    char *norm = json_dumps(json_object_get(root, "normalizer"), JSON_ENCODE_ANY);
    char *pre = json_dumps(json_object_get(root, "pre_tokenizer"), JSON_ENCODE_ANY);
    sp |= norm && strstr(norm, "\"Replace\"") && strstr(norm, "\\u2581");
    sp |= norm && strstr(norm, "\"Replace\"") && strstr(norm, "\xe2\x96\x81");
    sp |= pre && strstr(pre, "\"Metaspace\"");
    free(norm);
    free(pre);
    t->scheme = sp ? "sp-bpe" : "bytelevel-bpe";
    t->files[t->n_files++] = "tokenizer.json";
    json_decref(root);
    return rc;
}

/* Mark the special-token strings of a tokenizer_config.json or
 * special_tokens_map.json as special (an absent file marks nothing). */
static void mark_specials_in(tokz *t, const char *path)
{
    static const char *const keys[] = { "bos_token", "eos_token", "unk_token", "pad_token",
                                        "sep_token", "cls_token", "mask_token" };
    json_t *root = json_load_file(path, 0, NULL), *v, *list, *dec;
    if (!root)
        return;
    json_t *names = json_array();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        json_array_append(names, json_object_get(root, keys[i]));
    size_t i;
    json_array_foreach(json_object_get(root, "additional_special_tokens"), i, list)
        json_array_append(names, list);
    const char *key;
    json_object_foreach(json_object_get(root, "added_tokens_decoder"), key, dec)
        if (json_is_true(json_object_get(dec, "special")))
            json_array_append(names, json_object_get(dec, "content"));
    json_array_foreach(names, i, v) {
        const char *s = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
        for (int64_t id = 0; s && id < t->n_tok; id++)
            if (t->tok[id].piece && strcmp(t->tok[id].piece, s) == 0)
                t->tok[id].special = 1;
    }
    json_decref(names);
    json_decref(root);
}

static int tokz_from_gpt2(tokz *t, const srcdir *sd, const char *vocab_path, const char *merges_path,
                          int64_t vocab_size, ierr *err)
{
    json_error_t jerr;
    json_t *vocab = json_load_file(vocab_path, 0, &jerr);
    if (!vocab)
        return ierr_set(err, -EINVAL, "%s: invalid JSON at line %d: %s", vocab_path, jerr.line, jerr.text);
    int rc = tokz_vocab(t, vocab, vocab_size, vocab_path, err);
    json_decref(vocab);
    char *text = NULL;
    size_t len = 0;
    if (!rc)
        rc = io_read_file(merges_path, MAX_JSON_FILE, &text, &len, err);
    int64_t line_no = 0;
    for (char *line = text, *next; !rc && line && line < text + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        next = nl ? nl + 1 : text + len;
        size_t n = (size_t)((nl ? nl : text + len) - line);
        line_no++;
        if (n && line[n - 1] == '\r')
            n--;
        if (n == 0 || (line_no == 1 && strncmp(line, "#version", 8) == 0))
            continue;
        char *sp = memchr(line, ' ', n);
        if (!sp || sp == line || sp == line + n - 1 || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - line)))
            rc = ierr_set(err, -EINVAL, "%s: line %" PRId64 " is not \"a b\"", merges_path, line_no);
        else if (tokz_merge(t, line, (size_t)(sp - line), sp + 1, n - (size_t)(sp + 1 - line)))
            rc = ierr_set(err, -ENOMEM, "%s: out of memory", merges_path);
    }
    free(text);
    for (int k = 0; !rc && k < 2; k++) {
        char *p = NULL;
        if (!(rc = src_join(sd, k ? "special_tokens_map.json" : "tokenizer_config.json", &p, err)))
            mark_specials_in(t, p);
        free(p);
    }
    t->scheme = "gpt2-bpe";
    t->files[t->n_files++] = "vocab.json";
    t->files[t->n_files++] = "merges.txt";
    return rc;
}

static int tokz_load(tokz *t, const srcdir *sd, int64_t vocab_size, ierr *err)
{
    const char *src = sd->dir;
    char *tj = io_join(src, "tokenizer.json"), *vj = io_join(src, "vocab.json"), *mt = io_join(src, "merges.txt");
    int rc;
    if (!tj || !vj || !mt)
        rc = ierr_set(err, -ENOMEM, "out of memory");
    else if (access(tj, F_OK) == 0) {
        if (!(rc = src_check(sd, tj, err)))
            rc = tokz_from_tokenizer_json(t, tj, vocab_size, err);
    } else if (access(vj, F_OK) == 0 && access(mt, F_OK) == 0) {
        if (!(rc = src_check(sd, vj, err)) && !(rc = src_check(sd, mt, err)))
            rc = tokz_from_gpt2(t, sd, vj, mt, vocab_size, err);
    } else {
        rc = ierr_set(err, -ENOENT, "%s: no tokenizer: need tokenizer.json, or vocab.json and merges.txt%s", src,
                      access(vj, F_OK) == 0 ? " (merges.txt is missing)" : "");
    }
    if (!rc)
        rc = tokz_finish(t, vocab_size, src, err);
    /* kept verbatim when present (checked here, before anything is written) */
    static const char *const extra[] = { "tokenizer_config.json", "special_tokens_map.json",
                                         "generation_config.json" };
    for (int k = 0; !rc && k < 3; k++) {
        char *p = NULL;
        if (!(rc = src_join(sd, extra[k], &p, err)) && access(p, F_OK) == 0)
            t->files[t->n_files++] = extra[k];
        free(p);
    }
    free(tj);
    free(vj);
    free(mt);
    return rc;
}

static int tokz_write(const tokz *t, const srcdir *sd, storew *w, ierr *err)
{
    int rc = storew_set_meta(w, "tokenizer", t->scheme, err);
    for (int64_t i = 0; i < t->n_tok && !rc; i++)
        if (t->tok[i].piece)
            rc = storew_add_token(w, i, t->tok[i].piece, t->tok[i].len, t->tok[i].score, t->tok[i].special, err);
    for (int64_t r = 0; r < t->n_merge && !rc; r++)
        rc = storew_add_merge(w, r, t->left[r], strlen(t->left[r]), t->right[r], strlen(t->right[r]), err);
    for (int k = 0; k < t->n_files && !rc; k++) {
        char *p = NULL, *data = NULL;
        size_t len;
        if (!(rc = src_join(sd, t->files[k], &p, err)))
            rc = io_read_file(p, MAX_JSON_FILE, &data, &len, err);
        if (!rc)
            rc = storew_add_tokfile(w, t->files[k], data, len, err);
        free(data);
        free(p);
    }
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
    uint64_t    params_dense, params_ffn;
} packer;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The progress line: rewritten in place on a terminal, else only the last. */
static void progress(packer *p, int64_t layer)
{
    if (!p->tty && layer < p->hp.n_layers)
        return;
    double mb = (double)storew_bytes_written(p->w) / 1e6, dt = now() - p->t0;
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

static int pack_dense(packer *p, const want *w, ierr *err)
{
    const st_tensor *t = w->src;
    unsigned char *raw = NULL, *out = NULL;
    size_t n = (size_t)st_numel(t), bytes = n * fmt_dtype_size(p->dtype);
    int rc = read_tensor(p, t, &raw, err);
    if (!rc && t->dtype != p->dtype) {
        if (!(out = malloc(bytes ? bytes : 1)))
            rc = ierr_set(err, -ENOMEM, "tensor \"%s\": out of memory", t->name);
        else
            conv(t->dtype, raw, 1, p->dtype, out, 1, n);
    }
    if (!rc)
        rc = storew_add_tensor(p->w, w->t.name, p->dtype, t->ndim, t->shape, out ? out : raw, bytes, err);
    p->params_dense += n;
    free(raw);
    free(out);
    return rc;
}

/* One layer: bundle j = up row j [, gate row j], down column j. */
static int pack_layer(packer *p, int64_t layer, const st_tensor *up, const st_tensor *gate, const st_tensor *down,
                      ierr *err)
{
    int64_t d = p->hp.d_model, f = p->hp.d_ffn, B = hp_bundle_bytes(&p->hp, p->dtype);
    size_t ts = fmt_dtype_size(p->dtype), parts = gate ? 3 : 2, stride = (size_t)B / ts;
    unsigned char *m[3] = { NULL, NULL, NULL }, *bundles = malloc((size_t)B * BUNDLE_BLOCK);
    int rc = bundles ? 0 : ierr_set(err, -ENOMEM, "layer %" PRId64 ": out of memory", layer);
    const st_tensor *src[3] = { up, gate ? gate : down, down };
    for (size_t k = 0; k < parts && !rc; k++)
        rc = read_tensor(p, src[k], &m[k], err);
    if (!rc)
        rc = storew_begin_layer(p->w, layer, f, err);
    double last = now();
    for (int64_t j0 = 0; j0 < f && !rc; j0 += BUNDLE_BLOCK) {
        size_t nb = (size_t)(f - j0 < BUNDLE_BLOCK ? f - j0 : BUNDLE_BLOCK);
        /* rows: up [, gate] */
        for (size_t k = 0; k + 1 < parts; k++) {
            size_t es = fmt_dtype_size(src[k]->dtype);
            for (size_t jj = 0; jj < nb; jj++)
                conv(src[k]->dtype, m[k] + ((size_t)j0 + jj) * (size_t)d * es, 1, p->dtype,
                     bundles + jj * (size_t)B + k * (size_t)d * ts, 1, (size_t)d);
        }
        /* columns of down: row i of down holds element i of every bundle */
        size_t es = fmt_dtype_size(down->dtype);
        for (int64_t i = 0; i < d; i++)
            conv(down->dtype, m[parts - 1] + ((size_t)i * (size_t)f + (size_t)j0) * es, 1, p->dtype,
                 bundles + ((parts - 1) * (size_t)d + (size_t)i) * ts, stride, nb);
        for (size_t jj = 0; jj < nb && !rc; jj++)
            rc = storew_add_bundle(p->w, bundles + jj * (size_t)B, err);
        if (!rc)
            rc = interrupted(err);
        if (now() - last > 0.5) {
            progress(p, layer);
            last = now();
        }
    }
    p->params_ffn += (uint64_t)(parts * (size_t)d * (size_t)f);
    for (size_t k = 0; k < 3; k++)
        free(m[k]);
    free(bundles);
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
    return tokz_load(tz, &p->src, p->hp.vocab_size, err);
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
        rc = tokz_write(tz, &p->src, p->w, err);
    free(cfg_text);
    p->t0 = now();
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

static int pack(packer *p, int force, ierr *err)
{
    char *cfg = NULL;
    size_t cfg_len = 0;
    tokz tz = { 0 };
    int rc = read_source(p, &cfg, &cfg_len, &tz, err);
    if (!rc)
        rc = write_store(p, cfg, cfg_len, &tz, force, err);
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
           "  dtype        %s (source %s)\n"
           "  dense bytes  %" PRIu64 " (%zu tensors)\n"
           "  FFN bytes    %" PRIu64 " (%" PRId64 " layers x %" PRId64 " bundles)\n"
           "  bundle bytes %" PRId64 " (%s, %" PRId64 " values each)\n",
           p->src.dir, p->out, secs, hp_family_name(hp->family), hp->n_layers, hp->d_model, hp->d_ffn,
           hp->vocab_size, p->params_dense + p->params_ffn, p->params_dense, p->params_ffn,
           fmt_dtype_name(store_dtype(s)), store_meta(s, "source_dtype"), store_dense_bytes(s),
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

int main(int argc, char **argv)
{
    const char *pos[2] = { NULL, NULL };
    int npos = 0, force = 0;
    packer p = { .dtype = FMT_F32 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--force") == 0) {
            force = 1;
        } else if (strcmp(a, "--follow-symlinks") == 0) {
            p.src.follow = 1;
        } else if (strcmp(a, "--dtype") == 0 || strncmp(a, "--dtype=", 8) == 0) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            p.dtype_given = 1;
            if (!v || fmt_dtype_parse(v, &p.dtype) || p.dtype == FMT_BF16) {
                fprintf(stderr, PROG ": --dtype needs f32 or f16\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, PROG ": unknown option %s (see --help)\n", a);
            return 2;
        } else if (npos < 2) {
            pos[npos++] = a;
        } else {
            fprintf(stderr, PROG ": too many arguments (see --help)\n");
            return 2;
        }
    }
    if (npos != 2) {
        fprintf(stderr, PROG ": expected SRC_DIR and OUT_DIR (usage: " PROG
                " SRC_DIR OUT_DIR [--dtype f32|f16] [--force] [--follow-symlinks]; see --help)\n");
        return 2;
    }
    p.tty = isatty(STDERR_FILENO);
    p.src.dir = pos[0];
    p.out = pos[1];

    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    ierr err = IERR_INIT;
    struct stat st;
    double t0 = now();
    int rc;
    if (stat(p.src.dir, &st) < 0 || !realpath(p.src.dir, p.src.real))
        rc = ierr_set(&err, -errno, "%s: %s", p.src.dir, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = ierr_set(&err, -ENOTDIR, "%s: not a directory", p.src.dir);
    else if (!(rc = check_out_dir(&p.src, p.out, &err)))
        rc = pack(&p, force, &err);
    if (p.progress)
        fputc('\n', stderr);
    if (!rc)
        rc = summary(&p, now() - t0, &err);
    if (rc)
        fprintf(stderr, PROG ": %s\n", err.msg);
    storew_free(p.w);
    st_close(p.set);
    free(p.wants.w);
    return rc ? 1 : 0;
}
