/* libFuzzer harness: the dataset stream reader (mp_stream_*) on a FILE
 * from fmemopen, with each frame handed on as mp_source_next does: the
 * meta frame to mp_meta_from_json, macrobatches to mp_mb_parse, the end
 * frame to mp_meta_apply_end. The input is read as given, then again with
 * every frame's CRC made right. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_macrobatch.h"
#include "mp_meta.h"
#include "mp_stream.h"

static void read_stream(const uint8_t *data, size_t size)
{
	if (size == 0)
		return; /* fmemopen wants a buffer */
	FILE *f = fmemopen((void *)data, size, "rb");
	if (!f)
		return;
	mp_stream_reader r;
	mp_error e;
	mp_meta meta;
	int have_meta = 0;
	if (mp_stream_reader_open(&r, f, "fuzz", &e) == 0) {
		uint32_t kind;
		const uint8_t *p;
		size_t n;
		while (mp_stream_next(&r, &kind, &p, &n, &e) > 0) {
			if (kind == MP_FRAME_META) {
				if (mp_meta_from_json((const char *)p, n, &meta, &e) < 0)
					break;
				have_meta = 1;
			} else if (kind == MP_FRAME_MACROBATCH) {
				mp_macrobatch mb;
				if (mp_mb_parse(p, n, &mb, &e) == 0)
					mp_mb_free(&mb);
			} else if (kind == MP_FRAME_END && have_meta) {
				mp_meta_apply_end(&meta, (const char *)p, n, &e);
			}
		}
	}
	if (have_meta)
		mp_meta_free(&meta);
	mp_stream_reader_close(&r);
	fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	read_stream(data, size);
	if (size < 16)
		return 0;
	uint8_t *copy = malloc(size);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	for (size_t at = 16; at + 12 <= size;) {
		uint32_t n = mp_get_u32(copy + at + 4);
		if (n > size - at - 12)
			break;
		uint32_t crc = mp_crc32(0, copy + at, 8);
		crc = mp_crc32(crc, copy + at + 8, n);
		mp_put_u32(copy + at + 8 + n, crc);
		at += 12 + (size_t)n;
	}
	read_stream(copy, size);
	free(copy);
	return 0;
}
