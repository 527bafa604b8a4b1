#include "mp_resnet.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	mp_param *w;
	int cin, cout, k, stride, pad;
	mp_tensor prep; /* inference form with its BN (conv_bn_prepare), or empty */
} conv_layer;

typedef struct {
	mp_param *gamma, *beta, *mean, *var;
	mp_bn bn;
	mp_tensor save_mean, save_invstd;
} bn_layer;

/* What a recorded training step is fixed to besides its input buffer: a
 * step of another shape is recorded anew, after one step op by op. */
typedef struct {
	int n, h, w;
	float smoothing, momentum, wd;
	unsigned long layout;
	int ahead; /* its batch was copied ahead (mp_resnet_input_ready): no upload in it */
	int plan;  /* its input slot holds a plan (mp_resnet_train_start_plan) */
} step_shape;

/* A kept recording: the graph, the input slot it reads, when last used. */
typedef struct {
	void *graph; /* NULL: an empty entry */
	const float *images;
	unsigned long used;
} recording;

#define STEP_RECORDINGS 4 /* kept at once: one per input slot, and spares */

/* The training step as backend graphs (graph_begin ... graph_end), with
 * the host memory they read and write (from host_alloc), and the step
 * started by mp_resnet_train_start and not yet finished. */
typedef struct {
	recording rec[STEP_RECORDINGS];
	step_shape shape[STEP_RECORDINGS]; /* what each was recorded for */
	unsigned long tick;
	step_shape last_plain;	/* the last step run op by op: recording needs one */
	int have_last_plain;
	int off;		/* recording failed (or switched off): op by op */
	long recorded, launched;
	float *inputs[MP_RESNET_INPUT_SLOTS]; /* mp_resnet_input */
	size_t input_cap[MP_RESNET_INPUT_SLOTS]; /* floats */
	float *probs;		/* n x classes, written by the step */
	size_t probs_cap;
	struct step_scalars {
		double loss;	/* written by the step */
		float lr;	/* read by the step */
	} *scalars;
	int pending;		/* STEP_NONE, STEP_DONE or STEP_LAUNCHED */
	int pending_n;
	int pending_slot;	/* the input slot the step reads, or -1 */
	/* mp_resnet_input_ready: slot i's batch copied to the device ahead
	 * (upload_ahead) into ahead[i]; the next step from that slot reads it
	 * there instead of uploading the slot, then it counts as used */
	mp_tensor ahead[MP_RESNET_INPUT_SLOTS];
	size_t ahead_cap[MP_RESNET_INPUT_SLOTS];
	int ahead_valid[MP_RESNET_INPUT_SLOTS];
} step_graph;

enum { STEP_NONE, STEP_DONE, STEP_LAUNCHED };

/* The inference forward pass and the logits' download as graphs
 * (mp_resnet_predict), one per shape: the view sizes of a multiscale
 * evaluation take turns in the same buffers, reshaped in place. */
typedef struct {
	int n, h, w;
	unsigned long layout, prep_gen;
} predict_shape;

#define PREDICT_RECORDINGS 8

typedef struct {
	recording rec[PREDICT_RECORDINGS];
	predict_shape shape[PREDICT_RECORDINGS];
	unsigned long tick;
	/* shapes that ran op by op with these buffers and weights: recording
	 * needs one */
	predict_shape warm[PREDICT_RECORDINGS];
	int nwarm, warm_next;
	float *logits; /* n x classes, written by the graphs */
	size_t logits_cap;
	long recorded, launched;
	int off; /* recording failed (or switched off): op by op; training's are apart */
} predict_graph;

/* Activations of one block for the current batch shape, and their grads. */
typedef struct {
	int cin, cout, stride, proj;
	conv_layer conv1, conv2, sc_conv;
	bn_layer bn1, bn2, sc_bn;
	const mp_tensor *x;			/* the input: the previous output */
	mp_tensor c1, b1, r1, c2, b2, scc, sc, sum, out;
	/* gradients: views of the network's grad_pool buffers, not owned */
	mp_tensor g_sum, g_c2, g_r1, g_b1, g_c1, g_scc, g_main, g_side, g_in;
} block;

/* A block's activation gradients live only while its backward pass runs,
 * so blocks of one shape share them: one buffer per role and shape (the
 * input's gradient in two, alternating, as a block reads the next one's
 * while it writes its own), not one per block (about half of training's
 * memory). */
enum { G_SUM, G_C2, G_R1, G_B1, G_C1, G_SCC, G_MAIN, G_SIDE, G_IN, G_ROLES = G_IN + 2 };
typedef struct {
	int c, h, w;
	mp_tensor t[G_ROLES];
} grad_pool;
#define MP_GRAD_POOLS (2 * MP_MAX_STAGES + 2)

struct mp_resnet {
	mp_resnet_config cfg;
	mp_backend *be;
	mp_param *params;
	int nparams, cap;
	conv_layer stem_conv;
	bn_layer stem_bn;
	block *blocks;
	int nblocks;
	mp_param *fc_w;
	bn_layer fc_bn;
	/* activations outside the blocks */
	int n, h, w; /* batch shape the buffers are sized for */
	int have_grads; /* the gradient buffers exist for that shape (first backward) */
	/* Evaluation keeps no layer's output for a backward pass: the blocks
	 * of a stage take turns with five buffers of the stage's shape. */
	int lean;
	mp_tensor slots[MP_MAX_STAGES][5];
	/* elements allocated for each slot: another image size reshapes a
	 * slot in place when it fits (evaluation at several scales) */
	size_t slot_cap[MP_MAX_STAGES][5];
	mp_tensor img, stem_c, stem_b, stem_r, pool, fc, logits, probs;
	/* the stem's input in the last forward pass: img, or a batch copied ahead */
	const mp_tensor *in;
	mp_tensor g_stem_b, g_stem_c, g_last, g_pool, g_fc, g_logits;
	grad_pool gpools[MP_GRAD_POOLS];
	int ngpools;
	int32_t *labels; /* from host_alloc: a recorded step reads them */
	size_t labels_cap;
	size_t img_cap; /* elements img's memory holds */
	/* the training set kept decoded (mp_resnet_keep_pixels), and the
	 * device's copy of a batch's plan; input_is_plan while a step from
	 * a plan is started */
	mp_tensor pixels, plan_dev;
	uint64_t pixel_bytes;
	size_t plan_cap;
	int taps, input_is_plan;
	float smoothing;
	int have_forward, have_loss, train;
	mp_tensor lr; /* SGD's rate, (1, 1, 1, 1) */
	/* Bumped by every (re)allocation of an activation, gradient or
	 * momentum buffer: a recorded step uses the buffers it was recorded
	 * with. */
	unsigned long layout;
	unsigned long prep_gen; /* bumped by every preparation of the inference forms */
	step_graph graph;
	predict_graph pgraph;
	/* The convolutions' inference forms are current: cleared by every
	 * change of a parameter or running statistic (upload, init, SGD, a
	 * training forward pass). */
	int prepared;
};

void mp_resnet_config_default(mp_resnet_config *c)
{
	memset(c, 0, sizeof *c);
	c->depth = 9;
	c->stages = 4;
	c->widths[0] = 32;
	c->widths[1] = 64;
	c->widths[2] = 128;
	c->widths[3] = 256;
	c->stem_kernel = 3;
	c->stem_stride = 2;
	c->shortcut = 'A';
	c->classes = 100;
	c->fc_bn = 1;
	c->bn_eps = 1e-3f;
	c->bn_momentum = 0.9f;
	c->input_size = 112;
}

int mp_resnet_config_check(const mp_resnet_config *c, mp_error *e)
{
	if (c->depth < 1 || c->depth > 1000)
		return mp_seterr(e, "depth %d is outside 1..1000", c->depth);
	if (c->stages < 1 || c->stages > MP_MAX_STAGES)
		return mp_seterr(e, "%d stages is outside 1..%d", c->stages, MP_MAX_STAGES);
	for (int s = 0; s < c->stages; s++) {
		if (c->widths[s] < 1 || c->widths[s] > 65536)
			return mp_seterr(e, "width %d of stage %d is outside 1..65536",
					 c->widths[s], s);
		if (c->shortcut == 'A' && s > 0 && c->widths[s] < c->widths[s - 1])
			return mp_seterr(e, "shortcut A needs widths that do not shrink "
					 "(stage %d: %d after %d)", s, c->widths[s], c->widths[s - 1]);
	}
	if (c->stem_kernel < 1 || c->stem_kernel > 15 || c->stem_kernel % 2 == 0)
		return mp_seterr(e, "stem kernel %d is not odd in 1..15", c->stem_kernel);
	if (c->stem_stride < 1 || c->stem_stride > 8)
		return mp_seterr(e, "stem stride %d is outside 1..8", c->stem_stride);
	if (c->shortcut != 'A' && c->shortcut != 'B')
		return mp_seterr(e, "shortcut must be A or B");
	if (c->classes < 2 || c->classes > 65536)
		return mp_seterr(e, "%d classes is outside 2..65536", c->classes);
	if (!(c->bn_eps > 0 && c->bn_eps < 1))
		return mp_seterr(e, "BN eps %g is outside (0, 1)", (double)c->bn_eps);
	if (!(c->bn_momentum >= 0 && c->bn_momentum < 1))
		return mp_seterr(e, "BN momentum %g is outside [0, 1)", (double)c->bn_momentum);
	if (c->input_size < 1 || c->input_size > 4096)
		return mp_seterr(e, "input size %d is outside 1..4096", c->input_size);
	return 0;
}

