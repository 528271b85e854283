/* fuzz_safetensors.c — libFuzzer target: any byte string given to the
 * safetensors header validator (st_parse) and to the config.json parser
 * (eng_desc_parse) yields a result or an error message, never a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    emoe_err err;
    if (st_parse("fuzz.safetensors", data, size, &f, &err) == EMOE_OK) {
        for (int i = 0; i < f->n_tensors; i++) {
            /* Touch the first and last byte of every accepted tensor: must be in bounds. */
            const st_tensor *t = &f->tensors[i];
            if (t->end > t->begin) {
                volatile uint8_t a = ((const uint8_t *)t->data)[0];
                volatile uint8_t b = ((const uint8_t *)t->data)[t->end - t->begin - 1];
                (void)a;
                (void)b;
            }
        }
        st_close(f);
    } else if (err.msg[0] == 0) {
        abort(); /* an error must carry a message */
    }
    eng_model_desc d;
    err.msg[0] = 0;
    if (eng_desc_parse((const char *)data, size, "config.json", &d, &err) != EMOE_OK && err.msg[0] == 0) abort();
    return 0;
}
