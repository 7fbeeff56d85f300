/*
 * asynchat-internal.h - the channel's state, shared by channel.c (input,
 * lifecycle) and producer.c (the output FIFO).  Private; never installed.
 */
#ifndef ASYNCHAT_INTERNAL_H_INCLUDED_
#define ASYNCHAT_INTERNAL_H_INCLUDED_

#include "asynchat.h"
#include "framer.h"

enum fifo_kind {
	FIFO_DATA,     /* bytes waiting behind a producer */
	FIFO_PRODUCER,
	FIFO_CLOSE,    /* close_when_done */
	FIFO_SHUTDOWN  /* shutdown_when_done */
};

struct fifo_entry {
	struct fifo_entry *next;
	enum fifo_kind kind;
	int busy;    /* its producer's more() is running */
	int dropped; /* unlinked while busy: free it when more() returns */
	union {
		struct evbuffer *buf;
		struct {
			const struct async_chat_producer_ops *ops;
			void *ctx;
		} producer;
	} u;
};

struct async_chat {
	struct bufferevent *bev;
	const struct async_chat_handlers *h;
	void *arg;
	struct framer fr;
	struct evbuffer *incoming; /* message mode frame bytes */

	struct fifo_entry *head, *tail;
	size_t queued;             /* bytes in FIFO_DATA entries */

	size_t in_buffer_size;
	size_t out_buffer_size;

	unsigned depth;            /* callbacks of this channel on the stack */
	int dns_error;
	int pending_error;         /* raised inside a connect call */

	unsigned closed : 1;       /* async_chat_close() has run */
	unsigned connected : 1;
	unsigned paused : 1;       /* by the application */
	unsigned too_long : 1;     /* by the frame bound */
	unsigned eof : 1;          /* the peer's EOF has been seen */
	unsigned eof_handled : 1;  /* and handle_close has been called */
	unsigned close_queued : 1; /* close_when_done() was called */
	unsigned shut_queued : 1;  /* shutdown_when_done() was called */
	unsigned refilling : 1;
	unsigned output_busy : 1;  /* output queued since the last drain */
	unsigned reading : 1;      /* inside the framer */
	unsigned in_connect : 1;   /* inside async_chat_connect*() */
	unsigned connecting : 1;   /* a connect is under way */
	unsigned files : 1;        /* push_file() has been used */
};

/* channel.c */
void async_chat__enter(struct async_chat *chat);
int async_chat__leave(struct async_chat *chat);
void async_chat__fail(struct async_chat *chat, int err);
int async_chat__tell_partner_eof(struct async_chat *chat);

/* producer.c */
/* Move queued entries to the output buffer while it is below
 * out_buffer_size.  from_loop: called from the channel's own write or
 * event callback, where the channel may close and handle_drain may run.
 * From an API call it runs no producer and closes nothing itself, but an
 * error report (ENOMEM) or a reference's cleanup may close the channel
 * and release it: callers touch it no more afterwards. */
void async_chat__output_refill(struct async_chat *chat, int from_loop);
/* Drop queued data and producers (and markers unless keep_markers). */
void async_chat__output_clear(struct async_chat *chat, int keep_markers);

#endif /* ASYNCHAT_INTERNAL_H_INCLUDED_ */
