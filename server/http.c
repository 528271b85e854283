/*
 * http.c — libmicrohttpd plumbing: routing, auth, body limits, CORS, the
 * generation endpoints (JSON and SSE), tokenize/detokenize, models, health.
 * See server.h for the threading model.
 *
 * Per-request state (struct conn) is created on the first access-handler call
 * and freed in MHD_OPTION_NOTIFY_COMPLETED. A streaming response owns its own
 * state (struct stream) that the response's free callback releases; that is
 * where a stream whose client went away gets cancelled.
 */
#include "server/server.h"
#include "server/request.h"
#include "server/oai_output.h"
#include "server/oai_gen.h"
#include "server/conn_guard.h"
#include "server/framing.h"
#include "server/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "scheduler/textstream.h"

#define KEYS_MAX (CFG_LIST_MAX + 16)

struct srv {
    struct MHD_Daemon *d;
    srv_guard *guard;            /* read and keep-alive deadlines (conn_guard.c) */
    int port;
    pthread_mutex_t mu;          /* guards cfg and keys */
    emoe_config cfg;
    char keys[KEYS_MAX];         /* newline-separated; "" = no auth */
    atomic_int ready, draining, inflight;
    eng_engine *e;
    sched *sc;
    srv_text *text;
    srv_metrics_fn metrics_extra;
    void *metrics_extra_user;
    char served[CFG_STR_MAX];
    int ctx;
    int vocab;
    uint64_t id_base;
    atomic_ullong next_id;
    time_t started;
    /* counters for /metrics */
    pthread_mutex_t stat_mu;
    uint64_t http_by_class[6];   /* 1xx..5xx by first digit */
    uint64_t disconnects;
    char replica[CFG_STR_MAX + 16]; /* X-Emoe-Replica: [server] replica_id or hostname:port */
};

enum route {
    R_NOTFOUND = 0, R_HEALTH, R_METRICS, R_MODELS, R_MODEL_ONE, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE,
};

typedef struct conn {
    srv *s;
    uint64_t rid;
    double t0;
    enum route route;
    sched_buf body;
    int too_large;
    int responded;
    int status;
    int is_post;
    /* for the request log */
    int n_prompt, n_gen;
    const char *finish;
    char url[128];
    char method[8];
} conn;

typedef struct stream {
    srv *s;
    sched_req *r;
    srv_kind kind;
    uint64_t rid;
    char id[40];
    time_t created;
    int include_usage;
    int fd;
    int sent_first;
    int eof;
    int finished;
    double t0, last_send;
    sched_buf out;
    size_t out_pos;
    int n_prompt, n_gen;
    sched_finish finish;
    int log_prompts;
    sched_buf text_log;
    int return_ids;
    /* n choices (r = rs[0]), logprobs, tool calls (issue 15) */
    int n_choices;
    sched_req *rs[SRV_MAX_N];
    struct {
        int n_gen, n_ids_sent, n_lp_sent, done, echoed;
        size_t text_off;
        sched_buf held;          /* tools: the whole text; [0, emitted) was sent as content */
        size_t emitted;
    } ch[SRV_MAX_N];
    oai_out oo;
    unsigned long long seq;
    /* completions echo: the prompt first */
    int32_t *echo_ids;
    int n_echo_ids;
    char *echo_text;
    size_t echo_len;
    int status;          /* for emoe_http_responses_total: 200, or the error a started stream ended with */
} stream;

/* ---- helpers ---- */

static void count_status(srv *s, int status)
{
    int k = status / 100;
    if (k < 1 || k > 5) k = 0;
    pthread_mutex_lock(&s->stat_mu);
    s->http_by_class[k]++;
    pthread_mutex_unlock(&s->stat_mu);
}

static void add_common_headers(srv *s, struct MHD_Connection *mc, struct MHD_Response *resp, const conn *c)
{
    char rid[32];
    snprintf(rid, sizeof rid, "%llu", (unsigned long long)c->rid);
    MHD_add_response_header(resp, "X-Request-Id", rid);
    MHD_add_response_header(resp, "X-Emoe-Replica", s->replica);
    const char *origin = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin");
    if (!origin) return;
    char cors[CFG_LIST_MAX];
    pthread_mutex_lock(&s->mu);
    snprintf(cors, sizeof cors, "%s", s->cfg.server.cors_origins);
    pthread_mutex_unlock(&s->mu);
    if (!cors[0]) return;
    if (cfg_list_has(cors, "*")) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
    } else if (cfg_list_has(cors, origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
}

/* Queues body (malloc'd, taken) with status. */
static enum MHD_Result respond(conn *c, struct MHD_Connection *mc, int status, const char *ctype, char *body,
                               size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(body); return MHD_NO; }
    MHD_add_response_header(resp, "Content-Type", ctype);
    add_common_headers(c->s, mc, resp, c);
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 429 || status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 405) {
        const char *allow = (c->route == R_CHAT || c->route == R_COMPLETIONS || c->route == R_TOKENIZE ||
                             c->route == R_DETOKENIZE) ? "POST, OPTIONS" : "GET, OPTIONS";
        MHD_add_response_header(resp, "Allow", allow);
    }
    enum MHD_Result rc = MHD_queue_response(mc, (unsigned int)status, resp);
    MHD_destroy_response(resp);
    c->responded = 1;
    c->status = status;
    return rc;
}

static enum MHD_Result respond_json(conn *c, struct MHD_Connection *mc, int status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return MHD_NO;
    size_t n = strlen(s);
    char *b = realloc(s, n + 2);
    if (b) { s = b; s[n++] = '\n'; s[n] = 0; }
    return respond(c, mc, status, "application/json", s, n);
}

static enum MHD_Result respond_error(conn *c, struct MHD_Connection *mc, const srv_error *e)
{
    char *s = srv_error_json(e);
    if (!s) return MHD_NO;
    LOG_DEBUG("req=%llu error %d: %s", (unsigned long long)c->rid, e->http, e->message);
    return respond(c, mc, e->http, "application/json", s, strlen(s));
}

