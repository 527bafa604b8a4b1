/* Safetensors codec: round trips, the exact bytes we write, files written by
 * Python, and every truncation, flipped byte and bad header caught with its
 * own message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mp_safetensors.h"

/* ---- helpers ------------------------------------------------------------- */

static char *make_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char buf[4096];
	snprintf(buf, sizeof buf, "%s/mp-st-XXXXXX", t && *t ? t : "/tmp");
	char *d = mkdtemp(buf);
	assert_non_null(d);
	return strdup(d);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A file from a header text and dlen data bytes (i * 7). */
static uint8_t *make_file(const char *json, size_t dlen, size_t *len)
{
	size_t n = strlen(json);
	uint8_t *b = malloc(8 + n + dlen);
	mp_put_u64(b, n);
	memcpy(b + 8, json, n);
	for (size_t i = 0; i < dlen; i++)
		b[8 + n + i] = (uint8_t)(i * 7);
	*len = 8 + n + dlen;
	return b;
}

/* What every successfully read file must satisfy, whatever its bytes. */
static void assert_structurally_valid(const mp_st_file *f)
{
	assert_int_equal(f->size, 8 + f->header_len + f->data_len);
	assert_int_equal((uintptr_t)f->data % 8, 0);
	uint64_t total = 0;
	for (size_t i = 0; i < f->ntensors; i++) {
		const mp_st_tensor *t = &f->tensors[i];
		assert_true(t->name[0] != '\0');
		assert_ptr_equal(mp_st_find(f, t->name), t);
		assert_in_range(t->ndim, 0, MP_ST_MAX_DIMS);
		assert_non_null(mp_st_dtype_name(t->dtype));
		uint64_t n = 1;
		for (int d = 0; d < t->ndim; d++)
			n *= (uint64_t)t->shape[d];
		assert_int_equal(n, t->numel);
		assert_int_equal(t->nbytes, t->numel * mp_st_dtype_size(t->dtype));
		assert_true(t->begin + t->nbytes <= f->data_len);
		assert_int_equal((uintptr_t)t->data % mp_st_dtype_size(t->dtype), 0);
		if (t->nbytes)
			assert_memory_equal(t->data, f->data + t->begin, t->nbytes);
		total += t->nbytes;
	}
	assert_int_equal(total, f->data_len);
	for (size_t i = 0; i < f->nmeta; i++)
		assert_ptr_equal(mp_st_meta_get(f, f->meta[i].key) != NULL, 1);
}

/* ---- round trip ---------------------------------------------------------- */

static const float rt_f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, -0.125f, 1e30f};
static const uint8_t rt_u8[3] = {7, 8, 9};
static const float rt_f32b[5] = {10, 20, 30, 40, 50};
static const double rt_f64 = 3.25;
static const int64_t rt_i64[2] = {-1, INT64_MAX};
static const int32_t rt_i32[2] = {-7, 1 << 30};
static const int16_t rt_i16[2] = {-300, 300};
static const int8_t rt_i8[2] = {-128, 127};
static const uint8_t rt_bool[2] = {1, 0};
static const uint16_t rt_f16[2] = {0x3c00, 0xc000};
static const char *const rt_quote = "say \"hi\" \\ back\nslash\t/";
static const char *const rt_unicode = "\xe9\x9b\xaa caf\xc3\xa9 \xf0\x9f\x98\x80";

static void build_round_trip(mp_st_builder *b)
{
	mp_error e;
	mp_st_builder_init(b);
	int s23[] = {2, 3};
	assert_int_equal(mp_st_builder_add_f32(b, "f32", s23, 2, rt_f32, &e), 0);
	int64_t s3[] = {3};
	assert_int_equal(mp_st_builder_add(b, "u8", MP_ST_U8, s3, 1, rt_u8, &e), 0);
	int s5[] = {5};
	/* begins at byte 27 of the data: not aligned for a float in the file */
	assert_int_equal(mp_st_builder_add_f32(b, "f32b", s5, 1, rt_f32b, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "scalar", MP_ST_F64, NULL, 0, &rt_f64, &e), 0);
	int64_t s40[] = {4, 0};
	assert_int_equal(mp_st_builder_add(b, "empty", MP_ST_BF16, s40, 2, NULL, &e), 0);
	int64_t s2[] = {2}, s12[] = {1, 2}, s8d[] = {1, 1, 1, 1, 1, 1, 1, 2};
	assert_int_equal(mp_st_builder_add(b, "i64", MP_ST_I64, s2, 1, rt_i64, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "i32", MP_ST_I32, s12, 2, rt_i32, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "i16", MP_ST_I16, s2, 1, rt_i16, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "i8", MP_ST_I8, s8d, 8, rt_i8, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "bn.\xce\xb3", MP_ST_BOOL, s2, 1, rt_bool, &e), 0);
	assert_int_equal(mp_st_builder_add(b, "f16", MP_ST_F16, s2, 1, rt_f16, &e), 0);
	assert_int_equal(mp_st_builder_meta(b, "quote", rt_quote, &e), 0);
	assert_int_equal(mp_st_builder_meta(b, "unicode", rt_unicode, &e), 0);
	assert_int_equal(mp_st_builder_meta(b, "", "", &e), 0);
}

