/* The CUDA backend's own code run on the host (tests/emu/cuda_emu.h): its
 * kernels and operations from bn.cu, layers.cu, nhwc.cu, conv_bn.cu and
 * convert.cu as they are, in an ops table built as backend_cuda.cu builds
 * its own, with the device's memory in host memory (filled with NaN, as
 * cudaMalloc's is with whatever was there before). What it cannot run
 * is replaced: cuDNN's convolutions by the CPU reference's, on operands
 * rounded to bf16 and results rounded to bf16 where the device's bf16
 * algorithm rounds them; cuBLAS's SGEMM by a plain loop in its
 * column-major meaning; the runtime's copies by memcpy. No streams, no
 * graphs, no page-locked memory.
 *
 * For tests of the backend's logic without a GPU (test_cuda_ops
 * --emulated, test_nhwc_emu); it says nothing of speed or of cuDNN. */
#include "cuda_emu.h"

#include "../../kernels/cuda/convert.cu"
#include "../../kernels/cuda/nhwc.cu"
#include "../../kernels/cuda/conv_bn.cu"
#include "../../kernels/cuda/bn.cu"
#include "../../kernels/cuda/layers.cu"

#include <string.h>
#include <vector>

#include "emu_backend.h"

/* ---- the runtime, cuBLAS, and the backend's own helpers, on the host ---------------- */


extern "C" cudaError_t cudaMalloc(void **p, size_t size)
{
	*p = mp_emu_device_alloc(size);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

extern "C" cudaError_t cudaFree(void *p)
{
	free(p);
	return cudaSuccess;
}

/* what the next cudaStreamSynchronize returns (then cudaSuccess again): a
 * test's stand-in for an earlier kernel's fault, reported at a wait */
extern "C" {
cudaError_t mp_emu_sync_error = cudaSuccess;
}

extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
	(void)stream;
	const cudaError_t e = mp_emu_sync_error;
	mp_emu_sync_error = cudaSuccess;
	return e;
}

/* C = alpha op(A) op(B) + beta C, column-major, as cuBLAS means it */
extern "C" cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t ta,
					 cublasOperation_t tb, int m, int n, int k,
					 const float *alpha, const float *A, int lda,
					 const float *B, int ldb, const float *beta, float *C,
					 int ldc)
{
	(void)handle;
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) {
			double s = 0;
			for (int l = 0; l < k; l++) {
				const float a = ta == CUBLAS_OP_N ? A[i + (size_t)l * lda]
								  : A[l + (size_t)i * lda];
				const float b = tb == CUBLAS_OP_N ? B[l + (size_t)j * ldb]
								  : B[j + (size_t)l * ldb];
				s += (double)a * b;
			}
			float *c = &C[i + (size_t)j * ldc];
			*c = (float)(*alpha * s + (*beta != 0 ? *beta * *c : 0));
		}
	return CUBLAS_STATUS_SUCCESS;
}

int mp_cuda_fail_cuda(mp_backend *be, const char *op, const char *call, cudaError_t e)
{
	return mp_cpu_fail(be, "%s: %s: error %d", op, call, (int)e);
}

int mp_cuda_fail_cublas(mp_backend *be, const char *op, const char *call, cublasStatus_t s)
{
	return mp_cpu_fail(be, "%s: %s: status %d", op, call, (int)s);
}

int mp_cuda_not_recording(mp_backend *be, const char *op, const char *what)
{
	(void)be;
	(void)op;
	(void)what;
	return 0;
}

#include "emu_host.h"

/* ---- the convolutions: the CPU reference's, rounded as the device's ------------------- */

static mp_backend *conv_ref;

static float round_bf16(float f)
{
	return __bfloat162float(__float2bfloat16_rn(f));
}

/* t's values as float NCHW, rounded to bf16 when round is set */
static std::vector<float> values_of(mp_backend *be, const mp_tensor *t, int round)
{
	std::vector<float> v(mp_tensor_count(t));
	if (mp_cuda_is_bf16(t))
		mp_cuda_nhwc_download(be, t, v.data());
	else
		memcpy(v.data(), t->data, v.size() * sizeof(float));
	if (round)
		for (float &x : v)
			x = round_bf16(x);
	return v;
}