static enum MHD_Result fail(conn *c, struct MHD_Connection *mc, int http, const char *type, const char *code,
                            const char *param, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static enum MHD_Result fail(conn *c, struct MHD_Connection *mc, int http, const char *type, const char *code,
                            const char *param, const char *fmt, ...)
{
    srv_error e = {0};
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_fail(&e, http, type, code, param, "%s", msg);
    return respond_error(c, mc, &e);
}

/* Constant-time comparison of a presented key with every configured key. */
static int auth_ok(srv *s, struct MHD_Connection *mc)
{
    pthread_mutex_lock(&s->mu);
    if (!s->keys[0]) { pthread_mutex_unlock(&s->mu); return 1; }
    char keys[KEYS_MAX];
    memcpy(keys, s->keys, sizeof keys);
    pthread_mutex_unlock(&s->mu);
    const char *h = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    const char *p = h + 7;
    while (*p == ' ') p++;
    size_t plen = strlen(p);
    int ok = 0;
    for (const char *k = keys; *k;) {
        const char *nl = strchr(k, '\n');
        size_t klen = nl ? (size_t)(nl - k) : strlen(k);
        unsigned diff = (unsigned)(klen ^ plen);
        for (size_t i = 0; i < klen; i++) diff |= (unsigned char)k[i] ^ (unsigned char)(i < plen ? p[i] : 0);
        ok |= diff == 0;
        k += klen + (nl ? 1 : 0);
    }
    return ok;
}

static int client_gone(int fd)
{
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static int conn_fd(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? (int)ci->connect_fd : -1;
}

static enum route route_of(const char *url)
{
    if (!strcmp(url, "/health")) return R_HEALTH;
    if (!strcmp(url, "/metrics")) return R_METRICS;
    if (!strcmp(url, "/v1/models")) return R_MODELS;
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return R_MODEL_ONE;
    if (!strcmp(url, "/v1/chat/completions")) return R_CHAT;
    if (!strcmp(url, "/v1/completions")) return R_COMPLETIONS;
    if (!strcmp(url, "/tokenize")) return R_TOKENIZE;
    if (!strcmp(url, "/detokenize")) return R_DETOKENIZE;
    return R_NOTFOUND;
}

static int route_is_post(enum route r)
{
    return r == R_CHAT || r == R_COMPLETIONS || r == R_TOKENIZE || r == R_DETOKENIZE;
}

static json_t *usage_json(int n_prompt, int n_gen)
{
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", n_prompt, "completion_tokens", n_gen, "total_tokens",
                     n_prompt + n_gen);
}

static json_t *model_json(srv *s)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", s->served, "object", "model", "created",
                     (json_int_t)s->started, "owned_by", "emoe", "max_model_len", s->ctx);
}

/* ---- prompt building ---- */

/* Turns a parsed request into prompt ids; returns 0 or -1 with e set. */
static int build_prompt(srv *s, srv_gen_req *g, int32_t **ids, int *n, srv_error *e)
{
    emoe_err err = {0};
    *ids = NULL;
    *n = 0;
    if (g->messages) {
        char *text = NULL;
        if (srv_text_chat(s->text, g->messages, g->add_generation_prompt, g->template_kwargs, &text, &err) != EMOE_OK)
            return srv_fail(e, 400, "invalid_request_error", NULL, "messages", "%s", err.msg);
        size_t tlen = strlen(text), lim = srv_text_prompt_limit(s->text);
        if (lim && tlen > lim) {
            free(text);
            return srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                            "the rendered chat is %zu bytes; no text longer than %zu bytes fits this model's context "
                            "of %d tokens", tlen, lim, s->ctx);
        }
        int over = 0;
        emoe_status st = srv_text_encode_max(s->text, text, tlen, 0, s->ctx, ids, n, &over, &err);
        free(text);
        if (st != EMOE_OK && over)
            return srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                            "This model's maximum context length is %d tokens. However, the messages are longer "
                            "than that (tokenizing stopped at %d tokens).", s->ctx, s->ctx);
        if (st != EMOE_OK) return srv_fail(e, 400, "invalid_request_error", NULL, "messages", "%s", err.msg);
    } else if (g->prompt) {
        size_t lim = srv_text_prompt_limit(s->text);
        if (lim && g->prompt_len > lim)
            return srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", "prompt",
                            "the prompt is %zu bytes; no text longer than %zu bytes fits this model's context of %d "
                            "tokens", g->prompt_len, lim, s->ctx);
        int over = 0;
        if (srv_text_encode_max(s->text, g->prompt, g->prompt_len, g->add_special_tokens, s->ctx, ids, n, &over, &err) !=
            EMOE_OK) {
            if (over)
                return srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", "prompt",
                                "This model's maximum context length is %d tokens. However, the prompt is longer than "
                                "that (tokenizing stopped at %d tokens).", s->ctx, s->ctx);
            return srv_fail(e, 400, "invalid_request_error", NULL, "prompt", "%s", err.msg);
        }
    } else if (g->prompt_ids) {
        *ids = malloc((size_t)(g->n_prompt_ids ? g->n_prompt_ids : 1) * sizeof **ids);
        if (!*ids) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        memcpy(*ids, g->prompt_ids, (size_t)g->n_prompt_ids * sizeof **ids);
        *n = g->n_prompt_ids;
    }
    for (int i = 0; i < *n; i++)
        if ((*ids)[i] < 0 || (*ids)[i] >= s->vocab) {
            int bad = (*ids)[i];
            free(*ids);
            *ids = NULL;
            return srv_fail(e, 400, "invalid_request_error", NULL, "prompt",
                            "prompt[%d]: token id %d is outside the vocabulary [0, %d)", i, bad, s->vocab);
        }
    return 0;
}

/* ---- SSE ---- */

static void sse_event(stream *st, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) return;
    sched_buf_append(&st->out, "data: ", 6);
    sched_buf_append(&st->out, s, strlen(s));
    sched_buf_append(&st->out, "\n\n", 2);
    free(s);
}

static json_t *chunk_base(stream *st)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", st->id, "object",
                     st->kind == SRV_KIND_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                     (json_int_t)st->created, "model", st->s->served);
}

/* Choice i's generated ids not yet sent (return_token_ids), or NULL. */
static json_t *new_ids(stream *st, int i)
{
    if (!st->return_ids) return NULL;
    json_t *arr = json_array();
    int n = st->ch[i].n_gen;
    if (n > st->ch[i].n_ids_sent) {
        int32_t *buf = malloc((size_t)n * sizeof *buf);
        if (buf) {
            n = sched_req_tokens(st->rs[i], buf, n);
            for (int k = st->ch[i].n_ids_sent; k < n; k++) json_array_append_new(arr, json_integer(buf[k]));
            st->ch[i].n_ids_sent = n;
            free(buf);
        }
    }
    return arr;
}

/* A chunk with choice i; text may be NULL; finish NULL = null; calls: tool
 * call deltas (chat) or NULL. */
