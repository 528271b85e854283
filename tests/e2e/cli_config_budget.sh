#!/usr/bin/env bash
# cli_config_budget.sh — issue 14, items 10-12 from the command line: a config
# file's errors all reported at once (duplicates, unclosed section, inline
# comments accepted) by both `emoe config --check` and `emoe serve
# --check-config`, which say what each checked; one --budget syntax on run,
# serve, bench and replay (a bare number is an error naming 25% / 25MiB);
# bench --budget is not silently ignored on the CPU; `emoe --version`.
cd "$(dirname "$0")/../.."
. tests/e2e/lib/server.bash
need_model
B=$EMOE_BIN

# --version
V=$("$B" --version 2>&1); check "emoe --version prints a version ($V)" grep -q '^emoe [0-9]' <<<"$V"

# 10. every error in one pass; inline comments; duplicates; unclosed section.
printf '[server]\nport = 8080 # the HTTP port\nport = 9090\n[model\npath = x\n[cache]\ndevice_budget = 150%%\n' >"$TMPD/bad.conf"
"$B" config --check --config "$TMPD/bad.conf" >"$TMPD/c.out" 2>&1; RC=$?
check "config --check on a bad file fails (rc=$RC)" test "$RC" = 1
check "inline # comment accepted (no 'not an integer')" sh -c "! grep -q 'not an integer' '$TMPD/c.out'"
check "duplicate key reported with both lines" grep -q ':3: duplicate key .port. in \[server\] (first set on line 2)' "$TMPD/c.out"
check "unclosed section named" grep -q ":4: unclosed section header '\[model'" "$TMPD/c.out"
check "the third error reported in the same run" grep -q ':7: .*device_budget' "$TMPD/c.out"
"$B" serve --check-config --config "$TMPD/bad.conf" -m "$MODEL" >"$TMPD/s.out" 2>&1; RC=$?
check "serve --check-config fails on the same file (rc=$RC)" test "$RC" = 1
for l in ':3: duplicate' ':4: unclosed' ':7: '; do
    check "serve --check-config reports '$l' too" grep -q "$l" "$TMPD/s.out"
done

# 11. the shipped config: config --check checks syntax and values and says the
# paths are serve's; serve --check-config adds the paths.
"$B" config --check --config config/emoe.conf >"$TMPD/c2.out" 2>&1; RC=$?
check "config --check accepts config/emoe.conf (rc=$RC)" test "$RC" = 0
check "and says serve --check-config checks the paths" grep -q 'serve --check-config' "$TMPD/c2.out"
"$B" serve --check-config --config config/emoe.conf --set model.path="$TMPD/nomodel" >"$TMPD/s2.out" 2>&1; RC=$?
check "serve --check-config fails on a missing model (rc=$RC) and says syntax and values were valid" \
    sh -c "test $RC = 1 && grep -q 'syntax and values are valid' '$TMPD/s2.out'"
"$B" serve --check-config --config config/emoe.conf -m "$MODEL" >"$TMPD/s3.out" 2>&1; RC=$?
check "serve --check-config accepts it with a real model (rc=$RC)" test "$RC" = 0

