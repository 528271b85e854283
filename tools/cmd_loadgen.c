/*
 * cmd_loadgen.c — `emoe loadgen`: open-loop load against a running server
 * (tools/loadgen.c), with per-class SLO attainment, goodput, TTFT/TPOT
 * percentiles and 429s by reason; optional JSON report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cmds.h"
#include "tools/loadgen.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: emoe loadgen --url URL --mix FILE.jsonl [--rate R] [--count N] [--duration S]\n"
            "                    [--drain S] [--seed N] [--json OUT] [--label L] [--api-key K] [--quiet]\n"
            "  --url URL        server base URL, e.g. http://127.0.0.1:8080\n"
            "  --mix FILE       JSONL request mix: request bodies (prompt | prompt_ids | messages, max_tokens,\n"
            "                   task, slo, priority, ...) plus \"class\", \"weight\" and \"at\" (seconds; when every\n"
            "                   line has it, the file is a schedule sent once in time order)\n"
            "  --rate R         Poisson arrivals per second (not with a schedule)\n"
            "  --count N        stop sending after N requests\n"
            "  --duration S     stop sending after S seconds\n"
            "  --drain S        then wait up to S seconds for in-flight requests (default 300; 0 = forever)\n"
            "  --seed N         arrival and mix randomness (default fixed)\n"
            "  --json OUT       also write a JSON report\n"
            "  --label L        name of the run in the JSON report\n"
            "  --api-key K      send Authorization: Bearer K\n"
            "  --quiet          no progress line\n"
            "A request meets its SLO when it completes and its client-side TTFT (first content chunk) and\n"
            "mean TPOT ((last - first chunk) / (completion tokens - 1)) are within slo.ttft_ms / slo.tpot_ms;\n"
            "one without an SLO meets it by completing. Attainment = met / sent (429s count as not met);\n"
            "goodput = met requests per second of the run. Throughput: completed requests per second of the\n"
            "run, and arrivals vs completions per second in the second half of the arrival window (a server\n"
            "that keeps up completes as fast as requests arrive; the drain is the time after the last send).\n");
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int cmd_loadgen(int argc, char **argv)
{
    lg_opts o = {0};
    o.drain = 300;
    o.progress = 1;
    const char *mix_path = NULL, *json = NULL, *label = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        double v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--url") && has) o.url = argv[++i];
        else if (!strcmp(a, "--mix") && has) mix_path = argv[++i];
        else if (!strcmp(a, "--json") && has) json = argv[++i];
        else if (!strcmp(a, "--label") && has) label = argv[++i];
        else if (!strcmp(a, "--api-key") && has) o.api_key = argv[++i];
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else if (!strcmp(a, "--rate") && has && !num(argv[i + 1], 1e-6, 1e6, &v)) { o.rate = v; i++; }
        else if (!strcmp(a, "--count") && has && !num(argv[i + 1], 1, 1e7, &v)) { o.count = (int)v; i++; }
        else if (!strcmp(a, "--duration") && has && !num(argv[i + 1], 0.001, 1e6, &v)) { o.duration = v; i++; }
        else if (!strcmp(a, "--drain") && has && !num(argv[i + 1], 0, 1e6, &v)) { o.drain = v; i++; }
        else if (!strcmp(a, "--seed") && has && !num(argv[i + 1], 0, 1e18, &v)) { o.seed = (uint64_t)v; i++; }
        else {
            fprintf(stderr, "emoe loadgen: unknown, incomplete or out-of-range option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.url || !mix_path) {
        fprintf(stderr, "emoe loadgen: --url and --mix are required\n");
        usage(stderr);
        return 2;
    }
    lg_mix m;
    char err[512];
    if (lg_mix_load(mix_path, &m, err, sizeof err)) {
        fprintf(stderr, "emoe loadgen: %s\n", err);
        return 1;
    }
    if (!m.schedule && o.rate <= 0) {
        fprintf(stderr, "emoe loadgen: --rate is required unless every mix line has \"at\"\n");
        lg_mix_free(&m);
        return 2;
    }
    if (!m.schedule && o.count == 0 && o.duration == 0) {
        fprintf(stderr, "emoe loadgen: bound the run with --count and/or --duration\n");
        lg_mix_free(&m);
        return 2;
    }
    lg_run r;
    if (lg_run_load(&m, &o, &r, err, sizeof err)) {
        fprintf(stderr, "emoe loadgen: %s\n", err);
        lg_mix_free(&m);
        return 1;
    }
    lg_report(&m, &o, &r, stdout);
    int rc = 0;
    if (json && lg_report_json(&m, &o, &r, label, json)) {
        fprintf(stderr, "emoe loadgen: cannot write %s\n", json);
        rc = 1;
    }
    lg_run_free(&r);
    lg_mix_free(&m);
    return rc;
}
