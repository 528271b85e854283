/*
 * gram_schema.c — JSON Schema (and tool definitions) -> the node tree that
 * gram_match.c runs. Every keyword is either honoured, a known annotation, or
 * an EMOE_EUNSUP error naming it and its place in the schema.
 */
#include "engine/gram_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SCHEMA_DEPTH 24

gram *gram_new(void)
{
    gram *g = calloc(1, sizeof *g);
    if (g) atomic_init(&g->refs, 1);
    return g;
}

gnode *gram_node_new(gram *g, gn_kind k)
{
    gnode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->k = k;
    n->next_alloc = g->nodes;
    g->nodes = n;
    return n;
}

static void node_free(gnode *n)
{
    for (int i = 0; i < n->n_props; i++) free(n->names[i]);
    free(n->names);
    free(n->props);
    for (int i = 0; i < n->n_lit; i++) {
        free(n->lit[i]);
        if (n->suffix) free(n->suffix[i]);
    }
    free(n->lit);
    free(n->lit_len);
    free(n->alt);
    free(n->suffix);
    free(n);
}

void gram_release(gram *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    for (gnode *n = g->nodes, *next; n; n = next) {
        next = n->next_alloc;
        node_free(n);
    }
    free(g);
}

typedef struct cctx {
    gram *g;
    emoe_err *err;
    json_t *root;   /* for "$ref": "#/$defs/..." */
    /* compiled $ref targets, shared (a DAG of definitions compiles once) */
    json_t *ref_target[64];
    gnode *ref_node[64];  /* NULL while being compiled: a cycle */
    int n_ref;
} cctx;

static gnode *fail(cctx *c, emoe_status st, const char *path, const char *fmt, const char *what)
{
    char msg[200];
    snprintf(msg, sizeof msg, fmt, what);
    emoe_errf(c->err, st, "%s: %s", path, msg);
    return NULL;
}

static gnode *oom(cctx *c)
{
    emoe_errf(c->err, EMOE_ENOMEM, "out of memory compiling a schema");
    return NULL;
}

static int add_literal(gnode *n, const char *s, size_t len)
{
    char **l = realloc(n->lit, (size_t)(n->n_lit + 1) * sizeof *l);
    if (!l) return -1;
    n->lit = l;
    size_t *ll = realloc(n->lit_len, (size_t)(n->n_lit + 1) * sizeof *ll);
    if (!ll) return -1;
    n->lit_len = ll;
    char *d = malloc(len + 1);
    if (!d) return -1;
    memcpy(d, s, len);
    d[len] = 0;
    n->lit[n->n_lit] = d;
    n->lit_len[n->n_lit++] = len;
    return 0;
}

static const char *json_type_name(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int type_allows(const char *type, json_t *v)
{
    if (!type) return 1;
    const char *t = json_type_name(v);
    if (!strcmp(type, t)) return 1;
    if (!strcmp(type, "number") && !strcmp(t, "integer")) return 1;
    if (!strcmp(type, "integer") && json_is_real(v) && json_real_value(v) == floor(json_real_value(v))) return 1;
    return 0;
}

static const char *const annotations[] = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "strict", "$defs", "definitions", NULL,
};

static const char *const kw_object[] = {"properties", "required", "additionalProperties", NULL};
static const char *const kw_array[] = {"items", "minItems", "maxItems", NULL};
static const char *const kw_string[] = {"minLength", "maxLength", NULL};
static const char *const kw_number[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};

static int in(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

static int get_count(cctx *c, json_t *s, const char *k, const char *path, int *out)
{
    json_t *v = json_object_get(s, k);
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100000) {
        fail(c, EMOE_EINVAL, path, "'%s' must be a non-negative integer", k);
        return -1;
    }
    *out = (int)json_integer_value(v);
    return 1;
}

static int get_num(cctx *c, json_t *s, const char *k, const char *path, double *out)
{
    json_t *v = json_object_get(s, k);
    if (!v) return 0;
    if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        fail(c, EMOE_EINVAL, path, "'%s' must be a number", k);
        return -1;
    }
    *out = json_number_value(v);
    return 1;
}

