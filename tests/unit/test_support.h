/* Shared by the unit tests of the network: where the repository is (for
 * the PyTorch side), and host copies of network tensors. Include after
 * cmocka.h and mp_resnet.h. */
#ifndef MP_TEST_SUPPORT_H
#define MP_TEST_SUPPORT_H

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

static float *download(mp_resnet *net, const mp_tensor *t)
{
	mp_error e;
	float *h = malloc(mp_tensor_count(t) * sizeof *h);
	assert_non_null(h);
	if (mp_resnet_download(net, t, h, &e) < 0)
		fail_msg("%s", e.msg);
	return h;
}

static void upload(mp_resnet *net, mp_tensor *t, const float *h)
{
	mp_error e;
	if (mp_resnet_upload(net, t, h, &e) < 0)
		fail_msg("%s", e.msg);
}

#endif
