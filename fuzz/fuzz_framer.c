/*
 * fuzz_framer.c - libFuzzer target: libasynchat's framer against the
 * byte-at-a-time reference model (test/framer_model.c).  The input gives a
 * terminator script, a frame bound, sink stops, a chunking and a stream;
 * any difference in frames, matched alternatives, tail or status aborts.
 *
 * Input layout (every field is optional: a short input reads as zeros):
 *   flags, alphabet, nsteps, steps..., [bound, raise], [stop tape], chunk
 *   plan, stream (the rest of the input).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "framer.h"
#include "framer_model.h"

#define MAX_STEPS 16
#define MAX_TERM 8
#define MAX_TAPE 32
#define MAX_CHUNKS 64
/* Sink stops and partial takes allowed per input, so that a tape that
 * always stops cannot keep the framer from finishing. */
#define STOP_BUDGET 4096

enum {
	F_BOUND = 1 << 0,   /* a frame bound, raised when hit or in data() */
	F_ALPHA = 1 << 1,   /* map terminators and stream to a few bytes */
	F_STOPS = 1 << 2,   /* data() and found() stop as the tape says */
	F_PARTIAL = 1 << 3, /* data() sometimes moves too little (NOMEM) */
	F_ALIAS = 1 << 4,   /* set terminators from async_chat__framer_get()'s bytes */
	F_FAST = 1 << 5     /* the sink has bytes(): the framer's fast path */
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
	b = rd_u8(r);
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
 * The framer under test and a sink recording what it delivers.
 */

struct run {
	const struct input *in;
	struct framer fr;
	struct evbuffer *buf;
	unsigned char *got; /* every byte delivered, frames end to end */
	size_t ngot;
	size_t *end; /* frame i is got[end[i-1]..end[i]) */
	int *matched;
	size_t nframes;
	size_t fed; /* stream bytes added to buf */
	size_t tape_bit;
	int budget;
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
	    "none", "string", "count", "line", "any"};
	const struct input *in = r->in;
	size_t i, j, start = 0;

