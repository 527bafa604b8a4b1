/* mp-eval: single and multiscale evaluation of trained weights on a
 * dataset, a stream or an image list; errors, probabilities, submissions. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_backends.h"
#include "mp_cli.h"
#include "mp_eval.h"
#include "mp_json.h"
#include "mp_util.h"

/* The reference's multiscale set. */
static const int multiscale[] = {112, 128, 160, 240};

static void usage(void)
{
	fprintf(stderr,
		"usage: %s -m WEIGHTS [options] DATASET | -\n"
		"       %s -m WEIGHTS [options] --list LIST [-r ROOT]\n"
		"Try '%s --help' for the options.\n",
		mp_progname, mp_progname, mp_progname);
	exit(2);
}

static void help(void)
{
	printf("usage: %s -m WEIGHTS [options] DATASET | -\n"
	       "       %s -m WEIGHTS [options] --list LIST [-r ROOT]\n"
	       "Evaluates trained weights on a dataset DB, a stream file, a stream on stdin (-)\n"
	       "or the images of a list, and prints the top-1 and top-5 error per scale and\n"
	       "for the combination of the views.\n\n"
	       "  -m, --weights FILE    weights or checkpoint (safetensors)\n"
	       "  -d, --data DATASET    the dataset, as the operand\n"
	       "      --list LIST       read the images of an image list instead\n"
	       "  -r, --root DIR        the directory list paths are relative to\n"
	       "      --max-pixels N    refuse larger images (default 67108864)\n"
	       "      --scales LIST     sizes the whole image is resized to, one view each\n"
	       "                        (default: the size the weights were trained at)\n"
	       "      --multiscale      --scales 112,128,160,240\n"
	       "      --crops C         full (the whole resized image), center, 5 (corners and\n"
	       "                        center) or 10 (and their mirror images); default full\n"
	       "      --flip            add the mirror image of every view\n"
	       "      --combine HOW     prob (mean of the softmax outputs) or logit\n"
	       "                        (default prob)\n"
	       "      --topk K          the second error measure and the labels per submission\n"
	       "                        line (default 5)\n"
	       "      --batch N         images per forward pass (default 16, 128 on a GPU)\n"
	       "      --threads N       threads (default: the cores it may use)\n"
	       "      --backend NAME    cpu, cpu-ref, cuda or auto (default cpu)\n"
	       "      --device N        the CUDA device for cuda and auto (default 0;\n"
	       "                        mp-eval -V lists them)\n"
	       "      --precision NAME  fp32, bf16 (GPU tensor cores) or auto (default:\n"
	       "                        bf16 where the backend has it, else fp32)\n"
	       "      --json            the results as JSON on stdout\n"
	       "      --probs FILE      TSV: name, label, one probability per class\n"
	       "      --submission FILE one line per image, sorted: NAME L1 .. Lk\n"
	       "      --per-class FILE  TSV: error per class\n"
	       "      --confusion FILE  TSV: counts of label x top-1 prediction\n"
	       "      --dump-views DIR  write the views of the first --dump-count images as PNG\n"
	       "      --dump-count N    (default 1)\n"
	       "  -q, --quiet           no progress bar and no table\n"
	       "  -h, --help            this help\n"
	       "  -V, --version         version and backends\n",
	       mp_progname, mp_progname);
	mp_exit_stdout(0);
}

enum {
	OPT_LIST = 256, OPT_SCALES, OPT_MULTISCALE, OPT_CROPS, OPT_FLIP, OPT_COMBINE, OPT_TOPK,
	OPT_BATCH, OPT_THREADS, OPT_BACKEND, OPT_PRECISION, OPT_JSON, OPT_PROBS, OPT_SUBMISSION,
	OPT_PER_CLASS, OPT_CONFUSION, OPT_DUMP_VIEWS, OPT_DUMP_COUNT, OPT_MAX_PIXELS, OPT_DEVICE,
};

