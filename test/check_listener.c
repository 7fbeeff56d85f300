/*
 * check_listener.c - the listener: host and port strings, the REUSEPORT
 * and IPV6_ONLY flags, Unix-domain paths with channels connected to them,
 * the socket checks of async_chat_listener_new_fd(), the back-off after
 * accept errors (an EMFILE storm) and calls made inside its callbacks.
 * Only loopback addresses and paths under a temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "asynchat-internal.h"
#include "fixture.h"

/*
 * A recording acceptor: keeps the accepted sockets (closed at the end),
 * and may act inside handle_accept or the error handler.
 */

#define ACC_MAX 64

enum acc_act { ACT_NONE, ACT_PAUSE, ACT_PAUSE_RESUME, ACT_FREE };

struct acc {
	struct async_chat_listener *l;
	int accepts, errors, last_error;
	evutil_socket_t fds[ACC_MAX];
	int family;             /* of the last accepted peer */
	enum acc_act on_accept; /* in the first handle_accept */
	enum acc_act on_error;  /* in every error handler call */
	int backing_off_seen;
};

static void
act(struct acc *a, enum acc_act what)
{
	switch (what) {
	case ACT_NONE:
		break;
	case ACT_PAUSE:
		ck_assert_int_eq(async_chat_listener_pause(a->l), 0);
		break;
	case ACT_PAUSE_RESUME:
		ck_assert_int_eq(async_chat_listener_pause(a->l), 0);
		ck_assert_int_eq(async_chat_listener_resume(a->l), 0);
		break;
	case ACT_FREE:
		async_chat_listener_free(a->l);
		a->l = NULL;
		break;
	}
}

static void
acc_cb(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct acc *a = arg;

	ck_assert_ptr_eq(l, a->l);
	ck_assert_int_ge(fd, 0);
	ck_assert_ptr_nonnull(addr);
	ck_assert_int_gt(addrlen, 0);
	ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	ck_assert_int_lt(a->accepts, ACC_MAX);
	a->family = addr->sa_family;
	a->fds[a->accepts++] = fd;
	if (a->accepts == 1)
		act(a, a->on_accept);
}

static void
acc_error(struct async_chat_listener *l, int err, void *arg)
{
	struct acc *a = arg;

	ck_assert_ptr_eq(l, a->l);
	a->errors++;
	a->last_error = err;
	/* Not backing off yet while the handler runs. */
	ck_assert_int_eq(async_chat_listener_backing_off(l), 0);
	act(a, a->on_error);
}

static void
acc_init(struct acc *a)
{
	memset(a, 0, sizeof(*a));
}

static void
acc_end(struct acc *a)
{
	int i;

	for (i = 0; i < a->accepts; i++)
		evutil_closesocket(a->fds[i]);
	async_chat_listener_free(a->l);
	a->l = NULL;
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

/* The listener's address, family and port. */
static struct fx_addr
bound(const struct async_chat_listener *l)
{
	struct fx_addr a;

	memset(&a, 0, sizeof(a));
	a.len = (int)sizeof(a.ss);
	ck_assert_int_eq(
	    async_chat_listener_get_address(l, FX_SA(&a), &a.len), 0);
	return a;
}

static int
port_of(const struct fx_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	ck_assert_int_eq(a->ss.ss_family, AF_INET6);
	return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static int
bound_port(const struct async_chat_listener *l)
{
	struct fx_addr a = bound(l);

	return port_of(&a);
}

/* A blocking connect to the listener's own address: over loopback it
 * completes in the backlog. */
static evutil_socket_t
connect_to(const struct async_chat_listener *l)
{
	struct fx_addr a = bound(l);
	evutil_socket_t fd = socket(a.ss.ss_family, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, FX_SA(&a), (socklen_t)a.len), 0);
	return fd;
}

/* Listen by host and port on a free port, check the address, and accept
 * one connection. */
static void
hostname_accepts(int family, const char *host, int want_family)
{
	struct event_base *base = fx_base();
	struct acc a;
	struct fx_addr sa;
	evutil_socket_t cli;
	int dns_error = 12345;

	acc_init(&a);
	a.l = async_chat_listener_new_hostname(
	    base, family, host, "0", 0, -1, acc_cb, &a, &dns_error);
	ck_assert_msg(a.l != NULL, "%s: %s", host, strerror(errno));
	ck_assert_int_eq(dns_error, 0);
	sa = bound(a.l);
	if (want_family != AF_UNSPEC)
		ck_assert_int_eq(sa.ss.ss_family, want_family);
	if (sa.ss.ss_family == AF_INET) {
		ck_assert_int_eq(sa.len, (int)sizeof(struct sockaddr_in));
		ck_assert_uint_eq(
		    ntohl(((struct sockaddr_in *)&sa.ss)->sin_addr.s_addr),
		    INADDR_LOOPBACK);
	} else {
		ck_assert_int_eq(sa.ss.ss_family, AF_INET6);
		ck_assert_int_eq(sa.len, (int)sizeof(struct sockaddr_in6));
		ck_assert(IN6_IS_ADDR_LOOPBACK(
		    &((struct sockaddr_in6 *)&sa.ss)->sin6_addr));
	}
	ck_assert_int_gt(port_of(&sa), 0);
	cli = connect_to(a.l);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 1);
	ck_assert_int_eq(a.family, sa.ss.ss_family);
	evutil_closesocket(cli);
	acc_end(&a);
	fx_base_free(base);
}