/* Follows mp_resnet_new: a conv is cout x cin x k x k, a BN four vectors. */
uint64_t mp_resnet_config_scalars(const mp_resnet_config *c)
{
	uint64_t n = (uint64_t)c->widths[0] * 3 * c->stem_kernel * c->stem_kernel +
		     4 * (uint64_t)c->widths[0];
	uint64_t cin = (uint64_t)c->widths[0];
	for (int s = 0; s < c->stages; s++)
		for (int b = 0; b < c->depth; b++) {
			uint64_t cout = (uint64_t)c->widths[s];
			int stride = s > 0 && b == 0 ? 2 : 1;
			n += cout * cin * 9 + cout * cout * 9 + 8 * cout;
			if (c->shortcut == 'B' && (stride != 1 || cin != cout))
				n += cout * cin + 4 * cout;
			cin = cout;
		}
	n += (uint64_t)c->classes * cin;
	if (c->fc_bn)
		n += 4 * (uint64_t)c->classes;
	return n;
}

/* ---- parameters --------------------------------------------------------- */

static mp_param *add_param(mp_resnet *net, int kind, int ndim, const int *shape,
			   mp_error *e, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static mp_param *add_param(mp_resnet *net, int kind, int ndim, const int *shape,
			   mp_error *e, const char *fmt, ...)
{
	if (net->nparams == net->cap) {
		/* params are referenced by pointer: the array is sized up front */
		mp_seterr(e, "internal: parameter table full");
		return NULL;
	}
	mp_param *p = &net->params[net->nparams++];
	memset(p, 0, sizeof *p);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->name, sizeof p->name, fmt, ap);
	va_end(ap);
	p->kind = kind;
	p->ndim = ndim;
	int dims[4] = {1, 1, 1, 1};
	for (int i = 0; i < ndim; i++)
		dims[i] = p->shape[i] = shape[i];
	mp_backend *be = net->be;
	/* the gradient and momentum come with the first need (train_state):
	 * evaluation never has them */
	if (be->ops->alloc(be, &p->value, dims[0], dims[1], dims[2], dims[3]) < 0)
		goto fail;
	return p;
fail:
	mp_seterr(e, "%s: %s", p->name, mp_backend_error(be));
	return NULL;
}

static int make_conv(mp_resnet *net, conv_layer *l, int cin, int cout, int k, int stride,
		     mp_error *e, const char *prefix)
{
	int shape[4] = {cout, cin, k, k};
	l->cin = cin;
	l->cout = cout;
	l->k = k;
	l->stride = stride;
	l->pad = k / 2;
	l->w = add_param(net, MP_PARAM_WEIGHT, 4, shape, e, "%s.weight", prefix);
	return l->w ? 0 : -1;
}

static int make_bn(mp_resnet *net, bn_layer *l, int c, mp_error *e, const char *prefix)
{
	int shape[1] = {c};
	if (!(l->gamma = add_param(net, MP_PARAM_WEIGHT, 1, shape, e, "%s.weight", prefix)) ||
	    !(l->beta = add_param(net, MP_PARAM_WEIGHT, 1, shape, e, "%s.bias", prefix)) ||
	    !(l->mean = add_param(net, MP_PARAM_BUFFER, 1, shape, e, "%s.running_mean", prefix)) ||
	    !(l->var = add_param(net, MP_PARAM_BUFFER, 1, shape, e, "%s.running_var", prefix)))
		return -1;
	mp_backend *be = net->be;
	if (be->ops->alloc(be, &l->save_mean, c, 1, 1, 1) < 0 ||
	    be->ops->alloc(be, &l->save_invstd, c, 1, 1, 1) < 0)
		return mp_seterr(e, "%s: %s", prefix, mp_backend_error(be));
	l->bn.gamma = &l->gamma->value;
	l->bn.beta = &l->beta->value;
	l->bn.running_mean = &l->mean->value;
	l->bn.running_var = &l->var->value;
	l->bn.save_mean = &l->save_mean;
	l->bn.save_invstd = &l->save_invstd;
	l->bn.eps = net->cfg.bn_eps;
	l->bn.momentum = net->cfg.bn_momentum;
	return 0;
}

mp_resnet *mp_resnet_new(const mp_resnet_config *c, mp_backend *be, mp_error *e)
{
	if (mp_resnet_config_check(c, e) < 0)
		return NULL;
	mp_resnet *net = calloc(1, sizeof *net);
	if (!net) {
		mp_seterr(e, "out of memory");
		return NULL;
	}
	net->cfg = *c;
	net->be = be;
	net->nblocks = c->stages * c->depth;
	/* stem 5, per block up to 15, head 5 */
	net->cap = 5 + 15 * net->nblocks + 5;
	net->params = calloc((size_t)net->cap, sizeof *net->params);
	net->blocks = calloc((size_t)net->nblocks, sizeof *net->blocks);
	if (!net->params || !net->blocks) {
		mp_seterr(e, "out of memory");
		goto fail;
	}
	if (make_conv(net, &net->stem_conv, 3, c->widths[0], c->stem_kernel, c->stem_stride, e,
		      "stem.conv") < 0 ||
	    make_bn(net, &net->stem_bn, c->widths[0], e, "stem.bn") < 0)
		goto fail;
	int cin = c->widths[0];
	for (int s = 0; s < c->stages; s++) {
		for (int b = 0; b < c->depth; b++) {
			block *bl = &net->blocks[s * c->depth + b];
			char pre[64];
			bl->cin = cin;
			bl->cout = c->widths[s];
			bl->stride = (s > 0 && b == 0) ? 2 : 1;
			bl->proj = c->shortcut == 'B' && (bl->stride != 1 || bl->cin != bl->cout);
			snprintf(pre, sizeof pre, "stages.%d.blocks.%d", s, b);
			char n1[96], n2[96], n3[96], n4[96], n5[96], n6[96];
			snprintf(n1, sizeof n1, "%s.conv1", pre);
			snprintf(n2, sizeof n2, "%s.bn1", pre);
			snprintf(n3, sizeof n3, "%s.conv2", pre);
			snprintf(n4, sizeof n4, "%s.bn2", pre);
			snprintf(n5, sizeof n5, "%s.shortcut.conv", pre);
			snprintf(n6, sizeof n6, "%s.shortcut.bn", pre);
			if (make_conv(net, &bl->conv1, cin, bl->cout, 3, bl->stride, e, n1) < 0 ||
			    make_bn(net, &bl->bn1, bl->cout, e, n2) < 0 ||
			    make_conv(net, &bl->conv2, bl->cout, bl->cout, 3, 1, e, n3) < 0 ||
			    make_bn(net, &bl->bn2, bl->cout, e, n4) < 0)
				goto fail;
			if (bl->proj &&
			    (make_conv(net, &bl->sc_conv, cin, bl->cout, 1, bl->stride, e, n5) < 0 ||
			     make_bn(net, &bl->sc_bn, bl->cout, e, n6) < 0))
				goto fail;
			cin = bl->cout;
		}
	}
	int fshape[2] = {c->classes, cin};
	if (!(net->fc_w = add_param(net, MP_PARAM_WEIGHT, 2, fshape, e, "fc.weight")))
		goto fail;
	if (c->fc_bn && make_bn(net, &net->fc_bn, c->classes, e, "fc_bn") < 0)
		goto fail;
	return net;
fail:
	mp_resnet_free(net);
	return NULL;
}

static void release(mp_backend *be, mp_tensor *t)
{
	if (t->data)
		be->ops->release(be, t);
	memset(t, 0, sizeof *t);
}

static void release_bn(mp_backend *be, bn_layer *l)
{
	release(be, &l->save_mean);
	release(be, &l->save_invstd);
}

static void release_activations(mp_resnet *net)
{
	mp_backend *be = net->be;
	mp_tensor *outer[] = {&net->img, &net->stem_c, &net->stem_b, &net->stem_r, &net->pool,
			      &net->fc, &net->logits, &net->probs,
			      &net->g_stem_b, &net->g_stem_c, &net->g_last, &net->g_pool, &net->g_fc,
			      &net->g_logits};
	for (size_t i = 0; i < sizeof outer / sizeof outer[0]; i++)
		release(be, outer[i]);
	for (int i = 0; net->blocks && i < net->nblocks; i++) {
		block *b = &net->blocks[i];
		mp_tensor *t[] = {&b->c1, &b->b1, &b->r1, &b->c2, &b->b2, &b->scc, &b->sc,
				  &b->sum, &b->out};
		for (size_t j = 0; j < sizeof t / sizeof t[0]; j++)
			release(be, t[j]);
		mp_tensor *views[] = {&b->g_sum, &b->g_c2, &b->g_r1, &b->g_b1, &b->g_c1,
				      &b->g_scc, &b->g_main, &b->g_side, &b->g_in};
		for (size_t j = 0; j < sizeof views / sizeof views[0]; j++)
			memset(views[j], 0, sizeof *views[j]);
	}
	for (int i = 0; i < net->ngpools; i++)
		for (int r = 0; r < G_ROLES; r++)
			release(be, &net->gpools[i].t[r]);
	net->ngpools = 0;
	for (int st = 0; st < MP_MAX_STAGES; st++)
		for (int k = 0; k < 5; k++) {
			release(be, &net->slots[st][k]);
			net->slot_cap[st][k] = 0;
		}
	net->img_cap = 0;
	net->n = net->h = net->w = 0;
	net->have_grads = net->lean = 0;
	net->layout++;
}

/* Frees the count entries of rec that read images, or all when NULL. */
static void drop_recordings(mp_backend *be, recording *rec, int count, const float *images)
{
	for (int i = 0; i < count; i++)
		if (rec[i].graph && (!images || rec[i].images == images)) {
			be->ops->graph_free(be, rec[i].graph);
			rec[i].graph = NULL;
		}
}

