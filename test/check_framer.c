/*
 * check_framer.c - the framer against its reference model (framer_model.c)
 * and against hand-written expectations, under every way of cutting the
 * input: every two-piece split, one-byte reads, random chunkings, many
 * chains queued before one feed, empty chains, and sinks that stop, bound
 * or discard.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "framer.h"
#include "framer_model.h"
#include "testutil.h"

/* Check records every passing ck_assert_*() with a write(2), which would
 * dominate the run time of the loops below; this costs nothing until it
 * fails. */
#define FAST_ASSERT(expr)                                                      \
	do {                                                                   \
		if (!(expr))                                                   \
			ck_abort_msg("Assertion '%s' failed", #expr);          \
	} while (0)

/*
 * The rig: a framer, its input, and a sink recording into tu_frames.
 * found() applies the script like a found_terminator callback would.
 */

struct rig;
typedef int (*rig_data_fn)(struct rig *r, struct evbuffer *in, size_t len);
typedef int (*rig_found_fn)(struct rig *r);

struct rig {
	struct framer fr;
	struct evbuffer *in;
	struct tu_frames rec;
	int *matched; /* fr.matched seen in found(), per frame */
	size_t matched_cap;
	const struct fm_step *steps;
	size_t nsteps;
	uint64_t taken;    /* bytes data() took, every frame */
	uint64_t stop_rng; /* non-zero: data() and found() stop at random */
	int stops;         /* times a sink callback asked to stop */
	int data_calls;
	rig_data_fn on_data;   /* NULL: take the bytes */
	rig_found_fn on_found; /* NULL: apply the script */
	int fast;              /* offer the framer the bytes() sink too */
	/* free for the hooks of each test */
	uint64_t u0;
	int i0;
};

static void
apply_term(struct framer *fr, const struct fm_term *t)
{
	switch (t->kind) {
	case ASYNC_CHAT_TERM_NONE:
		async_chat__framer_set_none(fr);
		break;
	case ASYNC_CHAT_TERM_COUNT:
		FAST_ASSERT(async_chat__framer_set_count(fr, t->count) == 0);
		break;
	case ASYNC_CHAT_TERM_STRING:
		FAST_ASSERT(async_chat__framer_set_string(fr, t->bytes[0], t->len[0]) == 0);
		break;
	case ASYNC_CHAT_TERM_LINE:
		async_chat__framer_set_line(fr);
		break;
	case ASYNC_CHAT_TERM_ANY:
		FAST_ASSERT(async_chat__framer_set_any(fr, t->bytes, t->len, t->n) == 0);
		break;
	}
}

/* Collect len bytes from the front of in piece by piece, as the channel's
 * collect sink does, then drain them. */
static int
rig_take(struct rig *r, struct evbuffer *in, size_t len)
{
	while (len > 0) {
		struct evbuffer_iovec v[8];
		size_t done = 0;
		int n, i;

		n = evbuffer_peek(in, (ev_ssize_t)len, NULL, v, 8);
		FAST_ASSERT(n > 0);
		if (n > 8)
			n = 8;
		for (i = 0; i < n && done < len; i++) {
			size_t piece = v[i].iov_len;

			if (piece > len - done)
				piece = len - done;
			if (piece == 0)
				continue;
			tu_frames_collect(&r->rec, v[i].iov_base, piece);
			done += piece;
		}
		FAST_ASSERT(done > 0);
		FAST_ASSERT(evbuffer_drain(in, done) == 0);
		r->taken += done;
		len -= done;
	}
	return 0;
}

static int
rig_random_stop(struct rig *r)
{
	if (r->stop_rng != 0 && tu_rand(&r->stop_rng) % 3 == 0) {
		r->stops++;
		return 1;
	}
	return 0;
}

static int
rig_data(void *ctx, struct evbuffer *in, size_t len)
{
	struct rig *r = ctx;

	/* The framer-level rule behind "collect never sees 0 bytes". */
	FAST_ASSERT(len > 0);
	FAST_ASSERT(len <= evbuffer_get_length(in));
	r->data_calls++;
	if (r->on_data != NULL)
		return r->on_data(r, in, len) || rig_random_stop(r);
	if (rig_random_stop(r)) {
		/* Stop after part of the bytes, maybe none, as a channel
		 * paused inside collect_incoming_data does. */
		rig_take(r, in, (size_t)(tu_rand(&r->stop_rng) % (len + 1)));
		return 1;
	}
	return rig_take(r, in, len);
}

static void
rig_apply_script(struct rig *r)
{
	const struct fm_step *step = fm_step_at(r->steps, r->nsteps, r->rec.n);

	if (step != NULL)
		apply_term(&r->fr, &step->term);
}

static int
rig_found(void *ctx)
{
	struct rig *r = ctx;
	int rc = 0;

	if (r->rec.n == r->matched_cap) {
		r->matched_cap = r->matched_cap ? 2 * r->matched_cap : 16;
		r->matched =
		    realloc(r->matched, r->matched_cap * sizeof(*r->matched));
		FAST_ASSERT(r->matched != NULL);
	}
	r->matched[r->rec.n] = r->fr.matched;
	tu_frames_found(&r->rec);
	if (r->on_found != NULL)
		rc = r->on_found(r);
	else
		rig_apply_script(r);
	return rc || rig_random_stop(r);
}

static const struct framer_sink rig_sink = {rig_data, rig_found, NULL};

/* The fast path's sink: frame bytes as pointers the framer drains. */
static int
rig_bytes(void *ctx, const void *p, size_t n)
{
	struct rig *r = ctx;

	FAST_ASSERT(n > 0);
	r->data_calls++;
	tu_frames_collect(&r->rec, p, n);
	r->taken += n;
	return rig_random_stop(r);
}

static const struct framer_sink rig_sink_fast = {rig_data, rig_found,
    rig_bytes};

/* Whether new rigs offer the fast path (hooked rigs never do: their
 * data() hooks work on the evbuffer). */
static int rig_fast_mode;

static const struct framer_sink *
rig_sink_of(const struct rig *r)
{
	return r->fast && r->on_data == NULL ? &rig_sink_fast : &rig_sink;
}

static void
rig_init(struct rig *r, const struct fm_step *steps, size_t nsteps)
{
	const struct fm_step *step;

	memset(r, 0, sizeof(*r));
	async_chat__framer_init(&r->fr);
	r->in = evbuffer_new();
	FAST_ASSERT(r->in != NULL);
	tu_frames_init(&r->rec);
	r->steps = steps;
	r->nsteps = nsteps;
	r->fast = rig_fast_mode;
	step = fm_step_at(steps, nsteps, 0);
	if (step != NULL)
		apply_term(&r->fr, &step->term);
}

static void
rig_free(struct rig *r)
{
	async_chat__framer_clear(&r->fr);
	evbuffer_free(r->in);
	tu_frames_clear(&r->rec);
	free(r->matched);
	memset(r, 0, sizeof(*r));
}

static enum framer_status
rig_feed1(struct rig *r)
{
	return async_chat__framer_feed(&r->fr, r->in, rig_sink_of(r), r);
}

static enum framer_status
rig_finish1(struct rig *r)
{
	return async_chat__framer_finish(&r->fr, r->in, rig_sink_of(r), r);
}

/* Feed (or finish) until the framer is idle, resuming after every stop
 * the sink asked for, as a channel resumes after a pause. */
static void
rig_pump(struct rig *r, int finish)
{
	enum framer_status st;
	int guard = 0;

	for (;;) {
		st = finish ? rig_finish1(r) : rig_feed1(r);
		if (st != FRAMER_STOPPED)
			break;
		FAST_ASSERT(++guard < 10000000);
	}
	FAST_ASSERT(st == FRAMER_IDLE);
}

static void
rig_add(struct rig *r, const void *p, size_t n, int by_reference)
{
	if (by_reference)
		FAST_ASSERT(
		    evbuffer_add_reference(r->in, p, n, NULL, NULL) == 0);
	else
		FAST_ASSERT(evbuffer_add(r->in, p, n) == 0);
}

/*
 * Comparing with the model
 */

/* The frames ended so far must be the model's first ones; with all
 * frames ended, the bytes collected since must be the model's tail, or
 * (before async_chat__framer_finish) a prefix of it. */
static void
expect_model(const struct rig *r, const unsigned char *s,
    const struct fm_result *m, int finished, const char *what)
{
	size_t i, cur = evbuffer_get_length(r->rec.cur);

	if (r->rec.n != m->n)
		ck_abort_msg("%s: %zu frames, model %zu", what, r->rec.n, m->n);
	for (i = 0; i < m->n; i++) {
		if (!tu_frame_eq(
		        &r->rec, i, s + m->frame[i].off, m->frame[i].len))
			ck_abort_msg("%s: frame %zu differs (len %zu, model "
			             "%zu)",
			    what, i, r->rec.len[i], m->frame[i].len);
		if (r->matched[i] != m->frame[i].matched)
			ck_abort_msg("%s: frame %zu matched %d, model %d", what,
			    i, r->matched[i], m->frame[i].matched);
	}
	if (finished && !tu_cur_eq(&r->rec, s + m->tail_off, m->tail_len))
		ck_abort_msg(
		    "%s: tail of %zu bytes, model %zu", what, cur, m->tail_len);
	if (!finished &&
	    (cur > m->tail_len || !tu_cur_eq(&r->rec, s + m->tail_off, cur)))
		ck_abort_msg(
		    "%s: tail so far is not a prefix of the model's", what);
}

enum plan {
	PLAN_WHOLE,     /* one feed */
	PLAN_SPLIT,     /* two feeds, cut at arg */
	PLAN_BYTES,     /* one feed per byte */
	PLAN_BYTES_ONE, /* every byte its own chain, then one feed */
	PLAN_RANDOM     /* random chunks, copied or referenced, fed or not */
};

static const char *const plan_name[] = {
    "whole", "split", "bytes", "bytes-one-feed", "random"};

static void
feed_plan(struct rig *r, const unsigned char *s, size_t len, enum plan plan,
    uint64_t arg)
{
	uint64_t rng = arg * 0x9E3779B97F4A7C15ULL + 1;
	size_t off = 0, n;

	switch (plan) {
	case PLAN_WHOLE:
		rig_add(r, s, len, 0);
		rig_pump(r, 0);
		break;
	case PLAN_SPLIT:
		rig_add(r, s, (size_t)arg, 0);
		rig_pump(r, 0);
		rig_add(r, s + arg, len - (size_t)arg, 1);
		rig_pump(r, 0);
		break;
	case PLAN_BYTES:
		for (off = 0; off < len; off++) {
			rig_add(r, s + off, 1, 0);
			rig_pump(r, 0);
		}
		break;
	case PLAN_BYTES_ONE:
		for (off = 0; off < len; off++)
			rig_add(r, s + off, 1, 1);
		rig_pump(r, 0);
		break;
	case PLAN_RANDOM:
		while (off < len) {
			uint64_t x = tu_rand(&rng);

			/* One in four chunks is a single byte. */
			if (x % 4 == 0)
				n = 1;
			else
				n = 1 + (size_t)((x >> 8) % (1 + len / 4));
			if (n > len - off)
				n = len - off;
			rig_add(r, s + off, n, (x >> 40) & 1);
			/* Sometimes leave an empty chain at the end, as
			 * evbuffer_expand() and evbuffer_read() may. */
			if ((x >> 48) % 8 == 0)
				FAST_ASSERT(evbuffer_expand(r->in, 4096) == 0);
			off += n;
			/* Often let chunks pile up into many chains. */
			if ((x >> 44) % 4 != 0 || off == len)
				rig_pump(r, 0);
		}
		break;
	}
}

static void
check_plan(const struct fm_step *steps, size_t nsteps, const unsigned char *s,
    size_t len, const struct fm_result *m, enum plan plan, uint64_t arg,
    uint64_t stop_seed)
{
	char what[128];
	struct rig r;

	snprintf(what, sizeof(what), "plan %s %llu, stops %llu",
	    plan_name[plan], (unsigned long long)arg,
	    (unsigned long long)stop_seed);
	rig_init(&r, steps, nsteps);
	r.stop_rng = stop_seed;
	feed_plan(&r, s, len, plan, arg);
	expect_model(&r, s, m, 0, what);
	rig_pump(&r, 1);
	expect_model(&r, s, m, 1, what);
	if (evbuffer_get_length(r.in) != 0)
		ck_abort_msg("%s: input left", what);
	rig_free(&r);
}

/* The whole battery: one feed, one byte at a time, every split point,
 * many chains at once, random chunkings, and random sink stops. */
static void
check_all_ways(const struct fm_step *steps, size_t nsteps, const void *stream,
    size_t len, int nrandom)
{
	const unsigned char *s = stream;
	struct fm_result m;
	uint64_t k;
	int i, fast;

	FAST_ASSERT(fm_run(steps, nsteps, s, len, &m) == 0);
	/* Once through the incremental scanner alone, once with the fast
	 * path offered: the frames must not depend on which ran. */
	for (fast = 0; fast <= 1; fast++) {
		rig_fast_mode = fast;
		check_plan(steps, nsteps, s, len, &m, PLAN_WHOLE, 0, 0);
		check_plan(steps, nsteps, s, len, &m, PLAN_BYTES, 0, 0);
		check_plan(steps, nsteps, s, len, &m, PLAN_BYTES_ONE, 0, 0);
		for (k = 0; k <= len; k++)
			check_plan(steps, nsteps, s, len, &m, PLAN_SPLIT, k, 0);
		for (i = 1; i <= nrandom; i++)
			check_plan(steps, nsteps, s, len, &m, PLAN_RANDOM, i,
			    0);
		for (i = 1; i <= nrandom / 4 + 1; i++) {
			check_plan(steps, nsteps, s, len, &m, PLAN_RANDOM, i,
			    i);
			check_plan(steps, nsteps, s, len, &m, PLAN_BYTES, 0,
			    7 * i);
		}
	}
	rig_fast_mode = 0;
	fm_result_free(&m);
}

/*
 * Hand-written cases: the expectation is written out, so the model and
 * the framer are both checked against it, then against each other.
 */

struct blob {
	const char *p;
	size_t len;
};
#define B(s)                                                                   \
	{                                                                      \
		(s), sizeof(s) - 1                                             \
	}

struct known {
	struct blob term;
	struct blob stream;
	struct blob frame[6];
	size_t nframes;
	struct blob tail;
};

static const struct known known_strings[] = {
    {B("\n"), B("a\n\nbc\nd"), {B("a"), B(""), B("bc")}, 3, B("d")},
    {B("\r\n"), B("GET / HTTP/1.0\r\n\r\nHost\r"), {B("GET / HTTP/1.0"), B("")},
        2, B("Host\r")},
    {B("\0"), B("ab\0\0c"), {B("ab"), B("")}, 2, B("c")},
    {B("a\0b"), B("xa\0a\0by\0ba\0b"), {B("xa\0"), B("y\0b")}, 2, B("")},
    {B("\0\0\0"), B("\0\0x\0\0\0\0\0\0\0"), {B("\0\0x"), B("")}, 2, B("\0")},
    {B("aab"), B("aaab"), {B("a")}, 1, B("")},
    {B("aab"), B("aaaabaab"), {B("aa"), B("")}, 2, B("")},
    {B("abab"), B("abababab"), {B(""), B("")}, 2, B("")},
    {B("abab"), B("abaabababab"), {B("aba"), B("")}, 2, B("")},
    {B("aaa"), B("aaaa"), {B("")}, 1, B("a")},
    {B("aaa"), B("aaaaaaaa"), {B(""), B("")}, 2, B("aa")},
    {B("\r\n\r\n"), B("a\r\n\rb\r\n\r\nc\r\n\r"), {B("a\r\n\rb")}, 1,
        B("c\r\n\r")},
    {B("--XYZZY--\0!"), B("--XYZZY--\0--XYZZY--\0!body--XYZZY--\0!"),
        {B("--XYZZY--\0"), B("body")}, 2, B("")},
    {B("abcabd"), B("abcabcabdabcab"), {B("abc")}, 1, B("abcab")},
};

static void
expect_known_frames(const struct rig *r, const struct known *k)
{
	size_t i;

	ck_assert_uint_eq(r->rec.n, k->nframes);
	for (i = 0; i < k->nframes; i++)
		ck_assert_msg(
		    tu_frame_eq(&r->rec, i, k->frame[i].p, k->frame[i].len),
		    "frame %zu", i);
	ck_assert(tu_cur_eq(&r->rec, k->tail.p, k->tail.len));
}

static void
expect_model_known(
    const struct fm_step *steps, size_t nsteps, const struct known *k)
{
	struct fm_result m;
	size_t i;

	ck_assert_int_eq(
	    fm_run(steps, nsteps, k->stream.p, k->stream.len, &m), 0);
	ck_assert_uint_eq(m.n, k->nframes);
	for (i = 0; i < m.n; i++) {
		ck_assert_uint_eq(m.frame[i].len, k->frame[i].len);
		ck_assert_mem_eq(k->stream.p + m.frame[i].off, k->frame[i].p,
		    m.frame[i].len);
	}
	ck_assert_uint_eq(m.tail_len, k->tail.len);
	ck_assert_mem_eq(k->stream.p + m.tail_off, k->tail.p, m.tail_len);
	fm_result_free(&m);
}

START_TEST(test_string_known)
{
	const struct known *k = &known_strings[_i];
	struct fm_step step = {0, fm_string(k->term.p, k->term.len)};
	struct rig r;

	expect_model_known(&step, 1, k);

	rig_init(&r, &step, 1);
	rig_add(&r, k->stream.p, k->stream.len, 0);
	rig_pump(&r, 1);
	expect_known_frames(&r, k);
	rig_free(&r);

	check_all_ways(&step, 1, k->stream.p, k->stream.len, 20);
}
END_TEST

/* Empty frames end with found() alone: data() never sees 0 bytes (the
 * rig asserts that) and the recorder sees no collect at all. */
START_TEST(test_string_empty_frames)
{
	static const char stream[] = "\r\n\r\n\r\nx\r\n";
	struct fm_step step = {0, fm_string("\r\n", 2)};
	struct rig r;
	size_t i;

	for (i = 0; i < 2; i++) {
		rig_init(&r, &step, 1);
		if (i == 0) {
			rig_add(&r, stream, sizeof(stream) - 1, 0);
			rig_pump(&r, 1);
		} else {
			feed_plan(&r, (const unsigned char *)stream,
			    sizeof(stream) - 1, PLAN_BYTES, 0);
			rig_pump(&r, 1);
		}
		ck_assert_uint_eq(r.rec.n, 4);
		ck_assert(tu_frame_is(&r.rec, 0, ""));
		ck_assert(tu_frame_is(&r.rec, 1, ""));
		ck_assert(tu_frame_is(&r.rec, 2, ""));
		ck_assert(tu_frame_is(&r.rec, 3, "x"));
		ck_assert_int_eq(r.rec.collects, 1);
		ck_assert_int_eq(r.rec.founds, 4);
		rig_free(&r);
	}
}
END_TEST

/* A held-back prefix stays in the input, and only it. */
START_TEST(test_string_holds_prefix)
{
	struct fm_step step = {0, fm_string("\r\n\r\n", 4)};
	struct rig r;

	rig_init(&r, &step, 1);
	rig_add(&r, "abc\r\n\r", 6, 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 3);
	/* The prefix breaks off: everything but a new prefix goes out. */
	rig_add(&r, "x\r", 2, 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc\r\n\rx", 7));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_add(&r, "\n\r\n", 3, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r\n\rx"));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
	rig_free(&r);
}
END_TEST

