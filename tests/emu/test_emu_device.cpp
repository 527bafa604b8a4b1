/* The emulated device's rules (tests/emu/emu_device.cpp), which the other
 * emulated tests rely on to fail where a device would: work queued on a
 * stream runs only when waited for; copies from and to page-locked and
 * pageable memory keep CUDA's documented timing; a second stream's work
 * runs before what waits for its event, and not otherwise; a captured
 * graph replays its calls with their arguments; in a capture, a call of
 * the capturing thread that would synchronize or allocate breaks it (and
 * the same call of another thread does not); device pointers are checked;
 * cuDNN's stand-in wants the workspace it asked for, checks the graph
 * API's descriptors, plans and variant packs, and gives a nondeterministic
 * algorithm's results other bits at every call. Driven through the
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

static bool all_nan(const float *p)
{
	for (int i = 0; i < 4; i++)
		if (!isnan(p[i]))
			return false;
	return true;
}

/* When queued work runs (MP_EMU_STREAMS): only at a wait (own,
 * others-first), at its call (eager) or at a drawn time (random:SEED). */
enum schedule_kind { AT_WAIT, EAGER, RANDOM };
static schedule_kind schedule = AT_WAIT;

/* What a read of work's result before its wait finds, by the schedule:
 * pending (not run), done (run whole), or under random either. */
static void expect_before_wait(bool pending, bool done, const char *what)
{
	char msg[200];
	switch (schedule) {
	case AT_WAIT:
		snprintf(msg, sizeof msg, "%s has not run before a wait", what);
		expect(pending, msg);
		break;
	case EAGER:
		snprintf(msg, sizeof msg, "eager: %s ran at its call", what);
		expect(done, msg);
		break;
	case RANDOM:
		snprintf(msg, sizeof msg, "random: %s ran whole or not at all", what);
		expect(pending || done, msg);
		break;
	}
}

static void test_queued(void)
{
	mp_tensor t = tensor4();
	must(be->ops->fill(be, &t, 2.0f), be, "fill");
	expect_before_wait(all_nan(t.data), all(t.data, 2.0f), "a queued fill");
	expect(cudaStreamSynchronize(s->stream) == cudaSuccess, "cudaStreamSynchronize");
	expect(all(t.data, 2.0f), "the wait ran it");
	be->ops->release(be, &t);
	ok("a stream's work runs by the schedule MP_EMU_STREAMS names, and at the latest when "
	   "waited for");
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
	expect_before_wait(all_nan(pinned), all(pinned, 4.0f), "a copy to page-locked memory");
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
	/* when it runs: the first bytes if at its call */
	expect_before_wait(all(t.data, 8.0f), all(t.data, 7.0f),
			   "a copy from page-locked memory (the bytes when it runs)");
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
	if (schedule == AT_WAIT)
		expect(all(u.data, others_first ? 10.0f : 9.0f),
		       others_first ? "others-first: the other stream's copy ran before the waited one's"
				    : "without an event the other stream's copy had not run");
	else
		expect_before_wait(all(u.data, 9.0f), all(u.data, 10.0f),
				   "the other stream's copy, no event ordering it,");
	cudaStreamSynchronize(s->copy_stream);
	expect(all(t.data, 10.0f), "its own wait ran it");
	be->ops->host_free(be, pinned);
	be->ops->release(be, &t);
	be->ops->release(be, &u);
	ok("a stream runs another's work before what waits for its event; unordered, as "
	   "MP_EMU_STREAMS says");
}

/* 64 fills, each read right after its call: which had run. Printed, so
 * that runs with one seed can be compared (tests/cli/emuorder.bats). */
