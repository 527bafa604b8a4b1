// The CUDA backend: error reporting, tensor memory, the ops table, and
// mp_backend_cuda_new. See cuda.h for the conventions.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h" // before cuda.h: the entry point's name
#include "cuda.h"

#include <cuda_bf16.h>

// ---- errors ---------------------------------------------------------------

// The name of a call from its text: "cudnnConvolutionForward(s->cudnn, ...)"
// gives "cudnnConvolutionForward".
static int call_name(const char *call)
{
	const char *p = strchr(call, '(');
	return p ? (int)(p - call) : (int)strlen(call);
}

int mp_cuda_fail_cuda(mp_backend *be, const char *op, const char *call, cudaError_t e)
{
	// reported here: a failure that leaves the context usable (a full
	// device's cudaMalloc) is not the next kernel's error too
	(void)cudaGetLastError();
	return mp_cpu_fail(be, "%s: %.*s: %s (%s)", op, call_name(call), call,
			   cudaGetErrorName(e), cudaGetErrorString(e));
}

int mp_cuda_fail_cudnn(mp_backend *be, const char *op, const char *call, cudnnStatus_t s)
{
	return mp_cpu_fail(be, "%s: %.*s: %s", op, call_name(call), call,
			   cudnnGetErrorString(s));
}

int mp_cuda_fail_cublas(mp_backend *be, const char *op, const char *call, cublasStatus_t s)
{
	return mp_cpu_fail(be, "%s: %.*s: %s", op, call_name(call), call,
			   cublasGetStatusName(s));
}

int mp_cuda_not_recording(mp_backend *be, const char *op, const char *what)
{
	if (mp_cuda(be)->recording)
		return mp_cpu_fail(be, "%s: %s while recording a graph (the operations must run "
				   "once at these shapes first)", op, what);
	return 0;
}

int mp_cuda_grow(mp_backend *be, const char *op, struct mp_cuda_buffer *b, size_t bytes)
{
	if (bytes <= b->size)
		return 0;
	if (mp_cuda_not_recording(be, op, "device memory to grow"))
		return -1;
	mp_cuda_buffer_free(b); // cudaFree waits for the work that uses it
	mp_cuda(be)->mem_gen++;
	CUDA_CHECK(op, cudaMalloc(&b->p, bytes));
	b->size = bytes;
	return 0;
}

int mp_cuda_wait(mp_backend *be, const char *op)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s->recording)
		CUDA_CHECK(op, cudaStreamSynchronize(s->stream));
	return 0;
}

void mp_cuda_buffer_free(struct mp_cuda_buffer *b)
{
	if (b->p)
		cudaFree(b->p);
	b->p = NULL;
	b->size = 0;
}

double *mp_cuda_scratch(mp_backend *be, const char *op, size_t n)
{
	mp_cuda_state *s = mp_cuda(be);
	return mp_cuda_grow(be, op, &s->scratch, n * sizeof(double)) ? NULL
								      : (double *)s->scratch.p;
}

// ---- memory ----------------------------------------------------------------

// n x c x h x w values of value_bytes each, stored as storage says.
static int device_alloc(mp_backend *be, const char *op, mp_tensor *t, int n, int c, int h, int w,
			size_t value_bytes, int storage)
{
	size_t count;
	// the interface forbids it; cudaMalloc would break the capture with
	// a reason that names no operation
	if (mp_cuda(be)->recording)
		return mp_cpu_fail(be, "%s: %dx%dx%dx%d while recording a graph", op, n, c, h, w);
	if (mp_cpu_alloc_count(be, t, n, c, h, w, &count))
		return -1;
	void *p = NULL;
	cudaError_t e = cudaMalloc(&p, count * value_bytes);
	if (e != cudaSuccess) {
		(void)cudaGetLastError(); // reported here, not by the next kernel's check
		return mp_cpu_fail(be, "%s: %dx%dx%dx%d: cudaMalloc: %s (%s)", op, n, c, h, w,
				   cudaGetErrorName(e), cudaGetErrorString(e));
	}
	t->n = n;
	t->c = c;
	t->h = h;
	t->w = w;
	// bf16 values when storage says so: only nhwc.cu and conv.cu read them
	t->data = (float *)p;
	t->storage = storage;
	return 0;
}

