/*
 * check_framer.c - the public framer (async_chat_framer_next()) against
 * its reference model (framer_model.c) and against hand-written
 * expectations, under every way of cutting the input: every two-piece
 * split, one-byte spans, spans cut at every arrival, random chunkings and
 * span lengths, spans copied and freed after each call, and callers that
 * stop between calls, set terminators there, raise the bound, skip or
 * reset.  Length-field frames, their errors and their encoder too.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
 * The rig: a framer, the stream given to it so far, and a recorder of
 * what it delivers.  After each frame end the script is applied, as a
 * found_terminator callback would.
 *
 * The stream arrives in chunks (rig_add()).  buf[0..pos) has been
 * consumed; each call is given buf[pos..end) for an end chosen by the span
 * mode, never before the end of what an earlier call was given (the
 * framer may have looked at those bytes already).
 */

enum span_mode {
	SPAN_ALL,    /* everything arrived */
	SPAN_CHUNKS, /* up to the end of the chunk pos is in, as extents */
	SPAN_RANDOM  /* a random length, empty spans included */
};

/* What rig_feed1() and rig_finish1() return besides the framer's kinds. */
#define RIG_IDLE ASYNC_CHAT_FRAMER_NEED_MORE
#define RIG_STOPPED 100

struct rig;
typedef int (*rig_data_fn)(struct rig *r, const struct async_chat_framer_event *ev);
typedef int (*rig_end_fn)(struct rig *r);

struct rig {
	struct async_chat_framer *fr;
	unsigned char *buf;
	size_t have, cap;
	size_t pos;    /* bytes consumed */
	size_t passed; /* bytes given to the framer so far */
	size_t *chunk_end;
	size_t nchunks, chunks_cap;
	enum span_mode mode;
	int copy; /* spans are copies, overwritten and freed after the call */
	struct tu_frames rec;
	int *matched; /* ev.matched per frame */
	int *skipped; /* 1: the frame ended as SKIPPED */
	size_t matched_cap;
	const struct fm_step *steps;
	size_t nsteps;
	uint64_t taken;    /* bytes delivered, every frame */
	uint64_t stop_rng; /* non-zero: stops and span lengths at random */
	int stops;         /* times the caller stopped between calls */
	int data_calls, held_calls, held_consumed;
	int skipping;  /* skip() called, its SKIPPED not yet seen */
	int recovered; /* the FM_LENGTH_ERROR step was applied */
	int expect_error; /* a length error may end the run */
	uint64_t too_long_len; /* ev.len of the last TOO_LONG */
	size_t first_span;     /* non-zero: the first call's span at most */
	rig_data_fn on_data;   /* after a DATA event; non-zero: stop */
	rig_end_fn on_end;     /* after END: NULL applies the script */
	/* free for the hooks of each test */
	uint64_t u0;
	int i0;
};

static void
apply_term(struct async_chat_framer *fr, const struct fm_term *t)
{
	switch (t->kind) {
	case ASYNC_CHAT_TERM_NONE:
		FAST_ASSERT(async_chat_framer_set_terminator_none(fr) == 0);
		break;
	case ASYNC_CHAT_TERM_COUNT:
		FAST_ASSERT(async_chat_framer_set_terminator_count(fr, t->count) == 0);
		break;
	case ASYNC_CHAT_TERM_STRING:
		FAST_ASSERT(async_chat_framer_set_terminator(fr, t->bytes[0], t->len[0]) == 0);
		break;
	case ASYNC_CHAT_TERM_LINE:
		FAST_ASSERT(async_chat_framer_set_terminator_line(fr) == 0);
		break;
	case ASYNC_CHAT_TERM_ANY:
		FAST_ASSERT(async_chat_framer_set_terminators(fr, t->bytes, t->len, t->n) == 0);
		break;
	case ASYNC_CHAT_TERM_LENGTH:
		FAST_ASSERT(async_chat_framer_set_terminator_length(fr, &t->lf) == 0);
		break;
	}
}

static size_t
carry_rest(const struct async_chat_framer *fr)
{
	return fr->carry_len - fr->carry_off;
}

static const unsigned char *
carry_bytes(const struct async_chat_framer *fr)
{
	return fr->carry + fr->carry_off;
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

static void
rig_apply_script(struct rig *r)
{
	const struct fm_step *step = fm_step_at(r->steps, r->nsteps, r->rec.n);

	if (step != NULL)
		apply_term(r->fr, &step->term);
}

static void
rig_init(struct rig *r, const struct fm_step *steps, size_t nsteps)
{
	const struct fm_step *step;

	memset(r, 0, sizeof(*r));
	r->fr = async_chat_framer_new();
	FAST_ASSERT(r->fr != NULL);
	tu_frames_init(&r->rec);
	r->steps = steps;
	r->nsteps = nsteps;
	step = fm_step_at(steps, nsteps, 0);
	if (step != NULL)
		apply_term(r->fr, &step->term);
}

static void
rig_free(struct rig *r)
{
	async_chat_framer_free(r->fr);
	free(r->buf);
	free(r->chunk_end);
	tu_frames_clear(&r->rec);
	free(r->matched);
	free(r->skipped);
	memset(r, 0, sizeof(*r));
}

/* n more bytes arrive, as one chunk (n may be 0: an empty read). */
static void
rig_add(struct rig *r, const void *p, size_t n)
{
	if (r->have + n > r->cap) {
		size_t cap = r->cap ? r->cap : 256;

		while (cap < r->have + n)
			cap *= 2;
		r->buf = realloc(r->buf, cap);
		FAST_ASSERT(r->buf != NULL);
		r->cap = cap;
	}
	if (n > 0)
		memcpy(r->buf + r->have, p, n);
	r->have += n;
	if (r->nchunks == r->chunks_cap) {
		r->chunks_cap = r->chunks_cap ? 2 * r->chunks_cap : 64;
		r->chunk_end = realloc(
		    r->chunk_end, r->chunks_cap * sizeof(*r->chunk_end));
		FAST_ASSERT(r->chunk_end != NULL);
	}
	r->chunk_end[r->nchunks++] = r->have;
}

/* The bytes arrived and not consumed. */
static size_t
rig_unread(const struct rig *r)
{
	return r->have - r->pos;
}

/* What the caller does when it drops its input: reset the framer and
 * forget the unconsumed bytes. */
static void
rig_reset(struct rig *r)
{
	async_chat_framer_reset(r->fr);
	r->pos = r->passed = r->have;
	r->skipping = 0;
}

static void
rig_record_end(struct rig *r, const struct async_chat_framer_event *ev,
    int skipped)
{
	if (r->rec.n == r->matched_cap) {
		r->matched_cap = r->matched_cap ? 2 * r->matched_cap : 16;
		r->matched =
		    realloc(r->matched, r->matched_cap * sizeof(*r->matched));
		r->skipped =
		    realloc(r->skipped, r->matched_cap * sizeof(*r->skipped));
		FAST_ASSERT(r->matched != NULL && r->skipped != NULL);
	}
	r->matched[r->rec.n] = ev->matched;
	r->skipped[r->rec.n] = skipped;
	tu_frames_found(&r->rec);
}

/* The end of the next span. */
static size_t
rig_span_end(struct rig *r)
{
	size_t end = r->have, i;

	switch (r->mode) {
	case SPAN_ALL:
		break;
	case SPAN_CHUNKS:
		for (i = 0; i < r->nchunks; i++) {
			if (r->chunk_end[i] > r->pos) {
				end = r->chunk_end[i];
				break;
			}
		}
		break;
	case SPAN_RANDOM:
		if (r->stop_rng != 0 && r->have > r->pos)
			end = r->pos + (size_t)(tu_rand(&r->stop_rng) %
			                        (r->have - r->pos + 1));
		break;
	}
	if (r->first_span != 0 && r->passed == 0 && r->pos + r->first_span < end)
		end = r->pos + r->first_span;
	return end > r->passed ? end : r->passed;
}

/* Check what one event says against the span it was given for. */
static void
check_event(struct rig *r, int rc, const struct async_chat_framer_event *ev,
    const unsigned char *span, size_t n)
{
	size_t i;

	FAST_ASSERT(rc == (int)ev->kind);
	for (i = 0; i < sizeof(ev->reserved) / sizeof(ev->reserved[0]); i++)
		FAST_ASSERT(ev->reserved[i] == 0);
	FAST_ASSERT(ev->consumed <= n);
	if (ev->kind != ASYNC_CHAT_FRAMER_DATA) {
		FAST_ASSERT(ev->data == NULL);
		FAST_ASSERT(ev->held == 0);
	}
	if (ev->kind != ASYNC_CHAT_FRAMER_END)
		FAST_ASSERT(ev->matched == 0);
	switch (ev->kind) {
	case ASYNC_CHAT_FRAMER_NEED_MORE:
		FAST_ASSERT(ev->consumed == n);
		FAST_ASSERT(ev->len == 0);
		break;
	case ASYNC_CHAT_FRAMER_DATA:
		/* The framer-level rule behind "collect never sees 0
		 * bytes". */
		FAST_ASSERT(ev->len > 0 && ev->data != NULL);
		if (ev->held) {
			/* in the framer's memory, never in the span; bytes
			 * are consumed only by a call that completed a
			 * length field's header in the framer */
			FAST_ASSERT(span == NULL || ev->data + ev->len <=
			        (const char *)span ||
			    ev->data >= (const char *)span + n);
			if (ev->consumed != 0) {
				FAST_ASSERT(r->fr->kind == ASYNC_CHAT_TERM_LENGTH);
				r->held_consumed++;
			}
			r->held_calls++;
		} else {
			/* the last len bytes consumed from the span */
			FAST_ASSERT(ev->len <= ev->consumed);
			FAST_ASSERT(ev->data ==
			    (const char *)span + ev->consumed - ev->len);
		}
		break;
	case ASYNC_CHAT_FRAMER_END:
	case ASYNC_CHAT_FRAMER_SKIPPED:
		FAST_ASSERT(ev->len <= ASYNC_CHAT_TERMINATOR_MAX);
		break;
	case ASYNC_CHAT_FRAMER_TOO_LONG:
		/* nothing, or (a length field's) the rest of the header */
		FAST_ASSERT(ev->consumed == 0 ||
		    r->fr->kind == ASYNC_CHAT_TERM_LENGTH);
		FAST_ASSERT(r->fr->max_frame != 0 && ev->len > r->fr->max_frame);
		break;
	case ASYNC_CHAT_FRAMER_LENGTH_ERROR:
		FAST_ASSERT(ev->len == 0);
		break;
	default:
		ck_abort_msg("event kind %d", rc);
	}
}

/* One call of next(); records what it delivers and applies the script
 * at frame ends.  *stop is set when the caller stops after it. */
static int
rig_step(struct rig *r, int *stop)
{
	struct async_chat_framer_event ev, again;
	size_t end = rig_span_end(r), n = end - r->pos;
	unsigned char *span = NULL;
	int rc, copy = r->copy;

	*stop = 0;
	if (r->stop_rng != 0 && !copy)
		copy = tu_rand(&r->stop_rng) % 8 == 0;
	if (n > 0) {
		if (copy) {
			span = malloc(n);
			FAST_ASSERT(span != NULL);
			memcpy(span, r->buf + r->pos, n);
		} else {
			span = r->buf + r->pos;
		}
	}
	if (end > r->passed)
		r->passed = end;
	rc = async_chat_framer_next(r->fr, span, n, &ev);
	check_event(r, rc, &ev, span, n);
	if (rc == ASYNC_CHAT_FRAMER_TOO_LONG ||
	    rc == ASYNC_CHAT_FRAMER_LENGTH_ERROR) {
		/* The same event again, with nothing consumed, until the
		 * caller changes something. */
		FAST_ASSERT(async_chat_framer_next(r->fr,
		    span != NULL ? span + ev.consumed : NULL, n - ev.consumed,
		    &again) == rc);
		FAST_ASSERT(again.consumed == 0 && again.len == ev.len);
		if (rc == ASYNC_CHAT_FRAMER_TOO_LONG)
			r->too_long_len = ev.len;
	}
	if (rc == ASYNC_CHAT_FRAMER_DATA) {
		tu_frames_collect(&r->rec, ev.data, (size_t)ev.len);
		r->taken += ev.len;
		r->data_calls++;
	}
	if (copy && span != NULL) {
		/* The framer must not keep pointers into a span. */
		memset(span, 0xA5, n);
		free(span);
	}
	r->pos += ev.consumed;
	FAST_ASSERT(r->pos <= r->have);
	switch (rc) {
	case ASYNC_CHAT_FRAMER_DATA:
		if (r->on_data != NULL && r->on_data(r, &ev))
			*stop = 1;
		break;
	case ASYNC_CHAT_FRAMER_SKIPPED:
		FAST_ASSERT(r->skipping);
		r->skipping = 0;
		rig_record_end(r, &ev, 1);
		rig_apply_script(r);
		break;
	case ASYNC_CHAT_FRAMER_END:
		FAST_ASSERT(!r->skipping);
		rig_record_end(r, &ev, 0);
		if (r->on_end != NULL) {
			if (r->on_end(r))
				*stop = 1;
		} else {
			rig_apply_script(r);
		}
		break;
	default:
		break;
	}
	if (rc != ASYNC_CHAT_FRAMER_NEED_MORE && rig_random_stop(r))
		*stop = 1;
	return rc;
}

/* The step set on a length error, once. */
static int
rig_recover(struct rig *r)
{
	const struct fm_step *step;

	if (r->recovered)
		return 0;
	step = fm_step_at(r->steps, r->nsteps, FM_LENGTH_ERROR);
	if (step == NULL)
		return 0;
	r->recovered = 1;
	apply_term(r->fr, &step->term);
	return 1;
}

/* Call next() until every byte arrived is consumed (RIG_IDLE), the bound
 * or a length error stops the framer, or the caller stops. */
static int
rig_feed1(struct rig *r)
{
	long guard = 0;

	for (;;) {
		int stop, rc = rig_step(r, &stop);

		FAST_ASSERT(++guard < 100000000);
		if (rc == ASYNC_CHAT_FRAMER_LENGTH_ERROR && rig_recover(r))
			continue;
		if (rc == ASYNC_CHAT_FRAMER_TOO_LONG ||
		    rc == ASYNC_CHAT_FRAMER_LENGTH_ERROR)
			return rc;
		if (rc == ASYNC_CHAT_FRAMER_NEED_MORE && r->pos == r->have)
			return RIG_IDLE;
		if (stop)
			return RIG_STOPPED;
	}
}

/* End of input: frame what is unread, then finish(). */
static int
rig_finish1(struct rig *r)
{
	struct async_chat_framer_event ev;
	int rc;
	long guard = 0;

	rc = rig_feed1(r);
	if (rc != RIG_IDLE)
		return rc;
	for (;;) {
		FAST_ASSERT(++guard < 100000000);
		rc = async_chat_framer_finish(r->fr, &ev);
		check_event(r, rc, &ev, NULL, 0);
		FAST_ASSERT(ev.consumed == 0);
		if (rc == ASYNC_CHAT_FRAMER_TOO_LONG)
			r->too_long_len = ev.len;
		if (rc == ASYNC_CHAT_FRAMER_LENGTH_ERROR && rig_recover(r)) {
			rc = rig_feed1(r);
			if (rc != RIG_IDLE)
				return rc;
			continue;
		}
		if (rc != ASYNC_CHAT_FRAMER_DATA)
			return rc;
		FAST_ASSERT(ev.held);
		tu_frames_collect(&r->rec, ev.data, (size_t)ev.len);
		r->taken += ev.len;
		r->data_calls++;
		if (r->on_data != NULL && r->on_data(r, &ev))
			return RIG_STOPPED;
		if (rig_random_stop(r))
			return RIG_STOPPED;
	}
}

/* Feed (or finish) until the framer is idle, resuming after every stop,
 * as a channel resumes after a pause. */
static int
rig_pump(struct rig *r, int finish)
{
	int st, guard = 0;

	for (;;) {
		st = finish ? rig_finish1(r) : rig_feed1(r);
		if (st != RIG_STOPPED)
			break;
		FAST_ASSERT(++guard < 10000000);
	}
	FAST_ASSERT(st == RIG_IDLE ||
	    (r->expect_error && st == ASYNC_CHAT_FRAMER_LENGTH_ERROR));
	return st;
}

/*
 * Comparing with the model
 */

/* The frames ended so far must be the model's first ones; with all
 * frames ended, the bytes delivered since must be the model's tail, or
 * (before finish) a prefix of it.  A skipped frame delivered a prefix of
 * the model's frame. */
static void
expect_model(const struct rig *r, const unsigned char *s,
    const struct fm_result *m, int finished, const char *what)
{
	size_t i, cur = evbuffer_get_length(r->rec.cur);

	if (r->rec.n != m->n)
		ck_abort_msg("%s: %zu frames, model %zu", what, r->rec.n, m->n);
	for (i = 0; i < m->n; i++) {
		if (r->skipped[i]) {
			if (r->rec.len[i] >= m->frame[i].len ||
			    memcmp(r->rec.frame[i], s + m->frame[i].off,
			        r->rec.len[i]) != 0)
				ck_abort_msg("%s: skipped frame %zu is not a "
				             "prefix of the model's",
				    what, i);
			continue;
		}
		if (!tu_frame_eq(
		        &r->rec, i, s + m->frame[i].off, m->frame[i].len))
			ck_abort_msg("%s: frame %zu differs (len %zu, model "
			             "%zu)",
			    what, i, r->rec.len[i], m->frame[i].len);
		if (r->matched[i] != m->frame[i].matched)
			ck_abort_msg("%s: frame %zu matched %d, model %d", what,
			    i, r->matched[i], m->frame[i].matched);
	}
	if (r->skipping) {
		if (cur > m->tail_len ||
		    !tu_cur_eq(&r->rec, s + m->tail_off, cur))
			ck_abort_msg("%s: skipped tail is not a prefix", what);
		return;
	}
	if (finished && !tu_cur_eq(&r->rec, s + m->tail_off, m->tail_len))
		ck_abort_msg(
		    "%s: tail of %zu bytes, model %zu", what, cur, m->tail_len);
	if (!finished &&
	    (cur > m->tail_len || !tu_cur_eq(&r->rec, s + m->tail_off, cur)))
		ck_abort_msg(
		    "%s: tail so far is not a prefix of the model's", what);
	if (m->error) {
		/* stopped at the header: nothing past it was taken */
		if (r->pos != m->err_off + m->err_len)
			ck_abort_msg("%s: %zu bytes consumed at a length "
			             "error, header ends at %zu",
			    what, r->pos, m->err_off + m->err_len);
		if (!async_chat__framer_stuck(r->fr))
			ck_abort_msg("%s: no sticky length error", what);
	}
}

enum plan {
	PLAN_WHOLE,     /* one chunk */
	PLAN_SPLIT,     /* two chunks, cut at arg */
	PLAN_BYTES,     /* one chunk per byte, next() after each */
	PLAN_BYTES_ONE, /* every byte its own chunk, then spans by chunk */
	PLAN_RANDOM     /* random chunks and spans, framed or left to pile up */
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
		rig_add(r, s, len);
		rig_pump(r, 0);
		break;
	case PLAN_SPLIT:
		rig_add(r, s, (size_t)arg);
		rig_pump(r, 0);
		rig_add(r, s + arg, len - (size_t)arg);
		rig_pump(r, 0);
		break;
	case PLAN_BYTES:
		for (off = 0; off < len; off++) {
			rig_add(r, s + off, 1);
			rig_pump(r, 0);
		}
		break;
	case PLAN_BYTES_ONE:
		r->mode = SPAN_CHUNKS;
		for (off = 0; off < len; off++)
			rig_add(r, s + off, 1);
		rig_pump(r, 0);
		break;
	case PLAN_RANDOM:
		r->mode = (enum span_mode)(arg % 3);
		if (r->mode == SPAN_RANDOM && r->stop_rng == 0)
			r->mode = SPAN_CHUNKS;
		while (off < len) {
			uint64_t x = tu_rand(&rng);

			/* One in four chunks is a single byte. */
			if (x % 4 == 0)
				n = 1;
			else
				n = 1 + (size_t)((x >> 8) % (1 + len / 4));
			if (n > len - off)
				n = len - off;
			rig_add(r, s + off, n);
			/* Sometimes an empty read. */
			if ((x >> 48) % 8 == 0)
				rig_add(r, s, 0);
			off += n;
			/* Often let chunks pile up first. */
			if ((x >> 44) % 4 != 0 || off == len)
				rig_pump(r, 0);
		}
		break;
	}
}

