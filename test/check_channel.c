/*
 * check_channel.c - the channel's input side and lifecycle, driven in
 * process over socket pairs, bufferevent pairs and loopback TCP: framing,
 * EOF, errors, connects, re-entrancy, pause/resume, the frame bound, the
 * listener, the constructors and the accessors.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "asynchat.h"
#include "testutil.h"

/* Generous: every wait ends as soon as its condition holds. */
#define WAIT_MS 5000
/* Long enough for a pending read or accept to be served if it could be. */
#define SETTLE_MS 50

/* A call that fails with -1 (or NULL) and errno e. */
#define EXPECT_ERRNO(call, e)                                                  \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_int_eq((call), -1);                                  \
		ck_assert_int_eq(errno, (e));                                  \
	} while (0)

#define EXPECT_NULL_ERRNO(call, e)                                             \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_ptr_null(call);                                      \
		ck_assert_int_eq(errno, (e));                                  \
	} while (0)

/*
 * The peer: the far end of a socket, recording what the channel sends.
 */

struct peer {
	evutil_socket_t fd;
	struct event *ev;
	struct evbuffer *got;
	int eof;
	int err;
};

static void
peer_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;
	char buf[16384];
	ssize_t n;

	(void)what;
	for (;;) {
		n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			ck_assert_int_eq(
			    evbuffer_add(p->got, buf, (size_t)n), 0);
			continue;
		}
		if (n < 0 &&
		    (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n == 0)
			p->eof = 1;
		else
			p->err = errno;
		event_del(p->ev);
		return;
	}
}

static void
peer_start(struct peer *p, struct event_base *base, evutil_socket_t fd)
{
	p->fd = fd;
	ck_assert_int_eq(evutil_make_socket_nonblocking(fd), 0);
	p->ev = event_new(base, fd, EV_READ | EV_PERSIST, peer_readcb, p);
	ck_assert_ptr_nonnull(p->ev);
	ck_assert_int_eq(event_add(p->ev, NULL), 0);
}

/* Small writes only: they fit in the socket buffer at once. */
static void
peer_send(struct peer *p, const void *data, size_t len)
{
	ck_assert_int_eq(send(p->fd, data, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void
peer_sends(struct peer *p, const char *s)
{
	peer_send(p, s, strlen(s));
}

static void
peer_shut(struct peer *p)
{
	ck_assert_int_eq(shutdown(p->fd, SHUT_WR), 0);
}

static int
peer_got(const struct peer *p, const char *s)
{
	size_t len = strlen(s);

	return evbuffer_get_length(p->got) == len &&
	       memcmp(evbuffer_pullup(p->got, -1), s, len) == 0;
}

static void
peer_end(struct peer *p)
{
	if (p->ev != NULL)
		event_free(p->ev);
	p->ev = NULL;
	if (p->fd >= 0)
		evutil_closesocket(p->fd);
	p->fd = -1;
}

/* Close with SO_LINGER {1, 0}: the kernel sends RST instead of FIN. */
static void
peer_reset(struct peer *p)
{
	struct linger lg = {1, 0};

	ck_assert_int_eq(
	    setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	peer_end(p);
}

/*
 * The channel under test, with handlers that record everything into a
 * tu_frames and then call an optional per-test hook.
 */

enum cb {
	CB_COLLECT,
	CB_FOUND,
	CB_CONNECT,
	CB_CLOSE,
	CB_ERROR,
	CB_DRAIN,
	CB_N
};

struct chan {
	struct event_base *base;
	struct async_chat *chat;
	struct async_chat_handlers h;
	struct tu_frames f;
	struct peer p;
	int gone;                  /* handle_free has run */
	int late;                  /* callbacks that ran after it */
	struct evbuffer *at_close; /* frame bytes handle_close saw */
	struct evbuffer *at_error; /* and handle_error */
	int paused_at_error;
	int matched[8];
	size_t nmatched;
	void (*hook)(struct chan *c, enum cb which);
	/* Per-test state for the hooks. */
	int where, op, done, state;
	size_t want;
};

static struct chan *
chan_of(struct async_chat *chat, void *arg)
{
	struct chan *c = arg;

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
snapshot(struct chan *c, struct evbuffer *to)
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
call_hook(struct chan *c, enum cb which)
{
	if (c->hook != NULL)
		c->hook(c, which);
}

static void
rec_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	tu_frames_collect(&c->f, data, len);
	call_hook(c, CB_COLLECT);
}

static void
rec_found(struct async_chat *chat, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	if (c->h.collect_incoming_data == NULL) {
		struct evbuffer *in = async_chat_incoming(chat);

		ck_assert_ptr_nonnull(in);
		ck_assert_int_eq(evbuffer_add_buffer(c->f.cur, in), 0);
	}
	if (c->nmatched < 8)
		c->matched[c->nmatched++] = async_chat_matched_terminator(chat);
	tu_frames_found(&c->f);
	call_hook(c, CB_FOUND);
}

static void
rec_connect(struct async_chat *chat, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	c->f.connects++;
	call_hook(c, CB_CONNECT);
}

static void
rec_close(struct async_chat *chat, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	c->f.closes++;
	snapshot(c, c->at_close);
	call_hook(c, CB_CLOSE);
}

static void
rec_error(struct async_chat *chat, int err, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	c->f.errors++;
	c->f.last_error = err;
	c->paused_at_error = async_chat_reading_paused(chat);
	snapshot(c, c->at_error);
	call_hook(c, CB_ERROR);
}

static void
rec_drain(struct async_chat *chat, void *arg)
{
	struct chan *c = chan_of(chat, arg);

	c->f.drains++;
	call_hook(c, CB_DRAIN);
}

static void
rec_free(struct async_chat *chat, void *arg)
{
	struct chan *c = arg;

	if (c->chat != NULL)
		ck_assert_ptr_eq(chat, c->chat);
	ck_assert_int_eq(c->gone, 0);
	c->gone = 1;
	c->f.frees++;
}

static const struct async_chat_handlers rec_handlers = {rec_collect, rec_found,
    rec_connect, rec_close, rec_error, rec_drain, rec_free};

static void
chan_init(struct chan *c, struct event_base *base)
{
	memset(c, 0, sizeof(*c));
	c->base = base;
	c->h = rec_handlers;
	tu_frames_init(&c->f);
	c->at_close = evbuffer_new();
	c->at_error = evbuffer_new();
	c->p.got = evbuffer_new();
	c->p.fd = -1;
	ck_assert_ptr_nonnull(c->at_close);
	ck_assert_ptr_nonnull(c->at_error);
	ck_assert_ptr_nonnull(c->p.got);
}

/* A channel on one end of a socket pair, the peer on the other. */
static void
chan_socketpair(struct chan *c)
{
	evutil_socket_t sv[2];

	tu_socketpair(sv);
	c->chat = async_chat_new(c->base, sv[0], &c->h, c);
	ck_assert_ptr_nonnull(c->chat);
	peer_start(&c->p, c->base, sv[1]);
}

/* Close the channel if it is still open: handle_free ran exactly once
 * and nothing ran after it. */
static void
chan_end(struct chan *c)
{
	if (!c->gone)
		async_chat_close(c->chat);
	ck_assert_int_eq(c->f.frees, 1);
	ck_assert_int_eq(c->late, 0);
	peer_end(&c->p);
	evbuffer_free(c->p.got);
	evbuffer_free(c->at_close);
	evbuffer_free(c->at_error);
	tu_frames_clear(&c->f);
}

static int
buf_is(struct evbuffer *b, const void *s, size_t len)
{
	return evbuffer_get_length(b) == len &&
	       (len == 0 || memcmp(evbuffer_pullup(b, -1), s, len) == 0);
}

static int
buf_is_str(struct evbuffer *b, const char *s)
{
	return buf_is(b, s, strlen(s));
}

/* Outside ck_assert: Check records every assertion it passes. */
static int
all_bytes(const char *p, size_t len, char want)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != want)
			return 0;
	return 1;
}

static size_t
input_len(struct chan *c)
{
	return evbuffer_get_length(
	    bufferevent_get_input(async_chat_get_bufferevent(c->chat)));
}

static int
until_founds(void *arg)
{
	struct chan *c = arg;

	return (size_t)c->f.founds >= c->want;
}

static int
until_collected(void *arg)
{
	struct chan *c = arg;

	return evbuffer_get_length(c->f.cur) >= c->want;
}

static int
until_incoming(void *arg)
{
	struct chan *c = arg;

	return evbuffer_get_length(async_chat_incoming(c->chat)) >= c->want;
}

static int
until_closes(void *arg)
{
	return ((struct chan *)arg)->f.closes > 0;
}

static int
until_errors(void *arg)
{
	return ((struct chan *)arg)->f.errors > 0;
}

static int
until_connects(void *arg)
{
	return ((struct chan *)arg)->f.connects > 0;
}

static int
until_gone(void *arg)
{
	return ((struct chan *)arg)->gone;
}

static int
until_peer_len(void *arg)
{
	struct chan *c = arg;

	return evbuffer_get_length(c->p.got) >= c->want;
}

static int
until_peer_eof(void *arg)
{
	struct chan *c = arg;

	return c->p.eof || c->p.err;
}

static void
run(struct chan *c, int (*cond)(void *))
{
	ck_assert_msg(tu_run_until(c->base, cond, c, WAIT_MS) == 0,
	    "timed out: %d collects, %d founds, %d closes, %d errors, "
	    "%zu bytes in the frame",
	    c->f.collects, c->f.founds, c->f.closes, c->f.errors,
	    evbuffer_get_length(c->f.cur));
}

static void
settle(struct event_base *base)
{
	tu_run_until(base, NULL, NULL, SETTLE_MS);
}

static struct event_base *
new_base(void)
{
	struct event_base *base = event_base_new();

	ck_assert_ptr_nonnull(base);
	return base;
}

/*
 * Loopback TCP
 */

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sin;
}

static int
listener_port(struct async_chat_listener *l)
{
	struct sockaddr_in sin;
	int len = (int)sizeof(sin);

	ck_assert_int_eq(
	    async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len),
	    0);
	ck_assert_int_eq(len, (int)sizeof(sin));
	ck_assert_int_eq(sin.sin_family, AF_INET);
	return ntohs(sin.sin_port);
}

