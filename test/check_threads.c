/*
 * check_threads.c - the cross-thread handle: posts of copies, references,
 * calls and close_when_done from several threads, channels closing under
 * them, posts after close, a handle outliving its channel and its base,
 * double frees.  Every loop is bounded; no test depends on timing.
 * Threads other than the loop's make only handle calls and record what
 * they saw in atomics, which the loop thread checks.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/thread.h>

#include "asynchat.h"
#include "fixture.h"

#define THREADS 4

/* What posted work did, counted from any thread. */
static atomic_int cleanups, calls_open, calls_closed;

static void
reset_counts(void)
{
	atomic_store(&cleanups, 0);
	atomic_store(&calls_open, 0);
	atomic_store(&calls_closed, 0);
}

static void
count_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	free(arg);
	atomic_fetch_add(&cleanups, 1);
}

static void
count_call(struct async_chat *chat, void *arg)
{
	if (chat != NULL)
		atomic_fetch_add(&calls_open, 1);
	else
		atomic_fetch_add(&calls_closed, 1);
	free(arg);
}

/*
 * Basics on the loop thread.
 */

FX_TEST(test_handle_same_and_refs, FX_SOCKETPAIR)
{
	struct async_chat_handle *h = async_chat_handle_new(c->chat);

	ck_assert_ptr_nonnull(h);
	ck_assert_ptr_eq(async_chat_handle_new(c->chat), h);
	ck_assert_int_eq(async_chat_handle_closed(h), 0);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	/* The channel still holds it: a third free is detected. */
	EXPECT_ERRNO(async_chat_handle_free(h), EBADF);
	EXPECT_ERRNO(async_chat_post(h, "x", 1), EBADF);
	EXPECT_ERRNO(async_chat_handle_closed(h), EBADF);
	/* A new reference brings it back. */
	ck_assert_ptr_eq(async_chat_handle_new(c->chat), h);
	ck_assert_int_eq(async_chat_post(h, "ab", 2), 0);
	fx_run_got(c, 2);
	ck_assert_got(c, "ab");
	ck_assert_int_eq(async_chat_handle_free(h), 0);
}

