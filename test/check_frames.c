/*
 * check_frames.c - what 0.2 adds to a channel's framing and lifecycle:
 * length-field frames and their encoder, frame policies, what the bound
 * counts, resuming after a bound, a length error or a read timeout, API
 * calls inside reference cleanups and producer free, lengths that cannot
 * be queued, and closing with deferred work pending.  Each bug these fix
 * has the test that shows it.
 *
 * A channel runs over a socket pair; the peer is the other socket, read
 * and written directly.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "testutil.h"

#define WAIT_MS 10000 /* bound on every wait; tests normally take far less */

#define EXPECT_ERRNO(call, err)                                                \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_int_eq((call), -1);                                  \
		ck_assert_int_eq(errno, (err));                                \
	} while (0)

struct t {
	struct event_base *base;
	struct async_chat *chat; /* NULL once handle_free has run */
	evutil_socket_t peer;
	struct tu_frames f;
	struct evbuffer *got;    /* what the peer received */
	int peer_eof;
	int frees;
	int closes;
	void (*on_error)(struct t *t, int err);
	void (*on_collect)(struct t *t);
	void (*on_found)(struct t *t);
	void *user;
};

static void
t_collect(struct async_chat *chat, const char *data, size_t len, void *arg)
{
	struct t *t = arg;

	(void)chat;
	tu_frames_collect(&t->f, data, len);
	if (t->on_collect != NULL)
		t->on_collect(t);
}

static void
t_found(struct async_chat *chat, void *arg)
{
	struct t *t = arg;
	struct evbuffer *in;

	if (t->on_found != NULL) {
		t->on_found(t);
		return;
	}
	in = async_chat_incoming(chat);
	if (in != NULL && evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_length(in);

		tu_frames_collect(&t->f, evbuffer_pullup(in, -1), n);
		evbuffer_drain(in, n);
	}
	tu_frames_found(&t->f);
}

static void
t_close(struct async_chat *chat, void *arg)
{
	struct t *t = arg;

	t->closes++;
	async_chat_close_when_done(chat);
}

static void
t_error(struct async_chat *chat, int err, void *arg)
{
	struct t *t = arg;

	(void)chat;
	t->f.errors++;
	t->f.last_error = err;
	if (t->on_error != NULL)
		t->on_error(t, err);
}

static void
t_free(struct async_chat *chat, void *arg)
{
	struct t *t = arg;

	(void)chat;
	t->frees++;
	t->chat = NULL;
}

static const struct async_chat_handlers collect_handlers = {
	.collect_incoming_data = t_collect,
	.found_terminator = t_found,
	.handle_close = t_close,
	.handle_error = t_error,
	.handle_free = t_free,
};

static const struct async_chat_handlers message_handlers = {
	.found_terminator = t_found,
	.handle_close = t_close,
	.handle_error = t_error,
	.handle_free = t_free,
};

static void
t_open(struct t *t, int message_mode)
{
	evutil_socket_t sv[2];

	memset(t, 0, sizeof(*t));
	t->base = event_base_new();
	ck_assert_ptr_nonnull(t->base);
	tu_socketpair(sv);
	t->peer = sv[1];
	tu_frames_init(&t->f);
	t->got = evbuffer_new();
	ck_assert_ptr_nonnull(t->got);
	t->chat = async_chat_new(t->base, sv[0],
	    message_mode ? &message_handlers : &collect_handlers, t);
	ck_assert_ptr_nonnull(t->chat);
}

static void
t_done(struct t *t)
{
	if (t->chat != NULL)
		async_chat_close(t->chat);
	ck_assert_int_eq(t->frees, 1);
	if (t->peer >= 0)
		evutil_closesocket(t->peer);
	evbuffer_free(t->got);
	tu_frames_clear(&t->f);
	if (t->base != NULL)
		event_base_free(t->base);
}

static void
peer_send(struct t *t, const void *p, size_t n)
{
	ck_assert_int_eq(send(t->peer, p, n, 0), (ssize_t)n);
}

/* Read what the peer has been sent so far. */
static void
peer_read(struct t *t)
{
	char buf[4096];
	ssize_t n;

	while ((n = recv(t->peer, buf, sizeof(buf), 0)) > 0)
		evbuffer_add(t->got, buf, (size_t)n);
	if (n == 0)
		t->peer_eof = 1;
}

static int
frames_at_least(void *arg)
{
	struct t *t = arg;

	return t->f.n >= (size_t)(uintptr_t)t->user;
}

static void
wait_frames(struct t *t, size_t n)
{
	t->user = (void *)(uintptr_t)n;
	ck_assert_msg(tu_run_until(t->base, frames_at_least, t, WAIT_MS) == 0,
	    "waited for %zu frames, have %zu", n, t->f.n);
}

static int
errors_at_least(void *arg)
{
	struct t *t = arg;

	return t->f.errors >= (int)(uintptr_t)t->user;
}

static void
wait_errors(struct t *t, int n)
{
	t->user = (void *)(uintptr_t)n;
	ck_assert_msg(tu_run_until(t->base, errors_at_least, t, WAIT_MS) == 0,
	    "waited for %d errors, have %d", n, t->f.errors);
}

static int
peer_has_eof(void *arg)
{
	struct t *t = arg;

	peer_read(t);
	return t->peer_eof;
}

static int
freed(void *arg)
{
	struct t *t = arg;

	return t->frees > 0;
}

static int
peer_has_len(void *arg)
{
	struct t *t = arg;

	peer_read(t);
	return evbuffer_get_length(t->got) >= (size_t)(uintptr_t)t->user;
}

static void
wait_peer_has(struct t *t, size_t n)
{
	t->user = (void *)(uintptr_t)n;
	ck_assert_msg(tu_run_until(t->base, peer_has_len, t, WAIT_MS) == 0,
	    "peer waited for %zu bytes, has %zu", n,
	    evbuffer_get_length(t->got));
}

static int
got_is(struct t *t, const void *p, size_t n)
{
	return evbuffer_get_length(t->got) == n &&
	    memcmp(evbuffer_pullup(t->got, -1), p, n) == 0;
}

/* Let the loop turn a few times without waiting for anything. */
static void
settle(struct t *t)
{
	int i;

	for (i = 0; i < 20; i++)
		event_base_loop(t->base, EVLOOP_NONBLOCK);
}

/*
 * Length-field frames
 */

static const struct async_chat_length_field be32_body = {
	.width = 4, .strip = 4
};

static const char two_frames[] = "\0\0\0\5hello\0\0\0\0\0\0\0\3abc";
#define TWO_FRAMES_LEN (sizeof(two_frames) - 1)

START_TEST(test_length_collect_and_message)
{
	struct t t;
	size_t i;

	/* _i: 0 collect in one write, 1 collect a byte at a time,
	 * 2 and 3 the same in message mode. */
	t_open(&t, _i >= 2);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &be32_body),
	    0);
	if (_i % 2 == 0) {
		peer_send(&t, two_frames, TWO_FRAMES_LEN);
	} else {
		for (i = 0; i < TWO_FRAMES_LEN; i++) {
			peer_send(&t, two_frames + i, 1);
			settle(&t);
		}
	}
	wait_frames(&t, 3);
	ck_assert(tu_frame_is(&t.f, 0, "hello"));
	ck_assert(tu_frame_is(&t.f, 1, ""));
	ck_assert(tu_frame_is(&t.f, 2, "abc"));
	ck_assert_int_eq(t.f.errors, 0);
	t_done(&t);
}
END_TEST

