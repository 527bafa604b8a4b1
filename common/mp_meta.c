#include "mp_meta.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mp_meta_init(mp_meta *m)
{
	memset(m, 0, sizeof *m);
	m->format_version = MP_META_VERSION;
	m->channels = 3;
}

void mp_meta_free(mp_meta *m)
{
	if (m->class_names) {
		for (int i = 0; i < m->classes; i++)
			free(m->class_names[i]);
		free(m->class_names);
	}
	free(m->source_list);
	memset(m, 0, sizeof *m);
}

static int add_mean(cJSON *o, const mp_meta *m)
{
	if (!m->has_mean)
		return cJSON_AddNullToObject(o, "mean") ? 0 : -1;
	cJSON *a = cJSON_AddArrayToObject(o, "mean");
	if (!a)
		return -1;
	for (int c = 0; c < 3; c++) {
		/* 17 significant digits: the double reads back bit for bit
		 * (cJSON's own printing keeps only 15 when they are "close"). */
		char num[32];
		snprintf(num, sizeof num, "%.17g", m->mean[c]);
		cJSON *n = cJSON_CreateRaw(num);
		if (!n)
			return -1;
		cJSON_AddItemToArray(a, n);
	}
	return 0;
}

/* A JSON string of text that should be UTF-8 but may not be (a file name,
 * a name from another writer's stream): each byte that breaks UTF-8 becomes U+FFFD, so the document
 * stays valid JSON for every reader. */
static cJSON *utf8_string(const char *s)
{
	size_t n = strlen(s), bad = mp_utf8_bad_at((const uint8_t *)s, n);
	if (bad == n)
		return cJSON_CreateString(s);
	char *t = malloc(3 * n + 1), *q = t;
	if (!t)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t ok = mp_utf8_bad_at((const uint8_t *)s + i, n - i);
		memcpy(q, s + i, ok);
		q += ok;
		i += ok;
		if (i < n) {
			memcpy(q, "\xef\xbf\xbd", 3);
			q += 3;
			i++;
		}
	}
	*q = '\0';
	cJSON *j = cJSON_CreateString(t);
	free(t);
	return j;
}

/* The document's CRC stands first, where a reader finds it without doubt
 * about which bytes it covers: the text starts with '{', "crc32", ':' and
 * a string, with only JSON white space around them. Returns the 8 bytes
 * inside that string (not yet checked for hex digits), or NULL. */
static const char *crc_digits(const char *text, size_t len)
{
	static const char key[] = "\"" MP_META_CRC_KEY "\"";
	size_t i = 0;
#define SKIP_WS() while (i < len && strchr(" \t\n\r", text[i]) && text[i]) i++
	SKIP_WS();
	if (i >= len || text[i++] != '{')
		return NULL;
	SKIP_WS();
	if (len - i < sizeof key - 1 || memcmp(text + i, key, sizeof key - 1))
		return NULL;
	i += sizeof key - 1;
	SKIP_WS();
	if (i >= len || text[i++] != ':')
		return NULL;
	SKIP_WS();
#undef SKIP_WS
	if (i >= len || text[i++] != '"' || len - i < 9)
		return NULL;
	return text + i;
}

/* The CRC of the document with its CRC's 8 digits read as "00000000". */
static uint32_t doc_crc(const char *text, size_t len, const char *digits)
{
	size_t at = (size_t)(digits - text);
	uint32_t crc = mp_crc32(0, text, at);
	crc = mp_crc32(crc, "00000000", 8);
	return mp_crc32(crc, digits + 8, len - at - 8);
}

int mp_meta_seal(char *text, size_t len, mp_error *e)
{
	char *digits = (char *)crc_digits(text, len), crc[9];
	if (!digits || digits[8] != '"')
		return mp_seterr(e, "meta: the document does not start with its CRC");
	snprintf(crc, sizeof crc, "%08x", (unsigned)doc_crc(text, len, digits));
	memcpy(digits, crc, 8);
	return 0;
}

