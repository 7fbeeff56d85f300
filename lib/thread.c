/*
 * thread.c - the cross-thread handle: other threads queue bytes, references
 * and calls under the handle's mutex and wake the channel's loop with one
 * event; the loop swaps the queue out and replays it with the ordinary
 * single-threaded calls, so nothing else in the library takes a lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat-internal.h"

enum post_kind {
	POST_DATA, /* bytes copied after the node */
	POST_REF,  /* bytes by reference, with a cleanup */
	POST_CALL, /* a function to run on the loop */
	POST_CLOSE /* close_when_done */
};

struct post {
	struct post *next;
	enum post_kind kind;
	size_t len;
	const void *data; /* POST_REF */
	union {
		void (*cleanup)(const void *data, size_t len, void *arg);
		void (*call)(struct async_chat *chat, void *arg);
	} fn;
	void *arg;
	/* POST_DATA: the bytes follow. */
};

/*
 * Everything below the mutex is guarded by it, except ev, which only the
 * loop thread creates and frees, and which posters touch (event_active)
 * only under the mutex while chat is set.
 */
struct async_chat_handle {
	pthread_mutex_t mu;
	struct async_chat *chat; /* NULL once the channel has closed */
	struct event *ev;        /* wakes the loop; freed at detach */
	struct post *head, *tail;
	unsigned refs;           /* users, the channel's and the loop's */
	unsigned users;          /* references async_chat_handle_new() gave */
	unsigned scheduled : 1;  /* ev is active, not yet run */
	unsigned close_posted : 1;
};

/* libevent's lock functions are set up (evthread_use_pthreads() or
 * evthread_set_lock_callbacks()): libevent gives an evbuffer a lock only
 * then.  This public-API probe has no lasting effect. */
static int
libevent_locking(void)
{
	struct evbuffer *b = evbuffer_new();
	int on;

	if (b == NULL)
		return -1;
	on = evbuffer_enable_locking(b, NULL) == 0;
	evbuffer_free(b);
	return on;
}

static void
release(struct async_chat_handle *h)
{
	int last;

	pthread_mutex_lock(&h->mu);
	last = --h->refs == 0;
	pthread_mutex_unlock(&h->mu);
	if (last) {
		pthread_mutex_destroy(&h->mu);
		free(h);
	}
}

/* Run a post that can no longer reach the channel (chat NULL), or replay
 * it on the open channel. */
static void
run_post(struct async_chat *chat, struct post *p)
{
	switch (p->kind) {
	case POST_DATA:
		if (chat != NULL)
			(void)async_chat_push(chat, p + 1, p->len);
		break;
	case POST_REF:
		if (chat != NULL && async_chat_push_reference(chat, p->data,
					p->len, p->fn.cleanup, p->arg) == 0)
			break;
		if (p->fn.cleanup != NULL)
			p->fn.cleanup(p->data, p->len, p->arg);
		break;
	case POST_CALL:
		p->fn.call(chat, p->arg);
		break;
	case POST_CLOSE:
		if (chat != NULL)
			(void)async_chat_close_when_done(chat);
		break;
	}
	free(p);
}

static void
drop_all(struct post *p)
{
	while (p != NULL) {
		struct post *next = p->next;

		run_post(NULL, p);
		p = next;
	}
}

/* On the loop thread: replay what was posted, in order.  A post may close
 * the channel; the rest is then dropped as close drops what is queued. */
static void
wake_cb(evutil_socket_t fd, short what, void *ctx)
{
	struct async_chat_handle *h = ctx;
	struct async_chat *chat;
	struct post *p;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&h->mu);
	chat = h->chat;
	p = h->head;
	h->head = h->tail = NULL;
	h->scheduled = 0;
	h->refs++; /* the channel may close and the users let go meanwhile */
	pthread_mutex_unlock(&h->mu);
	async_chat__enter_loop(chat);
	while (p != NULL && !chat->closed) {
		struct post *next = p->next;

		run_post(chat, p);
		p = next;
	}
	drop_all(p);
	async_chat__leave(chat);
	release(h);
}

