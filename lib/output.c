/*
 * output.c - the output side of a channel: the FIFO of pushed data,
 * producers and close/shutdown markers, its fill of the bufferevent's
 * output, and the built-in producers (simple buffer, file range).  The
 * fill reports what it met (a close marker reached, a failure, the queue
 * drained) and channel.c acts on it.
 *
 * Pushed bytes go straight into the bufferevent's output buffer while
 * nothing waits in the FIFO; behind a producer they wait in a FIFO_DATA
 * entry so that call order is kept.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/buffer.h>

#include "asynchat-internal.h"

static const struct async_chat_producer_ops file_ops;

/* A length the output can hold: libevent counts in ev_ssize_t.  Copied
 * bytes exist in memory, so only references, which can name the same
 * bytes many times, could make async_chat_output_pending() wrap: they
 * are checked against what is pending too (with_pending). */
static int
length_check(const struct async_chat *chat, size_t len, int with_pending)
{
	if (len > (size_t)EV_SSIZE_MAX ||
	    (with_pending && len > (size_t)EV_SSIZE_MAX -
		    async_chat_output_pending(chat))) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

static int
push_check(const struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return -1;
	}
	if (chat->close_queued || chat->shut_queued) {
		errno = EPIPE;
		return -1;
	}
	return 0;
}

static void
entry_append(struct async_chat *chat, struct fifo_entry *e)
{
	e->next = NULL;
	if (chat->tail != NULL)
		chat->tail->next = e;
	else
		chat->head = e;
	chat->tail = e;
}

static void
entry_pop(struct async_chat *chat)
{
	struct fifo_entry *e = chat->head;

	chat->head = e->next;
	if (chat->head == NULL)
		chat->tail = NULL;
}

/* Release what an unlinked entry holds. */
static void
entry_free(struct async_chat *chat, struct fifo_entry *e)
{
	switch (e->kind) {
	case FIFO_DATA:
		evbuffer_free(e->u.buf);
		break;
	case FIFO_PRODUCER:
		if (e->u.producer.ops->free != NULL)
			e->u.producer.ops->free(e->u.producer.ctx);
		break;
	case FIFO_CLOSE:
	case FIFO_SHUTDOWN:
		break;
	}
	free(e);
}

/*
 * The flat stage: pushes of up to STAGE_PUSH_MAX bytes with nothing
 * queued are copied into one growing array, which the direct write
 * sends with one system call (or which moves to an evbuffer with one
 * add).  It follows whatever wbuf holds.
 */
#define STAGE_MIN 2048
#define STAGE_MAX 65536
#define STAGE_PUSH_MAX 4096

int
async_chat__stage_to(struct async_chat *chat, struct evbuffer *buf)
{
	struct async_chat__ext *ext = chat->ext;

	if (ext == NULL || ext->stage_len == 0)
		return 0;
	if (evbuffer_add(buf, ext->stage, ext->stage_len) < 0) {
		errno = ENOMEM;
		return -1;
	}
	ext->stage_len = 0;
	return 0;
}

/* Room for n (at most STAGE_PUSH_MAX) more bytes at the end of the
 * stage, or NULL (errno ENOMEM) for the caller to fall back to wbuf. */
