#include "mp_eval.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_augment.h"
#include "mp_backends.h"
#include "mp_dataset.h"
#include "mp_image.h"
#include "mp_list.h"
#include "mp_macrobatch.h"
#include "mp_metrics.h"
#include "mp_weights.h"

/* as mp-batchwriter's, so that a list it packs is a list mp-eval reads */
#define MAX_FILE_BYTES ((size_t)1 << 30)

void mp_eval_opts_default(mp_eval_opts *o)
{
	memset(o, 0, sizeof *o);
	o->crops = MP_CROPS_FULL;
	o->combine = MP_COMBINE_PROB;
	o->topk = 5;
	o->batch = 0; /* 16 on the CPU, 128 on a GPU */
	o->backend = "cpu";
	o->device = -1;
	o->precision = "auto";
}

/* ---- reading records in order, from a DB, a stream or a list ---------------- */

typedef struct {
	char *name;
	int label;		/* -1: none */
	int encoding, width, height; /* a record's; a file's are those it decodes to */
	int is_file;		/* read from a list: bytes are the whole file */
	uint8_t *bytes;		/* owned copy of the payload or file */
	size_t len;
	uint64_t index;		/* position in the input, from 0 */
	long line;		/* list line, or 0 */
} item;

typedef struct {
	int is_list;
	/* dataset */
	mp_source *src;
	mp_macrobatch mb;
	int have_mb;
	uint32_t pos;
	/* list */
	mp_list list;
	size_t next;
	const char *list_name, *root;
	uint64_t count;
} reader;

static void item_clear(item *it)
{
	free(it->name);
	free(it->bytes);
	memset(it, 0, sizeof *it);
}

typedef struct {
	const char *what, *path;
} named_path;

enum { NOUTPUTS = 4 };

static void output_paths(const mp_eval_opts *o, named_path outs[NOUTPUTS])
{
	outs[0] = (named_path){"--probs", o->probs_path};
	outs[1] = (named_path){"--submission", o->submission_path};
	outs[2] = (named_path){"--per-class", o->per_class_path};
	outs[3] = (named_path){"--confusion", o->confusion_path};
}

/* A listed image's path: the list's root, if any, before it. */
static int list_path(const reader *r, const mp_list_entry *en, char *path, size_t size,
		     mp_error *e)
{
	const char *root = mp_list_root(r->root, en->path);
	int n = snprintf(path, size, "%s%s%s", root, *root ? "/" : "", en->path);
	if (n < 0 || (size_t)n >= size)
		return mp_seterr(e, "%s%s%s (%s line %ld): path too long", root, *root ? "/" : "",
				 en->path, r->list_name, en->line);
	return 0;
}

/* The same for the images a list names, which only the list knows: the
 * listed paths are looked up only when an output already exists. */
static int check_outputs_not_listed(const mp_eval_opts *o, const reader *r, mp_error *e)
{
	named_path outs[NOUTPUTS];
	output_paths(o, outs);
	struct stat out_st[NOUTPUTS];
	int existing = 0;
	for (int i = 0; i < NOUTPUTS; i++) {
		int exists = outs[i].path && strcmp(outs[i].path, "-") &&
			     stat(outs[i].path, &out_st[i]) == 0;
		if (!exists)
			outs[i].path = NULL;
		existing += exists;
	}
	for (size_t k = 0; existing && k < r->list.count; k++) {
		const mp_list_entry *en = &r->list.items[k];
		char path[4096];
		struct stat st;
		mp_error pe;
		if (list_path(r, en, path, sizeof path, &pe) < 0 || stat(path, &st) < 0)
			continue; // reported when it is read
		for (int i = 0; i < NOUTPUTS; i++)
			if (outs[i].path && st.st_dev == out_st[i].st_dev &&
			    st.st_ino == out_st[i].st_ino)
				return mp_seterr(e, "%s %s: that is %s line %ld's image, which it would replace",
						 outs[i].what, outs[i].path, r->list_name, en->line);
	}
	return 0;
}

static int reader_next(reader *r, item *it, mp_error *e)
{
	item_clear(it);
	it->index = r->count;
	if (r->is_list) {
		if (r->next >= r->list.count)
			return 0;
		const mp_list_entry *en = &r->list.items[r->next++];
		char path[4096];
		if (list_path(r, en, path, sizeof path, e) < 0)
			return -1;
		mp_error fe;
		if (mp_read_file(path, MAX_FILE_BYTES, &it->bytes, &it->len, &fe) < 0)
			return mp_seterr(e, "%s (%s line %ld): %s%s", path, r->list_name, en->line,
					 fe.msg,
					 mp_list_missing_hint(r->root, en->path, path));
		it->encoding = mp_image_sniff(it->bytes, it->len);
		if (it->encoding < 0)
			return mp_seterr(e, "%s (%s line %ld): not a JPEG or PNG file", path,
					 r->list_name, en->line);
		it->name = mp_xstrdup(en->path);
		it->label = en->label;
		it->line = en->line;
		it->is_file = 1;
		r->count++;
		return 1;
	}
	while (!r->have_mb || r->pos >= r->mb.count) {
		if (r->have_mb) {
			mp_mb_free(&r->mb);
			r->have_mb = 0;
		}
		const uint8_t *buf;
		size_t len;
		int rc = mp_source_next(r->src, &buf, &len, e);
		if (rc < 0)
			return rc;
		/* every record, each where it belongs: a count or an order
		 * the dataset does not say would put the results beside other
		 * names, or leave records out unseen */
		const mp_meta *m = mp_source_meta(r->src);
		if (rc == 0 && m->records != r->count)
			return mp_source_is_stream(r->src)
				       ? mp_seterr(e, "%s: end frame counts %llu records, stream held %llu",
						   mp_source_name(r->src),
						   (unsigned long long)m->records,
						   (unsigned long long)r->count)
				       : mp_seterr(e, "%s: %llu records read, the meta says %llu",
						   mp_source_name(r->src),
						   (unsigned long long)r->count,
						   (unsigned long long)m->records);
		if (rc == 0)
			return 0;
		mp_error pe;
		if (mp_mb_parse(buf, len, &r->mb, &pe) < 0)
			return mp_seterr(e, "%s: macrobatch %llu: %s", mp_source_name(r->src),
					 (unsigned long long)mp_source_index(r->src), pe.msg);
		if (r->mb.first_record != r->count) {
			mp_seterr(e, "%s: macrobatch %llu starts at record %llu, and %llu records "
				     "come before it",
				  mp_source_name(r->src), (unsigned long long)mp_source_index(r->src),
				  (unsigned long long)r->mb.first_record,
				  (unsigned long long)r->count);
			mp_mb_free(&r->mb);
			return -1;
		}
		r->have_mb = 1;
		r->pos = 0;
	}
	const mp_record *rec = &r->mb.records[r->pos++];
	it->name = mp_xmalloc(rec->name_len + 1);
	memcpy(it->name, rec->name, rec->name_len);
	it->name[rec->name_len] = '\0';
	it->label = rec->label;
	it->encoding = rec->encoding;
	it->width = (int)rec->width;
	it->height = (int)rec->height;
	it->bytes = mp_xmalloc(rec->payload_len ? rec->payload_len : 1);
	memcpy(it->bytes, rec->payload, rec->payload_len);
	it->len = rec->payload_len;
	r->count++;
	return 1;
}

