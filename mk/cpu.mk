# CPU kernels (issue 17): the SIMD variants of engine/matmul_*.c get their own
# instruction-set flags (only those files; matmul.c picks one at run time), and
# `make bench-cpu` measures the CPU engine against this machine's bandwidth.
ifeq ($(shell uname -m),x86_64)
$(BUILD)/engine/matmul_avx2.o: CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/engine/matmul_avx512.o: CFLAGS += -mavx512f -mavx2 -mfma -mf16c
endif
