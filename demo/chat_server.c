/*
 * chat_server.c - the classic multi-user line chat on libasynchat, on a
 * loopback port.
 *
 *   usage: chat_server [-p port]      (port 0 or none: any free port)
 *
 * It prints "listening on 127.0.0.1:PORT"; SIGINT or SIGTERM tells the
 * users "* server shutting down", closes every connection once what is
 * queued for it is sent (SHUTDOWN_GRACE seconds at most), and exits when
 * none is left, everything freed.  Lines end with "\n" or "\r\n"; the
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
 * THE CLIENTS: TWO CHANNEL GROUPS.
 *
 * The room is the group of the users in the chat, in joining order: a
 * broadcast to all of them is async_chat_group_push(), one to everyone but
 * its sender a walk with async_chat_group_foreach(), and /who lists the
 * room.  The lobby holds every other connection: choosing a nickname, or
 * leaving with its last lines still queued.  A channel leaves its group by
 * itself when it closes; at shutdown both groups are closed when done.
 *
 * SLOW READERS: DROP, AS IRC DOES ("Max SendQ exceeded").
 *
 * Every byte pushed to a client stays in the server until the client reads
 * it, so one client that stops reading would make the server queue the
 * whole conversation for it.  Each channel therefore has a high-water mark
 * at MAX_PENDING bytes of pending output (async_chat_set_high_water()):
 * past it the client stops receiving, is closed (its unsent output
 * discarded) and everyone else is told "* nick was dropped: too slow".
 * The alternative, skipping messages until handle_drain, was rejected: it
 * bounds memory just as well, but a reader that has stopped for good then
 * holds its socket and nickname forever, and one that is merely slow
 * receives a conversation with silent holes.  A drop is bounded in memory
 * and in time, and the user knows it happened.  MAX_PENDING is far above
 * what a reading client has queued (the kernel's socket buffers take
 * bursts first), so only a client that has fallen far behind the
 * conversation is dropped.
 *
 * Dropping happens after the current callback's work, never in the middle
 * of it: the high-water handler runs inside the push, while the caller may
 * still use the client, so it only takes the client out of the room and
 * marks it (doomed), and reap() closes the marked ones at the end of the
 * callback.  The announcement of a drop is itself a broadcast that may
 * doom others; reap() goes on until none is left.
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
#define SHUTDOWN_GRACE 5          /* seconds to send what is queued */

enum state {
	ST_NAMING,   /* in the lobby, waiting for a valid nickname */
	ST_CHATTING, /* in the room: receives broadcasts */
	ST_GONE      /* left, closing: receives nothing more */
};

/* One connection.  Its channel is in the room or in the lobby, except a
 * doomed one's, which reap() closes before the callback returns. */
struct client {
	struct async_chat *chat;
	enum state state;
	int doomed; /* too slow: on the doomed list, reap() closes it */
	struct client *doomed_prev, *doomed_next;
	char nick[MAX_NICK + 1];
};

static struct async_chat_group *room, *lobby;
static struct client *doomed;
static int shutting_down;
static struct event_base *base;
static struct async_chat_listener *listener;

/*
 * Output
 */

/* c cannot follow the conversation any more: out of the room at once,
 * closed by reap() at the end of the callback. */
static void
doom(struct client *c)
{
	if (c->doomed)
		return;
	if (c->state == ST_CHATTING)
		async_chat_group_remove(room, c->chat);
	c->state = ST_GONE;
	c->doomed = 1;
	c->doomed_prev = NULL;
	c->doomed_next = doomed;
	if (doomed != NULL)
		doomed->doomed_prev = c;
	doomed = c;
}

/* The high-water mark: more than MAX_PENDING bytes wait for the client.
 * Runs inside the push that passed it. */
static void
on_high_water(struct async_chat *chat, int above, void *arg)
{
	if (above)
		doom(arg);
}

/* Move c between the groups (a channel is in one group at most). */
static int
move(struct client *c, struct async_chat_group *from,
    struct async_chat_group *to)
{
	async_chat_group_remove(from, c->chat);
	if (async_chat_group_add(to, c->chat) == 0)
		return 0;
	doom(c); /* out of memory: in no group, it could not be reached */
	return -1;
}

/* Queue one line for c.  A push that fails (out of memory) dooms it as
 * the high-water mark does: either way it has lost the conversation. */
