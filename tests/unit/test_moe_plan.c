/*
 * test_moe_plan.c — host-side pieces of the device backends, checked on any
 * machine: the per-expert grouping of (token, pick) pairs against a brute-force
 * regrouping, the slot table's LRU eviction and pinning against a simple
 * reference simulation, and backend selection at eng_open (cpu / auto / cuda
 * on a build or machine without a device).
 */
#include "engine/engine.h"
#include "engine/moe_plan.h"
#include "tests/unit/testutil.h"

static uint64_t rng = 88172645463325252ull;
static int rnd(int n) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (int)(rng % (uint64_t)n); }

START_TEST(plan_matches_bruteforce)
{
    eng_moe_plan p = {0};
    int shapes[][3] = {{1, 1, 8}, {1, 8, 128}, {7, 2, 8}, {64, 4, 16}, {33, 8, 128}, {5, 3, 60}, {64, 1, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int T = shapes[s][0], k = shapes[s][1], E = shapes[s][2];
        int *ids = malloc(sizeof(int) * (size_t)T * k);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++) {
                int x;
                int dup;
                do { /* distinct experts per token, as top-k gives */
                    x = rnd(E);
                    dup = 0;
                    for (int m = 0; m < j; m++) dup |= ids[t * k + m] == x;
                } while (dup);
                ids[t * k + j] = x;
            }
        ck_assert_int_eq(eng_moe_plan_build(&p, ids, T, k, E), 0);
        ck_assert_int_eq(p.n_pairs, T * k);
        /* Every pair appears exactly once, under its expert, in token order. */
        int seen_pairs = 0, prev_x = -1;
        for (int u = 0; u < p.n_used; u++) {
            int x = p.used[u];
            ck_assert_int_gt(x, prev_x);
            prev_x = x;
            int bf = 0;
            for (int i = 0; i < T * k; i++) bf += ids[i] == x;
            ck_assert_int_eq(p.count[u], bf);
            ck_assert_int_eq(p.start[u], seen_pairs);
            for (int c = 0; c < p.count[u]; c++) {
                int at = p.start[u] + c, src = p.pair_src[at];
                ck_assert_int_eq(ids[src], x);
                ck_assert_int_eq(p.pair_row[at], src / k);
                ck_assert_int_eq(p.pair_of[src], at);
                if (c) ck_assert_int_gt(src, p.pair_src[at - 1]);
            }
            seen_pairs += p.count[u];
        }
        ck_assert_int_eq(seen_pairs, T * k);
        for (int x = 0; x < E; x++) { /* unused experts are absent */
            int any = 0, listed = 0;
            for (int i = 0; i < T * k; i++) any |= ids[i] == x;
            for (int u = 0; u < p.n_used; u++) listed |= p.used[u] == x;
            ck_assert_int_eq(any, listed);
        }
        free(ids);
    }
    int bad[2] = {0, 9};
    ck_assert_int_eq(eng_moe_plan_build(&p, bad, 1, 2, 8), -1);
    eng_moe_plan_free(&p);
    eng_moe_plan_free(NULL);
}
END_TEST

