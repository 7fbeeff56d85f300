/*
 * threads_consumer.c - a program built outside the source tree against
 * an installed libasynchat with pkg-config asynchat-threads (or CMake's
 * asynchat::threads): a thread posts to a channel through its handle,
 * the loop thread receives the bytes on the other end of a socket pair.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/thread.h>

#include <asynchat.h>

static const struct async_chat_handlers handlers;

static void *
poster(void *arg)
{
	struct async_chat_handle *h = arg;

	if (async_chat_post(h, "hello\n", 6) != 0)
		perror("async_chat_post");
	async_chat_handle_free(h);
	return NULL;
}

int
main(void)
{
	struct event_base *base;
	struct async_chat *chat;
	struct async_chat_handle *h;
	evutil_socket_t sv[2];
	pthread_t tid;
	char buf[16];
	size_t got = 0;
	int i;

	if (evthread_use_pthreads() != 0 || (base = event_base_new()) == NULL ||
	    evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    evutil_make_socket_nonblocking(sv[1]) != 0 ||
	    (chat = async_chat_new(base, sv[0], &handlers, NULL)) == NULL ||
	    (h = async_chat_handle_new(chat)) == NULL ||
	    pthread_create(&tid, NULL, poster, h) != 0) {
		perror("threads_consumer: setup");
		return 1;
	}
	/* Bounded: 5 s at most. */
	for (i = 0; i < 5000 && got < 6; i++) {
		ssize_t n;

		event_base_loop(base, EVLOOP_NONBLOCK);
		n = recv(sv[1], buf + got, sizeof(buf) - got, 0);
		if (n > 0)
			got += (size_t)n;
		else
			usleep(1000);
	}
	pthread_join(tid, NULL);
	async_chat_close(chat);
	event_base_free(base);
	close(sv[1]);
	if (got != 6 || memcmp(buf, "hello\n", 6) != 0) {
		fprintf(stderr, "threads_consumer: got %zu bytes\n", got);
		return 1;
	}
	printf("threads consumer: a post from another thread arrived\n");
	return 0;
}