/* An entry of rec to record into: a free one, else the least recently
 * used, whose graph goes. */
static int free_entry(mp_backend *be, recording *rec, int count)
{
	int r = 0;
	for (int i = 0; i < count; i++) {
		if (!rec[i].graph) {
			r = i;
			break;
		}
		if (rec[i].used < rec[r].used)
			r = i;
	}
	drop_recordings(be, rec + r, 1, NULL);
	return r;
}

/* Frees the recordings, the training steps' and the inference passes',
 * that read the input buffer images, or all of them when images is NULL. */
static void free_recordings_of(mp_resnet *net, const float *images)
{
	drop_recordings(net->be, net->graph.rec, STEP_RECORDINGS, images);
	drop_recordings(net->be, net->pgraph.rec, PREDICT_RECORDINGS, images);
}

static void free_recordings(mp_resnet *net)
{
	free_recordings_of(net, NULL);
}

static void release_graph(mp_resnet *net)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	if (g->pending == STEP_LAUNCHED)
		be->ops->graph_wait(be); /* it writes host memory freed next */
	g->pending = STEP_NONE;
	free_recordings(net);
	for (int i = 0; i < MP_RESNET_INPUT_SLOTS; i++) {
		mp_backend_host_free(be, g->inputs[i]);
		g->inputs[i] = NULL;
		g->input_cap[i] = 0;
		release(be, &g->ahead[i]);
		g->ahead_cap[i] = 0;
		g->ahead_valid[i] = 0;
	}
	mp_backend_host_free(be, g->probs);
	mp_backend_host_free(be, g->scalars);
	g->probs = NULL;
	g->scalars = NULL;
	g->probs_cap = 0;
	predict_graph *pg = &net->pgraph;
	mp_backend_host_free(be, pg->logits);
	pg->logits = NULL;
	pg->logits_cap = 0;
}

void mp_resnet_free(mp_resnet *net)
{
	if (!net)
		return;
	mp_backend *be = net->be;
	release_activations(net);
	for (int i = 0; i < net->nparams; i++) {
		release(be, &net->params[i].value);
		release(be, &net->params[i].grad);
		release(be, &net->params[i].momentum);
	}
	release_bn(be, &net->stem_bn);
	release(be, &net->stem_conv.prep);
	for (int i = 0; net->blocks && i < net->nblocks; i++) {
		release(be, &net->blocks[i].conv1.prep);
		release(be, &net->blocks[i].conv2.prep);
		release(be, &net->blocks[i].sc_conv.prep);
		release_bn(be, &net->blocks[i].bn1);
		release_bn(be, &net->blocks[i].bn2);
		release_bn(be, &net->blocks[i].sc_bn);
	}
	release_bn(be, &net->fc_bn);
	release(be, &net->lr);
	release(be, &net->pixels);
	release(be, &net->plan_dev);
	release_graph(net);
	free(net->params);
	free(net->blocks);
	mp_backend_host_free(be, net->labels);
	free(net);
}

const mp_resnet_config *mp_resnet_cfg(const mp_resnet *net)
{
	return &net->cfg;
}

int mp_resnet_param_count(const mp_resnet *net)
{
	return net->nparams;
}

mp_param *mp_resnet_param(mp_resnet *net, int i)
{
	return i >= 0 && i < net->nparams ? &net->params[i] : NULL;
}

mp_param *mp_resnet_find(mp_resnet *net, const char *name)
{
	for (int i = 0; i < net->nparams; i++)
		if (!strcmp(net->params[i].name, name))
			return &net->params[i];
	return NULL;
}

uint64_t mp_resnet_num_weights(const mp_resnet *net)
{
	uint64_t n = 0;
	for (int i = 0; i < net->nparams; i++)
		if (net->params[i].kind == MP_PARAM_WEIGHT)
			n += mp_tensor_count(&net->params[i].value);
	return n;
}

static int conv_out(int in, int k, int stride, int pad)
{
	return (in + 2 * pad - k) / stride + 1;
}

double mp_resnet_flops(const mp_resnet *net, int size)
{
	const conv_layer *sc = &net->stem_conv;
	int h = conv_out(size, sc->k, sc->stride, sc->pad);
	double f = 2.0 * sc->cout * sc->cin * sc->k * sc->k * (double)h * h;
	for (int i = 0; i < net->nblocks; i++) {
		const block *b = &net->blocks[i];
		int ho = conv_out(h, 3, b->stride, 1);
		f += 2.0 * b->cout * b->cin * 9 * (double)ho * ho;
		f += 2.0 * b->cout * b->cout * 9 * (double)ho * ho;
		if (b->proj)
			f += 2.0 * b->cout * b->cin * (double)ho * ho;
		h = ho;
	}
	f += 2.0 * net->fc_w->shape[0] * net->fc_w->shape[1];
	return f;
}

int mp_resnet_train_state(mp_resnet *net, mp_error *e)
{
	mp_backend *be = net->be;
	for (int i = 0; i < net->nparams; i++) {
		mp_param *p = &net->params[i];
		if (p->kind != MP_PARAM_WEIGHT || p->grad.data)
			continue;
		net->layout++;
		const mp_tensor *v = &p->value;
		if (be->ops->alloc(be, &p->grad, v->n, v->c, v->h, v->w) < 0 ||
		    be->ops->alloc(be, &p->momentum, v->n, v->c, v->h, v->w) < 0 ||
		    be->ops->fill(be, &p->grad, 0) < 0 || be->ops->fill(be, &p->momentum, 0) < 0) {
			mp_seterr(e, "%s: %s", p->name, mp_backend_error(be));
			release(be, &p->grad);
			release(be, &p->momentum);
			return -1;
		}
	}
	return 0;
}

int mp_resnet_download(mp_resnet *net, const mp_tensor *t, float *host, mp_error *e)
{
	if (!t->data)
		return mp_seterr(e, "no such buffer yet (gradients and momentum come with "
				    "mp_resnet_train_state)");
	if (net->be->ops->download(net->be, t, host) < 0)
		return mp_seterr(e, "%s", mp_backend_error(net->be));
	return 0;
}

/* A launched step's graph still reads and writes the network's tensors:
 * the calls that touch them wait for mp_resnet_train_finish. */
static int step_running(const mp_resnet *net, mp_error *e)
{
	if (net->graph.pending == STEP_LAUNCHED)
		return mp_seterr(e, "a training step is running (mp_resnet_train_finish first)");
	return 0;
}

int mp_resnet_upload(mp_resnet *net, mp_tensor *t, const float *host, mp_error *e)
{
	if (step_running(net, e) < 0)
		return -1;
	net->prepared = 0;
	if (!t->data && mp_resnet_train_state(net, e) < 0)
		return -1;
	if (net->be->ops->upload(net->be, t, host) < 0)
		return mp_seterr(e, "%s", mp_backend_error(net->be));
	return 0;
}

/* ---- initialisation ----------------------------------------------------- */

/* Standard normal by Box-Muller in double, rounded to float: the same
 * values wherever libm rounds log and cos the same (glibc does). */
