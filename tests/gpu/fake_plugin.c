/* fake_plugin.c — stand-ins for libemoe-cuda.so, built by tests/e2e/cuda_plugin.sh
 * to test the loader (engine/cuda_plugin.c) on machines without CUDA:
 *   -DFAKE_NODEV     device_count() = 0 with a reason ("fake: no driver")
 *   -DFAKE_DEV       one device; the backend's init fails through emoe_errf,
 *                    a symbol resolved against the emoe executable (-rdynamic)
 *   -DFAKE_BADABI    another ABI number
 *   -DFAKE_UNDEF     references a symbol nobody defines (dlopen RTLD_NOW fails) */
#include "engine/cuda_plugin.h"
#include "engine/engine_internal.h"

#include <stdio.h>

#ifdef FAKE_UNDEF
extern int emoe_no_such_symbol(void);
#endif

static int fake_count(char *msg, size_t len)
{
#ifdef FAKE_UNDEF
    if (emoe_no_such_symbol()) return 0;
#endif
#ifdef FAKE_DEV
    (void)msg; (void)len;
    return 1;
#else
    snprintf(msg, len, "fake: no driver");
    return 0;
#endif
}

static int fake_describe(int i, char *out, size_t len)
{
    snprintf(out, len, "device %d: fake", i);
    return 0;
}

static emoe_status fake_init(eng_engine *e, const eng_open_opts *o, emoe_err *err)
{
    (void)e; (void)o;
    return emoe_errf(err, EMOE_EDEVICE, "fake init refused (now %s 0)", emoe_now() > 0 ? ">" : "<=");
}

static const eng_backend_ops fake_ops = {.name = "fake", .init = fake_init};

#ifdef FAKE_BADABI
#define ABI (EMOE_CUDA_PLUGIN_ABI + 100)
#else
#define ABI EMOE_CUDA_PLUGIN_ABI
#endif

extern const emoe_cuda_plugin emoe_cuda_plugin_v1;
const emoe_cuda_plugin emoe_cuda_plugin_v1 = {ABI, sizeof(struct eng_engine), sizeof(struct eng_seq), &fake_ops,
                                              fake_count, fake_describe};
