#include "mp_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int write_all(FILE *f, const char *name, const void *p, size_t n,
		     mp_error *e)
{
	if (n && fwrite(p, 1, n, f) != n)
		return mp_seterr(e, "%s: write error: %s", name, strerror(errno));
	return 0;
}

int mp_stream_write_header(FILE *f, const char *name, mp_error *e)
{
	uint8_t h[16];
	memcpy(h, MP_STREAM_MAGIC, 8);
	mp_put_u32(h + 8, MP_STREAM_VERSION);
	mp_put_u32(h + 12, 0);
	return write_all(f, name, h, sizeof h, e);
}

int mp_stream_write_frame(FILE *f, const char *name, uint32_t kind,
			  const void *payload, size_t len, mp_error *e)
{
	if (len > MP_STREAM_MAX_FRAME)
		return mp_seterr(e, "%s: frame of %zu bytes exceeds the stream limit of %u; "
				 "use a smaller --macrobatch", name, len, MP_STREAM_MAX_FRAME);
	uint8_t h[8], t[4];
	mp_put_u32(h, kind);
	mp_put_u32(h + 4, (uint32_t)len);
	uint32_t crc = mp_crc32(0, h, 8);
	crc = mp_crc32(crc, payload, len);
	mp_put_u32(t, crc);
	if (write_all(f, name, h, 8, e) < 0 || write_all(f, name, payload, len, e) < 0 ||
	    write_all(f, name, t, 4, e) < 0)
		return -1;
	if (kind == MP_FRAME_END && fflush(f) != 0)
		return mp_seterr(e, "%s: write error: %s", name, strerror(errno));
	return 0;
}

/* Reads exactly n bytes; returns the count read (short only at EOF). */
static size_t read_some(FILE *f, void *p, size_t n)
{
	return fread(p, 1, n, f);
}

/* Whether the first line of text h names an image file (".jpg", ".jpeg"
 * or ".png" before a blank or the line's end), as an image list's does. */
static int names_image(const uint8_t *h, size_t n)
{
	static const char *const exts[] = {".jpg", ".jpeg", ".png"};
	size_t end = 0;
	while (end < n && h[end] != '\n' && h[end] != '\r')
		end++;
	for (size_t i = 0; i < end; i++)
		for (size_t k = 0; k < sizeof exts / sizeof exts[0]; k++) {
			size_t len = strlen(exts[k]);
			if (i + len <= end && !strncasecmp((const char *)h + i, exts[k], len) &&
			    (i + len == end || h[i + len] == ' ' || h[i + len] == '\t'))
				return 1;
		}
	return 0;
}

/* What a file that is no stream most likely is, from its first bytes, for
 * the message: the files users give by mistake. */
static const char *kind_hint(const uint8_t *h, size_t n)
{
	static const uint8_t lmdb_magic[4] = {0xde, 0xc0, 0xef, 0xbe};
	if (n >= 2 && h[0] == 0xff && h[1] == 0xd8)
		return ": a JPEG image, which mp-batchwriter packs into a dataset";
	if (n >= 8 && !memcmp(h, "\x89PNG\r\n\x1a\n", 8))
		return ": a PNG image, which mp-batchwriter packs into a dataset";
	if (n >= 20 && !memcmp(h + 16, lmdb_magic, 4))
		return ": an LMDB data file; give the dataset's directory";
	if (n >= 4 && !memcmp(h, lmdb_magic, 4))
		return ": an LMDB lock file; give the dataset's directory";
	if (n >= 9 && h[8] == '{' && mp_get_u32(h + 4) == 0)
		return ": it looks like a safetensors weights file";
	size_t text = 0;
	for (size_t i = 0; i < n; i++)
		text += (h[i] >= 0x20 && h[i] < 0x7f) || h[i] == '\t' || h[i] == '\n' ||
			h[i] == '\r' || h[i] >= 0x80;
	if (n < 16 || text != n)
		return ""; // too short to tell from a damaged stream
	return names_image(h, n) ? ": an image list, which mp-batchwriter packs into a dataset "
				   "(mp-eval reads one with --list)"
				 : ": text";
}

