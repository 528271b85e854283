/* cmd_config.c — `emoe config`: print the effective configuration (--dump) or
 * the generated reference (--markdown), or validate a file (--check). */
#include "tools/config_check.h"
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "tools/cmds.h"

static void config_usage(FILE *f)
{
    fprintf(f, "usage: emoe config --dump [--config FILE] [--set section.key=value ...]\n"
               "       emoe config --check --config FILE [--set ...]\n"
               "       emoe config --markdown      (docs/configuration.md)\n");
}

int cmd_config(int argc, char **argv)
{
    const char *path = NULL;
    int dump = 0, markdown = 0, check = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) i++; /* applied below, after the file */
        else if (!strcmp(argv[i], "--dump")) dump = 1;
        else if (!strcmp(argv[i], "--markdown")) markdown = 1;
        else if (!strcmp(argv[i], "--check")) check = 1;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { config_usage(stdout); return 0; }
        else { fprintf(stderr, "emoe config: unknown or incomplete option '%s'\n", argv[i]); config_usage(stderr); return 2; }
    }
    if (markdown) { cfg_markdown(stdout); return 0; }
    if (!dump && !check) { config_usage(stderr); return 2; }
    emoe_config c;
    emoe_err err = {0};
    char *sets[argc > 0 ? argc : 1];
    int n_sets = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--set") && i + 1 < argc) sets[n_sets++] = argv[++i];
    /* The same check as `emoe serve --check-config`, without the paths. */
    if (config_build(path, sets, n_sets, &c, &err) != EMOE_OK) { fprintf(stderr, "emoe: %s\n", err.msg); return 1; }
    if (dump) cfg_dump(&c, stdout);
    else
        printf("configuration %s is valid: syntax and values (the paths it names, such as the model and the API key "
               "file, are checked by `emoe serve --check-config`)\n", path ? path : "(defaults)");
    return 0;
}
