/*
 * echo_server.c - the smallest real libasynchat program: a line echo
 * server on a loopback port.  Each line ("\n" or "\r\n") comes back as
 * "echo: <line>\r\n"; the line "quit" ends the connection.
 *
 *   usage: echo_server [port]      (port 0 or none: any free port)
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include <asynchat.h>

/* One connection: its line so far.  The server's group holds its
 * channel, which leaves the group by itself when it closes. */
struct client {
	struct evbuffer *line;
};

static struct async_chat_group *clients;

static void
collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct client *c = arg;

	(void)chat;
	evbuffer_add(c->line, data, len);
}

static void
found(struct async_chat *chat, void *arg)
{
	struct client *c = arg;
	size_t len = evbuffer_get_length(c->line);

	if (len == 4 && memcmp(evbuffer_pullup(c->line, 4), "quit", 4) == 0) {
		async_chat_push(chat, "bye\r\n", 5);
		async_chat_close_when_done(chat);
	} else {
		async_chat_push(chat, "echo: ", 6);
		async_chat_push_buffer(chat, c->line); /* moved, not copied */
		async_chat_push(chat, "\r\n", 2);
	}
	evbuffer_drain(c->line, evbuffer_get_length(c->line));
}

static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	(void)chat;
	evbuffer_free(c->line);
	free(c);
}

/* handle_close and handle_error are left NULL: at EOF the channel flushes
 * and closes, on an error it closes; handle_free runs either way. */
static const struct async_chat_handlers echo_handlers = {
	.collect_incoming_data = collect,
	.found_terminator = found,
	.handle_free = client_free,
};

static void
handle_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct event_base *base = arg;
	struct client *c = calloc(1, sizeof(*c));
	struct async_chat *chat;

	(void)l;
	(void)addr;
	(void)addrlen;
	if (c == NULL || (c->line = evbuffer_new()) == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	chat = async_chat_new(base, fd, &echo_handlers, c);
	if (chat == NULL) {
		evbuffer_free(c->line);
		free(c);
		evutil_closesocket(fd);
		return;
	}
	if (async_chat_group_add(clients, chat) < 0) {
		async_chat_close(chat); /* runs client_free */
		return;
	}
	async_chat_set_terminator_line(chat);
	async_chat_set_max_frame(chat, 64 * 1024); /* no line beyond 64 KiB */
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);
	struct event_base *base;
	struct async_chat_listener *l;
	struct event *sigint, *sigterm;
	long port = argc > 1 ? strtol(argv[1], NULL, 10) : 0;

	if (port < 0 || port > 65535) {
		fprintf(stderr, "usage: %s [port]\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	if (base == NULL)
		return 1;
	if ((clients = async_chat_group_new(base)) == NULL) {
		event_base_free(base);
		return 1;
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)port);
	l = async_chat_listener_new(base, (struct sockaddr *)&sin, sizeof(sin),
	    -1, handle_accept, base);
	if (l == NULL) {
		fprintf(stderr, "listen: %s\n", strerror(errno));
		async_chat_group_free(clients);
		event_base_free(base);
		return 1;
	}
	async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len);
	printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
	fflush(stdout);

	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	event_base_dispatch(base);

	/* Clean shutdown: every channel (asyncore's close_all), the group
	 * and the listener freed. */
	async_chat_group_close_all(clients); /* runs client_free */
	async_chat_group_free(clients);
	async_chat_listener_free(l);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	printf("shut down\n");
	return 0;
}