static const struct option long_opts[] = {
	{"weights", required_argument, NULL, 'm'},
	{"data", required_argument, NULL, 'd'},
	{"list", required_argument, NULL, OPT_LIST},
	{"root", required_argument, NULL, 'r'},
	{"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
	{"scales", required_argument, NULL, OPT_SCALES},
	{"multiscale", no_argument, NULL, OPT_MULTISCALE},
	{"crops", required_argument, NULL, OPT_CROPS},
	{"flip", no_argument, NULL, OPT_FLIP},
	{"combine", required_argument, NULL, OPT_COMBINE},
	{"topk", required_argument, NULL, OPT_TOPK},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"backend", required_argument, NULL, OPT_BACKEND},
	{"device", required_argument, NULL, OPT_DEVICE},
	{"precision", required_argument, NULL, OPT_PRECISION},
	{"json", no_argument, NULL, OPT_JSON},
	{"probs", required_argument, NULL, OPT_PROBS},
	{"submission", required_argument, NULL, OPT_SUBMISSION},
	{"per-class", required_argument, NULL, OPT_PER_CLASS},
	{"confusion", required_argument, NULL, OPT_CONFUSION},
	{"dump-views", required_argument, NULL, OPT_DUMP_VIEWS},
	{"dump-count", required_argument, NULL, OPT_DUMP_COUNT},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

static const char *const crop_names[] = {"full", "center", "5", "10", NULL};
static const int crop_values[] = {MP_CROPS_FULL, MP_CROPS_CENTER, MP_CROPS_5, MP_CROPS_10};
static const char *const combine_names[] = {"prob", "logit", NULL};

/* What the images were read from, as messages name it. */
static const char *input_name(const mp_eval_opts *o)
{
	const char *in = o->list ? o->list : o->data;
	return strcmp(in, "-") ? in : "<stdin>";
}

static void print_table(const mp_eval_opts *o, const mp_eval_result *r)
{
	printf("mp-eval: %s on %s: %llu image%s, %d scale%s x %d view%s (crops %s%s, combine %s); "
	       "%s; %.1f s, %.0f images/s\n",
	       o->weights, input_name(o), (unsigned long long)r->images, r->images == 1 ? "" : "s",
	       r->nscales,
	       r->nscales == 1 ? "" : "s", r->views_per_scale, r->views_per_scale == 1 ? "" : "s",
	       crop_names[o->crops == MP_CROPS_FULL ? 0 : o->crops == MP_CROPS_CENTER ? 1
						 : o->crops == MP_CROPS_5      ? 2 : 3],
	       o->flip ? ", flip" : "", combine_names[o->combine], r->backend, r->seconds,
	       r->seconds > 0 ? (double)r->images / r->seconds : 0.0);
	if (!r->labelled) {
		printf("no labels: no error to report\n");
		return;
	}
	int k = o->topk < r->classes ? o->topk : r->classes;
	char head[32];
	snprintf(head, sizeof head, "top-%d err", k);
	printf("%-10s %10s %10s\n", "scale", "top-1 err", head);
	for (int i = 0; i < r->nscales; i++)
		printf("%-10d %9.2f%% %9.2f%%\n", r->scale[i].size, 100 * r->scale[i].top1,
		       100 * r->scale[i].topk);
	printf("%-10s %9.2f%% %9.2f%%\n", "combined", 100 * r->top1, 100 * r->topk);
}

static void print_json(const mp_eval_opts *o, const mp_eval_result *r)
{
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "weights", o->weights);
	cJSON_AddStringToObject(j, "data", input_name(o));
	cJSON_AddNumberToObject(j, "images", (double)r->images);
	cJSON_AddBoolToObject(j, "labelled", r->labelled);
	cJSON_AddNumberToObject(j, "classes", r->classes);
	cJSON_AddNumberToObject(j, "topk", o->topk < r->classes ? o->topk : r->classes);
	cJSON_AddStringToObject(j, "crops", crop_names[o->crops == MP_CROPS_FULL ? 0
						      : o->crops == MP_CROPS_CENTER ? 1
						      : o->crops == MP_CROPS_5 ? 2 : 3]);
	cJSON_AddBoolToObject(j, "flip", o->flip);
	cJSON_AddStringToObject(j, "combine", combine_names[o->combine]);
	cJSON_AddNumberToObject(j, "views_per_scale", r->views_per_scale);
	cJSON *scales = cJSON_AddArrayToObject(j, "scales");
	for (int i = 0; i < r->nscales; i++) {
		cJSON *s = cJSON_CreateObject();
		cJSON_AddNumberToObject(s, "size", r->scale[i].size);
		if (r->labelled) {
			cJSON_AddNumberToObject(s, "top1_err", r->scale[i].top1);
			cJSON_AddNumberToObject(s, "topk_err", r->scale[i].topk);
		}
		cJSON_AddItemToArray(scales, s);
	}
	if (r->labelled) {
		cJSON *c = cJSON_AddObjectToObject(j, "combined");
		cJSON_AddNumberToObject(c, "top1_err", r->top1);
		cJSON_AddNumberToObject(c, "topk_err", r->topk);
	}
	cJSON_AddStringToObject(j, "backend", r->backend);
	cJSON_AddNumberToObject(j, "seconds", r->seconds);
	cJSON_AddNumberToObject(j, "images_per_second",
				r->seconds > 0 ? (double)r->images / r->seconds : 0.0);
	/* paths are bytes; the JSON printed is UTF-8 whatever they hold */
	char *u = mp_json_print(j);
	if (!u)
		mp_errx(1, "out of memory");
	puts(u);
	free(u);
	cJSON_Delete(j);
}

