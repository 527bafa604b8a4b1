#include "mp_inspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_list.h"

static void count_size(mp_stats *st, uint32_t w, uint32_t h)
{
	for (int i = 0; i < st->nsizes; i++)
		if (st->sizes[i].width == w && st->sizes[i].height == h) {
			st->sizes[i].count++;
			return;
		}
	if (st->nsizes < (int)(sizeof st->sizes / sizeof st->sizes[0])) {
		st->sizes[st->nsizes].width = w;
		st->sizes[st->nsizes].height = h;
		st->sizes[st->nsizes++].count = 1;
	} else {
		st->other_sizes++;
	}
}

int mp_label_max(const mp_meta *m)
{
	return (m->classes > 0 ? m->classes : MP_MAX_CLASSES) - 1;
}

int mp_label_allowed(const mp_meta *m, int label)
{
	if (!m->labelled)
		return label == -1;
	return label >= 0 && label <= mp_label_max(m);
}

int mp_record_fits(const mp_meta *m, const mp_record *r, char *why, size_t n)
{
	if (!mp_label_allowed(m, r->label)) {
		if (m->labelled)
			snprintf(why, n, "label %d is outside 0..%d", r->label, mp_label_max(m));
		else
			snprintf(why, n, "has a label in an unlabelled set");
		return -1;
	}
	if ((int)r->width != m->width || (int)r->height != m->height) {
		snprintf(why, n, "%ux%u, the dataset says %dx%d", r->width, r->height, m->width,
			 m->height);
		return -1;
	}
	return 0;
}

/* A labelled set whose meta says 0 classes has as many as its largest
 * label + 1 (at most MP_MAX_CLASSES, which mp_label_allowed checked). */
static int grow_classes(mp_stats *st, int label)
{
	int n = label + 1;
	uint64_t *p = realloc(st->per_class, (size_t)n * sizeof *p);
	if (!p)
		return -1;
	memset(p + st->classes, 0, (size_t)(n - st->classes) * sizeof *p);
	st->per_class = p;
	st->classes = n;
	return 0;
}

void mp_mb_order_see(mp_mb_order *o, const mp_macrobatch *mb)
{
	if (mb->first_record != o->records && !o->misplaced++) {
		o->first_misplaced = o->macrobatches;
		o->first_misplaced_start = mb->first_record;
		o->first_misplaced_after = o->records;
	}
	o->records += mb->count;
	o->macrobatches++;
}

int mp_stats_scan(mp_source *s, mp_stats *st, mp_error *e)
{
	memset(st, 0, sizeof *st);
	const mp_meta *m = mp_source_meta(s);
	st->classes = m->classes;
	if (m->classes > 0 && !(st->per_class = calloc((size_t)m->classes, sizeof(uint64_t))))
		return mp_seterr(e, "out of memory");
	st->payload_min = UINT64_MAX;
	const uint8_t *buf;
	size_t len;
	int rc;
	while ((rc = mp_source_next(s, &buf, &len, e)) == 1) {
		mp_macrobatch mb;
		mp_error pe;
		if (mp_mb_parse(buf, len, &mb, &pe) < 0)
			return mp_seterr(e, "%s: macrobatch %llu: %s", mp_source_name(s),
					 (unsigned long long)mp_source_index(s), pe.msg);
		mp_mb_order_see(&st->order, &mb);
		for (uint32_t i = 0; i < mb.count; i++) {
			const mp_record *r = &mb.records[i];
			if (!mp_label_allowed(m, r->label)) {
				if (!st->bad_labels++) {
					st->first_bad = mb.first_record + i;
					st->first_bad_label = r->label;
					st->first_bad_name = strndup(r->name, r->name_len);
					if (!st->first_bad_name) {
						mp_mb_free(&mb);
						return mp_seterr(e, "out of memory");
					}
				}
			} else if (r->label < 0) {
				st->unlabelled++;
			} else {
				if (r->label >= st->classes && grow_classes(st, r->label) < 0) {
					mp_mb_free(&mb);
					return mp_seterr(e, "out of memory");
				}
				st->per_class[r->label]++;
			}
			st->encodings[r->encoding]++;
			st->payload_total += r->payload_len;
			if (r->payload_len < st->payload_min)
				st->payload_min = r->payload_len;
			if (r->payload_len > st->payload_max)
				st->payload_max = r->payload_len;
			count_size(st, r->width, r->height);
		}
		st->records += mb.count;
		st->macrobatches++;
		mp_mb_free(&mb);
	}
	if (st->records == 0)
		st->payload_min = 0;
	return rc;
}

