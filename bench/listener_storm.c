/*
 * listener_storm.c - what an EMFILE storm costs a libasynchat listener.
 *
 *   bench/listener_storm [SECONDS [handler]]
 *
 * A listener on 127.0.0.1 runs with no descriptor left (RLIMIT_NOFILE
 * lowered, every descriptor under it taken) while a child process keeps
 * connecting, every 10 ms.  For SECONDS (default 3) the server counts the
 * turns of its event loop (one failing accept(2) a turn while it spins)
 * and, with "handler", the calls of an accept error handler; it reports
 * the CPU time it used (getrusage(2)).  Then it frees the descriptors and
 * reports how long the listener took to accept a connection again.  Uses
 * only the 0.1 listener API, so it measures any version.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>

#include "asynchat.h"

#define FILL_MAX 4096
#define CLIENTS_MAX 1000

static long errors, accepts;
static int timed_out;

static void
on_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	(void)l;
	(void)addr;
	(void)addrlen;
	(void)arg;
	accepts++;
	evutil_closesocket(fd);
}

static void
on_error(struct async_chat_listener *l, int err, void *arg)
{
	(void)l;
	(void)arg;
	if (err == EMFILE)
		errors++;
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	timed_out = 1;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The child: a connection every 10 ms for limit_s seconds. */
static void
client(int port, int limit_s)
{
	struct sockaddr_in sin;
	int n = 0, i;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (i = 0; i < limit_s * 100 && n < CLIENTS_MAX; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

		if (fd < 0)
			break;
		/* Kept open: each one waits in the backlog. */
		(void)connect(fd, (struct sockaddr *)&sin, sizeof(sin));
		n++;
		usleep(10000);
	}
	_exit(0);
}

int
main(int argc, char **argv)
{
	int seconds = argc > 1 ? atoi(argv[1]) : 3;
	int with_handler = argc > 2 && strcmp(argv[2], "handler") == 0;
	struct sockaddr_in sin;
	int len = (int)sizeof(sin), fill[FILL_MAX], nfill = 0, fd;
	struct event_base *base;
	struct async_chat_listener *l;
	struct rlimit saved, rl;
	struct event *timer;
	struct timeval tv;
	double c0, c1, t0, t1;
	long turns = 0, turns_after = 0, storm_accepts;
	pid_t pid;

	if (seconds < 1 || seconds > 60) {
		fprintf(stderr, "usage: %s [SECONDS [handler]]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = async_chat_listener_new(
	    base, (struct sockaddr *)&sin, len, -1, on_accept, NULL);
	if (base == NULL || l == NULL) {
		perror("listen");
		return 1;
	}
	if (with_handler)
		async_chat_listener_set_error_handler(l, on_error);
	async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len);
	if ((pid = fork()) == 0)
		client(ntohs(sin.sin_port), seconds + 15);
	usleep(50000); /* the first connection waits in the backlog */

	getrlimit(RLIMIT_NOFILE, &saved);
	rl = saved;
	rl.rlim_cur = 64;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		perror("setrlimit");
		return 1;
	}
	while (nfill < FILL_MAX && (fd = open("/dev/null", O_RDONLY)) >= 0)
		fill[nfill++] = fd;

	timer = evtimer_new(base, on_timeout, NULL);
	tv.tv_sec = seconds;
	tv.tv_usec = 0;
	evtimer_add(timer, &tv);
	c0 = cpu();
	while (!timed_out && accepts == 0) {
		event_base_loop(base, EVLOOP_ONCE);
		turns++;
	}
	c1 = cpu();
	storm_accepts = accepts;

	while (nfill > 0)
		close(fill[--nfill]);
	setrlimit(RLIMIT_NOFILE, &saved);
	t0 = now();
	timed_out = 0;
	tv.tv_sec = 5;
	evtimer_add(timer, &tv);
	while (!timed_out && accepts == 0) {
		event_base_loop(base, EVLOOP_ONCE);
		turns_after++;
	}
	t1 = now();

	printf("storm %d s, %s: cpu %.3f s, loop turns %ld (%.0f/s), "
	       "error handler calls %ld, accepted during storm %ld; "
	       "after freeing descriptors: %s in %.1f ms (%ld turns)\n",
	    seconds, with_handler ? "error handler" : "no error handler",
	    c1 - c0, turns, (double)turns / seconds, errors, storm_accepts,
	    accepts > 0 ? "accepted" : "NOT accepted", (t1 - t0) * 1000.0,
	    turns_after);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	event_free(timer);
	async_chat_listener_free(l);
	event_base_free(base);
	return accepts > 0 ? 0 : 1;
}
