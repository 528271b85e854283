/*
 * listen.h — the listening socket, created by emoe rather than by
 * libmicrohttpd so that a port already in use is an error naming the cause
 * ("Address already in use"). SO_REUSEADDR only (a restart does not wait for
 * TIME_WAIT); never SO_REUSEPORT, which let a second `emoe serve` bind the
 * same port and silently take half the traffic (issue 14).
 */
#ifndef EMOE_SERVER_LISTEN_H
#define EMOE_SERVER_LISTEN_H

#include <netdb.h>

#include "config/config.h"

/* A bound, listening, non-blocking socket for ai; -1 with err set. */
int srv_listen_socket(const struct addrinfo *ai, const emoe_config *cfg, emoe_err *err);

#endif
