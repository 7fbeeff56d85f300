/*
 * fuzz_listener.c - libFuzzer target: libasynchat's listener and
 * outgoing connections, on loopback addresses only.
 *
 * A program creates listeners on 127.0.0.1 and ::1 (port 0, or an fd
 * already listening), connects channels to them with async_chat_connect()
 * and async_chat_connect_hostname() ("127.0.0.1", "localhost", "::1",
 * with no evdns_base; and a name that an evdns_base with no nameserver
 * cannot resolve, which fails without a packet sent), connects to a port
 * nobody listens on, accepts (or refuses) in handle_accept and pauses,
 * resumes or frees the listener there, makes accept(2) fail with EMFILE
 * by lowering RLIMIT_NOFILE for one turn of the loop, and makes both
 * ends push, close, half-close, pause and discard.  A tape gives every
 * callback an action.  The bad-argument step also makes set-up fail
 * without a resolver: an unknown service name, a port in use, Unix paths
 * in a missing directory or naming a plain file, and no descriptor left.
 *
 * Checked: ASan and LSan, handle_free exactly once per channel, no
 * callback of a channel after its handle_free, handle_connect at most
 * once and only on a connecting channel, errors only of the kinds the
 * program provoked, every socket closed at the end.
 *
 * Input layout: flags, tape length, tape, program (the rest).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "asynchat.h"

#define MAX_CONN 24
#define MAX_STEPS 200
#define ACTION_BUDGET 400

enum {
	F_V6 = 1 << 0,       /* a listener on ::1 too, when the system has it */
	F_ERRH = 1 << 1,     /* an accept error handler */
	F_MESSAGE = 1 << 2,  /* channels in message mode */
	F_NO_CLOSE = 1 << 3, /* handle_close NULL */
	F_NO_ERROR = 1 << 4, /* handle_error NULL */
	F_BACKLOG = 1 << 5,  /* a backlog of 1 */
	F_WAIT = 1 << 6      /* wait for the accept back-off to end */
};

enum kind { K_CLIENT, K_SERVER };

struct fz;

struct conn {
	struct fz *z;
	struct async_chat *chat; /* NULL once freed */
	enum kind kind;
	int used;
	int frees, connects;
	int dns;     /* connecting through the evdns_base */
	int refused; /* connecting to a port nobody listens on */
	size_t got;
};

struct fz {
	struct event_base *base;
	struct evdns_base *dns;
	struct async_chat_listener *l[2];
	struct sockaddr_storage addr[2];
	int addrlen[2];
	int have_v6;
	struct conn c[MAX_CONN];
	struct async_chat_handlers h;
	unsigned flags;
	const uint8_t *tape, *prog;
	size_t tape_len, tape_pos, prog_len, prog_pos;
	int actions, accepts, accept_errors;
	int emfile; /* RLIMIT_NOFILE is lowered now */
	struct async_chat_listener *ul; /* on a Unix-domain path */
	char path[64];
	int fds_before;
};

/*
 * Allocation failures while a listener is made: libasynchat's through
 * -Wl,--wrap=malloc and so on (see fuzz/coverage.am), libevent's through
 * event_set_mem_functions(), only while armed.
 */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static __thread int fi_armed;
static long fi_countdown = -1;

static int
fi_fail(void)
{
	if (!fi_armed || fi_countdown < 0)
		return 0;
	if (fi_countdown-- > 0)
		return 0;
	return 1; /* and every one after, while armed */
}

void *
__wrap_malloc(size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(p, size);
}

static void
ev_free(void *p)
{
	free(p);
}

static void
fz_fail(struct fz *z, const char *what)
{
	fprintf(stderr, "flags 0x%x accepts %d accept errors %d\n", z->flags,
	    z->accepts, z->accept_errors);
	fprintf(stderr, "fuzz_listener: %s\n", what);
	abort();
}

static uint8_t
prog_u8(struct fz *z)
{
	return z->prog_pos < z->prog_len ? z->prog[z->prog_pos++] : 0;
}

