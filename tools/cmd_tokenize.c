/*
 * cmd_tokenize.c — `emoe tokenize`, `emoe detokenize` and `emoe chat-template`:
 * the tokenizer and chat template of a model directory (or a directory holding
 * only tokenizer files) from the command line. Output is exact: detokenize and
 * chat-template print the text with no newline added. Bad arguments exit 2;
 * failures to load or encode exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/common.h"
#include "engine/tokenizer.h"
#include "tools/args.h"
#include "tools/cmds.h"

static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            size_t nc = cap ? cap * 2 : 1 << 16;
            char *p = realloc(b, nc + 1);
            if (!p) { free(b); b = NULL; break; }
            b = p;
            cap = nc;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (f != stdin) fclose(f);
    if (b) { b[n] = 0; *len = n; }
    return b;
}

static tok_tokenizer *load(const char *cmd, const char *dir)
{
    tok_tokenizer *t = NULL;
    emoe_err err = {0};
    if (tok_load_dir(dir, &t, &err) != EMOE_OK) {
        fprintf(stderr, "emoe %s: %s\n", cmd, err.msg);
        return NULL;
    }
    return t;
}

static void tokenize_usage(FILE *f)
{
    fprintf(f, "usage: emoe tokenize -m DIR (--text T | --text-file F) [--json] [--add-special] [--bench]\n"
               "  -m, --model DIR     model directory, or a directory with tokenizer.json\n"
               "  --text T            text to encode\n"
               "  --text-file F       encode the contents of file F ('-' = stdin)\n"
               "  --json              print {\"ids\":[...]} instead of comma-separated ids\n"
               "  --add-special       apply the tokenizer's post-processor (e.g. <s>)\n"
               "  --bench             print encode throughput (cold and warm piece cache) to stderr\n");
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    int json = 0, add_special = 0, bench = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { tokenize_usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(v = arg_value("tokenize", argc, argv, &i))) return 2; model = v; }
        else if (!strcmp(a, "--text")) { if (!(v = arg_value("tokenize", argc, argv, &i))) return 2; text = v; }
        else if (!strcmp(a, "--text-file")) { if (!(v = arg_value("tokenize", argc, argv, &i))) return 2; file = v; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--add-special")) add_special = 1;
        else if (!strcmp(a, "--bench")) bench = 1;
        else { fprintf(stderr, "emoe tokenize: unknown option '%s'\n", a); tokenize_usage(stderr); return 2; }
    }
    if (!model) { fprintf(stderr, "emoe tokenize: -m DIR is required\n"); return 2; }
    if (!!text == !!file) { fprintf(stderr, "emoe tokenize: give exactly one of --text or --text-file\n"); return 2; }
    size_t len = 0;
    char *buf = NULL;
    if (file) {
        buf = read_all(file, &len);
        if (!buf) { fprintf(stderr, "emoe tokenize: --text-file: %s: %s\n", file, strerror(errno)); return 2; }
        text = buf;
    } else {
        len = strlen(text);
    }
    tok_tokenizer *t = load("tokenize", model);
    if (!t) { free(buf); return 1; }
    int32_t *ids = NULL;
    size_t n = 0;
    emoe_err err = {0};
    double t0 = emoe_now();
    emoe_status st = tok_encode(t, text, len, add_special, &ids, &n, &err);
    double t1 = emoe_now();
    if (st) {
        fprintf(stderr, "emoe tokenize: %s\n", err.msg);
        free(buf);
        tok_free(t);
        return 1;
    }
    if (bench) {
        int32_t *ids2 = NULL;
        size_t n2 = 0;
        double t2 = emoe_now();
        tok_encode(t, text, len, add_special, &ids2, &n2, &err);
        double t3 = emoe_now();
        free(ids2);
        fprintf(stderr, "{\"bytes\":%zu,\"tokens\":%zu,\"cold_s\":%.4f,\"cold_mb_per_s\":%.2f,\"warm_s\":%.4f,\"warm_mb_per_s\":%.2f}\n",
                len, n, t1 - t0, (double)len / 1e6 / (t1 - t0), t3 - t2, (double)len / 1e6 / (t3 - t2));
    }
    if (json) printf("{\"ids\":[");
    for (size_t i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
    printf(json ? "]}\n" : "\n");
    free(ids);
    free(buf);
    tok_free(t);
    return 0;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *model = NULL, *ids_s = NULL;
    int skip = 0, stream = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: emoe detokenize -m DIR --ids 1,2,3 [--skip-special] [--stream]\n"
                   "  prints the decoded text exactly (no newline added); --stream decodes\n"
                   "  token by token with the streaming detokenizer (same text)\n");
            return 0;
        }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(v = arg_value("detokenize", argc, argv, &i))) return 2; model = v; }
        else if (!strcmp(a, "--ids")) { if (!(v = arg_value("detokenize", argc, argv, &i))) return 2; ids_s = v; }
        else if (!strcmp(a, "--skip-special")) skip = 1;
        else if (!strcmp(a, "--stream")) stream = 1;
        else { fprintf(stderr, "emoe detokenize: unknown option '%s'\n", a); return 2; }
    }
    if (!model || !ids_s) { fprintf(stderr, "emoe detokenize: -m DIR and --ids LIST are required\n"); return 2; }
    int32_t *ids = NULL;
    int n = 0;
    if (arg_ids("detokenize", "--ids", ids_s, &ids, &n)) return 2;
    tok_tokenizer *t = load("detokenize", model);
    if (!t) { free(ids); return 1; }
    emoe_err err = {0};
    char *out = NULL;
    size_t len = 0, cap = 0;
    emoe_status st = EMOE_OK;
    if (stream) {
        tok_detok d;
        tok_detok_init(&d, t, skip);
        for (int i = 0; i < n && !st; i++) {
            size_t before = len;
            st = tok_detok_push(&d, ids[i], &out, &len, &cap, &err);
            if (!st) fwrite(out + before, 1, len - before, stdout);
        }
        size_t before = len;
        if (!st) st = tok_detok_flush(&d, &out, &len, &cap, &err);
        if (!st) fwrite(out + before, 1, len - before, stdout);
        tok_detok_free(&d);
    } else {
        st = tok_decode(t, ids, (size_t)n, skip, &out, &len, &err);
        if (!st) fwrite(out, 1, len, stdout);
    }
    if (st) fprintf(stderr, "emoe detokenize: %s\n", err.msg);
    free(out);
    free(ids);
    tok_free(t);
    return st ? (st == EMOE_EINVAL ? 2 : 1) : 0;
}

/* --kwarg k=v: v is parsed as JSON when it is valid JSON (true, 3, "x", [..]),
 * otherwise taken as a plain string. */
