/* The CUDA module as built (kernels/cuda/'s files, backend_cuda.cu, conv.cu
 * and device.cu included), on a device emulated on the host: the CUDA
 * runtime, cuBLAS's SGEMM and cuDNN's legacy convolutions are stood in for
 * here, with the rules a device holds the backend to, so that breaking
 * one fails here as it would there:
 *
 * - Streams run their work later: a launch, an asynchronous copy, a cuDNN
 *   or cuBLAS call is queued on its stream and runs, in order, only when
 *   something waits for it (cudaStreamSynchronize, an event, cudaFree,
 *   a synchronous copy). A result read before its wait is the memory's old
 *   contents; page-locked memory comes filled with NaN, as device memory
 *   does, so such a read shows. Copies between device memory and pageable
 *   host memory behave as CUDA documents: to the device, the host's bytes
 *   are taken at the call; to the host, the call waits for the stream.
 *   cudaStreamWaitEvent orders two streams as recorded. Work of two
 *   streams that no event orders runs in either order: by default a wait
 *   runs only the stream waited for (what the other queued runs later),
 *   with MP_EMU_STREAMS=others-first the other streams' queued work first.
 * - A stream capture (cudaStreamBeginCapture) records instead of queuing;
 *   the instantiated graph replays the records, with the arguments of the
 *   recorded calls. In thread-local mode a call of the capturing thread
 *   that would synchronize or allocate (cudaMalloc, cudaFree,
 *   cudaMallocHost, a wait, a synchronous copy, cudnnFind*), a use of the
 *   legacy stream, and a copy from or to pageable host memory fail and
 *   invalidate the capture, as on a device, so cudaStreamEndCapture fails.
 *   Held stricter than a device may hold them: cudaMallocHost and
 *   cudaEventRecord in a capture (the backend uses neither there).
 * - Device pointers that copies, cuDNN and cuBLAS are given must lie in
 *   memory of cudaMalloc with room for what they touch; cudaFree of
 *   anything else fails.
 * - cuDNN: descriptors hold what they are given; the algorithm queries
 *   offer, per direction, a nondeterministic algorithm first and a
 *   deterministic one after it (backward) with a workspace that the call
 *   must be given, and none in bf16 for the filter gradient of 3-channel
 *   inputs (the stem's); the convolutions compute, in double, on the operands'
 *   types and layouts (float or bf16, NCHW or NHWC), and round the result
 *   to the output's type. The graph API (MP_CUDNN_API=graph) is not
 *   offered: its calls fail with CUDNN_STATUS_NOT_SUPPORTED.
 *
 * Linked into test_nhwc_emu and test_cuda_ops_device (emu_device.h), and
 * built as a module (tests/emu/libmp-cuda-emu.so) that the programs load
 * through MP_CUDA_MODULE (tests/cli/emucuda.bats). It says nothing of
 * speed, of cuDNN's own algorithms or of true concurrency: the work of
 * every stream runs on the calling thread, one call at a time (a lock). */
#include "cuda_emu.h"

/* cuda_runtime.h's C++ form, which it declares for nvcc only */
template <class T> static cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, T *entry)
{
	return cudaFuncGetAttributes(attr, (const void *)entry);
}

#include "../../kernels/cuda/convert.cu"
#include "../../kernels/cuda/nhwc.cu"
#include "../../kernels/cuda/conv_bn.cu"
#include "../../kernels/cuda/bn.cu"
#include "../../kernels/cuda/layers.cu"
#include "../../kernels/cuda/conv.cu"
#include "../../kernels/cuda/conv_graph.cu"
#include "../../kernels/cuda/backend_cuda.cu"
#include "../../kernels/cuda/device.cu"

#include "emu_device.h"

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <set>
#include <unistd.h>
#include <vector>

typedef std::function<void()> work_fn;

/* ---- streams, events, graphs ----------------------------------------------------------- */

struct CUgraph_st {
	std::vector<work_fn> nodes;
};
struct CUgraphExec_st {
	std::shared_ptr<std::vector<work_fn>> nodes;
};
struct CUstream_st {
	std::deque<work_fn> queue;
	unsigned long submitted = 0, done = 0;
	CUgraph_st *capture = nullptr; /* recording into it */
	bool invalid = false;	       /* its capture was broken */
};
struct CUevent_st {
	CUstream_st *stream = nullptr;
	unsigned long seq = 0; /* done when stream->done reaches it */
	bool timing = true;
	double ms = 0; /* host time when its place in the stream ran */
};