static double gaussian(mp_rng *r)
{
	double u1 = 1.0 - mp_rng_uniform(r); /* (0, 1]: log is finite */
	double u2 = mp_rng_uniform(r);
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int mp_resnet_init(mp_resnet *net, uint64_t seed, mp_error *e)
{
	mp_rng r;
	mp_rng_seed(&r, seed);
	mp_backend *be = net->be;
	net->prepared = 0;
	if (mp_resnet_train_state(net, e) < 0)
		return -1;
	for (int i = 0; i < net->nparams; i++) {
		mp_param *p = &net->params[i];
		size_t n = mp_tensor_count(&p->value);
		float *host = malloc(n * sizeof *host);
		if (!host)
			return mp_seterr(e, "out of memory");
		const char *leaf = strrchr(p->name, '.') + 1;
		if (p->ndim >= 2) {
			/* conv OIHW or linear [out, in]: fan_in = in * kh * kw */
			double fan_in = (double)n / p->shape[0];
			double std = sqrt(2.0 / fan_in);
			for (size_t j = 0; j < n; j++)
				host[j] = (float)(gaussian(&r) * std);
		} else {
			float v = (!strcmp(leaf, "weight") || !strcmp(leaf, "running_var")) ? 1.0f
											     : 0.0f;
			for (size_t j = 0; j < n; j++)
				host[j] = v;
		}
		int rc = be->ops->upload(be, &p->value, host);
		free(host);
		if (rc < 0 || (p->kind == MP_PARAM_WEIGHT && be->ops->fill(be, &p->momentum, 0) < 0))
			return mp_seterr(e, "%s: %s", p->name, mp_backend_error(be));
	}
	return 0;
}

/* ---- forward and backward ------------------------------------------------ */

/* Does block b keep its input's shape (an identity shortcut, which needs
 * no copy)? */
static int identity(const block *b)
{
	return !b->proj && b->stride == 1 && b->cin == b->cout;
}

/* Does this pass use the backend's fused BN + residual + ReLU (training,
 * where the backend has it)? */
static int fused_training(const mp_resnet *net, int train)
{
	return train && net->be->ops->bn_relu_forward_train && net->be->ops->bn_relu_backward;
}

/* Makes t exactly (n, c, h, w), reallocating only when the shape changes;
 * act: t holds activations or their gradients (alloc_act), else it is a
 * plain tensor (the head's, which linear and the loss take). */
static int ensure(mp_resnet *net, mp_tensor *t, int act, int n, int c, int h, int w)
{
	if (t->data && t->n == n && t->c == c && t->h == h && t->w == w)
		return 0;
	release(net->be, t);
	net->layout++;
	return act ? mp_backend_alloc_act(net->be, t, n, c, h, w)
		   : net->be->ops->alloc(net->be, t, n, c, h, w);
}

#define CHECK(call)                                                              \
	do {                                                                     \
		if ((call) < 0)                                                  \
			return mp_seterr(e, "%s", mp_backend_error(be));         \
	} while (0)

/* t shaped (n, c, h, w) in memory that holds *cap elements, reallocated
 * only when they do not fit (the backends allow a tensor's shape to
 * shrink in place). */
static int fit(mp_resnet *net, mp_tensor *t, size_t *cap, int act, int n, int c, int h,
	       int w)
{
	mp_backend *be = net->be;
	const size_t count = (size_t)n * c * h * w;
	if (t->data && count <= *cap) {
		t->n = n, t->c = c, t->h = h, t->w = w;
		return 0;
	}
	release(be, t);
	net->layout++;
	*cap = 0;
	if ((act ? mp_backend_alloc_act(be, t, n, c, h, w) : be->ops->alloc(be, t, n, c, h, w)) < 0)
		return -1;
	*cap = count;
	return 0;
}

/* The message of a failed allocation of a batch's buffers: the backend's
 * reason, and what the user can do about it. */
static int batch_buffer_error(const mp_resnet *net, int n, mp_error *e)
{
	return mp_seterr(e, "buffers for a batch of %d images: %s (a smaller batch needs less)", n,
			 mp_backend_error(net->be));
}

/* CHECK for a batch's buffers (net, n and e in scope) */
#define BUF_CHECK(call)                                                          \
	do {                                                                     \
		if ((call) < 0)                                                  \
			return batch_buffer_error(net, n, e);                    \
	} while (0)

/* Activations for a batch of n images of h x w: what a forward pass and the
 * loss need. A new shape releases every buffer, gradients included, except
 * between evaluations, whose five buffers a stage are reshaped in place
 * when they are large enough. */
static int size_buffers(mp_resnet *net, int n, int h, int w, int lean, mp_error *e)
{
	mp_backend *be = net->be;
	const mp_resnet_config *c = &net->cfg;
	if (net->n == n && net->h == h && net->w == w && net->lean == lean)
		return 0;
	if (!(lean && net->lean))
		release_activations(net);
	const conv_layer *sc = &net->stem_conv;
	int sh = conv_out(h, sc->k, sc->stride, sc->pad), sw = conv_out(w, sc->k, sc->stride, sc->pad);
	if (h < 1 || w < 1 || sh < 1 || sw < 1) /* conv_out(0, ...) rounds up to 1 */
		return mp_seterr(e, "input of %dx%d is too small for the stem", w, h);
	/* reshaped in place where it fits, as the evaluation slots */
	BUF_CHECK(fit(net, &net->img, &net->img_cap, 0, n, 3, h, w));
	int ch = sh, cw = sw;
	if (lean) {
		/* the stem's outputs have the first stage's shape and use its slots */
		for (int i = 0; i < net->nblocks; i++) {
			block *b = &net->blocks[i];
			const int st = i / c->depth;
			ch = conv_out(ch, 3, b->stride, 1);
			cw = conv_out(cw, 3, b->stride, 1);
			if (i % c->depth == 0)
				for (int k = 0; k < 5; k++) {
					size_t *cap = &net->slot_cap[st][k];
					BUF_CHECK(fit(net, &net->slots[st][k], cap, 1, n, b->cout,
						      ch, cw));
				}
		}
		if (net->slots[0][0].h != sh || net->slots[0][0].w != sw)
			return mp_seterr(e, "the stem's output and the first stage differ in shape");
		goto head;
	}
	/* fused training keeps no BN outputs and sums */
	const int fused = fused_training(net, !lean);
	BUF_CHECK(ensure(net, &net->stem_c, 1, n, sc->cout, sh, sw));
	BUF_CHECK(ensure(net, &net->stem_r, 1, n, sc->cout, sh, sw));
	if (!fused)
		BUF_CHECK(ensure(net, &net->stem_b, 1, n, sc->cout, sh, sw));
	for (int i = 0; i < net->nblocks; i++) {
		block *b = &net->blocks[i];
		int oh = conv_out(ch, 3, b->stride, 1), ow = conv_out(cw, 3, b->stride, 1);
		mp_tensor *outs[] = {&b->c1, &b->r1, &b->c2, &b->out, &b->b1, &b->b2, &b->sum};
		for (size_t j = 0; j < (fused ? 4 : sizeof outs / sizeof outs[0]); j++)
			BUF_CHECK(ensure(net, outs[j], 1, n, b->cout, oh, ow));
		if (!identity(b))
			BUF_CHECK(ensure(net, &b->sc, 1, n, b->cout, oh, ow));
		if (b->proj)
			BUF_CHECK(ensure(net, &b->scc, 1, n, b->cout, oh, ow));
		ch = oh;
		cw = ow;
	}
head:;
	int last = net->fc_w->shape[1];
	BUF_CHECK(ensure(net, &net->pool, 0, n, last, 1, 1));
	BUF_CHECK(ensure(net, &net->fc, 0, n, c->classes, 1, 1));
	BUF_CHECK(ensure(net, &net->logits, 0, n, c->classes, 1, 1));
	BUF_CHECK(ensure(net, &net->probs, 0, n, c->classes, 1, 1));
	if ((size_t)n > net->labels_cap) {
		mp_backend_host_free(be, net->labels);
		net->labels_cap = 0;
		net->layout++;
		if (!(net->labels = mp_backend_host_alloc(be, sizeof(int32_t) * (size_t)n)))
			return mp_seterr(e, "out of memory for the labels of a batch of %d images "
					    "(a smaller batch needs less): %s",
					 n, mp_backend_error(be));
		net->labels_cap = (size_t)n;
	}
	net->n = n;
	net->h = h;
	net->w = w;
	net->lean = lean;
	return 0;
}

/* *view: the pool's buffer of this role for gradients shaped like t. */
static int grad_view(mp_resnet *net, int role, const mp_tensor *t, mp_tensor *view,
		     mp_error *e)
{
	grad_pool *p = NULL;
	for (int i = 0; i < net->ngpools && !p; i++)
		if (net->gpools[i].c == t->c && net->gpools[i].h == t->h && net->gpools[i].w == t->w)
			p = &net->gpools[i];
	if (!p) {
		if (net->ngpools == MP_GRAD_POOLS) // a stage's shape, or the stem's: never
			return mp_seterr(e, "more than %d shapes of gradients", MP_GRAD_POOLS);
		p = &net->gpools[net->ngpools++];
		memset(p, 0, sizeof *p);
		p->c = t->c, p->h = t->h, p->w = t->w;
	}
	if (ensure(net, &p->t[role], 1, net->n, t->c, t->h, t->w) < 0)
		return batch_buffer_error(net, net->n, e);
	*view = p->t[role];
	return 0;
}

#define GCHECK(call)                                                             \
	do {                                                                     \
		if ((call) < 0)                                                  \
			return -1;                                               \
	} while (0)

/* The gradients of the activations, made by the first backward pass at a
 * shape: evaluation never needs them. */
static int size_grads(mp_resnet *net, mp_error *e)
{
	mp_backend *be = net->be;
	const int n = net->n;
	if (net->have_grads)
		return 0;
	const int fused = fused_training(net, 1);
	if (!fused)
		BUF_CHECK(ensure(net, &net->g_stem_b, 1, n, net->stem_c.c, net->stem_c.h,
			     net->stem_c.w));
	BUF_CHECK(ensure(net, &net->g_stem_c, 1, n, net->stem_c.c, net->stem_c.h,
			 net->stem_c.w));
	for (int i = 0; i < net->nblocks; i++) {
		block *b = &net->blocks[i];
		const mp_tensor *in = b->x, *o = &b->out;
		GCHECK(grad_view(net, G_SUM, o, &b->g_sum, e));
		GCHECK(grad_view(net, G_C2, o, &b->g_c2, e));
		GCHECK(grad_view(net, G_R1, o, &b->g_r1, e));
		GCHECK(grad_view(net, G_C1, o, &b->g_c1, e));
		if (!fused)
			GCHECK(grad_view(net, G_B1, o, &b->g_b1, e));
		if (b->proj)
			GCHECK(grad_view(net, G_SCC, o, &b->g_scc, e));
		/* without conv2d_backward_add, the two paths' gradients apart */
		if (!(fused && be->ops->conv2d_backward_add)) {
			GCHECK(grad_view(net, G_MAIN, in, &b->g_main, e));
			if (!identity(b))
				GCHECK(grad_view(net, G_SIDE, in, &b->g_side, e));
		}
		GCHECK(grad_view(net, G_IN + (i & 1), in, &b->g_in, e));
	}
	const mp_tensor *last = net->nblocks ? &net->blocks[net->nblocks - 1].out : &net->stem_r;
	BUF_CHECK(ensure(net, &net->g_last, 1, n, last->c, last->h, last->w));
	BUF_CHECK(ensure(net, &net->g_pool, 0, n, net->pool.c, 1, 1));
	BUF_CHECK(ensure(net, &net->g_fc, 0, n, net->fc.c, 1, 1));
	BUF_CHECK(ensure(net, &net->g_logits, 0, n, net->logits.c, 1, 1));
	net->have_grads = 1;
	return 0;
}

static int bn_fwd(mp_backend *be, bn_layer *l, const mp_tensor *x, mp_tensor *y, int train)
{
	return train ? be->ops->bn_forward_train(be, x, &l->bn, y)
		     : be->ops->bn_forward_infer(be, x, &l->bn, y);
}

/* Evaluation when the backend has conv_bn_forward_infer: every
 * convolution with its BN, and the block's residual and ReLU, in one
 * call. Slot 0 holds a block's first output, slot 1 (or 2) its shortcut,
 * slots 3 and 4 the outputs of alternate blocks. */
static int prepare(mp_resnet *net, conv_layer *l, const bn_layer *b, mp_error *e)
{
	mp_backend *be = net->be;
	CHECK(be->ops->conv_bn_prepare(be, &l->w->value, &b->bn, l->stride, l->pad, &l->prep));
	return 0;
}

static int forward_fused(mp_resnet *net, mp_error *e)
{
	mp_backend *be = net->be;
	const mp_backend_ops *o = be->ops;
	if (!net->prepared) {
		if (prepare(net, &net->stem_conv, &net->stem_bn, e))
			return -1;
		for (int i = 0; i < net->nblocks; i++) {
			block *b = &net->blocks[i];
			if (prepare(net, &b->conv1, &b->bn1, e) || prepare(net, &b->conv2, &b->bn2, e) ||
			    (b->proj && prepare(net, &b->sc_conv, &b->sc_bn, e)))
				return -1;
		}
		net->prepared = 1;
		net->prep_gen++; /* new inference forms: a recorded pass used the old */
	}
	const conv_layer *sc = &net->stem_conv;
	mp_tensor *stem = &net->slots[0][4];
	CHECK(o->conv_bn_forward_infer(be, net->in, &sc->w->value, &sc->prep, NULL, 1, stem,
				       sc->stride, sc->pad));
	const mp_tensor *x = stem;
	for (int i = 0; i < net->nblocks; i++) {
		block *b = &net->blocks[i];
		mp_tensor *t = net->slots[i / net->cfg.depth];
		mp_tensor *out = (x == &t[3]) ? &t[4] : &t[3];
		const mp_tensor *res = x;
		b->x = x;
		CHECK(o->conv_bn_forward_infer(be, x, &b->conv1.w->value, &b->conv1.prep, NULL, 1,
					       &t[0], b->conv1.stride, b->conv1.pad));
		if (b->proj) {
			CHECK(o->conv_bn_forward_infer(be, x, &b->sc_conv.w->value, &b->sc_conv.prep,
						       NULL, 0, &t[1], b->sc_conv.stride,
						       b->sc_conv.pad));
			res = &t[1];
		} else if (x->c != out->c || x->h != out->h || x->w != out->w) {
			CHECK(o->shortcut_a_forward(be, x, &t[1], b->stride));
			res = &t[1];
		}
		CHECK(o->conv_bn_forward_infer(be, &t[0], &b->conv2.w->value, &b->conv2.prep, res, 1,
					       out, b->conv2.stride, b->conv2.pad));
		x = out;
	}
	CHECK(o->avgpool_forward(be, x, &net->pool));
	return 0;
}

/* The layers up to the pooling one by one: training, or evaluation on a
 * backend without conv_bn_forward_infer. */
static int forward_layers(mp_resnet *net, int train, mp_error *e)
{
	mp_backend *be = net->be;
	const mp_backend_ops *o = be->ops;
	const int lean = !train;
	const conv_layer *sc = &net->stem_conv;
	/* Evaluation: slots 0-2 hold a block's intermediates, 3 and 4 the
	 * outputs of alternate blocks, so that an input outlives its block. */
	mp_tensor *stem_c = &net->stem_c, *stem_b = &net->stem_b, *stem_r = &net->stem_r;
	if (lean) {
		stem_c = &net->slots[0][0];
		stem_b = &net->slots[0][1];
		stem_r = &net->slots[0][4];
	}
	/* training on a backend with the fused BN + residual + ReLU keeps
	 * only each BN's input and the ReLU's output */
	const int fused = fused_training(net, train);
	CHECK(o->conv2d_forward(be, net->in, &sc->w->value, stem_c, sc->stride, sc->pad));
	if (fused) {
		CHECK(o->bn_relu_forward_train(be, stem_c, &net->stem_bn.bn, NULL, stem_r));
	} else {
		CHECK(bn_fwd(be, &net->stem_bn, stem_c, stem_b, train));
		CHECK(o->relu_forward(be, stem_b, stem_r));
	}
	const mp_tensor *x = stem_r;
	for (int i = 0; i < net->nblocks; i++) {
		block *b = &net->blocks[i];
		mp_tensor *c1 = &b->c1, *b1 = &b->b1, *r1 = &b->r1, *c2 = &b->c2, *b2 = &b->b2,
			  *scc = &b->scc, *sct = &b->sc, *sum = &b->sum, *out = &b->out;
		if (lean) {
			mp_tensor *t = net->slots[i / net->cfg.depth];
			c1 = r1 = b2 = sum = &t[0];
			b1 = c2 = &t[1];
			scc = &t[1];
			sct = b->proj ? &t[2] : &t[1];
			out = (x == &t[3]) ? &t[4] : &t[3];
		}
		b->x = x;
		CHECK(o->conv2d_forward(be, x, &b->conv1.w->value, c1, b->stride, 1));
		if (fused) {
			CHECK(o->bn_relu_forward_train(be, c1, &b->bn1.bn, NULL, r1));
		} else {
			CHECK(bn_fwd(be, &b->bn1, c1, b1, train));
			CHECK(o->relu_forward(be, b1, r1));
		}
		CHECK(o->conv2d_forward(be, r1, &b->conv2.w->value, c2, 1, 1));
		if (!fused) /* before the shortcut: in evaluation sct reuses c2's slot */
			CHECK(bn_fwd(be, &b->bn2, c2, b2, train));
		const mp_tensor *res = x; /* identity: the block's input itself */
		if (b->proj) {
			CHECK(o->conv2d_forward(be, x, &b->sc_conv.w->value, scc, b->stride, 0));
			CHECK(bn_fwd(be, &b->sc_bn, scc, sct, train));
			res = sct;
		} else if (!identity(b)) {
			CHECK(o->shortcut_a_forward(be, x, sct, b->stride));
			res = sct;
		}
		if (fused) {
			CHECK(o->bn_relu_forward_train(be, c2, &b->bn2.bn, res, out));
		} else {
			CHECK(o->add(be, b2, res, sum));
			CHECK(o->relu_forward(be, sum, out));
		}
		x = out;
	}
	CHECK(o->avgpool_forward(be, x, &net->pool));
	return 0;
}

/* mp_resnet_forward, with the images of input slot ahead_slot already on
 * the device (mp_resnet_input_ready), or uploaded (ahead_slot -1). */
static int forward_from(mp_resnet *net, const float *images, int n, int h, int w, int train,
			int ahead_slot, mp_error *e)
{
	mp_backend *be = net->be;
	const mp_backend_ops *o = be->ops;
	net->have_forward = net->have_loss = 0;
	if (n < 1 || (train && n < 2))
		return mp_seterr(e, train ? "a training batch needs at least 2 images"
				      : "a batch needs at least 1 image");
	const int lean = !train;
	if (train)
		net->prepared = 0; /* the running statistics move */
	if (size_buffers(net, n, h, w, lean, e) < 0)
		return -1;
	if (net->input_is_plan) {
		/* the backend makes the batch from the kept images */
		if (!train || h != w)
			return mp_seterr(e, "a plan makes training batches of square crops");
		const size_t words = mp_augment_plan_words(n, h, net->taps);
		if (words > INT_MAX)
			return mp_seterr(e, "the plan of a batch of %d crops of %d is too large", n, h);
		BUF_CHECK(fit(net, &net->plan_dev, &net->plan_cap, 0, 1, 1, 1, (int)words));
		CHECK(o->augment_train(be, &net->pixels, (const int32_t *)images, net->taps,
				       &net->plan_dev, &net->img));
		net->in = &net->img;
	} else if (ahead_slot >= 0) {
		net->in = &net->graph.ahead[ahead_slot];
	} else {
		CHECK(o->upload(be, &net->img, images));
		net->in = &net->img;
	}
	if (lean && o->conv_bn_forward_infer ? forward_fused(net, e) : forward_layers(net, train, e))
		return -1;
	CHECK(o->linear_forward(be, &net->pool, &net->fc_w->value, &net->fc));
	if (net->cfg.fc_bn)
		CHECK(bn_fwd(be, &net->fc_bn, &net->fc, &net->logits, train));
	else
		CHECK(o->shortcut_a_forward(be, &net->fc, &net->logits, 1));
	net->have_forward = 1;
	net->train = train;
	return 0;
}

int mp_resnet_forward(mp_resnet *net, const float *images, int n, int h, int w,
		      int train, mp_error *e)
{
	if (step_running(net, e) < 0)
		return -1;
	return forward_from(net, images, n, h, w, train, -1, e);
}

int mp_resnet_logits(mp_resnet *net, float *out, mp_error *e)
{
	mp_backend *be = net->be;
	if (!net->have_forward)
		return mp_seterr(e, "no forward pass to read logits from");
	CHECK(be->ops->download(be, &net->logits, out));
	return 0;
}

/* The loss of net->labels (already there). */
static int loss_of_labels(mp_resnet *net, float smoothing, double *loss, float *probs,
			  mp_error *e)
{
	mp_backend *be = net->be;
	net->smoothing = smoothing;
	CHECK(be->ops->softmax_xent_forward(be, &net->logits, net->labels, smoothing,
					    &net->probs, loss));
	if (probs)
		CHECK(be->ops->download(be, &net->probs, probs));
	net->have_loss = 1;
	return 0;
}

int mp_resnet_loss(mp_resnet *net, const int32_t *labels, float smoothing,
		   double *loss, float *probs, mp_error *e)
{
	if (step_running(net, e) < 0)
		return -1;
	if (!net->have_forward)
		return mp_seterr(e, "no forward pass to compute a loss for");
	memcpy(net->labels, labels, sizeof(int32_t) * (size_t)net->n);
	return loss_of_labels(net, smoothing, loss, probs, e);
}

static int bn_bwd(mp_backend *be, bn_layer *l, const mp_tensor *x, const mp_tensor *dy,
		  mp_tensor *dx)
{
	return be->ops->bn_backward(be, x, &l->bn, dy, dx, &l->gamma->grad, &l->beta->grad);
}

static int bn_relu_bwd(mp_backend *be, bn_layer *l, const mp_tensor *x, const mp_tensor *y,
		       const mp_tensor *dy, mp_tensor *dx, mp_tensor *dres)
{
	return be->ops->bn_relu_backward(be, x, &l->bn, y, dy, dx, &l->gamma->grad,
					 &l->beta->grad, dres);
}

int mp_resnet_backward(mp_resnet *net, mp_error *e)
{
	mp_backend *be = net->be;
	const mp_backend_ops *o = be->ops;
	if (step_running(net, e) < 0)
		return -1;
	if (!net->have_loss || !net->train)
		return mp_seterr(e, "backward needs a training forward pass and its loss");
	if (mp_resnet_train_state(net, e) < 0 || size_grads(net, e) < 0)
		return -1;
	CHECK(o->softmax_xent_backward(be, &net->probs, net->labels, net->smoothing,
				       &net->g_logits));
	if (net->cfg.fc_bn)
		CHECK(bn_bwd(be, &net->fc_bn, &net->fc, &net->g_logits, &net->g_fc));
	else
		CHECK(o->shortcut_a_backward(be, &net->g_logits, &net->g_fc, 1));
	CHECK(o->linear_backward(be, &net->pool, &net->fc_w->value, &net->g_fc, &net->g_pool,
				 &net->fc_w->grad));
	CHECK(o->avgpool_backward(be, &net->g_pool, &net->g_last));
	const mp_tensor *dout = &net->g_last;
	const int fused = fused_training(net, 1);
	/* the skip path's gradient made in g_in, the main path's added to it
	 * by conv1's backward pass (conv2d_backward_add), not by an add */
	const int add_in_conv = fused && o->conv2d_backward_add;
	for (int i = net->nblocks - 1; i >= 0; i--) {
		block *b = &net->blocks[i];
		if (fused) {
			/* an identity block's residual gradient is its skip path's */
			mp_tensor *dres = add_in_conv && identity(b) ? &b->g_in : &b->g_sum;
			CHECK(bn_relu_bwd(be, &b->bn2, &b->c2, &b->out, dout, &b->g_c2, dres));
		} else {
			CHECK(o->relu_backward(be, &b->out, dout, &b->g_sum));
			CHECK(bn_bwd(be, &b->bn2, &b->c2, &b->g_sum, &b->g_c2));
		}
		CHECK(o->conv2d_backward(be, &b->r1, &b->conv2.w->value, &b->g_c2, &b->g_r1,
					 &b->conv2.w->grad, 1, 1));
		if (fused) {
			CHECK(bn_relu_bwd(be, &b->bn1, &b->c1, &b->r1, &b->g_r1, &b->g_c1, NULL));
		} else {
			CHECK(o->relu_backward(be, &b->r1, &b->g_r1, &b->g_b1));
			CHECK(bn_bwd(be, &b->bn1, &b->c1, &b->g_b1, &b->g_c1));
		}
		if (add_in_conv) {
			if (b->proj) {
				CHECK(bn_bwd(be, &b->sc_bn, &b->scc, &b->g_sum, &b->g_scc));
				CHECK(o->conv2d_backward(be, b->x, &b->sc_conv.w->value, &b->g_scc,
							 &b->g_in, &b->sc_conv.w->grad, b->stride,
							 0));
			} else if (!identity(b)) {
				CHECK(o->shortcut_a_backward(be, &b->g_sum, &b->g_in, b->stride));
			}
			CHECK(o->conv2d_backward_add(be, b->x, &b->conv1.w->value, &b->g_c1,
						     &b->g_in, &b->conv1.w->grad, b->stride, 1));
			dout = &b->g_in;
			continue;
		}
		CHECK(o->conv2d_backward(be, b->x, &b->conv1.w->value, &b->g_c1, &b->g_main,
					 &b->conv1.w->grad, b->stride, 1));
		if (b->proj) {
			CHECK(bn_bwd(be, &b->sc_bn, &b->scc, &b->g_sum, &b->g_scc));
			CHECK(o->conv2d_backward(be, b->x, &b->sc_conv.w->value, &b->g_scc,
						 &b->g_side, &b->sc_conv.w->grad, b->stride, 0));
		} else if (!identity(b)) {
			CHECK(o->shortcut_a_backward(be, &b->g_sum, &b->g_side, b->stride));
		}
		CHECK(o->add(be, &b->g_main, identity(b) ? &b->g_sum : &b->g_side, &b->g_in));
		dout = &b->g_in;
	}
	if (fused) {
		CHECK(bn_relu_bwd(be, &net->stem_bn, &net->stem_c, &net->stem_r, dout,
				  &net->g_stem_c, NULL));
	} else {
		CHECK(o->relu_backward(be, &net->stem_r, dout, &net->g_stem_b));
		CHECK(bn_bwd(be, &net->stem_bn, &net->stem_c, &net->g_stem_b, &net->g_stem_c));
	}
	const conv_layer *sc = &net->stem_conv;
	CHECK(o->conv2d_backward(be, net->in, &sc->w->value, &net->g_stem_c, NULL,
				 &sc->w->grad, sc->stride, sc->pad));
	return 0;
}

/* The SGD step with the rate read from host memory *lr: when recording,
 * from there at every run of the graph. */
static int sgd_from(mp_resnet *net, const float *lr, float momentum, float wd, mp_error *e)
{
	mp_backend *be = net->be;
	net->prepared = 0;
	if (mp_resnet_train_state(net, e) < 0)
		return -1;
	if (!net->lr.data)
		CHECK(be->ops->alloc(be, &net->lr, 1, 1, 1, 1));
	CHECK(be->ops->upload(be, &net->lr, lr));
	mp_tensor **w = malloc(sizeof *w * (size_t)net->nparams);
	mp_tensor **g = malloc(sizeof *g * (size_t)net->nparams);
	mp_tensor **v = malloc(sizeof *v * (size_t)net->nparams);
	int count = 0, rc = 0;
	if (!w || !g || !v) {
		rc = mp_seterr(e, "out of memory");
		goto out;
	}
	for (int i = 0; i < net->nparams; i++) {
		mp_param *p = &net->params[i];
		if (p->kind != MP_PARAM_WEIGHT)
			continue;
		w[count] = &p->value;
		g[count] = &p->grad;
		v[count] = &p->momentum;
		count++;
	}
	if (be->ops->sgd_step(be, w, (const mp_tensor *const *)g, v, count, &net->lr, momentum,
			      wd) < 0)
		rc = mp_seterr(e, "%s", mp_backend_error(be));
out:
	free(w);
	free(g);
	free(v);
	return rc;
}

int mp_resnet_sgd(mp_resnet *net, float lr, float momentum, float wd, mp_error *e)
{
	if (step_running(net, e) < 0)
		return -1;
	return sgd_from(net, &lr, momentum, wd, e);
}

/* ---- the training step, recorded as a graph where the backend can ------------ */

/* Input slot `slot` with room for count floats (or words). */
static float *input_buffer(mp_resnet *net, int slot, size_t count, mp_error *e)
{
	step_graph *g = &net->graph;
	g->ahead_valid[slot] = 0; /* the caller writes it: a copy made ahead is old */
	if (count > g->input_cap[slot]) {
		if (g->pending == STEP_LAUNCHED && g->inputs[slot]) {
			mp_seterr(e, "input buffer %d cannot grow while a step runs", slot);
			return NULL;
		}
		if (g->inputs[slot]) /* recordings reading the old buffer go with it */
			free_recordings_of(net, g->inputs[slot]);
		mp_backend_host_free(net->be, g->inputs[slot]);
		g->input_cap[slot] = 0;
		if (!(g->inputs[slot] = mp_backend_host_alloc(net->be, count * sizeof(float)))) {
			const double kib = (double)count * sizeof(float) / 1024;
			mp_seterr(e, "out of memory for a batch's images (%zu floats, %.0f %s; a "
				     "smaller batch needs less): %s",
				  count, kib < 1024 ? kib : kib / 1024, kib < 1024 ? "KiB" : "MiB",
				  mp_backend_error(net->be));
			return NULL;
		}
		g->input_cap[slot] = count;
	}
	return g->inputs[slot];
}

float *mp_resnet_input(mp_resnet *net, int slot, int n, int h, int w, mp_error *e)
{
	if (slot < 0 || slot >= MP_RESNET_INPUT_SLOTS || n < 1 || h < 1 || w < 1) {
		mp_seterr(e, "no input buffer %d for %d images of %dx%d", slot, n, w, h);
		return NULL;
	}
	return input_buffer(net, slot, (size_t)n * 3 * h * w, e);
}

/* ---- the training set kept decoded in backend memory ----------------------------- */

int mp_resnet_keep_pixels(mp_resnet *net, uint64_t bytes, int taps, mp_error *e)
{
	mp_backend *be = net->be;
	if (!be->ops->augment_train || !be->ops->write_bytes)
		return mp_seterr(e, "the %s backend cannot keep the training set: it has no "
				    "augment_train", be->ops->name);
	if (taps < 1 || taps > 4096)
		return mp_seterr(e, "plans of %d taps: expected 1..4096", taps);
	if (net->graph.pending == STEP_LAUNCHED)
		return mp_seterr(e, "the training set cannot move while a step runs");
	/* rows of 64 KiB: any size a device can hold has a shape of ints */
	const uint64_t row = 65536, rows = bytes / row + 1;
	if (rows > INT_MAX)
		return mp_seterr(e, "%llu bytes of images are too many", (unsigned long long)bytes);
	free_recordings(net); /* they read the old store */
	release(be, &net->pixels);
	net->pixel_bytes = 0;
	net->taps = 0;
	if (be->ops->alloc(be, &net->pixels, (int)rows, 1, 1, (int)(row / sizeof(float))) < 0)
		return mp_seterr(e, "%.1f MB for the decoded training set: %s", bytes / 1e6,
				 mp_backend_error(be));
	net->pixel_bytes = bytes;
	net->taps = taps;
	return 0;
}

int mp_resnet_put_pixels(mp_resnet *net, uint64_t offset, const uint8_t *px, size_t len,
			 mp_error *e)
{
	mp_backend *be = net->be;
	if (!net->taps || offset > net->pixel_bytes || len > net->pixel_bytes - offset)
		return mp_seterr(e, "%zu bytes at %llu do not fit the kept training set of %llu",
				 len, (unsigned long long)offset,
				 (unsigned long long)net->pixel_bytes);
	if (be->ops->write_bytes(be, &net->pixels, (size_t)offset, px, len) < 0)
		return mp_seterr(e, "%s", mp_backend_error(be));
	return 0;
}

int32_t *mp_resnet_plan(mp_resnet *net, int slot, int n, int crop, mp_error *e)
{
	if (slot < 0 || slot >= MP_RESNET_INPUT_SLOTS || n < 1 || crop < 1 || !net->taps) {
		mp_seterr(e, net->taps ? "no input buffer %d for the plan of %d crops of %d"
				       : "no training set kept for a plan",
			  slot, n, crop);
		return NULL;
	}
	/* the memory from host_alloc holds either, as int32 or float words */
	return (int32_t *)input_buffer(net, slot, mp_augment_plan_words(n, crop, net->taps), e);
}

int mp_resnet_train_start_plan(mp_resnet *net, int slot, const int32_t *labels, int n, int crop,
			       float smoothing, float lr, float momentum, float wd, mp_error *e)
{
	step_graph *g = &net->graph;
	if (slot < 0 || slot >= MP_RESNET_INPUT_SLOTS || !net->taps || !g->inputs[slot] ||
	    mp_augment_plan_words(n, crop, net->taps) > g->input_cap[slot])
		return mp_seterr(e, "input slot %d holds no plan of %d crops of %d "
				    "(mp_resnet_plan makes it)", slot, n, crop);
	net->input_is_plan = 1;
	int rc = mp_resnet_train_start(net, g->inputs[slot], labels, n, crop, crop, smoothing, lr,
				       momentum, wd, e);
	net->input_is_plan = 0;
	return rc;
}

void mp_resnet_use_graphs(mp_resnet *net, int on)
{
	net->graph.off = net->pgraph.off = !on;
	if (!on && net->graph.pending != STEP_LAUNCHED)
		free_recordings(net);
}

void mp_resnet_graph_counts(const mp_resnet *net, int train, long *recorded, long *launched)
{
	*recorded = train ? net->graph.recorded : net->pgraph.recorded;
	*launched = train ? net->graph.launched : net->pgraph.launched;
}

static int have_graphs(const mp_resnet *net)
{
	const mp_backend_ops *o = net->be->ops;
	return o->graph_begin && o->graph_end && o->graph_launch && o->graph_wait && o->graph_free;
}

static int same_shape(const step_shape *a, const step_shape *b)
{
	return a->n == b->n && a->h == b->h && a->w == b->w && a->smoothing == b->smoothing &&
	       a->momentum == b->momentum && a->wd == b->wd && a->layout == b->layout &&
	       a->ahead == b->ahead && a->plan == b->plan;
}

/* The four calls, op by op, the results into g->scalars and g->probs. */
static int plain_step(mp_resnet *net, const float *images, int ahead_slot,
		      const int32_t *labels, int n, int h, int w, float smoothing, float lr,
		      float momentum, float wd, mp_error *e)
{
	step_graph *g = &net->graph;
	if (forward_from(net, images, n, h, w, 1, ahead_slot, e) < 0 ||
	    mp_resnet_loss(net, labels, smoothing, &g->scalars->loss, g->probs, e) < 0 ||
	    mp_resnet_backward(net, e) < 0 || sgd_from(net, &lr, momentum, wd, e) < 0)
		return -1;
	return 0;
}

/* Ends a recording whose operations returned rc (graph_end ends it
 * whatever happened in it) and keeps it in entry, reading images; a
 * recording during which buffers moved is dropped. 0, or -1 with the
 * reason in e (an operation's, if one failed). */
static int end_recording(mp_resnet *net, int rc, int moved, recording *entry,
			 const float *images, mp_error *e)
{
	mp_backend *be = net->be;
	void *graph = NULL;
	if (be->ops->graph_end(be, &graph) < 0 && rc == 0)
		rc = mp_seterr(e, "%s", mp_backend_error(be));
	if (rc == 0 && moved)
		rc = mp_seterr(e, "buffers were allocated while recording");
	if (rc < 0) {
		be->ops->graph_free(be, graph);
		return -1;
	}
	entry->graph = graph;
	entry->images = images;
	return 0;
}

/* Records the step reading images (an input slot), net->labels and the
 * rate in g->scalars, writing the loss there and the probabilities to
 * g->probs, into a free (or the least recently used) entry. Nothing runs.
 * The entry's index, or -1 with the reason in e (the step can still run
 * op by op). */
static int record_step(mp_resnet *net, const step_shape *k, const float *images, int ahead_slot,
		       mp_error *e)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	const int r = free_entry(be, g->rec, STEP_RECORDINGS);
	if (be->ops->graph_begin(be) < 0)
		return mp_seterr(e, "%s", mp_backend_error(be));
	int rc = forward_from(net, images, k->n, k->h, k->w, 1, ahead_slot, e);
	if (rc == 0)
		rc = loss_of_labels(net, k->smoothing, &g->scalars->loss, g->probs, e);
	if (rc == 0)
		rc = mp_resnet_backward(net, e);
	if (rc == 0)
		rc = sgd_from(net, &g->scalars->lr, k->momentum, k->wd, e);
	if (end_recording(net, rc, net->layout != k->layout, &g->rec[r], images, e) < 0)
		return -1;
	g->shape[r] = *k;
	g->recorded++;
	return r;
}

