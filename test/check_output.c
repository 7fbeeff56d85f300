/*
 * check_output.c - the output side of a channel: the FIFO of pushes,
 * producers and close/shutdown markers, producer pacing and failures,
 * handle_drain and async_chat_output_pending(), discard_buffers(), the
 * buffer size tunables and the argument checks of every output function.
 *
 * Channels run in-process over socket pairs (the peer is a plain socket
 * bufferevent) and over bufferevent pairs (the partner is the peer).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "testutil.h"

#define WAIT_MS 10000 /* bound on every wait; tests normally take far less */

/*
 * The application side of a channel: what its handlers saw, and hooks a
 * test can hang on them.
 */
struct app {
	struct tu_frames f;
	struct async_chat *chat; /* NULL once handle_free has run */
	int close_on_error;
	int want_drains;
	void (*on_drain)(struct app *a);
	void (*on_found)(struct app *a);
	void *user;
};

static void
app_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct app *a = arg;

	ck_assert_ptr_eq(chat, a->chat);
	tu_frames_collect(&a->f, data, len);
}

static void
app_found(struct async_chat *chat, void *arg)
{
	struct app *a = arg;

	ck_assert_ptr_eq(chat, a->chat);
	tu_frames_found(&a->f);
	if (a->on_found != NULL)
		a->on_found(a);
}

static void
app_close(struct async_chat *chat, void *arg)
{
	struct app *a = arg;

	(void)chat;
	a->f.closes++;
}

static void
app_error(struct async_chat *chat, int err, void *arg)
{
	struct app *a = arg;

	a->f.errors++;
	a->f.last_error = err;
	if (a->close_on_error)
		async_chat_close(chat);
}

static void
app_drain(struct async_chat *chat, void *arg)
{
	struct app *a = arg;

	ck_assert_ptr_eq(chat, a->chat);
	a->f.drains++;
	if (a->on_drain != NULL)
		a->on_drain(a);
}

static void
app_free(struct async_chat *chat, void *arg)
{
	struct app *a = arg;

	ck_assert_ptr_eq(chat, a->chat);
	a->f.frees++;
	a->chat = NULL;
}

static const struct async_chat_handlers handlers = {
	.collect_incoming_data = app_collect,
	.found_terminator = app_found,
	.handle_close = app_close,
	.handle_error = app_error,
	.handle_drain = app_drain,
	.handle_free = app_free,
};

/* The defaults of handle_close and handle_error: close the channel. */
static const struct async_chat_handlers default_handlers = {
	.collect_incoming_data = app_collect,
	.found_terminator = app_found,
	.handle_drain = app_drain,
	.handle_free = app_free,
};

/*
 * The peer: a plain bufferevent on the other socket or the partner of a
 * bufferevent pair.  It keeps what it reads in got, unless on_read takes
 * the bytes itself.
 */
struct peer {
	struct bufferevent *bev;
	struct evbuffer *got;
	size_t want;
	int eof, eof_what, errors;
	void (*on_read)(struct peer *p, struct evbuffer *in);
	void *user;
};

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (p->on_read != NULL)
		p->on_read(p, in);
	else
		ck_assert_int_eq(evbuffer_add_buffer(p->got, in), 0);
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct peer *p = arg;

	/* A pair delivers the last bytes and the EOF in one go. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		peer_read(bev, arg);
	if (what & BEV_EVENT_EOF) {
		p->eof++;
		p->eof_what = what;
	} else if (what & BEV_EVENT_ERROR) {
		p->errors++;
	}
}

/* One test's world: a base, a channel and its peer. */
struct fix {
	struct event_base *base;
	struct app app;
	struct peer peer;
};

static void
fix_init(struct fix *x)
{
	memset(x, 0, sizeof(*x));
	x->base = event_base_new();
	ck_assert_ptr_nonnull(x->base);
	tu_frames_init(&x->app.f);
	x->peer.got = evbuffer_new();
	ck_assert_ptr_nonnull(x->peer.got);
}

static void
peer_attach(struct fix *x, struct bufferevent *bev)
{
	x->peer.bev = bev;
	bufferevent_setcb(bev, peer_read, NULL, peer_event, &x->peer);
	ck_assert_int_eq(bufferevent_enable(bev, EV_READ | EV_WRITE), 0);
}

