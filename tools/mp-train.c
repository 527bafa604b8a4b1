/* mp-train: trains the residual network on a dataset DB, with validation,
 * checkpoints, a training log and exact resumption. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_backends.h"
#include "mp_cli.h"
#include "mp_list.h"
#include "mp_train.h"
#include "mp_util.h"

static void usage(void)
{
	fprintf(stderr,
		"usage: %s -d TRAIN_DB [-v VAL_DB] -o OUT_DIR [options]\n"
		"Try '%s --help' for the options.\n",
		mp_progname, mp_progname);
	exit(2);
}

static void help(void)
{
	printf("usage: %s -d TRAIN_DB [-v VAL_DB] -o OUT_DIR [options]\n"
	       "Trains the residual network on a dataset DB written by mp-batchwriter.\n"
	       "Defaults are the reference recipe.\n\n"
	       "data\n"
	       "  -d, --train DB          training set (dataset DB)\n"
	       "  -v, --val DB            validation set, evaluated every --eval-every epochs\n"
	       "      --crop N            training crop and validation size (default 112;\n"
	       "                          with --resume, the checkpoint's)\n"
	       "      --scale-min N       shortest side, smallest random scale (default 128)\n"
	       "      --scale-max N       shortest side, largest random scale (default 240)\n"
	       "      --mean R,G,B        the mean to subtract (default: the training set's)\n"
	       "      --classes N         number of classes (default: the training set's)\n"
	       "network (with --resume, those given must match the checkpoint's)\n"
	       "      --depth N           residual blocks per stage (default 9)\n"
	       "      --widths LIST       stage widths (default 32,64,128,256)\n"
	       "      --shortcut A|B      zero-padding or projection shortcuts (default A)\n"
	       "      --stem-kernel K     stem convolution size (default 3)\n"
	       "      --stem-stride S     stem stride (default 2)\n"
	       "      --no-fc-bn          no batch normalization after the classifier\n"
	       "optimizer and schedule\n"
	       "      --batch N           images per step (default 128)\n"
	       "      --epochs N          epochs (default 80)\n"
	       "      --lr X              learning rate (default 0.1)\n"
	       "      --momentum X        momentum (default 0.9)\n"
	       "      --wd X              weight decay (default 0.0005)\n"
	       "      --label-smoothing X label smoothing (default 0)\n"
	       "      --lr-policy P       step or cosine (default step)\n"
	       "      --schedule LIST     step: epochs where the rate drops (default 40,70;\n"
	       "                          none)\n"
	       "      --gamma X           step: factor at each drop (default 0.1)\n"
	       "      --warmup EPOCHS     linear warmup, may be fractional (default 0)\n"
	       "run\n"
	       "  -o, --output DIR        where checkpoints, weights and the log go\n"
	       "      --resume FILE       continue from a checkpoint (the options not given are\n"
	       "                          its run's)\n"
	       "      --force             start over in an OUT_DIR that holds a run\n"
	       "      --eval-every N      validate every N epochs (default 1; 0: at the end)\n"
	       "      --checkpoint-every N  checkpoint every N epochs (default 1)\n"
	       "      --keep N            checkpoints kept (default 3; 0: all)\n"
	       "      --seed N            initialisation, data order, augmentation (default 1)\n"
	       "      --backend NAME      cpu, cpu-ref, cuda or auto (default cpu)\n"
	       "      --device N          the CUDA device for cuda and auto (default 0;\n"
	       "                          mp-train -V lists them)\n"
	       "      --precision NAME    fp32, bf16 (GPU tensor cores) or auto (default:\n"
	       "                          bf16 where the backend has it, else fp32)\n"
	       "      --threads N         CPU backends' compute threads (default: the cores\n"
	       "                          it may use)\n"
	       "      --loader-threads N  decoding threads (default 2; with cuda, the cores it\n"
	       "                          may use but two)\n"
	       "      --augment WHERE     loader (default): the loader's threads decode and\n"
	       "                          augment every batch; backend: the training set is\n"
	       "                          decoded once into the backend's memory (a GPU's)\n"
	       "                          and augmented there; the same batches either way\n"
	       "      --max-steps N       stop after N steps in all, as at the end (smoke runs)\n"
	       "      --log FILE          training log (default OUT_DIR/train.log; -: stdout)\n"
	       "      --log-every N       a log row every N steps (default 50; 0: epochs only)\n"
	       "  -q, --quiet             no progress or summaries\n"
	       "  -h, --help              this help\n"
	       "  -V, --version           version and backends\n",
	       mp_progname);
	mp_exit_stdout(0);
}

enum {
	OPT_DEPTH = 256, OPT_WIDTHS, OPT_SHORTCUT, OPT_STEM_KERNEL, OPT_STEM_STRIDE,
	OPT_NO_FC_BN, OPT_CLASSES, OPT_CROP, OPT_SCALE_MIN, OPT_SCALE_MAX, OPT_MEAN,
	OPT_BATCH, OPT_EPOCHS, OPT_LR, OPT_MOMENTUM, OPT_WD, OPT_SMOOTHING, OPT_POLICY,
	OPT_SCHEDULE, OPT_GAMMA, OPT_WARMUP, OPT_RESUME, OPT_FORCE, OPT_EVAL_EVERY,
	OPT_CKPT_EVERY, OPT_KEEP, OPT_SEED, OPT_BACKEND, OPT_PRECISION, OPT_THREADS, OPT_LOADER_THREADS, OPT_AUGMENT,
	OPT_MAX_STEPS, OPT_LOG, OPT_LOG_EVERY, OPT_DEVICE,
};

/* The options a resumed run takes from the checkpoint's run when they are
 * not given (mp_train_opts.train_given). */