/* A blocking connect: over loopback it completes in the listener's
 * backlog whether or not the loop has accepted yet. */
static evutil_socket_t
tcp_client(int port)
{
	struct sockaddr_in sin = loopback(port);
	evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Accepts into a struct chan: the accepted socket becomes its channel. */
static void
accept_into_chan(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct chan *c = arg;

	(void)l;
	ck_assert_ptr_nonnull(addr);
	ck_assert_int_eq(addrlen, (int)sizeof(struct sockaddr_in));
	ck_assert_ptr_null(c->chat);
	c->chat = async_chat_new(c->base, fd, &c->h, c);
	ck_assert_ptr_nonnull(c->chat);
}

static struct async_chat_listener *
listen_loopback(struct event_base *base, async_chat_accept_fn fn, void *arg)
{
	struct sockaddr_in sin = loopback(0);
	struct async_chat_listener *l;

	l = async_chat_listener_new(
	    base, (struct sockaddr *)&sin, (int)sizeof(sin), -1, fn, arg);
	ck_assert_ptr_nonnull(l);
	return l;
}

static int
until_chat(void *arg)
{
	return ((struct chan *)arg)->chat != NULL;
}

/*
 * Framing over a socket: collect mode and message mode
 */

START_TEST(test_collect_mode)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	peer_sends(&c.p, "hello\r\nworld\r\npart");
	c.want = 2;
	run(&c, until_founds);
	c.want = 4;
	run(&c, until_collected);
	ck_assert(tu_frame_is(&c.f, 0, "hello"));
	ck_assert(tu_frame_is(&c.f, 1, "world"));
	ck_assert(tu_cur_eq(&c.f, "part", 4));
	/* A terminator split across writes is still found. */
	peer_sends(&c.p, "ial\r");
	c.want = 7;
	run(&c, until_collected);
	peer_sends(&c.p, "\n");
	c.want = 3;
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 2, "partial"));
	ck_assert_int_eq(c.f.errors, 0);
	ck_assert_int_eq(c.f.closes, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* Message mode: found_terminator takes the frame from the incoming buffer;
 * what it leaves stays there and the next frame is appended to it. */
static void
msg_found(struct async_chat *chat, void *arg)
{
	struct chan *c = chan_of(chat, arg);
	struct evbuffer *in = async_chat_incoming(chat);
	char buf[64];
	size_t len;

	ck_assert_ptr_nonnull(in);
	c->f.founds++;
	len = evbuffer_get_length(in);
	ck_assert_uint_lt(len, sizeof(buf));
	evbuffer_copyout(in, buf, len);
	buf[len] = '\0';
	switch (c->f.founds) {
	case 1:
		ck_assert_str_eq(buf, "abc");
		break; /* leave it */
	case 2:
		ck_assert_str_eq(buf, "abcdef");
		evbuffer_drain(in, 3); /* take "abc", keep "def" */
		break;
	case 3:
		ck_assert_str_eq(buf, "defghi");
		evbuffer_drain(in, len);
		break;
	default:
		ck_abort_msg("unexpected frame %s", buf);
	}
}

START_TEST(test_message_mode)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.h.collect_incoming_data = NULL;
	c.h.found_terminator = msg_found;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_sends(&c.p, "abc\n");
	c.want = 1;
	run(&c, until_founds);
	peer_sends(&c.p, "def\r\nghi\n");
	c.want = 3;
	run(&c, until_founds);
	ck_assert_uint_eq(evbuffer_get_length(async_chat_incoming(c.chat)), 0);
	/* Bytes of an unfinished frame wait in the incoming buffer. */
	peer_sends(&c.p, "jk");
	c.want = 2;
	run(&c, until_incoming);
	ck_assert(buf_is_str(async_chat_incoming(c.chat), "jk"));
	ck_assert_int_eq(c.f.founds, 3);
	ck_assert_int_eq(c.f.collects, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/*
 * EOF
 */

/* The bytes held back as a possible "\r\n" prefix reach collect before
 * handle_close runs. */
START_TEST(test_eof_held_back_collect)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n\r\n", 4), 0);
	peer_sends(&c.p, "one\r\n\r\ntwo\r\n\r");
	c.want = 1;
	run(&c, until_founds);
	c.want = 3;
	run(&c, until_collected);
	/* "\r\n\r" may begin a terminator: the channel holds it back. */
	ck_assert(tu_cur_eq(&c.f, "two", 3));
	peer_shut(&c.p);
	run(&c, until_closes);
	ck_assert(buf_is_str(c.at_close, "two\r\n\r"));
	ck_assert(tu_frame_is(&c.f, 0, "one"));
	ck_assert_int_eq(c.f.founds, 1);
	ck_assert_int_eq(c.f.closes, 1);
	ck_assert_int_eq(c.f.errors, 0);
	/* handle_close is set: the channel stays open until closed. */
	settle(base);
	ck_assert_int_eq(c.gone, 0);
	ck_assert_int_eq(c.f.closes, 1);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

START_TEST(test_eof_held_back_message)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.h.collect_incoming_data = NULL;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "END", 3), 0);
	peer_sends(&c.p, "oneENDtwoEN");
	peer_shut(&c.p);
	run(&c, until_closes);
	ck_assert(tu_frame_is(&c.f, 0, "one"));
	ck_assert(buf_is_str(c.at_close, "twoEN"));
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* handle_close NULL: queued output is flushed, then the channel closes. */
static void
push_big_on_found(struct chan *c, enum cb which)
{
	static char big[1 << 20];

	if (which != CB_FOUND)
		return;
	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(async_chat_push(c->chat, big, sizeof(big)), 0);
	/* More than a socket buffer holds: some of it is still queued when
	 * the peer's EOF is handled. */
	ck_assert_uint_gt(async_chat_output_pending(c->chat), 0);
}