static void sse_choice(stream *st, int i, const char *text, size_t len, int with_role, const char *finish, json_t *calls)
{
    if (st->echo_text && !st->ch[i].echoed) {
        /* echo: one chunk with the prompt (and its log-probabilities) first */
        st->ch[i].echoed = 1;
        size_t off = 0;
        json_t *lp = st->oo.logprobs
                         ? oai_prompt_logprobs_json(&st->oo, st->rs[i], st->echo_ids, st->n_echo_ids, &off, NULL)
                         : NULL;
        json_t *o = chunk_base(st);
        json_t *c = json_pack("{s:i, s:s%, s:o, s:n}", "index", i, "text", st->echo_text, st->echo_len, "logprobs",
                              lp ? lp : json_null(), "finish_reason");
        json_object_set_new(o, "choices", json_pack("[o]", c));
        if (st->include_usage) json_object_set_new(o, "usage", json_null());
        sse_event(st, o);
        st->ch[i].text_off = st->echo_len;
    }
    json_t *o = chunk_base(st), *choice;
    json_t *lp = json_null();
    if (st->oo.logprobs && st->ch[i].n_gen > st->ch[i].n_lp_sent) {
        lp = oai_logprobs_json(&st->oo, st->rs[i], st->ch[i].n_lp_sent, st->ch[i].n_gen, &st->ch[i].text_off);
        st->ch[i].n_lp_sent = st->ch[i].n_gen;
        if (!lp) lp = json_null();
    }
    if (st->kind == SRV_KIND_CHAT) {
        json_t *delta = json_object();
        if (with_role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", json_stringn(text, len));
        if (calls) json_object_set_new(delta, "tool_calls", calls);
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", i, "delta", delta, "logprobs", lp, "finish_reason",
                           finish ? json_string(finish) : json_null());
    } else {
        json_decref(calls);
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", i, "text", json_stringn(text ? text : "", text ? len : 0),
                           "logprobs", lp, "finish_reason", finish ? json_string(finish) : json_null());
    }
    json_t *ids = new_ids(st, i);
    if (ids && choice) json_object_set_new(choice, "token_ids", ids);
    else json_decref(ids);
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    if (st->include_usage) json_object_set_new(o, "usage", json_null());
    sse_event(st, o);
}

/* Tools: the held text of choice i as content and/or tool-call deltas, then
 * its finish chunk ("tool_calls" when calls were found). */
static void sse_finish_choice(stream *st, int i, sched_finish f)
{
    const char *fin = sched_finish_name(f);
    if (st->oo.tools) {
        size_t clen = 0;
        json_t *calls = oai_tool_calls(&st->oo, st->ch[i].held.p, st->ch[i].held.n, &clen, st->seq + (unsigned)i);
        size_t em = st->ch[i].emitted;
        if (calls) {
            for (size_t k = 0; k < json_array_size(calls); k++)
                json_object_set_new(json_array_get(calls, k), "index", json_integer((json_int_t)k));
            if (clen > em) sse_choice(st, i, st->ch[i].held.p + em, clen - em, 0, NULL, NULL);
            sse_choice(st, i, NULL, 0, 0, NULL, calls);
            fin = "tool_calls";
        } else if (st->ch[i].held.n > em) {
            sse_choice(st, i, st->ch[i].held.p + em, st->ch[i].held.n - em, 0, NULL, NULL);
        }
        st->ch[i].emitted = st->ch[i].held.n;
    }
    sse_choice(st, i, NULL, 0, 0, fin, NULL);
}

static void stream_log(stream *st, const char *outcome)
{
    LOG_INFO("req=%llu stream %s prompt_tokens=%d completion_tokens=%d finish=%s time=%.3fs",
             (unsigned long long)st->rid, st->kind == SRV_KIND_CHAT ? "chat" : "completion", st->n_prompt, st->n_gen,
             outcome, emoe_now() - st->t0);
    if (st->log_prompts && st->text_log.n)
        LOG_INFO("req=%llu output: %.*s", (unsigned long long)st->rid, (int)(st->text_log.n > 4000 ? 4000 : st->text_log.n),
                 st->text_log.p);
}

static void stream_cancel_all(stream *st)
{
    for (int i = 0; i < st->n_choices; i++) sched_req_cancel(st->rs[i]);
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *st = cls;
    for (;;) {
        if (st->out_pos < st->out.n) {
            size_t k = st->out.n - st->out_pos;
            if (k > max) k = max;
            memcpy(buf, st->out.p + st->out_pos, k);
            st->out_pos += k;
            if (st->out_pos == st->out.n) st->out.n = st->out_pos = 0;
            st->last_send = emoe_now();
            return (ssize_t)k;
        }
        if (st->eof) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!st->sent_first) {
            st->sent_first = 1;
            if (st->kind == SRV_KIND_CHAT)
                for (int i = 0; i < st->n_choices; i++) sse_choice(st, i, "", 0, 1, NULL, NULL);
            continue;
        }
        if (client_gone(st->fd)) {
            pthread_mutex_lock(&st->s->stat_mu);
            st->s->disconnects++;
            pthread_mutex_unlock(&st->s->stat_mu);
            stream_cancel_all(st);
            stream_log(st, "client-disconnected");
            st->eof = 1;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        /* Poll every unfinished choice; wait on the first one only. */
        int waited = 0, n_done = 0, failed = -1;
        sched_update fu = {0};
        st->n_gen = 0;
        for (int i = 0; i < st->n_choices; i++) {
            if (st->ch[i].done) {
                n_done++;
                st->n_gen += st->ch[i].n_gen;
                continue;
            }
            sched_update u;
            sched_req_poll(st->rs[i], waited ? 0 : 0.1, &u);
            waited = 1;
            st->n_prompt = u.n_prompt;
            st->ch[i].n_gen = u.n_gen;
            st->n_gen += u.n_gen;
            if (st->oo.tools) {
                /* auto: content streams up to where a tool call could start */
                if (u.text_len) sched_buf_append(&st->ch[i].held, u.text, u.text_len);
                size_t safe = st->oo.forced_tool || !st->ch[i].held.n ? 0 : oai_tool_safe_prefix(st->ch[i].held.p, st->ch[i].held.n);
                if (safe > st->ch[i].emitted && !u.finished) {
                    sse_choice(st, i, st->ch[i].held.p + st->ch[i].emitted, safe - st->ch[i].emitted, 0, NULL, NULL);
                    st->ch[i].emitted = safe;
                }
            } else if (u.text_len || (!u.finished && ((st->return_ids && u.n_gen > st->ch[i].n_ids_sent) ||
                                                       (st->oo.logprobs && u.n_gen > st->ch[i].n_lp_sent)))) {
                sse_choice(st, i, u.text ? u.text : "", u.text_len, 0, NULL, NULL);
            }
            if (st->log_prompts && u.text_len) sched_buf_append(&st->text_log, u.text, u.text_len);
            free(u.text);
            if (u.finished) {
                st->ch[i].done = 1;
                n_done++;
                if (u.finish == SCHED_FINISH_STOP || u.finish == SCHED_FINISH_LENGTH) {
                    sse_finish_choice(st, i, u.finish);
                } else if (failed < 0) {
                    failed = i;
                    fu = u;
                }
            }
        }
        if (failed >= 0) {
            stream_cancel_all(st);
            st->finished = 1;
            st->finish = fu.finish;
            srv_error e = {0};
            if (fu.finish == SCHED_FINISH_CANCELLED)
                srv_fail(&e, 503, "server_error", "server_shutting_down", NULL, "the request was cancelled: %s",
                         fu.error_msg);
            else
                srv_fail(&e, 500, "server_error", NULL, NULL, "generation failed: %s", fu.error_msg);
            st->status = e.http;
            char *s = srv_error_json(&e);
            if (s) {
                sched_buf_append(&st->out, "data: ", 6);
                sched_buf_append(&st->out, s, strlen(s));
                sched_buf_append(&st->out, "\n\n", 2);
                free(s);
            }
        } else if (n_done == st->n_choices) {
            st->finished = 1;
            st->finish = SCHED_FINISH_STOP;
        }
        if (st->finished) {
            if (st->include_usage) {
                json_t *o = chunk_base(st);
                json_object_set_new(o, "choices", json_array());
                json_object_set_new(o, "usage", usage_json(st->n_prompt, st->n_gen));
                sse_event(st, o);
            }
            sched_buf_append(&st->out, "data: [DONE]\n\n", 14);
            stream_log(st, failed >= 0 ? sched_finish_name(fu.finish) : "done");
            st->eof = 1;
            continue;
        }
        if (st->out.n == 0 && emoe_now() - st->last_send > 10.0)
            sched_buf_append(&st->out, ": keep-alive\n\n", 14);
    }
}