static int reader_open(reader *r, const mp_eval_opts *o, int classes, mp_error *e)
{
	memset(r, 0, sizeof *r);
	if (o->list) {
		r->is_list = 1;
		const int from_stdin = !strcmp(o->list, "-");
		r->list_name = from_stdin ? "<stdin>" : o->list; // as mp-batchwriter names it
		r->root = o->root;
		FILE *f = from_stdin ? stdin : fopen(o->list, "r");
		char why[600];
		if (!f)
			return mp_seterr(e, "%s: %s", o->list,
					 mp_open_error(o->list, errno, why, sizeof why));
		int rc = mp_list_read(f, r->list_name, classes, &r->list, e);
		if (f != stdin)
			fclose(f);
		if (rc == 0 && mp_list_warn_duplicates(&r->list, r->list_name, "scored") < 0)
			return mp_seterr(e, "%s: out of memory", r->list_name);
		return rc;
	}
	r->src = mp_source_open(o->data, e);
	return r->src ? 0 : -1;
}

static void reader_close(reader *r)
{
	if (r->have_mb)
		mp_mb_free(&r->mb);
	mp_source_close(r->src);
	if (r->is_list)
		mp_list_free(&r->list);
}

static int reader_labelled(const reader *r)
{
	return r->is_list ? r->list.labelled : mp_source_meta(r->src)->labelled;
}

static const char *reader_name(const reader *r)
{
	return r->is_list ? r->list_name : mp_source_name(r->src);
}

/* ---- views ----------------------------------------------------------------- */

typedef struct {
	int x, y, size, flip;
} view;

/* The views of one scale s for a network trained at c pixels. */
static int make_views(int s, int c, int crops, int flip, view *v)
{
	int n = 0;
	if (crops == MP_CROPS_FULL) {
		v[n++] = (view){0, 0, s, 0};
	} else {
		int m = (s - c) / 2;
		if (crops == MP_CROPS_CENTER) {
			v[n++] = (view){m, m, c, 0};
		} else {
			v[n++] = (view){0, 0, c, 0};
			v[n++] = (view){s - c, 0, c, 0};
			v[n++] = (view){0, s - c, c, 0};
			v[n++] = (view){s - c, s - c, c, 0};
			v[n++] = (view){m, m, c, 0};
		}
		if (crops == MP_CROPS_10)
			flip = 1;
	}
	if (flip)
		for (int i = 0, k = n; i < k; i++) {
			v[n] = v[i];
			v[n++].flip = 1;
		}
	return n;
}

/* Cuts view v out of an s x s CHW image. */
static void cut_view(const float *base, int s, const view *v, float *out)
{
	for (int ch = 0; ch < 3; ch++)
		for (int y = 0; y < v->size; y++) {
			const float *row = base + ((size_t)ch * s + v->y + y) * s + v->x;
			float *dst = out + ((size_t)ch * v->size + y) * v->size;
			if (v->flip)
				for (int x = 0; x < v->size; x++)
					dst[x] = row[v->size - 1 - x];
			else
				memcpy(dst, row, sizeof(float) * (size_t)v->size);
		}
}

static int dump_view(const char *dir, uint64_t image, int scale, int k, const float *px,
		     int size, const double mean[3], mp_error *e)
{
	mp_image img;
	if (mp_image_alloc(&img, size, size, e) < 0)
		return -1;
	for (int y = 0; y < size; y++)
		for (int x = 0; x < size; x++)
			for (int ch = 0; ch < 3; ch++) {
				double v = px[((size_t)ch * size + y) * size + x] + mean[ch];
				v = v < 0 ? 0 : v > 255 ? 255 : v;
				img.px[((size_t)y * size + x) * 3 + ch] = (uint8_t)lrint(v);
			}
	uint8_t *buf;
	size_t len;
	char path[4096];
	int rc = -1;
	if (snprintf(path, sizeof path, "%s/%06llu-s%d-v%d.png", dir, (unsigned long long)image,
		     scale, k) >= (int)sizeof path) {
		mp_seterr(e, "%s: path too long", dir);
	} else if (mp_image_encode_png(&img, 6, &buf, &len, e) == 0) {
		rc = mp_write_file_atomic(path, buf, len, e);
		free(buf);
	}
	mp_image_free(&img);
	return rc;
}

/* ---- numbers --------------------------------------------------------------------- */

static void softmax(const double *x, int n, double *out)
{
	double m = x[0], sum = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > m)
			m = x[i];
	for (int i = 0; i < n; i++)
		sum += out[i] = exp(x[i] - m);
	for (int i = 0; i < n; i++)
		out[i] /= sum;
}

/* mp_rank_of on doubles: the probabilities stay in double to the end. */
static int rank_of(const double *p, int classes, int label)
{
	int rank = 0;
	for (int j = 0; j < classes; j++)
		if (j != label && (p[j] > p[label] || (p[j] == p[label] && j < label)))
			rank++;
	return rank;
}

/* The k best classes, best first; equal probabilities rank by index. */
static void top_k(const double *p, int classes, int k, int *out)
{
	int n = 0;
	for (int j = 0; j < classes; j++) {
		if (n == k && !(p[j] > p[out[k - 1]]))
			continue;
		int i = n < k ? n++ : k - 1;
		while (i > 0 && p[j] > p[out[i - 1]]) {
			out[i] = out[i - 1];
			i--;
		}
		out[i] = j;
	}
}

