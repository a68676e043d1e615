/* activity.c: the names and properties of the activation functions and of
 * the activity criteria (activity.h): one table each, read both ways. */
#include "activity.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;    /* stored in meta calib_criterion (format.h section 4) */
    const char *flag;    /* on command lines (--criterion) */
    int         gated;   /* needs a gate */
    int         thresholded;   /* a calibrated threshold of plain SwiGLU (--criterion) */
} act_table[ACT_COUNT] = {
    [ACT_RELU]    = { "relu:up>0",                            "relu",    0, 0 },
    [ACT_SILU]    = { "gated:silu(gate)>act_threshold",       "silu",    1, 1 },
    [ACT_GATE]    = { "gated:|silu(gate)|>act_threshold",     "gate",    1, 1 },
    [ACT_PRODUCT] = { "gated:|silu(gate)*up|>act_threshold",  "product", 1, 1 },
    [ACT_EXACT]   = { "exact:term!=0",                        "exact",   1, 0 },
};

static const struct {
    const char *name;    /* stored in meta activation (format.h section 4) */
    int         param;   /* takes a per-layer parameter (meta act_params) */
    int         exact;   /* has exact zeros: active iff term != 0 */
} fn_table[ACT_FN_COUNT] = {
    [ACT_FN_RELU]    = { "relu",    0, 1 },
    [ACT_FN_SILU]    = { "silu",    0, 0 },
    [ACT_FN_FATRELU] = { "fatrelu", 1, 1 },
    [ACT_FN_DRELU]   = { "drelu",   0, 1 },
    [ACT_FN_CATS]    = { "cats",    1, 1 },
};

static int fn_valid(act_fn f) { return (int)f >= 0 && f < ACT_FN_COUNT; }

const char *act_fn_name(act_fn f) { return fn_valid(f) ? fn_table[f].name : NULL; }
int act_fn_has_param(act_fn f) { return fn_valid(f) && fn_table[f].param; }
int act_fn_exact(act_fn f) { return fn_valid(f) && fn_table[f].exact; }

int act_fn_parse(const char *name, act_fn *out)
{
    for (int i = 0; name && i < ACT_FN_COUNT; i++)
        if (strcmp(name, fn_table[i].name) == 0) {
            *out = (act_fn)i;
            return 0;
        }
    return -1;
}

static int valid(act_crit r) { return (int)r >= 0 && r < ACT_COUNT; }

const char *act_name(act_crit r) { return valid(r) ? act_table[r].name : NULL; }
const char *act_flag(act_crit r) { return valid(r) ? act_table[r].flag : NULL; }
int act_gated(act_crit r) { return valid(r) && act_table[r].gated; }
int act_thresholded(act_crit r) { return valid(r) && act_table[r].thresholded; }

int act_exact_crit(act_spec s, act_crit *out)
{
    if (!act_fn_exact(s.fn))
        return -1;
    *out = s.gated ? ACT_EXACT : ACT_RELU;
    return 0;
}

int act_parse(const char *name, act_crit *out)
{
    for (int i = 0; name && i < ACT_COUNT; i++)
        if (strcmp(name, act_table[i].name) == 0) {
            *out = (act_crit)i;
            return 0;
        }
    return -1;
}

int act_parse_flag(const char *flag, act_crit *out)
{
    for (int i = 0; flag && i < ACT_COUNT; i++)
        if (strcmp(flag, act_table[i].flag) == 0) {
            *out = (act_crit)i;
            return 0;
        }
    return -1;
}

void act_thresholded_flags(char *buf, size_t size)
{
    int n = 0, k = 0, len = 0;
    for (int i = 0; i < ACT_COUNT; i++)
        n += act_table[i].thresholded;
    if (size)
        buf[0] = '\0';
    for (int i = 0; i < ACT_COUNT && size; i++) {
        if (!act_table[i].thresholded)
            continue;
        const char *sep = k == 0 ? "" : k + 1 == n ? " or " : ", ";
        int w = snprintf(buf + len, size - (size_t)len, "%s%s", sep, act_table[i].flag);
        if (w < 0 || (size_t)(len + w) >= size) {
            buf[len] = '\0';   /* no half names */
            break;
        }
        len += w;
        k++;
    }
}
