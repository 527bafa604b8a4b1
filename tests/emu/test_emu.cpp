/* tests/emu/cuda_emu.h itself. Its orders (MP_EMU_ORDER): each runs every
 * block of a grid and every thread of a block exactly once, forward in
 * index order, reverse backwards, a shuffle in another order for each seed
 * and for each round between two barriers; a barrier still holds in every
 * order; the digest depends on the bytes given and on their order (without
 * this, a comparison of orders, tests/cli/emuorder.bats, could pass
 * because no order changed anything). Device memory comes as NaN, not
 * zeros (without this, a kernel that skips writing zeros passes).
 *
 * TAP on stdout. */
#include "cuda_emu.h"

#include "../../kernels/cuda/divider.h"

#include <cuda_bf16.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

static int tests, failures;

static void ok(int good, const char *what)
{
	tests++;
	failures += !good;
	printf("%s %d - %s\n", good ? "ok" : "not ok", tests, what);
}

static void set_order(const char *v)
{
	setenv("MP_EMU_ORDER", v, 1);
	mp_emu::order = -1;
}

/* the order of a launch's threads and blocks, as they ran */
static std::vector<int> seen;

__global__ void record_kernel()
{
	seen.push_back((int)(blockIdx.x * blockDim.x + threadIdx.x));
}

/* two rounds: each thread records itself, meets the others, records again */
__global__ void rounds_kernel(int *wrote)
{
	seen.push_back((int)threadIdx.x);
	wrote[threadIdx.x] = 1;
	__syncthreads();
	int all = 1;
	for (unsigned k = 0; k < blockDim.x; k++)
		all &= wrote[k];
	seen.push_back(all ? 1000 + (int)threadIdx.x : -1);
}

static std::vector<int> run_flat(int blocks, int threads)
{
	seen.clear();
	mp_emu::launcher_of(&record_kernel, dim3((unsigned)blocks), dim3((unsigned)threads), 0, 0)();
	return seen;
}

