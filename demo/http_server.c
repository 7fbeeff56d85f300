/*
 * http_server.c - HTTP/1.1 on libasynchat: the classic asynchat example
 * grown up.  Serves the regular files under a document root (GET, HEAD)
 * and echoes request bodies (POST /echo), with keep-alive, pipelining and
 * hard limits, on a loopback port.
 *
 *   usage: http_server [-p port] [-r docroot] [-t head] [-b body]
 *                      [-k idle] [-w write] [-g grace]
 *                                               (port 0: any free port)
 *
 * It prints "listening on 127.0.0.1:PORT".  No name leaves the root: "..",
 * an encoded "/" or NUL is refused, and realpath() settles where symlinks
 * lead.  Refused requests (400, 408, 413, 431, 501...) end their
 * connection only.
 *
 * One channel per connection, one terminator per protocol state:
 *
 *   request head   "\r\n\r\n", frame bound 8 KiB (431 beyond it)
 *   request body   a count: the Content-Length (413 beyond 1 MiB)
 *   after the last response
 *                  none: over-sent bytes are read and dropped while the
 *                  response drains, so closing never resets the
 *                  connection under a reply the client has yet to read
 *
 * Every clock is the channel's own (seconds, fractions allowed, 0 turns
 * one off):
 *
 *   -t head   a frame deadline: the request head must be complete within
 *             this of its first byte (default 10), so a client sending a
 *             byte a second (slowloris) cannot hold a connection open
 *   -b body   the frame deadline of a request body (default 60)
 *   -k idle   the idle timeout: a connection that sends nothing for this
 *             long before a request (the first, or the next on a
 *             keep-alive connection) is closed (default 30)
 *   -w write  the write timeout: a client that takes none of its pending
 *             output for this long is closed (default 30); one that reads
 *             slowly is not
 *   -g grace  on SIGINT or SIGTERM, how long connections may take to
 *             finish sending what is queued (default 10)
 *
 * A missed deadline is answered with 408 if nothing is queued before it,
 * and the connection ends.
 *
 * Flow control: a client that pipelines requests without reading the
 * responses stops being read once HIGH_WATER bytes of output wait for it
 * (the channel's high-water mark) and is read again once LOW_WATER are
 * left, so its requests wait in the kernel instead of its responses in
 * the server.  Files queued behind one another are not counted by the
 * mark until their turn comes, and each holds a descriptor: the number of
 * files a client has queued is bounded as well (MAX_QUEUED_FILES).
 *
 * Shutdown: SIGINT or SIGTERM stops accepting, closes every connection of
 * the server's channel group once its queued output is sent (the grace
 * deadline closes the rest), and the server exits when the group is empty
 * and everything is freed.  A second signal ends it at once.
 *
 * The channel runs in collect mode rather than message mode because of the
 * last state: under the none terminator a message-mode channel would keep
 * every dropped byte in its own buffer until it closes, while a collect
 * handler can simply ignore them.  The copies collect makes are bounded by
 * the head and body limits.
 */
#define _XOPEN_SOURCE 700 /* realpath() */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <asynchat.h>

#define MAX_HEAD_BYTES (8 * 1024)    /* request line and headers */
#define MAX_HEAD_LINES 100           /* header lines after the request line */
#define MAX_BODY_BYTES (1024 * 1024) /* Content-Length */
/* Reading a pipelining client stops above HIGH_WATER bytes of output
 * and goes on at LOW_WATER, or once its queued files have all been sent
 * (each holds an open descriptor until then). */
#define HIGH_WATER (256 * 1024)
#define LOW_WATER (64 * 1024)
#define MAX_QUEUED_FILES 16
#define LINGER_TIMEOUT 2 /* seconds of quiet after the last response */

enum state { ST_HEAD, ST_BODY, ST_LINGER };
enum method { M_GET, M_HEAD, M_POST };

/* The request being read; target points into the client's head. */
struct request {
	enum method method;
	const char *target;
	int minor; /* HTTP/1.minor */
	int keep_alive;
	int expect_continue;
	int has_length;
	uint64_t length;
};

/* Why reading is paused for flow control (both may hold). */
enum { PAUSE_HIGH_WATER = 1, PAUSE_FILES = 2 };

