/* main.c: `inflash`, the inference client. Opens an inflashfs mount (or a
 * store directory with --store), loads the tokenizer and the resident
 * weights, then either generates text from a prompt (streamed to stdout as
 * it is produced) or measures perplexity over a text file. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"
#include "sample.h"
#include "source.h"
#include "tok.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

typedef enum { CLI_DENSE = 0, CLI_ORACLE = 1, CLI_PREDICT = 2 } cli_mode;

typedef struct {
    const char *mount;        /* positional MOUNTPOINT, or NULL */
    const char *store_dir;    /* --store */
    const char *prompt;       /* -p */
    const char *prompt_file;  /* -f */
    const char *ppl_file;     /* --perplexity */
    const char *stats_file;   /* --stats */
    const char *dump_logits;  /* --dump-logits (hidden, for tests) */
    const char *prompt_ids;   /* --prompt-ids (hidden: ids instead of text) */
    int64_t     n_gen;        /* -n */
    double      temperature;  /* -t */
    double      top_p;        /* --top-p */
    uint64_t    seed;         /* --seed */
    int         threads;      /* --threads, 0 = OpenBLAS default */
    int         print_ids;    /* --ids */
    int         dense_resident;
    int         ppl_per_line; /* --per-line */
    cli_mode    mode;
} cli_opts;

static void cli_usage(FILE *f)
{
    fprintf(f,
            "usage: inflash MOUNTPOINT [options]\n"
            "       inflash --store STORE_DIR [options]\n"
            "Runs a language model whose weights are served by an inflashfs mount\n"
            "(or read directly from an inflash store directory with --store).\n"
            "\n"
            "  -p TEXT            prompt (the model's BOS is prepended)\n"
            "  -f FILE            read the prompt from FILE\n"
            "  -n N               tokens to generate (default 128); stops early at EOS\n"
            "  -t T               temperature (default 1.0; 0 = greedy)\n"
            "      --top-p P      nucleus sampling threshold (default 0.9; 1 = off)\n"
            "      --seed S       random seed (default: from the clock)\n"
            "      --ids          after the text, print 'ids: ...' (prompt ids with BOS,\n"
            "                     then the generated ids)\n"
            "      --mode M       dense (default) | oracle | predict\n"
            "      --perplexity FILE  score FILE instead of generating; the last line is\n"
            "                     'perplexity: X (tokens: N)'. Windows of max_pos - 1\n"
            "                     tokens, each fed as BOS + window, every token scored once\n"
            "      --per-line     with --perplexity: each line is its own document\n"
            "      --stats FILE   write timing and I/O statistics as JSON\n"
            "      --threads N    OpenBLAS threads\n"
            "      --dense-resident  keep the whole FFN in memory (reference only)\n"
            "      --store DIR    read a store directory instead of a mount\n"
            "  -h, --help         this help\n"
            "\n"
            "Exit status: 0 ok, 1 runtime error, 2 usage error.\n");
}

/* ---- small helpers ---------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_f64(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int read_file(const char *path, char **data, size_t *len, ierr *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf)
        return ierr_set(err, -ENOMEM, "%s: out of memory", path);
    if (bad) {
        free(buf);
        return ierr_set(err, -EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* The model's tokenizer as the source serves it: tokenizer.json if there is
 * one, else GPT-2 vocab.json + merges.txt. */
static int load_tokenizer(source *src, tok **out, ierr *err)
{
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;
    int rc = source_tokfile(src, "tokenizer.json", &a, &al, err);
    if (rc == 0) {
        rc = tok_new_hf(a, al, out, err);
        free(a);
        return rc;
    }
    if (rc != -ENOENT)
        return rc;
    rc = source_tokfile(src, "vocab.json", &a, &al, err);
    if (rc == 0)
        rc = source_tokfile(src, "merges.txt", &b, &bl, err);
    if (rc == 0)
        rc = tok_new_gpt2(a, al, b, bl, out, err);
    else if (rc == -ENOENT)
        ierr_wrap(err, rc, "no tokenizer (tokenizer.json or vocab.json + merges.txt)");
    free(a);
    free(b);
    return rc;
}