/*
 * Host and port strings
 */

START_TEST(test_hostname_ipv4)
{
	hostname_accepts(AF_UNSPEC, "127.0.0.1", AF_INET);
	hostname_accepts(AF_INET, "127.0.0.1", AF_INET);
}
END_TEST

START_TEST(test_hostname_ipv6)
{
	if (fx_have_family(AF_INET6) < 0)
		return;
	hostname_accepts(AF_UNSPEC, "::1", AF_INET6);
	hostname_accepts(AF_INET6, "::1", AF_INET6);
}
END_TEST

/* "localhost" may give ::1 or 127.0.0.1 first: get_address tells. */
START_TEST(test_hostname_localhost)
{
	hostname_accepts(AF_UNSPEC, "localhost", AF_UNSPEC);
	hostname_accepts(AF_INET, "localhost", AF_INET);
}
END_TEST

/* A port given as a number is the one listened on; a port in use fails
 * with bind's error; a service name is resolved. */
START_TEST(test_hostname_port)
{
	struct event_base *base = fx_base();
	struct async_chat_listener *l, *l2;
	char port[16];
	int p;

	l = async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "0", 0, 8, acc_never, NULL, NULL);
	ck_assert_ptr_nonnull(l);
	p = bound_port(l);
	snprintf(port, sizeof(port), "%d", p);
	EXPECT_ERRNO(async_chat_listener_new_hostname(base, AF_INET,
	                 "127.0.0.1", port, 0, -1, acc_never, NULL, NULL),
	    EADDRINUSE);
	async_chat_listener_free(l);
	/* Free again: the same port string now listens on that port. */
	l2 = async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", port, 0, 0, acc_never, NULL, NULL);
	ck_assert_ptr_nonnull(l2);
	ck_assert_int_eq(bound_port(l2), p);
	async_chat_listener_free(l2);
	fx_base_free(base);
}
END_TEST

