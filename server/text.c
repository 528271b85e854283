/* text.c — tokenizer adapter for the server; see text.h. The tokenizer module
 * (engine/tokenizer.h) is developed on its own branch; this file compiles with
 * or without it so the server always builds. */
#include "server/text.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if defined(__has_include)
#if __has_include("engine/tokenizer.h")
#define SRV_HAVE_TOK 1
#include "engine/tokenizer.h"
#endif
/* tok_apply_chat_template ships with the template engine (engine/jinja.h). */
#if __has_include("engine/jinja.h")
#define SRV_HAVE_CHAT 1
#endif
#endif

struct srv_text {
#ifdef SRV_HAVE_TOK
    tok_tokenizer *tok;
#endif
    char reason[256];
    size_t max_piece;    /* longest token, bytes */
    size_t prompt_limit; /* see srv_text_set_prompt_limit; 0 = none */
    /* derived data kept with the tokenizer (oai_gen.c: the grammar vocabulary) */
    pthread_mutex_t aux_mu;
    void *aux;
    void (*aux_free)(void *);
};

emoe_status srv_text_load(const char *dir, srv_text **out, emoe_err *err)
{
    srv_text *t = calloc(1, sizeof *t);
    if (!t) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    pthread_mutex_init(&t->aux_mu, NULL);
    *out = t;
#ifdef SRV_HAVE_TOK
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (stat(path, &st) != 0) {
        snprintf(t->reason, sizeof t->reason, "the model directory has no tokenizer.json; send token ids");
        return EMOE_OK;
    }
    emoe_status s = tok_load_dir(dir, &t->tok, err);
    if (s != EMOE_OK) {
        free(t);
        *out = NULL;
        return s;
    }
#else
    (void)dir;
    snprintf(t->reason, sizeof t->reason, "this build has no tokenizer (engine/tokenizer.h); send token ids");
#endif
    return EMOE_OK;
}

void srv_text_free(srv_text *t)
{
    if (!t) return;
#ifdef SRV_HAVE_TOK
    tok_free(t->tok);
#endif
    if (t->aux && t->aux_free) t->aux_free(t->aux);
    pthread_mutex_destroy(&t->aux_mu);
    free(t);
}

int srv_text_available(const srv_text *t)
{
#ifdef SRV_HAVE_TOK
    return t && t->tok != NULL;
#else
    (void)t;
    return 0;
#endif
}

const char *srv_text_missing_reason(const srv_text *t) { return t ? t->reason : "no tokenizer"; }

int srv_text_has_template(const srv_text *t)
{
#if defined(SRV_HAVE_TOK) && defined(SRV_HAVE_CHAT)
    return srv_text_available(t) && tok_chat_template(t->tok) != NULL;
#else
    (void)t;
    return 0;
#endif
}

emoe_status srv_text_encode(srv_text *t, const char *text, size_t len, int add_special, int32_t **ids, int *n,
                            emoe_err *err)
{
    return srv_text_encode_max(t, text, len, add_special, 0, ids, n, NULL, err);
}

emoe_status srv_text_encode_max(srv_text *t, const char *text, size_t len, int add_special, int max_ids, int32_t **ids,
                                int *n, int *over, emoe_err *err)
{
    *ids = NULL;
    *n = 0;
    if (over) *over = 0;
#ifdef SRV_HAVE_TOK
    if (!srv_text_available(t)) return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
    size_t cnt = 0;
    emoe_status s = tok_encode_limited(t->tok, text, len, add_special, max_ids > 0 ? (size_t)max_ids : 0, ids, &cnt,
                                       over, err);
    if (s != EMOE_OK) return s;
    if (cnt > (1u << 30)) { free(*ids); *ids = NULL; return emoe_errf(err, EMOE_EINVAL, "prompt too long"); }
    *n = (int)cnt;
    return EMOE_OK;
#else
    (void)text; (void)len; (void)add_special; (void)max_ids;
    return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
#endif
}

void srv_text_set_prompt_limit(srv_text *t, int ctx, uint64_t cap_bytes)
{
    if (!t) return;
    if (cap_bytes) { t->prompt_limit = (size_t)cap_bytes; return; }
#ifdef SRV_HAVE_TOK
    if (!t->tok || ctx <= 0) { t->prompt_limit = 0; return; }
    if (!t->max_piece) t->max_piece = tok_max_piece_bytes(t->tok);
    size_t piece = t->max_piece ? t->max_piece : 1;
    double lim = (double)ctx * (double)piece * 4.0;
    t->prompt_limit = lim > (double)(SIZE_MAX / 2) ? SIZE_MAX / 2 : (size_t)lim;
#else
    (void)ctx;
    t->prompt_limit = 0;
#endif
}

