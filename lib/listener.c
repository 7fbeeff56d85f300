/*
 * listener.c - asyncore's accepting dispatcher: an evconnlistener that
 * hands each accepted socket to the application's handle_accept.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "asynchat.h"

struct async_chat_listener {
	struct evconnlistener *lev;
	async_chat_accept_fn handle_accept;
	async_chat_accept_error_fn handle_error;
	void *arg;
};

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *addr, int addrlen, void *ctx)
{
	struct async_chat_listener *l = ctx;

	(void)lev;
	l->handle_accept(l, fd, addr, addrlen, l->arg);
}

static void
error_cb(struct evconnlistener *lev, void *ctx)
{
	struct async_chat_listener *l = ctx;
	int err = EVUTIL_SOCKET_ERROR();

	(void)lev;
	if (l->handle_error != NULL)
		l->handle_error(l, err, l->arg);
}

static struct async_chat_listener *
listener_alloc(async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l = calloc(1, sizeof(*l));

	if (l == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	l->handle_accept = handle_accept;
	l->arg = arg;
	return l;
}

static const unsigned listen_flags =
    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;

struct async_chat_listener *
async_chat_listener_new(struct event_base *base, const struct sockaddr *addr,
    int addrlen, int backlog, async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l;

	if (base == NULL || addr == NULL || addrlen <= 0 ||
	    handle_accept == NULL || backlog < -1) {
		errno = EINVAL;
		return NULL;
	}
	if ((l = listener_alloc(handle_accept, arg)) == NULL)
		return NULL;
	errno = 0;
	l->lev = evconnlistener_new_bind(base, accept_cb, l, listen_flags,
	    backlog, addr, addrlen);
	if (l->lev == NULL) {
		int err = errno != 0 ? errno : EINVAL;

		free(l);
		errno = err;
		return NULL;
	}
	evconnlistener_set_error_cb(l->lev, error_cb);
	return l;
}

struct async_chat_listener *
async_chat_listener_new_fd(struct event_base *base, evutil_socket_t fd,
    async_chat_accept_fn handle_accept, void *arg)
{
	struct async_chat_listener *l;

	if (base == NULL || fd < 0 || handle_accept == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if (evutil_make_socket_nonblocking(fd) < 0) {
		errno = EBADF;
		return NULL;
	}
	if ((l = listener_alloc(handle_accept, arg)) == NULL)
		return NULL;
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
	return evconnlistener_disable(listener->lev);
}

int
async_chat_listener_resume(struct async_chat_listener *listener)
{
	if (listener == NULL) {
		errno = EINVAL;
		return -1;
	}
	return evconnlistener_enable(listener->lev);
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
	if (listener == NULL)
		return;
	evconnlistener_free(listener->lev);
	free(listener);
}