static const struct {
	int opt;
	unsigned bit;
} resumable[] = {
	{OPT_SCALE_MIN, MP_TRAIN_OPT_SCALE_MIN},
	{OPT_SCALE_MAX, MP_TRAIN_OPT_SCALE_MAX},
	{OPT_BATCH, MP_TRAIN_OPT_BATCH},
	{OPT_EPOCHS, MP_TRAIN_OPT_EPOCHS},
	{OPT_LR, MP_TRAIN_OPT_LR},
	{OPT_MOMENTUM, MP_TRAIN_OPT_MOMENTUM},
	{OPT_WD, MP_TRAIN_OPT_WD},
	{OPT_SMOOTHING, MP_TRAIN_OPT_SMOOTHING},
	{OPT_POLICY, MP_TRAIN_OPT_POLICY},
	{OPT_SCHEDULE, MP_TRAIN_OPT_SCHEDULE},
	{OPT_GAMMA, MP_TRAIN_OPT_GAMMA},
	{OPT_WARMUP, MP_TRAIN_OPT_WARMUP},
	{OPT_EVAL_EVERY, MP_TRAIN_OPT_EVAL_EVERY},
	{OPT_CKPT_EVERY, MP_TRAIN_OPT_CHECKPOINT_EVERY},
	{OPT_KEEP, MP_TRAIN_OPT_KEEP},
	{OPT_SEED, MP_TRAIN_OPT_SEED},
	{OPT_BACKEND, MP_TRAIN_OPT_BACKEND},
	{OPT_PRECISION, MP_TRAIN_OPT_PRECISION},
	{OPT_LOG, MP_TRAIN_OPT_LOG},
	{OPT_LOG_EVERY, MP_TRAIN_OPT_LOG_EVERY},
};

