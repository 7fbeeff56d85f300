/*
 * fuzz_channel.c - libFuzzer target: a libasynchat channel on one end of a
 * bufferevent pair, the fuzzer's peer on the other, both in one
 * event_base.  The input is a program of peer writes, terminator changes,
 * pushes, producers, markers, discards, pauses and closes, with the loop
 * run between steps; a tape read by the callbacks makes them act too.
 *
 * Checked: ASan and LSan (everything is freed at the end of each input),
 * handle_free exactly once, no callback after close, calls on a channel
 * closed inside a callback fail with ENOTCONN, the peer receives a prefix
 * of what was queued, in order (all of it where a close_when_done,
 * shutdown_when_done or handle_drain says so), and, while no discard or
 * untracked terminator change happened, the frames are the reference
 * model's (test/framer_model.c) for the bytes the peer sent.
 *
 * Input layout: flags, alphabet, tape length, tape, [script length,
 * script], [first terminator], program (the rest).
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "framer_model.h"

#define MAX_TERM 8
#define MAX_ALT 6
#define MAX_STEPS 64
#define MAX_SEGS 256
#define POOL_SIZE (64 * 1024)
/* Output queued and callback actions per input at most: a drain handler
 * that queues more each time would otherwise keep one turn of the loop
 * busy for ever. */
#define PUSH_BUDGET (256 * 1024)
#define ACTION_BUDGET 1000
#define PRODUCER_BUDGET 64

enum {
	/* BEV_OPT_DEFER_CALLBACKS asked for on the pair (libevent 2.1's
	 * bufferevent_pair_new() adds it anyway: pairs always defer) */
	F_DEFER = 1 << 0,
	F_MESSAGE = 1 << 1,  /* no collect handler: message mode */
	F_NO_CLOSE = 1 << 2, /* handle_close NULL: the default */
	F_NO_ERROR = 1 << 3, /* handle_error NULL: the default */
	F_ALPHA = 1 << 4,    /* peer bytes and terminators from few bytes */
	F_NO_DRAIN = 1 << 5, /* no handle_drain */
	F_TERM0 = 1 << 6,    /* a terminator before the first byte */
	F_SCRIPT = 1 << 7    /* found_terminator sets one from the script */
};

/* Where a callback runs, for the tape and for the model. */
enum ctx {
	CTX_APP, /* the program, outside any callback */
	CTX_COLLECT,
	CTX_FOUND,
	CTX_CLOSE,
	CTX_ERROR,
	CTX_DRAIN,
	CTX_PRODUCER
};

struct rd {
	const uint8_t *p;
	size_t n;
};

static uint8_t
rd_u8(struct rd *r)
{
	uint8_t b;

	if (r->n == 0)
		return 0;
	b = *r->p++;
	r->n--;
	return b;
}

/* A span of the output the peer must receive in order.  A producer's
 * span stays open while the producer may still add to it. */
struct seg {
	struct evbuffer *buf;
	int open;
};

struct fz;

struct producer {
	struct fz *z;
	int seg; /* -1: what it makes is not tracked (after a discard) */
	unsigned pieces, calls;
	size_t piece;
	int fail_at; /* more() call that fails, or -1 */
	unsigned char fill;
	struct producer *next;
};

struct fz {
	struct event_base *base;
	struct bufferevent *peer;
	struct async_chat *chat; /* NULL once the program must not use it */
	struct async_chat_handlers h;
	unsigned flags;
	unsigned char alpha[16];
	size_t nalpha;
	const uint8_t *tape;
	size_t tape_len, tape_pos;
	const uint8_t *script; /* F_SCRIPT: terminators found sets */
	size_t script_len, script_pos;
	struct rd prog;

	/* input side */
	struct evbuffer *sent; /* every byte the peer wrote */
	unsigned char *got;    /* frames end to end, then the current one */
	size_t ngot, gotcap;
	size_t *end;
	int *matched;
	size_t nframes, framecap;
	struct fm_step steps[MAX_STEPS];
	size_t nsteps;
	unsigned char pool[POOL_SIZE];
	size_t pool_used;
	int model_ok;       /* frames must be the model's */
	uint64_t max_frame; /* as last set */
	/* count terminators: the count set and the frame bytes it starts
	 * after, while known */
	int count_known;
	uint64_t count_set;
	size_t count_base;

	/* output side */
	struct evbuffer *rcv; /* what the peer has read, in order */
	struct seg seg[MAX_SEGS];
	size_t nsegs;
	int out_ok; /* segments are still tracked */
	size_t pushed;
	size_t out_size;
	struct producer *producers;
	int live_producers, live_refs, producer_failures;
	int producers_made, actions;
	int files, fds_before; /* push_file calls; open fds at the start */

	/* lifecycle */
	int depth; /* callbacks of the channel on the stack */
	int frees, closes, errors, drains;
	int freed;
	int close_queued, shut_queued, explicit_close;
	int peer_eof_sent, peer_eof_seen;
	unsigned long activity;
};

static void fz_fail(struct fz *z, const char *what);

/* FUZZ_CHANNEL_TRACE=1 in the environment: say what runs, to read a
 * finding. */
static int tracing = -1;

