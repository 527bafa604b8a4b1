/* The emulated device's rules (tests/emu/emu_device.cpp), which the other
 * emulated tests rely on to fail where a device would: work queued on a
 * stream runs only when waited for; copies from and to page-locked and
 * pageable memory keep CUDA's documented timing; a second stream's work
 * runs before what waits for its event, and not otherwise; a captured
 * graph replays its calls with their arguments; in a capture, a call of
 * the capturing thread that would synchronize or allocate breaks it (and
 * the same call of another thread does not); device pointers are checked;
 * cuDNN's stand-in wants the workspace it asked for. Driven through the
 * CUDA backend (its fill operation, its streams and graphs), as the
 * backend's own calls are.
 *
 * TAP on stdout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <thread>
#include <vector>

#include "../../kernels/cuda/cuda.h"
#include "emu_device.h"
#include "emu_tap.h"

static mp_backend *be;
static mp_cuda_state *s;

static void expect(bool cond, const char *what)
{
	if (!cond) {
		printf("# FAIL: %s\n", what);
		cur_failed = 1;
	}
}


/* a float tensor of 4 values on the device */
static mp_tensor tensor4(void)
{
	mp_tensor t{};
	must(be->ops->alloc(be, &t, 1, 1, 2, 2), be, "alloc");
	return t;
}

static bool all(const float *p, float v)
{
	for (int i = 0; i < 4; i++)
		if (!(p[i] == v))
			return false;
	return true;
}

static void test_queued(void)
{
	mp_tensor t = tensor4();
	must(be->ops->fill(be, &t, 2.0f), be, "fill");
	expect(isnan(t.data[0]), "a queued fill has not run before a wait");
	expect(cudaStreamSynchronize(s->stream) == cudaSuccess, "cudaStreamSynchronize");
	expect(all(t.data, 2.0f), "the wait ran it");
	be->ops->release(be, &t);
	ok("a stream's work runs when it is waited for, not before");
}

static void test_copies(void)
{
	mp_tensor t = tensor4();
	float *pinned = (float *)be->ops->host_alloc(be, 4 * sizeof(float));
	std::vector<float> pageable(4, 0.0f);
	expect(pinned && isnan(pinned[0]), "page-locked memory comes as NaN");
	/* to page-locked memory: in turn, after the fill */
	must(be->ops->fill(be, &t, 4.0f), be, "fill");
	expect(cudaMemcpyAsync(pinned, t.data, sizeof pageable[0] * 4, cudaMemcpyDeviceToHost,
			       s->stream) == cudaSuccess, "copy to page-locked memory");
	expect(isnan(pinned[0]), "a copy to page-locked memory has not run before a wait");
	cudaStreamSynchronize(s->stream);
	expect(all(pinned, 4.0f), "after the wait it has");
	/* to pageable memory: done when the call returns */
	must(be->ops->fill(be, &t, 6.0f), be, "fill");
	expect(cudaMemcpyAsync(pageable.data(), t.data, 4 * sizeof(float), cudaMemcpyDeviceToHost,
			       s->stream) == cudaSuccess, "copy to pageable memory");
	expect(all(pageable.data(), 6.0f), "a copy to pageable memory is done at its return");
	/* from pageable memory: its bytes taken at the call */
	pageable.assign(4, 7.0f);
	cudaMemcpyAsync(t.data, pageable.data(), 4 * sizeof(float), cudaMemcpyHostToDevice,
			s->stream);
	pageable.assign(4, 8.0f);
	cudaStreamSynchronize(s->stream);
	expect(all(t.data, 7.0f), "a copy from pageable memory takes the bytes of its call");
	/* from page-locked memory: its bytes when the copy runs */
	for (int i = 0; i < 4; i++)
		pinned[i] = 7.0f;
	cudaMemcpyAsync(t.data, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, s->stream);
	for (int i = 0; i < 4; i++)
		pinned[i] = 8.0f;
	cudaStreamSynchronize(s->stream);
	expect(all(t.data, 8.0f), "a copy from page-locked memory reads it when it runs");
	be->ops->host_free(be, pinned);
	be->ops->release(be, &t);
	ok("copies from and to page-locked and pageable memory keep CUDA's timing");
}

