/*
 * fixture.c - the shared setup of the channel suites: the recording
 * application, the peer, loopback TCP and the waits (see fixture.h).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"

const char *const fx_cb_names[FX_CB_N] = {
    "collect", "found", "connect", "close", "error", "drain"};

const char *const fx_kind_names[FX_KIND_N] = {
    "unconnected", "socketpair", "pair", "pair_sync", "tcp4", "tcp6"};

int
fx_int_failed_(long rc)
{
	return rc == -1;
}

int
fx_ptr_failed_(const void *p)
{
	return p == NULL;
}

/*
 * The recording application
 */

static struct fx_chan *
chan_of(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = arg;

	ck_assert_ptr_nonnull(c);
	if (c->chat != NULL)
		ck_assert_ptr_eq(chat, c->chat);
	if (c->gone)
		c->late++;
	return c;
}

/* The bytes of the frame in progress: the collected ones, or in message
 * mode the channel's incoming buffer. */
static void
snapshot(struct fx_chan *c, struct evbuffer *to)
{
	struct evbuffer *from = c->f.cur;

	evbuffer_drain(to, evbuffer_get_length(to));
	if (c->h.collect_incoming_data == NULL)
		from = async_chat_incoming(c->chat);
	ck_assert_ptr_nonnull(from);
	ck_assert_int_eq(evbuffer_add(to, evbuffer_pullup(from, -1),
	                     evbuffer_get_length(from)),
	    0);
}

static void
call_hooks(struct fx_chan *c, enum fx_cb which, int count)
{
	if (c->hook != NULL)
		c->hook(c, which);
	if (c->once.fn != NULL && !c->once.done && !c->gone &&
	    which == c->once.cb && count == c->once.nth) {
		c->once.done = 1;
		c->once.fn(c, which);
	}
}

void
fx_once(struct fx_chan *c, enum fx_cb cb, int nth, fx_hook fn)
{
	c->once.cb = cb;
	c->once.nth = nth;
	c->once.fn = fn;
	c->once.done = 0;
}

static void
rec_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	if (c->count_only) {
		ck_assert_uint_gt(len, 0); /* collect never sees zero bytes */
		c->f.collects++;
		c->collected += len;
		if (len > c->f.max_collect)
			c->f.max_collect = len;
	} else {
		tu_frames_collect(&c->f, data, len);
	}
	call_hooks(c, FX_COLLECT, c->f.collects);
}

static void
rec_found(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	if (c->h.collect_incoming_data == NULL) {
		struct evbuffer *in = async_chat_incoming(chat);

		ck_assert_ptr_nonnull(in);
		ck_assert_int_eq(evbuffer_add_buffer(c->f.cur, in), 0);
	}
	if (c->nmatched < 8)
		c->matched[c->nmatched++] = async_chat_matched_terminator(chat);
	tu_frames_found(&c->f);
	call_hooks(c, FX_FOUND, c->f.founds);
}

static void
rec_connect(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	c->f.connects++;
	call_hooks(c, FX_CONNECT, c->f.connects);
}

static void
rec_close(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	c->f.closes++;
	snapshot(c, c->at_close);
	call_hooks(c, FX_CLOSE, c->f.closes);
}

static void
rec_error(struct async_chat *chat, int err, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	c->f.errors++;
	c->f.last_error = err;
	c->paused_at_error = async_chat_reading_paused(chat);
	snapshot(c, c->at_error);
	call_hooks(c, FX_ERROR, c->f.errors);
}

static void
rec_drain(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = chan_of(chat, arg);

	c->f.drains++;
	call_hooks(c, FX_DRAIN, c->f.drains);
}

static void
rec_free(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = arg;

	if (c->chat != NULL)
		ck_assert_ptr_eq(chat, c->chat);
	ck_assert_int_eq(c->gone, 0);
	c->gone = 1;
	c->f.frees++;
}

const struct async_chat_handlers fx_handlers = {rec_collect, rec_found,
    rec_connect, rec_close, rec_error, rec_drain, rec_free};

struct event_base *
fx_base(void)
{
	struct event_base *base = event_base_new();

	ck_assert_ptr_nonnull(base);
	return base;
}

