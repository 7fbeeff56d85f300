/*
 * check_output.c - the output side of a channel: the FIFO of pushes,
 * producers and close/shutdown markers, producer pacing and failures,
 * handle_drain and async_chat_output_pending(), discard_buffers(), the
 * buffer size tunables and the argument checks of every output function.
 * The channels and their peers come from fixture.h.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"

/*
 * Push helpers: a counting producer and a counting reference cleanup.
 */

struct prod {
	const char *const *pieces; /* NULL-terminated; a NULL entry ends it */
	int calls, frees;
	int fail_at; /* the call (1-based) that returns -1 */
	size_t last_hint;
	struct fx_chan *c;
	void (*hook)(struct prod *p, struct evbuffer *out);
};

static int
prod_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct prod *p = ctx;
	const char *piece;

	ck_assert_int_eq(p->frees, 0); /* never pulled after its free */
	p->calls++;
	p->last_hint = size_hint;
	if (p->hook != NULL)
		p->hook(p, out);
	if (p->fail_at != 0 && p->calls == p->fail_at)
		return -1;
	piece = p->pieces != NULL ? p->pieces[p->calls - 1] : NULL;
	if (piece != NULL)
		ck_assert_int_eq(evbuffer_add(out, piece, strlen(piece)), 0);
	return 0;
}

static void
prod_free(void *ctx)
{
	((struct prod *)ctx)->frees++;
}

static const struct async_chat_producer_ops prod_ops = {prod_more, prod_free};

struct ref {
	const void *data;
	size_t len;
	int runs;
};

static void
ref_cleanup(const void *data, size_t len, void *arg)
{
	struct ref *r = arg;

	ck_assert_ptr_eq(data, r->data);
	ck_assert_uint_eq(len, r->len);
	r->runs++;
}

static int
push_ref(struct async_chat *chat, struct ref *r, const char *s)
{
	r->data = s;
	r->len = strlen(s);
	r->runs = 0;
	return async_chat_push_reference(chat, s, r->len, ref_cleanup, r);
}

static int
until_got_and_drains(struct fx_chan *c)
{
	return fx_until_got(c) && fx_until_drains(c);
}

/* The transports a transport-independent test runs over, and the socket
 * ones: a bufferevent pair hands what is pushed to its partner at once,
 * so nothing stays pending there. */
static const enum fx_kind every_kind[] = {
    FX_SOCKETPAIR, FX_PAIR, FX_PAIR_SYNC, FX_TCP4, FX_TCP6};
static const enum fx_kind socket_kinds[] = {FX_SOCKETPAIR, FX_TCP4, FX_TCP6};

/*
 * FIFO order
 */

/* Every kind of push, with data pushed while producers wait ahead of it:
 * the peer must see exactly the call order. */
FX_TEST(test_fifo_order, every_kind[_i])
{
	static const char *const p_pieces[] = {"<P1>", "<P2>", "<P3>", NULL};
	static const char simple[] = "simple-producer-data!";
	static const char expect[] = "A:B:C:23456<P1><P2><P3>D:"
	                             "simple-producer-data!E3456789F"
	                             "01234567890123456789";
	struct prod p = {.pieces = p_pieces};
	struct ref r1, r2;
	struct stat st1, st2, st3;
	struct evbuffer *buf;
	int fd1, fd2, fd3, sees_close;

	/* A bufferevent pair tells its partner nothing when one end is
	 * freed, so only a socket peer sees the close as EOF. */
	sees_close =
	    every_kind[_i] != FX_PAIR && every_kind[_i] != FX_PAIR_SYNC;
	fd1 = fx_temp_file("0123456789", &st1);
	fd2 = fx_temp_file("0123456789", &st2);
	fd3 = fx_temp_file("01234567890123456789", &st3);
	buf = evbuffer_new();
	/* A tiny out_buffer_size keeps producers waiting in the queue, so
	 * that the later pushes really queue behind them. */
	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 4), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "A:", 2), 0);
	ck_assert_int_eq(evbuffer_add(buf, "B:", 2), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0); /* moved out */
	ck_assert_int_eq(push_ref(c->chat, &r1, "C:"), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd1, 2, 5), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "D:", 2), 0);
	ck_assert_int_eq(
	    async_chat_push_simple_producer(c->chat, simple, strlen(simple), 8),
	    0);
	ck_assert_int_eq(async_chat_push(c->chat, "E", 1), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd2, 3, -1), 0);
	ck_assert_int_eq(push_ref(c->chat, &r2, "F"), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd3, 0, -1), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	/* Nothing has been sent or dropped yet (a pair hands bytes to its
	 * partner at once, but the partner has not read them). */
	ck_assert_int_eq(r1.runs, 0);
	ck_assert_int_eq(r2.runs, 0);
	if (sees_close)
		ck_assert_int_eq(p.frees, 0);

	fx_run(c, fx_until_gone);
	if (sees_close)
		fx_run(c, fx_until_eof);
	ck_assert_got(c, expect);
	ck_assert_int_eq(c->f.frees, 1);
	ck_assert_int_eq(c->f.errors, 0);
	ck_assert_int_eq(p.calls, 4); /* three pieces and the empty one */
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	/* The channel closed every file it was given. */
	ck_assert(!fx_fd_is_file(fd1, &st1));
	ck_assert(!fx_fd_is_file(fd2, &st2));
	ck_assert(!fx_fd_is_file(fd3, &st3));
	evbuffer_free(buf);
}

/*
 * push
 */

FX_TEST(test_large_push, socket_kinds[_i])
{
	size_t len = 10 << 20, i;
	unsigned char *data = malloc(len);
	uint64_t seed = 7;

	ck_assert_ptr_nonnull(data);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	ck_assert_int_eq(async_chat_push(c->chat, data, len), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), len);
	c->want = len;
	c->want_drains = 1;
	ck_assert_int_eq(fx_wait(c, until_got_and_drains, 30000), 0);
	ck_assert(fx_got_is(c, data, len));
	ck_assert_int_eq(c->f.drains, 1);
	free(data);
}

