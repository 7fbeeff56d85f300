/*
 * fuzz_channel.c - libFuzzer target: a libasynchat channel and the
 * fuzzer's peer, both in one event_base.  The input is a program of peer
 * writes, terminator changes, pushes, producers, markers, discards, pauses
 * and closes, with the loop run between steps; a tape read by the
 * callbacks makes them act too.
 *
 * The transport is one end of a bufferevent pair, or (extended inputs) a
 * real non-blocking socket: an AF_UNIX socketpair or a TCP connection on
 * 127.0.0.1, whose other end the peer writes and reads directly, half-
 * closes, closes, or resets (SO_LINGER 0).  Extended inputs may also make
 * every allocation of libasynchat and libevent fail after a countdown
 * (once, or from then on): the channel must then end in a clean error,
 * with nothing leaked and handle_free run once.
 *
 * Checked: ASan and LSan (everything is freed at the end of each input),
 * handle_free exactly once, no callback after close, calls on a channel
 * closed inside a callback (handle_free, a reference cleanup, a
 * producer's free included) fail with ENOTCONN, every reference cleanup
 * and producer free runs once, the peer receives a prefix of what was
 * queued, in order (all of it where a close_when_done, shutdown_when_done
 * or handle_drain says so), and, while no discard, untracked terminator
 * change, socket error or allocation failure happened, the frames are the
 * reference model's (test/framer_model.c) for the bytes the peer sent.
 *
 * Input layout: flags, alphabet, tape length, tape, [script length,
 * script], [first terminator], program (the rest).  An extended input
 * starts with the byte 0xfe, then its own flags and, with F_X_FAULTS, a
 * two-byte countdown, then the layout above; its programs and tapes have
 * more operations (length fields, frame policies, peer closes and resets,
 * every push kind from every callback).  An input that starts with the
 * byte 0xfd is a channel-group program instead (see g_run()).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* accept4() */
#endif

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
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
	CTX_PRODUCER,
	CTX_CLEANUP /* a reference cleanup or a producer's free */
};

/* Extended inputs: the first byte, then these flags. */
#define EXT_MAGIC 0xfe
enum {
	F_X_TRANSPORT = 3,   /* 0 pair, 1 AF_UNIX, 2 TCP, 3 TCP accepted */
	F_X_FAULTS = 1 << 2, /* allocations fail after a countdown */
	F_X_STICKY = 1 << 3, /* ... and go on failing */
	F_X_SMALLBUF = 1 << 4, /* small socket buffers: partial writes */
	F_X_NO_FOUND = 1 << 5, /* found_terminator NULL */
	F_X_SKIP = 1 << 6,   /* frame policy SKIP from the start */
	F_X_CLOSEPOL = 1 << 7 /* frame policy CLOSE from the start */
};

enum transport { T_PAIR, T_UNIX, T_TCP };

/*
 * Allocation failures.  libevent's allocations come through
 * event_set_mem_functions(), libasynchat's through -Wl,--wrap=malloc and
 * so on (see fuzz/fuzz.am): both count down while armed, that is inside a
 * library call or a turn of the loop made by the program (LIB() below),
 * and never inside the harness's own code, the callbacks included.  Only
 * the thread running the inputs is armed, never libFuzzer's own.
 */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static __thread int fi_armed;
static struct {
	long countdown; /* armed allocations before the first failure; <0 none */
	int sticky;
	unsigned long failed;
} fi = {-1, 0, 0};

static int
fi_fail(void)
{
	if (!fi_armed || fi.countdown < 0)
		return 0;
	if (fi.countdown > 0) {
		fi.countdown--;
		return 0;
	}
	if (!fi.sticky)
		fi.countdown = -1;
	fi.failed++;
	return 1;
}

void *
__wrap_malloc(size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	if (fi_fail()) {
		errno = ENOMEM;
		return NULL;
	}
	return __real_realloc(p, size);
}

static void *
ev_malloc(size_t size)
{
	return __wrap_malloc(size);
}

static void *
ev_realloc(void *p, size_t size)
{
	return __wrap_realloc(p, size);
}

static void
ev_free(void *p)
{
	free(p);
}

/* Harness code: nothing fails.  Returns what to restore. */
static int
fi_off(void)
{
	int was = fi_armed;

	fi_armed = 0;
	return was;
}

/* A library call made by the harness, with failures armed. */
#define LIB(x)                                                                 \
	__extension__({                                                        \
		int fi_was_ = fi_armed;                                        \
		__typeof__(x) fi_r_;                                           \
		fi_armed = 1;                                                  \
		fi_r_ = (x);                                                   \
		fi_armed = fi_was_;                                            \
		fi_r_;                                                         \
	})
#define LIBV(x)                                                                \
	do {                                                                   \
		int fi_was_ = fi_armed;                                        \
		fi_armed = 1;                                                  \
		x;                                                             \
		fi_armed = fi_was_;                                            \
	} while (0)

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

	/* extended inputs */
	int ext;
	unsigned xflags;
	enum transport transport;
	int chat_fd, peer_fd; /* sockets: the channel's and the peer's end */
	struct evbuffer *peer_out; /* written by the peer, not yet taken */
	int peer_eof_wanted;  /* shut down once peer_out is written */
	int peer_reading;     /* the peer reads its socket */
	size_t peer_read_max; /* bytes per turn, 0 for all */
	int peer_gone;        /* the peer closed or reset its end */
	int peer_reset;
	int peer_read_eof;    /* the peer read the channel's EOF */
	int sock_error;       /* the channel reported a socket error */
	int timeouts;         /* timeouts were set on the bufferevent */
	int out_full_ok;      /* "all was sent" checks still hold */
	size_t need_bytes;    /* sockets: the peer must get this many */
	int lf_set;           /* the terminator is a length field */
	struct async_chat_length_field lf; /* that field */
	int policy;           /* as last set */
	int no_found;
	int armed_stack[64];
	int cleanups;         /* reference cleanups run */
	int cut_pending;      /* a discard runs: cut the output at once */
	int app_call;         /* a cleanup runs inside the program's call */
	int skipping;         /* a frame is being skipped (SKIP policy) */
	int skip_blind;       /* frames may be skipped unreported */
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

/* Bytes the peer wrote that reached the channel's side of the pair, or
 * of the socket: what the peer wrote less what still waits in the
 * channel's receive queue (exact for AF_UNIX; over TCP bytes may still be
 * on their way, so it is an upper bound). */
static size_t
transferred(const struct fz *z)
{
	size_t sent = evbuffer_get_length(z->sent);
	evutil_socket_t fd;
	int q = 0;

	if (z->transport == T_PAIR)
		return sent - evbuffer_get_length(bufferevent_get_output(z->peer));
	fd = z->chat != NULL && !z->freed ? async_chat_get_fd(z->chat) : -1;
	if (fd >= 0 && ioctl(fd, FIONREAD, &q) == 0 && q > 0 &&
	    (size_t)q <= sent)
		sent -= (size_t)q;
	return sent;
}

/* The peer reads its socket: at most max bytes (0: all there is). */
static void
peer_read_sock(struct fz *z, size_t max)
{
	unsigned char buf[4096];
	size_t got = 0;
	int i;

	if (z->peer_fd < 0 || !z->peer_reading)
		return;
	for (i = 0; i < 4096; i++) {
		size_t want = sizeof(buf);
		ssize_t n;

		if (max > 0 && max - got < want)
			want = max - got;
		if (want == 0)
			return;
		n = read(z->peer_fd, buf, want);
		if (n > 0) {
			z->activity++;
			got += (size_t)n;
			if (evbuffer_add(z->rcv, buf, (size_t)n) != 0)
				abort();
			continue;
		}
		if (n == 0 && !z->peer_read_eof) {
			z->activity++;
			z->peer_read_eof = 1;
			z->peer_eof_seen++;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR) {
			/* the channel's end was reset or closed unread */
			z->peer_read_eof = 1;
			z->peer_eof_seen++;
			z->peer_reading = 0;
		}
		return;
	}
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
	int held;

	if (fi.failed)
		z->model_ok = 0;
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
		/* Or the framer holds the last bytes taken in its own
		 * memory, as a possible terminator prefix: they are the
		 * frame's next bytes, or the first bytes of the terminator
		 * that ends it (its last ones still unread). */
		held = gap < MAX_TERM && cur + gap <= mlen;
		if (z->transport != T_TCP &&
		    (off + cur + unframed(z->chat) > len ||
		        (gap != 0 && !held &&
		            (z->nframes >= m.n || cur != mlen ||
		                (z->nframes + 1 < m.n
		                        ? m.frame[z->nframes + 1].off
		                        : m.tail_off) < off + cur + gap))))
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
	if (z->transport != T_PAIR) {
		peer_read_sock(z, 0);
		return z->rcv;
	}
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

	if (fi.failed)
		z->out_ok = 0;
	if (!z->out_ok)
		return;
	if (full && !z->out_full_ok)
		full = 0;
	if (full && z->transport != T_PAIR) {
		/* The kernel has the bytes; the peer gets them later. */
		size_t need = 0;

		for (i = 0; i < z->nsegs; i++) {
			if (z->seg[i].open)
				fz_fail(z, "drained with a producer open");
			need += evbuffer_get_length(z->seg[i].buf);
		}
		if (need > z->need_bytes)
			z->need_bytes = need;
		full = 0;
	}
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
		if (sg->open && at < n) {
			for (k = 0; k < z->nsegs; k++)
				fprintf(stderr, "seg %zu: %zu bytes%s\n", k,
				    evbuffer_get_length(z->seg[k].buf),
				    z->seg[k].open ? " open" : "");
			fprintf(stderr, "received %zu\n", n);
			fz_fail(z, "bytes sent past an unfinished producer");
		}
	}
	if (at < n)
		fz_fail(z, "the peer received more than was pushed");
}

static void do_cut(struct fz *z);

static struct evbuffer *
seg_add(struct fz *z, int open)
{
	struct seg *sg;

	do_cut(z);
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

	do_cut(z);
	trace("  seg_append %zu\n", n);
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

static void do_cut(struct fz *z);

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
	z->armed_stack[z->depth & 63] = fi_off();
	z->depth++;
	z->activity++;
	/* inside a discard: what a push here sends comes after the cut */
	do_cut(z);
}

static void
cb_leave(struct fz *z)
{
	z->depth--;
	fi_armed = z->armed_stack[z->depth & 63];
}

/*
 * Operations, from the program or from inside a callback
 */

static int closed_ref_runs;