static void test_event_order(void)
{
	mp_tensor t = tensor4(), u = tensor4();
	float *pinned = (float *)be->ops->host_alloc(be, 4 * sizeof(float));
	for (int i = 0; i < 4; i++)
		pinned[i] = 9.0f;
	/* upload_ahead: the copy on the second stream, the main one waits */
	must(be->ops->upload_ahead(be, &t, pinned), be, "upload_ahead");
	cudaMemcpyAsync(u.data, t.data, 4 * sizeof(float), cudaMemcpyDeviceToDevice, s->stream);
	cudaStreamSynchronize(s->stream);
	expect(all(u.data, 9.0f), "the main stream's copy came after the second stream's");
	/* without the event, either order: by default the main stream's wait
	 * leaves the other's copy queued; with MP_EMU_STREAMS=others-first it
	 * runs it first */
	const char *streams = getenv("MP_EMU_STREAMS");
	const bool others_first = streams && !strcmp(streams, "others-first");
	for (int i = 0; i < 4; i++)
		pinned[i] = 10.0f;
	cudaMemcpyAsync(t.data, pinned, 4 * sizeof(float), cudaMemcpyHostToDevice, s->copy_stream);
	cudaMemcpyAsync(u.data, t.data, 4 * sizeof(float), cudaMemcpyDeviceToDevice, s->stream);
	cudaStreamSynchronize(s->stream);
	expect(all(u.data, others_first ? 10.0f : 9.0f),
	       others_first ? "others-first: the other stream's copy ran before the waited one's"
			    : "without an event the other stream's copy had not run");
	cudaStreamSynchronize(s->copy_stream);
	expect(all(t.data, 10.0f), "its own wait ran it");
	be->ops->host_free(be, pinned);
	be->ops->release(be, &t);
	be->ops->release(be, &u);
	ok("a stream runs another's work before what waits for its event; unordered, as "
	   "MP_EMU_STREAMS says");
}

static void test_graph_replay(void)
{
	mp_tensor t = tensor4();
	void *g = NULL;
	must(be->ops->fill(be, &t, 1.0f), be, "fill");
	must(be->ops->graph_begin(be), be, "graph_begin");
	must(be->ops->fill(be, &t, 3.0f), be, "fill (recorded)");
	must(be->ops->graph_end(be, &g), be, "graph_end");
	cudaStreamSynchronize(s->stream);
	expect(all(t.data, 1.0f), "a recorded fill does not run");
	for (int round = 0; round < 2 && g; round++) {
		must(be->ops->graph_launch(be, g), be, "graph_launch");
		expect(all(t.data, round ? 5.0f : 1.0f), "a launched graph has not run before a wait");
		must(be->ops->graph_wait(be), be, "graph_wait");
		expect(all(t.data, 3.0f), "the graph ran the fill with its recorded value");
		must(be->ops->fill(be, &t, 5.0f), be, "fill");
		cudaStreamSynchronize(s->stream);
	}
	be->ops->graph_free(be, g);
	be->ops->release(be, &t);
	ok("a captured graph replays its calls with their recorded arguments");
}

/* graph_begin, the call, graph_end: the call's status and graph_end's
 * message */
template <typename F> static void in_capture(const char *what, cudaError_t want, F call)
{
	char msg[160];
	must(be->ops->graph_begin(be), be, "graph_begin");
	const cudaError_t e = call();
	void *g = NULL;
	const int rc = be->ops->graph_end(be, &g);
	be->ops->graph_free(be, g);
	snprintf(msg, sizeof msg, "%s in a capture: %s (%s expected)", what, cudaGetErrorName(e),
		 cudaGetErrorName(want));
	expect(e == want, msg);
	(void)cudaGetLastError();
	if (want == cudaSuccess) {
		snprintf(msg, sizeof msg, "%s in a capture: graph_end: %s", what,
			 rc < 0 ? mp_backend_error(be) : "ok");
		expect(rc == 0, msg);
	} else {
		snprintf(msg, sizeof msg, "%s broke the capture: graph_end %s", what,
			 rc < 0 ? mp_backend_error(be) : "succeeded");
		expect(rc < 0 && strstr(mp_backend_error(be), "cudaErrorStreamCaptureInvalidated"),
		       msg);
	}
}

static void test_capture_rules(void)
{
	mp_tensor t = tensor4();
	std::vector<float> pageable(4, 1.0f);
	void *kept = NULL, *host = NULL;
	cudaMalloc(&kept, 64);
	const cudaError_t unsupported = cudaErrorStreamCaptureUnsupported;
	in_capture("cudaMalloc", unsupported, [&] {
		void *p = NULL;
		return cudaMalloc(&p, 64);
	});
	in_capture("cudaFree", unsupported, [&] { return cudaFree(kept); });
	in_capture("cudaMallocHost", unsupported, [&] { return cudaMallocHost(&host, 64); });
	in_capture("cudaStreamSynchronize", unsupported,
		   [&] { return cudaStreamSynchronize(s->stream); });
	in_capture("cudaDeviceSynchronize", unsupported, [&] { return cudaDeviceSynchronize(); });
	in_capture("a copy from pageable memory", unsupported, [&] {
		return cudaMemcpyAsync(t.data, pageable.data(), 4 * sizeof(float),
				       cudaMemcpyHostToDevice, s->stream);
	});
	in_capture("a copy on the legacy stream", cudaErrorStreamCaptureImplicit, [&] {
		return cudaMemcpyAsync(kept, t.data, 4 * sizeof(float), cudaMemcpyDeviceToDevice, 0);
	});
	in_capture("cudnnFindConvolutionForwardAlgorithm", unsupported, [&] {
		cudnnConvolutionFwdAlgoPerf_t perf[2];
		int got = 0;
		return cudnnFindConvolutionForwardAlgorithm(s->cudnn, NULL, NULL, NULL, NULL, 2, &got,
							    perf) == CUDNN_STATUS_SUCCESS
			       ? cudaSuccess
			       : unsupported;
	});
	/* thread-local: another thread may allocate and free while this one
	 * captures */
	in_capture("cudaMalloc and cudaFree of another thread", cudaSuccess, [&] {
		cudaError_t e = cudaErrorUnknown;
		void *p = NULL;
		std::thread other([&] {
			e = cudaMalloc(&p, 64);
			if (e == cudaSuccess)
				e = cudaFree(p);
		});
		other.join();
		return e;
	});
	/* and a capture after a broken one records again */
	in_capture("a fill", cudaSuccess, [&] {
		return be->ops->fill(be, &t, 1.0f) == 0 ? cudaSuccess : cudaErrorUnknown;
	});
	cudaFree(kept);
	be->ops->release(be, &t);
	ok("in a capture, the capturing thread's calls that synchronize or allocate break it");
}

