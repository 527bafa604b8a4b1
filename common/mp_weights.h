/* Weights and checkpoint files: safetensors with the network's tensors
 * under their public names and the architecture in __metadata__, so that a
 * weights file alone rebuilds the network (see mp-weights(5)). A checkpoint
 * adds "momentum.<name>" for every learned tensor and training state in the
 * metadata. */
#ifndef MP_WEIGHTS_H
#define MP_WEIGHTS_H

#include "mp_resnet.h"
#include "mp_safetensors.h"
#include "mp_util.h"

#define MP_WEIGHTS_FORMAT "mp-resnet"
/* Version 2 adds the header CRC (mp_safetensors.h) and requires it and the
 * data CRC; version 1 files, whose header no CRC covers, are still read. */
#define MP_WEIGHTS_VERSION 2

typedef struct {
	const char *key, *value;
} mp_kv;

/* Writes the network atomically. extra (may be NULL, count n) adds
 * metadata such as class names or training state; with_momentum makes it
 * a checkpoint. */
int mp_weights_save(mp_resnet *net, const char *path, const mp_kv *extra, int n,
		    int with_momentum, mp_error *e);

/* Finds a tensor of net holding NaN or infinity: its values (running
 * statistics included) and, with_momentum, its momentum buffers. Returns 1
 * with the tensor's name in name (size n; "momentum.<name>" for a momentum
 * buffer), 0 when every value is finite, -1 on error. */
int mp_weights_find_nonfinite(mp_resnet *net, int with_momentum, char *name, size_t n,
			      mp_error *e);

/* Reads a weights file or checkpoint (mp_st_read) and refuses one whose
 * format needs CRCs it lacks (mp_weights_check_crcs). */
int mp_weights_read(const char *path, mp_st_file *f, mp_error *e);

/* An mp-resnet file of format_version 2 or later must carry both CRCs: a
 * damaged key ("header_crc32" or "crc32") then cannot pass for a file
 * without a CRC. 0 for other files and for version 1. */
int mp_weights_check_crcs(const mp_st_file *f, mp_error *e);

/* Reads the architecture from a file's metadata, with every field checked. */
int mp_weights_config(const mp_st_file *f, mp_resnet_config *c, mp_error *e);

/* Copies a file's tensors into net, checking every name and shape against
 * the architecture; momentum too when the file has it and want_momentum. */
int mp_weights_load_into(mp_resnet *net, const mp_st_file *f, int want_momentum,
			 mp_error *e);

/* Reads path, builds the network it describes on be, and loads it. On
 * failure *file is left empty (nothing to free), as after mp_st_read. */
mp_resnet *mp_weights_load(const char *path, mp_backend *be, mp_st_file *file,
			   mp_error *e);



/* Statistics of one tensor of any dtype, in double, over its count
 * finite elements; with none, mean, std, min and max are NaN and l2 0. */
typedef struct {
	uint64_t count;
	double mean, std, min, max, l2;
	uint64_t nonfinite;
} mp_tensor_stats;

/* Element i of a tensor as a double (every dtype safetensors knows). */
double mp_st_element(const mp_st_tensor *t, uint64_t i);
void mp_st_stats(const mp_st_tensor *t, mp_tensor_stats *s);

/* Largest absolute and relative (to the largest finite |b|) difference of
 * two tensors of the same shape; -1 if the shapes differ. A difference
 * against a b of no finite non-zero element is relatively infinite. */
int mp_st_diff(const mp_st_tensor *a, const mp_st_tensor *b, double *max_abs,
	       double *max_rel);

/* 1 if path is likely a weights file, which a tool that reads datasets too
 * should read as one, so that what is wrong with it is named as a weights
 * file's fault: a regular file that does not begin with a dataset stream's
 * magic, and whose name ends in .safetensors or whose bytes begin like a
 * safetensors file (a length, then a '{'; or a length that fits the file,
 * then a JSON object or array after white space). 0 for anything else,
 * and for a FIFO or a pipe, which is never read (its bytes would be
 * lost). */
int mp_st_sniff(const char *path);

#endif