static void
closed_ref_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	(void)arg;
	closed_ref_runs++;
}

static int closed_producer_frees;

static int
closed_more(void *ctx, struct evbuffer *out, size_t hint)
{
	(void)ctx;
	(void)out;
	(void)hint;
	return 0;
}

static void
closed_free(void *ctx)
{
	(void)ctx;
	closed_producer_frees++;
}

static const struct async_chat_producer_ops closed_ops = {
    closed_more, closed_free};

#define EXPECT_ENOTCONN(z, call)                                               \
	do {                                                                   \
		errno = 0;                                                     \
		if (LIB(call) != -1 || errno != ENOTCONN) {                    \
			fprintf(stderr, "%s\n", #call);                        \
			fz_fail(z, "a call on a closed channel: not ENOTCONN");  \
		}                                                              \
	} while (0)

/* Every call of the API on a channel closed on the callback stack: those
 * that act fail with ENOTCONN (and take nothing: no cleanup, no producer
 * free, the file closed), the queries answer. */
static void
check_closed_calls_all(struct fz *z, struct async_chat *chat)
{
	struct async_chat_length_field lf = {.width = 2, .strip = 2};
	struct sockaddr_in sin;
	struct evbuffer *b;
	const void *terms[1] = {"x"};
	size_t lens[1] = {1};
	int fd, refs = closed_ref_runs, frees = closed_producer_frees;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(9);
	b = evbuffer_new();
	if (b == NULL || evbuffer_add(b, "ab", 2) != 0)
		abort();
	EXPECT_ENOTCONN(z, async_chat_push_buffer(chat, b));
	if (evbuffer_get_length(b) != 2)
		fz_fail(z, "push_buffer on a closed channel took the bytes");
	evbuffer_free(b);
	EXPECT_ENOTCONN(z,
	    async_chat_push_reference(chat, "ab", 2, closed_ref_cleanup, z));
	EXPECT_ENOTCONN(z, async_chat_push_with_producer(chat, &closed_ops, z));
	EXPECT_ENOTCONN(z, async_chat_push_simple_producer(chat, "ab", 2, 1));
	EXPECT_ENOTCONN(z, async_chat_push_length_prefixed(chat, &lf, "ab", 2));
	if (closed_ref_runs != refs || closed_producer_frees != frees)
		fz_fail(z, "a refused push ran its cleanup or free");
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		/* /dev/null is not a regular file: EINVAL comes first */
		errno = 0;
		if (LIB(async_chat_push_file(chat, fd, 0, -1)) != -1)
			fz_fail(z, "push_file on a closed channel succeeded");
	}
	EXPECT_ENOTCONN(z, async_chat_set_terminator(chat, "ab", 2));
	EXPECT_ENOTCONN(z, async_chat_set_terminators(chat, terms, lens, 1));
	EXPECT_ENOTCONN(z, async_chat_set_terminator_none(chat));
	EXPECT_ENOTCONN(z, async_chat_set_terminator_line(chat));
	EXPECT_ENOTCONN(z, async_chat_set_terminator_length(chat, &lf));
	EXPECT_ENOTCONN(z, async_chat_set_max_frame(chat, 5));
	EXPECT_ENOTCONN(
	    z, async_chat_set_frame_policy(chat, ASYNC_CHAT_FRAME_SKIP));
	EXPECT_ENOTCONN(z, async_chat_resume_reading(chat));
	EXPECT_ENOTCONN(z, async_chat_shutdown_when_done(chat));
	EXPECT_ENOTCONN(z, async_chat_set_in_buffer_size(chat, 10));
	EXPECT_ENOTCONN(z, async_chat_set_out_buffer_size(chat, 10));
	EXPECT_ENOTCONN(z, async_chat_connect(chat,
	                       (const struct sockaddr *)&sin, sizeof(sin)));
	EXPECT_ENOTCONN(z, async_chat_connect_hostname(
	                       chat, NULL, AF_INET, "127.0.0.1", 9));
	errno = 0;
	if (async_chat_incoming(chat) != NULL || errno != ENOTCONN)
		fz_fail(z, "incoming() on a closed channel");
	if (async_chat_get_fd(chat) != -1 ||
	    async_chat_reading_paused(chat) < 0 ||
	    async_chat_matched_terminator(chat) < 0 ||
	    async_chat_dns_error(chat) != 0 ||
	    async_chat_get_in_buffer_size(chat) == 0 ||
	    async_chat_get_out_buffer_size(chat) == 0 ||
	    async_chat_set_arg(chat, z) != 0)
		fz_fail(z, "a query failed on a closed channel");
}

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
	if (z->ext)
		check_closed_calls_all(z, chat);
	/* a second close is ignored */
	async_chat_close(chat);
}

static void
do_close(struct fz *z, struct async_chat *chat, enum ctx where)
{
	z->explicit_close = 1;
	LIBV(async_chat_close(chat));
	if (z->frees != 1)
		fz_fail(z, "close did not run handle_free once");
	if (where != CTX_APP)
		check_closed_calls(z, chat);
}

/* A call that failed for an injected allocation failure: from here on
 * frames and output are no longer followed. */
static int
injected(struct fz *z, int rc)
{
	if (rc == 0 || fi.failed == 0 || errno != ENOMEM)
		return 0;
	z->model_ok = 0;
	z->out_ok = 0;
	return 1;
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
		rc = LIB(async_chat_set_terminator_none(chat));
		break;
	case ASYNC_CHAT_TERM_COUNT:
		rc = LIB(async_chat_set_terminator_count(chat, t->count));
		break;
	case ASYNC_CHAT_TERM_LINE:
		rc = LIB(async_chat_set_terminator_line(chat));
		break;
	case ASYNC_CHAT_TERM_STRING:
		rc = LIB(async_chat_set_terminator(chat, t->bytes[0], t->len[0]));
		break;
	case ASYNC_CHAT_TERM_ANY:
		rc = LIB(async_chat_set_terminators(chat, t->bytes, t->len, t->n));
		break;
	case ASYNC_CHAT_TERM_LENGTH:
		fz_fail(z, "a length field as a model terminator");
		break;
	}
	z->lf_set = 0;
	if (rc != 0 && injected(z, rc))
		return;
	if (rc != 0)
		fz_fail(z, "setting a terminator failed");
	/* A terminator applies from the next unscanned byte: set inside a
	 * frame (inside collect, in handle_error after FRAME_TOO_LONG,
	 * after a pause), a count starts after the frame bytes already
	 * scanned and still to be delivered, which the harness does not
	 * see. */
	z->count_known = t->kind == ASYNC_CHAT_TERM_COUNT &&
	    where != CTX_COLLECT && !z->no_found && !z->skipping &&
	    !z->skip_blind &&
	    (where == CTX_FOUND || at_boundary(z, chat));
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
	/* so does the CLOSE frame policy, after the default handle_error */
	if (rc == -1 && errno == EPIPE && !z->close_queued && !z->shut_queued &&
	    z->ext && z->policy == ASYNC_CHAT_FRAME_CLOSE)
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
	rc = LIB(async_chat_push(chat, p, n));
	if (injected(z, rc))
		return;
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
	int was = fi_off();

	(void)len;
	z->live_refs--;
	if (z->live_refs < 0)
		fz_fail(z, "a reference was cleaned up twice");
	free((void *)data);
	fi_armed = was;
}

static void tape_action(struct fz *z, struct async_chat *chat, enum ctx where);

/* A reference cleanup or a producer's free: any call may be made in it;
 * on a channel that is closing those that act fail with ENOTCONN. */
static void
cleanup_action(struct fz *z, const char *what)
{
	struct async_chat *chat = z->chat;
	/* An empty reference's cleanup runs inside the program's own call:
	 * no frame of the library holds the channel, so a close there frees
	 * it at once, as a close from the program does. */
	enum ctx where = z->app_call ? CTX_APP : CTX_CLEANUP;
	int app_call = z->app_call;

	if (!z->ext || z->freed || chat == NULL || z->depth > 16)
		return;
	z->app_call = 0;
	cb_enter(z, chat, what);
	if (async_chat_get_bufferevent(chat) == NULL)
		check_closed_calls_all(z, chat);
	else
		tape_action(z, chat, where);
	cb_leave(z);
	z->app_call = app_call;
}

