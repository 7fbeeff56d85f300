/*
 * echo_client.c - the client side: connects to a line server, sends each
 * argument as a line, prints each line that comes back, and closes once
 * every line has been answered.
 *
 *   usage: echo_client port line...
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include <asynchat.h>

struct state {
	struct event_base *base;
	int expected, answered, failed;
};

/* Message mode: no collect handler, the line waits in the channel's
 * evbuffer until found_terminator takes it. */
static void
found(struct async_chat *chat, void *arg)
{
	struct state *st = arg;
	struct evbuffer *line = async_chat_incoming(chat);
	size_t len = evbuffer_get_length(line);

	printf("%.*s\n", (int)len, (const char *)evbuffer_pullup(line, -1));
	evbuffer_drain(line, len);
	if (++st->answered == st->expected)
		async_chat_close(chat);
}

static void
error(struct async_chat *chat, int err, void *arg)
{
	struct state *st = arg;

	fprintf(stderr, "echo_client: %s\n", async_chat_strerror(err));
	st->failed = 1;
	async_chat_close(chat);
}

static void
closed(struct async_chat *chat, void *arg)
{
	struct state *st = arg;

	if (st->answered < st->expected) {
		fprintf(stderr, "echo_client: server closed early\n");
		st->failed = 1;
	}
	async_chat_close(chat);
}

static const struct async_chat_handlers client_handlers = {
	.found_terminator = found,
	.handle_close = closed,
	.handle_error = error,
};

int
main(int argc, char **argv)
{
	struct state st = { NULL, argc - 2, 0, 0 };
	struct sockaddr_in sin;
	struct async_chat *chat;
	long port;
	int i;

	if (argc < 3 || (port = strtol(argv[1], NULL, 10)) <= 0 ||
	    port > 65535) {
		fprintf(stderr, "usage: %s port line...\n", argv[0]);
		return 2;
	}
	st.base = event_base_new();
	chat = async_chat_new(st.base, -1, &client_handlers, &st);
	if (st.base == NULL || chat == NULL)
		return 1;
	async_chat_set_terminator(chat, "\r\n", 2);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)port);
	if (async_chat_connect(chat, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		perror("connect");
		return 1;
	}
	/* Pushed before the connection is made: sent once it is. */
	for (i = 2; i < argc; i++) {
		async_chat_push(chat, argv[i], strlen(argv[i]));
		async_chat_push(chat, "\n", 1);
	}
	event_base_dispatch(st.base);
	event_base_free(st.base);
	return st.failed;
}
