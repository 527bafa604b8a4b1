// 2-D convolution without bias through cuDNN's classic descriptor API,
// OIHW weights, cross-correlation as PyTorch and the CPU reference define
// it, in the backend's precision (set_precision):
//
// fp32: NCHW float operands. The descriptor asks for CUDNN_FMA_MATH,
// which rules out TF32 tensor-core kernels (cuDNN's default math allows
// them for fp32 on Ampere and later), so results stay within float
// rounding of the CPU reference.
//
// bf16: the operands are rounded to bfloat16 and laid out NHWC (weights
// KRSC) in the state's buffers, one pass each (a tiled transpose), and
// cuDNN multiplies them on tensor cores with float accumulation
// (CUDNN_TENSOR_OP_MATH, compute type float); its bf16 NHWC result is
// turned back into the float NCHW tensor the caller gave. Every tensor
// the caller sees stays float: bf16 changes rounding, not the interface.
// The weights are converted at every call, so an SGD step between two
// calls is always seen.
//
// Algorithms: chosen once per shape and precision by cuDNN's heuristics
// (cudnnGet*Algorithm_v7, not the timing cudnnFind*, so that the same
// shape gets the same algorithm in every run) and cached. The backward
// passes take algorithms cuDNN reports deterministic (BWD_DATA_ALGO_1
// and BWD_FILTER_ALGO_1 are), so a training run on one GPU repeats bit
// for bit; in bf16 a nondeterministic one is taken only where cuDNN
// offers no deterministic one, and a call that needs a direction for
// which cuDNN has no bf16 algorithm on its shape runs in fp32 (the
// directions it does not need stay in bf16: every call of a shape runs
// as the first did, which a recorded step relies on). The workspace
// grows to the largest need seen. The environment can change the choice (MP_CUDNN_SEARCH=timed,
// MP_CUDNN_DETERMINISTIC=0), show it (MP_CUDNN_LOG=1), time each call
// (MP_CUDA_PROFILE=1) and use the graph API's plans (MP_CUDNN_API=graph,
// conv_graph.cu); the backend reads it when it is made.
#include <cuda_bf16.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda.h"

// Algorithms that would need more workspace than this are passed over.
static const size_t WS_LIMIT = (size_t)2 << 30;

// A convolution's operand in the form its algorithm takes (bf16 NHWC, or
// float NCHW): the tensor's own memory when it is stored so (a float
// weight in fp32, an activation of alloc_act in bf16), else a converted
// copy in buf. Weights are (K, C, kh, kw) images, so KRSC in bf16.
static int operand_in(mp_backend *be, const char *op, const mp_tensor *t, int bf16,
		      struct mp_cuda_buffer *buf, void **p)
{
	if (mp_cuda_is_bf16(t) == bf16) {
		*p = t->data;
		return 0;
	}
	const size_t bytes = mp_tensor_count(t) * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
	if (mp_cuda_grow(be, op, buf, bytes) ||
	    mp_cuda_convert(be, op, t->n, t->c, t->h * t->w, t->data, bf16, buf->p))
		return -1;
	*p = buf->p;
	return 0;
}

// Filter w as the algorithm takes it: in bf16, the SGD step's KRSC copy
// while it holds w's values (no conversion), else as operand_in gives it.
static int filter_in(mp_backend *be, const char *op, const mp_tensor *w, int bf16, void **p)
{
	const void *kept = bf16 ? mp_cuda_filter_shadow(mp_cuda(be), w) : NULL;
	if (kept) {
		*p = (void *)kept;
		return 0;
	}
	return operand_in(be, op, w, bf16, &mp_cuda(be)->bf_w, p);
}

