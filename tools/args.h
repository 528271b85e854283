/* args.h — small helpers for the subcommands' option parsing: strict number
 * parsing with a clear message naming the option. */
#ifndef EMOE_ARGS_H
#define EMOE_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* Each returns 0 on success; on failure prints "emoe <cmd>: <opt>: ..." and returns -1. */
int arg_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
int arg_float(const char *cmd, const char *opt, const char *s, double lo, double hi, double *out);
/* Parses "1,2,3" into a malloc'd array. */
int arg_ids(const char *cmd, const char *opt, const char *s, int32_t **ids, int *n);
/* An expert budget, one syntax for every command (issue 14): a percentage
 * ("25%", of all routed experts) or a size with its unit ("25MiB", "2GB",
 * "4096B"). A bare number is an error that says so, since it used to mean
 * bytes to one command and a percentage to another. pct_only: only "N%". */
int arg_budget(const char *cmd, const char *opt, const char *s, int pct_only);
/* arg_budget, then the budget normalized into out: "25%" or plain bytes
 * ("2GB" -> "2000000000"), the forms the expert cache parses the same way. */
int arg_budget_norm(const char *cmd, const char *opt, const char *s, char *out, size_t n);
/* Returns argv[*i + 1] and advances, or prints a message and returns NULL. */
const char *arg_value(const char *cmd, int argc, char **argv, int *i);

#endif