static void stream_free(void *cls)
{
    stream *st = cls;
    if (!st) return;
    if (!st->finished) {
        /* The connection ended before the stream did: the client went away. */
        stream_cancel_all(st);
        if (!st->eof) {
            pthread_mutex_lock(&st->s->stat_mu);
            st->s->disconnects++;
            pthread_mutex_unlock(&st->s->stat_mu);
            stream_log(st, "client-disconnected");
        }
    }
    for (int i = 0; i < st->n_choices; i++) {
        sched_req_release(st->rs[i]);
        sched_buf_free(&st->ch[i].held);
    }
    free(st->echo_ids);
    free(st->echo_text);
    count_status(st->s, st->status ? st->status : 200);
    atomic_fetch_sub(&st->s->inflight, 1);
    sched_buf_free(&st->out);
    sched_buf_free(&st->text_log);
    free(st);
}

/* ---- generation ---- */

/* One non-streamed choice. */
static json_t *choice_json(srv *s, const oai_out *oo, int i, sched_req *r, const char *text, size_t len,
                           sched_finish f, int n_gen, int return_ids, unsigned long long seq, const int32_t *echo_ids,
                           int n_echo, const char *echo_text, size_t echo_len)
{
    const char *fin = sched_finish_name(f);
    json_t *lp = json_null();
    if (oo->logprobs) {
        size_t off = echo_text ? echo_len : 0, poff = 0;
        lp = oai_logprobs_json(oo, r, 0, n_gen, &off);
        if (echo_text) lp = oai_prompt_logprobs_json(oo, r, echo_ids, n_echo, &poff, lp);
        if (!lp) lp = json_null();
    }
    char *joined = NULL;
    if (echo_text) {
        joined = malloc(echo_len + len + 1);
        if (joined) {
            memcpy(joined, echo_text, echo_len);
            if (len) memcpy(joined + echo_len, text, len);
            text = joined;
            len += echo_len;
        }
    }
    json_t *choice;
    if (oo->kind == SRV_KIND_CHAT) {
        size_t clen = len;
        json_t *calls = oai_tool_calls(oo, text, len, &clen, seq + (unsigned)i);
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        if (calls) {
            json_object_set_new(msg, "content", clen ? json_stringn(text, clen) : json_null());
            json_object_set_new(msg, "tool_calls", calls);
            fin = "tool_calls";
        } else {
            json_object_set_new(msg, "content", json_stringn(text ? text : "", text ? len : 0));
        }
        choice = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", lp, "finish_reason", fin);
    } else {
        choice = json_pack("{s:i, s:s%, s:o, s:s}", "index", i, "text", text ? text : "", text ? len : 0, "logprobs", lp,
                           "finish_reason", fin);
    }
    free(joined);
    if (return_ids) {
        json_t *arr = json_array();
        int32_t *buf = malloc((size_t)(n_gen ? n_gen : 1) * sizeof *buf);
        int n = buf ? sched_req_tokens(r, buf, n_gen) : 0;
        for (int k = 0; k < n; k++) json_array_append_new(arr, json_integer(buf[k]));
        free(buf);
        json_object_set_new(choice, "token_ids", arr);
    }
    (void)s;
    return choice;
}

