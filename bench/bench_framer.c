/*
 * bench_framer.c - micro-benchmark of libasynchat's framer (lib/framer.c),
 * with no sockets: how fast it splits an in-memory evbuffer, against the
 * ceiling of a plain memchr()/memmem() loop over the same bytes, and
 * whether its cost per byte stays flat when one long frame arrives in
 * tiny pieces.
 *
 *   usage: bench_framer [-s MiB] [-l MiB] [-r reps]
 *
 *   -s  size of the framed stream (default 256 MiB)
 *   -l  length of the long frame of the linearity check (default 64 MiB;
 *       a frame of 1/16 of it is measured too, to show any growth)
 *   -r  repetitions of each throughput measurement; the best counts
 *       (default 3)
 *
 * Throughput: the stream is 64-byte frames and the sink only counts (it
 * drains what it is given).  Rows:
 *   "\r\n" string     62 printable bytes + "\r\n", terminator "\r\n"
 *   line mode         the same bytes, async_chat__framer_set_line()
 *   "\r\n\r\n" string frames "<29>\r\n<29>\r\n\r\n": a 4-byte terminator
 *                     (SMTP's "\r\n.\r\n" style) that partly matches
 *                     inside every frame
 * Splitters:
 *   ceiling           memchr() for the first byte and a compare (memmem()
 *                     for the 4-byte terminator) over the contiguous
 *                     bytes, no evbuffer at all;
 *   framer, whole     async_chat__framer_feed() once over one evbuffer holding the
 *                     whole stream in 64 KiB-ish chains;
 *   framer, 64K feeds the stream added 64 KiB-ish at a time with a
 *                     async_chat__framer_feed() after each, as a channel sees it;
 *   evbuffer_search   evbuffer_search()+evbuffer_drain() over the whole
 *                     evbuffer, as a hand-written libevent server does.
 *
 * Linearity: one frame of -l bytes (letters, then the terminator) is
 * added to an evbuffer in pieces of 1, 16 and 65536 bytes, calling
 * async_chat__framer_feed() after each piece, for every kind of terminator, with the
 * counting sink; the baseline row does the same evbuffer_add() and
 * evbuffer_drain() with no framer.  ns/byte should not depend on the frame
 * length ("growth" near 1.0); the piece size only adds a constant cost per
 * piece.  Then the same with a sink that moves the bytes into a frame
 * evbuffer, as the channel's message mode does, on a smaller frame, with
 * the heap it holds per frame byte.
 *
 * Times are the process's CPU time (user and system), so that other load
 * on the machine does not count.  The last line is a summary for
 * bench/run-bench.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem */
#endif
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "framer.h"

#define FRAME 64u
#define SLICE 65521u /* a prime: frames straddle chain boundaries */

struct counter {
	uint64_t frames, bytes;
	int bad;
	struct evbuffer *frame; /* the moving sink's frame buffer */
	size_t heap0, heap_max; /* heap in use: at the start, most seen */
};

static size_t
heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
#else
	return 0; /* the heap column then reads 0 */
#endif
}

static int
count_data(void *ctx, struct evbuffer *in, size_t len)
{
	struct counter *c = ctx;

	evbuffer_drain(in, len);
	c->bytes += len;
	return 0;
}

/* The fast path's form of collect: a pointer the framer drains itself. */
static int
count_bytes(void *ctx, const void *p, size_t n)
{
	struct counter *c = ctx;

	(void)p;
	c->bytes += n;
	return 0;
}

static int
count_found(void *ctx)
{
	struct counter *c = ctx;

	c->frames++;
	return 0;
}

/* As the channel's message mode does: runs of up to 4 KiB are copied into
 * the frame buffer (moving a chain a small read left mostly empty would
 * pin it), bigger runs are moved; found_terminator empties the buffer. */
