/*
 * oai_gen.h — per-request preparation of the OpenAI extras that shape
 * generation: logit_bias ids checked against the vocabulary, tools rendered
 * through the chat template (its `tools` variable), and the constraint that
 * structured output and forced tool calls decode under (engine/grammar.h).
 */
#ifndef EMOE_OAI_GEN_H
#define EMOE_OAI_GEN_H

#include "engine/grammar.h"
#include "engine/model.h"
#include "scheduler/sched.h"
#include "server/request.h"
#include "server/text.h"

typedef struct oai_gen {
    int tools;               /* parse tool calls from the output */
    int forced_tool;         /* tool_choice required / named: the output is one constrained call */
    gram *g;                 /* the constraint, or NULL */
    const gram_vocab *v;
} oai_gen;

/* Validates and prepares; may add `tools` to g->template_kwargs. 0, or -1
 * with e set (400 naming the field: logit_bias, response_format, tools). */
int oai_gen_prepare(srv_text *t, int vocab, const eng_model_desc *d, srv_gen_req *g, oai_gen *og, srv_error *e);
/* A fresh constraint state for one choice (*ops NULL when unconstrained). */
emoe_status oai_gen_constraint(oai_gen *og, const sched_constraint_ops **ops, void **state, emoe_err *err);
void oai_gen_constraint_free(const sched_constraint_ops *ops, void *state);
void oai_gen_free(oai_gen *og);

/* The grammar vocabulary of t (built on first use, kept for the process). */
const gram_vocab *oai_gen_vocab(srv_text *t, const eng_model_desc *d);

#endif