static enum MHD_Result handle_generate(srv *s, conn *c, struct MHD_Connection *mc, srv_kind kind)
{
    srv_gen_req g;
    srv_error e;
    if (srv_parse_request(kind, c->body.p ? c->body.p : "", c->body.n, &g, &e)) return respond_error(c, mc, &e);
    enum MHD_Result ret;
    int32_t *ids = NULL;
    int n_ids = 0;
    sched_req *rs[SRV_MAX_N] = {0};
    int n_rs = 0;
    oai_gen og = {0};
    char *echo_text = NULL;
    size_t echo_len = 0;
    if (g.model[0] && strcmp(g.model, s->served)) {
        ret = fail(c, mc, 404, "invalid_request_error", "model_not_found", "model",
                   "The model '%s' does not exist; this server serves '%s'", g.model, s->served);
        goto done;
    }
    const char *th = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "X-Emoe-Task");
    if (th && !g.task[0]) {
        if (!srv_task_valid(th, strlen(th))) {
            ret = fail(c, mc, 400, "invalid_request_error", NULL, "X-Emoe-Task",
                       "X-Emoe-Task must be 1..%d characters of [A-Za-z0-9_.:-]", SRV_MAX_TASK);
            goto done;
        }
        snprintf(g.task, sizeof g.task, "%s", th);
    }
    /* issue 15: logit_bias ids, tools in the template, constrained output. */
    if (oai_gen_prepare(s->text, s->vocab, eng_desc(s->e), &g, &og, &e)) { ret = respond_error(c, mc, &e); goto done; }
    if (build_prompt(s, &g, &ids, &n_ids, &e)) { ret = respond_error(c, mc, &e); goto done; }
    if (n_ids == 0) {
        ret = fail(c, mc, 400, "invalid_request_error", NULL, kind == SRV_KIND_CHAT ? "messages" : "prompt",
                   "the prompt is empty (0 tokens)");
        goto done;
    }
    pthread_mutex_lock(&s->mu);
    int max_default = s->cfg.scheduler.max_tokens_default;
    double req_timeout = s->cfg.server.request_timeout;
    int log_prompts = s->cfg.log.log_prompts;
    pthread_mutex_unlock(&s->mu);
    if (n_ids >= s->ctx || (g.max_tokens > 0 && (int64_t)n_ids + g.max_tokens > s->ctx)) {
        ret = fail(c, mc, 400, "invalid_request_error", "context_length_exceeded",
                   g.max_tokens > 0 && n_ids < s->ctx ? "max_tokens" : kind == SRV_KIND_CHAT ? "messages" : "prompt",
                   "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the "
                   "prompt, %d for the completion). Please reduce the prompt or max_tokens.",
                   s->ctx, n_ids + (g.max_tokens > 0 ? g.max_tokens : 1), n_ids, g.max_tokens > 0 ? g.max_tokens : 1);
        goto done;
    }
    if (g.n_stop && !srv_text_available(s->text)) {
        ret = fail(c, mc, 400, "invalid_request_error", NULL, "stop", "stop strings need a tokenizer: %s",
                   srv_text_missing_reason(s->text));
        goto done;
    }
    int max_tokens = g.max_tokens > 0 ? g.max_tokens : s->ctx - n_ids;
    if (g.max_tokens <= 0 && max_default > 0 && max_tokens > max_default) max_tokens = max_default;
    if (!g.seed_set) {
        uint64_t seed;
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) seed = c->rid ^ (uint64_t)time(NULL);
        g.sampling.seed = seed;
    }
    sched_req_params p = {0};
    p.prompt = ids;
    p.n_prompt = n_ids;
    p.max_tokens = max_tokens;
    p.sampling = g.sampling;
    for (int i = 0; i < g.n_stop && i < SCHED_MAX_STOP; i++) p.stop[i] = g.stop[i];
    p.ignore_eos = g.ignore_eos;
    p.deadline = req_timeout > 0 ? c->t0 + req_timeout : 0;
    p.task = g.task;
    p.id = c->rid;
    p.logprobs = g.logprobs;
    p.top_logprobs = g.top_logprobs;
    p.prompt_logprobs = g.echo && g.logprobs;
    p.bias_ids = g.bias_ids;
    p.bias = g.bias;
    p.n_bias = g.n_bias;
    emoe_err err = {0};
    if (atomic_load(&s->draining)) {
        ret = fail(c, mc, 503, "server_error", "server_shutting_down", NULL, "the server is shutting down");
        goto done;
    }
    /* n choices: choice 0 prefills, the others fork its KV cache; seeds
     * differ per choice (seed + i). */
    emoe_status st = EMOE_OK;
    for (int i = 0; i < g.n && st == EMOE_OK; i++) {
        p.sampling.seed = g.sampling.seed + (uint64_t)i;
        p.fork_of = i ? rs[0] : NULL;
        if (oai_gen_constraint(&og, &p.constraint_ops, &p.constraint, &err) != EMOE_OK) { st = err.code; break; }
        st = sched_submit(s->sc, &p, &rs[n_rs], &err);
        if (st == EMOE_OK) n_rs++;
        else oai_gen_constraint_free(p.constraint_ops, p.constraint);
    }
    if (st != EMOE_OK)
        for (int i = 0; i < n_rs; i++) { sched_req_cancel(rs[i]); sched_req_release(rs[i]); rs[i] = NULL; }
    if (st == EMOE_EBUSY) {
        if (atomic_load(&s->draining) || strstr(err.msg, "shutting"))
            ret = fail(c, mc, 503, "server_error", "server_shutting_down", NULL, "%s", err.msg);
        else
            ret = fail(c, mc, 429, "rate_limit_error", "queue_full", NULL, "%s", err.msg);
        goto done;
    }
    if (st != EMOE_OK) {
        int http = st == EMOE_EINVAL ? 400 : 500;
        ret = fail(c, mc, http, http == 400 ? "invalid_request_error" : "server_error",
                   strstr(err.msg, "context") ? "context_length_exceeded" : NULL,
                   strstr(err.msg, "logit_bias") ? "logit_bias" : NULL, "%s", err.msg);
        goto done;
    }
    atomic_fetch_add(&s->inflight, 1);
    c->n_prompt = n_ids;
    if (log_prompts) {
        if (g.prompt) LOG_INFO("req=%llu prompt: %.*s", (unsigned long long)c->rid, (int)(g.prompt_len > 4000 ? 4000 : g.prompt_len), g.prompt);
        if (g.messages) {
            char *m = json_dumps(g.messages, JSON_COMPACT);
            if (m) LOG_INFO("req=%llu messages: %.4000s", (unsigned long long)c->rid, m);
            free(m);
        }
    }
    char idbuf[40];
    unsigned long long seq = (unsigned long long)(s->id_base ^ (c->rid * 0x9E3779B97F4A7C15ull));
    snprintf(idbuf, sizeof idbuf, "%s-%016llx", kind == SRV_KIND_CHAT ? "chatcmpl" : "cmpl", seq);
    oai_out oo = {kind, s->text, g.logprobs, g.top_logprobs, og.tools, og.forced_tool, !g.parallel_tool_calls};
    /* echo (completions): the prompt text as given, or decoded from ids */
    if (g.echo) {
        if (g.prompt) {
            echo_text = malloc(g.prompt_len + 1);
            if (echo_text) { memcpy(echo_text, g.prompt, g.prompt_len + 1); echo_len = g.prompt_len; }
        } else if (srv_text_decode(s->text, ids, n_ids, &echo_text, &echo_len, &err) != EMOE_OK) {
            echo_text = NULL;
        }
        if (!echo_text) { echo_text = strdup(""); echo_len = 0; }
    }
    if (g.stream) {
        stream *sst = calloc(1, sizeof *sst);
        if (!sst) {
            for (int i = 0; i < n_rs; i++) { sched_req_cancel(rs[i]); sched_req_release(rs[i]); }
            n_rs = 0;
            atomic_fetch_sub(&s->inflight, 1);
            ret = MHD_NO;
            goto done;
        }
        sst->s = s;
        sst->r = rs[0];
        sst->n_choices = n_rs;
        memcpy(sst->rs, rs, sizeof rs);
        sst->oo = oo;
        sst->seq = seq;
        sst->kind = kind;
        sst->rid = c->rid;
        snprintf(sst->id, sizeof sst->id, "%s", idbuf);
        sst->created = time(NULL);
        sst->include_usage = g.include_usage;
        sst->fd = conn_fd(mc);
        sst->t0 = c->t0;
        sst->last_send = emoe_now();
        sst->n_prompt = n_ids;
        sst->log_prompts = log_prompts;
        sst->return_ids = g.return_token_ids;
        if (echo_text) {
            sst->echo_text = echo_text;
            sst->echo_len = echo_len;
            echo_text = NULL;
            sst->echo_ids = malloc((size_t)n_ids * sizeof *ids);
            if (sst->echo_ids) { memcpy(sst->echo_ids, ids, (size_t)n_ids * sizeof *ids); sst->n_echo_ids = n_ids; }
        }
        n_rs = 0; /* owned by the stream now */
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_reader, sst, stream_free);
        if (!resp) { stream_free(sst); ret = MHD_NO; goto done; }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        add_common_headers(s, mc, resp, c);
        ret = MHD_queue_response(mc, 200, resp);
        MHD_destroy_response(resp);
        c->responded = 1;
        c->status = 200;
        c->finish = "stream";
        goto done;
    }
    /* Non-streaming: wait here (this connection's own thread), watching the socket. */
    sched_buf text[SRV_MAX_N];
    sched_update u[SRV_MAX_N];
    memset(text, 0, sizeof text);
    memset(u, 0, sizeof u);
    int gone = 0, n_done = 0, failed = -1, total_gen = 0;
    while (n_done < n_rs && !gone) {
        int waited = 0;
        n_done = 0;
        for (int i = 0; i < n_rs; i++) {
            if (u[i].finished) { n_done++; continue; }
            free(u[i].text);
            sched_req_poll(rs[i], waited ? 0 : 0.1, &u[i]);
            waited = 1;
            if (u[i].text_len) sched_buf_append(&text[i], u[i].text, u[i].text_len);
            free(u[i].text);
            u[i].text = NULL;
            if (u[i].finished) {
                n_done++;
                if (u[i].finish != SCHED_FINISH_STOP && u[i].finish != SCHED_FINISH_LENGTH && failed < 0) failed = i;
            }
        }
        if (failed >= 0) break;
        if (n_done < n_rs && client_gone(conn_fd(mc))) gone = 1;
    }
    if (gone || failed >= 0)
        for (int i = 0; i < n_rs; i++) sched_req_cancel(rs[i]);
    for (int i = 0; i < n_rs; i++) total_gen += u[i].n_gen;
    c->n_gen = total_gen;
    atomic_fetch_sub(&s->inflight, 1);
    if (gone) {
        pthread_mutex_lock(&s->stat_mu);
        s->disconnects++;
        pthread_mutex_unlock(&s->stat_mu);
        c->finish = "client-disconnected";
        for (int i = 0; i < n_rs; i++) sched_buf_free(&text[i]);
        ret = MHD_NO;
        goto done;
    }
    sched_update *uf = &u[failed >= 0 ? failed : 0];
    c->finish = sched_finish_name(uf->finish);
    if (log_prompts && text[0].n)
        LOG_INFO("req=%llu output: %.*s", (unsigned long long)c->rid, (int)(text[0].n > 4000 ? 4000 : text[0].n), text[0].p);
    if (failed >= 0) {
        for (int i = 0; i < n_rs; i++) sched_buf_free(&text[i]);
        if (uf->finish == SCHED_FINISH_CANCELLED)
            ret = fail(c, mc, 503, "server_error", "server_shutting_down", NULL, "the request was cancelled: %s", uf->error_msg);
        else
            ret = fail(c, mc, 500, "server_error", NULL, NULL, "generation failed: %s", uf->error_msg);
        goto done;
    }
    json_t *choices = json_array();
    for (int i = 0; i < n_rs; i++) {
        json_array_append_new(choices, choice_json(s, &oo, i, rs[i], text[i].p, text[i].n, u[i].finish, u[i].n_gen,
                                                   g.return_token_ids, seq, ids, n_ids, echo_text, echo_len));
        sched_buf_free(&text[i]);
    }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", idbuf, "object",
                          kind == SRV_KIND_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)time(NULL), "model", s->served, "choices", choices, "usage",
                          usage_json(n_ids, total_gen));
    ret = respond_json(c, mc, 200, o);
    free(echo_text);
    echo_text = NULL;