/* One connection; the server's group holds its channel. */
struct client {
	struct async_chat *chat;
	enum state state;
	struct request req;
	struct evbuffer *body;
	unsigned queued; /* responses queued since the output drained */
	unsigned files;  /* of which files, each holding a descriptor */
	unsigned paused; /* PAUSE_* */
	size_t head_len;
	char head[MAX_HEAD_BYTES + 1];
};

static struct async_chat_group *clients; /* every connection */
static int shutting_down;
static struct timeval head_deadline = { 10, 0 };
static struct timeval body_deadline = { 60, 0 };
static struct timeval idle_timeout = { 30, 0 };
static struct timeval write_timeout = { 30, 0 };
static struct timeval grace = { 10, 0 };
static struct event_base *base;
static struct async_chat_listener *listener;
static char root[PATH_MAX];
static size_t root_len;

/*
 * Responses
 */

static const char *
reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Content Too Large";
	case 417:
		return "Expectation Failed";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Internal Server Error";
	}
}

static const char *
connection_field(const struct request *req)
{
	if (!req->keep_alive)
		return "Connection: close\r\n";
	if (req->minor == 0)
		return "Connection: keep-alive\r\n";
	return "";
}

/* A push that fails (out of memory) leaves a truncated response: the
 * connection then ends after it, so the client sees the truncation. */
static void
pushed(struct client *c, int rc)
{
	if (rc < 0)
		c->req.keep_alive = 0;
}

/* Queue a status line and header block; extra is more header lines. */
static void
push_head(struct client *c, int status, const char *type, uint64_t length,
    const char *extra)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	pushed(c, async_chat_push_printf(c->chat,
	    "HTTP/1.1 %d %s\r\n"
	    "Server: libasynchat-http/%s\r\n"
	    "Date: %s\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %llu\r\n"
	    "%s%s\r\n",
	    status, reason(status), async_chat_version(), date, type,
	    (unsigned long long)length, connection_field(&c->req), extra));
	c->queued++;
}

/* A short text reply; the body is left out for HEAD. */
static void
push_status(struct client *c, int status, const char *extra)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%d %s\n", status, reason(status));

	push_head(c, status, "text/plain; charset=utf-8", (uint64_t)n, extra);
	if (c->req.method != M_HEAD)
		pushed(c, async_chat_push(c->chat, body, (size_t)n));
}

/*
 * Flow control: reading stops while a client has too much output to read
 * first, for either reason, and goes on once neither holds.
 */

static void
flow_pause(struct client *c, unsigned why)
{
	if (c->state == ST_LINGER)
		return; /* reads only to drop */
	if (c->paused == 0)
		async_chat_pause_reading(c->chat);
	c->paused |= why;
}

static void
flow_resume(struct client *c, unsigned why)
{
	if ((c->paused & why) == 0)
		return;
	c->paused &= ~why;
	if (c->paused == 0)
		async_chat_resume_reading(c->chat);
}

/* The channel's high-water mark: above it inside a push, below the low
 * mark again from the write callback. */
static void
on_high_water(struct async_chat *chat, int above, void *arg)
{
	struct client *c = arg;

	if (above)
		flow_pause(c, PAUSE_HIGH_WATER);
	else
		flow_resume(c, PAUSE_HIGH_WATER);
}

/*
 * Connection state changes
 */

/* The last response is queued: send it, then shut down our sending side
 * and read (and drop) whatever the client still sends until it closes or
 * is quiet for a while (see on_drain). */
static void
linger(struct client *c)
{
	struct async_chat *chat = c->chat;

	c->state = ST_LINGER;
	c->paused = 0;
	async_chat_set_max_frame(chat, 0);
	async_chat_set_terminator_none(chat);
	/* The dropped bytes are no request: no deadline until the output
	 * has drained. */
	async_chat_set_frame_timeout(chat, NULL);
	async_chat_shutdown_when_done(chat);
	if (async_chat_reading_paused(chat) == 1)
		async_chat_resume_reading(chat);
}

