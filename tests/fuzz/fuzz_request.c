/* fuzz_request.c — libFuzzer target for the request parser (server/request.c):
 * the first byte picks the endpoint kind, the rest is the body. Every input
 * must give either a parsed request or an OpenAI error object with a 4xx/5xx
 * status and valid-UTF-8 JSON, never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/request.h"
#include "scheduler/textstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    srv_kind kind = (srv_kind)(data[0] % 4);
    srv_gen_req r;
    srv_error e;
    if (srv_parse_request(kind, (const char *)data + 1, size - 1, &r, &e) == 0) {
        /* Invariants of a parsed request. */
        if (r.n_stop > SRV_MAX_STOP) abort();
        for (int i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || !r.stop[i][0] || strlen(r.stop[i]) > SRV_MAX_STOP_LEN) abort();
        if (r.max_tokens == 0 || r.max_tokens < -1) abort();
        if (!(r.sampling.temperature >= 0 && r.sampling.temperature <= 2)) abort();
        if (!(r.sampling.top_p > 0 && r.sampling.top_p <= 1)) abort();
        if (kind == SRV_KIND_CHAT && !json_is_array(r.messages)) abort();
        if (kind == SRV_KIND_COMPLETION && !r.prompt && !r.prompt_ids) abort();
        if (r.prompt && !sched_utf8_valid(r.prompt, r.prompt_len)) abort();
        for (int i = 0; i < r.n_prompt_ids; i++)
            if (r.prompt_ids[i] < 0) abort();
        srv_gen_req_free(&r);
    } else {
        if (e.http < 400 || e.http > 599 || !e.type || !e.message[0]) abort();
        char *j = srv_error_json(&e);
        if (!j) abort();
        json_error_t je;
        json_t *o = json_loads(j, 0, &je);
        if (!o || !json_is_object(json_object_get(o, "error"))) abort();
        json_decref(o);
        free(j);
    }
    return 0;
}