static gnode *compile(cctx *c, json_t *s, const char *path, int depth);

static gnode *compile_enum(cctx *c, json_t *s, const char *type, const char *path)
{
    gnode *n = gram_node_new(c->g, GN_LITERALS);
    if (!n) return oom(c);
    json_t *e = json_object_get(s, "enum"), *k = json_object_get(s, "const");
    json_t *one[1] = {k};
    size_t cnt = e ? json_array_size(e) : 1;
    if (e && (!json_is_array(e) || cnt == 0)) return fail(c, EMOE_EINVAL, path, "'%s' must be a non-empty array", "enum");
    if (cnt > GRAM_MAX_ENUM) return fail(c, EMOE_EUNSUP, path, "'%s' with more than 64 values is not supported", "enum");
    for (size_t i = 0; i < cnt; i++) {
        json_t *v = e ? json_array_get(e, i) : one[0];
        if (!type_allows(type, v)) return fail(c, EMOE_EINVAL, path, "an '%s' value does not match 'type'", e ? "enum" : "const");
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!d) return oom(c);
        int dup = 0;
        for (int j = 0; j < n->n_lit; j++) dup |= !strcmp(n->lit[j], d);
        int rc = dup ? 0 : add_literal(n, d, strlen(d));
        free(d);
        if (rc) return oom(c);
    }
    return n;
}

static int name_plain(const char *s)
{
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20) return 0;
    return 1;
}

static gnode *compile_object(cctx *c, json_t *s, const char *path, int depth)
{
    gnode *n = gram_node_new(c->g, GN_OBJECT);
    if (!n) return oom(c);
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *add = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return fail(c, EMOE_EINVAL, path, "'%s' must be an object", "properties");
    if (req && !json_is_array(req)) return fail(c, EMOE_EINVAL, path, "'%s' must be an array", "required");
    if (add && !json_is_boolean(add) && !json_is_object(add))
        return fail(c, EMOE_EINVAL, path, "'%s' must be a boolean or a schema", "additionalProperties");
    size_t np = props ? json_object_size(props) : 0;
    if (np > GRAM_MAX_ENUM) return fail(c, EMOE_EUNSUP, path, "more than 64 '%s' are not supported", "properties");
    if (np == 0) {
        /* No declared members: {} when additionalProperties is false, else
         * any members (which a specific additionalProperties schema would
         * constrain: not supported). */
        if (json_is_false(add)) return n;
        if (json_is_object(add) && json_object_size(add))
            return fail(c, EMOE_EUNSUP, path, "'%s' as a schema (without 'properties') is not supported", "additionalProperties");
        if (req && json_array_size(req))
            return fail(c, EMOE_EINVAL, path, "'%s' names properties that are not in 'properties'", "required");
        n->free_members = 1;
        return n;
    }
    n->names = calloc(np, sizeof *n->names);
    n->props = calloc(np, sizeof *n->props);
    if (!n->names || !n->props) return oom(c);
    const char *k;
    json_t *v;
    json_object_foreach(props, k, v) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s.properties.%s", path, k);
        if (!name_plain(k)) return fail(c, EMOE_EUNSUP, sub, "a property name that needs escaping is not supported%s", "");
        n->names[n->n_props] = strdup(k);
        if (!n->names[n->n_props]) return oom(c);
        gnode *p = compile(c, v, sub, depth + 1);
        n->props[n->n_props++] = p;
        if (!p) return NULL;
    }
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        json_t *r = json_array_get(req, i);
        if (!json_is_string(r)) return fail(c, EMOE_EINVAL, path, "'%s' must hold strings", "required");
        int found = 0;
        for (int j = 0; j < n->n_props; j++)
            if (!strcmp(n->names[j], json_string_value(r))) { n->required |= 1ull << j; found = 1; }
        if (!found) return fail(c, EMOE_EINVAL, path, "'required' names '%.64s', which is not in 'properties'", json_string_value(r));
    }
    return n;
}

