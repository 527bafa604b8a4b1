#include "mp_train.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_backends.h"
#include "mp_loader.h"
#include "mp_metrics.h"
#include "mp_weights.h"

#define PATH_LEN 4096

/* dir/name into buf (PATH_LEN); -1 if it does not fit. */
static int join(char *buf, const char *dir, const char *name)
{
	/* -o out/, as a shell completes it: out/weights.safetensors, not out//... */
	const size_t len = strlen(dir);
	int n = snprintf(buf, PATH_LEN, "%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/", name);
	return n < 0 || n >= PATH_LEN ? -1 : 0;
}

static void copy_path(char *dst, const char *src)
{
	size_t n = strnlen(src, PATH_LEN - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

#define LOG_HEADER                                                                   \
	"kind\tepoch\tstep\tlr\tloss\ttrain_top1_err\ttrain_top5_err\tval_loss\t"   \
	"val_top1_err\tval_top5_err\timages_per_s\telapsed_s\n"

void mp_train_opts_default(mp_train_opts *o)
{
	memset(o, 0, sizeof *o);
	mp_resnet_config_default(&o->net);
	o->net.classes = 0;
	o->scale_min = 128;
	o->scale_max = 240;
	o->batch = 128;
	o->epochs = 80;
	o->lr = 0.1;
	o->momentum = 0.9;
	o->wd = 5e-4;
	o->schedule.policy = MP_LR_STEP;
	o->schedule.gamma = 0.1;
	o->schedule.milestones[0] = 40;
	o->schedule.milestones[1] = 70;
	o->schedule.nmilestones = 2;
	o->eval_every = 1;
	o->checkpoint_every = 1;
	o->keep = 3;
	o->seed = 1;
	o->loader_threads = 0;
	o->backend = "cpu";
	o->device = -1;
	o->precision = "auto";
	o->log_every = 50;
}

/* Sums over some steps, for a log row or an epoch. */
typedef struct {
	double loss;	/* sum of per-image losses */
	double images, top1, top5; /* images seen, correct in the top 1 and 5 */
	double seconds;
} sums;

typedef struct {
	const mp_train_opts *o; /* &opts */
	mp_train_opts opts;	/* the caller's, with --resume those not given the checkpoint's */
	char options_taken[512 + PATH_LEN]; /* --resume: those options, as the command line gives them */
	char log_taken[PATH_LEN]; /* --resume: the run's --log, when it gave one */
	mp_train_result *r;
	mp_backend *be;
	mp_resnet *net;
	mp_loader *train, *val;
	FILE *log;
	char log_path[PATH_LEN];
	int log_stdout;		/* --log -: the log is standard output */
	int log_gone;		/* the log is a pipe whose reader went away */
	char *options_json;
	char compute[128];	/* the backend's arithmetic (mp_backend_arithmetic) */
	char **class_names;
	int classes;
	long steps_per_epoch;
	/* where the run stands */
	int epoch;		/* the epoch in progress, from 0 */
	long batch;		/* batches done of it */
	long step;		/* optimizer steps in all */
	double lr;
	double elapsed0;	/* seconds trained by earlier sessions */
	double start;
	sums epoch_sums, interval;
	/* a signal stopped the run before the validation due where it stands
	 * (the end of an epoch, or of a --max-steps run): epoch_sums are then
	 * that epoch's, for the row and the summary the validation completes */
	int val_missed;
	char last_good[PATH_LEN];	/* the newest checkpoint on disk */
	int made_out_dir;		/* the output directory is this run's: the levels
					 * of its path that it made */
	int out_dir_fd;			/* held with a lock while the run uses it; -1 */
	int log_lock_fd;		/* the log as it was at the start, locked; -1 */
	mp_st_file ckpt;	/* --resume: the checkpoint, read once */
	mp_resnet_config ckpt_net; /* and its network */
	double kept_seconds;	/* --augment backend: the time decoding the set took */
} trainer;

static double elapsed(const trainer *t)
{
	return t->elapsed0 + (mp_now() - t->start);
}

/* ---- output directory ---------------------------------------------------- */

/* Removes path and then its parents, levels directories in all, each only
 * if empty: what make_dirs made, when the start that made them fails. */
static void remove_made_dirs(const char *path, int levels)
{
	char buf[PATH_LEN];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return;
	for (int i = 0; i < levels; i++) {
		size_t n = strlen(buf);
		while (n > 1 && buf[n - 1] == '/')
			buf[--n] = '\0';
		if (rmdir(buf) < 0)
			return;
		char *slash = strrchr(buf, '/');
		if (!slash || slash == buf)
			return;
		*slash = '\0';
	}
}

/* mkdir -p; *made: how many of the path's directories it made, the
 * deepest among them (none made, on failure). */
static int make_dirs(const char *path, int *made, mp_error *e)
{
	char buf[PATH_LEN];
	*made = 0;
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return mp_seterr(e, "%s: path too long", path);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p)
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, 0777) == 0) {
			++*made;
		} else if (errno != EEXIST) {
			mp_seterr(e, "%s: cannot create the directory: %s", buf, strerror(errno));
			char *slash = strrchr(buf, '/'); /* the ones made end at the parent */
			if (slash && slash > buf) {
				*slash = '\0';
				remove_made_dirs(buf, *made);
			}
			*made = 0;
			return -1;
		}
		*p = c;
		if (!c)
			break;
	}
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		return mp_seterr(e, "%s: not a directory", path);
	return 0;
}

/* A probe file shows a read-only place before hours of training, not after;
 * one a killed start left is removed by remove_stale_temporaries. */
#define PROBE_PREFIX ".mp-train-probe-"
static int check_writable(const char *dir, mp_error *e)
{
	char probe[PATH_LEN];
	char name[64];
	snprintf(name, sizeof name, PROBE_PREFIX "%ld", (long)getpid());
	if (join(probe, dir, name) < 0)
		return mp_seterr(e, "%s: path too long", dir);
	FILE *f = fopen(probe, "w");
	if (!f)
		return mp_seterr(e, "%s: cannot write in the output directory: %s", dir,
				 strerror(errno));
	fclose(f);
	unlink(probe);
	return 0;
}

/* checkpoint-EEEE.safetensors after EEEE epochs, or
 * checkpoint-EEEE-BBBBBB.safetensors BBBBBB batches into the next one. */
static void checkpoint_name(char *buf, size_t n, int epochs, long batch)
{
	if (batch)
		snprintf(buf, n, "checkpoint-%04d-%06ld.safetensors", epochs, batch);
	else
		snprintf(buf, n, "checkpoint-%04d.safetensors", epochs);
}

/* The position a checkpoint file name stands for, or -1 for another file. */
static int parse_checkpoint_name(const char *name, int *epochs, long *batch)
{
	char again[256];
	int len = 0;
	*batch = 0;
	if (sscanf(name, "checkpoint-%d-%ld.safetensors%n", epochs, batch, &len) == 2 &&
	    !name[len] && *epochs >= 0 && *batch > 0)
		checkpoint_name(again, sizeof again, *epochs, *batch);
	else if (*batch = 0, sscanf(name, "checkpoint-%d.safetensors%n", epochs, &len) == 1 &&
		 !name[len] && *epochs >= 0)
		checkpoint_name(again, sizeof again, *epochs, 0);
	else
		return -1;
	return strcmp(again, name) ? -1 : 0;
}

/* The name of the checkpoint of dir at the latest position, or 0 for none:
 * what a resume goes on from where last.safetensors is missing (a run
 * killed between its first checkpoint and the link to it). */
static int newest_checkpoint(const char *dir, char *name, size_t n)
{
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0, newest_ep = -1;
	long newest_b = 0;
	while ((de = readdir(d))) {
		int ep;
		long b;
		if (parse_checkpoint_name(de->d_name, &ep, &b) < 0 ||
		    (found && (ep < newest_ep || (ep == newest_ep && b < newest_b))))
			continue;
		found = 1;
		newest_ep = ep;
		newest_b = b;
		snprintf(name, n, "%s", de->d_name);
	}
	closedir(d);
	return found;
}

static int previous_run(const char *dir, char *what, size_t n)
{
	static const char *const files[] = {"train.log", "weights.safetensors",
					    "last.safetensors"};
	char path[PATH_LEN];
	struct stat st;
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		if (join(path, dir, files[i]) == 0 && lstat(path, &st) == 0) {
			snprintf(what, n, "%s", files[i]);
			return 1;
		}
	}
	DIR *d = opendir(dir);
	struct dirent *de;
	int found = 0;
	while (d && !found && (de = readdir(d))) {
		int ep;
		long b;
		if (parse_checkpoint_name(de->d_name, &ep, &b) == 0) {
			snprintf(what, n, "%s", de->d_name);
			found = 1;
		}
	}
	if (d)
		closedir(d);
	return found;
}

/* Unlinks path unless it is the file keep (the new run's open log). */
static void remove_unless(const char *path, const struct stat *keep)
{
	struct stat st;
	if (stat(path, &st) == 0 && st.st_dev == keep->st_dev && st.st_ino == keep->st_ino)
		return;
	unlink(path);
}

/* Removes the files of a previous run (--force), all but the file keep. */
static void remove_previous_run(const char *dir, const struct stat *keep)
{
	static const char *const files[] = {"train.log", "weights.safetensors",
					    "last.safetensors"};
	char path[PATH_LEN];
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		if (join(path, dir, files[i]) == 0)
			remove_unless(path, keep);
	}
	DIR *d = opendir(dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		int ep;
		long b;
		if (parse_checkpoint_name(de->d_name, &ep, &b) == 0) {
			if (join(path, dir, de->d_name) == 0)
				remove_unless(path, keep);
		}
	}
	if (d)
		closedir(d);
}

/* Whether the file path lies in the directory dir (the same directory,
 * by device and inode). */
static int in_dir(const char *path, const char *dir)
{
	char parent[PATH_LEN];
	if (mp_parent_dir(path, parent, sizeof parent) < 0)
		return 0;
	struct stat a, b;
	return stat(parent, &a) == 0 && stat(dir, &b) == 0 && a.st_dev == b.st_dev &&
	       a.st_ino == b.st_ino;
}

/* Whether log names a file that the run writes or removes in out_dir
 * (a checkpoint, weights.safetensors, last.safetensors, their temporaries,
 * the probe), which would overwrite or remove the log: a name of theirs
 * in out_dir, once made. */
static int log_among_run_files(const char *log, const char *out_dir)
{
	const char *slash = strrchr(log, '/');
	const char *name = slash ? slash + 1 : log;
	const size_t n = strlen(name), ext = strlen(".safetensors");
	return ((n >= ext && !strcmp(name + n - ext, ".safetensors")) ||
		strstr(name, ".safetensors.tmp-") ||
		!strncmp(name, PROBE_PREFIX, strlen(PROBE_PREFIX))) &&
	       in_dir(log, out_dir);
}

/* Removes the temporary files of our writes ("checkpoint-*.safetensors",
 * "weights.safetensors" or "last.safetensors", then ".tmp-<pid>", and the
 * probe of check_writable) that a run no longer alive left behind: one
 * killed while writing, such as by a second signal or SIGKILL. */
static void remove_stale_temporaries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		const char *tag = strstr(n, ".safetensors.tmp-");
		const char *pid = tag ? tag + 17 : NULL;
		if (!tag || (strncmp(n, "checkpoint-", 11) && strncmp(n, "weights.", 8) &&
			     strncmp(n, "last.", 5)))
			pid = strncmp(n, PROBE_PREFIX, strlen(PROBE_PREFIX)) ? NULL
									    : n + strlen(PROBE_PREFIX);
		if (!pid || !mp_pid_gone(pid))
			continue; /* not ours, or its run may still be writing it */
		char path[PATH_LEN];
		if (join(path, dir, n) == 0 && unlink(path) == 0)
			mp_warnx("removed %s, left by an interrupted run", path);
	}
	closedir(d);
}

/* Keeps the newest `keep` checkpoints up to the current position; later
 * ones (left by a run resumed from an earlier point) are overwritten as the
 * run gets there, and are left alone until then. */
