/* Learning-rate schedules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "mp_schedule.h"

static void near(double a, double b)
{
	if (fabs(a - b) > 1e-12 * (fabs(b) + 1))
		fail_msg("%.17g is not %.17g", a, b);
}

static void recipe_steps(void **state)
{
	(void)state;
	mp_schedule s = {.policy = MP_LR_STEP, .base = 0.1, .gamma = 0.1};
	mp_error e;
	assert_int_equal(mp_schedule_parse_milestones(&s, "40,70", &e), 0);
	assert_int_equal(mp_schedule_check(&s, &e), 0);
	near(mp_schedule_lr(&s, 0, 0, 782), 0.1);
	near(mp_schedule_lr(&s, 39, 781, 782), 0.1);
	near(mp_schedule_lr(&s, 40, 0, 782), 0.1 * 0.1);
	near(mp_schedule_lr(&s, 69, 500, 782), 0.1 * 0.1);
	near(mp_schedule_lr(&s, 70, 0, 782), 0.1 * 0.1 * 0.1);
	near(mp_schedule_lr(&s, 79, 781, 782), 0.1 * 0.1 * 0.1);
}

static void warmup_then_steps(void **state)
{
	(void)state;
	mp_schedule s = {.policy = MP_LR_STEP, .base = 0.4, .gamma = 0.5, .warmup = 2};
	mp_error e;
	assert_int_equal(mp_schedule_parse_milestones(&s, "5", &e), 0);
	near(mp_schedule_lr(&s, 0, 0, 10), 0.4 * 0.1 / 2);  /* end of step 1 of 20 */
	near(mp_schedule_lr(&s, 0, 9, 10), 0.4 * 1.0 / 2);
	near(mp_schedule_lr(&s, 1, 9, 10), 0.4);             /* warmup's last step */
	near(mp_schedule_lr(&s, 2, 0, 10), 0.4);
	near(mp_schedule_lr(&s, 5, 0, 10), 0.2);
}

static void cosine(void **state)
{
	(void)state;
	mp_schedule s = {.policy = MP_LR_COSINE, .base = 0.1, .epochs = 10};
	mp_error e;
	assert_int_equal(mp_schedule_check(&s, &e), 0);
	near(mp_schedule_lr(&s, 4, 99, 100), 0.05); /* halfway: half the rate */
	near(mp_schedule_lr(&s, 9, 99, 100), 0.0);
	near(mp_schedule_lr(&s, 0, 0, 100), 0.1 * 0.5 * (1 + cos(M_PI * 0.001)));
	s.warmup = 1;
	near(mp_schedule_lr(&s, 0, 49, 100), 0.05);
	near(mp_schedule_lr(&s, 5, 49, 100), 0.05); /* halfway through the 9 after warmup */
}

static void refusals(void **state)
{
	(void)state;
	mp_schedule s = {.policy = MP_LR_STEP, .base = 0.1, .gamma = 0.1};
	mp_error e;
	const char *bad[] = {"70,40", "40,", "x", "0", "40,,70", "-3"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(mp_schedule_parse_milestones(&s, bad[i], &e), -1);
	assert_non_null(strstr(e.msg, "\"-3\""));
	/* the entry named is the one at fault: the empty one after a comma */
	assert_int_equal(mp_schedule_parse_milestones(&s, "40,", &e), -1);
	assert_string_equal(e.msg, "schedule \"40,\": entry 2 is not an epoch from 1 to 1000000");
	assert_int_equal(mp_schedule_parse_milestones(&s, ",40", &e), -1);
	assert_string_equal(e.msg, "schedule \",40\": entry 1 is not an epoch from 1 to 1000000");
	assert_int_equal(mp_schedule_parse_milestones(&s, "40,70", &e), 0);
	assert_int_equal(s.nmilestones, 2);
	assert_int_equal(mp_schedule_parse_milestones(&s, "", &e), 0);
	assert_int_equal(s.nmilestones, 0);
	s.gamma = 0;
	assert_int_equal(mp_schedule_check(&s, &e), -1);
	s.gamma = 0.1;
	s.base = -1;
	assert_int_equal(mp_schedule_check(&s, &e), -1);
	mp_schedule c = {.policy = MP_LR_COSINE, .base = 0.1, .epochs = 5, .warmup = 5};
	assert_int_equal(mp_schedule_check(&c, &e), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(recipe_steps),
		cmocka_unit_test(warmup_then_steps),
		cmocka_unit_test(cosine),
		cmocka_unit_test(refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