static void round_trip(void **state)
{
	(void)state;
	mp_st_builder b;
	mp_error e;
	build_round_trip(&b);
	char *dir = make_tmpdir(), path[4200];
	snprintf(path, sizeof path, "%s/w.safetensors", dir);
	assert_int_equal(mp_st_builder_write(&b, path, &e), 0);
	assert_int_equal(count_entries(dir), 1); /* no temporary left behind */

	mp_st_file f;
	if (mp_st_read(path, 1 << 20, &f, &e) < 0)
		fail_msg("%s", e.msg);
	assert_structurally_valid(&f);
	assert_true(f.has_crc);
	assert_true(f.has_header_crc);
	assert_int_equal((8 + f.header_len) % 8, 0);
	/* the JSON, then fewer than 8 spaces of padding */
	const char *h = (const char *)f.base + 8;
	size_t close = (size_t)f.header_len;
	while (close > 0 && h[close - 1] == ' ')
		close--;
	assert_true(close > 0 && h[close - 1] == '}');
	assert_true(f.header_len - close < 8);
	assert_int_equal(f.ntensors, b.ntensors);
	for (size_t i = 0; i < f.ntensors; i++) {
		const mp_st_tensor *t = &f.tensors[i], *w = &b.tensors[i];
		assert_string_equal(t->name, w->name); /* the order added */
		assert_int_equal(t->dtype, w->dtype);
		assert_int_equal(t->ndim, w->ndim);
		assert_memory_equal(t->shape, w->shape, (size_t)w->ndim * sizeof(int64_t));
		assert_int_equal(t->begin, w->begin);
		assert_int_equal(t->nbytes, w->nbytes);
		if (w->nbytes)
			assert_memory_equal(t->data, w->data, w->nbytes);
	}
	assert_int_equal(mp_st_find(&f, "scalar")->numel, 1);
	assert_int_equal(mp_st_find(&f, "scalar")->ndim, 0);
	assert_int_equal(mp_st_find(&f, "empty")->nbytes, 0);
	assert_null(mp_st_find(&f, "nothing"));
	assert_string_equal(mp_st_meta_get(&f, "quote"), rt_quote);
	assert_string_equal(mp_st_meta_get(&f, "unicode"), rt_unicode);
	assert_string_equal(mp_st_meta_get(&f, ""), "");
	assert_string_equal(f.meta[0].key, MP_ST_HCRC_KEY); /* added first */
	assert_string_equal(f.meta[4].key, MP_ST_CRC_KEY);  /* and last */
	assert_null(mp_st_meta_get(&f, "missing"));

	const float *p;
	int s5[] = {5}, s23[] = {2, 3};
	assert_int_equal(mp_st_get_f32(&f, "f32b", s5, 1, &p, &e), 0);
	assert_int_equal((uintptr_t)p % 4, 0);
	assert_memory_equal(p, rt_f32b, sizeof rt_f32b);
	assert_int_equal(mp_st_get_f32(&f, "f32", s23, 2, &p, &e), 0);
	assert_true(p[5] == 1e30f);
	const void *v;
	assert_int_equal(mp_st_get(&f, "scalar", MP_ST_F64, NULL, 0, &v, &e), 0);
	assert_true(*(const double *)v == 3.25);

	/* deterministic: the same builder gives the same bytes, in memory or on disk */
	uint8_t *m1, *m2;
	size_t l1, l2;
	assert_int_equal(mp_st_builder_serialize(&b, &m1, &l1, &e), 0);
	assert_int_equal(mp_st_builder_serialize(&b, &m2, &l2, &e), 0);
	assert_int_equal(l1, l2);
	assert_memory_equal(m1, m2, l1);
	assert_int_equal(l1, f.size);
	assert_memory_equal(m1, f.base, l1);
	mp_st_file g;
	assert_int_equal(mp_st_parse(m1, l1, "mem", &g, &e), 0);
	assert_int_equal(g.ntensors, f.ntensors);
	mp_st_free(&g);
	free(m1);
	free(m2);
	mp_st_free(&f);
	mp_st_builder_free(&b);
	assert_int_equal(mp_remove_tree(dir), 0);
	free(dir);
}

static void empty_file_round_trip(void **state)
{
	(void)state;
	mp_st_builder b;
	mp_error e;
	mp_st_builder_init(&b);
	uint8_t *m;
	size_t l;
	assert_int_equal(mp_st_builder_serialize(&b, &m, &l, &e), 0);
	mp_st_file f;
	assert_int_equal(mp_st_parse(m, l, "empty", &f, &e), 0);
	assert_int_equal(f.ntensors, 0);
	assert_int_equal(f.data_len, 0);
	assert_string_equal(mp_st_meta_get(&f, "crc32"), "00000000");
	assert_true(f.has_header_crc);
	mp_st_free(&f);
	free(m);
	mp_st_builder_free(&b);
}

/* ---- the exact layout ---------------------------------------------------- */

