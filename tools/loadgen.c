/*
 * loadgen.c — open-loop load generation with libcurl multi, SSE parsing for
 * client-side TTFT/TPOT, summaries and reports. See loadgen.h.
 */
#include "tools/loadgen.h"
#include "engine/common.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the mix ---- */

static int class_index(lg_mix *m, const char *name)
{
    for (int i = 0; i < m->n_classes; i++)
        if (!strcmp(m->classes[i], name)) return i;
    if (m->n_classes >= LG_MAX_CLASSES) return -1;
    snprintf(m->classes[m->n_classes], sizeof m->classes[0], "%s", name);
    return m->n_classes++;
}

static double slo_ms(json_t *slo, const char *k)
{
    json_t *v = json_object_get(slo, k);
    return json_is_number(v) ? json_number_value(v) * 1e-3 : 0;
}

int lg_mix_load(const char *path, lg_mix *m, char *err, size_t errn)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) { snprintf(err, errn, "%s: cannot open", path); return -1; }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, cap_items = 0, with_at = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ')) line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!json_is_object(o)) {
            snprintf(err, errn, "%s:%d: not a JSON object (%s)", path, lineno, o ? "wrong type" : je.text);
            json_decref(o);
            goto fail;
        }
        if (!json_object_get(o, "prompt") && !json_object_get(o, "prompt_ids") && !json_object_get(o, "messages")) {
            snprintf(err, errn, "%s:%d: needs prompt, prompt_ids or messages", path, lineno);
            json_decref(o);
            goto fail;
        }
        if (m->n == cap_items) {
            cap_items = cap_items ? cap_items * 2 : 16;
            lg_item *ni = realloc(m->items, (size_t)cap_items * sizeof *ni);
            if (!ni) { json_decref(o); snprintf(err, errn, "out of memory"); goto fail; }
            m->items = ni;
        }
        lg_item *it = &m->items[m->n];
        memset(it, 0, sizeof *it);
        it->at = -1;
        const char *cls = json_string_value(json_object_get(o, "class"));
        if (!cls) cls = json_string_value(json_object_get(o, "task"));
        if (!cls) cls = "default";
        it->cls = class_index(m, cls);
        if (it->cls < 0) {
            snprintf(err, errn, "%s:%d: more than %d classes", path, lineno, LG_MAX_CLASSES);
            json_decref(o);
            goto fail;
        }
        json_t *w = json_object_get(o, "weight");
        it->weight = json_is_number(w) ? json_number_value(w) : 1.0;
        if (!(it->weight >= 0)) { snprintf(err, errn, "%s:%d: weight must be >= 0", path, lineno); json_decref(o); goto fail; }
        json_t *at = json_object_get(o, "at");
        if (json_is_number(at)) { it->at = json_number_value(at); with_at++; }
        json_t *slo = json_object_get(o, "slo");
        if (json_is_object(slo)) {
            it->ttft_slo = slo_ms(slo, "ttft_ms");
            it->tpot_slo = slo_ms(slo, "tpot_ms");
        }
        it->chat = json_object_get(o, "messages") != NULL;
        json_object_del(o, "class");
        json_object_del(o, "weight");
        json_object_del(o, "at");
        json_object_set_new(o, "stream", json_true());
        json_object_set_new(o, "stream_options", json_pack("{s:b}", "include_usage", 1));
        it->body = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (!it->body) { snprintf(err, errn, "out of memory"); goto fail; }
        m->n++;
    }
    free(line);
    fclose(f);
    if (m->n == 0) { snprintf(err, errn, "%s: no requests", path); lg_mix_free(m); return -1; }
    if (with_at && with_at != m->n) {
        snprintf(err, errn, "%s: either every line has \"at\" (a schedule) or none", path);
        lg_mix_free(m);
        return -1;
    }
    m->schedule = with_at == m->n;
    return 0;
fail:
    free(line);
    fclose(f);
    lg_mix_free(m);
    return -1;
}

void lg_mix_free(lg_mix *m)
{
    for (int i = 0; i < m->n; i++) free(m->items[i].body);
    free(m->items);
    memset(m, 0, sizeof *m);
}