static void prune_checkpoints(const trainer *t, int epochs, long batch)
{
	int keep = t->o->keep;
	if (keep <= 0)
		return;
	DIR *d = opendir(t->o->out_dir);
	if (!d)
		return;
	typedef struct {
		int epochs;
		long batch;
		char name[256];
	} entry;
	entry *list = NULL;
	size_t count = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		int ep;
		long b;
		if (parse_checkpoint_name(de->d_name, &ep, &b) < 0 || strlen(de->d_name) >= 256)
			continue;
		if (ep > epochs || (ep == epochs && b > batch))
			continue;
		if (count == cap) {
			cap = cap ? cap * 2 : 16;
			entry *grown = realloc(list, cap * sizeof *list);
			if (!grown)
				break;
			list = grown;
		}
		list[count].epochs = ep;
		list[count].batch = b;
		snprintf(list[count].name, sizeof list[count].name, "%s", de->d_name);
		count++;
	}
	closedir(d);
	/* every one older than the keep newest goes */
	for (size_t i = 0; i < count; i++) {
		size_t newer = 0;
		for (size_t j = 0; j < count; j++)
			if (list[j].epochs > list[i].epochs ||
			    (list[j].epochs == list[i].epochs && list[j].batch > list[i].batch))
				newer++;
		if (newer >= (size_t)keep) {
			char path[PATH_LEN];
			if (join(path, t->o->out_dir, list[i].name) == 0)
				unlink(path);
		}
	}
	free(list);
}

/* last.safetensors: a relative symbolic link, replaced atomically. */
static int link_last(const trainer *t, const char *name, mp_error *e)
{
	char tmp[PATH_LEN], path[PATH_LEN];
	char tmpname[64];
	snprintf(tmpname, sizeof tmpname, "last.safetensors.tmp-%ld", (long)getpid());
	if (join(path, t->o->out_dir, "last.safetensors") < 0 ||
	    join(tmp, t->o->out_dir, tmpname) < 0)
		return mp_seterr(e, "%s: path too long", t->o->out_dir);
	unlink(tmp);
	if (symlink(name, tmp) < 0)
		return mp_seterr(e, "%s: %s", tmp, strerror(errno));
	if (rename(tmp, path) < 0) {
		int err = errno;
		unlink(tmp);
		return mp_seterr(e, "%s: %s", path, strerror(err));
	}
	mp_sync_parent_dir(path);
	return 0;
}

/* A run resumed from a checkpoint of its directory: last.safetensors
 * names that one, so that a resume from it goes on from where this run
 * is. Where others come after it (from a run that went past it), a
 * warning says that they stay until this run writes its own at their
 * positions (--keep does not count them until then). */
static int resumed_checkpoint_last(const trainer *t, mp_error *e)
{
	DIR *d = opendir(t->o->out_dir);
	if (!d)
		return 0;
	struct dirent *de;
	int later = 0, newest_ep = -1;
	long newest_b = 0;
	char newest[256] = "";
	while ((de = readdir(d))) {
		int ep;
		long b;
		if (parse_checkpoint_name(de->d_name, &ep, &b) < 0 ||
		    !(ep > t->epoch || (ep == t->epoch && b > t->batch)))
			continue;
		later++;
		if (ep > newest_ep || (ep == newest_ep && b > newest_b)) {
			newest_ep = ep;
			newest_b = b;
			snprintf(newest, sizeof newest, "%s", de->d_name);
		}
	}
	closedir(d);
	char name[64], path[PATH_LEN];
	checkpoint_name(name, sizeof name, t->epoch, t->batch);
	const int here = join(path, t->o->out_dir, name) == 0 && mp_same_file(path, t->o->resume);
	if (here && link_last(t, name, e) < 0)
		return -1;
	/* the removals a kill after the checkpoint cut short; after the
	 * last one, no later checkpoint of the run would make them */
	if (here)
		prune_checkpoints(t, t->epoch, t->batch);
	if (!later)
		return 0;
	mp_warnx("%s: %d checkpoint%s after this one's step, up to %s, from a run that went past "
		 "it: each stays until this run writes its own in its place%s",
		 t->o->out_dir, later, later == 1 ? "" : "s", newest,
		 here ? "; last.safetensors names the resumed one" : "");
	return 0;
}

/* ---- checkpoints ----------------------------------------------------------- */

static char *sums_text(const sums *s)
{
	char *out = malloc(160);
	if (out)
		snprintf(out, 160, "%.17g,%.17g,%.17g,%.17g,%.17g", s->loss, s->images,
			 s->top1, s->top5, s->seconds);
	return out;
}

/* Every value that is to be written finite, or an error that stops the run:
 * a step whose loss was finite can still leave NaN or infinity behind (a
 * running variance that overflowed, an update that did), and a checkpoint
 * or weights file holding them would pass as a good one. */
static int check_finite(trainer *t, int with_momentum, mp_error *e)
{
	char name[160];
	int rc = mp_weights_find_nonfinite(t->net, with_momentum, name, sizeof name, e);
	if (rc <= 0)
		return rc;
	t->r->diverged = 1;
	return mp_seterr(e, "after step %ld (lr %g): %s holds NaN or infinity, though the loss "
			    "was finite (the run diverged); stopping, and the weights are not "
			    "written. %s%s",
			 t->step, t->lr, name,
			 t->last_good[0] ? "The last good checkpoint is " : "No checkpoint was written",
			 t->last_good);
}

static char *class_names_json(const trainer *t)
{
	if (!t->class_names)
		return NULL;
	cJSON *a = cJSON_CreateArray();
	for (int i = 0; a && i < t->classes; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(t->class_names[i]));
	char *s = a ? cJSON_PrintUnformatted(a) : NULL;
	cJSON_Delete(a);
	return s;
}

static int write_checkpoint(trainer *t, int epochs, long batch, mp_error *e)
{
	char name[256], path[PATH_LEN], num[5][64];
	const char *validated = t->val_missed ? "0" : "1";
	if (check_finite(t, 1, e) < 0)
		return -1;
	checkpoint_name(name, sizeof name, epochs, batch);
	if (join(path, t->o->out_dir, name) < 0)
		return mp_seterr(e, "%s: path too long", t->o->out_dir);
	snprintf(num[0], 64, "%d", epochs);
	snprintf(num[1], 64, "%ld", batch);
	snprintf(num[2], 64, "%ld", t->step);
	snprintf(num[3], 64, "%.17g", t->lr);
	snprintf(num[4], 64, "%.3f", elapsed(t));
	/* the sums of the unfinished epoch, and of its steps since the last
	 * step row, so that the rows after a resume are those of a run that
	 * never stopped; at an epoch's end, those of the epoch whose
	 * validation is still to be done */
	sums s = t->epoch_sums, si = t->interval;
	if (!batch) {
		if (!t->val_missed)
			memset(&s, 0, sizeof s);
		memset(&si, 0, sizeof si);
	}
	char *sum = sums_text(&s), *isum = sums_text(&si);
	if (!sum || !isum) {
		free(sum);
		free(isum);
		return mp_seterr(e, "out of memory");
	}
	/* the class names too, so that a checkpoint evaluated or inspected
	 * names the classes as the weights file does */
	char *names = class_names_json(t);
	mp_kv kv[] = {
		{MP_TRAIN_KEY_EPOCH, num[0]},	{MP_TRAIN_KEY_BATCH, num[1]},
		{MP_TRAIN_KEY_STEP, num[2]},	{MP_TRAIN_KEY_LR, num[3]},
		{MP_TRAIN_KEY_ELAPSED, num[4]}, {MP_TRAIN_KEY_EPOCH_SUMS, sum},
		{MP_TRAIN_KEY_INTERVAL_SUMS, isum}, {MP_TRAIN_KEY_OPTIONS, t->options_json},
		{MP_TRAIN_KEY_VALIDATED, validated}, {"class_names", names},
	};
	const int nkv = (int)(sizeof kv / sizeof kv[0]) - !names;
	/* the rows before a checkpoint reach the disk before it does, so that
	 * a machine that stops leaves no checkpoint whose log lacks them (a
	 * pipe or terminal has nothing to sync) */
	int rc = 0;
	if (t->log && !t->log_stdout && fsync(fileno(t->log)) < 0 && errno != EINVAL)
		rc = mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	if (rc == 0)
		rc = mp_weights_save(t->net, path, kv, nkv, 1, e);
	free(names);
	free(sum);
	free(isum);
	if (rc < 0)
		return -1;
	copy_path(t->last_good, path);
	copy_path(t->r->checkpoint, path);
	if (link_last(t, name, e) < 0)
		return -1;
	prune_checkpoints(t, epochs, batch);
	return 0;
}

static int write_weights(trainer *t, mp_error *e)
{
	char path[PATH_LEN], epochs[32], steps[32];
	if (check_finite(t, 0, e) < 0)
		return -1;
	if (join(path, t->o->out_dir, "weights.safetensors") < 0)
		return mp_seterr(e, "%s: path too long", t->o->out_dir);
	snprintf(epochs, sizeof epochs, "%d", t->r->epochs);
	snprintf(steps, sizeof steps, "%ld", t->step);
	char *names = class_names_json(t);
	mp_kv kv[] = {
		{"created_by", "mp-train " MP_VERSION},
		{MP_TRAIN_KEY_EPOCH, epochs},
		{MP_TRAIN_KEY_STEP, steps},
		{MP_TRAIN_KEY_OPTIONS, t->options_json},
		{"class_names", names},
	};
	int rc = mp_weights_save(t->net, path, kv, names ? 5 : 4, 0, e);
	free(names);
	if (rc == 0)
		copy_path(t->r->weights, path);
	return rc;
}

/* The options a run's results depend on, stored in every checkpoint so a
 * resumed run can say which of them changed: the training data by its
 * content too (a path says nothing of what it holds now), and the
 * backend's arithmetic, whose bits differ from another's. */
static char *options_to_json(const trainer *t, const mp_resnet_config *c)
{
	const mp_train_opts *o = t->o;
	cJSON *j = cJSON_CreateObject();
	if (!j)
		return NULL;
	char text[256] = "";
	cJSON_AddStringToObject(j, "train_db", o->train_db);
	snprintf(text, sizeof text, "%llu records, crc32 %08x",
		 (unsigned long long)mp_loader_records(t->train), mp_loader_fingerprint(t->train));
	cJSON_AddStringToObject(j, "train_data", text);
	cJSON_AddStringToObject(j, "compute", t->compute);
	/* as asked for (auto, say): a resume without --backend asks the same */
	cJSON_AddStringToObject(j, "backend", o->backend);
	cJSON_AddStringToObject(j, "precision", o->precision);
	text[0] = '\0';
	cJSON_AddNumberToObject(j, "batch", o->batch);
	cJSON_AddNumberToObject(j, "epochs", o->epochs);
	cJSON_AddNumberToObject(j, "lr", o->lr);
	cJSON_AddNumberToObject(j, "momentum", o->momentum);
	cJSON_AddNumberToObject(j, "wd", o->wd);
	cJSON_AddNumberToObject(j, "label_smoothing", o->smoothing);
	cJSON_AddStringToObject(j, "lr_policy",
				o->schedule.policy == MP_LR_COSINE ? "cosine" : "step");
	for (int i = 0; i < o->schedule.nmilestones; i++) {
		size_t used = strlen(text);
		snprintf(text + used, sizeof text - used, "%s%d", i ? "," : "",
			 o->schedule.milestones[i]);
	}
	cJSON_AddStringToObject(j, "schedule", text);
	cJSON_AddNumberToObject(j, "gamma", o->schedule.gamma);
	cJSON_AddNumberToObject(j, "warmup", o->schedule.warmup);
	cJSON_AddNumberToObject(j, "crop", c->input_size);
	cJSON_AddNumberToObject(j, "scale_min", o->scale_min);
	cJSON_AddNumberToObject(j, "scale_max", o->scale_max);
	snprintf(text, sizeof text, "%.17g,%.17g,%.17g", c->mean[0], c->mean[1], c->mean[2]);
	cJSON_AddStringToObject(j, "mean", text);
	snprintf(text, sizeof text, "%llu", (unsigned long long)o->seed);
	cJSON_AddStringToObject(j, "seed", text);
	cJSON_AddNumberToObject(j, "eval_every", o->eval_every);
	cJSON_AddNumberToObject(j, "checkpoint_every", o->checkpoint_every);
	cJSON_AddNumberToObject(j, "keep", o->keep);
	cJSON_AddNumberToObject(j, "log_every", o->log_every);
	/* a --log given, made absolute, so that a resume from elsewhere finds
	 * it; one inside OUT_DIR relative to it, so that it moves with OUT_DIR
	 * as the default does */
	char log[PATH_LEN], dir[PATH_MAX];
	if (o->log_path && strcmp(o->log_path, "-") &&
	    mp_canonical_path(o->log_path, log, sizeof log) == 0) {
		const size_t n = realpath(o->out_dir, dir) ? strlen(dir) : 0;
		const int inside = n > 1 && !strncmp(log, dir, n) && log[n] == '/';
		cJSON_AddStringToObject(j, "log", inside ? log + n + 1 : log);
	} else if (o->log_path) {
		cJSON_AddStringToObject(j, "log", o->log_path);
	}
	char *s = cJSON_PrintUnformatted(j);
	cJSON_Delete(j);
	return s;
}