/* libevent's evbuffer_peek() reports at most as many extents as it is
 * given when asked for the whole buffer, so a scan must not take a full
 * batch for the end of the input. */
START_TEST(test_string_many_chains)
{
	static const char *const piece[] = {"a0", "a1", "a2", "a3", "a4", "a5",
	    "a6", "a7", "a8", "a9", "b0", "b1", "b2", "b3", "b4", "b5", "b6",
	    "b7", "XY", "c9", "XY", "XY"};
	struct fm_step step = {0, fm_string("XY", 2)};
	struct rig r;
	size_t i;

	rig_init(&r, &step, 1);
	for (i = 0; i < sizeof(piece) / sizeof(piece[0]); i++)
		rig_add(&r, piece[i], 2, 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(
	    tu_frame_is(&r.rec, 0, "a0a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7"));
	ck_assert(tu_frame_is(&r.rec, 1, "c9"));
	ck_assert(tu_frame_is(&r.rec, 2, ""));
	rig_free(&r);

	/* The held-back prefix must be computed past 16 chains too. */
	rig_init(&r, &step, 1);
	for (i = 0; i < 40; i++)
		rig_add(&r, "q", 1, 1);
	rig_add(&r, "X", 1, 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	ck_assert_uint_eq(evbuffer_get_length(r.rec.cur), 40);
	rig_add(&r, "Y", 1, 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert_uint_eq(r.rec.len[0], 40);
	rig_free(&r);
}
END_TEST

START_TEST(test_string_bad_args)
{
	struct async_chat_terminator t;
	struct framer fr;
	static char big[ASYNC_CHAT_TERMINATOR_MAX + 1];

	async_chat__framer_init(&fr);
	async_chat__framer_get(&fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat__framer_set_string(&fr, "\n", 1), 0);

	errno = 0;
	ck_assert_int_eq(async_chat__framer_set_string(&fr, NULL, 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat__framer_set_string(&fr, big, sizeof(big)), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* A refused terminator leaves the one in force. */
	async_chat__framer_get(&fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 1);
	ck_assert_mem_eq(t.bytes, "\n", 1);

	/* Length 0 is the none terminator, whatever the pointer. */
	ck_assert_int_eq(async_chat__framer_set_string(&fr, NULL, 0), 0);
	async_chat__framer_get(&fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat__framer_set_string(&fr, "abc", 3), 0);
	ck_assert_int_eq(async_chat__framer_set_string(&fr, "abc", 0), 0);
	async_chat__framer_get(&fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.len, 0);

	/* get reports a copy, not the caller's bytes. */
	memcpy(big, "\0zz", 3);
	ck_assert_int_eq(async_chat__framer_set_string(&fr, big, 3), 0);
	big[1] = 'q';
	async_chat__framer_get(&fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "\0zz", 3);
	ck_assert_ptr_ne(t.bytes, big);
	big[1] = 0;
	/* Setting the terminator from its own reported bytes is allowed. */
	ck_assert_int_eq(async_chat__framer_set_string(&fr, t.bytes, t.len), 0);
	async_chat__framer_get(&fr, &t);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "\0zz", 3);
	async_chat__framer_clear(&fr);
}
END_TEST

/* The longest terminator, random (so shifts are cheap to check) and
 * self-similar (so a naive rescan would cost len per byte). */
START_TEST(test_string_max_len)
{
	const size_t tlen = ASYNC_CHAT_TERMINATOR_MAX;
	unsigned char *term = malloc(tlen);
	unsigned char *s = malloc(5 * tlen);
	uint64_t rng = 42;
	size_t i, len = 0;
	struct fm_step step;
	struct rig r;

	ck_assert_ptr_nonnull(term);
	ck_assert_ptr_nonnull(s);
	for (i = 0; i < tlen; i++)
		term[i] = (unsigned char)tu_rand(&rng);
	step.frame = 0;
	step.term = fm_string(term, tlen);
	/* frame, terminator, a near miss, the terminator again, and a
	 * prefix held back to the end */
	memset(s, 'x', 1000);
	len = 1000;
	memcpy(s + len, term, tlen);
	len += tlen;
	memcpy(s + len, term, tlen - 1);
	len += tlen - 1;
	s[len++] = (unsigned char)(term[tlen - 1] ^ 1);
	memcpy(s + len, term, tlen);
	len += tlen;
	memcpy(s + len, term, tlen - 10);
	len += tlen - 10;

	for (i = 0; i < 3; i++) {
		rig_init(&r, &step, 1);
		if (i == 0)
			feed_plan(&r, s, len, PLAN_WHOLE, 0);
		else if (i == 1)
			feed_plan(&r, s, len, PLAN_RANDOM, 3);
		else
			feed_plan(&r, s, len, PLAN_SPLIT, 1000 + tlen / 2);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert_uint_eq(r.rec.len[0], 1000);
		ck_assert_uint_eq(r.rec.len[1], tlen);
		ck_assert_mem_eq(r.rec.frame[1], term, tlen - 1);
		ck_assert_uint_eq(evbuffer_get_length(r.in), tlen - 10);
		ck_assert_uint_eq(evbuffer_get_length(r.rec.cur), 0);
		rig_pump(&r, 1);
		ck_assert(tu_cur_eq(&r.rec, term, tlen - 10));
		rig_free(&r);
	}

	memset(term, 'a', tlen - 1);
	term[tlen - 1] = 'b';
	memset(s, 'a', 3 * tlen);
	s[3 * tlen] = 'b';
	len = 3 * tlen + 1;
	rig_init(&r, &step, 1);
	feed_plan(&r, s, len, PLAN_BYTES, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert_uint_eq(r.rec.len[0], 2 * tlen + 1);
	rig_free(&r);

	free(term);
	free(s);
}
END_TEST

/*
 * Random streams and scripts.  Small alphabets, pieces of the terminators
 * and near misses make matches, overlaps and held-back prefixes common.
 */

struct rcase {
	struct fm_step steps[24];
	size_t nsteps;
	unsigned char pool[1024];
	size_t pool_used;
	unsigned char s[400];
	size_t len;
};

static const unsigned char alphabet[] = {'a', 'b', '\r', '\n', '\0'};

static const unsigned char *
rand_bytes(struct rcase *c, uint64_t *rng, size_t n, size_t nalpha)
{
	unsigned char *p = c->pool + c->pool_used;
	size_t i;

	ck_assert_uint_le(c->pool_used + n, sizeof(c->pool));
	for (i = 0; i < n; i++)
		p[i] = alphabet[tu_rand(rng) % nalpha];
	c->pool_used += n;
	return p;
}

/* kinds: a bit mask of 1 << enum async_chat_terminator_kind. */
static struct fm_term
rand_term(struct rcase *c, uint64_t *rng, unsigned kinds)
{
	const void *alt[4];
	size_t lens[4], n, i;
	enum async_chat_terminator_kind kind;

	do
		kind = (enum async_chat_terminator_kind)(tu_rand(rng) % 5);
	while (!(kinds & (1u << kind)));
	switch (kind) {
	case ASYNC_CHAT_TERM_COUNT:
		return fm_count(1 + tu_rand(rng) % 9);
	case ASYNC_CHAT_TERM_STRING:
		n = 1 + tu_rand(rng) % 5;
		return fm_string(
		    rand_bytes(c, rng, n, 2 + tu_rand(rng) % 4), n);
	case ASYNC_CHAT_TERM_LINE:
		return fm_line();
	case ASYNC_CHAT_TERM_ANY:
		n = 1 + tu_rand(rng) % 4;
		for (i = 0; i < n; i++) {
			lens[i] = 1 + tu_rand(rng) % 4;
			alt[i] = rand_bytes(c, rng, lens[i], 3 + i % 3);
		}
		return fm_any(alt, lens, n);
	case ASYNC_CHAT_TERM_NONE:
	default:
		return fm_none();
	}
}

/* Append pieces of the script's terminators and random bytes. */
static void
rand_stream(struct rcase *c, uint64_t *rng, size_t len)
{
	c->len = 0;
	while (c->len < len) {
		uint64_t x = tu_rand(rng);
		const struct fm_term *t = &c->steps[x % c->nsteps].term;
		size_t n, j = (x >> 8) % (t->n ? t->n : 1);

		if ((x >> 16) % 3 != 0 && t->n > 0) {
			/* the terminator, or a prefix of it */
			n = t->len[j];
			if ((x >> 20) % 3 == 0)
				n = (size_t)((x >> 24) % n);
			if (n > len - c->len)
				n = len - c->len;
			memcpy(c->s + c->len, t->bytes[j], n);
		} else {
			n = 1 + (x >> 24) % 4;
			if (n > len - c->len)
				n = len - c->len;
			for (j = 0; j < n; j++)
				c->s[c->len + j] =
				    alphabet[tu_rand(rng) % sizeof(alphabet)];
		}
		c->len += n;
	}
}

static void
rand_case(
    struct rcase *c, uint64_t seed, unsigned kinds, size_t len, int script)
{
	uint64_t rng = seed * 0x2545F4914F6CDD1DULL + 17;
	size_t i;

	memset(c, 0, sizeof(*c));
	c->steps[0].frame = 0;
	c->steps[0].term = rand_term(c, &rng, kinds);
	c->nsteps = 1;
	if (script) {
		for (i = 1; i < sizeof(c->steps) / sizeof(c->steps[0]); i++) {
			/* Some frames keep the terminator (a spent count
			 * then collects like none). */
			if (tu_rand(&rng) % 4 == 0)
				continue;
			c->steps[c->nsteps].frame = i;
			c->steps[c->nsteps].term = rand_term(c, &rng, kinds);
			c->nsteps++;
		}
	}
	rand_stream(c, &rng, len);
}

#define K(kind) (1u << ASYNC_CHAT_TERM_##kind)

static void
check_random(unsigned kinds, int script, int ncases)
{
	struct rcase *c = malloc(sizeof(*c));
	int i;

	ck_assert_ptr_nonnull(c);
	for (i = 1; i <= ncases; i++) {
		rand_case(c, (uint64_t)i * 7919 + kinds, kinds,
		    40 + (size_t)i % 90, script);
		check_all_ways(c->steps, c->nsteps, c->s, c->len, 6);
	}
	free(c);
}

START_TEST(test_string_random)
{
	check_random(K(STRING), 0, 70);
}
END_TEST

START_TEST(test_string_random_script)
{
	check_random(K(STRING), 1, 60);
}
END_TEST

/*
 * Counts
 */

START_TEST(test_count_known)
{
	struct fm_step one[] = {
	    {0, fm_count(1)}, {1, fm_count(1)}, {2, fm_count(1)}};
	struct fm_step six = {0, fm_count(6)};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, one, 3);
	rig_add(&r, "abcd", 4, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "a"));
	ck_assert(tu_frame_is(&r.rec, 1, "b"));
	ck_assert(tu_frame_is(&r.rec, 2, "c"));
	/* spent: "d" is collected at once, like none */
	ck_assert(tu_cur_eq(&r.rec, "d", 1));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 0);
	rig_add(&r, "efgh", 4, 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_cur_eq(&r.rec, "defgh", 5));
	rig_free(&r);

	rig_init(&r, &six, 1);
	rig_add(&r, "abc", 3, 0);
	rig_pump(&r, 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_uint_eq(t.count, 3);
	rig_add(&r, "de", 2, 0);
	rig_pump(&r, 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_uint_eq(t.count, 1);
	ck_assert_uint_eq(r.rec.n, 0);
	rig_add(&r, "fgh", 3, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdef"));
	ck_assert(tu_cur_eq(&r.rec, "gh", 2));
	rig_free(&r);
}
END_TEST

/* Inside data() get reports what is still missing after these bytes;
 * inside found() it reports 0. */
static int
count_probe_data(struct rig *r, struct evbuffer *in, size_t len)
{
	struct async_chat_terminator t;

	async_chat__framer_get(&r->fr, &t);
	FAST_ASSERT(t.kind == ASYNC_CHAT_TERM_COUNT);
	FAST_ASSERT(t.count + evbuffer_get_length(r->rec.cur) + len == r->u0);
	return rig_take(r, in, len);
}

static int
count_probe_found(struct rig *r)
{
	struct async_chat_terminator t;

	async_chat__framer_get(&r->fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 0);
	ck_assert_uint_eq(r->rec.len[r->rec.n - 1], r->u0);
	ck_assert_int_eq(async_chat__framer_set_count(&r->fr, r->u0), 0);
	return 0;
}

START_TEST(test_count_get_inside)
{
	static const char s[] = "0123456789abcdefghijklmnopq";
	struct fm_step step = {0, fm_count(6)};
	uint64_t seed;
	struct rig r;

	for (seed = 0; seed < 20; seed++) {
		rig_init(&r, &step, 1);
		r.u0 = 6;
		r.on_data = count_probe_data;
		r.on_found = count_probe_found;
		if (seed == 0)
			feed_plan(
			    &r, (const unsigned char *)s, 27, PLAN_BYTES, 0);
		else
			feed_plan(&r, (const unsigned char *)s, 27, PLAN_RANDOM,
			    seed);
		ck_assert_uint_eq(r.rec.n, 4);
		ck_assert(tu_frame_is(&r.rec, 3, "ijklmn"));
		ck_assert(tu_cur_eq(&r.rec, "opq", 3));
		rig_free(&r);
	}
}
END_TEST

START_TEST(test_count_large)
{
	static const uint64_t counts[] = {UINT64_MAX, UINT64_MAX - 1,
	    (1ULL << 32) + 1, (1ULL << 32) - 1, 1ULL << 40, 5000000001ULL};
	static char buf[100000];
	struct async_chat_terminator t;
	struct rig r;
	size_t i;
	int k;

	memset(buf, 'z', sizeof(buf));
	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct fm_step step = {0, fm_count(counts[i])};

		rig_init(&r, &step, 1);
		for (k = 0; k < 5; k++) {
			rig_add(&r, buf, sizeof(buf), k & 1);
			rig_pump(&r, 0);
		}
		async_chat__framer_get(&r.fr, &t);
		ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
		ck_assert_uint_eq(t.count, counts[i] - 5 * sizeof(buf));
		ck_assert_uint_eq(r.rec.n, 0);
		ck_assert_uint_eq(r.taken, 5 * sizeof(buf));
		ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
		rig_free(&r);
	}
}
END_TEST

START_TEST(test_count_zero_is_none)
{
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat__framer_set_count(&r.fr, 5), 0);
	ck_assert_int_eq(async_chat__framer_set_count(&r.fr, 0), 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_uint_eq(t.count, 0);
	rig_add(&r, "abcdefgh", 8, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 0);
	ck_assert(tu_cur_eq(&r.rec, "abcdefgh", 8));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
	rig_free(&r);
}
END_TEST

START_TEST(test_count_random)
{
	check_random(K(COUNT), 1, 60);
}
END_TEST

/*
 * None
 */

START_TEST(test_none)
{
	static const char s[] = "a\r\nb\0\n\r";
	struct async_chat_terminator t;
	struct fm_step step = {0, fm_none()};
	struct rig r;
	int i;

	rig_init(&r, NULL, 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	for (i = 0; i < 3; i++) {
		rig_add(&r, s, sizeof(s) - 1, i & 1);
		rig_pump(&r, 0);
		/* nothing is ever held back */
		ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
		ck_assert_uint_eq(evbuffer_get_length(r.rec.cur),
		    (size_t)(i + 1) * (sizeof(s) - 1));
	}
	ck_assert_int_eq(r.rec.founds, 0);
	ck_assert_uint_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert_int_eq(r.rec.founds, 0);
	rig_free(&r);

	check_all_ways(&step, 1, s, sizeof(s) - 1, 10);
}
END_TEST

/*
 * Line mode
 */

START_TEST(test_line_known)
{
	static const char s[] = "a\r\nb\nc\rd\n\r\r\n\n\r\rx\r";
	struct fm_step step = {0, fm_line()};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, &step, 1);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LINE);
	ck_assert_uint_eq(t.alternatives, 2);
	rig_add(&r, s, sizeof(s) - 1, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 5);
	ck_assert(tu_frame_is(&r.rec, 0, "a"));
	ck_assert_int_eq(r.matched[0], 0);
	ck_assert(tu_frame_is(&r.rec, 1, "b"));
	ck_assert_int_eq(r.matched[1], 1);
	ck_assert(tu_frame_is(&r.rec, 2, "c\rd"));
	ck_assert_int_eq(r.matched[2], 1);
	ck_assert(tu_frame_is(&r.rec, 3, "\r"));
	ck_assert_int_eq(r.matched[3], 0);
	ck_assert(tu_frame_is(&r.rec, 4, ""));
	ck_assert_int_eq(r.matched[4], 1);
	/* the last CR may still begin a CRLF */
	ck_assert(tu_cur_eq(&r.rec, "\r\rx", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_pump(&r, 1);
	ck_assert(tu_cur_eq(&r.rec, "\r\rx\r", 4));
	rig_free(&r);

	check_all_ways(&step, 1, s, sizeof(s) - 1, 40);
}
END_TEST

START_TEST(test_line_cr_at_chunk_end)
{
	struct fm_step step = {0, fm_line()};
	struct rig r;

	rig_init(&r, &step, 1);
	rig_add(&r, "abc\r", 4, 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_add(&r, "\r", 1, 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc\r", 4));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_add(&r, "\n", 1, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r"));
	ck_assert_int_eq(r.matched[0], 0);
	rig_free(&r);
}
END_TEST

/* Empty chains (left by evbuffer_expand() or evbuffer_reserve_space(), or
 * moved along by evbuffer_add_buffer()) hold no byte: the CR before them
 * is still the last byte. */
START_TEST(test_line_empty_chain)
{
	struct fm_step step = {0, fm_line()};
	struct evbuffer_iovec v[2];
	struct evbuffer *other;
	struct rig r;

	rig_init(&r, &step, 1);
	rig_add(&r, "abc\r", 4, 1);
	ck_assert_int_eq(evbuffer_expand(r.in, 100000), 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_add(&r, "\n", 1, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc"));
	ck_assert_int_eq(r.matched[0], 0);

	other = evbuffer_new();
	ck_assert_ptr_nonnull(other);
	ck_assert_int_eq(
	    evbuffer_add_reference(other, "de\r", 3, NULL, NULL), 0);
	ck_assert_int_gt(evbuffer_reserve_space(other, 200000, v, 2), 0);
	ck_assert_int_eq(evbuffer_add_buffer(r.in, other), 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	rig_add(&r, "\n", 1, 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 1, "de"));
	ck_assert_int_eq(r.matched[1], 0);
	evbuffer_free(other);
	rig_free(&r);
}
END_TEST

/* A CR that ended the previous frame's data is not this frame's. */
START_TEST(test_line_after_string)
{
	static const char s[] = "a\rX\nb\r\n";
	struct fm_step steps[] = {{0, fm_string("X", 1)}, {1, fm_line()}};
	struct rig r;

	rig_init(&r, steps, 2);
	rig_add(&r, s, sizeof(s) - 1, 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "a\r"));
	ck_assert(tu_frame_is(&r.rec, 1, ""));
	ck_assert_int_eq(r.matched[1], 1);
	ck_assert(tu_frame_is(&r.rec, 2, "b"));
	ck_assert_int_eq(r.matched[2], 0);
	rig_free(&r);

	check_all_ways(steps, 2, s, sizeof(s) - 1, 20);
}
END_TEST

START_TEST(test_line_random)
{
	check_random(K(LINE), 0, 40);
	check_random(K(LINE) | K(STRING) | K(COUNT), 1, 60);
}
END_TEST

/*
 * Alternatives
 */

struct any_case {
	const char *alt[4];
	size_t n;
	const char *stream;
	const char *frame;
	int matched;
	const char *tail;
};

static const struct any_case any_cases[] = {
    /* the earliest end wins, wherever the match starts */
    {{"abc", "b"}, 2, "abc", "a", 1, "c"},
    {{"bc", "abcd"}, 2, "abcd", "a", 0, "d"},
    {{"abcd", "bc"}, 2, "abcd", "a", 1, "d"},
    {{"yzq", "xyz", "qq"}, 3, "wxyzq", "w", 1, "q"},
    /* of matches ending on one byte the longest wins */
    {{"b", "ab"}, 2, "xab", "x", 1, ""},
    {{"\n", "\r\n"}, 2, "hi\r\n", "hi", 1, ""},
    {{"\r\n", "\n"}, 2, "hi\r\n", "hi", 0, ""},
    {{"\r\n", "\n"}, 2, "hi\n", "hi", 1, ""},
    {{"c", "bc", "abc"}, 3, "zabcd", "z", 2, "d"},
    /* equal alternatives: the first listed */
    {{"q", "q"}, 2, "aq", "a", 0, ""},
    /* overlaps within and across alternatives */
    {{"aab", "aaa"}, 2, "aaab", "", 1, "b"},
    {{"abab", "bb"}, 2, "xabb", "xa", 1, ""},
};

START_TEST(test_any_known)
{
	const struct any_case *c = &any_cases[_i];
	size_t lens[4], i;
	struct fm_step step;
	struct rig r;

	for (i = 0; i < c->n; i++)
		lens[i] = strlen(c->alt[i]);
	step.frame = 0;
	step.term = fm_any((const void *const *)c->alt, lens, c->n);

	rig_init(&r, &step, 1);
	rig_add(&r, c->stream, strlen(c->stream), 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, c->frame));
	ck_assert_int_eq(r.matched[0], c->matched);
	ck_assert(tu_cur_eq(&r.rec, c->tail, strlen(c->tail)));
	rig_free(&r);

	check_all_ways(&step, 1, c->stream, strlen(c->stream), 20);
}
END_TEST

START_TEST(test_any_limits)
{
	char alt[ASYNC_CHAT_ALTERNATIVES_MAX + 1][4];
	const void *terms[ASYNC_CHAT_ALTERNATIVES_MAX + 1];
	size_t lens[ASYNC_CHAT_ALTERNATIVES_MAX + 1], i;
	static char big[ASYNC_CHAT_TERMINATOR_MAX + 1];
	struct async_chat_terminator t;
	struct fm_step step;
	struct rig r;
	char s[64];

	for (i = 0; i <= ASYNC_CHAT_ALTERNATIVES_MAX; i++) {
		alt[i][0] = '<';
		alt[i][1] = (char)('A' + i);
		alt[i][2] = '>';
		terms[i] = alt[i];
		lens[i] = 3;
	}
	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat__framer_set_string(&r.fr, "\n", 1), 0);

#define REFUSED(call)                                                          \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_int_eq((call), -1);                                  \
		ck_assert_int_eq(errno, EINVAL);                               \
		async_chat__framer_get(&r.fr, &t);                                         \
		ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);              \
	} while (0)
	REFUSED(async_chat__framer_set_any(&r.fr, terms, lens, 0));
	REFUSED(async_chat__framer_set_any(
	    &r.fr, terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX + 1));
	REFUSED(async_chat__framer_set_any(&r.fr, NULL, lens, 2));
	REFUSED(async_chat__framer_set_any(&r.fr, terms, NULL, 2));
	lens[3] = 0;
	REFUSED(async_chat__framer_set_any(&r.fr, terms, lens, 4));
	lens[3] = 3;
	terms[2] = NULL;
	REFUSED(async_chat__framer_set_any(&r.fr, terms, lens, 4));
	terms[2] = alt[2];
	terms[1] = big;
	lens[1] = sizeof(big);
	REFUSED(async_chat__framer_set_any(&r.fr, terms, lens, 4));
#undef REFUSED
	lens[1] = sizeof(big) - 1;
	ck_assert_int_eq(async_chat__framer_set_any(&r.fr, terms, lens, 4), 0);
	terms[1] = alt[1];
	lens[1] = 3;

	/* the most alternatives; each one's index is reported */
	ck_assert_int_eq(
	    async_chat__framer_set_any(&r.fr, terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX), 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_ANY);
	ck_assert_uint_eq(t.alternatives, ASYNC_CHAT_ALTERNATIVES_MAX);
	for (i = ASYNC_CHAT_ALTERNATIVES_MAX; i-- > 0;) {
		int n = snprintf(
		    s, sizeof(s), "f%zu<%c<%c>", i, 'A' + (int)i, 'A' + (int)i);

		rig_add(&r, s, (size_t)n, 0);
	}
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, ASYNC_CHAT_ALTERNATIVES_MAX);
	for (i = 0; i < ASYNC_CHAT_ALTERNATIVES_MAX; i++) {
		size_t want = ASYNC_CHAT_ALTERNATIVES_MAX - 1 - i;

		snprintf(s, sizeof(s), "f%zu<%c", want, 'A' + (int)want);
		ck_assert(tu_frame_is(&r.rec, i, s));
		ck_assert_int_eq(r.matched[i], (int)want);
	}
	rig_free(&r);

	step.frame = 0;
	step.term = fm_any(terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX);
	snprintf(s, sizeof(s), "<P><A<B<<C>>x<Z><O>y<O");
	check_all_ways(&step, 1, s, strlen(s), 20);
}
END_TEST

/* The bytes async_chat__framer_get() reports stay valid until the terminator is next
 * set, so they may be passed back to the setters: a new terminator built
 * from (part of) the old one, or the old one as one of the alternatives,
 * listed after a longer one. */
START_TEST(test_set_from_own_bytes)
{
	struct async_chat_terminator t;
	const void *alts[2];
	size_t lens[2];
	struct rig r;

	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat__framer_set_string(&r.fr, "<abc>", 5), 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(
	    async_chat__framer_set_string(&r.fr, (const char *)t.bytes + 1, 3), 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "abc", 3);

	alts[0] = "0123456789";
	lens[0] = 10;
	alts[1] = t.bytes;
	lens[1] = t.len;
	ck_assert_int_eq(async_chat__framer_set_any(&r.fr, alts, lens, 2), 0);
	rig_add(&r, "xxabcyy0123456789zz", 19, 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "xx"));
	ck_assert_int_eq(r.matched[0], 1);
	ck_assert(tu_frame_is(&r.rec, 1, "yy"));
	ck_assert_int_eq(r.matched[1], 0);
	ck_assert(tu_cur_eq(&r.rec, "zz", 2));
	rig_free(&r);
}
END_TEST

