/* config_check.h — the one configuration check shared by `emoe config --check`
 * (syntax and values) and `emoe serve --check-config` (the same, then the
 * paths it names: the model's config.json and the API key file). Issue 14. */
#ifndef EMOE_TOOLS_CONFIG_CHECK_H
#define EMOE_TOOLS_CONFIG_CHECK_H

#include "config/config.h"

/* Defaults, then the file (NULL = none), then the overrides in order, then
 * the cross-field checks. */
emoe_status config_build(const char *path, char *const *sets, int n_sets, emoe_config *c, emoe_err *err);
/* The files the configuration names: [model] path (its config.json must
 * parse) and [server] api_key_file. On success fills what (a one-line
 * summary of the model) when given. */
emoe_status config_check_paths(const emoe_config *c, char *what, size_t n, emoe_err *err);

#endif
