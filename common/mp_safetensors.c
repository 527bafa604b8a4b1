/* Safetensors reader and writer (see mp_safetensors.h for the layout).
 * Assumes a little-endian host: tensor bytes are the host's numbers. */
#include "mp_safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mp_safetensors assumes a little-endian host"
#endif

#define MAX_JSON_INT ((uint64_t)1 << 53) /* larger doubles skip integers */

static const struct {
	const char *name;
	size_t size;
} dtypes[MP_ST_NDTYPES] = {
	[MP_ST_F64] = {"F64", 8}, [MP_ST_F32] = {"F32", 4}, [MP_ST_F16] = {"F16", 2},
	[MP_ST_BF16] = {"BF16", 2}, [MP_ST_I64] = {"I64", 8}, [MP_ST_I32] = {"I32", 4},
	[MP_ST_I16] = {"I16", 2}, [MP_ST_I8] = {"I8", 1}, [MP_ST_U8] = {"U8", 1},
	[MP_ST_BOOL] = {"BOOL", 1},
};

/* What a zero-byte tensor points at: aligned for any dtype. */
static const uint64_t empty_data[1];

const char *mp_st_dtype_name(mp_st_dtype d)
{
	return (unsigned)d < MP_ST_NDTYPES ? dtypes[d].name : NULL;
}

size_t mp_st_dtype_size(mp_st_dtype d)
{
	return (unsigned)d < MP_ST_NDTYPES ? dtypes[d].size : 0;
}

int mp_st_dtype_parse(const char *s, mp_st_dtype *d)
{
	for (int i = 0; i < MP_ST_NDTYPES; i++)
		if (!strcmp(s, dtypes[i].name)) {
			*d = (mp_st_dtype)i;
			return 0;
		}
	return -1;
}

void mp_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n)
{
	size_t at = 0;
	if (n == 0)
		return;
	buf[0] = '\0';
	at += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < ndim && at < n; i++)
		at += (size_t)snprintf(buf + at, n - at, "%s%" PRId64, i ? "," : "",
				       shape[i]);
	if (at < n)
		snprintf(buf + at, n - at, "]");
}

/* "PATH: message" */
static int st_err(mp_error *e, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int st_err(mp_error *e, const char *path, const char *fmt, ...)
{
	char msg[sizeof e->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return mp_seterr(e, "%s: %s", path, msg);
}

static int utf8_ok(const char *s)
{
	size_t n = strlen(s);
	return mp_utf8_bad_at(s, n) == n;
}

/* The text of the header's numbers. cJSON keeps only a double, in which
 * 10.0, 1e1 and 10 are one value and 2^53 + 1 rounds to 2^53; a size or an
 * offset is checked in the header's own text instead. */
typedef struct {
	const cJSON *node;
	size_t at, len; /* in the header */
} num_text;

typedef struct {
	const char *text; /* the header */
	num_text *nums;	  /* sorted by node */
	size_t n;
} num_texts;

static int cmp_num_node(const void *a, const void *b)
{
	const cJSON *x = ((const num_text *)a)->node, *y = ((const num_text *)b)->node;
	return (x > y) - (x < y);
}

/* Pairs cJSON's number nodes, met in the order of the text, with the i-th
 * number of the text: how many it has met, or SIZE_MAX past cap. */
static size_t pair_nodes(const cJSON *c, num_text *nums, size_t i, size_t cap)
{
	for (; c && i != SIZE_MAX; c = c->next) {
		if (cJSON_IsNumber(c)) {
			if (i == cap)
				return SIZE_MAX;
			nums[i++].node = c;
		} else if (cJSON_IsArray(c) || cJSON_IsObject(c))
			i = pair_nodes(c->child, nums, i, cap);
	}
	return i;
}

/* The numbers of text, well-formed JSON that cJSON parsed into root: each
 * starts outside a string with '-' or a digit and goes on over the
 * characters cJSON reads as part of it. -1 when out of memory, -2 when
 * they are not as many as cJSON's (which would be a bug). */
static int find_numbers(const char *text, const cJSON *root, num_texts *nt)
{
	size_t count = 0, n = strlen(text);
	nt->text = text;
	nt->nums = NULL;
	nt->n = 0;
	for (int pass = 0; pass < 2; pass++) {
		size_t k = 0;
		for (size_t i = 0; i < n;) {
			if (text[i] == '"') {
				for (i++; i < n && text[i] != '"'; i++)
					if (text[i] == '\\')
						i++;
				i++;
			} else if (text[i] == '-' || (text[i] >= '0' && text[i] <= '9')) {
				size_t at = i;
				while (i < n && strchr("0123456789+-.eE", text[i]))
					i++;
				if (pass)
					nt->nums[k] = (num_text){.at = at, .len = i - at};
				k++;
			} else
				i++;
		}
		if (pass == 0) {
			count = k;
			if (!(nt->nums = calloc(count ? count : 1, sizeof *nt->nums)))
				return -1;
		}
	}
	if (pair_nodes(root, nt->nums, 0, count) != count) {
		free(nt->nums);
		nt->nums = NULL;
		return -2;
	}
	nt->n = count;
	qsort(nt->nums, count, sizeof *nt->nums, cmp_num_node);
	return 0;
}

/* A JSON number written as a whole number from 0 to 2^53: digits only, no
 * fraction, exponent, sign or leading zero. */
static int json_uint(const num_texts *nt, const cJSON *v, uint64_t *out)
{
	if (!cJSON_IsNumber(v))
		return -1;
	num_text key = {.node = v};
	const num_text *t = bsearch(&key, nt->nums, nt->n, sizeof key, cmp_num_node);
	if (!t || mp_parse_decimal(nt->text + t->at, t->len, MAX_JSON_INT, out) < 0)
		return -1;
	return 0;
}

/* The text of number v, for a message: at most 40 bytes of it. */
static int num_len(const num_texts *nt, const cJSON *v, const char **s)
{
	num_text key = {.node = v};
	const num_text *t = bsearch(&key, nt->nums, nt->n, sizeof key, cmp_num_node);
	*s = t ? nt->text + t->at : "?";
	return t ? (int)(t->len < 40 ? t->len : 40) : 1;
}

/* numel and nbytes of a shape; -1 when they overflow 64 bits. */
static int shape_bytes(const int64_t *shape, int ndim, size_t elsize,
		       uint64_t *numel, uint64_t *nbytes)
{
	uint64_t n = 1;
	for (int i = 0; i < ndim; i++)
		if (shape[i] == 0)
			n = 0;
	if (n)
		for (int i = 0; i < ndim; i++)
			if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n))
				return -1;
	uint64_t b;
	if (__builtin_mul_overflow(n, (uint64_t)elsize, &b))
		return -1;
	*numel = n;
	*nbytes = b;
	return 0;
}

