/* Macrobatch, stream and meta codecs: round trips, and every truncation and
 * flipped byte is caught before anything is trusted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "mp_image.h"
#include "mp_macrobatch.h"
#include "mp_meta.h"
#include "mp_stream.h"

/* Three records of different encodings and sizes, into recs. */
static void sample_records(mp_record recs[3])
{
	static uint8_t raw[2 * 3 * 3];
	for (size_t i = 0; i < sizeof raw; i++)
		raw[i] = (uint8_t)(i * 17);
	static const uint8_t jpeg[] = {0xff, 0xd8, 0xff, 0xe0, 1, 2, 3};
	static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 9};
	const mp_record all[3] = {
		{.label = 3, .height = 2, .width = 3, .channels = 3, .encoding = MP_ENC_RAW,
		 .name = "a/raw.bin", .name_len = 9, .payload = raw, .payload_len = sizeof raw},
		{.label = 0, .height = 128, .width = 128, .channels = 3, .encoding = MP_ENC_JPEG,
		 .name = "b c.jpg", .name_len = 7, .payload = jpeg, .payload_len = sizeof jpeg},
		{.label = -1, .height = 5, .width = 7, .channels = 3, .encoding = MP_ENC_PNG,
		 .name = "x.png", .name_len = 5, .payload = png, .payload_len = sizeof png},
	};
	memcpy(recs, all, sizeof all);
}

/* The three sample records as one macrobatch. */
static void build_batch(uint8_t **buf, size_t *len)
{
	mp_record recs[3];
	sample_records(recs);
	mp_mb_builder b;
	mp_error e;
	mp_mb_builder_init(&b);
	for (int i = 0; i < 3; i++)
		assert_int_equal(mp_mb_builder_add(&b, &recs[i], &e), 0);
	assert_int_equal(mp_mb_builder_finish(&b, 2048, buf, len, &e), 0);
	mp_mb_builder_free(&b);
}

static void macrobatch_round_trip(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_batch(&buf, &len);
	mp_macrobatch mb;
	mp_error e;
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), 0);
	assert_int_equal(mb.count, 3);
	assert_int_equal(mb.first_record, 2048);
	assert_int_equal(mb.records[0].label, 3);
	assert_int_equal(mb.records[0].payload_len, 18);
	assert_int_equal(mb.records[0].payload[5], 85);
	assert_memory_equal(mb.records[1].name, "b c.jpg", 7);
	assert_int_equal(mb.records[1].encoding, MP_ENC_JPEG);
	assert_int_equal(mb.records[2].label, -1);
	assert_int_equal(mb.records[2].width, 7);
	assert_int_equal(mb.records[2].payload[8], 9);
	mp_mb_free(&mb);
	free(buf);
}

/* What the batch writer stores in place: the same bytes as finish, again
 * on a second write (LMDB may ask twice), with the CRC of all of them. */
static void macrobatch_written_in_place(void **state)
{
	(void)state;
	uint8_t *ref;
	size_t ref_len;
	build_batch(&ref, &ref_len);
	mp_record recs[3];
	sample_records(recs);
	mp_mb_builder b;
	mp_error e;
	mp_mb_builder_init(&b);
	for (int i = 0; i < 3; i++) {
		/* names are copied: the caller's may go away */
		char name[16];
		memcpy(name, recs[i].name, recs[i].name_len);
		recs[i].name = name;
		assert_int_equal(mp_mb_builder_add(&b, &recs[i], &e), 0);
		memset(name, '?', sizeof name);
	}
	size_t len;
	assert_int_equal(mp_mb_builder_size(&b, &len, &e), 0);
	assert_int_equal(len, ref_len);
	uint8_t *buf = malloc(len);
	assert_non_null(buf);
	for (int pass = 0; pass < 2; pass++) {
		memset(buf, pass ? 0xff : 0, len);
		uint32_t crc = mp_mb_builder_write(&b, 2048, buf);
		assert_memory_equal(buf, ref, len);
		assert_int_equal(crc, (uint32_t)crc32(0, buf, (uInt)len));
	}
	mp_mb_builder_reset(&b);
	assert_int_equal(mp_mb_builder_size(&b, &len, &e), -1);
	assert_non_null(strstr(e.msg, "empty"));
	mp_mb_builder_free(&b);
	free(buf);
	free(ref);
}

