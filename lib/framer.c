/*
 * framer.c - splits an evbuffer into frames by the current terminator.
 * Scanning is incremental: a KMP automaton carries the partial match from
 * one read to the next, so no byte is scanned twice under one terminator
 * and a long frame in tiny reads costs the same per byte as in big reads.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"

#define PEEK_VECS 16

/* The patterns of the current terminator. */
static struct framer_pattern *
patterns(struct framer *fr)
{
	return fr->kind == ASYNC_CHAT_TERM_ANY ? fr->many : &fr->one;
}

static void
reset_scan(struct framer *fr)
{
	struct framer_pattern *pat = patterns(fr);
	size_t i;

	fr->held = 0;
	for (i = 0; i < fr->npat; i++)
		pat[i].state = 0;
}

void
async_chat__framer_init(struct framer *fr)
{
	memset(fr, 0, sizeof(*fr));
	fr->kind = ASYNC_CHAT_TERM_NONE;
}

void
async_chat__framer_clear(struct framer *fr)
{
	size_t i;

	free(fr->one.border);
	for (i = 0; i < fr->many_cap; i++)
		free(fr->many[i].border);
	free(fr->many);
	async_chat__framer_init(fr);
}

/* Copy term into p (reusing its memory when it fits) and build the border
 * table: border[k] is the length of the longest proper prefix of
 * term[0..k) that is also its suffix. */
static int
pattern_set(struct framer_pattern *p, const unsigned char *term, size_t len)
{
	size_t k, b;

	if (len > p->cap) {
		uint32_t *border = malloc((len + 1) * sizeof(*border) + len);

		if (border == NULL) {
			errno = ENOMEM;
			return -1;
		}
		/* The old bytes stay readable until they are copied: term
		 * cannot be longer than they are, so it is not in them. */
		free(p->border);
		p->border = border;
		p->bytes = (unsigned char *)(border + len + 1);
		p->cap = (uint32_t)len;
	}
	/* term may be (part of) these very bytes, as async_chat__framer_get() gave them */
	memmove(p->bytes, term, len);
	term = p->bytes; /* the move may have overwritten the source */
	p->len = (uint32_t)len;
	p->state = 0;
	p->border[0] = 0;
	p->border[1] = 0;
	b = 0;
	for (k = 1; k < len; k++) {
		while (b > 0 && term[k] != term[b])
			b = p->border[b];
		if (term[k] == term[b])
			b++;
		p->border[k + 1] = (uint32_t)b;
	}
	return 0;
}

/* Make room for n alternatives, keeping those there; the first-byte
 * bitmap lives after them in the same allocation. */
#define FIRST_BITMAP (256 / 8)

static int
reserve_patterns(struct framer *fr, size_t n)
{
	struct framer_pattern *pat;

	if (n <= fr->many_cap)
		return 0;
	pat = realloc(fr->many, n * sizeof(*pat) + FIRST_BITMAP);
	if (pat == NULL) {
		errno = ENOMEM;
		return -1;
	}
	memset(pat + fr->many_cap, 0, (n - fr->many_cap) * sizeof(*pat));
	fr->many = pat;
	fr->many_cap = (uint8_t)n;
	fr->first = (unsigned char *)(pat + n);
	return 0;
}

static void
changed(struct framer *fr, enum async_chat_terminator_kind kind, size_t npat)
{
	fr->kind = kind;
	fr->npat = npat;
	fr->matched = 0;
	fr->term_gen++;
	reset_scan(fr);
}