done:
    free(echo_text);
    for (int i = 0; i < n_rs; i++) sched_req_release(rs[i]);
    oai_gen_free(&og);
    free(ids);
    srv_gen_req_free(&g);
    return ret;
}

static enum MHD_Result handle_tokenize(srv *s, conn *c, struct MHD_Connection *mc)
{
    srv_gen_req g;
    srv_error e;
    if (srv_parse_request(SRV_KIND_TOKENIZE, c->body.p ? c->body.p : "", c->body.n, &g, &e))
        return respond_error(c, mc, &e);
    enum MHD_Result ret;
    if (g.model[0] && strcmp(g.model, s->served)) {
        ret = fail(c, mc, 404, "invalid_request_error", "model_not_found", "model", "The model '%s' does not exist",
                   g.model);
    } else {
        int32_t *ids = NULL;
        int n = 0;
        if (build_prompt(s, &g, &ids, &n, &e)) {
            ret = respond_error(c, mc, &e);
        } else {
            json_t *arr = json_array();
            for (int i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
            free(ids);
            ret = respond_json(c, mc, 200, json_pack("{s:o, s:i, s:i}", "tokens", arr, "count", n, "max_model_len", s->ctx));
        }
    }
    srv_gen_req_free(&g);
    return ret;
}

static enum MHD_Result handle_detokenize(srv *s, conn *c, struct MHD_Connection *mc)
{
    srv_gen_req g;
    srv_error e;
    if (srv_parse_request(SRV_KIND_DETOKENIZE, c->body.p ? c->body.p : "", c->body.n, &g, &e))
        return respond_error(c, mc, &e);
    enum MHD_Result ret;
    for (int i = 0; i < g.n_prompt_ids; i++)
        if (g.prompt_ids[i] >= s->vocab) {
            ret = fail(c, mc, 400, "invalid_request_error", NULL, "tokens",
                       "tokens[%d]: token id %d is outside the vocabulary [0, %d)", i, (int)g.prompt_ids[i], s->vocab);
            srv_gen_req_free(&g);
            return ret;
        }
    char *text = NULL;
    size_t len = 0;
    emoe_err err = {0};
    if (srv_text_decode(s->text, g.prompt_ids, g.n_prompt_ids, &text, &len, &err) != EMOE_OK)
        ret = fail(c, mc, 400, "invalid_request_error", NULL, "tokens", "%s", err.msg);
    else
        ret = respond_json(c, mc, 200, json_pack("{s:s%}", "prompt", text, len));
    free(text);
    srv_gen_req_free(&g);
    return ret;
}

/* ---- dispatch ---- */

static enum MHD_Result dispatch(srv *s, conn *c, struct MHD_Connection *mc)
{
    switch (c->route) {
    case R_HEALTH:
        if (!atomic_load(&s->ready))
            return respond_json(c, mc, 503, json_pack("{s:s}", "status", "loading"));
        if (atomic_load(&s->draining))
            return respond_json(c, mc, 503, json_pack("{s:s}", "status", "draining"));
        return respond_json(c, mc, 200, json_pack("{s:s}", "status", "ok"));
    case R_METRICS: {
        char *m = srv_metrics_render(s);
        if (!m) return MHD_NO;
        return respond(c, mc, 200, "text/plain; version=0.0.4; charset=utf-8", m, strlen(m));
    }
    default: break;
    }
    if (!atomic_load(&s->ready))
        return fail(c, mc, 503, "server_error", "model_loading", NULL, "the model is still loading");
    switch (c->route) {
    case R_MODELS:
        return respond_json(c, mc, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(s)));
    case R_MODEL_ONE: {
        const char *id = c->url + 11;
        if (strcmp(id, s->served))
            return fail(c, mc, 404, "invalid_request_error", "model_not_found", "model", "The model does not exist");
        return respond_json(c, mc, 200, model_json(s));
    }
    case R_CHAT: return handle_generate(s, c, mc, SRV_KIND_CHAT);
    case R_COMPLETIONS: return handle_generate(s, c, mc, SRV_KIND_COMPLETION);
    case R_TOKENIZE: return handle_tokenize(s, c, mc);
    case R_DETOKENIZE: return handle_detokenize(s, c, mc);
    default:
        return fail(c, mc, 404, "invalid_request_error", "not_found", NULL, "no such endpoint");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    srv *s = cls;
    conn *c = *con_cls;
    if (!c) srv_guard_head(s->guard, mc);
    else if (!*upload_data_size) srv_guard_busy(s->guard, mc);
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        *con_cls = c;
        c->s = s;
        c->rid = atomic_fetch_add(&s->next_id, 1);
        c->t0 = emoe_now();
        c->route = route_of(url);
        snprintf(c->url, sizeof c->url, "%s", url);
        snprintf(c->method, sizeof c->method, "%s", method);
        c->is_post = !strcmp(method, "POST");
        char fmsg[160];
        if (srv_framing_check(mc, version, url, fmsg, sizeof fmsg))
            return fail(c, mc, 400, "invalid_request_error", "bad_request", NULL, "%s", fmsg);
        if (!strcmp(method, "OPTIONS")) {
            /* CORS preflight: no auth (browsers send none). */
            char *b = strdup("");
            struct MHD_Response *resp = MHD_create_response_from_buffer(0, b, MHD_RESPMEM_MUST_FREE);
            if (!resp) return MHD_NO;
            add_common_headers(s, mc, resp, c);
            pthread_mutex_lock(&s->mu);
            int cors_on = s->cfg.server.cors_origins[0] != 0;
            pthread_mutex_unlock(&s->mu);
            MHD_add_response_header(resp, "Allow", "GET, POST, OPTIONS");
            if (cors_on) { /* CORS headers only when [server] cors_origins is set */
                MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
                MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Emoe-Task");
                MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
            }
            enum MHD_Result rc = MHD_queue_response(mc, 204, resp);
            MHD_destroy_response(resp);
            c->responded = 1;
            c->status = 204;
            return rc;
        }
        if (c->route == R_NOTFOUND)
            return fail(c, mc, 404, "invalid_request_error", "not_found", NULL, "no such endpoint: %s %.64s", method, url);
        int want_post = route_is_post(c->route);
        if (want_post ? !c->is_post : (strcmp(method, "GET") && strcmp(method, "HEAD")))
            return fail(c, mc, 405, "invalid_request_error", "method_not_allowed", NULL, "%s is not allowed on %.64s",
                        method, url);
        if (c->route != R_HEALTH && !auth_ok(s, mc))
            return fail(c, mc, 401, "authentication_error", "invalid_api_key", NULL,
                        "missing or invalid API key (send Authorization: Bearer <key>)");
        if (c->is_post) {
            pthread_mutex_lock(&s->mu);
            uint64_t max_body = s->cfg.server.max_body;
            pthread_mutex_unlock(&s->mu);
            const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Content-Length");
            if (cl) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(cl, &end, 10);
                if (errno || *end || v > max_body)
                    return fail(c, mc, 413, "invalid_request_error", "request_too_large", NULL,
                                "the request body is larger than %llu bytes", (unsigned long long)max_body);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->responded && !c->too_large) {
            pthread_mutex_lock(&s->mu);
            uint64_t max_body = s->cfg.server.max_body;
            pthread_mutex_unlock(&s->mu);
            if (c->body.n + *upload_data_size > max_body) {
                c->too_large = 1;
                sched_buf_free(&c->body);
            } else if (sched_buf_append(&c->body, upload_data, *upload_data_size)) {
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->responded) return MHD_YES;
    if (c->too_large) {
        pthread_mutex_lock(&s->mu);
        uint64_t max_body = s->cfg.server.max_body;
        pthread_mutex_unlock(&s->mu);
        return fail(c, mc, 413, "invalid_request_error", "request_too_large", NULL,
                    "the request body is larger than %llu bytes", (unsigned long long)max_body);
    }
    return dispatch(s, c, mc);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv *s = cls;
    conn *c = *con_cls;
    srv_guard_idle(s->guard, mc);
    if (!c) return;
    *con_cls = NULL;
    /* A stream is counted and logged once, by stream_free / stream_log, with
     * how it really ended (an error after the 200 header counts as one). */
    int streamed = c->finish && !strcmp(c->finish, "stream");
    if (c->responded && !streamed) count_status(s, c->status);
    if (c->route != R_HEALTH && c->route != R_METRICS && !streamed)
        LOG_INFO("req=%llu %s %s %d%s prompt_tokens=%d completion_tokens=%d finish=%s time=%.3fs",
                 (unsigned long long)c->rid, c->method, c->url, c->responded ? c->status : 0,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)", c->n_prompt, c->n_gen,
                 c->finish ? c->finish : "-", emoe_now() - c->t0);
    sched_buf_free(&c->body);
    free(c);
}

static void mhd_log(void *cls, const char *fm, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fm, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    LOG_DEBUG("http: %s", buf);
}

/* ---- life cycle ---- */

static emoe_status load_keys(const emoe_config *cfg, char *keys, emoe_err *err)
{
    return cfg_read_api_keys(cfg, keys, KEYS_MAX, err);
}

emoe_status srv_init(const emoe_config *cfg, srv **out, emoe_err *err)
{
    *out = NULL;
    srv *s = calloc(1, sizeof *s);
    if (!s) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    s->cfg = *cfg;
    emoe_status st = load_keys(cfg, s->keys, err);
    if (st != EMOE_OK) { free(s); return st; }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stat_mu, NULL);
    if (getrandom(&s->id_base, sizeof s->id_base, GRND_NONBLOCK) != (ssize_t)sizeof s->id_base)
        s->id_base = (uint64_t)time(NULL) * 2654435761u;
    atomic_store(&s->next_id, 1);
    s->started = time(NULL);

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->server.port);
    int gai = getaddrinfo(cfg->server.host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        st = emoe_errf(err, EMOE_EINVAL, "[server] host '%s': %s", cfg->server.host, gai_strerror(gai));
        goto fail;
    }
    int lfd = srv_listen_socket(ai, cfg, err);
    if (lfd < 0) {
        freeaddrinfo(ai);
        st = err->code;
        goto fail;
    }
    s->guard = srv_guard_new(cfg->server.request_read_timeout, cfg->server.keepalive_timeout);
    if (!s->guard) {
        close(lfd);
        freeaddrinfo(ai);
        st = emoe_errf(err, EMOE_ENOMEM, "cannot start the connection guard thread");
        goto fail;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                            MHD_OPTION_LISTEN_SOCKET, lfd,
                            MHD_OPTION_NOTIFY_CONNECTION, srv_guard_notify, s->guard,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->server.max_connections_per_ip,
                            MHD_OPTION_UNESCAPE_CALLBACK, srv_framing_unescape, NULL,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->server.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->server.connection_timeout + 0.5),
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        close(lfd);
        st = emoe_errf(err, EMOE_EIO, "cannot start the HTTP server on %s:%d", cfg->server.host, cfg->server.port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->server.port;
    if (cfg->server.replica_id[0]) {
        snprintf(s->replica, sizeof s->replica, "%s", cfg->server.replica_id);
    } else {
        char host[256] = "localhost";
        if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
        snprintf(s->replica, sizeof s->replica, "%s:%d", host, s->port);
    }
    *out = s;
    return EMOE_OK;
fail:
    srv_guard_free(s->guard);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stat_mu);
    free(s);
    return st;
}