FX_TEST(test_push_empty, FX_SOCKETPAIR)
{
	struct evbuffer *buf = evbuffer_new();
	struct ref r;

	ck_assert_int_eq(async_chat_push(c->chat, "ignored", 0), 0);
	ck_assert_int_eq(async_chat_push(c->chat, NULL, 0), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	r.data = "r";
	r.len = 0;
	r.runs = 0;
	ck_assert_int_eq(
	    async_chat_push_reference(c->chat, "r", 0, ref_cleanup, &r), 0);
	ck_assert_int_le(r.runs, 1);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	ck_assert_int_eq(r.runs, 1);
	ck_assert_int_eq(c->f.drains, 0); /* nothing was ever queued */
	ck_assert_got(c, "");
	ck_assert_int_eq(async_chat_push(c->chat, "z", 1), 0);
	fx_run_got(c, 1);
	ck_assert_got(c, "z");
	evbuffer_free(buf);
}

/*
 * push_buffer
 */

/* A content above 1 KiB is moved and a small one copied: either way the
 * caller's buffer is left empty and stays usable, and the bytes go out
 * in call order. */
FX_TEST(test_push_buffer, FX_SOCKETPAIR)
{
	struct evbuffer *buf = evbuffer_new(), *want = evbuffer_new();
	char big[3000];
	size_t len;

	ck_assert_ptr_nonnull(buf);
	ck_assert_ptr_nonnull(want);
	memset(big, 'b', sizeof(big));
	ck_assert_int_eq(evbuffer_add(buf, big, sizeof(big)), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	ck_assert_int_eq(evbuffer_add(buf, "small", 5), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "|", 1), 0);
	ck_assert_int_eq(evbuffer_add(buf, big, sizeof(big)), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0);
	len = 2 * sizeof(big) + 6;
	ck_assert_uint_eq(async_chat_output_pending(c->chat), len);
	ck_assert_int_eq(evbuffer_add(want, big, sizeof(big)), 0);
	ck_assert_int_eq(evbuffer_add(want, "small|", 6), 0);
	ck_assert_int_eq(evbuffer_add(want, big, sizeof(big)), 0);
	fx_run_got(c, len);
	ck_assert(fx_got_is(c, evbuffer_pullup(want, -1), len));
	evbuffer_free(buf);
	evbuffer_free(want);
}

/* A buffer whose front is frozen cannot be drained: push_buffer fails
 * with ENOMEM and queues nothing, whether called inside a callback (the
 * stage's copy is taken back) or outside one, and the buffer keeps its
 * content; the pushes after it go out as if it had not been called. */
static struct evbuffer *frozen_buf;

static void
push_frozen_on_found(struct fx_chan *c, enum fx_cb which)
{
	(void)which;
	ck_assert_int_eq(async_chat_push(c->chat, "a", 1), 0);
	EXPECT_ERRNO(async_chat_push_buffer(c->chat, frozen_buf), ENOMEM);
	ck_assert_uint_eq(evbuffer_get_length(frozen_buf), 3);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 1);
	ck_assert_int_eq(async_chat_push(c->chat, "b", 1), 0);
}

