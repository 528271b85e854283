/*
 * loader.c — io_uring (or pread fallback) reader for expert extents.
 *
 * Threading: submitters hold `mu` while they touch the submission queue; the
 * completion thread reaps CQEs without the lock (one reaper, so the CQ needs no
 * lock) and takes `mu` to account, retry and refill. In pread mode the same
 * thread pops the pending list and reads synchronously.
 * A NOP whose user_data is NULL wakes the completion thread for shutdown.
 */
#include "engine/loader.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOADER_MAX_RETRIES 64

struct loader_t {
    int fd;
    int direct;
    int uring;
    int qd;
    loader_config cfg;
    char path[512];
    struct io_uring ring;
    int ring_ok;
    void *fixed_base;
    size_t fixed_len;

    pthread_t thread;
    int thread_ok;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* pread mode: work arrived; close: drained */
    loader_read *head, *tail; /* pending, FIFO */
    int inflight;
    int stop;
    uint64_t n_completed;   /* completions seen (for fault injection) */
    loader_stats st;
};

static void push_back(loader_t *l, loader_read *r)
{
    r->next = NULL;
    if (l->tail) l->tail->next = r; else l->head = r;
    l->tail = r;
}

static void push_front(loader_t *l, loader_read *r)
{
    r->next = l->head;
    l->head = r;
    if (!l->tail) l->tail = r;
}

static loader_read *pop(loader_t *l)
{
    loader_read *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head) l->tail = NULL;
        r->next = NULL;
    }
    return r;
}

/* Moves pending reads into SQEs up to the queue depth and submits them in one
 * call. Caller holds mu. */
static void pump(loader_t *l)
{
    int queued = 0;
    while (l->inflight < l->qd && l->head) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
        if (!sqe) break;
        loader_read *r = pop(l);
        uint8_t *dst = (uint8_t *)r->buf + r->got;
        size_t left = r->len - r->got;
        if (l->fixed_base && dst >= (uint8_t *)l->fixed_base &&
            dst + left <= (uint8_t *)l->fixed_base + l->fixed_len)
            io_uring_prep_read_fixed(sqe, l->fd, dst, (unsigned)left, r->offset + r->got, 0);
        else
            io_uring_prep_read(sqe, l->fd, dst, (unsigned)left, r->offset + r->got);
        io_uring_sqe_set_data(sqe, r);
        l->inflight++;
        queued++;
    }
    if (queued) {
        int rc;
        do rc = io_uring_submit(&l->ring); while (rc == -EINTR || rc == -EAGAIN);
        l->st.submits++;
        if (rc < 0) LOG_ERROR("loader %s: io_uring_submit: %s", l->path, strerror(-rc));
    }
}

/* Accounts one result for r (caller holds mu). Returns 1 when r is finished
 * (status in *status), 0 when it was re-queued. */
static int account(loader_t *l, loader_read *r, int res, int *status)
{
    l->n_completed++;
    if (l->cfg.fail_nth_read > 0 && l->n_completed == (uint64_t)l->cfg.fail_nth_read)
        res = -(l->cfg.fail_errno ? l->cfg.fail_errno : EIO);
    if ((res == -EAGAIN || res == -EINTR) && r->retries < LOADER_MAX_RETRIES) {
        r->retries++;
        l->st.retries++;
        push_front(l, r);
        return 0;
    }
    if (res < 0) { *status = res; l->st.errors++; return 1; }
    if (res == 0) { *status = -EIO; l->st.errors++; return 1; } /* EOF before len: truncated file */
    r->got += (size_t)res;
    l->st.bytes += (uint64_t)res;
    if (r->got < r->len) {
        if (r->retries++ >= LOADER_MAX_RETRIES) { *status = -EIO; l->st.errors++; return 1; }
        l->st.retries++;
        push_front(l, r);
        return 0;
    }
    l->st.reads++;
    *status = 0;
    return 1;
}

static void *uring_thread(void *arg)
{
    loader_t *l = arg;
    for (;;) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&l->ring, &cqe);
        if (rc == -EINTR || rc == -EAGAIN) continue;
        if (rc < 0) {
            LOG_ERROR("loader %s: io_uring_wait_cqe: %s", l->path, strerror(-rc));
            break;
        }
        loader_read *r = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&l->ring, cqe);
        pthread_mutex_lock(&l->mu);
        if (!r) { /* shutdown NOP */
            pthread_mutex_unlock(&l->mu);
            break;
        }
        l->inflight--;
        int status = 0, fin = account(l, r, res, &status);
        pump(l);
        if (l->inflight == 0 && !l->head) pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        if (fin) r->done(r->user, r, status);
    }
    return NULL;
}

