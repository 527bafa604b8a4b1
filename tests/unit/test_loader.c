/* The data loader over a DB whose pixels spell out each record's index. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "mp_db.h"
#include "mp_image.h"
#include "mp_loader.h"
#include "mp_macrobatch.h"
#include "mp_meta.h"

#include "../raw_db_meta.h"

enum { NREC = 50, PER_MB = 16, SIDE = 8, CLASSES = 5 };

static char dir[64];
static int per_mb = PER_MB; /* records per macrobatch of the next write_db */

/* Record i is an 8x8 image of colour (i % 256, i / 256, 7), label i % 5;
 * record bad (if >= 0) holds a broken PNG. The meta says classes classes. */
static void write_db(const char *path, int labelled, int bad, int classes)
{
	mp_error e;
	mp_db_writer *w = mp_db_writer_open(path, 1 << 20, 1, &e);
	assert_non_null(w);
	static uint8_t px[NREC][SIDE * SIDE * 3];
	static const uint8_t broken[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	uint64_t mbs = 0;
	for (int first = 0; first < NREC; first += per_mb, mbs++) {
		mp_mb_builder b;
		mp_mb_builder_init(&b);
		for (int i = first; i < NREC && i < first + per_mb; i++) {
			for (int p = 0; p < SIDE * SIDE; p++) {
				px[i][3 * p] = (uint8_t)(i % 256);
				px[i][3 * p + 1] = (uint8_t)(i / 256);
				px[i][3 * p + 2] = 7;
			}
			char name[32];
			int nl = snprintf(name, sizeof name, "img%02d.png", i);
			mp_record r = {.label = labelled ? i % CLASSES : -1, .height = SIDE,
				       .width = SIDE, .channels = 3,
				       .encoding = i == bad ? MP_ENC_PNG : MP_ENC_RAW,
				       .name = name, .name_len = (uint32_t)nl,
				       .payload = i == bad ? broken : px[i],
				       .payload_len = i == bad ? 8 : SIDE * SIDE * 3};
			assert_int_equal(mp_mb_builder_add(&b, &r, &e), 0);
		}
		uint8_t *buf;
		size_t len;
		assert_int_equal(mp_mb_builder_finish(&b, (uint64_t)first, &buf, &len, &e), 0);
		assert_int_equal(mp_db_writer_put(w, mbs, buf, len, &e), 0);
		free(buf);
		mp_mb_builder_free(&b);
	}
	finish_raw_db(w, NREC, mbs, (uint32_t)per_mb, SIDE, labelled ? classes : 0);
}

static char good[128], nolabels[128], bad[128], badlabel[128], split[128];

static int setup(void **state)
{
	(void)state;
	strcpy(dir, "/tmp/mp-test-loader-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(good, sizeof good, "%s/good", dir);
	snprintf(nolabels, sizeof nolabels, "%s/nolabels", dir);
	snprintf(bad, sizeof bad, "%s/bad", dir);
	snprintf(badlabel, sizeof badlabel, "%s/badlabel", dir);
	write_db(good, 1, -1, CLASSES);
	write_db(nolabels, 0, -1, CLASSES);
	write_db(bad, 1, 37, CLASSES);
	write_db(badlabel, 1, -1, CLASSES - 1); /* record 4 has label 4 */
	snprintf(split, sizeof split, "%s/split", dir);
	per_mb = 7; /* the good records, in other macrobatches */
	write_db(split, 1, -1, CLASSES);
	per_mb = PER_MB;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	return system(cmd);
}

static mp_loader_opts opts(const char *path, int train, int threads)
{
	mp_loader_opts o = {.path = path, .train = train, .batch = 16, .threads = threads,
			    .prefetch = 2, .seed = 42, .eval_size = SIDE};
	o.aug.scale_min = o.aug.scale_max = o.aug.crop = SIDE;
	return o;
}

static void eval_keeps_order_and_pixels(void **state)
{
	(void)state;
	mp_error e;
	mp_loader_opts o = opts(good, 0, 2);
	o.mean[2] = 2.5;
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	assert_non_null(l);
	assert_int_equal(mp_loader_batches(l), 4);
	static float img[16 * 3 * SIDE * SIDE];
	int32_t lab[16];
	uint64_t ids[16];
	int n, seen = 0;
	assert_int_equal(mp_loader_start(l, 0, &e), 0);
	while (mp_loader_next(l, img, lab, ids, &n, &e) == 1) {
		for (int i = 0; i < n; i++, seen++) {
			assert_int_equal(ids[i], seen);
			assert_int_equal(lab[i], seen % CLASSES);
			const float *p = img + (size_t)i * 3 * SIDE * SIDE;
			assert_true(p[5] == (float)seen);                    /* R plane */
			assert_true(p[SIDE * SIDE + 5] == 0.0f);             /* G plane */
			assert_true(p[2 * SIDE * SIDE + 63] == 7.0f - 2.5f); /* B minus mean */
		}
	}
	assert_int_equal(seen, NREC);
	mp_loader_close(l);
	o.drop_last = 1;
	l = mp_loader_open(&o, NULL, &e);
	assert_int_equal(mp_loader_batches(l), 3);
	mp_loader_close(l);
}

/* A mean set after opening is the one subtracted, in both modes, as if
 * it had been given to mp_loader_open. */
static void a_mean_set_after_opening_is_subtracted(void **state)
{
	(void)state;
	mp_error e;
	const double mean[3] = {1.5, 0.25, 2.5};
	static float want[16 * 3 * SIDE * SIDE], got[16 * 3 * SIDE * SIDE];
	int32_t lab[16];
	int n, m;
	for (int train = 0; train < 2; train++) {
		mp_loader_opts o = opts(good, train, 2);
		memcpy(o.mean, mean, sizeof o.mean);
		memcpy(o.aug.mean, mean, sizeof o.aug.mean);
		mp_loader *l = mp_loader_open(&o, NULL, &e);
		assert_non_null(l);
		assert_int_equal(mp_loader_start(l, 3, &e), 0);
		assert_int_equal(mp_loader_next(l, want, lab, NULL, &n, &e), 1);
		mp_loader_close(l);
		o = opts(good, train, 2);
		l = mp_loader_open(&o, NULL, &e);
		assert_non_null(l);
		/* an epoch under way, with the old mean, is stopped */
		assert_int_equal(mp_loader_start(l, 3, &e), 0);
		mp_loader_set_mean(l, mean);
		assert_int_equal(mp_loader_start(l, 3, &e), 0);
		assert_int_equal(mp_loader_next(l, got, lab, NULL, &m, &e), 1);
		mp_loader_close(l);
		assert_int_equal(n, m);
		assert_memory_equal(got, want, sizeof(float) * 3 * SIDE * SIDE * (size_t)n);
	}
}

/* One whole epoch's records and images. */
static void run_epoch(mp_loader *l, uint64_t epoch, uint64_t *ids, float *imgs)
{
	mp_error e;
	int n, at = 0;
	int32_t lab[16];
	assert_int_equal(mp_loader_start(l, epoch, &e), 0);
	while (mp_loader_next(l, imgs + (size_t)at * 3 * SIDE * SIDE, lab, ids + at, &n, &e) == 1) {
		for (int i = 0; i < n; i++)
			assert_int_equal(lab[i], (int)(ids[at + i] % CLASSES));
		at += n;
	}
	assert_int_equal(at, NREC);
}

static void train_shuffles_the_same_for_any_thread_count(void **state)
{
	(void)state;
	mp_error e;
	static uint64_t ids[3][2][NREC];
	static float imgs[3][2][NREC * 3 * SIDE * SIDE];
	for (int t = 0; t < 3; t++) {
		mp_loader_opts o = opts(good, 1, t + 1);
		mp_loader *l = mp_loader_open(&o, NULL, &e);
		assert_non_null(l);
		run_epoch(l, 0, ids[t][0], imgs[t][0]);
		run_epoch(l, 1, ids[t][1], imgs[t][1]);
		/* an epoch started again is the same epoch */
		static uint64_t again[NREC];
		static float again_img[NREC * 3 * SIDE * SIDE];
		run_epoch(l, 0, again, again_img);
		assert_memory_equal(again, ids[t][0], sizeof again);
		assert_memory_equal(again_img, imgs[t][0], sizeof again_img);
		mp_loader_close(l);
	}
	for (int t = 1; t < 3; t++) {
		assert_memory_equal(ids[t], ids[0], sizeof ids[0]);
		assert_memory_equal(imgs[t], imgs[0], sizeof imgs[0]);
	}
	/* every record once per epoch, in another order each epoch */
	int seen[NREC] = {0}, in_order = 1;
	for (int i = 0; i < NREC; i++) {
		seen[ids[0][0][i]]++;
		in_order &= ids[0][0][i] == (uint64_t)i;
	}
	for (int i = 0; i < NREC; i++)
		assert_int_equal(seen[i], 1);
	assert_false(in_order);
	assert_memory_not_equal(ids[0][0], ids[0][1], sizeof ids[0][0]);
}

static void a_bad_record_is_an_error_naming_it(void **state)
{
	(void)state;
	mp_error e;
	mp_loader_opts o = opts(bad, 0, 2);
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	assert_non_null(l);
	static float img[16 * 3 * SIDE * SIDE];
	int32_t lab[16];
	int n, rc, batches = 0;
	assert_int_equal(mp_loader_start(l, 0, &e), 0);
	while ((rc = mp_loader_next(l, img, lab, NULL, &n, &e)) == 1)
		batches++;
	assert_int_equal(rc, -1);
	assert_int_equal(batches, 2); /* record 37 is in the third batch */
	assert_non_null(strstr(e.msg, "record 37 (img37.png)"));
	mp_loader_close(l);
}

/* A label outside the meta's classes is the data's fault, said at open. */
static void a_label_out_of_range_is_bad_data(void **state)
{
	(void)state;
	mp_error e;
	for (int train = 0; train < 2; train++) {
		int bad_data = -1;
		mp_loader_opts o = opts(badlabel, train, 1);
		assert_null(mp_loader_open(&o, &bad_data, &e));
		assert_int_equal(bad_data, 1);
		assert_non_null(strstr(e.msg, "record 4 has label 4, outside 0..3"));
	}
	int bad_data = -1;
	mp_loader_opts o = opts(good, 1, 1);
	mp_loader *l = mp_loader_open(&o, &bad_data, &e);
	assert_non_null(l);
	assert_int_equal(bad_data, 0);
	mp_loader_close(l);
}

static void refusals(void **state)
{
	(void)state;
	mp_error e;
	int bad_data = -1;
	mp_loader_opts o = opts(nolabels, 1, 1);
	assert_null(mp_loader_open(&o, &bad_data, &e));
	assert_non_null(strstr(e.msg, "training needs labels"));
	assert_int_equal(bad_data, 0);
	o = opts(good, 1, 1);
	o.batch = 0;
	bad_data = -1;
	assert_null(mp_loader_open(&o, &bad_data, &e));
	assert_int_equal(bad_data, 0);
	o = opts(good, 1, 1);
	o.batch = 64;
	o.drop_last = 1;
	bad_data = -1;
	assert_null(mp_loader_open(&o, &bad_data, &e));
	assert_non_null(strstr(e.msg, "make no batch of 64"));
	assert_int_equal(bad_data, 0);
	/* a DB of no records, which mp-batchwriter never writes: said so,
	 * for evaluation as for training */
	char empty[128];
	snprintf(empty, sizeof empty, "%s/empty", dir);
	mp_db_writer *w = mp_db_writer_open(empty, 1 << 20, 1, &e);
	assert_non_null(w);
	finish_raw_db(w, 0, 0, PER_MB, SIDE, CLASSES);
	for (int train = 0; train < 2; train++) {
		o = opts(empty, train, 1);
		o.drop_last = train;
		bad_data = -1;
		assert_null(mp_loader_open(&o, &bad_data, &e));
		assert_non_null(strstr(e.msg, "/empty: the dataset holds no records"));
		assert_int_equal(bad_data, 0);
	}
	o = opts("/nonexistent/db", 0, 1);
	bad_data = -1;
	assert_null(mp_loader_open(&o, &bad_data, &e));
	assert_int_equal(bad_data, 0);
	o = opts(good, 0, 1);
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	static float img[16 * 3 * SIDE * SIDE];
	int32_t lab[16];
	int n;
	assert_int_equal(mp_loader_next(l, img, lab, NULL, &n, &e), -1);
	assert_non_null(strstr(e.msg, "no epoch started"));
	mp_loader_close(l);
}

static uint32_t fingerprint_of(const char *path)
{
	mp_error e;
	mp_loader_opts o = opts(path, 0, 1);
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	assert_non_null(l);
	uint32_t f = mp_loader_fingerprint(l);
	mp_loader_close(l);
	return f;
}

/* A resumed run tells other training data from the same data moved or
 * split into other macrobatches by this fingerprint. */
static void the_fingerprint_follows_the_records_not_their_packing(void **state)
{
	(void)state;
	const uint32_t f = fingerprint_of(good);
	assert_int_not_equal(f, 0);
	assert_int_equal(fingerprint_of(good), f);
	assert_int_equal(fingerprint_of(split), f);
	/* the same pixels without their labels are other data */
	assert_int_not_equal(fingerprint_of(nolabels), f);
	/* and training mode reads the same records */
	mp_error e;
	mp_loader_opts o = opts(good, 1, 3);
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	assert_non_null(l);
	assert_int_equal(mp_loader_fingerprint(l), f);
	mp_loader_close(l);
}

/* put() for mp_loader_keep_decoded: the chunks into one host store. */
typedef struct {
	uint8_t *store;
	uint64_t size, next;
	int chunks, fail_at;
} keep_sink;

static int keep_put(void *ctx, uint64_t offset, const uint8_t *bytes, size_t len, mp_error *e)
{
	keep_sink *k = ctx;
	if (k->chunks++ == k->fail_at)
		return mp_seterr(e, "the sink is full");
	assert_true(offset == k->next && offset + len <= k->size);
	memcpy(k->store + offset, bytes, len);
	k->next = offset + len;
	return 0;
}

/* Batches kept decoded come as plans that the CPU backend turns into the
 * images mp_loader_next gives, for any thread count; each record's
 * colour shows that its pixels are where its plan says. */
static void plans_of_kept_records_make_the_same_batches(void **state)
{
	(void)state;
	mp_error e;
	enum { CROP = 6, FLOATS = 3 * CROP * CROP };
	static float want[2][NREC * FLOATS], got[NREC * FLOATS];
	uint64_t want_ids[2][NREC], got_ids[NREC];
	mp_loader_opts o = opts(good, 1, 2);
	o.aug.crop = CROP;
	o.aug.scale_min = 6;
	o.aug.scale_max = 12;
	o.aug.mean[0] = 10.5;
	mp_loader *a = mp_loader_open(&o, NULL, &e);
	assert_non_null(a);
	for (int ep = 0; ep < 2; ep++) {
		int n, at = 0;
		int32_t lab[16];
		assert_int_equal(mp_loader_start(a, (uint64_t)ep, &e), 0);
		while (mp_loader_next(a, want[ep] + (size_t)at * FLOATS, lab, want_ids[ep] + at, &n,
				      &e) == 1)
			at += n;
		assert_int_equal(at, NREC);
	}
	int32_t plan1[8];
	int n1;
	assert_int_equal(mp_loader_next_plan(a, plan1, NULL, NULL, &n1, &e), -1);
	assert_non_null(strstr(e.msg, "kept decoded"));
	for (int threads = 1; threads <= 3; threads += 2) {
		o.threads = threads;
		mp_loader *b = mp_loader_open(&o, NULL, &e);
		assert_non_null(b);
		assert_int_equal(mp_loader_taps(b), 0);
		keep_sink k = {.size = mp_loader_decoded_bytes(b), .fail_at = -1};
		assert_true(k.size == (uint64_t)NREC * SIDE * SIDE * 3);
		k.store = malloc(k.size);
		assert_int_equal(mp_loader_keep_decoded(b, keep_put, &k, &e), 0);
		assert_true(k.next == k.size);
		const int taps = mp_loader_taps(b);
		assert_true(taps >= 5);
		mp_backend *be = mp_backend_cpu_new(1);
		mp_tensor pixels, plan_dev, y;
		assert_int_equal(be->ops->alloc(be, &pixels, 1, 1, 1, (int)(k.size / 4)), 0);
		assert_int_equal(be->ops->write_bytes(be, &pixels, 0, k.store, k.size), 0);
		const size_t words = mp_augment_plan_words(16, CROP, taps);
		assert_int_equal(be->ops->alloc(be, &plan_dev, 1, 1, 1, (int)words), 0);
		int32_t *plan = malloc(words * sizeof *plan);
		for (int ep = 0; ep < 2; ep++) {
			int n, at = 0;
			int32_t lab[16];
			assert_int_equal(mp_loader_start(b, (uint64_t)ep, &e), 0);
			while (mp_loader_next_plan(b, plan, lab, got_ids + at, &n, &e) == 1) {
				assert_int_equal(be->ops->alloc(be, &y, n, 3, CROP, CROP), 0);
				assert_int_equal(be->ops->augment_train(be, &pixels, plan, taps, &plan_dev,
									&y), 0);
				memcpy(got + (size_t)at * FLOATS, y.data, sizeof(float) * FLOATS * n);
				be->ops->release(be, &y);
				for (int i = 0; i < n; i++)
					assert_int_equal(lab[i], (int)(got_ids[at + i] % CLASSES));
				at += n;
			}
			assert_int_equal(at, NREC);
			assert_memory_equal(got_ids, want_ids[ep], sizeof got_ids);
			assert_memory_equal(got, want[ep], sizeof got);
		}
		float img[16 * 3 * SIDE * SIDE];
		assert_int_equal(mp_loader_start(b, 0, &e), 0);
		assert_int_equal(mp_loader_next(b, img, NULL, NULL, &n1, &e), -1);
		assert_non_null(strstr(e.msg, "plans"));
		free(plan);
		free(k.store);
		be->ops->release(be, &pixels);
		be->ops->release(be, &plan_dev);
		mp_backend_free(be);
		mp_loader_close(b);
	}
	mp_loader_close(a);
}

/* A record that does not decode, or a sink that fails, stops the keeping
 * with a message, and the loader goes on as it was. */
static void keeping_fails_cleanly(void **state)
{
	(void)state;
	mp_error e;
	for (int which = 0; which < 2; which++) {
		mp_loader_opts o = opts(which ? good : bad, 1, 2);
		mp_loader *l = mp_loader_open(&o, NULL, &e);
		assert_non_null(l);
		keep_sink k = {.size = mp_loader_decoded_bytes(l), .fail_at = which ? 0 : -1};
		k.store = malloc(k.size);
		assert_int_equal(mp_loader_keep_decoded(l, keep_put, &k, &e), -1);
		assert_non_null(strstr(e.msg, which ? "the sink is full" : "record 37 (img37.png)"));
		assert_int_equal(mp_loader_taps(l), 0);
		static float img[16 * 3 * SIDE * SIDE];
		int n;
		assert_int_equal(mp_loader_start(l, 0, &e), 0);
		/* the broken record may be in the first batch */
		int32_t lab[16];
		const int rc = mp_loader_next(l, img, lab, NULL, &n, &e);
		assert_true(rc == 1 || (!which && rc == -1 && strstr(e.msg, "record 37")));
		free(k.store);
		mp_loader_close(l);
	}
	/* an evaluation loader makes no plans */
	mp_loader_opts o = opts(good, 0, 1);
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	assert_int_equal(mp_loader_plan_taps(l, &e), -1);
	mp_loader_close(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(eval_keeps_order_and_pixels),
		cmocka_unit_test(a_mean_set_after_opening_is_subtracted),
		cmocka_unit_test(train_shuffles_the_same_for_any_thread_count),
		cmocka_unit_test(a_bad_record_is_an_error_naming_it),
		cmocka_unit_test(a_label_out_of_range_is_bad_data),
		cmocka_unit_test(refusals),
		cmocka_unit_test(the_fingerprint_follows_the_records_not_their_packing),
		cmocka_unit_test(plans_of_kept_records_make_the_same_batches),
		cmocka_unit_test(keeping_fails_cleanly),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
