// Layout and precision conversions between float NCHW and bf16 NHWC, for
// the convolutions' operands (conv.cu) and the activations stored in bf16
// (nhwc.cu).
#include <cuda_bf16.h>
#include <limits.h>

#include "cuda.h"

// One image (or one filter) is a [C][P] float matrix in NCHW (P = h w
// pixels); NHWC is its transpose [P][C]. 32 x 32 tiles through shared
// memory keep both the reads and the writes coalesced. Grid: (P tiles,
// C tiles, images); block 32 x 8.

#define TILE 32
#define TILE_ROWS 8

__global__ void nchw_to_nhwc_bf16_kernel(const float *__restrict__ x,
					 __nv_bfloat16 *__restrict__ y, int C, int P)
{
	__shared__ float tile[TILE][TILE + 1];
	const size_t image = (size_t)blockIdx.z * C * P;
	const int p0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
	for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
		const int c = c0 + i, p = p0 + threadIdx.x;
		if (c < C && p < P)
			tile[i][threadIdx.x] = x[image + (size_t)c * P + p];
	}
	__syncthreads();
	for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
		const int p = p0 + i, c = c0 + threadIdx.x;
		if (p < P && c < C)
			y[image + (size_t)p * C + c] = __float2bfloat16_rn(tile[threadIdx.x][i]);
	}
}

// y = x in NCHW, or y += x when add
__global__ void nhwc_bf16_to_nchw_kernel(const __nv_bfloat16 *__restrict__ x,
					 float *__restrict__ y, int C, int P, int add)
{
	__shared__ float tile[TILE][TILE + 1];
	const size_t image = (size_t)blockIdx.z * C * P;
	const int p0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
	for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
		const int p = p0 + i, c = c0 + threadIdx.x;
		if (p < P && c < C)
			tile[i][threadIdx.x] = __bfloat162float(x[image + (size_t)p * C + c]);
	}
	__syncthreads();
	for (int i = threadIdx.y; i < TILE; i += TILE_ROWS) {
		const int c = c0 + i, p = p0 + threadIdx.x;
		if (c < C && p < P) {
			const size_t k = image + (size_t)c * P + p;
			y[k] = add ? __fadd_rn(y[k], tile[threadIdx.x][i]) : tile[threadIdx.x][i];
		}
	}
}

// Converts n images of c x plane values: float NCHW src into bf16 NHWC
// dst (to_bf16), or bf16 NHWC src into float NCHW dst. A grid has at most
// MP_CUDA_GRID_YZ images (its z): a larger batch (mp-train and mp-eval
// take 65536) goes in several launches.
static int convert(mp_backend *be, const char *op, int n, int c, int plane, const void *src,
		   int to_bf16, void *dst, int add)
{
	const long long gx = ((long long)plane + TILE - 1) / TILE;
	const long long gy = ((long long)c + TILE - 1) / TILE;
	if (n < 1 || c < 1 || plane < 1 || gy > MP_CUDA_GRID_YZ || gx > INT_MAX)
		return mp_cpu_fail(be, "%s: %d images of %dx%d cannot be converted to or from bf16",
				   op, n, c, plane);
	const size_t image = (size_t)c * plane;
	for (int i = 0; i < n; i += (int)MP_CUDA_GRID_YZ) {
		const int k = n - i < (int)MP_CUDA_GRID_YZ ? n - i : (int)MP_CUDA_GRID_YZ;
		const dim3 grid((unsigned)gx, (unsigned)gy, (unsigned)k);
		if (to_bf16) {
			MP_LAUNCH_SYNC(nchw_to_nhwc_bf16_kernel, grid, dim3(TILE, TILE_ROWS), be,
				  (const float *)src + i * image, (__nv_bfloat16 *)dst + i * image,
				  c, plane);
			LAUNCH_CHECK(op, "nchw_to_nhwc_bf16_kernel");
		} else {
			MP_LAUNCH_SYNC(nhwc_bf16_to_nchw_kernel, grid, dim3(TILE, TILE_ROWS), be,
				  (const __nv_bfloat16 *)src + i * image, (float *)dst + i * image,
				  c, plane, add);
			LAUNCH_CHECK(op, "nhwc_bf16_to_nchw_kernel");
		}
	}
	return 0;
}

int mp_cuda_convert(mp_backend *be, const char *op, int n, int c, int plane, const void *src,
		    int to_bf16, void *dst)
{
	return convert(be, op, n, c, plane, src, to_bf16, dst, 0);
}

int mp_cuda_convert_add(mp_backend *be, const char *op, int n, int c, int plane,
			const void *src, float *dst)
{
	return convert(be, op, n, c, plane, src, 0, dst, 1);
}