static void
check_plan(const struct fm_step *steps, size_t nsteps, const unsigned char *s,
    size_t len, const struct fm_result *m, enum plan plan, uint64_t arg,
    uint64_t stop_seed, int copy)
{
	char what[128];
	struct rig r;

	snprintf(what, sizeof(what), "plan %s %llu, stops %llu, copy %d",
	    plan_name[plan], (unsigned long long)arg,
	    (unsigned long long)stop_seed, copy);
	rig_init(&r, steps, nsteps);
	r.stop_rng = stop_seed;
	r.copy = copy;
	r.expect_error = m->error;
	feed_plan(&r, s, len, plan, arg);
	expect_model(&r, s, m, 0, what);
	rig_pump(&r, 1);
	expect_model(&r, s, m, 1, what);
	if (!m->error && (rig_unread(&r) != 0 || carry_rest(r.fr) != 0))
		ck_abort_msg("%s: input left", what);
	rig_free(&r);
}

/* The whole battery: one chunk, one byte at a time, every split point,
 * spans by chunk, random chunkings and spans, and random stops, with spans
 * in place and spans copied and freed after each call. */
static void
check_all_ways(const struct fm_step *steps, size_t nsteps, const void *stream,
    size_t len, int nrandom)
{
	const unsigned char *s = stream;
	struct fm_result m;
	uint64_t k;
	int i, copy;

	FAST_ASSERT(fm_run(steps, nsteps, s, len, &m) == 0);
	for (copy = 0; copy <= 1; copy++) {
		check_plan(steps, nsteps, s, len, &m, PLAN_WHOLE, 0, 0, copy);
		check_plan(steps, nsteps, s, len, &m, PLAN_BYTES, 0, 0, copy);
		check_plan(steps, nsteps, s, len, &m, PLAN_BYTES_ONE, 0, 0, copy);
		for (k = 0; k <= len; k++)
			check_plan(steps, nsteps, s, len, &m, PLAN_SPLIT, k, 0,
			    copy);
		for (i = 1; i <= nrandom; i++)
			check_plan(steps, nsteps, s, len, &m, PLAN_RANDOM, i,
			    0, copy);
		for (i = 1; i <= nrandom / 4 + 1; i++) {
			check_plan(steps, nsteps, s, len, &m, PLAN_RANDOM, i,
			    i, copy);
			check_plan(steps, nsteps, s, len, &m, PLAN_BYTES, 0,
			    7 * i, copy);
		}
	}
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
	rig_add(&r, k->stream.p, k->stream.len);
	rig_pump(&r, 1);
	expect_known_frames(&r, k);
	rig_free(&r);

	check_all_ways(&step, 1, k->stream.p, k->stream.len, 20);
}
END_TEST

/* Empty frames end with END alone: no DATA event of 0 bytes (the rig
 * asserts that) and the recorder sees no collect at all. */
START_TEST(test_string_empty_frames)
{
	static const char stream[] = "\r\n\r\n\r\nx\r\n";
	struct fm_step step = {0, fm_string("\r\n", 2)};
	struct rig r;
	size_t i;

	for (i = 0; i < 2; i++) {
		rig_init(&r, &step, 1);
		if (i == 0) {
			rig_add(&r, stream, sizeof(stream) - 1);
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

/* A held-back prefix is kept by the framer, and only it: every byte of
 * the span is consumed and the prefix comes out later as held DATA. */
START_TEST(test_string_holds_prefix)
{
	struct fm_step step = {0, fm_string("\r\n\r\n", 4)};
	struct rig r;

	rig_init(&r, &step, 1);
	rig_add(&r, "abc\r\n\r", 6);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(rig_unread(&r), 0);
	ck_assert_uint_eq(carry_rest(r.fr), 3);
	ck_assert_mem_eq(carry_bytes(r.fr), "\r\n\r", 3);
	ck_assert_int_eq(r.held_calls, 0);
	/* The prefix breaks off: everything but a new prefix goes out, the
	 * held bytes from the framer's memory. */
	rig_add(&r, "x\r", 2);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc\r\n\rx", 7));
	ck_assert_int_eq(r.held_calls, 1);
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	ck_assert_mem_eq(carry_bytes(r.fr), "\r", 1);
	rig_add(&r, "\n\r\n", 3);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r\n\rx"));
	ck_assert_uint_eq(carry_rest(r.fr), 0);
	ck_assert_uint_eq(rig_unread(&r), 0);
	rig_free(&r);
}
END_TEST

/* Many small spans, one per chunk: the scan goes on across them, and the
 * held-back prefix is computed past many of them too. */
START_TEST(test_string_many_chains)
{
	static const char *const piece[] = {"a0", "a1", "a2", "a3", "a4", "a5",
	    "a6", "a7", "a8", "a9", "b0", "b1", "b2", "b3", "b4", "b5", "b6",
	    "b7", "XY", "c9", "XY", "XY"};
	struct fm_step step = {0, fm_string("XY", 2)};
	struct rig r;
	size_t i;

	rig_init(&r, &step, 1);
	r.mode = SPAN_CHUNKS;
	for (i = 0; i < sizeof(piece) / sizeof(piece[0]); i++)
		rig_add(&r, piece[i], 2);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(
	    tu_frame_is(&r.rec, 0, "a0a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7"));
	ck_assert(tu_frame_is(&r.rec, 1, "c9"));
	ck_assert(tu_frame_is(&r.rec, 2, ""));
	rig_free(&r);

	rig_init(&r, &step, 1);
	r.mode = SPAN_CHUNKS;
	for (i = 0; i < 40; i++)
		rig_add(&r, "q", 1);
	rig_add(&r, "X", 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	ck_assert_uint_eq(evbuffer_get_length(r.rec.cur), 40);
	rig_add(&r, "Y", 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert_uint_eq(r.rec.len[0], 40);
	rig_free(&r);
}
END_TEST

START_TEST(test_string_bad_args)
{
	struct async_chat_terminator t;
	struct async_chat_framer *fr = async_chat_framer_new();
	static char big[ASYNC_CHAT_TERMINATOR_MAX + 1];

	ck_assert_ptr_nonnull(fr);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, "\n", 1), 0);

	errno = 0;
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, NULL, 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, big, sizeof(big)), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_framer_set_terminator(NULL, "\n", 1), -1);
	ck_assert_int_eq(errno, EINVAL);
	/* A refused terminator leaves the one in force. */
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 1);
	ck_assert_mem_eq(t.bytes, "\n", 1);

	/* Length 0 is the none terminator, whatever the pointer. */
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, NULL, 0), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, "abc", 3), 0);
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, "abc", 0), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.len, 0);

	/* get reports a copy, not the caller's bytes. */
	memcpy(big, "\0zz", 3);
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, big, 3), 0);
	big[1] = 'q';
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "\0zz", 3);
	ck_assert_ptr_ne(t.bytes, big);
	big[1] = 0;
	/* Setting the terminator from its own reported bytes is allowed. */
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, t.bytes, t.len), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "\0zz", 3);
	async_chat_framer_free(fr);
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
		ck_assert_uint_eq(carry_rest(r.fr), tlen - 10);
		ck_assert_uint_eq(rig_unread(&r), 0);
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
 * and near misses make matches, overlaps and held-back prefixes common;
 * length-field frames are mostly well formed, sometimes not.
 */

