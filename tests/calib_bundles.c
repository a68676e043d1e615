/* calib_bundles.c: a checker for e2e_calibrate.sh: prints, for every layer
 * and neuron id of a store, the XXH64 of the bundle read through
 * store_read_bundle (so by id, whatever the slots), one "layer id hash"
 * line each. Two stores hold the same bundles under the same ids exactly
 * when the outputs are equal. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

#include "store.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: calib_bundles STORE_DIR\n");
        return 2;
    }
    ierr err = IERR_INIT;
    store *s;
    if (store_open(argv[1], &s, &err)) {
        fprintf(stderr, "calib_bundles: %s\n", err.msg);
        return 1;
    }
    int64_t B = store_bundle_bytes(s);
    unsigned char *buf = malloc((size_t)B);
    int rc = buf ? 0 : 1;
    for (int64_t l = 0; l < store_hparams(s)->n_layers && !rc; l++)
        for (int64_t j = 0; j < store_layer_at(s, l)->n_neurons && !rc; j++) {
            if (store_read_bundle(s, l, j, buf, &err)) {
                fprintf(stderr, "calib_bundles: %s\n", err.msg);
                rc = 1;
            } else {
                printf("%" PRId64 " %" PRId64 " %016llx\n", l, j, (unsigned long long)XXH64(buf, (size_t)B, 0));
            }
        }
    free(buf);
    store_close(s);
    return rc;
}
