/*
 * framer.c - the public sans-I/O framer: state plus a span of bytes in,
 * one event out.  Scanning is incremental: a KMP automaton carries a
 * partial match from one span to the next, so no byte is scanned twice
 * under one terminator, and the few bytes held back as a possible
 * terminator prefix (or a partial length header) live in the framer, so
 * the caller never has to keep them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"

/* A pattern's bytes follow its border table. */
static unsigned char *
pat_bytes(const struct framer_pattern *p)
{
	return (unsigned char *)(p->border + p->cap + 1);
}

/* The loop in next_event() goes on after a step that made no event. */
#define GO_ON (-2)

/* Terminators up to this long are searched with memchr and memcmp when
 * nothing is held: a naive search is linear for short patterns. */
#define FAST_TERM_MAX 16

/* Forget the scan state: the held bytes are looked at again. */
static void
reset_scan(struct async_chat_framer *fr)
{
	size_t i;

	fr->scanned = 0;
	fr->one.state = 0;
	for (i = 0; fr->kind == ASYNC_CHAT_TERM_ANY && i < fr->npat; i++)
		fr->many[i].state = 0;
}

void
async_chat__framer_init(struct async_chat_framer *fr)
{
	memset(fr, 0, sizeof(*fr));
	fr->kind = ASYNC_CHAT_TERM_NONE;
	fr->carry = fr->carry_inline;
	fr->carry_cap = FRAMER_CARRY_INLINE;
}

void
async_chat__framer_clear(struct async_chat_framer *fr)
{
	size_t i;

	free(fr->one.border);
	for (i = 0; i < fr->many_cap; i++)
		free(fr->many[i].border);
	free(fr->many);
	free(fr->lf);
	if (fr->carry != fr->carry_inline)
		free(fr->carry);
	async_chat__framer_init(fr);
}

struct async_chat_framer *
async_chat_framer_new(void)
{
	struct async_chat_framer *fr = malloc(sizeof(*fr));

	if (fr == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	async_chat__framer_init(fr);
	return fr;
}

void
async_chat_framer_free(struct async_chat_framer *fr)
{
	if (fr == NULL)
		return;
	async_chat__framer_clear(fr);
	free(fr);
}

/*
 * The held bytes: carry[carry_off..carry_len), the front of the stream.
 */

static size_t
carry_rest(const struct async_chat_framer *fr)
{
	return fr->carry_len - fr->carry_off;
}

/* Room for n held bytes, kept at set time so that framing never
 * allocates. */
static int
carry_reserve(struct async_chat_framer *fr, size_t n)
{
	unsigned char *p;

	if (n <= fr->carry_cap)
		return 0;
	p = malloc(n);
	if (p == NULL) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(p, fr->carry + fr->carry_off, carry_rest(fr));
	if (fr->carry != fr->carry_inline)
		free(fr->carry);
	fr->carry_len = (uint32_t)carry_rest(fr);
	fr->carry_off = 0;
	fr->carry = p;
	fr->carry_cap = (uint32_t)n;
	return 0;
}

static void
carry_append(struct async_chat_framer *fr, const unsigned char *p, size_t n)
{
	size_t rest = carry_rest(fr);

	if (fr->carry_off > 0) {
		memmove(fr->carry, fr->carry + fr->carry_off, rest);
		fr->carry_off = 0;
		fr->carry_len = (uint32_t)rest;
	}
	memcpy(fr->carry + fr->carry_len, p, n);
	fr->carry_len += (uint32_t)n;
}

static void
carry_drop(struct async_chat_framer *fr, size_t n)
{
	fr->carry_off += (uint32_t)n;
	if (fr->carry_off >= fr->carry_len)
		fr->carry_off = fr->carry_len = 0;
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
		p->cap = (uint32_t)len;
	}
	/* term may be (part of) these very bytes, as async_chat__framer_get() gave them */
	memmove(pat_bytes(p), term, len);
	term = pat_bytes(p); /* the move may have overwritten the source */
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

static unsigned char *
framer_first(const struct async_chat_framer *fr)
{
	return (unsigned char *)(fr->many + fr->many_cap);
}

static int
reserve_patterns(struct async_chat_framer *fr, size_t n)
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
	return 0;
}

static void
changed(struct async_chat_framer *fr, enum async_chat_terminator_kind kind,
    size_t npat)
{
	fr->kind = (uint8_t)kind;
	fr->npat = (uint8_t)npat;
	fr->too_long = 0;
	fr->lf_phase = LF_HEADER;
	/* Bytes the old terminator scanned but not handed out are framed
	 * again; only a frame whose last byte is out still ends first. */
	if (fr->todo > 0) {
		fr->todo = 0;
		fr->have_end = 0;
	}
	reset_scan(fr);
}

int
async_chat_framer_set_terminator_none(struct async_chat_framer *fr)
{
	if (fr == NULL) {
		errno = EINVAL;
		return -1;
	}
	changed(fr, ASYNC_CHAT_TERM_NONE, 0);
	fr->count = 0;
	return 0;
}