// Where a result goes: t's own memory when it is stored in the algorithm's
// form, else buf, which operand_out_done then converts into t.
static int operand_out(mp_backend *be, const char *op, const mp_tensor *t, int bf16,
		       struct mp_cuda_buffer *buf, void **p)
{
	if (mp_cuda_is_bf16(t) == bf16) {
		*p = t->data;
		return 0;
	}
	const size_t bytes = mp_tensor_count(t) * (bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
	if (mp_cuda_grow(be, op, buf, bytes))
		return -1;
	*p = buf->p;
	return 0;
}

static int operand_out_done(mp_backend *be, const char *op, mp_tensor *t, int bf16,
			    const struct mp_cuda_buffer *buf)
{
	if (mp_cuda_is_bf16(t) == bf16)
		return 0;
	return mp_cuda_convert(be, op, t->n, t->c, t->h * t->w, buf->p, !bf16, t->data);
}

// ---- algorithms -------------------------------------------------------------------

static void conv_key(int key[10], const mp_tensor *x, const mp_tensor *w, int stride, int pad,
		     int bf16)
{
	key[0] = x->n;
	key[1] = x->c;
	key[2] = x->h;
	key[3] = x->w;
	key[4] = w->n;
	key[5] = w->h;
	key[6] = w->w;
	key[7] = stride;
	key[8] = pad;
	key[9] = bf16;
}

static mp_cuda_conv_algo *find_algo(mp_backend *be, const char *op, const int key[10])
{
	mp_cuda_state *s = mp_cuda(be);
	for (int i = 0; i < s->nalgos; i++)
		if (!memcmp(s->algos[i].key, key, sizeof s->algos[i].key))
			return &s->algos[i];
	if (s->nalgos == s->algos_cap) {
		int cap = s->algos_cap ? 2 * s->algos_cap : 16;
		mp_cuda_conv_algo *a =
			(mp_cuda_conv_algo *)realloc(s->algos, (size_t)cap * sizeof *a);
		if (!a) {
			mp_cpu_fail(be, "%s: out of memory", op);
			return NULL;
		}
		s->algos = a;
		s->algos_cap = cap;
	}
	mp_cuda_conv_algo *a = &s->algos[s->nalgos++];
	memset(a, 0, sizeof *a);
	memcpy(a->key, key, sizeof a->key);
	return a;
}

// Describes x, w, y and the convolution in entry a's descriptors (float
// NCHW, or bf16 NHWC with float compute), made on its first use, and
// checks that cuDNN computes the output size we do; the state's current
// descriptors are then a's.
static int describe(mp_backend *be, const char *op, mp_cuda_conv_algo *a, const mp_tensor *x,
		    const mp_tensor *w, const mp_tensor *y, int stride, int pad, int bf16)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!a->described) {
		if (!a->xdesc)
			CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&a->xdesc));
		if (!a->ydesc)
			CUDNN_CHECK(op, cudnnCreateTensorDescriptor(&a->ydesc));
		if (!a->wdesc)
			CUDNN_CHECK(op, cudnnCreateFilterDescriptor(&a->wdesc));
		if (!a->convdesc)
			CUDNN_CHECK(op, cudnnCreateConvolutionDescriptor(&a->convdesc));
		const cudnnTensorFormat_t format = bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
		const cudnnDataType_t type = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
		CUDNN_CHECK(op, cudnnSetTensor4dDescriptor(a->xdesc, format, type, x->n, x->c, x->h,
							   x->w));
		CUDNN_CHECK(op, cudnnSetFilter4dDescriptor(a->wdesc, type, format, w->n, w->c, w->h,
							   w->w));
		CUDNN_CHECK(op, cudnnSetConvolution2dDescriptor(a->convdesc, pad, pad, stride,
								stride, 1, 1,
								CUDNN_CROSS_CORRELATION,
								CUDNN_DATA_FLOAT));
		a->math = bf16 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
		CUDNN_CHECK(op, cudnnSetConvolutionMathType(a->convdesc, a->math));
		int on, oc, oh, ow;
		CUDNN_CHECK(op, cudnnGetConvolution2dForwardOutputDim(a->convdesc, a->xdesc, a->wdesc,
								      &on, &oc, &oh, &ow));
		if (on != y->n || oc != y->c || oh != y->h || ow != y->w)
			return mp_cpu_fail(be, "%s: cuDNN computes an output of %dx%dx%dx%d, expected %dx%dx%dx%d",
					   op, on, oc, oh, ow, y->n, y->c, y->h, y->w);
		CUDNN_CHECK(op, cudnnSetTensor4dDescriptor(a->ydesc, format, type, y->n, y->c, y->h,
							   y->w));
		a->described = 1;
	}
	s->xdesc = a->xdesc;
	s->ydesc = a->ydesc;
	s->wdesc = a->wdesc;
	s->convdesc = a->convdesc;
	return 0;
}

// Gives the current convolution descriptor math type m (a no-op when it
// has it already).
static int set_math(mp_backend *be, const char *op, mp_cuda_conv_algo *a, cudnnMathType_t m)
{
	if (a->math != m && !mp_cuda(be)->graph_api) {
		CUDNN_CHECK(op, cudnnSetConvolutionMathType(a->convdesc, m));
		a->math = m;
	}
	return 0;
}

