/*
 * asynchat.h - libasynchat, Python's asynchat on libevent bufferevents.
 *
 * This is the whole public API of libasynchat and its reference manual.
 *
 * MODEL
 *
 * An async_chat channel wraps one libevent bufferevent (a socket, a TLS
 * bufferevent, a filter or one end of a pair) inside the application's own
 * event_base.  Incoming bytes are split by the current *terminator*:
 *
 *   - a byte string (any bytes, NUL included, 1 to ASYNC_CHAT_TERMINATOR_MAX
 *     bytes): the bytes before the first occurrence go to
 *     collect_incoming_data, the terminator itself is consumed, then
 *     found_terminator runs.  A tail of the input that is a proper prefix of
 *     the terminator is held back until more data arrives, so a terminator
 *     split across reads is still found;
 *   - a count n > 0: the next n bytes go to collect_incoming_data (in one or
 *     more calls), then found_terminator runs;
 *   - none (also count 0 or an empty string): every byte goes to
 *     collect_incoming_data and found_terminator never runs;
 *   - line mode (beyond asynchat): a frame ends at LF, and a CR just before
 *     the LF is part of the terminator, so "a\r\n" and "a\n" both give "a";
 *   - alternatives (beyond asynchat): a set of byte strings; the match that
 *     ends first in the stream wins, of matches ending on the same byte
 *     the longest, and of equal alternatives the first.  async_chat_matched_terminator() tells which.
 *
 * A terminator set inside any callback applies to the very next unscanned
 * byte, including bytes that arrived in the same read (an HTTP server
 * switches from "\r\n\r\n" to a Content-Length count this way).  Inside
 * collect_incoming_data that is the first byte not yet handed to it: the
 * framer's look-ahead does not count, but a frame whose last byte was
 * just collected (a count reached, or the bytes before a terminator
 * already found) still ends under the old terminator, and
 * found_terminator runs for it first.  So where a terminator set inside
 * collect_incoming_data takes effect depends on where the collect calls
 * split the frame, as in CPython; set terminators in found_terminator
 * for frames that are the same under every chunking.  In line mode a CR
 * taken by the previous frame is not part of the next terminator: a lone
 * "\n" then ends an empty frame (matched 1).  Only the concatenation of a
 * frame's collected bytes is the contract; where the collect calls split
 * a frame is unspecified, and as long as terminators change only outside
 * collect_incoming_data the frames are identical whatever the chunking of
 * the input.  collect_incoming_data is never
 * called with zero bytes.
 *
 * The framing itself is the framer's (see "The framer" below): a channel
 * is one client of it, and an application with other I/O frames bytes
 * with exactly the same rules.
 *
 * If the collect_incoming_data handler is NULL the channel runs in message
 * mode: it keeps the frame's bytes in its own evbuffer (copying runs of up
 * to in_buffer_size bytes, so that the chain the next read fills stays in
 * the input; moving libevent's chains for longer ones), and
 * found_terminator takes
 * them from async_chat_incoming().  Under the none terminator there is no
 * frame end, as in asynchat: the bytes wait in that buffer until the
 * application takes them (in handle_close, say); to stream, use collect
 * mode.
 *
 * Output is a strict FIFO of pushed data, producers and markers.  Producers
 * are pulled only while the bufferevent's output buffer holds fewer than
 * out_buffer_size bytes, so a producer over a huge source never sits in
 * memory whole.
 *
 * I/O ON THE CHANNEL'S OWN SOCKETS
 *
 * Pushed bytes wait in the channel until its outermost call or callback
 * returns, and then move on in one piece: so many pushes inside one
 * callback cost one write, and no push makes libevent run a callback.
 * From a loop callback (a read, a write, a timer, a post), on a socket
 * given to (or made by) async_chat_new(), they are written to
 * the socket at once with one system call when the bufferevent's output
 * holds nothing older; what the socket does not take goes to the output,
 * where libevent writes it.  Elsewhere (a pair, TLS, a filter, a call
 * made outside the channel's callbacks) they are added to the output.
 * Bytes pushed inside a callback are therefore not yet in the
 * bufferevent's output buffer while the callback runs;
 * async_chat_output_pending() counts them.  One exception: while the
 * channel frames one read of such a socket and no other event of the
 * loop waits to run, the answers staged so far are written as soon as
 * 2 KiB of them have gathered after a frame, so that the peer has them
 * (and can send more) while the rest of the read is framed; with other
 * events waiting, the answers to one read leave together at its end.
 * There, a push of more than 4 KiB with nothing staged before it is
 * written from the caller's memory at once: what the socket takes is
 * never copied.
 *
 * After libevent's first read from such a socket, the channel reads it
 * itself: one read call takes up to in_buffer_size bytes (libevent 2.1
 * reads at most 4,096 a call, after asking the kernel how many wait).  A
 * read timeout or a rate limit set on the bufferevent hands reading back
 * to libevent, which honours them: set before the first bytes arrive,
 * libevent keeps reading; set later, from the channel's next read on.
 * Pause and resume reading with async_chat_pause_reading(), not with
 * bufferevent_enable() or bufferevent_disable() on EV_READ.
 *
 * ERRORS
 *
 * Functions that can fail return 0 (or a pointer) on success and -1 (or
 * NULL) with errno set on failure; bad arguments never crash.  Failures
 * that happen later, in the event loop, reach the handle_error handler
 * with an error code: a positive errno value from the socket (ECONNRESET,
 * ECONNREFUSED, EPIPE...) or one of the negative ASYNC_CHAT_ERR_* codes
 * below.  async_chat_strerror() names both.
 *
 * As in any libevent program, writing to a socket whose peer has gone
 * raises SIGPIPE: ignore it (signal(SIGPIPE, SIG_IGN)) and the failure
 * reaches handle_error as EPIPE instead.
 *
 * RE-ENTRANCY AND LIFETIME
 *
 * Every function of this API may be called from inside every callback,
 * including async_chat_close() on the channel whose callback is running.
 * No callback of a channel runs after async_chat_close() returns (except
 * that handle_free runs inside it); the channel's memory is released when
 * the outermost callback on the stack returns.  After a channel is closed,
 * calls on it that are still on the callback stack fail with ENOTCONN,
 * except the plain queries: async_chat_get_arg(), async_chat_set_arg(),
 * async_chat_matched_terminator(), async_chat_reading_paused(),
 * async_chat_dns_error() and the buffer size getters still answer,
 * async_chat_connected() says 0, async_chat_get_fd() -1,
 * async_chat_get_bufferevent() NULL and async_chat_output_pending() 0.
 *
 * Nothing in libasynchat is global and it starts no threads.  A channel
 * and its event_base must be used from one thread at a time; other
 * threads reach a channel through a handle (see THREADS below).
 *
 * ABI: HOW THE PUBLIC STRUCTS GROW
 *
 * The soname changes only with an incompatible change, and NEWS says so.
 * Within one soname a program built against an older header keeps working:
 *
 *   - struct async_chat_handlers, struct async_chat_producer_ops and
 *     struct async_chat_terminator keep their 0.1.0 layout: the library
 *     never reads or writes past it.  Callbacks added later are set with
 *     functions of their own, per channel.
 *   - Structs added since 0.2 end in reserved members.  Zero them (a
 *     designated initializer or memset() does); a later version may give
 *     them a meaning in which zero keeps today's behaviour.  This version
 *     rejects a non-zero reserved member with EINVAL, so a program that
 *     needs the newer meaning fails instead of running wrong.
 *   - Enums and the ASYNC_CHAT_ERR_* codes may gain values: treat a value
 *     you do not know as "something else" (an unknown error is an error).
 *   - Functions are added, never removed or changed.
 *
 * DIFFERENCES FROM PYTHON'S ASYNCHAT
 *
 *   - At EOF the bytes held back as a possible terminator prefix are given
 *     to collect_incoming_data before handle_close; CPython drops them.
 *   - The default handle_close flushes queued output before closing;
 *     CPython's closes at once.
 *   - A count set inside collect_incoming_data is kept; CPython overwrites
 *     it with the old count less the bytes collected.
 *   - Pushing after close_when_done() fails with EPIPE instead of queueing
 *     data that would never be sent.
 *   - Closing is immediate and final: no handler runs on a closed channel
 *     (asyncore could call handlers on closed dispatchers).
 *   - discard_buffers() keeps a queued close; CPython drops it with the
 *     queue.
 *   - A producer's more() appends to an evbuffer instead of returning
 *     bytes.
 *   - Additions: line mode, alternative terminators, length-field frames,
 *     a frame length bound with policies, timeouts and frame deadlines,
 *     a high-water mark, deferred producers, pause/resume of reading, an
 *     output-drained handler, half-close of the sending side with its
 *     completion, zero-copy message mode for long frames and zero-copy
 *     pushes, and the framer on its own for any I/O.
 */
#ifndef ASYNCHAT_H_INCLUDED_
#define ASYNCHAT_H_INCLUDED_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/util.h>

struct evdns_base;