struct rcase {
	struct fm_step steps[25];
	size_t nsteps;
	unsigned char pool[1024];
	size_t pool_used;
	unsigned char s[2048];
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

/* A random length-field spec: small offsets, every width, both orders,
 * adjustments that count the header or not, strips short and long. */
static struct async_chat_length_field
rand_spec(uint64_t *rng)
{
	static const unsigned widths[] = {0, 1, 2, 3, 4, 8};
	struct async_chat_length_field lf;
	uint64_t x = tu_rand(rng);
	size_t hdr;

	memset(&lf, 0, sizeof(lf));
	lf.offset = x % 4;
	lf.width = widths[(x >> 4) % 6];
	lf.little_endian = lf.width != 0 && ((x >> 8) & 1);
	hdr = lf.offset + (lf.width ? lf.width : 1);
	switch ((x >> 12) % 4) {
	case 0:
		lf.adjust = 0;
		break;
	case 1:
		lf.adjust = -(int64_t)hdr; /* the value counts the header */
		break;
	default:
		lf.adjust = (int64_t)((x >> 16) % 5) - 2;
		break;
	}
	switch ((x >> 20) % 3) {
	case 0:
		lf.strip = 0;
		break;
	case 1:
		lf.strip = hdr;
		break;
	default:
		lf.strip = (x >> 24) % (hdr + 4);
		break;
	}
	return lf;
}

/* kinds: a bit mask of 1 << enum async_chat_terminator_kind. */
static struct fm_term
rand_term(struct rcase *c, uint64_t *rng, unsigned kinds)
{
	const void *alt[4];
	size_t lens[4], n, i;
	enum async_chat_terminator_kind kind;
	struct async_chat_length_field lf;

	do
		kind = (enum async_chat_terminator_kind)(tu_rand(rng) % 6);
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
	case ASYNC_CHAT_TERM_LENGTH:
		lf = rand_spec(rng);
		return fm_length(&lf);
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

/* Append one length-field frame of a random body under lf: well formed
 * mostly, else a random or an invalid header. */
static void
rand_lf_frame(struct rcase *c, uint64_t *rng, const struct async_chat_length_field *lf,
    size_t room)
{
	unsigned char hdr[64];
	uint64_t x = tu_rand(rng), body = x % 9;
	ev_ssize_t h;
	size_t i;

	if ((x >> 8) % 16 == 0) {
		/* random bytes where a header should be */
		for (i = 0; i < 4 && c->len < room; i++)
			c->s[c->len++] = (unsigned char)tu_rand(rng);
		return;
	}
	if ((x >> 8) % 16 == 1 && room - c->len >= lf->offset + 11) {
		/* a varint too long, or an 8-byte value past any frame */
		memset(c->s + c->len, 0xff, lf->offset + 11);
		c->len += lf->offset + 11;
		return;
	}
	h = async_chat_length_field_encode(lf, body, hdr, sizeof(hdr));
	if (h < 0) { /* a body the adjustment cannot express */
		body += 8;
		h = async_chat_length_field_encode(lf, body, hdr, sizeof(hdr));
	}
	FAST_ASSERT(h > 0);
	for (i = 0; i < lf->offset; i++)
		hdr[i] = alphabet[tu_rand(rng) % sizeof(alphabet)];
	for (i = 0; i < (size_t)h && c->len < room; i++)
		c->s[c->len++] = hdr[i];
	for (i = 0; i < body && c->len < room; i++)
		c->s[c->len++] = alphabet[tu_rand(rng) % sizeof(alphabet)];
}

/* A stream that follows the script frame by frame, so that length fields
 * meet their headers; the model still decides where frames end. */
static void
rand_stream_framed(struct rcase *c, uint64_t *rng, size_t len)
{
	const struct fm_term *t = &c->steps[0].term;
	size_t k = 0, i, n;

	c->len = 0;
	while (c->len < len) {
		const struct fm_step *st = fm_step_at(c->steps, c->nsteps, k);
		uint64_t x = tu_rand(rng);

		if (st != NULL)
			t = &st->term;
		if (t->kind == ASYNC_CHAT_TERM_LENGTH) {
			rand_lf_frame(c, rng, &t->lf, len);
		} else {
			n = x % 6;
			for (i = 0; i < n && c->len < len; i++)
				c->s[c->len++] =
				    alphabet[tu_rand(rng) % sizeof(alphabet)];
			if (t->kind == ASYNC_CHAT_TERM_COUNT)
				for (i = 0; i < t->count && c->len < len; i++)
					c->s[c->len++] = 'c';
			for (i = 0; t->n > 0 && c->len < len &&
			     i < t->len[(x >> 8) % t->n];
			     i++)
				c->s[c->len++] = ((const unsigned char *)
				        t->bytes[(x >> 8) % t->n])[i];
			if (t->kind == ASYNC_CHAT_TERM_LINE && c->len < len)
				c->s[c->len++] = '\n';
		}
		k++;
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
		for (i = 1; i < 24; i++) {
			/* Some frames keep the terminator (a spent count
			 * then collects like none). */
			if (tu_rand(&rng) % 4 == 0)
				continue;
			c->steps[c->nsteps].frame = i;
			c->steps[c->nsteps].term = rand_term(c, &rng, kinds);
			c->nsteps++;
		}
	}
	if (kinds & (1u << ASYNC_CHAT_TERM_LENGTH)) {
		/* Sometimes a length error is answered with another
		 * terminator, which frames the header's bytes again. */
		if (tu_rand(&rng) % 2 == 0) {
			c->steps[c->nsteps].frame = FM_LENGTH_ERROR;
			c->steps[c->nsteps].term = rand_term(c, &rng,
			    kinds & ~(1u << ASYNC_CHAT_TERM_LENGTH)
			        ? kinds & ~(1u << ASYNC_CHAT_TERM_LENGTH)
			        : (1u << ASYNC_CHAT_TERM_LINE));
			c->nsteps++;
		}
		rand_stream_framed(c, &rng, len);
	} else {
		rand_stream(c, &rng, len);
	}
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
	rig_add(&r, "abcd", 4);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "a"));
	ck_assert(tu_frame_is(&r.rec, 1, "b"));
	ck_assert(tu_frame_is(&r.rec, 2, "c"));
	/* spent: "d" is delivered at once, like none */
	ck_assert(tu_cur_eq(&r.rec, "d", 1));
	ck_assert_uint_eq(rig_unread(&r), 0);
	ck_assert_uint_eq(carry_rest(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 0);
	rig_add(&r, "efgh", 4);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_cur_eq(&r.rec, "defgh", 5));
	rig_free(&r);

	rig_init(&r, &six, 1);
	rig_add(&r, "abc", 3);
	rig_pump(&r, 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_uint_eq(t.count, 3);
	rig_add(&r, "de", 2);
	rig_pump(&r, 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_uint_eq(t.count, 1);
	ck_assert_uint_eq(r.rec.n, 0);
	rig_add(&r, "fgh", 3);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdef"));
	ck_assert(tu_cur_eq(&r.rec, "gh", 2));
	rig_free(&r);
}
END_TEST

/* After DATA, get reports what is still missing after these bytes; after
 * END it reports 0. */
static int
count_probe_data(struct rig *r, const struct async_chat_framer_event *ev)
{
	struct async_chat_terminator t;

	(void)ev;
	FAST_ASSERT(async_chat_framer_get_terminator(r->fr, &t) == 0);
	FAST_ASSERT(t.kind == ASYNC_CHAT_TERM_COUNT);
	FAST_ASSERT(t.count + evbuffer_get_length(r->rec.cur) == r->u0);
	return 0;
}

static int
count_probe_end(struct rig *r)
{
	struct async_chat_terminator t;

	ck_assert_int_eq(async_chat_framer_get_terminator(r->fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 0);
	ck_assert_uint_eq(r->rec.len[r->rec.n - 1], r->u0);
	ck_assert_int_eq(async_chat_framer_set_terminator_count(r->fr, r->u0), 0);
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
		r.on_end = count_probe_end;
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
			r.copy = k & 1;
			rig_add(&r, buf, sizeof(buf));
			rig_pump(&r, 0);
		}
		ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
		ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
		ck_assert_uint_eq(t.count, counts[i] - 5 * sizeof(buf));
		ck_assert_uint_eq(r.rec.n, 0);
		ck_assert_uint_eq(r.taken, 5 * sizeof(buf));
		ck_assert_uint_eq(rig_unread(&r), 0);
		ck_assert_uint_eq(async_chat_framer_frame_length(r.fr),
		    5 * sizeof(buf));
		rig_free(&r);
	}
}
END_TEST

START_TEST(test_count_zero_is_none)
{
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat_framer_set_terminator_count(r.fr, 5), 0);
	ck_assert_int_eq(async_chat_framer_set_terminator_count(r.fr, 0), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_uint_eq(t.count, 0);
	rig_add(&r, "abcdefgh", 8);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 0);
	ck_assert(tu_cur_eq(&r.rec, "abcdefgh", 8));
	ck_assert_uint_eq(rig_unread(&r), 0);
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
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	for (i = 0; i < 3; i++) {
		r.copy = i & 1;
		rig_add(&r, s, sizeof(s) - 1);
		rig_pump(&r, 0);
		/* nothing is ever held back */
		ck_assert_uint_eq(rig_unread(&r), 0);
		ck_assert_uint_eq(carry_rest(r.fr), 0);
		ck_assert_uint_eq(evbuffer_get_length(r.rec.cur),
		    (size_t)(i + 1) * (sizeof(s) - 1));
	}
	ck_assert_int_eq(r.rec.founds, 0);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
	ck_assert_int_eq(r.rec.founds, 0);
	ck_assert_int_eq(r.held_calls, 0);
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
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LINE);
	ck_assert_uint_eq(t.alternatives, 2);
	rig_add(&r, s, sizeof(s) - 1);
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
	ck_assert_uint_eq(carry_rest(r.fr), 1);
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
	rig_add(&r, "abc\r", 4);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	rig_add(&r, "\r", 1);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc\r", 4));
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	rig_add(&r, "\n", 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r"));
	ck_assert_int_eq(r.matched[0], 0);
	rig_free(&r);
}
END_TEST

/* Empty spans (an empty read, NULL data) hold no byte: the CR before them
 * is still the last byte. */
