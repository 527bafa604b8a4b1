#include "mp_list.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mp_stream.h"

/* One logical line: trailing CR/LF and surrounding blanks removed.
 * Returns 1 for a line with content, 0 for blank or comment. */
static int clean_line(char *s, size_t *len)
{
	size_t n = *len;
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' ||
			 isspace((unsigned char)s[n - 1])))
		n--;
	s[n] = '\0';
	size_t start = 0;
	while (start < n && isspace((unsigned char)s[start]))
		start++;
	if (start)
		memmove(s, s + start, n - start + 1);
	*len = n - start;
	return *len > 0 && s[0] != '#';
}

/* Drops the UTF-8 byte order mark that some editors put at the start of
 * a text file; anywhere else it is part of the text. */
static void drop_bom(char *s, size_t *len)
{
	if (*len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3)) {
		memmove(s, s + 3, *len - 3 + 1);
		*len -= 3;
	}
}

/* A line the readers refuse before parsing it, with the reason: a NUL
 * byte (a UTF-16 file, when the first line starts with its byte order
 * mark), or a carriage return inside it, where a file with old Mac line
 * ends (CR alone) would otherwise be read as one line whose path is all
 * of it. NULL for a line to parse. */
static const char *line_trouble(const char *s, size_t len, long lineno)
{
	if (lineno == 1 && len >= 2 &&
	    (!memcmp(s, "\xff\xfe", 2) || !memcmp(s, "\xfe\xff", 2)))
		return "starts with a UTF-16 byte order mark: save the file as UTF-8";
	if (memchr(s, '\0', len))
		return "contains a NUL byte";
	const char *cr = memchr(s, '\r', len), *end = s + len;
	while (cr && cr < end && isspace((unsigned char)*cr))
		cr++;
	if (cr && cr < end)
		return "has a carriage return inside it: are the line ends old Mac's, CR "
		       "alone? Lines must end with LF or CR LF";
	return NULL;
}

/* Splits "path words  123" into path and an integer label when the last
 * blank-separated word is an integer. Returns 1 if a label was found,
 * 0 if not, -1 if the number does not fit. */
static int split_label(char *s, size_t len, long *label, const char **wordp)
{
	size_t i = len;
	while (i > 0 && !isspace((unsigned char)s[i - 1]))
		i--;
	if (i == 0)
		return 0; /* a single word: a path without label */
	const char *word = s + i;
	if (wordp)
		*wordp = word;
	const char *p = word;
	if (*p == '-' || *p == '+')
		p++;
	if (!*p)
		return 0;
	for (const char *q = p; *q; q++)
		if (!isdigit((unsigned char)*q))
			return 0;
	errno = 0;
	long v = strtol(word, NULL, 10);
	if (errno)
		return -1;
	*label = v;
	size_t end = i;
	while (end > 0 && isspace((unsigned char)s[end - 1]))
		end--;
	s[end] = '\0';
	return 1;
}

const char *mp_list_label_hint(const char *path)
{
	size_t i = strlen(path);
	while (i > 0 && !isspace((unsigned char)path[i - 1]))
		i--;
	if (i == 0)
		return ""; /* a single word */
	const char *word = path + i;
	char *end;
	errno = 0;
	(void)strtod(word, &end);
	if (end == word || *end || !strpbrk(word, ".eE") || strpbrk(word, "xXnN"))
		return "";
	return " (its last word is a number, but a label must be a whole number: the "
	       "line is read as a path without one)";
}

const char *mp_list_missing_hint(const char *root, const char *path, const char *opened)
{
	struct stat st;
	if (access(opened, F_OK) == 0)
		return "";
	const char *hint = mp_list_label_hint(path);
	if (*hint)
		return hint;
	if ((!root || !*root) && path[0] != '/' && lstat(opened, &st) < 0)
		return " (no -r given: the list's paths are read from the current directory)";
	return "";
}

