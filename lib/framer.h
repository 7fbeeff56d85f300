/*
 * framer.h - the framer's state, so that a channel can embed one.  The
 * framer itself is public (include/asynchat.h); this header is private and
 * never installed.
 */
#ifndef ASYNCHAT_FRAMER_H_INCLUDED_
#define ASYNCHAT_FRAMER_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "asynchat.h"

/* One byte-string alternative with its KMP border table. */
struct framer_pattern {
	/* One allocation: the border table, then the bytes (at
	 * border + cap + 1).  border[k] is the longest proper border of
	 * bytes[0..k). */
	uint32_t *border;
	uint32_t len;
	uint32_t cap;     /* longest pattern the allocation holds */
	uint32_t state;   /* bytes of this pattern matched at the scan point */
};

/* The most bytes of a span one scan looks at; the rest waits for the
 * next call, so the counts of scanned bytes stay 32-bit. */
#define FRAMER_SCAN_MAX ((size_t)1 << 30)

/* Held bytes up to this many live in the framer itself. */
#define FRAMER_CARRY_INLINE 8

enum framer_lf_phase {
	LF_HEADER = 0, /* the header is being gathered in carry */
	LF_CHECK,      /* the header is valid; the bound is yet to allow it */
	LF_BODY,       /* its bytes are being handed out */
	LF_ERROR       /* the header is invalid */
};

/* TERM_LENGTH's state, made when the kind is first set: idle channels
 * of other kinds do not carry it. */
struct framer_lf {
	struct async_chat_length_field spec;
	uint64_t strip;      /* bytes to strip from the frame in progress */
	uint64_t strip_left; /* body bytes still to drop */
	uint64_t total;      /* delivered length of the frame */
	uint32_t hdr_len;    /* the header's length once known */
};

/* Kept small: one is embedded in every channel. */
struct async_chat_framer {
	struct framer_pattern one;   /* TERM_STRING */
	struct framer_pattern *many; /* TERM_ANY; the first-byte bitmap
				      * follows the many_cap patterns */
	struct framer_lf *lf;        /* TERM_LENGTH */

	/* TERM_COUNT: bytes still missing; TERM_LENGTH: body bytes. */
	uint64_t count;
	uint64_t max_frame;   /* 0: no bound */
	uint64_t frame_bytes; /* bytes of the current frame delivered */

	/*
	 * The unconsumed stream is carry[carry_off..carry_len) followed by
	 * the caller's span.  scanned of its bytes have been looked at by
	 * the current terminator's scanner; todo of them are frame bytes
	 * still to hand out, and if have_end is set term_len terminator
	 * bytes follow them.
	 */
	unsigned char *carry;
	uint32_t todo, scanned; /* within FRAMER_SCAN_MAX of the front */
	uint32_t carry_off, carry_len, carry_cap;
	uint32_t term_len;

	uint8_t kind;       /* enum async_chat_terminator_kind */
	uint8_t npat;       /* patterns in use */
	uint8_t many_cap;   /* patterns allocated in many */
	uint8_t skipping;   /* async_chat_framer_skip() */
	uint8_t lf_phase;   /* TERM_LENGTH: enum framer_lf_phase */
	uint8_t have_end;
	uint8_t matched;    /* alternative of the owed frame end */
	uint8_t too_long;   /* the last event was TOO_LONG */
	unsigned char carry_inline[FRAMER_CARRY_INLINE];
};

/* For a framer embedded in another object. */
void async_chat__framer_init(struct async_chat_framer *fr);
void async_chat__framer_clear(struct async_chat_framer *fr);

/*
 * The channel's fast path: 1 if a whole frame's bytes,
 * data[*lead..*lead + *frame_len), lie in the span with the frame's end
 * owed, to be taken with async_chat__framer_end() (which returns the
 * span bytes of the terminator); 0 if the general path must run.  The
 * *lead bytes before them (a stripped length header) are consumed.
 *
 * Inline for the common frames (a two-byte string, a 4-byte big-endian
 * length with no offset or adjustment, no bound), so that the channel's
 * read loop makes no call per frame but memchr's; anything else goes to
 * async_chat__framer_fast_any() in framer.c.
 */