START_TEST(test_any_random)
{
	check_random(K(ANY), 0, 50);
}
END_TEST

START_TEST(test_all_kinds_random)
{
	check_random(K(NONE) | K(COUNT) | K(STRING) | K(LINE) | K(ANY), 1, 100);
}
END_TEST

/*
 * Terminators changed inside found() and data()
 */

/* HTTP: headers end at an empty line, then a Content-Length body, then
 * the next request's headers; the bodies hold what would end headers. */
START_TEST(test_switch_http)
{
	static const char s[] = "POST /a HTTP/1.1\r\nContent-Length: 12\r\n\r\n"
	                        "ab\r\n\r\ncd\r\n\r\n"
	                        "POST /b HTTP/1.1\r\nContent-Length: 4\r\n\r\n"
	                        "\r\n\r\n"
	                        "GET /c HTTP/1.1\r\n\r\n"
	                        "GET /d";
	struct fm_step steps[] = {
	    {0, fm_string("\r\n\r\n", 4)},
	    {1, fm_count(12)},
	    {2, fm_string("\r\n\r\n", 4)},
	    {3, fm_count(4)},
	    {4, fm_string("\r\n\r\n", 4)},
	};
	struct rig r;

	rig_init(&r, steps, 5);
	rig_add(&r, s, sizeof(s) - 1, 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 5);
	ck_assert(
	    tu_frame_is(&r.rec, 0, "POST /a HTTP/1.1\r\nContent-Length: 12"));
	ck_assert(tu_frame_is(&r.rec, 1, "ab\r\n\r\ncd\r\n\r\n"));
	ck_assert(
	    tu_frame_is(&r.rec, 2, "POST /b HTTP/1.1\r\nContent-Length: 4"));
	ck_assert(tu_frame_is(&r.rec, 3, "\r\n\r\n"));
	ck_assert(tu_frame_is(&r.rec, 4, "GET /c HTTP/1.1"));
	ck_assert(tu_cur_eq(&r.rec, "GET /d", 6));
	rig_free(&r);

	check_all_ways(steps, 5, s, sizeof(s) - 1, 40);
}
END_TEST

