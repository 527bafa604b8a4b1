#include "mp_loader.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_dataset.h"
#include "mp_image.h"
#include "mp_macrobatch.h"

/* A record as stored: its bytes stay in the DB's read-only map. */
typedef struct {
	const uint8_t *payload;
	uint32_t len, width, height;
	uint8_t encoding;
	int32_t label;
	const char *name;
	uint32_t name_len;
} rec_ref;

enum { SLOT_FREE, SLOT_BUSY, SLOT_DONE, SLOT_FAILED };

typedef struct {
	int state, n;
	float *images;
	int32_t *plan;	/* instead of images, once the records are kept decoded */
	int32_t *labels;
	uint64_t *ids;
	mp_error err;
} slot;

struct mp_loader {
	mp_loader_opts o;
	mp_source *src;
	rec_ref *recs;
	uint64_t nrec, nbatches, epoch;
	uint32_t fingerprint;
	uint64_t *order;
	int size;
	size_t image_floats;
	slot *slots;
	pthread_t *threads;
	int nthreads;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	int active, quit, busy;
	uint64_t next_claim, next_take;
	/* mp_loader_keep_decoded: each record's first byte in the store the
	 * caller keeps, and the taps of the batches' plans */
	uint64_t *kept;
	int taps;
};

static const uint64_t MAX_PIXELS = 1ull << 26;

/* Batch k's plan into s, for records kept decoded: the draws of fill's
 * mp_augment_train, from the same generators. */
static int fill_plan(mp_loader *l, uint64_t k, uint64_t n, slot *s)
{
	const uint64_t first = k * (uint64_t)l->o.batch;
	const int crop = l->o.aug.crop;
	float *scratch = malloc(sizeof(float) * (size_t)crop * (size_t)l->taps);
	if (!scratch)
		return mp_seterr(&s->err, "out of memory");
	mp_augment_plan_head(s->plan, l->o.aug.mean);
	for (uint64_t i = 0; i < n; i++) {
		const uint64_t id = l->order[first + i];
		const rec_ref *r = &l->recs[id];
		mp_rng rng;
		mp_error e;
		mp_augment_rng(&rng, l->o.seed, l->epoch, id);
		int32_t *rec = s->plan + MP_AUGMENT_PLAN_HEAD + i * MP_AUGMENT_PLAN_IMAGE(crop, l->taps);
		if (mp_augment_train_plan((int)r->width, (int)r->height, l->kept[id], &l->o.aug, &rng,
					  l->taps, rec, scratch, NULL, &e) < 0) {
			free(scratch);
			return mp_seterr(&s->err, "%s: record %llu (%.*s): %s", mp_source_name(l->src),
					 (unsigned long long)id, (int)r->name_len, r->name, e.msg);
		}
		s->labels[i] = r->label;
		s->ids[i] = id;
	}
	free(scratch);
	s->n = (int)n;
	return 0;
}

/* Decodes and transforms batch k of the current order into s; the caller
 * publishes the result under the lock. */
static int fill(mp_loader *l, mp_codec *codec, uint64_t k, slot *s)
{
	uint64_t first = k * (uint64_t)l->o.batch;
	uint64_t n = l->nrec - first < (uint64_t)l->o.batch ? l->nrec - first : (uint64_t)l->o.batch;
	if (l->kept)
		return fill_plan(l, k, n, s);
	mp_error e;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t id = l->order[first + i];
		const rec_ref *r = &l->recs[id];
		mp_image img;
		float *out = s->images + i * l->image_floats;
		if (mp_image_decode_payload(codec, r->encoding, r->payload, r->len, (int)r->width,
					    (int)r->height, MAX_PIXELS, &img, &e) < 0)
			goto fail;
		int rc;
		if (l->o.train) {
			mp_rng rng;
			mp_augment_rng(&rng, l->o.seed, l->epoch, id);
			rc = mp_augment_train(&img, &l->o.aug, &rng, out, NULL, &e);
		} else {
			rc = mp_augment_eval(&img, l->size, l->o.mean, out, &e);
		}
		mp_image_free(&img);
		if (rc < 0)
			goto fail;
		s->labels[i] = r->label;
		s->ids[i] = id;
		continue;
fail:
		return mp_seterr(&s->err, "%s: record %llu (%.*s): %s", mp_source_name(l->src),
				 (unsigned long long)id, (int)r->name_len, r->name, e.msg);
	}
	s->n = (int)n;
	return 0;
}