/* A line says how the next frame is framed: "L\n" a varint frame, any
 * other line itself.  The terminator changes inside found_terminator,
 * between frames of the same read. */
static void
switch_found(struct t *t)
{
	static const struct async_chat_length_field varint = {
		.width = 0, .strip = 1
	};
	struct async_chat_terminator term;
	int line = (int)evbuffer_get_length(t->f.cur) == 1 &&
	    memcmp(evbuffer_pullup(t->f.cur, -1), "L", 1) == 0;

	tu_frames_found(&t->f);
	ck_assert_int_eq(async_chat_get_terminator(t->chat, &term), 0);
	if (term.kind == ASYNC_CHAT_TERM_LINE && line) {
		ck_assert_int_eq(async_chat_set_terminator_length(t->chat,
		                     &varint), 0);
	} else {
		ck_assert_int_eq(async_chat_set_terminator_line(t->chat), 0);
	}
}

START_TEST(test_length_switch_per_frame)
{
	static const char stream[] = "L\n\x03" "abcplain\nL\n\x00" "end\n";
	struct t t;

	t_open(&t, 0);
	t.on_found = switch_found;
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	peer_send(&t, stream, sizeof(stream) - 1);
	wait_frames(&t, 6);
	ck_assert(tu_frame_is(&t.f, 0, "L"));
	ck_assert(tu_frame_is(&t.f, 1, "abc"));
	ck_assert(tu_frame_is(&t.f, 2, "plain"));
	ck_assert(tu_frame_is(&t.f, 3, "L"));
	ck_assert(tu_frame_is(&t.f, 4, ""));
	ck_assert(tu_frame_is(&t.f, 5, "end"));
	t_done(&t);
}
END_TEST

/* get_terminator describes a length field: the spec, and the body bytes
 * still missing, already less the bytes of the collect call. */
static void
describe_collect(struct t *t)
{
	struct async_chat_terminator term;
	const struct async_chat_length_field *spec;

	ck_assert_int_eq(async_chat_get_terminator(t->chat, &term), 0);
	ck_assert_int_eq(term.kind, ASYNC_CHAT_TERM_LENGTH);
	ck_assert_uint_eq(term.len, sizeof(*spec));
	spec = term.bytes;
	ck_assert_uint_eq(spec->width, 4);
	ck_assert_uint_eq(spec->strip, 4);
	ck_assert_uint_eq(term.count, 5 - evbuffer_get_length(t->f.cur));
}

START_TEST(test_length_get_terminator)
{
	struct async_chat_length_field spec = be32_body;
	struct async_chat_terminator term;
	struct t t;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &spec), 0);
	spec.width = 2; /* copied: the channel's stays */
	ck_assert_int_eq(async_chat_get_terminator(t.chat, &term), 0);
	ck_assert_int_eq(term.kind, ASYNC_CHAT_TERM_LENGTH);
	ck_assert_uint_eq(term.count, 0); /* no header yet */
	ck_assert_uint_eq(((const struct async_chat_length_field *)term.bytes)
	                      ->width,
	    4);
	t.on_collect = describe_collect;
	peer_send(&t, "\0\0\0\5he", 6);
	settle(&t);
	peer_send(&t, "llo", 3);
	wait_frames(&t, 1);
	ck_assert(tu_frame_is(&t.f, 0, "hello"));
	ck_assert_int_ge(t.f.collects, 2);
	t_done(&t);
}
END_TEST

START_TEST(test_length_bad_specs)
{
	struct async_chat_length_field spec = be32_body;
	struct async_chat_terminator term;
	unsigned char hdr[16];
	struct t t;

	t_open(&t, 0);
	EXPECT_ERRNO(async_chat_set_terminator_length(NULL, &spec), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_length(t.chat, NULL), EINVAL);
	spec.width = 5;
	EXPECT_ERRNO(async_chat_set_terminator_length(t.chat, &spec), EINVAL);
	spec.width = 0;
	spec.little_endian = 1;
	EXPECT_ERRNO(async_chat_set_terminator_length(t.chat, &spec), EINVAL);
	spec = be32_body;
	spec.reserved[3] = 1;
	EXPECT_ERRNO(async_chat_set_terminator_length(t.chat, &spec), EINVAL);
	spec = be32_body;
	spec.offset = ASYNC_CHAT_TERMINATOR_MAX + 1;
	EXPECT_ERRNO(async_chat_set_terminator_length(t.chat, &spec), EINVAL);
	/* A failed set leaves the terminator as it was. */
	ck_assert_int_eq(async_chat_get_terminator(t.chat, &term), 0);
	ck_assert_int_eq(term.kind, ASYNC_CHAT_TERM_NONE);

	spec = be32_body;
	EXPECT_ERRNO(async_chat_length_field_encode(NULL, 1, hdr, 16), EINVAL);
	EXPECT_ERRNO(async_chat_length_field_encode(&spec, 1, NULL, 16),
	    EINVAL);
	EXPECT_ERRNO(async_chat_length_field_encode(&spec, 1, hdr, 3), ENOBUFS);
	spec.width = 1;
	EXPECT_ERRNO(async_chat_length_field_encode(&spec, 256, hdr, 16),
	    ERANGE);
	spec.adjust = 10; /* the field would have to hold 5 - 10 */
	EXPECT_ERRNO(async_chat_length_field_encode(&spec, 5, hdr, 16), ERANGE);
	t_done(&t);
}
END_TEST

START_TEST(test_length_encoder)
{
	struct async_chat_length_field spec = {
		.offset = 2, .width = 2, .little_endian = 1,
		.adjust = -4, /* the value counts the header's field too */
	};
	unsigned char hdr[16];

	ck_assert_int_eq(async_chat_length_field_encode(&spec, 0x102, hdr, 16),
	    4);
	ck_assert_int_eq(memcmp(hdr, "\0\0\x06\x01", 4), 0);
	spec = (struct async_chat_length_field){.width = 0};
	ck_assert_int_eq(async_chat_length_field_encode(&spec, 300, hdr, 16), 2);
	ck_assert_int_eq(memcmp(hdr, "\xac\x02", 2), 0);
	ck_assert_int_eq(
	    async_chat_length_field_encode(&spec, UINT64_MAX - 10, hdr, 16), 10);
	/* A frame longer than UINT64_MAX could not be counted. */
	EXPECT_ERRNO(async_chat_length_field_encode(&spec, UINT64_MAX, hdr, 16),
	    ERANGE);
	spec = (struct async_chat_length_field){.width = 3};
	ck_assert_int_eq(async_chat_length_field_encode(&spec, 0x10203, hdr, 3),
	    3);
	ck_assert_int_eq(memcmp(hdr, "\x01\x02\x03", 3), 0);
}
END_TEST