#ifdef __cplusplus
extern "C" {
#endif

/** @name Version
 * The version of the header; async_chat_version() gives the version of the
 * library actually linked. */
/**@{*/
#define ASYNC_CHAT_VERSION_MAJOR 0
#define ASYNC_CHAT_VERSION_MINOR 2
#define ASYNC_CHAT_VERSION_PATCH 0
#define ASYNC_CHAT_VERSION "0.2.0"
/** MAJOR * 10000 + MINOR * 100 + PATCH, for comparisons in #if. */
#define ASYNC_CHAT_VERSION_NUMBER                                              \
	(ASYNC_CHAT_VERSION_MAJOR * 10000 + ASYNC_CHAT_VERSION_MINOR * 100 +   \
	    ASYNC_CHAT_VERSION_PATCH)
/**@}*/

/** Default in_buffer_size and out_buffer_size, as in CPython 3.11. */
#define ASYNC_CHAT_DEFAULT_BUFFER_SIZE 65536
/** Largest accepted in_buffer_size, out_buffer_size and simple producer
 * piece size (1 GiB); larger values fail with EINVAL. */
#define ASYNC_CHAT_BUFFER_SIZE_MAX ((size_t)1 << 30)
/** Longest byte-string terminator, in bytes. */
#define ASYNC_CHAT_TERMINATOR_MAX 65536
/** Most alternatives in async_chat_set_terminators(). */
#define ASYNC_CHAT_ALTERNATIVES_MAX 16

/** @name Error codes passed to handle_error
 * Positive codes are errno values from the socket or system; these negative
 * codes are libasynchat's own. */
/**@{*/
/** A frame grew past the bound set with async_chat_set_max_frame().
 * What follows is the frame policy's (async_chat_set_frame_policy()); by
 * default reading is suspended and the bytes past the bound stay unread. */
#define ASYNC_CHAT_ERR_FRAME_TOO_LONG (-1)
/** A producer's more() returned -1 (the producer has been freed; the rest
 * of the queue goes on), or a file pushed with async_chat_push_file()
 * ended before its range did (sent with sendfile, the channel cannot send
 * anything more; read with pread, the rest of the queue goes on). */
#define ASYNC_CHAT_ERR_PRODUCER (-2)
/** The host name given to async_chat_connect_hostname() did not resolve;
 * async_chat_dns_error() gives the resolver's EVUTIL_EAI_* code. */
#define ASYNC_CHAT_ERR_DNS (-3)
/** The peer or the bufferevent reported an error without an errno value
 * (for example a TLS error; see bufferevent_get_openssl_error()). */
#define ASYNC_CHAT_ERR_UNKNOWN (-4)
/** Memory ran out in libasynchat while handling events; the channel
 * cannot go on.  (libevent reports its own failure to grow a buffer as the
 * errno value ENOMEM.) */
#define ASYNC_CHAT_ERR_NOMEM (-5)
/** A length-field header is invalid (see struct async_chat_length_field).
 * Reading has been suspended; the header stays unread, so setting another
 * terminator frames it again, and nothing after it has been taken.  Since
 * 0.2. */
#define ASYNC_CHAT_ERR_LENGTH (-6)
/** No byte was read for the idle timeout (async_chat_set_idle_timeout()).
 * The channel goes on: the timeout is armed again.  Since 0.2. */
#define ASYNC_CHAT_ERR_IDLE_TIMEOUT (-7)
/** Output was pending and none of it was written for the write timeout
 * (async_chat_set_write_timeout()).  The timeout is armed again.  Since
 * 0.2. */
#define ASYNC_CHAT_ERR_WRITE_TIMEOUT (-8)
/** The current frame did not end within the frame deadline of its first
 * byte (async_chat_set_frame_timeout()).  Reading has been suspended;
 * async_chat_resume_reading() goes on and starts the deadline again.
 * Since 0.2. */
#define ASYNC_CHAT_ERR_FRAME_TIMEOUT (-9)
/**@}*/

/** A producer's more() returns this to say "nothing yet": the channel
 * stops pulling it, and sends what is queued before it, until
 * async_chat_resume_producer() (since 0.2). */
#define ASYNC_CHAT_PRODUCER_DEFERRED 1

/** An opaque channel: one bufferevent, its framer and its output queue. */
struct async_chat;
/** An opaque accepting dispatcher (a listening socket). */
struct async_chat_listener;

/**
 * The callbacks of a channel.  One const struct can be shared by every
 * channel of a server; each channel carries its own arg.  Every member may
 * be NULL; each says what NULL means.
 */
struct async_chat_handlers {
	/** Called with the next bytes of the current frame (len > 0).  data
	 * points into the input buffer's own memory and is valid only
	 * during the call.  NULL selects message mode: the bytes are kept
	 * in the channel's evbuffer, see async_chat_incoming(). */
	void (*collect_incoming_data)(struct async_chat *chat,
	    const char *data, size_t len, void *arg);
	/** Called when the terminator has been found (and consumed), or the
	 * count reached.  NULL: frames end silently. */
	void (*found_terminator)(struct async_chat *chat, void *arg);
	/** Called when an outgoing connection has been made.  NULL: nothing. */
	void (*handle_connect)(struct async_chat *chat, void *arg);
	/** Called once when the peer has closed its sending side (EOF), after
	 * every byte received has been collected (held-back bytes included).
	 * The channel may still send.  NULL: async_chat_close_when_done(), so
	 * queued output is flushed and then the channel closes. */
	void (*handle_close)(struct async_chat *chat, void *arg);
	/** Called when an error ends or stops the channel: err is a positive
	 * errno value or an ASYNC_CHAT_ERR_* code.  After a socket error the
	 * channel cannot send or receive and the handler should close it.
	 * NULL: async_chat_close(). */
	void (*handle_error)(struct async_chat *chat, int err, void *arg);
	/** Called when the output queue becomes empty: every pushed byte has
	 * been handed to the bufferevent's transport and no producer is
	 * left.  Used for flow control with async_chat_output_pending().
	 * NULL: nothing. */
	void (*handle_drain)(struct async_chat *chat, void *arg);
	/** Called exactly once when the channel is closed, whatever closed it
	 * (async_chat_close(), close_when_done() completing, a default
	 * handler), so the application can release arg.  Calls on the
	 * channel inside it fail with ENOTCONN, except the queries that
	 * answer after close (see RE-ENTRANCY AND LIFETIME).  NULL: nothing. */
	void (*handle_free)(struct async_chat *chat, void *arg);
};

/**
 * A producer: a source of output pulled piece by piece.
 */
struct async_chat_producer_ops {
	/** Append the next piece (about size_hint bytes; any size is
	 * allowed) to out.  Append nothing to say the producer is
	 * exhausted.  Return 0, or -1 on failure: the channel then frees
	 * the producer and calls handle_error with ASYNC_CHAT_ERR_PRODUCER,
	 * or ASYNC_CHAT_PRODUCER_DEFERRED (since 0.2) when it has nothing
	 * yet (a slow backend): what it appended is sent, and more() is not
	 * called again until async_chat_resume_producer().  Required. */
	int (*more)(void *ctx, struct evbuffer *out, size_t size_hint);
	/** Called once when the channel is done with the producer:
	 * exhausted, failed, discarded or the channel closed.  Any API call
	 * may be made in it (on a closing channel they fail with
	 * ENOTCONN).  Optional. */
	void (*free)(void *ctx);
};

/** What async_chat_get_terminator() reports. */
enum async_chat_terminator_kind {
	ASYNC_CHAT_TERM_NONE = 0, /**< every byte is collected */
	ASYNC_CHAT_TERM_STRING,   /**< a byte string */
	ASYNC_CHAT_TERM_COUNT,    /**< a byte count */
	ASYNC_CHAT_TERM_LINE,     /**< LF with an optional CR before it */
	ASYNC_CHAT_TERM_ANY,      /**< a set of alternative byte strings */
	ASYNC_CHAT_TERM_LENGTH    /**< a length-field header (since 0.2) */
};

/**
 * A length-field frame format (since 0.2), as Netty's
 * LengthFieldBasedFrameDecoder and tokio-util's LengthDelimitedCodec
 * define it.  A frame is a header, then a body:
 *
 *     | offset bytes | length field | body: value + adjust bytes |
 *     '--------- header ----------'
 *
 * The header is offset bytes, then the field: width bytes (1, 2, 3, 4 or
 * 8) in big-endian (network) order or little-endian order, or, with width
 * 0, an unsigned LEB128 varint of 1 to 10 bytes (protobuf's framing).  The
 * body is value + adjust bytes: adjust says what the value counts (0: the
 * body alone; -(offset + width): the whole frame, header included).  The
 * first strip bytes of the frame are dropped and the rest is delivered as
 * the frame's bytes; strip = offset + width delivers the body alone, and
 * so does ASYNC_CHAT_STRIP_HEADER whatever the header's length (the only
 * way with a varint, whose length varies).
 *
 * These are errors (ASYNC_CHAT_ERR_LENGTH on a channel,
 * ASYNC_CHAT_FRAMER_LENGTH_ERROR from a framer), found as soon as the
 * header is complete, before any byte after it is taken: value + adjust
 * below 0 or above UINT64_MAX - header length, strip beyond the end of the
 * frame, a varint longer than 10 bytes or above UINT64_MAX.
 *
 * Zero the whole struct before filling it (see "ABI" above): a
 * designated initializer does.  { .width = 4, .strip = 4 } is a 4-byte
 * big-endian body length, delivered without the header.
 */
struct async_chat_length_field {
	/** Bytes of the header before the field, 0 to
	 * ASYNC_CHAT_TERMINATOR_MAX. */
	size_t offset;
	/** 1, 2, 3, 4 or 8: the field's size; 0: an LEB128 varint. */
	unsigned width;
	/** Non-zero: the field is little-endian.  Must be 0 for a varint. */
	unsigned little_endian;
	/** Added to the field's value to give the body's length. */
	int64_t adjust;
	/** Bytes dropped from the front of each frame before delivery, 0 to
	 * the frame's length, or ASYNC_CHAT_STRIP_HEADER. */
	uint64_t strip;
	/** Must be zero. */
	uint64_t reserved[4];
};

/** struct async_chat_length_field's strip: drop the whole header,
 * whatever its length. */
#define ASYNC_CHAT_STRIP_HEADER UINT64_MAX

/** A description of the current terminator. */
struct async_chat_terminator {
	enum async_chat_terminator_kind kind;
	/** TERM_STRING: the bytes (owned by the channel, valid until the
	 * terminator is next set) and their length.  TERM_LENGTH: a const
	 * struct async_chat_length_field * (likewise owned) and its size.
	 * NULL and 0 otherwise. */
	const void *bytes;
	size_t len;
	/** TERM_COUNT: the bytes still missing.  TERM_LENGTH: the body bytes
	 * still missing once the header is complete, 0 before.  0
	 * otherwise. */
	uint64_t count;
	/** TERM_ANY: the number of alternatives; TERM_LINE: 2. 0 otherwise. */
	size_t alternatives;
};

/** The library's version string, e.g. "0.2.0". */
const char *async_chat_version(void);
/** The library's version as ASYNC_CHAT_VERSION_NUMBER computes it. */
unsigned long async_chat_version_number(void);

/** A static string describing err (an errno value or ASYNC_CHAT_ERR_*). */
const char *async_chat_strerror(int err);

/*
 * Channels
 */

/**
 * Create a channel on a connected socket, or on no socket yet (fd -1) for
 * async_chat_connect() or async_chat_connect_hostname().
 *
 * The channel takes ownership of fd (it is made non-blocking and closed
 * when the channel closes).  Reading starts at once with no terminator
 * set (every byte is collected) until one is set.
 *
 * @param base the event_base that runs the channel
 * @param fd a connected stream socket, or -1
 * @param handlers the callbacks; must outlive the channel
 * @param arg passed to every handler
 * @return the channel, or NULL with errno EINVAL (base or handlers NULL,
 *   fd < -1), EBADF (fd cannot be made non-blocking) or ENOMEM.  On failure
 *   fd is not closed.
 */
struct async_chat *async_chat_new(struct event_base *base, evutil_socket_t fd,
    const struct async_chat_handlers *handlers, void *arg);

/**
 * Create a channel on an existing bufferevent: TLS (libevent_openssl), a
 * filter, or one end of a bufferevent_pair.
 *
 * On success the channel owns bev: it replaces bev's callbacks, watermarks
 * and single read/write limits, enables reading and writing, and frees bev
 * when it closes.  On failure bev is still the caller's (with no
 * callbacks set if bufferevent_enable() failed).
 *
 * @return the channel, or NULL with errno EINVAL (bev or handlers NULL) or
 *   ENOMEM.
 */
struct async_chat *async_chat_new_bufferevent(struct bufferevent *bev,
    const struct async_chat_handlers *handlers, void *arg);

/**
 * Start connecting a channel made with fd -1 to an address; handle_connect
 * runs when it succeeds, handle_error (e.g. ECONNREFUSED) when it fails.
 * Data pushed before the connection is made is sent once it is.
 *
 * @return 0, or -1 with errno EINVAL (NULL or bad address), ENOTCONN
 *   (closed), EISCONN (already connected), EALREADY (a connect is under
 *   way), or the connect(2) error that was known at once.
 */
int async_chat_connect(struct async_chat *chat, const struct sockaddr *addr,
    int addrlen);

/**
 * Resolve host and connect to it like async_chat_connect().  With a NULL
 * dns_base the lookup blocks in getaddrinfo(); with an evdns_base it is
 * asynchronous.  A name that does not resolve gives handle_error with
 * ASYNC_CHAT_ERR_DNS, always from the event loop, never inside this call.
 *
 * @param dns_base an evdns_base (event2/dns.h), or NULL
 * @param family AF_INET, AF_INET6 or AF_UNSPEC
 * @return 0, or -1 with errno EINVAL (NULL host, family not AF_INET,
 *   AF_INET6 or AF_UNSPEC, port outside 1..65535), ENOTCONN, EISCONN or
 *   EALREADY.
 */
int async_chat_connect_hostname(struct async_chat *chat,
    struct evdns_base *dns_base,
    int family, const char *host, int port);

/** The resolver's EVUTIL_EAI_* code after ASYNC_CHAT_ERR_DNS, else 0. */
int async_chat_dns_error(const struct async_chat *chat);

/**
 * Close the channel now: discard unsent output and unread input, free the
 * producers (their free callbacks run), run the cleanups of references no
 * longer queued, close the connection (the partner of a bufferevent pair
 * gets an EOF; if the partner defers its callbacks, let the loop run once
 * before event_base_free(), as for any deferred libevent callback), run
 * handle_free, and release the channel.  A channel made by
 * async_chat_new() has closed its socket when this returns; an adopted
 * bufferevent is freed as libevent frees any, which for libevent 2.1
 * finishes on the next loop turn or in event_base_free().  No work of
 * the channel's stays scheduled: event_base_free() may follow at once.
 * libevent sends no TLS close_notify when it frees a TLS bufferevent; an
 * application that wants one calls SSL_shutdown() in handle_free.
 *
 * Safe inside any callback, including this channel's own: the memory is
 * then released when the outermost callback returns, and no further
 * callback runs.  NULL is ignored, and so is a second close on the
 * callback stack of the first; from application code a closed channel is
 * gone, as after free().
 */
void async_chat_close(struct async_chat *chat);

/**
 * Queue a close: everything queued before it is sent, then the channel
 * closes as with async_chat_close().  Reading goes on meanwhile.  Later
 * pushes, even empty ones, fail with EPIPE.  A second call does nothing;
 * after async_chat_shutdown_when_done() the close follows the shutdown.
 *
 * @return 0, or -1 with errno EINVAL (NULL), ENOTCONN (closed) or ENOMEM.
 */
int async_chat_close_when_done(struct async_chat *chat);

/**
 * Queue a half-close: once everything queued before it is sent, the
 * channel shuts down its sending side (shutdown(SHUT_WR) on a socket; an
 * EOF to the partner of a bufferevent pair) and keeps reading.  Later
 * pushes fail with EPIPE.  A second call does nothing and returns 0, even
 * after close_when_done().  On a TLS bufferevent this is a TCP half-close
 * of the underlying socket, without a TLS close_notify.
 *
 * @return 0, or -1 with errno EINVAL, ENOTCONN, EPIPE (close_when_done()
 *   was called) or ENOMEM.
 */
int async_chat_shutdown_when_done(struct async_chat *chat);

/**
 * Emergencies only: drop the unread and held-back input, the message-mode
 * frame buffer, unsent output and every queued producer (their free
 * callbacks run).  The terminator and a queued close or shutdown stay.
 * Inside collect_incoming_data the rest of the current frame and its
 * terminator are dropped too, and found_terminator does not run for it.
 *
 * @return 0, or -1 with errno EINVAL or ENOTCONN.
 */
int async_chat_discard_buffers(struct async_chat *chat);

/*
 * Terminators
 */

/**
 * Set a byte-string terminator (copied).  len 0 is the none terminator.
 * @return 0, or -1 with errno EINVAL (NULL channel, NULL term with len > 0,
 *   len > ASYNC_CHAT_TERMINATOR_MAX; the terminator is unchanged), ENOTCONN
 *   or ENOMEM (the channel is left with the none terminator).
 */
int async_chat_set_terminator(struct async_chat *chat, const void *term,
    size_t len);

/** Set a count terminator; 0 is the none terminator.
 * @return 0, or -1 with errno EINVAL or ENOTCONN. */
int async_chat_set_terminator_count(struct async_chat *chat, uint64_t count);

/** Collect every byte; found_terminator never runs.
 * @return 0, or -1 with errno EINVAL or ENOTCONN. */
int async_chat_set_terminator_none(struct async_chat *chat);

/** Line mode: frames end at "\n" or "\r\n" (matched terminator 1 or 0).
 * @return 0, or -1 with errno EINVAL or ENOTCONN. */
int async_chat_set_terminator_line(struct async_chat *chat);

/**
 * Set alternative byte-string terminators (copied): the match that ends
 * first in the stream wins; of matches ending on the same byte the longest
 * wins (so "\r\n" beats "\n").  found_terminator can ask which matched with
 * async_chat_matched_terminator().
 *
 * @param terms n pointers to the alternatives
 * @param lens their lengths, each 1 to ASYNC_CHAT_TERMINATOR_MAX
 * @param n 1 to ASYNC_CHAT_ALTERNATIVES_MAX
 * @return 0, or -1 with errno EINVAL (bad arguments; the terminator is
 *   unchanged), ENOTCONN or ENOMEM (the channel is left with the none
 *   terminator).
 */
int async_chat_set_terminators(struct async_chat *chat,
    const void *const *terms, const size_t *lens, size_t n);

/**
 * Frame by a length-field header (since 0.2): each frame is the header and
 * the body it announces, delivered less its first spec->strip bytes, and
 * found_terminator runs at its end.  spec is copied.  The bound (see
 * async_chat_set_max_frame()) is checked on the delivered length as soon
 * as the header is complete; an invalid header reaches handle_error as
 * ASYNC_CHAT_ERR_LENGTH.
 * @return 0, or -1 with errno EINVAL (NULL argument, width not 0, 1, 2, 3,
 *   4 or 8, a little-endian varint, offset above ASYNC_CHAT_TERMINATOR_MAX,
 *   a non-zero reserved member; the terminator is unchanged), ENOTCONN or
 *   ENOMEM (the channel is left with the none terminator).
 */
int async_chat_set_terminator_length(struct async_chat *chat,
    const struct async_chat_length_field *spec);

/**
 * Describe the current terminator.  For a count, the bytes still missing:
 * inside collect_incoming_data this already excludes the bytes handed over
 * in that call, and after the last of them it is 0.
 * @return 0, or -1 with errno EINVAL (NULL argument) or ENOTCONN.
 */
int async_chat_get_terminator(const struct async_chat *chat,
    struct async_chat_terminator *out);

/**
 * Inside found_terminator: the index of the alternative that ended the
 * frame (TERM_ANY), 0 for "\r\n" or 1 for "\n" (TERM_LINE), 0 for a string
 * or a count.  Outside found_terminator it still describes the last frame
 * ended, and is 0 after a terminator is set.
 * @return the index, or -1 with errno EINVAL (NULL).
 */
int async_chat_matched_terminator(const struct async_chat *chat);

/**
 * Bound the length of a frame.  What it counts: the bytes of the current
 * frame handed to collect_incoming_data (or appended to the message-mode
 * buffer) since the frame began, that is since the last found_terminator
 * or discard (setting a terminator does not end a frame); taking bytes out
 * of async_chat_incoming() does not change it.  Terminator bytes are not
 * counted.  Under the none terminator, and a spent count, the "frame" is
 * everything since the last of those events.  A length-field
 * frame is checked whole as soon as its header is complete, before any of
 * its bytes is delivered.
 *
 * When the next byte would pass the bound, handle_error runs with
 * ASYNC_CHAT_ERR_FRAME_TOO_LONG and the frame policy says what follows
 * (async_chat_set_frame_policy(); by default reading is suspended and the
 * rest stays unread).  0 (the default) means no bound.  The new bound
 * applies at once, inside callbacks too.
 * @return 0, or -1 with errno EINVAL or ENOTCONN.
 */
int async_chat_set_max_frame(struct async_chat *chat, uint64_t max);

/** What a channel does with a frame that passes its bound (since 0.2). */
enum async_chat_frame_policy {
	/** Suspend reading and report; the application answers and closes,
	 * or raises the bound (or discards, or sets another terminator) and
	 * resumes.  The default, and 0.1's behaviour. */
	ASYNC_CHAT_FRAME_PAUSE = 0,
	/** Report, then drop the rest of the frame through its terminator
	 * and go on with the next frame (an SMTP server answering 552, or
	 * Netty's discard mode).  With no handle_error the frame is dropped
	 * silently; in collect mode handle_error should forget the bytes
	 * already collected for it.  found_terminator does not run for the
	 * dropped frame; in message mode the frame's bytes already kept are
	 * dropped from async_chat_incoming() before handle_error runs.  A
	 * length-field error cannot be skipped and suspends reading. */
	ASYNC_CHAT_FRAME_SKIP = 1,
	/** Report, stop reading for good and close once queued output is
	 * flushed (as async_chat_close_when_done()), so a reply pushed by
	 * handle_error still leaves; with no handle_error it just closes
	 * that way.  Length-field errors do the same. */
	ASYNC_CHAT_FRAME_CLOSE = 2
};

/**
 * Choose what a frame past the bound does (since 0.2).  A frame already
 * reported keeps the policy it was reported under.
 * @return 0, or -1 with errno EINVAL (NULL, unknown policy) or ENOTCONN.
 */
int async_chat_set_frame_policy(struct async_chat *chat,
    enum async_chat_frame_policy policy);

/**
 * Message mode (no collect_incoming_data handler): the evbuffer holding the
 * frame's bytes.  Take them in found_terminator with evbuffer_remove(),
 * evbuffer_remove_buffer() or evbuffer_drain(); what is left stays and the
 * next frame is appended.  The buffer belongs to the channel.  In collect
 * mode it is made on the first call and stays empty.
 * @return the buffer, or NULL with errno EINVAL, ENOTCONN or ENOMEM.
 */
struct evbuffer *async_chat_incoming(struct async_chat *chat);

/*
 * Output
 */

/**
 * Queue a copy of data.  Pushes, producers and markers go out in call
 * order.  len 0 queues nothing.
 * @return 0, or -1 with errno EINVAL (NULL channel, NULL data with
 *   len > 0), ENOTCONN (closed), EPIPE (after close_when_done or
 *   shutdown_when_done, even for len 0), EMSGSIZE (len, with what is
 *   already pending, above EV_SSIZE_MAX) or ENOMEM.
 */
int async_chat_push(struct async_chat *chat, const void *data, size_t len);

/**
 * Queue the whole content of buf, moving libevent's chains (no copy; a
 * content of at most 4 KiB is copied instead, so that small replies leave
 * in one write rather than one chain each); buf is left empty and stays
 * the caller's.
 * @return 0, or -1 with errno as async_chat_push(); on failure buf keeps
 *   its content.
 */
int async_chat_push_buffer(struct async_chat *chat, struct evbuffer *buf);

/**
 * Queue len bytes at data without copying them; cleanup(data, len,
 * cleanup_arg) runs once they have been sent or dropped (at once for len
 * 0).  data must stay valid and unchanged until then.  cleanup may be NULL.
 * libevent frees sent bytes from inside its own buffer code, where no call
 * is safe, so the channel runs cleanup from its event loop callback just
 * after (or inside discard_buffers() and close() for bytes they drop):
 * every API call may be made in it.  Bytes a bufferevent pair handed to
 * its partner may outlive the channel; their cleanup then runs when
 * libevent frees them, with the channel gone.
 * @return 0, or -1 with errno as async_chat_push(); on failure cleanup does
 *   not run and data stays the caller's.
 */
int async_chat_push_reference(struct async_chat *chat, const void *data,
    size_t len, void (*cleanup)(const void *data, size_t len, void *arg),
    void *cleanup_arg);

/**
 * Queue length bytes of the file fd from offset.  A channel made by
 * async_chat_new() sends it with sendfile(2) where the system has it;
 * other bufferevents (TLS, filters, pairs), and ranges that end past
 * SIZE_MAX (4 GiB on 32-bit systems, beyond what libevent can map), get
 * it read with pread(2) a piece at a time as the output drains, so a file cut short while queued
 * fails (ASYNC_CHAT_ERR_PRODUCER) instead of sending bytes it no longer
 * has; there the rest of the queue goes on after the error.  The channel owns fd from the call on,
 * success or not, and closes it when done.  Bytes pushed before the file
 * leave in their own write: on TCP, set TCP_NODELAY on the socket, or a
 * small header followed by a small file waits for the peer's delayed ACK
 * (about 40 ms a response).
 * @param length bytes to send, or -1 for everything to the end of file
 * @return 0, or -1 with errno as async_chat_push() or EBADF (fd < 0 or
 *   not open), EINVAL (not a regular file, offset < 0 or past the end of
 *   the file, length < -1, or the range passes the end of the file).
 */
int async_chat_push_file(struct async_chat *chat, int fd, ev_off_t offset,
    ev_off_t length);

/**
 * Write the header that frames a payload of payload_len bytes under spec
 * (since 0.2): the length field, preceded by spec->offset zero bytes.  The
 * field holds payload_len - spec->adjust, so that a decoder with the same
 * spec (and strip = offset + width) delivers the payload.  As Netty's
 * LengthFieldPrepender.  spec->strip is ignored.
 * @param out where the header goes
 * @param size the room at out (offset + 10 bytes always suffice)
 * @return the header's length, or -1 with errno EINVAL (NULL argument, bad
 *   spec as for async_chat_set_terminator_length()), ERANGE (the value is
 *   negative or does not fit in the field, or the frame would be longer
 *   than UINT64_MAX) or ENOBUFS (size too small).
 */
ev_ssize_t async_chat_length_field_encode(
    const struct async_chat_length_field *spec, uint64_t payload_len,
    void *out, size_t size);

/**
 * Queue a copy of data preceded by its length-field header, in one call
 * (since 0.2): see async_chat_length_field_encode().  spec NULL uses the
 * channel's own terminator, which must then be a length field.
 * @return 0, or -1 with errno as async_chat_push() and
 *   async_chat_length_field_encode(), or EINVAL (spec NULL and the
 *   terminator is not a length field); nothing is queued on failure.
 */
int async_chat_push_length_prefixed(struct async_chat *chat,
    const struct async_chat_length_field *spec, const void *data,
    size_t len);

/**
 * Queue a producer.  Its more() is called when it reaches the head of the
 * queue and the output buffer holds fewer than out_buffer_size bytes, with
 * size_hint set to out_buffer_size.  ops is kept, not copied: it must stay
 * valid until the producer's free runs (a static const struct is usual).
 * @return 0, or -1 with errno as async_chat_push() or EINVAL (NULL ops or
 *   NULL ops->more).  On failure free is not called.
 */
int async_chat_push_with_producer(struct async_chat *chat,
    const struct async_chat_producer_ops *ops, void *ctx);

/**
 * Queue a producer that serves a copy of data buffer_size bytes at a time
 * (asynchat's simple_producer).  buffer_size 0 means asynchat's default,
 * 512 (an explicit 0 in CPython sends nothing at all, which no caller
 * wants).
 * @return 0, or -1 with errno as async_chat_push() or EINVAL (buffer_size
 *   above ASYNC_CHAT_BUFFER_SIZE_MAX).
 */
int async_chat_push_simple_producer(struct async_chat *chat, const void *data,
    size_t len, size_t buffer_size);

/**
 * Bytes queued and not yet handed to the transport: the bufferevent's
 * output buffer, pushed data waiting behind producers, and files pushed
 * with async_chat_push_file() from their push on (the bytes of their
 * range not handed over yet).  Bytes that other producers have not
 * produced yet are not counted.
 * @return the count; 0 for NULL or a closed channel.
 */
size_t async_chat_output_pending(const struct async_chat *chat);

/**
 * Queue a formatted string, as printf(3) formats it (since 0.2).
 * @return the number of bytes queued, or -1 with errno EINVAL (NULL
 *   channel or fmt), ENOTCONN, EPIPE, ENOMEM, or the formatting's error
 *   (EOVERFLOW).
 */
int async_chat_push_printf(struct async_chat *chat, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** async_chat_push_printf() with a va_list (since 0.2). */
int async_chat_push_vprintf(struct async_chat *chat, const char *fmt,
    va_list ap)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 0)))