static void *worker(void *arg)
{
	mp_loader *l = arg;
	mp_error e;
	mp_codec *codec = mp_codec_new(&e);
	for (;;) {
		pthread_mutex_lock(&l->mu);
		while (!l->quit && !(l->active && l->next_claim < l->nbatches &&
				     l->next_claim < l->next_take + (uint64_t)l->o.prefetch))
			pthread_cond_wait(&l->work, &l->mu);
		if (l->quit) {
			pthread_mutex_unlock(&l->mu);
			break;
		}
		uint64_t k = l->next_claim++;
		slot *s = &l->slots[k % (uint64_t)l->o.prefetch];
		s->state = SLOT_BUSY;
		l->busy++;
		pthread_mutex_unlock(&l->mu);

		int rc;
		if (codec) {
			rc = fill(l, codec, k, s);
		} else {
			s->err = e;
			rc = -1;
		}

		pthread_mutex_lock(&l->mu);
		s->state = rc == 0 ? SLOT_DONE : SLOT_FAILED;
		l->busy--;
		pthread_cond_broadcast(&l->done);
		pthread_mutex_unlock(&l->mu);
	}
	mp_codec_free(codec);
	return NULL;
}

static int load_records(mp_loader *l, mp_error *e)
{
	const mp_meta *m = mp_source_meta(l->src);
	/* The table is as long as the meta says: first see that the DB holds
	 * that many macrobatches, so a damaged count cannot make it huge. */
	uint64_t keys;
	if (mp_source_count_batches(l->src, &keys, e) < 0)
		return -1;
	if (m->macrobatches > keys)
		return mp_seterr(e, "%s: the meta says %llu macrobatches, the DB holds %llu",
				 mp_source_name(l->src), (unsigned long long)m->macrobatches,
				 (unsigned long long)keys);
	if (!(l->recs = calloc(m->records ? m->records : 1, sizeof *l->recs)))
		return mp_seterr(e, "out of memory");
	for (uint64_t b = 0; b < m->macrobatches; b++) {
		const uint8_t *buf;
		size_t len;
		int rc = mp_source_get(l->src, b, &buf, &len, e);
		if (rc == 0)
			return mp_seterr(e, "%s: macrobatch %llu is missing", mp_source_name(l->src),
					 (unsigned long long)b);
		if (rc < 0)
			return -1;
		mp_macrobatch mb;
		mp_error pe;
		if (mp_mb_parse(buf, len, &mb, &pe) < 0)
			return mp_seterr(e, "%s: macrobatch %llu: %s", mp_source_name(l->src),
					 (unsigned long long)b, pe.msg);
		if (mb.first_record != l->nrec || l->nrec + mb.count > m->records) {
			mp_mb_free(&mb);
			return mp_seterr(e, "%s: macrobatch %llu does not follow its predecessor",
					 mp_source_name(l->src), (unsigned long long)b);
		}
		for (uint32_t i = 0; i < mb.count; i++) {
			const mp_record *r = &mb.records[i];
			rec_ref *d = &l->recs[l->nrec++];
			d->payload = r->payload;
			d->len = r->payload_len;
			d->width = r->width;
			d->height = r->height;
			d->encoding = r->encoding;
			d->label = r->label;
			d->name = r->name;
			d->name_len = r->name_len;
			uint8_t head[17];
			mp_put_u32(head, (uint32_t)r->label);
			mp_put_u32(head + 4, r->width);
			mp_put_u32(head + 8, r->height);
			mp_put_u32(head + 12, r->payload_len);
			head[16] = r->encoding;
			l->fingerprint = mp_crc32(l->fingerprint, head, sizeof head);
			l->fingerprint = mp_crc32(l->fingerprint, r->payload, r->payload_len);
			if ((l->o.train || (m->labelled && m->classes > 0)) &&
			    (r->label < 0 || r->label >= m->classes)) {
				int label = r->label; /* r lives in mb */
				mp_mb_free(&mb);
				return mp_seterr(e, "%s: record %llu has label %d, outside 0..%d",
						 mp_source_name(l->src), (unsigned long long)(l->nrec - 1),
						 label, m->classes - 1);
			}
		}
		mp_mb_free(&mb);
	}
	if (l->nrec != m->records)
		return mp_seterr(e, "%s: %llu records found, the meta says %llu",
				 mp_source_name(l->src), (unsigned long long)l->nrec,
				 (unsigned long long)m->records);
	return 0;
}