static void
fix_socket(struct fix *x, const struct async_chat_handlers *h)
{
	evutil_socket_t sv[2];
	struct bufferevent *bev;

	fix_init(x);
	tu_socketpair(sv);
	x->app.chat = async_chat_new(x->base, sv[0], h, &x->app);
	ck_assert_ptr_nonnull(x->app.chat);
	bev = bufferevent_socket_new(x->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(bev);
	peer_attach(x, bev);
}

/* options: BEV_OPT_DEFER_CALLBACKS or 0 (callbacks run synchronously). */
static void
fix_pair(struct fix *x, const struct async_chat_handlers *h, int options)
{
	struct bufferevent *pair[2];

	fix_init(x);
	ck_assert_int_eq(bufferevent_pair_new(x->base,
			     BEV_OPT_CLOSE_ON_FREE | options, pair),
	    0);
	x->app.chat = async_chat_new_bufferevent(pair[0], h, &x->app);
	ck_assert_ptr_nonnull(x->app.chat);
	peer_attach(x, pair[1]);
}

static void
fix_done(struct fix *x)
{
	if (x->app.chat != NULL)
		async_chat_close(x->app.chat);
	ck_assert_ptr_null(x->app.chat);
	/* Closing one end of a pair gives the other its EOF; with deferred
	 * callbacks that is queued in the base, which libevent drops (with
	 * the bufferevent's reference) if the base is freed before it runs. */
	event_base_loop(x->base, EVLOOP_NONBLOCK);
	if (x->peer.bev != NULL)
		bufferevent_free(x->peer.bev);
	evbuffer_free(x->peer.got);
	tu_frames_clear(&x->app.f);
	event_base_free(x->base);
}

static int
cond_peer_eof(void *arg)
{
	return ((struct fix *)arg)->peer.eof > 0;
}

static int
cond_peer_want(void *arg)
{
	struct fix *x = arg;

	return evbuffer_get_length(x->peer.got) >= x->peer.want;
}

static int
cond_freed(void *arg)
{
	return ((struct fix *)arg)->app.f.frees > 0;
}

static int
cond_drains(void *arg)
{
	struct fix *x = arg;

	return x->app.f.drains >= x->app.want_drains;
}

static void
run_until_peer_has(struct fix *x, size_t n)
{
	x->peer.want = n;
	ck_assert_int_eq(tu_run_until(x->base, cond_peer_want, x, WAIT_MS), 0);
}

static int
cond_app_error(void *arg)
{
	const struct fix *x = arg;

	return x->app.f.errors > 0;
}

/* 1 if the peer received exactly the len bytes at s. */
static int
peer_got_is(const struct fix *x, const void *s, size_t len)
{
	size_t have = evbuffer_get_length(x->peer.got);

	if (have != len)
		return 0;
	return len == 0 ||
	    memcmp(evbuffer_pullup(x->peer.got, (ev_ssize_t)len), s, len) ==
	    0;
}

#define ck_assert_peer_got(x, s)                                               \
	ck_assert_msg(peer_got_is((x), (s), strlen(s)),                        \
	    "peer got \"%.*s\", want \"%s\"",                                  \
	    (int)evbuffer_get_length((x)->peer.got),                           \
	    (const char *)evbuffer_pullup((x)->peer.got, -1), (s))

/*
 * Push helpers: a counting producer, a counting reference cleanup and
 * temporary files.
 */

struct prod {
	const char *const *pieces; /* NULL-terminated; a NULL entry ends it */
	int calls, frees;
	int fail_at;               /* the call (1-based) that returns -1 */
	size_t last_hint;
	struct app *app;
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

static const struct async_chat_producer_ops prod_ops = { prod_more,
	prod_free };

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

/* An unlinked temporary file holding s; *st identifies it later. */
static int
temp_file(const char *s, struct stat *st)
{
	char path[] = "/tmp/check_output.XXXXXX";
	size_t len = strlen(s);
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(write(fd, s, len), (ssize_t)len);
	ck_assert_int_eq(fstat(fd, st), 0);
	return fd;
}

/* 1 if fd is still the open file *st describes.  A number reused for
 * another file does not count. */
static int
fd_is_open_file(int fd, const struct stat *st)
{
	struct stat now;

	return fstat(fd, &now) == 0 && now.st_dev == st->st_dev &&
	    now.st_ino == st->st_ino;
}

static int
fd_is_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}

/*
 * FIFO order
 */

/* Every kind of push, with data pushed while producers wait ahead of it:
 * the peer must see exactly the call order. */
static void
fifo_scenario(struct fix *x, int peer_sees_close)
{
	static const char *const p_pieces[] = { "<P1>", "<P2>", "<P3>", NULL };
	static const char simple[] = "simple-producer-data!";
	static const char expect[] = "A:B:C:23456<P1><P2><P3>D:"
				     "simple-producer-data!E3456789F"
				     "01234567890123456789";
	struct async_chat *chat = x->app.chat;
	struct prod p = { .pieces = p_pieces };
	struct ref r1, r2;
	struct stat st1, st2, st3;
	int fd1 = temp_file("0123456789", &st1);
	int fd2 = temp_file("0123456789", &st2);
	int fd3 = temp_file("01234567890123456789", &st3);
	struct evbuffer *buf = evbuffer_new();

	/* A tiny out_buffer_size keeps producers waiting in the queue, so
	 * that the later pushes really queue behind them. */
	ck_assert_int_eq(async_chat_set_out_buffer_size(chat, 4), 0);
	ck_assert_int_eq(async_chat_push(chat, "A:", 2), 0);
	ck_assert_int_eq(evbuffer_add(buf, "B:", 2), 0);
	ck_assert_int_eq(async_chat_push_buffer(chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0); /* moved out */
	ck_assert_int_eq(push_ref(chat, &r1, "C:"), 0);
	ck_assert_int_eq(async_chat_push_file(chat, fd1, 2, 5), 0);
	ck_assert_int_eq(async_chat_push_with_producer(chat, &prod_ops, &p),
	    0);
	ck_assert_int_eq(async_chat_push(chat, "D:", 2), 0);
	ck_assert_int_eq(async_chat_push_simple_producer(chat, simple,
			     strlen(simple), 8),
	    0);
	ck_assert_int_eq(async_chat_push(chat, "E", 1), 0);
	ck_assert_int_eq(async_chat_push_file(chat, fd2, 3, -1), 0);
	ck_assert_int_eq(push_ref(chat, &r2, "F"), 0);
	ck_assert_int_eq(async_chat_push_file(chat, fd3, 0, -1), 0);
	ck_assert_int_eq(async_chat_close_when_done(chat), 0);
	/* Nothing has been sent or dropped yet (a pair hands bytes to its
	 * partner at once, but the partner has not read them). */
	ck_assert_int_eq(r1.runs, 0);
	ck_assert_int_eq(r2.runs, 0);
	if (peer_sees_close)
		ck_assert_int_eq(p.frees, 0);

	/* A bufferevent pair tells its partner nothing when one end is
	 * freed, so only a socket peer sees the close as EOF. */
	ck_assert_int_eq(tu_run_until(x->base, cond_freed, x, WAIT_MS), 0);
	if (peer_sees_close)
		ck_assert_int_eq(tu_run_until(x->base, cond_peer_eof, x,
				     WAIT_MS),
		    0);
	ck_assert_peer_got(x, expect);
	ck_assert_int_eq(x->app.f.frees, 1);
	ck_assert_int_eq(x->app.f.errors, 0);
	ck_assert_int_eq(p.calls, 4); /* three pieces and the empty one */
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	/* The channel closed every file it was given. */
	ck_assert(!fd_is_open_file(fd1, &st1));
	ck_assert(!fd_is_open_file(fd2, &st2));
	ck_assert(!fd_is_open_file(fd3, &st3));
	evbuffer_free(buf);
}

START_TEST(test_fifo_order_socket)
{
	struct fix x;

	fix_socket(&x, &handlers);
	fifo_scenario(&x, 1);
	fix_done(&x);
}
END_TEST

START_TEST(test_fifo_order_pair)
{
	struct fix x;

	fix_pair(&x, &handlers, BEV_OPT_DEFER_CALLBACKS);
	fifo_scenario(&x, 0);
	fix_done(&x);
}
END_TEST

START_TEST(test_fifo_order_pair_sync)
{
	struct fix x;

	fix_pair(&x, &handlers, 0);
	fifo_scenario(&x, 0);
	fix_done(&x);
}
END_TEST

/* Records the size of every addition to an evbuffer. */
struct adds {
	size_t n[64];
	int count;
};

static void
count_adds(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct adds *a = arg;

	(void)buf;
	if (info->n_added > 0 && a->count < 64)
		a->n[a->count++] = info->n_added;
}

/* A simple producer serves buffer_size bytes per piece, 512 for 0. */
static void
simple_pieces(size_t buffer_size, size_t len, size_t piece)
{
	struct fix x;
	struct adds adds = { { 0 }, 0 };
	struct evbuffer *out;
	struct evbuffer_cb_entry *cbe;
	unsigned char *data = malloc(len);
	uint64_t seed = 0x5eed + len;
	size_t i;
	int k;

	ck_assert_ptr_nonnull(data);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	fix_socket(&x, &handlers);
	out = bufferevent_get_output(async_chat_get_bufferevent(x.app.chat));
	cbe = evbuffer_add_cb(out, count_adds, &adds);
	ck_assert_ptr_nonnull(cbe);
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, data,
			     len, buffer_size),
	    0);
	/* The producer holds its own copy. */
	memset(data, 0, len);
	run_until_peer_has(&x, len);
	ck_assert_int_eq(evbuffer_remove_cb_entry(out, cbe), 0);
	seed = 0x5eed + len;
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	ck_assert(peer_got_is(&x, data, len));
	ck_assert_int_eq(adds.count, (int)((len + piece - 1) / piece));
	for (k = 0; k < adds.count; k++)
		ck_assert_uint_eq(adds.n[k],
		    k + 1 < adds.count ? piece : len - k * piece);
	free(data);
	fix_done(&x);
}