static int
move_data(void *ctx, struct evbuffer *in, size_t len)
{
	struct counter *c = ctx;
	struct evbuffer_iovec v[8];
	int n, i;

	if (len <= 4096 && (n = evbuffer_peek(in, (ev_ssize_t)len, NULL, v,
				8)) <= 8) {
		size_t done = 0;

		for (i = 0; i < n && done < len; i++) {
			size_t piece = v[i].iov_len < len - done ?
			    v[i].iov_len : len - done;

			evbuffer_add(c->frame, v[i].iov_base, piece);
			done += piece;
		}
		evbuffer_drain(in, done);
	} else {
		evbuffer_remove_buffer(in, c->frame, len);
	}
	c->bytes += len;
	return 0;
}

static int
move_bytes(void *ctx, const void *p, size_t n)
{
	struct counter *c = ctx;

	evbuffer_add(c->frame, p, n);
	c->bytes += n;
	return 0;
}

static int
move_found(void *ctx)
{
	struct counter *c = ctx;
	size_t heap = heap_in_use();

	if (heap > c->heap_max)
		c->heap_max = heap;
	c->frames++;
	evbuffer_drain(c->frame, evbuffer_get_length(c->frame));
	return 0;
}

static const struct framer_sink count_sink = {count_data, count_found,
    count_bytes};
static const struct framer_sink move_sink = {move_data, move_found,
    move_bytes};

/* CPU time, not wall-clock time: on a shared machine the time other
 * processes take does not count against the framer. */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
fill_letters(unsigned char *p, size_t n, uint64_t *x)
{
	size_t i;

	for (i = 0; i < n; i++) {
		*x ^= *x << 13;
		*x ^= *x >> 7;
		*x ^= *x << 17;
		p[i] = (unsigned char)('a' + (*x >> 11) % 26);
	}
}

static void *
xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL) {
		perror("bench_framer: malloc");
		exit(1);
	}
	return p;
}

/* The stream of 64-byte frames: kind 0 "<62>\r\n", kind 1
 * "<29>\r\n<29>\r\n\r\n".  One frame's letters are repeated with a
 * varying first byte, which is quick to build and keeps every frame's
 * bytes different from its neighbours'. */
static unsigned char *
make_stream(size_t total, int kind)
{
	unsigned char *s = xmalloc(total), proto[FRAME];
	uint64_t x = 88172645463325252ull;
	size_t off;

	if (kind == 0) {
		fill_letters(proto, 62, &x);
		memcpy(proto + 62, "\r\n", 2);
	} else {
		fill_letters(proto, 29, &x);
		memcpy(proto + 29, "\r\n", 2);
		fill_letters(proto + 31, 29, &x);
		memcpy(proto + 60, "\r\n\r\n", 4);
	}
	for (off = 0; off + FRAME <= total; off += FRAME) {
		memcpy(s + off, proto, FRAME);
		s[off] = (unsigned char)('a' + (off / FRAME) % 26);
	}
	return s;
}

static void
add_slice(struct evbuffer *b, const unsigned char *s, size_t total,
    size_t off)
{
	size_t n = total - off < SLICE ? total - off : SLICE;

	evbuffer_add_reference(b, s + off, n, NULL, NULL);
}

enum how { H_CEILING, H_FRAMER_WHOLE, H_FRAMER_FEEDS, H_SEARCH };

static void
set_term(struct framer *fr, enum async_chat_terminator_kind kind,
    const char *term, size_t tlen)
{
	async_chat__framer_init(fr);
	if (kind == ASYNC_CHAT_TERM_LINE)
		async_chat__framer_set_line(fr);
	else
		async_chat__framer_set_string(fr, term, tlen);
}

