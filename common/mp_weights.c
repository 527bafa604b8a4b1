#include "mp_weights.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_stream.h"

#define MAX_WEIGHTS_FILE ((size_t)1 << 34)
/* what a network may need beyond twice the tensors of the file it comes from */
#define NET_SLACK ((uint64_t)64 << 20)

static int to_int64_shape(const mp_param *p, int64_t *shape)
{
	for (int i = 0; i < p->ndim; i++)
		shape[i] = p->shape[i];
	return p->ndim;
}

/* The shortest decimal that reads back as the same float ("0.001", not
 * "0.00100000005"). */
static void float_text(char *buf, size_t n, float v)
{
	for (int digits = 1; digits <= 9; digits++) {
		snprintf(buf, n, "%.*g", digits, (double)v);
		if (strtof(buf, NULL) == v)
			return;
	}
}

int mp_weights_save(mp_resnet *net, const char *path, const mp_kv *extra, int n,
		    int with_momentum, mp_error *e)
{
	const mp_resnet_config *c = mp_resnet_cfg(net);
	int count = mp_resnet_param_count(net), rc = -1;
	mp_st_builder b;
	mp_st_builder_init(&b);
	float **host = calloc((size_t)count * 2, sizeof *host);
	char widths[256] = "", num[64], mean[128];
	if (!host)
		return mp_seterr(e, "out of memory");
	for (int s = 0; s < c->stages; s++) {
		snprintf(num, sizeof num, "%s%d", s ? "," : "", c->widths[s]);
		strncat(widths, num, sizeof widths - strlen(widths) - 1);
	}
	snprintf(mean, sizeof mean, "%.17g,%.17g,%.17g", c->mean[0], c->mean[1], c->mean[2]);
	struct {
		const char *k;
		char v[64];
	} fields[] = {
		{"format", MP_WEIGHTS_FORMAT}, {"format_version", ""}, {"depth", ""},
		{"widths", ""}, {"stem_kernel", ""}, {"stem_stride", ""}, {"shortcut", ""},
		{"classes", ""}, {"fc_bn", ""}, {"bn_eps", ""}, {"bn_momentum", ""},
		{"input_size", ""},
	};
	snprintf(fields[1].v, 64, "%d", MP_WEIGHTS_VERSION);
	snprintf(fields[2].v, 64, "%d", c->depth);
	snprintf(fields[4].v, 64, "%d", c->stem_kernel);
	snprintf(fields[5].v, 64, "%d", c->stem_stride);
	snprintf(fields[6].v, 64, "%c", c->shortcut);
	snprintf(fields[7].v, 64, "%d", c->classes);
	snprintf(fields[8].v, 64, "%d", c->fc_bn ? 1 : 0);
	float_text(fields[9].v, 64, c->bn_eps);
	float_text(fields[10].v, 64, c->bn_momentum);
	snprintf(fields[11].v, 64, "%d", c->input_size);
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		const char *v = i == 3 ? widths : fields[i].v;
		if (mp_st_builder_meta(&b, fields[i].k, v, e) < 0)
			goto out;
	}
	if (mp_st_builder_meta(&b, "mean", mean, e) < 0)
		goto out;
	for (int i = 0; i < n; i++)
		if (mp_st_builder_meta(&b, extra[i].key, extra[i].value, e) < 0)
			goto out;
	if (with_momentum && mp_resnet_train_state(net, e) < 0)
		goto out;
	for (int pass = 0; pass < (with_momentum ? 2 : 1); pass++) {
		for (int i = 0; i < count; i++) {
			mp_param *p = mp_resnet_param(net, i);
			if (pass == 1 && p->kind != MP_PARAM_WEIGHT)
				continue;
			const mp_tensor *t = pass ? &p->momentum : &p->value;
			size_t nel = mp_tensor_count(t);
			float *h = malloc(nel * sizeof *h);
			if (!h) {
				mp_seterr(e, "out of memory");
				goto out;
			}
			host[pass * count + i] = h;
			if (mp_resnet_download(net, t, h, e) < 0)
				goto out;
			int64_t shape[4];
			int nd = to_int64_shape(p, shape);
			char name[128];
			snprintf(name, sizeof name, "%s%s", pass ? "momentum." : "", p->name);
			if (mp_st_builder_add(&b, name, MP_ST_F32, shape, nd, h, e) < 0)
				goto out;
		}
	}
	rc = mp_st_builder_write(&b, path, e);
out:
	for (int i = 0; i < count * 2; i++)
		free(host[i]);
	free(host);
	mp_st_builder_free(&b);
	return rc;
}