/* Warns about every option a resumed run sets differently from the
 * checkpoint's run: the result can no longer match an uninterrupted run.
 * Only a note for --epochs under the step policy, whose rates do not
 * depend on it: a longer run goes on as one that was that long; nothing
 * is wrong, so -q leaves it out. */
static void compare_options(const char *path, const char *stored, const char *now, int quiet)
{
	cJSON *a = cJSON_Parse(stored), *b = cJSON_Parse(now);
	if (!a || !b) {
		mp_warnx("%s: the training options in the metadata cannot be read; "
			 "they are not compared", path);
		goto out;
	}
	const cJSON *policy = cJSON_GetObjectItemCaseSensitive(b, "lr_policy");
	const int step_policy = cJSON_IsString(policy) && !strcmp(policy->valuestring, "step");
	for (cJSON *x = b->child; x; x = x->next) {
		if (!strcmp(x->string, "train_db"))
			continue; /* the same data may have moved: train_data says */
		if (!strcmp(x->string, "backend") || !strcmp(x->string, "precision"))
			continue; /* what they asked for: compute says what it gave */
		if (!strcmp(x->string, "eval_every") || !strcmp(x->string, "checkpoint_every") ||
		    !strcmp(x->string, "keep") || !strcmp(x->string, "log_every") ||
		    !strcmp(x->string, "log"))
			continue; /* what the run writes, not what it computes */
		cJSON *y = cJSON_GetObjectItemCaseSensitive(a, x->string);
		/* not recorded by the earlier versions that wrote no such key */
		if (!y && (!strcmp(x->string, "train_data") || !strcmp(x->string, "compute")))
			continue;
		if (y && cJSON_Compare(x, y, 1))
			continue;
		char *was = y ? cJSON_PrintUnformatted(y) : NULL, *is = cJSON_PrintUnformatted(x);
		if (!strcmp(x->string, "epochs") && step_policy) {
			if (!quiet)
				mp_warnx("note: %s was %s, now %s", x->string, was ? was : "unset",
					 is ? is : "?");
		} else {
			mp_warnx("warning: %s was %s in %s, now %s: the run will differ from "
				 "an uninterrupted one", x->string, was ? was : "unset", path,
				 is ? is : "?");
		}
		free(was);
		free(is);
	}
out:
	cJSON_Delete(a);
	cJSON_Delete(b);
}

/* One stored training option: its key in train.options, its bit in
 * train_given, its option, and where and within what bounds it goes. */
typedef struct {
	const char *key;
	unsigned bit;
	const char *option;
	enum { AS_INT, AS_DOUBLE } kind;
	size_t offset;
	double min, max;
} stored_option;

#define OPT_AT(field) offsetof(mp_train_opts, field)
static const stored_option stored_options[] = {
	{"batch", MP_TRAIN_OPT_BATCH, "--batch", AS_INT, OPT_AT(batch), 2, 65536},
	{"epochs", MP_TRAIN_OPT_EPOCHS, "--epochs", AS_INT, OPT_AT(epochs), 1, 1000000},
	{"lr", MP_TRAIN_OPT_LR, "--lr", AS_DOUBLE, OPT_AT(lr), 1e-12, 1e12},
	{"momentum", MP_TRAIN_OPT_MOMENTUM, "--momentum", AS_DOUBLE, OPT_AT(momentum), 0, 0.999999},
	{"wd", MP_TRAIN_OPT_WD, "--wd", AS_DOUBLE, OPT_AT(wd), 0, 1},
	{"label_smoothing", MP_TRAIN_OPT_SMOOTHING, "--label-smoothing", AS_DOUBLE,
	 OPT_AT(smoothing), 0, 0.999},
	{"gamma", MP_TRAIN_OPT_GAMMA, "--gamma", AS_DOUBLE, OPT_AT(schedule.gamma), 1e-9, 1},
	{"warmup", MP_TRAIN_OPT_WARMUP, "--warmup", AS_DOUBLE, OPT_AT(schedule.warmup), 0, 1e6},
	{"scale_min", MP_TRAIN_OPT_SCALE_MIN, "--scale-min", AS_INT, OPT_AT(scale_min), 1, 65535},
	{"scale_max", MP_TRAIN_OPT_SCALE_MAX, "--scale-max", AS_INT, OPT_AT(scale_max), 1, 65535},
	{"eval_every", MP_TRAIN_OPT_EVAL_EVERY, "--eval-every", AS_INT, OPT_AT(eval_every), 0, 1000000},
	{"checkpoint_every", MP_TRAIN_OPT_CHECKPOINT_EVERY, "--checkpoint-every", AS_INT,
	 OPT_AT(checkpoint_every), 1, 1000000},
	{"keep", MP_TRAIN_OPT_KEEP, "--keep", AS_INT, OPT_AT(keep), 0, 1000000},
	{"log_every", MP_TRAIN_OPT_LOG_EVERY, "--log-every", AS_INT, OPT_AT(log_every), 0, 1000000000},
};

/* --resume: each training option not given is the checkpoint's run's (its
 * train.options), so that "mp-train -d D -o OUT --resume OUT/last.safetensors"
 * goes on as the run was started; one given may differ (compare_options
 * warns). A checkpoint written before a key was stored keeps the default.
 * taken gets the options taken, as a command line gives them. own_dir:
 * OUT_DIR is the checkpoint's directory; a resume into another one (a run
 * branched off) does not take the run's log file, whose rows after the
 * checkpoint it would move aside (or, with --force, empty). */
static int options_from_checkpoint(mp_train_opts *o, const mp_st_file *f, int own_dir,
				   char *taken, size_t taken_size, char *log, size_t log_size,
				   mp_error *e)
{
	const char *text = mp_st_meta_get(f, MP_TRAIN_KEY_OPTIONS);
	if (!text)
		return 0; /* written before the options were stored: the defaults */
	/* the options not given would silently be the defaults */
	cJSON *j = cJSON_Parse(text);
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return mp_seterr(e, "%s: metadata %s is not a JSON object: not a checkpoint of "
				    "mp-train", f->path, MP_TRAIN_KEY_OPTIONS);
	}
	char bad[160] = "";
	taken[0] = '\0';
	const unsigned given = o->train_given;
	for (size_t i = 0; i < sizeof stored_options / sizeof *stored_options && !bad[0]; i++) {
		const stored_option *so = &stored_options[i];
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, so->key);
		if ((given & so->bit) || !v)
			continue;
		const double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
		if (!(x >= so->min && x <= so->max) || (so->kind == AS_INT && x != floor(x))) {
			snprintf(bad, sizeof bad, "%s", so->key);
			break;
		}
		char *field = (char *)o + so->offset;
		if (so->kind == AS_INT)
			*(int *)field = (int)x;
		else
			*(double *)field = x;
		snprintf(taken + strlen(taken), taken_size - strlen(taken), " %s %.15g", so->option, x);
	}
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "lr_policy");
	if (!bad[0] && v && !(given & MP_TRAIN_OPT_POLICY)) {
		if (cJSON_IsString(v) && !strcmp(v->valuestring, "cosine"))
			o->schedule.policy = MP_LR_COSINE;
		else if (cJSON_IsString(v) && !strcmp(v->valuestring, "step"))
			o->schedule.policy = MP_LR_STEP;
		else
			snprintf(bad, sizeof bad, "lr_policy");
		if (!bad[0])
			snprintf(taken + strlen(taken), taken_size - strlen(taken), " --lr-policy %s",
				 v->valuestring);
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "schedule");
	if (!bad[0] && v && !(given & MP_TRAIN_OPT_SCHEDULE)) {
		mp_error pe;
		if (!cJSON_IsString(v))
			snprintf(bad, sizeof bad, "schedule");
		else if (!v->valuestring[0])
			o->schedule.nmilestones = 0;
		else if (mp_schedule_parse_milestones(&o->schedule, v->valuestring, &pe) < 0)
			snprintf(bad, sizeof bad, "schedule");
		if (!bad[0])
			snprintf(taken + strlen(taken), taken_size - strlen(taken), " --schedule %s",
				 v->valuestring[0] ? v->valuestring : "none");
	}
	/* the backend and precision as the run asked for them, from the
	 * names the command line takes (which outlive j) */
	const struct {
		const char *key, *option;
		unsigned bit;
		const char *const *names;
		const char **field;
	} named[] = {
		{"backend", "--backend", MP_TRAIN_OPT_BACKEND, mp_backend_names, &o->backend},
		{"precision", "--precision", MP_TRAIN_OPT_PRECISION, mp_precision_names,
		 &o->precision},
	};
	for (size_t i = 0; i < sizeof named / sizeof *named && !bad[0]; i++) {
		v = cJSON_GetObjectItemCaseSensitive(j, named[i].key);
		if (!v || (given & named[i].bit))
			continue;
		const char *const *name = named[i].names;
		while (*name && !(cJSON_IsString(v) && !strcmp(*name, v->valuestring)))
			name++;
		if (!*name) {
			snprintf(bad, sizeof bad, "%s", named[i].key);
			break;
		}
		*named[i].field = *name;
		snprintf(taken + strlen(taken), taken_size - strlen(taken), " %s %s",
			 named[i].option, *name);
	}
	/* the run's --log (log is the caller's, which outlives j) */
	v = cJSON_GetObjectItemCaseSensitive(j, "log");
	if (!bad[0] && v && !(given & MP_TRAIN_OPT_LOG)) {
		if (!cJSON_IsString(v) || !v->valuestring[0] ||
		    strlen(v->valuestring) >= log_size) {
			snprintf(bad, sizeof bad, "log");
		} else if (own_dir || !strcmp(v->valuestring, "-")) {
			/* a relative one is inside OUT_DIR */
			if (v->valuestring[0] == '/' || !strcmp(v->valuestring, "-"))
				snprintf(log, log_size, "%s", v->valuestring);
			else if (join(log, o->out_dir, v->valuestring) < 0)
				snprintf(bad, sizeof bad, "log");
			if (!bad[0]) {
				o->log_path = log;
				snprintf(taken + strlen(taken), taken_size - strlen(taken),
					 " --log %s", log);
			}
		}
	}
	v = cJSON_GetObjectItemCaseSensitive(j, "seed");
	if (!bad[0] && v && !(given & MP_TRAIN_OPT_SEED)) {
		char *end = NULL;
		errno = 0;
		const unsigned long long seed =
			cJSON_IsString(v) ? strtoull(v->valuestring, &end, 10) : 0;
		if (!cJSON_IsString(v) || errno || end == v->valuestring || *end ||
		    seed > 0x7fffffffffffffffull)
			snprintf(bad, sizeof bad, "seed");
		else {
			o->seed = seed;
			snprintf(taken + strlen(taken), taken_size - strlen(taken), " --seed %s",
				 v->valuestring);
		}
	}
	cJSON_Delete(j);
	if (bad[0])
		return mp_seterr(e, "%s: metadata %s has no valid %s: not a checkpoint of mp-train",
				 f->path, MP_TRAIN_KEY_OPTIONS, bad);
	return 0;
}

/* The schedule of a resumed run, checked once its options are all known:
 * the command line cannot check it, not knowing those it did not give. */
static int resumed_schedule_check(mp_train_opts *o, mp_error *e)
{
	o->schedule.base = o->lr;
	o->schedule.epochs = o->epochs;
	if (mp_schedule_check(&o->schedule, e) < 0)
		return mp_seterr(e, "%s: the run's schedule with the options given: %s", o->resume,
				 e->msg);
	return 0;
}

/* x after prefix, in the fewest digits that read back as x, without an
 * exponent where one is not needed: a value that a command line can give
 * again exactly, as 140.93 rather than 140.93000000000001, 100 rather
 * than 1e+02. */
static void shortest_number(double x, const char *prefix, char *buf, size_t n)
{
	int first = 0;
	for (int digits = 1; digits <= 17; digits++) {
		snprintf(buf, n, "%s%.*g", prefix, digits, x);
		if (strtod(buf + strlen(prefix), NULL) != x)
			continue;
		if (!strchr(buf + strlen(prefix), 'e'))
			return;
		if (!first)
			first = digits;
	}
	snprintf(buf, n, "%s%.*g", prefix, first ? first : 17, x);
}

