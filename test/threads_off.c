/*
 * threads_off.c - a program that never calls evthread_use_pthreads():
 * async_chat_handle_new() must refuse with ENOTSUP, and the channel go on
 * working single-threaded.  No Check: the process's libevent stays without
 * locking, which no suite that enables it could give.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "asynchat.h"

static const struct async_chat_handlers handlers;

static int passes, failures;

static void
expect(int ok, const char *what)
{
	printf("%s %s\n", ok ? "ok" : "FAIL", what);
	if (ok)
		passes++;
	else
		failures++;
}

int
main(void)
{
	struct event_base *base = event_base_new();
	struct async_chat *chat;
	evutil_socket_t sv[2];
	char buf[8];

	if (base == NULL ||
	    evutil_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
	    (chat = async_chat_new(base, sv[0], &handlers, NULL)) == NULL) {
		perror("setup");
		return 99;
	}
	errno = 0;
	expect(async_chat_handle_new(chat) == NULL && errno == ENOTSUP,
	    "handle_new without libevent locking fails with ENOTSUP");
	errno = 0;
	expect(async_chat_post(NULL, "x", 1) == -1 && errno == EINVAL,
	    "post to NULL fails with EINVAL");
	expect(async_chat_push(chat, "ok", 2) == 0, "the channel still pushes");
	event_base_loop(base, EVLOOP_NONBLOCK);
	expect(read(sv[1], buf, sizeof(buf)) == 2 && memcmp(buf, "ok", 2) == 0,
	    "and the bytes arrive");
	async_chat_close(chat);
	close(sv[1]);
	event_base_free(base);
	printf("%d passed, %d failed\n", passes, failures);
	return failures == 0 ? 0 : 1;
}