mp_loader *mp_loader_open(const mp_loader_opts *o, int *bad_data, mp_error *e)
{
	int ignored;
	if (!bad_data)
		bad_data = &ignored;
	*bad_data = 0;
	if (o->batch < 1 || o->threads < 1 || o->threads > 256 || o->prefetch < 1) {
		mp_seterr(e, "loader: batch, threads and prefetch must be positive");
		return NULL;
	}
	mp_loader *l = calloc(1, sizeof *l);
	if (!l) {
		mp_seterr(e, "out of memory");
		*bad_data = 1;
		return NULL;
	}
	l->o = *o;
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->work, NULL);
	pthread_cond_init(&l->done, NULL);
	/* Standard input, a FIFO or a terminal can only hold a stream, which
	 * the loader refuses anyway: say so before reading, which could wait
	 * for input for ever (a terminal, a FIFO with no writer). */
	struct stat pst;
	if (!strcmp(o->path, "-") ||
	    (stat(o->path, &pst) == 0 && !S_ISDIR(pst.st_mode) && !S_ISREG(pst.st_mode))) {
		mp_seterr(e, "%s: the loader needs a dataset DB, not a stream",
			  strcmp(o->path, "-") ? o->path : "<stdin>");
		goto fail;
	}
	if (!(l->src = mp_source_open(o->path, e))) {
		/* a DB that is there but cannot be opened is damaged */
		char file[4096];
		struct stat st;
		*bad_data = snprintf(file, sizeof file, "%s/data.mdb", o->path) < (int)sizeof file &&
			    stat(file, &st) == 0 && S_ISREG(st.st_mode);
		goto fail;
	}
	if (mp_source_is_stream(l->src)) {
		mp_seterr(e, "%s: the loader needs a dataset DB, not a stream", o->path);
		goto fail;
	}
	const mp_meta *m = mp_source_meta(l->src);
	if (o->train && !m->labelled) {
		mp_seterr(e, "%s: training needs labels, and this dataset has none", o->path);
		goto fail;
	}
	l->size = o->train ? o->aug.crop : o->eval_size;
	if (l->size < 1) {
		mp_seterr(e, "loader: the image size must be positive");
		goto fail;
	}
	if (load_records(l, e) < 0) {
		*bad_data = 1;
		goto fail;
	}
	l->nbatches = o->drop_last ? l->nrec / (uint64_t)o->batch
				   : (l->nrec + (uint64_t)o->batch - 1) / (uint64_t)o->batch;
	if (l->nbatches == 0) {
		if (l->nrec == 0)
			mp_seterr(e, "%s: the dataset holds no records", o->path);
		else
			mp_seterr(e, "%s: %llu record%s make%s no batch of %d", o->path,
				  (unsigned long long)l->nrec, l->nrec == 1 ? "" : "s",
				  l->nrec == 1 ? "s" : "", o->batch);
		goto fail;
	}
	l->image_floats = (size_t)3 * l->size * l->size;
	l->order = malloc(sizeof *l->order * l->nrec);
	l->slots = calloc((size_t)o->prefetch, sizeof *l->slots);
	if (!l->order || !l->slots)
		goto oom;
	for (int i = 0; i < o->prefetch; i++) {
		slot *s = &l->slots[i];
		s->images = malloc(sizeof(float) * l->image_floats * (size_t)o->batch);
		s->labels = malloc(sizeof(int32_t) * (size_t)o->batch);
		s->ids = malloc(sizeof(uint64_t) * (size_t)o->batch);
		if (!s->images || !s->labels || !s->ids)
			goto oom;
	}
	if (!(l->threads = calloc((size_t)o->threads, sizeof *l->threads)))
		goto oom;
	for (; l->nthreads < o->threads; l->nthreads++) {
		int err = pthread_create(&l->threads[l->nthreads], NULL, worker, l);
		if (err) {
			mp_seterr(e, "cannot start loader thread %d of %d: %s", l->nthreads + 1,
				  o->threads, strerror(err));
			*bad_data = 1;
			goto fail;
		}
	}
	return l;
