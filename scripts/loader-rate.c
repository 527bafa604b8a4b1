/*
 * loader-rate: how fast mp-train's training loader feeds batches, without
 * the network: the rate that a GPU step must not outrun if the loader is
 * to keep up.
 *
 * Opens a dataset DB as mp-train does (the recipe's augmentation: short
 * side scaled to a random size in [SCALE_MIN, SCALE_MAX], a random CROP
 * square, a random flip, the DB's mean subtracted; shuffled), then takes
 * BATCHES batches of BATCH images (the epoch restarted as needed) with
 * THREADS decoding threads, after one untimed batch. Prints
 * "images_per_second <float>" on stdout and a summary on stderr.
 *
 * With --kept, the batches of mp-train --augment backend on the fast CPU
 * backend instead: the records decoded once into the backend's memory
 * (not timed), then each batch a plan from the loader and the backend's
 * augment_train with THREADS threads, the same batches.
 *
 * usage: loader-rate [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP]
 *                    [--scale-min N] [--scale-max N] [--kept] DB
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "mp_augment.h"
#include "mp_loader.h"
#include "mp_util.h"

static const char usage_line[] = "usage: loader-rate [-t THREADS] [-b BATCH] [-n BATCHES] "
				 "[-c CROP] [--scale-min N] [--scale-max N] [--kept] DB\n";

static int usage(void)
{
	fputs(usage_line, stderr);
	return 2;
}

/* optarg as a decimal number from 1 to max (mp-train's bounds; the
 * loader's for threads), or -1: strtol alone would take " 5" */
static int in_range(const char *s, long max)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	return mp_number_start(s) && !errno && !*end && v >= 1 && v <= max ? (int)v : -1;
}

/* --kept: the backend that makes the batches from the kept records */
typedef struct {
	mp_backend *be;
	mp_tensor pixels, plan_dev, y;
	int32_t *plan;
} kept;

static int put_pixels(void *ctx, uint64_t offset, const uint8_t *bytes, size_t len, mp_error *e)
{
	kept *k = ctx;
	if (k->be->ops->write_bytes(k->be, &k->pixels, offset, bytes, len) < 0)
		return mp_seterr(e, "%s", mp_backend_error(k->be));
	return 0;
}

/* The records decoded into a new CPU backend of threads threads, and its
 * tensors for batches of batch crops; 0, or -1 with e set. */
static int keep(kept *k, mp_loader *l, int threads, int batch, int crop, mp_error *e)
{
	memset(k, 0, sizeof *k);
	if (!(k->be = mp_backend_cpu_fast_new(threads)))
		return mp_seterr(e, "out of memory");
	const uint64_t bytes = mp_loader_decoded_bytes(l);
	const int taps = mp_loader_plan_taps(l, e);
	if (taps < 0)
		return -1;
	const size_t words = mp_augment_plan_words(batch, crop, taps);
	const mp_backend_ops *o = k->be->ops;
	if (bytes / 4 + 1 > INT32_MAX || words > INT32_MAX ||
	    o->alloc(k->be, &k->pixels, 1, 1, 1, (int)(bytes / 4 + 1)) < 0 ||
	    o->alloc(k->be, &k->plan_dev, 1, 1, 1, (int)words) < 0 ||
	    o->alloc(k->be, &k->y, batch, 3, crop, crop) < 0 ||
	    !(k->plan = malloc(words * sizeof *k->plan)))
		return mp_seterr(e, "%.1f MB of decoded records: %s", bytes / 1e6,
				 mp_backend_error(k->be));
	return mp_loader_keep_decoded(l, put_pixels, k, e);
}

static void unkeep(kept *k)
{
	if (!k->be)
		return;
	mp_tensor *t[] = {&k->pixels, &k->plan_dev, &k->y};
	for (int i = 0; i < 3; i++)
		if (t[i]->data)
			k->be->ops->release(k->be, t[i]);
	mp_backend_free(k->be);
	free(k->plan);
}