static int is_tensor_op(cudnnMathType_t m)
{
	return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

// The first usable algorithm of cuDNN's ranked list: it succeeded, fits
// the workspace limit, in fp32 uses no tensor-op math, and (when
// deterministic is set) is deterministic. -1 when none is.
template <typename Perf>
static int pick_one(const Perf *perf, int count, int bf16, int deterministic)
{
	for (int i = 0; i < count; i++)
		if (perf[i].status == CUDNN_STATUS_SUCCESS && (bf16 || !is_tensor_op(perf[i].mathType)) &&
		    perf[i].memory <= WS_LIMIT &&
		    (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC))
			return i;
	return -1;
}

// Deterministic for a backward pass (want_deterministic), except that bf16
// settles for a nondeterministic one where cuDNN has no other.
template <typename Perf>
static int pick(const Perf *perf, int count, int bf16, int want_deterministic)
{
	int i = pick_one(perf, count, bf16, want_deterministic);
	if (i < 0 && bf16 && want_deterministic)
		i = pick_one(perf, count, bf16, 0);
	return i;
}

// The math type to run an algorithm with: the one cuDNN ranked it under in
// bf16; always FMA in fp32 (the default math would allow TF32).
static cudnnMathType_t math_for(int bf16, cudnnMathType_t ranked)
{
	return bf16 ? ranked : CUDNN_FMA_MATH;
}

// ---- MP_CUDA_PROFILE ------------------------------------------------------------------
//
// Each timed section waits for the GPU, so a profiled run is slower; the
// table says where a convolution's time goes, not how fast a step is.

enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };

static double host_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

static int prof_begin(mp_backend *be, const char *op)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s->profile)
		return 0;
	CUDA_CHECK(op, cudaEventRecord(s->ev_start, s->stream));
	s->prof_host_start = host_ms();
	return 0;
}

// Adds the GPU time since prof_begin to *acc, and to *host (when not NULL)
// the host time the calls in between took to return. A failure is the
// operation's: the wait reports the work's own faults.
static int prof_end_host(mp_backend *be, const char *op, double *acc, double *host)
{
	mp_cuda_state *s = mp_cuda(be);
	if (!s->profile)
		return 0;
	if (host)
		*host += host_ms() - s->prof_host_start;
	float ms = 0;
	CUDA_CHECK(op, cudaEventRecord(s->ev_stop, s->stream));
	CUDA_CHECK(op, cudaEventSynchronize(s->ev_stop));
	CUDA_CHECK(op, cudaEventElapsedTime(&ms, s->ev_start, s->ev_stop));
	*acc += ms;
	return 0;
}

static int prof_end(mp_backend *be, const char *op, double *acc)
{
	return prof_end_host(be, op, acc, NULL);
}

void mp_cuda_conv_report(const mp_cuda_state *s)
{
	static const char *const dir[3] = {"y", "dx", "dw"};
	double total_cudnn = 0, total_convert = 0, total_host = 0;
	fprintf(stderr, "mp-cuda: convolution GPU time (MP_CUDA_PROFILE), milliseconds per call\n");
	fprintf(stderr, "  %-46s %-4s %-3s %8s %10s %10s %10s\n", "shape", "prec", "dir", "calls",
		"cuDNN", "its host", "bf16 conv");
	for (int i = 0; i < s->nalgos; i++) {
		const mp_cuda_conv_algo *a = &s->algos[i];
		const int *k = a->key;
		for (int d = 0; d < 3; d++) {
			if (!a->calls[d])
				continue;
			char shape[96];
			snprintf(shape, sizeof shape, "x %dx%dx%dx%d w %dx%dx%dx%d s%d p%d", k[0], k[1],
				 k[2], k[3], k[4], k[1], k[5], k[6], k[7], k[8]);
			fprintf(stderr, "  %-46s %-4s %-3s %8ld %10.4f %10.4f %10.4f\n", shape,
				k[9] ? "bf16" : "fp32", dir[d], a->calls[d], a->ms_cudnn[d] / a->calls[d],
				a->ms_host[d] / a->calls[d], a->ms_convert[d] / a->calls[d]);
			total_cudnn += a->ms_cudnn[d];
			total_host += a->ms_host[d];
			total_convert += a->ms_convert[d];
		}
	}
	fprintf(stderr, "  total: cuDNN %.2f ms (of which %.2f ms until its calls returned), "
		"bf16 conversions %.2f ms\n", total_cudnn, total_host, total_convert);
	fprintf(stderr, "  (\"its host\": the host time cuDNN's call took to return, GPU idle "
		"meanwhile in this profile)\n");
}

// ---- choosing -----------------------------------------------------------------------