namespace {

std::recursive_mutex big_lock;
#define LOCKED std::lock_guard<std::recursive_mutex> locked_(big_lock)

CUstream_st legacy;		  /* stream 0 */
std::set<CUstream_st *> streams;  /* those made, besides the legacy one */
CUstream_st *capturing = nullptr; /* the stream being captured, if any */
pthread_t capture_thread;
thread_local cudaError_t last_error = cudaSuccess;
std::map<uintptr_t, size_t> device_mem, pinned_mem; /* start -> bytes */

CUstream_st *stream_of(cudaStream_t s)
{
	return s ? s : &legacy;
}

cudaError_t fail(cudaError_t e)
{
	last_error = e;
	return e;
}

/* Whether [p, p + n) lies in one allocation of the table. */
bool within(const std::map<uintptr_t, size_t> &table, const void *p, size_t n)
{
	const uintptr_t a = (uintptr_t)p;
	auto it = table.upper_bound(a);
	if (it == table.begin())
		return false;
	--it;
	return a >= it->first && a - it->first + n <= it->second;
}

bool is_device(const void *p, size_t n)
{
	return p && within(device_mem, p, n ? n : 1);
}

bool is_pinned(const void *p, size_t n)
{
	return p && within(pinned_mem, p, n ? n : 1);
}

/* A capture by this thread forbids calls that synchronize or allocate:
 * the call fails and the capture with it. */
bool capture_forbids()
{
	if (!capturing || !pthread_equal(capture_thread, pthread_self()))
		return false;
	capturing->invalid = true;
	return true;
}

void run_until(CUstream_st *s, unsigned long seq)
{
	while (s->done < seq && !s->queue.empty()) {
		work_fn w = std::move(s->queue.front());
		s->queue.pop_front();
		w();
		s->done++;
	}
}

void run_all(CUstream_st *s)
{
	run_until(s, s->submitted);
}

void run_every_stream()
{
	run_all(&legacy);
	for (CUstream_st *s : streams)
		run_all(s);
}

/* MP_EMU_STREAMS=others-first: a wait for one stream first runs every
 * other stream's queued work, work that a device may run before it or
 * alongside it when no event orders them (a copy on the second stream
 * before the step queued earlier on the first); own (the default) runs
 * only what is waited for. Dependencies hold either way: a stream's
 * event wait runs the other stream up to its event first. */
bool others_first()
{
	static int mode = -1;
	if (mode < 0) {
		const char *v = getenv("MP_EMU_STREAMS");
		mode = v && !strcmp(v, "others-first");
		if (v && *v && !mode && strcmp(v, "own")) {
			fprintf(stderr, "emu_device: MP_EMU_STREAMS=%s: not own or others-first\n", v);
			exit(2);
		}
	}
	return mode == 1;
}

/* The host waits for stream s up to its seq-th work. */
void wait_for(CUstream_st *s, unsigned long seq)
{
	if (others_first()) {
		if (s != &legacy)
			run_all(&legacy);
		for (CUstream_st *o : streams)
			if (o != s)
				run_all(o);
	}
	run_until(s, seq);
}

void wait_all(CUstream_st *s)
{
	wait_for(s, s->submitted);
}

/* Work for stream s: queued, or recorded when s is captured. */
cudaError_t submit(cudaStream_t st, work_fn w)
{
	CUstream_st *s = stream_of(st);
	if (s == &legacy && capture_forbids())
		return fail(cudaErrorStreamCaptureImplicit);
	if (s->capture) {
		s->capture->nodes.push_back(std::move(w));
		return cudaSuccess;
	}
	s->queue.push_back(std::move(w));
	s->submitted++;
	return cudaSuccess;
}

void submit_launch(cudaStream_t st, work_fn w)
{
	LOCKED;
	(void)submit(st, std::move(w)); /* its error is the launch's (cudaGetLastError) */
}

double now_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* the kernels' launches go to their streams from the start */
struct install_submit {
	install_submit()
	{
		mp_emu_submit = submit_launch;
	}
} install_submit_;

} // namespace

extern "C" {

cudaError_t mp_emu_sync_error = cudaSuccess;

cudaError_t cudaGetLastError(void)
{
	const cudaError_t e = last_error;
	last_error = cudaSuccess;
	return e;
}

cudaError_t cudaPeekAtLastError(void)
{
	return last_error;
}

const char *cudaGetErrorName(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
	case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
	case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
	case cudaErrorIllegalState: return "cudaErrorIllegalState";
	case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
	case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
	case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
	case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
	case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
	case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
	default: return "cudaError";
	}
}

const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorInvalidValue: return "invalid argument";
	case cudaErrorMemoryAllocation: return "out of memory";
	case cudaErrorStreamCaptureUnsupported:
		return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated:
		return "operation failed due to a previous error during capture";
	case cudaErrorStreamCaptureImplicit:
		return "operation would make the legacy stream depend on a capturing blocking "
		       "stream";
	case cudaErrorLaunchFailure: return "unspecified launch failure";
	default: return "an error of the emulated device";
	}
}