/* Split the stream once; returns seconds, sets *frames. */
static double
split_once(const unsigned char *s, size_t total, enum how how,
    enum async_chat_terminator_kind kind, const char *term, size_t tlen,
    uint64_t *frames)
{
	struct evbuffer *b = evbuffer_new();
	struct framer fr;
	struct counter c;
	double t0, t1;
	size_t off;

	memset(&c, 0, sizeof(c));
	if (how == H_FRAMER_WHOLE || how == H_SEARCH)
		for (off = 0; off < total; off += SLICE)
			add_slice(b, s, total, off);
	t0 = now();
	switch (how) {
	case H_FRAMER_WHOLE:
		set_term(&fr, kind, term, tlen);
		if (async_chat__framer_feed(&fr, b, &count_sink, &c) != FRAMER_IDLE)
			c.bad = 1;
		async_chat__framer_clear(&fr);
		break;
	case H_FRAMER_FEEDS:
		set_term(&fr, kind, term, tlen);
		for (off = 0; off < total; off += SLICE) {
			add_slice(b, s, total, off);
			if (async_chat__framer_feed(&fr, b, &count_sink, &c) !=
			    FRAMER_IDLE)
				c.bad = 1;
		}
		async_chat__framer_clear(&fr);
		break;
	case H_SEARCH:
		for (;;) {
			struct evbuffer_ptr p = evbuffer_search(b, term, tlen,
			    NULL);

			if (p.pos < 0)
				break;
			evbuffer_drain(b, (size_t)p.pos + tlen);
			c.frames++;
		}
		break;
	case H_CEILING: {
		const unsigned char *p = s, *end = s + total;

		if (tlen > 2) {
			while (p < end) {
				const unsigned char *q = memmem(p,
				    (size_t)(end - p), term, tlen);

				if (q == NULL)
					break;
				c.frames++;
				p = q + tlen;
			}
			break;
		}
		while (p < end) {
			const unsigned char *q = memchr(p, term[0],
			    (size_t)(end - p));

			if (q == NULL)
				break;
			if ((size_t)(end - q) >= tlen &&
			    memcmp(q + 1, term + 1, tlen - 1) == 0) {
				c.frames++;
				p = q + tlen;
			} else
				p = q + 1;
		}
		break;
	}
	}
	t1 = now();
	evbuffer_free(b);
	*frames = c.bad ? 0 : c.frames;
	return t1 - t0;
}

static double
best_split(const unsigned char *s, size_t total, enum how how,
    enum async_chat_terminator_kind kind, const char *term, size_t tlen,
    int reps, int *ok)
{
	double best = 1e30;
	int r;

	for (r = 0; r < reps; r++) {
		uint64_t frames;
		double t = split_once(s, total, how, kind, term, tlen, &frames);

		if (frames != total / FRAME)
			*ok = 0;
		if (t < best)
			best = t;
	}
	return best;
}

/* Ratios of the framer to the ceiling, for the summary; 0 once a
 * splitter found the wrong number of frames. */
static double ratio_crlf, ratio_crlf_feeds, ratio_line, ratio_term4;
static int throughput_ok = 1;

static void
throughput(size_t total, int reps)
{
	static const struct {
		const char *name;
		int stream;
		enum async_chat_terminator_kind kind;
		const char *term;
		size_t tlen;
		double *ratio_whole, *ratio_feeds;
	} rows[] = {
		{"\"\\r\\n\" string", 0, ASYNC_CHAT_TERM_STRING, "\r\n", 2,
		    &ratio_crlf, &ratio_crlf_feeds},
		{"line mode", 0, ASYNC_CHAT_TERM_LINE, "\n", 1, NULL,
		    &ratio_line},
		{"\"\\r\\n\\r\\n\" string", 1, ASYNC_CHAT_TERM_STRING,
		    "\r\n\r\n", 4, NULL, &ratio_term4},
	};
	static const char *const names[] = {"ceiling (memchr)",
	    "framer, whole buffer", "framer, 64K feeds",
	    "evbuffer_search+drain"};
	unsigned char *stream[2];
	size_t i;
	int ok = 1, h;

	stream[0] = make_stream(total, 0);
	stream[1] = make_stream(total, 1);
	printf("framer throughput: %zu MiB of %u-byte frames, counting sink, "
	       "best of %d\n",
	    total >> 20, FRAME, reps);
	printf("  %-18s %-22s %10s %7s %8s\n", "terminator", "splitter",
	    "Mframes/s", "GB/s", "vs ceil");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const unsigned char *s = stream[rows[i].stream];
		double n = (double)(total / FRAME), tc = 0;

		for (h = H_CEILING; h <= H_SEARCH; h++) {
			double t = best_split(s, total, (enum how)h,
			    rows[i].kind, rows[i].term, rows[i].tlen, reps,
			    &ok);
			const char *name = names[h];

			if (h == H_CEILING) {
				tc = t;
				if (rows[i].tlen > 2)
					name = "ceiling (memmem)";
			}
			if (h == H_FRAMER_WHOLE && rows[i].ratio_whole)
				*rows[i].ratio_whole = tc / t;
			if (h == H_FRAMER_FEEDS && rows[i].ratio_feeds)
				*rows[i].ratio_feeds = tc / t;
			printf("  %-18s %-22s %10.1f %7.2f %8.2f\n",
			    h == H_CEILING ? rows[i].name : "", name,
			    n / t / 1e6, (double)total / t / 1e9, tc / t);
			fflush(stdout);
		}
	}
	if (!ok)
		printf("  ERROR: a splitter found the wrong number of frames\n");
	throughput_ok = ok;
	free(stream[0]);
	free(stream[1]);
}