static void test_pointers(void)
{
	std::vector<float> host(4, 0.0f);
	void *d = NULL;
	cudaMalloc(&d, 16);
	expect(cudaFree(host.data()) == cudaErrorInvalidValue, "cudaFree of host memory fails");
	expect(cudaMemcpyAsync(host.data(), d, 16, cudaMemcpyHostToDevice, s->stream) ==
		       cudaErrorInvalidValue,
	       "a copy to the device into host memory fails");
	expect(cudaMemcpyAsync(d, host.data(), 32, cudaMemcpyHostToDevice, s->stream) ==
		       cudaErrorInvalidValue,
	       "a copy past the end of device memory fails");
	(void)cudaGetLastError();
	/* cuDNN: the workspace the algorithm asked for */
	cudnnTensorDescriptor_t x, y;
	cudnnFilterDescriptor_t w;
	cudnnConvolutionDescriptor_t c;
	cudnnCreateTensorDescriptor(&x);
	cudnnCreateTensorDescriptor(&y);
	cudnnCreateFilterDescriptor(&w);
	cudnnCreateConvolutionDescriptor(&c);
	cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 2, 3, 3);
	cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 2, 3, 3);
	cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 2, 2, 3, 3);
	cudnnSetConvolution2dDescriptor(c, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
					CUDNN_DATA_FLOAT);
	float *xp = NULL, *yp = NULL, *wp = NULL, *ws = NULL;
	cudaMalloc((void **)&xp, 18 * sizeof(float));
	cudaMalloc((void **)&yp, 18 * sizeof(float));
	cudaMalloc((void **)&wp, 36 * sizeof(float));
	size_t need = 0;
	const cudnnConvolutionFwdAlgo_t algo = (cudnnConvolutionFwdAlgo_t)1;
	cudnnGetConvolutionForwardWorkspaceSize(s->cudnn, x, w, c, y, algo, &need);
	expect(need > 0, "algorithm 1 asks for a workspace");
	cudaMalloc((void **)&ws, need);
	const float one = 1, zero = 0;
	expect(cudnnConvolutionForward(s->cudnn, &one, x, xp, w, wp, c, algo, ws, need - 1, &zero, y,
				       yp) == CUDNN_STATUS_BAD_PARAM,
	       "a workspace smaller than asked for is refused");
	expect(cudnnConvolutionForward(s->cudnn, &one, x, host.data(), w, wp, c, algo, ws, need,
				       &zero, y, yp) == CUDNN_STATUS_BAD_PARAM,
	       "a host pointer is refused");
	expect(cudnnConvolutionForward(s->cudnn, &one, x, xp, w, wp, c, algo, ws, need, &zero, y,
				       yp) == CUDNN_STATUS_SUCCESS,
	       "with what it asked for, it runs");
	cudaStreamSynchronize(s->stream);
	float *bufs[] = {xp, yp, wp, ws};
	for (float *b : bufs)
		cudaFree(b);
	cudaFree(d);
	cudnnDestroyTensorDescriptor(x);
	cudnnDestroyTensorDescriptor(y);
	cudnnDestroyFilterDescriptor(w);
	cudnnDestroyConvolutionDescriptor(c);
	ok("device pointers and cuDNN's workspace are checked");
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	char why[256];
	be = mp_backend_cuda_new(0, why, sizeof why);
	if (!be) {
		printf("1..1\nnot ok 1 - open the backend: %s\n", why);
		return 1;
	}
	s = mp_cuda(be);
	printf("# %s\n", why);
	test_queued();
	test_copies();
	test_event_order();
	test_graph_replay();
	test_capture_rules();
	test_pointers();
	mp_backend_free(be);
	return tap_done();
}
