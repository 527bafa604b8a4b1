/* The macrobatch: a group of records stored as one value (an LMDB value or a
 * stream frame). Layout, all little-endian (see mp-dataset(5)):
 *
 *   header  32 bytes  magic "MPMBATCH", u32 version, u32 count,
 *                     u64 first_record, u32 total_len, u32 flags (0)
 *   items   32 bytes each: i32 label, u32 height, u32 width, u8 channels,
 *                     u8 encoding, u16 reserved, u32 name_off, u32 name_len,
 *                     u32 payload_off, u32 payload_len
 *   names   packed, in item order, no terminators
 *   payloads packed, in item order
 *   crc     u32 CRC32 of every byte before it
 */
#ifndef MP_MACROBATCH_H
#define MP_MACROBATCH_H

#include <stddef.h>
#include <stdint.h>

#include "mp_util.h"

#define MP_MB_MAGIC "MPMBATCH"
#define MP_MB_VERSION 1
#define MP_MB_HEADER 32
#define MP_MB_ITEM 32
#define MP_MB_MAX_NAME 4096
#define MP_MB_MAX_COUNT (1u << 20)
#define MP_MB_MAX_DIM 65535

typedef struct {
	int32_t label; /* -1: none */
	uint32_t height, width;
	uint8_t channels, encoding;
	const char *name; /* not NUL-terminated */
	uint32_t name_len;
	const uint8_t *payload;
	uint32_t payload_len;
} mp_record;

/* A parsed macrobatch: records point into the buffer that was parsed. */
typedef struct {
	uint32_t count;
	uint64_t first_record;
	mp_record *records;
} mp_macrobatch;

/* Checks every bound, the layout and the CRC before trusting anything. */
int mp_mb_parse(const uint8_t *buf, size_t len, mp_macrobatch *mb, mp_error *e);
void mp_mb_free(mp_macrobatch *mb);

/* Builds a macrobatch by appending records. Names are copied; payloads
 * are kept by reference (the writer would otherwise copy every image once
 * more), so they must stay valid until the macrobatch is written. */
typedef struct {
	uint32_t count, cap;
	mp_record *items; /* payload pointers; names kept in one buffer */
	uint8_t *names;
	size_t names_len, names_cap, payloads_len;
} mp_mb_builder;

void mp_mb_builder_init(mp_mb_builder *b);
int mp_mb_builder_add(mp_mb_builder *b, const mp_record *r, mp_error *e);
/* The serialized size of the records added so far; fails when there are
 * none or the macrobatch would exceed 4 GiB. */
int mp_mb_builder_size(const mp_mb_builder *b, size_t *len, mp_error *e);
/* Serializes into buf, of exactly mp_mb_builder_size bytes, and returns
 * the CRC32 of all of it (the stream's frame CRC builds on it). The
 * builder is unchanged: writing again gives the same bytes. */
uint32_t mp_mb_builder_write(const mp_mb_builder *b, uint64_t first_record, uint8_t *buf);
/* Empties the builder for the next macrobatch. */
void mp_mb_builder_reset(mp_mb_builder *b);
/* Serializes into a new buffer; the builder is reset for the next macrobatch. */
int mp_mb_builder_finish(mp_mb_builder *b, uint64_t first_record, uint8_t **buf,
			 size_t *len, mp_error *e);
void mp_mb_builder_free(mp_mb_builder *b);

#endif