START_TEST(test_line_empty_chain)
{
	struct fm_step step = {0, fm_line()};
	struct async_chat_framer_event ev;
	struct rig r;

	rig_init(&r, &step, 1);
	r.mode = SPAN_CHUNKS;
	rig_add(&r, "abc\r", 4);
	rig_add(&r, "", 0);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	ck_assert_int_eq(async_chat_framer_next(r.fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 0);
	ck_assert_int_eq(async_chat_framer_next(r.fr, "", 0, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	rig_add(&r, "\n", 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc"));
	ck_assert_int_eq(r.matched[0], 0);

	rig_add(&r, "de\r", 3);
	rig_add(&r, "", 0);
	rig_add(&r, "", 0);
	rig_pump(&r, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	rig_add(&r, "\n", 1);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 1, "de"));
	ck_assert_int_eq(r.matched[1], 0);
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
	rig_add(&r, s, sizeof(s) - 1);
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
	rig_add(&r, c->stream, strlen(c->stream));
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
	ck_assert_int_eq(async_chat_framer_set_terminator(r.fr, "\n", 1), 0);

#define REFUSED(call)                                                          \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_int_eq((call), -1);                                  \
		ck_assert_int_eq(errno, EINVAL);                               \
		ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0); \
		ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);              \
	} while (0)
	REFUSED(async_chat_framer_set_terminators(r.fr, terms, lens, 0));
	REFUSED(async_chat_framer_set_terminators(
	    r.fr, terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX + 1));
	REFUSED(async_chat_framer_set_terminators(r.fr, NULL, lens, 2));
	REFUSED(async_chat_framer_set_terminators(r.fr, terms, NULL, 2));
	REFUSED(async_chat_framer_set_terminators(NULL, terms, lens, 2));
	lens[3] = 0;
	REFUSED(async_chat_framer_set_terminators(r.fr, terms, lens, 4));
	lens[3] = 3;
	terms[2] = NULL;
	REFUSED(async_chat_framer_set_terminators(r.fr, terms, lens, 4));
	terms[2] = alt[2];
	terms[1] = big;
	lens[1] = sizeof(big);
	REFUSED(async_chat_framer_set_terminators(r.fr, terms, lens, 4));
#undef REFUSED
	lens[1] = sizeof(big) - 1;
	ck_assert_int_eq(async_chat_framer_set_terminators(r.fr, terms, lens, 4), 0);
	terms[1] = alt[1];
	lens[1] = 3;

	/* the most alternatives; each one's index is reported */
	ck_assert_int_eq(async_chat_framer_set_terminators(
	                     r.fr, terms, lens, ASYNC_CHAT_ALTERNATIVES_MAX),
	    0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_ANY);
	ck_assert_uint_eq(t.alternatives, ASYNC_CHAT_ALTERNATIVES_MAX);
	for (i = ASYNC_CHAT_ALTERNATIVES_MAX; i-- > 0;) {
		int n = snprintf(
		    s, sizeof(s), "f%zu<%c<%c>", i, 'A' + (int)i, 'A' + (int)i);

		rig_add(&r, s, (size_t)n);
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

/* The bytes get_terminator reports stay valid until the terminator is
 * next set, so they may be passed back to the setters: a new terminator
 * built from (part of) the old one, or the old one as one of the
 * alternatives, listed after a longer one. */
START_TEST(test_set_from_own_bytes)
{
	struct async_chat_terminator t;
	const void *alts[2];
	size_t lens[2];
	struct rig r;

	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat_framer_set_terminator(r.fr, "<abc>", 5), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(async_chat_framer_set_terminator(
	                     r.fr, (const char *)t.bytes + 1, 3),
	    0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_uint_eq(t.len, 3);
	ck_assert_mem_eq(t.bytes, "abc", 3);

	alts[0] = "0123456789";
	lens[0] = 10;
	alts[1] = t.bytes;
	lens[1] = t.len;
	ck_assert_int_eq(async_chat_framer_set_terminators(r.fr, alts, lens, 2), 0);
	rig_add(&r, "xxabcyy0123456789zz", 19);
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
 * Terminators changed between calls: after END (as found_terminator
 * does) and after DATA (as collect_incoming_data may)
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
	rig_add(&r, s, sizeof(s) - 1);
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
resp_end(struct rig *r)
{
	const char *f = r->rec.frame[r->rec.n - 1];
	size_t len = r->rec.len[r->rec.n - 1];

	if (r->i0) {
		ck_assert_uint_ge(len, 2);
		ck_assert_mem_eq(f + len - 2, "\r\n", 2);
		r->i0 = 0;
		ck_assert_int_eq(async_chat_framer_set_terminator(r->fr, "\r\n", 2), 0);
	} else if (len > 1 && f[0] == '$') {
		r->i0 = 1;
		ck_assert_int_eq(async_chat_framer_set_terminator_count(
		                     r->fr, strtoull(f + 1, NULL, 10) + 2),
		    0);
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
		r.on_end = resp_end;
		r.copy = (int)(seed & 1);
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

/* A count set after DATA is kept, not reduced by the bytes just
 * delivered; it applies from the next byte. */
static int
set_count_once_data(struct rig *r, const struct async_chat_framer_event *ev)
{
	(void)ev;
	if (r->i0++ == 0)
		ck_assert_int_eq(async_chat_framer_set_terminator_count(r->fr, r->u0), 0);
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
	rig_add(&r, "0123", 4);
	rig_pump(&r, 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 3);
	rig_add(&r, "456789", 6);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "0123456"));
	ck_assert(tu_cur_eq(&r.rec, "789", 3));
	rig_free(&r);

	/* The held-back bytes are framed anew under the terminator set
	 * after the DATA before them. */
	step.term = fm_string("\r\n", 2);
	rig_init(&r, &step, 1);
	r.on_data = set_count_once_data;
	r.u0 = 2;
	rig_add(&r, "abc\r", 4);
	rig_pump(&r, 0);
	ck_assert_uint_eq(rig_unread(&r), 0);
	ck_assert_uint_eq(carry_rest(r.fr), 0);
	ck_assert(tu_cur_eq(&r.rec, "abc\r", 4));
	rig_add(&r, "\nz", 2);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r\n"));
	ck_assert(tu_cur_eq(&r.rec, "z", 1));
	rig_free(&r);
}
END_TEST

/* A terminator set after the DATA of a frame's last bytes: the frame
 * still ends (END, as in asynchat, where handle_read calls
 * found_terminator after the final collect), and the new terminator
 * applies from the byte after it. */
static int
switch_on_last_data(struct rig *r, const struct async_chat_framer_event *ev)
{
	struct async_chat_terminator t;

	(void)ev;
	ck_assert_int_eq(async_chat_framer_get_terminator(r->fr, &t), 0);
	if (r->i0 == 0 && (t.kind != ASYNC_CHAT_TERM_COUNT || t.count == 0)) {
		r->i0 = 1;
		ck_assert_int_eq(async_chat_framer_set_terminator(r->fr, "\n", 1), 0);
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

	/* The same for a string whose terminator is already in the span
	 * when its frame is delivered. */
	rig_init(&r, &string, 1);
	r.on_data = switch_on_last_data;
	rig_add(&r, "abcd!xy\nz", 9);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
	ck_assert(tu_frame_is(&r.rec, 1, "xy"));
	ck_assert(tu_cur_eq(&r.rec, "z", 1));
	rig_free(&r);
}
END_TEST

/* Stops after the first DATA: a channel paused inside
 * collect_incoming_data. */
static int
stop_once(struct rig *r, const struct async_chat_framer_event *ev)
{
	(void)ev;
	return r->i0++ == 0;
}

/* A frame whose bytes were all delivered when the caller stopped has
 * ended: a terminator set while stopped applies after it, for strings as
 * for counts, and END comes first on the next call. */
START_TEST(test_switch_while_stopped)
{
	struct fm_step string = {0, fm_string("!", 1)};
	struct fm_step count = {0, fm_count(4)};
	const struct fm_step *steps[] = {&string, &count};
	static const char *const inputs[] = {"abcd!xy\nz", "abcdxy\nz"};
	struct async_chat_framer_event ev;
	size_t i;

	for (i = 0; i < 2; i++) {
		struct rig r;

		rig_init(&r, steps[i], 1);
		r.on_data = stop_once;
		rig_add(&r, inputs[i], strlen(inputs[i]));
		ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
		ck_assert_uint_eq(r.rec.n, 0);
		ck_assert(tu_cur_eq(&r.rec, "abcd", 4));
		ck_assert_int_eq(async_chat_framer_set_terminator(r.fr, "\n", 1), 0);
		/* the frame's end comes first, and takes the old
		 * terminator's byte */
		ck_assert_int_eq(async_chat_framer_next(r.fr, r.buf + r.pos,
		                     rig_unread(&r), &ev),
		    ASYNC_CHAT_FRAMER_END);
		ck_assert_uint_eq(ev.len, i == 0 ? 1 : 0);
		ck_assert_uint_eq(ev.consumed, i == 0 ? 1 : 0);
		r.pos += ev.consumed;
		rig_record_end(&r, &ev, 0);
		ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
		ck_assert(tu_frame_is(&r.rec, 1, "xy"));
		ck_assert(tu_cur_eq(&r.rec, "z", 1));
		rig_free(&r);
	}
}
END_TEST

/* A terminator set between the DATA of held-back bytes and the rest of
 * the frame applies to the bytes not yet consumed, though the framer has
 * already seen the old terminator end the frame among them: frames must
 * not depend on how far the span reached. */
START_TEST(test_switch_after_held_data)
{
	struct async_chat_framer *fr = async_chat_framer_new();
	struct async_chat_framer_event ev;
	static const char rest[] = "x\r\n\r\n";
	size_t reach;

	ck_assert_ptr_nonnull(fr);
	for (reach = 1; reach <= 5; reach++) {
		ck_assert_int_eq(
		    async_chat_framer_set_terminator(fr, "\r\n\r\n", 4), 0);
		ck_assert_int_eq(async_chat_framer_next(fr, "abc\r\n\r", 6, &ev),
		    ASYNC_CHAT_FRAMER_DATA);
		ck_assert_uint_eq(ev.len, 3);
		ck_assert_int_eq(async_chat_framer_next(fr, "\r\n\r", 3, &ev),
		    ASYNC_CHAT_FRAMER_NEED_MORE);
		/* the held "\r\n\r" comes out: 'x' broke it off */
		ck_assert_int_eq(async_chat_framer_next(fr, rest, reach, &ev),
		    ASYNC_CHAT_FRAMER_DATA);
		ck_assert_int_eq(ev.held, 1);
		ck_assert_uint_eq(ev.len, 3);
		ck_assert_uint_eq(ev.consumed, 0);
		ck_assert_int_eq(async_chat_framer_set_terminator(fr, "x", 1), 0);
		ck_assert_int_eq(async_chat_framer_next(fr, rest, reach, &ev),
		    ASYNC_CHAT_FRAMER_END);
		ck_assert_uint_eq(ev.len, 1);
		ck_assert_uint_eq(ev.consumed, 1);
		ck_assert_uint_eq(async_chat_framer_frame_length(fr), 0);
		async_chat_framer_reset(fr);
	}
	async_chat_framer_free(fr);
}
END_TEST

/* What the channel's discard_buffers() does inside collect: reset the
 * framer and drop the unconsumed input. */
static int
reset_once(struct rig *r, const struct async_chat_framer_event *ev)
{
	(void)ev;
	if (r->i0++ == 0) {
		rig_reset(r);
		return 1;
	}
	return 0;
}

/* A reset inside a count's frame spends the bytes delivered: the count
 * stays where the DATA left it. */
START_TEST(test_discard_in_count)
{
	struct fm_step count = {0, fm_count(6)};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, &count, 1);
	r.on_data = reset_once;
	rig_add(&r, "abc", 3);
	ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 3);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
	rig_add(&r, "def!", 4);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdef"));
	ck_assert(tu_cur_eq(&r.rec, "!", 1)); /* a spent count frames like none */
	rig_free(&r);
}
END_TEST

/*
 * finish() at the end of input
 */

START_TEST(test_finish)
{
	const void *alts[] = {"ENDX", "\r\n"};
	const size_t lens[] = {4, 2};
	struct fm_step any = {0, fm_any(alts, lens, 2)};
	struct fm_step crlf2 = {0, fm_string("\r\n\r\n", 4)};
	struct fm_step line = {0, fm_line()};
	struct async_chat_framer_event ev;
	struct rig r;

	rig_init(&r, &crlf2, 1);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
	ck_assert_int_eq(r.data_calls, 0);
	rig_add(&r, "abc\r\n\r", 6);
	rig_pump(&r, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(carry_rest(r.fr), 3);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
	ck_assert(tu_cur_eq(&r.rec, "abc\r\n\r", 6));
	ck_assert_uint_eq(carry_rest(r.fr), 0);
	ck_assert_int_eq(r.rec.founds, 0);
	/* again: nothing more */
	ck_assert_int_eq(async_chat_framer_finish(r.fr, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	/* and the framer goes on as if the held bytes had been frame
	 * bytes: a terminator now ends the frame they began */
	rig_add(&r, "\n\r\n", 3);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 2);
	rig_add(&r, "\r\n\r\n", 4);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\r\n\r\n"));
	ck_assert_uint_eq(carry_rest(r.fr), 2);
	rig_free(&r);

	/* Unframed bytes are framed first; only the held tail is data. */
	rig_init(&r, &any, 1);
	rig_add(&r, "a\r\nbENDXcEND", 12);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "a"));
	ck_assert_int_eq(r.matched[0], 1);
	ck_assert(tu_frame_is(&r.rec, 1, "b"));
	ck_assert_int_eq(r.matched[1], 0);
	ck_assert(tu_cur_eq(&r.rec, "cEND", 4));
	rig_free(&r);

	rig_init(&r, &line, 1);
	rig_add(&r, "x\r", 2);
	rig_pump(&r, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
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
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 5), 0);
	rig_add(&r, "abcdefgh\nxy", 11);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_uint_eq(r.too_long_len, 6);
	ck_assert(tu_cur_eq(&r.rec, "abcde", 5));
	ck_assert_uint_eq(rig_unread(&r), 6);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 5);
	/* again: nothing moves */
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_int_eq(rig_finish1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_uint_eq(r.taken, 5);
	/* a bound raised too little: TOO_LONG again, a byte later */
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 6), 0);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_uint_eq(r.too_long_len, 7);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 8), 0);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdefgh"));
	ck_assert(tu_cur_eq(&r.rec, "xy", 2));
	rig_free(&r);

	/* exactly the bound, then the terminator a byte at a time */
	rig_init(&r, &crlf2, 1);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 5), 0);
	feed_plan(&r, (const unsigned char *)"abcde\r\n\r\nvwxyz\r\n\r\n", 18,
	    PLAN_BYTES, 0);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "abcde"));
	ck_assert(tu_frame_is(&r.rec, 1, "vwxyz"));
	/* a held prefix that turns out to be data passes the bound */
	rig_add(&r, "abcde\r\n\r", 8);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	rig_add(&r, "x", 1);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abcde", 5));
	ck_assert_uint_eq(carry_rest(r.fr) + rig_unread(&r), 4);
	ck_assert_int_eq(rig_finish1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 0), 0);
	ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
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
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 4), 0);
	rig_add(&r, "0123456789ab", 12);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "0123", 4));
	ck_assert_uint_eq(rig_unread(&r), 8);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_uint_eq(t.count, 6);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 9), 0);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_uint_eq(t.count, 1);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 10), 0);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "0123456789"));
	ck_assert(tu_frame_is(&r.rec, 1, "ab"));
	rig_free(&r);

	rig_init(&r, NULL, 0);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 3), 0);
	rig_add(&r, "ab", 2);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	rig_add(&r, "cdef", 4);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_uint_eq(rig_unread(&r), 3);
	rig_free(&r);
}
END_TEST