/* ---- one request in flight ---- */

typedef struct xfer {
    CURL *h;
    struct curl_slist *hdr;
    lg_result *res;
    const lg_item *item;
    char *buf;            /* unparsed SSE bytes / error body */
    size_t n, cap;
    double t_first, t_last;
    int n_chunks;         /* content-bearing chunks */
    int usage_tokens;     /* from the usage chunk; -1 = none */
    char err_code[32];
    int stream_error;
} xfer;

static void sse_line(xfer *x, const char *line, size_t len)
{
    if (len < 6 || memcmp(line, "data: ", 6)) return;
    line += 6;
    len -= 6;
    if (len == 6 && !memcmp(line, "[DONE]", 6)) return;
    json_t *o = json_loadb(line, len, 0, NULL);
    if (!o) return;
    if (json_object_get(o, "error")) {
        x->stream_error = 1;
        json_decref(o);
        return;
    }
    json_t *u = json_object_get(o, "usage");
    if (json_is_object(u)) x->usage_tokens = (int)json_integer_value(json_object_get(u, "completion_tokens"));
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    if (ch) {
        json_t *t = json_object_get(ch, "text");
        if (!t) t = json_object_get(json_object_get(ch, "delta"), "content");
        json_t *ids = json_object_get(ch, "token_ids");
        size_t tl = json_is_string(t) ? json_string_length(t) : 0;
        if (tl > 0 || json_array_size(ids) > 0) {
            double now = emoe_now();
            if (x->n_chunks == 0) x->t_first = now;
            x->t_last = now;
            x->n_chunks++;
        }
    }
    json_decref(o);
}

static size_t on_data(char *p, size_t sz, size_t nm, void *user)
{
    xfer *x = user;
    size_t n = sz * nm;
    if (x->n + n + 1 > x->cap) {
        size_t nc = x->cap ? x->cap * 2 : 4096;
        while (nc < x->n + n + 1) nc *= 2;
        char *b = realloc(x->buf, nc);
        if (!b) return 0;
        x->buf = b;
        x->cap = nc;
    }
    memcpy(x->buf + x->n, p, n);
    x->n += n;
    x->buf[x->n] = 0;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    if (code != 200) return n; /* keep the error body whole */
    size_t start = 0;
    for (size_t i = 0; i < x->n; i++)
        if (x->buf[i] == '\n') {
            sse_line(x, x->buf + start, i - start);
            start = i + 1;
        }
    if (start) {
        memmove(x->buf, x->buf + start, x->n - start);
        x->n -= start;
    }
    return n;
}

static xfer *xfer_start(CURLM *mh, const lg_opts *o, const lg_item *it, lg_result *res)
{
    xfer *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->h = curl_easy_init();
    if (!x->h) { free(x); return NULL; }
    x->res = res;
    x->item = it;
    x->usage_tokens = -1;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", o->url, it->chat ? "/v1/chat/completions" : "/v1/completions");
    x->hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (o->api_key) {
        char a[1024];
        snprintf(a, sizeof a, "Authorization: Bearer %s", o->api_key);
        x->hdr = curl_slist_append(x->hdr, a);
    }
    curl_easy_setopt(x->h, CURLOPT_URL, url);
    curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->hdr);
    curl_easy_setopt(x->h, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->h, CURLOPT_CONNECTTIMEOUT, 10L);
    res->cls = it->cls;
    res->t_send = emoe_now();
    res->ttft = -1;
    if (curl_multi_add_handle(mh, x->h) != CURLM_OK) {
        curl_slist_free_all(x->hdr);
        curl_easy_cleanup(x->h);
        free(x);
        return NULL;
    }
    return x;
}