/* ---- the device ---- */

cudaError_t cudaGetDeviceCount(int *count)
{
	*count = 1;
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
	return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
	if (device != 0)
		return fail(cudaErrorInvalidDevice);
	memset(prop, 0, sizeof *prop);
	snprintf(prop->name, sizeof prop->name, "emulated on the host by tests/emu");
	prop->major = 9;
	prop->minor = 0;
	prop->totalGlobalMem = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
	return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func)
{
	(void)func;
	memset(attr, 0, sizeof *attr);
	return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
	*v = CUDART_VERSION;
	return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	run_every_stream();
	return cudaSuccess;
}

/* ---- memory ---- */

} // extern "C"

namespace {

/* Memory of the table's kind (device or page-locked), filled with NaN as
 * cudaMalloc leaves device memory with whatever was there: stale reads
 * show. */
cudaError_t alloc_in(std::map<uintptr_t, size_t> &table, void **p, size_t size)
{
	LOCKED;
	*p = NULL;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	void *m = mp_emu_device_alloc(size);
	if (!m)
		return fail(cudaErrorMemoryAllocation);
	table[(uintptr_t)m] = size ? size : 1;
	*p = m;
	return cudaSuccess;
}

/* Freeing waits for the device: work queued may still use the memory. */
cudaError_t free_in(std::map<uintptr_t, size_t> &table, void *p)
{
	LOCKED;
	if (!p)
		return cudaSuccess;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	auto it = table.find((uintptr_t)p);
	if (it == table.end())
		return fail(cudaErrorInvalidValue);
	run_every_stream();
	table.erase(it);
	free(p);
	return cudaSuccess;
}

} // namespace

extern "C" {

cudaError_t cudaMalloc(void **p, size_t size)
{
	return alloc_in(device_mem, p, size);
}

cudaError_t cudaFree(void *p)
{
	return free_in(device_mem, p);
}

cudaError_t cudaMallocHost(void **p, size_t size)
{
	return alloc_in(pinned_mem, p, size);
}

cudaError_t cudaFreeHost(void *p)
{
	return free_in(pinned_mem, p);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
			    cudaStream_t st)
{
	LOCKED;
	if (kind == cudaMemcpyDefault)
		kind = is_device(dst, n) ? (is_device(src, n) ? cudaMemcpyDeviceToDevice
							      : cudaMemcpyHostToDevice)
					 : (is_device(src, n) ? cudaMemcpyDeviceToHost
							      : cudaMemcpyHostToHost);
	const bool to_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
	const bool from_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
	if (n == 0)
		return cudaSuccess;
	if ((to_device && !is_device(dst, n)) || (from_device && !is_device(src, n)) ||
	    (!to_device && !dst) || (!from_device && !src))
		return fail(cudaErrorInvalidValue);
	CUstream_st *s = stream_of(st);
	const void *host = kind == cudaMemcpyHostToDevice   ? src
			   : kind == cudaMemcpyDeviceToHost ? dst
							    : NULL;
	if (s->capture && host && !is_pinned(host, n)) {
		s->invalid = true; /* a graph copies only page-locked host memory */
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	if (kind == cudaMemcpyHostToHost) {
		if (capture_forbids())
			return fail(cudaErrorStreamCaptureUnsupported);
		memcpy(dst, src, n);
		return cudaSuccess;
	}
	if (host && !is_pinned(host, n)) {
		if (kind == cudaMemcpyHostToDevice) {
			/* the host's bytes are staged now; the device gets them in turn */
			auto staged = std::make_shared<std::vector<unsigned char>>(
				(const unsigned char *)src, (const unsigned char *)src + n);
			return submit(st, [dst, staged]() {
				memcpy(dst, staged->data(), staged->size());
			});
		}
		/* to pageable memory the call returns when the copy is done */
		if (capture_forbids())
			return fail(cudaErrorStreamCaptureUnsupported);
		wait_all(s);
		memcpy(dst, src, n);
		mp_emu_digest_add(dst, n);
		return cudaSuccess;
	}
	return submit(st, [dst, src, n, kind]() {
		memcpy(dst, src, n);
		if (kind == cudaMemcpyDeviceToHost)
			mp_emu_digest_add(dst, n);
	});
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, 0);
	run_every_stream();
	return e;
}

/* ---- streams ---- */

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *st, unsigned flags)
{
	LOCKED;
	(void)flags;
	CUstream_st *s = new CUstream_st;
	streams.insert(s);
	*st = s;
	return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *st)
{
	return cudaStreamCreateWithFlags(st, cudaStreamDefault);
}