static uint8_t
tape_u8(struct fz *z)
{
	if (z->tape_len == 0)
		return 0;
	return z->tape[z->tape_pos++ % z->tape_len];
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (d == NULL)
		return -1;
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static struct conn *
conn_new(struct fz *z, enum kind kind)
{
	int i;

	for (i = 0; i < MAX_CONN; i++) {
		if (!z->c[i].used) {
			memset(&z->c[i], 0, sizeof(z->c[i]));
			z->c[i].z = z;
			z->c[i].used = 1;
			z->c[i].kind = kind;
			return &z->c[i];
		}
	}
	return NULL;
}

/* The i-th channel still open, or NULL. */
static struct conn *
conn_pick(struct fz *z, uint8_t i)
{
	int k, n = 0;

	for (k = 0; k < MAX_CONN; k++)
		if (z->c[k].used && z->c[k].chat != NULL)
			n++;
	if (n == 0)
		return NULL;
	n = i % n;
	for (k = 0; k < MAX_CONN; k++)
		if (z->c[k].used && z->c[k].chat != NULL && n-- == 0)
			return &z->c[k];
	return NULL;
}

static void
cb_enter(struct conn *c, struct async_chat *chat, const char *name)
{
	if (c->chat == NULL || c->frees != 0) {
		fprintf(stderr, "callback %s\n", name);
		fz_fail(c->z, "a callback after handle_free");
	}
	if (chat != c->chat)
		fz_fail(c->z, "a callback for another channel");
}

static void listener_free(struct fz *z, int i);

/* An action of a callback or the program on channel c. */
static void
act(struct fz *z, struct conn *c)
{
	struct async_chat *chat = c->chat;
	uint8_t a = tape_u8(z);
	char buf[32];
	size_t n, i;

	if (chat == NULL || ++z->actions > ACTION_BUDGET)
		return;
	switch (a % 16) {
	case 1:
		n = 1 + tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = "ab\n\r x"[tape_u8(z) % 6];
		if (async_chat_push(chat, buf, n) != 0 && errno != EPIPE)
			fz_fail(z, "push failed");
		break;
	case 2:
		async_chat_close(chat);
		if (c->frees != 1)
			fz_fail(z, "close did not run handle_free");
		break;
	case 3:
		if (async_chat_close_when_done(chat) != 0)
			fz_fail(z, "close_when_done failed");
		break;
	case 4:
		if (async_chat_shutdown_when_done(chat) != 0 && errno != EPIPE)
			fz_fail(z, "shutdown_when_done failed");
		break;
	case 5:
		if (async_chat_pause_reading(chat) != 0)
			fz_fail(z, "pause failed");
		break;
	case 6:
		if (async_chat_resume_reading(chat) != 0 && errno != EPIPE)
			fz_fail(z, "resume failed");
		break;
	case 7:
		if (async_chat_set_terminator_line(chat) != 0)
			fz_fail(z, "set_terminator_line failed");
		break;
	case 8:
		if (async_chat_set_terminator_count(chat, 1 + tape_u8(z) % 8) !=
		    0)
			fz_fail(z, "set_terminator_count failed");
		break;
	case 9:
		if (async_chat_discard_buffers(chat) != 0)
			fz_fail(z, "discard failed");
		break;
	case 10:
		if (async_chat_push_simple_producer(chat, "hello\n", 6, 2) != 0 &&
		    errno != EPIPE)
			fz_fail(z, "simple producer failed");
		break;
	case 11: {
		/* a second connect: refused while connected (EISCONN) or
		 * connecting (EALREADY); after a failure it is tried on
		 * the same socket, and connect(2) says what it says */
		struct sockaddr_in sin;
		int up = async_chat_connected(chat);

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin.sin_port = htons(9);
		errno = 0;
		if (async_chat_connect(chat, (struct sockaddr *)&sin,
		        sizeof(sin)) == 0) {
			if (up)
				fz_fail(z, "a connect on a connected channel");
			c->refused = 1; /* port 9: nobody listens */
			c->kind = K_CLIENT;
		} else if (up && errno != EISCONN) {
			fprintf(stderr, "connect: %s\n", strerror(errno));
			fz_fail(z, "a second connect: not EISCONN");
		}
		break;
	}
	case 12:
		if (async_chat_get_fd(chat) < 0 && async_chat_connected(chat))
			fz_fail(z, "connected without a socket");
		(void)async_chat_output_pending(chat);
		(void)async_chat_dns_error(chat);
		break;
	case 13:
		if (z->l[0] != NULL)
			async_chat_listener_pause(z->l[0]);
		break;
	case 14:
		if (z->l[0] != NULL)
			async_chat_listener_resume(z->l[0]);
		break;
	default:
		break;
	}
}

static void
on_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct conn *c = arg;

	(void)data;
	cb_enter(c, chat, "collect");
	c->got += len;
	act(c->z, c);
}

