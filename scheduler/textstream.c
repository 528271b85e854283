/* textstream.c — UTF-8 sanitising and stop-string hold-back; see textstream.h. */
#include "scheduler/textstream.h"

#include <stdlib.h>
#include <string.h>

int sched_buf_append(sched_buf *b, const char *s, size_t n)
{
    return n == 0 ? 0 : emoe_buf_put(b, s, n);
}

void sched_buf_free(sched_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int sched_utf8_seq(const unsigned char *s, size_t n)
{
    if (n == 0) return 0;
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;          /* no overlongs */
        else if (c == 0xED) hi = 0x9F;     /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;     /* <= U+10FFFF */
    } else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return -1;
    }
    return len;
}

int sched_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int l = sched_utf8_seq(u + i, n - i);
        if (l <= 0) return 0;
        i += (size_t)l;
    }
    return 1;
}

int sched_ts_init(sched_textstream *ts, const char *const *stops, int n)
{
    memset(ts, 0, sizeof *ts);
    for (int i = 0; i < n && ts->n_stop < TS_MAX_STOP; i++) {
        if (!stops[i] || !stops[i][0]) continue;
        ts->stop[ts->n_stop] = strdup(stops[i]);
        if (!ts->stop[ts->n_stop]) { sched_ts_free(ts); return -1; }
        ts->stop_len[ts->n_stop] = strlen(stops[i]);
        ts->n_stop++;
    }
    return 0;
}

void sched_ts_free(sched_textstream *ts)
{
    for (int i = 0; i < ts->n_stop; i++) free(ts->stop[i]);
    sched_buf_free(&ts->hold);
    memset(ts, 0, sizeof *ts);
}

static const char REPL[] = "\xEF\xBF\xBD";

/* Sanitises bytes (with the held raw tail) into ts->hold. */
static int sanitize(sched_textstream *ts, const char *bytes, size_t n, int final)
{
    size_t i = 0;
    while (i < n || ts->n_raw) {
        if (ts->n_raw) {
            /* Complete the pending sequence byte by byte. */
            if (i < n) ts->raw[ts->n_raw++] = (unsigned char)bytes[i++];
            int l = sched_utf8_seq(ts->raw, (size_t)ts->n_raw);
            if (l > 0) {
                if (sched_buf_append(&ts->hold, (const char *)ts->raw, (size_t)l)) return -1;
                /* l == n_raw: a valid sequence is never longer than what we fed. */
                ts->n_raw = 0;
            } else if (l < 0) {
                /* Invalid: replace the lead byte, re-feed the rest. */
                if (sched_buf_append(&ts->hold, REPL, 3)) return -1;
                unsigned char rest[4];
                int nr = ts->n_raw - 1;
                memcpy(rest, ts->raw + 1, (size_t)nr);
                ts->n_raw = 0;
                if (nr && sanitize(ts, (const char *)rest, (size_t)nr, 0)) return -1;
            } else if (i >= n) {
                break; /* still incomplete; wait for more bytes */
            }
            continue;
        }
        const unsigned char *u = (const unsigned char *)bytes + i;
        /* Fast path over ASCII. */
        size_t j = 0;
        while (i + j < n && u[j] < 0x80) j++;
        if (j) {
            if (sched_buf_append(&ts->hold, bytes + i, j)) return -1;
            i += j;
            continue;
        }
        int l = sched_utf8_seq(u, n - i);
        if (l > 0) {
            if (sched_buf_append(&ts->hold, bytes + i, (size_t)l)) return -1;
            i += (size_t)l;
        } else if (l < 0) {
            if (sched_buf_append(&ts->hold, REPL, 3)) return -1;
            i++;
        } else {
            memcpy(ts->raw, u, n - i);
            ts->n_raw = (int)(n - i);
            i = n;
        }
    }
    if (final && ts->n_raw) {
        if (sched_buf_append(&ts->hold, REPL, 3)) return -1;
        ts->n_raw = 0;
    }
    return 0;
}

/* Releases hold[0..k) into out and keeps the rest. */
static int release(sched_textstream *ts, size_t k, sched_buf *out)
{
    if (k == 0) return 0;
    if (sched_buf_append(out, ts->hold.p, k)) return -1;
    memmove(ts->hold.p, ts->hold.p + k, ts->hold.n - k);
    ts->hold.n -= k;
    ts->hold.p[ts->hold.n] = 0;
    return 0;
}

int sched_ts_push(sched_textstream *ts, const char *bytes, size_t n, sched_buf *out)
{
    if (ts->stopped) return 1;
    if (sanitize(ts, bytes, n, 0)) return -1;
    if (ts->hold.n == 0) return 0;
    /* Earliest stop match wins. */
    size_t best = (size_t)-1;
    for (int s = 0; s < ts->n_stop; s++) {
        const char *m = memmem(ts->hold.p, ts->hold.n, ts->stop[s], ts->stop_len[s]);
        if (m && (size_t)(m - ts->hold.p) < best) best = (size_t)(m - ts->hold.p);
    }
    if (best != (size_t)-1) {
        if (release(ts, best, out)) return -1;
        ts->hold.n = 0;
        ts->stopped = 1;
        return 1;
    }
    /* Hold back the longest suffix that is a proper prefix of a stop string. */
    size_t keep = 0;
    for (int s = 0; s < ts->n_stop; s++) {
        size_t maxk = ts->stop_len[s] - 1;
        if (maxk > ts->hold.n) maxk = ts->hold.n;
        for (size_t k = maxk; k > keep; k--)
            if (!memcmp(ts->hold.p + ts->hold.n - k, ts->stop[s], k)) { keep = k; break; }
    }
    return release(ts, ts->hold.n - keep, out) ? -1 : 0;
}

int sched_ts_finish(sched_textstream *ts, sched_buf *out)
{
    if (ts->stopped) return 0;
    if (sanitize(ts, NULL, 0, 1)) return -1;
    return release(ts, ts->hold.n, out);
}