START_TEST(test_push_buffer_frozen)
{
	struct fx_chan c;

	frozen_buf = evbuffer_new();
	ck_assert_ptr_nonnull(frozen_buf);
	ck_assert_int_eq(evbuffer_add(frozen_buf, "xyz", 3), 0);
	ck_assert_int_eq(evbuffer_freeze(frozen_buf, 1), 0);
	fx_init(&c, NULL);
	fx_once(&c, FX_FOUND, 1, push_frozen_on_found);
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	fx_sends(&c, "go\n");
	fx_run_got(&c, 2);
	ck_assert(fx_got_is(&c, "ab", 2));
	/* Outside callbacks. */
	EXPECT_ERRNO(async_chat_push_buffer(c.chat, frozen_buf), ENOMEM);
	ck_assert_uint_eq(evbuffer_get_length(frozen_buf), 3);
	ck_assert_uint_eq(async_chat_output_pending(c.chat), 0);
	ck_assert_int_eq(evbuffer_unfreeze(frozen_buf, 1), 0);
	ck_assert_int_eq(async_chat_push_buffer(c.chat, frozen_buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(frozen_buf), 0);
	fx_run_got(&c, 5);
	ck_assert(fx_got_is(&c, "abxyz", 5));
	fx_end(&c);
	evbuffer_free(frozen_buf);
}
END_TEST

/*
 * push_reference
 */

/* The bytes are not copied: the cleanup runs once, when they have been
 * sent, with the pointer and length given; a NULL cleanup is allowed. */
START_TEST(test_push_reference)
{
	static const char one[] = "first;", two[] = "second;";
	struct fx_chan c;
	struct ref r1, r2;

	fx_start(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(push_ref(c.chat, &r1, one), 0);
	ck_assert_int_eq(async_chat_push(c.chat, "copy;", 5), 0);
	ck_assert_int_eq(
	    async_chat_push_reference(c.chat, "bare;", 5, NULL, NULL), 0);
	ck_assert_int_eq(push_ref(c.chat, &r2, two), 0);
	/* The loop has not run: nothing has been sent yet. */
	ck_assert_int_eq(r1.runs, 0);
	ck_assert_int_eq(r2.runs, 0);
	ck_assert_uint_eq(async_chat_output_pending(c.chat), 6 + 5 + 5 + 7);
	fx_run_got(&c, 6 + 5 + 5 + 7);
	ck_assert_got(&c, "first;copy;bare;second;");
	c.want_drains = 1;
	fx_run(&c, fx_until_drains);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	fx_end(&c);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
}
END_TEST

/*
 * Producers
 */

/* Records the size of every addition to an evbuffer. */
struct adds {
	size_t n[64];
	int count;
};

static void
count_adds(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct adds *a = arg;

	(void)buf;
	if (info->n_added > 0 && a->count < 64)
		a->n[a->count++] = info->n_added;
}

/* A simple producer serves buffer_size bytes per piece, 512 for 0. */
static const struct {
	size_t buffer_size, len, piece;
} simple_cases[] = {{8, 21, 8}, {0, 1300, 512}, {100, 100, 100}};

FX_TEST(test_simple_producer_pieces, FX_SOCKETPAIR)
{
	size_t buffer_size = simple_cases[_i].buffer_size;
	size_t len = simple_cases[_i].len, piece = simple_cases[_i].piece;
	struct adds adds = {{0}, 0};
	struct evbuffer *out;
	struct evbuffer_cb_entry *cbe;
	unsigned char *data = malloc(len);
	uint64_t seed = 0x5eed + len;
	size_t i;
	int k;

	ck_assert_ptr_nonnull(data);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	out = bufferevent_get_output(async_chat_get_bufferevent(c->chat));
	cbe = evbuffer_add_cb(out, count_adds, &adds);
	ck_assert_ptr_nonnull(cbe);
	ck_assert_int_eq(
	    async_chat_push_simple_producer(c->chat, data, len, buffer_size),
	    0);
	/* The producer holds its own copy. */
	memset(data, 0, len);
	fx_run_got(c, len);
	ck_assert_int_eq(evbuffer_remove_cb_entry(out, cbe), 0);
	seed = 0x5eed + len;
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	ck_assert(fx_got_is(c, data, len));
	ck_assert_int_eq(adds.count, (int)((len + piece - 1) / piece));
	for (k = 0; k < adds.count; k++)
		ck_assert_uint_eq(
		    adds.n[k], k + 1 < adds.count ? piece : len - k * piece);
	free(data);
}

/* Producers are pulled only while the output buffer is below
 * out_buffer_size. */

#define BIG_TOTAL ((uint64_t)64 << 20)
#define BIG_OUT 32768

static unsigned char
gen_byte(uint64_t i)
{
	return (unsigned char)((((uint32_t)i * 2654435761u) >> 24) ^
	                       (uint32_t)(i >> 16));
}

struct gen {
	struct fx_chan *c;
	uint64_t total, produced, received;
	int calls, frees;
	size_t max_out; /* most the output buffer held after a piece */
};

static int
gen_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct gen *g = ctx;
	struct async_chat *chat = g->c->chat;
	struct evbuffer *bevout =
	    bufferevent_get_output(async_chat_get_bufferevent(chat));
	size_t have = evbuffer_get_length(bevout), n, i, after;
	struct evbuffer_iovec v;
	unsigned char *d;

	g->calls++;
	ck_assert_uint_eq(size_hint, BIG_OUT);
	/* Pulled only below out_buffer_size, with nothing queued behind. */
	ck_assert_uint_lt(have, BIG_OUT);
	ck_assert_uint_eq(async_chat_output_pending(chat), have);
	n = g->total - g->produced < size_hint
	        ? (size_t)(g->total - g->produced)
	        : size_hint;
	if (n == 0)
		return 0;
	ck_assert_int_eq(evbuffer_reserve_space(out, (ev_ssize_t)n, &v, 1), 1);
	d = v.iov_base;
	for (i = 0; i < n; i++)
		d[i] = gen_byte(g->produced + i);
	v.iov_len = n;
	ck_assert_int_eq(evbuffer_commit_space(out, &v, 1), 0);
	g->produced += n;
	after = evbuffer_get_length(bevout);
	if (after > g->max_out)
		g->max_out = after;
	return 0;
}

static void
gen_free(void *ctx)
{
	((struct gen *)ctx)->frees++;
}

static const struct async_chat_producer_ops gen_ops = {gen_more, gen_free};

/* The peer checks the bytes as they come instead of keeping 64 MiB. */
static void
gen_peer_read(struct fx_peer *p, struct evbuffer *in)
{
	struct gen *g = p->user;
	unsigned char chunk[16384];
	int n;

	while ((n = evbuffer_remove(in, chunk, sizeof(chunk))) > 0) {
		int i;

		for (i = 0; i < n; i++)
			if (chunk[i] != gen_byte(g->received + i))
				ck_abort_msg("byte %llu is wrong",
				    (unsigned long long)(g->received + i));
		g->received += n;
	}
	/* The producer never runs far ahead of what the peer has taken:
	 * the output buffer and the socket's buffers only. */
	ck_assert_uint_le(g->produced - g->received, (uint64_t)16 << 20);
}

static int
until_gen_done(struct fx_chan *c)
{
	struct gen *g = c->user;

	return g->received >= g->total && g->frees > 0;
}

FX_TEST(test_producer_paced_by_out_buffer_size, FX_SOCKETPAIR)
{
	struct gen g = {.c = c, .total = BIG_TOTAL};

	c->user = &g;
	c->p.on_read = gen_peer_read;
	c->p.user = &g;
	/* A slow reader: small reads, one per event. */
	bufferevent_set_max_single_read(c->p.bev, 16384);
	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, BIG_OUT), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &gen_ops, &g), 0);
	ck_assert_int_eq(fx_wait(c, until_gen_done, 60000), 0);
	ck_assert_uint_eq(g.produced, BIG_TOTAL);
	ck_assert_uint_eq(g.received, BIG_TOTAL);
	ck_assert_int_eq(g.frees, 1);
	/* One call per piece and one that finds it exhausted. */
	ck_assert_int_eq(g.calls, (int)(BIG_TOTAL / BIG_OUT) + 1);
	ck_assert_uint_le(g.max_out, 2 * BIG_OUT);
	ck_assert_uint_gt(g.max_out, 0);
	c->want_drains = 1;
	fx_run(c, fx_until_drains);
	ck_assert_int_eq(c->f.drains, 1);
}

START_TEST(test_producer_error_handled)
{
	static const char *const pieces[] = {"p1", "p2", NULL};
	struct fx_chan c;
	struct prod p = {.pieces = pieces, .fail_at = 2};
	struct prod q = {.pieces = pieces};

	fx_start(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_push(c.chat, "before;", 7), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &p), 0);
	ck_assert_int_eq(async_chat_push(c.chat, ";after;", 7), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &q), 0);
	fx_run_got(&c, strlen("before;p1;after;p1p2"));
	ck_assert_got(&c, "before;p1;after;p1p2");
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_PRODUCER);
	ck_assert_int_eq(p.calls, 2);
	ck_assert_int_eq(p.frees, 1);
	c.want_drains = 1;
	fx_run(&c, fx_until_drains);
	ck_assert_int_eq(q.frees, 1);
	ck_assert_int_eq(c.f.frees, 0); /* the handler did not close */
	ck_assert_int_eq(async_chat_push(c.chat, "more", 4), 0);
	fx_run_got(&c, strlen("before;p1;after;p1p2more"));
	ck_assert_got(&c, "before;p1;after;p1p2more");
	fx_end(&c);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(q.frees, 1);
}
END_TEST

/* libasynchat's own handle_close and handle_error: close the channel. */
static void
start_with_defaults(struct fx_chan *c)
{
	fx_init(c, NULL);
	c->h.handle_close = NULL;
	c->h.handle_error = NULL;
	fx_open(c, FX_SOCKETPAIR);
}

/* With the default handle_error the channel closes; the application may
 * still use the channel after push_with_producer() returns, because it
 * has not closed it itself. */
START_TEST(test_producer_error_default_closes)
{
	struct fx_chan c;
	struct prod p = {.fail_at = 1};
	struct prod q = {0};

	start_with_defaults(&c);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &p), 0);
	ck_assert_int_eq(c.f.frees, 0);
	ck_assert_int_eq(async_chat_push(c.chat, "lost", 4), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &q), 0);
	fx_run(&c, fx_until_gone);
	ck_assert_int_eq(c.f.frees, 1);
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(q.calls, 0);
	ck_assert_int_eq(q.frees, 1); /* freed by the close */
	fx_run(&c, fx_until_eof);
	ck_assert_got(&c, "");
	fx_end(&c);
}
END_TEST

