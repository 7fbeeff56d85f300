/*
 * bench_threads.c - the threads benchmark (bench/run-bench-threads):
 *
 *   bench_threads load PORT CONNS SECONDS [THREADS]
 *       a loopback load client for demo/mt_server: THREADS client threads
 *       (default 2) share CONNS connections, each keeping 32 lines of 64
 *       bytes in flight, for SECONDS; every reply byte is checked.
 *       Prints "load: N msgs in S s: R msgs/s".
 *   bench_threads cost MODE N
 *       N messages of 64 bytes into one channel whose peer the loop
 *       drains: MODE push (async_chat_push on the loop thread), post
 *       (async_chat_post from the loop thread) or xpost (async_chat_post
 *       from another thread, at most 4096 messages in flight).  Prints
 *       "cost MODE: N msgs, T ns/msg".  Under callgrind, two values of N
 *       give instructions per message as (Ir(N2) - Ir(N1)) / (N2 - N1).
 *   bench_threads latency N
 *       N round trips of async_chat_post_call: from another thread to an
 *       idle loop (the loop must wake up), and on the loop thread itself
 *       (post, then one non-blocking loop turn runs the call).  Prints the
 *       median and the 99th percentile in ns of each.
 *
 * Everything stays on 127.0.0.1 or socket pairs; every loop is bounded.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <asynchat.h>

#define LINE 64
#define DEPTH 32

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

/*
 * load
 */

struct conn {
	int fd;
	size_t col; /* position in the line being read */
	int inflight;
};

struct client {
	pthread_t tid;
	int port, nconns;
	double until;
	unsigned long replies;
	int bad;
};

static char line_bytes[LINE * DEPTH];

static void
send_lines(struct conn *c, int n)
{
	size_t want = (size_t)n * LINE, off = 0;

	while (off < want) {
		ssize_t w = send(c->fd, line_bytes + off, want - off, 0);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("send");
		}
		off += (size_t)w;
	}
	c->inflight += n;
}

static void *
client_run(void *arg)
{
	struct client *cl = arg;
	struct conn *cs = calloc((size_t)cl->nconns, sizeof(*cs));
	struct pollfd *pfd = calloc((size_t)cl->nconns, sizeof(*pfd));
	struct sockaddr_in sin;
	char buf[65536];
	int i, one = 1;

	if (cs == NULL || pfd == NULL)
		die("calloc");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)cl->port);
	for (i = 0; i < cl->nconns; i++) {
		cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
		if (cs[i].fd < 0 ||
		    connect(cs[i].fd, (struct sockaddr *)&sin, sizeof(sin)))
			die("connect");
		setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		send_lines(&cs[i], DEPTH);
		pfd[i].fd = cs[i].fd;
		pfd[i].events = POLLIN;
	}
	while (now() < cl->until) {
		if (poll(pfd, (nfds_t)cl->nconns, 1000) < 0 && errno != EINTR)
			die("poll");
		for (i = 0; i < cl->nconns; i++) {
			ssize_t n, k;
			int done = 0;

			if (!(pfd[i].revents & POLLIN))
				continue;
			n = recv(cs[i].fd, buf, sizeof(buf), 0);
			if (n <= 0)
				die("recv: server closed");
			for (k = 0; k < n; k++) {
				char want = cs[i].col == LINE - 1 ? '\n' : 'x';

				if (buf[k] != want)
					cl->bad++;
				if (++cs[i].col == LINE) {
					cs[i].col = 0;
					done++;
				}
			}
			cl->replies += (unsigned long)done;
			cs[i].inflight -= done;
			if (done > 0)
				send_lines(&cs[i], done);
		}
	}
	for (i = 0; i < cl->nconns; i++)
		close(cs[i].fd);
	free(cs);
	free(pfd);
	return NULL;
}

