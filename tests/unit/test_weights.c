/* Weights and checkpoint files (mp_weights): round trips of every tensor
 * and every configuration field, momentum in checkpoints, rejections with
 * messages that name the file and the tensor or metadata key (shapes,
 * missing and extra tensors, every metadata field, truncation, corruption),
 * and files exchanged with PyTorch in both directions (scripts/mp_resnet.py):
 * the same numbers, and the same logits in inference mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "mp_resnet.h"
#include "test_support.h"
#include "mp_safetensors.h"
#include "mp_weights.h"

/* PyTorch's logits against ours, both float32 in inference mode: relative
 * to the largest logit. The two differ only in summation order (about
 * 1e-6 here); a wrong tensor or a transposed one is off by far more. */
#define LOGIT_RTOL 1e-4

static mp_backend *be;
static mp_rng rng;
static char *dir;

/* ---- helpers -------------------------------------------------------------- */

static char *make_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s/mp-weights-XXXXXX", t && *t ? t : "/tmp");
	char *d = mkdtemp(buf);
	assert_non_null(d);
	return strdup(d);
}

static const char *tmp_path(const char *name)
{
	static char bufs[4][PATH_MAX];
	static int next;
	char *b = bufs[next++ % 4];
	snprintf(b, PATH_MAX, "%s/%s", dir, name);
	return b;
}

static double uniform(double lo, double hi)
{
	return lo + (hi - lo) * mp_rng_uniform(&rng);
}

/* depth 1, widths w0..w3, 10 classes, a non-default mean */
static void small_config(mp_resnet_config *c, int w0, int w1, int w2, int w3, char shortcut)
{
	mp_resnet_config_default(c);
	c->depth = 1;
	c->widths[0] = w0;
	c->widths[1] = w1;
	c->widths[2] = w2;
	c->widths[3] = w3;
	c->shortcut = shortcut;
	c->classes = 10;
	c->mean[0] = 123.675;
	c->mean[1] = 116.28;
	c->mean[2] = 103.53;
}

static mp_resnet *new_net(mp_backend *b, const mp_resnet_config *c)
{
	mp_error e;
	mp_resnet *net = mp_resnet_new(c, b, &e);
	if (!net)
		fail_msg("mp_resnet_new: %s", e.msg);
	if (mp_resnet_init(net, 17, &e) < 0)
		fail_msg("mp_resnet_init: %s", e.msg);
	return net;
}


/* Every tensor random, running variances positive; momentum buffers too
 * when with_momentum. */
static void randomize(mp_resnet *net, int with_momentum)
{
	for (int i = 0; i < mp_resnet_param_count(net); i++) {
		mp_param *p = mp_resnet_param(net, i);
		const size_t n = mp_tensor_count(&p->value);
		const int var = strstr(p->name, "running_var") != NULL;
		float *h = malloc(n * sizeof *h);
		assert_non_null(h);
		for (size_t j = 0; j < n; j++)
			h[j] = (float)(var ? uniform(0.5, 2) : uniform(-1, 1));
		upload(net, &p->value, h);
		if (with_momentum && p->kind == MP_PARAM_WEIGHT) {
			for (size_t j = 0; j < n; j++)
				h[j] = (float)(i + j * 1e-3); /* known values */
			upload(net, &p->momentum, h);
		}
		free(h);
	}
}

static void save(mp_resnet *net, const char *path, const mp_kv *extra, int n, int momentum)
{
	mp_error e;
	if (mp_weights_save(net, path, extra, n, momentum, &e) < 0)
		fail_msg("mp_weights_save: %s", e.msg);
}

static void assert_config_equal(const mp_resnet_config *a, const mp_resnet_config *b)
{
	assert_int_equal(a->depth, b->depth);
	assert_int_equal(a->stages, b->stages);
	for (int s = 0; s < a->stages; s++)
		assert_int_equal(a->widths[s], b->widths[s]);
	assert_int_equal(a->stem_kernel, b->stem_kernel);
	assert_int_equal(a->stem_stride, b->stem_stride);
	assert_int_equal(a->shortcut, b->shortcut);
	assert_int_equal(a->classes, b->classes);
	assert_int_equal(a->fc_bn, b->fc_bn);
	assert_true(a->bn_eps == b->bn_eps);
	assert_true(a->bn_momentum == b->bn_momentum);
	assert_int_equal(a->input_size, b->input_size);
	for (int i = 0; i < 3; i++)
		assert_true(a->mean[i] == b->mean[i]);
}

/* The same names and shapes, and the same bits in every value (and every
 * momentum buffer when momentum). */
static void assert_nets_equal(mp_resnet *a, mp_resnet *b, int momentum)
{
	assert_int_equal(mp_resnet_param_count(a), mp_resnet_param_count(b));
	for (int i = 0; i < mp_resnet_param_count(a); i++) {
		mp_param *pa = mp_resnet_param(a, i), *pb = mp_resnet_param(b, i);
		assert_string_equal(pa->name, pb->name);
		assert_int_equal(pa->ndim, pb->ndim);
		for (int d = 0; d < pa->ndim; d++)
			assert_int_equal(pa->shape[d], pb->shape[d]);
		const size_t bytes = mp_tensor_count(&pa->value) * sizeof(float);
		float *va = download(a, &pa->value), *vb = download(b, &pb->value);
		if (memcmp(va, vb, bytes))
			fail_msg("%s differs after the round trip", pa->name);
		free(va);
		free(vb);
		if (momentum && pa->kind == MP_PARAM_WEIGHT) {
			va = download(a, &pa->momentum);
			vb = download(b, &pb->momentum);
			if (memcmp(va, vb, bytes))
				fail_msg("momentum.%s differs after the round trip", pa->name);
			free(va);
			free(vb);
		}
	}
}

/* A copy of a file with one change: a tensor left out, one added (two
 * floats), one stored as F64, or a metadata value replaced (NULL removes
 * the key; a key the file lacks is added). The CRCs are recomputed. */
typedef struct {
	const char *drop, *add, *as_f64, *key, *value;
} edit;