START_TEST(test_simple_producer_pieces)
{
	simple_pieces(8, 21, 8);
	simple_pieces(0, 1300, 512);
	simple_pieces(100, 100, 100);
}
END_TEST

/*
 * Producers are pulled only while the output buffer is below
 * out_buffer_size.
 */

#define BIG_TOTAL ((uint64_t)64 << 20)
#define BIG_OUT 32768

static unsigned char
gen_byte(uint64_t i)
{
	return (unsigned char)((((uint32_t)i * 2654435761u) >> 24) ^
	    (uint32_t)(i >> 16));
}

struct gen {
	struct fix *x;
	uint64_t total, produced, received;
	int calls, frees;
	size_t max_out; /* most the output buffer held after a piece */
};

static int
gen_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct gen *g = ctx;
	struct async_chat *chat = g->x->app.chat;
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
	n = g->total - g->produced < size_hint ?
	    (size_t)(g->total - g->produced) :
	    size_hint;
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

static const struct async_chat_producer_ops gen_ops = { gen_more, gen_free };

/* The peer checks the bytes as they come instead of keeping 64 MiB. */
static void
gen_peer_read(struct peer *p, struct evbuffer *in)
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
cond_gen_done(void *arg)
{
	struct gen *g = arg;

	return g->received >= g->total && g->frees > 0;
}

START_TEST(test_producer_paced_by_out_buffer_size)
{
	struct fix x;
	struct gen g = { .x = &x, .total = BIG_TOTAL };

	fix_socket(&x, &handlers);
	x.peer.on_read = gen_peer_read;
	x.peer.user = &g;
	/* A slow reader: small reads, one per event. */
	bufferevent_set_max_single_read(x.peer.bev, 16384);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, BIG_OUT),
	    0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &gen_ops,
			     &g),
	    0);
	ck_assert_int_eq(tu_run_until(x.base, cond_gen_done, &g, 60000), 0);
	ck_assert_uint_eq(g.produced, BIG_TOTAL);
	ck_assert_uint_eq(g.received, BIG_TOTAL);
	ck_assert_int_eq(g.frees, 1);
	/* One call per piece and one that finds it exhausted. */
	ck_assert_int_eq(g.calls, (int)(BIG_TOTAL / BIG_OUT) + 1);
	ck_assert_uint_le(g.max_out, 2 * BIG_OUT);
	ck_assert_uint_gt(g.max_out, 0);
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_drains, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.drains, 1);
	fix_done(&x);
}
END_TEST

/*
 * Producer failures
 */

START_TEST(test_producer_error_handled)
{
	static const char *const pieces[] = { "p1", "p2", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces, .fail_at = 2 };
	struct prod q = { .pieces = pieces };

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_push(x.app.chat, "before;", 7), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(async_chat_push(x.app.chat, ";after;", 7), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &q),
	    0);
	run_until_peer_has(&x, strlen("before;p1;after;p1p2"));
	ck_assert_peer_got(&x, "before;p1;after;p1p2");
	ck_assert_int_eq(x.app.f.errors, 1);
	ck_assert_int_eq(x.app.f.last_error, ASYNC_CHAT_ERR_PRODUCER);
	ck_assert_int_eq(p.calls, 2);
	ck_assert_int_eq(p.frees, 1);
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_drains, &x, WAIT_MS), 0);
	ck_assert_int_eq(q.frees, 1);
	ck_assert_int_eq(x.app.f.frees, 0); /* the handler did not close */
	ck_assert_int_eq(async_chat_push(x.app.chat, "more", 4), 0);
	run_until_peer_has(&x, strlen("before;p1;after;p1p2more"));
	ck_assert_peer_got(&x, "before;p1;after;p1p2more");
	fix_done(&x);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(q.frees, 1);
}
END_TEST

/* With the default handle_error the channel closes; the application may
 * still use the channel after push_with_producer() returns, because it
 * has not closed it itself. */
START_TEST(test_producer_error_default_closes)
{
	struct fix x;
	struct prod p = { .fail_at = 1 };
	struct prod q = { 0 };

	fix_socket(&x, &default_handlers);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(x.app.f.frees, 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "lost", 4), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &q),
	    0);
	ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(q.calls, 0);
	ck_assert_int_eq(q.frees, 1); /* freed by the close */
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "");
	fix_done(&x);
}
END_TEST

/* The same failure pulled from the event loop, behind data. */
START_TEST(test_producer_error_default_closes_in_loop)
{
	static const char *const pieces[] = { "p1", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces, .fail_at = 2 };

	fix_socket(&x, &default_handlers);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "data;", 5), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "lost", 4), 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "data;p1");
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(p.frees, 1);
	fix_done(&x);
}
END_TEST

/*
 * Producers that call back into the channel
 */

static void
hook_push(struct prod *p, struct evbuffer *out)
{
	char msg[32];

	(void)out;
	if (p->calls <= 2) {
		snprintf(msg, sizeof(msg), "(pushed-in-%d)", p->calls);
		ck_assert_int_eq(async_chat_push(p->app->chat, msg,
				     strlen(msg)),
		    0);
	}
}

/* Bytes pushed inside more() go behind the producer, in call order with
 * the application's own pushes. */
START_TEST(test_producer_pushes)
{
	static const char *const pieces[] = { "[1]", "[2]", "[3]", NULL };
	const char *expect;
	struct fix x;
	struct prod p = { .pieces = pieces, .hook = hook_push };

	fix_socket(&x, &handlers);
	p.app = &x.app;
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	/* Whether more() already ran decides the call order. */
	expect = p.calls == 0 ? "[1][2][3]end(pushed-in-1)(pushed-in-2)" :
				"[1][2][3](pushed-in-1)(pushed-in-2)end";
	ck_assert_int_eq(async_chat_push(x.app.chat, "end", 3), 0);
	run_until_peer_has(&x, strlen(expect));
	ck_assert_peer_got(&x, expect);
	ck_assert_int_eq(p.calls, 4);
	ck_assert_int_eq(p.frees, 1);
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_drains, &x, WAIT_MS), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	fix_done(&x);
}
END_TEST

