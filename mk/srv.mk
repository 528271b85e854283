# mk/srv.mk — the server's extra targets (included by the Makefile).

# server/text.c switches on the tokenizer / chat template by __has_include:
# rebuild it when those headers appear.
$(BUILD)/server/text.o: $(wildcard engine/tokenizer.h engine/jinja.h)

# make fuzz-request [FUZZ_SECONDS=60]: libFuzzer (ASan+UBSan) on the request
# parser, seeded from tests/fuzz/corpus/request; a crash leaves a reproducer
# in build-fuzz/.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
REQ_FUZZ_SRCS := tests/fuzz/fuzz_request.c server/request.c server/request_oai.c scheduler/textstream.c engine/sampler.c engine/common.c
.PHONY: fuzz-request
fuzz-request: build-fuzz/fuzz_request
	@mkdir -p build-fuzz/corpus-request
	build-fuzz/fuzz_request -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build-fuzz/ -dict=tests/fuzz/request.dict -print_final_stats=1 \
	    build-fuzz/corpus-request tests/fuzz/corpus/request

build-fuzz/fuzz_request: $(REQ_FUZZ_SRCS) server/request.h scheduler/textstream.h engine/sampler.h engine/common.h
	@mkdir -p build-fuzz
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -I. -D_GNU_SOURCE \
	    $(REQ_FUZZ_SRCS) -ljansson -lm -lpthread -o $@

# make install also installs the server's example config (only when none is
# there, so an upgrade never overwrites /etc/emoe/emoe.conf), the systemd unit
# (ExecStart pointed at $(PREFIX)/bin/emoe) and the operator docs.
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
install: install-srv
.PHONY: install-srv
install-srv:
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/emoe
	[ -e $(DESTDIR)$(SYSCONFDIR)/emoe/emoe.conf ] || install -m 0644 config/emoe.conf $(DESTDIR)$(SYSCONFDIR)/emoe/emoe.conf
	install -m 0644 config/emoe.conf $(DESTDIR)$(SYSCONFDIR)/emoe/emoe.conf.example
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/emoe|$(PREFIX)/bin/emoe|g' -e 's|/etc/emoe/|$(SYSCONFDIR)/emoe/|g' \
	    config/emoe.service >$(DESTDIR)$(UNITDIR)/emoe.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/emoe.service
	sed -e 's|/usr/local/bin/emoe|$(PREFIX)/bin/emoe|g' -e 's|/etc/emoe/|$(SYSCONFDIR)/emoe/|g' \
	    config/emoe@.service >$(DESTDIR)$(UNITDIR)/emoe@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/emoe@.service
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/doc/emoe/nginx
	install -m 0644 config/nginx/emoe.conf config/nginx/emoe-replicas.conf $(DESTDIR)$(PREFIX)/share/doc/emoe/nginx/
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/doc/emoe
	install -m 0644 docs/api.md docs/configuration.md docs/deployment.md $(DESTDIR)$(PREFIX)/share/doc/emoe/