static void test_schedule(void)
{
	mp_tensor t = tensor4();
	char ran[65] = {0};
	int runs = 0;
	for (int i = 0; i < 64; i++) {
		must(be->ops->fill(be, &t, (float)i), be, "fill");
		ran[i] = t.data[0] == (float)i ? '1' : '0';
		runs += ran[i] == '1';
	}
	cudaStreamSynchronize(s->stream);
	expect(all(t.data, 63.0f), "the wait ran the last fill");
	printf("# schedule: %s\n", ran);
	switch (schedule) {
	case AT_WAIT: expect(runs == 0, "a fill ran before its wait"); break;
	case EAGER: expect(runs == 64, "eager: a fill had not run at its call"); break;
	case RANDOM:
		expect(runs > 0 && runs < 64, "random: every fill, or none, ran at its call");
		break;
	}
	be->ops->release(be, &t);
	ok("work runs before its wait never (own, others-first), always (eager) or by a draw "
	   "(random:SEED)");
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
		expect_before_wait(all(t.data, round ? 5.0f : 1.0f), all(t.data, 3.0f),
				   "a launched graph");
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

/* A legacy convolution's descriptors, float NCHW: x and y n x c x h x w,
 * w c x c x 3 x 3, stride 1, pad 1; destroyed with it. */
struct legacy_conv {
	cudnnTensorDescriptor_t x, y;
	cudnnFilterDescriptor_t w;
	cudnnConvolutionDescriptor_t c;
	legacy_conv(int n, int ch, int h, int wd)
	{
		cudnnCreateTensorDescriptor(&x);
		cudnnCreateTensorDescriptor(&y);
		cudnnCreateFilterDescriptor(&w);
		cudnnCreateConvolutionDescriptor(&c);
		cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, ch, h, wd);
		cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, ch, h, wd);
		cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, ch, ch, 3, 3);
		cudnnSetConvolution2dDescriptor(c, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
						CUDNN_DATA_FLOAT);
	}
	~legacy_conv()
	{
		cudnnDestroyTensorDescriptor(x);
		cudnnDestroyTensorDescriptor(y);
		cudnnDestroyFilterDescriptor(w);
		cudnnDestroyConvolutionDescriptor(c);
	}
};

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
	const legacy_conv descs(1, 2, 3, 3);
	const cudnnTensorDescriptor_t x = descs.x, y = descs.y;
	const cudnnFilterDescriptor_t w = descs.w;
	const cudnnConvolutionDescriptor_t c = descs.c;
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
	ok("device pointers and cuDNN's workspace are checked");
}

/* cuDNN's graph API, as conv_graph.cu uses it, and the checks a device's
 * cuDNN makes: a descriptor answers once finalized and takes nothing
 * after; attributes have their types; the heuristics' configs carry
 * their engines' notes; a plan is built outside a capture; execution
 * wants every tensor's pointer, aligned and in device memory, the
 * plan's workspace, and the descriptors the plan was made from. */
typedef cudnnBackendDescriptor_t bdesc;

static bdesc graph_tensor(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w)
{
	bdesc d = NULL;
	const cudnnDataType_t type = CUDNN_DATA_FLOAT;
	const int64_t dims[4] = {n, c, h, w}, strides[4] = {c * h * w, h * w, w, 1}, align = 16;
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, &d);
	cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
	cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
	cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
	cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
	cudnnBackendSetAttribute(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
	expect(cudnnBackendFinalize(d) == CUDNN_STATUS_SUCCESS, "a tensor finalizes");
	return d;
}

