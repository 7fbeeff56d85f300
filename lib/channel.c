/*
 * channel.c - the async_chat channel: bufferevent glue, the input side
 * (framer sinks, EOF, errors), lifecycle and deferred destruction, and the
 * small public accessors.  The output FIFO lives in producer.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
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
	if (chat->bev != NULL)
		bufferevent_free(chat->bev);
	if (chat->incoming != NULL)
		evbuffer_free(chat->incoming);
	async_chat__framer_clear(&chat->fr);
	free(chat);
}

void
async_chat__enter(struct async_chat *chat)
{
	chat->depth++;
}

int
async_chat__leave(struct async_chat *chat)
{
	if (--chat->depth == 0 && chat->closed) {
		destroy(chat);
		return 1;
	}
	return 0;
}

void
async_chat_close(struct async_chat *chat)
{
	if (chat == NULL || chat->closed)
		return;
	async_chat__enter(chat);
	chat->closed = 1;
	chat->connected = 0;
	/* From here on libevent calls nothing of ours; the bufferevent and
	 * its buffers stay alive until no frame of ours uses them. */
	bufferevent_setcb(chat->bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(chat->bev, EV_READ | EV_WRITE);
	async_chat__tell_partner_eof(chat);
	async_chat__output_clear(chat, 0);
	if (chat->h->handle_free != NULL)
		chat->h->handle_free(chat, chat->arg);
	async_chat__leave(chat);
}

/* One end of a bufferevent pair has no socket to close or shut down: give
 * the other end its EOF as closing a socket would.  Not with
 * bufferevent_flush(BEV_FINISHED), which in libevent 2.1 leaks the partner
 * if it frees itself in the callback; not deferred either, which leaks it
 * if the application frees the event_base before the loop runs again.
 * Returns 0, or -1 when bev is not a pair. */