/* ---- the run --------------------------------------------------------------------- */

typedef struct {
	char *name;
	size_t seq; /* the input order */
	int labels[16];
} submission_row;

/* By name, and a name listed twice in input order: qsort is not stable. */
static int cmp_rows(const void *a, const void *b)
{
	const submission_row *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/* An output file is written under a temporary name beside it and renamed
 * into place when complete, so that a failed run leaves no partial file
 * under the name asked for. "-" is standard output, and so is the file it
 * is open on under another name (/dev/stdout; mp_names_stdout), and
 * the file standard error is redirected to is written through it; a path
 * that exists and is not a regular file (/dev/null, a FIFO) is written in
 * place; a symbolic link is followed, so that the file it names is
 * replaced and the link stays. */
typedef struct {
	const char *path;	/* as given, for messages */
	char *target;		/* path with its links followed: what is replaced */
	char *tmp;		/* NULL when written in place */
	FILE *f;
} outfile;

static int out_open(outfile *of, const char *path, mp_error *e)
{
	struct stat st;
	memset(of, 0, sizeof *of);
	of->path = path;
	if (mp_names_stdout(path)) {
		of->path = "<stdout>"; // the name its messages give it
		of->f = stdout;
		return 0;
	}
	/* replaced, the file standard error is redirected to would lose the
	 * messages before and after: the rows are written among them */
	if (mp_names_fd(path, STDERR_FILENO)) {
		/* a stream of its own, buffered, at the offset stderr shares */
		int fd = dup(STDERR_FILENO);
		if (fd < 0 || !(of->f = fdopen(fd, "w"))) {
			int err = errno;
			if (fd >= 0)
				close(fd);
			return mp_seterr(e, "%s: %s", path, strerror(err));
		}
		return 0;
	}
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (!(of->f = fopen(path, "w")))
			return mp_seterr(e, "%s: %s", path, strerror(errno));
		return 0;
	}
	char target[PATH_MAX];
	if (mp_follow_links(path, target, sizeof target, e) < 0)
		return -1;
	of->target = mp_xstrdup(target);
	size_t n = strlen(target) + 40;
	of->tmp = mp_xmalloc(n);
	snprintf(of->tmp, n, "%s.partial-%ld", target, (long)getpid());
	/* those of an earlier run killed outright, which no handler removed */
	mp_remove_stale_files(target, ".partial-");
	/* before it exists, so that no signal can leave it behind */
	mp_tmp_add(of->tmp);
	if (!(of->f = fopen(of->tmp, "w"))) {
		int err = errno;
		mp_tmp_remove(of->tmp);
		free(of->tmp);
		of->tmp = NULL;
		return mp_seterr(e, "%s: %s", path, strerror(err));
	}
	/* a file replaced keeps its permissions (one made private stays so);
	 * a new one has the umask's */
	struct stat old;
	if (stat(target, &old) == 0 && S_ISREG(old.st_mode))
		(void)fchmod(fileno(of->f), old.st_mode & 07777);
	return 0;
}

static void out_free(outfile *of)
{
	free(of->tmp);
	free(of->target);
	of->tmp = of->target = NULL;
}

/* Flushes and closes; on failure the temporary file is gone. The file
 * is renamed into place by out_rename once every output is written, so
 * that a failed run replaces none of them (standard output aside). */
static int out_close(outfile *of, mp_error *e)
{
	if (!of->f)
		return 0;
	int bad = ferror(of->f) | (fflush(of->f) != 0);
	int err = bad ? (errno ? errno : EIO) : 0;
	/* on the disk before the rename: a machine that stops after it must
	 * not leave an empty or short file in place of an earlier whole one */
	if (!bad && of->tmp && fsync(fileno(of->f)) != 0) {
		bad = 1;
		err = errno;
	}
	if (of->f != stdout && fclose(of->f) != 0 && !bad) {
		bad = 1;
		err = errno;
	}
	of->f = NULL;
	if (!bad)
		return 0;
	mp_seterr(e, "%s: %s", of->path, strerror(err));
	if (of->tmp) {
		unlink(of->tmp);
		mp_tmp_remove(of->tmp);
	}
	out_free(of);
	return -1;
}

/* Renames a closed output into place; on failure the file is gone. */
static int out_rename(outfile *of, mp_error *e)
{
	if (!of->tmp)
		return 0;
	int bad = rename(of->tmp, of->target) != 0, err = errno;
	if (bad)
		unlink(of->tmp);
	else
		mp_sync_parent_dir(of->target);
	mp_tmp_remove(of->tmp);
	out_free(of);
	return bad ? mp_seterr(e, "%s: %s", of->path, strerror(err)) : 0;
}

/* A write to the output failed (a stdio call returned EOF or less than
 * 0): the run stops at once, naming the file. What its stream still
 * holds is dropped, so that neither the close nor the exit writes to it
 * again. */
static int out_failed(outfile *of, mp_error *e)
{
	int err = errno ? errno : EIO;
	__fpurge(of->f);
	return mp_seterr(e, "%s: %s", of->path, strerror(err));
}

/* After a failure: closes and removes the temporary file, without
 * writing what its stream still holds to a file about to go. */
static void out_abort(outfile *of)
{
	if (of->f && of->tmp)
		__fpurge(of->f);
	if (of->f && of->f != stdout)
		fclose(of->f);
	if (of->tmp) {
		unlink(of->tmp);
		mp_tmp_remove(of->tmp);
	}
	out_free(of);
	memset(of, 0, sizeof *of);
}

/* --probs, a row as each image is evaluated; EOF at the first write that
 * fails, after which nothing more is written to it. */
static int put_probs_header(FILE *f, int classes)
{
	if (fputs("name\tlabel", f) == EOF)
		return EOF;
	for (int j = 0; j < classes; j++)
		if (fprintf(f, "\tp%d", j) < 0)
			return EOF;
	return putc('\n', f) == EOF ? EOF : 0;
}

static int put_probs_row(FILE *f, const item *it, int labelled, const double *p, int classes)
{
	if (mp_put_tsv_field(f, it->name, strlen(it->name)) == EOF ||
	    (labelled ? fprintf(f, "\t%d", it->label) : fputs("\t-", f)) < 0)
		return EOF;
	for (int j = 0; j < classes; j++)
		if (fprintf(f, "\t%.9g", p[j]) < 0)
			return EOF;
	return putc('\n', f) == EOF ? EOF : 0;
}