static void exact_bytes(void **state)
{
	(void)state;
	/* the header CRC is that of these bytes up to the data with its own
	 * digits as 00000000 (zlib.crc32 in Python agrees) */
	static const char expected[] =
		"\xb8\0\0\0\0\0\0\0"
		"{\"__metadata__\":{\"header_crc32\":\"4f2a3227\",\"k\":\"v\",\"crc32\":\"8d8f477b\"},"
		"\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
		"\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}       "
		"\x00\x00\x80\x3f\x00\x00\x00\xc0\x01\x02\x03";
	const float w[2] = {1.0f, -2.0f};
	const uint8_t u[3] = {1, 2, 3};
	int s2[] = {2};
	int64_t s3[] = {3};
	mp_st_builder b;
	mp_error e;
	mp_st_builder_init(&b);
	assert_int_equal(mp_st_builder_add_f32(&b, "w", s2, 1, w, &e), 0);
	assert_int_equal(mp_st_builder_add(&b, "b", MP_ST_U8, s3, 1, u, &e), 0);
	assert_int_equal(mp_st_builder_meta(&b, "k", "v", &e), 0);
	uint8_t *m;
	size_t l;
	assert_int_equal(mp_st_builder_serialize(&b, &m, &l, &e), 0);
	assert_int_equal(l, sizeof expected - 1);
	assert_memory_equal(m, expected, l);
	free(m);
	mp_st_builder_free(&b);
}

/* ---- files written by Python (json + numpy, no crc32) --------------------- */

/* Checks our file, then writes two files by hand: "plain" with no padding,
 * the metadata last and the header in another order than the data (so
 * tensors sit at unaligned offsets), and "ref" laid out as the reference
 * writer does (json.dumps with separators=(",", ":"), metadata first, tensors
 * sorted by element size then name, spaces padding to 8). */
static const char py_script[] =
	"import json, struct, sys\n"
	"import numpy as np\n"
	"d = sys.argv[1]\n"
	"raw = open(d + \"/ours.safetensors\", \"rb\").read()\n"
	"n = struct.unpack(\"<Q\", raw[:8])[0]\n"
	"h = json.loads(raw[8:8 + n].decode())\n"
	"x = h[\"x\"]\n"
	"a = np.frombuffer(raw, \"<f4\", 4, 8 + n + x[\"data_offsets\"][0]).reshape(x[\"shape\"])\n"
	"assert a.tolist() == [[0.5, -1.0], [2.0, 4.0]], a\n"
	"assert h[\"__metadata__\"][\"arch\"] == \"resnet\"\n"
	"T = [(\"lbl\", np.array([3, 1, 4], np.uint8)),\n"
	"     (\"w\", (np.arange(24, dtype=np.float32) * np.float32(0.5)\n"
	"            - np.float32(3)).reshape(2, 3, 4)),\n"
	"     (\"cnt\", np.array(-5, np.int64)),\n"
	"     (\"e\", np.zeros((0, 3), np.float32)),\n"
	"     (\"b\", np.array([1.5, -2.25, 1024.125], np.float32)),\n"
	"     (\"h\", np.array([1.0, -0.5], np.float16))]\n"
	"DT = {\"u1\": \"U8\", \"f4\": \"F32\", \"i8\": \"I64\", \"f2\": \"F16\"}\n"
	"def save(path, tensors, order, meta, meta_first, pad):\n"
	"    ent = {}\n"
	"    blobs = []\n"
	"    off = 0\n"
	"    for name, a in tensors:\n"
	"        b = a.tobytes()\n"
	"        ent[name] = {\"dtype\": DT[a.dtype.str[1:]], \"shape\": list(a.shape),\n"
	"                     \"data_offsets\": [off, off + len(b)]}\n"
	"        off += len(b)\n"
	"        blobs.append(b)\n"
	"    h = {}\n"
	"    if meta_first:\n"
	"        h[\"__metadata__\"] = meta\n"
	"    for name in order:\n"
	"        h[name] = ent[name]\n"
	"    if not meta_first:\n"
	"        h[\"__metadata__\"] = meta\n"
	"    s = json.dumps(h, separators=(\",\", \":\")).encode()\n"
	"    if pad:\n"
	"        s += b\" \" * ((8 - len(s) % 8) % 8)\n"
	"    open(path, \"wb\").write(struct.pack(\"<Q\", len(s)) + s + b\"\".join(blobs))\n"
	"note = \"caf\" + chr(0xe9) + \" \" + chr(34) + \"q\" + chr(34) + \" \" + chr(0x1F600)\n"
	"save(d + \"/plain.safetensors\", T, sorted(name for name, a in T),\n"
	"     {\"format\": \"pt\", \"note\": note}, False, False)\n"
	"R = sorted(T, key=lambda t: (-t[1].dtype.itemsize, t[0]))\n"
	"save(d + \"/ref.safetensors\", R, [name for name, a in R], {\"format\": \"pt\"},\n"
	"     True, True)\n";