static void
expect_head(struct client *c)
{
	c->state = ST_HEAD;
	c->head_len = 0;
	memset(&c->req, 0, sizeof(c->req));
	async_chat_set_max_frame(c->chat, MAX_HEAD_BYTES);
	async_chat_set_terminator(c->chat, "\r\n\r\n", 4);
	async_chat_set_frame_timeout(c->chat, &head_deadline);
}

/* A fatal error answered: the reply says so and the connection ends. */
static void
fail_request(struct client *c, int status)
{
	c->req.keep_alive = 0;
	push_status(c, status, "");
	linger(c);
}

/* A request missed its deadline: 408 if the client is waiting for
 * nothing else, else it gets what is queued; the connection ends. */
static void
timed_out(struct client *c)
{
	if (c->queued == 0) {
		fail_request(c, 408);
		return;
	}
	c->req.keep_alive = 0;
	linger(c);
}

/* A response is queued: read the next request, unless the client has
 * too many files queued to read first (the high-water mark, which sees
 * the bytes, pauses by itself). */
static void
finish_request(struct client *c)
{
	if (!c->req.keep_alive) {
		linger(c);
		return;
	}
	expect_head(c);
	if (c->files >= MAX_QUEUED_FILES)
		flow_pause(c, PAUSE_FILES);
}

/*
 * Request targets and files
 */

static int
hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Percent-decode the path of the target (up to '?') into out.  Returns 0,
 * or the status refusing it: NUL, an encoded '/' and a ".." segment are
 * never let through, whatever their spelling. */
static int
decode_path(const char *target, char *out, size_t size)
{
	size_t n = 0;
	const char *p, *seg;

	for (p = target; *p != '\0' && *p != '?'; p++) {
		int ch = (unsigned char)*p;

		if (ch == '%') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

			if (lo < 0)
				return 400;
			ch = hi * 16 + lo;
			p += 2;
			if (ch == '\0')
				return 400;
			if (ch == '/')
				return 403;
		}
		if (n + 1 >= size)
			return 404; /* no such name fits in a path */
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	for (seg = strchr(out, '/'); seg != NULL; seg = strchr(seg + 1, '/'))
		if (strncmp(seg, "/..", 3) == 0 &&
		    (seg[3] == '/' || seg[3] == '\0'))
			return 403;
	return 0;
}

static int
under_root(const char *real)
{
	if (root_len == 1) /* the root is "/" */
		return 1;
	return strncmp(real, root, root_len) == 0 &&
	    (real[root_len] == '/' || real[root_len] == '\0');
}

/* Open the file a path names.  Returns an fd, or -1 with *status set.
 * realpath() resolves every symlink so that the prefix check sees where
 * the name really leads. */
static int
open_under_root(const char *path, int *status)
{
	char joined[PATH_MAX], real[PATH_MAX];
	int fd;

	if ((size_t)snprintf(joined, sizeof(joined), "%s%s", root, path) >=
	    sizeof(joined)) {
		*status = 404;
		return -1;
	}
	if (realpath(joined, real) == NULL) {
		*status = errno == EACCES ? 403 : 404;
		return -1;
	}
	if (!under_root(real)) {
		*status = 403;
		return -1;
	}
	/* O_NONBLOCK: opening a FIFO must not stall the server. */
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM))
		*status = 503; /* the server's trouble, not the file's */
	else if (fd < 0)
		*status = errno == ENOENT ? 404 : 403;
	return fd;
}

static const char *
content_type(const char *path)
{
	static const char *const types[][2] = {
		{ "html", "text/html; charset=utf-8" },
		{ "htm", "text/html; charset=utf-8" },
		{ "txt", "text/plain; charset=utf-8" },
		{ "css", "text/css; charset=utf-8" },
		{ "js", "text/javascript; charset=utf-8" },
		{ "json", "application/json" },
		{ "png", "image/png" },
		{ "jpg", "image/jpeg" },
		{ "jpeg", "image/jpeg" },
		{ "gif", "image/gif" },
		{ "svg", "image/svg+xml" },
	};
	const char *slash = strrchr(path, '/');
	const char *dot = strrchr(path, '.');
	size_t i;

	if (dot != NULL && (slash == NULL || dot > slash))
		for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
			if (strcasecmp(dot + 1, types[i][0]) == 0)
				return types[i][1];
	return "application/octet-stream";
}