static void widths_text(const mp_resnet_config *c, char *buf, size_t n)
{
	buf[0] = '\0';
	for (int s = 0; s < c->stages; s++)
		snprintf(buf + strlen(buf), n - strlen(buf), "%s%d", s ? "," : "", c->widths[s]);
}

/* --resume: the network is the checkpoint's, and each network option given
 * must say the same (those not given are not compared). --crop is the size
 * the run trains at, not part of the network, which global pooling makes
 * independent of it: one given is used (and compare_options warns if it
 * differs), else the checkpoint's. So is the mean: a --mean given is used
 * (compare_options warns if it differs), else the checkpoint's, so that a
 * run resumed on a training set repacked or extended goes on subtracting
 * what it was trained with. The classes come from the options or the data,
 * as in a new run; open_loaders fills them, and resume_check compares. */
static int net_from_checkpoint(const mp_train_opts *o, const mp_resnet_config *have,
			       mp_resnet_config *cfg, mp_error *e)
{
	const mp_resnet_config *want = &o->net;
	const unsigned given = o->net_given;
	char why[320] = "", wa[128], wb[128];
	widths_text(have, wa, sizeof wa);
	widths_text(want, wb, sizeof wb);
	if ((given & MP_TRAIN_NET_DEPTH) && have->depth != want->depth)
		snprintf(why, sizeof why, "depth %d, the options say %d", have->depth, want->depth);
	else if ((given & MP_TRAIN_NET_WIDTHS) && strcmp(wa, wb))
		snprintf(why, sizeof why, "widths %s, the options say %s", wa, wb);
	else if ((given & MP_TRAIN_NET_SHORTCUT) && have->shortcut != want->shortcut)
		snprintf(why, sizeof why, "shortcut %c, the options say %c", have->shortcut,
			 want->shortcut);
	else if ((given & MP_TRAIN_NET_STEM_KERNEL) && have->stem_kernel != want->stem_kernel)
		snprintf(why, sizeof why, "a %dx%d stem, the options say %dx%d", have->stem_kernel,
			 have->stem_kernel, want->stem_kernel, want->stem_kernel);
	else if ((given & MP_TRAIN_NET_STEM_STRIDE) && have->stem_stride != want->stem_stride)
		snprintf(why, sizeof why, "stem stride %d, the options say %d", have->stem_stride,
			 want->stem_stride);
	else if ((given & MP_TRAIN_NET_FC_BN) && have->fc_bn != want->fc_bn)
		snprintf(why, sizeof why, "batch normalization after the classifier, the "
			 "options say --no-fc-bn");
	if (why[0])
		return mp_seterr(e, "%s: the checkpoint's network has %s", o->resume, why);
	*cfg = *have;
	cfg->classes = want->classes;
	if (o->has_mean)
		memcpy(cfg->mean, want->mean, sizeof cfg->mean);
	if (o->has_crop)
		cfg->input_size = want->input_size;
	return 0;
}

static int parse_long_meta(const mp_st_file *f, const char *key, long min, long *out,
			   mp_error *e)
{
	const char *v = mp_st_meta_get(f, key);
	uint64_t x;
	if (!v)
		return mp_seterr(e, "%s: no %s in the metadata: not a checkpoint of mp-train",
				 f->path, key);
	/* plain decimal, as written: "+3", " 3" or "03" is a damaged value */
	if (mp_parse_decimal(v, strlen(v), LONG_MAX, &x) < 0 || x < (uint64_t)min)
		return mp_seterr(e, "%s: metadata %s is \"%s\"", f->path, key, v);
	*out = (long)x;
	return 0;
}

/* The n numbers of metadata key, comma-separated, as write_checkpoint
 * writes them: finite, none negative. A missing key (a checkpoint of an
 * earlier version) leaves out unchanged. */
static int parse_numbers_meta(const mp_st_file *f, const char *key, int n, double *out,
			      mp_error *e)
{
	const char *v = mp_st_meta_get(f, key);
	if (!v)
		return 0;
	const char *p = v;
	for (int i = 0; i < n; i++) {
		char *end;
		const double x = strtod(p, &end);
		if (!mp_number_start(p) || end == p || !isfinite(x) || x < 0 ||
		    *end != (i == n - 1 ? '\0' : ','))
			return mp_seterr(e, "%s: metadata %s is \"%s\"", f->path, key, v);
		out[i] = x;
		p = end + 1;
	}
	return 0;
}

/* The training set's class names against those the checkpoint's weights
 * hold: the same count under other names (a set repacked with another
 * categories file) may be a typo mended or labels that now mean other
 * classes; the weights will hold the training set's, and a warning names
 * the first that differs. */
static void warn_renamed_classes(const trainer *t)
{
	const char *stored = mp_st_meta_get(&t->ckpt, "class_names");
	cJSON *a = stored && t->class_names ? cJSON_Parse(stored) : NULL;
	for (int i = 0; cJSON_IsArray(a) && i < t->classes; i++) {
		const cJSON *x = cJSON_GetArrayItem(a, i);
		if (cJSON_IsString(x) && strcmp(x->valuestring, t->class_names[i])) {
			mp_warnx("warning: %s names class %d \"%s\", %s \"%s\": the weights will "
				 "hold the training set's names", t->o->resume, i, x->valuestring,
				 t->o->train_db, t->class_names[i]);
			break;
		}
	}
	cJSON_Delete(a);
}

/* Checks the checkpoint (t->ckpt, whose network net_from_checkpoint took)
 * against the run as set up, before anything is made on disk: its classes
 * (cfg's, from the data), its momentum, its position and the sums and rate
 * there (read into t), and that every value is finite (training cannot go
 * on from NaN or infinity: the checkpoint of a run that diverged). Returns
 * MP_TRAIN_BAD_SETUP or MP_TRAIN_FAILED on error. */
static int resume_check(trainer *t, const mp_resnet_config *cfg, long *epochs, long *batch,
			long *step, mp_error *e)
{
	const mp_train_opts *o = t->o;
	const mp_st_file *f = &t->ckpt;
	if (t->ckpt_net.classes != cfg->classes)
		return mp_seterr(e, "%s: the checkpoint's network has %d classes, the training set "
				    "has %d", o->resume, t->ckpt_net.classes, cfg->classes),
		       MP_TRAIN_BAD_SETUP;
	warn_renamed_classes(t);
	if (!mp_st_find(f, "momentum.stem.conv.weight"))
		return mp_seterr(e, "%s: a weights file without momentum; --resume needs a "
				    "checkpoint", o->resume),
		       MP_TRAIN_BAD_SETUP;
	if (parse_long_meta(f, MP_TRAIN_KEY_EPOCH, 0, epochs, e) < 0 ||
	    parse_long_meta(f, MP_TRAIN_KEY_BATCH, 0, batch, e) < 0 ||
	    parse_long_meta(f, MP_TRAIN_KEY_STEP, 0, step, e) < 0)
		return MP_TRAIN_BAD_SETUP;
	if (*batch >= t->steps_per_epoch)
		return mp_seterr(e, "%s: %ld batches into an epoch, and an epoch of %s has %ld of %d",
				 o->resume, *batch, o->train_db, t->steps_per_epoch, o->batch),
		       MP_TRAIN_BAD_SETUP;
	/* missing in the checkpoints of earlier versions, which made up no
	 * validation: as if it had been done */
	const char *v = mp_st_meta_get(f, MP_TRAIN_KEY_VALIDATED);
	if (v && strcmp(v, "0") && strcmp(v, "1"))
		return mp_seterr(e, "%s: metadata %s is \"%s\"", o->resume, MP_TRAIN_KEY_VALIDATED, v),
		       MP_TRAIN_BAD_SETUP;
	t->val_missed = v && !strcmp(v, "0");
	double sum[5], isum[5];
	if (parse_numbers_meta(f, MP_TRAIN_KEY_ELAPSED, 1, &t->elapsed0, e) < 0 ||
	    parse_numbers_meta(f, MP_TRAIN_KEY_LR, 1, &t->lr, e) < 0 ||
	    parse_numbers_meta(f, MP_TRAIN_KEY_EPOCH_SUMS, 5, sum, e) < 0 ||
	    parse_numbers_meta(f, MP_TRAIN_KEY_INTERVAL_SUMS, 5, isum, e) < 0)
		return MP_TRAIN_BAD_SETUP;
	/* the sums of an epoch in progress, or of one whose validation is due */
	if ((*batch || t->val_missed) && mp_st_meta_get(f, MP_TRAIN_KEY_EPOCH_SUMS))
		t->epoch_sums = (sums){sum[0], sum[1], sum[2], sum[3], sum[4]};
	if (*batch && mp_st_meta_get(f, MP_TRAIN_KEY_INTERVAL_SUMS))
		t->interval = (sums){isum[0], isum[1], isum[2], isum[3], isum[4]};
	for (size_t i = 0; i < f->ntensors; i++) {
		mp_tensor_stats st;
		mp_st_stats(&f->tensors[i], &st);
		if (st.nonfinite)
			return mp_seterr(e, "%s: %s holds NaN or infinity: a run cannot go on from "
					    "it (resume from an earlier checkpoint)",
					 o->resume, f->tensors[i].name),
			       MP_TRAIN_FAILED;
	}
	return MP_TRAIN_DONE;
}

/* Loads the checkpoint that resume_check passed: weights, momentum and the
 * training state at epochs, batch and step. */
static int resume_from(trainer *t, long epochs, long batch, long step, mp_error *e)
{
	const mp_train_opts *o = t->o;
	const mp_st_file *f = &t->ckpt;
	if (mp_weights_load_into(t->net, f, 1, e) < 0)
		return MP_TRAIN_FAILED;
	const char *v;
	if ((v = mp_st_meta_get(f, MP_TRAIN_KEY_OPTIONS)))
		compare_options(o->resume, v, t->options_json, o->quiet);
	t->epoch = (int)epochs;
	t->batch = batch;
	t->step = step;
	copy_path(t->last_good, o->resume);
	return MP_TRAIN_DONE;
}

/* ---- the log --------------------------------------------------------------- */

/* Appends text to the log whole or not at all. A write cut short (a full
 * disk) is taken back, so that the log never ends in half a row that a
 * resumed run's rows would be glued to. The FILE is only the handle:
 * nothing waits in its buffer to be written at fclose. */
static int log_write(trainer *t, const char *text, mp_error *e)
{
	if (t->log_gone)
		return 0;
	int fd = fileno(t->log);
	struct stat st;
	off_t before = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
	size_t len = strlen(text), done = 0;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EPIPE && t->o->stop) {
			/* the log's reader went away (mp-train --log - | head):
			 * the run stops as for SIGPIPE, with a checkpoint, and
			 * writes no more rows to the pipe, as the signal asks
			 * even where it is ignored */
			t->log_gone = 1;
			int none = 0;
			atomic_compare_exchange_strong(t->o->stop, &none, SIGPIPE);
			return 0;
		}
		if (n <= 0) {
			int err = n < 0 ? errno : ENOSPC;
			if (done && before >= 0)
				(void)!ftruncate(fd, before);
			return mp_seterr(e, "%s: %s", t->log_path, strerror(err));
		}
		done += (size_t)n;
	}
	return 0;
}

static int log_row(trainer *t, const char *kind, double epoch, const sums *s,
		   const sums *val, mp_error *e)
{
	if (!t->log)
		return 0;
	char v[3][32];
	if (val && val->images > 0) {
		snprintf(v[0], 32, "%.5f", val->loss / val->images);
		snprintf(v[1], 32, "%.5f", mp_error_rate(val->top1, val->images));
		snprintf(v[2], 32, "%.5f", mp_error_rate(val->top5, val->images));
	} else {
		strcpy(v[0], "-");
		strcpy(v[1], "-");
		strcpy(v[2], "-");
	}
	double n = s->images > 0 ? s->images : 1;
	char row[512];
	snprintf(row, sizeof row, "%s\t%.*f\t%ld\t%.6g\t%.5f\t%.5f\t%.5f\t%s\t%s\t%s\t%.1f\t%.1f\n",
		 kind, strcmp(kind, "epoch") ? 3 : 0, epoch, t->step, t->lr, s->loss / n,
		 mp_error_rate(s->top1, n), mp_error_rate(s->top5, n), v[0], v[1], v[2],
		 s->seconds > 0 ? s->images / s->seconds : 0, elapsed(t));
	return log_write(t, row, e);
}