/* The same failure pulled from the event loop, behind data. */
START_TEST(test_producer_error_default_closes_in_loop)
{
	static const char *const pieces[] = {"p1", NULL};
	struct fx_chan c;
	struct prod p = {.pieces = pieces, .fail_at = 2};

	start_with_defaults(&c);
	ck_assert_int_eq(async_chat_set_out_buffer_size(c.chat, 1), 0);
	ck_assert_int_eq(async_chat_push(c.chat, "data;", 5), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &p), 0);
	ck_assert_int_eq(async_chat_push(c.chat, "lost", 4), 0);
	fx_run(&c, fx_until_eof);
	ck_assert_got(&c, "data;p1");
	ck_assert_int_eq(c.f.frees, 1);
	ck_assert_int_eq(p.frees, 1);
	fx_end(&c);
}
END_TEST

/* Producers that call back into the channel. */

static void
hook_push(struct prod *p, struct evbuffer *out)
{
	char msg[32];

	(void)out;
	if (p->calls <= 2) {
		snprintf(msg, sizeof(msg), "(pushed-in-%d)", p->calls);
		ck_assert_int_eq(
		    async_chat_push(p->c->chat, msg, strlen(msg)), 0);
	}
}

/* Bytes pushed inside more() go behind the producer, in call order with
 * the application's own pushes. */
FX_TEST(test_producer_pushes, every_kind[_i])
{
	static const char *const pieces[] = {"[1]", "[2]", "[3]", NULL};
	const char *expect;
	struct prod p = {.pieces = pieces, .hook = hook_push};

	p.c = c;
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	/* Whether more() already ran decides the call order. */
	expect = p.calls == 0 ? "[1][2][3]end(pushed-in-1)(pushed-in-2)"
	                      : "[1][2][3](pushed-in-1)(pushed-in-2)end";
	ck_assert_int_eq(async_chat_push(c->chat, "end", 3), 0);
	fx_run_got(c, strlen(expect));
	ck_assert_got(c, expect);
	ck_assert_int_eq(p.calls, 4);
	ck_assert_int_eq(p.frees, 1);
	c->want_drains = 1;
	fx_run(c, fx_until_drains);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
}

static void
hook_close(struct prod *p, struct evbuffer *out)
{
	(void)out;
	async_chat_close(p->c->chat);
	ck_assert_int_eq(p->c->gone, 1);
	ck_assert_int_eq(p->c->f.frees, 1);
}

/* Run 0: the producer is pulled inside push_with_producer(); run 1: from
 * the loop, behind data. */
START_TEST(test_producer_closes_channel)
{
	static const char *const pieces[] = {"never", NULL};
	int behind_data = _i;
	struct fx_chan c;
	struct prod p = {.pieces = pieces, .hook = hook_close};
	struct prod q = {.pieces = pieces};
	struct ref r;

	fx_start(&c, FX_SOCKETPAIR);
	p.c = &c;
	if (behind_data) {
		ck_assert_int_eq(async_chat_set_out_buffer_size(c.chat, 1), 0);
		ck_assert_int_eq(async_chat_push(c.chat, "first", 5), 0);
	}
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &p), 0);
	if (!c.gone) {
		ck_assert_int_eq(push_ref(c.chat, &r, "queued"), 0);
		ck_assert_int_eq(
		    async_chat_push_with_producer(c.chat, &prod_ops, &q), 0);
		fx_run(&c, fx_until_gone);
		ck_assert_int_eq(r.runs, 1);
		ck_assert_int_eq(q.frees, 1);
		ck_assert_int_eq(q.calls, 0);
	}
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(c.f.frees, 1);
	fx_run(&c, fx_until_eof);
	ck_assert_got(&c, behind_data ? "first" : "");
	fx_end(&c);
	ck_assert_int_eq(p.frees, 1);
}
END_TEST

static void
hook_discard(struct prod *p, struct evbuffer *out)
{
	(void)out;
	if (p->calls == 1) {
		ck_assert_int_eq(async_chat_discard_buffers(p->c->chat), 0);
		ck_assert_uint_eq(async_chat_output_pending(p->c->chat), 0);
		ck_assert_int_eq(async_chat_push(p->c->chat, "post", 4), 0);
	}
}

START_TEST(test_producer_discards)
{
	static const char *const pieces[] = {NULL};
	struct fx_chan c;
	struct prod p = {.pieces = pieces, .hook = hook_discard};
	struct prod q = {.pieces = pieces};
	struct ref r = {0};

	fx_start(&c, FX_SOCKETPAIR);
	p.c = &c;
	ck_assert_int_eq(
	    async_chat_push_with_producer(c.chat, &prod_ops, &p), 0);
	if (p.calls == 0) {
		ck_assert_int_eq(push_ref(c.chat, &r, "dropped"), 0);
		ck_assert_int_eq(
		    async_chat_push_with_producer(c.chat, &prod_ops, &q), 0);
		ck_assert_int_eq(async_chat_push(c.chat, "dropped", 7), 0);
	}
	fx_run_got(&c, 4);
	ck_assert_got(&c, "post");
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	if (q.calls == 0 && r.data != NULL) {
		ck_assert_int_eq(r.runs, 1);
		ck_assert_int_eq(q.frees, 1);
	}
	ck_assert_int_eq(c.f.frees, 0);
	ck_assert_int_eq(async_chat_push(c.chat, "+again", 6), 0);
	fx_run_got(&c, 10);
	ck_assert_got(&c, "post+again");
	fx_end(&c);
	ck_assert_int_eq(p.frees, 1);
}
END_TEST

/*
 * Markers: close_when_done and shutdown_when_done
 */

