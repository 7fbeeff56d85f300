/*
 * framer_model.h - a deliberately simple reference model of libasynchat's
 * framer, for the Check suite and the fuzz target.
 *
 * The model appends the stream one byte at a time to the frame in progress
 * and, after every byte, asks whether the frame now ends with the current
 * terminator.  It knows nothing of chunking, held-back bytes or evbuffers,
 * so whatever the real framer is given, its frames must equal these.
 *
 * A script says which terminator is in force: step {k, T} sets T once k
 * frames have ended (k 0: the terminator at the start), as a
 * found_terminator callback would.  Without a step for frame k the
 * terminator stays; a count that has been reached then collects every
 * byte, like the none terminator, and a length field frames the next
 * frame alike.
 *
 * A length-field frame is read whole at its start: header, value, body,
 * strip, with the errors of struct async_chat_length_field.  Its frame is
 * the delivered bytes (the frame less its first strip bytes).  An invalid
 * header ends the run (nothing after it is framed), unless the script has
 * a step for frame FM_LENGTH_ERROR: its terminator is then set, once, and
 * frames the stream again from the header's first byte.
 */
#ifndef ASYNCHAT_FRAMER_MODEL_H_INCLUDED_
#define ASYNCHAT_FRAMER_MODEL_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "asynchat.h"

/* A terminator: kind and, by kind, a count, 1 (STRING) to
 * ASYNC_CHAT_ALTERNATIVES_MAX (ANY) byte strings, or a length field. */
struct fm_term {
	enum async_chat_terminator_kind kind;
	uint64_t count;
	size_t n;
	const void *bytes[ASYNC_CHAT_ALTERNATIVES_MAX];
	size_t len[ASYNC_CHAT_ALTERNATIVES_MAX];
	struct async_chat_length_field lf; /* TERM_LENGTH */
};

/* The frame number of the step set on a length error. */
#define FM_LENGTH_ERROR ((size_t)-1)

struct fm_step {
	size_t frame; /* frames ended when term is set */
	struct fm_term term;
};

/* A frame, as offsets into the stream given to fm_run(). */
struct fm_frame {
	size_t off, len; /* the bytes delivered */
	int matched; /* as framer.matched: alternative, or 1 for a bare LF */
	size_t begin; /* where the frame begins: off, or a length field's
	               * header */
	size_t hdr;   /* a length field's header length, else 0 */
};

struct fm_result {
	struct fm_frame *frame;
	size_t n, cap;
	/* The bytes after the last frame: collected, never ended. */
	size_t tail_off, tail_len;
	size_t tail_begin; /* where the unended frame begins */
	/* A length error ended the run: the header starts at err_off and
	 * its err_len bytes are all that the framer may take of it (those
	 * of an earlier header there, recovered from, if that was longer). */
	int error;
	size_t err_off, err_len;
	/* A length error was recovered from by the FM_LENGTH_ERROR step at
	 * header offset recovered_at (the run went on). */
	int recovered;
	size_t recovered_at;
	size_t recovered_end; /* where that header ended */
};

/* Terminator constructors; they keep the pointers, not copies. */
struct fm_term fm_none(void);
struct fm_term fm_count(uint64_t count);
struct fm_term fm_line(void);
struct fm_term fm_string(const void *bytes, size_t len);
struct fm_term fm_any(const void *const *bytes, const size_t *lens, size_t n);
struct fm_term fm_length(const struct async_chat_length_field *spec);

/* The step that applies once frame frames have ended, or NULL.  Of steps
 * for the same frame the last one wins. */
const struct fm_step *fm_step_at(
    const struct fm_step *steps, size_t nsteps, size_t frame);

/* Frame len bytes of stream under the script.  Returns 0, or -1 if memory
 * ran out (out is then empty). */
int fm_run(const struct fm_step *steps, size_t nsteps, const void *stream,
    size_t len, struct fm_result *out);
void fm_result_free(struct fm_result *r);

#endif /* ASYNCHAT_FRAMER_MODEL_H_INCLUDED_ */
