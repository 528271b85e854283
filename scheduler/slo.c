/*
 * slo.c — the SLO-aware policy (least slack first, preemption, TPOT guard,
 * admission). Pure functions; see slo.h.
 */
#include "scheduler/slo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NO_DEADLINE_BAND (1L << 40)

double slo_step_time(const slo_est *e, int decode_rows, int prefill_tokens)
{
    return e->base_s + e->row_s * (double)decode_rows + e->tok_s * (double)prefill_tokens;
}

double slo_predict_ttft(const slo_est *e, const slo_view *v, int decode_rows, int prefill_chunk)
{
    int left = v->n_prompt - v->n_prefilled;
    if (v->n_gen > 0) return 0;
    if (prefill_chunk < 1) prefill_chunk = 1;
    double t = v->load_s;
    if (left <= 0) return t + slo_step_time(e, decode_rows + 1, 0);
    int full = left / prefill_chunk, rest = left % prefill_chunk;
    t += (double)full * slo_step_time(e, decode_rows, prefill_chunk);
    if (rest) t += slo_step_time(e, decode_rows, rest);
    return t;
}

double slo_slack(const slo_est *e, const slo_view *v, double now, int decode_rows, int prefill_chunk)
{
    if (v->ttft_deadline <= 0) return SLO_INF;
    return v->ttft_deadline - now - slo_predict_ttft(e, v, decode_rows, prefill_chunk);
}

double slo_predict_remaining(const slo_est *e, const slo_view *v, int decode_rows, int prefill_chunk)
{
    double t = slo_predict_ttft(e, v, decode_rows, prefill_chunk);
    int target = v->pred_out;
    if (v->n_gen >= target && v->max_out > v->n_gen) target = v->max_out;
    int out_left = target - (v->n_gen > 0 ? v->n_gen : 1);
    if (out_left < 0) out_left = 0;
    return t + (double)out_left * slo_step_time(e, decode_rows > 0 ? decode_rows : 1, 0);
}

int slo_attainable(const slo_est *e, const slo_view *v, double now, double wait_s, int decode_rows,
                   int prefill_chunk, double *predicted_s)
{
    double p = wait_s + slo_predict_ttft(e, v, decode_rows, prefill_chunk);
    if (predicted_s) *predicted_s = p;
    if (v->ttft_deadline <= 0) return 1;
    return now + p <= v->ttft_deadline;
}

/* 1 if active request a may be paused in favour of candidate c. */
static int preemptible(const slo_view *a, const slo_view *c)
{
    if (a->priority > c->priority) return 1;
    return a->priority == c->priority && !a->has_slo && c->has_slo;
}

double slo_wait_for_slot(const slo_view *v, int n, const slo_view *c, const slo_est *e, const slo_limits *lim)
{
    int active = 0, paused = 0, rows = 0, victim = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].paused) paused++;
        if (!v[i].active) continue;
        active++;
        if (v[i].n_prefilled >= v[i].n_prompt) rows++;
        if (preemptible(&v[i], c)) victim = 1;
    }
    if (active < lim->max_running) return 0;
    if (victim && c->ttft_deadline > 0 && paused < lim->max_paused) return 0;
    double w = SLO_INF;
    int chunk = lim->prefill_chunk > 0 ? lim->prefill_chunk : 1;
    for (int i = 0; i < n; i++) {
        if (!v[i].active) continue;
        double r = slo_predict_remaining(e, &v[i], rows, chunk);
        if (r < w) w = r;
    }
    return w;
}

typedef struct key {
    int idx;
    double slack;
    long band;       /* floor(slack / SLO_SIMILAR_S); LONG_MAX-ish without a deadline */
    double load_s;
    int no_slo;
    int priority;
    double arrival;
} key;

static int key_cmp(const void *pa, const void *pb)
{
    const key *a = pa, *b = pb;
    if (a->band != b->band) return a->band < b->band ? -1 : 1;
    if (a->load_s != b->load_s) return a->load_s < b->load_s ? -1 : 1;
    if (a->slack != b->slack) return a->slack < b->slack ? -1 : 1;
    if (a->no_slo != b->no_slo) return a->no_slo - b->no_slo;
    if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
    if (a->arrival != b->arrival) return a->arrival < b->arrival ? -1 : 1;
    return a->idx - b->idx;
}