FX_TEST(test_close_when_done, every_kind[_i])
{
	static const char *const pieces[] = {"<p>", NULL};
	static const char expect[] = "onetwo<p>three";
	struct prod p = {.pieces = pieces};
	struct prod never = {.pieces = pieces};
	struct ref r;
	struct stat st;
	struct evbuffer *buf = evbuffer_new();
	int fd = fx_temp_file("file", &st);

	ck_assert_int_eq(async_chat_push(c->chat, "one", 3), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "two", 3), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "three", 5), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(c->f.frees, 0);

	/* Nothing can be queued after the close. */
	EXPECT_ERRNO(async_chat_push(c->chat, "x", 1), EPIPE);
	ck_assert_int_eq(evbuffer_add(buf, "buf", 3), 0);
	EXPECT_ERRNO(async_chat_push_buffer(c->chat, buf), EPIPE);
	ck_assert_uint_eq(evbuffer_get_length(buf), 3);
	EXPECT_ERRNO(push_ref(c->chat, &r, "ref"), EPIPE);
	ck_assert_int_eq(r.runs, 0);
	EXPECT_ERRNO(async_chat_push_file(c->chat, fd, 0, -1), EPIPE);
	ck_assert(!fx_fd_is_file(fd, &st));
	EXPECT_ERRNO(
	    async_chat_push_with_producer(c->chat, &prod_ops, &never), EPIPE);
	EXPECT_ERRNO(
	    async_chat_push_simple_producer(c->chat, "s", 1, 0), EPIPE);
	EXPECT_ERRNO(async_chat_shutdown_when_done(c->chat), EPIPE);

	fx_run(c, fx_until_eof);
	ck_assert_got(c, expect);
	fx_run(c, fx_until_gone);
	ck_assert_int_eq(c->f.frees, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(never.calls + never.frees, 0);
	ck_assert_int_eq(r.runs, 0);
	/* handle_free ran once; nothing else runs later. */
	ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	ck_assert_int_eq(c->f.frees, 1);
	evbuffer_free(buf);
}

FX_TEST(test_close_when_done_idle, every_kind[_i])
{
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	/* Never inside the call: the channel is still usable here. */
	ck_assert_int_eq(c->f.frees, 0);
	ck_assert_int_eq(c->gone, 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(c->f.frees, 0);
	fx_run(c, fx_until_gone);
	ck_assert_int_eq(c->f.frees, 1);
	fx_run(c, fx_until_eof);
	ck_assert_got(c, "");
	ck_assert_int_eq(c->f.drains, 0);
}

FX_TEST(test_close_when_done_pair, FX_PAIR)
{
	ck_assert_int_eq(async_chat_push(c->chat, "bye", 3), 0);
	ck_assert_int_eq(
	    async_chat_push_simple_producer(c->chat, "-now", 4, 1), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(c->f.frees, 0);
	fx_run(c, fx_until_gone);
	ck_assert_int_eq(c->f.frees, 1);
	ck_assert_got(c, "bye-now");
}

/* Closing one end of a pair tells the other, as closing a socket would:
 * after the bytes already handed over, never the ones still queued. */
static const enum fx_kind pair_kinds[] = {FX_PAIR_SYNC, FX_PAIR};

FX_TEST(test_close_pair_gives_partner_eof, pair_kinds[_i])
{
	ck_assert_int_eq(async_chat_push(c->chat, "sent", 4), 0);
	fx_run_got(c, 4);
	ck_assert_int_eq(c->p.eof, 0);
	async_chat_close(c->chat);
	ck_assert_int_eq(c->gone, 1); /* handle_free ran */
	fx_run(c, fx_until_eof);
	ck_assert_int_eq(c->p.eof, 1);
	ck_assert(c->p.eof_what & BEV_EVENT_READING);
	ck_assert_got(c, "sent");
}

FX_TEST(test_shutdown_when_done_socket, FX_SOCKETPAIR)
{
	static const char *const pieces[] = {"<p>", NULL};
	struct prod p = {.pieces = pieces};

	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "request", 7), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(c->chat), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(c->chat), 0);
	EXPECT_ERRNO(async_chat_push(c->chat, "x", 1), EPIPE);
	EXPECT_ERRNO(
	    async_chat_push_simple_producer(c->chat, "x", 1, 0), EPIPE);

	/* The peer sees every byte, then EOF. */
	fx_run(c, fx_until_eof);
	ck_assert_got(c, "request<p>\n");
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(c->f.frees, 0);

	/* The channel still receives. */
	ck_assert_int_eq(
	    bufferevent_write(c->p.bev, "reply 1\nreply 2\n", 16), 0);
	c->want = 2;
	fx_run(c, fx_until_founds);
	ck_assert_int_eq(c->f.founds, 2);
	ck_assert(tu_frame_is(&c->f, 0, "reply 1"));
	ck_assert(tu_frame_is(&c->f, 1, "reply 2"));
	ck_assert_int_eq(c->gone, 0);
	ck_assert_int_eq(c->f.frees, 0);
	async_chat_close(c->chat);
	ck_assert_int_eq(c->f.frees, 1);
}

FX_TEST(test_shutdown_when_done_pair, FX_PAIR)
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "half", 4), 0);
	ck_assert_int_eq(
	    async_chat_push_simple_producer(c->chat, "-closed", 7, 2), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(c->chat), 0);
	EXPECT_ERRNO(async_chat_push(c->chat, "x", 1), EPIPE);
	fx_run(c, fx_until_eof);
	ck_assert_got(c, "half-closed");
	ck_assert(c->p.eof_what & BEV_EVENT_READING);
	ck_assert_int_eq(c->f.frees, 0);
	/* The partner can still talk to the channel. */
	ck_assert_int_eq(bufferevent_write(c->p.bev, "answer\n", 7), 0);
	c->want = 1;
	fx_run(c, fx_until_founds);
	ck_assert(tu_frame_is(&c->f, 0, "answer"));
	ck_assert_int_eq(c->p.eof, 1);
}

/*
 * discard_buffers
 */

FX_TEST(test_discard_buffers, socket_kinds[_i])
{
	static const char *const pieces[] = {"<p>", "<q>", NULL};
	struct prod p = {.pieces = pieces};
	struct ref r1, r2;
	struct stat st;
	int fd = fx_temp_file("file-data", &st);

	/* The loop has not run: everything below is still unsent. */
	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "unsent", 6), 0);
	ck_assert_int_eq(push_ref(c->chat, &r1, "ref-in-output"), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(push_ref(c->chat, &r2, "ref-behind"), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd, 0, -1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "behind", 6), 0);
	ck_assert_uint_ge(async_chat_output_pending(c->chat), 6 + 13 + 16);
	ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert(!fx_fd_is_file(fd, &st));
	ck_assert_int_eq(c->f.frees, 0);

	/* The channel keeps working, with its settings. */
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat), 1);
	ck_assert_int_eq(async_chat_push(c->chat, "after", 5), 0);
	fx_run_got(c, 5);
	ck_assert_got(c, "after");
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(p.calls, 0);
}