typedef struct {
	const mp_eval_opts *o;
	mp_eval_result *r;
	mp_backend *be;
	/* one network for every view size: evaluation reshapes its buffers
	 * in place when they are large enough, so alternating sizes
	 * reallocate nothing after the largest has been seen */
	mp_resnet *net;
	mp_st_file file;
	reader rd;
	int classes, size, nthreads, k;
	int batch;		/* images per pass: --batch, or the backend's default */
	int ahead;		/* the next batch is prepared while this one is evaluated */
	double mean[3];
	char **class_names;
	/* per scale, then combined: counts of correct answers */
	double correct1[MP_EVAL_MAX_SCALES + 1], correctk[MP_EVAL_MAX_SCALES + 1];
	uint64_t *class_images, *class_correct1, *class_correctk, *confusion;
	outfile probs;
	outfile tables[3]; /* --submission, --per-class, --confusion */
	submission_row *rows;
	size_t nrows, caprows;
	int made_views;		/* --dump-views did not exist: made by setup */
} evaluator;

static void class_names_from_weights(evaluator *ev)
{
	const char *v = mp_st_meta_get(&ev->file, "class_names");
	cJSON *a = v ? cJSON_Parse(v) : NULL;
	if (cJSON_IsArray(a) && cJSON_GetArraySize(a) == ev->classes) {
		ev->class_names = mp_xcalloc((size_t)ev->classes, sizeof *ev->class_names);
		for (int i = 0; i < ev->classes; i++) {
			cJSON *s = cJSON_GetArrayItem(a, i);
			ev->class_names[i] = mp_xstrdup(cJSON_IsString(s) ? s->valuestring : "");
		}
	}
	cJSON_Delete(a);
}

/* ---- reading and decoding the next batch while this one is evaluated ------ */

/* One batch of records read, decoded and resized to every scale, in
 * input order. */
typedef struct {
	item *items;
	float *base;		/* per scale si, at scale_offset[si]: n CHW images */
	int cap;		/* images base has room for */
	size_t scale_offset[MP_EVAL_MAX_SCALES];
	int n;
	int end;		/* the input ended with this batch */
	int rc;			/* 0, or -1 with the reason in e */
	mp_error e;
} batch;

/* 3 s x s floats for every scale s of an image. */
static size_t floats_per_image(const mp_eval_result *r)
{
	size_t f = 0;
	for (int si = 0; si < r->nscales; si++)
		f += 3 * (size_t)r->scale[si].size * r->scale[si].size;
	return f;
}

static void batch_init(batch *b, int size)
{
	memset(b, 0, sizeof *b);
	b->items = mp_xcalloc((size_t)size, sizeof *b->items);
}

/* Room for the pixels of n images, taken as the images come: a --batch
 * larger than the input holds no memory it would never fill. */
static int batch_reserve(batch *b, int n, const mp_eval_result *r, mp_error *e)
{
	if (n <= b->cap)
		return 0;
	free(b->base);
	b->cap = 0;
	if (!(b->base = malloc(sizeof(float) * floats_per_image(r) * (size_t)n)))
		return mp_seterr(e, "out of memory for a batch of %d images at %d scale%s (--batch)",
				 n, r->nscales, r->nscales == 1 ? "" : "s");
	b->cap = n;
	return 0;
}

static void batch_clear(batch *b, int size)
{
	for (int i = 0; i < size; i++)
		item_clear(&b->items[i]);
	b->n = 0;
}

static void batch_free(batch *b, int size)
{
	if (!b->items)
		return;
	batch_clear(b, size);
	free(b->items);
	free(b->base);
}

/* Reads up to ev->batch records, decodes them and resizes them to every
 * scale with ev->nthreads threads. The only code that touches the reader
 * and the codecs, so it can run beside process(), which has the network. */
static void prepare(evaluator *ev, batch *b, mp_codec **codecs)
{
	const int C = ev->classes;
	mp_error *e = &b->e;
	int n = 0, rc = 0;
	b->rc = -1;
	batch_clear(b, ev->batch);
	mp_error read_err;
	while (n < ev->batch && (rc = reader_next(&ev->rd, &b->items[n], &read_err)) == 1)
		n++;
	b->n = n;
	b->end = rc == 0;
	if (batch_reserve(b, n, ev->r, e) < 0)
		return;
	item *items = b->items;
	/* labels first: a wrong one is reported before any work */
	for (int i = 0; ev->r->labelled && i < n; i++)
		if (items[i].label < 0 || items[i].label >= C) {
			mp_seterr(e, "%s: record %llu (%s) has label %d, outside 0..%d",
				  reader_name(&ev->rd), (unsigned long long)items[i].index,
				  items[i].name, items[i].label, C - 1);
			return;
		}
	/* a submission line is the name and the labels, space-separated */
	for (int i = 0; ev->o->submission_path && i < n; i++)
		if (strpbrk(items[i].name, " \t\n\r")) {
			if (items[i].is_file)
				mp_seterr(e, "%s line %ld: \"%s\" has a blank, which a --submission line "
					  "(the name, then the labels, space-separated) cannot hold",
					  reader_name(&ev->rd), items[i].line, items[i].name);
			else
				mp_seterr(e, "%s: record %llu: \"%s\" has a blank, which a --submission "
					  "line (the name, then the labels, space-separated) cannot hold",
					  reader_name(&ev->rd), (unsigned long long)items[i].index,
					  items[i].name);
			return;
		}
	/* every scale of every image: what the network's pass waits for
	 * is then only cutting the views */
	const int S = ev->r->nscales;
	size_t off = 0;
	for (int si = 0; si < S; si++) {
		b->scale_offset[si] = off;
		off += 3 * (size_t)ev->r->scale[si].size * ev->r->scale[si].size * (size_t)n;
	}
	/* Each image is decoded, resized to every scale and freed, with its
	 * file, in one step: a batch of 128 photos of 12 megapixels would
	 * otherwise hold 4.6 GB of pixels at once, twice over when the next
	 * batch is prepared ahead. The records before one that could not be
	 * read are decoded first, so that the first bad one in input order is
	 * named. */
	mp_error *errs = mp_xcalloc((size_t)n ? (size_t)n : 1, sizeof *errs);
	int *failed = mp_xcalloc((size_t)n ? (size_t)n : 1, sizeof *failed);
	const uint64_t max_pixels = ev->o->max_pixels ? ev->o->max_pixels : MP_EVAL_MAX_PIXELS;
#pragma omp parallel for num_threads(ev->nthreads) schedule(dynamic)
	for (int i = 0; i < n; i++) {
		mp_codec *cd = codecs[omp_get_thread_num()];
		mp_image img_ = {0}, *img = &img_;
		int rc = items[i].is_file
			? mp_image_decode(cd, items[i].bytes, items[i].len, max_pixels, img,
					  &errs[i])
			: mp_image_decode_payload(cd, items[i].encoding, items[i].bytes,
						  items[i].len, items[i].width, items[i].height,
						  max_pixels, img, &errs[i]);
		free(items[i].bytes);
		items[i].bytes = NULL;
		for (int si = 0; rc == 0 && si < S; si++) {
			const int sz = ev->r->scale[si].size;
			float *out = b->base + b->scale_offset[si] + 3 * (size_t)sz * sz * (size_t)i;
			rc = mp_augment_eval(img, sz, ev->mean, out, &errs[i]);
		}
		mp_image_free(img);
		if (rc < 0)
			failed[i] = 1;
	}
	int i = 0;
	while (i < n && !failed[i])
		i++;
	if (i < n) {
		if (items[i].is_file) {
			const char *root = mp_list_root(ev->rd.root, items[i].name);
			mp_seterr(e, "%s%s%s (%s line %ld): %s", root, *root ? "/" : "",
				  items[i].name, reader_name(&ev->rd), items[i].line, errs[i].msg);
		} else
			mp_seterr(e, "%s: record %llu (%s): %s", reader_name(&ev->rd),
				  (unsigned long long)items[i].index, items[i].name, errs[i].msg);
	} else if (rc < 0) {
		*e = read_err;
	} else {
		b->rc = 0;
	}
	free(errs);
	free(failed);
}