static void
hook_close(struct prod *p, struct evbuffer *out)
{
	(void)out;
	async_chat_close(p->app->chat);
	ck_assert_ptr_null(p->app->chat);
	ck_assert_int_eq(p->app->f.frees, 1);
}

static void
producer_closes(int behind_data)
{
	static const char *const pieces[] = { "never", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces, .hook = hook_close };
	struct prod q = { .pieces = pieces };
	struct ref r;

	fix_socket(&x, &handlers);
	p.app = &x.app;
	if (behind_data) {
		ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 1),
		    0);
		ck_assert_int_eq(async_chat_push(x.app.chat, "first", 5), 0);
	}
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	if (x.app.chat != NULL) {
		ck_assert_int_eq(push_ref(x.app.chat, &r, "queued"), 0);
		ck_assert_int_eq(async_chat_push_with_producer(x.app.chat,
				     &prod_ops, &q),
		    0);
		ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS),
		    0);
		ck_assert_int_eq(r.runs, 1);
		ck_assert_int_eq(q.frees, 1);
		ck_assert_int_eq(q.calls, 0);
	}
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, behind_data ? "first" : "");
	fix_done(&x);
	ck_assert_int_eq(p.frees, 1);
}

START_TEST(test_producer_closes_channel)
{
	producer_closes(0);
	producer_closes(1);
}
END_TEST

static void
hook_discard(struct prod *p, struct evbuffer *out)
{
	(void)out;
	if (p->calls == 1) {
		ck_assert_int_eq(async_chat_discard_buffers(p->app->chat), 0);
		ck_assert_uint_eq(async_chat_output_pending(p->app->chat), 0);
		ck_assert_int_eq(async_chat_push(p->app->chat, "post", 4), 0);
	}
}

START_TEST(test_producer_discards)
{
	static const char *const pieces[] = { NULL };
	struct fix x;
	struct prod p = { .pieces = pieces, .hook = hook_discard };
	struct prod q = { .pieces = pieces };
	struct ref r;

	fix_socket(&x, &handlers);
	p.app = &x.app;
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	if (p.calls == 0) {
		ck_assert_int_eq(push_ref(x.app.chat, &r, "dropped"), 0);
		ck_assert_int_eq(async_chat_push_with_producer(x.app.chat,
				     &prod_ops, &q),
		    0);
		ck_assert_int_eq(async_chat_push(x.app.chat, "dropped", 7), 0);
	}
	run_until_peer_has(&x, 4);
	ck_assert_peer_got(&x, "post");
	ck_assert_int_eq(p.calls, 1);
	ck_assert_int_eq(p.frees, 1);
	if (q.calls == 0 && r.data != NULL) {
		ck_assert_int_eq(r.runs, 1);
		ck_assert_int_eq(q.frees, 1);
	}
	ck_assert_int_eq(x.app.f.frees, 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "+again", 6), 0);
	run_until_peer_has(&x, 10);
	ck_assert_peer_got(&x, "post+again");
	fix_done(&x);
	ck_assert_int_eq(p.frees, 1);
}
END_TEST

/*
 * close_when_done
 */

START_TEST(test_close_when_done)
{
	static const char *const pieces[] = { "<p>", NULL };
	static const char expect[] = "onetwo<p>three";
	struct fix x;
	struct prod p = { .pieces = pieces };
	struct prod never = { .pieces = pieces };
	struct ref r;
	struct stat st;
	struct evbuffer *buf = evbuffer_new();
	int fd = temp_file("file", &st);

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_push(x.app.chat, "one", 3), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "two", 3), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "three", 5), 0);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	ck_assert_int_eq(x.app.f.frees, 0);

	/* Nothing can be queued after the close. */
	errno = 0;
	ck_assert_int_eq(async_chat_push(x.app.chat, "x", 1), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_int_eq(evbuffer_add(buf, "buf", 3), 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(x.app.chat, buf), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_uint_eq(evbuffer_get_length(buf), 3);
	errno = 0;
	ck_assert_int_eq(push_ref(x.app.chat, &r, "ref"), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_int_eq(r.runs, 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 0, -1), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert(!fd_is_open_file(fd, &st));
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &never),
	    -1);
	ck_assert_int_eq(errno, EPIPE);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "s", 1,
			     0),
	    -1);
	ck_assert_int_eq(errno, EPIPE);
	errno = 0;
	ck_assert_int_eq(async_chat_shutdown_when_done(x.app.chat), -1);
	ck_assert_int_eq(errno, EPIPE);

	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, expect);
	ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(never.calls + never.frees, 0);
	ck_assert_int_eq(r.runs, 0);
	/* handle_free ran once; nothing else runs later. */
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	ck_assert_int_eq(x.app.f.frees, 1);
	evbuffer_free(buf);
	fix_done(&x);
}
END_TEST

START_TEST(test_close_when_done_idle)
{
	struct fix x;

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	/* Never inside the call: the channel is still usable here. */
	ck_assert_int_eq(x.app.f.frees, 0);
	ck_assert_ptr_nonnull(x.app.chat);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	ck_assert_int_eq(x.app.f.frees, 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "");
	ck_assert_int_eq(x.app.f.drains, 0);
	fix_done(&x);
}
END_TEST

START_TEST(test_close_when_done_pair)
{
	struct fix x;

	fix_pair(&x, &handlers, BEV_OPT_DEFER_CALLBACKS);
	ck_assert_int_eq(async_chat_push(x.app.chat, "bye", 3), 0);
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "-now",
			     4, 1),
	    0);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	ck_assert_int_eq(x.app.f.frees, 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_peer_got(&x, "bye-now");
	fix_done(&x);
}
END_TEST

/*
 * shutdown_when_done: a half-close
 */

static int
cond_founds_2(void *arg)
{
	return ((struct fix *)arg)->app.f.founds >= 2;
}

