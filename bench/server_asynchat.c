/*
 * server_asynchat.c - the echo servers of the benchmark, written on
 * libasynchat the way its header suggests, as a new user would write
 * them: nothing here is tuned to the benchmark.  127.0.0.1 only.
 *
 *   usage: server_asynchat [-p port] [-m lines|length|bulk|idle] [-M]
 *                          [-x conns] [-r conns]
 *
 *   lines    terminator "\r\n"; each line is pushed back, then "\r\n"
 *            (two pushes);
 *   length   frames of a 4-byte big-endian body length and the body (as
 *            loadgen -m length sends them), framed by the length-field
 *            kind, async_chat_set_terminator_length();
 *   bulk     the none terminator; what is collected is pushed back;
 *   idle     a channel per connection with terminator "\r\n" and nothing
 *            else, for the memory measurement (with -r).
 *
 * Collect mode (the default): collect_incoming_data copies the pieces
 * into the connection's buffer, as an asynchat user would, and
 * found_terminator echoes the frame:
 *   lines    async_chat_push(buf, len), then async_chat_push("\r\n", 2);
 *   length   the spec { .width = 4, .strip = 4 } delivers the body alone
 *            (the header is the framing, not the message), and
 *            async_chat_push_length_prefixed(chat, NULL, buf, len) sends
 *            it back framed by the channel's own spec.
 *
 *   -M  message mode: no collect_incoming_data; found_terminator moves the
 *       frame out of async_chat_incoming() with async_chat_push_buffer()
 *       (no copy beyond what that call does):
 *   lines    async_chat_push_buffer(chat, async_chat_incoming(chat)), then
 *            async_chat_push("\r\n", 2);
 *   length   the spec { .width = 4 } keeps the header in the frame, so
 *            the frame goes back as it came with one
 *            async_chat_push_buffer(chat, async_chat_incoming(chat)).
 *       Message mode cannot serve bulk: under the none terminator
 *       found_terminator never runs, so nothing would ever tell the server
 *       that bytes arrived.
 *   -x N  exit cleanly after N connections have closed (for callgrind and
 *       strace runs).
 *   -r N  once N connections are open, print the resident and heap bytes
 *       they added ("mem ..." line) and exit.
 *
 * Channels keep the library's defaults (in_buffer_size and
 * out_buffer_size 64 KiB, no frame bound).  It prints "listening on
 * 127.0.0.1:PORT" when ready, and on exit the number of frames it echoed
 * ("frames N", bulk: "bytes N") on stderr.  SIGINT and SIGTERM end it
 * cleanly.
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
#include <event2/event.h>

#include <asynchat.h>

enum mode { M_LINES, M_LENGTH, M_BULK, M_IDLE };

static enum mode mode = M_LINES;
static int message_mode;
static long exit_after, report_at;
static long open_conns, closed_conns;
static uint64_t frames, bulk_bytes;
static struct event_base *base;

/* Memory at the start, for -r. */
static size_t rss0, heap0;

/* One connection (not used by idle channels, which carry no arg). */
struct client {
	struct async_chat *chat;
	char *buf; /* collect mode: the frame so far */
	size_t len, cap;
	struct client *prev, *next;
};

static struct client *clients;

static int
reserve(struct client *c, size_t more)
{
	size_t cap = c->cap != 0 ? c->cap : 256;
	char *p;

	if (c->len + more <= c->cap)
		return 0;
	while (cap < c->len + more)
		cap *= 2;
	p = realloc(c->buf, cap);
	if (p == NULL)
		return -1;
	c->buf = p;
	c->cap = cap;
	return 0;
}

static void
collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct client *c = arg;

	if (reserve(c, len) < 0) {
		async_chat_close(chat);
		return;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
}

/* The length frames: a 4-byte big-endian body length, then the body;
 * collect mode gets the body alone, message mode the whole frame. */
static const struct async_chat_length_field length_body = {
	.width = 4, .strip = 4};
static const struct async_chat_length_field length_frame = {.width = 4};

/* Collect mode. */

static void
found_line(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (async_chat_push(chat, c->buf, c->len) < 0 ||
	    async_chat_push(chat, "\r\n", 2) < 0) {
		async_chat_close(chat);
		return;
	}
	c->len = 0;
	frames++;
}

static void
found_length(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (async_chat_push_length_prefixed(chat, NULL, c->buf, c->len) < 0) {
		async_chat_close(chat);
		return;
	}
	c->len = 0;
	frames++;
}

