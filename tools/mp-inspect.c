/* mp-inspect: summaries, single records, exported images and verification
 * of the files the suite writes. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_cli.h"
#include "mp_dataset.h"
#include "mp_image.h"
#include "mp_inspect.h"
#include "mp_json.h"
#include "mp_util.h"
#include "mp_weights.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: %s [--json] [--verify | --list | --record N] DATASET\n"
		"       %s --extract N -o FILE DATASET\n"
		"       %s [--json] [--verify | --tensors | --dump NAME] WEIGHTS\n"
		"       %s [--json] [--tol X] --diff WEIGHTS_A WEIGHTS_B\n"
		"DATASET is a dataset DB directory, a stream file, or - for a stream on stdin;\n"
		"WEIGHTS a weights or checkpoint file (safetensors).\n"
		"Try '%s --help' for the options.\n",
		mp_progname, mp_progname, mp_progname, mp_progname, mp_progname);
	exit(2);
}

static void help(void)
{
	printf("usage: %s [options] DATASET | WEIGHTS\n"
	       "       %s [--tol X] --diff WEIGHTS_A WEIGHTS_B\n"
	       "Summarises a dataset (DB directory, stream file, or - for stdin) or a\n"
	       "weights or checkpoint file (safetensors).\n\n"
	       "      --verify        check every CRC and decode every image; exit 1 on any\n"
	       "                      failure\n"
	       "      --list          one line per record: index, name, label, width,\n"
	       "                      height, encoding, bytes, crc32\n"
	       "      --record N      print the fields of record N (from 0)\n"
	       "      --extract N     decode record N and write it to -o FILE (.png, .jpg,\n"
	       "                      .jpeg or .ppm)\n"
	       "  -o, --output FILE   where --extract writes (- for stdout as PNG, not a\n"
	       "                      terminal)\n"
	       "      --json          machine-readable output\n"
	       "      --max-pixels N  refuse to decode larger images (default 67108864)\n"
	       "      --tensors       weights: name, shape, dtype, mean, std, min, max, L2 norm\n"
	       "      --dump NAME     weights: the values of one tensor, one per line\n"
	       "      --diff A B      largest differences per tensor; exit 1 beyond --tol\n"
	       "      --tol X         relative tolerance of --diff (default 0: identical)\n"
	       "  -h, --help          this help\n"
	       "  -V, --version       version and backends\n",
	       mp_progname, mp_progname);
	mp_exit_stdout(0);
}

enum {
	OPT_VERIFY = 256, OPT_LIST, OPT_RECORD, OPT_EXTRACT, OPT_JSON, OPT_MAX_PIXELS,
	OPT_TENSORS, OPT_DUMP, OPT_DIFF, OPT_TOL,
};

static const struct option long_opts[] = {
	{"verify", no_argument, NULL, OPT_VERIFY},
	{"tensors", no_argument, NULL, OPT_TENSORS},
	{"dump", required_argument, NULL, OPT_DUMP},
	{"diff", no_argument, NULL, OPT_DIFF},
	{"tol", required_argument, NULL, OPT_TOL},
	{"list", no_argument, NULL, OPT_LIST},
	{"record", required_argument, NULL, OPT_RECORD},
	{"extract", required_argument, NULL, OPT_EXTRACT},
	{"output", required_argument, NULL, 'o'},
	{"json", no_argument, NULL, OPT_JSON},
	{"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

/* Names and paths are bytes; the JSON printed is UTF-8 whatever they hold. */
static void print_json(cJSON *o)
{
	char *u = mp_json_print(o);
	if (!u)
		mp_errx(1, "out of memory");
	puts(u);
	free(u);
	cJSON_Delete(o);
}

static cJSON *meta_object(mp_source *src)
{
	mp_error e;
	const mp_meta *m = mp_source_meta(src);
	char *json = mp_meta_to_json(m, &e);
	if (!json)
		mp_errx(1, "%s", e.msg);
	cJSON *o = cJSON_Parse(json);
	free(json);
	if (!o)
		mp_errx(1, "out of memory");
	/* the document as read, not the CRC of its rewritten text */
	cJSON_DeleteItemFromObjectCaseSensitive(o, MP_META_CRC_KEY);
	cJSON_ReplaceItemInObjectCaseSensitive(o, "format_version",
					       cJSON_CreateNumber(m->format_version));
	return o;
}

static const char *class_name(const mp_meta *m, int label)
{
	if (label >= 0 && label < m->classes && m->class_names)
		return m->class_names[label];
	return NULL;
}

/* Record numbers (the summary's and --list's) hold only when each
 * macrobatch starts where the ones before it ended. */
static int warn_misplaced(mp_source *src, const mp_mb_order *o)
{
	if (!o->misplaced)
		return 0;
	mp_warnx("%s: %llu macrobatch%s out of order; the first is macrobatch %llu, which "
		 "starts at record %llu, and %llu records come before it",
		 mp_source_name(src), (unsigned long long)o->misplaced, o->misplaced == 1 ? "" : "es",
		 (unsigned long long)o->first_misplaced, (unsigned long long)o->first_misplaced_start,
		 (unsigned long long)o->first_misplaced_after);
	return 1;
}

