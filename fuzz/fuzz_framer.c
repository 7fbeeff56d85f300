/*
 * fuzz_framer.c - libFuzzer target: libasynchat's public framer
 * (async_chat_framer_next()) against the byte-at-a-time reference model
 * (test/framer_model.c).  The input gives a terminator script (length
 * fields included), a frame bound, the caller's stops and span lengths, a
 * chunking and a stream; any difference in frames, matched alternatives,
 * held bytes, tail or events aborts.
 *
 * Input layout (every field is optional: a short input reads as zeros):
 *   flags, alphabet, nsteps, steps..., [bound, raise], [tape], chunk
 *   plan, stream (the rest of the input).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"
#include "framer_model.h"

#define MAX_STEPS 16
#define MAX_TERM 8
#define MAX_TAPE 32
#define MAX_CHUNKS 64
/* Stops and short spans allowed per input, so that a tape that always
 * stops cannot keep the framer from finishing. */
#define STOP_BUDGET 4096

enum {
	F_BOUND = 1 << 0,   /* a frame bound, raised when hit or after DATA */
	F_ALPHA = 1 << 1,   /* map terminators and stream to a few bytes */
	F_STOPS = 1 << 2,   /* the caller stops after events as the tape says */
	F_PARTIAL = 1 << 3, /* spans of random length, empty ones too */
	F_ALIAS = 1 << 4,   /* set terminators from get_terminator's bytes */
	F_COPY = 1 << 5,    /* spans are copies, overwritten after each call */
	F_LENGTH = 1 << 6,  /* length-field terminators in the script */
	F_SKIP = 1 << 7     /* frames past the bound are sometimes skipped */
};

/* Reading the input: past its end every byte reads as 0. */
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

/* A terminator of the script, as decoded, with the model's view of it. */
struct step_ex {
	struct fm_step step;
	/* STRING with F_ALIAS: set first to alias_full, then to its suffix
	 * taken from async_chat__framer_get()'s own copy. */
	const unsigned char *alias_full;
	size_t alias_len;
	/* ANY with F_ALIAS: alternative alias_idx is passed as the pointer
	 * async_chat__framer_get() reports after a string set to it. */
	int alias_idx;
	/* NONE: set as none (0), a count of 0 (1) or an empty string (2) */
	int none_how;
};

/* The frame number byte that makes a step the one set on a length error
 * (F_LENGTH only). */
#define ERROR_STEP_BYTE 47

struct input {
	unsigned flags;
	unsigned char alpha[16];
	size_t nalpha;
	struct step_ex ex[MAX_STEPS];
	struct fm_step steps[MAX_STEPS];
	size_t nsteps;
	unsigned char pool[MAX_STEPS * 16 * MAX_TERM];
	size_t pool_used;
	uint64_t bound;
	uint8_t raise;
	uint8_t tape[MAX_TAPE];
	size_t tape_len;
	uint8_t chunk[MAX_CHUNKS];
	size_t nchunks;
	unsigned char *stream;
	size_t len;
};

static unsigned char
map_byte(const struct input *in, uint8_t b)
{
	return in->flags & F_ALPHA ? in->alpha[b % in->nalpha] : b;
}

/* 1..MAX_TERM bytes, NUL included. */
static const unsigned char *
decode_bytes(struct rd *r, struct input *in, size_t *len)
{
	unsigned char *p = in->pool + in->pool_used;
	size_t n = 1 + rd_u8(r) % MAX_TERM, i;

	for (i = 0; i < n; i++)
		p[i] = map_byte(in, rd_u8(r));
	in->pool_used += n;
	*len = n;
	return p;
}

static uint64_t
decode_count(struct rd *r)
{
	uint8_t b = rd_u8(r);

	switch (b >> 6) {
	case 0:
		return b & 0x3f; /* 0 is the none terminator */
	case 1:
		return 1 + (b & 3);
	case 2:
		return 64 + rd_u8(r) + 256u * rd_u8(r);
	default:
		/* far past any stream: the tail stays partial */
		return UINT64_MAX - (b & 0x3f);
	}
}