START_TEST(test_eof_default_flushes_then_closes)
{
	struct event_base *base = new_base();
	struct chan c;
	size_t len;
	const char *got;

	chan_init(&c, base);
	c.h.handle_close = NULL;
	c.hook = push_big_on_found;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_sends(&c.p, "go\n");
	peer_shut(&c.p);
	run(&c, until_gone);
	ck_assert_int_eq(c.f.frees, 1);
	run(&c, until_peer_eof);
	ck_assert_int_eq(c.p.err, 0);
	len = evbuffer_get_length(c.p.got);
	ck_assert_uint_eq(len, 1 << 20);
	got = (const char *)evbuffer_pullup(c.p.got, -1);
	ck_assert(all_bytes(got, len, 'z'));
	ck_assert_int_eq(c.f.errors, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* With a handle_close the channel can still send to a half-closed peer,
 * inside handle_close and after it. */
static void
reply_on_close(struct chan *c, enum cb which)
{
	if (which == CB_CLOSE)
		ck_assert_int_eq(async_chat_push(c->chat, "bye\n", 4), 0);
}

START_TEST(test_half_closed_peer)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = reply_on_close;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_sends(&c.p, "hi\n");
	peer_shut(&c.p);
	run(&c, until_closes);
	c.want = 4;
	run(&c, until_peer_len);
	ck_assert(peer_got(&c.p, "bye\n"));
	/* Outside any callback, later. */
	ck_assert_int_eq(async_chat_push(c.chat, "later\n", 6), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(c.chat), 0);
	run(&c, until_peer_eof);
	ck_assert(peer_got(&c.p, "bye\nlater\n"));
	ck_assert_int_eq(c.p.err, 0);
	ck_assert_int_eq(c.f.closes, 1);
	ck_assert_int_eq(c.f.errors, 0);
	ck_assert_int_eq(c.gone, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/*
 * Errors
 */

/* A TCP channel accepted from a listener, its client as the peer. */
static struct async_chat_listener *
tcp_chan(struct chan *c)
{
	struct async_chat_listener *l =
	    listen_loopback(c->base, accept_into_chan, c);

	peer_start(&c->p, c->base, tcp_client(listener_port(l)));
	run(c, until_chat);
	return l;
}

static void
reset_mid_frame(int with_handler)
{
	struct event_base *base = new_base();
	struct async_chat_listener *l;
	struct chan c;

	chan_init(&c, base);
	if (!with_handler)
		c.h.handle_error = NULL;
	l = tcp_chan(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	peer_sends(&c.p, "line1\r\npartial\r");
	c.want = 1;
	run(&c, until_founds);
	c.want = 7;
	run(&c, until_collected);
	ck_assert(tu_cur_eq(&c.f, "partial", 7));
	peer_reset(&c.p);
	if (with_handler) {
		run(&c, until_errors);
		ck_assert_msg(
		    c.f.last_error == ECONNRESET || c.f.last_error == EPIPE,
		    "error %d (%s)", c.f.last_error,
		    async_chat_strerror(c.f.last_error));
		/* What was received before the reset is intact, the
		 * held-back "\r" included. */
		ck_assert(buf_is_str(c.at_error, "partial\r"));
		ck_assert_int_eq(c.f.errors, 1);
		ck_assert_int_eq(async_chat_connected(c.chat), 0);
		ck_assert_int_eq(c.gone, 0);
	} else {
		/* handle_error NULL: the channel closes itself. */
		run(&c, until_gone);
		ck_assert_int_eq(c.f.errors, 0);
		ck_assert(tu_cur_eq(&c.f, "partial\r", 8));
	}
	ck_assert(tu_frame_is(&c.f, 0, "line1"));
	ck_assert_int_eq(c.f.founds, 1);
	ck_assert_int_eq(c.f.closes, 0);
	chan_end(&c);
	async_chat_listener_free(l);
	event_base_free(base);
}

START_TEST(test_reset_mid_frame)
{
	reset_mid_frame(1);
}
END_TEST

START_TEST(test_reset_default_closes)
{
	reset_mid_frame(0);
}
END_TEST

/* A bound TCP socket that does not listen: connecting to it is refused,
 * and the port stays reserved while it is open. */
static evutil_socket_t
refusing_port(int *port)
{
	struct sockaddr_in sin = loopback(0);
	socklen_t len = sizeof(sin);
	evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

START_TEST(test_connect_refused)
{
	struct event_base *base = new_base();
	struct chan c;
	struct sockaddr_in sin;
	evutil_socket_t blocker;
	int port;

	chan_init(&c, base);
	blocker = refusing_port(&port);
	sin = loopback(port);
	c.chat = async_chat_new(base, -1, &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	ck_assert_int_eq(async_chat_get_fd(c.chat), -1);
	ck_assert_int_eq(async_chat_connect(
	                     c.chat, (struct sockaddr *)&sin, (int)sizeof(sin)),
	    0);
	run(&c, until_errors);
	ck_assert_msg(c.f.last_error == ECONNREFUSED, "error %d (%s)",
	    c.f.last_error, async_chat_strerror(c.f.last_error));
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	ck_assert_int_eq(async_chat_dns_error(c.chat), 0);
	chan_end(&c);
	evutil_closesocket(blocker);
	event_base_free(base);
}
END_TEST

/* An echo server channel: each line comes back. */
static void
echo_line(struct chan *c, enum cb which)
{
	const char *line;

	if (which != CB_FOUND)
		return;
	line = c->f.frame[c->f.n - 1];
	ck_assert_int_eq(async_chat_push(c->chat, line, strlen(line)), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "\n", 1), 0);
}

static void
ping_on_connect(struct chan *c, enum cb which)
{
	if (which != CB_CONNECT)
		return;
	ck_assert_int_eq(async_chat_connected(c->chat), 1);
	ck_assert_int_ge(async_chat_get_fd(c->chat), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "ping\n", 5), 0);
}

START_TEST(test_connect_hostname_localhost)
{
	struct event_base *base = new_base();
	struct async_chat_listener *l;
	struct chan srv, cli;
	int port;

	chan_init(&srv, base);
	srv.hook = echo_line;
	l = listen_loopback(base, accept_into_chan, &srv);
	port = listener_port(l);

	chan_init(&cli, base);
	cli.hook = ping_on_connect;
	cli.chat = async_chat_new(base, -1, &cli.h, &cli);
	ck_assert_ptr_nonnull(cli.chat);
	ck_assert_int_eq(async_chat_set_terminator_line(cli.chat), 0);
	/* Pushed before the connection is made: sent once it is. */
	ck_assert_int_eq(async_chat_push(cli.chat, "early\n", 6), 0);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     cli.chat, NULL, AF_INET, "localhost", port),
	    0);
	/* One connect at a time: a second while the first is under way. */
	errno = 0;
	ck_assert_int_eq(async_chat_connect_hostname(
	                     cli.chat, NULL, AF_INET, "localhost", port),
	    -1);
	ck_assert_int_eq(errno, EALREADY);
	run(&cli, until_connects);
	run(&srv, until_chat);
	ck_assert_int_eq(async_chat_set_terminator_line(srv.chat), 0);
	cli.want = 2;
	run(&cli, until_founds);
	ck_assert(tu_frame_is(&cli.f, 0, "early"));
	ck_assert(tu_frame_is(&cli.f, 1, "ping"));
	ck_assert_int_eq(cli.f.connects, 1);
	ck_assert_int_eq(cli.f.errors, 0);
	ck_assert_int_eq(async_chat_connected(cli.chat), 1);
	ck_assert_int_eq(async_chat_dns_error(cli.chat), 0);
	/* A connected channel cannot connect again. */
	errno = 0;
	ck_assert_int_eq(async_chat_connect_hostname(
	                     cli.chat, NULL, AF_INET, "localhost", port),
	    -1);
	ck_assert_int_eq(errno, EISCONN);
	chan_end(&cli);
	chan_end(&srv);
	async_chat_listener_free(l);
	event_base_free(base);
}
END_TEST

/* A nameserver on loopback that answers every query with NXDOMAIN, so
 * that a lookup fails without anything leaving the machine.  (An
 * evdns_base with no nameserver at all never answers: libevent keeps the
 * request waiting for a nameserver to be added.) */
static void
nxdomain_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char msg[512];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	ssize_t n;

	(void)what;
	(void)arg;
	while ((n = recvfrom(fd, msg, sizeof(msg), 0, (struct sockaddr *)&from,
	            &fromlen)) >= 12) {
		msg[2] |= 0x80;        /* QR: a response */
		msg[3] = 0x80 | 3;     /* RA, RCODE NXDOMAIN */
		memset(msg + 6, 0, 6); /* no records */
		ck_assert_int_eq(sendto(fd, msg, (size_t)n, 0,
		                     (struct sockaddr *)&from, fromlen),
		    n);
		fromlen = sizeof(from);
	}
}

START_TEST(test_connect_dns_failure)
{
	struct event_base *base = new_base();
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct sockaddr_in sin = loopback(0);
	socklen_t slen = sizeof(sin);
	struct event *ns_ev;
	evutil_socket_t ns;
	char addr[64];
	struct chan c;

	ck_assert_ptr_nonnull(dns);
	ns = socket(AF_INET, SOCK_DGRAM, 0);
	ck_assert_int_ge(ns, 0);
	ck_assert_int_eq(bind(ns, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(ns, (struct sockaddr *)&sin, &slen), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(ns), 0);
	ns_ev = event_new(base, ns, EV_READ | EV_PERSIST, nxdomain_cb, NULL);
	ck_assert_ptr_nonnull(ns_ev);
	ck_assert_int_eq(event_add(ns_ev, NULL), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sin.sin_port));
	ck_assert_int_eq(evdns_base_nameserver_ip_add(dns, addr), 0);

	chan_init(&c, base);
	c.chat = async_chat_new(base, -1, &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     c.chat, dns, AF_INET, "no-such-host.invalid", 80),
	    0);
	run(&c, until_errors);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_DNS);
	ck_assert_int_ne(async_chat_dns_error(c.chat), 0);
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	chan_end(&c);
	evdns_base_free(dns, 0);
	event_free(ns_ev);
	evutil_closesocket(ns);
	event_base_free(base);
}
END_TEST

/* Keeps the accepted socket in *arg. */
static void
acc_keep(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	evutil_socket_t *kept = arg;

	(void)l;
	(void)addr;
	(void)addrlen;
	ck_assert_int_lt(*kept, 0);
	*kept = fd;
}

/* Closing a channel while its name is being resolved: the lookup is
 * abandoned, no callback runs, and nothing leaks. */
START_TEST(test_close_while_resolving)
{
	struct event_base *base = new_base();
	/* No nameserver: the request waits until the evdns_base goes. */
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct chan c;

	ck_assert_ptr_nonnull(dns);
	chan_init(&c, base);
	c.chat = async_chat_new(base, -1, &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     c.chat, dns, AF_INET, "pending.invalid", 80),
	    0);
	settle(base);
	ck_assert_int_eq(c.f.errors + c.f.connects, 0);
	async_chat_close(c.chat);
	ck_assert_int_eq(c.f.frees, 1);
	settle(base);
	evdns_base_free(dns, 1);
	settle(base);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

START_TEST(test_connect_bad_args)
{
	struct event_base *base = new_base();
	struct async_chat_listener *l;
	evutil_socket_t kept = -1;
	struct chan c, d;
	struct sockaddr_in sin = loopback(9);

	chan_init(&c, base);
	c.chat = async_chat_new(base, -1, &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	EXPECT_ERRNO(
	    async_chat_connect(NULL, (struct sockaddr *)&sin, (int)sizeof(sin)),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect(c.chat, NULL, (int)sizeof(sin)), EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect(c.chat, (struct sockaddr *)&sin, 0), EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect(c.chat, (struct sockaddr *)&sin, -1), EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(NULL, NULL, AF_INET, "localhost", 80),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_INET, NULL, 80),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_INET, "localhost", 0),
	    EINVAL);
	EXPECT_ERRNO(async_chat_connect_hostname(
	                 c.chat, NULL, AF_INET, "localhost", 65536),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_UNIX, "localhost", 80),
	    EINVAL);
	ck_assert_int_eq(async_chat_dns_error(NULL), 0);
	/* An address too short for its family: connect(2) refuses it. */
	errno = 0;
	ck_assert_int_eq(
	    async_chat_connect(c.chat, (struct sockaddr *)&sin, 2), -1);
	ck_assert_int_ne(errno, 0);
	/* Nothing was started: no callback runs. */
	settle(base);
	ck_assert_int_eq(c.f.errors + c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	/* The failed call left the channel able to connect. */
	l = listen_loopback(base, acc_keep, &kept);
	sin = loopback(listener_port(l));
	ck_assert_int_eq(async_chat_connect(
	                     c.chat, (struct sockaddr *)&sin, (int)sizeof(sin)),
	    0);
	run(&c, until_connects);
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	settle(base);
	ck_assert_int_eq(c.f.connects, 1);
	ck_assert_int_eq(c.f.errors, 0);
	chan_end(&c);
	async_chat_listener_free(l);
	if (kept >= 0)
		evutil_closesocket(kept);

	/* A connected channel (a socket pair) cannot connect. */
	chan_init(&d, base);
	chan_socketpair(&d);
	ck_assert_int_eq(async_chat_connected(d.chat), 1);
	EXPECT_ERRNO(async_chat_connect(
	                 d.chat, (struct sockaddr *)&sin, (int)sizeof(sin)),
	    EISCONN);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(d.chat, NULL, AF_INET, "localhost", 80),
	    EISCONN);
	settle(base);
	ck_assert_int_eq(d.f.errors, 0);
	chan_end(&d);
	event_base_free(base);
}
END_TEST

