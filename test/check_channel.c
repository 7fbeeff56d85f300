/*
 * check_channel.c - the channel's input side and lifecycle, driven in
 * process over socket pairs, bufferevent pairs and loopback TCP: framing,
 * EOF, errors, connects, re-entrancy, pause/resume, the frame bound, the
 * listener, the constructors and the accessors.  The channels and their
 * peers come from fixture.h.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>

#include "fixture.h"

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The transports a transport-independent test runs over, and the socket
 * ones: a bufferevent pair moves all its bytes in one go, whatever the
 * in_buffer_size. */
static const enum fx_kind every_kind[] = {
    FX_SOCKETPAIR, FX_PAIR, FX_PAIR_SYNC, FX_TCP4, FX_TCP6};
static const enum fx_kind socket_kinds[] = {FX_SOCKETPAIR, FX_TCP4, FX_TCP6};

static int
socket_kinds_has(enum fx_kind k)
{
	return k == FX_SOCKETPAIR || k == FX_TCP4 || k == FX_TCP6;
}

/* Outside ck_assert: Check records every assertion it passes. */
static int
all_bytes(const char *p, size_t len, char want)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != want)
			return 0;
	return 1;
}

/* Send pieces to the partner as one evbuffer of separate chains, so the
 * channel receives them in one transfer but collects them one by one. */
static void
pair_send_chains(struct fx_chan *c, const char *const *pieces, size_t n)
{
	struct evbuffer *tmp = evbuffer_new();
	size_t i;

	ck_assert_ptr_nonnull(tmp);
	for (i = 0; i < n; i++)
		ck_assert_int_eq(evbuffer_add_reference(tmp, pieces[i],
		                     strlen(pieces[i]), NULL, NULL),
		    0);
	ck_assert_int_eq(bufferevent_write_buffer(c->p.bev, tmp), 0);
	evbuffer_free(tmp);
}

/* Actions for fx_once(), run from inside a callback. */
static void
do_pause(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	if (which == FX_FOUND)
		ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
}

static void
do_discard(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_discard_buffers(c->chat), 0);
}

/* And the application drops its own copy of the frame too. */
static void
do_discard_all(struct fx_chan *c, enum fx_cb which)
{
	do_discard(c, which);
	evbuffer_drain(c->f.cur, evbuffer_get_length(c->f.cur));
}

/*
 * Framing over a socket: collect mode and message mode
 */

FX_TEST(test_collect_mode, every_kind[_i])
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	fx_sends(c, "hello\r\nworld\r\npart");
	c->want = 2;
	fx_run(c, fx_until_founds);
	c->want = 4;
	fx_run(c, fx_until_collected);
	ck_assert(tu_frame_is(&c->f, 0, "hello"));
	ck_assert(tu_frame_is(&c->f, 1, "world"));
	ck_assert(tu_cur_eq(&c->f, "part", 4));
	/* A terminator split across writes is still found. */
	fx_sends(c, "ial\r");
	c->want = 7;
	fx_run(c, fx_until_collected);
	fx_sends(c, "\n");
	c->want = 3;
	fx_run(c, fx_until_founds);
	ck_assert(tu_frame_is(&c->f, 2, "partial"));
	ck_assert_int_eq(c->f.errors, 0);
	ck_assert_int_eq(c->f.closes, 0);
}

/* Message mode: found_terminator takes the frame from the incoming buffer;
 * what it leaves stays there and the next frame is appended to it. */
static void
msg_found(struct async_chat *chat, void *arg)
{
	struct fx_chan *c = arg;
	struct evbuffer *in = async_chat_incoming(chat);
	char buf[64];
	size_t len;

	ck_assert_ptr_eq(chat, c->chat);
	ck_assert_ptr_nonnull(in);
	c->f.founds++;
	len = evbuffer_get_length(in);
	ck_assert_uint_lt(len, sizeof(buf));
	evbuffer_copyout(in, buf, len);
	buf[len] = '\0';
	switch (c->f.founds) {
	case 1:
		ck_assert_str_eq(buf, "abc");
		break; /* leave it */
	case 2:
		ck_assert_str_eq(buf, "abcdef");
		evbuffer_drain(in, 3); /* take "abc", keep "def" */
		break;
	case 3:
		ck_assert_str_eq(buf, "defghi");
		evbuffer_drain(in, len);
		break;
	default:
		ck_abort_msg("unexpected frame %s", buf);
	}
}

START_TEST(test_message_mode)
{
	struct fx_chan c;

	fx_init(&c, NULL);
	c.h.collect_incoming_data = NULL;
	c.h.found_terminator = msg_found;
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	fx_sends(&c, "abc\n");
	c.want = 1;
	fx_run(&c, fx_until_founds);
	fx_sends(&c, "def\r\nghi\n");
	c.want = 3;
	fx_run(&c, fx_until_founds);
	ck_assert_uint_eq(evbuffer_get_length(async_chat_incoming(c.chat)), 0);
	/* Bytes of an unfinished frame wait in the incoming buffer. */
	fx_sends(&c, "jk");
	c.want = 2;
	fx_run(&c, fx_until_incoming);
	ck_assert(fx_buf_is_str(async_chat_incoming(c.chat), "jk"));
	ck_assert_int_eq(c.f.founds, 3);
	ck_assert_int_eq(c.f.collects, 0);
	fx_end(&c);
}
END_TEST

/* A terminator set in found_terminator applies to the rest of the same
 * read: HTTP headers, a Content-Length body, headers again. */
static void
http_found(struct fx_chan *c, enum fx_cb which)
{
	const char *frame, *cl;

	if (which != FX_FOUND)
		return;
	frame = c->f.frame[c->f.n - 1];
	if (c->state == 0) {
		cl = strstr(frame, "Content-Length: ");
		if (cl == NULL)
			return; /* no body: the next headers follow */
		ck_assert_int_eq(async_chat_set_terminator_count(
		                     c->chat, strtoull(cl + 16, NULL, 10)),
		    0);
		c->state = 1;
	} else {
		ck_assert_int_eq(
		    async_chat_set_terminator(c->chat, "\r\n\r\n", 4), 0);
		c->state = 0;
	}
}

FX_TEST(test_terminator_change_same_read, FX_SOCKETPAIR)
{
	static const char req[] =
	    "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
	    "hello"
	    "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
	    "xyz"
	    "GET /c HTTP/1.1\r\n\r\n";

	c->hook = http_found;
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n\r\n", 4), 0);
	fx_send(c, req, sizeof(req) - 1);
	c->want = 5;
	fx_run(c, fx_until_founds);
	ck_assert(
	    tu_frame_is(&c->f, 0, "POST /a HTTP/1.1\r\nContent-Length: 5"));
	ck_assert(tu_frame_is(&c->f, 1, "hello"));
	ck_assert(
	    tu_frame_is(&c->f, 2, "POST /b HTTP/1.1\r\nContent-Length: 3"));
	ck_assert(tu_frame_is(&c->f, 3, "xyz"));
	ck_assert(tu_frame_is(&c->f, 4, "GET /c HTTP/1.1"));
	ck_assert_uint_eq(evbuffer_get_length(c->f.cur), 0);
}

/* discard_buffers inside collect: "def", its "\n" and the rest of the
 * input are gone; the frame never ended. */
FX_TEST(test_discard_in_collect, FX_PAIR_SYNC)
{
	static const char *const first[] = {"abc", "def\nnext\n"};
	static const char *const second[] = {"after\n"};

	fx_once(c, FX_COLLECT, 1, do_discard_all);
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	pair_send_chains(c, first, 2);
	c->want = 1;
	ck_assert_int_eq(fx_wait(c, fx_until_founds, FX_SETTLE_MS), -1);
	ck_assert_int_eq(c->once.done, 1);
	ck_assert_int_eq(c->f.collects, 1);
	ck_assert_int_eq(c->f.founds, 0);
	ck_assert_uint_eq(fx_input_len(c), 0);
	/* Later input frames normally. */
	pair_send_chains(c, second, 1);
	fx_run(c, fx_until_founds);
	ck_assert(tu_frame_is(&c->f, 0, "after"));
	ck_assert_int_eq(c->f.founds, 1);
}

/* Discarding, or pausing, while the held-back bytes are collected at EOF:
 * "abc" comes in one collect, the held-back "\r" in a second one at EOF. */
static void
held_back_at_eof(struct fx_chan *c, fx_hook action)
{
	fx_start(c, FX_SOCKETPAIR);
	fx_once(c, FX_COLLECT, 2, action);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	fx_sends(c, "abc\r");
	c->want = 3;
	fx_run(c, fx_until_collected);
	ck_assert_int_eq(c->f.collects, 1);
	fx_shut(c);
}

/* A discard there still lets the EOF be handled. */
START_TEST(test_discard_in_collect_at_eof)
{
	struct fx_chan c;

	held_back_at_eof(&c, do_discard);
	fx_run(&c, fx_until_closes);
	ck_assert_int_eq(c.once.done, 1);
	ck_assert_int_eq(c.f.closes, 1);
	ck_assert_int_eq(c.f.founds, 0);
	fx_end(&c);
}
END_TEST

