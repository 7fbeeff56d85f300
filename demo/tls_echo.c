/*
 * tls_echo.c - the line echo server over TLS.  Each accepted socket is
 * wrapped in a libevent_openssl bufferevent, and the channel adopts that
 * bufferevent: the protocol code is the same as over a plain socket.
 * Each line comes back byte for byte, with the "\n" or "\r\n" that ended
 * it; the line "quit" is answered "bye\r\n" and ends the connection.
 *
 *   usage: tls_echo [-p port] -c cert.pem -k key.pem
 *          (port 0 or none: any free port)
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <asynchat.h>

/* Lines are kept whole until their LF: bound them. */
#define LINE_MAX_BYTES (16 * 1024 * 1024)

/* One connection: its TLS state.  The server's group holds its channel,
 * which leaves the group by itself when it closes. */
struct client {
	SSL *ssl;   /* owned by the channel's bufferevent */
	int broken; /* a TLS or socket error: no close_notify */
};

/* Message mode: the line waits in the channel's buffer and is moved, not
 * copied, to the output. */
static void
found(struct async_chat *chat, void *arg)
{
	struct evbuffer *line = async_chat_incoming(chat);
	size_t len = evbuffer_get_length(line);

	if (len == 4 && memcmp(evbuffer_pullup(line, 4), "quit", 4) == 0) {
		evbuffer_drain(line, len);
		async_chat_push(chat, "bye\r\n", 5);
		async_chat_close_when_done(chat);
		return;
	}
	async_chat_push_buffer(chat, line);
	/* The terminator that ended the line: 0 is "\r\n", 1 is "\n". */
	if (async_chat_matched_terminator(chat) == 0)
		async_chat_push(chat, "\r\n", 2);
	else
		async_chat_push(chat, "\n", 1);
}

/* At EOF a last line without LF is still echoed, then the channel
 * flushes and closes. */
static void
closed(struct async_chat *chat, void *arg)
{
	async_chat_push_buffer(chat, async_chat_incoming(chat));
	async_chat_close_when_done(chat);
}

static void
report_tls_errors(struct async_chat *chat)
{
	struct bufferevent *bev = async_chat_get_bufferevent(chat);
	unsigned long e;
	char buf[256];

	/* Besides OpenSSL's codes the list holds libevent's own notes
	 * (SSL_get_error() values, library 0): only the former say why. */
	while ((e = bufferevent_get_openssl_error(bev)) != 0) {
		if (ERR_GET_LIB(e) == 0)
			continue;
		ERR_error_string_n(e, buf, sizeof(buf));
		fprintf(stderr, "tls_echo:   %s\n", buf);
	}
}

static void
error(struct async_chat *chat, int err, void *arg)
{
	struct client *c = arg;

	if (err == ASYNC_CHAT_ERR_FRAME_TOO_LONG) {
		async_chat_discard_buffers(chat);
		async_chat_push(chat, "line too long\r\n", 15);
		async_chat_close_when_done(chat);
		return;
	}
	c->broken = 1;
	fprintf(stderr, "tls_echo: connection dropped: %s\n",
	    err == ASYNC_CHAT_ERR_UNKNOWN ? "TLS error" :
	    async_chat_strerror(err));
	report_tls_errors(chat);
	async_chat_close(chat);
}

/* The bufferevent frees the SSL object but sends no close_notify, so a
 * connection that ends well says goodbye here, while its SSL is still
 * alive.  After a fatal error TLS forbids it. */
static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (!c->broken && SSL_is_init_finished(c->ssl))
		SSL_shutdown(c->ssl);
	ERR_clear_error();
	free(c);
}

static const struct async_chat_handlers echo_handlers = {
	.found_terminator = found, /* message mode */
	.handle_close = closed,
	.handle_error = error,
	.handle_free = client_free,
};

struct server {
	struct event_base *base;
	SSL_CTX *ctx;
	struct async_chat_group *clients; /* every connection */
};

/* The TLS bufferevent for fd, in server (accepting) state: it owns fd and
 * the SSL object.  On failure (out of memory) fd is still the caller's. */
