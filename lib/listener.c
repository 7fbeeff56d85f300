/*
 * listener.c - asyncore's accepting dispatcher: an evconnlistener that
 * hands each accepted socket to the application's handle_accept, makes
 * the listening socket (address, host name or Unix path) itself, and
 * backs off when accept(2) fails instead of retrying at once.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "asynchat.h"
#include "asynchat-internal.h"

/* Why accepting is suspended; it runs while the mask is empty. */
#define SUSPEND_APP 1u     /* async_chat_listener_pause() */
#define SUSPEND_BACKOFF 2u /* an accept error, until the timer */

/* The back-off after an accept error: doubled at each error in a row up
 * to the cap, back to the first delay after an accept succeeds. */
#define BACKOFF_FIRST_MS 10
#define BACKOFF_MAX_MS 1000

#define LISTEN_FLAGS_ALL                                                       \
	(ASYNC_CHAT_LISTEN_REUSEPORT | ASYNC_CHAT_LISTEN_IPV6_ONLY)

/* libevent's default, which 0.1 passed on. */
#define DEFAULT_BACKLOG 128

struct async_chat_listener {
	struct evconnlistener *lev;
	async_chat_accept_fn handle_accept;
	async_chat_accept_error_fn handle_error;
	void *arg;
	struct event backoff; /* ends SUSPEND_BACKOFF */
	int backoff_ms;       /* the next back-off */
	unsigned suspend;
	int depth;  /* our callbacks on the stack */
	int freed;  /* freed inside one of them */
	char *path; /* a Unix path we bound, removed on free */
	dev_t dev;
	ino_t ino;
};

static int
suspend(struct async_chat_listener *l, unsigned why)
{
	unsigned was = l->suspend;

	l->suspend |= why;
	return was == 0 ? evconnlistener_disable(l->lev) : 0;
}

static int
unsuspend(struct async_chat_listener *l, unsigned why)
{
	unsigned was = l->suspend;

	l->suspend &= ~why;
	return was != 0 && l->suspend == 0 ? evconnlistener_enable(l->lev) : 0;
}

static void
release(struct async_chat_listener *l)
{
	free(l->path);
	free(l);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *addr,
    int addrlen, void *ctx)
{
	struct async_chat_listener *l = ctx;

	(void)lev;
	l->backoff_ms = BACKOFF_FIRST_MS;
	l->depth++;
	l->handle_accept(l, fd, addr, addrlen, l->arg);
	if (--l->depth == 0 && l->freed)
		release(l);
}

int
async_chat__listener_next_backoff_ms(const struct async_chat_listener *l)
{
	return l->backoff_ms;
}

static void
backoff_done(evutil_socket_t fd, short what, void *ctx)
{
	(void)fd;
	(void)what;
	unsuspend(ctx, SUSPEND_BACKOFF);
}

/* libevent retries EINTR, EAGAIN and ECONNABORTED itself; every other
 * error arrives here.  Retrying at once would fail at once again (EMFILE
 * stays until a descriptor is closed) and spin, so accepting stops for a
 * while, unless the application has taken charge by pausing. */
static void
error_cb(struct evconnlistener *lev, void *ctx)
{
	struct async_chat_listener *l = ctx;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv;

	(void)lev;
	if (l->handle_error != NULL) {
		l->depth++;
		l->handle_error(l, err, l->arg);
		if (--l->depth == 0 && l->freed) {
			release(l);
			return;
		}
		if (l->freed || (l->suspend & SUSPEND_APP))
			return;
	}
	tv.tv_sec = l->backoff_ms / 1000;
	tv.tv_usec = (l->backoff_ms % 1000) * 1000;
	if (event_add(&l->backoff, &tv) < 0)
		return; /* no timer: keep accepting rather than stop for good */
	suspend(l, SUSPEND_BACKOFF);
	l->backoff_ms *= 2;
	if (l->backoff_ms > BACKOFF_MAX_MS)
		l->backoff_ms = BACKOFF_MAX_MS;
}

/* Wrap a bound, listening, non-blocking socket; fd is not closed on
 * failure. */