int mp_stream_reader_open(mp_stream_reader *r, FILE *f, const char *name,
			  mp_error *e)
{
	memset(r, 0, sizeof *r);
	r->f = f;
	r->name = name;
	uint8_t h[16];
	size_t got = read_some(f, h, sizeof h);
	if (ferror(f))
		return mp_seterr(e, "%s: read error: %s", name, strerror(errno));
	/* An empty input is most often a writer upstream that failed before
	 * its first byte; a cut inside the magic is a truncation, not a
	 * different kind of file. */
	if (got == 0)
		return mp_seterr(e, "%s: empty input: no dataset stream", name);
	if (got < 8 && !memcmp(h, MP_STREAM_MAGIC, got))
		return mp_seterr(e, "%s: truncated stream header", name);
	if (got < 8 || memcmp(h, MP_STREAM_MAGIC, 8)) {
		/* a few more bytes, for the hint: the read fails either way */
		uint8_t more[128]; /* a list's first line, whose image name may be long */
		memcpy(more, h, got);
		if (got == sizeof h)
			got += read_some(f, more + got, sizeof more - got);
		return mp_seterr(e, "%s: not a dataset stream (bad magic)%s", name,
				 kind_hint(more, got));
	}
	if (got < sizeof h)
		return mp_seterr(e, "%s: truncated stream header", name);
	uint32_t version = mp_get_u32(h + 8);
	if (version != MP_STREAM_VERSION)
		return mp_seterr(e, "%s: stream version %u is not supported (expected %u)",
				 name, version, MP_STREAM_VERSION);
	if (mp_get_u32(h + 12) != 0)
		return mp_seterr(e, "%s: stream has unknown flags", name);
	return 0;
}

int mp_stream_next(mp_stream_reader *r, uint32_t *kind, const uint8_t **payload,
		   size_t *len, mp_error *e)
{
	if (r->ended)
		return 0;
	uint8_t h[8];
	size_t got = read_some(r->f, h, 8);
	if (ferror(r->f))
		return mp_seterr(e, "%s: read error: %s", r->name, strerror(errno));
	if (got == 0)
		return mp_seterr(e, "%s: truncated stream: no end frame after %llu frames",
				 r->name, (unsigned long long)r->frames);
	if (got < 8)
		return mp_seterr(e, "%s: truncated stream: partial frame header", r->name);
	uint32_t k = mp_get_u32(h), n = mp_get_u32(h + 4);
	if (k < MP_FRAME_META || k > MP_FRAME_END)
		return mp_seterr(e, "%s: corrupt stream: unknown frame kind %u at frame %llu",
				 r->name, k, (unsigned long long)r->frames);
	if (n > MP_STREAM_MAX_FRAME)
		return mp_seterr(e, "%s: corrupt stream: frame length %u exceeds %u", r->name,
				 n, MP_STREAM_MAX_FRAME);
	/* Grow the buffer as bytes arrive, so a corrupt length on a short
	 * stream cannot make us allocate a gigabyte up front. */
	size_t have = 0;
	size_t need = (size_t)n + 4;
	while (have < need) {
		if (have == r->cap) {
			size_t ncap = r->cap < (1u << 16) ? (1u << 16) : r->cap * 2;
			if (ncap > need)
				ncap = need;
			uint8_t *nb = realloc(r->buf, ncap);
			if (!nb)
				return mp_seterr(e, "%s: out of memory", r->name);
			r->buf = nb;
			r->cap = ncap;
		}
		size_t want = (r->cap < need ? r->cap : need) - have;
		size_t m = read_some(r->f, r->buf + have, want);
		if (ferror(r->f))
			return mp_seterr(e, "%s: read error: %s", r->name, strerror(errno));
		have += m;
		if (m < want)
			return mp_seterr(e, "%s: truncated stream: frame %llu is cut short",
					 r->name, (unsigned long long)r->frames);
	}
	uint32_t crc = mp_crc32(0, h, 8);
	crc = mp_crc32(crc, r->buf, n);
	if (crc != mp_get_u32(r->buf + n))
		return mp_seterr(e, "%s: corrupt stream: CRC mismatch in frame %llu", r->name,
				 (unsigned long long)r->frames);
	if (r->frames == 0 && k != MP_FRAME_META)
		return mp_seterr(e, "%s: corrupt stream: first frame is not the meta frame",
				 r->name);
	if (r->frames > 0 && k == MP_FRAME_META)
		return mp_seterr(e, "%s: corrupt stream: a second meta frame", r->name);
	/* The input must end with the end frame: bytes after it would be
	 * dropped unseen, and two streams concatenated read as the first. */
	if (k == MP_FRAME_END) {
		int c = getc(r->f);
		if (ferror(r->f))
			return mp_seterr(e, "%s: read error: %s", r->name, strerror(errno));
		if (c != EOF)
			return mp_seterr(e, "%s: corrupt stream: data after the end frame "
					 "(two streams concatenated?)", r->name);
		r->ended = 1;
	}
	r->frames++;
	*kind = k;
	*payload = r->buf;
	*len = n;
	return 1;
}

void mp_stream_reader_close(mp_stream_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}
