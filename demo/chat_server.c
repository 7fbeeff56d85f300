/*
 * chat_server.c - the classic multi-user line chat on libasynchat, on a
 * loopback port.
 *
 *   usage: chat_server [-p port]      (port 0 or none: any free port)
 *
 * It prints "listening on 127.0.0.1:PORT"; SIGINT or SIGTERM closes every
 * connection and frees everything.  Lines end with "\n" or "\r\n"; the
 * server sends "\r\n".  The first line is the nickname (1 to 32 printable
 * characters, no space, not starting with "/", unique regardless of case);
 * a refused one is answered with "! ..." and asked for again.  Then:
 *
 *   /msg NICK text   private message, shown to NICK only as "*nick* text"
 *   /nick NEW        change nickname
 *   /who             list the users ("* users: a b c", in joining order)
 *   /quit            "* bye", then the connection closes
 *   //text           broadcast "/text" (a line may start with "/")
 *   anything else    broadcast to everyone else as "<nick> text"
 *
 * Server notices start with "* ", errors with "! ".  Joins, leaves and
 * nickname changes are announced to everyone else.  A line longer than
 * MAX_LINE bytes is answered with an error and ends the connection.
 *
 * SLOW READERS: DROP, AS IRC DOES ("Max SendQ exceeded").
 *
 * Every byte pushed to a client stays in the server until the client reads
 * it, so one client that stops reading would make the server queue the
 * whole conversation for it.  Each push is therefore followed by a look at
 * async_chat_output_pending(): past MAX_PENDING the client stops receiving,
 * is closed at once (its unsent output discarded) and everyone else is told
 * "* nick was dropped: too slow".  The alternative, skipping messages until
 * handle_drain, was rejected: it bounds memory just as well, but a reader
 * that has stopped for good then holds its socket and nickname forever, and
 * one that is merely slow receives a conversation with silent holes.  A
 * drop is bounded in memory and in time, and the user knows it happened.
 * MAX_PENDING is far above what a reading client has queued (the kernel's
 * socket buffers take bursts first), so only a client that has fallen far
 * behind the conversation is dropped.
 *
 * Dropping happens after the current callback's work, never in the middle
 * of a walk over the client list: a delivery only marks the client
 * (doomed), and reap() closes the marked ones at the end of the callback.
 * The announcement of a drop is itself a broadcast that may doom others;
 * reap() goes on until none is left.
 */
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <asynchat.h>

#define MAX_LINE 4096             /* bytes in a line, terminator excluded */
#define MAX_NICK 32
#define MAX_PENDING (256 * 1024)  /* output queued for one client */
#define NOTICE_MAX (MAX_LINE + 256) /* longest line the server sends */

enum state {
	ST_NAMING,   /* waiting for a valid nickname */
	ST_CHATTING, /* in the chat: receives broadcasts */
	ST_GONE      /* left, closing: receives nothing more */
};

/* One connection, in the server's list in joining order. */
struct client {
	struct async_chat *chat;
	struct client *prev, *next;
	enum state state;
	int doomed; /* too slow: reap() closes it */
	char nick[MAX_NICK + 1];
};

static struct client *head, *tail;
static unsigned ndoomed;
static struct event_base *base;
static struct async_chat_listener *listener;
static struct event *accept_retry;

/*
 * Output
 */

/* Queue one line for c, and doom c if its queue has grown past the cap. */
static void
deliver(struct client *c, const char *data, size_t len)
{
	if (c->state == ST_GONE)
		return;
	if (async_chat_push(c->chat, data, len) == 0 &&
	    async_chat_output_pending(c->chat) <= MAX_PENDING)
		return;
	/* Past the cap, or the push failed (out of memory): either way the
	 * client cannot follow the conversation any more. */
	c->state = ST_GONE;
	c->doomed = 1;
	ndoomed++;
}

static size_t format_line(char *buf, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Format into buf (NOTICE_MAX bytes) and end with "\r\n"; the length. */
static size_t
format_line(char *buf, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, NOTICE_MAX - 2, fmt, ap);

	if (n < 0)
		n = 0;
	else if (n > NOTICE_MAX - 3)
		n = NOTICE_MAX - 3; /* truncated by vsnprintf */
	memcpy(buf + n, "\r\n", 2);
	return (size_t)n + 2;
}