static struct async_chat_listener *
listener_wrap(struct event_base *base, evutil_socket_t fd,
    async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l = calloc(1, sizeof(*l));

	if (l == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	l->handle_accept = handle_accept;
	l->arg = arg;
	l->backoff_ms = BACKOFF_FIRST_MS;
	if (event_assign(&l->backoff, base, -1, 0, backoff_done, l) < 0) {
		free(l);
		errno = EINVAL;
		return NULL;
	}
	/* backlog 0: the socket is listening already. */
	l->lev = evconnlistener_new(base, accept_cb, l,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l->lev == NULL) {
		free(l);
		errno = ENOMEM;
		return NULL;
	}
	evconnlistener_set_error_cb(l->lev, error_cb);
	return l;
}

static void
close_keep_errno(evutil_socket_t fd)
{
	int err = errno;

	evutil_closesocket(fd);
	errno = err;
}

static int
set_int_opt(evutil_socket_t fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof(value));
}

/* A bound, non-blocking, close-on-exec stream socket on sa; v6only is 1
 * or 0 to set IPV6_V6ONLY, -1 to leave the system's default.  -1 with
 * errno on failure. */
static evutil_socket_t
bind_socket(const struct sockaddr *sa, int salen, unsigned flags, int v6only)
{
	evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	if (evutil_make_socket_nonblocking(fd) < 0 ||
	    evutil_make_socket_closeonexec(fd) < 0)
		goto fail;
	if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
		/* As evconnlistener_new_bind(), which 0.1 used: accepted
		 * sockets inherit it. */
		(void)set_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
		if (set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0)
			goto fail;
	}
	if (flags & ASYNC_CHAT_LISTEN_REUSEPORT) {
#ifdef SO_REUSEPORT
		if (set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0)
			goto fail;
#else
		errno = ENOPROTOOPT;
		goto fail;
#endif
	}
	if (sa->sa_family == AF_INET6 && v6only >= 0 &&
	    set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only) < 0)
		goto fail;
	if (bind(fd, sa, (socklen_t)salen) < 0)
		goto fail;
	return fd;
fail:
	close_keep_errno(fd);
	return -1;
}

static int
listen_on(evutil_socket_t fd, int backlog)
{
	return listen(fd, backlog < 0 ? DEFAULT_BACKLOG : backlog);
}

static evutil_socket_t
bind_listen(const struct sockaddr *sa, int salen, unsigned flags, int v6only,
    int backlog)
{
	evutil_socket_t fd = bind_socket(sa, salen, flags, v6only);

	if (fd >= 0 && listen_on(fd, backlog) < 0) {
		close_keep_errno(fd);
		return -1;
	}
	return fd;
}

static struct async_chat_listener *
wrap_or_close(struct event_base *base, evutil_socket_t fd,
    async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l =
	    listener_wrap(base, fd, handle_accept, arg);

	if (l == NULL)
		close_keep_errno(fd);
	return l;
}

static int
bad_common(struct event_base *base, unsigned flags, int backlog,
    async_chat_accept_fn handle_accept)
{
	return base == NULL || handle_accept == NULL || backlog < -1 ||
	       (flags & ~(unsigned)LISTEN_FLAGS_ALL) != 0;
}

struct async_chat_listener *
async_chat_listener_new_flags(struct event_base *base,
    const struct sockaddr *addr, int addrlen, unsigned flags, int backlog,
    async_chat_accept_fn handle_accept, void *arg)
{
	evutil_socket_t fd;

	if (bad_common(base, flags, backlog, handle_accept) || addr == NULL ||
	    addrlen <= 0) {
		errno = EINVAL;
		return NULL;
	}
	fd = bind_listen(addr, addrlen, flags,
	    (flags & ASYNC_CHAT_LISTEN_IPV6_ONLY) ? 1 : -1, backlog);
	if (fd < 0)
		return NULL;
	return wrap_or_close(base, fd, handle_accept, arg);
}

struct async_chat_listener *
async_chat_listener_new(struct event_base *base, const struct sockaddr *addr,
    int addrlen, int backlog, async_chat_accept_fn handle_accept, void *arg)
{
	return async_chat_listener_new_flags(
	    base, addr, addrlen, 0, backlog, handle_accept, arg);
}