typedef struct {
	evaluator *ev;
	batch *b;
	mp_codec **codecs;
} prepare_job;

static void *prepare_thread(void *arg)
{
	prepare_job *j = arg;
	prepare(j->ev, j->b, j->codecs);
	return NULL;
}

/* ---- evaluating a batch ------------------------------------------------------ */

/* The first logit of the batch that is not a finite number, as an error that
 * names its image: NaN compares false against everything, so its image
 * would rank its label first and count as correct, and a diverged network
 * would score no error at all. */
static int check_logits(const evaluator *ev, const batch *b, const float *logits, int scale,
			int view, mp_error *e)
{
	const int C = ev->classes;
	for (int i = 0; i < b->n; i++)
		for (int j = 0; j < C; j++) {
			float z = logits[(size_t)i * C + j];
			if (isfinite(z))
				continue;
			const item *it = &b->items[i];
			char what[160];
			snprintf(what, sizeof what, "the network's output for class %d is %s "
				 "(scale %d, view %d): the weights hold NaN or infinity, or overflow",
				 j, isnan(z) ? "NaN" : "infinite", scale, view);
			if (it->is_file) {
				const char *root = mp_list_root(ev->rd.root, it->name);
				return mp_seterr(e, "%s%s%s (%s line %ld): %s", root, *root ? "/" : "",
						 it->name, reader_name(&ev->rd), it->line, what);
			}
			return mp_seterr(e, "%s: record %llu (%s): %s", reader_name(&ev->rd),
					 (unsigned long long)it->index, it->name, what);
		}
	return 0;
}

static int process(evaluator *ev, const batch *b, mp_error *e)
{
	const mp_eval_opts *o = ev->o;
	const int C = ev->classes, c = ev->size, S = ev->r->nscales, n = b->n;
	const item *items = b->items;
	int labelled = ev->r->labelled;
	int rc = -1, maxs = 0;
	for (int si = 0; si < S; si++)
		if (ev->r->scale[si].size > maxs)
			maxs = ev->r->scale[si].size;
	float *vbuf = NULL, *logits = NULL;
	double *acc = NULL, *pscale = NULL, *comb = NULL, *tmp = NULL;

	/* the views go straight into the network's input slot, which a
	 * recorded pass reads (page-locked on a GPU) */
	vbuf = mp_resnet_input(ev->net, 0, n, maxs, maxs, e);
	logits = malloc(sizeof(float) * (size_t)C * (size_t)n);
	acc = calloc((size_t)C * (size_t)n, sizeof *acc);
	pscale = malloc(sizeof(double) * (size_t)C * (size_t)n);
	comb = calloc((size_t)C * (size_t)n, sizeof *comb);
	tmp = malloc(sizeof(double) * (size_t)C);
	if (!vbuf)
		goto out; /* e says why */
	if (!logits || !acc || !pscale || !comb || !tmp) {
		mp_seterr(e, "out of memory");
		goto out;
	}
	for (int si = 0; si < S; si++) {
		const int s = ev->r->scale[si].size;
		const size_t plane = 3 * (size_t)s * s;
		const float *base = b->base + b->scale_offset[si];
		view views[20];
		int nv = make_views(s, c, o->crops, o->flip, views);
		memset(acc, 0, sizeof(double) * (size_t)C * (size_t)n);
		for (int v = 0; v < nv; v++) {
			const int vs = views[v].size;
			const size_t vplane = 3 * (size_t)vs * vs;
#pragma omp parallel for num_threads(ev->nthreads)
			for (int i = 0; i < n; i++)
				cut_view(base + i * plane, s, &views[v], vbuf + i * vplane);
			for (int i = 0; o->dump_views && i < n; i++)
				if (items[i].index < (uint64_t)o->dump_count &&
				    dump_view(o->dump_views, items[i].index, s, v, vbuf + i * vplane, vs,
					      ev->mean, e) < 0)
					goto out;
			if (mp_resnet_predict(ev->net, vbuf, n, vs, vs, logits, e) < 0 ||
			    check_logits(ev, b, logits, s, v, e) < 0)
				goto out;
			for (int i = 0; i < n; i++) {
				double *a = acc + (size_t)i * C;
				for (int j = 0; j < C; j++)
					tmp[j] = logits[(size_t)i * C + j];
				if (o->combine == MP_COMBINE_PROB)
					softmax(tmp, C, tmp);
				for (int j = 0; j < C; j++)
					a[j] += tmp[j];
			}
		}
		for (int i = 0; i < n; i++) {
			double *a = acc + (size_t)i * C, *p = pscale + (size_t)i * C;
			for (int j = 0; j < C; j++)
				a[j] /= nv;
			/* the scale's probabilities; logits combine as logits */
			if (o->combine == MP_COMBINE_PROB)
				memcpy(p, a, sizeof(double) * (size_t)C);
			else
				softmax(a, C, p);
			for (int j = 0; j < C; j++)
				comb[(size_t)i * C + j] += a[j] / S;
			if (labelled) {
				int rank = rank_of(p, C, items[i].label);
				ev->correct1[si] += rank < 1;
				ev->correctk[si] += rank < ev->k;
			}
		}
	}
	for (int i = 0; i < n; i++) {
		double *p = comb + (size_t)i * C;
		if (o->combine == MP_COMBINE_LOGIT)
			softmax(p, C, p);
		int best[16];
		top_k(p, C, ev->k, best);
		if (labelled) {
			int y = items[i].label, rank = rank_of(p, C, y);
			ev->correct1[S] += rank < 1;
			ev->correctk[S] += rank < ev->k;
			ev->class_images[y]++;
			ev->class_correct1[y] += rank < 1;
			ev->class_correctk[y] += rank < ev->k;
			if (ev->confusion)
				ev->confusion[(size_t)y * C + best[0]]++;
		}
		if (ev->probs.f && put_probs_row(ev->probs.f, &items[i], labelled, p, C) == EOF) {
			out_failed(&ev->probs, e);
			goto out;
		}
		if (o->submission_path) {
			if (ev->nrows == ev->caprows) {
				ev->caprows = ev->caprows ? 2 * ev->caprows : 1024;
				ev->rows = mp_xrealloc(ev->rows, ev->caprows * sizeof *ev->rows);
			}
			submission_row *row = &ev->rows[ev->nrows];
			row->seq = ev->nrows++;
			row->name = mp_xstrdup(items[i].name);
			memcpy(row->labels, best, sizeof best);
		}
	}
	ev->r->images += (uint64_t)n;
	rc = 0;
out:
	/* vbuf is the network's */
	free(logits);
	free(acc);
	free(pscale);
	free(comb);
	free(tmp);
	return rc;
}