/*
 * Re-entrancy: from inside each callback, each call.
 */

enum op {
	OP_CLOSE,
	OP_CLOSE_WHEN_DONE,
	OP_DISCARD,
	OP_TERM_STRING,
	OP_TERM_COUNT,
	OP_TERM_NONE,
	OP_TERM_LINE,
	OP_PUSH,
	OP_PAUSE_RESUME,
	OP_N
};

static const char *const cb_names[CB_N] = {
    "collect", "found", "connect", "close", "error", "drain"};
static const char *const op_names[OP_N] = {"close", "close_when_done",
    "discard", "term_string", "term_count", "term_none", "term_line", "push",
    "pause_resume"};

static int
dummy_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	(void)ctx;
	(void)out;
	(void)size_hint;
	return 0;
}

static const struct async_chat_producer_ops dummy_ops = {dummy_more, NULL};

/* Every call on a closed channel still on the callback stack fails with
 * ENOTCONN (or reports "nothing"), and nothing runs a callback. */
static void
check_closed(struct chan *c)
{
	struct async_chat *chat = c->chat;
	struct async_chat_terminator t;
	struct sockaddr_in sin = loopback(9);
	const void *terms[1] = {"x"};
	size_t lens[1] = {1};
	struct evbuffer *b = evbuffer_new();
	char path[] = "/tmp/check_channel.XXXXXX";
	int fd = mkstemp(path); /* a regular file: push_file's only kind */

	ck_assert_ptr_nonnull(b);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(write(fd, "x", 1), 1);
	evbuffer_add(b, "x", 1);
	EXPECT_ERRNO(async_chat_push(chat, "x", 1), ENOTCONN);
	EXPECT_ERRNO(async_chat_push_buffer(chat, b), ENOTCONN);
	ck_assert_uint_eq(evbuffer_get_length(b), 1);
	EXPECT_ERRNO(
	    async_chat_push_reference(chat, "x", 1, NULL, NULL), ENOTCONN);
	EXPECT_ERRNO(async_chat_push_file(chat, fd, 0, -1), ENOTCONN);
	EXPECT_ERRNO(
	    async_chat_push_with_producer(chat, &dummy_ops, NULL), ENOTCONN);
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
	EXPECT_ERRNO(
	    async_chat_connect(chat, (struct sockaddr *)&sin, (int)sizeof(sin)),
	    ENOTCONN);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(chat, NULL, AF_INET, "localhost", 9),
	    ENOTCONN);
	errno = 0;
	ck_assert_ptr_null(async_chat_incoming(chat));
	ck_assert_int_eq(errno, ENOTCONN);
	ck_assert_int_eq(async_chat_get_fd(chat), -1);
	ck_assert_ptr_null(async_chat_get_bufferevent(chat));
	ck_assert_int_eq(async_chat_connected(chat), 0);
	ck_assert_uint_eq(async_chat_output_pending(chat), 0);
	async_chat_close(chat); /* already closed: ignored */
	ck_assert_int_eq(c->f.frees, 1);
	evbuffer_free(b);
}

static void
do_op(struct chan *c, enum cb which)
{
	struct async_chat *chat = c->chat;

	c->done = 1;
	switch ((enum op)c->op) {
	case OP_CLOSE:
		async_chat_close(chat);
		/* handle_free ran inside close, and only it. */
		ck_assert_int_eq(c->f.frees, 1);
		check_closed(c);
		break;
	case OP_CLOSE_WHEN_DONE:
		ck_assert_int_eq(async_chat_close_when_done(chat), 0);
		ck_assert_int_eq(c->gone, 0);
		EXPECT_ERRNO(async_chat_push(chat, "x", 1), EPIPE);
		break;
	case OP_DISCARD:
		ck_assert_int_eq(async_chat_discard_buffers(chat), 0);
		break;
	case OP_TERM_STRING:
		ck_assert_int_eq(async_chat_set_terminator(chat, "\r\n", 2), 0);
		break;
	case OP_TERM_COUNT:
		ck_assert_int_eq(async_chat_set_terminator_count(chat, 3), 0);
		break;
	case OP_TERM_NONE:
		ck_assert_int_eq(async_chat_set_terminator_none(chat), 0);
		break;
	case OP_TERM_LINE:
		ck_assert_int_eq(async_chat_set_terminator_line(chat), 0);
		break;
	case OP_PUSH:
		ck_assert_int_eq(async_chat_push(chat, "X", 1), 0);
		c->want++;
		break;
	case OP_PAUSE_RESUME:
		ck_assert_int_eq(async_chat_pause_reading(chat), 0);
		ck_assert_int_eq(async_chat_reading_paused(chat), 1);
		if (which == CB_CLOSE) {
			/* The peer's EOF is being handled: nothing more
			 * can be read. */
			EXPECT_ERRNO(async_chat_resume_reading(chat), EPIPE);
		} else {
			ck_assert_int_eq(async_chat_resume_reading(chat), 0);
			ck_assert_int_eq(async_chat_reading_paused(chat), 0);
		}
		break;
	case OP_N:
		break;
	}
}

static void
matrix_hook(struct chan *c, enum cb which)
{
	if ((int)which == c->where && !c->done && !c->gone)
		do_op(c, which);
}

static int
matrix_settled(void *arg)
{
	struct chan *c = arg;

	if (!c->done)
		return 0;
	if (c->gone)
		return 1;
	if (c->op == OP_CLOSE_WHEN_DONE)
		return 0;
	if (evbuffer_get_length(c->p.got) < c->want)
		return 0;
	if (c->where == CB_ERROR)
		return 1;
	return c->f.closes > 0;
}

/* The connect case: the listener's accepted socket is the peer, and it
 * sends the script at once. */
static void
accept_as_peer(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct chan *c = arg;

	(void)l;
	(void)addr;
	(void)addrlen;
	ck_assert_int_lt(c->p.fd, 0);
	peer_start(&c->p, c->base, fd);
	peer_sends(&c->p, "abc\ndef\n");
	peer_shut(&c->p);
}

START_TEST(test_reentrancy)
{
	struct event_base *base = new_base();
	struct async_chat_listener *l = NULL;
	struct chan c;
	int where = _i / OP_N, op = _i % OP_N;

	chan_init(&c, base);
	c.hook = matrix_hook;
	c.where = where;
	c.op = op;
	if (where == CB_CONNECT) {
		struct sockaddr_in sin;

		l = listen_loopback(base, accept_as_peer, &c);
		sin = loopback(listener_port(l));
		c.chat = async_chat_new(base, -1, &c.h, &c);
		ck_assert_ptr_nonnull(c.chat);
		ck_assert_int_eq(async_chat_connect(c.chat,
		                     (struct sockaddr *)&sin, (int)sizeof(sin)),
		    0);
	} else {
		chan_socketpair(&c);
	}
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	if (where == CB_ERROR)
		ck_assert_int_eq(async_chat_set_max_frame(c.chat, 2), 0);
	if (where == CB_DRAIN) {
		ck_assert_int_eq(async_chat_push(c.chat, "hello", 5), 0);
		c.want = 5;
	}
	if (where != CB_CONNECT) {
		peer_sends(&c.p, "abc\ndef\n");
		peer_shut(&c.p);
	}
	ck_assert_msg(tu_run_until(base, matrix_settled, &c, WAIT_MS) == 0,
	    "%s in %s did not settle", op_names[op], cb_names[where]);
	/* Give a callback that should not run the chance to. */
	settle(base);
	ck_assert_int_eq(c.late, 0);
	if (op == OP_CLOSE || op == OP_CLOSE_WHEN_DONE)
		ck_assert_int_eq(c.gone, 1);
	if (op == OP_PUSH) {
		struct evbuffer_ptr at = evbuffer_search(c.p.got, "X", 1, NULL);

		ck_assert_int_ge(at.pos, 0);
	}
	if (where == CB_ERROR) {
		ck_assert_int_ge(c.f.errors, 1);
		ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	} else {
		ck_assert_int_eq(c.f.errors, 0);
	}
	/* Calls that change nothing about framing leave the frames alone. */
	if (where != CB_ERROR &&
	    (op == OP_PUSH || op == OP_PAUSE_RESUME || op == OP_TERM_LINE ||
	        where == CB_CLOSE) &&
	    op != OP_CLOSE) {
		ck_assert_int_eq(c.f.founds, 2);
		ck_assert(tu_frame_is(&c.f, 0, "abc"));
		ck_assert(tu_frame_is(&c.f, 1, "def"));
	}
	chan_end(&c);
	async_chat_listener_free(l);
	event_base_free(base);
}
END_TEST

/* A terminator set in found_terminator applies to the rest of the same
 * read: HTTP headers, a Content-Length body, headers again. */
static void
http_found(struct chan *c, enum cb which)
{
	const char *frame, *cl;

	if (which != CB_FOUND)
		return;
	frame = c->f.frame[c->f.n - 1];
	if (c->state == 0) {
		cl = strstr(frame, "Content-Length: ");
		if (cl == NULL)
			return; /* no body: the next headers follow */
		ck_assert_int_eq(async_chat_set_terminator_count(
		                     c->chat, strtoull(cl + 16, NULL, 10)),
		    0);
		c->state = 1;
	} else {
		ck_assert_int_eq(
		    async_chat_set_terminator(c->chat, "\r\n\r\n", 4), 0);
		c->state = 0;
	}
}