/* v (float NCHW) into t, rounded to bf16 first when round is set */
static int store(mp_backend *be, mp_tensor *t, std::vector<float> &v, int round)
{
	if (round)
		for (float &x : v)
			x = round_bf16(x);
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_upload(be, t, v.data());
	memcpy(t->data, v.data(), v.size() * sizeof(float));
	return 0;
}

/* A reference tensor shaped as t, holding v. */
static int ref_tensor(mp_tensor *r, const mp_tensor *t, const std::vector<float> *v)
{
	*r = mp_tensor{};
	if (conv_ref->ops->alloc(conv_ref, r, t->n, t->c, t->h, t->w) < 0)
		return -1;
	return v ? conv_ref->ops->upload(conv_ref, r, v->data()) : 0;
}

/* bf16 as the device decides it: the precision, or activations stored so */
static int runs_bf16(mp_backend *be, const mp_tensor *x, const mp_tensor *y)
{
	return mp_cuda(be)->precision == MP_PRECISION_BF16 || mp_cuda_is_bf16(x) ||
	       mp_cuda_is_bf16(y);
}

int mp_cuda_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y,
			   int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	if (mp_cuda_conv_check_forward(be, op, x, w, y, stride, pad))
		return -1;
	const int bf16 = runs_bf16(be, x, y);
	std::vector<float> xv = values_of(be, x, bf16), wv = values_of(be, w, bf16), yv;
	mp_tensor xr, wr, yr;
	int rc = ref_tensor(&xr, x, &xv) | ref_tensor(&wr, w, &wv) | ref_tensor(&yr, y, NULL);
	if (rc == 0)
		rc = conv_ref->ops->conv2d_forward(conv_ref, &xr, &wr, &yr, stride, pad);
	if (rc == 0) {
		yv.resize(mp_tensor_count(y));
		rc = conv_ref->ops->download(conv_ref, &yr, yv.data());
	}
	mp_tensor *all[] = {&xr, &wr, &yr};
	for (mp_tensor *t : all)
		conv_ref->ops->release(conv_ref, t);
	if (rc < 0)
		return mp_cpu_fail(be, "%s (reference): %s", op, mp_backend_error(conv_ref));
	return store(be, y, yv, bf16);
}

int mp_cuda_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride, int pad)
{
	static const char op[] = "conv2d_backward";
	if (mp_cuda_conv_check_backward(be, op, x, w, dy, dx, dw, stride, pad))
		return -1;
	if (!dx && !dw)
		return 0;
	const int bf16 = runs_bf16(be, x, dy);
	std::vector<float> xv = values_of(be, x, bf16), wv = values_of(be, w, bf16),
			   dyv = values_of(be, dy, bf16), dxv, dwv;
	mp_tensor xr, wr, dyr, dxr{}, dwr{};
	int rc = ref_tensor(&xr, x, &xv) | ref_tensor(&wr, w, &wv) | ref_tensor(&dyr, dy, &dyv) |
		 (dx ? ref_tensor(&dxr, dx, NULL) : 0) | (dw ? ref_tensor(&dwr, dw, NULL) : 0);
	if (rc == 0)
		rc = conv_ref->ops->conv2d_backward(conv_ref, &xr, &wr, &dyr, dx ? &dxr : NULL,
						    dw ? &dwr : NULL, stride, pad);
	if (rc == 0 && dx) {
		dxv.resize(mp_tensor_count(dx));
		rc = conv_ref->ops->download(conv_ref, &dxr, dxv.data());
	}
	if (rc == 0 && dw) {
		dwv.resize(mp_tensor_count(dw));
		rc = conv_ref->ops->download(conv_ref, &dwr, dwv.data());
	}
	mp_tensor *all[] = {&xr, &wr, &dyr, &dxr, &dwr};
	for (mp_tensor *t : all)
		if (t->data)
			conv_ref->ops->release(conv_ref, t);
	if (rc < 0)
		return mp_cpu_fail(be, "%s (reference): %s", op, mp_backend_error(conv_ref));
	return (dx ? store(be, dx, dxv, bf16) : 0) | (dw ? store(be, dw, dwv, bf16) : 0);
}