START_TEST(test_bad_args)
{
	struct fx_chan chan, *c = &chan;
	struct async_chat_handle *h;

	EXPECT_ERRNO(async_chat_handle_new(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_handle_free(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_handle_closed(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_post(NULL, "x", 1), EINVAL);
	EXPECT_ERRNO(async_chat_post_reference(NULL, "x", 1, NULL, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_post_call(NULL, count_call, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_post_close_when_done(NULL), EINVAL);
	fx_start(c, FX_SOCKETPAIR);
	h = async_chat_handle_new(c->chat);
	ck_assert_ptr_nonnull(h);
	EXPECT_ERRNO(async_chat_post(h, NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_post_reference(h, NULL, 1, NULL, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_post_call(h, NULL, NULL), EINVAL);
	ck_assert_int_eq(async_chat_post(h, NULL, 0), 0);
	async_chat_close(c->chat);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	fx_end(c);
}
END_TEST

/* Every kind of post, in order, from the loop thread itself. */
FX_TEST(test_post_order_same_thread, FX_SOCKETPAIR)
{
	struct async_chat_handle *h = async_chat_handle_new(c->chat);
	static const char ref[] = "ref,";

	reset_counts();
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(async_chat_post(h, "one,", 4), 0);
	ck_assert_int_eq(async_chat_post_reference(h, ref, 4, count_cleanup,
	                     NULL), 0);
	ck_assert_int_eq(async_chat_post_call(h, count_call, NULL), 0);
	ck_assert_int_eq(async_chat_post(h, "two", 3), 0);
	ck_assert_int_eq(async_chat_post_close_when_done(h), 0);
	EXPECT_ERRNO(async_chat_post(h, "late", 4), EPIPE);
	EXPECT_ERRNO(async_chat_post_close_when_done(h), EPIPE);
	/* Calls are still taken: this one runs before the flush closes. */
	ck_assert_int_eq(async_chat_post_call(h, count_call, NULL), 0);
	/* Nothing runs before the loop does. */
	ck_assert_int_eq(atomic_load(&calls_open), 0);
	ck_assert_uint_eq(evbuffer_get_length(c->p.got), 0);
	fx_run(c, fx_until_gone);
	fx_run(c, fx_until_peer_eof);
	ck_assert_got(c, "one,ref,two");
	ck_assert_int_eq(atomic_load(&calls_open), 2);
	ck_assert_int_eq(atomic_load(&cleanups), 1);
	ck_assert_int_eq(async_chat_handle_closed(h), 1);
	EXPECT_ERRNO(async_chat_post(h, "x", 1), EPIPE);
	EXPECT_ERRNO(async_chat_post_call(h, count_call, NULL), EPIPE);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
}

/* Posts queued when the channel closes: cleanups run and calls are told,
 * inside close, once each. */
FX_TEST(test_close_drops_posts, FX_SOCKETPAIR)
{
	struct async_chat_handle *h = async_chat_handle_new(c->chat);
	int i;

	reset_counts();
	for (i = 0; i < 10; i++) {
		ck_assert_int_eq(async_chat_post_reference(h, "r", 1,
		                     count_cleanup, malloc(1)), 0);
		ck_assert_int_eq(async_chat_post_call(h, count_call,
		                     malloc(1)), 0);
		ck_assert_int_eq(async_chat_post(h, "d", 1), 0);
	}
	async_chat_close(c->chat);
	ck_assert_int_eq(atomic_load(&cleanups), 10);
	ck_assert_int_eq(atomic_load(&calls_closed), 10);
	ck_assert_int_eq(atomic_load(&calls_open), 0);
	ck_assert_int_eq(async_chat_handle_closed(h), 1);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	fx_settle(c->base);
	ck_assert_int_eq(atomic_load(&cleanups), 10);
}

/* A posted call closes the channel: what follows it is dropped. */
static void
close_call(struct async_chat *chat, void *arg)
{
	(void)arg;
	ck_assert_ptr_nonnull(chat);
	async_chat_close(chat);
	/* Still on the callback stack: closed, not gone. */
	EXPECT_ERRNO(async_chat_handle_new(chat), ENOTCONN);
}

FX_TEST(test_call_closes, FX_SOCKETPAIR)
{
	struct async_chat_handle *h = async_chat_handle_new(c->chat);

	reset_counts();
	ck_assert_int_eq(async_chat_post_call(h, count_call, NULL), 0);
	ck_assert_int_eq(async_chat_post_call(h, close_call, NULL), 0);
	ck_assert_int_eq(async_chat_post_reference(h, "r", 1, count_cleanup,
	                     NULL), 0);
	ck_assert_int_eq(async_chat_post_call(h, count_call, NULL), 0);
	fx_run(c, fx_until_gone);
	ck_assert_int_eq(atomic_load(&calls_open), 1);
	ck_assert_int_eq(atomic_load(&calls_closed), 1);
	ck_assert_int_eq(atomic_load(&cleanups), 1);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
}

/* A reference refused on arrival (after close_when_done on the loop) is
 * cleaned up all the same. */
static void
cwd_call(struct async_chat *chat, void *arg)
{
	(void)arg;
	ck_assert_int_eq(async_chat_close_when_done(chat), 0);
}

FX_TEST(test_ref_refused_cleaned, FX_SOCKETPAIR)
{
	struct async_chat_handle *h = async_chat_handle_new(c->chat);

	reset_counts();
	ck_assert_int_eq(async_chat_post(h, "a", 1), 0);
	ck_assert_int_eq(async_chat_post_call(h, cwd_call, NULL), 0);
	ck_assert_int_eq(async_chat_post_reference(h, "r", 1, count_cleanup,
	                     NULL), 0);
	ck_assert_int_eq(async_chat_post(h, "b", 1), 0);
	fx_run(c, fx_until_gone);
	fx_run(c, fx_until_peer_eof);
	ck_assert_got(c, "a");
	ck_assert_int_eq(atomic_load(&cleanups), 1);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
}

/* The handle outlives its channel and its base. */
START_TEST(test_outlives_base)
{
	struct fx_chan chan, *c = &chan;
	struct async_chat_handle *h;

	reset_counts();
	fx_start(c, FX_SOCKETPAIR);
	h = async_chat_handle_new(c->chat);
	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(async_chat_post_call(h, count_call, NULL), 0);
	fx_end(c); /* closes the channel, frees the base */
	ck_assert_int_eq(atomic_load(&calls_closed), 1);
	ck_assert_int_eq(async_chat_handle_closed(h), 1);
	EXPECT_ERRNO(async_chat_post(h, "x", 1), EPIPE);
	EXPECT_ERRNO(async_chat_post_reference(h, "x", 1, NULL, NULL), EPIPE);
	EXPECT_ERRNO(async_chat_post_call(h, count_call, NULL), EPIPE);
	EXPECT_ERRNO(async_chat_post_close_when_done(h), EPIPE);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
}
END_TEST

/*
 * Several threads.
 */

struct poster {
	pthread_t tid;
	struct async_chat_handle *h;
	int id, n;
	int refs;               /* post references too */
	atomic_int *go;         /* spin until set: start together */
	int accepted, refused;  /* posts that returned 0, and EPIPE */
	int acc_refs, acc_calls; /* of which references, calls */
	int other_errors;
	int free_rc;
};

static void *
poster_run(void *arg)
{
	struct poster *p = arg;
	char msg[32];
	int i;

	while (p->go != NULL && !atomic_load(p->go))
		;
	for (i = 0; i < p->n; i++) {
		int len = snprintf(msg, sizeof(msg), "%d:%06d\n", p->id, i);
		int rc;

		if (p->refs && i % 2 == 1) {
			char *copy = malloc((size_t)len);

			memcpy(copy, msg, (size_t)len);
			rc = async_chat_post_reference(p->h, copy, (size_t)len,
			    count_cleanup, copy);
			if (rc != 0)
				free(copy);
			else
				p->acc_refs++;
		} else if (p->refs && i % 5 == 0) {
			rc = async_chat_post_call(p->h, count_call, NULL);
			if (rc == 0) {
				p->acc_calls++;
				rc = async_chat_post(p->h, msg, (size_t)len);
			}
		} else {
			rc = async_chat_post(p->h, msg, (size_t)len);
		}
		if (rc == 0)
			p->accepted++;
		else if (errno == EPIPE)
			p->refused++;
		else
			p->other_errors++;
	}
	p->free_rc = async_chat_handle_free(p->h);
	return NULL;
}

/* n threads, each with a reference of its own to chat's handle. */
static void
start_posters(struct poster *ps, int n, struct async_chat *chat,
    int count, int refs, atomic_int *go)
{
	int i;

	for (i = 0; i < n; i++) {
		memset(&ps[i], 0, sizeof(ps[i]));
		ps[i].h = async_chat_handle_new(chat);
		ck_assert_ptr_nonnull(ps[i].h);
		ps[i].id = i;
		ps[i].n = count;
		ps[i].refs = refs;
		ps[i].go = go;
		ck_assert_int_eq(
		    pthread_create(&ps[i].tid, NULL, poster_run, &ps[i]), 0);
	}
}

/* Each thread's lines arrive whole and in its order. */
static void
check_lines(struct evbuffer *got, int threads, int per_thread)
{
	int next[THREADS] = {0};
	size_t n;
	char *line;

	while ((line = evbuffer_readln(got, &n, EVBUFFER_EOL_LF)) != NULL) {
		int id, seq;

		ck_assert_int_eq(sscanf(line, "%d:%d", &id, &seq), 2);
		ck_assert_int_ge(id, 0);
		ck_assert_int_lt(id, threads);
		ck_assert_int_eq(seq, next[id]);
		next[id]++;
		free(line);
	}
	for (n = 0; n < (size_t)threads; n++)
		ck_assert_int_eq(next[n], per_thread);
}

FX_TEST(test_threads_post_in_order, FX_SOCKETPAIR)
{
	struct poster ps[THREADS];
	struct async_chat_handle *h = async_chat_handle_new(c->chat);
	int per_thread = 2000 * tu_scale() < 10 ? 10 : (int)(2000 * tu_scale());
	int i;

	reset_counts();
	ck_assert_ptr_nonnull(h);
	start_posters(ps, THREADS, c->chat, per_thread, 1, NULL);
	/* 9 bytes a line: "i:nnnnnn\n". */
	fx_run_got(c, (size_t)THREADS * per_thread * 9);
	for (i = 0; i < THREADS; i++) {
		pthread_join(ps[i].tid, NULL);
		ck_assert_int_eq(ps[i].accepted, per_thread);
		ck_assert_int_eq(ps[i].other_errors + ps[i].refused, 0);
		ck_assert_int_eq(ps[i].free_rc, 0);
	}
	check_lines(c->p.got, THREADS, per_thread);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	async_chat_close(c->chat);
	/* Every reference was cleaned up; every call ran on the open
	 * channel. */
	ck_assert_int_eq(atomic_load(&cleanups), THREADS * (per_thread / 2));
	ck_assert_int_eq(atomic_load(&calls_closed), 0);
}

/*
 * Threads post while the loop closes the channel under them: every post
 * that was accepted has its cleanup or call exactly once, the rest fail
 * with EPIPE, and the handle outlives the channel in every thread.
 */
static int
until_some_calls(struct fx_chan *c)
{
	(void)c;
	return atomic_load(&calls_open) >= 5;
}

START_TEST(test_threads_race_close)
{
	int rounds = 20 * tu_scale() < 2 ? 2 : (int)(20 * tu_scale());
	int r;

	for (r = 0; r < rounds; r++) {
		struct fx_chan chan, *c = &chan;
		struct poster ps[THREADS];
		struct async_chat_handle *h;
		atomic_int go = 0;
		int i, refs = 0, calls = 0;

		reset_counts();
		fx_start(c, r % 2 ? FX_SOCKETPAIR : FX_PAIR);
		h = async_chat_handle_new(c->chat);
		ck_assert_ptr_nonnull(h);
		start_posters(ps, THREADS, c->chat, 500, 1, &go);
		atomic_store(&go, 1);
		/* Close after a few calls have run, or at once on odd
		 * rounds of four. */
		if (r % 4 != 3)
			fx_run(c, until_some_calls);
		ck_assert_int_eq(async_chat_handle_free(h), 0);
		async_chat_close(c->chat);
		for (i = 0; i < THREADS; i++) {
			pthread_join(ps[i].tid, NULL);
			ck_assert_int_eq(ps[i].other_errors, 0);
			ck_assert_int_eq(ps[i].free_rc, 0);
			ck_assert_int_eq(ps[i].accepted + ps[i].refused, 500);
			refs += ps[i].acc_refs;
			calls += ps[i].acc_calls;
		}
		fx_end(c);
		/* Each accepted reference cleaned up once, each accepted
		 * call run once, open or told it closed. */
		ck_assert_int_eq(atomic_load(&cleanups), refs);
		ck_assert_int_eq(
		    atomic_load(&calls_open) + atomic_load(&calls_closed), calls);
	}
}
END_TEST

/*
 * Exactly once, counted per post: each thread posts references whose
 * cleanup marks a slot; every accepted slot is marked once, no refused
 * one at all.
 */
#define SLOTS 1000

struct slot_poster {
	pthread_t tid;
	struct async_chat_handle *h;
	atomic_int marks[SLOTS];
	int accepted[SLOTS];
	atomic_int *go;
};

static void
mark_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void
mark_call(struct async_chat *chat, void *arg)
{
	(void)chat;
	atomic_fetch_add((atomic_int *)arg, 1);
}

static void *
slot_run(void *arg)
{
	struct slot_poster *p = arg;
	int i;

	while (!atomic_load(p->go))
		;
	for (i = 0; i < SLOTS; i++) {
		int rc = i % 2 ? async_chat_post_reference(p->h, "s", 1,
		                     mark_cleanup, &p->marks[i])
		               : async_chat_post_call(p->h, mark_call,
		                     &p->marks[i]);

		p->accepted[i] = rc == 0;
	}
	async_chat_handle_free(p->h);
	return NULL;
}

static int
until_a_mark(struct fx_chan *c)
{
	struct slot_poster *ps = c->user;

	return atomic_load(&ps[0].marks[0]) > 0;
}

START_TEST(test_threads_exactly_once)
{
	struct fx_chan chan, *c = &chan;
	struct slot_poster *ps = calloc(THREADS, sizeof(*ps));
	struct async_chat_handle *h;
	atomic_int go = 0;
	int i, j, accepted = 0;

	ck_assert_ptr_nonnull(ps);
	fx_start(c, FX_SOCKETPAIR);
	c->user = ps;
	h = async_chat_handle_new(c->chat);
	for (i = 0; i < THREADS; i++) {
		ps[i].h = async_chat_handle_new(c->chat);
		ps[i].go = &go;
		ck_assert_int_eq(
		    pthread_create(&ps[i].tid, NULL, slot_run, &ps[i]), 0);
	}
	atomic_store(&go, 1);
	fx_run(c, until_a_mark);
	async_chat_close(c->chat);
	for (i = 0; i < THREADS; i++)
		pthread_join(ps[i].tid, NULL);
	fx_end(c);
	for (i = 0; i < THREADS; i++)
		for (j = 0; j < SLOTS; j++) {
			ck_assert_int_eq(atomic_load(&ps[i].marks[j]),
			    ps[i].accepted[j]);
			accepted += ps[i].accepted[j];
		}
	ck_assert_int_ge(accepted, 1);
	ck_assert_int_eq(async_chat_handle_closed(h), 1);
	ck_assert_int_eq(async_chat_handle_free(h), 0);
	free(ps);
}
END_TEST

/*
 * A loop per thread: each thread runs its own base with a channel over a
 * socket pair and posts to every other thread's channel; thread 0 closes
 * its channel half-way.  Every thread frees its base while the others
 * still hold its handle, so handles outlive channels and bases.
 */
#define LOOPS 3
#define LOOP_ROUNDS 200

struct loop {
	pthread_t tid;
	int id;
	struct async_chat_handle **handles; /* LOOPS, shared */
	atomic_int *ready, *posting;
	atomic_int *closed0;                /* thread 0's channel closed */
	atomic_int *accepted_to;            /* LOOPS: posts that returned 0 */
	int refused[LOOPS], other_errors, setup_failed;
	size_t got;
	int complete;                       /* got every accepted byte */
};

static const struct async_chat_handlers plain_handlers;

static void
drain_peer(evutil_socket_t fd, size_t *got)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		*got += (size_t)n;
}

static void *
loop_run(void *arg)
{
	struct loop *l = arg;
	struct event_base *base = event_base_new();
	struct async_chat *chat = NULL;
	evutil_socket_t sv[2] = {-1, -1};
	int i, k;

	if (base == NULL ||
	    evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    evutil_make_socket_nonblocking(sv[1]) != 0 ||
	    (chat = async_chat_new(base, sv[0], &plain_handlers, NULL)) ==
	        NULL ||
	    (l->handles[l->id] = async_chat_handle_new(chat)) == NULL)
		l->setup_failed = 1;
	/* Every handle exists before anyone posts. */
	atomic_fetch_add(l->ready, 1);
	while (atomic_load(l->ready) < LOOPS)
		;
	for (i = 0; i < LOOP_ROUNDS; i++) {
		for (k = 0; k < LOOPS; k++) {
			if (k == l->id || l->handles[k] == NULL)
				continue;
			if (async_chat_post(l->handles[k], "p", 1) == 0)
				atomic_fetch_add(&l->accepted_to[k], 1);
			else if (errno == EPIPE)
				l->refused[k]++;
			else
				l->other_errors++;
		}
		if (l->id == 0 && i == LOOP_ROUNDS / 2) {
			async_chat_close(chat);
			chat = NULL;
			atomic_store(l->closed0, 1);
		}
		/* The second half of the others' posts follows the close. */
		while (l->id != 0 && i == LOOP_ROUNDS / 2 &&
		    !atomic_load(l->closed0))
			;
		if (base != NULL)
			event_base_loop(base, EVLOOP_NONBLOCK);
		if (sv[1] >= 0)
			drain_peer(sv[1], &l->got);
	}
	atomic_fetch_sub(l->posting, 1);
	/* Once nobody posts, the open channels get every byte accepted for
	 * them (a bounded wait: 10 s at most). */
	for (i = 0; chat != NULL && i < 10000; i++) {
		if (atomic_load(l->posting) == 0 &&
		    l->got == (size_t)atomic_load(&l->accepted_to[l->id])) {
			l->complete = 1;
			break;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		drain_peer(sv[1], &l->got);
		if (l->got < (size_t)atomic_load(&l->accepted_to[l->id]))
			continue;
		usleep(1000);
	}
	if (l->id == 0)
		l->complete = 1;
	async_chat_close(chat);
	if (base != NULL) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		event_base_free(base);
	}
	if (sv[1] >= 0)
		evutil_closesocket(sv[1]);
	return NULL;
}

START_TEST(test_loop_per_thread)
{
	struct async_chat_handle *handles[LOOPS] = {NULL};
	struct loop loops[LOOPS];
	atomic_int ready = 0, posting = LOOPS, closed0 = 0;
	atomic_int accepted_to[LOOPS];
	int i;

	for (i = 0; i < LOOPS; i++) {
		atomic_init(&accepted_to[i], 0);
		memset(&loops[i], 0, sizeof(loops[i]));
		loops[i].id = i;
		loops[i].handles = handles;
		loops[i].ready = &ready;
		loops[i].posting = &posting;
		loops[i].closed0 = &closed0;
		loops[i].accepted_to = accepted_to;
	}
	for (i = 0; i < LOOPS; i++)
		ck_assert_int_eq(pthread_create(&loops[i].tid, NULL, loop_run,
		                     &loops[i]), 0);
	for (i = 0; i < LOOPS; i++)
		pthread_join(loops[i].tid, NULL);
	for (i = 0; i < LOOPS; i++) {
		ck_assert_int_eq(loops[i].setup_failed, 0);
		ck_assert_int_eq(loops[i].other_errors, 0);
		ck_assert_msg(loops[i].complete, "loop %d got %zu of %d", i,
		    loops[i].got, atomic_load(&accepted_to[i]));
		/* Channels and bases are gone; the handles are not. */
		ck_assert_int_eq(async_chat_handle_closed(handles[i]), 1);
		EXPECT_ERRNO(async_chat_post(handles[i], "x", 1), EPIPE);
		ck_assert_int_eq(async_chat_handle_free(handles[i]), 0);
	}
	/* Thread 0's channel closed half-way: the later posts to it were
	 * refused. */
	for (i = 1; i < LOOPS; i++) {
		int k;

		ck_assert_int_ge(loops[i].refused[0], LOOP_ROUNDS / 2 - 1);
		for (k = 1; k < LOOPS; k++)
			ck_assert_int_eq(loops[i].refused[k], 0);
	}
}
END_TEST

static void
add_basics(TCase *tc)
{
	tcase_add_test(tc, test_handle_same_and_refs);
	tcase_add_test(tc, test_bad_args);
	tcase_add_test(tc, test_post_order_same_thread);
	tcase_add_test(tc, test_close_drops_posts);
	tcase_add_test(tc, test_call_closes);
	tcase_add_test(tc, test_ref_refused_cleaned);
	tcase_add_test(tc, test_outlives_base);
}

static void
add_threads(TCase *tc)
{
	tcase_add_test(tc, test_threads_post_in_order);
	tcase_add_test(tc, test_threads_race_close);
	tcase_add_test(tc, test_threads_exactly_once);
	tcase_add_test(tc, test_loop_per_thread);
}

/* Before any base is made: libevent's locking for the whole suite. */
static void
before(void)
{
	if (evthread_use_pthreads() != 0)
		abort();
}

static const struct fx_tcase tcases[] = {
    {"basics", 0, add_basics},
    {"threads", 60, add_threads},
    {NULL, 0, NULL},
};

const struct fx_suite fx_suite = {"threads", tcases, before};
