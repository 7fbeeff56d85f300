/*
 * load.c - many concurrent connections through one libasynchat server.
 * N loopback clients and an in-process libasynchat echo server share one
 * event_base.  Each client sends pipelined messages of mixed framing in
 * random chunks, and checks every byte of every reply.
 *
 *   usage: load [-c connections] [-m messages] [-d depth] [-s seed]
 *               [-T seconds] [-1 | -2] [-q] [connections]
 *
 * Defaults: 10000 connections, 20 messages each, 8 in flight, 300 s.
 *
 * A connection costs two descriptors in one process (the client's and the
 * server's).  The descriptor limit is raised as far as it goes; if it
 * still cannot hold every connection in one process, the clients run in
 * a child process with its own event_base (the server stays here, on
 * one event_base).  -1 forces one process, -2 the child.
 *
 * The protocol, in line mode until a line says otherwise:
 *   "<text>\n" or "<text>\r\n"   text starting with a letter: the server
 *                                answers "<text>\n";
 *   "<len>\r\n" + len bytes      a counted payload: the server switches to
 *                                a count terminator and answers
 *                                "<len>\r\n" + the payload;
 *   "=<delim>\r\n" + bytes + delim  a delimited payload: the server
 *                                switches to delim as a string terminator
 *                                and answers "=<delim>\n" + bytes + delim;
 *   "QUIT\n"                     the server answers "BYE\n" and closes
 *                                when done (so that the server, not the
 *                                client, keeps the TIME_WAIT sockets and
 *                                runs can follow each other).
 * Every connection is opened before any sends, and all stay open until
 * every client has its replies: the connections are held concurrently.
 *
 * Prints one line of key=value pairs; exits 0 on success, 1 on any
 * failure or lost connection, 2 on bad usage or too few descriptors.
 *
 * With LOAD_EMBEDDED defined, this file is a library of static functions
 * (load_run()) for the test suite, without main().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem() */
#endif

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "asynchat.h"

#define LOAD_CONNECT_WINDOW 256 /* connects under way at once */
#define LOAD_COUNT_MAX 70000    /* largest counted payload */
#define LOAD_DELIM_MAX 64

struct load_config {
	int conns;      /* concurrent connections */
	int msgs;       /* messages per connection */
	int depth;      /* messages in flight per connection */
	uint64_t seed;
	int timeout_s;  /* the whole run */
	int quiet;      /* no progress lines on stderr */
	int processes;  /* 1, 2, or 0: 1 if the descriptor limit allows */
};

struct load_stats {
	int held;            /* connections open at both ends at once, most */
	int accepted;
	uint64_t messages;   /* replies checked byte for byte */
	uint64_t bytes_sent; /* request bytes written by the clients */
	uint64_t bytes_checked;
	int failures;        /* mismatches, errors, unexpected closes */
	int lost;            /* connections gone before their last reply */
	long peak_rss_kib;   /* of the server's process */
	long client_rss_kib; /* of the clients' process, when apart */
	int processes;
	double seconds;
};

struct load;

/* The server side of one connection. */
struct load_sconn {
	struct load *ld;
	struct async_chat *chat;
	enum { SC_LINE, SC_COUNT, SC_DELIM } state;
	uint64_t count;
	char delim[LOAD_DELIM_MAX];
	size_t delim_len;
};

/* One client. */
struct load_client {
	struct load *ld;
	struct bufferevent *bev;
	uint64_t rng;
	struct evbuffer *pending; /* generated, not yet written */
	struct evbuffer *expect;  /* replies awaited, in order */
	uint32_t *reply_len;      /* length of each reply, by message */
	int generated, checked;
	size_t reply_left;        /* of the reply being checked */
	int connected, done, quit_sent, closed;
};

struct load {
	struct load_config cfg;
	struct load_stats st;
	struct event_base *base;
	struct async_chat_listener *listener;
	struct sockaddr_in addr;
	struct load_client *clients;
	struct event *timer;
	int next_connect, connecting, client_open, server_open;
	int connected, done, closed, started;
	int failed_connect;
	int has_server, has_clients;
	int report_fd;            /* server side: the clients' report */
	struct event *report_ev;
	int reported;
	struct load_stats client_st;
	struct timespec t0;
};

