/*
 * profile.h — task profiles: what `emoe profile` measured per task (how
 * sensitive its output is to routing errors, how long its outputs are, how
 * concentrated its expert use is) and the serving decisions drawn from it
 * (per-task miss policy, whether per-task prediction is worth running).
 * `emoe serve` loads one with [predictor] task_profile (docs/predictor.md).
 *
 * File format (JSON):
 *   {"format": "emoe-task-profile", "version": 1, "model": "...",
 *    "num_layers": L, "num_experts": E, "top_k": K, "budget": "25%",
 *    "ranking": ["least sensitive task", ..., "most sensitive task"],
 *    "tasks": {"name": {"sensitivity": s, "insensitive": bool,
 *                       "miss_policy": "exact"|"substitute",
 *                       "expected_output_tokens": n, ...measurements}, ...}}
 * The loader checks the format tag, the shape against the served model,
 * every task name (1..63 printable characters, no quote or backslash), the
 * three decision fields of every task, and that "ranking" names exactly the
 * tasks of "tasks" (a ranking naming an unknown task is an error). Every
 * error names the file and the field.
 */
#ifndef EMOE_PRED_PROFILE_H
#define EMOE_PRED_PROFILE_H

#include "engine/common.h"

#define PRED_PROFILE_MAX_TASKS 256

typedef struct pred_profile_task {
    char name[64];
    double sensitivity;          /* larger = more sensitive to routing errors */
    int insensitive;             /* skip per-task prediction (global popular set) */
    int substitute;              /* miss policy: 1 substitute, 0 exact */
    int expected_output_tokens;  /* 0 = unknown */
} pred_profile_task;

typedef struct pred_profile {
    int n_tasks;
    pred_profile_task tasks[PRED_PROFILE_MAX_TASKS];
    char path[512];
} pred_profile;

/* Loads and checks a profile for a model of (n_layers, n_experts, top_k)
 * (0 = do not check that dimension). */
emoe_status pred_profile_load(const char *path, int n_layers, int n_experts, int top_k, pred_profile *out,
                              emoe_err *err);
/* Same from memory; `name` names the source in messages. */
emoe_status pred_profile_parse(const char *buf, size_t len, const char *name, int n_layers, int n_experts,
                               int top_k, pred_profile *out, emoe_err *err);
/* The task's entry, or NULL. */
const pred_profile_task *pred_profile_find(const pred_profile *p, const char *task);
/* 1 if name is a valid task name. */
int pred_profile_task_name_ok(const char *name);

#endif