#endif
    ;

/**
 * Pull again a producer whose more() returned ASYNC_CHAT_PRODUCER_DEFERRED
 * (since 0.2); from any callback or from application code, it runs on the
 * next loop turn.  Nothing happens if no producer is deferred.
 * @return 0, or -1 with errno EINVAL or ENOTCONN.
 */
int async_chat_resume_producer(struct async_chat *chat);

/**
 * A high-water mark on pending output (since 0.2), as Netty's writability
 * or Twisted's pauseProducing: handler(chat, 1, arg) runs when
 * async_chat_output_pending() rises above high, inside the push that made
 * it (or inside this call if it already is above, or from the loop when a
 * producer's or a file's bytes take it there), and handler(chat, 0, arg)
 * once it has fallen to low or below again, from the event loop, so a
 * proxy or a broadcaster stops reading or producing meanwhile.  Producers
 * keep the low-water rule of out_buffer_size.  high 0 turns it off.
 * @return 0, or -1 with errno EINVAL (NULL channel or handler with
 *   high > 0, low > high) or ENOTCONN, or ENOMEM.
 */
int async_chat_set_high_water(struct async_chat *chat, size_t low,
    size_t high, void (*handler)(struct async_chat *chat, int above,
                     void *arg));

/**
 * Be told when a queued shutdown_when_done() completes (since 0.2), as
 * libuv's uv_shutdown() callback: handler(chat, 0, arg) once everything
 * queued before it has been handed to the transport and the sending side
 * has been shut down, or handler(chat, err, arg) with the errno of the
 * shutdown.  It runs from the event loop, for shutdowns that happen while
 * it is set, and not at all if the channel closes first.  NULL turns it
 * off.
 * @return 0, or -1 with errno EINVAL, ENOTCONN or ENOMEM.
 */