static void load_fail(struct load *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Count a failure; the first few are described on stderr. */
static void
load_fail(struct load *ld, const char *fmt, ...)
{
	va_list ap;

	if (ld->st.failures++ >= 10 || ld->cfg.quiet)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "load: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

static uint64_t
load_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 2685821657736338717ULL;
}

static void
load_note_held(struct load *ld)
{
	int both = !ld->has_server ? ld->client_open :
	    !ld->has_clients       ? ld->server_open :
	    ld->client_open < ld->server_open ? ld->client_open :
						ld->server_open;

	if (both > ld->st.held)
		ld->st.held = both;
}

/*
 * The server: an echo in message mode, switching terminators per message.
 */

static void
srv_push(struct load_sconn *sc, const void *data, size_t len)
{
	if (async_chat_push(sc->chat, data, len) < 0)
		load_fail(sc->ld, "server push failed (errno %d)", errno);
}

static void
srv_line(struct load_sconn *sc, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	char head[LOAD_DELIM_MAX + 2];
	char *end;

	if (len == 0) {
		load_fail(sc->ld, "server: empty line");
		async_chat_close(sc->chat);
		return;
	}
	evbuffer_copyout(in, head, len < sizeof(head) - 1 ? len :
							    sizeof(head) - 1);
	head[len < sizeof(head) - 1 ? len : sizeof(head) - 1] = '\0';
	if (head[0] >= '0' && head[0] <= '9') {
		sc->count = strtoull(head, &end, 10);
		evbuffer_drain(in, len);
		if (sc->count == 0) {
			srv_push(sc, "0\r\n", 3);
			return;
		}
		sc->state = SC_COUNT;
		if (async_chat_set_terminator_count(sc->chat, sc->count) < 0)
			load_fail(sc->ld, "set count failed (errno %d)", errno);
	} else if (head[0] == '=' && len > 1 && len <= LOAD_DELIM_MAX) {
		sc->delim_len = len - 1;
		memcpy(sc->delim, head + 1, sc->delim_len);
		evbuffer_drain(in, len);
		sc->state = SC_DELIM;
		if (async_chat_set_terminator(sc->chat, sc->delim,
			sc->delim_len) < 0)
			load_fail(sc->ld, "set delim failed (errno %d)", errno);
	} else if (len == 4 && memcmp(head, "QUIT", 4) == 0) {
		evbuffer_drain(in, len);
		srv_push(sc, "BYE\n", 4);
		if (async_chat_close_when_done(sc->chat) < 0)
			load_fail(sc->ld, "close_when_done failed (errno %d)",
			    errno);
	} else {
		if (async_chat_push_buffer(sc->chat, in) < 0)
			load_fail(sc->ld, "push_buffer failed (errno %d)",
			    errno);
		srv_push(sc, "\n", 1);
	}
}

static void
srv_found(struct async_chat *chat, void *arg)
{
	struct load_sconn *sc = arg;
	struct evbuffer *in = async_chat_incoming(chat);
	char head[32];
	int n;

	switch (sc->state) {
	case SC_LINE:
		srv_line(sc, in);
		return;
	case SC_COUNT:
		n = snprintf(head, sizeof(head), "%" PRIu64 "\r\n", sc->count);
		srv_push(sc, head, (size_t)n);
		break;
	case SC_DELIM:
		srv_push(sc, "=", 1);
		srv_push(sc, sc->delim, sc->delim_len);
		srv_push(sc, "\n", 1);
		break;
	}
	if (async_chat_push_buffer(chat, in) < 0)
		load_fail(sc->ld, "push_buffer failed (errno %d)", errno);
	if (sc->state == SC_DELIM)
		srv_push(sc, sc->delim, sc->delim_len);
	sc->state = SC_LINE;
	if (async_chat_set_terminator_line(chat) < 0)
		load_fail(sc->ld, "set line failed (errno %d)", errno);
}

static void
srv_error(struct async_chat *chat, int err, void *arg)
{
	struct load_sconn *sc = arg;

	load_fail(sc->ld, "server channel error %d", err);
	async_chat_close(chat);
}

static void
srv_free(struct async_chat *chat, void *arg)
{
	struct load_sconn *sc = arg;
	struct load *ld = sc->ld;

	(void)chat;
	ld->server_open--;
	free(sc);
	if (!ld->has_clients && ld->reported && ld->server_open == 0)
		event_base_loopexit(ld->base, NULL);
}

static const struct async_chat_handlers srv_handlers = {
	.found_terminator = srv_found,
	.handle_error = srv_error,
	.handle_free = srv_free,
	/* handle_close: the default flushes and closes. */
};

static void
srv_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct load *ld = arg;
	struct load_sconn *sc = calloc(1, sizeof(*sc));
	int one = 1;

	(void)l;
	(void)addr;
	(void)addrlen;
	if (sc == NULL) {
		load_fail(ld, "out of memory on accept %d", ld->st.accepted);
		evutil_closesocket(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sc->ld = ld;
	sc->chat = async_chat_new(ld->base, fd, &srv_handlers, sc);
	if (sc->chat == NULL) {
		load_fail(ld, "async_chat_new failed (errno %d)", errno);
		evutil_closesocket(fd);
		free(sc);
		return;
	}
	ld->st.accepted++;
	ld->server_open++;
	load_note_held(ld);
	if (async_chat_set_terminator_line(sc->chat) < 0)
		load_fail(ld, "set line failed (errno %d)", errno);
}

static void
srv_accept_error(struct async_chat_listener *l, int err, void *arg)
{
	(void)l;
	load_fail(arg, "accept failed (errno %d)", err);
}

/*
 * The clients.
 */

/* Append one message to req and its reply to rep; returns the reply's
 * length. */
static size_t
gen_message(uint64_t *rng, struct evbuffer *req, struct evbuffer *rep)
{
	static unsigned char payload[LOAD_COUNT_MAX];
	char head[LOAD_DELIM_MAX + 8];
	const char *eol = load_rand(rng) & 1 ? "\r\n" : "\n";
	size_t len, i, before = evbuffer_get_length(rep);
	int n;

	switch (load_rand(rng) % 3) {
	case 0: /* a line: printable bytes, a letter first */
		len = 1 + load_rand(rng) % 200;
		payload[0] = (unsigned char)('a' + load_rand(rng) % 26);
		for (i = 1; i < len; i++)
			payload[i] = (unsigned char)(' ' + load_rand(rng) % 95);
		evbuffer_add(req, payload, len);
		evbuffer_add(req, eol, strlen(eol));
		evbuffer_add(rep, payload, len);
		evbuffer_add(rep, "\n", 1);
		break;
	case 1: /* counted: any bytes */
		if (load_rand(rng) % 8 == 0)
			len = load_rand(rng) % LOAD_COUNT_MAX;
		else
			len = load_rand(rng) % 2000;
		for (i = 0; i < len; i++)
			payload[i] = (unsigned char)load_rand(rng);
		n = snprintf(head, sizeof(head), "%zu", len);
		evbuffer_add(req, head, (size_t)n);
		evbuffer_add(req, eol, strlen(eol));
		evbuffer_add(req, payload, len);
		evbuffer_add(rep, head, (size_t)n);
		evbuffer_add(rep, "\r\n", 2);
		evbuffer_add(rep, payload, len);
		break;
	default: /* delimited: any bytes, then a delimiter they lack */
		memcpy(head, "=--", 3);
		for (i = 3; i < 13; i++)
			head[i] = "abcdefghijklmnopqrstuvwxyz0123456789"
			    [load_rand(rng) % 36];
		memcpy(head + 13, "--", 2);
		len = load_rand(rng) % 3000;
		do {
			for (i = 0; i < len; i++)
				payload[i] = (unsigned char)load_rand(rng);
			memcpy(payload + len, head + 1, 14);
			/* The first occurrence must be the delimiter
			 * itself, not one that begins in the bytes. */
		} while (memmem(payload, len + 14, head + 1, 14) !=
		    payload + len);
		evbuffer_add(req, head, 15);
		evbuffer_add(req, eol, strlen(eol));
		evbuffer_add(req, payload, len + 14);
		evbuffer_add(rep, head, 15);
		evbuffer_add(rep, "\n", 1);
		evbuffer_add(rep, payload, len + 14);
		break;
	}
	return evbuffer_get_length(rep) - before;
}

/* A chunk of the request stream: often tiny, so that lines, headers and
 * delimiters are split; else up to 8 KiB. */
static size_t
chunk_size(uint64_t *rng)
{
	uint64_t r = load_rand(rng);

	return r % 4 == 0 ? 1 + (r >> 8) % 16 : 1 + (r >> 8) % 8192;
}

static void
client_write_more(struct load_client *c)
{
	struct load *ld = c->ld;
	struct evbuffer *out;
	size_t n;

	if (c->closed || !ld->started)
		return;
	out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) > 0)
		return;
	while (evbuffer_get_length(c->pending) == 0 &&
	    c->generated < ld->cfg.msgs &&
	    c->generated - c->checked < ld->cfg.depth) {
		c->reply_len[c->generated++] =
		    (uint32_t)gen_message(&c->rng, c->pending, c->expect);
	}
	if (evbuffer_get_length(c->pending) == 0 && c->done && !c->quit_sent &&
	    ld->done == ld->cfg.conns) {
		evbuffer_add(c->pending, "QUIT\n", 5);
		evbuffer_add(c->expect, "BYE\n", 4);
		c->quit_sent = 1;
	}
	n = chunk_size(&c->rng);
	if (n > evbuffer_get_length(c->pending))
		n = evbuffer_get_length(c->pending);
	if (n == 0)
		return;
	ld->st.bytes_sent += n;
	if (evbuffer_remove_buffer(c->pending, out, n) != (int)n)
		load_fail(ld, "client could not queue %zu bytes", n);
}