static void macrobatch_every_flip_and_cut_is_caught(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	build_batch(&buf, &len);
	mp_macrobatch mb;
	mp_error e;
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[i] ^= (uint8_t)(1 << bit);
			assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
			buf[i] ^= (uint8_t)(1 << bit);
		}
	}
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(mp_mb_parse(buf, cut, &mb, &e), -1);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), 0);
	mp_mb_free(&mb);
	free(buf);
}

/* Fixes the CRC after a deliberate edit, to reach the structural checks. */
static void reseal(uint8_t *buf, size_t len)
{
	mp_put_u32(buf + len - 4, mp_crc32(0, buf, len - 4));
}

static void macrobatch_bounds_checked_behind_crc(void **state)
{
	(void)state;
	uint8_t *buf;
	size_t len;
	mp_macrobatch mb;
	mp_error e;
	build_batch(&buf, &len);
	/* an item count far beyond the buffer */
	mp_put_u32(buf + 12, 1000000);
	reseal(buf, len);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
	free(buf);
	/* a payload length that overruns */
	build_batch(&buf, &len);
	mp_put_u32(buf + MP_MB_HEADER + 2 * MP_MB_ITEM + 28, 0x7fffffff);
	reseal(buf, len);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
	free(buf);
	/* a raw payload whose size disagrees with its geometry */
	build_batch(&buf, &len);
	mp_put_u32(buf + MP_MB_HEADER + 4, 3);
	reseal(buf, len);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
	assert_non_null(strstr(e.msg, "item 0"));
	free(buf);
	/* overlapping names: item 1 pointing at item 0's name */
	build_batch(&buf, &len);
	mp_put_u32(buf + MP_MB_HEADER + MP_MB_ITEM + 16,
		   mp_get_u32(buf + MP_MB_HEADER + 16));
	reseal(buf, len);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
	free(buf);
	/* an unknown encoding */
	build_batch(&buf, &len);
	buf[MP_MB_HEADER + 13] = 9;
	reseal(buf, len);
	assert_int_equal(mp_mb_parse(buf, len, &mb, &e), -1);
	free(buf);
}

static char *stream_bytes(size_t *len, int with_end)
{
	char *mem = NULL;
	FILE *f = open_memstream(&mem, len);
	mp_error e;
	uint8_t *mb;
	size_t mblen;
	build_batch(&mb, &mblen);
	assert_int_equal(mp_stream_write_header(f, "mem", &e), 0);
	assert_int_equal(mp_stream_write_frame(f, "mem", MP_FRAME_META, "{}", 2, &e), 0);
	assert_int_equal(mp_stream_write_frame(f, "mem", MP_FRAME_MACROBATCH, mb, mblen, &e), 0);
	if (with_end)
		assert_int_equal(mp_stream_write_frame(f, "mem", MP_FRAME_END, "{\"x\":1}", 7, &e), 0);
	fclose(f);
	free(mb);
	return mem;
}

/* Reads a whole stream; returns 0 if it ends cleanly, -1 on error. */
static int read_stream(const char *buf, size_t len, int *frames, mp_error *e)
{
	FILE *f = fmemopen((void *)buf, len, "r");
	mp_stream_reader r;
	int rc = mp_stream_reader_open(&r, f, "mem", e);
	*frames = 0;
	while (rc == 0) {
		uint32_t kind;
		const uint8_t *p;
		size_t n;
		int got = mp_stream_next(&r, &kind, &p, &n, e);
		if (got == 0)
			break;
		if (got < 0) {
			rc = -1;
			break;
		}
		(*frames)++;
	}
	mp_stream_reader_close(&r);
	fclose(f);
	return rc;
}

