/* Runs CUDA kernels on the host, for tests of their logic on a machine
 * without a GPU: include this first, then the kernels' .cu files, in one
 * C++ translation unit built with g++ and -DMP_CUDA_EMULATE (cuda.h's
 * MP_LAUNCH then calls mp_emu_launch instead of <<<...>>>).
 *
 * A launch runs before it returns: block after block, and within a block
 * each thread as a fiber (ucontext) on this thread, round-robin, so that
 * __syncthreads() lets every thread of the block reach it before any goes
 * on, and __shared__ (made static) is shared by the block's threads.
 * threadIdx, blockIdx, blockDim and gridDim are set for the fiber that
 * runs. bfloat16 conversions are CUDA's own host versions (cuda_bf16.h),
 * which round as the device does. What it cannot show: races between
 * threads, memory coalescing, speed, and anything of cuDNN or cuBLAS.
 *
 * Include once per program. */
#ifndef MP_CUDA_EMU_H
#define MP_CUDA_EMU_H

#include <functional>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

/* before the CUDA headers, which define these only when undefined */
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __STORAGE__ extern /* threadIdx and the rest, writable */
#define __device_builtin__

#include <cuda_runtime.h>

extern "C" {
uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
int warpSize = 32;
}

static inline float __fadd_rn(float a, float b)
{
	return a + b;
}

namespace mp_emu {

enum { STACK = 64 * 1024 };

struct fiber {
	ucontext_t ctx;
	uint3 tid;
	int done;
};

static ucontext_t scheduler;
static fiber *fibers;
static char *stacks;
static int capacity, current;
static std::function<void()> body;

static void entry()
{
	body();
	fibers[current].done = 1;
	/* uc_link returns to the scheduler */
}

/* Runs f as every thread of every block of the grid. */
static void launch(dim3 grid, dim3 block, std::function<void()> f)
{
	const int n = (int)(block.x * block.y * block.z);
	if (n < 1 || n > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1) {
		fprintf(stderr, "cuda_emu: a launch of %ux%ux%u blocks of %ux%ux%u threads\n",
			grid.x, grid.y, grid.z, block.x, block.y, block.z);
		abort();
	}
	if (n > capacity) {
		free(fibers);
		free(stacks);
		fibers = (fiber *)calloc((size_t)n, sizeof *fibers);
		stacks = (char *)malloc((size_t)n * STACK);
		if (!fibers || !stacks) {
			fprintf(stderr, "cuda_emu: out of memory\n");
			abort();
		}
		capacity = n;
	}
	body = f;
	gridDim = grid;
	blockDim = block;
	for (unsigned bz = 0; bz < grid.z; bz++)
		for (unsigned by = 0; by < grid.y; by++)
			for (unsigned bx = 0; bx < grid.x; bx++) {
				blockIdx = make_uint3(bx, by, bz);
				for (int t = 0; t < n; t++) {
					fiber *fb = &fibers[t];
					fb->tid = make_uint3(t % block.x, t / block.x % block.y,
							     t / (block.x * block.y));
					fb->done = 0;
					getcontext(&fb->ctx);
					fb->ctx.uc_stack.ss_sp = stacks + (size_t)t * STACK;
					fb->ctx.uc_stack.ss_size = STACK;
					fb->ctx.uc_link = &scheduler;
					makecontext(&fb->ctx, entry, 0);
				}
				/* rounds: each thread runs to its next barrier or its end */
				for (int left = n; left > 0;) {
					left = 0;
					for (int t = 0; t < n; t++) {
						if (fibers[t].done)
							continue;
						current = t;
						threadIdx = fibers[t].tid;
						swapcontext(&scheduler, &fibers[t].ctx);
						left += !fibers[t].done;
					}
				}
			}
}

static void syncthreads()
{
	swapcontext(&fibers[current].ctx, &scheduler);
}

} // namespace mp_emu

#define __syncthreads() mp_emu::syncthreads()

template <typename F> static void mp_emu_launch(dim3 grid, dim3 block, F f)
{
	mp_emu::launch(grid, block, std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(dim3 grid, unsigned block, F f)
{
	mp_emu::launch(grid, dim3(block), std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(unsigned grid, unsigned block, F f)
{
	mp_emu::launch(dim3(grid), dim3(block), std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(unsigned grid, dim3 block, F f)
{
	mp_emu::launch(dim3(grid), block, std::function<void()>(f));
}

#endif