/* Problems the summary finds while counting: a warning each, exit 1. */
static int summary_problems(mp_source *src, const mp_stats *st)
{
	const mp_meta *m = mp_source_meta(src);
	int rc = 0;
	if (st->records != m->records) {
		mp_warnx("%s: %llu records read, the meta says %llu", mp_source_name(src),
			 (unsigned long long)st->records, (unsigned long long)m->records);
		rc = 1;
	}
	if (st->bad_labels) {
		char allowed[64];
		if (m->labelled)
			snprintf(allowed, sizeof allowed, "a label outside 0..%d", mp_label_max(m));
		else
			snprintf(allowed, sizeof allowed, "a label in an unlabelled set");
		mp_warnx("%s: %llu record%s %s, counted in no class; the first is record %llu (%s) with label %d",
			 mp_source_name(src), (unsigned long long)st->bad_labels,
			 st->bad_labels == 1 ? " has" : "s have", allowed,
			 (unsigned long long)st->first_bad, st->first_bad_name, st->first_bad_label);
		rc = 1;
	}
	if (warn_misplaced(src, &st->order))
		rc = 1;
	return rc;
}

static int summary(mp_source *src, int json)
{
	mp_error e;
	mp_stats st;
	if (mp_stats_scan(src, &st, &e) < 0) {
		mp_stats_free(&st);
		mp_errx(1, "%s", e.msg);
	}
	const mp_meta *m = mp_source_meta(src);
	const char *kind = mp_source_is_stream(src) ? "stream" : "LMDB";
	if (json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "dataset", mp_source_name(src));
		cJSON_AddStringToObject(o, "container", kind);
		cJSON_AddItemToObject(o, "meta", meta_object(src));
		cJSON_AddNumberToObject(o, "records", (double)st.records);
		cJSON_AddNumberToObject(o, "macrobatches", (double)st.macrobatches);
		cJSON_AddNumberToObject(o, "unlabelled", (double)st.unlabelled);
		cJSON_AddNumberToObject(o, "bad_labels", (double)st.bad_labels);
		cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
		for (int i = 0; i < st.classes; i++)
			cJSON_AddItemToArray(pc, cJSON_CreateNumber((double)st.per_class[i]));
		cJSON *enc = cJSON_AddObjectToObject(o, "encodings");
		for (int i = 0; i < 3; i++)
			cJSON_AddNumberToObject(enc, mp_encoding_name(i), (double)st.encodings[i]);
		cJSON *sz = cJSON_AddArrayToObject(o, "sizes");
		for (int i = 0; i < st.nsizes; i++) {
			cJSON *s = cJSON_CreateObject();
			cJSON_AddNumberToObject(s, "width", st.sizes[i].width);
			cJSON_AddNumberToObject(s, "height", st.sizes[i].height);
			cJSON_AddNumberToObject(s, "count", (double)st.sizes[i].count);
			cJSON_AddItemToArray(sz, s);
		}
		cJSON_AddNumberToObject(o, "other_sizes", (double)st.other_sizes);
		cJSON *pb = cJSON_AddObjectToObject(o, "payload_bytes");
		cJSON_AddNumberToObject(pb, "total", (double)st.payload_total);
		cJSON_AddNumberToObject(pb, "min", (double)st.payload_min);
		cJSON_AddNumberToObject(pb, "max", (double)st.payload_max);
		cJSON_AddNumberToObject(pb, "mean", st.records ? (double)st.payload_total / st.records : 0);
		print_json(o);
		int rc = summary_problems(src, &st);
		mp_stats_free(&st);
		return rc;
	}
	printf("dataset:      %s (%s)\n", mp_source_name(src), kind);
	printf("format:       %s %d, created by %s\n", MP_META_FORMAT, m->format_version,
	       m->created_by);
	printf("source list:  %s\n", m->source_list ? m->source_list : "");
	printf("records:      %llu in %llu macrobatches of up to %u\n",
	       (unsigned long long)st.records, (unsigned long long)st.macrobatches,
	       m->macrobatch_size);
	printf("images:       %dx%dx%d (size %d, fit %s, padding %d, pad fill %s)\n", m->width,
	       m->height, m->channels, m->size, m->fit, m->padding, m->pad_fill);
	printf("encoding:     %s (quality %d); stored: jpeg %llu, png %llu, raw %llu\n",
	       m->encoding, m->quality, (unsigned long long)st.encodings[MP_ENC_JPEG],
	       (unsigned long long)st.encodings[MP_ENC_PNG],
	       (unsigned long long)st.encodings[MP_ENC_RAW]);
	printf("sizes:       ");
	for (int i = 0; i < st.nsizes; i++)
		printf(" %ux%u: %llu", st.sizes[i].width, st.sizes[i].height,
		       (unsigned long long)st.sizes[i].count);
	if (st.other_sizes)
		printf(" other: %llu", (unsigned long long)st.other_sizes);
	printf("\n");
	printf("bytes:        %.2f MiB stored; per record mean %.0f, min %llu, max %llu\n",
	       (double)st.payload_total / 1048576.0,
	       st.records ? (double)st.payload_total / st.records : 0.0,
	       (unsigned long long)st.payload_min, (unsigned long long)st.payload_max);
	if (m->has_mean)
		printf("mean (RGB):   %.4f %.4f %.4f\n", m->mean[0], m->mean[1], m->mean[2]);
	else
		printf("mean (RGB):   unknown\n");
	printf("skipped:      %llu bad inputs when packed\n", (unsigned long long)m->skipped);
	if (!m->labelled) {
		printf("labels:       none (%llu unlabelled records)\n",
		       (unsigned long long)st.unlabelled);
	} else {
		printf("classes:      %d\n", m->classes);
		printf("per class:\n");
		for (int i = 0; i < st.classes; i++) {
			const char *n = class_name(m, i);
			printf("  %5d %8llu%s%s\n", i, (unsigned long long)st.per_class[i],
			       n ? "  " : "", n ? n : "");
		}
	}
	int rc = summary_problems(src, &st);
	mp_stats_free(&st);
	return rc;
}