/* A framed push arrives as one frame at a channel with the same spec. */
START_TEST(test_push_length_prefixed)
{
	struct t t;
	struct async_chat_length_field spec = be32_body;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_push_length_prefixed(t.chat, &spec,
	                     "hello", 5), 0);
	ck_assert_int_eq(async_chat_push_length_prefixed(t.chat, &spec, NULL,
	                     0), 0);
	/* spec NULL: the channel's own terminator, which must be a length
	 * field. */
	EXPECT_ERRNO(async_chat_push_length_prefixed(t.chat, NULL, "x", 1),
	    EINVAL);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &spec), 0);
	ck_assert_int_eq(async_chat_push_length_prefixed(t.chat, NULL, "abc",
	                     3), 0);
	EXPECT_ERRNO(async_chat_push_length_prefixed(t.chat, &spec, NULL, 1),
	    EINVAL);
	spec.reserved[0] = 1;
	EXPECT_ERRNO(async_chat_push_length_prefixed(t.chat, &spec, "x", 1),
	    EINVAL);
	spec = be32_body;
	spec.width = 1;
	{
		static char big[300];

		EXPECT_ERRNO(async_chat_push_length_prefixed(t.chat, &spec,
		                 big, sizeof(big)), ERANGE);
	}
	/* Nothing of a failed push was queued. */
	wait_peer_has(&t, TWO_FRAMES_LEN);
	ck_assert(got_is(&t, two_frames, TWO_FRAMES_LEN));
	/* And the same bytes sent back frame as three frames. */
	peer_send(&t, two_frames, TWO_FRAMES_LEN);
	wait_frames(&t, 3);
	ck_assert(tu_frame_is(&t.f, 0, "hello"));
	ck_assert(tu_frame_is(&t.f, 2, "abc"));
	t_done(&t);
}
END_TEST

static void
error_resume_fails(struct t *t, int err)
{
	ck_assert_int_eq(async_chat_reading_paused(t->chat), 1);
	EXPECT_ERRNO(async_chat_resume_reading(t->chat),
	    err == ASYNC_CHAT_ERR_LENGTH ? EPROTO : EMSGSIZE);
}

/* An invalid header is reported once, consumes nothing past itself, and
 * frames again under another terminator. */
START_TEST(test_length_error)
{
	struct async_chat_length_field spec = {.width = 1, .adjust = -5};
	struct t t;

	t_open(&t, _i);
	t.on_error = error_resume_fails;
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &spec), 0);
	peer_send(&t, "\x02zz\n", 4);
	wait_errors(&t, 1);
	settle(&t);
	ck_assert_int_eq(t.f.errors, 1);
	ck_assert_int_eq(t.f.last_error, ASYNC_CHAT_ERR_LENGTH);
	ck_assert_uint_eq(t.f.n, 0);
	ck_assert_int_eq(t.f.collects, 0);
	EXPECT_ERRNO(async_chat_resume_reading(t.chat), EPROTO);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
	wait_frames(&t, 1);
	ck_assert(tu_frame_is(&t.f, 0, "\x02zz"));
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 0);
	t_done(&t);
}
END_TEST

/*
 * The bound
 */

/* handle_error(FRAME_TOO_LONG) that resumes without raising the bound
 * is told EMSGSIZE once; it does not re-enter itself. */
START_TEST(test_bound_resume_needs_room)
{
	struct t t;

	t_open(&t, _i);
	t.on_error = error_resume_fails;
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 4), 0);
	peer_send(&t, "abcdefgh\n", 9);
	wait_errors(&t, 1);
	settle(&t);
	ck_assert_int_eq(t.f.errors, 1);
	ck_assert_int_eq(t.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	if (_i == 1) {
		/* Taking the kept bytes does not reset what the bound
		 * counts. */
		struct evbuffer *in = async_chat_incoming(t.chat);

		ck_assert_uint_eq(evbuffer_get_length(in), 4);
		evbuffer_drain(in, 4);
		EXPECT_ERRNO(async_chat_resume_reading(t.chat), EMSGSIZE);
		ck_assert_int_eq(async_chat_set_max_frame(t.chat, 5), 0);
		ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
		wait_errors(&t, 2);
		ck_assert_int_eq(async_chat_set_max_frame(t.chat, 100), 0);
		ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
		wait_frames(&t, 1);
		ck_assert(tu_frame_is(&t.f, 0, "efgh"));
	} else {
		ck_assert_int_eq(async_chat_set_max_frame(t.chat, 0), 0);
		ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
		wait_frames(&t, 1);
		ck_assert(tu_frame_is(&t.f, 0, "abcdefgh"));
	}
	t_done(&t);
}
END_TEST

/* A length-field frame is checked whole once its header is complete. */
START_TEST(test_bound_length_whole)
{
	struct t t;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &be32_body),
	    0);
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 4), 0);
	peer_send(&t, "\0\0\0\5hello", 9);
	wait_errors(&t, 1);
	ck_assert_int_eq(t.f.collects, 0); /* not one byte of the body */
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 5), 0);
	ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
	wait_frames(&t, 1);
	ck_assert(tu_frame_is(&t.f, 0, "hello"));
	t_done(&t);
}
END_TEST

/*
 * Frame policies
 */

static void
forget_partial(struct t *t, int err)
{
	ck_assert_int_eq(err, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	/* Collect mode: the bytes collected so far were the frame's. */
	evbuffer_drain(t->f.cur, evbuffer_get_length(t->f.cur));
	ck_assert_int_eq(async_chat_push(t->chat, "552\r\n", 5), 0);
}

START_TEST(test_policy_skip)
{
	static const char lines[] = "abc\n0123456789abcdef\nxyz\n";
	struct t t;

	t_open(&t, _i);
	t.on_error = forget_partial;
	ck_assert_int_eq(async_chat_set_frame_policy(t.chat,
	                     ASYNC_CHAT_FRAME_SKIP), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 5), 0);
	peer_send(&t, lines, sizeof(lines) - 1);
	wait_frames(&t, 2);
	ck_assert(tu_frame_is(&t.f, 0, "abc"));
	ck_assert(tu_frame_is(&t.f, 1, "xyz"));
	ck_assert_int_eq(t.f.errors, 1);
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 0);
	wait_peer_has(&t, 5);
	ck_assert(got_is(&t, "552\r\n", 5));
	t_done(&t);
}
END_TEST

START_TEST(test_policy_skip_length)
{
	struct async_chat_length_field spec = {.width = 1, .strip = 1};
	struct t t;

	t_open(&t, _i);
	t.on_error = forget_partial;
	ck_assert_int_eq(async_chat_set_frame_policy(t.chat,
	                     ASYNC_CHAT_FRAME_SKIP), 0);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &spec), 0);
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 3), 0);
	peer_send(&t, "\x02" "ab" "\x05" "hello" "\x01" "z", 11);
	wait_frames(&t, 2);
	ck_assert(tu_frame_is(&t.f, 0, "ab"));
	ck_assert(tu_frame_is(&t.f, 1, "z"));
	ck_assert_int_eq(t.f.errors, 1);
	t_done(&t);
}
END_TEST

static void
answer_552(struct t *t, int err)
{
	ck_assert_int_eq(err, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert_int_eq(async_chat_push(t->chat, "552\r\n", 5), 0);
}

START_TEST(test_policy_close)
{
	struct t t;

	t_open(&t, _i);
	if (_i == 0)
		t.on_error = answer_552;
	ck_assert_int_eq(async_chat_set_frame_policy(t.chat,
	                     ASYNC_CHAT_FRAME_CLOSE), 0);
	EXPECT_ERRNO(async_chat_set_frame_policy(t.chat,
	                 (enum async_chat_frame_policy)3), EINVAL);
	EXPECT_ERRNO(async_chat_set_frame_policy(NULL, ASYNC_CHAT_FRAME_SKIP),
	    EINVAL);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_set_max_frame(t.chat, 3), 0);
	peer_send(&t, "ok\ntoo long\nnever\n", 18);
	ck_assert(tu_run_until(t.base, peer_has_eof, &t, WAIT_MS) == 0);
	ck_assert(tu_frame_is(&t.f, 0, "ok"));
	ck_assert_uint_eq(t.f.n, 1);
	ck_assert_int_eq(t.f.errors, 1);
	ck_assert_int_eq(t.frees, 1);
	if (_i == 0)
		ck_assert(got_is(&t, "552\r\n", 5));
	else
		ck_assert_uint_eq(evbuffer_get_length(t.got), 0);
	t_done(&t);
}
END_TEST