/* RESP, driven by the frames themselves as a client would: "$N" lines
 * switch to a count of N + 2 (the body and its CRLF), then back. */
static int
resp_found(struct rig *r)
{
	const char *f = r->rec.frame[r->rec.n - 1];
	size_t len = r->rec.len[r->rec.n - 1];

	if (r->i0) {
		ck_assert_uint_ge(len, 2);
		ck_assert_mem_eq(f + len - 2, "\r\n", 2);
		r->i0 = 0;
		ck_assert_int_eq(async_chat__framer_set_string(&r->fr, "\r\n", 2), 0);
	} else if (len > 1 && f[0] == '$') {
		r->i0 = 1;
		ck_assert_int_eq(
		    async_chat__framer_set_count(&r->fr, strtoull(f + 1, NULL, 10) + 2), 0);
	}
	return 0;
}

START_TEST(test_switch_resp)
{
	static const char s[] =
	    "*3\r\n$3\r\nSET\r\n$5\r\nk\r\n\r\n\r\n"
	    "$10\r\n$5\r\nhello!\r\n:42\r\n$0\r\n\r\n+OK\r\n";
	static const char *const want[] = {"*3", "$3", "SET\r\n", "$5",
	    "k\r\n\r\n\r\n", "$10", "$5\r\nhello!\r\n", ":42", "$0", "\r\n",
	    "+OK"};
	const size_t nwant = sizeof(want) / sizeof(want[0]);
	struct fm_step step = {0, fm_string("\r\n", 2)};
	const size_t len = sizeof(s) - 1;
	uint64_t seed;
	size_t i, k;
	struct rig r;

	for (seed = 0; seed < 60 + len; seed++) {
		rig_init(&r, &step, 1);
		r.on_found = resp_found;
		if (seed < 60)
			feed_plan(&r, (const unsigned char *)s, len,
			    seed == 0 ? PLAN_BYTES : PLAN_RANDOM, seed);
		else
			feed_plan(&r, (const unsigned char *)s, len, PLAN_SPLIT,
			    seed - 60);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, nwant);
		for (i = 0; i < nwant; i++) {
			k = strlen(want[i]);
			ck_assert_msg(tu_frame_eq(&r.rec, i, want[i], k),
			    "seed %llu frame %zu", (unsigned long long)seed, i);
		}
		ck_assert_uint_eq(evbuffer_get_length(r.rec.cur), 0);
		rig_free(&r);
	}
}
END_TEST