/* The cleanup of async_chat_push_reference(), which may call the API. */
static void
ref_cleanup_act(const void *data, size_t len, void *arg)
{
	struct fz *z = arg;

	z->cleanups++;
	ref_cleanup(data, len, arg);
	cleanup_action(z, "cleanup");
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
	rc = LIB(async_chat_push_buffer(chat, b));
	if (injected(z, rc)) {
		/* b keeps its content, and its reference */
	} else if (refused(z, rc)) {
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
	z->app_call = n == 0 && z->depth == 0;
	rc = LIB(async_chat_push_reference(chat, copy, n, ref_cleanup_act, z));
	z->app_call = 0;
	if (rc != 0) {
		/* on failure the data stays ours and cleanup never runs */
		if (!injected(z, rc) && !refused(z, rc))
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
producer_drop(struct producer *p)
{
	struct producer **link;
	struct fz *z = p->z;

	if (p->seg >= 0)
		z->seg[p->seg].open = 0;
	for (link = &z->producers; *link != NULL && *link != p;
	     link = &(*link)->next)
		;
	if (*link == NULL)
		fz_fail(z, "a producer freed twice");
	*link = p->next;
	z->live_producers--;
	free(p);
}

static void
producer_free(void *ctx)
{
	struct producer *p = ctx;
	struct fz *z = p->z;
	int was = fi_off();

	producer_drop(p);
	cleanup_action(z, "producer free");
	fi_armed = was;
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
	rc = LIB(async_chat_push_with_producer(chat, &producer_ops, p));
	if (rc != 0) {
		/* on failure free is not called: undo */
		if (!injected(z, rc) && !refused(z, rc))
			fz_fail(z, "push_with_producer failed");
		if (p->seg >= 0)
			z->seg[p->seg].open = 0;
		producer_drop(p);
	}
}

static void
push_simple(struct fz *z, struct async_chat *chat, const unsigned char *p,
    size_t n, size_t piece)
{
	int rc;

	errno = 0;
	rc = LIB(async_chat_push_simple_producer(chat, p, n, piece));
	if (injected(z, rc))
		return;
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
	int rc = LIB(async_chat_close_when_done(chat));

	if (injected(z, rc))
		return;
	if (rc != 0)
		fz_fail(z, "close_when_done failed");
	z->close_queued = 1;
}

static void
shutdown_when_done(struct fz *z, struct async_chat *chat)
{
	int rc;

	errno = 0;
	rc = LIB(async_chat_shutdown_when_done(chat));
	if (injected(z, rc))
		return;
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

/* The same over a socket, where the kernel holds what left the channel
 * before the discard: over AF_UNIX all of it waits in the peer's receive
 * queue, so what the peer has read and what it can still read is all
 * that will ever come.  Over TCP bytes may be on their way: the output
 * is no longer followed. */
static void
segs_cut_sock(struct fz *z)
{
	struct evbuffer *all;
	struct producer *p;
	size_t i, total, keep;
	int q = 0;

	check_output(z, 0);
	if (z->transport != T_UNIX || z->peer_fd < 0 ||
	    ioctl(z->peer_fd, FIONREAD, &q) != 0 || q < 0) {
		z->out_ok = 0;
		return;
	}
	keep = evbuffer_get_length(z->rcv) + (size_t)q;
	all = evbuffer_new();
	if (all == NULL)
		abort();
	for (i = 0; i < z->nsegs; i++)
		if (evbuffer_add(all, evbuffer_pullup(z->seg[i].buf, -1),
		        evbuffer_get_length(z->seg[i].buf)) != 0)
			abort();
	segs_free(z);
	for (p = z->producers; p != NULL; p = p->next)
		p->seg = -1;
	total = evbuffer_get_length(all);
	if (keep > total)
		fz_fail(z, "the peer has more than was pushed");
	if (keep > 0)
		seg_append(z, evbuffer_pullup(all, -1), keep);
	evbuffer_free(all);
}

/* A discard's cut, once. */
static void
do_cut(struct fz *z)
{
	if (!z->cut_pending)
		return;
	z->cut_pending = 0;
	trace("  cut, received %zu\n", evbuffer_get_length(z->rcv));
	if (z->out_ok && z->transport == T_PAIR)
		segs_cut(z);
	else if (z->out_ok)
		segs_cut_sock(z);
}

static void
discard(struct fz *z, struct async_chat *chat)
{
	/* Cut before the first push made inside the call (by a producer's
	 * free or a cleanup), or when it returns. */
	z->cut_pending = 1;
	if (LIB(async_chat_discard_buffers(chat)) != 0)
		fz_fail(z, "discard_buffers failed");
	/* dropped input: frames no longer follow the stream */
	z->model_ok = 0;
	z->count_known = 0;
	/* the frame in progress is dropped too */
	z->ngot = frame_start(z);
	do_cut(z);
}

/* Resume: the documented refusals are EPIPE (EOF handled, or the CLOSE
 * policy), EMSGSIZE (the frame reported is still past the bound) and
 * EPROTO (the invalid header is still the next input); strict allows
 * only EPIPE, where the bound was just raised past the frame. */
static void
resume_how(struct fz *z, struct async_chat *chat, int strict)
{
	if (LIB(async_chat_resume_reading(chat)) != 0 && errno != EPIPE &&
	    (strict || (errno != EMSGSIZE && errno != EPROTO))) {
		fprintf(stderr, "resume: %s\n", strerror(errno));
		fz_fail(z, "resume_reading failed");
	}
}

static void
resume(struct fz *z, struct async_chat *chat)
{
	resume_how(z, chat, 0);
}

static void skip_unseen(struct fz *z);

static void
set_max_frame(struct fz *z, struct async_chat *chat, uint64_t max)
{
	if (async_chat_set_max_frame(chat, max) != 0)
		fz_fail(z, "set_max_frame failed");
	z->max_frame = max;
	skip_unseen(z);
}


static void push_file(struct fz *z, struct async_chat *chat, uint8_t a,
    uint8_t b);
static void expect_einval(struct fz *z, int rc, const char *what);
static void expect_einval_push(struct fz *z, int rc, const char *what);

/* A length-field format from a few bytes: every width, both byte
 * orders, offsets, adjusts and strips, the usual ones most often. */
static void
decode_lf(uint8_t (*next)(void *), void *src, struct async_chat_length_field *lf)
{
	static const unsigned widths[8] = {1, 2, 4, 0, 3, 8, 1, 2};
	uint8_t b = next(src), c = next(src);

	memset(lf, 0, sizeof(*lf));
	lf->width = widths[b & 7];
	lf->little_endian = lf->width != 0 && (b & 8) != 0;
	lf->offset = (b >> 4) & 3;
	if (lf->offset == 3 && (c & 1))
		lf->offset = 60 + c % 8; /* a header past 64 bytes */
	switch ((b >> 6) & 3) {
	case 0:
		lf->strip = lf->offset + lf->width;
		break;
	case 1:
		break;
	case 2:
		lf->adjust = -(int64_t)(lf->offset + lf->width);
		lf->strip = c % 4;
		break;
	default:
		lf->adjust = (int8_t)c;
		lf->strip = (c >> 4) % 8;
		break;
	}
}

static void
set_term_length(struct fz *z, struct async_chat *chat,
    const struct async_chat_length_field *lf)
{
	int rc = LIB(async_chat_set_terminator_length(chat, lf));

	if (rc != 0) {
		z->lf_set = 0;
		if (injected(z, rc))
			return;
		fz_fail(z, "set_terminator_length failed");
	}
	trace("  length field width %u offset %zu adjust %lld strip %llu\n",
	    lf->width, lf->offset, (long long)lf->adjust,
	    (unsigned long long)lf->strip);
	/* the model knows no length fields */
	z->lf = *lf;
	z->lf_set = 1;
	z->model_ok = 0;
	z->count_known = 0;
}

/* SKIP with no handle_error: frames past the bound are dropped without a
 * word, so the harness can no longer follow frames or counts. */
static void
skip_unseen(struct fz *z)
{
	if ((z->flags & F_NO_ERROR) && z->policy == ASYNC_CHAT_FRAME_SKIP &&
	    z->max_frame != 0) {
		z->model_ok = 0;
		z->count_known = 0;
		z->skip_blind = 1;
	}
}

static void
set_policy(struct fz *z, struct async_chat *chat, uint8_t a)
{
	enum async_chat_frame_policy pol = (enum async_chat_frame_policy)(a % 3);

	if (LIB(async_chat_set_frame_policy(chat, pol)) != 0)
		fz_fail(z, "set_frame_policy failed");
	z->policy = (int)pol;
	skip_unseen(z);
	errno = 0;
	if (async_chat_set_frame_policy(chat, (enum async_chat_frame_policy)3) !=
	        -1 ||
	    errno != EINVAL)
		fz_fail(z, "an unknown frame policy was not refused");
}

/* A payload with its length-field header: spec NULL uses the channel's
 * own terminator. */
static void
push_lp(struct fz *z, struct async_chat *chat,
    const struct async_chat_length_field *spec, const unsigned char *p,
    size_t n)
{
	const struct async_chat_length_field *use = spec ? spec : &z->lf;
	unsigned char hdr[96];
	ev_ssize_t hn;
	int rc;

	if (z->pushed + n + 16 > PUSH_BUDGET)
		return;
	errno = 0;
	rc = LIB(async_chat_push_length_prefixed(chat, spec, p, n));
	if (injected(z, rc))
		return;
	if (rc != 0 && refused(z, rc)) {
		if (errno != EPIPE)
			fz_fail(z, "push_length_prefixed after a close: not EPIPE");
		return;
	}
	if (spec == NULL && !z->lf_set) {
		if (rc != -1 || errno != EINVAL)
			fz_fail(z, "push_length_prefixed without a field: not "
			           "EINVAL");
		return;
	}
	hn = async_chat_length_field_encode(use, n, hdr, sizeof(hdr));
	if (hn < 0) {
		/* the length does not fit the field: nothing queued */
		if (rc != -1 || errno != ERANGE)
			fz_fail(z, "push_length_prefixed and encode disagree");
		return;
	}
	if (rc != 0)
		fz_fail(z, "push_length_prefixed failed");
	z->pushed += (size_t)hn + n;
	seg_append(z, hdr, (size_t)hn);
	if (n > 0)
		seg_append(z, p, n);
}

/* Queries that must answer on an open channel, in any state. */
static void
query_any(struct fz *z, struct async_chat *chat)
{
	struct async_chat_terminator t;
	evutil_socket_t fd = async_chat_get_fd(chat);

	if (LIB(async_chat_get_terminator(chat, &t)) != 0 ||
	    (t.kind == ASYNC_CHAT_TERM_LENGTH) != (z->lf_set != 0) ||
	    async_chat_get_bufferevent(chat) == NULL ||
	    async_chat_reading_paused(chat) < 0 ||
	    async_chat_matched_terminator(chat) < 0 ||
	    async_chat_connected(chat) < 0 ||
	    (z->transport == T_PAIR ? fd != -1 : fd != z->chat_fd))
		fz_fail(z, "a query failed on an open channel");
	if (t.kind == ASYNC_CHAT_TERM_LENGTH &&
	    (t.len != sizeof(struct async_chat_length_field) ||
	        memcmp(t.bytes, &z->lf, sizeof(z->lf)) != 0))
		fz_fail(z, "get_terminator: another length field");
	(void)async_chat_output_pending(chat);
	(void)async_chat_dns_error(chat);
	if (!(z->flags & F_MESSAGE) && LIB(async_chat_incoming(chat)) != NULL &&
	    evbuffer_get_length(async_chat_incoming(chat)) != 0)
		fz_fail(z, "collect mode with bytes in incoming()");
}

/* Bad arguments of the newer calls. */
static void
bad_args_ext(struct fz *z, struct async_chat *chat)
{
	struct async_chat_length_field lf;
	unsigned char hdr[16];

	memset(&lf, 0, sizeof(lf));
	lf.width = 5;
	expect_einval(z, async_chat_set_terminator_length(chat, &lf),
	    "length width 5");
	lf.width = 0;
	lf.little_endian = 1;
	expect_einval(z, async_chat_set_terminator_length(chat, &lf),
	    "little-endian varint");
	lf.little_endian = 0;
	lf.reserved[2] = 1;
	expect_einval(z, async_chat_set_terminator_length(chat, &lf),
	    "length reserved");
	lf.reserved[2] = 0;
	lf.offset = ASYNC_CHAT_TERMINATOR_MAX + 1;
	expect_einval(z, async_chat_set_terminator_length(chat, &lf),
	    "length offset");
	expect_einval(z, async_chat_set_terminator_length(chat, NULL),
	    "length NULL");
	expect_einval(
	    z, async_chat_set_terminator_length(NULL, &z->lf), "length chat");
	expect_einval_push(z,
	    async_chat_push_length_prefixed(chat, &lf, "a", 1), "lp bad spec");
	expect_einval_push(z,
	    async_chat_push_length_prefixed(chat, &z->lf, NULL, 3), "lp NULL");
	expect_einval(z,
	    async_chat_push_length_prefixed(NULL, &z->lf, "a", 1), "lp chat");
	expect_einval(z, (int)async_chat_length_field_encode(&lf, 1, hdr, 16),
	    "encode bad spec");
	expect_einval(z,
	    async_chat_set_frame_policy(NULL, ASYNC_CHAT_FRAME_PAUSE),
	    "policy NULL");
	errno = 0;
	if (async_chat_incoming(NULL) != NULL || errno != EINVAL)
		fz_fail(z, "incoming(NULL): not EINVAL");
	expect_einval(z, async_chat_connect(chat, NULL, 16), "connect NULL");
	expect_einval(z, async_chat_connect_hostname(chat, NULL, AF_INET, NULL, 1),
	    "connect_hostname NULL");
	expect_einval(z, async_chat_connect_hostname(chat, NULL, AF_UNIX, "x", 1),
	    "connect_hostname family");
	expect_einval(z,
	    async_chat_connect_hostname(chat, NULL, AF_INET, "x", 70000),
	    "connect_hostname port");
	expect_einval(z, async_chat_connect_hostname(NULL, NULL, AF_INET, "x", 1),
	    "connect_hostname NULL chat");
	expect_einval(z, async_chat_connect(NULL, NULL, 0), "connect NULL chat");
	expect_einval(z, async_chat_matched_terminator(NULL), "matched NULL");
	expect_einval(z, async_chat_connected(NULL), "connected NULL");
	expect_einval(z, async_chat_set_arg(NULL, z), "set_arg NULL");
	expect_einval(z, async_chat_pause_reading(NULL), "pause NULL");
	expect_einval(z, async_chat_resume_reading(NULL), "resume NULL");
	expect_einval(z, async_chat_close_when_done(NULL), "cwd NULL");
	expect_einval(z, async_chat_shutdown_when_done(NULL), "shutdown NULL");
	expect_einval(z, async_chat_set_in_buffer_size(NULL, 1), "in NULL");
	expect_einval(z, async_chat_set_out_buffer_size(NULL, 1), "out NULL");
	expect_einval(z, async_chat_set_terminator_none(NULL), "none NULL");
	expect_einval(z, async_chat_set_terminator_line(NULL), "line NULL");
	expect_einval(z, async_chat_set_terminator_count(NULL, 1), "count NULL");
	expect_einval(z, async_chat_push_buffer(NULL, NULL), "buffer NULL");
	expect_einval(z, async_chat_push_reference(NULL, "a", 1, NULL, NULL),
	    "ref NULL");
	expect_einval_push(z,
	    async_chat_push_reference(chat, NULL, 1, NULL, NULL), "ref data");
	expect_einval(z, async_chat_push_with_producer(NULL, NULL, NULL),
	    "producer NULL");
	expect_einval(z, async_chat_push_simple_producer(NULL, "a", 1, 0),
	    "simple NULL");
	expect_einval_push(z, async_chat_push_simple_producer(chat, NULL, 1, 0),
	    "simple data");
	if (async_chat_get_in_buffer_size(NULL) != 0 ||
	    async_chat_get_out_buffer_size(NULL) != 0 ||
	    async_chat_get_bufferevent(NULL) != NULL ||
	    async_chat_get_fd(NULL) != -1 || async_chat_output_pending(NULL) != 0 ||
	    async_chat_dns_error(NULL) != 0 || async_chat_version() == NULL ||
	    async_chat_version_number() != ASYNC_CHAT_VERSION_NUMBER ||
	    async_chat_strerror(0) == NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_FRAME_TOO_LONG) == NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_DNS) == NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_UNKNOWN) == NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_NOMEM) == NULL ||
	    async_chat_strerror(ASYNC_CHAT_ERR_LENGTH) == NULL ||
	    async_chat_strerror(EPIPE) == NULL)
		fz_fail(z, "a NULL query answered wrongly");
	async_chat_close(NULL);
	errno = 0;
	if (async_chat_new(NULL, -1, &z->h, z) != NULL || errno != EINVAL ||
	    async_chat_new(z->base, -1, NULL, z) != NULL ||
	    async_chat_new(z->base, -5, &z->h, z) != NULL ||
	    async_chat_new_bufferevent(NULL, &z->h, z) != NULL ||
	    errno != EINVAL)
		fz_fail(z, "async_chat_new took a bad argument");
	{
		/* a descriptor that is not open: EBADF, for the channel
		 * and for a pushed file */
		int fd = dup(0);

		if (fd >= 0) {
			close(fd);
			errno = 0;
			if (async_chat_new(z->base, fd, &z->h, z) != NULL ||
			    errno != EBADF)
				fz_fail(z, "async_chat_new on a closed fd");
			errno = 0;
			if (async_chat_push_file(chat, fd, 0, -1) != -1 ||
			    errno != EBADF)
				fz_fail(z, "push_file of a closed fd");
		}
		errno = 0;
		if (async_chat_push_file(chat, -1, 0, -1) != -1 ||
		    errno != EBADF)
			fz_fail(z, "push_file of fd -1");
	}
	/* lengths that cannot be queued: refused before data is read */
	errno = 0;
	if (async_chat_push(chat, "", SIZE_MAX) != -1 ||
	    (errno != EMSGSIZE && errno != EPIPE))
		fz_fail(z, "a push of SIZE_MAX bytes: not EMSGSIZE");
	errno = 0;
	if (async_chat_push_reference(chat, "", SIZE_MAX, NULL, NULL) != -1 ||
	    (errno != EMSGSIZE && errno != EPIPE))
		fz_fail(z, "a reference of SIZE_MAX bytes: not EMSGSIZE");
	errno = 0;
	memset(&lf, 0, sizeof(lf));
	lf.width = 4;
	if (async_chat_push_length_prefixed(chat, &lf, "", SIZE_MAX / 2) != -1 ||
	    (errno != EMSGSIZE && errno != EPIPE))
		fz_fail(z, "a framed push of SIZE_MAX / 2 bytes: not EMSGSIZE");
}

