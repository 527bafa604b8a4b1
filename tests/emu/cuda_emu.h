/* Runs CUDA kernels on the host, for tests of their logic on a machine
 * without a GPU: include this first, then the kernels' .cu files, in one
 * C++ translation unit built with g++ and -DMP_CUDA_EMULATE (cuda.h's
 * MP_LAUNCH then calls mp_emu::launcher_of instead of <<<...>>>).
 *
 * A launch runs before it returns, block after block, unless
 * mp_emu_submit queues it on its stream (emu_device.cpp). Within a block the
 * threads run one after the other, or, for a kernel launched with
 * MP_LAUNCH_SYNC, each as a fiber on this thread (its own stack; a
 * switch of stacks in a few instructions on x86-64, ucontext elsewhere),
 * round-robin,
 * so that __syncthreads() lets every thread of the block reach it before
 * any goes on; __shared__ (made static) is shared by the block's threads.
 * A __syncthreads() in a kernel launched without it aborts.
 * threadIdx, blockIdx, blockDim and gridDim are set for the fiber that
 * runs. bfloat16 conversions are CUDA's own host versions (cuda_bf16.h),
 * which round as the device does.
 *
 * Races: a device runs a block's threads, and a grid's blocks, in no
 * order it promises, so a kernel that reads what another thread of the
 * same launch writes without a barrier between them gives what its order
 * happens to give. MP_EMU_ORDER sets the order here: forward (the
 * default), reverse, or a number, the seed of a shuffle (a stride through
 * the indices). Blocks, the threads of a block launched without
 * MP_LAUNCH_SYNC, and each round of fibers between two barriers run in
 * it. The backend's one atomic (a count of a launch's finished blocks,
 * after which the last one adds their sums in a fixed order) decides only
 * which block does that, so a kernel free of such races gives the same
 * bits in every order: with MP_EMU_ORDER set, a program
 * ends by printing, as a TAP comment, a digest of the results it read
 * back (every copy to the host, and what a test hands to
 * mp_emu_digest_add), and tests/cli/emuorder.bats compares three orders'.
 * Device memory comes filled with NaN (mp_emu_device_alloc).
 * What it cannot show: a race whose every order gives the same values,
 * memory coalescing, speed, and anything of cuDNN or cuBLAS.
 *
 * Include once per program. */
#ifndef MP_CUDA_EMU_H
#define MP_CUDA_EMU_H

#include <errno.h>
#include <functional>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
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

/* reinterpretations of bits */
static inline float __int_as_float(int i)
{
	float f;
	memcpy(&f, &i, sizeof f);
	return f;
}
static inline double __longlong_as_double(long long i)
{
	double d;
	memcpy(&d, &i, sizeof d);
	return d;
}

/* One thread runs at a time, so an atomic is a plain read and write, a
 * fence orders nothing more, and L2 is the memory itself. */
static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
	const unsigned old = *p;
	*p = old + v;
	return old;
}
static inline void __threadfence(void)
{
}
static inline double __ldcg(const double *p)
{
	return *p;
}

namespace mp_emu {

enum { STACK = 64 * 1024 };

/* ---- the order of blocks and threads (MP_EMU_ORDER), and the digest ---- */

enum { FORWARD, REVERSE, SHUFFLE };
static int order = -1;
static uint64_t order_seed;
static const char *order_name;
static uint64_t digest = 0xcbf29ce484222325ull, digest_bytes; /* FNV-1a */

static void print_digest()
{
	printf("# cuda_emu: order %s, %llu bytes of results, digest %016llx\n", order_name,
	       (unsigned long long)digest_bytes, (unsigned long long)digest);
	fflush(stdout);
}

/* Reads MP_EMU_ORDER at the first launch (and again after a test sets
 * order to -1). */
static void read_order()
{
	static int digest_at_exit;
	const char *v = getenv("MP_EMU_ORDER");
	order = FORWARD;
	order_name = "forward";
	if (!v || !*v)
		return;
	char *end;
	if (!strcmp(v, "reverse"))
		order = REVERSE;
	else if (strcmp(v, "forward")) {
		errno = 0;
		order_seed = strtoull(v, &end, 10);
		if (errno || end == v || *end) {
			fprintf(stderr, "cuda_emu: MP_EMU_ORDER=%s: not forward, reverse or a "
					"number\n", v);
			exit(2);
		}
		order = SHUFFLE;
	}
	order_name = v;
	if (!digest_at_exit++)
		atexit(print_digest);
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
	while (b) {
		const uint64_t r = a % b;
		a = b;
		b = r;
	}
	return a;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* The i-th of n indices in the order; salt varies a shuffle between
 * blocks and rounds. A shuffle is i -> (a i + b) mod n with a prime to n. */
struct sequence {
	uint64_t n, a, b;
	sequence(uint64_t n_, uint64_t salt) : n(n_), a(1), b(0)
	{
		if (order < 0)
			read_order();
		if (order != SHUFFLE || n < 2)
			return;
		a = mix(order_seed ^ mix(n + salt)) % n;
		while (gcd(a, n) != 1)
			a = (a + 1) % n;
		b = mix(order_seed + salt + 1) % n;
	}
	uint64_t operator[](uint64_t i) const
	{
		if (order == FORWARD)
			return i;
		if (order == REVERSE)
			return n - 1 - i;
		if (n <= UINT32_MAX) /* a, i < 2^32: no overflow, no 128-bit division */
			return (a * i + b % n) % n;
		return (uint64_t)(((unsigned __int128)a * i + b) % n);
	}
};

} // namespace mp_emu

/* Device memory: cudaMalloc leaves it as it was, so here it comes with
 * every byte 0xff (NaN as float, bf16 and double; -1 as an integer), and
 * a kernel that reads what nothing wrote gives NaN, which the tests'
 * comparisons fail, where zeroed memory would give the zeros such a
 * kernel may have counted on. NULL when out of memory. */
extern "C" void *mp_emu_device_alloc(size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);
	if (p)
		memset(p, 0xff, bytes ? bytes : 1);
	return p;
}

