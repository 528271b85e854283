#!/usr/bin/env bash
# tests/e2e/tokenizer_cli.sh — `emoe tokenize`, `detokenize` and `chat-template`
# as a user runs them. Part 1 uses the vendored Qwen3 tokenizer
# (tests/data/tokenizer-qwen3) and needs nothing else. Part 2 replays the
# Hugging Face reference cases from $EMOE_SHARED/fixtures/reference through the
# CLI (all llama2 cases, some Qwen3/DeepSeek-V3 text and chat cases); it needs
# python3 to read the JSON and is skipped with a message without it.
set -u
cd "$(dirname "$0")/../.."
BIN=${EMOE_BIN:-build/emoe}
TOK=tests/data/tokenizer-qwen3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
expect_eq() { # name, got, want
    if [ "$2" != "$3" ]; then fail "$1: got [$2] want [$3]"; fi
}
expect_rc() { # name, want_rc, command...
    local name=$1 want=$2; shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -ne "$want" ]; then fail "$name: exit $rc, want $want ($(head -c 300 "$tmp/err"))"; return; fi
    if [ "$want" -ne 0 ] && [ ! -s "$tmp/err" ]; then fail "$name: exit $want without a message"; fi
}

[ -x "$BIN" ] || { echo "FAIL: no binary at $BIN"; exit 1; }
[ -f "$TOK/tokenizer.json" ] || { echo "FAIL: vendored tokenizer missing at $TOK"; exit 1; }

# --- part 1: vendored Qwen3 tokenizer ---
expect_eq "tokenize" "$("$BIN" tokenize -m "$TOK" --text 'Hello world')" "9707,1879"
expect_eq "tokenize --json" "$("$BIN" tokenize -m "$TOK" --text ' Hello world' --json)" '{"ids":[21927,1879]}'
expect_eq "tokenize specials" "$("$BIN" tokenize -m "$TOK" --text '<|im_start|>user
hi<|im_end|>')" "151644,872,198,6023,151645"
printf 'caf\xc3\xa9 \xf0\x9f\x98\x80\n' >"$tmp/t.txt"
expect_eq "tokenize --text-file" "$("$BIN" tokenize -m "$TOK" --text-file "$tmp/t.txt")" "$("$BIN" tokenize -m "$TOK" --text "$(cat "$tmp/t.txt")
")"
"$BIN" detokenize -m "$TOK" --ids 9707,1879 >"$tmp/d"
printf 'Hello world' >"$tmp/want"
cmp -s "$tmp/d" "$tmp/want" || fail "detokenize: got [$(cat "$tmp/d")]"
"$BIN" detokenize -m "$TOK" --ids 151644,872,198,6023,151645 --skip-special >"$tmp/d"
printf 'user\nhi' >"$tmp/want"
cmp -s "$tmp/d" "$tmp/want" || fail "detokenize --skip-special: got [$(cat "$tmp/d")]"
# streaming gives the same bytes, here with an emoji split over byte-level tokens
ids=$("$BIN" tokenize -m "$TOK" --text-file "$tmp/t.txt")
"$BIN" detokenize -m "$TOK" --ids "$ids" >"$tmp/a"
"$BIN" detokenize -m "$TOK" --ids "$ids" --stream >"$tmp/b"
cmp -s "$tmp/a" "$tmp/t.txt" || fail "round trip of t.txt"
cmp -s "$tmp/a" "$tmp/b" || fail "detokenize --stream differs from one-shot"

printf '[{"role":"user","content":"Hello!"}]' >"$tmp/m.json"
"$BIN" chat-template -m "$TOK" --messages-file "$tmp/m.json" >"$tmp/c"
printf '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n' >"$tmp/want"
cmp -s "$tmp/c" "$tmp/want" || fail "chat-template: got [$(cat "$tmp/c")]"
"$BIN" chat-template -m "$TOK" --messages-file "$tmp/m.json" --kwarg enable_thinking=false >"$tmp/c"
printf '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n' >"$tmp/want"
cmp -s "$tmp/c" "$tmp/want" || fail "chat-template enable_thinking=false: got [$(cat "$tmp/c")]"
"$BIN" chat-template -m "$TOK" --messages-file "$tmp/m.json" --no-generation-prompt >"$tmp/c"
printf '<|im_start|>user\nHello!<|im_end|>\n' >"$tmp/want"
cmp -s "$tmp/c" "$tmp/want" || fail "chat-template --no-generation-prompt: got [$(cat "$tmp/c")]"

