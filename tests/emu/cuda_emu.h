/* Runs CUDA kernels on the host, for tests of their logic on a machine
 * without a GPU: include this first, then the kernels' .cu files, in one
 * C++ translation unit built with g++ and -DMP_CUDA_EMULATE (cuda.h's
 * MP_LAUNCH then calls mp_emu_launch instead of <<<...>>>).
 *
 * A launch runs before it returns, block after block. Within a block the
 * threads run one after the other, or, for a kernel launched with
 * MP_LAUNCH_SYNC, each as a fiber on this thread (its own stack; a
 * switch of stacks in a few instructions on x86-64, ucontext elsewhere),
 * round-robin,
 * so that __syncthreads() lets every thread of the block reach it before
 * any goes on; __shared__ (made static) is shared by the block's threads.
 * A __syncthreads() in a kernel launched without it aborts.
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
#include <stdint.h>
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
/* kernels/cuda/cuda.h's MP_CUDA_GRID_MOST and MP_CUDA_GRID_YZ: CUDA's
 * values until a test lowers them; a launch beyond them aborts, as one
 * beyond CUDA's limits fails on a device */
unsigned mp_emu_grid_most = 65535u * 8u, mp_emu_grid_yz_most = 65535u;
}

/* the device's round-to-nearest arithmetic, which the host's is */
static inline float __fadd_rn(float a, float b)
{
	return a + b;
}
static inline float __fsub_rn(float a, float b)
{
	return a - b;
}
static inline float __fmul_rn(float a, float b)
{
	return a * b;
}

namespace mp_emu {

enum { STACK = 64 * 1024 };

static int capacity, current, in_fiber, *done;
static uint3 *tids;
static char *stacks;
static std::function<void()> body;

/* The fiber of thread current runs body, marks itself done and goes back. */
static void run_body_then_return();

#if defined(__x86_64__)
/* A switch of stacks without a system call (glibc's swapcontext saves the
 * signal mask each time, which made a barrier kernel 100 times slower):
 * push the callee-saved registers, save the stack pointer in *from, load
 * to's, pop its registers and return on its stack. */
extern "C" void mp_emu_switch(void **from, void *to);
__asm__(".text\n"
	".globl mp_emu_switch\n"
	".type mp_emu_switch,@function\n"
	"mp_emu_switch:\n"
	"\tpushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n"
	"\tmovq %rsp, (%rdi)\n"
	"\tmovq %rsi, %rsp\n"
	"\tpopq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n"
	"\tret\n"
	".size mp_emu_switch, .-mp_emu_switch\n");

static void *scheduler_sp, **fiber_sp;

static void fiber_entry()
{
	run_body_then_return();
}

/* Thread t's fiber, ready to start at fiber_entry on its own stack: six
 * zero registers and the return address, the stack aligned as a call's. */
static void fiber_reset(int t)
{
	uintptr_t top = (uintptr_t)(stacks + (size_t)(t + 1) * STACK);
	top = (top & ~(uintptr_t)15) - 8;
	void **sp = (void **)top - 7;
	for (int k = 0; k < 6; k++)
		sp[k] = NULL;
	sp[6] = (void *)fiber_entry;
	fiber_sp[t] = sp;
}

static void fiber_run(int t)
{
	mp_emu_switch(&scheduler_sp, fiber_sp[t]);
}

static void fiber_yield()
{
	mp_emu_switch(&fiber_sp[current], scheduler_sp);
}

static int fibers_alloc(int n)
{
	return (fiber_sp = (void **)calloc((size_t)n, sizeof *fiber_sp)) != NULL;
}
#else
static ucontext_t scheduler, *contexts;

static void fiber_entry()
{
	run_body_then_return();
}

static void fiber_reset(int t)
{
	getcontext(&contexts[t]);
	contexts[t].uc_stack.ss_sp = stacks + (size_t)t * STACK;
	contexts[t].uc_stack.ss_size = STACK;
	contexts[t].uc_link = &scheduler;
	makecontext(&contexts[t], fiber_entry, 0);
}

static void fiber_run(int t)
{
	swapcontext(&scheduler, &contexts[t]);
}

static void fiber_yield()
{
	swapcontext(&contexts[current], &scheduler);
}

static int fibers_alloc(int n)
{
	return (contexts = (ucontext_t *)calloc((size_t)n, sizeof *contexts)) != NULL;
}
#endif

static void run_body_then_return()
{
	body();
	done[current] = 1;
	fiber_yield(); /* never resumed */
	abort();
}

static uint3 thread_index(int t, dim3 block)
{
	return make_uint3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
}

/* Runs f as every thread of every block of the grid; sync: as fibers. */
static void launch(dim3 grid, dim3 block, int sync, std::function<void()> f)
{
	const int n = (int)(block.x * block.y * block.z);
	if (n < 1 || n > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
	    grid.x > 0x7fffffffu || grid.y > mp_emu_grid_yz_most || grid.z > mp_emu_grid_yz_most) {
		fprintf(stderr, "cuda_emu: a launch of %ux%ux%u blocks of %ux%ux%u threads\n",
			grid.x, grid.y, grid.z, block.x, block.y, block.z);
		abort();
	}
	gridDim = grid;
	blockDim = block;
	if (sync && n > capacity) {
		free(stacks);
		free(done);
		free(tids);
		stacks = (char *)malloc((size_t)n * STACK);
		done = (int *)calloc((size_t)n, sizeof *done);
		tids = (uint3 *)calloc((size_t)n, sizeof *tids);
		if (!stacks || !done || !tids || !fibers_alloc(n)) {
			fprintf(stderr, "cuda_emu: out of memory\n");
			abort();
		}
		capacity = n;
	}
	body = f;
	for (unsigned bz = 0; bz < grid.z; bz++)
		for (unsigned by = 0; by < grid.y; by++)
			for (unsigned bx = 0; bx < grid.x; bx++) {
				blockIdx = make_uint3(bx, by, bz);
				if (!sync) {
					for (int t = 0; t < n; t++) {
						threadIdx = thread_index(t, block);
						f();
					}
					continue;
				}
				for (int t = 0; t < n; t++) {
					tids[t] = thread_index(t, block);
					done[t] = 0;
					fiber_reset(t);
				}
				/* rounds: each thread runs to its next barrier or its end */
				for (int left = n; left > 0;) {
					left = 0;
					for (int t = 0; t < n; t++) {
						if (done[t])
							continue;
						current = t;
						threadIdx = tids[t];
						in_fiber = 1;
						fiber_run(t);
						in_fiber = 0;
						left += !done[t];
					}
				}
			}
}

static void syncthreads()
{
	if (!in_fiber) {
		fprintf(stderr, "cuda_emu: __syncthreads in a kernel launched with MP_LAUNCH: "
				"launch it with MP_LAUNCH_SYNC\n");
		abort();
	}
	fiber_yield();
}

} // namespace mp_emu

#define __syncthreads() mp_emu::syncthreads()

template <typename F> static void mp_emu_launch(dim3 grid, dim3 block, int sync, F f)
{
	mp_emu::launch(grid, block, sync, std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(dim3 grid, unsigned block, int sync, F f)
{
	mp_emu::launch(grid, dim3(block), sync, std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(unsigned grid, unsigned block, int sync, F f)
{
	mp_emu::launch(dim3(grid), dim3(block), sync, std::function<void()>(f));
}
template <typename F> static void mp_emu_launch(unsigned grid, dim3 block, int sync, F f)
{
	mp_emu::launch(dim3(grid), block, sync, std::function<void()>(f));
}

#endif