static void rewrite(const char *src, const char *dst, const edit *ed)
{
	mp_st_file f;
	mp_st_builder b;
	mp_error e;
	static const float two[2] = {1.5f, -2.5f};
	if (mp_st_read(src, 1 << 26, &f, &e) < 0)
		fail_msg("%s", e.msg);
	mp_st_builder_init(&b);
	int key_seen = 0;
	for (size_t i = 0; i < f.nmeta; i++) {
		const char *k = f.meta[i].key, *v = f.meta[i].value;
		if (!strcmp(k, MP_ST_CRC_KEY) || !strcmp(k, MP_ST_HCRC_KEY))
			continue;
		if (ed->key && !strcmp(k, ed->key)) {
			key_seen = 1;
			if (!(v = ed->value))
				continue;
		}
		assert_int_equal(mp_st_builder_meta(&b, k, v, &e), 0);
	}
	if (ed->key && ed->value && !key_seen)
		assert_int_equal(mp_st_builder_meta(&b, ed->key, ed->value, &e), 0);
	double *wide = NULL;
	for (size_t i = 0; i < f.ntensors; i++) {
		const mp_st_tensor *t = &f.tensors[i];
		if (ed->drop && !strcmp(t->name, ed->drop))
			continue;
		if (ed->as_f64 && !strcmp(t->name, ed->as_f64)) {
			wide = malloc(t->numel * sizeof *wide);
			assert_non_null(wide);
			for (uint64_t j = 0; j < t->numel; j++)
				wide[j] = ((const float *)t->data)[j];
			assert_int_equal(mp_st_builder_add(&b, t->name, MP_ST_F64, t->shape, t->ndim,
							   wide, &e), 0);
			continue;
		}
		assert_int_equal(mp_st_builder_add(&b, t->name, t->dtype, t->shape, t->ndim, t->data,
						   &e), 0);
	}
	if (ed->add) {
		int shape[1] = {2};
		assert_int_equal(mp_st_builder_add_f32(&b, ed->add, shape, 1, two, &e), 0);
	}
	if (mp_st_builder_write(&b, dst, &e) < 0)
		fail_msg("%s", e.msg);
	mp_st_builder_free(&b);
	free(wide);
	mp_st_free(&f);
}

/* mp_weights_load must fail with exactly "PATH: msg" and leave file empty. */
static void expect_load_error(const char *path, const char *msg)
{
	mp_st_file f;
	mp_error e;
	char want[2048];
	mp_resnet *net = mp_weights_load(path, be, &f, &e);
	if (net)
		fail_msg("%s loaded; expected \"%s\"", path, msg);
	snprintf(want, sizeof want, "%s: %s", path, msg);
	assert_string_equal(e.msg, want);
	assert_null(f.mem);
	assert_int_equal(f.ntensors, 0);
	mp_st_free(&f); /* harmless on an empty file */
}

/* A reference file: the small net, shortcut A, random values. */
static const char *reference_file(void)
{
	const char *path = tmp_path("ref.safetensors");
	mp_resnet_config c;
	small_config(&c, 4, 8, 8, 12, 'A');
	mp_resnet *net = new_net(be, &c);
	randomize(net, 0);
	save(net, path, NULL, 0, 0);
	mp_resnet_free(net);
	return path;
}

/* ---- round trips ------------------------------------------------------------ */

static void round_trip(void **state)
{
	(void)state;
	mp_resnet_config cs[2];
	small_config(&cs[0], 4, 8, 8, 12, 'B');
	cs[0].input_size = 96;
	/* every field away from its default */
	mp_resnet_config_default(&cs[1]);
	cs[1].depth = 2;
	cs[1].stages = 3;
	cs[1].widths[0] = 3;
	cs[1].widths[1] = 5;
	cs[1].widths[2] = 6;
	cs[1].stem_kernel = 5;
	cs[1].stem_stride = 1;
	cs[1].classes = 7;
	cs[1].fc_bn = 0;
	cs[1].bn_eps = 1e-5f;
	cs[1].bn_momentum = 0.99f;
	cs[1].input_size = 64;
	cs[1].mean[0] = 0.1;
	cs[1].mean[1] = 254.9999;
	cs[1].mean[2] = 1.0 / 3;
	const mp_kv extra[] = {
		{"class_names", "abbey,airport_terminal,amphitheater,amusement_park,aquarium,"
				"aqueduct,art_gallery"},
		{"note", "caf\xc3\xa9 \"quoted\""},
	};
	for (int k = 0; k < 2; k++) {
		const char *path = tmp_path("rt.safetensors");
		mp_resnet *net = new_net(be, &cs[k]);
		randomize(net, 0);
		save(net, path, extra, 2, 0);

		mp_backend *be2 = mp_backend_cpu_new(1);
		assert_non_null(be2);
		mp_st_file f;
		mp_error e;
		mp_resnet *back = mp_weights_load(path, be2, &f, &e);
		if (!back)
			fail_msg("mp_weights_load: %s", e.msg);
		assert_config_equal(&cs[k], mp_resnet_cfg(back));
		assert_nets_equal(net, back, 0);
		assert_string_equal(mp_st_meta_get(&f, "format"), MP_WEIGHTS_FORMAT);
		assert_string_equal(mp_st_meta_get(&f, "format_version"), "2");
		assert_string_equal(mp_st_meta_get(&f, "class_names"), extra[0].value);
		assert_string_equal(mp_st_meta_get(&f, "note"), extra[1].value);
		assert_true(f.has_crc);
		assert_true(f.has_header_crc);
		/* a weights file holds exactly the network's tensors, in its order */
		assert_int_equal(f.ntensors, mp_resnet_param_count(net));
		for (size_t i = 0; i < f.ntensors; i++)
			assert_string_equal(f.tensors[i].name, mp_resnet_param(net, (int)i)->name);
		mp_st_free(&f);
		mp_resnet_free(back);
		mp_backend_free(be2);
		mp_resnet_free(net);
	}
}