cudaError_t cudaStreamDestroy(cudaStream_t st)
{
	LOCKED;
	if (!st || !streams.count(st))
		return fail(cudaErrorInvalidResourceHandle);
	run_all(st); /* its work completes first */
	if (capturing == st)
		capturing = nullptr;
	delete st->capture;
	streams.erase(st);
	delete st;
	return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t st)
{
	LOCKED;
	CUstream_st *s = stream_of(st);
	if (s->capture || (s == &legacy && capturing)) {
		if (capturing)
			capturing->invalid = true;
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	wait_all(s);
	const cudaError_t e = mp_emu_sync_error;
	mp_emu_sync_error = cudaSuccess;
	return e == cudaSuccess ? e : fail(e);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode)
{
	LOCKED;
	(void)mode; /* every mode is held as thread-local, the backend's */
	if (!st || !streams.count(st))
		return fail(cudaErrorStreamCaptureUnsupported); /* the legacy stream */
	if (capturing)
		return fail(cudaErrorIllegalState);
	st->capture = new CUgraph_st;
	st->invalid = false;
	capturing = st;
	capture_thread = pthread_self();
	return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t *graph)
{
	LOCKED;
	*graph = NULL;
	if (!st || st->capture == nullptr)
		return fail(cudaErrorIllegalState);
	CUgraph_st *g = st->capture;
	st->capture = nullptr;
	capturing = nullptr;
	if (st->invalid) {
		st->invalid = false;
		delete g;
		return fail(cudaErrorStreamCaptureInvalidated);
	}
	*graph = g;
	return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
				 unsigned long long flags)
{
	LOCKED;
	(void)flags;
	if (!graph)
		return fail(cudaErrorInvalidValue);
	CUgraphExec_st *x = new CUgraphExec_st;
	x->nodes = std::make_shared<std::vector<work_fn>>(graph->nodes);
	*exec = x;
	return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st)
{
	LOCKED;
	if (!exec)
		return fail(cudaErrorInvalidValue);
	auto nodes = exec->nodes; /* destroying the graph leaves a launched one to finish */
	return submit(st, [nodes]() {
		for (work_fn &w : *nodes)
			w();
	});
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph)
{
	LOCKED;
	delete graph;
	return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec)
{
	LOCKED;
	delete exec;
	return cudaSuccess;
}

/* ---- events ---- */

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned flags)
{
	LOCKED;
	CUevent_st *e = new CUevent_st;
	e->timing = !(flags & cudaEventDisableTiming);
	*ev = e;
	return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *ev)
{
	return cudaEventCreateWithFlags(ev, cudaEventDefault);
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
	LOCKED;
	delete ev;
	return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st)
{
	LOCKED;
	CUstream_st *s = stream_of(st);
	if (s->capture) {
		s->invalid = true; /* no event nodes here: the backend records none */
		return fail(cudaErrorStreamCaptureUnsupported);
	}
	const cudaError_t e = submit(st, [ev]() { ev->ms = now_ms(); });
	if (e != cudaSuccess)
		return e;
	ev->stream = s;
	ev->seq = s->submitted;
	return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
	LOCKED;
	if (capture_forbids())
		return fail(cudaErrorStreamCaptureUnsupported);
	if (ev->stream)
		wait_for(ev->stream, ev->seq);
	return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	LOCKED;
	if (!a->timing || !b->timing)
		return fail(cudaErrorInvalidResourceHandle);
	*ms = (float)(b->ms - a->ms);
	return cudaSuccess;
}

/* st's later work waits for ev's stream up to ev's place */
cudaError_t cudaStreamWaitEvent(cudaStream_t st, cudaEvent_t ev, unsigned flags)
{
	LOCKED;
	(void)flags;
	CUstream_st *s = stream_of(st);
	if (s->capture) {
		s->invalid = true; /* an event from outside the capture */
		return fail(cudaErrorStreamCaptureIsolation);
	}
	CUstream_st *other = ev->stream;
	const unsigned long seq = ev->seq;
	if (!other || other == s)
		return cudaSuccess;
	return submit(st, [other, seq]() {
		if (other == &legacy || streams.count(other))
			run_until(other, seq);
	});
}

/* ---- cuBLAS ---- */

} // extern "C"

struct cublasContext {
	cudaStream_t stream = nullptr;
	void *workspace = nullptr;
};

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
	*h = new cublasContext;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t st)
{
	h->stream = st;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
	(void)h;
	(void)mode;
	return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t bytes)
{
	LOCKED;
	if (bytes && !is_device(ws, bytes))
		return CUBLAS_STATUS_INVALID_VALUE;
	h->workspace = ws;
	return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t s)
{
	return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_ERROR";
}

