/* A recorder of graphs for any backend, for tests on the CPU: it adds
 * the graph operations of kernels/backend.h (graph_begin, graph_end,
 * graph_launch, graph_free) to a backend that has none, with the
 * interface's rules. Between graph_begin and graph_end every operation is
 * stored with its arguments instead of run; graph_launch queues the
 * stored list, which runs at graph_wait or before the next operation, as
 * a device stream would order it: the host's writes between launch and
 * wait are seen by the run, as they would be on a GPU, so a caller that
 * touches the run's memory too early gets wrong results here too. Like a
 * CUDA graph it keeps host pointers as addresses and reads or writes them
 * when it runs, and it enforces what a real graph would only get wrong
 * silently: host memory not from host_alloc, alloc/release/set_precision
 * while recording, an operation it cannot record; a change of precision
 * makes the graphs recorded before stale (graph_launch returns 1), as the
 * CUDA backend's are. Hooks
 * make a launch report stale memory (rec.stale_next) and graph_begin fail
 * (rec.fail_begin); rec.launches and rec.begins count.
 *
 * It gives upload_ahead too, queued as a one-copy graph: the copy runs
 * after the graphs launched before it, when they run, and reads its host
 * memory then; a copy into a tensor that a queued graph uses (which on a
 * GPU would race it) aborts. rec.aheads counts them.
 *
 * One backend at a time (static state); include once per program. */
#ifndef MP_GRAPH_RECORDER_H
#define MP_GRAPH_RECORDER_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

enum {
	R_UPLOAD, R_DOWNLOAD, R_FILL, R_CONV_F, R_CONV_B, R_BN_F, R_BN_I, R_BN_B, R_RELU_F,
	R_RELU_B, R_ADD, R_SC_F, R_SC_B, R_POOL_F, R_POOL_B, R_LIN_F, R_LIN_B, R_XENT_F,
	R_XENT_B, R_SGD, R_BNR_F, R_BNR_B, R_CONV_BN, R_AUGMENT,
};

typedef struct {
	int op;
	const void *p[9];
	int i[3];
	float f[3];
	mp_tensor **lists; /* sgd_step's w, g and v, copied: the caller's arrays go */
} call;

typedef struct {
	call *calls;
	int n;
	unsigned long gen; /* rec.gen when it was recorded */
} recording;

static struct {
	const mp_backend_ops *inner;
	mp_backend_ops ops;
	int recording, failed;
	char why[256];
	recording cur;
	struct {
		const char *p;
		size_t n;
	} host[64];
	int nhost;
	const recording *queued[8]; /* launched, not yet run */
	int nqueued;
	/* upload_ahead's copies, queued as one-call recordings */
	call ahead_call[4];
	recording ahead_rec[4];
	int ahead_next;
	/* bumped by a change of precision, which makes every graph recorded
	 * before stale (graph_launch returns 1), as the CUDA backend does */
	unsigned long gen;
	int precision;
	/* test hooks */
	int fail_begin, stale_next;
	long launches, begins, aheads;
} rec;

static int refuse(mp_backend *be, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!rec.failed) {
		vsnprintf(rec.why, sizeof rec.why, fmt, ap);
		rec.failed = 1;
	}
	va_end(ap);
	snprintf(be->error, sizeof be->error, "%s", rec.why);
	return -1;
}

static int from_host_alloc(const void *p, size_t bytes)
{
	for (int i = 0; i < rec.nhost; i++)
		if ((const char *)p >= rec.host[i].p &&
		    (const char *)p + bytes <= rec.host[i].p + rec.host[i].n)
			return 1;
	return 0;
}

static int store(mp_backend *be, call c)
{
	if (rec.failed)
		return -1;
	call *grown = realloc(rec.cur.calls, (size_t)(rec.cur.n + 1) * sizeof *grown);
	if (!grown)
		return refuse(be, "out of memory");
	rec.cur.calls = grown;
	rec.cur.calls[rec.cur.n++] = c;
	return 0;
}

/* While recording, host memory must be the caller's from host_alloc. */
static int host_ok(mp_backend *be, const char *op, const void *p, size_t bytes)
{
	if (!from_host_alloc(p, bytes))
		return refuse(be, "%s: host memory not from host_alloc while recording", op);
	return 0;
}