/* A pause there makes handle_close wait for resume. */
START_TEST(test_pause_in_collect_at_eof)
{
	struct fx_chan c;

	held_back_at_eof(&c, do_pause);
	c.want = 4;
	fx_run(&c, fx_until_collected);
	fx_settle(c.base);
	ck_assert_int_eq(c.once.done, 1);
	ck_assert_int_eq(c.f.closes, 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	fx_run(&c, fx_until_closes);
	ck_assert(fx_buf_is_str(c.at_close, "abc\r"));
	ck_assert_int_eq(c.f.collects, 2);
	fx_end(&c);
}
END_TEST

/* A socket channel reads up to in_buffer_size bytes a call once
 * libevent's first read has run; libevent 2.1 reads 4,096 at most. */
FX_TEST(test_read_up_to_in_buffer_size, socket_kinds[_i])
{
	static char big[12000];

	memset(big, 'x', sizeof(big));
	ck_assert_int_eq(async_chat_set_terminator_none(c->chat), 0);
	fx_sends(c, "y"); /* libevent's read */
	c->want = 1;
	fx_run(c, fx_until_collected);
	fx_send(c, big, sizeof(big));
	c->want = 1 + sizeof(big);
	fx_run(c, fx_until_collected);
	ck_assert_uint_gt(c->f.max_collect, 4096);
	ck_assert_uint_le(c->f.max_collect, ASYNC_CHAT_DEFAULT_BUFFER_SIZE);
	/* in_buffer_size bounds each read */
	ck_assert_int_eq(async_chat_set_in_buffer_size(c->chat, 5000), 0);
	c->f.max_collect = 0;
	fx_send(c, big, sizeof(big));
	c->want = 1 + 2 * sizeof(big);
	fx_run(c, fx_until_collected);
	ck_assert_uint_le(c->f.max_collect, 5000);
	ck_assert_uint_gt(c->f.max_collect, 4096);
}

static int output_adds;

static void
count_output_adds(struct evbuffer *b, const struct evbuffer_cb_info *info,
    void *arg)
{
	(void)b;
	(void)arg;
	if (info->n_added > 0)
		output_adds++;
}

static void
echo_two_pushes(struct fx_chan *c, enum fx_cb which)
{
	if (which != FX_FOUND)
		return;
	ck_assert_int_eq(async_chat_push(c->chat, "ok", 2), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "\r\n", 2), 0);
}

/* Pushes inside callbacks reach a socket the channel made without going
 * through the bufferevent's output, so libevent runs no callback for
 * them; over a bufferevent pair they arrive in one add per callback. */
FX_TEST(test_pushes_skip_the_output, every_kind[_i])
{
	struct evbuffer *out =
	    bufferevent_get_output(async_chat_get_bufferevent(c->chat));
	struct evbuffer_cb_entry *e;
	char lines[100 * 3];
	int i;

	output_adds = 0;
	e = evbuffer_add_cb(out, count_output_adds, NULL);
	ck_assert_ptr_nonnull(e);
	c->hook = echo_two_pushes;
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	for (i = 0; i < 100; i++)
		memcpy(lines + 3 * i, "x\r\n", 3);
	fx_send(c, lines, sizeof(lines));
	c->want = 100;
	fx_run(c, fx_until_founds);
	fx_run_got(c, 400);
	if (socket_kinds_has(every_kind[_i]))
		ck_assert_int_eq(output_adds, 0);
	else
		ck_assert_int_lt(output_adds, 100);
	/* A push outside callbacks goes to the output at once. */
	ck_assert_int_eq(async_chat_push(c->chat, "z", 1), 0);
	ck_assert_int_eq(output_adds, socket_kinds_has(every_kind[_i]) ? 1 :
	                     output_adds);
	fx_run_got(c, 401);
	evbuffer_remove_cb_entry(out, e);
}

/* Answers while one read is framed: each frame after the first is
 * answered with 100 bytes, and the output pending is noted at the 61st
 * frame of the read, when 6,000 bytes have been pushed. */
static size_t pending_at_61;

static void
answer_100_bytes(struct fx_chan *c, enum fx_cb which)
{
	static const char reply[100] = {0};

	if (which != FX_FOUND || c->f.founds == 1)
		return;
	ck_assert_int_eq(async_chat_push(c->chat, reply, sizeof(reply)), 0);
	if (c->f.founds == 61)
		pending_at_61 = async_chat_output_pending(c->chat);
}

/* Frames end at "\r\n".  The first read is libevent's, the channel reads
 * the next ones itself: one frame is sent and taken, so that what the
 * test sends next is read by the channel. */
static void
past_libevents_read(struct fx_chan *c)
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	fx_sends(c, "a\r\n");
	c->want = 1;
	fx_run(c, fx_until_founds);
}

static void
one_read_of_100_frames(struct fx_chan *c)
{
	char lines[100 * 3];
	int i;

	pending_at_61 = 0;
	c->hook = answer_100_bytes;
	past_libevents_read(c);
	for (i = 0; i < 100; i++)
		memcpy(lines + 3 * i, "x\r\n", 3);
	fx_send(c, lines, sizeof(lines));
	c->want = 101;
	fx_run(c, fx_until_founds);
	fx_run_got(c, 10000);
}

/* Alone in the loop, the read sends each 2 KiB of answers as they are
 * staged: fewer than the 6,000 bytes pushed are pending. */
FX_TEST(test_answers_leave_early, socket_kinds[_i])
{
	one_read_of_100_frames(c);
	ck_assert_uint_gt(pending_at_61, 0);
	ck_assert_uint_lt(pending_at_61, 6000);
}

/* A timer that is due on every loop turn. */
static void
always_due(evutil_socket_t fd, short what, void *arg)
{
	static const struct timeval zero = {0, 0};

	(void)fd;
	(void)what;
	ck_assert_int_eq(evtimer_add((struct event *)arg, &zero), 0);
}

/* With another event waiting to run, the answers of one read wait for
 * its end and leave together. */
FX_TEST(test_answers_wait_when_busy, socket_kinds[_i])
{
	static const struct timeval zero = {0, 0};
	struct event *busy = event_new(c->base, -1, 0, always_due,
	    event_self_cbarg());

	ck_assert_ptr_nonnull(busy);
	ck_assert_int_eq(evtimer_add(busy, &zero), 0);
	one_read_of_100_frames(c);
	ck_assert_uint_eq(pending_at_61, 6000);
	event_free(busy);
}

/* Big pushes inside a read alone in the loop are written from the
 * caller's memory: the second frame's answer is 8,000 bytes (more than
 * the stage takes), then a length-prefixed one of 8,000, then "end". */
static char big_answer[60000];

static void
fill_big_answer(void)
{
	size_t i;

	for (i = 0; i < sizeof(big_answer); i++)
		big_answer[i] = (char)('a' + i % 23);
}

static size_t pending_after_big;

static void
answer_big(struct fx_chan *c, enum fx_cb which)
{
	static const struct async_chat_length_field be4 = {.width = 4};
	size_t n = (size_t)c->user;

	if (which != FX_FOUND || c->f.founds != 2)
		return;
	ck_assert_int_eq(async_chat_push(c->chat, big_answer, n), 0);
	ck_assert_int_eq(
	    async_chat_push_length_prefixed(c->chat, &be4, big_answer, n), 0);
	pending_after_big = async_chat_output_pending(c->chat);
	ck_assert_int_eq(async_chat_push(c->chat, "end", 3), 0);
}

/* The second frame, read by the channel, gets answer_big's n-byte
 * answers; then all of them must arrive, in order. */
static void
big_answers_to_second_frame(struct fx_chan *c, size_t n)
{
	fill_big_answer();
	c->user = (void *)(uintptr_t)n;
	c->hook = answer_big;
	past_libevents_read(c);
	fx_sends(c, "b\r\n");
	c->want = 2;
	fx_run(c, fx_until_founds);
}

static void
check_big_answers(struct fx_chan *c, size_t n)
{
	struct evbuffer *want = evbuffer_new();
	unsigned char hdr[4] = {(unsigned char)(n >> 24),
	    (unsigned char)(n >> 16), (unsigned char)(n >> 8),
	    (unsigned char)n};

	ck_assert_ptr_nonnull(want);
	ck_assert_int_eq(evbuffer_add(want, big_answer, n), 0);
	ck_assert_int_eq(evbuffer_add(want, hdr, 4), 0);
	ck_assert_int_eq(evbuffer_add(want, big_answer, n), 0);
	ck_assert_int_eq(evbuffer_add(want, "end", 3), 0);
	fx_run_got(c, 2 * n + 7);
	ck_assert(fx_got_is(c, evbuffer_pullup(want, -1), 2 * n + 7));
	evbuffer_free(want);
}

FX_TEST(test_big_push_direct, socket_kinds[_i])
{
	pending_after_big = 1;
	big_answers_to_second_frame(c, 8000);
	ck_assert_uint_eq(pending_after_big, 0); /* all of it written */
	check_big_answers(c, 8000);
}

/* What a small socket buffer does not take of such a push is queued,
 * and goes out in order. */
FX_TEST(test_big_push_direct_partial, FX_SOCKETPAIR)
{
	int small = 4096;

	ck_assert_int_eq(setsockopt(bufferevent_getfd(
				       async_chat_get_bufferevent(c->chat)),
			     SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)),
	    0);
	big_answers_to_second_frame(c, sizeof(big_answer) / 2);
	ck_assert_uint_gt(pending_after_big, 0);
	check_big_answers(c, sizeof(big_answer) / 2);
}

FX_TEST(test_in_buffer_size_one, socket_kinds[_i])
{
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c->chat),
	    ASYNC_CHAT_DEFAULT_BUFFER_SIZE);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(c->chat, 0), EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(
	                 c->chat, ASYNC_CHAT_BUFFER_SIZE_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(async_chat_set_in_buffer_size(NULL, 1), EINVAL);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(NULL), 0);
	ck_assert_int_eq(async_chat_set_in_buffer_size(c->chat, 1), 0);
	ck_assert_uint_eq(async_chat_get_in_buffer_size(c->chat), 1);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	fx_sends(c, "hello\r\nworld\r\n\r\n");
	c->want = 3;
	fx_run(c, fx_until_founds);
	ck_assert_uint_eq(c->f.max_collect, 1);
	ck_assert(tu_frame_is(&c->f, 0, "hello"));
	ck_assert(tu_frame_is(&c->f, 1, "world"));
	ck_assert(tu_frame_is(&c->f, 2, ""));
	/* A lone "\r" is held back as a possible terminator prefix, then
	 * released together with the byte after it (as CPython does): a
	 * collect call gets at most one new byte plus the released ones. */
	fx_sends(c, "wo\rld\r\nlast\r");
	c->want = 4;
	fx_run(c, fx_until_founds);
	c->want = 4;
	fx_run(c, fx_until_collected);
	ck_assert(tu_frame_is(&c->f, 3, "wo\rld"));
	ck_assert_uint_le(c->f.max_collect, 2);
	fx_shut(c);
	fx_run(c, fx_until_closes);
	ck_assert(fx_buf_is_str(c->at_close, "last\r"));
	ck_assert_uint_le(c->f.max_collect, 2);
}