/*
 * A read timeout set on the bufferevent
 */

START_TEST(test_read_timeout_resumes)
{
	struct timeval tv = {0, 20000};
	struct t t;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(bufferevent_set_timeouts(
	                     async_chat_get_bufferevent(t.chat), &tv, NULL),
	    0);
	wait_errors(&t, 1);
	ck_assert_int_eq(t.f.last_error, ETIMEDOUT);
	ck_assert_int_eq(async_chat_connected(t.chat), 1);
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 1);
	ck_assert_int_eq(bufferevent_set_timeouts(
	                     async_chat_get_bufferevent(t.chat), NULL, NULL),
	    0);
	ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 0);
	peer_send(&t, "hi\n", 3);
	wait_frames(&t, 1);
	ck_assert(tu_frame_is(&t.f, 0, "hi"));
	t_done(&t);
}
END_TEST

/* Set after bytes have come, when the channel reads its socket itself,
 * a read timeout hands reading back to libevent at the next read, and
 * then fires; so does a rate limit, which libevent's reads honour. */
/* Line mode; two frames, the second read by the channel itself. */
static void
t_open_reading_itself(struct t *t)
{
	t_open(t, 0);
	ck_assert_int_eq(async_chat_set_terminator_line(t->chat), 0);
	peer_send(t, "a\n", 2);
	wait_frames(t, 1);
	peer_send(t, "b\n", 2);
	wait_frames(t, 2);
}

START_TEST(test_read_timeout_set_later)
{
	struct timeval tv = {0, 20000};
	struct t t;

	t_open_reading_itself(&t);
	ck_assert_int_eq(bufferevent_set_timeouts(
	                     async_chat_get_bufferevent(t.chat), &tv, NULL),
	    0);
	peer_send(&t, "c\n", 2);
	wait_frames(&t, 3);
	wait_errors(&t, 1);
	ck_assert_int_eq(t.f.last_error, ETIMEDOUT);
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 1);
	t_done(&t);
}
END_TEST

START_TEST(test_rate_limit_set_later)
{
	struct timeval tick = {0, 10000};
	struct ev_token_bucket_cfg *cfg;
	struct t t;

	t_open_reading_itself(&t);
	/* 4 bytes a tick: libevent's reads take them 4 at a time */
	cfg = ev_token_bucket_cfg_new(4, 4, 4096, 4096, &tick);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_int_eq(bufferevent_set_rate_limit(
	                     async_chat_get_bufferevent(t.chat), cfg), 0);
	peer_send(&t, "cccccccccc\n", 11);
	wait_frames(&t, 3);
	ck_assert(tu_frame_is(&t.f, 2, "cccccccccc"));
	ck_assert_uint_le(t.f.max_collect, 4);
	ck_assert_int_eq(bufferevent_set_rate_limit(
	                     async_chat_get_bufferevent(t.chat), NULL), 0);
	t_done(&t);
	ev_token_bucket_cfg_free(cfg);
}
END_TEST

/*
 * Lengths that cannot be queued
 */

START_TEST(test_push_lengths)
{
	static const char x[1] = "x";
	struct t t;

	t_open(&t, 0);
	EXPECT_ERRNO(async_chat_push_reference(t.chat, x, SIZE_MAX, NULL, NULL),
	    EMSGSIZE);
	EXPECT_ERRNO(async_chat_push(t.chat, x, (size_t)EV_SSIZE_MAX + 1),
	    EMSGSIZE);
	EXPECT_ERRNO(async_chat_push_length_prefixed(t.chat, &be32_body, x,
	                 SIZE_MAX - 4), EMSGSIZE);
	ck_assert_uint_eq(async_chat_output_pending(t.chat), 0);
	ck_assert_int_eq(async_chat_push(t.chat, "ok", 2), 0);
	wait_peer_has(&t, 2);
	ck_assert(got_is(&t, "ok", 2));
	t_done(&t);
}
END_TEST

/*
 * Closing with deferred work pending
 */

START_TEST(test_close_then_base_free)
{
	struct t t;
	evutil_socket_t fd;
	char c;

	t_open(&t, 0);
	fd = async_chat_get_fd(t.chat);
	ck_assert_int_ge(fd, 0);
	peer_send(&t, "abc", 3);
	settle(&t);
	/* Each of these schedules work for the next loop turn. */
	ck_assert_int_eq(async_chat_pause_reading(t.chat), 0);
	ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	async_chat_close(t.chat);
	ck_assert_int_eq(t.frees, 1);
	/* The socket is closed when close returns: the peer reads EOF. */
	ck_assert_int_eq(recv(t.peer, &c, 1, 0), 0);
	errno = 0;
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
	ck_assert_int_eq(errno, EBADF);
	/* No loop turn: t_done frees the base; a leak would show under
	 * valgrind and LeakSanitizer. */
	t_done(&t);
}
END_TEST

/*
 * API calls inside reference cleanups and producer free
 */

enum cleanup_op { CL_PUSH, CL_DISCARD, CL_CLOSE_WHEN_DONE, CL_CLOSE, CL_N };

struct cleanup_ctx {
	struct t *t;
	enum cleanup_op op;
	int runs;
};

static void
noop_cleanup(const void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	(*(int *)arg)++;
}

static int later_runs;

static void
api_cleanup(const void *data, size_t len, void *arg)
{
	struct cleanup_ctx *c = arg;
	struct async_chat *chat = c->t->chat;

	(void)data;
	(void)len;
	c->runs++;
	if (chat == NULL)
		return;
	switch (c->op) {
	case CL_PUSH:
		ck_assert_int_eq(async_chat_push(chat, "B", 1), 0);
		ck_assert_int_eq(async_chat_push_reference(chat, "C", 1,
		                     noop_cleanup, &later_runs), 0);
		break;
	case CL_DISCARD:
		ck_assert_int_eq(async_chat_discard_buffers(chat), 0);
		ck_assert_int_eq(async_chat_push(chat, "D", 1), 0);
		break;
	case CL_CLOSE_WHEN_DONE:
		ck_assert_int_eq(async_chat_push(chat, "E", 1), 0);
		ck_assert_int_eq(async_chat_close_when_done(chat), 0);
		break;
	default:
		async_chat_close(chat);
		break;
	}
}

