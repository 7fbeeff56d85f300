/*
 * evbuffer_trip.c - libevent's own cost of holding one small frame in an
 * evbuffer, as message mode must (async_chat_incoming() gets the frame,
 * push_buffer() takes it out): for each of N frames, add SIZE bytes to an
 * empty evbuffer, ask its length, pull it up, copy it out and drain it.
 * run-bench runs it under callgrind at two counts; the difference per
 * frame is what no message-mode server can go below on libevent 2.1,
 * which frees an evbuffer's last chain when the buffer is drained empty.
 *
 *   usage: evbuffer_trip N [SIZE]    (SIZE 1 to 4096, default 64)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

int
main(int argc, char **argv)
{
	static char src[4096], dst[4096];
	struct evbuffer *b;
	long n, i;
	size_t size = 64;

	if (argc < 2 || argc > 3 || (n = atol(argv[1])) <= 0 ||
	    (argc == 3 && ((size = (size_t)atol(argv[2])) == 0 ||
			      size > sizeof(src)))) {
		fprintf(stderr, "usage: %s N [SIZE]\n", argv[0]);
		return 2;
	}
	if ((b = evbuffer_new()) == NULL)
		return 1;
	memset(src, 'x', size);
	for (i = 0; i < n; i++) {
		const unsigned char *p;
		size_t len;

		if (evbuffer_add(b, src, size) < 0)
			return 1;
		len = evbuffer_get_length(b);
		if ((p = evbuffer_pullup(b, (ev_ssize_t)len)) == NULL)
			return 1;
		memcpy(dst, p, len);
		if (evbuffer_drain(b, len) < 0)
			return 1;
	}
	evbuffer_free(b);
	return dst[0] == 'x' ? 0 : 1;
}