static void *pread_thread(void *arg)
{
    loader_t *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->head && !l->stop) pthread_cond_wait(&l->cv, &l->mu);
        loader_read *r = pop(l);
        if (!r) break; /* stop and drained */
        l->inflight++;
        pthread_mutex_unlock(&l->mu);
        ssize_t n = pread(l->fd, (uint8_t *)r->buf + r->got, r->len - r->got, (off_t)(r->offset + r->got));
        int res = n < 0 ? -errno : (int)n;
        pthread_mutex_lock(&l->mu);
        l->inflight--;
        int status = 0, fin = account(l, r, res, &status);
        if (l->inflight == 0 && !l->head) pthread_cond_broadcast(&l->cv);
        if (fin) {
            pthread_mutex_unlock(&l->mu);
            r->done(r->user, r, status);
            pthread_mutex_lock(&l->mu);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

emoe_status loader_open(const char *path, const loader_config *cfg, loader_t **out, emoe_err *err)
{
    *out = NULL;
    loader_t *l = calloc(1, sizeof *l);
    if (!l) return emoe_errf(err, EMOE_ENOMEM, "loader: out of memory");
    emoe_status st;
    l->fd = -1;
    if (cfg) l->cfg = *cfg;
    l->qd = l->cfg.queue_depth ? l->cfg.queue_depth : 32;
    if (l->qd < 1 || l->qd > 4096) {
        int qd = l->qd;
        free(l);
        return emoe_errf(err, EMOE_EINVAL, "loader: queue_depth %d out of range 1..4096", qd);
    }
    snprintf(l->path, sizeof l->path, "%s", path);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (!l->cfg.no_direct) {
        l->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (l->fd >= 0) l->direct = 1;
        else if (errno == EINVAL)
            LOG_WARN("loader %s: the file system refuses O_DIRECT; using buffered reads (page cache)", path);
    }
    if (l->fd < 0) l->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (l->fd < 0) {
        st = emoe_errf(err, EMOE_EIO, "loader: cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!l->cfg.no_uring) {
        unsigned entries = 1;
        while (entries < (unsigned)l->qd) entries <<= 1;
        int rc = io_uring_queue_init(entries, &l->ring, 0);
        if (rc == 0) { l->ring_ok = 1; l->uring = 1; }
        else LOG_WARN("loader %s: io_uring unavailable (%s); falling back to pread", path, strerror(-rc));
    }
    if (pthread_create(&l->thread, NULL, l->uring ? uring_thread : pread_thread, l) != 0) {
        st = emoe_errf(err, EMOE_ENOMEM, "loader %s: cannot start the completion thread", path);
        goto fail;
    }
    l->thread_ok = 1;
    *out = l;
    return EMOE_OK;
fail:
    loader_close(l);
    return st;
}

void loader_close(loader_t *l)
{
    if (!l) return;
    if (l->thread_ok) {
        pthread_mutex_lock(&l->mu);
        while (l->inflight > 0 || l->head) pthread_cond_wait(&l->cv, &l->mu);
        l->stop = 1;
        if (l->uring) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
            while (!sqe) { io_uring_submit(&l->ring); sqe = io_uring_get_sqe(&l->ring); }
            io_uring_prep_nop(sqe);
            io_uring_sqe_set_data(sqe, NULL);
            io_uring_submit(&l->ring);
        } else {
            pthread_cond_broadcast(&l->cv);
        }
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    if (l->ring_ok) io_uring_queue_exit(&l->ring);
    if (l->fd >= 0) close(l->fd);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

emoe_status loader_register_buffer(loader_t *l, void *base, size_t len, emoe_err *err)
{
    if (!l->uring) return emoe_errf(err, EMOE_EUNSUP, "loader %s: buffer registration needs io_uring", l->path);
    struct iovec iov = {.iov_base = base, .iov_len = len};
    pthread_mutex_lock(&l->mu);
    int rc = l->fixed_base ? -EBUSY : io_uring_register_buffers(&l->ring, &iov, 1);
    if (rc == 0) { l->fixed_base = base; l->fixed_len = len; }
    pthread_mutex_unlock(&l->mu);
    if (rc < 0)
        return emoe_errf(err, EMOE_ENOMEM, "loader %s: registering %zu bytes of buffers: %s%s", l->path, len,
                         strerror(-rc), rc == -ENOMEM ? " (raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity)" : "");
    return EMOE_OK;
}

void loader_submit(loader_t *l, loader_read **reads, int n)
{
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < n; i++) {
        reads[i]->got = 0;
        reads[i]->retries = 0;
        push_back(l, reads[i]);
    }
    if (l->uring) pump(l);
    else pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void loader_submit_urgent(loader_t *l, loader_read **reads, int n)
{
    pthread_mutex_lock(&l->mu);
    for (int i = n - 1; i >= 0; i--) { /* the batch keeps its order, ahead of the queue */
        reads[i]->got = 0;
        reads[i]->retries = 0;
        push_front(l, reads[i]);
    }
    if (l->uring) pump(l);
    else pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

int loader_promote(loader_t *l, loader_read *r)
{
    int moved = 0;
    pthread_mutex_lock(&l->mu);
    for (loader_read *p = NULL, *q = l->head; q; p = q, q = q->next) {
        if (q != r) continue;
        if (p) { /* unlink, then to the front */
            p->next = q->next;
            if (l->tail == q) l->tail = p;
            push_front(l, q);
        }
        moved = 1;
        break;
    }
    if (moved && l->uring) pump(l);
    pthread_mutex_unlock(&l->mu);
    return moved;
}

const char *loader_mode(const loader_t *l)
{
    if (l->uring) return l->direct ? "io_uring+O_DIRECT" : "io_uring";
    return l->direct ? "pread+O_DIRECT" : "pread";
}

int loader_is_direct(const loader_t *l) { return l->direct; }

void loader_get_stats(loader_t *l, loader_stats *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->st;
    pthread_mutex_unlock(&l->mu);
}