/* A resumed run's log ends at the checkpoint: rows after its step (from
 * a run that went on and then failed, or was resumed from an earlier
 * checkpoint) would repeat steps. They move, from the first such row
 * on, to LOG.superseded, and the log is cut there, in place (a reader
 * following it keeps its place). */
static int supersede_rows(trainer *t, mp_error *e)
{
	struct stat st;
	if (stat(t->log_path, &st) < 0 || !S_ISREG(st.st_mode))
		return 0; // no log yet, or one that cannot be cut (a pipe, a terminal)
	FILE *f = fopen(t->log_path, "r");
	if (!f)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long cut = -1, rows = 0, offset = 0, last_epoch = -1, half = -1;
	while ((n = getline(&line, &cap, f)) > 0) {
		/* a last row without its newline: cut short by a crash of the
		 * machine, as a killed process writes each row whole */
		if (line[n - 1] != '\n') {
			half = offset;
			if (cut < 0)
				cut = offset;
			offset += n;
			break;
		}
		const char *tab = strchr(line, '\t');
		const char *step = tab ? strchr(tab + 1, '\t') : NULL;
		char *end;
		long v = step ? strtol(step + 1, &end, 10) : -1;
		if (cut < 0 && offset > 0 && step && end != step + 1 && *end == '\t' && v > t->step)
			cut = offset;
		if (cut < 0 && offset > 0 && tab && !strncmp(line, "epoch\t", 6))
			last_epoch = strtol(tab + 1, NULL, 10);
		if (cut >= 0)
			rows++;
		offset += n;
	}
	free(line);
	if (ferror(f)) {
		fclose(f);
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	}
	if (cut < 0) {
		fclose(f);
		/* every epoch's row comes before its checkpoint: a log that ends
		 * earlier lost rows (the checkpoint is one of a run that went
		 * past an earlier resume point, whose rows were moved aside) */
		if (last_epoch >= 0 && last_epoch < t->epoch)
			mp_warnx("%s: its last epoch row is epoch %ld, and the checkpoint has done %d: "
				 "the rows between are not in it (see %s.superseded)",
				 t->log_path, last_epoch, t->epoch, t->log_path);
		return 0;
	}
	char side[PATH_LEN];
	if (snprintf(side, sizeof side, "%s.superseded", t->log_path) >= (int)sizeof side) {
		fclose(f);
		return mp_seterr(e, "%s: path too long", t->log_path);
	}
	FILE *out = fopen(side, "a");
	if (!out) {
		fclose(f);
		return mp_seterr(e, "%s: %s", side, strerror(errno));
	}
	const long side_before = ftell(out);
	if (side_before == 0)
		fputs(LOG_HEADER, out);
	char buf[1 << 16];
	size_t got;
	if (fseek(f, cut, SEEK_SET) < 0) {
		fclose(f);
		fclose(out);
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	}
	while ((got = fread(buf, 1, sizeof buf, f)) > 0)
		fwrite(buf, 1, got, out);
	if (half >= 0)
		fputc('\n', out); // rows moved later start on a line of their own
	const int bad = ferror(f) || fflush(out) != 0 || fsync(fileno(out)) != 0 ||
			ferror(out);
	fclose(f);
	if (fclose(out) != 0 || bad) {
		int err = errno ? errno : EIO;
		/* rows copied in part (a full disk) would be copied again by
		 * the next try: the file is as it was, the log untouched */
		if (side_before >= 0)
			(void)!truncate(side, side_before);
		return mp_seterr(e, "%s: %s", side, strerror(err));
	}
	if (truncate(t->log_path, cut) < 0)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	if (half >= 0)
		mp_warnx("%s: its last row is cut short (the machine stopped as it was written): "
			 "moved to %s", t->log_path, side);
	if (rows)
		mp_warnx("%s: %ld row%s after step %ld, the checkpoint's, moved to %s", t->log_path,
			 rows, rows == 1 ? "" : "s", t->step, side);
	return 0;
}

/* Whether path names a file with something in it that is not a training
 * log: a file of the user's (--log notes.txt, or a train.log of another
 * program), which neither --force nor --resume may empty or write into. */
static int foreign_log(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
		return 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return 0; // open_log says why
	char line[sizeof LOG_HEADER];
	const int ours = fgets(line, sizeof line, f) && !strcmp(line, LOG_HEADER);
	fclose(f);
	return !ours;
}

/* Two runs that share a log (the --log of one names the other's, or one
 * file outside both directories) would interleave their rows, and the
 * --force or --resume of one would empty or cut the other's: the log is
 * locked for the run too. fd, open on the log: 1 locked, 0 not a file
 * that is locked (a pipe, a terminal, /dev/null, which any number of
 * writers share; a file system without locks), -1 another run's. */
static int lock_log(int fd, const char *path, mp_error *e)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		return 1;
	if (errno == EWOULDBLOCK)
		return mp_seterr(e, "%s: another mp-train is writing this log; wait for it to end "
				    "(or stop it), or give this run a log of its own (--log)", path);
	return 0;
}

/* The log that exists at the start, locked before anything else looks at
 * it (or cuts or empties it); a new one is locked once made (open_log). */
static int lock_existing_log(trainer *t, const char *path, mp_error *e)
{
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return 0; // open_log says why
	const int rc = lock_log(fd, path, e);
	if (rc == 1)
		t->log_lock_fd = fd;
	else
		close(fd);
	return rc < 0 ? -1 : 0;
}

/* Opens the log; with start_over, removes the previous run (--force) too.
 * The log is the new run's first file and the last thing that can fail at
 * set-up, so the previous run is removed only once it is open and takes
 * writes: it is opened without truncating it, and a log of the previous
 * run (its train.log, or a --log that held rows) is emptied after the
 * removal. A failed start leaves everything as it was. */
static int open_log(trainer *t, int append, int start_over, mp_error *e)
{
	const mp_train_opts *o = t->o;
	/* --log -: standard output, a stream that gets a header of its own
	 * and is never read back, cut or emptied, whatever it is */
	t->log_stdout = o->log_path && !strcmp(o->log_path, "-");
	if (t->log_stdout)
		copy_path(t->log_path, "<stdout>");
	else if (o->log_path)
		copy_path(t->log_path, o->log_path);
	else if (join(t->log_path, o->out_dir, "train.log") < 0)
		return mp_seterr(e, "%s: path too long", o->out_dir);
	struct stat st;
	if (append && !t->log_stdout && supersede_rows(t, e) < 0)
		return -1;
	if (t->log_stdout) {
		const int fd = dup(STDOUT_FILENO);
		if (fd >= 0 && !(t->log = fdopen(fd, "w")))
			close(fd);
	} else {
		t->log = fopen(t->log_path, "a");
	}
	if (!t->log || fstat(fileno(t->log), &st) < 0)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	/* a log made just now: locked before its header is written */
	if (!t->log_stdout && t->log_lock_fd < 0 && lock_log(fileno(t->log), t->log_path, e) < 0)
		return -1;
	const int old = !t->log_stdout && S_ISREG(st.st_mode) && st.st_size > 0;
	/* the run's own log gone (removed, or never copied with the
	 * directory): the rows go on, and the gap is said */
	if (append && !old && !t->log_stdout && S_ISREG(st.st_mode) && t->step > 0 &&
	    in_dir(o->resume, o->out_dir))
		mp_warnx("warning: %s was missing or empty: it starts again here, without the rows "
			 "of the run's first %ld steps", t->log_path, t->step);
	if (!old && log_write(t, LOG_HEADER, e) < 0)
		return -1;
	if (start_over) {
		char side[PATH_LEN];
		remove_previous_run(o->out_dir, &st);
		if (!t->log_stdout &&
		    snprintf(side, sizeof side, "%s.superseded", t->log_path) < (int)sizeof side)
			unlink(side); // the previous run's rows, moved aside by a resume
	}
	if (!append && old) {
		if (ftruncate(fileno(t->log), 0) < 0)
			return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
		if (log_write(t, LOG_HEADER, e) < 0)
			return -1;
	}
	return 0;
}

/* ---- steps and validation ---------------------------------------------------- */

static void score(const float *probs, const int32_t *labels, int n, int classes, sums *s)
{
	for (int i = 0; i < n; i++) {
		int rank = mp_rank_of(probs + (size_t)i * classes, classes, labels[i]);
		s->top1 += rank < 1;
		s->top5 += rank < 5;
	}
	s->images += n;
}

static int check_labels(const trainer *t, const char *db, const int32_t *labels,
			const uint64_t *ids, int n, mp_error *e)
{
	for (int i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= t->classes)
			return mp_seterr(e, "%s: record %llu has label %d, outside 0..%d", db,
					 (unsigned long long)ids[i], labels[i], t->classes - 1);
	return 0;
}

enum { VALIDATE_STOPPED = 2 };

/* Returns 0, -1 on error, or VALIDATE_STOPPED when a signal came: a pass
 * over a large validation set can take minutes, more than a job
 * scheduler waits between its SIGTERM and its SIGKILL. */
static int validate(trainer *t, float *images, int32_t *labels, uint64_t *ids,
		    float *probs, sums *out, mp_error *e)
{
	memset(out, 0, sizeof *out);
	if (mp_loader_start(t->val, 0, e) < 0)
		return -1;
	int size = mp_loader_size(t->val), n, rc;
	double t0 = mp_now();
	mp_progress p;
	mp_progress_init(&p, "validate", mp_loader_records(t->val), t->o->quiet);
	while ((rc = mp_loader_next(t->val, images, labels, ids, &n, e)) == 1) {
		double loss;
		if (check_labels(t, t->o->val_db, labels, ids, n, e) < 0 ||
		    mp_resnet_forward(t->net, images, n, size, size, 0, e) < 0 ||
		    mp_resnet_loss(t->net, labels, 0, &loss, probs, e) < 0)
			return -1;
		/* a NaN output ranks every label first: scored, it would read as
		 * no error at all */
		if (!isfinite(loss)) {
			mp_progress_done(&p);
			t->r->diverged = 1;
			return mp_seterr(e, "validation after step %ld: the loss is %s on %s (the "
					    "weights or their running statistics hold NaN or infinity, or "
					    "have grown so large that the outputs overflow); "
					    "stopping. %s%s",
					 t->step, isnan(loss) ? "NaN" : "infinite", t->o->val_db,
					 t->last_good[0] ? "The last good checkpoint is "
							 : "No checkpoint was written",
					 t->last_good);
		}
		out->loss += loss * n;
		score(probs, labels, n, t->classes, out);
		mp_progress_update(&p, (uint64_t)out->images, NULL);
		if (t->o->stop && *t->o->stop) {
			rc = VALIDATE_STOPPED;
			break;
		}
	}
	mp_progress_done(&p);
	out->seconds = mp_now() - t0;
	return rc;
}

/* The summary of an epoch, at `epochs` epochs done, or of the part of one
 * that a --max-steps run ended in, `batch` batches into the next (its
 * position then, as the log's end row has it). */
static void print_epoch(const trainer *t, int epochs, long batch, const sums *s,
			const sums *val)
{
	if (t->o->quiet)
		return;
	double n = s->images > 0 ? s->images : 1;
	if (!batch)
		printf("epoch %d/%d", epochs, t->o->epochs);
	else
		printf("end at epoch %.3f/%d", epochs + (double)batch / t->steps_per_epoch,
		       t->o->epochs);
	printf(": lr %.4g, loss %.4f, train error %.2f%% top-1, %.2f%% top-5", t->lr, s->loss / n,
	       100 * mp_error_rate(s->top1, n), 100 * mp_error_rate(s->top5, n));
	if (val && val->images > 0)
		printf("; val loss %.4f, error %.2f%% top-1, %.2f%% top-5", val->loss / val->images,
		       100 * mp_error_rate(val->top1, val->images),
		       100 * mp_error_rate(val->top5, val->images));
	printf("; %.0f images/s, %.0f s\n", s->seconds > 0 ? s->images / s->seconds : 0,
	       elapsed(t));
	fflush(stdout);
}

/* Cuts off the log's row for the position a run resumes at when it was
 * written without the validation that a signal stopped: its last row, of
 * kind epoch or end at the checkpoint's step (supersede_rows moved any
 * later ones aside). The row with the validation takes its place, and the
 * log holds one row per epoch, as that of a run that never stopped does. */
