/*
 * channel.c - the async_chat channel: bufferevent glue, the input side
 * (framer sinks, EOF, errors), lifecycle and deferred destruction, and the
 * small public accessors.  The output FIFO lives in output.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/types.h>
#include <sys/uio.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* timeout_read */
#include <event2/buffer.h>
#include <event2/event.h>

#include "asynchat-internal.h"

#define CHECK(chat)                                                            \
	do {                                                                   \
		if ((chat) == NULL) {                                          \
			errno = EINVAL;                                        \
			return -1;                                             \
		}                                                              \
		if ((chat)->closed) {                                          \
			errno = ENOTCONN;                                      \
			return -1;                                             \
		}                                                              \
	} while (0)

const char *
async_chat_version(void)
{
	return ASYNC_CHAT_VERSION;
}

unsigned long
async_chat_version_number(void)
{
	return ASYNC_CHAT_VERSION_NUMBER;
}

const char *
async_chat_strerror(int err)
{
	switch (err) {
	case 0:
		return "no error";
	case ASYNC_CHAT_ERR_FRAME_TOO_LONG:
		return "frame longer than the bound";
	case ASYNC_CHAT_ERR_PRODUCER:
		return "producer failed";
	case ASYNC_CHAT_ERR_DNS:
		return "host name did not resolve";
	case ASYNC_CHAT_ERR_UNKNOWN:
		return "connection error";
	case ASYNC_CHAT_ERR_NOMEM:
		return "out of memory";
	case ASYNC_CHAT_ERR_LENGTH:
		return "invalid length-field header";
	case ASYNC_CHAT_ERR_IDLE_TIMEOUT:
		return "idle timeout";
	case ASYNC_CHAT_ERR_WRITE_TIMEOUT:
		return "write stalled";
	case ASYNC_CHAT_ERR_FRAME_TIMEOUT:
		return "frame deadline passed";
	}
	if (err > 0)
		return strerror(err);
	return "unknown error";
}

/*
 * Lifetime.  depth counts this channel's frames on the stack that may run
 * user code; async_chat_close() inside them only marks the channel, and
 * the last async_chat__leave() releases it.
 */

static void
destroy(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;

	if (ext != NULL && ext->deferred != NULL)
		event_free(ext->deferred);
	if (ext != NULL && ext->timer != NULL)
		event_free(ext->timer);
	if (ext != NULL && ext->rd != NULL)
		event_free(ext->rd);
	if (ext != NULL && ext->wbuf != NULL)
		evbuffer_free(ext->wbuf);
	if (ext != NULL)
		free(ext->stage);
	/* What is pending runs now; chains freed from here on run their
	 * cleanups at once. */
	async_chat__run_cleanups(chat);
	async_chat__release_refs(chat);
	if (chat->bev != NULL)
		bufferevent_free(chat->bev);
	if (chat->incoming != NULL)
		evbuffer_free(chat->incoming);
	async_chat__framer_clear(&chat->fr);
	free(ext);
	free(chat);
}

void
async_chat__enter(struct async_chat *chat)
{
	chat->depth++;
}

struct evbuffer *
async_chat__staging_slow(struct async_chat *chat)
{
	struct async_chat__ext *ext = async_chat__get_ext(chat);

	if (ext == NULL)
		return NULL;
	if (ext->wbuf == NULL && (ext->wbuf = evbuffer_new()) == NULL)
		errno = ENOMEM;
	return ext->wbuf;
}

static void clock_now(struct async_chat *chat, struct timeval *tv);

/* Whether staged bytes may be written straight to the socket now: from
 * the loop, on a socket the channel made, with nothing older in the
 * bufferevent's output and nothing of libevent's that needs to see them
 * (a rate limit). */
static int
direct_ok(struct async_chat *chat)
{
	struct bufferevent *bev = chat->bev;

	return chat->loop_cb && chat->own_socket && chat->conn == CONN_UP &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
	    (bufferevent_get_enabled(bev) & EV_WRITE) &&
	    bufferevent_get_max_to_write(bev) ==
	    (ev_ssize_t)chat->out_buffer_size &&
	    bufferevent_get_token_bucket_cfg(bev) == NULL;
}

/* Write the flat stage with one system call.  Returns 1 when all of it
 * went; otherwise what is left moves to the output, where libevent
 * writes it (and reports a socket error). */
static int
write_stage(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;
	size_t len = ext->stage_len;
	ssize_t n;

	if (len > chat->out_buffer_size)
		len = chat->out_buffer_size;
	/* write(), as libevent writes: any descriptor a socket bufferevent
	 * takes, and SIGPIPE as in any libevent program. */
	n = write(bufferevent_getfd(chat->bev), ext->stage, len);
	if (n <= 0)
		n = 0;
	else if (ext->write_watch != NULL)
		clock_now(chat, &ext->last_write);
	if ((size_t)n == ext->stage_len) {
		ext->stage_len = 0;
		return 1;
	}
	if (evbuffer_add(bufferevent_get_output(chat->bev), ext->stage + n,
		ext->stage_len - (size_t)n) < 0) {
		memmove(ext->stage, ext->stage + n, ext->stage_len - (size_t)n);
		ext->stage_len -= (size_t)n;
		return -1;
	}
	ext->stage_len = 0;
	return 0;
}

/* Write wbuf (with the stage after it) straight to the socket: 1 when
 * all of it went, 0 otherwise (what is left is moved on by the caller). */
static int
write_wbuf(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;
	int n;

	if (async_chat__stage_to(chat, ext->wbuf) < 0)
		return 0;
	n = evbuffer_write_atmost(ext->wbuf, bufferevent_getfd(chat->bev),
	    (ev_ssize_t)chat->out_buffer_size);
	if (n > 0 && ext->write_watch != NULL)
		clock_now(chat, &ext->last_write);
	return n > 0 && evbuffer_get_length(ext->wbuf) == 0;
}

/* After a direct write sent everything: what a write callback would
 * have done. */
static void
sent_all(struct async_chat *chat)
{
	if (chat->head != NULL || (chat->output_busy &&
	    (chat->h->handle_drain != NULL || chat->ext->above)))
		async_chat__refill(chat, 1);
	else
		chat->output_busy = 0;
}

#define STAGE_KEEP 16384 /* bytes of flat stage kept between bursts */
#define STAGE_EARLY 2048 /* staged bytes a lone read sends at once */

/*
 * Inside the read loop, between frames, when nothing else in the loop
 * waits to run: once STAGE_EARLY bytes are staged, send them now,
 * so that the peer has its first answers (and sends more) while the rest
 * of a big read is framed.  With other events waiting, the answers go
 * out together when the read is done: one system call for all of them.
 * What a write callback would do waits for the loop's end (early_sent).
 */
static void
write_early(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;
	int rc = 0;

	if (!direct_ok(chat))
		return;
	if (ext->wbuf != NULL && evbuffer_get_length(ext->wbuf) > 0) {
		/* What the socket does not take goes to the output, as in
		 * write_stage(): the next frames then wait for the end. */
		if (write_wbuf(chat) != 1 &&
		    evbuffer_add_buffer(bufferevent_get_output(chat->bev),
			ext->wbuf) < 0)
			rc = -1;
	} else {
		rc = write_stage(chat);
	}
	if (rc < 0)
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
	else
		ext->early_sent = 1;
}

