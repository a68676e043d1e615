/* slot_map.h: offset translation for the neuron files of an inflashfs mount.
 * A neuron file shows a layer's bundles in neuron-id order (bytes
 * [j*B, (j+1)*B) = bundle of neuron j); in ffn.bin neuron j sits at physical
 * slot slot_of[j]. xlate turns a byte range of the neuron file into the list
 * of physical (offset, length) extents of ffn.bin that hold it, in file
 * order, merging neighbours whose slots are adjacent. With slot_of NULL the
 * file is the layer in physical order (ffn.slots: slot j at [j*B, (j+1)*B)).
 * Pure functions, no I/O. */
#ifndef INFLASH_FS_SLOT_MAP_H
#define INFLASH_FS_SLOT_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t       base;      /* ffn.bin offset of slot 0 of the layer */
    uint64_t       bundle;    /* bundle bytes B (> 0) */
    int64_t        n;         /* neurons in the layer */
    const int64_t *slot_of;   /* [n] neuron id -> physical slot (not owned); NULL: identity */
} xlate_layer;

typedef struct {
    uint64_t off;             /* in ffn.bin */
    uint64_t len;
} xlate_ext;

/* Size of the neuron file: n * B. */
static inline uint64_t xlate_file_bytes(const xlate_layer *l)
{
    return (uint64_t)l->n * l->bundle;
}

/* Upper bound on the extents a request of len bytes can produce. */
size_t xlate_max_extents(const xlate_layer *l, uint64_t len);

/* Translate [off, off + len) of the neuron file, clamped to its size, into
 * at most cap extents (cap >= xlate_max_extents(l, len)). *n_ext receives the
 * number of extents and *bytes the clamped length (0 at or past the end).
 * Returns 0, or -EINVAL if cap is too small or a slot is out of range. */
int xlate_range(const xlate_layer *l, uint64_t off, uint64_t len,
                xlate_ext *ext, size_t cap, size_t *n_ext, uint64_t *bytes);

#endif