START_TEST(test_reference_cleanup_calls)
{
	static const char *const want[CL_N] = {"ABC", "AD", "AE", "A"};
	struct cleanup_ctx c;
	struct t t;

	later_runs = 0;
	t_open(&t, 0);
	c.t = &t;
	c.op = (enum cleanup_op)_i;
	c.runs = 0;
	ck_assert_int_eq(async_chat_push_reference(t.chat, "A", 1, api_cleanup,
	                     &c), 0);
	wait_peer_has(&t, strlen(want[_i]));
	if (_i >= CL_CLOSE_WHEN_DONE)
		ck_assert(tu_run_until(t.base, peer_has_eof, &t, WAIT_MS) ==
		    0);
	else
		settle(&t);
	peer_read(&t);
	ck_assert_msg(got_is(&t, want[_i], strlen(want[_i])),
	    "cleanup op %d: the peer got %zu bytes", _i,
	    evbuffer_get_length(t.got));
	ck_assert_int_eq(c.runs, 1);
	if (_i == CL_PUSH)
		ck_assert_int_eq(later_runs, 1);
	t_done(&t);
	ck_assert_int_eq(c.runs, 1);
}
END_TEST

/* Over a bufferevent pair the chain moves to the partner, whose drain
 * frees it; the cleanup still runs once, from the channel's loop. */
START_TEST(test_reference_cleanup_pair)
{
	struct bufferevent *pair[2];
	struct event_base *base = event_base_new();
	struct cleanup_ctx c;
	struct t t;
	struct evbuffer *in;

	memset(&t, 0, sizeof(t));
	tu_frames_init(&t.f);
	t.base = base;
	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	t.chat = async_chat_new_bufferevent(pair[0], &collect_handlers, &t);
	ck_assert_ptr_nonnull(t.chat);
	ck_assert_int_eq(bufferevent_enable(pair[1], EV_READ), 0);
	c.t = &t;
	c.op = CL_PUSH;
	c.runs = 0;
	later_runs = 0;
	ck_assert_int_eq(async_chat_push_reference(t.chat, "A", 1, api_cleanup,
	                     &c), 0);
	in = bufferevent_get_input(pair[1]);
	ck_assert_uint_eq(evbuffer_get_length(in), 1);
	evbuffer_drain(in, 1); /* frees the chain: the cleanup is deferred */
	ck_assert_int_eq(c.runs, 0);
	event_base_loop(base, EVLOOP_NONBLOCK);
	ck_assert_int_eq(c.runs, 1);
	ck_assert_uint_eq(evbuffer_get_length(in), 2);
	{
		char bc[2];

		/* copyout, not pullup: that would free the chain of "C" */
		ck_assert_int_eq(evbuffer_copyout(in, bc, 2), 2);
		ck_assert_int_eq(memcmp(bc, "BC", 2), 0);
	}
	async_chat_close(t.chat);
	/* "C" is still in the partner: its cleanup runs when libevent
	 * frees that, after the channel is gone, at once. */
	ck_assert_int_eq(later_runs, 0);
	bufferevent_free(pair[1]);
	tu_frames_clear(&t.f);
	event_base_free(base);
	ck_assert_int_eq(later_runs, 1);
}
END_TEST

struct prod_ctx {
	struct t *t;
	int frees;
};

static int
empty_more(void *ctx, struct evbuffer *out, size_t hint)
{
	(void)ctx;
	(void)out;
	(void)hint;
	return 0;
}

static void
pushing_free(void *ctx)
{
	struct prod_ctx *p = ctx;

	p->frees++;
	if (p->t->chat == NULL)
		return;
	ck_assert_int_eq(async_chat_push(p->t->chat, "after", 5), 0);
	ck_assert_int_eq(async_chat_discard_buffers(p->t->chat), 0);
	ck_assert_int_eq(async_chat_push(p->t->chat, "kept", 4), 0);
}

static const struct async_chat_producer_ops pushing_ops = {
	empty_more, pushing_free
};

START_TEST(test_producer_free_calls)
{
	struct prod_ctx p = {NULL, 0};
	struct t t;

	t_open(&t, 0);
	p.t = &t;
	if (_i == 0) {
		/* Exhausted: free runs from the loop. */
		ck_assert_int_eq(async_chat_push_with_producer(t.chat,
		                     &pushing_ops, &p), 0);
	} else {
		/* Discarded: free runs inside discard_buffers(). */
		ck_assert_int_eq(async_chat_push_with_producer(t.chat,
		                     &pushing_ops, &p), 0);
		ck_assert_int_eq(async_chat_push_with_producer(t.chat,
		                     &pushing_ops, &p), 0);
		ck_assert_int_eq(async_chat_discard_buffers(t.chat), 0);
		ck_assert_int_eq(p.frees, 2);
	}
	wait_peer_has(&t, 4);
	settle(&t);
	peer_read(&t);
	ck_assert(got_is(&t, "kept", 4));
	t_done(&t);
}
END_TEST

/*
 * What the header settles
 */

START_TEST(test_settled_cases)
{
	static const void *const dup[] = {"x", "x"};
	static const size_t dup_len[] = {1, 1};
	struct t t;

	t_open(&t, 0);
	/* A second close_when_done is harmless; a push after it, even an
	 * empty one, fails. */
	ck_assert_int_eq(async_chat_shutdown_when_done(t.chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(t.chat), 0);
	ck_assert_int_eq(async_chat_close_when_done(t.chat), 0);
	EXPECT_ERRNO(async_chat_push(t.chat, "", 0), EPIPE);
	ck_assert_int_eq(async_chat_shutdown_when_done(t.chat), 0);
	ck_assert(tu_run_until(t.base, peer_has_eof, &t, WAIT_MS) == 0);
	ck_assert(tu_run_until(t.base, freed, &t, WAIT_MS) == 0);
	t_done(&t);

	/* Duplicate alternatives: the first of equals matches. */
	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_terminators(t.chat, dup, dup_len, 2),
	    0);
	peer_send(&t, "axb", 3);
	wait_frames(&t, 1);
	ck_assert(tu_frame_is(&t.f, 0, "a"));
	ck_assert_int_eq(async_chat_matched_terminator(t.chat), 0);
	t_done(&t);
}
END_TEST

/* Line mode after a frame that took the CR: the LF alone ends an empty
 * frame, matched as a bare LF. */
static void
count_then_line(struct t *t)
{
	tu_frames_found(&t->f);
	if (t->f.n == 1)
		ck_assert_int_eq(async_chat_set_terminator_line(t->chat), 0);
	if (t->f.n == 2)
		ck_assert_int_eq(async_chat_matched_terminator(t->chat), 1);
}

START_TEST(test_line_after_cr_taken)
{
	struct t t;

	t_open(&t, 0);
	t.on_found = count_then_line;
	ck_assert_int_eq(async_chat_set_terminator_count(t.chat, 3), 0);
	peer_send(&t, "ab\r\nnext\n", 9);
	wait_frames(&t, 3);
	ck_assert(tu_frame_is(&t.f, 0, "ab\r"));
	ck_assert(tu_frame_is(&t.f, 1, ""));
	ck_assert(tu_frame_is(&t.f, 2, "next"));
	t_done(&t);
}
END_TEST

/* A count set inside collect when that call completes the old count:
 * the old frame still ends, then the new count applies. */
static void
recount(struct t *t)
{
	if (t->f.n == 0 && evbuffer_get_length(t->f.cur) == 4)
		ck_assert_int_eq(async_chat_set_terminator_count(t->chat, 2),
		    0);
}

START_TEST(test_count_set_in_last_collect)
{
	struct t t;

	t_open(&t, 0);
	t.on_collect = recount;
	ck_assert_int_eq(async_chat_set_terminator_count(t.chat, 4), 0);
	peer_send(&t, "abcdef", 6);
	wait_frames(&t, 2);
	ck_assert(tu_frame_is(&t.f, 0, "abcd"));
	ck_assert(tu_frame_is(&t.f, 1, "ef"));
	t_done(&t);
}
END_TEST