static void
check_count_left(struct fx_chan *c, enum fx_cb which)
{
	struct async_chat_terminator t;

	if (which != FX_COLLECT && which != FX_FOUND)
		return;
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	if (c->f.founds > 0) {
		/* Spent: the rest is collected as with no terminator. */
		ck_assert_uint_eq(t.count, 0);
		return;
	}
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	/* Already excludes the bytes being collected. */
	ck_assert_uint_eq(t.count, 10 - evbuffer_get_length(c->f.cur));
	ck_assert_ptr_null(t.bytes);
	ck_assert_uint_eq(t.len, 0);
	c->state++;
}

FX_TEST(test_count_remaining, socket_kinds[_i])
{
	c->hook = check_count_left;
	ck_assert_int_eq(async_chat_set_in_buffer_size(c->chat, 3), 0);
	ck_assert_int_eq(async_chat_set_terminator_count(c->chat, 10), 0);
	fx_sends(c, "0123456789rest");
	c->want = 1;
	fx_run(c, fx_until_founds);
	c->want = 4;
	fx_run(c, fx_until_collected);
	ck_assert(tu_frame_is(&c->f, 0, "0123456789"));
	ck_assert(tu_cur_eq(&c->f, "rest", 4));
	ck_assert_int_ge(c->state, 4); /* 3 + 3 + 3 + 1 at least */
}