/* Random streams under a small bound, raised (or the frame skipped) each
 * time it is hit: every stop is at exactly the bound, only for frames
 * longer than it (a length field's as soon as its header is complete,
 * with nothing after the header taken), and the frames are the model's in
 * the end. */
static int
bound_end(struct rig *r)
{
	FAST_ASSERT(r->rec.len[r->rec.n - 1] <= r->fr->max_frame);
	/* a bound raised to a length field's size comes down again */
	if (r->fr->max_frame > 64)
		FAST_ASSERT(async_chat_framer_set_max_frame(
		    r->fr, 1 + tu_rand(&r->u0) % 3) == 0);
	rig_apply_script(r);
	return 0;
}

static void
bound_pump(struct rig *r, const struct fm_result *m, int finish, uint64_t *rng,
    int skips)
{
	struct async_chat_terminator t;
	int st;
	size_t cur;
	long guard = 0;

	for (;;) {
		FAST_ASSERT(++guard < 1000000);
		st = finish ? rig_finish1(r) : rig_feed1(r);
		if (st == RIG_IDLE || st == RIG_STOPPED)
			break;
		if (st == ASYNC_CHAT_FRAMER_LENGTH_ERROR) {
			FAST_ASSERT(m->error);
			break;
		}
		FAST_ASSERT(st == ASYNC_CHAT_FRAMER_TOO_LONG);
		cur = evbuffer_get_length(r->rec.cur);
		FAST_ASSERT(r->rec.n <= m->n);
		FAST_ASSERT(async_chat_framer_get_terminator(r->fr, &t) == 0);
		if (t.kind == ASYNC_CHAT_TERM_LENGTH && r->rec.n == m->n) {
			/* a frame the stream does not hold whole */
			FAST_ASSERT(cur == 0);
			FAST_ASSERT(r->pos > m->tail_begin);
			FAST_ASSERT(async_chat_framer_frame_length(r->fr) == 0);
		} else if (t.kind == ASYNC_CHAT_TERM_LENGTH) {
			const struct fm_frame *f = &m->frame[r->rec.n];

			/* the whole frame, checked before any of it */
			FAST_ASSERT(cur == 0);
			FAST_ASSERT(async_chat_framer_frame_length(r->fr) == 0);
			FAST_ASSERT(r->too_long_len == f->len);
			FAST_ASSERT(f->len > r->fr->max_frame);
			/* the header (or the longer one recovered from) */
			FAST_ASSERT(r->pos == f->begin + f->hdr ||
			    (m->recovered && m->recovered_at == f->begin &&
			        r->pos == m->recovered_end &&
			        m->recovered_end > f->begin + f->hdr));
			/* the body bytes still missing, all of them */
			FAST_ASSERT(t.count == f->len +
			    ((const struct async_chat_length_field *)t.bytes)->strip -
			    f->hdr);
		} else {
			/* exactly at the bound, in a frame that passes it */
			FAST_ASSERT(cur == r->fr->max_frame);
			FAST_ASSERT(async_chat_framer_frame_length(r->fr) == cur);
			FAST_ASSERT(r->too_long_len == cur + 1);
			FAST_ASSERT((r->rec.n < m->n ? m->frame[r->rec.n].len
			                             : m->tail_len) > cur);
		}
		if (skips && tu_rand(rng) % 3 == 0) {
			FAST_ASSERT(async_chat_framer_skip(r->fr) == 0);
			r->skipping = 1;
		} else if (t.kind == ASYNC_CHAT_TERM_LENGTH ||
		    tu_rand(rng) % 4 == 0) {
			/* the least bound under which the frame goes on */
			FAST_ASSERT(async_chat_framer_set_max_frame(
			    r->fr, r->too_long_len) == 0);
		} else {
			FAST_ASSERT(async_chat_framer_set_max_frame(r->fr,
			    r->fr->max_frame + 1 + tu_rand(rng) % 4) == 0);
		}
	}
}

static void
bound_random(unsigned kinds, int ncases, int skips)
{
	struct rcase *c = malloc(sizeof(*c));
	uint64_t rng = 99;
	struct fm_result m;
	struct rig r;
	size_t off, n;
	int i;

	ck_assert_ptr_nonnull(c);
	for (i = 1; i <= ncases; i++) {
		rand_case(c, (uint64_t)i * 31, kinds, 100, 1);
		ck_assert_int_eq(
		    fm_run(c->steps, c->nsteps, c->s, c->len, &m), 0);
		rig_init(&r, c->steps, c->nsteps);
		r.copy = i & 1;
		r.mode = (enum span_mode)(i % 2);
		r.expect_error = m.error;
		r.on_end = bound_end;
		r.u0 = (uint64_t)i;
		ck_assert_int_eq(async_chat_framer_set_max_frame(
		                     r.fr, 1 + tu_rand(&rng) % 3),
		    0);
		for (off = 0; off < c->len; off += n) {
			n = 1 + tu_rand(&rng) % 7;
			if (n > c->len - off)
				n = c->len - off;
			rig_add(&r, c->s + off, n);
			bound_pump(&r, &m, 0, &rng, skips);
		}
		bound_pump(&r, &m, 1, &rng, skips);
		expect_model(&r, c->s, &m, 1, "bound");
		rig_free(&r);
		fm_result_free(&m);
	}
	free(c);
}

START_TEST(test_bound_random)
{
	bound_random(K(COUNT) | K(STRING) | K(LINE) | K(ANY) | K(NONE), 300, 0);
}
END_TEST

/* The same with SKIPPED frames: after TOO_LONG the caller sometimes
 * skips the frame instead (the channel's skip policy). */
START_TEST(test_bound_random_skip)
{
	bound_random(K(COUNT) | K(STRING) | K(LINE) | K(ANY) | K(NONE) |
	        K(LENGTH),
	    300, 1);
}
END_TEST

/*
 * Callers that stop between calls, and reset
 */

static int
stop_every_data(struct rig *r, const struct async_chat_framer_event *ev)
{
	(void)ev;
	r->stops++;
	return 1;
}

static int
stop_every_end(struct rig *r)
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
	int st;
	struct rig r;
	int feeds;

	rig_init(&r, &nl, 1);
	r.on_data = stop_every_data;
	r.on_end = stop_every_end;
	rig_add(&r, s, sizeof(s) - 1);
	for (feeds = 1; (st = rig_feed1(&r)) == RIG_STOPPED; feeds++) {
		ck_assert_int_lt(feeds, 100);
		/* one event per feed */
		ck_assert_int_eq(r.stops, feeds);
	}
	ck_assert_int_eq(st, RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "ab"));
	ck_assert(tu_frame_is(&r.rec, 1, "cd"));
	ck_assert(tu_frame_is(&r.rec, 2, ""));
	ck_assert(tu_cur_eq(&r.rec, "ef", 2));
	ck_assert_int_eq(r.stops, 6);
	rig_free(&r);

	/* A stop after the DATA of a count's last bytes: the frame has
	 * ended, and END comes on the next call before any new byte. */
	rig_init(&r, c3, 3);
	r.on_data = stop_every_data;
	rig_add(&r, "abcdefgh", 8);
	ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
	ck_assert_uint_eq(r.rec.n, 0);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
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
		    K(COUNT) | K(STRING) | K(LINE) | K(ANY) | K(NONE) |
		        (i % 2 ? K(LENGTH) : 0),
		    120, 1);
		ck_assert_int_eq(
		    fm_run(c->steps, c->nsteps, c->s, c->len, &m), 0);
		for (seed = 1; seed <= 4; seed++) {
			check_plan(c->steps, c->nsteps, c->s, c->len, &m,
			    PLAN_RANDOM, seed + (uint64_t)i, seed,
			    (int)(seed & 1));
			check_plan(c->steps, c->nsteps, c->s, c->len, &m,
			    PLAN_WHOLE, 0, seed + (uint64_t)i, 0);
		}
		fm_result_free(&m);
	}
	free(c);
}
END_TEST

/* What async_chat_discard_buffers() does inside collect: after the first
 * DATA (of at most u0 + 1 bytes: the first span's length), reset the
 * framer, drop the unconsumed input and the partial frame. */
static int
discard_data(struct rig *r, const struct async_chat_framer_event *ev)
{
	(void)ev;
	if (r->i0++ != 0)
		return 0;
	rig_reset(r);
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
	struct async_chat_terminator t;
	uint64_t take;
	struct rig r;

	for (take = 0; take < 3; take++) {
		/* found path: the frame's terminator is in the span */
		rig_init(&r, &crlf, 1);
		r.on_data = discard_data;
		r.first_span = (size_t)take + 1;
		r.copy = 1; /* the dropped span is freed */
		rig_add(&r, "abc\r\n", 5);
		rig_add(&r, "def\r\n", 5);
		ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
		ck_assert_uint_eq(rig_unread(&r), 0);
		ck_assert_uint_eq(carry_rest(r.fr), 0);
		ck_assert_int_eq(r.rec.founds, 0);
		ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
		ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
		rig_add(&r, "gh\r\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 1);
		ck_assert(tu_frame_is(&r.rec, 0, "gh"));
		rig_free(&r);

		/* not-found path: held-back bytes and their partial match
		 * are forgotten too, so "ab\r\n" does not end the frame */
		rig_init(&r, &crlf2, 1);
		r.on_data = discard_data;
		r.first_span = (size_t)take + 1;
		r.copy = 1;
		rig_add(&r, "abc\r\n", 5);
		ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
		ck_assert_uint_eq(carry_rest(r.fr), 0);
		rig_add(&r, "ab\r\nc", 5);
		rig_pump(&r, 0);
		ck_assert_uint_eq(r.rec.n, 0);
		rig_add(&r, "\r\n\r\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 1);
		ck_assert(tu_frame_is(&r.rec, 0, "ab\r\nc"));
		rig_free(&r);

		rig_init(&r, &line, 1);
		r.on_data = discard_data;
		r.first_span = (size_t)take + 1;
		rig_add(&r, "abc\r", 4);
		ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
		ck_assert_uint_eq(carry_rest(r.fr), 0);
		rig_add(&r, "\nxy\n", 4);
		rig_pump(&r, 1);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, ""));
		ck_assert_int_eq(r.matched[0], 1);
		ck_assert(tu_frame_is(&r.rec, 1, "xy"));
		rig_free(&r);

		/* count: the frame bound restarts after a reset, and the
		 * count goes on where the DATA left it */
		rig_init(&r, &c5, 1);
		r.on_data = discard_data;
		r.first_span = (size_t)take + 1;
		ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 5), 0);
		rig_add(&r, "abcdefgh", 8);
		ck_assert_int_eq(rig_feed1(&r), RIG_STOPPED);
		ck_assert_uint_eq(r.taken, take + 1);
		ck_assert_int_eq(r.rec.founds, 0);
		ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
		ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
		ck_assert_uint_eq(t.count, 5 - (take + 1));
		rig_add(&r, "vwxyz", 5);
		ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
		ck_assert_uint_eq(r.taken, take + 1 + 5);
		ck_assert_int_eq(r.rec.founds, 1);
		ck_assert_uint_eq(r.rec.len[0], 5 - (take + 1));
		rig_free(&r);
	}
}
END_TEST

/*
 * Linear time: a huge frame in one-byte spans.  A framer that rescanned
 * the frame, or the held-back prefix, per call would not finish.
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
	int ends;
};

/* Events for one span until NEED_MORE, checking the frame's bytes. */
static void
lin_span(struct async_chat_framer *fr, struct lin *l, const unsigned char *p,
    size_t n)
{
	struct async_chat_framer_event ev;
	size_t off = 0, i;
	int guard = 0;

	for (;;) {
		int rc = async_chat_framer_next(fr, p + off, n - off, &ev);

		FAST_ASSERT(++guard < 1000);
		off += ev.consumed;
		if (rc == ASYNC_CHAT_FRAMER_NEED_MORE)
			break;
		if (rc == ASYNC_CHAT_FRAMER_END) {
			l->ends++;
			continue;
		}
		FAST_ASSERT(rc == ASYNC_CHAT_FRAMER_DATA);
		for (i = 0; i < ev.len; i++)
			l->bad += (unsigned char)ev.data[i] !=
			          l->pat[(l->taken + i) % l->plen];
		l->taken += ev.len;
	}
	FAST_ASSERT(off == n);
}

