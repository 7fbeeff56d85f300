/*
 * check_largefile.c - async_chat_push_file() with offsets past 2 GiB and
 * 4 GiB.  A sparse file a little over 5 GiB long (ftruncate, so it takes
 * almost no disk) holds known bytes written with pwrite at offsets across
 * 2^31 and 2^32, beyond 4 GiB and at its very end; ranges of it are
 * pushed through a channel on a socket pair and every byte that arrives is
 * compared with the file's content.  On a 32-bit system this holds only
 * when the library and libevent use a 64-bit off_t (configure's
 * AC_SYS_LARGEFILE); the 32-bit CI job runs it.  There size_t is 32-bit
 * too, and libevent 2.1's evbuffer_add_file() refuses a segment that ends
 * past SIZE_MAX (4 GiB - 1): the ranges past 4 GiB hold the library to its
 * contract, that any range of the file that push_file accepts is sent.
 *
 * A filesystem that cannot hold such a file (TMPDIR) makes the suite skip
 * (exit 77), or fail with ASYNCHAT_STRICT_TESTS=1.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "testutil.h"

#define GIB ((int64_t)1 << 30)
/* Odd on purpose: the last range ends where no page or block does. */
#define FILE_SIZE (5 * GIB + 12345)
/* A safety net only: a range arrives in well under a second. */
#define WAIT_MS 30000

/* The known bytes of the file; every other byte is 0. */
static const struct mark {
	int64_t offset;
	const char *bytes;
} marks[] = {
	{ 2 * GIB - 5, "across 2 GiB" },
	{ 4 * GIB - 6, "across 4 GiB" },
	{ 4 * GIB + 4093, "past 4 GiB, across a page" },
	{ 4 * GIB + 200000, "far past 4 GiB" },
	{ 5 * GIB - 3, "across 5 GiB" },
	{ FILE_SIZE - 12, "end of file." },
};
#define N_MARKS (sizeof(marks) / sizeof(marks[0]))

/* The file's bytes [offset, offset + len) into out. */
static void
expected(int64_t offset, size_t len, unsigned char *out)
{
	size_t i;

	memset(out, 0, len);
	for (i = 0; i < N_MARKS; i++) {
		int64_t mlen = (int64_t)strlen(marks[i].bytes);
		int64_t lo = marks[i].offset > offset ? marks[i].offset : offset;
		int64_t hi = marks[i].offset + mlen < offset + (int64_t)len ?
		    marks[i].offset + mlen :
		    offset + (int64_t)len;

		if (lo < hi)
			memcpy(out + (lo - offset),
			    marks[i].bytes + (lo - marks[i].offset),
			    (size_t)(hi - lo));
	}
}

/* The sparse file, made in a fresh directory under TMPDIR and unlinked at
 * once: nothing is left behind, however the test ends.  Returns the fd,
 * or -1 with why filled in. */