static int find_recording(const step_graph *g, const step_shape *k, const float *images)
{
	for (int i = 0; i < STEP_RECORDINGS; i++)
		if (g->rec[i].graph && g->rec[i].images == images && same_shape(&g->shape[i], k))
			return i;
	return -1;
}

/* The input slot images is, or -1. */
static int slot_of(const step_graph *g, const float *images)
{
	for (int i = 0; i < MP_RESNET_INPUT_SLOTS; i++)
		if (images && images == g->inputs[i])
			return i;
	return -1;
}

/* Is slot's batch of n images of h x w on the device already? */
static int ahead_ready(const step_graph *g, int slot, int n, int h, int w)
{
	const mp_tensor *t = &g->ahead[slot];
	return g->ahead_valid[slot] && t->n == n && t->c == 3 && t->h == h && t->w == w;
}

/* A step from input slot (or -1) is under way, as pending says; the copy
 * ahead it read (ahead, or -1) is used up. */
static int started(step_graph *g, int pending, int slot, int ahead)
{
	g->pending = pending;
	g->pending_slot = slot;
	if (ahead >= 0)
		g->ahead_valid[ahead] = 0;
	return 0;
}

int mp_resnet_input_ready(mp_resnet *net, int slot, int n, int h, int w, mp_error *e)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	if (slot < 0 || slot >= MP_RESNET_INPUT_SLOTS || n < 1 || h < 1 || w < 1 ||
	    !g->inputs[slot] || (size_t)n * 3 * h * w > g->input_cap[slot])
		return mp_seterr(e, "input slot %d holds no batch of %d images of %dx%d "
				    "(mp_resnet_input makes it)", slot, n, w, h);
	if (g->pending == STEP_LAUNCHED && g->pending_slot == slot)
		return mp_seterr(e, "input slot %d is read by the step that runs", slot);
	g->ahead_valid[slot] = 0;
	if (!be->ops->upload_ahead)
		return 0; /* the step uploads it */
	if (fit(net, &g->ahead[slot], &g->ahead_cap[slot], 0, n, 3, h, w) < 0 ||
	    be->ops->upload_ahead(be, &g->ahead[slot], g->inputs[slot]) < 0)
		return mp_seterr(e, "%s", mp_backend_error(be));
	g->ahead_valid[slot] = 1;
	return 0;
}