/* GET and HEAD: the file goes out with async_chat_push_file (sendfile). */
static void
serve_file(struct client *c, const char *path)
{
	struct stat st;
	int status = 0;
	int fd = open_under_root(path, &status);

	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		fd = -1;
		status = 403; /* directories, devices, FIFOs */
	}
	if (fd < 0) {
		push_status(c, status, status == 503 ? "Retry-After: 1\r\n" : "");
		return;
	}
	push_head(c, 200, content_type(path), (uint64_t)st.st_size, "");
	/* The channel owns fd from the call on, success or not. */
	if (c->req.method == M_GET && st.st_size > 0) {
		pushed(c, async_chat_push_file(c->chat, fd, 0, st.st_size));
		c->files++;
	} else
		close(fd);
}

/* The whole request (head and body) is in: answer it. */
static void
dispatch(struct client *c)
{
	char path[PATH_MAX];
	int status = decode_path(c->req.target, path, sizeof(path));
	int is_echo = status == 0 && strcmp(path, "/echo") == 0;

	if (status != 0) {
		if (status == 400)
			c->req.keep_alive = 0; /* malformed: close */
		push_status(c, status, "");
	} else if (is_echo && c->req.method == M_POST) {
		push_head(c, 200, "application/octet-stream",
		    evbuffer_get_length(c->body), "");
		pushed(c, async_chat_push_buffer(c->chat, c->body)); /* moved */
	} else if (is_echo)
		push_status(c, 405, "Allow: POST\r\n");
	else if (c->req.method == M_POST)
		push_status(c, 405, "Allow: GET, HEAD\r\n");
	else
		serve_file(c, path);
	evbuffer_drain(c->body, evbuffer_get_length(c->body));
	finish_request(c);
}

/*
 * Request head parsing.  The head is NUL-terminated in c->head; each
 * parser returns 0 or the status that refuses the request.
 */

static int
is_tchar(int ch)
{
	if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
	    (ch >= 'A' && ch <= 'Z'))
		return 1;
	return ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Cut the next line off *cursor (lines end in "\r\n"; a bare "\n" is
 * accepted, a bare CR is not).  Returns NULL at the end. */
static char *
next_line(char **cursor, int *bad)
{
	char *line = *cursor, *nl;

	if (line == NULL)
		return NULL;
	nl = strchr(line, '\n');
	*cursor = nl != NULL ? nl + 1 : NULL;
	if (nl != NULL) {
		*nl = '\0';
		if (nl > line && nl[-1] == '\r')
			nl[-1] = '\0';
	}
	if (strchr(line, '\r') != NULL)
		*bad = 1;
	return line;
}

static int
parse_method(struct request *req, const char *m, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (!is_tchar((unsigned char)m[i]))
			return 400;
	if (len == 3 && memcmp(m, "GET", 3) == 0)
		req->method = M_GET;
	else if (len == 4 && memcmp(m, "HEAD", 4) == 0)
		req->method = M_HEAD;
	else if (len == 4 && memcmp(m, "POST", 4) == 0)
		req->method = M_POST;
	else
		return len > 0 ? 501 : 400;
	return 0;
}

/* An absolute-form target ("http://host/path") is served by its path. */
static const char *
origin_form(const char *target)
{
	const char *slash;

	if (strncasecmp(target, "http://", 7) != 0)
		return target[0] == '/' ? target : NULL;
	slash = strchr(target + 7, '/');
	return slash != NULL ? slash : "/";
}