/* One element of an array printed as print_json prints the whole array:
 * --list --json writes a record at a time, where a tree of them all
 * (about 1.4 KB each) took gigabytes for a million records. */
static void print_json_element(cJSON *o, int first)
{
	cJSON *wrap = cJSON_CreateArray();
	if (!wrap || !cJSON_AddItemToArray(wrap, o))
		mp_errx(1, "out of memory");
	char *u = mp_json_print(wrap);
	if (!u)
		mp_errx(1, "out of memory");
	/* "[ELEMENT]": the brackets are the whole array's */
	u[strlen(u) - 1] = '\0';
	fputs(first ? u : u + 1, stdout);
	free(u);
	cJSON_Delete(wrap);
}

static int list_records(mp_source *src, int json)
{
	mp_error e;
	const uint8_t *buf;
	size_t len;
	int rc, first = 1;
	mp_mb_order order = {0};
	if (!json)
		printf("index\tname\tlabel\twidth\theight\tencoding\tbytes\tcrc32\n");
	while ((rc = mp_source_next(src, &buf, &len, &e)) == 1) {
		mp_macrobatch mb;
		if (mp_mb_parse(buf, len, &mb, &e) < 0)
			mp_errx(1, "%s: macrobatch %llu: %s", mp_source_name(src),
				(unsigned long long)mp_source_index(src), e.msg);
		mp_mb_order_see(&order, &mb);
		for (uint32_t i = 0; i < mb.count; i++) {
			const mp_record *r = &mb.records[i];
			uint32_t crc = mp_crc32(0, r->payload, r->payload_len);
			unsigned long long n = mb.first_record + i;
			if (json) {
				cJSON *o = cJSON_CreateObject();
				char *name = strndup(r->name, r->name_len);
				cJSON_AddNumberToObject(o, "index", (double)n);
				cJSON_AddStringToObject(o, "name", name ? name : "");
				cJSON_AddNumberToObject(o, "label", r->label);
				cJSON_AddNumberToObject(o, "width", r->width);
				cJSON_AddNumberToObject(o, "height", r->height);
				cJSON_AddStringToObject(o, "encoding", mp_encoding_name(r->encoding));
				cJSON_AddNumberToObject(o, "bytes", r->payload_len);
				cJSON_AddNumberToObject(o, "crc32", crc);
				if (!first)
					fputs(", ", stdout);
				print_json_element(o, first);
				first = 0;
				free(name);
			} else {
				printf("%llu\t", n);
				mp_put_tsv_field(stdout, r->name, r->name_len); /* one line per record */
				printf("\t%d\t%u\t%u\t%s\t%u\t%08x\n", r->label, r->width, r->height,
				       mp_encoding_name(r->encoding), r->payload_len, crc);
			}
		}
		mp_mb_free(&mb);
	}
	if (rc < 0)
		mp_errx(1, "%s", e.msg);
	if (json)
		puts(first ? "[]" : "]");
	/* the listing is written; what makes its numbers doubtful follows */
	int bad = 0;
	const mp_meta *m = mp_source_meta(src);
	if (order.records != m->records) {
		mp_warnx("%s: %llu records read, the meta says %llu", mp_source_name(src),
			 (unsigned long long)order.records, (unsigned long long)m->records);
		bad = 1;
	}
	return warn_misplaced(src, &order) || bad;
}

/* --verify's failures: into the JSON report (when asked for) and on
 * stderr, on a line of their own where the progress bar is drawn */
typedef struct {
	cJSON *fails;
	mp_progress *progress;
} verify_report;

static void print_failure(void *ctx, const char *msg)
{
	verify_report *r = ctx;
	if (r->fails)
		cJSON_AddItemToArray(r->fails, cJSON_CreateString(msg));
	if (r->progress)
		mp_progress_done(r->progress);
	mp_warnx("%s", msg);
}

/* A dataset whose header, LMDB file or meta document is bad is verified
 * as far as that: one problem, no records checked, and the report says
 * so; only a path that does not open at all is an error without one. */