oom:
	mp_seterr(e, "out of memory");
	*bad_data = 1;
fail:
	mp_loader_close(l);
	return NULL;
}

void mp_loader_close(mp_loader *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->quit = 1;
	pthread_cond_broadcast(&l->work);
	pthread_mutex_unlock(&l->mu);
	for (int i = 0; i < l->nthreads; i++)
		pthread_join(l->threads[i], NULL);
	for (int i = 0; l->slots && i < l->o.prefetch; i++) {
		free(l->slots[i].images);
		free(l->slots[i].plan);
		free(l->slots[i].labels);
		free(l->slots[i].ids);
	}
	free(l->slots);
	free(l->threads);
	free(l->order);
	free(l->kept);
	free(l->recs);
	mp_source_close(l->src);
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->work);
	pthread_cond_destroy(&l->done);
	free(l);
}

uint64_t mp_loader_records(const mp_loader *l)
{
	return l->nrec;
}

uint64_t mp_loader_batches(const mp_loader *l)
{
	return l->nbatches;
}

int mp_loader_size(const mp_loader *l)
{
	return l->size;
}

uint32_t mp_loader_fingerprint(const mp_loader *l)
{
	return l->fingerprint;
}

static int same_record(const rec_ref *x, const rec_ref *y)
{
	return x->len == y->len && x->encoding == y->encoding && x->width == y->width &&
	       x->height == y->height && !memcmp(x->payload, y->payload, x->len);
}

/* A hash of what tells records apart, reading a few bytes of each: the
 * size, the encoding and 32 bytes from the middle and the end of the
 * payload, which lie in the compressed data where any two images differ
 * (their beginnings, a JPEG's or PNG's headers, are often the same).
 * Equal records hash alike; same_record tells the rest apart. */
static uint64_t record_key(const rec_ref *r)
{
	uint64_t h = ((uint64_t)r->len << 32 | r->width << 16 | r->height) ^
		     (uint64_t)r->encoding << 60;
	const uint32_t span = r->len < 32 ? r->len : 32;
	const uint8_t *parts[2] = {r->payload + (r->len - span) / 2, r->payload + r->len - span};
	for (int p = 0; p < 2; p++) {
		uint64_t w[4] = {0, 0, 0, 0};
		memcpy(w, parts[p], span);
		for (int i = 0; i < 4; i++) {
			h = (h ^ w[i]) * 0x9e3779b97f4a7c15ull;
			h ^= h >> 29;
		}
	}
	return h;
}

int64_t mp_loader_shared(const mp_loader *a, const mp_loader *b, mp_loader_same *shown,
			 int max_shown)
{
	/* b's records by key, open addressing over indices + 1, at most half
	 * full; then one pass over a's */
	size_t slots = 2;
	while (slots < 2 * b->nrec)
		slots *= 2;
	uint64_t *table = calloc(slots, sizeof *table);
	uint64_t *match = malloc((b->nrec ? b->nrec : 1) * sizeof *match); /* a's index + 1 */
	if (!table || !match) {
		free(table);
		free(match);
		return -1;
	}
	for (uint64_t j = 0; j < b->nrec; j++) {
		size_t h = (size_t)record_key(&b->recs[j]) & (slots - 1);
		while (table[h])
			h = (h + 1) & (slots - 1);
		table[h] = j + 1;
		match[j] = 0;
	}
	for (uint64_t i = 0; i < a->nrec; i++) {
		const rec_ref *x = &a->recs[i];
		for (size_t h = (size_t)record_key(x) & (slots - 1); table[h];
		     h = (h + 1) & (slots - 1)) {
			const uint64_t j = table[h] - 1;
			if (!match[j] && same_record(x, &b->recs[j]))
				match[j] = i + 1;
		}
	}
	int64_t count = 0;
	for (uint64_t j = 0; j < b->nrec; j++) {
		if (!match[j])
			continue;
		if (count < max_shown)
			shown[count] = (mp_loader_same){.a = match[j] - 1, .b = j};
		count++;
	}
	free(table);
	free(match);
	return count;
}