static void
client_close(struct load_client *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->ld->client_open--;
	c->ld->closed++;
	if (c->ld->closed == c->ld->cfg.conns)
		event_base_loopexit(c->ld->base, NULL);
}

/* Every client has its replies: say QUIT on every connection. */
static void
all_done(struct load *ld)
{
	int i;

	if (ld->client_open != ld->cfg.conns ||
	    (ld->has_server && ld->server_open != ld->cfg.conns))
		load_fail(ld, "only %d connections left at the end",
		    ld->client_open);
	for (i = 0; i < ld->cfg.conns; i++)
		if (!ld->clients[i].closed)
			client_write_more(&ld->clients[i]);
}

static void
client_read(struct bufferevent *bev, void *arg)
{
	struct load_client *c = arg;
	struct load *ld = c->ld;
	struct evbuffer *in = bufferevent_get_input(bev);
	unsigned char a[4096], b[4096];

	while (evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_length(in);

		if (evbuffer_get_length(c->expect) == 0) {
			load_fail(ld, "%zu bytes nobody asked for", n);
			evbuffer_drain(in, n);
			return;
		}
		if (n > evbuffer_get_length(c->expect))
			n = evbuffer_get_length(c->expect);
		if (n > sizeof(a))
			n = sizeof(a);
		if (c->reply_left == 0 && c->checked < ld->cfg.msgs)
			c->reply_left = c->reply_len[c->checked];
		if (c->checked < ld->cfg.msgs && n > c->reply_left)
			n = c->reply_left;
		evbuffer_remove(in, a, n);
		evbuffer_remove(c->expect, b, n);
		if (memcmp(a, b, n) != 0) {
			load_fail(ld, "reply %d differs", c->checked);
			client_close(c);
			return;
		}
		ld->st.bytes_checked += n;
		if (c->checked == ld->cfg.msgs)
			continue; /* "BYE\n" */
		c->reply_left -= n;
		if (c->reply_left > 0)
			continue;
		c->checked++;
		ld->st.messages++;
		if (c->checked == ld->cfg.msgs) {
			c->done = 1;
			if (++ld->done == ld->cfg.conns)
				all_done(ld);
		}
	}
	client_write_more(c);
}