static void
on_high_water(struct async_chat *chat, int above, void *arg)
{
	struct fz *z = arg;

	cb_enter(z, chat, "high water");
	if (above != 0 && above != 1)
		fz_fail(z, "high water handler: neither above nor below");
	/* Above runs inside the push that crossed the mark, before the
	 * harness has recorded that push: what a push or a close here
	 * does cannot be ordered, so it only stops reading, as a proxy
	 * would.  Below runs from the loop and may do anything. */
	if (above) {
		if (LIB(async_chat_pause_reading(chat)) != 0)
			fz_fail(z, "pause_reading in the high water handler");
	} else {
		tape_action(z, chat, CTX_DRAIN);
	}
	cb_leave(z);
}

static void
on_shutdown(struct async_chat *chat, int err, void *arg)
{
	struct fz *z = arg;

	cb_enter(z, chat, "shutdown");
	if (err < 0)
		fz_fail(z, "shutdown handler with a negative error");
	tape_action(z, chat, CTX_DRAIN);
	cb_leave(z);
}

/* The calls added in 0.2 beyond terminators and pushes: skip_frame,
 * high water, the shutdown handler, the channel's own timeouts,
 * push_printf and resume_producer. */
static void
action_v2(struct fz *z, struct async_chat *chat, uint8_t b)
{
	struct timeval tv = {0, 1000 + (b >> 3) % 4 * 500};
	size_t low = (b >> 3) % 64, high = low + (b >> 5) * 40;
	int rc;

	switch (b % 8) {
	case 0:
		errno = 0;
		rc = LIB(async_chat_skip_frame(chat));
		if (rc != 0 && !injected(z, rc) && errno != EPROTO)
			fz_fail(z, "skip_frame failed");
		/* the frame loses its bytes: no longer the model's */
		z->model_ok = 0;
		z->count_known = 0;
		break;
	case 1:
		rc = LIB(async_chat_set_high_water(chat, low,
		    b & 0x80 ? 0 : high, b & 0x80 ? NULL : on_high_water));
		if (rc != 0 && !injected(z, rc))
			fz_fail(z, "set_high_water failed");
		break;
	case 2:
		rc = LIB(async_chat_set_shutdown_handler(
		    chat, b & 0x80 ? NULL : on_shutdown));
		if (rc != 0 && !injected(z, rc))
			fz_fail(z, "set_shutdown_handler failed");
		break;
	case 3:
	case 4:
	case 5:
		z->timeouts = 1;
		rc = b % 8 == 3 ? LIB(async_chat_set_idle_timeout(chat,
		                      b & 0x80 ? NULL : &tv))
		    : b % 8 == 4 ? LIB(async_chat_set_write_timeout(chat,
		                       b & 0x80 ? NULL : &tv))
		                 : LIB(async_chat_set_frame_timeout(chat,
		                       b & 0x80 ? NULL : &tv));
		if (rc != 0 && !injected(z, rc))
			fz_fail(z, "setting a timeout failed");
		break;
	case 6: {
		char want[32];
		int n = snprintf(want, sizeof(want), "%u:%s,", b, "v2");

		errno = 0;
		rc = LIB(async_chat_push_printf(chat, "%u:%s,", b, "v2"));
		if (injected(z, rc < 0 ? -1 : 0))
			break;
		if (rc < 0 && refused(z, -1))
			break;
		if (rc != n)
			fz_fail(z, "push_printf queued another length");
		z->pushed += (size_t)n;
		seg_append(z, want, (size_t)n);
		break;
	}
	default:
		if (LIB(async_chat_resume_producer(chat)) != 0)
			fz_fail(z, "resume_producer failed");
		break;
	}
}

