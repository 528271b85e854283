# Predictor fuzzers (libFuzzer, clang). `make fuzz-trace [FUZZ_SECONDS=60]`:
# the routing-trace reader, plus replay / write-back of what it accepts.
PRED_FUZZ_CC ?= clang
PRED_FUZZ_SECONDS ?= $(or $(FUZZ_SECONDS),60)
PRED_FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE
TRACE_FUZZ_SRCS := tests/fuzz/fuzz_trace.c predictor/trace.c predictor/predictor.c predictor/replay.c predictor/forecast.c predictor/pathmem.c engine/common.c

build-fuzz/fuzz_trace: $(TRACE_FUZZ_SRCS) $(wildcard predictor/*.h engine/common.h)
	@mkdir -p build-fuzz
	$(PRED_FUZZ_CC) $(PRED_FUZZ_FLAGS) $(TRACE_FUZZ_SRCS) -ljansson -lm -lpthread -o $@

.PHONY: fuzz-trace
fuzz-trace: build-fuzz/fuzz_trace
	@mkdir -p build-fuzz/corpus-trace
	build-fuzz/fuzz_trace -max_total_time=$(PRED_FUZZ_SECONDS) -max_len=4096 build-fuzz/corpus-trace tests/fuzz/corpus/trace

# The predictor suites share a header the generic test rule does not list.
$(BUILD)/tests/test_predictor $(BUILD)/tests/test_replay $(BUILD)/tests/test_forecast: tests/unit/synth_trace.h

# `make fuzz-profile [FUZZ_SECONDS=60]`: the task profile loader.
PROFILE_FUZZ_SRCS := tests/fuzz/fuzz_profile.c predictor/profile.c engine/common.c
build-fuzz/fuzz_profile: $(PROFILE_FUZZ_SRCS) predictor/profile.h engine/common.h
	@mkdir -p build-fuzz
	$(PRED_FUZZ_CC) $(PRED_FUZZ_FLAGS) $(PROFILE_FUZZ_SRCS) -ljansson -lm -lpthread -o $@

.PHONY: fuzz-profile
fuzz-profile: build-fuzz/fuzz_profile
	@mkdir -p build-fuzz/corpus-profile
	build-fuzz/fuzz_profile -max_total_time=$(PRED_FUZZ_SECONDS) -max_len=4096 build-fuzz/corpus-profile tests/fuzz/corpus/profile
