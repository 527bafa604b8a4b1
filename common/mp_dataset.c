#include "mp_dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mp_db.h"
#include "mp_stream.h"

struct mp_source {
	char *name;
	mp_meta meta;
	char *meta_json;
	size_t meta_len;
	/* one of the two */
	mp_db_reader *db;
	FILE *f;
	int own_file;
	mp_stream_reader stream;
	uint64_t next_index, last_index;
	/* a DB's macrobatch keys, walked once: mp_source_next goes through
	 * these, so a meta that claims more costs one error per run of
	 * missing indices, not one per index */
	int indexed;
	uint64_t *have;
	size_t nhave, pos;
};

static int load_meta(mp_source *s, const char *json, size_t len, mp_error *e)
{
	s->meta_json = malloc(len + 1);
	if (!s->meta_json)
		return mp_seterr(e, "out of memory");
	memcpy(s->meta_json, json, len);
	s->meta_json[len] = '\0';
	s->meta_len = len;
	mp_error me;
	if (mp_meta_from_json(json, len, &s->meta, &me) < 0)
		return mp_seterr(e, "%s: %s", s->name, me.msg);
	return 0;
}

/* A stream's meta frame leaves what the writer cannot know yet to the
 * end frame: it is not complete, its counts are 0 and its mean null. */
static int check_head(const mp_source *s, mp_error *e)
{
	const mp_meta *m = &s->meta;
	static const char why[] = "in a stream's meta frame; the end frame gives it";
	if (m->complete)
		return mp_seterr(e, "%s: meta frame: \"complete\" is true; it is false in a "
				 "stream's meta frame", s->name);
	const struct {
		const char *field;
		uint64_t v;
	} counts[] = {{"records", m->records},
		      {"macrobatches", m->macrobatches},
		      {"skipped", m->skipped}};
	for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
		if (counts[i].v)
			return mp_seterr(e, "%s: meta frame: \"%s\" is %llu, not 0 %s", s->name,
					 counts[i].field, (unsigned long long)counts[i].v, why);
	if (m->has_mean)
		return mp_seterr(e, "%s: meta frame: \"mean\" is not null %s", s->name, why);
	return 0;
}

mp_source *mp_source_open(const char *path, mp_error *e)
{
	int opened;
	return mp_source_open_stage(path, &opened, e);
}

mp_source *mp_source_open_stage(const char *path, int *opened, mp_error *e)
{
	*opened = 0;
	mp_source *s = calloc(1, sizeof *s);
	if (!s || !(s->name = strdup(strcmp(path, "-") ? path : "<stdin>"))) {
		free(s);
		mp_seterr(e, "out of memory");
		return NULL;
	}
	struct stat st;
	char why[600];
	if (strcmp(path, "-") && stat(path, &st) < 0) {
		mp_seterr(e, "%s: %s", path, mp_open_error(path, errno, why, sizeof why));
		goto fail;
	}
	if (strcmp(path, "-") && S_ISDIR(st.st_mode)) {
		*opened = 1;
		if (!(s->db = mp_db_reader_open(path, e)))
			goto fail;
		const char *json;
		size_t len;
		if (mp_db_reader_meta(s->db, &json, &len, e) < 0 ||
		    load_meta(s, json, len, e) < 0)
			goto fail;
		if (!s->meta.complete) {
			mp_seterr(e, "%s: the DB's meta says it is incomplete", path);
			goto fail;
		}
		return s;
	}
	if (!strcmp(path, "-")) {
		s->f = stdin;
	} else {
		if (!(s->f = fopen(path, "rb"))) {
			mp_seterr(e, "%s: %s", path, mp_open_error(path, errno, why, sizeof why));
			goto fail;
		}
		s->own_file = 1;
	}
	*opened = 1;
	if (mp_stream_reader_open(&s->stream, s->f, s->name, e) < 0)
		goto fail;
	uint32_t kind;
	const uint8_t *p;
	size_t len;
	int rc = mp_stream_next(&s->stream, &kind, &p, &len, e);
	if (rc <= 0)
		goto fail;
	if (load_meta(s, (const char *)p, len, e) < 0 || check_head(s, e) < 0)
		goto fail;
	return s;
fail:
	mp_source_close(s);
	return NULL;
}