static void check_python_file(const char *path, int padded)
{
	mp_st_file f;
	mp_error e;
	if (mp_st_read(path, 1 << 20, &f, &e) < 0)
		fail_msg("%s", e.msg);
	assert_structurally_valid(&f);
	assert_false(f.has_crc);
	assert_int_equal(f.ntensors, 6);
	assert_string_equal(mp_st_meta_get(&f, "format"), "pt");
	if (padded) {
		assert_int_equal((8 + f.header_len) % 8, 0);
		assert_string_equal(f.tensors[0].name, "cnt"); /* header order kept */
	} else {
		assert_string_equal(f.tensors[0].name, "b");
		assert_string_equal(mp_st_meta_get(&f, "note"),
				    "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80");
		assert_int_equal(mp_st_find(&f, "w")->begin, 3); /* unaligned in the file */
	}
	const float *p;
	int sw[] = {2, 3, 4}, sb[] = {3}, se[] = {0, 3};
	if (mp_st_get_f32(&f, "w", sw, 3, &p, &e) < 0)
		fail_msg("%s", e.msg);
	assert_int_equal((uintptr_t)p % 4, 0);
	for (int i = 0; i < 24; i++)
		assert_true(p[i] == (float)i * 0.5f - 3.0f);
	assert_int_equal(mp_st_get_f32(&f, "b", sb, 1, &p, &e), 0);
	assert_true(p[0] == 1.5f && p[1] == -2.25f && p[2] == 1024.125f);
	assert_int_equal(mp_st_get_f32(&f, "e", se, 2, &p, &e), 0);
	const void *v;
	assert_int_equal(mp_st_get(&f, "cnt", MP_ST_I64, NULL, 0, &v, &e), 0);
	assert_int_equal(*(const int64_t *)v, -5);
	int s2[] = {2};
	assert_int_equal(mp_st_get(&f, "h", MP_ST_F16, s2, 1, &v, &e), 0);
	assert_int_equal(((const uint16_t *)v)[0], 0x3c00);
	assert_int_equal(((const uint16_t *)v)[1], 0xb800);
	int s3[] = {3};
	assert_int_equal(mp_st_get(&f, "lbl", MP_ST_U8, s3, 1, &v, &e), 0);
	assert_memory_equal(v, "\x03\x01\x04", 3);
	mp_st_free(&f);
}