int
async_chat_framer_set_terminator(struct async_chat_framer *fr,
    const void *term, size_t len)
{
	if (fr == NULL || (term == NULL && len > 0) ||
	    len > ASYNC_CHAT_TERMINATOR_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (len == 0)
		return async_chat_framer_set_terminator_none(fr);
	if (carry_reserve(fr, len) < 0 ||
	    pattern_set(&fr->one, term, len) < 0) {
		async_chat_framer_set_terminator_none(fr);
		return -1;
	}
	changed(fr, ASYNC_CHAT_TERM_STRING, 1);
	fr->count = 0;
	return 0;
}

int
async_chat_framer_set_terminator_count(struct async_chat_framer *fr,
    uint64_t count)
{
	if (fr == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (count == 0)
		return async_chat_framer_set_terminator_none(fr);
	changed(fr, ASYNC_CHAT_TERM_COUNT, 0);
	fr->count = count;
	return 0;
}

int
async_chat_framer_set_terminator_line(struct async_chat_framer *fr)
{
	if (fr == NULL) {
		errno = EINVAL;
		return -1;
	}
	changed(fr, ASYNC_CHAT_TERM_LINE, 0);
	fr->count = 0;
	return 0;
}

int
async_chat_framer_set_terminators(struct async_chat_framer *fr,
    const void *const *terms, const size_t *lens, size_t n)
{
	size_t i, longest = 0;

	if (fr == NULL || terms == NULL || lens == NULL || n == 0 ||
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
		if (lens[i] > longest)
			longest = lens[i];
	}
	/* Build into the slots; on failure leave the framer with no
	 * terminator rather than half of a set.  (get_terminator hands out
	 * only a string's bytes, which live apart, so a caller passing them
	 * back as an alternative reads memory this does not touch.) */
	if (carry_reserve(fr, longest) < 0 || reserve_patterns(fr, n) < 0) {
		async_chat_framer_set_terminator_none(fr);
		return -1;
	}
	for (i = 0; i < n; i++) {
		if (pattern_set(&fr->many[i], terms[i], lens[i]) < 0) {
			async_chat_framer_set_terminator_none(fr);
			return -1;
		}
	}
	memset(framer_first(fr), 0, FIRST_BITMAP);
	for (i = 0; i < n; i++) {
		unsigned char c = pat_bytes(&fr->many[i])[0];
		framer_first(fr)[c >> 3] |= (unsigned char)(1u << (c & 7));
	}
	changed(fr, ASYNC_CHAT_TERM_ANY, n);
	fr->count = 0;
	return 0;
}

int
async_chat__length_field_check(const struct async_chat_length_field *spec)
{
	size_t i;

	if (spec == NULL || spec->offset > ASYNC_CHAT_TERMINATOR_MAX ||
	    (spec->width != 0 && spec->width != 1 && spec->width != 2 &&
		spec->width != 3 && spec->width != 4 && spec->width != 8) ||
	    (spec->width == 0 && spec->little_endian)) {
		errno = EINVAL;
		return -1;
	}
	for (i = 0; i < sizeof(spec->reserved) / sizeof(spec->reserved[0]); i++) {
		if (spec->reserved[i] != 0) {
			errno = EINVAL;
			return -1;
		}
	}
	return 0;
}

/* The longest header a spec allows: a varint takes up to 10 bytes. */
static size_t
header_max(const struct async_chat_length_field *spec)
{
	return spec->offset + (spec->width != 0 ? spec->width : 10);
}

int
async_chat_framer_set_terminator_length(struct async_chat_framer *fr,
    const struct async_chat_length_field *spec)
{
	if (fr == NULL || async_chat__length_field_check(spec) < 0) {
		errno = EINVAL;
		return -1;
	}
	if (fr->lf == NULL && (fr->lf = calloc(1, sizeof(*fr->lf))) == NULL) {
		errno = ENOMEM;
		async_chat_framer_set_terminator_none(fr);
		return -1;
	}
	if (carry_reserve(fr, header_max(spec)) < 0) {
		async_chat_framer_set_terminator_none(fr);
		return -1;
	}
	fr->lf->spec = *spec;
	changed(fr, ASYNC_CHAT_TERM_LENGTH, 0);
	fr->count = 0;
	return 0;
}

int
async_chat_framer_get_terminator(const struct async_chat_framer *fr,
    struct async_chat_terminator *out)
{
	if (fr == NULL || out == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(out, 0, sizeof(*out));
	out->kind = fr->kind;
	switch (fr->kind) {
	case ASYNC_CHAT_TERM_STRING:
		out->bytes = pat_bytes(&fr->one);
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
	case ASYNC_CHAT_TERM_LENGTH:
		out->bytes = &fr->lf->spec;
		out->len = sizeof(fr->lf->spec);
		/* the header is complete from LF_CHECK on */
		out->count = fr->lf_phase == LF_BODY ||
		        fr->lf_phase == LF_CHECK ? fr->count : 0;
		break;
	case ASYNC_CHAT_TERM_NONE:
		break;
	}
	return 0;
}

int
async_chat_framer_set_max_frame(struct async_chat_framer *fr, uint64_t max)
{
	if (fr == NULL) {
		errno = EINVAL;
		return -1;
	}
	fr->max_frame = max;
	return 0;
}

uint64_t
async_chat_framer_frame_length(const struct async_chat_framer *fr)
{
	return fr != NULL ? fr->frame_bytes : 0;
}

void
async_chat_framer_reset(struct async_chat_framer *fr)
{
	if (fr == NULL)
		return;
	fr->carry_off = fr->carry_len = 0;
	reset_scan(fr);
	fr->todo = 0;
	fr->have_end = 0;
	fr->term_len = 0;
	fr->frame_bytes = 0;
	fr->skipping = 0;
	fr->too_long = 0;
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH) {
		fr->lf_phase = LF_HEADER;
		fr->count = 0;
	}
}

int
async_chat_framer_skip(struct async_chat_framer *fr)
{
	if (fr == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH && fr->lf_phase == LF_ERROR) {
		errno = EPROTO;
		return -1;
	}
	fr->skipping = 1;
	fr->too_long = 0;
	return 0;
}

/* The least bound under which the frame in progress can go on. */
static uint64_t
bound_needed(const struct async_chat_framer *fr)
{
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH && fr->lf_phase == LF_CHECK)
		return fr->lf->total;
	return fr->frame_bytes + 1;
}

int
async_chat__framer_stuck(const struct async_chat_framer *fr)
{
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH && fr->lf_phase == LF_ERROR)
		return 2;
	if (fr->too_long && !fr->skipping && fr->max_frame != 0 &&
	    fr->max_frame < bound_needed(fr))
		return 1;
	return 0;
}