/* The tables, each written whole; EOF at the first write that fails,
 * after which nothing more is written to it. */
static int put_submission(const evaluator *ev, FILE *f)
{
	for (size_t i = 0; i < ev->nrows; i++) {
		if (fputs(ev->rows[i].name, f) == EOF)
			return EOF;
		for (int j = 0; j < ev->k; j++)
			if (fprintf(f, " %d", ev->rows[i].labels[j]) < 0)
				return EOF;
		if (putc('\n', f) == EOF)
			return EOF;
	}
	return 0;
}

static int put_per_class(const evaluator *ev, FILE *f)
{
	if (fprintf(f, "class\tname\timages\ttop1_err\ttop%d_err\n", ev->k) < 0)
		return EOF;
	for (int y = 0; y < ev->classes; y++) {
		uint64_t m = ev->class_images[y];
		const char *name = ev->class_names ? ev->class_names[y] : "-";
		if (fprintf(f, "%d\t", y) < 0 || mp_put_tsv_field(f, name, strlen(name)) == EOF ||
		    fprintf(f, "\t%llu\t", (unsigned long long)m) < 0)
			return EOF;
		int rc = m ? fprintf(f, "%.5f\t%.5f\n", (double)(m - ev->class_correct1[y]) / m,
				     (double)(m - ev->class_correctk[y]) / m)
			   : fputs("-\t-\n", f);
		if (rc < 0)
			return EOF;
	}
	return 0;
}

static int put_confusion(const evaluator *ev, FILE *f)
{
	const int C = ev->classes;
	if (fputs("label\\predicted", f) == EOF)
		return EOF;
	for (int j = 0; j < C; j++)
		if (fprintf(f, "\t%d", j) < 0)
			return EOF;
	if (putc('\n', f) == EOF)
		return EOF;
	for (int y = 0; y < C; y++) {
		if (fprintf(f, "%d", y) < 0)
			return EOF;
		for (int j = 0; j < C; j++)
			if (fprintf(f, "\t%llu", (unsigned long long)ev->confusion[(size_t)y * C + j]) < 0)
				return EOF;
		if (putc('\n', f) == EOF)
			return EOF;
	}
	return 0;
}

static int write_tables(evaluator *ev, mp_error *e)
{
	const mp_eval_opts *o = ev->o;
	if (o->submission_path) {
		qsort(ev->rows, ev->nrows, sizeof *ev->rows, cmp_rows);
		outfile *of = &ev->tables[0];
		if (put_submission(ev, of->f) == EOF)
			return out_failed(of, e);
		if (out_close(of, e) < 0)
			return -1;
	}
	if (!ev->r->labelled)
		return 0;
	if (o->per_class_path) {
		outfile *of = &ev->tables[1];
		if (put_per_class(ev, of->f) == EOF)
			return out_failed(of, e);
		if (out_close(of, e) < 0)
			return -1;
	}
	if (o->confusion_path) {
		outfile *of = &ev->tables[2];
		if (put_confusion(ev, of->f) == EOF)
			return out_failed(of, e);
		if (out_close(of, e) < 0)
			return -1;
	}
	return 0;
}