static void
deliver(struct client *c, const char *data, size_t len)
{
	if (c->state == ST_GONE)
		return;
	if (async_chat_push(c->chat, data, len) < 0)
		doom(c);
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

/* A notice to one client, formatted straight into its output. */
static void
tell(struct client *c, const char *fmt, ...)
{
	va_list ap;
	int rc;

	if (c->state == ST_GONE)
		return;
	va_start(ap, fmt);
	rc = async_chat_push_vprintf(c->chat, fmt, ap);
	va_end(ap);
	if (rc < 0 || async_chat_push(c->chat, "\r\n", 2) < 0)
		doom(c); /* as deliver() */
}

struct line {
	const struct client *from;
	const char *data;
	size_t len;
};

static int
deliver_other(struct async_chat *chat, void *arg)
{
	const struct line *ln = arg;
	struct client *c = async_chat_get_arg(chat);

	if (c != ln->from)
		deliver(c, ln->data, ln->len);
	return 0;
}

/* One line to everyone in the room except from (which may be NULL).  A
 * member whose copy cannot be queued (out of memory) misses the line. */
static void
broadcast(const struct client *from, const char *line, size_t len)
{
	struct line ln = { from, line, len };

	if (from == NULL)
		async_chat_group_push(room, line, len);
	else
		async_chat_group_foreach(room, deliver_other, &ln);
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

	while (doomed != NULL) {
		memcpy(nick, doomed->nick, sizeof(nick));
		async_chat_close(doomed->chat); /* client_free unlinks it */
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

	if (c->doomed)
		return;
	c->state = ST_GONE;
	if (was == ST_CHATTING && move(c, room, lobby) == 0)
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

struct nick_query {
	const char *nick;
	size_t len;
	struct client *found;
};

static int
match_nick(struct async_chat *chat, void *arg)
{
	struct nick_query *q = arg;
	struct client *c = async_chat_get_arg(chat);

	if (strlen(c->nick) != q->len ||
	    strncasecmp(c->nick, q->nick, q->len) != 0)
		return 0;
	q->found = c;
	return 1; /* found: stop */
}

/* The client in the room with this nickname, ignoring case; or NULL. */
static struct client *
find_nick(const char *nick, size_t len)
{
	struct nick_query q = { nick, len, NULL };

	async_chat_group_foreach(room, match_nick, &q);
	return q.found;
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
	if (move(c, lobby, room) < 0)
		return;
	c->state = ST_CHATTING;
	tell(c, "* welcome, %s (%zu online; /who, /msg NICK text, "
		"/nick NEW, /quit)", c->nick, async_chat_group_count(room));
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

static int
list_nick(struct async_chat *chat, void *arg)
{
	const struct client *u = async_chat_get_arg(chat);

	return evbuffer_add_printf(arg, " %s", u->nick) < 0;
}

static void
cmd_who(struct client *c, size_t len)
{
	struct evbuffer *buf;

	if (len > 0) {
		tell(c, "! usage: /who");
		return;
	}
	if ((buf = evbuffer_new()) == NULL)
		return;
	evbuffer_add(buf, "* users:", 8);
	async_chat_group_foreach(room, list_nick, buf); /* joining order */
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

	if (c->doomed) {
		if (c->doomed_prev != NULL)
			c->doomed_prev->doomed_next = c->doomed_next;
		else
			doomed = c->doomed_next;
		if (c->doomed_next != NULL)
			c->doomed_next->doomed_prev = c->doomed_prev;
	}
	free(c);
	/* The channel has left its group: the last one out ends a graceful
	 * shutdown. */
	if (shutting_down && async_chat_group_count(room) == 0 &&
	    async_chat_group_count(lobby) == 0)
		event_base_loopbreak(base);
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
	/* From here on closing the channel frees c (client_free). */
	if (async_chat_group_add(lobby, c->chat) < 0 ||
	    async_chat_set_high_water(c->chat, 0, MAX_PENDING,
		on_high_water) < 0) {
		async_chat_close(c->chat);
		return;
	}
	async_chat_set_terminator_line(c->chat);
	async_chat_set_max_frame(c->chat, MAX_LINE);
	tell(c, "* welcome to libasynchat chat; nickname?");
	reap();
}

/* Out of descriptors or memory: the listener backs off by itself (the
 * pending connection waits in the backlog); say so. */
static void
accept_error(struct async_chat_listener *l, int err, void *arg)
{
	fprintf(stderr, "accept: %s\n", strerror(err));
}

/*
 * Startup and shutdown
 */

/* The first signal starts a graceful shutdown, a second one ends it. */
static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	static const char notice[] = "* server shutting down\r\n";
	struct timeval grace = { SHUTDOWN_GRACE, 0 };

	if (shutting_down || async_chat_group_count(room) +
	    async_chat_group_count(lobby) == 0) {
		event_base_loopbreak(base);
		return;
	}
	shutting_down = 1;
	async_chat_listener_free(listener);
	listener = NULL;
	async_chat_group_push(room, notice, sizeof(notice) - 1);
	reap(); /* the notice may have doomed a slow reader */
	/* Each closes once its queued output is sent; the deadline closes
	 * the rest.  client_free ends the loop when the last one is gone. */
	if (async_chat_group_close_when_done(room, &grace) < 0)
		async_chat_group_close_all(room);
	if (async_chat_group_close_when_done(lobby, &grace) < 0)
		async_chat_group_close_all(lobby);
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
	room = async_chat_group_new(base);
	lobby = async_chat_group_new(base);
	if (room == NULL || lobby == NULL || start_listening(port) < 0) {
		async_chat_group_free(room);
		async_chat_group_free(lobby);
		event_base_free(base);
		return 1;
	}
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	event_base_dispatch(base);

	/* Clean shutdown: every channel (none is left unless a second
	 * signal came), the groups and the listener freed. */
	async_chat_group_close_all(room); /* runs client_free */
	async_chat_group_close_all(lobby);
	async_chat_group_free(room);
	async_chat_group_free(lobby);
	async_chat_listener_free(listener);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	printf("shut down\n");
	return 0;
}
