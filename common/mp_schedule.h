/* Learning-rate schedules: step drops at given epochs (the recipe: x0.1 at
 * 40 and 70) or cosine decay, either after an optional linear warmup. */
#ifndef MP_SCHEDULE_H
#define MP_SCHEDULE_H

#include "mp_util.h"

#define MP_MAX_MILESTONES 16

enum mp_lr_policy { MP_LR_STEP, MP_LR_COSINE };

typedef struct {
	int policy;
	double base;			/* the rate after warmup */
	double gamma;			/* step: factor at each milestone */
	int milestones[MP_MAX_MILESTONES]; /* step: epochs, increasing */
	int nmilestones;
	int epochs;			/* cosine: decays to 0 at the last epoch's end */
	double warmup;			/* epochs of linear warmup (0: none) */
} mp_schedule;

/* Parses "40,70" into milestones; the message names the bad entry. */
int mp_schedule_parse_milestones(mp_schedule *s, const char *text, mp_error *e);
int mp_schedule_check(const mp_schedule *s, mp_error *e);

/* The rate for step `step` (from 0) of epoch `epoch` (from 0), with
 * steps_per_epoch steps in an epoch. A step milestone at epoch m applies
 * from the first step of epoch m. */
double mp_schedule_lr(const mp_schedule *s, int epoch, long step, long steps_per_epoch);

#endif