static void
on_found(struct async_chat *chat, void *arg)
{
	struct conn *c = arg;

	cb_enter(c, chat, "found");
	if (c->z->flags & F_MESSAGE) {
		struct evbuffer *in = async_chat_incoming(chat);

		if (in == NULL)
			fz_fail(c->z, "incoming() failed");
		c->got += evbuffer_get_length(in);
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	act(c->z, c);
}

static void
on_connect(struct async_chat *chat, void *arg)
{
	struct conn *c = arg;

	cb_enter(c, chat, "connect");
	if (c->kind != K_CLIENT)
		fz_fail(c->z, "handle_connect on an accepted channel");
	if (++c->connects > 1)
		fz_fail(c->z, "handle_connect twice");
	/* (a port picked as free may be taken by a listener made later) */
	if (c->dns)
		fz_fail(c->z, "connected to a name that does not resolve");
	if (async_chat_connected(chat) != 1 || async_chat_get_fd(chat) < 0)
		fz_fail(c->z, "handle_connect but not connected");
	act(c->z, c);
}

static void
on_close(struct async_chat *chat, void *arg)
{
	struct conn *c = arg;

	cb_enter(c, chat, "close");
	act(c->z, c);
	if (c->chat != NULL && tape_u8(c->z) % 2)
		async_chat_close(chat);
}

static void
on_error(struct async_chat *chat, int err, void *arg)
{
	struct conn *c = arg;
	struct fz *z = c->z;

	cb_enter(c, chat, "error");
	switch (err) {
	case ECONNREFUSED:
		if (!c->refused && c->kind == K_SERVER)
			fz_fail(z, "ECONNREFUSED on an accepted channel");
		break;
	case ASYNC_CHAT_ERR_DNS:
		if (!c->dns)
			fz_fail(z, "a DNS error without a lookup");
		if (async_chat_dns_error(chat) == 0)
			fz_fail(z, "ASYNC_CHAT_ERR_DNS without dns_error()");
		break;
	case ECONNRESET:
	case EPIPE:
	case ENOTCONN:     /* a write on a socket whose connect failed */
	case ECONNABORTED:
		break;
	default:
		fprintf(stderr, "error %d %s\n", err, async_chat_strerror(err));
		fz_fail(z, "unexpected error");
	}
	if (async_chat_connected(chat) != 0)
		fz_fail(z, "connected after a socket error");
	if (tape_u8(z) % 4 != 0)
		async_chat_close(chat);
	else
		act(z, c);
}

static void
on_drain(struct async_chat *chat, void *arg)
{
	struct conn *c = arg;

	cb_enter(c, chat, "drain");
	if (async_chat_output_pending(chat) != 0)
		fz_fail(c->z, "drained with output pending");
	act(c->z, c);
}

static void
on_free(struct async_chat *chat, void *arg)
{
	struct conn *c = arg;

	if (chat != c->chat)
		fz_fail(c->z, "handle_free for another channel");
	if (++c->frees != 1)
		fz_fail(c->z, "handle_free twice");
	errno = 0;
	if (async_chat_push(chat, "x", 1) != -1 || errno != ENOTCONN ||
	    async_chat_get_fd(chat) != -1 || async_chat_connected(chat) != 0)
		fz_fail(c->z, "a call in handle_free did not fail");
	c->chat = NULL;
}

/*
 * The listener
 */

static void
on_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct fz *z = arg;
	struct conn *c;
	int i = l == z->l[0] ? 0 : 1;
	uint8_t a = tape_u8(z);

	if (l == z->ul) {
		i = -1;
	} else if (l != z->l[0] && l != z->l[1]) {
		fz_fail(z, "handle_accept for another listener");
	}
	if (addr == NULL || addrlen <= 0 ||
	    (addr->sa_family != AF_INET && addr->sa_family != AF_INET6 &&
	        addr->sa_family != AF_UNIX))
		fz_fail(z, "handle_accept without the peer's address");
	z->accepts++;
	c = a % 8 == 1 ? NULL : conn_new(z, K_SERVER);
	if (c == NULL) {
		close(fd); /* refused */
	} else {
		c->chat = async_chat_new(z->base, fd, &z->h, c);
		if (c->chat == NULL) {
			close(fd);
			c->used = 0;
		} else if (a & 0x10) {
			async_chat_set_terminator_line(c->chat);
		}
	}
	switch (a % 8) {
	case 2:
		if (async_chat_listener_pause(l) != 0)
			fz_fail(z, "listener_pause failed");
		break;
	case 3:
		if (i >= 0) {
			listener_free(z, i); /* inside handle_accept */
		} else {
			async_chat_listener_free(z->ul);
			z->ul = NULL;
		}
		break;
	case 4:
		if (async_chat_listener_pause(l) != 0 ||
		    async_chat_listener_resume(l) != 0)
			fz_fail(z, "listener pause and resume failed");
		break;
	case 5:
		if (c != NULL)
			act(z, c);
		break;
	default:
		break;
	}
}

static void
on_accept_error(struct async_chat_listener *l, int err, void *arg)
{
	struct fz *z = arg;
	int i = l == z->l[0] ? 0 : 1;

	if (l == z->ul)
		i = -1;
	else if (l != z->l[0] && l != z->l[1])
		fz_fail(z, "accept error for another listener");
	if (err != EMFILE && err != ENFILE && err != ENOBUFS &&
	    err != ENOMEM) {
		fprintf(stderr, "accept error %d %s\n", err, strerror(err));
		fz_fail(z, "an unexpected accept error");
	}
	if (!z->emfile)
		fz_fail(z, "an accept error with file descriptors to spare");
	z->accept_errors++;
	if (async_chat_listener_backing_off(l) < 0)
		fz_fail(z, "backing_off failed");
	switch (tape_u8(z) % 4) {
	case 1:
		async_chat_listener_pause(l);
		break;
	case 2:
		if (i >= 0) {
			listener_free(z, i);
		} else {
			async_chat_listener_free(z->ul);
			z->ul = NULL;
		}
		break;
	case 3:
		async_chat_listener_resume(l); /* during the back-off */
		break;
	default:
		break;
	}
}

static void
listener_free(struct fz *z, int i)
{
	async_chat_listener_free(z->l[i]);
	z->l[i] = NULL;
}

/* A listener on 127.0.0.1 (i 0) or ::1 (i 1), port 0; by hand with
 * listener_new_fd if fd_way. */
static void
listener_make(struct fz *z, int i, int fd_way)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	int len, backlog = z->flags & F_BACKLOG ? 1 : -1;

	if (z->l[i] != NULL || (i == 1 && !z->have_v6))
		return;
	memset(&ss, 0, sizeof(ss));
	if (i == 0) {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*sin);
	} else {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		len = sizeof(*sin6);
	}
	if (fd_way) {
		int fd = socket(ss.ss_family, SOCK_STREAM, 0);

		if (fd < 0)
			return;
		if (bind(fd, (struct sockaddr *)&ss, (socklen_t)len) != 0 ||
		    listen(fd, 8) != 0) {
			close(fd);
			return;
		}
		z->l[i] = async_chat_listener_new_fd(z->base, fd, on_accept, z);
		if (z->l[i] == NULL) {
			close(fd);
			fz_fail(z, "listener_new_fd failed");
		}
	} else {
		z->l[i] = async_chat_listener_new(z->base,
		    (struct sockaddr *)&ss, len, backlog, on_accept, z);
		if (z->l[i] == NULL) {
			if (i == 1)
				return; /* no IPv6 here after all */
			fz_fail(z, "listener_new failed");
		}
	}
	if ((z->flags & F_ERRH) &&
	    async_chat_listener_set_error_handler(z->l[i], on_accept_error))
		fz_fail(z, "set_error_handler failed");
	z->addrlen[i] = sizeof(z->addr[i]);
	if (async_chat_listener_get_address(z->l[i],
	        (struct sockaddr *)&z->addr[i], &z->addrlen[i]) != 0 ||
	    async_chat_listener_get_fd(z->l[i]) < 0)
		fz_fail(z, "listener_get_address failed");
}