char *mp_meta_to_json(const mp_meta *m, mp_error *e)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	if (!o)
		goto oom;
	/* the current version whatever m was read from (a stream copied into a
	 * DB is written anew); the CRC is patched in once the text is done */
	if (!cJSON_AddStringToObject(o, MP_META_CRC_KEY, "00000000") ||
	    !cJSON_AddStringToObject(o, "format", MP_META_FORMAT) ||
	    !cJSON_AddNumberToObject(o, "format_version", MP_META_VERSION) ||
	    !cJSON_AddBoolToObject(o, "complete", m->complete) ||
	    !cJSON_AddNumberToObject(o, "records", (double)m->records) ||
	    !cJSON_AddNumberToObject(o, "macrobatches", (double)m->macrobatches) ||
	    !cJSON_AddNumberToObject(o, "macrobatch_size", m->macrobatch_size) ||
	    !cJSON_AddNumberToObject(o, "height", m->height) ||
	    !cJSON_AddNumberToObject(o, "width", m->width) ||
	    !cJSON_AddNumberToObject(o, "channels", m->channels) ||
	    !cJSON_AddNumberToObject(o, "size", m->size) ||
	    !cJSON_AddStringToObject(o, "fit", m->fit) ||
	    !cJSON_AddNumberToObject(o, "padding", m->padding) ||
	    !cJSON_AddStringToObject(o, "pad_fill", m->pad_fill) ||
	    !cJSON_AddStringToObject(o, "encoding", m->encoding) ||
	    !cJSON_AddNumberToObject(o, "quality", m->quality) ||
	    !cJSON_AddStringToObject(o, "pixel_format", "rgb8") || add_mean(o, m) < 0 ||
	    !cJSON_AddBoolToObject(o, "labelled", m->labelled) ||
	    !cJSON_AddNumberToObject(o, "classes", m->classes))
		goto oom;
	if (m->class_names) {
		cJSON *a = cJSON_AddArrayToObject(o, "class_names");
		if (!a)
			goto oom;
		for (int i = 0; i < m->classes; i++) {
			cJSON *s = utf8_string(m->class_names[i]);
			if (!s)
				goto oom;
			cJSON_AddItemToArray(a, s);
		}
	} else if (!cJSON_AddNullToObject(o, "class_names")) {
		goto oom;
	}
	cJSON *src = utf8_string(m->source_list ? m->source_list : "");
	if (!src)
		goto oom;
	cJSON_AddItemToObject(o, "source_list", src);
	if (!cJSON_AddNumberToObject(o, "skipped", (double)m->skipped) ||
	    !(m->shuffled ? cJSON_AddNumberToObject(o, "shuffle_seed", (double)m->shuffle_seed)
			  : cJSON_AddNullToObject(o, "shuffle_seed")) ||
	    !cJSON_AddStringToObject(o, "created_by", m->created_by))
		goto oom;
	text = cJSON_Print(o);
	if (!text)
		goto oom;
	cJSON_Delete(o);
	/* cJSON prints the members in the order added: the CRC first */
	if (mp_meta_seal(text, strlen(text), e) < 0) {
		free(text);
		return NULL;
	}
	return text;
oom:
	cJSON_Delete(o);
	mp_seterr(e, "out of memory building the meta document");
	return NULL;
}

/* A number of the document for a message: whole numbers in full, as
 * the page gives the ranges, not as 1e+15. */
static const char *num_text(double d, char *buf, size_t n)
{
	if (isfinite(d) && d == floor(d) && fabs(d) < 1e18)
		snprintf(buf, n, "%.0f", d);
	else
		snprintf(buf, n, "%.17g", d);
	return buf;
}

/* Field readers: each checks type and range and names the field. Every
 * number of the document is an integer but the mean, and every bound is
 * below 2^53, where a double holds each integer exactly. */
static int get_int64(const cJSON *o, const char *key, int64_t min, int64_t max,
		     int64_t *out, mp_error *e)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	char num[40];
	if (!cJSON_IsNumber(v))
		return mp_seterr(e, "meta: \"%s\" is missing or not a number", key);
	double d = v->valuedouble;
	if (!isfinite(d) || d < (double)min || d > (double)max)
		return mp_seterr(e, "meta: \"%s\" = %s is outside %lld..%lld", key,
				 num_text(d, num, sizeof num), (long long)min, (long long)max);
	if (d != floor(d))
		return mp_seterr(e, "meta: \"%s\" = %s is not an integer", key,
				 num_text(d, num, sizeof num));
	*out = (int64_t)d;
	return 0;
}

static int get_int(const cJSON *o, const char *key, long min, long max,
		   long *out, mp_error *e)
{
	int64_t v;
	if (get_int64(o, key, min, max, &v, e) < 0)
		return -1;
	*out = (long)v;
	return 0;
}

/* Counts (records, skipped: MP_META_MAX_RECORDS; macrobatches:
 * MP_META_MAX_BATCHES) and the shuffle seed, in the page's ranges. */