static const struct option long_opts[] = {
	{"train", required_argument, NULL, 'd'},
	{"val", required_argument, NULL, 'v'},
	{"output", required_argument, NULL, 'o'},
	{"depth", required_argument, NULL, OPT_DEPTH},
	{"widths", required_argument, NULL, OPT_WIDTHS},
	{"shortcut", required_argument, NULL, OPT_SHORTCUT},
	{"stem-kernel", required_argument, NULL, OPT_STEM_KERNEL},
	{"stem-stride", required_argument, NULL, OPT_STEM_STRIDE},
	{"no-fc-bn", no_argument, NULL, OPT_NO_FC_BN},
	{"classes", required_argument, NULL, OPT_CLASSES},
	{"crop", required_argument, NULL, OPT_CROP},
	{"scale-min", required_argument, NULL, OPT_SCALE_MIN},
	{"scale-max", required_argument, NULL, OPT_SCALE_MAX},
	{"mean", required_argument, NULL, OPT_MEAN},
	{"batch", required_argument, NULL, OPT_BATCH},
	{"epochs", required_argument, NULL, OPT_EPOCHS},
	{"lr", required_argument, NULL, OPT_LR},
	{"momentum", required_argument, NULL, OPT_MOMENTUM},
	{"wd", required_argument, NULL, OPT_WD},
	{"label-smoothing", required_argument, NULL, OPT_SMOOTHING},
	{"lr-policy", required_argument, NULL, OPT_POLICY},
	{"schedule", required_argument, NULL, OPT_SCHEDULE},
	{"gamma", required_argument, NULL, OPT_GAMMA},
	{"warmup", required_argument, NULL, OPT_WARMUP},
	{"resume", required_argument, NULL, OPT_RESUME},
	{"force", no_argument, NULL, OPT_FORCE},
	{"eval-every", required_argument, NULL, OPT_EVAL_EVERY},
	{"checkpoint-every", required_argument, NULL, OPT_CKPT_EVERY},
	{"keep", required_argument, NULL, OPT_KEEP},
	{"seed", required_argument, NULL, OPT_SEED},
	{"backend", required_argument, NULL, OPT_BACKEND},
	{"device", required_argument, NULL, OPT_DEVICE},
	{"precision", required_argument, NULL, OPT_PRECISION},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"loader-threads", required_argument, NULL, OPT_LOADER_THREADS},
	{"augment", required_argument, NULL, OPT_AUGMENT},
	{"max-steps", required_argument, NULL, OPT_MAX_STEPS},
	{"log", required_argument, NULL, OPT_LOG},
	{"log-every", required_argument, NULL, OPT_LOG_EVERY},
	{"quiet", no_argument, NULL, 'q'},
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'V'},
	{NULL, 0, NULL, 0},
};

/* ---- signals: the first stops after the step, a second one kills ---------- */

/* atomic: the handler may run on a loader thread */
static atomic_int stop_signal;
/* signals caught: counted atomically, since two sent at once can reach
 * two threads' handlers at once, and only one of them is the first */
static atomic_int signals_caught;
/* a progress bar may be drawn on stderr: set before the handler is */
static int bar_on_stderr;

static void on_signal(int sig)
{
	/* The reader of stdout (or of a --log pipe) went away: the run stops
	 * as for SIGTERM, with a checkpoint. Every later write to that pipe
	 * fails with EPIPE rather than raising the signal again, which would
	 * end the run at once as a second signal does. */
	if (sig == SIGPIPE) {
		signal(SIGPIPE, SIG_IGN);
		if (atomic_fetch_add(&signals_caught, 1) > 0)
			return;
	} else if (atomic_fetch_add(&signals_caught, 1) > 0) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	stop_signal = sig;
	static const char msg[] = "\nmp-train: stopping at the end of this step (or validation batch) "
				  "to write a checkpoint (signal again to abort)\n";
	/* the newline ends a progress bar's line, where one is drawn */
	const int skip = !bar_on_stderr;
	ssize_t ignored = write(STDERR_FILENO, msg + skip, sizeof msg - 1 - skip);
	(void)ignored;
}

/* ---- the command that resumes -------------------------------------------------- */

static void print_quoted(FILE *f, const char *s)
{
	if (*s && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789-_./,=:+@%") == strlen(s)) {
		fputs(s, f);
		return;
	}
	fputc('\'', f);
	for (; *s; s++)
		if (*s == '\'')
			fputs("'\\''", f);
		else
			fputc(*s, f);
	fputc('\'', f);
}

/* The entry of long_opts that the argument a (--name, --name=VALUE)
 * stands for, as getopt_long took it: in full, or abbreviated (--res) when
 * only one option starts so. */
static const struct option *long_opt_of(const char *a)
{
	const size_t n = strcspn(a + 2, "=");
	const struct option *found = NULL;
	for (const struct option *p = long_opts; p->name; p++) {
		if (strncmp(p->name, a + 2, n))
			continue;
		if (strlen(p->name) == n)
			return p;
		found = found ? NULL : p;
	}
	return found;
}

