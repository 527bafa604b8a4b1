#include "mp_pack.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mp_inspect.h"
#include "mp_macrobatch.h"
#include "mp_stream.h"

#define MAX_FILE_BYTES (1ull << 30)

const char *mp_store_name(int store)
{
	switch (store) {
	case MP_STORE_KEEP: return "keep";
	case MP_STORE_JPEG: return "jpeg";
	case MP_STORE_PNG: return "png";
	case MP_STORE_RAW: return "raw";
	default: return "unknown";
	}
}

/* What a worker made of one list entry. */
typedef struct {
	int done;
	int ok;
	int fatal; /* not the image's fault: never skipped */
	char *error;
	uint8_t *payload;
	size_t payload_len;
	int encoding, width, height;
	uint64_t sum[3];
} slot;

typedef struct {
	const mp_pack_options *o;
	const mp_list *list;
	slot *slots;
	size_t window;
	size_t next_claim, consumed;
	/* Wake-ups only for whoever waits: a futex call per image is
	 * measurable next to a 100 us decode. */
	size_t writer_wants; /* the writer sleeps until this index is done */
	int workers_waiting;
	int quit;
	pthread_mutex_t mu;
	pthread_cond_t space, ready;
} pool;

static char *errdup(const char *msg)
{
	char *s = strdup(msg);
	return s ? s : (char *)NULL;
}

/* Turns one list entry into a stored payload. */
static void process(const mp_pack_options *o, mp_codec *codec,
		    const mp_list_entry *it, slot *out)
{
	mp_error e;
	char path[PATH_MAX];
	uint8_t *file = NULL;
	size_t flen = 0;
	mp_image img = {0}, fitted = {0};
	int changed = 0;

	errno = 0;
	const char *root = mp_list_root(o->root, it->path);
	if (snprintf(path, sizeof path, "%s%s%s", root, *root ? "/" : "", it->path) >=
	    (int)sizeof path) {
		mp_seterr(&e, "path too long");
		goto fail;
	}
	if (mp_read_file(path, MAX_FILE_BYTES, &file, &flen, &e) < 0) {
		int err = errno;
		const char *hint = mp_list_missing_hint(o->root, it->path, path);
		if (*hint) {
			char why[sizeof e.msg];
			snprintf(why, sizeof why, "%s", e.msg);
			mp_seterr(&e, "%s%s", why, hint);
		}
		errno = err;
		goto fail;
	}
	int kind = mp_image_sniff(file, flen);
	if (mp_image_decode(codec, file, flen, o->max_pixels, &img, &e) < 0)
		goto fail;
	/* Images already at the size pass untouched, without a copy. */
	if (img.width == o->size && img.height == o->size && o->pad == 0) {
		fitted = img;
		img.px = NULL;
	} else {
		if (mp_image_fit(&img, o->size, o->fit, o->pad, o->fill, &fitted, &changed, &e) < 0)
			goto fail;
		mp_image_free(&img);
	}

	int store = o->store;
	if (store == MP_STORE_KEEP && !changed) {
		out->payload = file; /* the original bytes, untouched */
		out->payload_len = flen;
		out->encoding = kind;
		file = NULL;
	} else {
		if (store == MP_STORE_KEEP)
			store = kind == MP_ENC_PNG ? MP_STORE_PNG : MP_STORE_JPEG;
		if (store == MP_STORE_JPEG) {
			if (mp_image_encode_jpeg(codec, &fitted, o->quality, &out->payload,
						 &out->payload_len, &e) < 0)
				goto fail;
			out->encoding = MP_ENC_JPEG;
		} else if (store == MP_STORE_PNG) {
			if (mp_image_encode_png(&fitted, o->png_level, &out->payload,
						&out->payload_len, &e) < 0)
				goto fail;
			out->encoding = MP_ENC_PNG;
		} else {
			out->payload_len = (size_t)fitted.width * fitted.height * 3;
			out->payload = fitted.px;
			fitted.px = NULL;
			out->encoding = MP_ENC_RAW;
		}
	}
	free(file);
	/* The mean is over the pixels as fitted (before lossy encoding). */
	const uint8_t *px = out->encoding == MP_ENC_RAW ? out->payload : fitted.px;
	size_t n = (size_t)o->size + 2 * (size_t)o->pad;
	out->sum[0] = out->sum[1] = out->sum[2] = 0;
	mp_image_channel_sums(px, n * n, out->sum);
	out->width = out->height = o->size + 2 * o->pad;
	mp_image_free(&fitted);
	out->ok = 1;
	return;
fail:
	/* Memory or descriptors running out is the machine's state, not the
	 * image's: --skip-bad must not drop an image for it. */
	out->fatal = errno == ENOMEM || errno == EMFILE || errno == ENFILE ||
		     errno == ENOBUFS;
	free(file);
	mp_image_free(&img);
	mp_image_free(&fitted);
	free(out->payload);
	out->payload = NULL;
	out->ok = 0;
	out->error = errdup(e.msg);
}

