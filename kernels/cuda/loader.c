/* The CUDA backend's public entry points in the programs' build: they open
 * the CUDA module (libmp-cuda.so, see module.h) on first use and forward to
 * it. The module's own references to the CPU backend's shape checks
 * resolve to the program's copies (the programs export their symbols).
 *
 * The module is looked for at $MP_CUDA_MODULE, then next to the program
 * (its directory/../lib/miniplaces/, where make install puts it), then
 * where this build made it, then under the install prefix. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "device.h"

#ifndef MP_CUDA_MODULE
#error "MP_CUDA_MODULE (the build's path of libmp-cuda.so) must be defined"
#endif
#ifndef MP_CUDA_MODULE_INSTALLED
#define MP_CUDA_MODULE_INSTALLED MP_CUDA_MODULE
#endif

#define MODULE_NAME "libmp-cuda.so"

typedef struct {
	mp_backend *(*backend_new)(int device, char *why, size_t n);
	int (*probe)(char *buf, size_t n);
	int tried;
	char error[768]; /* why the module did not open */
} cuda_module;

static cuda_module module;

/* dir/../lib/miniplaces/libmp-cuda.so for the running program, or "" */
static void beside_program(char *out, size_t n)
{
	char exe[PATH_MAX];
	out[0] = '\0';
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len <= 0)
		return;
	exe[len] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return;
	*slash = '\0';
	snprintf(out, n, "%s/../lib/miniplaces/" MODULE_NAME, exe);
}

static int load(void)
{
	if (module.tried)
		return module.backend_new != NULL;
	module.tried = 1;
	char beside[PATH_MAX + 64];
	beside_program(beside, sizeof beside);
	const char *paths[] = {getenv("MP_CUDA_MODULE"), beside, MP_CUDA_MODULE,
			       MP_CUDA_MODULE_INSTALLED};
	const char *first_error = NULL;
	char found_error[512] = "";
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		if (!paths[i] || !paths[i][0])
			continue;
		if (access(paths[i], F_OK) != 0) {
			if (i == 0) { /* the user named it: say so */
				snprintf(module.error, sizeof module.error,
					 "MP_CUDA_MODULE=%s: no such file", paths[i]);
				return 0;
			}
			continue;
		}
		/* a name without a slash is the file found above, here: dlopen
		 * would look for it on the library path instead */
		char here[PATH_MAX + 3];
		const char *file = paths[i];
		if (!strchr(file, '/')) {
			snprintf(here, sizeof here, "./%s", file);
			file = here;
		}
		void *h = dlopen(file, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			/* it exists but does not load (cuDNN or cuBLAS missing,
			 * say): that is the reason to report */
			const char *err = dlerror();
			snprintf(found_error, sizeof found_error, "%s", err ? err : paths[i]);
			first_error = found_error;
			/* A program without the CPU backend (mp-batchwriter)
			 * lacks the functions the backend calls, but not what
			 * the device probe needs: loaded lazily, the probe
			 * still answers, and the backend stays refused. */
			if (strstr(found_error, "undefined symbol") &&
			    (h = dlopen(file, RTLD_LAZY | RTLD_LOCAL)))
				module.probe = (int (*)(char *, size_t))dlsym(h, "mp_cuda_module_probe");
			break;
		}
		module.backend_new = (mp_backend * (*)(int, char *, size_t))
			dlsym(h, "mp_cuda_module_backend_new");
		module.probe = (int (*)(char *, size_t))dlsym(h, "mp_cuda_module_probe");
		if (!module.backend_new || !module.probe) {
			snprintf(module.error, sizeof module.error,
				 "%s is not this build's CUDA module", paths[i]);
			module.backend_new = NULL;
			return 0;
		}
		return 1;
	}
	if (first_error)
		snprintf(module.error, sizeof module.error, "the CUDA module does not load: %s",
			 first_error);
	else
		snprintf(module.error, sizeof module.error,
			 "the CUDA module " MODULE_NAME " is missing (looked beside the program, "
			 "in %s and %s; set MP_CUDA_MODULE)", MP_CUDA_MODULE,
			 MP_CUDA_MODULE_INSTALLED);
	return 0;
}

mp_backend *mp_backend_cuda_new(int device, char *why, size_t n)
{
	if (!load()) {
		if (why && n)
			snprintf(why, n, "%s", module.error);
		return NULL;
	}
	return module.backend_new(device, why, n);
}

int mp_cuda_built(void)
{
	return 1;
}

int mp_cuda_probe(char *buf, size_t n)
{
	if (!load() && !module.probe) {
		snprintf(buf, n, "no CUDA device (%s)", module.error);
		return 0;
	}
	return module.probe(buf, n);
}