// cuDNN's ranked list for one direction: its heuristics (the default), or
// every algorithm timed on this shape (MP_CUDNN_SEARCH=timed; cuDNN
// allocates its own memory for that, once per shape); *call names the
// call, for a failure's message.
static cudnnStatus_t rank_fwd(mp_cuda_state *s, int *got,
			      cudnnConvolutionFwdAlgoPerf_t *perf, const char **call)
{
	const int n = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
	*call = s->timed_search ? "cudnnFindConvolutionForwardAlgorithm"
				: "cudnnGetConvolutionForwardAlgorithm_v7";
	return s->timed_search
		       ? cudnnFindConvolutionForwardAlgorithm(s->cudnn, s->xdesc, s->wdesc,
							      s->convdesc, s->ydesc, n, got, perf)
		       : cudnnGetConvolutionForwardAlgorithm_v7(s->cudnn, s->xdesc, s->wdesc,
								s->convdesc, s->ydesc, n, got, perf);
}

static cudnnStatus_t rank_bwd_data(mp_cuda_state *s, int *got,
				   cudnnConvolutionBwdDataAlgoPerf_t *perf, const char **call)
{
	const int n = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
	*call = s->timed_search ? "cudnnFindConvolutionBackwardDataAlgorithm"
				: "cudnnGetConvolutionBackwardDataAlgorithm_v7";
	return s->timed_search
		       ? cudnnFindConvolutionBackwardDataAlgorithm(s->cudnn, s->wdesc, s->ydesc,
								   s->convdesc, s->xdesc, n, got,
								   perf)
		       : cudnnGetConvolutionBackwardDataAlgorithm_v7(s->cudnn, s->wdesc, s->ydesc,
								     s->convdesc, s->xdesc, n, got,
								     perf);
}

static cudnnStatus_t rank_bwd_filter(mp_cuda_state *s, int *got,
				     cudnnConvolutionBwdFilterAlgoPerf_t *perf, const char **call)
{
	const int n = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
	*call = s->timed_search ? "cudnnFindConvolutionBackwardFilterAlgorithm"
				: "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
	return s->timed_search
		       ? cudnnFindConvolutionBackwardFilterAlgorithm(s->cudnn, s->xdesc, s->ydesc,
								     s->convdesc, s->wdesc, n, got,
								     perf)
		       : cudnnGetConvolutionBackwardFilterAlgorithm_v7(
				 s->cudnn, s->xdesc, s->ydesc, s->convdesc, s->wdesc, n, got, perf);
}

// MP_CUDNN_LOG: one line on stderr per choice.
template <typename Perf>
static void log_choice(const mp_cuda_state *s, const char *dir, const mp_tensor *x,
		       const mp_tensor *w, int stride, int pad, int bf16, const Perf *p)
{
	if (!s->log_choices)
		return;
	fprintf(stderr,
		"mp-cuda: conv x %dx%dx%dx%d w %dx%dx%dx%d stride %d pad %d %s %s: algorithm %d, "
		"%s math, %s, %.1f MiB workspace, %s %.3f ms\n",
		x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, stride, pad, bf16 ? "bf16" : "fp32",
		dir, (int)p->algo, is_tensor_op(p->mathType) ? "tensor-op" : "FMA/default",
		p->determinism == CUDNN_DETERMINISTIC ? "deterministic" : "nondeterministic",
		(double)p->memory / (1 << 20), s->timed_search ? "timed" : "estimated", p->time);
}

enum { FWD = 1, BWD_DATA = 2, BWD_FILTER = 4, BWD_DATA_ADD = 8 };

// Chooses the algorithms of entry a for the directions in want, with the
// descriptors describing its shape and precision. 0 when done; 1 when
// cuDNN offers bf16 no algorithm for one of them, which joins
// a->fp32_only (the caller falls back to fp32); -1 on an error.
// A choice of algorithm or plan is kept for the shape's every later call:
// made in a recording, where cuDNN's queries and timed searches cannot run
// as they do outside one, a failure would be kept as "no engine". The
// operation fails instead, and with it the recording; the caller's
// operation by operation makes the choice.
static int choice_not_recorded(mp_backend *be, const char *op)
{
	return mp_cuda_not_recording(be, op, "a convolution shape's first choice of algorithm");
}