int async_chat_set_shutdown_handler(struct async_chat *chat,
    void (*handler)(struct async_chat *chat, int err, void *arg));

/*
 * Flow control and tunables
 */

/** Stop reading: no collect or found callback runs until
 * async_chat_resume_reading(), and unread bytes wait in the socket.
 * @return 0, or -1 with errno EINVAL or ENOTCONN. */
int async_chat_pause_reading(struct async_chat *chat);

/** Resume reading; bytes already received are framed on the next turn of
 * the event loop, without waiting for new data (inside collect or found of
 * this channel, the running scan simply goes on).  Resuming clears every
 * suspension the application can clear: its own pause, a frame bound, a
 * length-field error, a passed frame deadline and a read timeout set on
 * the bufferevent; the idle clock and the frame deadline start again.
 * @return 0, or -1 with errno EINVAL, ENOTCONN, EPIPE (the peer's EOF has
 *   already been handled, or the CLOSE frame policy stopped reading for
 *   good), EMSGSIZE (the frame reported as too long is still past the
 *   bound: raise it, skip or discard it, or set another terminator
 *   first) or EPROTO (the length-field header reported as invalid is
 *   still the next input: set another terminator or discard first). */
int async_chat_resume_reading(struct async_chat *chat);

/**
 * Timeouts owned by the channel (since 0.2); each reaches handle_error
 * with its own code, and NULL (or a zero timeval) turns it off.  They use
 * the event_base's clock and cost one timer per channel that sets any.
 *   - idle: no byte read for tv (ASYNC_CHAT_ERR_IDLE_TIMEOUT; armed again);
 *   - write: output pending and no byte of it written for tv
 *     (ASYNC_CHAT_ERR_WRITE_TIMEOUT; armed again);
 *   - frame: the current frame must end within tv of the read that
 *     brought its first byte (ASYNC_CHAT_ERR_FRAME_TIMEOUT; reading is
 *     suspended until async_chat_resume_reading(), which starts the
 *     deadline again).  Unlike a read timeout, which every byte restarts,
 *     a peer sending one byte a second cannot keep a frame open for
 *     ever.  It may differ per terminator: set it in found_terminator with
 *     the next terminator; a new value applies to the frame in progress,
 *     counted from its first byte.
 * The idle clock and the frame deadline stop while reading is suspended
 * (and the idle clock at the peer's EOF); async_chat_resume_reading()
 * starts them again.  The handler may close the channel, or go on.
 * Timeouts set directly on the bufferevent keep working as before
 * (ETIMEDOUT).
 * @return 0, or -1 with errno EINVAL (NULL channel, a negative tv or a
 *   tv_usec of 1000000 or more) or ENOTCONN, or ENOMEM.
 */