FX_TEST(test_get_terminator_kinds, FX_SOCKETPAIR)
{
	struct async_chat_terminator t;
	const void *terms[3] = {"\r\n", "\n", "END"};
	size_t lens[3] = {2, 1, 3};

	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "ab\0c", 4), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_STRING);
	ck_assert_uint_eq(t.len, 4);
	ck_assert_int_eq(memcmp(t.bytes, "ab\0c", 4), 0);
	ck_assert_int_eq(async_chat_set_terminator_count(c->chat, 7), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_COUNT);
	ck_assert_uint_eq(t.count, 7);
	ck_assert_ptr_null(t.bytes);
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_LINE);
	ck_assert_uint_eq(t.alternatives, 2);
	ck_assert_int_eq(
	    async_chat_set_terminators(c->chat, terms, lens, 3), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_ANY);
	ck_assert_uint_eq(t.alternatives, 3);
	ck_assert_int_eq(async_chat_set_terminator_none(c->chat), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	/* Count 0 and the empty string are the none terminator. */
	ck_assert_int_eq(async_chat_set_terminator_count(c->chat, 0), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "", 0), 0);
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	ck_assert_int_eq(t.kind, ASYNC_CHAT_TERM_NONE);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, NULL, 0), 0);
	EXPECT_ERRNO(async_chat_set_terminator(c->chat, NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator(
	                 c->chat, "x", ASYNC_CHAT_TERMINATOR_MAX + 1),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_set_terminators(c->chat, terms, lens, 0), EINVAL);
	EXPECT_ERRNO(async_chat_get_terminator(NULL, &t), EINVAL);
	EXPECT_ERRNO(async_chat_get_terminator(c->chat, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator(NULL, "x", 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_count(NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_none(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_terminator_line(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_matched_terminator(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_set_max_frame(NULL, 1), EINVAL);
	EXPECT_ERRNO(async_chat_pause_reading(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_resume_reading(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_reading_paused(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_discard_buffers(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_incoming(NULL), EINVAL);
}

/* Which alternative ended each frame.  terms NULL: line mode. */
static const void *const alt3[] = {"\r\n", "\n", "END"};
static const size_t alt3_lens[] = {2, 1, 3};
static const void *const alt_lf_crlf[] = {"\n", "\r\n"};
static const size_t alt_lf_crlf_lens[] = {1, 2};

static const struct matched_case {
	const void *const *terms;
	const size_t *lens;
	size_t n;
	const char *input;
	size_t nframes;
	const char *frames[4];
	int matched[4];
} matched_cases[] = {
    {NULL, NULL, 0, "a\r\nb\nc\r\n\n", 4, {"a", "b", "c", ""}, {0, 1, 0, 1}},
    {alt3, alt3_lens, 3, "x\r\ny\nzENDw\n", 4, {"x", "y", "z", "w"},
        {0, 1, 2, 1}},
    /* Of matches ending on the same byte the longest wins. */
    {alt_lf_crlf, alt_lf_crlf_lens, 2, "a\r\nb\n", 2, {"a", "b"}, {1, 0}},
};

FX_TEST(test_matched_terminator, FX_SOCKETPAIR)
{
	const struct matched_case *m = &matched_cases[_i];
	size_t i;

	if (m->terms == NULL)
		ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	else
		ck_assert_int_eq(async_chat_set_terminators(
		                     c->chat, m->terms, m->lens, m->n),
		    0);
	fx_sends(c, m->input);
	c->want = m->nframes;
	fx_run(c, fx_until_founds);
	ck_assert_uint_eq(c->nmatched, m->nframes);
	for (i = 0; i < m->nframes; i++) {
		ck_assert_msg(
		    tu_frame_is(&c->f, i, m->frames[i]), "frame %zu", i);
		ck_assert_int_eq(c->matched[i], m->matched[i]);
	}
}

/*
 * EOF
 */

/* The bytes held back as a possible "\r\n\r\n" prefix reach collect
 * before handle_close runs. */
FX_TEST(test_eof_held_back_collect, every_kind[_i])
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n\r\n", 4), 0);
	fx_sends(c, "one\r\n\r\ntwo\r\n\r");
	c->want = 1;
	fx_run(c, fx_until_founds);
	c->want = 3;
	fx_run(c, fx_until_collected);
	/* "\r\n\r" may begin a terminator: the channel holds it back. */
	ck_assert(tu_cur_eq(&c->f, "two", 3));
	fx_shut(c);
	fx_run(c, fx_until_closes);
	ck_assert(fx_buf_is_str(c->at_close, "two\r\n\r"));
	ck_assert(tu_frame_is(&c->f, 0, "one"));
	ck_assert_int_eq(c->f.founds, 1);
	ck_assert_int_eq(c->f.closes, 1);
	ck_assert_int_eq(c->f.errors, 0);
	/* handle_close is set: the channel stays open until closed. */
	fx_settle(c->base);
	ck_assert_int_eq(c->gone, 0);
	ck_assert_int_eq(c->f.closes, 1);
}

START_TEST(test_eof_held_back_message)
{
	struct fx_chan c;

	fx_init(&c, NULL);
	c.h.collect_incoming_data = NULL;
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "END", 3), 0);
	fx_sends(&c, "oneENDtwoEN");
	fx_shut(&c);
	fx_run(&c, fx_until_closes);
	ck_assert(tu_frame_is(&c.f, 0, "one"));
	ck_assert(fx_buf_is_str(c.at_close, "twoEN"));
	fx_end(&c);
}
END_TEST

/* handle_close NULL: queued output is flushed, then the channel closes. */
static void
push_big_on_found(struct fx_chan *c, enum fx_cb which)
{
	static char big[1 << 20];

	memset(big, 'z', sizeof(big));
	ck_assert_int_eq(async_chat_push(c->chat, big, sizeof(big)), 0);
	/* More than a socket buffer holds: some of it is still queued when
	 * the peer's EOF is handled. */
	ck_assert_uint_gt(async_chat_output_pending(c->chat), 0);
}

START_TEST(test_eof_default_flushes_then_closes)
{
	struct fx_chan c;
	size_t len;
	const char *got;

	fx_init(&c, NULL);
	c.h.handle_close = NULL;
	fx_once(&c, FX_FOUND, 1, push_big_on_found);
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	fx_sends(&c, "go\n");
	fx_shut(&c);
	fx_run(&c, fx_until_gone);
	ck_assert_int_eq(c.f.frees, 1);
	fx_run(&c, fx_until_peer_eof);
	ck_assert_int_eq(c.p.err, 0);
	len = evbuffer_get_length(c.p.got);
	ck_assert_uint_eq(len, 1 << 20);
	got = (const char *)evbuffer_pullup(c.p.got, -1);
	ck_assert(all_bytes(got, len, 'z'));
	ck_assert_int_eq(c.f.errors, 0);
	fx_end(&c);
}
END_TEST

/* With a handle_close the channel can still send to a half-closed peer,
 * inside handle_close and after it. */
static void
reply_on_close(struct fx_chan *c, enum fx_cb which)
{
	if (which == FX_CLOSE)
		ck_assert_int_eq(async_chat_push(c->chat, "bye\n", 4), 0);
}

FX_TEST(test_half_closed_peer, every_kind[_i])
{
	c->hook = reply_on_close;
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	fx_sends(c, "hi\n");
	fx_shut(c);
	fx_run(c, fx_until_closes);
	fx_run_got(c, 4);
	ck_assert(fx_got(c, "bye\n"));
	/* Outside any callback, later. */
	ck_assert_int_eq(async_chat_push(c->chat, "later\n", 6), 0);
	ck_assert_int_eq(async_chat_shutdown_when_done(c->chat), 0);
	fx_run(c, fx_until_peer_eof);
	ck_assert(fx_got(c, "bye\nlater\n"));
	ck_assert_int_eq(c->p.err, 0);
	ck_assert_int_eq(c->f.closes, 1);
	ck_assert_int_eq(c->f.errors, 0);
	ck_assert_int_eq(c->gone, 0);
}

/*
 * Errors
 */

/* A peer's RST in the middle of a frame, over loopback TCP, with the
 * application's handle_error or libasynchat's default one. */
static const struct {
	enum fx_kind kind;
	int with_handler;
} reset_cases[] = {{FX_TCP4, 1}, {FX_TCP4, 0}, {FX_TCP6, 1}, {FX_TCP6, 0}};

START_TEST(test_reset_mid_frame)
{
	int with_handler = reset_cases[_i].with_handler;
	struct fx_chan c;

	fx_init(&c, NULL);
	if (!with_handler)
		c.h.handle_error = NULL;
	if (fx_open(&c, reset_cases[_i].kind) != 0) {
		fx_end(&c); /* no ::1 here */
		return;
	}
	ck_assert_int_eq(async_chat_set_terminator(c.chat, "\r\n", 2), 0);
	fx_sends(&c, "line1\r\npartial\r");
	c.want = 1;
	fx_run(&c, fx_until_founds);
	c.want = 7;
	fx_run(&c, fx_until_collected);
	ck_assert(tu_cur_eq(&c.f, "partial", 7));
	fx_reset(&c);
	if (with_handler) {
		fx_run(&c, fx_until_errors);
		ck_assert_msg(
		    c.f.last_error == ECONNRESET || c.f.last_error == EPIPE,
		    "error %d (%s)", c.f.last_error,
		    async_chat_strerror(c.f.last_error));
		/* What was received before the reset is intact, the
		 * held-back "\r" included. */
		ck_assert(fx_buf_is_str(c.at_error, "partial\r"));
		ck_assert_int_eq(c.f.errors, 1);
		ck_assert_int_eq(async_chat_connected(c.chat), 0);
		ck_assert_int_eq(c.gone, 0);
	} else {
		/* handle_error NULL: the channel closes itself. */
		fx_run(&c, fx_until_gone);
		ck_assert_int_eq(c.f.errors, 0);
		ck_assert(tu_cur_eq(&c.f, "partial\r", 8));
	}
	ck_assert(tu_frame_is(&c.f, 0, "line1"));
	ck_assert_int_eq(c.f.founds, 1);
	ck_assert_int_eq(c.f.closes, 0);
	fx_end(&c);
}
END_TEST

static const int families[] = {AF_INET, AF_INET6};

START_TEST(test_connect_refused)
{
	int family = families[_i], port;
	struct fx_chan c;
	struct fx_addr a;
	evutil_socket_t blocker;

	if (fx_have_family(family) != 0)
		return; /* no ::1 here */
	fx_start(&c, FX_UNCONNECTED);
	blocker = fx_refusing_port(family, &port);
	a = fx_loopback(family, port);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	ck_assert_int_eq(async_chat_get_fd(c.chat), -1);
	ck_assert_int_eq(async_chat_connect(c.chat, FX_SA(&a), a.len), 0);
	fx_run(&c, fx_until_errors);
	ck_assert_msg(c.f.last_error == ECONNREFUSED, "error %d (%s)",
	    c.f.last_error, async_chat_strerror(c.f.last_error));
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	ck_assert_int_eq(async_chat_dns_error(c.chat), 0);
	fx_end(&c);
	evutil_closesocket(blocker);
}
END_TEST

/* An echo server channel: each line comes back. */
static void
echo_line(struct fx_chan *c, enum fx_cb which)
{
	const char *line;

	if (which != FX_FOUND)
		return;
	line = c->f.frame[c->f.n - 1];
	ck_assert_int_eq(async_chat_push(c->chat, line, strlen(line)), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "\n", 1), 0);
}

static void
ping_on_connect(struct fx_chan *c, enum fx_cb which)
{
	if (which != FX_CONNECT)
		return;
	ck_assert_int_eq(async_chat_connected(c->chat), 1);
	ck_assert_int_ge(async_chat_get_fd(c->chat), 0);
	ck_assert_int_eq(async_chat_push(c->chat, "ping\n", 5), 0);
}

START_TEST(test_connect_hostname_localhost)
{
	struct event_base *base = fx_base();
	struct fx_chan srv, cli;
	int port;

	fx_init(&srv, base);
	srv.hook = echo_line;
	srv.family = AF_INET;
	srv.listener = fx_listen(base, AF_INET, fx_accept, &srv);
	port = fx_listener_port(srv.listener);

	fx_init(&cli, base);
	cli.hook = ping_on_connect;
	fx_open(&cli, FX_UNCONNECTED);
	ck_assert_int_eq(async_chat_set_terminator_line(cli.chat), 0);
	/* Pushed before the connection is made: sent once it is. */
	ck_assert_int_eq(async_chat_push(cli.chat, "early\n", 6), 0);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     cli.chat, NULL, AF_INET, "localhost", port),
	    0);
	/* One connect at a time: a second while the first is under way. */
	EXPECT_ERRNO(async_chat_connect_hostname(
	                 cli.chat, NULL, AF_INET, "localhost", port),
	    EALREADY);
	fx_run(&cli, fx_until_connects);
	fx_run(&srv, fx_until_chat);
	ck_assert_int_eq(async_chat_set_terminator_line(srv.chat), 0);
	cli.want = 2;
	fx_run(&cli, fx_until_founds);
	ck_assert(tu_frame_is(&cli.f, 0, "early"));
	ck_assert(tu_frame_is(&cli.f, 1, "ping"));
	ck_assert_int_eq(cli.f.connects, 1);
	ck_assert_int_eq(cli.f.errors, 0);
	ck_assert_int_eq(async_chat_connected(cli.chat), 1);
	ck_assert_int_eq(async_chat_dns_error(cli.chat), 0);
	/* A connected channel cannot connect again. */
	EXPECT_ERRNO(async_chat_connect_hostname(
	                 cli.chat, NULL, AF_INET, "localhost", port),
	    EISCONN);
	fx_end(&cli);
	fx_end(&srv);
	fx_base_free(base);
}
END_TEST

/* A nameserver on loopback that answers every query with NXDOMAIN, so
 * that a lookup fails without anything leaving the machine.  (An
 * evdns_base with no nameserver at all never answers: libevent keeps the
 * request waiting for a nameserver to be added.) */
static void
nxdomain_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char msg[512];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	ssize_t n;

	(void)what;
	(void)arg;
	while ((n = recvfrom(fd, msg, sizeof(msg), 0, (struct sockaddr *)&from,
	            &fromlen)) >= 12) {
		msg[2] |= 0x80;        /* QR: a response */
		msg[3] = 0x80 | 3;     /* RA, RCODE NXDOMAIN */
		memset(msg + 6, 0, 6); /* no records */
		ck_assert_int_eq(sendto(fd, msg, (size_t)n, 0,
		                     (struct sockaddr *)&from, fromlen),
		    n);
		fromlen = sizeof(from);
	}
}

START_TEST(test_connect_dns_failure)
{
	struct event_base *base = fx_base();
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct fx_addr a = fx_loopback(AF_INET, 0);
	socklen_t slen = sizeof(a.ss);
	struct event *ns_ev;
	evutil_socket_t ns;
	char addr[64];
	struct fx_chan c;

	ck_assert_ptr_nonnull(dns);
	ns = socket(AF_INET, SOCK_DGRAM, 0);
	ck_assert_int_ge(ns, 0);
	ck_assert_int_eq(bind(ns, FX_SA(&a), (socklen_t)a.len), 0);
	ck_assert_int_eq(getsockname(ns, FX_SA(&a), &slen), 0);
	ck_assert_int_eq(evutil_make_socket_nonblocking(ns), 0);
	ns_ev = event_new(base, ns, EV_READ | EV_PERSIST, nxdomain_cb, NULL);
	ck_assert_ptr_nonnull(ns_ev);
	ck_assert_int_eq(event_add(ns_ev, NULL), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d",
	    ntohs(((struct sockaddr_in *)&a.ss)->sin_port));
	ck_assert_int_eq(evdns_base_nameserver_ip_add(dns, addr), 0);

	fx_init(&c, base);
	fx_open(&c, FX_UNCONNECTED);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     c.chat, dns, AF_INET, "no-such-host.invalid", 80),
	    0);
	fx_run(&c, fx_until_errors);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_DNS);
	ck_assert_int_ne(async_chat_dns_error(c.chat), 0);
	ck_assert_int_eq(c.f.errors, 1);
	ck_assert_int_eq(c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	fx_end(&c);
	evdns_base_free(dns, 0);
	event_free(ns_ev);
	evutil_closesocket(ns);
	fx_base_free(base);
}
END_TEST

/* Closing a channel while its name is being resolved: the lookup is
 * abandoned, no callback runs, and nothing leaks. */
START_TEST(test_close_while_resolving)
{
	struct event_base *base = fx_base();
	/* No nameserver: the request waits until the evdns_base goes. */
	struct evdns_base *dns = evdns_base_new(base, 0);
	struct fx_chan c;

	ck_assert_ptr_nonnull(dns);
	fx_init(&c, base);
	fx_open(&c, FX_UNCONNECTED);
	ck_assert_int_eq(async_chat_connect_hostname(
	                     c.chat, dns, AF_INET, "pending.invalid", 80),
	    0);
	fx_settle(base);
	ck_assert_int_eq(c.f.errors + c.f.connects, 0);
	async_chat_close(c.chat);
	ck_assert_int_eq(c.f.frees, 1);
	fx_settle(base);
	evdns_base_free(dns, 1);
	fx_settle(base);
	fx_end(&c);
	fx_base_free(base);
}
END_TEST

/* Keeps the accepted socket in *arg. */
static void
acc_keep(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	evutil_socket_t *kept = arg;

	(void)l;
	(void)addr;
	(void)addrlen;
	ck_assert_int_lt(*kept, 0);
	*kept = fd;
}

START_TEST(test_connect_bad_args)
{
	struct event_base *base = fx_base();
	struct async_chat_listener *l;
	evutil_socket_t kept = -1;
	struct fx_chan c, d;
	struct fx_addr a = fx_loopback(AF_INET, 9);

	fx_init(&c, base);
	fx_open(&c, FX_UNCONNECTED);
	EXPECT_ERRNO(async_chat_connect(NULL, FX_SA(&a), a.len), EINVAL);
	EXPECT_ERRNO(async_chat_connect(c.chat, NULL, a.len), EINVAL);
	EXPECT_ERRNO(async_chat_connect(c.chat, FX_SA(&a), 0), EINVAL);
	EXPECT_ERRNO(async_chat_connect(c.chat, FX_SA(&a), -1), EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(NULL, NULL, AF_INET, "localhost", 80),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_INET, NULL, 80),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_INET, "localhost", 0),
	    EINVAL);
	EXPECT_ERRNO(async_chat_connect_hostname(
	                 c.chat, NULL, AF_INET, "localhost", 65536),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(c.chat, NULL, AF_UNIX, "localhost", 80),
	    EINVAL);
	ck_assert_int_eq(async_chat_dns_error(NULL), 0);
	/* An address too short for its family: connect(2) refuses it. */
	errno = 0;
	ck_assert_int_eq(async_chat_connect(c.chat, FX_SA(&a), 2), -1);
	ck_assert_int_ne(errno, 0);
	/* Nothing was started: no callback runs. */
	fx_settle(base);
	ck_assert_int_eq(c.f.errors + c.f.connects, 0);
	ck_assert_int_eq(async_chat_connected(c.chat), 0);
	/* The failed call left the channel able to connect. */
	l = fx_listen(base, AF_INET, acc_keep, &kept);
	a = fx_loopback(AF_INET, fx_listener_port(l));
	ck_assert_int_eq(async_chat_connect(c.chat, FX_SA(&a), a.len), 0);
	fx_run(&c, fx_until_connects);
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	fx_settle(base);
	ck_assert_int_eq(c.f.connects, 1);
	ck_assert_int_eq(c.f.errors, 0);
	fx_end(&c);
	async_chat_listener_free(l);
	if (kept >= 0)
		evutil_closesocket(kept);

	/* A connected channel (a socket pair) cannot connect. */
	fx_init(&d, base);
	fx_open(&d, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_connected(d.chat), 1);
	EXPECT_ERRNO(async_chat_connect(d.chat, FX_SA(&a), a.len), EISCONN);
	EXPECT_ERRNO(
	    async_chat_connect_hostname(d.chat, NULL, AF_INET, "localhost", 80),
	    EISCONN);
	fx_settle(base);
	ck_assert_int_eq(d.f.errors, 0);
	fx_end(&d);
	fx_base_free(base);
}
END_TEST