static void
trace(const char *fmt, ...)
{
	va_list ap;

	if (tracing < 0)
		tracing = getenv("FUZZ_CHANNEL_TRACE") != NULL;
	if (!tracing)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/*
 * The tape: callbacks read their actions from it, cyclically.
 */

static uint8_t
tape_u8(struct fz *z)
{
	if (z->tape_len == 0)
		return 0;
	return z->tape[z->tape_pos++ % z->tape_len];
}

static unsigned char
map_byte(const struct fz *z, uint8_t b)
{
	return z->flags & F_ALPHA ? z->alpha[b % z->nalpha] : b;
}

static const unsigned char *
pool_take(struct fz *z, size_t n)
{
	unsigned char *p;

	if (z->pool_used + n > sizeof(z->pool))
		return NULL;
	p = z->pool + z->pool_used;
	z->pool_used += n;
	return p;
}

/* A terminator read from the program or the tape; its bytes live in the
 * pool for the whole input, as model steps point at them.  Returns 0, or
 * -1 when the pool is full (t is then none). */
static int
decode_term(struct fz *z, uint8_t (*next)(void *), void *src, struct fm_term *t)
{
	const void *alt[MAX_ALT];
	size_t lens[MAX_ALT], n, i, j;
	uint8_t b = next(src);

	*t = fm_none();
	switch (b % 6) {
	case 0:
		return 0;
	case 1:
		*t = fm_count(b & 0x80 ? 1 + next(src) + 256u * next(src)
		                       : 1 + (b >> 3) % 12);
		return 0;
	case 2:
		*t = fm_line();
		return 0;
	case 3:
	case 4:
		n = 1;
		break;
	default:
		n = 1 + (b >> 3) % MAX_ALT;
		break;
	}
	for (i = 0; i < n; i++) {
		unsigned char *p;

		lens[i] = 1 + next(src) % MAX_TERM;
		p = (unsigned char *)pool_take(z, lens[i]);
		if (p == NULL)
			return -1;
		for (j = 0; j < lens[i]; j++)
			p[j] = map_byte(z, next(src));
		alt[i] = p;
	}
	*t = n == 1 && b % 6 != 5 ? fm_string(alt[0], lens[0])
	                          : fm_any(alt, lens, n);
	return 0;
}

static uint8_t
next_prog(void *src)
{
	return rd_u8(&((struct fz *)src)->prog);
}

static uint8_t
next_tape(void *src)
{
	return tape_u8(src);
}

static uint8_t
next_script(void *src)
{
	struct fz *z = src;

	if (z->script_len == 0)
		return 0;
	return z->script[z->script_pos++ % z->script_len];
}

/* memcmp() that takes empty ranges at NULL pointers */
static int
same(const void *a, const void *b, size_t n)
{
	return n == 0 || memcmp(a, b, n) == 0;
}

/*
 * What the channel delivered
 */

static size_t
frame_start(const struct fz *z)
{
	return z->nframes ? z->end[z->nframes - 1] : 0;
}

static void
got_reserve(struct fz *z, size_t n)
{
	if (z->ngot + n > z->gotcap) {
		size_t cap = z->gotcap ? z->gotcap : 256;

		while (cap < z->ngot + n)
			cap *= 2;
		z->got = realloc(z->got, cap);
		if (z->got == NULL)
			abort();
		z->gotcap = cap;
	}
}

/* The bytes of the frame in progress: collected, or in message mode
 * waiting in the channel's buffer. */
static size_t
cur_len(struct fz *z, struct async_chat *chat)
{
	size_t n = z->ngot - frame_start(z);

	if ((z->flags & F_MESSAGE) && chat != NULL && !z->freed) {
		struct evbuffer *in = async_chat_incoming(chat);

		if (in == NULL)
			fz_fail(z, "async_chat_incoming() failed");
		n += evbuffer_get_length(in);
	}
	return n;
}

/* Bytes the channel has been handed but not framed yet. */
static size_t
unframed(struct async_chat *chat)
{
	struct bufferevent *bev = async_chat_get_bufferevent(chat);

	return bev ? evbuffer_get_length(bufferevent_get_input(bev)) : 0;
}

/* Bytes the peer wrote that reached the channel's side of the pair. */
static size_t
transferred(const struct fz *z)
{
	return evbuffer_get_length(z->sent) -
	       evbuffer_get_length(bufferevent_get_output(z->peer));
}

/*
 * Checks
 */

static void
dump(struct fz *z)
{
	fprintf(stderr,
	    "flags 0x%x frames %zu got %zu sent %zu steps %zu model_ok %d "
	    "out_ok %d segs %zu frees %d closes %d errors %d drains %d\n",
	    z->flags, z->nframes, z->ngot, evbuffer_get_length(z->sent),
	    z->nsteps, z->model_ok, z->out_ok, z->nsegs, z->frees, z->closes,
	    z->errors, z->drains);
}

static void
fz_fail(struct fz *z, const char *what)
{
	dump(z);
	fprintf(stderr, "fuzz_channel: %s\n", what);
	abort();
}

/* The frames so far are the model's first ones, and the frame in
 * progress is a prefix of the model's next frame (or tail); with exact,
 * all the model's frames have ended and the tail is the frame in
 * progress. */
static void
check_frames(struct fz *z, int exact)
{
	struct fm_result m;
	size_t len, i, start = 0, off, mlen, cur, gap;
	unsigned char *s;

	if (!z->model_ok)
		return;
	len = exact ? evbuffer_get_length(z->sent) : transferred(z);
	s = evbuffer_pullup(z->sent, -1);
	if (s == NULL)
		s = (unsigned char *)""; /* nothing sent yet */
	if (fm_run(z->steps, z->nsteps, s, len, &m) != 0)
		abort();
	if (z->nframes > m.n)
		fz_fail(z, "more frames than the model");
	for (i = 0; i < z->nframes; i++) {
		if (z->end[i] - start != m.frame[i].len ||
		    !same(z->got + start, s + m.frame[i].off, m.frame[i].len))
			fz_fail(z, "a frame differs from the model's");
		if (z->matched[i] != m.frame[i].matched)
			fz_fail(
			    z, "matched terminator differs from the model's");
		start = z->end[i];
	}
	if (z->nframes < m.n) {
		off = m.frame[z->nframes].off;
		mlen = m.frame[z->nframes].len;
	} else {
		off = m.tail_off;
		mlen = m.tail_len;
	}
	/* collect mode: the collected bytes; message mode keeps them in the
	 * channel, where only an open channel shows them */
	cur = z->ngot - start;
	if (!(z->flags & F_MESSAGE) &&
	    (cur > mlen || !same(z->got + start, s + off, cur)))
		fz_fail(z, "the frame in progress is not the model's");
	if (z->chat != NULL && !z->freed) {
		if (z->flags & F_MESSAGE) {
			struct evbuffer *in = async_chat_incoming(z->chat);
			size_t k = evbuffer_get_length(in);

			if (cur + k > mlen ||
			    (k > 0 && memcmp(evbuffer_pullup(in, -1),
			                  s + off + cur, k) != 0))
				fz_fail(
				    z, "the message buffer is not the model's");
		}
		cur = cur_len(z, z->chat);
		gap = len - unframed(z->chat) - off - cur;
		/* A terminator is consumed as soon as its frame's last byte
		 * is taken, before found_terminator runs when collect
		 * paused the channel there. */
		if (off + cur + unframed(z->chat) > len ||
		    (gap != 0 && (z->nframes >= m.n || cur != mlen ||
		                     (z->nframes + 1 < m.n
		                             ? m.frame[z->nframes + 1].off
		                             : m.tail_off) != off + cur + gap)))
			fz_fail(z, "framed and unframed bytes do not add up");
	}
	if (exact && (z->nframes != m.n || cur != m.tail_len))
		fz_fail(z, "not every frame ended at EOF");
	fm_result_free(&m);
}

/* Everything the peer has been handed so far.  Reading its input also
 * lets a pair held back by the peer's read watermark hand over more. */
static struct evbuffer *
received(struct fz *z)
{
	if (evbuffer_add_buffer(z->rcv, bufferevent_get_input(z->peer)) != 0)
		abort();
	return z->rcv;
}

/* The peer has received a prefix of the queued spans, in order, and
 * nothing past a producer that may still add to its span; with full, all
 * of it. */
static void
check_output(struct fz *z, int full)
{
	struct evbuffer *rcv = received(z);
	size_t n = evbuffer_get_length(rcv), at = 0, i;
	const unsigned char *p;

	if (!z->out_ok)
		return;
	p = evbuffer_pullup(rcv, -1);
	for (i = 0; i < z->nsegs; i++) {
		struct seg *sg = &z->seg[i];
		size_t len = evbuffer_get_length(sg->buf), k;

		k = n - at < len ? n - at : len;
		if (k > 0 &&
		    memcmp(p + at, evbuffer_pullup(sg->buf, -1), k) != 0)
			fz_fail(z, "the peer received other bytes than pushed");
		at += k;
		if (full && (k < len || sg->open))
			fz_fail(z, "output missing where all must be sent");
		if (sg->open && at < n)
			fz_fail(z, "bytes sent past an unfinished producer");
	}
	if (at < n)
		fz_fail(z, "the peer received more than was pushed");
}

static struct evbuffer *
seg_add(struct fz *z, int open)
{
	struct seg *sg;

	if (z->nsegs == MAX_SEGS) {
		/* too many to follow: stop checking the output */
		z->out_ok = 0;
		return NULL;
	}
	sg = &z->seg[z->nsegs++];
	sg->buf = evbuffer_new();
	if (sg->buf == NULL)
		abort();
	sg->open = open;
	return sg->buf;
}

static void
seg_append(struct fz *z, const void *p, size_t n)
{
	struct evbuffer *b;

	if (!z->out_ok)
		return;
	if (z->nsegs > 0 && !z->seg[z->nsegs - 1].open)
		b = z->seg[z->nsegs - 1].buf;
	else if ((b = seg_add(z, 0)) == NULL)
		return;
	if (evbuffer_add(b, p, n) != 0)
		abort();
}

static void
segs_free(struct fz *z)
{
	size_t i;

	for (i = 0; i < z->nsegs; i++)
		evbuffer_free(z->seg[i].buf);
	z->nsegs = 0;
}

/* After discard_buffers: what is unsent is gone, so what the peer has
 * received is all that will ever come of what was queued before. */
static void
segs_cut(struct fz *z)
{
	struct evbuffer *rcv = received(z);
	struct producer *p;

	check_output(z, 0);
	segs_free(z);
	for (p = z->producers; p != NULL; p = p->next)
		p->seg = -1;
	if (evbuffer_get_length(rcv) > 0)
		seg_append(
		    z, evbuffer_pullup(rcv, -1), evbuffer_get_length(rcv));
}

/* A callback of the channel: none may run once it is closed. */
static void
cb_enter(struct fz *z, struct async_chat *chat, const char *name)
{
	if (z->freed) {
		fprintf(stderr, "callback %s\n", name);
		fz_fail(z, "a callback ran after handle_free");
	}
	if (chat != z->chat)
		fz_fail(z, "a callback for another channel");
	if (async_chat_get_arg(chat) != z)
		fz_fail(z, "arg lost");
	z->depth++;
	z->activity++;
}

static void
cb_leave(struct fz *z)
{
	z->depth--;
}

/*
 * Operations, from the program or from inside a callback
 */

/* Calls on a channel closed inside a callback fail with ENOTCONN, and
 * the plain queries still answer. */
static void
check_closed_calls(struct fz *z, struct async_chat *chat)
{
	struct async_chat_terminator t;

	errno = 0;
	if (async_chat_push(chat, "x", 1) != -1 || errno != ENOTCONN)
		fz_fail(z, "push after close did not fail with ENOTCONN");
	errno = 0;
	if (async_chat_set_terminator_count(chat, 3) != -1 || errno != ENOTCONN)
		fz_fail(z, "set_terminator after close: not ENOTCONN");
	errno = 0;
	if (async_chat_get_terminator(chat, &t) != -1 || errno != ENOTCONN)
		fz_fail(z, "get_terminator after close: not ENOTCONN");
	if (async_chat_close_when_done(chat) != -1 ||
	    async_chat_discard_buffers(chat) != -1 ||
	    async_chat_pause_reading(chat) != -1)
		fz_fail(z, "a call succeeded on a closed channel");
	if (async_chat_get_arg(chat) != z || async_chat_connected(chat) != 0 ||
	    async_chat_get_bufferevent(chat) != NULL ||
	    async_chat_output_pending(chat) != 0)
		fz_fail(z, "a query answered wrongly after close");
	/* a second close is ignored */
	async_chat_close(chat);
}

static void
do_close(struct fz *z, struct async_chat *chat, enum ctx where)
{
	z->explicit_close = 1;
	async_chat_close(chat);
	if (z->frees != 1)
		fz_fail(z, "close did not run handle_free once");
	if (where != CTX_APP)
		check_closed_calls(z, chat);
}

/* Is the frame in progress empty with nothing unframed?  Then a new
 * terminator starts with the next frame, which the model can say. */
static int
at_boundary(struct fz *z, struct async_chat *chat)
{
	return cur_len(z, chat) == 0 && unframed(chat) == 0;
}

static void
set_term(struct fz *z, struct async_chat *chat, const struct fm_term *t,
    int pool_full, enum ctx where)
{
	int rc = 0;

	trace("  terminator kind %d count %llu n %zu\n", (int)t->kind,
	    (unsigned long long)t->count, t->n);
	switch (t->kind) {
	case ASYNC_CHAT_TERM_NONE:
		rc = async_chat_set_terminator_none(chat);
		break;
	case ASYNC_CHAT_TERM_COUNT:
		rc = async_chat_set_terminator_count(chat, t->count);
		break;
	case ASYNC_CHAT_TERM_LINE:
		rc = async_chat_set_terminator_line(chat);
		break;
	case ASYNC_CHAT_TERM_STRING:
		rc = async_chat_set_terminator(chat, t->bytes[0], t->len[0]);
		break;
	case ASYNC_CHAT_TERM_ANY:
		rc = async_chat_set_terminators(chat, t->bytes, t->len, t->n);
		break;
	}
	if (rc != 0)
		fz_fail(z, "setting a terminator failed");
	/* Set inside collect, a count starts after the rest of the bytes
	 * being delivered, which the harness does not see. */
	z->count_known =
	    t->kind == ASYNC_CHAT_TERM_COUNT && where != CTX_COLLECT;
	z->count_set = t->count;
	z->count_base = z->ngot - frame_start(z);
	if (pool_full || z->nsteps == MAX_STEPS ||
	    (where != CTX_FOUND && !at_boundary(z, chat))) {
		/* A terminator set within a frame applies from the next
		 * unscanned byte on; the model only knows frame
		 * boundaries. */
		z->model_ok = 0;
		return;
	}
	z->steps[z->nsteps].frame = z->nframes;
	z->steps[z->nsteps].term = *t;
	z->nsteps++;
}

/* Is output refused now?  rc and errno are the call's.  A default
 * handle_close queues a close_when_done of its own at the peer's EOF,
 * which shows only as EPIPE. */
static int
refused(struct fz *z, int rc)
{
	if (rc == -1 && errno == EPIPE && !z->close_queued && !z->shut_queued &&
	    (z->flags & F_NO_CLOSE) && z->peer_eof_sent)
		z->close_queued = 1;
	return z->close_queued || z->shut_queued;
}

static void
push_bytes(struct fz *z, struct async_chat *chat, const void *p, size_t n)
{
	int rc;

	if (z->pushed + n > PUSH_BUDGET)
		return;
	errno = 0;
	rc = async_chat_push(chat, p, n);
	if (refused(z, rc)) {
		if (n > 0 && (rc != -1 || errno != EPIPE))
			fz_fail(z, "push after a queued close: not EPIPE");
		return;
	}
	if (rc != 0)
		fz_fail(z, "push failed");
	z->pushed += n;
	seg_append(z, p, n);
}

static void
ref_cleanup(const void *data, size_t len, void *arg)
{
	struct fz *z = arg;

	(void)len;
	z->live_refs--;
	free((void *)data);
}

static void
push_buffer(
    struct fz *z, struct async_chat *chat, const unsigned char *p, size_t n)
{
	struct evbuffer *b = evbuffer_new();
	size_t half = n / 2;
	void *copy;
	int rc;

	/* n 0: an empty buffer queues nothing */
	if (b == NULL || z->pushed + n > PUSH_BUDGET) {
		if (b != NULL)
			evbuffer_free(b);
		return;
	}
	/* two chains, one of them a reference the channel must clean up */
	if (n > 0) {
		copy = malloc(n - half);
		if (copy == NULL)
			abort();
		memcpy(copy, p + half, n - half);
		z->live_refs++;
		if (evbuffer_add(b, p, half) != 0 ||
		    evbuffer_add_reference(b, copy, n - half, ref_cleanup, z) !=
		        0)
			abort();
	}
	errno = 0;
	rc = async_chat_push_buffer(chat, b);
	if (refused(z, rc)) {
		if (n > 0 && (rc != -1 || evbuffer_get_length(b) != n))
			fz_fail(z, "push_buffer after a queued close");
	} else if (rc != 0 || evbuffer_get_length(b) != 0) {
		fz_fail(z, "push_buffer failed or left bytes");
	} else {
		z->pushed += n;
		seg_append(z, p, n);
	}
	evbuffer_free(b);
}

static void
push_reference(struct fz *z, struct async_chat *chat, const void *p, size_t n)
{
	void *copy = malloc(n + 1);
	int rc;

	if (copy == NULL)
		abort();
	memcpy(copy, p, n);
	z->live_refs++;
	errno = 0;
	rc = async_chat_push_reference(chat, copy, n, ref_cleanup, z);
	if (rc != 0) {
		/* on failure the data stays ours and cleanup never runs */
		if (!refused(z, rc))
			fz_fail(z, "push_reference failed");
		z->live_refs--;
		free(copy);
		return;
	}
	z->pushed += n;
	seg_append(z, p, n);
}

static void tape_action(struct fz *z, struct async_chat *chat, enum ctx where);

static int
producer_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct producer *p = ctx;
	struct fz *z = p->z;
	unsigned char piece[256];
	size_t i;

	cb_enter(z, z->chat, "more");
	trace(" more %p\n", ctx);
	if (size_hint != z->out_size)
		fz_fail(
		    z, "more() with a size_hint other than out_buffer_size");
	/* pulled only while the output is below out_buffer_size */
	if (evbuffer_get_length(out) >= z->out_size)
		fz_fail(z, "more() called with the output buffer full");
	p->calls++;
	if ((int)p->calls - 1 == p->fail_at) {
		if (p->seg >= 0)
			z->seg[p->seg].open = 0;
		p->seg = -1;
		z->producer_failures++;
		cb_leave(z);
		return -1;
	}
	if (p->pieces == 0) {
		if (p->seg >= 0)
			z->seg[p->seg].open = 0;
		p->seg = -1;
		cb_leave(z);
		return 0;
	}
	p->pieces--;
	for (i = 0; i < p->piece; i++)
		piece[i] = (unsigned char)(p->fill + p->calls + i);
	/* Into the span before the add: a pair hands the bytes to the peer
	 * inside it. */
	if (p->seg >= 0 && evbuffer_add(z->seg[p->seg].buf, piece, p->piece))
		abort();
	if (evbuffer_add(out, piece, p->piece) != 0)
		abort();
	tape_action(z, z->chat, CTX_PRODUCER);
	cb_leave(z);
	return 0;
}