/* Adds bytes a program read back from the device to the digest. */
extern "C" void mp_emu_digest_add(const void *p, size_t n)
{
	const unsigned char *c = (const unsigned char *)p;
	for (size_t i = 0; i < n; i++)
		mp_emu::digest = (mp_emu::digest ^ c[i]) * 0x100000001b3ull;
	mp_emu::digest_bytes += n;
}

/* The bytes the digest holds so far. */
extern "C" unsigned long long mp_emu_digest_bytes(void)
{
	return mp_emu::digest_bytes;
}

namespace mp_emu {

static int capacity, current, in_fiber, *done;
static uint3 *tids;
static char *stacks;
static std::function<void()> body;

/* The fiber of thread current runs body, marks itself done and goes back. */
static void run_body_then_return();

/* Under ThreadSanitizer each fiber is one of its fibers too: a switch of
 * stacks it is not told of ends the program (a CHECK fails) at the first
 * kernel launched with MP_LAUNCH_SYNC. The fibers of a thread run one at
 * a time, so each switch orders them (flags 0). */
#if defined(__SANITIZE_THREAD__)
} // namespace mp_emu
#include <sanitizer/tsan_interface.h>
namespace mp_emu {
static void **tsan_fibers, *tsan_scheduler;
static int tsan_fibers_n;
static int tsan_fibers_alloc(int n)
{
	for (int t = 0; t < tsan_fibers_n; t++)
		if (tsan_fibers[t])
			__tsan_destroy_fiber(tsan_fibers[t]);
	free(tsan_fibers);
	tsan_fibers_n = 0;
	if (!(tsan_fibers = (void **)calloc((size_t)n, sizeof *tsan_fibers)))
		return 0;
	tsan_fibers_n = n;
	return 1;
}
static void tsan_fiber_new(int t)
{
	if (tsan_fibers[t])
		__tsan_destroy_fiber(tsan_fibers[t]);
	tsan_fibers[t] = __tsan_create_fiber(0);
}
#define TSAN_FIBERS_ALLOC(n) tsan_fibers_alloc(n)
#define TSAN_FIBER_NEW(t) tsan_fiber_new(t)
#define TSAN_TO_FIBER(t)                                        \
	(tsan_scheduler = __tsan_get_current_fiber(),           \
	 __tsan_switch_to_fiber(tsan_fibers[t], 0))
#define TSAN_PASS(t) __tsan_switch_to_fiber(tsan_fibers[t], 0)
#define TSAN_TO_SCHEDULER() __tsan_switch_to_fiber(tsan_scheduler, 0)
#else
#define TSAN_FIBERS_ALLOC(n) 1
#define TSAN_FIBER_NEW(t) ((void)0)
#define TSAN_TO_FIBER(t) ((void)0)
#define TSAN_PASS(t) ((void)0)
#define TSAN_TO_SCHEDULER() ((void)0)
#endif

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
	TSAN_FIBER_NEW(t);
}

static void fiber_run(int t)
{
	TSAN_TO_FIBER(t);
	mp_emu_switch(&scheduler_sp, fiber_sp[t]);
}

static void fiber_yield()
{
	TSAN_TO_SCHEDULER();
	mp_emu_switch(&fiber_sp[current], scheduler_sp);
}

/* From thread from's fiber straight to thread to's. */
static void fiber_pass(int from, int to)
{
	TSAN_PASS(to);
	mp_emu_switch(&fiber_sp[from], fiber_sp[to]);
}

