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
 * byte, like the none terminator.
 */
#ifndef ASYNCHAT_FRAMER_MODEL_H_INCLUDED_
#define ASYNCHAT_FRAMER_MODEL_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "asynchat.h"

/* A terminator: kind and, by kind, a count or 1 (STRING) to
 * ASYNC_CHAT_ALTERNATIVES_MAX (ANY) byte strings. */
struct fm_term {
	enum async_chat_terminator_kind kind;
	uint64_t count;
	size_t n;
	const void *bytes[ASYNC_CHAT_ALTERNATIVES_MAX];
	size_t len[ASYNC_CHAT_ALTERNATIVES_MAX];
};

struct fm_step {
	size_t frame; /* frames ended when term is set */
	struct fm_term term;
};

/* A frame, as offsets into the stream given to fm_run(). */
struct fm_frame {
	size_t off, len;
	int matched; /* as framer.matched: alternative, or 1 for a bare LF */
};

struct fm_result {
	struct fm_frame *frame;
	size_t n, cap;
	/* The bytes after the last frame: collected, never ended. */
	size_t tail_off, tail_len;
};

/* Terminator constructors; they keep the pointers, not copies. */
struct fm_term fm_none(void);
struct fm_term fm_count(uint64_t count);
struct fm_term fm_line(void);
struct fm_term fm_string(const void *bytes, size_t len);
struct fm_term fm_any(const void *const *bytes, const size_t *lens, size_t n);

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
