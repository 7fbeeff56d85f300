/*
 * framer.h - terminator scanning over an evbuffer, with no I/O of its own.
 * The channel feeds it the bufferevent's input; tests and fuzzers feed it
 * plain evbuffers.  Private to libasynchat; never installed.
 */
#ifndef ASYNCHAT_FRAMER_H_INCLUDED_
#define ASYNCHAT_FRAMER_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

#include "asynchat.h"

/* One byte-string alternative with its KMP border table. */
struct framer_pattern {
	/* One allocation: the border table, then the bytes.  border[k] is
	 * the longest proper border of bytes[0..k). */
	uint32_t *border;
	unsigned char *bytes;
	uint32_t len;
	uint32_t cap;     /* longest pattern the allocation holds */
	size_t state;     /* bytes of this pattern matched at the scan point */
};

/*
 * Where the framer sends what it finds.  data() removes len bytes from the
 * front of in (by collecting and draining them, or by moving them
 * elsewhere); when it stops the scan it may have removed fewer, and the
 * rest is framed again on the next feed.  Each returns 0 to go on or
 * non-zero to stop the scan.
 */
struct framer_sink {
	int (*data)(void *ctx, struct evbuffer *in, size_t len);
	int (*found)(void *ctx);
	/* Optional: take n frame bytes at p, which point into the input and
	 * which the framer drains itself later; 0 to go on, 1 to stop, -1
	 * if they could not be taken.  With it the framer splits the frames
	 * that lie whole in one extent of the input without touching the
	 * evbuffer per frame. */
	int (*bytes)(void *ctx, const void *p, size_t n);
};

struct framer {
	enum async_chat_terminator_kind kind;
	struct framer_pattern one;   /* TERM_STRING */
	struct framer_pattern *many; /* TERM_ANY, allocated on first use */
	unsigned char *first;        /* TERM_ANY: first bytes, a bitmap */
	uint8_t npat;                /* patterns in use */
	uint8_t many_cap;            /* patterns allocated in many */
	uint64_t count;       /* TERM_COUNT: bytes still missing */
	size_t held;          /* bytes at the front of the input already scanned */
	uint64_t frame_bytes; /* bytes of the current frame delivered */
	uint64_t max_frame;   /* 0: no bound */
	int matched;          /* alternative that ended the last frame */
	/* A count's last bytes went to a data() that stopped the scan:
	 * found() runs first on the next feed. */
	int found_owed;
	/* Bumped when the terminator changes or the input is discarded, so a
	 * scan in progress notices what a callback did. */
	unsigned term_gen;
	unsigned input_gen;
};

/* What async_chat__framer_feed() and async_chat__framer_finish() return. */
enum framer_status {
	FRAMER_IDLE = 0,      /* the input holds only held-back bytes */
	FRAMER_STOPPED = 1,   /* a sink callback asked to stop */
	FRAMER_TOO_LONG = 2,  /* the frame bound was reached */
	FRAMER_NOMEM = 3      /* the sink could not move the bytes */
};

void async_chat__framer_init(struct framer *fr);
void async_chat__framer_clear(struct framer *fr);

int async_chat__framer_set_string(struct framer *fr, const void *term, size_t len);
int async_chat__framer_set_count(struct framer *fr, uint64_t count);
void async_chat__framer_set_none(struct framer *fr);
void async_chat__framer_set_line(struct framer *fr);
int async_chat__framer_set_any(struct framer *fr, const void *const *terms,
    const size_t *lens, size_t n);
void async_chat__framer_get(const struct framer *fr, struct async_chat_terminator *out);

/* Forget the held-back bytes (the caller drains or rescans the input). */
void async_chat__framer_discard(struct framer *fr);

/* Frame the bytes of in until only a possible terminator prefix is left. */
enum framer_status async_chat__framer_feed(struct framer *fr, struct evbuffer *in,
    const struct framer_sink *sink, void *ctx);

/* End of input: frame what is left, then hand the held-back bytes to
 * data() as ordinary frame bytes. */
enum framer_status async_chat__framer_finish(struct framer *fr, struct evbuffer *in,
    const struct framer_sink *sink, void *ctx);

#endif /* ASYNCHAT_FRAMER_H_INCLUDED_ */