int
async_chat__tell_partner_eof(struct async_chat *chat)
{
	struct bufferevent *partner = bufferevent_pair_get_partner(chat->bev);

	if (partner == NULL)
		return -1;
	bufferevent_trigger_event(partner, BEV_EVENT_EOF | BEV_EVENT_READING, 0);
	return 0;
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
 * Input: the framer's sinks.  Each returns non-zero when the scan must
 * stop because a callback closed or paused the channel.
 */

static int
must_stop(const struct async_chat *chat)
{
	return chat->closed || chat->paused;
}

static int
sink_collect(void *ctx, struct evbuffer *in, size_t len)
{
	struct async_chat *chat = ctx;
	unsigned input_gen = chat->fr.input_gen;

	while (len > 0) {
		struct evbuffer_iovec v[8];
		size_t done = 0;
		int n, i;

		n = evbuffer_peek(in, (ev_ssize_t)len, NULL, v, 8);
		if (n > 8)
			n = 8;
		for (i = 0; i < n && done < len; i++) {
			size_t piece = v[i].iov_len;

			if (piece > len - done)
				piece = len - done;
			if (piece == 0)
				continue;
			chat->h->collect_incoming_data(chat, v[i].iov_base,
			    piece, chat->arg);
			done += piece;
			if (chat->fr.input_gen != input_gen)
				return 1; /* discarded: the input is gone */
			if (must_stop(chat)) {
				evbuffer_drain(in, done);
				return 1;
			}
		}
		if (n <= 0)
			break;
		evbuffer_drain(in, done);
		len -= done;
	}
	return 0;
}

/* Runs shorter than this are copied into the frame buffer rather than
 * moved: moving a chain that one small read left mostly empty would pin a
 * kilobyte of it per byte of frame. */
#define MESSAGE_COPY_MAX 4096

static int
sink_message(void *ctx, struct evbuffer *in, size_t len)
{
	struct async_chat *chat = ctx;
	struct evbuffer_iovec v[8];
	int n, i;

	if (len <= MESSAGE_COPY_MAX &&
	    (n = evbuffer_peek(in, (ev_ssize_t)len, NULL, v, 8)) <= 8) {
		size_t done = 0;

		for (i = 0; i < n && done < len; i++) {
			size_t piece = v[i].iov_len < len - done ?
			    v[i].iov_len : len - done;

			if (evbuffer_add(chat->incoming, v[i].iov_base,
				piece) < 0)
				break;
			done += piece;
		}
		evbuffer_drain(in, done);
		return 0; /* fewer than len: out of memory */
	}
	/* Big runs move libevent's chains: no copy. */
	evbuffer_remove_buffer(in, chat->incoming, len);
	return 0;
}

/* The framer's fast path: frame bytes as pointers into the input. */
static int
bytes_collect(void *ctx, const void *p, size_t n)
{
	struct async_chat *chat = ctx;

	chat->h->collect_incoming_data(chat, p, n, chat->arg);
	return must_stop(chat);
}

static int
bytes_message(void *ctx, const void *p, size_t n)
{
	struct async_chat *chat = ctx;

	return evbuffer_add(chat->incoming, p, n) < 0 ? -1 : 0;
}

static int
sink_found(void *ctx)
{
	struct async_chat *chat = ctx;

	if (chat->h->found_terminator != NULL)
		chat->h->found_terminator(chat, chat->arg);
	return must_stop(chat);
}

static const struct framer_sink collect_sink = {
	sink_collect, sink_found, bytes_collect
};
static const struct framer_sink message_sink = {
	sink_message, sink_found, bytes_message
};

static void
read_stopped(struct async_chat *chat, enum framer_status st)
{
	if (chat->closed)
		return;
	if (st == FRAMER_TOO_LONG) {
		chat->too_long = 1;
		bufferevent_disable(chat->bev, EV_READ);
		async_chat__fail(chat, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	} else if (st == FRAMER_NOMEM) {
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
	}
}

/* Frame the input; at EOF, or on a read error (err != 0), also hand over
 * the held-back bytes.  Returns 1 when every byte has been framed. */
static int
frame_input(struct async_chat *chat, int at_end)
{
	const struct framer_sink *sink = chat->h->collect_incoming_data ?
	    &collect_sink : &message_sink;
	struct evbuffer *in = bufferevent_get_input(chat->bev);
	enum framer_status st;

	if (chat->reading || chat->paused || chat->too_long || chat->closed)
		return 0;
	chat->reading = 1;
	do {
		if (at_end)
			st = async_chat__framer_finish(&chat->fr, in, sink, chat);
		else
			st = async_chat__framer_feed(&chat->fr, in, sink, chat);
		/* Stopped with the channel neither closed nor paused: a
		 * callback discarded the input.  Frame what is there now
		 * (usually nothing), so that a pending EOF is not lost. */
	} while (st == FRAMER_STOPPED && !must_stop(chat));
	chat->reading = 0;
	if (st != FRAMER_IDLE) {
		read_stopped(chat, st);
		return 0;
	}
	return 1;
}

static void
handle_eof(struct async_chat *chat)
{
	if (!chat->eof || chat->eof_handled || chat->closed)
		return;
	if (!frame_input(chat, 1))
		return; /* paused: EOF is handled on resume */
	chat->eof_handled = 1;
	if (chat->h->handle_close != NULL)
		chat->h->handle_close(chat, chat->arg);
	else if (async_chat_close_when_done(chat) < 0)
		/* The close marker could not be queued: without it the
		 * channel would stay open for ever. */
		async_chat__fail(chat, ASYNC_CHAT_ERR_NOMEM);
}

static void
readcb(struct bufferevent *bev, void *ctx)
{
	struct async_chat *chat = ctx;

	(void)bev;
	async_chat__enter(chat);
	if (frame_input(chat, 0))
		handle_eof(chat);
	async_chat__leave(chat);
}

static void
writecb(struct bufferevent *bev, void *ctx)
{
	struct async_chat *chat = ctx;

	(void)bev;
	async_chat__enter(chat);
	async_chat__output_refill(chat, 1);
	async_chat__leave(chat);
}

static void
eventcb(struct bufferevent *bev, short what, void *ctx)
{
	struct async_chat *chat = ctx;
	int err = EVUTIL_SOCKET_ERROR();

	async_chat__enter(chat);
	if (what & BEV_EVENT_CONNECTED) {
		chat->connected = 1;
		chat->connecting = 0;
		if (chat->h->handle_connect != NULL)
			chat->h->handle_connect(chat, chat->arg);
		/* Data pushed while connecting may wait behind a producer. */
		async_chat__output_refill(chat, 1);
	} else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING) &&
	    chat->files) {
		/* A socket write that wrote nothing: a file pushed with
		 * async_chat_push_file ended before its range did.  (A TLS
		 * bufferevent reports the peer's close_notify met while
		 * writing this way too; without files it is the peer's EOF.) */
		async_chat__fail(chat, ASYNC_CHAT_ERR_PRODUCER);
	} else if (what & BEV_EVENT_EOF) {
		chat->eof = 1;
		if (frame_input(chat, 0))
			handle_eof(chat);
	} else if (chat->in_connect && (what & BEV_EVENT_ERROR)) {
		/* Raised inside async_chat_connect*() (a lookup without an
		 * evdns_base fails at once): report it from the loop, so the
		 * channel outlives the call that the application made. */
		chat->pending_error = err;
		bufferevent_trigger_event(bev, BEV_EVENT_ERROR,
		    BEV_TRIG_DEFER_CALLBACKS);
	} else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
		if (chat->pending_error != 0) {
			err = chat->pending_error;
			chat->pending_error = 0;
		}
		if (what & BEV_EVENT_TIMEOUT)
			err = ETIMEDOUT;
		else if (bufferevent_socket_get_dns_error(bev) != 0) {
			chat->dns_error = bufferevent_socket_get_dns_error(bev);
			err = ASYNC_CHAT_ERR_DNS;
		} else if (err == 0)
			err = ASYNC_CHAT_ERR_UNKNOWN;
		if (!(what & BEV_EVENT_TIMEOUT)) {
			chat->connected = 0;
			chat->connecting = 0;
		}
		/* Nothing received is lost: frame what came before the
		 * error, held-back bytes included, then report it. */
		if ((what & BEV_EVENT_READING) && !(what & BEV_EVENT_TIMEOUT))
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
	chat->connected = fd >= 0;
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
		chat->connected = 1;
	return chat;
}