static int get_count(const cJSON *o, const char *key, uint64_t max, uint64_t *out,
		     mp_error *e)
{
	int64_t v;
	if (get_int64(o, key, 0, (int64_t)max, &v, e) < 0)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int get_str(const cJSON *o, const char *key, char *dst, size_t n,
		   mp_error *e)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
		return mp_seterr(e, "meta: \"%s\" is missing or not a short string", key);
	strcpy(dst, v->valuestring);
	return 0;
}

static int get_word(const cJSON *o, const char *key, char *dst, size_t n,
		    const char *const *words, mp_error *e)
{
	if (get_str(o, key, dst, n, e) < 0)
		return -1;
	for (int i = 0; words[i]; i++)
		if (!strcmp(dst, words[i]))
			return 0;
	return mp_seterr(e, "meta: \"%s\" = \"%s\" is not a known value", key, dst);
}

static int get_bool(const cJSON *o, const char *key, int *out, mp_error *e)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsBool(v))
		return mp_seterr(e, "meta: \"%s\" is missing or not true/false", key);
	*out = cJSON_IsTrue(v);
	return 0;
}

static int get_mean(const cJSON *o, mp_meta *m, mp_error *e)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "mean");
	if (cJSON_IsNull(v)) {
		m->has_mean = 0;
		return 0;
	}
	if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
		return mp_seterr(e, "meta: \"mean\" is not null or an array of 3 numbers");
	for (int c = 0; c < 3; c++) {
		const cJSON *n = cJSON_GetArrayItem(v, c);
		if (!cJSON_IsNumber(n) || !(n->valuedouble >= 0 && n->valuedouble <= 255))
			return mp_seterr(e, "meta: \"mean\"[%d] is not a number in 0..255", c);
		m->mean[c] = n->valuedouble;
	}
	m->has_mean = 1;
	return 0;
}

/* Final counts: the records fill every macrobatch but the last. */
static int check_counts(const char *what, uint64_t records, uint64_t macrobatches,
			uint32_t macrobatch_size, mp_error *e)
{
	if (macrobatch_size == 0) /* an end frame with no meta document read */
		return mp_seterr(e, "%s: the macrobatch size is not known", what);
	uint64_t need = (records + macrobatch_size - 1) / macrobatch_size;
	if (records > 0 && macrobatches != need)
		return mp_seterr(e, "%s: %llu record%s of %u per macrobatch make%s "
				 "%llu macrobatch%s, not %llu",
				 what, (unsigned long long)records, records == 1 ? "" : "s",
				 macrobatch_size, records == 1 ? "s" : "",
				 (unsigned long long)need, need == 1 ? "" : "es",
				 (unsigned long long)macrobatches);
	return 0;
}

/* One JSON value and nothing after it but white space: a damaged length
 * that takes in bytes after the document must not pass. */
static cJSON *parse_whole(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *o = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!o)
		return NULL;
	for (; end < text + len; end++)
		if (!strchr(" \t\n\r", *end) || !*end) {
			cJSON_Delete(o);
			return NULL;
		}
	return o;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A member name given twice in an object, at any depth: readers would
 * differ on which one counts (cJSON takes the first, Python's json the
 * last). what names the document for the message. cJSON's nesting limit
 * bounds the recursion. */
static int check_duplicates(const cJSON *v, const char *what, mp_error *e)
{
	int n = 0, rc = 0;
	const cJSON *c;
	for (c = v->child; c; c = c->next) {
		if (check_duplicates(c, what, e) < 0)
			return -1;
		n++;
	}
	if (!cJSON_IsObject(v) || n < 2)
		return 0;
	const char **names = malloc((size_t)n * sizeof *names);
	if (!names)
		return mp_seterr(e, "out of memory reading the %s", what);
	n = 0;
	for (c = v->child; c; c = c->next)
		names[n++] = c->string ? c->string : "";
	qsort(names, (size_t)n, sizeof *names, cmp_names);
	for (int i = 1; i < n && !rc; i++)
		if (!strcmp(names[i - 1], names[i]))
			rc = mp_seterr(e, "%s: member \"%.64s\" appears more than once", what,
				       names[i]);
	free(names);
	return rc;
}