static void
lin_run(const void *term, size_t tlen, const char *pat, uint64_t size)
{
	struct lin l = {(const unsigned char *)pat, strlen(pat), 0, 0, 0};
	struct async_chat_framer *fr = async_chat_framer_new();
	uint64_t i;

	ck_assert_ptr_nonnull(fr);
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, term, tlen), 0);
	/* whole repeats, so that the frame's last bytes and the terminator
	 * make no earlier match, whatever ASYNCHAT_TEST_SCALE says */
	size -= size % l.plen;
	for (i = 0; i < size; i++) {
		lin_span(fr, &l, &l.pat[i % l.plen], 1);
		if (carry_rest(fr) >= tlen)
			ck_abort_msg("%zu bytes held back", carry_rest(fr));
	}
	ck_assert_int_eq(l.ends, 0);
	lin_span(fr, &l, term, tlen);
	ck_assert_int_eq(l.ends, 1);
	/* every byte once, in order */
	ck_assert_uint_eq(l.taken, size);
	ck_assert_uint_eq(l.bad, 0);
	ck_assert_uint_eq(carry_rest(fr), 0);
	async_chat_framer_free(fr);
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
	ck_assert_int_eq(m.error, 0);
	fm_result_free(&m);

	ck_assert_int_eq(fm_run(NULL, 0, s, sizeof(s) - 1, &m), 0);
	ck_assert_uint_eq(m.n, 0);
	ck_assert_uint_eq(m.tail_len, sizeof(s) - 1);
	fm_result_free(&m);
	ck_assert_ptr_null(fm_step_at(steps, 3, 1));
	ck_assert_ptr_eq(fm_step_at(steps, 3, 2), &steps[1]);
}
END_TEST

/*
 * The public API's arguments, errors and reports
 */

START_TEST(test_api_args)
{
	struct async_chat_framer *fr = async_chat_framer_new();
	struct async_chat_framer_event ev;
	struct async_chat_terminator t;
	struct async_chat_length_field lf;
	size_t i;

	ck_assert_ptr_nonnull(fr);
	async_chat_framer_free(NULL);
	async_chat_framer_reset(NULL);
	ck_assert_uint_eq(async_chat_framer_frame_length(NULL), 0);

#define FAILS(call, err)                                                       \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_int_eq((call), -1);                                  \
		ck_assert_int_eq(errno, (err));                                \
	} while (0)
	FAILS(async_chat_framer_next(NULL, "a", 1, &ev), EINVAL);
	FAILS(async_chat_framer_next(fr, "a", 1, NULL), EINVAL);
	FAILS(async_chat_framer_next(fr, NULL, 1, &ev), EINVAL);
	FAILS(async_chat_framer_finish(NULL, &ev), EINVAL);
	FAILS(async_chat_framer_finish(fr, NULL), EINVAL);
	FAILS(async_chat_framer_get_terminator(NULL, &t), EINVAL);
	FAILS(async_chat_framer_get_terminator(fr, NULL), EINVAL);
	FAILS(async_chat_framer_set_max_frame(NULL, 1), EINVAL);
	FAILS(async_chat_framer_skip(NULL), EINVAL);
	FAILS(async_chat_framer_set_terminator_count(NULL, 1), EINVAL);
	FAILS(async_chat_framer_set_terminator_none(NULL), EINVAL);
	FAILS(async_chat_framer_set_terminator_line(NULL), EINVAL);
	memset(&lf, 0, sizeof(lf));
	lf.width = 2;
	FAILS(async_chat_framer_set_terminator_length(NULL, &lf), EINVAL);
	FAILS(async_chat_framer_set_terminator_length(fr, NULL), EINVAL);

	/* A refused length field leaves the terminator in force. */
	ck_assert_int_eq(async_chat_framer_set_terminator(fr, "\n", 1), 0);
#define LF_REFUSED()                                                           \
	do {                                                                   \
		FAILS(async_chat_framer_set_terminator_length(fr, &lf),        \
		    EINVAL);                                                   \
		ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0); \
		ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);              \
	} while (0)
	for (i = 0; i <= 16; i++) {
		lf.width = (unsigned)i;
		if (i == 0 || i == 1 || i == 2 || i == 3 || i == 4 || i == 8)
			continue;
		LF_REFUSED();
	}
	lf.width = 0;
	lf.little_endian = 1;
	LF_REFUSED();
	lf.width = 4;
	lf.offset = ASYNC_CHAT_TERMINATOR_MAX + 1;
	LF_REFUSED();
	lf.offset = 0;
	for (i = 0; i < 4; i++) {
		lf.reserved[i] = 1;
		LF_REFUSED();
		lf.reserved[i] = 0;
	}
#undef LF_REFUSED
	lf.offset = ASYNC_CHAT_TERMINATOR_MAX;
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);
	lf.width = 0;
	lf.little_endian = 0;
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);

	/* A zero-length span, NULL or not, takes nothing; the event is
	 * filled in whole, reserved members zeroed. */
	memset(&ev, 0xff, sizeof(ev));
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_int_eq(ev.kind, ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 0);
	ck_assert_ptr_null(ev.data);
	ck_assert_uint_eq(ev.len, 0);
	ck_assert_int_eq(ev.matched, 0);
	ck_assert_int_eq(ev.held, 0);
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(ev.reserved[i], 0);
	memset(&ev, 0xff, sizeof(ev));
	ck_assert_int_eq(async_chat_framer_next(fr, "x", 0, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 0);
	memset(&ev, 0xff, sizeof(ev));
	ck_assert_int_eq(async_chat_framer_finish(fr, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 0);
	ck_assert_ptr_null(ev.data);
	for (i = 0; i < 3; i++)
		ck_assert_uint_eq(ev.reserved[i], 0);
	ck_assert_int_eq(async_chat_framer_skip(fr), 0);
	ck_assert_int_eq(async_chat_framer_set_max_frame(fr, 0), 0);
#undef FAILS
	async_chat_framer_free(fr);
}
END_TEST

/* get_terminator for every kind; for a length field the spec (a copy) and
 * the body bytes still missing once the header is complete. */
START_TEST(test_get_terminator_kinds)
{
	struct async_chat_framer *fr = async_chat_framer_new();
	struct async_chat_length_field lf, *copy;
	struct async_chat_framer_event ev;
	struct async_chat_terminator t;
	const void *alts[3] = {"a", "bb", "ccc"};
	const size_t lens[3] = {1, 2, 3};

	ck_assert_ptr_nonnull(fr);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.len + t.count + t.alternatives, 0);

	ck_assert_int_eq(async_chat_framer_set_terminator_count(fr, 7), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 7);
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.alternatives, 0);

	ck_assert_int_eq(async_chat_framer_set_terminator_line(fr), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LINE);
	ck_assert_uint_eq(t.alternatives, 2);
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.count, 0);

	ck_assert_int_eq(async_chat_framer_set_terminators(fr, alts, lens, 3), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_ANY);
	ck_assert_uint_eq(t.alternatives, 3);
	ck_assert_ptr_null(t.bytes);

	memset(&lf, 0, sizeof(lf));
	lf.offset = 1;
	lf.width = 2;
	lf.adjust = 1;
	lf.strip = 3;
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);
	lf.offset = 9; /* the framer keeps its own copy */
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LENGTH);
	ck_assert_uint_eq(t.len, sizeof(lf));
	ck_assert_ptr_ne(t.bytes, &lf);
	copy = (struct async_chat_length_field *)(uintptr_t)t.bytes;
	ck_assert_uint_eq(copy->offset, 1);
	ck_assert_uint_eq(copy->width, 2);
	ck_assert_int_eq(copy->adjust, 1);
	ck_assert_uint_eq(copy->strip, 3);
	ck_assert_uint_eq(t.count, 0);
	/* a partial header: nothing known yet */
	ck_assert_int_eq(async_chat_framer_next(fr, "H\x00", 2, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.count, 0);
	/* complete: a body of 4 + 1 bytes, one delivered so far */
	ck_assert_int_eq(async_chat_framer_next(fr, "\x04" "a", 2, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_uint_eq(ev.consumed, 2);
	ck_assert_uint_eq(ev.len, 1);
	ck_assert_int_eq(ev.held, 0);
	ck_assert_mem_eq(ev.data, "a", 1);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.count, 4);
	ck_assert_int_eq(async_chat_framer_next(fr, "bcde", 4, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.count, 0);
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_END);
	ck_assert_uint_eq(ev.len, 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.count, 0);

	/* complete but past the bound: the body is known all the same */
	ck_assert_int_eq(async_chat_framer_set_max_frame(fr, 3), 0);
	ck_assert_int_eq(async_chat_framer_next(fr, "H\x00\x09xyz", 6, &ev),
	    ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_uint_eq(ev.len, 10 + 3 - 3);
	ck_assert_int_eq(async_chat_framer_get_terminator(fr, &t), 0);
	ck_assert_uint_eq(t.count, 10);
	async_chat_framer_free(fr);
}
END_TEST

/* TOO_LONG comes again, consuming nothing, until the bound is raised,
 * the frame skipped or the framer reset, or another terminator ends the
 * frame. */
START_TEST(test_too_long_repeats)
{
	struct fm_step nl = {0, fm_string("\n", 1)};
	struct async_chat_framer_event ev;
	struct rig r;
	int i;

	rig_init(&r, &nl, 1);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 3), 0);
	rig_add(&r, "abcdef\nxy\n", 10);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	for (i = 0; i < 5; i++) {
		ck_assert_int_eq(async_chat_framer_next(r.fr, r.buf + r.pos,
		                     rig_unread(&r), &ev),
		    ASYNC_CHAT_FRAMER_TOO_LONG);
		ck_assert_uint_eq(ev.consumed, 0);
		ck_assert_uint_eq(ev.len, 4);
		ck_assert_int_eq(async_chat__framer_stuck(r.fr), 1);
	}
	ck_assert_int_eq(rig_finish1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert(tu_cur_eq(&r.rec, "abc", 3));
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 4), 0);
	ck_assert_int_eq(async_chat__framer_stuck(r.fr), 0);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_uint_eq(r.too_long_len, 5);
	ck_assert(tu_cur_eq(&r.rec, "abcd", 4));
	/* skipped: the rest of the frame and its terminator go, SKIPPED
	 * ends it, and the next frame starts afresh */
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	ck_assert_int_eq(async_chat__framer_stuck(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_next(r.fr, r.buf + r.pos,
	                     rig_unread(&r), &ev),
	    ASYNC_CHAT_FRAMER_SKIPPED);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_uint_eq(ev.len, 1);
	r.pos += ev.consumed;
	rig_record_end(&r, &ev, 1);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 0, "abcd"));
	ck_assert(tu_frame_is(&r.rec, 1, "xy"));
	ck_assert_uint_eq(evbuffer_get_length(r.rec.cur), 0);
	rig_free(&r);

	/* another terminator that ends the frame at once */
	rig_init(&r, &nl, 1);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 3), 0);
	rig_add(&r, "abcdef\n", 7);
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
	ck_assert_int_eq(async_chat_framer_set_terminator(r.fr, "d", 1), 0);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc"));
	ck_assert(tu_cur_eq(&r.rec, "ef\n", 3));
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 3);
	/* reset: the frame and the unconsumed bytes are dropped */
	rig_reset(&r);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
	ck_assert_int_eq(async_chat__framer_stuck(r.fr), 0);
	rig_add(&r, "xyd", 3);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert(tu_frame_is(&r.rec, 1, "ef\nxy"));
	rig_free(&r);
}
END_TEST

