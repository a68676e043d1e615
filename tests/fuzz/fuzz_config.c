/* fuzz_config.c: libFuzzer target for config.json parsing: hp_from_json
 * (a Hugging Face config, layout/hparams.h), store_parse_mount_config and
 * store_parse_mount_calib (the mount's config.json, layout/store.h). */
#include "fz_util.h"
#include "hparams.h"
#include "store.h"

#include <math.h>
#include <stdlib.h>

/* What every accepted configuration promises. */
static void check_hp(const hp_config *hp)
{
    ierr err = IERR_INIT;
    FZ_CHECK(hp_validate(hp, "accepted", &err) == 0, "an accepted config fails hp_validate: %s", err.msg);
    FZ_CHECK(hp_head_dim(hp) * hp->n_heads == hp->d_model, "head_dim %lld", (long long)hp_head_dim(hp));
    FZ_CHECK(hp_bundle_bytes(hp, FMT_F32) > 0, "bundle bytes %lld", (long long)hp_bundle_bytes(hp, FMT_F32));
}

static void check_calib(const char *text, size_t len, const hp_config *hp)
{
    store_calib *calib = calloc((size_t)hp->n_layers, sizeof *calib);
    int present = -1;
    ierr err = IERR_INIT;
    int64_t rmax = hp->d_model < hp->d_ffn ? hp->d_model : hp->d_ffn;
    if (!calib)
        abort();
    if (store_parse_mount_calib(text, len, "config.json", hp, calib, &present, &err) == 0 && present) {
        FZ_CHECK(present == 1, "present = %d", present);
        for (int64_t l = 0; l < hp->n_layers; l++)
            FZ_CHECK(calib[l].rank >= 1 && calib[l].rank <= rmax && isfinite(calib[l].threshold) &&
                     isfinite(calib[l].act_threshold), "layer %lld: rank %lld", (long long)l,
                     (long long)calib[l].rank);
    }
    free(calib);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    hp_config hp;
    fmt_dtype dtype;
    int64_t bundle;
    ierr err = IERR_INIT;

    if (hp_from_json(text, size, "config.json", &hp, &err) == 0)
        check_hp(&hp);
    if (store_parse_mount_config(text, size, "config.json", &hp, &dtype, &bundle, &err) == 0) {
        check_hp(&hp);
        FZ_CHECK(dtype == FMT_F32 || dtype == FMT_F16, "dtype %d", (int)dtype);
        FZ_CHECK(bundle == hp_bundle_bytes(&hp, dtype), "bundle bytes %lld", (long long)bundle);
        check_calib(text, size, &hp);
    }
    /* the calibration alone, for a fixed small model */
    hp_config small = {
        .family = HP_LLAMA, .d_model = 8, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .d_ffn = 16,
        .vocab_size = 10, .max_pos = 32, .norm_eps = 1e-5, .rope_theta = 10000, .act = ACT_FN_SILU, .gated = 1,
        .bos_id = 1, .eos_id = 2, .pad_id = -1,
    };
    check_calib(text, size, &small);
    return 0;
}