static const char *const *kw_of(const char *type)
{
    if (!strcmp(type, "object")) return kw_object;
    if (!strcmp(type, "array")) return kw_array;
    if (!strcmp(type, "string")) return kw_string;
    if (!strcmp(type, "number") || !strcmp(type, "integer")) return kw_number;
    static const char *const none[] = {NULL};
    return none;
}

/* Alternatives told apart by their first byte (anyOf, oneOf, several types). */
static gnode *make_union(cctx *c, gnode **alts, int n, const char *path, const char *kw)
{
    for (int b = 0; b < 256; b++) {
        int k = 0;
        for (int i = 0; i < n; i++) k += gram_node_first_byte(alts[i], (unsigned char)b);
        if (k > 1) {
            char what[64];
            snprintf(what, sizeof what, "%s' alternatives that can start with the same character ('%c'", kw, b);
            return fail(c, EMOE_EUNSUP, path, "'%s) are not supported", what);
        }
    }
    gnode *u = gram_node_new(c->g, GN_UNION);
    if (!u) return oom(c);
    u->alt = calloc((size_t)n, sizeof *u->alt);
    if (!u->alt) return oom(c);
    memcpy(u->alt, alts, (size_t)n * sizeof *alts);
    u->n_alt = n;
    return u;
}

static gnode *compile_any_of(cctx *c, json_t *s, const char *path, int depth)
{
    const char *kw = json_object_get(s, "anyOf") ? "anyOf" : "oneOf";
    if (json_object_get(s, "anyOf") && json_object_get(s, "oneOf"))
        return fail(c, EMOE_EUNSUP, path, "'%s' together with 'anyOf' is not supported", "oneOf");
    json_t *a = json_object_get(s, kw);
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!strcmp(k, kw) || in(annotations, k)) continue;
        return fail(c, EMOE_EUNSUP, path, "'%.64s' next to 'anyOf'/'oneOf' is not supported", k);
    }
    size_t n = json_array_size(a);
    if (!json_is_array(a) || n == 0 || n > 16) return fail(c, EMOE_EUNSUP, path, "'%s' must be an array of 1..16 schemas", kw);
    gnode *alts[16];
    for (size_t i = 0; i < n; i++) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s.%s[%zu]", path, kw, i);
        if (!(alts[i] = compile(c, json_array_get(a, i), sub, depth + 1))) return NULL;
    }
    return n == 1 ? alts[0] : make_union(c, alts, (int)n, path, kw);
}

/* "type": [several]: one alternative per type with that type's keywords. */
static gnode *compile_types(cctx *c, json_t *s, json_t *types, const char *path, int depth)
{
    size_t n = json_array_size(types);
    if (n > 7) return fail(c, EMOE_EINVAL, path, "'%s' lists too many types", "type");
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!strcmp(k, "type") || in(annotations, k)) continue;
        int known = 0;
        for (size_t i = 0; i < n; i++)
            if (json_is_string(json_array_get(types, i)) && in(kw_of(json_string_value(json_array_get(types, i))), k)) known = 1;
        if (!known) return fail(c, EMOE_EUNSUP, path, "'%.64s' is not supported", k);
    }
    gnode *alts[8];
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(types, i);
        if (!json_is_string(t)) return fail(c, EMOE_EINVAL, path, "'%s' must hold strings", "type");
        json_t *sub = json_pack("{s:O}", "type", t);
        if (!sub) return oom(c);
        json_object_foreach(s, k, v)
            if (in(kw_of(json_string_value(t)), k)) json_object_set(sub, k, v);
        alts[i] = compile(c, sub, path, depth + 1);
        json_decref(sub);
        if (!alts[i]) return NULL;
    }
    return n == 1 ? alts[0] : make_union(c, alts, (int)n, path, "type");
}

