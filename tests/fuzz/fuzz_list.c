/* libFuzzer harness: the list-file and categories readers (mp_list_read,
 * mp_categories_read) on a FILE from fmemopen. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0; /* fmemopen wants a buffer */
	FILE *f = fmemopen((void *)data, size, "rb");
	if (!f)
		return 0;
	mp_error e;
	mp_list l;
	static const int nclasses[] = {0, 3, 100};
	for (int k = 0; k < 3; k++) {
		rewind(f);
		if (mp_list_read(f, "fuzz", nclasses[k], &l, &e) == 0) {
			for (size_t i = 0; i < l.count; i++)
				if (!l.items[i].path[0] || (l.labelled && l.items[i].label < 0) ||
				    l.items[i].label > l.max_label)
					abort();
			mp_list_shuffle(&l, size);
			mp_list_free(&l);
		}
	}
	rewind(f);
	char **names;
	int count;
	if (mp_categories_read(f, "fuzz", &names, &count, &e) == 0) {
		for (int i = 0; i < count; i++)
			if (!names[i])
				abort();
		mp_categories_free(names, count);
	}
	fclose(f);
	return 0;
}