static void xfer_finish(CURLM *mh, xfer *x, CURLcode cc, int aborted)
{
    lg_result *r = x->res;
    long code = 0;
    curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
    r->http = cc == CURLE_OK ? (int)code : 0;
    r->t_done = emoe_now();
    if (aborted) {
        snprintf(r->reason, sizeof r->reason, "timeout");
    } else if (cc != CURLE_OK) {
        snprintf(r->reason, sizeof r->reason, "error");
    } else if (code != 200) {
        json_t *o = x->buf ? json_loadb(x->buf, x->n, 0, NULL) : NULL;
        const char *c = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
        snprintf(r->reason, sizeof r->reason, "%s", c ? c : code == 429 ? "rate_limited" : "error");
        json_decref(o);
    } else if (x->stream_error) {
        snprintf(r->reason, sizeof r->reason, "error");
    }
    if (x->n_chunks > 0) r->ttft = x->t_first - r->t_send;
    r->n_tokens = x->usage_tokens >= 0 ? x->usage_tokens : x->n_chunks;
    if (r->n_tokens >= 2 && x->n_chunks >= 2) r->tpot = (x->t_last - x->t_first) / (double)(r->n_tokens - 1);
    int ok = !r->reason[0] && r->http == 200;
    r->met_ttft = ok && (x->item->ttft_slo <= 0 || (r->ttft >= 0 && r->ttft <= x->item->ttft_slo));
    r->met_tpot = ok && (x->item->tpot_slo <= 0 || r->n_tokens < 2 || r->tpot <= x->item->tpot_slo);
    r->met = ok && r->met_ttft && r->met_tpot;
    curl_multi_remove_handle(mh, x->h);
    curl_slist_free_all(x->hdr);
    curl_easy_cleanup(x->h);
    free(x->buf);
    free(x);
}

/* ---- the run ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static double rng_unit(uint64_t *s) { return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }

typedef struct cache_ctr { double hits, misses; int ok; } cache_ctr;

static size_t to_buf(char *p, size_t sz, size_t nm, void *user)
{
    xfer *b = user; /* reuse buf/n/cap */
    size_t n = sz * nm;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 65536;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->buf, nc);
        if (!q) return 0;
        b->buf = q;
        b->cap = nc;
    }
    memcpy(b->buf + b->n, p, n);
    b->n += n;
    b->buf[b->n] = 0;
    return n;
}

static cache_ctr read_cache_metrics(const lg_opts *o)
{
    cache_ctr c = {0, 0, 0};
    CURL *h = curl_easy_init();
    if (!h) return c;
    xfer b = {0};
    char url[2048];
    snprintf(url, sizeof url, "%s/metrics", o->url);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_buf);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(h) == CURLE_OK && b.buf) {
        const char *hk = "emoe_expert_cache_hits_total{tier=\"device\"} ";
        const char *mk = "emoe_expert_cache_misses_total{tier=\"device\"} ";
        char *p = strstr(b.buf, hk), *q = strstr(b.buf, mk);
        if (p && q) {
            c.hits = strtod(p + strlen(hk), NULL);
            c.misses = strtod(q + strlen(mk), NULL);
            c.ok = 1;
        }
    }
    free(b.buf);
    curl_easy_cleanup(h);
    return c;
}