START_TEST(test_hostname_bad_args)
{
	struct event_base *base = fx_base();
	int e = 7;

#define BAD(call)                                                              \
	do {                                                                   \
		e = 7;                                                         \
		EXPECT_ERRNO(call, EINVAL);                                    \
		ck_assert_int_eq(e, 0);                                        \
	} while (0)
	BAD(async_chat_listener_new_hostname(
	    NULL, AF_INET, "127.0.0.1", "0", 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", NULL, 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "0", 0, -1, NULL, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "", 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "70000", 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "80x", 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_UNIX, "127.0.0.1", "0", 0, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "0", 1u << 9, -1, acc_never, NULL, &e));
	BAD(async_chat_listener_new_hostname(
	    base, AF_INET, "127.0.0.1", "0", 0, -2, acc_never, NULL, &e));
#undef BAD
	fx_base_free(base);
}
END_TEST

/* Resolving fails: ENOENT, and the resolver's code. */
static void
unresolved(
    struct event_base *base, int family, const char *host, const char *port)
{
	int e = 0;

	EXPECT_ERRNO(async_chat_listener_new_hostname(
	                 base, family, host, port, 0, -1, acc_never, NULL, &e),
	    ENOENT);
	ck_assert_msg(e != 0, "%s:%s: no resolver code", host, port);
	ck_assert_ptr_nonnull(evutil_gai_strerror(e));
	/* dns_error may be NULL. */
	EXPECT_ERRNO(async_chat_listener_new_hostname(base, family, host, port,
	                 0, -1, acc_never, NULL, NULL),
	    ENOENT);
}

START_TEST(test_hostname_unresolved)
{
	struct event_base *base = fx_base();

	unresolved(base, AF_UNSPEC, "nonexistent.invalid", "0");
	unresolved(base, AF_INET, "127.0.0.1", "no-such-service-name");
	/* A numeric address of the other family. */
	unresolved(base, AF_INET6, "127.0.0.1", "0");
	unresolved(base, AF_INET, "::1", "0");
	fx_base_free(base);
}
END_TEST

/*
 * Flags
 */

START_TEST(test_flags_bad_args)
{
	struct event_base *base = fx_base();
	struct fx_addr a = fx_loopback(AF_INET, 0);

	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 NULL, FX_SA(&a), a.len, 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 base, NULL, a.len, 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 base, FX_SA(&a), 0, 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 base, FX_SA(&a), a.len, 0, -1, NULL, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 base, FX_SA(&a), a.len, 0, -2, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_flags(
	                 base, FX_SA(&a), a.len, 4, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_backing_off(NULL), EINVAL);
	fx_base_free(base);
}
END_TEST

static int
until_each_accepted(void *arg)
{
	struct acc *a = arg;

	return a[0].accepts > 0 && a[1].accepts > 0;
}

/* Two listeners on one port, each on its own event_base: the system
 * spreads connections among them, so both accept. */
START_TEST(test_reuseport)
{
	struct event_base *base[2] = {fx_base(), fx_base()};
	struct acc a[2];
	struct fx_addr sa;
	evutil_socket_t cli[ACC_MAX];
	char port[16];
	int i, n = 0, turns;

	acc_init(&a[0]);
	acc_init(&a[1]);
	a[0].l = async_chat_listener_new_hostname(base[0], AF_INET, "127.0.0.1",
	    "0", ASYNC_CHAT_LISTEN_REUSEPORT, -1, acc_cb, &a[0], NULL);
	ck_assert_msg(a[0].l != NULL, "%s", strerror(errno));
	sa = bound(a[0].l);
	snprintf(port, sizeof(port), "%d", port_of(&sa));
	/* Without the flag the port is taken. */
	EXPECT_ERRNO(async_chat_listener_new_hostname(base[1], AF_INET,
	                 "127.0.0.1", port, 0, -1, acc_never, NULL, NULL),
	    EADDRINUSE);
	a[1].l = async_chat_listener_new_flags(base[1], FX_SA(&sa), sa.len,
	    ASYNC_CHAT_LISTEN_REUSEPORT, -1, acc_cb, &a[1]);
	ck_assert_msg(a[1].l != NULL, "%s", strerror(errno));
	ck_assert_int_eq(bound_port(a[1].l), port_of(&sa));
	/* Connect until each has accepted one; each connection goes to one
	 * of them at random, so 32 leave a chance of 2^-31 to fail. */
	for (i = 0; i < 32 && !until_each_accepted(a); i++) {
		cli[n++] = fx_tcp_client(AF_INET, port_of(&sa));
		/* Serve both bases until this connection is accepted (at
		 * most FX_WAIT_MS). */
		for (turns = 0;
		     turns < FX_WAIT_MS && a[0].accepts + a[1].accepts < n;
		     turns++) {
			event_base_loop(base[0], EVLOOP_NONBLOCK);
			event_base_loop(base[1], EVLOOP_NONBLOCK);
			if (a[0].accepts + a[1].accepts < n)
				usleep(1000);
		}
		ck_assert_int_eq(a[0].accepts + a[1].accepts, n);
	}
	ck_assert_int_gt(a[0].accepts, 0);
	ck_assert_int_gt(a[1].accepts, 0);
	for (i = 0; i < n; i++)
		evutil_closesocket(cli[i]);
	acc_end(&a[0]);
	acc_end(&a[1]);
	fx_base_free(base[0]);
	fx_base_free(base[1]);
}
END_TEST

static int
v6only_of(const struct async_chat_listener *l)
{
	int v = -1;
	socklen_t len = sizeof(v);

	ck_assert_int_eq(getsockopt(async_chat_listener_get_fd(l), IPPROTO_IPV6,
	                     IPV6_V6ONLY, &v, &len),
	    0);
	return v;
}

/* An IPv6 socket on the IPv4-mapped loopback takes IPv4 clients; with
 * IPV6_ONLY it cannot be bound there at all. */
START_TEST(test_ipv6_only)
{
	struct event_base *base = fx_base();
	struct acc a;
	struct async_chat_listener *l;
	struct fx_addr sa;
	evutil_socket_t cli;

	if (fx_have_family(AF_INET6) < 0) {
		fx_base_free(base);
		return;
	}
	acc_init(&a);
	a.l = async_chat_listener_new_hostname(
	    base, AF_INET6, "::ffff:127.0.0.1", "0", 0, -1, acc_cb, &a, NULL);
	ck_assert_msg(a.l != NULL, "%s", strerror(errno));
	sa = bound(a.l);
	ck_assert_int_eq(sa.ss.ss_family, AF_INET6);
	cli = fx_tcp_client(AF_INET, port_of(&sa));
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(a.family, AF_INET6); /* a mapped IPv4 peer */
	evutil_closesocket(cli);
	acc_end(&a);

	EXPECT_ERRNO(
	    async_chat_listener_new_hostname(base, AF_INET6, "::ffff:127.0.0.1",
	        "0", ASYNC_CHAT_LISTEN_IPV6_ONLY, -1, acc_never, NULL, NULL),
	    EINVAL);
	/* On ::1 the option is set, by both constructors. */
	l = async_chat_listener_new_hostname(base, AF_INET6, "::1", "0",
	    ASYNC_CHAT_LISTEN_IPV6_ONLY, -1, acc_never, NULL, NULL);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(v6only_of(l), 1);
	async_chat_listener_free(l);
	sa = fx_loopback(AF_INET6, 0);
	l = async_chat_listener_new_flags(base, FX_SA(&sa), sa.len,
	    ASYNC_CHAT_LISTEN_IPV6_ONLY, -1, acc_never, NULL);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(v6only_of(l), 1);
	async_chat_listener_free(l);
	/* No effect on IPv4. */
	sa = fx_loopback(AF_INET, 0);
	l = async_chat_listener_new_flags(base, FX_SA(&sa), sa.len,
	    ASYNC_CHAT_LISTEN_IPV6_ONLY, -1, acc_never, NULL);
	ck_assert_ptr_nonnull(l);
	async_chat_listener_free(l);
	fx_base_free(base);
}
END_TEST

/*
 * Unix-domain sockets
 */

struct tmpdir {
	char dir[64];
	char path[128];
};

static void
tmpdir_make(struct tmpdir *t)
{
	snprintf(t->dir, sizeof(t->dir), "/tmp/asynchat-listener.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(t->dir));
	snprintf(t->path, sizeof(t->path), "%s/sock", t->dir);
}

static void
tmpdir_remove(struct tmpdir *t)
{
	(void)unlink(t->path);
	ck_assert_int_eq(rmdir(t->dir), 0);
}

static struct fx_addr
unix_addr(const char *path)
{
	struct fx_addr a;
	struct sockaddr_un *sa_un = (struct sockaddr_un *)&a.ss;

	memset(&a, 0, sizeof(a));
	sa_un->sun_family = AF_UNIX;
	ck_assert_uint_lt(strlen(path), sizeof(sa_un->sun_path));
	strcpy(sa_un->sun_path, path);
	a.len = (int)sizeof(*sa_un);
	return a;
}

static int
path_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* The accepted socket is the peer of an fx_chan whose channel connects
 * with async_chat_connect(). */
static void
accept_as_peer(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct fx_chan *c = arg;

	(void)l;
	ck_assert_int_eq(addr->sa_family, AF_UNIX);
	ck_assert_int_gt(addrlen, 0);
	ck_assert_int_lt(c->p.fd, 0);
	fx_peer_attach(c, fd);
}

static int
until_peer(struct fx_chan *c)
{
	return c->p.fd >= 0;
}

static int
until_connected_and_peer(struct fx_chan *c)
{
	return fx_until_connects(c) && until_peer(c);
}

START_TEST(test_unix_connect)
{
	struct tmpdir t;
	struct fx_chan c;
	struct fx_addr sa;
	struct async_chat_listener *l;
	struct stat st;

	tmpdir_make(&t);
	fx_init(&c, NULL);
	l = async_chat_listener_new_unix(
	    c.base, t.path, 0, -1, accept_as_peer, &c);
	ck_assert_msg(l != NULL, "%s", strerror(errno));
	c.listener = l; /* fx_end() frees it */
	ck_assert_int_eq(lstat(t.path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	sa = bound(l);
	ck_assert_int_eq(sa.ss.ss_family, AF_UNIX);
	ck_assert_str_eq(((struct sockaddr_un *)&sa.ss)->sun_path, t.path);

	ck_assert_int_eq(fx_open(&c, FX_UNCONNECTED), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	sa = unix_addr(t.path);
	ck_assert_int_eq(async_chat_connect(c.chat, FX_SA(&sa), sa.len), 0);
	/* Pushed before the connection is made: sent once it is. */
	ck_assert_int_eq(async_chat_push(c.chat, "early\n", 6), 0);
	fx_run(&c, until_connected_and_peer);
	ck_assert_int_eq(c.f.connects, 1);
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	fx_sends(&c, "one\ntwo\n");
	c.want = 2;
	fx_run(&c, fx_until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "one"));
	ck_assert(tu_frame_is(&c.f, 1, "two"));
	ck_assert_int_eq(async_chat_push(c.chat, "back\n", 5), 0);
	fx_run_got(&c, 11);
	ck_assert_got(&c, "early\nback\n");
	ck_assert_int_eq(c.f.errors, 0);
	fx_end(&c);
	/* Freeing the listener removed its path. */
	ck_assert(!path_exists(t.path));
	tmpdir_remove(&t);
}
END_TEST

/* A path left by a listener that has gone is replaced; a live listener's
 * and a file that is not a socket are left alone. */
START_TEST(test_unix_existing_path)
{
	struct event_base *base = fx_base();
	struct tmpdir t;
	struct fx_addr sa;
	struct async_chat_listener *l2;
	struct acc a;
	evutil_socket_t fd, cli;
	struct stat st, st2;

	tmpdir_make(&t);
	/* Stale: bound, then closed without removing the path. */
	sa = unix_addr(t.path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&sa), (socklen_t)sa.len), 0);
	ck_assert_int_eq(lstat(t.path, &st), 0);
	evutil_closesocket(fd);
	/* async_chat_listener_new() does not touch the path. */
	EXPECT_ERRNO(async_chat_listener_new(
	                 base, FX_SA(&sa), sa.len, -1, acc_never, NULL),
	    EADDRINUSE);
	acc_init(&a);
	a.l = async_chat_listener_new_unix(base, t.path, 0, -1, acc_cb, &a);
	ck_assert_msg(a.l != NULL, "%s", strerror(errno));
	ck_assert_int_eq(lstat(t.path, &st2), 0);
	ck_assert(S_ISSOCK(st2.st_mode));

	/* Live: refused, and the first listener still serves its path. */
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, t.path, 0, -1, acc_never, NULL),
	    EADDRINUSE);
	cli = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(cli, 0);
	ck_assert_int_eq(connect(cli, FX_SA(&sa), (socklen_t)sa.len), 0);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	evutil_closesocket(cli);

	/* Taken over: the path now names another socket, which freeing the
	 * first listener leaves in place. */
	ck_assert_int_eq(unlink(t.path), 0);
	l2 = async_chat_listener_new_unix(base, t.path, 0, 4, acc_never, NULL);
	ck_assert_ptr_nonnull(l2);
	acc_end(&a);
	ck_assert(path_exists(t.path));
	async_chat_listener_free(l2);
	ck_assert(!path_exists(t.path));

	/* Not a socket: kept. */
	fd = open(t.path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, t.path, 0, -1, acc_never, NULL),
	    EADDRINUSE);
	ck_assert_int_eq(lstat(t.path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	/* A directory neither. */
	ck_assert_int_eq(unlink(t.path), 0);
	ck_assert_int_eq(mkdir(t.path, 0700), 0);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, t.path, 0, -1, acc_never, NULL),
	    EADDRINUSE);
	ck_assert_int_eq(rmdir(t.path), 0);
	tmpdir_remove(&t);
	fx_base_free(base);
}
END_TEST