static void
decode_step(struct rd *r, struct input *in, struct step_ex *ex)
{
	const void *alt[ASYNC_CHAT_ALTERNATIVES_MAX];
	size_t lens[ASYNC_CHAT_ALTERNATIVES_MAX], n, i;
	uint8_t b;

	memset(ex, 0, sizeof(*ex));
	ex->alias_idx = -1;
	ex->step.frame = rd_u8(r) % 48;
	if ((in->flags & F_LENGTH) && ex->step.frame == ERROR_STEP_BYTE)
		ex->step.frame = FM_LENGTH_ERROR;
	b = rd_u8(r);
	if ((in->flags & F_LENGTH) && b % 6 == 5) {
		static const unsigned widths[8] = {0, 1, 2, 3, 4, 8, 1, 2};
		struct async_chat_length_field lf;
		uint8_t x = rd_u8(r), y = rd_u8(r);

		memset(&lf, 0, sizeof(lf));
		lf.width = widths[x & 7];
		lf.little_endian = lf.width != 0 && (x & 8);
		/* offsets 0, 1, 2 and one past the framer's inline room */
		lf.offset = ((x >> 4) & 3) == 3 ? 21 : (x >> 4) & 3;
		/* adjust -16..15, or "the value counts the header" */
		lf.adjust = (x & 0x40) ? -(int64_t)(lf.offset +
		                                 (lf.width ? lf.width : 1))
		                       : (int64_t)(y & 31) - 16;
		if (x & 0x80)
			lf.strip = lf.offset + (lf.width ? lf.width : 1);
		else
			lf.strip = (uint64_t)(y >> 5);
		ex->step.term = fm_length(&lf);
		return;
	}
	switch (b % 5) {
	case 0:
		ex->step.term = fm_none();
		ex->none_how = (b >> 3) % 3;
		break;
	case 1:
		ex->step.term = fm_count(decode_count(r));
		ex->none_how = 1;
		break;
	case 2:
		alt[0] = decode_bytes(r, in, &lens[0]);
		if ((in->flags & F_ALIAS) && (b & 0x80) && lens[0] > 1) {
			size_t cut = 1 + rd_u8(r) % (lens[0] - 1);

			ex->alias_full = alt[0];
			ex->alias_len = lens[0];
			alt[0] = (const unsigned char *)alt[0] + cut;
			lens[0] -= cut;
		}
		ex->step.term = fm_string(alt[0], lens[0]);
		break;
	case 3:
		ex->step.term = fm_line();
		break;
	default:
		/* mostly a few alternatives, sometimes the most allowed */
		n = b & 0x80 ? 1 + (b >> 3) % ASYNC_CHAT_ALTERNATIVES_MAX
		             : 1 + (b >> 3) % 4;
		for (i = 0; i < n; i++)
			alt[i] = decode_bytes(r, in, &lens[i]);
		if ((in->flags & F_ALIAS) && (b & 0x40))
			ex->alias_idx = (int)(rd_u8(r) % n);
		ex->step.term = fm_any(alt, lens, n);
		break;
	}
}

static void
decode(const uint8_t *data, size_t size, struct input *in)
{
	struct rd r = {data, size};
	size_t i;
	uint8_t b;

	memset(in, 0, sizeof(*in));
	in->flags = rd_u8(&r);
	/* two to nine symbols, taken from the ones protocols use */
	{
		static const unsigned char sym[] = {
		    'a', '\r', '\n', '\0', 'b', '$', ':', 0xff, ' '};

		b = rd_u8(&r);
		in->nalpha = 2 + (b & 7);
		for (i = 0; i < in->nalpha; i++)
			in->alpha[i] = sym[(i + (b >> 3)) % sizeof(sym)];
	}
	in->nsteps = rd_u8(&r) % (MAX_STEPS + 1);
	for (i = 0; i < in->nsteps; i++) {
		decode_step(&r, in, &in->ex[i]);
		in->steps[i] = in->ex[i].step;
	}
	if (in->flags & F_BOUND) {
		in->bound = 1 + rd_u8(&r) % 64;
		in->raise = rd_u8(&r);
	}
	if (in->flags & (F_STOPS | F_PARTIAL)) {
		in->tape_len = rd_u8(&r) % (MAX_TAPE + 1);
		for (i = 0; i < in->tape_len; i++)
			in->tape[i] = rd_u8(&r);
	}
	in->nchunks = rd_u8(&r) % (MAX_CHUNKS + 1);
	for (i = 0; i < in->nchunks; i++)
		in->chunk[i] = rd_u8(&r);
	in->len = r.n;
	in->stream = malloc(r.n + 1);
	if (in->stream == NULL)
		abort();
	for (i = 0; i < r.n; i++)
		in->stream[i] = map_byte(in, r.p[i]);
}

/*
 * The framer under test, driven as a caller would, and a record of what
 * it delivers.
 */

struct run {
	const struct input *in;
	struct async_chat_framer *fr;
	unsigned char *got; /* every byte delivered, frames end to end */
	size_t ngot;
	size_t *end; /* frame i is got[end[i-1]..end[i]) */
	int *matched;
	int *skipped;
	size_t nframes;
	size_t fed;    /* stream bytes arrived */
	size_t pos;    /* stream bytes consumed */
	size_t passed; /* stream bytes given to the framer so far */
	size_t *chunk_end; /* where each chunk arrived ends */
	size_t nchunks;
	int by_chunk;      /* spans end where pos's chunk does */
	size_t tape_bit;
	int budget;
	int skipping;  /* skip() called, SKIPPED not yet seen */
	int recovered; /* the length-error step was set */
	int lerr;      /* stopped at a length error */
	/* TERM_COUNT: the count set, and whether a frame spent it */
	const struct fm_term *term; /* in force; NULL: none from the start */
	uint64_t count_set;
	int count_spent;
	const struct fm_result *m;
};

