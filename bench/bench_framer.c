/*
 * bench_framer.c - micro-benchmark of libasynchat's public framer
 * (async_chat_framer_next()), with no sockets: how fast it splits bytes in
 * memory, against the ceiling of a plain memchr()/memmem() loop (or, for
 * length fields, a hand-written decode loop) over the same bytes, and
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
 * Throughput: the stream is 64-byte frames and the caller only counts the
 * DATA and END events.  Rows:
 *   "\r\n" string     62 printable bytes + "\r\n", terminator "\r\n"
 *   line mode         the same bytes, async_chat_framer_set_terminator_line()
 *   "\r\n\r\n" string frames "<29>\r\n<29>\r\n\r\n": a 4-byte terminator
 *                     (SMTP's "\r\n.\r\n" style) that partly matches
 *                     inside every frame
 *   length field      a 4-byte big-endian length, then a 64-byte body,
 *                     { .width = 4, .strip = 4 }
 * Splitters:
 *   ceiling           memchr() for the first byte and a compare (memmem()
 *                     for the 4-byte terminator; a loop reading each
 *                     header and skipping its body for length fields) over
 *                     the contiguous bytes;
 *   framer, one span  async_chat_framer_next() over the whole stream as one
 *                     span;
 *   framer, 64K spans the stream handed over 64 KiB-ish at a time, as a
 *                     channel hands over its input's extents;
 *   evbuffer_search   evbuffer_search()+evbuffer_drain() over an evbuffer
 *                     holding the stream in 64 KiB-ish chains, as a
 *                     hand-written libevent server does (strings only).
 *
 * Linearity: one frame of -l bytes (letters, then the terminator) arrives
 * in pieces of 1, 16 and 65536 bytes, each copied into a read buffer (as
 * read(2) would) and framed from there, for every kind of terminator,
 * with the counting caller; the baseline row does the same copies with no
 * framer.  ns/byte should not depend on the frame length ("growth" near
 * 1.0); the piece size only adds a constant cost per piece.  Then the same
 * with a caller that appends the frame's bytes to an evbuffer, as the
 * channel's message mode does, on a smaller frame, with the heap it holds
 * per frame byte.
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

#include "asynchat.h"

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

/*
 * The caller: one span, events until NEED_MORE.  The counting caller only
 * counts; the moving one appends the frame's bytes to an evbuffer, as the
 * channel's message mode does, and empties it at each frame's end.
 */
static void
frame_span(struct async_chat_framer *fr, const unsigned char *p, size_t n,
    struct counter *c, int moving)
{
	struct async_chat_framer_event ev;
	size_t off = 0;

	for (;;) {
		int kind = async_chat_framer_next(fr, p + off, n - off, &ev);

		off += ev.consumed;
		if (kind == ASYNC_CHAT_FRAMER_DATA) {
			if (moving)
				evbuffer_add(c->frame, ev.data, (size_t)ev.len);
			c->bytes += ev.len;
		} else if (kind == ASYNC_CHAT_FRAMER_END) {
			c->frames++;
			if (moving) {
				size_t heap = heap_in_use();

				if (heap > c->heap_max)
					c->heap_max = heap;
				evbuffer_drain(c->frame,
				    evbuffer_get_length(c->frame));
			}
		} else {
			if (kind != ASYNC_CHAT_FRAMER_NEED_MORE)
				c->bad = 1;
			break;
		}
	}
}

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

/* Bytes per frame of stream kind k: a 4-byte header before the length
 * field's 64-byte bodies. */
static size_t
frame_size(int kind)
{
	return kind == 2 ? FRAME + 4 : FRAME;
}

/* The stream of frames: kind 0 "<62>\r\n", kind 1
 * "<29>\r\n<29>\r\n\r\n", kind 2 a 4-byte big-endian 64 then <64>.
 * One frame's letters are repeated with a varying first letter, which is
 * quick to build and keeps every frame's bytes different from its
 * neighbours'.  total is cut to whole frames. */