/*
 * Scanners over one contiguous run of the stream, carrying the automaton
 * state in the patterns.  On a match each sets *end (just past the
 * terminator, in buf), *term_len and *matched, clears the state and
 * returns 1; otherwise it returns 0 with the state up to date.
 */

static int
scan_string(struct async_chat_framer *fr, const unsigned char *buf, size_t n,
    size_t *end, size_t *term_len, int *matched)
{
	struct framer_pattern *p = &fr->one;
	const unsigned char *t = pat_bytes(p), *q;
	const size_t len = p->len;
	size_t state = p->state, i = 0;


	while (i < n) {
		if (state == 0) {
			if (len <= FAST_TERM_MAX && n - i >= len) {
				/* Every start that leaves room for the whole
				 * terminator is tried whole; a start nearer
				 * the end is left to the automaton, which then
				 * sees every partial match there. */
				q = memchr(buf + i, t[0], n - i - len + 1);
				if (q == NULL) {
					i = n - len + 1;
					continue;
				}
				if (memcmp(q + 1, t + 1, len - 1) == 0) {
					i = (size_t)(q - buf) + len;
					goto found;
				}
				i = (size_t)(q - buf) + 1;
				continue;
			}
			q = memchr(buf + i, t[0], n - i);
			if (q == NULL)
				break;
			i = (size_t)(q - buf) + 1;
			state = 1;
		} else {
			unsigned char c = buf[i++];

			while (state > 0 && t[state] != c)
				state = p->border[state];
			if (t[state] == c)
				state++;
		}
		if (state == len)
			goto found;
	}
	p->state = (uint32_t)state;
	return 0;
found:
	p->state = 0;
	*end = i;
	*term_len = len;
	*matched = 0;
	return 1;
}

/* one.state is 1 when the last byte scanned was a CR. */
static int
scan_line(struct async_chat_framer *fr, const unsigned char *buf, size_t n,
    size_t *end, size_t *term_len, int *matched)
{
	const unsigned char *q = memchr(buf, '\n', n);
	int cr;

	if (q == NULL) {
		if (n > 0)
			fr->one.state = buf[n - 1] == '\r';
		return 0;
	}
	cr = q > buf ? q[-1] == '\r' : fr->one.state != 0;
	fr->one.state = 0;
	*end = (size_t)(q - buf) + 1;
	*term_len = cr ? 2 : 1;
	*matched = cr ? 0 : 1;
	return 1;
}

static int
scan_any(struct async_chat_framer *fr, const unsigned char *buf, size_t n,
    size_t *end, size_t *term_len, int *matched)
{
	struct framer_pattern *pat = fr->many;
	const size_t npat = fr->npat;
	size_t active = 0, i, j;

	for (j = 0; j < npat; j++)
		active |= pat[j].state;
	for (i = 0; i < n; i++) {
		unsigned char c = buf[i];
		size_t best = 0, best_len = 0;

		if (active == 0 && !(framer_first(fr)[c >> 3] & (1u << (c & 7))))
			continue;
		active = 0;
		for (j = 0; j < npat; j++) {
			struct framer_pattern *p = &pat[j];
			size_t s = p->state;

			const unsigned char *b = pat_bytes(p);

			while (s > 0 && b[s] != c)
				s = p->border[s];
			if (b[s] == c)
				s++;
			if (s == p->len) {
				if (p->len > best_len) {
					best = j;
					best_len = p->len;
				}
				s = p->border[s];
			}
			p->state = (uint32_t)s;
			active |= s;
		}
		if (best_len > 0) {
			for (j = 0; j < npat; j++)
				pat[j].state = 0;
			*end = i + 1;
			*term_len = best_len;
			*matched = (int)best;
			return 1;
		}
	}
	return 0;
}

