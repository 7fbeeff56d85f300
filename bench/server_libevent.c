/*
 * server_libevent.c - the benchmark's reference: the same echo servers as
 * server_asynchat.c, hand-written on plain libevent at their leanest, the
 * least a careful libevent user would do.  127.0.0.1 only.
 *
 *   usage: server_libevent [-p port] [-m lines|length|bulk|idle]
 *                          [-x conns] [-r conns]
 *
 *   lines    "\r\n"-terminated lines: per line one evbuffer_search() for
 *            "\r\n" and one evbuffer_remove_buffer() of the line and its
 *            terminator straight into the output;
 *   length   frames of a 4-byte big-endian body length and the body (as
 *            loadgen -m length sends them): evbuffer_copyout() of the 4
 *            header bytes, and once header and body are all in, one
 *            evbuffer_remove_buffer() of the whole frame into the output;
 *            a length above 1 GiB closes the connection;
 *   bulk     the whole input moved to the output (evbuffer_add_buffer());
 *   idle     a bare bufferevent per connection, reading enabled, nothing
 *            else (the memory measurement, with -r).
 *
 * No payload byte is copied in user space except where libevent copies
 * the tail of a partly used chain.  The bufferevent reads and writes up
 * to 64 KiB at a time, as a libasynchat channel does with its default
 * in_buffer_size and out_buffer_size.  Options and output are as in
 * server_asynchat.c: -x N exits cleanly after N connections have closed
 * (for callgrind and strace runs), -r N prints the "mem ..." line once N
 * connections are open and exits; "listening on 127.0.0.1:PORT" when
 * ready, "frames N" (bulk: "bytes N") on stderr at exit; SIGINT and
 * SIGTERM end it cleanly.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

enum mode { M_LINES, M_LENGTH, M_BULK, M_IDLE };

/* The largest body a length frame may announce. */
#define LENGTH_MAX ((uint32_t)1 << 30)

static enum mode mode = M_LINES;
static long exit_after, report_at;
static long open_conns, closed_conns;
static uint64_t frames, bulk_bytes;
static struct event_base *base;
static size_t rss0, heap0;

struct client {
	struct bufferevent *bev;
	size_t need; /* length: the frame's bytes, header included; 0 before
		      * its header is in */
	struct client *prev, *next;
};

static struct client *clients;

static void
conn_closed(void)
{
	open_conns--;
	closed_conns++;
	if (exit_after > 0 && closed_conns >= exit_after)
		event_base_loopbreak(base);
}

static void
client_free(struct client *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	bufferevent_free(c->bev);
	free(c);
	conn_closed();
}

/*
 * Lines: per line one evbuffer_search() and one evbuffer_remove_buffer()
 * of the line and its "\r\n" straight into the output.  Each search starts
 * at the front: the line before it has just been taken out.
 */
static void
read_lines(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);

	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(in, "\r\n", 2, NULL);

		if (p.pos < 0)
			break;
		if (evbuffer_remove_buffer(in, out, (size_t)p.pos + 2) < 0) {
			client_free(arg);
			return;
		}
		frames++;
	}
}

/*
 * Length frames: a 4-byte big-endian body length, then the body.  The
 * header is read with evbuffer_copyout() once 4 bytes are in (and kept in
 * c->need while the body arrives); once header and body are all in, one
 * evbuffer_remove_buffer() moves the whole frame into the output.
 */
static void
read_length(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);

	for (;;) {
		size_t have = evbuffer_get_length(in);

		if (c->need == 0) {
			unsigned char h[4];
			uint32_t n;

			if (have < 4)
				return;
			evbuffer_copyout(in, h, 4);
			n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 |
			    (uint32_t)h[2] << 8 | h[3];
			if (n > LENGTH_MAX)
				goto bad;
			c->need = 4 + (size_t)n;
		}
		if (have < c->need)
			return;
		if (evbuffer_remove_buffer(in, out, c->need) < 0)
			goto bad;
		c->need = 0;
		frames++;
	}
bad:
	client_free(c);
}

static void
read_bulk(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);

	if (evbuffer_add_buffer(bufferevent_get_output(bev), in) < 0) {
		client_free(arg);
		return;
	}
	bulk_bytes += len;
}