FX_TEST(test_discard_buffers_keeps_close, FX_SOCKETPAIR)
{
	static const char *const pieces[] = {"<p>", NULL};
	struct prod p = {.pieces = pieces};
	struct ref r;

	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "unsent", 6), 0);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(push_ref(c->chat, &r, "ref"), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(r.runs, 1);
	ck_assert_int_eq(c->f.frees, 0); /* not inside the call */
	/* The close is still queued. */
	EXPECT_ERRNO(async_chat_push(c->chat, "x", 1), EPIPE);
	fx_run(c, fx_until_gone);
	fx_run(c, fx_until_eof);
	ck_assert_got(c, "");
	ck_assert_int_eq(p.calls, 0);
}

/*
 * handle_drain and async_chat_output_pending()
 */

static void
drain_checks_pending(struct fx_chan *c, enum fx_cb which)
{
	if (which == FX_DRAIN)
		ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
}

static int
until_collected_5(struct fx_chan *c)
{
	return evbuffer_get_length(c->f.cur) >= 5;
}

FX_TEST(test_drain, every_kind[_i])
{
	static const char *const pieces[] = {"<1>", "<2>", "<3>", NULL};
	static const char *const none[] = {NULL};
	struct prod p = {.pieces = pieces};
	struct prod empty = {.pieces = none};

	c->hook = drain_checks_pending;

	/* Nothing pushed: input alone never drains. */
	ck_assert_int_eq(bufferevent_write(c->p.bev, "hello", 5), 0);
	fx_run(c, until_collected_5);
	ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	ck_assert(tu_cur_eq(&c->f, "hello", 5));
	ck_assert_int_eq(c->f.drains, 0);

	/* Plain data. */
	ck_assert_int_eq(async_chat_push(c->chat, "abc", 3), 0);
	ck_assert_int_eq(c->f.drains, 0);
	c->want = 3;
	c->want_drains = 1;
	fx_run(c, until_got_and_drains);
	ck_assert_int_eq(c->f.drains, 1);

	/* After a producer finishes. */
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	c->want = 12;
	c->want_drains = 2;
	fx_run(c, until_got_and_drains);
	ck_assert_int_eq(c->f.drains, 2);
	ck_assert_int_eq(p.frees, 1);

	/* After a producer that had nothing at all. */
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &empty), 0);
	c->want_drains = 3;
	fx_run(c, fx_until_drains);
	ck_assert_int_eq(empty.calls, 1);
	ck_assert_int_eq(empty.frees, 1);

	/* Nothing more happens by itself. */
	ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	ck_assert_int_eq(c->f.drains, 3);
	ck_assert_got(c, "abc<1><2><3>");
}

/* Over a bufferevent pair the partner takes the bytes at once. */
FX_TEST(test_drain_pair, pair_kinds[_i])
{
	static const char *const pieces[] = {"<1>", "<2>", NULL};
	struct prod p = {.pieces = pieces};

	ck_assert_int_eq(async_chat_push(c->chat, "abc", 3), 0);
	c->want = 3;
	c->want_drains = 1;
	fx_run(c, until_got_and_drains);
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	c->want = 9;
	c->want_drains = 2;
	fx_run(c, until_got_and_drains);
	ck_assert_int_eq(fx_wait(c, NULL, 20), -1);
	ck_assert_int_eq(c->f.drains, 2);
	ck_assert_got(c, "abc<1><2>");
}

FX_TEST(test_output_pending, socket_kinds[_i])
{
	static const char *const pieces[] = {"<12345>", NULL};
	char data[100];
	struct prod p = {.pieces = pieces};
	struct evbuffer *buf = evbuffer_new();

	memset(data, 'd', sizeof(data));
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 16), 0);
	/* The loop has not run, so nothing has been written yet. */
	ck_assert_int_eq(async_chat_push(c->chat, data, 100), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 100);
	/* The producer waits (the buffer is over out_buffer_size) and its
	 * bytes are not counted before it makes them; pushes behind it
	 * are. */
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	ck_assert_int_eq(p.calls, 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 100);
	ck_assert_int_eq(async_chat_push(c->chat, "xyz", 3), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 103);
	ck_assert_int_eq(evbuffer_add(buf, "12345", 5), 0);
	ck_assert_int_eq(async_chat_push_buffer(c->chat, buf), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 108);
	ck_assert_int_eq(
	    async_chat_push_simple_producer(c->chat, "sp", 2, 0), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 108);
	ck_assert_int_eq(async_chat_push(c->chat, "!", 1), 0);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 109);

	c->hook = drain_checks_pending;
	c->want_drains = 1;
	fx_run(c, fx_until_drains);
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	fx_run_got(c, 100 + 7 + 3 + 5 + 2 + 1);
	ck_assert_uint_eq(evbuffer_get_length(c->p.got), 118);
	ck_assert(memcmp(evbuffer_pullup(c->p.got, -1), data, 100) == 0);
	ck_assert(memcmp(evbuffer_pullup(c->p.got, -1) + 100,
	              "<12345>xyz12345sp!", 18) == 0);
	evbuffer_free(buf);
}

/* Flow control by the application: push while output_pending is below a
 * limit, resume on handle_drain. */

struct flow {
	unsigned char *data;
	size_t target, limit, chunk, pushed, max_pending;
};

static void
flow_pump(struct fx_chan *c, enum fx_cb which)
{
	struct flow *f = c->user;

	if (which != FX_DRAIN)
		return;
	while (f->pushed < f->target &&
	       async_chat_output_pending(c->chat) < f->limit) {
		size_t n = f->target - f->pushed < f->chunk
		               ? f->target - f->pushed
		               : f->chunk;
		size_t pending;

		ck_assert_int_eq(
		    async_chat_push(c->chat, f->data + f->pushed, n), 0);
		f->pushed += n;
		pending = async_chat_output_pending(c->chat);
		if (pending > f->max_pending)
			f->max_pending = pending;
	}
}