int mp_weights_find_nonfinite(mp_resnet *net, int with_momentum, char *name, size_t n,
			      mp_error *e)
{
	int count = mp_resnet_param_count(net), found = 0;
	float *h = NULL;
	size_t cap = 0;
	if (with_momentum && mp_resnet_train_state(net, e) < 0)
		return -1;
	for (int pass = 0; pass < (with_momentum ? 2 : 1) && !found; pass++) {
		for (int i = 0; i < count && !found; i++) {
			mp_param *p = mp_resnet_param(net, i);
			if (pass == 1 && p->kind != MP_PARAM_WEIGHT)
				continue;
			const mp_tensor *t = pass ? &p->momentum : &p->value;
			size_t nel = mp_tensor_count(t);
			if (nel > cap) {
				float *grown = realloc(h, nel * sizeof *h);
				if (!grown) {
					free(h);
					return mp_seterr(e, "out of memory");
				}
				h = grown;
				cap = nel;
			}
			if (mp_resnet_download(net, t, h, e) < 0) {
				free(h);
				return -1;
			}
			for (size_t j = 0; j < nel; j++)
				if (!isfinite(h[j])) {
					snprintf(name, n, "%s%s", pass ? "momentum." : "", p->name);
					found = 1;
					break;
				}
		}
	}
	free(h);
	return found;
}

/* Metadata readers: every value is a string in safetensors. Integers are
 * plain decimal (mp_parse_decimal): "+1", " 1" and "01" are refused, as a
 * reader that took them would take a damaged value for a good one. */
static int meta_long(const mp_st_file *f, const char *key, long min, long max, long *out,
		     mp_error *e)
{
	const char *v = mp_st_meta_get(f, key);
	uint64_t x;
	if (!v)
		return mp_seterr(e, "%s: metadata has no \"%s\"", f->path, key);
	if (mp_parse_decimal(v, strlen(v), (uint64_t)max, &x) < 0 || x < (uint64_t)min)
		return mp_seterr(e, "%s: metadata \"%s\" = \"%s\" is not a number from %ld to %ld",
				 f->path, key, v, min, max);
	*out = (long)x;
	return 0;
}

static int meta_double(const mp_st_file *f, const char *key, double *out, mp_error *e)
{
	const char *v = mp_st_meta_get(f, key);
	char *end;
	if (!v)
		return mp_seterr(e, "%s: metadata has no \"%s\"", f->path, key);
	errno = 0;
	double x = strtod(v, &end);
	if (!mp_number_start(v) || errno || end == v || *end || !isfinite(x))
		return mp_seterr(e, "%s: metadata \"%s\" = \"%s\" is not a number", f->path, key, v);
	*out = x;
	return 0;
}

int mp_weights_check_crcs(const mp_st_file *f, mp_error *e)
{
	const char *fmt = mp_st_meta_get(f, "format"), *ver = mp_st_meta_get(f, "format_version");
	uint64_t v;
	if (!fmt || strcmp(fmt, MP_WEIGHTS_FORMAT) || !ver)
		return 0;
	/* mp_weights_config names a bad one */
	if (mp_parse_decimal(ver, strlen(ver), 1000, &v) < 0 || v < 2)
		return 0;
	if (!f->has_header_crc)
		return mp_seterr(e, "%s: metadata \"%s\" is missing or damaged: format_version %ld "
				 "has it as the first key of __metadata__ (a file rewritten by other "
				 "software: set format_version to 1 there, and leave out \"%s\" "
				 "if the tensors changed)",
				 f->path, MP_ST_HCRC_KEY, (long)v, MP_ST_CRC_KEY);
	if (!f->has_crc)
		return mp_seterr(e, "%s: metadata \"%s\" is missing: format_version %ld has a data "
				 "CRC", f->path, MP_ST_CRC_KEY, (long)v);
	return 0;
}

int mp_weights_read(const char *path, mp_st_file *f, mp_error *e)
{
	if (mp_st_read(path, MAX_WEIGHTS_FILE, f, e) < 0)
		return -1;
	if (mp_weights_check_crcs(f, e) < 0) {
		mp_st_free(f);
		return -1;
	}
	return 0;
}