static int choose(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int want, int bf16,
		  const mp_tensor *x, const mp_tensor *w)
{
	mp_cuda_state *s = mp_cuda(be);
	const char *none = NULL;
	int none_dir = 0;
	if (((want & FWD) && !a->have_fwd) || ((want & BWD_DATA) && !a->have_bwd_data) ||
	    ((want & BWD_FILTER) && !a->have_bwd_filter))
		if (choice_not_recorded(be, op))
			return -1;
	if ((want & FWD) && !a->have_fwd) {
		cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
		int got = 0;
		const char *call;
		const cudnnStatus_t st = rank_fwd(s, &got, perf, &call);
		if (st != CUDNN_STATUS_SUCCESS)
			return mp_cuda_fail_cudnn(be, op, call, st);
		int i = pick(perf, got, bf16, 0);
		if (i < 0) {
			none = "y";
			none_dir = FWD;
		} else {
			log_choice(s, "y", x, w, a->key[7], a->key[8], bf16, &perf[i]);
			a->fwd = perf[i].algo;
			a->fwd_math = math_for(bf16, perf[i].mathType);
			if (set_math(be, op, a, a->fwd_math))
				return -1;
			CUDNN_CHECK(op, cudnnGetConvolutionForwardWorkspaceSize(
						s->cudnn, s->xdesc, s->wdesc, s->convdesc, s->ydesc,
						a->fwd, &a->fwd_ws));
			a->have_fwd = 1;
		}
	}
	if (!none && (want & BWD_DATA) && !a->have_bwd_data) {
		cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
		int got = 0;
		const char *call;
		const cudnnStatus_t st = rank_bwd_data(s, &got, perf, &call);
		if (st != CUDNN_STATUS_SUCCESS)
			return mp_cuda_fail_cudnn(be, op, call, st);
		int i = pick(perf, got, bf16, s->deterministic);
		if (i < 0) {
			none = "deterministic dx";
			none_dir = BWD_DATA;
		} else {
			log_choice(s, "dx", x, w, a->key[7], a->key[8], bf16, &perf[i]);
			a->bwd_data = perf[i].algo;
			a->bwd_data_math = math_for(bf16, perf[i].mathType);
			if (set_math(be, op, a, a->bwd_data_math))
				return -1;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardDataWorkspaceSize(
						s->cudnn, s->wdesc, s->ydesc, s->convdesc, s->xdesc,
						a->bwd_data, &a->bwd_data_ws));
			a->have_bwd_data = 1;
		}
	}
	if (!none && (want & BWD_FILTER) && !a->have_bwd_filter) {
		cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
		int got = 0;
		const char *call;
		const cudnnStatus_t st = rank_bwd_filter(s, &got, perf, &call);
		if (st != CUDNN_STATUS_SUCCESS)
			return mp_cuda_fail_cudnn(be, op, call, st);
		int i = pick(perf, got, bf16, s->deterministic);
		if (i < 0) {
			none = "deterministic dw";
			none_dir = BWD_FILTER;
		} else {
			log_choice(s, "dw", x, w, a->key[7], a->key[8], bf16, &perf[i]);
			a->bwd_filter = perf[i].algo;
			a->bwd_filter_math = math_for(bf16, perf[i].mathType);
			if (set_math(be, op, a, a->bwd_filter_math))
				return -1;
			CUDNN_CHECK(op, cudnnGetConvolutionBackwardFilterWorkspaceSize(
						s->cudnn, s->xdesc, s->ydesc, s->convdesc, s->wdesc,
						a->bwd_filter, &a->bwd_filter_ws));
			a->have_bwd_filter = 1;
		}
	}
	if (!none)
		return 0;
	if (bf16) {
		a->fp32_only |= none_dir;
		return 1;
	}
	return mp_cpu_fail(be, "%s: cuDNN offers no %s fp32 algorithm for x %dx%dx%dx%d, w %dx%dx%dx%d",
			   op, none, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
}

