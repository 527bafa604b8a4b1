/*
 * jpeg-decode-rate: the decode limit for the batch writer benchmark.
 *
 * Reads every file named in a Mini-Places-style list into memory, then on
 * one thread decodes each with TurboJPEG to packed RGB, REPEATS times,
 * timing only the decode loop. Prints "images_per_second <float>" on
 * stdout and a human summary on stderr.
 *
 * The decode uses the same TurboJPEG calls and flags (0: accurate integer
 * IDCT, fancy upsampling) that a data-preparation tool would use, so the
 * rate is an upper bound for any single-threaded writer on this machine.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <turbojpeg.h>

#ifndef MP_VERSION
#define MP_VERSION "0.1"
#endif

/* Bounds checked before any allocation. */
#define MAX_FILE_BYTES (64L << 20)
#define MAX_SIDE 16384

static const char *prog = "jpeg-decode-rate";

struct image {
	char *name; /* path as written in the list, for messages */
	unsigned char *data;
	unsigned long size;
};

struct image_set {
	struct image *items;
	size_t count, cap;
};

static void
usage(FILE *fp)
{
	fprintf(fp, "usage: %s [-n REPEATS] LIST_FILE ROOT\n", prog);
}

static void
help(void)
{
	usage(stdout);
	printf("\n"
	    "Decode every JPEG of a Mini-Places-style list (first field of each "
	    "line is a\npath relative to ROOT; blank lines and # comments are "
	    "ignored) with TurboJPEG\nto RGB on one thread and print "
	    "\"images_per_second <float>\" on stdout.\nAll files are read into "
	    "memory first; only the decoding is timed.\n\n"
	    "  -n, --repeats N  decode the whole set N times (default 3)\n"
	    "  -h, --help       show this help\n"
	    "      --version    show the version\n");
}

static long
parse_number(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	/* strtol would also skip leading blanks */
	if (!isdigit((unsigned char)s[*s == '-' || *s == '+']) || *end != '\0' || errno != 0 ||
	    v < min || v > max) {
		fprintf(stderr, "%s: %s: \"%s\" is not a number from %ld to %ld\n",
		    prog, opt, s, min, max);
		exit(2);
	}
	return v;
}

