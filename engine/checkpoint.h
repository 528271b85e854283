/*
 * checkpoint.h — a Hugging Face checkpoint directory: model.safetensors, or the
 * shards named by model.safetensors.index.json; every tensor found by name.
 */
#ifndef EMOE_CHECKPOINT_H
#define EMOE_CHECKPOINT_H

#include "engine/safetensors.h"

typedef struct eng_checkpoint eng_checkpoint;

/* Opens and validates every shard of dir. */
emoe_status ckpt_open(const char *dir, eng_checkpoint **out, emoe_err *err);
void ckpt_close(eng_checkpoint *c);
/* NULL if absent. */
const st_tensor *ckpt_find(const eng_checkpoint *c, const char *name);
/* The shard file holding t (for messages and for direct reads). */
const st_file *ckpt_file_of(const eng_checkpoint *c, const st_tensor *t);
int ckpt_n_tensors(const eng_checkpoint *c);
/* Binds a float weight: must exist, be F32/F16/BF16 and have exactly the given
 * shape (ndim dims). `what` describes the expected shape in the message. */
emoe_status ckpt_bind(const eng_checkpoint *c, const char *name, int ndim, const int64_t *shape,
                      const char *what, eng_tensor *out, emoe_err *err);

#endif
