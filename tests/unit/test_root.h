/* Shared by the unit tests that run the PyTorch side: where the repository
 * is. Include after cmocka.h. */
#ifndef MP_TEST_ROOT_H
#define MP_TEST_ROOT_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The repository root: $MP_ROOT, else two levels above the directory of
 * this binary (build/tests/), else the current directory; it must hold
 * scripts/mp_resnet.py. */
static void find_root(char *root, size_t n)
{
	char buf[PATH_MAX], probe[PATH_MAX + 64];
	const char *env = getenv("MP_ROOT");
	if (env && *env) {
		snprintf(root, n, "%s", env);
		return;
	}
	ssize_t len = readlink("/proc/self/exe", buf, sizeof buf - 1);
	if (len > 0) {
		buf[len] = '\0';
		for (int up = 0; up < 3; up++) {
			char *slash = strrchr(buf, '/');
			if (slash)
				*slash = '\0';
		}
		snprintf(probe, sizeof probe, "%s/scripts/mp_resnet.py", buf);
		if (access(probe, R_OK) == 0) {
			snprintf(root, n, "%s", buf);
			return;
		}
	}
	if (access("scripts/mp_resnet.py", R_OK) == 0 && getcwd(buf, sizeof buf)) {
		snprintf(root, n, "%s", buf);
		return;
	}
	fail_msg("cannot find scripts/mp_resnet.py: set MP_ROOT to the repository root");
}

#endif