/* "HTTP/1.0" or "HTTP/1.1"; other versions are refused. */
static int
parse_version(struct request *req, const char *v)
{
	if (strlen(v) != 8 || strncmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
	    v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return 400;
	if (v[5] != '1' || v[7] > '1')
		return 505;
	req->minor = v[7] - '0';
	return 0;
}

/* "METHOD SP request-target SP HTTP-version", single spaces. */
static int
parse_request_line(struct request *req, char *line)
{
	char *sp1 = strchr(line, ' '), *sp2, *p;
	int status;

	if (sp1 == NULL || (sp2 = strchr(sp1 + 1, ' ')) == NULL ||
	    sp2 == sp1 + 1 || strchr(sp2 + 1, ' ') != NULL)
		return 400;
	*sp2 = '\0';
	for (p = sp1 + 1; *p != '\0'; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return 400;
	if ((status = parse_version(req, sp2 + 1)) != 0 ||
	    (status = parse_method(req, line, (size_t)(sp1 - line))) != 0)
		return status;
	if ((req->target = origin_form(sp1 + 1)) == NULL)
		return 400;
	return 0;
}

/* Connection: a comma-separated list of options. */
static void
parse_connection(char *value, int *closing, int *keeping)
{
	char *save = NULL, *tok;

	for (tok = strtok_r(value, ",", &save); tok != NULL;
	     tok = strtok_r(NULL, ",", &save)) {
		tok += strspn(tok, " \t");
		tok[strcspn(tok, " \t")] = '\0';
		if (strcasecmp(tok, "close") == 0)
			*closing = 1;
		else if (strcasecmp(tok, "keep-alive") == 0)
			*keeping = 1;
	}
}

static int
parse_length(struct request *req, const char *value)
{
	uint64_t n = 0;
	const char *p;

	if (*value == '\0' || strlen(value) > 18)
		return 400;
	for (p = value; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return 400;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (req->has_length && req->length != n)
		return 400;
	req->has_length = 1;
	req->length = n;
	return 0;
}

/* What a request's header fields tell the server. */
struct fields {
	int hosts, closing, keeping, chunked;
};

static int
parse_field(struct request *req, struct fields *f, char *line)
{
	char *colon = strchr(line, ':'), *value, *end, *p;

	if (colon == NULL || colon == line)
		return 400;
	for (p = line; p < colon; p++)
		if (!is_tchar((unsigned char)*p))
			return 400; /* also obs-fold and space before ':' */
	*colon = '\0';
	value = colon + 1 + strspn(colon + 1, " \t");
	for (end = value + strlen(value);
	     end > value && (end[-1] == ' ' || end[-1] == '\t'); end--)
		;
	*end = '\0';
	for (p = value; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' && *p != '\t')
			return 400;
	if (strcasecmp(line, "Content-Length") == 0)
		return parse_length(req, value);
	if (strcasecmp(line, "Transfer-Encoding") == 0)
		f->chunked = 1; /* no transfer coding is supported */
	else if (strcasecmp(line, "Host") == 0)
		f->hosts++;
	else if (strcasecmp(line, "Connection") == 0)
		parse_connection(value, &f->closing, &f->keeping);
	else if (strcasecmp(line, "Expect") == 0) {
		if (strcasecmp(value, "100-continue") != 0)
			return 417;
		req->expect_continue = req->minor >= 1;
	}
	return 0;
}

static int
parse_head(struct client *c, char *head)
{
	struct request *req = &c->req;
	struct fields f = { 0, 0, 0, 0 };
	char *cursor = head, *line;
	int bad = 0, lines = 0, status;

	line = next_line(&cursor, &bad);
	if (bad)
		return 400;
	if ((status = parse_request_line(req, line)) != 0)
		return status;
	while ((line = next_line(&cursor, &bad)) != NULL) {
		if (bad)
			return 400;
		if (++lines > MAX_HEAD_LINES)
			return 431;
		if ((status = parse_field(req, &f, line)) != 0)
			return status;
	}
	if (f.chunked || f.hosts > 1 || (req->minor == 1 && f.hosts == 0))
		return 400;
	if (req->has_length && req->length > MAX_BODY_BYTES)
		return 413;
	req->keep_alive = !f.closing && (req->minor == 1 || f.keeping);
	return 0;
}

/* The head of a request has arrived (the "\r\n\r\n" is consumed). */
static void
head_done(struct client *c)
{
	char *head = c->head;
	int status;

	c->head[c->head_len] = '\0';
	if (memchr(c->head, '\0', c->head_len) != NULL) {
		fail_request(c, 400);
		return;
	}
	/* Empty lines before a request are allowed (RFC 9112, 2.2). */
	head += strspn(head, "\r\n");
	if (*head == '\0') {
		expect_head(c);
		return;
	}
	status = parse_head(c, head);
	if (status != 0) {
		fail_request(c, status);
	} else if (c->req.has_length && c->req.length > 0) {
		if (c->req.expect_continue)
			pushed(c, async_chat_push(c->chat,
			    "HTTP/1.1 100 Continue\r\n\r\n", 25));
		/* The body: a count, bounded by MAX_BODY_BYTES already, under
		 * its own deadline. */
		c->state = ST_BODY;
		async_chat_set_max_frame(c->chat, 0);
		async_chat_set_terminator_count(c->chat, c->req.length);
		async_chat_set_frame_timeout(c->chat, &body_deadline);
	} else
		dispatch(c);
}

/*
 * Channel handlers
 */

static void
collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct client *c = arg;

	switch (c->state) {
	case ST_HEAD:
		/* The frame bound keeps the head within c->head. */
		if (len > MAX_HEAD_BYTES - c->head_len)
			len = MAX_HEAD_BYTES - c->head_len;
		memcpy(c->head + c->head_len, data, len);
		c->head_len += len;
		break;
	case ST_BODY:
		if (evbuffer_add(c->body, data, len) < 0)
			async_chat_close(chat);
		break;
	case ST_LINGER:
		break; /* sent after the last request: dropped */
	}
}

static void
found(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	if (c->state == ST_HEAD)
		head_done(c);
	else if (c->state == ST_BODY)
		dispatch(c);
}

static void
on_error(struct async_chat *chat, int err, void *arg)
{
	struct client *c = arg;

	switch (err) {
	case ASYNC_CHAT_ERR_FRAME_TOO_LONG:
		/* The head outgrew its bound: reading is paused with the
		 * rest of it unread; answer, then drop the rest while the
		 * answer drains. */
		if (c->state == ST_HEAD) {
			fail_request(c, 431);
			return;
		}
		break;
	case ASYNC_CHAT_ERR_FRAME_TIMEOUT:
		/* Reading is suspended; linger() goes on to drop the rest. */
		if (c->state != ST_LINGER) {
			timed_out(c);
			return;
		}
		break; /* dropping input for too long after the last reply */
	case ASYNC_CHAT_ERR_IDLE_TIMEOUT:
		/* Nothing read for a while.  While output waits for the
		 * client, the write timeout decides instead. */
		if (c->queued > 0)
			return;
		if (c->state == ST_BODY || (c->state == ST_HEAD &&
		    c->head_len > 0)) {
			timed_out(c); /* a request begun, then silence */
			return;
		}
		break; /* between requests, or after the last one */
	default:
		break; /* ASYNC_CHAT_ERR_WRITE_TIMEOUT, socket errors */
	}
	async_chat_close(chat); /* runs client_free */
}

/* Every queued byte is with the kernel: go on reading a client that had
 * too many files to read, and give a closing connection a short while to
 * close first. */
static void
on_drain(struct async_chat *chat, void *arg)
{
	struct client *c = arg;
	struct timeval linger_tv = { LINGER_TIMEOUT, 0 };

	c->queued = 0;
	c->files = 0;
	if (c->state == ST_LINGER) {
		/* Quiet for LINGER_TIMEOUT, or still sending after it: the
		 * idle timeout or the deadline of the dropped "frame". */
		async_chat_set_idle_timeout(chat, &linger_tv);
		async_chat_set_frame_timeout(chat, &linger_tv);
		return;
	}
	flow_resume(c, PAUSE_FILES);
}

static void
client_free(struct async_chat *chat, void *arg)
{
	struct client *c = arg;

	evbuffer_free(c->body);
	free(c);
	/* The channel has left the group: the last one out ends a
	 * graceful shutdown. */
	if (shutting_down && async_chat_group_count(clients) == 0)
		event_base_loopbreak(base);
}

/* handle_close is left NULL: at the client's EOF every complete request
 * has been answered, and the channel flushes the answers and closes. */
static const struct async_chat_handlers http_handlers = {
	.collect_incoming_data = collect,
	.found_terminator = found,
	.handle_error = on_error,
	.handle_drain = on_drain,
	.handle_free = client_free,
};

/*
 * The listener
 */

static void
handle_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct client *c = calloc(1, sizeof(*c));
	int one = 1;

	/* A response is a push of the head and a push_file of the body,
	 * which leave in two writes; without TCP_NODELAY the second waits
	 * for the client's delayed ACK of the first. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c == NULL || (c->body = evbuffer_new()) == NULL ||
	    (c->chat = async_chat_new(base, fd, &http_handlers, c)) == NULL) {
		if (c != NULL && c->body != NULL)
			evbuffer_free(c->body);
		free(c);
		evutil_closesocket(fd);
		return;
	}
	/* From here on closing the channel frees c (client_free). */
	if (async_chat_group_add(clients, c->chat) < 0 ||
	    async_chat_set_idle_timeout(c->chat, &idle_timeout) < 0 ||
	    async_chat_set_write_timeout(c->chat, &write_timeout) < 0 ||
	    async_chat_set_high_water(c->chat, LOW_WATER, HIGH_WATER,
		on_high_water) < 0) {
		async_chat_close(c->chat);
		return;
	}
	expect_head(c);
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
	if (shutting_down || async_chat_group_count(clients) == 0) {
		event_base_loopbreak(base);
		return;
	}
	shutting_down = 1;
	async_chat_listener_free(listener);
	listener = NULL;
	/* Each closes once its queued output is sent; whatever is left
	 * when the grace deadline passes is closed then.  client_free
	 * ends the loop when the last one is gone. */
	if (async_chat_group_close_when_done(clients,
	    grace.tv_sec != 0 || grace.tv_usec != 0 ? &grace : NULL) < 0)
		async_chat_group_close_all(clients); /* no deadline timer */
}

static int
usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-p port] [-r docroot] [-t head] "
	    "[-b body] [-k idle] [-w write] [-g grace]\n", argv0);
	return 2;
}