static void stream_round_trip(void **state)
{
	(void)state;
	size_t len;
	char *s = stream_bytes(&len, 1);
	int frames;
	mp_error e;
	assert_int_equal(read_stream(s, len, &frames, &e), 0);
	assert_int_equal(frames, 3);
	free(s);
}

static void stream_truncation_and_flips(void **state)
{
	(void)state;
	size_t len;
	char *s = stream_bytes(&len, 1);
	int frames;
	mp_error e;
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(read_stream(s, cut, &frames, &e), -1);
	for (size_t i = 0; i < len; i++) {
		s[i] ^= 0x20;
		assert_int_equal(read_stream(s, len, &frames, &e), -1);
		s[i] ^= 0x20;
	}
	free(s);
	s = stream_bytes(&len, 0);
	assert_int_equal(read_stream(s, len, &frames, &e), -1);
	assert_non_null(strstr(e.msg, "no end frame"));
	free(s);
}

/* An empty input and a cut inside the magic are named as such, not as a
 * file of another kind. */
static void stream_empty_and_cut_header(void **state)
{
	(void)state;
	size_t len;
	char *s = stream_bytes(&len, 1);
	int frames;
	mp_error e;
	assert_int_equal(read_stream(s, 0, &frames, &e), -1);
	assert_string_equal(e.msg, "mem: empty input: no dataset stream");
	for (size_t cut = 1; cut < 16; cut++) {
		assert_int_equal(read_stream(s, cut, &frames, &e), -1);
		assert_string_equal(e.msg, "mem: truncated stream header");
	}
	s[3] = 'x';
	assert_int_equal(read_stream(s, 5, &frames, &e), -1);
	assert_string_equal(e.msg, "mem: not a dataset stream (bad magic)");
	free(s);
}

/* The input ends with the end frame: a byte after it, or a second stream,
 * is refused rather than left unread. */
static void stream_data_after_end(void **state)
{
	(void)state;
	size_t len;
	char *s = stream_bytes(&len, 1);
	int frames;
	mp_error e;
	char *two = malloc(2 * len);
	assert_non_null(two);
	memcpy(two, s, len);
	memcpy(two + len, s, len);
	assert_int_equal(read_stream(two, len + 1, &frames, &e), -1);
	assert_string_equal(e.msg, "mem: corrupt stream: data after the end frame "
				   "(two streams concatenated?)");
	assert_int_equal(read_stream(two, 2 * len, &frames, &e), -1);
	assert_int_equal(frames, 2);
	assert_int_equal(read_stream(two, len, &frames, &e), 0);
	assert_int_equal(frames, 3);
	free(two);
	free(s);
}

static void stream_huge_length_does_not_allocate(void **state)
{
	(void)state;
	/* header + a frame claiming 1 GiB with 10 bytes behind it */
	uint8_t buf[16 + 8 + 10] = {0};
	memcpy(buf, MP_STREAM_MAGIC, 8);
	mp_put_u32(buf + 8, MP_STREAM_VERSION);
	mp_put_u32(buf + 16, MP_FRAME_META);
	mp_put_u32(buf + 20, MP_STREAM_MAX_FRAME);
	int frames;
	mp_error e;
	assert_int_equal(read_stream((char *)buf, sizeof buf, &frames, &e), -1);
	assert_non_null(strstr(e.msg, "truncated"));
	mp_put_u32(buf + 20, MP_STREAM_MAX_FRAME + 1u);
	assert_int_equal(read_stream((char *)buf, sizeof buf, &frames, &e), -1);
	assert_non_null(strstr(e.msg, "exceeds"));
}

