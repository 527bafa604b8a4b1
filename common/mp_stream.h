/* The dataset stream: the records of a dataset framed for a pipe.
 *   header  16 bytes: magic "MPSTREAM", u32 version, u32 flags (0)
 *   frames  u32 kind, u32 length, payload[length], u32 CRC32 of the kind,
 *           length and payload bytes
 * Kinds: 1 meta (JSON), 2 macrobatch (the same bytes as an LMDB value),
 * 3 end (JSON: final record count, macrobatches, mean, skipped). A stream
 * without its end frame is truncated. */
#ifndef MP_STREAM_H
#define MP_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mp_util.h"

#define MP_STREAM_MAGIC "MPSTREAM"
#define MP_STREAM_VERSION 1
#define MP_STREAM_MAX_FRAME (1u << 30)

enum { MP_FRAME_META = 1, MP_FRAME_MACROBATCH = 2, MP_FRAME_END = 3 };

int mp_stream_write_header(FILE *f, const char *name, mp_error *e);
int mp_stream_write_frame(FILE *f, const char *name, uint32_t kind,
			  const void *payload, size_t len, mp_error *e);

typedef struct {
	FILE *f;
	const char *name;
	uint64_t frames;
	int ended;
	uint8_t *buf;
	size_t cap;
} mp_stream_reader;

/* Reads and checks the 16-byte stream header. */
int mp_stream_reader_open(mp_stream_reader *r, FILE *f, const char *name,
			  mp_error *e);
/* Reads the next frame into r->buf (valid until the next call): 1 frame,
 * 0 after the end frame, -1 on a truncated or corrupt stream, which
 * includes one with bytes after its end frame (the input must end there). */
int mp_stream_next(mp_stream_reader *r, uint32_t *kind, const uint8_t **payload,
		   size_t *len, mp_error *e);
void mp_stream_reader_close(mp_stream_reader *r);

#endif
