#include "mp_backends.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "mp_util.h"

const char *const mp_backend_names[] = {"cpu", "cpu-ref", "cuda", "auto", NULL};
const char *const mp_precision_names[] = {"auto", "fp32", "bf16", NULL};

static mp_backend *open_cpu(int reference, int threads, char *desc, size_t n, mp_error *e)
{
	/* read by the fast backend when it is made */
	const char *wino = mp_getenv("MP_CPU_WINOGRAD");
	if (!reference && wino && strcmp(wino, "0") && strcmp(wino, "1")) {
		mp_seterr(e, "MP_CPU_WINOGRAD=%s: expected 0 or 1", wino);
		return NULL;
	}
	mp_backend *be = reference ? mp_backend_cpu_new(threads) : mp_backend_cpu_fast_new(threads);
	if (!be) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	snprintf(desc, n, "%s, %d thread%s%s", reference ? "cpu-ref" : "cpu",
		 threads ? threads : omp_get_max_threads(),
		 (threads ? threads : omp_get_max_threads()) == 1 ? "" : "s",
		 !reference && wino && !strcmp(wino, "0") ? ", no Winograd" : "");
	return be;
}

/* The CUDA backend on device device, described in desc ("cuda, NVIDIA
 * H200, sm_90, 139 GiB"; "cuda, device 1: ..." for another than the
 * first); NULL with the reason in why. Only CUDA builds have it. */
static mp_backend *open_cuda(int device, char *desc, size_t n, char *why, size_t wn)
{
#ifdef MP_HAVE_CUDA
	mp_backend *be = mp_backend_cuda_new(device, why, wn);
	if (be && device)
		snprintf(desc, n, "cuda, device %d: %s", device, why);
	else if (be)
		snprintf(desc, n, "cuda, %s", why);
	return be;
#else
	(void)device;
	(void)desc;
	(void)n;
	snprintf(why, wn, "this build has no CUDA backend");
	return NULL;
#endif
}

/* Sets be's precision by name and adds it to desc; frees be on failure.
 * name is the --backend asked for, which a refusal names. */
static mp_backend *set_precision(mp_backend *be, const char *name, const char *precision,
				 char *desc, size_t n, mp_error *e)
{
	if (!be)
		return NULL;
	if (!precision)
		precision = "auto";
	int bf16 = 0;
	if (!strcmp(precision, "bf16")) {
		if (!be->ops->set_precision) {
			/* auto's choice says why it is not cuda */
			const char *why = strstr(desc, " (");
			if (!strcmp(name, "auto"))
				mp_seterr(e, "--precision bf16: --backend auto chose %s%s, which "
					     "computes in fp32 only", be->ops->name, why ? why : "");
			else
				mp_seterr(e, "--precision bf16: the %s backend computes in fp32 "
					     "only (bf16 needs --backend cuda)", name);
			mp_backend_free(be);
			return NULL;
		}
		if (be->ops->set_precision(be, MP_PRECISION_BF16) < 0) {
			mp_seterr(e, "--precision bf16: %s", mp_backend_error(be));
			mp_backend_free(be);
			return NULL;
		}
		bf16 = 1;
	} else if (!strcmp(precision, "auto")) {
		/* bf16 where the backend and device have it; fp32 is the
		 * backend's starting precision otherwise */
		bf16 = be->ops->set_precision && be->ops->set_precision(be, MP_PRECISION_BF16) == 0;
	} else if (!strcmp(precision, "fp32")) {
		if (be->ops->set_precision && be->ops->set_precision(be, MP_PRECISION_FP32) < 0) {
			mp_seterr(e, "--precision fp32: %s", mp_backend_error(be));
			mp_backend_free(be);
			return NULL;
		}
	} else {
		mp_seterr(e, "--precision: \"%s\" is not one of auto|fp32|bf16", precision);
		mp_backend_free(be);
		return NULL;
	}
	/* after the description, before a parenthesized note of auto's */
	char note[256] = "";
	char *paren = strstr(desc, " (");
	if (paren) {
		snprintf(note, sizeof note, "%s", paren);
		*paren = '\0';
	}
	/* whether alloc_act stores activations in bf16 (MP_CUDA_ACTIVATIONS) */
	int bf16_act = 0;
	if (bf16 && be->ops->alloc_act) {
		mp_tensor probe = {0};
		if (be->ops->alloc_act(be, &probe, 1, 8, 1, 1) == 0) {
			bf16_act = probe.storage != 0;
			be->ops->release(be, &probe);
		}
	}
	size_t used = strlen(desc);
	if (used < n)
		snprintf(desc + used, n - used, ", %s%s%s", bf16 ? "bf16" : "fp32",
			 bf16_act ? ", activations in bf16" : "", note);
	return be;
}

/* Whether why, the CUDA backend's reason for not opening, is a variable of
 * the environment set to a value the backend does not take
 * ("MP_CUDA_GRAPH=yes: expected 0 or 1"): a setting to correct, which auto
 * must not take for a device it cannot use and go on on the CPU. */
