// Device discovery for the CUDA backend.
#include <cuda_runtime.h>
#include <stdio.h>

#include "module.h" // before device.h: the entry points' names

extern "C" {
#include "device.h"
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
		snprintf(buf, n, "no CUDA device (%s)",
			 err != cudaSuccess ? cudaGetErrorString(err) : "none found");
		return 0;
	}
	cudaDeviceProp prop;
	if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
		snprintf(buf, n, "%d CUDA device(s)", count);
		return count;
	}
	snprintf(buf, n, "%d CUDA device(s); device 0: %s, sm_%d%d, %.0f GiB", count,
		 prop.name, prop.major, prop.minor,
		 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
	return count;
}