struct async_chat_handle *
async_chat_handle_new(struct async_chat *chat)
{
	struct async_chat__ext *ext;
	struct async_chat_handle *h;
	int locking;

	if (chat == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return NULL;
	}
	if ((ext = async_chat__get_ext(chat)) == NULL)
		return NULL;
	if ((h = ext->handle) != NULL) {
		pthread_mutex_lock(&h->mu);
		h->users++;
		h->refs++;
		pthread_mutex_unlock(&h->mu);
		return h;
	}
	if ((locking = libevent_locking()) <= 0) {
		errno = locking < 0 ? ENOMEM : ENOTSUP;
		return NULL;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	h->ev = event_new(bufferevent_get_base(chat->bev), -1, 0, wake_cb, h);
	if (h->ev == NULL || pthread_mutex_init(&h->mu, NULL) != 0) {
		if (h->ev != NULL)
			event_free(h->ev);
		free(h);
		errno = ENOMEM;
		return NULL;
	}
	h->chat = chat;
	h->users = 1;
	h->refs = 2; /* the user's and the channel's */
	ext->handle = h;
	return h;
}

void
async_chat__handle_detach(struct async_chat *chat)
{
	struct async_chat_handle *h;
	struct post *p;

	if (chat->ext == NULL || (h = chat->ext->handle) == NULL)
		return;
	chat->ext->handle = NULL;
	pthread_mutex_lock(&h->mu);
	h->chat = NULL;
	p = h->head;
	h->head = h->tail = NULL;
	h->scheduled = 0;
	pthread_mutex_unlock(&h->mu);
	/* No poster touches ev from here on: they see chat NULL. */
	event_free(h->ev);
	h->ev = NULL;
	drop_all(p);
	release(h);
}

int
async_chat_handle_free(struct async_chat_handle *h)
{
	if (h == NULL) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&h->mu);
	if (h->users == 0) {
		pthread_mutex_unlock(&h->mu);
		errno = EBADF;
		return -1;
	}
	h->users--;
	pthread_mutex_unlock(&h->mu);
	release(h);
	return 0;
}

int
async_chat_handle_closed(const struct async_chat_handle *h)
{
	struct async_chat_handle *m = (struct async_chat_handle *)h;
	int r;

	if (h == NULL) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&m->mu);
	r = m->users == 0 ? -1 : m->chat == NULL;
	pthread_mutex_unlock(&m->mu);
	if (r < 0)
		errno = EBADF;
	return r;
}

/* Queue p (or free it and fail), and wake the loop if it sleeps on it. */
static int
enqueue(struct async_chat_handle *h, struct post *p)
{
	int err = 0;

	pthread_mutex_lock(&h->mu);
	if (h->users == 0)
		err = EBADF;
	else if (h->chat == NULL)
		err = EPIPE;
	else if (h->close_posted && p->kind != POST_CALL)
		err = EPIPE;
	if (err == 0) {
		if (p->kind == POST_CLOSE)
			h->close_posted = 1;
		if (h->tail != NULL)
			h->tail->next = p;
		else
			h->head = p;
		h->tail = p;
		if (!h->scheduled) {
			h->scheduled = 1;
			event_active(h->ev, EV_READ, 0);
		}
	}
	pthread_mutex_unlock(&h->mu);
	if (err != 0) {
		free(p);
		errno = err;
		return -1;
	}
	return 0;
}

static struct post *
post_new(enum post_kind kind, size_t extra)
{
	struct post *p;

	if (extra > SIZE_MAX - sizeof(*p) ||
	    (p = malloc(sizeof(*p) + extra)) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	return p;
}

int
async_chat_post(struct async_chat_handle *h, const void *data, size_t len)
{
	struct post *p;

	if (h == NULL || (data == NULL && len > 0)) {
		errno = EINVAL;
		return -1;
	}
	if ((p = post_new(POST_DATA, len)) == NULL)
		return -1;
	p->len = len;
	if (len > 0)
		memcpy(p + 1, data, len);
	return enqueue(h, p);
}

int
async_chat_post_reference(struct async_chat_handle *h, const void *data,
    size_t len, void (*cleanup)(const void *data, size_t len, void *arg),
    void *cleanup_arg)
{
	struct post *p;

	if (h == NULL || (data == NULL && len > 0)) {
		errno = EINVAL;
		return -1;
	}
	if ((p = post_new(POST_REF, 0)) == NULL)
		return -1;
	p->data = data;
	p->len = len;
	p->fn.cleanup = cleanup;
	p->arg = cleanup_arg;
	return enqueue(h, p);
}

int
async_chat_post_call(struct async_chat_handle *h,
    void (*fn)(struct async_chat *chat, void *arg), void *arg)
{
	struct post *p;

	if (h == NULL || fn == NULL) {
		errno = EINVAL;
		return -1;
	}
	if ((p = post_new(POST_CALL, 0)) == NULL)
		return -1;
	p->fn.call = fn;
	p->arg = arg;
	return enqueue(h, p);
}

int
async_chat_post_close_when_done(struct async_chat_handle *h)
{
	struct post *p;

	if (h == NULL) {
		errno = EINVAL;
		return -1;
	}
	if ((p = post_new(POST_CLOSE, 0)) == NULL)
		return -1;
	return enqueue(h, p);
}