static int verify(const char *path, uint64_t max_pixels, int json)
{
	mp_error e;
	int opened;
	mp_source *src = mp_source_open_stage(path, &opened, &e);
	if (!src && !opened)
		mp_errx(1, "%s", e.msg);
	cJSON *fails = json ? cJSON_CreateArray() : NULL;
	verify_report report = {fails, NULL};
	uint64_t checked = 0;
	long failures;
	if (src) {
		/* on a terminal, a bar: a DB of Mini-Places' 100,000 images
		 * takes tens of seconds (a stream's count has no total) */
		const mp_meta *sm = mp_source_meta(src);
		mp_progress progress;
		mp_progress_init(&progress, "verifying", sm->complete ? sm->records : 0, 0);
		report.progress = &progress;
		failures = mp_verify(src, max_pixels, print_failure, &report, &checked, &progress);
		mp_progress_done(&progress);
	} else {
		print_failure(&report, e.msg);
		failures = 1;
	}
	const char *name = src ? mp_source_name(src) : strcmp(path, "-") ? path : "<stdin>";
	const mp_meta *m = src ? mp_source_meta(src) : NULL;
	if (json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "dataset", name);
		cJSON_AddNumberToObject(o, "records_checked", (double)checked);
		/* a stream's count is in its end frame: until that is read,
		 * its meta frame's 0 is no count */
		if (m && m->complete)
			cJSON_AddNumberToObject(o, "records_expected", (double)m->records);
		else
			cJSON_AddNullToObject(o, "records_expected");
		cJSON_AddBoolToObject(o, "ok", failures == 0);
		if (m)
			cJSON_AddBoolToObject(o, "meta_crc32", m->has_crc);
		else
			cJSON_AddNullToObject(o, "meta_crc32");
		cJSON_AddItemToObject(o, "failures", fails);
		print_json(o);
	} else if (failures == 0) {
		printf("%s: OK: %llu records verified (CRCs, layout, every image decoded)%s\n",
		       name, (unsigned long long)checked,
		       m->has_crc ? "" : "; format_version 1: the meta document is not "
					 "covered by a CRC");
	} else {
		printf("%s: FAILED: %ld problem%s; %llu records checked\n", name,
		       failures < 0 ? 1 : failures, failures == 1 ? "" : "s",
		       (unsigned long long)checked);
	}
	mp_source_close(src);
	return failures == 0 ? 0 : 1;
}

/* Record n, or exit 1 naming why there is none. */
static void find_record(mp_source *src, uint64_t n, mp_record *r, uint8_t **hold, uint64_t *mbi)
{
	mp_error e;
	int rc = mp_find_record(src, n, r, hold, mbi, &e);
	if (rc < 0)
		mp_errx(1, "%s", e.msg);
	if (rc == 0)
		mp_errx(1, "%s: no record %llu (the dataset holds %llu)", mp_source_name(src),
			(unsigned long long)n, (unsigned long long)mp_source_meta(src)->records);
}

static int show_record(mp_source *src, uint64_t n, int json)
{
	mp_record r;
	uint8_t *hold;
	uint64_t mbi;
	find_record(src, n, &r, &hold, &mbi);
	const mp_meta *m = mp_source_meta(src);
	const char *cn = class_name(m, r.label);
	uint32_t crc = mp_crc32(0, r.payload, r.payload_len);
	if (json) {
		cJSON *o = cJSON_CreateObject();
		char *name = strndup(r.name, r.name_len);
		cJSON_AddNumberToObject(o, "index", (double)n);
		cJSON_AddStringToObject(o, "name", name ? name : "");
		cJSON_AddNumberToObject(o, "label", r.label);
		if (cn)
			cJSON_AddStringToObject(o, "class", cn);
		cJSON_AddNumberToObject(o, "width", r.width);
		cJSON_AddNumberToObject(o, "height", r.height);
		cJSON_AddNumberToObject(o, "channels", r.channels);
		cJSON_AddStringToObject(o, "encoding", mp_encoding_name(r.encoding));
		cJSON_AddNumberToObject(o, "bytes", r.payload_len);
		cJSON_AddNumberToObject(o, "crc32", crc);
		cJSON_AddNumberToObject(o, "macrobatch", (double)mbi);
		print_json(o);
		free(name);
	} else {
		printf("record:      %llu\n", (unsigned long long)n);
		printf("name:        %.*s\n", (int)r.name_len, r.name);
		if (r.label < 0)
			printf("label:       none\n");
		else
			printf("label:       %d%s%s\n", r.label, cn ? " " : "", cn ? cn : "");
		printf("size:        %ux%ux%u\n", r.width, r.height, r.channels);
		printf("encoding:    %s\n", mp_encoding_name(r.encoding));
		printf("bytes:       %u\n", r.payload_len);
		printf("crc32:       %08x\n", crc);
		printf("macrobatch:  %llu\n", (unsigned long long)mbi);
	}
	free(hold);
	return 0;
}

enum { OUT_PNG, OUT_JPEG, OUT_PPM };

/* The image format --extract writes, from the file name; -1 if unknown. */
static int output_kind(const char *path)
{
	const char *dot = strrchr(path, '.');
	if (!strcmp(path, "-") || (dot && !strcasecmp(dot, ".png")))
		return OUT_PNG;
	if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")))
		return OUT_JPEG;
	if (dot && !strcasecmp(dot, ".ppm"))
		return OUT_PPM;
	return -1;
}

static int write_image(const mp_image *img, const char *path, mp_error *e)
{
	int kind = output_kind(path);
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;
	if (kind == OUT_JPEG) {
		mp_codec *c = mp_codec_new(e);
		if (!c)
			return -1;
		rc = mp_image_encode_jpeg(c, img, 95, &buf, &len, e);
		mp_codec_free(c);
	} else if (kind == OUT_PPM) {
		char head[64];
		int hl = snprintf(head, sizeof head, "P6\n%d %d\n255\n", img->width, img->height);
		len = (size_t)hl + (size_t)img->width * img->height * 3;
		buf = malloc(len);
		rc = buf ? 0 : mp_seterr(e, "out of memory");
		if (buf) {
			memcpy(buf, head, (size_t)hl);
			memcpy(buf + hl, img->px, len - (size_t)hl);
		}
	} else {
		rc = mp_image_encode_png(img, 6, &buf, &len, e);
	}
	if (rc < 0)
		return -1;
	if (!strcmp(path, "-")) {
		rc = fwrite(buf, 1, len, stdout) == len && fflush(stdout) == 0
			     ? 0 : mp_seterr(e, "<stdout>: write error: %s", strerror(errno));
	} else {
		rc = mp_write_output(path, buf, len, e);
	}
	free(buf);
	return rc;
}