static int cuda_alloc(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	return device_alloc(be, "alloc", t, n, c, h, w, sizeof(float), 0);
}

// Activations in bf16 NHWC when the backend runs in bf16 and
// MP_CUDA_ACTIVATIONS=bf16 asks for it (nhwc.cu); float NCHW otherwise.
static int cuda_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s->act_bf16 || s->precision != MP_PRECISION_BF16)
		return cuda_alloc(be, t, n, c, h, w);
	return device_alloc(be, "alloc_act", t, n, c, h, w, sizeof(__nv_bfloat16),
			    MP_CUDA_BF16_NHWC);
}

static void cuda_release(mp_backend *be, mp_tensor *t)
{
	if (!t)
		return;
	// the interface forbids it; graph_end then fails with this message
	if (t->data && mp_cuda(be)->recording)
		mp_cpu_fail(be, "release while recording a graph");
	// nothing to report to: release cannot fail; a failure (release while
	// recording, which the interface forbids) must not be reported by the
	// next kernel launch's check as its own
	if (t->data)
		mp_cuda_params_written(mp_cuda(be), t->data, mp_tensor_count(t) * sizeof(float));
	if (t->data && cudaFree(t->data) != cudaSuccess)
		(void)cudaGetLastError();
	t->data = NULL;
	t->n = t->c = t->h = t->w = t->storage = 0;
}

