/*
 * framing.h — request framing checks libmicrohttpd 0.9.75 does not make
 * (RFC 9112; issue 14): they matter when emoe sits behind a proxy that may
 * frame the same bytes differently (request smuggling).
 *
 * Refused with 400: two Content-Length headers with different values, a
 * Content-Length together with Transfer-Encoding, a Transfer-Encoding other
 * than "chunked", an encoded NUL (%00) in the path, an HTTP/1.1 request with
 * no Host header or with more than one.
 */
#ifndef EMOE_SERVER_FRAMING_H
#define EMOE_SERVER_FRAMING_H

#include <microhttpd.h>
#include <stddef.h>

/* 0 = acceptable; else -1 with msg naming what is wrong. url is as MHD gives
 * it (after srv_framing_unescape). */
int srv_framing_check(struct MHD_Connection *mc, const char *version, const char *url, char *msg, size_t n);

/* MHD_OPTION_UNESCAPE_CALLBACK: MHD's own unescaping, except that a string
 * containing %00 is left as it is (a decoded NUL would cut the path short and
 * "/health%00x" would route as "/health"); srv_framing_check refuses it. */
size_t srv_framing_unescape(void *cls, struct MHD_Connection *mc, char *s);

#endif