/* The summary, as the options ask: the JSON, or the table unless -q or an
 * output has stdout. */
static int report_json, report_table;

static int report(const mp_eval_opts *o, const mp_eval_result *r, mp_error *e)
{
	if (report_json)
		print_json(o, r);
	else if (report_table)
		print_table(o, r);
	/* a write that failed inside printf leaves only the error flag; the
	 * flush retries what is buffered and usually says why */
	errno = 0;
	if (fflush(stdout) != 0 || ferror(stdout))
		return mp_seterr(e, "<stdout>: write error%s%s", errno ? ": " : "",
				 errno ? strerror(errno) : "");
	return 0;
}

int main(int argc, char **argv)
{
	mp_wait_passively(argv);
	mp_guard_std_fds();
	mp_set_progname(argv[0]);
	mp_writes_fail_past_size_limit();
	argv[0] = (char *)mp_progname; /* getopt's messages then name us as ours do */
	mp_eval_opts o;
	mp_eval_opts_default(&o);
	int c, json = 0, dump_count_given = 0;
	long v, list[MP_EVAL_MAX_SCALES];
	while ((c = getopt_long(argc, argv, "m:d:r:qhV", long_opts, NULL)) != -1) {
		int bad = 0, n;
		switch (c) {
		case 'm': bad = mp_parse_path("--weights", optarg, &o.weights); break;
		case 'd': bad = mp_parse_path("--data", optarg, &o.data); break;
		case 'r': bad = mp_parse_root("--root", optarg, &o.root); break;
		case 'q': o.quiet = 1; break;
		case 'h': help(); break;
		case 'V': mp_print_version(); mp_exit_stdout(0);
		case OPT_LIST: bad = mp_parse_path("--list", optarg, &o.list); break;
		case OPT_MAX_PIXELS:
			bad = mp_parse_long("--max-pixels", optarg, 1, 1L << 40, &v);
			o.max_pixels = (uint64_t)v;
			break;
		case OPT_SCALES:
			n = mp_parse_long_list("--scales", optarg, 1, 4096, list, 1, MP_EVAL_MAX_SCALES);
			bad = n < 0;
			for (int i = 0; i < n; i++)
				o.scales[i] = (int)list[i];
			/* a scale given twice would weigh twice in the combination */
			for (int i = 1; i < n && !bad; i++)
				for (int k = 0; k < i && !bad; k++)
					if (list[k] == list[i]) {
						mp_warnx("--scales: \"%s\": scale %ld is given twice",
							 optarg, list[i]);
						bad = 1;
					}
			o.nscales = n > 0 ? n : 0;
			break;
		case OPT_MULTISCALE:
			o.nscales = 4;
			memcpy(o.scales, multiscale, sizeof multiscale);
			break;
		case OPT_CROPS:
			n = mp_parse_keyword("--crops", optarg, crop_names);
			bad = n < 0;
			o.crops = n >= 0 ? crop_values[n] : 0;
			break;
		case OPT_FLIP: o.flip = 1; break;
		case OPT_COMBINE:
			n = mp_parse_keyword("--combine", optarg, combine_names);
			bad = n < 0;
			o.combine = n == 1 ? MP_COMBINE_LOGIT : MP_COMBINE_PROB;
			break;
		case OPT_TOPK:
			bad = mp_parse_long("--topk", optarg, 1, 16, &v);
			o.topk = (int)v;
			break;
		case OPT_BATCH:
			bad = mp_parse_long("--batch", optarg, 1, 65536, &v);
			o.batch = (int)v;
			break;
		case OPT_THREADS:
			bad = mp_parse_long("--threads", optarg, 1, 1024, &v);
			o.threads = (int)v;
			break;
		case OPT_BACKEND:
			bad = mp_parse_keyword("--backend", optarg, mp_backend_names) < 0;
			o.backend = optarg;
			break;
		case OPT_DEVICE:
			bad = mp_parse_long("--device", optarg, 0, 1023, &v);
			o.device = (int)v;
			break;
		case OPT_PRECISION:
			bad = mp_parse_keyword("--precision", optarg, mp_precision_names) < 0;
			o.precision = optarg;
			break;
		case OPT_JSON: json = 1; break;
		case OPT_PROBS: bad = mp_parse_path("--probs", optarg, &o.probs_path); break;
		case OPT_SUBMISSION:
			bad = mp_parse_path("--submission", optarg, &o.submission_path);
			break;
		case OPT_PER_CLASS:
			bad = mp_parse_path("--per-class", optarg, &o.per_class_path);
			break;
		case OPT_CONFUSION:
			bad = mp_parse_path("--confusion", optarg, &o.confusion_path);
			break;
		case OPT_DUMP_VIEWS:
			bad = mp_parse_dir_path("--dump-views", optarg, &o.dump_views);
			if (!o.dump_count)
				o.dump_count = 1;
			break;
		case OPT_DUMP_COUNT:
			bad = mp_parse_long("--dump-count", optarg, 1, 1000000, &v);
			o.dump_count = (int)v;
			dump_count_given = 1;
			break;
		default: usage();
		}
		if (bad)
			return 2;
	}
	if (optind < argc) {
		if (o.data || argc - optind > 1) {
			mp_warnx("unexpected argument \"%s\"", argv[argc - 1]);
			usage();
		}
		if (mp_parse_path("DATASET", argv[optind], &o.data) < 0)
			return 2;
	}
	if (!o.weights) {
		mp_warnx("-m WEIGHTS is required");
		usage();
	}
	/* read whole, with random access: not from a pipe */
	if (!strcmp(o.weights, "-")) {
		mp_warnx("-m -: the weights are read from a file, not from stdin");
		return 2;
	}
	if (!o.data == !o.list) {
		mp_warnx(o.list ? "give a dataset or --list, not both"
				: "a dataset, - (a stream on stdin) or --list is required");
		usage();
	}
	if (o.data && !strcmp(o.data, "-") && isatty(STDIN_FILENO)) {
		mp_warnx("refusing to read a binary stream from a terminal: redirect stdin "
			 "or give a file");
		usage();
	}
	if (o.root && !o.list) {
		mp_warnx("-r ROOT goes with --list");
		usage();
	}
	if (dump_count_given && !o.dump_views) {
		mp_warnx("--dump-count goes with --dump-views");
		usage();
	}
	/* the outputs that share stdout with the table or the JSON */
	const char *outs[] = {o.probs_path, o.submission_path, o.per_class_path, o.confusion_path};
	int to_stdout = 0;
	for (int i = 0; i < 4; i++)
		to_stdout += outs[i] && mp_names_stdout(outs[i]);
	if (to_stdout > 1 || (to_stdout && json)) {
		mp_warnx("only one output may go to stdout (-)");
		return 2;
	}

	/* the outputs' temporary files go with the program: a reader of
	 * stdout that exits early or a ^C leaves no NAME.partial-PID */
	mp_tmp_on_signals();
	mp_eval_result r;
	mp_error e;
	report_json = json;
	report_table = !o.quiet && !to_stdout; /* an output has stdout; the bar stays on stderr */
	o.report = report;
	int status = mp_eval_run(&o, &r, &e);
	if (status != MP_EVAL_DONE) {
		mp_warnx("%s", e.msg);
		return status == MP_EVAL_BAD_USAGE ? 2 : 1;
	}
	mp_exit_stdout(0);
}