/* C = alpha op(A) op(B) + beta C, column-major, on the handle's stream;
 * alpha and beta are read at the call (host pointer mode) */
cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
			      int m, int n, int k, const float *alpha, const float *A, int lda,
			      const float *B, int ldb, const float *beta, float *C, int ldc)
{
	LOCKED;
	const int a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
	if (m < 0 || n < 0 || k < 0 || !is_device(A, (size_t)lda * a_cols * sizeof(float)) ||
	    !is_device(B, (size_t)ldb * b_cols * sizeof(float)) ||
	    !is_device(C, (size_t)ldc * n * sizeof(float)))
		return CUBLAS_STATUS_INVALID_VALUE;
	if (!h->workspace && capturing && capturing == stream_of(h->stream))
		return CUBLAS_STATUS_NOT_SUPPORTED; /* it would allocate one in the capture */
	const float al = *alpha, be = *beta;
	const cudaError_t e = submit(h->stream, [=]() {
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
				*c = (float)(al * s + (be != 0 ? be * *c : 0));
			}
	});
	return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

} // extern "C"

/* ---- cuDNN ------------------------------------------------------------------------------ */

struct cudnnContext {
	cudaStream_t stream = nullptr;
};
/* a tensor's or a filter's (k, c, r, s as n, c, h, w) description */
struct descriptor4 {
	cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
	cudnnDataType_t type = CUDNN_DATA_FLOAT;
	int n = 0, c = 0, h = 0, w = 0;
};
struct cudnnTensorStruct : descriptor4 {
};
struct cudnnFilterStruct : descriptor4 {
};
struct cudnnConvolutionStruct {
	int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
	cudnnMathType_t math = CUDNN_DEFAULT_MATH;
	cudnnDataType_t compute = CUDNN_DATA_FLOAT;
};