static void
dump_bytes(const char *label, const unsigned char *p, size_t n)
{
	size_t i;

	fprintf(stderr, "%s \"", label);
	for (i = 0; i < n; i++) {
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\')
			fputc(p[i], stderr);
		else
			fprintf(stderr, "\\x%02x", p[i]);
	}
	fprintf(stderr, "\" (%zu)\n", n);
}

/* Say what was run and what differs, so a finding reads without a
 * debugger. */
static void
dump(const struct run *r)
{
	static const char *const kind[] = {
	    "none", "string", "count", "line", "any", "length"};
	const struct input *in = r->in;
	size_t i, j, start = 0;

	fprintf(stderr, "flags 0x%x bound %llu raise %u chunks %zu\n",
	    in->flags, (unsigned long long)in->bound, in->raise, in->nchunks);
	for (i = 0; i < in->nsteps; i++) {
		const struct fm_term *t = &in->ex[i].step.term;

		fprintf(stderr, "step frame %zd: %s count %llu", 
		    (ssize_t)in->ex[i].step.frame, kind[t->kind],
		    (unsigned long long)t->count);
		if (t->kind == ASYNC_CHAT_TERM_LENGTH)
			fprintf(stderr, " offset %zu width %u le %u adjust %lld "
			                "strip %llu",
			    t->lf.offset, t->lf.width, t->lf.little_endian,
			    (long long)t->lf.adjust,
			    (unsigned long long)t->lf.strip);
		fprintf(stderr, "\n");
		for (j = 0; j < t->n; j++)
			dump_bytes("  term", t->bytes[j], t->len[j]);
	}
	dump_bytes("stream", in->stream, in->len);
	for (i = 0; i < r->m->n; i++)
		dump_bytes("model frame", in->stream + r->m->frame[i].off,
		    r->m->frame[i].len);
	dump_bytes("model tail", in->stream + r->m->tail_off, r->m->tail_len);
	if (r->m->error)
		fprintf(stderr, "model: length error at %zu, header %zu\n",
		    r->m->err_off, r->m->err_len);
	for (i = 0; i < r->nframes; i++) {
		dump_bytes(r->skipped[i] ? "framer skipped" : "framer frame",
		    r->got + start, r->end[i] - start);
		start = r->end[i];
	}
	dump_bytes("framer cur", r->got + start, r->ngot - start);
	fprintf(stderr, "consumed %zu, held %zu\n", r->pos,
	    (size_t)(r->fr->carry_len - r->fr->carry_off));
}

static void
fail(const char *what, const struct run *r)
{
	dump(r);
	fprintf(stderr, "fuzz_framer: %s (frames %zu, fed %zu of %zu)\n", what,
	    r->nframes, r->fed, r->in->len);
	abort();
}

static unsigned
tape_bits(struct run *r, unsigned nbits)
{
	unsigned v = 0, i;

	if (r->in->tape_len == 0)
		return 0;
	for (i = 0; i < nbits; i++, r->tape_bit++) {
		size_t bit = r->tape_bit % (r->in->tape_len * 8);

		v = v << 1 | ((r->in->tape[bit / 8] >> (bit % 8)) & 1);
	}
	return v;
}

static size_t
cur_len(const struct run *r)
{
	return r->ngot - (r->nframes ? r->end[r->nframes - 1] : 0);
}

static size_t
held(const struct run *r)
{
	return r->fr->carry_len - r->fr->carry_off;
}

static void
apply_string(struct run *r, const struct step_ex *ex)
{
	const struct fm_term *t = &ex->step.term;

	if (ex->alias_full != NULL) {
		struct async_chat_terminator got;
		size_t cut = ex->alias_len - t->len[0];

		/* The framer must copy a terminator out of its own
		 * storage without reading what it overwrites. */
		if (async_chat_framer_set_terminator(
		        r->fr, ex->alias_full, ex->alias_len) != 0)
			fail("set_terminator (alias) failed", r);
		async_chat_framer_get_terminator(r->fr, &got);
		if (async_chat_framer_set_terminator(r->fr,
		        (const unsigned char *)got.bytes + cut, t->len[0]) != 0)
			fail("set_terminator from own bytes failed", r);
	} else if (async_chat_framer_set_terminator(
	               r->fr, t->bytes[0], t->len[0]) != 0) {
		fail("set_terminator failed", r);
	}
}

static void
apply_any(struct run *r, const struct step_ex *ex)
{
	const struct fm_term *t = &ex->step.term;
	const void *alt[ASYNC_CHAT_ALTERNATIVES_MAX];
	size_t i;

	for (i = 0; i < t->n; i++)
		alt[i] = t->bytes[i];
	if (ex->alias_idx >= 0) {
		struct async_chat_terminator got;

		if (async_chat_framer_set_terminator(r->fr,
		        t->bytes[ex->alias_idx], t->len[ex->alias_idx]) != 0)
			fail("set_terminator before alias failed", r);
		async_chat_framer_get_terminator(r->fr, &got);
		alt[ex->alias_idx] = got.bytes;
	}
	if (async_chat_framer_set_terminators(r->fr, alt, t->len, t->n) != 0)
		fail("set_terminators failed", r);
}