static void
event_client(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	client_free(arg); /* EOF or error: the client has all it wanted */
}

static void
read_idle(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);

	(void)arg;
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void
event_idle(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
	conn_closed();
}

static void
memory_now(size_t *rss, size_t *heap)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, res = 0;

	if (f != NULL) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	*rss = (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
	{
		struct mallinfo2 mi = mallinfo2();

		*heap = mi.uordblks + mi.hblkhd;
	}
#else
	*heap = 0; /* no mallinfo2(): only the resident figure counts */
#endif
}

static void
report_memory(void)
{
	size_t rss, heap;

	memory_now(&rss, &heap);
	printf("mem conns=%ld rss_bytes=%zu heap_bytes=%zu "
	       "rss_per_conn=%.1f heap_per_conn=%.1f\n",
	    open_conns, rss - rss0, heap - heap0,
	    (double)(rss - rss0) / (double)open_conns,
	    (double)(heap - heap0) / (double)open_conns);
	fflush(stdout);
}

static void
accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *addr, int addrlen, void *arg)
{
	static const bufferevent_data_cb readers[] = {
		read_lines, read_length, read_bulk
	};
	struct bufferevent *bev;
	struct client *c;
	int one = 1;

	(void)lev;
	(void)addr;
	(void)addrlen;
	(void)arg;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	open_conns++;
	if (mode == M_IDLE) {
		bufferevent_setcb(bev, read_idle, NULL, event_idle, NULL);
		bufferevent_enable(bev, EV_READ | EV_WRITE);
	} else {
		c = calloc(1, sizeof(*c));
		if (c == NULL) {
			bufferevent_free(bev);
			conn_closed();
			return;
		}
		c->bev = bev;
		c->next = clients;
		if (clients != NULL)
			clients->prev = c;
		clients = c;
		bufferevent_set_max_single_read(bev, 65536);
		bufferevent_set_max_single_write(bev, 65536);
		bufferevent_setcb(bev, readers[mode], NULL, event_client, c);
		bufferevent_enable(bev, EV_READ | EV_WRITE);
	}
	if (report_at > 0 && open_conns == report_at) {
		report_memory();
		exit(0); /* the kernel closes the connections */
	}
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

static void
usage(const char *argv0)
{
	fprintf(stderr,
	    "usage: %s [-p port] [-m lines|length|bulk|idle] [-x conns] "
	    "[-r conns]\n",
	    argv0);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct evconnlistener *lev;
	struct event *sigint, *sigterm;
	struct rlimit rl;
	long port = 0;
	int opt;

	while ((opt = getopt(argc, argv, "p:m:x:r:")) != -1) {
		switch (opt) {
		case 'p':
			port = strtol(optarg, NULL, 10);
			break;
		case 'm':
			if (strcmp(optarg, "lines") == 0)
				mode = M_LINES;
			else if (strcmp(optarg, "length") == 0)
				mode = M_LENGTH;
			else if (strcmp(optarg, "bulk") == 0)
				mode = M_BULK;
			else if (strcmp(optarg, "idle") == 0)
				mode = M_IDLE;
			else
				usage(argv[0]);
			break;
		case 'x':
			exit_after = strtol(optarg, NULL, 10);
			break;
		case 'r':
			report_at = strtol(optarg, NULL, 10);
			break;
		default:
			usage(argv[0]);
		}
	}
	if (port < 0 || port > 65535)
		usage(argv[0]);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	if (base == NULL)
		return 1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)port);
	lev = evconnlistener_new_bind(base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    1024, (struct sockaddr *)&sin, sizeof(sin));
	if (lev == NULL) {
		fprintf(stderr, "listen: %s\n", strerror(errno));
		return 1;
	}
	getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&sin, &len);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	memory_now(&rss0, &heap0);
	printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
	fflush(stdout);

	event_base_dispatch(base);

	while (clients != NULL)
		client_free(clients);
	evconnlistener_free(lev);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	if (mode == M_BULK)
		fprintf(stderr, "bytes %" PRIu64 "\n", bulk_bytes);
	else
		fprintf(stderr, "frames %" PRIu64 "\n", frames);
	return 0;
}
