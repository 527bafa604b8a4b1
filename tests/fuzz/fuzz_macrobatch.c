/* libFuzzer harness: the macrobatch record parser (mp_mb_parse).
 * The input is parsed as given, then again with its total length and CRC
 * made right, so that mutations reach the checks behind the CRC. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mp_macrobatch.h"

static volatile unsigned sink;

static void parse(const uint8_t *buf, size_t len)
{
	mp_macrobatch mb;
	mp_error e;
	if (mp_mb_parse(buf, len, &mb, &e) < 0)
		return;
	/* touch every byte a record points at */
	for (uint32_t i = 0; i < mb.count; i++) {
		const mp_record *r = &mb.records[i];
		for (uint32_t k = 0; k < r->name_len; k++)
			sink += (unsigned char)r->name[k];
		for (uint32_t k = 0; k < r->payload_len; k++)
			sink += r->payload[k];
	}
	mp_mb_free(&mb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	parse(data, size);
	if (size < MP_MB_HEADER + 4 || size > UINT32_MAX)
		return 0;
	uint8_t *copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	memcpy(copy, MP_MB_MAGIC, 8);
	mp_put_u32(copy + 24, (uint32_t)size);
	mp_put_u32(copy + size - 4, mp_crc32(0, copy, size - 4));
	parse(copy, size);
	free(copy);
	return 0;
}