int async_chat_set_idle_timeout(struct async_chat *chat,
    const struct timeval *tv);
int async_chat_set_write_timeout(struct async_chat *chat,
    const struct timeval *tv);
int async_chat_set_frame_timeout(struct async_chat *chat,
    const struct timeval *tv);

/**
 * Drop the rest of the current frame through its terminator, without
 * collecting or buffering it (since 0.2).  found_terminator still runs at
 * the frame's end, so the application sets the next terminator there as
 * usual; in message mode async_chat_incoming() then holds none of the
 * dropped bytes (those kept before the call stay).  Called in
 * found_terminator it applies to the next frame, the one the terminator
 * set there frames: a message-mode server that does not want a body it
 * has just seen the length of sets the count and calls this.
 * @return 0, or -1 with errno EINVAL, ENOTCONN or EPROTO (a length-field
 *   header is invalid: the frame's end is unknown).
 */
int async_chat_skip_frame(struct async_chat *chat);

/** 1 if reading is suspended for any reason (the application's pause, a
 * frame bound, a length-field error, a read timeout set on the
 * bufferevent, a frame deadline, the CLOSE frame policy), 0 if not, -1
 * with errno EINVAL for NULL. */
int async_chat_reading_paused(const struct async_chat *chat);

/** Most bytes taken from the transport per read event (default 65536).
 * On a socket of the channel's own (given to async_chat_new()), one
 * read call takes up to this many bytes (see "I/O on the channel's own
 * sockets"); on another socket bufferevent libevent applies it, reading
 * at most 4,096 bytes a call; a bufferevent pair hands over whatever its
 * partner wrote.
 * @return 0, or -1 with errno EINVAL (0 or above ASYNC_CHAT_BUFFER_SIZE_MAX)
 *   or ENOTCONN. */
int async_chat_set_in_buffer_size(struct async_chat *chat, size_t size);
/** The in_buffer_size, or 0 for NULL. */
size_t async_chat_get_in_buffer_size(const struct async_chat *chat);

/** The producer piece size and output low-water mark, and the most bytes
 * written per write event (default 65536).
 * @return 0, or -1 with errno EINVAL (0 or above ASYNC_CHAT_BUFFER_SIZE_MAX)
 *   or ENOTCONN. */
int async_chat_set_out_buffer_size(struct async_chat *chat, size_t size);
/** The out_buffer_size, or 0 for NULL. */
size_t async_chat_get_out_buffer_size(const struct async_chat *chat);

/*
 * Accessors
 */

/** The channel's bufferevent (owned by the channel), or NULL for NULL or a
 * closed channel.  On a socket of the channel's own the channel does its
 * own reads and most writes (see I/O ON THE CHANNEL'S OWN SOCKETS):
 * leave EV_READ and the output buffer to it. */
struct bufferevent *async_chat_get_bufferevent(struct async_chat *chat);
/** The channel's socket, or -1 (none, NULL or closed). */
evutil_socket_t async_chat_get_fd(const struct async_chat *chat);
/** The channel's arg (NULL for a NULL channel). */
void *async_chat_get_arg(const struct async_chat *chat);
/** Replace the channel's arg.  @return 0, or -1 with errno EINVAL. */
int async_chat_set_arg(struct async_chat *chat, void *arg);
/** 1 while the channel is connected (accepted, adopted, or connected by
 * async_chat_connect*), 0 before the connection is made or after an error
 * (a timeout set on the bufferevent, reported as ETIMEDOUT, leaves it
 * connected), -1 with errno EINVAL for NULL. */