int lg_run_load(const lg_mix *m, const lg_opts *o, lg_run *out, char *err, size_t errn)
{
    memset(out, 0, sizeof *out);
    out->hit_rate = -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) { snprintf(err, errn, "curl_global_init failed"); return -1; }
    CURLM *mh = curl_multi_init();
    if (!mh) { snprintf(err, errn, "curl_multi_init failed"); curl_global_cleanup(); return -1; }
    int max_n = m->schedule ? m->n : o->count > 0 ? o->count : 0;
    if (!m->schedule && max_n == 0) {
        /* bounded by duration only: room for rate * duration * 2 + some */
        double d = o->rate * o->duration * 2 + 64;
        max_n = d > 1e7 ? 10000000 : (int)d;
    }
    out->res = calloc((size_t)max_n, sizeof *out->res);
    int *order = NULL;
    if (m->schedule) {
        order = malloc((size_t)m->n * sizeof *order);
        for (int i = 0; order && i < m->n; i++) order[i] = i;
        /* sort the schedule by time (insertion sort; mixes are small) */
        for (int i = 1; order && i < m->n; i++)
            for (int k = i; k > 0 && m->items[order[k]].at < m->items[order[k - 1]].at; k--) {
                int t = order[k]; order[k] = order[k - 1]; order[k - 1] = t;
            }
    }
    if (!out->res || (m->schedule && !order)) {
        free(order);
        curl_multi_cleanup(mh);
        curl_global_cleanup();
        snprintf(err, errn, "out of memory");
        return -1;
    }
    double wsum = 0;
    for (int i = 0; i < m->n; i++) wsum += m->items[i].weight;
    /* splitmix64 of the seed, so small seeds start well mixed */
    uint64_t rs = o->seed + 0x9E3779B97F4A7C15ull;
    rs = (rs ^ (rs >> 30)) * 0xBF58476D1CE4E5B9ull;
    rs = (rs ^ (rs >> 27)) * 0x94D049BB133111EBull;
    rs ^= rs >> 31;
    if (!rs) rs = 1;
    cache_ctr c0 = read_cache_metrics(o);
    double t0 = emoe_now(), next = t0, last_progress = t0, t_end_send = o->duration > 0 ? t0 + o->duration : 1e300;
    if (!m->schedule) next = t0 + (o->rate > 0 ? -log(rng_unit(&rs)) / o->rate : 0);
    else next = t0 + m->items[order[0]].at;
    int sent = 0, inflight = 0, done = 0;
    double t_stop = 0;
    double last_done = t0;
    xfer **live = calloc((size_t)max_n, sizeof *live);
    if (!live) { snprintf(err, errn, "out of memory"); free(order); curl_multi_cleanup(mh); curl_global_cleanup(); return -1; }
    for (;;) {
        double now = emoe_now();
        int sending = sent < max_n && now < t_end_send;
        while (sending && now >= next) {
            const lg_item *it;
            if (m->schedule) {
                it = &m->items[order[sent]];
            } else {
                double u = rng_unit(&rs) * wsum, acc = 0;
                int k = 0;
                for (; k < m->n - 1; k++) {
                    acc += m->items[k].weight;
                    if (u < acc) break;
                }
                it = &m->items[k];
            }
            xfer *x = xfer_start(mh, o, it, &out->res[sent]);
            if (!x) {
                out->res[sent].cls = it->cls;
                snprintf(out->res[sent].reason, sizeof out->res[sent].reason, "error");
                out->res[sent].ttft = -1;
                done++;
            } else {
                live[sent] = x;
                inflight++;
            }
            sent++;
            if (sent >= max_n) break;
            if (m->schedule) next = t0 + m->items[order[sent]].at;
            else next += o->rate > 0 ? -log(rng_unit(&rs)) / o->rate : 0;
            sending = now < t_end_send;
        }
        if (!sending && inflight == 0) break;
        if (!sending && t_stop == 0) t_stop = now;
        if (!sending && o->drain > 0 && now > t_stop + o->drain) {
            /* drain timeout: abort the rest */
            for (int i = 0; i < sent; i++)
                if (live[i]) { xfer_finish(mh, live[i], CURLE_OK, 1); live[i] = NULL; inflight--; done++; }
            break;
        }
        int running = 0;
        curl_multi_perform(mh, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(mh, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            xfer *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            if (!x) continue;
            int idx = (int)(x->res - out->res);
            xfer_finish(mh, x, msg->data.result, 0);
            live[idx] = NULL;
            inflight--;
            done++;
            last_done = emoe_now();
        }
        now = emoe_now();
        if (o->progress && now - last_progress >= 1.0) {
            last_progress = now;
            int rej = 0;
            for (int i = 0; i < sent; i++) if (out->res[i].http == 429) rej++;
            fprintf(stderr, "\r[%6.1fs] sent %d  done %d  in flight %d  429 %d   ", now - t0, sent, done, inflight, rej);
        }
        double wait = sending ? next - now : 0.1;
        if (wait > 0.1) wait = 0.1;
        if (wait < 0) wait = 0;
        curl_multi_poll(mh, NULL, 0, (int)(wait * 1000), NULL);
    }
    if (o->progress) fprintf(stderr, "\n");
    out->n = sent;
    out->t0 = t0;
    out->send_s = (sent > 0 ? out->res[sent - 1].t_send : t0) - t0;
    out->wall = last_done - t0;
    if (out->wall <= 0) out->wall = emoe_now() - t0;
    cache_ctr c1 = read_cache_metrics(o);
    if (c0.ok && c1.ok && (c1.hits - c0.hits) + (c1.misses - c0.misses) > 0)
        out->hit_rate = (c1.hits - c0.hits) / ((c1.hits - c0.hits) + (c1.misses - c0.misses));
    free(live);
    free(order);
    curl_multi_cleanup(mh);
    curl_global_cleanup();
    return 0;
}