/* Write decoded bytes to stdout at once (text is streamed). */
static void emit(const char *buf, size_t n)
{
    if (n) {
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
    }
}

static void stream_id(tok_stream *ts, int32_t id)
{
    char buf[4096];   /* longer than any token's bytes */
    emit(buf, tok_stream_put(ts, id, buf, sizeof buf));
}

static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;   /* Linux: kilobytes */
}

/* Forward ids[0..n) at positions pos.. in batches; the hidden states of the
 * last batch stay in the model (its last row is the last position). */
static int forward_all(model *m, const int32_t *ids, int64_t n, int64_t pos, ierr *err)
{
    for (int64_t i = 0; i < n; i += m->s.max_batch) {
        int64_t b = n - i < m->s.max_batch ? n - i : m->s.max_batch;
        int rc = model_forward(m, ids + i, b, pos + i, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int dump_logits(const char *path, const float *logits, int64_t n, ierr *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    size_t w = fwrite(logits, sizeof(float), (size_t)n, f);
    if (fclose(f) != 0 || w != (size_t)n)
        return ierr_set(err, -EIO, "%s: write error", path);
    return 0;
}

/* ---- statistics ------------------------------------------------------------ */

typedef struct {
    int64_t  prompt_tokens;
    int64_t  tokens;          /* generated */
    int64_t  decode_steps;    /* single-token forwards after the prompt */
    double   prefill_ms;
    double   decode_ms;       /* forward + logits + sampling of the decode steps */
    uint64_t decode_io_ns;
    uint64_t decode_bytes;
} cli_stats;

static int write_stats(const char *path, const cli_opts *o, const model *m, const cli_stats *st, ierr *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return ierr_set(err, -errno, "%s: %s", path, strerror(errno));
    double steps = st->decode_steps > 0 ? (double)st->decode_steps : 1.0;
    double ms = st->decode_steps > 0 ? st->decode_ms / steps : 0.0;
    double io = st->decode_steps > 0 ? (double)st->decode_io_ns / 1e6 / steps : 0.0;
    double bytes = st->decode_steps > 0 ? (double)st->decode_bytes / steps : 0.0;
    const hp_config *c = &m->cfg;
    uint64_t ffn_total = (uint64_t)c->n_layers * (uint64_t)c->d_ffn * (uint64_t)source_bundle_bytes(m->src);
    fprintf(f,
            "{\n"
            "  \"mode\": \"%s\",\n"
            "  \"source\": \"%s\",\n"
            "  \"dtype\": \"%s\",\n"
            "  \"dense_resident\": %s,\n"
            "  \"prompt_tokens\": %lld,\n"
            "  \"tokens\": %lld,\n"
            "  \"decode_steps\": %lld,\n"
            "  \"prefill_ms\": %.3f,\n"
            "  \"ms_per_token\": %.4f,\n"
            "  \"io_ms_per_token\": %.4f,\n"
            "  \"compute_ms_per_token\": %.4f,\n"
            "  \"ffn_bytes_total\": %llu,\n"
            "  \"ffn_bytes_read_per_token\": %.1f,\n"
            "  \"model_resident_bytes\": %llu,\n"
            "  \"resident_bytes_peak\": %llu\n"
            "}\n",
            o->mode == CLI_DENSE ? "dense" : o->mode == CLI_ORACLE ? "oracle" : "predict",
            o->store_dir ? "store" : "mount", fmt_dtype_name(source_dtype(m->src)),
            o->dense_resident ? "true" : "false", (long long)st->prompt_tokens, (long long)st->tokens,
            (long long)st->decode_steps, st->prefill_ms, ms, io, ms - io, (unsigned long long)ffn_total, bytes,
            (unsigned long long)m->resident_bytes, (unsigned long long)peak_rss_bytes());
    if (fclose(f) != 0)
        return ierr_set(err, -EIO, "%s: write error", path);
    return 0;
}

/* ---- generation ------------------------------------------------------------- */

/* Prompt ids, BOS first: from text through the tokenizer, or the hidden
 * --prompt-ids list (which is taken as is). *ids malloc'd. */
static int prompt_ids(const cli_opts *o, const tok *tk, const hp_config *c, int32_t **ids, int64_t *n, ierr *err)
{
    *ids = NULL;
    *n = 0;
    if (o->prompt_ids) {
        size_t cap = strlen(o->prompt_ids) / 2 + 2, k = 0;
        int32_t *v = malloc(cap * sizeof *v);
        if (!v)
            return ierr_set(err, -ENOMEM, "out of memory");
        const char *p = o->prompt_ids;
        while (*p) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p || x < 0 || x >= c->vocab_size || k == cap) {
                free(v);
                return ierr_set(err, -EINVAL, "--prompt-ids: bad id list");
            }
            v[k++] = (int32_t)x;
            p = end;
            while (*p == ' ' || *p == ',')
                p++;
        }
        *ids = v;
        *n = (int64_t)k;
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (o->prompt_file) {
        rc = read_file(o->prompt_file, &text, &len, err);
        if (rc)
            return rc;
    }
    const char *t = text ? text : o->prompt ? o->prompt : "";
    if (!text)
        len = strlen(t);
    int32_t *enc = NULL;
    size_t nenc = 0;
    rc = tok_encode(tk, t, len, &enc, &nenc, err);
    free(text);
    if (rc)
        return ierr_wrap(err, rc, "prompt");
    int32_t *v = malloc((nenc + 1) * sizeof *v);
    if (!v) {
        free(enc);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    size_t k = 0;
    if (c->bos_id >= 0)
        v[k++] = (int32_t)c->bos_id;
    for (size_t i = 0; i < nenc; i++)
        v[k++] = enc[i];
    free(enc);
    *ids = v;
    *n = (int64_t)k;
    return 0;
}

static int generate(const cli_opts *o, source *src, const tok *tk, ierr *err)
{
    const hp_config *c = source_hparams(src);
    int32_t *ids = NULL;
    int64_t np = 0;
    int rc = prompt_ids(o, tk, c, &ids, &np, err);
    if (rc)
        return rc;
    int64_t need = np + (o->n_gen > 0 ? 1 : 0);   /* the sequence must fit the context */
    if (np == 0 || need > c->max_pos) {
        free(ids);
        if (np == 0)
            return ierr_set(err, -EINVAL, "prompt: empty, and the model has no BOS token");
        return ierr_set(err, -E2BIG, "prompt: %lld tokens, longer than the context (%lld positions, minus 1 to generate)",
                        (long long)np, (long long)c->max_pos);
    }
    int64_t n_gen = o->n_gen;
    if (np + n_gen > c->max_pos)
        n_gen = c->max_pos - np;   /* stop when the context is full */
    int64_t seq_len = np + (n_gen > 0 ? n_gen - 1 : 0);
    int32_t *all = realloc(ids, (size_t)(np + n_gen) * sizeof *all);
    if (!all) {
        free(ids);
        return ierr_set(err, -ENOMEM, "out of memory");
    }
    ids = all;
    model *m = NULL;
    sampler *smp = NULL;
    float *logits = NULL;
    cli_stats st = {0};
    st.prompt_tokens = np;
    rc = model_new(src, seq_len, 0, &m, err);
    if (rc == 0 && o->dense_resident)
        rc = model_load_resident_ffn(m, err);
    if (rc == 0)
        rc = sample_new(&smp, c->vocab_size, (float)o->temperature, (float)o->top_p, o->seed, err);
    if (rc == 0 && !(logits = malloc((size_t)c->vocab_size * sizeof *logits)))
        rc = ierr_set(err, -ENOMEM, "out of memory");
    if (rc)
        goto out;

    tok_stream ts;
    if (tk) {
        tok_stream_init(&ts, tk);
        for (int64_t i = 0; i < np; i++)
            if (!(i == 0 && ids[0] == c->bos_id))
                stream_id(&ts, ids[i]);
    }
    double t0 = now_ms();
    rc = forward_all(m, ids, np, 0, err);
    if (rc)
        goto out;
    model_logits(m, (np - 1) % m->s.max_batch, 1, logits);
    st.prefill_ms = now_ms() - t0;
    if (o->dump_logits && (rc = dump_logits(o->dump_logits, logits, c->vocab_size, err)) != 0)
        goto out;
    int64_t pos = np;
    for (int64_t g = 0; g < n_gen; g++) {
        int32_t next = (int32_t)sample_next(smp, logits);
        ids[np + st.tokens++] = next;
        if (next == c->eos_id)
            break;
        if (tk)
            stream_id(&ts, next);
        if (g + 1 == n_gen)
            break;
        double ts0 = now_ms();
        uint64_t io0 = m->stats.io_ns, b0 = m->stats.ffn_bytes_read;
        rc = model_forward(m, &next, 1, pos++, err);
        if (rc)
            goto out;
        model_logits(m, 0, 1, logits);
        st.decode_ms += now_ms() - ts0;
        st.decode_io_ns += m->stats.io_ns - io0;
        st.decode_bytes += m->stats.ffn_bytes_read - b0;
        st.decode_steps++;
    }
    if (tk) {
        char buf[64];
        emit(buf, tok_stream_end(&ts, buf, sizeof buf));
    }
    emit("\n", 1);
    if (o->print_ids) {
        printf("ids:");
        for (int64_t i = 0; i < np + st.tokens; i++)
            printf(" %d", (int)ids[i]);
        printf("\n");
        fflush(stdout);
    }
    if (o->stats_file)
        rc = write_stats(o->stats_file, o, m, &st, err);
out:
    free(logits);
    sample_free(smp);
    model_free(m);
    free(ids);
    return rc;
}

/* ---- perplexity ------------------------------------------------------------- */

/* -log softmax(logits)[target], in double. */
static double nll_of(const float *logits, int64_t n, int32_t target)
{
    float mx = logits[0];
    for (int64_t i = 1; i < n; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)logits[i] - mx);
    return log(s) + mx - logits[target];
}

/* Score the token stream ids[0..n) in consecutive windows of (max_pos - 1)
 * tokens, each fed as BOS + window[:-1], every token scored once (the rule of
 * the opt-relu-shakespeare README). logits: [max_batch][vocab]; buf:
 * [max_pos]. Adds to *nll and *count. */
static int score_stream(model *m, const int32_t *ids, int64_t n, float *logits, int32_t *buf, double *nll,
                        int64_t *count, ierr *err)
{
    const hp_config *c = &m->cfg;
    int64_t win = m->s.seq_len - 1;
    for (int64_t w0 = 0; w0 < n; w0 += win) {
        int64_t wl = n - w0 < win ? n - w0 : win;
        buf[0] = (int32_t)c->bos_id;
        memcpy(buf + 1, ids + w0, (size_t)(wl - 1) * sizeof *buf);
        /* positions 0..wl-1 predict ids[w0 .. w0+wl) */
        for (int64_t i = 0; i < wl; i += m->s.max_batch) {
            int64_t b = wl - i < m->s.max_batch ? wl - i : m->s.max_batch;
            int rc = model_forward(m, buf + i, b, i, err);
            if (rc)
                return rc;
            model_logits(m, 0, b, logits);
            for (int64_t r = 0; r < b; r++)
                *nll += nll_of(logits + r * c->vocab_size, c->vocab_size, ids[w0 + i + r]);
        }
        *count += wl;
    }
    return 0;
}

/* Tokenize one document and score it (score_stream). */
static int score_text(model *m, const tok *tk, const char *text, size_t len, float *logits, int32_t *buf,
                      double *nll, int64_t *count, ierr *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tok_encode(tk, text, len, &ids, &n, err);
    if (rc == 0 && n > 0)
        rc = score_stream(m, ids, (int64_t)n, logits, buf, nll, count, err);
    free(ids);
    return rc;
}

/* Perplexity of a text file: the whole file as one token stream, or with
 * --per-line each line (without its LF / CRLF) as its own document, the
 * rule of the stories260K README. */
static int perplexity(const cli_opts *o, source *src, const tok *tk, ierr *err)
{
    const hp_config *c = source_hparams(src);
    if (c->bos_id < 0)
        return ierr_set(err, -EINVAL, "--perplexity: the model has no BOS token to start a window with");
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(o->ppl_file, &text, &len, err);
    if (rc)
        return rc;
    model *m = NULL;
    float *logits = NULL;
    int32_t *buf = NULL;
    rc = model_new(src, c->max_pos, c->max_pos, &m, err);   /* a window per forward */
    if (rc == 0 && o->dense_resident)
        rc = model_load_resident_ffn(m, err);
    if (rc == 0 && (!(logits = malloc((size_t)(m->s.max_batch * c->vocab_size) * sizeof *logits)) ||
                    !(buf = malloc((size_t)c->max_pos * sizeof *buf))))
        rc = ierr_set(err, -ENOMEM, "out of memory");
    double nll = 0.0;
    int64_t count = 0;
    if (rc == 0 && !o->ppl_per_line)
        rc = score_text(m, tk, text, len, logits, buf, &nll, &count, err);
    for (size_t a = 0; rc == 0 && o->ppl_per_line && a < len;) {
        const char *nl = memchr(text + a, '\n', len - a);
        size_t e = nl ? (size_t)(nl - text) : len, next = nl ? e + 1 : len;
        if (e > a && text[e - 1] == '\r')
            e--;
        rc = score_text(m, tk, text + a, e - a, logits, buf, &nll, &count, err);
        a = next;
    }
    if (rc) {
        ierr_wrap(err, rc, "%s", o->ppl_file);
    } else if (count == 0) {
        rc = ierr_set(err, -EINVAL, "%s: no tokens to score", o->ppl_file);
    } else {
        printf("cross-entropy: %.6f nats/token\n", nll / (double)count);
        printf("perplexity: %.4f (tokens: %lld)\n", exp(nll / (double)count), (long long)count);
        fflush(stdout);
    }
    free(buf);
    free(logits);
    model_free(m);
    free(text);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

static int parse_args(int argc, char **argv, cli_opts *o)
{
    enum { O_TOPP = 256, O_SEED, O_IDS, O_MODE, O_STATS, O_THREADS, O_PPL, O_RESIDENT, O_STORE, O_DUMP, O_PIDS, O_PERLINE };
    static const struct option longs[] = {
        {"prompt", required_argument, 0, 'p'},  {"file", required_argument, 0, 'f'},
        {"tokens", required_argument, 0, 'n'},  {"temperature", required_argument, 0, 't'},
        {"top-p", required_argument, 0, O_TOPP}, {"seed", required_argument, 0, O_SEED},
        {"ids", no_argument, 0, O_IDS},         {"mode", required_argument, 0, O_MODE},
        {"stats", required_argument, 0, O_STATS}, {"threads", required_argument, 0, O_THREADS},
        {"perplexity", required_argument, 0, O_PPL}, {"dense-resident", no_argument, 0, O_RESIDENT},
        {"store", required_argument, 0, O_STORE}, {"dump-logits", required_argument, 0, O_DUMP},
        {"prompt-ids", required_argument, 0, O_PIDS},
        {"per-line", no_argument, 0, O_PERLINE}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    o->n_gen = 128;
    o->temperature = 1.0;
    o->top_p = 0.9;
    o->seed = (uint64_t)time(NULL);
    opterr = 0;
    int ch;
    int64_t v;
    while ((ch = getopt_long(argc, argv, ":p:f:n:t:h", longs, NULL)) != -1) {
        switch (ch) {
        case 'p': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'n':
            if (parse_i64(optarg, 0, INT32_MAX, &o->n_gen)) {
                fprintf(stderr, "inflash: -n: expected a token count >= 0, got '%s'\n", optarg);
                return -1;
            }
            break;
        case 't':
            if (parse_f64(optarg, 0.0, 100.0, &o->temperature)) {
                fprintf(stderr, "inflash: -t: expected a temperature in [0, 100], got '%s'\n", optarg);
                return -1;
            }
            break;
        case O_TOPP:
            if (parse_f64(optarg, 0.0, 1.0, &o->top_p) || o->top_p <= 0.0) {
                fprintf(stderr, "inflash: --top-p: expected a value in (0, 1], got '%s'\n", optarg);
                return -1;
            }
            break;
        case O_SEED:
            if (parse_i64(optarg, 0, INT64_MAX, &v)) {
                fprintf(stderr, "inflash: --seed: expected a non-negative integer, got '%s'\n", optarg);
                return -1;
            }
            o->seed = (uint64_t)v;
            break;
        case O_IDS: o->print_ids = 1; break;
        case O_MODE:
            if (strcmp(optarg, "dense") == 0)
                o->mode = CLI_DENSE;
            else if (strcmp(optarg, "oracle") == 0)
                o->mode = CLI_ORACLE;
            else if (strcmp(optarg, "predict") == 0)
                o->mode = CLI_PREDICT;
            else {
                fprintf(stderr, "inflash: --mode: expected dense, oracle or predict, got '%s'\n", optarg);
                return -1;
            }
            break;
        case O_STATS: o->stats_file = optarg; break;
        case O_THREADS:
            if (parse_i64(optarg, 1, 1024, &v)) {
                fprintf(stderr, "inflash: --threads: expected 1..1024, got '%s'\n", optarg);
                return -1;
            }
            o->threads = (int)v;
            break;
        case O_PPL: o->ppl_file = optarg; break;
        case O_RESIDENT: o->dense_resident = 1; break;
        case O_STORE: o->store_dir = optarg; break;
        case O_DUMP: o->dump_logits = optarg; break;
        case O_PIDS: o->prompt_ids = optarg; break;
        case O_PERLINE: o->ppl_per_line = 1; break;
        case 'h': return 1;
        case ':':
            if (optopt > 0 && optopt < 256)
                fprintf(stderr, "inflash: option '-%c' needs a value (see --help)\n", optopt);
            else
                fprintf(stderr, "inflash: option '%s' needs a value (see --help)\n", argv[optind - 1]);
            return -1;
        default:
            if (optopt > 0 && optopt < 256)
                fprintf(stderr, "inflash: unknown option '-%c' (see --help)\n", optopt);
            else
                fprintf(stderr, "inflash: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    int npos = argc - optind;
    if (o->store_dir ? npos != 0 : npos != 1) {
        fprintf(stderr, o->store_dir ? "inflash: --store takes no MOUNTPOINT as well (see --help)\n"
                                     : "inflash: expected one MOUNTPOINT (see --help)\n");
        return -1;
    }
    if (!o->store_dir)
        o->mount = argv[optind];
    if (!!o->prompt + !!o->prompt_file + !!o->prompt_ids > 1) {
        fprintf(stderr, "inflash: give the prompt once (-p or -f)\n");
        return -1;
    }
    if (o->ppl_per_line && !o->ppl_file) {
        fprintf(stderr, "inflash: --per-line goes with --perplexity\n");
        return -1;
    }
    if (o->ppl_file && (o->prompt || o->prompt_file || o->prompt_ids)) {
        fprintf(stderr, "inflash: --perplexity takes no prompt\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    cli_opts o = {0};
    int pr = parse_args(argc, argv, &o);
    if (pr > 0) {
        cli_usage(stdout);
        return 0;
    }
    if (pr < 0)
        return EXIT_USAGE;
    if (o.mode != CLI_DENSE) {
        fprintf(stderr, "inflash: --mode %s needs a calibrated store (not available yet)\n",
                o.mode == CLI_ORACLE ? "oracle" : "predict");
        return EXIT_USAGE;
    }
    if (o.threads > 0)
        openblas_set_num_threads(o.threads);

    ierr err = {{0}};
    source *src = NULL;
    tok *tk = NULL;
    int rc = o.store_dir ? source_open_store(o.store_dir, &src, &err) : source_open_mount(o.mount, &src, &err);
    if (rc == 0 && !o.prompt_ids)
        rc = load_tokenizer(src, &tk, &err);
    if (rc == 0)
        rc = o.ppl_file ? perplexity(&o, src, tk, &err) : generate(&o, src, tk, &err);
    if (rc) {
        fflush(stdout);
        fprintf(stderr, "inflash: %s\n", err.msg);
    }
    tok_free(tk);
    source_close(src);
    return rc ? EXIT_RUNTIME : 0;
}
