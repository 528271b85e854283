/* eval_docs.h — the evaluation documents of `emoe perplexity` and `emoe
 * profile`: a JSONL file of {"task": ..., "text": ... | "ids": [...]}, each
 * framed as BOS + tokens + EOS and truncated (the framing the reference
 * perplexities of tiny-moe-7task were computed with). */
#ifndef EMOE_TOOLS_EVAL_DOCS_H
#define EMOE_TOOLS_EVAL_DOCS_H

#include <stdint.h>

#include "engine/model.h"

typedef struct eval_doc {
    char task[64];
    int32_t *ids; /* (n) BOS + tokens + EOS, truncated; owned */
    int n;
} eval_doc;

/* Reads path; text is tokenized with model_dir's tokenizer (loaded on first
 * need), ids are checked against the vocabulary. Keeps at most max_docs per
 * task (only task `only` when non-NULL), truncates to max_len tokens and
 * drops documents shorter than min_len. Returns 0 with *out (owned by the
 * caller: eval_docs_free) and *n_out, or -1 after printing one error naming
 * file:line, prefixed with cmd. */
int eval_docs_load(const char *cmd, const char *path, const char *model_dir, const eng_model_desc *d, const char *only,
                   int max_docs, int max_len, int min_len, eval_doc **out, int *n_out);
void eval_docs_free(eval_doc *docs, int n);

#endif