START_TEST(test_shutdown_when_done_socket)
{
	static const char *const pieces[] = { "<p>", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces };

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_set_terminator(x.app.chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "request", 7), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(x.app.chat), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(x.app.chat), 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push(x.app.chat, "x", 1), -1);
	ck_assert_int_eq(errno, EPIPE);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "x", 1,
			     0),
	    -1);
	ck_assert_int_eq(errno, EPIPE);

	/* The peer sees every byte, then EOF. */
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "request<p>\n");
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(x.app.f.frees, 0);

	/* The channel still receives. */
	ck_assert_int_eq(bufferevent_write(x.peer.bev, "reply 1\nreply 2\n",
			     16),
	    0);
	ck_assert_int_eq(tu_run_until(x.base, cond_founds_2, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.founds, 2);
	ck_assert(tu_frame_is(&x.app.f, 0, "reply 1"));
	ck_assert(tu_frame_is(&x.app.f, 1, "reply 2"));
	ck_assert_ptr_nonnull(x.app.chat);
	ck_assert_int_eq(x.app.f.frees, 0);
	async_chat_close(x.app.chat);
	ck_assert_int_eq(x.app.f.frees, 1);
	fix_done(&x);
}
END_TEST

static int
cond_founds_1(void *arg)
{
	return ((struct fix *)arg)->app.f.founds >= 1;
}

START_TEST(test_shutdown_when_done_pair)
{
	struct fix x;

	fix_pair(&x, &handlers, BEV_OPT_DEFER_CALLBACKS);
	ck_assert_int_eq(async_chat_set_terminator(x.app.chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "half", 4), 0);
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "-closed",
			     7, 2),
	    0);
	ck_assert_int_eq(async_chat_shutdown_when_done(x.app.chat), 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push(x.app.chat, "x", 1), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "half-closed");
	ck_assert(x.peer.eof_what & BEV_EVENT_READING);
	ck_assert_int_eq(x.app.f.frees, 0);
	/* The partner can still talk to the channel. */
	ck_assert_int_eq(bufferevent_write(x.peer.bev, "answer\n", 7), 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_founds_1, &x, WAIT_MS), 0);
	ck_assert(tu_frame_is(&x.app.f, 0, "answer"));
	ck_assert_int_eq(x.peer.eof, 1);
	fix_done(&x);
}
END_TEST

/*
 * discard_buffers
 */

START_TEST(test_discard_buffers)
{
	static const char *const pieces[] = { "<p>", "<q>", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces };
	struct ref r1, r2;
	struct stat st;
	int fd = temp_file("file-data", &st);

	fix_socket(&x, &handlers);
	/* The loop has not run: everything below is still unsent. */
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "unsent", 6), 0);
	ck_assert_int_eq(push_ref(x.app.chat, &r1, "ref-in-output"), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(push_ref(x.app.chat, &r2, "ref-behind"), 0);
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 0, -1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "behind", 6), 0);
	ck_assert_uint_ge(async_chat_output_pending(x.app.chat), 6 + 13 + 16);
	ck_assert_int_eq(async_chat_discard_buffers(x.app.chat), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert(!fd_is_open_file(fd, &st));
	ck_assert_int_eq(x.app.f.frees, 0);

	/* The channel keeps working, with its settings. */
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat), 1);
	ck_assert_int_eq(async_chat_push(x.app.chat, "after", 5), 0);
	run_until_peer_has(&x, 5);
	ck_assert_peer_got(&x, "after");
	ck_assert_int_eq(r1.runs, 1);
	ck_assert_int_eq(r2.runs, 1);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(p.calls, 0);
	fix_done(&x);
}
END_TEST

START_TEST(test_discard_buffers_keeps_close)
{
	static const char *const pieces[] = { "<p>", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces };
	struct ref r;

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "unsent", 6), 0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(push_ref(x.app.chat, &r, "ref"), 0);
	ck_assert_int_eq(async_chat_close_when_done(x.app.chat), 0);
	ck_assert_int_eq(async_chat_discard_buffers(x.app.chat), 0);
	ck_assert_int_eq(p.frees, 1);
	ck_assert_int_eq(r.runs, 1);
	ck_assert_int_eq(x.app.f.frees, 0); /* not inside the call */
	/* The close is still queued. */
	errno = 0;
	ck_assert_int_eq(async_chat_push(x.app.chat, "x", 1), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_int_eq(tu_run_until(x.base, cond_freed, &x, WAIT_MS), 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_peer_got(&x, "");
	ck_assert_int_eq(p.calls, 0);
	fix_done(&x);
}
END_TEST

/*
 * handle_drain and async_chat_output_pending()
 */

static void
drain_checks_pending(struct app *a)
{
	ck_assert_uint_eq(async_chat_output_pending(a->chat), 0);
}

static int
cond_got_and_drains(void *arg)
{
	struct fix *x = arg;

	return cond_peer_want(x) && cond_drains(x);
}

static int
cond_collected_5(void *arg)
{
	return evbuffer_get_length(((struct fix *)arg)->app.f.cur) >= 5;
}

START_TEST(test_drain)
{
	static const char *const pieces[] = { "<1>", "<2>", "<3>", NULL };
	static const char *const none[] = { NULL };
	struct fix x;
	struct prod p = { .pieces = pieces };
	struct prod empty = { .pieces = none };

	fix_socket(&x, &handlers);
	x.app.on_drain = drain_checks_pending;

	/* Nothing pushed: input alone never drains. */
	ck_assert_int_eq(bufferevent_write(x.peer.bev, "hello", 5), 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_collected_5, &x, WAIT_MS),
	    0);
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	ck_assert(tu_cur_eq(&x.app.f, "hello", 5));
	ck_assert_int_eq(x.app.f.drains, 0);

	/* Plain data. */
	ck_assert_int_eq(async_chat_push(x.app.chat, "abc", 3), 0);
	ck_assert_int_eq(x.app.f.drains, 0);
	x.peer.want = 3;
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_got_and_drains, &x,
			     WAIT_MS),
	    0);
	ck_assert_int_eq(x.app.f.drains, 1);

	/* After a producer finishes. */
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	x.peer.want = 12;
	x.app.want_drains = 2;
	ck_assert_int_eq(tu_run_until(x.base, cond_got_and_drains, &x,
			     WAIT_MS),
	    0);
	ck_assert_int_eq(x.app.f.drains, 2);
	ck_assert_int_eq(p.frees, 1);

	/* After a producer that had nothing at all. */
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &empty),
	    0);
	x.app.want_drains = 3;
	ck_assert_int_eq(tu_run_until(x.base, cond_drains, &x, WAIT_MS), 0);
	ck_assert_int_eq(empty.calls, 1);
	ck_assert_int_eq(empty.frees, 1);

	/* Nothing more happens by itself. */
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	ck_assert_int_eq(x.app.f.drains, 3);
	ck_assert_peer_got(&x, "abc<1><2><3>");
	fix_done(&x);
}
END_TEST