static void tell(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A notice to one client. */
static void
tell(struct client *c, const char *fmt, ...)
{
	char buf[NOTICE_MAX];
	va_list ap;
	size_t len;

	va_start(ap, fmt);
	len = format_line(buf, fmt, ap);
	va_end(ap);
	deliver(c, buf, len);
}

/* One line to everyone in the chat except from (which may be NULL). */
static void
broadcast(const struct client *from, const char *line, size_t len)
{
	struct client *c;

	for (c = head; c != NULL; c = c->next)
		if (c != from && c->state == ST_CHATTING)
			deliver(c, line, len);
}

static void announce(const struct client *from, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A notice to everyone in the chat except from. */
static void
announce(const struct client *from, const char *fmt, ...)
{
	char buf[NOTICE_MAX];
	va_list ap;
	size_t len;

	va_start(ap, fmt);
	len = format_line(buf, fmt, ap);
	va_end(ap);
	broadcast(from, buf, len);
}

/* "<nick> text" or "*nick* text" into buf (NOTICE_MAX bytes), copied
 * rather than formatted since text may hold any byte, NUL included. */
static size_t
attribute(char *buf, char open, const char *nick, char close,
    const char *text, size_t len)
{
	size_t n = strlen(nick);

	buf[0] = open;
	memcpy(buf + 1, nick, n);
	buf[n + 1] = close;
	buf[n + 2] = ' ';
	memcpy(buf + n + 3, text, len);
	memcpy(buf + n + 3 + len, "\r\n", 2);
	return n + len + 5;
}

/* Close the clients found too slow, announcing each drop.  Must be the
 * last thing a callback does: the client it runs for may be freed. */
static void
reap(void)
{
	char nick[MAX_NICK + 1];
	struct client *c;

	while (ndoomed > 0) {
		for (c = head; !c->doomed; c = c->next)
			;
		memcpy(nick, c->nick, sizeof(nick));
		async_chat_close(c->chat); /* client_free unlinks it */
		if (nick[0] != '\0')
			announce(NULL, "* %s was dropped: too slow", nick);
	}
}

/* c leaves the chat: it receives nothing more, and the others are told
 * if it had joined.  Closing it is the caller's business. */
static void
leave(struct client *c, const char *how)
{
	enum state was = c->state;

	c->state = ST_GONE;
	if (was == ST_CHATTING)
		announce(c, "* %s %s", c->nick, how);
}

/*
 * Nicknames
 */

static const char *
nick_problem(const char *nick, size_t len)
{
	size_t i;

	if (len == 0 || len > MAX_NICK)
		return "a nickname has 1 to 32 characters";
	if (nick[0] == '/')
		return "a nickname cannot start with /";
	for (i = 0; i < len; i++)
		if (!isgraph((unsigned char)nick[i]))
			return "a nickname has printable characters only, "
			       "no space";
	return NULL;
}

/* The client in the chat with this nickname, ignoring case; or NULL. */
static struct client *
find_nick(const char *nick, size_t len)
{
	struct client *c;

	for (c = head; c != NULL; c = c->next)
		if (c->state == ST_CHATTING && strlen(c->nick) == len &&
		    strncasecmp(c->nick, nick, len) == 0)
			return c;
	return NULL;
}

/* Check a wanted nickname; on refusal c is told why and 0 returned. */
static int
nick_ok(struct client *c, const char *nick, size_t len)
{
	const char *problem = nick_problem(nick, len);
	struct client *owner;

	if (problem != NULL) {
		tell(c, "! invalid nickname: %s", problem);
		return 0;
	}
	owner = find_nick(nick, len);
	if (owner != NULL && owner != c) {
		tell(c, "! nickname %s is taken", owner->nick);
		return 0;
	}
	return 1;
}

static unsigned
count_users(void)
{
	const struct client *c;
	unsigned n = 0;

	for (c = head; c != NULL; c = c->next)
		n += c->state == ST_CHATTING;
	return n;
}

/*
 * Commands.  A line is len bytes, NUL-terminated; a NUL inside it fails
 * the nickname checks and is passed on as is in messages.
 */

static void
choose_nick(struct client *c, const char *line, size_t len)
{
	if (!nick_ok(c, line, len)) {
		tell(c, "* nickname?");
		return;
	}
	memcpy(c->nick, line, len + 1);
	c->state = ST_CHATTING;
	tell(c, "* welcome, %s (%u online; /who, /msg NICK text, "
		"/nick NEW, /quit)", c->nick, count_users());
	announce(c, "* %s has joined", c->nick);
}

static void
cmd_nick(struct client *c, const char *arg, size_t len)
{
	char old[MAX_NICK + 1];

	if (!nick_ok(c, arg, len))
		return;
	memcpy(old, c->nick, sizeof(old));
	memcpy(c->nick, arg, len);
	c->nick[len] = '\0';
	tell(c, "* you are now %s", c->nick);
	announce(c, "* %s is now known as %s", old, c->nick);
}

static void
cmd_who(struct client *c, size_t len)
{
	struct evbuffer *buf;
	const struct client *u;

	if (len > 0) {
		tell(c, "! usage: /who");
		return;
	}
	if ((buf = evbuffer_new()) == NULL)
		return;
	evbuffer_add(buf, "* users:", 8);
	for (u = head; u != NULL; u = u->next)
		if (u->state == ST_CHATTING)
			evbuffer_add_printf(buf, " %s", u->nick);
	evbuffer_add(buf, "\r\n", 2);
	deliver(c, (const char *)evbuffer_pullup(buf, -1),
	    evbuffer_get_length(buf));
	evbuffer_free(buf);
}

static void
cmd_msg(struct client *c, const char *arg, size_t len)
{
	const char *space = memchr(arg, ' ', len);
	char buf[NOTICE_MAX];
	size_t nlen;
	struct client *to;

	if (space == NULL || space == arg || space + 1 == arg + len) {
		tell(c, "! usage: /msg NICK text");
		return;
	}
	nlen = (size_t)(space - arg);
	if ((to = find_nick(arg, nlen)) == NULL) {
		tell(c, "! no such user: %.*s", (int)nlen, arg);
		return;
	}
	deliver(to, buf, attribute(buf, '*', c->nick, '*', space + 1,
	    len - nlen - 1));
}

static void
say(struct client *c, const char *text, size_t len)
{
	char buf[NOTICE_MAX];

	if (len > 0) /* an empty line says nothing */
		broadcast(c, buf, attribute(buf, '<', c->nick, '>', text, len));
}

static void
quit(struct client *c)
{
	tell(c, "* bye");
	leave(c, "has left");
	async_chat_close_when_done(c->chat);
}

/* A line in the chat: a command if it starts with one "/". */
static void
chat_line(struct client *c, const char *line, size_t len)
{
	const char *space = memchr(line, ' ', len);
	size_t nlen = space != NULL ? (size_t)(space - line) : len;
	const char *arg = line + nlen + (space != NULL);
	size_t alen = len - nlen - (space != NULL);

	if (line[0] != '/')
		say(c, line, len);
	else if (len > 1 && line[1] == '/')
		say(c, line + 1, len - 1);
	else if (nlen == 4 && memcmp(line, "/msg", 4) == 0)
		cmd_msg(c, arg, alen);
	else if (nlen == 5 && memcmp(line, "/nick", 5) == 0)
		cmd_nick(c, arg, alen);
	else if (nlen == 4 && memcmp(line, "/who", 4) == 0)
		cmd_who(c, alen);
	else if (nlen == 5 && memcmp(line, "/quit", 5) == 0)
		quit(c);
	else
		tell(c, "! unknown command %.*s (//text sends a line "
			"starting with /)", (int)nlen, line);
}

/*
 * Channel callbacks
 */

/* Message mode: the line waits in the channel's own buffer, bounded by
 * the frame bound, and is copied out once. */
static void
found(struct async_chat *chat, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = async_chat_incoming(chat);
	char line[MAX_LINE + 1];
	ev_ssize_t len;

	if (in == NULL)
		return;
	/* The frame bound keeps a line within MAX_LINE bytes. */
	len = evbuffer_remove(in, line, MAX_LINE);
	if (len < 0)
		return;
	line[len] = '\0';
	if (c->state == ST_NAMING) {
		if (len == 5 && memcmp(line, "/quit", 5) == 0)
			quit(c);
		else
			choose_nick(c, line, (size_t)len);
	} else if (c->state == ST_CHATTING) {
		chat_line(c, line, (size_t)len);
	} /* ST_GONE: lines after /quit are read and ignored */
	reap();
}

/* The client's EOF: it has left; what it was sent still goes out. */
static void
on_close(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (c->state == ST_GONE)
		return; /* closing already */
	leave(c, "has left");
	async_chat_close_when_done(chat);
	reap();
}

static void
on_error(struct async_chat *chat, int err, void *arg)
{
	struct client *c = arg;

	if (err == ASYNC_CHAT_ERR_FRAME_TOO_LONG && c->state != ST_GONE) {
		/* Reading is paused; the rest of the line stays unread. */
		tell(c, "! line too long (more than %d bytes); goodbye",
		    MAX_LINE);
		leave(c, "has left");
		async_chat_close_when_done(chat);
	} else {
		leave(c, "has left");
		async_chat_close(chat); /* client_free runs */
	}
	reap();
}

static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		head = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	else
		tail = c->prev;
	if (c->doomed)
		ndoomed--;
	free(c);
}

static const struct async_chat_handlers chat_handlers = {
	.collect_incoming_data = NULL, /* message mode */
	.found_terminator = found,
	.handle_close = on_close,
	.handle_error = on_error,
	.handle_free = client_free,
};

/*
 * Accepting
 */

static void
handle_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct client *c = calloc(1, sizeof(*c));
	int one = 1;

	/* Chat lines are small and wanted now, not after a delayed ACK. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c == NULL ||
	    (c->chat = async_chat_new(base, fd, &chat_handlers, c)) == NULL) {
		free(c);
		evutil_closesocket(fd);
		return;
	}
	async_chat_set_terminator_line(c->chat);
	async_chat_set_max_frame(c->chat, MAX_LINE);
	c->prev = tail;
	if (tail != NULL)
		tail->next = c;
	else
		head = c;
	tail = c;
	tell(c, "* welcome to libasynchat chat; nickname?");
	reap();
}

static void
resume_accepting(evutil_socket_t fd, short what, void *arg)
{
	async_chat_listener_resume(listener);
}

/* Out of descriptors or memory: the pending connection stays in the
 * backlog, so stop accepting for a moment instead of spinning on it. */
static void
accept_error(struct async_chat_listener *l, int err, void *arg)
{
	struct timeval tv = { 0, 100 * 1000 };

	fprintf(stderr, "accept: %s\n", strerror(err));
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		async_chat_listener_pause(l);
		evtimer_add(accept_retry, &tv);
	}
}

