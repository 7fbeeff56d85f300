/*
 * framer_model.c - the reference model of the framer: no automaton, no
 * held-back bytes, just "does the frame now end with the terminator?"
 * after every byte, and length-field frames read whole at their start.
 * Slow on purpose; see framer_model.h.
 */
#include <stdlib.h>
#include <string.h>

#include "framer_model.h"

struct fm_term
fm_none(void)
{
	struct fm_term t;

	memset(&t, 0, sizeof(t));
	t.kind = ASYNC_CHAT_TERM_NONE;
	return t;
}

struct fm_term
fm_count(uint64_t count)
{
	struct fm_term t = fm_none();

	if (count > 0) {
		t.kind = ASYNC_CHAT_TERM_COUNT;
		t.count = count;
	}
	return t;
}

struct fm_term
fm_line(void)
{
	struct fm_term t = fm_none();

	t.kind = ASYNC_CHAT_TERM_LINE;
	return t;
}

struct fm_term
fm_string(const void *bytes, size_t len)
{
	struct fm_term t = fm_none();

	if (len > 0) {
		t.kind = ASYNC_CHAT_TERM_STRING;
		t.n = 1;
		t.bytes[0] = bytes;
		t.len[0] = len;
	}
	return t;
}

struct fm_term
fm_any(const void *const *bytes, const size_t *lens, size_t n)
{
	struct fm_term t = fm_none();
	size_t i;

	if (n > ASYNC_CHAT_ALTERNATIVES_MAX)
		n = ASYNC_CHAT_ALTERNATIVES_MAX;
	t.kind = ASYNC_CHAT_TERM_ANY;
	t.n = n;
	for (i = 0; i < n; i++) {
		t.bytes[i] = bytes[i];
		t.len[i] = lens[i];
	}
	return t;
}

struct fm_term
fm_length(const struct async_chat_length_field *spec)
{
	struct fm_term t = fm_none();

	t.kind = ASYNC_CHAT_TERM_LENGTH;
	t.lf = *spec;
	return t;
}

const struct fm_step *
fm_step_at(const struct fm_step *steps, size_t nsteps, size_t frame)
{
	const struct fm_step *found = NULL;
	size_t i;

	for (i = 0; i < nsteps; i++)
		if (steps[i].frame == frame)
			found = &steps[i];
	return found;
}

/* Does s[start..end) end with the len bytes at t?  A zero-length
 * terminator never matches: it stands for none. */
static int
ends_with(
    const unsigned char *s, size_t start, size_t end, const void *t, size_t len)
{
	/* The last byte first keeps long terminators cheap. */
	return len > 0 && end - start >= len &&
	       s[end - 1] == ((const unsigned char *)t)[len - 1] &&
	       memcmp(s + end - len, t, len) == 0;
}

static int
push_frame(struct fm_result *r, size_t off, size_t len, int matched,
    size_t begin, size_t hdr)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		struct fm_frame *f = realloc(r->frame, cap * sizeof(*f));

		if (f == NULL)
			return -1;
		r->frame = f;
		r->cap = cap;
	}
	r->frame[r->n].off = off;
	r->frame[r->n].len = len;
	r->frame[r->n].matched = matched;
	r->frame[r->n].begin = begin;
	r->frame[r->n].hdr = hdr;
	r->n++;
	return 0;
}

/*
 * A length-field frame at s[start..len), read the slow way: the header's
 * bytes one by one, every sum checked before it is made.  Returns 1 with the frame's
 * length in *frame when it is whole in the stream, 0 when the stream ends
 * first (*hdr is then 0 if the header is not complete), or -1 when the
 * header is invalid (*hdr: the bytes of it the framer takes).
 */
/* The bytes stripped from a frame whose header has hdr bytes. */
static uint64_t
lf_strip(const struct async_chat_length_field *lf, size_t hdr)
{
	return lf->strip == ASYNC_CHAT_STRIP_HEADER ? hdr : lf->strip;
}

static int
lf_frame(const struct async_chat_length_field *lf, const unsigned char *s,
    size_t start, size_t len, size_t *hdr, uint64_t *frame)
{
	const size_t have = len - start;
	uint64_t v = 0, body;
	size_t i, w;
	unsigned char b = 0;

	*hdr = 0;
	if (lf->width != 0) {
		w = lf->width;
		if (have < lf->offset + w)
			return 0;
		for (i = 0; i < w; i++) {
			size_t k = lf->little_endian ? w - 1 - i : i;

			v = v * 256 + s[start + lf->offset + k];
		}
	} else {
		for (w = 1;; w++) {
			if (have < lf->offset + w)
				return 0;
			b = s[start + lf->offset + w - 1];
			v |= (uint64_t)(b & 0x7f) << (7 * (w - 1));
			if (!(b & 0x80))
				break;
			if (w == 10) { /* an eleventh byte would follow */
				*hdr = lf->offset + w;
				return -1;
			}
		}
		if (w == 10 && (b & 0x7f) > 1) { /* past 64 bits */
			*hdr = lf->offset + w;
			return -1;
		}
	}
	*hdr = lf->offset + w;
	if (lf->adjust < 0) {
		uint64_t m = (uint64_t)0 - (uint64_t)lf->adjust;

		if (v < m)
			return -1;
		body = v - m;
	} else {
		if (v > UINT64_MAX - (uint64_t)lf->adjust)
			return -1;
		body = v + (uint64_t)lf->adjust;
	}
	if (body > UINT64_MAX - *hdr)
		return -1;
	*frame = body + *hdr;
	if (lf_strip(lf, *hdr) > *frame)
		return -1;
	if (*frame > have)
		return 0;
	return 1;
}