void lg_run_free(lg_run *r)
{
    free(r->res);
    memset(r, 0, sizeof *r);
}

/* ---- summaries ---- */

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pcts(double *v, int n, double out[3])
{
    if (n == 0) { out[0] = out[1] = out[2] = -1; return; }
    qsort(v, (size_t)n, sizeof *v, dcmp);
    static const double q[3] = {0.50, 0.90, 0.99};
    for (int k = 0; k < 3; k++) {
        int i = (int)ceil(q[k] * n) - 1;
        out[k] = v[i < 0 ? 0 : i];
    }
}

void lg_summarize(const lg_run *r, int cls, lg_summary *s)
{
    memset(s, 0, sizeof *s);
    double *tt = malloc((size_t)(r->n ? r->n : 1) * sizeof *tt), *tp = malloc((size_t)(r->n ? r->n : 1) * sizeof *tp);
    int ntt = 0, ntp = 0;
    for (int i = 0; i < r->n; i++) {
        const lg_result *x = &r->res[i];
        if (cls >= 0 && x->cls != cls) continue;
        s->sent++;
        if (x->http == 200 && !x->reason[0]) s->completed++;
        else if (x->http == 429) {
            s->rejected++;
            int k = 0;
            for (; k < 4 && s->reasons[k][0]; k++)
                if (!strcmp(s->reasons[k], x->reason)) break;
            if (k < 4) {
                if (!s->reasons[k][0]) snprintf(s->reasons[k], sizeof s->reasons[k], "%s", x->reason);
                s->reason_n[k]++;
            }
        } else s->errors++;
        if (x->met) s->met++;
        if (tt && x->ttft >= 0 && x->http == 200) tt[ntt++] = x->ttft;
        if (tp && x->n_tokens >= 2 && x->http == 200 && x->tpot > 0) tp[ntp++] = x->tpot;
    }
    s->attainment = s->sent ? (double)s->met / s->sent : 0;
    s->goodput = r->wall > 0 ? s->met / r->wall : 0;
    pcts(tt, tt ? ntt : 0, s->ttft);
    pcts(tp, tp ? ntp : 0, s->tpot);
    free(tt);
    free(tp);
}

void lg_throughput_of(const lg_run *r, lg_throughput *t)
{
    memset(t, 0, sizeof *t);
    int completed = 0, arr = 0, comp = 0;
    double a = r->t0 + r->send_s / 2, b = r->t0 + r->send_s, last = r->t0;
    for (int i = 0; i < r->n; i++) {
        const lg_result *x = &r->res[i];
        if (x->t_send >= a && x->t_send < b) arr++;
        if (x->http != 200 || x->reason[0]) continue;
        completed++;
        if (x->t_done >= a && x->t_done < b) comp++;
        if (x->t_done > last) last = x->t_done;
    }
    double h = r->send_s / 2;
    t->arrival_rps = h > 0 ? arr / h : 0;
    t->completion_rps = h > 0 ? comp / h : 0;
    t->overall_rps = r->wall > 0 ? completed / r->wall : 0;
    t->drain_s = completed ? last - b : 0;
}

static void ms3(FILE *f, const double v[3])
{
    for (int k = 0; k < 3; k++) {
        if (v[k] < 0) fprintf(f, "%8s", "-");
        else fprintf(f, "%8.0f", v[k] * 1e3);
    }
}

