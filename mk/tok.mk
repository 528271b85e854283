# mk/tok.mk — tokenizer / chat-template extras: libFuzzer targets and the
# encode benchmark.
#   make fuzz-tokenizer [FUZZ_SECONDS=60]   corrupted tokenizer.json + text/ids
#   make fuzz-jinja [FUZZ_SECONDS=60]       untrusted chat templates
# (FUZZ_TIME= is accepted as well.)
#   make bench-tokenizer                 encode MB/s on mixed text (Qwen3 tokenizer)
# Fuzzers are built with clang -fsanitize=fuzzer,address,undefined into
# build-fuzz/; the corpus grows in fuzz-out/<name>/ seeded from tests/fuzz/corpus/.
TOK_FUZZ_CC ?= $(or $(shell command -v clang 2>/dev/null),$(shell command -v clang-14 2>/dev/null),clang)
TOK_FUZZ_SECONDS ?= $(or $(FUZZ_TIME),$(FUZZ_SECONDS),60)
TOK_FUZZ_CFLAGS := -g -O1 -std=c11 -I. -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
TOK_FUZZ_LIBS := -ljansson -lpcre2-8 -lutf8proc -lpthread -lm
TOK_FUZZ_SRCS := engine/common.c $(wildcard engine/tok_*.c) $(wildcard engine/jinja_*.c)

.PHONY: fuzz-tokenizer fuzz-jinja bench-tokenizer
fuzz: fuzz-tokenizer fuzz-jinja

TOK_FUZZ_HDRS := engine/common.h engine/tokenizer.h engine/tok_internal.h engine/jinja.h engine/jinja_internal.h

build-fuzz/fuzz_tokenizer: tests/fuzz/fuzz_tokenizer.c $(TOK_FUZZ_SRCS) $(TOK_FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(TOK_FUZZ_CC) $(TOK_FUZZ_CFLAGS) $< $(TOK_FUZZ_SRCS) $(TOK_FUZZ_LIBS) -o $@

build-fuzz/fuzz_jinja: tests/fuzz/fuzz_jinja.c $(TOK_FUZZ_SRCS) $(TOK_FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(TOK_FUZZ_CC) $(TOK_FUZZ_CFLAGS) $< $(TOK_FUZZ_SRCS) $(TOK_FUZZ_LIBS) -o $@

fuzz-tokenizer: build-fuzz/fuzz_tokenizer
	@mkdir -p fuzz-out/tokenizer
	ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/fuzz_tokenizer -max_total_time=$(TOK_FUZZ_SECONDS) -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 fuzz-out/tokenizer tests/fuzz/corpus/tokenizer

fuzz-jinja: build-fuzz/fuzz_jinja
	@mkdir -p fuzz-out/jinja
	ASAN_OPTIONS=detect_leaks=1 ./build-fuzz/fuzz_jinja -max_total_time=$(TOK_FUZZ_SECONDS) -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
	    -dict=tests/fuzz/jinja.dict -print_final_stats=1 fuzz-out/jinja tests/fuzz/corpus/jinja

# Mixed text (English prose, code, CJK, emoji, numbers) of ~4 MB built from the
# reference cases, encoded once cold and once with a warm piece cache.
BENCH_TEXT ?= build/bench-mixed.txt
$(BENCH_TEXT): tests/data/jinja_cases.json tools/tok_bench_text.sh
	@mkdir -p $(dir $@)
	bash tools/tok_bench_text.sh $@

bench-tokenizer: $(BUILD)/emoe $(BENCH_TEXT)
	$(BUILD)/emoe tokenize -m tests/data/tokenizer-qwen3 --text-file $(BENCH_TEXT) --bench >/dev/null
