/* eval_docs.c — loading the evaluation documents shared by `emoe perplexity`
 * and `emoe profile` (see eval_docs.h). */
#include "tools/eval_docs.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

void eval_docs_free(eval_doc *docs, int n)
{
    for (int i = 0; docs && i < n; i++) free(docs[i].ids);
    free(docs);
}

int eval_docs_load(const char *cmd, const char *path, const char *model_dir, const eng_model_desc *d, const char *only,
                   int max_docs, int max_len, int min_len, eval_doc **out, int *n_out)
{
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "%s: cannot open %s\n", cmd, path); return -1; }
    tok_tokenizer *tok = NULL;
    eval_doc *docs = NULL;
    int n = 0, cap = 0, lineno = 0, rc = -1;
    char *line = NULL;
    size_t lcap = 0;
    int bos = d->bos_id, eos = d->n_eos ? d->eos_ids[0] : -1;
    while (getline(&line, &lcap, f) > 0) {
        lineno++;
        if (line[strspn(line, " \t\r\n")] == 0) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        const char *task = o ? json_string_value(json_object_get(o, "task")) : NULL;
        if (!o || !task) {
            fprintf(stderr, "%s: %s:%d: %s\n", cmd, path, lineno, o ? "no \"task\" string" : je.text);
            json_decref(o);
            goto out;
        }
        if (only && strcmp(only, task)) { json_decref(o); continue; }
        int have = 0;
        for (int i = 0; i < n; i++) have += !strcmp(docs[i].task, task);
        if (have >= max_docs) { json_decref(o); continue; }
        json_t *ids = json_object_get(o, "ids"), *text = json_object_get(o, "text");
        int32_t *tids = NULL;
        size_t nt = 0;
        if (!json_is_array(ids)) {
            if (!json_is_string(text)) {
                fprintf(stderr, "%s: %s:%d: a document needs \"text\" (string) or \"ids\" (token ids)\n", cmd, path, lineno);
                json_decref(o);
                goto out;
            }
            emoe_err err = {0};
            if (!tok && tok_load_dir(model_dir, &tok, &err) != EMOE_OK) {
                fprintf(stderr, "%s: %s\n", cmd, err.msg);
                json_decref(o);
                goto out;
            }
            if (tok_encode(tok, json_string_value(text), json_string_length(text), 0, &tids, &nt, &err) != EMOE_OK) {
                fprintf(stderr, "%s: %s:%d: %s\n", cmd, path, lineno, err.msg);
                json_decref(o);
                goto out;
            }
        } else {
            nt = json_array_size(ids);
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            eval_doc *nd = realloc(docs, sizeof *nd * (size_t)cap);
            if (!nd) { free(tids); json_decref(o); goto out; }
            docs = nd;
        }
        eval_doc *dc = &docs[n];
        memset(dc, 0, sizeof *dc);
        snprintf(dc->task, sizeof dc->task, "%s", task);
        dc->ids = malloc(sizeof(int32_t) * (nt + 2));
        if (!dc->ids) { free(tids); json_decref(o); goto out; }
        if (bos >= 0) dc->ids[dc->n++] = bos;
        for (size_t i = 0; i < nt && tids; i++) dc->ids[dc->n++] = tids[i];
        free(tids);
        for (size_t i = 0; i < nt && json_is_array(ids); i++) {
            json_t *v = json_array_get(ids, i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= d->vocab) {
                fprintf(stderr, "%s: %s:%d: ids[%zu] is not a token id of this model (vocab %d)\n", cmd, path, lineno, i,
                        d->vocab);
                free(dc->ids);
                json_decref(o);
                goto out;
            }
            dc->ids[dc->n++] = (int32_t)json_integer_value(v);
        }
        if (eos >= 0) dc->ids[dc->n++] = eos;
        if (dc->n > max_len) dc->n = max_len;
        json_decref(o);
        if (dc->n < min_len) { free(dc->ids); continue; }
        n++;
    }
    rc = 0;
out:
    free(line);
    fclose(f);
    tok_free(tok);
    if (rc) {
        eval_docs_free(docs, n);
        return rc;
    }
    *out = docs;
    *n_out = n;
    return 0;
}
