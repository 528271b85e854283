/*
 * server.h — the HTTP front end (libmicrohttpd + jansson): OpenAI-compatible
 * endpoints, auth, health, metrics, SSE streaming. It never touches model
 * state: it tokenizes, submits to the scheduler and reads the request's
 * channel back.
 *
 * Life cycle: srv_init listens at once (so /health answers 503 while the model
 * loads); srv_attach hands it the engine, scheduler and tokenizer and makes it
 * ready; srv_drain makes new work get 503 while in-flight requests finish;
 * srv_free stops the daemon (waiting for every connection thread) and must
 * come before sched_free.
 *
 * Threading: one thread per connection, so a handler may block while it waits
 * for tokens; it polls the socket meanwhile, so a client that disconnects
 * cancels its request within ~0.1 s.
 */
#ifndef EMOE_SERVER_H
#define EMOE_SERVER_H

#include "config/config.h"
#include "engine/engine.h"
#include "scheduler/sched.h"
#include "server/text.h"

typedef struct srv srv;

emoe_status srv_init(const emoe_config *cfg, srv **out, emoe_err *err);
/* The bound port (useful with port = 0). */
int srv_port(const srv *s);
/* Makes the server ready; all pointers are borrowed and must outlive srv_free. */
void srv_attach(srv *s, eng_engine *e, sched *sc, srv_text *text);
/* Applies the reloadable settings of cfg (keys, limits, CORS, logging).
 * Fails (changing nothing) when the API key file can't be read. */
emoe_status srv_reload(srv *s, const emoe_config *cfg, emoe_err *err);
/* New generation requests get 503 and /health 503 from now on. */
void srv_drain(srv *s);
/* Generation requests accepted and not yet finished. */
int srv_inflight(srv *s);
void srv_free(srv *s);

/* Prometheus text for /metrics (malloc'd). */
char *srv_metrics_render(srv *s);

#endif