enum lkind { L_BASE, L_STR2, L_STR4, L_LINE, L_ANY, L_COUNT, L_NONE,
	L_MOVE };

static const char *const lnames[] = {"no framer (baseline)",
    "\"\\r\\n\" string", "\"\\r\\n\\r\\n\" string", "line mode",
    "any {\"\\r\\n\",\"\\n\"}", "count", "none", "\"\\r\\n\", moving sink"};

/* Feed one frame of flen bytes (plus its terminator) in pieces; returns
 * ns per frame byte, or a negative value if the frame came out wrong.
 * *heap: heap bytes held per frame byte at the frame's end (moving sink
 * only). */
static double
feed_long(const unsigned char *src, size_t flen, size_t piece,
    enum lkind k, double *heap)
{
	static const void *const any_terms[] = {"\r\n", "\n"};
	static const size_t any_lens[] = {2, 1};
	struct evbuffer *in = evbuffer_new();
	struct framer fr;
	struct counter c;
	const struct framer_sink *sink =
	    k == L_MOVE ? &move_sink : &count_sink;
	size_t total = flen, off;
	uint64_t want_frames = 1;
	double t0, t1;

	memset(&c, 0, sizeof(c));
	c.frame = evbuffer_new();
	async_chat__framer_init(&fr);
	switch (k) {
	case L_BASE:
	case L_NONE:
		async_chat__framer_set_none(&fr);
		want_frames = 0;
		break;
	case L_STR2:
	case L_MOVE:
		async_chat__framer_set_string(&fr, "\r\n", 2);
		total += 2;
		break;
	case L_STR4:
		async_chat__framer_set_string(&fr, "\r\n\r\n", 4);
		total += 4;
		break;
	case L_LINE:
		async_chat__framer_set_line(&fr);
		total += 2;
		break;
	case L_ANY:
		async_chat__framer_set_any(&fr, any_terms, any_lens, 2);
		total += 2;
		break;
	case L_COUNT:
		async_chat__framer_set_count(&fr, flen);
		break;
	}
	c.heap0 = heap_in_use();
	t0 = now();
	for (off = 0; off < total; off += piece) {
		size_t n = total - off < piece ? total - off : piece;

		evbuffer_add(in, src + off, n);
		if (k == L_BASE) {
			evbuffer_drain(in, n);
			c.bytes += n;
		} else if (async_chat__framer_feed(&fr, in, sink, &c) != FRAMER_IDLE)
			c.bad = 1;
	}
	t1 = now();
	async_chat__framer_clear(&fr);
	evbuffer_free(in);
	evbuffer_free(c.frame);
	if (heap != NULL)
		*heap = c.heap_max > c.heap0 ?
		    (double)(c.heap_max - c.heap0) / (double)flen :
		    0;
	if (c.bad || c.frames != want_frames || c.bytes != flen)
		return -1;
	return (t1 - t0) * 1e9 / (double)flen;
}

static double max_growth;