# 12. one budget syntax.
expect_budget_error() { # description, command...
    local d=$1; shift
    "$@" >"$TMPD/b.out" 2>&1; local rc=$?
    if [ $rc = 2 ] && grep -q 'bare number' "$TMPD/b.out" && grep -q '25%' "$TMPD/b.out"; then ok "$d"
    else bad "$d (rc=$rc: $(head -c 300 "$TMPD/b.out"))"; fi
}
expect_budget_error "run --budget 25 is an error" "$B" run -m "$MODEL" --prompt-ids 1 -n 1 --budget 25
expect_budget_error "run --host-budget 25 is an error" "$B" run -m "$MODEL" --prompt-ids 1 -n 1 --budget 50% --host-budget 25
expect_budget_error "serve --budget 25 is an error" "$B" serve -m "$MODEL" --budget 25
expect_budget_error "replay --budget 25 is an error" "$B" replay --trace "$TMPD/none" --budget 25 --policy lru
expect_budget_error "bench --budget 25 is an error" "$B" bench -m "$MODEL" --budget 25
"$B" serve -m "$MODEL" --budget 25% --check-config >"$TMPD/sv.out" 2>&1; RC=$?
check "serve --budget 25% accepted (rc=$RC)" test "$RC" = 0
"$B" serve -m "$MODEL" --budget 2MiB --host-budget 4MiB --check-config >/dev/null 2>&1; RC=$?
check "serve --budget 2MiB --host-budget 4MiB accepted (rc=$RC)" test "$RC" = 0
"$B" run -m "$MODEL" --prompt-ids 1 -n 1 --threads 1 --budget 50% --store "$TMPD/s.emoe" >/dev/null 2>&1; RC=$?
check "run --budget 50% runs (rc=$RC)" test "$RC" = 0
"$B" bench -m "$MODEL" --budget 25% --prompt-len 2 --gen 1 --threads 1 >"$TMPD/bench.out" 2>&1; RC=$?
check "bench --budget on the CPU is refused, not ignored (rc=$RC)" \
    sh -c "test $RC != 0 && grep -q 'CUDA' '$TMPD/bench.out'"
# 12. --config / --set on the commands that run a model (CLI options win).
printf '[model]\npath = %s\n[engine]\nthreads = 1\n[cache]\ndevice_budget = 50%%\nstore_path = %s\n' \
    "$MODEL" "$TMPD/cfg.emoe" >"$TMPD/run.conf"
"$B" run --config "$TMPD/run.conf" --prompt-ids 1,2 -n 2 >"$TMPD/r1.out" 2>&1; RC=$?
check "run --config takes the model and the 50% budget from the file (rc=$RC)" \
    sh -c "test $RC = 0 && grep -q '^expert cache:' '$TMPD/r1.out' && test -f '$TMPD/cfg.emoe'"
"$B" run --config "$TMPD/run.conf" --set cache.device_budget=100% --prompt-ids 1,2 -n 2 >"$TMPD/r2.out" 2>&1; RC=$?
check "run --set overrides the file (100%: no cache) (rc=$RC)" sh -c "test $RC = 0 && ! grep -q '^expert cache:' '$TMPD/r2.out'"
"$B" run --config "$TMPD/run.conf" --set cache.nope=1 --prompt-ids 1 -n 1 >"$TMPD/r3.out" 2>&1; RC=$?
check "run --set with an unknown key fails naming it (rc=$RC)" sh -c "test $RC = 2 && grep -q nope '$TMPD/r3.out'"
"$B" bench --config "$TMPD/run.conf" --prompt-len 2 --gen 1 >"$TMPD/b1.out" 2>&1; RC=$?
check "bench --config takes the model from the file (rc=$RC)" sh -c "test $RC = 0 && grep -q 'backend cpu' '$TMPD/b1.out'"
printf '{"task":"t","prompt_ids":[1,2,3],"max_tokens":2}\n' >"$TMPD/p.jsonl"
"$B" trace --config "$TMPD/run.conf" --prompts "$TMPD/p.jsonl" -o "$TMPD/t.jsonl" >"$TMPD/t1.out" 2>&1; RC=$?
check "trace --config takes the model from the file (rc=$RC)" sh -c "test $RC = 0 && test -s '$TMPD/t.jsonl'"
"$B" run -m "$MODEL" --prompt-ids 1,2 -n 2 --threads 1 --budget 2GB --store "$TMPD/cfg.emoe" >"$TMPD/r4.out" 2>&1; RC=$?
check "run --budget 2GB is 2,000,000,000 bytes as in the config (rc=$RC)" grep -q 'of 2000000000 budget bytes' "$TMPD/r4.out"
finish