int mp_weights_config(const mp_st_file *f, mp_resnet_config *c, mp_error *e)
{
	mp_resnet_config_default(c);
	const char *fmt = mp_st_meta_get(f, "format");
	if (!fmt || strcmp(fmt, MP_WEIGHTS_FORMAT))
		return mp_seterr(e, "%s: not an %s weights file (metadata format is %s%s%s)", f->path,
				 MP_WEIGHTS_FORMAT, fmt ? "\"" : "", fmt ? fmt : "missing",
				 fmt ? "\"" : "");
	long v;
	double d;
	/* exactly "1" or "2": "02" is no version a writer wrote */
	const char *ver = mp_st_meta_get(f, "format_version");
	uint64_t x;
	if (!ver)
		return mp_seterr(e, "%s: metadata has no \"format_version\"", f->path);
	if (mp_parse_decimal(ver, strlen(ver), UINT64_MAX, &x) < 0)
		return mp_seterr(e, "%s: metadata \"format_version\" = \"%s\" is not a version "
				 "(expected 1 to %d)", f->path, ver, MP_WEIGHTS_VERSION);
	if (x < 1 || x > MP_WEIGHTS_VERSION)
		return mp_seterr(e, "%s: format_version %s is not supported (expected 1 to %d)",
				 f->path, ver, MP_WEIGHTS_VERSION);
	if (mp_weights_check_crcs(f, e) < 0)
		return -1;
	if (meta_long(f, "depth", 1, 1000, &v, e) < 0)
		return -1;
	c->depth = (int)v;
	const char *w = mp_st_meta_get(f, "widths");
	if (!w)
		return mp_seterr(e, "%s: metadata has no \"widths\"", f->path);
	c->stages = 0;
	/* "" is no stages, which mp_resnet_config_check names */
	for (const char *p = w; *p; p++) {
		size_t n = strcspn(p, ",");
		if (mp_parse_decimal(p, n, 65536, &x) < 0 || x < 1 || c->stages == MP_MAX_STAGES ||
		    (p[n] == ',' && !p[n + 1]))
			return mp_seterr(e, "%s: metadata \"widths\" = \"%s\" is not a list of up to "
					 "%d widths", f->path, w, MP_MAX_STAGES);
		c->widths[c->stages++] = (int)x;
		p += n;
		if (!*p)
			break;
	}
	if (meta_long(f, "stem_kernel", 1, 15, &v, e) < 0)
		return -1;
	c->stem_kernel = (int)v;
	if (meta_long(f, "stem_stride", 1, 8, &v, e) < 0)
		return -1;
	c->stem_stride = (int)v;
	const char *sc = mp_st_meta_get(f, "shortcut");
	if (!sc || (strcmp(sc, "A") && strcmp(sc, "B")))
		return mp_seterr(e, "%s: metadata \"shortcut\" is not A or B", f->path);
	c->shortcut = sc[0];
	if (meta_long(f, "classes", 2, 65536, &v, e) < 0)
		return -1;
	c->classes = (int)v;
	if (meta_long(f, "fc_bn", 0, 1, &v, e) < 0)
		return -1;
	c->fc_bn = (int)v;
	if (meta_double(f, "bn_eps", &d, e) < 0)
		return -1;
	c->bn_eps = (float)d;
	if (meta_double(f, "bn_momentum", &d, e) < 0)
		return -1;
	c->bn_momentum = (float)d;
	if (meta_long(f, "input_size", 1, 4096, &v, e) < 0)
		return -1;
	c->input_size = (int)v;
	const char *mean = mp_st_meta_get(f, "mean");
	int used = -1;
	/* each of the three written as a number is, in decimal: sscanf
	 * alone would skip blanks and read hexadecimal, inf and nan */
	const char *second = mean ? strchr(mean, ',') : NULL;
	const char *third = second ? strchr(second + 1, ',') : NULL;
	if (!mean || !third || !mp_number_start(mean) || !mp_number_start(second + 1) ||
	    !mp_number_start(third + 1) ||
	    sscanf(mean, "%lf,%lf,%lf%n", &c->mean[0], &c->mean[1], &c->mean[2], &used) != 3 ||
	    used < 0 || mean[used] != '\0')
		return mp_seterr(e, "%s: metadata \"mean\" is not r,g,b", f->path);
	for (int i = 0; i < 3; i++)
		if (!(c->mean[i] >= 0 && c->mean[i] <= 255))
			return mp_seterr(e, "%s: metadata \"mean\" = \"%s\" is outside 0..255",
					 f->path, mean);
	mp_error ce;
	if (mp_resnet_config_check(c, &ce) < 0)
		return mp_seterr(e, "%s: %s", f->path, ce.msg);
	/* The network is built before its tensors are checked (the check then
	 * names the first tensor that differs), so a few bytes of metadata
	 * could make that allocate gigabytes: a network far larger than the
	 * file's tensors is refused first. */
	uint64_t need = mp_resnet_config_scalars(c) * sizeof(float);
	if (need > NET_SLACK && need / 2 > f->data_len)
		return mp_seterr(e, "%s: the network in the metadata has %" PRIu64 " bytes of "
				 "tensors, far more than the file holds (%" PRIu64 ")", f->path,
				 need, f->data_len);
	return 0;
}