/*
 * Timeouts, high water, deferred producers, shutdown completion, printf,
 * skip_frame, a varint stripped whole
 */

static const struct timeval ms30 = {0, 30000};

START_TEST(test_idle_timeout)
{
	struct t t;

	t_open(&t, 0);
	EXPECT_ERRNO(async_chat_set_idle_timeout(NULL, &ms30), EINVAL);
	{
		struct timeval bad = {0, -1};

		EXPECT_ERRNO(async_chat_set_idle_timeout(t.chat, &bad), EINVAL);
	}
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_set_idle_timeout(t.chat, &ms30), 0);
	wait_errors(&t, 1);
	ck_assert_int_eq(t.f.last_error, ASYNC_CHAT_ERR_IDLE_TIMEOUT);
	ck_assert_str_eq(async_chat_strerror(ASYNC_CHAT_ERR_IDLE_TIMEOUT),
	    "idle timeout");
	/* The channel goes on, and the timeout is armed again. */
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 0);
	peer_send(&t, "hi\n", 3);
	wait_frames(&t, 1);
	wait_errors(&t, 2);
	ck_assert_int_eq(async_chat_set_idle_timeout(t.chat, NULL), 0);
	t_done(&t);
}
END_TEST

/* A peer sending one byte at a time keeps a read timeout happy; the frame
 * deadline still cuts it. */
START_TEST(test_frame_deadline)
{
	struct timeval deadline = {0, 200000};
	struct t t;
	int i;

	t_open(&t, _i);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	ck_assert_int_eq(async_chat_set_frame_timeout(t.chat, &deadline), 0);
	peer_send(&t, "quick\n", 6);
	wait_frames(&t, 1);
	/* A byte every 20 ms, bounded: the deadline comes first. */
	for (i = 0; i < 200 && t.f.errors == 0; i++) {
		peer_send(&t, "x", 1);
		tu_run_until(t.base, NULL, NULL, 20);
	}
	ck_assert_int_eq(t.f.errors, 1);
	ck_assert_int_eq(t.f.last_error, ASYNC_CHAT_ERR_FRAME_TIMEOUT);
	ck_assert_int_eq(async_chat_reading_paused(t.chat), 1);
	ck_assert_uint_eq(t.f.n, 1);
	/* Resume: the deadline starts again; the frame can still end. */
	ck_assert_int_eq(async_chat_resume_reading(t.chat), 0);
	peer_send(&t, "\n", 1);
	wait_frames(&t, 2);
	ck_assert_uint_ge(evbuffer_get_length(t.f.cur), 0);
	t_done(&t);
}
END_TEST

START_TEST(test_write_timeout)
{
	static char block[65536];
	struct t t;
	int i;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_write_timeout(t.chat, &ms30), 0);
	/* The peer never reads: the socket buffer fills, output stalls. */
	for (i = 0; i < 64; i++)
		ck_assert_int_eq(async_chat_push(t.chat, block, sizeof(block)),
		    0);
	wait_errors(&t, 1);
	ck_assert_int_eq(t.f.last_error, ASYNC_CHAT_ERR_WRITE_TIMEOUT);
	ck_assert_uint_gt(async_chat_output_pending(t.chat), 0);
	t_done(&t);
}
END_TEST

struct hw {
	int ups, downs;
	struct t *t;
};

static void
high_water(struct async_chat *chat, int above, void *arg)
{
	struct t *t = arg;
	struct hw *h = t->user;

	(void)chat;
	if (above)
		h->ups++;
	else
		h->downs++;
}

static int
hw_down(void *arg)
{
	struct t *t = arg;
	struct hw *h = t->user;

	peer_read(t);
	return h->downs > 0;
}

START_TEST(test_high_water)
{
	static char block[4096];
	struct hw h = {0, 0, NULL};
	struct t t;
	int i;

	t_open(&t, 0);
	EXPECT_ERRNO(async_chat_set_high_water(t.chat, 10, 5, high_water),
	    EINVAL);
	EXPECT_ERRNO(async_chat_set_high_water(t.chat, 1, 5, NULL), EINVAL);
	ck_assert_int_eq(async_chat_set_high_water(t.chat, 8192, 65536,
	                     high_water), 0);
	t.user = &h;
	for (i = 0; i < 32; i++)
		ck_assert_int_eq(async_chat_push(t.chat, block, sizeof(block)),
		    0);
	ck_assert_int_eq(h.ups, 1); /* inside the push that passed it */
	ck_assert_int_eq(h.downs, 0);
	ck_assert(tu_run_until(t.base, hw_down, &t, WAIT_MS) == 0);
	ck_assert_int_eq(h.ups, 1);
	ck_assert_int_eq(h.downs, 1);
	ck_assert_uint_le(async_chat_output_pending(t.chat), 8192);
	ck_assert_int_eq(async_chat_set_high_water(t.chat, 0, 0, NULL), 0);
	t_done(&t);
}
END_TEST

/* Files count from their push: the mark sees a pipeline of them. */
START_TEST(test_high_water_files)
{
	static char block[40000];
	struct hw h = {0, 0, NULL};
	char path[] = "/tmp/asynchat-hw-XXXXXX";
	struct t t;
	int fd, i;

	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(write(fd, block, sizeof(block)), (ssize_t)sizeof(block));
	t_open(&t, 0);
	t.user = &h;
	ck_assert_int_eq(async_chat_set_high_water(t.chat, 1000, 100000,
	                     high_water), 0);
	for (i = 0; i < 3; i++) {
		int dup_fd = dup(fd);

		ck_assert_int_ge(dup_fd, 0);
		ck_assert_int_eq(async_chat_push_file(t.chat, dup_fd, 0, -1), 0);
		/* Nothing has run yet: all of it is pending. */
		ck_assert_uint_eq(async_chat_output_pending(t.chat),
		    (size_t)(i + 1) * sizeof(block));
	}
	ck_assert_int_eq(h.ups, 1);
	ck_assert(tu_run_until(t.base, hw_down, &t, WAIT_MS) == 0);
	wait_peer_has(&t, 3 * sizeof(block));
	ck_assert_uint_eq(async_chat_output_pending(t.chat), 0);
	close(fd);
	t_done(&t);
}
END_TEST

struct slow {
	int calls, frees;
	int ready;
};

static int
slow_more(void *ctx, struct evbuffer *out, size_t hint)
{
	struct slow *p = ctx;

	(void)hint;
	p->calls++;
	if (!p->ready)
		return ASYNC_CHAT_PRODUCER_DEFERRED;
	if (p->ready == 1) {
		p->ready = 2;
		return evbuffer_add(out, "late", 4);
	}
	return 0;
}

static void
slow_free(void *ctx)
{
	((struct slow *)ctx)->frees++;
}

static const struct async_chat_producer_ops slow_ops = {slow_more, slow_free};