void mp_st_free(mp_st_file *f)
{
	if (f->tensors)
		for (size_t i = 0; i < f->ntensors; i++) {
			free(f->tensors[i].name);
			free(f->tensors[i].copy_);
		}
	if (f->meta)
		for (size_t i = 0; i < f->nmeta; i++) {
			free(f->meta[i].key);
			free(f->meta[i].value);
		}
	free(f->tensors);
	free(f->meta);
	free(f->by_name_);
	free(f->mem);
	free(f->path);
	memset(f, 0, sizeof *f);
}

/* ---- reading ------------------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b)
{
	const mp_st_tensor *x = *(mp_st_tensor *const *)a, *y = *(mp_st_tensor *const *)b;
	int c = strcmp(x->name, y->name);
	/* ties in header order, so that messages are deterministic */
	return c ? c : (x > y) - (x < y);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
	const mp_st_tensor *x = *(mp_st_tensor *const *)a, *y = *(mp_st_tensor *const *)b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return (x > y) - (x < y);
}

static int cmp_kv_key(const void *a, const void *b)
{
	const mp_st_kv *x = *(mp_st_kv *const *)a, *y = *(mp_st_kv *const *)b;
	int c = strcmp(x->key, y->key);
	return c ? c : (x > y) - (x < y);
}

/* The bytes of the header, before JSON: not empty, starts with '{', UTF-8,
 * no control bytes but JSON's whitespace (cJSON would skip them silently). */
static int check_header_bytes(const mp_st_file *f, const uint8_t *h, size_t n,
			      mp_error *e)
{
	if (n == 0)
		return st_err(e, f->path, "the header is empty");
	if (h[0] != '{')
		return st_err(e, f->path, "the header does not start with '{'");
	for (size_t i = 0; i < n; i++)
		if (h[i] < 0x20 && h[i] != '\t' && h[i] != '\n' && h[i] != '\r')
			return st_err(e, f->path,
				      "the header has control byte 0x%02x at byte %zu of the file "
				      "(not well-formed JSON)",
				      h[i], i + 8);
	size_t bad = mp_utf8_bad_at(h, n);
	if (bad != n)
		return st_err(e, f->path, "the header is not valid UTF-8 (byte %zu of the file)",
			      bad + 8);
	return 0;
}

static int read_metadata(mp_st_file *f, const cJSON *m, mp_error *e)
{
	if (!cJSON_IsObject(m))
		return st_err(e, f->path, "__metadata__ is not an object of strings");
	size_t n = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, m) n++;
	f->meta = calloc(n ? n : 1, sizeof *f->meta);
	if (!f->meta)
		return st_err(e, f->path, "out of memory");
	cJSON_ArrayForEach(v, m)
	{
		if (!cJSON_IsString(v))
			return st_err(e, f->path, "metadata \"%s\" is not a string", v->string);
		mp_st_kv *kv = &f->meta[f->nmeta++];
		kv->key = strdup(v->string);
		kv->value = strdup(v->valuestring);
		if (!kv->key || !kv->value)
			return st_err(e, f->path, "out of memory");
	}
	return 0;
}

