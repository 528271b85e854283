/* main.c — `emoe <subcommand> ...` dispatch. Each subcommand lives in tools/cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "tools/cmds.h"

#ifndef EMOE_VERSION
#define EMOE_VERSION "0.1.0"
#endif

typedef struct subcmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} subcmd;

static const subcmd cmds[] = {
    {"run", cmd_run, "run a prompt through a model (CPU reference engine)"},
    {"mkmodel", cmd_mkmodel, "write a random-weight MoE checkpoint in the Hugging Face layout"},
    {"info", cmd_info, "describe a model directory and the build"},
    {"serve", cmd_serve, "serve the OpenAI-compatible HTTP API"},
    {"config", cmd_config, "print or check the configuration (--dump, --check, --markdown)"},
    {"pack", cmd_pack, "write the expert store (experts.emoe) of a model"},
    {"perplexity", cmd_perplexity, "perplexity over documents, optionally under an expert budget"},
    {"tokenize", cmd_tokenize, "text -> token ids with the model's tokenizer.json"},
    {"detokenize", cmd_detokenize, "token ids -> text"},
    {"chat-template", cmd_chat_template, "render the model's chat template for a messages file"},
    {"trace", cmd_trace, "record the expert routing of a file of task-labelled prompts (JSONL trace)"},
    {"replay", cmd_replay, "replay routing traces through the expert cache under a policy (offline evaluator)"},
    {"profile", cmd_profile, "measure per-task sensitivity to routing errors; write the task profile `emoe serve` loads"},
    {"bench", cmd_bench, "prefill/decode throughput, time to first token, device memory (any backend)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: emoe <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-14s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\n`emoe <command> --help` describes a command's options; `emoe --version` prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("emoe %s\n", EMOE_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "emoe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
