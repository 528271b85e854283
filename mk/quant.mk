# mk/quant.mk — extra targets of the quantized-experts module (engine/quant*.c).
#   make bench-quant   builds $(BUILD)/bench_quant (q8/q4 matmul kernel throughput; see docs/quant.md)
.PHONY: bench-quant
bench-quant: $(BUILD)/bench_quant

$(BUILD)/bench_quant: tests/bench/bench_quant.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# CUDA q8/q4 kernels (engine/cuda/quant_kernels.cu, compiled into the backend
# and the emulator library with the other engine/cuda/*.cu) against the CPU
# reference: tests/gpu/test_quant_kernels.cu. `make test-gpu-emu` runs it on
# the CPU emulator (build-emu/, mk/cuda.mk); `make test-gpu-quant` on a GPU.
QEMU_DIR := $(or $(EMU),build-emu)
$(QEMU_DIR)/tests/gpu/test_quant_kernels: tests/gpu/test_quant_kernels.cu tests/gpu/gbuf.cuh $(QEMU_DIR)/libemoe-emu.a
	@mkdir -p $(dir $@)
	$(EMU_CXX) $(EMU_CXXFLAGS) -x c++ $< -x none $(QEMU_DIR)/libemoe-emu.a $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@

.PHONY: test-gpu-emu-quant test-gpu-quant
test-gpu-emu-quant: $(QEMU_DIR)/tests/gpu/test_quant_kernels
	$(QEMU_DIR)/tests/gpu/test_quant_kernels
test-gpu-emu: test-gpu-emu-quant

ifeq ($(CUDA_ON),1)
$(BUILD)/tests/gpu/test_quant_kernels: tests/gpu/test_quant_kernels.cu tests/gpu/gbuf.cuh $(LIB) $(CU_OBJS) engine/cuda/quant_kernels.cuh engine/quant.h
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O2 -lineinfo $(CUARCH) -I. $(NVCC_DEPS) -DEMOE_CUDA=1 -Xcompiler -Wall,-Wextra,-Werror,-Wno-format-truncation \
		$< $(CU_OBJS) $(LIB) $(NVCC_DEPS_LD) -L$(CUDA_HOME)/lib64 -Xlinker -rpath -Xlinker $(CUDA_HOME)/lib64 \
		-lcublas -lcudart $(filter-out -lcublas -lcudart -lstdc++,$(LDLIBS)) -o $@
test-gpu-quant: $(BUILD)/tests/gpu/test_quant_kernels
	$(BUILD)/tests/gpu/test_quant_kernels
else
test-gpu-quant:
	@echo "the GPU quant tests need a CUDA build (make CUDA=1 test-gpu-quant)"; exit 1
endif
