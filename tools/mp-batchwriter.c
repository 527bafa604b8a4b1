/* mp-batchwriter: packs an image list into a dataset (LMDB DB or stream). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_cli.h"
#include "mp_dataset.h"
#include "mp_db.h"
#include "mp_list.h"
#include "mp_macrobatch.h"
#include "mp_meta.h"
#include "mp_pack.h"
#include "mp_stream.h"
#include "mp_util.h"

/* atomic: the handler may run on a decoding thread */
static atomic_int stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: %s [-r ROOT] [-o DB] [-c CATEGORIES] [options] [LIST]\n"
		"       %s --input-stream -o DB < STREAM\n"
		"Try '%s --help' for the options.\n",
		mp_progname, mp_progname, mp_progname);
	exit(2);
}

static void help(void)
{
	printf("usage: %s [-r ROOT] [-o DB] [-c CATEGORIES] [options] [LIST]\n"
	       "Packs the images of LIST (or stdin) into a dataset: an LMDB DB with -o,\n"
	       "otherwise a stream on stdout.\n\n"
	       "  -r, --root DIR         image paths are relative to DIR\n"
	       "  -o, --output DB        write an LMDB dataset (a directory); - is the stream\n"
	       "                         on stdout, as without -o\n"
	       "  -c, --categories FILE  class names (categories.txt: \"/a/abbey 0\")\n"
	       "      --classes N        number of classes when there is no -c\n"
	       "      --size N           bring images to NxN (default 128)\n"
	       "      --fit MODE         pad | crop | stretch (default pad)\n"
	       "      --pad N            border of N pixels on every side (default 0)\n"
	       "      --pad-fill MODE    mean | zero | edge (default mean)\n"
	       "      --encoding ENC     keep | jpeg | png | raw (default keep)\n"
	       "      --quality Q        JPEG quality 1..100 (default 95)\n"
	       "      --macrobatch N     records per macrobatch (default 1024)\n"
	       "      --shuffle          shuffle the list first (see --seed)\n"
	       "      --seed S           shuffle seed (default 1)\n"
	       "  -j, --jobs N           worker threads (default: the CPUs it may use)\n"
	       "      --skip-bad         skip unreadable images, count and list them\n"
	       "      --max-pixels N     refuse larger images (default 67108864)\n"
	       "      --input-stream     pack a stream read from stdin into -o DB\n"
	       "  -f, --force            replace an existing DB\n"
	       "      --map-size BYTES   initial LMDB map size (default 1 GiB; grows)\n"
	       "  -q, --quiet            no progress bar and no summary (skipped inputs are\n"
	       "                         still listed)\n"
	       "  -h, --help             this help\n"
	       "  -V, --version          version and backends\n",
	       mp_progname);
	mp_exit_stdout(0);
}

enum {
	OPT_CLASSES = 256, OPT_SIZE, OPT_FIT, OPT_PAD, OPT_PAD_FILL, OPT_ENCODING,
	OPT_QUALITY, OPT_MACROBATCH, OPT_SHUFFLE, OPT_SEED, OPT_SKIP_BAD,
	OPT_MAX_PIXELS, OPT_INPUT_STREAM, OPT_MAP_SIZE,
};