/* Set the terminator of step ex, as found_terminator would. */
static void
apply_step(struct run *r, const struct step_ex *ex)
{
	const struct fm_term *t = &ex->step.term;
	struct async_chat_terminator got;
	int rc = 0;

	switch (t->kind) {
	case ASYNC_CHAT_TERM_NONE:
		if (ex->none_how == 0)
			rc = async_chat_framer_set_terminator_none(r->fr);
		else if (ex->none_how == 1)
			rc = async_chat_framer_set_terminator_count(r->fr, 0);
		else
			rc = async_chat_framer_set_terminator(r->fr, "", 0);
		break;
	case ASYNC_CHAT_TERM_COUNT:
		rc = async_chat_framer_set_terminator_count(r->fr, t->count);
		break;
	case ASYNC_CHAT_TERM_STRING:
		apply_string(r, ex);
		break;
	case ASYNC_CHAT_TERM_LINE:
		rc = async_chat_framer_set_terminator_line(r->fr);
		break;
	case ASYNC_CHAT_TERM_ANY:
		apply_any(r, ex);
		break;
	case ASYNC_CHAT_TERM_LENGTH:
		rc = async_chat_framer_set_terminator_length(r->fr, &t->lf);
		break;
	}
	if (rc != 0)
		fail("setting a terminator failed", r);
	r->term = t;
	r->count_set = t->kind == ASYNC_CHAT_TERM_COUNT ? t->count : 0;
	r->count_spent = 0;
	/* What get_terminator reports right after a set. */
	if (async_chat_framer_get_terminator(r->fr, &got) != 0)
		fail("get_terminator failed", r);
	if (got.kind != t->kind || got.count != t->count ||
	    (t->kind == ASYNC_CHAT_TERM_STRING &&
	        (got.len != t->len[0] ||
	            memcmp(got.bytes, t->bytes[0], got.len) != 0)) ||
	    (t->kind == ASYNC_CHAT_TERM_ANY && got.alternatives != t->n) ||
	    (t->kind == ASYNC_CHAT_TERM_LENGTH &&
	        (got.len != sizeof(t->lf) ||
	            memcmp(got.bytes, &t->lf, sizeof(t->lf)) != 0)))
		fail("get_terminator disagrees with the terminator set", r);
}

/* The step for the frame about to start: the last one listed wins, as in
 * fm_step_at(). */
static const struct step_ex *
step_for(const struct input *in, size_t frame)
{
	const struct step_ex *found = NULL;
	size_t i;

	for (i = 0; i < in->nsteps; i++)
		if (in->ex[i].step.frame == frame)
			found = &in->ex[i];
	return found;
}

/* Where the model's frame k (or the tail) starts and how long it is. */
static void
model_frame(const struct fm_result *m, size_t k, size_t *off, size_t *len)
{
	if (k < m->n) {
		*off = m->frame[k].off;
		*len = m->frame[k].len;
	} else {
		*off = m->tail_off;
		*len = m->tail_len;
	}
}

static int
is_length(const struct run *r)
{
	return r->fr->kind == ASYNC_CHAT_TERM_LENGTH;
}

static void
on_data(struct run *r, const struct async_chat_framer_event *ev)
{
	struct async_chat_terminator t;

	memcpy(r->got + r->ngot, ev->data, (size_t)ev->len);
	r->ngot += (size_t)ev->len;
	/* A count reports, after DATA, what is missing: the frame so far
	 * and that make the count. */
	async_chat_framer_get_terminator(r->fr, &t);
	if (t.kind == ASYNC_CHAT_TERM_COUNT && !r->count_spent && !r->skipping &&
	    cur_len(r) + t.count != r->count_set)
		fail("count after DATA is not what is missing", r);
	/* Raised between calls, the bound lets the rest through (a bound
	 * set to a huge length field's size stays). */
	if (r->fr->max_frame != 0 && r->fr->max_frame < UINT64_MAX / 2 &&
	    tape_bits(r, 2) == 3)
		async_chat_framer_set_max_frame(
		    r->fr, r->fr->max_frame + 1 + tape_bits(r, 3));
}

static void
on_end(struct run *r, const struct async_chat_framer_event *ev, int skipped)
{
	const struct step_ex *ex;
	size_t n = r->nframes;

	r->end[n] = r->ngot;
	r->matched[n] = ev->matched;
	r->skipped[n] = skipped;
	r->nframes++;
	if (r->nframes > r->m->n)
		fail("more frames than the model", r);
	if (r->fr->max_frame != 0 &&
	    r->end[n] - (n ? r->end[n - 1] : 0) > r->fr->max_frame)
		fail("a frame passed the bound", r);
	if (async_chat_framer_frame_length(r->fr) != 0)
		fail("frame_length not 0 after a frame end", r);
	ex = step_for(r->in, r->nframes);
	if (ex != NULL)
		apply_step(r, ex);
	else if (r->term != NULL && r->term->kind == ASYNC_CHAT_TERM_COUNT)
		r->count_spent = 1;
}