static int extract(mp_source *src, uint64_t n, const char *out, uint64_t max_pixels)
{
	mp_error e;
	mp_record r;
	uint8_t *hold;
	uint64_t mbi;
	find_record(src, n, &r, &hold, &mbi);
	mp_codec *c = mp_codec_new(&e);
	if (!c)
		mp_errx(1, "%s", e.msg);
	mp_image img;
	if (mp_image_decode_payload(c, r.encoding, r.payload, r.payload_len, (int)r.width,
				    (int)r.height, max_pixels, &img, &e) < 0) {
		mp_warnx("%s: record %llu (%.*s): %s", mp_source_name(src),
			 (unsigned long long)n, (int)r.name_len, r.name, e.msg);
		mp_codec_free(c);
		free(hold); /* r.name lies in it */
		exit(1);
	}
	mp_codec_free(c);
	free(hold);
	if (write_image(&img, out, &e) < 0)
		mp_errx(1, "%s", e.msg);
	mp_image_free(&img);
	return 0;
}

/* ---- weights and checkpoints ------------------------------------------- */

static void read_weights(const char *path, mp_st_file *f)
{
	mp_error e;
	if (mp_weights_read(path, f, &e) < 0)
		mp_errx(1, "%s", e.msg);
}

/* The shortest of 15 to 17 significant digits that reads back as v. */
static void double_text(char *buf, size_t n, double v)
{
	for (int digits = 15; digits <= 17; digits++) {
		snprintf(buf, n, "%.*g", digits, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* A JSON number that reads back as exactly v; null when v is not finite.
 * cJSON prints 15 digits whenever they come within a rounding error of v,
 * and -0 as "-0", which readers take for the integer 0. */
static cJSON *json_number(double v)
{
	char buf[40];
	if (!isfinite(v))
		return cJSON_CreateNull();
	if (v == 0)
		return cJSON_CreateRaw(signbit(v) ? "-0.0" : "0");
	double_text(buf, sizeof buf, v);
	return cJSON_CreateRaw(buf);
}

static void add_number(cJSON *o, const char *key, double v)
{
	cJSON_AddItemToObject(o, key, json_number(v));
}

/* Element i of t as text that reads back exactly: integers in full, F64
 * with up to 17 digits, the narrower floats with 9; -1 for an integer,
 * 0 for a float. */
static int element_text(const mp_st_tensor *t, uint64_t i, char *buf, size_t n)
{
	switch (t->dtype) {
	case MP_ST_I64: {
		int64_t v;
		memcpy(&v, (const uint8_t *)t->data + i * 8, 8);
		snprintf(buf, n, "%" PRId64, v);
		return -1;
	}
	case MP_ST_I32: case MP_ST_I16: case MP_ST_I8: case MP_ST_U8: case MP_ST_BOOL:
		/* exact in a double */
		snprintf(buf, n, "%.0f", mp_st_element(t, i));
		return -1;
	case MP_ST_F64:
		double_text(buf, n, mp_st_element(t, i));
		return 0;
	default:
		snprintf(buf, n, "%.9g", mp_st_element(t, i));
		return 0;
	}
}

static void shape_text(const mp_st_tensor *t, char *buf, size_t n)
{
	mp_st_shape_str(t->shape, t->ndim, buf, n);
}

static int weights_summary(const char *path, int json)
{
	mp_st_file f;
	mp_error e;
	read_weights(path, &f);
	mp_resnet_config c;
	int is_resnet = mp_weights_config(&f, &c, &e) == 0;
	const char *fmt = mp_st_meta_get(&f, "format");
	if (!is_resnet && fmt && !strcmp(fmt, MP_WEIGHTS_FORMAT))
		mp_errx(1, "%s", e.msg);
	uint64_t scalars = 0, momentum = 0;
	for (size_t i = 0; i < f.ntensors; i++) {
		scalars += f.tensors[i].numel;
		if (!strncmp(f.tensors[i].name, "momentum.", 9))
			momentum++;
	}
	mp_backend *be = NULL;
	mp_resnet *net = NULL;
	if (is_resnet) {
		if (!(be = mp_backend_cpu_new(1)) || !(net = mp_resnet_new(&c, be, &e)))
			mp_errx(1, "%s: %s", path, be ? e.msg : "no CPU backend");
		if (mp_weights_load_into(net, &f, 0, &e) < 0)
			mp_errx(1, "%s", e.msg);
	}
	double flops = net ? mp_resnet_flops(net, c.input_size) : 0;
	uint64_t weights = net ? mp_resnet_num_weights(net) : 0;
	if (json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "file", path);
		cJSON_AddStringToObject(o, "kind", !is_resnet ? "safetensors"
						    : momentum ? "checkpoint" : "weights");
		cJSON_AddNumberToObject(o, "tensors", (double)f.ntensors);
		cJSON_AddNumberToObject(o, "scalars", (double)scalars);
		if (net) {
			cJSON_AddNumberToObject(o, "parameters", (double)weights);
			cJSON_AddNumberToObject(o, "flops_per_image", flops);
		}
		cJSON_AddBoolToObject(o, "crc32", f.has_crc);
		cJSON_AddBoolToObject(o, "header_crc32", f.has_header_crc);
		cJSON *m = cJSON_AddObjectToObject(o, "metadata");
		for (size_t i = 0; i < f.nmeta; i++)
			cJSON_AddStringToObject(m, f.meta[i].key, f.meta[i].value);
		print_json(o);
	} else {
		printf("file:         %s (%s)\n", path,
		       !is_resnet ? "safetensors" : momentum ? "mp-resnet checkpoint" : "mp-resnet weights");
		if (net) {
			printf("network:      ResNet, %d stages of %d blocks, widths", c.stages, c.depth);
			for (int s = 0; s < c.stages; s++)
				printf("%s%d", s ? "," : " ", c.widths[s]);
			printf(", shortcut %c\n", c.shortcut);
			printf("stem:         %dx%d conv, stride %d\n", c.stem_kernel, c.stem_kernel,
			       c.stem_stride);
			printf("head:         global average pool, fc %d%s\n", c.classes,
			       c.fc_bn ? " + BN" : "");
			printf("BN:           eps %g, momentum %g\n", (double)c.bn_eps,
			       (double)c.bn_momentum);
			printf("input:        %d px, mean %.4f %.4f %.4f\n", c.input_size, c.mean[0],
			       c.mean[1], c.mean[2]);
			printf("parameters:   %llu learned (%.2f M)\n", (unsigned long long)weights,
			       (double)weights / 1e6);
			const char *prefix;
			const double scaled = mp_giga_or_mega(flops, &prefix);
			printf("FLOPs:        %.3f %s per image at %d px (forward, 2 per multiply-add)\n",
			       scaled, prefix, c.input_size);
		}
		printf("tensors:      %zu (%llu scalars)%s\n", f.ntensors, (unsigned long long)scalars,
		       momentum ? ", with momentum" : "");
		printf("header CRC:   %s\n", f.has_header_crc ? "present, verified"
					       : "none (the header and metadata are not covered)");
		printf("data CRC:     %s\n", f.has_crc ? "present, verified" : "none");
		printf("metadata:\n");
		for (size_t i = 0; i < f.nmeta; i++)
			printf("  %s: %s\n", f.meta[i].key, f.meta[i].value);
	}
	mp_resnet_free(net);
	mp_backend_free(be);
	mp_st_free(&f);
	return 0;
}

static int weights_tensors(const char *path, int json)
{
	mp_st_file f;
	read_weights(path, &f);
	cJSON *arr = json ? cJSON_CreateArray() : NULL;
	if (!json)
		printf("name\tshape\tdtype\tmean\tstd\tmin\tmax\tl2\n");
	for (size_t i = 0; i < f.ntensors; i++) {
		const mp_st_tensor *t = &f.tensors[i];
		mp_tensor_stats st;
		char shape[128];
		mp_st_stats(t, &st);
		shape_text(t, shape, sizeof shape);
		if (json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", t->name);
			cJSON *sh = cJSON_AddArrayToObject(o, "shape");
			for (int d = 0; d < t->ndim; d++)
				cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[d]));
			cJSON_AddStringToObject(o, "dtype", mp_st_dtype_name(t->dtype));
			add_number(o, "mean", st.mean);
			add_number(o, "std", st.std);
			add_number(o, "min", st.min);
			add_number(o, "max", st.max);
			add_number(o, "l2", st.l2);
			cJSON_AddNumberToObject(o, "nonfinite", (double)st.nonfinite);
			cJSON_AddItemToArray(arr, o);
		} else {
			printf("%s\t%s\t%s\t", t->name, shape, mp_st_dtype_name(t->dtype));
			const double v[] = {st.mean, st.std, st.min, st.max};
			for (int k = 0; k < 4; k++) /* NaN: no finite element */
				if (isnan(v[k]))
					fputs("-\t", stdout);
				else
					printf("%.6g\t", v[k]);
			printf("%.6g%s\n", st.l2, st.nonfinite ? "\tNON-FINITE" : "");
		}
	}
	if (json)
		print_json(arr);
	mp_st_free(&f);
	return 0;
}