/* The signal's name, as the messages give it. */
static const char *signal_text(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGHUP ? "SIGHUP"
	       : sig == SIGPIPE ? "SIGPIPE (the reader of its output went away)" : "SIGTERM";
}

/* The same command line without --resume and --force, in any spelling
 * getopt_long takes, then --resume FILE. An option's value is copied as
 * it is, whatever it looks like. */
static void print_resume_command(FILE *f, const char *invoked_as, int argc, char **argv,
				 const char *checkpoint)
{
	fputs("  ", f);
	print_quoted(f, invoked_as);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int takes_next = 0;
		if (!strcmp(a, "--"))
			break;
		if (!strncmp(a, "--", 2)) {
			const struct option *p = long_opt_of(a);
			takes_next = p && p->has_arg == required_argument && !strchr(a, '=');
			if (p && (p->val == OPT_FORCE || p->val == OPT_RESUME)) {
				i += takes_next;
				continue;
			}
		} else if (a[0] == '-') {
			/* -qd DB, -dDB: the value follows the first of d, v, o */
			const size_t k = strcspn(a + 1, "dvo");
			takes_next = a[1 + k] && !a[2 + k];
		}
		for (int j = 0; j <= takes_next && i + j < argc; j++) {
			fputc(' ', f);
			print_quoted(f, argv[i + j]);
		}
		i += takes_next;
	}
	fputs(" --resume ", f);
	print_quoted(f, checkpoint);
	fputc('\n', f);
}

