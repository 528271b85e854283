/*
 * fuzz_jinja.c — libFuzzer target for the Jinja subset: the input is an
 * (untrusted) template, rendered with chat-like variables under small limits.
 * Any crash, hang, leak or sanitizer report is a bug; errors are fine.
 */
#include <stdint.h>
#include <stdlib.h>

#include "engine/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *vars;
    if (!vars)
        vars = json_loads("{\"messages\":[{\"role\":\"system\",\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"hi \\u00e9\"},"
                          "{\"role\":\"assistant\",\"content\":\"<think>\\nx\\n</think>\\n\\nyo\",\"tool_calls\":[{\"function\":"
                          "{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},{\"role\":\"tool\",\"content\":\"r\"}],"
                          "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"add_generation_prompt\":true,"
                          "\"bos_token\":\"<s>\",\"eos_token\":\"</s>\",\"enable_thinking\":false,\"n\":3,\"f\":1.5}",
                          0, NULL);
    jinja_tpl *t = NULL;
    if (jinja_parse((const char *)data, size, &t, NULL) != EMOE_OK) return 0;
    jinja_limits lim;
    jinja_limits_default(&lim);
    lim.max_output = 1 << 20;
    lim.max_iterations = 20000;
    lim.max_depth = 32;
    char *out = NULL;
    size_t n;
    jinja_render(t, vars, &lim, &out, &n, NULL);
    free(out);
    jinja_free(t);
    return 0;
}