static void
producer_free(void *ctx)
{
	struct producer *p = ctx, **link;
	struct fz *z = p->z;

	if (p->seg >= 0)
		z->seg[p->seg].open = 0;
	for (link = &z->producers; *link != p; link = &(*link)->next)
		;
	*link = p->next;
	z->live_producers--;
	free(p);
}

static const struct async_chat_producer_ops producer_ops = {
    producer_more, producer_free};

static void
push_producer(struct fz *z, struct async_chat *chat, uint8_t a, uint8_t b)
{
	struct producer *p;
	int rc;

	if (z->pushed + 8 * 256 > PUSH_BUDGET ||
	    z->producers_made >= PRODUCER_BUDGET)
		return;
	z->producers_made++;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		abort();
	p->z = z;
	p->pieces = a % 9;
	p->piece = 1 + (size_t)b * 7 % 256;
	p->fail_at = a & 0x80 ? (int)((a >> 4) & 7) : -1;
	p->fill = (unsigned char)(b ^ a);
	p->seg = -1;
	if (z->out_ok && seg_add(z, 1) != NULL)
		p->seg = (int)z->nsegs - 1;
	p->next = z->producers;
	z->producers = p;
	z->live_producers++;
	z->pushed += p->pieces * p->piece;
	errno = 0;
	rc = async_chat_push_with_producer(chat, &producer_ops, p);
	if (rc != 0) {
		/* on failure free is not called: undo */
		if (!refused(z, rc))
			fz_fail(z, "push_with_producer failed");
		if (p->seg >= 0)
			z->seg[p->seg].open = 0;
		producer_free(p);
	}
}