/* A count set inside data() is kept, not reduced by the bytes being
 * collected; it applies from the next byte. */
static int
set_count_once_data(struct rig *r, struct evbuffer *in, size_t len)
{
	rig_take(r, in, len);
	if (r->i0++ == 0)
		ck_assert_int_eq(async_chat__framer_set_count(&r->fr, r->u0), 0);
	return 0;
}

START_TEST(test_switch_in_data_count_kept)
{
	struct async_chat_terminator t;
	struct fm_step step = {0, fm_count(10)};
	struct rig r;

	rig_init(&r, &step, 1);
	r.on_data = set_count_once_data;
	r.u0 = 3;
	rig_add(&r, "0123", 4, 0);
	rig_pump(&r, 0);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 3);
	rig_add(&r, "456789", 6, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "0123456"));
	ck_assert(tu_cur_eq(&r.rec, "789", 3));
	rig_free(&r);

	/* In the not-found path the held-back bytes are scanned anew under
	 * the terminator set inside data(). */
	step.term = fm_string("\r\n", 2);
	rig_init(&r, &step, 1);
	r.on_data = set_count_once_data;
	r.u0 = 2;
	rig_add(&r, "abc\r", 4, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
	rig_add(&r, "\nz", 2, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r\n"));
	ck_assert(tu_cur_eq(&r.rec, "z", 1));
	rig_free(&r);
}
END_TEST

/* data() switching terminators on the last bytes of a frame: the frame
 * still ends (found runs, as in asynchat, where handle_read calls
 * found_terminator after the final collect), and the new terminator
 * applies from the byte after it. */
static int
switch_on_last_data(struct rig *r, struct evbuffer *in, size_t len)
{
	struct async_chat_terminator t;

	async_chat__framer_get(&r->fr, &t);
	rig_take(r, in, len);
	if (r->i0 == 0 && (t.kind != ASYNC_CHAT_TERM_COUNT || t.count == 0)) {
		r->i0 = 1;
		ck_assert_int_eq(async_chat__framer_set_string(&r->fr, "\n", 1), 0);
	}
	return 0;
}

START_TEST(test_switch_in_last_data)
{
	static const char s[] = "abcdxy\nz";
	struct fm_step count = {0, fm_count(4)};
	struct fm_step string = {0, fm_string("!", 1)};
	uint64_t seed;
	struct rig r;

	for (seed = 0; seed < 20; seed++) {
		rig_init(&r, &count, 1);
		r.on_data = switch_on_last_data;
		feed_plan(&r, (const unsigned char *)s, sizeof(s) - 1,
		    seed == 0 ? PLAN_WHOLE : PLAN_RANDOM, seed);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
		ck_assert(tu_frame_is(&r.rec, 1, "xy"));
		ck_assert(tu_cur_eq(&r.rec, "z", 1));
		rig_free(&r);
	}

	/* The same for a string whose terminator is already in the input
	 * when its frame is delivered. */
	rig_init(&r, &string, 1);
	r.on_data = switch_on_last_data;
	rig_add(&r, "abcd!xy\nz", 9, 0);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
	ck_assert(tu_frame_is(&r.rec, 1, "xy"));
	ck_assert(tu_cur_eq(&r.rec, "z", 1));
	rig_free(&r);
}
END_TEST

/* Takes every byte offered, and stops the scan the first time: a channel
 * paused inside collect_incoming_data. */
static int
take_and_stop_once(struct rig *r, struct evbuffer *in, size_t len)
{
	rig_take(r, in, len);
	return r->i0++ == 0;
}

/* A frame whose bytes were all delivered when the scan stopped has ended:
 * a terminator set while stopped applies after it, for strings as for
 * counts, and found() runs first on the next feed. */
START_TEST(test_switch_while_stopped)
{
	struct fm_step string = {0, fm_string("!", 1)};
	struct fm_step count = {0, fm_count(4)};
	const struct fm_step *steps[] = {&string, &count};
	static const char *const inputs[] = {"abcd!xy\nz", "abcdxy\nz"};
	size_t i;

	for (i = 0; i < 2; i++) {
		struct rig r;

		rig_init(&r, steps[i], 1);
		r.on_data = take_and_stop_once;
		rig_add(&r, inputs[i], strlen(inputs[i]), 0);
		ck_assert_int_eq(async_chat__framer_feed(&r.fr, r.in, &rig_sink, &r),
		    FRAMER_STOPPED);
		ck_assert_uint_eq(r.rec.n, 0);
		ck_assert_int_eq(async_chat__framer_set_string(&r.fr, "\n", 1), 0);
		ck_assert_int_eq(async_chat__framer_feed(&r.fr, r.in, &rig_sink, &r),
		    FRAMER_IDLE);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
		ck_assert(tu_frame_is(&r.rec, 1, "xy"));
		ck_assert(tu_cur_eq(&r.rec, "z", 1));
		rig_free(&r);
	}
}
END_TEST

/* What the channel's discard_buffers() does inside collect. */
static int
discard_once(struct rig *r, struct evbuffer *in, size_t len)
{
	rig_take(r, in, len);
	if (r->i0++ == 0) {
		async_chat__framer_discard(&r->fr);
		evbuffer_drain(in, evbuffer_get_length(in));
		return 1;
	}
	return 0;
}

/* Discarding inside a count's collect spends the bytes discarded: the
 * count stays where collect saw it. */
START_TEST(test_discard_in_count)
{
	struct fm_step count = {0, fm_count(6)};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, &count, 1);
	r.on_data = discard_once;
	rig_add(&r, "abc", 3, 0);
	ck_assert_int_eq(async_chat__framer_feed(&r.fr, r.in, &rig_sink, &r),
	    FRAMER_STOPPED);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 3);
	rig_add(&r, "def!", 4, 0);
	ck_assert_int_eq(async_chat__framer_feed(&r.fr, r.in, &rig_sink, &r),
	    FRAMER_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdef"));
	ck_assert(tu_cur_eq(&r.rec, "!", 1)); /* a spent count frames like none */
	rig_free(&r);
}
END_TEST