/* One tensor entry: types, ranges, and that its bytes fit the data section. */
static int read_tensor(mp_st_file *f, const cJSON *o, const num_texts *nt, mp_st_tensor *t,
		       mp_error *e)
{
	const char *name = o->string;
	if (!*name)
		return st_err(e, f->path, "a tensor has an empty name");
	if (!(t->name = strdup(name)))
		return st_err(e, f->path, "out of memory");
	if (!cJSON_IsObject(o))
		return st_err(e, f->path, "tensor %s: the entry is not an object", name);
	/* Each field once: cJSON keeps duplicates, and which one wins would be
	 * a guess. Other fields are ignored, as the reference reader does. */
	const cJSON *dt = NULL, *sh = NULL, *off = NULL, *c;
	cJSON_ArrayForEach(c, o)
	{
		const cJSON **slot = !strcmp(c->string, "dtype")	  ? &dt
				     : !strcmp(c->string, "shape")	  ? &sh
				     : !strcmp(c->string, "data_offsets") ? &off
									  : NULL;
		if (!slot)
			continue;
		if (*slot)
			return st_err(e, f->path, "tensor %s: field \"%s\" appears twice", name,
				      c->string);
		*slot = c;
	}
	if (!cJSON_IsString(dt))
		return st_err(e, f->path, "tensor %s: dtype is missing or not a string", name);
	if (mp_st_dtype_parse(dt->valuestring, &t->dtype) < 0)
		return st_err(e, f->path, "tensor %s: unknown dtype \"%s\"", name,
			      dt->valuestring);
	if (!cJSON_IsArray(sh))
		return st_err(e, f->path, "tensor %s: shape is missing or not an array", name);
	int nd = cJSON_GetArraySize(sh);
	if (nd > MP_ST_MAX_DIMS)
		return st_err(e, f->path, "tensor %s: shape has %d dimensions (at most %d)", name,
			      nd, MP_ST_MAX_DIMS);
	t->ndim = 0;
	cJSON_ArrayForEach(c, sh)
	{
		uint64_t d;
		if (json_uint(nt, c, &d) < 0) {
			const char *s;
			int n = num_len(nt, c, &s);
			if (cJSON_IsNumber(c))
				return st_err(e, f->path,
					      "tensor %s: shape[%d] = %.*s is not a whole number "
					      "from 0 to 2^53",
					      name, t->ndim, n, s);
			return st_err(e, f->path, "tensor %s: shape[%d] is not a number", name,
				      t->ndim);
		}
		t->shape[t->ndim++] = (int64_t)d;
	}
	size_t elsize = mp_st_dtype_size(t->dtype);
	char shs[256];
	mp_st_shape_str(t->shape, t->ndim, shs, sizeof shs);
	if (shape_bytes(t->shape, t->ndim, elsize, &t->numel, &t->nbytes) < 0)
		return st_err(e, f->path, "tensor %s: shape %s is too large (its size overflows)",
			      name, shs);
	uint64_t b, en;
	if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
	    !cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) ||
	    !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)))
		return st_err(e, f->path,
			      "tensor %s: data_offsets is missing or not two whole numbers", name);
	for (int i = 0; i < 2; i++) {
		const cJSON *v = cJSON_GetArrayItem(off, i);
		if (json_uint(nt, v, i ? &en : &b) < 0) {
			const char *s;
			int n = num_len(nt, v, &s);
			return st_err(e, f->path,
				      "tensor %s: data_offsets[%d] = %.*s is not a whole number "
				      "from 0 to 2^53",
				      name, i, n, s);
		}
	}
	if (b > en)
		return st_err(e, f->path, "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64
			      "] end before they begin", name, b, en);
	if (en > f->data_len)
		return st_err(e, f->path, "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64
			      "] reach beyond the data section (%" PRIu64 " bytes)",
			      name, b, en, f->data_len);
	if (en - b != t->nbytes)
		return st_err(e, f->path, "tensor %s: data_offsets [%" PRIu64 ",%" PRIu64
			      "] hold %" PRIu64 " bytes, but %s %s needs %" PRIu64,
			      name, b, en, en - b, dt->valuestring, shs, t->nbytes);
	t->begin = b;
	return 0;
}

/* The tensors must tile the data section: sorted by offset, each begins
 * where the previous one ended, and the last ends at its end. */
static int check_layout(mp_st_file *f, mp_error *e)
{
	mp_st_tensor **s = malloc((f->ntensors ? f->ntensors : 1) * sizeof *s);
	if (!s)
		return st_err(e, f->path, "out of memory");
	for (size_t i = 0; i < f->ntensors; i++)
		s[i] = &f->tensors[i];
	qsort(s, f->ntensors, sizeof *s, cmp_tensor_offset);
	uint64_t at = 0;
	int rc = 0;
	for (size_t i = 0; i < f->ntensors && rc == 0; i++) {
		/* before the first error everything tiles, so the previous tensor
		 * is the one that ends at `at` */
		const mp_st_tensor *t = s[i], *p = i ? s[i - 1] : NULL;
		if (t->begin < at)
			rc = st_err(e, f->path,
				    "tensors %s [%" PRIu64 ",%" PRIu64 "] and %s [%" PRIu64
				    ",%" PRIu64 "] overlap",
				    p->name, p->begin, p->begin + p->nbytes, t->name, t->begin,
				    t->begin + t->nbytes);
		else if (t->begin > at)
			rc = st_err(e, f->path,
				    "data bytes %" PRIu64 "..%" PRIu64 " belong to no tensor "
				    "(a gap before tensor %s)",
				    at, t->begin, t->name);
		at = t->begin + t->nbytes;
	}
	if (rc == 0 && at != f->data_len)
		rc = st_err(e, f->path, "the data section has %" PRIu64
			    " bytes after the last tensor", f->data_len - at);
	free(s);
	return rc;
}