static int setup(evaluator *ev, mp_error *e)
{
	const mp_eval_opts *o = ev->o;
	mp_eval_result *r = ev->r;
	if (mp_backend_device_fits(o->backend, o->device, e) < 0)
		return MP_EVAL_BAD_USAGE;
	if (!(ev->be = mp_backend_open(o->backend, o->threads, o->device, o->precision, r->backend,
				       sizeof r->backend, e)))
		return MP_EVAL_FAILED;
	if (!(ev->net = mp_weights_load(o->weights, ev->be, &ev->file, e)))
		return MP_EVAL_FAILED;
	const mp_resnet_config *cfg = mp_resnet_cfg(ev->net);
	ev->classes = r->classes = cfg->classes;
	ev->size = cfg->input_size;
	memcpy(ev->mean, cfg->mean, sizeof ev->mean);
	/* a GPU's pass costs little more for 128 images than for 16 */
	ev->batch = o->batch ? o->batch : strcmp(ev->be->ops->name, "cuda") ? 16 : 128;
	/* Beside a GPU the cores are free to decode the next batch. On the
	 * CPU the network's threads have them: a second team of threads
	 * decoding at the same time only makes both wait for each other (a
	 * run was ten times slower while another program kept one core busy). */
	const char *ahead = mp_getenv("MP_EVAL_AHEAD");
	if (ahead && strcmp(ahead, "0") && strcmp(ahead, "1"))
		return mp_seterr(e, "MP_EVAL_AHEAD=%s: expected 0 or 1", ahead), MP_EVAL_FAILED;
	ev->ahead = ahead ? !strcmp(ahead, "1") : !!strcmp(ev->be->ops->name, "cpu");
	ev->k = o->topk < ev->classes ? o->topk : ev->classes;
	if (ev->k > 16)
		return mp_seterr(e, "--topk %d: at most 16", o->topk), MP_EVAL_BAD_USAGE;
	r->nscales = o->nscales ? o->nscales : 1;
	for (int i = 0; i < r->nscales; i++) {
		r->scale[i].size = o->nscales ? o->scales[i] : ev->size;
		if (o->crops != MP_CROPS_FULL && r->scale[i].size < ev->size)
			return mp_seterr(e, "scale %d is smaller than the crops of %d pixels the "
					    "weights were trained at",
					 r->scale[i].size, ev->size),
			       MP_EVAL_BAD_USAGE;
	}
	view v[20];
	r->views_per_scale = make_views(r->scale[0].size, ev->size, o->crops, o->flip, v);
	class_names_from_weights(ev);

	if (reader_open(&ev->rd, o, ev->classes, e) < 0)
		return MP_EVAL_FAILED;
	if (ev->rd.is_list && check_outputs_not_listed(o, &ev->rd, e) < 0)
		return MP_EVAL_BAD_USAGE;
	if (!ev->rd.is_list) {
		const mp_meta *m = mp_source_meta(ev->rd.src);
		if (m->classes > 0 && m->labelled && m->classes != ev->classes)
			return mp_seterr(e, "%s has %d classes, the weights %s %d",
					 mp_source_name(ev->rd.src), m->classes, o->weights,
					 ev->classes),
			       MP_EVAL_FAILED;
		/* the same count of other classes, or of the same in another
		 * order, would score the network against labels that mean
		 * something else */
		for (int i = 0; m->labelled && m->class_names && ev->class_names &&
				m->classes == ev->classes && i < ev->classes; i++)
			if (*ev->class_names[i] && strcmp(m->class_names[i], ev->class_names[i]))
				return mp_seterr(e, "%s: its class %d is \"%s\", the weights %s's "
						    "\"%s\" (pack it with the categories file "
						    "the network was trained on)",
						 mp_source_name(ev->rd.src), i, m->class_names[i],
						 o->weights, ev->class_names[i]),
				       MP_EVAL_FAILED;
	}
	r->labelled = reader_labelled(&ev->rd);
	if (!r->labelled && (o->per_class_path || o->confusion_path))
		return mp_seterr(e, "%s has no labels: %s needs them", reader_name(&ev->rd),
				 o->per_class_path ? "--per-class" : "--confusion"),
		       MP_EVAL_FAILED;
	ev->class_images = mp_xcalloc((size_t)ev->classes, sizeof(uint64_t));
	ev->class_correct1 = mp_xcalloc((size_t)ev->classes, sizeof(uint64_t));
	ev->class_correctk = mp_xcalloc((size_t)ev->classes, sizeof(uint64_t));
	/* classes x classes counts: only for --confusion, which is the one
	 * table that grows as the square of the classes (32 GiB at 65536) */
	if (o->confusion_path && r->labelled &&
	    !(ev->confusion = calloc((size_t)ev->classes * (size_t)ev->classes, sizeof(uint64_t))))
		return mp_seterr(e, "--confusion: out of memory for a table of %d x %d counts "
				    "(%.1f GiB)",
				 ev->classes, ev->classes,
				 (double)ev->classes * ev->classes * sizeof(uint64_t) / (1 << 30)),
		       MP_EVAL_FAILED;
	/* The views' directory first: an output may be inside it. One made
	 * here is removed if the start fails (mp_eval_run). */
	if (o->dump_views) {
		if (mkdir(o->dump_views, 0777) == 0)
			ev->made_views = 1;
		else if (errno != EEXIST)
			return mp_seterr(e, "%s: %s", o->dump_views, strerror(errno)), MP_EVAL_FAILED;
		struct stat st;
		if (stat(o->dump_views, &st) < 0 || !S_ISDIR(st.st_mode))
			return mp_seterr(e, "%s: not a directory", o->dump_views), MP_EVAL_FAILED;
	}
	/* Every output is created (under its temporary name) before any image
	 * is read: a place that cannot be written is said at once, not after
	 * the whole evaluation. */
	if (o->probs_path) {
		if (out_open(&ev->probs, o->probs_path, e) < 0)
			return MP_EVAL_FAILED;
		if (put_probs_header(ev->probs.f, ev->classes) == EOF)
			return out_failed(&ev->probs, e), MP_EVAL_FAILED;
	}
	const char *tables[3] = {o->submission_path, o->per_class_path, o->confusion_path};
	for (int i = 0; i < 3; i++)
		if (tables[i] && out_open(&ev->tables[i], tables[i], e) < 0)
			return MP_EVAL_FAILED;
	return MP_EVAL_DONE;
}

/* An output file is written to a temporary name and renamed over its
 * path: one that names an input, or another output, would replace it. */