/* Check one event against the span it was given for. */
static void
check_event(struct run *r, int rc, const struct async_chat_framer_event *ev,
    const unsigned char *span, size_t n)
{
	size_t i;

	if (rc != (int)ev->kind || ev->consumed > n)
		fail("event kind or consumed wrong", r);
	for (i = 0; i < 3; i++)
		if (ev->reserved[i] != 0)
			fail("reserved not zeroed", r);
	if (rc != ASYNC_CHAT_FRAMER_DATA && (ev->data != NULL || ev->held))
		fail("data or held outside DATA", r);
	if (rc != ASYNC_CHAT_FRAMER_END && ev->matched != 0)
		fail("matched outside END", r);
	switch (rc) {
	case ASYNC_CHAT_FRAMER_NEED_MORE:
		if (ev->consumed != n || ev->len != 0)
			fail("NEED_MORE left bytes of the span", r);
		break;
	case ASYNC_CHAT_FRAMER_DATA:
		if (ev->len == 0 || ev->data == NULL)
			fail("DATA of 0 bytes", r);
		if (ev->held) {
			if (span != NULL &&
			    ev->data < (const char *)span + n &&
			    ev->data + ev->len > (const char *)span)
				fail("held DATA points into the span", r);
			if (ev->consumed != 0 && !is_length(r))
				fail("held DATA consumed bytes", r);
		} else if (ev->len > ev->consumed ||
		           ev->data != (const char *)span + ev->consumed -
		                           ev->len) {
			fail("DATA is not the end of what it consumed", r);
		}
		break;
	case ASYNC_CHAT_FRAMER_END:
	case ASYNC_CHAT_FRAMER_SKIPPED:
		if (ev->len > ASYNC_CHAT_TERMINATOR_MAX)
			fail("terminator too long", r);
		if ((rc == ASYNC_CHAT_FRAMER_SKIPPED) != r->skipping)
			fail("SKIPPED without skip, or END while skipping", r);
		break;
	case ASYNC_CHAT_FRAMER_TOO_LONG:
		if (r->fr->max_frame == 0 || ev->len <= r->fr->max_frame ||
		    (ev->consumed != 0 && !is_length(r)) ||
		    async_chat__framer_stuck(r->fr) != 1)
			fail("TOO_LONG wrong", r);
		break;
	case ASYNC_CHAT_FRAMER_LENGTH_ERROR:
		if (!is_length(r) || ev->len != 0 ||
		    async_chat__framer_stuck(r->fr) != 2)
			fail("LENGTH_ERROR wrong", r);
		break;
	default:
		fail("unknown event", r);
	}
}

/* The frames ended so far are the model's first ones, the frame in
 * progress is a prefix of the model's, and (but for length fields, whose
 * strip drops bytes) the bytes delivered and held add up to those
 * consumed, the held ones being the stream's. */
static void
check_prefix(struct run *r)
{
	const struct fm_result *m = r->m;
	size_t i, off, len, cur = cur_len(r), h = held(r);
	size_t start = 0;

	if (r->nframes > m->n)
		fail("more frames than the model", r);
	for (i = 0; i < r->nframes; i++) {
		size_t got = r->end[i] - start;

		if (r->skipped[i] ?
		        got > m->frame[i].len :
		        got != m->frame[i].len ||
		            r->matched[i] != m->frame[i].matched)
			fail("a frame differs from the model's", r);
		if (memcmp(r->got + start, r->in->stream + m->frame[i].off,
		        got) != 0)
			fail("a frame's bytes differ from the model's", r);
		start = r->end[i];
	}
	model_frame(m, r->nframes, &off, &len);
	if (cur > len)
		fail("the frame in progress is longer than the model's", r);
	if (memcmp(r->got + start, r->in->stream + off, cur) != 0)
		fail("the frame in progress is not the model's", r);
	if (!is_length(r) && !r->skipping) {
		if (off + cur + h != r->pos)
			fail("delivered and held bytes do not add up", r);
		if (h > 0 && memcmp(r->fr->carry + r->fr->carry_off,
		                 r->in->stream + r->pos - h, h) != 0)
			fail("the held bytes are not the stream's", r);
	}
}

/* The end of the next span: everything arrived or the chunk, or with
 * F_PARTIAL a length from the tape; never short of what was given. */
