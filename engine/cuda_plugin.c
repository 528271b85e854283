/* cuda_plugin.c — finding and loading the CUDA backend plugin; see cuda_plugin.h. */
#include "engine/cuda_plugin.h"
#include "engine/engine_internal.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Defined only where engine/cuda/plugin.cu is linked into the executable. */
extern const emoe_cuda_plugin emoe_cuda_plugin_v1 __attribute__((weak));

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const emoe_cuda_plugin *loaded;
static char load_why[1024];
static char load_where[PATH_MAX + 16];

static const emoe_cuda_plugin *check(const emoe_cuda_plugin *p, const char *where)
{
    if (p->abi != EMOE_CUDA_PLUGIN_ABI || p->engine_size != sizeof(struct eng_engine) ||
        p->seq_size != sizeof(struct eng_seq) || !p->backend || !p->device_count || !p->device_describe) {
        snprintf(load_why, sizeof load_why,
                 "%s was built for another emoe (plugin ABI %d, engine %zu bytes; this emoe: ABI %d, %zu bytes): rebuild both",
                 where, p->abi, p->engine_size, EMOE_CUDA_PLUGIN_ABI, sizeof(struct eng_engine));
        return NULL;
    }
    return p;
}

/* 1 loaded, 0 no such file (keep looking), -1 present but unusable (stop). */
static int try_open(const char *path, int must_exist)
{
    if (!must_exist && strchr(path, '/') && access(path, F_OK) != 0) return 0;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        if (!must_exist && !strchr(path, '/') && e && strstr(e, "cannot open shared object file: No such file")) return 0;
        snprintf(load_why, sizeof load_why, "cannot load %s: %s", path, e ? e : "unknown dlopen error");
        return -1;
    }
    const emoe_cuda_plugin *p = (const emoe_cuda_plugin *)dlsym(h, "emoe_cuda_plugin_v1");
    if (!p) {
        snprintf(load_why, sizeof load_why, "%s is not an emoe CUDA plugin (no emoe_cuda_plugin_v1)", path);
        dlclose(h);
        return -1;
    }
    if (!(loaded = check(p, path))) { dlclose(h); return -1; }
    snprintf(load_where, sizeof load_where, "%s", path);
    return 1; /* kept loaded for the life of the process */
}

static void load_once(void)
{
    if (&emoe_cuda_plugin_v1) {
        loaded = check(&emoe_cuda_plugin_v1, "the built-in CUDA backend");
        snprintf(load_where, sizeof load_where, "built in");
        return;
    }
    const char *env = getenv("EMOE_CUDA_PLUGIN");
    if (env && *env) { try_open(env, 1); return; }
    char exe[PATH_MAX], cand[2][PATH_MAX + 64];
    int nc = 0;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(cand[nc++], sizeof cand[0], "%s/%s", exe, EMOE_CUDA_PLUGIN_FILE);
            snprintf(cand[nc++], sizeof cand[0], "%s/../lib/%s", exe, EMOE_CUDA_PLUGIN_FILE);
        }
    }
    for (int i = 0; i < nc; i++) {
        int r = try_open(cand[i], 0);
        if (r) return;
    }
    if (try_open(EMOE_CUDA_PLUGIN_FILE, 0)) return;
    snprintf(load_why, sizeof load_why, "the CUDA plugin %s was not found (looked in %s, %s and the loader's path; "
             "build it with make CUDA=1, or set EMOE_CUDA_PLUGIN)", EMOE_CUDA_PLUGIN_FILE,
             nc > 0 ? cand[0] : "?", nc > 1 ? cand[1] : "?");
}

const emoe_cuda_plugin *eng_cuda_plugin(char *why, size_t why_len, const char **where)
{
    pthread_once(&once, load_once);
    if (!loaded && why) snprintf(why, why_len, "%s", load_why);
    if (where) *where = loaded ? load_where : NULL;
    return loaded;
}