void lg_report(const lg_mix *m, const lg_opts *o, const lg_run *r, FILE *f)
{
    fprintf(f, "%s, %d requests in %.1fs", m->schedule ? "schedule" : "Poisson", r->n, r->wall);
    if (!m->schedule) fprintf(f, " at %.2f req/s", o->rate);
    if (r->hit_rate >= 0) fprintf(f, ", device expert-cache hit rate %.1f%%", r->hit_rate * 100);
    lg_throughput tp;
    lg_throughput_of(r, &tp);
    fprintf(f, "\nthroughput: %.2f completed req/s overall; 2nd half of the arrival window: %.2f arrived, %.2f "
            "completed req/s; drain %.1fs", tp.overall_rps, tp.arrival_rps, tp.completion_rps, tp.drain_s);
    fprintf(f, "\n%-14s %5s %5s %5s %5s %7s %8s %24s %24s  %s\n", "class", "sent", "done", "met", "err", "attain",
            "goodput", "TTFT ms p50/p90/p99", "TPOT ms p50/p90/p99", "429s");
    for (int c = -1; c < m->n_classes; c++) {
        lg_summary s;
        lg_summarize(r, c, &s);
        if (c >= 0 && s.sent == 0) continue;
        fprintf(f, "%-14s %5d %5d %5d %5d %6.1f%% %8.2f ", c < 0 ? "all" : m->classes[c], s.sent, s.completed, s.met,
                s.errors, s.attainment * 100, s.goodput);
        ms3(f, s.ttft);
        ms3(f, s.tpot);
        fprintf(f, "  ");
        if (!s.rejected) fprintf(f, "0");
        for (int k = 0; k < 4 && s.reasons[k][0]; k++) fprintf(f, "%s%s=%d", k ? "," : "", s.reasons[k], s.reason_n[k]);
        fprintf(f, "\n");
    }
}

static json_t *pct_json(const double v[3])
{
    json_t *o = json_object();
    const char *k[3] = {"p50", "p90", "p99"};
    for (int i = 0; i < 3; i++) json_object_set_new(o, k[i], v[i] < 0 ? json_null() : json_real(v[i] * 1e3));
    return o;
}

static json_t *summary_json(const lg_summary *s)
{
    json_t *rej = json_object();
    for (int k = 0; k < 4 && s->reasons[k][0]; k++) json_object_set_new(rej, s->reasons[k], json_integer(s->reason_n[k]));
    return json_pack("{s:i, s:i, s:i, s:i, s:i, s:o, s:f, s:f, s:o, s:o}", "sent", s->sent, "completed", s->completed,
                     "met", s->met, "errors", s->errors, "rejected", s->rejected, "rejected_by_reason", rej,
                     "attainment", s->attainment, "goodput_rps", s->goodput, "ttft_ms", pct_json(s->ttft), "tpot_ms",
                     pct_json(s->tpot));
}

int lg_report_json(const lg_mix *m, const lg_opts *o, const lg_run *r, const char *label, const char *path)
{
    json_t *classes = json_object();
    for (int c = 0; c < m->n_classes; c++) {
        lg_summary s;
        lg_summarize(r, c, &s);
        json_object_set_new(classes, m->classes[c], summary_json(&s));
    }
    lg_summary all;
    lg_summarize(r, -1, &all);
    lg_throughput tp;
    lg_throughput_of(r, &tp);
    json_t *thr = json_pack("{s:f, s:f, s:f, s:f}", "arrival_rps_2nd_half", tp.arrival_rps, "completion_rps_2nd_half",
                            tp.completion_rps, "completed_rps", tp.overall_rps, "drain_s", tp.drain_s);
    json_t *root = json_pack("{s:s, s:s, s:f, s:i, s:f, s:f, s:o, s:o, s:o, s:o}", "label", label ? label : "",
                             "arrivals", m->schedule ? "schedule" : "poisson", "rate", o->rate, "requests", r->n,
                             "wall_s", r->wall, "send_s", r->send_s, "throughput", thr, "expert_cache_hit_rate",
                             r->hit_rate >= 0 ? json_real(r->hit_rate) : json_null(), "classes", classes, "all",
                             summary_json(&all));
    int rc = root ? json_dump_file(root, path, JSON_INDENT(2)) : -1;
    json_decref(root);
    return rc;
}