#define HCRC_AT (sizeof MP_ST_HCRC_PREFIX - 1) /* the digits' offset in the header */

static int lower_hex8(const uint8_t *p)
{
	for (int i = 0; i < 8; i++)
		if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
			return 0;
	return 1;
}

/* The CRC of the length field and the header, the header CRC's own digits
 * read as "00000000" (hlen >= HCRC_AT + 8). */
static uint32_t header_crc(const uint8_t *base, size_t hlen)
{
	uint32_t crc = mp_crc32(0, base, 8 + HCRC_AT);
	crc = mp_crc32(crc, "00000000", 8);
	return mp_crc32(crc, base + 8 + HCRC_AT + 8, hlen - HCRC_AT - 8);
}

/* The header CRC, checked before the JSON is parsed so that damage is
 * reported as such. It is looked for only where the writer puts it, at a
 * fixed offset, so that which bytes it covers is never in doubt; a
 * "header_crc32" anywhere else is refused once the metadata is read. */
static int check_header_crc(mp_st_file *f, mp_error *e)
{
	const uint8_t *h = f->base + 8, *v = h + HCRC_AT;
	if (f->header_len < HCRC_AT + 9 || memcmp(h, MP_ST_HCRC_PREFIX, HCRC_AT))
		return 0;
	if (!lower_hex8(v) || v[8] != '"')
		return st_err(e, f->path, "metadata \"%s\" is not 8 lowercase hex digits",
			      MP_ST_HCRC_KEY);
	char want[9];
	memcpy(want, v, 8);
	want[8] = '\0';
	uint32_t got = header_crc(f->base, (size_t)f->header_len);
	if (got != (uint32_t)strtoul(want, NULL, 16))
		return st_err(e, f->path,
			      "header CRC mismatch: the file is corrupt (header_crc32 %s in the "
			      "header, %08" PRIx32 " computed)",
			      want, got);
	f->has_header_crc = 1;
	f->header_crc = got;
	return 0;
}

static int check_crc(mp_st_file *f, mp_error *e)
{
	const char *v = mp_st_meta_get(f, MP_ST_CRC_KEY);
	if (!v)
		return 0;
	if (strlen(v) != 8 || strspn(v, "0123456789abcdef") != 8)
		return st_err(e, f->path, "metadata \"%s\" = \"%s\" is not 8 lowercase hex digits",
			      MP_ST_CRC_KEY, v);
	uint32_t want = (uint32_t)strtoul(v, NULL, 16);
	uint32_t got = mp_crc32(0, f->data, f->data_len);
	if (got != want)
		return st_err(e, f->path,
			      "data CRC mismatch: the file is corrupt (crc32 %s in the header, "
			      "%08" PRIx32 " computed)",
			      v, got);
	f->has_crc = 1;
	f->crc = got;
	return 0;
}

/* Points each tensor at its bytes; copies those that are not aligned to
 * their element size (possible in files from other writers). */
static int place_tensors(mp_st_file *f, mp_error *e)
{
	for (size_t i = 0; i < f->ntensors; i++) {
		mp_st_tensor *t = &f->tensors[i];
		const uint8_t *p = f->data + t->begin;
		size_t al = mp_st_dtype_size(t->dtype);
		if (t->nbytes == 0) {
			t->data = empty_data;
		} else if ((uintptr_t)p % al == 0) {
			t->data = p;
		} else {
			if (!(t->copy_ = malloc(t->nbytes)))
				return st_err(e, f->path, "tensor %s: out of memory", t->name);
			memcpy(t->copy_, p, t->nbytes);
			t->data = t->copy_;
		}
	}
	return 0;
}