START_TEST(test_unix_bad_args)
{
	struct event_base *base = fx_base();
	struct tmpdir t;
	char longpath[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	char missing[192];

	tmpdir_make(&t);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(NULL, t.path, 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, NULL, 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, "", 0, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, t.path, 0, -1, NULL, NULL),
	    EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_unix(base, t.path,
	                 ASYNC_CHAT_LISTEN_REUSEPORT, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, t.path, 0, -2, acc_never, NULL),
	    EINVAL);
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	EXPECT_ERRNO(async_chat_listener_new_unix(
	                 base, longpath, 0, -1, acc_never, NULL),
	    ENAMETOOLONG);
	snprintf(missing, sizeof(missing), "%s/no-such-dir/sock", t.dir);
	EXPECT_ERRNO(
	    async_chat_listener_new_unix(base, missing, 0, -1, acc_never, NULL),
	    ENOENT);
	ck_assert(!path_exists(t.path));
	tmpdir_remove(&t);
	fx_base_free(base);
}
END_TEST

/*
 * async_chat_listener_new_fd() refuses what cannot accept
 */

static void
refused_fd(struct event_base *base, evutil_socket_t fd, int want)
{
	EXPECT_ERRNO(
	    async_chat_listener_new_fd(base, fd, acc_never, NULL), want);
	/* Not closed on failure. */
	ck_assert_int_ne(fcntl(fd, F_GETFD), -1);
	close(fd);
}