/* A listener made while allocations fail after a countdown: it fails
 * cleanly (ENOMEM, or EINVAL where libevent says no more) or works. */
static void
listener_faults(struct fz *z, uint8_t a)
{
	struct sockaddr_in sin;
	struct async_chat_listener *l;
	int fd = -1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (a & 0x80) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ||
		    listen(fd, 4) != 0)
			abort();
	}
	fi_countdown = a % 16;
	fi_armed = 1;
	errno = 0;
	if (fd >= 0)
		l = async_chat_listener_new_fd(z->base, fd, on_accept, z);
	else if (a & 0x40)
		l = async_chat_listener_new_hostname(z->base, AF_INET,
		    "127.0.0.1", "0", 0, -1, on_accept, z, NULL);
	else if (a & 0x20 && z->ul == NULL)
		l = async_chat_listener_new_unix(
		    z->base, z->path, 0, -1, on_accept, z);
	else
		l = async_chat_listener_new(z->base, (struct sockaddr *)&sin,
		    sizeof(sin), -1, on_accept, z);
	fi_armed = 0;
	fi_countdown = -1;
	if (l == NULL) {
		/* (getaddrinfo's own allocations fail too: EAI_MEMORY) */
		if (errno != ENOMEM && errno != EINVAL && errno != ENOENT)
			fz_fail(z, "a listener failed otherwise than ENOMEM");
		if (fd >= 0)
			close(fd); /* on failure fd is still ours */
		return;
	}
	async_chat_listener_free(l);
}

/* A client connecting to the Unix-domain listener. */
static void
connect_unix(struct fz *z)
{
	struct sockaddr_un sun_;
	struct conn *c;

	if (z->ul == NULL || (c = conn_new(z, K_CLIENT)) == NULL)
		return;
	c->chat = async_chat_new(z->base, -1, &z->h, c);
	if (c->chat == NULL)
		fz_fail(z, "async_chat_new(-1) failed");
	memset(&sun_, 0, sizeof(sun_));
	sun_.sun_family = AF_UNIX;
	memcpy(sun_.sun_path, z->path, strlen(z->path) + 1);
	if (async_chat_connect(c->chat, (struct sockaddr *)&sun_,
	        sizeof(sun_)) != 0) {
		c->refused = 1;
		async_chat_close(c->chat);
	}
}

/* The 0.2 ways to listen: flags, host names and ports as strings, Unix
 * paths; loopback addresses only. */