int srv_port(const srv *s) { return s->port; }

void srv_set_metrics_extra(srv *s, srv_metrics_fn fn, void *user)
{
    s->metrics_extra = fn;
    s->metrics_extra_user = user;
}

void srv_attach(srv *s, eng_engine *e, sched *sc, srv_text *text)
{
    s->e = e;
    s->sc = sc;
    s->text = text;
    const eng_model_desc *d = eng_desc(e);
    s->vocab = d->vocab;
    s->ctx = eng_max_ctx(e);
    srv_text_set_prompt_limit(text, s->ctx, s->cfg.model.max_prompt_bytes);
    pthread_mutex_lock(&s->mu);
    if (s->cfg.model.served_name[0]) {
        snprintf(s->served, sizeof s->served, "%s", s->cfg.model.served_name);
    } else {
        const char *dir = eng_model_dir(e);
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && dir[b - 1] != '/') b--;
        snprintf(s->served, sizeof s->served, "%.*s", (int)(n - b), dir + b);
    }
    pthread_mutex_unlock(&s->mu);
    atomic_store(&s->ready, 1);
}

emoe_status srv_reload(srv *s, const emoe_config *cfg, emoe_err *err)
{
    char keys[KEYS_MAX];
    emoe_status st = load_keys(cfg, keys, err);
    if (st != EMOE_OK) return st;
    pthread_mutex_lock(&s->mu);
    char fixed[512];
    cfg_apply_reloadable(&s->cfg, cfg, fixed, sizeof fixed);
    memcpy(s->keys, keys, sizeof keys);
    srv_guard_set_timeouts(s->guard, s->cfg.server.request_read_timeout, s->cfg.server.keepalive_timeout);
    pthread_mutex_unlock(&s->mu);
    return EMOE_OK;
}