namespace {

/* An operand as cuDNN sees it: dims n, c, h, w (a filter's k, c, r, s),
 * laid out NCHW or NHWC (KRSC), float or bf16. */
struct operand {
	void *p;
	cudnnDataType_t type;
	bool nhwc;
	int n, c, h, w;
	size_t index(int i, int j, int y, int x) const
	{
		return nhwc ? (((size_t)i * h + y) * w + x) * c + j
			    : (((size_t)i * c + j) * h + y) * w + x;
	}
	size_t bytes() const
	{
		return (size_t)n * c * h * w * (type == CUDNN_DATA_BFLOAT16 ? 2 : 4);
	}
	double get(int i, int j, int y, int x) const
	{
		const size_t k = index(i, j, y, x);
		return type == CUDNN_DATA_BFLOAT16 ? (double)__bfloat162float(((__nv_bfloat16 *)p)[k])
						   : (double)((float *)p)[k];
	}
	/* v = alpha r + beta v, rounded to the operand's type */
	void put(int i, int j, int y, int x, double r, double alpha, double beta) const
	{
		const size_t k = index(i, j, y, x);
		double v = alpha * r;
		if (beta != 0)
			v += beta * get(i, j, y, x);
		if (type == CUDNN_DATA_BFLOAT16)
			((__nv_bfloat16 *)p)[k] = __float2bfloat16_rn((float)v);
		else
			((float *)p)[k] = (float)v;
	}
};

operand of_tensor(const descriptor4 *d, const void *p)
{
	return operand{(void *)p, d->type, d->format == CUDNN_TENSOR_NHWC, d->n, d->c, d->h, d->w};
}

operand of_filter(const cudnnFilterStruct *d, const void *p)
{
	return of_tensor(d, p);
}

cudnnStatus_t describe4(descriptor4 *d, cudnnTensorFormat_t format, cudnnDataType_t type, int n,
			int c, int h, int w)
{
	if (n < 1 || c < 1 || h < 1 || w < 1 ||
	    (type != CUDNN_DATA_FLOAT && type != CUDNN_DATA_BFLOAT16))
		return CUDNN_STATUS_BAD_PARAM;
	d->format = format;
	d->type = type;
	d->n = n;
	d->c = c;
	d->h = h;
	d->w = w;
	return CUDNN_STATUS_SUCCESS;
}

int out_dim(int in, int pad, int filter, int stride, int dil)
{
	return (in + 2 * pad - ((filter - 1) * dil + 1)) / stride + 1;
}

/* x, w, y agree with each other and with the convolution, lie in device
 * memory, and the workspace is what the algorithm asked for */
cudnnStatus_t check(const cudnnConvolutionStruct *cv, const operand &x, const operand &w,
		    const operand &y, const void *ws, size_t ws_bytes, size_t ws_needed)
{
	if (x.type != w.type || x.type != y.type || x.c != w.c || y.c != w.n || x.n != y.n ||
	    y.h != out_dim(x.h, cv->pad_h, w.h, cv->stride_h, cv->dil_h) ||
	    y.w != out_dim(x.w, cv->pad_w, w.w, cv->stride_w, cv->dil_w))
		return CUDNN_STATUS_BAD_PARAM;
	if (!is_device(x.p, x.bytes()) || !is_device(w.p, w.bytes()) || !is_device(y.p, y.bytes()))
		return CUDNN_STATUS_BAD_PARAM;
	if (ws_bytes < ws_needed || (ws_needed && !is_device(ws, ws_needed)))
		return CUDNN_STATUS_BAD_PARAM;
	if (x.type == CUDNN_DATA_BFLOAT16 && cv->math == CUDNN_FMA_MATH)
		return CUDNN_STATUS_NOT_SUPPORTED; /* bf16 runs on tensor cores */
	return CUDNN_STATUS_SUCCESS;
}

/* The workspace each algorithm of the stand-in asks for: some, so that
 * the backend's workspace must grow and be passed */
size_t workspace_for(const operand &x, int algo)
{
	return algo ? (size_t)1024 * x.c : 0;
}

enum { DIR_Y, DIR_DX, DIR_DW };

/* f(i, k, oy, ox, c, r, q, iy, ix) for every product of the convolution:
 * output (i, k, oy, ox) takes input (i, c, iy, ix) times filter tap
 * (k, c, r, q) */
template <typename F>
void for_each_product(const cudnnConvolutionStruct &cv, const operand &x, const operand &w,
		      const operand &y, F f)
{
	for (int i = 0; i < y.n; i++)
		for (int k = 0; k < y.c; k++)
			for (int oy = 0; oy < y.h; oy++)
				for (int ox = 0; ox < y.w; ox++)
					for (int c = 0; c < x.c; c++)
						for (int r = 0; r < w.h; r++) {
							const int iy = oy * cv.stride_h - cv.pad_h + r * cv.dil_h;
							if (iy < 0 || iy >= x.h)
								continue;
							for (int q = 0; q < w.w; q++) {
								const int ix =
									ox * cv.stride_w - cv.pad_w + q * cv.dil_w;
								if (ix >= 0 && ix < x.w)
									f(i, k, oy, ox, c, r, q, iy, ix);
							}
						}
}

/* one convolution direction, in double: y from x and w, or (y holding dy)
 * dx into x, or dw into w */
void convolve(int dir, const cudnnConvolutionStruct cv, const operand x, const operand w,
	      const operand y, double alpha, double beta)
{
	const operand &out = dir == DIR_Y ? y : dir == DIR_DX ? x : w;
	std::vector<double> acc((size_t)out.n * out.c * out.h * out.w, 0.0);
	auto at = [&](int a, int b, int c, int d) -> double & {
		return acc[(((size_t)a * out.c + b) * out.h + c) * out.w + d];
	};
	if (dir == DIR_Y)
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(i, k, oy, ox) += x.get(i, c, iy, ix) * w.get(k, c, r, q);
		});
	else if (dir == DIR_DX)
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(i, c, iy, ix) += y.get(i, k, oy, ox) * w.get(k, c, r, q);
		});
	else
		for_each_product(cv, x, w, y, [&](int i, int k, int oy, int ox, int c, int r, int q,
						  int iy, int ix) {
			at(k, c, r, q) += y.get(i, k, oy, ox) * x.get(i, c, iy, ix);
		});
	for (int a = 0; a < out.n; a++)
		for (int b = 0; b < out.c; b++)
			for (int c = 0; c < out.h; c++)
				for (int d = 0; d < out.w; d++)
					out.put(a, b, c, d, at(a, b, c, d), alpha, beta);
}

cudnnStatus_t run(cudnnHandle_t h, int dir, const void *alpha, const cudnnConvolutionStruct *cv,
		  const operand &x, const operand &w, const operand &y, int algo, void *ws,
		  size_t ws_bytes, const void *beta)
{
	if (dir == DIR_DW && x.type == CUDNN_DATA_BFLOAT16 && x.c == 3)
		return CUDNN_STATUS_NOT_SUPPORTED; /* none was offered (rank) */
	const cudnnStatus_t st = check(cv, x, w, y, ws, ws_bytes, workspace_for(x, algo));
	if (st != CUDNN_STATUS_SUCCESS)
		return st;
	const double a = *(const float *)alpha, b = *(const float *)beta;
	const cudnnConvolutionStruct c = *cv; /* the call's descriptors, as a graph keeps them */
	return submit(h->stream, [=]() { convolve(dir, c, x, w, y, a, b); }) == cudaSuccess
		       ? CUDNN_STATUS_SUCCESS
		       : CUDNN_STATUS_EXECUTION_FAILED;
}