static void
listener_v2(struct fz *z, uint8_t a)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct async_chat_listener *l = NULL;
	unsigned flags = (a & 0x40 ? ASYNC_CHAT_LISTEN_REUSEPORT : 0) |
	    (a & 0x80 ? ASYNC_CHAT_LISTEN_IPV6_ONLY : 0);
	int dns_error = -1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_addr = in6addr_loopback;
	errno = 0;
	switch (a % 8) {
	case 0:
		l = async_chat_listener_new_flags(z->base,
		    (struct sockaddr *)&sin, sizeof(sin), flags, -1, on_accept,
		    z);
		break;
	case 1:
		if (z->have_v6)
			l = async_chat_listener_new_flags(z->base,
			    (struct sockaddr *)&sin6, sizeof(sin6), flags, 4,
			    on_accept, z);
		break;
	case 2:
		/* numeric, and a name /etc/hosts answers: no resolver */
		l = async_chat_listener_new_hostname(z->base,
		    a & 0x20 ? AF_UNSPEC : AF_INET, "127.0.0.1", "0", flags, -1,
		    on_accept, z, &dns_error);
		if (l == NULL)
			fz_fail(z, "listener_new_hostname 127.0.0.1 failed");
		break;
	case 3:
		l = async_chat_listener_new_hostname(z->base, AF_INET,
		    "localhost", "0", flags, -1, on_accept, z, &dns_error);
		break;
	case 4:
		if (z->have_v6)
			l = async_chat_listener_new_hostname(z->base,
			    a & 0x20 ? AF_UNSPEC : AF_INET6, "::1", "0", flags,
			    -1, on_accept, z, NULL);
		break;
	case 5: {
		/* refused arguments */
		static const char *const ports[] = {"", "70000", "80x", "65536"};

		if (async_chat_listener_new_hostname(z->base, AF_INET,
		        "127.0.0.1", ports[(a >> 3) & 3], 0, -1, on_accept, z,
		        &dns_error) != NULL ||
		    errno != EINVAL ||
		    async_chat_listener_new_hostname(z->base, AF_UNIX,
		        "127.0.0.1", "0", 0, -1, on_accept, z, NULL) != NULL ||
		    async_chat_listener_new_hostname(z->base, AF_INET,
		        "127.0.0.1", "0", 1u << 7, -1, on_accept, z, NULL) !=
		        NULL ||
		    async_chat_listener_new_hostname(NULL, AF_INET, "127.0.0.1",
		        "0", 0, -1, on_accept, z, NULL) != NULL ||
		    async_chat_listener_new_hostname(z->base, AF_INET,
		        "127.0.0.1", NULL, 0, -1, on_accept, z, NULL) != NULL ||
		    async_chat_listener_new_flags(z->base,
		        (struct sockaddr *)&sin, sizeof(sin), 1u << 9, -1,
		        on_accept, z) != NULL ||
		    async_chat_listener_new_unix(z->base, "", 0, -1, on_accept,
		        z) != NULL ||
		    async_chat_listener_new_unix(z->base, z->path, 1, -1,
		        on_accept, z) != NULL ||
		    async_chat_listener_new_unix(NULL, z->path, 0, -1,
		        on_accept, z) != NULL ||
		    async_chat_listener_backing_off(NULL) != -1)
			fz_fail(z, "a bad listener argument was accepted");
		{
			char longp[200];

			memset(longp, 'p', sizeof(longp) - 1);
			longp[0] = '/';
			longp[sizeof(longp) - 1] = '\0';
			errno = 0;
			if (async_chat_listener_new_unix(z->base, longp, 0, -1,
			        on_accept, z) != NULL ||
			    errno != ENAMETOOLONG)
				fz_fail(z, "a Unix path too long was accepted");
		}
		break;
	}
	case 6:
		/* a Unix-domain listener; a stale socket file is replaced */
		if (z->ul == NULL) {
			if (a & 0x20) {
				struct sockaddr_un sun_;
				int fd = socket(AF_UNIX, SOCK_STREAM, 0);

				memset(&sun_, 0, sizeof(sun_));
				sun_.sun_family = AF_UNIX;
				memcpy(sun_.sun_path, z->path, strlen(z->path) + 1);
				if (fd >= 0) {
					unlink(z->path);
					if (bind(fd, (struct sockaddr *)&sun_,
					        sizeof(sun_)) != 0) {
						/* no stale file then */
					}
					close(fd);
				}
			}
			z->ul = async_chat_listener_new_unix(
			    z->base, z->path, 0, -1, on_accept, z);
			if (z->ul == NULL)
				fz_fail(z, "listener_new_unix failed");
			if ((z->flags & F_ERRH) &&
			    async_chat_listener_set_error_handler(
			        z->ul, on_accept_error) != 0)
				fz_fail(z, "set_error_handler failed");
		} else {
			/* the path is a listener's: refused */
			errno = 0;
			if (async_chat_listener_new_unix(z->base, z->path, 0, -1,
			        on_accept, z) != NULL ||
			    errno != EADDRINUSE)
				fz_fail(z, "a second listener on a Unix path");
		}
		connect_unix(z);
		return;
	default:
		if (z->ul != NULL) {
			async_chat_listener_free(z->ul);
			z->ul = NULL;
		}
		return;
	}
	if (l != NULL) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);

		if (async_chat_listener_get_address(l, (struct sockaddr *)&ss,
		        &len) != 0 ||
		    async_chat_listener_backing_off(l) != 0)
			fz_fail(z, "a new listener answered wrongly");
		async_chat_listener_free(l);
	} else if (a % 8 <= 4 && errno != ENOPROTOOPT && errno != EADDRNOTAVAIL &&
	           errno != EAFNOSUPPORT && errno != 0) {
		fprintf(stderr, "listener: %s\n", strerror(errno));
		fz_fail(z, "a listener on loopback failed");
	}
}

int async_chat__listener_next_backoff_ms(const struct async_chat_listener *l);

/* A socket file at path whose listener has gone. */
static void
stale_socket(const char *path)
{
	struct sockaddr_un sun_;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (fd < 0)
		return;
	memset(&sun_, 0, sizeof(sun_));
	sun_.sun_family = AF_UNIX;
	snprintf(sun_.sun_path, sizeof(sun_.sun_path), "%s", path);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun_, sizeof(sun_)) != 0) {
		/* no stale file then */
	}
	close(fd);
}

/* Set-up failures without a resolver: a service name that does not
 * exist, a loopback port in use, a Unix path in a directory that does
 * not exist or naming a plain file, and every socket(2) failing with
 * EMFILE (RLIMIT_NOFILE at the lowest free descriptor). */