int async_chat_connected(const struct async_chat *chat);

/*
 * The listener: asyncore's accepting dispatcher
 *
 * A listener accepts connections on a listening socket in the event loop
 * and hands each one to handle_accept.  It is made on an address
 * (async_chat_listener_new(), async_chat_listener_new_flags()), a host
 * name and port (async_chat_listener_new_hostname()), a Unix-domain path
 * (async_chat_listener_new_unix()) or a socket already listening
 * (async_chat_listener_new_fd()).  A channel connects to any of them
 * with async_chat_connect(), a struct sockaddr_un included.
 *
 * ACCEPT ERRORS BACK OFF.  libevent retries EINTR, EAGAIN and
 * ECONNABORTED at once, by itself.  Any other accept(2) failure (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM...) would fail again at once, so the listener
 * stops accepting for a while: 10 ms after the first error, twice as long
 * after each error in a row, at most 1 s, and back to 10 ms once an
 * accept succeeds.  When the delay is over it accepts again by itself:
 * connections wait in the backlog meanwhile.  A storm of errors so costs
 * seven failed accept calls in its first second and one a second after
 * that, and accepting comes back within a second of descriptors being
 * free.  The error handler, if set,
 * is told of each error first; the back-off follows unless it paused or
 * freed the listener.
 */

/** Called for each accepted connection with a non-blocking socket that
 * now belongs to the callee (typically it calls async_chat_new()). */
typedef void (*async_chat_accept_fn)(struct async_chat_listener *listener,
    evutil_socket_t fd, const struct sockaddr *addr, int addrlen, void *arg);

/** Called when accept(2) fails with an error other than EINTR, EAGAIN or
 * ECONNABORTED (err is its errno, e.g. EMFILE).  Every API call may be
 * made in it.  When it returns, the listener backs off (see "ACCEPT ERRORS
 * BACK OFF" above) unless the handler has freed it or paused it
 * (async_chat_listener_pause()): after a pause the listener stays paused
 * until async_chat_listener_resume(), with no back-off of its own. */
typedef void (*async_chat_accept_error_fn)(struct async_chat_listener *listener,
    int err, void *arg);

/** @name Listener flags (since 0.2)
 * For async_chat_listener_new_flags() and
 * async_chat_listener_new_hostname(); other bits fail with EINVAL. */
/**@{*/
/** SO_REUSEPORT: several listeners, in one process (one per event_base,
 * say) or in several, may listen on the same address and port if each
 * sets it; the system spreads the connections among them.  Where the
 * system has no SO_REUSEPORT the listener is not made (ENOPROTOOPT, or
 * the setsockopt(2) error). */
#define ASYNC_CHAT_LISTEN_REUSEPORT (1u << 0)
/** IPV6_V6ONLY on an IPv6 socket: it takes IPv6 connections only, not
 * IPv4 ones as IPv4-mapped addresses, whatever the system's default
 * (Linux: net.ipv6.bindv6only).  No effect on other families. */
#define ASYNC_CHAT_LISTEN_IPV6_ONLY (1u << 1)
/**@}*/

/**
 * Listen on addr (SO_REUSEADDR, close-on-exec) and call handle_accept for
 * each connection.  Port 0 picks a free port; see
 * async_chat_listener_get_address().  Equivalent to
 * async_chat_listener_new_flags() with flags 0.  addr may be a struct
 * sockaddr_un: its path must not exist (EADDRINUSE), and it is left in
 * place when the listener is freed; async_chat_listener_new_unix()
 * handles the path instead.
 *
 * @param backlog listen(2) backlog (0 or more), or -1 for 128
 * @return the listener, or NULL with errno EINVAL (NULL base, addr or
 *   handle_accept, addrlen <= 0, backlog < -1), ENOMEM, or the socket(2),
 *   setsockopt(2), bind(2) or listen(2) error (EADDRINUSE...).
 */
struct async_chat_listener *async_chat_listener_new(struct event_base *base,
    const struct sockaddr *addr, int addrlen, int backlog,
    async_chat_accept_fn handle_accept, void *arg);

/**
 * async_chat_listener_new() with ASYNC_CHAT_LISTEN_* flags (since 0.2).
 * @param flags 0 or ASYNC_CHAT_LISTEN_* flags
 * @return the listener, or NULL with errno as async_chat_listener_new(),
 *   or EINVAL (an unknown flag) or ENOPROTOOPT (REUSEPORT where the
 *   system has none).
 */
struct async_chat_listener *async_chat_listener_new_flags(
    struct event_base *base, const struct sockaddr *addr, int addrlen,
    unsigned flags, int backlog, async_chat_accept_fn handle_accept,
    void *arg);

/**
 * Listen on a host name or address and a port given as strings (since
 * 0.2), as async_chat_connect_hostname() connects: host and port are
 * resolved with getaddrinfo(3) (AI_PASSIVE; this call blocks while it
 * runs, so call it at start-up, not from a busy loop).
 *
 * host is a name ("localhost"), a numeric address ("127.0.0.1", "::1"),
 * or NULL for every address of the machine.  When it gives several
 * addresses, they are tried in the resolver's order and the listener
 * listens on the first that can be bound, and on that one only; make one
 * listener per address to listen on several.  With host NULL and
 * family AF_UNSPEC, the IPv6 wildcard "::" is tried first with
 * IPV6_V6ONLY off, so one socket takes IPv4 and IPv6 connections (IPv6
 * only with ASYNC_CHAT_LISTEN_IPV6_ONLY), then the IPv4 wildcard, for a
 * machine without IPv6.  Where the address matters ("localhost" may give
 * ::1 or 127.0.0.1), ask async_chat_listener_get_address().
 *
 * @param family AF_INET, AF_INET6 or AF_UNSPEC (either)
 * @param host the name or numeric address, or NULL
 * @param port a decimal port from "0" (a free port) to "65535", or a
 *   service name ("http")
 * @param flags 0 or ASYNC_CHAT_LISTEN_* flags
 * @param backlog as async_chat_listener_new()
 * @param dns_error if not NULL, set to the resolver's EVUTIL_EAI_* code
 *   when resolving fails (evutil_gai_strerror() names it), else to 0
 * @return the listener, or NULL with errno EINVAL (NULL base, port or
 *   handle_accept, an empty port, a number that is not a port ("70000",
 *   "80x"), family not AF_INET, AF_INET6 or AF_UNSPEC, an unknown
 *   flag, backlog < -1), ENOENT (resolving failed: see *dns_error),
 *   EADDRNOTAVAIL (the name has no address of the family), ENOMEM, or the
 *   error of the last address tried as for async_chat_listener_new_flags()
 *   (EADDRINUSE...).
 */
struct async_chat_listener *async_chat_listener_new_hostname(
    struct event_base *base, int family, const char *host, const char *port,
    unsigned flags, int backlog, async_chat_accept_fn handle_accept,
    void *arg, int *dns_error);

/**
 * Listen on a Unix-domain stream socket at path (since 0.2); channels
 * connect to it with async_chat_connect() and a struct sockaddr_un.
 *
 * If path exists already: a socket that no listener has open any more
 * (a connect to it is refused, as after a crash) is removed and replaced;
 * a socket that a listener has open (that listener sees the test as a
 * connection closed at once), or anything that is not a socket, is left
 * alone and the call fails with EADDRINUSE.  The socket is made
 * with the process's umask.  async_chat_listener_free() removes path if
 * it is still this listener's socket (the same file), so a process that
 * forks should free the listener in one process only.
 *
 * @param path a file name, shorter than sun_path (107 bytes on Linux)
 * @param flags must be 0 (reserved for later flags)
 * @param backlog as async_chat_listener_new()
 * @return the listener, or NULL with errno EINVAL (NULL base, path or
 *   handle_accept, empty path, flags not 0, backlog < -1), ENAMETOOLONG
 *   (path too long), EADDRINUSE (see above), ENOMEM, or the error of
 *   lstat(2), unlink(2), socket(2), bind(2) or listen(2) (ENOENT for a
 *   missing directory, EACCES...).
 */
struct async_chat_listener *async_chat_listener_new_unix(
    struct event_base *base, const char *path, unsigned flags, int backlog,
    async_chat_accept_fn handle_accept, void *arg);

/**
 * Accept on a socket that is already bound and listening.  The listener
 * owns fd (it is made non-blocking and closed by the listener).
 * @return the listener, or NULL with errno EINVAL (NULL base or
 *   handle_accept, fd < 0, fd not a stream socket, or not listening: one
 *   that is would make accept(2) fail at every turn), EBADF (fd is not
 *   open or cannot be made non-blocking), ENOTSOCK (fd is not a socket)
 *   or ENOMEM; on failure fd is not closed.
 */
struct async_chat_listener *async_chat_listener_new_fd(struct event_base *base,
    evutil_socket_t fd, async_chat_accept_fn handle_accept, void *arg);

/** Set the accept error handler (NULL, the default: errors are not
 * reported; either way the listener backs off as "ACCEPT ERRORS BACK OFF"
 * says).  @return 0, or -1 with errno EINVAL. */