/* skip() under each kind, with and without a bound. */
START_TEST(test_skip)
{
	struct fm_step nl = {0, fm_string("\n", 1)};
	struct fm_step crlf = {0, fm_string("\r\n", 2)};
	struct fm_step c5 = {0, fm_count(5)};
	struct fm_step none = {0, fm_none()};
	struct async_chat_framer_event ev;
	struct rig r;

	/* at a frame's start: nothing of it is delivered */
	rig_init(&r, &nl, 1);
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	r.skipping = 1;
	rig_add(&r, "abc\nxy\n", 7);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 2);
	ck_assert_int_eq(r.skipped[0], 1);
	ck_assert(tu_frame_is(&r.rec, 0, ""));
	ck_assert_int_eq(r.skipped[1], 0);
	ck_assert(tu_frame_is(&r.rec, 1, "xy"));
	ck_assert_int_eq(r.data_calls, 1);
	rig_free(&r);

	/* with a held prefix: the prefix is dropped with the frame */
	rig_init(&r, &crlf, 1);
	rig_add(&r, "ab\r", 3);
	rig_pump(&r, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 1);
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	r.skipping = 1;
	rig_add(&r, "q\r\nz", 4);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert_int_eq(r.skipped[0], 1);
	ck_assert(tu_frame_is(&r.rec, 0, "ab"));
	ck_assert(tu_cur_eq(&r.rec, "z", 1));
	rig_free(&r);

	/* line mode: SKIPPED says nothing of which line end matched */
	rig_init(&r, &crlf, 1);
	ck_assert_int_eq(async_chat_framer_set_terminator_line(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_next(r.fr, "ab\nc", 4, &ev),
	    ASYNC_CHAT_FRAMER_SKIPPED);
	ck_assert_uint_eq(ev.len, 1);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_int_eq(ev.matched, 0);
	rig_free(&r);

	/* a count: its remaining bytes go, then it is spent */
	rig_init(&r, &c5, 1);
	rig_add(&r, "ab", 2);
	rig_pump(&r, 0);
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	r.skipping = 1;
	rig_add(&r, "cdefg", 5);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert_int_eq(r.skipped[0], 1);
	ck_assert(tu_frame_is(&r.rec, 0, "ab"));
	ck_assert(tu_cur_eq(&r.rec, "fg", 2));
	rig_free(&r);

	/* none: the frame never ends, so everything goes */
	rig_init(&r, &none, 1);
	ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_next(r.fr, "abc", 3, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_int_eq(async_chat_framer_finish(r.fr, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	rig_free(&r);
}
END_TEST

/* reset() keeps the terminator, a count's remainder and the bound. */
START_TEST(test_reset)
{
	struct fm_step crlf2 = {0, fm_string("\r\n\r\n", 4)};
	struct fm_step c6 = {0, fm_count(6)};
	struct async_chat_terminator t;
	struct rig r;

	rig_init(&r, &crlf2, 1);
	ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 100), 0);
	rig_add(&r, "abc\r\n\r", 6);
	rig_pump(&r, 0);
	ck_assert_uint_eq(carry_rest(r.fr), 3);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 3);
	rig_reset(&r);
	ck_assert_uint_eq(carry_rest(r.fr), 0);
	ck_assert_uint_eq(async_chat_framer_frame_length(r.fr), 0);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(r.fr->max_frame, 100);
	/* the held "\r\n\r" is gone: this "\n" does not end a frame */
	rig_add(&r, "\nxy\r\n\r\n", 7);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abc\nxy"));
	rig_free(&r);

	rig_init(&r, &c6, 1);
	rig_add(&r, "abcd", 4);
	rig_pump(&r, 0);
	rig_reset(&r);
	ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 2);
	rig_add(&r, "efgh", 4);
	rig_pump(&r, 0);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "abcdef"));
	rig_free(&r);
}
END_TEST

/*
 * Length-field frames
 */

struct lf_known {
	struct async_chat_length_field lf;
	struct blob stream;
	struct blob frame[4];
	size_t nframes;
	struct blob tail;
	int error;      /* the run ends in a length error */
	size_t err_end; /* ... after the header's bytes, at this offset */
};

#define LF(...) {__VA_ARGS__}

static const struct lf_known lf_known[] = {
    /* strip 0: the header is delivered with the body */
    {LF(.width = 1), B("\x03" "abc\x00\x01z"), {B("\x03" "abc"), B("\x00"),
        B("\x01z")}, 3, B(""), 0, 0},
    {LF(.width = 2, .strip = 2), B("\x00\x03" "abc\x00\x00\x00\x02x"),
        {B("abc"), B("")}, 2, B("x"), 0, 0},
    {LF(.width = 2, .little_endian = 1, .strip = 2), B("\x03\x00" "abc\x01"),
        {B("abc")}, 1, B("\x01"), 0, 0},
    {LF(.width = 3, .strip = 3), B("\x00\x00\x02xy\x00\x01"), {B("xy")}, 1,
        B("\x00\x01"), 0, 0},
    {LF(.width = 3, .little_endian = 1, .strip = 3), B("\x02\x00\x00xy"),
        {B("xy")}, 1, B(""), 0, 0},
    {LF(.width = 4, .strip = 4), B("\x00\x00\x00\x05hello\x00\x00"),
        {B("hello")}, 1, B("\x00\x00"), 0, 0},
    {LF(.width = 4, .little_endian = 1, .strip = 4), B("\x05\x00\x00\x00hello"),
        {B("hello")}, 1, B(""), 0, 0},
    {LF(.width = 8, .strip = 8), B("\x00\x00\x00\x00\x00\x00\x00\x02ok"),
        {B("ok")}, 1, B(""), 0, 0},
    {LF(.width = 8, .little_endian = 1, .strip = 8),
        B("\x02\x00\x00\x00\x00\x00\x00\x00ok"), {B("ok")}, 1, B(""), 0, 0},
    /* varints: one byte, two bytes (not minimal), a zero body */
    {LF(.width = 0, .strip = 1), B("\x05hello\x00"), {B("hello"), B("")}, 2,
        B(""), 0, 0},
    {LF(.width = 0, .strip = 2), B("\x81\x00q\x82\x00xy"), {B("q"), B("xy")},
        2, B(""), 0, 0},
    {LF(.width = 0), B("\x83\x80\x00" "abc"), {B("\x83\x80\x00" "abc")}, 1,
        B(""), 0, 0},
    /* an offset, stripped whole or in part */
    {LF(.offset = 2, .width = 1, .strip = 3), B("XY\x02" "abZW\x00"),
        {B("ab"), B("")}, 2, B(""), 0, 0},
    {LF(.offset = 2, .width = 1, .strip = 1), B("XY\x02" "ab"),
        {B("Y\x02" "ab")}, 1, B(""), 0, 0},
    /* the value counts the whole frame */
    {LF(.offset = 1, .width = 2, .adjust = -3, .strip = 3),
        B("M\x00\x05" "abN\x00\x03"), {B("ab"), B("")}, 2, B(""), 0, 0},
    {LF(.width = 1, .adjust = 2, .strip = 1), B("\x01" "abc"), {B("abc")}, 1,
        B(""), 0, 0},
    /* strip past the header, into the body */
    {LF(.width = 1, .strip = 3), B("\x04" "abcd\x02"), {B("cd")}, 1, B(""), 0,
        0},
    /* partial headers at the end are delivered as they are */
    {LF(.width = 4, .strip = 4), B("\x00\x00"), {B("")}, 0, B("\x00\x00"), 0,
        0},
    {LF(.width = 0, .strip = 1), B("\x01z\x80"), {B("z")}, 1, B("\x80"), 0,
        0},
    /* errors: a negative body, a varint of eleven bytes or past 64 bits,
     * a strip past the frame, a frame past UINT64_MAX */
    {LF(.width = 1, .adjust = -2), B("\x01" "abc"), {B("")}, 0, B(""), 1, 1},
    {LF(.width = 1, .adjust = -1, .strip = 1), B("\x02" "a\x01\x00zz"),
        {B("a"), B("")}, 2, B(""), 1, 4},
    {LF(.width = 0), B("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01zz"),
        {B("")}, 0, B(""), 1, 10},
    {LF(.offset = 1, .width = 0),
        B("o\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02zz"), {B("")}, 0, B(""),
        1, 11},
    {LF(.width = 0), B("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01zz"),
        {B("")}, 0, B(""), 1, 10},
    {LF(.width = 1, .strip = 3), B("\x01" "ab"), {B("")}, 0, B(""), 1, 1},
    {LF(.width = 8), B("\xff\xff\xff\xff\xff\xff\xff\xf8zz"), {B("")}, 0,
        B(""), 1, 8},
    {LF(.width = 8, .adjust = 1), B("\xff\xff\xff\xff\xff\xff\xff\xff"),
        {B("")}, 0, B(""), 1, 8},
    /* the largest frame a varint can announce: valid, never whole */
    {LF(.width = 0, .adjust = -10),
        B("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01zz"), {B("")}, 0,
        B("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01zz"), 0, 0},
};

START_TEST(test_length_known)
{
	const struct lf_known *k = &lf_known[_i];
	struct fm_step step = {0, fm_length(&k->lf)};
	struct fm_result m;
	struct known kk;
	struct rig r;
	size_t i;

	/* the model first */
	ck_assert_int_eq(
	    fm_run(&step, 1, k->stream.p, k->stream.len, &m), 0);
	ck_assert_uint_eq(m.n, k->nframes);
	for (i = 0; i < m.n; i++) {
		ck_assert_uint_eq(m.frame[i].len, k->frame[i].len);
		ck_assert_mem_eq(k->stream.p + m.frame[i].off, k->frame[i].p,
		    m.frame[i].len);
		ck_assert_int_eq(m.frame[i].matched, 0);
	}
	ck_assert_int_eq(m.error, k->error);
	if (k->error)
		ck_assert_uint_eq(m.err_off + m.err_len, k->err_end);
	ck_assert_uint_eq(m.tail_len, k->tail.len);
	ck_assert_mem_eq(k->stream.p + m.tail_off, k->tail.p, m.tail_len);
	fm_result_free(&m);

	rig_init(&r, &step, 1);
	r.expect_error = k->error;
	rig_add(&r, k->stream.p, k->stream.len);
	ck_assert_int_eq(rig_pump(&r, 1),
	    k->error ? ASYNC_CHAT_FRAMER_LENGTH_ERROR : RIG_IDLE);
	memset(&kk, 0, sizeof(kk));
	kk.stream = k->stream;
	for (i = 0; i < 4; i++)
		kk.frame[i] = k->frame[i];
	kk.nframes = k->nframes;
	kk.tail = k->tail;
	expect_known_frames(&r, &kk);
	if (k->error) {
		ck_assert_uint_eq(r.pos, k->err_end);
		/* sticky, and not to be skipped */
		errno = 0;
		ck_assert_int_eq(async_chat_framer_skip(r.fr), -1);
		ck_assert_int_eq(errno, EPROTO);
		ck_assert_int_eq(async_chat__framer_stuck(r.fr), 2);
	}
	rig_free(&r);

	check_all_ways(&step, 1, k->stream.p, k->stream.len, 20);
}
END_TEST

/* A length error is answered with another terminator: the header's
 * bytes, held by the framer, are framed again under it. */
START_TEST(test_length_error_recovery)
{
	static const char s[] = "\x02" "a\x00" "bc\nde\n";
	struct async_chat_length_field lf = {.width = 1, .adjust = -1};
	struct fm_step steps[] = {{0, fm_length(&lf)},
	    {FM_LENGTH_ERROR, fm_line()}};
	struct async_chat_framer_event ev;
	struct rig r;

	rig_init(&r, steps, 2);
	rig_add(&r, s, sizeof(s) - 1);
	rig_pump(&r, 1);
	ck_assert_int_eq(r.recovered, 1);
	ck_assert_uint_eq(r.rec.n, 3);
	ck_assert(tu_frame_is(&r.rec, 0, "\x02" "a"));
	ck_assert_mem_eq(r.rec.frame[1], "\x00" "bc", 3);
	ck_assert_uint_eq(r.rec.len[1], 3);
	ck_assert_int_eq(r.matched[1], 1);
	ck_assert(tu_frame_is(&r.rec, 2, "de"));
	rig_free(&r);
	check_all_ways(steps, 2, s, sizeof(s) - 1, 20);

	/* reset also clears it: the next byte is a new header */
	rig_init(&r, steps, 1);
	rig_add(&r, "\x00xyz", 4);
	r.expect_error = 1;
	ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_LENGTH_ERROR);
	ck_assert_uint_eq(r.pos, 1);
	ck_assert_int_eq(async_chat_framer_finish(r.fr, &ev),
	    ASYNC_CHAT_FRAMER_LENGTH_ERROR);
	rig_reset(&r);
	ck_assert_int_eq(async_chat__framer_stuck(r.fr), 0);
	rig_add(&r, "\x03" "ab", 3);
	ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
	ck_assert_uint_eq(r.rec.n, 1);
	ck_assert(tu_frame_is(&r.rec, 0, "\x03" "ab"));
	rig_free(&r);
}
END_TEST

/* Terminators of other kinds between length-field frames, both ways. */
START_TEST(test_length_switch)
{
	static const char s[] = "HELLO\n\x00\x03" "abcBYE\n\x02" "xy\x01" "z";
	struct async_chat_length_field w2 = {.width = 2, .strip = 2};
	struct async_chat_length_field v = {.width = 0, .strip = 1};
	struct fm_step steps[] = {{0, fm_line()}, {1, fm_length(&w2)},
	    {2, fm_line()}, {3, fm_length(&v)}};
	struct rig r;

	rig_init(&r, steps, 4);
	rig_add(&r, s, sizeof(s) - 1);
	rig_pump(&r, 1);
	ck_assert_uint_eq(r.rec.n, 5);
	ck_assert(tu_frame_is(&r.rec, 0, "HELLO"));
	ck_assert(tu_frame_is(&r.rec, 1, "abc"));
	ck_assert(tu_frame_is(&r.rec, 2, "BYE"));
	ck_assert(tu_frame_is(&r.rec, 3, "xy"));
	ck_assert(tu_frame_is(&r.rec, 4, "z"));
	rig_free(&r);
	check_all_ways(steps, 4, s, sizeof(s) - 1, 40);
}
END_TEST

/* The bound is checked on the delivered length once the header is
 * complete, before any byte after the header is taken. */