static void
listener_edges(struct fz *z)
{
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	struct async_chat_listener *l;
	struct rlimit saved, low;
	char p[sizeof(((struct sockaddr_un *)0)->sun_path)], port[16];
	int len = sizeof(ss), dns_error = 0, fd, n;

	errno = 0;
	if (async_chat_listener_new_hostname(z->base, AF_INET, "127.0.0.1",
	        "no-such-service-x", 0, -1, on_accept, z, &dns_error) != NULL ||
	    errno != ENOENT || dns_error == 0)
		fz_fail(z, "an unknown service name was accepted");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = async_chat_listener_new_flags(z->base, (struct sockaddr *)&sin,
	    sizeof(sin), 0, -1, on_accept, z);
	if (l == NULL)
		fz_fail(z, "a listener on 127.0.0.1 failed");
	if (async_chat__listener_next_backoff_ms(l) != 10)
		fz_fail(z, "a new listener's back-off is not 10 ms");
	if (async_chat_listener_get_address(l, (struct sockaddr *)&ss, &len) !=
	        0 ||
	    ss.ss_family != AF_INET)
		fz_fail(z, "get_address failed");
	snprintf(port, sizeof(port), "%u",
	    (unsigned)ntohs(((struct sockaddr_in *)&ss)->sin_port));
	errno = 0;
	if (async_chat_listener_new_hostname(z->base, AF_INET, "127.0.0.1",
	        port, 0, -1, on_accept, z, NULL) != NULL ||
	    errno != EADDRINUSE)
		fz_fail(z, "a second listener on a port in use");
	async_chat_listener_free(l);

	snprintf(p, sizeof(p), "%s.d/s", z->path);
	errno = 0;
	if (async_chat_listener_new_unix(z->base, p, 0, -1, on_accept, z) !=
	        NULL ||
	    errno != ENOENT)
		fz_fail(z, "a Unix path in no directory was accepted");
	snprintf(p, sizeof(p), "%s.f", z->path);
	fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		errno = 0;
		if (async_chat_listener_new_unix(z->base, p, 0, -1, on_accept,
		        z) != NULL ||
		    errno != EADDRINUSE)
			fz_fail(z, "a Unix path naming a file was taken");
		unlink(p);
	}

	/* no descriptor left */
	snprintf(p, sizeof(p), "%s.s", z->path);
	stale_socket(p);
	n = dup(0);
	if (n < 0 || getrlimit(RLIMIT_NOFILE, &saved) != 0) {
		if (n >= 0)
			close(n);
		unlink(p);
		return;
	}
	close(n);
	low = saved;
	low.rlim_cur = (rlim_t)n;
	if (low.rlim_cur <= saved.rlim_cur &&
	    setrlimit(RLIMIT_NOFILE, &low) == 0) {
		struct async_chat_listener *a, *b, *c;
		int ea, eb, ec;

		errno = 0;
		a = async_chat_listener_new_flags(z->base,
		    (struct sockaddr *)&sin, sizeof(sin), 0, -1, on_accept, z);
		ea = errno;
		/* whether the stale file is live cannot be told: in use */
		b = async_chat_listener_new_unix(
		    z->base, p, 0, -1, on_accept, z);
		eb = errno;
		unlink(p);
		c = async_chat_listener_new_unix(
		    z->base, p, 0, -1, on_accept, z);
		ec = errno;
		if (setrlimit(RLIMIT_NOFILE, &saved) != 0)
			abort();
		if (a != NULL || ea != EMFILE || b != NULL ||
		    eb != EADDRINUSE || c != NULL || ec != EMFILE)
			fz_fail(z, "a listener made with no descriptor left");
	}
	unlink(p);
}

/* Bad arguments, and a second listener on a port in use. */
static void
listener_bad_args(struct fz *z)
{
	struct sockaddr_in sin;
	struct sockaddr_storage ss;
	int len = 0;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	errno = 0;
	if (async_chat_listener_new(NULL, (struct sockaddr *)&sin,
	        sizeof(sin), -1, on_accept, z) != NULL ||
	    errno != EINVAL ||
	    async_chat_listener_new(z->base, NULL, 16, -1, on_accept, z) !=
	        NULL ||
	    async_chat_listener_new(z->base, (struct sockaddr *)&sin,
	        sizeof(sin), -2, on_accept, z) != NULL ||
	    async_chat_listener_new(z->base, (struct sockaddr *)&sin,
	        sizeof(sin), -1, NULL, z) != NULL ||
	    async_chat_listener_new_fd(z->base, -1, on_accept, z) != NULL ||
	    async_chat_listener_new_fd(NULL, 0, on_accept, z) != NULL ||
	    async_chat_listener_set_error_handler(NULL, NULL) != -1 ||
	    async_chat_listener_pause(NULL) != -1 ||
	    async_chat_listener_resume(NULL) != -1 ||
	    async_chat_listener_get_fd(NULL) != -1 ||
	    async_chat_listener_get_address(NULL, (struct sockaddr *)&ss,
	        &len) != -1)
		fz_fail(z, "a bad listener argument was accepted");
	async_chat_listener_free(NULL);
	{
		/* a descriptor that is not open */
		int fd = dup(0);

		if (fd >= 0) {
			close(fd);
			errno = 0;
			if (async_chat_listener_new_fd(z->base, fd, on_accept,
			        z) != NULL ||
			    errno != EBADF)
				fz_fail(z, "listener_new_fd on a closed fd");
		}
	}
	if (z->l[0] != NULL) {
		len = 0;
		if (async_chat_listener_get_address(z->l[0],
		        (struct sockaddr *)&ss, &len) != -1 ||
		    errno != EINVAL)
			fz_fail(z, "get_address with no room");
		/* the port is taken */
		errno = 0;
		if (async_chat_listener_new(z->base,
		        (struct sockaddr *)&z->addr[0], z->addrlen[0], -1,
		        on_accept, z) != NULL ||
		    errno != EADDRINUSE)
			fz_fail(z, "a listener on a port in use");
	}
	{
		/* new_fd on a datagram socket, and on a stream socket that
		 * is not listening: EINVAL */
		int u = socket(AF_INET, SOCK_DGRAM, 0);
		int t = socket(AF_INET, SOCK_STREAM, 0);

		errno = 0;
		if (u >= 0 && (async_chat_listener_new_fd(z->base, u, on_accept,
		                   z) != NULL ||
		                  errno != EINVAL))
			fz_fail(z, "listener_new_fd on a datagram socket");
		errno = 0;
		if (t >= 0 && (async_chat_listener_new_fd(z->base, t, on_accept,
		                   z) != NULL ||
		                  errno != EINVAL))
			fz_fail(z, "listener_new_fd on a socket not listening");
		if (u >= 0)
			close(u);
		if (t >= 0)
			close(t);
	}
	{
		/* new_fd on something that is not a socket */
		int fds[2];

		if (pipe(fds) == 0) {
			struct async_chat_listener *l =
			    async_chat_listener_new_fd(z->base, fds[0],
			        on_accept, z);

			/* a pipe is accepted as an fd; nothing connects */
			if (l != NULL)
				async_chat_listener_free(l); /* closes fds[0] */
			else
				close(fds[0]);
			close(fds[1]);
		}
	}	listener_edges(z);
}

