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
 * usage: loader-rate [-t THREADS] [-b BATCH] [-n BATCHES] [-c CROP]
 *                    [--scale-min N] [--scale-max N] DB
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_loader.h"
#include "mp_util.h"

static const char usage_line[] = "usage: loader-rate [-t THREADS] [-b BATCH] [-n BATCHES] "
				 "[-c CROP] [--scale-min N] [--scale-max N] DB\n";

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

int main(int argc, char **argv)
{
	int threads = 2, batch = 128, batches = 50, crop = 112, smin = 128, smax = 240;
	static const struct option longs[] = {
		{"scale-min", required_argument, NULL, 'm'},
		{"scale-max", required_argument, NULL, 'M'},
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
			     "\"images_per_second RATE\" on stdout.");
			return 0;
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
	int rc = mp_loader_start(l, epoch, &e);
	for (int b = 0; rc >= 0 && b <= batches;) {
		int n;
		rc = mp_loader_next(l, images, labels, NULL, &n, &e);
		if (rc == 0) { /* end of the epoch: the next one */
			rc = mp_loader_start(l, ++epoch, &e);
			continue;
		}
		if (rc < 0)
			break;
		if (b++ == 0) /* the first batch warms the pool: not timed */
			t0 = mp_now();
		else
			images_done += (uint64_t)n;
	}
	const double s = mp_now() - t0;
	mp_loader_close(l);
	free(images);
	free(labels);
	if (rc < 0) {
		fprintf(stderr, "loader-rate: %s\n", e.msg);
		return 1;
	}
	printf("images_per_second %.1f\n", images_done / s);
	fprintf(stderr, "loader-rate: %llu images in %.2f s with %d threads: %.0f images/s, "
			"%.0f per thread (%s: crop %d, scale %d..%d)\n",
		(unsigned long long)images_done, s, threads, images_done / s,
		images_done / s / threads, o.path, crop, smin, smax);
	return 0;
}