static void checkpoint_momentum(void **state)
{
	(void)state;
	mp_resnet_config c;
	mp_error e;
	small_config(&c, 4, 8, 8, 12, 'B');
	mp_resnet *net = new_net(be, &c);
	randomize(net, 1);
	const char *ckpt = tmp_path("ckpt.safetensors"), *weights = tmp_path("w.safetensors");
	const mp_kv extra[] = {{"epoch", "7"}, {"step", "5467"}};
	save(net, ckpt, extra, 2, 1);
	save(net, weights, NULL, 0, 0);

	/* with want_momentum: every momentum buffer comes back */
	mp_st_file f;
	mp_resnet_config fc;
	if (mp_st_read(ckpt, 1 << 26, &f, &e) < 0)
		fail_msg("%s", e.msg);
	int weights_tensors = 0;
	for (int i = 0; i < mp_resnet_param_count(net); i++)
		weights_tensors += mp_resnet_param(net, i)->kind == MP_PARAM_WEIGHT;
	assert_int_equal(f.ntensors, mp_resnet_param_count(net) + weights_tensors);
	assert_non_null(mp_st_find(&f, "momentum.fc.weight"));
	assert_null(mp_st_find(&f, "momentum.fc_bn.running_mean"));
	assert_string_equal(mp_st_meta_get(&f, "step"), "5467");
	assert_int_equal(mp_weights_config(&f, &fc, &e), 0);
	assert_config_equal(&c, &fc);
	mp_resnet *back = mp_resnet_new(&fc, be, &e);
	assert_non_null(back);
	if (mp_weights_load_into(back, &f, 1, &e) < 0)
		fail_msg("%s", e.msg);
	assert_nets_equal(net, back, 1);
	mp_resnet_free(back);
	mp_st_free(&f);

	/* without: the values load, and the momentum is made only when
	 * training needs it, zero */
	back = mp_weights_load(ckpt, be, &f, &e);
	if (!back)
		fail_msg("%s", e.msg);
	assert_nets_equal(net, back, 0);
	mp_param *p = mp_resnet_find(back, "stages.2.blocks.0.conv1.weight");
	assert_null(p->momentum.data);
	float none;
	assert_int_equal(mp_resnet_download(back, &p->momentum, &none, &e), -1);
	assert_int_equal(mp_resnet_train_state(back, &e), 0);
	float *v = download(back, &p->momentum);
	for (size_t i = 0; i < mp_tensor_count(&p->momentum); i++)
		assert_true(v[i] == 0.0f);
	free(v);
	mp_resnet_free(back);
	mp_st_free(&f);

	/* a weights file is not a checkpoint */
	if (mp_st_read(weights, 1 << 26, &f, &e) < 0)
		fail_msg("%s", e.msg);
	back = mp_resnet_new(&c, be, &e);
	assert_int_equal(mp_weights_load_into(back, &f, 1, &e), -1);
	char want[PATH_MAX + 128];
	snprintf(want, sizeof want, "%s: no tensor named momentum.stem.conv.weight (not a checkpoint?)",
		 weights);
	assert_string_equal(e.msg, want);
	assert_int_equal(mp_weights_load_into(back, &f, 0, &e), 0);
	mp_resnet_free(back);
	mp_st_free(&f);
	mp_resnet_free(net);
}

/* ---- rejections -------------------------------------------------------------- */

static void wrong_shapes_and_dtypes(void **state)
{
	(void)state;
	const char *ref = reference_file();
	mp_resnet_config c;
	mp_st_file f;
	mp_error e;
	char want[PATH_MAX + 256];
	/* a file for widths 4,8,8,12 into a net of widths 4,8,8,16 */
	small_config(&c, 4, 8, 8, 16, 'A');
	mp_resnet *net = new_net(be, &c);
	if (mp_st_read(ref, 1 << 26, &f, &e) < 0)
		fail_msg("%s", e.msg);
	assert_int_equal(mp_weights_load_into(net, &f, 0, &e), -1);
	snprintf(want, sizeof want, "%s: tensor stages.3.blocks.0.conv1.weight has shape [12,8,3,3], "
		 "expected [16,8,3,3]", ref);
	assert_string_equal(e.msg, want);
	mp_st_free(&f);
	mp_resnet_free(net);

	/* metadata that disagrees with the tensors */
	const char *bad = tmp_path("bad.safetensors");
	rewrite(ref, bad, &(edit){.key = "widths", .value = "4,8,8,16"});
	expect_load_error(bad, "tensor stages.3.blocks.0.conv1.weight has shape [12,8,3,3], "
			       "expected [16,8,3,3]");
	rewrite(ref, bad, &(edit){.key = "classes", .value = "12"});
	expect_load_error(bad, "tensor fc.weight has shape [10,12], expected [12,12]");
	rewrite(ref, bad, &(edit){.key = "stem_kernel", .value = "5"});
	expect_load_error(bad, "tensor stem.conv.weight has shape [4,3,3,3], expected [4,3,5,5]");
	rewrite(ref, bad, &(edit){.key = "depth", .value = "2"});
	expect_load_error(bad, "no tensor named stages.0.blocks.1.conv1.weight");
	rewrite(ref, bad, &(edit){.key = "shortcut", .value = "B"});
	expect_load_error(bad, "no tensor named stages.1.blocks.0.shortcut.conv.weight");
	rewrite(ref, bad, &(edit){.key = "fc_bn", .value = "0"});
	expect_load_error(bad, "tensor fc_bn.weight is not part of this network");
	/* a tensor in another dtype */
	rewrite(ref, bad, &(edit){.as_f64 = "stages.1.blocks.0.bn2.bias"});
	expect_load_error(bad, "tensor stages.1.blocks.0.bn2.bias has dtype F64, expected F32");
}

static void missing_and_extra_tensors(void **state)
{
	(void)state;
	const char *ref = reference_file(), *bad = tmp_path("bad.safetensors");
	rewrite(ref, bad, &(edit){.drop = "stages.1.blocks.0.bn2.running_var"});
	expect_load_error(bad, "no tensor named stages.1.blocks.0.bn2.running_var");
	rewrite(ref, bad, &(edit){.drop = "fc.weight"});
	expect_load_error(bad, "no tensor named fc.weight");
	rewrite(ref, bad, &(edit){.add = "stages.4.blocks.0.conv1.weight"});
	expect_load_error(bad, "tensor stages.4.blocks.0.conv1.weight is not part of this network");
	/* one momentum tensor makes a checkpoint that lacks the others */
	rewrite(ref, bad, &(edit){.add = "momentum.fc.bias"});
	expect_load_error(bad, "no tensor named momentum.stem.conv.weight (a checkpoint with part "
			       "of its momentum)");

	/* a checkpoint: BN running statistics are not learned, no momentum */
	mp_resnet_config c;
	small_config(&c, 4, 8, 8, 12, 'A');
	mp_resnet *net = new_net(be, &c);
	const char *ckpt = tmp_path("ckpt.safetensors");
	save(net, ckpt, NULL, 0, 1);
	mp_resnet_free(net);
	rewrite(ckpt, bad, &(edit){.add = "momentum.stem.bn.running_mean"});
	expect_load_error(bad, "tensor momentum.stem.bn.running_mean is not part of this network");
	rewrite(ckpt, bad, &(edit){.add = "momentum.fc.bias"});
	expect_load_error(bad, "tensor momentum.fc.bias is not part of this network");
	rewrite(ckpt, bad, &(edit){.drop = "momentum.stages.2.blocks.0.bn1.bias"});
	expect_load_error(bad, "no tensor named momentum.stages.2.blocks.0.bn1.bias (a checkpoint "
			       "with part of its momentum)");
}