static int
run_load(int port, int conns, double seconds, int threads)
{
	struct client *cl = calloc((size_t)threads, sizeof(*cl));
	unsigned long total = 0;
	double t0, t1;
	int i, bad = 0;

	if (cl == NULL || conns < threads)
		return 2;
	for (i = 0; i < LINE * DEPTH; i++)
		line_bytes[i] = i % LINE == LINE - 1 ? '\n' : 'x';
	t0 = now();
	for (i = 0; i < threads; i++) {
		cl[i].port = port;
		cl[i].nconns = conns / threads + (i < conns % threads);
		cl[i].until = t0 + seconds;
		if (pthread_create(&cl[i].tid, NULL, client_run, &cl[i]))
			die("pthread_create");
	}
	for (i = 0; i < threads; i++) {
		pthread_join(cl[i].tid, NULL);
		total += cl[i].replies;
		bad += cl[i].bad;
	}
	t1 = now();
	printf("load: %lu msgs in %.2f s: %.0f msgs/s%s\n", total, t1 - t0,
	    (double)total / (t1 - t0), bad ? " (BAD BYTES)" : "");
	free(cl);
	return bad ? 1 : 0;
}

/*
 * cost
 */

struct cost {
	struct event_base *base;
	struct async_chat *chat;
	struct async_chat_handle *h;
	evutil_socket_t peer;
	struct event *drain;
	atomic_ulong received; /* bytes the peer has read */
	long n;
};

static const struct async_chat_handlers quiet;
static const char msg[LINE] = "0123456789012345678901234567890123456789"
                              "0123456789012345678901\n";

static void
drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct cost *c = arg;
	char buf[65536];
	ssize_t n;

	(void)what;
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		atomic_fetch_add(&c->received, (unsigned long)n);
}

static void
cost_setup(struct cost *c)
{
	evutil_socket_t sv[2];
	int size = 1 << 20;

	memset(c, 0, sizeof(*c));
	if ((c->base = event_base_new()) == NULL ||
	    evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    evutil_make_socket_nonblocking(sv[1]) != 0)
		die("setup");
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	c->peer = sv[1];
	if ((c->chat = async_chat_new(c->base, sv[0], &quiet, NULL)) == NULL ||
	    (c->h = async_chat_handle_new(c->chat)) == NULL ||
	    (c->drain = event_new(c->base, sv[1], EV_READ | EV_PERSIST,
	         drain_cb, c)) == NULL ||
	    event_add(c->drain, NULL) != 0)
		die("setup");
}

static void
cost_teardown(struct cost *c)
{
	async_chat_handle_free(c->h);
	async_chat_close(c->chat);
	event_free(c->drain);
	close(c->peer);
	event_base_free(c->base);
}

static void *
xpost_run(void *arg)
{
	struct cost *c = arg;
	long i;

	for (i = 0; i < c->n; i++) {
		/* Bounded memory: at most 4096 messages in flight. */
		while ((unsigned long)i * LINE - atomic_load(&c->received) >
		    4096UL * LINE)
			sched_yield();
		if (async_chat_post(c->h, msg, LINE) != 0)
			die("async_chat_post");
	}
	return NULL;
}