START_TEST(test_new_fd_refuses)
{
	struct event_base *base = fx_base();
	struct fx_addr sa = fx_loopback(AF_INET, 0);
	evutil_socket_t fd, sv[2];
	struct stat st;
	int closed;

	/* Bound, not listening. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&sa), (socklen_t)sa.len), 0);
	refused_fd(base, fd, EINVAL);
	/* Not even bound. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	refused_fd(base, fd, EINVAL);
	/* A datagram socket, bound. */
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&sa), (socklen_t)sa.len), 0);
	refused_fd(base, fd, EINVAL);
	/* A connected stream socket. */
	tu_socketpair(sv);
	refused_fd(base, sv[0], EINVAL);
	close(sv[1]);
	/* Not a socket. */
	refused_fd(base, fx_temp_file("x", &st), ENOTSOCK);
	/* Not open. */
	closed = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(closed, 0);
	close(closed);
	EXPECT_ERRNO(
	    async_chat_listener_new_fd(base, closed, acc_never, NULL), EBADF);
	fx_base_free(base);
}
END_TEST

/* A listening Unix socket is accepted as well as a TCP one. */
START_TEST(test_new_fd_unix)
{
	struct event_base *base = fx_base();
	struct tmpdir t;
	struct fx_addr sa;
	struct acc a;
	evutil_socket_t fd, cli;

	tmpdir_make(&t);
	sa = unix_addr(t.path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&sa), (socklen_t)sa.len), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	acc_init(&a);
	a.l = async_chat_listener_new_fd(base, fd, acc_cb, &a);
	ck_assert_ptr_nonnull(a.l);
	cli = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(cli, FX_SA(&sa), (socklen_t)sa.len), 0);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	evutil_closesocket(cli);
	acc_end(&a);
	/* Not made by new_unix: the path is the caller's. */
	ck_assert(path_exists(t.path));
	tmpdir_remove(&t);
	fx_base_free(base);
}
END_TEST

