/* TAP for the emulated device's tests: a test's checks set cur_failed,
 * ok() ends the test, tap_done() prints the plan and the count and gives
 * the exit status. Include once per program. */
#ifndef MP_EMU_TAP_H
#define MP_EMU_TAP_H

#include <stdio.h>

#include "backend.h"

static int tests, failures, cur_failed;

static inline void ok(const char *name)
{
	tests++;
	failures += cur_failed;
	printf("%s %d - %s\n", cur_failed ? "not ok" : "ok", tests, name);
	cur_failed = 0;
}

/* fails the current test when rc < 0, with be's message */
static inline void must(int rc, mp_backend *be, const char *what)
{
	if (rc < 0) {
		printf("# FAIL: %s: %s\n", what, mp_backend_error(be));
		cur_failed = 1;
	}
}

static inline int tap_done(void)
{
	printf("1..%d\n# %d of %d failed\n", tests, failures, tests);
	return failures ? 1 : 0;
}

#endif