static int weights_dump(const char *path, const char *name, int json)
{
	mp_st_file f;
	read_weights(path, &f);
	const mp_st_tensor *t = mp_st_find(&f, name);
	if (!t)
		mp_errx(1, "%s: no tensor named %s", path, name);
	cJSON *arr = json ? cJSON_CreateArray() : NULL;
	for (uint64_t i = 0; i < t->numel; i++) {
		char text[40];
		int is_int = element_text(t, i, text, sizeof text) < 0;
		if (!json)
			printf("%s\n", text);
		else if (is_int)
			cJSON_AddItemToArray(arr, cJSON_CreateRaw(text));
		else
			cJSON_AddItemToArray(arr, json_number(mp_st_element(t, i)));
	}
	if (json)
		print_json(arr);
	mp_st_free(&f);
	return 0;
}

static int weights_diff(const char *a_path, const char *b_path, double tol, int json)
{
	mp_st_file a, b;
	read_weights(a_path, &a);
	read_weights(b_path, &b);
	int differ = 0;
	cJSON *arr = json ? cJSON_CreateArray() : NULL;
	if (!json)
		printf("name\tmax_abs\tmax_rel\tverdict\n");
	for (size_t i = 0; i < a.ntensors; i++) {
		const mp_st_tensor *ta = &a.tensors[i], *tb = mp_st_find(&b, ta->name);
		double d = 0, r = 0;
		const char *verdict;
		int compared = 0;
		if (!tb)
			verdict = "only in A";
		else if (mp_st_diff(ta, tb, &d, &r) < 0)
			verdict = "shapes differ";
		else {
			compared = 1;
			verdict = r <= tol ? (d == 0 ? "same" : "within tol") : "DIFFERENT";
		}
		differ |= !compared || !(r <= tol);
		if (json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", ta->name);
			if (compared) {
				add_number(o, "max_abs", d);
				add_number(o, "max_rel", r);
			}
			cJSON_AddStringToObject(o, "verdict", verdict);
			cJSON_AddItemToArray(arr, o);
		} else if (compared) {
			printf("%s\t%.3g\t%.3g\t%s\n", ta->name, d, r, verdict);
		} else {
			printf("%s\t-\t-\t%s\n", ta->name, verdict);
		}
	}
	for (size_t i = 0; i < b.ntensors; i++) {
		if (mp_st_find(&a, b.tensors[i].name))
			continue;
		differ = 1;
		if (json) {
			cJSON *o = cJSON_CreateObject();
			cJSON_AddStringToObject(o, "name", b.tensors[i].name);
			cJSON_AddStringToObject(o, "verdict", "only in B");
			cJSON_AddItemToArray(arr, o);
		} else {
			printf("%s\t-\t-\tonly in B\n", b.tensors[i].name);
		}
	}
	if (json)
		print_json(arr);
	else
		printf("%s: %s\n", differ ? "DIFFERENT" : "SAME",
		       differ ? "beyond the tolerance" : "every tensor within the tolerance");
	mp_st_free(&a);
	mp_st_free(&b);
	return differ ? 1 : 0;
}

