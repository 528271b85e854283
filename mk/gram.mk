# mk/gram.mk — constrained decoding (engine/gram_*.c): `make fuzz-schema
# [FUZZ_SECONDS=60]` fuzzes JSON Schema compilation and the byte automaton
# (libFuzzer, ASan+UBSan), seeded from tests/fuzz/corpus/schema.
GRAM_FUZZ_SRCS := tests/fuzz/fuzz_schema.c engine/gram_schema.c engine/gram_match.c engine/gram_vocab.c engine/common.c

build-fuzz/fuzz_schema: $(GRAM_FUZZ_SRCS) engine/grammar.h engine/gram_internal.h engine/common.h
	@mkdir -p build-fuzz
	$(or $(FUZZ_CC),clang) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE \
	    $(GRAM_FUZZ_SRCS) -ljansson -lm -lpthread -o $@

.PHONY: fuzz-schema
fuzz: fuzz-schema
fuzz-schema: build-fuzz/fuzz_schema
	@mkdir -p build-fuzz/corpus-schema
	build-fuzz/fuzz_schema -max_total_time=$(or $(FUZZ_SECONDS),60) -max_len=2048 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build-fuzz/ -print_final_stats=1 build-fuzz/corpus-schema tests/fuzz/corpus/schema

# make bench-grammar: per-token cost of the logits mask on the Qwen3
# vocabulary (docs/performance.md).
.PHONY: bench-grammar
bench-grammar: $(BUILD)/bench_grammar
	$(BUILD)/bench_grammar $(or $(EMOE_SHARED),../shared)/fixtures/models/tiny-qwen3-moe

$(BUILD)/bench_grammar: tests/bench/bench_grammar.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# make fuzz-toolcalls: tool-call parsing of generated text (server/tool_calls.c).
build-fuzz/fuzz_toolcalls: tests/fuzz/fuzz_toolcalls.c server/tool_calls.c server/tool_calls.h
	@mkdir -p build-fuzz
	$(or $(FUZZ_CC),clang) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE \
	    tests/fuzz/fuzz_toolcalls.c server/tool_calls.c -ljansson -lm -o $@

.PHONY: fuzz-toolcalls
fuzz: fuzz-toolcalls
fuzz-toolcalls: build-fuzz/fuzz_toolcalls
	@mkdir -p build-fuzz/corpus-toolcalls
	build-fuzz/fuzz_toolcalls -max_total_time=$(or $(FUZZ_SECONDS),60) -max_len=2048 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build-fuzz/ -print_final_stats=1 build-fuzz/corpus-toolcalls tests/fuzz/corpus/toolcalls