const mp_meta *mp_source_meta(const mp_source *s)
{
	return &s->meta;
}

int mp_source_is_stream(const mp_source *s)
{
	return s->db == NULL;
}

const char *mp_source_meta_json(const mp_source *s, size_t *len)
{
	if (len)
		*len = s->meta_len;
	return s->meta_json;
}

const char *mp_source_name(const mp_source *s)
{
	return s->name;
}

uint64_t mp_source_index(const mp_source *s)
{
	return s->last_index;
}

uint64_t mp_source_next_index(const mp_source *s)
{
	return s->next_index;
}

int mp_source_next(mp_source *s, const uint8_t **buf, size_t *len, mp_error *e)
{
	if (s->db) {
		uint64_t claimed = s->meta.macrobatches;
		if (s->next_index >= claimed)
			return 0;
		if (!s->indexed) {
			s->indexed = 1;
			if (mp_db_reader_batch_indices(s->db, claimed, &s->have, &s->nhave, e) < 0) {
				s->next_index = claimed; /* nothing more to read */
				return -1;
			}
		}
		/* Move on even after an error, so a caller that reports and
		 * goes on (mp_verify) reaches the next key. */
		s->last_index = s->next_index;
		uint64_t next = s->pos < s->nhave ? s->have[s->pos] : claimed;
		if (next > s->next_index) {
			s->next_index = next;
			if (next - s->last_index == 1)
				return mp_seterr(e, "%s: macrobatch %llu is missing", s->name,
						 (unsigned long long)s->last_index);
			return mp_seterr(e, "%s: macrobatches %llu to %llu are missing", s->name,
					 (unsigned long long)s->last_index,
					 (unsigned long long)(next - 1));
		}
		s->pos++;
		s->next_index++;
		int rc = mp_db_reader_get(s->db, s->last_index, buf, len, e);
		if (rc == 0)
			return mp_seterr(e, "%s: macrobatch %llu is missing", s->name,
					 (unsigned long long)s->last_index);
		if (rc < 0)
			return -1;
		return 1;
	}
	uint32_t kind;
	const uint8_t *p;
	size_t n;
	int rc = mp_stream_next(&s->stream, &kind, &p, &n, e);
	if (rc <= 0)
		return rc;
	if (kind == MP_FRAME_END) {
		mp_error me;
		if (mp_meta_apply_end(&s->meta, (const char *)p, n, &me) < 0)
			return mp_seterr(e, "%s: %s", s->name, me.msg);
		if (s->meta.macrobatches != s->next_index)
			return mp_seterr(e, "%s: end frame counts %llu macrobatches, stream held %llu",
					 s->name, (unsigned long long)s->meta.macrobatches,
					 (unsigned long long)s->next_index);
		return 0;
	}
	*buf = p;
	*len = n;
	s->last_index = s->next_index++;
	return 1;
}

int mp_source_get(mp_source *s, uint64_t index, const uint8_t **buf, size_t *len,
		  mp_error *e)
{
	if (!s->db)
		return mp_seterr(e, "%s: a stream has no random access", s->name);
	return mp_db_reader_get(s->db, index, buf, len, e);
}

int mp_source_count_batches(mp_source *s, uint64_t *count, mp_error *e)
{
	if (!s->db)
		return mp_seterr(e, "%s: a stream has no random access", s->name);
	return mp_db_reader_count_batches(s->db, count, e);
}

void mp_source_close(mp_source *s)
{
	if (!s)
		return;
	if (s->db)
		mp_db_reader_close(s->db);
	mp_stream_reader_close(&s->stream);
	if (s->own_file && s->f)
		fclose(s->f);
	mp_meta_free(&s->meta);
	free(s->have);
	free(s->meta_json);
	free(s->name);
	free(s);
}
