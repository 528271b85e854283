/*
 * slo_fields.h — the SLO extension of request bodies and headers:
 *   body:    "slo": {"ttft_ms": N, "tpot_ms": M}  (either may be absent or null)
 *            "priority": int                      (lower = more important; default 0)
 *   headers: X-Emoe-SLO-TTFT-Ms, X-Emoe-SLO-TPOT-Ms, X-Emoe-Priority (the body wins)
 * then the [tasks] defaults of the request's task fill what is still unset.
 * Bad values are 400 naming the field. Pure functions (fuzzed with the
 * request parser).
 */
#ifndef EMOE_SLO_FIELDS_H
#define EMOE_SLO_FIELDS_H

#include <jansson.h>

#define SRV_SLO_MAX_MS 3600000.0
#define SRV_MAX_PRIORITY 1000000

typedef struct srv_slo {
    double ttft_ms, tpot_ms;        /* 0 = none */
    int priority;
    int has_ttft, has_tpot, has_priority;
} srv_slo;

struct srv_error;

/* Reads "slo" and "priority" from a request body object. 0 or -1 with e set. */
int srv_slo_parse_body(json_t *root, srv_slo *o, struct srv_error *e);
/* Fills what the body left unset from header values (NULL = absent). 0 or -1. */
int srv_slo_parse_headers(const char *ttft, const char *tpot, const char *priority, srv_slo *o, struct srv_error *e);

#endif