/*
 * Startup and shutdown
 */

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static int
usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-p port]\n", argv0);
	return 2;
}

static int
start_listening(long port)
{
	struct sockaddr_in sin;
	int len = sizeof(sin);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((unsigned short)port);
	listener = async_chat_listener_new(base, (struct sockaddr *)&sin,
	    sizeof(sin), -1, handle_accept, NULL);
	if (listener == NULL) {
		fprintf(stderr, "listen: %s\n", strerror(errno));
		return -1;
	}
	async_chat_listener_set_error_handler(listener, accept_error);
	async_chat_listener_get_address(listener, (struct sockaddr *)&sin,
	    &len);
	printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
	fflush(stdout);
	return 0;
}

int
main(int argc, char **argv)
{
	struct event *sigint, *sigterm;
	long port = 0;
	char *end;
	int opt;

	while ((opt = getopt(argc, argv, "p:")) != -1) {
		if (opt != 'p')
			return usage(argv[0]);
		port = strtol(optarg, &end, 10);
		if (*optarg == '\0' || *end != '\0' || port < 0 || port > 65535)
			return usage(argv[0]);
	}
	if (optind != argc)
		return usage(argv[0]);
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		return 1;
	accept_retry = evtimer_new(base, resume_accepting, NULL);
	if (accept_retry == NULL || start_listening(port) < 0) {
		if (accept_retry != NULL)
			event_free(accept_retry);
		event_base_free(base);
		return 1;
	}
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	event_base_dispatch(base);

	/* Clean shutdown: every channel and the listener freed, nothing
	 * announced (the chat ends for everyone at once). */
	while (head != NULL)
		async_chat_close(head->chat); /* runs client_free */
	async_chat_listener_free(listener);
	event_free(accept_retry);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	printf("shut down\n");
	return 0;
}