static void test_graph_api(void)
{
	/* x 1x2x3x3, w 2x2x3x3, y 1x2x3x3, stride 1, pad 1 */
	bdesc x = graph_tensor(1, 1, 2, 3, 3), w = graph_tensor(2, 2, 2, 3, 3),
	      y = graph_tensor(3, 1, 2, 3, 3), conv = NULL, op = NULL, graph = NULL, heur = NULL;
	int64_t count = 0;
	int64_t dims[4];
	expect(cudnnBackendSetAttribute(x, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1,
					dims) == CUDNN_STATUS_NOT_INITIALIZED,
	       "a finalized descriptor takes no attribute");
	expect(cudnnBackendGetAttribute(x, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, &count,
					dims) == CUDNN_STATUS_SUCCESS &&
		       count == 4 && dims[1] == 2,
	       "it answers what it was given");
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv);
	expect(cudnnBackendGetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64,
					1, &count, dims) == CUDNN_STATUS_NOT_INITIALIZED,
	       "one not finalized answers nothing");
	const int64_t two = 2, ones[2] = {1, 1};
	const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
	const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
	expect(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_FLOAT,
					1, &two) == CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE,
	       "an attribute of the wrong type is refused");
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE,
				 1, &mode);
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &two);
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, ones);
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, ones);
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, ones);
	expect(cudnnBackendFinalize(conv) == CUDNN_STATUS_BAD_PARAM,
	       "a convolution without its post-paddings does not finalize");
	cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, ones);
	expect(cudnnBackendFinalize(conv) == CUDNN_STATUS_SUCCESS, "with them it does");
	const float one = 1, zero = 0;
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, &op);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT,
				 1, &one);
	cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT,
				 1, &zero);
	expect(cudnnBackendFinalize(op) == CUDNN_STATUS_SUCCESS, "the forward operation finalizes");
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph);
	cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
				 1, &op);
	cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1,
				 &s->cudnn);
	expect(cudnnBackendFinalize(graph) == CUDNN_STATUS_SUCCESS, "the graph finalizes");
	const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
	cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
	cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode);
	expect(cudnnBackendFinalize(heur) == CUDNN_STATUS_SUCCESS, "the heuristics finalize");
	cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
				 0, &count, NULL);
	expect(count == 3, "three fp32 engines");
	bdesc cfgs[3] = {NULL, NULL, NULL};
	for (bdesc &c : cfgs)
		cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c);
	expect(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
					CUDNN_TYPE_BACKEND_DESCRIPTOR, 3, &count,
					cfgs) == CUDNN_STATUS_SUCCESS,
	       "the heuristics fill the configs");
	/* the first converts its inputs down (conv_graph.cu passes it over in fp32) */
	bdesc engine = NULL;
	cudnnBackendNumericalNote_t notes[8];
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine);
	cudnnBackendGetAttribute(cfgs[0], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
				 1, &count, &engine);
	expect(cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
					CUDNN_TYPE_NUMERICAL_NOTE, 8, &count,
					notes) == CUDNN_STATUS_SUCCESS &&
		       count == 2 && notes[1] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS,
	       "engine 0's notes: tensor cores, inputs converted down");
	cudnnBackendDestroyDescriptor(engine);
	/* a plan of engine 2, which wants a workspace; not while capturing */
	bdesc plan = NULL;
	cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
	cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1,
				 &s->cudnn);
	cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
				 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[2]);
	cudaGraph_t g = NULL;
	cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal);
	expect(cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS,
	       "a plan is not built while the thread captures");
	expect(cudaStreamEndCapture(s->stream, &g) != cudaSuccess, "and the capture is broken");
	expect(cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS, "outside a capture it is");
	int64_t ws_size = 0;
	cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
				 &count, &ws_size);
	expect(ws_size > 0, "engine 2 wants a workspace");
	float *xp = NULL, *wp = NULL, *yp = NULL, *ws = NULL;
	cudaMalloc((void **)&xp, 18 * sizeof(float));
	cudaMalloc((void **)&wp, 36 * sizeof(float) + 16);
	cudaMalloc((void **)&yp, 18 * sizeof(float));
	cudaMalloc((void **)&ws, (size_t)ws_size);
	std::vector<float> xh(18), wh(36, 0.0f), yh(18);
	for (int i = 0; i < 18; i++)
		xh[i] = (float)i;
	wh[4] = 1; /* y channel 0 = x channel 0 (the centre tap) */
	cudaMemcpy(xp, xh.data(), 18 * sizeof(float), cudaMemcpyHostToDevice);
	cudaMemcpy(wp, wh.data(), 36 * sizeof(float), cudaMemcpyHostToDevice);
	auto execute = [&](int n, void *wptr, void *work) {
		bdesc pack = NULL;
		const int64_t uids[3] = {1, 2, 3};
		void *ptrs[3] = {xp, wptr, yp};
		cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack);
		cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
					 uids);
		cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
					 CUDNN_TYPE_VOID_PTR, n, ptrs);
		cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
					 &work);
		cudnnStatus_t st = cudnnBackendFinalize(pack);
		if (st == CUDNN_STATUS_SUCCESS)
			st = cudnnBackendExecute(s->cudnn, plan, pack);
		cudnnBackendDestroyDescriptor(pack);
		return st;
	};
	expect(execute(2, wp, ws) == CUDNN_STATUS_BAD_PARAM, "a pack without y's pointer is refused");
	expect(execute(3, (char *)wp + 4, ws) == CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER,
	       "a pointer off the declared alignment is refused");
	expect(execute(3, wh.data(), ws) == CUDNN_STATUS_BAD_PARAM, "a host pointer is refused");
	expect(execute(3, wp, NULL) == CUDNN_STATUS_BAD_PARAM, "a plan's workspace is wanted");
	expect(execute(3, wp, ws) == CUDNN_STATUS_SUCCESS, "with all it wants, it runs");
	cudaStreamSynchronize(s->stream);
	cudaMemcpy(yh.data(), yp, 18 * sizeof(float), cudaMemcpyDeviceToHost);
	expect(yh[4] == 4 && yh[9 + 4] == 0, "and computes the convolution");
	cudnnBackendDestroyDescriptor(y);
	expect(execute(3, wp, ws) == CUDNN_STATUS_BAD_PARAM,
	       "a plan whose tensor descriptor is destroyed is refused");
	const unsigned long before = mp_emu_cudnn_descriptors();
	bdesc left[] = {plan, cfgs[0], cfgs[1], cfgs[2], heur, graph, op, conv, w, x};
	for (bdesc d : left)
		cudnnBackendDestroyDescriptor(d);
	expect(mp_emu_cudnn_descriptors() == before - 10, "the descriptors are counted until destroyed");
	expect(cudnnBackendDestroyDescriptor(x) == CUDNN_STATUS_BAD_PARAM,
	       "one destroyed twice is refused");
	float *bufs[] = {xp, wp, yp, ws};
	for (float *b : bufs)
		cudaFree(b);
	ok("cuDNN's graph API: descriptors, heuristics, plans and their execution are checked");
}