/* Over a bufferevent pair the partner takes the bytes at once. */
static void
drain_pair(int options)
{
	static const char *const pieces[] = { "<1>", "<2>", NULL };
	struct fix x;
	struct prod p = { .pieces = pieces };

	fix_pair(&x, &handlers, options);
	ck_assert_int_eq(async_chat_push(x.app.chat, "abc", 3), 0);
	x.peer.want = 3;
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_got_and_drains, &x,
			     WAIT_MS),
	    0);
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	x.peer.want = 9;
	x.app.want_drains = 2;
	ck_assert_int_eq(tu_run_until(x.base, cond_got_and_drains, &x,
			     WAIT_MS),
	    0);
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 20), -1);
	ck_assert_int_eq(x.app.f.drains, 2);
	ck_assert_peer_got(&x, "abc<1><2>");
	fix_done(&x);
}

START_TEST(test_drain_pair)
{
	drain_pair(BEV_OPT_DEFER_CALLBACKS);
	drain_pair(0);
}
END_TEST

START_TEST(test_output_pending)
{
	static const char *const pieces[] = { "<12345>", NULL };
	char data[100];
	struct fix x;
	struct prod p = { .pieces = pieces };
	struct evbuffer *buf = evbuffer_new();

	memset(data, 'd', sizeof(data));
	fix_socket(&x, &handlers);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 16), 0);
	/* The loop has not run, so nothing has been written yet. */
	ck_assert_int_eq(async_chat_push(x.app.chat, data, 100), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 100);
	/* The producer waits (the buffer is over out_buffer_size) and its
	 * bytes are not counted before it makes them; pushes behind it
	 * are. */
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &prod_ops,
			     &p),
	    0);
	ck_assert_int_eq(p.calls, 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 100);
	ck_assert_int_eq(async_chat_push(x.app.chat, "xyz", 3), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 103);
	ck_assert_int_eq(evbuffer_add(buf, "12345", 5), 0);
	ck_assert_int_eq(async_chat_push_buffer(x.app.chat, buf), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 108);
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "sp", 2,
			     0),
	    0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 108);
	ck_assert_int_eq(async_chat_push(x.app.chat, "!", 1), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 109);

	x.app.on_drain = drain_checks_pending;
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_drains, &x, WAIT_MS), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	run_until_peer_has(&x, 100 + 7 + 3 + 5 + 2 + 1);
	ck_assert_uint_eq(evbuffer_get_length(x.peer.got), 118);
	ck_assert(memcmp(evbuffer_pullup(x.peer.got, -1), data, 100) == 0);
	ck_assert(memcmp(evbuffer_pullup(x.peer.got, -1) + 100,
		      "<12345>xyz12345sp!", 18) == 0);
	evbuffer_free(buf);
	fix_done(&x);
}
END_TEST

/*
 * Flow control by the application: push while output_pending is below a
 * limit, resume on handle_drain.
 */

struct flow {
	unsigned char *data;
	size_t target, limit, chunk, pushed, max_pending;
};

static void
flow_pump(struct app *a)
{
	struct flow *f = a->user;

	while (f->pushed < f->target &&
	    async_chat_output_pending(a->chat) < f->limit) {
		size_t n = f->target - f->pushed < f->chunk ?
		    f->target - f->pushed :
		    f->chunk;
		size_t pending;

		ck_assert_int_eq(async_chat_push(a->chat, f->data + f->pushed,
				     n),
		    0);
		f->pushed += n;
		pending = async_chat_output_pending(a->chat);
		if (pending > f->max_pending)
			f->max_pending = pending;
	}
}

START_TEST(test_flow_control_bounded)
{
	struct fix x;
	struct flow f = {
		.target = 8 << 20, .limit = 65536, .chunk = 4096
	};
	uint64_t seed = 42;
	size_t i, stuck;
	int rounds = 0;

	f.data = malloc(f.target);
	ck_assert_ptr_nonnull(f.data);
	for (i = 0; i < f.target; i++)
		f.data[i] = (unsigned char)tu_rand(&seed);
	fix_socket(&x, &handlers);
	x.app.user = &f;
	x.app.on_drain = flow_pump;
	/* The peer does not read at all. */
	ck_assert_int_eq(bufferevent_disable(x.peer.bev, EV_READ), 0);
	flow_pump(&x.app);
	/* Run until the socket buffers are full and pushing has stopped. */
	do {
		stuck = f.pushed;
		ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	} while (f.pushed != stuck && ++rounds < 200);
	ck_assert_uint_le(f.max_pending, f.limit + f.chunk);
	ck_assert_uint_le(async_chat_output_pending(x.app.chat),
	    f.limit + f.chunk);
	stuck = f.pushed;
	/* Only the socket buffers took more than the limit. */
	ck_assert_uint_lt(stuck, f.target);
	ck_assert_uint_gt(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	ck_assert_uint_eq(f.pushed, stuck);

	/* The peer reads: everything goes out, in order. */
	ck_assert_int_eq(bufferevent_enable(x.peer.bev, EV_READ), 0);
	run_until_peer_has(&x, f.target);
	ck_assert(peer_got_is(&x, f.data, f.target));
	ck_assert_uint_le(f.max_pending, f.limit + f.chunk);
	ck_assert_int_ge(x.app.f.drains, 1);
	free(f.data);
	fix_done(&x);
}
END_TEST

/*
 * Sizes
 */

START_TEST(test_large_push)
{
	struct fix x;
	size_t len = 10 << 20, i;
	unsigned char *data = malloc(len);
	uint64_t seed = 7;

	ck_assert_ptr_nonnull(data);
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)tu_rand(&seed);
	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_push(x.app.chat, data, len), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), len);
	x.peer.want = len;
	x.app.want_drains = 1;
	ck_assert_int_eq(tu_run_until(x.base, cond_got_and_drains, &x, 30000),
	    0);
	ck_assert(peer_got_is(&x, data, len));
	ck_assert_int_eq(x.app.f.drains, 1);
	free(data);
	fix_done(&x);
}
END_TEST

START_TEST(test_push_empty)
{
	struct fix x;
	struct evbuffer *buf = evbuffer_new();
	struct ref r;

	fix_socket(&x, &handlers);
	ck_assert_int_eq(async_chat_push(x.app.chat, "ignored", 0), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, NULL, 0), 0);
	ck_assert_int_eq(async_chat_push_buffer(x.app.chat, buf), 0);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	r.data = "r";
	r.len = 0;
	r.runs = 0;
	ck_assert_int_eq(async_chat_push_reference(x.app.chat, "r", 0,
			     ref_cleanup, &r),
	    0);
	ck_assert_int_le(r.runs, 1);
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(tu_run_until(x.base, NULL, NULL, 50), -1);
	ck_assert_int_eq(r.runs, 1);
	ck_assert_int_eq(x.app.f.drains, 0); /* nothing was ever queued */
	ck_assert_peer_got(&x, "");
	ck_assert_int_eq(async_chat_push(x.app.chat, "z", 1), 0);
	run_until_peer_has(&x, 1);
	ck_assert_peer_got(&x, "z");
	evbuffer_free(buf);
	fix_done(&x);
}
END_TEST