/*
 * Connecting
 */

static void
connect_to(struct fz *z, uint8_t a)
{
	struct conn *c = conn_new(z, K_CLIENT);
	int i = (a >> 3) & 1, rc;
	char host[16];

	if (c == NULL)
		return;
	c->chat = async_chat_new(z->base, -1, &z->h, c);
	if (c->chat == NULL)
		fz_fail(z, "async_chat_new(-1) failed");
	if (async_chat_connected(c->chat) != 0 || async_chat_get_fd(c->chat) != -1)
		fz_fail(z, "a channel with no socket says it is connected");
	if (a & 0x10)
		async_chat_set_terminator_line(c->chat);
	if (a & 0x20) /* queued before the connection is made */
		async_chat_push(c->chat, "early\n", 6);
	if (a & 0x40)
		async_chat_push_simple_producer(c->chat, "producer\n", 9, 3);
	if (z->l[i] == NULL)
		i = 0;
	errno = 0;
	switch (a & 7) {
	case 0:
	case 1:
		if (z->l[i] == NULL) {
			c->refused = 1; /* the port was closed with it */
		}
		rc = async_chat_connect(c->chat,
		    (struct sockaddr *)&z->addr[i], z->addrlen[i]);
		break;
	case 2: {
		int port = ntohs(((struct sockaddr_in *)&z->addr[0])->sin_port);

		if (z->l[0] == NULL)
			c->refused = 1;
		rc = async_chat_connect_hostname(
		    c->chat, NULL, a & 0x80 ? AF_UNSPEC : AF_INET, "127.0.0.1",
		    port);
		break;
	}
	case 3: {
		int port = ntohs(((struct sockaddr_in *)&z->addr[0])->sin_port);

		/* /etc/hosts: no resolver is asked */
		if (z->l[0] == NULL)
			c->refused = 1;
		rc = async_chat_connect_hostname(
		    c->chat, NULL, AF_INET, "localhost", port);
		break;
	}
	case 4: {
		int port;

		if (z->l[1] == NULL || !z->have_v6) {
			rc = async_chat_connect(c->chat,
			    (struct sockaddr *)&z->addr[0], z->addrlen[0]);
			c->refused = z->l[0] == NULL;
			break;
		}
		port = ntohs(((struct sockaddr_in6 *)&z->addr[1])->sin6_port);
		rc = async_chat_connect_hostname(c->chat, NULL,
		    a & 0x80 ? AF_UNSPEC : AF_INET6, "::1", port);
		break;
	}
	case 5: {
		/* a port nobody listens on */
		struct sockaddr_in sin;
		socklen_t len = sizeof(sin);
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ||
		    getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
			abort();
		close(fd);
		c->refused = 1;
		if (a & 0x80)
			rc = async_chat_connect_hostname(c->chat, NULL, AF_INET,
			    "127.0.0.1", ntohs(sin.sin_port));
		else
			rc = async_chat_connect(
			    c->chat, (struct sockaddr *)&sin, sizeof(sin));
		break;
	}
	default:
		/* a name that an evdns_base with no nameserver cannot
		 * resolve: it fails without sending anything */
		c->dns = 1;
		snprintf(host, sizeof(host), "n%u.invalid", a);
		rc = async_chat_connect_hostname(c->chat, z->dns, AF_INET, host,
		    80);
		break;
	}
	if (rc != 0) {
		if (c->refused && (errno == ECONNREFUSED || errno == EINVAL)) {
			async_chat_close(c->chat);
			return;
		}
		fprintf(stderr, "connect: %s\n", strerror(errno));
		fz_fail(z, "connect failed at once");
	}
	/* and once more while it is under way or made */
	errno = 0;
	if (c->chat != NULL &&
	    async_chat_connect(c->chat, (struct sockaddr *)&z->addr[0],
	        z->addrlen[0]) != -1) {
		fprintf(stderr, "connect mode 0x%x\n", a);
		fz_fail(z, "a second connect succeeded");
	}
}

/* Accept errors: RLIMIT_NOFILE at the lowest free descriptor, so that
 * accept(2) fails with EMFILE, for one turn of the loop. */