static void meta_round_trip(void **state)
{
	(void)state;
	mp_meta m, r;
	mp_error e;
	mp_meta_init(&m);
	m.complete = 1;
	m.records = 100000;
	m.macrobatch_size = 1024;
	m.macrobatches = 98;
	m.height = m.width = 136;
	m.size = 128;
	m.padding = 4;
	strcpy(m.fit, "pad");
	strcpy(m.pad_fill, "edge");
	strcpy(m.encoding, "keep");
	m.quality = 95;
	m.has_mean = 1;
	m.mean[0] = 117.38123456789012;
	m.mean[1] = 113.0;
	m.mean[2] = 104.1 / 3;
	m.labelled = 1;
	m.classes = 2;
	m.class_names = calloc(2, sizeof(char *));
	m.class_names[0] = strdup("/a/abbey");
	m.class_names[1] = strdup("/b/bar \"quoted\"");
	m.source_list = strdup("train.txt");
	m.skipped = 3;
	strcpy(m.created_by, "test");
	char *json = mp_meta_to_json(&m, &e);
	assert_non_null(json);
	assert_int_equal(mp_meta_from_json(json, strlen(json), &r, &e), 0);
	assert_int_equal(r.records, 100000);
	assert_int_equal(r.height, 136);
	assert_true(r.mean[0] == m.mean[0]); /* doubles survive exactly */
	assert_true(r.mean[2] == m.mean[2]);
	assert_string_equal(r.class_names[1], "/b/bar \"quoted\"");
	assert_string_equal(r.pad_fill, "edge");
	assert_int_equal(r.skipped, 3);
	assert_int_equal(r.format_version, MP_META_VERSION);
	assert_true(r.has_crc);
	assert_int_equal(strncmp(json, "{\n\t\"crc32\":\t\"", 13), 0); /* the CRC first */
	/* trailing white space is fine once the CRC covers it; any other byte
	 * after the document, as a damaged length in a DB would take in, is not */
	size_t n = strlen(json);
	char *more = malloc(n + 8);
	assert_non_null(more);
	memcpy(more, json, n);
	memcpy(more + n, " \n\t\r", 4);
	mp_meta_free(&r);
	assert_int_equal(mp_meta_from_json(more, n + 4, &r, &e), -1);
	assert_non_null(strstr(e.msg, "meta: CRC mismatch: the document is damaged"));
	assert_int_equal(mp_meta_seal(more, n + 4, &e), 0);
	assert_int_equal(mp_meta_from_json(more, n + 4, &r, &e), 0);
	mp_meta_free(&r);
	memcpy(more + n, "\n\x01\x02", 3);
	assert_int_equal(mp_meta_seal(more, n + 3, &e), 0);
	assert_int_equal(mp_meta_from_json(more, n + 3, &r, &e), -1);
	assert_string_equal(e.msg, "meta: not well-formed JSON");
	memcpy(more + n, "\n\0", 2);
	assert_int_equal(mp_meta_from_json(more, n + 2, &r, &e), -1);
	memcpy(more + n, "{}", 2);
	assert_int_equal(mp_meta_from_json(more, n + 2, &r, &e), -1);
	free(more);
	free(json);
	mp_meta_free(&r);
	mp_meta_free(&m);
}