	fprintf(stderr, "flags 0x%x bound %llu raise %u chunks %zu\n",
	    in->flags, (unsigned long long)in->bound, in->raise, in->nchunks);
	for (i = 0; i < in->nsteps; i++) {
		const struct fm_term *t = &in->ex[i].step.term;

		fprintf(stderr, "step frame %zu: %s count %llu\n",
		    in->ex[i].step.frame, kind[t->kind],
		    (unsigned long long)t->count);
		for (j = 0; j < t->n; j++)
			dump_bytes("  term", t->bytes[j], t->len[j]);
	}
	dump_bytes("stream", in->stream, in->len);
	for (i = 0; i < r->m->n; i++)
		dump_bytes("model frame", in->stream + r->m->frame[i].off,
		    r->m->frame[i].len);
	dump_bytes("model tail", in->stream + r->m->tail_off, r->m->tail_len);
	for (i = 0; i < r->nframes; i++) {
		dump_bytes("framer frame", r->got + start, r->end[i] - start);
		start = r->end[i];
	}
	dump_bytes("framer cur", r->got + start, r->ngot - start);
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

static void
apply_string(struct run *r, const struct step_ex *ex)
{
	const struct fm_term *t = &ex->step.term;

	if (ex->alias_full != NULL) {
		struct async_chat_terminator got;
		size_t cut = ex->alias_len - t->len[0];

		/* The framer must copy a terminator out of its own
		 * storage without reading what it overwrites. */
		if (async_chat__framer_set_string(&r->fr, ex->alias_full, ex->alias_len) !=
		    0)
			fail("set_string (alias) failed", r);
		async_chat__framer_get(&r->fr, &got);
		if (async_chat__framer_set_string(&r->fr,
		        (const unsigned char *)got.bytes + cut, t->len[0]) != 0)
			fail("set_string from own bytes failed", r);
	} else if (async_chat__framer_set_string(&r->fr, t->bytes[0], t->len[0]) != 0) {
		fail("set_string failed", r);
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

		if (async_chat__framer_set_string(&r->fr, t->bytes[ex->alias_idx],
		        t->len[ex->alias_idx]) != 0)
			fail("set_string before alias failed", r);
		async_chat__framer_get(&r->fr, &got);
		alt[ex->alias_idx] = got.bytes;
	}
	if (async_chat__framer_set_any(&r->fr, alt, t->len, t->n) != 0)
		fail("set_any failed", r);
}

/* Set the terminator of step ex, as found_terminator would. */
static void
apply_step(struct run *r, const struct step_ex *ex)
{
	const struct fm_term *t = &ex->step.term;
	struct async_chat_terminator got;

	switch (t->kind) {
	case ASYNC_CHAT_TERM_NONE:
		if (ex->none_how == 0)
			async_chat__framer_set_none(&r->fr);
		else if ((ex->none_how == 1
		                 ? async_chat__framer_set_count(&r->fr, 0)
		                 : async_chat__framer_set_string(&r->fr, "", 0)) != 0)
			fail("setting a none terminator failed", r);
		break;
	case ASYNC_CHAT_TERM_COUNT:
		if (async_chat__framer_set_count(&r->fr, t->count) != 0)
			fail("set_count failed", r);
		break;
	case ASYNC_CHAT_TERM_STRING:
		apply_string(r, ex);
		break;
	case ASYNC_CHAT_TERM_LINE:
		async_chat__framer_set_line(&r->fr);
		break;
	case ASYNC_CHAT_TERM_ANY:
		apply_any(r, ex);
		break;
	}
	r->term = t;
	r->count_set = t->kind == ASYNC_CHAT_TERM_COUNT ? t->count : 0;
	r->count_spent = 0;
	/* What get_terminator reports right after a set. */
	async_chat__framer_get(&r->fr, &got);
	if (got.kind != t->kind || got.count != t->count ||
	    (t->kind == ASYNC_CHAT_TERM_STRING &&
	        (got.len != t->len[0] ||
	            memcmp(got.bytes, t->bytes[0], got.len) != 0)) ||
	    (t->kind == ASYNC_CHAT_TERM_ANY && got.alternatives != t->n) ||
	    r->fr.matched != 0)
		fail("async_chat__framer_get disagrees with the terminator set", r);
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

static int
sink_data(void *ctx, struct evbuffer *buf, size_t len)
{
	struct run *r = ctx;
	struct async_chat_terminator t;
	size_t take = len;
	int rc = 0;

	if (len == 0 || len > evbuffer_get_length(buf))
		fail("data() with 0 bytes or more than the input", r);
	/* A count reports, inside data(), what is missing after these
	 * bytes: the frame so far, these bytes and that make the count. */
	async_chat__framer_get(&r->fr, &t);
	if (t.kind == ASYNC_CHAT_TERM_COUNT && !r->count_spent &&
	    cur_len(r) + len + t.count != r->count_set)
		fail("count inside data() is not what is missing", r);
	/* Raised inside data(), the bound lets the rest of these bytes
	 * through without a frame-too-long for the old one. */
	if (r->fr.max_frame != 0 && tape_bits(r, 2) == 3)
		r->fr.max_frame += 1 + tape_bits(r, 3);
	if (r->budget > 0 && (r->in->flags & F_STOPS) && tape_bits(r, 1)) {
		/* stop after part of the bytes, maybe none */
		take = len * tape_bits(r, 3) / 7;
		rc = 1;
		r->budget--;
	} else if (r->budget > 0 && (r->in->flags & F_PARTIAL) &&
	           tape_bits(r, 2) == 3) {
		/* moved too little: the framer reports NOMEM */
		take = len * tape_bits(r, 3) / 8;
		r->budget--;
	}
	if (take > 0 &&
	    evbuffer_remove(buf, r->got + r->ngot, take) != (int)take)
		fail("evbuffer_remove", r);
	r->ngot += take;
	return rc;
}

static int
sink_found(void *ctx)
{
	struct run *r = ctx;
	const struct step_ex *ex;
	size_t n = r->nframes;

	r->end[n] = r->ngot;
	r->matched[n] = r->fr.matched;
	r->nframes++;
	if (r->nframes > r->m->n)
		fail("more frames than the model", r);
	if (r->fr.max_frame != 0 &&
	    r->end[n] - (n ? r->end[n - 1] : 0) > r->fr.max_frame)
		fail("a frame passed the bound", r);
	ex = step_for(r->in, r->nframes);
	if (ex != NULL)
		apply_step(r, ex);
	else if (r->term != NULL && r->term->kind == ASYNC_CHAT_TERM_COUNT)
		r->count_spent = 1;
	if (r->budget > 0 && (r->in->flags & F_STOPS) && tape_bits(r, 1)) {
		r->budget--;
		return 1;
	}
	return 0;
}

/* The fast path hands whole frames lying in one extent as pointers. */
static int
sink_bytes(void *ctx, const void *p, size_t n)
{
	struct run *r = ctx;

	if (n == 0)
		fail("bytes() with 0 bytes", r);
	if (r->budget > 0 && (r->in->flags & F_PARTIAL) &&
	    tape_bits(r, 2) == 3) {
		r->budget--;
		return -1; /* could not take them: nothing recorded */
	}
	memcpy(r->got + r->ngot, p, n);
	r->ngot += n;
	if (r->budget > 0 && (r->in->flags & F_STOPS) && tape_bits(r, 1)) {
		r->budget--;
		return 1;
	}
	return 0;
}

static const struct framer_sink plain_sink = {
    .data = sink_data, .found = sink_found};
static const struct framer_sink fast_sink = {
    .data = sink_data, .found = sink_found, .bytes = sink_bytes};

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

/* The frames ended so far are the model's first ones, and the bytes of
 * the frame in progress followed by the unread input are exactly the
 * stream fed since the model's frame began. */
static void
check_prefix(struct run *r)
{
	const struct fm_result *m = r->m;
	size_t i, off, len, cur = cur_len(r), left;
	size_t start = 0;

	if (r->nframes > m->n)
		fail("more frames than the model", r);
	for (i = 0; i < r->nframes; i++) {
		size_t got = r->end[i] - start;

		if (got != m->frame[i].len ||
		    memcmp(r->got + start, r->in->stream + m->frame[i].off,
		        got) != 0)
			fail("a frame differs from the model's", r);
		if (r->matched[i] != m->frame[i].matched)
			fail("matched differs from the model's", r);
		start = r->end[i];
	}
	model_frame(m, r->nframes, &off, &len);
	left = evbuffer_get_length(r->buf);
	if (off + cur + left != r->fed)
		fail("delivered and unread bytes do not add up to the stream",
		    r);
	if (memcmp(r->got + start, r->in->stream + off, cur) != 0)
		fail("the frame in progress is not the model's", r);
	if (left > 0) {
		unsigned char *p = evbuffer_pullup(r->buf, -1);

		if (p == NULL ||
		    memcmp(p, r->in->stream + off + cur, left) != 0)
			fail("the unread input is not the stream", r);
	}
}

/* Feed (or finish) until idle: resume after stops and NOMEM, and raise
 * the bound each time it is hit. */
static void
pump(struct run *r, int finish)
{
	const struct framer_sink *sink =
	    r->in->flags & F_FAST ? &fast_sink : &plain_sink;
	enum framer_status st;
	size_t off, len;
	long guard = 0;

	for (;;) {
		st = finish ? async_chat__framer_finish(&r->fr, r->buf, sink, r)
		            : async_chat__framer_feed(&r->fr, r->buf, sink, r);
		if (st == FRAMER_IDLE)
			break;
		if (++guard > 4 * STOP_BUDGET + 100000)
			fail("the framer makes no progress", r);
		if (st == FRAMER_STOPPED || st == FRAMER_NOMEM)
			continue;
		if (st != FRAMER_TOO_LONG || r->fr.max_frame == 0)
			fail("unexpected status", r);
		/* Stopped exactly at the bound, in a frame longer than it. */
		model_frame(r->m, r->nframes, &off, &len);
		if (cur_len(r) != r->fr.max_frame || len <= cur_len(r))
			fail("bound hit in the wrong place", r);
		if (r->in->raise & 0x80)
			r->fr.max_frame = 0;
		else
			r->fr.max_frame += 1 + r->in->raise % 16;
	}
	check_prefix(r);
	/* idle: only a possible terminator prefix is left unread */
	if (!finish) {
		size_t left = evbuffer_get_length(r->buf), most = 0, i;
		const struct fm_term *t = r->term;

		if (t != NULL && t->kind == ASYNC_CHAT_TERM_LINE)
			most = 1;
		for (i = 0; t != NULL && i < t->n; i++)
			if (t->len[i] - 1 > most)
				most = t->len[i] - 1;
		if (left > most)
			fail("idle with more unread than a terminator prefix",
			    r);
	}
}

static const size_t chunk_size[16] = {
    1, 1, 1, 2, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64, 200, 1000};

static void
add_chunk(struct run *r, size_t n, uint8_t d)
{
	const unsigned char *p = r->in->stream + r->fed;

	if (d & 0x10) {
		if (evbuffer_add_reference(r->buf, p, n, NULL, NULL) != 0)
			abort();
	} else {
		/* several small chains, so the scan crosses many extents */
		if (evbuffer_add(r->buf, p, n) != 0)
			abort();
	}
	/* An empty chain at the end, as evbuffer_expand() may leave. */
	if ((d & 0x40) && evbuffer_expand(r->buf, 512) != 0)
		abort();
	r->fed += n;
}

static void
run_input(const struct input *in, const struct fm_result *m)
{
	const struct step_ex *ex;
	struct run r;
	size_t i = 0;

	memset(&r, 0, sizeof(r));
	r.in = in;
	r.m = m;
	r.budget = STOP_BUDGET;
	r.buf = evbuffer_new();
	r.got = malloc(in->len + 1);
	r.end = malloc((m->n + 1) * sizeof(*r.end));
	r.matched = malloc((m->n + 1) * sizeof(*r.matched));
	if (r.buf == NULL || r.got == NULL || r.end == NULL ||
	    r.matched == NULL)
		abort();
	async_chat__framer_init(&r.fr);
	ex = step_for(in, 0);
	if (ex != NULL)
		apply_step(&r, ex);
	r.fr.max_frame = in->bound;

	while (r.fed < in->len) {
		uint8_t d = in->nchunks ? in->chunk[i++ % in->nchunks] : 0;
		size_t n = in->nchunks ? chunk_size[d & 15] : in->len;

		if (n > in->len - r.fed)
			n = in->len - r.fed;
		add_chunk(&r, n, d);
		/* Often let chunks pile up into many chains first. */
		if (!(d & 0x20) || r.fed == in->len)
			pump(&r, 0);
	}
	pump(&r, 0);
	/* every terminator has been seen: all the model's frames ended */
	if (r.nframes != m->n)
		fail("frames missing before the end", &r);
	pump(&r, 1);
	if (evbuffer_get_length(r.buf) != 0 || cur_len(&r) != m->tail_len)
		fail("the tail differs from the model's", &r);
	/* Finishing again changes nothing. */
	if (async_chat__framer_finish(&r.fr, r.buf, &plain_sink, &r) != FRAMER_IDLE ||
	    r.nframes != m->n || cur_len(&r) != m->tail_len)
		fail("a second finish changed something", &r);

	async_chat__framer_clear(&r.fr);
	evbuffer_free(r.buf);
	free(r.got);
	free(r.end);
	free(r.matched);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct input in;
	struct fm_result m;

	decode(data, size, &in);
	if (fm_run(in.steps, in.nsteps, in.stream, in.len, &m) != 0)
		abort();
	run_input(&in, &m);
	fm_result_free(&m);
	free(in.stream);
	return 0;
}
