/*
 * check_asynchat.c - CPython 3.11's test_asynchat.py, scenario by scenario,
 * over real loopback TCP (127.0.0.1 and ::1) on several event backends,
 * and a randomized conformance check of libasynchat's framing against
 * CPython's asynchat: against the golden transcripts recorded from
 * CPython 3.11 (test/asynchat_golden.txt, `make regen-golden`) everywhere,
 * and live against the real asynchat module (test/asynchat_conformance.py)
 * where a Python that has it is found.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "asynchat-internal.h"
#include "testutil.h"

#define SERVER_QUIT "QUIT\n"
#define SERVER_QUIT_LEN 5
/* Generous: a scenario normally ends in tens of milliseconds. */
#define RUN_TIMEOUT_MS 5000

/*
 * Event backends.  CPython runs its suite with select (TestAsynchat) and
 * poll (TestAsynchat_WithPoll); libevent's default on Linux is epoll.
 */
enum { BACKEND_DEFAULT, BACKEND_NO_EPOLL, BACKEND_SELECT, N_BACKENDS };
static const char *const backend_label[N_BACKENDS] = {
	"default", "no-epoll", "select-only"
};

/* A variant is a backend and an address family: loop tests enumerate
 * every variant for every parameter of a scenario. */
#define N_VARIANTS (N_BACKENDS * 2)

