# Engine fuzzers (libFuzzer, clang). `make fuzz-safetensors [FUZZ_SECONDS=60]`
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE
ST_FUZZ_SRCS := tests/fuzz/fuzz_safetensors.c engine/safetensors.c engine/common.c engine/tensor.c engine/model.c

build-fuzz/fuzz_safetensors: $(ST_FUZZ_SRCS) $(wildcard engine/*.h)
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $(ST_FUZZ_SRCS) -ljansson -lm -lpthread -o $@

.PHONY: fuzz-safetensors
fuzz-safetensors: build-fuzz/fuzz_safetensors
	@mkdir -p build-fuzz/corpus-safetensors
	build-fuzz/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build-fuzz/corpus-safetensors tests/fuzz/corpus/safetensors