/* A nondeterministic algorithm gives other bits from call to call (the
 * legacy backward-filter algorithm 0); a deterministic one the same. */
static void test_nondeterministic(void)
{
	const legacy_conv descs(2, 4, 6, 6);
	const cudnnTensorDescriptor_t x = descs.x, y = descs.y;
	const cudnnFilterDescriptor_t w = descs.w;
	const cudnnConvolutionDescriptor_t c = descs.c;
	const size_t nx = 2 * 4 * 6 * 6, nw = 4 * 4 * 3 * 3;
	std::vector<float> xh(nx), dw[4];
	for (size_t i = 0; i < nx; i++)
		xh[i] = (float)sin((double)i);
	float *xp = NULL, *yp = NULL, *wp = NULL, *ws = NULL;
	cudaMalloc((void **)&xp, nx * sizeof(float));
	cudaMalloc((void **)&yp, nx * sizeof(float));
	cudaMalloc((void **)&wp, nw * sizeof(float));
	cudaMemcpy(xp, xh.data(), nx * sizeof(float), cudaMemcpyHostToDevice);
	cudaMemcpy(yp, xh.data(), nx * sizeof(float), cudaMemcpyHostToDevice);
	size_t need = 0;
	cudnnGetConvolutionBackwardFilterWorkspaceSize(s->cudnn, x, y, c, w,
						       CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, &need);
	cudaMalloc((void **)&ws, need);
	const float one = 1, zero = 0;
	for (int run = 0; run < 4; run++) {
		const cudnnConvolutionBwdFilterAlgo_t algo = run < 2 ? CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0
								      : CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
		expect(cudnnConvolutionBackwardFilter(s->cudnn, &one, x, xp, y, yp, c, algo, ws, need,
						      &zero, w, wp) == CUDNN_STATUS_SUCCESS,
		       "the filter gradient runs");
		cudaStreamSynchronize(s->stream);
		dw[run].resize(nw);
		cudaMemcpy(dw[run].data(), wp, nw * sizeof(float), cudaMemcpyDeviceToHost);
	}
	expect(dw[0] != dw[1], "algorithm 0 (nondeterministic): other bits the second time");
	expect(dw[2] == dw[3], "algorithm 1 (deterministic): the same bits");
	for (size_t i = 0; i < nw; i++)
		if (fabsf(dw[0][i] - dw[2][i]) > 1e-6f * (1 + fabsf(dw[2][i]))) {
			expect(false, "the two differ by more than a float's last place");
			break;
		}
	float *bufs[] = {xp, yp, wp, ws};
	for (float *b : bufs)
		cudaFree(b);
	ok("a nondeterministic algorithm's bits vary from call to call, a deterministic one's do not");
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
	const char *streams = getenv("MP_EMU_STREAMS");
	if (streams && !strcmp(streams, "eager"))
		schedule = EAGER;
	else if (streams && !strncmp(streams, "random:", 7))
		schedule = RANDOM;
	test_queued();
	test_copies();
	test_event_order();
	test_schedule();
	test_graph_replay();
	test_capture_rules();
	test_pointers();
	test_graph_api();
	test_nondeterministic();
	mp_backend_free(be);
	return tap_done();
}
