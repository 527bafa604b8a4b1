/* The CPU reference backend: tensor memory, shape checks, the ops table. */
#include <errno.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu.h"

int mp_cpu_fail(mp_backend *be, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(be->error, sizeof be->error, fmt, ap);
	va_end(ap);
	return -1;
}

int mp_cpu_threads(const mp_backend *be)
{
	return be->threads > 0 ? be->threads : omp_get_max_threads();
}

int mp_cpu_check(mp_backend *be, const char *op, const char *name, const mp_tensor *t)
{
	if (!t)
		return mp_cpu_fail(be, "%s: %s is missing", op, name);
	if (t->n < 1 || t->c < 1 || t->h < 1 || t->w < 1)
		return mp_cpu_fail(be, "%s: %s has no elements (%dx%dx%dx%d)", op, name,
				   t->n, t->c, t->h, t->w);
	if (!t->data)
		return mp_cpu_fail(be, "%s: %s is not allocated", op, name);
	return 0;
}

int mp_cpu_expect(mp_backend *be, const char *op, const char *name, const mp_tensor *t,
		  int n, int c, int h, int w)
{
	if (mp_cpu_check(be, op, name, t))
		return -1;
	if (t->n != n || t->c != c || t->h != h || t->w != w)
		return mp_cpu_fail(be, "%s: %s is %dx%dx%dx%d, expected %dx%dx%dx%d", op, name,
				   t->n, t->c, t->h, t->w, n, c, h, w);
	return 0;
}

/* ---- memory -------------------------------------------------------------- */

int mp_cpu_alloc_count(mp_backend *be, mp_tensor *t, int n, int c, int h, int w,
		       size_t *count)
{
	if (!t)
		return mp_cpu_fail(be, "alloc: no tensor");
	t->n = t->c = t->h = t->w = 0;
	t->data = NULL;
	t->storage = 0;
	if (n < 1 || c < 1 || h < 1 || w < 1)
		return mp_cpu_fail(be, "alloc: shape %dx%dx%dx%d has no elements", n, c, h, w);
	/* the dims are positive ints, so the product of two fits in size_t;
	 * check the rest step by step against the byte count */
	size_t k = (size_t)n * (size_t)c;
	if (k > SIZE_MAX / sizeof(float) / (size_t)h ||
	    k * (size_t)h > SIZE_MAX / sizeof(float) / (size_t)w)
		return mp_cpu_fail(be, "alloc: shape %dx%dx%dx%d is too large", n, c, h, w);
	*count = k * (size_t)h * (size_t)w;
	return 0;
}

/* Large blocks start on a 2 MiB boundary and their whole 2 MiB pages are
 * offered to the kernel as huge pages (transparent huge pages in
 * "madvise" mode): a fraction of the page faults when the block is first
 * written, and of the TLB misses when the kernels stride through it. The
 * tail stays in small pages, so that nothing beyond the block becomes
 * resident. Small blocks are only aligned to cache lines. Either way
 * free() releases them. */
#define HUGE_PAGE ((size_t)2 << 20)