static int add_kwarg(json_t *kw, const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s) return -1;
    char key[256];
    size_t kl = (size_t)(eq - s);
    if (kl >= sizeof key) return -1;
    memcpy(key, s, kl);
    key[kl] = 0;
    json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
    if (!v) v = json_string(eq + 1);
    if (!v) return -1;
    json_object_set_new(kw, key, v);
    return 0;
}

int cmd_chat_template(int argc, char **argv)
{
    const char *model = NULL, *file = NULL;
    int agp = 1;
    json_t *kw = json_object();
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: emoe chat-template -m DIR --messages-file F [--no-generation-prompt] [--kwarg K=V]...\n"
                   "  F holds a JSON array of messages (or {\"messages\": [...]}; '-' = stdin).\n"
                   "  --kwarg enable_thinking=false passes a template variable (V is JSON if it parses).\n"
                   "  Prints the rendered prompt exactly (no newline added).\n");
            json_decref(kw);
            return 0;
        }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(v = arg_value("chat-template", argc, argv, &i))) goto out; model = v; }
        else if (!strcmp(a, "--messages-file")) { if (!(v = arg_value("chat-template", argc, argv, &i))) goto out; file = v; }
        else if (!strcmp(a, "--no-generation-prompt")) agp = 0;
        else if (!strcmp(a, "--kwarg")) {
            if (!(v = arg_value("chat-template", argc, argv, &i))) goto out;
            if (add_kwarg(kw, v)) { fprintf(stderr, "emoe chat-template: --kwarg: '%s' is not KEY=VALUE\n", v); goto out; }
        } else { fprintf(stderr, "emoe chat-template: unknown option '%s'\n", a); goto out; }
    }
    if (!model || !file) { fprintf(stderr, "emoe chat-template: -m DIR and --messages-file F are required\n"); goto out; }
    json_error_t je;
    json_t *msgs = !strcmp(file, "-") ? json_loadf(stdin, 0, &je) : json_load_file(file, 0, &je);
    if (!msgs) { fprintf(stderr, "emoe chat-template: %s: line %d: %s\n", file, je.line, je.text); goto out; }
    if (json_is_object(msgs)) {
        json_t *m = json_incref(json_object_get(msgs, "messages"));
        json_decref(msgs);
        msgs = m;
    }
    if (!json_is_array(msgs)) { fprintf(stderr, "emoe chat-template: %s: expected a JSON array of messages\n", file); json_decref(msgs); goto out; }
    tok_tokenizer *t = load("chat-template", model);
    if (!t) { json_decref(msgs); rc = 1; goto out; }
    char *text = NULL;
    emoe_err err = {0};
    if (tok_apply_chat_template(t, msgs, agp, kw, &text, &err) != EMOE_OK) {
        fprintf(stderr, "emoe chat-template: %s\n", err.msg);
        rc = 1;
    } else {
        fwrite(text, 1, strlen(text), stdout);
        rc = 0;
    }
    free(text);
    json_decref(msgs);
    tok_free(t);
out:
    json_decref(kw);
    return rc;
}
