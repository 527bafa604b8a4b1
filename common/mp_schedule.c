#include "mp_schedule.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int mp_schedule_parse_milestones(mp_schedule *s, const char *text, mp_error *e)
{
	s->nmilestones = 0;
	if (!*text)
		return 0; // no drop
	/* an entry follows every comma: "40," is bad at its entry 2 */
	for (const char *p = text;;) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (!mp_number_start(p) || errno || end == p || v < 1 || v > 1000000 ||
		    (*end && *end != ','))
			return mp_seterr(e, "schedule \"%s\": entry %d is not an epoch from 1 to 1000000",
					 text, s->nmilestones + 1);
		if (s->nmilestones == MP_MAX_MILESTONES)
			return mp_seterr(e, "schedule \"%s\": more than %d milestones", text,
					 MP_MAX_MILESTONES);
		if (s->nmilestones && v <= s->milestones[s->nmilestones - 1])
			return mp_seterr(e, "schedule \"%s\": epochs must increase", text);
		s->milestones[s->nmilestones++] = (int)v;
		if (!*end)
			break;
		p = end + 1;
	}
	return 0;
}

int mp_schedule_check(const mp_schedule *s, mp_error *e)
{
	if (!(s->base > 0) || !isfinite(s->base))
		return mp_seterr(e, "learning rate %g is not positive", s->base);
	if (s->policy == MP_LR_STEP && !(s->gamma > 0 && s->gamma <= 1))
		return mp_seterr(e, "gamma %g is outside (0, 1]", s->gamma);
	if (s->policy == MP_LR_COSINE && s->epochs < 1)
		return mp_seterr(e, "cosine decay needs a number of epochs");
	if (!(s->warmup >= 0))
		return mp_seterr(e, "--warmup %g: not a number of epochs", s->warmup);
	if (s->policy == MP_LR_COSINE && s->warmup >= s->epochs)
		return mp_seterr(e, "--warmup %g: the cosine decay needs a warmup shorter than "
				    "--epochs %d", s->warmup, s->epochs);
	return 0;
}

double mp_schedule_lr(const mp_schedule *s, int epoch, long step, long steps_per_epoch)
{
	if (steps_per_epoch < 1)
		steps_per_epoch = 1;
	/* progress in epochs at the end of this step */
	double done = epoch + (double)(step + 1) / (double)steps_per_epoch;
	if (s->warmup > 0 && done <= s->warmup)
		return s->base * done / s->warmup;
	if (s->policy == MP_LR_COSINE) {
		double t = (done - s->warmup) / (s->epochs - s->warmup);
		if (t > 1)
			t = 1;
		return s->base * 0.5 * (1 + cos(M_PI * t));
	}
	double lr = s->base;
	for (int i = 0; i < s->nmilestones; i++)
		if (epoch >= s->milestones[i])
			lr *= s->gamma;
	return lr;
}
