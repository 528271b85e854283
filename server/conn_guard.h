/*
 * conn_guard.h — deadlines on HTTP connections that libmicrohttpd's own
 * inactivity timeout does not give (issue 14, slowloris and idle floods).
 *
 * MHD's connection timeout is reset by every byte received, so a client that
 * dribbles one header byte a second holds its connection (and its thread)
 * forever. The guard tracks every connection from MHD's connect/close
 * notifications and the access handler's progress, and a watchdog thread
 * shuts down (shutdown(2), which makes the connection's own thread see EOF and
 * close it) any connection that
 *   - has not delivered its whole request (head and body) within
 *     read_timeout of being accepted (for a keep-alive request: of its head
 *     arriving), however slowly the bytes trickle in; or
 *   - sits idle on keep-alive after a response for longer than
 *     keepalive_timeout without delivering the next request head.
 * A connection whose request has been fully received (a generation running, a
 * stream being sent) is not touched: request_timeout bounds those.
 *
 * Thread safety: every function may be called from any MHD connection thread;
 * one mutex guards the list. The shutdown happens under that mutex, and MHD
 * reports CLOSED (which unlinks the entry) before it closes the socket, so the
 * guard never shuts down a reused descriptor.
 */
#ifndef EMOE_SERVER_CONN_GUARD_H
#define EMOE_SERVER_CONN_GUARD_H

#include <microhttpd.h>
#include <stdint.h>

typedef struct srv_guard srv_guard;

typedef struct srv_guard_stats {
    uint64_t read_timeouts;       /* connections closed: request not received in time */
    uint64_t keepalive_timeouts;  /* connections closed: idle on keep-alive */
    int open;                     /* connections open now */
} srv_guard_stats;

/* Starts the watchdog thread; NULL when out of memory or threads. */
srv_guard *srv_guard_new(double read_timeout, double keepalive_timeout);
void srv_guard_free(srv_guard *g);
/* New timeouts (SIGHUP); applied to deadlines set from now on. */
void srv_guard_set_timeouts(srv_guard *g, double read_timeout, double keepalive_timeout);
double srv_guard_keepalive(srv_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback; cls = the guard. */
void srv_guard_notify(void *cls, struct MHD_Connection *mc, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);
/* The access handler saw a new request's head on mc. */
void srv_guard_head(srv_guard *g, struct MHD_Connection *mc);
/* The request on mc is fully received (or answered early): no read deadline. */
void srv_guard_busy(srv_guard *g, struct MHD_Connection *mc);
/* The response on mc is finished; the connection is idle on keep-alive. */
void srv_guard_idle(srv_guard *g, struct MHD_Connection *mc);

void srv_guard_get_stats(srv_guard *g, srv_guard_stats *out);

#endif