START_TEST(test_terminator_change_same_read)
{
	static const char req[] =
	    "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
	    "hello"
	    "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
	    "xyz"
	    "GET /c HTTP/1.1\r\n\r\n";
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = http_found;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n\r\n", 4), 0);
	peer_send(&c.p, req, sizeof(req) - 1);
	c.want = 5;
	run(&c, until_founds);
	ck_assert(
	    tu_frame_is(&c.f, 0, "POST /a HTTP/1.1\r\nContent-Length: 5"));
	ck_assert(tu_frame_is(&c.f, 1, "hello"));
	ck_assert(
	    tu_frame_is(&c.f, 2, "POST /b HTTP/1.1\r\nContent-Length: 3"));
	ck_assert(tu_frame_is(&c.f, 3, "xyz"));
	ck_assert(tu_frame_is(&c.f, 4, "GET /c HTTP/1.1"));
	ck_assert_uint_eq(evbuffer_get_length(c.f.cur), 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/*
 * discard_buffers inside collect
 */

static void
discard_on_first_collect(struct chan *c, enum cb which)
{
	if (which != CB_COLLECT || c->done)
		return;
	c->done = 1;
	ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
	/* The application drops its own copy of the frame too. */
	evbuffer_drain(c->f.cur, evbuffer_get_length(c->f.cur));
}

/* Send pieces to the partner as one evbuffer of separate chains, so the
 * channel receives them in one transfer but collects them one by one. */
static void
pair_send_chains(
    struct bufferevent *partner, const char *const *pieces, size_t n)
{
	struct evbuffer *tmp = evbuffer_new();
	size_t i;

	ck_assert_ptr_nonnull(tmp);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(evbuffer_add_reference(tmp, pieces[i],
		                     strlen(pieces[i]), NULL, NULL),
		    0);
	ck_assert_int_eq(bufferevent_write_buffer(partner, tmp), 0);
	evbuffer_free(tmp);
}

START_TEST(test_discard_in_collect)
{
	static const char *const first[] = {"abc", "def\nnext\n"};
	static const char *const second[] = {"after\n"};
	struct event_base *base = new_base();
	struct bufferevent *pair[2];
	struct chan c;

	chan_init(&c, base);
	c.hook = discard_on_first_collect;
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	c.chat = async_chat_new_bufferevent(pair[0], &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	pair_send_chains(pair[1], first, 2);
	c.want = 1;
	ck_assert_int_eq(tu_run_until(base, until_founds, &c, SETTLE_MS), -1);
	/* "def", its "\n" and the rest of the input are gone; the frame
	 * never ended. */
	ck_assert_int_eq(c.done, 1);
	ck_assert_int_eq(c.f.collects, 1);
	ck_assert_int_eq(c.f.founds, 0);
	ck_assert_uint_eq(input_len(&c), 0);
	/* Later input frames normally. */
	pair_send_chains(pair[1], second, 1);
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "after"));
	ck_assert_int_eq(c.f.founds, 1);
	chan_end(&c);
	bufferevent_free(pair[1]);
	event_base_free(base);
}
END_TEST

/* Discarding while the held-back bytes are collected at EOF still lets
 * the EOF be handled. */
static void
discard_on_second_collect(struct chan *c, enum cb which)
{
	if (which == CB_COLLECT && c->f.collects == 2 && !c->done) {
		c->done = 1;
		ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
	}
}

START_TEST(test_discard_in_collect_at_eof)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = discard_on_second_collect;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	peer_sends(&c.p, "abc\r");
	c.want = 3;
	run(&c, until_collected);
	ck_assert_int_eq(c.f.collects, 1);
	peer_shut(&c.p);
	run(&c, until_closes);
	ck_assert_int_eq(c.done, 1);
	ck_assert_int_eq(c.f.closes, 1);
	ck_assert_int_eq(c.f.founds, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/*
 * Pause and resume
 */

static void
pause_on_first_found(struct chan *c, enum cb which)
{
	if (which != CB_FOUND || c->done)
		return;
	c->done = 1;
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
}

START_TEST(test_pause_buffered)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = pause_on_first_found;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_sends(&c.p, "a\nb\nc\n");
	c.want = 1;
	run(&c, until_founds);
	/* One read took all of it: "b\nc\n" waits in the input buffer. */
	ck_assert_uint_eq(input_len(&c), 4);
	settle(base);
	ck_assert_int_eq(c.f.founds, 1);
	ck_assert_int_eq(c.f.collects, 1);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	/* Pausing twice is harmless. */
	ck_assert_int_eq(async_chat_pause_reading(c.chat), 0);
	/* Resume frames what is buffered with no new data arriving. */
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 0);
	c.want = 3;
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 1, "b"));
	ck_assert(tu_frame_is(&c.f, 2, "c"));
	/* Resuming a channel that is not paused is harmless. */
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* Paused in the middle of a frame: the rest of it, already received,
 * waits; resume finishes the frame where it stopped. */
static void
pause_on_first_collect(struct chan *c, enum cb which)
{
	if (which != CB_COLLECT || c->done)
		return;
	c->done = 1;
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
}

START_TEST(test_pause_in_collect)
{
	static const char *const pieces[] = {"abc", "def\nghi\n"};
	struct event_base *base = new_base();
	struct bufferevent *pair[2];
	struct chan c;

	chan_init(&c, base);
	c.hook = pause_on_first_collect;
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	c.chat = async_chat_new_bufferevent(pair[0], &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	pair_send_chains(pair[1], pieces, 2);
	settle(base);
	ck_assert_int_eq(c.f.collects, 1);
	ck_assert_int_eq(c.f.founds, 0);
	ck_assert_uint_eq(input_len(&c), 8);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	c.want = 2;
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "abcdef"));
	ck_assert(tu_frame_is(&c.f, 1, "ghi"));
	chan_end(&c);
	bufferevent_free(pair[1]);
	event_base_free(base);
}
END_TEST

/* Paused by collect while the held-back bytes are handed over at EOF:
 * handle_close waits for resume. */
static void
pause_on_second_collect(struct chan *c, enum cb which)
{
	if (which == CB_COLLECT && c->f.collects == 2 && !c->done) {
		c->done = 1;
		ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	}
}

START_TEST(test_pause_in_collect_at_eof)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = pause_on_second_collect;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	peer_sends(&c.p, "abc\r");
	c.want = 3;
	run(&c, until_collected);
	peer_shut(&c.p);
	c.want = 4;
	run(&c, until_collected);
	settle(base);
	ck_assert_int_eq(c.done, 1);
	ck_assert_int_eq(c.f.closes, 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	run(&c, until_closes);
	ck_assert(buf_is_str(c.at_close, "abc\r"));
	ck_assert_int_eq(c.f.collects, 2);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* Paused before anything arrives; the peer sends and closes meanwhile. */
START_TEST(test_pause_eof_socket)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	ck_assert_int_eq(async_chat_pause_reading(c.chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	peer_sends(&c.p, "a\r\nb\r");
	peer_shut(&c.p);
	settle(base);
	ck_assert_int_eq(c.f.collects, 0);
	ck_assert_int_eq(c.f.closes, 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	run(&c, until_closes);
	ck_assert(tu_frame_is(&c.f, 0, "a"));
	ck_assert(buf_is_str(c.at_close, "b\r"));
	errno = 0;
	ck_assert_int_eq(async_chat_resume_reading(c.chat), -1);
	ck_assert_int_eq(errno, EPIPE);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* On a bufferevent pair the EOF event itself arrives while the channel is
 * paused: it is handled after resume, held-back bytes first. */
START_TEST(test_pause_eof_pair)
{
	struct event_base *base = new_base();
	struct bufferevent *pair[2];
	struct chan c;

	chan_init(&c, base);
	c.hook = pause_on_first_found;
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	c.chat = async_chat_new_bufferevent(pair[0], &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_get_fd(c.chat), -1);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	ck_assert_int_eq(bufferevent_write(pair[1], "a\r\nb\r\nc\r", 8), 0);
	ck_assert_int_eq(bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED), 0);
	c.want = 1;
	run(&c, until_founds);
	settle(base);
	ck_assert_int_eq(c.f.founds, 1);
	ck_assert_int_eq(c.f.closes, 0);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	run(&c, until_closes);
	ck_assert(tu_frame_is(&c.f, 1, "b"));
	ck_assert(buf_is_str(c.at_close, "c\r"));
	ck_assert_int_eq(c.f.founds, 2);
	errno = 0;
	ck_assert_int_eq(async_chat_resume_reading(c.chat), -1);
	ck_assert_int_eq(errno, EPIPE);
	chan_end(&c);
	bufferevent_free(pair[1]);
	event_base_free(base);
}
END_TEST

/*
 * The frame bound
 */

#define FLOOD_LEN ((size_t)4 << 20)
#define FLOOD_BOUND 100

struct flood {
	struct chan *c;
	struct event *ev;
	size_t sent;
	int done;
	int blocked; /* the last send found the socket full */
};

static void
flood_writecb(evutil_socket_t fd, short what, void *arg)
{
	static char xs[65536];
	struct flood *fl = arg;
	ssize_t n;

	(void)what;
	memset(xs, 'x', sizeof(xs));
	while (fl->sent < FLOOD_LEN) {
		size_t want = FLOOD_LEN - fl->sent;

		if (want > sizeof(xs))
			want = sizeof(xs);
		n = send(fd, xs, want, MSG_NOSIGNAL);
		if (n < 0) {
			ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
			fl->blocked = 1;
			return;
		}
		fl->blocked = 0;
		fl->sent += (size_t)n;
	}
	n = send(fd, "\n", 1, MSG_NOSIGNAL);
	if (n == 1) {
		fl->done = 1;
		event_del(fl->ev);
	}
}

static int
until_flood_blocked(void *arg)
{
	struct flood *fl = arg;

	return fl->c->f.errors > 0 && fl->blocked;
}

START_TEST(test_frame_bound_flood)
{
	struct event_base *base = new_base();
	struct chan c;
	struct flood fl;
	size_t sent, buffered;

	chan_init(&c, base);
	chan_socketpair(&c);
	memset(&fl, 0, sizeof(fl));
	fl.c = &c;
	fl.ev =
	    event_new(base, c.p.fd, EV_WRITE | EV_PERSIST, flood_writecb, &fl);
	ck_assert_ptr_nonnull(fl.ev);
	ck_assert_int_eq(event_add(fl.ev, NULL), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, FLOOD_BOUND), 0);
	ck_assert_int_eq(
	    tu_run_until(base, until_flood_blocked, &fl, WAIT_MS), 0);
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert_int_eq(c.paused_at_error, 1);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	/* Exactly the bound was collected, and the flood waits in the
	 * kernel, not in the process: at most one read is buffered. */
	ck_assert_uint_eq(evbuffer_get_length(c.f.cur), FLOOD_BOUND);
	ck_assert_int_eq(c.f.founds, 0);
	ck_assert_uint_le(input_len(&c), async_chat_get_in_buffer_size(c.chat));
	ck_assert_uint_lt(fl.sent, FLOOD_LEN);
	/* The peer stays blocked: nothing more is read while paused. */
	sent = fl.sent;
	buffered = input_len(&c);
	settle(base);
	ck_assert_uint_eq(fl.sent, sent);
	ck_assert_uint_eq(input_len(&c), buffered);
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_uint_eq(evbuffer_get_length(c.f.cur), FLOOD_BOUND);
	/* A frame of exactly the bound is allowed. */
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, FLOOD_LEN), 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	c.want = 1;
	run(&c, until_founds);
	ck_assert_int_eq(fl.done, 1);
	ck_assert_uint_eq(c.f.len[0], FLOOD_LEN);
	ck_assert(all_bytes(c.f.frame[0], FLOOD_LEN, 'x'));
	ck_assert_int_eq(c.f.errors, 1);
	event_free(fl.ev);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* A count larger than the bound fails at the bound; message mode
 * counts too. */
START_TEST(test_frame_bound_count_message)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.h.collect_incoming_data = NULL;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator_count(c.chat, 10), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 4), 0);
	peer_sends(&c.p, "0123456789");
	run(&c, until_errors);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert(buf_is_str(c.at_error, "0123"));
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 0), 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	c.want = 1;
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "0123456789"));
	ck_assert_int_eq(c.f.errors, 1);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/* The bound reached by the held-back bytes handed over at EOF: the EOF
 * waits until the bound is raised and reading resumed. */