static void
push_simple(struct fz *z, struct async_chat *chat, const unsigned char *p,
    size_t n, size_t piece)
{
	int rc;

	errno = 0;
	rc = async_chat_push_simple_producer(chat, p, n, piece);
	if (refused(z, rc)) {
		if (rc != -1 || errno != EPIPE)
			fz_fail(z, "simple producer after a queued close");
		return;
	}
	if (rc != 0)
		fz_fail(z, "push_simple_producer failed");
	z->pushed += n;
	/* its pieces go out whole and in order, like pushed bytes */
	seg_append(z, p, n);
}

static void
close_when_done(struct fz *z, struct async_chat *chat)
{
	if (async_chat_close_when_done(chat) != 0)
		fz_fail(z, "close_when_done failed");
	z->close_queued = 1;
}

static void
shutdown_when_done(struct fz *z, struct async_chat *chat)
{
	int rc;

	errno = 0;
	rc = async_chat_shutdown_when_done(chat);
	if (!z->shut_queued && rc == -1 && errno == EPIPE)
		refused(z, rc);
	if (z->close_queued && !z->shut_queued) {
		if (rc != -1 || errno != EPIPE)
			fz_fail(z, "shutdown after close_when_done: not EPIPE");
		return;
	}
	if (rc != 0)
		fz_fail(z, "shutdown_when_done failed");
	z->shut_queued = 1;
}