/* Validates f->base[0..size) (with f->path and f->mem set); frees f on error. */
static int parse_file(mp_st_file *f, mp_error *e)
{
	cJSON *root = NULL;
	char *text = NULL;
	num_texts nt = {0};
	if (f->size < 8) {
		st_err(e, f->path, "%zu bytes is too short for a safetensors file (at least 8)",
		       f->size);
		goto fail;
	}
	uint64_t n = mp_get_u64(f->base);
	/* a length that cannot be, and no '{' where the header begins: some
	 * other file (an image, a dataset stream), said so rather than by
	 * the number its first bytes make */
	if ((n > MP_ST_MAX_HEADER || n > f->size - 8) && (f->size == 8 || f->base[8] != '{')) {
		st_err(e, f->path, "not a safetensors file (its first 8 bytes give a header of %" PRIu64
		       " bytes, and no '{' begins one)", n);
		goto fail;
	}
	if (n > MP_ST_MAX_HEADER) {
		st_err(e, f->path, "header length %" PRIu64 " exceeds the limit of %u bytes", n,
		       MP_ST_MAX_HEADER);
		goto fail;
	}
	if (n > f->size - 8) {
		st_err(e, f->path, "header length %" PRIu64 " is larger than the file "
		       "(%zu bytes after the length field)", n, f->size - 8);
		goto fail;
	}
	f->header_len = n;
	f->data = f->base + 8 + n;
	f->data_len = f->size - 8 - n;
	if (check_header_bytes(f, f->base + 8, n, e) < 0 || check_header_crc(f, e) < 0)
		goto fail;
	/* A NUL-terminated copy: cJSON then cannot read past the header. */
	if (!(text = malloc(n + 1))) {
		st_err(e, f->path, "out of memory for a %" PRIu64 "-byte header", n);
		goto fail;
	}
	memcpy(text, f->base + 8, n);
	text[n] = '\0';
	const char *end = NULL;
	root = cJSON_ParseWithOpts(text, &end, 1);
	if (!root) {
		st_err(e, f->path, "the header is not well-formed JSON (at byte %zu of the file)",
		       (size_t)(end ? end - text : 0) + 8);
		goto fail;
	}
	if (!cJSON_IsObject(root)) {
		st_err(e, f->path, "the header is not a JSON object");
		goto fail;
	}
	int found = find_numbers(text, root, &nt);
	if (found < 0) {
		st_err(e, f->path, found == -1 ? "out of memory for the header's numbers"
			: "the header's numbers do not match its text");
		goto fail;
	}
	size_t count = 0;
	const cJSON *c, *metadata = NULL;
	cJSON_ArrayForEach(c, root)
	{
		if (strcmp(c->string, "__metadata__"))
			count++;
		else if (metadata) {
			st_err(e, f->path, "__metadata__ appears twice");
			goto fail;
		} else
			metadata = c;
	}
	if (metadata && read_metadata(f, metadata, e) < 0)
		goto fail;
	if (mp_st_meta_get(f, MP_ST_HCRC_KEY) && !f->has_header_crc) {
		st_err(e, f->path, "metadata \"%s\" is not where it must be: the first key of "
		       "__metadata__, at the start of the header", MP_ST_HCRC_KEY);
		goto fail;
	}
	f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
	f->by_name_ = malloc((count ? count : 1) * sizeof *f->by_name_);
	if (!f->tensors || !f->by_name_) {
		st_err(e, f->path, "out of memory for %zu tensors", count);
		goto fail;
	}
	cJSON_ArrayForEach(c, root)
	{
		if (c == metadata)
			continue;
		mp_st_tensor *t = &f->tensors[f->ntensors++];
		if (read_tensor(f, c, &nt, t, e) < 0)
			goto fail;
	}
	cJSON_Delete(root);
	root = NULL;
	free(text);
	text = NULL;
	free(nt.nums);
	nt.nums = NULL;
	/* unique names and keys: sort and compare neighbours */
	for (size_t i = 0; i < f->ntensors; i++)
		f->by_name_[i] = &f->tensors[i];
	qsort(f->by_name_, f->ntensors, sizeof *f->by_name_, cmp_tensor_name);
	for (size_t i = 1; i < f->ntensors; i++)
		if (!strcmp(f->by_name_[i - 1]->name, f->by_name_[i]->name)) {
			st_err(e, f->path, "tensor name %s appears twice", f->by_name_[i]->name);
			goto fail;
		}
	if (f->nmeta > 1) {
		mp_st_kv **k = malloc(f->nmeta * sizeof *k);
		if (!k) {
			st_err(e, f->path, "out of memory");
			goto fail;
		}
		for (size_t i = 0; i < f->nmeta; i++)
			k[i] = &f->meta[i];
		qsort(k, f->nmeta, sizeof *k, cmp_kv_key);
		for (size_t i = 1; i < f->nmeta; i++)
			if (!strcmp(k[i - 1]->key, k[i]->key)) {
				st_err(e, f->path, "metadata key \"%s\" appears twice", k[i]->key);
				free(k);
				goto fail;
			}
		free(k);
	}
	if (check_layout(f, e) < 0 || check_crc(f, e) < 0 || place_tensors(f, e) < 0)
		goto fail;
	return 0;
fail:
	cJSON_Delete(root);
	free(text);
	free(nt.nums);
	/* freed, but a header CRC verified before the failure (a data CRC
	 * mismatch) is still said: mp-inspect --verify reports it */
	const int header_checked = f->has_header_crc;
	mp_st_free(f);
	f->has_header_crc = header_checked;
	return -1;
}

/* Where the file's first byte goes in an 8-aligned buffer so that its data
 * section (at 8 + N) is 8-aligned too; 0 when N is unreadable. */
