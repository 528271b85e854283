#!/usr/bin/env bash
# tok_bench_text.sh OUT — writes ~4 MB of mixed text for `make bench-tokenizer`:
# about half repository files (C code, JSON with CJK/emoji, Jinja templates)
# and half generated multilingual prose (English, Chinese, Russian, Greek,
# Korean words, numbers, emoji, whitespace runs) from a fixed seed.
# Deterministic for a given checkout.
set -eu
out=$1
cd "$(dirname "$0")/.."
src=$(mktemp)
cat engine/tok_*.c engine/jinja_*.c tools/cmd_tokenize.c tests/data/jinja_cases.json tests/fuzz/corpus/jinja/*.j2 >"$src"
: >"$out"
while [ "$(stat -c %s "$out")" -lt 2000000 ]; do cat "$src" >>"$out"; done
rm -f "$src"
LC_ALL=C awk -v target=2000000 '
function utf8(cp) {
    if (cp < 128) return sprintf("%c", cp)
    if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
    if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
    return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
}
function word(base, span, minl, maxl,   s, n, i) {
    n = minl + int(rand() * (maxl - minl + 1)); s = ""
    for (i = 0; i < n; i++) s = s utf8(base + int(rand() * span))
    return s
}
BEGIN {
    srand(1)
    split("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so what no out up said more about will them into some could time two may then do first any my now such like other how its our over only new most me also made after people did many before must through back years where much your way well down should because each just those mr how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three", W, " ")
    n = 0; total = 0
    while (total < target) {
        r = rand()
        if (r < 0.45) w = W[1 + int(rand() * length(W))]
        else if (r < 0.60) w = word(19968, 3000, 1, 4)        # CJK (common range)
        else if (r < 0.70) w = word(1072, 32, 3, 9)          # Cyrillic lower
        else if (r < 0.75) w = word(945, 25, 3, 8)           # Greek lower
        else if (r < 0.80) w = word(44032, 2000, 1, 3)       # Hangul syllables
        else if (r < 0.87) w = int(rand() * 100000)
        else if (r < 0.90) w = word(128512, 80, 1, 2)        # emoji
        else if (r < 0.95) w = substr(",.;:!?()-\"", 1 + int(rand() * 10), 1)
        else w = (rand() < 0.5 ? "\n" : "  ")
        line = line w (rand() < 0.85 ? " " : "")
        if (length(line) > 200) { print line; total += length(line) + 1; line = "" }
    }
}' >>"$out"
