# mk/srv.mk — the server's extra targets (included by the Makefile).

# server/text.c switches on the tokenizer / chat template by __has_include:
# rebuild it when those headers appear.
$(BUILD)/server/text.o: $(wildcard engine/tokenizer.h engine/jinja.h)
