/*
 * resp_client.c - an asynchronous Redis client (RESP2) on libasynchat.
 *
 * RESP is the case libasynchat's terminator switch is made for.  Every
 * reply starts with a type line ended by "\r\n"; a bulk string "$n" is
 * followed by exactly n bytes of any content (CR, LF and NUL included) and
 * a CRLF.  So the parser reads type lines with the "\r\n" terminator and,
 * on "$n", sets a count terminator of n + 2 for the payload and its CRLF,
 * then goes back to "\r\n".  Arrays ("*n") nest, so the parser keeps a
 * stack of the arrays being filled.  Replies come back in command order,
 * so a FIFO of callbacks matches them to their commands.
 *
 *   usage: resp_client [-h host] -p port --selftest
 *          resp_client [-h host] -p port command [arg...] [';' command...]
 *
 * With --selftest it checks a real server (strings, binary values, lists,
 * nested arrays, error replies, 100,000 pipelined commands) and prints
 * "N passed, M failed".  Otherwise it sends the commands given (words
 * separated by a lone ';') and prints each reply as redis-cli does.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <asynchat.h>

#ifdef __GNUC__
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* Type lines are short; a longer one means a broken or hostile peer. */
#define RESP_LINE_MAX (64 * 1024)
/* Redis' own proto-max-bulk-len default. */
#define RESP_BULK_MAX (512LL * 1024 * 1024)
#define RESP_ARRAY_MAX 0x7fffffffLL
#define RESP_DEPTH_MAX 1000

/*
 * Replies
 */

enum resp_type {
	RESP_STATUS,   /* +OK */
	RESP_ERROR,    /* -ERR ... */
	RESP_INTEGER,  /* :42 */
	RESP_BULK,     /* $5 hello */
	RESP_ARRAY,    /* *2 ... */
	RESP_NIL,      /* $-1 */
	RESP_NIL_ARRAY /* *-1 */
};

struct resp_value {
	enum resp_type type;
	long long integer;
	char *str; /* STATUS, ERROR, BULK: len bytes and a NUL after them */
	size_t len;
	struct resp_value **elem; /* ARRAY */
	size_t n, cap;
};

static void
value_free(struct resp_value *v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < v->n; i++)
		value_free(v->elem[i]);
	free(v->elem);
	free(v->str);
	free(v);
}

static struct resp_value *
value_new(enum resp_type type)
{
	struct resp_value *v = calloc(1, sizeof(*v));

	if (v != NULL)
		v->type = type;
	return v;
}

static struct resp_value *
value_new_string(enum resp_type type, const char *data, size_t len)
{
	struct resp_value *v = value_new(type);

	if (v == NULL || (v->str = malloc(len + 1)) == NULL) {
		free(v);
		return NULL;
	}
	memcpy(v->str, data, len);
	v->str[len] = '\0';
	v->len = len;
	return v;
}

static int
value_append(struct resp_value *array, struct resp_value *v)
{
	if (array->n == array->cap) {
		size_t cap = array->cap ? array->cap * 2 : 8;
		struct resp_value **elem;

		elem = realloc(array->elem, cap * sizeof(*elem));
		if (elem == NULL)
			return -1;
		array->elem = elem;
		array->cap = cap;
	}
	array->elem[array->n++] = v;
	return 0;
}

/* The value in RESP again: the self-test compares replies with their
 * expected wire form, which checks types, lengths and nesting at once. */
static void
value_encode(const struct resp_value *v, struct evbuffer *out)
{
	size_t i;

	switch (v->type) {
	case RESP_STATUS:
	case RESP_ERROR:
		evbuffer_add(out, v->type == RESP_STATUS ? "+" : "-", 1);
		evbuffer_add(out, v->str, v->len);
		evbuffer_add(out, "\r\n", 2);
		break;
	case RESP_INTEGER:
		evbuffer_add_printf(out, ":%lld\r\n", v->integer);
		break;
	case RESP_BULK:
		evbuffer_add_printf(out, "$%zu\r\n", v->len);
		evbuffer_add(out, v->str, v->len);
		evbuffer_add(out, "\r\n", 2);
		break;
	case RESP_ARRAY:
		evbuffer_add_printf(out, "*%zu\r\n", v->n);
		for (i = 0; i < v->n; i++)
			value_encode(v->elem[i], out);
		break;
	case RESP_NIL:
		evbuffer_add(out, "$-1\r\n", 5);
		break;
	case RESP_NIL_ARRAY:
		evbuffer_add(out, "*-1\r\n", 5);
		break;
	}
}