START_TEST(test_deferred_producer)
{
	struct slow p = {0, 0, 0};
	struct t t;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_push(t.chat, "early ", 6), 0);
	ck_assert_int_eq(async_chat_push_with_producer(t.chat, &slow_ops, &p),
	    0);
	ck_assert_int_eq(async_chat_push(t.chat, " after", 6), 0);
	wait_peer_has(&t, 6);
	settle(&t);
	/* Asked once, then left alone: no spinning. */
	ck_assert_int_eq(p.calls, 1);
	ck_assert(got_is(&t, "early ", 6));
	p.ready = 1;
	ck_assert_int_eq(async_chat_resume_producer(t.chat), 0);
	wait_peer_has(&t, 16);
	ck_assert(got_is(&t, "early late after", 16));
	ck_assert_int_eq(p.frees, 1);
	EXPECT_ERRNO(async_chat_resume_producer(NULL), EINVAL);
	ck_assert_int_eq(async_chat_resume_producer(t.chat), 0);
	t_done(&t);
}
END_TEST

static int shut_calls, shut_err;

static void
shut_done(struct async_chat *chat, int err, void *arg)
{
	(void)chat;
	(void)arg;
	shut_calls++;
	shut_err = err;
}

static int
shut_told(void *arg)
{
	(void)arg;
	return shut_calls > 0;
}

START_TEST(test_shutdown_handler)
{
	struct t t;

	shut_calls = 0;
	shut_err = -1;
	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_shutdown_handler(t.chat, shut_done), 0);
	ck_assert_int_eq(async_chat_push(t.chat, "bye", 3), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(t.chat), 0);
	ck_assert_int_eq(shut_calls, 0);
	ck_assert(tu_run_until(t.base, shut_told, NULL, WAIT_MS) == 0);
	ck_assert_int_eq(shut_calls, 1);
	ck_assert_int_eq(shut_err, 0);
	ck_assert(tu_run_until(t.base, peer_has_eof, &t, WAIT_MS) == 0);
	ck_assert(got_is(&t, "bye", 3));
	/* The channel still reads. */
	peer_send(&t, "more", 4);
	tu_run_until(t.base, NULL, NULL, 20);
	ck_assert_int_gt(t.f.collects, 0);
	ck_assert_int_eq(async_chat_set_shutdown_handler(t.chat, NULL), 0);
	t_done(&t);
}
END_TEST

START_TEST(test_push_printf)
{
	struct t t;

	t_open(&t, 0);
	ck_assert_int_eq(async_chat_push_printf(t.chat, "%d %s\r\n", 250, "OK"),
	    8);
	ck_assert_int_eq(async_chat_push_printf(t.chat, "%s", ""), 0);
	EXPECT_ERRNO(async_chat_push_printf(NULL, "x"), EINVAL);
	wait_peer_has(&t, 8);
	ck_assert(got_is(&t, "250 OK\r\n", 8));
	ck_assert_int_eq(async_chat_close_when_done(t.chat), 0);
	EXPECT_ERRNO(async_chat_push_printf(t.chat, "late"), EPIPE);
	ck_assert(tu_run_until(t.base, freed, &t, WAIT_MS) == 0);
	t_done(&t);
}
END_TEST

/* Message mode drops a body it does not want without buffering it. */
static void
skip_bodies(struct t *t)
{
	struct evbuffer *in = async_chat_incoming(t->chat);
	struct async_chat_terminator term;

	ck_assert_int_eq(async_chat_get_terminator(t->chat, &term), 0);
	if (term.kind == ASYNC_CHAT_TERM_LINE) {
		/* "SKIP n" or "KEEP n": a body of n bytes follows. */
		char line[32] = {0};
		size_t n = evbuffer_get_length(in);

		ck_assert_uint_lt(n, sizeof(line));
		evbuffer_remove(in, line, n);
		ck_assert_int_eq(async_chat_set_terminator_count(t->chat,
		                     (uint64_t)atoi(line + 5)), 0);
		if (memcmp(line, "SKIP", 4) == 0)
			ck_assert_int_eq(async_chat_skip_frame(t->chat), 0);
		return;
	}
	/* A skipped body ends here too, with nothing of it kept. */
	if (evbuffer_get_length(in) > 0)
		tu_frames_collect(&t->f, evbuffer_pullup(in, -1),
		    evbuffer_get_length(in));
	evbuffer_drain(in, evbuffer_get_length(in));
	tu_frames_found(&t->f);
	ck_assert_int_eq(async_chat_set_terminator_line(t->chat), 0);
}

START_TEST(test_skip_frame)
{
	static const char stream[] = "KEEP 3\nabcSKIP 5\nhelloKEEP 2\nxy";
	struct t t;

	t_open(&t, 1);
	t.on_found = skip_bodies;
	EXPECT_ERRNO(async_chat_skip_frame(NULL), EINVAL);
	ck_assert_int_eq(async_chat_set_terminator_line(t.chat), 0);
	peer_send(&t, stream, sizeof(stream) - 1);
	wait_frames(&t, 3);
	ck_assert(tu_frame_is(&t.f, 0, "abc"));
	ck_assert(tu_frame_is(&t.f, 1, ""));
	ck_assert(tu_frame_is(&t.f, 2, "xy"));
	t_done(&t);
}
END_TEST

START_TEST(test_varint_strip_header)
{
	struct async_chat_length_field spec = {
		.width = 0, .strip = ASYNC_CHAT_STRIP_HEADER
	};
	static char body[300];
	unsigned char hdr[10];
	struct t t;
	ev_ssize_t n;

	memset(body, 'v', sizeof(body));
	t_open(&t, 0);
	ck_assert_int_eq(async_chat_set_terminator_length(t.chat, &spec), 0);
	n = async_chat_length_field_encode(&spec, sizeof(body), hdr,
	    sizeof(hdr));
	ck_assert_int_eq(n, 2);
	peer_send(&t, hdr, (size_t)n);
	peer_send(&t, body, sizeof(body));
	peer_send(&t, "\x01z", 2);
	wait_frames(&t, 2);
	ck_assert(tu_frame_eq(&t.f, 0, body, sizeof(body)));
	ck_assert(tu_frame_is(&t.f, 1, "z"));
	t_done(&t);
}
END_TEST

/*
 * Groups
 */

#define NMEMBERS 4

struct members {
	struct event_base *base;
	struct t t[NMEMBERS];
};

static void
members_open(struct members *m)
{
	int i;

	for (i = 0; i < NMEMBERS; i++)
		t_open(&m->t[i], 0);
}

static void
members_done(struct members *m)
{
	int i;

	for (i = 0; i < NMEMBERS; i++)
		t_done(&m->t[i]);
}

/* Each member has its own base: run them all a while. */
static void
members_settle(struct members *m)
{
	int i, k;

	for (k = 0; k < 20; k++)
		for (i = 0; i < NMEMBERS; i++)
			event_base_loop(m->t[i].base, EVLOOP_NONBLOCK);
}

static int
close_every_other(struct async_chat *chat, void *arg)
{
	int *visits = arg;
	struct t *t = async_chat_get_arg(chat);

	(*visits)++;
	/* Closing the member being visited and the next one: neither is
	 * visited after it is gone. */
	async_chat_close(chat);
	if (t[1].chat != NULL && *visits == 1)
		async_chat_close(t[1].chat);
	return 0;
}