float *mp_cpu_alloc_floats(size_t count)
{
	const size_t bytes = (count ? count : 1) * sizeof(float);
	void *p = NULL;
	if (posix_memalign(&p, bytes < HUGE_PAGE ? 64 : HUGE_PAGE, bytes) != 0)
		return NULL;
#ifdef MADV_HUGEPAGE
	if (bytes >= HUGE_PAGE) /* a hint: failing changes nothing */
		madvise(p, bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
	return p;
}

static int cpu_alloc(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	size_t count;
	if (mp_cpu_alloc_count(be, t, n, c, h, w, &count))
		return -1;
	float *p = mp_cpu_alloc_floats(count);
	if (!p)
		return mp_cpu_fail(be, "alloc: %dx%dx%dx%d: out of memory", n, c, h, w);
	t->n = n;
	t->c = c;
	t->h = h;
	t->w = w;
	t->data = p;
	return 0;
}

static void cpu_release(mp_backend *be, mp_tensor *t)
{
	(void)be;
	if (!t)
		return;
	free(t->data);
	t->data = NULL;
	t->n = t->c = t->h = t->w = t->storage = 0;
}

static int cpu_upload(mp_backend *be, mp_tensor *t, const float *host)
{
	if (mp_cpu_check(be, "upload", "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "upload: no host array");
	memcpy(t->data, host, mp_tensor_count(t) * sizeof(float));
	return 0;
}

static int cpu_download(mp_backend *be, const mp_tensor *t, float *host)
{
	if (mp_cpu_check(be, "download", "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "download: no host array");
	memcpy(host, t->data, mp_tensor_count(t) * sizeof(float));
	return 0;
}

static int cpu_fill(mp_backend *be, mp_tensor *t, float value)
{
	if (mp_cpu_check(be, "fill", "tensor", t))
		return -1;
	size_t count = mp_tensor_count(t);
	for (size_t i = 0; i < count; i++)
		t->data[i] = value;
	return 0;
}

/* ---- the backend ----------------------------------------------------------- */

static const mp_backend_ops cpu_ops = {
	.name = "cpu",
	.alloc = cpu_alloc,
	.release = cpu_release,
	.upload = cpu_upload,
	.download = cpu_download,
	.fill = cpu_fill,
	.conv2d_forward = mp_cpu_conv2d_forward,
	.conv2d_backward = mp_cpu_conv2d_backward,
	.bn_forward_train = mp_cpu_bn_forward_train,
	.bn_forward_infer = mp_cpu_bn_forward_infer,
	.bn_backward = mp_cpu_bn_backward,
	.relu_forward = mp_cpu_relu_forward,
	.relu_backward = mp_cpu_relu_backward,
	.add = mp_cpu_add,
	.shortcut_a_forward = mp_cpu_shortcut_a_forward,
	.shortcut_a_backward = mp_cpu_shortcut_a_backward,
	.avgpool_forward = mp_cpu_avgpool_forward,
	.avgpool_backward = mp_cpu_avgpool_backward,
	.linear_forward = mp_cpu_linear_forward,
	.linear_backward = mp_cpu_linear_backward,
	.softmax_xent_forward = mp_cpu_softmax_xent_forward,
	.softmax_xent_backward = mp_cpu_softmax_xent_backward,
	.sgd_step = mp_cpu_sgd_step,
	.conv_bn_prepare = mp_cpu_conv_bn_prepare,
	.conv_bn_forward_infer = mp_cpu_conv_bn_forward_infer,
	/* the fused training ops as their definition, so that callers' fused
	 * path runs (and is checked) on the CPU; the fast backend has its own
	 * (bn.c), one pass over the data where the separate ones take three */
	.bn_relu_forward_train = mp_cpu_bn_relu_forward_train,
	.bn_relu_backward = mp_cpu_bn_relu_backward,
	.write_bytes = mp_cpu_write_bytes,
	.augment_train = mp_cpu_augment_train,
};

/* The fast backend: the reference table with the convolutions as im2col +
 * SGEMM (conv_gemm.c), whose scratch memory is the backend's state, and
 * faster BN, ReLU and add (the *_fast functions of bn.c and layers.c). */
static void cpu_fast_destroy(mp_backend *be)
{
	mp_cpu_gemm_state_free(be->impl);
	be->impl = NULL;
}

static const mp_backend_ops cpu_fast_ops = {
	.name = "cpu",
	.alloc = cpu_alloc,
	.release = cpu_release,
	.upload = cpu_upload,
	.download = cpu_download,
	.fill = cpu_fill,
	.conv2d_forward = mp_cpu_conv2d_forward_gemm,
	.conv2d_backward = mp_cpu_conv2d_backward_gemm,
	.bn_forward_train = mp_cpu_bn_forward_train_fast,
	.bn_forward_infer = mp_cpu_bn_forward_infer_fast,
	.bn_backward = mp_cpu_bn_backward_fast,
	.relu_forward = mp_cpu_relu_forward_fast,
	.relu_backward = mp_cpu_relu_backward_fast,
	.add = mp_cpu_add_fast,
	.shortcut_a_forward = mp_cpu_shortcut_a_forward,
	.shortcut_a_backward = mp_cpu_shortcut_a_backward,
	.avgpool_forward = mp_cpu_avgpool_forward,
	.avgpool_backward = mp_cpu_avgpool_backward,
	.linear_forward = mp_cpu_linear_forward,
	.linear_backward = mp_cpu_linear_backward,
	.softmax_xent_forward = mp_cpu_softmax_xent_forward,
	.softmax_xent_backward = mp_cpu_softmax_xent_backward,
	.sgd_step = mp_cpu_sgd_step,
	.conv_bn_prepare = mp_cpu_conv_bn_prepare_fast,
	.conv_bn_forward_infer = mp_cpu_conv_bn_forward_infer_fast,
	.bn_relu_forward_train = mp_cpu_bn_relu_forward_train_fast,
	.bn_relu_backward = mp_cpu_bn_relu_backward_fast,
	.write_bytes = mp_cpu_write_bytes,
	.augment_train = mp_cpu_augment_train_fast,
	.destroy = cpu_fast_destroy,
};

/* threads: how many OpenMP threads the operations use, 0 for all.
 * Returns NULL with errno set when threads is negative or memory is short. */
static mp_backend *cpu_new(const mp_backend_ops *ops, int threads)
{
	if (threads < 0) {
		errno = EINVAL;
		return NULL;
	}
	mp_backend *be = calloc(1, sizeof *be);
	if (!be)
		return NULL;
	be->ops = ops;
	be->threads = threads;
	be->impl = NULL;
	return be;
}

mp_backend *mp_backend_cpu_new(int threads)
{
	return cpu_new(&cpu_ops, threads);
}

mp_backend *mp_backend_cpu_fast_new(int threads)
{
	mp_backend *be = cpu_new(&cpu_fast_ops, threads);
	if (!be)
		return NULL;
	if (!(be->impl = mp_cpu_gemm_state_new())) {
		free(be);
		errno = ENOMEM;
		return NULL;
	}
	return be;
}

void mp_backend_free(mp_backend *be)
{
	/* Tensors belong to the caller, who releases them; the backend's own
	 * state (none for the CPU) goes through its destroy hook. */
	if (!be)
		return;
	if (be->ops && be->ops->destroy)
		be->ops->destroy(be);
	free(be);
}

int mp_backend_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	if (be->ops->alloc_act)
		return be->ops->alloc_act(be, t, n, c, h, w);
	return be->ops->alloc(be, t, n, c, h, w);
}

void *mp_backend_host_alloc(mp_backend *be, size_t bytes)
{
	void *p;
	if (be)
		be->error[0] = '\0'; /* the failure's own reason, or none */
	if (be && be->ops && be->ops->host_alloc)
		return be->ops->host_alloc(be, bytes);
	p = malloc(bytes);
	if (!p && be)
		mp_cpu_fail(be, "host_alloc: malloc of %zu bytes failed", bytes);
	return p;
}

void mp_backend_host_free(mp_backend *be, void *p)
{
	if (!p)
		return;
	if (be && be->ops && be->ops->host_free)
		be->ops->host_free(be, p);
	else
		free(p);
}

const char *mp_backend_error(const mp_backend *be)
{
	return be ? be->error : "no backend";
}