/* The extended actions of the tape: every other call of the API. */
static void
tape_action_ext(struct fz *z, struct async_chat *chat, enum ctx where,
    uint8_t a)
{
	struct async_chat_length_field lf;
	unsigned char buf[64];
	size_t n, i;

	switch (a % 24) {
	case 12:
		decode_lf(next_tape, z, &lf);
		set_term_length(z, chat, &lf);
		break;
	case 13:
		set_policy(z, chat, tape_u8(z));
		break;
	case 14:
		n = tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = tape_u8(z);
		if (tape_u8(z) & 1) {
			push_lp(z, chat, NULL, buf, n);
		} else {
			decode_lf(next_tape, z, &lf);
			push_lp(z, chat, &lf, buf, n);
		}
		break;
	case 15:
		n = tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = tape_u8(z);
		if (z->pushed + n <= PUSH_BUDGET)
			push_reference(z, chat, buf, n);
		break;
	case 16:
		n = tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = (unsigned char)(n + i * 5);
		if (z->pushed + n <= PUSH_BUDGET)
			push_simple(z, chat, buf, n, tape_u8(z) % 8);
		break;
	case 17:
		n = tape_u8(z) % sizeof(buf);
		for (i = 0; i < n; i++)
			buf[i] = tape_u8(z);
		push_buffer(z, chat, buf, n);
		break;
	case 18:
		query_any(z, chat);
		break;
	case 19:
		n = 1 + tape_u8(z) % 64;
		if (tape_u8(z) & 1) {
			if (LIB(async_chat_set_in_buffer_size(chat, n)) != 0)
				fz_fail(z, "set_in_buffer_size failed");
		} else {
			if (LIB(async_chat_set_out_buffer_size(chat, n)) != 0)
				fz_fail(z, "set_out_buffer_size failed");
			z->out_size = n;
		}
		break;
	case 20:
		push_file(z, chat, tape_u8(z), tape_u8(z));
		break;
	case 21:
		if (LIB(async_chat_pause_reading(chat)) != 0)
			fz_fail(z, "pause_reading failed");
		resume(z, chat);
		break;
	case 22:
		bad_args_ext(z, chat);
		break;
	case 23:
		action_v2(z, chat, tape_u8(z));
		break;
	default:
		(void)where;
		break;
	}
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
		if (z->ext)
			tape_action_ext(z, chat, where, a);
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
	        z->count_set) {
		fprintf(stderr, "count set %llu after %zu bytes of the frame; "
		    "%zu collected since, %zu now, %llu reported missing\n",
		    (unsigned long long)z->count_set, z->count_base,
		    z->ngot - frame_start(z) - z->count_base, len,
		    (unsigned long long)t.count);
		fz_fail(z, "count inside collect is more than is missing");
	}
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
	z->skipping = 0;
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
		int pol = z->policy;

		/* Under PAUSE a frame is refused when its next byte would
		 * pass the bound; a length field is refused whole. */
		if (pol == ASYNC_CHAT_FRAME_PAUSE && !z->lf_set && !fi.failed &&
		    (z->max_frame == 0 || cur_len(z, chat) < z->max_frame))
			fz_fail(z, "frame too long below the bound");
		if (pol != ASYNC_CHAT_FRAME_SKIP &&
		    async_chat_reading_paused(chat) != 1)
			fz_fail(z, "frame too long but reading not paused");
		if (pol == ASYNC_CHAT_FRAME_SKIP) {
			/* the frame is dropped: no found_terminator */
			z->model_ok = 0;
			z->count_known = 0;
		}
		switch (tape_u8(z) % 4) {
		case 0: {
			/* raise the bound past the frame and go on (a bound
			 * lowered under a frame leaves it longer than the
			 * bound) */
			uint64_t at = cur_len(z, chat);

			if (at < z->max_frame)
				at = z->max_frame;
			set_max_frame(z, chat, at + 1 + tape_u8(z) % 8);
			resume_how(z, chat, !z->lf_set);
			break;
		}
		case 1:
			set_max_frame(z, chat, 0);
			resume(z, chat);
			break;
		case 2:
			do_close(z, chat, CTX_ERROR);
			break;
		default:
			if (z->ext)
				tape_action(z, chat, CTX_ERROR);
			break; /* stay paused */
		}
		if (pol == ASYNC_CHAT_FRAME_SKIP) {
			/* the frame is skipped until one ends, under
			 * whatever terminator is set meanwhile */
			z->count_known = 0;
			z->skipping = 1;
		}
		if (pol == ASYNC_CHAT_FRAME_CLOSE)
			z->close_queued = 1; /* queued once this returns */
	} else if (err == ASYNC_CHAT_ERR_LENGTH && z->ext && z->lf_set) {
		int pol = z->policy;
		struct fm_term t;
		int full;

		if (async_chat_reading_paused(chat) != 1)
			fz_fail(z, "length error but reading not paused");
		switch (tape_u8(z) % 4) {
		case 0:
			/* frame the header again under another terminator */
			full = decode_term(z, next_tape, z, &t) != 0;
			set_term(z, chat, &t, full, CTX_ERROR);
			resume(z, chat);
			break;
		case 1:
			discard(z, chat);
			resume(z, chat);
			break;
		case 2:
			do_close(z, chat, CTX_ERROR);
			break;
		default:
			resume(z, chat); /* EPROTO: still the next input */
			tape_action(z, chat, CTX_ERROR);
			break;
		}
		if (pol == ASYNC_CHAT_FRAME_CLOSE)
			z->close_queued = 1;
	} else if (err == ASYNC_CHAT_ERR_PRODUCER) {
		if (z->producer_failures == 0 && !fi.failed)
			fz_fail(z, "producer error with no producer failed");
		tape_action(z, chat, CTX_ERROR);
	} else if (z->ext &&
	           (((err == EPIPE || err == ECONNRESET || err == ENOTCONN ||
	                 err == ECONNABORTED) &&
	                z->transport != T_PAIR) ||
	               ((err == ETIMEDOUT || err == ASYNC_CHAT_ERR_IDLE_TIMEOUT ||
	                    err == ASYNC_CHAT_ERR_WRITE_TIMEOUT ||
	                    err == ASYNC_CHAT_ERR_FRAME_TIMEOUT) &&
	                   z->timeouts) ||
	               ((err == ENOMEM || err == ASYNC_CHAT_ERR_NOMEM ||
	                    err == ASYNC_CHAT_ERR_UNKNOWN) &&
	                   fi.failed))) {
		trace(" socket error %d %s\n", err, async_chat_strerror(err));
		if (err != ETIMEDOUT && err != ASYNC_CHAT_ERR_IDLE_TIMEOUT &&
		    err != ASYNC_CHAT_ERR_WRITE_TIMEOUT &&
		    err != ASYNC_CHAT_ERR_FRAME_TIMEOUT) {
			z->sock_error = 1;
			z->out_full_ok = 0;
		}
		if (fi.failed)
			z->model_ok = 0;
		/* after a socket error the handler should close; a tape
		 * may keep the channel and go on calling */
		if (tape_u8(z) % 4 != 3)
			do_close(z, chat, CTX_ERROR);
		else
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
	int was = fi_off();

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
	/* every call in handle_free fails with ENOTCONN */
	if (z->ext)
		check_closed_calls(z, chat);
	fi_armed = was;
}

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct fz *z = arg;
	int was = fi_off();

	(void)bev;
	z->activity++;
	received(z);
	fi_armed = was;
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct fz *z = arg;
	int was = fi_off();

	(void)bev;
	z->activity++;
	trace(" peer event 0x%x\n", what);
	if (!(what & BEV_EVENT_EOF) && !fi.failed)
		fz_fail(z, "the peer got an event other than EOF");
	z->peer_eof_seen++;
	/* the EOF of a completed shutdown_when_done: all was sent */
	if (z->shut_queued && !z->explicit_close && !z->freed &&
	    !(z->flags & F_NO_ERROR))
		check_output(z, 1);
	fi_armed = was;
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
	OP_COUNT, /* of the ops of a plain input; extended ones add: */
	OP_TERM_LENGTH = OP_COUNT,
	OP_POLICY,
	OP_PUSH_LP,
	OP_WRITE_LP,
	OP_PEER_CLOSE,
	OP_PEER_RESET,
	OP_ACT,
	OP_FAULT,
	OP_TIMEOUT,
	OP_BAD_ARGS_EXT,
	OP_COUNT_EXT
};

/* The peer's socket: write what waits (recorded as sent once the kernel
 * took it), shut down once it is all written if asked, and read. */
static void
peer_pump(struct fz *z)
{
	int i;

	if (z->peer_fd < 0)
		return;
	for (i = 0; i < 64 && evbuffer_get_length(z->peer_out) > 0; i++) {
		size_t len = evbuffer_get_length(z->peer_out);
		unsigned char *p;
		ssize_t n;

		if (len > 4096)
			len = 4096;
		p = evbuffer_pullup(z->peer_out, (ev_ssize_t)len);
		n = write(z->peer_fd, p, len);
		if (n <= 0) {
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR) {
				/* the channel's end is gone: never sent */
				evbuffer_drain(z->peer_out, len);
				z->peer_eof_wanted = 1;
			}
			break;
		}
		z->activity++;
		if (evbuffer_add(z->sent, p, (size_t)n) != 0)
			abort();
		evbuffer_drain(z->peer_out, (size_t)n);
	}
	if (z->peer_eof_wanted && !z->peer_eof_sent &&
	    evbuffer_get_length(z->peer_out) == 0) {
		shutdown(z->peer_fd, SHUT_WR);
		z->peer_eof_sent = 1;
		z->activity++;
	}
	peer_read_sock(z, z->peer_read_max);
}

/* The peer closes its end (reset: SO_LINGER 0, which TCP answers with
 * RST).  What it had not written yet is never sent. */
static void
peer_close(struct fz *z, int reset)
{
	if (z->peer_fd < 0)
		return;
	if (reset) {
		struct linger lg = {1, 0};

		setsockopt(z->peer_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		z->peer_reset = 1;
	}
	evbuffer_drain(z->peer_out, evbuffer_get_length(z->peer_out));
	close(z->peer_fd);
	z->peer_fd = -1;
	z->peer_gone = 1;
	z->peer_reading = 0;
	/* the channel may lose what it had not read, and cannot send */
	z->out_full_ok = 0;
	if (reset && z->transport == T_TCP)
		z->model_ok = 0;
	if (!z->peer_eof_sent) {
		z->peer_eof_sent = 1;
		z->peer_eof_wanted = 1;
	}
}

static void
peer_write(struct fz *z, const unsigned char *p, size_t n)
{
	if (z->peer_eof_sent || z->peer_eof_wanted || n == 0)
		return;
	if (z->transport != T_PAIR) {
		if (evbuffer_add(z->peer_out, p, n) != 0)
			abort();
		peer_pump(z);
		return;
	}
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
	if (z->transport != T_PAIR) {
		z->peer_eof_wanted = 1;
		peer_pump(z);
		return;
	}
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
	rc = LIB(async_chat_push_file(chat, fd, off, len));
	if (injected(z, rc))
		return;
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
	    async_chat_connected(chat) !=
	        (fi.failed || z->sock_error ? async_chat_connected(chat) : 1) ||
	    async_chat_get_fd(chat) !=
	        (z->transport == T_PAIR ? -1 : z->chat_fd) ||
	    async_chat_get_bufferevent(chat) == NULL ||
	    async_chat_get_in_buffer_size(chat) == 0 ||
	    async_chat_get_out_buffer_size(chat) != z->out_size)
		fz_fail(z, "a query failed on an open channel");
	if (async_chat_reading_paused(chat) < 0)
		fz_fail(z, "reading_paused failed");
}

