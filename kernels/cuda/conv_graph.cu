// Convolutions through cuDNN's graph API (MP_CUDNN_API=graph): for each
// shape, precision and direction an execution plan is built once (a
// one-operation graph, the engines cuDNN's heuristics rank first, the
// first whose plan finalizes) and executed with cudnnBackendExecute
// afterwards. The legacy calls (conv.cu) choose an algorithm once too but
// rebuild their plan inside every call.
//
// The tensors are those conv.cu hands the legacy calls: float NCHW, or
// its bf16 NHWC copies (filters KRSC), described here by their strides.
// In fp32, engines that use tensor cores or convert their inputs down
// (TF32) are passed over, as CUDNN_FMA_MATH does in the legacy path; the
// backward directions prefer deterministic engines, in bf16 settling for
// another where cuDNN has none.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

#define GRAPH_CHECK(op, call)                                                         \
	do {                                                                          \
		cudnnStatus_t s_ = (call);                                            \
		if (s_ != CUDNN_STATUS_SUCCESS) {                                     \
			mp_cuda_fail_cudnn(be, op, #call, s_);                        \
			goto out;                                                     \
		}                                                                     \
	} while (0)

// GRAPH_CHECK for a helper that makes a descriptor: its *call names the
// cuDNN call that failed.
#define GRAPH_CHECK_MADE(op, call, name)                                              \
	do {                                                                          \
		cudnnStatus_t s_ = (call);                                            \
		if (s_ != CUDNN_STATUS_SUCCESS) {                                     \
			mp_cuda_fail_cudnn(be, op, name, s_);                         \
			goto out;                                                     \
		}                                                                     \
	} while (0)

enum { UID_X = 1, UID_W = 2, UID_Y = 3 };

// A finalized tensor descriptor for (n, c, h, w) in NCHW, or in NHWC
// (bf16; a filter's KRSC is the same layout); *call: the last call made.
static cudnnStatus_t make_tensor(cudnnBackendDescriptor_t *d, int64_t uid, const int dims4[4],
				 int bf16, const char **call)
{
	const int64_t n = dims4[0], c = dims4[1], h = dims4[2], w = dims4[3];
	const int64_t dims[4] = {n, c, h, w};
	const int64_t nchw[4] = {c * h * w, h * w, w, 1}, nhwc[4] = {c * h * w, 1, w * c, c};
	const cudnnDataType_t type = bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
	const int64_t align = 16;
	*call = "cudnnBackendCreateDescriptor";
	cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_TENSOR_DESCRIPTOR, d);
	if (st == CUDNN_STATUS_SUCCESS)
		*call = "cudnnBackendSetAttribute";
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1,
					      &type);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4,
					      dims);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4,
					      bf16 ? nhwc : nchw);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1,
					      &uid);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64,
					      1, &align);
	if (st == CUDNN_STATUS_SUCCESS) {
		*call = "cudnnBackendFinalize";
		st = cudnnBackendFinalize(*d);
	}
	return st;
}

static cudnnStatus_t make_conv(cudnnBackendDescriptor_t *d, int stride, int pad,
			       const char **call)
{
	const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
	const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
	const int64_t dims = 2, dil[2] = {1, 1}, str[2] = {stride, stride}, pads[2] = {pad, pad};
	*call = "cudnnBackendCreateDescriptor";
	cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, d);
	if (st == CUDNN_STATUS_SUCCESS)
		*call = "cudnnBackendSetAttribute";
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
					      CUDNN_TYPE_DATA_TYPE, 1, &comp);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
					      CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
					      CUDNN_TYPE_INT64, 1, &dims);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64,
					      2, dil);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
					      CUDNN_TYPE_INT64, 2, str);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
					      CUDNN_TYPE_INT64, 2, pads);
	if (st == CUDNN_STATUS_SUCCESS)
		st = cudnnBackendSetAttribute(*d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
					      CUDNN_TYPE_INT64, 2, pads);
	if (st == CUDNN_STATUS_SUCCESS) {
		*call = "cudnnBackendFinalize";
		st = cudnnBackendFinalize(*d);
	}
	return st;
}

// The operation's attributes for direction dir: its three tensors, the
// convolution, alpha and beta.
struct op_names {
	cudnnBackendDescriptorType_t type;
	cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
};

