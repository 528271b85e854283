/* config_check.c — see config_check.h. */
#include "tools/config_check.h"

#include <stdio.h>

#include "engine/engine.h"

emoe_status config_build(const char *path, char *const *sets, int n_sets, emoe_config *c, emoe_err *err)
{
    cfg_init(c);
    if (path) {
        emoe_status st = cfg_load_file(c, path, err);
        if (st != EMOE_OK) return st;
    }
    for (int i = 0; i < n_sets; i++) {
        emoe_status st = cfg_set_override(c, sets[i], err);
        if (st != EMOE_OK) return st;
    }
    return cfg_validate(c, err);
}

emoe_status config_check_paths(const emoe_config *c, char *what, size_t n, emoe_err *err)
{
    if (!c->model.path[0]) return emoe_errf(err, EMOE_EINVAL, "[model] path is required (or -m DIR)");
    eng_model_desc desc;
    emoe_status st = eng_desc_load(c->model.path, &desc, err);
    if (st != EMOE_OK) return st;
    char keys[CFG_LIST_MAX + 16];
    st = cfg_read_api_keys(c, keys, sizeof keys, err);
    if (st != EMOE_OK) return st;
    if (what && n)
        snprintf(what, n, "model %s: %s, %d layers, %d experts", c->model.path, desc.model_type, desc.n_layers,
                 desc.n_experts);
    return EMOE_OK;
}