static int cuda_upload(mp_backend *be, mp_tensor *t, const float *host)
{
	static const char op[] = "upload";
	if (mp_cpu_check(be, op, "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "upload: no host array");
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_upload(be, t, host);
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_params_written(s, t->data, mp_tensor_count(t) * sizeof(float));
	CUDA_CHECK(op, cudaMemcpyAsync(t->data, host, mp_tensor_count(t) * sizeof(float),
				       cudaMemcpyHostToDevice, s->stream));
	// the host array is the caller's again when upload returns
	return mp_cuda_wait(be, op);
}

static int cuda_download(mp_backend *be, const mp_tensor *t, float *host)
{
	static const char op[] = "download";
	if (mp_cpu_check(be, op, "tensor", t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "download: no host array");
	if (mp_cuda_is_bf16(t))
		return mp_cuda_nhwc_download(be, t, host);
	mp_cuda_state *s = mp_cuda(be);
	CUDA_CHECK(op, cudaMemcpyAsync(host, t->data, mp_tensor_count(t) * sizeof(float),
				       cudaMemcpyDeviceToHost, s->stream));
	return mp_cuda_wait(be, op);
}

// On the copy stream, so that it overlaps the step running on the main
// one; the main stream's later work waits for it (an event).
static int cuda_upload_ahead(mp_backend *be, mp_tensor *t, const float *host)
{
	static const char op[] = "upload_ahead";
	if (mp_cpu_check(be, op, "tensor", t) ||
	    mp_cuda_not_recording(be, op, "a copy on the second stream") ||
	    mp_cuda_float_only(be, op, t))
		return -1;
	if (!host)
		return mp_cpu_fail(be, "%s: no host array", op);
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_params_written(s, t->data, mp_tensor_count(t) * sizeof(float));
	CUDA_CHECK(op, cudaMemcpyAsync(t->data, host, mp_tensor_count(t) * sizeof(float),
				       cudaMemcpyHostToDevice, s->copy_stream));
	CUDA_CHECK(op, cudaEventRecord(s->copy_done, s->copy_stream));
	CUDA_CHECK(op, cudaStreamWaitEvent(s->stream, s->copy_done, 0));
	return 0;
}

// Page-locked host memory: copies from it need no staging by the driver.
static void *cuda_host_alloc(mp_backend *be, size_t bytes)
{
	void *p = NULL;
	const cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 1);
	if (e == cudaSuccess)
		return p;
	// why, for the caller's message (the reset of the last error keeps
	// the next kernel's check from reporting this failure as its own)
	mp_cuda_fail_cuda(be, "host_alloc", "cudaMallocHost", e);
	return NULL;
}

static void cuda_host_free(mp_backend *be, void *p)
{
	(void)be;
	if (p && cudaFreeHost(p) != cudaSuccess)
		(void)cudaGetLastError();
}

// ---- precision -----------------------------------------------------------------

// bf16 needs the tensor cores of compute capability 8.0 (Ampere) or later.
static int cuda_set_precision(mp_backend *be, int precision)
{
	mp_cuda_state *s = mp_cuda(be);
	if (s->recording)
		return mp_cpu_fail(be, "set_precision while recording a graph");
	if (precision == MP_PRECISION_BF16 && s->cc_major < 8)
		return mp_cpu_fail(be, "bf16 needs a GPU of compute capability 8.0 or later; "
				   "device %d is sm_%d%d", s->device, s->cc_major, s->cc_minor);
	if (precision != MP_PRECISION_FP32 && precision != MP_PRECISION_BF16)
		return mp_cpu_fail(be, "set_precision: unknown precision %d", precision);
	// a graph recorded in the other precision would run in it still:
	// stale, as after memory moved (graph_launch returns 1)
	if (precision != s->precision)
		s->mem_gen++;
	s->precision = precision;
	return 0;
}

#define MP_CUBLAS_WORKSPACE ((size_t)32 << 20)

// ---- graphs ------------------------------------------------------------------------
// A recording is a capture of the backend's stream: every kernel, cuDNN and
// cuBLAS call and copy becomes a node; launching the instantiated graph
// costs the host one call for the whole step.

struct mp_cuda_graph {
	cudaGraph_t graph;
	cudaGraphExec_t exec;
	unsigned long mem_gen; // the backend's memory it was recorded with
	int writes_copies;     // it holds an SGD step that writes the bf16 filter copies
	int writes_params;     // it writes a parameter other than by SGD
};

static int cuda_graph_begin(mp_backend *be)
{
	static const char op[] = "graph_begin";
	mp_cuda_state *s = mp_cuda(be);
	if (s->recording)
		return mp_cpu_fail(be, "%s: already recording", op);
	// thread-local: a call of this thread that is unsafe in a capture
	// (cudaMalloc, a synchronization) fails instead of breaking it silently
	CUDA_CHECK(op, cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal));
	s->recording = 1;
	s->recorded_sgd = 0;
	s->recorded_param_write = 0;
	// an operation that fails while recording leaves its message here,
	// and graph_end fails with it (backend.h): the capture itself may
	// have gone on without the failed operation's work
	be->error[0] = '\0';
	s->rec_gen = s->mem_gen;
	return 0;
}

static int cuda_graph_end(mp_backend *be, void **out)
{
	static const char op[] = "graph_end";
	mp_cuda_state *s = mp_cuda(be);
	*out = NULL;
	if (!s->recording)
		return mp_cpu_fail(be, "%s: not recording", op);
	s->recording = 0;
	cudaGraph_t graph = NULL;
	cudaError_t e = cudaStreamEndCapture(s->stream, &graph);
	if (e != cudaSuccess) {
		(void)cudaGetLastError(); // a broken capture is not the context's error
		if (graph)
			cudaGraphDestroy(graph);
		if (be->error[0])
			return -1; // the operation that broke the capture says why
		return mp_cuda_fail_cuda(be, op, "cudaStreamEndCapture", e);
	}
	if (be->error[0]) {
		cudaGraphDestroy(graph);
		return -1; // with the failed operation's message
	}
	if (s->mem_gen != s->rec_gen) {
		cudaGraphDestroy(graph);
		return mp_cpu_fail(be, "%s: device memory moved while recording", op);
	}
	mp_cuda_graph *g = (mp_cuda_graph *)calloc(1, sizeof *g);
	if (!g) {
		cudaGraphDestroy(graph);
		return mp_cpu_fail(be, "%s: out of memory", op);
	}
	e = cudaGraphInstantiate(&g->exec, graph, 0);
	if (e != cudaSuccess) {
		// the caller goes on op by op: not the next kernel's error
		(void)cudaGetLastError();
		cudaGraphDestroy(graph);
		free(g);
		return mp_cuda_fail_cuda(be, op, "cudaGraphInstantiate", e);
	}
	g->graph = graph;
	g->mem_gen = s->rec_gen;
	g->writes_params = s->recorded_param_write;
	g->writes_copies = s->recorded_sgd && s->sgd_shadow && !g->writes_params;
	*out = g;
	return 0;
}

static int cuda_graph_launch(mp_backend *be, void *graph)
{
	static const char op[] = "graph_launch";
	mp_cuda_state *s = mp_cuda(be);
	mp_cuda_graph *g = (mp_cuda_graph *)graph;
	if (!g)
		return mp_cpu_fail(be, "%s: no graph", op);
	if (s->recording)
		return mp_cpu_fail(be, "%s: while recording a graph", op);
	if (g->mem_gen != s->mem_gen)
		return 1; // it would use memory since freed: record anew
	// queued: the host goes on (loads the next batch) while it runs
	CUDA_CHECK(op, cudaGraphLaunch(g->exec, s->stream));
	// the convolutions after it, in stream order, may take the copies
	if (g->writes_copies)
		s->sgd_shadow_valid = 1;
	// as the op-by-op write would: copies stale, graphs that read them too
	if (g->writes_params && s->sgd_shadow_valid) {
		s->sgd_shadow_valid = 0;
		s->mem_gen++;
	}
	return 0;
}

static int cuda_graph_wait(mp_backend *be)
{
	CUDA_CHECK("graph_wait", cudaStreamSynchronize(mp_cuda(be)->stream));
	return 0;
}

static void cuda_graph_free(mp_backend *be, void *graph)
{
	(void)be;
	mp_cuda_graph *g = (mp_cuda_graph *)graph;
	if (!g)
		return;
	cudaGraphExecDestroy(g->exec); // nothing to report to: freeing cannot fail
	cudaGraphDestroy(g->graph);
	free(g);
}

// ---- the backend -------------------------------------------------------------

static void cuda_destroy(mp_backend *be)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s)
		return;
	if (s->recording) {
		// a capture left open (an error path): end it, or the frees
		// below fail in it and leak
		cudaGraph_t graph = NULL;
		if (cudaStreamEndCapture(s->stream, &graph) == cudaSuccess && graph)
			cudaGraphDestroy(graph);
		(void)cudaGetLastError();
		s->recording = 0;
	}
	if (s->profile && s->nalgos)
		mp_cuda_conv_report(s);
	if (s->ev_start)
		cudaEventDestroy(s->ev_start);
	if (s->ev_stop)
		cudaEventDestroy(s->ev_stop);
	mp_cuda_conv_free(s);
	mp_cuda_layers_free(s);
	mp_cuda_buffer_free(&s->scratch);
	mp_cuda_buffer_free(&s->bn_counters);
	mp_cuda_buffer_free(&s->stage);
	if (s->labels)
		cudaFree(s->labels);
	if (s->cublas)
		cublasDestroy(s->cublas);
	if (s->cublas_ws)
		cudaFree(s->cublas_ws);
	if (s->cudnn)
		cudnnDestroy(s->cudnn);
	if (s->stream)
		cudaStreamDestroy(s->stream);
	if (s->copy_done)
		cudaEventDestroy(s->copy_done);
	if (s->copy_stream)
		cudaStreamDestroy(s->copy_stream);
	free(s);
	be->impl = NULL;
}

