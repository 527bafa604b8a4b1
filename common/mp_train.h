/* The training job behind mp-train: data, network, optimizer, schedule,
 * validation, the log, checkpoints and resumption.
 *
 * Everything a run draws at random follows from the seed, the epoch and
 * the record (mp_loader, mp_augment), and the learning rate from the epoch
 * and step (mp_schedule), so a checkpoint only has to hold the network, the
 * momentum and a few counters for a resumed run to continue bit for bit. */
#ifndef MP_TRAIN_H
#define MP_TRAIN_H

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "mp_resnet.h"
#include "mp_schedule.h"
#include "mp_util.h"

/* The training state's metadata keys in a checkpoint (see mp-train(1)). */
#define MP_TRAIN_KEY_EPOCH "train.epoch"	/* epochs completed */
#define MP_TRAIN_KEY_BATCH "train.batch"	/* batches done of the next epoch */
#define MP_TRAIN_KEY_STEP "train.step"		/* optimizer steps in all */
#define MP_TRAIN_KEY_LR "train.lr"		/* the last step's rate */
#define MP_TRAIN_KEY_ELAPSED "train.elapsed"	/* seconds trained */
#define MP_TRAIN_KEY_EPOCH_SUMS "train.epoch_sums" /* the unfinished epoch's metrics */
#define MP_TRAIN_KEY_INTERVAL_SUMS "train.interval_sums" /* and those since its last row */
#define MP_TRAIN_KEY_OPTIONS "train.options"	/* JSON of the training options */
#define MP_TRAIN_KEY_VALIDATED "train.validated" /* 0: a signal stopped the run before
						  * the validation due here (missing: 1) */

/* The network options given (mp_train_opts.net_given): with --resume, these
 * must match the checkpoint's network, and the others come from it. */
enum {
	MP_TRAIN_NET_DEPTH = 1 << 0,
	MP_TRAIN_NET_WIDTHS = 1 << 1,	/* the stages too */
	MP_TRAIN_NET_SHORTCUT = 1 << 2,
	MP_TRAIN_NET_STEM_KERNEL = 1 << 3,
	MP_TRAIN_NET_STEM_STRIDE = 1 << 4,
	MP_TRAIN_NET_FC_BN = 1 << 5,
};

/* The training options given (mp_train_opts.train_given): with --resume,
 * those not given are the checkpoint's run's (its train.options), so that
 * a run resumed with no options goes on as it was started. */
enum {
	MP_TRAIN_OPT_BATCH = 1 << 0,
	MP_TRAIN_OPT_EPOCHS = 1 << 1,
	MP_TRAIN_OPT_LR = 1 << 2,
	MP_TRAIN_OPT_MOMENTUM = 1 << 3,
	MP_TRAIN_OPT_WD = 1 << 4,
	MP_TRAIN_OPT_SMOOTHING = 1 << 5,
	MP_TRAIN_OPT_POLICY = 1 << 6,
	MP_TRAIN_OPT_SCHEDULE = 1 << 7,
	MP_TRAIN_OPT_GAMMA = 1 << 8,
	MP_TRAIN_OPT_WARMUP = 1 << 9,
	MP_TRAIN_OPT_SCALE_MIN = 1 << 10,
	MP_TRAIN_OPT_SCALE_MAX = 1 << 11,
	MP_TRAIN_OPT_SEED = 1 << 12,
	MP_TRAIN_OPT_BACKEND = 1 << 13,
	MP_TRAIN_OPT_PRECISION = 1 << 14,
	/* what the run writes, not what it computes */
	MP_TRAIN_OPT_EVAL_EVERY = 1 << 15,
	MP_TRAIN_OPT_CHECKPOINT_EVERY = 1 << 16,
	MP_TRAIN_OPT_KEEP = 1 << 17,
	MP_TRAIN_OPT_LOG_EVERY = 1 << 18,
	MP_TRAIN_OPT_LOG = 1 << 19,
};

typedef struct {
	const char *train_db, *val_db, *out_dir, *log_path, *resume;
	mp_resnet_config net;	/* classes 0: from the training set; mean from it too */
	unsigned net_given;	/* MP_TRAIN_NET_* bits */
	unsigned train_given;	/* MP_TRAIN_OPT_* bits */
	int has_mean;		/* net.mean was given (--mean) */
	int has_crop;		/* net.input_size was given (--crop); with --resume,
				 * the checkpoint's otherwise */
	int scale_min, scale_max; /* the crop is net.input_size */
	int batch, epochs;
	double lr, momentum, wd, smoothing;
	mp_schedule schedule;	/* base, epochs filled from lr and epochs */
	int eval_every, checkpoint_every, keep;
	uint64_t seed;
	int threads;		/* compute threads (0: all) */
	int loader_threads;	/* decoding threads (0: 2 on the CPU, all cores but two on a GPU) */
	int augment_backend;	/* --augment backend: the training set decoded once into
				 * the backend's memory and augmented there */
	const char *backend;	/* cpu | cpu-ref | cuda | auto */
	int device;		/* the CUDA device (-1: not chosen; mp_backend_open) */
	const char *precision;	/* auto | fp32 | bf16 (mp_backend_open) */
	long max_steps;		/* stop after this many steps in all (0: no limit) */
	int log_every;		/* a log row every N steps (0: per epoch only) */
	int quiet;
	int force;		/* an OUT_DIR with a previous run may be reused */
	/* set by a signal handler (on any thread: atomic): stop after the
	 * step; set to SIGPIPE here when a log pipe's reader goes away */
	atomic_int *stop;
} mp_train_opts;

void mp_train_opts_default(mp_train_opts *o);

enum mp_train_status {
	MP_TRAIN_DONE = 0,
	MP_TRAIN_FAILED = 1,	/* a runtime failure: I/O, a bad record, NaN */
	MP_TRAIN_BAD_SETUP = 2,	/* inputs that do not fit the options */
	MP_TRAIN_STOPPED = 3,	/* o->stop was set; a checkpoint was written */
	MP_TRAIN_STOPPED_AT_START = 4, /* o->stop was set before the log was
					* opened; nothing was written */
};

typedef struct {
	char checkpoint[4096];	/* the newest checkpoint written ("" if none) */
	char weights[4096];	/* the final weights ("" unless done) */
	long steps;		/* optimizer steps in all */
	int epochs;		/* epochs completed */
	double val_top1, val_top5; /* the last validation (negative if none) */
	double seconds;
	int diverged;		/* it failed on NaN or infinity: going on would too */
} mp_train_result;

/* Runs the whole job; the messages of failures are in e. */
int mp_train_run(const mp_train_opts *o, mp_train_result *r, mp_error *e);

#endif