static int
run_cost(const char *mode, long n)
{
	unsigned long want = (unsigned long)n * LINE;
	struct cost c;
	pthread_t tid;
	double t0, t1;
	long i;
	int turns;

	cost_setup(&c);
	c.n = n;
	t0 = now();
	if (strcmp(mode, "xpost") == 0) {
		if (pthread_create(&tid, NULL, xpost_run, &c))
			die("pthread_create");
	} else if (strcmp(mode, "push") == 0 || strcmp(mode, "post") == 0) {
		int push = mode[1] == 'u';

		for (i = 0; i < n; i++) {
			if ((push ? async_chat_push(c.chat, msg, LINE)
			          : async_chat_post(c.h, msg, LINE)) != 0)
				die(mode);
			if (i % 64 == 63)
				event_base_loop(c.base, EVLOOP_NONBLOCK);
		}
	} else {
		fprintf(stderr, "bench_threads: cost push|post|xpost N\n");
		return 2;
	}
	/* Bounded: 10^8 loop turns at most. */
	for (turns = 0; atomic_load(&c.received) < want && turns < 100000000;
	     turns++)
		event_base_loop(c.base, EVLOOP_ONCE);
	t1 = now();
	if (strcmp(mode, "xpost") == 0)
		pthread_join(tid, NULL);
	if (atomic_load(&c.received) != want) {
		fprintf(stderr, "bench_threads: %lu of %lu bytes\n",
		    atomic_load(&c.received), want);
		return 1;
	}
	printf("cost %s: %ld msgs, %.1f ns/msg\n", mode, n,
	    (t1 - t0) * 1e9 / (double)n);
	cost_teardown(&c);
	return 0;
}

/*
 * latency
 */

static atomic_long seen;
static atomic_int loop_stop;

static void
mark(struct async_chat *chat, void *arg)
{
	(void)chat;
	atomic_store(&seen, (long)(intptr_t)arg);
}

static void
stop_call(struct async_chat *chat, void *arg)
{
	(void)chat;
	(void)arg;
	atomic_store(&loop_stop, 1);
}

static void *
loop_run(void *arg)
{
	struct cost *c = arg;

	while (!atomic_load(&loop_stop))
		event_base_loop(c->base, EVLOOP_ONCE);
	return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void
report(const char *what, double *ns, long n)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_double);
	printf("latency %s: median %.0f ns, p99 %.0f ns (%ld round trips)\n",
	    what, ns[n / 2], ns[n * 99 / 100], n);
}

static int
run_latency(long n)
{
	double *ns = calloc((size_t)n, sizeof(*ns));
	struct cost c;
	pthread_t tid;
	long i;

	if (ns == NULL || n < 1)
		return 2;
	cost_setup(&c);
	/* On the loop thread: post, one turn runs it. */
	for (i = 0; i < n; i++) {
		double t0 = now();

		if (async_chat_post_call(c.h, mark, (void *)(intptr_t)(i + 1)))
			die("post_call");
		while (atomic_load(&seen) != i + 1)
			event_base_loop(c.base, EVLOOP_NONBLOCK);
		ns[i] = (now() - t0) * 1e9;
	}
	report("same thread (post_call + loop turn)", ns, n);
	/* From another thread to a loop asleep in epoll_wait. */
	atomic_store(&seen, 0);
	if (pthread_create(&tid, NULL, loop_run, &c))
		die("pthread_create");
	for (i = 0; i < n; i++) {
		double t0;

		usleep(50); /* let the loop fall asleep */
		t0 = now();
		if (async_chat_post_call(c.h, mark, (void *)(intptr_t)(i + 1)))
			die("post_call");
		while (atomic_load(&seen) != i + 1)
			;
		ns[i] = (now() - t0) * 1e9;
	}
	report("cross thread, waking the loop", ns, n);
	async_chat_post_call(c.h, stop_call, NULL);
	pthread_join(tid, NULL);
	cost_teardown(&c);
	free(ns);
	return 0;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() != 0)
		die("evthread_use_pthreads");
	if (argc >= 5 && strcmp(argv[1], "load") == 0)
		return run_load(atoi(argv[2]), atoi(argv[3]), atof(argv[4]),
		    argc > 5 ? atoi(argv[5]) : 2);
	if (argc == 4 && strcmp(argv[1], "cost") == 0)
		return run_cost(argv[2], atol(argv[3]));
	if (argc == 3 && strcmp(argv[1], "latency") == 0)
		return run_latency(atol(argv[2]));
	fprintf(stderr, "usage: bench_threads load PORT CONNS SECONDS "
	                "[THREADS] | cost push|post|xpost N | latency N\n");
	return 2;
}