static int flush(mp_backend *be);

/* Recording: store the call. Else run what is queued first, in order. */
#define RECORD(kind, ...)                                                      \
	do {                                                                   \
		if (rec.recording)                                             \
			return store(be, (call){.op = (kind), __VA_ARGS__});   \
		if (flush(be) < 0)                                             \
			return -1;                                             \
	} while (0)

static int r_upload(mp_backend *be, mp_tensor *t, const float *h)
{
	if (rec.recording && host_ok(be, "upload", h, mp_tensor_count(t) * sizeof *h))
		return -1;
	RECORD(R_UPLOAD, .p = {t, h});
	return rec.inner->upload(be, t, h);
}
static int r_augment(mp_backend *be, const mp_tensor *pixels, const int32_t *plan, int taps,
		     mp_tensor *plan_dev, mp_tensor *y)
{
	if (rec.recording && y && taps > 0 &&
	    host_ok(be, "augment_train", plan,
		    mp_augment_plan_words(y->n, y->h, taps) * sizeof *plan))
		return -1;
	RECORD(R_AUGMENT, .p = {pixels, plan, plan_dev, y}, .i = {taps});
	return rec.inner->augment_train(be, pixels, plan, taps, plan_dev, y);
}
static int r_write_bytes(mp_backend *be, mp_tensor *t, size_t offset, const void *h, size_t n)
{
	if (rec.recording)
		return refuse(be, "write_bytes while recording");
	if (flush(be) < 0)
		return -1;
	return rec.inner->write_bytes(be, t, offset, h, n);
}
static int r_download(mp_backend *be, const mp_tensor *t, float *h)
{
	if (rec.recording && host_ok(be, "download", h, mp_tensor_count(t) * sizeof *h))
		return -1;
	RECORD(R_DOWNLOAD, .p = {t, h});
	return rec.inner->download(be, t, h);
}
static int r_fill(mp_backend *be, mp_tensor *t, float v)
{
	RECORD(R_FILL, .p = {t}, .i = {0}, .f = {v});
	return rec.inner->fill(be, t, v);
}
static int r_conv_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y,
		    int s, int p)
{
	RECORD(R_CONV_F, .p = {x, w, y}, .i = {s, p});
	return rec.inner->conv2d_forward(be, x, w, y, s, p);
}
static int r_conv_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		    mp_tensor *dx, mp_tensor *dw, int s, int p)
{
	RECORD(R_CONV_B, .p = {x, w, dy, dx, dw}, .i = {s, p});
	return rec.inner->conv2d_backward(be, x, w, dy, dx, dw, s, p);
}
static int r_bn_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, mp_tensor *y)
{
	RECORD(R_BN_F, .p = {x, bn, y});
	return rec.inner->bn_forward_train(be, x, bn, y);
}
static int r_bn_i(mp_backend *be, const mp_tensor *x, const mp_bn *bn, mp_tensor *y)
{
	RECORD(R_BN_I, .p = {x, bn, y});
	return rec.inner->bn_forward_infer(be, x, bn, y);
}
static int r_bn_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *dy,
		  mp_tensor *dx, mp_tensor *dg, mp_tensor *db)
{
	RECORD(R_BN_B, .p = {x, bn, dy, dx, dg, db});
	return rec.inner->bn_backward(be, x, bn, dy, dx, dg, db);
}
static int r_relu_f(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	RECORD(R_RELU_F, .p = {x, y});
	return rec.inner->relu_forward(be, x, y);
}
static int r_relu_b(mp_backend *be, const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx)
{
	RECORD(R_RELU_B, .p = {y, dy, dx});
	return rec.inner->relu_backward(be, y, dy, dx);
}
static int r_add(mp_backend *be, const mp_tensor *a, const mp_tensor *b, mp_tensor *y)
{
	RECORD(R_ADD, .p = {a, b, y});
	return rec.inner->add(be, a, b, y);
}
static int r_sc_f(mp_backend *be, const mp_tensor *x, mp_tensor *y, int s)
{
	RECORD(R_SC_F, .p = {x, y}, .i = {s});
	return rec.inner->shortcut_a_forward(be, x, y, s);
}
static int r_sc_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx, int s)
{
	RECORD(R_SC_B, .p = {dy, dx}, .i = {s});
	return rec.inner->shortcut_a_backward(be, dy, dx, s);
}
static int r_pool_f(mp_backend *be, const mp_tensor *x, mp_tensor *y)
{
	RECORD(R_POOL_F, .p = {x, y});
	return rec.inner->avgpool_forward(be, x, y);
}
static int r_pool_b(mp_backend *be, const mp_tensor *dy, mp_tensor *dx)
{
	RECORD(R_POOL_B, .p = {dy, dx});
	return rec.inner->avgpool_backward(be, dy, dx);
}
static int r_lin_f(mp_backend *be, const mp_tensor *x, const mp_tensor *w, mp_tensor *y)
{
	RECORD(R_LIN_F, .p = {x, w, y});
	return rec.inner->linear_forward(be, x, w, y);
}
static int r_lin_b(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *dy,
		   mp_tensor *dx, mp_tensor *dw)
{
	RECORD(R_LIN_B, .p = {x, w, dy, dx, dw});
	return rec.inner->linear_backward(be, x, w, dy, dx, dw);
}
static int r_xent_f(mp_backend *be, const mp_tensor *lg, const int32_t *l, float sm, mp_tensor *p,
		    double *loss)
{
	if (rec.recording && (host_ok(be, "softmax_xent_forward", l, (size_t)lg->n * sizeof *l) ||
			      host_ok(be, "softmax_xent_forward", loss, sizeof *loss)))
		return -1;
	RECORD(R_XENT_F, .p = {lg, l, p, loss}, .i = {0}, .f = {sm});
	return rec.inner->softmax_xent_forward(be, lg, l, sm, p, loss);
}
static int r_xent_b(mp_backend *be, const mp_tensor *p, const int32_t *l, float sm, mp_tensor *d)
{
	if (rec.recording && host_ok(be, "softmax_xent_backward", l, (size_t)p->n * sizeof *l))
		return -1;
	RECORD(R_XENT_B, .p = {p, l, d}, .i = {0}, .f = {sm});
	return rec.inner->softmax_xent_backward(be, p, l, sm, d);
}
static int r_sgd(mp_backend *be, mp_tensor *const *w, const mp_tensor *const *g,
		 mp_tensor *const *v, int count, const mp_tensor *lr, float m, float wd)
{
	if (rec.recording) {
		mp_tensor **lists = malloc(3 * (size_t)(count > 0 ? count : 1) * sizeof *lists);
		if (!lists)
			return refuse(be, "out of memory");
		for (int t = 0; t < count; t++) {
			lists[t] = w[t];
			lists[count + t] = (mp_tensor *)g[t];
			lists[2 * count + t] = v[t];
		}
		call c = {.op = R_SGD, .p = {lr}, .i = {count}, .f = {m, wd}, .lists = lists};
		if (store(be, c) < 0) {
			free(lists);
			return -1;
		}
		return 0;
	}
	if (flush(be) < 0)
		return -1;
	return rec.inner->sgd_step(be, w, g, v, count, lr, m, wd);
}
static int r_bnr_f(mp_backend *be, const mp_tensor *x, mp_bn *bn, const mp_tensor *res,
		   mp_tensor *y)
{
	RECORD(R_BNR_F, .p = {x, bn, res, y});
	return rec.inner->bn_relu_forward_train(be, x, bn, res, y);
}
static int r_bnr_b(mp_backend *be, const mp_tensor *x, const mp_bn *bn, const mp_tensor *y,
		   const mp_tensor *dy, mp_tensor *dx, mp_tensor *dg, mp_tensor *db, mp_tensor *dres)
{
	RECORD(R_BNR_B, .p = {x, bn, y, dy, dx, dg, db, dres});
	return rec.inner->bn_relu_backward(be, x, bn, y, dy, dx, dg, db, dres);
}

