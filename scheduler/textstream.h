/*
 * textstream.h — turns a request's stream of token bytes into releasable text:
 * valid UTF-8 only (an incomplete trailing sequence is held back until the
 * next bytes arrive; invalid bytes become U+FFFD) and stop strings matched
 * across token boundaries without ever releasing any part of a stop string
 * (a suffix that could begin one is held back until it is decided).
 * Used by the scheduler per request; no locking (one owner).
 */
#ifndef EMOE_TEXTSTREAM_H
#define EMOE_TEXTSTREAM_H

#include <stddef.h>

#include "engine/common.h"

typedef emoe_buf sched_buf; /* engine/common.h */

/* Appends n bytes; returns 0, or -1 when out of memory. */
int sched_buf_append(sched_buf *b, const char *s, size_t n);
void sched_buf_free(sched_buf *b);

#define TS_MAX_STOP 4

typedef struct sched_textstream {
    unsigned char raw[4];     /* incomplete UTF-8 tail */
    int n_raw;
    sched_buf hold;           /* valid text not yet released */
    char *stop[TS_MAX_STOP];
    size_t stop_len[TS_MAX_STOP];
    int n_stop;
    int stopped;
} sched_textstream;

/* Copies the non-empty stop strings. Returns 0 or -1 (out of memory). */
int sched_ts_init(sched_textstream *ts, const char *const *stops, int n);
void sched_ts_free(sched_textstream *ts);
/* Feeds token bytes; appends what can be released to out. Returns 1 when a
 * stop string matched (text before it was released; the stream is over),
 * 0 otherwise, -1 when out of memory. */
int sched_ts_push(sched_textstream *ts, const char *bytes, size_t n, sched_buf *out);
/* End of stream: releases all held text (an incomplete sequence -> U+FFFD). */
int sched_ts_finish(sched_textstream *ts, sched_buf *out);

/* Length of the valid UTF-8 sequence starting at s (n bytes available):
 * 1..4 = valid, 0 = a valid but incomplete prefix, -1 = invalid lead/continuation. */
int sched_utf8_seq(const unsigned char *s, size_t n);
/* 1 if all of s[0..n) is valid UTF-8. */
int sched_utf8_valid(const char *s, size_t n);

#endif