START_TEST(test_buffer_sizes)
{
	struct fix x;

	fix_socket(&x, &handlers);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat), 65536);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(x.app.chat), 65536);
	ck_assert_uint_eq(ASYNC_CHAT_DEFAULT_BUFFER_SIZE, 65536);

	errno = 0;
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 0), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat,
			     ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_in_buffer_size(x.app.chat, 0), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_in_buffer_size(x.app.chat,
			     ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	/* Failures change nothing. */
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat), 65536);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(x.app.chat), 65536);

	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat), 1);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat,
			     ASYNC_CHAT_BUFFER_SIZE_MAX),
	    0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat),
	    ASYNC_CHAT_BUFFER_SIZE_MAX);
	ck_assert_int_eq(async_chat_set_in_buffer_size(x.app.chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(x.app.chat), 1);
	ck_assert_int_eq(async_chat_set_in_buffer_size(x.app.chat,
			     ASYNC_CHAT_BUFFER_SIZE_MAX),
	    0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(x.app.chat),
	    ASYNC_CHAT_BUFFER_SIZE_MAX);
	ck_assert_int_eq(async_chat_set_out_buffer_size(x.app.chat, 4096), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(x.app.chat), 4096);

	/* The size hint given to producers is out_buffer_size. */
	{
		static const char *const pieces[] = { "s", NULL };
		struct prod p = { .pieces = pieces };

		ck_assert_int_eq(async_chat_push_with_producer(x.app.chat,
				     &prod_ops, &p),
		    0);
		run_until_peer_has(&x, 1);
		ck_assert_uint_eq(p.last_hint, 4096);
	}

	ck_assert_uint_eq(async_chat_get_out_buffer_size(NULL), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(NULL), 0);
	fix_done(&x);
}
END_TEST

/*
 * push_file
 */

static void
file_ranges(struct fix *x)
{
	static const char content[] = "0123456789abcdefghij";
	struct stat st[4];
	int fd[4], i;

	for (i = 0; i < 4; i++)
		fd[i] = temp_file(content, &st[i]);
	ck_assert_int_eq(async_chat_push_file(x->app.chat, fd[0], 0, -1), 0);
	ck_assert_int_eq(async_chat_push(x->app.chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(x->app.chat, fd[1], 10, 3), 0);
	ck_assert_int_eq(async_chat_push(x->app.chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(x->app.chat, fd[2], 15, -1), 0);
	ck_assert_int_eq(async_chat_push(x->app.chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_push_file(x->app.chat, fd[3], 5, 0), 0);
	ck_assert_int_eq(async_chat_push(x->app.chat, "|", 1), 0);
	ck_assert_int_eq(async_chat_close_when_done(x->app.chat), 0);
	ck_assert_int_eq(tu_run_until(x->base, cond_freed, x, WAIT_MS), 0);
	ck_assert_int_eq(x->app.f.errors, 0);
	ck_assert_int_eq(x->app.f.closes, 0);
	ck_assert_peer_got(x, "0123456789abcdefghij|abc|fghij||");
	for (i = 0; i < 4; i++)
		ck_assert(!fd_is_open_file(fd[i], &st[i]));
}

START_TEST(test_push_file_socket)
{
	struct fix x;

	fix_socket(&x, &handlers);
	file_ranges(&x);
	fix_done(&x);
}
END_TEST

START_TEST(test_push_file_pair)
{
	struct fix x;

	fix_pair(&x, &handlers, BEV_OPT_DEFER_CALLBACKS);
	file_ranges(&x);
	fix_done(&x);
}
END_TEST

/* A range libevent refuses fails the file producer in the loop: the
 * handler hears ASYNC_CHAT_ERR_PRODUCER and the file is closed. */
/* Closing one end of a pair tells the other, as closing a socket would:
 * after the bytes already handed over, never the ones still queued. */
START_TEST(test_close_pair_gives_partner_eof)
{
	static const int options[] = { 0, BEV_OPT_DEFER_CALLBACKS };
	size_t i;

	for (i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		struct fix x;

		fix_pair(&x, &handlers, options[i]);
		ck_assert_int_eq(async_chat_push(x.app.chat, "sent", 4), 0);
		run_until_peer_has(&x, 4);
		ck_assert_int_eq(x.peer.eof, 0);
		async_chat_close(x.app.chat);
		ck_assert_ptr_null(x.app.chat); /* handle_free ran */
		ck_assert_int_eq(
		    tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
		ck_assert_int_eq(x.peer.eof, 1);
		ck_assert(x.peer.eof_what & BEV_EVENT_READING);
		ck_assert_peer_got(&x, "sent");
		fix_done(&x);
	}
}
END_TEST

START_TEST(test_push_file_bad_range)
{
	struct fix x;
	struct stat st;
	int fd = temp_file("0123456789", &st), spare;

	fix_socket(&x, &handlers);
	/* A range past the end is refused at once: sendfile would stall. */
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 1, INT64_MAX),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert(!fd_is_open_file(fd, &st)); /* owned, so closed */
	fd = temp_file("0123456789", &st);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 11, -1), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert(!fd_is_open_file(fd, &st));

	/* A file cut short after the push ends the output with
	 * ASYNC_CHAT_ERR_PRODUCER instead of passing for the peer's EOF. */
	fd = temp_file("0123456789", &st);
	spare = dup(fd);
	ck_assert_int_ge(spare, 0);
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 0, 10), 0);
	ck_assert_int_eq(ftruncate(spare, 4), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "next", 4), 0);
	run_until_peer_has(&x, 4);
	ck_assert_peer_got(&x, "0123");
	ck_assert_int_eq(tu_run_until(x.base, cond_app_error, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.errors, 1);
	ck_assert_int_eq(x.app.f.last_error, ASYNC_CHAT_ERR_PRODUCER);
	ck_assert_int_eq(x.app.f.closes, 0);
	close(spare);
	fix_done(&x);
}
END_TEST

/*
 * Bad arguments
 */