int mp_meta_from_json(const char *text, size_t len, mp_meta *m, mp_error *e)
{
	mp_meta_init(m);
	cJSON *o = parse_whole(text, len);
	long v;
	if (!o)
		return mp_seterr(e, "meta: not well-formed JSON");
	if (!cJSON_IsObject(o)) {
		mp_seterr(e, "meta: not a JSON object");
		goto fail;
	}
	/* the CRC before any field: damage is reported as damage */
	const char *digits = crc_digits(text, len);
	if (digits) {
		char want[9];
		memcpy(want, digits, 8);
		want[8] = '\0';
		if (strspn(want, "0123456789abcdef") != 8 || digits[8] != '"') {
			mp_seterr(e, "meta: \"%s\" is not 8 lowercase hex digits", MP_META_CRC_KEY);
			goto fail;
		}
		uint32_t got = doc_crc(text, len, digits);
		if (got != (uint32_t)strtoul(want, NULL, 16)) {
			mp_seterr(e, "meta: CRC mismatch: the document is damaged (crc32 %s in it, "
				  "%08x computed)", want, (unsigned)got);
			goto fail;
		}
		m->has_crc = 1;
	} else if (cJSON_GetObjectItemCaseSensitive(o, MP_META_CRC_KEY)) {
		mp_seterr(e, "meta: \"%s\" is not where it must be: the first member of the "
			  "document", MP_META_CRC_KEY);
		goto fail;
	}
	size_t bad = mp_utf8_bad_at(text, len);
	if (bad < len) {
		mp_seterr(e, "meta: not UTF-8 text (byte 0x%02x at offset %zu)",
			  (unsigned char)text[bad], bad);
		goto fail;
	}
	if (check_duplicates(o, "meta", e) < 0)
		goto fail;
	char fmt[32];
	if (get_str(o, "format", fmt, sizeof fmt, e) < 0)
		goto fail;
	if (strcmp(fmt, MP_META_FORMAT)) {
		mp_seterr(e, "meta: format \"%s\" is not %s", fmt, MP_META_FORMAT);
		goto fail;
	}
	if (get_int(o, "format_version", 1, 1000, &v, e) < 0)
		goto fail;
	if (v > MP_META_VERSION) {
		mp_seterr(e, "meta: format_version %ld is not supported (expected 1 to %d)", v,
			  MP_META_VERSION);
		goto fail;
	}
	/* a damaged key must not pass for a document without a CRC */
	if (v >= 2 && !m->has_crc) {
		mp_seterr(e, "meta: \"%s\" is missing or damaged: format_version %ld has it as "
			  "the first member of the document", MP_META_CRC_KEY, v);
		goto fail;
	}
	m->format_version = (int)v;
	if (get_bool(o, "complete", &m->complete, e) < 0)
		goto fail;
	if (get_count(o, "records", MP_META_MAX_RECORDS, &m->records, e) < 0 ||
	    get_count(o, "macrobatches", MP_META_MAX_BATCHES, &m->macrobatches, e) < 0)
		goto fail;
	if (get_int(o, "macrobatch_size", 1, 1 << 20, &v, e) < 0)
		goto fail;
	m->macrobatch_size = (uint32_t)v;
	if (get_int(o, "height", 1, 65535, &v, e) < 0)
		goto fail;
	m->height = (int)v;
	if (get_int(o, "width", 1, 65535, &v, e) < 0)
		goto fail;
	m->width = (int)v;
	if (get_int(o, "channels", 3, 3, &v, e) < 0)
		goto fail;
	m->channels = (int)v;
	if (get_int(o, "size", 1, 65535, &v, e) < 0)
		goto fail;
	m->size = (int)v;
	if (get_int(o, "padding", 0, 65535, &v, e) < 0)
		goto fail;
	m->padding = (int)v;
	if (get_int(o, "quality", 0, 100, &v, e) < 0)
		goto fail;
	m->quality = (int)v;
	static const char *const fits[] = {"pad", "crop", "stretch", NULL};
	static const char *const fills[] = {"mean", "zero", "edge", NULL};
	static const char *const stores[] = {"keep", "jpeg", "png", "raw", NULL};
	if (get_word(o, "fit", m->fit, sizeof m->fit, fits, e) < 0 ||
	    get_word(o, "pad_fill", m->pad_fill, sizeof m->pad_fill, fills, e) < 0 ||
	    get_word(o, "encoding", m->encoding, sizeof m->encoding, stores, e) < 0 ||
	    get_mean(o, m, e) < 0 || get_bool(o, "labelled", &m->labelled, e) < 0)
		goto fail;
	if (get_int(o, "classes", 0, 65536, &v, e) < 0)
		goto fail;
	m->classes = (int)v;
	const cJSON *names = cJSON_GetObjectItemCaseSensitive(o, "class_names");
	if (cJSON_IsArray(names)) {
		if (cJSON_GetArraySize(names) != m->classes) {
			mp_seterr(e, "meta: %d class_names for %d classes",
				  cJSON_GetArraySize(names), m->classes);
			goto fail;
		}
		m->class_names = calloc((size_t)m->classes + 1, sizeof(char *));
		if (!m->class_names)
			goto oom;
		int i = 0;
		const cJSON *s;
		cJSON_ArrayForEach(s, names)
		{
			if (!cJSON_IsString(s)) {
				mp_seterr(e, "meta: class_names[%d] is not a string", i);
				goto fail;
			}
			if (!(m->class_names[i++] = strdup(s->valuestring)))
				goto oom;
		}
	} else if (!cJSON_IsNull(names)) {
		mp_seterr(e, "meta: \"class_names\" is not null or an array");
		goto fail;
	}
	const cJSON *src = cJSON_GetObjectItemCaseSensitive(o, "source_list");
	if (!cJSON_IsString(src)) {
		mp_seterr(e, "meta: \"source_list\" is missing or not a string");
		goto fail;
	}
	if (!(m->source_list = strdup(src->valuestring)))
		goto oom;
	if (get_count(o, "skipped", MP_META_MAX_RECORDS, &m->skipped, e) < 0)
		goto fail;
	/* Version 1 documents were written without it at first. */
	const cJSON *seed = cJSON_GetObjectItemCaseSensitive(o, "shuffle_seed");
	if (!seed && m->format_version >= 2) {
		mp_seterr(e, "meta: \"shuffle_seed\" is missing (null when the list was not "
			  "shuffled)");
		goto fail;
	}
	if (seed && !cJSON_IsNull(seed)) {
		if (get_count(o, "shuffle_seed", MP_META_MAX_SEED, &m->shuffle_seed, e) < 0)
			goto fail;
		m->shuffled = 1;
	}
	if (m->height != m->size + 2 * m->padding || m->width != m->height) {
		mp_seterr(e, "meta: %dx%d images do not match size %d with padding %d", m->width,
			  m->height, m->size, m->padding);
		goto fail;
	}
	if (get_str(o, "created_by", m->created_by, sizeof m->created_by, e) < 0)
		goto fail;
	if (m->complete && check_counts("meta", m->records, m->macrobatches,
					m->macrobatch_size, e) < 0)
		goto fail;
	cJSON_Delete(o);
	return 0;
oom:
	mp_seterr(e, "out of memory reading the meta document");
fail:
	cJSON_Delete(o);
	mp_meta_free(m);
	return -1;
}