int mp_weights_load_into(mp_resnet *net, const mp_st_file *f, int want_momentum,
			 mp_error *e)
{
	int count = mp_resnet_param_count(net);
	size_t expected = 0;
	/* momentum comes whole or not at all: a checkpoint cut short of some
	 * of it must not pass for a weights file */
	int has_momentum = 0;
	for (size_t i = 0; i < f->ntensors; i++)
		if (!strncmp(f->tensors[i].name, "momentum.", 9))
			has_momentum = 1;
	int need_momentum = want_momentum || has_momentum;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < count; i++) {
			mp_param *p = mp_resnet_param(net, i);
			if (pass == 1 && p->kind != MP_PARAM_WEIGHT)
				continue;
			char name[128];
			snprintf(name, sizeof name, "%s%s", pass ? "momentum." : "", p->name);
			if (pass == 1 && !mp_st_find(f, name)) {
				if (need_momentum)
					return mp_seterr(e, "%s: no tensor named %s (%s)", f->path, name,
							 has_momentum ? "a checkpoint with part of its momentum"
								      : "not a checkpoint?");
				continue;
			}
			const float *data;
			if (mp_st_get_f32(f, name, p->shape, p->ndim, &data, e) < 0)
				return -1;
			expected++;
			if (pass == 1 && !want_momentum)
				continue;
			if (mp_resnet_upload(net, pass ? &p->momentum : &p->value, data, e) < 0)
				return -1;
		}
	}
	if (f->ntensors != expected) {
		/* name the first tensor the network does not have */
		for (size_t i = 0; i < f->ntensors; i++) {
			const char *n = f->tensors[i].name;
			const char *base = strncmp(n, "momentum.", 9) ? n : n + 9;
			const mp_param *p = mp_resnet_find(net, base);
			/* momentum exists for learned tensors only */
			if (!p || (base != n && p->kind != MP_PARAM_WEIGHT))
				return mp_seterr(e, "%s: tensor %s is not part of this network", f->path, n);
		}
		return mp_seterr(e, "%s: %zu tensors, the network has %zu", f->path, f->ntensors,
				 expected);
	}
	return 0;
}

mp_resnet *mp_weights_load(const char *path, mp_backend *be, mp_st_file *file,
			   mp_error *e)
{
	if (mp_weights_read(path, file, e) < 0)
		return NULL;
	mp_resnet_config c;
	mp_resnet *net = NULL;
	if (mp_weights_config(file, &c, e) < 0 || !(net = mp_resnet_new(&c, be, e)) ||
	    mp_weights_load_into(net, file, 0, e) < 0) {
		mp_resnet_free(net);
		mp_st_free(file); /* on failure *file is empty, as after mp_st_read */
		return NULL;
	}
	return net;
}

/* IEEE half and bfloat16 to double, for statistics of foreign files. */
static double half_to_double(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
	double sign = (h & 0x8000) ? -1.0 : 1.0;
	if (exp == 0)
		return sign * ldexp(mant, -24);
	if (exp == 31)
		return mant ? NAN : sign * INFINITY;
	return sign * ldexp(mant + 1024, exp - 25);
}

double mp_st_element(const mp_st_tensor *t, uint64_t i)
{
	const uint8_t *p = (const uint8_t *)t->data + i * mp_st_dtype_size(t->dtype);
	switch (t->dtype) {
	case MP_ST_F64: { double v; memcpy(&v, p, 8); return v; }
	case MP_ST_F32: { float v; memcpy(&v, p, 4); return v; }
	case MP_ST_F16: { uint16_t v; memcpy(&v, p, 2); return half_to_double(v); }
	case MP_ST_BF16: {
		uint16_t v;
		memcpy(&v, p, 2);
		uint32_t bits = (uint32_t)v << 16;
		float f;
		memcpy(&f, &bits, 4);
		return f;
	}
	case MP_ST_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
	case MP_ST_I32: { int32_t v; memcpy(&v, p, 4); return v; }
	case MP_ST_I16: { int16_t v; memcpy(&v, p, 2); return v; }
	case MP_ST_I8: return (int8_t)p[0];
	case MP_ST_U8: return p[0];
	case MP_ST_BOOL: return p[0] != 0;
	default: return NAN;
	}
}

