#!/usr/bin/env bash
# tests/run.sh — runs the Check suites (from $SAN_BUILD_DIR, sanitized) and the
# end-to-end tests (tests/e2e/*.sh, against $BUILD_DIR/emoe). An e2e script exits
# 0 = pass, 77 = skip (it prints why), anything else = fail.
# Closing line: "N passed, N failed, N skipped" and, when something was
# skipped, how many for which reason (e.g. the ../shared fixtures are absent).
# E2E_ONLY=name[,name] runs only those e2e scripts (tests of this runner).
set -u
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
SAN_BUILD_DIR=${SAN_BUILD_DIR:-$BUILD_DIR}
ONLY=${ONLY:-all}
export EMOE_BIN=${EMOE_BIN:-$PWD/$BUILD_DIR/emoe}
export EMOE_SHARED=${EMOE_SHARED:-$PWD/../shared}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0; fail=0; skip=0; failed=(); why=()
# One short reason per skip: the fixtures beside the checkout, or the message.
reason_of() {
    if grep -qiE 'shared|fixture' <<<"$1"; then echo "need the ../shared fixtures, absent here (set EMOE_SHARED)"
    else sed -E 's/^ *SKIP:? *//; s/^(.{70}).*/\1.../' <<<"$1"; fi
}
run_one() { # name, command...
    local name=$1; shift
    local log; log=$(mktemp)
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -eq 0 ]; then
        pass=$((pass+1)); echo "PASS $name ($((SECONDS-t0))s)"
        grep -E '^(SKIP|[0-9]+%: Checks)' "$log" | sed 's/^/     /'
        while IFS= read -r l; do why+=("part of a passing suite: $(reason_of "$l")"); done < <(grep -E '^SKIP' "$log")
    elif [ $rc -eq 77 ]; then
        skip=$((skip+1)); echo "SKIP $name: $(grep -m1 -i skip "$log")"
        why+=("$(reason_of "$(grep -m1 -i skip "$log")")")
    else
        fail=$((fail+1)); failed+=("$name"); echo "FAIL $name (rc=$rc)"; tail -n 40 "$log" | sed 's/^/     /'
    fi
    rm -f "$log"
}
if [ "$ONLY" = all ] || [ "$ONLY" = unit ]; then
    for t in "$SAN_BUILD_DIR"/tests/test_*; do
        [ -x "$t" ] || continue
        run_one "unit/$(basename "$t")" "$t"
    done
fi
if [ "$ONLY" = all ] || [ "$ONLY" = e2e ]; then
    for t in tests/e2e/*.sh; do
        [ -f "$t" ] || continue
        if [ -n "${E2E_ONLY:-}" ] && ! grep -qw "$(basename "$t" .sh)" <<<"${E2E_ONLY//,/ }"; then continue; fi
        run_one "e2e/$(basename "$t" .sh)" bash "$t"
    done
fi
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
reasons=
if [ ${#why[@]} -gt 0 ]; then
    reasons=$(printf '%s\n' "${why[@]}" | sort | uniq -c | sort -rn | sed -E 's/^ *([0-9]+) /\1 x /' | paste -sd ';' | sed 's/;/; /g')
    reasons=" ($reasons)"
fi
echo "$pass passed, $fail failed, $skip skipped$reasons"
[ $fail -eq 0 ]