int
async_chat__framer_set_string(struct framer *fr, const void *term, size_t len)
{
	if (len == 0) {
		async_chat__framer_set_none(fr);
		return 0;
	}
	if (term == NULL || len > ASYNC_CHAT_TERMINATOR_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (pattern_set(&fr->one, term, len) < 0) {
		async_chat__framer_set_none(fr);
		return -1;
	}
	changed(fr, ASYNC_CHAT_TERM_STRING, 1);
	return 0;
}

int
async_chat__framer_set_count(struct framer *fr, uint64_t count)
{
	if (count == 0) {
		async_chat__framer_set_none(fr);
		return 0;
	}
	changed(fr, ASYNC_CHAT_TERM_COUNT, 0);
	fr->count = count;
	return 0;
}

void
async_chat__framer_set_none(struct framer *fr)
{
	changed(fr, ASYNC_CHAT_TERM_NONE, 0);
	fr->count = 0;
}

void
async_chat__framer_set_line(struct framer *fr)
{
	changed(fr, ASYNC_CHAT_TERM_LINE, 0);
	fr->count = 0;
}

int
async_chat__framer_set_any(struct framer *fr, const void *const *terms, const size_t *lens,
    size_t n)
{
	size_t i;

	if (terms == NULL || lens == NULL || n == 0 ||
	    n > ASYNC_CHAT_ALTERNATIVES_MAX) {
		errno = EINVAL;
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (terms[i] == NULL || lens[i] == 0 ||
		    lens[i] > ASYNC_CHAT_TERMINATOR_MAX) {
			errno = EINVAL;
			return -1;
		}
	}
	/* Build into the slots; on failure leave the framer with no
	 * terminator rather than half of a set.  (async_chat__framer_get() hands out
	 * only a string's bytes, which live apart, so a caller passing them
	 * back as an alternative reads memory this does not touch.) */
	if (reserve_patterns(fr, n) < 0) {
		async_chat__framer_set_none(fr);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (pattern_set(&fr->many[i], terms[i], lens[i]) < 0) {
			async_chat__framer_set_none(fr);
			return -1;
		}
	}
	memset(fr->first, 0, FIRST_BITMAP);
	for (i = 0; i < n; i++) {
		unsigned char c = fr->many[i].bytes[0];
		fr->first[c >> 3] |= (unsigned char)(1u << (c & 7));
	}
	changed(fr, ASYNC_CHAT_TERM_ANY, n);
	fr->count = 0;
	return 0;
}

void
async_chat__framer_get(const struct framer *fr, struct async_chat_terminator *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = fr->kind;
	switch (fr->kind) {
	case ASYNC_CHAT_TERM_STRING:
		out->bytes = fr->one.bytes;
		out->len = fr->one.len;
		break;
	case ASYNC_CHAT_TERM_COUNT:
		out->count = fr->count;
		break;
	case ASYNC_CHAT_TERM_LINE:
		out->alternatives = 2;
		break;
	case ASYNC_CHAT_TERM_ANY:
		out->alternatives = fr->npat;
		break;
	case ASYNC_CHAT_TERM_NONE:
		break;
	}
}

void
async_chat__framer_discard(struct framer *fr)
{
	fr->input_gen++;
	fr->frame_bytes = 0;
	fr->found_owed = 0;
	reset_scan(fr);
}

/*
 * Scanners.  Each looks at the input from offset fr->held on, carrying the
 * automaton state in the patterns.  On a match it sets *frame_len and
 * *term_len and returns 1; otherwise it records how many trailing bytes
 * may still begin a terminator in fr->held and returns 0.
 */

/* Visit the bytes of in from offset start, in contiguous spans. */
#define FOR_EACH_SPAN(in, start, base, n, ...)                                 \
	do {                                                                   \
		struct evbuffer_ptr ptr_;                                      \
		struct evbuffer_iovec v_[PEEK_VECS];                           \
		size_t at_ = (start);                                          \
		int nv_, i_, more_ = 1;                                        \
		while (more_ && at_ < evbuffer_get_length(in)) {               \
			if (evbuffer_ptr_set((in), &ptr_, at_,                 \
				EVBUFFER_PTR_SET) < 0)                         \
				break;                                         \
			nv_ = evbuffer_peek((in), -1, &ptr_, v_, PEEK_VECS);   \
			if (nv_ <= 0)                                          \
				break;                                         \
			/* Asked for everything (len -1), evbuffer_peek()  \
			 * reports at most PEEK_VECS extents, never more:  \
			 * a full batch may not be the end of the input. */\
			more_ = nv_ >= PEEK_VECS;                              \
			if (nv_ > PEEK_VECS)                                   \
				nv_ = PEEK_VECS;                               \
			for (i_ = 0; i_ < nv_; i_++) {                         \
				const unsigned char *base =                    \
				    v_[i_].iov_base;                           \
				size_t n = v_[i_].iov_len;                     \
				__VA_ARGS__;                                   \
				at_ += n;                                      \
			}                                                      \
		}                                                              \
	} while (0)

static int
scan_string(struct framer *fr, struct evbuffer *in, size_t *frame_len,
    size_t *term_len)
{
	struct framer_pattern *p = &fr->one;
	const unsigned char *t = p->bytes;
	const size_t len = p->len;
	size_t state = p->state;
	size_t end = 0;

	FOR_EACH_SPAN(in, fr->held, base, n, {
		size_t i = 0;
		while (i < n) {
			if (state == 0) {
				const unsigned char *q =
				    memchr(base + i, t[0], n - i);
				if (q == NULL) {
					i = n;
					break;
				}
				i = (size_t)(q - base) + 1;
				state = 1;
			} else {
				unsigned char c = base[i++];
				while (state > 0 && t[state] != c)
					state = p->border[state];
				if (t[state] == c)
					state++;
			}
			if (state == len) {
				end = at_ + i;
				goto found;
			}
		}
	});
	p->state = state;
	fr->held = state;
	return 0;
found:
	*frame_len = end - len;
	*term_len = len;
	fr->matched = 0;
	return 1;
}

static int
scan_line(struct framer *fr, struct evbuffer *in, size_t *frame_len,
    size_t *term_len)
{
	int cr = fr->held != 0;

	FOR_EACH_SPAN(in, fr->held, base, n, {
		const unsigned char *q = memchr(base, '\n', n);
		if (q != NULL) {
			size_t i = (size_t)(q - base);
			if (i > 0)
				cr = base[i - 1] == '\r';
			*term_len = cr ? 2 : 1;
			*frame_len = at_ + i + 1 - *term_len;
			fr->matched = cr ? 0 : 1;
			return 1;
		}
		if (n > 0) /* an empty chain: the last byte is before it */
			cr = base[n - 1] == '\r';
	});
	fr->held = cr ? 1 : 0;
	return 0;
}

static int
scan_any(struct framer *fr, struct evbuffer *in, size_t *frame_len,
    size_t *term_len)
{
	struct framer_pattern *pat = fr->many;
	const size_t npat = fr->npat;
	size_t active = 0, j;

	for (j = 0; j < npat; j++)
		active |= pat[j].state;

	FOR_EACH_SPAN(in, fr->held, base, n, {
		size_t i;
		for (i = 0; i < n; i++) {
			unsigned char c = base[i];
			size_t best = 0, best_len = 0;
			if (active == 0 &&
			    !(fr->first[c >> 3] & (1u << (c & 7))))
				continue;
			active = 0;
			for (j = 0; j < npat; j++) {
				struct framer_pattern *p = &pat[j];
				size_t s = p->state;
				while (s > 0 && p->bytes[s] != c)
					s = p->border[s];
				if (p->bytes[s] == c)
					s++;
				if (s == p->len) {
					if (p->len > best_len) {
						best = j;
						best_len = p->len;
					}
					s = p->border[s];
				}
				p->state = s;
				active |= s;
			}
			if (best_len > 0) {
				*frame_len = at_ + i + 1 - best_len;
				*term_len = best_len;
				fr->matched = (int)best;
				return 1;
			}
		}
	});
	fr->held = 0;
	for (j = 0; j < npat; j++)
		if (pat[j].state > fr->held)
			fr->held = pat[j].state;
	return 0;
}

/* How many of want bytes the frame bound lets through. */
static size_t
allowance(const struct framer *fr, size_t want)
{
	uint64_t room;

	if (fr->max_frame == 0)
		return want;
	room = fr->frame_bytes >= fr->max_frame ?
	    0 : fr->max_frame - fr->frame_bytes;
	return room < want ? (size_t)room : want;
}

/* Give len bytes to the sink; *moved says how many it took.  Returns
 * FRAMER_IDLE to go on. */
static enum framer_status
deliver(struct framer *fr, struct evbuffer *in, size_t len,
    const struct framer_sink *sink, void *ctx, size_t *moved)
{
	unsigned input_gen = fr->input_gen;
	size_t before = evbuffer_get_length(in);
	int rc;

	*moved = 0;
	if (len == 0)
		return FRAMER_IDLE;
	rc = sink->data(ctx, in, len);
	if (fr->input_gen != input_gen)
		return FRAMER_STOPPED;
	*moved = before - evbuffer_get_length(in);
	fr->frame_bytes += *moved;
	if (*moved != len) {
		/* The front of the input is still a frame boundary for the
		 * scan: what was moved lay before any possible match. */
		reset_scan(fr);
		return rc ? FRAMER_STOPPED : FRAMER_NOMEM;
	}
	return rc ? FRAMER_STOPPED : FRAMER_IDLE;
}

/* Deliver up to len bytes under the frame bound. */
static enum framer_status
deliver_bounded(struct framer *fr, struct evbuffer *in, size_t len,
    const struct framer_sink *sink, void *ctx)
{
	size_t done = 0, ok, moved;
	enum framer_status st = FRAMER_IDLE;

	/* In steps: a bound raised inside data() lets the rest through
	 * instead of reporting a frame too long for the old bound. */
	while (done < len && st == FRAMER_IDLE &&
	    (ok = allowance(fr, len - done)) > 0) {
		st = deliver(fr, in, ok, sink, ctx, &moved);
		done += ok;
	}
	/* Cut short by the bound, the front of the input is not the held
	 * tail any more, even when the sink also asked to stop. */
	if (done < len)
		reset_scan(fr);
	if (st != FRAMER_IDLE)
		return st;
	if (done < len)
		return FRAMER_TOO_LONG;
	return FRAMER_IDLE;
}

static enum framer_status
end_frame(struct framer *fr, struct evbuffer *in, size_t term_len,
    const struct framer_sink *sink, void *ctx)
{
	evbuffer_drain(in, term_len);
	fr->frame_bytes = 0;
	return sink->found(ctx) ? FRAMER_STOPPED : FRAMER_IDLE;
}

/* A terminator was found after frame_len bytes: deliver them, consume
 * the terminator and end the frame.  Once the last frame byte is taken the
 * frame has ended, as a count's does: if data() stopped the scan there,
 * the terminator is consumed now and found() is owed to the next feed, so
 * a terminator set meanwhile applies after it, never to it. */
static enum framer_status
take_frame(struct framer *fr, struct evbuffer *in, size_t frame_len,
    size_t term_len, const struct framer_sink *sink, void *ctx)
{
	unsigned input_gen = fr->input_gen;
	size_t ok = 0, moved = 0, step, took;
	enum framer_status st = FRAMER_IDLE;

	reset_scan(fr);
	/* In steps, as in deliver_bounded(): a bound raised inside data()
	 * lets the rest of the frame through. */
	while (ok < frame_len && st == FRAMER_IDLE &&
	    (step = allowance(fr, frame_len - ok)) > 0) {
		st = deliver(fr, in, step, sink, ctx, &took);
		ok += step;
		moved += took;
	}
	if (fr->input_gen != input_gen)
		return FRAMER_STOPPED; /* discarded, terminator and all */
	if (st == FRAMER_STOPPED && moved == frame_len) {
		evbuffer_drain(in, term_len);
		fr->frame_bytes = 0;
		fr->found_owed = 1;
		return st;
	}
	if (st != FRAMER_IDLE)
		return st;
	if (ok < frame_len) {
		reset_scan(fr);
		return FRAMER_TOO_LONG;
	}
	return end_frame(fr, in, term_len, sink, ctx);
}

static enum framer_status
feed_count(struct framer *fr, struct evbuffer *in, size_t avail,
    const struct framer_sink *sink, void *ctx)
{
	size_t take = fr->count < avail ? (size_t)fr->count : avail;
	size_t ok = allowance(fr, take), moved;
	unsigned term_gen = fr->term_gen, input_gen = fr->input_gen;
	int last = ok == fr->count; /* these bytes end the frame */
	enum framer_status st;

	if (ok == 0)
		return FRAMER_TOO_LONG;
	/* Count down first, so that get_terminator inside collect reports
	 * what is still missing and a terminator set there is kept. */
	fr->count -= ok;
	st = deliver(fr, in, ok, sink, ctx, &moved);
	/* Give back what was not taken; after a discard the count stays
	 * where collect saw it, the dropped bytes spent. */
	if (fr->term_gen == term_gen && fr->input_gen == input_gen)
		fr->count += ok - moved;
	/* Once its last byte is taken the frame has ended, even if data()
	 * set another terminator (as a string's frame ends after its last
	 * collect) or asked to stop (found() is then owed). */
	if (last && moved == ok && fr->input_gen == input_gen) {
		if (st != FRAMER_IDLE) {
			fr->found_owed = 1;
			return st;
		}
		fr->frame_bytes = 0;
		return sink->found(ctx) ? FRAMER_STOPPED : FRAMER_IDLE;
	}
	if (st != FRAMER_IDLE)
		return st;
	/* unless data() raised the bound: then the count goes on */
	if (ok < take && allowance(fr, 1) == 0)
		return FRAMER_TOO_LONG;
	return FRAMER_IDLE;
}

/*
 * The fast path, for line mode and string terminators of at most
 * FAST_TERM_MAX bytes with nothing held back: every frame that lies whole
 * in the first extent of the input goes to bytes() as a pointer, and the
 * input is drained once for all of them.  A frame that reaches past the
 * extent is left to the incremental scanner.  A naive search is linear
 * here because the terminator is short.
 */
#define FAST_TERM_MAX 16

static int
fast_kind(const struct framer *fr)
{
	return fr->held == 0 &&
	    (fr->kind == ASYNC_CHAT_TERM_LINE ||
		(fr->kind == ASYNC_CHAT_TERM_STRING &&
		    fr->one.len <= FAST_TERM_MAX));
}

/* Find the next terminator in base[pos..n): its start and length. */
static int
find_in_extent(struct framer *fr, const unsigned char *base, size_t pos,
    size_t n, size_t *start, size_t *term_len)
{
	const unsigned char *p = base + pos, *end = base + n, *q;

	if (fr->kind == ASYNC_CHAT_TERM_LINE) {
		q = memchr(p, '\n', (size_t)(end - p));
		if (q == NULL)
			return 0;
		*term_len = q > p && q[-1] == '\r' ? 2 : 1;
		*start = (size_t)(q - base) + 1 - *term_len;
		fr->matched = *term_len == 2 ? 0 : 1;
		return 1;
	} else {
		const unsigned char *t = fr->one.bytes;
		size_t len = fr->one.len;

		while ((q = memchr(p, t[0], (size_t)(end - p))) != NULL) {
			if ((size_t)(end - q) < len)
				return 0; /* may go on in the next extent */
			if (memcmp(q + 1, t + 1, len - 1) == 0) {
				*start = (size_t)(q - base);
				*term_len = len;
				fr->matched = 0;
				return 1;
			}
			p = q + 1;
		}
		return 0;
	}
}

/* *progress says whether any input was consumed; without it the caller
 * scans incrementally. */
static enum framer_status
feed_extent(struct framer *fr, struct evbuffer *in,
    const struct framer_sink *sink, void *ctx, int *progress)
{
	const unsigned term_gen = fr->term_gen, input_gen = fr->input_gen;
	struct evbuffer_iovec v;
	const unsigned char *base;
	size_t pos = 0, start, term_len;
	enum framer_status st = FRAMER_IDLE;
	int rc;

	*progress = 0;
	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return FRAMER_IDLE;
	base = v.iov_base;
	while (find_in_extent(fr, base, pos, v.iov_len, &start, &term_len)) {
		size_t frame_len = start - pos;

		if (allowance(fr, frame_len) < frame_len)
			break; /* the incremental scanner reports it */
		if (frame_len > 0) {
			rc = sink->bytes(ctx, base + pos, frame_len);
			if (fr->input_gen != input_gen)
				return FRAMER_STOPPED; /* discarded */
			if (rc < 0) {
				st = FRAMER_NOMEM;
				break;
			}
			if (rc > 0) {
				/* The frame has ended: found() is owed. */
				fr->found_owed = 1;
				pos = start + term_len;
				st = FRAMER_STOPPED;
				break;
			}
		}
		pos = start + term_len;
		fr->frame_bytes = 0;
		rc = sink->found(ctx);
		if (fr->input_gen != input_gen)
			return FRAMER_STOPPED;
		if (rc) {
			st = FRAMER_STOPPED;
			break;
		}
		if (fr->term_gen != term_gen)
			break; /* a callback set a terminator */
	}
	if (pos > 0) {
		evbuffer_drain(in, pos);
		*progress = 1;
	}
	return st;
}

enum framer_status
async_chat__framer_feed(struct framer *fr, struct evbuffer *in,
    const struct framer_sink *sink, void *ctx)
{
	if (fr->found_owed) {
		fr->found_owed = 0;
		fr->frame_bytes = 0;
		if (sink->found(ctx))
			return FRAMER_STOPPED;
	}
	for (;;) {
		size_t avail = evbuffer_get_length(in);
		size_t frame_len = 0, term_len = 0;
		enum framer_status st;
		int found;

		if (avail <= fr->held)
			return FRAMER_IDLE;
		if (sink->bytes != NULL && fast_kind(fr)) {
			int progress;

			st = feed_extent(fr, in, sink, ctx, &progress);
			if (st != FRAMER_IDLE)
				return st;
			if (progress)
				continue;
		}
		switch (fr->kind) {
		case ASYNC_CHAT_TERM_NONE:
			st = deliver_bounded(fr, in, avail, sink, ctx);
			if (st != FRAMER_IDLE)
				return st;
			continue;
		case ASYNC_CHAT_TERM_COUNT:
			if (fr->count == 0) /* spent: frames like none */
				st = deliver_bounded(fr, in, avail, sink, ctx);
			else
				st = feed_count(fr, in, avail, sink, ctx);
			if (st != FRAMER_IDLE)
				return st;
			continue;
		case ASYNC_CHAT_TERM_STRING:
			found = scan_string(fr, in, &frame_len, &term_len);
			break;
		case ASYNC_CHAT_TERM_LINE:
			found = scan_line(fr, in, &frame_len, &term_len);
			break;
		case ASYNC_CHAT_TERM_ANY:
		default:
			found = scan_any(fr, in, &frame_len, &term_len);
			break;
		}
		if (!found) {
			/* Everything before the held-back tail is frame. */
			st = deliver_bounded(fr, in, avail - fr->held, sink,
			    ctx);
			if (st != FRAMER_IDLE)
				return st;
			/* The held bytes keep their scan state unless a
			 * callback set a terminator, which rescans them. */
			continue;
		} else {
			st = take_frame(fr, in, frame_len, term_len, sink,
			    ctx);
			if (st != FRAMER_IDLE)
				return st;
		}
	}
}

enum framer_status
async_chat__framer_finish(struct framer *fr, struct evbuffer *in,
    const struct framer_sink *sink, void *ctx)
{
	enum framer_status st = async_chat__framer_feed(fr, in, sink, ctx);
	size_t rest;

	if (st != FRAMER_IDLE)
		return st;
	rest = evbuffer_get_length(in);
	reset_scan(fr);
	if (rest == 0)
		return FRAMER_IDLE;
	/* Only a held-back terminator prefix can be left here. */
	return deliver_bounded(fr, in, rest, sink, ctx);
}
