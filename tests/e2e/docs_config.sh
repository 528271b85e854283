#!/usr/bin/env bash
# docs_config.sh — docs/configuration.md is what `emoe config --markdown`
# generates from the config table, so a knob added, renamed or re-documented
# without `make docs-config` fails here, naming the lines that differ.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
B=$EMOE_BIN
if "$B" config --markdown >"$TMPD/configuration.md" 2>"$TMPD/err"; then
    if diff -u docs/configuration.md "$TMPD/configuration.md" >"$TMPD/diff"; then
        ok "docs/configuration.md matches emoe config --markdown"
    else
        bad "docs/configuration.md is out of date (run make docs-config):"
        head -40 "$TMPD/diff"
    fi
else
    bad "emoe config --markdown failed: $(tail -c 300 "$TMPD/err")"
fi
finish
