/* A CUDA module (kernels/cuda/module.h) whose device is emulated on the
 * host: tests/emu/emu_backend.cpp's backend (the CUDA backend's kernels and
 * operations on the host, the CPU reference's convolutions in cuDNN's
 * place), with tests/graph_recorder.h's graphs, page-locked memory and
 * copies ahead, and a probe that finds one device. The programs load it
 * as their libmp-cuda.so when MP_CUDA_MODULE names it, so that mp-train and
 * mp-eval run with --backend cuda on a machine without a GPU
 * (tests/cli/emucuda.bats): the parts of the programs that only a GPU
 * reaches (its defaults and messages, the training step recorded and
 * launched as a graph, the input slots and the next batch's copy ahead,
 * mp-eval's reading ahead, checkpoints of a cuda run) run before a GPU
 * sees them. Slow: a kernel's threads run one after the other.
 *
 * MP_CUDA_ACTIVATIONS=bf16 and MP_CUDA_GRAPH=0 as for the real backend
 * (the copies ahead stay). One backend at a time (the recorder's state). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../graph_recorder.h"
#include "backend.h"
#include "emu_backend.h"

#define DEVICE "emulated on the host by tests/emu, sm_90, 0 GiB"

int mp_cuda_module_built(void)
{
	return 1;
}

int mp_cuda_module_probe(char *buf, size_t n)
{
	snprintf(buf, n, "1 CUDA device(s); device 0: " DEVICE);
	return 1;
}

/* "0" or "1" (a, b) of a variable, as the real backend reads them */
static int env_choice(const char *name, const char *a, const char *b, int *out, char *why,
		      size_t n)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	if (!strcmp(v, a) || !strcmp(v, b)) {
		*out = !strcmp(v, b);
		return 0;
	}
	snprintf(why, n, "%s=%s: expected %s or %s", name, v, a, b);
	return -1;
}

mp_backend *mp_cuda_module_backend_new(int device, char *why, size_t n)
{
	int act_bf16 = 0, graphs = 1;
	if (device != 0) {
		snprintf(why, n, "no CUDA device %d (1 found)", device);
		return NULL;
	}
	if (env_choice("MP_CUDA_GRAPH", "0", "1", &graphs, why, n) < 0 ||
	    env_choice("MP_CUDA_ACTIVATIONS", "float", "bf16", &act_bf16, why, n) < 0)
		return NULL;
	mp_backend *be = mp_emu_cuda_new(act_bf16);
	if (!be) {
		snprintf(why, n, "out of memory");
		return NULL;
	}
	recorder_install(be);
	if (!graphs) {
		rec.ops.graph_begin = NULL;
		rec.ops.graph_end = NULL;
		rec.ops.graph_launch = NULL;
		rec.ops.graph_wait = NULL;
		rec.ops.graph_free = NULL;
	}
	snprintf(why, n, DEVICE);
	return be;
}
