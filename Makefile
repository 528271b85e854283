# emoe — plain Makefile. Objects go to $(BUILD)/ (build/ by default, build-<san>/
# for sanitized builds). Sources are picked up by folder, so adding a file needs no
# edit here. Knobs:
#   SANITIZE=address|undefined|thread|address,undefined   sanitized build in build-<name>/
#   CUDA=auto|0|1      1: also build the CUDA plugin $(BUILD)/libemoe-cuda.so;
#                      auto: on when nvcc is found AND a GPU is present
#   CUARCH="..."       nvcc -gencode list (default sm_80 + sm_90)
#   DEPS_PREFIX=DIR    dependency prefix (extracted .debs on a machine without a registry)
CC      ?= cc
NVCC    ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA    ?= auto
SANITIZE ?=
DEPS_PREFIX ?=
CUDA_HOME ?= /usr/local/cuda
CUARCH  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
OPT     ?= -O2

ifeq ($(SANITIZE),)
BUILD   ?= build
else
BUILD   ?= build-$(subst $(comma),-,$(SANITIZE))
endif
comma := ,

ifeq ($(CUDA),auto)
  # A GPU, not just a toolkit: nvcc alone (a CI or build box) gets the CPU build.
  HAVE_GPU := $(if $(wildcard /dev/nvidia0),1,$(shell nvidia-smi -L 2>/dev/null | grep -q GPU && echo 1))
  ifneq ($(NVCC),)
    CUDA_ON := $(if $(HAVE_GPU),1,0)
  else
    CUDA_ON := 0
  endif
else
  CUDA_ON := $(CUDA)
endif

WARN    := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow -Wno-unused-parameter -Wno-format-truncation -Werror
CPPFLAGS += -I. -D_GNU_SOURCE -MMD -MP
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 $(WARN) -pthread -fno-strict-aliasing
LDLIBS  := -lmicrohttpd -ljansson -luring -linih -lpcre2-8 -lutf8proc -lsystemd -lcurl -lm -lpthread
ifneq ($(DEPS_PREFIX),)
  CPPFLAGS += -I$(DEPS_PREFIX)/usr/include
  LDFLAGS  += -L$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu -Wl,-rpath,$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu
endif
ifneq ($(SANITIZE),)
  CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=$(SANITIZE)
endif
CHECK_LIBS := -lcheck_pic -lsubunit -lrt -lm

LIB_DIRS := engine config predictor scheduler server
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CU_SRCS  := $(wildcard engine/cuda/*.cu)
TOOL_SRCS := $(wildcard tools/*.c)
TEST_SRCS := $(wildcard tests/unit/test_*.c)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)

LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(BUILD)/%.o)
# The CUDA backend is a plugin (engine/cuda_plugin.h): emoe itself links no CUDA
# library and exports its symbols (-rdynamic, whole archive) for the plugin.
CU_OBJS  := $(CU_SRCS:%.cu=$(BUILD)/%.cu.o)
PLUGIN   := $(BUILD)/libemoe-cuda.so
ifeq ($(CUDA_ON),1)
  ALL_PLUGIN := $(PLUGIN)
else
  ALL_PLUGIN :=
endif
# nvcc takes the same dependency prefix as cc (a GPU machine without a registry).
NVCC_DEPS := $(if $(DEPS_PREFIX),-I$(DEPS_PREFIX)/usr/include)
NVCC_DEPS_LD := $(if $(DEPS_PREFIX),-L$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu -Xlinker -rpath -Xlinker $(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu)
TEST_BINS := $(TEST_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
LIB := $(BUILD)/libemoe.a

.PHONY: all clean test test-unit test-e2e test-asan test-gpu run install fuzz docs-config
all: $(BUILD)/emoe $(ALL_PLUGIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O2 -lineinfo $(CUARCH) -I. $(NVCC_DEPS) -DEMOE_CUDA=1 -Xcompiler -Wall,-Wextra,-Werror,-fPIC,-fvisibility=hidden -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/emoe: $(TOOL_OBJS) $(LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -rdynamic $(TOOL_OBJS) -Wl,--whole-archive $(LIB) -Wl,--no-whole-archive $(LDLIBS) -o $@

# The CUDA plugin: the kernels and the cuda backend, cudart + cuBLAS.
$(PLUGIN): $(CU_OBJS)
	$(NVCC) -shared -cudart shared $(CUARCH) $(CU_OBJS) -L$(CUDA_HOME)/lib64 -Xlinker -rpath -Xlinker $(CUDA_HOME)/lib64 -lcublas -o $@

# docs/configuration.md is generated from the config table (config/config.c);
# tests/e2e/docs_config.sh fails when the committed page is out of date.
docs-config: $(BUILD)/emoe
	$(BUILD)/emoe config --markdown > docs/configuration.md

.PHONY: plugin
plugin: $(PLUGIN)

$(BUILD)/tests/%: tests/unit/%.c $(LIB) tests/unit/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(CHECK_LIBS) $(LDLIBS) -o $@

# make test: Check suites under ASan+UBSan, then the end-to-end tests on the
# optimised binary. tests/run.sh prints one closing line "N passed, N failed, N skipped".
test:
	$(MAKE) all
	$(MAKE) SANITIZE=address,undefined CUDA=0 OPT=-O1 unit-bins
	BUILD_DIR=$(BUILD) SAN_BUILD_DIR=build-address-undefined bash tests/run.sh

unit-bins: $(TEST_BINS) $(BUILD)/emoe

test-unit: unit-bins
	SAN_BUILD_DIR=$(BUILD) BUILD_DIR=$(BUILD) ONLY=unit bash tests/run.sh

test-gpu:
	$(MAKE) CUDA=1 all
	BUILD_DIR=$(BUILD) bash tests/gpu/run.sh

# The default model: synthesized from the vendored Qwen3-style tokenizer (random
# weights: its text is noise). Then the main job runs on the CPU backend.
DEFAULT_MODEL ?= default-model
$(DEFAULT_MODEL)/config.json: $(wildcard tests/data/tokenizer-qwen3/tokenizer.json) | $(BUILD)/emoe
	$(BUILD)/emoe mkmodel --preset small --seed 1 $(if $(wildcard tests/data/tokenizer-qwen3/tokenizer.json),--tokenizer tests/data/tokenizer-qwen3) -o $(DEFAULT_MODEL)

# Builds in parallel (one job per CPU) even when called as plain `make run`.
NPROC := $(shell nproc 2>/dev/null || echo 2)
run:
	$(MAKE) -j$(NPROC) $(BUILD)/emoe
	$(MAKE) $(DEFAULT_MODEL)/config.json
	$(BUILD)/emoe serve -m $(DEFAULT_MODEL) --host 127.0.0.1 --port 8080

PREFIX ?= /usr/local
install: $(BUILD)/emoe $(ALL_PLUGIN)
	install -D -m 0755 $(BUILD)/emoe $(DESTDIR)$(PREFIX)/bin/emoe

clean:
	rm -rf build build-*

# Extra targets of each module (fuzzers, benches) live in mk/*.mk.
-include $(wildcard mk/*.mk)

-include $(LIB_OBJS:.o=.d) $(TOOL_OBJS:.o=.d) $(CU_OBJS:.o=.d)
