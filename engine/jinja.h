/*
 * jinja.h — a small, sandboxed Jinja2 subset for chat templates.
 *
 * Behaves like transformers' chat-template environment: trim_blocks and
 * lstrip_blocks on, one trailing newline of the template dropped, loop
 * controls (break/continue) enabled, `tojson` as json.dumps(ensure_ascii=False).
 * Supported: {{ }}, {% if/elif/else %}, {% for x[, y] in ... [if ...] %} with
 * loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem and
 * {% else %}, {% set %} (names, tuples, namespace attributes, block set),
 * {% macro %} and calls, {% break %}/{% continue %}, {% generation %} (pass
 * through), whitespace control {%- -%} {%+ +%}, comments; expressions with
 * Python semantics for + - * / // % ** ~, comparisons, in / not in, and/or/not,
 * x if c else y, literals (strings, numbers, lists, dicts, tuples), attribute
 * and item access, slicing incl. [::-1], filters, tests (is / is not) and
 * str/dict methods; globals range, namespace, dict, raise_exception,
 * strftime_now. See jinja_builtins.c for the filter/test/method lists.
 *
 * Templates are untrusted: there is no file, import/include or environment
 * access; recursion depth, loop iterations and output size are bounded; any
 * unsupported construct is an EMOE_EUNSUP error naming it and its line.
 * Values are jansson json_t (undefined is represented internally).
 */
#ifndef EMOE_JINJA_H
#define EMOE_JINJA_H

#include <stddef.h>

#include <jansson.h>

#include "engine/common.h"

typedef struct jinja_tpl jinja_tpl;

typedef struct jinja_limits {
    size_t max_output;   /* bytes of rendered output (and of any string built) */
    long max_iterations; /* loop iterations + range() sizes over a whole render */
    int max_depth;       /* macro-call and expression nesting */
} jinja_limits;

/* Defaults: 16 MiB output, 1,000,000 iterations, depth 64. */
void jinja_limits_default(jinja_limits *l);

/* Parses a template. On success *out is owned by the caller (jinja_free). On a
 * syntax error returns EMOE_EINVAL (EMOE_EUNSUP for unsupported tags) with the
 * line in err. */
emoe_status jinja_parse(const char *src, size_t len, jinja_tpl **out, emoe_err *err);
void jinja_free(jinja_tpl *t);

/* Renders with `vars` (a JSON object: its members are the template's global
 * variables; borrowed, never modified). lim NULL = defaults. On success *out is
 * a malloc'd NUL-terminated string of *out_len bytes (caller frees). On failure
 * *out is NULL and err says what failed and where; raise_exception(msg) gives
 * EMOE_EINVAL with msg. */
emoe_status jinja_render(const jinja_tpl *t, json_t *vars, const jinja_limits *lim, char **out, size_t *out_len,
                         emoe_err *err);

#endif