const char *mp_loader_record_name(const mp_loader *l, uint64_t i, int *len)
{
	*len = (int)l->recs[i].name_len;
	return l->recs[i].name;
}

const mp_meta *mp_loader_meta(const mp_loader *l)
{
	return mp_source_meta(l->src);
}

/* Lets the batches being decoded finish and stops the epoch: what the
 * workers read (the order, the options) may then change. Called with
 * l->mu held. */
static void quiesce(mp_loader *l)
{
	l->active = 0;
	while (l->busy)
		pthread_cond_wait(&l->done, &l->mu);
}

void mp_loader_set_mean(mp_loader *l, const double mean[3])
{
	pthread_mutex_lock(&l->mu);
	quiesce(l);
	memcpy(l->o.aug.mean, mean, sizeof l->o.aug.mean);
	memcpy(l->o.mean, mean, sizeof l->o.mean);
	pthread_mutex_unlock(&l->mu);
}

int mp_loader_start(mp_loader *l, uint64_t epoch, mp_error *e)
{
	return mp_loader_start_at(l, epoch, 0, e);
}

int mp_loader_start_at(mp_loader *l, uint64_t epoch, uint64_t first_batch, mp_error *e)
{
	if (first_batch > l->nbatches)
		return mp_seterr(e, "loader: batch %llu of an epoch of %llu",
				 (unsigned long long)first_batch,
				 (unsigned long long)l->nbatches);
	pthread_mutex_lock(&l->mu);
	/* Let batches of the previous epoch finish before the order changes. */
	quiesce(l);
	for (int i = 0; i < l->o.prefetch; i++)
		l->slots[i].state = SLOT_FREE;
	for (uint64_t i = 0; i < l->nrec; i++)
		l->order[i] = i;
	if (l->o.train) {
		mp_rng r;
		mp_augment_rng(&r, l->o.seed, epoch, UINT64_MAX);
		for (uint64_t i = l->nrec; i > 1; i--) {
			uint64_t j = mp_rng_below(&r, i);
			uint64_t t = l->order[i - 1];
			l->order[i - 1] = l->order[j];
			l->order[j] = t;
		}
	}
	l->epoch = epoch;
	l->next_claim = l->next_take = first_batch;
	l->active = 1;
	pthread_cond_broadcast(&l->work);
	pthread_mutex_unlock(&l->mu);
	return 0;
}

/* The next batch's images (or plan, where plan is not NULL) and labels. */
static int take(mp_loader *l, float *images, int32_t *plan, int32_t *labels, uint64_t *records,
		int *n, mp_error *e);

int mp_loader_next(mp_loader *l, float *images, int32_t *labels, uint64_t *records,
		   int *n, mp_error *e)
{
	if (l->kept)
		return mp_seterr(e, "loader: the records are kept decoded: their batches are plans");
	return take(l, images, NULL, labels, records, n, e);
}

int mp_loader_next_plan(mp_loader *l, int32_t *plan, int32_t *labels, uint64_t *records, int *n,
			mp_error *e)
{
	if (!l->kept)
		return mp_seterr(e, "loader: a plan needs the records kept decoded");
	return take(l, NULL, plan, labels, records, n, e);
}

