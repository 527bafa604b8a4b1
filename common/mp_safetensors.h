/* Safetensors: the format of weights files and checkpoints, which PyTorch
 * (safetensors.torch.load_file) and others load directly.
 *
 *   u64 N     little-endian length of the header
 *   N bytes   UTF-8 JSON object, starting with '{':
 *               {"__metadata__": {"key": "value", ...},        (optional)
 *                "name": {"dtype": "F32", "shape": [d0, d1, ...],
 *                         "data_offsets": [begin, end]}, ...}
 *             our writer pads it with spaces so that the data section
 *             starts at an 8-byte aligned offset (8 + N is a multiple of 8)
 *   data      the tensors' bytes: little-endian, row-major (C order);
 *             [begin, end) is relative to the start of this section; the
 *             tensors cover it exactly: no gaps, no overlaps, no trailing bytes
 *
 * The writer adds two metadata entries, each 8 lowercase hex digits of a
 * CRC32 (mp_crc32):
 *   "crc32"         the whole data section; last in __metadata__
 *   "header_crc32"  bytes 0 to 8 + N (the length field and the header, its
 *                   padding included) with these 8 digits read as "00000000";
 *                   it must be the first entry of __metadata__, which must be
 *                   the first key of the header: the header then begins with
 *                   the bytes {"__metadata__":{"header_crc32":" (MP_ST_HCRC_PREFIX).
 * The reader checks each one that is present; files from other writers have
 * none and are accepted without them. Whether a file must have them is for
 * its format to say (mp_weights: format_version 2).
 *
 * This code assumes a little-endian host (x86-64, aarch64): tensor bytes are
 * used in place as the host's numbers, with no byte swapping.
 */
#ifndef MP_SAFETENSORS_H
#define MP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mp_util.h"

#define MP_ST_MAX_DIMS 8
/* A larger header is refused before it is read (as the reference reader does). */
#define MP_ST_MAX_HEADER 100000000u
/* The metadata keys the writer reserves for the CRC32 of the data section
 * and of the header. */
#define MP_ST_CRC_KEY "crc32"
#define MP_ST_HCRC_KEY "header_crc32"
/* Where the header CRC stands: its 8 digits follow these bytes at offset 8. */
#define MP_ST_HCRC_PREFIX "{\"__metadata__\":{\"" MP_ST_HCRC_KEY "\":\""

typedef enum {
	MP_ST_F64,
	MP_ST_F32,
	MP_ST_F16,
	MP_ST_BF16,
	MP_ST_I64,
	MP_ST_I32,
	MP_ST_I16,
	MP_ST_I8,
	MP_ST_U8,
	MP_ST_BOOL,
	MP_ST_NDTYPES
} mp_st_dtype;

/* "F32" etc.; NULL for a value out of range. */
const char *mp_st_dtype_name(mp_st_dtype d);
/* Bytes per element; 0 for a value out of range. */
size_t mp_st_dtype_size(mp_st_dtype d);
/* Looks up a dtype by its name (case-sensitive, as the format has it):
 * 0 found, -1 unknown. */
int mp_st_dtype_parse(const char *s, mp_st_dtype *d);
/* Writes a shape as "[16,16,3,3]" ("[]" for a scalar), truncated to n. */
void mp_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t n);

typedef struct {
	char *name;
	mp_st_dtype dtype;
	int ndim; /* 0 (a scalar) to MP_ST_MAX_DIMS */
	int64_t shape[MP_ST_MAX_DIMS];
	uint64_t numel;	 /* product of the shape: 1 for a scalar, 0 if a dim is 0 */
	uint64_t begin;	 /* byte offset in the data section */
	uint64_t nbytes; /* numel * element size */
	/* In a file read: nbytes bytes aligned to the element size (a private
	 * copy when the bytes inside the file are not). In a builder: the
	 * caller's data, referenced. */
	const void *data;
	void *copy_; /* private: the aligned copy, if one was made */
} mp_st_tensor;

typedef struct {
	char *key, *value;
} mp_st_kv;