static void
collect_bulk(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	(void)arg;
	if (async_chat_push(chat, data, len) < 0) {
		async_chat_close(chat);
		return;
	}
	bulk_bytes += len;
}

/* Message mode. */

static void
found_line_msg(struct async_chat *chat, void *arg)
{
	(void)arg;
	if (async_chat_push_buffer(chat, async_chat_incoming(chat)) < 0 ||
	    async_chat_push(chat, "\r\n", 2) < 0) {
		async_chat_close(chat);
		return;
	}
	frames++;
}

static void
found_length_msg(struct async_chat *chat, void *arg)
{
	(void)arg;
	if (async_chat_push_buffer(chat, async_chat_incoming(chat)) < 0) {
		async_chat_close(chat);
		return;
	}
	frames++;
}

/* Idle channels. */

static void
collect_idle(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	(void)chat;
	(void)data;
	(void)len;
	(void)arg;
}

static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	(void)chat;
	if (c != NULL) {
		if (c->prev != NULL)
			c->prev->next = c->next;
		else
			clients = c->next;
		if (c->next != NULL)
			c->next->prev = c->prev;
		free(c->buf);
		free(c);
	}
	open_conns--;
	closed_conns++;
	if (exit_after > 0 && closed_conns >= exit_after)
		event_base_loopbreak(base);
}

static const struct async_chat_handlers handlers[2][4] = {
	{ /* collect mode */
	    {.collect_incoming_data = collect,
		.found_terminator = found_line,
		.handle_free = client_free},
	    {.collect_incoming_data = collect,
		.found_terminator = found_length,
		.handle_free = client_free},
	    {.collect_incoming_data = collect_bulk,
		.handle_free = client_free},
	    {.collect_incoming_data = collect_idle,
		.handle_free = client_free}},
	{ /* message mode */
	    {.found_terminator = found_line_msg, .handle_free = client_free},
	    {.found_terminator = found_length_msg,
		.handle_free = client_free},
	    {.handle_free = client_free}, /* refused in main() */
	    {.handle_free = client_free}},
};

/* Resident bytes (from /proc/self/statm) and heap bytes in use. */
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
handle_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct client *c = NULL;
	struct async_chat *chat;
	int one = 1, rc;

	(void)l;
	(void)addr;
	(void)addrlen;
	(void)arg;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (mode != M_IDLE && (c = calloc(1, sizeof(*c))) == NULL) {
		evutil_closesocket(fd);
		return;
	}
	chat = async_chat_new(base, fd, &handlers[message_mode][mode], c);
	if (chat == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	open_conns++;
	if (mode == M_BULK)
		rc = async_chat_set_terminator_none(chat);
	else if (mode == M_LENGTH)
		rc = async_chat_set_terminator_length(chat,
		    message_mode ? &length_frame : &length_body);
	else
		rc = async_chat_set_terminator(chat, "\r\n", 2);
	if (c != NULL) {
		c->chat = chat;
		c->next = clients;
		if (clients != NULL)
			clients->prev = c;
		clients = c;
	}
	if (rc < 0) {
		async_chat_close(chat); /* runs client_free */
		return;
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
	    "usage: %s [-p port] [-m lines|length|bulk|idle] [-M] "
	    "[-x conns] [-r conns]\n",
	    argv0);
	exit(2);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	int len = sizeof(sin), opt;
	struct async_chat_listener *l;
	struct event *sigint, *sigterm;
	struct rlimit rl;
	long port = 0;

	while ((opt = getopt(argc, argv, "p:m:Mx:r:")) != -1) {
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
		case 'M':
			message_mode = 1;
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
	if (message_mode && mode == M_BULK) {
		fprintf(stderr, "server_asynchat: message mode cannot serve "
				"bulk (no callback under the none "
				"terminator)\n");
		return 2;
	}
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
	l = async_chat_listener_new(base, (struct sockaddr *)&sin, sizeof(sin),
	    1024, handle_accept, NULL);
	if (l == NULL) {
		fprintf(stderr, "listen: %s\n", strerror(errno));
		return 1;
	}
	async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len);
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	memory_now(&rss0, &heap0);
	printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
	fflush(stdout);

	event_base_dispatch(base);

	while (clients != NULL)
		async_chat_close(clients->chat); /* runs client_free */
	async_chat_listener_free(l);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	if (mode == M_BULK)
		fprintf(stderr, "bytes %" PRIu64 "\n", bulk_bytes);
	else
		fprintf(stderr, "frames %" PRIu64 "\n", frames);
	return 0;
}