static gnode *compile(cctx *c, json_t *s, const char *path, int depth)
{
    if (depth > MAX_SCHEMA_DEPTH) return fail(c, EMOE_EUNSUP, path, "schemas nested deeper than %s levels are not supported", "24");
    if (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0)) return gram_any_node();
    if (!json_is_object(s)) return fail(c, EMOE_EINVAL, path, "a schema must be an object%s", "");
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        const char *k;
        json_t *v;
        json_object_foreach(s, k, v) {
            if (!strcmp(k, "$ref") || in(annotations, k)) continue;
            return fail(c, EMOE_EUNSUP, path, "'%.64s' next to '$ref' is not supported", k);
        }
        const char *r = json_string_value(ref), *name = NULL;
        json_t *defs = NULL;
        if (r && !strncmp(r, "#/$defs/", 8)) { defs = json_object_get(c->root, "$defs"); name = r + 8; }
        else if (r && !strncmp(r, "#/definitions/", 14)) { defs = json_object_get(c->root, "definitions"); name = r + 14; }
        if (!name || strchr(name, '/') || strchr(name, '~'))
            return fail(c, EMOE_EUNSUP, path, "'$ref' other than \"#/$defs/<name>\" is not supported (%.64s)", r ? r : "?");
        json_t *target = json_object_get(defs, name);
        if (!target) return fail(c, EMOE_EINVAL, path, "'$ref' names '%.64s', which is not defined", name);
        char sub[512];
        snprintf(sub, sizeof sub, "%s($ref %s)", path, name);
        for (int i = 0; i < c->n_ref; i++)
            if (c->ref_target[i] == target) {
                if (!c->ref_node[i]) return fail(c, EMOE_EUNSUP, path, "recursive '$ref' (%.64s) is not supported", name);
                return c->ref_node[i];
            }
        if (c->n_ref >= 64) return fail(c, EMOE_EUNSUP, path, "more than 64 '$ref' targets are not supported%s", "");
        int slot = c->n_ref++;
        c->ref_target[slot] = target;
        c->ref_node[slot] = NULL;
        gnode *n = compile(c, target, sub, depth + 1);
        c->ref_node[slot] = n;
        return n;
    }
    if (json_object_get(s, "anyOf") || json_object_get(s, "oneOf")) return compile_any_of(c, s, path, depth);
    json_t *t = json_object_get(s, "type");
    const char *type = NULL;
    if (json_is_array(t)) {
        if (json_array_size(t) == 0) return fail(c, EMOE_EINVAL, path, "'%s' must not be empty", "type");
        if (json_array_size(t) > 1 && !json_object_get(s, "enum") && !json_object_get(s, "const"))
            return compile_types(c, s, t, path, depth);
        if (json_array_size(t) > 1) t = NULL; /* enum/const decide */
        else t = json_array_get(t, 0);
    }
    if (t) {
        if (!json_is_string(t)) return fail(c, EMOE_EINVAL, path, "'%s' must be a string", "type");
        type = json_string_value(t);
        static const char *const types[] = {"object", "array", "string", "integer", "number", "boolean", "null", NULL};
        if (!in(types, type)) return fail(c, EMOE_EINVAL, path, "unknown type '%.32s'", type);
    }
    /* Every keyword must be known for the kind it applies to. */
    int has_enum = json_object_get(s, "enum") || json_object_get(s, "const");
    const char *kind = type;
    if (!kind && !has_enum) {
        if (json_object_get(s, "properties") || json_object_get(s, "required") || json_object_get(s, "additionalProperties")) kind = "object";
        else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems")) kind = "array";
        else if (json_object_get(s, "minLength") || json_object_get(s, "maxLength")) kind = "string";
        else if (json_object_get(s, "minimum") || json_object_get(s, "maximum") || json_object_get(s, "exclusiveMinimum") ||
                 json_object_get(s, "exclusiveMaximum")) kind = "number";
    }
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!strcmp(k, "type") || in(annotations, k)) continue;
        if ((!strcmp(k, "enum") || !strcmp(k, "const"))) continue;
        if (kind && !has_enum) {
            if (!strcmp(kind, "object") && in(kw_object, k)) continue;
            if (!strcmp(kind, "array") && in(kw_array, k)) continue;
            if (!strcmp(kind, "string") && in(kw_string, k)) continue;
            if ((!strcmp(kind, "number") || !strcmp(kind, "integer")) && in(kw_number, k)) continue;
        }
        return fail(c, EMOE_EUNSUP, path, "'%.64s' is not supported", k);
    }
    if (has_enum) {
        if (json_object_get(s, "enum") && json_object_get(s, "const"))
            return fail(c, EMOE_EUNSUP, path, "'%s' together with 'enum' is not supported", "const");
        return compile_enum(c, s, type, path);
    }
    if (!kind) return gram_any_node();
    if (!strcmp(kind, "object")) return compile_object(c, s, path, depth);
    if (!strcmp(kind, "boolean") || !strcmp(kind, "null")) {
        gnode *n = gram_node_new(c->g, GN_LITERALS);
        if (!n) return oom(c);
        if (!strcmp(kind, "null") ? add_literal(n, "null", 4) : (add_literal(n, "true", 4) || add_literal(n, "false", 5)))
            return oom(c);
        return n;
    }
    if (!strcmp(kind, "array")) {
        gnode *n = gram_node_new(c->g, GN_ARRAY);
        if (!n) return oom(c);
        json_t *items = json_object_get(s, "items");
        char sub[512];
        snprintf(sub, sizeof sub, "%s.items", path);
        if (items && !json_is_object(items) && !json_is_boolean(items))
            return fail(c, EMOE_EUNSUP, sub, "'%s' must be one schema (tuples are not supported)", "items");
        if (json_is_false(items)) return fail(c, EMOE_EUNSUP, sub, "'%s': false is not supported", "items");
        n->items = items ? compile(c, items, sub, depth + 1) : gram_any_node();
        if (!n->items) return NULL;
        n->max_items = -1;
        if (get_count(c, s, "minItems", path, &n->min_items) < 0 || get_count(c, s, "maxItems", path, &n->max_items) < 0)
            return NULL;
        if (n->max_items < 0) n->max_items = n->min_items > GRAM_MAX_ITEMS ? n->min_items : GRAM_MAX_ITEMS;
        if (n->max_items < n->min_items) return fail(c, EMOE_EINVAL, path, "'%s' is below 'minItems'", "maxItems");
        return n;
    }
    if (!strcmp(kind, "string")) {
        gnode *n = gram_node_new(c->g, GN_STRING);
        if (!n) return oom(c);
        n->max_len = -1;
        if (get_count(c, s, "minLength", path, &n->min_len) < 0 || get_count(c, s, "maxLength", path, &n->max_len) < 0)
            return NULL;
        if (n->max_len < 0) n->max_len = n->min_len > GRAM_MAX_STRING ? n->min_len : GRAM_MAX_STRING;
        if (n->max_len < n->min_len) return fail(c, EMOE_EINVAL, path, "'%s' is below 'minLength'", "maxLength");
        if (n->max_len > 65535) return fail(c, EMOE_EUNSUP, path, "'%s' above 65535 is not supported", "maxLength");
        return n;
    }
    /* integer / number */
    int integer = !strcmp(kind, "integer");
    gnode *n = gram_node_new(c->g, integer ? GN_INTEGER : GN_NUMBER);
    if (!n) return oom(c);
    double x, lim = 1e15 - 1, eps = integer ? 1 : 1e-6;
    int r;
    if ((r = get_num(c, s, "minimum", path, &x)) < 0) return NULL;
    if (r) { n->has_lo = 1; n->lo = integer ? ceil(x) : x; }
    if ((r = get_num(c, s, "exclusiveMinimum", path, &x)) < 0) return NULL;
    if (r) { double lo = integer ? floor(x) + 1 : x + eps; if (!n->has_lo || lo > n->lo) n->lo = lo; n->has_lo = 1; }
    if ((r = get_num(c, s, "maximum", path, &x)) < 0) return NULL;
    if (r) { n->has_hi = 1; n->hi = integer ? floor(x) : x; }
    if ((r = get_num(c, s, "exclusiveMaximum", path, &x)) < 0) return NULL;
    if (r) { double hi = integer ? ceil(x) - 1 : x - eps; if (!n->has_hi || hi < n->hi) n->hi = hi; n->has_hi = 1; }
    if ((n->has_lo && n->lo > lim) || (n->has_hi && n->hi < -lim))
        return fail(c, EMOE_EUNSUP, path, "bounds beyond 1e15 are not supported%s", "");
    if (n->has_lo && n->has_hi && n->lo > n->hi)
        return fail(c, EMOE_EINVAL, path, "no %s lies within 'minimum'..'maximum'", integer ? "integer" : "number");
    if (!integer && ((n->has_lo && n->lo != floor(n->lo * 1e6) / 1e6) || (n->has_hi && n->hi != floor(n->hi * 1e6) / 1e6))) {
        /* Round bounds inward to the 6 fraction digits the output can have. */
        if (n->has_lo) n->lo = ceil(n->lo * 1e6 - 1e-9) / 1e6;
        if (n->has_hi) n->hi = floor(n->hi * 1e6 + 1e-9) / 1e6;
        if (n->has_lo && n->has_hi && n->lo > n->hi)
            return fail(c, EMOE_EUNSUP, path, "bounds closer than 1e-6 are not supported%s", "");
    }
    return n;
}