static key make_key(const slo_est *e, const slo_view *v, int idx, double now, int rows, int chunk)
{
    key k = {0};
    k.idx = idx;
    k.slack = slo_slack(e, v, now, rows, chunk);
    if (k.slack >= SLO_INF) {
        k.band = NO_DEADLINE_BAND;
        k.load_s = 0; /* no deadline: priority and arrival decide, not residency */
    } else if (k.slack < 0) {
        /* Predicted to miss its TTFT even if served now: after every request
         * that can still meet one (serving it first would only make them
         * miss too), before the requests without a deadline. */
        k.band = NO_DEADLINE_BAND - 1;
        k.load_s = 0;
    } else {
        double b = floor(k.slack / SLO_SIMILAR_S);
        if (b < -(double)(1L << 39)) b = -(double)(1L << 39);
        if (b > (double)(1L << 39)) b = (double)(1L << 39);
        k.band = (long)b;
        k.load_s = v->load_s;
    }
    k.no_slo = !v->has_slo;
    k.priority = v->priority;
    k.arrival = v->arrival;
    return k;
}


/* Who may preempt whom while placing candidates in slo_queue_ttft: the
 * running request slo_plan_step would pause for candidate x. */
static int pick_victim(const slo_view *v, const int *occ, int ns, const slo_view *x)
{
    int best = -1;
    for (int j = 0; j < ns; j++) {
        int i = occ[j];
        if (i < 0 || !preemptible(&v[i], x)) continue;
        int b = best < 0 ? -1 : occ[best];
        if (b < 0 || v[i].priority > v[b].priority ||
            (v[i].priority == v[b].priority &&
             (v[i].has_slo < v[b].has_slo || (v[i].has_slo == v[b].has_slo && v[i].arrival > v[b].arrival))))
            best = j;
    }
    return best;
}

/* The earliest time from now at which slo_plan_step would preempt for a
 * candidate of this slack that has no slot before st: it re-plans every
 * iteration and preempts once the candidate's slack (slack0 - tau) is below
 * the time until the first occupied slot frees (E(tau) - tau), i.e. once
 * E(tau) > slack0, where E(tau) is the earliest end among the requests
 * holding the slots at tau (segments sb <= tau < se). E only grows with tau
 * (a slot's next occupant ends later), so the walk jumps from end to end.
 * Returns -1 if that never happens before st or before the slack runs out,
 * or once *work (segment visits left for the whole queue walk, so a huge
 * queue stays cheap) is spent: then only preemption now counts, as before. */
static double preempt_time(const double *sb, const double *se, int nseg, double slack0, double st, long *work)
{
    double tau = 0;
    for (int guard = 0; guard <= nseg + 1; guard++) {
        if ((*work -= nseg) < 0) return -1;
        double e = SLO_INF;
        for (int i = 0; i < nseg; i++)
            if (sb[i] <= tau && tau < se[i] && se[i] < e) e = se[i];
        if (e > slack0) return tau;
        tau = e;
        if (tau >= st || tau > slack0) return -1;
    }
    return -1;
}