static const struct option long_opts[] = {
	{"root", required_argument, NULL, 'r'},
	{"output", required_argument, NULL, 'o'},
	{"categories", required_argument, NULL, 'c'},
	{"classes", required_argument, NULL, OPT_CLASSES},
	{"size", required_argument, NULL, OPT_SIZE},
	{"fit", required_argument, NULL, OPT_FIT},
	{"pad", required_argument, NULL, OPT_PAD},
	{"pad-fill", required_argument, NULL, OPT_PAD_FILL},
	{"encoding", required_argument, NULL, OPT_ENCODING},
	{"quality", required_argument, NULL, OPT_QUALITY},
	{"macrobatch", required_argument, NULL, OPT_MACROBATCH},
	{"shuffle", no_argument, NULL, OPT_SHUFFLE},
	{"seed", required_argument, NULL, OPT_SEED},
	{"jobs", required_argument, NULL, 'j'},
	{"skip-bad", no_argument, NULL, OPT_SKIP_BAD},
	{"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
	{"input-stream", no_argument, NULL, OPT_INPUT_STREAM},
	{"force", no_argument, NULL, 'f'},
	{"map-size", required_argument, NULL, OPT_MAP_SIZE},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

static const char *const fit_names[] = {"pad", "crop", "stretch", NULL};
static const char *const fill_names[] = {"mean", "zero", "edge", NULL};
static const char *const store_names[] = {"keep", "jpeg", "png", "raw", NULL};

static const char *option_name(int c)
{
	for (const struct option *o = long_opts; o->name; o++)
		if (o->val == c)
			return o->name;
	return "?";
}

/* A signal ignored when we started (nohup, a background job of a script)
 * stays ignored, as mp-train leaves it. */
static void install_signals(void)
{
	mp_catch_stop_signals(on_signal, 0, 0, 0);
}

/* verb: "packed" from images, "copied" from a stream */
static void print_summary(const char *verb, const mp_pack_report *rep, const char *dest,
			  double secs)
{
	fprintf(stderr,
		"%s: %s %llu records in %llu macrobatches (%.1f MiB; jpeg %llu, png %llu, "
		"raw %llu) in %.1f s, %.0f images/s -> %s\n",
		mp_progname, verb, (unsigned long long)rep->records,
		(unsigned long long)rep->macrobatches, (double)rep->payload_bytes / 1048576.0,
		(unsigned long long)rep->stored[MP_ENC_JPEG],
		(unsigned long long)rep->stored[MP_ENC_PNG],
		(unsigned long long)rep->stored[MP_ENC_RAW], secs,
		secs > 0 ? (double)(rep->records + rep->nskips) / secs : 0.0, dest);
}

/* Printed even with -q: skipped inputs are never dropped silently. */
static void print_skips(const mp_pack_report *rep, const mp_list *list,
			const char *list_name, const char *root)
{
	if (rep->nskips) {
		fprintf(stderr, "%s: skipped %zu bad inputs:\n", mp_progname, rep->nskips);
		for (size_t i = 0; i < rep->nskips; i++) {
			const mp_list_entry *it = &list->items[rep->skips[i].index];
			const char *r = mp_list_root(root, it->path);
			fprintf(stderr, "  %s%s%s (%s line %ld): %s\n", r, *r ? "/" : "",
				it->path, list_name, it->line,
				rep->skips[i].reason ? rep->skips[i].reason : "out of memory");
		}
	}
}

/* A signal also interrupts a blocking read or write (EINTR), which then
 * fails like any other error: the status still says which signal it was. */
static int exit_for_failure(int to_stream)
{
	if (stop_signal) {
		mp_warnx(to_stream ? "interrupted by signal %d; the stream on stdout is incomplete "
				     "(it has no end frame)"
				   : "interrupted by signal %d; nothing was written under the output name",
			 (int)stop_signal);
		return 128 + stop_signal;
	}
	return 1;
}

static int copy_stream(const char *out, uint64_t map_size, int force, int quiet)
{
	mp_error e;
	mp_source *src = mp_source_open("-", &e);
	if (!src) {
		if (!stop_signal)
			mp_warnx("%s", e.msg);
		return exit_for_failure(0);
	}
	mp_db_writer *db = mp_db_writer_open(out, map_size, force, &e);
	if (!db)
		mp_errx(1, "%s", e.msg);
	mp_pack_report rep;
	double t0 = mp_now();
	int rc = mp_pack_copy(src, db, &stop_signal, quiet, &rep, &e);
	mp_source_close(src);
	if (rc < 0) {
		if (!stop_signal)
			mp_warnx("%s", e.msg);
		return exit_for_failure(0);
	}
	if (!quiet)
		print_summary("copied", &rep, out, mp_now() - t0);
	return 0;
}

int main(int argc, char **argv)
{
	mp_guard_std_fds();
	mp_set_progname(argv[0]);
	mp_writes_fail_past_size_limit();
	argv[0] = (char *)mp_progname; /* getopt's messages then name us as ours do */
	const char *root = NULL, *out = NULL, *cats = NULL;
	long classes = 0, size = 128, pad = 0, quality = 95, macrobatch = 1024;
	long seed = 1, jobs = mp_cpu_count(), max_pixels = 1L << 26;
	int macrobatch_given = 0, map_size_given = 0;
	long map_size = (long)MP_DB_DEFAULT_MAP;
	int fit = MP_FIT_PAD, fill = MP_FILL_MEAN, store = MP_STORE_KEEP;
	int shuffle = 0, skip_bad = 0, input_stream = 0, force = 0, quiet = 0;
	const char *packing_opt = NULL; /* an option that only packing uses */
	int c;

	if (jobs < 1)
		jobs = 1;
	if (jobs > 256)
		jobs = 256;
	while ((c = getopt_long(argc, argv, "r:o:c:j:fqhV", long_opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'r': bad = mp_parse_root("--root", optarg, &root); break;
		case 'o': bad = mp_parse_path("--output", optarg, &out); break;
		case 'c': bad = mp_parse_path("--categories", optarg, &cats); break;
		case OPT_CLASSES:
			bad = mp_parse_long("--classes", optarg, 1, MP_MAX_CLASSES, &classes);
			break;
		case OPT_SIZE: bad = mp_parse_long("--size", optarg, 1, 16384, &size); break;
		case OPT_FIT: bad = (fit = mp_parse_keyword("--fit", optarg, fit_names)) < 0; break;
		case OPT_PAD: bad = mp_parse_long("--pad", optarg, 0, 4096, &pad); break;
		case OPT_PAD_FILL:
			bad = (fill = mp_parse_keyword("--pad-fill", optarg, fill_names)) < 0;
			break;
		case OPT_ENCODING:
			bad = (store = mp_parse_keyword("--encoding", optarg, store_names)) < 0;
			break;
		case OPT_QUALITY: bad = mp_parse_long("--quality", optarg, 1, 100, &quality); break;
		case OPT_MACROBATCH:
			bad = mp_parse_long("--macrobatch", optarg, 1, MP_MB_MAX_COUNT, &macrobatch);
			macrobatch_given = 1;
			break;
		case OPT_SHUFFLE: shuffle = 1; break;
		case OPT_SEED: /* the meta document records it exactly */
			bad = mp_parse_long("--seed", optarg, 0, MP_META_MAX_SEED, &seed);
			break;
		case 'j': bad = mp_parse_long("--jobs", optarg, 1, 256, &jobs); break;
		case OPT_SKIP_BAD: skip_bad = 1; break;
		case OPT_MAX_PIXELS:
			bad = mp_parse_long("--max-pixels", optarg, 1, 1L << 40, &max_pixels);
			break;
		case OPT_INPUT_STREAM: input_stream = 1; break;
		case 'f': force = 1; break;
		case OPT_MAP_SIZE:
			bad = mp_parse_long("--map-size", optarg, 1L << 16, 1L << 46, &map_size);
			map_size_given = 1;
			break;
		case 'q': quiet = 1; break;
		case 'h': help(); break;
		case 'V': mp_print_version(); mp_exit_stdout(0);
		default: usage();
		}
		if (bad)
			usage();
		if (c != 'o' && c != 'f' && c != 'q' && c != OPT_MAP_SIZE && c != OPT_INPUT_STREAM)
			packing_opt = option_name(c);
	}
	argc -= optind;
	argv += optind;
	if (argc > 1) {
		mp_warnx("expected at most one LIST, got %d arguments", argc);
		usage();
	}
	const char *unused;
	if (argc && mp_parse_path("LIST", argv[0], &unused) < 0)
		return 2;
	if (cats && classes) {
		mp_warnx("give either -c or --classes, not both");
		usage();
	}
	/* "-o -" is stdout, as "-" is in the other tools: without this it
	 * would make a DB directory named "-" and leave the pipe empty. */
	if (out && !strcmp(out, "-")) {
		if (input_stream) {
			mp_warnx("--input-stream stores the stream in a DB: -o - (stdout) is not one");
			usage();
		}
		out = NULL;
	}
	install_signals();

	if (input_stream) {
		if (!out || argc) {
			mp_warnx("--input-stream reads a stream from stdin and needs -o DB and no LIST");
			usage();
		}
		if (packing_opt) {
			mp_warnx("--%s does not apply to --input-stream, which stores the stream as it is",
				 packing_opt);
			usage();
		}
		/* a binary stream is never typed: the user forgot the "<" */
		if (isatty(STDIN_FILENO)) {
			mp_warnx("refusing to read a binary stream from a terminal: redirect stdin");
			usage();
		}
		return copy_stream(out, (uint64_t)map_size, force, quiet);
	}
	if (!out && isatty(STDOUT_FILENO)) {
		mp_warnx("refusing to write a binary stream to a terminal: give -o DB or redirect stdout");
		usage();
	}
	/* a stream has no DB to replace or map: a script that asks for one
	 * meant -o */
	if (!out && (force || map_size_given)) {
		mp_warnx("%s goes with -o DB; the stream on stdout has no DB to %s",
			 force ? "--force" : "--map-size", force ? "replace" : "map");
		usage();
	}

	mp_error e;
	char **class_names = NULL;
	int nclasses = (int)classes;
	/* the open of a FIFO, and its reads, wait for a writer: a signal
	 * then ends them (EINTR), and the status says which it was */
	char why[600];
	if (cats) {
		FILE *cf = fopen(cats, "r");
		if (!cf) {
			if (!stop_signal)
				mp_warnx("%s: %s", cats, mp_open_error(cats, errno, why, sizeof why));
			return exit_for_failure(0);
		}
		int rc = mp_categories_read(cf, cats, &class_names, &nclasses, &e);
		fclose(cf);
		if (rc < 0) {
			if (!stop_signal)
				mp_warnx("%s", e.msg);
			return exit_for_failure(0);
		}
	}

	const char *list_name = argc ? argv[0] : "<stdin>";
	FILE *lf = argc ? fopen(argv[0], "r") : stdin;
	if (!lf) {
		if (!stop_signal)
			mp_warnx("%s: %s", list_name, mp_open_error(list_name, errno, why, sizeof why));
		mp_categories_free(class_names, nclasses);
		return exit_for_failure(0);
	}
	mp_list list;
	if (mp_list_read(lf, list_name, nclasses, &list, &e) < 0) {
		if (!stop_signal)
			mp_warnx("%s", e.msg);
		mp_categories_free(class_names, nclasses);
		return exit_for_failure(0);
	}
	if (argc)
		fclose(lf);
	if (list.count == 0)
		mp_errx(1, "%s: the list holds no images", list_name);
	if (list.labelled && nclasses == 0)
		nclasses = list.max_label + 1;
	if (mp_list_warn_duplicates(&list, list_name, "packed") < 0)
		mp_errx(1, "%s: out of memory", list_name);
	if (shuffle)
		mp_list_shuffle(&list, (unsigned long long)seed);

	/* every raw record has the same size: a macrobatch that cannot be
	 * written is refused now, not after decoding and holding it */
	if (store == MP_STORE_RAW) {
		const int side = (int)(size + 2 * pad);
		const uint64_t limit = out ? UINT32_MAX : MP_STREAM_MAX_FRAME;
		const char *holder = out ? "a macrobatch" : "a stream frame";
		const uint64_t n = list.count < (size_t)macrobatch ? list.count : (uint64_t)macrobatch;
		const uint64_t fit = (limit - mp_pack_raw_batch_bytes(0, side)) /
				     (mp_pack_raw_batch_bytes(1, side) - mp_pack_raw_batch_bytes(0, side));
		if (fit == 0) {
			mp_warnx("--encoding raw: a record of %dx%d pixels takes %llu bytes, more than "
				 "%s holds (%llu); use a smaller --size or --pad%s", side, side,
				 (unsigned long long)(3 * (uint64_t)side * side), holder,
				 (unsigned long long)limit, out ? "" : ", or write a DB with -o");
		} else if (n > fit) {
			mp_warnx("--macrobatch %ld%s: %llu raw records of %dx%d pixels take more than "
				 "the %llu bytes %s holds; use --macrobatch %llu or less", macrobatch,
				 macrobatch_given ? "" : " (the default)",
				 (unsigned long long)n, side, side, (unsigned long long)limit, holder,
				 (unsigned long long)fit);
		}
		if (fit == 0 || n > fit) {
			mp_categories_free(class_names, nclasses);
			mp_list_free(&list);
			return 2;
		}
	}

	mp_meta meta;
	mp_meta_init(&meta);
	meta.macrobatch_size = (uint32_t)macrobatch;
	meta.size = (int)size;
	meta.height = meta.width = (int)(size + 2 * pad);
	meta.padding = (int)pad;
	snprintf(meta.fit, sizeof meta.fit, "%s", fit_names[fit]);
	snprintf(meta.pad_fill, sizeof meta.pad_fill, "%s", fill_names[fill]);
	snprintf(meta.encoding, sizeof meta.encoding, "%s", store_names[store]);
	meta.quality = (int)quality;
	meta.labelled = list.labelled;
	meta.classes = nclasses;
	meta.class_names = class_names;
	meta.source_list = mp_xstrdup(list_name);
	meta.shuffled = shuffle;
	meta.shuffle_seed = (uint64_t)seed;
	snprintf(meta.created_by, sizeof meta.created_by, "mp-batchwriter %s", MP_VERSION);

	mp_pack_options o = {
		.list_name = list_name,
		.root = root,
		.size = (int)size,
		.pad = (int)pad,
		.quality = (int)quality,
		.png_level = 6,
		.fit = fit,
		.fill = fill,
		.store = store,
		.macrobatch = (uint32_t)macrobatch,
		.jobs = (int)jobs,
		.skip_bad = skip_bad,
		.max_pixels = (uint64_t)max_pixels,
		.quiet = quiet,
		.stop = &stop_signal,
	};
	mp_pack_sink sink = {0};
	if (out) {
		if (!(sink.db = mp_db_writer_open(out, (uint64_t)map_size, force, &e)))
			mp_errx(1, "%s", e.msg);
	} else {
		sink.stream = stdout;
		sink.stream_name = "<stdout>";
	}
	mp_pack_report rep;
	double t0 = mp_now();
	int rc = mp_pack_run(&o, &list, &meta, &sink, &rep, &e);
	int status = 0;
	if (rc < 0) {
		/* The entries skipped so far explain a failure such as "no
		 * records to write" (every entry bad, a wrong -r). */
		print_skips(&rep, &list, list_name, root);
		if (!rep.interrupted)
			mp_warnx("%s", e.msg);
		status = exit_for_failure(out == NULL);
	} else {
		if (!out && fflush(stdout) != 0)
			mp_errx(1, "<stdout>: write error: %s", strerror(errno));
		if (!quiet)
			print_summary("packed", &rep, out ? out : "<stdout>", mp_now() - t0);
		print_skips(&rep, &list, list_name, root);
	}
	mp_pack_report_free(&rep);
	mp_meta_free(&meta);
	mp_list_free(&list);
	return status;
}