static struct event_base *
backend_base(int backend)
{
	struct event_config *cfg;
	struct event_base *base;

	if (backend == BACKEND_DEFAULT)
		return event_base_new();
	cfg = event_config_new();
	if (cfg == NULL)
		return NULL;
	base = NULL;
	if (event_config_avoid_method(cfg, "epoll") == 0 &&
	    (backend != BACKEND_SELECT ||
		event_config_avoid_method(cfg, "poll") == 0))
		base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

static struct event_base *
variant_base(int backend)
{
	struct event_base *base = backend_base(backend);
	const char *method;

	ck_assert_msg(base != NULL, "no event_base for the %s backend",
	    backend_label[backend]);
	method = event_base_get_method(base);
	if (backend == BACKEND_NO_EPOLL)
		ck_assert_str_ne(method, "epoll");
	else if (backend == BACKEND_SELECT)
		ck_assert_str_eq(method, "select");
	return base;
}

/*
 * The echo server, written like CPython's: a thread with blocking sockets
 * that accepts one connection, reads a byte at a time until it has seen
 * QUIT, optionally waits for permission, then sends everything back
 * chunk_size bytes at a time with a pause between sends, and closes.
 */
struct echo_server {
	evutil_socket_t lsock;
	struct sockaddr_storage addr;
	ev_socklen_t addrlen;
	size_t chunk_size;
	int wait_resend;
	/* A safety net only: a broken client cannot hang the thread. */
	struct timeval patience;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	int resend; /* the client allows the echo (under lock) */

	/* Written by the thread, read after the join. */
	unsigned char *buf; /* received bytes, QUIT removed */
	size_t len, cap;
	int saw_quit;
	size_t sent;

	pthread_t thread;
	int running;
};

static void
server_append(struct echo_server *s, unsigned char b)
{
	if (s->len == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 64;
		s->buf = realloc(s->buf, s->cap);
		if (s->buf == NULL)
			abort();
	}
	s->buf[s->len++] = b;
}

static void *
echo_server_main(void *arg)
{
	struct echo_server *s = arg;
	const struct timespec pause = { 0, 1000000 };
	evutil_socket_t conn;
	size_t off = 0;

	do
		conn = accept(s->lsock, NULL, NULL);
	while (conn < 0 && errno == EINTR);
	if (conn < 0)
		return NULL;
	setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &s->patience,
	    sizeof(s->patience));
	for (;;) {
		unsigned char b;
		ssize_t n = recv(conn, &b, 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		server_append(s, b);
		if (s->len >= SERVER_QUIT_LEN &&
		    memcmp(s->buf + s->len - SERVER_QUIT_LEN, SERVER_QUIT,
			SERVER_QUIT_LEN) == 0) {
			s->len -= SERVER_QUIT_LEN;
			s->saw_quit = 1;
			break;
		}
	}
	if (s->wait_resend) {
		pthread_mutex_lock(&s->lock);
		while (!s->resend)
			pthread_cond_wait(&s->cond, &s->lock);
		pthread_mutex_unlock(&s->lock);
	}
	while (off < s->len) {
		size_t want = s->len - off;
		ssize_t n;

		if (want > s->chunk_size)
			want = s->chunk_size;
		/* The client may be gone (close_when_done): no SIGPIPE. */
		n = send(conn, s->buf + off, want, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		nanosleep(&pause, NULL);
		off += (size_t)n;
	}
	s->sent = off;
	evutil_closesocket(conn);
	return NULL;
}

/* Returns -1 when ::1 cannot be bound on this machine (the caller skips
 * the IPv6 variant); any other failure fails the test. */
static int
echo_server_start(struct echo_server *s, int family, size_t chunk_size,
    int wait_resend)
{
	int one = 1;

	memset(s, 0, sizeof(*s));
	s->patience.tv_sec = 10;
	s->chunk_size = chunk_size;
	s->wait_resend = wait_resend;
	s->lsock = socket(family, SOCK_STREAM, 0);
	if (s->lsock < 0 && family == AF_INET6)
		return -1;
	ck_assert_msg(s->lsock >= 0, "socket: %s", strerror(errno));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->addr;

		setsockopt(s->lsock, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		s->addrlen = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&s->addr;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		s->addrlen = sizeof(*sin);
	}
	if (bind(s->lsock, (struct sockaddr *)&s->addr, s->addrlen) < 0) {
		int err = errno;

		evutil_closesocket(s->lsock);
		if (family == AF_INET6)
			return -1;
		ck_abort_msg("bind 127.0.0.1: %s", strerror(err));
	}
	ck_assert_int_eq(listen(s->lsock, 1), 0);
	ck_assert_int_eq(getsockname(s->lsock, (struct sockaddr *)&s->addr,
			     &s->addrlen),
	    0);
	setsockopt(s->lsock, SOL_SOCKET, SO_RCVTIMEO, &s->patience,
	    sizeof(s->patience));
	ck_assert_int_eq(pthread_mutex_init(&s->lock, NULL), 0);
	ck_assert_int_eq(pthread_cond_init(&s->cond, NULL), 0);
	ck_assert_int_eq(pthread_create(&s->thread, NULL, echo_server_main, s),
	    0);
	s->running = 1;
	return 0;
}

/* CPython's start_resend_event.set(). */
static void
echo_server_allow_resend(struct echo_server *s)
{
	pthread_mutex_lock(&s->lock);
	s->resend = 1;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
}

static void
echo_server_join(struct echo_server *s)
{
	if (!s->running)
		return;
	echo_server_allow_resend(s);
	ck_assert_int_eq(pthread_join(s->thread, NULL), 0);
	s->running = 0;
}

static void
echo_server_free(struct echo_server *s)
{
	echo_server_join(s);
	evutil_closesocket(s->lsock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->buf);
	s->buf = NULL;
}

/*
 * The client: CPython's echo_client as an async_chat channel.  In message
 * mode (no collect handler) found_terminator takes each frame from
 * async_chat_incoming().
 */
struct client {
	struct tu_frames f;
	struct async_chat *chat; /* NULL once handle_free has run */
	int message_mode;
};

static void
client_collect(struct async_chat *chat, const char *data, size_t len,
    void *arg)
{
	struct client *c = arg;

	(void)chat;
	tu_frames_collect(&c->f, data, len);
}

static void
client_found(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (c->message_mode) {
		struct evbuffer *in = async_chat_incoming(chat);
		size_t len;

		ck_assert_ptr_nonnull(in);
		len = evbuffer_get_length(in);
		ck_assert_int_eq(evbuffer_remove_buffer(in, c->f.cur, len),
		    (int)len);
	}
	tu_frames_found(&c->f);
}

static void
client_connect(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	(void)chat;
	c->f.connects++;
}

/* CPython's handle_close: close at once. */
static void
client_close(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	c->f.closes++;
	async_chat_close(chat);
}

static void
client_error(struct async_chat *chat, int err, void *arg)
{
	struct client *c = arg;

	c->f.errors++;
	c->f.last_error = err;
	async_chat_close(chat);
}

static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	(void)chat;
	c->f.frees++;
	c->chat = NULL;
}

static const struct async_chat_handlers client_handlers = {
	.collect_incoming_data = client_collect,
	.found_terminator = client_found,
	.handle_connect = client_connect,
	.handle_close = client_close,
	.handle_error = client_error,
	.handle_free = client_free,
};

static const struct async_chat_handlers message_handlers = {
	.collect_incoming_data = NULL,
	.found_terminator = client_found,
	.handle_connect = client_connect,
	.handle_close = client_close,
	.handle_error = client_error,
	.handle_free = client_free,
};

static int
client_gone(void *arg)
{
	const struct client *c = arg;

	return c->f.frees > 0;
}

/*
 * A scenario: one echo server, one event_base and one connecting client.
 */
struct scenario {
	int backend, family;
	char what[96]; /* for messages */
	struct event_base *base;
	struct echo_server srv;
	struct client cl;
};

/* Returns -1 when the variant cannot run here (::1 cannot be bound). */
static int
scenario_start(struct scenario *sc, int variant, size_t chunk_size,
    int wait_resend, int message_mode)
{
	memset(sc, 0, sizeof(*sc));
	sc->backend = variant % N_BACKENDS;
	sc->family = variant / N_BACKENDS ? AF_INET6 : AF_INET;
	if (echo_server_start(&sc->srv, sc->family, chunk_size, wait_resend) <
	    0)
		return -1;
	sc->base = variant_base(sc->backend);
	snprintf(sc->what, sizeof(sc->what), "%s backend (%s), %s, chunk %zu%s",
	    backend_label[sc->backend], event_base_get_method(sc->base),
	    sc->family == AF_INET6 ? "[::1]" : "127.0.0.1", chunk_size,
	    message_mode ? ", message mode" : "");
	tu_frames_init(&sc->cl.f);
	sc->cl.message_mode = message_mode;
	sc->cl.chat = async_chat_new(sc->base, -1,
	    message_mode ? &message_handlers : &client_handlers, &sc->cl);
	ck_assert_ptr_nonnull(sc->cl.chat);
	ck_assert_int_eq(async_chat_connect(sc->cl.chat,
			     (struct sockaddr *)&sc->srv.addr,
			     (int)sc->srv.addrlen),
	    0);
	return 0;
}

/* CPython's asyncore.loop(count=300) and join_thread(), bounded by time
 * instead: the client channel ends when the server's EOF arrives (or when
 * it closes itself). */
static void
scenario_run(struct scenario *sc)
{
	int rc = tu_run_until(sc->base, client_gone, &sc->cl, RUN_TIMEOUT_MS);

	if (rc != 0) {
		/* Unblock the server thread whatever state it is in, so
		 * the failure below is reported instead of a hang. */
		if (sc->cl.chat != NULL)
			async_chat_close(sc->cl.chat);
		shutdown(sc->srv.lsock, SHUT_RDWR);
	}
	echo_server_join(&sc->srv);
	ck_assert_msg(rc == 0,
	    "%s: the client was not closed within %d ms (%zu frames, %d "
	    "errors, last %d %s)",
	    sc->what, RUN_TIMEOUT_MS, sc->cl.f.n, sc->cl.f.errors,
	    sc->cl.f.last_error, async_chat_strerror(sc->cl.f.last_error));
}

static void
scenario_end(struct scenario *sc)
{
	if (sc->cl.chat != NULL)
		async_chat_close(sc->cl.chat);
	ck_assert_ptr_null(sc->cl.chat);
	event_base_free(sc->base);
	tu_frames_clear(&sc->cl.f);
	echo_server_free(&sc->srv);
}

/* What every scenario that ends with the server's EOF expects. */
static void
assert_clean_end(const struct scenario *sc)
{
	ck_assert_msg(sc->cl.f.errors == 0, "%s: handle_error(%d: %s)",
	    sc->what, sc->cl.f.last_error,
	    async_chat_strerror(sc->cl.f.last_error));
	ck_assert_int_eq(sc->cl.f.connects, 1);
	ck_assert_int_eq(sc->cl.f.closes, 1);
	ck_assert_int_eq(sc->cl.f.frees, 1);
	ck_assert_msg(sc->srv.saw_quit, "%s: the server never saw QUIT",
	    sc->what);
	ck_assert_uint_eq(sc->srv.sent, sc->srv.len);
	if (sc->cl.message_mode)
		ck_assert_int_eq(sc->cl.f.collects, 0);
}

static void
push_bytes(struct async_chat *chat, const void *data, size_t len)
{
	ck_assert_int_eq(async_chat_push(chat, data, len), 0);
}

static void
push_str(struct async_chat *chat, const char *s)
{
	push_bytes(chat, s, strlen(s));
}

static void
assert_frame(const struct scenario *sc, size_t i, const void *want,
    size_t len)
{
	const struct tu_frames *f = &sc->cl.f;
	int have = i < f->n;

	ck_assert_msg(tu_frame_eq(f, i, want, len),
	    "%s: frame %zu is \"%.*s\", want \"%.*s\"", sc->what, i,
	    have ? (int)f->len[i] : 0, have ? f->frame[i] : "", (int)len,
	    (const char *)want);
}

static void
assert_frames2(const struct scenario *sc)
{
	ck_assert_msg(sc->cl.f.n == 2, "%s: %zu frames, want 2", sc->what,
	    sc->cl.f.n);
	assert_frame(sc, 0, "hello world", 11);
	assert_frame(sc, 1, "I'm not dead yet!", 17);
	ck_assert_msg(tu_cur_eq(&sc->cl.f, "", 0),
	    "%s: %zu bytes collected after the last frame", sc->what,
	    evbuffer_get_length(sc->cl.f.cur));
}

/*
 * test_line_terminator1/2/3: terminators of 1, 2 and 3 bytes, each echoed
 * 1, 2 and 3 bytes per send so that every split of a terminator across
 * reads happens.
 */
static const char *const line_terms[] = { "\n", "\r\n", "qqq" };
static const size_t server_chunks[] = { 1, 2, 3 };

static void
line_terminator_check(int variant, const char *term, size_t chunk_size,
    int message_mode)
{
	size_t tlen = strlen(term);
	char world[64], alive[64];
	struct scenario sc;

	if (scenario_start(&sc, variant, chunk_size, 0, message_mode) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, term, tlen), 0);
	snprintf(world, sizeof(world), "world%s", term);
	snprintf(alive, sizeof(alive), "I'm not dead yet!%s", term);
	push_str(sc.cl.chat, "hello ");
	push_str(sc.cl.chat, world);
	push_str(sc.cl.chat, alive);
	push_str(sc.cl.chat, SERVER_QUIT);
	scenario_run(&sc);

	assert_clean_end(&sc);
	ck_assert_uint_eq(sc.srv.len, 6 + strlen(world) + strlen(alive));
	assert_frames2(&sc);
	scenario_end(&sc);
}

START_TEST(test_line_terminator)
{
	int variant = _i % N_VARIANTS, p = _i / N_VARIANTS;

	line_terminator_check(variant, line_terms[p / 3],
	    server_chunks[p % 3], 0);
}
END_TEST

START_TEST(test_line_terminator_message_mode)
{
	int variant = _i % N_VARIANTS, p = _i / N_VARIANTS;

	line_terminator_check(variant, line_terms[p / 3],
	    server_chunks[p % 3], 1);
}
END_TEST

static const char numeric_data[] = "hello world, I'm not dead yet!\n";

