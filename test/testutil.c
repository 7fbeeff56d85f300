/*
 * testutil.c - helpers shared by the Check suites.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "testutil.h"

void
tu_frames_init(struct tu_frames *f)
{
	memset(f, 0, sizeof(*f));
	f->cur = evbuffer_new();
	ck_assert_ptr_nonnull(f->cur);
}

void
tu_frames_clear(struct tu_frames *f)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		free(f->frame[i]);
	free(f->frame);
	free(f->len);
	if (f->cur != NULL)
		evbuffer_free(f->cur);
	memset(f, 0, sizeof(*f));
}

void
tu_frames_collect(struct tu_frames *f, const void *data, size_t len)
{
	ck_assert_uint_gt(len, 0); /* collect never sees zero bytes */
	ck_assert_int_eq(evbuffer_add(f->cur, data, len), 0);
	f->collects++;
	if (len > f->max_collect)
		f->max_collect = len;
}

void
tu_frames_found(struct tu_frames *f)
{
	size_t len = evbuffer_get_length(f->cur);
	char *copy = malloc(len + 1);

	ck_assert_ptr_nonnull(copy);
	evbuffer_remove(f->cur, copy, len);
	copy[len] = '\0';
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 16;
		f->frame = realloc(f->frame, f->cap * sizeof(*f->frame));
		f->len = realloc(f->len, f->cap * sizeof(*f->len));
		ck_assert_ptr_nonnull(f->frame);
		ck_assert_ptr_nonnull(f->len);
	}
	f->frame[f->n] = copy;
	f->len[f->n] = len;
	f->n++;
	f->founds++;
}

int
tu_frame_eq(const struct tu_frames *f, size_t i, const void *s, size_t len)
{
	return i < f->n && f->len[i] == len && memcmp(f->frame[i], s, len) == 0;
}

int
tu_frame_is(const struct tu_frames *f, size_t i, const char *s)
{
	return tu_frame_eq(f, i, s, strlen(s));
}

int
tu_cur_eq(const struct tu_frames *f, const void *s, size_t len)
{
	size_t have = evbuffer_get_length(f->cur);

	if (have != len)
		return 0;
	return len == 0 ||
	    memcmp(evbuffer_pullup(f->cur, (ev_ssize_t)len), s, len) == 0;
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
}

int
tu_run_until(struct event_base *base, int (*cond)(void *), void *arg,
    int timeout_ms)
{
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	int timed_out = 0, rc;
	struct event *timer = evtimer_new(base, on_timeout, &timed_out);

	ck_assert_ptr_nonnull(timer);
	evtimer_add(timer, &tv);
	while (!timed_out && (cond == NULL || !cond(arg)))
		event_base_loop(base, EVLOOP_ONCE);
	rc = cond != NULL && cond(arg) ? 0 : -1;
	event_free(timer);
	return rc;
}

void
tu_socketpair(evutil_socket_t sv[2])
{
	ck_assert_int_eq(evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(sv[0]), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(sv[1]), 0);
}

double
tu_scale(void)
{
	const char *s = getenv("ASYNCHAT_TEST_SCALE");
	double x;
	char *end;

	if (s == NULL || *s == '\0')
		return 1.0;
	x = strtod(s, &end);
	return end != s && x > 0 ? x : 1.0;
}

uint64_t
tu_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ULL;
}