void
fx_base_free(struct event_base *base)
{
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
}

void
fx_init(struct fx_chan *c, struct event_base *base)
{
	memset(c, 0, sizeof(*c));
	c->own_base = base == NULL;
	c->base = base != NULL ? base : fx_base();
	c->h = fx_handlers;
	tu_frames_init(&c->f);
	c->at_close = evbuffer_new();
	c->at_error = evbuffer_new();
	c->p.got = evbuffer_new();
	c->p.fd = -1;
	ck_assert_ptr_nonnull(c->at_close);
	ck_assert_ptr_nonnull(c->at_error);
	ck_assert_ptr_nonnull(c->p.got);
}

/*
 * The peer
 */

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct fx_peer *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	if (p->on_read != NULL)
		p->on_read(p, in);
	else
		ck_assert_int_eq(evbuffer_add_buffer(p->got, in), 0);
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct fx_peer *p = arg;

	/* A pair delivers the last bytes and the EOF in one go. */
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		peer_read(bev, arg);
	if (what & BEV_EVENT_EOF) {
		p->eof++;
		p->eof_what = what;
	} else if (what & BEV_EVENT_ERROR) {
		p->err = EVUTIL_SOCKET_ERROR();
		if (p->err == 0)
			p->err = -1;
	}
}

void
fx_peer_attach_bev(struct fx_chan *c, struct bufferevent *bev)
{
	ck_assert_ptr_null(c->p.bev);
	c->p.bev = bev;
	c->p.fd = bufferevent_getfd(bev);
	bufferevent_setcb(bev, peer_read, NULL, peer_event, &c->p);
	ck_assert_int_eq(bufferevent_enable(bev, EV_READ | EV_WRITE), 0);
}

void
fx_peer_attach(struct fx_chan *c, evutil_socket_t fd)
{
	struct bufferevent *bev;

	ck_assert_int_eq(evutil_make_socket_nonblocking(fd), 0);
	bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(bev);
	fx_peer_attach_bev(c, bev);
}