static int
scan(struct async_chat_framer *fr, const unsigned char *buf, size_t n,
    size_t *end, size_t *term_len, int *matched)
{
	switch (fr->kind) {
	case ASYNC_CHAT_TERM_STRING:
		return scan_string(fr, buf, n, end, term_len, matched);
	case ASYNC_CHAT_TERM_LINE:
		return scan_line(fr, buf, n, end, term_len, matched);
	default:
		return scan_any(fr, buf, n, end, term_len, matched);
	}
}

/* Bytes at the end of what was scanned that may begin a terminator. */
static size_t
held_back(const struct async_chat_framer *fr)
{
	size_t held = 0, j;

	if (fr->kind != ASYNC_CHAT_TERM_ANY)
		return fr->one.state;
	for (j = 0; j < fr->npat; j++)
		if (fr->many[j].state > held)
			held = fr->many[j].state;
	return held;
}

/*
 * Events.  The span is (*span, *len); taking bytes of it advances it and
 * adds them to ev->consumed.
 */
struct span {
	const unsigned char *p;
	size_t len;
};

static int
emit(struct async_chat_framer *fr, struct async_chat_framer_event *ev,
    enum async_chat_framer_event_kind kind)
{
	ev->kind = kind;
	fr->too_long = kind == ASYNC_CHAT_FRAMER_TOO_LONG;
	if (kind == ASYNC_CHAT_FRAMER_TOO_LONG)
		ev->len = bound_needed(fr);
	return (int)kind;
}

/* The first contiguous run of the unconsumed stream. */
static const unsigned char *
front(const struct async_chat_framer *fr, const struct span *sp, size_t *n,
    int *held)
{
	if (fr->carry_off < fr->carry_len) {
		*n = carry_rest(fr);
		*held = 1;
		return fr->carry + fr->carry_off;
	}
	*n = sp->len;
	*held = 0;
	return sp->p;
}

/* Take n bytes of the front run. */
static void
take(struct async_chat_framer *fr, struct span *sp, size_t n, int held,
    struct async_chat_framer_event *ev)
{
	if (held) {
		carry_drop(fr, n);
	} else {
		sp->p += n;
		sp->len -= n;
		ev->consumed += n;
	}
	fr->scanned = fr->scanned > n ? fr->scanned - (uint32_t)n : 0;
}

/* Hand out up to n frame bytes at q, the front run, under the bound;
 * *got says how many.  Skipping, they are taken silently and GO_ON is
 * returned. */
static int
deliver(struct async_chat_framer *fr, struct span *sp, const unsigned char *q,
    size_t n, int held, struct async_chat_framer_event *ev, size_t *got)
{
	*got = 0;
	if (fr->skipping) {
		take(fr, sp, n, held, ev);
		*got = n;
		return GO_ON;
	}
	if (fr->max_frame != 0) {
		uint64_t room = fr->frame_bytes >= fr->max_frame ?
		    0 : fr->max_frame - fr->frame_bytes;

		if (room == 0)
			return emit(fr, ev, ASYNC_CHAT_FRAMER_TOO_LONG);
		if (n > room)
			n = (size_t)room;
	}
	take(fr, sp, n, held, ev);
	fr->frame_bytes += n;
	*got = n;
	ev->data = (const char *)q;
	ev->len = n;
	ev->held = held;
	return emit(fr, ev, ASYNC_CHAT_FRAMER_DATA);
}

/* The frame's bytes are out: take its terminator and end it. */
static int
end_frame(struct async_chat_framer *fr, struct span *sp,
    struct async_chat_framer_event *ev)
{
	size_t t = fr->term_len, c = carry_rest(fr);

	if (c > t)
		c = t;
	carry_drop(fr, c);
	t -= c;
	if (t > sp->len) /* the caller dropped bytes it had not consumed */
		t = sp->len;
	if (t > 0) { /* the span may be NULL, 0 */
		sp->p += t;
		sp->len -= t;
		ev->consumed += t;
	}
	fr->scanned = fr->scanned > fr->term_len ?
	    fr->scanned - fr->term_len : 0;
	ev->len = fr->term_len;
	fr->have_end = 0;
	fr->frame_bytes = 0;
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH)
		fr->lf_phase = LF_HEADER;
	if (fr->skipping) {
		fr->skipping = 0;
		return emit(fr, ev, ASYNC_CHAT_FRAMER_SKIPPED);
	}
	ev->matched = fr->matched;
	return emit(fr, ev, ASYNC_CHAT_FRAMER_END);
}