static unsigned char *
make_stream(size_t *total, int kind)
{
	unsigned char *s, proto[FRAME + 4];
	uint64_t x = 88172645463325252ull;
	const size_t fs = frame_size(kind);
	size_t off, first = 0;

	*total -= *total % fs;
	s = xmalloc(*total);
	if (kind == 0) {
		fill_letters(proto, 62, &x);
		memcpy(proto + 62, "\r\n", 2);
	} else if (kind == 1) {
		fill_letters(proto, 29, &x);
		memcpy(proto + 29, "\r\n", 2);
		fill_letters(proto + 31, 29, &x);
		memcpy(proto + 60, "\r\n\r\n", 4);
	} else {
		memcpy(proto, "\0\0\0\x40", 4);
		fill_letters(proto + 4, FRAME, &x);
		first = 4;
	}
	for (off = 0; off + fs <= *total; off += fs) {
		memcpy(s + off, proto, fs);
		s[off + first] = (unsigned char)('a' + (off / fs) % 26);
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

enum how { H_CEILING, H_FRAMER_ONE, H_FRAMER_SPANS, H_SEARCH };

static const struct async_chat_length_field length4 = {.width = 4,
    .strip = 4};

static struct async_chat_framer *
new_framer(enum async_chat_terminator_kind kind, const char *term,
    size_t tlen)
{
	struct async_chat_framer *fr = async_chat_framer_new();

	if (fr == NULL) {
		perror("bench_framer: async_chat_framer_new");
		exit(1);
	}
	if (kind == ASYNC_CHAT_TERM_LINE)
		async_chat_framer_set_terminator_line(fr);
	else if (kind == ASYNC_CHAT_TERM_LENGTH)
		async_chat_framer_set_terminator_length(fr, &length4);
	else
		async_chat_framer_set_terminator(fr, term, tlen);
	return fr;
}

/* The ceilings: the plainest loops that find the same frames. */
static uint64_t
ceiling(const unsigned char *s, size_t total,
    enum async_chat_terminator_kind kind, const char *term, size_t tlen)
{
	const unsigned char *p = s, *end = s + total;
	uint64_t frames = 0;

	if (kind == ASYNC_CHAT_TERM_LENGTH) {
		while ((size_t)(end - p) >= 4) {
			uint32_t len = (uint32_t)p[0] << 24 |
			    (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];

			if ((size_t)(end - p) - 4 < len)
				break;
			p += 4 + (size_t)len;
			frames++;
		}
		return frames;
	}
	if (tlen > 2) {
		while (p < end) {
			const unsigned char *q = memmem(p, (size_t)(end - p),
			    term, tlen);

			if (q == NULL)
				break;
			frames++;
			p = q + tlen;
		}
		return frames;
	}
	while (p < end) {
		const unsigned char *q = memchr(p, term[0], (size_t)(end - p));

		if (q == NULL)
			break;
		if ((size_t)(end - q) >= tlen &&
		    memcmp(q + 1, term + 1, tlen - 1) == 0) {
			frames++;
			p = q + tlen;
		} else
			p = q + 1;
	}
	return frames;
}

/* Split the stream once; returns seconds, sets *frames. */
static double
split_once(const unsigned char *s, size_t total, enum how how,
    enum async_chat_terminator_kind kind, const char *term, size_t tlen,
    uint64_t *frames)
{
	struct evbuffer *b = evbuffer_new();
	struct async_chat_framer *fr = NULL;
	struct counter c;
	double t0, t1;
	size_t off;

	memset(&c, 0, sizeof(c));
	if (how == H_SEARCH)
		for (off = 0; off < total; off += SLICE)
			add_slice(b, s, total, off);
	if (how == H_FRAMER_ONE || how == H_FRAMER_SPANS)
		fr = new_framer(kind, term, tlen);
	t0 = now();
	switch (how) {
	case H_FRAMER_ONE:
		frame_span(fr, s, total, &c, 0);
		break;
	case H_FRAMER_SPANS:
		for (off = 0; off < total; off += SLICE)
			frame_span(fr, s + off,
			    total - off < SLICE ? total - off : SLICE, &c, 0);
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
	case H_CEILING:
		c.frames = ceiling(s, total, kind, term, tlen);
		break;
	}
	t1 = now();
	async_chat_framer_free(fr);
	evbuffer_free(b);
	*frames = c.bad ? 0 : c.frames;
	return t1 - t0;
}

static double
best_split(const unsigned char *s, size_t total, size_t fs, enum how how,
    enum async_chat_terminator_kind kind, const char *term, size_t tlen,
    int reps, int *ok)
{
	double best = 1e30;
	int r;

	for (r = 0; r < reps; r++) {
		uint64_t frames;
		double t = split_once(s, total, how, kind, term, tlen, &frames);

		if (frames != total / fs)
			*ok = 0;
		if (t < best)
			best = t;
	}
	return best;
}

/* Ratios of the framer to the ceiling, for the summary; 0 once a
 * splitter found the wrong number of frames. */
static double ratio_crlf, ratio_crlf_spans, ratio_line, ratio_term4,
    ratio_length;
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
		double *ratio_one, *ratio_spans;
	} rows[] = {
		{"\"\\r\\n\" string", 0, ASYNC_CHAT_TERM_STRING, "\r\n", 2,
		    &ratio_crlf, &ratio_crlf_spans},
		{"line mode", 0, ASYNC_CHAT_TERM_LINE, "\n", 1, NULL,
		    &ratio_line},
		{"\"\\r\\n\\r\\n\" string", 1, ASYNC_CHAT_TERM_STRING,
		    "\r\n\r\n", 4, NULL, &ratio_term4},
		{"length field", 2, ASYNC_CHAT_TERM_LENGTH, NULL, 0, NULL,
		    &ratio_length},
	};
	static const char *const names[] = {"ceiling (memchr)",
	    "framer, one span", "framer, 64K spans",
	    "evbuffer_search+drain"};
	unsigned char *stream[3];
	size_t i, len[3];
	int ok = 1, h;

	for (i = 0; i < 3; i++) {
		len[i] = total;
		stream[i] = make_stream(&len[i], (int)i);
	}
	printf("framer throughput: %zu MiB of %u-byte frames (length "
	       "fields: 4 + %u), counting caller, best of %d\n",
	    total >> 20, FRAME, FRAME, reps);
	printf("  %-18s %-22s %10s %7s %8s\n", "terminator", "splitter",
	    "Mframes/s", "GB/s", "vs ceil");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const int k = rows[i].stream;
		const unsigned char *s = stream[k];
		const size_t fs = frame_size(k);
		double n = (double)(len[k] / fs), tc = 0;

		for (h = H_CEILING; h <= H_SEARCH; h++) {
			double t;
			const char *name = names[h];

			if (h == H_SEARCH &&
			    rows[i].kind == ASYNC_CHAT_TERM_LENGTH)
				continue;
			t = best_split(s, len[k], fs, (enum how)h,
			    rows[i].kind, rows[i].term, rows[i].tlen, reps,
			    &ok);
			if (h == H_CEILING) {
				tc = t;
				if (rows[i].tlen > 2)
					name = "ceiling (memmem)";
				if (rows[i].kind == ASYNC_CHAT_TERM_LENGTH)
					name = "ceiling (decode loop)";
			}
			if (h == H_FRAMER_ONE && rows[i].ratio_one)
				*rows[i].ratio_one = tc / t;
			if (h == H_FRAMER_SPANS && rows[i].ratio_spans)
				*rows[i].ratio_spans = tc / t;
			printf("  %-18s %-22s %10.1f %7.2f %8.2f\n",
			    h == H_CEILING ? rows[i].name : "", name,
			    n / t / 1e6, (double)len[k] / t / 1e9, tc / t);
			fflush(stdout);
		}
	}
	if (!ok)
		printf("  ERROR: a splitter found the wrong number of frames\n");
	throughput_ok = ok;
	for (i = 0; i < 3; i++)
		free(stream[i]);
}