START_TEST(test_group_basics)
{
	struct members m;
	struct async_chat_group *g, *other;
	int i, visits = 0;

	members_open(&m);
	EXPECT_ERRNO(async_chat_group_new(NULL) == NULL ? -1 : 0, EINVAL);
	g = async_chat_group_new(m.t[0].base);
	other = async_chat_group_new(m.t[0].base);
	ck_assert_ptr_nonnull(g);
	for (i = 0; i < NMEMBERS; i++)
		ck_assert_int_eq(async_chat_group_add(g, m.t[i].chat), 0);
	ck_assert_int_eq(async_chat_group_add(g, m.t[0].chat), 0);
	ck_assert_uint_eq(async_chat_group_count(g), NMEMBERS);
	EXPECT_ERRNO(async_chat_group_add(other, m.t[0].chat), EBUSY);
	EXPECT_ERRNO(async_chat_group_remove(other, m.t[0].chat), ENOENT);
	EXPECT_ERRNO(async_chat_group_add(NULL, m.t[0].chat), EINVAL);
	EXPECT_ERRNO(async_chat_group_foreach(g, NULL, NULL), EINVAL);

	/* Broadcast. */
	ck_assert_int_eq(async_chat_group_push(g, "all\n", 4), NMEMBERS);
	members_settle(&m);
	for (i = 0; i < NMEMBERS; i++) {
		peer_read(&m.t[i]);
		ck_assert(got_is(&m.t[i], "all\n", 4));
	}
	/* A member that closes leaves. */
	async_chat_close(m.t[3].chat);
	ck_assert_uint_eq(async_chat_group_count(g), NMEMBERS - 1);
	ck_assert_int_eq(async_chat_group_remove(g, m.t[2].chat), 0);
	ck_assert_uint_eq(async_chat_group_count(g), NMEMBERS - 2);
	ck_assert_int_eq(async_chat_group_add(other, m.t[2].chat), 0);

	/* Members closing during the iteration, the next one included. */
	ck_assert_int_eq(async_chat_group_foreach(g, close_every_other,
	                     &visits), 0);
	ck_assert_int_eq(visits, 1);
	ck_assert_uint_eq(async_chat_group_count(g), 0);
	ck_assert_int_eq(m.t[0].frees, 1);
	ck_assert_int_eq(m.t[1].frees, 1);
	async_chat_group_free(g);
	/* Freeing a group leaves its members open. */
	async_chat_group_free(other);
	ck_assert_ptr_nonnull(m.t[2].chat);
	members_done(&m);
}
END_TEST

static int
free_inside(struct async_chat *chat, void *arg)
{
	(void)chat;
	async_chat_group_free(arg);
	return 7;
}

START_TEST(test_group_free_inside_foreach)
{
	struct members m;
	struct async_chat_group *g;
	int i;

	members_open(&m);
	g = async_chat_group_new(m.t[0].base);
	for (i = 0; i < NMEMBERS; i++)
		ck_assert_int_eq(async_chat_group_add(g, m.t[i].chat), 0);
	ck_assert_int_eq(async_chat_group_foreach(g, free_inside, g), 7);
	/* The members are in no group any more. */
	g = async_chat_group_new(m.t[0].base);
	ck_assert_int_eq(async_chat_group_add(g, m.t[0].chat), 0);
	async_chat_group_free(g);
	members_done(&m);
}
END_TEST

/* Graceful shutdown: members flush and close; one whose peer never reads
 * is closed at the deadline. */
START_TEST(test_group_close_when_done)
{
	static char block[65536];
	struct timeval deadline = {0, 100000};
	struct async_chat_group *g;
	struct t a, b;
	int i;

	t_open(&a, 0);
	memset(&b, 0, sizeof(b));
	b.base = a.base;
	{
		evutil_socket_t sv[2];

		tu_socketpair(sv);
		b.peer = sv[1];
		tu_frames_init(&b.f);
		b.got = evbuffer_new();
		b.chat = async_chat_new(a.base, sv[0], &collect_handlers, &b);
		ck_assert_ptr_nonnull(b.chat);
	}
	g = async_chat_group_new(a.base);
	ck_assert_int_eq(async_chat_group_add(g, a.chat), 0);
	ck_assert_int_eq(async_chat_group_add(g, b.chat), 0);
	ck_assert_int_eq(async_chat_push(a.chat, "bye\n", 4), 0);
	for (i = 0; i < 64; i++) /* b's peer never reads */
		ck_assert_int_eq(async_chat_push(b.chat, block, sizeof(block)),
		    0);
	{
		struct timeval bad = {-1, 0};

		EXPECT_ERRNO(async_chat_group_close_when_done(g, &bad), EINVAL);
	}
	ck_assert_int_eq(async_chat_group_close_when_done(g, &deadline), 0);
	ck_assert(tu_run_until(a.base, peer_has_eof, &a, WAIT_MS) == 0);
	ck_assert(got_is(&a, "bye\n", 4));
	ck_assert_int_eq(a.frees, 1);
	ck_assert(tu_run_until(a.base, freed, &b, WAIT_MS) == 0);
	ck_assert_uint_eq(async_chat_group_count(g), 0);
	async_chat_group_free(g);
	b.base = NULL; /* a's, freed with a */
	t_done(&b);
	t_done(&a);
}
END_TEST

static Suite *
frames_suite(void)
{
	Suite *s = suite_create("frames");
	TCase *tc;

	tc = tcase_create("length");
	tcase_add_loop_test(tc, test_length_collect_and_message, 0, 4);
	tcase_add_test(tc, test_length_switch_per_frame);
	tcase_add_test(tc, test_length_get_terminator);
	tcase_add_test(tc, test_length_bad_specs);
	tcase_add_test(tc, test_length_encoder);
	tcase_add_test(tc, test_push_length_prefixed);
	tcase_add_loop_test(tc, test_length_error, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("bound");
	tcase_add_loop_test(tc, test_bound_resume_needs_room, 0, 2);
	tcase_add_test(tc, test_bound_length_whole);
	suite_add_tcase(s, tc);

	tc = tcase_create("policy");
	tcase_add_loop_test(tc, test_policy_skip, 0, 2);
	tcase_add_loop_test(tc, test_policy_skip_length, 0, 2);
	tcase_add_loop_test(tc, test_policy_close, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("lifecycle");
	tcase_add_test(tc, test_read_timeout_resumes);
	tcase_add_test(tc, test_read_timeout_set_later);
	tcase_add_test(tc, test_rate_limit_set_later);
	tcase_add_test(tc, test_push_lengths);
	tcase_add_test(tc, test_close_then_base_free);
	tcase_add_loop_test(tc, test_reference_cleanup_calls, 0, CL_N);
	tcase_add_test(tc, test_reference_cleanup_pair);
	tcase_add_loop_test(tc, test_producer_free_calls, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("server");
	tcase_add_test(tc, test_idle_timeout);
	tcase_add_loop_test(tc, test_frame_deadline, 0, 2);
	tcase_add_test(tc, test_write_timeout);
	tcase_add_test(tc, test_high_water);
	tcase_add_test(tc, test_high_water_files);
	tcase_add_test(tc, test_deferred_producer);
	tcase_add_test(tc, test_shutdown_handler);
	tcase_add_test(tc, test_push_printf);
	tcase_add_test(tc, test_skip_frame);
	tcase_add_test(tc, test_varint_strip_header);
	suite_add_tcase(s, tc);

	tc = tcase_create("group");
	tcase_add_test(tc, test_group_basics);
	tcase_add_test(tc, test_group_free_inside_foreach);
	tcase_add_test(tc, test_group_close_when_done);
	suite_add_tcase(s, tc);

	tc = tcase_create("settled");
	tcase_add_test(tc, test_settled_cases);
	tcase_add_test(tc, test_line_after_cr_taken);
	tcase_add_test(tc, test_count_set_in_last_collect);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(frames_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