static void
client_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	client_write_more(arg);
}

static void start_connects(struct load *ld);

static void
start_traffic(struct load *ld)
{
	int i;

	if (ld->started || ld->connected < ld->cfg.conns ||
	    (ld->has_server && ld->st.accepted < ld->cfg.conns))
		return;
	ld->started = 1;
	if (!ld->cfg.quiet)
		fprintf(stderr, "load: %d connections open, sending\n",
		    ld->connected);
	for (i = 0; i < ld->cfg.conns; i++)
		client_write_more(&ld->clients[i]);
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
	struct load_client *c = arg;
	struct load *ld = c->ld;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;

		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY,
		    &one, sizeof(one));
		c->connected = 1;
		ld->connecting--;
		ld->connected++;
		ld->client_open++;
		load_note_held(ld);
		start_connects(ld);
		start_traffic(ld);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		client_read(bev, c);
	if (c->closed)
		return;
	if (!c->connected) {
		ld->connecting--;
		ld->failed_connect++;
		load_fail(ld, "connect failed (errno %d)",
		    EVUTIL_SOCKET_ERROR());
		c->closed = 1;
		bufferevent_free(c->bev);
		c->bev = NULL;
		ld->closed++;
		ld->st.lost++;
		start_connects(ld);
		if (ld->closed == ld->cfg.conns)
			event_base_loopexit(ld->base, NULL);
		return;
	}
	if (!(what & BEV_EVENT_EOF) || !c->quit_sent ||
	    evbuffer_get_length(c->expect) > 0) {
		ld->st.lost++;
		load_fail(ld, "connection lost (events %#x)", what);
	}
	client_close(c);
}