static void meta_rejects_bad_documents(void **state)
{
	(void)state;
	mp_meta m;
	mp_error e;
	const char *bad[] = {
		"",
		"{",
		"[]",
		"{\"format\":\"other\"}",
		"{\"format\":\"mp-dataset\",\"format_version\":2}",
		"{\"format\":\"mp-dataset\",\"format_version\":3}",
		("{\"format\":\"mp-dataset\",\"format_version\":1,\"complete\":true,"
		 "\"records\":-5}"),
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(mp_meta_from_json(bad[i], strlen(bad[i]), &m, &e), -1);
}

/* A valid document with one field replaced by text. */
static int parse_with(const char *field, const char *value, mp_error *e)
{
	mp_meta m;
	mp_meta_init(&m);
	m.complete = 1;
	m.records = 10;
	m.macrobatches = 1;
	m.macrobatch_size = 16;
	m.height = m.width = m.size = 8;
	strcpy(m.fit, "pad");
	strcpy(m.pad_fill, "mean");
	strcpy(m.encoding, "raw");
	m.source_list = strdup("l.txt");
	char *json = mp_meta_to_json(&m, e);
	mp_meta_free(&m);
	assert_non_null(json);
	if (field) {
		char key[64];
		snprintf(key, sizeof key, "\"%s\":\t", field);
		char *at = strstr(json, key);
		assert_non_null(at);
		char *val = at + strlen(key), *end = strpbrk(val, ",\n");
		char out[4096];
		snprintf(out, sizeof out, "%.*s%s%s", (int)(val - json), json, value, end);
		free(json);
		json = strdup(out);
		assert_int_equal(mp_meta_seal(json, strlen(json), e), 0);
	}
	mp_meta r;
	int rc = mp_meta_from_json(json, strlen(json), &r, e);
	if (rc == 0)
		mp_meta_free(&r);
	free(json);
	return rc;
}

static void meta_checks_words_counts_geometry(void **state)
{
	(void)state;
	mp_error e;
	assert_int_equal(parse_with(NULL, NULL, &e), 0);
	assert_int_equal(parse_with("shuffle_seed", "7", &e), 0);
	assert_int_equal(parse_with("fit", "\"squash\"", &e), -1);
	assert_non_null(strstr(e.msg, "fit"));
	assert_int_equal(parse_with("pad_fill", "\"blue\"", &e), -1);
	assert_int_equal(parse_with("encoding", "\"gif\"", &e), -1);
	assert_int_equal(parse_with("records", "10.5", &e), -1);
	assert_non_null(strstr(e.msg, "integer"));
	assert_int_equal(parse_with("skipped", "-1", &e), -1);
	assert_int_equal(parse_with("height", "9", &e), -1);
	assert_int_equal(parse_with("padding", "1", &e), -1);
	assert_int_equal(parse_with("macrobatches", "2", &e), -1);
	assert_int_equal(parse_with("shuffle_seed", "\"x\"", &e), -1);
}

/* The ranges of mp-dataset(5), with the bounds in the message in full. */
static void meta_ranges_are_the_pages(void **state)
{
	(void)state;
	mp_error e;
	assert_int_equal(parse_with("skipped", "1000000000000000", &e), 0);
	assert_int_equal(parse_with("skipped", "1000000000000001", &e), -1);
	assert_string_equal(e.msg, "meta: \"skipped\" = 1000000000000001 is outside "
				   "0..1000000000000000");
	assert_int_equal(parse_with("records", "1000000000000001", &e), -1);
	assert_string_equal(e.msg, "meta: \"records\" = 1000000000000001 is outside "
				   "0..1000000000000000");
	assert_int_equal(parse_with("records", "9007199254740992", &e), -1);
	assert_int_equal(parse_with("macrobatches", "1000000000001", &e), -1);
	assert_string_equal(e.msg, "meta: \"macrobatches\" = 1000000000001 is outside "
				   "0..1000000000000");
	assert_int_equal(parse_with("shuffle_seed", "999999999999999", &e), 0);
	assert_int_equal(parse_with("shuffle_seed", "1000000000000000", &e), -1);
	assert_string_equal(e.msg, "meta: \"shuffle_seed\" = 1000000000000000 is outside "
				   "0..999999999999999");
	assert_int_equal(parse_with("macrobatch_size", "1048577", &e), -1);
	assert_string_equal(e.msg, "meta: \"macrobatch_size\" = 1048577 is outside 1..1048576");
	assert_int_equal(parse_with("quality", "100.5", &e), -1);
	assert_string_equal(e.msg, "meta: \"quality\" = 100.5 is outside 0..100");
	assert_int_equal(parse_with("quality", "1e300", &e), -1);
	assert_string_equal(e.msg, "meta: \"quality\" = 1.0000000000000001e+300 is outside 0..100");
}

/* A small complete document, as mp_meta_to_json writes it. */
static char *small_doc(void)
{
	mp_meta m;
	mp_error e;
	mp_meta_init(&m);
	m.complete = 1;
	m.records = 10;
	m.macrobatches = 1;
	m.macrobatch_size = 16;
	m.height = m.width = m.size = 8;
	m.has_mean = 1;
	m.mean[0] = 120.5;
	m.labelled = 1;
	m.classes = 2;
	m.class_names = calloc(2, sizeof(char *));
	m.class_names[0] = strdup("a");
	m.class_names[1] = strdup("b");
	strcpy(m.fit, "pad");
	strcpy(m.pad_fill, "mean");
	strcpy(m.encoding, "raw");
	m.source_list = strdup("l.txt");
	char *json = mp_meta_to_json(&m, &e);
	mp_meta_free(&m);
	assert_non_null(json);
	return json;
}

/* The document's CRC: every flipped bit is refused (the JSON breaks, or the
 * CRC does not match, or the key is damaged and version 2 has none); a
 * version 1 document without it is still read; the CRC stands first. */
static void meta_crc(void **state)
{
	(void)state;
	mp_meta r;
	mp_error e;
	char *json = small_doc();
	size_t n = strlen(json);
	for (size_t i = 0; i < n; i++)
		for (int bit = 0; bit < 8; bit++) {
			json[i] ^= (char)(1 << bit);
			if (mp_meta_from_json(json, n, &r, &e) == 0)
				fail_msg("byte %zu bit %d flipped: accepted", i, bit);
			json[i] ^= (char)(1 << bit);
		}
	assert_int_equal(mp_meta_from_json(json, n, &r, &e), 0);
	mp_meta_free(&r);
	/* the key damaged: not a document without a CRC */
	char *key = strstr(json, "\"crc32\"");
	assert_ptr_equal(key, json + 3);
	key[5] = '3';
	assert_int_equal(mp_meta_from_json(json, n, &r, &e), -1);
	assert_string_equal(e.msg, "meta: \"crc32\" is missing or damaged: format_version 2 "
				   "has it as the first member of the document");
	key[5] = '2';
	/* not 8 lowercase hex digits */
	key[10] = 'A';
	assert_int_equal(mp_meta_from_json(json, n, &r, &e), -1);
	assert_string_equal(e.msg, "meta: \"crc32\" is not 8 lowercase hex digits");
	/* the old form: no CRC, format_version 1 */
	char *end = strchr(key, '\n'), *ver = strstr(json, "\"format_version\":\t2");
	assert_non_null(end);
	assert_non_null(ver);
	ver[strlen("\"format_version\":\t")] = '1';
	char *old = malloc(n + 1);
	assert_non_null(old);
	snprintf(old, n + 1, "{%s", end + 1);
	assert_int_equal(mp_meta_from_json(old, strlen(old), &r, &e), 0);
	assert_false(r.has_crc);
	assert_int_equal(r.format_version, 1);
	assert_int_equal(r.records, 10);
	mp_meta_free(&r);
	/* a CRC anywhere but first is refused, whatever the version */
	char *moved = malloc(n + 64);
	assert_non_null(moved);
	snprintf(moved, n + 64, "{\"format\":\"mp-dataset\",\"crc32\":\"00000000\",%s",
		 strchr(old, '\n') + 1);
	assert_int_equal(mp_meta_from_json(moved, strlen(moved), &r, &e), -1);
	assert_string_equal(e.msg, "meta: \"crc32\" is not where it must be: the first member "
				   "of the document");
	/* a version 1 document with the CRC first has it checked */
	snprintf(moved, n + 64, "{\"crc32\":\"00000000\",%s", old + 1);
	assert_int_equal(mp_meta_from_json(moved, strlen(moved), &r, &e), -1);
	assert_non_null(strstr(e.msg, "meta: CRC mismatch"));
	assert_int_equal(mp_meta_seal(moved, strlen(moved), &e), 0);
	assert_int_equal(mp_meta_from_json(moved, strlen(moved), &r, &e), 0);
	assert_true(r.has_crc);
	assert_int_equal(r.format_version, 1);
	mp_meta_free(&r);
	/* a version 1 document is written back as version 2 */
	char *again = mp_meta_to_json(&(mp_meta){.format_version = 1, .channels = 3,
						  .macrobatch_size = 1, .height = 1, .width = 1,
						  .size = 1, .fit = "pad", .pad_fill = "mean",
						  .encoding = "raw"}, &e);
	assert_non_null(again);
	assert_int_equal(mp_meta_from_json(again, strlen(again), &r, &e), 0);
	assert_int_equal(r.format_version, 2);
	mp_meta_free(&r);
	free(again);
	free(moved);
	free(old);
	free(json);
}

/* shuffle_seed must be there, but in version 1 documents, which were
 * written without it before it came. */
static void meta_needs_shuffle_seed_from_version_2(void **state)
{
	(void)state;
	mp_meta r;
	mp_error e;
	char *json = small_doc();
	char *seed = strstr(json, "\t\"shuffle_seed\":\tnull,\n");
	assert_non_null(seed);
	memmove(seed, seed + strlen("\t\"shuffle_seed\":\tnull,\n"),
		strlen(seed + strlen("\t\"shuffle_seed\":\tnull,\n")) + 1);
	assert_int_equal(mp_meta_seal(json, strlen(json), &e), 0);
	assert_int_equal(mp_meta_from_json(json, strlen(json), &r, &e), -1);
	assert_string_equal(e.msg, "meta: \"shuffle_seed\" is missing (null when the list "
				   "was not shuffled)");
	/* version 1, without a CRC */
	char *ver = strstr(json, "\"format_version\":\t2");
	assert_non_null(ver);
	ver[strlen("\"format_version\":\t")] = '1';
	char *old = malloc(strlen(json) + 1);
	assert_non_null(old);
	sprintf(old, "{%s", strchr(json + 2, '\n') + 1);
	assert_int_equal(mp_meta_from_json(old, strlen(old), &r, &e), 0);
	assert_false(r.shuffled);
	mp_meta_free(&r);
	free(old);
	free(json);
}

/* small_doc with text put in before its closing brace, sealed anew. */
static int parse_extended(const char *more, mp_error *e)
{
	char *json = small_doc();
	char out[8192];
	char *close = strrchr(json, '}');
	assert_non_null(close);
	snprintf(out, sizeof out, "%.*s,%s\n}", (int)(close - json - 1), json, more);
	free(json);
	assert_int_equal(mp_meta_seal(out, strlen(out), e), 0);
	mp_meta r;
	int rc = mp_meta_from_json(out, strlen(out), &r, e);
	if (rc == 0)
		mp_meta_free(&r);
	return rc;
}

/* A member given twice is refused, at any depth, the CRC's too; so is
 * a document that is not UTF-8. */
static void meta_refuses_duplicates_and_bad_utf8(void **state)
{
	(void)state;
	mp_error e;
	assert_int_equal(parse_extended("\"zz\": {\"a\": 1, \"b\": [{\"a\": 2}]}", &e), 0);
	assert_int_equal(parse_extended("\"crc32\": \"00000000\"", &e), -1);
	assert_string_equal(e.msg, "meta: member \"crc32\" appears more than once");
	assert_int_equal(parse_extended("\"records\": 3", &e), -1);
	assert_string_equal(e.msg, "meta: member \"records\" appears more than once");
	assert_int_equal(parse_extended("\"zz\": [{\"a\": 1, \"b\": 2, \"a\": 1}]", &e), -1);
	assert_string_equal(e.msg, "meta: member \"a\" appears more than once");
	/* a byte 0xff in source_list, the CRC made anew */
	char *json = small_doc();
	char *src = strstr(json, "l.txt");
	assert_non_null(src);
	src[1] = (char)0xff;
	assert_int_equal(mp_meta_seal(json, strlen(json), &e), 0);
	mp_meta r;
	assert_int_equal(mp_meta_from_json(json, strlen(json), &r, &e), -1);
	char want[64];
	snprintf(want, sizeof want, "meta: not UTF-8 text (byte 0xff at offset %zu)",
		 (size_t)(src + 1 - json));
	assert_string_equal(e.msg, want);
	free(json);
	/* the end frame's members too */
	json = small_doc();
	assert_int_equal(mp_meta_from_json(json, strlen(json), &r, &e), 0);
	const char *end = "{\"records\":10,\"macrobatches\":1,\"mean\":null,\"skipped\":0,"
			  "\"records\":10}";
	assert_int_equal(mp_meta_apply_end(&r, end, strlen(end), &e), -1);
	assert_string_equal(e.msg, "end frame: member \"records\" appears more than once");
	mp_meta_free(&r);
	free(json);
}

/* The CRC is that of the exact bytes with its digits as "00000000",
 * computed here by zlib as another implementation would. */
static void meta_crc_is_zlib_crc32(void **state)
{
	(void)state;
	char *json = small_doc();
	size_t n = strlen(json);
	char *digits = strstr(json, "\"crc32\":\t\"") + 10, stored[9];
	memcpy(stored, digits, 8);
	stored[8] = '\0';
	memcpy(digits, "00000000", 8);
	char want[9];
	snprintf(want, sizeof want, "%08lx", crc32(0L, (const Bytef *)json, (uInt)n));
	assert_string_equal(stored, want);
	free(json);
}

/* The end frame makes the counts final: they must agree as a complete
 * meta document's do, and a bad end frame changes nothing. */
static void meta_end_frame_checks_counts(void **state)
{
	(void)state;
	mp_meta m;
	mp_error e;
	mp_meta_init(&m);
	static const char good[] = "{\"records\":5,\"macrobatches\":2,\"mean\":[1,2,3],\"skipped\":1}";
	assert_int_equal(mp_meta_apply_end(&m, good, strlen(good), &e), -1);
	assert_string_equal(e.msg, "end frame: the macrobatch size is not known");
	m.macrobatch_size = 3;
	static const char bad[] = "{\"records\":5,\"macrobatches\":0,\"mean\":[1,2,3],\"skipped\":1}";
	assert_int_equal(mp_meta_apply_end(&m, bad, strlen(bad), &e), -1);
	assert_string_equal(e.msg, "end frame: 5 records of 3 per macrobatch make 2 macrobatches, not 0");
	static const char one[] = "{\"records\":1,\"macrobatches\":2,\"mean\":[1,2,3],\"skipped\":1}";
	assert_int_equal(mp_meta_apply_end(&m, one, strlen(one), &e), -1);
	assert_string_equal(e.msg, "end frame: 1 record of 3 per macrobatch makes 1 macrobatch, not 2");
	assert_int_equal(m.complete, 0);
	assert_int_equal(m.records, 0);
	assert_int_equal(m.skipped, 0);
	assert_int_equal(m.has_mean, 0);
	assert_int_equal(mp_meta_apply_end(&m, good, strlen(good), &e), 0);
	assert_int_equal(m.complete, 1);
	assert_int_equal(m.records, 5);
	assert_int_equal(m.macrobatches, 2);
	assert_int_equal(m.skipped, 1);
	assert_int_equal(m.has_mean, 1);
	mp_meta_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(macrobatch_round_trip),
		cmocka_unit_test(macrobatch_written_in_place),
		cmocka_unit_test(macrobatch_every_flip_and_cut_is_caught),
		cmocka_unit_test(macrobatch_bounds_checked_behind_crc),
		cmocka_unit_test(stream_round_trip),
		cmocka_unit_test(stream_truncation_and_flips),
		cmocka_unit_test(stream_empty_and_cut_header),
		cmocka_unit_test(stream_data_after_end),
		cmocka_unit_test(stream_huge_length_does_not_allocate),
		cmocka_unit_test(meta_round_trip),
		cmocka_unit_test(meta_rejects_bad_documents),
		cmocka_unit_test(meta_checks_words_counts_geometry),
		cmocka_unit_test(meta_ranges_are_the_pages),
		cmocka_unit_test(meta_end_frame_checks_counts),
		cmocka_unit_test(meta_crc),
		cmocka_unit_test(meta_needs_shuffle_seed_from_version_2),
		cmocka_unit_test(meta_refuses_duplicates_and_bad_utf8),
		cmocka_unit_test(meta_crc_is_zlib_crc32),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