static mp_backend_ops make_ops(int graphs)
{
	mp_backend_ops o;
	memset(&o, 0, sizeof o);
	o.name = "cuda";
	o.alloc = cuda_alloc;
	o.release = cuda_release;
	o.alloc_act = cuda_alloc_act;
	o.upload = cuda_upload;
	o.download = cuda_download;
	mp_cuda_ops_common(&o);
	o.upload_ahead = cuda_upload_ahead;
	o.host_alloc = cuda_host_alloc;
	o.host_free = cuda_host_free;
	o.set_precision = cuda_set_precision;
	o.destroy = cuda_destroy;
	if (graphs) {
		o.graph_begin = cuda_graph_begin;
		o.graph_end = cuda_graph_end;
		o.graph_launch = cuda_graph_launch;
		o.graph_wait = cuda_graph_wait;
		o.graph_free = cuda_graph_free;
	}
	return o;
}

// with graphs, and without (MP_CUDA_GRAPH=0, the legacy stream, which
// cannot be captured, or MP_CUDA_PROFILE, which waits for every call)
static const mp_backend_ops cuda_ops = make_ops(1);
static const mp_backend_ops cuda_ops_no_graphs = make_ops(0);

// A variable that is unset or empty means its default; any other value
// than those named is an error, so that a typo does not go unnoticed.
static int env_choice(const char *name, const char *a, const char *b, int *out, char *why,
		      size_t n)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	if (!strcmp(v, a))
		*out = 0;
	else if (!strcmp(v, b))
		*out = 1;
	else {
		snprintf(why, n, "%s=%s: expected %s or %s", name, v, a, b);
		return -1;
	}
	return 0;
}

