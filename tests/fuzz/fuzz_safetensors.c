/* libFuzzer harness: the safetensors reader (mp_st_parse). A file that
 * is accepted has every tensor read whole; rebuilt through the builder it
 * must be accepted again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_safetensors.h"
#include "mp_weights.h"

static void rebuild(const mp_st_file *f)
{
	mp_st_builder b;
	mp_error e;
	uint8_t *buf = NULL;
	size_t len;
	mp_st_builder_init(&b);
	for (size_t i = 0; i < f->ntensors; i++) {
		const mp_st_tensor *t = &f->tensors[i];
		if (mp_st_builder_add(&b, t->name, t->dtype, t->shape, t->ndim, t->data, &e) < 0)
			goto out;
	}
	for (size_t i = 0; i < f->nmeta; i++)
		if (strcmp(f->meta[i].key, MP_ST_CRC_KEY) &&
		    mp_st_builder_meta(&b, f->meta[i].key, f->meta[i].value, &e) < 0)
			goto out;
	if (mp_st_builder_serialize(&b, &buf, &len, &e) < 0)
		goto out;
	mp_st_file g;
	if (mp_st_parse(buf, len, "rebuilt", &g, &e) < 0) {
		fprintf(stderr, "rebuilt file refused: %s\n", e.msg);
		abort();
	}
	if (g.ntensors != f->ntensors)
		abort();
	mp_st_free(&g);
out:
	free(buf);
	mp_st_builder_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_st_file f;
	mp_error e;
	if (mp_st_parse(data, size, "fuzz", &f, &e) < 0)
		return 0;
	for (size_t i = 0; i < f.ntensors; i++) {
		const mp_st_tensor *t = &f.tensors[i];
		if (mp_st_find(&f, t->name) == NULL)
			abort();
		mp_tensor_stats s;
		mp_st_stats(t, &s);
	}
	for (size_t i = 0; i < f.nmeta; i++)
		if (!mp_st_meta_get(&f, f.meta[i].key))
			abort();
	rebuild(&f);
	mp_st_free(&f);
	return 0;
}