/*
 * Accept errors back off: an EMFILE storm
 */

struct storm {
	struct event_base *base;
	struct acc a;
	evutil_socket_t cli, cli2;
	struct rlimit saved;
	int fill[512];
	int nfill;
	long turns; /* loop turns while the storm lasts */
};

static int
count_turn(void *arg)
{
	struct storm *s = arg;

	s->turns++;
	if (s->a.l != NULL && async_chat_listener_backing_off(s->a.l) == 1)
		s->a.backing_off_seen = 1;
	return 0;
}

/* Every descriptor under a lower limit taken (those above it that are
 * open stay usable, but none can be made). */
static void
storm_fill(struct storm *s)
{
	struct rlimit rl = s->saved;
	int fd;

	rl.rlim_cur = 256;
	ck_assert_uint_le(rl.rlim_cur, s->saved.rlim_cur);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	while (s->nfill < 512 && (fd = open("/dev/null", O_RDONLY)) >= 0)
		s->fill[s->nfill++] = fd;
	ck_assert_int_eq(errno, EMFILE);
}

/* A listener with a connection waiting in its backlog, and no descriptor
 * left for accept(2): it fails with EMFILE for as long as that lasts. */
static void
storm_start(
    struct storm *s, async_chat_accept_error_fn handler, enum acc_act on_error)
{
	memset(s, 0, sizeof(*s));
	s->cli2 = -1;
	s->base = fx_base();
	acc_init(&s->a);
	s->a.on_error = on_error;
	s->a.l = fx_listen(s->base, AF_INET, acc_cb, &s->a);
	if (handler != NULL)
		ck_assert_int_eq(
		    async_chat_listener_set_error_handler(s->a.l, handler), 0);
	s->cli = fx_tcp_client(AF_INET, fx_listener_port(s->a.l));
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &s->saved), 0);
	storm_fill(s);
}

/* Free the descriptors again. */
static void
storm_stop(struct storm *s)
{
	while (s->nfill > 0)
		close(s->fill[--s->nfill]);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &s->saved), 0);
}

/* Valgrind keeps the descriptor limit itself: the kernel's accept(2)
 * succeeds, and valgrind closes the new socket and reports EMFILE, so the
 * waiting connection is lost. */
static int
under_valgrind(void)
{
	const char *p = getenv("LD_PRELOAD");

	return p != NULL && strstr(p, "vgpreload") != NULL;
}

static int
local_port(evutil_socket_t fd, int peer)
{
	struct fx_addr a;
	socklen_t len = sizeof(a.ss);

	memset(&a, 0, sizeof(a));
	ck_assert_int_eq(peer ? getpeername(fd, FX_SA(&a), &len)
	                      : getsockname(fd, FX_SA(&a), &len),
	    0);
	return port_of(&a);
}

/* Once descriptors are free the listener accepts by itself (within the
 * back-off, at most 1 s), first the connection that waited through the
 * storm.  Another client connects as well, for valgrind's sake. */
static void
storm_accepts_again(struct storm *s)
{
	s->cli2 = fx_tcp_client(AF_INET, fx_listener_port(s->a.l));
	ck_assert_int_eq(
	    tu_run_until(s->base, until_accepts, &s->a, FX_WAIT_MS), 0);
	if (!under_valgrind())
		ck_assert_int_eq(
		    local_port(s->a.fds[0], 1), local_port(s->cli, 0));
}