enum lkind { L_BASE, L_STR2, L_STR4, L_LINE, L_ANY, L_COUNT, L_NONE,
	L_LENGTH, L_MOVE };

static const char *const lnames[] = {"no framer (baseline)",
    "\"\\r\\n\" string", "\"\\r\\n\\r\\n\" string", "line mode",
    "any {\"\\r\\n\",\"\\n\"}", "count", "none", "length field",
    "\"\\r\\n\", moving caller"};

/* Feed one frame of flen bytes (plus its terminator, or after its
 * length-field header) in pieces, each copied into a read buffer first;
 * returns ns per frame byte, or a negative value if the frame came out
 * wrong.  *heap: heap bytes held per frame byte at the frame's end (moving
 * caller only). */
static double
feed_long(const unsigned char *src, size_t flen, size_t piece,
    enum lkind k, double *heap)
{
	static const void *const any_terms[] = {"\r\n", "\n"};
	static const size_t any_lens[] = {2, 1};
	static unsigned char rbuf[65536];
	struct async_chat_framer *fr = async_chat_framer_new();
	struct counter c;
	size_t total = flen, off;
	uint64_t want_frames = 1;
	double t0, t1;

	if (fr == NULL) {
		perror("bench_framer: async_chat_framer_new");
		exit(1);
	}
	memset(&c, 0, sizeof(c));
	c.frame = evbuffer_new();
	switch (k) {
	case L_BASE:
	case L_NONE:
		want_frames = 0;
		break;
	case L_STR2:
	case L_MOVE:
		async_chat_framer_set_terminator(fr, "\r\n", 2);
		total += 2;
		break;
	case L_STR4:
		async_chat_framer_set_terminator(fr, "\r\n\r\n", 4);
		total += 4;
		break;
	case L_LINE:
		async_chat_framer_set_terminator_line(fr);
		total += 2;
		break;
	case L_ANY:
		async_chat_framer_set_terminators(fr, any_terms, any_lens, 2);
		total += 2;
		break;
	case L_COUNT:
		async_chat_framer_set_terminator_count(fr, flen);
		break;
	case L_LENGTH:
		/* src holds the header first: see linearity() */
		async_chat_framer_set_terminator_length(fr, &length4);
		total += 4;
		break;
	}
	c.heap0 = heap_in_use();
	t0 = now();
	for (off = 0; off < total; off += piece) {
		size_t n = total - off < piece ? total - off : piece;

		memcpy(rbuf, src + off, n);
		if (k == L_BASE)
			c.bytes += n;
		else
			frame_span(fr, rbuf, n, &c, k == L_MOVE);
	}
	t1 = now();
	async_chat_framer_free(fr);
	evbuffer_free(c.frame);
	if (heap != NULL)
		*heap = c.heap_max > c.heap0 ?
		    (double)(c.heap_max - c.heap0) / (double)flen :
		    0;
	if (k == L_BASE)
		c.bytes -= total - flen;
	if (c.bad || c.frames != want_frames || c.bytes != flen)
		return -1;
	return (t1 - t0) * 1e9 / (double)flen;
}