# bad arguments: exit 2 with a message
expect_rc "no -m" 2 "$BIN" tokenize --text x
expect_rc "both texts" 2 "$BIN" tokenize -m "$TOK" --text x --text-file "$tmp/t.txt"
expect_rc "no text" 2 "$BIN" tokenize -m "$TOK"
expect_rc "unknown option" 2 "$BIN" tokenize -m "$TOK" --text x --frob
expect_rc "missing text file" 2 "$BIN" tokenize -m "$TOK" --text-file "$tmp/nonexistent"
expect_rc "bad ids" 2 "$BIN" detokenize -m "$TOK" --ids 1,x,3
# an id without a token is skipped, as tokenizers' decode does
"$BIN" detokenize -m "$TOK" --ids 9707,99999999,1879 >"$tmp/d"
printf 'Hello world' >"$tmp/want"
cmp -s "$tmp/d" "$tmp/want" || fail "detokenize with an unknown id: got [$(cat "$tmp/d")]"
expect_rc "no messages file" 2 "$BIN" chat-template -m "$TOK"
expect_rc "bad kwarg" 2 "$BIN" chat-template -m "$TOK" --messages-file "$tmp/m.json" --kwarg novalue
printf '{"not": "messages"}' >"$tmp/bad.json"
expect_rc "messages not an array" 2 "$BIN" chat-template -m "$TOK" --messages-file "$tmp/bad.json"
# a directory without tokenizer.json: load error, exit 1, names the file
expect_rc "no tokenizer" 1 "$BIN" tokenize -m "$tmp" --text x
grep -q "tokenizer.json" "$tmp/err" || fail "missing tokenizer: message does not name tokenizer.json"
# invalid UTF-8 input is rejected, not crashed on
printf 'ab\xff' >"$tmp/bad.txt"
expect_rc "invalid utf-8" 1 "$BIN" tokenize -m "$TOK" --text-file "$tmp/bad.txt"

# --- part 2: the Hugging Face reference cases through the CLI ---
SH=${EMOE_SHARED:-../shared}
if [ ! -d "$SH/fixtures/reference" ]; then
    echo "note: part 2 skipped: $SH/fixtures/reference is absent (set EMOE_SHARED)"
elif ! command -v python3 >/dev/null; then
    echo "note: part 2 skipped: python3 is needed to read the reference JSON"
else
    python3 - "$SH" "$tmp" <<'EOF' >"$tmp/plan" || fail "could not read the reference JSON"
import json, os, sys
sh, tmp = sys.argv[1], sys.argv[2]
refs = [("llama2", "fixtures/tokenizers/llama2", None),
        ("qwen3", "fixtures/models/tiny-qwen3-moe", 3),
        ("deepseek_v3", "fixtures/tokenizers/deepseek_v3", 3)]
k = 0
for name, d, limit in refs:
    r = json.load(open(os.path.join(sh, "fixtures/reference/tokenizer_%s.json" % name)))
    cases = [c for c in r["cases"] if c["ids"]]
    if limit:  # spread over the list
        cases = cases[::max(1, len(cases) // limit)]
    for c in cases:
        k += 1
        open(f"{tmp}/c{k}.txt", "wb").write(c["text"].encode())
        open(f"{tmp}/c{k}.dec", "wb").write(c["decoded"].encode())
        print("case", os.path.join(sh, d), k, ",".join(map(str, c["ids"])))
    for c in r.get("chat", [])[::3]:  # entries 0, 3, 6: both kwargs variants
        k += 1
        json.dump(c["messages"], open(f"{tmp}/c{k}.json", "w"))
        open(f"{tmp}/c{k}.dec", "wb").write(c["text"].encode())
        kw = " ".join("--kwarg %s=%s" % (a, json.dumps(b)) for a, b in c["kwargs"].items())
        print("chat", os.path.join(sh, d), k, kw)
EOF
    # the vendored copy is the fixture's tokenizer, byte for byte
    for f in tokenizer.json tokenizer_config.json; do
        cmp -s "$TOK/$f" "$SH/fixtures/models/tiny-qwen3-moe/$f" || fail "tests/data/tokenizer-qwen3/$f differs from the fixture"
    done
    n=0
    while read -r kind dir k rest; do
        n=$((n+1))
        if [ "$kind" = case ]; then
            got=$("$BIN" tokenize -m "$dir" --text-file "$tmp/c$k.txt")
            [ "$got" = "$rest" ] || fail "$dir case $k: ids [$got] want [$rest]"
            "$BIN" detokenize -m "$dir" --ids "$rest" >"$tmp/out.dec"
            cmp -s "$tmp/out.dec" "$tmp/c$k.dec" || fail "$dir case $k: decoded text differs"
        else
            # shellcheck disable=SC2086
            "$BIN" chat-template -m "$dir" --messages-file "$tmp/c$k.json" $rest >"$tmp/out.dec"
            cmp -s "$tmp/out.dec" "$tmp/c$k.dec" || fail "$dir chat $k ($rest): rendered prompt differs"
        fi
    done <"$tmp/plan"
    [ "$n" -gt 80 ] || fail "part 2 ran only $n checks"
    echo "part 2: $n reference checks through the CLI"
fi

if [ $fails -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "tokenizer CLI: all checks passed"
exit 0
