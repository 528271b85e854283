# CPU kernels (issue 17): the SIMD variants of engine/matmul_*.c get their own
# instruction-set flags (only those files; matmul.c picks one at run time), and
# `make bench-cpu` measures the CPU engine against this machine's bandwidth.
ifeq ($(shell uname -m),x86_64)
$(BUILD)/engine/matmul_avx2.o: CFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/engine/matmul_avx512.o: CFLAGS += -mavx512f -mavx2 -mfma -mf16c
endif

.PHONY: bench-cpu
$(BUILD)/bench_membw: tests/bench/bench_membw.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread $(if $(filter x86_64,$(shell uname -m)),-mavx2) $< -o $@

# The decode kernel against a plain read of the same bytes (tools/bench-cpu.sh).
$(BUILD)/bench_gemv: tests/bench/bench_gemv.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# make bench-cpu [BENCH_CPU_DIR=/tmp/emoe-bench-cpu] [BENCH_CPU_THREADS=2]
bench-cpu: $(BUILD)/emoe $(BUILD)/bench_membw $(BUILD)/bench_gemv
	BUILD_DIR=$(BUILD) bash tools/bench-cpu.sh

# The CPU-emulated CUDA build (mk/cuda.mk, build-emu/) compiles the same files.
build-emu/engine/matmul_avx2.o: CFLAGS += $(if $(filter x86_64,$(shell uname -m)),-mavx2 -mfma -mf16c)
build-emu/engine/matmul_avx512.o: CFLAGS += $(if $(filter x86_64,$(shell uname -m)),-mavx512f -mavx2 -mfma -mf16c)
