/*
 * fmnist-convert: turn Fashion-MNIST (the gzipped IDX files Debian ships)
 * into a Mini-Places-style tree of PNG images with train.txt, val.txt,
 * test.txt, test-labels.txt and categories.txt, so that the toolkit can be
 * demonstrated and tested on a real image set.
 *
 *   OUT/train/<first letter>/<class>/NNNNNNNN.png   numbered per class from 1
 *   OUT/val/NNNNNNNN.png                            first --val images of t10k
 *   OUT/test/NNNNNNNN.png                           the next --test images
 *
 * The output is deterministic: the same arguments give the same bytes.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <png.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <zlib.h>

#ifndef MP_VERSION
#define MP_VERSION "0.1"
#endif

#define SIDE 28
#define PIXELS (SIDE * SIDE)
#define NCLASSES 10
#define DEFAULT_SRC "/usr/share/datasets/fashion-mnist"
#define MAX_TRAIN 60000
#define MAX_T10K 10000
/* A bound on the item count read from an IDX header, checked before any
 * allocation: far above the real files, far below anything absurd. */
#define MAX_IDX_ITEMS 1000000u
#define PNG_ERR_LEN 128

static const char *prog = "fmnist-convert";

/* Fashion-MNIST label order. */
static const char *const class_names[NCLASSES] = {
	"t-shirt_top", "trouser", "pullover", "dress", "coat",
	"sandal", "shirt", "sneaker", "bag", "ankle_boot",
};

struct idx_set {
	uint32_t count;
	unsigned char *images; /* count * PIXELS bytes, row-major */
	unsigned char *labels; /* count bytes, each < NCLASSES */
};

struct membuf {
	unsigned char *data;
	size_t len, cap;
};

struct list_file {
	FILE *fp;
	char path[PATH_MAX];
	char tmp[PATH_MAX];
};

static void
usage(FILE *fp)
{
	fprintf(fp, "usage: %s [-s SRC_DIR] [--train N] [--val N] [--test N] "
	    "OUT_DIR\n", prog);
}

static void
help(void)
{
	usage(stdout);
	printf("\n"
	    "Convert Fashion-MNIST into a Mini-Places-style tree of 28x28 "
	    "grayscale PNGs\nplus train.txt, val.txt, test.txt, "
	    "test-labels.txt and categories.txt.\n\n"
	    "  -s, --source DIR  directory with the *-idx*-ubyte.gz files\n"
	    "                    (default " DEFAULT_SRC ")\n"
	    "      --train N     first N training images (default 60000)\n"
	    "      --val N       first N t10k images as val (default 5000)\n"
	    "      --test N      next N t10k images as test (default 5000);\n"
	    "                    val + test must not exceed 10000\n"
	    "  -h, --help        show this help\n"
	    "      --version     show the version\n\n"
	    "Files already in OUT_DIR are overwritten; others are left alone.\n");
}

/* Range-checked number parser: the whole string must be a decimal number
 * within [min, max]. Exits 2 otherwise. */
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

static int
join_path(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
join_path(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "%s: path too long (%.60s...)\n", prog, out);
		return -1;
	}
	return 0;
}

static uint32_t
be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
gz_report(gzFile gz, const char *path, const char *what)
{
	int errnum;
	const char *msg = gzerror(gz, &errnum);

	size_t plen = strlen(path);

	if (errnum == Z_ERRNO)
		msg = strerror(errno);
	else if (strncmp(msg, path, plen) == 0 &&
	    strncmp(msg + plen, ": ", 2) == 0)
		msg += plen + 2; /* zlib puts the path in front; we do too */
	fprintf(stderr, "%s: %s: %s: %s\n", prog, path, what, msg);
}