void
fx_send(struct fx_chan *c, const void *data, size_t len)
{
	if (c->p.fd >= 0)
		ck_assert_int_eq(
		    send(c->p.fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
	else
		ck_assert_int_eq(bufferevent_write(c->p.bev, data, len), 0);
}

void
fx_sends(struct fx_chan *c, const char *s)
{
	fx_send(c, s, strlen(s));
}

void
fx_shut(struct fx_chan *c)
{
	if (c->p.fd >= 0)
		ck_assert_int_eq(shutdown(c->p.fd, SHUT_WR), 0);
	else
		ck_assert_int_eq(
		    bufferevent_flush(c->p.bev, EV_WRITE, BEV_FINISHED), 0);
}

void
fx_peer_close(struct fx_chan *c)
{
	if (c->p.bev != NULL)
		bufferevent_free(c->p.bev);
	c->p.bev = NULL;
	c->p.fd = -1;
}

void
fx_reset(struct fx_chan *c)
{
	struct linger lg = {1, 0};

	ck_assert_int_ge(c->p.fd, 0);
	ck_assert_int_eq(
	    setsockopt(c->p.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	fx_peer_close(c);
}

int
fx_buf_is(struct evbuffer *b, const void *s, size_t len)
{
	return evbuffer_get_length(b) == len &&
	       (len == 0 ||
	           memcmp(evbuffer_pullup(b, (ev_ssize_t)len), s, len) == 0);
}

int
fx_buf_is_str(struct evbuffer *b, const char *s)
{
	return fx_buf_is(b, s, strlen(s));
}

int
fx_got_is(const struct fx_chan *c, const void *s, size_t len)
{
	return fx_buf_is(c->p.got, s, len);
}

int
fx_got(const struct fx_chan *c, const char *s)
{
	return fx_got_is(c, s, strlen(s));
}

size_t
fx_input_len(struct fx_chan *c)
{
	return evbuffer_get_length(
	    bufferevent_get_input(async_chat_get_bufferevent(c->chat)));
}

/*
 * Opening and ending
 */

void
fx_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct fx_chan *c = arg;

	(void)l;
	ck_assert_ptr_nonnull(addr);
	ck_assert_int_eq(addr->sa_family, c->family);
	ck_assert_int_eq(addrlen, c->family == AF_INET
	                              ? (int)sizeof(struct sockaddr_in)
	                              : (int)sizeof(struct sockaddr_in6));
	ck_assert_ptr_null(c->chat);
	c->chat = async_chat_new(c->base, fd, &c->h, c);
	ck_assert_ptr_nonnull(c->chat);
}

int
fx_open(struct fx_chan *c, enum fx_kind kind)
{
	evutil_socket_t sv[2];
	struct bufferevent *pair[2];

	ck_assert_ptr_null(c->chat);
	switch (kind) {
	case FX_UNCONNECTED:
		c->chat = async_chat_new(c->base, -1, &c->h, c);
		ck_assert_ptr_nonnull(c->chat);
		break;
	case FX_SOCKETPAIR:
		tu_socketpair(sv);
		c->chat = async_chat_new(c->base, sv[0], &c->h, c);
		ck_assert_ptr_nonnull(c->chat);
		fx_peer_attach(c, sv[1]);
		break;
	case FX_PAIR:
	case FX_PAIR_SYNC:
		ck_assert_int_eq(
		    bufferevent_pair_new(c->base,
		        BEV_OPT_CLOSE_ON_FREE |
		            (kind == FX_PAIR ? BEV_OPT_DEFER_CALLBACKS : 0),
		        pair),
		    0);
		c->chat = async_chat_new_bufferevent(pair[0], &c->h, c);
		ck_assert_ptr_nonnull(c->chat);
		fx_peer_attach_bev(c, pair[1]);
		break;
	case FX_TCP4:
	case FX_TCP6:
		c->family = kind == FX_TCP4 ? AF_INET : AF_INET6;
		if (fx_have_family(c->family) < 0)
			return 1;
		c->listener = fx_listen(c->base, c->family, fx_accept, c);
		fx_peer_attach(
		    c, fx_tcp_client(c->family, fx_listener_port(c->listener)));
		fx_run(c, fx_until_chat);
		break;
	case FX_KIND_N:
		ck_abort_msg("no such kind");
	}
	return 0;
}

int
fx_start(struct fx_chan *c, enum fx_kind kind)
{
	fx_init(c, NULL);
	return fx_open(c, kind);
}

void
fx_end(struct fx_chan *c)
{
	if (c->chat != NULL && !c->gone)
		async_chat_close(c->chat);
	if (c->chat != NULL)
		ck_assert_int_eq(c->f.frees, 1);
	ck_assert_int_eq(c->late, 0);
	if (c->own_base)
		event_base_loop(c->base, EVLOOP_NONBLOCK);
	fx_peer_close(c);
	async_chat_listener_free(c->listener);
	evbuffer_free(c->p.got);
	evbuffer_free(c->at_close);
	evbuffer_free(c->at_error);
	tu_frames_clear(&c->f);
	if (c->own_base)
		fx_base_free(c->base);
	memset(c, 0, sizeof(*c));
}

/*
 * Waits
 */

struct wait {
	struct fx_chan *c;
	fx_cond cond;
};

static int
wait_cond(void *arg)
{
	struct wait *w = arg;

	return w->cond(w->c);
}

int
fx_wait(struct fx_chan *c, fx_cond cond, int timeout_ms)
{
	struct wait w = {c, cond};

	return tu_run_until(c->base, cond != NULL ? wait_cond : NULL,
	    cond != NULL ? &w : NULL, timeout_ms);
}

void
fx_run(struct fx_chan *c, fx_cond cond)
{
	ck_assert_msg(fx_wait(c, cond, FX_WAIT_MS) == 0,
	    "timed out: %d collects, %d founds, %d closes, %d errors, "
	    "%d drains, %zu bytes in the frame, peer got %zu",
	    c->f.collects, c->f.founds, c->f.closes, c->f.errors, c->f.drains,
	    evbuffer_get_length(c->f.cur), evbuffer_get_length(c->p.got));
}

void
fx_settle(struct event_base *base)
{
	tu_run_until(base, NULL, NULL, FX_SETTLE_MS);
}

int
fx_until_founds(struct fx_chan *c)
{
	return (size_t)c->f.founds >= c->want;
}

int
fx_until_collected(struct fx_chan *c)
{
	return evbuffer_get_length(c->f.cur) >= c->want;
}

int
fx_until_incoming(struct fx_chan *c)
{
	return evbuffer_get_length(async_chat_incoming(c->chat)) >= c->want;
}

int
fx_until_closes(struct fx_chan *c)
{
	return c->f.closes > 0;
}

int
fx_until_errors(struct fx_chan *c)
{
	return c->f.errors > 0;
}

int
fx_until_connects(struct fx_chan *c)
{
	return c->f.connects > 0;
}

int
fx_until_drains(struct fx_chan *c)
{
	return c->f.drains >= c->want_drains;
}

int
fx_until_gone(struct fx_chan *c)
{
	return c->gone;
}

int
fx_until_chat(struct fx_chan *c)
{
	return c->chat != NULL;
}

int
fx_until_got(struct fx_chan *c)
{
	return evbuffer_get_length(c->p.got) >= c->want;
}

int
fx_until_peer_eof(struct fx_chan *c)
{
	return c->p.eof || c->p.err;
}

int
fx_until_eof(struct fx_chan *c)
{
	return c->p.eof > 0;
}

void
fx_run_got(struct fx_chan *c, size_t n)
{
	c->want = n;
	fx_run(c, fx_until_got);
}

/*
 * Calls on a closed channel
 */

static int
never_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	(void)ctx;
	(void)out;
	(void)size_hint;
	ck_abort_msg("a producer refused by a closed channel was pulled");
	return 0;
}

static void
never_free(void *ctx)
{
	(void)ctx;
	ck_abort_msg("a producer refused by a closed channel was freed");
}

static const struct async_chat_producer_ops never_ops = {
    never_more, never_free};

static void
count_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	(*(int *)arg)++;
}

void
fx_check_closed(struct fx_chan *c)
{
	struct async_chat *chat = c->chat;
	struct async_chat_terminator t;
	struct fx_addr a = fx_loopback(AF_INET, 9);
	const void *terms[1] = {"x"};
	size_t lens[1] = {1};
	struct evbuffer *b = evbuffer_new();
	struct stat st;
	int fd = fx_temp_file("x", &st); /* push_file's only kind */
	int runs = 0;

	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(evbuffer_add(b, "keep", 4), 0);
	EXPECT_ERRNO(async_chat_push(chat, "x", 1), ENOTCONN);
	EXPECT_ERRNO(async_chat_push_buffer(chat, b), ENOTCONN);
	ck_assert_uint_eq(evbuffer_get_length(b), 4);
	EXPECT_ERRNO(
	    async_chat_push_reference(chat, "x", 1, count_cleanup, &runs),
	    ENOTCONN);
	ck_assert_int_eq(runs, 0);
	EXPECT_ERRNO(async_chat_push_file(chat, fd, 0, -1), ENOTCONN);
	/* Owned from the call on, success or not: closed. */
	ck_assert(!fx_fd_is_file(fd, &st));
	EXPECT_ERRNO(
	    async_chat_push_with_producer(chat, &never_ops, NULL), ENOTCONN);
	EXPECT_ERRNO(
	    async_chat_push_simple_producer(chat, "x", 1, 0), ENOTCONN);
	EXPECT_ERRNO(async_chat_close_when_done(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_shutdown_when_done(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_discard_buffers(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_terminator(chat, "\n", 1), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_terminator_count(chat, 3), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_terminator_none(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_terminator_line(chat), ENOTCONN);
	EXPECT_ERRNO(
	    async_chat_set_terminators(chat, terms, lens, 1), ENOTCONN);
	EXPECT_ERRNO(async_chat_get_terminator(chat, &t), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_max_frame(chat, 10), ENOTCONN);
	EXPECT_ERRNO(async_chat_pause_reading(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_resume_reading(chat), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(chat, 10), ENOTCONN);
	EXPECT_ERRNO(async_chat_set_out_buffer_size(chat, 10), ENOTCONN);
	EXPECT_ERRNO(async_chat_connect(chat, FX_SA(&a), a.len), ENOTCONN);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(chat, NULL, AF_INET, "localhost", 9),
	    ENOTCONN);
	EXPECT_ERRNO(async_chat_incoming(chat), ENOTCONN);
	ck_assert_int_eq(async_chat_get_fd(chat), -1);
	ck_assert_ptr_null(async_chat_get_bufferevent(chat));
	ck_assert_int_eq(async_chat_connected(chat), 0);
	ck_assert_uint_eq(async_chat_output_pending(chat), 0);
	async_chat_close(chat); /* already closed: ignored */
	ck_assert_int_eq(c->f.frees, 1);
	evbuffer_free(b);
}

/*
 * Loopback TCP
 */

int
fx_have_family(int family)
{
	struct fx_addr a = fx_loopback(family, 0);
	evutil_socket_t fd = socket(family, SOCK_STREAM, 0);
	int rc;

	if (fd < 0)
		return -1;
	rc = bind(fd, FX_SA(&a), (socklen_t)a.len);
	evutil_closesocket(fd);
	return rc == 0 ? 0 : -1;
}

struct fx_addr
fx_loopback(int family, int port)
{
	struct fx_addr a;

	memset(&a, 0, sizeof(a));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.len = (int)sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;

		ck_assert_int_eq(family, AF_INET6);
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		sin6->sin6_addr = in6addr_loopback;
		a.len = (int)sizeof(*sin6);
	}
	return a;
}

struct async_chat_listener *
fx_listen(
    struct event_base *base, int family, async_chat_accept_fn fn, void *arg)
{
	struct fx_addr a = fx_loopback(family, 0);
	struct async_chat_listener *l;

	l = async_chat_listener_new(base, FX_SA(&a), a.len, -1, fn, arg);
	ck_assert_ptr_nonnull(l);
	return l;
}

int
fx_listener_port(struct async_chat_listener *l)
{
	struct sockaddr_storage ss;
	int len = (int)sizeof(ss);

	ck_assert_int_eq(
	    async_chat_listener_get_address(l, (struct sockaddr *)&ss, &len),
	    0);
	if (ss.ss_family == AF_INET) {
		ck_assert_int_eq(len, (int)sizeof(struct sockaddr_in));
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	ck_assert_int_eq(ss.ss_family, AF_INET6);
	ck_assert_int_eq(len, (int)sizeof(struct sockaddr_in6));
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

evutil_socket_t
fx_tcp_client(int family, int port)
{
	struct fx_addr a = fx_loopback(family, port);
	evutil_socket_t fd = socket(family, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, FX_SA(&a), (socklen_t)a.len), 0);
	return fd;
}

evutil_socket_t
fx_refusing_port(int family, int *port)
{
	struct fx_addr a = fx_loopback(family, 0);
	socklen_t len = sizeof(a.ss);
	evutil_socket_t fd = socket(family, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&a), (socklen_t)a.len), 0);
	ck_assert_int_eq(getsockname(fd, FX_SA(&a), &len), 0);
	*port = family == AF_INET
	            ? ntohs(((struct sockaddr_in *)&a.ss)->sin_port)
	            : ntohs(((struct sockaddr_in6 *)&a.ss)->sin6_port);
	return fd;
}

/*
 * Files
 */

int
fx_temp_file(const char *s, struct stat *st)
{
	char path[] = "/tmp/asynchat-test.XXXXXX";
	size_t len = strlen(s);
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(write(fd, s, len), (ssize_t)len);
	ck_assert_int_eq(fstat(fd, st), 0);
	return fd;
}

/* A number reused for another file does not count. */
int
fx_fd_is_file(int fd, const struct stat *st)
{
	struct stat now;

	return fstat(fd, &now) == 0 && now.st_dev == st->st_dev &&
	       now.st_ino == st->st_ino;
}

int
fx_fd_is_closed(int fd)
{
	return fcntl(fd, F_GETFD) == -1 && errno == EBADF;
}
