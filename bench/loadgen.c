/*
 * loadgen.c - the load generator of the libasynchat benchmark, 127.0.0.1
 * only.  It sends a deterministic stream on each connection, keeps a
 * bounded number of messages in flight, and checks every byte that the
 * echo server sends back.
 *
 * It has to be faster than the servers it measures, so it does its own
 * socket I/O on libevent's event loop rather than use bufferevents
 * (libevent 2.1 reads at most 4096 bytes a call, each after an ioctl):
 * a recv() of up to 64 KiB into one buffer, checked in place, and
 * writev() of the messages straight from the payload tables.
 *
 *   usage: loadgen -p port [-m lines|length|bulk|idle] [-c conns]
 *                  [-n messages] [-b bytes] [-s size] [-d depth] [-T secs]
 *
 *   lines    64-byte lines (62 printable bytes and "\r\n"), echoed;
 *   length   length-field frames: a 4-byte big-endian body length, then a
 *            size-byte binary body (default 64; the benchmark uses 64 and
 *            16384), echoed frame for frame, header included;
 *   bulk     an unframed binary stream written in size-byte pieces
 *            (default 65536); -b gives the total bytes;
 *   idle     open -c connections, say so, and hold them until the server
 *            closes them (the memory measurement).
 *
 * -n is the total number of messages over all connections (-b for bulk),
 * -d the messages in flight per connection (at most depth messages are
 * sent and not yet echoed in full at any time).  Every echoed byte, headers
 * and terminators included, is compared with the stream sent.  The clock starts when every
 * connection is up and stops when the last echoed byte has been checked.
 * The result is one line of key=value pairs:
 *
 *   mode=lines size=62 conns=1 msgs=1000000 bytes=64000000 secs=0.52 \
 *       msgs_per_s=1923076 MB_per_s=123.1 cpu=97% verified=ok
 *
 * where bytes and MB/s count the echoed bytes in one direction (1 MB =
 * 10^6 bytes) and cpu is the load generator's own CPU use (user and
 * system) while the clock ran: near 100% it, not the server, set the
 * pace.  Exit status: 0 on success, 1 on a mismatch, a connection
 * error or the time limit (-T, default 120 s), 2 on bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/util.h>

/* The payload tables: a prime length so that consecutive messages start
 * at different places, and a copy of the first PIECE_MAX bytes after the
 * end so that any PIECE_MAX bytes from any offset are contiguous. */
#define TABLE_LEN 65521u
#define PIECE_MAX 65536u
#define LINE_LEN 64u
#define CONNECT_BATCH 256
#define READ_MAX 65536u
#define IOV_MAX_LG 1024

enum mode { M_LINES, M_LENGTH, M_BULK, M_IDLE };

static unsigned char text_table[TABLE_LEN + PIECE_MAX];
static unsigned char bin_table[TABLE_LEN + PIECE_MAX];

struct conn;

struct lg {
	struct event_base *base;
	struct sockaddr_in addr;
	enum mode mode;
	const unsigned char *table;
	size_t hlen, plen, tlen; /* header, payload and trailer lengths */
	char header[32];
	int nconns, connecting, connected, done, failed, next_to_open;
	uint64_t depth;
	struct conn *conns;
	struct timespec t0, t1;
	double cpu0, cpu1; /* CPU seconds used by this process */
	uint64_t msgs, bytes;
};

struct conn {
	struct lg *lg;
	evutil_socket_t fd;
	struct event *rev, *wev;
	int id;
	uint64_t seed;
	uint64_t quota; /* messages this connection sends */
	uint64_t wmsg;  /* the message being written */
	size_t wpos;    /* bytes of message wmsg written so far */
	uint64_t rmsg;  /* messages fully received and checked */
	size_t rpos;    /* bytes of message rmsg received so far */
	int open;
	int up; /* connected */
};

