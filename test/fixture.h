/*
 * fixture.h - the shared setup of the channel suites (check_channel,
 * check_output, check_faults): a recording application, a peer on the far
 * end of a socket pair, a bufferevent pair or loopback TCP, bounded waits,
 * EXPECT_ERRNO and the suite runner (test/suite_main.c).
 */
#ifndef ASYNCHAT_FIXTURE_H_INCLUDED_
#define ASYNCHAT_FIXTURE_H_INCLUDED_

#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "asynchat.h"
#include "testutil.h"

/* Bound on every wait; a wait ends as soon as its condition holds. */
#define FX_WAIT_MS 10000
/* Long enough for a pending read or accept to be served if it could be. */
#define FX_SETTLE_MS 50

int fx_int_failed_(long rc);
int fx_ptr_failed_(const void *p);

/* 1 if rc is its type's failure value: -1, or NULL for a pointer. */
/* clang-format off */
#define FX_FAILED_(rc)                                                         \
	_Generic((rc), int: fx_int_failed_, long: fx_int_failed_,              \
	    default: fx_ptr_failed_)(rc)
/* clang-format on */

/* call fails: it returns -1 (an integer) or NULL (a pointer), and errno is
 * e.  errno is cleared first, so a stale value cannot pass. */
#define EXPECT_ERRNO(call, e)                                                  \
	do {                                                                   \
		errno = 0;                                                     \
		ck_assert_msg(FX_FAILED_(call), "%s did not fail", #call);     \
		ck_assert_msg(errno == (e), "%s: errno %d (%s), want %s",      \
		    #call, errno, strerror(errno), #e);                        \
	} while (0)

/*
 * The suite runner.  Each suite file defines fx_suite; the shared main()
 * ignores SIGPIPE (a peer that has gone gives EPIPE), runs before() if
 * set, runs every tcase with Check's runner (CK_VERBOSITY picks the
 * output) and exits non-zero if a test failed.
 */
struct fx_tcase {
	const char *name;
	int timeout;            /* seconds; 0 keeps Check's default */
	void (*add)(TCase *tc); /* tcase_add_test() and the like */
};

struct fx_suite {
	const char *name;
	const struct fx_tcase *tcases; /* ends with a NULL name */
	void (*before)(void);          /* optional */
};

extern const struct fx_suite fx_suite;

/*
 * The recording application.  Its handlers check that they run for the
 * channel they belong to and never after handle_free, record into f
 * (frames, counts, the last error), then call hook and the once action.
 */
enum fx_cb {
	FX_COLLECT,
	FX_FOUND,
	FX_CONNECT,
	FX_CLOSE,
	FX_ERROR,
	FX_DRAIN,
	FX_CB_N
};

extern const char *const fx_cb_names[FX_CB_N];

/* The far end: a bufferevent on the other socket, or the partner of a
 * bufferevent pair.  It keeps what it reads in got unless on_read takes
 * it.  fd is the socket (-1 for a pair) for raw send, shutdown and reset. */
struct fx_peer {
	struct bufferevent *bev;
	evutil_socket_t fd;
	struct evbuffer *got;
	int eof, eof_what, err;
	void (*on_read)(struct fx_peer *p, struct evbuffer *in);
	void *user;
};

struct fx_chan;
typedef void (*fx_hook)(struct fx_chan *c, enum fx_cb which);

struct fx_chan {
	struct event_base *base;
	int own_base;                         /* fx_end() frees base */
	struct async_chat_listener *listener; /* FX_TCP4, FX_TCP6 */
	int family;                           /* of the TCP listener */
	struct async_chat *chat;      /* kept after close, for the checks */
	struct async_chat_handlers h; /* fx_handlers; a test may change it
	                               * before fx_open() */
	struct tu_frames f;
	struct fx_peer p;
	int gone;                  /* handle_free has run */
	int late;                  /* callbacks that ran after it */
	struct evbuffer *at_close; /* frame bytes handle_close saw */
	struct evbuffer *at_error; /* and handle_error */
	int paused_at_error;
	int matched[8]; /* matched_terminator in each found */
	size_t nmatched;
	int count_only;     /* collect counts the bytes without
	                     * keeping them (a flood) */
	uint64_t collected; /* bytes collected, when count_only */
	fx_hook hook;       /* runs in every callback but free */
	struct {            /* runs fn once, in the nth call of cb */
		enum fx_cb cb;
		int nth;
		fx_hook fn;
		int done;
	} once;
	void *user;
	/* For the waits and the hooks of a test. */
	size_t want;
	int want_drains;
	int where, op, done, state;
};

extern const struct async_chat_handlers fx_handlers;

/*
 * A test on a channel of its own, as libevent's regress tests declare
 * TT_NEED_BASE | TT_NEED_SOCKETPAIR: the body runs with c open over kind
 * (an expression, which may use the loop index _i), and c is ended after
 * it, which checks that handle_free ran once and nothing ran after it.
 * On a machine without the kind's loopback address (::1) the body is
 * skipped.
 */
#define FX_TEST(name, kind)                                                    \
	static void name##_body(struct fx_chan *c, int _i);                    \
	START_TEST(name)                                                       \
	{                                                                      \
		struct fx_chan chan_;                                          \
                                                                               \
		if (fx_start(&chan_, (kind)) == 0)                             \
			name##_body(&chan_, _i);                               \
		fx_end(&chan_);                                                \
	}                                                                      \
	END_TEST                                                               \
	static void name##_body(struct fx_chan *c, int _i)

/* Run fn once, inside the nth call of callback cb (counted from the
 * channel's start), unless the channel has gone by then. */
void fx_once(struct fx_chan *c, enum fx_cb cb, int nth, fx_hook fn);

/* Where the channel runs. */
enum fx_kind {
	FX_UNCONNECTED, /* fd -1, for async_chat_connect(); no peer */
	FX_SOCKETPAIR,  /* an AF_UNIX socket pair */
	FX_PAIR,        /* a bufferevent pair, callbacks deferred */
	FX_PAIR_SYNC,   /* a bufferevent pair, callbacks at once */
	FX_TCP4,        /* accepted over 127.0.0.1 */
	FX_TCP6,        /* accepted over ::1 */
	FX_KIND_N
};

extern const char *const fx_kind_names[FX_KIND_N];

struct event_base *fx_base(void);
/* Frees a base after one non-blocking turn, which runs what a closed pair
 * end deferred (libevent drops it, with a reference, otherwise). */
void fx_base_free(struct event_base *base);

/* Set up c on base (NULL: a base of its own) with no channel yet. */
void fx_init(struct fx_chan *c, struct event_base *base);
/* Make c's channel, and its peer, over kind.  1 for FX_TCP6 when the
 * machine has no ::1 (the test then has nothing to run). */
int fx_open(struct fx_chan *c, enum fx_kind kind);
/* fx_init(c, NULL) and fx_open(c, kind). */
int fx_start(struct fx_chan *c, enum fx_kind kind);
/* Close the channel if it is still open and check that handle_free ran
 * exactly once and nothing ran after it; free the peer, and the base if
 * it is c's. */
void fx_end(struct fx_chan *c);

/* The peer. */
void fx_peer_attach(struct fx_chan *c, evutil_socket_t fd);
void fx_peer_attach_bev(struct fx_chan *c, struct bufferevent *bev);
/* Small writes only: on a socket they must fit in its buffer at once. */
void fx_send(struct fx_chan *c, const void *data, size_t len);
void fx_sends(struct fx_chan *c, const char *s);
/* The peer's EOF to the channel: shutdown(SHUT_WR), or on a pair the
 * partner's BEV_FINISHED flush. */
void fx_shut(struct fx_chan *c);
/* Close the peer's socket with an RST instead of a FIN. */
void fx_reset(struct fx_chan *c);
/* Close the peer now. */
void fx_peer_close(struct fx_chan *c);
/* 1 if the peer received exactly the len bytes at s. */
int fx_got_is(const struct fx_chan *c, const void *s, size_t len);
int fx_got(const struct fx_chan *c, const char *s);

#define ck_assert_got(c, s)                                                    \
	ck_assert_msg(fx_got((c), (s)), "peer got \"%.*s\", want \"%s\"",      \
	    (int)evbuffer_get_length((c)->p.got),                              \
	    (const char *)evbuffer_pullup((c)->p.got, -1), (s))

/* 1 if b holds exactly the len bytes at s. */
int fx_buf_is(struct evbuffer *b, const void *s, size_t len);
int fx_buf_is_str(struct evbuffer *b, const char *s);
/* Bytes waiting in the channel's bufferevent input. */
size_t fx_input_len(struct fx_chan *c);

/* Waits.  fx_run() fails the test if cond is not true within FX_WAIT_MS;
 * fx_wait() returns 0 or -1 like tu_run_until(). */
typedef int (*fx_cond)(struct fx_chan *c);
void fx_run(struct fx_chan *c, fx_cond cond);
int fx_wait(struct fx_chan *c, fx_cond cond, int timeout_ms);
/* Run the loop for FX_SETTLE_MS: time for what should not happen. */
void fx_settle(struct event_base *base);

int fx_until_founds(struct fx_chan *c);    /* founds >= want */
int fx_until_collected(struct fx_chan *c); /* frame in progress >= want */
int fx_until_incoming(struct fx_chan *c);  /* incoming buffer >= want */
int fx_until_closes(struct fx_chan *c);
int fx_until_errors(struct fx_chan *c);
int fx_until_connects(struct fx_chan *c);
int fx_until_drains(struct fx_chan *c); /* drains >= want_drains */
int fx_until_gone(struct fx_chan *c);
int fx_until_chat(struct fx_chan *c);     /* a channel was made */
int fx_until_got(struct fx_chan *c);      /* peer has >= want bytes */
int fx_until_peer_eof(struct fx_chan *c); /* EOF or an error */
int fx_until_eof(struct fx_chan *c);      /* EOF */

/* Wait until the peer holds n bytes (fails the test on timeout). */
void fx_run_got(struct fx_chan *c, size_t n);

/* Every call on a closed channel still on the callback stack fails with
 * ENOTCONN or reports "nothing", and nothing runs a callback. */
void fx_check_closed(struct fx_chan *c);

/*
 * Loopback TCP.  family is AF_INET (127.0.0.1) or AF_INET6 (::1).
 */
struct fx_addr {
	struct sockaddr_storage ss;
	int len;
};

/* 0, or -1 if the machine has no such loopback address. */
int fx_have_family(int family);
struct fx_addr fx_loopback(int family, int port);
#define FX_SA(a) ((struct sockaddr *)&(a)->ss)
struct async_chat_listener *fx_listen(
    struct event_base *base, int family, async_chat_accept_fn fn, void *arg);
int fx_listener_port(struct async_chat_listener *l);
/* An accept callback: the accepted socket becomes the channel of the
 * struct fx_chan arg, whose family the address must have. */
void fx_accept(struct async_chat_listener *l, evutil_socket_t fd,
    const struct sockaddr *addr, int addrlen, void *arg);
/* A blocking connect: over loopback it completes in the listener's
 * backlog whether or not the loop has accepted yet. */
evutil_socket_t fx_tcp_client(int family, int port);
/* A bound socket that does not listen: a connect to *port is refused
 * while it stays open. */
evutil_socket_t fx_refusing_port(int family, int *port);

/* An unlinked temporary file holding s, and whether fd is still it. */
struct stat;
int fx_temp_file(const char *s, struct stat *st);
int fx_fd_is_file(int fd, const struct stat *st);
int fx_fd_is_closed(int fd);

#endif /* ASYNCHAT_FIXTURE_H_INCLUDED_ */
