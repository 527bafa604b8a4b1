/* Division by a divisor fixed at launch, as a multiply and a shift.
 *
 * An element-wise kernel that needs an element's channel, (i / plane) %
 * C, divides by values known only at run time: some twenty instructions
 * each on a GPU, more than a memory-bound pass can hide. With s the
 * smallest shift such that 2^s >= d, and m = floor(2^32 (2^s - d) / d) + 1
 * (which fits in 32 bits), n / d = (hi32(n m) + n) >> s for every n and d
 * below 2^31 (Granlund and Montgomery's round-up method): two
 * instructions and a shift. tests/emu/test_emu.cpp checks it against the
 * host's division. */
#ifndef MP_CUDA_DIVIDER_H
#define MP_CUDA_DIVIDER_H

#include <stdint.h>

typedef struct {
	unsigned d; /* the divisor, for what divides by it plainly */
	unsigned m, s;
} mp_cuda_divider;

/* The divider for d, 1 <= d < 2^31 (the callers' shapes are). */
static inline mp_cuda_divider mp_cuda_divider_for(unsigned d)
{
	mp_cuda_divider v;
	unsigned s = 0;
	while (s < 31 && (1u << s) < d)
		s++;
	v.d = d;
	v.s = s;
	v.m = (unsigned)((((uint64_t)1 << 32) * (((uint64_t)1 << s) - d)) / d + 1);
	return v;
}

/* n / v.d, for n < 2^31: hi32(n m) <= n, so the sum stays in 32 bits. */
__host__ __device__ static inline unsigned mp_cuda_quot(mp_cuda_divider v, unsigned n)
{
#ifdef __CUDA_ARCH__
	const unsigned t = __umulhi(n, v.m);
#else
	const unsigned t = (unsigned)(((uint64_t)n * v.m) >> 32);
#endif
	return (t + n) >> v.s;
}

/* n / v.d for any n: by the multiply below 2^31 (every tensor of a
 * usual size), by division above. */
__host__ __device__ static inline size_t mp_cuda_div(mp_cuda_divider v, size_t n)
{
	return n <= 0x7fffffffu ? mp_cuda_quot(v, (unsigned)n) : n / v.d;
}

#ifdef __cplusplus
/* The channel of element i of an NCHW tensor of C channels of plane
 * values: (i / plane) % C. Where i may pass 2^31 (size_t), by division.
 * (Overloads: C++ linkage, wherever the header is included from.) */
extern "C++" {
__host__ __device__ static inline int mp_cuda_channel(unsigned i, mp_cuda_divider plane,
						      mp_cuda_divider C)
{
	const unsigned q = mp_cuda_quot(plane, i);
	return (int)(q - mp_cuda_quot(C, q) * C.d);
}

__host__ __device__ static inline int mp_cuda_channel(size_t i, mp_cuda_divider plane,
						      mp_cuda_divider C)
{
	return (int)(i / plane.d % C.d);
}
}
#endif

#endif