static void
start_connects(struct load *ld)
{
	while (ld->connecting < LOAD_CONNECT_WINDOW &&
	    ld->next_connect < ld->cfg.conns) {
		struct load_client *c = &ld->clients[ld->next_connect++];

		c->ld = ld;
		c->rng = ld->cfg.seed ^ (0x9e3779b97f4a7c15ULL *
		    (uint64_t)(ld->next_connect));
		if (c->rng == 0)
			c->rng = 1;
		c->pending = evbuffer_new();
		c->expect = evbuffer_new();
		c->reply_len = calloc((size_t)ld->cfg.msgs + 1,
		    sizeof(*c->reply_len));
		c->bev = bufferevent_socket_new(ld->base, -1,
		    BEV_OPT_CLOSE_ON_FREE);
		if (c->pending == NULL || c->expect == NULL ||
		    c->reply_len == NULL || c->bev == NULL) {
			load_fail(ld, "out of memory for client %d",
			    ld->next_connect);
			c->closed = 1;
			ld->closed++;
			ld->st.lost++;
			continue;
		}
		bufferevent_setcb(c->bev, client_read, client_write,
		    client_event, c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		ld->connecting++;
		if (bufferevent_socket_connect(c->bev,
			(struct sockaddr *)&ld->addr, sizeof(ld->addr)) < 0) {
			/* client_event has run and counted it */
			continue;
		}
	}
}

static void
load_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct load *ld = arg;

	(void)fd;
	(void)what;
	load_fail(ld, "time limit of %d s reached", ld->cfg.timeout_s);
	event_base_loopexit(ld->base, NULL);
}

/* Raise the descriptor limit to what conns connections need. */
static int
load_raise_nofile(int conns)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)conns * 2 + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need)
		rl.rlim_max = need; /* root may raise the hard limit */
	rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		return 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return -1;
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	return -1;
}