static void
discard(struct fz *z, struct async_chat *chat)
{
	if (async_chat_discard_buffers(chat) != 0)
		fz_fail(z, "discard_buffers failed");
	/* dropped input: frames no longer follow the stream */
	z->model_ok = 0;
	z->count_known = 0;
	/* the frame in progress is dropped too */
	z->ngot = frame_start(z);
	if (z->out_ok)
		segs_cut(z);
}

static void
resume(struct fz *z, struct async_chat *chat)
{
	if (async_chat_resume_reading(chat) != 0 && errno != EPIPE)
		fz_fail(z, "resume_reading failed");
}

static void
set_max_frame(struct fz *z, struct async_chat *chat, uint64_t max)
{
	if (async_chat_set_max_frame(chat, max) != 0)
		fz_fail(z, "set_max_frame failed");
	z->max_frame = max;
}

/* An action read from the tape by a callback. */
static void
tape_action(struct fz *z, struct async_chat *chat, enum ctx where)
{
	unsigned char buf[64];
	struct fm_term t;
	uint8_t a = tape_u8(z);
	size_t n, i;
	int full;

	if (z->freed || ++z->actions > ACTION_BUDGET)
		return;
	trace("  action %u in %d\n", a % 24, (int)where);
	/* 0, which an empty or zeroed tape gives, is no action */
	switch (a % 24) {
	case 1:
		full = decode_term(z, next_tape, z, &t) != 0;
		set_term(z, chat, &t, full, where);
		break;
	case 2:
		/* and once more: the last one set wins */
		full = decode_term(z, next_tape, z, &t) != 0;
		set_term(z, chat, &t, full, where);
		full = decode_term(z, next_tape, z, &t) != 0;
		set_term(z, chat, &t, full, where);
		break;
	case 3:
		n = 1 + tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = tape_u8(z);
		push_bytes(z, chat, buf, n);
		break;
	case 4:
		do_close(z, chat, where);
		break;
	case 5:
		if (async_chat_pause_reading(chat) != 0)
			fz_fail(z, "pause_reading failed");
		break;
	case 6:
		resume(z, chat);
		break;
	case 7:
		discard(z, chat);
		break;
	case 8:
		close_when_done(z, chat);
		break;
	case 9:
		shutdown_when_done(z, chat);
		break;
	case 10:
		if (where != CTX_PRODUCER)
			push_producer(z, chat, tape_u8(z), tape_u8(z));
		break;
	case 11:
		set_max_frame(z, chat, tape_u8(z) % 48);
		break;
	default:
		break; /* mostly nothing */
	}
}

/*
 * The channel's handlers
 */

static void
on_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct fz *z = arg;
	struct async_chat_terminator t;

	cb_enter(z, chat, "collect");
	trace(" collect %zu\n", len);
	if (len == 0)
		fz_fail(z, "collect with 0 bytes");
	got_reserve(z, len);
	memcpy(z->got + z->ngot, data, len);
	/* A count reports what is still missing without these bytes.  When
	 * one delivery reaches collect in several calls (the input has
	 * several chains), it already excludes the later calls' bytes too,
	 * so only "at most" holds. */
	if (z->count_known && async_chat_get_terminator(chat, &t) == 0 &&
	    t.kind == ASYNC_CHAT_TERM_COUNT &&
	    z->ngot + len - frame_start(z) - z->count_base + t.count >
	        z->count_set)
		fz_fail(z, "count inside collect is more than is missing");
	z->ngot += len;
	tape_action(z, chat, CTX_COLLECT);
	cb_leave(z);
}

static void
on_found(struct async_chat *chat, void *arg)
{
	struct fz *z = arg;
	size_t n = z->nframes;
	int matched = async_chat_matched_terminator(chat);

	cb_enter(z, chat, "found");
	trace(" found\n");
	if (z->flags & F_MESSAGE) {
		struct evbuffer *in = async_chat_incoming(chat);
		size_t len;

		if (in == NULL)
			fz_fail(z, "async_chat_incoming() failed in found");
		len = evbuffer_get_length(in);
		got_reserve(z, len);
		if (evbuffer_remove(in, z->got + z->ngot, len) != (int)len)
			fz_fail(z, "evbuffer_remove from incoming");
		z->ngot += len;
	}
	if (n == z->framecap) {
		z->framecap = z->framecap ? 2 * z->framecap : 64;
		z->end = realloc(z->end, z->framecap * sizeof(*z->end));
		z->matched =
		    realloc(z->matched, z->framecap * sizeof(*z->matched));
		if (z->end == NULL || z->matched == NULL)
			abort();
	}
	z->end[n] = z->ngot;
	z->matched[n] = matched;
	z->nframes++;
	/* a count is spent unless found sets another */
	z->count_known = 0;
	if ((z->flags & F_SCRIPT) && z->actions++ < ACTION_BUDGET) {
		struct fm_term t;
		int full = decode_term(z, next_script, z, &t) != 0;

		set_term(z, chat, &t, full, CTX_FOUND);
	}
	tape_action(z, chat, CTX_FOUND);
	cb_leave(z);
}

static void
on_close(struct async_chat *chat, void *arg)
{
	struct fz *z = arg;

	cb_enter(z, chat, "close");
	trace(" close\n");
	z->closes++;
	if (z->closes > 1)
		fz_fail(z, "handle_close ran twice");
	if (!z->peer_eof_sent)
		fz_fail(z, "handle_close without the peer's EOF");
	/* every byte received has been framed, held-back ones included */
	if (unframed(chat) != 0)
		fz_fail(z, "handle_close with bytes left unframed");
	check_frames(z, 1);
	tape_action(z, chat, CTX_CLOSE);
	cb_leave(z);
}

static void
on_error(struct async_chat *chat, int err, void *arg)
{
	struct fz *z = arg;

	cb_enter(z, chat, "error");
	trace(" error %d\n", err);
	z->errors++;
	if (err == ASYNC_CHAT_ERR_FRAME_TOO_LONG) {
		if (z->max_frame == 0 || cur_len(z, chat) < z->max_frame)
			fz_fail(z, "frame too long below the bound");
		if (async_chat_reading_paused(chat) != 1)
			fz_fail(z, "frame too long but reading not paused");
		switch (tape_u8(z) % 4) {
		case 0:
			/* raise the bound and go on */
			set_max_frame(
			    z, chat, z->max_frame + 1 + tape_u8(z) % 8);
			resume(z, chat);
			break;
		case 1:
			set_max_frame(z, chat, 0);
			resume(z, chat);
			break;
		case 2:
			do_close(z, chat, CTX_ERROR);
			break;
		default:
			break; /* stay paused */
		}
	} else if (err == ASYNC_CHAT_ERR_PRODUCER) {
		if (z->producer_failures == 0)
			fz_fail(z, "producer error with no producer failed");
		tape_action(z, chat, CTX_ERROR);
	} else {
		fprintf(stderr, "error %d %s\n", err, async_chat_strerror(err));
		fz_fail(z, "unexpected error");
	}
	cb_leave(z);
}