/* test_numeric_terminator1/2: a spent count frames like no terminator. */
START_TEST(test_numeric_terminator)
{
	static const uint64_t counts[] = { 1, 6 };
	int variant = _i % N_VARIANTS;
	uint64_t count = counts[_i / N_VARIANTS];
	size_t len = sizeof(numeric_data) - 1;
	struct scenario sc;

	if (scenario_start(&sc, variant, 1, 0, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator_count(sc.cl.chat, count),
	    0);
	push_bytes(sc.cl.chat, numeric_data, len);
	push_str(sc.cl.chat, SERVER_QUIT);
	scenario_run(&sc);

	assert_clean_end(&sc);
	ck_assert_msg(sc.cl.f.n == 1, "%s: %zu frames, want 1", sc.what,
	    sc.cl.f.n);
	assert_frame(&sc, 0, numeric_data, (size_t)count);
	ck_assert(tu_cur_eq(&sc.cl.f, numeric_data + count, len - count));
	scenario_end(&sc);
}
END_TEST

/* test_none_terminator, with the three spellings of "no terminator". */
START_TEST(test_none_terminator)
{
	int variant = _i % N_VARIANTS, how = _i / N_VARIANTS;
	size_t len = sizeof(numeric_data) - 1;
	struct async_chat_terminator t;
	struct scenario sc;

	if (scenario_start(&sc, variant, 1, 0, 0) < 0)
		return;
	/* The terminator is set to something else first, so that each
	 * spelling has to switch it off. */
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	if (how == 0)
		ck_assert_int_eq(async_chat_set_terminator_none(sc.cl.chat),
		    0);
	else if (how == 1)
		ck_assert_int_eq(async_chat_set_terminator_count(sc.cl.chat,
				     0),
		    0);
	else
		ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "", 0),
		    0);
	ck_assert_int_eq(async_chat_get_terminator(sc.cl.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	push_bytes(sc.cl.chat, numeric_data, len);
	push_str(sc.cl.chat, SERVER_QUIT);
	scenario_run(&sc);

	assert_clean_end(&sc);
	ck_assert_uint_eq(sc.cl.f.n, 0);
	ck_assert_int_eq(sc.cl.f.founds, 0);
	ck_assert(tu_cur_eq(&sc.cl.f, numeric_data, len));
	scenario_end(&sc);
}
END_TEST

static const char two_lines_quit[] =
    "hello world\nI'm not dead yet!\n" SERVER_QUIT;

START_TEST(test_simple_producer)
{
	struct scenario sc;

	if (scenario_start(&sc, _i, 1, 0, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	ck_assert_int_eq(async_chat_push_simple_producer(sc.cl.chat,
			     two_lines_quit, sizeof(two_lines_quit) - 1, 8),
	    0);
	scenario_run(&sc);

	assert_clean_end(&sc);
	assert_frames2(&sc);
	scenario_end(&sc);
}
END_TEST

/* A producer that hands over its whole string at once: CPython's
 * push_with_producer(bytes). */
struct once_producer {
	const char *data;
	size_t len;
	int calls, frees;
};

static int
once_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct once_producer *p = ctx;

	(void)size_hint;
	if (p->calls++ == 0)
		return evbuffer_add(out, p->data, p->len);
	return 0;
}

static void
once_free(void *ctx)
{
	struct once_producer *p = ctx;

	p->frees++;
}

static const struct async_chat_producer_ops once_ops = {
	once_more, once_free
};

/* test_string_producer: the string pushed as such, and as a producer. */
START_TEST(test_string_producer)
{
	struct once_producer p = { two_lines_quit, sizeof(two_lines_quit) - 1,
		0, 0 };
	int variant = _i % N_VARIANTS, as_producer = _i / N_VARIANTS;
	struct scenario sc;

	if (scenario_start(&sc, variant, 1, 0, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	if (as_producer)
		ck_assert_int_eq(async_chat_push_with_producer(sc.cl.chat,
				     &once_ops, &p),
		    0);
	else
		push_str(sc.cl.chat, two_lines_quit);
	scenario_run(&sc);

	assert_clean_end(&sc);
	assert_frames2(&sc);
	if (as_producer) {
		/* Its second more() added nothing: exhausted and freed. */
		ck_assert_int_ge(p.calls, 2);
		ck_assert_int_eq(p.frees, 1);
	}
	scenario_end(&sc);
	ck_assert_int_eq(p.frees, as_producer ? 1 : 0);
}
END_TEST

START_TEST(test_empty_line)
{
	struct scenario sc;

	if (scenario_start(&sc, _i, 1, 0, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	push_str(sc.cl.chat, "hello world\n\nI'm not dead yet!\n");
	push_str(sc.cl.chat, SERVER_QUIT);
	scenario_run(&sc);

	assert_clean_end(&sc);
	ck_assert_msg(sc.cl.f.n == 3, "%s: %zu frames, want 3", sc.what,
	    sc.cl.f.n);
	assert_frame(&sc, 0, "hello world", 11);
	assert_frame(&sc, 1, "", 0);
	assert_frame(&sc, 2, "I'm not dead yet!", 17);
	scenario_end(&sc);
}
END_TEST

/*
 * test_close_when_done: the server echoes only after the client has
 * closed, so nothing may come back, yet everything queued before
 * close_when_done() must have reached the server.
 */
START_TEST(test_close_when_done)
{
	static const char data[] = "hello world\nI'm not dead yet!\n";
	struct scenario sc;

	if (scenario_start(&sc, _i, 1, 1, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	push_str(sc.cl.chat, data);
	push_str(sc.cl.chat, SERVER_QUIT);
	ck_assert_int_eq(async_chat_close_when_done(sc.cl.chat), 0);
	/* libasynchat refuses data that would never be sent (CPython
	 * queues it). */
	errno = 0;
	ck_assert_int_eq(async_chat_push(sc.cl.chat, "late\n", 5), -1);
	ck_assert_int_eq(errno, EPIPE);
	scenario_run(&sc); /* allows the resend, after the client is gone */

	ck_assert_msg(sc.cl.f.errors == 0, "%s: handle_error(%d: %s)",
	    sc.what, sc.cl.f.last_error,
	    async_chat_strerror(sc.cl.f.last_error));
	ck_assert_int_eq(sc.cl.f.connects, 1);
	ck_assert_int_eq(sc.cl.f.closes, 0); /* no EOF was seen */
	ck_assert_int_eq(sc.cl.f.frees, 1);
	ck_assert_uint_eq(sc.cl.f.n, 0);
	ck_assert_int_eq(sc.cl.f.collects, 0);
	ck_assert(sc.srv.saw_quit);
	ck_assert_uint_gt(sc.srv.len, 0);
	ck_assert_uint_eq(sc.srv.len, sizeof(data) - 1);
	ck_assert_int_eq(memcmp(sc.srv.buf, data, sc.srv.len), 0);
	scenario_end(&sc);
}
END_TEST

/*
 * test_push: the same bytes by copy, by evbuffer and by reference, with
 * bad pushes (CPython's TypeError cases) in between that must change
 * nothing.
 */
static const char bytes_line[] = "bytes\n";

struct ref_cleanup {
	int calls;
	int bad; /* called with other data or length */
};

static void
ref_cleanup_cb(const void *data, size_t len, void *arg)
{
	struct ref_cleanup *rc = arg;

	rc->calls++;
	if (data != bytes_line || len != sizeof(bytes_line) - 1)
		rc->bad++;
}

static void
bad_pushes(struct async_chat *chat, struct ref_cleanup *rc)
{
	errno = 0;
	ck_assert_int_eq(async_chat_push(chat, NULL, 10), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push(NULL, bytes_line, 6), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(chat, NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_reference(chat, NULL, 6,
			     ref_cleanup_cb, rc),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_reference(NULL, bytes_line, 6,
			     ref_cleanup_cb, rc),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(chat, NULL, 6, 8),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(chat, NULL, NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* A failed push_reference never runs the cleanup. */
	ck_assert_int_eq(rc->calls, 0);
	/* Nothing at all is a valid push of nothing. */
	ck_assert_int_eq(async_chat_push(chat, NULL, 0), 0);
}

START_TEST(test_push)
{
	struct ref_cleanup rc = { 0, 0 };
	struct evbuffer *buf;
	struct scenario sc;

	if (scenario_start(&sc, _i, 1, 0, 0) < 0)
		return;
	ck_assert_int_eq(async_chat_set_terminator(sc.cl.chat, "\n", 1), 0);
	push_str(sc.cl.chat, bytes_line);
	buf = evbuffer_new();
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(evbuffer_add(buf, bytes_line, 6), 0);
	ck_assert_int_eq(async_chat_push_buffer(sc.cl.chat, buf), 0);
	ck_assert_uint_eq(evbuffer_get_length(buf), 0); /* moved, not copied */
	evbuffer_free(buf);
	ck_assert_int_eq(async_chat_push_reference(sc.cl.chat, bytes_line, 6,
			     ref_cleanup_cb, &rc),
	    0);
	bad_pushes(sc.cl.chat, &rc);
	push_str(sc.cl.chat, SERVER_QUIT);
	scenario_run(&sc);

	assert_clean_end(&sc);
	ck_assert_msg(sc.cl.f.n == 3, "%s: %zu frames, want 3", sc.what,
	    sc.cl.f.n);
	assert_frame(&sc, 0, "bytes", 5);
	assert_frame(&sc, 1, "bytes", 5);
	assert_frame(&sc, 2, "bytes", 5);
	ck_assert_int_eq(rc.calls, 1); /* sent: released once */
	scenario_end(&sc);
	ck_assert_int_eq(rc.calls, 1);
	ck_assert_int_eq(rc.bad, 0);
}
END_TEST

/*
 * CPython's mocked and helper tests, on a socket pair: no server needed.
 */
struct pair_chat {
	struct event_base *base;
	evutil_socket_t sv[2];
	struct client cl;
};

static void
pair_chat_open(struct pair_chat *pc)
{
	memset(pc, 0, sizeof(*pc));
	pc->base = event_base_new();
	ck_assert_ptr_nonnull(pc->base);
	tu_socketpair(pc->sv);
	tu_frames_init(&pc->cl.f);
	pc->cl.chat = async_chat_new(pc->base, pc->sv[0], &client_handlers,
	    &pc->cl);
	ck_assert_ptr_nonnull(pc->cl.chat);
}

static void
pair_chat_close(struct pair_chat *pc)
{
	if (pc->cl.chat != NULL)
		async_chat_close(pc->cl.chat);
	evutil_closesocket(pc->sv[1]);
	event_base_free(pc->base);
	tu_frames_clear(&pc->cl.f);
}

static void
pair_send(struct pair_chat *pc, const char *s)
{
	size_t len = strlen(s);

	ck_assert_int_eq(send(pc->sv[1], s, len, 0), (ssize_t)len);
}

struct until_collected {
	const struct client *c;
	size_t frames, cur;
};

static int
collected(void *arg)
{
	const struct until_collected *u = arg;

	return u->c->f.n >= u->frames &&
	    evbuffer_get_length(u->c->f.cur) >= u->cur;
}

static void
pair_wait(struct pair_chat *pc, size_t frames, size_t cur)
{
	struct until_collected u = { &pc->cl, frames, cur };

	ck_assert_msg(tu_run_until(pc->base, collected, &u, RUN_TIMEOUT_MS) ==
		0,
	    "waited for %zu frames and %zu bytes, have %zu and %zu", frames,
	    cur, pc->cl.f.n, evbuffer_get_length(pc->cl.f.cur));
}

/* The bytes received and not framed yet: those the framer holds back
 * (CPython keeps them in ac_in_buffer), then any unread input. */
static void
held_bytes(struct async_chat *chat, struct evbuffer *out)
{
	struct evbuffer *in =
	    bufferevent_get_input(async_chat_get_bufferevent(chat));
	size_t n = chat->fr.carry_len - chat->fr.carry_off;

	ck_assert_int_eq(evbuffer_add(out, chat->fr.carry + chat->fr.carry_off,
	                     n), 0);
	if (evbuffer_get_length(in) > 0)
		ck_assert_int_eq(evbuffer_add(out,
		                     evbuffer_pullup(in, -1),
		                     evbuffer_get_length(in)), 0);
}

static size_t
pair_held(struct pair_chat *pc)
{
	struct evbuffer *held = evbuffer_new();
	size_t n;

	ck_assert_ptr_nonnull(held);
	held_bytes(pc->cl.chat, held);
	n = evbuffer_get_length(held);
	evbuffer_free(held);
	return n;
}

/* TestAsynchatMocked.test_blockingioerror: a read event with nothing to
 * read is no error, and the channel goes on working. */
START_TEST(test_spurious_read)
{
	struct pair_chat pc;

	pair_chat_open(&pc);
	ck_assert_int_eq(async_chat_set_terminator(pc.cl.chat, "\n", 1), 0);
	bufferevent_trigger(async_chat_get_bufferevent(pc.cl.chat), EV_READ,
	    BEV_TRIG_IGNORE_WATERMARKS);
	ck_assert_int_eq(pc.cl.f.errors, 0);
	ck_assert_int_eq(pc.cl.f.collects, 0);
	ck_assert_int_eq(pc.cl.f.founds, 0);
	ck_assert_int_eq(pc.cl.f.closes, 0);
	pair_send(&pc, "ok\n");
	pair_wait(&pc, 1, 0);
	ck_assert(tu_frame_is(&pc.cl.f, 0, "ok"));
	ck_assert_int_eq(pc.cl.f.errors, 0);
	pair_chat_close(&pc);
}
END_TEST

/* TestHelperFunctions.test_find_prefix_at_end, seen from the channel: a
 * tail that may begin the terminator is held back, anything else is
 * collected at once. */
START_TEST(test_prefix_at_end)
{
	struct pair_chat pc;

	pair_chat_open(&pc);
	ck_assert_int_eq(async_chat_set_terminator(pc.cl.chat, "\r\n", 2), 0);
	pair_send(&pc, "qwerty\r");
	pair_wait(&pc, 0, 6);
	ck_assert(tu_cur_eq(&pc.cl.f, "qwerty", 6));
	ck_assert_uint_eq(pair_held(&pc), 1);
	pair_send(&pc, "\n");
	pair_wait(&pc, 1, 0);
	ck_assert(tu_frame_is(&pc.cl.f, 0, "qwerty"));
	ck_assert_uint_eq(pair_held(&pc), 0);
	pair_send(&pc, "qwertydkjf");
	pair_wait(&pc, 1, 10);
	ck_assert(tu_cur_eq(&pc.cl.f, "qwertydkjf", 10));
	ck_assert_uint_eq(pair_held(&pc), 0);
	pair_chat_close(&pc);
}
END_TEST

/* TestNotConnected.test_disallow_negative_terminator: a count is unsigned
 * in C, so the bad terminators are the malformed strings; a refused
 * terminator leaves the current one in place. */
START_TEST(test_bad_terminator)
{
	static char big[ASYNC_CHAT_TERMINATOR_MAX + 1];
	struct async_chat_terminator t;
	struct event_base *base = event_base_new();
	struct client cl;

	ck_assert_ptr_nonnull(base);
	memset(&cl, 0, sizeof(cl));
	tu_frames_init(&cl.f);
	cl.chat = async_chat_new(base, -1, &client_handlers, &cl);
	ck_assert_ptr_nonnull(cl.chat);
	ck_assert_int_eq(async_chat_set_terminator(cl.chat, "\r\n", 2), 0);
	errno = 0;
	ck_assert_int_eq(async_chat_set_terminator(cl.chat, NULL, 2), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_terminator(cl.chat, big, sizeof(big)),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_terminator(NULL, "\n", 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_set_terminator_count(NULL, 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_get_terminator(cl.chat, NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(async_chat_get_terminator(cl.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 2);
	ck_assert_int_eq(memcmp(t.bytes, "\r\n", 2), 0);
	/* The largest count is a count, not an error. */
	ck_assert_int_eq(async_chat_set_terminator_count(cl.chat, UINT64_MAX),
	    0);
	ck_assert_int_eq(async_chat_get_terminator(cl.chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, UINT64_MAX);
	async_chat_close(cl.chat);
	ck_assert_int_eq(cl.f.frees, 1);
	event_base_free(base);
	tu_frames_clear(&cl.f);
}
END_TEST

/* Every push on no channel fails with EINVAL rather than crashing. */
START_TEST(test_push_null_channel)
{
	struct evbuffer *buf = evbuffer_new();
	struct ref_cleanup rc = { 0, 0 };

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(evbuffer_add(buf, "x", 1), 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push(NULL, "x", 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_buffer(NULL, buf), -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(evbuffer_get_length(buf), 1); /* still the caller's */
	errno = 0;
	ck_assert_int_eq(async_chat_push_reference(NULL, bytes_line, 6,
			     ref_cleanup_cb, &rc),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(rc.calls, 0);
	errno = 0;
	ck_assert_int_eq(async_chat_push_simple_producer(NULL, "x", 1, 8), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_with_producer(NULL, &once_ops, NULL),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_close_when_done(NULL), -1);
	ck_assert_int_eq(errno, EINVAL);
	evbuffer_free(buf);
}
END_TEST

/*
 * Conformance with CPython's asynchat: random cases framed by libasynchat
 * (over a bufferevent_pair, one read per chunk) and by
 * asynchat.async_chat.handle_read (test/asynchat_conformance.py), compared
 * frame by frame, with the collected tail and the held-back bytes, before
 * EOF.  Terminators change only in found_terminator: a count set inside
 * collect_incoming_data is a documented difference.  The same comparison
 * runs on the cases of the golden transcripts (test_conformance_golden),
 * so it holds where no Python has asynchat any more.
 */
#define CONF_CASES 200
#define CONF_MAX_DATA 160
#define CONF_MAX_SCRIPT 16
#define CONF_SEED 0x5eed0a5c4a7ULL

enum conf_kind { CONF_NONE, CONF_STRING, CONF_COUNT };

struct conf_term {
	enum conf_kind kind;
	unsigned char bytes[4];
	size_t len;
	uint64_t count;
};

struct conf_case {
	struct conf_term initial;
	/* after[k]: the terminator set in found_terminator when frame k
	 * (1-based) ends, if has_after[k]. */
	struct conf_term after[CONF_MAX_SCRIPT + 1];
	int has_after[CONF_MAX_SCRIPT + 1];
	unsigned char data[CONF_MAX_DATA];
	size_t len;
	size_t chunk[CONF_MAX_DATA]; /* lengths, all > 0, summing to len */
	size_t nchunks;
};

static size_t
rnd(uint64_t *st, size_t n)
{
	return (size_t)(tu_rand(st) % n);
}

static void
conf_random_term(uint64_t *st, const unsigned char *alpha, size_t nalpha,
    struct conf_term *t)
{
	size_t r = rnd(st, 20), i;

	memset(t, 0, sizeof(*t));
	if (r < 2) {
		t->kind = CONF_NONE;
	} else if (r < 3) {
		t->kind = CONF_STRING; /* empty: no terminator */
	} else if (r < 8) {
		t->kind = CONF_COUNT;
		t->count = rnd(st, 16) == 0 ? 0 : 1 + rnd(st, 12);
	} else {
		/* Drawn from one to three bytes: repeats and self-overlaps
		 * ("aa", "aba", "\r\r\n") are the common case. */
		t->kind = CONF_STRING;
		t->len = 1 + rnd(st, 4);
		for (i = 0; i < t->len; i++)
			t->bytes[i] = alpha[rnd(st, nalpha)];
	}
}

static void
conf_generate(uint64_t *st, struct conf_case *c)
{
	static const unsigned char pool[] = { 'a', 'b', '\r', '\n', '\0', 'q' };
	unsigned char alpha[3];
	size_t nalpha = 1 + rnd(st, 3), i, k, off;
	size_t mode = rnd(st, 5);

	memset(c, 0, sizeof(*c));
	for (i = 0; i < nalpha; i++)
		alpha[i] = pool[rnd(st, sizeof(pool))];
	conf_random_term(st, alpha, nalpha, &c->initial);
	for (k = 1; k <= CONF_MAX_SCRIPT; k++) {
		if (rnd(st, 3) == 0) {
			c->has_after[k] = 1;
			conf_random_term(st, alpha, nalpha, &c->after[k]);
		}
	}
	/* Mostly terminator bytes, so that terminators, their prefixes
	 * and near misses are frequent. */
	c->len = rnd(st, CONF_MAX_DATA + 1);
	for (i = 0; i < c->len; i++)
		c->data[i] = rnd(st, 5) != 0 ? alpha[rnd(st, nalpha)] :
					       (unsigned char)rnd(st, 256);
	for (off = 0; off < c->len; off += c->chunk[c->nchunks++]) {
		size_t left = c->len - off, n;

		switch (mode) {
		case 0:
			n = 1;
			break;
		case 1:
			n = 1 + rnd(st, 3);
			break;
		case 2:
			n = 1 + rnd(st, 16);
			break;
		case 3:
			n = left;
			break;
		default:
			n = 1 + rnd(st, left);
			break;
		}
		c->chunk[c->nchunks] = n < left ? n : left;
	}
}

static void
conf_write_hex(FILE *out, const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		fprintf(out, "%02x", p[i]);
}

static void
conf_write_term(FILE *out, const struct conf_term *t)
{
	switch (t->kind) {
	case CONF_NONE:
		fputs("none", out);
		break;
	case CONF_COUNT:
		fprintf(out, "n:%" PRIu64, t->count);
		break;
	case CONF_STRING:
		fputs("s:", out);
		conf_write_hex(out, t->bytes, t->len);
		break;
	}
}

static void
conf_write_case(FILE *out, size_t id, const struct conf_case *c)
{
	size_t i, k, off = 0;

	fprintf(out, "case %zu\nterm ", id);
	conf_write_term(out, &c->initial);
	fputc('\n', out);
	for (k = 1; k <= CONF_MAX_SCRIPT; k++) {
		if (!c->has_after[k])
			continue;
		fprintf(out, "after %zu ", k);
		conf_write_term(out, &c->after[k]);
		fputc('\n', out);
	}
	for (i = 0; i < c->nchunks; i++) {
		fputs("chunk ", out);
		conf_write_hex(out, c->data + off, c->chunk[i]);
		fputc('\n', out);
		off += c->chunk[i];
	}
	fputs("end\n", out);
}

struct conf_run {
	const struct conf_case *c;
	struct tu_frames f;
	int message_mode;
};

static void
conf_apply(struct async_chat *chat, const struct conf_term *t)
{
	int rc = -1;

	switch (t->kind) {
	case CONF_NONE:
		rc = async_chat_set_terminator_none(chat);
		break;
	case CONF_STRING:
		rc = async_chat_set_terminator(chat, t->bytes, t->len);
		break;
	case CONF_COUNT:
		rc = async_chat_set_terminator_count(chat, t->count);
		break;
	}
	ck_assert_int_eq(rc, 0);
}

static void
conf_collect(struct async_chat *chat, const char *data, size_t len,
    void *arg)
{
	struct conf_run *r = arg;

	(void)chat;
	tu_frames_collect(&r->f, data, len);
}

static void
conf_found(struct async_chat *chat, void *arg)
{
	struct conf_run *r = arg;

	if (r->message_mode) {
		struct evbuffer *in = async_chat_incoming(chat);

		ck_assert_ptr_nonnull(in);
		ck_assert_int_ge(evbuffer_remove_buffer(in, r->f.cur,
				     evbuffer_get_length(in)),
		    0);
	}
	tu_frames_found(&r->f);
	if (r->f.n <= CONF_MAX_SCRIPT && r->c->has_after[r->f.n])
		conf_apply(chat, &r->c->after[r->f.n]);
}

/* EOF is looked at after the comparison, for the documented difference;
 * the channel stays open until then. */
static void
conf_close(struct async_chat *chat, void *arg)
{
	struct conf_run *r = arg;

	(void)chat;
	r->f.closes++;
}

static void
conf_error(struct async_chat *chat, int err, void *arg)
{
	struct conf_run *r = arg;

	(void)chat;
	r->f.errors++;
	r->f.last_error = err;
}

static const struct async_chat_handlers conf_handlers = {
	.collect_incoming_data = conf_collect,
	.found_terminator = conf_found,
	.handle_close = conf_close,
	.handle_error = conf_error,
};

static const struct async_chat_handlers conf_message_handlers = {
	.collect_incoming_data = NULL,
	.found_terminator = conf_found,
	.handle_close = conf_close,
	.handle_error = conf_error,
};

static void
add_hex(struct evbuffer *out, const void *data, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		char h[2] = { digits[p[i] >> 4], digits[p[i] & 15] };

		evbuffer_add(out, h, 2);
	}
}

static void
add_hex_buffer(struct evbuffer *out, struct evbuffer *buf)
{
	size_t len = evbuffer_get_length(buf);

	if (len > 0)
		add_hex(out, evbuffer_pullup(buf, (ev_ssize_t)len), len);
}

static void
copy_buffer(struct evbuffer *dst, struct evbuffer *src)
{
	size_t len = evbuffer_get_length(src);
	const unsigned char *bytes;

	if (len == 0)
		return;
	bytes = evbuffer_pullup(src, (ev_ssize_t)len);
	ck_assert_int_eq(evbuffer_add(dst, bytes, len), 0);
}

static int
same_bytes(struct evbuffer *a, struct evbuffer *b)
{
	size_t len = evbuffer_get_length(a);

	return len == evbuffer_get_length(b) &&
	    (len == 0 ||
		memcmp(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1), len) ==
		    0);
}

/* Frame case c with libasynchat and describe the result in the driver's
 * output format, into line (NUL-terminated).  Then send EOF and check
 * that the held-back bytes reach the frame, unlike in CPython. */
static void
conf_run_case(struct event_base *base, size_t id, const struct conf_case *c,
    int message_mode, struct evbuffer *line)
{
	struct bufferevent *pair[2];
	struct async_chat *chat;
	struct evbuffer *in, *frame, *tail;
	struct conf_run r;
	size_t i, off = 0, nframes;

	memset(&r, 0, sizeof(r));
	r.c = c;
	r.message_mode = message_mode;
	tu_frames_init(&r.f);
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	chat = async_chat_new_bufferevent(pair[0],
	    message_mode ? &conf_message_handlers : &conf_handlers, &r);
	ck_assert_ptr_nonnull(chat);
	conf_apply(chat, &c->initial);
	/* Without deferred callbacks each write reaches the channel as one
	 * read, like one recv() in the driver. */
	for (i = 0; i < c->nchunks; i++) {
		ck_assert_int_eq(bufferevent_write(pair[1], c->data + off,
				     c->chunk[i]),
		    0);
		off += c->chunk[i];
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	ck_assert_int_eq(r.f.errors, 0);
	ck_assert_int_eq(r.f.closes, 0);
	frame = message_mode ? async_chat_incoming(chat) : r.f.cur;
	in = evbuffer_new();
	ck_assert_ptr_nonnull(in);
	held_bytes(chat, in);
	evbuffer_add_printf(line, "case %zu", id);
	for (i = 0; i < r.f.n; i++) {
		evbuffer_add(line, " F:", 3);
		add_hex(line, r.f.frame[i], r.f.len[i]);
	}
	evbuffer_add(line, " R:", 3);
	add_hex_buffer(line, frame);
	evbuffer_add(line, " H:", 3);
	add_hex_buffer(line, in);
	evbuffer_add(line, "", 1);

	tail = evbuffer_new();
	ck_assert_ptr_nonnull(tail);
	copy_buffer(tail, frame);
	copy_buffer(tail, in);
	nframes = r.f.n;
	ck_assert_int_eq(bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED), 0);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(r.f.closes, 1);
	ck_assert_int_eq(r.f.errors, 0);
	ck_assert_uint_eq(r.f.n, nframes);
	evbuffer_drain(in, evbuffer_get_length(in));
	held_bytes(chat, in);
	ck_assert_uint_eq(evbuffer_get_length(in), 0);
	evbuffer_free(in);
	ck_assert_msg(same_bytes(frame, tail),
	    "case %zu (%s mode): after EOF the frame holds %zu bytes, want "
	    "the %zu collected and held back before",
	    id, message_mode ? "message" : "collect",
	    evbuffer_get_length(frame), evbuffer_get_length(tail));
	evbuffer_free(tail);

	async_chat_close(chat);
	bufferevent_free(pair[1]);
	tu_frames_clear(&r.f);
}

/* The Python that runs the live cross-check: $PYTHON if set (then it must
 * have asynchat), else python3 if it has it. */
static const char *
python_command(void)
{
	const char *py = getenv("PYTHON");

	return py != NULL && *py != '\0' ? py : "python3";
}

static int
python_required(void)
{
	const char *py = getenv("PYTHON");

	return py != NULL && *py != '\0';
}

/* A file of the test directory: $srcdir/test/NAME when automake's
 * harness runs the suite, else NAME next to the file this one was
 * compiled from. */
static char *
test_data_path(const char *name)
{
	const char *srcdir = getenv("srcdir");
	const char *slash = strrchr(__FILE__, '/');
	char *path = NULL;
	size_t n;

	if (srcdir != NULL && *srcdir != '\0') {
		n = strlen(srcdir) + sizeof("/test/") + strlen(name);
		path = malloc(n);
		ck_assert_ptr_nonnull(path);
		snprintf(path, n, "%s/test/%s", srcdir, name);
		if (access(path, R_OK) == 0)
			return path;
		free(path);
	}
	n = (slash != NULL ? (size_t)(slash - __FILE__) + 1 : 0) +
	    strlen(name) + 1;
	path = malloc(n);
	ck_assert_ptr_nonnull(path);
	snprintf(path, n, "%.*s%s",
	    slash != NULL ? (int)(slash - __FILE__) + 1 : 0, __FILE__, name);
	ck_assert_msg(access(path, R_OK) == 0,
	    "cannot find %s (tried %s; set srcdir)", name, path);
	return path;
}

/* Append s to out in single quotes for /bin/sh. */
static void
shell_quote(struct evbuffer *out, const char *s)
{
	evbuffer_add(out, "'", 1);
	for (; *s != '\0'; s++) {
		if (*s == '\'')
			evbuffer_add(out, "'\\''", 4);
		else
			evbuffer_add(out, s, 1);
	}
	evbuffer_add(out, "'", 1);
}

static void
free_lines(char **lines, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(lines[i]);
	free(lines);
}

/* Run the driver on the cases and return its output lines (one a case,
 * then "done N").  Without $PYTHON, a python3 that is missing or has no
 * asynchat (Python 3.12 and later) makes it return NULL with the reason
 * in why: the live cross-check is then not run.  With $PYTHON set, or
 * when the driver fails in any other way, the test fails. */
static char **
run_cpython(const struct conf_case *cases, size_t ncases, size_t *nlines,
    char *why, size_t whylen)
{
	const char *tmpdir = getenv("TMPDIR");
	char tmpl[4096], *script = test_data_path("asynchat_conformance.py");
	char *line = NULL, **lines = NULL;
	size_t cap = 0, n = 0, i;
	struct evbuffer *cmd = evbuffer_new();
	FILE *in, *p;
	int fd, status;

	ck_assert_ptr_nonnull(cmd);
	snprintf(tmpl, sizeof(tmpl), "%s/asynchat-conformance-XXXXXX",
	    tmpdir != NULL && *tmpdir != '\0' ? tmpdir : "/tmp");
	fd = mkstemp(tmpl);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", tmpl, strerror(errno));
	in = fdopen(fd, "w");
	ck_assert_ptr_nonnull(in);
	for (i = 0; i < ncases; i++)
		conf_write_case(in, i, &cases[i]);
	ck_assert_int_eq(fclose(in), 0);

	shell_quote(cmd, python_command());
	evbuffer_add(cmd, " ", 1);
	shell_quote(cmd, script);
	evbuffer_add(cmd, " <", 2);
	shell_quote(cmd, tmpl);
	evbuffer_add(cmd, "", 1);
	fflush(NULL); /* popen's child must not repeat our buffered output */
	p = popen((const char *)evbuffer_pullup(cmd, -1), "r");
	ck_assert_msg(p != NULL, "popen: %s", strerror(errno));
	for (;;) {
		size_t lcap = 0;
		ssize_t got = getline(&line, &lcap, p);

		if (got < 0)
			break;
		if (got > 0 && line[got - 1] == '\n')
			line[got - 1] = '\0';
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			lines = realloc(lines, cap * sizeof(*lines));
			ck_assert_ptr_nonnull(lines);
		}
		lines[n++] = line;
		line = NULL;
	}
	free(line);
	status = pclose(p);
	unlink(tmpl);
	free(script);
	if (!python_required() &&
	    ((n > 0 && strncmp(lines[0], "NOASYNCHAT", 10) == 0) ||
		(n == 0 && status != -1 && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 127))) {
		snprintf(why, whylen, "%s",
		    n > 0 ? lines[0] + 11 : "python3: command not found");
		free_lines(lines, n);
		evbuffer_free(cmd);
		return NULL;
	}
	if (n > 0 && strncmp(lines[0], "NOASYNCHAT", 10) == 0)
		ck_abort_msg("%s: %s -- the conformance test needs CPython's "
			     "asynchat (Python 3.11 or older; set PYTHON)",
		    python_command(), lines[0]);
	ck_assert_msg(status != -1 && WIFEXITED(status) &&
		WEXITSTATUS(status) == 0,
	    "%s failed (status %d, exit %d): is %s installed?",
	    (const char *)evbuffer_pullup(cmd, -1), status,
	    WIFEXITED(status) ? WEXITSTATUS(status) : -1, python_command());
	evbuffer_free(cmd);
	*nlines = n;
	return lines;
}

/* Frame every case with libasynchat, in collect and message mode, and
 * compare each result with want[i], CPython's line for case i.  Returns
 * the number of runs that differ; the first few go to stderr. */
static int
conf_compare(const struct conf_case *cases, size_t ncases,
    char *const *want, const char *source)
{
	struct event_base *base = event_base_new();
	struct evbuffer *mine = evbuffer_new();
	size_t i;
	int mode, mismatches = 0;

	ck_assert_ptr_nonnull(base);
	ck_assert_ptr_nonnull(mine);
	for (i = 0; i < ncases; i++) {
		for (mode = 0; mode < 2; mode++) {
			const char *got;

			conf_run_case(base, i, &cases[i], mode, mine);
			got = (const char *)evbuffer_pullup(mine, -1);
			if (strcmp(got, want[i]) != 0 && mismatches++ < 5) {
				fprintf(stderr,
				    "conformance mismatch (%s mode, %s):\n",
				    mode ? "message" : "collect", source);
				conf_write_case(stderr, i, &cases[i]);
				fprintf(stderr,
				    "CPython:      %s\n"
				    "libasynchat:  %s\n",
				    want[i], got);
			}
			evbuffer_drain(mine, evbuffer_get_length(mine));
		}
	}
	evbuffer_free(mine);
	event_base_free(base);
	return mismatches;
}

/* The live cross-check: cases drawn from the seed
 * (ASYNCHAT_CONFORMANCE_SEED overrides it), framed by CPython's asynchat
 * run now and by libasynchat.  Where no Python has asynchat it is not run
 * and says so; the golden transcripts below still hold libasynchat to
 * CPython's frames. */
START_TEST(test_conformance_cpython)
{
	const char *seed_env = getenv("ASYNCHAT_CONFORMANCE_SEED");
	uint64_t seed = seed_env != NULL ? strtoull(seed_env, NULL, 0) :
					   CONF_SEED;
	uint64_t st = seed != 0 ? seed : CONF_SEED;
	struct conf_case *cases = calloc(CONF_CASES, sizeof(*cases));
	char done[32], why[512], source[64], **py;
	size_t i, npy = 0;
	int mismatches;

	ck_assert_ptr_nonnull(cases);
	for (i = 0; i < CONF_CASES; i++)
		conf_generate(&st, &cases[i]);
	py = run_cpython(cases, CONF_CASES, &npy, why, sizeof(why));
	if (py == NULL) {
		printf("check_asynchat: note: the live cross-check against "
		       "CPython's asynchat is not run: %s (set PYTHON to a "
		       "Python 3.11 or older to run it); the golden "
		       "transcripts are compared instead\n",
		    why);
		fflush(stdout);
		free(cases);
		return;
	}
	snprintf(done, sizeof(done), "done %d", CONF_CASES);
	ck_assert_msg(npy == CONF_CASES + 1 && strcmp(py[npy - 1], done) == 0,
	    "the driver printed %zu lines for %d cases", npy, CONF_CASES);
	snprintf(source, sizeof(source), "live, seed %#" PRIx64, seed);
	mismatches = conf_compare(cases, CONF_CASES, py, source);
	printf("check_asynchat: live cross-check: %d cases against %s's "
	       "asynchat\n", CONF_CASES, python_command());
	fflush(stdout);
	free_lines(py, npy);
	free(cases);
	ck_assert_msg(mismatches == 0,
	    "%d of %d runs differ from CPython's asynchat (seed %#" PRIx64
	    "); the first are on stderr",
	    mismatches, 2 * CONF_CASES, seed);
}
END_TEST

/*
 * Golden transcripts: test/asynchat_golden.txt holds cases drawn from
 * fixed seeds and, for each, the line CPython 3.11's asynchat printed for
 * it (test/asynchat_conformance.py --transcript, run by `make
 * regen-golden`).  The cases are read from the file, not drawn again, so
 * the comparison does not depend on the generator staying the same.
 */
#define GOLDEN_FILE "asynchat_golden.txt"
#define GOLDEN_MAX_CASES 100000
#define GOLDEN_MIN_CASES 200
#define GOLDEN_MAX_LINES 4000000

struct golden {
	struct conf_case *cases;
	char **want;
	size_t n, cap;
	size_t done; /* the count its last line gives */
	int has_done;
};

static int
hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode lowercase hex into at most max bytes; -1 if malformed. */
static ssize_t
parse_hex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s), i;

	if (n % 2 != 0 || n / 2 > max)
		return -1;
	for (i = 0; i < n / 2; i++) {
		int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return (ssize_t)(n / 2);
}

/* "none", "n:COUNT" or "s:HEX" (at most 4 bytes); 0 or -1. */
static int
parse_term(const char *s, struct conf_term *t)
{
	char *end;
	ssize_t n;

	memset(t, 0, sizeof(*t));
	if (strcmp(s, "none") == 0) {
		t->kind = CONF_NONE;
		return 0;
	}
	if (strncmp(s, "n:", 2) == 0 && s[2] >= '0' && s[2] <= '9') {
		errno = 0;
		t->kind = CONF_COUNT;
		t->count = strtoull(s + 2, &end, 10);
		return errno == 0 && *end == '\0' ? 0 : -1;
	}
	if (strncmp(s, "s:", 2) == 0) {
		t->kind = CONF_STRING;
		n = parse_hex(s + 2, t->bytes, sizeof(t->bytes));
		t->len = n >= 0 ? (size_t)n : 0;
		return n >= 0 ? 0 : -1;
	}
	return -1;
}

/* One line of the transcript into g (the newline removed); returns NULL
 * or what is wrong with it. */
static const char *
golden_line(struct golden *g, char *line, int *in_case)
{
	struct conf_case *c = g->n > 0 ? &g->cases[g->n - 1] : NULL;
	char *op, *a, *b, *end;
	unsigned long v;
	ssize_t len;

	if (line[0] == '#')
		return NULL;
	if (g->has_done && line[0] != '\0')
		return "text after the done line";
	if (strncmp(line, "cpython ", 8) == 0) {
		if (c == NULL || *in_case || g->want[g->n - 1] != NULL)
			return "cpython line out of place";
		g->want[g->n - 1] = strdup(line + 8);
		ck_assert_ptr_nonnull(g->want[g->n - 1]);
		return NULL;
	}
	op = strtok(line, " ");
	a = strtok(NULL, " ");
	b = strtok(NULL, " ");
	if (op == NULL)
		return NULL;
	if (strcmp(op, "case") == 0) {
		if (*in_case || (c != NULL && g->want[g->n - 1] == NULL))
			return "case before the last one's end and cpython "
			       "lines";
		if (a == NULL || b != NULL)
			return "bad case line";
		errno = 0;
		v = strtoul(a, &end, 10);
		if (errno != 0 || *end != '\0' || v != g->n)
			return "cases must be numbered 0, 1, 2, ... in order";
		if (g->n == GOLDEN_MAX_CASES)
			return "too many cases";
		if (g->n == g->cap) {
			g->cap = g->cap ? 2 * g->cap : 256;
			g->cases = realloc(g->cases, g->cap * sizeof(*g->cases));
			g->want = realloc(g->want, g->cap * sizeof(*g->want));
			ck_assert_ptr_nonnull(g->cases);
			ck_assert_ptr_nonnull(g->want);
		}
		memset(&g->cases[g->n], 0, sizeof(g->cases[g->n]));
		g->want[g->n] = NULL;
		g->n++;
		*in_case = 1;
		return NULL;
	}
	if (strcmp(op, "done") == 0) {
		if (*in_case || a == NULL || b != NULL)
			return "bad done line";
		errno = 0;
		g->done = strtoul(a, &end, 10);
		if (errno != 0 || *end != '\0')
			return "bad done count";
		g->has_done = 1;
		return NULL;
	}
	if (!*in_case)
		return "directive outside a case";
	if (strcmp(op, "term") == 0) {
		if (a == NULL || b != NULL || parse_term(a, &c->initial) < 0)
			return "bad term line";
	} else if (strcmp(op, "after") == 0) {
		errno = 0;
		v = a != NULL ? strtoul(a, &end, 10) : 0;
		if (a == NULL || b == NULL || strtok(NULL, " ") != NULL ||
		    errno != 0 || *end != '\0' || v < 1 ||
		    v > CONF_MAX_SCRIPT || c->has_after[v] ||
		    parse_term(b, &c->after[v]) < 0)
			return "bad after line";
		c->has_after[v] = 1;
	} else if (strcmp(op, "chunk") == 0) {
		if (a == NULL || b != NULL || c->nchunks == CONF_MAX_DATA)
			return "bad chunk line";
		len = parse_hex(a, c->data + c->len, CONF_MAX_DATA - c->len);
		if (len <= 0)
			return "bad chunk (empty, not hex, or too long)";
		c->chunk[c->nchunks++] = (size_t)len;
		c->len += (size_t)len;
	} else if (strcmp(op, "end") == 0) {
		if (a != NULL)
			return "bad end line";
		*in_case = 0;
	} else {
		return "unknown directive";
	}
	return NULL;
}

/* Read the whole transcript; fails the test on any malformed line, a
 * case without its result, or a file that does not end with the done
 * line of its case count (a truncated file). */
static void
golden_load(struct golden *g, char **pathp)
{
	char *path = test_data_path(GOLDEN_FILE), *line = NULL;
	size_t cap = 0, lineno = 0, i;
	ssize_t got;
	int in_case = 0;
	FILE *f = fopen(path, "r");

	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	memset(g, 0, sizeof(*g));
	while (lineno < GOLDEN_MAX_LINES &&
	    (got = getline(&line, &cap, f)) >= 0) {
		const char *why;

		lineno++;
		if (got > 0 && line[got - 1] == '\n')
			line[--got] = '\0';
		why = golden_line(g, line, &in_case);
		ck_assert_msg(why == NULL, "%s:%zu: %s", path, lineno, why);
	}
	ck_assert_msg(lineno < GOLDEN_MAX_LINES, "%s: over %d lines", path,
	    GOLDEN_MAX_LINES);
	ck_assert_msg(!ferror(f), "%s: read error", path);
	fclose(f);
	free(line);
	ck_assert_msg(g->has_done && g->done == g->n && !in_case,
	    "%s: does not end with \"done %zu\" (truncated?)", path, g->n);
	for (i = 0; i < g->n; i++)
		ck_assert_msg(g->want[i] != NULL,
		    "%s: case %zu has no cpython line", path, i);
	ck_assert_msg(g->n >= GOLDEN_MIN_CASES, "%s: %zu cases, want %d or more",
	    path, g->n, GOLDEN_MIN_CASES);
	*pathp = path;
}

START_TEST(test_conformance_golden)
{
	struct golden g;
	char *path;
	int mismatches;

	golden_load(&g, &path);
	mismatches = conf_compare(g.cases, g.n, g.want, "golden transcript");
	printf("check_asynchat: golden transcripts: %zu cases from %s, each "
	       "in collect and message mode\n", g.n, path);
	fflush(stdout);
	free_lines(g.want, g.n);
	free(g.cases);
	ck_assert_msg(mismatches == 0,
	    "%d of %zu runs differ from CPython's asynchat as recorded in %s "
	    "(make regen-golden remakes it); the first are on stderr",
	    mismatches, 2 * g.n, path);
	free(path);
}
END_TEST

/* check_asynchat --conformance-cases [N]: print N cases (default
 * GOLDEN_CASES) drawn from the fixed seed in the driver's input format,
 * for `make regen-golden`. */
#define GOLDEN_CASES 400

static int
print_cases(int argc, char **argv)
{
	uint64_t st = CONF_SEED;
	unsigned long n = GOLDEN_CASES;
	struct conf_case c;
	unsigned long i;
	char *end;

	if (argc > 3 || (argc == 3 && ((n = strtoul(argv[2], &end, 10)) == 0 ||
					  *end != '\0' || n > GOLDEN_MAX_CASES))) {
		fprintf(stderr, "usage: %s --conformance-cases [N <= %d]\n",
		    argv[0], GOLDEN_MAX_CASES);
		return 2;
	}
	printf("# %lu cases drawn from seed %#" PRIx64
	       " (check_asynchat --conformance-cases %lu)\n",
	    n, (uint64_t)CONF_SEED, n);
	for (i = 0; i < n; i++) {
		conf_generate(&st, &c);
		conf_write_case(stdout, i, &c);
	}
	return fflush(stdout) == 0 ? 0 : 1;
}

/* Say which event backends and addresses the scenarios really use. */
static void
print_environment(void)
{
	struct sockaddr_in6 sin6;
	evutil_socket_t fd;
	int b, v6 = 0;

	printf("check_asynchat: event backends:");
	for (b = 0; b < N_BACKENDS; b++) {
		struct event_base *base = backend_base(b);

		printf(" %s=%s", backend_label[b],
		    base != NULL ? event_base_get_method(base) : "(none)");
		if (base != NULL)
			event_base_free(base);
	}
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	fd = socket(AF_INET6, SOCK_STREAM, 0);
	if (fd >= 0) {
		v6 = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
		evutil_closesocket(fd);
	}
	printf("; addresses: 127.0.0.1%s\n",
	    v6 ? ", [::1]" : " ([::1] cannot be bound: IPv6 variants skip)");
	fflush(stdout);
}

static Suite *
asynchat_suite(void)
{
	Suite *s = suite_create("asynchat");
	TCase *tc;

	/* CPython's TestAsynchat and TestAsynchat_WithPoll: every scenario
	 * on every backend, over 127.0.0.1 and ::1. */
	tc = tcase_create("cpython");
	tcase_set_timeout(tc, 30);
	tcase_add_loop_test(tc, test_line_terminator, 0, 9 * N_VARIANTS);
	tcase_add_loop_test(tc, test_line_terminator_message_mode, 0,
	    9 * N_VARIANTS);
	tcase_add_loop_test(tc, test_numeric_terminator, 0, 2 * N_VARIANTS);
	tcase_add_loop_test(tc, test_none_terminator, 0, 3 * N_VARIANTS);
	tcase_add_loop_test(tc, test_simple_producer, 0, N_VARIANTS);
	tcase_add_loop_test(tc, test_string_producer, 0, 2 * N_VARIANTS);
	tcase_add_loop_test(tc, test_empty_line, 0, N_VARIANTS);
	tcase_add_loop_test(tc, test_close_when_done, 0, N_VARIANTS);
	tcase_add_loop_test(tc, test_push, 0, N_VARIANTS);
	suite_add_tcase(s, tc);

	/* TestAsynchatMocked, TestHelperFunctions, TestNotConnected. */
	tc = tcase_create("cpython-unconnected");
	tcase_add_test(tc, test_spurious_read);
	tcase_add_test(tc, test_prefix_at_end);
	tcase_add_test(tc, test_bad_terminator);
	tcase_add_test(tc, test_push_null_channel);
	suite_add_tcase(s, tc);

	/* Against CPython's asynchat: live where a Python has it, and the
	 * golden transcripts everywhere. */
	tc = tcase_create("conformance");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_conformance_cpython);
	tcase_add_test(tc, test_conformance_golden);
	suite_add_tcase(s, tc);
	return s;
}

int
main(int argc, char **argv)
{
	SRunner *sr;
	int failed;

	if (argc > 1 && strcmp(argv[1], "--conformance-cases") == 0)
		return print_cases(argc, argv);
	if (argc > 1) {
		fprintf(stderr, "usage: %s [--conformance-cases [N]]\n",
		    argv[0]);
		return 2;
	}
	sr = srunner_create(asynchat_suite());
	print_environment();
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
