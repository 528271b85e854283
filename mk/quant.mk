# mk/quant.mk — extra targets of the quantized-experts module (engine/quant*.c).
#   make bench-quant   builds $(BUILD)/bench_quant (q8/q4 matmul kernel throughput; see docs/quant.md)
.PHONY: bench-quant
bench-quant: $(BUILD)/bench_quant

$(BUILD)/bench_quant: tests/bench/bench_quant.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@
