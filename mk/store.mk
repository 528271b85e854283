# mk/store.mk — extra targets of the expert store / loader / cache module.
#   make bench-loader   builds $(BUILD)/bench_loader (loader read bandwidth; see docs/performance.md)
.PHONY: bench-loader
bench-loader: $(BUILD)/bench_loader

$(BUILD)/bench_loader: tests/bench/bench_loader.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@