START_TEST(test_frame_bound_at_eof)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n\r\n", 4), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 3), 0);
	peer_sends(&c.p, "ab\r\n\r");
	peer_shut(&c.p);
	run(&c, until_errors);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert(buf_is_str(c.at_error, "ab\r"));
	settle(base);
	ck_assert_int_eq(c.f.closes, 0);
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 5), 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	run(&c, until_closes);
	ck_assert(buf_is_str(c.at_close, "ab\r\n\r"));
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.founds, 0);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

/*
 * Tunables and terminator introspection
 */

START_TEST(test_in_buffer_size_one)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c.chat),
	    ASYNC_CHAT_DEFAULT_BUFFER_SIZE);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(c.chat, 0), EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(
	                 c.chat, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(NULL, 1), EINVAL);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(NULL), 0);
	ck_assert_int_eq(async_chat_set_in_buffer_size(c.chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c.chat), 1);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	peer_sends(&c.p, "hello\r\nworld\r\n\r\n");
	c.want = 3;
	run(&c, until_founds);
	ck_assert_uint_eq(c.f.max_collect, 1);
	ck_assert(tu_frame_is(&c.f, 0, "hello"));
	ck_assert(tu_frame_is(&c.f, 1, "world"));
	ck_assert(tu_frame_is(&c.f, 2, ""));
	/* A lone "\r" is held back as a possible terminator prefix, then
	 * released together with the byte after it (as CPython does): a
	 * collect call gets at most one new byte plus the released ones. */
	peer_sends(&c.p, "wo\rld\r\nlast\r");
	c.want = 4;
	run(&c, until_founds);
	c.want = 4;
	run(&c, until_collected);
	ck_assert(tu_frame_is(&c.f, 3, "wo\rld"));
	ck_assert_uint_le(c.f.max_collect, 2);
	peer_shut(&c.p);
	run(&c, until_closes);
	ck_assert(buf_is_str(c.at_close, "last\r"));
	ck_assert_uint_le(c.f.max_collect, 2);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

static void
check_count_left(struct chan *c, enum cb which)
{
	struct async_chat_terminator t;

	if (which != CB_COLLECT && which != CB_FOUND)
		return;
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	if (c->f.founds > 0) {
		/* Spent: the rest is collected as with no terminator. */
		ck_assert_uint_eq(t.count, 0);
		return;
	}
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	/* Already excludes the bytes being collected. */
	ck_assert_uint_eq(t.count, 10 - evbuffer_get_length(c->f.cur));
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.len, 0);
	c->state++;
}

START_TEST(test_count_remaining)
{
	struct event_base *base = new_base();
	struct chan c;

	chan_init(&c, base);
	c.hook = check_count_left;
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_set_in_buffer_size(c.chat, 3), 0);
	ck_assert_int_eq(async_chat_set_terminator_count(c.chat, 10), 0);
	peer_sends(&c.p, "0123456789rest");
	c.want = 1;
	run(&c, until_founds);
	c.want = 4;
	run(&c, until_collected);
	ck_assert(tu_frame_is(&c.f, 0, "0123456789"));
	ck_assert(tu_cur_eq(&c.f, "rest", 4));
	ck_assert_int_ge(c.state, 4); /* 3 + 3 + 3 + 1 at least */
	chan_end(&c);
	event_base_free(base);
}
END_TEST