static int
make_big_file(char *why, size_t whylen)
{
	const char *tmpdir = getenv("TMPDIR");
	char dir[4096], path[4200];
	size_t i;
	int fd, err;

	snprintf(dir, sizeof(dir), "%s/asynchat-largefile-XXXXXX",
	    tmpdir != NULL && *tmpdir != '\0' ? tmpdir : "/tmp");
	if (mkdtemp(dir) == NULL) {
		snprintf(why, whylen, "mkdtemp %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/sparse", dir);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
	err = errno;
	if (fd >= 0)
		unlink(path);
	rmdir(dir);
	if (fd < 0) {
		snprintf(why, whylen, "open %s: %s", path, strerror(err));
		return -1;
	}
	if (ftruncate(fd, (off_t)FILE_SIZE) < 0) {
		snprintf(why, whylen,
		    "ftruncate to %" PRId64 " bytes in %s: %s",
		    (int64_t)FILE_SIZE, dir, strerror(errno));
		close(fd);
		return -1;
	}
	for (i = 0; i < N_MARKS; i++) {
		size_t len = strlen(marks[i].bytes);
		ssize_t n = pwrite(fd, marks[i].bytes, len,
		    (off_t)marks[i].offset);

		if (n != (ssize_t)len) {
			snprintf(why, whylen,
			    "pwrite at %" PRId64 " in %s: %s",
			    marks[i].offset, dir,
			    n < 0 ? strerror(errno) : "short write");
			close(fd);
			return -1;
		}
	}
	return fd;
}

static int
big_file(void)
{
	char why[4400];
	int fd = make_big_file(why, sizeof(why));

	ck_assert_msg(fd >= 0, "%s", why);
	return fd;
}

/*
 * The channel on one end of a socket pair; the other end is a plain
 * bufferevent that keeps everything it reads.
 */
struct world {
	struct event_base *base;
	struct async_chat *chat;
	struct bufferevent *peer;
	struct evbuffer *got;
	int peer_eof, peer_errors, chat_errors, chat_freed;
	int last_error;
};

static void
chat_error(struct async_chat *chat, int err, void *arg)
{
	struct world *w = arg;

	w->chat_errors++;
	w->last_error = err;
	async_chat_close(chat);
}

static void
chat_free(struct async_chat *chat, void *arg)
{
	struct world *w = arg;

	ck_assert_ptr_eq(chat, w->chat);
	w->chat_freed++;
	w->chat = NULL;
}

static const struct async_chat_handlers handlers = {
	.handle_error = chat_error,
	.handle_free = chat_free,
};

static void
peer_read(struct bufferevent *bev, void *arg)
{
	struct world *w = arg;

	ck_assert_int_eq(evbuffer_add_buffer(w->got,
			     bufferevent_get_input(bev)),
	    0);
}

static void
peer_event(struct bufferevent *bev, short what, void *arg)
{
	struct world *w = arg;

	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		peer_read(bev, arg);
	if (what & BEV_EVENT_EOF)
		w->peer_eof++;
	else if (what & BEV_EVENT_ERROR)
		w->peer_errors++;
}

static void
world_init(struct world *w)
{
	evutil_socket_t sv[2];

	memset(w, 0, sizeof(*w));
	w->base = event_base_new();
	ck_assert_ptr_nonnull(w->base);
	w->got = evbuffer_new();
	ck_assert_ptr_nonnull(w->got);
	tu_socketpair(sv);
	w->chat = async_chat_new(w->base, sv[0], &handlers, w);
	ck_assert_ptr_nonnull(w->chat);
	w->peer = bufferevent_socket_new(w->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(w->peer);
	bufferevent_setcb(w->peer, peer_read, NULL, peer_event, w);
	ck_assert_int_eq(bufferevent_enable(w->peer, EV_READ), 0);
}

static int
peer_done(void *arg)
{
	struct world *w = arg;

	return (w->peer_eof > 0 || w->peer_errors > 0) && w->chat_freed;
}

/* Close when done, run until the peer has the EOF, check that nothing
 * failed on either side. */
static void
world_finish(struct world *w)
{
	ck_assert_int_eq(async_chat_close_when_done(w->chat), 0);
	ck_assert_msg(tu_run_until(w->base, peer_done, w, WAIT_MS) == 0,
	    "no EOF at the peer after %d ms (%zu bytes arrived)", WAIT_MS,
	    evbuffer_get_length(w->got));
	ck_assert_msg(w->chat_errors == 0, "the channel failed: %d (%s) after "
	    "%zu bytes", w->last_error, async_chat_strerror(w->last_error),
	    evbuffer_get_length(w->got));
	ck_assert_int_eq(w->peer_errors, 0);
	ck_assert_int_eq(w->chat_freed, 1);
}

static void
world_free(struct world *w)
{
	if (w->chat != NULL)
		async_chat_close(w->chat);
	bufferevent_free(w->peer);
	evbuffer_free(w->got);
	event_base_free(w->base);
}

/* got holds, from its start at *pos, the file's bytes [offset, offset +
 * len); *pos moves past them.  The first differing byte is named. */
static void
check_range(struct evbuffer *got, size_t *pos, int64_t offset, size_t len)
{
	unsigned char *want = malloc(len > 0 ? len : 1);
	unsigned char *have;
	size_t i;

	ck_assert_ptr_nonnull(want);
	ck_assert_msg(evbuffer_get_length(got) >= *pos + len,
	    "%zu bytes arrived, want %zu for the range at %" PRId64,
	    evbuffer_get_length(got), *pos + len, offset);
	expected(offset, len, want);
	have = evbuffer_pullup(got, -1) + *pos;
	if (memcmp(have, want, len) != 0) {
		for (i = 0; i < len && have[i] == want[i]; i++)
			;
		ck_abort_msg("file byte %" PRId64 " arrived as %#x, want %#x "
			     "(range at %" PRId64 ", %zu bytes)",
		    offset + (int64_t)i, have[i], want[i], offset, len);
	}
	*pos += len;
	free(want);
}

/* Ranges, each pushed alone: across 2^31, across 2^32, well past 4 GiB
 * (longer than the socket buffer, so the sends are partial), to the end
 * of file with length -1, and the last byte alone. */
static const struct range {
	int64_t offset, length;
} ranges[] = {
	{ 2 * GIB - 256, 512 },
	{ 4 * GIB - 256, 512 },
	{ 4 * GIB + 4000, 300000 },
	{ FILE_SIZE - 70000, -1 },
	{ FILE_SIZE - 1, 1 },
};
#define N_RANGES (sizeof(ranges) / sizeof(ranges[0]))

START_TEST(test_push_range)
{
	const struct range *r = &ranges[_i];
	size_t len = (size_t)(r->length == -1 ? FILE_SIZE - r->offset :
						 r->length);
	struct world w;
	size_t pos = 0;
	int fd = big_file();

	world_init(&w);
	ck_assert_int_eq(async_chat_push_file(w.chat, fd, (ev_off_t)r->offset,
			     (ev_off_t)r->length),
	    0);
	world_finish(&w);
	ck_assert_uint_eq(evbuffer_get_length(w.got), len);
	check_range(w.got, &pos, r->offset, len);
	world_free(&w);
}
END_TEST

/* Several ranges of the file and plain pushes, in one channel's queue:
 * they arrive in order, each range whole. */
START_TEST(test_push_ranges_in_order)
{
	struct world w;
	size_t i, pos = 0;
	int fd = big_file();

	world_init(&w);
	for (i = 0; i < N_RANGES; i++) {
		int dupfd = dup(fd);

		ck_assert_int_ge(dupfd, 0);
		ck_assert_int_eq(async_chat_push_file(w.chat, dupfd,
				     (ev_off_t)ranges[i].offset,
				     (ev_off_t)ranges[i].length),
		    0);
		ck_assert_int_eq(async_chat_push(w.chat, "|", 1), 0);
	}
	close(fd);
	world_finish(&w);
	for (i = 0; i < N_RANGES; i++) {
		int64_t len = ranges[i].length == -1 ?
		    FILE_SIZE - ranges[i].offset :
		    ranges[i].length;

		check_range(w.got, &pos, ranges[i].offset, (size_t)len);
		ck_assert_msg(evbuffer_get_length(w.got) > pos &&
			evbuffer_pullup(w.got, -1)[pos] == '|',
		    "no '|' after range %zu", i);
		pos++;
	}
	ck_assert_uint_eq(evbuffer_get_length(w.got), pos);
	world_free(&w);
}
END_TEST

/* The argument checks compare 64-bit offsets with the size of a file over
 * 4 GiB: a range that passes the end is refused, one that ends at the end
 * is not, and an offset at the end sends nothing. */
START_TEST(test_bounds_past_4gib)
{
	struct world w;
	int fd = big_file();

	world_init(&w);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)FILE_SIZE + 1, -1),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)FILE_SIZE - 5, 6),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)4 * GIB, (ev_off_t)2 * GIB),
	    -1);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)FILE_SIZE, -1),
	    0);
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)FILE_SIZE, 0),
	    0);
	ck_assert_int_eq(async_chat_push_file(w.chat, dup(fd),
			     (ev_off_t)FILE_SIZE - 5, 5),
	    0);
	close(fd);
	world_finish(&w);
	ck_assert_uint_eq(evbuffer_get_length(w.got), 5);
	ck_assert_int_eq(memcmp(evbuffer_pullup(w.got, -1), "file.", 5), 0);
	world_free(&w);
}
END_TEST

