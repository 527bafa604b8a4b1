/* The runtime's copies and error state, and the backend's device buffers,
 * on the host: memcpy, no error ever pending, and memory filled with NaN
 * (mp_emu_device_alloc) that grows as cuda.h's helpers say (refused while
 * recording, a new generation at every reallocation). Definitions, not
 * declarations:
 * include it once per program, in the file that stands in for the
 * backend's host side. */
#ifndef MP_EMU_HOST_H
#define MP_EMU_HOST_H

#include <stdlib.h>
#include <string.h>

extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count,
				       enum cudaMemcpyKind kind, cudaStream_t stream)
{
	(void)stream;
	memcpy(dst, src, count);
	if (kind == cudaMemcpyDeviceToHost)
		mp_emu_digest_add(dst, count);
	return cudaSuccess;
}

extern "C" cudaError_t cudaGetLastError(void)
{
	return cudaSuccess;
}


int mp_cuda_grow(mp_backend *be, const char *op, struct mp_cuda_buffer *b, size_t bytes)
{
	if (bytes <= b->size)
		return 0;
	if (mp_cuda_not_recording(be, op, "device memory to grow"))
		return -1;
	free(b->p);
	mp_cuda(be)->mem_gen++;
	b->p = mp_emu_device_alloc(bytes);
	b->size = b->p ? bytes : 0;
	return b->p ? 0 : mp_cpu_fail(be, "%s: out of memory", op);
}

int mp_cuda_wait(mp_backend *be, const char *op)
{
	(void)be;
	(void)op;
	return 0;
}

void mp_cuda_buffer_free(struct mp_cuda_buffer *b)
{
	free(b->p);
	b->p = NULL;
	b->size = 0;
}

double *mp_cuda_scratch(mp_backend *be, const char *op, size_t n)
{
	mp_cuda_state *s = mp_cuda(be);
	return mp_cuda_grow(be, op, &s->scratch, n * sizeof(double)) ? NULL : (double *)s->scratch.p;
}

#endif