static int r_alloc_with(int (*alloc)(mp_backend *, mp_tensor *, int, int, int, int),
			mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	if (rec.recording)
		return refuse(be, "alloc while recording");
	if (flush(be) < 0)
		return -1;
	return alloc(be, t, n, c, h, w);
}
static int r_alloc(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	return r_alloc_with(rec.inner->alloc, be, t, n, c, h, w);
}
static int r_alloc_act(mp_backend *be, mp_tensor *t, int n, int c, int h, int w)
{
	return r_alloc_with(rec.inner->alloc_act, be, t, n, c, h, w);
}
static void r_release(mp_backend *be, mp_tensor *t)
{
	if (rec.recording)
		refuse(be, "release while recording");
	else
		flush(be);
	rec.inner->release(be, t);
}
static int r_set_precision(mp_backend *be, int precision)
{
	if (rec.recording)
		return refuse(be, "set_precision while recording");
	if (flush(be) < 0)
		return -1;
	if (rec.inner->set_precision(be, precision) < 0)
		return -1;
	if (precision != rec.precision)
		rec.gen++;
	rec.precision = precision;
	return 0;
}
static int r_conv_bn_prepare(mp_backend *be, const mp_tensor *w, const mp_bn *bn, int s, int p,
			     mp_tensor *prep)
{
	if (rec.recording)
		return refuse(be, "conv_bn_prepare cannot be recorded");
	if (flush(be) < 0)
		return -1;
	return rec.inner->conv_bn_prepare(be, w, bn, s, p, prep);
}
static int r_conv_bn(mp_backend *be, const mp_tensor *x, const mp_tensor *w, const mp_tensor *prep,
		     const mp_tensor *res, int relu, mp_tensor *y, int s, int p)
{
	RECORD(R_CONV_BN, .p = {x, w, prep, res, y}, .i = {relu, s, p});
	return rec.inner->conv_bn_forward_infer(be, x, w, prep, res, relu, y, s, p);
}

