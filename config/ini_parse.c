/*
 * ini_parse.c — the INI reader behind cfg_load_file (issue 14): one pass
 * that reports every error, not just the first, with file:line each:
 *   - `[section]` headers; an unclosed `[server` is named as such;
 *   - `key = value` (or `key: value`); a key before any section is an error;
 *   - comments: lines starting with `;` or `#`, and inline comments — a `;` or
 *     `#` preceded by whitespace ends the value (`port = 8080 # http`); a `#`
 *     inside a word (`api_keys = ab#cd`) is part of the value;
 *   - a key set twice (in the same section, even across repeated headers) is
 *     an error naming both lines, not silently last-wins.
 * Values are applied through cfg_set (types, bounds) as they are read.
 */
#include "config/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INI_MAX_ERRORS 20

typedef struct seen_key {
    char section[64], key[64];
    int line;
} seen_key;

typedef struct ini_state {
    const char *path;
    char msgs[1024];
    size_t used;
    int n_err;
    seen_key *seen;
    size_t n_seen, cap_seen;
} ini_state;

static void ini_error(ini_state *s, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ini_error(ini_state *s, int line, const char *fmt, ...)
{
    s->n_err++;
    if (s->n_err > INI_MAX_ERRORS) return;
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    int w = snprintf(s->msgs + s->used, sizeof s->msgs - s->used, "%s%s:%d: %s", s->used ? "\n" : "", s->path, line, m);
    if (w > 0) s->used = s->used + (size_t)w < sizeof s->msgs ? s->used + (size_t)w : sizeof s->msgs - 1;
}

static char *trim(char *a)
{
    while (*a == ' ' || *a == '\t') a++;
    size_t n = strlen(a);
    while (n && (a[n - 1] == ' ' || a[n - 1] == '\t' || a[n - 1] == '\r')) a[--n] = 0;
    return a;
}

/* Cuts an inline comment: `;` or `#` at the start or after whitespace. */
static void cut_comment(char *v)
{
    for (char *p = v; *p; p++)
        if ((*p == ';' || *p == '#') && (p == v || p[-1] == ' ' || p[-1] == '\t')) { *p = 0; return; }
}

static int seen_add(ini_state *s, const char *section, const char *key, int line)
{
    for (size_t i = 0; i < s->n_seen; i++)
        if (!strcmp(s->seen[i].section, section) && !strcmp(s->seen[i].key, key)) return s->seen[i].line;
    if (s->n_seen == s->cap_seen) {
        size_t nc = s->cap_seen ? s->cap_seen * 2 : 32;
        seen_key *p = realloc(s->seen, nc * sizeof *p);
        if (!p) return 0;
        s->seen = p;
        s->cap_seen = nc;
    }
    seen_key *k = &s->seen[s->n_seen++];
    snprintf(k->section, sizeof k->section, "%s", section);
    snprintf(k->key, sizeof k->key, "%s", key);
    k->line = line;
    return 0;
}

emoe_status cfg_ini_apply(emoe_config *c, const char *path, char *text, emoe_err *err)
{
    ini_state s = {.path = path};
    char section[64] = "";
    int have_section = 0, section_ok = 0;
    int line = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        char *l = trim(p);
        p = nl ? nl + 1 : NULL;
        if (!*l || *l == ';' || *l == '#') continue;
        if (*l == '[') {
            char *close = strchr(l, ']');
            if (!close) {
                ini_error(&s, line, "unclosed section header '%.60s' (expected ']')", l);
                have_section = 1;
                section_ok = 0; /* the keys that follow are not applied (their section is unknown) */
                continue;
            }
            *close = 0;
            char *rest = trim(close + 1);
            if (*rest && *rest != ';' && *rest != '#')
                ini_error(&s, line, "unexpected text after ']': '%.60s'", rest);
            char *name = trim(l + 1);
            have_section = 1;
            if (!*name || strlen(name) >= sizeof section) {
                ini_error(&s, line, "bad section name '%.60s'", name);
                section_ok = 0;
                continue;
            }
            snprintf(section, sizeof section, "%s", name);
            section_ok = 1;
            /* Name an unknown section once, at its header. */
            size_t n_tab;
            const cfg_entry *tab = cfg_table(&n_tab);
            int known = 0;
            for (size_t i = 0; i < n_tab && !known; i++) known = !strcmp(tab[i].section, section);
            if (!known) {
                ini_error(&s, line, "unknown section [%s]", section);
                section_ok = 0;
            }
            continue;
        }
        char *eq = strpbrk(l, "=:");
        if (!eq) {
            ini_error(&s, line, "syntax error: '%.60s' (expected [section], key = value, or a ; or # comment)", l);
            continue;
        }
        *eq = 0;
        char *key = trim(l);
        char *val = eq + 1;
        cut_comment(val);
        val = trim(val);
        if (!*key) { ini_error(&s, line, "syntax error: no key before '='"); continue; }
        if (!have_section) { ini_error(&s, line, "key '%.60s' is outside any [section]", key); continue; }
        if (!section_ok) continue;
        int first = seen_add(&s, section, key, line);
        if (first) {
            ini_error(&s, line, "duplicate key '%.60s' in [%s] (first set on line %d)", key, section, first);
            continue;
        }
        emoe_err e;
        if (cfg_set(c, section, key, val, "", &e) != EMOE_OK) {
            const char *m = e.msg;
            if (m[0] == ':' && m[1] == ' ') m += 2;
            ini_error(&s, line, "%s", m);
        }
    }
    free(s.seen);
    if (!s.n_err) return EMOE_OK;
    if (s.n_err > INI_MAX_ERRORS)
        return emoe_errf(err, EMOE_EINVAL, "%s\n%s: ... %d errors in all", s.msgs, path, s.n_err);
    return emoe_errf(err, EMOE_EINVAL, "%s", s.msgs);
}