static int fibers_alloc(int n)
{
	free(fiber_sp);
	return (fiber_sp = (void **)calloc((size_t)n, sizeof *fiber_sp)) != NULL &&
	       TSAN_FIBERS_ALLOC(n);
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
	TSAN_FIBER_NEW(t);
}

static void fiber_run(int t)
{
	TSAN_TO_FIBER(t);
	swapcontext(&scheduler, &contexts[t]);
}

static void fiber_yield()
{
	TSAN_TO_SCHEDULER();
	swapcontext(&contexts[current], &scheduler);
}

static void fiber_pass(int from, int to)
{
	TSAN_PASS(to);
	swapcontext(&contexts[from], &contexts[to]);
}

static int fibers_alloc(int n)
{
	free(contexts);
	return (contexts = (ucontext_t *)calloc((size_t)n, sizeof *contexts)) != NULL &&
	       TSAN_FIBERS_ALLOC(n);
}
#endif

/* The round of fibers that runs: the order of its threads, and where in
 * it the current one is. */
static const struct sequence *round_order;
static int round_k;

/* The fiber that stops (at a barrier, or done) hands the thread on to the
 * round's next unfinished one, or, at the round's end, back to the
 * scheduler: one switch per thread and round, not two. */
static void next_in_round()
{
	const int from = current;
	const int n = (int)round_order->n;
	for (int k = round_k + 1; k < n; k++) {
		const int t = (int)(*round_order)[(uint64_t)k];
		if (done[t])
			continue;
		round_k = k;
		current = t;
		threadIdx = tids[t];
		fiber_pass(from, t);
		return;
	}
	fiber_yield();
}

static void run_body_then_return()
{
	body();
	done[current] = 1;
	next_in_round(); /* never resumed */
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
	const uint64_t blocks = (uint64_t)grid.x * grid.y * grid.z;
	const sequence block_order(blocks, 0);
	for (uint64_t i = 0; i < blocks; i++) {
		const uint64_t b = block_order[i];
		blockIdx = make_uint3((unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y),
				      (unsigned)(b / ((uint64_t)grid.x * grid.y)));
		if (!sync) {
			const sequence threads(n, b + 1);
			for (int k = 0; k < n; k++) {
				threadIdx = thread_index((int)threads[k], block);
				f();
			}
			continue;
		}
		for (int t = 0; t < n; t++) {
			tids[t] = thread_index(t, block);
			done[t] = 0;
			fiber_reset(t);
		}
		/* rounds: each thread runs to its next barrier or its end, in
		 * the round's order, each fiber handing on to the next */
		for (int left = n, round = 0; left > 0; round++) {
			const sequence threads(n, (b + 1) * 4099 + (uint64_t)round);
			int k = 0;
			while (k < n && done[threads[(uint64_t)k]])
				k++;
			if (k == n)
				break;
			round_order = &threads;
			round_k = k;
			current = (int)threads[(uint64_t)k];
			threadIdx = tids[current];
			in_fiber = 1;
			fiber_run(current);
			in_fiber = 0;
			left = 0;
			for (int t = 0; t < n; t++)
				left += !done[t];
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
	next_in_round();
}

} // namespace mp_emu

#define __syncthreads() mp_emu::syncthreads()

/* Where a launch's work goes: NULL runs it at once (the kernels' tests);
 * emu_device.cpp's streams queue it on its stream, or record it in a
 * graph being captured. */
static void (*mp_emu_submit)(cudaStream_t stream, std::function<void()> work, const char *name);

namespace mp_emu {

/* A launch of kernel: its arguments are converted to the kernel's
 * parameters at the launch, as CUDA does, so that work run later sees
 * the values of its launch. */
template <typename... P> struct launcher {
	void (*kernel)(P...);
	dim3 grid, block;
	int sync;
	cudaStream_t stream;
	const char *name; /* the kernel's, as MP_LAUNCH wrote it */
	void operator()(P... args) const
	{
		void (*k)(P...) = kernel;
		const dim3 g = grid, b = block;
		const int s = sync;
		const std::tuple<typename std::decay<P>::type...> a(args...);
		std::function<void()> work = [=]() {
			launch(g, b, s, [&]() { std::apply(k, a); });
		};
		if (mp_emu_submit)
			mp_emu_submit(stream, std::move(work), name);
		else
			work();
	}
};

template <typename... P>
static launcher<P...> launcher_of(void (*kernel)(P...), dim3 grid, dim3 block, int sync,
				  cudaStream_t stream, const char *name = "kernel")
{
	return launcher<P...>{kernel, grid, block, sync, stream, name};
}

} // namespace mp_emu

#endif