int mp_resnet_train_start(mp_resnet *net, const float *images, const int32_t *labels, int n,
			  int h, int w, float smoothing, float lr, float momentum, float wd,
			  mp_error *e)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	if (g->pending)
		return mp_seterr(e, "a training step was started and not finished");
	if (n < 2)
		return mp_seterr(e, "a training batch needs at least 2 images");
	/* a recorded step does not check its labels as the loss does */
	for (int i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= net->cfg.classes)
			return mp_seterr(e, "labels[%d] is %d, expected 0..%d", i, (int)labels[i],
					 net->cfg.classes - 1);
	/* the step's results, in memory a graph can write */
	const size_t nprobs = (size_t)n * net->cfg.classes;
	if (!g->scalars && !(g->scalars = mp_backend_host_alloc(be, sizeof *g->scalars)))
		return mp_seterr(e, "out of memory for the step's results: %s",
				 mp_backend_error(be));
	if (nprobs > g->probs_cap) {
		free_recordings(net); /* they write the old buffer */
		mp_backend_host_free(be, g->probs);
		g->probs_cap = 0;
		if (!(g->probs = mp_backend_host_alloc(be, nprobs * sizeof(float))))
			return mp_seterr(e, "out of memory for the probabilities of a batch of %d "
					    "images (a smaller batch needs less): %s",
					 n, mp_backend_error(be));
		g->probs_cap = nprobs;
	}
	g->pending_n = n;
	/* the batch's input slot, and whether it is on the device already */
	const int slot = slot_of(g, images);
	const int ahead = slot >= 0 && ahead_ready(g, slot, n, h, w) ? slot : -1;
	if (!have_graphs(net) || g->off) {
		if (plain_step(net, images, ahead, labels, n, h, w, smoothing, lr, momentum, wd,
			       e) < 0)
			return -1;
		return started(g, STEP_DONE, slot, ahead);
	}
	/* a recorded step reads its batch from an input slot */
	const float *input = images;
	if (slot < 0) {
		float *in0 = mp_resnet_input(net, 0, n, h, w, e);
		if (!in0)
			return -1;
		memcpy(in0, images, (size_t)n * 3 * h * w * sizeof(float));
		input = in0;
	}
	step_shape k = {n, h, w, smoothing, momentum, wd, net->layout, ahead >= 0, net->input_is_plan};
	int r = find_recording(g, &k, input);
	if (r < 0 && g->have_last_plain && same_shape(&g->last_plain, &k) && n == net->n) {
		mp_error why;
		if ((r = record_step(net, &k, input, ahead, &why)) < 0) {
			/* op by op from now on, which works wherever recording does not */
			mp_warnx("the training step is not recorded as a graph (%s): each operation "
				 "is launched on its own",
				 why.msg);
			g->off = 1;
		}
	}
	if (r >= 0) {
		memcpy(net->labels, labels, sizeof(int32_t) * (size_t)n);
		g->scalars->lr = lr;
		int rc = be->ops->graph_launch(be, g->rec[r].graph);
		if (rc < 0)
			return mp_seterr(e, "%s", mp_backend_error(be));
		if (rc == 0) {
			g->rec[r].used = ++g->tick;
			g->launched++;
			/* the state the four calls leave */
			net->have_forward = net->have_loss = net->train = 1;
			net->smoothing = smoothing;
			net->prepared = 0;
			net->in = ahead >= 0 ? &g->ahead[ahead] : &net->img;
			return started(g, STEP_LAUNCHED, slot_of(g, input), ahead);
		}
		/* the backend replaced memory the recordings use: record anew */
		free_recordings(net);
	}
	if (plain_step(net, input, ahead, labels, n, h, w, smoothing, lr, momentum, wd, e) < 0)
		return -1;
	g->last_plain = k;
	g->last_plain.layout = net->layout; /* the step may have made buffers */
	g->have_last_plain = 1;
	return started(g, STEP_DONE, slot_of(g, input), ahead);
}

