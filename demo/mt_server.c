/*
 * mt_server.c - a loop per core and a thread pool: N worker threads, each
 * with its own event_base and its own SO_REUSEPORT listener on the same
 * loopback port, serve a line protocol; each line is handed to a small
 * thread pool, which does the "work" and posts the reply back to the
 * channel through its handle.  With -d the workers answer themselves.
 *
 * Each line comes back unchanged (followed by "\n"); the pool spins for
 * -c rounds of hashing per line first, as a database call or a
 * compression job would take its time.  A channel's lines all go to the
 * same pool thread, so its replies keep their order.
 *
 *   usage: mt_server [-p port] [-w workers] [-t pool_threads] [-c cost] [-d]
 *
 * Prints "listening on 127.0.0.1:PORT"; on SIGINT or SIGTERM closes every
 * connection, stops the threads, prints "worker I: N connections" for
 * each worker and "shut down", and exits 0.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <asynchat.h>

#define MAX_WORKERS 64
#define MAX_POOL 64

/* A line on its way through the pool: the handle reference it holds
 * keeps the handle alive, whatever happens to the channel. */
struct job {
	struct job *next;
	struct async_chat_handle *h;
	size_t len;
	char bytes[]; /* the line and its "\n" */
};

struct pool_thread {
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	int stop;
	volatile unsigned sink; /* the work's result, kept */
};

struct worker {
	pthread_t tid;
	int id;
	struct event_base *base;
	struct async_chat_listener *listener;
	struct async_chat_group *clients;
	struct event *stop; /* activated from the main thread */
	unsigned long connections;
};

static struct pool_thread pool[MAX_POOL];
static int pool_n = 2;
static long cost;
static int direct;

/* The work: cost rounds of FNV-1a over the line, kept so the compiler
 * cannot drop it. */
static void
do_work(struct pool_thread *t, const char *p, size_t len)
{
	unsigned hsh = 2166136261u;
	long r;
	size_t i;

	for (r = 0; r < cost; r++)
		for (i = 0; i < len; i++)
			hsh = (hsh ^ (unsigned char)p[i]) * 16777619u;
	t->sink = hsh;
}

static void
free_job(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	free(arg);
}

static void *
pool_run(void *arg)
{
	struct pool_thread *t = arg;

	for (;;) {
		struct async_chat_handle *h;
		struct job *j;

		pthread_mutex_lock(&t->mu);
		while (t->head == NULL && !t->stop)
			pthread_cond_wait(&t->cv, &t->mu);
		j = t->head;
		if (j != NULL && (t->head = j->next) == NULL)
			t->tail = NULL;
		pthread_mutex_unlock(&t->mu);
		if (j == NULL)
			return NULL; /* stopped and drained */
		do_work(t, j->bytes, j->len);
		/* The bytes move to the channel; free_job runs on its loop
		 * thread once they are sent.  A client that has gone gives
		 * EPIPE, and the job is ours to free. */
		h = j->h;
		if (async_chat_post_reference(h, j->bytes, j->len, free_job,
		        j) != 0)
			free(j);
		async_chat_handle_free(h);
	}
}

static void
pool_submit(struct job *j, size_t affinity)
{
	struct pool_thread *t = &pool[affinity % (size_t)pool_n];

	pthread_mutex_lock(&t->mu);
	if (t->tail != NULL)
		t->tail->next = j;
	else
		t->head = j;
	t->tail = j;
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

static void
found(struct async_chat *chat, void *arg)
{
	struct evbuffer *in = async_chat_incoming(chat);
	size_t len = evbuffer_get_length(in);
	struct job *j;

	(void)arg;
	if (direct) {
		async_chat_push_buffer(chat, in);
		async_chat_push(chat, "\n", 1);
		return;
	}
	if ((j = malloc(sizeof(*j) + len + 1)) == NULL) {
		async_chat_close(chat);
		return;
	}
	j->next = NULL;
	j->len = len + 1;
	evbuffer_remove(in, j->bytes, len);
	j->bytes[len] = '\n';
	/* One more reference to the channel's handle, for the job. */
	if ((j->h = async_chat_handle_new(chat)) == NULL) {
		free(j);
		async_chat_close(chat);
		return;
	}
	pool_submit(j, (size_t)(uintptr_t)chat / 64);
}

static const struct async_chat_handlers handlers = {
	.found_terminator = found,
};

static void
on_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct worker *w = arg;
	struct async_chat *chat = async_chat_new(w->base, fd, &handlers, w);

	(void)l;
	(void)addr;
	(void)addrlen;
	if (chat == NULL) {
		evutil_closesocket(fd);
		return;
	}
	w->connections++;
	if (async_chat_set_terminator_line(chat) != 0 ||
	    async_chat_group_add(w->clients, chat) != 0)
		async_chat_close(chat);
}