static int take(mp_loader *l, float *images, int32_t *plan, int32_t *labels, uint64_t *records,
		int *n, mp_error *e)
{
	pthread_mutex_lock(&l->mu);
	if (!l->active) {
		pthread_mutex_unlock(&l->mu);
		return mp_seterr(e, "loader: no epoch started");
	}
	if (l->next_take >= l->nbatches) {
		pthread_mutex_unlock(&l->mu);
		return 0;
	}
	slot *s = &l->slots[l->next_take % (uint64_t)l->o.prefetch];
	while (s->state != SLOT_DONE && s->state != SLOT_FAILED)
		pthread_cond_wait(&l->done, &l->mu);
	int rc = 1;
	if (s->state == SLOT_FAILED) {
		*e = s->err;
		rc = -1;
	} else {
		if (plan)
			memcpy(plan, s->plan,
			       sizeof(int32_t) * mp_augment_plan_words(s->n, l->size, l->taps));
		else
			memcpy(images, s->images, sizeof(float) * l->image_floats * (size_t)s->n);
		memcpy(labels, s->labels, sizeof(int32_t) * (size_t)s->n);
		if (records)
			memcpy(records, s->ids, sizeof(uint64_t) * (size_t)s->n);
		*n = s->n;
	}
	s->state = SLOT_FREE;
	l->next_take++;
	pthread_cond_broadcast(&l->work);
	pthread_mutex_unlock(&l->mu);
	return rc;
}

/* ---- the records kept decoded ------------------------------------------------------ */

uint64_t mp_loader_decoded_bytes(const mp_loader *l)
{
	uint64_t bytes = 0;
	for (uint64_t i = 0; i < l->nrec; i++)
		bytes += (uint64_t)l->recs[i].width * l->recs[i].height * 3;
	return bytes;
}

int mp_loader_plan_taps(const mp_loader *l, mp_error *e)
{
	if (!l->o.train)
		return mp_seterr(e, "%s: only a training loader makes plans", mp_source_name(l->src));
	int taps = 1;
	for (uint64_t i = 0; i < l->nrec; i++) {
		const rec_ref *r = &l->recs[i];
		const int t = mp_augment_plan_taps((int)r->width, (int)r->height, &l->o.aug);
		if (t < 0)
			return mp_seterr(e, "%s: record %llu (%.*s) is %ux%u, which a scale of %d "
					 "shrinks more than 60 times: the loader's threads can "
					 "augment it, the backend cannot",
					 mp_source_name(l->src), (unsigned long long)i,
					 (int)r->name_len, r->name, r->width, r->height,
					 l->o.aug.scale_min);
		if (t > taps)
			taps = t;
	}
	return taps;
}

/* The decoded images handed to put() at once, at most (one image may be
 * larger): large copies, and little memory held. */
#define KEEP_CHUNK ((uint64_t)64 << 20)

/* Records [next, end) decoded into their places in a chunk by a few threads.
 * Plain threads, a mutex and an atomic counter rather than OpenMP: the
 * thread sanitizer sees this synchronisation, and libgomp's it does not. */
typedef struct {
	const mp_loader *l;
	const uint64_t *kept;
	uint8_t *chunk;
	uint64_t offset, next, end;
	pthread_mutex_t mu;
	uint64_t failed; /* the first record that did not decode */
	mp_error why;
} keep_job;

typedef struct {
	keep_job *job;
	mp_codec *codec;
} keep_worker_arg;

static void *keep_worker(void *p)
{
	keep_worker_arg *a = p;
	keep_job *j = a->job;
	enum { GRAIN = 16 };
	for (;;) {
		const uint64_t first = __atomic_fetch_add(&j->next, GRAIN, __ATOMIC_RELAXED);
		if (first >= j->end)
			return NULL;
		const uint64_t last = first + GRAIN < j->end ? first + GRAIN : j->end;
		for (uint64_t i = first; i < last; i++) {
			const rec_ref *r = &j->l->recs[i];
			mp_image img;
			mp_error ie;
			if (mp_image_decode_payload(a->codec, r->encoding, r->payload, r->len,
						    (int)r->width, (int)r->height, MAX_PIXELS,
						    &img, &ie) < 0) {
				pthread_mutex_lock(&j->mu);
				if (i < j->failed) {
					j->failed = i;
					j->why = ie;
				}
				pthread_mutex_unlock(&j->mu);
				continue;
			}
			memcpy(j->chunk + (j->kept[i] - j->offset), img.px,
			       (size_t)r->width * r->height * 3);
			mp_image_free(&img);
		}
	}
}

/* Decodes records a..b-1 with nt threads (the calling one among them);
 * 0, or -1 with the first record that failed named. */
