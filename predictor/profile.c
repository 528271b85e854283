/*
 * profile.c — task profile loader (see profile.h).
 */
#include "predictor/profile.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

int pred_profile_task_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') return 0;
    }
    return 1;
}

static emoe_status shape_check(json_t *root, const char *key, int want, const char *name, emoe_err *err)
{
    json_t *v = json_object_get(root, key);
    if (!json_is_integer(v)) return emoe_errf(err, EMOE_EINVAL, "task profile %s: \"%s\" missing or not an integer", name, key);
    if (want > 0 && json_integer_value(v) != want)
        return emoe_errf(err, EMOE_EINVAL, "task profile %s: \"%s\" is %lld but the served model has %d (a profile of another model?)",
                         name, key, (long long)json_integer_value(v), want);
    return EMOE_OK;
}

emoe_status pred_profile_parse(const char *buf, size_t len, const char *name, int n_layers, int n_experts,
                               int top_k, pred_profile *out, emoe_err *err)
{
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", name);
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return emoe_errf(err, EMOE_EINVAL, "task profile %s: line %d: %s", name, je.line, je.text);
    emoe_status st = EMOE_OK;
    if (!json_is_object(root)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: not a JSON object", name); goto done; }
    json_t *fmt = json_object_get(root, "format");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "emoe-task-profile") != 0) {
        st = emoe_errf(err, EMOE_EINVAL, "task profile %s: \"format\" must be \"emoe-task-profile\"", name);
        goto done;
    }
    if ((st = shape_check(root, "num_layers", n_layers, name, err)) || (st = shape_check(root, "num_experts", n_experts, name, err)) ||
        (st = shape_check(root, "top_k", top_k, name, err)))
        goto done;
    json_t *tasks = json_object_get(root, "tasks");
    if (!json_is_object(tasks) || json_object_size(tasks) == 0) {
        st = emoe_errf(err, EMOE_EINVAL, "task profile %s: \"tasks\" missing or empty", name);
        goto done;
    }
    if (json_object_size(tasks) > PRED_PROFILE_MAX_TASKS) {
        st = emoe_errf(err, EMOE_EINVAL, "task profile %s: more than %d tasks", name, PRED_PROFILE_MAX_TASKS);
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(tasks, k, v) {
        if (!pred_profile_task_name_ok(k)) {
            st = emoe_errf(err, EMOE_EINVAL, "task profile %s: bad task name \"%.40s\" (1-63 printable characters, no quote or backslash)", name, k);
            goto done;
        }
        if (!json_is_object(v)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: tasks.%s is not an object", name, k); goto done; }
        pred_profile_task *t = &out->tasks[out->n_tasks];
        snprintf(t->name, sizeof t->name, "%s", k);
        json_t *s = json_object_get(v, "sensitivity"), *ins = json_object_get(v, "insensitive"),
               *mp = json_object_get(v, "miss_policy"), *eo = json_object_get(v, "expected_output_tokens");
        if (!json_is_number(s)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: tasks.%s.sensitivity missing or not a number", name, k); goto done; }
        if (!json_is_boolean(ins)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: tasks.%s.insensitive missing or not a boolean", name, k); goto done; }
        if (!json_is_string(mp) || (strcmp(json_string_value(mp), "exact") && strcmp(json_string_value(mp), "substitute"))) {
            st = emoe_errf(err, EMOE_EINVAL, "task profile %s: tasks.%s.miss_policy must be \"exact\" or \"substitute\"", name, k);
            goto done;
        }
        if (eo && (!json_is_integer(eo) || json_integer_value(eo) < 0 || json_integer_value(eo) > 1000000)) {
            st = emoe_errf(err, EMOE_EINVAL, "task profile %s: tasks.%s.expected_output_tokens must be an integer in [0, 1000000]", name, k);
            goto done;
        }
        t->sensitivity = json_number_value(s);
        t->insensitive = json_is_true(ins);
        t->substitute = !strcmp(json_string_value(mp), "substitute");
        t->expected_output_tokens = eo ? (int)json_integer_value(eo) : 0;
        out->n_tasks++;
    }
    json_t *rank = json_object_get(root, "ranking");
    if (rank) {
        if (!json_is_array(rank)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: \"ranking\" is not an array", name); goto done; }
        size_t i;
        json_array_foreach(rank, i, v) {
            if (!json_is_string(v)) { st = emoe_errf(err, EMOE_EINVAL, "task profile %s: ranking[%zu] is not a string", name, i); goto done; }
            if (!pred_profile_find(out, json_string_value(v))) {
                st = emoe_errf(err, EMOE_EINVAL, "task profile %s: ranking[%zu] names the unknown task \"%.40s\" (not in \"tasks\")",
                               name, i, json_string_value(v));
                goto done;
            }
        }
        if (json_array_size(rank) != (size_t)out->n_tasks) {
            st = emoe_errf(err, EMOE_EINVAL, "task profile %s: \"ranking\" lists %zu tasks, \"tasks\" has %d", name,
                           json_array_size(rank), out->n_tasks);
            goto done;
        }
    }
done:
    json_decref(root);
    if (st) out->n_tasks = 0;
    return st;
}

emoe_status pred_profile_load(const char *path, int n_layers, int n_experts, int top_k, pred_profile *out,
                              emoe_err *err)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return emoe_errf(err, EMOE_EIO, "task profile %s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 65536;
            if (nc > (64u << 20)) { free(buf); fclose(f); return emoe_errf(err, EMOE_EINVAL, "task profile %s: larger than 64 MiB", path); }
            char *nb = realloc(buf, nc);
            if (!nb) { free(buf); fclose(f); return emoe_errf(err, EMOE_ENOMEM, "task profile %s: out of memory", path); }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return emoe_errf(err, EMOE_EIO, "task profile %s: read error", path); }
    emoe_status st = pred_profile_parse(buf, n, path, n_layers, n_experts, top_k, out, err);
    free(buf);
    return st;
}

const pred_profile_task *pred_profile_find(const pred_profile *p, const char *task)
{
    if (!p || !task) return NULL;
    for (int i = 0; i < p->n_tasks; i++)
        if (!strcmp(p->tasks[i].name, task)) return &p->tasks[i];
    return NULL;
}
