/*
 * framing.c — RFC 9112 framing checks on a request head. See framing.h.
 */
#include "server/framing.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct hdr_count {
    int n_cl, cl_differ, n_te, n_host, te_bad;
    char cl[64];
} hdr_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    hdr_count *h = cls;
    if (!value) value = "";
    if (!strcasecmp(key, "Content-Length")) {
        if (h->n_cl++ == 0) snprintf(h->cl, sizeof h->cl, "%s", value);
        else if (strcmp(h->cl, value)) h->cl_differ = 1;
    } else if (!strcasecmp(key, "Transfer-Encoding")) {
        h->n_te++;
        if (strcasecmp(value, "chunked")) h->te_bad = 1;
    } else if (!strcasecmp(key, "Host")) {
        h->n_host++;
    }
    return MHD_YES;
}

int srv_framing_check(struct MHD_Connection *mc, const char *version, const char *url, char *msg, size_t n)
{
    if (strstr(url, "%00")) {
        snprintf(msg, n, "the request path contains an encoded NUL byte (%%00)");
        return -1;
    }
    hdr_count h = {0};
    MHD_get_connection_values(mc, MHD_HEADER_KIND, count_header, &h);
    if (h.cl_differ) {
        snprintf(msg, n, "the request has Content-Length headers with different values");
        return -1;
    }
    if (h.n_cl && h.n_te) {
        snprintf(msg, n, "the request has both Content-Length and Transfer-Encoding");
        return -1;
    }
    if (h.n_te > 1 || h.te_bad) {
        snprintf(msg, n, "unsupported Transfer-Encoding (only a single \"chunked\" is accepted)");
        return -1;
    }
    if (version && !strcmp(version, MHD_HTTP_VERSION_1_1) && h.n_host != 1) {
        snprintf(msg, n, h.n_host ? "the request has more than one Host header" : "an HTTP/1.1 request needs a Host header");
        return -1;
    }
    return 0;
}

size_t srv_framing_unescape(void *cls, struct MHD_Connection *mc, char *s)
{
    (void)cls;
    (void)mc;
    if (strstr(s, "%00")) return strlen(s);
    return MHD_http_unescape(s);
}
