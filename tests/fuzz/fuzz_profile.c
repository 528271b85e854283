/* fuzz_profile.c — libFuzzer target for the task profile loader
 * (predictor/profile.c): any bytes give a profile whose every task has a valid
 * name and is found by name, or an error message naming the source. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "predictor/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pred_profile p;
    emoe_err err = {0};
    int shape = size ? data[0] % 3 : 0; /* checked against a model, or not */
    emoe_status st = pred_profile_parse((const char *)data, size, "fuzz", shape == 1 ? 4 : 0, shape == 1 ? 16 : 0,
                                        shape == 1 ? 4 : 0, &p, &err);
    if (st != EMOE_OK) {
        if (!err.msg[0] || !strstr(err.msg, "fuzz") || p.n_tasks != 0) abort();
        return 0;
    }
    if (p.n_tasks < 1 || p.n_tasks > PRED_PROFILE_MAX_TASKS) abort();
    for (int i = 0; i < p.n_tasks; i++) {
        if (!pred_profile_task_name_ok(p.tasks[i].name)) abort();
        if (pred_profile_find(&p, p.tasks[i].name) == NULL) abort();
        if (p.tasks[i].expected_output_tokens < 0) abort();
    }
    return 0;
}
