# mk/srv.mk — the server's extra targets (included by the Makefile).

# server/text.c switches on the tokenizer / chat template by __has_include:
# rebuild it when those headers appear.
$(BUILD)/server/text.o: $(wildcard engine/tokenizer.h engine/jinja.h)

# make fuzz-request: libFuzzer on the request parser for FUZZ_TIME seconds
# (default 60), seeded from tests/fuzz/corpus_request; findings go to fuzz-out/.
FUZZ_TIME ?= 60
FUZZ_CC ?= $(or $(shell command -v clang 2>/dev/null),$(shell command -v clang-14 2>/dev/null))
FUZZ_REQUEST_SRCS := tests/fuzz/fuzz_request.c server/request.c scheduler/textstream.c engine/sampler.c engine/common.c
.PHONY: fuzz-request
fuzz-request: fuzz-out/fuzz_request
	@mkdir -p fuzz-out/corpus_request
	./fuzz-out/fuzz_request -max_total_time=$(FUZZ_TIME) -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=fuzz-out/ -dict=tests/fuzz/request.dict -print_final_stats=1 fuzz-out/corpus_request tests/fuzz/corpus_request

fuzz-out/fuzz_request: $(FUZZ_REQUEST_SRCS) server/request.h scheduler/textstream.h
	@mkdir -p fuzz-out
	$(FUZZ_CC) -I. -D_GNU_SOURCE -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    $(FUZZ_REQUEST_SRCS) -ljansson -lm -lpthread -o $@