static int is_permutation(const std::vector<int> &v, int n)
{
	std::vector<int> count((size_t)n, 0);
	if ((int)v.size() != n)
		return 0;
	for (int x : v)
		if (x < 0 || x >= n || count[(size_t)x]++)
			return 0;
	return 1;
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	enum { BLOCKS = 7, THREADS = 12, N = BLOCKS * THREADS };

	set_order("forward");
	std::vector<int> fwd = run_flat(BLOCKS, THREADS);
	int in_order = 1;
	for (int i = 0; i < N; i++)
		in_order &= fwd[(size_t)i] == i;
	ok(in_order, "forward: blocks and threads in index order");

	set_order("reverse");
	std::vector<int> rev = run_flat(BLOCKS, THREADS);
	int backwards = 1;
	for (int i = 0; i < N; i++)
		backwards &= rev[(size_t)i] == N - 1 - i;
	ok(backwards, "reverse: blocks and threads backwards");

	set_order("7");
	std::vector<int> s7 = run_flat(BLOCKS, THREADS);
	set_order("8");
	std::vector<int> s8 = run_flat(BLOCKS, THREADS);
	ok(is_permutation(s7, N) && is_permutation(s8, N),
	   "a shuffle runs every block and thread once");
	ok(s7 != fwd && s7 != rev && s8 != s7, "a shuffle's order is neither forward nor "
					       "reverse, and another seed gives another");
	set_order("7");
	ok(run_flat(BLOCKS, THREADS) == s7, "the same seed gives the same order");

	/* a barrier holds in every order; a shuffle's two rounds differ */
	const char *orders[] = {"forward", "reverse", "7"};
	for (const char *o : orders) {
		set_order(o);
		seen.clear();
		std::vector<int> wrote(THREADS, 0);
		int *w = wrote.data();
		mp_emu::launcher_of(&rounds_kernel, dim3(1), dim3((unsigned)THREADS), 1, 0)(w);
		std::vector<int> first(seen.begin(), seen.begin() + THREADS),
			second(seen.begin() + THREADS, seen.end());
		int after = (int)second.size() == THREADS;
		for (int &x : second) {
			after &= x >= 1000;
			x -= 1000;
		}
		char what[128];
		snprintf(what, sizeof what, "%s: every thread reaches the barrier before any "
					    "passes it", o);
		ok(is_permutation(first, THREADS) && after && is_permutation(second, THREADS),
		   what);
		if (!strcmp(o, "7"))
			ok(first != second, "a shuffle changes the order between rounds");
	}

	const uint64_t d0 = mp_emu::digest;
	const char ab[] = "ab", ba[] = "ba";
	mp_emu_digest_add(ab, 2);
	const uint64_t d1 = mp_emu::digest;
	mp_emu::digest = d0;
	mp_emu_digest_add(ba, 2);
	ok(d1 != d0 && mp_emu::digest != d1, "the digest depends on the bytes and their order");

	const size_t sizes[] = {0, 1, 6, 4096};
	int nan_everywhere = 1;
	for (size_t bytes : sizes) {
		unsigned char *p = (unsigned char *)mp_emu_device_alloc(bytes);
		nan_everywhere &= p != NULL;
		for (size_t i = 0; p && i < bytes; i++)
			nan_everywhere &= p[i] == 0xff;
		if (p && bytes >= sizeof(double)) {
			float f;
			double d;
			memcpy(&f, p, sizeof f);
			memcpy(&d, p, sizeof d);
			nan_everywhere &= isnan(f) && isnan(d) &&
					  isnan(__bfloat162float(*(const __nv_bfloat16 *)p));
		}
		free(p);
	}
	ok(nan_everywhere, "device memory comes as NaN in float, bf16 and double");

	/* kernels/cuda/divider.h: the quotient of a multiply and a shift is
	 * the division's, for every divisor and numerator below 2^31 */
	{
		int same = 1;
		for (unsigned d = 1; d <= 4096 && same; d++) {
			const mp_cuda_divider v = mp_cuda_divider_for(d);
			for (unsigned n = 0; n <= 4096; n++)
				same &= mp_cuda_quot(v, n) == n / d;
			for (unsigned q = 1; q <= 0x7fffffffu / d && same; q = q * 3 + 1)
				for (unsigned n = q * d - 1; n <= q * d + 1 && n <= 0x7fffffffu; n++)
					same &= mp_cuda_quot(v, n) == n / d;
			same &= mp_cuda_quot(v, 0x7fffffffu) == 0x7fffffffu / d;
		}
		uint64_t r = 88172645463325252ull; /* xorshift: divisors of every size */
		for (int k = 0; k < 1000000 && same; k++) {
			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			const unsigned d = (unsigned)(r >> (33 + (r & 31) % 31)) | 1u;
			const unsigned n = (unsigned)(r >> 1) & 0x7fffffffu;
			const mp_cuda_divider v = mp_cuda_divider_for(d & 0x7fffffffu);
			same &= mp_cuda_quot(v, n) == n / v.d;
		}
		for (int s = 0; s < 31 && same; s++)
			for (unsigned d : {(1u << s) - 1, 1u << s, (1u << s) + 1})
				if (d >= 1 && d <= 0x7fffffffu)
					for (unsigned n : {0u, d - 1, d, 0x7ffffffeu, 0x7fffffffu})
						same &= mp_cuda_quot(mp_cuda_divider_for(d), n) == n / d;
		ok(same, "divider.h: n / d by a multiply and a shift, for n and d below 2^31");
		int channels = 1;
		for (unsigned C = 1; C <= 70; C += 3)
			for (unsigned plane = 1; plane <= 200; plane += 7) {
				const mp_cuda_divider cd = mp_cuda_divider_for(C), pd = mp_cuda_divider_for(plane);
				for (unsigned i = 0; i < 3 * C * plane; i++)
					channels &= mp_cuda_channel(i, pd, cd) == (int)(i / plane % C) &&
						    mp_cuda_channel((size_t)i, pd, cd) == (int)(i / plane % C);
			}
		ok(channels, "divider.h: an NCHW element's channel");
	}

	printf("1..%d\n", tests);
	printf("# %d of %d failed\n", failures, tests);
	return failures ? 1 : 0;
}