/*
 * async_chat__framer_finish
 */

START_TEST(test_finish)
{
	const void *alts[] = {"ENDX", "\r\n"};
	const size_t lens[] = {4, 2};
	struct fm_step any = {0, fm_any(alts, lens, 2)};
	struct fm_step crlf2 = {0, fm_string("\r\n\r\n", 4)};
	struct fm_step line = {0, fm_line()};
	struct rig r;

	rig_init(&r, &crlf2, 1);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert_int_eq(r.data_calls, 0);
	rig_add(&r, "abc\r\n\r", 6, 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 3);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert(tu_cur_eq(&r.rec, "abc\r\n\r", 6));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
	ck_assert_int_eq(r.rec.founds, 0);
	rig_free(&r);

	/* Unfed frames are framed first; only the held tail is data. */
	rig_init(&r, &any, 1);
	rig_add(&r, "a\r\nbENDXcEND", 12, 1);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "a"));
	ck_assert_int_eq(r.matched[0], 1);
	ck_assert(tu_frame_is(&r.rec, 1, "b"));
	ck_assert_int_eq(r.matched[1], 0);
	ck_assert(tu_cur_eq(&r.rec, "cEND", 4));
	rig_free(&r);

	rig_init(&r, &line, 1);
	rig_add(&r, "x\r", 2, 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(evbuffer_get_length(r.in), 1);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert(tu_cur_eq(&r.rec, "x\r", 2));
	ck_assert_uint_eq(r.taken, 2);
	rig_free(&r);
}
END_TEST

/*
 * Frame bound
 */