/* On the worker's own thread: stop accepting, close every client. */
static void
worker_stop(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	async_chat_listener_free(w->listener);
	w->listener = NULL;
	async_chat_group_close_all(w->clients);
	event_base_loopbreak(w->base);
}

static void *
worker_run(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	return NULL;
}

static int
worker_init(struct worker *w, int id, int *port)
{
	struct sockaddr_in sin;

	memset(w, 0, sizeof(*w));
	w->id = id;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)*port);
	if ((w->base = event_base_new()) == NULL ||
	    (w->clients = async_chat_group_new(w->base)) == NULL ||
	    (w->stop = event_new(w->base, -1, 0, worker_stop, w)) == NULL)
		return -1;
	w->listener = async_chat_listener_new_flags(w->base,
	    (struct sockaddr *)&sin, sizeof(sin), ASYNC_CHAT_LISTEN_REUSEPORT,
	    -1, on_accept, w);
	if (w->listener == NULL)
		return -1;
	if (*port == 0) {
		struct sockaddr_in got;
		int len = sizeof(got);

		if (async_chat_listener_get_address(w->listener,
		        (struct sockaddr *)&got, &len) != 0)
			return -1;
		*port = ntohs(got.sin_port);
	}
	return 0;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

static void
usage(void)
{
	fprintf(stderr, "usage: mt_server [-p port] [-w workers] "
	                "[-t pool_threads] [-c cost] [-d]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static struct worker workers[MAX_WORKERS];
	struct event_base *main_base;
	struct event *sigint, *sigterm;
	sigset_t block, old;
	int port = 0, nworkers = 2, opt, i;

	while ((opt = getopt(argc, argv, "p:w:t:c:d")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'w':
			nworkers = atoi(optarg);
			break;
		case 't':
			pool_n = atoi(optarg);
			break;
		case 'c':
			cost = atol(optarg);
			break;
		case 'd':
			direct = 1;
			break;
		default:
			usage();
		}
	}
	if (port < 0 || port > 65535 || nworkers < 1 ||
	    nworkers > MAX_WORKERS || pool_n < 1 || pool_n > MAX_POOL ||
	    cost < 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	/* libevent's locking, before any event_base: the pool posts to
	 * channels of the workers' bases. */
	if (evthread_use_pthreads() != 0) {
		fprintf(stderr, "mt_server: evthread_use_pthreads failed\n");
		return 1;
	}
	if ((main_base = event_base_new()) == NULL)
		return 1;
	for (i = 0; i < nworkers; i++)
		if (worker_init(&workers[i], i, &port) != 0) {
			fprintf(stderr, "mt_server: worker %d: %s\n", i,
			    strerror(errno));
			return 1;
		}
	sigint = evsignal_new(main_base, SIGINT, on_signal, main_base);
	sigterm = evsignal_new(main_base, SIGTERM, on_signal, main_base);
	if (sigint == NULL || sigterm == NULL || evsignal_add(sigint, NULL) ||
	    evsignal_add(sigterm, NULL))
		return 1;
	/* The signals reach the main thread only. */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (i = 0; i < pool_n; i++) {
		pthread_mutex_init(&pool[i].mu, NULL);
		pthread_cond_init(&pool[i].cv, NULL);
		if (pthread_create(&pool[i].tid, NULL, pool_run, &pool[i]))
			return 1;
	}
	for (i = 0; i < nworkers; i++)
		if (pthread_create(&workers[i].tid, NULL, worker_run,
		        &workers[i]))
			return 1;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	printf("listening on 127.0.0.1:%d\n", port);
	fflush(stdout);

	event_base_dispatch(main_base);

	/* Each worker closes its own channels, on its own thread. */
	for (i = 0; i < nworkers; i++)
		event_active(workers[i].stop, EV_READ, 0);
	for (i = 0; i < nworkers; i++)
		pthread_join(workers[i].tid, NULL);
	/* The pool finishes its queue: the posts fail with EPIPE now. */
	for (i = 0; i < pool_n; i++) {
		pthread_mutex_lock(&pool[i].mu);
		pool[i].stop = 1;
		pthread_cond_signal(&pool[i].cv);
		pthread_mutex_unlock(&pool[i].mu);
	}
	for (i = 0; i < pool_n; i++) {
		pthread_join(pool[i].tid, NULL);
		pthread_mutex_destroy(&pool[i].mu);
		pthread_cond_destroy(&pool[i].cv);
	}
	for (i = 0; i < nworkers; i++) {
		printf("worker %d: %lu connections\n", i,
		    workers[i].connections);
		async_chat_group_free(workers[i].clients);
		event_free(workers[i].stop);
		event_base_free(workers[i].base);
	}
	event_free(sigint);
	event_free(sigterm);
	event_base_free(main_base);
	printf("shut down\n");
	return 0;
}
