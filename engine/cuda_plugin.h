/* cuda_plugin.h — the CUDA backend as a plugin (build/libemoe-cuda.so).
 *
 * build/emoe links no CUDA library. `make CUDA=1` (or `make` where a GPU is
 * present) also builds libemoe-cuda.so: engine/cuda/ (the .cu files) linked against cudart
 * and cuBLAS, exporting one symbol, emoe_cuda_plugin_v1. When the backend is
 * cuda or auto, eng_cuda_plugin() loads it with dlopen (as ggml loads its
 * backends); its undefined symbols (emoe_errf, eng_slot_table_*, ...) resolve
 * against the executable, which exports them (-rdynamic).
 *
 * Where it is looked for, first hit wins:
 *   1. linked into this executable (the GPU test harness, the emulator build);
 *   2. $EMOE_CUDA_PLUGIN (a path; nothing else is tried when it is set);
 *   3. libemoe-cuda.so beside the executable, then ../lib/ beside it;
 *   4. the dynamic loader's search path (dlopen("libemoe-cuda.so")).
 */
#ifndef EMOE_CUDA_PLUGIN_H
#define EMOE_CUDA_PLUGIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever this struct, eng_backend_ops or the engine's private
 * structs change in a way the plugin sees. */
#define EMOE_CUDA_PLUGIN_ABI 3 /* 2: eng_open_opts.cuda_no_graphs, eng_backend_stats device-routing/graph counters;
                                  3: eng_backend_ops.slot_mem takes the store's quant format, cache_slot_mem.persist hooks */
#define EMOE_CUDA_PLUGIN_FILE "libemoe-cuda.so"

struct eng_backend_ops;

typedef struct emoe_cuda_plugin {
    int abi;                       /* EMOE_CUDA_PLUGIN_ABI at the plugin's build */
    size_t engine_size;            /* sizeof(struct eng_engine) at the plugin's build */
    size_t seq_size;               /* sizeof(struct eng_seq) */
    const struct eng_backend_ops *backend;
    /* Number of usable devices; 0 with the reason in msg (no driver, no device). */
    int (*device_count)(char *msg, size_t msg_len);
    int (*device_describe)(int i, char *out, size_t out_len);
} emoe_cuda_plugin;

/* Loads the plugin once per process (thread-safe) and returns it, or NULL with
 * the reason in why ("not found (looked in ...)", dlerror's message, ABI
 * mismatch). where (may be NULL) receives the path it came from, or
 * "built in". */
const emoe_cuda_plugin *eng_cuda_plugin(char *why, size_t why_len, const char **where);

#ifdef __cplusplus
}
#endif

#endif
