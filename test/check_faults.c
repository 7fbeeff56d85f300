/*
 * check_faults.c - libasynchat under adverse conditions: every allocation
 * of a representative session failed in turn, peers that flood a channel
 * with an endless frame, a peer that never reads, and many concurrent
 * connections (a reduced run of bench/load).
 *
 * Allocations are interposed twice.  libevent's go through
 * event_set_mem_functions(), installed first thing in main().  The
 * library's own malloc, calloc, realloc and free are redirected at link
 * time with -Wl,--wrap (see test/faults.am): the library comes in as the
 * static convenience archive, so its objects are linked into this program
 * and the linker rewrites their references to __wrap_malloc and so on,
 * with no change to lib/ and no dependence on symbol interposition in a
 * shared library.  The suite's own code and Check are rewritten too, so
 * the hooks fail an allocation only while armed: inside a libasynchat
 * call or the event loop, never inside the test's handlers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* dladdr(), memmem() */
#endif

#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "fixture.h"

/* bench/load's load_run(), for a reduced run of it (part 4). */
#define LOAD_EMBEDDED
#include "../bench/load.c"

#define WAIT_MS 60000 /* bound on every wait; tests normally take far less */

#ifdef __SANITIZE_ADDRESS__
/* AddressSanitizer keeps freed blocks in a quarantine of 256 MiB by
 * default: a gigabyte streamed through evbuffers would fill it and grow
 * the resident size that the floods bound.  A small one still catches a
 * use after a recent free. */
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "quarantine_size_mb=16";
}
#endif

/* Peak resident set size of this process, in KiB. */
static long
peak_rss_kib(void)
{
	struct rusage ru;

	ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
	return ru.ru_maxrss;
}

/*
 * The allocation hooks.
 */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void __real_free(void *p);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void __wrap_free(void *p);

enum { SRC_LIB, SRC_EVENT };

#define FI_FRAMES 16
#define FI_TABLE (1u << 15)
#define FI_TOMB ((void *)1)

static struct {
	int armed;             /* library or libevent code runs: may fail */
	int tracking;          /* record live blocks in table */
	int sticky;            /* fail every allocation from fail_at on */
	unsigned long fail_at; /* 0: fail none */
	unsigned long count;   /* armed allocations so far */
	unsigned long by_src[2];
	unsigned long failed;
	int first_src;         /* of the first failed allocation */
	int depth;
	void *stack[FI_FRAMES];
	size_t live;
	int overflow;
	void *table[FI_TABLE]; /* blocks allocated while tracking */
} fi;

static size_t
fi_slot(const void *p)
{
	uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> 40) & (FI_TABLE - 1);
}

static void
fi_track(void *p)
{
	size_t i = fi_slot(p), n;

	for (n = 0; n < FI_TABLE; n++, i = (i + 1) & (FI_TABLE - 1)) {
		if (fi.table[i] == NULL || fi.table[i] == FI_TOMB) {
			fi.table[i] = p;
			fi.live++;
			return;
		}
	}
	fi.overflow = 1;
}

static void
fi_untrack(const void *p)
{
	size_t i = fi_slot(p), n;

	for (n = 0; n < FI_TABLE && fi.table[i] != NULL;
	     n++, i = (i + 1) & (FI_TABLE - 1)) {
		if (fi.table[i] == p) {
			fi.table[i] = FI_TOMB;
			fi.live--;
			return;
		}
	}
}

/* Whether this allocation fails; caller is the hook's return address.
 * The first failure records its call stack from the caller on. */
static int
fi_fail(int src, void *caller)
{
	int i;

	if (!fi.armed)
		return 0;
	fi.count++;
	fi.by_src[src]++;
	if (fi.fail_at == 0 || fi.count < fi.fail_at ||
	    (fi.count > fi.fail_at && !fi.sticky))
		return 0;
	if (fi.failed++ == 0) {
		fi.first_src = src;
		fi.depth = backtrace(fi.stack, FI_FRAMES);
		for (i = 0; i < fi.depth && fi.stack[i] != caller; i++)
			;
		if (i == fi.depth) { /* no frame info: the caller alone */
			fi.stack[0] = caller;
			fi.depth = 1;
			i = 0;
		}
		memmove(fi.stack, fi.stack + i,
		    (size_t)(fi.depth - i) * sizeof(fi.stack[0]));
		fi.depth -= i;
	}
	return 1;
}

static void *
fi_alloc_done(void *p)
{
	if (p != NULL && fi.tracking)
		fi_track(p);
	return p;
}

static void *
fi_realloc(int src, void *caller, void *old, size_t size)
{
	void *p;

	if (fi_fail(src, caller)) {
		errno = ENOMEM;
		return NULL;
	}
	p = __real_realloc(old, size);
	if (old != NULL && (p != NULL || size == 0) && fi.tracking)
		fi_untrack(old);
	return fi_alloc_done(p);
}

static void
fi_free(void *p)
{
	if (p != NULL && fi.tracking)
		fi_untrack(p);
	__real_free(p);
}