/*
 * Re-entrancy: from inside each callback, each call.  Run i makes call
 * i % N(reent_ops) inside callback i / N(reent_ops), the first time it
 * runs, while the peer sends "abc\ndef\n" and closes.
 */

enum {
	R_CLOSES = 1,       /* the channel has gone in the end */
	R_CLOSES_NOW = 2,   /* inside the call */
	R_PUSHES = 4,       /* the peer receives an "X" */
	R_KEEPS_FRAMES = 8, /* framing goes on as before */
};

static void
op_close(struct fx_chan *c, enum fx_cb which)
{
	async_chat_close(c->chat);
	/* handle_free ran inside close, and only it. */
	ck_assert_int_eq(c->f.frees, 1);
	fx_check_closed(c);
}

static void
op_close_when_done(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_close_when_done(c->chat), 0);
	ck_assert_int_eq(c->gone, 0);
	EXPECT_ERRNO(async_chat_push(c->chat, "x", 1), EPIPE);
}

static void
op_term_string(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
}

static void
op_term_count(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_set_terminator_count(c->chat, 3), 0);
}

static void
op_term_none(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_set_terminator_none(c->chat), 0);
}

static void
op_term_line(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
}

static void
op_push(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_push(c->chat, "X", 1), 0);
	c->want++;
}

static void
op_pause_resume(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	if (which == FX_CLOSE) {
		/* The peer's EOF is being handled: nothing more can be
		 * read. */
		EXPECT_ERRNO(async_chat_resume_reading(c->chat), EPIPE);
	} else if (which == FX_ERROR) {
		/* The frame reported too long is still past the bound:
		 * resuming now would only report it again. */
		EXPECT_ERRNO(async_chat_resume_reading(c->chat), EMSGSIZE);
		ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	} else {
		ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
		ck_assert_int_eq(async_chat_reading_paused(c->chat), 0);
	}
}

static void
op_push_printf(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_push_printf(c->chat, "%c", 'X'), 1);
	c->want++;
}

static void
op_push_framed(struct fx_chan *c, enum fx_cb which)
{
	static const struct async_chat_length_field spec = {.width = 1};

	ck_assert_int_eq(async_chat_push_length_prefixed(c->chat, &spec, "X",
	                     1), 0);
	c->want += 2;
}

static void
op_term_length(struct fx_chan *c, enum fx_cb which)
{
	static const struct async_chat_length_field spec = {.width = 1};

	ck_assert_int_eq(async_chat_set_terminator_length(c->chat, &spec), 0);
}

static void
op_skip_frame(struct fx_chan *c, enum fx_cb which)
{
	ck_assert_int_eq(async_chat_skip_frame(c->chat), 0);
}

static void
no_high_water(struct async_chat *chat, int above, void *arg)
{
	ck_abort_msg("high water passed in a run this short");
}

/* Settings that change nothing in a run this short. */
static void
op_settings(struct fx_chan *c, enum fx_cb which)
{
	static const struct timeval ten = {10, 0};

	ck_assert_int_eq(async_chat_set_idle_timeout(c->chat, &ten), 0);
	ck_assert_int_eq(async_chat_set_write_timeout(c->chat, &ten), 0);
	ck_assert_int_eq(async_chat_set_frame_timeout(c->chat, &ten), 0);
	EXPECT_ERRNO(async_chat_set_high_water(c->chat, 1 << 20, 1 << 21,
	                 NULL), EINVAL);
	ck_assert_int_eq(async_chat_set_high_water(c->chat, 1 << 20, 1 << 21,
	                     no_high_water), 0);
	ck_assert_int_eq(async_chat_set_shutdown_handler(c->chat, NULL), 0);
	ck_assert_int_eq(async_chat_set_frame_policy(c->chat,
	                     ASYNC_CHAT_FRAME_PAUSE), 0);
	ck_assert_int_eq(async_chat_resume_producer(c->chat), 0);
}

static void
op_group(struct fx_chan *c, enum fx_cb which)
{
	struct async_chat_group *g = async_chat_group_new(c->base);

	ck_assert_ptr_nonnull(g);
	ck_assert_int_eq(async_chat_group_add(g, c->chat), 0);
	ck_assert_uint_eq(async_chat_group_count(g), 1);
	ck_assert_int_eq(async_chat_group_push(g, "X", 1), 1);
	c->want++;
	ck_assert_int_eq(async_chat_group_remove(g, c->chat), 0);
	async_chat_group_free(g);
}

static const struct reent_op {
	const char *name;
	fx_hook run;
	unsigned flags;
} reent_ops[] = {
    {"close", op_close, R_CLOSES | R_CLOSES_NOW},
    {"close_when_done", op_close_when_done, R_CLOSES},
    {"discard", do_discard, 0},
    {"term_string", op_term_string, 0},
    {"term_count", op_term_count, 0},
    {"term_none", op_term_none, 0},
    {"term_line", op_term_line, R_KEEPS_FRAMES},
    {"push", op_push, R_PUSHES | R_KEEPS_FRAMES},
    {"pause_resume", op_pause_resume, R_KEEPS_FRAMES},
    {"push_printf", op_push_printf, R_PUSHES | R_KEEPS_FRAMES},
    {"push_length_prefixed", op_push_framed, R_PUSHES | R_KEEPS_FRAMES},
    {"term_length", op_term_length, 0},
    {"skip_frame", op_skip_frame, 0},
    {"settings", op_settings, R_KEEPS_FRAMES},
    {"group", op_group, R_PUSHES | R_KEEPS_FRAMES},
};

/* When the frames "abc" and "def" are checked at the end. */
enum {
	FRAMES_IF_KEPT,       /* if the call keeps framing as it was */
	FRAMES_UNLESS_CLOSED, /* after EOF: unless the call closed */
	FRAMES_NEVER,         /* the frame bound stops them */
};

/* The callbacks, and what makes each of them run. */
static const struct reent_cb {
	enum fx_cb cb;
	int max_frame;    /* a frame bound: handle_error runs */
	const char *push; /* pushed first: handle_drain runs */
	int error;        /* the error handle_error must see */
	int frames;
} reent_cbs[] = {
    {FX_COLLECT, 0, NULL, 0, FRAMES_IF_KEPT},
    {FX_FOUND, 0, NULL, 0, FRAMES_IF_KEPT},
    {FX_CONNECT, 0, NULL, 0, FRAMES_IF_KEPT},
    {FX_CLOSE, 0, NULL, 0, FRAMES_UNLESS_CLOSED},
    {FX_ERROR, 2, NULL, ASYNC_CHAT_ERR_FRAME_TOO_LONG, FRAMES_NEVER},
    {FX_DRAIN, 0, "hello", 0, FRAMES_IF_KEPT},
};

static int
reent_settled(struct fx_chan *c)
{
	if (!c->once.done)
		return 0;
	if (c->gone)
		return 1;
	if (reent_ops[c->op].flags & R_CLOSES)
		return 0;
	if (evbuffer_get_length(c->p.got) < c->want)
		return 0;
	if (reent_cbs[c->where].error != 0)
		return 1;
	return c->f.closes > 0;
}

/* The connect case: the listener's accepted socket is the peer, and it
 * sends the script at once. */
static void
accept_as_peer(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct fx_chan *c = arg;

	(void)l;
	(void)addr;
	(void)addrlen;
	ck_assert_ptr_null(c->p.bev);
	fx_peer_attach(c, fd);
	fx_sends(c, "abc\ndef\n");
	fx_shut(c);
}