emoe_status gram_compile_schema(json_t *schema, gram **out, emoe_err *err)
{
    *out = NULL;
    gram *g = gram_new();
    if (!g) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    cctx c = {.g = g, .err = err, .root = schema};
    g->root = compile(&c, schema, "schema", 0);
    if (!g->root) {
        gram_release(g);
        return err->code ? err->code : EMOE_EINVAL;
    }
    *out = g;
    return EMOE_OK;
}

emoe_status gram_compile_json_object(gram **out, emoe_err *err)
{
    *out = gram_new();
    if (!*out) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    (*out)->root = gram_any_object_node();
    return EMOE_OK;
}

emoe_status gram_compile_tool_call(json_t *tools, const char *only_name, gram **out, emoe_err *err)
{
    *out = NULL;
    gram *g = gram_new();
    if (!g) return emoe_errf(err, EMOE_ENOMEM, "out of memory");
    cctx c = {.g = g, .err = err};
    gnode *n = gram_node_new(g, GN_CHOICE);
    size_t nt = json_array_size(tools);
    if (!n || nt > GRAM_MAX_ENUM) goto bad;
    n->alt = calloc(nt ? nt : 1, sizeof *n->alt);
    n->suffix = calloc(nt ? nt : 1, sizeof *n->suffix);
    if (!n->alt || !n->suffix) goto bad;
    for (size_t i = 0; i < nt; i++) {
        json_t *f = json_object_get(json_array_get(tools, i), "function");
        json_t *name = json_object_get(f, "name"), *params = json_object_get(f, "parameters");
        if (!json_is_string(name) || !name_plain(json_string_value(name))) {
            emoe_errf(err, EMOE_EINVAL, "tools[%zu].function.name: must be a plain string", i);
            goto bad;
        }
        if (only_name && strcmp(only_name, json_string_value(name))) continue;
        char path[128], pre[256];
        snprintf(path, sizeof path, "tools[%zu].function.parameters", i);
        gnode *p;
        if (!params || json_is_null(params)) {
            p = gram_node_new(g, GN_OBJECT); /* no parameters: {} */
            if (!p) goto bad;
        } else {
            c.root = params;
            c.n_ref = 0;
            p = compile(&c, params, path, 1);
            if (!p) goto bad;
        }
        snprintf(pre, sizeof pre, "{\"name\":\"%s\",\"arguments\":", json_string_value(name));
        int k = n->n_lit;
        if (add_literal(n, pre, strlen(pre))) goto bad;
        n->alt[k] = p;
        n->suffix[k] = strdup("}");
        if (!n->suffix[k]) goto bad;
    }
    if (n->n_lit == 0) {
        emoe_errf(err, EMOE_EINVAL, "tool_choice: no such tool '%s'", only_name ? only_name : "");
        goto bad;
    }
    g->root = n;
    *out = g;
    return EMOE_OK;
bad:
    if (!err->code) emoe_errf(err, EMOE_ENOMEM, "out of memory compiling tools");
    gram_release(g);
    return err->code;
}