static void run_loop(struct fz *z, unsigned times);

static void
run_op(struct fz *z, uint8_t op)
{
	struct async_chat *chat = z->chat;
	unsigned char buf[512];
	struct fm_term t;
	size_t n, i;
	int full;
	uint8_t a;
	unsigned k = op % (z->ext ? OP_COUNT_EXT : OP_COUNT);

	switch (k) {
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
		if (z->transport != T_PAIR) {
			z->peer_reading = !(a & 0x80) && !z->peer_gone;
			z->peer_read_max = a & 0x3f;
		} else if (a & 0x80) {
			bufferevent_disable(z->peer, EV_READ);
		} else {
			bufferevent_setwatermark(z->peer, EV_READ, 0, a & 0x3f);
			bufferevent_enable(z->peer, EV_READ);
		}
		return;
	case OP_WRITE_LP: {
		/* a frame under the length field last set */
		unsigned char hdr[96];
		ev_ssize_t hn;

		n = rd_u8(&z->prog) % 40;
		for (i = 0; i < n; i++)
			buf[i] = map_byte(z, rd_u8(&z->prog));
		hn = async_chat_length_field_encode(&z->lf, n, hdr, sizeof(hdr));
		if (hn > 0)
			peer_write(z, hdr, (size_t)hn);
		peer_write(z, buf, n);
		return;
	}
	case OP_PEER_CLOSE:
		if (z->transport == T_PAIR)
			peer_eof(z);
		else
			peer_close(z, 0);
		return;
	case OP_PEER_RESET:
		if (z->transport == T_PAIR)
			peer_eof(z);
		else
			peer_close(z, 1);
		return;
	case OP_FAULT:
		/* allocations fail from a point in the program on */
		a = rd_u8(&z->prog);
		fi.countdown = a & 0x3f;
		fi.sticky = (a & 0x40) != 0;
		return;
	default:
		break;
	}
	if (chat == NULL)
		return; /* closed: only the peer acts */
	switch (k) {
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
	case OP_TERM_LENGTH: {
		struct async_chat_length_field lf;

		decode_lf(next_prog, z, &lf);
		set_term_length(z, chat, &lf);
		break;
	}
	case OP_POLICY:
		set_policy(z, chat, rd_u8(&z->prog));
		break;
	case OP_PUSH_LP: {
		struct async_chat_length_field lf;

		a = rd_u8(&z->prog);
		n = a % 64;
		for (i = 0; i < n; i++)
			buf[i] = rd_u8(&z->prog);
		if (a & 0x80) {
			push_lp(z, chat, NULL, buf, n);
		} else {
			decode_lf(next_prog, z, &lf);
			push_lp(z, chat, &lf, buf, n);
		}
		break;
	}
	case OP_ACT:
		tape_action(z, chat, CTX_APP);
		break;
	case OP_TIMEOUT: {
		/* a timeout set on the bufferevent, as an application may */
		struct timeval tv = {0, 1000};
		struct bufferevent *bev = async_chat_get_bufferevent(chat);

		a = rd_u8(&z->prog);
		z->timeouts = 1;
		LIB(bufferevent_set_timeouts(
		    bev, a & 1 ? &tv : NULL, a & 2 ? &tv : NULL));
		usleep(1500);
		run_loop(z, 1 + (a >> 6));
		if (!z->freed)
			bufferevent_set_timeouts(bev, NULL, NULL);
		break;
	}
	case OP_BAD_ARGS_EXT:
		bad_args_ext(z, chat);
		break;
	default:
		break;
	}
}

static void
run_loop(struct fz *z, unsigned times)
{
	unsigned i;

	for (i = 0; i < times; i++) {
		LIB(event_base_loop(z->base, EVLOOP_NONBLOCK));
		peer_pump(z);
	}
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

/* A connected TCP pair on 127.0.0.1: sv[0] connected, sv[1] accepted.
 * Returns 0, or -1 (the system has no loopback TCP here). */
static int
tcp_pair(int sv[2])
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int l, c = -1, a = -1;

	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(l, 1) != 0 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) != 0)
		goto fail;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sin, sizeof(sin)) != 0)
		goto fail;
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (a < 0)
		goto fail;
	close(l);
	sv[0] = c;
	sv[1] = a;
	return 0;
fail:
	if (c >= 0)
		close(c);
	close(l);
	return -1;
}

/* The channel's transport.  Returns 0, or -1 if the channel could not
 * be made (allocation failures only), with everything released. */
static int
make_channel(struct fz *z)
{
	struct bufferevent *pair[2];
	int sv[2], rc;

	if (z->transport == T_PAIR) {
		if (bufferevent_pair_new(z->base,
		        z->flags & F_DEFER ? BEV_OPT_DEFER_CALLBACKS : 0,
		        pair) != 0)
			abort();
		z->peer = pair[1];
		bufferevent_setcb(z->peer, peer_read, NULL, peer_event, z);
		bufferevent_enable(z->peer, EV_READ | EV_WRITE);
		z->chat = LIB(async_chat_new_bufferevent(pair[0], &z->h, z));
		if (z->chat != NULL)
			return 0;
		if (!fi.failed || errno != ENOMEM)
			fz_fail(z, "async_chat_new_bufferevent failed");
		/* the bufferevent is still ours */
		bufferevent_free(pair[0]);
		return -1;
	}
	rc = -1;
	if (z->transport == T_TCP)
		rc = tcp_pair(sv);
	if (rc != 0) {
		z->transport = T_UNIX;
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
			abort();
	}
	if ((z->xflags & F_X_TRANSPORT) == 3) {
		int t = sv[0];

		sv[0] = sv[1];
		sv[1] = t;
	}
	if (z->xflags & F_X_SMALLBUF) {
		int sz = 2048;

		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	}
	if (fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK) != 0)
		abort();
	z->peer_fd = sv[1];
	z->chat = LIB(async_chat_new(z->base, sv[0], &z->h, z));
	if (z->chat == NULL) {
		if (!fi.failed || errno != ENOMEM)
			fz_fail(z, "async_chat_new failed");
		close(sv[0]); /* the caller keeps fd on failure */
		return -1;
	}
	z->chat_fd = sv[0];
	return 0;
}

static int
setup(struct fz *z, const uint8_t *data, size_t size)
{
	static const unsigned char sym[] = {
	    'a', '\r', '\n', '\0', 'b', '$', ':', 0xff, ' '};
	struct rd r = {data, size};
	size_t i;
	uint8_t b;

	memset(z, 0, sizeof(*z));
	z->chat_fd = z->peer_fd = -1;
	fi.countdown = -1;
	fi.sticky = 0;
	fi.failed = 0;
	if (r.n > 1 && r.p[0] == EXT_MAGIC) {
		rd_u8(&r);
		z->ext = 1;
		z->xflags = rd_u8(&r);
		if (z->xflags & F_X_FAULTS) {
			fi.countdown = rd_u8(&r);
			fi.countdown |= (long)rd_u8(&r) << 8;
			fi.sticky = (z->xflags & F_X_STICKY) != 0;
		}
		switch (z->xflags & F_X_TRANSPORT) {
		case 0:
			z->transport = T_PAIR;
			break;
		case 1:
			z->transport = T_UNIX;
			break;
		default:
			z->transport = T_TCP;
			break;
		}
	}
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
	z->out_full_ok = 1;
	z->peer_reading = 1;
	z->fds_before = count_fds();
	got_reserve(z, 256);
	z->out_size = ASYNC_CHAT_DEFAULT_BUFFER_SIZE;

	z->h.collect_incoming_data = z->flags & F_MESSAGE ? NULL : on_collect;
	z->h.found_terminator = on_found;
	if (z->xflags & F_X_NO_FOUND) {
		/* frames end silently: the model cannot follow them */
		z->h.found_terminator = NULL;
		z->no_found = 1;
		z->model_ok = 0;
	}
	z->h.handle_close = z->flags & F_NO_CLOSE ? NULL : on_close;
	z->h.handle_error = z->flags & F_NO_ERROR ? NULL : on_error;
	z->h.handle_drain = z->flags & F_NO_DRAIN ? NULL : on_drain;
	z->h.handle_free = on_free;

	z->sent = evbuffer_new();
	z->rcv = evbuffer_new();
	z->peer_out = evbuffer_new();
	z->base = event_base_new();
	if (z->sent == NULL || z->rcv == NULL || z->peer_out == NULL ||
	    z->base == NULL)
		abort();
	if (make_channel(z) != 0)
		return -1;
	if (z->xflags & (F_X_SKIP | F_X_CLOSEPOL))
		set_policy(z, z->chat,
		    z->xflags & F_X_SKIP ? ASYNC_CHAT_FRAME_SKIP
		                         : ASYNC_CHAT_FRAME_CLOSE);
	if (z->flags & F_TERM0) {
		struct fm_term t;
		int full = decode_term(z, next_prog, z, &t) != 0;

		set_term(z, z->chat, &t, full, CTX_APP);
	}
	return 0;
}

/* Sockets: the peer takes all there is, for the checks at the end. */
static void
peer_drain(struct fz *z)
{
	size_t before;
	unsigned quiet = 0, turns = 0;

	if (z->peer_fd < 0)
		return;
	z->peer_reading = 1;
	z->peer_read_max = 0;
	while (quiet < 3 && turns++ < 200 && !z->peer_read_eof) {
		before = evbuffer_get_length(z->rcv);
		peer_read_sock(z, 0);
		run_loop(z, 1);
		quiet = evbuffer_get_length(z->rcv) == before ? quiet + 1 : 0;
	}
}