static void *worker(void *arg)
{
	pool *p = arg;
	mp_error e;
	mp_codec *codec = mp_codec_new(&e);
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->quit && p->next_claim < p->list->count &&
		       p->next_claim >= p->consumed + p->window) {
			p->workers_waiting++;
			pthread_cond_wait(&p->space, &p->mu);
			p->workers_waiting--;
		}
		if (p->quit || p->next_claim >= p->list->count) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		size_t i = p->next_claim++;
		pthread_mutex_unlock(&p->mu);

		slot s = {0};
		if (codec)
			process(p->o, codec, &p->list->items[i], &s);
		else {
			s.error = errdup(e.msg);
			s.fatal = 1;
		}

		pthread_mutex_lock(&p->mu);
		s.done = 1;
		p->slots[i % p->window] = s;
		/* Only the image the writer waits for wakes it: waking it for
		 * the next one it must write made it sleep and wake for nearly
		 * every image, as it keeps up with the workers. */
		if (i == p->writer_wants)
			pthread_cond_signal(&p->ready);
		pthread_mutex_unlock(&p->mu);
	}
	mp_codec_free(codec);
	return NULL;
}

uint64_t mp_pack_raw_batch_bytes(uint64_t n, int side)
{
	return MP_MB_HEADER + n * (MP_MB_ITEM + 1 + 3 * (uint64_t)side * (uint64_t)side) + 4;
}

static int sink_put(mp_pack_sink *sink, uint64_t index, const uint8_t *buf,
		    size_t len, mp_error *e)
{
	if (sink->db)
		return mp_db_writer_put(sink->db, index, buf, len, e);
	return mp_stream_write_frame(sink->stream, sink->stream_name,
				     MP_FRAME_MACROBATCH, buf, len, e);
}

/* The macrobatch being built: its payloads, the slots' buffers, are
 * freed once it is stored. */
typedef struct {
	mp_mb_builder b;
	uint8_t **held;
	uint8_t *stream_buf; /* reused: a fresh buffer per macrobatch costs page faults */
	size_t stream_cap;
	uint64_t first_record;
} batch;

static void release_payloads(batch *bt)
{
	for (uint32_t k = 0; k < bt->b.count; k++)
		free(bt->held[k]);
	mp_mb_builder_reset(&bt->b);
}

static void fill_batch(void *ctx, uint8_t *dst, size_t len)
{
	(void)len;
	batch *bt = ctx;
	mp_mb_builder_write(&bt->b, bt->first_record, dst);
}

static int flush_batch(mp_pack_sink *sink, batch *bt, mp_pack_report *rep,
		       mp_error *e)
{
	if (bt->b.count == 0)
		return 0;
	size_t len;
	bt->first_record = rep->records - bt->b.count;
	if (mp_mb_builder_size(&bt->b, &len, e) < 0)
		return -1;
	int rc;
	if (sink->db) {
		rc = mp_db_writer_put_fill(sink->db, rep->macrobatches, len, fill_batch, bt, e);
	} else {
		if (len > bt->stream_cap) {
			free(bt->stream_buf);
			bt->stream_cap = 0;
			if (!(bt->stream_buf = malloc(len)))
				return mp_seterr(e, "out of memory");
			bt->stream_cap = len;
		}
		fill_batch(bt, bt->stream_buf, len);
		rc = sink_put(sink, rep->macrobatches, bt->stream_buf, len, e);
	}
	release_payloads(bt);
	if (rc == 0)
		rep->macrobatches++;
	return rc;
}