static double max_growth;

static void
put_be32(unsigned char *p, size_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
linearity(size_t flen)
{
	static const size_t pieces[] = {1, 16, 65536};
	size_t small = flen / 16, p;
	/* 4 bytes in front of each for a length-field header */
	unsigned char *big_base = xmalloc(flen + 8), *small_base;
	unsigned char *big_src = big_base + 4, *small_src;
	uint64_t x = 2463534242ull;
	double heap[3];
	int k, ok = 1;

	small_base = xmalloc(small + 8);
	small_src = small_base + 4;
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

		const unsigned char *big = big_src, *little = small_src;

		memcpy(big_src + bl, term, tl);
		memcpy(small_src + sl, term, tl);
		if (k == L_LENGTH) {
			put_be32(big_base, bl);
			put_be32(small_base, sl);
			big = big_base;
			little = small_base;
		}
		if (k == L_MOVE)
			printf("  (moving caller: %zu KiB and %zu KiB frames)\n",
			    bl >> 10, sl >> 10);
		printf("  %-24s", lnames[k]);
		fflush(stdout);
		for (p = 0; p < 3; p++) {
			double tb = 1e30, ts = 1e30, growth, t;
			int r;

			/* Best of two, each: less noise in the growth. */
			for (r = 0; r < 2; r++) {
				t = feed_long(big, bl, pieces[p],
				    (enum lkind)k, &heap[p]);
				tb = t < 0 || tb < 0 ? -1 : t < tb ? t : tb;
				t = feed_long(little, sl, pieces[p],
				    (enum lkind)k, NULL);
				ts = t < 0 || ts < 0 ? -1 : t < ts ? t : ts;
			}
			growth = tb / ts;

			if (tb < 0 || ts < 0) {
				ok = 0;
				printf(" %15s %6s", "WRONG", "");
				continue;
			}
			if (k != L_BASE && k != L_MOVE && growth > max_growth)
				max_growth = growth;
			printf(" %15.3f %6.2f", tb, growth);
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
	free(big_base);
	free(small_base);
	printf("\nsummary: framer_vs_ceiling_crlf=%.3f "
	       "framer_feeds_vs_ceiling_crlf=%.3f "
	       "framer_feeds_vs_ceiling_line=%.3f "
	       "framer_feeds_vs_ceiling_crlfcrlf=%.3f "
	       "framer_feeds_vs_ceiling_length=%.3f max_growth=%.2f "
	       "moving_heap_per_byte_1B=%.1f frames_ok=%d\n",
	    ratio_crlf, ratio_crlf_spans, ratio_line, ratio_term4,
	    ratio_length, max_growth, heap[0], ok && throughput_ok);
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
	throughput(total, reps);
	linearity(flen);
	return 0;
}
