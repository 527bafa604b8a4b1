#include "mp_backends.h"

#include <omp.h>
#include <string.h>

#include "device.h"

const char *const mp_backend_names[] = {"cpu", "cpu-ref", "cuda", "auto", NULL};

static mp_backend *open_cpu(int reference, int threads, char *desc, size_t n, mp_error *e)
{
	mp_backend *be = reference ? mp_backend_cpu_new(threads) : mp_backend_cpu_fast_new(threads);
	if (!be) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	snprintf(desc, n, "%s, %d thread%s", reference ? "cpu-ref" : "cpu",
		 threads ? threads : omp_get_max_threads(),
		 (threads ? threads : omp_get_max_threads()) == 1 ? "" : "s");
	return be;
}

mp_backend *mp_backend_open(const char *name, int threads, char *desc, size_t n,
			    mp_error *e)
{
	if (!strcmp(name, "cpu") || !strcmp(name, "cpu-ref"))
		return open_cpu(!strcmp(name, "cpu-ref"), threads, desc, n, e);
	char why[256];
	int devices = mp_cuda_probe(why, sizeof why);
	/* The device probe exists; the CUDA operations do not yet, so auto
	 * always falls back to the CPU and says why. */
	if (!strcmp(name, "auto")) {
		mp_backend *be = open_cpu(0, threads, desc, n, e);
		size_t used = strlen(desc);
		if (be && used < n)
			snprintf(desc + used, n - used, " (%s)",
				 !mp_cuda_built() ? "this build has no CUDA backend"
				 : devices < 1	  ? why
						  : "CUDA operations are not in this version");
		return be;
	}
	if (!strcmp(name, "cuda")) {
		if (!mp_cuda_built())
			mp_seterr(e, "--backend cuda: this build has no CUDA backend (make CUDA=1)");
		else if (devices < 1)
			mp_seterr(e, "--backend cuda: %s", why);
		else
			mp_seterr(e, "--backend cuda: the CUDA operations are not in this version; "
				     "use --backend cpu");
		return NULL;
	}
	mp_seterr(e, "--backend: \"%s\" is not one of cpu|cpu-ref|cuda|auto", name);
	return NULL;
}
