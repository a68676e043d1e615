/* tests/testutil.c: helpers shared by the cmocka test programs (see testutil.h). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tu_rmtree(const char *dir)
{
    size_t n = strlen(dir) + sizeof "rm -rf ''";
    char *cmd = malloc(n);
    if (!cmd)
        return -1;
    snprintf(cmd, n, "rm -rf '%s'", dir);
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

/* the template of the group's directory, set by tu_dir_use (not owned) */
static char *tu_dir_tmpl;

void tu_dir_use(char *tmpl)
{
    tu_dir_tmpl = tmpl;
}

int tu_dir_setup(void **state)
{
    (void)state;
    return tu_dir_tmpl && mkdtemp(tu_dir_tmpl) ? 0 : -1;
}

int tu_dir_teardown(void **state)
{
    (void)state;
    return tu_dir_tmpl ? tu_rmtree(tu_dir_tmpl) : -1;
}

/* the generator's state; only tu_rng_seed and tu_rng touch it (tests are
 * single-threaded) */
static uint64_t tu_rng_state;

void tu_rng_seed(uint64_t seed)
{
    tu_rng_state = seed;
}

uint64_t tu_rng(void)   /* splitmix64 */
{
    uint64_t z = (tu_rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int64_t tu_rng_below(int64_t n)
{
    return (int64_t)(tu_rng() % (uint64_t)n);
}