int mp_resnet_train_finish(mp_resnet *net, double *loss, float *probs, mp_error *e)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	const int pending = g->pending;
	if (!pending)
		return mp_seterr(e, "no training step to finish");
	g->pending = STEP_NONE;
	if (pending == STEP_LAUNCHED && be->ops->graph_wait(be) < 0)
		return mp_seterr(e, "%s", mp_backend_error(be));
	*loss = g->scalars->loss;
	if (probs)
		memcpy(probs, g->probs, (size_t)g->pending_n * net->cfg.classes * sizeof(float));
	return 0;
}

int mp_resnet_train_step(mp_resnet *net, const float *images, const int32_t *labels, int n,
			 int h, int w, float smoothing, float lr, float momentum, float wd,
			 double *loss, float *probs, mp_error *e)
{
	if (mp_resnet_train_start(net, images, labels, n, h, w, smoothing, lr, momentum, wd, e) <
	    0)
		return -1;
	return mp_resnet_train_finish(net, loss, probs, e);
}

/* ---- inference, recorded as a graph where the backend can ------------------------- */

static int same_predict_shape(const predict_shape *a, const predict_shape *b)
{
	return a->n == b->n && a->h == b->h && a->w == b->w && a->layout == b->layout &&
	       a->prep_gen == b->prep_gen;
}