int async_chat_listener_set_error_handler(struct async_chat_listener *listener,
    async_chat_accept_error_fn handle_error);

/** Stop accepting (connections wait in the backlog) and resume.  Safe
 * inside handle_accept and the error handler.  Resuming during a back-off
 * lets accepting start again when the back-off ends.
 * @return 0, or -1 with errno EINVAL (NULL) or the error of adding or
 *   removing the listening event. */
int async_chat_listener_pause(struct async_chat_listener *listener);
int async_chat_listener_resume(struct async_chat_listener *listener);

/** 1 while the listener is backing off after an accept error (it accepts
 * again by itself when the delay is over), 0 if not, -1 with errno EINVAL
 * for NULL (since 0.2). */
int async_chat_listener_backing_off(
    const struct async_chat_listener *listener);

/** The listening socket, or -1 for NULL. */
evutil_socket_t async_chat_listener_get_fd(
    const struct async_chat_listener *listener);

/** The address the listener is bound to (getsockname(2)); *addrlen is the
 * size of addr on entry and the address length on return.
 * @return 0, or -1 with errno EINVAL or the getsockname(2) error. */
int async_chat_listener_get_address(const struct async_chat_listener *listener,
    struct sockaddr *addr, int *addrlen);

/** Close the listening socket and free the listener; channels it made are
 * not affected.  A listener made by async_chat_listener_new_unix() removes
 * its path (see there).  Safe inside handle_accept and the error handler:
 * no callback of the listener runs after it.  NULL is ignored. */
void async_chat_listener_free(struct async_chat_listener *listener);

/*
 * THREADS (since 0.2)
 *
 * A channel belongs to the thread that runs its event_base (its loop
 * thread).  The rules, in one place:
 *
 *   - Every function of this header is called on the loop thread of the
 *     objects it is given (a channel, a group, a listener; a framer on
 *     whichever thread owns it, one thread at a time), except the handle
 *     calls below and async_chat_version(), async_chat_version_number()
 *     and async_chat_length_field_encode(), which touch no shared state.
 *   - async_chat_handle_new() is called on the channel's loop thread.
 *   - async_chat_post(), async_chat_post_reference(),
 *     async_chat_post_call(), async_chat_post_close_when_done(),
 *     async_chat_handle_closed() and async_chat_handle_free() may be
 *     called from any thread, at any time, concurrently, including from
 *     the loop thread and from inside callbacks.  They never call user
 *     code and never wait for the loop to run: a post takes the handle's
 *     mutex and, for the first post of a batch, libevent's base lock
 *     for event_active().
 *   - Everything a post asks for runs later on the loop thread, in post
 *     order per handle: bytes are pushed as async_chat_push() would,
 *     functions are called, cleanups run.  Posts that are queued when the
 *     channel closes are dropped inside async_chat_close(), on the loop
 *     thread: cleanups run and functions are told (chat NULL).
 *
 * REQUIREMENT.  Cross-thread posts need libevent's locking: call
 * evthread_use_pthreads() (event2/thread.h, link libevent_pthreads:
 * pkg-config asynchat-threads) before the event_base is made.
 * async_chat_handle_new() fails with ENOTSUP when libevent's lock
 * functions are not set up.  libevent 2.1 cannot say whether one given
 * base was made before or after that call, so a base made before it is
 * not detected: make the bases after it.  Programs that post nothing need
 * neither libevent_pthreads nor that call.
 *
 * LIFETIME.  A handle is reference-counted and stays valid after its
 * channel closes, and after the channel's event_base is freed: posts
 * then fail with EPIPE, and async_chat_handle_free() releases it.  A
 * channel has one handle: async_chat_handle_new() again returns the same
 * one with one more reference, and each reference is released by one
 * async_chat_handle_free().  Freeing more often than the handle was made,
 * while the handle is still alive (its channel open), fails with EBADF;
 * as with free(), using a handle after its last reference is gone is
 * undefined.
 *
 * OWNERSHIP.  async_chat_post() copies the bytes before it returns.
 * async_chat_post_reference() moves them: once it has returned 0, its
 * cleanup runs exactly once, on the loop thread (after the bytes are sent
 * or dropped, or when the channel closes before they were queued); when
 * it returns -1 cleanup does not run and the bytes stay the caller's.
 * async_chat_post_call()'s fn runs exactly once if the post returned 0,
 * so it can always release its arg.
 *
 * Bytes that the channel refuses when they reach it on the loop (after
 * async_chat_close_when_done() the push fails with EPIPE, or ENOMEM) are
 * dropped like those of a channel that closes; a post_call can ask
 * async_chat_push() itself when the answer matters.
 */

/** An opaque, reference-counted handle to a channel, usable from any
 * thread. */
struct async_chat_handle;

/**
 * The channel's handle (since 0.2), made on first call; later calls
 * return the same handle with one more reference.  On the loop thread.
 * @return the handle, or NULL with errno EINVAL (NULL), ENOTCONN (chat
 *   closed), ENOTSUP (libevent's locking is not set up: see THREADS) or
 *   ENOMEM.
 */
struct async_chat_handle *async_chat_handle_new(struct async_chat *chat);

/**
 * Release one reference to the handle (since 0.2); from any thread.  The
 * memory goes with the last reference, which the channel holds while it
 * is open.
 * @return 0, or -1 with errno EINVAL (NULL) or EBADF (every reference
 *   async_chat_handle_new() gave has been released already).
 */
int async_chat_handle_free(struct async_chat_handle *h);

/**
 * 1 if the handle's channel has closed (posts now fail with EPIPE), 0 if
 * it is open, -1 with errno EINVAL (NULL) or EBADF (released); from any
 * thread (since 0.2).  The answer may be stale by the time it is read:
 * a 0 does not promise that the next post succeeds.
 */
int async_chat_handle_closed(const struct async_chat_handle *h);

/**
 * Queue a copy of data for the channel, pushed on its loop thread as
 * async_chat_push() (since 0.2); from any thread.  len 0 queues nothing.
 * @return 0, or -1 with errno EINVAL (NULL handle, NULL data with
 *   len > 0), EBADF (released handle), EPIPE (the channel has closed, or
 *   async_chat_post_close_when_done() was posted) or ENOMEM.
 */
int async_chat_post(struct async_chat_handle *h, const void *data,
    size_t len);

/**
 * Queue len bytes at data without copying them (since 0.2); from any
 * thread.  data must stay valid and unchanged until cleanup(data, len,
 * cleanup_arg) runs, which happens exactly once, on the channel's loop
 * thread, if this returns 0: as async_chat_push_reference()'s once the
 * bytes are sent or dropped, or inside async_chat_close() if the channel
 * closes first.  cleanup may be NULL.
 * @return 0, or -1 with errno as async_chat_post(); on failure cleanup
 *   does not run and data stays the caller's.
 */
int async_chat_post_reference(struct async_chat_handle *h, const void *data,
    size_t len, void (*cleanup)(const void *data, size_t len, void *arg),
    void *cleanup_arg);

/**
 * Run fn(chat, arg) on the channel's loop thread (since 0.2); from any
 * thread.  If this returns 0, fn runs exactly once: with the open
 * channel, where every call of this header may be made on it, or with
 * chat NULL when the channel closed before fn's turn (then inside
 * async_chat_close(), on the loop thread), so that arg can be released
 * either way.
 * @return 0, or -1 with errno EINVAL (NULL handle or fn), EBADF, EPIPE
 *   (the channel has closed) or ENOMEM; fn does not run then.  Unlike
 *   data, calls are still accepted after
 *   async_chat_post_close_when_done() until the channel closes.
 */
int async_chat_post_call(struct async_chat_handle *h,
    void (*fn)(struct async_chat *chat, void *arg), void *arg);

/**
 * Queue async_chat_close_when_done() on the channel's loop thread, after
 * what was posted before it (since 0.2); from any thread.  Later data
 * posts fail with EPIPE.
 * @return 0, or -1 with errno EINVAL, EBADF, EPIPE (closed, or posted
 *   already) or ENOMEM.
 */
int async_chat_post_close_when_done(struct async_chat_handle *h);

/*
 * Channel groups (since 0.2): asyncore's socket_map and close_all, Netty's
 * ChannelGroup.  A group holds channels of one event_base; a channel is in
 * at most one group and leaves it by itself when it closes.  Every
 * function may be called from any callback, including while the group is
 * being iterated and its members close.
 */

/** An opaque group of channels. */
struct async_chat_group;

/** A new, empty group whose deadlines run on base.
 * @return the group, or NULL with errno EINVAL (NULL base) or ENOMEM. */
struct async_chat_group *async_chat_group_new(struct event_base *base);

/** Free the group; its members stay open and leave it.  Inside
 * async_chat_group_foreach() on this group the group is freed when the
 * iteration returns.  NULL is ignored. */
void async_chat_group_free(struct async_chat_group *group);

/** Add chat.  @return 0 (also if it is already a member), or -1 with
 * errno EINVAL (NULL), ENOTCONN (chat closed), EBUSY (chat is in another
 * group) or ENOMEM. */
int async_chat_group_add(struct async_chat_group *group,
    struct async_chat *chat);

/** Remove chat (it stays open).  @return 0, or -1 with errno EINVAL or
 * ENOENT (not a member). */