static void *r_host_alloc(mp_backend *be, size_t bytes)
{
	(void)be;
	if (rec.nhost == (int)(sizeof rec.host / sizeof rec.host[0]))
		return NULL;
	char *p = malloc(bytes ? bytes : 1);
	if (p) {
		rec.host[rec.nhost].p = p;
		rec.host[rec.nhost].n = bytes;
		rec.nhost++;
	}
	return p;
}
static void r_host_free(mp_backend *be, void *p)
{
	(void)be;
	for (int i = 0; i < rec.nhost; i++)
		if (rec.host[i].p == p) {
			rec.host[i] = rec.host[--rec.nhost];
			break;
		}
	free(p);
}

static void drop(recording *r)
{
	for (int i = 0; i < r->n; i++)
		free(r->calls[i].lists);
	free(r->calls);
	free(r);
}

static int r_graph_begin(mp_backend *be)
{
	rec.begins++;
	if (rec.fail_begin) {
		snprintf(be->error, sizeof be->error, "graph_begin: refused by the test");
		return -1;
	}
	rec.recording = 1;
	rec.failed = 0;
	rec.cur.calls = NULL;
	rec.cur.n = 0;
	rec.cur.gen = rec.gen;
	return 0;
}

static int r_graph_end(mp_backend *be, void **graph)
{
	rec.recording = 0;
	*graph = NULL;
	recording *r = malloc(sizeof *r);
	if (rec.failed || !r) {
		free(r);
		recording tmp = rec.cur;
		for (int i = 0; i < tmp.n; i++)
			free(tmp.calls[i].lists);
		free(tmp.calls);
		snprintf(be->error, sizeof be->error, "%s", rec.failed ? rec.why : "out of memory");
		return -1;
	}
	*r = rec.cur;
	*graph = r;
	return 0;
}

