/* device.h — CUDA device discovery, callable from C. Compiled only when the
 * build has CUDA (EMOE_CUDA); without it there is no device by definition. */
#ifndef EMOE_CUDA_DEVICE_H
#define EMOE_CUDA_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 with a reason in msg when there are none
 * (no driver, no device, driver too old). Never aborts. */
int emoe_cuda_device_count(char *msg, size_t msg_len);
/* One line describing device i (name, compute capability, memory). */
int emoe_cuda_device_describe(int i, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif
