# CUDA backend: the GPU test harness (tests/gpu/test_kernels.cu), built by
# `make test-gpu` through tests/gpu/run.sh, linked against the CUDA build of
# libemoe.a. Not part of `make test` (that one builds with CUDA=0 and ASan).
GPU_TEST_BIN := $(BUILD)/tests/gpu/test_kernels

ifeq ($(CUDA_ON),1)
$(GPU_TEST_BIN): tests/gpu/test_kernels.cu $(LIB) $(wildcard engine/cuda/*.cuh) $(wildcard engine/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O2 -lineinfo $(CUARCH) -I. -DEMOE_CUDA=1 -Xcompiler -Wall,-Wextra,-Werror,-Wno-format-truncation \
		$< $(LIB) -L$(CUDA_HOME)/lib64 -Xlinker -rpath -Xlinker $(CUDA_HOME)/lib64 \
		-lcublas -lcudart $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@
else
$(GPU_TEST_BIN):
	@echo "the GPU tests need a CUDA build (make CUDA=1)"; exit 1
endif

.PHONY: gpu-test-bin
gpu-test-bin: $(GPU_TEST_BIN)