/* Seconds, with a fraction if wanted: "10", "2.5"; 0 turns it off. */
static int
parse_seconds(const char *s, struct timeval *tv)
{
	char *end;
	double v = strtod(s, &end);

	if (*s == '\0' || *end != '\0' || !(v >= 0 && v <= 86400))
		return -1;
	tv->tv_sec = (time_t)v;
	tv->tv_usec = (suseconds_t)((v - (double)tv->tv_sec) * 1e6);
	return 0;
}

/* The document root, resolved once so that served paths can be checked
 * against it as a plain prefix. */
static int
set_root(const char *dir)
{
	struct stat st;

	if (realpath(dir, root) == NULL || stat(root, &st) < 0) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: not a directory\n", dir);
		return -1;
	}
	root_len = strlen(root);
	return 0;
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
	const char *dir = ".";
	long port = 0;
	char *end;
	int opt;

	while ((opt = getopt(argc, argv, "p:r:t:b:k:w:g:")) != -1) {
		int rc = 0;

		if (opt == 'p') {
			port = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || port < 0 ||
			    port > 65535)
				return usage(argv[0]);
		} else if (opt == 'r')
			dir = optarg;
		else if (opt == 't')
			rc = parse_seconds(optarg, &head_deadline);
		else if (opt == 'b')
			rc = parse_seconds(optarg, &body_deadline);
		else if (opt == 'k')
			rc = parse_seconds(optarg, &idle_timeout);
		else if (opt == 'w')
			rc = parse_seconds(optarg, &write_timeout);
		else if (opt == 'g')
			rc = parse_seconds(optarg, &grace);
		else
			return usage(argv[0]);
		if (rc < 0)
			return usage(argv[0]);
	}
	if (optind != argc)
		return usage(argv[0]);
	if (set_root(dir) < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		return 1;
	clients = async_chat_group_new(base);
	if (clients == NULL || start_listening(port) < 0) {
		async_chat_group_free(clients);
		event_base_free(base);
		return 1;
	}
	sigint = evsignal_new(base, SIGINT, on_signal, base);
	sigterm = evsignal_new(base, SIGTERM, on_signal, base);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	event_base_dispatch(base);

	/* Clean shutdown: every channel (none is left unless a second
	 * signal came), the group and the listener freed. */
	async_chat_group_close_all(clients); /* runs client_free */
	async_chat_group_free(clients);
	async_chat_listener_free(listener);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	printf("shut down\n");
	return 0;
}