START_TEST(test_reentrancy)
{
	const struct reent_cb *r = &reent_cbs[_i / N(reent_ops)];
	const struct reent_op *o = &reent_ops[_i % N(reent_ops)];
	struct fx_chan c;
	int frames;

	fx_init(&c, NULL);
	c.where = _i / N(reent_ops);
	c.op = _i % N(reent_ops);
	fx_once(&c, r->cb, 1, o->run);
	if (r->cb == FX_CONNECT) {
		struct fx_addr a;

		fx_open(&c, FX_UNCONNECTED);
		c.listener = fx_listen(c.base, AF_INET, accept_as_peer, &c);
		a = fx_loopback(AF_INET, fx_listener_port(c.listener));
		ck_assert_int_eq(
		    async_chat_connect(c.chat, FX_SA(&a), a.len), 0);
	} else {
		fx_open(&c, FX_SOCKETPAIR);
	}
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	if (r->max_frame != 0)
		ck_assert_int_eq(
		    async_chat_set_max_frame(c.chat, r->max_frame), 0);
	if (r->push != NULL) {
		ck_assert_int_eq(
		    async_chat_push(c.chat, r->push, strlen(r->push)), 0);
		c.want = strlen(r->push);
	}
	if (r->cb != FX_CONNECT) {
		fx_sends(&c, "abc\ndef\n");
		fx_shut(&c);
	}
	ck_assert_msg(fx_wait(&c, reent_settled, FX_WAIT_MS) == 0,
	    "%s in %s did not settle", o->name, fx_cb_names[r->cb]);
	/* Give a callback that should not run the chance to. */
	fx_settle(c.base);
	ck_assert_int_eq(c.late, 0);
	if (o->flags & R_CLOSES)
		ck_assert_int_eq(c.gone, 1);
	if (o->flags & R_PUSHES) {
		struct evbuffer_ptr at = evbuffer_search(c.p.got, "X", 1, NULL);

		ck_assert_int_ge(at.pos, 0);
	}
	if (r->error != 0) {
		ck_assert_int_ge(c.f.errors, 1);
		ck_assert_int_eq(c.f.last_error, r->error);
	} else {
		ck_assert_int_eq(c.f.errors, 0);
	}
	/* Calls that change nothing about framing leave the frames alone. */
	frames = r->frames == FRAMES_IF_KEPT
	             ? (o->flags & R_KEEPS_FRAMES) != 0
	             : r->frames == FRAMES_UNLESS_CLOSED &&
	                   !(o->flags & R_CLOSES_NOW);
	if (frames) {
		ck_assert_int_eq(c.f.founds, 2);
		ck_assert(tu_frame_is(&c.f, 0, "abc"));
		ck_assert(tu_frame_is(&c.f, 1, "def"));
	}
	fx_end(&c);
}
END_TEST

/*
 * Pause and resume
 */

FX_TEST(test_pause_buffered, every_kind[_i])
{
	fx_once(c, FX_FOUND, 1, do_pause);
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	fx_sends(c, "a\nb\nc\n");
	c->want = 1;
	fx_run(c, fx_until_founds);
	/* One read took all of it: "b\nc\n" waits in the input buffer. */
	ck_assert_uint_eq(fx_input_len(c), 4);
	fx_settle(c->base);
	ck_assert_int_eq(c->f.founds, 1);
	ck_assert_int_eq(c->f.collects, 1);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	/* Pausing twice is harmless. */
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	/* Resume frames what is buffered with no new data arriving. */
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 0);
	c->want = 3;
	fx_run(c, fx_until_founds);
	ck_assert(tu_frame_is(&c->f, 1, "b"));
	ck_assert(tu_frame_is(&c->f, 2, "c"));
	/* Resuming a channel that is not paused is harmless. */
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
}

/* Paused in the middle of a frame: the rest of it, already received,
 * waits; resume finishes the frame where it stopped. */
FX_TEST(test_pause_in_collect, FX_PAIR_SYNC)
{
	static const char *const pieces[] = {"abc", "def\nghi\n"};

	fx_once(c, FX_COLLECT, 1, do_pause);
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	pair_send_chains(c, pieces, 2);
	fx_settle(c->base);
	ck_assert_int_eq(c->f.collects, 1);
	ck_assert_int_eq(c->f.founds, 0);
	ck_assert_uint_eq(fx_input_len(c), 8);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	c->want = 2;
	fx_run(c, fx_until_founds);
	ck_assert(tu_frame_is(&c->f, 0, "abcdef"));
	ck_assert(tu_frame_is(&c->f, 1, "ghi"));
}

/* Pausing inside collect on a count's last byte: the frame has ended, and
 * found_terminator runs as soon as reading resumes, with nothing new
 * arriving. */
static void
pause_on_count_end(struct fx_chan *c, enum fx_cb which)
{
	struct async_chat_terminator t;

	if (which != FX_COLLECT)
		return;
	ck_assert_int_eq(async_chat_get_terminator(c->chat, &t), 0);
	if (!c->done && t.count == 0) {
		c->done = 1;
		ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	}
}

static int
until_paused(struct fx_chan *c)
{
	return c->done;
}

static int
until_frame(struct fx_chan *c)
{
	return c->f.n > 0;
}

FX_TEST(test_pause_on_count_last_byte, FX_SOCKETPAIR)
{
	c->hook = pause_on_count_end;
	ck_assert_int_eq(async_chat_set_terminator_count(c->chat, 4), 0);
	fx_sends(c, "abcd");
	fx_run(c, until_paused);
	/* Paused: the frame is owed, not lost, and not yet reported. */
	ck_assert_int_eq(fx_wait(c, until_frame, 100), -1);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	fx_run(c, until_frame);
	ck_assert(tu_frame_is(&c->f, 0, "abcd"));
}

/* Paused before anything arrives; the peer sends and closes meanwhile. */
FX_TEST(test_pause_eof_socket, socket_kinds[_i])
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	ck_assert_int_eq(async_chat_pause_reading(c->chat), 0);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	fx_sends(c, "a\r\nb\r");
	fx_shut(c);
	fx_settle(c->base);
	ck_assert_int_eq(c->f.collects, 0);
	ck_assert_int_eq(c->f.closes, 0);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	fx_run(c, fx_until_closes);
	ck_assert(tu_frame_is(&c->f, 0, "a"));
	ck_assert(fx_buf_is_str(c->at_close, "b\r"));
	EXPECT_ERRNO(async_chat_resume_reading(c->chat), EPIPE);
}

/* On a bufferevent pair the EOF event itself arrives while the channel is
 * paused: it is handled after resume, held-back bytes first. */
FX_TEST(test_pause_eof_pair, FX_PAIR_SYNC)
{
	fx_once(c, FX_FOUND, 1, do_pause);
	ck_assert_int_eq(async_chat_get_fd(c->chat), -1);
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n", 2), 0);
	fx_send(c, "a\r\nb\r\nc\r", 8);
	fx_shut(c);
	c->want = 1;
	fx_run(c, fx_until_founds);
	fx_settle(c->base);
	ck_assert_int_eq(c->f.founds, 1);
	ck_assert_int_eq(c->f.closes, 0);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	fx_run(c, fx_until_closes);
	ck_assert(tu_frame_is(&c->f, 1, "b"));
	ck_assert(fx_buf_is_str(c->at_close, "c\r"));
	ck_assert_int_eq(c->f.founds, 2);
	EXPECT_ERRNO(async_chat_resume_reading(c->chat), EPIPE);
}

/*
 * The frame bound
 */

#define FLOOD_LEN ((size_t)4 << 20)
#define FLOOD_BOUND 100

struct flood {
	struct event *ev;
	size_t sent;
	int done;
	int blocked; /* the last send found the socket full */
};

static void
flood_writecb(evutil_socket_t fd, short what, void *arg)
{
	static char xs[65536];
	struct flood *fl = arg;
	ssize_t n;

	(void)what;
	memset(xs, 'x', sizeof(xs));
	while (fl->sent < FLOOD_LEN) {
		size_t want = FLOOD_LEN - fl->sent;

		if (want > sizeof(xs))
			want = sizeof(xs);
		n = send(fd, xs, want, MSG_NOSIGNAL);
		if (n < 0) {
			ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
			fl->blocked = 1;
			return;
		}
		fl->blocked = 0;
		fl->sent += (size_t)n;
	}
	n = send(fd, "\n", 1, MSG_NOSIGNAL);
	if (n == 1) {
		fl->done = 1;
		event_del(fl->ev);
	}
}

static int
until_flood_blocked(struct fx_chan *c)
{
	struct flood *fl = c->user;

	return c->f.errors > 0 && fl->blocked;
}

FX_TEST(test_frame_bound_flood, FX_SOCKETPAIR)
{
	struct flood fl;
	size_t sent, buffered;

	memset(&fl, 0, sizeof(fl));
	c->user = &fl;
	fl.ev = event_new(
	    c->base, c->p.fd, EV_WRITE | EV_PERSIST, flood_writecb, &fl);
	ck_assert_ptr_nonnull(fl.ev);
	ck_assert_int_eq(event_add(fl.ev, NULL), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(c->chat), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c->chat, FLOOD_BOUND), 0);
	fx_run(c, until_flood_blocked);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(c->f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert_int_eq(c->paused_at_error, 1);
	ck_assert_int_eq(async_chat_reading_paused(c->chat), 1);
	/* Exactly the bound was collected, and the flood waits in the
	 * kernel, not in the process: at most one read is buffered. */
	ck_assert_uint_eq(evbuffer_get_length(c->f.cur), FLOOD_BOUND);
	ck_assert_int_eq(c->f.founds, 0);
	ck_assert_uint_le(
	    fx_input_len(c), async_chat_get_in_buffer_size(c->chat));
	ck_assert_uint_lt(fl.sent, FLOOD_LEN);
	/* The peer stays blocked: nothing more is read while paused. */
	sent = fl.sent;
	buffered = fx_input_len(c);
	fx_settle(c->base);
	ck_assert_uint_eq(fl.sent, sent);
	ck_assert_uint_eq(fx_input_len(c), buffered);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_uint_eq(evbuffer_get_length(c->f.cur), FLOOD_BOUND);
	/* A frame of exactly the bound is allowed. */
	ck_assert_int_eq(async_chat_set_max_frame(c->chat, FLOOD_LEN), 0);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	c->want = 1;
	fx_run(c, fx_until_founds);
	ck_assert_int_eq(fl.done, 1);
	ck_assert_uint_eq(c->f.len[0], FLOOD_LEN);
	ck_assert(all_bytes(c->f.frame[0], FLOOD_LEN, 'x'));
	ck_assert_int_eq(c->f.errors, 1);
	event_free(fl.ev);
}

/* A count larger than the bound fails at the bound; message mode
 * counts too. */
START_TEST(test_frame_bound_count_message)
{
	struct fx_chan c;

	fx_init(&c, NULL);
	c.h.collect_incoming_data = NULL;
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_eq(async_chat_set_terminator_count(c.chat, 10), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 4), 0);
	fx_sends(&c, "0123456789");
	fx_run(&c, fx_until_errors);
	ck_assert_int_eq(c.f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert(fx_buf_is_str(c.at_error, "0123"));
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 1);
	ck_assert_int_eq(async_chat_set_max_frame(c.chat, 0), 0);
	ck_assert_int_eq(async_chat_resume_reading(c.chat), 0);
	c.want = 1;
	fx_run(&c, fx_until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "0123456789"));
	ck_assert_int_eq(c.f.errors, 1);
	fx_end(&c);
}
END_TEST

