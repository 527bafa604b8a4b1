#include "mp_macrobatch.h"

#include <stdlib.h>
#include <string.h>

#include "mp_image.h"

int mp_mb_parse(const uint8_t *buf, size_t len, mp_macrobatch *mb, mp_error *e)
{
	memset(mb, 0, sizeof *mb);
	if (len < MP_MB_HEADER + 4)
		return mp_seterr(e, "macrobatch of %zu bytes is too short", len);
	if (memcmp(buf, MP_MB_MAGIC, 8))
		return mp_seterr(e, "not a macrobatch (bad magic)");
	uint32_t version = mp_get_u32(buf + 8);
	if (version != MP_MB_VERSION)
		return mp_seterr(e, "macrobatch version %u is not supported (expected %u)",
				 version, MP_MB_VERSION);
	uint32_t count = mp_get_u32(buf + 12);
	uint64_t first = mp_get_u64(buf + 16);
	uint32_t total = mp_get_u32(buf + 24);
	if (total != len)
		return mp_seterr(e, "macrobatch says %u bytes but holds %zu", total, len);
	uint32_t crc = mp_get_u32(buf + len - 4);
	if (mp_crc32(0, buf, len - 4) != crc)
		return mp_seterr(e, "macrobatch CRC mismatch (corrupt data)");
	if (mp_get_u32(buf + 28) != 0)
		return mp_seterr(e, "macrobatch has unknown flags");
	if (count == 0 || count > MP_MB_MAX_COUNT)
		return mp_seterr(e, "macrobatch item count %u is out of range", count);
	uint64_t table_end = MP_MB_HEADER + (uint64_t)count * MP_MB_ITEM;
	uint64_t data_end = len - 4;
	if (table_end > data_end)
		return mp_seterr(e, "macrobatch item table overruns the data");
	mb->records = calloc(count, sizeof *mb->records);
	if (!mb->records)
		return mp_seterr(e, "out of memory");
	/* Names are packed right after the table, payloads right after the
	 * names, each in item order: checking that layout rules out overlaps. */
	uint64_t name_pos = table_end, names_end = table_end;
	for (uint32_t i = 0; i < count; i++)
		names_end += mp_get_u32(buf + MP_MB_HEADER + (size_t)i * MP_MB_ITEM + 20);
	uint64_t pay_pos = names_end;
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *it = buf + MP_MB_HEADER + (size_t)i * MP_MB_ITEM;
		mp_record *r = &mb->records[i];
		r->label = (int32_t)mp_get_u32(it);
		r->height = mp_get_u32(it + 4);
		r->width = mp_get_u32(it + 8);
		r->channels = it[12];
		r->encoding = it[13];
		uint32_t noff = mp_get_u32(it + 16), nlen = mp_get_u32(it + 20);
		uint32_t poff = mp_get_u32(it + 24), plen = mp_get_u32(it + 28);
		if (r->label < -1 || mp_get_u16(it + 14) != 0)
			goto bad_item;
		if (r->height == 0 || r->width == 0 || r->height > MP_MB_MAX_DIM ||
		    r->width > MP_MB_MAX_DIM || r->channels != 3)
			goto bad_item;
		if (r->encoding != MP_ENC_RAW && r->encoding != MP_ENC_JPEG &&
		    r->encoding != MP_ENC_PNG)
			goto bad_item;
		if (nlen == 0 || nlen > MP_MB_MAX_NAME || noff != name_pos ||
		    noff + (uint64_t)nlen > names_end)
			goto bad_item;
		if (poff != pay_pos || poff + (uint64_t)plen > data_end)
			goto bad_item;
		if (r->encoding == MP_ENC_RAW &&
		    (uint64_t)r->height * r->width * r->channels != plen)
			goto bad_item;
		if (memchr(buf + noff, '\0', nlen))
			goto bad_item;
		r->name = (const char *)buf + noff;
		r->name_len = nlen;
		r->payload = buf + poff;
		r->payload_len = plen;
		name_pos += nlen;
		pay_pos += plen;
		continue;
bad_item:
		free(mb->records);
		mb->records = NULL;
		return mp_seterr(e, "macrobatch item %u has an invalid entry", i);
	}
	if (pay_pos != data_end) {
		free(mb->records);
		mb->records = NULL;
		return mp_seterr(e, "macrobatch has %llu stray bytes after its payloads",
				 (unsigned long long)(data_end - pay_pos));
	}
	mb->count = count;
	mb->first_record = first;
	return 0;
}

void mp_mb_free(mp_macrobatch *mb)
{
	free(mb->records);
	memset(mb, 0, sizeof *mb);
}

void mp_mb_builder_init(mp_mb_builder *b)
{
	memset(b, 0, sizeof *b);
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap : 65536;
	while (n < need)
		n *= 2;
	uint8_t *nb = realloc(*buf, n);
	if (!nb)
		return -1;
	*buf = nb;
	*cap = n;
	return 0;
}