static void bad_metadata(void **state)
{
	(void)state;
	const char *ref = reference_file(), *bad = tmp_path("bad.safetensors");
	static const struct {
		const char *key, *value, *msg;
	} cases[] = {
		{"format", "pt", "not an mp-resnet weights file (metadata format is \"pt\")"},
		{"format", NULL, "not an mp-resnet weights file (metadata format is missing)"},
		{"format_version", "3", "format_version 3 is not supported (expected 1 to 2)"},
		{"format_version", NULL, "metadata has no \"format_version\""},
		{"depth", NULL, "metadata has no \"depth\""},
		{"depth", "0", "metadata \"depth\" = \"0\" is not a number from 1 to 1000"},
		{"depth", "1001", "metadata \"depth\" = \"1001\" is not a number from 1 to 1000"},
		{"depth", "one", "metadata \"depth\" = \"one\" is not a number from 1 to 1000"},
		{"depth", "1.5", "metadata \"depth\" = \"1.5\" is not a number from 1 to 1000"},
		{"depth", "", "metadata \"depth\" = \"\" is not a number from 1 to 1000"},
		{"widths", NULL, "metadata has no \"widths\""},
		{"widths", "", "0 stages is outside 1..8"},
		{"widths", "4,8,,12", "metadata \"widths\" = \"4,8,,12\" is not a list of up to 8 widths"},
		{"widths", "4,8,8,12,", "metadata \"widths\" = \"4,8,8,12,\" is not a list of up to 8 widths"},
		{"widths", "4,8,8,0", "metadata \"widths\" = \"4,8,8,0\" is not a list of up to 8 widths"},
		{"widths", "4;8;8;12", "metadata \"widths\" = \"4;8;8;12\" is not a list of up to 8 widths"},
		{"widths", "1,1,1,1,1,1,1,1,1",
		 "metadata \"widths\" = \"1,1,1,1,1,1,1,1,1\" is not a list of up to 8 widths"},
		{"widths", "4,8,6,12", "shortcut A needs widths that do not shrink (stage 2: 6 after 8)"},
		{"shortcut", NULL, "metadata \"shortcut\" is not A or B"},
		{"shortcut", "C", "metadata \"shortcut\" is not A or B"},
		{"shortcut", "AB", "metadata \"shortcut\" is not A or B"},
		{"shortcut", "a", "metadata \"shortcut\" is not A or B"},
		{"classes", NULL, "metadata has no \"classes\""},
		{"classes", "1", "metadata \"classes\" = \"1\" is not a number from 2 to 65536"},
		{"classes", "ten", "metadata \"classes\" = \"ten\" is not a number from 2 to 65536"},
		{"classes", "10 ", "metadata \"classes\" = \"10 \" is not a number from 2 to 65536"},
		{"mean", NULL, "metadata \"mean\" is not r,g,b"},
		{"mean", "1,2", "metadata \"mean\" is not r,g,b"},
		{"mean", "a,b,c", "metadata \"mean\" is not r,g,b"},
		{"mean", "1,2,3,4", "metadata \"mean\" is not r,g,b"},
		{"mean", "1,2,3x", "metadata \"mean\" is not r,g,b"},
		{"mean", "1,2,300", "metadata \"mean\" = \"1,2,300\" is outside 0..255"},
		{"mean", "-1,2,3", "metadata \"mean\" = \"-1,2,3\" is outside 0..255"},
		{"mean", "nan,2,3", "metadata \"mean\" is not r,g,b"},
		/* numbers as they are written in decimal, nothing sscanf also takes */
		{"mean", " 1,2,3", "metadata \"mean\" is not r,g,b"},
		{"mean", "1, 2,3", "metadata \"mean\" is not r,g,b"},
		{"mean", "1,2,0x10", "metadata \"mean\" is not r,g,b"},
		{"bn_eps", " 0.001", "metadata \"bn_eps\" = \" 0.001\" is not a number"},
		{"bn_eps", "0x1p-10", "metadata \"bn_eps\" = \"0x1p-10\" is not a number"},
		{"stem_kernel", "4", "stem kernel 4 is not odd in 1..15"},
		{"stem_stride", "0", "metadata \"stem_stride\" = \"0\" is not a number from 1 to 8"},
		{"fc_bn", "2", "metadata \"fc_bn\" = \"2\" is not a number from 0 to 1"},
		{"bn_eps", "0", "BN eps 0 is outside (0, 1)"},
		{"bn_eps", "x", "metadata \"bn_eps\" = \"x\" is not a number"},
		{"bn_momentum", "inf", "metadata \"bn_momentum\" = \"inf\" is not a number"},
		{"input_size", NULL, "metadata has no \"input_size\""},
		/* integers are plain decimal: the same values with a sign, a blank
		 * or a leading zero are refused, each with its key and value */
		{"format_version", "02",
		 "metadata \"format_version\" = \"02\" is not a version (expected 1 to 2)"},
		{"format_version", "+2",
		 "metadata \"format_version\" = \"+2\" is not a version (expected 1 to 2)"},
		{"format_version", " 2",
		 "metadata \"format_version\" = \" 2\" is not a version (expected 1 to 2)"},
		{"format_version", "2.0",
		 "metadata \"format_version\" = \"2.0\" is not a version (expected 1 to 2)"},
		{"format_version", "0", "format_version 0 is not supported (expected 1 to 2)"},
		{"format_version", "18446744073709551617",
		 "metadata \"format_version\" = \"18446744073709551617\" is not a version "
		 "(expected 1 to 2)"},
		{"depth", "+1", "metadata \"depth\" = \"+1\" is not a number from 1 to 1000"},
		{"depth", " 1", "metadata \"depth\" = \" 1\" is not a number from 1 to 1000"},
		{"depth", "01", "metadata \"depth\" = \"01\" is not a number from 1 to 1000"},
		{"depth", "-0", "metadata \"depth\" = \"-0\" is not a number from 1 to 1000"},
		{"depth", "1e0", "metadata \"depth\" = \"1e0\" is not a number from 1 to 1000"},
		{"classes", "010", "metadata \"classes\" = \"010\" is not a number from 2 to 65536"},
		{"stem_kernel", "03", "metadata \"stem_kernel\" = \"03\" is not a number from 1 to 15"},
		{"stem_stride", "\t2", "metadata \"stem_stride\" = \"\t2\" is not a number from 1 to 8"},
		{"fc_bn", "+1", "metadata \"fc_bn\" = \"+1\" is not a number from 0 to 1"},
		{"fc_bn", "00", "metadata \"fc_bn\" = \"00\" is not a number from 0 to 1"},
		{"input_size", "0112",
		 "metadata \"input_size\" = \"0112\" is not a number from 1 to 4096"},
		{"widths", "+4,8,8,12", "metadata \"widths\" = \"+4,8,8,12\" is not a list of up to 8 widths"},
		{"widths", "4, 8,8,12", "metadata \"widths\" = \"4, 8,8,12\" is not a list of up to 8 widths"},
		{"widths", "4,08,8,12", "metadata \"widths\" = \"4,08,8,12\" is not a list of up to 8 widths"},
		{"widths", ",4,8,8,12", "metadata \"widths\" = \",4,8,8,12\" is not a list of up to 8 widths"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		rewrite(ref, bad, &(edit){.key = cases[i].key, .value = cases[i].value});
		expect_load_error(bad, cases[i].msg);
	}
	/* and the file itself still loads */
	mp_st_file f;
	mp_error e;
	mp_resnet *net = mp_weights_load(ref, be, &f, &e);
	assert_non_null(net);
	mp_resnet_free(net);
	mp_st_free(&f);
}

/* mp_resnet_config_scalars counts what mp_resnet_new allocates. */
static void config_scalars(void **state)
{
	(void)state;
	mp_resnet_config cs[3];
	small_config(&cs[0], 4, 8, 8, 12, 'A');
	small_config(&cs[1], 4, 8, 8, 12, 'B');
	cs[1].depth = 2;
	cs[1].stem_kernel = 5;
	mp_resnet_config_default(&cs[2]);
	cs[2].stages = 2;
	cs[2].widths[1] = 32;
	cs[2].fc_bn = 0;
	for (int k = 0; k < 3; k++) {
		mp_resnet *net = new_net(be, &cs[k]);
		uint64_t n = 0;
		for (int i = 0; i < mp_resnet_param_count(net); i++) {
			const mp_param *p = mp_resnet_param(net, i);
			uint64_t m = 1;
			for (int d = 0; d < p->ndim; d++)
				m *= (uint64_t)p->shape[d];
			n += m;
		}
		assert_int_equal(mp_resnet_config_scalars(&cs[k]), n);
		mp_resnet_free(net);
	}
}

/* Metadata that describes a network far larger than the file's tensors is
 * refused before the network is built (it would be terabytes here). */
static void network_larger_than_file(void **state)
{
	(void)state;
	const char *ref = reference_file(), *bad = tmp_path("bad.safetensors"),
		   *big = tmp_path("big.safetensors");
	mp_st_file f;
	mp_error e;
	assert_int_equal(mp_st_read(ref, 1 << 26, &f, &e), 0);
	unsigned long long held = f.data_len;
	mp_st_free(&f);
	rewrite(ref, big, &(edit){.key = "depth", .value = "1000"});
	rewrite(big, bad, &(edit){.key = "widths", .value = "65536,65536,65536,65536"});
	char msg[256];
	snprintf(msg, sizeof msg, "the network in the metadata has %llu bytes of tensors, "
		 "far more than the file holds (%llu)",
		 4 * (65536ull * 3 * 3 * 3 + 4 * 65536 +		  /* stem */
		      4000 * (2 * 65536ull * 65536 * 9 + 8 * 65536) + /* blocks */
		      10 * 65536 + 4 * 10),				  /* head */
		 held);
	expect_load_error(bad, msg);
}

/* A small file: every shorter length fails with a message naming the file
 * and never crashes; every flipped byte of the data section fails the data
 * CRC, and every flipped byte before it the header CRC (or, in the key
 * "header_crc32", the rule that version 2 has one). */
static void truncated_and_corrupt(void **state)
{
	(void)state;
	mp_resnet_config c;
	small_config(&c, 1, 1, 1, 2, 'B');
	c.classes = 2;
	mp_resnet *net = new_net(be, &c);
	randomize(net, 0);
	const char *good = tmp_path("small.safetensors"), *bad = tmp_path("cut.safetensors");
	save(net, good, NULL, 0, 0);
	mp_resnet_free(net);
	uint8_t *buf;
	size_t len;
	mp_error e;
	assert_int_equal(mp_read_file(good, 1 << 20, &buf, &len, &e), 0);
	const size_t data = 8 + (size_t)mp_get_u64(buf);
	assert_true(data < len);
	char prefix[PATH_MAX + 8];
	snprintf(prefix, sizeof prefix, "%s: ", bad);

	for (size_t n = 0; n < len; n++) {
		FILE *fp = fopen(bad, "wb");
		assert_non_null(fp);
		assert_int_equal(fwrite(buf, 1, n, fp), n);
		assert_int_equal(fclose(fp), 0);
		mp_st_file f;
		e.msg[0] = '\0';
		mp_resnet *r = mp_weights_load(bad, be, &f, &e);
		if (r)
			fail_msg("%zu of %zu bytes loaded", n, len);
		if (strncmp(e.msg, prefix, strlen(prefix)))
			fail_msg("%zu bytes: \"%s\"", n, e.msg);
		assert_null(f.mem);
	}

	size_t loaded = 0;
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x20;
		FILE *fp = fopen(bad, "wb");
		assert_non_null(fp);
		assert_int_equal(fwrite(buf, 1, len, fp), len);
		assert_int_equal(fclose(fp), 0);
		buf[i] ^= 0x20;
		mp_st_file f;
		e.msg[0] = '\0';
		mp_resnet *r = mp_weights_load(bad, be, &f, &e);
		if (i >= data) {
			if (r)
				fail_msg("a flipped byte at %zu of the data section loaded", i - data);
			if (strncmp(e.msg, prefix, strlen(prefix)) ||
			    !strstr(e.msg, "data CRC mismatch: the file is corrupt"))
				fail_msg("byte %zu: \"%s\"", i, e.msg);
		} else if (r) {
			loaded++;
			print_message("# a flipped byte at %zu of the header loaded\n", i - 8);
			mp_resnet_free(r);
			mp_st_free(&f);
		} else if (strncmp(e.msg, prefix, strlen(prefix))) {
			fail_msg("byte %zu: \"%s\"", i, e.msg);
		}
	}
	assert_int_equal(loaded, 0);
	free(buf);
}

