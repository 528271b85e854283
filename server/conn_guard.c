/*
 * conn_guard.c — per-connection read and keep-alive deadlines enforced by a
 * watchdog thread. See conn_guard.h.
 */
#include "server/conn_guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "engine/common.h"

enum gstate { G_WAIT_HEAD = 0, G_WAIT_BODY, G_BUSY, G_CLOSED };

typedef struct gconn {
    struct gconn *prev, *next;
    int fd;
    enum gstate state;
    int keepalive;        /* waiting for a keep-alive request (not the first) */
    double deadline;      /* for G_WAIT_HEAD / G_WAIT_BODY */
} gconn;

struct srv_guard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int stop;
    double read_timeout, keepalive_timeout;
    gconn head;           /* list sentinel */
    srv_guard_stats st;
};

static gconn *gconn_of(struct MHD_Connection *mc)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? (gconn *)ci->socket_context : NULL;
}

static void *guard_main(void *arg)
{
    srv_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        if (g->stop) break;
        double now = emoe_now();
        for (gconn *c = g->head.next; c != &g->head; c = c->next) {
            if (c->state != G_WAIT_HEAD && c->state != G_WAIT_BODY) continue;
            if (now < c->deadline) continue;
            if (c->state == G_WAIT_HEAD && c->keepalive) {
                g->st.keepalive_timeouts++;
                LOG_DEBUG("http: closing a keep-alive connection idle for %gs", g->keepalive_timeout);
            } else {
                g->st.read_timeouts++;
                LOG_DEBUG("http: closing a connection that did not send its whole request within %gs",
                          g->read_timeout);
            }
            c->state = G_CLOSED;
            if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

srv_guard *srv_guard_new(double read_timeout, double keepalive_timeout)
{
    srv_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->head.next = g->head.prev = &g->head;
    g->read_timeout = read_timeout;
    g->keepalive_timeout = keepalive_timeout;
    if (pthread_create(&g->th, NULL, guard_main, g) != 0) {
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void srv_guard_free(srv_guard *g)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->th, NULL);
    /* MHD has reported every connection closed by now (the daemon is stopped
     * first); free whatever is left defensively. */
    gconn *c = g->head.next;
    while (c != &g->head) {
        gconn *n = c->next;
        free(c);
        c = n;
    }
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void srv_guard_set_timeouts(srv_guard *g, double read_timeout, double keepalive_timeout)
{
    pthread_mutex_lock(&g->mu);
    g->read_timeout = read_timeout;
    g->keepalive_timeout = keepalive_timeout;
    pthread_mutex_unlock(&g->mu);
}

double srv_guard_keepalive(srv_guard *g)
{
    pthread_mutex_lock(&g->mu);
    double v = g->keepalive_timeout;
    pthread_mutex_unlock(&g->mu);
    return v;
}

void srv_guard_notify(void *cls, struct MHD_Connection *mc, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    srv_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        gconn *c = calloc(1, sizeof *c);
        *socket_context = c;
        if (!c) return; /* untracked: MHD's own timeout still applies */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? (int)ci->connect_fd : -1;
        c->state = G_WAIT_HEAD;
        pthread_mutex_lock(&g->mu);
        c->deadline = emoe_now() + g->read_timeout;
        c->next = &g->head;
        c->prev = g->head.prev;
        g->head.prev->next = c;
        g->head.prev = c;
        g->st.open++;
        pthread_mutex_unlock(&g->mu);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gconn *c = *socket_context;
        *socket_context = NULL;
        if (!c) return;
        pthread_mutex_lock(&g->mu);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        g->st.open--;
        pthread_mutex_unlock(&g->mu);
        free(c);
    }
}

void srv_guard_head(srv_guard *g, struct MHD_Connection *mc)
{
    gconn *c = gconn_of(mc);
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->state == G_WAIT_HEAD) {
        c->state = G_WAIT_BODY;
        /* The first request keeps the deadline counted from the accept; a
         * keep-alive one gets read_timeout from its head. */
        if (c->keepalive) c->deadline = emoe_now() + g->read_timeout;
    }
    pthread_mutex_unlock(&g->mu);
}

void srv_guard_busy(srv_guard *g, struct MHD_Connection *mc)
{
    gconn *c = gconn_of(mc);
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->state != G_CLOSED) c->state = G_BUSY;
    pthread_mutex_unlock(&g->mu);
}

void srv_guard_idle(srv_guard *g, struct MHD_Connection *mc)
{
    gconn *c = gconn_of(mc);
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->state != G_CLOSED) {
        c->state = G_WAIT_HEAD;
        c->keepalive = 1;
        c->deadline = emoe_now() + g->keepalive_timeout;
    }
    pthread_mutex_unlock(&g->mu);
}

void srv_guard_get_stats(srv_guard *g, srv_guard_stats *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->st;
    pthread_mutex_unlock(&g->mu);
}