static void python_files(void **state)
{
	(void)state;
	char *dir = make_tmpdir(), path[4200];
	mp_st_builder b;
	mp_error e;
	const float x[4] = {0.5f, -1.0f, 2.0f, 4.0f};
	const uint8_t pad[1] = {9};
	int s22[] = {2, 2};
	int64_t s1[] = {1};
	mp_st_builder_init(&b);
	assert_int_equal(mp_st_builder_add(&b, "pad", MP_ST_U8, s1, 1, pad, &e), 0);
	assert_int_equal(mp_st_builder_add_f32(&b, "x", s22, 2, x, &e), 0);
	assert_int_equal(mp_st_builder_meta(&b, "arch", "resnet", &e), 0);
	snprintf(path, sizeof path, "%s/ours.safetensors", dir);
	assert_int_equal(mp_st_builder_write(&b, path, &e), 0);
	mp_st_builder_free(&b);

	size_t cl = sizeof py_script + strlen(dir) + 64;
	char *cmd = malloc(cl);
	snprintf(cmd, cl, "/usr/bin/python3 -c '%s' '%s'", py_script, dir);
	int rc = system(cmd);
	free(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		fail_msg("/usr/bin/python3 with numpy could not check or write the test files "
			 "(status %d): python3 and python3-numpy are needed", rc);
	snprintf(path, sizeof path, "%s/plain.safetensors", dir);
	check_python_file(path, 0);
	snprintf(path, sizeof path, "%s/ref.safetensors", dir);
	check_python_file(path, 1);
	assert_int_equal(mp_remove_tree(dir), 0);
	free(dir);
}

/* ---- the builder's own checks --------------------------------------------- */

static void builder_rejects_bad_input(void **state)
{
	(void)state;
	mp_st_builder b;
	mp_error e;
	const float d[2] = {1, 2};
	int s2[] = {2}, s9[] = {1, 1, 1, 1, 1, 1, 1, 1, 2}, sneg[] = {-2};
	mp_st_builder_init(&b);
	assert_int_equal(mp_st_builder_add_f32(&b, "a", s2, 1, d, &e), 0);
	assert_int_equal(mp_st_builder_add_f32(&b, "", s2, 1, d, &e), -1);
	assert_int_equal(mp_st_builder_add_f32(&b, "__metadata__", s2, 1, d, &e), -1);
	assert_int_equal(mp_st_builder_add_f32(&b, "a", s2, 1, d, &e), -1);
	assert_non_null(strstr(e.msg, "twice"));
	assert_int_equal(mp_st_builder_add_f32(&b, "nine", s9, 9, d, &e), -1);
	assert_int_equal(mp_st_builder_add_f32(&b, "neg", sneg, 1, d, &e), -1);
	assert_int_equal(mp_st_builder_add_f32(&b, "bad\xff", s2, 1, d, &e), -1);
	assert_non_null(strstr(e.msg, "UTF-8"));
	assert_int_equal(mp_st_builder_add_f32(&b, "nodata", s2, 1, NULL, &e), -1);
	assert_int_equal(mp_st_builder_add(&b, "dt", (mp_st_dtype)99, NULL, 0, d, &e), -1);
	assert_int_equal(mp_st_builder_meta(&b, "crc32", "0", &e), -1);
	assert_non_null(strstr(e.msg, "reserved"));
	assert_int_equal(mp_st_builder_meta(&b, "header_crc32", "0", &e), -1);
	assert_non_null(strstr(e.msg, "reserved"));
	assert_int_equal(mp_st_builder_meta(&b, "k", "v", &e), 0);
	assert_int_equal(mp_st_builder_meta(&b, "k", "w", &e), -1);
	assert_int_equal(mp_st_builder_meta(&b, "u", "\xc0\x80", &e), -1); /* overlong */
	assert_int_equal(b.ntensors, 1);
	assert_int_equal(b.nmeta, 1);
	uint8_t *m;
	size_t l;
	assert_int_equal(mp_st_builder_serialize(&b, &m, &l, &e), 0);
	mp_st_file f;
	assert_int_equal(mp_st_parse(m, l, "x", &f, &e), 0);
	mp_st_free(&f);
	free(m);
	mp_st_builder_free(&b);
}

static void write_into_missing_directory_fails(void **state)
{
	(void)state;
	char *dir = make_tmpdir(), path[4200];
	snprintf(path, sizeof path, "%s/no/such/dir/w.safetensors", dir);
	mp_st_builder b;
	mp_error e;
	mp_st_builder_init(&b);
	assert_int_equal(mp_st_builder_write(&b, path, &e), -1);
	assert_non_null(strstr(e.msg, "No such file"));
	assert_int_equal(count_entries(dir), 0);
	mp_st_builder_free(&b);
	mp_st_file f;
	assert_int_equal(mp_st_read(path, 1 << 20, &f, &e), -1);
	assert_non_null(strstr(e.msg, path));
	/* a file larger than the caller's limit is not read */
	snprintf(path, sizeof path, "%s/w.safetensors", dir);
	assert_int_equal(mp_st_builder_write(&b, path, &e), 0);
	assert_int_equal(mp_st_read(path, 16, &f, &e), -1);
	assert_non_null(strstr(e.msg, "limit"));
	assert_int_equal(mp_st_read(dir, 1 << 20, &f, &e), -1);
	assert_int_equal(mp_remove_tree(dir), 0);
	free(dir);
}

/* ---- typed access -------------------------------------------------------- */

static void get_f32_messages(void **state)
{
	(void)state;
	static float conv[16 * 16 * 3 * 3];
	uint16_t half[4] = {0};
	int sc[] = {16, 16, 3, 3}, want[] = {32, 32, 3, 3};
	int64_t sh[] = {4};
	mp_st_builder b;
	mp_error e;
	mp_st_builder_init(&b);
	assert_int_equal(
		mp_st_builder_add_f32(&b, "stages.0.blocks.0.conv1.weight", sc, 4, conv, &e), 0);
	assert_int_equal(mp_st_builder_add(&b, "fc_bn.weight", MP_ST_F16, sh, 1, half, &e), 0);
	uint8_t *m;
	size_t l;
	assert_int_equal(mp_st_builder_serialize(&b, &m, &l, &e), 0);
	mp_st_builder_free(&b);
	mp_st_file f;
	assert_int_equal(mp_st_parse(m, l, "FILE", &f, &e), 0);
	free(m);
	const float *p;
	assert_int_equal(mp_st_get_f32(&f, "stages.0.blocks.0.conv1.weight", want, 4, &p, &e), -1);
	assert_string_equal(e.msg, "FILE: tensor stages.0.blocks.0.conv1.weight has shape "
				   "[16,16,3,3], expected [32,32,3,3]");
	assert_int_equal(mp_st_get_f32(&f, "stages.0.blocks.0.conv1.weight", sc, 3, &p, &e), -1);
	assert_string_equal(e.msg, "FILE: tensor stages.0.blocks.0.conv1.weight has shape "
				   "[16,16,3,3], expected [16,16,3]");
	assert_int_equal(mp_st_get_f32(&f, "fc.weight", want, 2, &p, &e), -1);
	assert_string_equal(e.msg, "FILE: no tensor named fc.weight");
	int s4[] = {4};
	assert_int_equal(mp_st_get_f32(&f, "fc_bn.weight", s4, 1, &p, &e), -1);
	assert_string_equal(e.msg, "FILE: tensor fc_bn.weight has dtype F16, expected F32");
	assert_int_equal(mp_st_get_f32(&f, "stages.0.blocks.0.conv1.weight", sc, 4, &p, &e), 0);
	assert_int_equal((uintptr_t)p % 8, 0);
	mp_st_free(&f);
}

/* ---- corruption ---------------------------------------------------------- */

static void build_small(uint8_t **m, size_t *l)
{
	static const float w[6] = {1, 2, 3, 4, 5, 6};
	static const uint8_t u[3] = {1, 2, 3};
	int s23[] = {2, 3};
	int64_t s3[] = {3};
	mp_st_builder b;
	mp_error e;
	mp_st_builder_init(&b);
	assert_int_equal(mp_st_builder_add(&b, "u", MP_ST_U8, s3, 1, u, &e), 0);
	assert_int_equal(mp_st_builder_add_f32(&b, "w", s23, 2, w, &e), 0);
	assert_int_equal(mp_st_builder_meta(&b, "depth", "9", &e), 0);
	assert_int_equal(mp_st_builder_serialize(&b, m, l, &e), 0);
	mp_st_builder_free(&b);
}

static void every_truncation_is_rejected(void **state)
{
	(void)state;
	uint8_t *m;
	size_t l;
	build_small(&m, &l);
	mp_st_file f;
	mp_error e;
	for (size_t cut = 0; cut < l; cut++) {
		assert_int_equal(mp_st_parse(m, cut, "cut", &f, &e), -1);
		assert_non_null(strstr(e.msg, "cut: "));
	}
	assert_int_equal(mp_st_parse(m, l, "whole", &f, &e), 0);
	mp_st_free(&f);
	/* a byte too many is rejected too */
	uint8_t *more = malloc(l + 1);
	memcpy(more, m, l);
	more[l] = 0;
	assert_int_equal(mp_st_parse(more, l + 1, "more", &f, &e), -1);
	assert_non_null(strstr(e.msg, "after the last tensor"));
	free(more);
	free(m);
}

static void data_flips_are_caught_by_the_crc(void **state)
{
	(void)state;
	uint8_t *m;
	size_t l;
	build_small(&m, &l);
	size_t data = 8 + (size_t)mp_get_u64(m);
	mp_st_file f;
	mp_error e;
	for (size_t i = data; i < l; i++) {
		for (int bit = 0; bit < 8; bit++) {
			m[i] ^= (uint8_t)(1 << bit);
			assert_int_equal(mp_st_parse(m, l, "flip", &f, &e), -1);
			assert_non_null(strstr(e.msg, "data CRC mismatch: the file is corrupt"));
			m[i] ^= (uint8_t)(1 << bit);
		}
	}
	free(m);
}

/* The header CRC covers the length field and every byte of the header,
 * padding included: a flipped bit anywhere there is refused, but for a
 * letter of the key "header_crc32" itself, which leaves a valid file
 * without a header CRC (a format that requires one, as mp_weights does
 * from format_version 2, then refuses it). */
static void header_flips_are_caught(void **state)
{
	(void)state;
	uint8_t *m;
	size_t l;
	build_small(&m, &l);
	size_t data = 8 + (size_t)mp_get_u64(m), accepted = 0;
	const size_t key = 8 + strlen("{\"__metadata__\":{\"");
	mp_st_file f;
	mp_error e;
	assert_int_equal(mp_st_parse(m, l, "whole", &f, &e), 0);
	assert_true(f.has_header_crc);
	mp_st_free(&f);
	for (size_t i = 0; i < data; i++) {
		for (int bit = 0; bit < 8; bit++) {
			m[i] ^= (uint8_t)(1 << bit);
			if (mp_st_parse(m, l, "flip", &f, &e) == 0) {
				assert_structurally_valid(&f);
				if (f.has_header_crc || i < key || i >= key + strlen(MP_ST_HCRC_KEY))
					fail_msg("byte %zu bit %d flipped: accepted", i, bit);
				mp_st_free(&f);
				accepted++;
			} else {
				assert_non_null(strstr(e.msg, "flip: "));
			}
			m[i] ^= (uint8_t)(1 << bit);
		}
	}
	assert_true(accepted > 0);
	free(m);
}

struct bad_header {
	const char *json;
	size_t data_len;
	const char *msg;
};

static void bad_headers_give_their_message(void **state)
{
	(void)state;
#define T1(dt, sh, off) "{\"dtype\":\"" dt "\",\"shape\":" sh ",\"data_offsets\":" off "}"
	static const struct bad_header cases[] = {
		{"{\"a\":" T1("F8", "[1]", "[0,1]") "}", 1, "tensor a: unknown dtype \"F8\""},
		{"{\"a\":" T1("F32", "[2]", "[0,8]") ",\"b\":" T1("F32", "[2]", "[4,12]") "}", 12,
		 "tensors a [0,8] and b [4,12] overlap"},
		{"{\"a\":" T1("F32", "[2]", "[0,8]") "}", 4,
		 "tensor a: data_offsets [0,8] reach beyond the data section (4 bytes)"},
		{"{\"a\":" T1("F32", "[3]", "[0,8]") "}", 8,
		 "tensor a: data_offsets [0,8] hold 8 bytes, but F32 [3] needs 12"},
		{"{\"a\":" T1("F32", "[1]", "[0,4]") ",\"a\":" T1("F32", "[1]", "[4,8]") "}", 8,
		 "tensor name a appears twice"},
		{"{\"__metadata__\":{\"x\":1}}", 0, "metadata \"x\" is not a string"},
		{"{\"a\":" T1("F32", "[1]", "[0,4]") ",\"b\":" T1("F32", "[1]", "[8,12]") "}", 12,
		 "data bytes 4..8 belong to no tensor (a gap before tensor b)"},
		{"{\"a\":" T1("F32", "[1]", "[0,4]") "}", 6,
		 "the data section has 2 bytes after the last tensor"},
		{"{}", 3, "the data section has 3 bytes after the last tensor"},
		{"{\"a\":", 0, "not well-formed JSON"},
		{"{} x", 0, "not well-formed JSON"},
		{"{\"a\":1,}", 0, "not well-formed JSON"},
		{"[]", 0, "does not start with '{'"},
		{" {}", 0, "does not start with '{'"},
		{"", 0, "the header is empty"},
		{"{\"a\":5}", 0, "tensor a: the entry is not an object"},
		{"{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4,
		 "tensor a: dtype is missing or not a string"},
		{"{\"a\":{\"dtype\":4,\"shape\":[],\"data_offsets\":[0,4]}}", 4,
		 "tensor a: dtype is missing or not a string"},
		{"{\"a\":" T1("F32", "3", "[0,12]") "}", 12,
		 "tensor a: shape is missing or not an array"},
		{"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,12]}}", 12,
		 "tensor a: shape is missing or not an array"},
		{"{\"a\":" T1("F32", "[-1]", "[0,0]") "}", 0,
		 "tensor a: shape[0] = -1 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[1.5]", "[0,4]") "}", 4,
		 "tensor a: shape[0] = 1.5 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2,\"2\"]", "[0,16]") "}", 16,
		 "tensor a: shape[1] is not a number"},
		{"{\"a\":" T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4,
		 "tensor a: shape has 9 dimensions (at most 8)"},
		{"{\"a\":" T1("F32", "[4294967296,4294967296]", "[0,0]") "}", 0,
		 "tensor a: shape [4294967296,4294967296] is too large"},
		/* a zero dim makes the product 0, whatever the others */
		{"{\"a\":" T1("F32", "[0,4294967296,4294967296]", "[0,0]") "}", 0, NULL},
		{"{\"a\":" T1("F32", "[1]", "[0]") "}", 4,
		 "tensor a: data_offsets is missing or not two whole numbers"},
		{"{\"a\":" T1("F32", "[1]", "[0,4,8]") "}", 4,
		 "tensor a: data_offsets is missing or not two whole numbers"},
		{"{\"a\":" T1("F32", "[1]", "[\"0\",4]") "}", 4,
		 "tensor a: data_offsets is missing or not two whole numbers"},
		{"{\"a\":" T1("F32", "[1]", "[-4,0]") "}", 4,
		 "tensor a: data_offsets[0] = -4 is not a whole number from 0 to 2^53"},
		/* sizes and offsets are whole numbers as written, not as a double
		 * reads them: no fraction, exponent, sign or leading zero, and
		 * nothing above 2^53 that would round to it */
		{"{\"a\":" T1("F32", "[10.0,2]", "[0,80]") "}", 80,
		 "tensor a: shape[0] = 10.0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2e0]", "[0,8]") "}", 8,
		 "tensor a: shape[0] = 2e0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2,2E0]", "[0,16]") "}", 16,
		 "tensor a: shape[1] = 2E0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[-0]", "[0,0]") "}", 0,
		 "tensor a: shape[0] = -0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[02]", "[0,8]") "}", 8,
		 "tensor a: shape[0] = 02 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2]", "[0,8]") ",\"b\":" T1("F32", "[0]", "[8,0008]") "}", 8,
		 "tensor b: data_offsets[1] = 0008 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[9007199254740993,0]", "[0,0]") "}", 0,
		 "tensor a: shape[0] = 9007199254740993 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[18446744073709551617,0]", "[0,0]") "}", 0,
		 "tensor a: shape[0] = 18446744073709551617 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[9007199254740992,0]", "[0,0]") "}", 0, NULL},
		{"{\"a\":" T1("F32", "[2]", "[0,8.0]") "}", 8,
		 "tensor a: data_offsets[1] = 8.0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2]", "[0.0,8]") "}", 8,
		 "tensor a: data_offsets[0] = 0.0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[2]", "[0,8e0]") "}", 8,
		 "tensor a: data_offsets[1] = 8e0 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[0]", "[9007199254740993,9007199254740993]") "}", 0,
		 "tensor a: data_offsets[0] = 9007199254740993 is not a whole number from 0 to 2^53"},
		/* numbers in strings and in other fields are not sizes: "1.5" in a
		 * name, escapes before them, a fraction in an ignored field */
		{"{\"__metadata__\":{\"k\":\"1.5 \\\" -2e3\"},\"a\\\"1.0\":" T1("F32", "[2]", "[0,8]") "}",
		 8, NULL},
		{"{\"a\":{\"x\":[1.5,-2e3],\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		 8, NULL},
		{"{\"a\":{\"x\":1.5,\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}",
		 8, "tensor a: data_offsets[1] = 8.5 is not a whole number from 0 to 2^53"},
		{"{\"a\":" T1("F32", "[1]", "[4,0]") "}", 4,
		 "tensor a: data_offsets [4,0] end before they begin"},
		{"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"I32\","
		 "\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor a: field \"dtype\" appears twice"},
		{"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[]}}", 4,
		 NULL}, /* other fields are ignored */
		{"{\"\":" T1("F32", "[1]", "[0,4]") "}", 4, "a tensor has an empty name"},
		{"{\"__metadata__\":\"x\"}", 0, "__metadata__ is not an object of strings"},
		{"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
		{"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
		 "metadata key \"k\" appears twice"},
		{"{\"__metadata__\":{\"crc32\":\"XYZ\"}}", 0,
		 "metadata \"crc32\" = \"XYZ\" is not 8 lowercase hex digits"},
		{"{\"__metadata__\":{\"crc32\":\"00000001\"}}", 0,
		 "data CRC mismatch: the file is corrupt"},
		{"{\"__metadata__\":{\"crc32\":\"00000000\"}}", 0, NULL},
		{"{\"__metadata__\":{\"header_crc32\":\"00000000\"}}", 0,
		 "header CRC mismatch: the file is corrupt (header_crc32 00000000 in the header, "},
		{"{\"__metadata__\":{\"header_crc32\":\"0000000\"}}", 0,
		 "metadata \"header_crc32\" is not 8 lowercase hex digits"},
		{"{\"__metadata__\":{\"header_crc32\":\"0000000A\"}}", 0,
		 "metadata \"header_crc32\" is not 8 lowercase hex digits"},
		/* found only at its place, so that what it covers is certain */
		{"{\"__metadata__\":{\"k\":\"v\",\"header_crc32\":\"00000000\"}}", 0,
		 "metadata \"header_crc32\" is not where it must be: the first key of "
		 "__metadata__, at the start of the header"},
		{"{ \"__metadata__\":{\"header_crc32\":\"00000000\"}}", 0,
		 "metadata \"header_crc32\" is not where it must be"},
		{"{\"a\":" T1("F32", "[1]", "[0,4]") ",\"__metadata__\":{\"header_crc32\":\"00000000\"}}",
		 4, "metadata \"header_crc32\" is not where it must be"},
		{"{\"a\"\x01:{}}", 0, "control byte 0x01 at byte 12 of the file"},
		{"{\"\xff\":{}}", 0, "not valid UTF-8 (byte 10 of the file)"},
		{"{\"\xed\xa0\x80\":{}}", 0, "not valid UTF-8"}, /* a surrogate */
		{"{\"a\":" T1("F32", "[1]", "[0,4]") ",\"z\":" T1("BOOL", "[0]", "[4,4]") "}    ",
		 4, NULL},
		{"{\"a\":" T1("F32", "[2]", "[0,8]") ",\"z\":" T1("BOOL", "[0]", "[4,4]") "}", 8,
		 "tensors a [0,8] and z [4,4] overlap"},
		{"{\"a\":" T1("F32", "[1]", "[0,4]") "}\t\r\n ", 4, NULL},
	};
#undef T1
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t len;
		uint8_t *buf = make_file(cases[i].json, cases[i].data_len, &len);
		mp_st_file f;
		mp_error e;
		int rc = mp_st_parse(buf, len, "bad.safetensors", &f, &e);
		if (!cases[i].msg) {
			if (rc != 0)
				fail_msg("case %zu: %s", i, e.msg);
			assert_structurally_valid(&f);
			mp_st_free(&f);
		} else {
			if (rc != -1)
				fail_msg("case %zu (%s) was accepted", i, cases[i].msg);
			if (strncmp(e.msg, "bad.safetensors: ", 17) || !strstr(e.msg, cases[i].msg))
				fail_msg("case %zu: \"%s\" does not say \"%s\"", i, e.msg,
					 cases[i].msg);
		}
		free(buf);
	}
}