static void
teardown(struct fz *z)
{
	size_t i;

	/* nothing fails from here on */
	fi.countdown = -1;
	if (z->chat != NULL) {
		z->explicit_close = 1;
		async_chat_close(z->chat);
		z->chat = NULL;
	}
	if (z->frees != 1)
		fz_fail(z, "handle_free did not run exactly once");
	if (z->transport != T_PAIR) {
		/* closing the channel closed its socket: the peer reads the
		 * rest and then its EOF */
		peer_drain(z);
		/* (over TCP the rest and the FIN may wait for the window:
		 * no waiting here) */
		if (z->peer_fd >= 0 && !z->peer_read_eof &&
		    z->transport == T_UNIX)
			fz_fail(z, "the peer never saw the channel close");
		if (z->peer_fd >= 0) {
			struct linger lg = {1, 0};

			/* no TIME_WAIT left behind */
			setsockopt(z->peer_fd, SOL_SOCKET, SO_LINGER, &lg,
			    sizeof(lg));
			close(z->peer_fd);
			z->peer_fd = -1;
		}
		for (i = 0; i < 2; i++)
			event_base_loop(z->base, EVLOOP_NONBLOCK);
	} else {
		/* closing one end of a pair gives the other its EOF */
		for (i = 0; i < 2; i++)
			event_base_loop(z->base, EVLOOP_NONBLOCK);
		if (z->peer_eof_seen == 0)
			fz_fail(z, "the peer never saw the channel close");
		bufferevent_free(z->peer);
		/* deferred callbacks of the pair run before the base goes */
		for (i = 0; i < 4; i++)
			event_base_loop(z->base, EVLOOP_NONBLOCK);
	}
	event_base_free(z->base);
	segs_free(z);
	evbuffer_free(z->sent);
	evbuffer_free(z->peer_out);
	/* pushed references may have come through to here whole */
	evbuffer_free(z->rcv);
	if (z->live_producers != 0)
		fz_fail(z, "a producer was never freed");
	if (z->live_refs != 0)
		fz_fail(z, "a pushed reference was never cleaned up");
	if (z->fds_before >= 0 && count_fds() != z->fds_before)
		fz_fail(z, "a file or socket was never closed");
	free(z->got);
	free(z->end);
	free(z->matched);
}

/* A channel that could not be made: nothing of it is left. */
static void
teardown_failed(struct fz *z)
{
	fi.countdown = -1;
	if (z->frees != 0)
		fz_fail(z, "handle_free for a channel never made");
	if (z->peer != NULL)
		bufferevent_free(z->peer);
	if (z->peer_fd >= 0)
		close(z->peer_fd);
	event_base_free(z->base);
	evbuffer_free(z->sent);
	evbuffer_free(z->peer_out);
	evbuffer_free(z->rcv);
	if (z->fds_before >= 0 && count_fds() != z->fds_before)
		fz_fail(z, "a socket was never closed");
	free(z->got);
}

/*
 * Group inputs start with the byte 0xfd: a program over up to G_CHANS
 * channels on bufferevent pairs and two channel groups.  Checked: every
 * group's count is the number of its members the program expects,
 * foreach visits only open members of its group and stops when asked or
 * when the group is freed, group_push reaches every member, handle_free
 * runs exactly once per channel (and add fails there with ENOTCONN), the
 * error returns of bad arguments, and allocation failures in add, new and
 * close_when_done's deadline.
 */
#define GROUP_MAGIC 0xfd
#define G_CHANS 4
#define G_GROUPS 2
#define G_ACTIONS 200

struct gz;

struct gslot {
	struct gz *gz;
	int idx;
	struct async_chat *chat;
	struct bufferevent *peer;
	int frees;
	int made;
	int mem; /* the group it is in, or -1 */
	int cwd; /* close_when_done asked, or the peer gone: pushes may fail */
};

struct gz {
	struct event_base *base;
	struct gslot s[G_CHANS];
	struct async_chat_group *g[G_GROUPS];
	int dying[G_GROUPS]; /* freed inside a foreach still running */
	struct rd prog;
	unsigned actions;
	int depth;
	int in_free; /* a handle_free runs */
};

static void
g_fail(const char *what)
{
	fprintf(stderr, "fuzz_channel (group): %s\n", what);
	abort();
}

static size_t
g_expected(const struct gz *z, int k)
{
	size_t n = 0;
	int i;

	for (i = 0; i < G_CHANS; i++)
		if (z->s[i].chat != NULL && z->s[i].mem == k)
			n++;
	return n;
}

/* Members that take pushes. */
static size_t
g_open(const struct gz *z, int k)
{
	size_t n = 0;
	int i;

	for (i = 0; i < G_CHANS; i++)
		if (z->s[i].chat != NULL && z->s[i].mem == k && !z->s[i].cwd)
			n++;
	return n;
}

static void
g_check_counts(const struct gz *z)
{
	int k;

	for (k = 0; k < G_GROUPS; k++)
		if (z->g[k] != NULL && !z->dying[k] &&
		    async_chat_group_count(z->g[k]) != g_expected(z, k))
			g_fail("group count is not the members expected");
}

static void
g_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	(void)chat;
	(void)data;
	(void)len;
	(void)arg;
}

static void
g_free_cb(struct async_chat *chat, void *arg)
{
	struct gslot *s = arg;
	struct gz *z = s->gz;
	int k;

	if (++s->frees != 1)
		g_fail("handle_free ran twice");
	if (s->chat != chat)
		g_fail("handle_free for another channel");
	/* a closed channel joins no group */
	for (k = 0; k < G_GROUPS; k++) {
		if (z->g[k] == NULL || z->dying[k])
			continue;
		if (async_chat_group_add(z->g[k], chat) != -1 ||
		    errno != ENOTCONN)
			g_fail("group_add of a closed channel did not fail");
	}
	s->chat = NULL;
	s->mem = -1;
	z->in_free++;
	g_check_counts(z);
	z->in_free--;
}

static const struct async_chat_handlers g_handlers = {
	g_collect, NULL, NULL, NULL, NULL, NULL, g_free_cb
};

