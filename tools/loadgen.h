/*
 * loadgen.h — an open-loop load generator for the OpenAI-style endpoints
 * (libcurl multi): Poisson arrivals at a rate (or a fixed schedule from the
 * mix's "at" fields), a request mix from JSONL, streaming so TTFT and TPOT are
 * measured at the client, per-class attainment and goodput.
 *
 * A mix line is a JSON object: the request body to send (prompt / prompt_ids
 * / messages, max_tokens, task, slo, priority, ... are passed through; stream
 * and stream_options are set), plus loadgen-only keys that are removed
 * before sending: "class" (name for the report; default the task, else
 * "default"), "weight" (relative frequency under Poisson arrivals; default
 * 1), "at" (seconds from the start: when every line has one, the mix is a
 * schedule, each line sent once at its time). Lines with "messages" go to
 * /v1/chat/completions, the others to /v1/completions.
 */
#ifndef EMOE_LOADGEN_H
#define EMOE_LOADGEN_H

#include <stdint.h>
#include <stdio.h>

#define LG_MAX_CLASSES 16

typedef struct lg_item {
    char *body;            /* JSON text to POST (stream on) */
    int chat;              /* 1: /v1/chat/completions */
    int cls;               /* index into lg_mix.classes */
    double weight;
    double at;             /* schedule time; < 0 = none */
    double ttft_slo, tpot_slo; /* seconds; 0 = none */
} lg_item;

typedef struct lg_mix {
    lg_item *items;
    int n;
    char classes[LG_MAX_CLASSES][64];
    int n_classes;
    int schedule;          /* every line has "at" */
} lg_mix;

/* Loads a mix; 0 or -1 with a message naming the line in err. */
int lg_mix_load(const char *path, lg_mix *m, char *err, size_t errn);
void lg_mix_free(lg_mix *m);

typedef struct lg_opts {
    const char *url;       /* http://host:port */
    const char *api_key;   /* NULL = none */
    double rate;           /* requests per second (Poisson); ignored for schedules */
    int count;             /* stop sending after this many (0 = no bound) */
    double duration;       /* stop sending after this many seconds (0 = no bound) */
    double drain;          /* after sending stops, wait this long for in-flight requests */
    uint64_t seed;
    int progress;          /* 1: a progress line on stderr */
} lg_opts;

/* One request's outcome. */
typedef struct lg_result {
    int cls;
    int http;              /* 0 = transport error */
    char reason[32];       /* 429 error code, "error", "timeout", "" = ok */
    double t_send, ttft, tpot; /* seconds; ttft < 0 = no token */
    double t_done;         /* clock time the transfer ended (0 = never sent) */
    int n_tokens;
    int met_ttft, met_tpot, met;   /* met: completed and every SLO it had was met */
} lg_result;

typedef struct lg_run {
    lg_result *res;
    int n;
    double wall;           /* first send to last completion */
    double t0;             /* clock time of the start (first send is at or after it) */
    double send_s;         /* seconds the arrival window lasted (start to last send) */
    double hit_rate;       /* device expert-cache hit rate over the run; < 0 = unknown */
} lg_run;

/* Runs the load; 0, or -1 with err set (e.g. curl could not start). */
int lg_run_load(const lg_mix *m, const lg_opts *o, lg_run *out, char *err, size_t errn);
void lg_run_free(lg_run *r);

/* Per-class summary (and the total as class -1). */
typedef struct lg_summary {
    int sent, completed, errors, met;
    int rejected;                 /* 429s */
    char reasons[4][32];
    int reason_n[4];
    double attainment;            /* met / sent */
    double goodput;               /* met / wall seconds */
    double ttft[3], tpot[3];      /* p50, p90, p99 in seconds; -1 = none */
} lg_summary;

void lg_summarize(const lg_run *r, int cls, lg_summary *s);

/* Whether the server kept up with the offered load: arrivals and
 * completions (status 200) per second in the second half of the arrival
 * window [send_s/2, send_s), where a server below saturation completes
 * requests as fast as they arrive and one above it falls behind; and the
 * completed requests per second of the whole run (first send to last
 * completion). */
typedef struct lg_throughput {
    double arrival_rps, completion_rps;   /* second half of the arrival window */
    double overall_rps;                   /* completed / wall */
    double drain_s;                       /* last completion - end of the arrival window */
} lg_throughput;
void lg_throughput_of(const lg_run *r, lg_throughput *t);
/* The report: a per-class table on f; lg_report_json writes the same as JSON
 * to path (0 or -1). */
void lg_report(const lg_mix *m, const lg_opts *o, const lg_run *r, FILE *f);
int lg_report_json(const lg_mix *m, const lg_opts *o, const lg_run *r, const char *label, const char *path);

#endif