/* ---- the header CRC and format versions -------------------------------------------- */

/* buf (len) with the first from..from+n bytes replaced by repl (m bytes). */
static uint8_t *splice(const uint8_t *buf, size_t *len, size_t from, size_t n,
		       const char *repl)
{
	size_t m = strlen(repl), out = *len - n + m;
	uint8_t *b = malloc(out);
	assert_non_null(b);
	memcpy(b, buf, from);
	memcpy(b + from, repl, m);
	memcpy(b + from + m, buf + from + n, *len - from - n);
	*len = out;
	return b;
}

static void write_bytes(const char *path, const uint8_t *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* The file as a version 1 writer wrote it: the same bytes without the
 * member "header_crc32", format_version "1", the header padded anew. */
static uint8_t *old_form(const uint8_t *buf, size_t *len, const char *version)
{
	static const char member[] = "\"header_crc32\":\"01234567\",";
	char ver[64];
	size_t n = (size_t)mp_get_u64(buf), at = 8 + strlen("{\"__metadata__\":{");
	assert_memory_equal(buf + at, member, 16);
	size_t l = *len;
	uint8_t *a = splice(buf, &l, at, sizeof member - 1, ""), *b, *c;
	n -= sizeof member - 1;
	const char *v = memmem(a + 8, n, "\"format_version\":\"2\"", 20);
	assert_non_null(v);
	snprintf(ver, sizeof ver, "\"format_version\":\"%s\"", version);
	b = splice(a, &l, (size_t)((const uint8_t *)v - a), 20, ver);
	n += strlen(ver) - 20;
	/* the padding: spaces before the data up to a multiple of 8 */
	size_t end = 8 + n;
	while (b[end - 1] == ' ')
		end--;
	static const char spaces[] = "       ";
	size_t pad = (8 - end % 8) % 8;
	c = splice(b, &l, end, 8 + n - end, spaces + 7 - pad);
	mp_put_u64(c, end - 8 + pad);
	free(a);
	free(b);
	*len = l;
	return c;
}

static void old_version_files_load(void **state)
{
	(void)state;
	const char *ref = reference_file(), *old = tmp_path("v1.safetensors");
	uint8_t *buf;
	size_t len;
	mp_error e;
	mp_st_file f;
	assert_int_equal(mp_read_file(ref, 1 << 26, &buf, &len, &e), 0);
	size_t l1 = len;
	uint8_t *v1 = old_form(buf, &l1, "1");
	write_bytes(old, v1, l1);
	mp_resnet *net = mp_weights_load(old, be, &f, &e);
	if (!net)
		fail_msg("%s", e.msg);
	assert_false(f.has_header_crc);
	assert_true(f.has_crc);
	assert_int_equal((8 + f.header_len) % 8, 0);
	mp_st_free(&f);
	mp_resnet *ref_net = mp_weights_load(ref, be, &f, &e);
	assert_non_null(ref_net);
	assert_nets_equal(net, ref_net, 0);
	mp_st_free(&f);
	mp_resnet_free(net);
	mp_resnet_free(ref_net);
	/* the same bytes that say version 2 lack what version 2 has */
	size_t l2 = len;
	uint8_t *v2 = old_form(buf, &l2, "2");
	write_bytes(old, v2, l2);
	expect_load_error(old, "metadata \"header_crc32\" is missing or damaged: format_version 2 "
			       "has it as the first key of __metadata__ (a file rewritten by other "
			       "software: set format_version to 1 there, and leave out \"crc32\" if "
			       "the tensors changed)");
	free(v1);
	free(v2);
	free(buf);
}

/* A damaged key name cannot turn a check off: version 2 requires the
 * header CRC, and the header CRC covers the data CRC's key. In version 1
 * nothing covers the metadata: a damaged mean loads. */
static void damaged_crc_keys_are_errors(void **state)
{
	(void)state;
	const char *ref = reference_file(), *bad = tmp_path("key.safetensors");
	uint8_t *buf;
	size_t len;
	mp_error e;
	mp_st_file f;
	assert_int_equal(mp_read_file(ref, 1 << 26, &buf, &len, &e), 0);
	size_t n = (size_t)mp_get_u64(buf);
	static const char *const needles[] = {"\"header_crc32\"", "\"crc32\"", "\"mean\":\"",
					      "\"bn_eps\":\"0.00"};
	/* from the needle's end: "crc33", the mean's first digit, bn_eps 0.01 */
	static const int back[] = {2, 2, 0, 1};
	static const char *const msgs[] = {
		"metadata \"header_crc32\" is missing or damaged: format_version 2 has it as "
		"the first key of __metadata__",
		"header CRC mismatch: the file is corrupt (header_crc32 ",
		"header CRC mismatch: the file is corrupt (header_crc32 ",
		"header CRC mismatch: the file is corrupt (header_crc32 ",
	};
	for (int k = 0; k < 4; k++) {
		const uint8_t *at = memmem(buf + 8, n, needles[k], strlen(needles[k]));
		assert_non_null(at);
		size_t i = (size_t)(at - buf) + strlen(needles[k]) - (size_t)back[k];
		buf[i] ^= 0x01;
		write_bytes(bad, buf, len);
		buf[i] ^= 0x01;
		mp_resnet *r = mp_weights_load(bad, be, &f, &e);
		if (r)
			fail_msg("%s damaged: loaded", needles[k]);
		if (!strstr(e.msg, msgs[k]) || strncmp(e.msg, bad, strlen(bad)))
			fail_msg("%s damaged: \"%s\"", needles[k], e.msg);
	}
	/* version 1: the same damage to the mean goes unseen */
	size_t l1 = len;
	uint8_t *v1 = old_form(buf, &l1, "1");
	uint8_t *at = memmem(v1 + 8, (size_t)mp_get_u64(v1), "\"mean\":\"", 8);
	assert_non_null(at);
	at[8] ^= 0x01;
	write_bytes(bad, v1, l1);
	mp_resnet *r = mp_weights_load(bad, be, &f, &e);
	assert_non_null(r);
	assert_false(f.has_header_crc);
	mp_st_free(&f);
	mp_resnet_free(r);
	free(v1);
	free(buf);
}

/* ---- PyTorch, both ways ------------------------------------------------------------ */

enum { PY_N = 2, PY_H = 40, PY_W = 36 };

static const char py_script[] =
	"import sys\n"
	"import numpy as np\n"
	"import torch\n"
	"import mp_resnet\n"
	"d = sys.argv[1]\n"
	"x = np.loadtxt(d + \"/input.txt\", dtype=np.float32)\n"
	"x = torch.from_numpy(x.reshape(int(sys.argv[2]), 3, int(sys.argv[3]), int(sys.argv[4])))\n"
	"def line(name, values):\n"
	"    return name + \" \" + \" \".join(repr(float(v)) for v in values) + \"\\n\"\n"
	"torch.manual_seed(3)\n"
	"net = mp_resnet.ResNet(depth=1, widths=(4, 8, 8, 12), classes=10)\n"
	"with torch.no_grad():\n"
	"    for m in net.modules():\n"
	"        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):\n"
	"            m.weight.uniform_(0.5, 1.5)\n"
	"            m.bias.uniform_(-0.5, 0.5)\n"
	"    net.train()\n"
	"    for _ in range(3):\n"
	"        net(torch.randn(8, 3, 32, 32) * 60)\n"
	"net.eval()\n"
	"state = {k: v.detach().numpy().astype(np.float32)\n"
	"         for k, v in net.state_dict().items() if not k.endswith(\"num_batches_tracked\")}\n"
	"meta = {\"format\": \"mp-resnet\", \"format_version\": \"1\", \"depth\": \"1\",\n"
	"        \"widths\": \"4,8,8,12\", \"stem_kernel\": \"3\", \"stem_stride\": \"2\",\n"
	"        \"shortcut\": \"A\", \"classes\": \"10\", \"fc_bn\": \"1\", \"bn_eps\": \"0.001\",\n"
	"        \"bn_momentum\": \"0.9\", \"input_size\": \"112\",\n"
	"        \"mean\": \"123.675,116.28,103.53\"}\n"
	"mp_resnet.write_safetensors(d + \"/torch.safetensors\", state, meta, checksums=False)\n"
	"meta[\"format_version\"] = \"2\"\n"
	"mp_resnet.write_safetensors(d + \"/torch2.safetensors\", state, meta)\n"
	"with torch.no_grad():\n"
	"    logits = net(x).numpy().ravel()\n"
	"with open(d + \"/torch.txt\", \"w\") as f:\n"
	"    for k, v in state.items():\n"
	"        f.write(line(k, v.ravel()))\n"
	"    f.write(line(\"logits\", logits))\n"
	"cnet, cmeta = mp_resnet.load(d + \"/c.safetensors\")\n"
	"with torch.no_grad():\n"
	"    clogits = cnet(x).numpy().ravel()\n"
	"with open(d + \"/c-in-torch.txt\", \"w\") as f:\n"
	"    f.write(line(\"logits\", clogits))\n"
	"    f.write(\"class_names \" + cmeta[\"class_names\"] + \"\\n\")\n"
	"    f.write(\"shortcut \" + cmeta[\"shortcut\"] + \"\\n\")\n";


/* Reads a text file of lines "name v1 v2 ..." into a malloc'ed buffer. */
static char *slurp(const char *path)
{
	uint8_t *buf;
	size_t len;
	mp_error e;
	if (mp_read_file(path, 1 << 24, &buf, &len, &e) < 0)
		fail_msg("%s", e.msg);
	char *s = realloc(buf, len + 1);
	assert_non_null(s);
	s[len] = '\0';
	return s;
}

/* Parses the numbers after the name on one line; returns how many. */
static size_t parse_values(char *line, float *out, size_t max)
{
	size_t n = 0;
	char *p = strchr(line, ' '), *end;
	while (p && *p) {
		double v = strtod(p, &end);
		if (end == p)
			break;
		assert_true(n < max);
		out[n++] = (float)v;
		p = end;
	}
	return n;
}

static double max_abs(const float *a, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		m = fmax(m, fabs(a[i]));
	return m;
}

static double rel_diff(const float *a, const float *ref, size_t n)
{
	double d = 0;
	for (size_t i = 0; i < n; i++)
		d = fmax(d, fabs((double)a[i] - ref[i]));
	return d / fmax(max_abs(ref, n), 1e-30);
}

static float *infer(mp_resnet *net, const float *x)
{
	mp_error e;
	const size_t n = (size_t)PY_N * mp_resnet_cfg(net)->classes;
	float *l = malloc(n * sizeof *l);
	assert_non_null(l);
	if (mp_resnet_forward(net, x, PY_N, PY_H, PY_W, 0, &e) < 0 || mp_resnet_logits(net, l, &e) < 0)
		fail_msg("%s", e.msg);
	return l;
}

static void pytorch_both_ways(void **state)
{
	(void)state;
	mp_error e;
	/* the input, as text both sides read exactly */
	const size_t nx = (size_t)PY_N * 3 * PY_H * PY_W;
	float *x = malloc(nx * sizeof *x);
	assert_non_null(x);
	FILE *fp = fopen(tmp_path("input.txt"), "w");
	assert_non_null(fp);
	for (size_t i = 0; i < nx; i++) {
		x[i] = (float)uniform(-110, 130);
		fprintf(fp, "%.9g\n", (double)x[i]);
	}
	assert_int_equal(fclose(fp), 0);

	/* ours for PyTorch: shortcut B, non-default BN constants, trained-looking
	 * BN state (random affine parameters, running statistics from a few
	 * training batches) */
	mp_resnet_config c;
	small_config(&c, 4, 8, 8, 12, 'B');
	c.bn_momentum = 0.5f;
	c.bn_eps = 1e-4f;
	mp_resnet *ours = new_net(be, &c);
	for (int i = 0; i < mp_resnet_param_count(ours); i++) {
		mp_param *p = mp_resnet_param(ours, i);
		const char *leaf = strrchr(p->name, '.') + 1;
		if (p->ndim != 1 || p->kind != MP_PARAM_WEIGHT)
			continue;
		float *v = download(ours, &p->value);
		for (size_t j = 0; j < mp_tensor_count(&p->value); j++)
			v[j] = (float)(!strcmp(leaf, "weight") ? uniform(0.5, 1.5) : uniform(-0.5, 0.5));
		upload(ours, &p->value, v);
		free(v);
	}
	float *batch = malloc(8 * 3 * 32 * 32 * sizeof *batch);
	assert_non_null(batch);
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < 8 * 3 * 32 * 32; i++)
			batch[i] = (float)uniform(-100, 100);
		if (mp_resnet_forward(ours, batch, 8, 32, 32, 1, &e) < 0)
			fail_msg("%s", e.msg);
	}
	free(batch);
	const mp_kv extra[] = {{"class_names", "abbey,airport_terminal,amphitheater"}};
	save(ours, tmp_path("c.safetensors"), extra, 1, 0);
	float *ours_logits = infer(ours, x);

	/* PyTorch's side */
	char root[PATH_MAX], cmd[4 * PATH_MAX];
	find_root(root, sizeof root);
	assert_null(strchr(root, '\''));
	assert_null(strchr(dir, '\''));
	fp = fopen(tmp_path("interop.py"), "w");
	assert_non_null(fp);
	fputs(py_script, fp);
	assert_int_equal(fclose(fp), 0);
	snprintf(cmd, sizeof cmd,
		 "PYTHONDONTWRITEBYTECODE=1 PYTHONPATH='%s/scripts' /usr/bin/python3 '%s' '%s' %d %d %d",
		 root, tmp_path("interop.py"), dir, PY_N, PY_H, PY_W);
	const double t0 = mp_now();
	int rc = system(cmd);
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
		fail_msg("/usr/bin/python3 with torch could not run the PyTorch side (status %d): "
			 "python3, python3-numpy, python3-torch and %s/scripts/mp_resnet.py are needed",
			 rc, root);
	print_message("# PyTorch side: %.1f s\n", mp_now() - t0);

	/* theirs in C: the metadata, every value to the bit, the logits */
	mp_st_file f;
	const char *theirs_path = tmp_path("torch.safetensors");
	mp_resnet *theirs = mp_weights_load(theirs_path, be, &f, &e);
	if (!theirs)
		fail_msg("%s", e.msg);
	assert_false(f.has_crc); /* another writer's file */
	assert_false(f.has_header_crc);
	/* and as mp_resnet.write_safetensors writes version 2, with both CRCs */
	{
		mp_st_file f2;
		mp_resnet *v2 = mp_weights_load(tmp_path("torch2.safetensors"), be, &f2, &e);
		if (!v2)
			fail_msg("%s", e.msg);
		assert_true(f2.has_crc && f2.has_header_crc);
		assert_nets_equal(v2, theirs, 0);
		mp_resnet_free(v2);
		mp_st_free(&f2);
	}
	mp_resnet_config want;
	small_config(&want, 4, 8, 8, 12, 'A');
	assert_config_equal(&want, mp_resnet_cfg(theirs));
	char *text = slurp(tmp_path("torch.txt")), *save_p, *line;
	float *vals = malloc(4096 * sizeof *vals);
	assert_non_null(vals);
	int i = 0;
	double logit_err = -1;
	for (line = strtok_r(text, "\n", &save_p); line; line = strtok_r(NULL, "\n", &save_p)) {
		const size_t n = parse_values(line, vals, 4096);
		*strchr(line, ' ') = '\0';
		if (!strcmp(line, "logits")) {
			assert_int_equal(n, PY_N * 10);
			float *l = infer(theirs, x);
			logit_err = rel_diff(l, vals, n);
			print_message("# PyTorch's weights: logits in C vs PyTorch, max relative "
				      "difference %.2g (logits up to %.3g)\n", logit_err, max_abs(vals, n));
			assert_true(max_abs(vals, n) > 0.1);
			assert_true(logit_err <= LOGIT_RTOL);
			free(l);
			continue;
		}
		mp_param *p = mp_resnet_param(theirs, i++);
		assert_non_null(p);
		assert_string_equal(p->name, line); /* the same order */
		assert_int_equal(n, mp_tensor_count(&p->value));
		float *v = download(theirs, &p->value);
		if (memcmp(v, vals, n * sizeof *v))
			fail_msg("%s: the values differ from PyTorch's", p->name);
		free(v);
	}
	assert_int_equal(i, mp_resnet_param_count(theirs));
	assert_true(logit_err >= 0);
	free(text);
	mp_resnet_free(theirs);
	mp_st_free(&f);

	/* ours in PyTorch */
	text = slurp(tmp_path("c-in-torch.txt"));
	line = strtok_r(text, "\n", &save_p);
	const size_t n = parse_values(line, vals, 4096);
	assert_int_equal(n, PY_N * 10);
	logit_err = rel_diff(vals, ours_logits, n);
	print_message("# our weights: logits in PyTorch vs C, max relative difference %.2g "
		      "(logits up to %.3g)\n", logit_err, max_abs(ours_logits, n));
	assert_true(max_abs(ours_logits, n) > 0.1);
	assert_true(logit_err <= LOGIT_RTOL);
	assert_string_equal(strtok_r(NULL, "\n", &save_p),
			    "class_names abbey,airport_terminal,amphitheater");
	assert_string_equal(strtok_r(NULL, "\n", &save_p), "shortcut B");
	free(text);
	free(vals);
	free(ours_logits);
	free(x);
	mp_resnet_free(ours);
}

