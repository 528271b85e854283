/* fuzz_toolcalls.c — libFuzzer target for tool-call parsing of generated text
 * (server/tool_calls.c): never a crash or a leak; the content length and the
 * streaming safe prefix stay within the text; every returned call has an
 * id, a name and arguments as a string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/tool_calls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t clen = 0;
    json_t *c = tool_calls_parse(text, size, size > 0 && data[0] & 1, &clen, 1);
    if (clen > size) abort();
    for (size_t i = 0; c && i < json_array_size(c); i++) {
        json_t *f = json_object_get(json_array_get(c, i), "function");
        if (!json_is_string(json_object_get(f, "name"))) abort();
        if (!json_is_string(json_object_get(f, "arguments"))) abort();
        const char *id = json_string_value(json_object_get(json_array_get(c, i), "id"));
        if (!id || strncmp(id, "call_", 5)) abort();
    }
    json_decref(c);
    if (tool_calls_safe_prefix(text, size) > size) abort();
    return 0;
}
