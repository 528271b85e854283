#!/usr/bin/env bash
# tok_bench_text.sh OUT — writes ~4 MB of mixed text for `make bench-tokenizer`
# from files in the repository (C code, JSON with CJK/emoji/combining marks,
# the Jinja templates), repeated to size. Deterministic for a given checkout.
set -eu
out=$1
cd "$(dirname "$0")/.."
src=$(mktemp)
cat engine/tok_*.c engine/jinja_*.c tools/cmd_tokenize.c tests/data/jinja_cases.json tests/fuzz/corpus/jinja/*.j2 >"$src"
: >"$out"
while [ "$(stat -c %s "$out")" -lt 4000000 ]; do cat "$src" >>"$out"; done
rm -f "$src"