static double
load_elapsed(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) +
	    (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The clients' process reports its figures over a pipe. */
static void
load_report(evutil_socket_t fd, short what, void *arg)
{
	struct load *ld = arg;
	ssize_t n;

	(void)what;
	n = read(fd, &ld->client_st, sizeof(ld->client_st));
	if (n != (ssize_t)sizeof(ld->client_st)) {
		load_fail(ld, "the clients' process ended without a report");
		memset(&ld->client_st, 0, sizeof(ld->client_st));
		event_base_loopexit(ld->base, NULL);
	}
	ld->reported = 1;
	event_del(ld->report_ev);
	if (ld->server_open == 0) {
		event_base_loopexit(ld->base, NULL);
	} else {
		/* The clients are gone: their closes are on the way. */
		struct timeval grace = { 10, 0 };

		evtimer_add(ld->timer, &grace);
	}
}

/* A listening socket on 127.0.0.1, port chosen by the system. */
static int
load_listen(struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
	    listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Run the sides this process has until they are done. */
static int
load_loop(struct load *ld, int listen_fd)
{
	struct timeval limit = { ld->cfg.timeout_s, 0 };
	int i;

	ld->base = event_base_new();
	if (ld->base == NULL)
		return -1;
	if (ld->has_server) {
		ld->listener = async_chat_listener_new_fd(ld->base, listen_fd,
		    srv_accept, ld);
		if (ld->listener == NULL)
			return -1;
		async_chat_listener_set_error_handler(ld->listener,
		    srv_accept_error);
	}
	if (ld->report_fd >= 0) {
		ld->report_ev = event_new(ld->base, ld->report_fd,
		    EV_READ | EV_PERSIST, load_report, ld);
		if (ld->report_ev == NULL ||
		    event_add(ld->report_ev, NULL) < 0)
			return -1;
	}
	ld->timer = evtimer_new(ld->base, load_timeout, ld);
	if (ld->timer == NULL || evtimer_add(ld->timer, &limit) < 0)
		return -1;
	if (ld->has_clients) {
		ld->clients = calloc((size_t)ld->cfg.conns,
		    sizeof(*ld->clients));
		if (ld->clients == NULL)
			return -1;
		start_connects(ld);
	}
	event_base_dispatch(ld->base);
	/* Let the last closes reach the server channels. */
	for (i = 0; ld->has_clients && i < 1000 && ld->server_open > 0; i++)
		event_base_loop(ld->base, EVLOOP_ONCE);
	if (ld->server_open > 0)
		load_fail(ld, "%d server channels still open", ld->server_open);
	return 0;
}

/* Release what load_loop() made.  Server channels still open (a failed
 * run) go with the base's bufferevents. */
static void
load_cleanup(struct load *ld)
{
	int i;

	for (i = 0; ld->clients != NULL && i < ld->cfg.conns; i++) {
		struct load_client *c = &ld->clients[i];

		if (!c->closed && c->bev != NULL) {
			ld->st.lost++;
			bufferevent_free(c->bev);
		}
		if (c->pending != NULL)
			evbuffer_free(c->pending);
		if (c->expect != NULL)
			evbuffer_free(c->expect);
		free(c->reply_len);
	}
	free(ld->clients);
	if (ld->listener != NULL)
		async_chat_listener_free(ld->listener);
	if (ld->report_ev != NULL)
		event_free(ld->report_ev);
	if (ld->timer != NULL)
		event_free(ld->timer);
	if (ld->base != NULL)
		event_base_free(ld->base);
}

static long
load_peak_rss(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* The clients' process: run them, report, exit. */
static void
load_child(struct load *ld, int report_fd)
{
	ld->has_server = 0;
	ld->has_clients = 1;
	ld->report_fd = -1;
	if (load_loop(ld, -1) < 0)
		load_fail(ld, "client setup failed (errno %d)", errno);
	load_cleanup(ld);
	ld->st.client_rss_kib = load_peak_rss();
	if (write(report_fd, &ld->st, sizeof(ld->st)) !=
	    (ssize_t)sizeof(ld->st))
		_exit(3);
	_exit(0);
}

/* Run the load; 0 if every reply of every connection was right, 1 if
 * not, -1 if it could not be set up. */
static int
load_run(const struct load_config *cfg, struct load_stats *st)
{
	struct load *ld = calloc(1, sizeof(*ld));
	int listen_fd, pipefd[2] = { -1, -1 }, rc, status;
	pid_t pid = -1;
	struct rlimit rl;

	if (ld == NULL)
		return -1;
	ld->cfg = *cfg;
	ld->report_fd = -1;
	if (load_raise_nofile(cfg->conns) < 0 && cfg->processes == 1) {
		fprintf(stderr, "load: %d connections need %d descriptors\n",
		    cfg->conns, cfg->conns * 2 + 64);
		free(ld);
		return -1;
	}
	ld->st.processes = cfg->processes;
	if (ld->st.processes == 0)
		ld->st.processes = getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
			rl.rlim_cur >= (rlim_t)cfg->conns * 2 + 64 ?
		    1 :
		    2;
	if (ld->st.processes == 2 &&
	    (getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
		rl.rlim_cur < (rlim_t)cfg->conns + 64)) {
		fprintf(stderr, "load: %d connections need %d descriptors "
				"in each of two processes\n",
		    cfg->conns, cfg->conns + 64);
		free(ld);
		return -1;
	}
	listen_fd = load_listen(&ld->addr);
	if (listen_fd < 0) {
		fprintf(stderr, "load: listen: %s\n", strerror(errno));
		free(ld);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ld->t0);
	ld->has_server = 1;
	ld->has_clients = ld->st.processes == 1;
	if (!ld->has_clients) {
		/* Before any event_base exists: the child makes its own. */
		fflush(NULL);
		if (pipe(pipefd) < 0 || (pid = fork()) < 0) {
			fprintf(stderr, "load: fork: %s\n", strerror(errno));
			close(listen_fd);
			free(ld);
			return -1;
		}
		if (pid == 0) {
			close(listen_fd);
			close(pipefd[0]);
			load_child(ld, pipefd[1]);
		}
		close(pipefd[1]);
		ld->report_fd = pipefd[0];
	}
	if (load_loop(ld, listen_fd) < 0) {
		load_fail(ld, "setup failed (errno %d)", errno);
		if (ld->listener == NULL)
			close(listen_fd);
	}
	ld->st.seconds = load_elapsed(&ld->t0);
	load_cleanup(ld);
	if (pid > 0) {
		if (!ld->reported)
			kill(pid, SIGKILL); /* hung: the time limit passed */
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0)
			load_fail(ld, "the clients' process failed (status %d)",
			    status);
		close(pipefd[0]);
		ld->st.held = ld->st.held < ld->client_st.held ?
		    ld->st.held :
		    ld->client_st.held;
		ld->st.messages = ld->client_st.messages;
		ld->st.bytes_sent = ld->client_st.bytes_sent;
		ld->st.bytes_checked = ld->client_st.bytes_checked;
		ld->st.failures += ld->client_st.failures;
		ld->st.lost += ld->client_st.lost;
		ld->st.client_rss_kib = ld->client_st.client_rss_kib;
	}
	ld->st.peak_rss_kib = load_peak_rss();
	*st = ld->st;
	rc = st->failures == 0 && st->lost == 0 &&
		st->messages == (uint64_t)cfg->conns * (uint64_t)cfg->msgs ?
	    0 :
	    1;
	free(ld);
	return rc;
}

#ifndef LOAD_EMBEDDED
static void
usage(void)
{
	fprintf(stderr, "usage: load [-c connections] [-m messages] "
			"[-d depth] [-s seed] [-T seconds] [-1 | -2] [-q] "
			"[connections]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct load_config cfg = { 10000, 20, 8, 1, 300, 0, 0 };
	struct load_stats st;
	int opt, rc;

	while ((opt = getopt(argc, argv, "c:m:d:s:T:q12")) != -1) {
		switch (opt) {
		case '1':
		case '2':
			cfg.processes = opt - '0';
			break;
		case 'c':
			cfg.conns = atoi(optarg);
			break;
		case 'm':
			cfg.msgs = atoi(optarg);
			break;
		case 'd':
			cfg.depth = atoi(optarg);
			break;
		case 's':
			cfg.seed = strtoull(optarg, NULL, 0);
			break;
		case 'T':
			cfg.timeout_s = atoi(optarg);
			break;
		case 'q':
			cfg.quiet = 1;
			break;
		default:
			usage();
		}
	}
	if (optind < argc)
		cfg.conns = atoi(argv[optind++]);
	if (optind != argc || cfg.conns <= 0 || cfg.msgs <= 0 ||
	    cfg.depth <= 0 || cfg.timeout_s <= 0)
		usage();
	if (cfg.seed == 0)
		cfg.seed = 1;
	signal(SIGPIPE, SIG_IGN);
	rc = load_run(&cfg, &st);
	if (rc < 0)
		return 2;
	printf("load conns=%d held=%d msgs=%" PRIu64 " bytes_sent=%" PRIu64
	       " bytes_checked=%" PRIu64 " failures=%d lost=%d secs=%.2f "
	       "processes=%d server_peak_rss_kib=%ld",
	    cfg.conns, st.held, st.messages, st.bytes_sent, st.bytes_checked,
	    st.failures, st.lost, st.seconds, st.processes, st.peak_rss_kib);
	if (st.processes == 2)
		printf(" client_peak_rss_kib=%ld", st.client_rss_kib);
	printf(" result=%s\n", rc == 0 ? "ok" : "FAILED");
	return rc == 0 ? 0 : 1;
}
#endif /* LOAD_EMBEDDED */