static void bad_lengths_give_their_message(void **state)
{
	(void)state;
	mp_st_file f;
	mp_error e;
	size_t len;
	uint8_t *buf = make_file("{}", 0, &len);
	mp_put_u64(buf, 1000);
	assert_int_equal(mp_st_parse(buf, len, "big", &f, &e), -1);
	assert_string_equal(e.msg, "big: header length 1000 is larger than the file "
				   "(2 bytes after the length field)");
	mp_put_u64(buf, 100000001);
	assert_int_equal(mp_st_parse(buf, len, "big", &f, &e), -1);
	assert_string_equal(e.msg, "big: header length 100000001 exceeds the limit of "
				   "100000000 bytes");
	mp_put_u64(buf, UINT64_MAX);
	assert_int_equal(mp_st_parse(buf, len, "big", &f, &e), -1);
	assert_non_null(strstr(e.msg, "exceeds the limit"));
	/* another kind of file: no '{' where a header would begin */
	buf[8] = 'P';
	assert_int_equal(mp_st_parse(buf, len, "other", &f, &e), -1);
	assert_string_equal(e.msg, "other: not a safetensors file (its first 8 bytes give a "
				   "header of 18446744073709551615 bytes, and no '{' begins one)");
	buf[8] = '{';
	assert_int_equal(mp_st_parse(buf, 7, "short", &f, &e), -1);
	assert_string_equal(e.msg, "short: 7 bytes is too short for a safetensors file "
				   "(at least 8)");
	/* a NUL inside the header */
	mp_put_u64(buf, 2);
	buf[9] = '\0';
	assert_int_equal(mp_st_parse(buf, len, "nul", &f, &e), -1);
	assert_non_null(strstr(e.msg, "control byte 0x00"));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(empty_file_round_trip),
		cmocka_unit_test(exact_bytes),
		cmocka_unit_test(python_files),
		cmocka_unit_test(builder_rejects_bad_input),
		cmocka_unit_test(write_into_missing_directory_fails),
		cmocka_unit_test(get_f32_messages),
		cmocka_unit_test(every_truncation_is_rejected),
		cmocka_unit_test(data_flips_are_caught_by_the_crc),
		cmocka_unit_test(header_flips_are_caught),
		cmocka_unit_test(bad_headers_give_their_message),
		cmocka_unit_test(bad_lengths_give_their_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