START_TEST(test_bad_arguments)
{
	static const struct async_chat_producer_ops no_more = { NULL,
		prod_free };
	struct fix x;
	struct prod p = { 0 };
	struct ref r = { 0 };
	struct evbuffer *buf = evbuffer_new();
	struct stat st;
	int fd;

	ck_assert_int_eq(evbuffer_add(buf, "keep", 4), 0);

	/* A NULL channel. */
	errno = 0;
	ck_assert_int_eq(async_chat_push(NULL, "x", 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(NULL, buf), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 4);
	errno = 0;
	ck_assert_int_eq(async_chat_push_reference(NULL, "x", 1, ref_cleanup,
			     &r),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(r.runs, 0);
	fd = temp_file("x", &st);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(NULL, fd, 0, -1), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert(fd_is_closed(fd));
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(NULL, &prod_ops, &p),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(NULL, "x", 1, 0), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_close_when_done(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_shutdown_when_done(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_discard_buffers(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_out_buffer_size(NULL, 100), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_in_buffer_size(NULL, 100), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(async_chat_output_pending(NULL), 0);
	async_chat_close(NULL);

	/* Bad arguments on a live channel. */
	fix_socket(&x, &handlers);
	errno = 0;
	ck_assert_int_eq(async_chat_push(x.app.chat, NULL, 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(x.app.chat, NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_reference(x.app.chat, NULL, 1,
			     ref_cleanup, &r),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(r.runs, 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, NULL, 1,
			     0),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(x.app.chat, "x", 1,
			     ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, NULL, &p),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(x.app.chat, &no_more,
			     &p),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(p.frees, 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, -1, 0, -1), -1);
	ck_assert_int_eq(errno, EBADF);
	fd = temp_file("x", &st);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, -1, -1), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert(fd_is_closed(fd));
	fd = temp_file("x", &st);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(x.app.chat, fd, 0, -2), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert(fd_is_closed(fd));

	/* None of it queued anything. */
	ck_assert_uint_eq(async_chat_output_pending(x.app.chat), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "ok", 2), 0);
	run_until_peer_has(&x, 2);
	ck_assert_peer_got(&x, "ok");
	ck_assert_int_eq(x.app.f.errors, 0);
	ck_assert_int_eq(p.calls + p.frees, 0);
	evbuffer_free(buf);
	fix_done(&x);
}
END_TEST

/* Inside found_terminator the channel closes itself and then tries every
 * output call on it. */
struct closed_calls {
	int done;
	struct prod p;
	struct ref r;
	struct stat st;
	int fd;
};

static void
found_close_then_call(struct app *a)
{
	struct closed_calls *c = a->user;
	struct async_chat *chat = a->chat;
	struct evbuffer *buf = evbuffer_new();

	async_chat_close(chat);
	ck_assert_int_eq(a->f.frees, 1);
	ck_assert_int_eq(evbuffer_add(buf, "keep", 4), 0);

	errno = 0;
	ck_assert_int_eq(async_chat_push(chat, "x", 1), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(chat, buf), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	ck_assert_uint_eq(evbuffer_get_length(buf), 4);
	errno = 0;
	ck_assert_int_eq(push_ref(chat, &c->r, "ref"), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	ck_assert_int_eq(c->r.runs, 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(chat, c->fd, 0, -1), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	ck_assert(!fd_is_open_file(c->fd, &c->st));
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(chat, &prod_ops, &c->p),
	    -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(chat, "x", 1, 0), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_close_when_done(chat), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_shutdown_when_done(chat), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_discard_buffers(chat), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_set_out_buffer_size(chat, 100), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	errno = 0;
	ck_assert_int_eq(async_chat_set_in_buffer_size(chat, 100), -1);
	ck_assert_int_eq(errno, ENOTCONN);
	ck_assert_uint_eq(async_chat_output_pending(chat), 0);
	async_chat_close(chat); /* ignored */
	ck_assert_int_eq(a->f.frees, 1);
	evbuffer_free(buf);
	c->done = 1;
}

static int
cond_closed_calls(void *arg)
{
	return ((struct closed_calls *)arg)->done;
}

START_TEST(test_calls_after_close_in_callback)
{
	struct fix x;
	struct closed_calls c = { 0 };

	c.fd = temp_file("x", &c.st);
	fix_socket(&x, &handlers);
	x.app.user = &c;
	x.app.on_found = found_close_then_call;
	ck_assert_int_eq(async_chat_set_terminator(x.app.chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push(x.app.chat, "unsent", 6), 0);
	ck_assert_int_eq(bufferevent_write(x.peer.bev, "go\nmore\n", 8), 0);
	ck_assert_int_eq(tu_run_until(x.base, cond_closed_calls, &c, WAIT_MS),
	    0);
	ck_assert_int_eq(x.app.f.founds, 1); /* nothing after the close */
	ck_assert_int_eq(tu_run_until(x.base, cond_peer_eof, &x, WAIT_MS), 0);
	ck_assert_int_eq(x.app.f.founds, 1);
	ck_assert_int_eq(x.app.f.frees, 1);
	ck_assert_int_eq(c.p.calls + c.p.frees, 0);
	fix_done(&x);
}
END_TEST

static Suite *
output_suite(void)
{
	Suite *s = suite_create("output");
	TCase *tc = tcase_create("output");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_fifo_order_socket);
	tcase_add_test(tc, test_fifo_order_pair);
	tcase_add_test(tc, test_fifo_order_pair_sync);
	tcase_add_test(tc, test_simple_producer_pieces);
	tcase_add_test(tc, test_producer_paced_by_out_buffer_size);
	tcase_add_test(tc, test_producer_error_handled);
	tcase_add_test(tc, test_producer_error_default_closes);
	tcase_add_test(tc, test_producer_error_default_closes_in_loop);
	tcase_add_test(tc, test_producer_pushes);
	tcase_add_test(tc, test_producer_closes_channel);
	tcase_add_test(tc, test_producer_discards);
	tcase_add_test(tc, test_close_when_done);
	tcase_add_test(tc, test_close_when_done_idle);
	tcase_add_test(tc, test_close_when_done_pair);
	tcase_add_test(tc, test_shutdown_when_done_socket);
	tcase_add_test(tc, test_shutdown_when_done_pair);
	tcase_add_test(tc, test_close_pair_gives_partner_eof);
	tcase_add_test(tc, test_discard_buffers);
	tcase_add_test(tc, test_discard_buffers_keeps_close);
	tcase_add_test(tc, test_drain);
	tcase_add_test(tc, test_drain_pair);
	tcase_add_test(tc, test_output_pending);
	tcase_add_test(tc, test_flow_control_bounded);
	tcase_add_test(tc, test_large_push);
	tcase_add_test(tc, test_push_empty);
	tcase_add_test(tc, test_buffer_sizes);
	tcase_add_test(tc, test_push_file_socket);
	tcase_add_test(tc, test_push_file_pair);
	tcase_add_test(tc, test_push_file_bad_range);
	tcase_add_test(tc, test_bad_arguments);
	tcase_add_test(tc, test_calls_after_close_in_callback);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	/* A peer that has gone must give EPIPE, not kill the suite. */
	signal(SIGPIPE, SIG_IGN);
	sr = srunner_create(output_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