/* Records the inference pass reading images (an input slot) and writing
 * the logits to pg->logits, into a free (or the least recently used)
 * entry. Nothing runs. The entry, or -1 with the reason in e. */
static int record_predict(mp_resnet *net, const predict_shape *k, const float *images,
			  mp_error *e)
{
	mp_backend *be = net->be;
	predict_graph *pg = &net->pgraph;
	const int r = free_entry(be, pg->rec, PREDICT_RECORDINGS);
	if (be->ops->graph_begin(be) < 0)
		return mp_seterr(e, "%s", mp_backend_error(be));
	int rc = mp_resnet_forward(net, images, k->n, k->h, k->w, 0, e);
	if (rc == 0 && be->ops->download(be, &net->logits, pg->logits) < 0)
		rc = mp_seterr(e, "%s", mp_backend_error(be));
	const int moved = net->layout != k->layout || net->prep_gen != k->prep_gen;
	if (end_recording(net, rc, moved, &pg->rec[r], images, e) < 0)
		return -1;
	pg->shape[r] = *k;
	pg->recorded++;
	return r;
}

int mp_resnet_predict(mp_resnet *net, const float *images, int n, int h, int w, float *logits,
		      mp_error *e)
{
	mp_backend *be = net->be;
	step_graph *g = &net->graph;
	predict_graph *pg = &net->pgraph;
	if (g->pending)
		return mp_seterr(e, "a training step was started and not finished");
	if (!have_graphs(net) || pg->off) {
		if (mp_resnet_forward(net, images, n, h, w, 0, e) < 0)
			return -1;
		return mp_resnet_logits(net, logits, e);
	}
	if (n < 1)
		return mp_seterr(e, "a batch needs at least 1 image");
	const size_t nlogits = (size_t)n * net->cfg.classes;
	if (nlogits > pg->logits_cap) {
		/* they write the old buffer */
		drop_recordings(be, pg->rec, PREDICT_RECORDINGS, NULL);
		mp_backend_host_free(be, pg->logits);
		pg->logits_cap = 0;
		if (!(pg->logits = mp_backend_host_alloc(be, nlogits * sizeof(float))))
			return mp_seterr(e, "out of memory for the logits of a batch of %d images "
					    "(a smaller batch needs less): %s",
					 n, mp_backend_error(be));
		pg->logits_cap = nlogits;
	}
	/* a recorded pass reads its batch from an input slot */
	const float *input = images;
	if (images != g->inputs[0] && images != g->inputs[1]) {
		float *slot = mp_resnet_input(net, 0, n, h, w, e);
		if (!slot)
			return -1;
		memcpy(slot, images, (size_t)n * 3 * h * w * sizeof(float));
		input = slot;
	}
	/* the buffers shaped for this pass, in place where they fit (a
	 * recording of this shape then still holds), as the pass would */
	if (size_buffers(net, n, h, w, 1, e) < 0)
		return -1;
	predict_shape k = {n, h, w, net->layout, net->prep_gen};
	int r = -1;
	/* a pass that has to prepare the inference forms (a backend with
	 * conv_bn_forward_infer) runs op by op */
	if (net->prepared || !be->ops->conv_bn_forward_infer) {
		for (int i = 0; i < PREDICT_RECORDINGS && r < 0; i++)
			if (pg->rec[i].graph && pg->rec[i].images == input &&
			    same_predict_shape(&pg->shape[i], &k))
				r = i;
		int warm = 0;
		for (int i = 0; i < pg->nwarm; i++)
			warm |= same_predict_shape(&pg->warm[i], &k);
		mp_error why;
		if (r < 0 && warm && (r = record_predict(net, &k, input, &why)) < 0) {
			mp_warnx("the inference pass is not recorded as a graph (%s): each operation "
				 "is launched on its own",
				 why.msg);
			pg->off = 1;
		}
	}
	if (r >= 0) {
		int rc = be->ops->graph_launch(be, pg->rec[r].graph);
		if (rc == 0 && be->ops->graph_wait(be) < 0)
			rc = -1;
		if (rc < 0)
			return mp_seterr(e, "%s", mp_backend_error(be));
		if (rc == 0) {
			pg->rec[r].used = ++pg->tick;
			pg->launched++;
			memcpy(logits, pg->logits, nlogits * sizeof(float));
			/* the state mp_resnet_forward leaves */
			net->have_forward = 1;
			net->have_loss = net->train = 0;
			return 0;
		}
		free_recordings(net); /* stale: record anew */
	}
	if (mp_resnet_forward(net, input, n, h, w, 0, e) < 0 || mp_resnet_logits(net, logits, e) < 0)
		return -1;
	pg->warm[pg->warm_next] = (predict_shape){n, h, w, net->layout, net->prep_gen};
	pg->warm_next = (pg->warm_next + 1) % PREDICT_RECORDINGS;
	if (pg->nwarm < PREDICT_RECORDINGS)
		pg->nwarm++;
	return 0;
}