/* Try the addresses of res of one family (AF_UNSPEC: every one) in
 * order; the listening socket of the first that can be bound, or -1 with
 * the errno of the last tried (*tried says whether one was). */
static evutil_socket_t
bind_first(const struct evutil_addrinfo *res, int family, unsigned flags,
    int v6only, int backlog, int *tried)
{
	const struct evutil_addrinfo *ai;
	evutil_socket_t fd;

	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (family != AF_UNSPEC && ai->ai_family != family)
			continue;
		*tried = 1;
		fd = bind_listen(
		    ai->ai_addr, (int)ai->ai_addrlen, flags, v6only, backlog);
		if (fd >= 0)
			return fd;
	}
	return -1;
}

/* A port that begins with a digit is a number, 0 to 65535: getaddrinfo()
 * would take 70000 as 4464. */
static int
bad_port(const char *port)
{
	unsigned long n = 0;
	const char *p;

	if (port == NULL || *port == '\0')
		return 1;
	if (*port < '0' || *port > '9')
		return 0;
	for (p = port; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return 1;
		n = n * 10 + (unsigned long)(*p - '0');
		if (n > 65535)
			return 1;
	}
	return 0;
}

struct async_chat_listener *
async_chat_listener_new_hostname(struct event_base *base, int family,
    const char *host, const char *port, unsigned flags, int backlog,
    async_chat_accept_fn handle_accept, void *arg, int *dns_error)
{
	struct evutil_addrinfo hints, *res = NULL;
	evutil_socket_t fd = -1;
	int rc, tried = 0, v6only;

	if (dns_error != NULL)
		*dns_error = 0;
	if (bad_common(base, flags, backlog, handle_accept) || bad_port(port) ||
	    (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC)) {
		errno = EINVAL;
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_PASSIVE;
	rc = evutil_getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		if (dns_error != NULL)
			*dns_error = rc;
		errno = ENOENT;
		return NULL;
	}
	v6only = (flags & ASYNC_CHAT_LISTEN_IPV6_ONLY) ? 1 : -1;
	if (host == NULL && family == AF_UNSPEC) {
		/* Every address: the IPv6 wildcard first, which takes IPv4
		 * too unless IPV6_ONLY says otherwise; else IPv4's. */
		if (v6only < 0)
			v6only = 0;
		fd = bind_first(res, AF_INET6, flags, v6only, backlog, &tried);
		if (fd < 0)
			fd = bind_first(
			    res, AF_INET, flags, v6only, backlog, &tried);
	} else {
		fd = bind_first(res, AF_UNSPEC, flags, v6only, backlog, &tried);
	}
	rc = errno;
	evutil_freeaddrinfo(res);
	if (fd < 0) {
		errno = tried ? rc : EADDRNOTAVAIL;
		return NULL;
	}
	return wrap_or_close(base, fd, handle_accept, arg);
}

/* Whether a Unix socket at path has a listener behind it: a refused
 * connect means a stale file left by a listener that has gone. */
static int
unix_path_live(const struct sockaddr_un *sa_un, socklen_t len)
{
	evutil_socket_t fd = socket(AF_UNIX, SOCK_STREAM, 0);
	int live;

	if (fd < 0)
		return 1;
	if (evutil_make_socket_nonblocking(fd) < 0) {
		evutil_closesocket(fd);
		return 1;
	}
	live = connect(fd, (const struct sockaddr *)sa_un, len) == 0 ||
	       errno != ECONNREFUSED;
	evutil_closesocket(fd);
	return live;
}

