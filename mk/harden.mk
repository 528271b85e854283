# mk/harden.mk — issue 14's extra targets (included by the Makefile).
# make fuzz-config [FUZZ_SECONDS=60]: libFuzzer (ASan+UBSan) on the INI reader
# (config/ini_parse.c) with a cfg_dump round-trip invariant; seeds in
# tests/fuzz/corpus/config, a crash leaves a reproducer in build-fuzz/.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
CFG_FUZZ_SRCS := tests/fuzz/fuzz_config.c config/config.c config/ini_parse.c engine/common.c
.PHONY: fuzz-config
fuzz-config: build-fuzz/fuzz_config
	@mkdir -p build-fuzz/corpus-config
	build-fuzz/fuzz_config -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 \
	    -artifact_prefix=build-fuzz/ -print_final_stats=1 build-fuzz/corpus-config tests/fuzz/corpus/config

build-fuzz/fuzz_config: $(CFG_FUZZ_SRCS) config/config.h engine/common.h
	@mkdir -p build-fuzz
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE \
	    $(CFG_FUZZ_SRCS) -lm -lpthread -o $@