static double
now_seconds(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
		fprintf(stderr, "%s: clock_gettime: %s\n", prog, strerror(errno));
		exit(1);
	}
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
read_whole_file(const char *path, struct image *img)
{
	struct stat st;
	FILE *fp;

	if ((fp = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(fp), &st) != 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > MAX_FILE_BYTES) {
		fprintf(stderr, "%s: %s: not a regular file of 1 byte to "
		    "%ld MiB\n", prog, path, MAX_FILE_BYTES >> 20);
		goto fail;
	}
	img->size = (unsigned long)st.st_size;
	if ((img->data = malloc(img->size)) == NULL) {
		fprintf(stderr, "%s: %s: out of memory\n", prog, path);
		goto fail;
	}
	if (fread(img->data, 1, img->size, fp) != img->size) {
		fprintf(stderr, "%s: %s: %s\n", prog, path,
		    ferror(fp) ? strerror(errno) : "file shrank while reading");
		goto fail;
	}
	if (fclose(fp) != 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	return 0;
fail:
	fclose(fp);
	return -1;
}

static int
add_image(struct image_set *set, const char *root, const char *name)
{
	char path[PATH_MAX];
	struct image img = { 0 };
	int n;

	n = snprintf(path, sizeof path, "%s/%s", root, name);
	if (n < 0 || (size_t)n >= sizeof path) {
		fprintf(stderr, "%s: %s/%s: path too long\n", prog, root, name);
		return -1;
	}
	if (set->count == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 1024;
		struct image *p = realloc(set->items, cap * sizeof *p);

		if (p == NULL) {
			fprintf(stderr, "%s: out of memory\n", prog);
			return -1;
		}
		set->items = p;
		set->cap = cap;
	}
	if ((img.name = strdup(name)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		return -1;
	}
	if (read_whole_file(path, &img) != 0) {
		free(img.name);
		free(img.data);
		return -1;
	}
	set->items[set->count++] = img;
	return 0;
}

/* Read the list and every file it names. */
static int
load_list(const char *list, const char *root, struct image_set *set)
{
	char *line = NULL;
	size_t linecap = 0;
	ssize_t len;
	long lineno = 0;
	FILE *fp;
	int rc = -1;

	if ((fp = fopen(list, "r")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", prog, list, strerror(errno));
		return -1;
	}
	errno = 0;
	while ((len = getline(&line, &linecap, fp)) != -1) {
		char *name, *save;

		lineno++;
		if ((size_t)len != strlen(line)) {
			fprintf(stderr, "%s: %s:%ld: NUL byte in line\n",
			    prog, list, lineno);
			goto done;
		}
		name = strtok_r(line, " \t\r\n", &save);
		if (name == NULL || name[0] == '#')
			continue;
		if (add_image(set, root, name) != 0) {
			fprintf(stderr, "%s: %s:%ld: cannot load the image "
			    "named here\n", prog, list, lineno);
			goto done;
		}
		errno = 0;
	}
	if (ferror(fp)) {
		fprintf(stderr, "%s: %s: %s\n", prog, list, strerror(errno));
		goto done;
	}
	if (set->count == 0) {
		fprintf(stderr, "%s: %s: no images listed\n", prog, list);
		goto done;
	}
	rc = 0;
done:
	free(line);
	fclose(fp);
	return rc;
}

static void
tj_report(tjhandle tj, const char *name, const char *what)
{
	fprintf(stderr, "%s: %s: %s %s: %s\n", prog, name, what,
	    tjGetErrorCode(tj) == TJERR_WARNING ? "warning" : "error",
	    tjGetErrorStr2(tj));
}

/* Untimed pass: check every header and size the output buffer once, so the
 * timed loop does no allocation. */
static int
check_headers(tjhandle tj, const struct image_set *set, size_t *max_bytes,
    double *pixels)
{
	size_t i;

	*max_bytes = 0;
	*pixels = 0;
	for (i = 0; i < set->count; i++) {
		const struct image *img = &set->items[i];
		int w, h, subsamp, colorspace;

		if (tjDecompressHeader3(tj, img->data, img->size, &w, &h,
		    &subsamp, &colorspace) != 0) {
			tj_report(tj, img->name, "JPEG header");
			return -1;
		}
		if (w < 1 || h < 1 || w > MAX_SIDE || h > MAX_SIDE) {
			fprintf(stderr, "%s: %s: %dx%d is outside 1..%d pixels "
			    "per side\n", prog, img->name, w, h, MAX_SIDE);
			return -1;
		}
		if ((size_t)w * (size_t)h * 3 > *max_bytes)
			*max_bytes = (size_t)w * (size_t)h * 3;
		*pixels += (double)w * h;
	}
	return 0;
}

/* The timed loop: header parse plus full decode to RGB, as a writer does.
 * Warnings (e.g. premature end of data) count as failures: they mean a
 * damaged file, and a rate measured on damaged files means nothing. */
static int
decode_all(tjhandle tj, const struct image_set *set, unsigned char *out,
    long repeats)
{
	long r;
	size_t i;

	for (r = 0; r < repeats; r++) {
		for (i = 0; i < set->count; i++) {
			const struct image *img = &set->items[i];
			int w, h, subsamp, colorspace;

			if (tjDecompressHeader3(tj, img->data, img->size, &w,
			    &h, &subsamp, &colorspace) != 0) {
				tj_report(tj, img->name, "JPEG header");
				return -1;
			}
			if (tjDecompress2(tj, img->data, img->size, out, w, 0,
			    h, TJPF_RGB, 0) != 0) {
				tj_report(tj, img->name, "decode");
				return -1;
			}
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	enum { OPT_VERSION = 256 };
	static const struct option longopts[] = {
		{ "repeats", required_argument, NULL, 'n' },
		{ "help",    no_argument,       NULL, 'h' },
		{ "version", no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct image_set set = { 0 };
	unsigned char *out = NULL;
	tjhandle tj = NULL;
	long repeats = 3;
	size_t max_bytes, i;
	double pixels, bytes = 0, t0, t1, secs, rate;
	int ch, rc = 1;

	while ((ch = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			repeats = parse_number("--repeats", optarg, 1, 100000);
			break;
		case 'h':
			help();
			return 0;
		case OPT_VERSION:
			printf("%s %s\n", prog, MP_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2) {
		usage(stderr);
		return 2;
	}

	if (load_list(argv[optind], argv[optind + 1], &set) != 0)
		goto done;
	if ((tj = tjInitDecompress()) == NULL) {
		fprintf(stderr, "%s: tjInitDecompress: %s\n", prog,
		    tjGetErrorStr2(NULL));
		goto done;
	}
	if (check_headers(tj, &set, &max_bytes, &pixels) != 0)
		goto done;
	if ((out = malloc(max_bytes)) == NULL) {
		fprintf(stderr, "%s: out of memory\n", prog);
		goto done;
	}
	for (i = 0; i < set.count; i++)
		bytes += (double)set.items[i].size;

	t0 = now_seconds();
	if (decode_all(tj, &set, out, repeats) != 0)
		goto done;
	t1 = now_seconds();
	secs = t1 - t0;
	if (secs <= 0)
		secs = 1e-9;
	rate = (double)set.count * (double)repeats / secs;

	printf("images_per_second %.1f\n", rate);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "%s: stdout: %s\n", prog, strerror(errno));
		goto done;
	}
	fprintf(stderr, "%s: %zu images (mean %.1f KB, %.0f pixels each) x %ld "
	    "repeats in %.3f s on one thread: %.1f images/s, %.1f Mpixel/s\n",
	    prog, set.count, bytes / (double)set.count / 1024.0,
	    pixels / (double)set.count, repeats, secs, rate,
	    pixels * (double)repeats / secs / 1e6);
	rc = 0;
done:
	if (tj != NULL && tjDestroy(tj) != 0 && rc == 0) {
		fprintf(stderr, "%s: tjDestroy: %s\n", prog, tjGetErrorStr2(NULL));
		rc = 1;
	}
	free(out);
	for (i = 0; i < set.count; i++) {
		free(set.items[i].name);
		free(set.items[i].data);
	}
	free(set.items);
	return rc;
}
