/* slot_map.c: neuron-file byte ranges -> physical extents of ffn.bin (slot_map.h). */
#include "slot_map.h"

#include <errno.h>

size_t xlate_max_extents(const xlate_layer *l, uint64_t len)
{
    /* a range of len bytes touches at most len / B + 2 bundles */
    return (size_t)(len / l->bundle) + 2;
}

int xlate_range(const xlate_layer *l, uint64_t off, uint64_t len,
                xlate_ext *ext, size_t cap, size_t *n_ext, uint64_t *bytes)
{
    uint64_t size = xlate_file_bytes(l);
    size_t n = 0;
    *n_ext = 0;
    *bytes = 0;
    if (off >= size || len == 0)
        return 0;
    if (len > size - off)
        len = size - off;
    if (cap < xlate_max_extents(l, len))
        return -EINVAL;
    uint64_t pos = off, end = off + len;
    while (pos < end) {
        uint64_t j = pos / l->bundle;
        uint64_t in = pos - j * l->bundle;            /* offset inside the bundle */
        uint64_t take = l->bundle - in;
        if (take > end - pos)
            take = end - pos;
        int64_t slot = l->slot_of ? l->slot_of[j] : (int64_t)j;
        if (slot < 0 || slot >= l->n)
            return -EINVAL;
        uint64_t phys = l->base + (uint64_t)slot * l->bundle + in;
        if (n > 0 && ext[n - 1].off + ext[n - 1].len == phys)
            ext[n - 1].len += take;
        else
            ext[n++] = (xlate_ext){ .off = phys, .len = take };
        pos += take;
    }
    *n_ext = n;
    *bytes = len;
    return 0;
}