/* The none terminator, a spent count, or (counter set) a count or a
 * length-field body: the front run is frame bytes. */
static int
stream(struct async_chat_framer *fr, struct span *sp, uint64_t *counter,
    struct async_chat_framer_event *ev)
{
	size_t n, got;
	int held, rc;
	const unsigned char *q = front(fr, sp, &n, &held);

	if (n == 0)
		return emit(fr, ev, ASYNC_CHAT_FRAMER_NEED_MORE);
	if (counter != NULL && n > *counter)
		n = (size_t)*counter;
	/* Count down first, so that the frame's remaining length is known
	 * when the bytes are handed out. */
	rc = deliver(fr, sp, q, n, held, ev, &got);
	if (counter != NULL && got > 0) {
		*counter -= got;
		if (*counter == 0) {
			fr->have_end = 1;
			fr->term_len = 0;
			fr->matched = 0;
		}
	}
	return rc;
}

/* A string, line or alternatives terminator: find the next frame end, or
 * else the bytes that cannot begin one. */
static int
scan_step(struct async_chat_framer *fr, struct span *sp,
    struct async_chat_framer_event *ev)
{
	/* A huge span is scanned a window at a time. */
	const size_t window = sp->len < FRAMER_SCAN_MAX ? sp->len : FRAMER_SCAN_MAX;
	const size_t rest = carry_rest(fr), total = rest + window;
	size_t end = 0, term_len = 0;
	int matched = 0, found = 0;

	if (fr->scanned > total) /* the caller dropped unconsumed bytes */
		reset_scan(fr);
	if (fr->scanned < rest) {
		found = scan(fr, fr->carry + fr->carry_off + fr->scanned,
		    rest - fr->scanned, &end, &term_len, &matched);
		end += fr->scanned;
		fr->scanned = (uint32_t)(found ? end : rest);
	}
	if (!found && fr->scanned < total) {
		size_t from = fr->scanned - rest;

		found = scan(fr, sp->p + from, window - from, &end, &term_len,
		    &matched);
		end += fr->scanned;
		fr->scanned = (uint32_t)(found ? end : total);
	}
	if (found) {
		fr->todo = (uint32_t)(end - term_len);
		fr->term_len = (uint32_t)term_len;
		fr->matched = (uint8_t)matched;
		fr->have_end = 1;
		return GO_ON;
	}
	fr->todo = (uint32_t)(total - held_back(fr));
	if (fr->todo > 0)
		return GO_ON;
	/* Everything is a possible terminator prefix: keep it, so the
	 * caller can let go of the whole span.  (held_back() is shorter
	 * than the longest terminator, which carry_reserve() made room
	 * for.) */
	if (sp->len > 0) {
		carry_append(fr, sp->p, sp->len);
		ev->consumed += sp->len;
		sp->p += sp->len;
		sp->len = 0;
	}
	return emit(fr, ev, ASYNC_CHAT_FRAMER_NEED_MORE);
}

/*
 * Length-field frames.  The header is gathered in carry; once complete and
 * valid, the bound is checked on the frame's delivered length, the
 * stripped header bytes are dropped and the rest of the header becomes
 * todo; the body then streams like a count.
 */

/* The header's length if carry holds it whole, 0 if more is needed, or
 * (size_t)-1 if the varint is too long. */
static size_t
header_length(const struct async_chat_framer *fr, size_t *want)
{
	const struct async_chat_length_field *s = &fr->lf->spec;
	const unsigned char *h = fr->carry + fr->carry_off;
	size_t rest = carry_rest(fr), k;

	if (s->width != 0) {
		*want = s->offset + s->width;
		return rest >= *want ? *want : 0;
	}
	for (k = s->offset; k < rest && k < s->offset + 10; k++)
		if (!(h[k] & 0x80))
			return k + 1;
	if (k == s->offset + 10)
		return (size_t)-1;
	*want = k + 1;
	return 0;
}

/* Gather more header bytes from the span. */
static void
gather(struct async_chat_framer *fr, struct span *sp, size_t want,
    struct async_chat_framer_event *ev)
{
	size_t n = want - carry_rest(fr), k;

	if (fr->lf->spec.width == 0 && carry_rest(fr) >= fr->lf->spec.offset) {
		/* A varint: up to its last byte, within its 10. */
		n = fr->lf->spec.offset + 10 - carry_rest(fr);
		for (k = 0; k < n && k < sp->len; k++)
			if (!(sp->p[k] & 0x80))
				break;
		n = k < n ? k + 1 : n;
	}
	if (n > sp->len)
		n = sp->len;
	carry_append(fr, sp->p, n);
	sp->p += n;
	sp->len -= n;
	ev->consumed += n;
}

/* Decode a whole header h[0..hdr_len) under spec s: the body, frame
 * and strip lengths; 0, or -1 if it is invalid. */