/* An F32 tensor of n elements over caller-owned data, as a file read holds. */
static mp_st_tensor f32_tensor(const float *v, int n)
{
	mp_st_tensor t = {.dtype = MP_ST_F32, .ndim = 1, .data = v};
	t.shape[0] = n;
	t.numel = (uint64_t)n;
	t.nbytes = (uint64_t)n * 4;
	return t;
}

static void diff_scale_ignores_infinities(void **state)
{
	(void)state;
	const float a[3] = {INFINITY, 1, 5}, b[3] = {INFINITY, 2, 5};
	mp_st_tensor ta = f32_tensor(a, 3), tb = f32_tensor(b, 3);
	double d, r;
	assert_int_equal(mp_st_diff(&ta, &tb, &d, &r), 0);
	assert_true(d == 1);
	/* relative to the largest finite |b|, 5, not to the infinity */
	assert_true(r == 0.2);
	/* no finite non-zero element to scale by: relatively infinite */
	const float c[2] = {INFINITY, 0}, e[2] = {INFINITY, 1};
	mp_st_tensor tc = f32_tensor(c, 2), te = f32_tensor(e, 2);
	assert_int_equal(mp_st_diff(&te, &tc, &d, &r), 0);
	assert_true(d == 1 && isinf(r));
	assert_int_equal(mp_st_diff(&tc, &tc, &d, &r), 0);
	assert_true(d == 0 && r == 0);
}