/* Reading validates the file; loading into the network it describes checks
 * every name and shape against the architecture. */
static int weights_verify(const char *path, int json)
{
	mp_st_file f;
	mp_error e;
	mp_resnet_config c;
	int rc = 0;
	mp_backend *be = mp_backend_cpu_new(1);
	mp_resnet *net = NULL;
	if (!be)
		mp_errx(1, "no CPU backend");
	memset(&f, 0, sizeof f);
	if (mp_weights_read(path, &f, &e) < 0) {
		mp_warnx("%s", e.msg);
		rc = 1;
	} else if (mp_weights_config(&f, &c, &e) < 0 || !(net = mp_resnet_new(&c, be, &e)) ||
		   mp_weights_load_into(net, &f, 0, &e) < 0) {
		mp_warnx("%s", e.msg);
		rc = 1;
	}
	/* What a file without a CRC leaves unchecked is said plainly: damage
	 * to a version 1 file's metadata (the mean, bn_eps) passes unseen. */
	const char *note = "";
	if (!f.has_header_crc && f.has_crc)
		note = " (format_version 1: the header and metadata are not covered by a CRC)";
	else if (!f.has_header_crc)
		note = " (the file has no CRC: neither the header and metadata nor the data "
		       "are covered)";
	else if (!f.has_crc)
		note = " (the file has no data CRC)";
	if (json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "file", path);
		cJSON_AddBoolToObject(o, "ok", rc == 0);
		cJSON_AddBoolToObject(o, "header_crc32", f.has_header_crc);
		cJSON_AddBoolToObject(o, "crc32", f.has_crc);
		print_json(o);
	} else if (rc) {
		printf("%s: FAILED\n", path);
	} else {
		printf("%s: OK: header%s, %snames and shapes%s\n", path,
		       f.has_header_crc ? " CRC" : "", f.has_crc ? "data CRC, " : "", note);
	}
	mp_resnet_free(net);
	mp_backend_free(be);
	mp_st_free(&f);
	return rc;
}