START_TEST(test_bound_basic)
{
	struct fm_step nl = {0, fm_string("\n", 1)};
	struct fm_step crlf2 = {0, fm_string("\r\n\r\n", 4)};
	struct rig r;

	rig_init(&r, &nl, 1);
	r.fr.max_frame = 5;
	rig_add(&r, "abcdefgh\nxy", 11, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abcde", 5));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 6);
	/* again: nothing moves */
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_TOO_LONG);
	ck_assert_uint_eq(r.taken, 5);
	r.fr.max_frame = 8;
	ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdefgh"));
	ck_assert(tu_cur_eq(&r.rec, "xy", 2));
	rig_free(&r);

	/* exactly the bound, then the terminator a byte at a time */
	rig_init(&r, &crlf2, 1);
	r.fr.max_frame = 5;
	feed_plan(&r, (const unsigned char *)"abcde\r\n\r\nvwxyz\r\n\r\n", 18,
	    PLAN_BYTES, 0);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "abcde"));
	ck_assert(tu_frame_is(&r.rec, 1, "vwxyz"));
	/* a held prefix that turns out to be data passes the bound */
	rig_add(&r, "abcde\r\n\r", 8, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
	rig_add(&r, "x", 1, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abcde", 5));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 4);
	ck_assert_int_eq(rig_finish1(&r), FRAMER_TOO_LONG);
	r.fr.max_frame = 0;
	ck_assert_int_eq(rig_finish1(&r), FRAMER_IDLE);
	ck_assert(tu_cur_eq(&r.rec, "abcde\r\n\rx", 9));
	rig_free(&r);
}
END_TEST

START_TEST(test_bound_count_and_none)
{
	struct fm_step c10[] = {{0, fm_count(10)}, {1, fm_count(2)}};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, c10, 2);
	r.fr.max_frame = 4;
	rig_add(&r, "0123456789ab", 12, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "0123", 4));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 8);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_uint_eq(t.count, 6);
	r.fr.max_frame = 9;
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	async_chat__framer_get(&r.fr, &t);
	ck_assert_uint_eq(t.count, 1);
	r.fr.max_frame = 10;
	ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "0123456789"));
	ck_assert(tu_frame_is(&r.rec, 1, "ab"));
	rig_free(&r);

	rig_init(&r, NULL, 0);
	r.fr.max_frame = 3;
	rig_add(&r, "ab", 2, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
	rig_add(&r, "cdef", 4, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(evbuffer_get_length(r.in), 3);
	rig_free(&r);
}
END_TEST

/* Random streams under a small bound, raised each time it is hit: every
 * stop is at exactly the bound, only for frames longer than it, and the
 * frames are the model's in the end. */
static int
bound_found(struct rig *r)
{
	FAST_ASSERT(r->rec.len[r->rec.n - 1] <= r->fr.max_frame);
	rig_apply_script(r);
	return 0;
}

static void
bound_pump(struct rig *r, const struct fm_result *m, int finish, uint64_t *rng)
{
	enum framer_status st;
	size_t cur;

	for (;;) {
		st = finish ? rig_finish1(r) : rig_feed1(r);
		if (st == FRAMER_IDLE)
			break;
		FAST_ASSERT(st == FRAMER_TOO_LONG);
		cur = evbuffer_get_length(r->rec.cur);
		/* exactly at the bound, in a frame that passes it */
		FAST_ASSERT(cur == r->fr.max_frame);
		FAST_ASSERT(r->rec.n <= m->n);
		FAST_ASSERT((r->rec.n < m->n ? m->frame[r->rec.n].len
		                             : m->tail_len) > cur);
		r->fr.max_frame += 1 + tu_rand(rng) % 4;
	}
}

START_TEST(test_bound_random)
{
	struct rcase *c = malloc(sizeof(*c));
	uint64_t rng = 99;
	struct fm_result m;
	struct rig r;
	size_t off, n;
	int i;

	ck_assert_ptr_nonnull(c);
	for (i = 1; i <= 300; i++) {
		rand_case(c, (uint64_t)i * 31,
		    K(COUNT) | K(STRING) | K(LINE) | K(ANY) | K(NONE), 100, 1);
		ck_assert_int_eq(
		    fm_run(c->steps, c->nsteps, c->s, c->len, &m), 0);
		rig_init(&r, c->steps, c->nsteps);
		r.fast = i & 1; /* the bound under both scanners */
		r.on_found = bound_found;
		r.fr.max_frame = 1 + tu_rand(&rng) % 3;
		for (off = 0; off < c->len; off += n) {
			n = 1 + tu_rand(&rng) % 7;
			if (n > c->len - off)
				n = c->len - off;
			rig_add(&r, c->s + off, n, (int)(n & 1));
			bound_pump(&r, &m, 0, &rng);
		}
		bound_pump(&r, &m, 1, &rng);
		expect_model(&r, c->s, &m, 1, "bound");
		rig_free(&r);
		fm_result_free(&m);
	}
	free(c);
}
END_TEST

/*
 * Sinks that stop, and discard from inside data()
 */

static int
stop_every_data(struct rig *r, struct evbuffer *in, size_t len)
{
	rig_take(r, in, len);
	r->stops++;
	return 1;
}

static int
stop_every_found(struct rig *r)
{
	rig_apply_script(r);
	r->stops++;
	return 1;
}

START_TEST(test_stop_each_callback)
{
	static const char s[] = "ab\ncd\n\nef";
	struct fm_step nl = {0, fm_string("\n", 1)};
	struct fm_step c3[] = {
	    {0, fm_count(3)}, {1, fm_count(3)}, {2, fm_count(3)}};
	enum framer_status st;
	struct rig r;
	int feeds;

	rig_init(&r, &nl, 1);
	r.on_data = stop_every_data;
	r.on_found = stop_every_found;
	rig_add(&r, s, sizeof(s) - 1, 0);
	for (feeds = 1; (st = rig_feed1(&r)) == FRAMER_STOPPED; feeds++) {
		ck_assert_int_lt(feeds, 100);
		/* one callback per feed */
		ck_assert_int_eq(r.stops, feeds);
	}
	ck_assert_int_eq(st, FRAMER_IDLE);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "ab"));
	ck_assert(tu_frame_is(&r.rec, 1, "cd"));
	ck_assert(tu_frame_is(&r.rec, 2, ""));
	ck_assert(tu_cur_eq(&r.rec, "ef", 2));
	ck_assert_int_eq(r.stops, 6);
	rig_free(&r);

	/* A stop in data() on the last bytes of a count: the frame has
	 * ended, and found() runs on the next feed before any new byte. */
	rig_init(&r, c3, 3);
	r.on_data = stop_every_data;
	rig_add(&r, "abcdefgh", 8, 0);
	ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
	ck_assert_uint_eq(r.rec.n, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc"));
	ck_assert(tu_cur_eq(&r.rec, "def", 3));
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 1, "def"));
	ck_assert(tu_cur_eq(&r.rec, "gh", 2));
	rig_free(&r);
}
END_TEST

START_TEST(test_stop_random)
{
	struct rcase *c = malloc(sizeof(*c));
	struct fm_result m;
	uint64_t seed;
	int i;

	ck_assert_ptr_nonnull(c);
	for (i = 1; i <= 200; i++) {
		rand_case(c, (uint64_t)i * 131,
		    K(COUNT) | K(STRING) | K(LINE) | K(ANY) | K(NONE), 120, 1);
		ck_assert_int_eq(
		    fm_run(c->steps, c->nsteps, c->s, c->len, &m), 0);
		for (seed = 1; seed <= 4; seed++) {
			/* Stops inside the fast path's bytes() owe found()
			 * just as stops inside data() do. */
			rig_fast_mode = (int)(seed & 1);
			check_plan(c->steps, c->nsteps, c->s, c->len, &m,
			    PLAN_RANDOM, seed + (uint64_t)i, seed);
			check_plan(c->steps, c->nsteps, c->s, c->len, &m,
			    PLAN_WHOLE, 0, seed + (uint64_t)i);
		}
		rig_fast_mode = 0;
		fm_result_free(&m);
	}
	free(c);
}
END_TEST

/* Input chunks whose memory is freed when drained: touching a byte after
 * a discard is a use after free under ASan and valgrind. */
static void
free_chunk(const void *data, size_t len, void *arg)
{
	(void)len;
	(void)arg;
	free((void *)(uintptr_t)data);
}

static void
add_owned(struct evbuffer *in, const char *s, size_t len)
{
	char *p = malloc(len);

	ck_assert_ptr_nonnull(p);
	memcpy(p, s, len);
	ck_assert_int_eq(
	    evbuffer_add_reference(in, p, len, free_chunk, NULL), 0);
}

/* What async_chat_discard_buffers() does inside collect: take u0 bytes
 * of the call first, then forget the held-back bytes, drain the input
 * and drop the partial frame. */
static int
discard_data(struct rig *r, struct evbuffer *in, size_t len)
{
	if (r->i0++ != 0)
		return rig_take(r, in, len);
	if (r->u0 > 0)
		rig_take(r, in, r->u0 < len ? r->u0 : len);
	async_chat__framer_discard(&r->fr);
	ck_assert_int_eq(evbuffer_drain(in, evbuffer_get_length(in)), 0);
	ck_assert_int_eq(
	    evbuffer_drain(r->rec.cur, evbuffer_get_length(r->rec.cur)), 0);
	return 1;
}