static size_t lead_pad(const uint8_t *buf, size_t len)
{
	if (len < 8)
		return 0;
	return (size_t)((8 - (8 + mp_get_u64(buf)) % 8) % 8);
}

int mp_st_parse(const void *buf, size_t len, const char *name, mp_st_file *out,
		mp_error *e)
{
	memset(out, 0, sizeof *out);
	size_t pad = lead_pad(buf, len);
	/* malloc aligns to at least 16 bytes on the hosts we support */
	if (!(out->path = strdup(name)) || !(out->mem = malloc(len + pad + 1))) {
		mp_st_free(out);
		return st_err(e, name, "out of memory for %zu bytes", len);
	}
	out->base = out->mem + pad;
	out->size = len;
	if (len)
		memcpy(out->mem + pad, buf, len);
	return parse_file(out, e);
}

int mp_st_read(const char *path, size_t max_bytes, mp_st_file *out, mp_error *e)
{
	memset(out, 0, sizeof *out);
	uint8_t *buf;
	size_t len;
	mp_error re;
	if (mp_read_file(path, max_bytes, &buf, &len, &re) < 0)
		return mp_seterr(e, "%s: %s", path, re.msg);
	size_t pad = lead_pad(buf, len);
	if (pad) {
		uint8_t *b = realloc(buf, len + pad);
		if (!b) {
			free(buf);
			return st_err(e, path, "out of memory for %zu bytes", len);
		}
		memmove(b + pad, b, len);
		buf = b;
	}
	out->mem = buf;
	out->base = buf + pad;
	out->size = len;
	if (!(out->path = strdup(path))) {
		mp_st_free(out);
		return st_err(e, path, "out of memory");
	}
	return parse_file(out, e);
}