static int cut_position_row(trainer *t, mp_error *e)
{
	struct stat st;
	if (!t->log || t->log_stdout || fstat(fileno(t->log), &st) < 0 || !S_ISREG(st.st_mode))
		return 0; // a pipe, a terminal, standard output: a row written there stays
	FILE *f = fopen(t->log_path, "r");
	if (!f)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long offset = 0, last = 0;
	int own = 0;
	while ((n = getline(&line, &cap, f)) > 0) {
		char kind[8];
		long step;
		own = offset > 0 && sscanf(line, "%7[a-z]\t%*[^\t]\t%ld", kind, &step) == 2 &&
		      (!strcmp(kind, "epoch") || !strcmp(kind, "end")) && step == t->step;
		last = offset;
		offset += n;
	}
	free(line);
	const int bad = ferror(f);
	fclose(f);
	if (bad)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno ? errno : EIO));
	if (own && ftruncate(fileno(t->log), last) < 0)
		return mp_seterr(e, "%s: %s", t->log_path, strerror(errno));
	return 0;
}

/* The validation due where a resumed run starts, which a signal stopped
 * the checkpoint's run before: done first, then printed and logged as it
 * would have been at the end of that epoch (or --max-steps run). Returns
 * 0, -1 on error, or VALIDATE_STOPPED. */
static int make_up_validation(trainer *t, float *images, int32_t *labels, uint64_t *ids,
			      float *probs, mp_error *e)
{
	sums val;
	int vr = validate(t, images, labels, ids, probs, &val, e);
	if (vr != 0)
		return vr;
	t->r->val_top1 = mp_error_rate(val.top1, val.images);
	t->r->val_top5 = mp_error_rate(val.top5, val.images);
	if (cut_position_row(t, e) < 0 ||
	    log_row(t, t->batch ? "end" : "epoch",
		    t->epoch + (double)t->batch / t->steps_per_epoch, &t->epoch_sums, &val, e) < 0)
		return -1;
	print_epoch(t, t->epoch, t->batch, &t->epoch_sums, &val);
	t->val_missed = 0;
	return 0;
}

/* ---- setup ------------------------------------------------------------------ */

/* --loader-threads, or by default 2 beside the CPU backend (whose compute
 * wants the cores) and all cores but two beside a GPU, whose step two
 * threads could not feed (each decodes and augments 1,500-2,000 images/s
 * on a current core). The batches are the same for any count. */
static int loader_threads(const trainer *t)
{
	if (t->o->loader_threads > 0)
		return t->o->loader_threads;
	if (strcmp(t->be->ops->name, "cuda") != 0)
		return 2;
	const int cores = mp_cpu_count();
	return cores - 2 < 2 ? 2 : cores - 2 > 64 ? 64 : cores - 2;
}

static int put_pixels(void *net, uint64_t offset, const uint8_t *bytes, size_t len, mp_error *e)
{
	return mp_resnet_put_pixels(net, offset, bytes, len, e);
}

/* --augment backend: every training image decoded once, by the loader's
 * threads, into the backend's memory; the loader then sends plans. */
static int keep_training_set(trainer *t, mp_error *e)
{
	const double start = mp_now();
	if (!t->be->ops->augment_train)
		return mp_seterr(e, "--augment backend: the %s backend cannot augment (use "
				    "--augment loader)",
				 t->be->ops->name),
		       MP_TRAIN_BAD_SETUP;
	const int taps = mp_loader_plan_taps(t->train, e);
	if (taps < 0)
		return MP_TRAIN_BAD_SETUP;
	const uint64_t bytes = mp_loader_decoded_bytes(t->train);
	if (mp_resnet_keep_pixels(t->net, bytes, taps, e) < 0) {
		char why[sizeof e->msg];
		snprintf(why, sizeof why, "%s", e->msg);
		return mp_seterr(e, "--augment backend: %s (--augment loader needs none)", why),
		       MP_TRAIN_FAILED;
	}
	if (mp_loader_keep_decoded(t->train, put_pixels, t->net, e) < 0)
		return MP_TRAIN_FAILED;
	t->kept_seconds = mp_now() - start;
	return MP_TRAIN_DONE;
}

/* Returns MP_TRAIN_DONE, MP_TRAIN_BAD_SETUP (data that does not fit the
 * options) or MP_TRAIN_FAILED (bad data: a corrupt DB, a label out of
 * range; or a failure of the system). */
/* Validation images that are also training images make the validation
 * error read lower than on unseen ones, and nothing else shows it: a
 * warning naming a few, unless the two sets are the same data (-v given
 * the training set on purpose, to watch the fit). */
static void warn_shared_records(const trainer *t)
{
	enum { SHOWN = 3 };
	const mp_loader *tr = t->train, *va = t->val;
	if (mp_loader_records(tr) == mp_loader_records(va) &&
	    mp_loader_fingerprint(tr) == mp_loader_fingerprint(va))
		return;
	mp_loader_same shown[SHOWN];
	const int64_t n = mp_loader_shared(tr, va, shown, SHOWN);
	if (n < 0) {
		mp_warnx("warning: out of memory: the validation set was not checked for "
			 "training images");
		return;
	}
	if (n == 0)
		return;
	char which[1024] = "";
	for (int i = 0; i < n && i < SHOWN; i++) {
		int vl, tl;
		const char *vn = mp_loader_record_name(va, shown[i].b, &vl);
		const char *tn = mp_loader_record_name(tr, shown[i].a, &tl);
		size_t used = strlen(which);
		snprintf(which + used, sizeof which - used, "%srecord %llu (%.*s) is record %llu (%.*s)",
			 i ? "; " : "", (unsigned long long)shown[i].b, vl > 200 ? 200 : vl, vn,
			 (unsigned long long)shown[i].a, tl > 200 ? 200 : tl, tn);
	}
	mp_warnx("warning: %lld of the %llu validation records in %s are stored exactly as "
		 "training records in %s (%s%s): the validation error will read lower than on "
		 "images not trained on",
		 (long long)n, (unsigned long long)mp_loader_records(va), t->o->val_db,
		 t->o->train_db, which, n > SHOWN ? "; ..." : "");
}

static int open_loaders(trainer *t, mp_resnet_config *cfg, mp_error *e)
{
	const mp_train_opts *o = t->o;
	const int threads = loader_threads(t);
	mp_loader_opts lo = {
		.path = o->train_db, .train = 1, .batch = o->batch,
		.threads = threads, .prefetch = 2 * threads + 1,
		.drop_last = 1, .seed = o->seed,
		.aug = {.scale_min = o->scale_min, .scale_max = o->scale_max,
			.crop = cfg->input_size},
	};
	int bad_data;
	/* The validation set first: a path mistyped, a stream or a set
	 * without labels is refused before the training set, ten times
	 * larger, is read whole (seconds for Mini-Places, minutes from a
	 * cold disk). Its mean is set once the training set's is known. */
	if (o->val_db) {
		mp_loader_opts vo = {
			.path = o->val_db, .train = 0, .batch = o->batch,
			.threads = threads, .prefetch = 2 * threads + 1,
			.eval_size = cfg->input_size,
		};
		if (!(t->val = mp_loader_open(&vo, &bad_data, e)))
			return bad_data ? MP_TRAIN_FAILED : MP_TRAIN_BAD_SETUP;
		if (!mp_loader_meta(t->val)->labelled)
			return mp_seterr(e, "%s: the validation set has no labels", o->val_db),
			       MP_TRAIN_BAD_SETUP;
	}
	/* Opened once: opening reads every record (a table of them, and the
	 * fingerprint over their bytes), the whole DB. */
	if (!(t->train = mp_loader_open(&lo, &bad_data, e)))
		return bad_data ? MP_TRAIN_FAILED : MP_TRAIN_BAD_SETUP;
	const mp_meta *m = mp_loader_meta(t->train);
	/* The mean: --mean, the checkpoint's (net_from_checkpoint set it), or
	 * the training set's. */
	if (!o->has_mean && !o->resume) {
		if (!m->has_mean)
			return mp_seterr(e, "%s: the dataset has no mean; give --mean R,G,B",
					 o->train_db), MP_TRAIN_BAD_SETUP;
		memcpy(cfg->mean, m->mean, sizeof cfg->mean);
	}
	mp_loader_set_mean(t->train, cfg->mean);
	if (!cfg->classes) {
		if (m->classes < 1)
			return mp_seterr(e, "%s: the dataset does not say how many classes it has "
					    "(pack it with a categories file, or give --classes N)",
					 o->train_db), MP_TRAIN_BAD_SETUP;
		/* a list whose labels are all 0, packed without a categories
		 * file, records one class: nothing for a classifier to learn */
		if (m->classes < 2)
			return mp_seterr(e, "%s: the dataset has 1 class, and a network needs 2 or "
					    "more to tell apart (pack it with a categories file, or "
					    "mp-batchwriter --classes N, that counts them all)",
					 o->train_db), MP_TRAIN_BAD_SETUP;
		cfg->classes = m->classes;
	} else if (m->classes > 0 && m->classes != cfg->classes) {
		return mp_seterr(e, "%s: the dataset has %d class%s, --classes says %d", o->train_db,
				 m->classes, m->classes == 1 ? "" : "es", cfg->classes),
		       MP_TRAIN_BAD_SETUP;
	}
	t->classes = cfg->classes;
	t->class_names = m->class_names;
	t->steps_per_epoch = (long)mp_loader_batches(t->train);
	if (!t->val)
		return MP_TRAIN_DONE;
	mp_loader_set_mean(t->val, cfg->mean);
	const mp_meta *vm = mp_loader_meta(t->val);
	if (vm->classes > 0 && vm->classes != t->classes)
		return mp_seterr(e, "%s: the validation set has %d class%s, the training set %d",
				 o->val_db, vm->classes, vm->classes == 1 ? "" : "es", t->classes),
		       MP_TRAIN_BAD_SETUP;
	/* the same count of other classes, or of the same in another order,
	 * would score the network against labels that mean something else */
	for (int i = 0; t->class_names && vm->class_names && vm->classes == t->classes &&
			i < t->classes; i++)
		if (strcmp(t->class_names[i], vm->class_names[i]))
			return mp_seterr(e, "%s: the validation set's class %d is \"%s\", the "
					    "training set's \"%s\" (pack both with the same "
					    "categories file)",
					 o->val_db, i, vm->class_names[i], t->class_names[i]),
			       MP_TRAIN_BAD_SETUP;
	warn_shared_records(t);
	return MP_TRAIN_DONE;
}

/* A checkpoint that is a file we can read, yet fails to read as one, is
 * damaged: bad data, where a missing one is a usage error. */
static int readable_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* A --resume of a last.safetensors that is missing, in a directory that
 * holds checkpoints (a run killed between its first checkpoint and the
 * link to it): the message names the newest. */
static void missing_last_hint(const char *path, mp_error *e)
{
	const char *slash = strrchr(path, '/');
	char dir[PATH_LEN], name[256], newest[PATH_LEN];
	if (strcmp(slash ? slash + 1 : path, "last.safetensors"))
		return;
	struct stat st;
	if (mp_parent_dir(path, dir, sizeof dir) < 0 || stat(path, &st) == 0 ||
	    !newest_checkpoint(dir, name, sizeof name) ||
	    join(newest, dir, name) < 0)
		return;
	mp_seterr(e, "%s; the newest checkpoint there is %s: resume from it", e->msg, newest);
}

/* Two runs in one directory would write over each other's checkpoints and
 * interleave their logs, and a --force would delete the files of the run
 * still going: the directory is locked for the run (flock, released by the
 * system however the process ends). */
static int lock_out_dir(trainer *t, mp_error *e)
{
	const char *dir = t->o->out_dir;
	t->out_dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t->out_dir_fd < 0)
		return mp_seterr(e, "%s: %s", dir, strerror(errno));
	if (flock(t->out_dir_fd, LOCK_EX | LOCK_NB) == 0)
		return 0;
	if (errno == EWOULDBLOCK)
		return mp_seterr(e, "%s: another mp-train is running in it; wait for it to end "
				    "(or stop it) before resuming or replacing its run", dir);
	/* a file system without locks: nothing to guard with */
	return 0;
}

/* A failure of the log a resume took from the checkpoint (its run's
 * --log) says where the path came from; returns rc. */
static int taken_log_failed(const trainer *t, int rc, mp_error *e)
{
	if (t->o->resume && t->o->log_path == t->log_taken)
		mp_seterr(e, "%s (the --log of %s's run; --log chooses another)", e->msg,
			  t->o->resume);
	return rc;
}