/* ---- the backend: memory, precision, the ops table ---------------------------------- */

static int emu_alloc_bytes(mp_backend *be, const char *op, mp_tensor *t, int n, int c, int h,
			   int w, size_t value_bytes, int storage)
{
	size_t count;
	if (mp_cpu_alloc_count(be, t, n, c, h, w, &count))
		return -1;
	t->data = (float *)mp_emu_device_alloc(count * value_bytes);
	if (!t->data)
		return mp_cpu_fail(be, "%s: %dx%dx%dx%d: out of memory", op, n, c, h, w);
	t->n = n, t->c = c, t->h = h, t->w = w;
	t->storage = storage;
	return 0;
}

static int emu_alloc(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	return emu_alloc_bytes(be, "alloc", t, n, c, h, w, sizeof(float), 0);
}

static int emu_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s->act_bf16 || s->precision != MP_PRECISION_BF16)
		return emu_alloc(be, t, n, c, h, w);
	return emu_alloc_bytes(be, "alloc_act", t, n, c, h, w, sizeof(__nv_bfloat16),
			       MP_CUDA_BF16_NHWC);
}

static void emu_release(mp_backend *be, mp_tensor *t)
{
	(void)be;
	if (!t)
		return;
	free(t->data);
	*t = mp_tensor{};
}

static int emu_upload(mp_backend *be, mp_tensor *t, const float *host)
{
	if (mp_cpu_check(be, "upload", "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "upload: no host array");
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_upload(be, t, host);
	memcpy(t->data, host, mp_tensor_count(t) * sizeof(float));
	return 0;
}

static int emu_download(mp_backend *be, const mp_tensor *t, float *host)
{
	if (mp_cpu_check(be, "download", "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "download: no host array");
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_download(be, t, host);
	/* a copy to the host as the bf16 path's cudaMemcpyAsync is: in the digest */
	memcpy(host, t->data, mp_tensor_count(t) * sizeof(float));
	mp_emu_digest_add(host, mp_tensor_count(t) * sizeof(float));
	return 0;
}

static int emu_set_precision(mp_backend *be, int precision)
{
	if (precision != MP_PRECISION_FP32 && precision != MP_PRECISION_BF16)
		return mp_cpu_fail(be, "set_precision: unknown precision %d", precision);
	mp_cuda(be)->precision = precision;
	return 0;
}

static void emu_destroy(mp_backend *be)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s)
		return;
	mp_cuda_layers_free(s);
	mp_cuda_buffer_free(&s->scratch);
	mp_cuda_buffer_free(&s->stage);
	mp_cuda_buffer_free(&s->bf_x);
	mp_cuda_buffer_free(&s->bf_y);
	mp_cuda_buffer_free(&s->bf_w);
	free(s->labels);
	free(s);
	be->impl = NULL;
}

static mp_backend_ops make_ops(void)
{
	mp_backend_ops o;
	memset(&o, 0, sizeof o);
	o.name = "cuda";
	o.alloc = emu_alloc;
	o.alloc_act = emu_alloc_act;
	o.release = emu_release;
	o.upload = emu_upload;
	o.download = emu_download;
	mp_cuda_ops_common(&o);
	o.set_precision = emu_set_precision;
	o.destroy = emu_destroy;
	return o;
}

static const mp_backend_ops emu_ops = make_ops();

extern "C" mp_backend *mp_emu_cuda_new(int act_bf16)
{
	if (!conv_ref && !(conv_ref = mp_backend_cpu_new(1)))
		return NULL;
	mp_backend *be = (mp_backend *)calloc(1, sizeof *be);
	mp_cuda_state *s = (mp_cuda_state *)calloc(1, sizeof *s);
	if (!be || !s) {
		free(be);
		free(s);
		return NULL;
	}
	s->precision = MP_PRECISION_FP32;
	s->act_bf16 = act_bf16;
	s->cc_major = 9;
	s->deterministic = 1;
	be->ops = &emu_ops;
	be->impl = s;
	return be;
}
