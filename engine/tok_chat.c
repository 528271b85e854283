/*
 * tok_chat.c — chat-template rendering for a loaded tokenizer: builds the
 * variables transformers passes to apply_chat_template (messages, tools,
 * documents, add_generation_prompt, the special-token strings, user kwargs)
 * and renders the template with the sandboxed Jinja subset (jinja.h).
 * The template is parsed per call: it is a few KB and a bad template must not
 * stop the tokenizer from loading.
 */
#include "engine/jinja.h"
#include "engine/tok_internal.h"

#include <stdlib.h>
#include <string.h>

emoe_status tok_apply_chat_template(const tok_tokenizer *t, json_t *messages, int add_generation_prompt,
                                    json_t *kwargs, char **out, emoe_err *err)
{
    return tok_apply_chat_template_capped(t, messages, add_generation_prompt, kwargs, 0, out, err);
}

size_t tok_max_piece_bytes(const tok_tokenizer *t) { return t->max_piece_len; }

emoe_status tok_apply_chat_template_capped(const tok_tokenizer *t, json_t *messages, int add_generation_prompt,
                                           json_t *kwargs, size_t max_output, char **out, emoe_err *err)
{
    *out = NULL;
    if (!t->chat_template)
        return emoe_errf(err, EMOE_ENOTFOUND, "the tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)");
    if (!json_is_array(messages)) return emoe_errf(err, EMOE_EINVAL, "messages: expected a JSON array");
    if (kwargs && !json_is_object(kwargs) && !json_is_null(kwargs))
        return emoe_errf(err, EMOE_EINVAL, "chat template kwargs: expected a JSON object");
    jinja_tpl *tpl = NULL;
    emoe_status st = jinja_parse(t->chat_template, strlen(t->chat_template), &tpl, err);
    if (st) { emoe_err_prefix(err, "chat_template"); return st; }
    json_t *vars = json_object();
    if (!vars) { jinja_free(tpl); return emoe_errf(err, EMOE_ENOMEM, "chat template: out of memory"); }
    /* kwargs first (they may carry tools and documents), so that messages,
     * add_generation_prompt and the special tokens set below cannot be
     * overridden by them. */
    if (json_is_object(kwargs)) json_object_update(vars, kwargs);
    json_object_set(vars, "messages", messages);
    if (!json_object_get(vars, "tools")) json_object_set_new(vars, "tools", json_null());
    if (!json_object_get(vars, "documents")) json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt));
    const char *names[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const char *vals[] = {t->bos_str, t->eos_str, t->unk_str, t->pad_str};
    for (int i = 0; i < 4; i++)
        if (vals[i]) json_object_set_new(vars, names[i], json_string_nocheck(vals[i]));
        else json_object_del(vars, names[i]);
    size_t n = 0;
    jinja_limits lim;
    jinja_limits_default(&lim);
    if (max_output && max_output < lim.max_output) lim.max_output = max_output;
    st = jinja_render(tpl, vars, &lim, out, &n, err);
    if (st) emoe_err_prefix(err, "chat_template");
    json_decref(vars);
    jinja_free(tpl);
    return st;
}