int main(int argc, char **argv)
{
	mp_guard_std_fds();
	mp_set_progname(argv[0]);
	mp_writes_fail_past_size_limit();
	argv[0] = (char *)mp_progname; /* getopt's messages then name us as ours do */
	int json = 0, do_verify = 0, do_list = 0, do_tensors = 0, do_diff = 0, c;
	const char *dump = NULL;
	double tol = 0;
	int tol_given = 0;
	long record = -1, extract_n = -1, max_pixels = 1L << 26;
	const char *out = NULL;
	while ((c = getopt_long(argc, argv, "o:hV", long_opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case OPT_VERIFY: do_verify = 1; break;
		case OPT_LIST: do_list = 1; break;
		case OPT_RECORD: bad = mp_parse_long("--record", optarg, 0, LONG_MAX, &record); break;
		case OPT_EXTRACT:
			bad = mp_parse_long("--extract", optarg, 0, LONG_MAX, &extract_n);
			break;
		case 'o': bad = mp_parse_path("--output", optarg, &out); break;
		case OPT_JSON: json = 1; break;
		case OPT_TENSORS: do_tensors = 1; break;
		case OPT_DUMP:
			if (!*optarg) {
				mp_warnx("--dump: the tensor name is empty");
				bad = 1;
			}
			dump = optarg;
			break;
		case OPT_DIFF: do_diff = 1; break;
		case OPT_TOL:
			bad = mp_parse_double("--tol", optarg, 0, 1e300, &tol);
			tol_given = 1;
			break;
		case OPT_MAX_PIXELS:
			bad = mp_parse_long("--max-pixels", optarg, 1, 1L << 40, &max_pixels);
			break;
		case 'h': help(); break;
		case 'V': mp_print_version(); mp_exit_stdout(0);
		default: usage();
		}
		if (bad)
			usage();
	}
	argc -= optind;
	argv += optind;
	for (int i = 0; i < argc; i++) {
		const char *unused;
		if (mp_parse_path("DATASET or WEIGHTS", argv[i], &unused) < 0)
			return 2;
	}
	int dataset_opts = do_list + (record >= 0) + (extract_n >= 0);
	/* even --tol 0, the default: it asks for a comparison that is not made */
	if (tol_given && !do_diff) {
		mp_warnx("--tol is for --diff");
		usage();
	}
	/* every mode but --diff reads one file: said before what the file is,
	 * which a second one would make a guess */
	if (!do_diff && argc != 1) {
		const char *what = do_tensors || dump ? "WEIGHTS"
				   : dataset_opts   ? "DATASET"
						    : "DATASET or WEIGHTS";
		mp_warnx(argc ? "expected one %s" : "missing %s", what);
		usage();
	}
	if (do_diff) {
		if (argc != 2 || do_verify || dataset_opts || do_tensors || dump || out) {
			mp_warnx("--diff takes two weights files and no other mode");
			usage();
		}
		/* as for --tensors: a file that opens but is no weights file
		 * (a dataset, say) is the wrong request; one that does not open
		 * is bad input, which weights_diff reports */
		for (int i = 0; i < 2; i++) {
			if (!strcmp(argv[i], "-")) {
				mp_warnx("--diff takes two weights files: weights cannot be read "
					 "from standard input");
				usage();
			}
			int fd = open(argv[i], O_RDONLY);
			if (fd < 0)
				continue;
			close(fd);
			if (!mp_st_sniff(argv[i])) {
				mp_warnx("--diff takes two weights files: %s is not one", argv[i]);
				usage();
			}
		}
		/* the table is the answer: one that did not reach stdout fails */
		mp_exit_stdout(weights_diff(argv[0], argv[1], tol, json));
	}
	if (do_tensors + (dump != NULL) + do_verify + dataset_opts > 1) {
		mp_warnx("--verify, --list, --record, --extract, --tensors and --dump exclude each other");
		usage();
	}
	if (out && extract_n < 0) {
		mp_warnx("-o is for --extract");
		usage();
	}
	if (strcmp(argv[0], "-") && mp_st_sniff(argv[0])) {
		if (dataset_opts) {
			mp_warnx("%s is a weights file: --list, --record and --extract are for datasets",
				 argv[0]);
			usage();
		}
		int wrc = do_tensors ? weights_tensors(argv[0], json)
			  : dump     ? weights_dump(argv[0], dump, json)
			  : do_verify ? weights_verify(argv[0], json)
				      : weights_summary(argv[0], json);
		/* a failed write may have been an earlier one, its buffer gone */
		mp_exit_stdout(wrc);
	}
	if (do_tensors || dump) {
		/* A file that cannot be opened is bad input, as in every other
		 * mode; a readable one that is no weights file is the wrong
		 * mode. */
		if (strcmp(argv[0], "-")) {
			int fd = open(argv[0], O_RDONLY);
			char why[600];
			if (fd < 0)
				mp_errx(1, "%s: %s", argv[0],
					mp_open_error(argv[0], errno, why, sizeof why));
			close(fd);
		}
		mp_warnx("%s is not a weights file: --tensors and --dump are for weights files",
			 strcmp(argv[0], "-") ? argv[0] : "<stdin>");
		usage();
	}
	if (do_verify + do_list + (record >= 0) + (extract_n >= 0) > 1) {
		mp_warnx("--verify, --list, --record and --extract exclude each other");
		usage();
	}
	if (extract_n >= 0 && !out) {
		mp_warnx("--extract needs -o FILE");
		usage();
	}
	if (json && extract_n >= 0) {
		mp_warnx("--json does not apply to --extract, which writes an image");
		usage();
	}
	if (out && output_kind(out) < 0) {
		mp_warnx("-o %s: name it .png, .jpg, .jpeg or .ppm (or - for PNG on stdout)", out);
		usage();
	}
	/* the rename would put the image where the dataset was */
	if (out && strcmp(out, "-") && strcmp(argv[0], "-") && mp_same_file(out, argv[0])) {
		mp_warnx("-o %s: that is the dataset, which it would replace", out);
		usage();
	}
	if (out && !strcmp(out, "-") && isatty(STDOUT_FILENO)) {
		mp_warnx("refusing to write a binary PNG to a terminal: give -o FILE or redirect stdout");
		usage();
	}
	if (!strcmp(argv[0], "-") && isatty(STDIN_FILENO)) {
		mp_warnx("refusing to read a binary stream from a terminal: redirect stdin "
			 "or give a file");
		usage();
	}
	if (do_verify)
		mp_exit_stdout(verify(argv[0], (uint64_t)max_pixels, json));
	mp_error e;
	mp_source *src = mp_source_open(argv[0], &e);
	if (!src)
		mp_errx(1, "%s", e.msg);
	int rc;
	if (do_list)
		rc = list_records(src, json);
	else if (record >= 0)
		rc = show_record(src, (uint64_t)record, json);
	else if (extract_n >= 0) {
		/* a signal while the image is written leaves no FILE.tmp-PID */
		mp_tmp_on_signals();
		rc = extract(src, (uint64_t)extract_n, out, (uint64_t)max_pixels);
	}
	else
		rc = summary(src, json);
	mp_source_close(src);
	mp_exit_stdout(rc);
}