static void
storm_end(struct storm *s)
{
	evutil_closesocket(s->cli);
	if (s->cli2 >= 0)
		evutil_closesocket(s->cli2);
	acc_end(&s->a);
	fx_base_free(s->base);
}

/* The loop for a second of storm: a spinning listener turns it hundreds
 * of thousands of times, a backing-off one about ten (10, 20, 40 ms...
 * up to 1 s).  The bound counts turns, not time. */
static void
storm_second(struct storm *s)
{
	s->turns = 0;
	ck_assert_int_eq(tu_run_until(s->base, count_turn, s, 1000), -1);
	ck_assert_msg(
	    s->turns < 200, "%ld loop turns in 1 s of EMFILE", s->turns);
}

/* With no error handler (the default). */
START_TEST(test_emfile_backoff_default)
{
	struct storm s;

	storm_start(&s, NULL, ACT_NONE);
	storm_second(&s);
	ck_assert_int_eq(s.a.accepts, 0);
	ck_assert_int_eq(s.a.backing_off_seen, 1);
	storm_stop(&s);
	/* Accepting resumes by itself once descriptors are free. */
	storm_accepts_again(&s);
	ck_assert_int_eq(async_chat_listener_backing_off(s.a.l), 0);
	storm_end(&s);
}
END_TEST

/* With an error handler: told each error, at most a few a second. */
START_TEST(test_emfile_backoff_handler)
{
	struct storm s;

	storm_start(&s, acc_error, ACT_NONE);
	storm_second(&s);
	ck_assert_int_gt(s.a.errors, 0);
	ck_assert_int_lt(s.a.errors, 20);
	ck_assert_int_eq(s.a.last_error, EMFILE);
	ck_assert_int_eq(s.a.backing_off_seen, 1);
	storm_stop(&s);
	storm_accepts_again(&s);
	storm_end(&s);
}
END_TEST

static int
until_errors(void *arg)
{
	return ((struct acc *)arg)->errors >= 7;
}

/* A successful accept starts the back-off again from its first delay:
 * seven errors in a row take it to the 1 s cap, and the accept after the
 * storm brings it back to 10 ms (the delays themselves are the
 * listener's; the test only counts). */
START_TEST(test_emfile_backoff_resets)
{
	struct storm s;

	/* Under valgrind the first failed accept drops the connection (see
	 * under_valgrind()), so no storm lasts. */
	if (under_valgrind())
		return;
	storm_start(&s, acc_error, ACT_NONE);
	ck_assert_int_eq(async_chat__listener_next_backoff_ms(s.a.l), 10);
	ck_assert_int_eq(tu_run_until(s.base, until_errors, &s.a, 20000), 0);
	ck_assert_int_eq(async_chat__listener_next_backoff_ms(s.a.l), 1000);
	storm_stop(&s);
	storm_accepts_again(&s);
	ck_assert_int_eq(async_chat__listener_next_backoff_ms(s.a.l), 10);
	storm_end(&s);
}
END_TEST

/* A handler that pauses takes charge: no back-off, no more errors, and
 * accepting waits for its resume. */
START_TEST(test_emfile_handler_pauses)
{
	struct storm s;

	storm_start(&s, acc_error, ACT_PAUSE);
	storm_second(&s);
	ck_assert_int_eq(s.a.errors, 1);
	ck_assert_int_eq(s.a.backing_off_seen, 0);
	storm_stop(&s);
	fx_settle(s.base);
	ck_assert_int_eq(s.a.accepts, 0);
	ck_assert_int_eq(async_chat_listener_resume(s.a.l), 0);
	storm_accepts_again(&s);
	storm_end(&s);
}
END_TEST

/* A handler that pauses and resumes at once gets the back-off. */
START_TEST(test_emfile_handler_pause_resume)
{
	struct storm s;

	storm_start(&s, acc_error, ACT_PAUSE_RESUME);
	storm_second(&s);
	ck_assert_int_gt(s.a.errors, 0);
	ck_assert_int_lt(s.a.errors, 20);
	ck_assert_int_eq(s.a.backing_off_seen, 1);
	storm_stop(&s);
	storm_accepts_again(&s);
	storm_end(&s);
}
END_TEST

/* A handler that frees the listener: nothing runs after. */
START_TEST(test_emfile_handler_frees)
{
	struct storm s;

	storm_start(&s, acc_error, ACT_FREE);
	storm_second(&s);
	ck_assert_int_eq(s.a.errors, 1);
	ck_assert_ptr_null(s.a.l);
	storm_stop(&s);
	fx_settle(s.base);
	ck_assert_int_eq(s.a.accepts, 0);
	storm_end(&s);
}
END_TEST

