/*
 * server_libevent.c - the benchmark's reference: the same echo servers as
 * server_asynchat.c, hand-written on plain libevent the way a careful
 * libevent user would write them.  127.0.0.1 only.
 *
 *   usage: server_libevent [-p port] [-m lines|counted|bulk|idle]
 *                          [-x conns] [-r conns]
 *
 * The read callback finds frames with evbuffer_search(), moves each one
 * out of the input with evbuffer_remove_buffer() into the connection's
 * frame buffer (where a real server would look at it) and echoes it with
 * evbuffer_add_buffer(), so no payload byte is copied in user space except
 * where libevent copies the tail of a partly used chain.  A counted body
 * is taken once it is complete.  Bulk moves the whole input to the output.
 * The bufferevent reads and writes up to 64 KiB at a time, as libasynchat
 * sets its own.  Options and output are as in server_asynchat.c; idle
 * makes a bare bufferevent per connection, reading enabled, nothing else.
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

enum mode { M_LINES, M_COUNTED, M_BULK, M_IDLE };

static enum mode mode = M_LINES;
static long exit_after, report_at;
static long open_conns, closed_conns;
static uint64_t frames, bulk_bytes;
static struct event_base *base;
static size_t rss0, heap0;

struct client {
	struct bufferevent *bev;
	struct evbuffer *frame;
	int in_body;
	size_t need; /* counted: body bytes */
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
	evbuffer_free(c->frame);
	free(c);
	conn_closed();
}

/* A header: 1 to 10 decimal digits, 1 to 1 GiB. */
static uint64_t
parse_len(const char *s, size_t n)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 10)
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	return v <= ((uint64_t)1 << 30) ? v : 0;
}

static void
read_lines(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);

	for (;;) {
		struct evbuffer_ptr p = evbuffer_search(in, "\r\n", 2, NULL);

		if (p.pos < 0)
			break;
		if (evbuffer_remove_buffer(in, c->frame, (size_t)p.pos) < 0 ||
		    evbuffer_drain(in, 2) < 0 ||
		    evbuffer_add_buffer(out, c->frame) < 0 ||
		    evbuffer_add(out, "\r\n", 2) < 0) {
			client_free(c);
			return;
		}
		frames++;
	}
}

static void
read_counted(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer *out = bufferevent_get_output(bev);

	for (;;) {
		if (!c->in_body) {
			struct evbuffer_ptr p =
			    evbuffer_search(in, "\r\n", 2, NULL);
			char hdr[16];

			if (p.pos < 0) {
				if (evbuffer_get_length(in) > 12)
					goto bad;
				return;
			}
			if (p.pos > 10)
				goto bad;
			evbuffer_copyout(in, hdr, (size_t)p.pos);
			c->need = parse_len(hdr, (size_t)p.pos);
			if (c->need == 0)
				goto bad;
			if (evbuffer_remove_buffer(in, c->frame,
				(size_t)p.pos + 2) < 0 ||
			    evbuffer_add_buffer(out, c->frame) < 0)
				goto bad;
			c->in_body = 1;
		} else {
			if (evbuffer_get_length(in) < c->need)
				return;
			if (evbuffer_remove_buffer(in, c->frame, c->need) < 0 ||
			    evbuffer_add_buffer(out, c->frame) < 0)
				goto bad;
			c->in_body = 0;
			frames++;
		}
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
		read_lines, read_counted, read_bulk
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
		if (c == NULL || (c->frame = evbuffer_new()) == NULL) {
			free(c);
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
	    "usage: %s [-p port] [-m lines|counted|bulk|idle] [-x conns] "
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
			else if (strcmp(optarg, "counted") == 0)
				mode = M_COUNTED;
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
