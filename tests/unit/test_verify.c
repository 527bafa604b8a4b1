/* Dataset verification over a DB written record by record: a good DB
 * passes; a short macrobatch that is not the last, a wrong first record
 * and an undecodable payload are each reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_dataset.h"
#include "mp_db.h"
#include "mp_image.h"
#include "mp_inspect.h"
#include "mp_macrobatch.h"
#include "mp_meta.h"

#include "../raw_db_meta.h"

/* Writes a DB of 1x1 raw records split into macrobatches of the given
 * sizes, with macrobatch_size declared as per_batch. */
static void write_db(const char *path, const int *sizes, int nbatches,
		     uint32_t per_batch, uint64_t first_shift, int bad_payload)
{
	mp_error e;
	mp_db_writer *w = mp_db_writer_open(path, 1 << 20, 1, &e);
	assert_non_null(w);
	uint64_t first = 0;
	for (int b = 0; b < nbatches; b++) {
		mp_mb_builder mb;
		mp_mb_builder_init(&mb);
		for (int i = 0; i < sizes[b]; i++) {
			static const uint8_t px[3] = {10, 20, 30};
			static const uint8_t not_png[4] = {0x89, 'X', 'Y', 'Z'};
			int broken = bad_payload && b == 0 && i == 1;
			mp_record r = {.label = i % 2, .height = 1, .width = 1, .channels = 3,
				       .encoding = broken ? MP_ENC_PNG : MP_ENC_RAW,
				       .name = "rec", .name_len = 3,
				       .payload = broken ? not_png : px,
				       .payload_len = broken ? 4 : 3};
			assert_int_equal(mp_mb_builder_add(&mb, &r, &e), 0);
		}
		uint8_t *buf;
		size_t len;
		assert_int_equal(mp_mb_builder_finish(&mb, first + (b ? first_shift : 0), &buf, &len, &e), 0);
		assert_int_equal(mp_db_writer_put(w, (uint64_t)b, buf, len, &e), 0);
		free(buf);
		mp_mb_builder_free(&mb);
		first += (uint64_t)sizes[b];
	}
	finish_raw_db(w, first, (uint64_t)nbatches, per_batch, 1, 2);
}

static char messages[4096];

static void collect(void *ctx, const char *msg)
{
	(void)ctx;
	strncat(messages, msg, sizeof messages - strlen(messages) - 2);
	strcat(messages, "\n");
}

static long verify(const char *path, uint64_t *checked)
{
	mp_error e;
	messages[0] = '\0';
	mp_source *s = mp_source_open(path, &e);
	assert_non_null(s);
	long failures = mp_verify(s, 1 << 20, collect, NULL, checked, NULL);
	mp_source_close(s);
	return failures;
}

static char dir[64];

static int make_dir(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/mp-test-verify-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd);
}

static void good_db_passes(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/good", dir);
	int sizes[] = {3, 3, 2};
	write_db(path, sizes, 3, 3, 0, 0);
	uint64_t checked;
	assert_int_equal(verify(path, &checked), 0);
	assert_int_equal(checked, 8);
}

static void short_batch_before_the_last_fails(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/short", dir);
	int sizes[] = {2, 3};
	write_db(path, sizes, 2, 3, 0, 0);
	uint64_t checked;
	assert_true(verify(path, &checked) >= 1);
	assert_non_null(strstr(messages, "macrobatch 0 holds 2 records, fewer than 3, but is not the last"));
}

static void wrong_first_record_fails(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/shift", dir);
	int sizes[] = {3, 1};
	write_db(path, sizes, 2, 3, 5, 0);
	uint64_t checked;
	assert_true(verify(path, &checked) >= 1);
	assert_non_null(strstr(messages, "macrobatch 1 starts at record 8, expected 3"));
}

static void undecodable_payload_fails(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/payload", dir);
	int sizes[] = {3};
	write_db(path, sizes, 1, 3, 0, 1);
	uint64_t checked;
	assert_int_equal(verify(path, &checked), 1);
	assert_non_null(strstr(messages, "record 1 (rec): payload is not png data"));
	assert_int_equal(checked, 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_db_passes),
		cmocka_unit_test(short_batch_before_the_last_fails),
		cmocka_unit_test(wrong_first_record_fails),
		cmocka_unit_test(undecodable_payload_fails),
	};
	return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
