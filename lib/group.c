/*
 * group.c - channel groups: a list of channels that leave it when they
 * close, iterated safely while members close, with broadcast and a
 * graceful close of all under a deadline.
 *
 * Nodes belong to the group.  A channel points at its node; closing it
 * clears the node's channel, and the node is unlinked at once unless an
 * iteration is running, which unlinks it when it ends.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "asynchat-internal.h"

struct async_chat__gnode {
	struct async_chat__gnode *prev, *next;
	struct async_chat *chat; /* NULL once it left */
	struct async_chat_group *group;
};

struct async_chat_group {
	struct event_base *base;
	struct async_chat__gnode *head, *tail;
	size_t count;
	unsigned iterating; /* foreach() frames on the stack */
	int freeing;        /* async_chat_group_free() waits for them */
	struct event *deadline;
};

struct async_chat_group *
async_chat_group_new(struct event_base *base)
{
	struct async_chat_group *g;

	if (base == NULL) {
		errno = EINVAL;
		return NULL;
	}
	g = calloc(1, sizeof(*g));
	if (g == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	g->base = base;
	return g;
}

static void
unlink_node(struct async_chat_group *g, struct async_chat__gnode *n)
{
	if (n->prev != NULL)
		n->prev->next = n->next;
	else
		g->head = n->next;
	if (n->next != NULL)
		n->next->prev = n->prev;
	else
		g->tail = n->prev;
	free(n);
}

/* The node's channel leaves: now, or when no iteration runs. */
static void
leave(struct async_chat_group *g, struct async_chat__gnode *n)
{
	n->chat->gnode = NULL;
	n->chat = NULL;
	g->count--;
	if (g->iterating == 0)
		unlink_node(g, n);
}

static void
sweep(struct async_chat_group *g)
{
	struct async_chat__gnode *n, *next;

	for (n = g->head; n != NULL; n = next) {
		next = n->next;
		if (n->chat == NULL)
			unlink_node(g, n);
	}
}

static void
destroy(struct async_chat_group *g)
{
	struct async_chat__gnode *n, *next;

	for (n = g->head; n != NULL; n = next) {
		next = n->next;
		if (n->chat != NULL)
			n->chat->gnode = NULL;
		free(n);
	}
	if (g->deadline != NULL)
		event_free(g->deadline);
	free(g);
}

void
async_chat_group_free(struct async_chat_group *group)
{
	if (group == NULL)
		return;
	if (group->iterating > 0) {
		group->freeing = 1;
		return;
	}
	destroy(group);
}

/* From async_chat_close(): the channel leaves its group. */
void
async_chat__group_leave(struct async_chat *chat)
{
	struct async_chat__gnode *n = chat->gnode;

	if (n != NULL)
		leave(n->group, n);
}

int
async_chat_group_add(struct async_chat_group *group, struct async_chat *chat)
{
	struct async_chat__gnode *n;

	if (group == NULL || chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return -1;
	}
	if (chat->gnode != NULL) {
		if (chat->gnode->group == group)
			return 0;
		errno = EBUSY;
		return -1;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL) {
		errno = ENOMEM;
		return -1;
	}
	n->chat = chat;
	n->group = group;
	n->prev = group->tail;
	if (group->tail != NULL)
		group->tail->next = n;
	else
		group->head = n;
	group->tail = n;
	group->count++;
	chat->gnode = n;
	return 0;
}

int
async_chat_group_remove(struct async_chat_group *group,
    struct async_chat *chat)
{
	if (group == NULL || chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->gnode == NULL || chat->gnode->group != group) {
		errno = ENOENT;
		return -1;
	}
	leave(group, chat->gnode);
	return 0;
}

size_t
async_chat_group_count(const struct async_chat_group *group)
{
	return group != NULL ? group->count : 0;
}

int
async_chat_group_foreach(struct async_chat_group *group,
    int (*fn)(struct async_chat *chat, void *arg), void *arg)
{
	struct async_chat__gnode *n;
	int rc = 0;

	if (group == NULL || fn == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* Nodes are not unlinked while this runs, so n->next stays valid
	 * whatever fn closes. */
	group->iterating++;
	for (n = group->head; n != NULL && rc == 0 && !group->freeing;
	     n = n->next) {
		if (n->chat != NULL)
			rc = fn(n->chat, arg);
	}
	if (--group->iterating == 0) {
		if (group->freeing) {
			destroy(group);
			return rc;
		}
		sweep(group);
	}
	return rc;
}

struct push_ctx {
	const void *data;
	size_t len;
	ev_ssize_t n;
};

static int
push_one(struct async_chat *chat, void *arg)
{
	struct push_ctx *p = arg;

	if (async_chat_push(chat, p->data, p->len) == 0)
		p->n++;
	return 0;
}

ev_ssize_t
async_chat_group_push(struct async_chat_group *group, const void *data,
    size_t len)
{
	struct push_ctx p = {data, len, 0};

	if (group == NULL || (data == NULL && len > 0)) {
		errno = EINVAL;
		return -1;
	}
	async_chat_group_foreach(group, push_one, &p);
	return p.n;
}

static int
close_one(struct async_chat *chat, void *arg)
{
	(void)arg;
	async_chat_close(chat);
	return 0;
}

void
async_chat_group_close_all(struct async_chat_group *group)
{
	if (group != NULL)
		async_chat_group_foreach(group, close_one, NULL);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	async_chat_group_close_all(arg);
}

static int
close_when_done_one(struct async_chat *chat, void *arg)
{
	(void)arg;
	/* A channel that cannot queue its close is closed now. */
	if (async_chat_close_when_done(chat) < 0 && !chat->closed)
		async_chat_close(chat);
	return 0;
}

int
async_chat_group_close_when_done(struct async_chat_group *group,
    const struct timeval *timeout)
{
	int rc = 0;

	if (group == NULL || (timeout != NULL && (timeout->tv_sec < 0 ||
						     timeout->tv_usec < 0))) {
		errno = EINVAL;
		return -1;
	}
	if (timeout != NULL) {
		if (group->deadline == NULL)
			group->deadline =
			    evtimer_new(group->base, deadline_cb, group);
		if (group->deadline == NULL ||
		    evtimer_add(group->deadline, timeout) < 0)
			rc = -1;
	}
	async_chat_group_foreach(group, close_when_done_one, NULL);
	if (rc < 0)
		errno = ENOMEM;
	return rc;
}