static size_t
span_end(struct run *r)
{
	size_t end = r->fed, i;

	for (i = 0; r->by_chunk && i < r->nchunks; i++) {
		if (r->chunk_end[i] > r->pos) {
			end = r->chunk_end[i];
			break;
		}
	}

	if ((r->in->flags & F_PARTIAL) && r->budget > 0 && tape_bits(r, 1)) {
		r->budget--;
		end = r->pos + (r->fed - r->pos) * tape_bits(r, 3) / 7;
	}
	if (end > r->fed)
		end = r->fed;
	return end > r->passed ? end : r->passed;
}

/* One call of next(). */
static int
step(struct run *r, struct async_chat_framer_event *ev)
{
	size_t end = span_end(r), n = end - r->pos;
	unsigned char *copy = NULL;
	const unsigned char *span = n ? r->in->stream + r->pos : NULL;
	struct async_chat_framer_event again;
	int rc;

	if ((r->in->flags & F_COPY) && n > 0) {
		copy = malloc(n);
		if (copy == NULL)
			abort();
		memcpy(copy, span, n);
		span = copy;
	}
	if (end > r->passed)
		r->passed = end;
	rc = async_chat_framer_next(r->fr, span, n, ev);
	check_event(r, rc, ev, span, n);
	if (rc == ASYNC_CHAT_FRAMER_TOO_LONG ||
	    rc == ASYNC_CHAT_FRAMER_LENGTH_ERROR) {
		/* again with the rest: the same event, nothing taken */
		if (async_chat_framer_next(r->fr, span ? span + ev->consumed : NULL,
		        n - ev->consumed, &again) != rc ||
		    again.consumed != 0 || again.len != ev->len)
			fail("TOO_LONG or LENGTH_ERROR does not repeat", r);
	}
	if (rc == ASYNC_CHAT_FRAMER_DATA)
		on_data(r, ev);
	if (copy != NULL) {
		memset(copy, 0xA5, n);
		free(copy);
	}
	r->pos += ev->consumed;
	return rc;
}

/* What the framer has taken of a length-field frame once its header is
 * complete: the header, or the longer one recovered from there. */
static size_t
header_end(const struct fm_result *m, const struct fm_frame *f)
{
	size_t end = f->begin + f->hdr;

	if (m->recovered && m->recovered_at == f->begin &&
	    m->recovered_end > end)
		end = m->recovered_end;
	return end;
}

/* The bound was hit: check where, then raise it, drop it, or skip. */
static void
too_long(struct run *r, const struct async_chat_framer_event *ev)
{
	size_t off, len;

	model_frame(r->m, r->nframes, &off, &len);
	if (is_length(r) && r->fr->lf_phase == LF_CHECK) {
		/* a complete header announces a frame past the bound */
		if (cur_len(r) != 0 || async_chat_framer_frame_length(r->fr) != 0 ||
		    (r->nframes < r->m->n && ev->len != len))
			fail("length field's bound hit in the wrong place", r);
		/* The call that reports it takes bytes only up to the
		 * header's end; bytes an earlier terminator held back were
		 * taken before, and the header may lie among them. */
		if (r->nframes < r->m->n) {
			size_t end = header_end(r->m, &r->m->frame[r->nframes]);

			if (r->pos < end || (r->pos > end && ev->consumed > 0))
				fail("bytes past the header taken at TOO_LONG", r);
		}
	} else if (cur_len(r) != r->fr->max_frame || len <= cur_len(r) ||
	           ev->len != cur_len(r) + 1) {
		/* (a partial header handed out at the end of input counts
		 * as any frame's bytes) */
		fail("bound hit in the wrong place", r);
	}
	if ((r->in->flags & F_SKIP) && tape_bits(r, 1)) {
		if (async_chat_framer_skip(r->fr) != 0)
			fail("skip failed", r);
		r->skipping = 1;
	} else if (r->in->raise & 0x80) {
		async_chat_framer_set_max_frame(r->fr, 0);
	} else if ((is_length(r) && r->fr->lf_phase == LF_CHECK) ||
	           (r->in->raise & 0x40)) {
		async_chat_framer_set_max_frame(r->fr, ev->len);
	} else if (r->fr->max_frame < UINT64_MAX / 2) {
		async_chat_framer_set_max_frame(
		    r->fr, r->fr->max_frame + 1 + r->in->raise % 16);
	} else {
		async_chat_framer_set_max_frame(r->fr, ev->len);
	}
}

/* Frame what has arrived (or, finishing, all of it, then the held
 * bytes): act on the bound, stop at a length error.  Returns 1 when the
 * caller stopped before every byte arrived was framed. */
