/* bpe.c: byte-pair encoding of one word (tok_impl.h): the word becomes
 * symbols (byte-level: one per byte; otherwise one per character, with
 * byte fallback <0xNN> or unk), and adjacent symbols merge by rank.
 *
 * BPE has two orders. GPT-2's bpe() merges every occurrence of the best pair
 * at once, left to right (batch_merges); HF tokenizers merges one pair at a
 * time, by rank and then position. They agree whenever each merge's parts
 * come from earlier merges (true of trained merge lists), and differ on
 * lists ordered otherwise, such as merges derived from SentencePiece scores. */
#include "tok_impl.h"
#include "utf8.h"

#include <errno.h>
#include <stdlib.h>

struct bpe_sym {
    int32_t id;
    int64_t prev, next;     /* neighbours in the word, -1 = none */
    size_t  len;            /* bytes covered; 0 = merged away */
};

struct bpe_ent {
    int32_t rank, id;       /* the merge and its result */
    int64_t pos;            /* left symbol */
};

typedef struct bpe_sym sym;
typedef struct bpe_ent hent;

static bool hent_less(hent a, hent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(bpe_scratch *e, hent x)
{
    size_t i = e->nheap++;
    while (i > 0 && hent_less(x, e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = x;
}

static hent heap_pop(bpe_scratch *e)
{
    hent top = e->heap[0], x = e->heap[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hent_less(e->heap[c + 1], e->heap[c]))
            c++;
        if (!hent_less(e->heap[c], x))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = x;
    return top;
}

static void push_pair(bpe_scratch *e, int64_t pos)
{
    sym *s = e->sym;
    int32_t rank, id;
    if (pos >= 0 && s[pos].next >= 0 && vocab_pair(e->t, s[pos].id, s[s[pos].next].id, &rank, &id))
        heap_push(e, (hent){ rank, id, pos });
}

/* Apply a queued merge unless it went stale (its left symbol was merged
 * away or its pair changed), as HF's Word::merge_all does. */
static void merge_at(bpe_scratch *e, hent m)
{
    sym *s = e->sym;
    int32_t rank, id;
    int64_t p = m.pos, q = s[p].next;
    if (s[p].len == 0 || q < 0 || !vocab_pair(e->t, s[p].id, s[q].id, &rank, &id) || id != m.id)
        return;
    s[p].id = id;
    s[p].len += s[q].len;
    s[q].len = 0;
    s[p].next = s[q].next;
    if (s[p].next >= 0)
        s[s[p].next].prev = p;
    push_pair(e, s[p].prev);
    push_pair(e, p);
}

/* BPE over the symbols sym[0..m). */
static void merge_all(bpe_scratch *e, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        e->sym[i].prev = (int64_t)i - 1;
        e->sym[i].next = i + 1 < m ? (int64_t)i + 1 : -1;
    }
    e->nheap = 0;
    for (size_t i = 0; i + 1 < m; i++)
        push_pair(e, (int64_t)i);
    while (e->nheap > 0) {
        hent top = heap_pop(e);
        if (!e->t->batch_merges) {
            merge_at(e, top);
            continue;
        }
        size_t nb = 0;   /* every queued pair of this rank, left to right */
        e->batch[nb++] = top;
        while (e->nheap > 0 && e->heap[0].rank == top.rank)
            e->batch[nb++] = heap_pop(e);
        for (size_t k = 0; k < nb; k++)
            merge_at(e, e->batch[k]);
    }
}

/* Grow the scratch arrays to fit a word of len bytes. */
static int reserve(bpe_scratch *e, size_t len, ierr *err)
{
    void *p;
    if (len <= e->cap)
        return 0;
    if (len > SIZE_MAX / (4 * sizeof(hent)) - 1)
        return ierr_set(err, -ENOMEM, "text: too long");
    if (!(p = realloc(e->sym, len * sizeof *e->sym)))
        goto nomem;
    e->sym = p;
    if (!(p = realloc(e->heap, (3 * len + 1) * sizeof *e->heap)))
        goto nomem;
    e->heap = p;
    if (e->t->batch_merges) {
        if (!(p = realloc(e->batch, (3 * len + 1) * sizeof *e->batch)))
            goto nomem;
        e->batch = p;
    }
    if (e->t->ignore_merges) {
        if (!(p = realloc(e->mapped, 2 * len + 1)))
            goto nomem;
        e->mapped = p;
    }
    e->cap = len;
    return 0;
nomem:
    return ierr_set(err, -ENOMEM, "text: out of memory");
}

int bpe_word(bpe_scratch *e, const unsigned char *w, size_t len, int32_t *ids, size_t *nids, ierr *err)
{
    const tok *t = e->t;
    size_t m = 0, adv;
    bool unk_open = false;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = reserve(e, len, err)) < 0)
        return rc;
    sym *s = e->sym;
    if (t->ignore_merges) {   /* a word in the vocabulary is taken whole */
        const unsigned char *key = w;
        size_t klen = len;
        if (t->bytelevel) {
            klen = 0;
            for (size_t i = 0; i < len; i++)
                klen += utf8_put(utf8_gpt2_char(w[i]), e->mapped + klen);
            key = e->mapped;
        }
        int32_t id = vocab_find(t, key, klen);
        if (id >= 0) {
            ids[(*nids)++] = id;
            return 0;
        }
    }
    for (size_t i = 0; i < len; i += adv) {
        int32_t id;
        bool fb = false;
        if (t->bytelevel) {
            adv = 1;
            id = t->byte_sym[w[i]];
        } else {
            if (utf8_scan(w + i, len - i, &adv) != U8_OK)   /* checked already */
                adv = 1;
            id = vocab_find(t, w + i, adv);
            if (id < 0 && t->byte_fallback) {
                fb = true;
                for (size_t k = 0; k < adv; k++)
                    fb = fb && t->fallback[w[i + k]] >= 0;
            }
        }
        if (id >= 0) {
            s[m++] = (sym){ id, 0, 0, adv };
            unk_open = false;
        } else if (fb) {
            for (size_t k = 0; k < adv; k++)
                s[m++] = (sym){ t->fallback[w[i + k]], 0, 0, 1 };
            unk_open = false;
        } else if (t->unk >= 0) {
            if (unk_open && t->fuse_unk) {
                s[m - 1].len += adv;
            } else {
                s[m++] = (sym){ t->unk, 0, 0, adv };
                unk_open = true;
            }
        } else {
            return ierr_set(err, -EINVAL, "text: U+%04X has no token and there is no unk token",
                            (unsigned)(adv > 1 || w[i] < 0x80 ? utf8_cp(w + i, adv) : w[i]));
        }
    }
    merge_all(e, m);
    for (int64_t i = 0; i >= 0; i = s[i].next)
        ids[(*nids)++] = s[i].id;
    return 0;
}

void bpe_scratch_free(bpe_scratch *e)
{
    free(e->sym);
    free(e->heap);
    free(e->batch);
    free(e->mapped);
    *e = (bpe_scratch){ .t = e->t };
}