static int bad_setting(const char *why)
{
	const char *eq = strchr(why, '=');
	char name[64];
	if (strncmp(why, "MP_", 3) || !eq || (size_t)(eq - why) >= sizeof name)
		return 0;
	memcpy(name, why, (size_t)(eq - why));
	name[eq - why] = '\0';
	const char *v = getenv(name);
	if (!v)
		return 0;
	/* a long value cut short with the rest of the reason */
	const size_t len = strlen(v), shown = strlen(eq + 1);
	if (len >= shown)
		return shown > 0 && !strncmp(eq + 1, v, shown);
	return !strncmp(eq + 1, v, len) && eq[1 + len] == ':';
}

int mp_backend_device_fits(const char *name, int device, mp_error *e)
{
	if (device >= 0 && (!strcmp(name, "cpu") || !strcmp(name, "cpu-ref")))
		return mp_seterr(e, "--device %d: the %s backend has no devices (--device is for "
				    "--backend cuda or auto)", device, name);
	return 0;
}

static mp_backend *open_backend(const char *name, int threads, int device, char *desc,
				size_t n, mp_error *e)
{
	if (mp_backend_device_fits(name, device, e) < 0)
		return NULL;
	if (!strcmp(name, "cpu") || !strcmp(name, "cpu-ref"))
		return open_cpu(!strcmp(name, "cpu-ref"), threads, desc, n, e);
	char why[1024];
	int devices = mp_cuda_probe(why, sizeof why);
	/* auto: CUDA when built and a device is present, else the CPU with
	 * the reason in desc */
	if (!strcmp(name, "auto")) {
		if (mp_cuda_built() && devices > 0) {
			mp_backend *be = open_cuda(device < 0 ? 0 : device, desc, n, why, sizeof why);
			if (be)
				return be;
			/* a device asked for by number is not to be traded for
			 * the CPU, nor is a setting to be corrected */
			if (device >= 0 || bad_setting(why)) {
				mp_seterr(e, "--backend auto: %s", why);
				return NULL;
			}
			/* a device that fails where one that works was expected:
			 * said on stderr too, as a run on the CPU takes far longer */
			mp_warnx("--backend auto: a CUDA device is there, but the CUDA backend failed "
				 "(%s): on the CPU", why);
		} else if (device >= 0) {
			/* nor is a device asked for where there is none */
			mp_seterr(e, "--backend auto: --device %d: %s", device,
				  !mp_cuda_built() ? "this build has no CUDA backend" : why);
			return NULL;
		}
		mp_backend *be = open_cpu(0, threads, desc, n, e);
		size_t used = strlen(desc);
		if (be && used < n)
			snprintf(desc + used, n - used, " (%s)",
				 !mp_cuda_built() ? "this build has no CUDA backend" : why);
		return be;
	}
	if (!strcmp(name, "cuda")) {
		if (!mp_cuda_built()) {
			mp_seterr(e, "--backend cuda: this build has no CUDA backend (make CUDA=1)");
			return NULL;
		}
		if (devices < 1) {
			mp_seterr(e, "--backend cuda: %s", why);
			return NULL;
		}
		mp_backend *be = open_cuda(device < 0 ? 0 : device, desc, n, why, sizeof why);
		if (!be)
			mp_seterr(e, "--backend cuda: %s", why);
		return be;
	}
	mp_seterr(e, "--backend: \"%s\" is not one of cpu|cpu-ref|cuda|auto", name);
	return NULL;
}

mp_backend *mp_backend_open(const char *name, int threads, int device, const char *precision,
			    char *desc, size_t n, mp_error *e)
{
	if (n)
		desc[0] = '\0';
	return set_precision(open_backend(name, threads, device, desc, n, e), name, precision, desc,
			     n, e);
}

void mp_backend_arithmetic(const char *desc, char *buf, size_t n)
{
	/* desc is "NAME, <details>, [no Winograd, ]PRECISION[, activations in
	 * bf16][ (auto's note)]", as open_cpu, open_cuda and set_precision
	 * make it */
	static const char *const keep[] = {"no Winograd", "fp32", "bf16", "activations in bf16"};
	if (!n)
		return;
	buf[0] = '\0';
	size_t end = strcspn(desc, "(");
	while (end > 0 && desc[end - 1] == ' ')
		end--;
	size_t used = 0;
	for (size_t at = 0, first = 1; at < end; first = 0) {
		size_t len = 0;
		while (at + len < end && strncmp(desc + at + len, ", ", 2))
			len++;
		int wanted = first;
		for (size_t k = 0; !wanted && k < sizeof keep / sizeof keep[0]; k++)
			wanted = strlen(keep[k]) == len && !strncmp(desc + at, keep[k], len);
		if (wanted && used < n)
			used += (size_t)snprintf(buf + used, n - used, "%s%.*s", first ? "" : ", ",
						 (int)len, desc + at);
		at += len + (at + len < end ? 2 : 0);
	}
}