/* Pausing during a back-off holds accepting after it; resuming lets it
 * go on when the back-off ends. */
START_TEST(test_emfile_pause_during_backoff)
{
	struct storm s;

	storm_start(&s, NULL, ACT_NONE);
	storm_second(&s);
	ck_assert_int_eq(async_chat_listener_pause(s.a.l), 0);
	storm_stop(&s);
	ck_assert_int_eq(tu_run_until(s.base, until_accepts, &s.a, 1500), -1);
	ck_assert_int_eq(async_chat_listener_backing_off(s.a.l), 0);
	ck_assert_int_eq(async_chat_listener_resume(s.a.l), 0);
	storm_accepts_again(&s);
	storm_end(&s);
}
END_TEST

/*
 * Calls inside handle_accept
 */

static struct acc *
acc_listen_two(struct acc *a, struct event_base *base, enum acc_act what,
    evutil_socket_t cli[2])
{
	int port;

	acc_init(a);
	a->on_accept = what;
	a->l = fx_listen(base, AF_INET, acc_cb, a);
	port = fx_listener_port(a->l);
	/* Both wait in the backlog before the loop runs. */
	cli[0] = fx_tcp_client(AF_INET, port);
	cli[1] = fx_tcp_client(AF_INET, port);
	return a;
}

START_TEST(test_accept_pauses)
{
	struct event_base *base = fx_base();
	struct acc a;
	evutil_socket_t cli[2];

	acc_listen_two(&a, base, ACT_PAUSE, cli);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	fx_settle(base);
	ck_assert_int_eq(a.accepts, 1);
	ck_assert_int_eq(async_chat_listener_resume(a.l), 0);
	ck_assert_int_eq(
	    tu_run_until(base, until_two_accepts, &a, FX_WAIT_MS), 0);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

START_TEST(test_accept_pause_resume)
{
	struct event_base *base = fx_base();
	struct acc a;
	evutil_socket_t cli[2];

	acc_listen_two(&a, base, ACT_PAUSE_RESUME, cli);
	ck_assert_int_eq(
	    tu_run_until(base, until_two_accepts, &a, FX_WAIT_MS), 0);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

START_TEST(test_accept_frees)
{
	struct event_base *base = fx_base();
	struct acc a;
	evutil_socket_t cli[2];

	acc_listen_two(&a, base, ACT_FREE, cli);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_ptr_null(a.l);
	fx_settle(base);
	ck_assert_int_eq(a.accepts, 1);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

static void
add_hostname(TCase *tc)
{
	tcase_add_test(tc, test_hostname_ipv4);
	tcase_add_test(tc, test_hostname_ipv6);
	tcase_add_test(tc, test_hostname_localhost);
	tcase_add_test(tc, test_hostname_port);
	tcase_add_test(tc, test_hostname_bad_args);
	tcase_add_test(tc, test_hostname_unresolved);
}

static void
add_flags(TCase *tc)
{
	tcase_add_test(tc, test_flags_bad_args);
	tcase_add_test(tc, test_reuseport);
	tcase_add_test(tc, test_ipv6_only);
}

static void
add_unix(TCase *tc)
{
	tcase_add_test(tc, test_unix_connect);
	tcase_add_test(tc, test_unix_existing_path);
	tcase_add_test(tc, test_unix_bad_args);
}

static void
add_new_fd(TCase *tc)
{
	tcase_add_test(tc, test_new_fd_refuses);
	tcase_add_test(tc, test_new_fd_unix);
}

static void
add_backoff(TCase *tc)
{
	tcase_add_test(tc, test_emfile_backoff_default);
	tcase_add_test(tc, test_emfile_backoff_handler);
	tcase_add_test(tc, test_emfile_backoff_resets);
	tcase_add_test(tc, test_emfile_handler_pauses);
	tcase_add_test(tc, test_emfile_handler_pause_resume);
	tcase_add_test(tc, test_emfile_handler_frees);
	tcase_add_test(tc, test_emfile_pause_during_backoff);
}

static void
add_in_accept(TCase *tc)
{
	tcase_add_test(tc, test_accept_pauses);
	tcase_add_test(tc, test_accept_pause_resume);
	tcase_add_test(tc, test_accept_frees);
}

static const struct fx_tcase tcases[] = {
    {"hostname", 0, add_hostname},
    {"flags", 0, add_flags},
    {"unix", 0, add_unix},
    {"new_fd", 0, add_new_fd},
    {"backoff", 30, add_backoff},
    {"in_accept", 0, add_in_accept},
    {NULL, 0, NULL},
};

const struct fx_suite fx_suite = {"listener", tcases, NULL};