/*
 * A push of more than the stage takes, made while a read alone in the
 * loop is framed (see write_early()) with nothing staged or queued
 * before it: written from the caller's memory with one system call, so
 * that no copy is made of what the socket takes.  Returns how many
 * bytes of hdr and data went; the caller queues the rest.
 */
size_t
async_chat__push_direct(struct async_chat *chat, const void *hdr,
    size_t hlen, const void *data, size_t len)
{
	struct async_chat__ext *ext = chat->ext;
	struct iovec iov[2];
	ssize_t n;
	int i = 0;

	if (ext == NULL || !ext->early_ok || chat->head != NULL ||
	    async_chat__staged(chat) > 0 || !direct_ok(chat) ||
	    hlen + len > chat->out_buffer_size)
		return 0;
	if (hlen > 0) {
		iov[i].iov_base = (void *)(uintptr_t)hdr;
		iov[i++].iov_len = hlen;
	}
	iov[i].iov_base = (void *)(uintptr_t)data;
	iov[i++].iov_len = len;
	/* writev(), as libevent writes; SIGPIPE as in write_stage(). */
	n = writev(bufferevent_getfd(chat->bev), iov, i);
	if (n <= 0)
		return 0;
	if (ext->write_watch != NULL)
		clock_now(chat, &ext->last_write);
	chat->output_busy = 1;
	ext->early_sent = 1;
	return (size_t)n;
}

/*
 * The stream has the front of a push and cannot have the rest (no memory
 * to queue it): nothing more goes out, and handle_error hears of it from
 * the loop, as of a socket error, not inside the push.
 */
void
async_chat__stream_broken(struct async_chat *chat, int err)
{
	chat->conn = CONN_DOWN;
	bufferevent_disable(chat->bev, EV_WRITE);
	chat->pending_error = (int16_t)err;
	if (async_chat__defer(chat, DEFER_ERROR) < 0)
		async_chat__fail(chat, err);
}

/* After a frame of the read loop: whether to send the answers now. */
static inline int
early_due(const struct async_chat *chat)
{
	const struct async_chat__ext *ext = chat->ext;

	return ext != NULL && ext->early_ok && !chat->closed &&
	    (ext->stage_len >= STAGE_EARLY ||
		(ext->wbuf != NULL &&
		    evbuffer_get_length(ext->wbuf) >= STAGE_EARLY));
}

/* The outermost frame returns: move the staged bytes on. */
static void
flush_staged(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;
	int guard;

	for (guard = 0; guard < 16 && !chat->closed; guard++) {
		int wb = ext->wbuf != NULL && evbuffer_get_length(ext->wbuf) > 0;
		int rc;

		if (!wb && ext->stage_len == 0) {
			if (ext->early_sent && evbuffer_get_length(
				bufferevent_get_output(chat->bev)) == 0)
				sent_all(chat);
			break;
		}
		if (guard < 15 && direct_ok(chat)) {
			rc = wb ? write_wbuf(chat) : write_stage(chat);
			if (rc == 1) {
				sent_all(chat);
				continue;
			}
			if (rc < 0) {
				async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
				break;
			}
			if (!wb)
				break; /* the rest is in the output */
		}
		if ((ext->wbuf != NULL &&
			evbuffer_add_buffer(bufferevent_get_output(chat->bev),
			    ext->wbuf) < 0) ||
		    async_chat__stage_to(chat,
			bufferevent_get_output(chat->bev)) < 0) {
			/* The bytes stay staged.  An API call runs no
			 * handler: the loop tries again, and reports a
			 * failure there. */
			if (chat->loop_cb)
				async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
			else
				async_chat__defer(chat, DEFER_WRITE);
		}
		break;
	}
	if (!chat->closed && ext->stage_len == 0 &&
	    ext->stage_cap > STAGE_KEEP) {
		free(ext->stage);
		ext->stage = NULL;
		ext->stage_cap = 0;
	}
}

int
async_chat__leave(struct async_chat *chat)
{
	if (chat->depth == 1 && !chat->closed && chat->ext != NULL) {
		if (async_chat__staged(chat) > 0 || chat->ext->early_sent)
			flush_staged(chat);
		chat->ext->early_sent = 0;
		chat->ext->early_ok = 0;
	}
	if (--chat->depth == 0) {
		chat->loop_cb = 0;
		if (chat->closed) {
			destroy(chat);
			return 1;
		}
	}
	return 0;
}

/* Entering a callback from the loop: the outermost one may write the
 * staged bytes straight to the socket when it returns. */
void
async_chat__enter_loop(struct async_chat *chat)
{
	async_chat__enter(chat);
	if (chat->depth == 1)
		chat->loop_cb = 1;
}