static int keep_decode_range(const mp_loader *l, mp_codec **codecs, int nt, const uint64_t *kept,
			     uint8_t *chunk, uint64_t offset, uint64_t a, uint64_t b, mp_error *e)
{
	keep_job job = {.l = l, .kept = kept, .chunk = chunk, .offset = offset,
			.next = a, .end = b, .failed = UINT64_MAX};
	pthread_mutex_init(&job.mu, NULL);
	keep_worker_arg args[nt];
	pthread_t th[nt];
	int started = 0;
	for (int t = 0; t < nt; t++)
		args[t] = (keep_worker_arg){&job, codecs[t]};
	/* a thread that does not start leaves its share to the others */
	for (int t = 1; t < nt; t++) {
		if (pthread_create(&th[started + 1], NULL, keep_worker, &args[t]) != 0)
			break;
		started++;
	}
	keep_worker(&args[0]);
	for (int t = 1; t <= started; t++)
		pthread_join(th[t], NULL);
	pthread_mutex_destroy(&job.mu);
	if (job.failed == UINT64_MAX)
		return 0;
	const rec_ref *r = &l->recs[job.failed];
	return mp_seterr(e, "%s: record %llu (%.*s): %s", mp_source_name(l->src),
			 (unsigned long long)job.failed, (int)r->name_len, r->name, job.why.msg);
}

int mp_loader_keep_decoded(mp_loader *l, mp_loader_put put, void *ctx, mp_error *e)
{
	if (l->kept)
		return mp_seterr(e, "%s: the records are kept decoded already", mp_source_name(l->src));
	const int taps = mp_loader_plan_taps(l, e);
	if (taps < 0)
		return -1;
	const int nt = l->o.threads;
	uint64_t *kept = malloc(sizeof *kept * (l->nrec ? l->nrec : 1));
	mp_codec **codecs = calloc((size_t)nt, sizeof *codecs);
	uint64_t largest = 0;
	for (uint64_t i = 0; i < l->nrec; i++) {
		const uint64_t b = (uint64_t)l->recs[i].width * l->recs[i].height * 3;
		largest = b > largest ? b : largest;
	}
	const uint64_t chunk_cap = largest > KEEP_CHUNK ? largest : KEEP_CHUNK;
	uint8_t *chunk = malloc(chunk_cap);
	if (!kept || !codecs || !chunk) {
		free(kept);
		free(codecs);
		free(chunk);
		return mp_seterr(e, "out of memory");
	}
	int rc = 0;
	for (int t = 0; t < nt && rc == 0; t++)
		if (!(codecs[t] = mp_codec_new(e)))
			rc = -1;
	uint64_t offset = 0;
	for (uint64_t a = 0; a < l->nrec && rc == 0;) {
		/* records a..b-1 fill this chunk; each one's place in it is known
		 * from its header, so they decode in any order */
		uint64_t b = a, used = 0;
		while (b < l->nrec) {
			const uint64_t bytes = (uint64_t)l->recs[b].width * l->recs[b].height * 3;
			if (used + bytes > chunk_cap)
				break;
			kept[b++] = offset + used;
			used += bytes;
		}
		if (keep_decode_range(l, codecs, nt, kept, chunk, offset, a, b, e) < 0) {
			rc = -1;
			break;
		}
		if (put(ctx, offset, chunk, (size_t)used, e) < 0)
			rc = -1;
		offset += used;
		a = b;
	}
	for (int t = 0; t < nt; t++)
		mp_codec_free(codecs[t]);
	free(codecs);
	free(chunk);
	if (rc < 0) {
		free(kept);
		return -1;
	}
	/* the slots hold plans from now on */
	pthread_mutex_lock(&l->mu);
	quiesce(l);
	const size_t words = mp_augment_plan_words(l->o.batch, l->size, taps);
	for (int i = 0; i < l->o.prefetch && rc == 0; i++) {
		slot *s = &l->slots[i];
		s->state = SLOT_FREE;
		free(s->images);
		s->images = NULL;
		if (!(s->plan = malloc(sizeof(int32_t) * words)))
			rc = mp_seterr(e, "out of memory");
	}
	if (rc == 0) {
		l->kept = kept;
		l->taps = taps;
	} else {
		free(kept);
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int mp_loader_taps(const mp_loader *l)
{
	return l->kept ? l->taps : 0;
}
