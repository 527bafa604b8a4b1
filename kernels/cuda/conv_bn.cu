// Inference: a convolution with its BN (running statistics), residual and
// ReLU, y = relu?(conv(x, w) scale + shift + res?), as two kernels
// instead of four passes: cuDNN's convolution with the scale folded into
// the weights, then one pass that adds the shift and the residual and
// applies the ReLU in place (nhwc.cu's for activations stored in bf16).
//
// The prepared form (conv_bn_prepare), as floats: the folded weights
// w[k] scale[k] (K x C x kh x kw, first, so that they keep cudaMalloc's
// alignment), then K ones and K shifts (the scale and shift that the
// final pass applies: the scale is already in the weights).
#include <math.h>

#include "cuda.h"

static size_t prep_count(const mp_tensor *w)
{
	return mp_tensor_count(w) + 2 * (size_t)w->n;
}

// One thread per weight: its channel's BN folded as the CPU's
// mp_cpu_bn_fold does (in double); the first R threads of a channel also
// write its entries of the ones and shifts.
__global__ void conv_bn_fold_kernel(const float *__restrict__ w, size_t R, int K, float eps,
				    const float *__restrict__ gamma, const float *__restrict__ beta,
				    const float *__restrict__ rmean, const float *__restrict__ rvar,
				    float *__restrict__ prep)
{
	const size_t count = R * (size_t)K;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count;
	     i += (size_t)gridDim.x * blockDim.x) {
		const int k = (int)(i / R);
		const double invstd = 1.0 / sqrt((double)rvar[k] + eps);
		const float scale = (float)(gamma[k] * invstd);
		prep[i] = w[i] * scale;
		if (i % R == 0) {
			prep[count + k] = 1.0f;
			prep[count + K + k] =
				(float)(beta[k] - rmean[k] * invstd * gamma[k]);
		}
	}
}

// y = relu?(y + shift + res?) in place, float NCHW.
template <typename I>
__global__ void conv_bn_finish_kernel(float *y, size_t count, mp_cuda_divider K,
				      mp_cuda_divider plane, const float *__restrict__ shift,
				      const float *res, int relu)
{
	for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < (I)count;
	     i += (I)gridDim.x * blockDim.x) {
		const int k = mp_cuda_channel(i, plane, K);
		float v = y[i] + shift[k];
		if (res)
			v = __fadd_rn(v, res[i]);
		y[i] = relu && v < 0 ? 0.0f : v;
	}
}

int mp_cuda_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int stride,
			    int pad, mp_tensor *prep)
{
	static const char op[] = "conv_bn_prepare";
	if (mp_cuda_float_only(be, op, w) ||
	    mp_cpu_conv_bn_prepare_alloc(be, op, w, bn, stride, pad, prep, w ? prep_count(w) : 0))
		return -1;
	const size_t R = (size_t)w->c * w->h * w->w;
	MP_LAUNCH(conv_bn_fold_kernel, mp_cuda_grid(mp_tensor_count(w)), MP_CUDA_THREADS, be,
		  w->data, R, w->n, bn->eps, bn->gamma->data, bn->beta->data,
		  bn->running_mean->data, bn->running_var->data, prep->data);
	LAUNCH_CHECK(op, "conv_bn_fold_kernel");
	return 0;
}

int mp_cuda_conv_bn_forward_infer(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				  const mp_tensor *prep, const mp_tensor *res, int relu,
				  mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv_bn_forward_infer";
	if (mp_cpu_conv_bn_check(be, op, x, w, prep, w ? prep_count(w) : 0, res, y, stride, pad) ||
	    mp_cuda_act_storage(be, op, y, res) < 0)
		return -1;
	// the folded weights, shaped as w
	mp_tensor folded = *w;
	folded.data = prep->data;
	folded.storage = 0;
	if (mp_cuda_conv2d_forward(be, x, &folded, y, stride, pad))
		return -1;
	const float *coef = prep->data + mp_tensor_count(w); // ones, then shifts
	if (mp_cuda_is_bf16(y))
		return mp_cuda_nhwc_scale_shift(be, op, y, coef, res, relu, y);
	const size_t count = mp_tensor_count(y);
	const mp_cuda_divider kd = mp_cuda_divider_for((unsigned)y->c),
			      pd = mp_cuda_divider_for((unsigned)(y->h * y->w));
	const float *r = res ? res->data : NULL;
	if (count <= 0x7fffffffu)
		MP_LAUNCH(conv_bn_finish_kernel<unsigned>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  y->data, count, kd, pd, coef + w->n, r, relu);
	else
		MP_LAUNCH(conv_bn_finish_kernel<size_t>, mp_cuda_grid(count), MP_CUDA_THREADS, be,
			  y->data, count, kd, pd, coef + w->n, r, relu);
	LAUNCH_CHECK(op, "conv_bn_finish_kernel");
	return 0;
}