const mp_st_tensor *mp_st_find(const mp_st_file *f, const char *name)
{
	size_t lo = 0, hi = f->ntensors;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(f->by_name_[mid]->name, name);
		if (c == 0)
			return f->by_name_[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const char *mp_st_meta_get(const mp_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->nmeta; i++)
		if (!strcmp(f->meta[i].key, key))
			return f->meta[i].value;
	return NULL;
}

int mp_st_get(const mp_st_file *f, const char *name, mp_st_dtype dtype,
	      const int *expected_shape, int ndim, const void **data, mp_error *e)
{
	const mp_st_tensor *t = mp_st_find(f, name);
	if (!t)
		return st_err(e, f->path, "no tensor named %s", name);
	if (t->dtype != dtype)
		return st_err(e, f->path, "tensor %s has dtype %s, expected %s", name,
			      mp_st_dtype_name(t->dtype), mp_st_dtype_name(dtype));
	int same = t->ndim == ndim;
	for (int i = 0; same && i < ndim; i++)
		same = t->shape[i] == expected_shape[i];
	if (!same) {
		int64_t want[MP_ST_MAX_DIMS + 1];
		int wn = ndim < 0 ? 0 : ndim > MP_ST_MAX_DIMS + 1 ? MP_ST_MAX_DIMS + 1 : ndim;
		for (int i = 0; i < wn; i++)
			want[i] = expected_shape[i];
		char have[256], exp[256];
		mp_st_shape_str(t->shape, t->ndim, have, sizeof have);
		mp_st_shape_str(want, wn, exp, sizeof exp);
		return st_err(e, f->path, "tensor %s has shape %s, expected %s", name, have, exp);
	}
	*data = t->data;
	return 0;
}

int mp_st_get_f32(const mp_st_file *f, const char *name, const int *expected_shape,
		  int ndim, const float **data, mp_error *e)
{
	const void *p;
	if (mp_st_get(f, name, MP_ST_F32, expected_shape, ndim, &p, e) < 0)
		return -1;
	*data = p;
	return 0;
}

/* ---- writing ------------------------------------------------------------- */

void mp_st_builder_init(mp_st_builder *b)
{
	memset(b, 0, sizeof *b);
}

void mp_st_builder_free(mp_st_builder *b)
{
	for (size_t i = 0; i < b->ntensors; i++)
		free(b->tensors[i].name);
	for (size_t i = 0; i < b->nmeta; i++) {
		free(b->meta[i].key);
		free(b->meta[i].value);
	}
	free(b->tensors);
	free(b->meta);
	memset(b, 0, sizeof *b);
}

int mp_st_builder_add(mp_st_builder *b, const char *name, mp_st_dtype dtype,
		      const int64_t *shape, int ndim, const void *data, mp_error *e)
{
	if (!name || !*name)
		return mp_seterr(e, "a tensor needs a non-empty name");
	if (!strcmp(name, "__metadata__"))
		return mp_seterr(e, "\"__metadata__\" cannot name a tensor");
	if (!utf8_ok(name))
		return mp_seterr(e, "tensor name %s is not valid UTF-8", name);
	if ((unsigned)dtype >= MP_ST_NDTYPES)
		return mp_seterr(e, "tensor %s: dtype %d is not known", name, (int)dtype);
	if (ndim < 0 || ndim > MP_ST_MAX_DIMS)
		return mp_seterr(e, "tensor %s: %d dimensions (from 0 to %d)", name, ndim,
				 MP_ST_MAX_DIMS);
	for (int i = 0; i < ndim; i++)
		if (shape[i] < 0 || (uint64_t)shape[i] > MAX_JSON_INT)
			return mp_seterr(e, "tensor %s: shape[%d] = %" PRId64 " is out of range",
					 name, i, shape[i]);
	for (size_t i = 0; i < b->ntensors; i++)
		if (!strcmp(b->tensors[i].name, name))
			return mp_seterr(e, "tensor name %s is used twice", name);
	mp_st_tensor t = {.dtype = dtype, .ndim = ndim, .data = data};
	if (ndim > 0)
		memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
	uint64_t total;
	if (shape_bytes(t.shape, ndim, mp_st_dtype_size(dtype), &t.numel, &t.nbytes) < 0 ||
	    t.nbytes > SIZE_MAX / 2 || __builtin_add_overflow(b->data_len, t.nbytes, &total) ||
	    total > SIZE_MAX / 2)
		return mp_seterr(e, "tensor %s: too large", name);
	if (t.nbytes && !data)
		return mp_seterr(e, "tensor %s: no data", name);
	if (b->ntensors == b->tcap) {
		size_t cap = b->tcap ? 2 * b->tcap : 16;
		mp_st_tensor *nt = realloc(b->tensors, cap * sizeof *nt);
		if (!nt)
			return mp_seterr(e, "out of memory");
		b->tensors = nt;
		b->tcap = cap;
	}
	if (!(t.name = strdup(name)))
		return mp_seterr(e, "out of memory");
	t.begin = b->data_len;
	b->tensors[b->ntensors++] = t;
	b->data_len = total;
	return 0;
}

int mp_st_builder_add_f32(mp_st_builder *b, const char *name, const int *shape,
			  int ndim, const float *data, mp_error *e)
{
	if (ndim < 0 || ndim > MP_ST_MAX_DIMS)
		return mp_seterr(e, "tensor %s: %d dimensions (from 0 to %d)", name ? name : "",
				 ndim, MP_ST_MAX_DIMS);
	int64_t s[MP_ST_MAX_DIMS];
	for (int i = 0; i < ndim; i++)
		s[i] = shape[i];
	return mp_st_builder_add(b, name, MP_ST_F32, s, ndim, data, e);
}

int mp_st_builder_meta(mp_st_builder *b, const char *key, const char *value,
		       mp_error *e)
{
	if (!key || !value)
		return mp_seterr(e, "metadata needs a key and a value");
	if (!strcmp(key, MP_ST_CRC_KEY) || !strcmp(key, MP_ST_HCRC_KEY))
		return mp_seterr(e, "metadata key \"%s\" is reserved for the writer", key);
	if (!utf8_ok(key) || !utf8_ok(value))
		return mp_seterr(e, "metadata \"%s\": not valid UTF-8", key);
	for (size_t i = 0; i < b->nmeta; i++)
		if (!strcmp(b->meta[i].key, key))
			return mp_seterr(e, "metadata key \"%s\" is used twice", key);
	if (b->nmeta == b->mcap) {
		size_t cap = b->mcap ? 2 * b->mcap : 16;
		mp_st_kv *nm = realloc(b->meta, cap * sizeof *nm);
		if (!nm)
			return mp_seterr(e, "out of memory");
		b->meta = nm;
		b->mcap = cap;
	}
	mp_st_kv kv = {strdup(key), strdup(value)};
	if (!kv.key || !kv.value) {
		free(kv.key);
		free(kv.value);
		return mp_seterr(e, "out of memory");
	}
	b->meta[b->nmeta++] = kv;
	return 0;
}

static uint32_t builder_crc(const mp_st_builder *b)
{
	uint32_t crc = 0;
	for (size_t i = 0; i < b->ntensors; i++)
		crc = mp_crc32(crc, b->tensors[i].data, b->tensors[i].nbytes);
	return crc;
}

/* An integer printed exactly (cJSON's own printing would turn 1e15 into
 * "1e+15", which strict readers refuse for a size). */
static int add_uint(cJSON *arr, uint64_t v)
{
	char num[24];
	snprintf(num, sizeof num, "%" PRIu64, v);
	cJSON *n = cJSON_CreateRaw(num);
	if (!n)
		return -1;
	if (!cJSON_AddItemToArray(arr, n)) {
		cJSON_Delete(n);
		return -1;
	}
	return 0;
}

/* The 8-byte length and the JSON header padded with spaces to a multiple
 * of 8: the data section follows at an aligned offset. "__metadata__" comes
 * first (as the reference writer puts it), "header_crc32" first in it and
 * "crc32" last, then the tensors in the order added. The header CRC is
 * written as "00000000", computed over the finished bytes and patched in. */
static uint8_t *build_header(const mp_st_builder *b, size_t *hlen, mp_error *e)
{
	uint8_t *out = NULL;
	char *json = NULL;
	cJSON *root = cJSON_CreateObject(), *meta;
	if (!root || !(meta = cJSON_AddObjectToObject(root, "__metadata__")) ||
	    !cJSON_AddStringToObject(meta, MP_ST_HCRC_KEY, "00000000"))
		goto oom;
	for (size_t i = 0; i < b->nmeta; i++)
		if (!cJSON_AddStringToObject(meta, b->meta[i].key, b->meta[i].value))
			goto oom;
	char crc[9];
	snprintf(crc, sizeof crc, "%08" PRIx32, builder_crc(b));
	if (!cJSON_AddStringToObject(meta, MP_ST_CRC_KEY, crc))
		goto oom;
	for (size_t i = 0; i < b->ntensors; i++) {
		const mp_st_tensor *t = &b->tensors[i];
		cJSON *o = cJSON_CreateObject(), *sh, *off;
		if (!o)
			goto oom;
		if (!cJSON_AddItemToObject(root, t->name, o)) {
			cJSON_Delete(o);
			goto oom;
		}
		if (!cJSON_AddStringToObject(o, "dtype", mp_st_dtype_name(t->dtype)) ||
		    !(sh = cJSON_AddArrayToObject(o, "shape")) ||
		    !(off = cJSON_AddArrayToObject(o, "data_offsets")))
			goto oom;
		for (int d = 0; d < t->ndim; d++)
			if (add_uint(sh, (uint64_t)t->shape[d]) < 0)
				goto oom;
		if (add_uint(off, t->begin) < 0 || add_uint(off, t->begin + t->nbytes) < 0)
			goto oom;
	}
	if (!(json = cJSON_PrintUnformatted(root)))
		goto oom;
	size_t n = strlen(json), pad = (8 - (8 + n) % 8) % 8;
	if (n + pad > MP_ST_MAX_HEADER) {
		mp_seterr(e, "the header would be %zu bytes (the limit is %u)", n + pad,
			  MP_ST_MAX_HEADER);
		goto fail;
	}
	if (!(out = malloc(8 + n + pad)))
		goto oom;
	mp_put_u64(out, n + pad);
	memcpy(out + 8, json, n);
	memset(out + 8 + n, ' ', pad);
	/* cJSON prints no white space and keeps the order of insertion */
	if (memcmp(out + 8, MP_ST_HCRC_PREFIX, HCRC_AT)) {
		mp_seterr(e, "the safetensors header does not start as it must");
		free(out);
		out = NULL;
		goto fail;
	}
	char hcrc[9];
	snprintf(hcrc, sizeof hcrc, "%08" PRIx32, header_crc(out, n + pad));
	memcpy(out + 8 + HCRC_AT, hcrc, 8);
	*hlen = 8 + n + pad;
	cJSON_free(json);
	cJSON_Delete(root);
	return out;
oom:
	mp_seterr(e, "out of memory building the safetensors header");
fail:
	cJSON_free(json);
	cJSON_Delete(root);
	return NULL;
}

int mp_st_builder_serialize(const mp_st_builder *b, uint8_t **buf, size_t *len,
			    mp_error *e)
{
	size_t hlen;
	uint8_t *h = build_header(b, &hlen, e);
	if (!h)
		return -1;
	uint8_t *out = realloc(h, hlen + (size_t)b->data_len);
	if (!out) {
		free(h);
		return mp_seterr(e, "out of memory for a %" PRIu64 "-byte file",
				 hlen + b->data_len);
	}
	for (size_t i = 0; i < b->ntensors; i++)
		if (b->tensors[i].nbytes)
			memcpy(out + hlen + b->tensors[i].begin, b->tensors[i].data,
			       b->tensors[i].nbytes);
	*buf = out;
	*len = hlen + (size_t)b->data_len;
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int mp_st_builder_write(const mp_st_builder *b, const char *path, mp_error *e)
{
	size_t hlen;
	uint8_t *h = build_header(b, &hlen, e);
	if (!h)
		return -1;
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 32);
	int fd = -1;
	if (!tmp) {
		mp_seterr(e, "%s: out of memory", path);
		goto fail;
	}
	snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		mp_seterr(e, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (write_all(fd, h, hlen) < 0)
		goto write_error;
	for (size_t i = 0; i < b->ntensors; i++)
		if (write_all(fd, b->tensors[i].data, b->tensors[i].nbytes) < 0)
			goto write_error;
	if (fsync(fd) < 0) {
		mp_seterr(e, "%s: fsync: %s", path, strerror(errno));
		goto fail_unlink;
	}
	int rc = close(fd);
	fd = -1;
	if (rc < 0) {
		mp_seterr(e, "%s: close: %s", path, strerror(errno));
		goto fail_unlink;
	}
	if (rename(tmp, path) < 0) {
		mp_seterr(e, "%s: rename: %s", path, strerror(errno));
		goto fail_unlink;
	}
	mp_sync_parent_dir(path);
	free(tmp);
	free(h);
	return 0;
write_error:
	mp_seterr(e, "%s: write error: %s", path, strerror(errno));
fail_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
fail:
	free(tmp);
	free(h);
	return -1;
}