static int
header_decode(const struct async_chat_length_field *s,
    const unsigned char *h, size_t hdr_len, uint64_t *body_out,
    uint64_t *frame_out, uint64_t *strip_out)
{
	const unsigned char *f = h + s->offset;
	uint64_t v = 0, body, frame, strip;
	size_t i;

	if (s->width == 0) {
		for (i = 0; i < hdr_len - s->offset; i++) {
			if (i == 9 && (f[i] & 0x7f) > 1)
				return -1; /* past 64 bits */
			v |= (uint64_t)(f[i] & 0x7f) << (7 * i);
		}
	} else if (s->little_endian) {
		for (i = s->width; i > 0; i--)
			v = v << 8 | f[i - 1];
	} else if (s->width == 4) {
		v = (uint64_t)f[0] << 24 | (uint64_t)f[1] << 16 |
		    (uint64_t)f[2] << 8 | f[3];
	} else {
		for (i = 0; i < s->width; i++)
			v = v << 8 | f[i];
	}
	if (s->adjust < 0) {
		uint64_t a = (uint64_t)0 - (uint64_t)s->adjust;

		if (v < a)
			return -1;
		body = v - a;
	} else {
		if (v > UINT64_MAX - (uint64_t)s->adjust)
			return -1;
		body = v + (uint64_t)s->adjust;
	}
	if (body > UINT64_MAX - hdr_len)
		return -1;
	frame = hdr_len + body;
	strip = s->strip == ASYNC_CHAT_STRIP_HEADER ? hdr_len : s->strip;
	if (strip > frame)
		return -1;
	*body_out = body;
	*frame_out = frame;
	*strip_out = strip;
	return 0;
}

/* Decode and check the gathered header; 0, or -1 if it is invalid. */
static int
header_check(struct async_chat_framer *fr, size_t hdr_len)
{
	uint64_t body, frame, strip;

	if (header_decode(&fr->lf->spec, fr->carry + fr->carry_off, hdr_len,
		&body, &frame, &strip) < 0)
		return -1;
	fr->lf->hdr_len = (uint32_t)hdr_len;
	fr->lf->strip = strip;
	fr->count = body;
	fr->lf->total = frame - strip;
	return 0;
}

static int
length_step(struct async_chat_framer *fr, struct span *sp,
    struct async_chat_framer_event *ev)
{
	size_t hdr_len, want = 0, n;
	uint64_t cut;
	int held;

	switch (fr->lf_phase) {
	case LF_ERROR:
		return emit(fr, ev, ASYNC_CHAT_FRAMER_LENGTH_ERROR);
	case LF_HEADER:
		hdr_len = header_length(fr, &want);
		if (hdr_len == 0) {
			if (sp->len == 0)
				return emit(fr, ev, ASYNC_CHAT_FRAMER_NEED_MORE);
			gather(fr, sp, want, ev);
			return GO_ON;
		}
		if (hdr_len == (size_t)-1 || header_check(fr, hdr_len) < 0) {
			fr->lf_phase = LF_ERROR;
			return emit(fr, ev, ASYNC_CHAT_FRAMER_LENGTH_ERROR);
		}
		fr->lf_phase = LF_CHECK;
		/* fall through */
	case LF_CHECK:
		if (!fr->skipping && fr->max_frame != 0 &&
		    fr->lf->total > fr->max_frame)
			return emit(fr, ev, ASYNC_CHAT_FRAMER_TOO_LONG);
		cut = fr->lf->strip < fr->lf->hdr_len ? fr->lf->strip : fr->lf->hdr_len;
		carry_drop(fr, (size_t)cut);
		fr->todo = (uint32_t)(fr->lf->hdr_len - cut);
		fr->scanned = fr->todo;
		fr->lf->strip_left = fr->lf->strip - cut;
		fr->lf_phase = LF_BODY;
		return GO_ON;
	default: /* LF_BODY */
		break;
	}
	if (fr->lf->strip_left > 0) {
		/* Stripped body bytes: taken without an event. */
		(void)front(fr, sp, &n, &held);
		if (n == 0)
			return emit(fr, ev, ASYNC_CHAT_FRAMER_NEED_MORE);
		if (n > fr->lf->strip_left)
			n = (size_t)fr->lf->strip_left;
		take(fr, sp, n, held, ev);
		fr->lf->strip_left -= n;
		fr->count -= n;
		if (fr->count == 0 && fr->lf->strip_left == 0) {
			fr->have_end = 1;
			fr->term_len = 0;
			fr->matched = 0;
		}
		return GO_ON;
	}
	if (fr->count == 0) {
		fr->have_end = 1;
		fr->term_len = 0;
		fr->matched = 0;
		return GO_ON;
	}
	return stream(fr, sp, &fr->count, ev);
}