/* Bytes as a C string literal would show them. */
static void
print_quoted(FILE *f, const char *s, size_t len, size_t max)
{
	size_t i;

	fputc('"', f);
	for (i = 0; i < len && i < max; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\r')
			fputs("\\r", f);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
	if (len > max)
		fprintf(f, "... (%zu bytes)", len);
}

/* redis-cli's layout: nested elements indented under their number. */
static void
value_print(FILE *f, const struct resp_value *v, int indent)
{
	size_t i;

	switch (v->type) {
	case RESP_STATUS:
		fprintf(f, "%s\n", v->str);
		break;
	case RESP_ERROR:
		fprintf(f, "(error) %s\n", v->str);
		break;
	case RESP_INTEGER:
		fprintf(f, "(integer) %lld\n", v->integer);
		break;
	case RESP_BULK:
		print_quoted(f, v->str, v->len, (size_t)-1);
		fputc('\n', f);
		break;
	case RESP_NIL:
	case RESP_NIL_ARRAY:
		fputs("(nil)\n", f);
		break;
	case RESP_ARRAY:
		if (v->n == 0)
			fputs("(empty array)\n", f);
		for (i = 0; i < v->n; i++) {
			int w;

			if (i > 0)
				fprintf(f, "%*s", indent, "");
			w = fprintf(f, "%zu) ", i + 1);
			value_print(f, v->elem[i], indent + w);
		}
		break;
	}
}

/*
 * The client: a channel, the FIFO of callbacks waiting for replies, and
 * the reply parser's state.
 */

struct resp_client;

/* reply is NULL when the connection ended before the reply came. */
typedef void (*reply_fn)(struct resp_client *rc, struct resp_value *reply,
    void *arg);

struct pending {
	reply_fn cb;
	void *arg;
};

struct array_frame {
	struct resp_value *array; /* not yet linked into its parent */
	long long want;
};

struct resp_client {
	struct event_base *base;
	struct async_chat *chat; /* NULL once closed */
	struct evbuffer *out;    /* scratch: one command, then pushed */

	struct pending *ring; /* callbacks in command order */
	size_t head, count, cap;

	long long bulk_len; /* >= 0: the count terminator reads a payload */
	struct array_frame *stack;
	size_t depth, stack_cap;

	/* Runs when the last awaited reply has been handled. */
	void (*on_idle)(struct resp_client *rc, void *arg);
	void *idle_arg;
	int failed; /* a connection or protocol error */
};

static int
ring_push(struct resp_client *rc, reply_fn cb, void *arg)
{
	if (rc->count == rc->cap) {
		size_t cap = rc->cap ? rc->cap * 2 : 64, i;
		struct pending *ring = malloc(cap * sizeof(*ring));

		if (ring == NULL)
			return -1;
		for (i = 0; i < rc->count; i++)
			ring[i] = rc->ring[(rc->head + i) % rc->cap];
		free(rc->ring);
		rc->ring = ring;
		rc->cap = cap;
		rc->head = 0;
	}
	rc->ring[(rc->head + rc->count) % rc->cap].cb = cb;
	rc->ring[(rc->head + rc->count) % rc->cap].arg = arg;
	rc->count++;
	return 0;
}

static struct pending
ring_pop(struct resp_client *rc)
{
	struct pending p = rc->ring[rc->head];

	rc->head = (rc->head + 1) % rc->cap;
	rc->count--;
	return p;
}

static void
parser_reset(struct resp_client *rc)
{
	while (rc->depth > 0)
		value_free(rc->stack[--rc->depth].array);
	rc->bulk_len = -1;
}

static void rc_fail(struct resp_client *rc, const char *fmt, ...)
    PRINTF_LIKE(2, 3);

/* A connection or protocol error: report it and close; handle_free does
 * the rest. */
static void
rc_fail(struct resp_client *rc, const char *fmt, ...)
{
	va_list ap;

	fputs("resp_client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	rc->failed = 1;
	async_chat_close(rc->chat);
}

/* Queue a command: an array of bulk strings, so any bytes may be sent.
 * On failure (-1) the connection is closed and cb will not run. */
static int
resp_command(struct resp_client *rc, reply_fn cb, void *arg, int argc,
    const char *const *argv, const size_t *lens)
{
	int i, err;

	if (rc->chat == NULL) {
		errno = ENOTCONN;
		return -1;
	}
	evbuffer_add_printf(rc->out, "*%d\r\n", argc);
	for (i = 0; i < argc; i++) {
		evbuffer_add_printf(rc->out, "$%zu\r\n", lens[i]);
		evbuffer_add(rc->out, argv[i], lens[i]);
		evbuffer_add(rc->out, "\r\n", 2);
	}
	if (ring_push(rc, cb, arg) < 0) {
		errno = ENOMEM;
		goto fail;
	}
	if (async_chat_push_buffer(rc->chat, rc->out) < 0) {
		rc->count--; /* cb is not called: the command was not sent */
		goto fail;
	}
	return 0;
fail:
	err = errno;
	evbuffer_drain(rc->out, evbuffer_get_length(rc->out));
	rc_fail(rc, "cannot queue a command: %s", strerror(err));
	errno = err;
	return -1;
}

/* A complete value: into the array being filled, or to its command. */
static void
value_done(struct resp_client *rc, struct resp_value *v)
{
	struct pending p;

	if (v == NULL) {
		rc_fail(rc, "out of memory");
		return;
	}
	while (rc->depth > 0) {
		struct array_frame *top = &rc->stack[rc->depth - 1];

		if (value_append(top->array, v) < 0) {
			value_free(v);
			rc_fail(rc, "out of memory");
			return;
		}
		if ((long long)top->array->n < top->want)
			return;
		v = top->array;
		rc->depth--;
	}
	if (rc->count == 0) {
		value_free(v);
		rc_fail(rc, "protocol error: a reply nobody asked for");
		return;
	}
	p = ring_pop(rc);
	p.cb(rc, v, p.arg);
	value_free(v);
	if (rc->chat != NULL && rc->count == 0 && rc->on_idle != NULL)
		rc->on_idle(rc, rc->idle_arg);
}

/* Strict decimal: an optional '-' and digits, within 64 bits. */
static int
parse_ll(const char *s, size_t len, long long *out)
{
	int neg = len > 0 && s[0] == '-';
	unsigned long long v = 0, limit = (unsigned long long)LLONG_MAX + neg;
	size_t i = (size_t)neg;

	if (i == len)
		return -1;
	for (; i < len; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (s[i] < '0' || s[i] > '9' || v > (limit - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = neg && v > 0 ? -(long long)(v - 1) - 1 : (long long)v;
	return 0;
}

static int
start_bulk(struct resp_client *rc, long long n)
{
	if (n == -1) {
		value_done(rc, value_new(RESP_NIL));
		return 0;
	}
	if (n < 0 || n > RESP_BULK_MAX)
		return -1;
	/* The payload and its CRLF in one counted frame; a count frame has
	 * its own bound, so the line bound is lifted meanwhile. */
	rc->bulk_len = n;
	async_chat_set_max_frame(rc->chat, 0);
	async_chat_set_terminator_count(rc->chat, (uint64_t)n + 2);
	return 0;
}

static int
start_array(struct resp_client *rc, long long n)
{
	struct resp_value *v;

	if (n == -1 || n == 0) {
		value_done(rc, value_new(n ? RESP_NIL_ARRAY : RESP_ARRAY));
		return 0;
	}
	if (n < 0 || n > RESP_ARRAY_MAX || rc->depth == RESP_DEPTH_MAX)
		return -1;
	if (rc->depth == rc->stack_cap) {
		size_t cap = rc->stack_cap ? rc->stack_cap * 2 : 8;
		struct array_frame *s = realloc(rc->stack, cap * sizeof(*s));

		if (s == NULL)
			return -1;
		rc->stack = s;
		rc->stack_cap = cap;
	}
	if ((v = value_new(RESP_ARRAY)) == NULL)
		return -1;
	rc->stack[rc->depth++] = (struct array_frame){ v, n };
	return 0;
}

/* A type line, its "\r\n" already consumed. */
static void
read_line(struct resp_client *rc, const char *line, size_t len)
{
	long long n = 0;
	int bad;

	if (len == 0) {
		rc_fail(rc, "protocol error: empty line");
		return;
	}
	switch (line[0]) {
	case '+':
	case '-':
		value_done(rc, value_new_string(line[0] == '+' ? RESP_STATUS :
		    RESP_ERROR, line + 1, len - 1));
		return;
	case ':':
		bad = parse_ll(line + 1, len - 1, &n) < 0;
		if (!bad) {
			struct resp_value *v = value_new(RESP_INTEGER);

			if (v != NULL)
				v->integer = n;
			value_done(rc, v);
		}
		break;
	case '$':
		bad = parse_ll(line + 1, len - 1, &n) < 0 ||
		    start_bulk(rc, n) < 0;
		break;
	case '*':
		bad = parse_ll(line + 1, len - 1, &n) < 0 ||
		    start_array(rc, n) < 0;
		break;
	default:
		bad = 1;
	}
	if (bad)
		rc_fail(rc, "protocol error: bad line \"%.*s\"",
		    (int)(len > 40 ? 40 : len), line);
}

/* A bulk payload and its CRLF: exactly bulk_len + 2 bytes. */
static void
read_bulk(struct resp_client *rc, struct evbuffer *in)
{
	size_t n = (size_t)rc->bulk_len;
	struct resp_value *v = value_new(RESP_BULK);
	char crlf[2];

	rc->bulk_len = -1;
	async_chat_set_terminator(rc->chat, "\r\n", 2);
	async_chat_set_max_frame(rc->chat, RESP_LINE_MAX);
	if (v == NULL || (v->str = malloc(n + 1)) == NULL) {
		value_free(v);
		rc_fail(rc, "out of memory");
		return;
	}
	v->len = n;
	v->str[n] = '\0';
	if (evbuffer_get_length(in) != n + 2 ||
	    evbuffer_remove(in, v->str, n) != (int)n ||
	    evbuffer_remove(in, crlf, 2) != 2 || memcmp(crlf, "\r\n", 2)) {
		value_free(v);
		rc_fail(rc, "protocol error: bulk string not ended by CRLF");
		return;
	}
	value_done(rc, v);
}

/* Message mode: the frame waits in the channel's buffer. */
static void
found(struct async_chat *chat, void *arg)
{
	struct resp_client *rc = arg;
	struct evbuffer *in = async_chat_incoming(chat);
	size_t len = evbuffer_get_length(in);

	if (rc->bulk_len >= 0)
		read_bulk(rc, in);
	else
		read_line(rc, (const char *)evbuffer_pullup(in, -1), len);
	/* The channel may be closed now, and the buffer with it. */
	if (rc->chat != NULL)
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void
closed(struct async_chat *chat, void *arg)
{
	struct resp_client *rc = arg;
	size_t partial = evbuffer_get_length(async_chat_incoming(chat));

	if (rc->count > 0 || rc->depth > 0 || rc->bulk_len >= 0 || partial)
		rc_fail(rc, "server closed the connection with %zu "
			    "replies outstanding", rc->count);
	else
		async_chat_close(chat);
}

static void
error(struct async_chat *chat, int err, void *arg)
{
	if (err == ASYNC_CHAT_ERR_FRAME_TOO_LONG)
		rc_fail(arg, "protocol error: a line longer than %d bytes",
		    RESP_LINE_MAX);
	else
		rc_fail(arg, "%s", async_chat_strerror(err));
}

/* However the channel closed: commands still waiting will get no reply,
 * and this one-connection program is done. */
static void
client_free(struct async_chat *chat, void *arg)
{
	struct resp_client *rc = arg;

	rc->chat = NULL;
	parser_reset(rc);
	while (rc->count > 0) {
		struct pending p = ring_pop(rc);

		p.cb(rc, NULL, p.arg);
	}
	event_base_loopbreak(rc->base);
}

static const struct async_chat_handlers resp_handlers = {
	.found_terminator = found, /* message mode */
	.handle_close = closed,
	.handle_error = error,
	.handle_free = client_free,
};

static int
rc_open(struct resp_client *rc, struct event_base *base, const char *host,
    int port)
{
	memset(rc, 0, sizeof(*rc));
	rc->base = base;
	rc->bulk_len = -1;
	if ((rc->out = evbuffer_new()) == NULL)
		return -1;
	rc->chat = async_chat_new(base, -1, &resp_handlers, rc);
	if (rc->chat == NULL)
		return -1;
	async_chat_set_terminator(rc->chat, "\r\n", 2);
	async_chat_set_max_frame(rc->chat, RESP_LINE_MAX);
	/* Commands queued before the connection is made are sent once it
	 * is.  With no evdns base the lookup blocks, and a name that does
	 * not resolve closes the channel before the call returns: from here
	 * on rc->chat, which handle_free clears, says whether it lives. */
	return async_chat_connect_hostname(rc->chat, NULL, AF_UNSPEC, host,
	    port);
}

static void
rc_release(struct resp_client *rc)
{
	async_chat_close(rc->chat); /* runs client_free */
	parser_reset(rc);
	free(rc->stack);
	free(rc->ring);
	if (rc->out != NULL)
		evbuffer_free(rc->out);
}

/*
 * The self-test.  Each check sends a command and compares the reply, in
 * RESP, with the expected bytes.  The steps run one after another: the
 * next starts when every reply of the previous one has come back.
 */

#define K(name) "resp_client:selftest:" name
#define PIPELINE 100000
#define BIG_VALUE (1024 * 1024 + 3)
#define LIST_LEN 10000
#define TIMEOUT_SECONDS 120
#define BIN_KEY K("bin\r\nkey\0!")

/* Every key the test may leave, for DEL before and after it. */
#define TEST_KEYS(X)                                                           \
	X(K("str")) X(K("empty")) X(K("counter")) X(K("list")) X(K("bin"))     \
	X(BIN_KEY) X(K("big")) X(K("biglist")) X(K("tx")) X(K("watched"))      \
	X(K("s")) X(K("pipelined"))
#define KEY_NAME(k) k,
#define KEY_LEN(k) sizeof(k) - 1,
static const char *const test_keys[] = { "DEL", TEST_KEYS(KEY_NAME) };
static const size_t test_key_lens[] = { 3, TEST_KEYS(KEY_LEN) };

struct selftest {
	struct resp_client *rc;
	int passed, failed;
	int step, finished;
	long long incr_next; /* pipeline: the reply expected next */
	long long incr_bad;  /* pipeline: replies out of order or wrong */
	struct timeval started;
};

struct expect {
	struct selftest *t;
	char *name;
	struct evbuffer *want;
	int prefix; /* only the start of the reply must match */
};

static void check(struct selftest *t, int ok, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

static void
check(struct selftest *t, int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "ok  " : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (ok)
		t->passed++;
	else
		t->failed++;
}

static void
expect_reply(struct resp_client *rc, struct resp_value *reply, void *arg)
{
	struct expect *e = arg;
	struct evbuffer *got = evbuffer_new();
	size_t want_len = evbuffer_get_length(e->want), got_len;
	int ok;

	if (reply != NULL && got != NULL)
		value_encode(reply, got);
	got_len = got != NULL ? evbuffer_get_length(got) : 0;
	ok = reply != NULL &&
	    (e->prefix ? got_len >= want_len : got_len == want_len) &&
	    memcmp(evbuffer_pullup(got, -1), evbuffer_pullup(e->want, -1),
		want_len) == 0;
	check(e->t, ok, "%s", e->name);
	if (!ok && reply == NULL) {
		printf("     no reply: the connection ended\n");
	} else if (!ok) {
		printf("     got  ");
		print_quoted(stdout, (const char *)evbuffer_pullup(got, -1),
		    got_len, 200);
		printf("\n     want ");
		print_quoted(stdout, (const char *)evbuffer_pullup(e->want, -1),
		    want_len, 200);
		putchar('\n');
	}
	if (got != NULL)
		evbuffer_free(got);
	evbuffer_free(e->want);
	free(e->name);
	free(e);
}

/* Send argv and check that the reply reads want (want_len bytes of RESP). */
static void
expect_argv(struct selftest *t, const char *name, const void *want,
    size_t want_len, int prefix, int argc, const char *const *argv,
    const size_t *lens)
{
	struct expect *e = calloc(1, sizeof(*e));

	if (e == NULL || (e->name = strdup(name)) == NULL ||
	    (e->want = evbuffer_new()) == NULL ||
	    evbuffer_add(e->want, want, want_len) < 0) {
		if (e != NULL) {
			if (e->want != NULL)
				evbuffer_free(e->want);
			free(e->name);
			free(e);
		}
		check(t, 0, "%s: out of memory", name);
		return;
	}
	e->t = t;
	e->prefix = prefix;
	if (resp_command(t->rc, expect_reply, e, argc, argv, lens) < 0)
		expect_reply(t->rc, NULL, e);
}

/* The same with C-string words, NULL-terminated. */
static void
expect_cmd(struct selftest *t, const char *name, const char *want, ...)
{
	const char *argv[16];
	size_t lens[16];
	int argc = 0;
	va_list ap;

	va_start(ap, want);
	while (argc < 16 && (argv[argc] = va_arg(ap, const char *)) != NULL) {
		lens[argc] = strlen(argv[argc]);
		argc++;
	}
	va_end(ap);
	expect_argv(t, name, want, strlen(want), 0, argc, argv, lens);
}

static void
step_basic(struct selftest *t)
{
	expect_cmd(t, "PING", "+PONG\r\n", "PING", NULL);
	expect_cmd(t, "SET", "+OK\r\n", "SET", K("str"), "hello", NULL);
	expect_cmd(t, "GET", "$5\r\nhello\r\n", "GET", K("str"), NULL);
	expect_cmd(t, "GET missing key is nil", "$-1\r\n", "GET",
	    K("missing"), NULL);
	expect_cmd(t, "SET empty value", "+OK\r\n", "SET", K("empty"), "",
	    NULL);
	expect_cmd(t, "GET empty value", "$0\r\n\r\n", "GET", K("empty"), NULL);
	expect_cmd(t, "DEL existing key", ":1\r\n", "DEL", K("str"), NULL);
	expect_cmd(t, "DEL missing key", ":0\r\n", "DEL", K("str"), NULL);
	expect_cmd(t, "INCR", ":1\r\n", "INCR", K("counter"), NULL);
	expect_cmd(t, "INCRBY", ":42\r\n", "INCRBY", K("counter"), "41", NULL);
	expect_cmd(t, "RPUSH", ":3\r\n", "RPUSH", K("list"), "a", "bb", "",
	    NULL);
	expect_cmd(t, "LRANGE", "*3\r\n$1\r\na\r\n$2\r\nbb\r\n$0\r\n\r\n",
	    "LRANGE", K("list"), "0", "-1", NULL);
	expect_cmd(t, "LRANGE missing key is an empty array", "*0\r\n",
	    "LRANGE", K("missing"), "0", "-1", NULL);
}

/* xorshift: reproducible bytes of every value, CR, LF and NUL included. */
static void
fill_random(unsigned char *p, size_t len)
{
	uint32_t x = 2463534242u;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)x;
	}
}

/* SET key value, then GET key must give back exactly value. */
static void
round_trip(struct selftest *t, const char *what, const char *key,
    size_t key_len, const void *value, size_t len)
{
	const char *set[] = { "SET", key, value };
	const char *get[] = { "GET", key };
	size_t set_lens[] = { 3, key_len, len }, get_lens[] = { 3, key_len };
	struct evbuffer *want = evbuffer_new();
	char name[128];

	snprintf(name, sizeof(name), "SET %s", what);
	expect_argv(t, name, "+OK\r\n", 5, 0, 3, set, set_lens);
	evbuffer_add_printf(want, "$%zu\r\n", len);
	evbuffer_add(want, value, len);
	evbuffer_add(want, "\r\n", 2);
	snprintf(name, sizeof(name), "GET %s back byte for byte", what);
	expect_argv(t, name, evbuffer_pullup(want, -1),
	    evbuffer_get_length(want), 0, 2, get, get_lens);
	evbuffer_free(want);
}

static void
step_binary(struct selftest *t)
{
	static const char tricky[] = "a\r\nb\0c\r\n$3\r\n*1\r\n\r\n\0";
	static const char key[] = BIN_KEY;
	unsigned char all[256], *big = malloc(BIG_VALUE);
	char strlen_reply[32];
	size_t i;

	for (i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	round_trip(t, "value with CRLF, NUL and RESP syntax", K("bin"),
	    strlen(K("bin")), tricky, sizeof(tricky) - 1);
	round_trip(t, "value of the 256 byte values", K("bin"),
	    strlen(K("bin")), all, sizeof(all));
	round_trip(t, "value \"\\r\\n\" alone", K("bin"), strlen(K("bin")),
	    "\r\n", 2);
	round_trip(t, "binary key", key, sizeof(key) - 1, "v", 1);
	if (big == NULL) {
		check(t, 0, "1 MiB value: out of memory");
		return;
	}
	fill_random(big, BIG_VALUE);
	round_trip(t, "1 MiB random value", K("big"), strlen(K("big")), big,
	    BIG_VALUE);
	free(big);
	snprintf(strlen_reply, sizeof(strlen_reply), ":%d\r\n", BIG_VALUE);
	expect_cmd(t, "STRLEN of the 1 MiB value", strlen_reply, "STRLEN",
	    K("big"), NULL);
}

/* One command with LIST_LEN items, and a reply of as many bulk strings. */
static void
big_list(struct selftest *t)
{
	const char **argv = calloc(LIST_LEN + 2, sizeof(*argv));
	size_t *lens = calloc(LIST_LEN + 2, sizeof(*lens));
	char *items = malloc(LIST_LEN * 16), reply[32];
	struct evbuffer *want = evbuffer_new();
	int i;

	if (argv == NULL || lens == NULL || items == NULL || want == NULL) {
		check(t, 0, "list of %d items: out of memory", LIST_LEN);
		goto out;
	}
	argv[0] = "RPUSH";
	argv[1] = K("biglist");
	lens[0] = 5;
	lens[1] = strlen(argv[1]);
	evbuffer_add_printf(want, "*%d\r\n", LIST_LEN);
	for (i = 0; i < LIST_LEN; i++) {
		argv[i + 2] = items + i * 16;
		lens[i + 2] = (size_t)snprintf(items + i * 16, 16, "item-%d",
		    i);
		evbuffer_add_printf(want, "$%zu\r\n%s\r\n", lens[i + 2],
		    argv[i + 2]);
	}
	snprintf(reply, sizeof(reply), ":%d\r\n", LIST_LEN);
	expect_argv(t, "RPUSH of 10000 items in one command", reply,
	    strlen(reply), 0, LIST_LEN + 2, argv, lens);
	argv[0] = "LRANGE";
	lens[0] = 6;
	argv[2] = "0";
	lens[2] = 1;
	argv[3] = "-1";
	lens[3] = 2;
	expect_argv(t, "LRANGE of 10000 items", evbuffer_pullup(want, -1),
	    evbuffer_get_length(want), 0, 4, argv, lens);
out:
	if (want != NULL)
		evbuffer_free(want);
	free(items);
	free(argv);
	free(lens);
}

static void
step_nested(struct selftest *t)
{
	expect_cmd(t, "EVAL returning a nested table with a nil",
	    "*4\r\n:1\r\n*2\r\n:2\r\n*2\r\n$5\r\nthree\r\n*0\r\n$-1\r\n"
	    "$1\r\nx\r\n",
	    "EVAL", "return {1, {2, {'three', {}}}, false, 'x'}", "0", NULL);
	expect_cmd(t, "MULTI", "+OK\r\n", "MULTI", NULL);
	expect_cmd(t, "SET queued", "+QUEUED\r\n", "SET", K("tx"), "v", NULL);
	expect_cmd(t, "LRANGE queued", "+QUEUED\r\n", "LRANGE", K("list"),
	    "0", "-1", NULL);
	expect_cmd(t, "INCR queued", "+QUEUED\r\n", "INCR", K("tx"), NULL);
	expect_cmd(t, "EXEC: an array holding an array and an error",
	    "*3\r\n+OK\r\n*3\r\n$1\r\na\r\n$2\r\nbb\r\n$0\r\n\r\n"
	    "-ERR value is not an integer or out of range\r\n",
	    "EXEC", NULL);
	expect_cmd(t, "WATCH", "+OK\r\n", "WATCH", K("watched"), NULL);
	expect_cmd(t, "SET watched key", "+OK\r\n", "SET", K("watched"), "1",
	    NULL);
	expect_cmd(t, "MULTI after WATCH", "+OK\r\n", "MULTI", NULL);
	expect_cmd(t, "PING queued", "+QUEUED\r\n", "PING", NULL);
	expect_cmd(t, "EXEC aborted is a nil array", "*-1\r\n", "EXEC", NULL);
	big_list(t);
}

static void
step_errors(struct selftest *t)
{
	const char *unknown[] = { "NOSUCHCOMMAND", "x" };
	size_t unknown_lens[] = { 13, 1 };
	static const char unknown_want[] = "-ERR unknown command";

	expect_cmd(t, "SET a string", "+OK\r\n", "SET", K("s"), "text", NULL);
	expect_cmd(t, "INCR on a string is an error reply",
	    "-ERR value is not an integer or out of range\r\n", "INCR",
	    K("s"), NULL);
	expect_cmd(t, "EVAL error_reply", "-MYERR custom\r\n", "EVAL",
	    "return redis.error_reply('MYERR custom')", "0", NULL);
	expect_argv(t, "unknown command is an error reply", unknown_want,
	    sizeof(unknown_want) - 1, 1, 2, unknown, unknown_lens);
	expect_cmd(t, "the connection goes on after errors", "+PONG\r\n",
	    "PING", NULL);
}

static void
incr_reply(struct resp_client *rc, struct resp_value *reply, void *arg)
{
	struct selftest *t = arg;
	long long want = ++t->incr_next;
	struct timeval now, took;

	if (reply == NULL || reply->type != RESP_INTEGER ||
	    reply->integer != want)
		t->incr_bad++;
	if (want != PIPELINE)
		return;
	evutil_gettimeofday(&now, NULL);
	evutil_timersub(&now, &t->started, &took);
	check(t, t->incr_bad == 0,
	    "%d pipelined INCR replies, each in order (%ld.%03ld s)",
	    PIPELINE, (long)took.tv_sec, (long)(took.tv_usec / 1000));
	if (t->incr_bad != 0)
		printf("     %lld replies missing or wrong\n", t->incr_bad);
}

static void
step_pipeline(struct selftest *t)
{
	const char *argv[] = { "INCR", K("pipelined") };
	size_t lens[] = { 4, strlen(K("pipelined")) };
	char final[32];
	int i;

	expect_cmd(t, "DEL the pipeline counter", ":0\r\n", "DEL",
	    K("pipelined"), NULL);
	evutil_gettimeofday(&t->started, NULL);
	/* All pushed in one go, before a single reply is read. */
	for (i = 0; i < PIPELINE; i++)
		if (resp_command(t->rc, incr_reply, t, 2, argv, lens) < 0)
			return;
	snprintf(final, sizeof(final), "$%d\r\n%d\r\n",
	    snprintf(NULL, 0, "%d", PIPELINE), PIPELINE);
	expect_cmd(t, "GET the pipeline counter", final, "GET",
	    K("pipelined"), NULL);
}

static void
step_cleanup(struct selftest *t)
{
	expect_argv(t, "DEL every key of the test", ":11\r\n", 5, 0,
	    (int)(sizeof(test_keys) / sizeof(test_keys[0])), test_keys,
	    test_key_lens);
	expect_cmd(t, "QUIT", "+OK\r\n", "QUIT", NULL);
}

static void (*const steps[])(struct selftest *) = {
	step_basic, step_binary, step_nested, step_errors, step_pipeline,
	step_cleanup,
};
#define NSTEPS (int)(sizeof(steps) / sizeof(steps[0]))

static void
next_step(struct resp_client *rc, void *arg)
{
	struct selftest *t = arg;

	if (t->step < NSTEPS)
		steps[t->step++](t);
	else
		t->finished = 1; /* QUIT answered: the server closes */
}

static void
on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct selftest *t = arg;

	check(t, 0, "finished within %d seconds", TIMEOUT_SECONDS);
	async_chat_close(t->rc->chat);
}

static int
run_selftest(struct resp_client *rc)
{
	struct selftest t = { .rc = rc };
	struct timeval limit = { TIMEOUT_SECONDS, 0 };
	struct event *timer = evtimer_new(rc->base, on_timeout, &t);

	if (timer == NULL)
		return 1;
	evtimer_add(timer, &limit);
	rc->on_idle = next_step;
	rc->idle_arg = &t;
	/* A clean slate: keys of an interrupted run are dropped first; the
	 * steps then run as each one's replies are in. */
	expect_argv(&t, "DEL the keys of an earlier run", ":", 1, 1,
	    (int)(sizeof(test_keys) / sizeof(test_keys[0])), test_keys,
	    test_key_lens);
	if (rc->chat != NULL) /* a failed lookup closes it at once */
		event_base_dispatch(rc->base);
	rc_release(rc);
	check(&t, t.finished && !rc->failed,
	    "the server closed the connection after QUIT, nothing pending");
	event_free(timer);
	printf("%d passed, %d failed\n", t.passed, t.failed);
	return t.failed != 0;
}

/*
 * Commands from the command line.
 */

struct cli {
	int errors;
};

static void
print_reply(struct resp_client *rc, struct resp_value *reply, void *arg)
{
	struct cli *c = arg;

	if (reply == NULL)
		return;
	value_print(stdout, reply, 0);
	if (reply->type == RESP_ERROR)
		c->errors++;
}

static void
all_answered(struct resp_client *rc, void *arg)
{
	async_chat_close(rc->chat);
}

static int
run_commands(struct resp_client *rc, int argc, char **argv)
{
	struct cli c = { 0 };
	int i, start = 0;
	size_t *lens = calloc((size_t)argc + 1, sizeof(*lens));

	if (lens == NULL)
		return 1;
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	for (i = 0; i <= argc; i++) {
		if (i < argc && strcmp(argv[i], ";") != 0)
			continue;
		if (i > start && resp_command(rc, print_reply, &c, i - start,
				     (const char *const *)argv + start,
				     lens + start) < 0)
			break;
		start = i + 1;
	}
	free(lens);
	rc->on_idle = all_answered;
	if (rc->chat != NULL && rc->count > 0)
		event_base_dispatch(rc->base);
	rc_release(rc);
	return rc->failed || c.errors ? 1 : 0;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct resp_client *rc = arg;

	fprintf(stderr, "resp_client: interrupted\n");
	rc->failed = 1;
	event_base_loopbreak(rc->base);
}

static void
usage(const char *prog)
{
	fprintf(stderr,
	    "usage: %s [-h host] -p port --selftest\n"
	    "       %s [-h host] -p port command [arg...] [';' command...]\n",
	    prog, prog);
}

int
main(int argc, char **argv)
{
	struct resp_client rc;
	struct event_base *base;
	struct event *sigint, *sigterm;
	const char *host = "127.0.0.1";
	long port = 0;
	int i, selftest = 0, status;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--selftest") == 0)
			selftest = 1;
		else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc)
			port = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-h") == 0 && i + 1 < argc)
			host = argv[++i];
		else
			port = -1; /* no Redis command starts with '-' */
	}
	if (port <= 0 || port > 65535 || selftest == (i < argc)) {
		usage(argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if ((base = event_base_new()) == NULL)
		return 1;
	sigint = evsignal_new(base, SIGINT, on_signal, &rc);
	sigterm = evsignal_new(base, SIGTERM, on_signal, &rc);
	evsignal_add(sigint, NULL);
	evsignal_add(sigterm, NULL);
	if (rc_open(&rc, base, host, (int)port) < 0) {
		fprintf(stderr, "resp_client: %s\n", strerror(errno));
		rc_release(&rc);
		status = 1;
	} else if (selftest) {
		status = run_selftest(&rc);
	} else {
		status = run_commands(&rc, argc - i, argv + i);
	}
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	return status;
}
