/* BN with the residual and the ReLU that follow it, fused (backend.h's
 * bn_relu_forward_train and bn_relu_backward): the argument checks every
 * backend shares, and the reference backend's versions, written as the
 * separate operations they stand for, so that a fused backend is checked
 * against exactly that meaning. */
#include <stdlib.h>

#include "cpu.h"

int mp_cpu_bn_relu_check_forward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				 const mp_tensor *res, const mp_tensor *y)
{
	if (mp_cpu_bn_check_train(be, x, bn, y))
		return -1;
	if (res && mp_cpu_expect(be, "bn_relu_forward_train", "res", res, x->n, x->c, x->h, x->w))
		return -1;
	return 0;
}

int mp_cpu_bn_relu_check_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
				  const mp_tensor *y, const mp_tensor *dy, const mp_tensor *dx,
				  const mp_tensor *dgamma, const mp_tensor *dbeta,
				  const mp_tensor *dres)
{
	static const char op[] = "bn_relu_backward";
	if (mp_cpu_bn_check_backward(be, x, bn, dy, dx, dgamma, dbeta) ||
	    mp_cpu_expect(be, op, "y", y, x->n, x->c, x->h, x->w))
		return -1;
	if (dres && mp_cpu_expect(be, op, "dres", dres, x->n, x->c, x->h, x->w))
		return -1;
	return 0;
}

/* y = bn_train(x); y = y + res; y = relu(y): the same roundings as the
 * three operations (add and relu work in place). */
int mp_cpu_bn_relu_forward_train(mp_backend *be, const mp_tensor *x, mp_bn *bn,
				 const mp_tensor *res, mp_tensor *y)
{
	if (mp_cpu_bn_relu_check_forward(be, x, bn, res, y) ||
	    mp_cpu_bn_forward_train(be, x, bn, y) || (res && mp_cpu_add(be, y, res, y)) ||
	    mp_cpu_relu_forward(be, y, y))
		return -1;
	return 0;
}

/* g = relu_backward(y, dy) (into dres, or a temporary), then bn_backward
 * of g. */
int mp_cpu_bn_relu_backward(mp_backend *be, const mp_tensor *x, const mp_bn *bn,
			    const mp_tensor *y, const mp_tensor *dy, mp_tensor *dx,
			    mp_tensor *dgamma, mp_tensor *dbeta, mp_tensor *dres)
{
	if (mp_cpu_bn_relu_check_backward(be, x, bn, y, dy, dx, dgamma, dbeta, dres))
		return -1;
	mp_tensor tmp = {0};
	mp_tensor *g = dres;
	if (!g) {
		size_t count = mp_tensor_count(x);
		if (!(tmp.data = malloc(count * sizeof *tmp.data)))
			return mp_cpu_fail(be, "bn_relu_backward: out of memory");
		tmp.n = x->n;
		tmp.c = x->c;
		tmp.h = x->h;
		tmp.w = x->w;
		g = &tmp;
	}
	int rc = mp_cpu_relu_backward(be, y, dy, g) ||
		 mp_cpu_bn_backward(be, x, bn, g, dx, dgamma, dbeta);
	free(tmp.data);
	return rc ? -1 : 0;
}
