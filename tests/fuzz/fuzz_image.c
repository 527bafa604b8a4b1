/* libFuzzer harness: the image decoders' wrappers (mp_image_decode for
 * JPEG and PNG from memory) with a small pixel limit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_image.h"

#define MAX_PIXELS (1u << 16)

static mp_codec *codec;
static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_error e;
	if (!codec && !(codec = mp_codec_new(&e))) {
		fprintf(stderr, "%s\n", e.msg);
		abort();
	}
	mp_image img;
	if (mp_image_decode(codec, data, size, MAX_PIXELS, &img, &e) < 0)
		return 0;
	if (img.width < 1 || img.height < 1 || (uint64_t)img.width * img.height > MAX_PIXELS)
		abort();
	/* every pixel was written (MSan would say more; ASan checks bounds) */
	size_t n = (size_t)img.width * img.height * 3;
	sink += img.px[0] + img.px[n - 1];
	mp_image_free(&img);
	return 0;
}