static int setup(trainer *t, mp_error *e)
{
	const mp_train_opts *o = t->o;
	mp_resnet_config cfg = o->net;
	if (o->resume) {
		if (mp_weights_read(o->resume, &t->ckpt, e) < 0) {
			if (readable_file(o->resume))
				return MP_TRAIN_FAILED;
			missing_last_hint(o->resume, e);
			return MP_TRAIN_BAD_SETUP;
		}
		if (mp_weights_config(&t->ckpt, &t->ckpt_net, e) < 0 ||
		    net_from_checkpoint(o, &t->ckpt_net, &cfg, e) < 0 ||
		    options_from_checkpoint(&t->opts, &t->ckpt, in_dir(o->resume, o->out_dir),
					    t->options_taken, sizeof t->options_taken, t->log_taken,
					    sizeof t->log_taken, e) < 0 ||
		    resumed_schedule_check(&t->opts, e) < 0)
			return MP_TRAIN_BAD_SETUP;
		if (!o->has_mean) {
			char *taken = t->options_taken;
			const size_t size = sizeof t->options_taken;
			for (int c = 0; c < 3; c++)
				shortest_number(cfg.mean[c], c ? "," : " --mean ",
						taken + strlen(taken), size - strlen(taken));
		}
	}
	if (o->scale_min < cfg.input_size || o->scale_max < o->scale_min) {
		/* values a resumed run took from the checkpoint: say whose they are */
		const unsigned scales = MP_TRAIN_OPT_SCALE_MIN | MP_TRAIN_OPT_SCALE_MAX;
		const int taken = o->resume && (o->train_given & scales) != scales &&
				  strstr(t->options_taken, "--scale-m");
		return mp_seterr(e, "--scale-min %d and --scale-max %d: need crop %d <= min <= max%s%s%s",
				 o->scale_min, o->scale_max, cfg.input_size,
				 taken ? " (from " : "", taken ? o->resume : "", taken ? ")" : ""),
		       MP_TRAIN_BAD_SETUP;
	}
	/* the backend first: its setup may touch the environment, which the
	 * loader's threads read */
	char desc[512];
	if (mp_backend_device_fits(o->backend, o->device, e) < 0)
		return MP_TRAIN_BAD_SETUP;
	if (!(t->be = mp_backend_open(o->backend, o->threads, o->device, o->precision, desc,
				       sizeof desc, e))) {
		/* a resume that took them from the checkpoint says so */
		char taken[64] = "";
		if (o->resume && strstr(t->options_taken, "--backend"))
			snprintf(taken, sizeof taken, "--backend %s", o->backend);
		if (o->resume && strstr(t->options_taken, "--precision"))
			snprintf(taken + strlen(taken), sizeof taken - strlen(taken), "%s--precision %s",
				 taken[0] ? " " : "", o->precision);
		if (taken[0])
			mp_seterr(e, "%s (%s: %s's run's; --backend and --precision choose others, "
				     "with other arithmetic)", e->msg, taken, o->resume);
		return MP_TRAIN_FAILED;
	}
	mp_backend_arithmetic(desc, t->compute, sizeof t->compute);
	/* The output and the log first: a run already there, a foreign log or
	 * a directory that cannot be written is named before the data is read
	 * whole (seconds for Mini-Places, minutes from a cold disk). */
	char what[256];
	struct stat st;
	char log_path[PATH_LEN];
	if (o->log_path)
		copy_path(log_path, o->log_path);
	else if (join(log_path, o->out_dir, "train.log") < 0)
		return mp_seterr(e, "%s: path too long", o->out_dir), MP_TRAIN_BAD_SETUP;
	const int log_stdout = o->log_path && !strcmp(o->log_path, "-");
	if (!log_stdout && foreign_log(log_path))
		return mp_seterr(e, "%s is not a training log (its first line is not the log's "
				    "header): mp-train does not write into it, even with --force "
				    "or --resume", log_path),
		       taken_log_failed(t, MP_TRAIN_BAD_SETUP, e);
	if (make_dirs(o->out_dir, &t->made_out_dir, e) < 0)
		return MP_TRAIN_FAILED;
	/* once out_dir is there to compare with; a failed start removes it */
	if (!log_stdout && log_among_run_files(log_path, o->out_dir))
		return mp_seterr(e, "--log %s: a name of the run's own files in %s (its checkpoints, "
				    "weights and last.safetensors), which would overwrite or remove "
				    "the log: give the log another name", log_path, o->out_dir),
		       MP_TRAIN_BAD_SETUP;
	if (check_writable(o->out_dir, e) < 0 || lock_out_dir(t, e) < 0)
		return MP_TRAIN_FAILED;
	if (!log_stdout && lock_existing_log(t, log_path, e) < 0)
		return taken_log_failed(t, MP_TRAIN_FAILED, e);
	int log_used = o->log_path && !log_stdout && stat(o->log_path, &st) == 0 &&
		       S_ISREG(st.st_mode) && st.st_size > 0;
	if (!o->resume && log_used && !o->force)
		return mp_seterr(e, "%s holds a log already: continue its run with --resume, or "
				    "start over with --force", o->log_path),
		       MP_TRAIN_BAD_SETUP;
	int start_over = 0;
	if (o->resume && !in_dir(o->resume, o->out_dir) &&
	    previous_run(o->out_dir, what, sizeof what)) {
		/* another run's checkpoint would overwrite this run's files and
		 * append to its log */
		if (!o->force)
			return mp_seterr(e, "%s already holds a run (%s), and %s is not one of its "
					    "checkpoints: resume in the checkpoint's directory, or "
					    "replace this run with --force",
					 o->out_dir, what, o->resume),
			       MP_TRAIN_BAD_SETUP;
		start_over = 1;
	}
	if (!o->resume && previous_run(o->out_dir, what, sizeof what)) {
		char from[PATH_LEN], name[256];
		/* last.safetensors, or where it is missing the newest checkpoint;
		 * a run stopped before its first has none to offer */
		int has = join(from, o->out_dir, "last.safetensors") == 0 &&
			  stat(from, &st) == 0;
		if (!has && newest_checkpoint(o->out_dir, name, sizeof name))
			has = join(from, o->out_dir, name) == 0;
		if (!o->force && !has)
			return mp_seterr(e, "%s already holds a run (%s) that has no checkpoint to "
					    "resume from: start over with --force",
					 o->out_dir, what),
			       MP_TRAIN_BAD_SETUP;
		if (!o->force)
			return mp_seterr(e, "%s already holds a run (%s): continue it with --resume "
					    "%s, or start over with --force",
					 o->out_dir, what, from),
			       MP_TRAIN_BAD_SETUP;
		start_over = 1; /* once nothing else can fail: open_log */
	}

	int rc = open_loaders(t, &cfg, e);
	if (rc != MP_TRAIN_DONE)
		return rc;
	if (mp_resnet_config_check(&cfg, e) < 0)
		return MP_TRAIN_BAD_SETUP;
	long ck_epochs = 0, ck_batch = 0, ck_step = 0;
	if (o->resume &&
	    (rc = resume_check(t, &cfg, &ck_epochs, &ck_batch, &ck_step, e)) != MP_TRAIN_DONE)
		return rc;

	if (!(t->net = mp_resnet_new(&cfg, t->be, e)))
		return MP_TRAIN_FAILED;
	if (!(t->options_json = options_to_json(t, &cfg)))
		return mp_seterr(e, "out of memory"), MP_TRAIN_FAILED;
	if (o->resume) {
		rc = resume_from(t, ck_epochs, ck_batch, ck_step, e);
		mp_st_free(&t->ckpt); /* loaded; not needed from here on */
		if (rc != MP_TRAIN_DONE)
			return rc;
		/* a run cannot end before where it already is: its weights
		 * would say both */
		if (t->epoch > o->epochs || (t->epoch == o->epochs && t->batch > 0))
			return (t->batch ? mp_seterr(e, "--epochs %d: %s is in epoch %d already "
						     "(batch %ld, step %ld)", o->epochs, o->resume,
						     t->epoch + 1, t->batch, t->step)
					 : mp_seterr(e, "--epochs %d: %s has done %d epochs already "
						     "(step %ld)", o->epochs, o->resume, t->epoch,
						     t->step)),
			       MP_TRAIN_BAD_SETUP;
	} else if (mp_resnet_init(t->net, o->seed, e) < 0) {
		return MP_TRAIN_FAILED;
	}
	if (o->augment_backend && (rc = keep_training_set(t, e)) != MP_TRAIN_DONE)
		return rc;
	/* a signal while the data was read: nothing is written yet, and
	 * nothing need be (a start that fails removes what it made) */
	if (o->stop && *o->stop)
		return MP_TRAIN_STOPPED_AT_START;
	if (open_log(t, o->resume && !start_over, start_over, e) < 0)
		return taken_log_failed(t, MP_TRAIN_FAILED, e);
	remove_stale_temporaries(o->out_dir);
	if (o->resume && !start_over && resumed_checkpoint_last(t, e) < 0)
		return MP_TRAIN_FAILED;
	if (!o->quiet) {
		const char *prefix;
		const double flops = mp_giga_or_mega(mp_resnet_flops(t->net, cfg.input_size), &prefix);
		printf("mp-train: %s; network depth %d, %d stages, %llu weights, %.3g %sFLOP "
		       "per image at %d px\n",
		       desc, cfg.depth, cfg.stages,
		       (unsigned long long)mp_resnet_num_weights(t->net), flops, prefix,
		       cfg.input_size);
		const int lt = loader_threads(t);
		printf("mp-train: %s: %llu images, %ld batches of %d per epoch, %d loader "
		       "thread%s; %s%s\n",
		       o->train_db, (unsigned long long)mp_loader_records(t->train),
		       t->steps_per_epoch, o->batch, lt, lt == 1 ? "" : "s",
		       o->val_db ? "validation on " : "no validation", o->val_db ? o->val_db : "");
		if (mp_loader_taps(t->train))
			printf("mp-train: the training set decoded into the %s backend's memory: "
			       "%.1f MB, augmented there from plans of up to %d taps (%.1f s)\n",
			       t->be->ops->name, mp_loader_decoded_bytes(t->train) / 1e6,
			       mp_loader_taps(t->train), t->kept_seconds);
		if (t->options_taken[0])
			printf("mp-train: options from %s:%s\n", o->resume, t->options_taken);
		if (o->resume && t->epoch >= o->epochs)
			printf("mp-train: %s has done %d of %d epochs: nothing to train (a larger "
			       "--epochs goes on)\n",
			       o->resume, t->epoch, o->epochs);
		else if (o->resume && o->max_steps > 0 && t->step >= o->max_steps)
			printf("mp-train: %s has done %ld steps, --max-steps %ld: nothing to train\n",
			       o->resume, t->step, o->max_steps);
		else if (o->resume)
			printf("mp-train: resuming %s at epoch %d, batch %ld (step %ld)\n",
			       o->resume, t->epoch + 1, t->batch, t->step);
		if (t->val_missed && t->val && t->batch)
			printf("mp-train: %s: a signal stopped its run before the validation at "
			       "epoch %.3f: validating first\n",
			       o->resume, t->epoch + (double)t->batch / t->steps_per_epoch);
		else if (t->val_missed && t->val)
			printf("mp-train: %s: a signal stopped its run before the validation of "
			       "epoch %d: validating first\n",
			       o->resume, t->epoch);
		fflush(stdout);
	}
	return MP_TRAIN_DONE;
}

/* ---- the run ------------------------------------------------------------------- */

enum { STOP_NOT, STOP_SIGNAL, STOP_MAX_STEPS };

/* The next training batch: its images, or its plan where the training set
 * is kept decoded (mp_loader_next_plan). */
static int next_batch(trainer *t, void *into, int32_t *labels, uint64_t *ids, int *n, mp_error *e)
{
	if (mp_loader_taps(t->train))
		return mp_loader_next_plan(t->train, into, labels, ids, n, e);
	return mp_loader_next(t->train, into, labels, ids, n, e);
}