/* The ranked list: algorithm 0 (nondeterministic in the backward
 * directions, without workspace), then algorithm 1 (deterministic, with
 * a workspace); in bf16 under tensor-op math, in float under the default.
 * None is offered for bf16 filter gradients of 3-channel inputs (the
 * stem's images), so that the backend's fallback to fp32 for one
 * direction of a shape runs in whole steps and graphs. */
template <typename Perf, typename Algo>
void rank(const cudnnTensorStruct *x, bool backward, bool filter, int want, int *got, Perf *perf)
{
	*got = want < 2 ? want : 2;
	const operand xo = of_tensor(x, nullptr);
	const bool none = filter && x->type == CUDNN_DATA_BFLOAT16 && x->c == 3;
	for (int i = 0; i < *got; i++) {
		memset(&perf[i], 0, sizeof perf[i]);
		perf[i].algo = (Algo)i;
		perf[i].status = none ? CUDNN_STATUS_NOT_SUPPORTED : CUDNN_STATUS_SUCCESS;
		perf[i].time = 1.0f + (float)i;
		perf[i].memory = workspace_for(xo, i);
		perf[i].determinism =
			backward && i == 0 ? CUDNN_NON_DETERMINISTIC : CUDNN_DETERMINISTIC;
		perf[i].mathType = x->type == CUDNN_DATA_BFLOAT16 ? CUDNN_TENSOR_OP_MATH
								 : CUDNN_DEFAULT_MATH;
	}
}

/* cudnnFind* runs every algorithm and waits for them */
cudnnStatus_t find_allowed(cudnnHandle_t h)
{
	if (capture_forbids())
		return CUDNN_STATUS_NOT_SUPPORTED;
	wait_all(stream_of(h->stream));
	return CUDNN_STATUS_SUCCESS;
}

} // namespace