static int check_outputs(const mp_eval_opts *o, mp_error *e)
{
	named_path outs[NOUTPUTS];
	output_paths(o, outs);
	char db_data[PATH_MAX], db_lock[PATH_MAX];
	snprintf(db_data, sizeof db_data, "%s/data.mdb", o->data ? o->data : "");
	snprintf(db_lock, sizeof db_lock, "%s/lock.mdb", o->data ? o->data : "");
	const named_path ins[] = {{"the weights (-m)", o->weights},
		   {"the image list (--list)", o->list},
		   {"the dataset", o->data},
		   {"the dataset's data", o->data ? db_data : NULL},
		   {"the dataset's lock file", o->data ? db_lock : NULL}};
	const size_t nins = sizeof ins / sizeof ins[0];
	for (size_t i = 0; i < NOUTPUTS; i++) {
		if (!outs[i].path || mp_names_stdout(outs[i].path))
			continue;
		for (size_t j = 0; j < nins; j++) {
			/* an input read from stdin is the file stdin is open on */
			if (ins[j].path && (strcmp(ins[j].path, "-")
						    ? mp_same_file(outs[i].path, ins[j].path)
						    : mp_names_fd(outs[i].path, STDIN_FILENO)))
				return mp_seterr(e, "%s %s: that is %s, which it would replace", outs[i].what,
						 outs[i].path, ins[j].what);
		}
		/* a character device (/dev/null) replaces nothing: outputs may share it */
		struct stat st;
		if (stat(outs[i].path, &st) == 0 && S_ISCHR(st.st_mode))
			continue;
		for (size_t j = 0; j < i; j++)
			if (outs[j].path && !mp_names_stdout(outs[j].path) &&
			    mp_same_file(outs[i].path, outs[j].path))
				return mp_seterr(e, "%s %s: the same file as %s", outs[i].what,
						 outs[i].path, outs[j].what);
	}
	/* the views' directory: not one the dataset's files live in, nor an output */
	if (o->dump_views && o->data && strcmp(o->data, "-") && mp_same_file(o->dump_views, o->data))
		return mp_seterr(e, "--dump-views %s: that is the dataset, which it would write into",
				 o->dump_views);
	for (size_t j = 0; o->dump_views && j < NOUTPUTS; j++)
		if (outs[j].path && !mp_names_stdout(outs[j].path) &&
		    mp_same_file(o->dump_views, outs[j].path))
			return mp_seterr(e, "--dump-views %s: the same file as %s", o->dump_views,
					 outs[j].what);
	return 0;
}

int mp_eval_run(const mp_eval_opts *o, mp_eval_result *r, mp_error *e)
{
	evaluator ev = {.o = o, .r = r};
	memset(r, 0, sizeof *r);
	double t0 = mp_now();
	ev.nthreads = o->threads ? o->threads : omp_get_max_threads();
	mp_codec **codecs = mp_xcalloc((size_t)ev.nthreads, sizeof *codecs);
	batch slot[2] = {0};
	int status = check_outputs(o, e) < 0 ? MP_EVAL_BAD_USAGE : setup(&ev, e);
	if (status != MP_EVAL_DONE) {
		out_abort(&ev.probs); // before the directory an output may be in
		for (int i = 0; i < 3; i++)
			out_abort(&ev.tables[i]);
		if (ev.made_views)
			rmdir(o->dump_views); // a start that failed leaves no empty directory of its own
		goto out;
	}
	status = MP_EVAL_FAILED;
	for (int i = 0; i < ev.nthreads; i++)
		if (!(codecs[i] = mp_codec_new(e)))
			goto out;
	/* a second batch only to prepare one while the other is evaluated */
	batch_init(&slot[0], ev.batch);
	if (ev.ahead)
		batch_init(&slot[1], ev.batch);
	mp_progress p;
	uint64_t total = ev.rd.is_list ? ev.rd.list.count : mp_source_meta(ev.rd.src)->records;
	mp_progress_init(&p, "evaluate", total, o->quiet);
	/* with ev.ahead, the next batch is read and decoded on a thread of its
	 * own while the network evaluates this one: a GPU would otherwise wait
	 * for the decoding, and the decoding for the GPU */
	int cur = 0;
	prepare(&ev, &slot[cur], codecs);
	for (;;) {
		batch *b = &slot[cur], *next = ev.ahead ? &slot[!cur] : b;
		if (b->rc < 0) {
			*e = b->e;
			goto out;
		}
		if (b->n == 0)
			break;
		pthread_t th;
		prepare_job job = {&ev, next, codecs};
		const int more = !b->end && b->n == ev.batch;
		int ahead = ev.ahead && more;
		if (ahead && pthread_create(&th, NULL, prepare_thread, &job) != 0)
			ahead = 0; /* no thread: in turn */
		int rc = process(&ev, b, e);
		if (ahead)
			pthread_join(th, NULL);
		if (rc < 0)
			goto out;
		if (more && !ahead)
			prepare(&ev, next, codecs);
		mp_progress_update(&p, r->images, NULL);
		if (!more)
			break;
		cur = next == b ? cur : !cur;
	}
	mp_progress_done(&p);
	if (r->images == 0) {
		mp_seterr(e, "%s: no images", reader_name(&ev.rd));
		goto out;
	}
	const double n = (double)r->images;
	for (int si = 0; si < r->nscales; si++) {
		r->scale[si].top1 = mp_error_rate(ev.correct1[si], n);
		r->scale[si].topk = mp_error_rate(ev.correctk[si], n);
	}
	r->top1 = mp_error_rate(ev.correct1[r->nscales], n);
	r->topk = mp_error_rate(ev.correctk[r->nscales], n);
	/* --probs is complete: its last rows are written before any table is */
	if (out_close(&ev.probs, e) < 0 || write_tables(&ev, e) < 0)
		goto out;
	/* the summary before the renames: a stdout that fails (a full disk,
	 * a reader gone) fails the run with no file of an earlier one replaced */
	r->seconds = mp_now() - t0;
	if (o->report && o->report(o, r, e) < 0)
		goto out;
	/* every output is complete before any replaces a file of that name,
	 * and a ^C waits for the last rename: never some of this run's files
	 * beside some of an earlier one's */
	mp_tmp_hold();
	int renamed = out_rename(&ev.probs, e) == 0;
	for (int i = 0; i < 3 && renamed; i++)
		renamed = out_rename(&ev.tables[i], e) == 0;
	mp_tmp_release();
	if (!renamed)
		goto out;
	status = MP_EVAL_DONE;
out:
	r->seconds = mp_now() - t0;
	out_abort(&ev.probs);
	for (int i = 0; i < 3; i++)
		out_abort(&ev.tables[i]);
	batch_free(&slot[0], ev.batch);
	batch_free(&slot[1], ev.batch);
	for (int i = 0; i < ev.nthreads; i++)
		mp_codec_free(codecs[i]);
	free(codecs);
	for (size_t i = 0; i < ev.nrows; i++)
		free(ev.rows[i].name);
	free(ev.rows);
	if (ev.class_names)
		for (int i = 0; i < ev.classes; i++)
			free(ev.class_names[i]);
	free(ev.class_names);
	free(ev.class_images);
	free(ev.class_correct1);
	free(ev.class_correctk);
	free(ev.confusion);
	reader_close(&ev.rd);
	mp_resnet_free(ev.net);
	mp_st_free(&ev.file);
	if (ev.be)
		mp_backend_free(ev.be);
	return status;
}