int main(int argc, char **argv)
{
	int threads = 2, batch = 128, batches = 50, crop = 112, smin = 128, smax = 240, kept_on = 0;
	static const struct option longs[] = {
		{"scale-min", required_argument, NULL, 'm'},
		{"scale-max", required_argument, NULL, 'M'},
		{"kept", no_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "t:b:n:c:h", longs, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_line, stdout);
			puts("The rate of mp-train's training loader alone on dataset DB: THREADS\n"
			     "decoding threads (default 2), BATCHES batches (50) of BATCH images\n"
			     "(128), the recipe's augmentation (crop 112, scale 128..240). Prints\n"
			     "\"images_per_second RATE\" on stdout. --kept: the batches of\n"
			     "mp-train --augment backend on the fast CPU backend instead (the records\n"
			     "decoded once, untimed; a plan a batch, augment_train with THREADS).");
			return 0;
		}
		if (c == 'k') {
			kept_on = 1;
			continue;
		}
		int *dst = c == 't' ? &threads : c == 'b' ? &batch : c == 'n' ? &batches
			 : c == 'c' ? &crop : c == 'm' ? &smin : c == 'M' ? &smax : NULL;
		if (!dst)
			return usage();
		const long max = c == 't' ? 256 : c == 'b' ? 65536 : c == 'n' ? 1000000
			       : c == 'c' ? 4096 : 65535;
		if ((*dst = in_range(optarg, max)) < 0) {
			fprintf(stderr, "loader-rate: %s %s: expected a number from 1 to %ld\n",
				c == 'm' ? "--scale-min" : c == 'M' ? "--scale-max"
				: c == 't' ? "-t" : c == 'b' ? "-b" : c == 'n' ? "-n" : "-c",
				optarg, max);
			return 2;
		}
	}
	if (optind != argc - 1)
		return usage();
	if (smin > smax || crop > smin) {
		fprintf(stderr, "loader-rate: expected crop <= scale-min <= scale-max, got %d, %d, "
				"%d\n", crop, smin, smax);
		return 2;
	}
	mp_loader_opts o = {
		.path = argv[optind], .train = 1, .batch = batch, .threads = threads,
		.prefetch = 2 * threads + 1, .drop_last = 1, .seed = 1,
		.aug = {.scale_min = smin, .scale_max = smax, .crop = crop},
	};
	mp_error e;
	mp_loader *l = mp_loader_open(&o, NULL, &e);
	if (!l) {
		fprintf(stderr, "loader-rate: %s\n", e.msg);
		return 1;
	}
	const mp_meta *m = mp_loader_meta(l);
	if (m->has_mean)
		memcpy(o.aug.mean, m->mean, sizeof o.aug.mean);
	mp_loader_close(l);
	if (!(l = mp_loader_open(&o, NULL, &e))) {
		fprintf(stderr, "loader-rate: %s\n", e.msg);
		return 1;
	}
	float *images = malloc((size_t)batch * 3 * crop * crop * sizeof *images);
	int32_t *labels = malloc((size_t)batch * sizeof *labels);
	if (!images || !labels) {
		fprintf(stderr, "loader-rate: out of memory\n");
		return 1;
	}
	uint64_t epoch = 0, images_done = 0;
	double t0 = 0;
	kept k = {0};
	int rc = kept_on ? keep(&k, l, threads, batch, crop, &e) : 0;
	if (rc >= 0)
		rc = mp_loader_start(l, epoch, &e);
	for (int b = 0; rc >= 0 && b <= batches;) {
		int n;
		rc = kept_on ? mp_loader_next_plan(l, k.plan, labels, NULL, &n, &e)
			     : mp_loader_next(l, images, labels, NULL, &n, &e);
		if (rc == 0) { /* end of the epoch: the next one */
			rc = mp_loader_start(l, ++epoch, &e);
			continue;
		}
		if (rc > 0 && kept_on && n == batch &&
		    k.be->ops->augment_train(k.be, &k.pixels, k.plan, mp_loader_taps(l), &k.plan_dev,
					     &k.y) < 0)
			rc = mp_seterr(&e, "%s", mp_backend_error(k.be));
		if (rc < 0)
			break;
		if (b++ == 0) /* the first batch warms the pool: not timed */
			t0 = mp_now();
		else
			images_done += (uint64_t)n;
	}
	const double s = mp_now() - t0;
	mp_loader_close(l);
	unkeep(&k);
	free(images);
	free(labels);
	if (rc < 0) {
		fprintf(stderr, "loader-rate: %s\n", e.msg);
		return 1;
	}
	printf("images_per_second %.1f\n", images_done / s);
	fprintf(stderr, "loader-rate: %llu images in %.2f s with %d threads%s: %.0f images/s, "
			"%.0f per thread (%s: crop %d, scale %d..%d)\n",
		(unsigned long long)images_done, s, threads,
		kept_on ? ", kept decoded, made by the CPU backend" : "", images_done / s,
		images_done / s / threads, o.path, crop, smin, smax);
	return 0;
}