FX_TEST(test_flow_control_bounded, FX_SOCKETPAIR)
{
	struct flow f = {.target = 8 << 20, .limit = 65536, .chunk = 4096};
	uint64_t seed = 42;
	size_t i, stuck;
	int rounds = 0;

	f.data = malloc(f.target);
	ck_assert_ptr_nonnull(f.data);
	for (i = 0; i < f.target; i++)
		f.data[i] = (unsigned char)tu_rand(&seed);
	c->user = &f;
	c->hook = flow_pump;
	/* The peer does not read at all. */
	ck_assert_int_eq(bufferevent_disable(c->p.bev, EV_READ), 0);
	flow_pump(c, FX_DRAIN);
	/* Run until the socket buffers are full and pushing has stopped. */
	do {
		stuck = f.pushed;
		ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	} while (f.pushed != stuck && ++rounds < 200);
	ck_assert_uint_le(f.max_pending, f.limit + f.chunk);
	ck_assert_uint_le(
	    async_chat_output_pending(c->chat), f.limit + f.chunk);
	stuck = f.pushed;
	/* Only the socket buffers took more than the limit. */
	ck_assert_uint_lt(stuck, f.target);
	ck_assert_uint_gt(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(fx_wait(c, NULL, FX_SETTLE_MS), -1);
	ck_assert_uint_eq(f.pushed, stuck);

	/* The peer reads: everything goes out, in order. */
	ck_assert_int_eq(bufferevent_enable(c->p.bev, EV_READ), 0);
	fx_run_got(c, f.target);
	ck_assert(fx_got_is(c, f.data, f.target));
	ck_assert_uint_le(f.max_pending, f.limit + f.chunk);
	ck_assert_int_ge(c->f.drains, 1);
	free(f.data);
}

/*
 * Tunables
 */

FX_TEST(test_buffer_sizes, FX_SOCKETPAIR)
{
	static const char *const pieces[] = {"s", NULL};
	struct prod p = {.pieces = pieces};

	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat), 65536);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c->chat), 65536);
	ck_assert_uint_eq(ASYNC_CHAT_DEFAULT_BUFFER_SIZE, 65536);

	EXPECT_ERRNO(async_chat_set_out_buffer_size(c->chat, 0), EINVAL);
	EXPECT_ERRNO(async_chat_set_out_buffer_size(
	                 c->chat, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(c->chat, 0), EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(
	                 c->chat, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    EINVAL);
	/* Failures change nothing. */
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat), 65536);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c->chat), 65536);

	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat), 1);
	ck_assert_int_eq(
	    async_chat_set_out_buffer_size(c->chat, ASYNC_CHAT_BUFFER_SIZE_MAX),
	    0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat),
	    ASYNC_CHAT_BUFFER_SIZE_MAX);
	ck_assert_int_eq(async_chat_set_in_buffer_size(c->chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c->chat), 1);
	ck_assert_int_eq(
	    async_chat_set_in_buffer_size(c->chat, ASYNC_CHAT_BUFFER_SIZE_MAX),
	    0);
	ck_assert_uint_eq(
	    async_chat_get_in_buffer_size(c->chat), ASYNC_CHAT_BUFFER_SIZE_MAX);
	ck_assert_int_eq(async_chat_set_out_buffer_size(c->chat, 4096), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c->chat), 4096);

	/* The size hint given to producers is out_buffer_size. */
	ck_assert_int_eq(
	    async_chat_push_with_producer(c->chat, &prod_ops, &p), 0);
	fx_run_got(c, 1);
	ck_assert_uint_eq(p.last_hint, 4096);

	ck_assert_uint_eq(async_chat_get_out_buffer_size(NULL), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(NULL), 0);
}

/*
 * push_file
 */

FX_TEST(test_push_file_ranges, every_kind[_i])
{
	static const char content[] = "0123456789abcdefghij";
	struct stat st[4];
	int fd[4], i;

	for (i = 0; i < 4; i++)
		fd[i] = fx_temp_file(content, &st[i]);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd[0], 0, -1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd[1], 10, 3), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd[2], 15, -1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd[3], 5, 0), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	fx_run(c, fx_until_gone);
	ck_assert_int_eq(c->f.errors, 0);
	ck_assert_int_eq(c->f.closes, 0);
	/* A socket peer may still be reading when the channel has gone. */
	if (c->p.fd >= 0)
		fx_run(c, fx_until_eof);
	ck_assert_got(c, "0123456789abcdefghij|abc|fghij||");
	for (i = 0; i < 4; i++)
		ck_assert(!fx_fd_is_file(fd[i], &st[i]));
}

/* A range past the end of the file is refused at once (sendfile would
 * stall); a file cut short after the push fails the output in the loop
 * with ASYNC_CHAT_ERR_PRODUCER instead of passing for the peer's EOF. */
FX_TEST(test_push_file_bad_range, every_kind[_i])
{
	struct stat st;
	int fd = fx_temp_file("0123456789", &st), spare;

	EXPECT_ERRNO(async_chat_push_file(c->chat, fd, 1, INT64_MAX), EINVAL);
	ck_assert(!fx_fd_is_file(fd, &st)); /* owned, so closed */
	fd = fx_temp_file("0123456789", &st);
	EXPECT_ERRNO(async_chat_push_file(c->chat, fd, 11, -1), EINVAL);
	ck_assert(!fx_fd_is_file(fd, &st));

	fd = fx_temp_file("0123456789", &st);
	spare = dup(fd);
	ck_assert_int_ge(spare, 0);
	ck_assert_int_eq(async_chat_push_file(c->chat, fd, 0, 10), 0);
	ck_assert_int_eq(ftruncate(spare, 4), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "next", 4), 0);
	fx_run_got(c, 4);
	ck_assert_uint_ge(evbuffer_get_length(c->p.got), 4);
	ck_assert_int_eq(memcmp(evbuffer_pullup(c->p.got, 4), "0123", 4), 0);
	fx_run(c, fx_until_errors);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(c->f.last_error, ASYNC_CHAT_ERR_PRODUCER);
	ck_assert_int_eq(c->f.closes, 0);
	/* Never a byte the file did not have: a socket sends nothing more,
	 * other bufferevents go on with the queue. */
	fx_settle(c->base);
	ck_assert(evbuffer_get_length(c->p.got) == 4 ||
	    (evbuffer_get_length(c->p.got) == 8 &&
		memcmp(evbuffer_pullup(c->p.got, 8), "0123next", 8) == 0));
	close(spare);
}

/*
 * Bad arguments, and calls on a closed channel
 */

