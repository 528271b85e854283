/* plugin.cu — the one symbol libemoe-cuda.so exports for the loader
 * (engine/cuda_plugin.c): the backend and device discovery. */
#include "engine/cuda_plugin.h"
#include "engine/cuda/device.h"
#include "engine/engine_internal.h"

extern "C" {
extern __attribute__((visibility("default"))) const emoe_cuda_plugin emoe_cuda_plugin_v1;
const emoe_cuda_plugin emoe_cuda_plugin_v1 = {
    EMOE_CUDA_PLUGIN_ABI, sizeof(struct eng_engine), sizeof(struct eng_seq), &eng_cuda_backend,
    emoe_cuda_device_count, emoe_cuda_device_describe,
};
}