/* The standard deviation of values whose spread is small beside their
 * mean: the mean of the squares less the square of the mean cancels to 0
 * or to noise there. */
static void stats_small_spread(void **state)
{
	(void)state;
	enum { N = 2000 };
	static float a[N], c[N];
	for (int i = 0; i < N; i++) {
		a[i] = 10000.0f + (float)(i % 2) * 0x1p-10f; /* one float step apart */
		c[i] = 0.1f;
	}
	mp_st_tensor ta = f32_tensor(a, N), tc = f32_tensor(c, N);
	mp_tensor_stats s;
	mp_st_stats(&ta, &s);
	assert_true(s.mean == 10000.0 + 0x1p-11);
	assert_true(s.std == 0x1p-11);
	assert_true(s.min == 10000.0 && s.max == 10000.0 + 0x1p-10);
	/* a constant tensor has no spread at all */
	mp_st_stats(&tc, &s);
	assert_true(s.std == 0);
	assert_true(s.mean == (double)0.1f && s.min == s.mean && s.max == s.mean);
	/* no finite element: no statistics, not zeros */
	const float n[2] = {NAN, INFINITY};
	mp_st_tensor tn = f32_tensor(n, 2), empty = f32_tensor(n, 0);
	mp_st_stats(&tn, &s);
	assert_true(s.count == 0 && s.nonfinite == 2 && s.l2 == 0);
	assert_true(isnan(s.mean) && isnan(s.std) && isnan(s.min) && isnan(s.max));
	mp_st_stats(&empty, &s);
	assert_true(s.count == 0 && s.nonfinite == 0 && s.l2 == 0 && isnan(s.mean));
}

static int setup(void **state)
{
	(void)state;
	be = mp_backend_cpu_new(0);
	mp_rng_seed(&rng, 0x3e1647);
	dir = make_tmpdir();
	return be ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	mp_backend_free(be);
	int rc = mp_remove_tree(dir);
	free(dir);
	return rc;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),
		cmocka_unit_test(checkpoint_momentum),
		cmocka_unit_test(wrong_shapes_and_dtypes),
		cmocka_unit_test(missing_and_extra_tensors),
		cmocka_unit_test(bad_metadata),
		cmocka_unit_test(config_scalars),
		cmocka_unit_test(network_larger_than_file),
		cmocka_unit_test(truncated_and_corrupt),
		cmocka_unit_test(old_version_files_load),
		cmocka_unit_test(damaged_crc_keys_are_errors),
		cmocka_unit_test(pytorch_both_ways),
		cmocka_unit_test(diff_scale_ignores_infinities),
		cmocka_unit_test(stats_small_spread),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