int mp_mb_builder_add(mp_mb_builder *b, const mp_record *r, mp_error *e)
{
	if (r->name_len == 0 || r->name_len > MP_MB_MAX_NAME)
		return mp_seterr(e, "record name of %u bytes is not 1..%d", r->name_len,
				 MP_MB_MAX_NAME);
	if (b->count >= MP_MB_MAX_COUNT)
		return mp_seterr(e, "macrobatch is full (%u records)", b->count);
	if (b->count == b->cap) {
		uint32_t nc = b->cap ? b->cap * 2 : 256;
		mp_record *ni = realloc(b->items, nc * sizeof *ni);
		if (!ni)
			return mp_seterr(e, "out of memory");
		b->items = ni;
		b->cap = nc;
	}
	if (grow(&b->names, &b->names_cap, b->names_len + r->name_len) < 0)
		return mp_seterr(e, "out of memory");
	mp_record *it = &b->items[b->count++];
	*it = *r;
	it->name = NULL;
	memcpy(b->names + b->names_len, r->name, r->name_len);
	b->names_len += r->name_len;
	b->payloads_len += r->payload_len;
	return 0;
}

int mp_mb_builder_size(const mp_mb_builder *b, size_t *len, mp_error *e)
{
	uint64_t table = MP_MB_HEADER + (uint64_t)b->count * MP_MB_ITEM;
	uint64_t total = table + b->names_len + (uint64_t)b->payloads_len + 4;
	if (b->count == 0)
		return mp_seterr(e, "empty macrobatch");
	if (total > UINT32_MAX)
		return mp_seterr(e, "macrobatch of %llu bytes exceeds 4 GiB; use a smaller --macrobatch",
				 (unsigned long long)total);
	*len = (size_t)total;
	return 0;
}

uint32_t mp_mb_builder_write(const mp_mb_builder *b, uint64_t first_record, uint8_t *buf)
{
	size_t table = MP_MB_HEADER + (size_t)b->count * MP_MB_ITEM;
	size_t total = table + b->names_len + b->payloads_len + 4;
	memcpy(buf, MP_MB_MAGIC, 8);
	mp_put_u32(buf + 8, MP_MB_VERSION);
	mp_put_u32(buf + 12, b->count);
	mp_put_u64(buf + 16, first_record);
	mp_put_u32(buf + 24, (uint32_t)total);
	mp_put_u32(buf + 28, 0);
	uint32_t noff = (uint32_t)table;
	uint32_t poff = (uint32_t)(table + b->names_len);
	for (uint32_t i = 0; i < b->count; i++) {
		const mp_record *r = &b->items[i];
		uint8_t *it = buf + MP_MB_HEADER + (size_t)i * MP_MB_ITEM;
		mp_put_u32(it, (uint32_t)r->label);
		mp_put_u32(it + 4, r->height);
		mp_put_u32(it + 8, r->width);
		it[12] = r->channels;
		it[13] = r->encoding;
		mp_put_u16(it + 14, 0);
		mp_put_u32(it + 16, noff);
		mp_put_u32(it + 20, r->name_len);
		mp_put_u32(it + 24, poff);
		mp_put_u32(it + 28, r->payload_len);
		noff += r->name_len;
		poff += r->payload_len;
	}
	memcpy(buf + table, b->names, b->names_len);
	uint32_t crc = mp_crc32(0, buf, table + b->names_len);
	/* Each payload is checksummed right after its copy, while it is
	 * still in cache. */
	uint8_t *p = buf + table + b->names_len;
	for (uint32_t i = 0; i < b->count; i++) {
		memcpy(p, b->items[i].payload, b->items[i].payload_len);
		crc = mp_crc32(crc, p, b->items[i].payload_len);
		p += b->items[i].payload_len;
	}
	mp_put_u32(p, crc);
	return mp_crc32(crc, p, 4);
}

void mp_mb_builder_reset(mp_mb_builder *b)
{
	b->count = 0;
	b->names_len = b->payloads_len = 0;
}

int mp_mb_builder_finish(mp_mb_builder *b, uint64_t first_record, uint8_t **out,
			 size_t *outlen, mp_error *e)
{
	size_t total;
	if (mp_mb_builder_size(b, &total, e) < 0)
		return -1;
	uint8_t *buf = malloc(total);
	if (!buf)
		return mp_seterr(e, "out of memory");
	mp_mb_builder_write(b, first_record, buf);
	*out = buf;
	*outlen = total;
	mp_mb_builder_reset(b);
	return 0;
}

void mp_mb_builder_free(mp_mb_builder *b)
{
	free(b->items);
	free(b->names);
	memset(b, 0, sizeof *b);
}