char *mp_meta_end_json(const mp_meta *m, mp_error *e)
{
	cJSON *o = cJSON_CreateObject();
	char *text = NULL;
	if (!o || !cJSON_AddNumberToObject(o, "records", (double)m->records) ||
	    !cJSON_AddNumberToObject(o, "macrobatches", (double)m->macrobatches) ||
	    add_mean(o, m) < 0 ||
	    !cJSON_AddNumberToObject(o, "skipped", (double)m->skipped) ||
	    !(text = cJSON_PrintUnformatted(o))) {
		cJSON_Delete(o);
		mp_seterr(e, "out of memory building the end frame");
		return NULL;
	}
	cJSON_Delete(o);
	return text;
}

int mp_meta_apply_end(mp_meta *m, const char *text, size_t len, mp_error *e)
{
	cJSON *o = parse_whole(text, len);
	if (!o || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		return mp_seterr(e, "end frame: not a JSON object");
	}
	if (check_duplicates(o, "end frame", e) < 0) {
		cJSON_Delete(o);
		return -1;
	}
	/* read into a copy: a bad end frame leaves m as it was */
	mp_meta n = *m;
	if (get_count(o, "records", MP_META_MAX_RECORDS, &n.records, e) < 0 ||
	    get_count(o, "macrobatches", MP_META_MAX_BATCHES, &n.macrobatches, e) < 0 || get_mean(o, &n, e) < 0 ||
	    get_count(o, "skipped", MP_META_MAX_RECORDS, &n.skipped, e) < 0 ||
	    check_counts("end frame", n.records, n.macrobatches, n.macrobatch_size, e) < 0)
		goto fail;
	m->records = n.records;
	m->macrobatches = n.macrobatches;
	m->has_mean = n.has_mean;
	memcpy(m->mean, n.mean, sizeof m->mean);
	m->skipped = n.skipped;
	m->complete = 1;
	cJSON_Delete(o);
	return 0;
fail:
	cJSON_Delete(o);
	return -1;
}