size_t srv_text_prompt_limit(const srv_text *t) { return t ? t->prompt_limit : 0; }

emoe_status srv_text_chat(srv_text *t, json_t *messages, int add_generation_prompt, json_t *kwargs, char **out,
                          emoe_err *err)
{
    *out = NULL;
#ifdef SRV_HAVE_TOK
    if (!srv_text_available(t)) return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
    if (!tok_chat_template(t->tok))
        return emoe_errf(err, EMOE_EUNSUP, "the model's tokenizer has no chat template; use /v1/completions");
#ifdef SRV_HAVE_CHAT
    return tok_apply_chat_template_capped(t->tok, messages, add_generation_prompt, kwargs, t->prompt_limit, out, err);
#else
    (void)messages; (void)add_generation_prompt; (void)kwargs;
    return emoe_errf(err, EMOE_EUNSUP, "this build cannot render chat templates yet (engine/jinja.h); use /v1/completions");
#endif
#else
    (void)messages; (void)add_generation_prompt; (void)kwargs;
    return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
#endif
}

emoe_status srv_text_decode(srv_text *t, const int32_t *ids, int n, char **out, size_t *len, emoe_err *err)
{
    *out = NULL;
    *len = 0;
#ifdef SRV_HAVE_TOK
    if (!srv_text_available(t)) return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
    return tok_decode(t->tok, ids, (size_t)n, 1, out, len, err);
#else
    (void)ids; (void)n;
    return emoe_errf(err, EMOE_EUNSUP, "%s", srv_text_missing_reason(t));
#endif
}

#ifdef SRV_HAVE_TOK
static void *detok_new(void *ctx)
{
    srv_text *t = ctx;
    tok_detok *d = calloc(1, sizeof *d);
    if (d) tok_detok_init(d, t->tok, 1);
    return d;
}

static void detok_free(void *ctx, void *state)
{
    (void)ctx;
    if (!state) return;
    tok_detok_free(state);
    free(state);
}

static int detok_push(void *ctx, void *state, int32_t id, sched_buf *out)
{
    (void)ctx;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    emoe_err err;
    if (tok_detok_push(state, id, &buf, &len, &cap, &err) != EMOE_OK) { free(buf); return -1; }
    int rc = sched_buf_append(out, buf, len);
    free(buf);
    return rc;
}

static int detok_flush(void *ctx, void *state, sched_buf *out)
{
    (void)ctx;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    emoe_err err;
    if (tok_detok_flush(state, &buf, &len, &cap, &err) != EMOE_OK) { free(buf); return -1; }
    int rc = sched_buf_append(out, buf, len);
    free(buf);
    return rc;
}
#endif

sched_text_ops srv_text_ops(srv_text *t)
{
    sched_text_ops ops = {0};
#ifdef SRV_HAVE_TOK
    if (srv_text_available(t)) {
        ops.ctx = t;
        ops.new_state = detok_new;
        ops.free_state = detok_free;
        ops.push = detok_push;
        ops.flush = detok_flush;
    }
#else
    (void)t;
#endif
    return ops;
}

/* ---- token bytes (logprobs, constrained decoding) ---- */

int srv_text_token_bytes(srv_text *t, int id, emoe_buf *out)
{
    out->n = 0;
#ifdef SRV_HAVE_TOK
    if (t && t->tok) return tok_token_bytes(t->tok, id, out);
#else
    (void)t;
    (void)id;
#endif
    return -1;
}

int srv_text_is_special(srv_text *t, int id)
{
#ifdef SRV_HAVE_TOK
    if (t && t->tok) return tok_is_special(t->tok, id);
#else
    (void)t;
    (void)id;
#endif
    return 0;
}

int srv_text_vocab(srv_text *t)
{
#ifdef SRV_HAVE_TOK
    if (t && t->tok) return tok_vocab_size(t->tok);
#else
    (void)t;
#endif
    return 0;
}

void *srv_text_aux(srv_text *t, void *(*make)(void *arg), void *arg, void (*free_fn)(void *))
{
    pthread_mutex_lock(&t->aux_mu);
    if (!t->aux) {
        t->aux = make(arg);
        t->aux_free = free_fn;
    }
    void *a = t->aux;
    pthread_mutex_unlock(&t->aux_mu);
    return a;
}