START_TEST(test_get_terminator_kinds)
{
	struct event_base *base = new_base();
	struct async_chat_terminator t;
	const void *terms[3] = {"\r\n", "\n", "END"};
	size_t lens[3] = {2, 1, 3};
	struct chan c;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "ab\0c", 4), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 4);
	ck_assert_int_eq(memcmp(t.bytes, "ab\0c", 4), 0);
	ck_assert_int_eq(async_chat_set_terminator_count(c.chat, 7), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 7);
	ck_assert_ptr_null(t.bytes);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LINE);
	ck_assert_uint_eq(t.alternatives, 2);
	ck_assert_int_eq(async_chat_set_terminators(c.chat, terms, lens, 3), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_ANY);
	ck_assert_uint_eq(t.alternatives, 3);
	ck_assert_int_eq(async_chat_set_terminator_none(c.chat), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	/* Count 0 and the empty string are the none terminator. */
	ck_assert_int_eq(async_chat_set_terminator_count(c.chat, 0), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "", 0), 0);
	ck_assert_int_eq(async_chat_get_terminator(c.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, NULL, 0), 0);
	EXPECT_ERRNO(async_chat_set_terminator(c.chat, NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator(
	                 c.chat, "x", ASYNC_CHAT_TERMINATOR_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_set_terminators(c.chat, terms, lens, 0), EINVAL);
	EXPECT_ERRNO(async_chat_get_terminator(NULL, &t), EINVAL);
	EXPECT_ERRNO(async_chat_get_terminator(c.chat, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator(NULL, "x", 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_count(NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_none(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_line(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_matched_terminator(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_max_frame(NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_pause_reading(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_resume_reading(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_reading_paused(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_discard_buffers(NULL), EINVAL);
	errno = 0;
	ck_assert_ptr_null(async_chat_incoming(NULL));
	ck_assert_int_eq(errno, EINVAL);
	chan_end(&c);
	event_base_free(base);
}
END_TEST

static void
matched_case(const void *const *terms, const size_t *lens, size_t n,
    const char *input, const char *const *frames, const int *matched,
    size_t nframes)
{
	struct event_base *base = new_base();
	struct chan c;
	size_t i;

	chan_init(&c, base);
	chan_socketpair(&c);
	if (terms == NULL)
		ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	else
		ck_assert_int_eq(
		    async_chat_set_terminators(c.chat, terms, lens, n), 0);
	peer_sends(&c.p, input);
	c.want = nframes;
	run(&c, until_founds);
	ck_assert_uint_eq(c.nmatched, nframes);
	for (i = 0; i < nframes; i++) {
		ck_assert_msg(tu_frame_is(&c.f, i, frames[i]), "frame %zu", i);
		ck_assert_int_eq(c.matched[i], matched[i]);
	}
	chan_end(&c);
	event_base_free(base);
}

START_TEST(test_matched_line)
{
	static const char *const frames[] = {"a", "b", "c", ""};
	static const int matched[] = {0, 1, 0, 1};

	matched_case(NULL, NULL, 0, "a\r\nb\nc\r\n\n", frames, matched, 4);
}
END_TEST

START_TEST(test_matched_alternatives)
{
	static const void *const terms[] = {"\r\n", "\n", "END"};
	static const size_t lens[] = {2, 1, 3};
	static const char *const frames[] = {"x", "y", "z", "w"};
	static const int matched[] = {0, 1, 2, 1};
	static const void *const terms2[] = {"\n", "\r\n"};
	static const size_t lens2[] = {1, 2};
	static const char *const frames2[] = {"a", "b"};
	static const int matched2[] = {1, 0};

	matched_case(terms, lens, 3, "x\r\ny\nzENDw\n", frames, matched, 4);
	/* Of matches ending on the same byte the longest wins. */
	matched_case(terms2, lens2, 2, "a\r\nb\n", frames2, matched2, 2);
}
END_TEST

/*
 * The listener
 */

struct acc {
	struct event_base *base;
	struct async_chat_listener *l;
	int accepts;
	evutil_socket_t fds[4];
	int free_inside;
};

static void
acc_cb(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct acc *a = arg;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;

	ck_assert_ptr_eq(l, a->l);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(addrlen, (int)sizeof(*sin));
	ck_assert_int_eq(sin->sin_family, AF_INET);
	ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
	/* The socket is handed over non-blocking. */
	ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	ck_assert_int_lt(a->accepts, 4);
	a->fds[a->accepts++] = fd;
	if (a->free_inside) {
		async_chat_listener_free(l);
		a->l = NULL;
	}
}

static int
until_accepts(void *arg)
{
	return ((struct acc *)arg)->accepts > 0;
}

static int
until_two_accepts(void *arg)
{
	return ((struct acc *)arg)->accepts >= 2;
}

static struct async_chat_listener *
acc_listen(struct acc *a, struct event_base *base)
{
	memset(a, 0, sizeof(*a));
	a->base = base;
	a->l = listen_loopback(base, acc_cb, a);
	return a->l;
}

static void
acc_end(struct acc *a)
{
	int i;

	for (i = 0; i < a->accepts; i++)
		if (a->fds[i] >= 0)
			evutil_closesocket(a->fds[i]);
	async_chat_listener_free(a->l);
}

START_TEST(test_listener_accepts)
{
	struct event_base *base = new_base();
	struct acc a;
	struct chan c;
	evutil_socket_t cli;
	int port;

	acc_listen(&a, base);
	ck_assert_int_ge(async_chat_listener_get_fd(a.l), 0);
	port = listener_port(a.l);
	ck_assert_int_gt(port, 0);
	cli = tcp_client(port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 1);
	/* The accepted socket makes a working channel. */
	chan_init(&c, base);
	c.chat = async_chat_new(base, a.fds[0], &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_get_fd(c.chat), a.fds[0]);
	a.fds[0] = -1; /* the channel owns it now */
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_start(&c.p, base, cli);
	peer_sends(&c.p, "hi\n");
	c.want = 1;
	run(&c, until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "hi"));
	ck_assert_int_eq(async_chat_push(c.chat, "yo", 2), 0);
	c.want = 2;
	run(&c, until_peer_len);
	ck_assert(peer_got(&c.p, "yo"));
	chan_end(&c);
	acc_end(&a);
	event_base_free(base);
}
END_TEST

START_TEST(test_listener_pause_resume)
{
	struct event_base *base = new_base();
	struct acc a;
	evutil_socket_t cli[2];
	int port;

	acc_listen(&a, base);
	port = listener_port(a.l);
	cli[0] = tcp_client(port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, WAIT_MS), 0);
	ck_assert_int_eq(async_chat_listener_pause(a.l), 0);
	/* Connected in the backlog, but not accepted while paused. */
	cli[1] = tcp_client(port);
	settle(base);
	ck_assert_int_eq(a.accepts, 1);
	ck_assert_int_eq(async_chat_listener_resume(a.l), 0);
	ck_assert_int_eq(tu_run_until(base, until_two_accepts, &a, WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 2);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	event_base_free(base);
}
END_TEST

START_TEST(test_listener_free_in_accept)
{
	struct event_base *base = new_base();
	struct acc a;
	evutil_socket_t cli[2];
	int port;

	acc_listen(&a, base);
	a.free_inside = 1;
	port = listener_port(a.l);
	/* Two pending connections: the listener is freed while libevent
	 * would go on accepting the second. */
	cli[0] = tcp_client(port);
	cli[1] = tcp_client(port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, WAIT_MS), 0);
	ck_assert_ptr_null(a.l);
	settle(base);
	ck_assert_int_eq(a.accepts, 1);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	event_base_free(base);
}
END_TEST

static void
acc_never(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	(void)l;
	(void)fd;
	(void)addr;
	(void)addrlen;
	(void)arg;
	ck_abort_msg("no connection expected");
}

START_TEST(test_listener_bad_args)
{
	struct event_base *base = new_base();
	struct sockaddr_in sin = loopback(0);
	struct sockaddr *sa = (struct sockaddr *)&sin;
	int len = (int)sizeof(sin);
	struct async_chat_listener *l;

	EXPECT_NULL_ERRNO(
	    async_chat_listener_new(NULL, sa, len, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new(base, NULL, len, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new(base, sa, 0, -1, acc_never, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new(base, sa, len, -1, NULL, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new(base, sa, len, -2, acc_never, NULL),
	    EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new_fd(NULL, 0, acc_never, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new_fd(base, -1, acc_never, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_listener_new_fd(base, 0, NULL, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_set_error_handler(NULL, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_pause(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_resume(NULL), EINVAL);
	ck_assert_int_eq(async_chat_listener_get_fd(NULL), -1);
	EXPECT_ERRNO(async_chat_listener_get_address(NULL, sa, &len), EINVAL);
	async_chat_listener_free(NULL);

	l = listen_loopback(base, acc_never, NULL);
	ck_assert_int_eq(async_chat_listener_set_error_handler(l, NULL), 0);
	EXPECT_ERRNO(async_chat_listener_get_address(l, NULL, &len), EINVAL);
	EXPECT_ERRNO(async_chat_listener_get_address(l, sa, NULL), EINVAL);
	len = 0;
	EXPECT_ERRNO(async_chat_listener_get_address(l, sa, &len), EINVAL);
	async_chat_listener_free(l);
	event_base_free(base);
}
END_TEST

START_TEST(test_listener_addr_in_use)
{
	struct event_base *base = new_base();
	struct async_chat_listener *l;
	struct sockaddr_in sin;

	l = listen_loopback(base, acc_never, NULL);
	sin = loopback(listener_port(l));
	/* SO_REUSEADDR does not allow a second listener on the port. */
	errno = 0;
	ck_assert_ptr_null(async_chat_listener_new(base,
	    (struct sockaddr *)&sin, (int)sizeof(sin), -1, acc_never, NULL));
	ck_assert_int_eq(errno, EADDRINUSE);
	async_chat_listener_free(l);
	event_base_free(base);
}
END_TEST

/* A socket that is already bound and listening. */
START_TEST(test_listener_new_fd)
{
	struct event_base *base = new_base();
	struct sockaddr_in sin = loopback(0);
	socklen_t slen = sizeof(sin);
	struct acc a;
	evutil_socket_t fd, cli;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
	memset(&a, 0, sizeof(a));
	a.l = async_chat_listener_new_fd(base, fd, acc_cb, &a);
	ck_assert_ptr_nonnull(a.l);
	ck_assert_int_eq(async_chat_listener_get_fd(a.l), fd);
	cli = tcp_client(ntohs(sin.sin_port));
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 1);
	evutil_closesocket(cli);
	acc_end(&a); /* closes fd */
	event_base_free(base);
}
END_TEST

/*
 * Constructors and accessors
 */

static void
quiet_log(int severity, const char *msg)
{
	(void)severity;
	(void)msg;
}

START_TEST(test_new_bad_args)
{
	struct event_base *base = new_base();
	evutil_socket_t sv[2];
	int closed_fd;

	tu_socketpair(sv);
	EXPECT_NULL_ERRNO(
	    async_chat_new(NULL, sv[0], &rec_handlers, NULL), EINVAL);
	EXPECT_NULL_ERRNO(async_chat_new(base, sv[0], NULL, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_new(base, -2, &rec_handlers, NULL), EINVAL);
	EXPECT_NULL_ERRNO(
	    async_chat_new_bufferevent(NULL, &rec_handlers, NULL), EINVAL);
	/* A descriptor that is not open is refused. */
	closed_fd = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(closed_fd, 0);
	close(closed_fd);
	event_set_log_callback(quiet_log); /* libevent warns about it */
	errno = 0;
	ck_assert_ptr_null(
	    async_chat_new(base, closed_fd, &rec_handlers, NULL));
	ck_assert_int_eq(errno, EBADF);
	event_set_log_callback(NULL);
	/* On failure fd is not closed: it still carries data. */
	ck_assert_int_ne(fcntl(sv[0], F_GETFD), -1);
	ck_assert_int_eq(send(sv[0], "x", 1, MSG_NOSIGNAL), 1);
	evutil_closesocket(sv[0]);
	evutil_closesocket(sv[1]);
	/* NULL is ignored. */
	async_chat_close(NULL);
	event_base_free(base);
}
END_TEST

static void
user_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;
}

/* A failed adoption leaves the bufferevent and its callbacks to the
 * caller, who frees it. */
START_TEST(test_new_bufferevent_failure)
{
	struct event_base *base = new_base();
	struct bufferevent *pair[2];
	bufferevent_data_cb r = NULL, w = NULL;
	bufferevent_event_cb e = NULL;
	void *arg = NULL;
	int mine;

	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	bufferevent_setcb(pair[0], user_readcb, NULL, NULL, &mine);
	EXPECT_NULL_ERRNO(
	    async_chat_new_bufferevent(pair[0], NULL, NULL), EINVAL);
	bufferevent_getcb(pair[0], &r, &w, &e, &arg);
	ck_assert(r == user_readcb);
	ck_assert(w == NULL);
	ck_assert(e == NULL);
	ck_assert_ptr_eq(arg, &mine);
	bufferevent_free(pair[0]);
	bufferevent_free(pair[1]);
	event_base_free(base);
}
END_TEST

START_TEST(test_accessors)
{
	struct event_base *base = new_base();
	struct bufferevent *pair[2];
	struct chan c, d;
	int other;

	chan_init(&c, base);
	chan_socketpair(&c);
	ck_assert_int_ge(async_chat_get_fd(c.chat), 0);
	ck_assert_int_ne(async_chat_get_fd(c.chat), c.p.fd);
	ck_assert_ptr_nonnull(async_chat_get_bufferevent(c.chat));
	ck_assert_int_eq(bufferevent_getfd(async_chat_get_bufferevent(c.chat)),
	    async_chat_get_fd(c.chat));
	ck_assert_ptr_eq(async_chat_get_arg(c.chat), &c);
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c.chat),
	    ASYNC_CHAT_DEFAULT_BUFFER_SIZE);
	ck_assert_uint_eq(async_chat_output_pending(c.chat), 0);
	ck_assert_int_eq(async_chat_dns_error(c.chat), 0);
	ck_assert_int_eq(async_chat_matched_terminator(c.chat), 0);
	/* Handlers get the new arg. */
	ck_assert_int_eq(async_chat_set_arg(c.chat, &other), 0);
	ck_assert_ptr_eq(async_chat_get_arg(c.chat), &other);
	ck_assert_int_eq(async_chat_set_arg(c.chat, &c), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	peer_sends(&c.p, "x\n");
	c.want = 1;
	run(&c, until_founds);

	ck_assert_ptr_null(async_chat_get_bufferevent(NULL));
	ck_assert_int_eq(async_chat_get_fd(NULL), -1);
	ck_assert_ptr_null(async_chat_get_arg(NULL));
	EXPECT_ERRNO(async_chat_set_arg(NULL, &c), EINVAL);
	EXPECT_ERRNO(async_chat_connected(NULL), EINVAL);
	ck_assert_uint_eq(async_chat_output_pending(NULL), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(NULL), 0);
	chan_end(&c);

	/* An adopted bufferevent pair end: no socket, connected. */
	chan_init(&d, base);
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	d.chat = async_chat_new_bufferevent(pair[0], &d.h, &d);
	ck_assert_ptr_nonnull(d.chat);
	ck_assert_ptr_eq(async_chat_get_bufferevent(d.chat), pair[0]);
	ck_assert_int_eq(async_chat_get_fd(d.chat), -1);
	ck_assert_int_eq(async_chat_connected(d.chat), 1);
	chan_end(&d);
	bufferevent_free(pair[1]);
	event_base_free(base);
}
END_TEST

START_TEST(test_strerror)
{
	static const int codes[] = {ASYNC_CHAT_ERR_FRAME_TOO_LONG,
	    ASYNC_CHAT_ERR_PRODUCER, ASYNC_CHAT_ERR_DNS, ASYNC_CHAT_ERR_UNKNOWN,
	    ASYNC_CHAT_ERR_NOMEM};
	const char *unknown = async_chat_strerror(-1000);
	size_t i, j;

	ck_assert_ptr_nonnull(unknown);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = async_chat_strerror(codes[i]);

		ck_assert_ptr_nonnull(s);
		ck_assert_uint_gt(strlen(s), 0);
		ck_assert_str_ne(s, unknown);
		for (j = 0; j < i; j++)
			ck_assert_str_ne(s, async_chat_strerror(codes[j]));
	}
	ck_assert_str_eq(async_chat_strerror(ECONNRESET), strerror(ECONNRESET));
	ck_assert_str_eq(
	    async_chat_strerror(ECONNREFUSED), strerror(ECONNREFUSED));
	ck_assert_str_eq(async_chat_strerror(EPIPE), strerror(EPIPE));
	ck_assert_ptr_nonnull(async_chat_strerror(0));
	ck_assert_ptr_nonnull(async_chat_strerror(100000));
}
END_TEST

START_TEST(test_version)
{
	ck_assert_str_eq(async_chat_version(), ASYNC_CHAT_VERSION);
	ck_assert_uint_eq(
	    async_chat_version_number(), ASYNC_CHAT_VERSION_NUMBER);
	ck_assert_uint_eq(ASYNC_CHAT_VERSION_NUMBER,
	    ASYNC_CHAT_VERSION_MAJOR * 10000 + ASYNC_CHAT_VERSION_MINOR * 100 +
	        ASYNC_CHAT_VERSION_PATCH);
}
END_TEST

/* Pausing inside collect on a count's last byte: the frame has ended, and
 * found_terminator runs as soon as reading resumes, with nothing new
 * arriving. */
struct owed {
	struct tu_frames f;
	int pause_done;
};

static void
owed_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct owed *o = arg;
	struct async_chat_terminator t;

	tu_frames_collect(&o->f, data, len);
	ck_assert_int_eq(async_chat_get_terminator(chat, &t), 0);
	if (!o->pause_done && t.count == 0) {
		o->pause_done = 1;
		ck_assert_int_eq(async_chat_pause_reading(chat), 0);
	}
}

static void
owed_found(struct async_chat *chat, void *arg)
{
	tu_frames_found(&((struct owed *)arg)->f);
}

static int
owed_has_frame(void *arg)
{
	return ((struct owed *)arg)->f.n > 0;
}

static int
owed_paused(void *arg)
{
	return ((struct owed *)arg)->pause_done;
}

START_TEST(test_pause_on_count_last_byte)
{
	static const struct async_chat_handlers h = {
		.collect_incoming_data = owed_collect,
		.found_terminator = owed_found,
	};
	struct event_base *base = event_base_new();
	struct owed o;
	struct async_chat *chat;
	evutil_socket_t sv[2];

	memset(&o, 0, sizeof(o));
	tu_frames_init(&o.f);
	tu_socketpair(sv);
	chat = async_chat_new(base, sv[0], &h, &o);
	ck_assert_ptr_nonnull(chat);
	ck_assert_int_eq(async_chat_set_terminator_count(chat, 4), 0);
	ck_assert_int_eq(send(sv[1], "abcd", 4, 0), 4);
	ck_assert_int_eq(tu_run_until(base, owed_paused, &o, 2000), 0);
	/* Paused: the frame is owed, not lost, and not yet reported. */
	ck_assert_int_eq(tu_run_until(base, owed_has_frame, &o, 100), -1);
	ck_assert_int_eq(async_chat_resume_reading(chat), 0);
	ck_assert_int_eq(tu_run_until(base, owed_has_frame, &o, 2000), 0);
	ck_assert(tu_frame_is(&o.f, 0, "abcd"));
	async_chat_close(chat);
	evutil_closesocket(sv[1]);
	tu_frames_clear(&o.f);
	event_base_free(base);
}
END_TEST

static Suite *
channel_suite(void)
{
	Suite *s = suite_create("channel");
	TCase *tc;

	tc = tcase_create("input");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_collect_mode);
	tcase_add_test(tc, test_message_mode);
	tcase_add_test(tc, test_terminator_change_same_read);
	tcase_add_test(tc, test_discard_in_collect);
	tcase_add_test(tc, test_discard_in_collect_at_eof);
	tcase_add_test(tc, test_in_buffer_size_one);
	tcase_add_test(tc, test_count_remaining);
	tcase_add_test(tc, test_get_terminator_kinds);
	tcase_add_test(tc, test_matched_line);
	tcase_add_test(tc, test_matched_alternatives);
	suite_add_tcase(s, tc);

	tc = tcase_create("eof");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_eof_held_back_collect);
	tcase_add_test(tc, test_eof_held_back_message);
	tcase_add_test(tc, test_eof_default_flushes_then_closes);
	tcase_add_test(tc, test_half_closed_peer);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_reset_mid_frame);
	tcase_add_test(tc, test_reset_default_closes);
	tcase_add_test(tc, test_connect_refused);
	tcase_add_test(tc, test_connect_hostname_localhost);
	tcase_add_test(tc, test_connect_dns_failure);
	tcase_add_test(tc, test_close_while_resolving);
	tcase_add_test(tc, test_connect_bad_args);
	suite_add_tcase(s, tc);

	tc = tcase_create("reentrancy");
	tcase_set_timeout(tc, 30);
	/* Run i: op i % OP_N inside callback i / OP_N (enum op, enum cb). */
	tcase_add_loop_test(tc, test_reentrancy, 0, CB_N * OP_N);
	suite_add_tcase(s, tc);

	tc = tcase_create("flow");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_pause_buffered);
	tcase_add_test(tc, test_pause_in_collect);
	tcase_add_test(tc, test_pause_on_count_last_byte);
	tcase_add_test(tc, test_pause_in_collect_at_eof);
	tcase_add_test(tc, test_pause_eof_socket);
	tcase_add_test(tc, test_pause_eof_pair);
	tcase_add_test(tc, test_frame_bound_flood);
	tcase_add_test(tc, test_frame_bound_count_message);
	tcase_add_test(tc, test_frame_bound_at_eof);
	suite_add_tcase(s, tc);

	tc = tcase_create("listener");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_listener_accepts);
	tcase_add_test(tc, test_listener_pause_resume);
	tcase_add_test(tc, test_listener_free_in_accept);
	tcase_add_test(tc, test_listener_bad_args);
	tcase_add_test(tc, test_listener_addr_in_use);
	tcase_add_test(tc, test_listener_new_fd);
	suite_add_tcase(s, tc);

	tc = tcase_create("api");
	tcase_add_test(tc, test_new_bad_args);
	tcase_add_test(tc, test_new_bufferevent_failure);
	tcase_add_test(tc, test_accessors);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_version);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	/* A peer that goes away must show up as EPIPE, not kill the run. */
	signal(SIGPIPE, SIG_IGN);
	sr = srunner_create(channel_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