void srv_drain(srv *s)
{
    atomic_store(&s->draining, 1);
}

int srv_inflight(srv *s) { return atomic_load(&s->inflight); }

void srv_free(srv *s)
{
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d);
    srv_guard_free(s->guard);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stat_mu);
    free(s);
}

/* ---- metrics ---- */

static void hist_out(FILE *f, const char *name, const char *help, const sched_hist *h)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int b = 0; b < SCHED_HIST_BUCKETS; b++) {
        cum += h->counts[b];
        fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, sched_hist_bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[SCHED_HIST_BUCKETS];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name, h->sum,
            name, (unsigned long long)h->n);
}

char *srv_metrics_render(srv *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    sched_stats st;
    memset(&st, 0, sizeof st);
    if (s->sc) sched_get_stats(s->sc, &st);
    fprintf(f, "# HELP emoe_up 1 when the model is loaded and the server is ready.\n# TYPE emoe_up gauge\nemoe_up %d\n",
            atomic_load(&s->ready) && !atomic_load(&s->draining));
    fprintf(f, "# HELP emoe_requests_running Requests in the continuous batch.\n# TYPE emoe_requests_running gauge\n"
               "emoe_requests_running %d\n", st.running);
    fprintf(f, "# HELP emoe_requests_waiting Requests waiting in the queue.\n# TYPE emoe_requests_waiting gauge\n"
               "emoe_requests_waiting %d\n", st.waiting);
    fprintf(f, "# HELP emoe_http_inflight Generation requests accepted and not yet answered.\n"
               "# TYPE emoe_http_inflight gauge\nemoe_http_inflight %d\n", atomic_load(&s->inflight));
    fprintf(f, "# HELP emoe_prompt_tokens_total Prompt tokens prefilled.\n# TYPE emoe_prompt_tokens_total counter\n"
               "emoe_prompt_tokens_total %llu\n", (unsigned long long)st.prompt_tokens);
    fprintf(f, "# HELP emoe_generation_tokens_total Tokens generated.\n# TYPE emoe_generation_tokens_total counter\n"
               "emoe_generation_tokens_total %llu\n", (unsigned long long)st.generation_tokens);
    fprintf(f, "# HELP emoe_requests_finished_total Requests finished, by reason.\n"
               "# TYPE emoe_requests_finished_total counter\n");
    for (int k = SCHED_FINISH_STOP; k <= SCHED_FINISH_ERROR; k++)
        fprintf(f, "emoe_requests_finished_total{reason=\"%s\"} %llu\n", sched_finish_name((sched_finish)k),
                (unsigned long long)st.requests_finished[k]);
    fprintf(f, "# HELP emoe_requests_rejected_total Requests refused because the queue was full (429).\n"
               "# TYPE emoe_requests_rejected_total counter\nemoe_requests_rejected_total %llu\n",
            (unsigned long long)st.requests_rejected);
    fprintf(f, "# HELP emoe_engine_steps_total Engine steps run.\n# TYPE emoe_engine_steps_total counter\n"
               "emoe_engine_steps_total %llu\n", (unsigned long long)st.steps);
    pthread_mutex_lock(&s->stat_mu);
    fprintf(f, "# HELP emoe_http_responses_total HTTP responses by status class.\n"
               "# TYPE emoe_http_responses_total counter\n");
    for (int k = 1; k <= 5; k++)
        fprintf(f, "emoe_http_responses_total{code=\"%dxx\"} %llu\n", k, (unsigned long long)s->http_by_class[k]);
    fprintf(f, "# HELP emoe_client_disconnects_total Requests cancelled because the client went away.\n"
               "# TYPE emoe_client_disconnects_total counter\nemoe_client_disconnects_total %llu\n",
            (unsigned long long)s->disconnects);
    pthread_mutex_unlock(&s->stat_mu);
    srv_guard_stats gs;
    srv_guard_get_stats(s->guard, &gs);
    fprintf(f, "# HELP emoe_http_connections_open HTTP connections open now.\n# TYPE emoe_http_connections_open gauge\n"
               "emoe_http_connections_open %d\n", gs.open);
    fprintf(f, "# HELP emoe_http_connections_timed_out_total Connections closed by the server's deadlines "
               "(read: request not received within request_read_timeout; keepalive: idle past keepalive_timeout).\n"
               "# TYPE emoe_http_connections_timed_out_total counter\n"
               "emoe_http_connections_timed_out_total{reason=\"read\"} %llu\n"
               "emoe_http_connections_timed_out_total{reason=\"keepalive\"} %llu\n",
            (unsigned long long)gs.read_timeouts, (unsigned long long)gs.keepalive_timeouts);
    hist_out(f, "emoe_time_to_first_token_seconds", "Time from arrival to the first generated token.", &st.ttft);
    hist_out(f, "emoe_inter_token_latency_seconds", "Time between consecutive generated tokens.", &st.itl);
    hist_out(f, "emoe_e2e_request_latency_seconds", "Time from arrival to the last token.", &st.e2e);
    hist_out(f, "emoe_request_queue_time_seconds", "Time from arrival to admission into the batch.", &st.queue_time);
    if (s->metrics_extra && atomic_load(&s->ready)) s->metrics_extra(s->metrics_extra_user, f);
    fclose(f);
    return buf;
}