/* A file read into memory; everything points into buffers it owns. */
typedef struct {
	char *path;	      /* the name used in messages */
	uint8_t *mem;	      /* owned; the file's bytes start at base */
	const uint8_t *base;
	size_t size;	      /* bytes in the file */
	uint64_t header_len;  /* N */
	const uint8_t *data;  /* the data section, 8-byte aligned in memory */
	uint64_t data_len;
	size_t ntensors;
	mp_st_tensor *tensors; /* in the order of the header */
	size_t nmeta;
	mp_st_kv *meta;	       /* in the order of the header, "crc32" included */
	int has_crc;	       /* the data section's CRC32 was present and checked */
	uint32_t crc;
	int has_header_crc;    /* the header's CRC32 was present and checked (kept
			        * by a read that failed after that check) */
	uint32_t header_crc;
	mp_st_tensor **by_name_; /* private: tensors sorted by name */
} mp_st_file;

/* Reads a whole file of at most max_bytes and validates all of it (header,
 * every tensor entry, the layout of the data section, the CRC32s when
 * present) before returning 0. On failure returns -1 with a message that
 * names the file and, where it applies, the tensor; *out is then empty. */
int mp_st_read(const char *path, size_t max_bytes, mp_st_file *out, mp_error *e);
/* The same for bytes in memory (copied); name is used in messages. */
int mp_st_parse(const void *buf, size_t len, const char *name, mp_st_file *out,
		mp_error *e);
void mp_st_free(mp_st_file *f);

/* NULL when there is no such tensor or key. */
const mp_st_tensor *mp_st_find(const mp_st_file *f, const char *name);
const char *mp_st_meta_get(const mp_st_file *f, const char *key);

/* Looks up a tensor and checks its dtype and its exact shape (ndim dims):
 * "FILE: no tensor named fc.weight",
 * "FILE: tensor fc.weight has dtype F16, expected F32",
 * "FILE: tensor stages.0.blocks.0.conv1.weight has shape [16,16,3,3],
 *  expected [32,32,3,3]". *data stays valid until mp_st_free. */
int mp_st_get(const mp_st_file *f, const char *name, mp_st_dtype dtype,
	      const int *expected_shape, int ndim, const void **data, mp_error *e);
int mp_st_get_f32(const mp_st_file *f, const char *name, const int *expected_shape,
		  int ndim, const float **data, mp_error *e);

/* Builds a file to write. Names and metadata are copied; tensor data is
 * referenced, not copied: it must stay valid and unchanged until the last
 * mp_st_builder_serialize/mp_st_builder_write. Tensors are written in the
 * order added, packed one after the other. The same builder contents always
 * give the same bytes. */
typedef struct {
	size_t ntensors, tcap;
	mp_st_tensor *tensors;
	size_t nmeta, mcap;
	mp_st_kv *meta;
	uint64_t data_len;
} mp_st_builder;

void mp_st_builder_init(mp_st_builder *b);
/* Names must be non-empty valid UTF-8, unique, and not "__metadata__";
 * 0 to MP_ST_MAX_DIMS dims, each >= 0; data may be NULL only when the
 * tensor has no elements. */
int mp_st_builder_add(mp_st_builder *b, const char *name, mp_st_dtype dtype,
		      const int64_t *shape, int ndim, const void *data, mp_error *e);
int mp_st_builder_add_f32(mp_st_builder *b, const char *name, const int *shape,
			  int ndim, const float *data, mp_error *e);
/* Keys must be unique and not "crc32" or "header_crc32"; keys and values
 * valid UTF-8. */
int mp_st_builder_meta(mp_st_builder *b, const char *key, const char *value,
		       mp_error *e);
/* The whole file in a malloc'ed buffer. */
int mp_st_builder_serialize(const mp_st_builder *b, uint8_t **buf, size_t *len,
			    mp_error *e);
/* Writes the file atomically: a temporary name in the same directory,
 * fsync, rename over path. Tensor data is streamed, not gathered. */
int mp_st_builder_write(const mp_st_builder *b, const char *path, mp_error *e);
void mp_st_builder_free(mp_st_builder *b);

#endif