static Suite *
largefile_suite(void)
{
	Suite *s = suite_create("largefile");
	TCase *tc = tcase_create("push_file");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_push_range, 0, (int)N_RANGES);
	tcase_add_test(tc, test_push_ranges_in_order);
	tcase_add_test(tc, test_bounds_past_4gib);
	suite_add_tcase(s, tc);
	return s;
}

static int
strict_tests(void)
{
	const char *s = getenv("ASYNCHAT_STRICT_TESTS");

	return s != NULL && *s != '\0' && strcmp(s, "0") != 0;
}

int
main(void)
{
	SRunner *sr;
	char why[4400];
	int failed, fd;

	/* Without a 64-bit off_t nothing here can be expressed: that is a
	 * build failure, never a skip. */
	printf("check_largefile: sizeof(off_t) = %zu, sizeof(ev_off_t) = %zu, "
	       "sizeof(void *) = %zu\n",
	    sizeof(off_t), sizeof(ev_off_t), sizeof(void *));
	if (sizeof(off_t) != 8 || sizeof(ev_off_t) != 8) {
		printf("FAIL: off_t and ev_off_t must be 64-bit "
		       "(configure's AC_SYS_LARGEFILE, libevent's build)\n");
		return EXIT_FAILURE;
	}
	fd = make_big_file(why, sizeof(why));
	if (fd < 0) {
		if (strict_tests()) {
			printf("FAIL: no sparse file of %" PRId64 " bytes: %s "
			       "(ASYNCHAT_STRICT_TESTS=1: a skip is a "
			       "failure)\n",
			    (int64_t)FILE_SIZE, why);
			return EXIT_FAILURE;
		}
		printf("SKIP: no sparse file of %" PRId64 " bytes: %s (set "
		       "TMPDIR to a filesystem that has sparse files)\n",
		    (int64_t)FILE_SIZE, why);
		return 77;
	}
	close(fd);
	fflush(stdout);

	sr = srunner_create(largefile_suite());
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
