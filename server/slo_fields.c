/*
 * slo_fields.c — "slo" / "priority" body fields and X-Emoe-SLO-* headers.
 * See slo_fields.h.
 */
#include "server/slo_fields.h"
#include "server/request.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define INVALID "invalid_request_error"

static int ms_field(json_t *slo, const char *key, const char *param, double *out, int *has, srv_error *e)
{
    json_t *v = json_object_get(slo, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v))
        return srv_fail(e, 400, INVALID, NULL, param, "'%s' must be a number of milliseconds", param);
    double d = json_number_value(v);
    if (!(d > 0) || d > SRV_SLO_MAX_MS)
        return srv_fail(e, 400, INVALID, NULL, param, "'%s' must be > 0 and <= %.0f milliseconds", param, SRV_SLO_MAX_MS);
    *out = d;
    *has = 1;
    return 0;
}

int srv_slo_parse_body(json_t *root, srv_slo *o, srv_error *e)
{
    json_t *slo = json_object_get(root, "slo");
    if (slo && !json_is_null(slo)) {
        if (!json_is_object(slo))
            return srv_fail(e, 400, INVALID, NULL, "slo", "'slo' must be an object like {\"ttft_ms\": 500, \"tpot_ms\": 50}");
        if (ms_field(slo, "ttft_ms", "slo.ttft_ms", &o->ttft_ms, &o->has_ttft, e)) return -1;
        if (ms_field(slo, "tpot_ms", "slo.tpot_ms", &o->tpot_ms, &o->has_tpot, e)) return -1;
    }
    json_t *p = json_object_get(root, "priority");
    if (p && !json_is_null(p)) {
        if (!json_is_integer(p) || json_integer_value(p) < -SRV_MAX_PRIORITY || json_integer_value(p) > SRV_MAX_PRIORITY)
            return srv_fail(e, 400, INVALID, NULL, "priority", "'priority' must be an integer in [-%d, %d] (lower = more important)",
                            SRV_MAX_PRIORITY, SRV_MAX_PRIORITY);
        o->priority = (int)json_integer_value(p);
        o->has_priority = 1;
    }
    return 0;
}

/* Strict decimal (optional '-' when neg_ok, digits, optional fraction). */
static int parse_dec(const char *s, int neg_ok, int int_only, double *out)
{
    const char *p = s;
    while (*p == ' ' || *p == '\t') p++;
    const char *start = p;
    if (neg_ok && *p == '-') p++;
    if (!isdigit((unsigned char)*p)) return -1;
    size_t digits = 0;
    while (isdigit((unsigned char)*p)) { p++; digits++; }
    if (*p == '.' && !int_only) {
        p++;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) { p++; digits++; }
    }
    while (*p == ' ' || *p == '\t') p++;
    if (*p || digits > 15) return -1;
    errno = 0;
    double v = strtod(start, NULL);
    if (errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int ms_header(const char *h, const char *name, double *out, int *has, srv_error *e)
{
    if (!h || *has) return 0;
    double d;
    if (parse_dec(h, 0, 0, &d) || !(d > 0) || d > SRV_SLO_MAX_MS)
        return srv_fail(e, 400, INVALID, NULL, name, "%s must be a number of milliseconds > 0 and <= %.0f", name,
                        SRV_SLO_MAX_MS);
    *out = d;
    *has = 1;
    return 0;
}

int srv_slo_parse_headers(const char *ttft, const char *tpot, const char *priority, srv_slo *o, srv_error *e)
{
    if (ms_header(ttft, "X-Emoe-SLO-TTFT-Ms", &o->ttft_ms, &o->has_ttft, e)) return -1;
    if (ms_header(tpot, "X-Emoe-SLO-TPOT-Ms", &o->tpot_ms, &o->has_tpot, e)) return -1;
    if (priority && !o->has_priority) {
        double d;
        if (parse_dec(priority, 1, 1, &d) || fabs(d) > SRV_MAX_PRIORITY)
            return srv_fail(e, 400, INVALID, NULL, "X-Emoe-Priority", "X-Emoe-Priority must be an integer in [-%d, %d]",
                            SRV_MAX_PRIORITY, SRV_MAX_PRIORITY);
        o->priority = (int)d;
        o->has_priority = 1;
    }
    return 0;
}
