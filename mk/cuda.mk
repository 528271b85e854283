# CUDA backend: the GPU test harness (tests/gpu/test_kernels.cu), built by
# `make test-gpu` through tests/gpu/run.sh, linked against the CUDA build of
# libemoe.a. Not part of `make test` (that one builds with CUDA=0 and ASan).
GPU_TEST_BIN := $(BUILD)/tests/gpu/test_kernels

ifeq ($(CUDA_ON),1)
# The backend is linked in (not dlopened): engine/cuda_plugin.c finds it built in.
$(GPU_TEST_BIN): tests/gpu/test_kernels.cu $(wildcard tests/gpu/*.cuh) $(LIB) $(CU_OBJS) $(wildcard engine/cuda/*.cuh) $(wildcard engine/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O2 -lineinfo $(CUARCH) -I. $(NVCC_DEPS) -DEMOE_CUDA=1 -Xcompiler -Wall,-Wextra,-Werror,-Wno-format-truncation \
		$< $(CU_OBJS) $(LIB) $(NVCC_DEPS_LD) -L$(CUDA_HOME)/lib64 -Xlinker -rpath -Xlinker $(CUDA_HOME)/lib64 \
		-lcublas -lcudart $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@
else
$(GPU_TEST_BIN):
	@echo "the GPU tests need a CUDA build (make CUDA=1)"; exit 1
endif

.PHONY: gpu-test-bin
gpu-test-bin: $(GPU_TEST_BIN)

# ---- make test-gpu-emu: the CUDA backend executed on the CPU -------------------
# engine/cuda/*.cu and the GPU test harness compiled as C++ against
# tests/gpu/emu/cuda_emu.h (coroutine threads, real barriers and shuffles,
# synchronous streams, a plain GEMM for cuBLAS). Runs the kernels, the backend
# and the fixture models end to end on any x86-64 machine. Not a substitute for
# a GPU run (docs/cuda.md lists what it cannot show).
EMU := build-emu
EMU_CXX ?= g++
# Under ASan+UBSan: device buffers are host allocations there, so any kernel
# read or write outside its buffers is reported (guard bytes only see writes).
EMU_SAN ?= -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
EMU_CXXFLAGS := $(EMU_SAN) -std=c++17 -O2 -g -I. -D_GNU_SOURCE -DEMOE_CUDA=1 -DEMOE_CUDA_EMU=1 \
	-Wall -Wextra -Werror -Wno-format-truncation -Wno-unused-parameter -Wno-unknown-pragmas -MMD -MP
EMU_OBJS := $(LIB_SRCS:%.c=$(EMU)/%.o) $(CU_SRCS:%.cu=$(EMU)/%.cu.o) $(EMU)/tests/gpu/emu/cuda_emu.o
EMU_TOOL_OBJS := $(TOOL_SRCS:%.c=$(EMU)/%.o)

$(EMU)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -DEMOE_CUDA=1 $(CFLAGS) $(EMU_SAN) -c $< -o $@
$(EMU)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMU_CXXFLAGS) -x c++ -c $< -o $@
$(EMU)/tests/gpu/emu/cuda_emu.o: tests/gpu/emu/cuda_emu.cc tests/gpu/emu/cuda_emu.h
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMU_CXXFLAGS) -c $< -o $@
$(EMU)/libemoe-emu.a: $(EMU_OBJS)
	rm -f $@ && ar rcs $@ $^
# --undefined pulls the backend (engine/cuda/plugin.cu) out of the archive: the
# plugin loader (engine/cuda_plugin.c) then finds it built in.
EMU_PLUGIN_LD := -Wl,--undefined=emoe_cuda_plugin_v1
$(EMU)/emoe: $(EMU_TOOL_OBJS) $(EMU)/libemoe-emu.a
	$(EMU_CXX) $(EMU_SAN) $(LDFLAGS) $(EMU_PLUGIN_LD) $(EMU_TOOL_OBJS) $(EMU)/libemoe-emu.a $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@
$(EMU)/tests/gpu/test_kernels: tests/gpu/test_kernels.cu $(wildcard tests/gpu/*.cuh) $(EMU)/libemoe-emu.a
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMU_CXXFLAGS) $(EMU_PLUGIN_LD) -x c++ $< -x none $(EMU)/libemoe-emu.a $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@

.PHONY: test-gpu-emu
test-gpu-emu: $(EMU)/tests/gpu/test_kernels $(EMU)/emoe
	EMOE_SHARED=$${EMOE_SHARED:-$(CURDIR)/../shared} $(EMU)/tests/gpu/test_kernels
	EMOE_SHARED=$${EMOE_SHARED:-$(CURDIR)/../shared} EMOE_BIN=$(EMU)/emoe EMOE_BENCH_BACKEND=cuda EMOE_BENCH_MODELS="tiny-mixtral tiny-qwen2-moe tiny-olmoe" bash tests/e2e/bench.sh
	EMOE_SHARED=$${EMOE_SHARED:-$(CURDIR)/../shared} EMOE_BIN=$(EMU)/emoe bash tests/gpu/bench_budget.sh

-include $(EMU_OBJS:.o=.d) $(EMU_TOOL_OBJS:.o=.d)
