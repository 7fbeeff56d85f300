/*
 * testutil.h - helpers shared by the Check suites: a frame recorder, a
 * bounded event loop runner, socket pairs, the test scale and a seeded
 * PRNG.
 */
#ifndef ASYNCHAT_TESTUTIL_H_INCLUDED_
#define ASYNCHAT_TESTUTIL_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

/* Records what a channel or framer delivers: frames as they end, the bytes
 * of the frame in progress, and counts of every callback. */
struct tu_frames {
	struct evbuffer *cur; /* bytes of the frame in progress */
	char **frame;         /* frames ended by found_terminator */
	size_t *len;
	size_t n, cap;
	int collects, founds, connects, closes, errors, drains, frees;
	int last_error;
	size_t max_collect;   /* longest single collect call */
};

void tu_frames_init(struct tu_frames *f);
void tu_frames_clear(struct tu_frames *f);
void tu_frames_collect(struct tu_frames *f, const void *data, size_t len);
/* Ends the frame in progress: its bytes become frame[n++]. */
void tu_frames_found(struct tu_frames *f);
/* 1 if frame i exists and equals s (NUL-terminated). */
int tu_frame_is(const struct tu_frames *f, size_t i, const char *s);
/* 1 if frame i equals the len bytes at s. */
int tu_frame_eq(const struct tu_frames *f, size_t i, const void *s,
    size_t len);
/* 1 if the frame in progress holds exactly the len bytes at s. */
int tu_cur_eq(const struct tu_frames *f, const void *s, size_t len);

/* Run base until cond(arg) is true or timeout_ms pass; 0 if cond became
 * true, -1 on timeout.  cond NULL: run for timeout_ms. */
int tu_run_until(struct event_base *base, int (*cond)(void *), void *arg,
    int timeout_ms);

/* A non-blocking AF_UNIX stream socket pair; aborts the test on failure. */
void tu_socketpair(evutil_socket_t sv[2]);

/* ASYNCHAT_TEST_SCALE from the environment, a positive number (1 when
 * unset or not a number): long tests multiply their sizes by it. */
double tu_scale(void);

/* Deterministic xorshift64*; *state must start non-zero. */
uint64_t tu_rand(uint64_t *state);

#endif /* ASYNCHAT_TESTUTIL_H_INCLUDED_ */