static const op_names OPS[3] = {
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
	{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
	 CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
};

// Does engine config cfg suit: no tensor cores or down-converted inputs in
// fp32, deterministic when asked?
static int suits(cudnnBackendDescriptor_t cfg, int bf16, int want_deterministic)
{
	cudnnBackendDescriptor_t engine = NULL;
	int ok = 0;
	cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
	int64_t count = 0;
	if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine) !=
		    CUDNN_STATUS_SUCCESS ||
	    cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE,
				     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &count,
				     &engine) != CUDNN_STATUS_SUCCESS ||
	    cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
				     CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT,
				     &count, notes) != CUDNN_STATUS_SUCCESS)
		goto out;
	ok = 1;
	for (int64_t i = 0; i < count; i++) {
		if (!bf16 && (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE ||
			      notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))
			ok = 0;
		if (want_deterministic && notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC)
			ok = 0;
	}
out:
	if (engine)
		cudnnBackendDestroyDescriptor(engine);
	return ok;
}

// Builds entry a's plan for direction dir: 0, 1 when no engine suits (bf16
// then falls back to fp32, as conv.cu's choose does), -1 on an error.
int mp_cuda_graph_plan(mp_backend *be, const char *op, mp_cuda_conv_algo *a, int dir,
		       const mp_tensor *x, const mp_tensor *w, const mp_tensor *y, int stride,
		       int pad, int bf16)
{
	mp_cuda_state *s = mp_cuda(be);
	if (a->gplan[dir])
		return 0;
	cudnnBackendDescriptor_t tx = NULL, tw = NULL, ty = NULL, conv = NULL, oper = NULL,
				 graph = NULL, heur = NULL, plan = NULL;
	cudnnBackendDescriptor_t *cfgs = NULL;
	int64_t ncfg = 0, nmade = 0, chosen = -1; // configs: usable, created
	int rc = -1;
	const int dx[4] = {x->n, x->c, x->h, x->w}, dw[4] = {w->n, w->c, w->h, w->w},
		  dy[4] = {y->n, y->c, y->h, y->w};
	// direction 3: dx's plan with beta 1, adding the gradient to dx
	const float one = 1.0f, beta = dir == 3 ? 1.0f : 0.0f;
	const op_names *names = &OPS[dir == 3 ? 1 : dir];
	const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
	const char *call = NULL;
	GRAPH_CHECK_MADE(op, make_tensor(&tx, UID_X, dx, bf16, &call), call);
	GRAPH_CHECK_MADE(op, make_tensor(&tw, UID_W, dw, bf16, &call), call);
	GRAPH_CHECK_MADE(op, make_tensor(&ty, UID_Y, dy, bf16, &call), call);
	GRAPH_CHECK_MADE(op, make_conv(&conv, stride, pad, &call), call);
	GRAPH_CHECK(op, cudnnBackendCreateDescriptor(names->type, &oper));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->x, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
						 &tx));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->w, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
						 &tw));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
						 &ty));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->conv, CUDNN_TYPE_BACKEND_DESCRIPTOR,
						 1, &conv));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->alpha, CUDNN_TYPE_FLOAT, 1, &one));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(oper, names->beta, CUDNN_TYPE_FLOAT, 1, &beta));
	GRAPH_CHECK(op, cudnnBackendFinalize(oper));
	GRAPH_CHECK(op, cudnnBackendCreateDescriptor(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS,
						 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &oper));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
						 CUDNN_TYPE_HANDLE, 1, &s->cudnn));
	GRAPH_CHECK(op, cudnnBackendFinalize(graph));
	GRAPH_CHECK(op, cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
						 CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE,
						 CUDNN_TYPE_HEUR_MODE, 1, &mode));
	GRAPH_CHECK(op, cudnnBackendFinalize(heur));
	GRAPH_CHECK(op, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
						 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg, NULL));
	if (ncfg > 0) {
		cfgs = (cudnnBackendDescriptor_t *)calloc((size_t)ncfg, sizeof *cfgs);
		if (!cfgs) {
			mp_cpu_fail(be, "%s: out of memory", op);
			goto out;
		}
		for (nmade = 0; nmade < ncfg; nmade++)
			GRAPH_CHECK(op, cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
								     &cfgs[nmade]));
		int64_t got = 0;
		GRAPH_CHECK(op, cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
							 CUDNN_TYPE_BACKEND_DESCRIPTOR, ncfg, &got,
							 cfgs));
		ncfg = got < ncfg ? got : ncfg;
	}
	// the first suitable engine whose plan finalizes; in bf16 a
	// nondeterministic one where no deterministic one does
	for (int pass = 0; pass < 2 && !plan; pass++) {
		const int want_det = dir != 0 && s->deterministic && pass == 0;
		if (pass == 1 && !(bf16 && dir != 0 && s->deterministic))
			break;
		for (int64_t i = 0; i < ncfg && !plan; i++) {
			if (!suits(cfgs[i], bf16, want_det))
				continue;
			cudnnBackendDescriptor_t p = NULL;
			if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p) !=
			    CUDNN_STATUS_SUCCESS)
				continue;
			if (cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
						     CUDNN_TYPE_HANDLE, 1,
						     &s->cudnn) == CUDNN_STATUS_SUCCESS &&
			    cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
						     CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
						     &cfgs[i]) == CUDNN_STATUS_SUCCESS &&
			    cudnnBackendFinalize(p) == CUDNN_STATUS_SUCCESS) {
				plan = p;
				chosen = i;
			} else
				cudnnBackendDestroyDescriptor(p);
		}
	}
	if (!plan) {
		// dx added (3) has a fallback in either precision (conv.cu)
		rc = bf16 || dir == 3 ? 1 : mp_cpu_fail(be, "%s: cuDNN's graph API offers no fp32 engine for x %dx%dx%dx%d, w %dx%dx%dx%d",
					    op, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
		goto out;
	}
	{
		int64_t ws = 0, n = 0;
		GRAPH_CHECK(op, cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
							 CUDNN_TYPE_INT64, 1, &n, &ws));
		a->gplan[dir] = plan;
		a->gws[dir] = (size_t)ws;
		plan = NULL;
		// kept while the plan lives, which was made from them
		void **keep = a->gkeep[dir];
		keep[0] = tx;
		keep[1] = tw;
		keep[2] = ty;
		keep[3] = conv;
		keep[4] = oper;
		keep[5] = graph;
		keep[6] = heur;
		keep[7] = cfgs[chosen];
		tx = tw = ty = conv = oper = graph = heur = NULL;
		cfgs[chosen] = NULL;
	}
	rc = 0;
