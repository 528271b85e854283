/* oai_gen.c — see oai_gen.h. */
#include "server/oai_gen.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INVALID "invalid_request_error"


static int token_bytes(void *ctx, int id, emoe_buf *out)
{
    srv_text *t = ctx;
    out->n = 0;
    if (srv_text_is_special(t, id)) return -1;
    return srv_text_token_bytes(t, id, out);
}

typedef struct vocab_arg {
    srv_text *t;
    const eng_model_desc *d;
} vocab_arg;

static void *vocab_make(void *p)
{
    vocab_arg *a = p;
    int n = srv_text_vocab(a->t);
    double t0 = emoe_now();
    gram_vocab *v = n > 0 ? gram_vocab_new(n, token_bytes, a->t, a->d->eos_ids, a->d->n_eos) : NULL;
    if (v) LOG_INFO("constrained decoding: indexed %d token byte strings in %.2fs", n, emoe_now() - t0);
    return v;
}

static void vocab_free(void *v) { gram_vocab_free(v); }

const gram_vocab *oai_gen_vocab(srv_text *t, const eng_model_desc *d)
{
    vocab_arg a = {t, d};
    return srv_text_aux(t, vocab_make, &a, vocab_free);
}

static const char *choice_str(json_t *tc) { return json_is_string(tc) ? json_string_value(tc) : NULL; }

int oai_gen_prepare(srv_text *t, int vocab, const eng_model_desc *d, srv_gen_req *g, oai_gen *og, srv_error *e)
{
    memset(og, 0, sizeof *og);
    for (int i = 0; i < g->n_bias; i++)
        if (g->bias_ids[i] < 0 || g->bias_ids[i] >= vocab)
            return srv_fail(e, 400, INVALID, NULL, "logit_bias", "logit_bias: token id %d is outside the vocabulary [0, %d)",
                            (int)g->bias_ids[i], vocab);
    emoe_err err = {0};
    const char *param = NULL;
    if (g->tools) {
        const char *tc = choice_str(g->tool_choice);
        if (!tc || strcmp(tc, "none")) {
            /* Render the tools through the chat template. */
            json_t *kw = g->template_kwargs ? json_copy(g->template_kwargs) : json_object();
            if (!kw) return srv_fail(e, 500, "server_error", NULL, NULL, "out of memory");
            if (!json_object_get(kw, "tools")) json_object_set(kw, "tools", g->tools);
            json_decref(g->template_kwargs);
            g->template_kwargs = kw;
            og->tools = 1;
        }
        const char *only = NULL;
        if (json_is_object(g->tool_choice))
            only = json_string_value(json_object_get(json_object_get(g->tool_choice, "function"), "name"));
        if (only || (tc && !strcmp(tc, "required"))) {
            param = "tools";
            if (gram_compile_tool_call(g->tools, only, &og->g, &err) != EMOE_OK) goto compile_fail;
            og->forced_tool = 1;
        }
    }
    if (g->response_format) {
        param = "response_format";
        const char *ty = json_string_value(json_object_get(g->response_format, "type"));
        emoe_status st;
        if (ty && !strcmp(ty, "json_object")) st = gram_compile_json_object(&og->g, &err);
        else st = gram_compile_schema(json_object_get(json_object_get(g->response_format, "json_schema"), "schema"), &og->g, &err);
        if (st != EMOE_OK) goto compile_fail;
    }
    if (og->g) {
        if (!srv_text_available(t)) {
            oai_gen_free(og);
            return srv_fail(e, 400, INVALID, NULL, param, "structured output needs a tokenizer: %s", srv_text_missing_reason(t));
        }
        og->v = oai_gen_vocab(t, d);
        if (!og->v) {
            oai_gen_free(og);
            return srv_fail(e, 500, "server_error", NULL, NULL, "cannot index the vocabulary for constrained decoding");
        }
    }
    return 0;
compile_fail:
    oai_gen_free(og);
    if (err.code == EMOE_ENOMEM) return srv_fail(e, 500, "server_error", NULL, NULL, "%s", err.msg);
    return srv_fail(e, 400, INVALID, NULL, param, "%s: %s", param, err.msg);
}

static int c_mask(void *st, float *l, int vocab) { return gram_state_mask(st, l, vocab); }
static int c_accept(void *st, int32_t t) { return gram_state_accept_token(st, t); }
static void c_free(void *st) { gram_state_free(st); }
static const sched_constraint_ops gram_ops = {c_mask, c_accept, c_free};

emoe_status oai_gen_constraint(oai_gen *og, const sched_constraint_ops **ops, void **state, emoe_err *err)
{
    *ops = NULL;
    *state = NULL;
    if (!og->g) return EMOE_OK;
    gram_state *s = gram_state_new(og->g, og->v);
    if (!s) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    *ops = &gram_ops;
    *state = s;
    return EMOE_OK;
}

void oai_gen_constraint_free(const sched_constraint_ops *ops, void *state)
{
    if (ops && state) ops->free(state);
}

void oai_gen_free(oai_gen *og)
{
    gram_release(og->g);
    og->g = NULL;
}
