/*
 * jinja_internal.h — AST, render context and value helpers shared by
 * jinja_parse.c (lexer + parser), jinja_eval.c (statements, expressions) and
 * jinja_builtins.c (filters, tests, methods, str()/repr()/tojson).
 *
 * Values are json_t with owned references; NULL stands for Jinja's Undefined.
 * Evaluation functions return 0, or -1 after recording an error in the context.
 */
#ifndef EMOE_JINJA_INTERNAL_H
#define EMOE_JINJA_INTERNAL_H

#include "engine/jinja.h"

enum jkind {
    /* statements */
    JN_BODY, JN_TEXT, JN_OUT, JN_IF, JN_FOR, JN_SET, JN_SETBLOCK, JN_MACRO, JN_BREAK, JN_CONTINUE,
    /* expressions */
    JE_LIT, JE_NAME, JE_ATTR, JE_ITEM, JE_SLICE, JE_CALL, JE_FILTER, JE_TEST, JE_BIN, JE_AND, JE_OR,
    JE_NOT, JE_NEG, JE_POS, JE_COND, JE_LIST, JE_DICT,
};

enum jop {
    JOP_ADD, JOP_SUB, JOP_MUL, JOP_DIV, JOP_FLOORDIV, JOP_MOD, JOP_POW, JOP_CONCAT,
    JOP_EQ, JOP_NE, JOP_LT, JOP_GT, JOP_LE, JOP_GE, JOP_IN, JOP_NOTIN,
};

typedef struct jnode jnode;
struct jnode {
    int kind, line, op, neg;
    char *str;        /* TEXT data, NAME, ATTR/FILTER/TEST/MACRO name, SET attribute */
    size_t str_len;
    json_t *lit;      /* LIT */
    jnode *a, *b, *c, *d;
    jnode **v;        /* children: body statements, args, list items, if (cond, body) pairs */
    int nv, cv;
    char **kn;        /* keyword names (call kwargs, macro params, for/set target names) */
    jnode **kv;       /* keyword values (NULL where none: macro param without default) */
    int nk, ck;
};

struct jinja_tpl {
    jnode *root;
};

void jn_free(jnode *n);

typedef emoe_buf jbuf; /* engine/common.h */

static inline int jbuf_put(jbuf *b, const char *s, size_t n) { return emoe_buf_put(b, s, n); }

typedef struct jmacro {
    const char *name;
    const jnode *node;
} jmacro;

typedef struct jctx {
    jinja_limits lim;
    emoe_err *err;
    jbuf *out;
    json_t *frames[256];
    int nframes, base;
    jmacro macros[64];
    int nmacros;
    json_t *ns[256]; /* namespace objects (attribute assignment allowed) */
    int nns;
    long iters;
    int depth;
    int brk, cont;
} jctx;

/* Records an error (first one wins) and returns -1. */
int jx_fail(jctx *c, int line, emoe_status code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* str(): appends the Python str() of v (undefined -> ""). */
int jv_str(jctx *c, jbuf *b, json_t *v);
/* repr() of v (as inside a printed list). */
int jv_repr(jctx *c, jbuf *b, json_t *v);
int jv_truthy(json_t *v);
int jv_equal(json_t *a, json_t *b);
const char *jv_type(json_t *v);
/* New string value (NULL on OOM). */
json_t *jv_strn(const char *s, size_t n);
/* Python json.dumps. indent < 0: none. */
int jv_tojson(jctx *c, jbuf *b, json_t *v, int indent, int sort_keys, int ensure_ascii, int level);
/* Iterates v into a new JSON array of items (dict -> keys, string -> chars,
 * undefined -> empty); -1 with an error if not iterable. */
int jv_iter_list(jctx *c, int line, json_t *v, json_t **out);
/* Python truthy-free number check/extraction. */
int jv_is_num(json_t *v);
double jv_num(json_t *v);
/* Number of code points. */
size_t jv_strlen_cp(const char *s, size_t n);

/* Filters, tests, methods and global functions. Arguments are owned by the
 * caller; results are new references (NULL = undefined). */
int jb_filter(jctx *c, const jnode *n, json_t *v, json_t **args, int nargs, char **kn, json_t **kv, int nk,
              json_t **out);
int jb_test(jctx *c, const jnode *n, json_t *v, json_t **args, int nargs, int *result);
/* Returns 1 if `name` is a method of v's type and was called, 0 if not a method. */
int jb_method(jctx *c, const jnode *n, json_t *v, const char *name, json_t **args, int nargs, char **kn, json_t **kv,
              int nk, json_t **out, int *rc);
/* Returns 1 if `name` is a global function and was called. */
int jb_global(jctx *c, const jnode *n, const char *name, json_t **args, int nargs, char **kn, json_t **kv, int nk,
              json_t **out, int *rc);

/* Counts work against the iteration budget. */
int jx_tick(jctx *c, int line, long n);

#endif
