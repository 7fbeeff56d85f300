/*
 * asynchat-internal.h - the channel's state, shared by channel.c (input,
 * lifecycle) and output.c (the output FIFO).  Private; never installed.
 */
#ifndef ASYNCHAT_INTERNAL_H_INCLUDED_
#define ASYNCHAT_INTERNAL_H_INCLUDED_

#include "asynchat.h"
#include "framer.h"

/* Keeps a slow path out of its caller's fast one, so that the fast one
 * saves no registers it does not use. */
/* Keeps one step of a hot loop a single definition without a call. */
#if defined(__GNUC__) || defined(__clang__)
#define ASYNC_CHAT__NOINLINE __attribute__((noinline))
#define ASYNC_CHAT__INLINE inline __attribute__((always_inline))
#else
#define ASYNC_CHAT__NOINLINE
#define ASYNC_CHAT__INLINE inline
#endif

enum fifo_kind {
	FIFO_DATA,     /* bytes waiting behind a producer */
	FIFO_PRODUCER,
	FIFO_CLOSE,    /* close_when_done */
	FIFO_SHUTDOWN  /* shutdown_when_done */
};

struct fifo_entry {
	struct fifo_entry *next;
	enum fifo_kind kind;
	uint8_t busy;     /* its producer's more() is running */
	uint8_t dropped;  /* unlinked while busy: free it when more() returns */
	uint8_t deferred; /* its more() said ASYNC_CHAT_PRODUCER_DEFERRED */
	union {
		struct evbuffer *buf;
		struct {
			const struct async_chat_producer_ops *ops;
			void *ctx;
		} producer;
	} u;
};

/* Why reading is suspended: each cause sets and clears its own bit, and
 * the read side runs only when none is set. */
enum {
	SUSPEND_APP = 1,     /* async_chat_pause_reading() */
	SUSPEND_BOUND = 2,   /* a frame past the bound, under FRAME_PAUSE */
	SUSPEND_LENGTH = 4,  /* an invalid length-field header */
	SUSPEND_TIMEOUT = 8, /* a read timeout set on the bufferevent */
	SUSPEND_CLOSING = 16 /* FRAME_CLOSE: for good */
};

/* The read side. */
enum read_state {
	READ_OPEN = 0,   /* the peer may still send */
	READ_EOF,        /* its EOF has been seen */
	READ_DONE        /* and handle_close has run */
};

/* The connection. */
enum conn_state {
	CONN_NONE = 0,   /* no socket yet (fd -1) */
	CONN_PENDING,    /* a connect is under way */
	CONN_UP,
	CONN_DOWN        /* a socket error ended it */
};

/* Work for the deferred callback, which runs on the next loop turn. */
enum {
	DEFER_READ = 1,  /* frame what is buffered (and a pending EOF) */
	DEFER_WRITE = 2, /* refill the output from the loop */
	DEFER_ERROR = 4, /* report pending_error */
	DEFER_CLEANUP = 8 /* run the cleanups of references sent */
};

struct async_chat__ref;
struct async_chat__gnode;
struct async_chat__ref_owner;
struct async_chat_handle;

/* What only some channels use, made on first use, so that an idle
 * channel stays small. */
struct async_chat__ext {
	struct event *deferred;    /* the deferred callback's event */
	struct async_chat__ref_owner *ref_owner; /* made on first reference */

	/* Pushed bytes wait here until the outermost call or callback of
	 * the channel returns; then they move to the bufferevent's output,
	 * or from the loop on a socket of the channel's own straight to the
	 * socket.  Made by the first push. */
	struct evbuffer *wbuf;
	/* Small pushes are copied into a flat buffer after wbuf's bytes,
	 * which a direct write sends as they are. */
	char *stage;
	size_t stage_len, stage_cap;
	/* A socket of the channel's own is read by the channel itself, up
	 * to in_buffer_size bytes a call, once libevent's first read shows
	 * nothing on the bufferevent that needs libevent's reading. */
	struct event *rd;
	uint8_t own_read;          /* rd reads; the bufferevent's read is off */
	uint8_t early_ok;          /* this read may send answers as it frames */
	uint8_t early_sent;        /* and has sent some */

	/* Timeouts: one timer for all three; 0 turns one off. */
	struct event *timer;
	struct evbuffer_cb_entry *write_watch; /* sees bytes leave */
	struct timeval idle, write, frame;
	struct timeval last_read, last_write, frame_start;
	uint8_t timeouts_on;       /* any of the three is set */
	uint8_t frame_open;        /* frame_start is a frame's first read */

	/* The high-water mark on pending output. */
	uint8_t above;
	size_t low, high;
	void (*high_fn)(struct async_chat *chat, int above, void *arg);

	/* shutdown_when_done() completion. */
	uint8_t shut_pending;      /* the shutdown happened; not told yet */
	int shut_err;
	void (*shut_fn)(struct async_chat *chat, int err, void *arg);

	/* The cross-thread handle (thread.c), made on first use. */
	struct async_chat_handle *handle;
};

struct async_chat {
	struct bufferevent *bev;
	const struct async_chat_handlers *h;
	void *arg;
	struct async_chat_framer fr;
	struct evbuffer *incoming; /* message mode frame bytes */
	struct async_chat__ext *ext; /* made on first use */

	/* The write side: the FIFO, its owner of references, its sizes. */
	struct fifo_entry *head, *tail;
	struct async_chat__gnode *gnode; /* its place in a group, or NULL */
	uint32_t in_buffer_size;    /* at most ASYNC_CHAT_BUFFER_SIZE_MAX */
	uint32_t out_buffer_size;