static int parse_int(const char *opt, const char *s, long min, long max, int *out)
{
	long v;
	if (mp_parse_long(opt, s, min, max, &v) < 0)
		return -1;
	*out = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	mp_guard_std_fds();
	mp_set_progname(argv[0]);
	mp_writes_fail_past_size_limit();
	const char *invoked_as = argv[0]; /* the resume command repeats the path as typed */
	argv[0] = (char *)mp_progname; /* getopt's messages then name us as ours do */
	mp_train_opts o;
	mp_train_opts_default(&o);
	int c;
	long v;
	long widths[MP_MAX_STAGES];
	static const char *const policies[] = {"step", "cosine", NULL};
	static const char *const shortcuts[] = {"A", "B", NULL};
	mp_error e;

	while ((c = getopt_long(argc, argv, "d:v:o:qhV", long_opts, NULL)) != -1) {
		int bad = 0, n;
		switch (c) {
		case 'd': bad = mp_parse_path("--train", optarg, &o.train_db); break;
		case 'v': bad = mp_parse_path("--val", optarg, &o.val_db); break;
		case 'o': bad = mp_parse_dir_path("--output", optarg, &o.out_dir); break;
		case 'q': o.quiet = 1; break;
		case 'h': help(); break;
		case 'V': mp_print_version(); mp_exit_stdout(0);
		case OPT_DEPTH:
			bad = parse_int("--depth", optarg, 1, 1000, &o.net.depth);
			o.net_given |= MP_TRAIN_NET_DEPTH;
			break;
		case OPT_WIDTHS:
			n = mp_parse_long_list("--widths", optarg, 1, 65536, widths, 1, MP_MAX_STAGES);
			bad = n < 0;
			for (int i = 0; i < n; i++)
				o.net.widths[i] = (int)widths[i];
			o.net.stages = n < 0 ? 0 : n;
			o.net_given |= MP_TRAIN_NET_WIDTHS;
			break;
		case OPT_SHORTCUT:
			n = mp_parse_keyword("--shortcut", optarg, shortcuts);
			bad = n < 0;
			o.net.shortcut = n == 1 ? 'B' : 'A';
			o.net_given |= MP_TRAIN_NET_SHORTCUT;
			break;
		case OPT_STEM_KERNEL:
			bad = parse_int("--stem-kernel", optarg, 1, 15, &o.net.stem_kernel);
			o.net_given |= MP_TRAIN_NET_STEM_KERNEL;
			break;
		case OPT_STEM_STRIDE:
			bad = parse_int("--stem-stride", optarg, 1, 8, &o.net.stem_stride);
			o.net_given |= MP_TRAIN_NET_STEM_STRIDE;
			break;
		case OPT_NO_FC_BN:
			o.net.fc_bn = 0;
			o.net_given |= MP_TRAIN_NET_FC_BN;
			break;
		case OPT_CLASSES: /* the network's bounds: one class has nothing to tell apart */
			bad = parse_int("--classes", optarg, 2, MP_MAX_CLASSES, &o.net.classes);
			break;
		case OPT_CROP:
			bad = parse_int("--crop", optarg, 1, 4096, &o.net.input_size);
			o.has_crop = 1;
			break;
		case OPT_SCALE_MIN:
			bad = parse_int("--scale-min", optarg, 1, 65535, &o.scale_min);
			break;
		case OPT_SCALE_MAX:
			bad = parse_int("--scale-max", optarg, 1, 65535, &o.scale_max);
			break;
		case OPT_MEAN:
			bad = mp_parse_double_list("--mean", optarg, 0, 255, o.net.mean, 3, 3) < 0;
			o.has_mean = 1;
			break;
		case OPT_BATCH:
			bad = parse_int("--batch", optarg, 2, 65536, &o.batch);
			break;
		case OPT_EPOCHS:
			bad = parse_int("--epochs", optarg, 1, 1000000, &o.epochs);
			break;
		case OPT_LR:
			bad = mp_parse_double("--lr", optarg, 1e-12, 1e12, &o.lr);
			break;
		case OPT_MOMENTUM:
			bad = mp_parse_double("--momentum", optarg, 0, 0.999999, &o.momentum);
			break;
		case OPT_WD:
			bad = mp_parse_double("--wd", optarg, 0, 1, &o.wd);
			break;
		case OPT_SMOOTHING:
			bad = mp_parse_double("--label-smoothing", optarg, 0, 0.999, &o.smoothing);
			break;
		case OPT_POLICY:
			n = mp_parse_keyword("--lr-policy", optarg, policies);
			bad = n < 0;
			o.schedule.policy = n == 1 ? MP_LR_COSINE : MP_LR_STEP;
			break;
		case OPT_SCHEDULE:
			if (!strcmp(optarg, "none")) {
				o.schedule.nmilestones = 0;
			} else if (mp_schedule_parse_milestones(&o.schedule, optarg, &e) < 0) {
				mp_warnx("--schedule: %s", e.msg);
				bad = 1;
			}
			break;
		case OPT_GAMMA:
			bad = mp_parse_double("--gamma", optarg, 1e-9, 1, &o.schedule.gamma);
			break;
		case OPT_WARMUP:
			bad = mp_parse_double("--warmup", optarg, 0, 1e6, &o.schedule.warmup);
			break;
		case OPT_RESUME: bad = mp_parse_path("--resume", optarg, &o.resume); break;
		case OPT_FORCE: o.force = 1; break;
		case OPT_EVAL_EVERY:
			bad = parse_int("--eval-every", optarg, 0, 1000000, &o.eval_every);
			break;
		case OPT_CKPT_EVERY:
			bad = parse_int("--checkpoint-every", optarg, 1, 1000000, &o.checkpoint_every);
			break;
		case OPT_KEEP:
			bad = parse_int("--keep", optarg, 0, 1000000, &o.keep);
			break;
		case OPT_SEED:
			bad = mp_parse_long("--seed", optarg, 0, 0x7fffffffffffffffL, &v);
			o.seed = (uint64_t)v;
			break;
		case OPT_BACKEND:
			bad = mp_parse_keyword("--backend", optarg, mp_backend_names) < 0;
			o.backend = optarg;
			break;
		case OPT_PRECISION:
			bad = mp_parse_keyword("--precision", optarg, mp_precision_names) < 0;
			o.precision = optarg;
			break;
		case OPT_DEVICE: bad = parse_int("--device", optarg, 0, 1023, &o.device); break;
		case OPT_THREADS: bad = parse_int("--threads", optarg, 1, 1024, &o.threads); break;
		case OPT_LOADER_THREADS:
			bad = parse_int("--loader-threads", optarg, 1, 256, &o.loader_threads);
			break;
		case OPT_AUGMENT: {
			static const char *const where[] = {"loader", "backend", NULL};
			const int k = mp_parse_keyword("--augment", optarg, where);
			bad = k < 0;
			o.augment_backend = k == 1;
			break;
		}
		case OPT_MAX_STEPS:
			bad = mp_parse_long("--max-steps", optarg, 1, 0x7fffffffffffffffL, &o.max_steps);
			break;
		case OPT_LOG:
			bad = mp_parse_path("--log", optarg, &o.log_path);
			break;
		case OPT_LOG_EVERY:
			bad = parse_int("--log-every", optarg, 0, 1000000000, &o.log_every);
			break;
		default: usage();
		}
		for (size_t i = 0; i < sizeof resumable / sizeof *resumable; i++)
			if (c == resumable[i].opt)
				o.train_given |= resumable[i].bit;
		if (bad)
			return 2;
	}
	if (optind < argc) {
		mp_warnx("unexpected argument \"%s\"", argv[optind]);
		usage();
	}
	if (!o.train_db || !o.out_dir) {
		mp_warnx("%s", !o.train_db ? "-d TRAIN_DB is required" : "-o OUT_DIR is required");
		usage();
	}
	o.schedule.base = o.lr;
	o.schedule.epochs = o.epochs;
	/* with --resume, the options not given are the checkpoint's: the
	 * schedule is checked once they are known */
	if (!o.resume && mp_schedule_check(&o.schedule, &e) < 0) {
		mp_warnx("%s", e.msg);
		return 2;
	}

	/* SIGHUP: the terminal or ssh session went away; SIGPIPE: the reader
	 * of stdout did (mp-train | head); a signal ignored on entry (SIGINT
	 * in a shell's background job) stays ignored; the run stops after its
	 * step, so a read or write the signal comes during (a FIFO's open)
	 * goes on */
	bar_on_stderr = !o.quiet && isatty(STDERR_FILENO);
	mp_catch_stop_signals(on_signal, 1, 0, 1);
	o.stop = &stop_signal;

	mp_train_result r;
	int status = mp_train_run(&o, &r, &e);
	switch (status) {
	case MP_TRAIN_DONE:
		if (!o.quiet) {
			if (r.val_top1 >= 0)
				printf("final validation error: %.2f%% top-1, %.2f%% top-5\n",
				       100 * r.val_top1, 100 * r.val_top5);
			printf("weights: %s (%ld step%s, %.0f s)\n", r.weights, r.steps,
			       r.steps == 1 ? "" : "s", r.seconds);
		}
		/* stdout that could not be written (a full disk, >&-) fails the
		 * run, its outputs being written all the same */
		mp_exit_stdout(0);
	case MP_TRAIN_STOPPED_AT_START:
		fprintf(stderr, "%s: interrupted by %s as the run started, before its log: nothing "
				"was written%s%s\n",
			mp_progname, signal_text(stop_signal), o.resume ? "; the run is still at " : "",
			o.resume ? o.resume : "");
		return 128 + stop_signal;
	case MP_TRAIN_STOPPED:
		fprintf(stderr, "%s: interrupted by %s after step %ld; checkpoint %s\n"
				"resume with:\n",
			mp_progname, signal_text(stop_signal), r.steps, r.checkpoint);
		print_resume_command(stderr, invoked_as, argc, argv, r.checkpoint);
		return 128 + stop_signal;
	case MP_TRAIN_BAD_SETUP:
		mp_warnx("%s", e.msg);
		return 2;
	default:
		mp_warnx("%s", e.msg);
		/* hours of training need not be lost to a device's fault or a
		 * full disk: what was saved goes on, once the cause is mended
		 * (a run that diverged would again: its message says where the
		 * last good checkpoint is) */
		if (r.checkpoint[0] && !r.diverged) {
			fprintf(stderr, "%s: the run can go on from its last checkpoint, %s, with:\n",
				mp_progname, r.checkpoint);
			print_resume_command(stderr, invoked_as, argc, argv, r.checkpoint);
		}
		return 1;
	}
}