int mp_pack_run(const mp_pack_options *o, const mp_list *list, mp_meta *meta,
		mp_pack_sink *sink, mp_pack_report *rep, mp_error *e)
{
	memset(rep, 0, sizeof *rep);
	pool p = {.o = o, .list = list, .writer_wants = SIZE_MAX};
	int jobs = o->jobs < 1 ? 1 : o->jobs;
	/* Images finished ahead of the writer wait in a window of slots. It
	 * must cover the time the writer spends storing a macrobatch, or the
	 * workers stall then: about 64 MiB of decoded-size images. */
	size_t side = (size_t)o->size + 2 * (size_t)o->pad;
	p.window = ((size_t)64 << 20) / (side * side * 3 + 1);
	if (p.window < (size_t)jobs * 4 + 4)
		p.window = (size_t)jobs * 4 + 4;
	if (p.window > 4096)
		p.window = 4096;
	p.slots = calloc(p.window, sizeof *p.slots);
	pthread_t *threads = calloc((size_t)jobs, sizeof *threads);
	int started = 0, rc = -1;
	batch bt = {0};
	mp_mb_builder_init(&bt.b);
	bt.held = malloc(sizeof *bt.held * (o->macrobatch ? o->macrobatch : 1));
	uint64_t sum[3] = {0, 0, 0};
	mp_progress prog;
	mp_progress_init(&prog, "packing", list->count, o->quiet);

	pthread_mutex_init(&p.mu, NULL);
	pthread_cond_init(&p.space, NULL);
	pthread_cond_init(&p.ready, NULL);
	if (!p.slots || !threads || !bt.held) {
		mp_seterr(e, "out of memory");
		goto out;
	}

	meta->complete = 0;
	meta->records = meta->macrobatches = meta->skipped = 0;
	meta->has_mean = 0;
	if (sink->stream) {
		char *json = mp_meta_to_json(meta, e);
		if (!json)
			goto out;
		int wr = mp_stream_write_header(sink->stream, sink->stream_name, e);
		if (wr == 0)
			wr = mp_stream_write_frame(sink->stream, sink->stream_name,
						   MP_FRAME_META, json, strlen(json), e);
		free(json);
		if (wr < 0)
			goto out;
	}

	for (; started < jobs; started++) {
		int err = pthread_create(&threads[started], NULL, worker, &p);
		if (err) {
			mp_seterr(e, "cannot start a worker thread: %s", strerror(err));
			goto out;
		}
	}

	for (size_t i = 0; i < list->count; i++) {
		slot s;
		pthread_mutex_lock(&p.mu);
		/* Sleep until a run of images is ready rather than waking for
		 * each one: until image want, half a window ahead, is done. When
		 * it is done already, or after a wake-up with image i still
		 * missing (another worker finished a later one), wait for i
		 * itself. Slot want holds image want: it is less than a window
		 * ahead of i, the oldest image not yet consumed. */
		size_t want = i + p.window / 2;
		if (want >= list->count)
			want = list->count - 1;
		while (!p.slots[i % p.window].done && !(o->stop && *o->stop)) {
			if (p.slots[want % p.window].done)
				want = i;
			/* Wake up now and then to notice a signal. */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 200 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			p.writer_wants = want;
			pthread_cond_timedwait(&p.ready, &p.mu, &ts);
			p.writer_wants = SIZE_MAX;
			want = i;
		}
		if (o->stop && *o->stop) {
			pthread_mutex_unlock(&p.mu);
			rep->interrupted = 1;
			mp_seterr(e, "interrupted");
			goto out;
		}
		s = p.slots[i % p.window];
		memset(&p.slots[i % p.window], 0, sizeof(slot));
		p.consumed++;
		if (p.workers_waiting)
			pthread_cond_broadcast(&p.space);
		pthread_mutex_unlock(&p.mu);

		const mp_list_entry *it = &list->items[i];
		const char *root = mp_list_root(o->root, it->path);
		if (!s.ok) {
			if (s.fatal || !o->skip_bad) {
				mp_seterr(e, "%s%s%s (%s line %ld): %s", root, *root ? "/" : "",
					  it->path, o->list_name, it->line,
					  s.error ? s.error : "out of memory");
				free(s.error);
				goto out;
			}
			mp_pack_skip *ns = realloc(rep->skips, (rep->nskips + 1) * sizeof *ns);
			if (!ns) {
				free(s.error);
				mp_seterr(e, "out of memory");
				goto out;
			}
			rep->skips = ns;
			rep->skips[rep->nskips].index = i;
			rep->skips[rep->nskips].reason = s.error;
			rep->nskips++;
			mp_progress_update(&prog, i + 1, NULL);
			continue;
		}
		mp_record r = {
			.label = it->label,
			.height = (uint32_t)s.height,
			.width = (uint32_t)s.width,
			.channels = 3,
			.encoding = (uint8_t)s.encoding,
			.name = it->path,
			.name_len = (uint32_t)strlen(it->path),
			.payload = s.payload,
			.payload_len = (uint32_t)s.payload_len,
		};
		if (s.payload_len > UINT32_MAX) {
			free(s.payload);
			mp_seterr(e, "%s%s%s (%s line %ld): stored image is larger than 4 GiB",
				  root, *root ? "/" : "", it->path, o->list_name, it->line);
			goto out;
		}
		/* checked as records come, not once --macrobatch of them are
		 * held: a stream frame holds 1 GiB, a macrobatch 4 GiB */
		const uint64_t limit = sink->stream ? MP_STREAM_MAX_FRAME : UINT32_MAX;
		const uint64_t grown = MP_MB_HEADER + (uint64_t)(bt.b.count + 1) * MP_MB_ITEM +
				       bt.b.names_len + r.name_len + bt.b.payloads_len +
				       r.payload_len + 4;
		if (grown > limit) {
			free(s.payload);
			if (bt.b.count == 0)
				mp_seterr(e, "%s%s%s (%s line %ld): its record of %llu bytes is more than "
					  "%s holds (%llu)%s", root, *root ? "/" : "", it->path,
					  o->list_name, it->line, (unsigned long long)(grown - MP_MB_HEADER - 4),
					  sink->stream ? "a stream frame" : "a macrobatch",
					  (unsigned long long)limit,
					  sink->stream ? "; write a DB with -o" : "");
			else
				mp_seterr(e, "%s%s%s (%s line %ld): with it, macrobatch %llu would take more "
					  "than the %llu bytes %s holds; use --macrobatch %u or less",
					  root, *root ? "/" : "", it->path, o->list_name, it->line,
					  (unsigned long long)rep->macrobatches, (unsigned long long)limit,
					  sink->stream ? "a stream frame" : "a macrobatch", bt.b.count);
			goto out;
		}
		if (mp_mb_builder_add(&bt.b, &r, e) < 0) {
			free(s.payload);
			goto out;
		}
		bt.held[bt.b.count - 1] = s.payload;
		for (int c = 0; c < 3; c++)
			sum[c] += s.sum[c];
		rep->records++;
		rep->payload_bytes += s.payload_len;
		rep->stored[s.encoding]++;
		if (bt.b.count == o->macrobatch && flush_batch(sink, &bt, rep, e) < 0)
			goto out;
		mp_progress_update(&prog, i + 1, NULL);
	}
	if (flush_batch(sink, &bt, rep, e) < 0)
		goto out;
	if (rep->records == 0) {
		mp_seterr(e, "%s: no records to write", o->list_name);
		goto out;
	}

	meta->complete = 1;
	meta->records = rep->records;
	meta->macrobatches = rep->macrobatches;
	meta->skipped = rep->nskips;
	meta->has_mean = 1;
	{
		double npx = (double)rep->records * meta->height * meta->width;
		for (int c = 0; c < 3; c++)
			meta->mean[c] = (double)sum[c] / npx;
	}
	if (sink->db) {
		char *json = mp_meta_to_json(meta, e);
		if (!json)
			goto out;
		int fin = mp_db_writer_finish(sink->db, json, e);
		sink->db = NULL; /* finish frees it, on failure too */
		free(json);
		if (fin < 0)
			goto out;
	} else {
		char *json = mp_meta_end_json(meta, e);
		if (!json)
			goto out;
		int wr = mp_stream_write_frame(sink->stream, sink->stream_name, MP_FRAME_END,
					       json, strlen(json), e);
		free(json);
		if (wr < 0)
			goto out;
	}
	rc = 0;
out:
	mp_progress_done(&prog);
	pthread_mutex_lock(&p.mu);
	p.quit = 1;
	pthread_cond_broadcast(&p.space);
	pthread_mutex_unlock(&p.mu);
	for (int t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	for (size_t i = 0; p.slots && i < p.window; i++) {
		free(p.slots[i].payload);
		free(p.slots[i].error);
	}
	pthread_mutex_destroy(&p.mu);
	pthread_cond_destroy(&p.space);
	pthread_cond_destroy(&p.ready);
	free(p.slots);
	free(threads);
	release_payloads(&bt);
	mp_mb_builder_free(&bt.b);
	free(bt.held);
	free(bt.stream_buf);
	if (rc < 0 && sink->db) {
		mp_db_writer_abort(sink->db);
		sink->db = NULL;
	}
	return rc;
}

void mp_pack_report_free(mp_pack_report *rep)
{
	for (size_t i = 0; i < rep->nskips; i++)
		free(rep->skips[i].reason);
	free(rep->skips);
	memset(rep, 0, sizeof *rep);
}

int mp_pack_copy(mp_source *src, mp_db_writer *db, atomic_int *stop,
		 int quiet, mp_pack_report *rep, mp_error *e)
{
	memset(rep, 0, sizeof *rep);
	mp_progress prog;
	mp_progress_init(&prog, "copying", 0, quiet);
	const uint8_t *buf;
	size_t len;
	int rc;
	uint32_t short_count = 0; /* a macrobatch short of the size, and which */
	uint64_t short_index = 0;
	while ((rc = mp_source_next(src, &buf, &len, e)) == 1) {
		if (stop && *stop) {
			rep->interrupted = 1;
			mp_seterr(e, "interrupted");
			goto fail;
		}
		mp_macrobatch mb;
		mp_error pe;
		if (mp_mb_parse(buf, len, &mb, &pe) < 0) {
			mp_seterr(e, "%s: macrobatch %llu: %s", mp_source_name(src),
				  (unsigned long long)mp_source_index(src), pe.msg);
			goto fail;
		}
		if (mb.first_record != rep->records) {
			mp_seterr(e, "%s: macrobatch %llu starts at record %llu, expected %llu",
				  mp_source_name(src), (unsigned long long)mp_source_index(src),
				  (unsigned long long)mb.first_record,
				  (unsigned long long)rep->records);
			mp_mb_free(&mb);
			goto fail;
		}
		/* what a reader of the DB would refuse is refused here, before
		 * it is stored: the images are not decoded (mp-inspect
		 * --verify does that). Readers find record n in macrobatch
		 * n / macrobatch_size: only the last may be short. */
		const mp_meta *m = mp_source_meta(src);
		if (mb.count > m->macrobatch_size || short_count) {
			const int over = mb.count > m->macrobatch_size;
			mp_seterr(e, "%s: macrobatch %llu holds %u records, %s than %u%s",
				  mp_source_name(src),
				  (unsigned long long)(over ? mp_source_index(src) : short_index),
				  over ? mb.count : short_count, over ? "more" : "fewer",
				  m->macrobatch_size, over ? "" : ", but is not the last");
			mp_mb_free(&mb);
			goto fail;
		}
		if (mb.count < m->macrobatch_size) {
			short_count = mb.count;
			short_index = mp_source_index(src);
		}
		for (uint32_t i = 0; i < mb.count; i++) {
			const mp_record *r = &mb.records[i];
			char why[128];
			if (mp_record_fits(m, r, why, sizeof why) < 0) {
				mp_seterr(e, "%s: record %llu (%.*s): %s", mp_source_name(src),
					  (unsigned long long)(rep->records + i), (int)r->name_len,
					  r->name, why);
				mp_mb_free(&mb);
				goto fail;
			}
			rep->stored[r->encoding]++;
			rep->payload_bytes += r->payload_len;
		}
		rep->records += mb.count;
		mp_mb_free(&mb);
		if (mp_db_writer_put(db, rep->macrobatches, buf, len, e) < 0)
			goto fail;
		rep->macrobatches++;
		mp_progress_update(&prog, rep->records, NULL);
	}
	if (rc < 0)
		goto fail;
	const mp_meta *m = mp_source_meta(src);
	if (m->records != rep->records) {
		mp_seterr(e, "%s: end frame counts %llu records, stream held %llu",
			  mp_source_name(src), (unsigned long long)m->records,
			  (unsigned long long)rep->records);
		goto fail;
	}
	char *json = mp_meta_to_json(m, e);
	if (!json)
		goto fail;
	mp_progress_done(&prog);
	rc = mp_db_writer_finish(db, json, e);
	free(json);
	return rc;
fail:
	mp_progress_done(&prog);
	mp_db_writer_abort(db);
	return -1;
}