void mp_stats_free(mp_stats *st)
{
	free(st->per_class);
	free(st->first_bad_name);
	memset(st, 0, sizeof *st);
}

static void reportf(mp_verify_report report, void *ctx, long *failures,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void reportf(mp_verify_report report, void *ctx, long *failures,
		    const char *fmt, ...)
{
	char msg[1400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	report(ctx, msg);
	(*failures)++;
}

/* The first record after n unreadable or missing macrobatches: they
 * should have held full macrobatches, or the rest of the records if the
 * last one was among them, so the totals do not report them a second
 * time. */
static uint64_t skip_batches(const mp_meta *m, uint64_t first, uint64_t n)
{
	uint64_t held = n * m->macrobatch_size; /* below 2^40 x 2^20 */
	uint64_t left = m->records > first ? m->records - first : 0;
	if (m->complete && left < held)
		held = left;
	return held > UINT64_MAX - first ? UINT64_MAX : first + held;
}

long mp_verify(mp_source *s, uint64_t max_pixels, mp_verify_report report,
	       void *ctx, uint64_t *records_checked, mp_progress *progress)
{
	const mp_meta *m = mp_source_meta(s);
	const char *name = mp_source_name(s);
	long failures = 0;
	uint64_t expected_first = 0, checked = 0, batches = 0;
	uint64_t found = 0; /* records in the macrobatches read */
	int unread = 0;	    /* macrobatches missing or unreadable: their records unknown */
	long long short_batch = -1;
	uint32_t short_count = 0;
	mp_error e;
	mp_codec *codec = mp_codec_new(&e);
	if (!codec) {
		reportf(report, ctx, &failures, "%s: %s", name, e.msg);
		return -1;
	}
	const uint8_t *buf;
	size_t len;
	int rc;
	for (;;) {
		rc = mp_source_next(s, &buf, &len, &e);
		if (rc == 0)
			break;
		if (rc < 0) {
			reportf(report, ctx, &failures, "%s", e.msg);
			/* A stream cannot be resynchronised after a bad frame;
			 * a DB can go on with the next key. */
			if (mp_source_is_stream(s))
				break;
			expected_first = skip_batches(m, expected_first,
						      mp_source_next_index(s) - mp_source_index(s));
			unread = 1;
			continue;
		}
		batches++;
		uint64_t idx = mp_source_index(s);
		mp_macrobatch mb;
		if (mp_mb_parse(buf, len, &mb, &e) < 0) {
			reportf(report, ctx, &failures, "%s: macrobatch %llu: %s", name,
				(unsigned long long)idx, e.msg);
			expected_first = skip_batches(m, expected_first, 1);
			unread = 1;
			continue;
		}
		found += mb.count;
		if (mb.first_record != expected_first)
			reportf(report, ctx, &failures,
				"%s: macrobatch %llu starts at record %llu, expected %llu", name,
				(unsigned long long)idx, (unsigned long long)mb.first_record,
				(unsigned long long)expected_first);
		if (mb.count > m->macrobatch_size)
			reportf(report, ctx, &failures,
				"%s: macrobatch %llu holds %u records, more than %u", name,
				(unsigned long long)idx, mb.count, m->macrobatch_size);
		/* Only the last macrobatch may be short: readers find record n
		 * in macrobatch n / macrobatch_size. */
		if (short_batch >= 0)
			reportf(report, ctx, &failures,
				"%s: macrobatch %lld holds %u records, fewer than %u, but is not the last",
				name, short_batch, short_count, m->macrobatch_size);
		short_batch = mb.count < m->macrobatch_size ? (long long)idx : -1;
		short_count = mb.count;
		for (uint32_t i = 0; i < mb.count; i++) {
			const mp_record *r = &mb.records[i];
			uint64_t n = mb.first_record + i;
			int nl = (int)r->name_len;
			char why[128];
			if (mp_record_fits(m, r, why, sizeof why) < 0)
				reportf(report, ctx, &failures, "%s: record %llu (%.*s): %s", name,
					(unsigned long long)n, nl, r->name, why);
			mp_image img;
			if (mp_image_decode_payload(codec, r->encoding, r->payload, r->payload_len,
						    (int)r->width, (int)r->height, max_pixels,
						    &img, &e) < 0)
				reportf(report, ctx, &failures, "%s: record %llu (%.*s): %s", name,
					(unsigned long long)n, nl, r->name, e.msg);
			else
				mp_image_free(&img);
			checked++;
		}
		expected_first = mb.first_record + mb.count;
		mp_mb_free(&mb);
		if (progress)
			mp_progress_update(progress, checked, NULL);
	}
	if (rc == 0) {
		const mp_meta *fm = mp_source_meta(s);
		if (batches != fm->macrobatches)
			reportf(report, ctx, &failures, "%s: %llu macrobatches read, meta says %llu",
				name, (unsigned long long)batches,
				(unsigned long long)fm->macrobatches);
		/* records in macrobatches that could not be read are unknown:
		 * those reported explain fewer records, never more */
		if (unread ? found > fm->records : found != fm->records)
			reportf(report, ctx, &failures, "%s: %llu records found, meta says %llu",
				name, (unsigned long long)found, (unsigned long long)fm->records);
		uint64_t keys;
		if (!mp_source_is_stream(s) && mp_source_count_batches(s, &keys, &e) == 0 &&
		    keys != fm->macrobatches)
			reportf(report, ctx, &failures, "%s: %llu macrobatch keys, meta says %llu",
				name, (unsigned long long)keys,
				(unsigned long long)fm->macrobatches);
	}
	mp_codec_free(codec);
	*records_checked = checked;
	return failures;
}

int mp_find_record(mp_source *s, uint64_t n, mp_record *rec, uint8_t **hold,
		   uint64_t *mb_index, mp_error *e)
{
	const mp_meta *m = mp_source_meta(s);
	const uint8_t *buf;
	size_t len;
	int rc;
	*hold = NULL;
	if (!mp_source_is_stream(s)) {
		uint64_t idx = n / m->macrobatch_size;
		if (n >= m->records)
			return 0;
		rc = mp_source_get(s, idx, &buf, &len, e);
		if (rc <= 0)
			return rc < 0 ? -1 : mp_seterr(e, "%s: macrobatch %llu is missing",
						       mp_source_name(s), (unsigned long long)idx);
	}
	for (;;) {
		if (mp_source_is_stream(s)) {
			rc = mp_source_next(s, &buf, &len, e);
			if (rc <= 0)
				return rc;
		}
		mp_macrobatch mb;
		mp_error pe;
		uint64_t idx = mp_source_is_stream(s) ? mp_source_index(s)
						      : n / m->macrobatch_size;
		if (mp_mb_parse(buf, len, &mb, &pe) < 0)
			return mp_seterr(e, "%s: macrobatch %llu: %s", mp_source_name(s),
					 (unsigned long long)idx, pe.msg);
		if (n >= mb.first_record && n < mb.first_record + mb.count) {
			uint8_t *copy = malloc(len);
			if (!copy) {
				mp_mb_free(&mb);
				return mp_seterr(e, "out of memory");
			}
			memcpy(copy, buf, len);
			*rec = mb.records[n - mb.first_record];
			rec->name = (const char *)copy + (rec->name - (const char *)buf);
			rec->payload = copy + (rec->payload - buf);
			*hold = copy;
			*mb_index = idx;
			mp_mb_free(&mb);
			return 1;
		}
		mp_mb_free(&mb);
		if (!mp_source_is_stream(s))
			return mp_seterr(e, "%s: record %llu is not where the meta says",
					 mp_source_name(s), (unsigned long long)n);
	}
}
