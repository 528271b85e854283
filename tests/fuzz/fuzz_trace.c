/* fuzz_trace.c — libFuzzer target for the routing-trace reader: any bytes give
 * a trace or an error message. Small accepted traces are also replayed under
 * every policy (exercising the simulator and the predictor on odd shapes) and
 * written back, which must read again to the same expert ids. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predictor/replay.h"
#include "predictor/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pred_trace t;
    pred_trace_init(&t);
    emoe_err err = {0};
    if (pred_trace_load_mem(&t, (const char *)data, size, "fuzz", &err) != EMOE_OK) {
        if (!err.msg[0]) abort(); /* a failure must say why */
        pred_trace_free(&t);
        return 0;
    }
    if (t.n_reqs > 0 && (size_t)t.n_layers * (size_t)t.n_experts <= 4096) {
        const pred_trace *tp[1] = {&t};
        for (int p = 0; p <= PRED_REPLAY_FORECAST; p++) {
            pred_replay_opts o;
            pred_replay_opts_default(&o);
            o.policy = (pred_replay_policy)p;
            o.budget = 0.3;
            o.lookahead = 1;
            pred_replay_result r;
            if (pred_replay_run(tp, 1, &o, &r, &err) != EMOE_OK) abort(); /* a loaded trace always replays */
            if (r.hits + r.misses != r.accesses) abort();
            pred_replay_result_free(&r);
        }
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        for (int i = 0; i < t.n_reqs; i++)
            if (pred_req_write(&t.reqs[i], f, &err) != EMOE_OK) abort();
        fclose(f);
        pred_trace t2;
        pred_trace_init(&t2);
        if (pred_trace_load_mem(&t2, buf, len, "rt", &err) != EMOE_OK || t2.n_reqs != t.n_reqs) abort();
        for (int i = 0; i < t.n_reqs; i++)
            if (t.reqs[i].n_tokens != t2.reqs[i].n_tokens ||
                (t.reqs[i].n_tokens > 0 && memcmp(t.reqs[i].experts, t2.reqs[i].experts,
                       (size_t)t.reqs[i].n_tokens * (size_t)t.n_layers * (size_t)t.top_k * sizeof(int16_t))))
                abort();
        pred_trace_free(&t2);
        free(buf);
    }
    pred_trace_free(&t);
    return 0;
}