// choose's counterpart for MP_CUDNN_API=graph: the directions' execution
// plans, the same protocol.
static int graph_choose(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int want,
			const mp_tensor *x, const mp_tensor *w, const mp_tensor *y, int stride,
			int pad, int bf16)
{
	mp_cuda_state *s = mp_cuda(be);
	static const char *const names[4] = {"y", "dx", "dw", "dx added"};
	for (int d = 0; d < 4; d++) {
		if (!(want & (1 << d)) || a->gplan[d])
			continue;
		if (d == 3 && a->graph_no_add)
			continue;
		if (choice_not_recorded(be, op))
			return -1;
		const int r = mp_cuda_graph_plan(be, op, a, d, x, w, y, stride, pad, bf16);
		if (r < 0)
			return -1;
		if (r == 1 && d == 3) {
			a->graph_no_add = 1; // dx made apart and added, in this precision
			if (s->log_choices)
				fprintf(stderr,
					"mp-cuda: conv x %dx%dx%dx%d w %dx%dx%dx%d stride %d pad %d %s "
					"dx added: no graph API engine adds, made apart\n",
					x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, stride, pad,
					bf16 ? "bf16" : "fp32");
			continue;
		}
		if (r == 1) {
			a->fp32_only |= 1 << d; // FWD, BWD_DATA, BWD_FILTER, BWD_DATA_ADD
			return 1;
		}
		// both dx plans share the direction's workspace
		size_t *ws = d == 0 ? &a->fwd_ws : d == 2 ? &a->bwd_filter_ws : &a->bwd_data_ws;
		if (a->gws[d] > *ws)
			*ws = a->gws[d];
		if (s->log_choices)
			fprintf(stderr,
				"mp-cuda: conv x %dx%dx%dx%d w %dx%dx%dx%d stride %d pad %d %s %s: "
				"graph API plan, %.1f MiB workspace\n",
				x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, stride, pad,
				bf16 ? "bf16" : "fp32", names[d], (double)a->gws[d] / (1 << 20));
	}
	return 0;
}

// The algorithm entry for this convolution in the backend's precision,
// with the descriptors set for it; *bf16 says whether it runs in bf16 (a
// call that needs a direction cuDNN cannot do in bf16 on this shape runs
// in fp32; the other calls of the shape stay in bf16, so that each runs
// as it did the first time). NULL on an error.
static mp_cuda_conv_algo *plan(mp_backend *be, const char *op, const mp_tensor *x,
			       const mp_tensor *w, const mp_tensor *y, int stride, int pad,
			       int want, int *bf16)
{
	// bf16 in bf16 precision, or with activations stored in bf16
	*bf16 = mp_cuda(be)->precision == MP_PRECISION_BF16 || mp_cuda_is_bf16(x) ||
		mp_cuda_is_bf16(y);
	for (;;) {
		int key[10];
		conv_key(key, x, w, stride, pad, *bf16);
		mp_cuda_conv_algo *a = find_algo(be, op, key);
		if (!a)
			return NULL;
		if (!(a->fp32_only & want)) {
			int r;
			if (mp_cuda(be)->graph_api) {
				r = graph_choose(be, op, a, want, x, w, y, stride, pad, *bf16);
			} else {
				if (describe(be, op, a, x, w, y, stride, pad, *bf16))
					return NULL;
				// the legacy calls add with dx's algorithm (beta 1)
				r = choose(be, op, a, (want & 7) | (want & BWD_DATA_ADD ? BWD_DATA : 0),
					   *bf16, x, w);
			}
			if (r < 0)
				return NULL;
			if (r == 0)
				return a;
		}
		*bf16 = 0; // the same shape in fp32 (choose fails rather than return 1 then)
	}
}

// ---- running them ---------------------------------------------------------------------
//
// On device pointers to x, w and y (or dx, dw, dy), with the current
// descriptors (legacy) or entry a's plans (graph API), alpha 1, beta 0.

static int run_fwd(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, void *x, void *w,
		   void *y)
{
	mp_cuda_state *s = mp_cuda(be);
	if (s->graph_api)
		return mp_cuda_graph_exec(be, op, a, DIR_FWD, x, w, y);
	const float one = 1.0f, zero = 0.0f;
	CUDNN_CHECK(op, cudnnConvolutionForward(s->cudnn, &one, s->xdesc, x, s->wdesc, w,
						s->convdesc, a->fwd, s->ws.p, s->ws.size, &zero,
						s->ydesc, y));
	return 0;
}

// add: dx += the gradient (beta 1)
static int run_bwd_data(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, void *dx,
			void *w, void *dy, int add)
{
	mp_cuda_state *s = mp_cuda(be);
	if (s->graph_api) // direction 3: the plan made with beta 1
		return mp_cuda_graph_exec(be, op, a, add ? 3 : DIR_BWD_DATA, dx, w, dy);
	const float one = 1.0f, zero = 0.0f;
	CUDNN_CHECK(op, cudnnConvolutionBackwardData(s->cudnn, &one, s->wdesc, w, s->ydesc, dy,
						     s->convdesc, a->bwd_data, s->ws.p,
						     s->ws.size, add ? &one : &zero, s->xdesc, dx));
	return 0;
}