extern "C" {

const char *cudnnGetErrorString(cudnnStatus_t s)
{
	switch (s) {
	case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
	case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
	case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
	case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
	default: return "CUDNN_STATUS_INTERNAL_ERROR";
	}
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h)
{
	*h = new cudnnContext;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t h)
{
	delete h;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t st)
{
	h->stream = st;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d)
{
	*d = new cudnnTensorStruct;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d)
{
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d)
{
	*d = new cudnnFilterStruct;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d)
{
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d)
{
	*d = new cudnnConvolutionStruct;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d)
{
	delete d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
					 cudnnDataType_t type, int n, int c, int h, int w)
{
	return describe4(d, format, type, n, c, h, w);
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
					 cudnnTensorFormat_t format, int k, int c, int h, int w)
{
	return describe4(d, format, type, k, c, h, w);
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h,
					      int pad_w, int u, int v, int dil_h, int dil_w,
					      cudnnConvolutionMode_t mode, cudnnDataType_t compute)
{
	/* cross-correlation, as the backend and PyTorch define it */
	if (u < 1 || v < 1 || dil_h < 1 || dil_w < 1 || pad_h < 0 || pad_w < 0 ||
	    mode != CUDNN_CROSS_CORRELATION || compute != CUDNN_DATA_FLOAT)
		return CUDNN_STATUS_BAD_PARAM;
	d->pad_h = pad_h;
	d->pad_w = pad_w;
	d->stride_h = u;
	d->stride_w = v;
	d->dil_h = dil_h;
	d->dil_w = dil_w;
	d->compute = compute;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m)
{
	d->math = m;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t d,
						    const cudnnTensorDescriptor_t x,
						    const cudnnFilterDescriptor_t w, int *n, int *c,
						    int *h, int *wo)
{
	if (x->c != w->c)
		return CUDNN_STATUS_BAD_PARAM;
	*n = x->n;
	*c = w->n;
	*h = out_dim(x->h, d->pad_h, w->h, d->stride_h, d->dil_h);
	*wo = out_dim(x->w, d->pad_w, w->w, d->stride_w, d->dil_w);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t h,
						     const cudnnTensorDescriptor_t x,
						     const cudnnFilterDescriptor_t w,
						     const cudnnConvolutionDescriptor_t cv,
						     const cudnnTensorDescriptor_t y, int want,
						     int *got, cudnnConvolutionFwdAlgoPerf_t *perf)
{
	(void)h, (void)w, (void)cv, (void)y;
	rank<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(x, false, false, want, got,
								   perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionForwardAlgorithm(cudnnHandle_t h,
						   const cudnnTensorDescriptor_t x,
						   const cudnnFilterDescriptor_t w,
						   const cudnnConvolutionDescriptor_t cv,
						   const cudnnTensorDescriptor_t y, int want, int *got,
						   cudnnConvolutionFwdAlgoPerf_t *perf)
{
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cv, y, want, got, perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, int want, int *got,
	cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
	(void)h, (void)w, (void)dy, (void)cv;
	rank<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(dx, true, false, want,
									      got, perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardDataAlgorithm(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx, int want, int *got,
	cudnnConvolutionBwdDataAlgoPerf_t *perf)
{
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, dy, cv, dx, want, got,
								     perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, int want, int *got,
	cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
	(void)h, (void)dy, (void)cv, (void)dw;
	rank<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(x, true, true,
										  want, got, perf);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnFindConvolutionBackwardFilterAlgorithm(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw, int want, int *got,
	cudnnConvolutionBwdFilterAlgoPerf_t *perf)
{
	LOCKED;
	const cudnnStatus_t s = find_allowed(h);
	return s != CUDNN_STATUS_SUCCESS
		       ? s
		       : cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, dy, cv, dw, want, got,
								       perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t h,
						      const cudnnTensorDescriptor_t x,
						      const cudnnFilterDescriptor_t w,
						      const cudnnConvolutionDescriptor_t cv,
						      const cudnnTensorDescriptor_t y,
						      cudnnConvolutionFwdAlgo_t algo, size_t *bytes)
{
	(void)h, (void)w, (void)cv, (void)y;
	*bytes = workspace_for(of_tensor(x, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
	cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnTensorDescriptor_t dx,
	cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes)
{
	(void)h, (void)w, (void)dy, (void)cv;
	*bytes = workspace_for(of_tensor(dx, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
	cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
	const cudnnConvolutionDescriptor_t cv, const cudnnFilterDescriptor_t dw,
	cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes)
{
	(void)h, (void)dy, (void)cv, (void)dw;
	*bytes = workspace_for(of_tensor(x, nullptr), (int)algo);
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
				      const cudnnTensorDescriptor_t xd, const void *x,
				      const cudnnFilterDescriptor_t wd, const void *w,
				      const cudnnConvolutionDescriptor_t cv,
				      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
				      const void *beta, const cudnnTensorDescriptor_t yd, void *y)
{
	LOCKED;
	return run(h, DIR_Y, alpha, cv, of_tensor(xd, x), of_filter(wd, w), of_tensor(yd, y),
		   (int)algo, ws, ws_bytes, beta);
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
					   const cudnnFilterDescriptor_t wd, const void *w,
					   const cudnnTensorDescriptor_t dyd, const void *dy,
					   const cudnnConvolutionDescriptor_t cv,
					   cudnnConvolutionBwdDataAlgo_t algo, void *ws,
					   size_t ws_bytes, const void *beta,
					   const cudnnTensorDescriptor_t dxd, void *dx)
{
	LOCKED;
	return run(h, DIR_DX, alpha, cv, of_tensor(dxd, dx), of_filter(wd, w), of_tensor(dyd, dy),
		   (int)algo, ws, ws_bytes, beta);
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
					     const cudnnTensorDescriptor_t xd, const void *x,
					     const cudnnTensorDescriptor_t dyd, const void *dy,
					     const cudnnConvolutionDescriptor_t cv,
					     cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
					     size_t ws_bytes, const void *beta,
					     const cudnnFilterDescriptor_t dwd, void *dw)
{
	LOCKED;
	return run(h, DIR_DW, alpha, cv, of_tensor(xd, x), of_filter(dwd, dw), of_tensor(dyd, dy),
		   (int)algo, ws, ws_bytes, beta);
}

/* the graph API: not offered */
cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type,
					   cudnnBackendDescriptor_t *d)
{
	(void)type;
	*d = NULL;
	return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d)
{
	(void)d;
	return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d)
{
	(void)d;
	return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d,
				       cudnnBackendAttributeName_t name,
				       cudnnBackendAttributeType_t type, int64_t count,
				       const void *values)
{
	(void)d, (void)name, (void)type, (void)count, (void)values;
	return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d,
				       cudnnBackendAttributeName_t name,
				       cudnnBackendAttributeType_t type, int64_t requested,
				       int64_t *count, void *values)
{
	(void)d, (void)name, (void)type, (void)requested, (void)count, (void)values;
	return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, cudnnBackendDescriptor_t plan,
				  cudnnBackendDescriptor_t pack)
{
	(void)h, (void)plan, (void)pack;
	return CUDNN_STATUS_NOT_SUPPORTED;
}

} // extern "C"