static void
on_drain(struct async_chat *chat, void *arg)
{
	struct fz *z = arg;

	cb_enter(z, chat, "drain");
	trace(" drain\n");
	z->drains++;
	if (async_chat_output_pending(chat) != 0)
		fz_fail(z, "drained with output pending");
	check_output(z, 1);
	tape_action(z, chat, CTX_DRAIN);
	cb_leave(z);
}

static void
on_free(struct async_chat *chat, void *arg)
{
	struct fz *z = arg;

	if (chat != z->chat)
		fz_fail(z, "handle_free for another channel");
	trace(" free\n");
	z->frees++;
	if (z->frees > 1 || z->freed)
		fz_fail(z, "handle_free ran twice");
	z->freed = 1;
	z->activity++;
	/* A queued close that completed: everything before it was sent.
	 * Other ways to close (ours, or the default error handler) may
	 * drop output. */
	if (z->close_queued && !z->explicit_close && !(z->flags & F_NO_ERROR))
		check_output(z, 1);
}

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct fz *z = arg;

	(void)bev;
	z->activity++;
	received(z);
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct fz *z = arg;

	(void)bev;
	z->activity++;
	trace(" peer event 0x%x\n", what);
	if (!(what & BEV_EVENT_EOF))
		fz_fail(z, "the peer got an event other than EOF");
	z->peer_eof_seen++;
	/* the EOF of a completed shutdown_when_done: all was sent */
	if (z->shut_queued && !z->explicit_close && !z->freed &&
	    !(z->flags & F_NO_ERROR))
		check_output(z, 1);
}

/*
 * The program
 */

enum op {
	OP_WRITE,
	OP_WRITE_BIG,
	OP_TERM,
	OP_PUSH,
	OP_PUSH_BUFFER,
	OP_PUSH_REF,
	OP_PRODUCER,
	OP_SIMPLE,
	OP_CLOSE_WHEN_DONE,
	OP_SHUTDOWN,
	OP_DISCARD,
	OP_PAUSE,
	OP_RESUME,
	OP_CLOSE,
	OP_PEER_EOF,
	OP_MAX_FRAME,
	OP_OUT_SIZE,
	OP_IN_SIZE,
	OP_QUERY,
	OP_PEER_READ,
	OP_PUSH_FILE,
	OP_BAD_ARGS,
	OP_COUNT
};

static void
peer_write(struct fz *z, const unsigned char *p, size_t n)
{
	if (z->peer_eof_sent || n == 0)
		return;
	/* recorded first: a pair may hand the bytes over inside the write */
	trace("  peer writes %zu\n", n);
	if (evbuffer_add(z->sent, p, n) != 0)
		abort();
	if (bufferevent_write(z->peer, p, n) != 0)
		abort();
}

static void
peer_eof(struct fz *z)
{
	if (z->peer_eof_sent)
		return;
	z->peer_eof_sent = 1;
	/* hands over what waits, then the EOF (deferred by the pair) */
	if (bufferevent_flush(z->peer, EV_WRITE, BEV_FINISHED) < 0 && !z->freed)
		fz_fail(z, "peer flush failed with the channel open");
}

/* Open file descriptors, to see that pushed files are closed; -1 if the
 * system does not say. */
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

/* A file range: the channel owns fd from the call on, success or not. */
static void
push_file(struct fz *z, struct async_chat *chat, uint8_t a, uint8_t b)
{
	unsigned char data[300];
	size_t n = a % sizeof(data), i;
	ev_off_t off = 0, len = -1;
	int fd, rc, bad = 0;
	FILE *f = tmpfile();

	if (f == NULL)
		return;
	for (i = 0; i < n; i++)
		data[i] = (unsigned char)(a * 3 + i * 7);
	if (fwrite(data, 1, n, f) != n || fflush(f) != 0 ||
	    (fd = dup(fileno(f))) < 0)
		abort();
	fclose(f);
	switch (b & 3) {
	case 0: /* to the end of the file */
		off = (ev_off_t)((b >> 2) % (n + 1));
		break;
	case 1:
		off = (ev_off_t)((b >> 2) % (n + 1));
		len = (ev_off_t)n - off;
		break;
	case 2:
		off = (ev_off_t)((b >> 2) % (n + 1));
		len = (ev_off_t)((b >> 4) % (n - (size_t)off + 1));
		break;
	default: /* past the end: refused */
		off = (ev_off_t)((b >> 2) % (n + 1));
		len = (ev_off_t)n - off + 1 + (b >> 6);
		bad = 1;
		break;
	}
	z->files++;
	errno = 0;
	rc = async_chat_push_file(chat, fd, off, len);
	if (bad) {
		if (rc != -1 || errno != EINVAL)
			fz_fail(z, "push_file past the end: not EINVAL");
		return;
	}
	if (refused(z, rc))
		return;
	if (rc != 0)
		fz_fail(z, "push_file failed");
	if (len == -1)
		len = (ev_off_t)n - off;
	z->pushed += (size_t)len;
	seg_append(z, data + off, (size_t)len);
}

static void
expect_einval(struct fz *z, int rc, const char *what)
{
	if (rc != -1 || errno != EINVAL) {
		fprintf(stderr, "%s\n", what);
		fz_fail(z, "a bad argument was not refused with EINVAL");
	}
	errno = 0;
}

/* The same for a push, which a queued close refuses with EPIPE first. */
static void
expect_einval_push(struct fz *z, int rc, const char *what)
{
	if (rc == -1 && errno == EPIPE && refused(z, rc)) {
		errno = 0;
		return;
	}
	expect_einval(z, rc, what);
}