static void
emfile_turn(struct fz *z)
{
	struct rlimit saved, low;
	int n = dup(0);

	if (n < 0)
		return;
	close(n);
	if (getrlimit(RLIMIT_NOFILE, &saved) != 0)
		return;
	low = saved;
	low.rlim_cur = (rlim_t)n;
	if (low.rlim_cur > saved.rlim_cur)
		return;
	if (setrlimit(RLIMIT_NOFILE, &low) != 0)
		return;
	z->emfile = 1;
	event_base_loop(z->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	z->emfile = 0;
	if (setrlimit(RLIMIT_NOFILE, &saved) != 0)
		abort();
	/* the back-off (10 ms after a first error) ends by itself */
	if (z->flags & F_WAIT) {
		usleep(12000);
		event_base_loop(z->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
}

static void
run_loop(struct fz *z, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		event_base_loop(z->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

static void
run_op(struct fz *z, uint8_t op)
{
	struct conn *c;
	uint8_t a;

	switch (op % 12) {
	case 0:
	case 1:
		connect_to(z, prog_u8(z));
		break;
	case 2:
		c = conn_pick(z, prog_u8(z));
		if (c != NULL)
			act(z, c);
		break;
	case 3:
		c = conn_pick(z, prog_u8(z));
		if (c != NULL) {
			async_chat_close(c->chat);
			if (c->frees != 1)
				fz_fail(z, "close did not run handle_free");
		}
		break;
	case 4:
		a = prog_u8(z);
		if (z->l[a & 1] != NULL) {
			if (a & 2)
				async_chat_listener_pause(z->l[a & 1]);
			else
				async_chat_listener_resume(z->l[a & 1]);
		}
		break;
	case 5:
		a = prog_u8(z);
		if (z->l[a & 1] != NULL)
			listener_free(z, a & 1);
		else
			listener_make(z, a & 1, (a & 2) != 0);
		break;
	case 6:
		emfile_turn(z);
		break;
	case 7:
		listener_bad_args(z);
		break;
	case 9:
		listener_faults(z, prog_u8(z));
		break;
	case 11:
		listener_v2(z, prog_u8(z));
		break;
	case 8: {
		/* the tape acts on every channel */
		int k;

		for (k = 0; k < MAX_CONN; k++)
			if (z->c[k].used && z->c[k].chat != NULL)
				act(z, &z->c[k]);
		break;
	}
	default:
		run_loop(z, 1 + prog_u8(z) % 8);
		break;
	}
}

/* A turn of the loop runs each active callback once (EVLOOP_ONCE: a
 * listener whose accept keeps failing stays active, and a plain
 * EVLOOP_NONBLOCK loop returns only once nothing is active). */

/* Run until no channel is connecting and nothing moves, boundedly. */
static void
settle(struct fz *z)
{
	int i;

	for (i = 0; i < 50; i++)
		event_base_loop(z->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	event_set_mem_functions(__wrap_malloc, __wrap_realloc, ev_free);
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz z;
	size_t pos = 0;
	unsigned steps = 0;
	int k, probe;

	memset(&z, 0, sizeof(z));
	snprintf(z.path, sizeof(z.path), "/tmp/asynchat-fuzz-%ld.sock",
	    (long)getpid());
	z.fds_before = count_fds();
	z.flags = pos < size ? data[pos++] : 0;
	z.tape_len = pos < size ? data[pos++] : 0;
	if (z.tape_len > size - pos)
		z.tape_len = size - pos;
	z.tape = data + pos;
	pos += z.tape_len;
	z.prog = data + pos;
	z.prog_len = size - pos;

	z.h.collect_incoming_data = z.flags & F_MESSAGE ? NULL : on_collect;
	z.h.found_terminator = on_found;
	z.h.handle_connect = on_connect;
	z.h.handle_close = z.flags & F_NO_CLOSE ? NULL : on_close;
	z.h.handle_error = z.flags & F_NO_ERROR ? NULL : on_error;
	z.h.handle_drain = on_drain;
	z.h.handle_free = on_free;

	z.base = event_base_new();
	z.dns = evdns_base_new(z.base, 0); /* no nameserver */
	if (z.base == NULL || z.dns == NULL)
		abort();
	probe = socket(AF_INET6, SOCK_STREAM, 0);
	if (probe >= 0) {
		struct sockaddr_in6 s6;

		memset(&s6, 0, sizeof(s6));
		s6.sin6_family = AF_INET6;
		s6.sin6_addr = in6addr_loopback;
		z.have_v6 = (z.flags & F_V6) &&
		    bind(probe, (struct sockaddr *)&s6, sizeof(s6)) == 0;
		close(probe);
	}
	listener_make(&z, 0, 0);
	listener_make(&z, 1, 0);

	while (z.prog_pos < z.prog_len && steps++ < MAX_STEPS) {
		uint8_t op = prog_u8(&z);

		run_op(&z, op);
		run_loop(&z, op >> 6);
	}
	settle(&z);

	for (k = 0; k < MAX_CONN; k++) {
		if (!z.c[k].used)
			continue;
		if (z.c[k].chat != NULL)
			async_chat_close(z.c[k].chat);
		if (z.c[k].frees != 1)
			fz_fail(&z, "handle_free did not run exactly once");
	}
	for (k = 0; k < 2; k++)
		if (z.l[k] != NULL)
			listener_free(&z, k);
	if (z.ul != NULL)
		async_chat_listener_free(z.ul); /* removes the path */
	unlink(z.path);
	evdns_base_free(z.dns, 1);
	run_loop(&z, 2);
	event_base_free(z.base);
	if (z.fds_before >= 0 && count_fds() != z.fds_before)
		fz_fail(&z, "a socket was never closed");
	return 0;
}