static int replay(mp_backend *be, const call *c)
{
	const mp_backend_ops *o = rec.inner;
	const void *const *p = c->p;
	switch (c->op) {
	case R_UPLOAD: return o->upload(be, (mp_tensor *)p[0], p[1]);
	case R_DOWNLOAD: return o->download(be, p[0], (float *)p[1]);
	case R_FILL: return o->fill(be, (mp_tensor *)p[0], c->f[0]);
	case R_CONV_F:
		return o->conv2d_forward(be, p[0], p[1], (mp_tensor *)p[2], c->i[0], c->i[1]);
	case R_CONV_B:
		return o->conv2d_backward(be, p[0], p[1], p[2], (mp_tensor *)p[3],
					  (mp_tensor *)p[4], c->i[0], c->i[1]);
	case R_BN_F: return o->bn_forward_train(be, p[0], (mp_bn *)p[1], (mp_tensor *)p[2]);
	case R_BN_I: return o->bn_forward_infer(be, p[0], p[1], (mp_tensor *)p[2]);
	case R_BN_B:
		return o->bn_backward(be, p[0], p[1], p[2], (mp_tensor *)p[3], (mp_tensor *)p[4],
				      (mp_tensor *)p[5]);
	case R_RELU_F: return o->relu_forward(be, p[0], (mp_tensor *)p[1]);
	case R_RELU_B: return o->relu_backward(be, p[0], p[1], (mp_tensor *)p[2]);
	case R_ADD: return o->add(be, p[0], p[1], (mp_tensor *)p[2]);
	case R_SC_F: return o->shortcut_a_forward(be, p[0], (mp_tensor *)p[1], c->i[0]);
	case R_SC_B: return o->shortcut_a_backward(be, p[0], (mp_tensor *)p[1], c->i[0]);
	case R_POOL_F: return o->avgpool_forward(be, p[0], (mp_tensor *)p[1]);
	case R_POOL_B: return o->avgpool_backward(be, p[0], (mp_tensor *)p[1]);
	case R_LIN_F: return o->linear_forward(be, p[0], p[1], (mp_tensor *)p[2]);
	case R_LIN_B:
		return o->linear_backward(be, p[0], p[1], p[2], (mp_tensor *)p[3],
					  (mp_tensor *)p[4]);
	case R_XENT_F:
		return o->softmax_xent_forward(be, p[0], p[1], c->f[0], (mp_tensor *)p[2],
					       (double *)p[3]);
	case R_XENT_B: return o->softmax_xent_backward(be, p[0], p[1], c->f[0], (mp_tensor *)p[2]);
	case R_SGD: {
		const int n = c->i[0];
		return o->sgd_step(be, c->lists, (const mp_tensor *const *)(c->lists + n),
				   c->lists + 2 * n, n, p[0], c->f[0], c->f[1]);
	}
	case R_BNR_F:
		return o->bn_relu_forward_train(be, p[0], (mp_bn *)p[1], p[2], (mp_tensor *)p[3]);
	case R_CONV_BN:
		return o->conv_bn_forward_infer(be, p[0], p[1], p[2], p[3], c->i[0], (mp_tensor *)p[4],
						c->i[1], c->i[2]);
	case R_AUGMENT:
		return o->augment_train(be, p[0], p[1], c->i[0], (mp_tensor *)p[2],
					(mp_tensor *)p[3]);
	case R_BNR_B:
		return o->bn_relu_backward(be, p[0], p[1], p[2], p[3], (mp_tensor *)p[4],
					   (mp_tensor *)p[5], (mp_tensor *)p[6], (mp_tensor *)p[7]);
	}
	snprintf(be->error, sizeof be->error, "graph_launch: unknown call %d", c->op);
	return -1;
}

/* Runs the queued recordings, in order. */
static int flush(mp_backend *be)
{
	const int n = rec.nqueued;
	rec.nqueued = 0;
	for (int q = 0; q < n; q++)
		for (int i = 0; i < rec.queued[q]->n; i++)
			if (replay(be, &rec.queued[q]->calls[i]) < 0)
				return -1;
	return 0;
}

static int r_graph_launch(mp_backend *be, void *graph)
{
	if (rec.stale_next) {
		rec.stale_next = 0;
		return 1;
	}
	if (rec.recording)
		return refuse(be, "graph_launch while recording");
	if (((recording *)graph)->gen != rec.gen)
		return 1;
	if (rec.nqueued == (int)(sizeof rec.queued / sizeof rec.queued[0]) && flush(be) < 0)
		return -1;
	rec.queued[rec.nqueued++] = graph;
	rec.launches++;
	return 0;
}

static int r_graph_wait(mp_backend *be)
{
	return flush(be);
}

static int queued_uses(const mp_tensor *t)
{
	for (int q = 0; q < rec.nqueued; q++)
		for (int i = 0; i < rec.queued[q]->n; i++)
			for (int k = 0; k < 9; k++)
				if (rec.queued[q]->calls[i].p[k] == t)
					return 1;
	return 0;
}

