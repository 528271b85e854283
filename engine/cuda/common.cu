/* common.cu — the error recorders behind CUDA_CHECK / CUBLAS_CHECK. */
#include "engine/cuda/common.cuh"

emoe_status cu_err_cuda(emoe_err *err, cudaError_t e, const char *expr, const char *func, const char *file, int line)
{
    emoe_status code = e == cudaErrorMemoryAllocation ? EMOE_ENOMEM : EMOE_EDEVICE;
    return emoe_errf(err, code, "CUDA error %s (%s) in %s at %s:%d (%s)", cudaGetErrorName(e), cudaGetErrorString(e),
                     expr, file, line, func);
}

emoe_status cu_err_cublas(emoe_err *err, cublasStatus_t s, const char *expr, const char *func, const char *file, int line)
{
    emoe_status code = s == CUBLAS_STATUS_ALLOC_FAILED ? EMOE_ENOMEM : EMOE_EDEVICE;
    return emoe_errf(err, code, "cuBLAS error %s (%s) in %s at %s:%d (%s)", cublasGetStatusName(s),
                     cublasGetStatusString(s), expr, file, line, func);
}