/* Reference LRU: a list of keys, most recent last; pinned keys skipped. */
START_TEST(slot_table_lru_matches_reference)
{
    enum { NS = 5, NK = 23, STEPS = 4000 };
    eng_slot_table t;
    ck_assert_int_eq(eng_slot_table_init(&t, NS, NK), 0);
    int ref[NS], nref = 0, pinned[NK] = {0}, npinned = 0;
    uint64_t hits = 0, misses = 0;
    for (int step = 0; step < STEPS; step++) {
        if (rnd(6) == 0) { eng_slot_table_unpin_all(&t); memset(pinned, 0, sizeof pinned); npinned = 0; }
        int key = rnd(NK), miss, ev;
        int pos = -1;
        for (int i = 0; i < nref; i++) if (ref[i] == key) pos = i;
        int expect_fail = pos < 0 && nref == NS && npinned == NS;
        int slot = eng_slot_table_get(&t, key, &miss, &ev);
        if (expect_fail) {
            ck_assert_int_eq(slot, -1);
            continue;
        }
        ck_assert_int_ge(slot, 0);
        ck_assert_int_eq(miss, pos < 0);
        if (pos >= 0) {
            hits++;
            memmove(ref + pos, ref + pos + 1, sizeof(int) * (size_t)(nref - pos - 1));
            ref[nref - 1] = key;
        } else {
            misses++;
            int want_ev = -1;
            if (nref == NS) {
                for (int i = 0; i < nref; i++) if (!pinned[ref[i]]) { want_ev = ref[i]; memmove(ref + i, ref + i + 1, sizeof(int) * (size_t)(nref - i - 1)); nref--; break; }
            }
            ck_assert_int_eq(ev, want_ev);
            ref[nref++] = key;
        }
        if (!pinned[key]) { pinned[key] = 1; npinned++; }
        ck_assert_int_eq(eng_slot_table_peek(&t, key), slot);
        ck_assert_int_eq(t.slot_key[slot], key);
    }
    ck_assert_uint_eq(t.hits, hits);
    ck_assert_uint_eq(t.misses, misses);
    ck_assert_uint_gt(hits, 0);
    ck_assert_uint_gt(misses, NS);
    /* Dropping a slot forgets its key. */
    int miss, ev, s = eng_slot_table_get(&t, ref[0], &miss, &ev);
    if (s < 0) { eng_slot_table_unpin_all(&t); s = eng_slot_table_get(&t, ref[0], &miss, &ev); }
    eng_slot_table_drop(&t, s);
    ck_assert_int_eq(eng_slot_table_peek(&t, ref[0]), -1);
    ck_assert_int_eq(eng_slot_table_get(&t, NK, &miss, &ev), -1);
    eng_slot_table_free(&t);
    ck_assert_int_eq(eng_slot_table_init(&t, 0, 4), -1);
}
END_TEST

START_TEST(backend_selection)
{
    const char *sh = tu_shared_dir();
    if (!sh) { TU_SKIP_NO_SHARED("backend_selection"); return; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/fixtures/models/tiny-mixtral", sh);
    eng_backend_kind k;
    ck_assert_int_eq(eng_backend_parse("cuda", &k), 0);
    ck_assert_int_eq(k, ENG_BACKEND_CUDA);
    ck_assert_int_eq(eng_backend_parse("auto", &k), 0);
    ck_assert_int_eq(k, ENG_BACKEND_AUTO);
    ck_assert_int_eq(eng_backend_parse("cpu", &k), 0);
    ck_assert_int_eq(k, ENG_BACKEND_CPU);
    ck_assert_int_eq(eng_backend_parse("gpu", &k), -1);
    eng_engine *e = NULL;
    emoe_err err = {0};
    eng_open_opts o = {.n_threads = 1, .backend = ENG_BACKEND_CPU};
    ck_assert_msg(eng_open(dir, &o, &e, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_str_eq(eng_backend_name(e), "cpu");
    eng_backend_stats st;
    eng_backend_stats_get(e, &st);
    ck_assert_int_eq(st.has_device, 0);
    eng_free(e);
#ifndef EMOE_CUDA
    /* Without CUDA in the build: auto is the CPU, cuda is a clear error. */
    o.backend = ENG_BACKEND_AUTO;
    ck_assert_msg(eng_open(dir, &o, &e, &err) == EMOE_OK, "%s", err.msg);
    ck_assert_str_eq(eng_backend_name(e), "cpu");
    eng_free(e);
    o.backend = ENG_BACKEND_CUDA;
    e = (eng_engine *)1;
    ck_assert_int_eq(eng_open(dir, &o, &e, &err), EMOE_EUNSUP);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err.msg, "no CUDA support") != NULL, "%s", err.msg);
#endif
    o.backend = 99;
    ck_assert_int_eq(eng_open(dir, &o, &e, &err), EMOE_EINVAL);
    ck_assert_msg(strstr(err.msg, "unknown backend") != NULL, "%s", err.msg);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("moe_plan");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, plan_matches_bruteforce);
    tcase_add_test(tc, slot_table_lru_matches_reference);
    tcase_add_test(tc, backend_selection);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(make_suite)