static double
now_diff(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	    (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static double
cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	    (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
fill_tables(void)
{
	static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz0123456789";
	uint64_t x = 0x9E3779B97F4A7C15ull;
	size_t i;

	for (i = 0; i < TABLE_LEN; i++) {
		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		bin_table[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
		text_table[i] = (unsigned char)alnum[(x >> 7) % 62];
	}
	/* The copy is longer than the table: byte by byte, it wraps. */
	for (i = TABLE_LEN; i < TABLE_LEN + PIECE_MAX; i++) {
		bin_table[i] = bin_table[i - TABLE_LEN];
		text_table[i] = text_table[i - TABLE_LEN];
	}
}

/* The payload of message i of c starts here (plen bytes are valid). */
static const unsigned char *
payload(const struct conn *c, uint64_t i)
{
	const struct lg *lg = c->lg;

	return lg->table + (c->seed + i * lg->plen) % TABLE_LEN;
}

static void
fail(struct lg *lg, const char *what, const struct conn *c)
{
	fprintf(stderr, "loadgen: connection %d: %s\n", c != NULL ? c->id : -1,
	    what);
	lg->failed = 1;
	event_base_loopbreak(lg->base);
}

static void
conn_finish(struct conn *c)
{
	struct lg *lg = c->lg;

	if (!c->open)
		return;
	c->open = 0;
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	evutil_closesocket(c->fd);
	c->fd = -1;
	c->rev = c->wev = NULL;
	if (++lg->done == lg->nconns) {
		clock_gettime(CLOCK_MONOTONIC, &lg->t1);
		lg->cpu1 = cpu_seconds();
		event_base_loopbreak(lg->base);
	}
}

/* Messages c may have in flight end before this one. */
static uint64_t
send_limit(const struct conn *c)
{
	uint64_t lim = c->rmsg + c->lg->depth;

	return lim < c->quota ? lim : c->quota;
}

/* Write what the depth allows, straight from the tables; wait for the
 * socket when it is full.  0, or -1 after fail(). */
static int
send_more(struct conn *c)
{
	struct lg *lg = c->lg;
	const size_t mlen = lg->hlen + lg->plen + lg->tlen;

	for (;;) {
		struct iovec iov[IOV_MAX_LG];
		uint64_t lim = send_limit(c), m = c->wmsg;
		size_t pos = c->wpos, total = 0, left;
		ssize_t w;
		int n = 0;

		if (m >= lim)
			return 0;
		while (m < lim && n + 3 <= IOV_MAX_LG) {
			const struct {
				const void *p;
				size_t len;
			} part[3] = {{lg->header, lg->hlen},
			    {payload(c, m), lg->plen}, {"\r\n", lg->tlen}};
			size_t off = 0;
			int i;

			for (i = 0; i < 3; i++) {
				if (pos < off + part[i].len) {
					iov[n].iov_base = (char *)part[i].p +
					    (pos - off);
					iov[n].iov_len = off + part[i].len - pos;
					total += iov[n].iov_len;
					pos = off + part[i].len;
					n++;
				}
				off += part[i].len;
			}
			pos = 0;
			m++;
		}
		w = writev(c->fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				event_add(c->wev, NULL);
				return 0;
			}
			fail(lg, strerror(errno), c);
			return -1;
		}
		for (left = (size_t)w; left > 0;) {
			size_t rest = mlen - c->wpos;

			if (left >= rest) {
				left -= rest;
				c->wmsg++;
				c->wpos = 0;
			} else {
				c->wpos += left;
				left = 0;
			}
		}
		if ((size_t)w < total) {
			event_add(c->wev, NULL); /* the socket is full */
			return 0;
		}
	}
}

/* Check len received bytes against the stream c sent.  0 if they match. */
static int
verify(struct conn *c, const unsigned char *d, size_t len)
{
	struct lg *lg = c->lg;
	const size_t mlen = lg->hlen + lg->plen + lg->tlen;

	while (len > 0) {
		size_t pos = c->rpos, n;
		const unsigned char *want;

		if (c->rmsg > c->wmsg ||
		    (c->rmsg == c->wmsg && c->rpos >= c->wpos))
			return -1; /* more than was sent */
		if (pos < lg->hlen) {
			want = (const unsigned char *)lg->header + pos;
			n = lg->hlen - pos;
		} else if (pos < lg->hlen + lg->plen) {
			want = payload(c, c->rmsg) + (pos - lg->hlen);
			n = lg->hlen + lg->plen - pos;
		} else {
			want = (const unsigned char *)"\r\n" +
			    (pos - lg->hlen - lg->plen);
			n = mlen - pos;
		}
		if (n > len)
			n = len;
		if (memcmp(d, want, n) != 0)
			return -1;
		d += n;
		len -= n;
		c->rpos += n;
		if (c->rpos == mlen) {
			c->rpos = 0;
			c->rmsg++;
		}
	}
	return 0;
}

static void start_sending(struct lg *lg);
static void open_some(struct lg *lg);

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
	static unsigned char buf[READ_MAX];
	struct conn *c = arg;
	struct lg *lg = c->lg;
	ssize_t r;

	(void)what;
	r = recv(fd, buf, sizeof(buf), 0);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		if (lg->mode == M_IDLE)
			conn_finish(c); /* the server let go after measuring */
		else
			fail(lg, strerror(errno), c);
		return;
	}
	if (r == 0) {
		if (lg->mode == M_IDLE)
			conn_finish(c);
		else
			fail(lg, "unexpected EOF from the server", c);
		return;
	}
	if (lg->mode == M_IDLE) {
		fail(lg, "bytes from the server on an idle connection", c);
		return;
	}
	if (verify(c, buf, (size_t)r) < 0) {
		fail(lg, "echoed bytes differ from the sent stream", c);
		return;
	}
	if (c->rmsg == c->quota) {
		conn_finish(c);
		return;
	}
	send_more(c);
}

/* Writable: the connection is up, or the socket has room again. */
static void
on_write(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct lg *lg = c->lg;

	(void)what;
	if (!c->up) {
		int err = 0, one = 1;
		socklen_t len = sizeof(err);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err != 0) {
			fail(lg, strerror(err), c);
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->up = 1;
		event_add(c->rev, NULL);
		lg->connecting--;
		if (++lg->connected == lg->nconns) {
			if (lg->mode == M_IDLE) {
				printf("connected %d\n", lg->nconns);
				fflush(stdout);
			} else
				start_sending(lg);
		} else
			open_some(lg);
		return;
	}
	send_more(c);
}

static void
start_sending(struct lg *lg)
{
	int i;

	clock_gettime(CLOCK_MONOTONIC, &lg->t0);
	lg->cpu0 = cpu_seconds();
	for (i = 0; i < lg->nconns; i++) {
		struct conn *c = &lg->conns[i];

		if (c->quota == 0) {
			conn_finish(c);
			continue;
		}
		send_more(c);
	}
}

/* Open connections, at most CONNECT_BATCH connecting at once. */
static void
open_some(struct lg *lg)
{
	while (lg->next_to_open < lg->nconns &&
	    lg->connecting < CONNECT_BATCH) {
		struct conn *c = &lg->conns[lg->next_to_open++];

		c->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c->fd < 0) {
			fail(lg, strerror(errno), c);
			return;
		}
		c->rev = event_new(lg->base, c->fd, EV_READ | EV_PERSIST,
		    on_read, c);
		c->wev = event_new(lg->base, c->fd, EV_WRITE, on_write, c);
		c->open = 1; /* conn_finish() frees what there is */
		if (evutil_make_socket_nonblocking(c->fd) < 0 ||
		    c->rev == NULL || c->wev == NULL) {
			fail(lg, "cannot set up the socket", c);
			return;
		}
		lg->connecting++;
		if (connect(c->fd, (struct sockaddr *)&lg->addr,
			sizeof(lg->addr)) < 0 &&
		    errno != EINPROGRESS) {
			fail(lg, strerror(errno), c);
			return;
		}
		event_add(c->wev, NULL); /* writable: connected */
	}
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct lg *lg = arg;

	(void)fd;
	(void)what;
	fprintf(stderr, "loadgen: time limit reached (%d of %d connections "
			"done)\n",
	    lg->done, lg->nconns);
	lg->failed = 1;
	event_base_loopbreak(lg->base);
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void
usage(const char *argv0)
{
	fprintf(stderr,
	    "usage: %s -p port [-m lines|length|bulk|idle] [-c conns] "
	    "[-n messages] [-b bytes] [-s size] [-d depth] [-T secs]\n",
	    argv0);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct lg lg;
	struct event *timer;
	struct timeval limit = {120, 0};
	long port = 0;
	uint64_t total = 0, bulk_bytes = 0;
	size_t size = 0;
	int opt, i;
	double secs;

	memset(&lg, 0, sizeof(lg));
	lg.mode = M_LINES;
	lg.nconns = 1;
	lg.depth = 0;
	while ((opt = getopt(argc, argv, "p:m:c:n:b:s:d:T:")) != -1) {
		switch (opt) {
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		case 'm':
			if (strcmp(optarg, "lines") == 0)
				lg.mode = M_LINES;
			else if (strcmp(optarg, "length") == 0)
				lg.mode = M_LENGTH;
			else if (strcmp(optarg, "bulk") == 0)
				lg.mode = M_BULK;
			else if (strcmp(optarg, "idle") == 0)
				lg.mode = M_IDLE;
			else
				usage(argv[0]);
			break;
		case 'c':
			lg.nconns = atoi(optarg);
			break;
		case 'n':
			total = strtoull(optarg, NULL, 10);
			break;
		case 'b':
			bulk_bytes = strtoull(optarg, NULL, 10);
			break;
		case 's':
			size = strtoul(optarg, NULL, 10);
			break;
		case 'd':
			lg.depth = strtoull(optarg, NULL, 10);
			break;
		case 'T':
			limit.tv_sec = atol(optarg);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (port <= 0 || port > 65535 || lg.nconns < 1 ||
	    lg.nconns > 100000 || limit.tv_sec <= 0)
		usage(argv[0]);

	switch (lg.mode) {
	case M_LINES:
		lg.table = text_table;
		lg.plen = LINE_LEN - 2;
		lg.tlen = 2;
		if (lg.depth == 0)
			lg.depth = 128;
		if (total == 0)
			total = 1000000;
		break;
	case M_LENGTH:
		lg.table = bin_table;
		lg.plen = size != 0 ? size : 64;
		lg.hlen = 4;
		lg.header[0] = (char)(lg.plen >> 24 & 0xff);
		lg.header[1] = (char)(lg.plen >> 16 & 0xff);
		lg.header[2] = (char)(lg.plen >> 8 & 0xff);
		lg.header[3] = (char)(lg.plen & 0xff);
		if (lg.depth == 0)
			lg.depth = lg.plen >= 4096 ? 4 : 128;
		if (total == 0)
			total = lg.plen >= 4096 ? 50000 : 1000000;
		break;
	case M_BULK:
		lg.table = bin_table;
		lg.plen = size != 0 ? size : 65536;
		if (lg.depth == 0)
			lg.depth = 4;
		if (bulk_bytes == 0)
			bulk_bytes = (uint64_t)1 << 30;
		/* Whole pieces; the last connection's stream is not cut. */
		total = (bulk_bytes + lg.plen - 1) / lg.plen;
		break;
	case M_IDLE:
		break;
	}
	if (lg.mode != M_IDLE && (lg.plen == 0 || lg.plen > PIECE_MAX)) {
		fprintf(stderr, "loadgen: size must be 1 to %u\n", PIECE_MAX);
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	fill_tables();
	lg.base = event_base_new();
	if (lg.base == NULL)
		return 1;
	lg.conns = calloc((size_t)lg.nconns, sizeof(*lg.conns));
	if (lg.conns == NULL)
		return 1;
	for (i = 0; i < lg.nconns; i++) {
		struct conn *c = &lg.conns[i];

		c->lg = &lg;
		c->fd = -1;
		c->id = i;
		c->seed = (uint64_t)i * 7919u + 1;
		/* Spread the total; the first ones take the remainder. */
		c->quota = total / (uint64_t)lg.nconns +
		    ((uint64_t)i < total % (uint64_t)lg.nconns ? 1 : 0);
	}
	lg.addr.sin_family = AF_INET;
	lg.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lg.addr.sin_port = htons((unsigned short)port);

	timer = evtimer_new(lg.base, on_timeout, &lg);
	evtimer_add(timer, &limit);
	open_some(&lg);
	if (!lg.failed)
		event_base_dispatch(lg.base);

	for (i = 0; i < lg.nconns; i++) {
		lg.msgs += lg.conns[i].rmsg;
		if (lg.conns[i].open) {
			if (lg.conns[i].rev != NULL)
				event_free(lg.conns[i].rev);
			if (lg.conns[i].wev != NULL)
				event_free(lg.conns[i].wev);
			evutil_closesocket(lg.conns[i].fd);
		}
	}
	event_free(timer);
	event_base_free(lg.base);
	free(lg.conns);
	if (lg.failed || lg.done != lg.nconns)
		return 1;
	if (lg.mode == M_IDLE) {
		printf("released %d\n", lg.nconns);
		return 0;
	}
	lg.bytes = lg.msgs * (lg.hlen + lg.plen + lg.tlen);
	secs = now_diff(&lg.t0, &lg.t1);
	if (secs <= 0)
		secs = 1e-9;
	printf("mode=%s size=%zu conns=%d msgs=%" PRIu64 " bytes=%" PRIu64
	       " secs=%.4f msgs_per_s=%.0f MB_per_s=%.1f cpu=%.0f%%"
	       " verified=ok\n",
	    lg.mode == M_LINES ? "lines" :
	    lg.mode == M_LENGTH ? "length" : "bulk",
	    lg.plen, lg.nconns, lg.msgs, lg.bytes, secs, (double)lg.msgs / secs,
	    (double)lg.bytes / secs / 1e6, (lg.cpu1 - lg.cpu0) / secs * 100);
	return 0;
}