static char *
stage_room(struct async_chat *chat, size_t n)
{
	struct async_chat__ext *ext = async_chat__get_ext(chat);
	size_t cap;
	char *p;

	if (ext == NULL)
		return NULL;
	if (ext->stage_cap - ext->stage_len >= n)
		return ext->stage + ext->stage_len;
	if (ext->stage_len + n > STAGE_MAX) {
		/* Full: its bytes go on to wbuf, and it starts again. */
		struct evbuffer *w = async_chat__staging(chat);

		if (w == NULL || async_chat__stage_to(chat, w) < 0)
			return NULL;
		if (ext->stage_cap >= n)
			return ext->stage;
	}
	cap = ext->stage_cap != 0 ? ext->stage_cap : STAGE_MIN;
	while (cap < ext->stage_len + n)
		cap *= 2;
	if ((p = realloc(ext->stage, cap)) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	ext->stage = p;
	ext->stage_cap = cap;
	return p + ext->stage_len;
}

/* Where pushed bytes go now: the staging buffer (moved to the output
 * when the outermost frame returns), or a FIFO_DATA entry at the tail
 * when something waits in the FIFO. */
static struct evbuffer *
push_target(struct async_chat *chat)
{
	struct fifo_entry *e;

	/* Set before the bytes go in: a bufferevent pair hands them to its
	 * partner, and may run the write callback, inside the add itself. */
	chat->output_busy = 1;
	if (chat->head == NULL) {
		struct evbuffer *w = async_chat__staging(chat);

		/* The stage's bytes come first. */
		if (w != NULL && async_chat__stage_to(chat, w) < 0)
			return NULL;
		return w;
	}
	if (chat->tail->kind == FIFO_DATA)
		return chat->tail->u.buf;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return NULL;
	e->kind = FIFO_DATA;
	e->u.buf = evbuffer_new();
	if (e->u.buf == NULL) {
		free(e);
		return NULL;
	}
	entry_append(chat, e);
	return e->u.buf;
}

/* Finish a push whose add (result rc) ran between async_chat__enter()
 * and here: let go of the channel, which the pair's write callback, run
 * inside the add, may have closed. */
static int
push_done(struct async_chat *chat, int rc)
{
	if (rc == 0 && chat->ext != NULL && chat->ext->high != 0)
		async_chat__check_high(chat);
	if (async_chat__leave(chat) == 0 && rc < 0) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

static int add_framed(struct evbuffer *target, const unsigned char *hdr,
    size_t n, const void *data, size_t len);

/* The rest of a push whose front a direct write sent: it is part of the
 * stream already, so a failure to queue it is the channel's
 * (ASYNC_CHAT_ERR_NOMEM to handle_error from the loop), not the call's. */
static int
push_rest(struct async_chat *chat, const unsigned char *hdr, size_t n,
    const void *data, size_t len)
{
	struct evbuffer *target = push_target(chat);

	async_chat__enter(chat);
	if (target == NULL || add_framed(target, hdr, n, data, len) < 0)
		async_chat__stream_broken(chat, ASYNC_CHAT_ERR_NOMEM);
	return push_done(chat, 0);
}

/* The general push: outside callbacks, a full stage, queued entries. */
static int ASYNC_CHAT__NOINLINE
push_slow(struct async_chat *chat, const void *data, size_t len)
{
	struct evbuffer *target;
	char *p;

	if (push_check(chat) < 0 || length_check(chat, len, 0) < 0)
		return -1;
	if (data == NULL && len > 0) {
		errno = EINVAL;
		return -1;
	}
	if (len == 0)
		return 0;
	if (chat->head == NULL && len <= STAGE_PUSH_MAX &&
	    (p = stage_room(chat, len)) != NULL) {
		chat->output_busy = 1;
		memcpy(p, data, len);
		chat->ext->stage_len += len;
		async_chat__enter(chat);
		return push_done(chat, 0);
	}
	if (len > STAGE_PUSH_MAX && chat->depth > 0) {
		/* A big push inside a read alone in the loop: what the
		 * socket takes at once is not copied. */
		size_t sent = async_chat__push_direct(chat, NULL, 0, data, len);

		if (sent == len)
			return 0;
		if (sent > 0)
			return push_rest(chat, NULL, 0,
			    (const char *)data + sent, len - sent);
	}
	target = push_target(chat);
	if (target == NULL) {
		errno = ENOMEM;
		return -1;
	}
	async_chat__enter(chat);
	return push_done(chat, evbuffer_add(target, data, len));
}

int
async_chat_push(struct async_chat *chat, const void *data, size_t len)
{
	struct async_chat__ext *ext;

	/* Inside a callback, with room in the stage: a copy.  (The
	 * outermost frame moves the bytes on when it returns.) */
	if (chat != NULL && (ext = chat->ext) != NULL && chat->depth > 0 &&
	    chat->head == NULL && data != NULL && len > 0 &&
	    len <= ext->stage_cap - ext->stage_len && !chat->closed &&
	    !chat->close_queued && !chat->shut_queued) {
		memcpy(ext->stage + ext->stage_len, data, len);
		ext->stage_len += len;
		chat->output_busy = 1;
		if (ext->high != 0)
			async_chat__check_high(chat);
		return 0;
	}
	return push_slow(chat, data, len);
}

/* Add the header and the payload to target in one commit, so that a
 * frame is queued whole or not at all. */
static int
add_framed(struct evbuffer *target, const unsigned char *hdr, size_t n,
    const void *data, size_t len)
{
	struct evbuffer_iovec v;

	if (evbuffer_reserve_space(target, (ev_ssize_t)(n + len), &v, 1) < 1)
		return -1;
	if (n > 0)
		memcpy(v.iov_base, hdr, n);
	if (len > 0)
		memcpy((char *)v.iov_base + n, data, len);
	v.iov_len = n + len;
	return evbuffer_commit_space(target, &v, 1);
}

int
async_chat_push_length_prefixed(struct async_chat *chat,
    const struct async_chat_length_field *spec, const void *data, size_t len)
{
	unsigned char small[64], *hdr = small;
	struct evbuffer *target;
	ev_ssize_t n;
	char *p;
	int rc;

	if (push_check(chat) < 0)
		return -1;
	if (data == NULL && len > 0) {
		errno = EINVAL;
		return -1;
	}
	if (spec == NULL) {
		/* The channel's own spec, checked when it was set. */
		if (chat->fr.kind != ASYNC_CHAT_TERM_LENGTH) {
			errno = EINVAL;
			return -1;
		}
		spec = &chat->fr.lf->spec;
	} else if (async_chat__length_field_check(spec) < 0) {
		return -1;
	}
	if (len > (size_t)EV_SSIZE_MAX - spec->offset - 10) {
		errno = EMSGSIZE;
		return -1;
	}
	if (chat->head == NULL && len <= STAGE_PUSH_MAX &&
	    spec->offset <= STAGE_PUSH_MAX &&
	    (p = stage_room(chat, spec->offset + 10 + len)) != NULL) {
		/* The header is encoded in place, the payload after it. */
		if ((n = async_chat__length_field_encode(spec, len, p,
			 spec->offset + 10)) < 0)
			return -1;
		if (len > 0)
			memcpy(p + n, data, len);
		chat->output_busy = 1;
		chat->ext->stage_len += (size_t)n + len;
		async_chat__enter(chat);
		return push_done(chat, 0);
	}
	if (spec->offset + 10 > sizeof(small) &&
	    (hdr = malloc(spec->offset + 10)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	n = async_chat__length_field_encode(spec, len, hdr, spec->offset + 10);
	if (n >= 0 && len > STAGE_PUSH_MAX && chat->depth > 0) {
		/* As in push_slow(): what the socket takes is not copied. */
		size_t sent = async_chat__push_direct(chat, hdr, (size_t)n,
		    data, len);

		if (sent > 0) {
			size_t hs = sent < (size_t)n ? sent : (size_t)n;

			rc = sent == (size_t)n + len ? 0 :
			    push_rest(chat, hdr + hs, (size_t)n - hs,
				(const char *)data + (sent - hs),
				len - (sent - hs));
			if (hdr != small)
				free(hdr);
			return rc;
		}
	}
	if (n < 0 || (target = push_target(chat)) == NULL) {
		int saved = n < 0 ? errno : ENOMEM;

		if (hdr != small)
			free(hdr);
		errno = saved;
		return -1;
	}
	async_chat__enter(chat);
	rc = add_framed(target, hdr, (size_t)n, data, len);
	if (hdr != small)
		free(hdr);
	return push_done(chat, rc);
}

/* Moving a chain per small buffer would make the output a list of tiny
 * chains, written an iovec each: copy small contents onto the end of the
 * target instead (one copy, usually into the chain already there). */
#define PUSH_COPY_MAX 1024 /* bytes, inclusive */

static int
add_buffer(struct evbuffer *target, struct evbuffer *buf, size_t len)
{
	struct evbuffer_iovec v[4];
	int n, i;

	if (len > PUSH_COPY_MAX ||
	    (n = evbuffer_peek(buf, -1, NULL, v, 4)) > 4 ||
	    evbuffer_expand(target, len) < 0)
		return evbuffer_add_buffer(target, buf);
	for (i = 0; i < n; i++)
		if (evbuffer_add(target, v[i].iov_base, v[i].iov_len) < 0)
			return -1; /* not after the expand */
	return evbuffer_drain(buf, len);
}

/* Copy buf's len bytes, contiguous at d, to the end of the stage (which
 * has room) and drain them.  A frozen buffer cannot be drained: no
 * callback of its ran, it keeps its content and the stage takes the copy
 * back (-1). */
static inline int
stage_take(struct async_chat__ext *ext, struct evbuffer *buf,
    const unsigned char *d, size_t len)
{
	memcpy(ext->stage + ext->stage_len, d, len);
	ext->stage_len += len;
	if (evbuffer_drain(buf, len) < 0) {
		ext->stage_len -= len;
		return -1;
	}
	return 0;
}

/* The general push_buffer. */
static int ASYNC_CHAT__NOINLINE
push_buffer_slow(struct async_chat *chat, struct evbuffer *buf)
{
	struct evbuffer *target;
	size_t len;

	if (push_check(chat) < 0)
		return -1;
	if (buf == NULL) {
		errno = EINVAL;
		return -1;
	}
	len = evbuffer_get_length(buf);
	if (len == 0)
		return 0;
	if (length_check(chat, len, 0) < 0)
		return -1;
	if (chat->head == NULL && len <= STAGE_PUSH_MAX &&
	    stage_room(chat, len) != NULL) {
		/* A small buffer is copied: its chains are freed now. */
		const unsigned char *d;

		chat->output_busy = 1;
		async_chat__enter(chat);
		if ((d = evbuffer_pullup(buf, (ev_ssize_t)len)) == NULL)
			return push_done(chat, -1);
		return push_done(chat, stage_take(chat->ext, buf, d, len));
	}
	target = push_target(chat);
	if (target == NULL) {
		errno = ENOMEM;
		return -1;
	}
	async_chat__enter(chat);
	return push_done(chat, add_buffer(target, buf, len));
}

int
async_chat_push_buffer(struct async_chat *chat, struct evbuffer *buf)
{
	struct async_chat__ext *ext;
	const unsigned char *d;
	size_t len;

	/* Inside a callback, a small buffer with room for it in the stage:
	 * a copy and a drain.  No frame of its own: the caller's keeps the
	 * channel alive should a callback of buf's close it, and the
	 * outermost frame moves the bytes on. */
	if (chat != NULL && (ext = chat->ext) != NULL && chat->depth > 0 &&
	    chat->head == NULL && buf != NULL && !chat->closed &&
	    !chat->close_queued && !chat->shut_queued &&
	    (len = evbuffer_get_length(buf)) - 1 < STAGE_PUSH_MAX &&
	    len <= ext->stage_cap - ext->stage_len &&
	    (d = evbuffer_pullup(buf, (ev_ssize_t)len)) != NULL) {
		if (stage_take(ext, buf, d, len) < 0) {
			errno = ENOMEM;
			return -1;
		}
		chat->output_busy = 1;
		if (ext->high != 0 && !chat->closed)
			async_chat__check_high(chat);
		return 0;
	}
	return push_buffer_slow(chat, buf);
}

/*
 * References.  libevent runs a reference's cleanup when it frees the
 * chain, which can be inside evbuffer_drain() on this channel's output,
 * where no API call is safe.  So the channel runs the application's
 * cleanup later, from its deferred callback, or when it is released.  A
 * chain can outlive the channel (a bufferevent pair hands chains to its
 * partner): the shared owner then says the channel is gone, and the
 * cleanup runs at once.
 */
struct async_chat__ref_owner {
	struct async_chat *chat; /* NULL once the channel is released */
	size_t refs;             /* the channel's, plus one per reference */
	struct async_chat__ref *done, *done_tail; /* cleanups to run */
};

struct async_chat__ref {
	struct async_chat__ref *next;
	struct async_chat__ref_owner *owner;
	void (*cleanup)(const void *data, size_t len, void *arg);
	void *arg;
	const void *data;
	size_t len;
};

static void
owner_release(struct async_chat__ref_owner *owner)
{
	if (--owner->refs == 0)
		free(owner);
}

static void
ref_run(struct async_chat__ref *r)
{
	struct async_chat__ref_owner *owner = r->owner;

	if (r->cleanup != NULL)
		r->cleanup(r->data, r->len, r->arg);
	free(r);
	owner_release(owner);
}

static void
ref_freed(const void *data, size_t len, void *extra)
{
	struct async_chat__ref *r = extra;
	struct async_chat *chat = r->owner->chat;

	r->data = data;
	r->len = len;
	if (chat == NULL) {
		ref_run(r);
		return;
	}
	r->next = NULL;
	if (r->owner->done_tail != NULL)
		r->owner->done_tail->next = r;
	else
		r->owner->done = r;
	r->owner->done_tail = r;
	async_chat__defer(chat, DEFER_CLEANUP);
}

void
async_chat__run_cleanups(struct async_chat *chat)
{
	struct async_chat__ref_owner *owner =
	    chat->ext != NULL ? chat->ext->ref_owner : NULL;
	struct async_chat__ref *r;

	if (owner == NULL)
		return;
	/* A cleanup may push references and so add to the list. */
	owner->refs++;
	while ((r = owner->done) != NULL) {
		owner->done = r->next;
		if (owner->done == NULL)
			owner->done_tail = NULL;
		ref_run(r);
	}
	owner_release(owner);
}

void
async_chat__release_refs(struct async_chat *chat)
{
	if (chat->ext == NULL || chat->ext->ref_owner == NULL)
		return;
	chat->ext->ref_owner->chat = NULL;
	owner_release(chat->ext->ref_owner);
	chat->ext->ref_owner = NULL;
}

int
async_chat_push_reference(struct async_chat *chat, const void *data,
    size_t len, void (*cleanup)(const void *data, size_t len, void *arg),
    void *cleanup_arg)
{
	struct evbuffer *target;
	struct async_chat__ref *r;
	int rc;

	if (push_check(chat) < 0 || length_check(chat, len, 1) < 0)
		return -1;
	if (data == NULL && len > 0) {
		errno = EINVAL;
		return -1;
	}
	if (len == 0) {
		if (cleanup != NULL)
			cleanup(data, len, cleanup_arg);
		return 0;
	}
	if (async_chat__get_ext(chat) == NULL)
		return -1;
	if (chat->ext->ref_owner == NULL) {
		chat->ext->ref_owner = calloc(1, sizeof(*chat->ext->ref_owner));
		if (chat->ext->ref_owner == NULL) {
			errno = ENOMEM;
			return -1;
		}
		chat->ext->ref_owner->chat = chat;
		chat->ext->ref_owner->refs = 1;
	}
	r = malloc(sizeof(*r));
	if (r == NULL || (target = push_target(chat)) == NULL) {
		free(r);
		errno = ENOMEM;
		return -1;
	}
	r->owner = chat->ext->ref_owner;
	r->cleanup = cleanup;
	r->arg = cleanup_arg;
	r->owner->refs++;
	async_chat__enter(chat);
	rc = evbuffer_add_reference(target, data, len, ref_freed, r);
	if (rc < 0) {
		r->owner->refs--;
		free(r);
	}
	return push_done(chat, rc);
}

int
async_chat_push_vprintf(struct async_chat *chat, const char *fmt, va_list ap)
{
	struct evbuffer *target;
	va_list copy;
	int n, len;

	if (push_check(chat) < 0)
		return -1;
	if (fmt == NULL) {
		errno = EINVAL;
		return -1;
	}
	/* Measure first, so that a failure queues nothing. */
	va_copy(copy, ap);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		return -1;
	if (len == 0)
		return 0;
	if ((target = push_target(chat)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	async_chat__enter(chat);
	n = evbuffer_add_vprintf(target, fmt, ap);
	if (push_done(chat, n == len ? 0 : -1) < 0)
		return -1;
	return n;
}

int
async_chat_push_printf(struct async_chat *chat, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = async_chat_push_vprintf(chat, fmt, ap);
	va_end(ap);
	return n;
}

int
async_chat_resume_producer(struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return -1;
	}
	if (chat->head != NULL && chat->head->kind == FIFO_PRODUCER &&
	    chat->head->deferred) {
		chat->head->deferred = 0;
		async_chat__defer(chat, DEFER_WRITE);
	}
	return 0;
}

/*
 * Producers
 */

static int
queue_producer(struct async_chat *chat,
    const struct async_chat_producer_ops *ops, void *ctx)
{
	struct fifo_entry *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		errno = ENOMEM;
		return -1;
	}
	e->kind = FIFO_PRODUCER;
	e->u.producer.ops = ops;
	e->u.producer.ctx = ctx;
	entry_append(chat, e);
	chat->output_busy = 1;
	if (chat->ext != NULL) {
		/* A file counts at once: the high-water mark may pass. */
		async_chat__enter(chat);
		async_chat__check_high(chat);
		if (async_chat__leave(chat))
			return 0;
	}
	async_chat__refill(chat, 0); /* may release the channel: touch it no more */
	return 0;
}

int
async_chat_push_with_producer(struct async_chat *chat,
    const struct async_chat_producer_ops *ops, void *ctx)
{
	if (push_check(chat) < 0)
		return -1;
	if (ops == NULL || ops->more == NULL) {
		errno = EINVAL;
		return -1;
	}
	return queue_producer(chat, ops, ctx);
}

struct simple_producer {
	size_t len, pos, piece;
	unsigned char data[];
};

static int
simple_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct simple_producer *p = ctx;
	size_t n = p->len - p->pos;

	(void)size_hint;
	if (n > p->piece)
		n = p->piece;
	if (n == 0)
		return 0;
	if (evbuffer_add(out, p->data + p->pos, n) < 0)
		return -1;
	p->pos += n;
	return 0;
}

static const struct async_chat_producer_ops simple_ops = {
	simple_more, free
};

int
async_chat_push_simple_producer(struct async_chat *chat, const void *data,
    size_t len, size_t buffer_size)
{
	struct simple_producer *p;

	if (push_check(chat) < 0)
		return -1;
	if ((data == NULL && len > 0) ||
	    buffer_size > ASYNC_CHAT_BUFFER_SIZE_MAX ||
	    len > SIZE_MAX - sizeof(*p)) {
		errno = EINVAL;
		return -1;
	}
	p = malloc(sizeof(*p) + len);
	if (p == NULL) {
		errno = ENOMEM;
		return -1;
	}
	if (len > 0)
		memcpy(p->data, data, len);
	p->len = len;
	p->pos = 0;
	p->piece = buffer_size != 0 ? buffer_size : 512;
	if (queue_producer(chat, &simple_ops, p) < 0) {
		free(p);
		return -1;
	}
	return 0;
}

/* A file range: handed to the output buffer whole when its turn comes,
 * so that a socket bufferevent sends it with sendfile(2). */
struct file_producer {
	int fd;
	int sent;
	int copy;      /* not a plain socket: read the file as it goes */
	ev_off_t offset, length;
	uint64_t unsent; /* bytes not handed to the output yet, as pushed */
};

/* Anything but a channel's own socket bufferevent copies the file: libevent
 * would map it when it is queued, so a file cut short later would send
 * zeros, or fault, instead of failing. */
static int
file_copy_more(struct file_producer *p, struct evbuffer *out, size_t hint)
{
	struct evbuffer_iovec v;
	ssize_t n;

	if (p->length == 0)
		return 0;
	if (p->length > 0 && (uint64_t)p->length < hint)
		hint = (size_t)p->length;
	if (evbuffer_reserve_space(out, (ev_ssize_t)hint, &v, 1) < 1)
		return -1;
	if (v.iov_len > hint)
		v.iov_len = hint;
	do
		n = pread(p->fd, v.iov_base, v.iov_len, (off_t)p->offset);
	while (n < 0 && errno == EINTR);
	if (n < 0 || (n == 0 && p->length > 0))
		return -1; /* an error, or the file ended before the range */
	if (n == 0)
		return 0; /* length -1: the end of the file */
	v.iov_len = (size_t)n;
	if (evbuffer_commit_space(out, &v, 1) < 0)
		return -1;
	p->offset += n;
	p->unsent = p->unsent > (uint64_t)n ? p->unsent - (uint64_t)n : 0;
	if (p->length > 0)
		p->length -= n;
	return 0;
}

static int
file_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct file_producer *p = ctx;
	ev_off_t length = p->length;

	if (p->copy)
		return file_copy_more(p, out, size_hint);
	if (p->sent)
		return 0;
	if (length == -1) {
		/* libevent reads -1 as st_size bytes from the offset, past
		 * the end of the file when the offset is not 0. */
		struct stat st;

		if (fstat(p->fd, &st) < 0)
			return -1;
		if (st.st_size <= p->offset)
			return 0; /* nothing to send: exhausted */
		length = st.st_size - p->offset;
	}
	if (evbuffer_add_file(out, p->fd, p->offset, length) < 0)
		return -1;
	p->sent = 1;
	p->unsent = 0;
	p->fd = -1; /* the evbuffer owns and closes it now */
	return 0;
}

static void
file_free(void *ctx)
{
	struct file_producer *p = ctx;

	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

static const struct async_chat_producer_ops file_ops = {
	file_more, file_free
};

int
async_chat_push_file(struct async_chat *chat, int fd, ev_off_t offset,
    ev_off_t length)
{
	struct file_producer *p;
	struct stat st;
	int err = 0;

	if (fd < 0 || fstat(fd, &st) < 0)
		err = EBADF;
	else if (offset < 0 || length < -1 || !S_ISREG(st.st_mode) ||
	    offset > st.st_size ||
	    (length != -1 && length > st.st_size - offset))
		err = EINVAL; /* sendfile would stall at the end of file */
	else if (push_check(chat) < 0)
		err = errno;
	if (err == 0 && (p = malloc(sizeof(*p))) == NULL)
		err = ENOMEM;
	if (err != 0) {
		if (fd >= 0)
			close(fd);
		errno = err;
		return -1;
	}
	chat->files = 1;
	p->fd = fd;
	p->sent = 0;
	/* libevent cannot map or send a segment ending past SIZE_MAX (4 GiB
	 * on 32-bit systems): such a range is read as it goes too. */
	p->copy = !chat->own_socket ||
	    (uint64_t)(length == -1 ? st.st_size : offset + length) >
		(uint64_t)SIZE_MAX;
	p->offset = offset;
	p->length = length;
	p->unsent = (uint64_t)(length == -1 ? st.st_size - offset : length);
	if (length == 0) {
		file_free(p);
		return 0;
	}
	if (queue_producer(chat, &file_ops, p) < 0) {
		file_free(p);
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/*
 * Markers
 */

static int
queue_marker(struct async_chat *chat, enum fifo_kind kind)
{
	struct fifo_entry *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		errno = ENOMEM;
		return -1;
	}
	e->kind = kind;
	entry_append(chat, e);
	async_chat__refill(chat, 0); /* may release the channel: touch it no more */
	return 0;
}

int
async_chat_close_when_done(struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return -1;
	}
	if (chat->close_queued)
		return 0;
	/* Set before queueing: the channel must not be touched after the
	 * refill (see async_chat__refill()). */
	chat->close_queued = 1;
	if (queue_marker(chat, FIFO_CLOSE) < 0) {
		chat->close_queued = 0;
		return -1;
	}
	return 0;
}

int
async_chat_shutdown_when_done(struct async_chat *chat)
{
	if (chat == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (chat->closed) {
		errno = ENOTCONN;
		return -1;
	}
	if (chat->shut_queued)
		return 0;
	if (chat->close_queued) {
		errno = EPIPE;
		return -1;
	}
	chat->shut_queued = 1;
	if (queue_marker(chat, FIFO_SHUTDOWN) < 0) {
		chat->shut_queued = 0;
		return -1;
	}
	return 0;
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

/* Shut the sending side down; 0 or the errno of shutdown(2). */
static int
shut_down(struct async_chat *chat)
{
	evutil_socket_t fd = bufferevent_getfd(chat->bev);

	if (fd >= 0)
		return shutdown(fd, SHUT_WR) < 0 ? errno : 0;
	if (async_chat__tell_partner_eof(chat) < 0)
		bufferevent_flush(chat->bev, EV_WRITE, BEV_FINISHED);
	return 0;
}

size_t
async_chat_output_pending(const struct async_chat *chat)
{
	const struct fifo_entry *e;
	size_t n;

	if (chat == NULL || chat->closed)
		return 0;
	n = evbuffer_get_length(bufferevent_get_output(chat->bev)) +
	    async_chat__staged(chat);
	/* Data waits in the FIFO only behind producers: few entries.  Files
	 * count from their push, as the bytes they will add. */
	for (e = chat->head; e != NULL; e = e->next) {
		if (e->kind == FIFO_DATA)
			n += evbuffer_get_length(e->u.buf);
		else if (e->kind == FIFO_PRODUCER &&
		    e->u.producer.ops == &file_ops)
			n += (size_t)((struct file_producer *)e->u.producer.ctx)
			         ->unsent;
	}
	return n;
}

/*
 * The FIFO
 */

void
async_chat__output_clear(struct async_chat *chat, int keep_markers)
{
	struct fifo_entry *e = chat->head, *next, *doomed = NULL;

	/* Unlink everything first: a producer's free() may push, discard
	 * or close, and must find the queue as it will be. */
	chat->head = chat->tail = NULL;
	for (; e != NULL; e = next) {
		next = e->next;
		if (keep_markers &&
		    (e->kind == FIFO_CLOSE || e->kind == FIFO_SHUTDOWN)) {
			entry_append(chat, e);
		} else {
			e->next = doomed;
			doomed = e;
		}
	}
	/* Free in queue order. */
	for (e = NULL; doomed != NULL; doomed = next) {
		next = doomed->next;
		doomed->next = e;
		e = doomed;
	}
	for (; e != NULL; e = next) {
		next = e->next;
		if (e->busy)
			e->dropped = 1; /* freed when its more() returns */
		else
			entry_free(chat, e);
	}
}

static void
count_added(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	(void)buf;
	*(size_t *)arg += info->n_added;
}

/* Pull one piece from the producer at the head.  Returns 0 to go on,
 * OUT_FULL when the output buffer has enough for now, or an error bit. */
static unsigned
pull_producer(struct async_chat *chat, struct fifo_entry *e,
    struct evbuffer *out)
{
	struct evbuffer_cb_entry *counter;
	size_t added = 0;
	int rc;

	if (evbuffer_get_length(out) >= chat->out_buffer_size)
		return OUT_FULL;
	/* Count what more() adds instead of comparing lengths: a
	 * bufferevent pair hands the bytes to its partner inside the add,
	 * so the output buffer can be as empty after a piece as before. */
	counter = evbuffer_add_cb(out, count_added, &added);
	if (counter == NULL)
		return OUT_NOMEM;
	e->busy = 1;
	rc = e->u.producer.ops->more(e->u.producer.ctx, out,
	    chat->out_buffer_size);
	e->busy = 0;
	evbuffer_remove_cb_entry(out, counter);
	if (e->dropped) {
		/* discard_buffers() or close() ran inside more(). */
		entry_free(chat, e);
		return 0;
	}
	if (rc == ASYNC_CHAT_PRODUCER_DEFERRED) {
		e->deferred = 1; /* until async_chat_resume_producer() */
		return OUT_FULL;
	}
	if (rc < 0 || added == 0) {
		entry_pop(chat);
		entry_free(chat, e);
		if (rc < 0)
			return OUT_PRODUCER;
	}
	return 0;
}

unsigned
async_chat__output_fill(struct async_chat *chat, int pull)
{
	struct evbuffer *out = bufferevent_get_output(chat->bev);
	struct fifo_entry *e;
	unsigned st = 0;

	if (chat->refilling || chat->closed)
		return 0;
	chat->refilling = 1;
	while (st == 0 && !chat->closed) {
		/* Staged bytes were pushed before anything still queued:
		 * pushes made with the queue empty (a producer's free(), a
		 * marker or producer queued inside more()) go first. */
		if (async_chat__staged(chat) > 0 &&
		    ((chat->ext->wbuf != NULL &&
			 evbuffer_add_buffer(out, chat->ext->wbuf) < 0) ||
			async_chat__stage_to(chat, out) < 0)) {
			st = OUT_NOMEM;
			break;
		}
		if ((e = chat->head) == NULL)
			break;
		if (e->kind == FIFO_DATA) {
			if (evbuffer_add_buffer(out, e->u.buf) < 0) {
				st = OUT_NOMEM;
				break;
			}
			entry_pop(chat);
			entry_free(chat, e);
		} else if (e->kind == FIFO_PRODUCER) {
			/* more() runs only when the caller allows it: not
			 * under an API call, where a producer that fails or
			 * closes the channel must not free it. */
			if (e->deferred)
				st = OUT_FULL; /* waits for its resume */
			else
				st = pull ? pull_producer(chat, e, out) :
					    OUT_MORE;
		} else if (evbuffer_get_length(out) > 0) {
			st = OUT_FULL; /* a marker waits for all before it */
		} else if (e->kind == FIFO_SHUTDOWN) {
			int err;

			entry_pop(chat);
			entry_free(chat, e);
			err = shut_down(chat);
			if (chat->ext != NULL && chat->ext->shut_fn != NULL) {
				chat->ext->shut_err = err;
				st = OUT_SHUT;
			}
		} else {
			st = OUT_CLOSE;
		}
	}
	chat->refilling = 0;
	/* A producer's free() may have pushed: its bytes wait in the stage. */
	if (!chat->closed && chat->head == NULL && chat->output_busy &&
	    evbuffer_get_length(out) == 0 && async_chat__staged(chat) == 0)
		st |= OUT_DRAINED;
	return st & ~(unsigned)OUT_FULL;
}