START_TEST(test_length_bound)
{
	struct async_chat_length_field strip4 = {.width = 4, .strip = 4};
	struct async_chat_length_field whole = {.width = 4};
	struct fm_step s4 = {0, fm_length(&strip4)};
	struct fm_step w = {0, fm_length(&whole)};
	static const char s[] = "\x00\x00\x00\x05" "hello\x00\x00\x00\x01" "z";
	struct async_chat_terminator t;
	size_t cut;
	struct rig r;

	for (cut = 0; cut <= sizeof(s) - 1; cut++) {
		/* exactly the bound: through */
		rig_init(&r, &s4, 1);
		ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 5), 0);
		feed_plan(&r, (const unsigned char *)s, sizeof(s) - 1,
		    PLAN_SPLIT, cut);
		ck_assert_uint_eq(r.rec.n, 2);
		ck_assert(tu_frame_is(&r.rec, 0, "hello"));
		rig_free(&r);

		/* the header counts when it is delivered */
		rig_init(&r, &w, 1);
		ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 5), 0);
		rig_add(&r, s, cut);
		if (cut < 4) {
			ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
			ck_assert_uint_eq(r.pos, cut);
			ck_assert_int_eq(rig_finish1(&r), RIG_IDLE);
			/* at the end of input the partial header would be
			 * delivered: finish() is for the end only, so this
			 * run starts over */
			rig_free(&r);
			rig_init(&r, &w, 1);
			ck_assert_int_eq(
			    async_chat_framer_set_max_frame(r.fr, 5), 0);
			rig_add(&r, s, cut);
			ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
		} else {
			ck_assert_int_eq(rig_feed1(&r),
			    ASYNC_CHAT_FRAMER_TOO_LONG);
			ck_assert_uint_eq(r.pos, 4);
		}
		rig_add(&r, s + cut, sizeof(s) - 1 - cut);
		ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
		ck_assert_uint_eq(r.too_long_len, 9);
		ck_assert_uint_eq(r.pos, 4);
		ck_assert_uint_eq(r.taken, 0);
		ck_assert_int_eq(async_chat_framer_get_terminator(r.fr, &t), 0);
		ck_assert_uint_eq(t.count, 5);
		ck_assert_int_eq(rig_finish1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
		ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 8), 0);
		ck_assert_int_eq(rig_feed1(&r), ASYNC_CHAT_FRAMER_TOO_LONG);
		ck_assert_uint_eq(r.pos, 4);
		if (cut % 2 == 0) {
			ck_assert_int_eq(async_chat_framer_set_max_frame(r.fr, 9), 0);
			ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
			ck_assert_uint_eq(r.rec.n, 2);
			ck_assert_uint_eq(r.rec.len[0], 9);
			ck_assert(tu_frame_eq(&r.rec, 1, "\x00\x00\x00\x01" "z", 5));
		} else {
			ck_assert_int_eq(async_chat_framer_skip(r.fr), 0);
			r.skipping = 1;
			ck_assert_int_eq(rig_feed1(&r), RIG_IDLE);
			ck_assert_uint_eq(r.rec.n, 2);
			ck_assert_int_eq(r.skipped[0], 1);
			ck_assert_uint_eq(r.rec.len[0], 0);
			ck_assert(tu_frame_eq(&r.rec, 1, "\x00\x00\x00\x01" "z", 5));
		}
		rig_free(&r);
	}
}
END_TEST

/* Held DATA from a length field's header: the header is gathered in the
 * framer, so its delivered bytes come from the framer's memory, and when
 * the same call took them from the span, that call's event counts them
 * in consumed.  A frame whole in the span comes in one DATA event. */
START_TEST(test_length_header_held)
{
	struct async_chat_length_field lf = {.width = 2};
	struct async_chat_framer *fr = async_chat_framer_new();
	struct async_chat_framer_event ev;

	ck_assert_ptr_nonnull(fr);
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00\x02" "a", 3, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_int_eq(ev.held, 1);
	ck_assert_uint_eq(ev.len, 2);
	ck_assert_mem_eq(ev.data, "\x00\x02", 2);
	ck_assert_uint_eq(ev.consumed, 2);
	ck_assert_int_eq(async_chat_framer_next(fr, "a", 1, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_int_eq(ev.held, 0);
	ck_assert_uint_eq(ev.consumed, 1);
	ck_assert_int_eq(async_chat_framer_next(fr, "b", 1, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_uint_eq(ev.consumed, 1);
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_END);
	/* whole in the span: header and body at once, from the span */
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00\x01" "z", 3, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_int_eq(ev.held, 0);
	ck_assert_uint_eq(ev.len, 3);
	ck_assert_mem_eq(ev.data, "\x00\x01" "z", 3);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_END);
	/* stripped: the header is consumed without a byte handed out */
	lf.strip = ASYNC_CHAT_STRIP_HEADER;
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00\x01" "y", 3, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_uint_eq(ev.len, 1);
	ck_assert_mem_eq(ev.data, "y", 1);
	ck_assert_uint_eq(ev.consumed, 3);
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_END);
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00\x00", 2, &ev),
	    ASYNC_CHAT_FRAMER_END);
	ck_assert_uint_eq(ev.consumed, 2);
	lf.strip = 0;
	ck_assert_int_eq(async_chat_framer_set_terminator_length(fr, &lf), 0);
	/* gathered over two calls: the second call's event */
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00", 1, &ev),
	    ASYNC_CHAT_FRAMER_NEED_MORE);
	ck_assert_uint_eq(ev.consumed, 1);
	ck_assert_int_eq(async_chat_framer_next(fr, "\x00", 1, &ev),
	    ASYNC_CHAT_FRAMER_DATA);
	ck_assert_int_eq(ev.held, 1);
	ck_assert_uint_eq(ev.len, 2);
	ck_assert_uint_eq(ev.consumed, 1);
	ck_assert_int_eq(async_chat_framer_next(fr, NULL, 0, &ev),
	    ASYNC_CHAT_FRAMER_END);
	async_chat_framer_free(fr);
}
END_TEST

START_TEST(test_length_random)
{
	check_random(K(LENGTH), 0, 80);
	check_random(K(LENGTH), 1, 60);
}
END_TEST

START_TEST(test_length_all_kinds_random)
{
	check_random(K(NONE) | K(COUNT) | K(STRING) | K(LINE) | K(ANY) |
	        K(LENGTH),
	    1, 100);
}
END_TEST

START_TEST(test_length_bound_random)
{
	bound_random(K(LENGTH) | K(LINE) | K(COUNT), 300, 0);
}
END_TEST

/* Decode a header the framer's way: feed it and read what it announces
 * (the body's length, with strip = the header). */
static uint64_t
decode_body(const struct async_chat_length_field *spec, const unsigned char *h,
    size_t hlen)
{
	struct async_chat_length_field lf = *spec;
	struct async_chat_framer *fr = async_chat_framer_new();
	struct async_chat_framer_event ev;
	struct async_chat_terminator t;
	uint64_t body;
	int rc;

	FAST_ASSERT(fr != NULL);
	lf.strip = hlen;
	FAST_ASSERT(async_chat_framer_set_terminator_length(fr, &lf) == 0);
	rc = async_chat_framer_next(fr, h, hlen, &ev);
	FAST_ASSERT(ev.consumed == hlen);
	FAST_ASSERT(async_chat_framer_get_terminator(fr, &t) == 0);
	body = t.count;
	if (rc == ASYNC_CHAT_FRAMER_END) {
		FAST_ASSERT(body == 0);
	} else {
		FAST_ASSERT(rc == ASYNC_CHAT_FRAMER_NEED_MORE);
		FAST_ASSERT(body > 0);
	}
	async_chat_framer_free(fr);
	return body;
}

START_TEST(test_length_encode)
{
	static const uint64_t payloads[] = {0, 1, 2, 127, 128, 255, 256,
	    16383, 16384, 65535, 65536, (1u << 24) - 1, 1u << 24,
	    UINT32_MAX, (uint64_t)UINT32_MAX + 1, (uint64_t)1 << 56,
	    UINT64_MAX / 2, UINT64_MAX - 64};
	static const unsigned widths[] = {0, 1, 2, 3, 4, 8};
	static const int64_t adjusts[] = {0, 2, -3, -12, INT64_MIN};
	struct async_chat_length_field lf;
	unsigned char out[64], zero[8] = {0};
	size_t w, a, p, off, sz;
	ev_ssize_t h;

	for (w = 0; w < 6; w++)
	for (a = 0; a < 5; a++)
	for (off = 0; off < 3; off++)
	for (p = 0; p < sizeof(payloads) / sizeof(payloads[0]); p++) {
		uint64_t v, field;
		int fits;

		memset(&lf, 0, sizeof(lf));
		lf.width = widths[w];
		lf.little_endian = widths[w] != 0 && (p & 1);
		lf.offset = off;
		lf.adjust = adjusts[a];
		lf.strip = 12345; /* ignored */
		/* v = payload - adjust, when that is in 0..UINT64_MAX */
		if (adjusts[a] >= 0) {
			fits = payloads[p] >= (uint64_t)adjusts[a];
			v = payloads[p] - (uint64_t)adjusts[a];
		} else {
			uint64_t m = (uint64_t)0 - (uint64_t)adjusts[a];

			fits = payloads[p] <= UINT64_MAX - m;
			v = payloads[p] + m;
		}
		fits = fits && (lf.width == 0 || lf.width == 8 ||
		                   v < ((uint64_t)1 << (8 * lf.width)));
		/* and a decoder must be able to count the whole frame */
		field = lf.width;
		if (field == 0) /* the varint's length */
			for (field = 1; field < 10 && (v >> (7 * field)) != 0;
			     field++)
				;
		fits = fits && payloads[p] <= UINT64_MAX - (off + field);
		errno = 0;
		h = async_chat_length_field_encode(&lf, payloads[p], out,
		    sizeof(out));
		if (!fits) {
			FAST_ASSERT(h == -1 && errno == ERANGE);
			continue;
		}
		FAST_ASSERT(h > 0);
		FAST_ASSERT(lf.width == 0 ? (size_t)h <= off + 10 :
		    (size_t)h == off + lf.width);
		FAST_ASSERT(memcmp(out, zero, off) == 0);
		/* a smaller room fails whole */
		for (sz = 0; sz < (size_t)h; sz++) {
			errno = 0;
			FAST_ASSERT(async_chat_length_field_encode(&lf,
			    payloads[p], out, sz) == -1 && errno == ENOBUFS);
		}
		/* round trip, unless the frame cannot be counted */
		if (payloads[p] <= UINT64_MAX - (uint64_t)h)
			FAST_ASSERT(decode_body(&lf, out, (size_t)h) ==
			    payloads[p]);
	}

	/* varint lengths */
	memset(&lf, 0, sizeof(lf));
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 127, out, 64), 1);
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 128, out, 64), 2);
	ck_assert_mem_eq(out, "\x80\x01", 2);
	/* The longest varint, for the longest frame a decoder can count. */
	ck_assert_int_eq(
	    async_chat_length_field_encode(&lf, UINT64_MAX - 10, out, 64), 10);
	ck_assert_mem_eq(out, "\xf5\xff\xff\xff\xff\xff\xff\xff\xff\x01", 10);
	errno = 0;
	ck_assert_int_eq(
	    async_chat_length_field_encode(&lf, UINT64_MAX, out, 64), -1);
	ck_assert_int_eq(errno, ERANGE);
	lf.width = 2;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 0x1234, out, 64), 2);
	ck_assert_mem_eq(out, "\x12\x34", 2);
	lf.little_endian = 1;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 0x1234, out, 64), 2);
	ck_assert_mem_eq(out, "\x34\x12", 2);

	/* EINVAL */
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(NULL, 1, out, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 1, NULL, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
	lf.width = 5;
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 1, out, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
	lf.width = 0; /* a little-endian varint */
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 1, out, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
	lf.little_endian = 0;
	lf.reserved[3] = 7;
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 1, out, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
	lf.reserved[3] = 0;
	lf.offset = ASYNC_CHAT_TERMINATOR_MAX + 1;
	errno = 0;
	ck_assert_int_eq(async_chat_length_field_encode(&lf, 1, out, 64), -1);
	ck_assert_int_eq(errno, EINVAL);
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

	tc = tcase_create("api");
	tcase_add_test(tc, test_api_args);
	tcase_add_test(tc, test_get_terminator_kinds);
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

	tc = tcase_create("length");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(
	    tc, test_length_known, 0, sizeof(lf_known) / sizeof(lf_known[0]));
	tcase_add_test(tc, test_length_error_recovery);
	tcase_add_test(tc, test_length_switch);
	tcase_add_test(tc, test_length_bound);
	tcase_add_test(tc, test_length_header_held);
	tcase_add_test(tc, test_length_random);
	tcase_add_test(tc, test_length_all_kinds_random);
	tcase_add_test(tc, test_length_bound_random);
	tcase_add_test(tc, test_length_encode);
	suite_add_tcase(s, tc);

	tc = tcase_create("switch");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_switch_http);
	tcase_add_test(tc, test_switch_resp);
	tcase_add_test(tc, test_switch_in_data_count_kept);
	tcase_add_test(tc, test_switch_in_last_data);
	tcase_add_test(tc, test_switch_while_stopped);
	tcase_add_test(tc, test_switch_after_held_data);
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
	tcase_add_test(tc, test_bound_random_skip);
	tcase_add_test(tc, test_too_long_repeats);
	tcase_add_test(tc, test_skip);
	tcase_add_test(tc, test_reset);
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