/*
 * The channel's fast path, for the most common state: nothing held, owed,
 * skipped or partly scanned, and a line, a short string terminator or a
 * fixed-width length field.  The next frame that ends inside p[0..n) is
 * found with memchr (or its header decoded) and its bytes handed out at
 * once, exactly as a DATA event would: its end is owed, and
 * async_chat__framer_end() takes it.  A length field's stripped bytes
 * come first (*lead).  Anything else (no whole frame in the span, the
 * bound in the way, an invalid header) is left to the general path.
 */
int
async_chat__framer_fast_any(struct async_chat_framer *fr, const char *data,
    size_t n, size_t *lead, size_t *frame_len)
{
	const unsigned char *p = (const unsigned char *)data, *q, *end = p + n;
	size_t start, t;
	int m;

	if (!async_chat__framer_idle(fr) || n == 0)
		return 0;
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH) {
		/* A fixed-width header and its whole frame in the span. */
		const struct async_chat_length_field *s = &fr->lf->spec;
		uint64_t body, frame, strip;
		size_t h = s->offset + s->width;

		if (fr->lf_phase != LF_HEADER || s->width == 0 || n < h ||
		    header_decode(s, p, h, &body, &frame, &strip) < 0 ||
		    frame > n)
			return 0;
		if (fr->max_frame != 0 && frame - strip > fr->max_frame)
			return 0;
		fr->frame_bytes = frame - strip;
		return async_chat__framer_owe(fr, (size_t)strip,
		    (size_t)(frame - strip), 0, 0, lead, frame_len);
	}
	if (fr->kind == ASYNC_CHAT_TERM_LINE) {
		q = memchr(p, '\n', n);
		if (q == NULL)
			return 0;
		t = q > p && q[-1] == '\r' ? 2 : 1;
		start = (size_t)(q - p) + 1 - t;
		m = t == 2 ? 0 : 1;
	} else if (fr->kind == ASYNC_CHAT_TERM_STRING &&
	    fr->one.len <= FAST_TERM_MAX) {
		const unsigned char *tb = pat_bytes(&fr->one);

		t = fr->one.len;
		for (q = p; (size_t)(end - q) >= t; q++) {
			q = memchr(q, tb[0], (size_t)(end - q) - t + 1);
			if (q == NULL)
				return 0;
			if (t == 1 || (q[1] == tb[1] &&
					  (t == 2 ||
					      memcmp(q + 2, tb + 2, t - 2) == 0)))
				break;
		}
		if ((size_t)(end - q) < t)
			return 0;
		start = (size_t)(q - p);
		m = 0;
	} else {
		return 0;
	}
	if (fr->max_frame != 0 && (fr->frame_bytes > fr->max_frame ||
				      start > fr->max_frame - fr->frame_bytes))
		return 0;
	fr->frame_bytes += start;
	return async_chat__framer_owe(fr, 0, start, (uint32_t)t, m, lead,
	    frame_len);
}

static int
next_event(struct async_chat_framer *fr, struct span *sp,
    struct async_chat_framer_event *ev)
{
	for (;;) {
		int rc, held;
		size_t n, got;
		const unsigned char *q;

		if (fr->todo > 0) {
			q = front(fr, sp, &n, &held);
			if (n == 0) { /* the caller dropped unconsumed bytes */
				fr->todo = 0;
				fr->have_end = 0;
				reset_scan(fr);
				continue;
			}
			if (n > fr->todo)
				n = (size_t)fr->todo;
			rc = deliver(fr, sp, q, n, held, ev, &got);
			fr->todo -= (uint32_t)got;
		} else if (fr->have_end) {
			return end_frame(fr, sp, ev);
		} else {
			switch (fr->kind) {
			case ASYNC_CHAT_TERM_NONE:
				rc = stream(fr, sp, NULL, ev);
				break;
			case ASYNC_CHAT_TERM_COUNT:
				rc = stream(fr, sp, fr->count ? &fr->count : NULL,
				    ev);
				break;
			case ASYNC_CHAT_TERM_LENGTH:
				rc = length_step(fr, sp, ev);
				break;
			default:
				rc = scan_step(fr, sp, ev);
				break;
			}
		}
		if (rc != GO_ON)
			return rc;
	}
}