	/* The connection's errors: errno values or ASYNC_CHAT_ERR_*, and
	 * the resolver's EVUTIL_EAI_* codes, all small. */
	int16_t dns_error;
	int16_t pending_error;     /* raised inside a connect call */
	uint16_t depth;            /* callbacks of this channel on the stack */
	uint8_t matched;           /* alternative of the last frame end */

	uint8_t conn;              /* enum conn_state */
	uint8_t read_state;        /* enum read_state */
	uint8_t suspend;           /* SUSPEND_*: why reading waits */
	uint8_t policy;            /* enum async_chat_frame_policy */
	uint8_t pending;           /* DEFER_*: work for the next turn */

	unsigned closed : 1;       /* async_chat_close() has run */
	unsigned reading : 1;      /* inside the read loop */
	unsigned discarded : 1;    /* the input was dropped under the loop */
	unsigned close_queued : 1; /* close_when_done() was called */
	unsigned shut_queued : 1;  /* shutdown_when_done() was called */
	unsigned refilling : 1;    /* inside the output fill */
	unsigned output_busy : 1;  /* output queued since the last drain */
	unsigned files : 1;        /* push_file() has been used */
	unsigned in_connect : 1;   /* inside async_chat_connect*() */
	unsigned own_socket : 1;   /* made by async_chat_new(): a socket */
	unsigned skip_found : 1;   /* the frame skipped still gets found */
	unsigned loop_cb : 1;      /* the outermost frame is a loop callback */
};

/* channel.c */
/* Where a push with nothing queued puts its bytes (ext->wbuf, made on
 * first use); NULL with ENOMEM. */
struct evbuffer *async_chat__staging_slow(struct async_chat *chat);
static inline struct evbuffer *
async_chat__staging(struct async_chat *chat)
{
	if (chat->ext != NULL && chat->ext->wbuf != NULL)
		return chat->ext->wbuf;
	return async_chat__staging_slow(chat);
}
/* Bytes pushed and not yet moved to the bufferevent's output. */
static inline size_t
async_chat__staged(const struct async_chat *chat)
{
	if (chat->ext == NULL)
		return 0;
	return chat->ext->stage_len + (chat->ext->wbuf != NULL ?
	    evbuffer_get_length(chat->ext->wbuf) : 0);
}
void async_chat__enter(struct async_chat *chat);
void async_chat__enter_loop(struct async_chat *chat);
int async_chat__leave(struct async_chat *chat);
void async_chat__fail(struct async_chat *chat, int err);
int async_chat__tell_partner_eof(struct async_chat *chat);
/* Run work on the next loop turn; -1 (with ENOMEM) if it cannot be
 * scheduled. */
int async_chat__defer(struct async_chat *chat, unsigned what);
/* The channel's extension block, made on first use; NULL with ENOMEM. */
struct async_chat__ext *async_chat__get_ext(struct async_chat *chat);
/* After a push: tell the high-water handler if output rose above it;
 * 1 if it was told. */
int async_chat__check_high(struct async_chat *chat);

/* listener.c: the delay the next accept error backs off for. */
int async_chat__listener_next_backoff_ms(
    const struct async_chat_listener *l);

/* group.c: the channel leaves its group, if any. */
void async_chat__group_leave(struct async_chat *chat);

/* Fill the output and act on what it met (see channel.c).  From an API
 * call an error report (ENOMEM) may close the channel and release it:
 * callers touch it no more afterwards. */
void async_chat__refill(struct async_chat *chat, int from_loop);

/* thread.c: the channel is closing; its handle, if any, lets go of it
 * (posts fail with EPIPE from now on) and what was still posted is
 * dropped: cleanups run, posted functions are told. */
void async_chat__handle_detach(struct async_chat *chat);

/* output.c */
/* Append the flat stage's bytes to buf (wbuf or the output); -1 (with
 * ENOMEM) if they could not be. */
int async_chat__stage_to(struct async_chat *chat, struct evbuffer *buf);
/* Inside a read alone in the loop, nothing staged or queued: write hdr
 * then data straight to the socket; returns the bytes that went. */
size_t async_chat__push_direct(struct async_chat *chat, const void *hdr,
    size_t hlen, const void *data, size_t len);
/* A push's front went out and its rest cannot be queued: stop writing,
 * and report err to handle_error from the loop. */
void async_chat__stream_broken(struct async_chat *chat, int err);
/* What async_chat__output_fill() met. */
enum {
	OUT_FULL = 1,      /* the output buffer has enough for now */
	OUT_MORE = 2,      /* a producer waits to run from the loop */
	OUT_CLOSE = 4,     /* the close marker is reached, all before it sent */
	OUT_DRAINED = 8,   /* nothing is queued or unsent any more */
	OUT_NOMEM = 16,    /* moving queued data failed */
	OUT_PRODUCER = 32, /* a producer failed; it has been freed */
	OUT_SHUT = 64      /* the sending side was shut down (ext->shut_err) */
};
/* Move queued entries to the output buffer while it is below
 * out_buffer_size, running producers only if pull.  Returns OUT_* bits
 * (never OUT_FULL). */
unsigned async_chat__output_fill(struct async_chat *chat, int pull);
/* Drop queued data and producers (and markers unless keep_markers). */
void async_chat__output_clear(struct async_chat *chat, int keep_markers);
/* Run the cleanups of the references whose chains libevent freed. */
void async_chat__run_cleanups(struct async_chat *chat);
/* The channel is being released: cleanups of chains still alive run as
 * soon as libevent frees them. */
void async_chat__release_refs(struct async_chat *chat);

#endif /* ASYNCHAT_INTERNAL_H_INCLUDED_ */