static int
pump(struct run *r, int finish)
{
	int stopped = 0;

	struct async_chat_framer_event ev;
	long guard = 0;
	int rc;

	for (;;) {
		if (++guard > 4 * STOP_BUDGET + 1000000)
			fail("the framer makes no progress", r);
		if (r->lerr)
			break;
		if (r->pos < r->fed || r->passed < r->fed || !finish) {
			rc = step(r, &ev);
			if (rc == ASYNC_CHAT_FRAMER_NEED_MORE) {
				if (r->pos == r->fed && !finish)
					break;
				if (r->pos == r->fed)
					r->passed = r->fed;
				continue;
			}
		} else {
			rc = async_chat_framer_finish(r->fr, &ev);
			check_event(r, rc, &ev, NULL, 0);
			if (ev.consumed != 0)
				fail("finish consumed bytes", r);
			if (rc == ASYNC_CHAT_FRAMER_NEED_MORE)
				break;
			if (rc == ASYNC_CHAT_FRAMER_DATA) {
				if (!ev.held)
					fail("finish's DATA not held", r);
				on_data(r, &ev);
			}
		}
		switch (rc) {
		case ASYNC_CHAT_FRAMER_END:
		case ASYNC_CHAT_FRAMER_SKIPPED:
			on_end(r, &ev, rc == ASYNC_CHAT_FRAMER_SKIPPED);
			if (rc == ASYNC_CHAT_FRAMER_SKIPPED)
				r->skipping = 0;
			break;
		case ASYNC_CHAT_FRAMER_TOO_LONG:
			too_long(r, &ev);
			break;
		case ASYNC_CHAT_FRAMER_LENGTH_ERROR: {
			const struct step_ex *ex = step_for(r->in, FM_LENGTH_ERROR);

			if (async_chat_framer_skip(r->fr) != -1)
				fail("skip accepted at a length error", r);
			if (!r->recovered && ex != NULL) {
				r->recovered = 1;
				apply_step(r, ex);
			} else {
				r->lerr = 1;
				/* sticky at the end of input too */
				if (async_chat_framer_finish(r->fr, &ev) !=
				    ASYNC_CHAT_FRAMER_LENGTH_ERROR)
					fail("finish forgot a length error", r);
			}
			break;
		}
		default:
			break;
		}
		if (r->budget > 0 && (r->in->flags & F_STOPS) &&
		    tape_bits(r, 1)) {
			/* the caller stops for a while: frames must not
			 * depend on it */
			r->budget--;
			if (!finish) {
				stopped = 1;
				break;
			}
		}
	}
	check_prefix(r);
	return stopped;
}

static const size_t chunk_size[16] = {
    1, 1, 1, 2, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 200, 1000};

/* Run the input on fr (new, or reset after an earlier run). */
static void
run_input(const struct input *in, const struct fm_result *m,
    struct async_chat_framer *fr)
{
	const struct step_ex *ex;
	struct async_chat_framer_event ev;
	struct run r;
	size_t i = 0;

	memset(&r, 0, sizeof(r));
	r.in = in;
	r.m = m;
	r.budget = STOP_BUDGET;
	r.fr = fr;
	r.got = malloc(in->len + 1);
	r.end = malloc((m->n + 1) * sizeof(*r.end));
	r.matched = malloc((m->n + 1) * sizeof(*r.matched));
	r.skipped = malloc((m->n + 1) * sizeof(*r.skipped));
	r.chunk_end = malloc((in->len + 1) * sizeof(*r.chunk_end));
	if (r.fr == NULL || r.got == NULL || r.end == NULL ||
	    r.matched == NULL || r.skipped == NULL || r.chunk_end == NULL)
		abort();
	ex = step_for(in, 0);
	if (ex != NULL)
		apply_step(&r, ex);
	else if (async_chat_framer_set_terminator_none(r.fr) != 0)
		fail("set_terminator_none failed", &r);
	async_chat_framer_set_max_frame(r.fr, in->bound);

	while (r.fed < in->len) {
		uint8_t d = in->nchunks ? in->chunk[i++ % in->nchunks] : 0;
		size_t n = in->nchunks ? chunk_size[d & 15] : in->len;

		if (n > in->len - r.fed)
			n = in->len - r.fed;
		r.fed += n;
		/* spans end where the chunk does, as evbuffer extents */
		r.by_chunk = (d & 0x10) != 0;
		r.chunk_end[r.nchunks++] = r.fed;
		/* Often let chunks pile up first. */
		if (!(d & 0x20) || r.fed == in->len)
			pump(&r, 0);
	}
	r.by_chunk = 0;
	while (pump(&r, 0)) /* the budget bounds the stops */
		;
	/* every terminator has been seen: all the model's frames ended */
	if (r.nframes != m->n && !r.lerr)
		fail("frames missing before the end", &r);
	pump(&r, 1);
	if (m->error) {
		if (!r.lerr || r.pos != m->err_off + m->err_len ||
		    r.nframes != m->n || cur_len(&r) != 0)
			fail("the length error differs from the model's", &r);
	} else if (r.lerr || r.pos != in->len || held(&r) != 0 ||
	           r.nframes != m->n ||
	           (!r.skipping && cur_len(&r) != m->tail_len)) {
		fail("the tail differs from the model's", &r);
	}
	/* Finishing again changes nothing. */
	if (!r.lerr && (async_chat_framer_finish(r.fr, &ev) !=
	                       ASYNC_CHAT_FRAMER_NEED_MORE ||
	                   r.nframes != m->n))
		fail("a second finish changed something", &r);