int async_chat_group_remove(struct async_chat_group *group,
    struct async_chat *chat);

/** The number of members (0 for NULL). */
size_t async_chat_group_count(const struct async_chat_group *group);

/**
 * Call fn(chat, arg) for each member, in the order they were added, until
 * fn returns non-zero.  Members that close or leave meanwhile are not
 * visited (they may be fn's own channel); members added meanwhile are
 * visited if they come after the one being visited.
 * @return the non-zero value fn returned, 0 when every member was
 *   visited, or -1 with errno EINVAL (NULL group or fn).
 */
int async_chat_group_foreach(struct async_chat_group *group,
    int (*fn)(struct async_chat *chat, void *arg), void *arg);

/**
 * Push a copy of data to every member (asynchat's broadcast).
 * @return the number of members it was queued to, or -1 with errno
 *   EINVAL (NULL group, NULL data with len > 0).  A member whose push fails
 *   (EPIPE after close_when_done, ENOMEM) is skipped.
 */
ev_ssize_t async_chat_group_push(struct async_chat_group *group,
    const void *data, size_t len);

/**
 * Graceful shutdown (SIGTERM): async_chat_close_when_done() on every
 * member, so each closes once its queued output is sent; channels still
 * in the group when timeout has passed are closed at once.  timeout NULL
 * waits for ever; a second call sets a new deadline.
 * @return 0, or -1 with errno EINVAL (NULL group, negative timeout) or
 *   ENOMEM (the deadline timer; the members' closes are queued anyway).
 */
int async_chat_group_close_when_done(struct async_chat_group *group,
    const struct timeval *timeout);

/** async_chat_close() on every member.  NULL is ignored. */
void async_chat_group_close_all(struct async_chat_group *group);

/*
 * The framer: the channel's framing rules with no I/O (since 0.2)
 *
 * A framer splits a byte stream by a terminator exactly as a channel does
 * (every terminator kind, the frame bound, frames identical under every
 * chunking), for applications with other I/O: blocking sockets, another
 * event loop, a file, a test.  It is pull-style, like hiredis' reader:
 * hand it the unconsumed bytes and ask for the next event; it never calls
 * back, so a terminator set, a bound changed, a skip or a reset between
 * two calls applies from the next call on.
 *
 *     struct async_chat_framer *fr = async_chat_framer_new();
 *     struct async_chat_framer_event ev;
 *
 *     async_chat_framer_set_terminator_line(fr);
 *     while ((n = read(fd, buf + have, sizeof(buf) - have)) > 0) {
 *             size_t off = 0;
 *             have += n;
 *             for (;;) {
 *                     async_chat_framer_next(fr, buf + off, have - off, &ev);
 *                     off += ev.consumed;
 *                     if (ev.kind == ASYNC_CHAT_FRAMER_DATA)
 *                             line_append(ev.data, ev.len);
 *                     else if (ev.kind == ASYNC_CHAT_FRAMER_END)
 *                             line_done();
 *                     else
 *                             break;      // NEED_MORE, or an error
 *             }
 *             memmove(buf, buf + off, have - off);
 *             have -= off;                // 0 after NEED_MORE
 *     }
 *
 * The rule for the caller: each call is given the bytes not yet consumed,
 * from the first one on (more may follow them), so bytes that an event did
 * not consume are passed again, unchanged and all of them, at the front of
 * the next span.
 * A NEED_MORE event consumes the whole span: the framer keeps the few bytes
 * it holds back (a possible terminator prefix, a partial length header) in
 * its own memory, and hands them out later as DATA.
 */

/** An opaque framer. */
struct async_chat_framer;

/** The events async_chat_framer_next() returns. */
enum async_chat_framer_event_kind {
	/** Every byte of the span is consumed; call again with more. */
	ASYNC_CHAT_FRAMER_NEED_MORE = 0,
	/** len frame bytes at data: in the span (the last len of the
	 * consumed bytes; stripped length-field bytes may come before them)
	 * or, for held-back bytes handed out later, in the framer's own
	 * memory (held set), valid until the next call on the framer. */
	ASYNC_CHAT_FRAMER_DATA = 1,
	/** The frame ended; its terminator (len bytes, 0 for counts and
	 * length fields) is consumed.  matched says which alternative: as
	 * async_chat_matched_terminator(). */
	ASYNC_CHAT_FRAMER_END = 2,
	/** A frame dropped by async_chat_framer_skip() ended; its bytes and
	 * terminator are consumed. */
	ASYNC_CHAT_FRAMER_SKIPPED = 3,
	/** The next byte would pass the bound: nothing is consumed.  len is
	 * the least bound under which the frame can go on.  The same event
	 * comes again until the bound is raised, or the frame is skipped or
	 * reset, or another terminator is set. */
	ASYNC_CHAT_FRAMER_TOO_LONG = 4,
	/** A length-field header is invalid: nothing past it is consumed,
	 * and the same event comes again until another terminator is set or
	 * the framer is reset.  The header's bytes are held by the framer as
	 * unconsumed input, framed again under the next terminator. */
	ASYNC_CHAT_FRAMER_LENGTH_ERROR = 5
};

/** One event: what async_chat_framer_next() fills in. */
struct async_chat_framer_event {
	enum async_chat_framer_event_kind kind;
	/** Bytes of the span taken by this event: drop them before the next
	 * call. */
	size_t consumed;
	/** DATA: the frame bytes; NULL otherwise. */
	const char *data;
	/** DATA: their number; END, SKIPPED: the terminator's length;
	 * TOO_LONG: the bound needed to go on; 0 otherwise. */
	uint64_t len;
	/** END: the alternative that matched; 0 otherwise. */
	int matched;
	/** DATA: 1 when data is in the framer's own memory (bytes held
	 * back and handed out later; consumed is then 0), 0 when it is the
	 * last len bytes consumed from the span. */
	int held;
	/** Reserved; zeroed by the framer. */
	uint64_t reserved[3];
};

/** A new framer, with the none terminator and no bound.
 * @return the framer, or NULL with errno ENOMEM. */
struct async_chat_framer *async_chat_framer_new(void);

/** Free a framer.  NULL is ignored. */
void async_chat_framer_free(struct async_chat_framer *fr);

/** Forget the bytes held back, the frame in progress (no END comes for
 * it) and any sticky event, as when the caller drops its unconsumed
 * input.  The terminator, what a count still misses and the bound stay.
 * NULL is ignored. */
void async_chat_framer_reset(struct async_chat_framer *fr);

/**
 * The terminator setters, with the rules and errors of the channel's
 * functions of the same names (async_chat_set_terminator() and so on).
 * Bytes held back are framed again under the new terminator; a frame whose
 * last byte was already handed out still ends (END) first.
 * @return 0, or -1 with errno EINVAL (NULL framer, or as the channel's)
 *   or ENOMEM (the framer is left with the none terminator).
 */
int async_chat_framer_set_terminator(struct async_chat_framer *fr,
    const void *term, size_t len);
int async_chat_framer_set_terminator_count(struct async_chat_framer *fr,
    uint64_t count);
int async_chat_framer_set_terminator_none(struct async_chat_framer *fr);
int async_chat_framer_set_terminator_line(struct async_chat_framer *fr);
int async_chat_framer_set_terminators(struct async_chat_framer *fr,
    const void *const *terms, const size_t *lens, size_t n);
int async_chat_framer_set_terminator_length(struct async_chat_framer *fr,
    const struct async_chat_length_field *spec);

/** Describe the terminator, as async_chat_get_terminator() does.
 * @return 0, or -1 with errno EINVAL (NULL argument). */
int async_chat_framer_get_terminator(const struct async_chat_framer *fr,
    struct async_chat_terminator *out);

/** Bound the delivered length of a frame (0: no bound), counted as
 * async_chat_set_max_frame() says.  @return 0, or -1 with errno EINVAL. */
int async_chat_framer_set_max_frame(struct async_chat_framer *fr,
    uint64_t max);

/** Bytes of the current frame delivered so far, as the bound counts them
 * (0 for NULL). */
uint64_t async_chat_framer_frame_length(const struct async_chat_framer *fr);

/**
 * Drop the rest of the current frame: its remaining bytes are consumed
 * without DATA events, and its end comes as SKIPPED instead of END.  Used
 * after TOO_LONG to go on with the next frame.
 * @return 0, or -1 with errno EINVAL (NULL) or EPROTO (a length-field
 *   header is invalid: the frame's end is unknown).
 */
int async_chat_framer_skip(struct async_chat_framer *fr);

/**
 * The next event for the span data[0..len): see the event kinds.  data may
 * be NULL when len is 0.
 * @return the event's kind (also in ev->kind), or -1 with errno EINVAL
 *   (NULL fr or ev, NULL data with len > 0).
 */
int async_chat_framer_next(struct async_chat_framer *fr, const void *data,
    size_t len, struct async_chat_framer_event *ev);

/**
 * End of input: hand out the bytes held back as frame bytes (DATA events
 * from the framer's memory, under the bound), then NEED_MORE once none is
 * left.  The framer can go on afterwards as if the held bytes had been
 * frame bytes.
 * @return the event's kind, or -1 with errno EINVAL.
 */
int async_chat_framer_finish(struct async_chat_framer *fr,
    struct async_chat_framer_event *ev);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCHAT_H_INCLUDED_ */