double slo_queue_ttft(const slo_view *v, int n, const slo_view *c, const slo_est *e, const slo_limits *lim, double now,
                      double *wait_s)
{
    int chunk = lim->prefill_chunk > 0 ? lim->prefill_chunk : 1;
    int n_active = 0, n_paused = 0, n_dec = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].active) {
            n_active++;
            if (v[i].n_prefilled >= v[i].n_prompt) n_dec++;
        } else if (v[i].paused) {
            n_paused++;
        }
    }
    int ns = lim->max_running > n_active ? lim->max_running : n_active;
    size_t nn = (size_t)(n > 0 ? n : 1), nsz = (size_t)(ns > 0 ? ns : 1), nseg_max = nsz + nn + 1;
    key *ahead = malloc(nn * sizeof *ahead);
    double *t = malloc(nsz * sizeof *t);
    double *start = malloc(nn * sizeof *start);
    int *occ = malloc(nsz * sizeof *occ);
    int *cur = malloc(nsz * sizeof *cur);          /* the segment holding each slot now */
    double *sb = malloc(nseg_max * sizeof *sb);    /* segments: who holds a slot from sb to se */
    double *se = malloc(nseg_max * sizeof *se);
    double own = slo_predict_ttft(e, c, n_dec, chunk);
    if (!ahead || !t || !start || !occ || !cur || !sb || !se) {
        free(ahead); free(t); free(start); free(occ); free(cur); free(sb); free(se);
        double w = slo_wait_for_slot(v, n, c, e, lim);
        if (wait_s) *wait_s = w;
        return w + own;
    }
    /* The order: c goes after every candidate whose key sorts before its own
     * (c arrives last, so it loses every tie). */
    key kc = make_key(e, c, n, now, n_dec, chunk);
    int na = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].active) continue;
        key k = make_key(e, &v[i], i, now, n_dec, chunk);
        if (key_cmp(&k, &kc) < 0) ahead[na++] = k;
    }
    qsort(ahead, (size_t)na, sizeof *ahead, key_cmp);
    /* The slots: free ones now, running requests until their predicted end. */
    int k = 0, nseg = 0;
    double slot_free = SLO_INF; /* as slo_plan_step sees it now: the first running request to end */
    for (int i = 0; i < n; i++)
        if (v[i].active) {
            t[k] = slo_predict_remaining(e, &v[i], n_dec, chunk);
            if (t[k] < slot_free) slot_free = t[k];
            sb[nseg] = 0;
            se[nseg] = t[k];
            cur[k] = nseg++;
            occ[k++] = i;
        }
    for (; k < ns; k++) { t[k] = 0; occ[k] = -1; cur[k] = -1; }
    int preempt_left = lim->max_paused - n_paused;
    long work = 1L << 20;
    double w = 0;
    for (int a = 0; a <= na; a++) {
        const slo_view *x = a < na ? &v[ahead[a].idx] : c;
        double slack = a < na ? ahead[a].slack : kc.slack;
        int j = 0;
        for (int s = 1; s < ns; s++)
            if (t[s] < t[j]) j = s;
        double st = ns > 0 ? t[j] : SLO_INF;
        /* slo_plan_step preempts for a candidate with a TTFT SLO that would
         * miss it waiting for a slot and can still meet it if served now; it
         * re-plans every iteration, so a candidate that does not qualify now
         * (the first slot to free is near) may qualify once a request queued
         * ahead of it took that slot: preempt_time(). */
        if (st > 0 && slack < SLO_INF && slack >= 0 && (slack < slot_free || slack < st) && preempt_left > 0) {
            /* now: its slack is below the time until the first running
             * request ends, as slo_plan_step computes it this iteration */
            double tau = slack < slot_free ? 0 : preempt_time(sb, se, nseg, slack, st, &work);
            int vj = tau >= 0 ? pick_victim(v, occ, ns, x) : -1;
            if (vj >= 0) {
                j = vj;
                st = tau;
                preempt_left--;
                if (cur[j] >= 0) se[cur[j]] = tau; /* the victim is paused at tau */
            }
        }
        if (a == na) { w = st; break; }
        start[a] = st;
        t[j] = st + slo_predict_remaining(e, x, n_dec, chunk);
        occ[j] = -1;
        sb[nseg] = st;
        se[nseg] = t[j];
        cur[j] = nseg++;
    }
    /* Prompts ahead of c still prefilling when it starts share its steps. */
    double extra = 0;
    for (int a = 0; a < na; a++) {
        const slo_view *x = &v[ahead[a].idx];
        int left = x->n_prompt - x->n_prefilled;
        if (left <= 0 || start[a] > w || start[a] + slo_predict_ttft(e, x, n_dec, chunk) <= w) continue;
        extra += e->tok_s * (double)left;
    }
    free(ahead); free(t); free(start); free(occ); free(cur); free(sb); free(se);
    if (wait_s) *wait_s = w;
    return w + own + extra;
}

/* Task-aware batching among the sorted candidates without a deadline: in a
 * run of equal (no_slo, priority), a cold request (its task not running) lets
 * the first hot one among the next SLO_HOT_WINDOW - 1 go first if that one
 * arrived less than SLO_HOT_SPAN_S after it. */
static void hot_first(key *c, int n, const slo_view *v)
{
    for (int i = 0; i < n; i++) {
        if (c[i].band != NO_DEADLINE_BAND || v[c[i].idx].task_hot) continue;
        for (int j = i + 1; j < n && j < i + SLO_HOT_WINDOW; j++) {
            if (c[j].no_slo != c[i].no_slo || c[j].priority != c[i].priority) break;
            if (c[j].arrival - c[i].arrival >= SLO_HOT_SPAN_S) break;
            if (!v[c[j].idx].task_hot) continue;
            key h = c[j];
            memmove(&c[i + 1], &c[i], (size_t)(j - i) * sizeof *c);
            c[i] = h;
            break;
        }
    }
}

