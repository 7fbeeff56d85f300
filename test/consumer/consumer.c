/*
 * consumer.c - a program built outside the source tree against an
 * installed libasynchat, with nothing but <asynchat.h> and pkg-config.
 * A server channel answers "ping" lines with "PONG"; a client channel
 * connects over loopback, asks three times and checks the answers.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <asynchat.h>

static struct event_base *base;
static struct async_chat *server;
static int answers, failures;

static void
server_found(struct async_chat *chat, void *arg)
{
	struct evbuffer *line = async_chat_incoming(chat);

	if (evbuffer_get_length(line) == 4 &&
	    memcmp(evbuffer_pullup(line, 4), "ping", 4) == 0)
		async_chat_push(chat, "PONG\r\n", 6);
	else
		async_chat_push(chat, "ERR\r\n", 5);
	evbuffer_drain(line, evbuffer_get_length(line));
}

static const struct async_chat_handlers server_handlers = {
	.found_terminator = server_found,
};

static void
on_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	server = async_chat_new(base, fd, &server_handlers, NULL);
	if (server == NULL || async_chat_set_terminator_line(server) < 0)
		failures++;
}

static void
client_found(struct async_chat *chat, void *arg)
{
	struct evbuffer *line = async_chat_incoming(chat);

	if (evbuffer_get_length(line) != 4 ||
	    memcmp(evbuffer_pullup(line, 4), "PONG", 4) != 0)
		failures++;
	evbuffer_drain(line, evbuffer_get_length(line));
	if (++answers == 3)
		event_base_loopbreak(base);
}

static void
client_error(struct async_chat *chat, int err, void *arg)
{
	fprintf(stderr, "consumer: %s\n", async_chat_strerror(err));
	failures++;
	event_base_loopbreak(base);
}

static const struct async_chat_handlers client_handlers = {
	.found_terminator = client_found,
	.handle_error = client_error,
};

int
main(void)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);
	struct async_chat_listener *l;
	struct async_chat *client;

	if (async_chat_version_number() != ASYNC_CHAT_VERSION_NUMBER) {
		fprintf(stderr, "header %s, library %s\n", ASYNC_CHAT_VERSION,
		    async_chat_version());
		return 1;
	}
	base = event_base_new();
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = async_chat_listener_new(base, (struct sockaddr *)&sin, sizeof(sin),
	    -1, on_accept, NULL);
	if (l == NULL ||
	    async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len))
		return 1;
	client = async_chat_new(base, -1, &client_handlers, NULL);
	if (client == NULL || async_chat_set_terminator(client, "\r\n", 2) ||
	    async_chat_connect(client, (struct sockaddr *)&sin, len))
		return 1;
	async_chat_push(client, "ping\nping\r\nping\n", 16);
	event_base_dispatch(base);
	async_chat_close(client);
	async_chat_close(server);
	async_chat_listener_free(l);
	event_base_free(base);
	printf("consumer %s: %d answers, %d failures\n", async_chat_version(),
	    answers, failures);
	return answers == 3 && failures == 0 ? 0 : 1;
}