out:
	if (plan)
		cudnnBackendDestroyDescriptor(plan);
	// all that were created, also those past the count the heuristics filled
	for (int64_t i = 0; cfgs && i < nmade; i++)
		if (cfgs[i])
			cudnnBackendDestroyDescriptor(cfgs[i]);
	free(cfgs);
	cudnnBackendDescriptor_t all[] = {heur, graph, oper, conv, ty, tw, tx};
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		if (all[i])
			cudnnBackendDestroyDescriptor(all[i]);
	return rc;
}

// Runs entry a's plan for direction dir on device pointers x, w, y (dx,
// dw, dy as the direction has them) with the state's workspace.
int mp_cuda_graph_exec(mp_backend *be, const char *op, const mp_cuda_conv_algo *a, int dir,
		       void *x, void *w, void *y)
{
	mp_cuda_state *s = mp_cuda(be);
	cudnnBackendDescriptor_t pack = NULL;
	int rc = -1;
	const int64_t uids[3] = {UID_X, UID_W, UID_Y};
	void *ptrs[3] = {x, w, y};
	void *ws = s->ws.p;
	if (!a->gplan[dir])
		return mp_cpu_fail(be, "%s: no execution plan", op);
	GRAPH_CHECK(op, cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
						 CUDNN_TYPE_INT64, 3, uids));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
						 CUDNN_TYPE_VOID_PTR, 3, ptrs));
	GRAPH_CHECK(op, cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
						 CUDNN_TYPE_VOID_PTR, 1, &ws));
	GRAPH_CHECK(op, cudnnBackendFinalize(pack));
	GRAPH_CHECK(op, cudnnBackendExecute(s->cudnn, (cudnnBackendDescriptor_t)a->gplan[dir], pack));
	rc = 0;
out:
	if (pack)
		cudnnBackendDestroyDescriptor(pack);
	return rc;
}

void mp_cuda_graph_free(mp_cuda_conv_algo *a)
{
	for (int d = 0; d < 4; d++) {
		if (a->gplan[d]) {
			cudnnBackendDestroyDescriptor((cudnnBackendDescriptor_t)a->gplan[d]);
			a->gplan[d] = NULL;
		}
		for (int i = 0; i < 8; i++)
			if (a->gkeep[d][i]) {
				cudnnBackendDestroyDescriptor((cudnnBackendDescriptor_t)a->gkeep[d][i]);
				a->gkeep[d][i] = NULL;
			}
	}
}