int mp_list_read(FILE *f, const char *name, int nclasses, mp_list *out,
		 mp_error *e)
{
	memset(out, 0, sizeof *out);
	out->max_label = -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	long lineno = 0, first_line = 0;
	int first_labelled = -1;
	long maxc = nclasses > 0 ? nclasses : MP_MAX_CLASSES;

	while ((got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		size_t len = (size_t)got;
		/* "mp-batchwriter -o DB < STREAM", --input-stream forgotten */
		if (lineno == 1 && len >= 8 && !memcmp(line, MP_STREAM_MAGIC, 8)) {
			mp_seterr(e, "%s: a dataset stream, not an image list "
				  "(mp-batchwriter --input-stream stores one in a DB)", name);
			goto fail;
		}
		const char *trouble = line_trouble(line, len, lineno);
		if (trouble) {
			mp_seterr(e, "%s line %ld: %s", name, lineno, trouble);
			goto fail;
		}
		if (lineno == 1)
			drop_bom(line, &len);
		if (!clean_line(line, &len))
			continue;
		long label = MP_NO_LABEL;
		const char *word = NULL;
		int has = split_label(line, len, &label, &word);
		if (has < 0 || (has && (label < 0 || label >= maxc))) {
			mp_seterr(e, "%s line %ld: label %s is outside 0..%ld%s", name,
				  lineno, word, maxc - 1,
				  nclasses > 0 ? " (the class count)" : "");
			goto fail;
		}
		if (first_labelled < 0) {
			first_labelled = has;
			first_line = lineno;
		} else if (has != first_labelled) {
			mp_seterr(e, "%s line %ld: %s but line %ld %s%s", name, lineno,
				  has ? "has a label" : "has no label", first_line,
				  has ? "has none" : "has one",
				  /* the line without a label may be either */
				  mp_list_label_hint(has ? out->items[0].path : line));
			goto fail;
		}
		if (out->count == out->cap) {
			size_t ncap = out->cap ? out->cap * 2 : 1024;
			mp_list_entry *ni = realloc(out->items, ncap * sizeof *ni);
			if (!ni) {
				mp_seterr(e, "%s: out of memory", name);
				goto fail;
			}
			out->items = ni;
			out->cap = ncap;
		}
		char *path = strdup(line);
		if (!path) {
			mp_seterr(e, "%s: out of memory", name);
			goto fail;
		}
		mp_list_entry *it = &out->items[out->count++];
		it->path = path;
		it->label = has ? (int)label : MP_NO_LABEL;
		it->line = lineno;
		if (has && label > out->max_label)
			out->max_label = (int)label;
	}
	if (ferror(f)) {
		mp_seterr(e, "%s: read error: %s", name, strerror(errno));
		goto fail;
	}
	free(line);
	out->labelled = first_labelled == 1;
	return 0;
fail:
	free(line);
	mp_list_free(out);
	return -1;
}

void mp_list_free(mp_list *l)
{
	for (size_t i = 0; i < l->count; i++)
		free(l->items[i].path);
	free(l->items);
	memset(l, 0, sizeof *l);
}

static uint64_t path_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

long mp_list_warn_duplicates(const mp_list *l, const char *name, const char *what)
{
	enum { SHOWN = 5 };
	/* open addressing over entry indices + 1 (0 marks a free slot), at most
	 * half full, so that a million-line list costs one pass */
	size_t slots = 2;
	while (slots < 2 * l->count)
		slots *= 2;
	size_t *table = calloc(slots, sizeof *table);
	if (!table)
		return -1;
	long repeats = 0;
	for (size_t i = 0; i < l->count; i++) {
		size_t s = (size_t)path_hash(l->items[i].path) & (slots - 1);
		while (table[s] && strcmp(l->items[table[s] - 1].path, l->items[i].path))
			s = (s + 1) & (slots - 1);
		if (!table[s]) {
			table[s] = i + 1;
			continue;
		}
		const mp_list_entry *first = &l->items[table[s] - 1], *again = &l->items[i];
		if (++repeats <= SHOWN) {
			char labels[64] = "";
			if (first->label != again->label)
				snprintf(labels, sizeof labels, " (label %d there, %d here)",
					 first->label, again->label);
			mp_warnx("%s line %ld: %s is also on line %ld%s; it is %s again", name,
				 again->line, again->path, first->line, labels, what);
		}
	}
	free(table);
	if (repeats > SHOWN)
		mp_warnx("%s: %ld lines repeat a path of an earlier line (%d shown); each is %s as "
			 "often as it appears", name, repeats, SHOWN, what);
	return repeats;
}

void mp_list_shuffle(mp_list *l, unsigned long long seed)
{
	mp_rng r;
	mp_rng_seed(&r, seed);
	for (size_t i = l->count; i > 1; i--) {
		size_t j = (size_t)mp_rng_below(&r, i);
		mp_list_entry t = l->items[i - 1];
		l->items[i - 1] = l->items[j];
		l->items[j] = t;
	}
}

/* Two classes of one name would be told apart by nobody reading the
 * results (mp-eval's tables, a submission's names): the later line is
 * named, with the earlier. Sorted, to find them in n log n. */
typedef struct {
	const char *name;
	long index;
} named_class;

static int by_name(const void *a, const void *b)
{
	const named_class *x = a, *y = b;
	const int c = strcmp(x->name, y->name);
	return c ? c : (x->index > y->index) - (x->index < y->index);
}

static int duplicate_name(const char *file, char **names, const long *where, long n,
			  mp_error *e)
{
	named_class *order = malloc((size_t)n * sizeof *order);
	if (!order)
		return mp_seterr(e, "%s: out of memory", file);
	for (long i = 0; i < n; i++)
		order[i] = (named_class){names[i], i};
	qsort(order, (size_t)n, sizeof *order, by_name);
	long first = -1, second = -1;
	for (long i = 1; i < n; i++) {
		const long a = order[i - 1].index, b = order[i].index;
		if (strcmp(names[a], names[b]))
			continue;
		/* of the pairs, the one whose later line comes first in the file */
		const long early = where[a] < where[b] ? a : b, late = early == a ? b : a;
		if (second < 0 || where[late] < where[second]) {
			first = early;
			second = late;
		}
	}
	free(order);
	if (second < 0)
		return 0;
	return mp_seterr(e, "%s line %ld: class name \"%s\" is class %ld's already (line %ld)",
			 file, where[second], names[second], first, where[first]);
}

int mp_categories_read(FILE *f, const char *name, char ***names_out,
		       int *count_out, mp_error *e)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t got;
	long lineno = 0;
	char **names = NULL;
	long *where = NULL; /* line that defined each class, for messages */
	long n = 0, ncap = 0;

	while ((got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		size_t len = (size_t)got;
		const char *trouble = line_trouble(line, len, lineno);
		if (trouble) {
			mp_seterr(e, "%s line %ld: %s", name, lineno, trouble);
			goto fail;
		}
		if (lineno == 1)
			drop_bom(line, &len);
		if (!clean_line(line, &len))
			continue;
		/* The names go into the meta document, JSON, which is UTF-8. */
		size_t bad = mp_utf8_bad_at((const uint8_t *)line, len);
		if (bad < len) {
			mp_seterr(e, "%s line %ld: byte %zu (0x%02x) is not UTF-8: save the file "
				  "as UTF-8", name, lineno, bad + 1, (unsigned char)line[bad]);
			goto fail;
		}
		long idx;
		int has = split_label(line, len, &idx, NULL);
		if (has <= 0) {
			mp_seterr(e, "%s line %ld: expected \"NAME INDEX\"", name, lineno);
			goto fail;
		}
		if (idx < 0 || idx >= MP_MAX_CLASSES) {
			mp_seterr(e, "%s line %ld: class index %ld is outside 0..%d",
				  name, lineno, idx, MP_MAX_CLASSES - 1);
			goto fail;
		}
		if (idx >= ncap) {
			long nc = ncap ? ncap : 128;
			while (nc <= idx)
				nc *= 2;
			char **nn = realloc(names, (size_t)nc * sizeof *nn);
			if (!nn)
				goto oom;
			names = nn;
			long *nw = realloc(where, (size_t)nc * sizeof *nw);
			if (!nw)
				goto oom;
			where = nw;
			for (long i = ncap; i < nc; i++) {
				names[i] = NULL;
				where[i] = 0;
			}
			ncap = nc;
		}
		if (names[idx]) {
			mp_seterr(e, "%s line %ld: class index %ld already given on line %ld",
				  name, lineno, idx, where[idx]);
			goto fail;
		}
		names[idx] = strdup(line);
		if (!names[idx])
			goto oom;
		where[idx] = lineno;
		if (idx + 1 > n)
			n = idx + 1;
	}
	if (ferror(f)) {
		mp_seterr(e, "%s: read error: %s", name, strerror(errno));
		goto fail;
	}
	if (n == 0) {
		mp_seterr(e, "%s: no categories", name);
		goto fail;
	}
	for (long i = 0; i < n; i++)
		if (!names[i]) {
			mp_seterr(e, "%s: class index %ld is missing (indices must run 0..%ld)",
				  name, i, n - 1);
			goto fail;
		}
	if (duplicate_name(name, names, where, n, e) < 0)
		goto fail;
	free(line);
	free(where);
	*names_out = names;
	*count_out = (int)n;
	return 0;
oom:
	mp_seterr(e, "%s: out of memory", name);
fail:
	free(line);
	free(where);
	mp_categories_free(names, (int)ncap);
	return -1;
}

void mp_categories_free(char **names, int count)
{
	if (!names)
		return;
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

const char *mp_list_root(const char *root, const char *path)
{
	return root && path[0] != '/' ? root : "";
}