int slo_plan_step(const slo_view *v, int n, const slo_est *e, const slo_limits *lim, double now, slo_plan *out)
{
    out->n_admit = out->n_pause = out->n_order = 0;
    out->max_decode_rows = 0;
    out->prefill_budget = 0;
    out->step_cap_s = 0;
    out->deadline_prefill_only = 0;
    if (n <= 0) return 0;
    key *cand = malloc((size_t)n * sizeof *cand);
    key *act = malloc((size_t)n * sizeof *act);
    char *state = malloc((size_t)n); /* 0 candidate, 1 active, 2 paused now, 3 other */
    if (!cand || !act || !state) {
        free(cand); free(act); free(state);
        return -1;
    }
    int n_active = 0, n_paused = 0, n_dec = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].active) {
            n_active++;
            if (v[i].n_prefilled >= v[i].n_prompt) n_dec++;
        } else if (v[i].paused) {
            n_paused++;
        }
    }
    int chunk = lim->prefill_chunk > 0 ? lim->prefill_chunk : 1;
    int nc = 0;
    for (int i = 0; i < n; i++) {
        state[i] = v[i].active ? 1 : 3;
        if (!v[i].active) {
            cand[nc++] = make_key(e, &v[i], i, now, n_dec, chunk);
            state[i] = 0;
        }
    }
    qsort(cand, (size_t)nc, sizeof *cand, key_cmp);
    hot_first(cand, nc, v);
    /* Admission into free slots, tightest first. */
    int ci = 0;
    while (ci < nc && n_active < lim->max_running) {
        int i = cand[ci++].idx;
        out->admit[out->n_admit++] = i;
        if (v[i].paused) n_paused--;
        state[i] = 1;
        n_active++;
    }
    /* Preemption: candidates with a TTFT SLO that would miss it waiting for a slot. */
    if (ci < nc) {
        double slot_free = SLO_INF;
        for (int i = 0; i < n; i++)
            if (state[i] == 1) {
                double r = slo_predict_remaining(e, &v[i], n_dec, chunk);
                if (r < slot_free) slot_free = r;
            }
        for (; ci < nc; ci++) {
            int c = cand[ci].idx;
            double slack = cand[ci].slack;
            if (slack >= SLO_INF || slack < 0 || slack >= slot_free) continue;
            if (n_paused >= lim->max_paused) break;
            /* The victim: the least important active request c may displace
             * (highest priority number, then no SLO, then latest arrival),
             * never one admitted in this plan. */
            int victim = -1;
            for (int i = 0; i < n; i++) {
                if (state[i] != 1 || !v[i].active || !preemptible(&v[i], &v[c])) continue;
                if (victim < 0 || v[i].priority > v[victim].priority ||
                    (v[i].priority == v[victim].priority &&
                     (v[i].has_slo < v[victim].has_slo ||
                      (v[i].has_slo == v[victim].has_slo && v[i].arrival > v[victim].arrival))))
                    victim = i;
            }
            if (victim < 0) continue;
            state[victim] = 2;
            out->pause[out->n_pause++] = victim;
            n_paused++;
            state[c] = 1;
            out->admit[out->n_admit++] = c;
        }
    }
    /* Order of the active set for this step. */
    int na = 0, rows = 0, slo_rows = 0, urgent = 0;
    double cap = 0;
    for (int i = 0; i < n; i++) {
        if (state[i] != 1) continue;
        act[na++] = make_key(e, &v[i], i, now, n_dec, chunk);
        if (v[i].ttft_deadline > now && v[i].n_gen == 0 && v[i].n_prefilled < v[i].n_prompt) urgent = 1;
        if (v[i].n_prefilled >= v[i].n_prompt) {
            rows++;
            if (v[i].has_slo) slo_rows++;
            if (v[i].tpot_s > 0 && (cap == 0 || v[i].tpot_s < cap)) cap = v[i].tpot_s;
        }
    }
    qsort(act, (size_t)na, sizeof *act, key_cmp);
    for (int k = 0; k < na; k++) out->order[out->n_order++] = act[k].idx;
    /* TPOT guard. */
    int budget = lim->max_batch_tokens;
    out->max_decode_rows = rows;
    if (cap > 0) {
        out->step_cap_s = cap;
        int fit = e->row_s > 0 ? (int)floor((cap - e->base_s) / e->row_s) : rows;
        if (fit < slo_rows) fit = slo_rows;
        if (fit < 1) fit = 1;
        if (fit < rows) out->max_decode_rows = fit;
        double left = cap - slo_step_time(e, out->max_decode_rows, 0);
        double pf = e->tok_s > 0 ? floor(left / e->tok_s + 1e-9) : (double)budget;
        if (pf < SLO_MIN_PREFILL) pf = SLO_MIN_PREFILL;
        if (pf > (double)budget) pf = (double)budget;
        out->prefill_budget = (int)pf;
    } else {
        out->prefill_budget = budget;
    }
    out->deadline_prefill_only = urgent;
    if (out->prefill_budget > budget - out->max_decode_rows) out->prefill_budget = budget - out->max_decode_rows;
    if (out->prefill_budget < 0) out->prefill_budget = 0;
    free(cand);
    free(act);
    free(state);
    return 0;
}
