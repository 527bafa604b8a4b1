/* Device discovery in a build without the CUDA backend. */
#include <stdio.h>

#include "device.h"

int mp_cuda_built(void)
{
	return 0;
}

int mp_cuda_probe(char *buf, size_t n)
{
	snprintf(buf, n, "CUDA backend not built (make CUDA=1 to require it)");
	return 0;
}