/* The bound reached by the held-back bytes handed over at EOF: the EOF
 * waits until the bound is raised and reading resumed. */
FX_TEST(test_frame_bound_at_eof, every_kind[_i])
{
	ck_assert_int_eq(async_chat_set_terminator(c->chat, "\r\n\r\n", 4), 0);
	ck_assert_int_eq(async_chat_set_max_frame(c->chat, 3), 0);
	fx_sends(c, "ab\r\n\r");
	fx_shut(c);
	fx_run(c, fx_until_errors);
	ck_assert_int_eq(c->f.last_error, ASYNC_CHAT_ERR_FRAME_TOO_LONG);
	ck_assert(fx_buf_is_str(c->at_error, "ab\r"));
	fx_settle(c->base);
	ck_assert_int_eq(c->f.closes, 0);
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(async_chat_set_max_frame(c->chat, 5), 0);
	ck_assert_int_eq(async_chat_resume_reading(c->chat), 0);
	fx_run(c, fx_until_closes);
	ck_assert(fx_buf_is_str(c->at_close, "ab\r\n\r"));
	ck_assert_int_eq(c->f.errors, 1);
	ck_assert_int_eq(c->f.founds, 0);
}

/*
 * The listener
 */

struct acc {
	struct async_chat_listener *l;
	int accepts;
	evutil_socket_t fds[4];
	int free_inside;
};

static void
acc_cb(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	struct acc *a = arg;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;

	ck_assert_ptr_eq(l, a->l);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(addrlen, (int)sizeof(*sin));
	ck_assert_int_eq(sin->sin_family, AF_INET);
	ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
	/* The socket is handed over non-blocking. */
	ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	ck_assert_int_lt(a->accepts, 4);
	a->fds[a->accepts++] = fd;
	if (a->free_inside) {
		async_chat_listener_free(l);
		a->l = NULL;
	}
}

static int
until_accepts(void *arg)
{
	return ((struct acc *)arg)->accepts > 0;
}

static int
until_two_accepts(void *arg)
{
	return ((struct acc *)arg)->accepts >= 2;
}

static void
acc_listen(struct acc *a, struct event_base *base)
{
	memset(a, 0, sizeof(*a));
	a->l = fx_listen(base, AF_INET, acc_cb, a);
}

static void
acc_end(struct acc *a)
{
	int i;

	for (i = 0; i < a->accepts; i++)
		if (a->fds[i] >= 0)
			evutil_closesocket(a->fds[i]);
	async_chat_listener_free(a->l);
}