static int r_upload_ahead(mp_backend *be, mp_tensor *t, const float *h)
{
	if (rec.recording)
		return refuse(be, "upload_ahead while recording");
	if (!from_host_alloc(h, mp_tensor_count(t) * sizeof *h)) {
		snprintf(be->error, sizeof be->error, "upload_ahead: host memory not from host_alloc");
		return -1;
	}
	if (queued_uses(t)) {
		fprintf(stderr, "graph_recorder: upload_ahead into a tensor that a queued graph "
				"uses\n");
		abort();
	}
	const int n = (int)(sizeof rec.ahead_rec / sizeof rec.ahead_rec[0]);
	recording *r = &rec.ahead_rec[rec.ahead_next];
	for (int q = 0; q < rec.nqueued; q++)
		if (rec.queued[q] == r && flush(be) < 0) /* all copies in flight: run them */
			return -1;
	if (rec.nqueued == (int)(sizeof rec.queued / sizeof rec.queued[0]) && flush(be) < 0)
		return -1;
	rec.ahead_call[rec.ahead_next] = (call){.op = R_UPLOAD, .p = {t, h}};
	r->calls = &rec.ahead_call[rec.ahead_next];
	r->n = 1;
	rec.ahead_next = (rec.ahead_next + 1) % n;
	rec.queued[rec.nqueued++] = r;
	rec.aheads++;
	return 0;
}

static void r_graph_free(mp_backend *be, void *graph)
{
	(void)be;
	for (int q = 0; q < rec.nqueued; q++)
		if (rec.queued[q] == graph) {
			/* a caller error that a GPU would not report */
			fprintf(stderr, "graph_recorder: graph_free of a graph launched and not "
					"waited for\n");
			abort();
		}
	if (graph)
		drop(graph);
}

/* be's operations through the recorder. */
static void recorder_install(mp_backend *be)
{
	memset(&rec, 0, sizeof rec);
	rec.precision = MP_PRECISION_FP32; /* every backend's at the start */
	rec.inner = be->ops;
	rec.ops = *be->ops;
	mp_backend_ops *o = &rec.ops;
	o->upload_ahead = r_upload_ahead;
	o->alloc = r_alloc;
	o->alloc_act = rec.inner->alloc_act ? r_alloc_act : NULL;
	o->release = r_release;
	o->upload = r_upload;
	o->download = r_download;
	o->fill = r_fill;
	o->conv2d_forward = r_conv_f;
	o->conv2d_backward = r_conv_b;
	o->conv2d_backward_add = NULL; /* not recorded here: the network adds */
	o->bn_forward_train = r_bn_f;
	o->bn_forward_infer = r_bn_i;
	o->bn_backward = r_bn_b;
	o->relu_forward = r_relu_f;
	o->relu_backward = r_relu_b;
	o->add = r_add;
	o->shortcut_a_forward = r_sc_f;
	o->shortcut_a_backward = r_sc_b;
	o->avgpool_forward = r_pool_f;
	o->avgpool_backward = r_pool_b;
	o->linear_forward = r_lin_f;
	o->linear_backward = r_lin_b;
	o->softmax_xent_forward = r_xent_f;
	o->softmax_xent_backward = r_xent_b;
	o->sgd_step = r_sgd;
	o->bn_relu_forward_train = rec.inner->bn_relu_forward_train ? r_bnr_f : NULL;
	o->bn_relu_backward = rec.inner->bn_relu_backward ? r_bnr_b : NULL;
	o->conv_bn_prepare = rec.inner->conv_bn_prepare ? r_conv_bn_prepare : NULL;
	o->conv_bn_forward_infer = rec.inner->conv_bn_forward_infer ? r_conv_bn : NULL;
	o->set_precision = rec.inner->set_precision ? r_set_precision : NULL;
	o->augment_train = rec.inner->augment_train ? r_augment : NULL;
	o->write_bytes = rec.inner->write_bytes ? r_write_bytes : NULL;
	o->host_alloc = r_host_alloc;
	o->host_free = r_host_free;
	o->graph_begin = r_graph_begin;
	o->graph_end = r_graph_end;
	o->graph_launch = r_graph_launch;
	o->graph_wait = r_graph_wait;
	o->graph_free = r_graph_free;
	be->ops = o;
}

#endif