/* Whether a connect may start: none made or under way. */
static int
can_connect(const struct async_chat *chat)
{
	if (chat->connected || chat->connecting) {
		errno = chat->connected ? EISCONN : EALREADY;
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
		chat->connecting = 0;
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
	chat->in_connect = chat->connecting = 1;
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
	chat->in_connect = chat->connecting = 1;
	return connect_started(chat, bufferevent_socket_connect_hostname(
	    chat->bev, dns_base, family, host, port));
}

int
async_chat_dns_error(const struct async_chat *chat)
{
	return chat != NULL ? chat->dns_error : 0;
}

/*
 * Terminators
 */

/* Bytes held back or left unread under the old terminator must be looked
 * at again under the new one even if no more data comes. */
static void
rescan_later(struct async_chat *chat)
{
	if (!chat->reading && !chat->paused && !chat->too_long &&
	    evbuffer_get_length(bufferevent_get_input(chat->bev)) > 0)
		bufferevent_trigger(chat->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

int
async_chat_set_terminator(struct async_chat *chat, const void *term,
    size_t len)
{
	CHECK(chat);
	if (async_chat__framer_set_string(&chat->fr, term, len) < 0)
		return -1;
	rescan_later(chat);
	return 0;
}

int
async_chat_set_terminator_count(struct async_chat *chat, uint64_t count)
{
	CHECK(chat);
	async_chat__framer_set_count(&chat->fr, count);
	rescan_later(chat);
	return 0;
}

int
async_chat_set_terminator_none(struct async_chat *chat)
{
	CHECK(chat);
	async_chat__framer_set_none(&chat->fr);
	rescan_later(chat);
	return 0;
}

int
async_chat_set_terminator_line(struct async_chat *chat)
{
	CHECK(chat);
	async_chat__framer_set_line(&chat->fr);
	rescan_later(chat);
	return 0;
}

int
async_chat_set_terminators(struct async_chat *chat, const void *const *terms,
    const size_t *lens, size_t n)
{
	CHECK(chat);
	if (async_chat__framer_set_any(&chat->fr, terms, lens, n) < 0)
		return -1;
	rescan_later(chat);
	return 0;
}

int
async_chat_get_terminator(const struct async_chat *chat,
    struct async_chat_terminator *out)
{
	CHECK(chat);
	if (out == NULL) {
		errno = EINVAL;
		return -1;
	}
	async_chat__framer_get(&chat->fr, out);
	return 0;
}

int
async_chat_matched_terminator(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	return chat->fr.matched;
}

int
async_chat_set_max_frame(struct async_chat *chat, uint64_t max)
{
	CHECK(chat);
	chat->fr.max_frame = max;
	return 0;
}

struct evbuffer *
async_chat_incoming(struct async_chat *chat)
{
	if (chat == NULL || chat->closed) {
		errno = chat == NULL ? EINVAL : ENOTCONN;
		return NULL;
	}
	if (chat->incoming == NULL && (chat->incoming = evbuffer_new()) == NULL)
		errno = ENOMEM;
	return chat->incoming;
}

int
async_chat_discard_buffers(struct async_chat *chat)
{
	struct evbuffer *out;

	CHECK(chat);
	async_chat__enter(chat);
	async_chat__framer_discard(&chat->fr);
	evbuffer_drain(bufferevent_get_input(chat->bev),
	    evbuffer_get_length(bufferevent_get_input(chat->bev)));
	if (chat->incoming != NULL)
		evbuffer_drain(chat->incoming,
		    evbuffer_get_length(chat->incoming));
	out = bufferevent_get_output(chat->bev);
	if (evbuffer_drain(out, evbuffer_get_length(out)) < 0) {
		/* A socket bufferevent keeps the front of its output
		 * frozen except while it writes. */
		evbuffer_unfreeze(out, 1);
		evbuffer_drain(out, evbuffer_get_length(out));
		evbuffer_freeze(out, 1);
	}
	async_chat__output_clear(chat, 1);
	if (!chat->closed)
		async_chat__output_refill(chat, 0);
	async_chat__leave(chat);
	return 0;
}

/*
 * Flow control and tunables
 */

int
async_chat_pause_reading(struct async_chat *chat)
{
	CHECK(chat);
	chat->paused = 1;
	bufferevent_disable(chat->bev, EV_READ);
	return 0;
}

int
async_chat_resume_reading(struct async_chat *chat)
{
	CHECK(chat);
	if (chat->eof_handled) {
		errno = EPIPE;
		return -1;
	}
	if (!chat->paused && !chat->too_long)
		return 0;
	chat->paused = 0;
	chat->too_long = 0;
	if (!chat->eof)
		bufferevent_enable(chat->bev, EV_READ);
	/* Frame what is already buffered (and a pending EOF) without
	 * waiting for the peer to send more.  Inside the framer the running
	 * scan simply goes on. */
	if (!chat->reading)
		bufferevent_trigger(chat->bev, EV_READ,
		    BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
	return 0;
}

int
async_chat_reading_paused(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	return chat->paused || chat->too_long;
}

int
async_chat_set_in_buffer_size(struct async_chat *chat, size_t size)
{
	CHECK(chat);
	if (size == 0 || size > ASYNC_CHAT_BUFFER_SIZE_MAX) {
		errno = EINVAL;
		return -1;
	}
	chat->in_buffer_size = size;
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
	chat->out_buffer_size = size;
	bufferevent_setwatermark(chat->bev, EV_WRITE, size, 0);
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
	return chat->connected;
}