static int read_choice_env(mp_cuda_state *s, int *backward_add, char *why, size_t n)
{
	s->timed_search = 0;
	s->deterministic = 1;
	s->log_choices = 0;
	s->graphs = 1;
	s->keep_filters = 1;
	*backward_add = 1;
	return env_choice("MP_CUDNN_SEARCH", "heuristic", "timed", &s->timed_search, why, n) ||
			       env_choice("MP_CUDNN_DETERMINISTIC", "0", "1", &s->deterministic, why,
					  n) ||
			       env_choice("MP_CUDNN_LOG", "0", "1", &s->log_choices, why, n) ||
			       env_choice("MP_CUDA_PROFILE", "0", "1", &s->profile, why, n) ||
			       env_choice("MP_CUDA_STREAM", "own", "legacy", &s->legacy_stream, why, n) ||
			       env_choice("MP_CUDNN_API", "legacy", "graph", &s->graph_api, why, n) ||
			       env_choice("MP_CUDA_GRAPH", "0", "1", &s->graphs, why, n) ||
			       env_choice("MP_CUDA_ACTIVATIONS", "float", "bf16", &s->act_bf16, why,
					  n) ||
			       env_choice("MP_CUDA_KEEP_FILTERS", "0", "1", &s->keep_filters, why, n) ||
			       env_choice("MP_CUDA_BACKWARD_ADD", "0", "1", backward_add, why, n)
		       ? -1
		       : 0;
}

// A kernel that does nothing: whether this device can run the build's
// kernels at all (cudaFuncGetAttributes fails where no image fits it).
__global__ static void arch_probe(void)
{
}

#ifndef MP_CUDA_ARCH
#define MP_CUDA_ARCH "another architecture"
#endif