	free(r.got);
	free(r.end);
	free(r.matched);
	free(r.skipped);
	free(r.chunk_end);
}

/* The length-field encoder on the script's specs: its header, decoded by
 * a framer, announces the payload; its errors are as documented. */
static void
check_encode(const struct input *in)
{
	unsigned char h[64];
	size_t i, k;

	for (i = 0; i < in->nsteps; i++) {
		const struct fm_term *t = &in->ex[i].step.term;
		struct async_chat_length_field lf;
		struct async_chat_framer *fr;
		struct async_chat_framer_event ev;
		struct async_chat_terminator got;
		uint64_t payload = in->len * 37 + i * 1000003u;
		ev_ssize_t n;

		if (t->kind != ASYNC_CHAT_TERM_LENGTH)
			continue;
		lf = t->lf;
		if (i & 1)
			payload <<= 40;
		n = async_chat_length_field_encode(&lf, payload, h, sizeof(h));
		if (n < 0) {
			if (errno != ERANGE)
				abort();
			continue;
		}
		for (k = 0; k < lf.offset; k++)
			if (h[k] != 0)
				abort();
		errno = 0;
		if (async_chat_length_field_encode(&lf, payload, h,
		        (size_t)n - 1) != -1 || errno != ENOBUFS)
			abort();
		if (payload > UINT64_MAX - (uint64_t)n)
			continue;
		lf.strip = (uint64_t)n;
		fr = async_chat_framer_new();
		if (fr == NULL ||
		    async_chat_framer_set_terminator_length(fr, &lf) != 0)
			abort();
		k = (size_t)async_chat_framer_next(fr, h, (size_t)n, &ev);
		async_chat_framer_get_terminator(fr, &got);
		if (ev.consumed != (size_t)n ||
		    k != (payload ? ASYNC_CHAT_FRAMER_NEED_MORE
		                  : ASYNC_CHAT_FRAMER_END) ||
		    got.count != payload) {
			fprintf(stderr, "fuzz_framer: encode round trip of "
			                "%llu\n",
			    (unsigned long long)payload);
			abort();
		}
		async_chat_framer_free(fr);
	}
}

/* Arguments the API refuses, once per process. */
static void
check_refusals(void)
{
	static int done;
	struct async_chat_framer *fr;
	struct async_chat_framer_event ev;
	struct async_chat_terminator t;
	struct async_chat_length_field lf;
	const void *alt[1] = {"x"};
	size_t len[1] = {1}, zero[1] = {0};
	unsigned char out[16];

	if (done++)
		return;
	fr = async_chat_framer_new();
	memset(&lf, 0, sizeof(lf));
	if (fr == NULL ||
	    async_chat_framer_next(NULL, NULL, 0, &ev) != -1 ||
	    async_chat_framer_next(fr, NULL, 1, &ev) != -1 ||
	    async_chat_framer_finish(fr, NULL) != -1 ||
	    async_chat_framer_get_terminator(NULL, &t) != -1 ||
	    async_chat_framer_set_max_frame(NULL, 1) != -1 ||
	    async_chat_framer_skip(NULL) != -1 ||
	    async_chat_framer_set_terminator(NULL, "x", 1) != -1 ||
	    async_chat_framer_set_terminator(fr, NULL, 1) != -1 ||
	    async_chat_framer_set_terminator_count(NULL, 1) != -1 ||
	    async_chat_framer_set_terminator_none(NULL) != -1 ||
	    async_chat_framer_set_terminator_line(NULL) != -1 ||
	    async_chat_framer_set_terminators(NULL, alt, len, 1) != -1 ||
	    async_chat_framer_set_terminators(fr, alt, zero, 1) != -1 ||
	    async_chat_framer_set_terminator_length(NULL, &lf) != -1 ||
	    async_chat_length_field_encode(&lf, 1, NULL, 16) != -1)
		abort();
	lf.reserved[0] = 1;
	if (async_chat_framer_set_terminator_length(fr, &lf) != -1 ||
	    async_chat_length_field_encode(&lf, 1, out, 16) != -1)
		abort();
	async_chat_framer_free(fr);
	async_chat_framer_free(NULL);
	async_chat_framer_reset(NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct input in;
	struct fm_result m;

	struct async_chat_framer *fr;

	check_refusals();
	decode(data, size, &in);
	if (fm_run(in.steps, in.nsteps, in.stream, in.len, &m) != 0)
		abort();
	fr = async_chat_framer_new();
	if (fr == NULL)
		abort();
	run_input(&in, &m, fr);
	/* The same framer, reset, frames the input again alike. */
	async_chat_framer_reset(fr);
	run_input(&in, &m, fr);
	async_chat_framer_free(fr);
	check_encode(&in);
	fm_result_free(&m);
	free(in.stream);
	return 0;
}