START_TEST(test_listener_accepts)
{
	struct event_base *base = fx_base();
	struct acc a;
	struct fx_chan c;
	evutil_socket_t cli;
	int port;

	acc_listen(&a, base);
	ck_assert_int_ge(async_chat_listener_get_fd(a.l), 0);
	port = fx_listener_port(a.l);
	ck_assert_int_gt(port, 0);
	cli = fx_tcp_client(AF_INET, port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 1);
	/* The accepted socket makes a working channel. */
	fx_init(&c, base);
	c.chat = async_chat_new(base, a.fds[0], &c.h, &c);
	ck_assert_ptr_nonnull(c.chat);
	ck_assert_int_eq(async_chat_get_fd(c.chat), a.fds[0]);
	a.fds[0] = -1; /* the channel owns it now */
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	fx_peer_attach(&c, cli);
	fx_sends(&c, "hi\n");
	c.want = 1;
	fx_run(&c, fx_until_founds);
	ck_assert(tu_frame_is(&c.f, 0, "hi"));
	ck_assert_int_eq(async_chat_push(c.chat, "yo", 2), 0);
	fx_run_got(&c, 2);
	ck_assert(fx_got(&c, "yo"));
	fx_end(&c);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

START_TEST(test_listener_pause_resume)
{
	struct event_base *base = fx_base();
	struct acc a;
	evutil_socket_t cli[2];
	int port;

	acc_listen(&a, base);
	port = fx_listener_port(a.l);
	cli[0] = fx_tcp_client(AF_INET, port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(async_chat_listener_pause(a.l), 0);
	/* Connected in the backlog, but not accepted while paused. */
	cli[1] = fx_tcp_client(AF_INET, port);
	fx_settle(base);
	ck_assert_int_eq(a.accepts, 1);
	ck_assert_int_eq(async_chat_listener_resume(a.l), 0);
	ck_assert_int_eq(
	    tu_run_until(base, until_two_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 2);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

START_TEST(test_listener_free_in_accept)
{
	struct event_base *base = fx_base();
	struct acc a;
	evutil_socket_t cli[2];
	int port;

	acc_listen(&a, base);
	a.free_inside = 1;
	port = fx_listener_port(a.l);
	/* Two pending connections: the listener is freed while libevent
	 * would go on accepting the second. */
	cli[0] = fx_tcp_client(AF_INET, port);
	cli[1] = fx_tcp_client(AF_INET, port);
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_ptr_null(a.l);
	fx_settle(base);
	ck_assert_int_eq(a.accepts, 1);
	evutil_closesocket(cli[0]);
	evutil_closesocket(cli[1]);
	acc_end(&a);
	fx_base_free(base);
}
END_TEST

static void
acc_never(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg)
{
	(void)l;
	(void)fd;
	(void)addr;
	(void)addrlen;
	(void)arg;
	ck_abort_msg("no connection expected");
}

START_TEST(test_listener_bad_args)
{
	struct event_base *base = fx_base();
	struct fx_addr a = fx_loopback(AF_INET, 0);
	struct sockaddr *sa = FX_SA(&a);
	int len = a.len;
	struct async_chat_listener *l;

	EXPECT_ERRNO(
	    async_chat_listener_new(NULL, sa, len, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new(base, NULL, len, -1, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new(base, sa, 0, -1, acc_never, NULL), EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new(base, sa, len, -1, NULL, NULL), EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new(base, sa, len, -2, acc_never, NULL),
	    EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_fd(NULL, 0, acc_never, NULL), EINVAL);
	EXPECT_ERRNO(
	    async_chat_listener_new_fd(base, -1, acc_never, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_new_fd(base, 0, NULL, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_set_error_handler(NULL, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_pause(NULL), EINVAL);
	EXPECT_ERRNO(async_chat_listener_resume(NULL), EINVAL);
	ck_assert_int_eq(async_chat_listener_get_fd(NULL), -1);
	EXPECT_ERRNO(async_chat_listener_get_address(NULL, sa, &len), EINVAL);
	async_chat_listener_free(NULL);

	l = fx_listen(base, AF_INET, acc_never, NULL);
	ck_assert_int_eq(async_chat_listener_set_error_handler(l, NULL), 0);
	EXPECT_ERRNO(async_chat_listener_get_address(l, NULL, &len), EINVAL);
	EXPECT_ERRNO(async_chat_listener_get_address(l, sa, NULL), EINVAL);
	len = 0;
	EXPECT_ERRNO(async_chat_listener_get_address(l, sa, &len), EINVAL);
	async_chat_listener_free(l);
	fx_base_free(base);
}
END_TEST

START_TEST(test_listener_addr_in_use)
{
	struct event_base *base = fx_base();
	struct async_chat_listener *l;
	struct fx_addr a;

	l = fx_listen(base, AF_INET, acc_never, NULL);
	a = fx_loopback(AF_INET, fx_listener_port(l));
	/* SO_REUSEADDR does not allow a second listener on the port. */
	EXPECT_ERRNO(async_chat_listener_new(
	                 base, FX_SA(&a), a.len, -1, acc_never, NULL),
	    EADDRINUSE);
	async_chat_listener_free(l);
	fx_base_free(base);
}
END_TEST

/* A socket that is already bound and listening. */
START_TEST(test_listener_new_fd)
{
	struct event_base *base = fx_base();
	struct fx_addr sa = fx_loopback(AF_INET, 0);
	socklen_t slen = sizeof(sa.ss);
	struct acc a;
	evutil_socket_t fd, cli;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, FX_SA(&sa), (socklen_t)sa.len), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	ck_assert_int_eq(getsockname(fd, FX_SA(&sa), &slen), 0);
	memset(&a, 0, sizeof(a));
	a.l = async_chat_listener_new_fd(base, fd, acc_cb, &a);
	ck_assert_ptr_nonnull(a.l);
	ck_assert_int_eq(async_chat_listener_get_fd(a.l), fd);
	cli = fx_tcp_client(
	    AF_INET, ntohs(((struct sockaddr_in *)&sa.ss)->sin_port));
	ck_assert_int_eq(tu_run_until(base, until_accepts, &a, FX_WAIT_MS), 0);
	ck_assert_int_eq(a.accepts, 1);
	evutil_closesocket(cli);
	acc_end(&a); /* closes fd */
	fx_base_free(base);
}
END_TEST

/*
 * Constructors and accessors
 */

static void
quiet_log(int severity, const char *msg)
{
	(void)severity;
	(void)msg;
}

START_TEST(test_new_bad_args)
{
	struct event_base *base = fx_base();
	evutil_socket_t sv[2];
	int closed_fd;

	tu_socketpair(sv);
	EXPECT_ERRNO(async_chat_new(NULL, sv[0], &fx_handlers, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_new(base, sv[0], NULL, NULL), EINVAL);
	EXPECT_ERRNO(async_chat_new(base, -2, &fx_handlers, NULL), EINVAL);
	EXPECT_ERRNO(
	    async_chat_new_bufferevent(NULL, &fx_handlers, NULL), EINVAL);
	/* A descriptor that is not open is refused. */
	closed_fd = open("/dev/null", O_RDONLY);
	ck_assert_int_ge(closed_fd, 0);
	close(closed_fd);
	event_set_log_callback(quiet_log); /* libevent warns about it */
	EXPECT_ERRNO(
	    async_chat_new(base, closed_fd, &fx_handlers, NULL), EBADF);
	event_set_log_callback(NULL);
	/* On failure fd is not closed: it still carries data. */
	ck_assert_int_ne(fcntl(sv[0], F_GETFD), -1);
	ck_assert_int_eq(send(sv[0], "x", 1, MSG_NOSIGNAL), 1);
	evutil_closesocket(sv[0]);
	evutil_closesocket(sv[1]);
	/* NULL is ignored. */
	async_chat_close(NULL);
	fx_base_free(base);
}
END_TEST

static void
user_readcb(struct bufferevent *bev, void *arg)
{
	(void)bev;
	(void)arg;
}

/* A failed adoption leaves the bufferevent and its callbacks to the
 * caller, who frees it. */
START_TEST(test_new_bufferevent_failure)
{
	struct event_base *base = fx_base();
	struct bufferevent *pair[2];
	bufferevent_data_cb r = NULL, w = NULL;
	bufferevent_event_cb e = NULL;
	void *arg = NULL;
	int mine;

	ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
	bufferevent_setcb(pair[0], user_readcb, NULL, NULL, &mine);
	EXPECT_ERRNO(async_chat_new_bufferevent(pair[0], NULL, NULL), EINVAL);
	bufferevent_getcb(pair[0], &r, &w, &e, &arg);
	ck_assert(r == user_readcb);
	ck_assert(w == NULL);
	ck_assert(e == NULL);
	ck_assert_ptr_eq(arg, &mine);
	bufferevent_free(pair[0]);
	bufferevent_free(pair[1]);
	fx_base_free(base);
}
END_TEST

START_TEST(test_accessors)
{
	struct event_base *base = fx_base();
	struct fx_chan c, d;
	int other;

	fx_init(&c, base);
	fx_open(&c, FX_SOCKETPAIR);
	ck_assert_int_ge(async_chat_get_fd(c.chat), 0);
	ck_assert_int_ne(async_chat_get_fd(c.chat), c.p.fd);
	ck_assert_ptr_nonnull(async_chat_get_bufferevent(c.chat));
	ck_assert_int_eq(bufferevent_getfd(async_chat_get_bufferevent(c.chat)),
	    async_chat_get_fd(c.chat));
	ck_assert_ptr_eq(async_chat_get_arg(c.chat), &c);
	ck_assert_int_eq(async_chat_connected(c.chat), 1);
	ck_assert_int_eq(async_chat_reading_paused(c.chat), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(c.chat),
	    ASYNC_CHAT_DEFAULT_BUFFER_SIZE);
	ck_assert_uint_eq(async_chat_output_pending(c.chat), 0);
	ck_assert_int_eq(async_chat_dns_error(c.chat), 0);
	ck_assert_int_eq(async_chat_matched_terminator(c.chat), 0);
	/* Handlers get the new arg. */
	ck_assert_int_eq(async_chat_set_arg(c.chat, &other), 0);
	ck_assert_ptr_eq(async_chat_get_arg(c.chat), &other);
	ck_assert_int_eq(async_chat_set_arg(c.chat, &c), 0);
	ck_assert_int_eq(async_chat_set_terminator_line(c.chat), 0);
	fx_sends(&c, "x\n");
	c.want = 1;
	fx_run(&c, fx_until_founds);

	ck_assert_ptr_null(async_chat_get_bufferevent(NULL));
	ck_assert_int_eq(async_chat_get_fd(NULL), -1);
	ck_assert_ptr_null(async_chat_get_arg(NULL));
	EXPECT_ERRNO(async_chat_set_arg(NULL, &c), EINVAL);
	EXPECT_ERRNO(async_chat_connected(NULL), EINVAL);
	ck_assert_uint_eq(async_chat_output_pending(NULL), 0);
	ck_assert_uint_eq(async_chat_get_out_buffer_size(NULL), 0);
	fx_end(&c);

	/* An adopted bufferevent pair end: no socket, connected. */
	fx_init(&d, base);
	fx_open(&d, FX_PAIR_SYNC);
	ck_assert_ptr_nonnull(async_chat_get_bufferevent(d.chat));
	ck_assert_ptr_eq(
	    bufferevent_pair_get_partner(async_chat_get_bufferevent(d.chat)),
	    d.p.bev);
	ck_assert_int_eq(async_chat_get_fd(d.chat), -1);
	ck_assert_int_eq(async_chat_connected(d.chat), 1);
	fx_end(&d);
	fx_base_free(base);
}
END_TEST

START_TEST(test_strerror)
{
	static const int codes[] = {ASYNC_CHAT_ERR_FRAME_TOO_LONG,
	    ASYNC_CHAT_ERR_PRODUCER, ASYNC_CHAT_ERR_DNS, ASYNC_CHAT_ERR_UNKNOWN,
	    ASYNC_CHAT_ERR_NOMEM};
	const char *unknown = async_chat_strerror(-1000);
	size_t i, j;

	ck_assert_ptr_nonnull(unknown);
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = async_chat_strerror(codes[i]);

		ck_assert_ptr_nonnull(s);
		ck_assert_uint_gt(strlen(s), 0);
		ck_assert_str_ne(s, unknown);
		for (j = 0; j < i; j++)
			ck_assert_str_ne(s, async_chat_strerror(codes[j]));
	}
	ck_assert_str_eq(async_chat_strerror(ECONNRESET), strerror(ECONNRESET));
	ck_assert_str_eq(
	    async_chat_strerror(ECONNREFUSED), strerror(ECONNREFUSED));
	ck_assert_str_eq(async_chat_strerror(EPIPE), strerror(EPIPE));
	ck_assert_ptr_nonnull(async_chat_strerror(0));
	ck_assert_ptr_nonnull(async_chat_strerror(100000));
}
END_TEST

START_TEST(test_version)
{
	ck_assert_str_eq(async_chat_version(), ASYNC_CHAT_VERSION);
	ck_assert_uint_eq(
	    async_chat_version_number(), ASYNC_CHAT_VERSION_NUMBER);
	ck_assert_uint_eq(ASYNC_CHAT_VERSION_NUMBER,
	    ASYNC_CHAT_VERSION_MAJOR * 10000 + ASYNC_CHAT_VERSION_MINOR * 100 +
	        ASYNC_CHAT_VERSION_PATCH);
}
END_TEST

static void
input_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_collect_mode, 0, N(every_kind));
	tcase_add_loop_test(tc, test_read_up_to_in_buffer_size, 0,
	    N(socket_kinds));
	tcase_add_loop_test(tc, test_pushes_skip_the_output, 0,
	    N(every_kind));
	tcase_add_loop_test(tc, test_answers_leave_early, 0, N(socket_kinds));
	tcase_add_loop_test(tc, test_answers_wait_when_busy, 0,
	    N(socket_kinds));
	tcase_add_loop_test(tc, test_big_push_direct, 0, N(socket_kinds));
	tcase_add_test(tc, test_big_push_direct_partial);
	tcase_add_test(tc, test_message_mode);
	tcase_add_test(tc, test_terminator_change_same_read);
	tcase_add_test(tc, test_discard_in_collect);
	tcase_add_test(tc, test_discard_in_collect_at_eof);
	tcase_add_loop_test(tc, test_in_buffer_size_one, 0, N(socket_kinds));
	tcase_add_loop_test(tc, test_count_remaining, 0, N(socket_kinds));
	tcase_add_test(tc, test_get_terminator_kinds);
	tcase_add_loop_test(tc, test_matched_terminator, 0, N(matched_cases));
}

static void
eof_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_eof_held_back_collect, 0, N(every_kind));
	tcase_add_test(tc, test_eof_held_back_message);
	tcase_add_test(tc, test_eof_default_flushes_then_closes);
	tcase_add_loop_test(tc, test_half_closed_peer, 0, N(every_kind));
}

static void
error_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_reset_mid_frame, 0, N(reset_cases));
	tcase_add_loop_test(tc, test_connect_refused, 0, N(families));
	tcase_add_test(tc, test_connect_hostname_localhost);
	tcase_add_test(tc, test_connect_dns_failure);
	tcase_add_test(tc, test_close_while_resolving);
	tcase_add_test(tc, test_connect_bad_args);
}

static void
reentrancy_tests(TCase *tc)
{
	tcase_add_loop_test(
	    tc, test_reentrancy, 0, N(reent_cbs) * N(reent_ops));
}

static void
flow_tests(TCase *tc)
{
	tcase_add_loop_test(tc, test_pause_buffered, 0, N(every_kind));
	tcase_add_test(tc, test_pause_in_collect);
	tcase_add_test(tc, test_pause_on_count_last_byte);
	tcase_add_test(tc, test_pause_in_collect_at_eof);
	tcase_add_loop_test(tc, test_pause_eof_socket, 0, N(socket_kinds));
	tcase_add_test(tc, test_pause_eof_pair);
	tcase_add_test(tc, test_frame_bound_flood);
	tcase_add_test(tc, test_frame_bound_count_message);
	tcase_add_loop_test(tc, test_frame_bound_at_eof, 0, N(every_kind));
}

static void
listener_tests(TCase *tc)
{
	tcase_add_test(tc, test_listener_accepts);
	tcase_add_test(tc, test_listener_pause_resume);
	tcase_add_test(tc, test_listener_free_in_accept);
	tcase_add_test(tc, test_listener_bad_args);
	tcase_add_test(tc, test_listener_addr_in_use);
	tcase_add_test(tc, test_listener_new_fd);
}

static void
api_tests(TCase *tc)
{
	tcase_add_test(tc, test_new_bad_args);
	tcase_add_test(tc, test_new_bufferevent_failure);
	tcase_add_test(tc, test_accessors);
	tcase_add_test(tc, test_strerror);
	tcase_add_test(tc, test_version);
}

static const struct fx_tcase tcases[] = {
    {"input", 30, input_tests},
    {"eof", 30, eof_tests},
    {"errors", 30, error_tests},
    {"reentrancy", 30, reentrancy_tests},
    {"flow", 30, flow_tests},
    {"listener", 30, listener_tests},
    {"api", 0, api_tests},
    {NULL, 0, NULL},
};

const struct fx_suite fx_suite = {"channel", tcases, NULL};