int
async_chat_framer_next(struct async_chat_framer *fr, const void *data,
    size_t len, struct async_chat_framer_event *ev)
{
	struct span sp;

	if (fr == NULL || ev == NULL || (data == NULL && len > 0)) {
		errno = EINVAL;
		return -1;
	}
	*ev = (struct async_chat_framer_event){.kind = ASYNC_CHAT_FRAMER_NEED_MORE};
	if (fr->have_end && fr->todo == 0 && fr->carry_off == fr->carry_len &&
	    fr->term_len <= len && fr->scanned == fr->term_len &&
	    !fr->skipping && fr->kind != ASYNC_CHAT_TERM_LENGTH) {
		/* The usual second call: the end of the frame just handed
		 * out, its terminator at the front of the span. */
		fr->have_end = 0;
		fr->frame_bytes = 0;
		fr->scanned = 0;
		fr->too_long = 0;
		ev->kind = ASYNC_CHAT_FRAMER_END;
		ev->consumed = fr->term_len;
		ev->len = fr->term_len;
		ev->matched = fr->matched;
		return ASYNC_CHAT_FRAMER_END;
	}
	sp.p = data;
	sp.len = len;
	if (fr->have_end && fr->todo == 0)
		return end_frame(fr, &sp, ev);
	if (len > 0) {
		size_t lead, flen;

		/* A whole frame in the span: its bytes at once. */
		if (async_chat__framer_fast(fr, data, len, &lead, &flen)) {
			if (flen == 0) {
				sp.p += lead;
				sp.len -= lead;
				ev->consumed = lead;
				return end_frame(fr, &sp, ev);
			}
			fr->too_long = 0;
			ev->kind = ASYNC_CHAT_FRAMER_DATA;
			ev->data = (const char *)data + lead;
			ev->len = flen;
			ev->consumed = lead + flen;
			return ASYNC_CHAT_FRAMER_DATA;
		}
	}
	return next_event(fr, &sp, ev);
}

int
async_chat_framer_finish(struct async_chat_framer *fr,
    struct async_chat_framer_event *ev)
{
	struct span sp = {NULL, 0};
	size_t n, got;
	int rc;

	if (fr == NULL || ev == NULL) {
		errno = EINVAL;
		return -1;
	}
	memset(ev, 0, sizeof(*ev));
	for (;;) {
		if (fr->todo > 0 || fr->have_end) {
			rc = next_event(fr, &sp, ev);
			if (rc != ASYNC_CHAT_FRAMER_NEED_MORE)
				return rc;
			memset(ev, 0, sizeof(*ev));
		}
		if (fr->kind == ASYNC_CHAT_TERM_LENGTH &&
		    fr->lf_phase == LF_ERROR)
			return emit(fr, ev, ASYNC_CHAT_FRAMER_LENGTH_ERROR);
		n = carry_rest(fr);
		if (n == 0)
			break;
		/* What is held (a terminator prefix, a partial header) is
		 * frame bytes after all. */
		rc = deliver(fr, &sp, fr->carry + fr->carry_off, n, 1, ev,
		    &got);
		if (rc != GO_ON)
			return rc;
	}
	reset_scan(fr);
	if (fr->kind == ASYNC_CHAT_TERM_LENGTH && fr->lf_phase != LF_BODY)
		fr->lf_phase = LF_HEADER;
	return emit(fr, ev, ASYNC_CHAT_FRAMER_NEED_MORE);
}

/*
 * The encoder for the same frames.
 */
ev_ssize_t
async_chat_length_field_encode(const struct async_chat_length_field *spec,
    uint64_t payload_len, void *out, size_t size)
{
	if (out == NULL || async_chat__length_field_check(spec) < 0) {
		errno = EINVAL;
		return -1;
	}
	return async_chat__length_field_encode(spec, payload_len, out, size);
}

ev_ssize_t
async_chat__length_field_encode(const struct async_chat_length_field *spec,
    uint64_t payload_len, void *out, size_t size)
{
	unsigned char *o = out, field[10];
	size_t w = 0, i;
	uint64_t v;

	if (spec->adjust >= 0) {
		if (payload_len < (uint64_t)spec->adjust) {
			errno = ERANGE;
			return -1;
		}
		v = payload_len - (uint64_t)spec->adjust;
	} else {
		uint64_t a = (uint64_t)0 - (uint64_t)spec->adjust;

		if (payload_len > UINT64_MAX - a) {
			errno = ERANGE;
			return -1;
		}
		v = payload_len + a;
	}
	if (spec->width != 0) {
		/* Straight into out. */
		w = spec->width;
		if ((w < 8 && (v >> (8 * w)) != 0) ||
		    payload_len > UINT64_MAX - (spec->offset + w)) {
			errno = ERANGE;
			return -1;
		}
		if (size < spec->offset + w) {
			errno = ENOBUFS;
			return -1;
		}
		if (spec->offset > 0)
			memset(o, 0, spec->offset);
		o += spec->offset;
		if (spec->little_endian)
			for (i = 0; i < w; i++)
				o[i] = (unsigned char)(v >> (8 * i));
		else
			for (i = 0; i < w; i++)
				o[w - 1 - i] = (unsigned char)(v >> (8 * i));
		return (ev_ssize_t)(spec->offset + w);
	}
	{
		do {
			field[w] = (unsigned char)(v & 0x7f);
			v >>= 7;
			if (v != 0)
				field[w] |= 0x80;
			w++;
		} while (v != 0);
	}
	if (payload_len > UINT64_MAX - (spec->offset + w)) {
		errno = ERANGE; /* the decoder could not count the frame */
		return -1;
	}
	if (size < spec->offset + w) {
		errno = ENOBUFS;
		return -1;
	}
	memset(o, 0, spec->offset);
	memcpy(o + spec->offset, field, w);
	return (ev_ssize_t)(spec->offset + w);
}