START_TEST(test_discard_in_data)
{
	struct fm_step crlf = {0, fm_string("\r\n", 2)};
	struct fm_step crlf2 = {0, fm_string("\r\n\r\n", 4)};
	struct fm_step c5 = {0, fm_count(5)};
	struct fm_step line = {0, fm_line()};
	uint64_t take;
	struct rig r;

	for (take = 0; take < 3; take++) {
		/* found path: the frame's terminator is in the input */
		rig_init(&r, &crlf, 1);
		r.on_data = discard_data;
		r.u0 = take;
		add_owned(r.in, "abc\r\n", 5);
		add_owned(r.in, "def\r\n", 5);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
		ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
		ck_assert_int_eq(r.rec.founds, 0);
		ck_assert_uint_eq(r.fr.frame_bytes, 0);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
		add_owned(r.in, "gh\r\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 1);
		ck_assert(tu_frame_is(&r.rec, 0, "gh"));
		rig_free(&r);

		/* not-found path: held-back bytes and their partial match
		 * are forgotten too, so "ab\r\n" does not end the frame */
		rig_init(&r, &crlf2, 1);
		r.on_data = discard_data;
		r.u0 = take;
		add_owned(r.in, "abc\r\n", 5);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
		ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
		add_owned(r.in, "ab\r\nc", 5);
		rig_pump(&r, 0);
		ck_assert_uint_eq(r.rec.n, 0);
		add_owned(r.in, "\r\n\r\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 1);
		ck_assert(tu_frame_is(&r.rec, 0, "ab\r\nc"));
		rig_free(&r);

		rig_init(&r, &line, 1);
		r.on_data = discard_data;
		r.u0 = take;
		add_owned(r.in, "abc\r", 4);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
		add_owned(r.in, "\nxy\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, ""));
		ck_assert_int_eq(r.matched[0], 1);
		ck_assert(tu_frame_is(&r.rec, 1, "xy"));
		rig_free(&r);

		/* count: the frame bound restarts after a discard */
		rig_init(&r, &c5, 1);
		r.on_data = discard_data;
		r.u0 = take;
		r.fr.max_frame = 5;
		add_owned(r.in, "abcdefgh", 8);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_STOPPED);
		ck_assert_uint_eq(evbuffer_get_length(r.in), 0);
		ck_assert_int_eq(r.rec.founds, 0);
		ck_assert_uint_eq(r.fr.frame_bytes, 0);
		add_owned(r.in, "vwxyz", 5);
		ck_assert_int_eq(rig_feed1(&r), FRAMER_IDLE);
		ck_assert_uint_eq(r.taken, take + 5);
		rig_free(&r);
	}
}
END_TEST

/*
 * Linear time: a huge frame in one-byte feeds.  A framer that rescanned
 * the frame, or the held-back prefix, per feed would not finish.
 */

static double
test_scale(void)
{
	const char *s = getenv("ASYNCHAT_TEST_SCALE");
	double x;
	char *end;

	if (s == NULL || *s == '\0')
		return 1.0;
	x = strtod(s, &end);
	return end != s && x > 0 ? x : 1.0;
}

struct lin {
	const unsigned char *pat; /* the frame is pat repeated */
	size_t plen;
	uint64_t taken, bad;
	int founds;
};

static int
lin_data(void *ctx, struct evbuffer *in, size_t len)
{
	struct lin *l = ctx;
	size_t left = len;

	while (left > 0) {
		struct evbuffer_iovec v;
		size_t n, i;

		FAST_ASSERT(
		    evbuffer_peek(in, (ev_ssize_t)left, NULL, &v, 1) >= 1);
		n = v.iov_len < left ? v.iov_len : left;
		FAST_ASSERT(n > 0);
		for (i = 0; i < n; i++)
			l->bad += ((const unsigned char *)v.iov_base)[i] !=
			          l->pat[(l->taken + i) % l->plen];
		evbuffer_drain(in, n);
		l->taken += n;
		left -= n;
	}
	return 0;
}

static int
lin_found(void *ctx)
{
	((struct lin *)ctx)->founds++;
	return 0;
}

static void
lin_run(const void *term, size_t tlen, const char *pat, uint64_t size)
{
	static const struct framer_sink sink = {lin_data, lin_found, NULL};
	struct lin l = {(const unsigned char *)pat, strlen(pat), 0, 0, 0};
	struct evbuffer *in = evbuffer_new();
	struct framer fr;
	uint64_t i;

	ck_assert_ptr_nonnull(in);
	async_chat__framer_init(&fr);
	ck_assert_int_eq(async_chat__framer_set_string(&fr, term, tlen), 0);
	for (i = 0; i < size; i++) {
		evbuffer_add(in, &l.pat[i % l.plen], 1);
		if (async_chat__framer_feed(&fr, in, &sink, &l) != FRAMER_IDLE)
			ck_abort_msg("feed %llu", (unsigned long long)i);
		if (evbuffer_get_length(in) >= tlen)
			ck_abort_msg(
			    "%zu bytes held back", evbuffer_get_length(in));
	}
	ck_assert_int_eq(l.founds, 0);
	ck_assert_int_eq(evbuffer_add(in, term, tlen), 0);
	ck_assert_int_eq(async_chat__framer_feed(&fr, in, &sink, &l), FRAMER_IDLE);
	ck_assert_int_eq(l.founds, 1);
	/* every byte once, in order */
	ck_assert_uint_eq(l.taken, size);
	ck_assert_uint_eq(l.bad, 0);
	ck_assert_uint_eq(evbuffer_get_length(in), 0);
	async_chat__framer_clear(&fr);
	evbuffer_free(in);
}

START_TEST(test_linear_crlf)
{
	/* "\r\n\r" runs keep three bytes of "\r\n\r\n" matched */
	lin_run("\r\n\r\n", 4, "\r\n\r", (uint64_t)(100e6 * test_scale()));
}
END_TEST

START_TEST(test_linear_long_prefix)
{
	/* a 4096-byte terminator whose longest proper prefix matches at
	 * every byte: 4095 bytes stay held back throughout */
	char *term = malloc(4096);

	ck_assert_ptr_nonnull(term);
	memset(term, 'a', 4095);
	term[4095] = 'b';
	lin_run(term, 4096, "a", (uint64_t)(4e6 * test_scale()));
	free(term);
}
END_TEST

/*
 * The model itself, on what the framer's documentation promises
 */

START_TEST(test_model_self)
{
	static const char s[] = "ab\ncd\r\n\r\nxyz";
	struct fm_step steps[] = {
	    {0, fm_line()}, {2, fm_count(2)}, {3, fm_string("", 0)}};
	struct fm_result m;

	ck_assert_int_eq(fm_run(steps, 3, s, sizeof(s) - 1, &m), 0);
	ck_assert_uint_eq(m.n, 3);
	ck_assert_uint_eq(m.frame[0].off, 0);
	ck_assert_uint_eq(m.frame[0].len, 2);
	ck_assert_int_eq(m.frame[0].matched, 1);
	ck_assert_uint_eq(m.frame[1].off, 3);
	ck_assert_uint_eq(m.frame[1].len, 2);
	ck_assert_int_eq(m.frame[1].matched, 0);
	ck_assert_uint_eq(m.frame[2].off, 7);
	ck_assert_uint_eq(m.frame[2].len, 2);
	ck_assert_uint_eq(m.tail_off, 9);
	ck_assert_uint_eq(m.tail_len, 3);
	fm_result_free(&m);

	ck_assert_int_eq(fm_run(NULL, 0, s, sizeof(s) - 1, &m), 0);
	ck_assert_uint_eq(m.n, 0);
	ck_assert_uint_eq(m.tail_len, sizeof(s) - 1);
	fm_result_free(&m);
	ck_assert_ptr_null(fm_step_at(steps, 3, 1));
	ck_assert_ptr_eq(fm_step_at(steps, 3, 2), &steps[1]);
}
END_TEST

static Suite *
framer_suite(void)
{
	Suite *s = suite_create("framer");
	TCase *tc;

	tc = tcase_create("model");
	tcase_add_test(tc, test_model_self);
	suite_add_tcase(s, tc);

	tc = tcase_create("string");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_string_known, 0,
	    sizeof(known_strings) / sizeof(known_strings[0]));
	tcase_add_test(tc, test_string_empty_frames);
	tcase_add_test(tc, test_string_holds_prefix);
	tcase_add_test(tc, test_string_many_chains);
	tcase_add_test(tc, test_string_bad_args);
	tcase_add_test(tc, test_string_max_len);
	tcase_add_test(tc, test_string_random);
	tcase_add_test(tc, test_string_random_script);
	suite_add_tcase(s, tc);

	tc = tcase_create("count");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_count_known);
	tcase_add_test(tc, test_count_get_inside);
	tcase_add_test(tc, test_count_large);
	tcase_add_test(tc, test_count_zero_is_none);
	tcase_add_test(tc, test_count_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("none");
	tcase_add_test(tc, test_none);
	suite_add_tcase(s, tc);

	tc = tcase_create("line");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_line_known);
	tcase_add_test(tc, test_line_cr_at_chunk_end);
	tcase_add_test(tc, test_line_empty_chain);
	tcase_add_test(tc, test_line_after_string);
	tcase_add_test(tc, test_line_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("any");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(
	    tc, test_any_known, 0, sizeof(any_cases) / sizeof(any_cases[0]));
	tcase_add_test(tc, test_any_limits);
	tcase_add_test(tc, test_set_from_own_bytes);
	tcase_add_test(tc, test_any_random);
	tcase_add_test(tc, test_all_kinds_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("switch");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_switch_http);
	tcase_add_test(tc, test_switch_resp);
	tcase_add_test(tc, test_switch_in_data_count_kept);
	tcase_add_test(tc, test_switch_in_last_data);
	tcase_add_test(tc, test_switch_while_stopped);
	tcase_add_test(tc, test_discard_in_count);
	suite_add_tcase(s, tc);

	tc = tcase_create("finish");
	tcase_add_test(tc, test_finish);
	suite_add_tcase(s, tc);

	tc = tcase_create("bound");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_bound_basic);
	tcase_add_test(tc, test_bound_count_and_none);
	tcase_add_test(tc, test_bound_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("stop");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_stop_each_callback);
	tcase_add_test(tc, test_stop_random);
	tcase_add_test(tc, test_discard_in_data);
	suite_add_tcase(s, tc);

	tc = tcase_create("linear");
	tcase_set_timeout(tc, 1800);
	tcase_add_test(tc, test_linear_crlf);
	tcase_add_test(tc, test_linear_long_prefix);
	suite_add_tcase(s, tc);

	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(framer_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