static int run_bwd_filter(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, void *x,
			  void *dw, void *dy)
{
	mp_cuda_state *s = mp_cuda(be);
	if (s->graph_api)
		return mp_cuda_graph_exec(be, op, a, DIR_BWD_FILTER, x, dw, dy);
	const float one = 1.0f, zero = 0.0f;
	CUDNN_CHECK(op, cudnnConvolutionBackwardFilter(s->cudnn, &one, s->xdesc, x, s->ydesc, dy,
						       s->convdesc, a->bwd_filter, s->ws.p,
						       s->ws.size, &zero, s->wdesc, dw));
	return 0;
}

// ---- forward ------------------------------------------------------------------------

int mp_cuda_conv2d_forward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			   mp_tensor *y, int stride, int pad)
{
	static const char op[] = "conv2d_forward";
	mp_cuda_state *s = mp_cuda(be);
	int bf16;
	if (mp_cuda_conv_check_forward(be, op, x, w, y, stride, pad))
		return -1;
	mp_cuda_conv_algo *a = plan(be, op, x, w, y, stride, pad, FWD, &bf16);
	if (!a)
		return -1;
	if (set_math(be, op, a, a->fwd_math) || mp_cuda_grow(be, op, &s->ws, a->fwd_ws))
		return -1;
	void *xp, *wp, *yp;
	a->calls[DIR_FWD]++;
	// each part timed apart under MP_CUDA_PROFILE (prof_*)
	if (prof_begin(be, op) || operand_in(be, op, x, bf16, &s->bf_x, &xp) ||
	    filter_in(be, op, w, bf16, &wp) || operand_out(be, op, y, bf16, &s->bf_y, &yp) ||
	    prof_end(be, op, &a->ms_convert[DIR_FWD]))
		return -1;
	if (prof_begin(be, op) || run_fwd(be, op, a, xp, wp, yp) ||
	    prof_end_host(be, op, &a->ms_cudnn[DIR_FWD], &a->ms_host[DIR_FWD]))
		return -1;
	if (prof_begin(be, op) || operand_out_done(be, op, y, bf16, &s->bf_y) ||
	    prof_end(be, op, &a->ms_convert[DIR_FWD]))
		return -1;
	return 0;
}

// ---- backward -----------------------------------------------------------------------

// Where conv2d_backward_add's sum is made: by cuDNN in dx itself (beta
// 1), when dx is in the algorithm's form; by the conversion back, bf16
// NHWC added to float NCHW dx; or else (an fp32 algorithm for bf16 dx, or
// no graph API engine that adds) the gradient is made apart, in dx's
// form (dx_part), and added to dx.
enum { ADD_NONE, ADD_IN_CUDNN, ADD_IN_CONVERSION, ADD_APART };

static int backward(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride, int pad,
		    int add);

int mp_cuda_conv2d_backward(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
			    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
			    int pad)
{
	return backward(be, "conv2d_backward", x, w, dy, dx, dw, stride, pad, 0);
}

int mp_cuda_conv2d_backward_add(mp_backend *be, const mp_tensor *x, const mp_tensor *w,
				const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride,
				int pad)
{
	static const char op[] = "conv2d_backward_add";
	if (!dx)
		return mp_cpu_fail(be, "%s: no dx to add to", op);
	return backward(be, op, x, w, dy, dx, dw, stride, pad, 1);
}