static void
linearity(size_t flen)
{
	static const size_t pieces[] = {1, 16, 65536};
	size_t small = flen / 16, p;
	unsigned char *big_src = xmalloc(flen + 4), *small_src;
	uint64_t x = 2463534242ull;
	double heap[3];
	int k, ok = 1;

	small_src = xmalloc(small + 4);
	fill_letters(big_src, flen, &x);
	memcpy(small_src, big_src, small);
	/* Warm the allocator and the pages up. */
	feed_long(big_src, flen, 65536, L_BASE, NULL);

	printf("\nframer linearity: one frame fed in pieces, ns per frame "
	       "byte; growth = %zu KiB frame / %zu KiB frame\n",
	    flen >> 10, small >> 10);
	printf("  %-24s", "terminator");
	for (p = 0; p < 3; p++)
		printf(" %6zu B pieces growth", pieces[p]);
	printf("\n");
	for (k = L_BASE; k <= L_MOVE; k++) {
		const char *term = k == L_STR4 ? "\r\n\r\n" : "\r\n";
		size_t tl = k == L_STR4 ? 4 : 2;
		/* Moving 1-byte pieces holds a chain per byte: keep the
		 * frame small (see the heap column). */
		size_t bl = k == L_MOVE ? flen / 64 : flen;
		size_t sl = k == L_MOVE ? flen / 1024 : small;

		memcpy(big_src + bl, term, tl);
		memcpy(small_src + sl, term, tl);
		if (k == L_MOVE)
			printf("  (moving sink: %zu KiB and %zu KiB frames)\n",
			    bl >> 10, sl >> 10);
		printf("  %-24s", lnames[k]);
		fflush(stdout);
		for (p = 0; p < 3; p++) {
			double big = 1e30, little = 1e30, growth, t;
			int r;

			/* Best of two, each: less noise in the growth. */
			for (r = 0; r < 2; r++) {
				t = feed_long(big_src, bl, pieces[p],
				    (enum lkind)k, &heap[p]);
				big = t < 0 || big < 0 ? -1 : t < big ? t : big;
				t = feed_long(small_src, sl, pieces[p],
				    (enum lkind)k, NULL);
				little = t < 0 || little < 0 ? -1 :
				    t < little ? t : little;
			}
			growth = big / little;

			if (big < 0 || little < 0) {
				ok = 0;
				printf(" %15s %6s", "WRONG", "");
				continue;
			}
			if (k != L_BASE && k != L_MOVE && growth > max_growth)
				max_growth = growth;
			printf(" %15.3f %6.2f", big, growth);
			fflush(stdout);
		}
		printf("\n");
		if (k == L_MOVE) {
			printf("  %-24s", "  heap held per byte");
			for (p = 0; p < 3; p++)
				printf(" %13.1f B %6s", heap[p], "");
			printf("\n");
		}
		/* Restore the letters the terminator overwrote. */
		fill_letters(big_src + bl, tl, &x);
		fill_letters(small_src + sl, tl, &x);
	}
	if (!ok)
		printf("  ERROR: a frame came out wrong\n");
	free(big_src);
	free(small_src);
	printf("\nsummary: framer_vs_ceiling_crlf=%.3f "
	       "framer_feeds_vs_ceiling_crlf=%.3f "
	       "framer_feeds_vs_ceiling_line=%.3f "
	       "framer_feeds_vs_ceiling_crlfcrlf=%.3f max_growth=%.2f "
	       "moving_heap_per_byte_1B=%.1f frames_ok=%d\n",
	    ratio_crlf, ratio_crlf_feeds, ratio_line, ratio_term4,
	    max_growth, heap[0], ok && throughput_ok);
}

int
main(int argc, char **argv)
{
	size_t total = (size_t)256 << 20, flen = (size_t)64 << 20;
	int reps = 3, opt;

	while ((opt = getopt(argc, argv, "s:l:r:")) != -1) {
		switch (opt) {
		case 's':
			total = (size_t)strtoul(optarg, NULL, 10) << 20;
			break;
		case 'l':
			flen = (size_t)strtoul(optarg, NULL, 10) << 20;
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		default:
			fprintf(stderr,
			    "usage: %s [-s MiB] [-l MiB] [-r reps]\n",
			    argv[0]);
			return 2;
		}
	}
	if (total < FRAME || flen < ((size_t)1 << 20) || reps < 1) {
		fprintf(stderr, "bench_framer: -s and -l must be at least 1\n");
		return 2;
	}
	total -= total % FRAME;
	throughput(total, reps);
	linearity(flen);
	return 0;
}