static void
g_peer_read(struct bufferevent *bev, void *arg)
{
	(void)arg;
	evbuffer_drain(bufferevent_get_input(bev),
	    evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
g_new_chan(struct gz *z, int i)
{
	struct gslot *s = &z->s[i];
	struct bufferevent *pair[2];

	if (s->chat != NULL || s->made)
		return;
	if (bufferevent_pair_new(z->base, 0, pair) != 0)
		g_fail("bufferevent_pair_new failed");
	s->chat = async_chat_new_bufferevent(pair[0], &g_handlers, s);
	if (s->chat == NULL)
		g_fail("a channel on a pair failed");
	s->made = 1;
	s->peer = pair[1];
	s->mem = -1;
	bufferevent_setcb(s->peer, g_peer_read, NULL, NULL, NULL);
	bufferevent_enable(s->peer, EV_READ);
}

static void
g_add(struct gz *z, int k, int i)
{
	struct gslot *s = &z->s[i];
	int rc;

	if (s->chat == NULL || z->g[k] == NULL || z->dying[k])
		return;
	rc = async_chat_group_add(z->g[k], s->chat);
	if (s->mem == k) {
		if (rc != 0)
			g_fail("adding a member again failed");
	} else if (s->mem >= 0) {
		if (rc != -1 || errno != EBUSY)
			g_fail("a channel joined a second group");
	} else {
		if (rc != 0)
			g_fail("group_add failed");
		s->mem = k;
	}
}

static void
g_remove(struct gz *z, int k, int i)
{
	struct gslot *s = &z->s[i];
	int rc;

	if (s->chat == NULL || z->g[k] == NULL || z->dying[k])
		return;
	rc = async_chat_group_remove(z->g[k], s->chat);
	if (s->mem == k) {
		if (rc != 0)
			g_fail("group_remove of a member failed");
		s->mem = -1;
	} else if (rc != -1 || errno != ENOENT) {
		g_fail("group_remove of a non-member did not fail");
	}
}

static void
g_close(struct gz *z, int i)
{
	if (z->s[i].chat != NULL)
		async_chat_close(z->s[i].chat);
	if (z->s[i].chat != NULL)
		g_fail("async_chat_close ran no handle_free");
}

/* The group is gone (or going): its members are in none. */
static void
g_forget(struct gz *z, int k)
{
	int i;

	for (i = 0; i < G_CHANS; i++)
		if (z->s[i].mem == k)
			z->s[i].mem = -1;
}

struct gvisit {
	struct gz *z;
	int k;
	int stopped;
	unsigned visits;
};

static void g_foreach(struct gz *z, int k);

static void
g_close_all(struct gz *z, int k)
{
	int i;

	if (z->g[k] == NULL || z->dying[k])
		return;
	async_chat_group_close_all(z->g[k]);
	if (z->dying[k])
		return;
	for (i = 0; i < G_CHANS; i++)
		if (z->s[i].chat != NULL && z->s[i].mem == k)
			g_fail("close_all left a member open");
	if (async_chat_group_count(z->g[k]) != 0)
		g_fail("close_all left a count");
}

static void
g_close_when_done(struct gz *z, int k, uint8_t a)
{
	struct timeval tv = {0, (a & 0x0f) * 1000};
	int rc, i;

	if (z->g[k] == NULL || z->dying[k])
		return;
	for (i = 0; i < G_CHANS; i++)
		if (z->s[i].mem == k)
			z->s[i].cwd = 1;
	rc = async_chat_group_close_when_done(z->g[k], a & 0x10 ? &tv : NULL);
	if (rc != 0)
		g_fail("group_close_when_done failed");
}

static int
g_visit(struct async_chat *chat, void *arg)
{
	struct gvisit *v = arg;
	struct gz *z = v->z;
	struct gslot *s = async_chat_get_arg(chat);
	uint8_t a;
	int o;

	if (s == NULL || s->chat != chat || s->mem != v->k)
		g_fail("foreach visited a channel not in the group");
	if (z->dying[v->k])
		g_fail("foreach went on in a freed group");
	if (v->stopped)
		g_fail("foreach went on after its function said stop");
	v->visits++;
	if (z->actions++ >= G_ACTIONS)
		return 0;
	a = rd_u8(&z->prog);
	o = (a >> 4) % G_CHANS;
	switch (a % 13) {
	case 0:
		break;
	case 1:
		g_close(z, s->idx);
		break;
	case 2:
		g_close(z, o);
		break;
	case 3:
		g_remove(z, v->k, s->idx);
		break;
	case 4:
		g_remove(z, v->k, o);
		break;
	case 5:
		async_chat_group_free(z->g[v->k]);
		z->dying[v->k] = 1;
		g_forget(z, v->k);
		break;
	case 6:
		v->stopped = 1;
		return 1;
	case 7:
		if (async_chat_push(chat, "x\n", 2) != 0 && !s->cwd)
			g_fail("push in foreach failed");
		break;
	case 8:
		g_add(z, v->k, o);
		break;
	case 9:
		if (z->depth < 2)
			g_foreach(z, (a >> 6) & 1);
		break;
	case 10:
		if (async_chat_close_when_done(chat) != 0 && !s->cwd)
			g_fail("close_when_done in foreach failed");
		s->cwd = 1;
		break;
	case 11:
		g_close_all(z, v->k);
		break;
	default:
		g_close_when_done(z, v->k, (uint8_t)(a >> 4));
		break;
	}
	g_check_counts(z);
	return 0;
}

static void
g_foreach(struct gz *z, int k)
{
	struct gvisit v = {z, k, 0, 0};
	struct async_chat_group *g = z->g[k];
	size_t before;
	int rc;

	if (g == NULL || z->dying[k])
		return;
	before = async_chat_group_count(g);
	z->depth++;
	rc = async_chat_group_foreach(g, g_visit, &v);
	z->depth--;
	if (rc != (v.stopped ? 1 : 0))
		g_fail("foreach returned other than its function");
	if (!v.stopped && !z->dying[k] && z->actions < G_ACTIONS &&
	    v.visits > before + G_CHANS)
		g_fail("foreach visited more than its members");
	if (z->dying[k] && z->depth == 0) {
		z->g[k] = NULL;
		z->dying[k] = 0;
	}
}

static void
g_bad_args(struct gz *z)
{
	struct timeval neg = {-1, 0}, negu = {0, -1};
	struct async_chat_group *g = z->g[0] != NULL && !z->dying[0] ?
	    z->g[0] : NULL;
	struct async_chat *c = z->s[0].chat;

	errno = 0;
	if (async_chat_group_new(NULL) != NULL || errno != EINVAL)
		g_fail("group_new(NULL)");
	if (async_chat_group_add(NULL, c) != -1 || errno != EINVAL)
		g_fail("group_add(NULL, ...)");
	if (async_chat_group_remove(NULL, c) != -1 || errno != EINVAL)
		g_fail("group_remove(NULL, ...)");
	if (async_chat_group_count(NULL) != 0)
		g_fail("group_count(NULL)");
	if (async_chat_group_foreach(NULL, g_visit, NULL) != -1 ||
	    errno != EINVAL)
		g_fail("group_foreach(NULL, ...)");
	if (async_chat_group_push(NULL, "a", 1) != -1 || errno != EINVAL)
		g_fail("group_push(NULL, ...)");
	if (async_chat_group_close_when_done(NULL, NULL) != -1 ||
	    errno != EINVAL)
		g_fail("group_close_when_done(NULL, ...)");
	async_chat_group_close_all(NULL);
	async_chat_group_free(NULL);
	if (g == NULL)
		return;
	if (async_chat_group_add(g, NULL) != -1 || errno != EINVAL)
		g_fail("group_add(g, NULL)");
	if (async_chat_group_remove(g, NULL) != -1 || errno != EINVAL)
		g_fail("group_remove(g, NULL)");
	if (async_chat_group_foreach(g, NULL, NULL) != -1 || errno != EINVAL)
		g_fail("group_foreach(g, NULL)");
	if (async_chat_group_push(g, NULL, 1) != -1 || errno != EINVAL)
		g_fail("group_push(g, NULL, 1)");
	if (async_chat_group_close_when_done(g, &neg) != -1 ||
	    errno != EINVAL ||
	    async_chat_group_close_when_done(g, &negu) != -1 ||
	    errno != EINVAL)
		g_fail("group_close_when_done with a negative timeout");
}

/* The first allocation of the call fails. */
static void
g_faults(struct gz *z, uint8_t a)
{
	int k = a & 1, i = (a >> 1) % G_CHANS;
	struct async_chat_group *g;
	struct timeval tv = {0, 1000};
	int rc;

	fi.countdown = 0;
	fi.sticky = 0;
	fi_armed = 1;
	switch ((a >> 3) % 3) {
	case 0:
		errno = 0;
		g = async_chat_group_new(z->base);
		fi_armed = 0;
		if (g != NULL || errno != ENOMEM)
			g_fail("group_new did not fail with ENOMEM");
		break;
	case 1:
		if (z->g[k] == NULL || z->dying[k] || z->s[i].chat == NULL ||
		    z->s[i].mem >= 0)
			break;
		rc = async_chat_group_add(z->g[k], z->s[i].chat);
		fi_armed = 0;
		if (rc != -1 || errno != ENOMEM)
			g_fail("group_add did not fail with ENOMEM");
		break;
	default:
		/* the deadline's timer is made on the first timeout only */
		if (z->g[k] == NULL || z->dying[k])
			break;
		for (i = 0; i < G_CHANS; i++)
			if (z->s[i].mem == k)
				z->s[i].cwd = 1;
		rc = async_chat_group_close_when_done(z->g[k], &tv);
		fi_armed = 0;
		if (rc == -1 && errno != ENOMEM)
			g_fail("group_close_when_done failed but not ENOMEM");
		break;
	}
	fi_armed = 0;
	fi.countdown = -1;
}

static void
g_loop(struct gz *z, uint8_t a)
{
	struct timeval tv = {0, (a & 7) * 1000};
	unsigned i;

	if (a & 8) {
		event_base_loopexit(z->base, &tv);
		event_base_dispatch(z->base);
	}
	for (i = 0; i < 1 + (unsigned)(a >> 4) % 4; i++)
		event_base_loop(z->base, EVLOOP_NONBLOCK);
}

static void
g_run(const uint8_t *data, size_t size)
{
	static struct gz z;
	unsigned steps = 0;
	int i, k, free_first;
	ev_ssize_t n;

	memset(&z, 0, sizeof(z));
	z.prog.p = data;
	z.prog.n = size;
	free_first = rd_u8(&z.prog) & 1;
	z.base = event_base_new();
	if (z.base == NULL)
		g_fail("event_base_new failed");
	for (i = 0; i < G_CHANS; i++) {
		z.s[i].gz = &z;
		z.s[i].idx = i;
		z.s[i].mem = -1;
	}
	z.g[0] = async_chat_group_new(z.base);
	if (z.g[0] == NULL)
		g_fail("group_new failed");
	while (z.prog.n > 0 && steps++ < 200) {
		uint8_t op = rd_u8(&z.prog), a = rd_u8(&z.prog);

		k = (a >> 7) & 1;
		i = a % G_CHANS;
		z.actions = 0;
		switch (op % 16) {
		case 0:
			g_new_chan(&z, i);
			if (a & 0x40)
				g_add(&z, k, i);
			break;
		case 1:
			g_add(&z, k, i);
			break;
		case 2:
			g_remove(&z, k, i);
			break;
		case 3:
			g_foreach(&z, k);
			break;
		case 4:
			if (z.g[k] == NULL)
				break;
			n = async_chat_group_push(z.g[k], "hello\n", a & 7);
			if (n < (ev_ssize_t)g_open(&z, k) ||
			    n > (ev_ssize_t)g_expected(&z, k))
				g_fail("group_push missed a member");
			break;
		case 5:
			g_close_when_done(&z, k, a);
			break;
		case 6:
			g_close_all(&z, k);
			break;
		case 7:
			async_chat_group_free(z.g[k]);
			z.g[k] = NULL;
			g_forget(&z, k);
			break;
		case 8:
			if (z.g[k] == NULL) {
				z.g[k] = async_chat_group_new(z.base);
				if (z.g[k] == NULL)
					g_fail("group_new failed");
			}
			break;
		case 9:
			g_close(&z, i);
			break;
		case 10:
			/* the peer goes: the channel's default close */
			if (z.s[i].peer != NULL) {
				bufferevent_free(z.s[i].peer);
				z.s[i].peer = NULL;
				z.s[i].cwd = 1;
			}
			break;
		case 11:
			g_bad_args(&z);
			break;
		case 12:
			g_faults(&z, a);
			break;
		case 13:
			if (z.s[i].chat != NULL &&
			    async_chat_close_when_done(z.s[i].chat) != 0 &&
			    !z.s[i].cwd)
				g_fail("close_when_done failed");
			z.s[i].cwd = 1;
			break;
		default:
			g_loop(&z, a);
			break;
		}
		g_check_counts(&z);
	}
	/* groups freed before or after their members close */
	for (k = 0; k < G_GROUPS && free_first; k++) {
		async_chat_group_free(z.g[k]);
		z.g[k] = NULL;
		g_forget(&z, k);
	}
	for (i = 0; i < G_CHANS; i++)
		g_close(&z, i);
	for (k = 0; k < G_GROUPS; k++)
		async_chat_group_free(z.g[k]);
	for (i = 0; i < 2; i++)
		event_base_loop(z.base, EVLOOP_NONBLOCK);
	for (i = 0; i < G_CHANS; i++) {
		if (z.s[i].peer != NULL)
			bufferevent_free(z.s[i].peer);
		if (z.s[i].made && z.s[i].frees != 1)
			g_fail("handle_free did not run exactly once");
	}
	for (i = 0; i < 4; i++)
		event_base_loop(z.base, EVLOOP_NONBLOCK);
	event_base_free(z.base);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* before libevent allocates anything */
	event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
	/* a write to a socket whose peer has gone: EPIPE, not a signal */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz z;
	unsigned steps = 0;

	if (size > 0 && data[0] == GROUP_MAGIC) {
		g_run(data + 1, size - 1);
		return 0;
	}
	if (setup(&z, data, size) != 0) {
		teardown_failed(&z);
		return 0;
	}
	while (z.prog.n > 0 && steps++ < 400) {
		uint8_t op = rd_u8(&z.prog);

		trace("op %u, loop %u\n",
		    op % (z.ext ? OP_COUNT_EXT : OP_COUNT), op >> 5);
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
	    !z.peer_reset && !z.sock_error && !fi.failed &&
	    async_chat_reading_paused(z.chat) == 0 && z.closes != 1)
		fz_fail(&z, "the peer's EOF was never handled");
	/* AF_UNIX: what a drain or a completed close said was sent has
	 * reached the peer.  (Over TCP the rest may wait for the peer's
	 * window to open, which takes the stack's timers: not checked.) */
	if (z.transport == T_UNIX && z.need_bytes > 0 && z.out_ok &&
	    z.out_full_ok && !fi.failed && !z.peer_gone) {
		peer_drain(&z);
		check_output(&z, 0);
		if (z.out_ok && evbuffer_get_length(z.rcv) < z.need_bytes)
			fz_fail(&z, "output said sent never reached the peer");
	}
	teardown(&z);
	return 0;
}