FX_TEST(test_bad_arguments, FX_SOCKETPAIR)
{
	static const struct async_chat_producer_ops no_more = {NULL, prod_free};
	struct prod p = {0};
	struct ref r = {0};
	struct evbuffer *buf = evbuffer_new();
	struct stat st;
	int fd;

	ck_assert_int_eq(evbuffer_add(buf, "keep", 4), 0);

	/* A NULL channel. */
	EXPECT_ERRNO(async_chat_push(NULL, "x", 1), EINVAL);
	EXPECT_ERRNO(async_chat_push_buffer(NULL, buf), EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 4);
	EXPECT_ERRNO(
	    async_chat_push_reference(NULL, "x", 1, ref_cleanup, &r), EINVAL);
	ck_assert_int_eq(r.runs, 0);
	fd = fx_temp_file("x", &st);
	EXPECT_ERRNO(async_chat_push_file(NULL, fd, 0, -1), EINVAL);
	ck_assert(fx_fd_is_closed(fd));
	EXPECT_ERRNO(
	    async_chat_push_with_producer(NULL, &prod_ops, &p), EINVAL);
	EXPECT_ERRNO(async_chat_push_simple_producer(NULL, "x", 1, 0), EINVAL);
	EXPECT_ERRNO(async_chat_close_when_done(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_shutdown_when_done(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_discard_buffers(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_out_buffer_size(NULL, 100), EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(NULL, 100), EINVAL);
	ck_assert_uint_eq(async_chat_output_pending(NULL), 0);
	async_chat_close(NULL);

	/* Bad arguments on a live channel. */
	EXPECT_ERRNO(async_chat_push(c->chat, NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_push_buffer(c->chat, NULL), EINVAL);
	EXPECT_ERRNO(
	    async_chat_push_reference(c->chat, NULL, 1, ref_cleanup, &r),
	    EINVAL);
	ck_assert_int_eq(r.runs, 0);
	EXPECT_ERRNO(
	    async_chat_push_simple_producer(c->chat, NULL, 1, 0), EINVAL);
	EXPECT_ERRNO(async_chat_push_simple_producer(
	                 c->chat, "x", 1, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(async_chat_push_with_producer(c->chat, NULL, &p), EINVAL);
	EXPECT_ERRNO(
	    async_chat_push_with_producer(c->chat, &no_more, &p), EINVAL);
	ck_assert_int_eq(p.frees, 0);
	EXPECT_ERRNO(async_chat_push_file(c->chat, -1, 0, -1), EBADF);
	fd = fx_temp_file("x", &st);
	EXPECT_ERRNO(async_chat_push_file(c->chat, fd, -1, -1), EINVAL);
	ck_assert(fx_fd_is_closed(fd));
	fd = fx_temp_file("x", &st);
	EXPECT_ERRNO(async_chat_push_file(c->chat, fd, 0, -2), EINVAL);
	ck_assert(fx_fd_is_closed(fd));

	/* None of it queued anything. */
	ck_assert_uint_eq(async_chat_output_pending(c->chat), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "ok", 2), 0);
	fx_run_got(c, 2);
	ck_assert_got(c, "ok");
	ck_assert_int_eq(c->f.errors, 0);
	ck_assert_int_eq(p.calls + p.frees, 0);
	evbuffer_free(buf);
}

/* Inside found_terminator the channel closes itself and then tries every
 * call on it. */
static void
close_then_call(struct fx_chan *c, enum fx_cb which)
{
	async_chat_close(c->chat);
	ck_assert_int_eq(c->f.frees, 1);
	fx_check_closed(c);
	c->done = 1;
}

static int
until_done(struct fx_chan *c)
{
	return c->done;
}

FX_TEST(test_calls_after_close_in_callback, every_kind[_i])
{
	fx_once(c, FX_FOUND, 1, close_then_call);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "unsent", 6), 0);
	ck_assert_int_eq(bufferevent_write(c->p.bev, "go\nmore\n", 8), 0);
	fx_run(c, until_done);
	ck_assert_int_eq(c->f.founds, 1); /* nothing after the close */
	fx_run(c, fx_until_eof);
	ck_assert_int_eq(c->f.founds, 1);
	ck_assert_int_eq(c->f.frees, 1);
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void
fifo_tests(TCase *tc)
{
	/* Run i over every_kind[i]. */
	tcase_add_loop_test(tc, test_fifo_order, 0, N(every_kind));
}

static void
push_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_large_push, 0, N(socket_kinds));
	tcase_add_test(tc, test_push_empty);
}

static void
push_buffer_tests(TCase *tc)
{
	tcase_add_test(tc, test_push_buffer);
	tcase_add_test(tc, test_push_buffer_frozen);
}

static void
push_reference_tests(TCase *tc)
{
	tcase_add_test(tc, test_push_reference);
}

static void
producer_tests(TCase *tc)
{
	tcase_add_loop_test(
	    tc, test_simple_producer_pieces, 0, N(simple_cases));
	tcase_add_test(tc, test_producer_paced_by_out_buffer_size);
	tcase_add_test(tc, test_producer_error_handled);
	tcase_add_test(tc, test_producer_error_default_closes);
	tcase_add_test(tc, test_producer_error_default_closes_in_loop);
	tcase_add_loop_test(tc, test_producer_pushes, 0, N(every_kind));
	tcase_add_loop_test(tc, test_producer_closes_channel, 0, 2);
	tcase_add_test(tc, test_producer_discards);
}

static void
marker_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_close_when_done, 0, N(every_kind));
	tcase_add_loop_test(tc, test_close_when_done_idle, 0, N(every_kind));
	tcase_add_test(tc, test_close_when_done_pair);
	tcase_add_loop_test(
	    tc, test_close_pair_gives_partner_eof, 0, N(pair_kinds));
	tcase_add_test(tc, test_shutdown_when_done_socket);
	tcase_add_test(tc, test_shutdown_when_done_pair);
}

static void
discard_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_discard_buffers, 0, N(socket_kinds));
	tcase_add_test(tc, test_discard_buffers_keeps_close);
}

static void
drain_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_drain, 0, N(every_kind));
	tcase_add_loop_test(tc, test_drain_pair, 0, N(pair_kinds));
	tcase_add_loop_test(tc, test_output_pending, 0, N(socket_kinds));
	tcase_add_test(tc, test_flow_control_bounded);
}

static void
tunable_tests(TCase *tc)
{
	tcase_add_test(tc, test_buffer_sizes);
}

static void
push_file_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_push_file_ranges, 0, N(every_kind));
	tcase_add_loop_test(tc, test_push_file_bad_range, 0, N(every_kind));
}

static void
argument_tests(TCase *tc)
{
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_loop_test(
	    tc, test_calls_after_close_in_callback, 0, N(every_kind));
}

static const struct fx_tcase tcases[] = {
    {"fifo", 60, fifo_tests},
    {"push", 60, push_tests},
    {"push_buffer", 60, push_buffer_tests},
    {"push_reference", 60, push_reference_tests},
    {"producers", 60, producer_tests},
    {"markers", 60, marker_tests},
    {"discard", 60, discard_tests},
    {"drain", 60, drain_tests},
    {"tunables", 60, tunable_tests},
    {"push_file", 60, push_file_tests},
    {"arguments", 60, argument_tests},
    {NULL, 0, NULL},
};

const struct fx_suite fx_suite = {"output", tcases, NULL};