/* Read exactly len bytes; a short read means a truncated file. */
static int
gz_read_exact(gzFile gz, const char *path, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t done = 0;

	while (done < len) {
		size_t want = len - done;
		int n;

		if (want > (1u << 30))
			want = 1u << 30;
		n = gzread(gz, p + done, (unsigned)want);
		if (n < 0) {
			gz_report(gz, path, "read error");
			return -1;
		}
		if (n == 0) {
			fprintf(stderr, "%s: %s: file is truncated (%zu of %zu "
			    "bytes)\n", prog, path, done, len);
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/* After the last item nothing may follow; reading to the end also makes
 * zlib verify the gzip CRC, so a corrupt stream is caught here. */
static int
gz_expect_end(gzFile gz, const char *path)
{
	unsigned char c;
	int n = gzread(gz, &c, 1);

	if (n < 0) {
		gz_report(gz, path, "read error");
		return -1;
	}
	if (n > 0) {
		fprintf(stderr, "%s: %s: unexpected data after the last item\n",
		    prog, path);
		return -1;
	}
	return 0;
}

static int
gz_close(gzFile gz, const char *path)
{
	int rc = gzclose(gz);

	if (rc != Z_OK) {
		fprintf(stderr, "%s: %s: close failed (zlib error %d)\n",
		    prog, path, rc);
		return -1;
	}
	return 0;
}

static gzFile
gz_open(const char *path)
{
	gzFile gz;

	errno = 0;
	gz = gzopen(path, "rb");
	if (gz == NULL)
		fprintf(stderr, "%s: %s: %s\n", prog, path,
		    errno ? strerror(errno) : "cannot open");
	return gz;
}

static int
load_images(const char *path, struct idx_set *set)
{
	unsigned char hdr[16];
	uint32_t magic, count, rows, cols;
	gzFile gz;

	if ((gz = gz_open(path)) == NULL)
		return -1;
	if (gz_read_exact(gz, path, hdr, sizeof hdr) != 0)
		goto fail;
	magic = be32(hdr);
	count = be32(hdr + 4);
	rows = be32(hdr + 8);
	cols = be32(hdr + 12);
	if (magic != 0x803) {
		fprintf(stderr, "%s: %s: not an IDX image file (magic 0x%08x, "
		    "expected 0x00000803)\n", prog, path, (unsigned)magic);
		goto fail;
	}
	if (rows != SIDE || cols != SIDE) {
		fprintf(stderr, "%s: %s: images are %ux%u, expected %dx%d\n",
		    prog, path, (unsigned)rows, (unsigned)cols, SIDE, SIDE);
		goto fail;
	}
	if (count == 0 || count > MAX_IDX_ITEMS) {
		fprintf(stderr, "%s: %s: implausible image count %u\n",
		    prog, path, (unsigned)count);
		goto fail;
	}
	set->count = count;
	set->images = malloc((size_t)count * PIXELS);
	if (set->images == NULL) {
		fprintf(stderr, "%s: %s: out of memory\n", prog, path);
		goto fail;
	}
	if (gz_read_exact(gz, path, set->images, (size_t)count * PIXELS) != 0 ||
	    gz_expect_end(gz, path) != 0)
		goto fail;
	return gz_close(gz, path);
fail:
	gzclose(gz);
	return -1;
}

static int
load_labels(const char *path, struct idx_set *set)
{
	unsigned char hdr[8];
	uint32_t magic, count, i;
	gzFile gz;

	if ((gz = gz_open(path)) == NULL)
		return -1;
	if (gz_read_exact(gz, path, hdr, sizeof hdr) != 0)
		goto fail;
	magic = be32(hdr);
	count = be32(hdr + 4);
	if (magic != 0x801) {
		fprintf(stderr, "%s: %s: not an IDX label file (magic 0x%08x, "
		    "expected 0x00000801)\n", prog, path, (unsigned)magic);
		goto fail;
	}
	if (count != set->count) {
		fprintf(stderr, "%s: %s: %u labels for %u images\n",
		    prog, path, (unsigned)count, (unsigned)set->count);
		goto fail;
	}
	set->labels = malloc(count);
	if (set->labels == NULL) {
		fprintf(stderr, "%s: %s: out of memory\n", prog, path);
		goto fail;
	}
	if (gz_read_exact(gz, path, set->labels, count) != 0 ||
	    gz_expect_end(gz, path) != 0)
		goto fail;
	for (i = 0; i < count; i++) {
		if (set->labels[i] >= NCLASSES) {
			fprintf(stderr, "%s: %s: label %u of item %u is not "
			    "below %d\n", prog, path, set->labels[i],
			    (unsigned)i, NCLASSES);
			goto fail;
		}
	}
	return gz_close(gz, path);
fail:
	gzclose(gz);
	return -1;
}

/* Load <src>/<stem>-images-idx3-ubyte.gz and the matching labels. */
static int
load_set(const char *src, const char *stem, struct idx_set *set)
{
	char path[PATH_MAX];

	if (join_path(path, sizeof path, "%s/%s-images-idx3-ubyte.gz",
	    src, stem) != 0 || load_images(path, set) != 0)
		return -1;
	if (join_path(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz",
	    src, stem) != 0 || load_labels(path, set) != 0)
		return -1;
	return 0;
}

static void
free_set(struct idx_set *set)
{
	free(set->images);
	free(set->labels);
	set->images = set->labels = NULL;
}

static int
make_dir(const char *path)
{
	struct stat st;

	if (mkdir(path, 0777) == 0)
		return 0;
	if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	if (errno == EEXIST)
		errno = ENOTDIR;
	fprintf(stderr, "%s: %s: cannot create directory: %s\n",
	    prog, path, strerror(errno));
	return -1;
}

/* Write a whole file under a temporary name and rename it into place, so an
 * interrupted run never leaves a truncated file under the final name. */
static int
write_file(const char *path, const void *data, size_t len)
{
	char tmp[PATH_MAX];
	FILE *fp;

	if (join_path(tmp, sizeof tmp, "%s.tmp", path) != 0)
		return -1;
	if ((fp = fopen(tmp, "wb")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
		return -1;
	}
	if (fwrite(data, 1, len, fp) != len) {
		fprintf(stderr, "%s: %s: write failed: %s\n",
		    prog, path, strerror(errno));
		fclose(fp);
		goto fail;
	}
	if (fclose(fp) != 0) {
		fprintf(stderr, "%s: %s: write failed: %s\n",
		    prog, path, strerror(errno));
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		fprintf(stderr, "%s: %s: cannot rename into place: %s\n",
		    prog, path, strerror(errno));
		goto fail;
	}
	return 0;
fail:
	remove(tmp);
	return -1;
}

/* libpng reports errors through these; the message is kept for the caller
 * instead of libpng's own unprefixed print. */
static void
png_fail(png_structp png, png_const_charp msg)
{
	char *err = png_get_error_ptr(png);

	snprintf(err, PNG_ERR_LEN, "%s", msg);
	png_longjmp(png, 1);
}

static void
png_warn(png_structp png, png_const_charp msg)
{
	(void)png;
	fprintf(stderr, "%s: libpng warning: %s\n", prog, msg);
}

static void
png_mem_write(png_structp png, png_bytep data, png_size_t len)
{
	struct membuf *mb = png_get_io_ptr(png);

	if (len > mb->cap - mb->len) {
		size_t cap = mb->cap ? mb->cap : 4096;
		unsigned char *p;

		while (len > cap - mb->len)
			cap *= 2;
		if ((p = realloc(mb->data, cap)) == NULL)
			png_error(png, "out of memory");
		mb->data = p;
		mb->cap = cap;
	}
	memcpy(mb->data + mb->len, data, len);
	mb->len += len;
}

static void
png_mem_flush(png_structp png)
{
	(void)png;
}

/* Encode one SIDE x SIDE 8-bit grayscale image as PNG into out (which is
 * reset first). No tIME or text chunks, so the bytes are reproducible. */
static int
encode_png(const unsigned char *pixels, struct membuf *out, const char *name)
{
	char err[PNG_ERR_LEN] = "unknown error";
	png_bytep rows[SIDE];
	png_structp png;
	png_infop info;
	int i;

	out->len = 0;
	png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err,
	    png_fail, png_warn);
	if (png == NULL) {
		fprintf(stderr, "%s: %s: cannot create PNG writer\n", prog, name);
		return -1;
	}
	info = png_create_info_struct(png);
	if (info == NULL) {
		png_destroy_write_struct(&png, NULL);
		fprintf(stderr, "%s: %s: cannot create PNG writer\n", prog, name);
		return -1;
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_write_struct(&png, &info);
		fprintf(stderr, "%s: %s: PNG encoding failed: %s\n",
		    prog, name, err);
		return -1;
	}
	for (i = 0; i < SIDE; i++)
		rows[i] = (png_bytep)(pixels + i * SIDE);
	png_set_write_fn(png, out, png_mem_write, png_mem_flush);
	png_set_IHDR(png, info, SIDE, SIDE, 8, PNG_COLOR_TYPE_GRAY,
	    PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
	    PNG_FILTER_TYPE_DEFAULT);
	png_set_compression_level(png, Z_BEST_COMPRESSION);
	png_set_rows(png, info, rows);
	png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
	png_destroy_write_struct(&png, &info);
	return 0;
}

static int
write_png(const char *path, const unsigned char *pixels, struct membuf *buf)
{
	if (encode_png(pixels, buf, path) != 0)
		return -1;
	return write_file(path, buf->data, buf->len);
}

static int
list_open(struct list_file *lf, const char *out, const char *name)
{
	lf->fp = NULL;
	if (join_path(lf->path, sizeof lf->path, "%s/%s", out, name) != 0 ||
	    join_path(lf->tmp, sizeof lf->tmp, "%s/%s.tmp", out, name) != 0)
		return -1;
	if ((lf->fp = fopen(lf->tmp, "w")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", prog, lf->path, strerror(errno));
		return -1;
	}
	return 0;
}

/* fprintf errors are sticky; ferror() and fclose() catch them all here. */
static int
list_close(struct list_file *lf)
{
	int bad;

	if (lf->fp == NULL)
		return 0;
	bad = ferror(lf->fp);
	if (fclose(lf->fp) != 0)
		bad = 1;
	lf->fp = NULL;
	if (bad) {
		fprintf(stderr, "%s: %s: write failed: %s\n",
		    prog, lf->path, strerror(errno));
		remove(lf->tmp);
		return -1;
	}
	if (rename(lf->tmp, lf->path) != 0) {
		fprintf(stderr, "%s: %s: cannot rename into place: %s\n",
		    prog, lf->path, strerror(errno));
		remove(lf->tmp);
		return -1;
	}
	return 0;
}

static void
list_abandon(struct list_file *lf)
{
	if (lf->fp != NULL) {
		fclose(lf->fp);
		lf->fp = NULL;
		remove(lf->tmp);
	}
}

static int
make_tree(const char *out)
{
	char path[PATH_MAX];
	int c;

	if (make_dir(out) != 0)
		return -1;
	if (join_path(path, sizeof path, "%s/train", out) != 0 ||
	    make_dir(path) != 0)
		return -1;
	for (c = 0; c < NCLASSES; c++) {
		if (join_path(path, sizeof path, "%s/train/%c", out,
		    class_names[c][0]) != 0 || make_dir(path) != 0)
			return -1;
		if (join_path(path, sizeof path, "%s/train/%c/%s", out,
		    class_names[c][0], class_names[c]) != 0 ||
		    make_dir(path) != 0)
			return -1;
	}
	if (join_path(path, sizeof path, "%s/val", out) != 0 ||
	    make_dir(path) != 0)
		return -1;
	if (join_path(path, sizeof path, "%s/test", out) != 0 ||
	    make_dir(path) != 0)
		return -1;
	return 0;
}

static int
write_train(const char *out, const struct idx_set *set, long n,
    struct membuf *buf)
{
	unsigned per_class[NCLASSES] = { 0 };
	struct list_file lf;
	char rel[256], path[PATH_MAX];
	long i;

	if (list_open(&lf, out, "train.txt") != 0)
		return -1;
	for (i = 0; i < n; i++) {
		int c = set->labels[i];

		per_class[c]++;
		if (join_path(rel, sizeof rel, "train/%c/%s/%08u.png",
		    class_names[c][0], class_names[c], per_class[c]) != 0 ||
		    join_path(path, sizeof path, "%s/%s", out, rel) != 0 ||
		    write_png(path, set->images + (size_t)i * PIXELS, buf) != 0)
			goto fail;
		fprintf(lf.fp, "%s %d\n", rel, c);
	}
	return list_close(&lf);
fail:
	list_abandon(&lf);
	return -1;
}

/* val: t10k items [0, nval); test: [nval, nval + ntest), numbered from 1
 * in each directory. The test labels go to test-labels.txt only. */
static int
write_val_test(const char *out, const struct idx_set *set, long nval,
    long ntest, struct membuf *buf)
{
	struct list_file val, test, test_labels;
	char rel[64], path[PATH_MAX];
	long i;

	val.fp = test.fp = test_labels.fp = NULL;
	if (list_open(&val, out, "val.txt") != 0 ||
	    list_open(&test, out, "test.txt") != 0 ||
	    list_open(&test_labels, out, "test-labels.txt") != 0)
		goto fail;
	for (i = 0; i < nval + ntest; i++) {
		int is_test = i >= nval;
		long k = is_test ? i - nval : i;
		int c = set->labels[i];

		if (join_path(rel, sizeof rel, "%s/%08ld.png",
		    is_test ? "test" : "val", k + 1) != 0 ||
		    join_path(path, sizeof path, "%s/%s", out, rel) != 0 ||
		    write_png(path, set->images + (size_t)i * PIXELS, buf) != 0)
			goto fail;
		if (is_test) {
			fprintf(test.fp, "%s\n", rel);
			fprintf(test_labels.fp, "%s %d\n", rel, c);
		} else {
			fprintf(val.fp, "%s %d\n", rel, c);
		}
	}
	if (list_close(&val) != 0 || list_close(&test) != 0 ||
	    list_close(&test_labels) != 0)
		goto fail;
	return 0;
fail:
	list_abandon(&val);
	list_abandon(&test);
	list_abandon(&test_labels);
	return -1;
}

static int
write_categories(const char *out)
{
	struct list_file lf;
	int c;

	if (list_open(&lf, out, "categories.txt") != 0)
		return -1;
	for (c = 0; c < NCLASSES; c++)
		fprintf(lf.fp, "/%c/%s %d\n", class_names[c][0],
		    class_names[c], c);
	return list_close(&lf);
}

int
main(int argc, char **argv)
{
	enum { OPT_TRAIN = 256, OPT_VAL, OPT_TEST, OPT_VERSION };
	static const struct option longopts[] = {
		{ "source",  required_argument, NULL, 's' },
		{ "train",   required_argument, NULL, OPT_TRAIN },
		{ "val",     required_argument, NULL, OPT_VAL },
		{ "test",    required_argument, NULL, OPT_TEST },
		{ "help",    no_argument,       NULL, 'h' },
		{ "version", no_argument,       NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	const char *src = DEFAULT_SRC, *out;
	long ntrain = MAX_TRAIN, nval = 5000, ntest = 5000;
	struct idx_set train = { 0 }, t10k = { 0 };
	struct membuf buf = { 0 };
	int ch, rc = 1;

	/* past the file size limit (ulimit -f) a write fails with EFBIG,
	 * reported and cleaned up after, instead of SIGXFSZ killing us */
	signal(SIGXFSZ, SIG_IGN);
	while ((ch = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 's':
			src = optarg;
			break;
		case OPT_TRAIN:
			ntrain = parse_number("--train", optarg, 0, MAX_TRAIN);
			break;
		case OPT_VAL:
			nval = parse_number("--val", optarg, 0, MAX_T10K);
			break;
		case OPT_TEST:
			ntest = parse_number("--test", optarg, 0, MAX_T10K);
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
	if (argc - optind != 1) {
		usage(stderr);
		return 2;
	}
	out = argv[optind];
	if (nval + ntest > MAX_T10K) {
		fprintf(stderr, "%s: --val %ld plus --test %ld is more than the "
		    "%d t10k images\n", prog, nval, ntest, MAX_T10K);
		return 2;
	}

	/* Load and validate everything before writing anything. */
	if (ntrain > 0 && load_set(src, "train", &train) != 0)
		goto done;
	if (nval + ntest > 0 && load_set(src, "t10k", &t10k) != 0)
		goto done;
	if (ntrain > (long)train.count) {
		fprintf(stderr, "%s: %s: --train %ld, but the training set has "
		    "only %u images\n", prog, src, ntrain, (unsigned)train.count);
		goto done;
	}
	if (nval + ntest > (long)t10k.count) {
		fprintf(stderr, "%s: %s: --val plus --test is %ld, but the t10k "
		    "set has only %u images\n", prog, src, nval + ntest,
		    (unsigned)t10k.count);
		goto done;
	}

	if (make_tree(out) != 0 ||
	    write_train(out, &train, ntrain, &buf) != 0 ||
	    write_val_test(out, &t10k, nval, ntest, &buf) != 0 ||
	    write_categories(out) != 0)
		goto done;

	fprintf(stderr, "%s: wrote %ld train, %ld val and %ld test images "
	    "(%d classes, %dx%d grayscale PNG) to %s\n",
	    prog, ntrain, nval, ntest, NCLASSES, SIDE, SIDE, out);
	rc = 0;
done:
	free(buf.data);
	free_set(&train);
	free_set(&t10k);
	return rc;
}