void *
__wrap_malloc(size_t size)
{
	if (fi_fail(SRC_LIB, __builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	return fi_alloc_done(__real_malloc(size));
}

void *
__wrap_calloc(size_t n, size_t size)
{
	if (fi_fail(SRC_LIB, __builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	return fi_alloc_done(__real_calloc(n, size));
}

void *
__wrap_realloc(void *p, size_t size)
{
	return fi_realloc(SRC_LIB, __builtin_return_address(0), p, size);
}

void
__wrap_free(void *p)
{
	fi_free(p);
}

static void *
ev_malloc(size_t size)
{
	if (fi_fail(SRC_EVENT, __builtin_return_address(0))) {
		errno = ENOMEM;
		return NULL;
	}
	return fi_alloc_done(__real_malloc(size));
}

static void *
ev_realloc(void *p, size_t size)
{
	return fi_realloc(SRC_EVENT, __builtin_return_address(0), p, size);
}

static void
ev_free(void *p)
{
	fi_free(p);
}

/* Around a libasynchat call or a turn of the loop: allocations may fail. */
static int
lib_begin(void)
{
	int was = fi.armed;

	fi.armed = 1;
	return was;
}

/* At the top of every handler: the application's own code never fails. */
static int
app_begin(void)
{
	int was = fi.armed;

	fi.armed = 0;
	return was;
}

static void
fi_restore(int was)
{
	fi.armed = was;
}

static void
fi_start(unsigned long fail_at, int sticky)
{
	memset(&fi, 0, sizeof(fi));
	fi.fail_at = fail_at;
	fi.sticky = sticky;
	fi.tracking = 1;
}

/* Stop tracking; the number of blocks still live (leaked). */
static size_t
fi_stop(void)
{
	fi.tracking = 0;
	fi.armed = 0;
	return fi.live;
}

/*
 * Failure points: the call stack of each failed allocation, without
 * libevent's allocator wrappers, identifies where it failed.
 */

#define POINTS_MAX 4096
#define PATH_FRAMES 3

struct points {
	void *path[POINTS_MAX][PATH_FRAMES];
	int src[POINTS_MAX];
	size_t npaths;
	void *site[POINTS_MAX];
	size_t nsites, nsites_src[2];
};

static int
is_allocator_frame(void *pc)
{
	Dl_info info;

	return dladdr(pc, &info) != 0 && info.dli_sname != NULL &&
	    strncmp(info.dli_sname, "event_mm_", 9) == 0;
}

static int
frame_is(void *pc, const char *name)
{
	Dl_info info;

	return dladdr(pc, &info) != 0 && info.dli_sname != NULL &&
	    strcmp(info.dli_sname, name) == 0;
}

/* libevent 2.1's bufferevent_socket_new() ignores the failure of its own
 * evbuffer_add_cb(): the bufferevent it returns never schedules a write
 * when data is added to its output, so what is pushed once the output
 * has drained waits for ever, and libasynchat cannot see it.  Such a
 * session may stall; it must still end without a crash or a leak. */
static int
failed_in_libevent_socket_new(void)
{
	int i;

	if (fi.failed == 0 || fi.first_src != SRC_EVENT)
		return 0;
	for (i = 0; i + 1 < fi.depth; i++)
		if (frame_is(fi.stack[i], "evbuffer_add_cb"))
			return frame_is(fi.stack[i + 1],
			    "bufferevent_socket_new");
	return 0;
}

static void
print_frame(void *pc)
{
	Dl_info info;
	const char *file;

	if (dladdr(pc, &info) == 0) {
		printf(" %p", pc);
		return;
	}
	if (info.dli_sname != NULL) {
		printf(" %s+%#lx", info.dli_sname,
		    (unsigned long)((char *)pc - (char *)info.dli_saddr));
		return;
	}
	file = strrchr(info.dli_fname, '/');
	printf(" %s+%#lx", file != NULL ? file + 1 : info.dli_fname,
	    (unsigned long)((char *)pc - (char *)info.dli_fbase));
}

/* Record where the session's first failure happened; 1 if new. */
static int
points_add(struct points *pt, int verbose)
{
	void *path[PATH_FRAMES] = { NULL };
	int i = 0, n = 0;
	size_t k;

	if (fi.failed == 0)
		return 0;
	while (i < fi.depth && is_allocator_frame(fi.stack[i]))
		i++;
	for (; i < fi.depth && n < PATH_FRAMES; i++)
		path[n++] = fi.stack[i];
	for (k = 0; k < pt->nsites && pt->site[k] != path[0]; k++)
		;
	if (k == pt->nsites && k < POINTS_MAX) {
		pt->site[pt->nsites++] = path[0];
		pt->nsites_src[fi.first_src]++;
	}
	for (k = 0; k < pt->npaths; k++)
		if (memcmp(pt->path[k], path, sizeof(path)) == 0)
			return 0;
	if (pt->npaths == POINTS_MAX)
		return 0;
	memcpy(pt->path[pt->npaths], path, sizeof(path));
	pt->src[pt->npaths++] = fi.first_src;
	if (verbose) {
		printf("  point %zu (%s):", pt->npaths,
		    fi.first_src == SRC_LIB ? "libasynchat" : "libevent");
		for (i = 0; i < fi.depth; i++)
			print_frame(fi.stack[i]);
		printf("\n");
	}
	return 1;
}

static int
verbose(void)
{
	const char *v = getenv("ASYNCHAT_FAULTS_VERBOSE");

	return v != NULL && *v != '\0' && *v != '0';
}

/*
 * Part 1: a representative session with an allocation failed.
 *
 * The peer, a plain socket driven by read(2) and write(2) between turns of
 * the loop, sends frames under every kind of terminator in small chunks;
 * the application switches terminators in found_terminator and answers
 * each frame with a different kind of push, then closes when done.  The
 * application meets a call failing with ENOMEM as a careful one would: it
 * tries once more, then gives up and closes the channel.
 */

#define NFRAMES 8
#define BIG_FRAME 70000
#define OUT_MAX 4096
#define IDLE_TURNS 64
#define TURNS_MAX 20000

static const char *const small_wire[NFRAMES - 1] = {
	"hello\r\n",                       /* "\r\n" */
	"123456",                          /* count 6 */
	"line two\n",                      /* line */
	"crlf line\r\n",                   /* line */
	"alt one||",                       /* "<END>" or "||" */
	"alt <E<EN two<END>",              /* the same set again */
	"body -- -boundary- --boundary--", /* "--boundary--" */
};
static const char *const small_frame[NFRAMES - 1] = {
	"hello", "123456", "line two", "crlf line", "alt one",
	"alt <E<EN two", "body -- -boundary- ",
};
static const char tail[] = "tail!"; /* under none, at EOF */
/* The peer's chunk sizes: small ones over the small frames, so that
 * terminators are split across reads, then larger ones. */
static const size_t chunks[] = { 1, 2, 3, 5, 7, 11 };
#define SMALL_TURNS 40
#define LARGE_CHUNK 16384

static unsigned char input[BIG_FRAME + 256];
static size_t input_len;
static unsigned char big[BIG_FRAME];

/* Where frame i starts and ends (terminator included) in input. */
static size_t wire_at[NFRAMES + 1];

static void
build_input(void)
{
	size_t i;

	if (input_len != 0)
		return;
	for (i = 0; i < BIG_FRAME; i++)
		big[i] = (unsigned char)("0123456789\r\nabcdef"[(i * 7) % 18]);
	for (i = 0; i < NFRAMES - 1; i++) {
		wire_at[i] = input_len;
		memcpy(input + input_len, small_wire[i], strlen(small_wire[i]));
		input_len += strlen(small_wire[i]);
	}
	wire_at[NFRAMES - 1] = input_len;
	memcpy(input + input_len, big, BIG_FRAME);
	input_len += BIG_FRAME;
	wire_at[NFRAMES] = input_len;
	memcpy(input + input_len, tail, strlen(tail));
	input_len += strlen(tail);
}

/* Message mode; libasynchat's default handlers; a bufferevent pair
 * instead of a socket pair. */
enum { V_MESSAGE = 1, V_DEFAULTS = 2, V_PAIR = 4 };

struct sess;

struct sprod {
	struct sess *s;
	const char *data;
	size_t len, pos;
	int frees;
};

struct sess {
	int v;                      /* V_* */
	struct event_base *base;
	struct async_chat *chat;    /* NULL before new and after handle_free */
	evutil_socket_t fd[2];      /* the channel's, the peer's */
	struct bufferevent *pair[2];
	int made;                   /* a channel was made */
	size_t in_off;              /* input the peer has written */
	size_t turn;
	int peer_shut, peer_eof;
	unsigned char out[OUT_MAX]; /* what the peer read */
	size_t out_len;
	char expect[OUT_MAX];       /* what it should read */
	size_t expect_len;
	char reply[NFRAMES][32];
	struct tu_frames f;
	int frees, closes, errors, last_error;
	int enomem;                 /* calls that failed with ENOMEM */
	int gave_up;                /* the application closed after ENOMEM */
	int stalled;                /* open when the loop had nothing to do */
	int known_stall;            /* from libevent's own failure */
	int refs_ok, ref_runs;
	int prods_ok;
	struct sprod prod;
	char why[160];              /* the first inconsistency seen */
};

static void
note(struct sess *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
note(struct sess *s, const char *fmt, ...)
{
	va_list ap;

	if (s->why[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
}

static void
give_up(struct sess *s)
{
	int was = lib_begin();

	s->gave_up = 1;
	async_chat_close(s->chat);
	fi_restore(was);
}

/* A failed call: 1 if the application should try it again. */
static int
call_failed(struct sess *s, int err, const char *what)
{
	if (err == ENOMEM) {
		s->enomem++;
		return 1;
	}
	note(s, "%s failed with errno %d", what, err);
	return 0;
}

/* Run call as the application: armed, tried twice on ENOMEM, then the
 * channel is closed.  ok is set to 1 if the call succeeded. */
#define TRY(s, ok, call)                                                       \
	do {                                                                   \
		int try_;                                                      \
		(ok) = 0;                                                      \
		for (try_ = 0; (s)->chat != NULL && try_ < 2; try_++) {        \
			int was_ = lib_begin();                                \
			int rc_ = (call);                                      \
			int err_ = errno;                                      \
			fi_restore(was_);                                      \
			if (rc_ == 0) {                                        \
				(ok) = 1;                                      \
				break;                                         \
			}                                                      \
			if (!call_failed((s), err_, #call))                    \
				break;                                         \
		}                                                              \
		if (try_ == 2)                                                 \
			give_up(s);                                            \
	} while (0)

static int
sprod_more(void *ctx, struct evbuffer *out, size_t size_hint)
{
	struct sprod *p = ctx;
	int was = app_begin();
	size_t n = p->len - p->pos;

	(void)size_hint;
	if (n > 4)
		n = 4; /* several pieces */
	if (n > 0 && evbuffer_add(out, p->data + p->pos, n) < 0)
		note(p->s, "producer could not add");
	p->pos += n;
	fi_restore(was);
	return 0;
}

static void
sprod_free(void *ctx)
{
	((struct sprod *)ctx)->frees++;
}

static const struct async_chat_producer_ops sprod_ops = { sprod_more,
	sprod_free };

static void
ref_done(const void *data, size_t len, void *arg)
{
	struct sess *s = arg;

	(void)data;
	(void)len;
	s->ref_runs++;
}

static void
set_next_terminator(struct sess *s, size_t i)
{
	static const char *const alt[] = { "<END>", "||" };
	static const size_t alt_len[] = { 5, 2 };
	struct async_chat *c = s->chat;
	int ok;

	switch (i) {
	case 0:
		TRY(s, ok, async_chat_set_terminator_count(c, 6));
		break;
	case 1:
	case 2:
		TRY(s, ok, async_chat_set_terminator_line(c));
		break;
	case 3:
	case 4:
		TRY(s, ok,
		    async_chat_set_terminators(c, (const void *const *)alt,
			alt_len, 2));
		break;
	case 5:
		TRY(s, ok, async_chat_set_terminator(c, "--boundary--", 12));
		break;
	case 6:
		TRY(s, ok, async_chat_set_terminator_count(c, BIG_FRAME));
		break;
	default:
		TRY(s, ok, async_chat_set_terminator_none(c));
		break;
	}
	(void)ok;
}

/* Answer frame i with a push of kind i % 5. */
static void
send_reply(struct sess *s, size_t i)
{
	struct async_chat *c = s->chat;
	const char *r = s->reply[i];
	size_t len = strlen(r);
	struct evbuffer *buf;
	int ok;

	switch (i % 5) {
	case 0:
		TRY(s, ok, async_chat_push(c, r, len));
		break;
	case 1:
		buf = evbuffer_new();
		ck_assert_ptr_nonnull(buf);
		ck_assert_int_eq(evbuffer_add(buf, r, len), 0);
		TRY(s, ok, async_chat_push_buffer(c, buf));
		if (evbuffer_get_length(buf) != (ok ? 0 : len))
			note(s, "push_buffer left %zu bytes (ok %d)",
			    evbuffer_get_length(buf), ok);
		evbuffer_free(buf);
		break;
	case 2:
		TRY(s, ok, async_chat_push_reference(c, r, len, ref_done, s));
		s->refs_ok += ok;
		break;
	case 3:
		/* Data pushed behind a producer waits in the FIFO. */
		s->prod.s = s;
		s->prod.data = r;
		s->prod.len = len;
		TRY(s, ok, async_chat_push_with_producer(c, &sprod_ops,
			       &s->prod));
		s->prods_ok += ok;
		TRY(s, ok, async_chat_push(c, "+\n", 2));
		break;
	default:
		TRY(s, ok, async_chat_push_simple_producer(c, r, len, 3));
		break;
	}
}

static void
s_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct sess *s = arg;
	int was = app_begin();

	(void)chat;
	if (len == 0)
		note(s, "collect with 0 bytes");
	ck_assert_int_eq(evbuffer_add(s->f.cur, data, len), 0);
	s->f.collects++;
	fi_restore(was);
}

static void
s_found(struct async_chat *chat, void *arg)
{
	struct sess *s = arg;
	int was = app_begin();
	size_t i = s->f.n;

	if (s->v & V_MESSAGE)
		ck_assert_int_eq(evbuffer_add_buffer(s->f.cur,
				     async_chat_incoming(chat)),
		    0);
	tu_frames_found(&s->f);
	if (i >= NFRAMES) {
		note(s, "frame %zu beyond the script", i);
	} else if (i < NFRAMES - 1 ? !tu_frame_is(&s->f, i, small_frame[i]) :
				       !tu_frame_eq(&s->f, i, big, BIG_FRAME)) {
		note(s, "frame %zu is wrong (%zu bytes)", i, s->f.len[i]);
	} else {
		set_next_terminator(s, i);
		send_reply(s, i);
	}
	fi_restore(was);
}

/* At EOF the tail, collected under none, is whole. */
static void
s_close(struct async_chat *chat, void *arg)
{
	struct sess *s = arg;
	int was = app_begin();
	int ok;

	if (s->v & V_MESSAGE)
		ck_assert_int_eq(evbuffer_add_buffer(s->f.cur,
				     async_chat_incoming(chat)),
		    0);
	s->closes++;
	if (s->f.n != NFRAMES || !tu_cur_eq(&s->f, tail, strlen(tail)))
		note(s, "EOF after %zu frames and %zu bytes", s->f.n,
		    evbuffer_get_length(s->f.cur));
	TRY(s, ok, async_chat_push(chat, "bye\n", 4));
	TRY(s, ok, async_chat_close_when_done(chat));
	(void)ok;
	fi_restore(was);
}

static void
s_error(struct async_chat *chat, int err, void *arg)
{
	struct sess *s = arg;
	int was = app_begin();

	s->errors++;
	s->last_error = err;
	/* The built-in simple producer's more() fails when it cannot add a
	 * piece, which the header reports as a producer failure. */
	if (err != ENOMEM && err != ASYNC_CHAT_ERR_NOMEM &&
	    err != ASYNC_CHAT_ERR_PRODUCER)
		note(s, "handle_error(%d: %s)", err, async_chat_strerror(err));
	fi.armed = 1;
	async_chat_close(chat);
	fi_restore(was);
}

static void
s_free(struct async_chat *chat, void *arg)
{
	struct sess *s = arg;

	(void)chat;
	s->frees++;
	s->chat = NULL;
}

static const struct async_chat_handlers s_collect_h = {
	.collect_incoming_data = s_collect,
	.found_terminator = s_found,
	.handle_close = s_close,
	.handle_error = s_error,
	.handle_free = s_free,
};
static const struct async_chat_handlers s_message_h = {
	.found_terminator = s_found,
	.handle_close = s_close,
	.handle_error = s_error,
	.handle_free = s_free,
};
/* handle_close and handle_error left to libasynchat's defaults. */
static const struct async_chat_handlers s_collect_dh = {
	.collect_incoming_data = s_collect,
	.found_terminator = s_found,
	.handle_free = s_free,
};
static const struct async_chat_handlers s_message_dh = {
	.found_terminator = s_found,
	.handle_free = s_free,
};

static const struct async_chat_handlers *
sess_handlers(int v)
{
	switch (v & (V_MESSAGE | V_DEFAULTS)) {
	case 0:
		return &s_collect_h;
	case V_MESSAGE:
		return &s_message_h;
	case V_DEFAULTS:
		return &s_collect_dh;
	default:
		return &s_message_dh;
	}
}

static void
sess_init(struct sess *s, int v)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	s->v = v;
	for (i = 0; i < NFRAMES; i++) {
		size_t at = s->expect_len;

		if (i < NFRAMES - 1)
			snprintf(s->reply[i], sizeof(s->reply[i]), "R%zu:%s\n",
			    i, small_frame[i]);
		else
			snprintf(s->reply[i], sizeof(s->reply[i]),
			    "R%zu:<%d>\n", i, BIG_FRAME);
		s->expect_len += (size_t)snprintf(s->expect + at,
		    sizeof(s->expect) - at, "%s%s", s->reply[i],
		    i % 5 == 3 ? "+\n" : "");
	}
	if (!(v & V_DEFAULTS))
		s->expect_len += (size_t)snprintf(s->expect + s->expect_len,
		    sizeof(s->expect) - s->expect_len, "bye\n");
}

static void
peer_write(struct sess *s)
{
	size_t n = s->turn < SMALL_TURNS ?
	    chunks[s->turn % (sizeof(chunks) / sizeof(chunks[0]))] :
	    LARGE_CHUNK;
	ssize_t w;

	if ((s->v & V_PAIR) && s->chat == NULL)
		s->in_off = input_len; /* the channel has gone */
	if (s->in_off == input_len) {
		if (s->peer_shut)
			return;
		s->peer_shut = 1;
		if (!(s->v & V_PAIR))
			shutdown(s->fd[1], SHUT_WR);
		else if (s->chat != NULL)
			bufferevent_flush(s->pair[1], EV_WRITE, BEV_FINISHED);
		return;
	}
	if (n > input_len - s->in_off)
		n = input_len - s->in_off;
	if (s->v & V_PAIR) {
		ck_assert_int_eq(bufferevent_write(s->pair[1],
				     input + s->in_off, n),
		    0);
		s->in_off += n;
		return;
	}
	w = send(s->fd[1], input + s->in_off, n, MSG_NOSIGNAL);
	if (w > 0)
		s->in_off += (size_t)w;
	else if (errno != EAGAIN && errno != EWOULDBLOCK)
		s->in_off = input_len; /* the channel has gone */
}

static void
peer_read(struct sess *s)
{
	for (;;) {
		unsigned char buf[4096];
		ssize_t n;

		if (s->v & V_PAIR) {
			struct evbuffer *in = bufferevent_get_input(s->pair[1]);

			n = (ssize_t)evbuffer_remove(in, buf, sizeof(buf));
			if (n <= 0)
				return; /* EOF comes as an event */
		} else {
			n = recv(s->fd[1], buf, sizeof(buf), 0);
		}

		if (n > 0) {
			if (s->out_len + (size_t)n > OUT_MAX) {
				note(s, "peer got too much");
				n = (ssize_t)(OUT_MAX - s->out_len);
			}
			memcpy(s->out + s->out_len, buf, (size_t)n);
			s->out_len += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			s->peer_eof = 1;
		return;
	}
}

/* Everything that can change in a turn of the loop. */
static size_t
progress(const struct sess *s)
{
	return s->in_off + s->out_len + (size_t)s->peer_eof +
	    (size_t)s->f.collects + s->f.n + (size_t)s->frees +
	    (size_t)s->closes + (size_t)s->errors +
	    (size_t)s->prod.pos + (size_t)s->ref_runs;
}

/* The partner of the channel's bufferevent pair hears of its close. */
static void
pair_peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct sess *s = arg;
	int was = app_begin();

	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		s->peer_eof = 1;
	fi_restore(was);
}

static void
sess_open(struct sess *s)
{
	const struct async_chat_handlers *h = sess_handlers(s->v);
	int try, was;

	if (s->v & V_PAIR) {
		ck_assert_int_eq(bufferevent_pair_new(s->base,
				     BEV_OPT_CLOSE_ON_FREE |
					 BEV_OPT_DEFER_CALLBACKS,
				     s->pair),
		    0);
		bufferevent_setcb(s->pair[1], NULL, NULL, pair_peer_event, s);
		ck_assert_int_eq(bufferevent_enable(s->pair[1],
				     EV_READ | EV_WRITE),
		    0);
	} else {
		tu_socketpair(s->fd);
	}
	for (try = 0; try < 2 && s->chat == NULL; try++) {
		int err;

		was = lib_begin();
		if (s->v & V_PAIR)
			s->chat = async_chat_new_bufferevent(s->pair[0], h, s);
		else
			s->chat = async_chat_new(s->base, s->fd[0], h, s);
		err = errno;
		fi_restore(was);
		if (s->chat == NULL && !call_failed(s, err, "async_chat_new"))
			break;
	}
	s->made = s->chat != NULL;
	if (!s->made) {
		/* Still ours on failure. */
		if (s->v & V_PAIR)
			bufferevent_free(s->pair[0]);
		else
			evutil_closesocket(s->fd[0]);
		s->peer_eof = 1;
	}
}

static void
sess_run(struct sess *s)
{
	size_t last = 0, idle = 0;
	int ok, was;

	s->base = event_base_new();
	ck_assert_ptr_nonnull(s->base);
	tu_frames_init(&s->f);
	sess_open(s);
	TRY(s, ok, async_chat_set_terminator(s->chat, "\r\n", 2));
	TRY(s, ok, async_chat_set_max_frame(s->chat, 1 << 20));
	(void)ok;
	for (s->turn = 0; s->made && s->turn < TURNS_MAX; s->turn++) {
		peer_write(s);
		was = lib_begin();
		event_base_loop(s->base, EVLOOP_NONBLOCK);
		fi_restore(was);
		peer_read(s);
		if (s->chat == NULL && s->peer_eof)
			break;
		if (progress(s) != last) {
			last = progress(s);
			idle = 0;
		} else if (s->peer_shut && ++idle == IDLE_TURNS) {
			break;
		}
	}
	if (s->chat != NULL) {
		s->stalled = 1;
		async_chat_close(s->chat);
	}
	/* The partner's EOF is deferred: let it run before the base goes. */
	event_base_loop(s->base, EVLOOP_NONBLOCK);
	if (s->v & V_PAIR)
		bufferevent_free(s->pair[1]);
	else
		evutil_closesocket(s->fd[1]);
	event_base_loop(s->base, EVLOOP_NONBLOCK);
	event_base_free(s->base);
}

/* The verdict on a session: NULL if it ended well. */
static const char *
sess_check(struct sess *s)
{
	size_t n = s->f.n, end;
	size_t cur = evbuffer_get_length(s->f.cur);
	int complete;

	if (s->why[0] != '\0')
		return s->why;
	if (s->frees != s->made) {
		note(s, "handle_free ran %d times", s->frees);
		return s->why;
	}
	if (s->ref_runs != s->refs_ok || s->prod.frees != s->prods_ok) {
		note(s, "reference cleanups %d of %d, producer frees %d of %d",
		    s->ref_runs, s->refs_ok, s->prod.frees, s->prods_ok);
		return s->why;
	}
	/* What arrived on either side is a prefix of what was sent, so
	 * nothing was reordered, doubled or corrupted.  Frames were
	 * checked as they ended; the frame in progress may hold its
	 * terminator's first bytes, handed over at a read error. */
	end = n < NFRAMES ? wire_at[n + 1] : input_len;
	if (n > NFRAMES || cur > end - wire_at[n] ||
	    (cur > 0 && memcmp(evbuffer_pullup(s->f.cur, -1),
			    input + wire_at[n], cur) != 0)) {
		note(s, "frame %zu in progress is wrong (%zu bytes)", n, cur);
		return s->why;
	}
	if (s->out_len > s->expect_len ||
	    memcmp(s->out, s->expect, s->out_len) != 0) {
		note(s, "peer got \"%.*s\"", (int)s->out_len, s->out);
		return s->why;
	}
	complete = s->made && !s->gave_up && s->errors == 0 && !s->stalled &&
	    n == NFRAMES && s->out_len == s->expect_len && s->peer_eof;
	if (complete)
		return NULL;
	/* Anything short of complete must have been said: a call failed
	 * with ENOMEM, handle_error ran, or the default handler closed.
	 * With the default handlers the application cannot tell an error
	 * from the end; the same failures with its own handlers, in the
	 * other variants, show that each one is reported. */
	if (s->gave_up || s->errors > 0 ||
	    (!s->made && s->enomem > 0) ||
	    ((s->v & V_DEFAULTS) && !s->stalled))
		return NULL;
	if (s->stalled && !fi.sticky && failed_in_libevent_socket_new()) {
		s->known_stall = 1;
		return NULL;
	}
	note(s, "%s without an error: %zu frames, peer got %zu of %zu bytes%s",
	    s->stalled ? "stalled" : "ended", n, s->out_len, s->expect_len,
	    s->peer_eof ? ", EOF" : "");
	return s->why;
}

struct sweep {
	unsigned long allocs, lib_allocs, ev_allocs; /* armed, clean run */
	unsigned long hit;                           /* sessions failed */
	unsigned long complete, clean, known_stall;  /* of those */
	int last_complete;
	struct points pt;
};

/* One session failing allocation fail_at (0: none).  Returns 1 if an
 * allocation was failed. */
static int
one_session(int v, unsigned long fail_at, int sticky, struct sweep *sw)
{
	static struct sess sess; /* static: nothing leaks when a check fails */
	struct sess *s = &sess;
	const char *why;
	size_t leaked;
	int hit;

	sess_init(s, v);
	fi_start(fail_at, sticky);
	sess_run(s);
	why = sess_check(s);
	sw->last_complete = s->made && !s->gave_up && s->errors == 0 &&
	    !s->stalled && s->f.n == NFRAMES && s->out_len == s->expect_len;
	tu_frames_clear(&s->f);
	hit = fi.failed > 0;
	leaked = fi_stop();
	if (fail_at == 0) {
		sw->allocs = fi.count;
		sw->lib_allocs = fi.by_src[SRC_LIB];
		sw->ev_allocs = fi.by_src[SRC_EVENT];
	}
	if (why == NULL && (leaked > 0 || fi.overflow))
		why = fi.overflow ? "too many blocks to track" : "leaked";
	if (why != NULL) {
		printf("variant %d, %s allocation %lu (%s) failed:", v,
		    sticky ? "every allocation from" : "only", fail_at,
		    fi.first_src == SRC_LIB ? "libasynchat" : "libevent");
		if (hit) {
			int i;

			for (i = 0; i < fi.depth; i++)
				print_frame(fi.stack[i]);
		}
		printf("\n");
		ck_abort_msg("variant %d, fail_at %lu%s: %s (%zu blocks live)",
		    v, fail_at, sticky ? " on" : "", why, leaked);
	}
	if (hit) {
		sw->hit++;
		points_add(&sw->pt, verbose());
	}
	if (s->known_stall)
		sw->known_stall++;
	else if (hit && sw->last_complete)
		sw->complete++;
	else if (hit)
		sw->clean++;
	return hit;
}

static void
sweep(int v, int sticky)
{
	static const char *const names[] = { "collect", "message",
		"collect, default handlers", "message, default handlers",
		"pair, collect", "pair, message",
		"pair, collect, default handlers",
		"pair, message, default handlers" };
	static struct sweep state;
	struct sweep *sw = &state;
	unsigned long n, clean_allocs;

	memset(sw, 0, sizeof(*sw));
	build_input();
	/* A clean run counts the allocations, twice: the count must not
	 * change, or "the N-th" would not name the same allocation. */
	one_session(v, 0, 0, sw);
	ck_assert(sw->last_complete);
	clean_allocs = sw->allocs;
	one_session(v, 0, 0, sw);
	ck_assert(sw->last_complete);
	ck_assert_uint_eq(sw->allocs, clean_allocs);
	ck_assert_msg(sw->lib_allocs > 0 && sw->ev_allocs > 0,
	    "hooks not in effect: %lu libasynchat, %lu libevent allocations "
	    "(linked without -Wl,--wrap?)", sw->lib_allocs, sw->ev_allocs);
	for (n = 1; n <= clean_allocs; n++)
		ck_assert_msg(one_session(v, n, sticky, sw),
		    "allocation %lu of %lu was never made", n, clean_allocs);
	/* Past the last allocation nothing fails and all is well. */
	ck_assert(!one_session(v, clean_allocs + 1, sticky, sw));
	ck_assert(sw->last_complete);
	printf("faults (%s, %s): N = 1..%lu (%lu libasynchat, %lu libevent "
	       "allocations), %lu failed; %zu sites (%zu libasynchat, %zu "
	       "libevent), %zu call paths; %lu completed, %lu ended with a "
	       "clean error, %lu stalled in libevent's bufferevent_socket_new"
	       "\n",
	    names[v], sticky ? "every allocation from N on" : "N-th only",
	    clean_allocs, sw->lib_allocs, sw->ev_allocs, sw->hit,
	    sw->pt.nsites, sw->pt.nsites_src[SRC_LIB],
	    sw->pt.nsites_src[SRC_EVENT], sw->pt.npaths, sw->complete,
	    sw->clean, sw->known_stall);
	fflush(stdout);
}

/* Every variant, failing the N-th allocation only, then every allocation
 * from the N-th on. */
static const struct {
	int v, sticky;
} sweeps[] = {
    {0, 0}, {V_MESSAGE, 0}, {V_DEFAULTS, 0}, {V_DEFAULTS | V_MESSAGE, 0},
    {V_PAIR, 0}, {V_PAIR | V_MESSAGE, 0}, {V_PAIR | V_DEFAULTS, 0},
    {V_PAIR | V_DEFAULTS | V_MESSAGE, 0},
    {0, 1}, {V_MESSAGE, 1}, {V_DEFAULTS, 1}, {V_DEFAULTS | V_MESSAGE, 1},
    {V_PAIR, 1}, {V_PAIR | V_MESSAGE, 1}, {V_PAIR | V_DEFAULTS, 1},
    {V_PAIR | V_DEFAULTS | V_MESSAGE, 1},
};

START_TEST(test_alloc_fail)
{
	sweep(sweeps[_i].v, sweeps[_i].sticky);
}
END_TEST

/*
 * Part 2: floods.  A peer thread streams bytes with no terminator at a
 * channel whose frames are bounded.  The sender writes without blocking
 * and gives up when told to or when the channel has gone, so it never
 * outlives the test.
 */

#define FLOOD_BYTES ((uint64_t)1 << 30)
#define MAX_FRAME 65536
#define RSS_GROWTH_MAX_KIB (64 * 1024)

struct sender {
	evutil_socket_t fd;
	uint64_t total;
	uint64_t sent; /* read after the join */
	int err;
	atomic_int stop;
	atomic_int done;
};

static void *
sender_main(void *arg)
{
	struct sender *snd = arg;
	char buf[65536];

	memset(buf, 'x', sizeof(buf));
	while (snd->sent < snd->total && !atomic_load(&snd->stop)) {
		size_t n = sizeof(buf);
		ssize_t w;

		if (n > snd->total - snd->sent)
			n = (size_t)(snd->total - snd->sent);
		w = send(snd->fd, buf, n, MSG_NOSIGNAL);
		if (w > 0) {
			snd->sent += (uint64_t)w;
		} else if (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR) {
			struct pollfd p = { snd->fd, POLLOUT, 0 };

			/* Wakes for the channel's reads, or to look at the
			 * stop flag again. */
			poll(&p, 1, 100);
		} else {
			snd->err = errno;
			break;
		}
	}
	if (snd->sent == snd->total)
		shutdown(snd->fd, SHUT_WR);
	atomic_store(&snd->done, 1);
	return NULL;
}

struct flood {
	struct fx_chan c;
	struct sender snd;
	pthread_t thread;
	int skip;           /* answer the error by skipping the frame */
	uint64_t taken;     /* taken from the frame buffer */
	uint64_t discarded; /* unread input dropped by discard_buffers */
	size_t max_held;    /* most bytes the channel held at once */
};

/* The bytes the channel holds: unread input and the frame buffer. */
static size_t
held(struct flood *fl)
{
	struct bufferevent *bev = async_chat_get_bufferevent(fl->c.chat);
	size_t n;

	if (bev == NULL)
		return 0;
	n = evbuffer_get_length(bufferevent_get_input(bev)) +
	    evbuffer_get_length(async_chat_incoming(fl->c.chat));
	if (n > fl->max_held)
		fl->max_held = n;
	return n;
}

static void
flood_hook(struct fx_chan *c, enum fx_cb which)
{
	struct flood *fl = c->user;
	struct evbuffer *in;

	switch (which) {
	case FX_COLLECT:
		held(fl);
		break;
	case FX_CLOSE:
		fl->taken += evbuffer_get_length(async_chat_incoming(c->chat));
		break;
	case FX_ERROR:
		held(fl);
		if (!fl->skip ||
		    c->f.last_error != ASYNC_CHAT_ERR_FRAME_TOO_LONG)
			break;
		/* Skip the oversized frame: what was taken counts as
		 * delivered, what was left unread as discarded, then read
		 * on. */
		in = bufferevent_get_input(async_chat_get_bufferevent(c->chat));
		fl->taken += evbuffer_get_length(async_chat_incoming(c->chat));
		fl->discarded += evbuffer_get_length(in);
		ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
		ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
		break;
	default:
		break;
	}
}

/* Collected, or taken from the frame buffer. */
static uint64_t
delivered(const struct flood *fl)
{
	return fl->c.collected + fl->taken;
}

static void
flood_start(struct flood *fl, int message, int skip)
{
	memset(fl, 0, sizeof(*fl));
	fl->skip = skip;
	fx_init(&fl->c, NULL);
	if (message)
		fl->c.h.collect_incoming_data = NULL;
	fl->c.count_only = 1;
	fl->c.hook = flood_hook;
	fl->c.user = fl;
	fx_open(&fl->c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator(fl->c.chat, "\r\n", 2), 0);
	ck_assert_int_eq(async_chat_set_max_frame(fl->c.chat, MAX_FRAME), 0);
	fl->snd.fd = fl->c.p.fd;
	fl->snd.total = (uint64_t)((double)FLOOD_BYTES * tu_scale());
	if (fl->snd.total < ((uint64_t)16 << 20))
		fl->snd.total = (uint64_t)16 << 20; /* far past the bound */
	ck_assert_int_eq(pthread_create(&fl->thread, NULL, sender_main,
			     &fl->snd),
	    0);
}

static void
flood_stop(struct flood *fl)
{
	atomic_store(&fl->snd.stop, 1);
	if (!fl->c.gone)
		async_chat_close(fl->c.chat); /* the sender's writes now fail */
	ck_assert_int_eq(pthread_join(fl->thread, NULL), 0);
	ck_assert_int_eq(fl->c.f.frees, 1);
	fx_end(&fl->c);
}

/* The bound is reached once; reading stays paused however much the peer
 * still has to send, and the channel holds no more than a frame and one
 * read. */
static void
flood_bounded(int message)
{
	static struct flood fl;
	struct fx_chan *c = &fl.c;
	const size_t bound = MAX_FRAME + ASYNC_CHAT_DEFAULT_BUFFER_SIZE + 2;
	long rss0 = peak_rss_kib(), rss1;
	uint64_t got;
	size_t in_len;

	flood_start(&fl, message, 0);
	ck_assert_int_eq(fx_wait(c, fx_until_errors, WAIT_MS), 0);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(c->f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	got = message ? evbuffer_get_length(async_chat_incoming(c->chat)) :
	                delivered(&fl);
	ck_assert_uint_eq(got, MAX_FRAME);
	in_len = fx_input_len(c);
	/* Let the peer push against the paused channel for a while. */
	fx_wait(c, NULL, 300);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(c->f.founds, 0); /* no terminator is ever sent */
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	if (!message)
		ck_assert_uint_eq(delivered(&fl), got);
	ck_assert_uint_eq(evbuffer_get_length(async_chat_incoming(c->chat)),
	    message ? MAX_FRAME : 0);
	ck_assert_uint_eq(fx_input_len(c), in_len);
	ck_assert_uint_le(held(&fl), bound);
	ck_assert_uint_le(fl.max_held, bound);
	ck_assert_int_eq(atomic_load(&fl.snd.done), 0); /* still trying */
	flood_stop(&fl);
	rss1 = peak_rss_kib();
	printf("flood (%s, paused at the bound): peer wrote %llu of %llu "
	       "bytes before the paused channel stopped it; channel held "
	       "at most %zu bytes; peak RSS %ld KiB (grew %ld KiB)\n",
	    message ? "message" : "collect", (unsigned long long)fl.snd.sent,
	    (unsigned long long)fl.snd.total, fl.max_held, rss1, rss1 - rss0);
	fflush(stdout);
	ck_assert_int_lt(rss1 - rss0, RSS_GROWTH_MAX_KIB);
}

/* An application that skips oversized frames (discard, resume) lets the
 * whole flood through: every byte is delivered or discarded, and the
 * channel never holds more than a frame and one read. */
static void
flood_skipped(int message)
{
	static struct flood fl;
	struct fx_chan *c = &fl.c;
	const size_t bound = MAX_FRAME + ASYNC_CHAT_DEFAULT_BUFFER_SIZE + 2;
	long rss0 = peak_rss_kib(), rss1;
	uint64_t all;
	int errors;

	flood_start(&fl, message, 1);
	ck_assert_int_eq(fx_wait(c, fx_until_closes, 20 * WAIT_MS), 0);
	ck_assert_int_eq(c->f.founds, 0); /* no terminator is ever sent */
	ck_assert_int_eq(fl.snd.err, 0);
	ck_assert_int_gt(c->f.errors, 0);
	ck_assert_int_eq(c->f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert_uint_eq(delivered(&fl) + fl.discarded, fl.snd.total);
	ck_assert_uint_le(fl.max_held, bound);
	all = delivered(&fl);
	errors = c->f.errors;
	flood_stop(&fl);
	rss1 = peak_rss_kib();
	printf("flood (%s, frames skipped): %llu bytes streamed, %llu "
	       "delivered, %llu discarded, %d frame-too-long errors; channel "
	       "held at most %zu bytes; peak RSS %ld KiB (grew %ld KiB)\n",
	    message ? "message" : "collect", (unsigned long long)fl.snd.sent,
	    (unsigned long long)all, (unsigned long long)fl.discarded, errors,
	    fl.max_held, rss1, rss1 - rss0);
	fflush(stdout);
	ck_assert_int_lt(rss1 - rss0, RSS_GROWTH_MAX_KIB);
}

/* Collect and message mode, the bound kept or each oversized frame
 * skipped. */
static const struct {
	int message, skip;
} floods[] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}};

START_TEST(test_flood)
{
	if (floods[_i].skip)
		flood_skipped(floods[_i].message);
	else
		flood_bounded(floods[_i].message);
}
END_TEST

/*
 * Part 3: a peer that does not read.  The application honours flow
 * control: it pushes only while less than NR_LIMIT is pending, and again
 * on handle_drain.  Bytes follow a pattern set by their offset, so a lost,
 * doubled or reordered chunk shows.
 */

#define NR_LIMIT ((size_t)1 << 20)
#define NR_CHUNK 16384
#define NR_BYTES ((uint64_t)256 << 20)
#define NR_TURNS 2000

static unsigned char
pattern_at(uint64_t k)
{
	return (unsigned char)(k * 131 + (k >> 11) + (k >> 23));
}

struct nonreader {
	uint64_t target, pushed, received;
	size_t max_pending;
	int bad_byte, closing;
	uint64_t bad_at;
};

static void
nr_pump(struct fx_chan *c)
{
	struct nonreader *nr = c->user;
	unsigned char buf[NR_CHUNK];

	while (!c->gone && nr->pushed < nr->target &&
	       async_chat_output_pending(c->chat) < NR_LIMIT) {
		size_t n = NR_CHUNK, i;

		if (n > nr->target - nr->pushed)
			n = (size_t)(nr->target - nr->pushed);
		for (i = 0; i < n; i++)
			buf[i] = pattern_at(nr->pushed + i);
		ck_assert_int_eq(async_chat_push(c->chat, buf, n), 0);
		nr->pushed += n;
		if (async_chat_output_pending(c->chat) > nr->max_pending)
			nr->max_pending = async_chat_output_pending(c->chat);
	}
	if (!c->gone && nr->pushed == nr->target && !nr->closing) {
		nr->closing = 1;
		ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	}
}

/* Push again on handle_drain; close on an error. */
static void
nr_hook(struct fx_chan *c, enum fx_cb which)
{
	if (which == FX_DRAIN)
		nr_pump(c);
	else if (which == FX_ERROR)
		async_chat_close(c->chat);
}

static void
nr_peer_read(struct fx_peer *p, struct evbuffer *in)
{
	struct nonreader *nr = p->user;
	unsigned char buf[65536];
	int n, i;

	while ((n = evbuffer_remove(in, buf, sizeof(buf))) > 0) {
		for (i = 0; i < n && !nr->bad_byte; i++) {
			if (buf[i] != pattern_at(nr->received + (uint64_t)i)) {
				nr->bad_byte = 1;
				nr->bad_at = nr->received + (uint64_t)i;
			}
		}
		nr->received += (uint64_t)n;
	}
}

START_TEST(test_non_reading_peer)
{
	static struct nonreader nr;
	struct fx_chan c;
	long rss0 = peak_rss_kib(), rss1, rss2;
	uint64_t stalled_pushed;
	int i;

	memset(&nr, 0, sizeof(nr));
	nr.target = (uint64_t)((double)NR_BYTES * tu_scale());
	if (nr.target < 4 * NR_LIMIT)
		nr.target = 4 * NR_LIMIT;
	fx_init(&c, NULL);
	/* Message mode, and the default handle_close. */
	c.h.collect_incoming_data = NULL;
	c.h.found_terminator = NULL;
	c.h.handle_close = NULL;
	c.hook = nr_hook;
	c.user = &nr;
	fx_open(&c, FX_SOCKETPAIR);
	/* The peer reads nothing: push at every turn for a while. */
	ck_assert_int_eq(bufferevent_disable(c.p.bev, EV_READ), 0);
	for (i = 0; i < NR_TURNS; i++) {
		nr_pump(&c);
		event_base_loop(c.base, EVLOOP_NONBLOCK);
	}
	fx_wait(&c, NULL, 100);
	nr_pump(&c);
	stalled_pushed = nr.pushed;
	rss1 = peak_rss_kib();
	ck_assert_uint_le(nr.max_pending, NR_LIMIT + NR_CHUNK);
	ck_assert_uint_lt(stalled_pushed, nr.target);
	ck_assert_int_eq(c.f.errors, 0);
	ck_assert_int_lt(rss1 - rss0, RSS_GROWTH_MAX_KIB);
	/* Now the peer reads: everything arrives, in order. */
	c.p.on_read = nr_peer_read;
	c.p.user = &nr;
	ck_assert_int_eq(bufferevent_enable(c.p.bev, EV_READ), 0);
	ck_assert_int_eq(fx_wait(&c, fx_until_peer_eof, 20 * WAIT_MS), 0);
	rss2 = peak_rss_kib();
	ck_assert_msg(!nr.bad_byte, "byte %llu is wrong",
	    (unsigned long long)nr.bad_at);
	ck_assert_uint_eq(nr.received, nr.target);
	ck_assert_uint_eq(nr.pushed, nr.target);
	ck_assert_int_eq(c.f.errors, 0);
	ck_assert_int_eq(c.f.frees, 1);
	ck_assert_uint_le(nr.max_pending, NR_LIMIT + NR_CHUNK);
	ck_assert_int_lt(rss2 - rss0, RSS_GROWTH_MAX_KIB);
	printf("non-reading peer: %llu bytes pushed while it did not read "
	       "(pending at most %zu); then %llu bytes in all, in order, "
	       "%d drains; peak RSS %ld KiB (grew %ld KiB)\n",
	    (unsigned long long)stalled_pushed, nr.max_pending,
	    (unsigned long long)nr.received, c.f.drains, rss2, rss2 - rss0);
	fflush(stdout);
	fx_end(&c);
}
END_TEST

/*
 * Part 4: a reduced run of bench/load: many loopback connections held at
 * once by one server on one event_base, pipelined messages of mixed
 * framing in random chunks, every reply checked byte for byte.
 */

START_TEST(test_load_reduced)
{
	struct load_config cfg = {
		.conns = 200, .msgs = 5, .depth = 4, .seed = 42,
		.timeout_s = 120, .quiet = 1, .processes = 1,
	};
	struct load_stats st;

	ck_assert_int_eq(load_run(&cfg, &st), 0);
	ck_assert_int_eq(st.held, cfg.conns);
	ck_assert_int_eq(st.accepted, cfg.conns);
	ck_assert_uint_eq(st.messages, (uint64_t)cfg.conns * cfg.msgs);
	ck_assert_int_eq(st.failures, 0);
	ck_assert_int_eq(st.lost, 0);
	printf("load (reduced): %d connections held, %llu messages, %llu "
	       "bytes checked, %d failures, peak RSS %ld KiB\n",
	    st.held, (unsigned long long)st.messages,
	    (unsigned long long)st.bytes_checked, st.failures,
	    st.peak_rss_kib);
	fflush(stdout);
}
END_TEST

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void
alloc_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_alloc_fail, 0, N(sweeps));
}

static void
flood_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_flood, 0, N(floods));
	tcase_add_test(tc, test_non_reading_peer);
}

static void
load_tests(TCase *tc)
{
	tcase_add_test(tc, test_load_reduced);
}

static void
before(void)
{
	void *frames[2];

	/* Before any libevent allocation, or libevent would free with our
	 * hook what it allocated without it. */
	event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
	/* backtrace() loads its unwinder on first use: not inside a hook. */
	backtrace(frames, 2);
}

static const struct fx_tcase tcases[] = {
    {"alloc", 600, alloc_tests},
    {"flood", 1200, flood_tests},
    {"load", 300, load_tests},
    {NULL, 0, NULL},
};

const struct fx_suite fx_suite = {"faults", tcases, before};