void
async_chat_close(struct async_chat *chat)
{
	if (chat == NULL || chat->closed)
		return;
	async_chat__enter(chat);
	chat->closed = 1;
	chat->conn = CONN_DOWN;
	async_chat__group_leave(chat);
	/* From here on libevent calls nothing of ours; the bufferevent and
	 * its buffers stay alive until no frame of ours uses them. */
	if (chat->ext != NULL) {
		if (chat->ext->deferred != NULL)
			event_del(chat->ext->deferred);
		if (chat->ext->timer != NULL)
			event_del(chat->ext->timer);
		if (chat->ext->write_watch != NULL) {
			evbuffer_remove_cb_entry(bufferevent_get_output(chat->bev),
			    chat->ext->write_watch);
			chat->ext->write_watch = NULL;
		}
	}
	chat->pending = 0;
	bufferevent_setcb(chat->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(chat->bev, EV_READ | EV_WRITE);
	if (chat->own_socket) {
		/* libevent 2.1 closes a freed bufferevent's socket only when
		 * it finalizes it, on the next loop turn: close ours now. */
		evutil_socket_t fd = bufferevent_getfd(chat->bev);

		if (fd >= 0) {
			bufferevent_setfd(chat->bev, -1);
			evutil_closesocket(fd);
		}
	}
	async_chat__tell_partner_eof(chat);
	async_chat__output_clear(chat, 0);
	async_chat__run_cleanups(chat);
	async_chat__handle_detach(chat);
	if (chat->h->handle_free != NULL)
		chat->h->handle_free(chat, chat->arg);
	async_chat__leave(chat);
}

/* Fill the output and act on what the fill met.  from_loop: called from
 * the channel's own loop callbacks, where producers run, the channel may
 * close and handle_drain may run; from an API call those wait for the
 * deferred callback. */
void
async_chat__refill(struct async_chat *chat, int from_loop)
{
	unsigned st;
	int guard;

	async_chat__enter(chat);
	/* Each failure drops the entry that failed: the rest of the queue
	 * goes on if the handler keeps the channel. */
	for (guard = 0; !chat->closed && guard < 64; guard++) {
		st = async_chat__output_fill(chat, from_loop);
		if (chat->closed)
			break; /* a producer's more() or free() closed it */
		if (st & OUT_NOMEM) {
			async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
			break;
		}
		if (st & OUT_PRODUCER) {
			async_chat__fail(chat, ASYNC_CHAT_ERR_PRODUCER);
			continue;
		}
		if (st & OUT_SHUT)
			chat->ext->shut_pending = 1;
		if (from_loop && chat->ext != NULL && chat->ext->shut_pending) {
			struct async_chat__ext *ext = chat->ext;

			ext->shut_pending = 0;
			if (ext->shut_fn != NULL) {
				ext->shut_fn(chat, ext->shut_err, chat->arg);
				/* It may have pushed: what the fill saw is old. */
				continue;
			}
		}
		if (from_loop && chat->ext != NULL && !chat->ext->above &&
		    async_chat__check_high(chat)) /* producers' bytes */
			continue;
		if (from_loop && chat->ext != NULL && chat->ext->above &&
		    async_chat_output_pending(chat) <= chat->ext->low) {
			chat->ext->above = 0;
			chat->ext->high_fn(chat, 0, chat->arg);
			continue;
		}
		if (!from_loop &&
		    (st & (OUT_MORE | OUT_CLOSE | OUT_DRAINED | OUT_SHUT))) {
			/* Nothing more may be written now, so no write
			 * callback would see the marker or say the queue
			 * drained. */
			async_chat__defer(chat, DEFER_WRITE);
		} else if (st & OUT_CLOSE) {
			async_chat_close(chat);
		} else if (st & OUT_DRAINED) {
			chat->output_busy = 0;
			if (chat->h->handle_drain != NULL)
				chat->h->handle_drain(chat, chat->arg);
		}
		break;
	}
	async_chat__leave(chat);
}

/* An error that the application hears of through handle_error. */
void
async_chat__fail(struct async_chat *chat, int err)
{
	if (chat->closed)
		return;
	if (chat->h->handle_error != NULL)
		chat->h->handle_error(chat, err, chat->arg);
	else
		async_chat_close(chat);
}

/*
 * Deferred work: one event per channel, made on first use, runs whatever
 * the pending bits ask for on the next loop turn.  Should the event not
 * be had (no memory), the bufferevent's own deferred callbacks do the
 * same work; they can keep the bufferevent alive past close until the
 * loop runs, which the event avoids.
 */

static void readcb(struct bufferevent *bev, void *ctx);

static void
deferred_cb(evutil_socket_t fd, short what, void *ctx)
{
	struct async_chat *chat = ctx;
	unsigned bits = chat->pending;

	(void)fd;
	(void)what;
	chat->pending = 0;
	async_chat__enter_loop(chat);
	if (bits & DEFER_ERROR) {
		int err = chat->pending_error;

		chat->pending_error = 0;
		chat->conn = CONN_DOWN;
		async_chat__fail(chat, err);
	}
	if (bits & DEFER_CLEANUP)
		async_chat__run_cleanups(chat);
	if ((bits & DEFER_WRITE) && !chat->closed)
		async_chat__refill(chat, 1);
	if ((bits & DEFER_READ) && !chat->closed)
		readcb(chat->bev, chat);
	async_chat__leave(chat);
}

struct async_chat__ext *
async_chat__get_ext(struct async_chat *chat)
{
	if (chat->ext == NULL &&
	    (chat->ext = calloc(1, sizeof(*chat->ext))) == NULL)
		errno = ENOMEM;
	return chat->ext;
}

int
async_chat__defer(struct async_chat *chat, unsigned what)
{
	struct async_chat__ext *ext;

	if (chat->closed)
		return 0;
	ext = async_chat__get_ext(chat);
	if (ext != NULL && ext->deferred == NULL)
		ext->deferred = event_new(bufferevent_get_base(chat->bev), -1,
		    0, deferred_cb, chat);
	if (ext != NULL && ext->deferred != NULL) {
		chat->pending |= (uint8_t)what;
		event_active(ext->deferred, EV_READ, 0);
		return 0;
	}
	if (what & DEFER_ERROR)
		bufferevent_trigger_event(chat->bev, BEV_EVENT_ERROR,
		    BEV_TRIG_DEFER_CALLBACKS);
	if (what & DEFER_WRITE)
		bufferevent_trigger(chat->bev, EV_WRITE,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	if (what & DEFER_READ)
		bufferevent_trigger(chat->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	return 0;
}

/*
 * The read side.  One function says whether it may run, and the bufferevent
 * reads from its transport exactly then.
 */

static int
read_may_run(const struct async_chat *chat)
{
	return !chat->closed && chat->suspend == 0 &&
	    chat->read_state != READ_DONE;
}

static void
update_reading(struct async_chat *chat)
{
	int on;

	if (chat->closed)
		return;
	on = read_may_run(chat) && chat->read_state == READ_OPEN;
	if (chat->ext != NULL && chat->ext->own_read) {
		if (on)
			event_add(chat->ext->rd, NULL);
		else
			event_del(chat->ext->rd);
	} else if (on) {
		bufferevent_enable(chat->bev, EV_READ);
	} else {
		bufferevent_disable(chat->bev, EV_READ);
	}
}

static void
suspend_reading(struct async_chat *chat, unsigned why)
{
	chat->suspend |= (uint8_t)why;
	update_reading(chat);
}

/* Whether a frame has begun: bytes of it delivered, held, unread, or a
 * length header gathered. */
static int
frame_in_progress(struct async_chat *chat)
{
	const struct async_chat_framer *fr = &chat->fr;

	return fr->frame_bytes > 0 || fr->carry_len > fr->carry_off ||
	    fr->todo > 0 || fr->have_end ||
	    evbuffer_get_length(bufferevent_get_input(chat->bev)) > 0;
}

/*
 * Timeouts.  One timer per channel that sets any, armed for the earliest
 * deadline; each firing checks what really passed and arms again, so a
 * read only notes its time.
 */

static int
tv_on(const struct timeval *tv)
{
	return tv->tv_sec != 0 || tv->tv_usec != 0;
}

static void
clock_now(struct async_chat *chat, struct timeval *tv)
{
	event_base_gettimeofday_cached(bufferevent_get_base(chat->bev), tv);
}

/* The earliest deadline in force, into *due; 0 if none is. */
static int
next_deadline(struct async_chat *chat, struct timeval *due)
{
	struct async_chat__ext *ext = chat->ext;
	struct timeval t;
	int any = 0;

#define CANDIDATE(start, span)                                                 \
	do {                                                                   \
		evutil_timeradd(&(start), &(span), &t);                        \
		if (!any || evutil_timercmp(&t, due, <))                       \
			*due = t;                                              \
		any = 1;                                                       \
	} while (0)
	if (tv_on(&ext->idle) && chat->read_state == READ_OPEN &&
	    chat->suspend == 0)
		CANDIDATE(ext->last_read, ext->idle);
	if (tv_on(&ext->write) &&
	    evbuffer_get_length(bufferevent_get_output(chat->bev)) > 0)
		CANDIDATE(ext->last_write, ext->write);
	if (tv_on(&ext->frame) && ext->frame_open && chat->suspend == 0)
		CANDIDATE(ext->frame_start, ext->frame);
#undef CANDIDATE
	return any;
}

static void
timeouts_arm(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;
	struct timeval due = {0, 0}, t, wait = {0, 0};

	if (chat->closed || ext == NULL || ext->timer == NULL)
		return;
	if (!next_deadline(chat, &due)) {
		evtimer_del(ext->timer);
		return;
	}
	clock_now(chat, &t);
	if (evutil_timercmp(&due, &t, >))
		evutil_timersub(&due, &t, &wait);
	evtimer_add(ext->timer, &wait);
}

static void
timer_cb(evutil_socket_t fd, short what, void *ctx)
{
	struct async_chat *chat = ctx;
	struct async_chat__ext *ext = chat->ext;
	struct timeval t, due;
	int err = 0;

	(void)fd;
	(void)what;
	async_chat__enter_loop(chat);
	clock_now(chat, &t);
	if (tv_on(&ext->frame) && ext->frame_open && chat->suspend == 0) {
		evutil_timeradd(&ext->frame_start, &ext->frame, &due);
		if (!evutil_timercmp(&t, &due, <)) {
			err = ASYNC_CHAT_ERR_FRAME_TIMEOUT;
			suspend_reading(chat, SUSPEND_TIMEOUT);
		}
	}
	if (err == 0 && tv_on(&ext->idle) && chat->read_state == READ_OPEN &&
	    chat->suspend == 0) {
		evutil_timeradd(&ext->last_read, &ext->idle, &due);
		if (!evutil_timercmp(&t, &due, <)) {
			err = ASYNC_CHAT_ERR_IDLE_TIMEOUT;
			ext->last_read = t;
		}
	}
	if (err == 0 && tv_on(&ext->write) &&
	    evbuffer_get_length(bufferevent_get_output(chat->bev)) > 0) {
		evutil_timeradd(&ext->last_write, &ext->write, &due);
		if (!evutil_timercmp(&t, &due, <)) {
			err = ASYNC_CHAT_ERR_WRITE_TIMEOUT;
			ext->last_write = t;
		}
	}
	if (err != 0)
		async_chat__fail(chat, err);
	timeouts_arm(chat);
	async_chat__leave(chat);
}

/* The output's bytes moving: written ones are progress, and output that
 * was empty starts the write timeout's clock. */
static void
write_watch_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct async_chat *chat = arg;

	(void)buf;
	if (info->n_deleted > 0 || (info->orig_size == 0 && info->n_added > 0)) {
		clock_now(chat, &chat->ext->last_write);
		if (info->orig_size == 0)
			timeouts_arm(chat);
	}
}

enum { TIMEOUT_IDLE, TIMEOUT_WRITE, TIMEOUT_FRAME };

static int
set_timeout(struct async_chat *chat, int which, const struct timeval *tv)
{
	static const struct timeval off = {0, 0};
	struct async_chat__ext *ext;
	struct timeval *slot;

	CHECK(chat);
	if (tv != NULL && (tv->tv_sec < 0 || tv->tv_usec < 0 ||
			      tv->tv_usec >= 1000000)) {
		errno = EINVAL;
		return -1;
	}
	if (tv == NULL)
		tv = &off;
	if ((ext = async_chat__get_ext(chat)) == NULL)
		return -1;
	if (ext->timer == NULL &&
	    (ext->timer = evtimer_new(bufferevent_get_base(chat->bev),
		 timer_cb, chat)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	if (which == TIMEOUT_WRITE && tv_on(tv) && ext->write_watch == NULL) {
		ext->write_watch = evbuffer_add_cb(
		    bufferevent_get_output(chat->bev), write_watch_cb, chat);
		if (ext->write_watch == NULL) {
			errno = ENOMEM;
			return -1;
		}
	}
	slot = which == TIMEOUT_IDLE ? &ext->idle :
	    which == TIMEOUT_WRITE   ? &ext->write :
				       &ext->frame;
	if (!ext->timeouts_on) {
		/* The clocks start now. */
		clock_now(chat, &ext->last_read);
		ext->last_write = ext->last_read;
	}
	*slot = *tv;
	ext->timeouts_on = tv_on(&ext->idle) || tv_on(&ext->write) ||
	    tv_on(&ext->frame);
	if (which == TIMEOUT_FRAME && !ext->frame_open &&
	    frame_in_progress(chat)) {
		ext->frame_open = 1;
		clock_now(chat, &ext->frame_start);
	}
	timeouts_arm(chat);
	return 0;
}

int
async_chat_set_idle_timeout(struct async_chat *chat, const struct timeval *tv)
{
	return set_timeout(chat, TIMEOUT_IDLE, tv);
}

int
async_chat_set_write_timeout(struct async_chat *chat, const struct timeval *tv)
{
	return set_timeout(chat, TIMEOUT_WRITE, tv);
}

int
async_chat_set_frame_timeout(struct async_chat *chat, const struct timeval *tv)
{
	return set_timeout(chat, TIMEOUT_FRAME, tv);
}

/* After a read pass: a frame begun since the last frame end starts the
 * frame deadline. */
static void
note_frame(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;

	if (ext == NULL || !tv_on(&ext->frame) || chat->closed)
		return;
	if (!frame_in_progress(chat)) {
		ext->frame_open = 0;
	} else if (!ext->frame_open) {
		ext->frame_open = 1;
		clock_now(chat, &ext->frame_start);
		timeouts_arm(chat);
	}
}

/* Bytes the framer holds or the input buffer has, to frame again under a
 * new terminator or after a resume, without waiting for the peer. */
static void
frame_later(struct async_chat *chat)
{
	if (!chat->reading && read_may_run(chat) &&
	    (chat->fr.carry_len > chat->fr.carry_off || chat->fr.todo > 0 ||
		chat->fr.have_end || chat->read_state == READ_EOF ||
		evbuffer_get_length(bufferevent_get_input(chat->bev)) > 0))
		async_chat__defer(chat, DEFER_READ);
}

/* Runs shorter than this are copied into the frame buffer rather than
 * moved: moving a chain that one small read left mostly empty would pin a
 * kilobyte of it per byte of frame.  Runs up to in_buffer_size are
 * copied too (on_data()). */
#define MESSAGE_COPY_MAX 4096

/* Drop the last n bytes of buf (a skipped frame's, in message mode). */
static int
drop_tail(struct evbuffer *buf, size_t n)
{
	size_t len = evbuffer_get_length(buf);
	struct evbuffer *keep;

	if (n >= len)
		return evbuffer_drain(buf, len);
	keep = evbuffer_new();
	if (keep == NULL || evbuffer_remove_buffer(buf, keep, len - n) < 0 ||
	    evbuffer_drain(buf, n) < 0 || evbuffer_add_buffer(buf, keep) < 0) {
		if (keep != NULL)
			evbuffer_free(keep);
		return -1;
	}
	evbuffer_free(keep);
	return 0;
}

/* What the read loop does after an event: go on, look at the input
 * afresh (something took or dropped bytes of it), or stop. */
enum { READ_ON, READ_REPEEK, READ_STOP };

/* After a callback: whether the loop may go on. */
static int
after_callback(struct async_chat *chat)
{
	if (chat->closed || chat->suspend != 0)
		return READ_STOP;
	if (chat->discarded)
		return READ_REPEEK;
	return READ_ON;
}

/* The policy for a frame past the bound, or an invalid length header. */
static void
frame_refused(struct async_chat *chat, int kind)
{
	int err = kind == ASYNC_CHAT_FRAMER_TOO_LONG ?
	    ASYNC_CHAT_ERR_FRAME_TOO_LONG : ASYNC_CHAT_ERR_LENGTH;

	if (chat->policy == ASYNC_CHAT_FRAME_SKIP &&
	    kind == ASYNC_CHAT_FRAMER_TOO_LONG) {
		if (chat->h->collect_incoming_data == NULL &&
		    chat->incoming != NULL &&
		    drop_tail(chat->incoming,
			async_chat_framer_frame_length(&chat->fr)) < 0) {
			async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
			return;
		}
		async_chat_framer_skip(&chat->fr);
		chat->skip_found = 0;
		if (chat->h->handle_error != NULL)
			chat->h->handle_error(chat, err, chat->arg);
		return;
	}
	if (chat->policy == ASYNC_CHAT_FRAME_CLOSE) {
		suspend_reading(chat, SUSPEND_CLOSING);
		if (chat->h->handle_error != NULL)
			chat->h->handle_error(chat, err, chat->arg);
		if (!chat->closed && async_chat_close_when_done(chat) < 0 &&
		    !chat->closed)
			async_chat_close(chat);
		return;
	}
	suspend_reading(chat, kind == ASYNC_CHAT_FRAMER_TOO_LONG ?
		SUSPEND_BOUND : SUSPEND_LENGTH);
	async_chat__fail(chat, err);
}

/* Hand frame bytes to the application (inline: the read loop's fast
 * path runs it for every frame). */
static ASYNC_CHAT__INLINE int
on_data(struct async_chat *chat, struct evbuffer *in,
    const struct async_chat_framer_event *ev, size_t *pos)
{
	if (chat->h->collect_incoming_data != NULL) {
		chat->h->collect_incoming_data(chat, ev->data, (size_t)ev->len,
		    chat->arg);
		return after_callback(chat);
	}
	if (!ev->held && ev->len > MESSAGE_COPY_MAX &&
	    (uint64_t)ev->len > chat->in_buffer_size) {
		/* Runs longer than a read move libevent's chains: no copy.
		 * A shorter one is copied, so that the chain the next read
		 * fills stays in the input: moved out with the frame, it
		 * would be freed once written and another allocated for
		 * the next read, and glibc would give the heap's top back
		 * to the kernel and take it again (brk) every few frames. */
		size_t before = *pos - (size_t)ev->len;

		*pos = 0;
		if (evbuffer_drain(in, before) < 0 ||
		    evbuffer_remove_buffer(in, chat->incoming,
			(size_t)ev->len) != (int)ev->len) {
			async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
			return READ_STOP;
		}
		return READ_REPEEK;
	}
	if (evbuffer_add(chat->incoming, ev->data, (size_t)ev->len) < 0) {
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
		return READ_STOP;
	}
	return READ_ON;
}

static ASYNC_CHAT__INLINE int
on_end(struct async_chat *chat, const struct async_chat_framer_event *ev)
{
	chat->matched = (uint8_t)ev->matched;
	if (chat->ext != NULL)
		chat->ext->frame_open = 0;
	if (chat->h->found_terminator == NULL)
		return READ_ON;
	chat->h->found_terminator(chat, chat->arg);
	if (early_due(chat))
		write_early(chat);
	return after_callback(chat);
}

/* Act on one event; the span's consumed bytes are counted in *pos. */
static int
on_event(struct async_chat *chat, struct evbuffer *in, int kind,
    const struct async_chat_framer_event *ev, size_t *pos)
{
	switch (kind) {
	case ASYNC_CHAT_FRAMER_DATA:
		return on_data(chat, in, ev, pos);
	case ASYNC_CHAT_FRAMER_END:
		return on_end(chat, ev);
	case ASYNC_CHAT_FRAMER_SKIPPED:
		/* async_chat_skip_frame() keeps found_terminator for the
		 * frame; the frame policy's skip does not. */
		if (!chat->skip_found)
			return READ_ON;
		chat->skip_found = 0;
		return on_end(chat, ev);
	case ASYNC_CHAT_FRAMER_TOO_LONG:
	case ASYNC_CHAT_FRAMER_LENGTH_ERROR:
		evbuffer_drain(in, *pos);
		*pos = 0;
		frame_refused(chat, kind);
		/* Skipping goes on; everything else has suspended reading. */
		return chat->closed || chat->suspend ? READ_STOP : READ_REPEEK;
	default:
		return READ_STOP;
	}
}

/* Frame the input buffer, one extent at a time, draining what the framer
 * consumed once per extent.  Returns 1 when every byte has been framed,
 * 0 when the loop stopped (closed, suspended). */
static int
frame_buffer(struct async_chat *chat, struct evbuffer *in)
{
	struct async_chat_framer_event ev;

	for (;;) {
		struct evbuffer_iovec v;
		const char *base = NULL;
		size_t len = 0, pos = 0;
		int kind, next = READ_ON;

		if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1) {
			base = v.iov_base;
			len = v.iov_len;
		}
		chat->discarded = 0;
		do {
			size_t lead, flen;

			if (pos < len &&
			    async_chat__framer_fast(&chat->fr, base + pos,
				len - pos, &lead, &flen)) {
				/* A whole frame in the extent: its bytes and
				 * its end, without the general loop. */
				pos += lead;
				ev.data = base + pos;
				ev.len = flen;
				ev.held = 0;
				pos += flen;
				if (flen > 0 &&
				    (next = on_data(chat, in, &ev, &pos)) !=
					READ_ON)
					break;
				pos += async_chat__framer_end(&chat->fr,
				    &ev.matched);
				next = on_end(chat, &ev);
				continue;
			}
			kind = async_chat_framer_next(&chat->fr,
			    base != NULL ? base + pos : NULL, len - pos, &ev);
			pos += ev.consumed;
			if (kind == ASYNC_CHAT_FRAMER_NEED_MORE)
				break;
			next = on_event(chat, in, kind, &ev, &pos);
		} while (next == READ_ON);
		if (chat->closed)
			return 0;
		if (next == READ_REPEEK && chat->discarded)
			continue; /* the input is gone: nothing to drain */
		if (pos > 0)
			evbuffer_drain(in, pos);
		if (next == READ_STOP)
			return 0;
		if (next == READ_ON && evbuffer_get_length(in) == 0)
			return 1;
	}
}

/* The peer has no more to send: the bytes the framer holds are frame
 * bytes after all. */
static int
frame_held(struct async_chat *chat, struct evbuffer *in)
{
	struct async_chat_framer_event ev;
	size_t pos = 0;
	int kind, next;

	do {
		kind = async_chat_framer_finish(&chat->fr, &ev);
		if (kind == ASYNC_CHAT_FRAMER_NEED_MORE)
			return 1;
		chat->discarded = 0;
		next = on_event(chat, in, kind, &ev, &pos);
	} while (next != READ_STOP);
	return 0;
}

/* Frame the input; at the end of input also hand over the held bytes.
 * Returns 1 when every byte has been framed. */
static int
frame_input(struct async_chat *chat, int at_end)
{
	struct evbuffer *in = bufferevent_get_input(chat->bev);
	int done;

	if (chat->reading || !read_may_run(chat))
		return 0;
	chat->reading = 1;
	done = frame_buffer(chat, in);
	if (done && at_end && read_may_run(chat))
		done = frame_held(chat, in);
	if (!chat->closed)
		chat->reading = 0;
	note_frame(chat);
	return done && read_may_run(chat);
}

static void
handle_eof(struct async_chat *chat)
{
	if (chat->read_state != READ_EOF || chat->closed)
		return;
	if (!frame_input(chat, 1))
		return; /* suspended: EOF is handled on resume */
	chat->read_state = READ_DONE;
	if (chat->h->handle_close != NULL)
		chat->h->handle_close(chat, chat->arg);
	else if (async_chat_close_when_done(chat) < 0 && !chat->closed)
		/* The close marker could not be queued: without it the
		 * channel would stay open for ever. */
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
}

/*
 * Reading a socket of the channel's own.  libevent 2.1 reads at most
 * 4,096 bytes a call (and asks the kernel how much is there first); the
 * channel reads up to in_buffer_size bytes a call into the bufferevent's
 * input itself, once libevent's first read has shown nothing that needs
 * libevent's reading: no read timeout and no rate limit on the
 * bufferevent.  Should one be set later, the next read hands reading
 * back to libevent.
 */

static int
own_read_fits(struct async_chat *chat)
{
	struct bufferevent *bev = chat->bev;

	return !evutil_timerisset(&bev->timeout_read) &&
	    bufferevent_get_token_bucket_cfg(bev) == NULL &&
	    bufferevent_get_max_to_read(bev) ==
	    (ev_ssize_t)chat->in_buffer_size;
}

static void own_readcb(evutil_socket_t fd, short what, void *ctx);

static void
own_read_start(struct async_chat *chat)
{
	struct async_chat__ext *ext;
	evutil_socket_t fd;

	if (chat->closed || !chat->own_socket || chat->conn != CONN_UP ||
	    (chat->ext != NULL && chat->ext->own_read) ||
	    (fd = bufferevent_getfd(chat->bev)) < 0 || !own_read_fits(chat) ||
	    (ext = async_chat__get_ext(chat)) == NULL)
		return;
	if (ext->rd == NULL &&
	    (ext->rd = event_new(bufferevent_get_base(chat->bev), fd,
		 EV_READ | EV_PERSIST, own_readcb, chat)) == NULL)
		return; /* libevent goes on reading */
	ext->own_read = 1;
	bufferevent_disable(chat->bev, EV_READ);
	update_reading(chat);
}

static void
own_read_stop(struct async_chat *chat)
{
	chat->ext->own_read = 0;
	event_del(chat->ext->rd);
	update_reading(chat);
}

/* Frame what came in, and the EOF once everything before it is framed. */
static void
input_arrived(struct async_chat *chat)
{
	if (chat->ext != NULL && chat->ext->timeouts_on)
		clock_now(chat, &chat->ext->last_read);
	if (frame_input(chat, 0))
		handle_eof(chat);
}

static void
own_readcb(evutil_socket_t fd, short what, void *ctx)
{
	struct async_chat *chat = ctx;
	struct evbuffer *in = bufferevent_get_input(chat->bev);
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	size_t left;
	ssize_t n;
	int nv, i;

	(void)what;
	async_chat__enter_loop(chat);
	if (!own_read_fits(chat)) {
		own_read_stop(chat);
		goto out;
	}
	/* A socket bufferevent keeps the end of its input frozen except
	 * while it reads. */
	evbuffer_unfreeze(in, 0);
	nv = evbuffer_reserve_space(in, (ev_ssize_t)chat->in_buffer_size, v, 2);
	if (nv <= 0) {
		evbuffer_freeze(in, 0);
		event_del(chat->ext->rd); /* as libevent stops on an error */
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
		goto out;
	}
	/* The space reserved may be more than asked for. */
	left = chat->in_buffer_size;
	for (i = 0; i < nv && left > 0; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len < left ? v[i].iov_len : left;
		left -= iov[i].iov_len;
	}
	n = readv(fd, iov, i);
	if (n > 0) {
		left = (size_t)n;
		for (i = 0; i < nv; i++) {
			if (v[i].iov_len > left)
				v[i].iov_len = left;
			left -= v[i].iov_len;
		}
		evbuffer_commit_space(in, v, nv);
	}
	evbuffer_freeze(in, 0);
	if (n > 0) {
		/* Alone in the loop: answers may leave as they are framed. */
		chat->ext->early_ok = event_base_get_num_events(
		    bufferevent_get_base(chat->bev),
		    EVENT_BASE_COUNT_ACTIVE) == 0;
		input_arrived(chat);
	} else if (n == 0) {
		/* As libevent reports the peer's EOF. */
		if (chat->read_state == READ_OPEN)
			chat->read_state = READ_EOF;
		update_reading(chat);
		if (frame_input(chat, 0))
			handle_eof(chat);
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		int err = errno;

		/* As libevent reports a read error: reading stops, what
		 * came before is framed, then the error is told. */
		event_del(chat->ext->rd);
		chat->conn = CONN_DOWN;
		frame_input(chat, 1);
		async_chat__fail(chat, err);
	}
out:
	async_chat__leave(chat);
}

static void
readcb(struct bufferevent *bev, void *ctx)
{
	struct async_chat *chat = ctx;

	(void)bev;
	async_chat__enter_loop(chat);
	input_arrived(chat);
	own_read_start(chat);
	async_chat__leave(chat);
}

static void
writecb(struct bufferevent *bev, void *ctx)
{
	struct async_chat *chat = ctx;

	(void)bev;
	async_chat__enter_loop(chat);
	async_chat__refill(chat, 1);
	async_chat__leave(chat);
}

/* The error code for an event from the bufferevent. */
static int
event_error(struct async_chat *chat, short what, int err)
{
	if (what & BEV_EVENT_TIMEOUT)
		return ETIMEDOUT;
	if (bufferevent_socket_get_dns_error(chat->bev) != 0) {
		chat->dns_error =
		    (int16_t)bufferevent_socket_get_dns_error(chat->bev);
		return ASYNC_CHAT_ERR_DNS;
	}
	return err != 0 ? err : ASYNC_CHAT_ERR_UNKNOWN;
}

static void
eventcb(struct bufferevent *bev, short what, void *ctx)
{
	struct async_chat *chat = ctx;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	async_chat__enter_loop(chat);
	if (what & BEV_EVENT_CONNECTED) {
		chat->conn = CONN_UP;
		if (chat->h->handle_connect != NULL)
			chat->h->handle_connect(chat, chat->arg);
		/* Data pushed while connecting may wait behind a producer. */
		async_chat__refill(chat, 1);
	} else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING) &&
	    chat->files) {
		/* A socket write that wrote nothing: a file pushed with
		 * async_chat_push_file ended before its range did.  (A TLS
		 * bufferevent reports the peer's close_notify met while
		 * writing this way too; without files it is the peer's EOF.) */
		async_chat__fail(chat, ASYNC_CHAT_ERR_PRODUCER);
	} else if (what & BEV_EVENT_EOF) {
		if (chat->read_state == READ_OPEN)
			chat->read_state = READ_EOF;
		update_reading(chat);
		if (frame_input(chat, 0))
			handle_eof(chat);
	} else if (chat->in_connect && (what & BEV_EVENT_ERROR)) {
		/* Raised inside async_chat_connect*() (a lookup without an
		 * evdns_base fails at once): report it from the loop, so the
		 * channel outlives the call that the application made. */
		chat->pending_error = (int16_t)event_error(chat, what, err);
		async_chat__defer(chat, DEFER_ERROR);
	} else if (what & BEV_EVENT_TIMEOUT) {
		/* libevent stopped the side that timed out.  Reading stays
		 * suspended until async_chat_resume_reading(); writing goes
		 * on, its timeout armed again, unless the handler closes. */
		if (what & BEV_EVENT_READING)
			suspend_reading(chat, SUSPEND_TIMEOUT);
		async_chat__fail(chat, ETIMEDOUT);
		if (!chat->closed && (what & BEV_EVENT_WRITING))
			bufferevent_enable(chat->bev, EV_WRITE);
	} else if (what & BEV_EVENT_ERROR) {
		if (chat->pending_error != 0) {
			err = chat->pending_error;
			chat->pending_error = 0;
		} else {
			err = event_error(chat, what, err);
		}
		chat->conn = CONN_DOWN;
		/* Nothing received is lost: frame what came before the
		 * error, held-back bytes included, then report it. */
		if (what & BEV_EVENT_READING)
			frame_input(chat, 1);
		async_chat__fail(chat, err);
	}
	async_chat__leave(chat);
}

/*
 * Construction
 */

static struct async_chat *
chat_setup(struct bufferevent *bev, const struct async_chat_handlers *h,
    void *arg)
{
	struct async_chat *chat = calloc(1, sizeof(*chat));

	if (chat == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	/* Only message mode needs the frame buffer from the start;
	 * async_chat_incoming() makes it on demand otherwise. */
	if (h->collect_incoming_data == NULL &&
	    (chat->incoming = evbuffer_new()) == NULL) {
		free(chat);
		errno = ENOMEM;
		return NULL;
	}
	async_chat__framer_init(&chat->fr);
	chat->bev = bev;
	chat->h = h;
	chat->arg = arg;
	chat->in_buffer_size = ASYNC_CHAT_DEFAULT_BUFFER_SIZE;
	chat->out_buffer_size = ASYNC_CHAT_DEFAULT_BUFFER_SIZE;
	bufferevent_setcb(bev, readcb, writecb, eventcb, chat);
	bufferevent_setwatermark(bev, EV_READ, 0, 0);
	bufferevent_setwatermark(bev, EV_WRITE, chat->out_buffer_size, 0);
	bufferevent_set_max_single_read(bev, chat->in_buffer_size);
	bufferevent_set_max_single_write(bev, chat->out_buffer_size);
	if (bufferevent_enable(bev, EV_READ | EV_WRITE) < 0) {
		bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
		if (chat->incoming != NULL)
			evbuffer_free(chat->incoming);
		free(chat);
		errno = ENOMEM;
		return NULL;
	}
	return chat;
}

struct async_chat *
async_chat_new(struct event_base *base, evutil_socket_t fd,
    const struct async_chat_handlers *handlers, void *arg)
{
	struct bufferevent *bev;
	struct async_chat *chat;

	if (base == NULL || handlers == NULL || fd < -1) {
		errno = EINVAL;
		return NULL;
	}
	if (fd >= 0 && evutil_make_socket_nonblocking(fd) < 0) {
		errno = EBADF;
		return NULL;
	}
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	chat = chat_setup(bev, handlers, arg);
	if (chat == NULL) {
		int saved = errno;

		bufferevent_setfd(bev, -1); /* the caller keeps fd */
		bufferevent_free(bev);
		errno = saved;
		return NULL;
	}
	chat->conn = fd >= 0 ? CONN_UP : CONN_NONE;
	chat->own_socket = 1;
	return chat;
}

struct async_chat *
async_chat_new_bufferevent(struct bufferevent *bev,
    const struct async_chat_handlers *handlers, void *arg)
{
	struct async_chat *chat;

	if (bev == NULL || handlers == NULL) {
		errno = EINVAL;
		return NULL;
	}
	chat = chat_setup(bev, handlers, arg);
	if (chat != NULL)
		chat->conn = CONN_UP;
	return chat;
}

/* Whether a connect may start: none made or under way. */
static int
can_connect(const struct async_chat *chat)
{
	if (chat->conn == CONN_UP || chat->conn == CONN_PENDING) {
		errno = chat->conn == CONN_UP ? EISCONN : EALREADY;
		return 0;
	}
	return 1;
}

/* Account for a connect just started by libevent (rc its result); errors
 * it raised inside the call were deferred by eventcb. */
static int
connect_started(struct async_chat *chat, int rc)
{
	chat->in_connect = 0;
	if (rc < 0) {
		chat->conn = CONN_NONE;
		if (errno == 0)
			errno = EINVAL;
		return -1;
	}
	return 0;
}

int
async_chat_connect(struct async_chat *chat, const struct sockaddr *addr,
    int addrlen)
{
	CHECK(chat);
	if (addr == NULL || addrlen <= 0) {
		errno = EINVAL;
		return -1;
	}
	if (!can_connect(chat))
		return -1;
	chat->in_connect = 1;
	chat->conn = CONN_PENDING;
	return connect_started(chat,
	    bufferevent_socket_connect(chat->bev, addr, addrlen));
}

int
async_chat_connect_hostname(struct async_chat *chat,
    struct evdns_base *dns_base,
    int family, const char *host, int port)
{
	CHECK(chat);
	if (host == NULL || port <= 0 || port > 65535 ||
	    (family != AF_INET && family != AF_INET6 && family != AF_UNSPEC)) {
		errno = EINVAL;
		return -1;
	}
	if (!can_connect(chat))
		return -1;
	chat->dns_error = 0;
	chat->in_connect = 1;
	chat->conn = CONN_PENDING;
	return connect_started(chat, bufferevent_socket_connect_hostname(
	    chat->bev, dns_base, family, host, port));
}

int
async_chat_dns_error(const struct async_chat *chat)
{
	return chat != NULL ? chat->dns_error : 0;
}

/*
 * Terminators.  The framer never runs user code, so a terminator set here,
 * inside a callback or not, applies from the framer's next event on; from
 * outside the read loop, bytes already received are framed again under it
 * on the next loop turn.
 */

static int
term_set(struct async_chat *chat, int rc)
{
	if (rc < 0)
		return -1;
	frame_later(chat);
	return 0;
}

int
async_chat_set_terminator(struct async_chat *chat, const void *term,
    size_t len)
{
	CHECK(chat);
	return term_set(chat,
	    async_chat_framer_set_terminator(&chat->fr, term, len));
}

int
async_chat_set_terminator_count(struct async_chat *chat, uint64_t count)
{
	CHECK(chat);
	return term_set(chat,
	    async_chat_framer_set_terminator_count(&chat->fr, count));
}

int
async_chat_set_terminator_none(struct async_chat *chat)
{
	CHECK(chat);
	return term_set(chat, async_chat_framer_set_terminator_none(&chat->fr));
}

int
async_chat_set_terminator_line(struct async_chat *chat)
{
	CHECK(chat);
	return term_set(chat, async_chat_framer_set_terminator_line(&chat->fr));
}

int
async_chat_set_terminators(struct async_chat *chat, const void *const *terms,
    const size_t *lens, size_t n)
{
	CHECK(chat);
	return term_set(chat,
	    async_chat_framer_set_terminators(&chat->fr, terms, lens, n));
}

int
async_chat_set_terminator_length(struct async_chat *chat,
    const struct async_chat_length_field *spec)
{
	CHECK(chat);
	return term_set(chat,
	    async_chat_framer_set_terminator_length(&chat->fr, spec));
}

int
async_chat_get_terminator(const struct async_chat *chat,
    struct async_chat_terminator *out)
{
	CHECK(chat);
	return async_chat_framer_get_terminator(&chat->fr, out);
}

int
async_chat_matched_terminator(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	return chat->matched;
}

int
async_chat_set_max_frame(struct async_chat *chat, uint64_t max)
{
	CHECK(chat);
	return async_chat_framer_set_max_frame(&chat->fr, max);
}

int
async_chat_set_frame_policy(struct async_chat *chat,
    enum async_chat_frame_policy policy)
{
	CHECK(chat);
	if (policy != ASYNC_CHAT_FRAME_PAUSE &&
	    policy != ASYNC_CHAT_FRAME_SKIP &&
	    policy != ASYNC_CHAT_FRAME_CLOSE) {
		errno = EINVAL;
		return -1;
	}
	chat->policy = (uint8_t)policy;
	return 0;
}

static struct evbuffer * ASYNC_CHAT__NOINLINE
incoming_slow(struct async_chat *chat)
{
	if (chat == NULL || chat->closed) {
		errno = chat == NULL ? EINVAL : ENOTCONN;
		return NULL;
	}
	if ((chat->incoming = evbuffer_new()) == NULL)
		errno = ENOMEM;
	return chat->incoming;
}

struct evbuffer *
async_chat_incoming(struct async_chat *chat)
{
	if (chat != NULL && !chat->closed && chat->incoming != NULL)
		return chat->incoming;
	return incoming_slow(chat);
}

int
async_chat_discard_buffers(struct async_chat *chat)
{
	struct evbuffer *in, *out;

	CHECK(chat);
	async_chat__enter(chat);
	async_chat_framer_reset(&chat->fr);
	chat->discarded = 1;
	in = bufferevent_get_input(chat->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	if (chat->incoming != NULL)
		evbuffer_drain(chat->incoming,
		    evbuffer_get_length(chat->incoming));
	if (chat->ext != NULL && chat->ext->wbuf != NULL)
		evbuffer_drain(chat->ext->wbuf,
		    evbuffer_get_length(chat->ext->wbuf));
	if (chat->ext != NULL)
		chat->ext->stage_len = 0;
	out = bufferevent_get_output(chat->bev);
	if (evbuffer_drain(out, evbuffer_get_length(out)) < 0) {
		/* A socket bufferevent keeps the front of its output
		 * frozen except while it writes. */
		evbuffer_unfreeze(out, 1);
		evbuffer_drain(out, evbuffer_get_length(out));
		evbuffer_freeze(out, 1);
	}
	async_chat__output_clear(chat, 1);
	/* Not inside libevent here: the cleanups of the references just
	 * dropped can run now, as the caller expects. */
	async_chat__run_cleanups(chat);
	if (!chat->closed)
		async_chat__refill(chat, 0);
	async_chat__leave(chat);
	return 0;
}

int
async_chat_skip_frame(struct async_chat *chat)
{
	CHECK(chat);
	if (async_chat_framer_skip(&chat->fr) < 0)
		return -1;
	chat->skip_found = 1;
	frame_later(chat);
	return 0;
}

/*
 * Flow control and tunables
 */

int
async_chat__check_high(struct async_chat *chat)
{
	struct async_chat__ext *ext = chat->ext;

	if (ext == NULL || ext->high == 0 || ext->above || chat->closed ||
	    async_chat_output_pending(chat) <= ext->high)
		return 0;
	ext->above = 1;
	ext->high_fn(chat, 1, chat->arg);
	return 1;
}

int
async_chat_set_high_water(struct async_chat *chat, size_t low, size_t high,
    void (*handler)(struct async_chat *chat, int above, void *arg))
{
	struct async_chat__ext *ext;

	CHECK(chat);
	if (high > 0 && (handler == NULL || low > high)) {
		errno = EINVAL;
		return -1;
	}
	if ((ext = async_chat__get_ext(chat)) == NULL)
		return -1;
	ext->low = low;
	ext->high = high;
	ext->high_fn = handler;
	ext->above = 0;
	/* The write callback, which sees output fall to low, runs when
	 * the output is at or below this watermark. */
	bufferevent_setwatermark(chat->bev, EV_WRITE,
	    low > chat->out_buffer_size ? low : chat->out_buffer_size, 0);
	async_chat__enter(chat);
	async_chat__check_high(chat);
	async_chat__leave(chat);
	return 0;
}

int
async_chat_set_shutdown_handler(struct async_chat *chat,
    void (*handler)(struct async_chat *chat, int err, void *arg))
{
	struct async_chat__ext *ext;

	CHECK(chat);
	if (handler == NULL) {
		if (chat->ext != NULL)
			chat->ext->shut_fn = NULL;
		return 0;
	}
	if ((ext = async_chat__get_ext(chat)) == NULL)
		return -1;
	ext->shut_fn = handler;
	return 0;
}


int
async_chat_pause_reading(struct async_chat *chat)
{
	CHECK(chat);
	suspend_reading(chat, SUSPEND_APP);
	return 0;
}

int
async_chat_resume_reading(struct async_chat *chat)
{
	int stuck;

	CHECK(chat);
	if (chat->read_state == READ_DONE) {
		errno = EPIPE;
		return -1;
	}
	stuck = async_chat__framer_stuck(&chat->fr);
	if ((chat->suspend & SUSPEND_BOUND) && stuck == 1) {
		errno = EMSGSIZE;
		return -1;
	}
	if ((chat->suspend & SUSPEND_LENGTH) && stuck == 2) {
		errno = EPROTO;
		return -1;
	}
	if (chat->suspend & SUSPEND_CLOSING) {
		errno = EPIPE;
		return -1;
	}
	if (chat->suspend == 0)
		return 0;
	chat->suspend = 0;
	update_reading(chat);
	if (chat->ext != NULL && chat->ext->timeouts_on) {
		/* Deadlines start again from here. */
		clock_now(chat, &chat->ext->last_read);
		chat->ext->frame_start = chat->ext->last_read;
		timeouts_arm(chat);
	}
	/* Frame what is already buffered (and a pending EOF) without
	 * waiting for the peer to send more.  Inside the read loop the
	 * running loop simply goes on. */
	frame_later(chat);
	return 0;
}

int
async_chat_reading_paused(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	return chat->suspend != 0;
}

int
async_chat_set_in_buffer_size(struct async_chat *chat, size_t size)
{
	CHECK(chat);
	if (size == 0 || size > ASYNC_CHAT_BUFFER_SIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	chat->in_buffer_size = (uint32_t)size;
	bufferevent_set_max_single_read(chat->bev, size);
	return 0;
}

size_t
async_chat_get_in_buffer_size(const struct async_chat *chat)
{
	return chat != NULL ? chat->in_buffer_size : 0;
}

int
async_chat_set_out_buffer_size(struct async_chat *chat, size_t size)
{
	CHECK(chat);
	if (size == 0 || size > ASYNC_CHAT_BUFFER_SIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	chat->out_buffer_size = (uint32_t)size;
	bufferevent_setwatermark(chat->bev, EV_WRITE,
	    chat->ext != NULL && chat->ext->high > 0 && chat->ext->low > size ?
		chat->ext->low : size,
	    0);
	bufferevent_set_max_single_write(chat->bev, size);
	return 0;
}

size_t
async_chat_get_out_buffer_size(const struct async_chat *chat)
{
	return chat != NULL ? chat->out_buffer_size : 0;
}

/*
 * Accessors
 */

struct bufferevent *
async_chat_get_bufferevent(struct async_chat *chat)
{
	return chat != NULL && !chat->closed ? chat->bev : NULL;
}

evutil_socket_t
async_chat_get_fd(const struct async_chat *chat)
{
	return chat != NULL && !chat->closed ? bufferevent_getfd(chat->bev) :
					       -1;
}

void *
async_chat_get_arg(const struct async_chat *chat)
{
	return chat != NULL ? chat->arg : NULL;
}

int
async_chat_set_arg(struct async_chat *chat, void *arg)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	chat->arg = arg;
	return 0;
}

int
async_chat_connected(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	return chat->conn == CONN_UP;
}