void mp_st_stats(const mp_st_tensor *t, mp_tensor_stats *s)
{
	memset(s, 0, sizeof *s);
	/* long double: the sums of an F64 tensor's squares neither overflow
	 * (1e200) nor underflow (3e-310) where double's would */
	long double sum = 0, sq = 0;
	s->min = INFINITY;
	s->max = -INFINITY;
	for (uint64_t i = 0; i < t->numel; i++) {
		double v = mp_st_element(t, i);
		if (!isfinite(v)) {
			s->nonfinite++;
			continue;
		}
		s->count++;
		sum += v;
		sq += (long double)v * v;
		if (v < s->min)
			s->min = v;
		if (v > s->max)
			s->max = v;
	}
	/* no finite element (an empty tensor, or all NaN): no mean, spread
	 * or range to give, which a 0 would pretend there was */
	if (!s->count) {
		s->mean = s->std = s->min = s->max = NAN;
		return;
	}
	const long double mean = sum / (long double)s->count;
	s->mean = (double)mean;
	s->l2 = (double)sqrtl(sq);
	/* A second pass over the deviations: the mean of the squares less the
	 * square of the mean cancels to noise when the spread is small beside
	 * the mean (running variances, a constant tensor). */
	long double dev = 0;
	for (uint64_t i = 0; i < t->numel; i++) {
		double v = mp_st_element(t, i);
		if (isfinite(v))
			dev += ((long double)v - mean) * ((long double)v - mean);
	}
	s->std = (double)sqrtl(dev / (long double)s->count);
}

int mp_st_diff(const mp_st_tensor *a, const mp_st_tensor *b, double *max_abs,
	       double *max_rel)
{
	if (a->ndim != b->ndim)
		return -1;
	for (int i = 0; i < a->ndim; i++)
		if (a->shape[i] != b->shape[i])
			return -1;
	double d = 0, scale = 0;
	for (uint64_t i = 0; i < a->numel; i++) {
		double x = mp_st_element(a, i), y = mp_st_element(b, i);
		/* equal values (infinities included) and NaN against NaN agree */
		double diff = (x == y || (isnan(x) && isnan(y))) ? 0 : fabs(x - y);
		if (isnan(diff))
			diff = INFINITY;
		if (diff > d)
			d = diff;
		/* an infinity in b would make every finite difference relative 0,
		 * and so pass even --tol 0 */
		if (isfinite(y) && fabs(y) > scale)
			scale = fabs(y);
	}
	*max_abs = d;
	double rel = d == 0 ? 0 : (scale > 0 ? d / scale : INFINITY);
	/* a difference that is no difference next to the scale (1e-300 beside
	 * 1e300) underflows: the smallest one instead, which --tol 0 refuses */
	if (d > 0 && rel == 0)
		rel = nextafter(0.0, 1.0);
	*max_rel = isnan(rel) ? INFINITY : rel;
	return 0;
}

int mp_st_sniff(const char *path)
{
	/* Only a regular file is looked at: the bytes read from a FIFO or a
	 * pipe (/dev/stdin) would be gone for the stream reader that follows,
	 * and a weights file is read whole, from a regular file only. */
	struct stat st;
	if (mp_stat_follow(path, &st) < 0 || !S_ISREG(st.st_mode))
		return 0;
	const int fd = mp_open_follow(path, O_RDONLY | O_CLOEXEC);
	FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
	if (!f) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	uint8_t h[72];
	size_t n = fread(h, 1, sizeof h, f);
	fclose(f);
	/* a dataset stream, whatever its name */
	if (n >= 8 && !memcmp(h, MP_STREAM_MAGIC, 8))
		return 0;
	/* By its name: one too short, with an empty header or a header that
	 * is no JSON object is still a weights file, and the weights reader
	 * names what is wrong with it. */
	size_t len = strlen(path), sl = strlen(".safetensors");
	if (len >= sl && !strcmp(path + len - sl, ".safetensors"))
		return 1;
	if (n < 9)
		return 0;
	/* Any length: a weights file whose length field is damaged is still
	 * one. */
	if (h[8] == '{')
		return 1;
	/* A length that fits the file, then JSON: white space before the
	 * object, or another value where the object should be. Text, images
	 * and LMDB files have no such first 8 bytes. */
	uint64_t hlen = mp_get_u64(h);
	if (hlen == 0 || hlen > MP_ST_MAX_HEADER || hlen > (uint64_t)st.st_size - 8)
		return 0;
	size_t i = 8, end = 8 + (hlen < n - 8 ? (size_t)hlen : n - 8);
	while (i < end && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r'))
		i++;
	return i < end && (h[i] == '{' || h[i] == '[');
}