static int backward(mp_backend *be, const char *op, const mp_tensor *x, const mp_tensor *w,
		    const mp_tensor *dy, mp_tensor *dx, mp_tensor *dw, int stride, int pad,
		    int add)
{
	mp_cuda_state *s = mp_cuda(be);
	int bf16;
	if (mp_cuda_conv_check_backward(be, op, x, w, dy, dx, dw, stride, pad))
		return -1;
	if (!dx && !dw)
		return 0;
	// the plan that adds (beta 1) where cuDNN writes dx in dx's own form;
	// whether it does is known only once the precision is: both, then
	mp_cuda_conv_algo *a = plan(be, op, x, w, dy, stride, pad,
				    (dx ? BWD_DATA : 0) | (dx && add ? BWD_DATA_ADD : 0) |
					    (dw ? BWD_FILTER : 0),
				    &bf16);
	if (!a)
		return -1;
	// dy, in the algorithm's form, stays in bf_y; dx is made in bf_x from
	// bf_w, then x goes into bf_x and dw is made in bf_w (one stream: each
	// step waits for the one before, so the buffers can be reused in turn).
	// (dy's conversion is counted with dx's, or dw's when dx is not wanted)
	void *dyp, *p, *wp;
	if (prof_begin(be, op) || operand_in(be, op, dy, bf16, &s->bf_y, &dyp) ||
	    prof_end(be, op, &a->ms_convert[dx ? DIR_BWD_DATA : DIR_BWD_FILTER]))
		return -1;
	if (dx) {
		a->calls[DIR_BWD_DATA]++;
		if (set_math(be, op, a, a->bwd_data_math) ||
		    mp_cuda_grow(be, op, &s->ws, a->bwd_data_ws))
			return -1;
		const int same_form = mp_cuda_is_bf16(dx) == bf16;
		const int how = !add ? ADD_NONE
			: same_form && !(s->graph_api && a->graph_no_add) ? ADD_IN_CUDNN
			: bf16 && !same_form ? ADD_IN_CONVERSION
			: ADD_APART;
		// ADD_APART: the gradient into part, shaped and stored as dx
		mp_tensor part = *dx, *out = dx;
		if (how == ADD_APART) {
			const size_t bytes = mp_tensor_count(dx) *
					     (mp_cuda_is_bf16(dx) ? sizeof(__nv_bfloat16) : sizeof(float));
			if (mp_cuda_grow(be, op, &s->dx_part, bytes))
				return -1;
			part.data = (float *)s->dx_part.p;
			out = &part;
		}
		if (prof_begin(be, op) || filter_in(be, op, w, bf16, &wp) ||
		    operand_out(be, op, out, bf16, &s->bf_x, &p) ||
		    prof_end(be, op, &a->ms_convert[DIR_BWD_DATA]))
			return -1;
		if (prof_begin(be, op) || run_bwd_data(be, op, a, p, wp, dyp, how == ADD_IN_CUDNN) ||
		    prof_end_host(be, op, &a->ms_cudnn[DIR_BWD_DATA],
				  &a->ms_host[DIR_BWD_DATA]))
			return -1;
		if (prof_begin(be, op))
			return -1;
		if (how == ADD_IN_CONVERSION) {
			if (mp_cuda_convert_add(be, op, dx->n, dx->c, dx->h * dx->w, s->bf_x.p,
						dx->data))
				return -1;
		} else if (operand_out_done(be, op, out, bf16, &s->bf_x) ||
			   (how == ADD_APART && be->ops->add(be, dx, &part, dx))) {
			return -1;
		}
		if (prof_end(be, op, &a->ms_convert[DIR_BWD_DATA]))
			return -1;
	}
	if (dw) {
		a->calls[DIR_BWD_FILTER]++;
		if (set_math(be, op, a, a->bwd_filter_math) ||
		    mp_cuda_grow(be, op, &s->ws, a->bwd_filter_ws))
			return -1;
		if (prof_begin(be, op) || operand_in(be, op, x, bf16, &s->bf_x, &p) ||
		    operand_out(be, op, dw, bf16, &s->bf_w, &wp) ||
		    prof_end(be, op, &a->ms_convert[DIR_BWD_FILTER]))
			return -1;
		if (prof_begin(be, op) || run_bwd_filter(be, op, a, p, wp, dyp) ||
		    prof_end_host(be, op, &a->ms_cudnn[DIR_BWD_FILTER],
				  &a->ms_host[DIR_BWD_FILTER]))
			return -1;
		if (prof_begin(be, op) || operand_out_done(be, op, dw, bf16, &s->bf_w) ||
		    prof_end(be, op, &a->ms_convert[DIR_BWD_FILTER]))
			return -1;
	}
	return 0;
}

void mp_cuda_conv_free(mp_cuda_state *s)
{
	for (int i = 0; i < s->nalgos; i++) {
		mp_cuda_conv_algo *a = &s->algos[i];
		mp_cuda_graph_free(a);
		if (a->xdesc)
			cudnnDestroyTensorDescriptor(a->xdesc);
		if (a->ydesc)
			cudnnDestroyTensorDescriptor(a->ydesc);
		if (a->wdesc)
			cudnnDestroyFilterDescriptor(a->wdesc);
		if (a->convdesc)
			cudnnDestroyConvolutionDescriptor(a->convdesc);
	}
	s->xdesc = s->ydesc = NULL;
	s->wdesc = NULL;
	s->convdesc = NULL;
	mp_cuda_buffer_free(&s->ws);
	mp_cuda_buffer_free(&s->bf_x);
	mp_cuda_buffer_free(&s->bf_y);
	mp_cuda_buffer_free(&s->bf_w);
	mp_cuda_buffer_free(&s->dx_part);
	free(s->algos);
	s->algos = NULL;
	s->nalgos = s->algos_cap = 0;
}
