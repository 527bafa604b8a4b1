// Device discovery for the CUDA backend.
#include <cuda_runtime.h>
#include <stdio.h>

#include "module.h" // before device.h: the entry points' names

extern "C" {
#include "device.h"
}
#include "cuda.h"

// Why cudaGetDeviceCount found no usable device (it failed with e, or
// counted none). Without a driver the runtime says that the driver is
// "insufficient", as it does for one too old for it: the driver's own
// version tells the two apart (0: none loads).
void mp_cuda_no_device(cudaError_t e, char *buf, size_t n)
{
	int driver = 0, runtime = 0;
	if (e == cudaSuccess) {
		snprintf(buf, n, "no CUDA device (none found)");
		return;
	}
	if (e == cudaErrorInsufficientDriver && cudaDriverGetVersion(&driver) == cudaSuccess &&
	    cudaRuntimeGetVersion(&runtime) == cudaSuccess) {
		if (driver == 0)
			snprintf(buf, n, "no CUDA device (no NVIDIA driver found)");
		else
			snprintf(buf, n, "no CUDA device (the NVIDIA driver supports CUDA %d.%d, "
				 "older than this build's CUDA %d.%d runtime: update the driver)",
				 driver / 1000, driver % 1000 / 10, runtime / 1000,
				 runtime % 1000 / 10);
	} else {
		snprintf(buf, n, "no CUDA device (cudaGetDeviceCount: %s: %s)",
			 cudaGetErrorName(e), cudaGetErrorString(e));
	}
	(void)cudaGetLastError(); // not an error of the work that may follow
}

extern "C" int mp_cuda_built(void)
{
	return 1;
}

extern "C" int mp_cuda_probe(char *buf, size_t n)
{
	int count = 0;
	cudaError_t err = cudaGetDeviceCount(&count);
	// Without a GPU or driver this fails (cudaErrorInsufficientDriver or
	// cudaErrorNoDevice): that simply means no CUDA device.
	if (err != cudaSuccess || count == 0) {
		mp_cuda_no_device(err, buf, n);
		return 0;
	}
	// "2 CUDA device(s); device 0: NAME, sm_90, 140 GiB", then a line
	// "cuda: device 1: ..." for each other device (--device chooses)
	size_t used = (size_t)snprintf(buf, n, "%d CUDA device(s)", count);
	for (int d = 0; d < count && used < n; d++) {
		cudaDeviceProp prop;
		if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
			(void)cudaGetLastError();
			break;
		}
		used += (size_t)snprintf(buf + used, n - used, "%sdevice %d: %s, sm_%d%d, %.0f GiB",
					 d ? "\ncuda: " : "; ", d, prop.name, prop.major,
					 prop.minor,
					 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
	}
	return count;
}