/* Bad arguments fail with EINVAL and leave the terminator as it was. */
static void
bad_args(struct fz *z, struct async_chat *chat)
{
	const void *terms[ASYNC_CHAT_ALTERNATIVES_MAX + 1];
	size_t lens[ASYNC_CHAT_ALTERNATIVES_MAX + 1], i;
	struct async_chat_terminator before, after;

	for (i = 0; i <= ASYNC_CHAT_ALTERNATIVES_MAX; i++) {
		terms[i] = "ab";
		lens[i] = 2;
	}
	if (async_chat_get_terminator(chat, &before) != 0)
		fz_fail(z, "get_terminator failed");
	errno = 0;
	expect_einval(z, async_chat_push(NULL, "a", 1), "push NULL chat");
	expect_einval(
	    z, async_chat_set_terminator(chat, NULL, 2), "set_terminator NULL");
	expect_einval(z,
	    async_chat_set_terminator(chat, "x", ASYNC_CHAT_TERMINATOR_MAX + 1),
	    "set_terminator too long");
	expect_einval(z, async_chat_set_terminators(chat, terms, lens, 0),
	    "set_terminators 0");
	expect_einval(z,
	    async_chat_set_terminators(
	        chat, terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX + 1),
	    "set_terminators too many");
	terms[1] = NULL;
	expect_einval(z, async_chat_set_terminators(chat, terms, lens, 2),
	    "set_terminators NULL alternative");
	terms[1] = "ab";
	lens[1] = 0;
	expect_einval(z, async_chat_set_terminators(chat, terms, lens, 2),
	    "set_terminators empty alternative");
	expect_einval(
	    z, async_chat_get_terminator(chat, NULL), "get_terminator NULL");
	expect_einval(
	    z, async_chat_set_in_buffer_size(chat, 0), "in_buffer_size 0");
	expect_einval(z,
	    async_chat_set_out_buffer_size(
	        chat, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    "out_buffer_size too big");
	expect_einval(z, async_chat_set_max_frame(NULL, 1), "max_frame NULL");
	expect_einval(z, async_chat_reading_paused(NULL), "paused NULL");
	expect_einval(z, async_chat_discard_buffers(NULL), "discard NULL");
	expect_einval_push(z, async_chat_push(chat, NULL, 3), "push NULL");
	expect_einval_push(
	    z, async_chat_push_buffer(chat, NULL), "push_buffer NULL");
	expect_einval_push(z, async_chat_push_with_producer(chat, NULL, z),
	    "producer NULL ops");
	expect_einval_push(z,
	    async_chat_push_simple_producer(
	        chat, "a", 1, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    "simple piece too big");
	if (async_chat_get_terminator(chat, &after) != 0 ||
	    after.kind != before.kind || after.len != before.len ||
	    after.count != before.count ||
	    after.alternatives != before.alternatives ||
	    !same(after.bytes, before.bytes, after.len))
		fz_fail(z, "a refused terminator changed the terminator");
	if (async_chat_set_arg(chat, z) != 0 || async_chat_get_arg(chat) != z ||
	    async_chat_get_arg(NULL) != NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_PRODUCER) == NULL ||
	    async_chat_strerror(-1000) == NULL)
		fz_fail(z, "a plain query failed");
}

static void
query(struct fz *z, struct async_chat *chat)
{
	struct async_chat_terminator t;

	if (async_chat_get_terminator(chat, &t) != 0 ||
	    async_chat_connected(chat) != 1 || async_chat_get_fd(chat) != -1 ||
	    async_chat_get_bufferevent(chat) == NULL ||
	    async_chat_get_in_buffer_size(chat) == 0 ||
	    async_chat_get_out_buffer_size(chat) != z->out_size)
		fz_fail(z, "a query failed on an open channel");
	if (async_chat_reading_paused(chat) < 0)
		fz_fail(z, "reading_paused failed");
}

static void
run_op(struct fz *z, uint8_t op)
{
	struct async_chat *chat = z->chat;
	unsigned char buf[512];
	struct fm_term t;
	size_t n, i;
	int full;
	uint8_t a;

	switch (op % OP_COUNT) {
	case OP_WRITE:
		n = 1 + rd_u8(&z->prog) % 32;
		for (i = 0; i < n; i++)
			buf[i] = map_byte(z, rd_u8(&z->prog));
		peer_write(z, buf, n);
		return;
	case OP_WRITE_BIG:
		/* many copies of a short pattern: long frames, many chains */
		n = 1 + rd_u8(&z->prog) % 8;
		for (i = 0; i < n; i++)
			buf[i] = map_byte(z, rd_u8(&z->prog));
		a = rd_u8(&z->prog);
		for (i = 0; i < (size_t)a % 64 + 1; i++)
			peer_write(z, buf, n);
		return;
	case OP_PEER_EOF:
		peer_eof(z);
		return;
	case OP_PEER_READ:
		/* A peer that stops reading, or reads a little at a time,
		 * makes the channel's output back up. */
		a = rd_u8(&z->prog);
		if (a & 0x80) {
			bufferevent_disable(z->peer, EV_READ);
		} else {
			bufferevent_setwatermark(z->peer, EV_READ, 0, a & 0x3f);
			bufferevent_enable(z->peer, EV_READ);
		}
		return;
	default:
		break;
	}
	if (chat == NULL)
		return; /* closed: only the peer acts */
	switch (op % OP_COUNT) {
	case OP_TERM:
		full = decode_term(z, next_prog, z, &t) != 0;
		set_term(z, chat, &t, full, CTX_APP);
		break;
	case OP_PUSH:
		n = rd_u8(&z->prog) % 64;
		for (i = 0; i < n; i++)
			buf[i] = rd_u8(&z->prog);
		push_bytes(z, chat, buf, n);
		break;
	case OP_PUSH_BUFFER:
		a = rd_u8(&z->prog);
		if (a & 0x80) {
			/* past the size the channel copies rather than moves */
			unsigned char *big;

			n = 1024 + (size_t)(a & 0x7f) * 32;
			big = malloc(n);
			if (big == NULL)
				abort();
			for (i = 0; i < n; i++)
				big[i] = (unsigned char)(a + i * 31 + (i >> 8));
			push_buffer(z, chat, big, n);
			free(big);
			break;
		}
		n = a % 65;
		for (i = 0; i < n; i++)
			buf[i] = rd_u8(&z->prog);
		push_buffer(z, chat, buf, n);
		break;
	case OP_PUSH_REF:
		n = rd_u8(&z->prog) % 65;
		for (i = 0; i < n; i++)
			buf[i] = rd_u8(&z->prog);
		if (z->pushed + n <= PUSH_BUDGET)
			push_reference(z, chat, buf, n);
		break;
	case OP_PRODUCER:
		a = rd_u8(&z->prog);
		push_producer(z, chat, a, rd_u8(&z->prog));
		break;
	case OP_SIMPLE:
		a = rd_u8(&z->prog);
		n = a % 200;
		for (i = 0; i < n; i++)
			buf[i] = (unsigned char)(a + i * 13);
		if (z->pushed + n <= PUSH_BUDGET)
			push_simple(z, chat, buf, n, rd_u8(&z->prog) % 16);
		break;
	case OP_CLOSE_WHEN_DONE:
		close_when_done(z, chat);
		break;
	case OP_SHUTDOWN:
		shutdown_when_done(z, chat);
		break;
	case OP_DISCARD:
		discard(z, chat);
		break;
	case OP_PAUSE:
		if (async_chat_pause_reading(chat) != 0)
			fz_fail(z, "pause_reading failed");
		break;
	case OP_RESUME:
		resume(z, chat);
		break;
	case OP_CLOSE:
		do_close(z, chat, CTX_APP);
		break;
	case OP_MAX_FRAME:
		a = rd_u8(&z->prog);
		set_max_frame(z, chat, a & 0x80 ? 0 : a % 40);
		break;
	case OP_OUT_SIZE:
		a = rd_u8(&z->prog);
		n = a & 0x80 ? ASYNC_CHAT_DEFAULT_BUFFER_SIZE : 1 + a % 64;
		if (async_chat_set_out_buffer_size(chat, n) != 0)
			fz_fail(z, "set_out_buffer_size failed");
		z->out_size = n;
		break;
	case OP_IN_SIZE:
		a = rd_u8(&z->prog);
		if (async_chat_set_in_buffer_size(chat, 1 + (size_t)a % 64) !=
		    0)
			fz_fail(z, "set_in_buffer_size failed");
		break;
	case OP_QUERY:
		query(z, chat);
		break;
	case OP_PUSH_FILE:
		a = rd_u8(&z->prog);
		push_file(z, chat, a, rd_u8(&z->prog));
		break;
	case OP_BAD_ARGS:
		bad_args(z, chat);
		break;
	default:
		break;
	}
}

static void
run_loop(struct fz *z, unsigned times)
{
	unsigned i;

	for (i = 0; i < times; i++)
		event_base_loop(z->base, EVLOOP_NONBLOCK);
	if (z->freed)
		z->chat = NULL;
}

/* Run the loop until nothing of ours happens for a few turns. */
static void
settle(struct fz *z)
{
	unsigned quiet = 0, turns = 0;

	while (quiet < 4 && turns++ < 2000) {
		unsigned long before = z->activity;
		size_t rcv = evbuffer_get_length(received(z));

		run_loop(z, 1);
		if (z->activity == before &&
		    rcv == evbuffer_get_length(received(z)))
			quiet++;
		else
			quiet = 0;
	}
}

static void
setup(struct fz *z, const uint8_t *data, size_t size)
{
	static const unsigned char sym[] = {
	    'a', '\r', '\n', '\0', 'b', '$', ':', 0xff, ' '};
	struct rd r = {data, size};
	struct bufferevent *pair[2];
	size_t i;
	uint8_t b;

	memset(z, 0, sizeof(*z));
	z->flags = rd_u8(&r);
	b = rd_u8(&r);
	z->nalpha = 2 + (b & 7);
	for (i = 0; i < z->nalpha; i++)
		z->alpha[i] = sym[(i + (b >> 3)) % sizeof(sym)];
	z->tape_len = rd_u8(&r);
	if (z->tape_len > r.n)
		z->tape_len = r.n;
	z->tape = r.p;
	r.p += z->tape_len;
	r.n -= z->tape_len;
	if (z->flags & F_SCRIPT) {
		z->script_len = rd_u8(&r);
		if (z->script_len > r.n)
			z->script_len = r.n;
		z->script = r.p;
		r.p += z->script_len;
		r.n -= z->script_len;
	}
	z->prog = r;
	z->model_ok = 1;
	z->out_ok = 1;
	z->fds_before = count_fds();
	got_reserve(z, 256);
	z->out_size = ASYNC_CHAT_DEFAULT_BUFFER_SIZE;

	z->h.collect_incoming_data = z->flags & F_MESSAGE ? NULL : on_collect;
	z->h.found_terminator = on_found;
	z->h.handle_close = z->flags & F_NO_CLOSE ? NULL : on_close;
	z->h.handle_error = z->flags & F_NO_ERROR ? NULL : on_error;
	z->h.handle_drain = z->flags & F_NO_DRAIN ? NULL : on_drain;
	z->h.handle_free = on_free;

	z->sent = evbuffer_new();
	z->rcv = evbuffer_new();
	z->base = event_base_new();
	if (z->sent == NULL || z->rcv == NULL || z->base == NULL ||
	    bufferevent_pair_new(z->base,
	        z->flags & F_DEFER ? BEV_OPT_DEFER_CALLBACKS : 0, pair) != 0)
		abort();
	z->peer = pair[1];
	bufferevent_setcb(z->peer, peer_read, NULL, peer_event, z);
	bufferevent_enable(z->peer, EV_READ | EV_WRITE);
	z->chat = async_chat_new_bufferevent(pair[0], &z->h, z);
	if (z->chat == NULL)
		abort();
	if (z->flags & F_TERM0) {
		struct fm_term t;
		int full = decode_term(z, next_prog, z, &t) != 0;

		set_term(z, z->chat, &t, full, CTX_APP);
	}
}

static void
teardown(struct fz *z)
{
	size_t i;

	if (z->chat != NULL) {
		z->explicit_close = 1;
		async_chat_close(z->chat);
		z->chat = NULL;
	}
	if (z->frees != 1)
		fz_fail(z, "handle_free did not run exactly once");
	/* closing one end of a pair gives the other its EOF */
	for (i = 0; i < 2; i++)
		event_base_loop(z->base, EVLOOP_NONBLOCK);
	if (z->peer_eof_seen == 0)
		fz_fail(z, "the peer never saw the channel close");
	bufferevent_free(z->peer);
	/* deferred callbacks of the pair run before the base goes */
	for (i = 0; i < 4; i++)
		event_base_loop(z->base, EVLOOP_NONBLOCK);
	event_base_free(z->base);
	segs_free(z);
	evbuffer_free(z->sent);
	/* pushed references may have come through to here whole */
	evbuffer_free(z->rcv);
	if (z->live_producers != 0)
		fz_fail(z, "a producer was never freed");
	if (z->live_refs != 0)
		fz_fail(z, "a pushed reference was never cleaned up");
	if (z->files > 0 && z->fds_before >= 0 && count_fds() != z->fds_before)
		fz_fail(z, "a pushed file was never closed");
	free(z->got);
	free(z->end);
	free(z->matched);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz z;
	unsigned steps = 0;

	setup(&z, data, size);
	while (z.prog.n > 0 && steps++ < 400) {
		uint8_t op = rd_u8(&z.prog);

		trace("op %u, loop %u\n", op % OP_COUNT, op >> 5);
		run_op(&z, op);
		if (z.freed)
			z.chat = NULL;
		/* high bits: how many turns of the loop follow */
		run_loop(&z, op >> 5);
		check_output(&z, 0);
	}
	settle(&z);
	check_output(&z, 0);
	check_frames(&z, 0);
	/* The peer's EOF reached a channel reading: it was handled. */
	if (z.chat != NULL && z.peer_eof_sent && !(z.flags & F_NO_CLOSE) &&
	    async_chat_reading_paused(z.chat) == 0 && z.closes != 1)
		fz_fail(&z, "the peer's EOF was never handled");
	teardown(&z);
	return 0;
}