int async_chat__framer_fast_any(struct async_chat_framer *fr,
    const char *data, size_t n, size_t *lead, size_t *frame_len);

/* Nothing held, nothing owed, nothing skipped, no scan under way: the
 * state every fast path starts from. */
static inline int
async_chat__framer_idle(const struct async_chat_framer *fr)
{
	return (fr->todo | fr->scanned | fr->one.state |
	    (fr->carry_off ^ fr->carry_len) | fr->have_end | fr->skipping) == 0;
}

/* A fast path found a whole frame: hand out its place (*lead_out bytes
 * to skip, then *len_out frame bytes) and owe its end, term bytes of
 * terminator matching alternative matched.  Returns 1. */
static inline int
async_chat__framer_owe(struct async_chat_framer *fr, size_t lead,
    size_t len, uint32_t term, int matched, size_t *lead_out,
    size_t *len_out)
{
	*lead_out = lead;
	*len_out = len;
	fr->have_end = 1;
	fr->term_len = term;
	fr->matched = (uint8_t)matched;
	fr->scanned = term;
	return 1;
}

static inline int
async_chat__framer_fast(struct async_chat_framer *fr, const char *data,
    size_t n, size_t *lead, size_t *frame_len)
{
	if (!async_chat__framer_idle(fr) || n == 0)
		return 0;
	if (fr->max_frame == 0 && fr->kind == ASYNC_CHAT_TERM_STRING &&
	    fr->one.len == 2 && n >= 2) {
		/* The pattern's bytes follow its border table. */
		const unsigned char *tb =
		    (const unsigned char *)(fr->one.border + fr->one.cap + 1);
		const char *p = data, *end = data + n, *q;

		for (;;) {
			q = (const char *)memchr(p, tb[0], (size_t)(end - p) - 1);
			if (q == NULL)
				return 0;
			if ((unsigned char)q[1] == tb[1])
				break;
			p = q + 1;
			if (end - p < 2)
				return 0;
		}
		fr->frame_bytes += (size_t)(q - data);
		return async_chat__framer_owe(fr, 0, (size_t)(q - data), 2, 0,
		    lead, frame_len);
	}
	if (fr->max_frame == 0 && fr->kind == ASYNC_CHAT_TERM_LENGTH &&
	    fr->lf_phase == LF_HEADER && n >= 4 && fr->lf->spec.width == 4 &&
	    fr->lf->spec.offset == 0 && !fr->lf->spec.little_endian &&
	    fr->lf->spec.adjust == 0) {
		const unsigned char *h = (const unsigned char *)data;
		uint64_t strip = fr->lf->spec.strip, frame;

		frame = 4 + ((uint64_t)h[0] << 24 | (uint64_t)h[1] << 16 |
			(uint64_t)h[2] << 8 | h[3]);
		if (strip == ASYNC_CHAT_STRIP_HEADER)
			strip = 4;
		if (frame > n || strip > frame)
			return 0;
		fr->frame_bytes = frame - strip;
		return async_chat__framer_owe(fr, (size_t)strip,
		    (size_t)(frame - strip), 0, 0, lead, frame_len);
	}
	return async_chat__framer_fast_any(fr, data, n, lead, frame_len);
}

/* Take the frame end async_chat__framer_fast() owed: the span bytes of
 * its terminator. */
static inline size_t
async_chat__framer_end(struct async_chat_framer *fr, int *matched)
{
	size_t t = fr->term_len;

	*matched = fr->matched;
	fr->have_end = 0;
	fr->frame_bytes = 0;
	fr->scanned = 0;
	fr->too_long = 0;
	return t;
}

/* 1 if the framer would report TOO_LONG again under its current bound,
 * 2 if it would report LENGTH_ERROR again, else 0. */
int async_chat__framer_stuck(const struct async_chat_framer *fr);

/* Check a length-field spec; -1 with errno EINVAL if it is not valid. */
int async_chat__length_field_check(const struct async_chat_length_field *spec);
/* async_chat_length_field_encode() of a spec already checked. */
ev_ssize_t async_chat__length_field_encode(
    const struct async_chat_length_field *spec, uint64_t payload_len,
    void *out, size_t size);

#endif /* ASYNCHAT_FRAMER_H_INCLUDED_ */