// Creation fails with a reason, so these write into why instead of be->error.
#define NEW_CUDA(call)                                                               \
	do {                                                                         \
		cudaError_t e_ = (call);                                             \
		if (e_ != cudaSuccess) {                                             \
			snprintf(why, n, "%.*s: %s (%s)", call_name(#call), #call,   \
				 cudaGetErrorName(e_), cudaGetErrorString(e_));      \
			goto fail;                                                   \
		}                                                                    \
	} while (0)
#define NEW_CUDNN(call)                                                              \
	do {                                                                         \
		cudnnStatus_t s_ = (call);                                           \
		if (s_ != CUDNN_STATUS_SUCCESS) {                                    \
			snprintf(why, n, "%.*s: %s", call_name(#call), #call,        \
				 cudnnGetErrorString(s_));                           \
			goto fail;                                                   \
		}                                                                    \
	} while (0)
#define NEW_CUBLAS(call)                                                             \
	do {                                                                         \
		cublasStatus_t s_ = (call);                                          \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                   \
			snprintf(why, n, "%.*s: %s", call_name(#call), #call,        \
				 cublasGetStatusName(s_));                           \
			goto fail;                                                   \
		}                                                                    \
	} while (0)

extern "C" mp_backend *mp_backend_cuda_new(int device, char *why, size_t n)
{
	char dummy[8];
	if (!why || n == 0) {
		why = dummy;
		n = sizeof dummy;
	}
	why[0] = '\0';
	mp_backend *be = NULL;
	mp_cuda_state *s = NULL;
	int count = 0, backward_add = 1;
	cudaDeviceProp prop;
	cudaError_t e = cudaGetDeviceCount(&count);
	if (e != cudaSuccess || count == 0) {
		mp_cuda_no_device(e, why, n);
		return NULL;
	}
	if (device < 0 || device >= count) {
		snprintf(why, n, "no CUDA device %d (%d found)", device, count);
		return NULL;
	}
	be = (mp_backend *)calloc(1, sizeof *be);
	s = (mp_cuda_state *)calloc(1, sizeof *s);
	if (!be || !s) {
		snprintf(why, n, "out of memory");
		goto fail;
	}
	be->ops = &cuda_ops;
	be->impl = s;
	s->device = device;
	NEW_CUDA(cudaSetDevice(device));
	NEW_CUDA(cudaGetDeviceProperties(&prop, device));
	s->cc_major = prop.major;
	s->cc_minor = prop.minor;
	// the kernels are built for one architecture (make CUDA_ARCH=): on
	// another device every launch would fail, each naming its kernel
	{
		cudaFuncAttributes attr;
		e = cudaFuncGetAttributes(&attr, arch_probe);
		if (e != cudaSuccess && e != cudaErrorInvalidDeviceFunction &&
		    e != cudaErrorNoKernelImageForDevice) {
			(void)cudaGetLastError();
			snprintf(why, n, "cudaFuncGetAttributes: %s (%s)", cudaGetErrorName(e),
				 cudaGetErrorString(e));
			goto fail;
		}
		if (e != cudaSuccess) {
			(void)cudaGetLastError();
			snprintf(why, n, "device %d (%s) is sm_%d%d, and this build's kernels are for "
				 "%s (%s): rebuild with make CUDA_ARCH=sm_%d%d",
				 device, prop.name, prop.major, prop.minor, MP_CUDA_ARCH,
				 cudaGetErrorName(e), prop.major, prop.minor);
			goto fail;
		}
	}
	s->precision = MP_PRECISION_FP32;
	if (read_choice_env(s, &backward_add, why, n) < 0)
		goto fail;
	s->ops = !s->graphs || s->legacy_stream || s->profile ? cuda_ops_no_graphs : cuda_ops;
	// without it mp_resnet sums a block's input gradient with an add
	if (!backward_add)
		s->ops.conv2d_backward_add = NULL;
	be->ops = &s->ops;
	if (s->profile) {
		NEW_CUDA(cudaEventCreate(&s->ev_start));
		NEW_CUDA(cudaEventCreate(&s->ev_stop));
	}
	// every operation runs on the backend's own stream (MP_CUDA_STREAM=legacy:
	// the legacy default stream, which synchronizes with all others)
	if (!s->legacy_stream)
		NEW_CUDA(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
	// the second stream of upload_ahead, which overlaps a running step
	NEW_CUDA(cudaStreamCreateWithFlags(&s->copy_stream, cudaStreamNonBlocking));
	NEW_CUDA(cudaEventCreateWithFlags(&s->copy_done, cudaEventDisableTiming));
	NEW_CUDNN(cudnnCreate(&s->cudnn));
	NEW_CUDNN(cudnnSetStream(s->cudnn, s->stream));
	NEW_CUBLAS(cublasCreate(&s->cublas));
	NEW_CUBLAS(cublasSetStream(s->cublas, s->stream));
	// plain fp32 arithmetic (no TF32), so results match the CPU reference
	NEW_CUBLAS(cublasSetMathMode(s->cublas, CUBLAS_DEFAULT_MATH));
	// a workspace of its own, so that cuBLAS allocates nothing while a
	// graph is recorded (32 MiB: its recommendation for sm_90)
	NEW_CUDA(cudaMalloc(&s->cublas_ws, MP_CUBLAS_WORKSPACE));
	NEW_CUBLAS(cublasSetWorkspace(s->cublas, s->cublas_ws, MP_CUBLAS_WORKSPACE));
	// On success why describes the device, for the caller's messages.
	snprintf(why, n, "%s, sm_%d%d, %.0f GiB", prop.name, prop.major, prop.minor,
		 (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
	return be;
fail:
	if (be) {
		if (be->impl)
			cuda_destroy(be);
		free(be);
	} else {
		free(s);
	}
	return NULL;
}
