/* device.cu — see device.h. */
#include "engine/cuda/device.h"

#ifdef EMOE_CUDA_EMU
#include "tests/gpu/emu/cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <stdio.h>

extern "C" int emoe_cuda_device_count(char *msg, size_t msg_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (msg) snprintf(msg, msg_len, "%s", cudaGetErrorString(e));
        cudaGetLastError(); /* clear the sticky error */
        return 0;
    }
    if (n == 0 && msg) snprintf(msg, msg_len, "no CUDA device");
    return n;
}

extern "C" int emoe_cuda_device_describe(int i, char *out, size_t out_len)
{
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, i);
    if (e != cudaSuccess) {
        snprintf(out, out_len, "device %d: %s", i, cudaGetErrorString(e));
        return -1;
    }
    snprintf(out, out_len, "device %d: %s, compute capability %d.%d, %.1f GiB", i, p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}