struct async_chat_listener *
async_chat_listener_new_unix(struct event_base *base, const char *path,
    unsigned flags, int backlog, async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l;
	struct sockaddr_un sa_un;
	struct stat st;
	size_t n;
	socklen_t len;
	evutil_socket_t fd;
	char *copy = NULL;
	int err;

	if (base == NULL || handle_accept == NULL || backlog < -1 ||
	    flags != 0 || path == NULL || *path == '\0') {
		errno = EINVAL;
		return NULL;
	}
	if ((n = strlen(path)) >= sizeof(sa_un.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	memset(&sa_un, 0, sizeof(sa_un));
	sa_un.sun_family = AF_UNIX;
	memcpy(sa_un.sun_path, path, n + 1);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode) || unix_path_live(&sa_un, len)) {
			errno = EADDRINUSE;
			return NULL;
		}
		if (unlink(path) < 0 && errno != ENOENT)
			return NULL;
	}
	if ((fd = bind_socket((struct sockaddr *)&sa_un, (int)len, 0, -1)) < 0)
		return NULL;
	/* From here the path is ours: remove it on failure. */
	if (listen_on(fd, backlog) < 0 || stat(path, &st) < 0 ||
	    (copy = strdup(path)) == NULL) {
		err = errno;
		evutil_closesocket(fd);
		(void)unlink(path);
		errno = err;
		return NULL;
	}
	if ((l = wrap_or_close(base, fd, handle_accept, arg)) == NULL) {
		err = errno;
		free(copy);
		(void)unlink(path);
		errno = err;
		return NULL;
	}
	l->path = copy;
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	return l;
}

struct async_chat_listener *
async_chat_listener_new_fd(struct event_base *base, evutil_socket_t fd,
    async_chat_accept_fn handle_accept, void *arg)
{
	int type = 0, listening = 0;
	socklen_t len;

	if (base == NULL || fd < 0 || handle_accept == NULL) {
		errno = EINVAL;
		return NULL;
	}
	/* EBADF (not open) or ENOTSOCK. */
	len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return NULL;
	if (type != SOCK_STREAM) {
		errno = EINVAL;
		return NULL;
	}
#ifdef SO_ACCEPTCONN
	/* accept(2) on a socket that does not listen fails with EINVAL,
	 * again at every turn of the loop. */
	len = sizeof(listening);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
		return NULL;
	if (!listening) {
		errno = EINVAL;
		return NULL;
	}
#else
	(void)listening;
#endif
	if (evutil_make_socket_nonblocking(fd) < 0) {
		errno = EBADF;
		return NULL;
	}
	return listener_wrap(base, fd, handle_accept, arg);
}

int
async_chat_listener_set_error_handler(struct async_chat_listener *listener,
    async_chat_accept_error_fn handle_error)
{
	if (listener == NULL) {
		errno = EINVAL;
		return -1;
	}
	listener->handle_error = handle_error;
	return 0;
}

int
async_chat_listener_pause(struct async_chat_listener *listener)
{
	if (listener == NULL) {
		errno = EINVAL;
		return -1;
	}
	return suspend(listener, SUSPEND_APP);
}

int
async_chat_listener_resume(struct async_chat_listener *listener)
{
	if (listener == NULL) {
		errno = EINVAL;
		return -1;
	}
	return unsuspend(listener, SUSPEND_APP);
}

int
async_chat_listener_backing_off(const struct async_chat_listener *listener)
{
	if (listener == NULL) {
		errno = EINVAL;
		return -1;
	}
	return (listener->suspend & SUSPEND_BACKOFF) != 0;
}

evutil_socket_t
async_chat_listener_get_fd(const struct async_chat_listener *listener)
{
	return listener != NULL ? evconnlistener_get_fd(listener->lev) : -1;
}

int
async_chat_listener_get_address(const struct async_chat_listener *listener,
    struct sockaddr *addr, int *addrlen)
{
	socklen_t len;

	if (listener == NULL || addr == NULL || addrlen == NULL ||
	    *addrlen <= 0) {
		errno = EINVAL;
		return -1;
	}
	len = (socklen_t)*addrlen;
	if (getsockname(evconnlistener_get_fd(listener->lev), addr, &len) < 0)
		return -1;
	*addrlen = (int)len;
	return 0;
}

void
async_chat_listener_free(struct async_chat_listener *listener)
{
	struct stat st;

	if (listener == NULL || listener->freed)
		return;
	/* Remove the path only while it still names our socket: another
	 * listener may have taken it over since. */
	if (listener->path != NULL && stat(listener->path, &st) == 0 &&
	    st.st_dev == listener->dev && st.st_ino == listener->ino)
		(void)unlink(listener->path);
	event_del(&listener->backoff);
	evconnlistener_free(listener->lev);
	listener->lev = NULL;
	if (listener->depth > 0)
		listener->freed = 1;
	else
		release(listener);
}