int
fm_run(const struct fm_step *steps, size_t nsteps, const void *stream,
    size_t len, struct fm_result *out)
{
	const unsigned char *s = stream;
	const struct fm_term none = fm_none();
	const struct fm_term *term = &none;
	const struct fm_step *step;
	uint64_t left = 0; /* TERM_COUNT: bytes still missing */
	size_t start = 0, i, j;
	size_t taken = 0; /* the end of a header that was recovered from */
	int recovered = 0;

	memset(out, 0, sizeof(*out));
	step = fm_step_at(steps, nsteps, 0);
	if (step != NULL) {
		term = &step->term;
		left = term->count;
	}
	for (i = 0; i < len; i++) {
		size_t end = i + 1, tlen = 0;
		int matched = -1;

		switch (term->kind) {
		case ASYNC_CHAT_TERM_LENGTH: {
			uint64_t frame;
			size_t hdr;
			int rc;

			/* i == start: length fields are read at frame starts */
			rc = lf_frame(&term->lf, s, start, len, &hdr, &frame);
			if (rc == 0) {
				/* the tail: a partial header as it is, or the
				 * partial frame less its strip */
				out->tail_off = start;
				out->tail_begin = start;
				if (hdr != 0)
					out->tail_off = len - start <
					        lf_strip(&term->lf, hdr)
					    ? len
					    : start + (size_t)lf_strip(&term->lf,
					                     hdr);
				out->tail_len = len - out->tail_off;
				return 0;
			}
			if (rc < 0) {
				step = recovered ? NULL
				                 : fm_step_at(steps, nsteps,
				                       FM_LENGTH_ERROR);
				if (step == NULL) {
					out->error = 1;
					out->err_off = start;
					out->err_len = hdr;
					/* the framer still holds the bytes an
					 * earlier header took there */
					if (taken > start + hdr)
						out->err_len = taken - start;
					out->tail_off = start;
					out->tail_begin = start;
					out->tail_len = 0;
					return 0;
				}
				/* framed again from the header's first byte */
				recovered = 1;
				taken = start + hdr;
				out->recovered_end = taken;
				out->recovered = 1;
				out->recovered_at = start;
				term = &step->term;
				left = term->count;
				i--; /* the loop's i++ brings it back to start */
				continue;
			}
			if (push_frame(out,
			        start + (size_t)lf_strip(&term->lf, hdr),
			        (size_t)(frame - lf_strip(&term->lf, hdr)), 0, start,
			        hdr) < 0) {
				fm_result_free(out);
				return -1;
			}
			start += (size_t)frame;
			i = start - 1;
			step = fm_step_at(steps, nsteps, out->n);
			if (step != NULL) {
				term = &step->term;
				left = term->count;
			}
			continue;
		}
		case ASYNC_CHAT_TERM_COUNT:
			if (left > 0 && --left == 0)
				matched = 0;
			break;
		case ASYNC_CHAT_TERM_STRING:
			if (ends_with(
			        s, start, end, term->bytes[0], term->len[0])) {
				matched = 0;
				tlen = term->len[0];
			}
			break;
		case ASYNC_CHAT_TERM_LINE:
			if (s[i] != '\n')
				break;
			/* A CR of the previous frame is not this one's. */
			if (i > start && s[i - 1] == '\r') {
				matched = 0;
				tlen = 2;
			} else {
				matched = 1;
				tlen = 1;
			}
			break;
		case ASYNC_CHAT_TERM_ANY:
			/* Every match found here ends on this byte; the
			 * longest wins, the first listed among equals. */
			for (j = 0; j < term->n; j++) {
				if (term->len[j] > tlen &&
				    ends_with(s, start, end, term->bytes[j],
				        term->len[j])) {
					matched = (int)j;
					tlen = term->len[j];
				}
			}
			break;
		case ASYNC_CHAT_TERM_NONE:
			break;
		}
		if (matched < 0)
			continue;
		if (push_frame(out, start, end - tlen - start, matched, start,
		        0) < 0) {
			fm_result_free(out);
			return -1;
		}
		start = end;
		step = fm_step_at(steps, nsteps, out->n);
		if (step != NULL) {
			term = &step->term;
			left = term->count;
		}
	}
	out->tail_off = start;
	out->tail_begin = start;
	out->tail_len = len - start;
	return 0;
}

void
fm_result_free(struct fm_result *r)
{
	free(r->frame);
	memset(r, 0, sizeof(*r));
}