static struct bufferevent *
tls_bufferevent(struct server *srv, evutil_socket_t fd, SSL **sslp)
{
	SSL *ssl = SSL_new(srv->ctx);
	struct bufferevent *bev;

	if (ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(srv->base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* Clients that just close the socket end the stream (an EOF), not
	 * an error: an echo has no truncation to detect. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	*sslp = ssl;
	return bev;
}

static void
handle_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct server *srv = arg;
	struct client *c = calloc(1, sizeof(*c));
	struct bufferevent *bev = NULL;
	struct async_chat *chat;

	if (c == NULL || (bev = tls_bufferevent(srv, fd, &c->ssl)) == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	chat = async_chat_new_bufferevent(bev, &echo_handlers, c);
	if (chat == NULL) {
		bufferevent_free(bev); /* closes fd, frees the SSL */
		free(c);
		return;
	}
	if (async_chat_group_add(srv->clients, chat) < 0) {
		async_chat_close(chat); /* runs client_free */
		return;
	}
	async_chat_set_terminator_line(chat);
	async_chat_set_max_frame(chat, LINE_MAX_BYTES);
}

static SSL_CTX *
tls_context(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
	/* OpenSSL 3 reports a missing close_notify as an error of its own,
	 * which the dirty shutdown setting does not cover. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static int
parse_args(int argc, char **argv, long *port, const char **cert,
    const char **key)
{
	int i;

	for (i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "-p") == 0)
			*port = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "-c") == 0)
			*cert = argv[i + 1];
		else if (strcmp(argv[i], "-k") == 0)
			*key = argv[i + 1];
		else
			break;
	}
	if (i != argc || *port < 0 || *port > 65535 || *cert == NULL ||
	    *key == NULL) {
		fprintf(stderr, "usage: %s [-p port] -c cert.pem -k key.pem\n",
		    argv[0]);
		return -1;
	}
	return 0;
}

static struct async_chat_listener *
listen_loopback(struct server *srv, long port)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);
	struct async_chat_listener *l;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)port);
	l = async_chat_listener_new(srv->base, (struct sockaddr *)&sin,
	    sizeof(sin), -1, handle_accept, srv);
	if (l == NULL) {
		fprintf(stderr, "tls_echo: listen: %s\n", strerror(errno));
		return NULL;
	}
	async_chat_listener_get_address(l, (struct sockaddr *)&sin, &len);
	printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	return l;
}

int
main(int argc, char **argv)
{
	struct server srv = { NULL, NULL, NULL };
	struct async_chat_listener *l = NULL;
	struct event *sigint = NULL, *sigterm = NULL;
	const char *cert = NULL, *key = NULL;
	long port = 0;
	int status = 1;

	if (parse_args(argc, argv, &port, &cert, &key) < 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if ((srv.ctx = tls_context(cert, key)) == NULL) {
		fprintf(stderr, "tls_echo: cannot load %s and %s\n", cert, key);
		ERR_print_errors_fp(stderr);
		return 1;
	}
	if ((srv.base = event_base_new()) == NULL ||
	    (srv.clients = async_chat_group_new(srv.base)) == NULL ||
	    (l = listen_loopback(&srv, port)) == NULL)
		goto out;
	sigint = evsignal_new(srv.base, SIGINT, on_signal, srv.base);
	sigterm = evsignal_new(srv.base, SIGTERM, on_signal, srv.base);
	if (sigint == NULL || sigterm == NULL || evsignal_add(sigint, NULL) ||
	    evsignal_add(sigterm, NULL))
		goto out;
	event_base_dispatch(srv.base);
	status = 0;
out:
	/* Clean shutdown: every channel (with its SSL; asyncore's
	 * close_all), the group, the listener and the TLS context freed. */
	async_chat_group_close_all(srv.clients); /* runs client_free */
	async_chat_group_free(srv.clients);
	async_chat_listener_free(l);
	if (sigint != NULL)
		event_free(sigint);
	if (sigterm != NULL)
		event_free(sigterm);
	if (srv.base != NULL)
		event_base_free(srv.base);
	SSL_CTX_free(srv.ctx);
	if (status == 0)
		printf("shut down\n");
	return status;
}