static int run(trainer *t, mp_error *e)
{
	const mp_train_opts *o = t->o;
	const mp_resnet_config *cfg = mp_resnet_cfg(t->net);
	const int size = cfg->input_size, classes = cfg->classes;
	const long first_step = t->step;
	/* the batches the loader fills and the backend uploads: the network's
	 * two input slots, which a recorded step reads without a copy
	 * (page-locked on a GPU, copied from without staging); the loader
	 * fills one while the device runs a step from the other */
	/* with the training set kept decoded, the slots hold the batches'
	 * plans, and slot 0 the validation's images too: room for both */
	const int planned = mp_loader_taps(t->train) > 0;
	int32_t *plan[2] = {NULL, NULL};
	for (int k = 0; planned && k < 2; k++)
		plan[k] = mp_resnet_plan(t->net, k, o->batch, size, e);
	float *slot[2] = {mp_resnet_input(t->net, 0, o->batch, size, size, e),
			  mp_resnet_input(t->net, 1, o->batch, size, size, e)};
	for (int k = 0; planned && k < 2; k++) /* the same memory, held for both now */
		plan[k] = mp_resnet_plan(t->net, k, o->batch, size, e);
	float *images = slot[0];
	float *probs = malloc(sizeof(float) * (size_t)classes * (size_t)o->batch);
	int32_t *labels = malloc(sizeof(int32_t) * 2 * (size_t)o->batch);
	uint64_t *ids = malloc(sizeof(uint64_t) * 2 * (size_t)o->batch);
	int status = MP_TRAIN_FAILED;
	char what[64];
	sums val = {0};
	mp_schedule sched = o->schedule;
	sched.base = o->lr;
	sched.epochs = o->epochs;
	if (!slot[0] || !slot[1] || (planned && (!plan[0] || !plan[1])))
		goto out; /* e says why */
	if (!probs || !labels || !ids) {
		mp_seterr(e, "out of memory");
		goto out;
	}
	int32_t *lab[2] = {labels, labels + o->batch};
	uint64_t *idv[2] = {ids, ids + o->batch};
	/* the validation a signal left undone, without a validation set now:
	 * nothing to make up, and the checkpoints from here on do not ask */
	if (t->val_missed && !t->val)
		t->val_missed = 0;
	if (t->val_missed) {
		int vr = make_up_validation(t, images, labels, ids, probs, e);
		if (vr < 0)
			goto out;
		/* a signal during it, or while its row was written, stops the
		 * run as at the end of an epoch: with the checkpoint of this
		 * position, and never after a step */
		const int more = t->epoch < o->epochs &&
				 !(o->max_steps > 0 && t->step >= o->max_steps);
		if (vr == VALIDATE_STOPPED || (more && o->stop && *o->stop)) {
			if (write_checkpoint(t, t->epoch, t->batch, e) < 0)
				goto out;
			status = MP_TRAIN_STOPPED;
			goto out;
		}
		/* with nothing left to train, no later checkpoint would say it
		 * is done: this position's says so, or every later resume
		 * from it would validate again */
		if (!more && write_checkpoint(t, t->epoch, t->batch, e) < 0)
			goto out;
	}
	/* a run resumed where its --max-steps ended it has nothing left to
	 * train, as one that has done its epochs */
	for (; t->epoch < o->epochs && !(o->max_steps > 0 && t->step >= o->max_steps);
	     t->epoch++, t->batch = 0) {
		if (mp_loader_start_at(t->train, (uint64_t)t->epoch, (uint64_t)t->batch, e) < 0)
			goto out;
		if (!t->batch) {
			memset(&t->epoch_sums, 0, sizeof t->epoch_sums);
			memset(&t->interval, 0, sizeof t->interval);
		}
		snprintf(what, sizeof what, "epoch %d/%d", t->epoch + 1, o->epochs);
		mp_progress p;
		/* counted in images, so the bar's rate is images/s */
		mp_progress_init(&p, what, (uint64_t)(t->steps_per_epoch * o->batch), o->quiet);
		mp_progress_start_at(&p, (uint64_t)(t->batch * o->batch));
		int stop = 0, n = 0, rc = 0, cur = 0;
		double tick = mp_now(); /* wall time per step, data loading included */
		rc = next_batch(t, planned ? (void *)plan[cur] : slot[cur], lab[cur], idv[cur], &n, e);
		if (rc == 1 && !planned && mp_resnet_input_ready(t->net, cur, n, size, size, e) < 0)
			goto out;
		while (!stop && rc == 1) {
			double loss;
			t->lr = mp_schedule_lr(&sched, t->epoch, t->batch, t->steps_per_epoch);
			if (check_labels(t, o->train_db, lab[cur], idv[cur], n, e) < 0 ||
			    (planned ? mp_resnet_train_start_plan(t->net, cur, lab[cur], n, size,
								  (float)o->smoothing, (float)t->lr,
								  (float)o->momentum, (float)o->wd, e)
				     : mp_resnet_train_start(t->net, slot[cur], lab[cur], n, size, size,
							     (float)o->smoothing, (float)t->lr,
							     (float)o->momentum, (float)o->wd, e)) < 0)
				goto out;
			/* the next batch loads into the other slot while the device
			 * runs this step (where it is a graph; on the CPU the step
			 * has run already) */
			int n_next = 0, rc_next = 0;
			if (!(o->max_steps > 0 && t->step + 1 >= o->max_steps) && !(o->stop && *o->stop))
				rc_next = next_batch(t, planned ? (void *)plan[1 - cur] : slot[1 - cur],
						     lab[1 - cur], idv[1 - cur], &n_next, e);
			/* and, on a GPU, its copy to the device starts too */
			if (rc_next == 1 && !planned &&
			    mp_resnet_input_ready(t->net, 1 - cur, n_next, size, size, e) < 0)
				goto out;
			mp_error step_e;
			if (mp_resnet_train_finish(t->net, &loss, probs, &step_e) < 0) {
				*e = step_e;
				goto out;
			}
			/* the update has been made; the weights are not saved from here
			 * on, the last checkpoint stays the last good one */
			if (!isfinite(loss)) {
				mp_progress_done(&p);
				t->r->diverged = 1;
				mp_seterr(e, "step %ld (epoch %d, batch %ld): the loss is %s at lr %g; "
					     "stopping. %s%s",
					  t->step + 1, t->epoch + 1, t->batch + 1,
					  isnan(loss) ? "NaN" : "infinite", t->lr,
					  t->last_good[0] ? "The last good checkpoint is " : "No checkpoint was written",
					  t->last_good);
				goto out;
			}
			t->batch++;
			t->step++;
			double now = mp_now(), dt = now - tick;
			tick = now;
			sums *both[2] = {&t->epoch_sums, &t->interval};
			for (int k = 0; k < 2; k++) {
				both[k]->loss += loss * n;
				score(probs, lab[cur], n, classes, both[k]);
				both[k]->seconds += dt;
			}
			if (o->log_every > 0 && t->step % o->log_every == 0) {
				if (log_row(t, "step", t->epoch + (double)t->batch / t->steps_per_epoch,
					    &t->interval, NULL, e) < 0)
					goto out;
				memset(&t->interval, 0, sizeof t->interval);
			}
			char extra[128];
			snprintf(extra, sizeof extra, "loss %.4f err %.1f%%",
				 t->epoch_sums.loss / t->epoch_sums.images,
				 100 * mp_error_rate(t->epoch_sums.top1, t->epoch_sums.images));
			mp_progress_update(&p, (uint64_t)(t->batch * o->batch), extra);
			if (o->stop && *o->stop)
				stop = STOP_SIGNAL;
			else if (o->max_steps > 0 && t->step >= o->max_steps)
				stop = STOP_MAX_STEPS;
			cur = 1 - cur;
			n = n_next;
			rc = rc_next; /* a loader error ends the loop below, as before */
		}
		mp_progress_done(&p);
		if (!stop && rc < 0)
			goto out;
		int finished = t->batch == t->steps_per_epoch;
		/* a signal in a --max-steps run's last step ends it all the same */
		const int at_max = o->max_steps > 0 && t->step >= o->max_steps;
		if (finished || stop == STOP_MAX_STEPS || (stop && at_max)) {
			/* the end of an epoch, or of a --max-steps run */
			int last = t->epoch + 1 == o->epochs || at_max;
			int due = t->val &&
				  (last || (o->eval_every > 0 && (t->epoch + 1) % o->eval_every == 0));
			/* a signal in the epoch's last step leaves it to the
			 * resumed run, as one during the pass does */
			int eval = due && stop != STOP_SIGNAL;
			if (eval) {
				int vr = validate(t, images, labels, ids, probs, &val, e);
				if (vr < 0)
					goto out;
				if (vr == VALIDATE_STOPPED) {
					/* a signal: the checkpoint now, not after the pass */
					eval = 0;
					stop = STOP_SIGNAL;
				} else {
					t->r->val_top1 = mp_error_rate(val.top1, val.images);
					t->r->val_top5 = mp_error_rate(val.top5, val.images);
				}
			}
			t->val_missed = due && !eval;
			if (log_row(t, finished ? "epoch" : "end",
				    t->epoch + (finished ? 1.0 : (double)t->batch / t->steps_per_epoch),
				    &t->epoch_sums, eval ? &val : NULL, e) < 0)
				goto out;
			print_epoch(t, finished ? t->epoch + 1 : t->epoch, finished ? 0 : t->batch,
				    &t->epoch_sums, eval ? &val : NULL);
		}
		if (finished)
			t->r->epochs = t->epoch + 1;
		if (stop) {
			int ep = finished ? t->epoch + 1 : t->epoch;
			long b = finished ? 0 : t->batch;
			if (write_checkpoint(t, ep, b, e) < 0)
				goto out;
			if (stop == STOP_SIGNAL) {
				status = MP_TRAIN_STOPPED;
				goto out;
			}
			break;
		}
		int ckpt = finished && (t->epoch + 1 == o->epochs ||
					(o->checkpoint_every > 0 &&
					 (t->epoch + 1) % o->checkpoint_every == 0));
		if (ckpt && write_checkpoint(t, t->epoch + 1, 0, e) < 0)
			goto out;
		/* a signal while the epoch's row or checkpoint was written: stop
		 * here rather than after a step of the next epoch */
		if (finished && t->epoch + 1 < o->epochs && o->stop && *o->stop) {
			if (!ckpt && write_checkpoint(t, t->epoch + 1, 0, e) < 0)
				goto out;
			status = MP_TRAIN_STOPPED;
			goto out;
		}
	}
	if (write_weights(t, e) < 0)
		goto out;
	long recorded, launched;
	mp_resnet_graph_counts(t->net, 1, &recorded, &launched);
	if (!o->quiet && recorded > 0)
		printf("mp-train: %ld of this run's %ld steps ran as one graph each (%ld recordings)\n",
		       launched, t->step - first_step, recorded);
	status = MP_TRAIN_DONE;
out:
	t->r->steps = t->step;
	/* images belongs to the network */
	free(probs);
	free(labels);
	free(ids);
	return status;
}

int mp_train_run(const mp_train_opts *o, mp_train_result *r, mp_error *e)
{
	trainer t = {.opts = *o, .r = r, .start = mp_now(), .out_dir_fd = -1, .log_lock_fd = -1};
	t.o = &t.opts;
	memset(r, 0, sizeof *r);
	r->val_top1 = r->val_top5 = -1;
	int status = setup(&t, e);
	r->epochs = t.epoch;
	if (status == MP_TRAIN_DONE)
		status = run(&t, e);
	else
		remove_made_dirs(o->out_dir, t.made_out_dir); // a start that failed leaves no empty directory of its own
	r->seconds = elapsed(&t);
	/* a new run that failed before it wrote a row or a checkpoint (a bad
	 * record in its first step) holds nothing but the log's header: it
	 * goes with the directory the start made, as after a failed start, so
	 * that the same command runs again without --force */
	struct stat st;
	const int nothing_kept = status == MP_TRAIN_FAILED && !o->resume && !t.last_good[0] &&
				 t.log && !t.log_stdout && fstat(fileno(t.log), &st) == 0 &&
				 S_ISREG(st.st_mode) && st.st_size == (off_t)strlen(LOG_HEADER);
	if (t.log && fclose(t.log) != 0 && status == MP_TRAIN_DONE) {
		mp_seterr(e, "%s: %s", t.log_path, strerror(errno));
		status = MP_TRAIN_FAILED;
	}
	if (nothing_kept && unlink(t.log_path) == 0)
		remove_made_dirs(o->out_dir, t.made_out_dir);
	free(t.options_json);
	mp_st_free(&t.ckpt);
	mp_resnet_free(t.net);
	if (t.be)
		mp_backend_free(t.be);
	mp_loader_close(t.train);
	mp_loader_close(t.val);
	if (t.out_dir_fd >= 0)
		close(t.out_dir_fd);
	if (t.log_lock_fd >= 0)
		close(t.log_lock_fd);
	return status;
}
