/* libFuzzer harness: the meta document parser (mp_meta_from_json) and the
 * end frame (mp_meta_apply_end). A document that parses must write back
 * and parse again to the same fields. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_meta m, again;
	mp_error e;
	if (mp_meta_from_json((const char *)data, size, &m, &e) == 0) {
		mp_meta_apply_end(&m, (const char *)data, size, &e);
		char *text = mp_meta_to_json(&m, &e);
		if (!text)
			abort();
		if (mp_meta_from_json(text, strlen(text), &again, &e) < 0) {
			fprintf(stderr, "round trip failed: %s\n%s\n", e.msg, text);
			abort();
		}
		if (again.records != m.records || again.classes != m.classes ||
		    again.height != m.height || again.has_mean != m.has_mean ||
		    again.shuffled != m.shuffled || again.shuffle_seed != m.shuffle_seed ||
		    memcmp(again.mean, m.mean, sizeof m.mean))
			abort();
		mp_meta_free(&again);
		free(text);
		mp_meta_free(&m);
	}
	mp_meta_init(&m);
	mp_meta_apply_end(&m, (const char *)data, size, &e);
	return 0;
}
